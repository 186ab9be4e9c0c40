"""Public data: run and step statuses, results, and errors as they are recorded.

Everything here is a frozen pydantic model holding plain data (dicts, lists,
scalars) exactly as the snapshot stores it, so a result reads the same in the
process that ran the workflow and in one that only reads it.
"""

from __future__ import annotations

import traceback
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "OPEN_STEP_STATUSES",
    "PARKED_STATUSES",
    "SETTLED_STATUSES",
    "TERMINAL_STATUSES",
    "UNFINISHED_STATUSES",
    "ErrorInfo",
    "RunEvent",
    "RunOutcome",
    "RunStatus",
    "StartAsyncResult",
    "StepResult",
    "StepStatus",
    "WorkflowResult",
    "WorkflowRunList",
]


class RunStatus(StrEnum):
    """Where a run stands.

    ``success``, ``failed`` and ``canceled`` are terminal and final. A
    ``waiting`` run sleeps until a time; a ``suspended`` run waits for
    ``run.resume()``. Neither holds a thread or an actor meanwhile.
    """

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    SUSPENDED = "suspended"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELED = "canceled"


class StepStatus(StrEnum):
    """Where one step of a run stands."""

    RUNNING = "running"
    WAITING = "waiting"
    SUSPENDED = "suspended"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELED = "canceled"


TERMINAL_STATUSES: frozenset[str] = frozenset(
    {RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELED}
)
"""The statuses a run never leaves."""

SETTLED_STATUSES: frozenset[str] = TERMINAL_STATUSES | {RunStatus.SUSPENDED}
"""The statuses at which ``run.wait()`` returns: the run ended, or waits for a resume."""

UNFINISHED_STATUSES: frozenset[str] = frozenset(
    {RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING}
)
"""The statuses of runs some runtime must drive on (a suspended run waits for a resume)."""

PARKED_STATUSES: frozenset[str] = frozenset({RunStatus.WAITING, RunStatus.SUSPENDED})
"""The statuses of runs that hold no actor: asleep until a time, or waiting for a resume."""

OPEN_STEP_STATUSES: frozenset[str] = frozenset(
    {StepStatus.RUNNING, StepStatus.WAITING, StepStatus.SUSPENDED}
)
"""The statuses of steps that have not ended; a run that ends closes them."""

_FROZEN = ConfigDict(frozen=True, extra="forbid")
_TRACEBACK_FRAMES = 20
_TRACEBACK_CHARS = 8000


class ErrorInfo(BaseModel):
    """What went wrong, as recorded on a failed run or step.

    Attributes:
        name: The exception's class name, such as ``"ValueError"``.
        message: ``str()`` of the exception.
        details: Context: the failing ``step_id``, the exception's qualified
            ``type``, a ``traceback`` where there is one, and pydantic's
            ``errors`` for validation failures.
    """

    model_config = _FROZEN

    name: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_exception(
        cls, exc: BaseException, *, with_traceback: bool = True, **context: Any
    ) -> ErrorInfo:
        """Describe an exception: its class name, message, type and traceback.

        Args:
            exc: The exception.
            with_traceback: Whether to record the formatted traceback.
            **context: Extra details, such as ``step_id``.
        """
        # Nothing here may raise: this runs in the handlers that turn a user's
        # exception into a failed run, and an exception whose __str__ (or
        # traceback rendering, or `errors` attribute) fails must still fail
        # its run rather than leave it running.
        exc_type = type(exc)
        details: dict[str, Any] = {"type": f"{exc_type.__module__}.{exc_type.__qualname__}"}
        details.update((key, value) for key, value in context.items() if value is not None)
        try:
            message = str(exc) or exc_type.__name__
        except Exception:
            message = f"<{exc_type.__name__}: str() of the exception failed>"
        try:
            errors = _errors_of(exc)
        except Exception:
            errors = None
        if errors is not None:
            details["errors"] = errors
        if with_traceback and exc.__traceback__ is not None:
            try:
                text = "".join(traceback.format_exception(exc, limit=_TRACEBACK_FRAMES))
            except Exception:
                text = ""
            if text:
                details["traceback"] = text[-_TRACEBACK_CHARS:]
        return cls.model_construct(name=exc_type.__name__, message=message, details=details)


def _errors_of(exc: BaseException) -> list[dict[str, Any]] | None:
    """Return the pydantic error list an exception carries, as plain data."""
    if isinstance(exc, ValidationError):
        errors: Any = exc.errors(include_url=False, include_context=False, include_input=False)
    else:
        errors = getattr(exc, "errors", None)
    if not isinstance(errors, list):
        return None
    return [
        {
            "type": str(error.get("type", "")),
            "loc": [item if isinstance(item, int) else str(item) for item in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
        }
        for error in errors
        if isinstance(error, dict)
    ]


class StepResult(BaseModel):
    """One step's part of a run.

    Attributes:
        status: Where the step stands.
        payload: The input the step received, as plain data (for a
            ``foreach`` step, the list of items).
        output: What the step returned, as plain data (on success; for a
            ``foreach`` step, the list of outputs in input order).
        error: What went wrong (on failure).
        attempts: How many times the body was called in its latest round:
            1, plus one for each retry.
        iterations: For a step in a ``dowhile``/``dountil`` loop, how many
            times the loop has run it; ``None`` elsewhere.
        suspend_payload: What the step passed to ``ctx.suspend()``, once it has.
        resume_payload: The ``resume_data`` the step was resumed with, once it has been.
        started_at: When the step started (UTC).
        ended_at: When the step ended (UTC), once it has.
    """

    model_config = _FROZEN

    status: StepStatus
    payload: Any = None
    output: Any = None
    error: ErrorInfo | None = None
    attempts: int = 1
    iterations: int | None = None
    suspend_payload: Any = None
    resume_payload: Any = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


class WorkflowResult(BaseModel):
    """A run's execution result: its status, input, every step, and its output or error.

    Attributes:
        run_id: The run's id.
        workflow_id: The id of the workflow the run belongs to.
        status: Where the run stands.
        input: The run's input as plain data.
        result: The workflow's output (on success).
        error: What went wrong (on failure).
        steps: Each step that has started, by step path, in the order they
            started. A step of a nested workflow appears as
            ``"child_id.step_id"``, beside ``"child_id"`` for the whole child.
        suspended: For a ``suspended`` run, the suspended step paths and the
            payload each passed to ``ctx.suspend()``; empty otherwise.
        waiting_until: For a ``waiting`` run, when its sleep ends (UTC).
        state: The workflow state; only when the run was started with
            ``OutputOptions(include_state=True)``, else ``None``.
        trace_id: The run's trace id.
        span_id: The id of the run's root span.
        created_at: When the run was started (UTC).
        updated_at: When the run last changed (UTC).
        idempotency_key: The key the run was started with
            (``start_async(idempotency_key=...)``), else ``None``.
    """

    model_config = _FROZEN

    run_id: str
    workflow_id: str
    status: RunStatus
    input: Any = None
    result: Any = None
    error: ErrorInfo | None = None
    steps: dict[str, StepResult] = Field(default_factory=dict)
    suspended: dict[str, Any] = Field(default_factory=dict)
    waiting_until: datetime | None = None
    state: Any = None
    trace_id: str | None = None
    span_id: str | None = None
    created_at: datetime
    updated_at: datetime
    idempotency_key: str | None = None

    @property
    def is_terminal(self) -> bool:
        """Whether the run has ended (``success``, ``failed`` or ``canceled``)."""
        return self.status in TERMINAL_STATUSES


class RunEvent(BaseModel):
    """One thing that happened to a run, as ``run.watch()`` yields it.

    Attributes:
        type: ``"status"`` (the run's status changed: see ``status``),
            ``"step_started"`` or ``"step_finished"`` (see ``path`` and ``step``;
            a finished step may have succeeded, failed, suspended or been
            canceled), or ``"step_retrying"`` (a call failed and will be retried).
        run_id: The run.
        status: The run's status when it happened.
        path: The step's path, for step events.
        step: The step's record at that moment, for step events.
        at: When the registry received it (UTC).
    """

    model_config = _FROZEN

    type: str
    run_id: str
    status: RunStatus
    path: str | None = None
    step: StepResult | None = None
    at: datetime


class RunOutcome(BaseModel):
    """What a workflow's ``on_finish`` and ``on_error`` hooks receive when a run ends.

    Attributes:
        run_id: The run.
        workflow_id: Its workflow.
        status: ``success``, ``failed`` or ``canceled``.
        result: The run's result (on success).
        error: What went wrong (on failure).
        steps: Every step's record, by path.
        state: The workflow state at the end.
        request_context: The request context at the end, as a plain dict.
    """

    model_config = _FROZEN

    run_id: str
    workflow_id: str
    status: RunStatus
    result: Any = None
    error: ErrorInfo | None = None
    steps: dict[str, StepResult] = Field(default_factory=dict)
    state: Any = None
    request_context: dict[str, Any] = Field(default_factory=dict)


class WorkflowRunList(BaseModel):
    """A page of runs, newest first, from ``list_workflow_runs``.

    Attributes:
        runs: The runs on this page.
        total: How many runs match the filters in all.
        unreadable: Ids of matching runs whose stored snapshot could not be
            read (they are left out of ``runs``, and logged).
    """

    model_config = _FROZEN

    runs: list[WorkflowResult]
    total: int
    unreadable: list[str] = Field(default_factory=list)


class StartAsyncResult(BaseModel):
    """What ``start_async`` returns: the id to read the run's result by."""

    model_config = _FROZEN

    run_id: str
