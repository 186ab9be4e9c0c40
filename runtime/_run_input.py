"""The arguments of ``start_async`` and ``resume_async``, validated, and a run's first snapshot.

Every check here runs before anything is recorded, and each failure is an
``InvalidInputError`` naming the argument, so that a rejected call leaves
nothing behind and the same run can be started again with good arguments.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ValidationError

from runtime import _clock, _otel
from runtime._errors import InvalidInputError, SnapshotEncodingError, summarize_errors
from runtime._ids import new_span_id, new_trace_id, unstorable_text
from runtime._model import RunStatus
from runtime._options import OutputOptions, TracingOptions
from runtime._otel import parse_traceparent
from runtime._queue import Queue, check_key, check_priority
from runtime._schedule import Schedule
from runtime._snapshot import (
    Snapshot,
    check_encodable,
    copy_plain,
    find_unencodable,
    first_frozen_record,
    record_of,
)
from runtime._step import (
    Step,
    dump_for_step,
    dump_model,
    plain,
    validate_model,
    validate_stored,
    where_not_dumped,
    why_not_dumped,
)
from runtime._stores.base import MAX_IDEMPOTENCY_KEY, SnapshotRecord

if TYPE_CHECKING:
    from runtime._plan import ExecutionPlan

__all__ = [
    "DRAWN_IDS",
    "bound_schedule",
    "check_idempotency_key",
    "enter_queue",
    "first_record",
    "pending_snapshot",
    "validated_input",
    "validated_resume_data",
]

_DEFAULT_TRACING = TracingOptions()

DRAWN_IDS: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "callboard_drawn_ids", default=None
)
"""A start's trace and span ids, drawn by its caller before a call thread makes the snapshot.

An awaitable start (``astart_async``) draws them on the caller's thread, in the
order its tasks run: under a test harness's seed they repeat from one session
to the next, as the run ids drawn there do, where call threads drew them in
whatever order they ran.
"""


def validated_resume_data(step: Step[Any, Any], value: Any, path: str, run_id: str) -> Any:
    """Resume data as plain data, validated by the step's ``resume_schema``."""
    schema = step.resume_schema
    if schema is not None:
        return _validated(schema, value, "resume_data", run_id)
    data = plain(value)
    if data is not None:
        _encodable(data, "resume_data", "resume_data", run_id)
        data = copy_plain(data)
    return data


def validated_input(schema: type[BaseModel], value: Any, field: str, run_id: str) -> Any:
    """``value`` validated by ``schema``, as plain data; ``InvalidInputError`` naming ``field``."""
    return _validated(schema, value, field, run_id)


_PENDING: Final = RunStatus.PENDING.value  # read once: an enum's .value is a Python property

_FIRST: Final[dict[str, Any]] = {
    "run_id": None,
    "workflow_id": None,
    "seq": 0,
    "status": _PENDING,
    "input": None,
    "result": None,
    "error": None,
    "steps": None,
    "next_step": 0,
    "carry": None,
    "progress": None,
    "wake_at": None,
    "suspended": None,
    "resume": None,
    "scopes": None,
    "state": None,
    "request_context": None,
    "include_state": False,
    "trace_id": None,
    "span_id": None,
    "metadata": None,
    "created_at": None,
    "updated_at": None,
    "fingerprint": None,
}
"""A first snapshot's keys in order, with the values that never vary: what
:func:`pending_snapshot` copies and fills in. Copying a dict is a block copy, and setting
a key it has keeps the order (so the snapshot's bytes are what a literal gives), where a
literal of 24 keys builds the dict key by key: 0.38 µs against 0.85. It holds no mutable
value (every copy shares its values until they are set)."""


_created_lock = threading.Lock()
_last_created = 0.0

_TIE: Final = 1e-6
"""How far a start's time is moved past the one before when the clock has not moved."""
_BACK: Final = 1.0
"""Within how much before the last start's time a start's time is moved past it; a clock
set back by more (or a test's virtual clock started anew) is taken as it reads."""


def _created_now() -> float:
    """The time a run is created at: the clock's, but never equal to the last start's.

    Queues take equal priorities in the order of these times (``rank``); on a clock
    that did not move between starts (a test kit's, when it does not skip time; two
    starts in one microsecond) they tied, and PostgreSQL broke the tie by run id, at
    random. Each start in this process is a microsecond past the one before.
    """
    global _last_created  # noqa: PLW0603 - the one clock of the process
    now = _clock.time()
    with _created_lock:
        last = _last_created
        if last - _BACK < now <= last:
            now = last + _TIE
        _last_created = now
    return now


def pending_snapshot(
    plan: ExecutionPlan,
    run_id: str,
    *,
    input_data: Any,
    request_context: Any,
    initial_state: Any,
    tracing_options: Any,
    output_options: Any,
    resource_id: str | None = None,
    idempotency_key: str | None = None,
    input_stored: bool = False,
    run_timeout: float | None = None,
) -> Snapshot:
    """Validate every start argument and build the run's first snapshot.

    ``input_stored``: ``input_data`` is the JSON form a schedule kept (see :func:`_validated`).
    ``run_timeout``: the start's time limit (checked by the caller), else the workflow's.
    """
    inputs = _validated(plan.input_schema, input_data, "input_data", run_id, stored=input_stored)
    # An argument left out (most starts leave out all but the input) is told apart here,
    # without a call to the function that checks one given.
    if plan.state_schema is not None:
        state = _validated(plan.state_schema, initial_state, "initial_state", run_id)
    elif initial_state is not None:
        state = _plain_mapping(initial_state, "initial_state", run_id)
    else:
        state = None
    context = (
        {}
        if request_context is None
        else _plain_mapping(request_context, "request_context", run_id) or {}
    )
    metadata, trace_id = ({}, None) if tracing_options is None else _traced(tracing_options, run_id)
    include_state = (
        output_options is not None
        and _options(OutputOptions, output_options, None, "output_options", run_id).include_state
    )
    now = _created_now()
    snapshot: Snapshot = _FIRST.copy()  # type: ignore[assignment]  # a cast() is a call
    snapshot["run_id"] = run_id
    snapshot["workflow_id"] = plan.workflow_id
    snapshot["input"] = snapshot["carry"] = inputs
    snapshot["steps"] = {}
    snapshot["suspended"] = {}
    snapshot["scopes"] = {}
    snapshot["state"] = state
    snapshot["request_context"] = context
    snapshot["include_state"] = include_state
    drawn = DRAWN_IDS.get()
    if drawn is None:
        snapshot["trace_id"] = new_trace_id() if trace_id is None else trace_id
        snapshot["span_id"] = new_span_id()
    else:
        snapshot["trace_id"] = drawn[0] if trace_id is None else trace_id
        snapshot["span_id"] = drawn[1]
    snapshot["metadata"] = metadata
    snapshot["created_at"] = snapshot["updated_at"] = now
    snapshot["fingerprint"] = plan.fingerprint
    if plan.version is not None:
        snapshot["version"] = plan.version
    if resource_id is not None:
        snapshot["resource_id"] = resource_id
    if idempotency_key is not None:
        snapshot["idempotency_key"] = idempotency_key
    if run_timeout is None:
        run_timeout = plan.run_timeout
    if run_timeout is not None:
        snapshot["run_timeout"] = run_timeout  # its deadline is set when it begins to execute
    return snapshot


def _traced(tracing_options: Any, run_id: str) -> tuple[dict[str, Any], str | None]:
    """A start's span metadata (copied) and the trace id it joins (``None``: a new one)."""
    tracing = _options(TracingOptions, tracing_options, None, "tracing_options", run_id)
    metadata: dict[str, Any] = {}
    if tracing.metadata:
        _encodable(tracing.metadata, "tracing_options.metadata", "tracing_options", run_id)
        metadata = copy_plain(tracing.metadata)
    if tracing.trace_id:
        return metadata, tracing.trace_id
    if tracing.parent:
        return metadata, parse_traceparent(tracing.parent)[0]
    return metadata, None


def enter_queue(
    plan: ExecutionPlan,
    snapshot: Snapshot,
    *,
    queue: Queue | None,
    priority: int | None,
    concurrency_key: str | None,
) -> Queue | None:
    """Put a start's queue, key and priority in its first snapshot; return the queue.

    The start's ``queue`` wins over the workflow's. Without either, a
    ``priority`` or ``concurrency_key`` is a mistake, said at once.

    Raises:
        TypeError: for a ``queue`` that is not a :class:`Queue`, a priority that is not an int.
        ValueError: for a priority or key without a queue, a priority out of range.
        QueueKeyError: for a key (given, or by the queue's function) that is no non-empty str.
    """
    if queue is not None and not isinstance(queue, Queue):
        raise TypeError(f"queue must be a Queue, got {type(queue).__name__}")
    chosen = queue if queue is not None else plan.queue
    run_id = snapshot["run_id"]
    if chosen is None:
        if priority is not None or concurrency_key is not None:
            raise ValueError(
                f"run {run_id!r}: priority and concurrency_key need a queue (give queue=, "
                "or create the workflow with one)"
            )
        return None
    level = 0 if priority is None else check_priority(priority)
    if concurrency_key is not None:
        key: str | None = check_key(concurrency_key, chosen.name, run_id)
    elif chosen.key is not None:
        model = validate_stored(plan.input_schema, snapshot["input"])
        key = chosen.key_of(model, run_id)
    else:
        key = None
    snapshot["queue"] = {"name": chosen.name, "key": key, "priority": level}
    return chosen


def check_idempotency_key(key: object) -> str:
    """``key`` if it can be an idempotency key: a non-empty ``str`` of at most 512 characters.

    And at most 1,024 bytes of UTF-8, as every name (see :func:`~runtime._ids.unstorable_text`).

    Raises:
        TypeError: if it is not a ``str``.
        ValueError: if it is empty, too long, not valid UTF-8 text, or holds a NUL character.
    """
    if not isinstance(key, str):
        raise TypeError(f"idempotency_key must be a str, got {type(key).__name__}")
    if not key:
        raise ValueError("idempotency_key must not be empty")
    if len(key) > MAX_IDEMPOTENCY_KEY:
        raise ValueError(
            f"idempotency_key has {len(key)} characters; at most {MAX_IDEMPOTENCY_KEY} are allowed"
        )
    problem = unstorable_text(key)
    if problem is not None:
        raise ValueError(f"idempotency_key {problem}")
    return key


def bound_schedule(schedule: Schedule, workflow_id: str, input_schema: type[BaseModel]) -> Schedule:
    """``schedule`` bound to its workflow: with its id, and its input checked and plain.

    The id is the workflow's when the schedule has none; the input is checked
    against the workflow's input schema and kept as plain (JSON) data.

    Raises:
        InvalidInputError: if the input does not fit the schema, or cannot be stored.
    """
    schedule_id = schedule.schedule_id or workflow_id
    try:
        data = _validated(input_schema, schedule.input_data, "input_data", schedule_id)
        json.dumps(data)  # kept as JSON in the store
        # And what each tick starts must go into a snapshot, as a start's input does:
        # an int past 64 bits or a lone surrogate was taken here and every tick failed.
        check_encodable(data, "input_data")
    except SnapshotEncodingError as exc:
        raise InvalidInputError(
            f"{exc} (schedule {schedule_id!r})",
            field="input_data",
            errors=[{"type": "not_encodable", "loc": (exc.path,), "msg": str(exc)}],
        ) from exc
    except InvalidInputError as exc:
        raise InvalidInputError(
            str(exc).replace(f"for run {schedule_id!r}", f"of schedule {schedule_id!r}"),
            field="input_data",
            errors=exc.errors,
        ) from exc
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"input_data of schedule {schedule_id!r} cannot be stored: {exc}",
            field="input_data",
            errors=[{"type": "not_encodable", "loc": (), "msg": str(exc)}],
        ) from exc
    return dataclasses.replace(schedule, schedule_id=schedule_id, input_data=data)


def _validated(
    schema: type[BaseModel], value: Any, field: str, run_id: str, *, stored: bool = False
) -> Any:
    """``value`` validated by ``schema``, as plain data.

    ``stored``: ``value`` is a JSON form callboard kept (a schedule's input), validated
    again in lax mode, as a model of another class is once dumped (see
    :func:`~runtime._step.validate_stored`); what a caller hands over is as strict as
    ``schema`` says.
    """
    try:
        if type(value) is dict:  # the usual case, told apart without a model class's checks
            model = validate_stored(schema, value) if stored else validate_model(schema, value)
        elif isinstance(value, schema):
            model = value
        elif isinstance(value, BaseModel):  # another model: checked as its dump is
            model = validate_stored(
                schema, dump_for_step(value, field, run_id=run_id, step_id=None)
            )
        else:
            model = validate_model(schema, {} if value is None else plain(value))
    except SnapshotEncodingError as exc:  # a model of another class that cannot be dumped
        raise InvalidInputError(
            f"{exc} (run {run_id!r})",
            field=field,
            errors=[{"type": "not_encodable", "loc": (exc.path,), "msg": str(exc)}],
            run_id=run_id,
        ) from exc
    except ValidationError as exc:
        errors = [dict(error) for error in exc.errors(include_url=False)]
        raise InvalidInputError(
            f"{field} for run {run_id!r} does not fit {schema.__name__}: "
            f"{summarize_errors(errors)}",
            field=field,
            errors=errors,
            run_id=run_id,
        ) from exc
    except Exception as exc:
        # A validator of the user's that raised something pydantic passes on (it turns
        # only ValueError and AssertionError into errors): the input was still rejected.
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise InvalidInputError(
            f"{field} for run {run_id!r} was rejected by {schema.__name__}: a validator "
            f"raised {reason}",
            field=field,
            errors=[{"type": "validator_raised", "loc": (), "msg": reason}],
            run_id=run_id,
        ) from exc
    try:
        return dump_model(model)
    except Exception as exc:  # pydantic's serialization errors have no common base
        found = where_not_dumped(model, field, exc)
        if found is None:
            raise InvalidInputError(
                f"{field} for run {run_id!r} holds a value that cannot be stored: "
                f"{why_not_dumped(exc)}",
                field=field,
                errors=[{"type": "not_encodable", "loc": (), "msg": str(exc)}],
                run_id=run_id,
            ) from exc
        where, what = found
        raise InvalidInputError(
            f"{where} for run {run_id!r} holds a value of type {what}, which cannot be "
            f"stored in a snapshot: {why_not_dumped(exc)}",
            field=field,
            errors=[{"type": "not_encodable", "loc": (where,), "msg": str(exc)}],
            run_id=run_id,
        ) from exc


def _plain_mapping(value: Any, field: str, run_id: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"{field} for run {run_id!r} must be a mapping, got {type(value).__name__}",
            field=field,
            errors=[{"type": "dict_type", "loc": (), "msg": "Input should be a mapping"}],
            run_id=run_id,
        )
    data = dict(value)
    for key in data:
        if not isinstance(key, str):
            raise InvalidInputError(
                f"{field} for run {run_id!r} has a key of type {type(key).__name__}: "
                "keys must be str",
                field=field,
                errors=[{"type": "key_type", "loc": (repr(key),), "msg": "keys must be str"}],
                run_id=run_id,
            )
    _encodable(data, field, field, run_id)
    # A deep copy: the run owns its values, and neither the caller's later
    # changes nor the run's own reach the other side.
    copied: dict[str, Any] = copy_plain(data)
    return copied


def _encodable(value: Any, path: str, field: str, run_id: str) -> None:
    try:
        check_encodable(value, path)
    except SnapshotEncodingError as exc:
        raise InvalidInputError(
            f"{exc} (run {run_id!r})",
            field=field,
            errors=[{"type": "not_encodable", "loc": (exc.path,), "msg": str(exc)}],
            run_id=run_id,
        ) from exc


def _options(kind: type[Any], value: Any, default: Any, field: str, run_id: str) -> Any:
    if value is None:
        return default
    if isinstance(value, kind):
        return value
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"{field} for run {run_id!r} must be a {kind.__name__} or a mapping, "
            f"got {type(value).__name__}",
            field=field,
            errors=[{"type": "model_type", "loc": (), "msg": f"Input should be {kind.__name__}"}],
            run_id=run_id,
        )
    try:
        return kind.model_validate(value)
    except ValidationError as exc:
        errors = [dict(error) for error in exc.errors(include_url=False)]
        raise InvalidInputError(
            f"{field} for run {run_id!r} are invalid: {summarize_errors(errors)}",
            field=field,
            errors=errors,
            run_id=run_id,
        ) from exc


_ARGUMENTS: Final = (
    ("input", "input_data"),
    ("state", "initial_state"),
    ("request_context", "request_context"),
    ("metadata", "tracing_options"),
)
"""Where each start argument sits in the first snapshot."""


def first_record(snapshot: Snapshot, *, in_memory: bool = False) -> SnapshotRecord:
    """The first snapshot's record; a value that cannot be stored names its argument.

    Encoding is the last check, and costs nothing extra when it passes: only a
    failure looks for the argument at fault. For a store in memory
    (``in_memory``) the record is a frozen copy, encoded only if somebody
    reads its bytes, once a quick pass found the input and state storable
    (the other arguments were checked when given).

    Raises:
        InvalidInputError: naming the argument and the path inside it of a
            value msgpack cannot hold (a lone surrogate, an int of 2**64 or
            more, nesting deeper than the snapshot allows).
    """
    if in_memory:
        frozen = first_frozen_record(snapshot)
        if frozen is not None:
            return frozen
    try:
        record = record_of(snapshot)
    except SnapshotEncodingError as exc:
        run_id = snapshot["run_id"]
        for key, field in _ARGUMENTS:
            found = find_unencodable(snapshot[key], field)  # type: ignore[literal-required]
            if found is not None:
                raise _not_storable(found, field, run_id) from exc
        raise
    if "idempotency_key" in snapshot:
        return record._replace(idempotency_key=snapshot["idempotency_key"])
    return record


def _not_storable(found: tuple[str, str], field: str, run_id: str) -> InvalidInputError:
    where, what = found
    return InvalidInputError(
        f"{where} for run {run_id!r} holds a value of type {what}, which cannot be stored "
        "in a snapshot",
        field=field,
        errors=[{"type": "not_encodable", "loc": (where,), "msg": f"cannot store {what}"}],
        run_id=run_id,
    )


def start_span(tracer: Any, snapshot: Snapshot, tracing_options: Any) -> Any:
    """Open the ``workflow_start`` span of a run being started, on the caller's thread.

    ``tracer`` is callboard's OpenTelemetry tracer (``_otel.tracer()``: the
    caller asks, and starts no span without one). The span is a child of
    ``TracingOptions.parent``, else (without an explicit ``trace_id``) of the
    caller's current span; its ids become the run's ``trace_id`` (unless one
    was given) and ``span_id``, so that every later ``workflow_run`` span, in
    this process or another, hangs under it.
    The caller ends it (:func:`runtime._otel.end_span`) once the start is
    recorded, or refused.
    """
    tracing = _options(
        TracingOptions, tracing_options, _DEFAULT_TRACING, "tracing_options", snapshot["run_id"]
    )
    context = None  # the caller's current context
    if tracing.parent is not None:
        trace_id, span_id, sampled = parse_traceparent(tracing.parent)
        context = _otel.remote_parent(trace_id, span_id, sampled=sampled)
    elif tracing.trace_id is not None:
        # Join a trace known only by its id: a remote parent nobody records.
        context = _otel.remote_parent(snapshot["trace_id"], new_span_id())
    span = tracer.start_span(
        "workflow_start",
        context=context,
        attributes=_otel.attributes(
            {
                "run_id": snapshot["run_id"],
                "workflow_id": snapshot["workflow_id"],
                "metadata": snapshot["metadata"],
            }
        ),
    )
    ids = span.get_span_context()
    if ids.is_valid:
        if tracing.trace_id is None:
            snapshot["trace_id"] = f"{ids.trace_id:032x}"
        snapshot["span_id"] = f"{ids.span_id:016x}"
        if not ids.trace_flags.sampled:
            snapshot["unsampled"] = True
    return span
