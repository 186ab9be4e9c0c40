"""Workflows: typed steps chained with ``.then()`` and frozen by ``.commit()``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from pydantic import BaseModel

from runtime.errors import RunInProgressError, WorkflowDefinitionError
from runtime.model import (
    TERMINAL_STATUSES,
    RunStatus,
    WorkflowResult,
    WorkflowRunList,
)
from runtime.plan import ExecutionPlan, compile_plan
from runtime.queries import get_run, list_runs
from runtime.run import Run
from runtime.step import Step
from runtime.store import MemoryStore, SnapshotStore
from runtime.tracing import new_run_id

if TYPE_CHECKING:
    from runtime.engine import Runtime

__all__ = ["Workflow", "create_workflow"]

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)


class Workflow(Generic[In, Out]):
    """A workflow: steps that run one after another, each fed the previous one's output.

    Build one with :func:`create_workflow`, add steps with :meth:`then`, and
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
    ) -> None:
        if not isinstance(id, str) or not id:
            raise WorkflowDefinitionError(f"a workflow id must be a non-empty string, got {id!r}")
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
        self.id = id
        self.input_schema = input_schema
        self.output_schema = output_schema
        self.state_schema = state_schema
        self.description = description
        self._steps: list[Step[Any, Any]] = []
        self._plan: ExecutionPlan | None = None
        self._runtime: Runtime | None = None

    def __repr__(self) -> str:
        state = "committed" if self._plan is not None else "not committed"
        return f"<Workflow {self.id!r} ({len(self._steps)} steps, {state})>"

    @property
    def steps(self) -> tuple[Step[Any, Any], ...]:
        """The steps, in the order they run."""
        return tuple(self._steps)

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

    def then(self, step: Step[Any, Any]) -> Self:
        """Append a step; it receives the previous step's output (the run's input for the first).

        Returns:
            The workflow, for chaining.

        Raises:
            WorkflowDefinitionError: if the workflow is already committed.
            TypeError: if ``step`` is not a :class:`Step`.
        """
        if self._plan is not None:
            raise WorkflowDefinitionError(
                f"workflow {self.id!r} is committed; it cannot take more steps"
            )
        if not isinstance(step, Step):
            raise TypeError(f"workflow {self.id!r}: .then() takes a Step, got {step!r}")
        self._steps.append(step)
        return self

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
                steps=self._steps,
            )
        return self

    def create_run(self, run_id: str | None = None) -> Run[In, Out]:
        """Create a run of this workflow (it starts with ``start_async`` or ``start``).

        Args:
            run_id: The run's id; a new UUID when omitted.

        Raises:
            WorkflowDefinitionError: if the workflow is not committed.
            TypeError: if ``run_id`` is not a string.
            ValueError: if ``run_id`` is empty.
        """
        plan = self.plan
        if run_id is None:
            run_id = new_run_id()
        elif not isinstance(run_id, str):
            raise TypeError(f"run_id must be a str, got {type(run_id).__name__}")
        elif not run_id:
            raise ValueError("run_id must not be empty")
        runtime = self._runtime
        if runtime is None:
            from runtime.engine import default_runtime

            runtime = default_runtime()
            runtime.register(self)
        return Run(plan, runtime, run_id)

    def get_workflow_run_execution_result(self, run_id: str) -> WorkflowResult | None:
        """The execution result of a run of this workflow, at this moment.

        Args:
            run_id: The id ``start_async`` returned.

        Returns:
            The run's result (status, input, steps, output or error), or
            ``None`` if this workflow has no run with that id.

        Raises:
            TypeError: if ``run_id`` is not a string.
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
            ValueError: for a field name that is not one of the above.
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
            ValueError: for an unknown status, a negative offset or a limit below 1.
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
            RunInProgressError: if the run has not ended (``pending`` or ``running``).
        """
        if not isinstance(run_id, str):
            raise TypeError(f"run_id must be a str, got {type(run_id).__name__}")
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

    def _store(self, *, start: bool) -> SnapshotStore:
        runtime = self._runtime
        if runtime is None:
            from runtime.engine import default_runtime

            runtime = default_runtime(start=start)
        store = None if runtime is None else runtime.store
        # Without a (default) runtime, or before a SQLite runtime starts, there
        # is no run to find: an empty store says so, after the same checks.
        return _NO_RUNS if store is None else store

    def _bound_to(self, runtime: Runtime) -> Self:
        if self._runtime is runtime:
            return self
        bound = object.__new__(type(self))
        bound.__dict__.update(self.__dict__)
        bound._runtime = runtime
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
) -> Workflow[In, Out]:
    """Define a workflow; add steps with ``.then(step)`` and finish with ``.commit()``.

    Args:
        id: The workflow's id, unique within a runtime.
        input_schema: pydantic model for a run's input.
        output_schema: pydantic model for a run's result (the last step's output
            must fit it).
        state_schema: pydantic model for the workflow state steps share.
        description: Free text.

    Raises:
        WorkflowDefinitionError: for an empty id.
        TypeError: for schemas that are not pydantic models.
    """
    return Workflow(
        id=id,
        input_schema=input_schema,
        output_schema=output_schema,
        state_schema=state_schema,
        description=description,
    )
