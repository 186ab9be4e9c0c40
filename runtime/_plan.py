"""The execution plan: what ``commit()`` compiles a workflow into.

A plan is a flat tuple of nodes that a run walks one after another; each node
is a step, or a construct over steps (parallel, branch, loop, foreach), a
``map``, a ``sleep``, or the entry or exit of a nested workflow, whose own
nodes are spliced in between with their paths prefixed by the child's id. A
run's place is therefore one index, whatever the nesting, and a snapshot
resumes from it.

A nested workflow may also stand where a step stands inside a construct: a
member of ``parallel``, an arm of ``branch``, the body of a loop or of a
``foreach``. Its nodes are spliced in the same way, as a region the run jumps
to and back from (see :class:`Flow`, :class:`CollectNode`,
:class:`LoopBackNode`, :class:`EachStartNode` and :class:`EachNextNode`), so
the run still has one place at a time; every jump is an offset relative to the
node that makes it, so a region moves with its workflow when that is nested
in turn.

A plan is immutable, so the actors share it across threads without copying.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

from pydantic import BaseModel

from runtime._errors import WorkflowDefinitionError
from runtime._queue import Queue
from runtime._step import Step

__all__ = [
    "MAX_SLEEP",
    "BranchNode",
    "CollectNode",
    "ConstructSpec",
    "EachNextNode",
    "EachStartNode",
    "EnterNode",
    "ExecutionPlan",
    "ExitNode",
    "Flow",
    "ForeachNode",
    "LoopBackNode",
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
    "item_path",
    "plan_fingerprint",
    "split_item_path",
]

Hook = Callable[[Any], Any]

MAX_SLEEP: Final = 100 * 365.25 * 86400.0
"""The longest sleep, in seconds: about a century (a wake time must stay a datetime)."""


def is_async_callable(fn: Any) -> bool:
    """Whether calling ``fn`` returns a coroutine (an ``async def`` or an async ``__call__``)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def item_path(path: str, item: int) -> str:
    """How a foreach step's item is named where it is suspended: ``"step[3]"``."""
    return f"{path}[{item}]"


def split_item_path(name: str) -> tuple[str, int | None]:
    """The step path and item index of a name such as ``"step[3]"``; ``(name, None)`` else."""
    if name.endswith("]"):
        start = name.rfind("[")
        digits = name[start + 1 : -1]
        if start > 0 and digits.isdigit() and digits.isascii():
            return name[:start], int(digits)
    return name, None


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
        """Seconds to wait before retry ``retry`` (1 for the first), at most ``MAX_SLEEP``."""
        try:
            seconds = self.delay * self.backoff ** max(0, retry - 1)
        except OverflowError:  # a float backoff of 10 passes the largest float at retry 310
            seconds = math.inf if self.delay > 0 else 0.0  # 0 times anything is 0
        if self.max_delay is not None:
            seconds = min(seconds, self.max_delay)
        seconds = min(seconds, MAX_SLEEP)
        if self.jitter and seconds:
            spread = seconds * self.jitter
            seconds += (rng or random).uniform(-spread, spread)
            if self.max_delay is not None:
                # A cap is a cap: jitter may bring a wait under it, never over it.
                seconds = min(seconds, self.max_delay)
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


@dataclass(frozen=True, slots=True)
class Flow:
    """A nested workflow that is a member of a parallel or branch node.

    Attributes:
        id: The nested workflow's id: its key in the node's output.
        path: Its path in results (the path of its :class:`EnterNode`).
        offset: From the parallel or branch node to the region of the plan
            that runs it (its ``EnterNode``), which ends with a :class:`CollectNode`.
        condition: A branch arm's condition (``None`` in parallel).
        input_schema: The nested workflow's input model (what a condition reads).
    """

    id: str
    path: str
    offset: int
    condition: Callable[[Any], Any] | None = None
    input_schema: type[BaseModel] | None = None


@dataclass(frozen=True, slots=True, eq=False)
class ParallelNode(Node):
    """Steps that run at once on the same input; the output maps step id to output.

    Nested workflows among the members (``flows``) run after the steps, one
    after another, each on the same input, in the regions that follow the node.
    ``members`` are every member's id in order, the order of the output's keys;
    ``end`` is the offset of the node after the last region (1 without flows).
    """

    steps: tuple[StepNode, ...] = ()
    flows: tuple[Flow, ...] = ()
    members: tuple[str, ...] = ()
    end: int = 1


@dataclass(frozen=True, slots=True, eq=False)
class BranchNode(Node):
    """Steps that run at once where their condition holds; the output maps step id to output.

    Nested workflows among the arms are ``flows``, as in :class:`ParallelNode`.
    """

    arms: tuple[tuple[Callable[[Any], Any], StepNode], ...] = ()
    flows: tuple[Flow, ...] = ()
    members: tuple[str, ...] = ()
    end: int = 1


@dataclass(frozen=True, slots=True, eq=False)
class CollectNode(Node):
    """The end of a nested workflow's region in a parallel or branch node.

    It keeps the nested workflow's output for the node's, then goes to the
    next region, or on past the node. ``group`` is the offset back to the node.
    """

    group: int = 0


@dataclass(frozen=True, slots=True, eq=False)
class LoopBackNode(Node):
    """The end of a loop over a nested workflow: its condition decides whether to go round.

    ``body`` is the offset back to the nested workflow's :class:`EnterNode`.
    """

    condition: Callable[[Any], Any] | None = None
    until: bool = False
    max_iterations: int | None = None
    body: int = 0
    output_schema: type[BaseModel] | None = None


@dataclass(frozen=True, slots=True, eq=False)
class EachStartNode(Node):
    """The start of a foreach over a nested workflow: the list is kept, the first item goes in.

    ``skip`` is the offset to the :class:`EachNextNode` after the region.
    """

    skip: int = 0


@dataclass(frozen=True, slots=True, eq=False)
class EachNextNode(Node):
    """The end of a foreach's nested workflow: the next item goes round, or the list is done.

    ``body`` is the offset back to the nested workflow's :class:`EnterNode`.
    """

    body: int = 0


@dataclass(frozen=True, slots=True, eq=False)
class ConstructSpec(Node):
    """A construct with a nested workflow among its members, as the builder records it.

    :func:`compile_plan` turns it into nodes and regions; no plan holds one.

    Attributes:
        kind: ``"parallel"``, ``"branch"``, ``"loop"`` or ``"foreach"``.
        members: ``(condition, member)`` pairs, a member being a step or a
            nested workflow's plan (the condition is ``None`` but in a branch).
        condition: A loop's condition.
        until: Whether the loop is a ``dountil``.
        max_iterations: A loop's limit.
    """

    kind: str = ""
    members: tuple[tuple[Callable[[Any], Any] | None, StepNode | ExecutionPlan], ...] = ()
    condition: Callable[[Any], Any] | None = None
    until: bool = False
    max_iterations: int | None = None


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
    """The start of a nested workflow: its input is validated and recorded at ``path``.

    ``looped`` marks the body of a loop, whose record counts its iterations.
    """

    child_id: str = ""
    input_schema: type[BaseModel] | None = None
    looped: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class ExitNode(Node):
    """The end of a nested workflow: its output is validated and recorded at ``path``."""

    output_schema: type[BaseModel] | None = None


class OutputSchemas(dict[str, type[BaseModel]]):
    """Each step's and nested workflow's output model, by path (see ``ExecutionPlan``)."""

    __slots__ = ("per_item", "plain")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.per_item: frozenset[str] = frozenset()
        # The paths of ``.map()`` nodes: outputs of no model, read back as plain data.
        self.plain: frozenset[str] = frozenset()


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
        queue: The queue its runs go through unless a start names another.
        on_start: Called when a run starts, before its first step.
        version: The label given with ``create_workflow(version=...)``, if any.
        run_timeout: Seconds a run may take from when it begins to execute, unless
            its start gives another (``None``: no limit). A nested workflow's own
            is not used: its steps share the deadline of the run they are in.
        fingerprint: A hash of the plan's shape (see :func:`plan_fingerprint`):
            two plans a run can go on across have the same one.
        output_schemas: The output's model of each step and nested workflow, by path;
            its ``per_item`` are the paths run by a ``foreach``, whose output is a
            list of them, one per item.
        has_hooks: Whether the workflow has an ``on_finish`` or ``on_error`` hook (read
            at every run's end: a field, where a property would be a call).
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
    queue: Queue | None = None
    on_start: Hook | None = None
    version: str | None = None
    run_timeout: float | None = None
    scope: Scope = field(init=False)
    fingerprint: str = field(init=False)
    output_schemas: OutputSchemas = field(init=False)
    has_hooks: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scope", Scope("", self.workflow_id, self.input_schema))
        object.__setattr__(
            self, "has_hooks", self.on_finish is not None or self.on_error is not None
        )
        object.__setattr__(self, "fingerprint", plan_fingerprint(self.workflow_id, self.nodes))
        # What ctx.get_step_result() reads an earlier output as: each step's, and each
        # nested workflow's (its output is recorded at its path, as a step's is).
        schemas = OutputSchemas(
            (node.path, node.output_schema)
            for node in self.nodes
            if isinstance(node, ExitNode) and node.output_schema is not None
        )
        schemas.update((path, step.output_schema) for path, step in self.by_id.items())
        # Told by the plan, not by the output's type: a step's output is a list too when
        # its model is a root model over one.
        schemas.per_item = frozenset(
            node.path for node in self.nodes if isinstance(node, ForeachNode | EachStartNode)
        )
        schemas.plain = frozenset(node.path for node in self.nodes if isinstance(node, MapNode))
        object.__setattr__(self, "output_schemas", schemas)

    @property
    def label(self) -> str:
        """How a message names this definition: its version label and fingerprint."""
        if self.version is None:
            return f"fingerprint {self.fingerprint}"
        return f"version {self.version!r} (fingerprint {self.fingerprint})"

    @property
    def steps(self) -> tuple[Step[Any, Any], ...]:
        """Every step, in the order of the plan."""
        return tuple(self.by_id.values())


def _shape(node: Node) -> list[Any]:
    """What a fingerprint keeps of a node: its kind, path and the places it refers to."""
    shape: list[Any] = [type(node).__name__, node.path, node.scope.prefix]
    if isinstance(node, StepNode):
        shape.append(node.step.id)
    elif isinstance(node, ParallelNode | BranchNode):
        shape.append([step.path for step in leaf_steps(node)])
        shape.append(list(node.members))
        shape.append([[flow.id, flow.offset] for flow in node.flows])
        shape.append(node.end)
    elif isinstance(node, LoopNode | ForeachNode):
        shape.append(leaf_steps(node)[0].path)
        if isinstance(node, LoopNode):
            shape.append(node.until)
    elif isinstance(node, LoopBackNode):
        shape.extend((node.body, node.until))
    elif isinstance(node, EachStartNode):
        shape.append(node.skip)
    elif isinstance(node, EachNextNode):
        shape.append(node.body)
    elif isinstance(node, CollectNode):
        shape.append(node.group)
    elif isinstance(node, EnterNode):
        shape.extend((node.child_id, node.looped))
    return shape


def plan_fingerprint(workflow_id: str, nodes: Sequence[Node]) -> str:
    """A stable hash of a plan's shape: 16 hex digits.

    It covers what a run's snapshot points into: the workflow id, and each
    node's kind, path and nesting, in order. It leaves out what a run can go
    on across unchanged: step bodies, schemas, conditions, sleep lengths,
    retry policies and hooks. So a fixed bug in a step body keeps the
    fingerprint, while a step inserted, removed, renamed or moved changes it.
    """
    shape = [workflow_id, [_shape(node) for node in nodes]]
    text = json.dumps(shape, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _prefixed(node: Node, prefix: str, child: Scope) -> Node:
    """A child's node as it sits inside its parent: its paths prefixed."""
    scope = node.scope
    scope = child if scope.prefix == "" else replace(scope, prefix=prefix + scope.prefix)
    path = prefix + node.path
    if isinstance(node, StepNode):
        return replace(node, path=path, scope=scope)
    if isinstance(node, ParallelNode):
        steps = tuple(_prefixed(s, prefix, child) for s in node.steps)
        flows = tuple(replace(flow, path=prefix + flow.path) for flow in node.flows)
        return replace(node, path=path, scope=scope, steps=steps, flows=flows)  # type: ignore[arg-type]
    if isinstance(node, BranchNode):
        arms = tuple((cond, _prefixed(s, prefix, child)) for cond, s in node.arms)
        flows = tuple(replace(flow, path=prefix + flow.path) for flow in node.flows)
        return replace(node, path=path, scope=scope, arms=arms, flows=flows)  # type: ignore[arg-type]
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
    queue: Queue | None = None,
    on_start: Hook | None = None,
    version: str | None = None,
    run_timeout: float | None = None,
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
        queue: The queue of its runs, if any.
        on_start: The hook called when a run starts.
        version: The workflow's version label, if any.
        run_timeout: The time limit of its runs, in seconds, if any.

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
            _check_nested_state(workflow_id, item, state_schema)
            flat.extend(_region(item, top))
        elif isinstance(item, ConstructSpec):
            for _, member in item.members:
                if isinstance(member, ExecutionPlan):
                    _check_nested_state(workflow_id, member, state_schema)
            flat.extend(_construct(item, top, retry))
        else:
            flat.append(_resolved(item, retry))
    by_id: dict[str, Step[Any, Any]] = {}
    paths: set[str] = set()
    for node in flat:
        if isinstance(node, _MARKERS):
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
            _check_state_view(workflow_id, step_node.step, state_schema)
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
        queue=queue,
        on_start=on_start,
        version=version,
        run_timeout=run_timeout,
    )


def _check_state_view(
    workflow_id: str, step: Step[Any, Any], state_schema: type[BaseModel] | None
) -> None:
    """A step's own state schema must name only keys of its workflow's state schema."""
    own = step.state_schema
    if own is None or state_schema is None:
        return
    unknown = sorted(set(own.model_fields) - set(state_schema.model_fields))
    if unknown:
        raise WorkflowDefinitionError(
            f"workflow {workflow_id!r}: step {step.id!r} has a state_schema with keys "
            f"{unknown} that the workflow's state_schema {state_schema.__name__} lacks; a "
            "step's state schema covers part of the workflow's state"
        )


def _check_nested_state(
    workflow_id: str, child: ExecutionPlan, state_schema: type[BaseModel] | None
) -> None:
    """A nested workflow's state schema must name only keys of its parent's.

    A run has one state, its top workflow's: a nested workflow's steps read it as
    that workflow's model (or their own), never as the nested one's, whose keys
    must therefore be there.
    """
    own = child.state_schema
    if own is None:
        return
    if state_schema is None:
        raise WorkflowDefinitionError(
            f"workflow {workflow_id!r}: the nested workflow {child.workflow_id!r} has a "
            f"state_schema ({own.__name__}) and {workflow_id!r} has none; a run's state is "
            f"its top workflow's, which the nested workflow's steps read, so give "
            f"{workflow_id!r} a state_schema with the keys {sorted(own.model_fields)}"
        )
    unknown = sorted(set(own.model_fields) - set(state_schema.model_fields))
    if unknown:
        raise WorkflowDefinitionError(
            f"workflow {workflow_id!r}: the nested workflow {child.workflow_id!r} has a "
            f"state_schema ({own.__name__}) with keys {unknown} that the state_schema "
            f"{state_schema.__name__} of {workflow_id!r} lacks; a run's state is its top "
            "workflow's, which the nested workflow's steps read"
        )


_MARKERS: Final = (ExitNode, CollectNode, LoopBackNode, EachStartNode, EachNextNode)
"""Nodes that share the path of the nested workflow they close or open: no path of their own."""


def _region(plan: ExecutionPlan, top: Scope, *, looped: bool = False) -> list[Node]:
    """A nested workflow's nodes as they sit in its parent: entry, its nodes prefixed, exit."""
    prefix = plan.workflow_id + "."
    child = Scope(prefix, plan.workflow_id, plan.input_schema)
    return [
        EnterNode(
            path=plan.workflow_id,
            scope=top,
            child_id=plan.workflow_id,
            input_schema=plan.input_schema,
            looped=looped,
        ),
        *(_prefixed(node, prefix, child) for node in plan.nodes),
        ExitNode(path=plan.workflow_id, scope=top, output_schema=plan.output_schema),
    ]


def _construct(spec: ConstructSpec, top: Scope, retry: RetryPolicy) -> list[Node]:
    """The nodes of a construct with nested workflows among its members."""
    if spec.kind in ("loop", "foreach"):
        body = spec.members[0][1]
        assert isinstance(body, ExecutionPlan)
        region = _region(body, top, looped=spec.kind == "loop")
        path = body.workflow_id
        if spec.kind == "foreach":
            return [
                EachStartNode(path=path, scope=top, skip=len(region) + 1),
                *region,
                EachNextNode(path=path, scope=top, body=len(region)),
            ]
        return [
            *region,
            LoopBackNode(
                path=path,
                scope=top,
                condition=spec.condition,
                until=spec.until,
                max_iterations=spec.max_iterations,
                body=len(region),
                output_schema=body.output_schema,
            ),
        ]
    steps: list[tuple[Callable[[Any], Any] | None, StepNode]] = []
    flows: list[Flow] = []
    regions: list[Node] = []
    members: list[str] = []
    for condition, member in spec.members:
        if isinstance(member, ExecutionPlan):
            offset = 1 + len(regions)
            region = _region(member, top)
            flows.append(
                Flow(
                    id=member.workflow_id,
                    path=member.workflow_id,
                    offset=offset,
                    condition=condition,
                    input_schema=member.input_schema,
                )
            )
            regions.extend(region)
            regions.append(
                CollectNode(path=member.workflow_id, scope=top, group=offset + len(region))
            )
            members.append(member.workflow_id)
        else:
            steps.append((condition, member))
            members.append(member.step.id)
    group: Node
    if spec.kind == "branch":
        arms = tuple((condition, step) for condition, step in steps if condition is not None)
        group = BranchNode(path=spec.path, scope=top, arms=arms)
    else:
        group = ParallelNode(path=spec.path, scope=top, steps=tuple(step for _, step in steps))
    group = replace(  # type: ignore[call-arg]
        _resolved(group, retry),
        flows=tuple(flows),
        members=tuple(members),
        end=1 + len(regions),
    )
    return [group, *regions]


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
