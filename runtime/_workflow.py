"""Workflows: typed steps chained with ``.then()`` and frozen by ``.commit()``."""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar, cast

from pydantic import BaseModel, ValidationError

from runtime import _probes
from runtime._errors import (
    RunInProgressError,
    UnboundWorkflowError,
    WorkflowDefinitionError,
)
from runtime._ids import (
    MAX_NAME_BYTES,
    check_resource_id,
    check_run_id,
    new_id,
    shown_name,
    unstorable_text,
)
from runtime._model import (
    TERMINAL_STATUSES,
    RunOutcome,
    RunStatus,
    WorkflowResult,
    WorkflowRunList,
    with_output_schema,
)
from runtime._model_keys import refuse_unkept
from runtime._options import RetryConfig, check_run_timeout, seconds_of
from runtime._plan import (
    MAX_SLEEP,
    BranchNode,
    ConstructSpec,
    ExecutionPlan,
    ForeachNode,
    LoopNode,
    MapNode,
    Node,
    ParallelNode,
    RetryPolicy,
    Scope,
    SleepNode,
    StepNode,
    compile_plan,
    leaf_steps,
)
from runtime._queries import get_run, list_runs
from runtime._queue import Queue
from runtime._run import Run
from runtime._run_input import bound_schedule
from runtime._runtime import offload
from runtime._schedule import Schedule
from runtime._schema_fit import check_chain
from runtime._step import Step
from runtime._stores.base import SnapshotStore
from runtime._stores.memory import MemoryStore

if TYPE_CHECKING:
    from runtime._runtime import RunHost, Runtime

__all__ = ["Workflow", "create_workflow"]

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)


class Workflow(Generic[In, Out]):
    """A workflow: steps and constructs over steps, each fed the previous one's output.

    Build one with :func:`create_workflow`, add steps with :meth:`then` (and
    :meth:`parallel`, :meth:`branch`, :meth:`dowhile`, :meth:`dountil`,
    :meth:`foreach`, :meth:`map`, :meth:`sleep`, :meth:`sleep_until`), and
    freeze it with :meth:`commit`. A committed workflow starts runs with
    :meth:`create_run` on the runtime it is bound to (``runtime.register``), or
    on the process-wide default runtime when it is not bound to one.
    """

    def __init__(
        self,
        *,
        id: str,
        input_schema: type[In],
        output_schema: type[Out],
        state_schema: type[BaseModel] | None = None,
        description: str | None = None,
        retry_config: RetryConfig | Mapping[str, Any] | None = None,
        on_finish: Callable[[RunOutcome], Any] | None = None,
        on_error: Callable[[RunOutcome], Any] | None = None,
        queue: Queue | None = None,
        on_start: Callable[[RunOutcome], Any] | None = None,
        schedule: Schedule | Sequence[Schedule] | None = None,
        version: str | None = None,
        run_timeout: float | timedelta | None = None,
    ) -> None:
        if not isinstance(id, str) or not id:
            raise WorkflowDefinitionError(f"a workflow id must be a non-empty string, got {id!r}")
        problem = unstorable_text(id)
        if problem is not None:
            raise WorkflowDefinitionError(f"workflow id {shown_name(id)} {problem}")
        if "." in id:
            raise WorkflowDefinitionError(
                f"workflow id {id!r} holds a '.', which separates a nested workflow's id from "
                "its steps' ids in results"
            )
        for name, schema, required in (
            ("input_schema", input_schema, True),
            ("output_schema", output_schema, True),
            ("state_schema", state_schema, False),
        ):
            if (schema is not None or required) and not (
                isinstance(schema, type) and issubclass(schema, BaseModel)
            ):
                raise TypeError(
                    f"workflow {id!r}: {name} must be a pydantic BaseModel subclass, got {schema!r}"
                )
            if schema is not None:
                refuse_unkept(schema, f"workflow {id!r}: {name}")
        for name, hook in (
            ("on_finish", on_finish),
            ("on_error", on_error),
            ("on_start", on_start),
        ):
            if hook is not None and not callable(hook):
                raise TypeError(f"workflow {id!r}: {name} must be callable, got {hook!r}")
            if inspect.isgeneratorfunction(hook) or inspect.isasyncgenfunction(hook):
                # Called, it makes a generator that nobody runs: its body never ran.
                raise TypeError(
                    f"workflow {id!r}: {name} is a generator function, whose body would "
                    "never run; make it a plain function or an async def without yield"
                )
        self.id = id
        self.input_schema = input_schema
        self.output_schema = output_schema
        self.state_schema = state_schema
        self.description = description
        self.retry_config = _retry_config(retry_config, id)
        if queue is not None and not isinstance(queue, Queue):
            raise TypeError(f"workflow {id!r}: queue must be a Queue, got {queue!r}")
        self.on_finish = on_finish
        self.on_error = on_error
        self.queue = queue
        self.on_start = on_start
        self.schedules = _schedules(schedule, id, input_schema)
        if version is not None and (not isinstance(version, str) or not version):
            raise TypeError(f"workflow {id!r}: version must be a non-empty string, got {version!r}")
        if version is not None and (problem := unstorable_text(version)) is not None:
            raise WorkflowDefinitionError(
                f"workflow {id!r}: version {shown_name(version)} {problem}"
            )
        self.version = version
        try:
            self.run_timeout = check_run_timeout(run_timeout)
        except (TypeError, ValueError) as exc:
            raise WorkflowDefinitionError(f"workflow {id!r}: {exc}") from None
        self._nodes: list[Node | ExecutionPlan] = []
        self._plan: ExecutionPlan | None = None
        self._runtime: Runtime | None = None
        self._host: RunHost | None = None
        # The runtimes this (unbound) workflow was registered on: while one of them is
        # not stopped, using this object instead of what register() returned is refused.
        self._registrations: weakref.WeakSet[Runtime] = weakref.WeakSet()

    def __repr__(self) -> str:
        state = "committed" if self._plan is not None else "not committed"
        return f"<Workflow {self.id!r} ({len(self._nodes)} steps, {state})>"

    @property
    def steps(self) -> tuple[Step[Any, Any], ...]:
        """The workflow's own steps in the order they were added (not nested workflows')."""
        return tuple(
            step_node.step
            for node in self._nodes
            if isinstance(node, Node)
            for step_node in (
                tuple(m for _, m in node.members if isinstance(m, StepNode))
                if isinstance(node, ConstructSpec)
                else leaf_steps(node)
            )
        )

    @property
    def committed(self) -> bool:
        """Whether :meth:`commit` has been called."""
        return self._plan is not None

    @property
    def plan(self) -> ExecutionPlan:
        """The compiled plan.

        Raises:
            WorkflowDefinitionError: if the workflow is not committed.
        """
        if self._plan is None:
            raise WorkflowDefinitionError(
                f"workflow {self.id!r} is not committed: call .commit() after the last .then()"
            )
        return self._plan

    @property
    def runtime(self) -> Runtime | None:
        """The runtime this workflow is bound to, or ``None`` for the default one."""
        return self._runtime

    # --- the builder ------------------------------------------------------------------

    def _add(self, node: Node | ExecutionPlan) -> Self:
        if self._plan is not None:
            raise WorkflowDefinitionError(
                f"workflow {self.id!r} is committed; it cannot take more steps"
            )
        self._nodes.append(node)
        return self

    @property
    def _scope(self) -> Scope:
        return Scope("", self.id, self.input_schema)

    def _step_node(self, step: Any, method: str) -> StepNode:
        if not isinstance(step, Step):
            raise TypeError(
                f"workflow {self.id!r}: .{method}() takes a Step or a committed Workflow, "
                f"got {step!r}"
            )
        return StepNode(path=step.id, scope=self._scope, step=step)

    def _member(self, step: Any, method: str) -> StepNode | ExecutionPlan:
        """A step, or a nested workflow's plan, where a step can stand."""
        if isinstance(step, Workflow):
            return self._nested(step)
        return self._step_node(step, method)

    def _nested(self, workflow: Workflow[Any, Any]) -> ExecutionPlan:
        if workflow is self or workflow.id == self.id:
            raise WorkflowDefinitionError(f"workflow {self.id!r} cannot nest itself")
        if not workflow.committed:
            raise WorkflowDefinitionError(
                f"workflow {self.id!r}: nested workflow {workflow.id!r} is not committed; "
                "call .commit() on it first"
            )
        return workflow.plan

    def _next_id(self, kind: str, given: str | None) -> str:
        if given is None:
            return f"{kind}-{len(self._nodes) + 1}"
        if not isinstance(given, str) or not given or "." in given:
            raise WorkflowDefinitionError(
                f"workflow {self.id!r}: a {kind} id must be a non-empty string without '.', "
                f"got {given!r}"
            )
        problem = unstorable_text(given)
        if problem is not None:
            raise WorkflowDefinitionError(
                f"workflow {self.id!r}: {kind} id {shown_name(given)} {problem}"
            )
        return given

    def then(self, step: Step[Any, Any] | Workflow[Any, Any]) -> Self:
        """Append a step, or a committed workflow to run nested as one step.

        It receives the previous node's output (the run's input for the
        first). A nested workflow's steps appear in the run's results as
        ``"child_id.step_id"``, beside ``"child_id"`` for the whole child; they
        share the run's state and request context, and the child's own
        ``retry_config`` applies to them (its hooks are not called).

        Returns:
            The workflow, for chaining.

        Raises:
            WorkflowDefinitionError: if this workflow is committed, or the
                nested one is not (or is this one).
            TypeError: if ``step`` is neither a :class:`Step` nor a :class:`Workflow`.
        """
        if isinstance(step, Workflow):
            return self._add(self._nested(step))
        return self._add(self._step_node(step, "then"))

    def parallel(self, steps: Sequence[Step[Any, Any] | Workflow[Any, Any]]) -> Self:
        """Run steps at once, each on its own step actor, all on the same input.

        The output is ``{step_id: output}``. If one fails the run fails, and
        the others are told to stop (their ``ctx.abort_signal`` is set); if
        one suspends and none fails, the run suspends once the others end.

        A member may be a committed workflow, keyed by its id in the output
        and nested as in :meth:`then`. Nested workflows run after the steps,
        one after another, each on the same input (the run keeps one place in
        its plan, which is what a snapshot records and a resume goes back to).

        Raises:
            WorkflowDefinitionError: for an empty list.
            TypeError: for something that is neither a :class:`Step` nor a
                :class:`Workflow`.
        """
        members = [self._member(step, "parallel") for step in _sequence(steps, "parallel")]
        if not members:
            raise WorkflowDefinitionError(f"workflow {self.id!r}: .parallel() needs steps")
        path = self._next_id("parallel", None)
        if any(isinstance(member, ExecutionPlan) for member in members):
            return self._add(
                ConstructSpec(
                    path=path,
                    scope=self._scope,
                    kind="parallel",
                    members=tuple((None, member) for member in members),
                )
            )
        nodes = tuple(member for member in members if isinstance(member, StepNode))
        return self._add(ParallelNode(path=path, scope=self._scope, steps=nodes))

    def branch(
        self,
        arms: Sequence[tuple[Callable[[Any], Any], Step[Any, Any] | Workflow[Any, Any]]],
    ) -> Self:
        """Run, at once, every step whose condition holds.

        A condition is ``condition(ctx)`` returning a truth value (an ``async
        def`` is awaited); ``ctx`` is the context a step gets, read-only, with
        ``ctx.input_data`` the previous output validated by that arm's step's
        input schema. The output is ``{step_id: output}`` of the arms that
        ran (``{}`` when none did).

        An arm may be a committed workflow (its condition reads the input as
        the workflow's input schema), keyed by its id; chosen nested workflows
        run after the chosen steps, one after another, as in :meth:`parallel`.

        Raises:
            WorkflowDefinitionError: for no arms.
            TypeError: for an arm that is not a ``(callable, Step)`` or
                ``(callable, Workflow)`` pair.
        """
        built: list[tuple[Callable[[Any], Any], StepNode | ExecutionPlan]] = []
        for arm in _sequence(arms, "branch"):
            if not (isinstance(arm, tuple) and len(arm) == 2 and callable(arm[0])):
                raise TypeError(
                    f"workflow {self.id!r}: .branch() takes (condition, step) pairs, got {arm!r}"
                )
            built.append((arm[0], self._member(arm[1], "branch")))
        if not built:
            raise WorkflowDefinitionError(f"workflow {self.id!r}: .branch() needs arms")
        path = self._next_id("branch", None)
        if any(isinstance(member, ExecutionPlan) for _, member in built):
            return self._add(
                ConstructSpec(path=path, scope=self._scope, kind="branch", members=tuple(built))
            )
        steps = tuple((cond, m) for cond, m in built if isinstance(m, StepNode))
        return self._add(BranchNode(path=path, scope=self._scope, arms=steps))

    def dowhile(
        self,
        step: Step[Any, Any] | Workflow[Any, Any],
        condition: Callable[[Any], Any],
        *,
        max_iterations: int | None = None,
    ) -> Self:
        """Run ``step``, then again on its own output for as long as ``condition`` holds.

        ``condition(ctx)`` sees the step's output as ``ctx.input_data`` and
        the number of times the step has run as ``ctx.iteration_count``.

        ``step`` may be a committed workflow, nested as in :meth:`then`: it
        runs whole at each iteration, its record (at its id) counting them.

        Args:
            step: The step (or workflow) to repeat (its output must fit its own input).
            condition: Truth value; may be ``async``.
            max_iterations: Fail the run with ``LoopLimitError`` once the step
                has run this many times and the condition still holds.
        """
        return self._loop(step, condition, max_iterations, until=False)

    def dountil(
        self,
        step: Step[Any, Any] | Workflow[Any, Any],
        condition: Callable[[Any], Any],
        *,
        max_iterations: int | None = None,
    ) -> Self:
        """Run ``step``, then again on its own output until ``condition`` holds.

        Same arguments as :meth:`dowhile`.
        """
        return self._loop(step, condition, max_iterations, until=True)

    def _loop(self, step: Any, condition: Any, max_iterations: int | None, *, until: bool) -> Self:
        method = "dountil" if until else "dowhile"
        member = self._member(step, method)
        if not callable(condition):
            raise TypeError(f"workflow {self.id!r}: .{method}() needs a callable condition")
        if max_iterations is not None and (
            isinstance(max_iterations, bool)
            or not isinstance(max_iterations, int)
            or max_iterations < 1
        ):
            raise WorkflowDefinitionError(
                f"workflow {self.id!r}: max_iterations must be a whole number of 1 or more, "
                f"got {max_iterations!r}"
            )
        if isinstance(member, ExecutionPlan):
            return self._add(
                ConstructSpec(
                    path=member.workflow_id,
                    scope=self._scope,
                    kind="loop",
                    members=((None, member),),
                    condition=condition,
                    until=until,
                    max_iterations=max_iterations,
                )
            )
        node = member
        loop = LoopNode(
            path=node.path,
            scope=self._scope,
            step_node=node,
            condition=condition,
            until=until,
            max_iterations=max_iterations,
        )
        return self._add(loop)

    def foreach(self, step: Step[Any, Any] | Workflow[Any, Any], *, concurrency: int = 1) -> Self:
        """Run ``step`` once for each item of the list the previous node output.

        The output is the list of the step's outputs, in the order of the
        items, whatever order they finish in. Each item is its own call with
        its own input; nothing passes between items or between runs.

        ``step`` may be a committed workflow, nested as in :meth:`then`: it
        runs whole for each item, one item after another whatever the
        ``concurrency`` (its steps' records, at ``"child_id.step_id"``, are
        those of the item in progress); its record at its id ends with the
        list of items as payload and the list of outputs as output.

        Args:
            step: The step, whose input schema each item must fit.
            concurrency: How many items run at once.

        Raises:
            WorkflowDefinitionError: for a concurrency below 1.
        """
        node = self._member(step, "foreach")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise WorkflowDefinitionError(
                f"workflow {self.id!r}: foreach concurrency must be a whole number of 1 or more, "
                f"got {concurrency!r}"
            )
        if isinstance(node, ExecutionPlan):
            return self._add(
                ConstructSpec(
                    path=node.workflow_id,
                    scope=self._scope,
                    kind="foreach",
                    members=((None, node),),
                )
            )
        return self._add(
            ForeachNode(path=node.path, scope=self._scope, step_node=node, concurrency=concurrency)
        )

    def map(self, fn: Callable[[Any], Any], *, id: str | None = None) -> Self:
        """Reshape the data between two nodes: ``fn(ctx)`` returns the next node's input.

        ``ctx.input_data`` is the previous output as plain data, and the
        context can also read the run (``get_step_result``,
        ``get_init_data``, ``state``); what ``fn`` returns (a model or plain
        data) is validated by the next step's input schema. It appears in
        results as a step, ``map-N`` unless given an ``id``.
        """
        if not callable(fn):
            raise TypeError(f"workflow {self.id!r}: .map() takes a callable, got {fn!r}")
        return self._add(MapNode(path=self._next_id("map", id), scope=self._scope, fn=fn))

    def sleep(
        self, seconds: float | timedelta | Callable[[Any], Any], *, id: str | None = None
    ) -> Self:
        """Pause the run for ``seconds``: a number, a ``timedelta``, or ``fn(ctx)`` returning one.

        The run is ``waiting`` meanwhile and holds no thread and no actor; with
        a durable store the sleep survives a restart and ends at its time.
        The input passes through unchanged. It appears in results as a step,
        ``sleep-N`` unless given an ``id``.

        Raises:
            WorkflowDefinitionError: for a number of seconds that is negative, not
                finite, or above ``MAX_SLEEP`` (about 100 years).
        """
        if not callable(seconds):
            seconds = seconds_of(seconds)
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, int | float)
                or not 0 <= seconds <= MAX_SLEEP
            ):
                raise WorkflowDefinitionError(
                    f"workflow {self.id!r}: .sleep() takes seconds (from 0 to {MAX_SLEEP:g}), "
                    f"a timedelta or a function, got {seconds!r}"
                )
            seconds = float(seconds)
        return self._add(
            SleepNode(path=self._next_id("sleep", id), scope=self._scope, seconds=seconds)
        )

    def sleep_until(
        self, moment: datetime | Callable[[Any], Any], *, id: str | None = None
    ) -> Self:
        """Pause the run until ``moment`` (a datetime, naive taken as UTC, or ``fn(ctx)``).

        As :meth:`sleep`; a moment in the past does not pause at all.
        """
        if not callable(moment) and not isinstance(moment, datetime):
            raise TypeError(
                f"workflow {self.id!r}: .sleep_until() takes a datetime or a function, "
                f"got {moment!r}"
            )
        return self._add(
            SleepNode(path=self._next_id("sleep", id), scope=self._scope, until=moment)
        )

    def commit(self) -> Self:
        """Check the workflow and freeze it. Committing twice does nothing.

        Returns:
            The workflow, ready to run.

        Raises:
            WorkflowDefinitionError: if it has no steps, two steps share an id,
                or a node cannot take what the one before it outputs (a
                required field missing, or a field of a type that cannot fit;
                see :func:`runtime._schema_fit.check_chain`).
        """
        if self._plan is None:
            plan = compile_plan(
                workflow_id=self.id,
                input_schema=self.input_schema,
                output_schema=self.output_schema,
                state_schema=self.state_schema,
                nodes=self._nodes,
                on_finish=self.on_finish,
                on_error=self.on_error,
                retry=RetryPolicy(**self.retry_config.model_dump()),
                queue=self.queue,
                on_start=self.on_start,
                version=self.version,
                run_timeout=self.run_timeout,
            )
            check_chain(self.id, self.input_schema, self.output_schema, self._nodes)
            _check_path_lengths(plan)
            self._plan = plan
        return self

    def create_run(
        self, run_id: str | None = None, *, resource_id: str | None = None
    ) -> Run[In, Out]:
        """Create a run of this workflow (it starts with ``start_async`` or ``start``).

        Args:
            run_id: The run's id; a new UUID when omitted.
            resource_id: The user or tenant the run is for (Mastra's
                ``resourceId``): stored with the run, shown in its results, and
                what ``list_workflow_runs(resource_id=...)`` filters on.

        Raises:
            WorkflowDefinitionError: if the workflow is not committed.
            TypeError: if ``run_id`` or ``resource_id`` is not a string.
            ValueError: if ``run_id`` or ``resource_id`` is empty or not valid UTF-8 text.
        """
        plan = self._plan
        if plan is None:
            plan = self.plan  # raises, saying the workflow is not committed
        run_id = new_id() if run_id is None else check_run_id(run_id)
        if resource_id is not None:
            check_resource_id(resource_id)
        runtime = self._runtime
        if runtime is None:
            from runtime._runtime import default_runtime

            self._refuse_if_registered()
            self._refuse_under_harness()
            return default_runtime().register(self).create_run(run_id, resource_id=resource_id)
        assert self._host is not None
        return Run(plan, self._host, run_id, resource_id)

    def time_travel(
        self,
        run_id: str,
        *,
        step: Step[Any, Any] | str,
        input_data: BaseModel | Any = None,
        resume_data: BaseModel | Any = None,
        new_run_id: str | None = None,
        resource_id: str | None = None,
    ) -> Run[In, Out]:
        """Start a new run that replays run ``run_id`` up to ``step`` and runs on from it.

        Mastra's ``timeTravel``: to debug a step, or to recover from a bad
        deploy. The new run keeps the recorded records and outputs of the
        steps before ``step`` (they do not run again), and starts at
        ``step``'s node with ``input_data`` (validated by the step's input
        schema; a list of items for a ``foreach``), or with the input the step
        had in the original run. A ``parallel`` member or ``branch`` arm runs
        alone: the members that succeeded in the original keep their records
        and outputs. Its input, state, request context and
        options are the original's. The original run is not changed; the new
        one's results say where it came from (``time_traveled_from``). Works
        on a run of any status, from any runtime on the same store.

        Args:
            run_id: The recorded run.
            step: The step to start from: a :class:`Step`, its id, or its path.
            input_data: The step's input; ``None`` reuses the recorded one.
            resume_data: Handed to the step as ``ctx.resume_data`` (validated
                by its ``resume_schema``), as a resume would.
            new_run_id: The new run's id; a new UUID when omitted.
            resource_id: The new run's resource id; the original's when omitted.

        Returns:
            The new run, started (``wait()`` for its end).

        Raises:
            RunNotStartedError: if this workflow has no run ``run_id``.
            InvalidInputError: if ``step`` is not a step of this workflow, or
                ``input_data`` or ``resume_data`` does not fit, or there is no
                input (none given, and the original never reached the step).
            RunAlreadyStartedError: if ``new_run_id`` is taken.
            WorkflowVersionError: if run ``run_id`` started on a definition of this
                workflow (a plan fingerprint) not registered on this runtime; the new
                run goes on the one registered with its fingerprint otherwise.
            RuntimeStoppedError: if the runtime is not running.
        """
        check_run_id(run_id, lookup=True)
        run = self.create_run(new_run_id, resource_id=resource_id)
        run._time_travel(run_id, step, input_data, resume_data, resource_id)
        return run

    async def atime_travel(
        self,
        run_id: str,
        *,
        step: Step[Any, Any] | str,
        input_data: BaseModel | Any = None,
        resume_data: BaseModel | Any = None,
        new_run_id: str | None = None,
        resource_id: str | None = None,
    ) -> Run[In, Out]:
        """Await :meth:`time_travel` without blocking the event loop."""
        return await offload(
            self._host,
            self.time_travel,
            run_id,
            step=step,
            input_data=input_data,
            resume_data=resume_data,
            new_run_id=new_run_id,
            resource_id=resource_id,
        )

    def get_workflow_run_execution_result(self, run_id: str) -> WorkflowResult[Out] | None:
        """The execution result of a run of this workflow, at this moment.

        Args:
            run_id: The id ``start_async`` returned.

        Returns:
            The run's result (status, input, steps, output or error), or
            ``None`` if this workflow has no run with that id.

        Raises:
            TypeError: if ``run_id`` is not a string.
            ValueError: if ``run_id`` is not valid UTF-8 text.
            SnapshotFormatError: if the run's stored snapshot cannot be read.
        """
        return self.get_workflow_run_by_id(run_id)

    def get_workflow_run_by_id(
        self, run_id: str, fields: Iterable[str] | None = None
    ) -> WorkflowResult[Out] | None:
        """A run of this workflow by id (Mastra's ``getWorkflowRunById``).

        Args:
            run_id: The run's id.
            fields: The parts to include, among ``input``, ``result``, ``error``,
                ``steps`` and ``state``; the others come back empty (``None``, or
                ``{}`` for ``steps``). The ids, ``status`` and times are always
                there. ``None`` includes everything.

        Returns:
            The run, or ``None`` if this workflow has no run with that id.

        Raises:
            TypeError: if ``run_id`` is not a string.
            ValueError: if ``run_id`` is not valid UTF-8 text, or for
                a field name that is not one of the above.
            SnapshotFormatError: if the run's stored snapshot cannot be read.
        """
        result = get_run(self._store(start=False), run_id, workflow_id=self.id, fields=fields)
        return None if result is None else with_output_schema(result, self.output_schema)

    def list_workflow_runs(
        self,
        *,
        status: RunStatus | str | Iterable[RunStatus | str] | None = None,
        from_date: datetime | None = None,
        to_date: datetime | None = None,
        limit: int | None = 50,
        offset: int = 0,
        resource_id: str | None = None,
    ) -> WorkflowRunList[Out]:
        """This workflow's runs, newest first (Mastra's ``listWorkflowRuns``).

        The runs waiting for a resume, for one user::

            wf.list_workflow_runs(status="suspended", resource_id="user-42")

        Args:
            status: Only runs with this status, or with any of several
                (``["pending", "running"]``).
            resource_id: Only runs started for this user or tenant
                (``create_run(resource_id=...)``).
            from_date: Only runs created at or after this time (a naive
                datetime is taken as UTC).
            to_date: Only runs created at or before this time.
            limit: The most runs to return (``None``: all).
            offset: How many matching runs to skip, for paging.

        Returns:
            The page of runs, the total that match, and the ids of any whose
            stored snapshot could not be read (left out, and logged).

        Raises:
            TypeError: for a date that is not a ``datetime``, a ``limit`` or
                ``offset`` that is not an ``int``, or a ``status`` that is not a ``str``.
            ValueError: for an unknown status, a negative offset, a limit below
                1, or either above ``2**63 - 1``.
        """
        page = list_runs(
            self._store(start=False),
            workflow_id=self.id,
            status=status,
            from_date=from_date,
            to_date=to_date,
            limit=limit,
            offset=offset,
            resource_id=resource_id,
        )
        for run in page.runs:
            with_output_schema(run, self.output_schema)
        return cast("WorkflowRunList[Out]", page)

    def delete_workflow_run_by_id(self, run_id: str) -> bool:
        """Delete a finished run of this workflow (Mastra's ``deleteWorkflowRunById``).

        Returns:
            Whether there was such a run.

        Raises:
            TypeError: if ``run_id`` is not a string.
            ValueError: if ``run_id`` is not valid UTF-8 text.
            RunInProgressError: if the run has not ended (``pending``, ``running``,
                ``waiting`` or ``suspended``).
            RuntimeStoppedError: if the runtime stopped, and closed its durable
                store, before the run was deleted (a read still finds it, on
                this runtime and on the next one on the store). In memory, a
                stopped runtime's runs can still be deleted.
        """
        check_run_id(run_id, lookup=True)
        store = self._store(start=False)
        record = store.load(run_id)
        if record is None or record.workflow_id != self.id:
            return False
        if record.status not in TERMINAL_STATUSES:
            raise _in_progress(run_id, record.status)
        host = self._store_host()
        deleted = (
            store.delete(run_id)
            if host is None
            else host.cut_by_stop("delete", run_id, store.delete, run_id)
        )
        if deleted:
            self._forget(run_id)
            return True
        # The store deletes only a run that has ended: this one was restarted meanwhile,
        # or deleted by somebody else.
        record = store.load(run_id)
        if record is not None and record.workflow_id == self.id:
            raise _in_progress(run_id, record.status)
        return False

    async def aget_workflow_run_execution_result(self, run_id: str) -> WorkflowResult[Out] | None:
        """Await :meth:`get_workflow_run_execution_result` without blocking the event loop.

        Same argument, result and errors; the store is read on one of the
        runtime's call threads.
        """
        return await offload(self._host, self.get_workflow_run_execution_result, run_id)

    async def aget_workflow_run_by_id(
        self, run_id: str, fields: Iterable[str] | None = None
    ) -> WorkflowResult[Out] | None:
        """Await :meth:`get_workflow_run_by_id` without blocking the event loop.

        Same arguments, result and errors.
        """
        return await offload(self._host, self.get_workflow_run_by_id, run_id, fields)

    async def alist_workflow_runs(
        self,
        *,
        status: RunStatus | str | Iterable[RunStatus | str] | None = None,
        from_date: datetime | None = None,
        to_date: datetime | None = None,
        limit: int | None = 50,
        offset: int = 0,
        resource_id: str | None = None,
    ) -> WorkflowRunList[Out]:
        """Await :meth:`list_workflow_runs` without blocking the event loop.

        Same arguments, result and errors.
        """
        return await offload(
            self._host,
            self.list_workflow_runs,
            status=status,
            from_date=from_date,
            to_date=to_date,
            limit=limit,
            offset=offset,
            resource_id=resource_id,
        )

    async def adelete_workflow_run_by_id(self, run_id: str) -> bool:
        """Await :meth:`delete_workflow_run_by_id` without blocking the event loop.

        Same argument, result and errors; the delete is committed on one of
        the runtime's call threads.
        """
        return await offload(self._host, self.delete_workflow_run_by_id, run_id)

    def _store(self, *, start: bool) -> SnapshotStore:
        runtime = self._runtime
        if runtime is None:
            from runtime._runtime import default_runtime

            self._refuse_if_registered()
            if start:
                self._refuse_under_harness()
            runtime = default_runtime(start=start)
        store = None if runtime is None else runtime.store
        # Without a (default) runtime, or before a SQLite runtime starts, there
        # is no run to find: an empty store says so, after the same checks.
        return _NO_RUNS if store is None else store

    def _store_host(self) -> RunHost | None:
        """The host of the runtime whose store this workflow reads: its own, or the default."""
        runtime = self._runtime
        if runtime is None:
            from runtime._runtime import default_runtime

            runtime = default_runtime(start=False)
        return None if runtime is None else runtime._host

    def _forget(self, run_id: str) -> None:
        """Tell the runtime whose store deleted ``run_id``: it forgets what it kept of the run."""
        host = self._store_host()
        if host is not None:
            host.run_deleted(run_id)

    def _refuse_if_registered(self) -> None:
        """Refuse the unbound path while a runtime this object was registered on is not stopped.

        Raises:
            UnboundWorkflowError: naming that runtime.
        """
        from runtime._runtime import default_runtime

        default = default_runtime(start=False)
        for runtime in list(self._registrations):
            if runtime is not default and runtime._host.state in ("new", "running"):
                raise UnboundWorkflowError(
                    f"workflow {self.id!r} is registered on {runtime!r}, but this is the "
                    "unbound object you passed to register(), which would run on the "
                    "process-wide default runtime (in memory) instead: use the workflow "
                    "register() returned (wf = runtime.register(workflow))"
                )

    def _refuse_under_harness(self) -> None:
        """Refuse the unbound path while a test harness is open in the process.

        The default runtime would start and read the harness's virtual clock,
        which jumps only for the harness's own runtime: a workflow the test
        forgot to register hung on its first sleep, and the default runtime's
        threads failed the harness's check at its close, unexplained.

        Raises:
            UnboundWorkflowError: naming the fix.
        """
        if _probes.observer is not None:
            raise UnboundWorkflowError(
                f"workflow {self.id!r} is not registered with the open Harness: unbound, it "
                "would run on the process-wide default runtime, which the harness's virtual "
                "clock does not serve; use the workflow harness.register() returns"
            )

    def _bound_to(self, runtime: Runtime, host: RunHost) -> Self:
        if self._runtime is runtime:
            return self
        if self._runtime is None:
            self._registrations.add(runtime)
        bound = object.__new__(type(self))
        bound.__dict__.update(self.__dict__)
        bound._runtime = runtime
        bound._host = host
        return bound


_NO_RUNS = MemoryStore()
"""The store of a workflow whose runtime does not exist yet: it never holds a run."""


def create_workflow(
    *,
    id: str,
    input_schema: type[In],
    output_schema: type[Out],
    state_schema: type[BaseModel] | None = None,
    description: str | None = None,
    retry_config: RetryConfig | Mapping[str, Any] | None = None,
    on_finish: Callable[[RunOutcome], Any] | None = None,
    on_error: Callable[[RunOutcome], Any] | None = None,
    queue: Queue | None = None,
    on_start: Callable[[RunOutcome], Any] | None = None,
    schedule: Schedule | Sequence[Schedule] | None = None,
    version: str | None = None,
    run_timeout: float | timedelta | None = None,
) -> Workflow[In, Out]:
    """Define a workflow; add steps with ``.then(step)`` and finish with ``.commit()``.

    Args:
        id: The workflow's id, unique within a runtime.
        input_schema: pydantic model for a run's input.
        output_schema: pydantic model for a run's result (the last step's output
            must fit it).
        state_schema: pydantic model for the workflow state steps share.
        description: Free text.
        retry_config: How failed steps are retried: a :class:`RetryConfig` or
            a mapping of its fields (a step's own ``retries`` wins).
        on_finish: ``on_finish(outcome)``, called once when a run ends
            (success, failed or canceled) with a :class:`RunOutcome`; it may
            be ``async``. It runs before the final result is visible, so keep
            it short. An exception in it is logged and changes nothing.
        on_error: Like ``on_finish``, for failed runs only (called first).
        queue: The :class:`Queue` its runs go through (a start may name
            another): it bounds how many execute at once, per key and per window.
        on_start: ``on_start(outcome)``, called when a run starts, before its
            first step (status ``running``; ``input`` and ``resource_id`` set); it
            may be ``async``. Not called again on a resume or a wake, nor for a
            run recovered past its first step. An exception in it is logged and
            the run goes on.
        schedule: A :class:`Schedule` (or several) that starts runs of the
            workflow on a cron expression, on every runtime the workflow is
            registered with (see ``Runtime.schedule``). Its input is checked
            against ``input_schema`` here.
        version: A label for this definition of the workflow (``"2024-06"``,
            ``"v2"``): recorded with every run beside the plan's fingerprint,
            shown by the CLI, and what ``WorkflowVersionError`` names. Several
            versions of one workflow id may be registered on one runtime.
        run_timeout: Seconds (or a ``timedelta``) each run may take, counted from
            when it begins to execute (a wait in a queue does not count), unless
            its start gives another; then it is canceled, its error a
            ``RunDeadlineError``. The deadline is stored with the run, so it
            holds across sleeps, suspensions, crashes and other processes.

    Raises:
        WorkflowDefinitionError: for an empty id, an id with a ``.``, a bad
            ``retry_config``, a ``run_timeout`` that is not a number of seconds
            above 0 and at most about a century (or a timedelta), or two
            schedules with one id.
        InvalidInputError: for a schedule whose input does not fit ``input_schema``.
        TypeError: for schemas that are not pydantic models, hooks that
            are not callable, a ``queue`` that is not a :class:`Queue`, or a
            ``version`` that is not a non-empty string.
    """
    return Workflow(
        id=id,
        input_schema=input_schema,
        output_schema=output_schema,
        state_schema=state_schema,
        description=description,
        retry_config=retry_config,
        on_finish=on_finish,
        on_error=on_error,
        queue=queue,
        on_start=on_start,
        schedule=schedule,
        version=version,
        run_timeout=run_timeout,
    )


def _schedules(value: Any, workflow_id: str, input_schema: type[BaseModel]) -> tuple[Schedule, ...]:
    """A workflow's schedules, each with its id (the workflow's by default) and checked input."""
    if value is None:
        return ()
    if isinstance(value, Schedule):
        given = [value]
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        given = list(value)
    else:
        given = [value]  # refused below
    schedules: list[Schedule] = []
    for schedule in given:
        if not isinstance(schedule, Schedule):
            raise TypeError(
                f"workflow {workflow_id!r}: schedule must be a Schedule or a list of them, got "
                f"{type(schedule).__name__}"
            )
        schedules.append(bound_schedule(schedule, workflow_id, input_schema))
    ids = [schedule.schedule_id for schedule in schedules]
    if len(set(ids)) != len(ids):
        raise WorkflowDefinitionError(
            f"workflow {workflow_id!r}: two schedules share an id ({ids}); give each its "
            "own schedule_id"
        )
    return tuple(schedules)


def _retry_config(value: Any, workflow_id: str) -> RetryConfig:
    if value is None:
        return RetryConfig()
    if isinstance(value, RetryConfig):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(
            f"workflow {workflow_id!r}: retry_config must be a RetryConfig or a mapping, "
            f"got {type(value).__name__}"
        )
    try:
        return RetryConfig.model_validate(value)
    except ValidationError as exc:
        raise WorkflowDefinitionError(
            f"workflow {workflow_id!r}: retry_config is invalid: {exc}"
        ) from exc


def _sequence(value: Any, method: str) -> list[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(f".{method}() takes a list, got {type(value).__name__}")
    return list(value)


def _in_progress(run_id: str, status: str) -> RunInProgressError:
    return RunInProgressError(
        f"run {run_id!r} is {status}; only a run that has ended can be deleted", run_id=run_id
    )


def _check_path_lengths(plan: ExecutionPlan) -> None:
    """Refuse a step path (nested ids joined by ``.``) longer than a name may be.

    A store keys a run's step records by run id and path: each id within
    :data:`~runtime._ids.MAX_NAME_BYTES` still made paths too long for a
    PostgreSQL index entry once nested, and the runs failed there alone.

    Raises:
        WorkflowDefinitionError: naming the path, cut short.
    """
    for path in plan.paths:
        # Its ids were each checked when given: only the length of the whole is news here.
        if len(path) > MAX_NAME_BYTES // 4 and (problem := unstorable_text(path)) is not None:
            raise WorkflowDefinitionError(
                f"workflow {shown_name(plan.workflow_id)}: the step path {shown_name(path)} "
                f"{problem}: shorten the ids of the nested workflows or steps"
            )
