"""The execution plan: what ``commit()`` compiles a workflow into.

A plan is a flat tuple of nodes that a run walks one after another; each node
is a step, or a construct over steps (parallel, branch, loop, foreach), a
``map``, a ``sleep``, or the entry or exit of a nested workflow, whose own
nodes are spliced in between with their paths prefixed by the child's id. A
run's place is therefore one index, whatever the nesting, and a snapshot
resumes from it.

A plan is immutable, so the actors share it across threads without copying.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

from pydantic import BaseModel

from runtime._errors import WorkflowDefinitionError
from runtime._step import Step

__all__ = [
    "MAX_SLEEP",
    "BranchNode",
    "EnterNode",
    "ExecutionPlan",
    "ExitNode",
    "ForeachNode",
    "LoopNode",
    "MapNode",
    "Node",
    "ParallelNode",
    "RetryPolicy",
    "Scope",
    "SleepNode",
    "StepNode",
    "compile_plan",
    "is_async_callable",
]

Hook = Callable[[Any], Any]

MAX_SLEEP: Final = 100 * 365.25 * 86400.0
"""The longest sleep, in seconds: about a century (a wake time must stay a datetime)."""


def is_async_callable(fn: Any) -> bool:
    """Whether calling ``fn`` returns a coroutine (an ``async def`` or an async ``__call__``)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failed step is retried.

    Attributes:
        attempts: Retries after the first call (0: none).
        delay: Seconds before the first retry.
        backoff: Factor the delay grows by with each retry.
        max_delay: The longest delay, whatever the backoff.
        jitter: A fraction (0 to 1) of each delay drawn at random and added
            or taken away, so that many runs do not retry in step.
    """

    attempts: int = 0
    delay: float = 0.0
    backoff: float = 1.0
    max_delay: float | None = None
    jitter: float = 0.0

    def delay_before(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first)."""
        seconds = self.delay * self.backoff ** max(0, retry - 1)
        if self.max_delay is not None:
            seconds = min(seconds, self.max_delay)
        if self.jitter and seconds:
            spread = seconds * self.jitter
            seconds += (rng or random).uniform(-spread, spread)
        return max(0.0, seconds)


NO_RETRY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class Scope:
    """The workflow a node belongs to: the top one, or a nested one.

    Attributes:
        prefix: What the workflow's step paths start with: ``""`` at the top,
            ``"child."`` inside the nested workflow ``child``.
        workflow_id: The workflow's id.
        input_schema: Its input's model (what ``ctx.get_init_data()`` returns).
    """

    prefix: str
    workflow_id: str
    input_schema: type[BaseModel]


@dataclass(frozen=True, slots=True, eq=False)
class Node:
    """One place in a plan. ``path`` names it in a run's results."""

    path: str
    scope: Scope


@dataclass(frozen=True, slots=True, eq=False)
class StepNode(Node):
    """A step at ``path``, with its retry policy and timeout resolved."""

    step: Step[Any, Any]
    retry: RetryPolicy = NO_RETRY
    timeout: float | None = None


@dataclass(frozen=True, slots=True, eq=False)
class ParallelNode(Node):
    """Steps that run at once on the same input; the output maps step id to output."""

    steps: tuple[StepNode, ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class BranchNode(Node):
    """Steps that run at once where their condition holds; the output maps step id to output."""

    arms: tuple[tuple[Callable[[Any], Any], StepNode], ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class LoopNode(Node):
    """A step run again and again: while (or until) its condition holds on its output."""

    step_node: StepNode | None = None
    condition: Callable[[Any], Any] | None = None
    until: bool = False
    max_iterations: int | None = None


@dataclass(frozen=True, slots=True, eq=False)
class ForeachNode(Node):
    """A step run once per item of the list it receives, ``concurrency`` at a time."""

    step_node: StepNode | None = None
    concurrency: int = 1


@dataclass(frozen=True, slots=True, eq=False)
class MapNode(Node):
    """A function that reshapes the data between two steps."""

    fn: Callable[[Any], Any] | None = None


@dataclass(frozen=True, slots=True, eq=False)
class SleepNode(Node):
    """A pause: for ``seconds``, or until ``until``, either one fixed or computed by a function."""

    seconds: float | Callable[[Any], Any] | None = None
    until: datetime | Callable[[Any], Any] | None = None


@dataclass(frozen=True, slots=True, eq=False)
class EnterNode(Node):
    """The start of a nested workflow: its input is validated and recorded at ``path``."""

    child_id: str = ""
    input_schema: type[BaseModel] | None = None


@dataclass(frozen=True, slots=True, eq=False)
class ExitNode(Node):
    """The end of a nested workflow: its output is validated and recorded at ``path``."""

    output_schema: type[BaseModel] | None = None


@dataclass(frozen=True, slots=True, eq=False)
class ExecutionPlan:
    """A committed workflow: its schemas, hooks and nodes in the order they run.

    Attributes:
        workflow_id: The workflow's id.
        input_schema: The run input's model.
        output_schema: The run result's model (the last node's output must fit it).
        state_schema: The workflow state's model, if the workflow has state.
        nodes: The nodes, in order (nested workflows spliced in).
        by_id: Every step by its path.
        paths: Every path a run's results may hold.
        on_finish: Called once when a run ends, whatever its status.
        on_error: Called once when a run fails.
        retry: The workflow's retry policy (a step's own ``retries`` wins).
        on_start: Called when a run starts, before its first step.
    """

    workflow_id: str
    input_schema: type[BaseModel]
    output_schema: type[BaseModel]
    state_schema: type[BaseModel] | None
    nodes: tuple[Node, ...]
    by_id: Mapping[str, Step[Any, Any]]
    paths: frozenset[str]
    on_finish: Hook | None = None
    on_error: Hook | None = None
    retry: RetryPolicy = NO_RETRY
    on_start: Hook | None = None
    scope: Scope = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scope", Scope("", self.workflow_id, self.input_schema))

    @property
    def steps(self) -> tuple[Step[Any, Any], ...]:
        """Every step, in the order of the plan."""
        return tuple(self.by_id.values())

    @property
    def has_hooks(self) -> bool:
        """Whether the workflow has an ``on_finish`` or ``on_error`` hook."""
        return self.on_finish is not None or self.on_error is not None


def _prefixed(node: Node, prefix: str, child: Scope) -> Node:
    """A child's node as it sits inside its parent: its paths prefixed."""
    scope = node.scope
    scope = child if scope.prefix == "" else replace(scope, prefix=prefix + scope.prefix)
    path = prefix + node.path
    if isinstance(node, StepNode):
        return replace(node, path=path, scope=scope)
    if isinstance(node, ParallelNode):
        steps = tuple(_prefixed(s, prefix, child) for s in node.steps)
        return replace(node, path=path, scope=scope, steps=steps)  # type: ignore[arg-type]
    if isinstance(node, BranchNode):
        arms = tuple((cond, _prefixed(s, prefix, child)) for cond, s in node.arms)
        return replace(node, path=path, scope=scope, arms=arms)  # type: ignore[arg-type]
    if isinstance(node, LoopNode | ForeachNode):
        assert node.step_node is not None
        inner = _prefixed(node.step_node, prefix, child)
        return replace(node, path=path, scope=scope, step_node=inner)  # type: ignore[arg-type]
    return replace(node, path=path, scope=scope)


def leaf_steps(node: Node) -> tuple[StepNode, ...]:
    """The step nodes a node runs."""
    if isinstance(node, StepNode):
        return (node,)
    if isinstance(node, ParallelNode):
        return node.steps
    if isinstance(node, BranchNode):
        return tuple(step for _, step in node.arms)
    if isinstance(node, LoopNode | ForeachNode):
        assert node.step_node is not None
        return (node.step_node,)
    return ()


def compile_plan(
    *,
    workflow_id: str,
    input_schema: type[BaseModel],
    output_schema: type[BaseModel],
    state_schema: type[BaseModel] | None,
    nodes: Sequence[Node | ExecutionPlan],
    on_finish: Hook | None = None,
    on_error: Hook | None = None,
    retry: RetryPolicy = NO_RETRY,
    on_start: Hook | None = None,
) -> ExecutionPlan:
    """Check a workflow's definition and freeze it into a plan.

    Args:
        workflow_id: The workflow's id.
        input_schema: The run input's model.
        output_schema: The run result's model.
        state_schema: The workflow state's model, if any.
        nodes: The workflow's nodes; a nested workflow is its committed plan.
        on_finish: The hook called when a run ends.
        on_error: The hook called when a run fails.
        retry: The workflow's retry policy.
        on_start: The hook called when a run starts.

    Raises:
        WorkflowDefinitionError: for a workflow without nodes, or with two
            steps (or nodes) at the same path.
    """
    if not nodes:
        raise WorkflowDefinitionError(
            f"workflow {workflow_id!r} has no steps: add one with .then(step) before commit()"
        )
    top = Scope("", workflow_id, input_schema)
    flat: list[Node] = []
    for item in nodes:
        if isinstance(item, ExecutionPlan):
            prefix = item.workflow_id + "."
            child = Scope(prefix, item.workflow_id, item.input_schema)
            flat.append(
                EnterNode(
                    path=item.workflow_id,
                    scope=top,
                    child_id=item.workflow_id,
                    input_schema=item.input_schema,
                )
            )
            flat.extend(_prefixed(node, prefix, child) for node in item.nodes)
            flat.append(
                ExitNode(path=item.workflow_id, scope=top, output_schema=item.output_schema)
            )
        else:
            flat.append(_resolved(item, retry))
    by_id: dict[str, Step[Any, Any]] = {}
    paths: set[str] = set()
    for node in flat:
        if isinstance(node, ExitNode):
            continue
        owned = [step.path for step in leaf_steps(node)] or [node.path]
        for path in owned:
            if path in paths:
                raise WorkflowDefinitionError(
                    f"workflow {workflow_id!r} has two steps with the id {path!r}: "
                    "step ids must be unique within a workflow"
                )
            paths.add(path)
        for step_node in leaf_steps(node):
            by_id[step_node.path] = step_node.step
    return ExecutionPlan(
        workflow_id=workflow_id,
        input_schema=input_schema,
        output_schema=output_schema,
        state_schema=state_schema,
        nodes=tuple(flat),
        by_id=MappingProxyType(by_id),
        paths=frozenset(paths),
        on_finish=on_finish,
        on_error=on_error,
        retry=retry,
        on_start=on_start,
    )


def _resolved(node: Node, retry: RetryPolicy) -> Node:
    """A node with the workflow's retry policy applied where a step sets none of its own."""

    def resolve(step_node: StepNode) -> StepNode:
        step = step_node.step
        policy = replace(retry, attempts=step.retries) if step.retries is not None else retry
        return replace(step_node, retry=policy, timeout=step.timeout)

    if isinstance(node, StepNode):
        return resolve(node)
    if isinstance(node, ParallelNode):
        return replace(node, steps=tuple(resolve(s) for s in node.steps))
    if isinstance(node, BranchNode):
        return replace(node, arms=tuple((c, resolve(s)) for c, s in node.arms))
    if isinstance(node, LoopNode | ForeachNode):
        assert node.step_node is not None
        return replace(node, step_node=resolve(node.step_node))
    return node
