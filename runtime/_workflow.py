"""Workflows: typed steps chained with ``.then()`` and frozen by ``.commit()``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from pydantic import BaseModel, ValidationError

from runtime._errors import RunInProgressError, WorkflowDefinitionError
from runtime._ids import check_run_id, new_id
from runtime._model import (
    TERMINAL_STATUSES,
    RunOutcome,
    RunStatus,
    WorkflowResult,
    WorkflowRunList,
)
from runtime._options import RetryConfig
from runtime._plan import (
    MAX_SLEEP,
    BranchNode,
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
from runtime._run import Run
from runtime._run_input import bound_schedule
from runtime._runtime import offload
from runtime._schedule import Schedule
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
        schedule: Schedule | Sequence[Schedule] | None = None,
    ) -> None:
        if not isinstance(id, str) or not id:
            raise WorkflowDefinitionError(f"a workflow id must be a non-empty string, got {id!r}")
        if "." in id:
            raise WorkflowDefinitionError(
                f"workflow id {id!r} holds a '.', which separates a nested workflow's id from "
                "its steps' ids in results"
            )
        for name, schema in (
            ("input_schema", input_schema),
            ("output_schema", output_schema),
            ("state_schema", state_schema),
        ):
            if schema is not None and not (
                isinstance(schema, type) and issubclass(schema, BaseModel)
            ):
                raise TypeError(
                    f"workflow {id!r}: {name} must be a pydantic BaseModel subclass, got {schema!r}"
                )
        for name, hook in (("on_finish", on_finish), ("on_error", on_error)):
            if hook is not None and not callable(hook):
                raise TypeError(f"workflow {id!r}: {name} must be callable, got {hook!r}")
        self.id = id
        self.input_schema = input_schema
        self.output_schema = output_schema
        self.state_schema = state_schema
        self.description = description
        self.retry_config = _retry_config(retry_config, id)
        self.on_finish = on_finish
        self.on_error = on_error
        self.schedules = _schedules(schedule, id, input_schema)
        self._nodes: list[Node | ExecutionPlan] = []
        self._plan: ExecutionPlan | None = None
        self._runtime: Runtime | None = None
        self._host: RunHost | None = None

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
            for step_node in leaf_steps(node)
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
        if isinstance(step, Workflow):
            raise TypeError(
                f"workflow {self.id!r}: .{method}() takes steps; a nested workflow goes in .then()"
            )
        if not isinstance(step, Step):
            raise TypeError(f"workflow {self.id!r}: .{method}() takes a Step, got {step!r}")
        return StepNode(path=step.id, scope=self._scope, step=step)

    def _next_id(self, kind: str, given: str | None) -> str:
        if given is None:
            return f"{kind}-{len(self._nodes) + 1}"
        if not isinstance(given, str) or not given or "." in given:
            raise WorkflowDefinitionError(
                f"workflow {self.id!r}: a {kind} id must be a non-empty string without '.', "
                f"got {given!r}"
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
            if step is self or step.id == self.id:
                raise WorkflowDefinitionError(f"workflow {self.id!r} cannot nest itself")
            if not step.committed:
                raise WorkflowDefinitionError(
                    f"workflow {self.id!r}: nested workflow {step.id!r} is not committed; "
                    "call .commit() on it first"
                )
            return self._add(step.plan)
        return self._add(self._step_node(step, "then"))

    def parallel(self, steps: Sequence[Step[Any, Any]]) -> Self:
        """Run steps at once, each on its own step actor, all on the same input.

        The output is ``{step_id: output}``. If one fails the run fails, and
        the others are told to stop (their ``ctx.abort_signal`` is set); if
        one suspends and none fails, the run suspends once the others end.

        Raises:
            WorkflowDefinitionError: for an empty list.
            TypeError: for something that is not a :class:`Step`.
        """
        nodes = tuple(self._step_node(step, "parallel") for step in _sequence(steps, "parallel"))
        if not nodes:
            raise WorkflowDefinitionError(f"workflow {self.id!r}: .parallel() needs steps")
        return self._add(
            ParallelNode(path=self._next_id("parallel", None), scope=self._scope, steps=nodes)
        )

    def branch(self, arms: Sequence[tuple[Callable[[Any], Any], Step[Any, Any]]]) -> Self:
        """Run, at once, every step whose condition holds.

        A condition is ``condition(ctx)`` returning a truth value (an ``async
        def`` is awaited); ``ctx`` is the context a step gets, read-only, with
        ``ctx.input_data`` the previous output validated by that arm's step's
        input schema. The output is ``{step_id: output}`` of the arms that
        ran (``{}`` when none did).

        Raises:
            WorkflowDefinitionError: for no arms.
            TypeError: for an arm that is not a ``(callable, Step)`` pair.
        """
        built = []
        for arm in _sequence(arms, "branch"):
            if not (isinstance(arm, tuple) and len(arm) == 2 and callable(arm[0])):
                raise TypeError(
                    f"workflow {self.id!r}: .branch() takes (condition, step) pairs, got {arm!r}"
                )
            built.append((arm[0], self._step_node(arm[1], "branch")))
        if not built:
            raise WorkflowDefinitionError(f"workflow {self.id!r}: .branch() needs arms")
        return self._add(
            BranchNode(path=self._next_id("branch", None), scope=self._scope, arms=tuple(built))
        )

    def dowhile(
        self,
        step: Step[Any, Any],
        condition: Callable[[Any], Any],
        *,
        max_iterations: int | None = None,
    ) -> Self:
        """Run ``step``, then again on its own output for as long as ``condition`` holds.

        ``condition(ctx)`` sees the step's output as ``ctx.input_data`` and
        the number of times the step has run as ``ctx.iteration_count``.

        Args:
            step: The step to repeat (its output must fit its own input).
            condition: Truth value; may be ``async``.
            max_iterations: Fail the run with ``LoopLimitError`` once the step
                has run this many times and the condition still holds.
        """
        return self._loop(step, condition, max_iterations, until=False)

    def dountil(
        self,
        step: Step[Any, Any],
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
        node = self._step_node(step, method)
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
        loop = LoopNode(
            path=node.path,
            scope=self._scope,
            step_node=node,
            condition=condition,
            until=until,
            max_iterations=max_iterations,
        )
        return self._add(loop)

    def foreach(self, step: Step[Any, Any], *, concurrency: int = 1) -> Self:
        """Run ``step`` once for each item of the list the previous node output.

        The output is the list of the step's outputs, in the order of the
        items, whatever order they finish in. Each item is its own call with
        its own input; nothing passes between items or between runs.

        Args:
            step: The step, whose input schema each item must fit.
            concurrency: How many items run at once.

        Raises:
            WorkflowDefinitionError: for a concurrency below 1.
        """
        node = self._step_node(step, "foreach")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise WorkflowDefinitionError(
                f"workflow {self.id!r}: foreach concurrency must be a whole number of 1 or more, "
                f"got {concurrency!r}"
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

    def sleep(self, seconds: float | Callable[[Any], Any], *, id: str | None = None) -> Self:
        """Pause the run for ``seconds`` (a number, or ``fn(ctx)`` that returns one).

        The run is ``waiting`` meanwhile and holds no thread and no actor; with
        a durable store the sleep survives a restart and ends at its time.
        The input passes through unchanged. It appears in results as a step,
        ``sleep-N`` unless given an ``id``.

        Raises:
            WorkflowDefinitionError: for a number of seconds that is negative, not
                finite, or above ``MAX_SLEEP`` (about 100 years).
        """
        if not callable(seconds):
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, int | float)
                or not 0 <= seconds <= MAX_SLEEP
            ):
                raise WorkflowDefinitionError(
                    f"workflow {self.id!r}: .sleep() takes seconds (from 0 to {MAX_SLEEP:g}) "
                    f"or a function, got {seconds!r}"
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
            WorkflowDefinitionError: if it has no steps or two steps share an id.
        """
        if self._plan is None:
            self._plan = compile_plan(
                workflow_id=self.id,
                input_schema=self.input_schema,
                output_schema=self.output_schema,
                state_schema=self.state_schema,
                nodes=self._nodes,
                on_finish=self.on_finish,
                on_error=self.on_error,
                retry=RetryPolicy(**self.retry_config.model_dump()),
            )
        return self

    def create_run(self, run_id: str | None = None) -> Run[In, Out]:
        """Create a run of this workflow (it starts with ``start_async`` or ``start``).

        Args:
            run_id: The run's id; a new UUID when omitted.

        Raises:
            WorkflowDefinitionError: if the workflow is not committed.
            TypeError: if ``run_id`` is not a string.
            ValueError: if ``run_id`` is empty or not valid UTF-8 text.
        """
        plan = self.plan
        run_id = new_id() if run_id is None else check_run_id(run_id)
        runtime = self._runtime
        if runtime is None:
            from runtime._runtime import default_runtime

            return default_runtime().register(self).create_run(run_id)
        assert self._host is not None
        return Run(plan, self._host, run_id)

    def get_workflow_run_execution_result(self, run_id: str) -> WorkflowResult | None:
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
    ) -> WorkflowResult | None:
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
        return get_run(self._store(start=False), run_id, workflow_id=self.id, fields=fields)

    def list_workflow_runs(
        self,
        *,
        status: RunStatus | str | None = None,
        from_date: datetime | None = None,
        to_date: datetime | None = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> WorkflowRunList:
        """This workflow's runs, newest first (Mastra's ``listWorkflowRuns``).

        Args:
            status: Only runs with this status.
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
        return list_runs(
            self._store(start=False),
            workflow_id=self.id,
            status=status,
            from_date=from_date,
            to_date=to_date,
            limit=limit,
            offset=offset,
        )

    def delete_workflow_run_by_id(self, run_id: str) -> bool:
        """Delete a finished run of this workflow (Mastra's ``deleteWorkflowRunById``).

        Returns:
            Whether there was such a run.

        Raises:
            TypeError: if ``run_id`` is not a string.
            ValueError: if ``run_id`` is not valid UTF-8 text.
            RunInProgressError: if the run has not ended (``pending`` or ``running``).
        """
        check_run_id(run_id, lookup=True)
        store = self._store(start=False)
        record = store.load(run_id)
        if record is None or record.workflow_id != self.id:
            return False
        if record.status not in TERMINAL_STATUSES:
            raise RunInProgressError(
                f"run {run_id!r} is {record.status}; only a run that has ended can be deleted",
                run_id=run_id,
            )
        return store.delete(run_id)

    async def aget_workflow_run_execution_result(self, run_id: str) -> WorkflowResult | None:
        """Await :meth:`get_workflow_run_execution_result` without blocking the event loop.

        Same argument, result and errors; the store is read on one of the
        runtime's call threads.
        """
        return await offload(self._host, self.get_workflow_run_execution_result, run_id)

    async def aget_workflow_run_by_id(
        self, run_id: str, fields: Iterable[str] | None = None
    ) -> WorkflowResult | None:
        """Await :meth:`get_workflow_run_by_id` without blocking the event loop.

        Same arguments, result and errors.
        """
        return await offload(self._host, self.get_workflow_run_by_id, run_id, fields)

    async def alist_workflow_runs(
        self,
        *,
        status: RunStatus | str | None = None,
        from_date: datetime | None = None,
        to_date: datetime | None = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> WorkflowRunList:
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

            runtime = default_runtime(start=start)
        store = None if runtime is None else runtime.store
        # Without a (default) runtime, or before a SQLite runtime starts, there
        # is no run to find: an empty store says so, after the same checks.
        return _NO_RUNS if store is None else store

    def _bound_to(self, runtime: Runtime, host: RunHost) -> Self:
        if self._runtime is runtime:
            return self
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
    schedule: Schedule | Sequence[Schedule] | None = None,
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
        schedule: A :class:`Schedule` (or several) that starts runs of the
            workflow on a cron expression, on every runtime the workflow is
            registered with (see ``Runtime.schedule``). Its input is checked
            against ``input_schema`` here.

    Raises:
        WorkflowDefinitionError: for an empty id, an id with a ``.``, a bad
            ``retry_config``, or two schedules with one id.
        InvalidInputError: for a schedule whose input does not fit ``input_schema``.
        TypeError: for schemas that are not pydantic models, or hooks that
            are not callable.
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
        schedule=schedule,
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
