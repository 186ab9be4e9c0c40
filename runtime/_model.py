"""Public data: run and step statuses, results, and errors as they are recorded.

Everything here is a frozen pydantic model holding plain data (dicts, lists,
scalars) exactly as the snapshot stores it, so a result reads the same in the
process that ran the workflow and in one that only reads it.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Generic, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typing_extensions import TypeVar

from runtime._errors import WorkflowError

__all__ = [
    "ATTRIBUTES_BYTES",
    "ATTRIBUTE_BYTES",
    "MAX_ATTRIBUTES",
    "MAX_CAUSES",
    "OPEN_STEP_STATUSES",
    "PARKED_STATUSES",
    "SETTLED_STATUSES",
    "TERMINAL_STATUSES",
    "UNFINISHED_STATUSES",
    "ErrorInfo",
    "RunEvent",
    "RunFinishEvent",
    "RunOrigin",
    "RunOutcome",
    "RunStartEvent",
    "RunStatus",
    "RunStreamEvent",
    "StartAsyncResult",
    "StepFinishEvent",
    "StepOutputEvent",
    "StepResult",
    "StepStartEvent",
    "StepStatus",
    "StepSuspendedEvent",
    "StepWaitingEvent",
    "StreamEvent",
    "WorkflowResult",
    "WorkflowRunList",
    "class_attribute",
    "validate_stored",
    "with_output_schema",
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
_MODEL_VALIDATE: Final = BaseModel.__dict__["model_validate"].__func__
"""pydantic's own ``model_validate``: a schema that keeps it may be validated straight."""

class_attribute: Final = type.__getattribute__
"""``getattr(cls, name)`` for a model class, at about half the cost, for the reads of every
validation and dump: pydantic's metaclass has a ``__getattr__`` (for private attributes),
so each read through it calls ``type.__getattribute__`` as a Python-level method first.
Only a name the class lacks is told apart: ``AttributeError`` without that hook."""

_M = TypeVar("_M", bound=BaseModel)
_TRACEBACK_FRAMES = 20
_TRACEBACK_CHARS = 8000


ATTRIBUTE_BYTES: Final = 4096
"""The most bytes (as msgpack would take, roughly) one exception attribute may take in
:attr:`ErrorInfo.attributes`; a larger one is dropped with a note."""

ATTRIBUTES_BYTES: Final = 16384
"""The most bytes all of an exception's kept attributes may take together."""

MAX_ATTRIBUTES: Final = 32
"""The most attributes kept from one exception."""

MAX_CAUSES: Final = 8
"""How many links of an exception's ``__cause__``/``__context__`` chain are kept."""

_ATTRIBUTE_DEPTH: Final = 16


class ErrorInfo(BaseModel):
    """What went wrong, as recorded on a failed run or step.

    Attributes:
        name: The exception's class name, such as ``"ValueError"``.
        message: ``str()`` of the exception.
        details: Context: the failing ``step_id``, the exception's qualified
            ``type``, a ``traceback`` where there is one, pydantic's
            ``errors`` for validation failures, and ``dropped_attributes``
            (attribute name to the reason) for attributes left out of
            ``attributes``.
        attributes: The exception's public, plain-data attributes: each
            entry of ``vars(exc)`` whose name does not start with ``_`` and
            whose value is ``None``, a ``bool``, an ``int`` (64-bit), a
            ``float``, a ``str``, ``bytes``, or a list, tuple or mapping (with
            ``str`` keys) of those, nested at most 16 deep, taking at most
            4 KiB; at most 32 of them and 16 KiB in all. So an HTTP error's
            ``status_code``, ``retryable`` flag and headers dict survive the
            snapshot. Tuples become lists and mappings dicts (as a stored
            snapshot reads back); ``str``/``int`` subclasses such as enums
            become plain ``str``/``int``. Anything else is dropped and named
            in ``details["dropped_attributes"]``: it never fails the snapshot.
        cause: The exception's ``__cause__`` (``raise ... from``), or else its
            ``__context__`` unless suppressed, described the same way
            (without a traceback: the run's ``details["traceback"]`` shows the
            whole chain); up to 8 links.
    """

    model_config = _FROZEN

    name: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    attributes: dict[str, Any] = Field(default_factory=dict)
    cause: ErrorInfo | None = None

    @classmethod
    def from_exception(
        cls, exc: BaseException, *, with_traceback: bool = True, **context: Any
    ) -> ErrorInfo:
        """Describe an exception: its class name, message, type, attributes, causes, traceback.

        Args:
            exc: The exception.
            with_traceback: Whether to record the formatted traceback.
            **context: Extra details, such as ``step_id``.
        """
        return _describe(exc, with_traceback, context, {id(exc)}, MAX_CAUSES)


def _describe(
    exc: BaseException,
    with_traceback: bool,
    context: dict[str, Any],
    seen: set[int],
    causes_left: int,
) -> ErrorInfo:
    # Nothing here may raise: this runs in the handlers that turn a user's
    # exception into a failed run, and an exception whose __str__ (or
    # traceback rendering, or `errors` attribute, or attributes) fails must
    # still fail its run rather than leave it running.
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
    dropped: dict[str, str] = {}
    try:
        attributes = _attributes_of(exc, dropped)
    except Exception as failure:
        attributes = {}
        dropped["*"] = f"reading the attributes failed: {type(failure).__name__}"
    if dropped:
        details["dropped_attributes"] = dropped
    if with_traceback and exc.__traceback__ is not None:
        try:
            text = "".join(traceback.format_exception(exc, limit=_TRACEBACK_FRAMES))
        except Exception:
            text = ""
        if text:
            details["traceback"] = text[-_TRACEBACK_CHARS:]
    cause = None
    link = _cause_of(exc)
    if link is not None and causes_left > 0 and id(link) not in seen:
        seen.add(id(link))
        cause = _describe(link, False, {}, seen, causes_left - 1)
    return ErrorInfo.model_construct(
        name=exc_type.__name__,
        message=message,
        details=details,
        attributes=attributes,
        cause=cause,
    )


def _cause_of(exc: BaseException) -> BaseException | None:
    """The exception ``exc`` was raised from, or while handling (unless that is suppressed)."""
    cause = exc.__cause__
    if cause is None and not exc.__suppress_context__:
        cause = exc.__context__
    return cause


def _attributes_of(exc: BaseException, dropped: dict[str, str]) -> dict[str, Any]:
    """The public attributes of ``exc`` that are plain data, within the bounds; notes the rest."""
    try:
        names = vars(exc)
    except TypeError:  # __slots__ only: nothing to read
        return {}
    kept: dict[str, Any] = {}
    total = 0
    for name, value in list(names.items()):
        if not isinstance(name, str) or name.startswith("_"):
            continue
        if len(kept) >= MAX_ATTRIBUTES:
            dropped[name] = f"more than {MAX_ATTRIBUTES} attributes"
            continue
        budget = min(ATTRIBUTE_BYTES, ATTRIBUTES_BYTES - total)
        plain, size, problem = _plain_copy(value, budget)
        if problem is not None:
            dropped[name] = problem
            continue
        kept[name] = plain
        total += size
    return kept


def _plain_copy(value: Any, budget: int) -> tuple[Any, int, str | None]:
    """A copy of ``value`` as plain data, its rough encoded size, or why it cannot be kept.

    Recursion is bounded by ``_ATTRIBUTE_DEPTH``; the size counts as msgpack
    would, give or take a few bytes a value.
    """
    copier = _PlainCopier(budget)
    try:
        return copier.copy(value, 0), copier.used, None
    except _Refused as refused:
        return None, 0, f"{refused}"
    except Exception as failure:  # a mapping whose items() fails, and the like
        return None, 0, f"reading it failed: {type(failure).__name__}"


class _PlainCopier:
    """The recursion of :func:`_plain_copy`, with the bytes used so far.

    A method, not a nested function that calls itself: such a function is a
    reference cycle (it holds its own cell) that only the garbage collector frees.
    """

    __slots__ = ("budget", "used")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0

    def copy(self, item: Any, depth: int) -> Any:
        self.used += 1
        if self.used > self.budget:
            raise _Refused(f"larger than {self.budget} bytes")
        if item is None or isinstance(item, bool):
            return item
        if isinstance(item, int):
            if not -(2**63) <= item < 2**64:
                raise _Refused("an int out of 64-bit range")
            self.used += 8
            return int(item)
        if isinstance(item, float):
            self.used += 8
            return float(item)
        if isinstance(item, str):
            text = str.__str__(item)
            try:
                self.used += len(text.encode("utf-8"))
            except UnicodeEncodeError:
                raise _Refused("a str that is not valid UTF-8") from None
            if self.used > self.budget:
                raise _Refused(f"larger than {self.budget} bytes")
            return text
        if isinstance(item, bytes):
            self.used += len(item)
            if self.used > self.budget:
                raise _Refused(f"larger than {self.budget} bytes")
            return bytes(item)
        if depth >= _ATTRIBUTE_DEPTH:
            raise _Refused(f"nested deeper than {_ATTRIBUTE_DEPTH} levels")
        if isinstance(item, list | tuple):
            return [self.copy(element, depth + 1) for element in item]
        if isinstance(item, Mapping):
            result: dict[str, Any] = {}
            for key, element in item.items():
                if not isinstance(key, str):
                    raise _Refused(f"a mapping with a {type(key).__name__} key")
                result[self.copy(key, depth + 1)] = self.copy(element, depth + 1)
            return result
        raise _Refused(f"a {type(item).__qualname__}, which is not plain data")


class _Refused(Exception):
    """Why an attribute value cannot be kept in an :class:`ErrorInfo`."""


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
            1, plus one for each retry. While the step waits out the delay
            before a retry, that retry is counted already (and a
            ``step_retrying`` event told it). For a ``foreach`` step: 1, plus
            one for each retry of any of its items.
        iterations: For a step in a ``dowhile``/``dountil`` loop, how many
            times the loop has run it; ``None`` elsewhere.
        suspend_payload: What the step passed to ``ctx.suspend()``, once it has
            (for a ``foreach`` step whose items suspended: each suspended
            item's payload by its index, as a string).
        resume_payload: The ``resume_data`` the step was resumed with, once it has been.
        started_at: When the step started (UTC). A resumed step keeps when
            it first started, before it suspended.
        ended_at: When the step ended (UTC), once it has.
        resumed_at: When the step was last resumed (UTC), once it has been.
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
    resumed_at: datetime | None = None


class RunOrigin(BaseModel):
    """The run a run made by ``workflow.time_travel`` came from.

    Attributes:
        run_id: The original run.
        step: The path of the step the new run started from; the steps before
            it kept the original run's outputs.
    """

    model_config = _FROZEN

    run_id: str
    step: str


Out = TypeVar("Out", bound=BaseModel, default=Any)


class WorkflowResult(BaseModel, Generic[Out]):
    """A run's execution result: its status, input, every step, and its output or error.

    Generic in the workflow's output model for type checkers: ``run.start()``
    of a ``Workflow[In, Out]`` returns a ``WorkflowResult[Out]``, whose
    :attr:`output` is an ``Out``. ``result`` stays plain data.

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
            payload each passed to ``ctx.suspend()``; a suspended item of a
            ``foreach`` step is ``"path[index]"``. Empty otherwise.
        waiting_until: For a ``waiting`` run, when its sleep ends (UTC).
        state: The workflow state; only when the run was started with
            ``OutputOptions(include_state=True)``, else ``None``.
        trace_id: The run's trace id.
        span_id: The id of the run's root span.
        created_at: When the run was started (UTC).
        updated_at: When the run last changed (UTC).
        queue: The queue the run went through, if any.
        queue_key: Its partition in that queue, if any.
        priority: Its priority in that queue (``None``: no queue).
        resource_id: The user or tenant the run was started for
            (``create_run(resource_id=...)``), or ``None``.
        time_traveled_from: For a run made by ``workflow.time_travel``, the run
            and step it came from; ``None`` otherwise.
        restarts: How many times ``run.restart()`` ran the run again in place.
        idempotency_key: The key the run was started with
            (``start_async(idempotency_key=...)``), else ``None``.
        version: The workflow's version label the run was started on
            (``create_workflow(version=...)``), else ``None``.
        fingerprint: The hash of the workflow's plan the run was started on;
            the run goes on only on a definition with the same one (``None``
            for runs recorded before versions existed).
    """

    model_config = _FROZEN

    # The workflow's output model, when the result was read through its workflow or
    # run (``output``), is kept in the instance's ``__pydantic_private__`` (see
    # with_output_schema): not a field, so it is neither serialised nor compared. It is
    # no declared private attribute either: pydantic would then run Python code to set
    # its default on every result it validates (about 2 µs of a result's 8 to 16).

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
    queue: str | None = None
    queue_key: str | None = None
    priority: int | None = None
    resource_id: str | None = None
    time_traveled_from: RunOrigin | None = None
    restarts: int = 0
    idempotency_key: str | None = None
    version: str | None = None
    fingerprint: str | None = None

    @property
    def is_terminal(self) -> bool:
        """Whether the run has ended (``success``, ``failed`` or ``canceled``)."""
        return self.status in TERMINAL_STATUSES

    @property
    def output(self) -> Out | None:
        """The run's result as the workflow's output model, typed ``Out``.

        ``None`` unless the run succeeded (and the result was included).

        Raises:
            WorkflowError: for a result read without its workflow (from
                ``runtime.get_run`` or ``runtime.list_runs``), which does not know
                the output model: read ``result`` there, or go through the workflow.
        """
        if self.status != RunStatus.SUCCESS or self.result is None:
            return None
        private = self.__pydantic_private__
        schema = None if private is None else private.get(_OUTPUT_SCHEMA)
        if schema is None:
            raise WorkflowError(
                f"run {self.run_id!r} was read without its workflow, so its output model is "
                "not known: read result.result, or read the run through its workflow "
                "(get_workflow_run_by_id, list_workflow_runs)",
                run_id=self.run_id,
            )
        return cast(Out, validate_stored(schema, self.result))  # its JSON-mode dump

    def __eq__(self, other: object) -> bool:
        # pydantic's own __eq__ compares private attributes too; a result is equal to
        # the same result read without its workflow.
        if not isinstance(other, WorkflowResult):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # holds dicts: never hashable


def validate_stored(schema: type[_M], data: Any) -> _M:
    """Data a snapshot holds (a model's JSON-mode dump) as a ``schema`` model, in lax mode.

    Whatever the model's (or its fields') ``strict``: strict validation refuses in
    Python mode the JSON forms the model's own dump wrote (an ISO string for a
    ``datetime``, a string for a ``UUID`` or a ``Decimal``, a list for a ``set``), which
    its validation of JSON takes, so every run of a strict model failed at its first
    step. Strictness is for what the user hands over (a start's input, a step's
    returned dict), which is validated as given.

    A schema that overrides ``model_validate`` gets its own, called as pydantic's
    callers call it, with the data alone: an override need not take ``strict``.
    """
    if getattr(class_attribute(schema, "model_validate"), "__func__", None) is not _MODEL_VALIDATE:
        return schema.model_validate(data)
    if class_attribute(schema, "__pydantic_complete__"):
        model: _M = class_attribute(schema, "__pydantic_validator__").validate_python(
            data, strict=False
        )
        return model
    return schema.model_validate(data, strict=False)


_set_attribute: Final = object.__setattr__

_OUTPUT_SCHEMA: Final = "_output_schema"
"""Where a result keeps its output model in ``__pydantic_private__`` (see ``output``)."""


def with_output_schema(result: WorkflowResult[Any], schema: type[BaseModel]) -> WorkflowResult[Any]:
    """``result``, now knowing its workflow's output model (for :attr:`WorkflowResult.output`).

    Kept in pydantic's own slot for values that are no fields (``__pydantic_private__``,
    which ``copy``, ``model_copy`` and pickling carry over), set as a frozen model's
    values are set: the result stays frozen to its users.
    """
    _set_attribute(result, "__pydantic_private__", {_OUTPUT_SCHEMA: schema})
    return result


class RunEvent(BaseModel):
    """One thing that happened to a run, as ``run.watch()`` yields it.

    Attributes:
        type: ``"status"`` (the run's status changed: see ``status``),
            ``"step_started"`` or ``"step_finished"`` (see ``path`` and ``step``;
            a finished step may have succeeded, failed, suspended or been
            canceled), ``"step_retrying"`` (a call failed and will be retried),
            ``"step_waiting"`` (a sleep whose length a function computed, told
            ``step_started`` while the function ran, began to wait; a sleep of a
            fixed length is told ``step_started`` with its record ``waiting``),
            or ``"step_output"`` (a step wrote ``data`` with ``ctx.writer.write``).
        run_id: The run.
        status: The run's status when it happened.
        path: The step's path, for step events.
        step: The step's record at that moment, for step events but ``step_output``.
        at: When it happened (UTC), as the run's record says (a step's start or
            end, the run's last change), so that a replayed event keeps its time;
            for ``step_output``, when the step wrote it.
        seq: The event's number within its run, from 1, one more for each
            event: what a reconnecting client resumes from
            (``run.stream(from_seq=...)``, an SSE ``Last-Event-ID``). Numbers
            are given by the runtime that publishes the events (see
            ``EVENT_LOG_SIZE``).
        data: What the step wrote, for ``step_output``.
        item: For ``step_output`` from a ``foreach`` item, the item's index.
        result: The run's result, for the ``status`` event of a run that succeeded.
        error: What went wrong, for the ``status`` event of a run that failed.
    """

    model_config = _FROZEN

    type: str
    run_id: str
    status: RunStatus
    path: str | None = None
    step: StepResult | None = None
    at: datetime
    seq: int = 0
    data: Any = None
    item: int | None = None
    result: Any = None
    error: ErrorInfo | None = None


class StreamEvent(BaseModel):
    """What every event of ``run.stream()`` carries.

    Attributes:
        type: The kind of event (each subclass has its own).
        run_id: The run.
        seq: The event's number within its run (see :attr:`RunEvent.seq`);
            ``run.stream(from_seq=seq)`` goes on after it.
        at: When it happened (UTC).
    """

    model_config = _FROZEN

    type: str
    run_id: str
    seq: int
    at: datetime


class RunStartEvent(StreamEvent):
    """The run started, or went on after a resume (``status`` ``pending`` or ``running``)."""

    type: Literal["run_start"] = "run_start"
    status: RunStatus


class StepStartEvent(StreamEvent):
    """A step started (``attempt`` 1), or started again after a failure (a retry).

    Attributes:
        path: The step's path.
        payload: Its input, as plain data.
        attempt: Which call of the body this is, from 1.
    """

    type: Literal["step_start"] = "step_start"
    path: str
    payload: Any = None
    attempt: int = 1


class StepOutputEvent(StreamEvent):
    """A step wrote ``data`` with ``ctx.writer.write(data)`` while it ran.

    Attributes:
        path: The step's path.
        data: What it wrote, as plain data (validated by its ``writer_schema``).
        item: For an item of a ``foreach``, the item's index.
    """

    type: Literal["step_output"] = "step_output"
    path: str
    data: Any = None
    item: int | None = None


class StepWaitingEvent(StreamEvent):
    """A ``sleep`` or ``sleep_until`` began: the run waits (``waiting``)."""

    type: Literal["step_waiting"] = "step_waiting"
    path: str


class StepSuspendedEvent(StreamEvent):
    """A step suspended with ``payload`` (what it passed to ``ctx.suspend()``)."""

    type: Literal["step_suspended"] = "step_suspended"
    path: str
    payload: Any = None


class StepFinishEvent(StreamEvent):
    """A step ended: ``success`` (with ``output``), ``failed`` (with ``error``) or ``canceled``."""

    type: Literal["step_finish"] = "step_finish"
    path: str
    status: StepStatus
    output: Any = None
    error: ErrorInfo | None = None


class RunFinishEvent(StreamEvent):
    """The run settled: the last event of a stream.

    ``status`` is ``success`` (with ``result``), ``failed`` (with ``error``),
    ``canceled``, or ``suspended``: the run waits for a resume, and
    ``run.resume_stream(...)`` streams what follows.
    """

    type: Literal["run_finish"] = "run_finish"
    status: RunStatus
    result: Any = None
    error: ErrorInfo | None = None


RunStreamEvent = Annotated[
    RunStartEvent
    | StepStartEvent
    | StepOutputEvent
    | StepWaitingEvent
    | StepSuspendedEvent
    | StepFinishEvent
    | RunFinishEvent,
    Field(discriminator="type"),
]
"""Any event of ``run.stream()``; ``type`` tells which."""


class RunOutcome(BaseModel):
    """What a workflow's hooks receive: ``on_start`` as a run starts, the others as it ends.

    Attributes:
        run_id: The run.
        workflow_id: Its workflow.
        status: ``success``, ``failed`` or ``canceled`` (``running`` for ``on_start``).
        input: The run's input, as plain data.
        resource_id: The user or tenant the run was started for, or ``None``.
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
    input: Any = None
    resource_id: str | None = None
    result: Any = None
    error: ErrorInfo | None = None
    steps: dict[str, StepResult] = Field(default_factory=dict)
    state: Any = None
    request_context: dict[str, Any] = Field(default_factory=dict)


class WorkflowRunList(BaseModel, Generic[Out]):
    """A page of runs, newest first, from ``list_workflow_runs``.

    Attributes:
        runs: The runs on this page.
        total: How many runs match the filters in all.
        unreadable: Ids of matching runs whose stored snapshot could not be
            read (they are left out of ``runs``, and logged).
    """

    model_config = _FROZEN

    runs: list[WorkflowResult[Out]]
    total: int
    unreadable: list[str] = Field(default_factory=list)


class RuntimeHealth(BaseModel):
    """What :meth:`Runtime.health` found: whether the runtime works, and can record runs now.

    Made from what the runtime knows in memory, without a call to its store: a
    health check answers at once, whatever state the store is in.

    Attributes:
        state: ``"new"`` (not started), ``"running"``, ``"stopping"`` or ``"stopped"``.
        live: Whether it runs: started, and neither stopping nor stopped (by
            :meth:`Runtime.stop`, or by itself after an internal failure). For a
            liveness probe: a runtime that is not live does nothing more until
            the process starts it again.
        ready: Whether it is live and can record runs now: its store has not
            failed every write for ``patience`` seconds (unreachable, locked,
            read-only, full) and, on a shared store, its lease was renewed
            within the lease. For a readiness probe: it may come back by itself.
        problems: What is wrong, a sentence each; empty when ``ready``.
        writes_failing_for: Seconds every write to the store has failed
            (``None`` while writes go through).
        lease_renewed_ago: Seconds since its lease on a shared store was last
            renewed (``None``: a store in memory, or not running).
    """

    model_config = _FROZEN

    state: Literal["new", "running", "stopping", "stopped"]
    live: bool
    ready: bool
    problems: tuple[str, ...] = ()
    writes_failing_for: float | None = None
    lease_renewed_ago: float | None = None


class StartAsyncResult(BaseModel):
    """What ``start_async`` returns: the id to read the run's result by."""

    model_config = _FROZEN

    run_id: str
