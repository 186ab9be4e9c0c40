"""Snapshot encoding: the one place that speaks msgpack.

A snapshot is a plain dict describing one run at one moment (see
:class:`Snapshot`). It is stored as msgpack bytes behind a format version, so a
reader can refuse bytes it does not understand instead of misreading them.
Nothing here ever unpickles: msgpack carries only plain data.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, NotRequired, TypedDict

import msgpack
from pydantic import ValidationError

from runtime._errors import SnapshotEncodingError, SnapshotFormatError
from runtime._model import (
    OPEN_STEP_STATUSES,
    RunEvent,
    RunStatus,
    StepResult,
    StepStatus,
    WorkflowResult,
)
from runtime._stores.base import SnapshotRecord

__all__ = [
    "FORMAT_VERSION",
    "MAX_NESTING",
    "Snapshot",
    "StepSnapshot",
    "canceled_record",
    "check_encodable",
    "close_open_steps",
    "copy_plain",
    "decode",
    "encode",
    "failed_record",
    "find_unencodable",
    "mark_canceled",
    "mark_failed",
    "next_record",
    "read_result",
    "record_of",
    "run_events",
    "stand_in_record",
    "to_result",
    "unpack",
]

FORMAT_VERSION: Final = 3
"""The snapshot format this code writes. It also reads versions 1 and 2.

Version 3 is version 2 followed by a CRC32 of everything before it, so that a
flipped bit is caught instead of read back as a different, valid run.
"""

_CHECKSUM_BYTES: Final = 4
_PAIR: Final = 0x92  # msgpack's fixarray of two: (version, snapshot)


class StepSnapshot(TypedDict, total=False):
    """One step's record inside a snapshot (the last four keys are absent in version 1)."""

    status: str
    payload: Any
    output: Any
    error: dict[str, Any] | None
    started_at: float | None
    ended_at: float | None
    attempts: int
    iterations: int | None
    suspend_payload: Any
    resume_payload: Any


class Snapshot(TypedDict):
    """A run at one moment, as plain data. Times are epoch seconds (UTC).

    ``next_step`` is the index of the plan node the run is at, ``carry`` that
    node's input (the previous node's output), and ``progress`` what a
    compound node (a loop, a foreach, a branch) has done so far. ``wake_at``
    is when a waiting run's sleep ends, ``suspended`` maps suspended step
    paths to their payloads, ``resume`` holds the resume data not yet handed
    to its step, and ``scopes`` the inputs of the nested workflows entered.
    ``resumed`` is there (and true) once a resume of the run's last suspension
    is recorded, until the run suspends again: a later resume of that
    suspension lost to it. Snapshots before that key lack it, as do runs
    never resumed.
    """

    run_id: str
    workflow_id: str
    seq: int
    status: str
    input: Any
    result: Any
    error: dict[str, Any] | None
    steps: dict[str, StepSnapshot]
    next_step: int
    carry: Any
    progress: dict[str, Any] | None
    wake_at: float | None
    suspended: dict[str, Any]
    resume: dict[str, Any] | None
    scopes: dict[str, Any]
    state: Any
    request_context: dict[str, Any]
    include_state: bool
    trace_id: str
    span_id: str
    metadata: dict[str, Any]
    created_at: float
    updated_at: float
    resumed: NotRequired[bool]


def _packb(value: Any) -> bytes:
    # A fresh packer per call: a shared msgpack.Packer is not safe across threads.
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def encode(snapshot: Mapping[str, Any]) -> bytes:
    """Encode a snapshot as versioned msgpack bytes with a checksum.

    Raises:
        SnapshotEncodingError: if some value cannot be encoded; the error names
            where it sits and its type.
    """
    try:
        body = _packb((FORMAT_VERSION, snapshot))
    except (TypeError, ValueError, OverflowError) as exc:
        raise _encoding_error(snapshot, "snapshot") from exc
    return body + zlib.crc32(body).to_bytes(_CHECKSUM_BYTES, "big")


def unpack(data: bytes) -> dict[str, Any]:
    """The mapping in bytes written by :func:`encode` (any version), checksum checked.

    Raises:
        SnapshotFormatError: if the checksum does not match, the bytes are not
            msgpack, do not hold a mapping, or come from an unknown version.
    """
    if len(data) > _CHECKSUM_BYTES + 1 and data[0] == _PAIR and data[1] == FORMAT_VERSION:
        body, checksum = data[:-_CHECKSUM_BYTES], data[-_CHECKSUM_BYTES:]
        if zlib.crc32(body) != int.from_bytes(checksum, "big"):
            raise SnapshotFormatError(
                "snapshot bytes are damaged: their checksum does not match (a flipped bit, "
                "a torn write, or bytes written by something else)"
            )
        data = body
    try:
        version, snapshot = msgpack.unpackb(data, raw=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise SnapshotFormatError(f"snapshot bytes cannot be decoded: {exc}") from exc
    if version not in (1, 2, FORMAT_VERSION) or isinstance(version, bool):
        raise SnapshotFormatError(
            f"snapshot format version {version!r} is not supported (this code reads "
            f"versions 1 to {FORMAT_VERSION})"
        )
    if not isinstance(snapshot, dict):
        raise SnapshotFormatError("snapshot bytes do not hold a mapping")
    if version == 1:
        _upgrade_v1(snapshot)
    return snapshot


def decode(data: bytes, run_id: str | None = None) -> Snapshot:
    """Decode and validate a run's snapshot: the one way stored bytes become a snapshot.

    Args:
        data: Bytes written by :func:`encode`.
        run_id: The id of the row the bytes were read from: the snapshot must
            name the same run.

    Raises:
        SnapshotFormatError: if the bytes are damaged or not a snapshot, a key
            is missing or of the wrong type, or the snapshot names another run.
    """
    snapshot = unpack(data)
    problem = _problem(snapshot)
    if problem is None and run_id is not None and snapshot["run_id"] != run_id:
        problem = f"it names run {snapshot['run_id']!r}, not the run stored under that id"
    if problem is not None:
        raise SnapshotFormatError(f"snapshot is not valid: {problem}", run_id=run_id)
    result: Snapshot = snapshot  # type: ignore[assignment]
    return result


_NONE = type(None)
_SNAPSHOT_TYPES: Final[tuple[tuple[str, frozenset[type]], ...]] = tuple(
    (key, frozenset(types))
    for key, types in {
        "run_id": (str,),
        "workflow_id": (str,),
        "seq": (int,),
        "status": (str,),
        "error": (dict, _NONE),
        "steps": (dict,),
        "next_step": (int,),
        "progress": (dict, _NONE),
        "wake_at": (int, float, _NONE),
        "suspended": (dict,),
        "resume": (dict, _NONE),
        "scopes": (dict,),
        "request_context": (dict,),
        "include_state": (bool,),
        "trace_id": (str,),
        "span_id": (str,),
        "metadata": (dict,),
        "created_at": (int, float),
        "updated_at": (int, float),
    }.items()
)
"""The exact types (as msgpack reads them) of every key a snapshot must have, beyond
the four that hold user data. Exact, so that a ``bool`` is never taken for an ``int``."""

_ANY_VALUE: Final = ("input", "result", "carry", "state")
_RUN_STATUSES: Final = frozenset(status.value for status in RunStatus)
_STEP_STATUSES: Final = frozenset(status.value for status in StepStatus)
_ABSENT: Final = object()


def _problem(snapshot: dict[str, Any]) -> str | None:
    """What makes a decoded mapping unfit to be a run's snapshot, or ``None``.

    Runs on every read of a stored run (a query, a watch, recovery): kept to
    one dict lookup and one set lookup per key.
    """
    get = snapshot.get
    for key, types in _SNAPSHOT_TYPES:
        value = get(key, _ABSENT)
        if type(value) not in types:
            if value is _ABSENT:
                return f"the key {key!r} is missing"
            return f"{key!r} is a {type(value).__name__}"
    for key in _ANY_VALUE:
        if key not in snapshot:
            return f"the key {key!r} is missing"
    if not snapshot["run_id"]:
        return "'run_id' is empty"
    if snapshot["status"] not in _RUN_STATUSES:
        return f"'status' is {snapshot['status']!r}, not a run status"
    for path, step in snapshot["steps"].items():
        if type(step) is not dict or step.get("status") not in _STEP_STATUSES:
            return f"step {path!r} is not a step record"
    return None


def _upgrade_v1(snapshot: dict[str, Any]) -> None:
    """Fill in what version 2 added: a version-1 run is a chain of steps."""
    steps = snapshot.get("steps")
    index = snapshot.get("next_step", 0)
    carry = snapshot.get("input")
    if isinstance(steps, dict) and isinstance(index, int) and 0 < index <= len(steps):
        previous = list(steps.values())[index - 1]
        carry = previous.get("output") if isinstance(previous, dict) else None
    snapshot.setdefault("carry", carry)
    snapshot.setdefault("progress", None)
    snapshot.setdefault("wake_at", None)
    snapshot.setdefault("suspended", {})
    snapshot.setdefault("resume", None)
    snapshot.setdefault("scopes", {})


def copy_plain(value: Any) -> Any:
    """A deep copy of plain data (checked with :func:`check_encodable` first).

    Tuples come back as lists, as they would from a snapshot.
    """
    return msgpack.unpackb(_packb(value), raw=False)


def record_of(snapshot: Snapshot) -> SnapshotRecord:
    """The store record of a snapshot: its bytes and the fields queries filter on.

    Raises:
        SnapshotEncodingError: if some value cannot be encoded.
    """
    return SnapshotRecord(
        run_id=snapshot["run_id"],
        workflow_id=snapshot["workflow_id"],
        seq=snapshot["seq"],
        status=snapshot["status"],
        data=encode(snapshot),
        created_at=snapshot["created_at"],
        updated_at=snapshot["updated_at"],
        trace_id=snapshot["trace_id"],
        wake_at=snapshot["wake_at"] if snapshot["status"] == RunStatus.WAITING else None,
    )


def close_open_steps(
    snapshot: Snapshot, status: str, now: float, error: dict[str, Any] | None = None
) -> None:
    """End every step still running, waiting or suspended with ``status`` (and ``error``)."""
    for step in snapshot["steps"].values():
        if step["status"] in OPEN_STEP_STATUSES:
            step["status"] = status
            step["ended_at"] = now
            if error is not None:
                step["error"] = error


def mark_failed(snapshot: Snapshot, error: dict[str, Any], now: float) -> None:
    """Mark a run failed with ``error``: no result, and a step not yet ended fails too."""
    close_open_steps(snapshot, StepStatus.FAILED.value, now, error)
    snapshot["status"] = RunStatus.FAILED.value
    snapshot["error"] = error
    snapshot["result"] = None
    snapshot["suspended"] = {}
    snapshot["wake_at"] = None


def mark_canceled(snapshot: Snapshot, now: float) -> None:
    """Mark a run canceled: no result, no error, and a step not yet ended is canceled."""
    close_open_steps(snapshot, StepStatus.CANCELED.value, now)
    snapshot["status"] = RunStatus.CANCELED.value
    snapshot["result"] = None
    snapshot["suspended"] = {}
    snapshot["wake_at"] = None
    snapshot["resume"] = None


def next_record(snapshot: Snapshot, now: float) -> SnapshotRecord:
    """Number ``snapshot`` as the run's next one, taken at ``now``, and return its record."""
    snapshot["seq"] += 1
    snapshot["updated_at"] = now
    return record_of(snapshot)


def failed_record(snapshot: Snapshot, error: dict[str, Any], now: float) -> SnapshotRecord:
    """The record that follows ``snapshot`` when its run fails with ``error``."""
    mark_failed(snapshot, error, now)
    return next_record(snapshot, now)


def stand_in_record(
    record: SnapshotRecord, error: dict[str, Any], now: float, *, keep_bytes: bool
) -> SnapshotRecord:
    """A failed snapshot built from a stored row alone, for a run whose snapshot is unusable.

    Used when the stored snapshot cannot be read (damaged), or the store
    refused the newest one: the run must still end, as ``failed`` with
    ``error``, rather than stay ``running`` for ever.

    Args:
        record: The row: its id, workflow, sequence number, times and trace id.
        error: The run's error, as an ``ErrorInfo`` dict.
        now: When the run failed.
        keep_bytes: Keep the unreadable snapshot bytes, under ``"damaged"``,
            for whoever inspects the row.
    """
    snapshot: dict[str, Any] = {
        "run_id": record.run_id,
        "workflow_id": record.workflow_id,
        "seq": record.seq,
        "status": RunStatus.FAILED.value,
        "input": None,
        "result": None,
        "error": error,
        "steps": {},
        "next_step": 0,
        "carry": None,
        "progress": None,
        "wake_at": None,
        "suspended": {},
        "resume": None,
        "scopes": {},
        "state": None,
        "request_context": {},
        "include_state": False,
        "trace_id": record.trace_id,
        "span_id": "0" * 16,
        "metadata": {},
        "created_at": record.created_at,
        "updated_at": now,
    }
    if keep_bytes:
        snapshot["damaged"] = record.data
    return next_record(snapshot, now)  # type: ignore[arg-type]


def canceled_record(snapshot: Snapshot, now: float) -> SnapshotRecord:
    """The record that follows ``snapshot`` when its run is cancelled."""
    mark_canceled(snapshot, now)
    return next_record(snapshot, now)


def check_encodable(value: Any, path: str, *, str_keys_known: bool = False) -> None:
    """Check that ``value`` can go into a snapshot and be read back.

    Plain data means ``None``, ``bool``, ``int`` (64-bit), ``float``, ``str``,
    ``bytes``, and lists and dicts of them, dict keys being strings.

    Args:
        value: The value to check.
        path: How to name the value in an error, such as ``"request_context"``.
        str_keys_known: The caller knows every dict key is a string (pydantic's
            JSON-mode dumps), so a quick trial encoding is enough.

    Raises:
        SnapshotEncodingError: naming the first offending key or index and its type.
    """
    if str_keys_known:
        try:
            _packb(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise _encoding_error(value, path) from exc
    elif find_unencodable(value, path) is not None:
        raise _encoding_error(value, path)


MAX_NESTING: Final = 256
"""How deep lists and dicts may nest in a value stored in a snapshot.

msgpack refuses values nested deeper than about 500 levels, and the snapshot
itself adds a few; a limit well below keeps every check and copy iterative
and cheap, and names the path where a deeper value goes wrong.
"""


def find_unencodable(value: Any, path: str) -> tuple[str, str] | None:
    """Find the first value msgpack cannot encode, or read back: its path and what it is.

    Walks the value without recursion, so that a value nested thousands deep
    is reported rather than raising ``RecursionError``.
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if item is None or isinstance(item, bool | float | bytes):
            continue
        if isinstance(item, str):
            if not _is_utf8(item):
                return (where, "str (a lone surrogate: not valid UTF-8)")
            continue
        if isinstance(item, int):
            if -(2**63) <= item < 2**64:
                continue
            return (where, "int (out of 64-bit range)")
        if isinstance(item, list | tuple | dict) and depth >= MAX_NESTING:
            return (where, f"{type(item).__name__} (nested deeper than {MAX_NESTING} levels)")
        if isinstance(item, list | tuple):
            stack.extend(
                (element, f"{where}[{index}]", depth + 1)
                for index, element in reversed(list(enumerate(item)))
            )
            continue
        if isinstance(item, dict):
            children = []
            for key, element in item.items():
                if not isinstance(key, str):
                    return (f"{where} key {key!r}", f"{type(key).__name__} (keys must be str)")
                if not _is_utf8(key):
                    return (f"{where} key {key!r}", "str (a lone surrogate: not valid UTF-8)")
                children.append((element, f"{where}[{key!r}]", depth + 1))
            stack.extend(reversed(children))
            continue
        return (where, type(item).__name__)
    return None


def _is_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _encoding_error(value: Any, path: str) -> SnapshotEncodingError:
    where, type_name = find_unencodable(value, path) or (path, type(value).__name__)
    return SnapshotEncodingError(
        f"{where} holds a value of type {type_name}, which cannot be stored in a snapshot "
        "(values must be msgpack-encodable: None, bool, int, float, str, bytes, "
        "and lists and dicts of them)",
        path=where,
        type_name=type_name,
    )


def _moment(epoch: Any) -> Any:
    """An epoch time as an aware datetime (pydantic would read a far-future one as ms)."""
    if isinstance(epoch, int | float) and not isinstance(epoch, bool):
        try:
            return datetime.fromtimestamp(epoch, UTC)
        except (OverflowError, OSError, ValueError):
            return epoch  # left to the validation, which reports it
    return epoch


def read_result(record: SnapshotRecord | None, workflow_id: str) -> WorkflowResult | None:
    """The public result of a stored record, if it belongs to ``workflow_id``."""
    if record is None or record.workflow_id != workflow_id:
        return None
    try:
        return to_result(decode(record.data, record.run_id))
    except SnapshotFormatError as exc:
        raise SnapshotFormatError(
            f"run {record.run_id!r} cannot be read: {exc}", run_id=record.run_id
        ) from exc


def to_result(snapshot: Snapshot) -> WorkflowResult:
    """Build the public :class:`WorkflowResult` from a decoded snapshot.

    One pydantic validation of the whole result: faster than building each
    nested model in Python, and a snapshot that does not hold what it should
    is reported instead of passed on.

    Raises:
        SnapshotFormatError: if the snapshot's content is not a valid result.
    """
    try:
        return WorkflowResult.model_validate(
            {
                "run_id": snapshot["run_id"],
                "workflow_id": snapshot["workflow_id"],
                "status": snapshot["status"],
                "input": snapshot["input"],
                "result": snapshot["result"],
                "error": snapshot["error"],
                "steps": snapshot["steps"],
                "suspended": snapshot.get("suspended") or {},
                "waiting_until": _moment(snapshot.get("wake_at"))
                if snapshot["status"] == RunStatus.WAITING
                else None,
                "state": snapshot["state"] if snapshot["include_state"] else None,
                "trace_id": snapshot["trace_id"],
                "span_id": snapshot["span_id"],
                "created_at": snapshot["created_at"],
                "updated_at": snapshot["updated_at"],
            }
        )
    except (KeyError, TypeError, ValidationError) as exc:
        raise SnapshotFormatError(
            f"snapshot of run {snapshot.get('run_id')!r} does not hold a valid result: {exc}"
        ) from exc


_STARTING: Final = frozenset({RunStatus.PENDING, RunStatus.RUNNING})
_STEP_GOING_ON: Final = frozenset({StepStatus.RUNNING, StepStatus.WAITING})


def run_events(
    snapshot: Snapshot, last_status: str, last_steps: dict[str, tuple[str, int]]
) -> list[RunEvent]:
    """The events between the last snapshot a watcher saw and this one.

    A change of status comes before the step events when the run (re)starts,
    and after them when it ends, sleeps or suspends, as it happened.

    Args:
        snapshot: The new snapshot.
        last_status: The run's status in the last one (``""`` for none).
        last_steps: Each step's status and attempts in the last one.
    """
    now = datetime.now(UTC)
    run_id, status = snapshot["run_id"], snapshot["status"]
    events: list[RunEvent] = []
    early = status != last_status and status in _STARTING
    if early:
        events.append(RunEvent(type="status", run_id=run_id, status=status, at=now))
    for path, step in snapshot["steps"].items():
        seen = last_steps.get(path)
        step_status, attempts = step["status"], step.get("attempts", 1)
        if seen == (step_status, attempts):
            continue
        kinds = []
        if seen is None or (seen[0] != StepStatus.RUNNING and step_status == StepStatus.RUNNING):
            kinds.append("step_started")
        elif step_status == StepStatus.RUNNING and attempts != seen[1]:
            kinds.append("step_retrying")
        if step_status not in _STEP_GOING_ON:
            kinds.append("step_finished")
        result = StepResult.model_validate(step)
        events.extend(
            RunEvent(type=kind, run_id=run_id, status=status, path=path, step=result, at=now)
            for kind in kinds
        )
    if status != last_status and not early:
        events.append(RunEvent(type="status", run_id=run_id, status=status, at=now))
    return events
