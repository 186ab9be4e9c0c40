"""Snapshot encoding: the one place that speaks msgpack.

A snapshot is a plain dict describing one run at one moment (see
:class:`Snapshot`). It is stored as msgpack bytes behind a format version, so a
reader can refuse bytes it does not understand instead of misreading them.
Nothing here ever unpickles: msgpack carries only plain data.

A snapshot is encoded whole (:func:`encode`, format 3), or in parts by a run
actor's :class:`IncrementalEncoder` (format 4), which encodes at each
transition only the parts that changed, so that a store can write only those.
:func:`decode` reads every format.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from itertools import compress
from operator import is_not
from typing import Any, Final, NotRequired, Self, TypedDict, cast

import msgpack
from pydantic import ValidationError

from runtime._errors import RunDeadlineError, SnapshotEncodingError, SnapshotFormatError
from runtime._model import (
    OPEN_STEP_STATUSES,
    TERMINAL_STATUSES,
    ErrorInfo,
    RunEvent,
    RunStatus,
    StepResult,
    StepStatus,
    WorkflowResult,
)
from runtime._stores.base import SnapshotParts, SnapshotRecord

__all__ = [
    "FORMAT_VERSION",
    "MAX_NESTING",
    "PARTED_VERSION",
    "WHOLE_UNTIL",
    "DeferredRecord",
    "IncrementalEncoder",
    "Snapshot",
    "SnapshotFreezer",
    "StepSnapshot",
    "canceled_record",
    "check_encodable",
    "close_open_steps",
    "copy_plain",
    "deadline_error",
    "decode",
    "encode",
    "failed_record",
    "find_unencodable",
    "first_frozen_record",
    "fix_deadline",
    "forget_suspensions",
    "is_parted",
    "mark_canceled",
    "mark_deadline_passed",
    "mark_failed",
    "next_record",
    "public_steps",
    "read_another",
    "read_result",
    "record_of",
    "resume_request_bytes",
    "run_deadline",
    "run_events",
    "run_timeout_of",
    "split_parts",
    "stand_in_record",
    "state_at",
    "suspend_at",
    "suspension_of",
    "to_result",
    "unpack",
]

FORMAT_VERSION: Final = 3
"""The format this code writes a whole snapshot in. It also reads versions 1, 2 and 4.

Version 3 is version 2 followed by a CRC32 of everything before it, so that a
flipped bit is caught instead of read back as a different, valid run.
"""

PARTED_VERSION: Final = 4
"""The format of a snapshot in parts, as :class:`IncrementalEncoder` writes it.

The bytes are the marker ``0x92 0x04`` followed by parts, each framed as
``length (4 bytes) | body | CRC32 of the body (4 bytes)``, a body being
``key length (2 bytes) | key (UTF-8) | payload (msgpack)``. The first part is
the head, key ``h``: ``[fields, parts, items]``, the snapshot's small fields,
how many parts follow the head, and the length of a foreach's lists of item
outputs (or nil). The other parts come in any order: ``s<path>`` a step record
as ``[ordinal, record]`` (steps are ordered by ordinal), ``v<name>`` one of the
large top-level values (see ``_VALUE_KEYS``), ``i<index>`` the output of a
finished foreach item. Each part has its own checksum, so a store may keep the
parts apart, rewrite only those that changed, and hand back their
concatenation: a flipped bit in any part is still caught.
"""

_CHECKSUM_BYTES: Final = 4
_PAIR: Final = 0x92  # msgpack's fixarray of two: (version, snapshot)


class StepSnapshot(TypedDict, total=False):
    """One step's record inside a snapshot (the last five keys are absent in version 1).

    ``start_state`` is the run's state as it was when the step began, kept only
    by a step that changed the state (a run whose state never changes keeps
    none), and absent in records written before it: the state a step began
    with is the ``start_state`` of the first record from its own on that has
    one, or else the run's state (see :func:`state_at`). It is not part of a
    :class:`~runtime._model.StepResult`.
    """

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
    resumed_at: float | None
    start_state: Any


class Snapshot(TypedDict):
    """A run at one moment, as plain data. Times are epoch seconds (UTC).

    ``next_step`` is the index of the plan node the run is at, ``carry`` that
    node's input (the previous node's output), and ``progress`` what a
    compound node (a loop, a foreach, a branch) has done so far. ``wake_at``
    is when a waiting run's sleep ends, ``suspended`` maps suspended step
    paths to their payloads, ``suspensions`` each of those paths to its
    suspension's id (see :func:`suspension_of`; absent when none has one: those
    recorded before ids), ``resume`` holds the resume data not yet handed
    to its step, and ``scopes`` the inputs of the nested workflows entered.
    ``resumed`` is there (and true) once a resume of the run's last suspension
    is recorded, until the run suspends again: a later resume of that
    suspension lost to it. Snapshots before that key lack it, as do runs
    never resumed. ``resource_id`` is the user or tenant the run was started
    for (absent in older snapshots). ``time_traveled_from`` (``{"run_id", "step"}``)
    links a run made by ``workflow.time_travel`` to its original, and
    ``restarts`` counts the restarts of a run (both absent when there are none).

    ``run_timeout`` is the run's time limit in seconds (absent: none), and
    ``deadline`` when it is up (epoch seconds, on the runtime's clock), set
    when the run begins to execute (so a wait in a queue does not count) and
    dropped by a restart, which sets a new one.

    ``unsampled`` is there (and true) when the run's ``workflow_start``
    OpenTelemetry span was not sampled: its later spans are not either.

    ``fingerprint`` is the hash of the plan the run was started on (see
    :func:`~runtime._plan.plan_fingerprint`) and ``version`` the workflow's
    version label, if it had one: a run goes on only on a definition with the
    same fingerprint. Snapshots written before versions lack both.
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
    suspensions: NotRequired[dict[str, int]]
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
    queue: NotRequired[dict[str, Any]]
    resource_id: NotRequired[str | None]
    time_traveled_from: NotRequired[dict[str, str]]
    restarts: NotRequired[int]
    restarted_at: NotRequired[float]
    restarting: NotRequired[bool]
    unsampled: NotRequired[bool]
    idempotency_key: NotRequired[str]
    fingerprint: NotRequired[str]
    version: NotRequired[str]
    retries: NotRequired[dict[str, list[float]]]
    run_timeout: NotRequired[float]
    deadline: NotRequired[float]


_Packer: Final = msgpack.Packer


def _packb(value: Any) -> bytes:
    # A fresh packer per call: a shared msgpack.Packer is not safe across threads, and
    # one kept per thread would keep its buffer (256 KiB, more after a large value).
    # msgpack.packb's own body (its Python frame a call more at every encoding).
    data: bytes = _Packer(use_bin_type=True).pack(value)
    return data


def encode(snapshot: Mapping[str, Any]) -> bytes:
    """Encode a snapshot as versioned msgpack bytes with a checksum.

    Raises:
        SnapshotEncodingError: if some value cannot be encoded; the error names
            where it sits and its type.
    """
    try:
        body = _packb((FORMAT_VERSION, snapshot))  # every encoding goes through _packb
    except (TypeError, ValueError, OverflowError) as exc:
        raise _encoding_error(snapshot, "snapshot") from exc
    return body + zlib.crc32(body).to_bytes(_CHECKSUM_BYTES, "big")


def resume_request_bytes(data: Any, snapshot: Snapshot) -> bytes:
    """The bytes of a resume request (``data``) of a suspension read waiting in ``snapshot``.

    With where it was read: ``read_seq``, the snapshot's seq (a worker tells a later
    suspension at the same path, a loop's next pass, from the one asked for), and
    ``run``, the run's ``created_at`` and count of restarts (a run's actor tells the run
    restarted since, or a new run given its id, from the one asked of: their
    suspensions are others, which that actor knows nothing about). Read with
    :func:`unpack`.

    Raises:
        SnapshotEncodingError: if ``data`` cannot be encoded.
    """
    return encode(
        {
            "resume_data": data,
            "read_seq": snapshot["seq"],
            "run": [snapshot["created_at"], snapshot.get("restarts", 0)],
        }
    )


def unpack(data: bytes, *, checksum: bool = True) -> dict[str, Any]:
    """The mapping in bytes written by :func:`encode` or :class:`IncrementalEncoder`, checked.

    ``checksum=False`` leaves out the checksum of bytes that never left this
    process (a store in memory's: see :func:`read_result`).

    Raises:
        SnapshotFormatError: if a checksum does not match, the bytes are not
            msgpack, do not hold a mapping, or come from an unknown version.
    """
    if data[:2] == _PARTED_MARKER:  # is_parted(data), without its frame
        return _unpack_parted(data)
    if len(data) > _CHECKSUM_BYTES + 1 and data[0] == _PAIR and data[1] == FORMAT_VERSION:
        body = data[:-_CHECKSUM_BYTES]
        if checksum and zlib.crc32(body) != int.from_bytes(data[-_CHECKSUM_BYTES:], "big"):
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
        try:
            if type(step) is not dict or step.get("status") not in _STEP_STATUSES:
                return f"step {path!r} is not a step record"
        except TypeError:  # a status that cannot be hashed: a list, a dict
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


# --- snapshots in parts (format 4) ----------------------------------------------------

_PARTED_MARKER: Final = bytes((_PAIR, PARTED_VERSION))
_FRAME_HEAD: Final = struct.Struct(">IH")  # the body's length, then its key's
_LENGTH: Final = struct.Struct(">I")
_KEY_LENGTH: Final = struct.Struct(">H")
_CHECKSUM: Final = struct.Struct(">I")
_MAX_KEY: Final = 0xFFFF
_ARRAY32: Final = b"\xdd"  # msgpack's array with a 32-bit length

_VALUE_KEYS: Final = ("input", "carry", "state", "request_context", "result", "scopes", "metadata")
"""Top-level values that may get a part of their own (see ``_INLINE_VALUE`` and
``_INLINE_CHANGED``): most transitions leave most of them as they were. The other
fields ride in the head, but those in ``_FIXED_KEYS``."""

_INLINE_VALUE: Final = 64
"""The most bytes a value of ``_VALUE_KEYS`` takes and always rides in the head: about
what a part of its own costs a store in keys and framing."""

_INLINE_CHANGED: Final = 512
"""The most bytes a step record not ended, or a value, takes and rides in the head in
the record where it changed. What changed is written anyway, and what changes at almost
every transition (the carry, a running step) costs no row of its own; what stays the
same until the next record gets a part then, written once."""

WHOLE_UNTIL: Final = 2048
"""The most bytes a run's snapshot takes while :class:`IncrementalEncoder` still encodes it
whole (format 3): one msgpack call is the cheapest encoding of a small snapshot, and
rewriting 2 KiB at a transition costs a store next to nothing. Past it, parts."""

CHECK_PARTS = False
"""Decode every record in parts again and compare it with its snapshot (an
``AssertionError`` if they differ). Off: it costs a whole decode a transition.
The test suite turns it on, so that every control flow checks that the encoder
saw each change the run actor made."""

_FIXED_KEYS: Final = ("run_id", "workflow_id", "trace_id", "span_id", "created_at", "include_state")
"""Fields a run's snapshots share from first to last: one part, written once."""

_LINEAGES: Final = random.Random()
"""Draws each encoder's lineage: 62 random bits (seeded from the system), never reused
knowingly; two encoders of one run drawing the same is as likely as a hash collision."""

EACH_SCOPE: Final = "#each"
"""The suffix of a scope key that holds a foreach over a nested workflow: its ``items``
and the ``outputs`` of the items done so far, kept in parts of their own (``"e"``, the
items; ``"o"``, an output each), so that an item done costs a part, not the whole list
encoded again."""

LOOP_SCOPE: Final = "#loop"
"""The suffix of a scope key that holds a loop's pass over a nested workflow (its count)."""

START_STATE: Final = "start_state"
"""The key of a step record that holds the state the step began with: only in the record
of a step that changed the state (see :class:`StepSnapshot`, :func:`state_at`)."""

_EACH_LISTS: Final = ("items", "outputs")
_SCOPES: Final = _VALUE_KEYS.index("scopes")

_MISSING: Final = object()
_NO_VALUES: Final = (_MISSING,) * len(_VALUE_KEYS)
_NO_FIXED: Final = (_MISSING,) * len(_FIXED_KEYS)
_ITEM_LISTS: Final = ("outputs", "done")
_MAX_DIGITS: Final = 18  # an item's, an output's or a page's index in its key
_PAGE: Final = 64
"""Foreach items per page of the encoder's cache of their bytes: a transition joins
the pages, not every item, to build the whole snapshot's bytes."""

_SUSPENDED_PAGE: Final = 64
"""Entries of a run's ``suspended`` per part: a suspension or a resume encodes one part
of up to this many, and a new encoder (a resume's) writes one part per this many. With
256, a foreach of 300 items that all suspend wrote 3.9 times what one of 100 wrote; with
64, 2.4 times, and a resume of one item of 4,000 took about a tenth longer."""


def is_parted(data: bytes) -> bool:
    """Whether ``data`` starts a snapshot in parts (format 4): a whole one, or a stored head."""
    return data[:2] == _PARTED_MARKER


def _frame(key: str, payload: bytes) -> bytes:
    name = key.encode("utf-8")
    if len(name) > _MAX_KEY:
        raise ValueError(f"a part's key is longer than {_MAX_KEY} bytes")
    body = _KEY_LENGTH.pack(len(name)) + name + payload
    return b"".join((_LENGTH.pack(len(body)), body, _CHECKSUM.pack(zlib.crc32(body))))


def _parted_error(problem: str) -> SnapshotFormatError:
    return SnapshotFormatError(f"snapshot bytes (format version {PARTED_VERSION}) {problem}")


def _scan(
    data: bytes, start: int, *, check: bool
) -> tuple[list[bytes], list[memoryview], list[int]]:
    """Walk the parts from ``start`` on: each one's key, payload and where it starts.

    Args:
        data: Format-4 bytes.
        start: Where the first part starts.
        check: Check each part's checksum.

    Raises:
        SnapshotFormatError: if the framing is broken (a part cut short) or,
            with ``check``, a checksum does not match.
    """
    view = memoryview(data)
    size = len(data)
    keys: list[bytes] = []
    payloads: list[memoryview] = []
    starts: list[int] = []
    frame_head, checksum, crc32 = _FRAME_HEAD.unpack_from, _CHECKSUM.unpack_from, zlib.crc32
    position = start
    while position < size:
        if position + _FRAME_HEAD.size > size:
            raise _parted_error("are cut short inside a part's framing")
        length, key_length = frame_head(data, position)
        body = position + 4
        end = body + length
        payload = position + _FRAME_HEAD.size + key_length
        if end + _CHECKSUM.size > size or payload > end:
            raise _parted_error("are cut short, or a part's length is damaged")
        if check and crc32(view[body:end]) != checksum(data, end)[0]:
            raise _parted_error(
                "are damaged: a part's checksum does not match (a flipped bit, a torn "
                "write, or bytes written by something else)"
            )
        keys.append(data[position + _FRAME_HEAD.size : payload])
        payloads.append(view[payload:end])
        starts.append(position)
        position = end + _CHECKSUM.size
    starts.append(position)
    return keys, payloads, starts


def split_parts(data: bytes, start: int) -> list[tuple[str, bytes]]:
    """The parts of format-4 bytes after their first ``start`` bytes (the marker and head).

    What a store that keeps parts apart writes for a record whose change it
    cannot apply: every part, each as ``(key, bytes)``.

    Raises:
        SnapshotFormatError: if the framing is broken, or a key is not UTF-8.
    """
    keys, _, starts = _scan(data, start, check=False)
    try:
        return [
            (key.decode("utf-8"), data[begin:end])
            for key, begin, end in zip(keys, starts, starts[1:], strict=False)
        ]
    except UnicodeDecodeError as exc:
        raise _parted_error("are damaged: a part's key is not UTF-8") from exc


def _unpack_parted(data: bytes) -> dict[str, Any]:
    """The snapshot in format-4 bytes, every part's checksum checked."""
    keys, payloads, _ = _scan(data, len(_PARTED_MARKER), check=True)
    if not keys or keys[0] != b"h":
        raise _parted_error("do not start with a head part")
    if len(set(keys)) != len(keys):
        raise _parted_error("hold a part twice")
    # One msgpack call for every payload: a part's payload is one msgpack value.
    stream = _ARRAY32 + len(payloads).to_bytes(4, "big") + b"".join(payloads)
    try:
        values = msgpack.unpackb(stream, raw=False)
        names = [key[1:].decode("utf-8") for key in keys]
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise _parted_error(f"hold a part that cannot be decoded: {exc}") from exc
    fields, length, steps = _head(values[0], len(keys) - 1)
    items: list[tuple[int, Any]] = []
    each_items: dict[str, Any] = {}
    each_outputs: list[tuple[str, int, Any]] = []
    suspended: list[tuple[int, dict[str, Any]]] = []
    numbered: list[tuple[int, list[Any]]] = []
    for key, name, value in zip(keys[1:], names[1:], values[1:], strict=True):
        kind = key[:1]
        if kind == b"s" and type(value) is list and len(value) == 2 and type(value[0]) is int:
            steps.append((value[0], name, value[1]))
        elif kind == b"e" and name.endswith(EACH_SCOPE) and type(value) is list:
            each_items[name] = value
        elif kind == b"o" and (place := _each_output_key(name)) is not None:
            each_outputs.append((place[1], place[0], value))
        elif (
            kind == b"u"
            and name.isascii()
            and name.isdigit()
            and len(name) <= _MAX_DIGITS
            and type(value) is dict
        ):
            suspended.append((int(name), value))
        elif (
            kind == b"n"
            and name.isascii()
            and name.isdigit()
            and len(name) <= _MAX_DIGITS
            and type(value) is list
        ):
            numbered.append((int(name), value))
        elif kind == b"v" and name in _VALUE_KEYS and name not in fields:
            fields[name] = value
        elif key == b"f" and type(value) is dict and fields.keys().isdisjoint(value):
            fields.update(value)
        elif kind == b"i" and name.isascii() and name.isdigit() and len(name) <= _MAX_DIGITS:
            items.append((int(name), value))
        else:
            raise _parted_error(f"hold a part {key!r} that does not fit the head")
    if "steps" not in fields:
        steps.sort(key=lambda step: step[0])
        fields["steps"] = {path: record for _, path, record in steps}
    elif steps:
        raise _parted_error("hold the steps both whole and in parts")
    if len(fields["steps"]) != len(steps):
        raise _parted_error("hold a step twice")
    _fill_items(fields, length, items, len(data))
    if each_items or each_outputs:
        _fill_each(fields, each_items, each_outputs)
    _fill_suspended(fields, suspended, numbered)
    return fields


def _fill_suspended(
    fields: dict[str, Any],
    pages: list[tuple[int, dict[str, Any]]],
    numbered: list[tuple[int, list[Any]]],
) -> None:
    """Put the suspended steps back, in order, unless the head holds them whole.

    ``numbered`` are the pages of their ``suspensions`` (see :func:`suspension_of`):
    each the ids of its page's entries, in their order (nil: one without).
    """
    if numbered:
        if "suspended" in fields or "suspensions" in fields:
            raise _parted_error("hold the suspensions both whole and in parts")
        by_page = dict(pages)
        suspensions: dict[str, Any] = {}
        for page, numbers in numbered:
            entries = by_page.get(page)
            if entries is None or len(entries) != len(numbers):
                raise _parted_error("hold suspension ids that do not fit their suspended steps")
            for key, number in zip(entries, numbers, strict=True):
                if number is not None:
                    suspensions[key] = number
        fields["suspensions"] = suspensions
    if "suspended" in fields:
        if pages:
            raise _parted_error("hold the suspended steps both whole and in parts")
        return
    # In pages of entries, each in order (none: nothing is suspended).
    pages.sort(key=lambda page: page[0])
    suspended: dict[str, Any] = {}
    for _, entries in pages:
        suspended.update(entries)
    if len(suspended) != sum(len(entries) for _, entries in pages):
        raise _parted_error("hold a suspended step twice")
    fields["suspended"] = suspended


def _head(head: Any, parts: int) -> tuple[dict[str, Any], Any, list[tuple[int, str, Any]]]:
    """The fields, the foreach's length and the steps riding in a head part's value."""
    if type(head) is not list or len(head) != 4 or type(head[0]) is not dict:
        raise _parted_error("have a head part that is not one")
    fields: dict[str, Any] = head[0]
    count, length, inline = head[1], head[2], head[3]
    if type(count) is not int:
        raise _parted_error("have a head part that does not count the parts")
    if type(inline) is not list or not all(
        type(step) is list and len(step) == 3 and type(step[0]) is int and type(step[1]) is str
        for step in inline
    ):
        raise _parted_error("have a head part whose steps are not valid")
    if count != parts:
        raise _parted_error(f"hold {parts} parts where the head names {count!r}")
    return fields, length, [(step[0], step[1], step[2]) for step in inline]


def _each_output_key(name: str) -> tuple[int, str] | None:
    """``(index, scope key)`` of an output part's name ``"<index>:<scope key>"``."""
    digits, colon, scope = name.partition(":")
    if (
        not colon
        or not digits.isascii()
        or not digits.isdigit()
        or len(digits) > _MAX_DIGITS
        or not scope.endswith(EACH_SCOPE)
    ):
        return None
    return int(digits), scope


def _fill_each(
    fields: dict[str, Any], items: dict[str, Any], outputs: list[tuple[str, int, Any]]
) -> None:
    """Put the lists of each foreach over a nested workflow back into its scope."""
    scopes = fields.get("scopes")
    by_scope: dict[str, list[tuple[int, Any]]] = {key: [] for key in items}
    for scope, index, output in outputs:
        if scope not in by_scope:
            raise _parted_error(f"hold an output of foreach {scope!r} without its items")
        by_scope[scope].append((index, output))
    for scope, done in by_scope.items():
        entry = scopes.get(scope) if type(scopes) is dict else None
        if type(entry) is not dict or not entry.keys().isdisjoint(_EACH_LISTS):
            raise _parted_error(f"hold the items of foreach {scope!r} its scopes do not know of")
        done.sort(key=lambda pair: pair[0])
        if [index for index, _ in done] != list(range(len(done))):
            raise _parted_error(f"hold the outputs of foreach {scope!r} with some missing")
        entry["items"] = items[scope]
        entry["outputs"] = [output for _, output in done]


def _fill_items(
    fields: dict[str, Any], length: Any, items: list[tuple[int, Any]], size: int
) -> None:
    """Put a foreach's lists of outputs back into ``progress``, from its finished items."""
    if length is None:
        if items:
            raise _parted_error("hold foreach items the head does not know of")
        return
    progress = fields.get("progress")
    # Each finished item has a part; a length beyond the bytes is not a real one.
    if type(length) is not int or not 0 <= length <= size or type(progress) is not dict:
        raise _parted_error("have a head part whose foreach items are not valid")
    outputs: list[Any] = [None] * length
    done = [False] * length
    for index, output in items:
        if index >= length:
            raise _parted_error(f"hold foreach item {index} of {length}")
        outputs[index] = output
        done[index] = True
    progress["outputs"] = outputs
    progress["done"] = done


def _check_parts(data: bytes, snapshot: Mapping[str, Any]) -> None:
    """Check that ``data`` reads back as ``snapshot`` (see :data:`CHECK_PARTS`)."""
    decoded = unpack(data)
    if decoded != snapshot or list(decoded.get("suspended", ())) != list(
        snapshot.get("suspended", ())
    ):
        differ = sorted(
            key for key in {*decoded, *snapshot} if decoded.get(key) != snapshot.get(key)
        ) or ["the order of suspended"]
        raise AssertionError(f"a record in parts does not read back as its snapshot: {differ}")


_SETTLED_STEP: Final = frozenset(
    {StepStatus.SUCCESS.value, StepStatus.FAILED.value, StepStatus.CANCELED.value}
)
"""Statuses of a step record that the run actor no longer changes in place: it replaces
the record (a new dict) to change one, as when the step runs again."""


def _changed_steps(
    records: Sequence[dict[str, Any]],
    seen: Sequence[dict[str, Any]],
    copies: list[dict[str, Any]],
    unsettled: Sequence[int],
) -> list[int]:
    """The indices, among the first ``len(seen)`` step records, of those that changed.

    A record that is not the object it was at the last record changed (or may
    have: it is copied again). One that is the same object changed only if it
    was not settled then (:data:`_SETTLED_STEP`, its index in ``unsettled``)
    and now differs from its copy. So a transition costs a pass over the steps
    comparing identities, and a comparison of each open step's record, not of
    every record: a run's CPU per step stays flat as its steps add up. The test
    suite's :data:`CHECK_PARTS` checks every record against its snapshot, and so
    that a settled record is never changed in place.
    """
    changed = list(compress(range(len(seen)), map(is_not, records, seen)))
    grew = False
    for index in unsettled:
        record = records[index]
        if record is seen[index] and record != copies[index]:
            changed.append(index)
            grew = True
    if grew:
        changed.sort()
    return changed


def _kept_step(record: dict[str, Any]) -> dict[str, Any]:
    """A step record as a frozen record keeps it: a copy while the step is open, else itself.

    The run actor changes an open step's record in place, but never a settled one
    (:data:`_SETTLED_STEP`): it replaces it. So a settled record is shared with the
    run actor rather than copied (one object fewer per step for the garbage collector).
    """
    return record if record.get("status") in _SETTLED_STEP else record.copy()


def _unsettled(copies: list[dict[str, Any]], indices: Any) -> tuple[int, ...]:
    """Those of ``indices`` whose copy is of a step record not settled.

    A tuple: an encoder or freezer keeps it until its next record, and the garbage
    collector stops tracking a tuple of ints (never a list).
    """
    return tuple([index for index in indices if copies[index].get("status") not in _SETTLED_STEP])


class _EachLists:
    """What a :class:`_PartsEncoder` encoded of one foreach over a nested workflow."""

    __slots__ = ("count", "items", "last")

    def __init__(self, items: list[Any]) -> None:
        self.items = items  # the list encoded as the foreach's items
        self.count = 0  # its outputs encoded, from the first
        self.last: Any = None  # the last of them, to see the next list goes on from it


class IncrementalEncoder:
    """Encodes the successive snapshots of one run in parts (format 4), each part when it changed.

    The run actor keeps one for the snapshot it drives and takes every record
    from it. While the snapshot is small (up to ``whole_until`` bytes) each
    record holds it whole, as :func:`record_of` makes it; once it is larger,
    in parts, for the rest of the encoder's life. So a transition writes at
    most about ``whole_until`` bytes plus what it changed, and the bytes a run
    writes grow linearly with its steps.

    In parts, a part is encoded again only when what it holds changed: a step
    record that is another object than last time, or one not settled then that
    differs (``==``) from a shallow copy of it as last encoded (an unchanged
    value is found equal at once, by identity), a top-level value
    (carry, state...) that is another object, a foreach item announced with
    :meth:`item_done`. Looking for changes costs a C-level pass over the steps,
    not an encoding of each. A part whose new bytes equal the old ones does not
    count as changed. An open step or a value rides in the head in the record
    where it changed (it is written anyway), and gets a part of its own once a
    record leaves it as it was. So a transition encodes what it changed, not
    the whole run, and a store that keeps parts apart writes about as much
    (see :class:`~runtime._stores.base.SnapshotParts`); the record's ``data``
    still holds every part, for a store that keeps it whole.

    This relies on how the run actor changes its snapshot: it replaces values
    (a step record's too), never changes one's insides in place, except a
    foreach's lists of item outputs, and it announces each item it changes
    there; it changes a step record in place only while the step is not
    settled (succeeded, failed, cancelled): a settled one it replaces whole;
    and a foreach over a nested workflow (a scope ending in :data:`EACH_SCOPE`)
    gets each output as a new list of the outputs before it and that one.
    The test suite checks every record against its snapshot
    (:data:`CHECK_PARTS`). The count of finished items is checked at every
    record, and any other change of the foreach's progress makes the encoder
    look at every item again.

    Args:
        snapshot: The snapshot the records are taken of; the caller keeps
            changing it between records.
        whole_until: The most bytes of a snapshot encoded whole (by default
            :data:`WHOLE_UNTIL`); ``-1``: none, every record is in parts.
    """

    __slots__ = ("_parts", "_snapshot", "_whole_until")

    def __init__(self, snapshot: Snapshot, *, whole_until: int | None = None) -> None:
        self._snapshot = snapshot
        self._whole_until = WHOLE_UNTIL if whole_until is None else whole_until
        # What parts need is made when the snapshot outgrows whole_until: most runs
        # never do, and a runtime may hold thousands of them at once.
        self._parts = _PartsEncoder(snapshot) if self._whole_until < 0 else None

    def item_done(self, index: int) -> None:
        """Item ``index`` of the foreach in progress has its output now: encode it next time."""
        if self._parts is not None:  # a whole snapshot needs no telling
            self._parts.item_done(index)

    def suspended_changed(self, key: str, *, gone: bool = False) -> None:
        """The run's ``suspended`` got (or changed, or with ``gone`` lost) the entry ``key``.

        The snapshot holds a new dict: the entry is encoded (or dropped) next
        time, not the whole dict.
        """
        if self._parts is not None:
            self._parts.suspended_changed(key, gone)

    def start_over(self) -> None:
        """A record never reached the store: the next one holds every part, in a new lineage."""
        if self._parts is not None:
            self._parts = _PartsEncoder(self._snapshot)

    def next_record(self, now: float) -> SnapshotRecord:
        """Number the snapshot as the run's next one, taken at ``now``, and return its record.

        Raises:
            SnapshotEncodingError: if some value cannot be encoded.
        """
        snapshot = self._snapshot
        snapshot["seq"] += 1
        snapshot["updated_at"] = now
        parts = self._parts
        if parts is None:
            data = encode(snapshot)
            if len(data) <= self._whole_until:
                return record_of(snapshot, data=data)
            # From now on in parts, beginning with this record (its first parts look at
            # every step and item).
            parts = self._parts = _PartsEncoder(snapshot)
        return parts.record()


class _PartsEncoder:
    """The parts of one run's snapshots, as :class:`IncrementalEncoder` last encoded them."""

    __slots__ = (
        "_announced",
        "_base",
        "_copies",
        "_counted_at",
        "_dirty_pages",
        "_done",
        "_each",
        "_each_dirty",
        "_each_frames",
        "_each_pages",
        "_fixed",
        "_fixed_frame",
        "_inline_steps",
        "_items",
        "_lineage",
        "_next_ordinal",
        "_ordinals",
        "_outputs",
        "_pages",
        "_paths",
        "_progress",
        "_recent_values",
        "_scopes_in",
        "_scopes_out",
        "_seen",
        "_snapshot",
        "_step_frames",
        "_steps_bytes",
        "_suspended",
        "_suspended_announced",
        "_suspended_bytes",
        "_suspended_dirty",
        "_suspended_entries",
        "_suspended_ids",
        "_suspended_keys",
        "_suspended_next",
        "_suspended_pages",
        "_suspension_ids",
        "_suspension_pages",
        "_unsettled",
        "_value_frames",
        "_values",
        "_values_bytes",
    )

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._reset()

    def _reset(self) -> None:
        """Forget every part: the next record encodes them all, and says so."""
        self._lineage = _LINEAGES.getrandbits(62)
        self._base: int | None = None
        self._next_ordinal = 0
        self._paths: list[str] = []
        self._copies: list[dict[str, Any]] = []
        self._seen: list[dict[str, Any]] = []  # the step records as objects, at the last record
        self._unsettled: tuple[int, ...] = ()  # indices of the copies not settled
        self._ordinals: dict[str, int] = {}
        self._step_frames: dict[str, bytes] = {}
        self._inline_steps: dict[str, int] = {}
        self._steps_bytes: bytes | None = b""
        self._values: list[Any] = list(_NO_VALUES)
        self._recent_values: dict[str, bytes] = {}
        self._fixed: tuple[Any, ...] = _NO_FIXED
        self._fixed_frame = b""
        self._value_frames: dict[str, bytes] = {}
        self._values_bytes: bytes | None = b""
        self._progress: Any = None
        self._outputs: Any = None
        self._done: Any = None
        self._items: dict[int, bytes] = {}
        self._pages: dict[int, bytes] = {}
        self._dirty_pages: set[int] = set()
        self._announced: list[int] = []
        self._counted_at = 0  # the items encoded when the done flags were last counted
        # Foreaches over nested workflows, by scope key: their items and outputs in parts.
        self._scopes_in: Any = None  # the scopes last seen, and the same without the lists
        self._scopes_out: Any = None
        self._each: dict[str, _EachLists] = {}
        self._each_frames: dict[str, dict[int, bytes]] = {}  # key: index: frame; items: -1
        self._each_pages: dict[tuple[str, int], bytes] = {}
        self._each_dirty: set[tuple[str, int]] = set()
        # The run's suspended steps, _SUSPENDED_PAGE to a part, by the ordinals that keep
        # their order.
        self._suspended: Any = None  # the dict last encoded
        self._suspended_announced: list[tuple[str, bool]] = []
        self._suspended_entries: dict[str, tuple[int, Any]] = {}  # key: (ordinal, payload)
        self._suspended_keys: dict[int, str] = {}  # ordinal: key
        self._suspended_next = 0
        self._suspended_pages: dict[int, bytes] = {}  # page: its frame
        self._suspended_dirty: set[int] = set()
        self._suspended_bytes: bytes | None = b""
        # Their suspensions' ids (see suspension_of), in parts of their own by the same
        # pages: the dict last encoded, each entry's id, and each page's frame.
        self._suspended_ids: Any = None
        self._suspension_ids: dict[str, int] = {}
        self._suspension_pages: dict[int, bytes] = {}

    def item_done(self, index: int) -> None:
        self._announced.append(index)

    def suspended_changed(self, key: str, gone: bool) -> None:
        self._suspended_announced.append((key, gone))

    def record(self) -> SnapshotRecord:
        """The record of the snapshot as it is now, in parts.

        Raises:
            SnapshotEncodingError: if some value cannot be encoded; the next
                record then encodes every part again.
        """
        snapshot = self._snapshot
        changed: list[tuple[str, bytes]] = []
        dropped: list[str] = []
        try:
            fields: dict[str, Any] = dict(snapshot)
            steps = fields.pop("steps", None)
            if type(steps) is dict:
                self._encode_steps(steps, changed, dropped)
            else:
                fields["steps"] = steps
                steps = {}
                self._encode_steps(steps, changed, dropped)
            self._encode_values(changed, dropped)
            for name in self._value_frames:
                del fields[name]
            if "scopes" in fields and fields["scopes"] is self._scopes_in:
                fields["scopes"] = self._scopes_out  # in the head: without the lists too
            self._encode_fixed(fields, changed)
            if type(fields.get("suspended")) is dict:
                ids = fields.get("suspensions")
                if type(ids) is dict and ids:  # else (none, or empty) in the head
                    del fields["suspensions"]
                else:
                    ids = None
                self._encode_suspended(fields.pop("suspended"), ids, changed, dropped)
            length = self._encode_items(fields, changed, dropped)
            count = (
                len(self._step_frames)
                + len(self._value_frames)
                + len(self._items)
                + sum(map(len, self._each_frames.values()))
                + len(self._suspended_pages)
                + len(self._suspension_pages)
                + bool(self._fixed_frame)
            )
            inline = [(ordinal, path, steps[path]) for path, ordinal in self._inline_steps.items()]
            head = _PARTED_MARKER + _frame("h", _packb((fields, count, length, inline)))
        except (TypeError, ValueError, OverflowError) as exc:
            self._reset()
            raise _encoding_error(snapshot, "snapshot") from exc
        pieces = _Pieces((head, *self._joined()))
        if CHECK_PARTS:
            _check_parts(pieces.encoded(), snapshot)
        base = self._base
        self._base = snapshot["seq"]
        parts = SnapshotParts(self._lineage, base, head, tuple(changed), tuple(dropped))
        record: PartedRecord = _record_values(PartedRecord, snapshot, pieces, parts, None)
        return record

    def _encode_steps(
        self, steps: dict[str, Any], changed: list[tuple[str, bytes]], dropped: list[str]
    ) -> None:
        paths = list(steps)
        records = list(steps.values())
        known, copies = self._paths, self._copies
        if paths[: len(known)] == known:
            # The usual case: the steps of last time, in the same order, and maybe new ones.
            todo = _changed_steps(records, self._seen, copies, self._unsettled)
            candidates = {*self._unsettled, *todo, *range(len(known), len(paths))}
            for index in range(len(known), len(paths)):
                self._ordinals[paths[index]] = self._next_ordinal
                self._next_ordinal += 1
                todo.append(index)
            copies.extend(map(dict.copy, records[len(known) :]))
        else:
            todo = self._reorder(paths, records, dropped)
            copies = self._copies
            candidates = set(range(len(paths)))
        frames, inline = self._step_frames, self._inline_steps
        recent = {}
        for index in todo:
            path, record = paths[index], records[index]
            copies[index] = record.copy()
            ordinal = self._ordinals[path]
            payload = _packb((ordinal, record))
            if len(payload) <= _INLINE_CHANGED and record.get("status") in OPEN_STEP_STATUSES:
                # Just started or changed, not ended: it changes again soon. It rides in
                # the head while it does.
                recent[path] = ordinal
                if frames.pop(path, None) is not None:
                    dropped.append("s" + path)
                    self._steps_bytes = None
                continue
            inline.pop(path, None)
            self._step_part(path, payload, changed)
        for path, ordinal in inline.items():
            if path not in recent:  # unchanged since the last record: a part of its own now
                self._step_part(path, _packb((ordinal, steps[path])), changed)
        self._inline_steps = recent
        self._paths = paths
        self._seen = records
        self._unsettled = _unsettled(copies, sorted(candidates))

    def _step_part(self, path: str, payload: bytes, changed: list[tuple[str, bytes]]) -> None:
        frame = _frame("s" + path, payload)
        if self._step_frames.get(path) != frame:
            self._step_frames[path] = frame
            changed.append(("s" + path, frame))
            self._steps_bytes = None

    def _reorder(
        self, paths: list[str], records: list[dict[str, Any]], dropped: list[str]
    ) -> list[int]:
        """Steps moved (run again) or went: give ordinals anew where needed; what to encode."""
        before = dict(zip(self._paths, self._copies, strict=True))
        old, ordinals = self._ordinals, {}
        todo: list[int] = []
        copies: list[dict[str, Any]] = []
        last = -1  # ordinals increase in the order of the steps
        for index, (path, record) in enumerate(zip(paths, records, strict=True)):
            ordinal = old.get(path)
            copy = before.get(path)
            if ordinal is None or ordinal <= last:
                ordinal = self._next_ordinal
                self._next_ordinal += 1
                todo.append(index)
            elif copy != record:
                todo.append(index)
            copies.append(record if copy is None else copy)  # replaced if encoded
            ordinals[path] = last = ordinal
        for path in old:
            if path not in ordinals and self._inline_steps.pop(path, None) is None:
                del self._step_frames[path]
                dropped.append("s" + path)
                self._steps_bytes = None
        self._ordinals = ordinals
        self._copies = copies
        return todo

    def _encode_values(self, changed: list[tuple[str, bytes]], dropped: list[str]) -> None:
        got = list(map(self._snapshot.get, _VALUE_KEYS, _NO_VALUES))
        got[_SCOPES] = self._thin_scopes(got[_SCOPES], changed, dropped)
        frames, recent = self._value_frames, self._recent_values
        new = set(compress(range(len(_VALUE_KEYS)), map(is_not, got, self._values)))
        for index, name in enumerate(_VALUE_KEYS):
            if index not in new:
                payload = recent.pop(name, None)
                if payload is not None:  # unchanged since it came: a part of its own now
                    self._value_part(name, payload, changed)
                continue
            value = got[index]
            # Nothing, or an empty value (no state, no request context): in the head.
            payload = b"" if value is _MISSING or not value else _packb(value)
            if len(payload) <= _INLINE_CHANGED:
                # Small, or just changed (as the carry does at every node): in the head.
                if len(payload) > _INLINE_VALUE:
                    recent[name] = payload
                else:
                    recent.pop(name, None)
                if frames.pop(name, None) is not None:
                    dropped.append("v" + name)
                    self._values_bytes = None
                continue
            recent.pop(name, None)
            self._value_part(name, payload, changed)
        self._values = got

    def _thin_scopes(
        self, scopes: Any, changed: list[tuple[str, bytes]], dropped: list[str]
    ) -> Any:
        """``scopes`` without the lists of its foreaches over nested workflows, put in parts.

        The same object as last time while ``scopes`` is: an unchanged value is
        not encoded again.
        """
        if scopes is self._scopes_in:
            return self._scopes_out
        thinned = scopes
        kept: set[str] = set()
        if type(scopes) is dict:
            for key, value in scopes.items():
                if not (type(key) is str and key.endswith(EACH_SCOPE) and type(value) is dict):
                    continue
                items, outputs = value.get("items"), value.get("outputs")
                if type(items) is not list or type(outputs) is not list:
                    continue
                if thinned is scopes:
                    thinned = dict(scopes)
                thinned[key] = {
                    name: inner for name, inner in value.items() if name not in _EACH_LISTS
                }
                self._each_lists(key, items, outputs, changed, dropped)
                kept.add(key)
        for key in [key for key in self._each if key not in kept]:
            self._drop_each(key, dropped)
        self._scopes_in, self._scopes_out = scopes, thinned
        return thinned

    def _each_lists(
        self,
        key: str,
        items: list[Any],
        outputs: list[Any],
        changed: list[tuple[str, bytes]],
        dropped: list[str],
    ) -> None:
        """Encode what is new in one foreach's lists: its items once, each output once.

        The run actor only appends to the outputs (a new list each time, the
        same objects in it): a list that is not the last one plus more (other
        items, fewer outputs, another last output) is encoded again whole.
        """
        lists = self._each.get(key)
        count = 0 if lists is None else lists.count
        if (
            lists is None
            or lists.items is not items
            or len(outputs) < count
            or (count and outputs[count - 1] is not lists.last)
        ):
            if lists is not None:
                self._drop_each(key, dropped)
            lists = self._each[key] = _EachLists(items)
            self._each_part(key, -1, "e" + key, items, changed)
            count = 0
        for index in range(count, len(outputs)):
            self._each_part(key, index, f"o{index}:{key}", outputs[index], changed)
        lists.count = len(outputs)
        lists.last = outputs[-1] if outputs else None

    def _each_part(
        self, key: str, index: int, name: str, value: Any, changed: list[tuple[str, bytes]]
    ) -> None:
        frame = _frame(name, _packb(value))
        self._each_frames.setdefault(key, {})[index] = frame
        self._each_dirty.add((key, -1 if index < 0 else index // _PAGE))
        changed.append((name, frame))

    def _drop_each(self, key: str, dropped: list[str]) -> None:
        """A foreach's lists went (it ended, or starts again): their parts go."""
        lists = self._each.pop(key)
        dropped.append("e" + key)
        dropped.extend(f"o{index}:{key}" for index in range(lists.count))
        del self._each_frames[key]
        pages = [page for page in self._each_pages if page[0] == key]
        for page in pages:
            del self._each_pages[page]
        self._each_dirty = {page for page in self._each_dirty if page[0] != key}

    def _encode_suspended(
        self,
        suspended: dict[str, Any],
        ids: dict[str, Any] | None,
        changed: list[tuple[str, bytes]],
        dropped: list[str],
    ) -> None:
        """Encode the pages of ``suspended`` whose entries changed since the last record.

        The entries go in parts of up to ``_SUSPENDED_PAGE`` each, by ordinal: a suspension
        or a resume encodes one page, and a record written whole (a new encoder,
        as at every resume) writes a part per ``_SUSPENDED_PAGE`` entries, not one each. An
        entry keeps its ordinal while it stays (a changed payload stays where it
        was in the dict); one that comes, or comes back, gets the next, as it
        goes to the end of the dict. What the announcements do not explain (the
        dict emptied at the run's end, a first record) encodes every entry.

        ``ids`` are the run's ``suspensions`` (``None``: none): each page's go in a
        part of their own (``n<page>``), written when that page is.
        """
        announced, self._suspended_announced = self._suspended_announced, []
        if suspended is self._suspended and ids is self._suspended_ids:
            return
        entries, keys, dirty = self._suspended_entries, self._suspended_keys, self._suspended_dirty
        numbers = self._suspension_ids
        if ids is None:
            ids = {}
        # Ids change with their entries (a suspension gets its id as it comes): ids that
        # changed alone are not explained by the announcements.
        explained = self._suspended is not None and (
            suspended is not self._suspended or ids is self._suspended_ids
        )
        if explained:
            touched: dict[str, None] = {}
            for key, gone in announced:
                entry = entries.pop(key, None) if gone else None
                if entry is not None:
                    del keys[entry[0]]
                    numbers.pop(key, None)
                    dirty.add(entry[0] // _SUSPENDED_PAGE)
                touched[key] = None
            for key in touched:
                if key in suspended:  # a changed entry keeps its ordinal; a new one, the next
                    self._suspended_entry(key, suspended[key], ids.get(key))
                elif key in entries:
                    explained = False
            explained = explained and len(entries) == len(suspended)
        if not explained:  # every entry anew
            dirty.update(self._suspended_pages)
            dirty.update(self._suspension_pages)
            entries.clear()
            keys.clear()
            numbers.clear()
            for key, payload in suspended.items():
                self._suspended_entry(key, payload, ids.get(key))
        self._suspended = suspended
        self._suspended_ids = ids or None
        pages = self._suspended_pages
        for page in sorted(dirty):
            first = page * _SUSPENDED_PAGE
            self._encode_suspension_ids(page, changed, dropped)
            # A map, in the entries' order: a list an entry made msgpack's reader build a
            # tracked container each, and a resume of a large foreach collect them.
            held = {
                keys[ordinal]: entries[keys[ordinal]][1]
                for ordinal in range(first, first + _SUSPENDED_PAGE)
                if ordinal in keys
            }
            self._put_page(pages, page, f"u{page}", held or None, changed=changed, dropped=dropped)
        dirty.clear()

    def _encode_suspension_ids(
        self, page: int, changed: list[tuple[str, bytes]], dropped: list[str]
    ) -> None:
        """Encode the ids of the suspensions of one page of ``suspended`` (if it has any).

        A list in the order of the page's entries, nil for one without: the keys are
        the page's already (a few bytes an entry, not a key's again).
        """
        keys, numbers = self._suspended_keys, self._suspension_ids
        first = page * _SUSPENDED_PAGE
        held = [
            numbers.get(key)
            for ordinal in range(first, first + _SUSPENDED_PAGE)
            if (key := keys.get(ordinal)) is not None
        ]
        any_held = any(number is not None for number in held)
        self._put_page(
            self._suspension_pages,
            page,
            f"n{page}",
            held if any_held else None,
            changed=changed,
            dropped=dropped,
        )

    def _put_page(
        self,
        pages: dict[int, bytes],
        page: int,
        name: str,
        held: Any,
        *,
        changed: list[tuple[str, bytes]],
        dropped: list[str],
    ) -> None:
        """Keep ``page``'s frame of ``held`` in ``pages``, or drop the page if ``held`` is None.

        A frame that differs from the kept one is noted in ``changed``, a page that
        goes in ``dropped``; either way the joined bytes are made anew.
        """
        if held is None:
            if pages.pop(page, None) is not None:
                dropped.append(name)
                self._suspended_bytes = None
            return
        frame = _frame(name, _packb(held))
        if pages.get(page) != frame:
            pages[page] = frame
            changed.append((name, frame))
            self._suspended_bytes = None

    def _suspended_entry(self, key: str, payload: Any, number: Any = None) -> None:
        if number is None:
            self._suspension_ids.pop(key, None)
        else:
            self._suspension_ids[key] = number
        entry = self._suspended_entries.get(key)
        if entry is None:
            ordinal = self._suspended_next
            self._suspended_next += 1
            self._suspended_keys[ordinal] = key
        else:
            ordinal = entry[0]
        self._suspended_entries[key] = (ordinal, payload)
        self._suspended_dirty.add(ordinal // _SUSPENDED_PAGE)

    def _value_part(self, name: str, payload: bytes, changed: list[tuple[str, bytes]]) -> None:
        frame = _frame("v" + name, payload)
        if self._value_frames.get(name) != frame:
            self._value_frames[name] = frame
            changed.append(("v" + name, frame))
            self._values_bytes = None

    def _encode_fixed(self, fields: dict[str, Any], changed: list[tuple[str, bytes]]) -> None:
        """Take the fields that never change out of the head, into a part of their own."""
        fixed = tuple(map(fields.pop, _FIXED_KEYS, _NO_FIXED))
        if any(map(is_not, fixed, self._fixed)):
            present = {
                key: value
                for key, value in zip(_FIXED_KEYS, fixed, strict=True)
                if value is not _MISSING
            }
            frame = _frame("f", _packb(present)) if present else b""
            if frame != self._fixed_frame:
                self._fixed_frame = frame
                if frame:
                    changed.append(("f", frame))
            self._fixed = fixed

    def _encode_items(
        self, fields: dict[str, Any], changed: list[tuple[str, bytes]], dropped: list[str]
    ) -> int | None:
        """Encode a foreach's finished items as parts; the length of its lists, or ``None``.

        Takes the lists out of the head's ``progress``, when they are a foreach's.
        """
        progress = fields.get("progress")
        announced, self._announced = self._announced, []
        outputs = progress.get("outputs") if type(progress) is dict else None
        done = progress.get("done") if type(progress) is dict else None
        if type(outputs) is not list or type(done) is not list or len(outputs) != len(done):
            self._set_items({}, changed, dropped)
            self._progress = self._outputs = self._done = None
            return None
        assert type(progress) is dict
        if progress is self._progress and outputs is self._outputs and done is self._done:
            for index in announced:
                if 0 <= index < len(done) and done[index] is True:
                    frame = _frame(f"i{index}", _packb(outputs[index]))
                    if self._items.get(index) != frame:
                        self._items[index] = frame
                        self._dirty_pages.add(index // _PAGE)
                        changed.append((f"i{index}", frame))
            # A check that no item changed unannounced (only the run actor's _item_done
            # changes them, and it announces): counting every flag at every record made a
            # foreach quadratic (a 32,000-item one spent seconds counting), so the count is
            # made once per _PAGE items encoded, and at every record with CHECK_PARTS.
            encoded = len(self._items)
            if CHECK_PARTS or encoded - self._counted_at >= _PAGE or encoded == len(done):
                self._counted_at = encoded
                if done.count(True) != encoded:
                    self._progress = None  # an item changed unannounced: look at them all
        if progress is not self._progress:
            if any(
                flag is not True and (flag is not False or output is not None)
                for flag, output in zip(done, outputs, strict=True)
            ):
                # Not the lists of a foreach as the run actor keeps them: whole, in the head.
                self._set_items({}, changed, dropped)
                self._progress = self._outputs = self._done = None
                return None
            items = {
                index: _frame(f"i{index}", _packb(output))
                for index, (flag, output) in enumerate(zip(done, outputs, strict=True))
                if flag
            }
            self._set_items(items, changed, dropped)
            self._progress, self._outputs, self._done = progress, outputs, done
            self._counted_at = len(items)
        fields["progress"] = {
            key: value for key, value in progress.items() if key not in _ITEM_LISTS
        }
        return len(done)

    def _set_items(
        self, items: dict[int, bytes], changed: list[tuple[str, bytes]], dropped: list[str]
    ) -> None:
        """Replace every item part by ``items``, noting what changed."""
        old = self._items
        if not old and not items:
            return
        dropped.extend(f"i{index}" for index in old if index not in items)
        changed.extend(
            (f"i{index}", frame) for index, frame in items.items() if old.get(index) != frame
        )
        self._items = items
        self._pages = {}
        self._dirty_pages = {index // _PAGE for index in items}

    def _joined(self) -> tuple[bytes, ...]:
        """The bytes of every part but the head, joined by kind (and items by page)."""
        if self._steps_bytes is None:
            self._steps_bytes = b"".join(self._step_frames.values())
        if self._values_bytes is None:
            self._values_bytes = b"".join(self._value_frames.values())
        if self._dirty_pages:
            pages = self._pages
            for page in self._dirty_pages:
                joined = _join_page(self._items, page)
                if joined:
                    pages[page] = joined
                else:
                    pages.pop(page, None)
            self._dirty_pages = set()
        if self._each_dirty:
            for key, page in self._each_dirty:
                frames = self._each_frames[key]
                self._each_pages[(key, page)] = frames[-1] if page < 0 else _join_page(frames, page)
            self._each_dirty = set()
        if self._suspended_bytes is None:
            self._suspended_bytes = b"".join(
                [*self._suspended_pages.values(), *self._suspension_pages.values()]
            )
        return (
            self._fixed_frame,
            self._steps_bytes,
            self._values_bytes,
            *self._pages.values(),
            *self._each_pages.values(),
            self._suspended_bytes,
        )


def _join_page(frames: dict[int, bytes], page: int) -> bytes:
    """The frames of the indices of one page (``_PAGE`` of them) in order, joined."""
    first = page * _PAGE
    return b"".join([frames[index] for index in range(first, first + _PAGE) if index in frames])


def _reference_bytes(snapshot: Mapping[str, Any]) -> bytes:
    """The bytes a frozen snapshot is checked against: msgpack's, not through ``_packb``.

    A check of the tests' (:data:`CHECK_PARTS`), not an encoding a store gets: kept apart
    from :func:`_packb`, which a test counts to measure what runs encode.
    """
    data: bytes = msgpack.packb(snapshot, use_bin_type=True)
    return data


class _Frozen(dict[str, Any]):
    """A snapshot as it was at one record: a copy of its mapping, encoded only when read.

    The copy is the record's holder too (a dict with two slots), not a dict held
    by another object: one object fewer per transition of every run for the
    garbage collector. Its slots are set when used: ``_data`` once encoded,
    ``_reference`` by :meth:`seal`.

    With :data:`CHECK_PARTS`, :meth:`seal` keeps the bytes the snapshot had when
    it was frozen, and every later encoding must give the same: a frozen
    snapshot that changed (the run actor changed in place a value it shares) fails.
    """

    __slots__ = ("_data", "_reference")

    def seal(self) -> Self:
        """Done filling the copy in: with :data:`CHECK_PARTS`, keep its bytes to check."""
        if CHECK_PARTS:
            self._reference = _reference_bytes(self)
        return self

    def encoded(self) -> bytes:
        """The snapshot's bytes (format 3), encoded on the first call and kept.

        Raises:
            SnapshotEncodingError: if some value cannot be encoded.
        """
        data: bytes | None = getattr(self, "_data", None)
        if data is None:
            # Two threads may both encode it: the same bytes, and either is kept.
            data = self._data = encode(self)
        self.check()
        return data

    def check(self) -> None:
        """With :data:`CHECK_PARTS`: fail if the snapshot is no longer what it was when frozen."""
        reference: bytes | None = getattr(self, "_reference", None)
        if reference is not None and _reference_bytes(self) != reference:
            raise AssertionError(
                f"the frozen snapshot of run {self['run_id']!r} at seq "
                f"{self['seq']} changed after it was taken"
            )


class _Pieces:
    """A parted snapshot's bytes as the pieces they are joined from, joined when first read.

    The pieces are the encoder's at one record (bytes never change); joining them
    costs the whole snapshot's length, which for a foreach of n items grows with
    n at each of its n records, while a store that writes parts reads only those.
    """

    __slots__ = ("_data", "_pieces")

    def __init__(self, pieces: tuple[bytes, ...]) -> None:
        self._pieces: tuple[bytes, ...] | None = pieces
        self._data: bytes | None = None

    def encoded(self) -> bytes:
        """The bytes, joined on the first call and kept (two threads may both join)."""
        data = self._data
        if data is None:
            pieces = self._pieces
            if pieces is None:  # another thread joined them just now: _data is set first
                data = self._data
                assert data is not None
                return data
            data = self._data = b"".join(pieces)
            self._pieces = None
        return data


class _LazyRecord(SnapshotRecord):
    """A record whose ``data`` holds what makes its bytes when first read (then kept).

    ``data`` reads like a plain record's.
    """

    __slots__ = ()

    @property
    def data(self) -> bytes:
        """The snapshot's bytes, made on the first read and kept."""
        held = cast("bytes | _Frozen | _Pieces", tuple.__getitem__(self, 4))
        if isinstance(held, bytes):  # made by _replace(data=...)
            return held
        return held.encoded()


class PartedRecord(_LazyRecord):
    """A record in parts (:class:`IncrementalEncoder`'s) whose whole bytes are joined when read."""

    __slots__ = ()


class DeferredRecord(_LazyRecord):
    """A record whose bytes are encoded on first read, from a frozen copy of its snapshot.

    What :class:`SnapshotFreezer` makes for a store in memory: nothing needs
    bytes until somebody reads the run, and most records are replaced by the
    run's next one before anybody does.
    """

    __slots__ = ()


_DRIVEN: Final = frozenset({RunStatus.PENDING.value, RunStatus.RUNNING.value})
"""The statuses of a run whose actor drives it on: its next record replaces this one soon."""

_FEW_STEPS: Final = 4
"""A run with at most this many step records has them all looked at for each record in
memory (see :meth:`SnapshotFreezer._freeze_steps`); a longer one, only those that changed."""

_PROGRESS_SHARED: Final = 32
"""A foreach of n items copies its lists for a record in memory about this many times
(see :meth:`SnapshotFreezer._frozen_progress`): linear in n, where a copy at every record
was quadratic."""


class SnapshotFreezer:
    """Takes a run's successive records for a store in memory: frozen copies, encoded lazily.

    The run actor's counterpart of :class:`IncrementalEncoder` (the same
    ``next_record`` and ``item_done``) for a store that keeps records as
    objects. Each record holds a copy of the snapshot as it was at that
    moment: its top-level fields copied (the run actor replaces them), each
    step record that changed since the last record copied while the step is
    open and shared once it settled (the run actor changes a step's record in
    place until the step settles, and replaces it after: see
    :func:`_changed_steps` and :func:`_kept_step`), and otherwise shared with
    the record before, and a foreach's lists of item outputs copied (changed in place
    too). So a transition costs a pass over the steps at C speed, not an
    encoding of every step record, and no msgpack at all until somebody reads
    the run's bytes (:class:`DeferredRecord`). The record that ends the run's
    actor (the run ended, sleeps or suspends) is encoded at once: it stays in
    the store, and bytes cost the garbage collector nothing. Values inside are shared, never
    copied: the run actor replaces them, never changes them in place.

    Args:
        snapshot: The snapshot the records are taken of; the caller keeps
            changing it between records.
    """

    __slots__ = (
        "_copies",
        "_last",
        "_paths",
        "_progress",
        "_progress_copy",
        "_progress_kept",
        "_seen",
        "_snapshot",
        "_steps",
        "_unsettled",
    )

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        # Tuples where they are replaced, not changed: the collector stops tracking a
        # tuple of strings or ints, never a list, and one is kept by each run in flight.
        self._paths: tuple[str, ...] = ()
        self._copies: list[dict[str, Any]] | None = None  # each step record as last frozen
        self._seen: tuple[dict[str, Any], ...] = ()  # the step records, when last frozen
        self._unsettled: tuple[int, ...] = ()  # indices of the copies not settled
        self._steps: dict[str, Any] = {}  # the frozen steps of the last record
        self._last: _Frozen | None = None
        # A foreach's progress (its lists of outputs and done flags), the copy of it the
        # records share, and how many records have shared that copy.
        self._progress: Any = None
        self._progress_copy: dict[str, Any] | None = None
        self._progress_kept = 0

    def item_done(self, index: int) -> None:
        """Nothing to note: a record copies a foreach's lists whole (see ``_frozen_progress``)."""

    def suspended_changed(self, key: str, *, gone: bool = False) -> None:
        """Nothing to note: a record shares the run's ``suspended``, which is replaced."""

    def start_over(self) -> None:
        """Nothing to do: each record stands alone (a frozen copy, or whole bytes)."""

    def next_record(self, now: float) -> SnapshotRecord:
        """Number the snapshot as the run's next one, taken at ``now``, and return its record."""
        snapshot = self._snapshot
        snapshot["seq"] += 1
        snapshot["updated_at"] = now
        if CHECK_PARTS and self._last is not None:
            self._last.check()
        if snapshot["status"] not in _DRIVEN:
            # The run actor lets go of the run: its record stays in the store, maybe for
            # long, as bytes (one object) rather than a tree of dicts that every full
            # collection of the cyclic garbage collector walks. Encoded from the
            # snapshot itself: bytes need no frozen copy.
            self._last = None
            # record_of's, inline: at the end of every run.
            ended: SnapshotRecord = _record_values(
                SnapshotRecord, snapshot, encode(snapshot), None, None
            )
            return ended
        frozen = _Frozen(snapshot)
        steps = snapshot["steps"]
        if len(steps) <= _FEW_STEPS and self._copies is None:
            # _freeze_steps's first case, inline and without a comprehension (a call in
            # Python 3.11): at every transition of every run of a few steps.
            kept: dict[str, Any] = {}
            for path, step in steps.items():
                kept[path] = step if step.get("status") in _SETTLED_STEP else step.copy()
            frozen["steps"] = kept
        else:
            frozen["steps"] = self._freeze_steps(steps)
        progress = frozen["progress"]
        if type(progress) is dict and ("outputs" in progress or "done" in progress):
            frozen["progress"] = self._frozen_progress(progress, snapshot["status"])
        if CHECK_PARTS:
            frozen.seal()
        self._last = frozen
        # _record_values's, inline for a run its actor drives (no wake time, no key, no
        # parts, its deadline kept): at every transition of every run in memory.
        entry = snapshot.get("queue")
        if entry:
            queue, queue_key = entry["name"], entry.get("key")
            priority = int(entry.get("priority", 0))
        else:
            queue = queue_key = None
            priority = 0
        record: DeferredRecord = _new_tuple(
            DeferredRecord,
            (
                snapshot["run_id"],
                snapshot["workflow_id"],
                snapshot["seq"],
                snapshot["status"],
                frozen,
                snapshot["created_at"],
                now,
                snapshot["trace_id"],
                None,  # wake_at: only a waiting run's
                None,
                queue,
                queue_key,
                priority,
                snapshot.get("resource_id"),
                None,
                snapshot.get("deadline"),
                (),
            ),
        )
        return record

    def _frozen_progress(self, progress: dict[str, Any], status: str) -> dict[str, Any]:
        """A copy of a foreach's progress for a record: the last one, or a new one.

        Copying the lists of a foreach of n items at each of its n records made it
        quadratic (a foreach of 32,000 items took 16 s in memory, of 2,000 0.3 s).
        A record taken while the run actor drives the run shares the last copy until
        n / 32 more records have been taken, so each record may show up to that many
        finished items as not yet done. Only a resume or a restart acts on a record's
        progress, and they start from the record a run suspended or ended with, which
        is copied afresh, whole (a run whose actor crashed is failed from its last
        record, which lagged its actor before too). A copy is never changed once made.
        """
        kept = self._progress_copy
        if (
            kept is not None
            and progress is self._progress
            and status in _DRIVEN
            and self._progress_kept < len(progress.get("done") or ()) // _PROGRESS_SHARED
        ):
            self._progress_kept += 1
            return kept
        copy = {
            key: value.copy() if type(value) is list else value for key, value in progress.items()
        }
        self._progress, self._progress_copy, self._progress_kept = progress, copy, 0
        return copy

    def _freeze_steps(self, steps: dict[str, Any]) -> dict[str, Any]:
        if len(steps) <= _FEW_STEPS:
            # Few steps: each open one copied, each settled one shared, without finding out
            # which changed since the last record, which costs more than it saves here.
            if self._copies is not None:  # had more: what was noted of them is stale
                self._paths, self._seen, self._unsettled, self._copies = (), (), (), None
                self._steps = {}
            # (A settled record changed in place after all is caught as before, with
            # CHECK_PARTS: the last record, which shares it, no longer encodes the same.)
            return {
                path: record if record.get("status") in _SETTLED_STEP else record.copy()
                for path, record in steps.items()
            }
        paths = tuple(steps)
        records = tuple(steps.values())
        known, copies = self._paths, self._copies
        if copies is None:  # made with the first step
            copies = self._copies = []
        if paths[: len(known)] == known:
            # The usual case: the steps of last time, in the same order, and maybe new
            # ones. An unchanged record is shared with the record before.
            changed = _changed_steps(records, self._seen, copies, self._unsettled)
            added = range(len(known), len(paths))
            if changed or added:
                frozen = self._steps.copy()
                for index in changed:
                    frozen[paths[index]] = copies[index] = _kept_step(records[index])
                for index in added:
                    record = _kept_step(records[index])
                    copies.append(record)
                    frozen[paths[index]] = record
                self._unsettled = _unsettled(copies, sorted({*self._unsettled, *changed, *added}))
            else:
                frozen = self._steps
        else:  # a step ran again (moved to the end) or went: copy them all
            copies = self._copies = list(map(_kept_step, records))
            frozen = dict(zip(paths, copies, strict=True))
            self._unsettled = _unsettled(copies, range(len(copies)))
        if CHECK_PARTS and frozen != steps:
            raise AssertionError(
                f"the frozen steps of run {self._snapshot['run_id']!r} at seq "
                f"{self._snapshot['seq']} differ from the run's: a settled step's record "
                "was changed in place"
            )
        self._paths = paths
        self._seen = records
        self._steps = frozen
        return frozen


_RECORD_FIELDS: Final = (
    "run_id",
    "workflow_id",
    "seq",
    "status",
    "data",
    "created_at",
    "updated_at",
    "trace_id",
    "wake_at",
    "parts",
    "queue",
    "queue_key",
    "priority",
    "resource_id",
    "idempotency_key",
    "deadline",
    "taken",
)
if SnapshotRecord._fields != _RECORD_FIELDS:  # pragma: no cover - a change of base.py
    raise ImportError(f"SnapshotRecord's fields changed: {SnapshotRecord._fields}")

_new_tuple = tuple.__new__


def _record_values(
    kind: type[Any], snapshot: Snapshot, data: Any, parts: SnapshotParts | None, key: str | None
) -> Any:
    """A record of ``kind`` for ``snapshot``, built from its values in field order.

    ``tuple.__new__`` with the values in order: a named tuple's keyword
    ``__new__`` costs over a microsecond for its seventeen fields, at every
    transition of every run. ``_RECORD_FIELDS`` holds the order, checked at import.
    (:meth:`SnapshotFreezer.next_record` builds a driven run's record the same way,
    inline: ``test_snapshot.py`` holds the two alike.)
    """
    status = snapshot["status"]
    entry = snapshot.get("queue")
    if entry:
        queue, queue_key, priority = entry["name"], entry.get("key"), int(entry.get("priority", 0))
    else:
        queue = queue_key = None
        priority = 0
    return _new_tuple(
        kind,
        (
            snapshot["run_id"],
            snapshot["workflow_id"],
            snapshot["seq"],
            status,
            data,
            snapshot["created_at"],
            snapshot["updated_at"],
            snapshot["trace_id"],
            snapshot["wake_at"] if status == RunStatus.WAITING else None,
            parts,
            queue,
            queue_key,
            priority,
            snapshot.get("resource_id"),
            key,
            None if status in TERMINAL_STATUSES else snapshot.get("deadline"),
            (),
        ),
    )


def first_frozen_record(snapshot: Snapshot) -> SnapshotRecord | None:
    """A new run's first record for a store in memory: a frozen copy, encoded when read.

    ``None`` if the run's input or state is not plainly storable (see
    :func:`find_unencodable`): the caller encodes the snapshot, which reports
    what. Its other values are callboard's own or were checked when given
    (request context, metadata, ids, keys). The run actor then takes the
    snapshot on; it adds step records to its own ``steps``, so the copy gets a
    mapping of its own.
    """
    if snapshot["steps"] or snapshot["progress"] is not None:
        return None  # not a first snapshot
    state = snapshot["state"]
    if not (_plainly_encodable(snapshot["input"]) and (state is None or _plainly_encodable(state))):
        return None
    frozen = _Frozen(snapshot)
    frozen["steps"] = {}
    record: DeferredRecord = _record_values(
        DeferredRecord, snapshot, frozen.seal(), None, snapshot.get("idempotency_key")
    )
    return record


def copy_plain(value: Any) -> Any:
    """A deep copy of plain data (checked with :func:`check_encodable` first).

    Tuples come back as lists, as they would from a snapshot.
    """
    return msgpack.unpackb(_packb(value), raw=False)


def record_of(
    snapshot: Snapshot, *, data: bytes | None = None, parts: SnapshotParts | None = None
) -> SnapshotRecord:
    """The store record of a snapshot: its bytes and the fields queries filter on.

    Args:
        snapshot: The snapshot.
        data: Its bytes, if already encoded (by an :class:`IncrementalEncoder`);
            else it is encoded whole.
        parts: What changed since the run's record before (with ``data``).

    Raises:
        SnapshotEncodingError: if some value cannot be encoded.
    """
    record: SnapshotRecord = _record_values(
        SnapshotRecord, snapshot, encode(snapshot) if data is None else data, parts, None
    )
    return record


_NO_QUEUE: Final[Mapping[str, Any]] = {}
"""A result's queue fields for a run in no queue (most): none, without a call."""


def _queue_result(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """A result's queue fields: none for a run in no queue."""
    entry = snapshot.get("queue")
    if not entry:
        return {}
    return {
        "queue": entry["name"],
        "queue_key": entry.get("key"),
        "priority": entry.get("priority"),
    }


def close_open_steps(
    snapshot: Snapshot, status: str, now: float, error: dict[str, Any] | None = None
) -> None:
    """End every step still running, waiting or suspended with ``status`` (and ``error``).

    A step waiting out a retry's back-off carries its last attempt's error: a step
    canceled keeps none (``error`` ``None``), as a step canceled in its body.
    """
    for step in snapshot["steps"].values():
        if step["status"] in OPEN_STEP_STATUSES:
            step["status"] = status
            step["ended_at"] = now
            step["error"] = error


def suspend_at(snapshot: Snapshot, key: str, payload: Any) -> None:
    """Note that a step (or foreach item) suspended at ``key`` with ``payload``: a new suspension.

    Its id (see :func:`suspension_of`) is the seq of the run's next record, the
    first that holds it. Both dicts are replaced, not changed in place (records
    in memory share them).
    """
    snapshot["suspended"] = {**snapshot["suspended"], key: payload}
    snapshot["suspensions"] = {**snapshot.get("suspensions", {}), key: snapshot["seq"] + 1}


def forget_suspensions(snapshot: Snapshot, keys: Collection[str]) -> None:
    """Forget the ids of the suspensions at ``keys``, which left ``suspended`` (or will)."""
    ids = snapshot.get("suspensions")
    if not ids or not any(key in ids for key in keys):
        return
    gone = keys if isinstance(keys, set | frozenset) else frozenset(keys)
    left = {key: number for key, number in ids.items() if key not in gone}
    if left:
        snapshot["suspensions"] = left
    else:
        del snapshot["suspensions"]


def suspension_of(snapshot: Snapshot, path: str) -> int | None:
    """The id of the suspension that waits at ``path``: the seq of the first record that held it.

    A run's seqs only grow (through recoveries, other workers and restarts), so
    two suspensions at one path (a loop's passes, a step resumed that suspends
    again) never share an id, and one read waiting in a record of seq ``s`` has
    an id of at most ``s``: a resume read at ``s`` of a suspension whose id is
    greater was read of another, which ended since. ``None`` when none waits at
    ``path``, or it was recorded by a callboard before ids (told apart as before).
    """
    ids = snapshot.get("suspensions")
    number = ids.get(path) if ids else None
    return number if type(number) is int else None


def read_another(snapshot: Snapshot, path: str, read_seq: int | None) -> bool:
    """Whether a resume of ``path`` read in the record of seq ``read_seq`` read another suspension.

    That is, the one that waits at ``path`` now came after it (see
    :func:`suspension_of`); ``False`` when either is not known.
    """
    number = suspension_of(snapshot, path)
    return number is not None and read_seq is not None and read_seq < number


def mark_failed(snapshot: Snapshot, error: dict[str, Any], now: float) -> None:
    """Mark a run failed with ``error``: no result, and a step not yet ended fails too."""
    close_open_steps(snapshot, StepStatus.FAILED.value, now, error)
    snapshot["status"] = RunStatus.FAILED.value
    snapshot["error"] = error
    snapshot["result"] = None
    snapshot["suspended"] = {}
    snapshot.pop("suspensions", None)
    snapshot["wake_at"] = None


def mark_canceled(snapshot: Snapshot, now: float) -> None:
    """Mark a run canceled: no result, no error, and a step not yet ended is canceled."""
    close_open_steps(snapshot, StepStatus.CANCELED.value, now)
    snapshot["status"] = RunStatus.CANCELED.value
    snapshot["result"] = None
    snapshot["suspended"] = {}
    snapshot.pop("suspensions", None)
    snapshot["wake_at"] = None
    snapshot["resume"] = None


def run_deadline(snapshot: Snapshot) -> float | None:
    """When the run's ``run_timeout`` is up (epoch seconds), if it has one and began to execute.

    A value that is not a number (a damaged or foreign snapshot) is taken for none.
    """
    deadline = snapshot.get("deadline")
    if isinstance(deadline, int | float) and not isinstance(deadline, bool):
        return float(deadline)
    return None


def run_timeout_of(snapshot: Snapshot) -> float | None:
    """The run's ``run_timeout`` in seconds, if it has one.

    A value that is not a positive number (a damaged or foreign snapshot) is taken for none.
    """
    timeout = snapshot.get("run_timeout")
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0:
        return None
    return float(timeout)


def fix_deadline(snapshot: Snapshot, now: float) -> float | None:
    """Set the run's deadline, ``now`` plus its ``run_timeout``, unless it has one; return it.

    Called when the run begins to execute (or goes on after a restart, which
    drops the old one): the time a run waited in a queue does not count.
    """
    deadline = run_deadline(snapshot)
    if deadline is not None:
        return deadline
    timeout = run_timeout_of(snapshot)
    if timeout is None:
        return None
    snapshot["deadline"] = deadline = now + timeout
    return deadline


def deadline_error(snapshot: Snapshot) -> dict[str, Any]:
    """The ``ErrorInfo`` (as a snapshot holds it) of a run canceled at its deadline."""
    timeout = snapshot.get("run_timeout")
    error = RunDeadlineError(
        f"run {snapshot['run_id']!r} exceeded its timeout of {timeout:g} s and was canceled",
        run_id=snapshot["run_id"],
    )
    return ErrorInfo.from_exception(error, with_traceback=False).model_dump()


def mark_deadline_passed(snapshot: Snapshot, now: float) -> None:
    """Mark a run canceled at its deadline: as :func:`mark_canceled`, its error saying why."""
    mark_canceled(snapshot, now)
    snapshot["error"] = deadline_error(snapshot)


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
    record: SnapshotRecord,
    error: dict[str, Any],
    now: float,
    *,
    keep_bytes: bool,
    status: str = RunStatus.FAILED.value,
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
        status: How the run ends: ``failed``, or ``canceled`` (by an operator
            who cancels a run whose snapshot cannot be read).
    """
    snapshot: dict[str, Any] = {
        "run_id": record.run_id,
        "workflow_id": record.workflow_id,
        "seq": record.seq,
        "status": status,
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
        "stand_in": True,  # nothing of the run's own: no input, no steps to go on from
    }
    if keep_bytes:
        snapshot["damaged"] = record.data
    return next_record(snapshot, now)  # type: ignore[arg-type]


def is_stand_in(snapshot: Snapshot) -> bool:
    """Whether a snapshot was built by :func:`stand_in_record`: it holds nothing of its run's.

    Those written before they were marked have the zero span id and no steps.
    """
    return bool(
        snapshot.get("stand_in")
        or "damaged" in snapshot
        or (snapshot["span_id"] == "0" * 16 and not snapshot["steps"] and snapshot["input"] is None)
    )


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
    if _plainly_encodable(value):
        return None
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


_INT_RANGE: Final = range(-(2**63), 2**64)
_SCALARS: Final = frozenset({float, bool, bytes, type(None)})
"""The exact types msgpack stores whatever their value."""


def _plainly_encodable(value: Any) -> bool:
    """Whether ``value`` is plain data of the exact built-in types, every part fit to store.

    The quick pass of :func:`find_unencodable`: no path is built, and a type
    is told by identity. ``False`` means only "look closer": a subclass (an
    ``IntEnum``, a ``str`` subclass) is judged by the full walk.

    A dict (a start's usual input) has its keys and scalar values checked in one
    loop, in half the time of stacking each value; only the containers (and
    anything else) it holds go on to the walk.
    """
    stack: list[tuple[Any, int]]
    if type(value) is dict:
        stack = []
        for key, element in value.items():
            if type(key) is not str or not (key.isascii() or _is_utf8(key)):
                return False
            kind = type(element)
            if kind is str:
                if not (element.isascii() or _is_utf8(element)):
                    return False
            elif kind is int:
                if element not in _INT_RANGE:
                    return False
            elif kind not in _SCALARS:
                stack.append((element, 1))
        if not stack:
            return True
    else:
        stack = [(value, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        kind = type(item)
        if kind is str:
            if not item.isascii() and not _is_utf8(item):
                return False
        elif kind is dict:
            if depth >= MAX_NESTING:
                return False
            for key, element in item.items():
                if type(key) is not str or not (key.isascii() or _is_utf8(key)):
                    return False
                push((element, depth + 1))
        elif kind is list or kind is tuple:
            if depth >= MAX_NESTING:
                return False
            for element in item:
                push((element, depth + 1))
        elif kind is int:
            if item not in _INT_RANGE:
                return False
        elif kind not in _SCALARS:
            return False
    return True


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


def read_result(
    record: SnapshotRecord | None, workflow_id: str, *, own_bytes: bool = False
) -> WorkflowResult | None:
    """The public result of a stored record, if it belongs to ``workflow_id``.

    Args:
        record: The record read from the store, or ``None``.
        workflow_id: The workflow the caller reads runs of.
        own_bytes: The record's bytes were encoded by this process and never left
            it (a store in memory): the checksum and checks of :func:`decode`, which
            catch damage on a disk, a wire or another program's writes, are left out.
            The result is still validated whole (:func:`to_result`).
    """
    if record is None or record.workflow_id != workflow_id:
        return None
    try:
        return to_result(
            _unpack_own(record.data, record.run_id)
            if own_bytes
            else decode(record.data, record.run_id)
        )
    except SnapshotFormatError as exc:
        raise SnapshotFormatError(
            f"run {record.run_id!r} cannot be read: {exc}", run_id=record.run_id
        ) from exc


def _unpack_own(data: bytes, run_id: str) -> Snapshot:
    """A snapshot from bytes this process encoded and kept in memory (see :func:`read_result`).

    Without the checksum and the check of every key: still a mapping of the run
    it is stored under (a record a program put in the store itself is told
    apart, as :func:`decode` tells it).
    """
    snapshot = unpack(data, checksum=False)
    if snapshot.get("run_id") != run_id:
        raise SnapshotFormatError(
            f"snapshot is not valid: it names run {snapshot.get('run_id')!r}, not the run "
            "stored under that id",
            run_id=run_id,
        )
    own: Snapshot = snapshot  # type: ignore[assignment]
    return own


def to_result(snapshot: Snapshot) -> WorkflowResult:
    """Build the public :class:`WorkflowResult` from a decoded snapshot.

    One pydantic validation of the whole result: faster than building each
    nested model in Python, and a snapshot that does not hold what it should
    is reported instead of passed on.

    Raises:
        SnapshotFormatError: if the snapshot's content is not a valid result.
    """
    try:
        result: WorkflowResult = _validate_result(
            {
                "run_id": snapshot["run_id"],
                "workflow_id": snapshot["workflow_id"],
                "status": snapshot["status"],
                "input": snapshot["input"],
                "result": snapshot["result"],
                "error": snapshot["error"],
                "steps": public_steps(snapshot["steps"]),
                "suspended": snapshot.get("suspended") or {},
                "waiting_until": _moment(snapshot.get("wake_at"))
                if snapshot["status"] == RunStatus.WAITING
                else None,
                "state": snapshot["state"] if snapshot["include_state"] else None,
                "trace_id": snapshot["trace_id"],
                "span_id": snapshot["span_id"],
                "created_at": snapshot["created_at"],
                "updated_at": snapshot["updated_at"],
                **(_queue_result(snapshot) if "queue" in snapshot else _NO_QUEUE),
                "resource_id": snapshot.get("resource_id"),
                "time_traveled_from": snapshot.get("time_traveled_from"),
                "restarts": snapshot.get("restarts", 0),
                "idempotency_key": snapshot.get("idempotency_key"),
                "version": snapshot.get("version"),
                "fingerprint": snapshot.get("fingerprint"),
            }
        )
    except (KeyError, TypeError, ValidationError) as exc:
        raise SnapshotFormatError(
            f"snapshot of run {snapshot.get('run_id')!r} does not hold a valid result: {exc}"
        ) from exc
    return result


def _public_step(step: StepSnapshot) -> Mapping[str, Any]:
    """A step record with only what a :class:`StepResult` shows (no ``start_state``)."""
    if step.keys() <= _STEP_RESULT_KEYS:
        return step
    return {key: value for key, value in step.items() if key in _STEP_RESULT_KEYS}


def public_steps(steps: dict[str, StepSnapshot]) -> Mapping[str, Mapping[str, Any]]:
    """The step records as a result (or a hook's outcome) shows them.

    Without what only the runtime reads (``start_state``), and without a key a
    later callboard may add to the records it writes on a shared store: a
    result of this one still reads them.
    """
    for step in steps.values():  # a loop, not all() over a generator: a call per step less
        if not step.keys() <= _STEP_RESULT_KEYS:
            return {path: _public_step(step) for path, step in steps.items()}
    return steps  # most runs: no state, or one that never changed


_STEP_RESULT_KEYS: Final = frozenset(StepResult.model_fields)

_validate_result: Final = WorkflowResult.__pydantic_validator__.validate_python
"""``WorkflowResult.model_validate`` without its Python frame (every read of a result)."""


def state_at(steps: Mapping[str, StepSnapshot], paths: Collection[str], final: Any) -> Any:
    """The run's state as it was when the first of ``paths`` to run began.

    A step that changed the state keeps in its record the state it began
    with (``start_state``), and the steps between two such steps left the
    state as it was: a step began with the ``start_state`` of the first
    record from its own on (records are in the order the steps began) that
    has one. Without one (no step changed the state since, or the records
    were written before callboard kept it), the run's state as it ended:
    ``final``. Without a record of any of ``paths`` (the run never reached
    them), ``final`` too.

    Args:
        steps: A snapshot's step records.
        paths: The paths of the steps of one plan node.
        final: The snapshot's state.
    """
    reached = False
    for path, record in steps.items():
        reached = reached or path in paths
        if reached and START_STATE in record:
            return record[START_STATE]
    return final


_STARTING: Final = frozenset({RunStatus.PENDING, RunStatus.RUNNING})
_STEP_GOING_ON: Final = frozenset({StepStatus.RUNNING, StepStatus.WAITING})


def run_events(
    snapshot: Snapshot,
    last_status: str,
    last_steps: dict[str, tuple[str, int, int]],
    first_seq: int = 1,
) -> list[RunEvent]:
    """The events between the last snapshot a watcher saw and this one.

    A change of status comes before the step events when the run (re)starts,
    and after them when it ends, sleeps or suspends, as it happened. Each
    event carries the time the snapshot gives it (a step's start or end, the
    run's last change), never the time it is told, so a replay keeps its times.

    Args:
        snapshot: The new snapshot.
        last_status: The run's status in the last one (``""`` for none).
        last_steps: Each step's status, attempts and loop iterations in the last one.
            Snapshots may be skipped (another process's watcher reads the newest
            only): a loop's step seen running at a later iteration ended the
            one before and started again, which is not a retry.
        first_seq: The number of the first event; the others follow it.
    """
    run_id, status = snapshot["run_id"], snapshot["status"]
    changed = _when(snapshot["updated_at"]) or datetime.now(UTC)
    events: list[RunEvent] = []
    seq = first_seq
    early = status != last_status and status in _STARTING
    if not last_status and not early:
        # A run told from its record alone, once it is past its start: every run
        # started pending, at its creation, and one with steps ran from its first.
        created = _when(snapshot["created_at"]) or changed
        events.append(
            RunEvent(type="status", run_id=run_id, status=RunStatus.PENDING, at=created, seq=seq)
        )
        seq += 1
        if snapshot["steps"]:
            began = [_when(step.get("started_at")) for step in snapshot["steps"].values()]
            # Not before its creation: a time-traveled run's first steps are copies,
            # started when the original's were.
            ran = max(min((when for when in began if when is not None), default=created), created)
            events.append(
                RunEvent(type="status", run_id=run_id, status=RunStatus.RUNNING, at=ran, seq=seq)
            )
            seq += 1
    if early:
        at = _when(snapshot["created_at"]) if status == RunStatus.PENDING else changed
        events.append(RunEvent(type="status", run_id=run_id, status=status, at=at, seq=seq))
        seq += 1
    # A run told from its record alone ran while its steps did: each step event carries
    # running (the end's status, told last, as a live watch tells it).
    replayed = not last_status and not early
    told: list[tuple[datetime, str, str, StepResult, str]] = []
    for path, step in snapshot["steps"].items():
        seen = last_steps.get(path)
        step_status, attempts = step["status"], step.get("attempts", 1)
        iterations = step.get("iterations") or 0
        if seen == (step_status, attempts, iterations):
            continue
        started = _when(step.get("started_at")) or changed
        kinds = _step_kinds(seen, (step_status, attempts, iterations), started, changed)
        if step_status not in _STEP_GOING_ON:
            kinds.append(("step_finished", _when(step.get("ended_at")) or changed))
        result = StepResult.model_validate(_public_step(step))
        for kind, at in kinds:
            if kind == "step_started" and step_status not in _STEP_GOING_ON:
                # A start told late (the step has ended since, unseen): the run was
                # running then, and the step's record read as a start's, not its end's.
                told.append((at, kind, path, _as_started(result), RunStatus.RUNNING))
            else:
                told.append((at, kind, path, result, RunStatus.RUNNING if replayed else status))
    if len(told) > 1:
        # In the order they happened, not the records': a nested workflow's record
        # comes before its steps', and it ended after its last one.
        told.sort(key=lambda event: event[0])
        _ends_after_their_steps(told)
    for at, kind, path, result, then in told:
        event = RunEvent(
            type=kind, run_id=run_id, status=then, path=path, step=result, at=at, seq=seq
        )
        events.append(event)
        seq += 1
    if status != last_status and not early:
        events.append(
            RunEvent(
                type="status",
                run_id=run_id,
                status=status,
                at=changed,
                seq=seq,
                result=snapshot["result"] if status == RunStatus.SUCCESS else None,
                error=snapshot["error"] if status == RunStatus.FAILED else None,
            )
        )
    return events


def _ends_after_their_steps(told: list[tuple[datetime, str, str, StepResult, str]]) -> None:
    """Among events of one time, move a nested workflow's end after its steps' events.

    Sorting by time keeps the records' order for events of one time, and a nested
    workflow's record comes before its steps': a cancel ends them at one clock
    reading, and a test kit's clock stands still while steps run.
    """
    at = 0
    while at < len(told):
        when, kind, path = told[at][0], told[at][1], told[at][2]
        if kind == "step_finished":
            prefix = path + "."
            last = at
            for later in range(at + 1, len(told)):
                if told[later][0] != when:
                    break
                if told[later][2].startswith(prefix):
                    last = later
            if last > at:
                told.insert(last, told.pop(at))
                continue  # what moved into this place is looked at in turn
        at += 1


def _step_kinds(
    seen: tuple[str, int, int] | None,
    now: tuple[str, int, int],
    started: datetime,
    changed: datetime,
) -> list[tuple[str, datetime]]:
    """What began since a step was last ``seen`` as it is ``now``: its start, a retry, a wait.

    Both are (status, attempts, loop iterations).
    """
    status, attempts, iterations = now
    if seen is None or (seen[0] != StepStatus.RUNNING and status == StepStatus.RUNNING):
        return [("step_started", started)]
    if seen[0] == StepStatus.RUNNING and iterations != seen[2]:
        # A loop's next iteration, the one seen running having ended unseen.
        return [("step_finished", started), ("step_started", started)]
    if seen[0] == StepStatus.RUNNING and status == StepStatus.WAITING:
        # A sleep whose length a function computed: it ran the function, and waits now.
        return [("step_waiting", changed)]
    if status == StepStatus.RUNNING and attempts != seen[1]:
        return [("step_retrying", changed)]
    if (
        seen[0] not in _STEP_GOING_ON
        and status not in _STEP_GOING_ON
        and status != StepStatus.CANCELED
    ):
        # Settled when last seen, and settled otherwise now: it ran again meanwhile, in
        # snapshots unseen (a watcher in another process reads the newest only): a
        # resume, a restart, a loop's next iteration.
        return [("step_started", started)]
    return []


def _as_started(result: StepResult) -> StepResult:
    """A step's record as it read when the step started: running, nothing come of it yet."""
    return result.model_copy(
        update={
            "status": StepStatus.RUNNING,
            "output": None,
            "error": None,
            "ended_at": None,
            "suspend_payload": None,
        }
    )


def _when(epoch: Any) -> datetime | None:
    """An epoch time from a snapshot as an aware datetime (``None`` for none, or nonsense)."""
    if isinstance(epoch, int | float) and not isinstance(epoch, bool):
        try:
            return datetime.fromtimestamp(epoch, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None
