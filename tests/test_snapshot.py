"""Snapshot encoding: msgpack round-trips, refused bytes, unencodable values named."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import runtime._snapshot as snapshot_module
from runtime._errors import SnapshotEncodingError, SnapshotFormatError
from runtime._model import ErrorInfo, RunStatus, StepStatus, WorkflowResult
from runtime._snapshot import (
    _FEW_STEPS,
    FORMAT_VERSION,
    PARTED_VERSION,
    IncrementalEncoder,
    Snapshot,
    SnapshotFreezer,
    check_encodable,
    decode,
    encode,
    first_frozen_record,
    forget_suspensions,
    record_of,
    suspend_at,
    suspension_of,
    to_result,
    unpack,
)
from runtime._stores.base import SnapshotRecord

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
plain = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
plain_snapshots = st.dictionaries(st.text(max_size=10), plain, max_size=8)


@given(plain_snapshots)
def test_decode_of_encode_is_the_identity_on_plain_snapshots(value: dict[str, Any]) -> None:
    assert unpack(encode(value)) == value


@given(plain_snapshots)
def test_check_encodable_accepts_every_plain_value(value: dict[str, Any]) -> None:
    check_encodable(value, "value")


class _Text(str):
    """A subclass of a scalar: storable, but only the full walk may say so."""


# Plain values and values the quick pass must not call plainly storable: ints past
# 64 bits, lone surrogates (as values and as keys), keys that are no str, subclasses,
# objects of no storable type; flat dicts (a start's input) and nested ones.
hostile_scalars = scalars | st.sampled_from(
    [2**64, -(2**63) - 1, "a\ud800b", _Text("t"), object(), {1, 2}]
)
hostile_keys = st.text(max_size=4) | st.sampled_from(["\udfff", 1])
hostile = st.recursive(
    hostile_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(hostile_keys, children, max_size=4)
    ),
    max_leaves=20,
)


@given(hostile | st.dictionaries(st.text(max_size=4), hostile_scalars, max_size=5))
# Each kind of value the quick pass must refuse, in a flat dict (its own loop) and
# deeper (its walk), besides what hypothesis draws.
@example({"v": "x", "n": 1, "f": 1.5, "b": b"", "t": True, "z": None})
@example({"v": 2**64})
@example({"v": "a\ud800b"})
@example({"\udfff": 1})
@example({1: 1})
@example({"v": _Text("t")})
@example({"v": {1, 2}})
@example({"v": object()})
@example({"v": [1, {"w": 2**64}]})
@example({"v": ("x", {"\udfff": 1})})
@example([{1, 2}])
def test_the_quick_pass_passes_exactly_the_plain_values_fit_to_store(value: Any) -> None:
    """``_plainly_encodable`` (its loop for a flat dict, and its walk) against a plain
    recursive reading of what it promises; and what it passes, the full walk accepts."""
    quick = snapshot_module._plainly_encodable(value)
    assert quick == _plain_and_storable(value, 0)
    if quick:
        assert snapshot_module.find_unencodable(value, "value") is None


def _plain_and_storable(value: Any, depth: int) -> bool:
    kind = type(value)
    if kind is str:
        return _utf8(value)
    if kind is int:
        return -(2**63) <= value < 2**64
    if kind in (float, bool, bytes, type(None)):
        return True
    if kind not in (dict, list, tuple) or depth >= snapshot_module.MAX_NESTING:
        return False
    if kind is dict:
        return all(
            type(key) is str and _utf8(key) and _plain_and_storable(element, depth + 1)
            for key, element in value.items()
        )
    return all(_plain_and_storable(element, depth + 1) for element in value)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# msgpack can pack map keys that its own reader, strict by default, refuses.
readable_elsewhere = st.dictionaries(
    st.integers(-(2**31), 2**31) | st.booleans() | st.none() | st.floats(allow_nan=False),
    st.text(max_size=5),
    min_size=1,
    max_size=3,
)


@given(readable_elsewhere)
def test_a_value_that_check_encodable_accepts_can_be_read_back(inner: dict[Any, Any]) -> None:
    value = {"nested": [inner]}
    try:
        check_encodable(value, "state")
    except SnapshotEncodingError:
        return  # refused up front: fine
    assert unpack(encode(value)) == value


def test_a_nested_dict_with_an_int_key_is_refused_or_round_trips() -> None:
    value = {"user": {1: "one"}}
    try:
        check_encodable(value, "request_context")
    except SnapshotEncodingError as exc:
        assert exc.path == "request_context['user'] key 1"
        return
    assert unpack(encode(value)) == value


@given(st.binary(max_size=64))
def test_unpack_raises_only_snapshot_format_error_on_arbitrary_bytes(data: bytes) -> None:
    try:
        decoded = unpack(data)
    except SnapshotFormatError:
        return
    assert isinstance(decoded, dict)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"\xc1",  # a byte msgpack never uses
        encode({"a": 1})[:-1],  # truncated
        encode({"a": 1}) + b"\x00",  # trailing bytes
        msgpack.packb("not a pair"),
        msgpack.packb([FORMAT_VERSION, {}, "extra"]),
        msgpack.packb([FORMAT_VERSION, [1, 2, 3]]),  # not a mapping
        msgpack.packb({"version": FORMAT_VERSION}),
    ],
    ids=[
        "empty",
        "garbage",
        "reserved-byte",
        "truncated",
        "trailing",
        "not-a-pair",
        "triple",
        "list-body",
        "map",
    ],
)
def test_unpack_rejects_bytes_that_are_not_a_snapshot(data: bytes) -> None:
    with pytest.raises(SnapshotFormatError):
        unpack(data)


@pytest.mark.parametrize("version", [0, PARTED_VERSION + 1, 99, "1", None])
def test_decode_rejects_an_unknown_format_version(version: Any) -> None:
    data = msgpack.packb([version, {"run_id": "r"}], use_bin_type=True)

    with pytest.raises(SnapshotFormatError, match="version"):
        unpack(data)


@pytest.mark.parametrize("status", [["success"], {"s": 1}, None, 3])
def test_a_step_record_with_a_status_of_another_kind_is_a_format_error(status: Any) -> None:
    """Bytes with a valid checksum, written by something else: named, never a bare TypeError."""
    snapshot = a_snapshot()
    snapshot["steps"]["s0"] = {"status": status, "output": None}

    with pytest.raises(SnapshotFormatError, match="step 's0' is not a step record"):
        decode(encode(snapshot), "r")


def test_snapshot_format_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        decode(b"garbage")


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "path", "type_name"),
    [
        (object(), "ctx", "object"),
        ({"a": 1, "b": {1, 2}}, "ctx['b']", "set"),
        ({"a": [1, 2, Opaque()]}, "ctx['a'][2]", "Opaque"),
        ([{"x": None}, {"y": [0, 2**70]}], "ctx[1]['y'][1]", "int (out of 64-bit range)"),
        ({"low": -(2**63) - 1}, "ctx['low']", "int (out of 64-bit range)"),
        ({"first": {"deep": frozenset()}, "second": object()}, "ctx['first']['deep']", "frozenset"),
        ({"when": time}, "ctx['when']", "module"),
    ],
    ids=["top", "set-in-dict", "object-in-list", "big-int", "small-int", "first-wins", "module"],
)
def test_check_encodable_names_the_path_and_type_of_the_first_unencodable_value(
    value: Any, path: str, type_name: str
) -> None:
    with pytest.raises(SnapshotEncodingError) as caught:
        check_encodable(value, "ctx")

    assert caught.value.path == path
    assert caught.value.type_name == type_name
    assert path in str(caught.value)
    assert type_name in str(caught.value)
    assert isinstance(caught.value, TypeError)


def test_check_encodable_accepts_the_64_bit_bounds() -> None:
    check_encodable({"low": -(2**63), "high": 2**64 - 1}, "ctx")


def test_encode_names_the_unencodable_value_inside_a_snapshot() -> None:
    with pytest.raises(SnapshotEncodingError) as caught:
        encode({"run_id": "r", "state": {"items": [1, {2, 3}]}})

    assert caught.value.path == "snapshot['state']['items'][1]"
    assert caught.value.type_name == "set"


def _snapshot(**changes: Any) -> Snapshot:
    snapshot: Snapshot = {
        "run_id": "run-1",
        "workflow_id": "wf",
        "seq": 3,
        "status": "success",
        "input": {"value": "in"},
        "result": {"value": "OUT"},
        "error": None,
        "steps": {
            "first": {
                "status": "success",
                "payload": {"value": "in"},
                "output": {"value": "OUT"},
                "error": None,
                "started_at": 1_700_000_000.0,
                "ended_at": 1_700_000_001.5,
            },
        },
        "next_step": 1,
        "carry": {"value": "OUT"},
        "progress": None,
        "wake_at": None,
        "suspended": {},
        "resume": None,
        "scopes": {},
        "state": {"count": 2},
        "request_context": {"user": "ada"},
        "include_state": False,
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "metadata": {"tenant": "t"},
        "created_at": 1_700_000_000.0,
        "updated_at": 1_700_000_002.0,
    }
    snapshot.update(changes)  # type: ignore[typeddict-item]
    return snapshot


def test_to_result_builds_a_workflow_result_from_a_decoded_snapshot() -> None:
    result = to_result(decode(encode(_snapshot())))

    assert isinstance(result, WorkflowResult)
    assert (result.run_id, result.workflow_id) == ("run-1", "wf")
    assert result.status is RunStatus.SUCCESS
    assert result.status == "success"
    assert result.input == {"value": "in"}
    assert result.result == {"value": "OUT"}
    assert result.error is None
    assert (result.trace_id, result.span_id) == ("ab" * 16, "cd" * 8)
    assert result.created_at.timestamp() == 1_700_000_000.0
    assert result.created_at.tzinfo is not None
    assert result.updated_at.timestamp() == 1_700_000_002.0
    step = result.steps["first"]
    assert step.status is StepStatus.SUCCESS
    assert (step.payload, step.output, step.error) == ({"value": "in"}, {"value": "OUT"}, None)
    assert step.started_at is not None and step.started_at.timestamp() == 1_700_000_000.0
    assert step.ended_at is not None and step.ended_at.timestamp() == 1_700_000_001.5


@pytest.mark.parametrize(("include_state", "state"), [(False, None), (True, {"count": 2})])
def test_to_result_carries_state_only_when_include_state(include_state: bool, state: Any) -> None:
    result = to_result(decode(encode(_snapshot(include_state=include_state))))

    assert result.state == state


def test_to_result_of_a_failed_run_carries_error_info_on_the_run_and_the_step() -> None:
    error = {"name": "ValueError", "message": "bad", "details": {"step_id": "first"}}
    step = {
        "status": "failed",
        "payload": {"value": "in"},
        "output": None,
        "error": error,
        "started_at": 1.0,
        "ended_at": None,
    }
    snapshot = _snapshot(status="failed", result=None, error=error, steps={"first": step})

    result = to_result(decode(encode(snapshot)))

    assert result.status == "failed"
    assert isinstance(result.error, ErrorInfo)
    assert (result.error.name, result.error.message) == ("ValueError", "bad")
    assert result.error.details == {"step_id": "first"}
    assert result.steps["first"].status == "failed"
    assert result.steps["first"].error == result.error


def test_a_step_record_with_keys_a_result_does_not_show_still_reads_as_one() -> None:
    # What only the runtime reads (start_state), or what a later callboard adds to the
    # records it writes on a shared store: StepResult refuses unknown keys, so a result
    # read here failed as not valid.
    step = {"status": "success", "output": {"n": 1}, "start_state": {"k": 1}, "later": 2}
    snapshot = _snapshot(steps={"first": step})

    result = to_result(decode(encode(snapshot)))

    assert result.steps["first"].output == {"n": 1}
    assert "later" not in result.steps["first"].model_dump()
    assert result.steps["first"].ended_at is None
    assert result.is_terminal


# --- snapshots in parts ------------------------------------------------------------------


class PartsKeeper:
    """A store that keeps parts apart, as SQLite does: the head, and each part by key."""

    def __init__(self) -> None:
        self.head = b""
        self.parts: dict[str, bytes] = {}

    def take(self, record: Any) -> bytes:
        change = record.parts
        if change is None:
            self.head, self.parts = record.data, {}
            return self.read()
        if change.base_seq is None:
            self.parts = {}
        for key in change.dropped:
            del self.parts[key]
        self.parts.update(change.changed)
        self.head = change.head
        return self.read()

    def read(self) -> bytes:
        return self.head + b"".join(self.parts.values())


def a_snapshot() -> dict[str, Any]:
    return {
        "run_id": "r",
        "workflow_id": "wf",
        "seq": 0,
        "status": "running",
        "input": {"value": "in"},
        "result": None,
        "error": None,
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
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "metadata": {},
        "created_at": 1.0,
        "updated_at": 1.0,
    }


sized_text = st.integers(0, 700).map(lambda size: "t" * size)
step_paths = st.sampled_from([f"s{i}" for i in range(8)])


def apply(draw: st.DataObject, snapshot: Any, encoder: IncrementalEncoder, op: str) -> None:
    """Change ``snapshot`` the way a run actor does (replacing values, never editing them)."""
    steps = snapshot["steps"]
    if op == "start":
        path = draw.draw(step_paths)
        steps.pop(path, None)  # run again: it moves to the end
        steps[path] = {
            "status": "running",
            "payload": {"v": draw.draw(sized_text)},
            "output": None,
            "error": None,
            "started_at": 2.0,
            "ended_at": None,
        }
    elif op == "end" and steps:
        record = _to_change(steps, draw.draw(st.sampled_from(sorted(steps))))
        record["status"] = draw.draw(st.sampled_from(["success", "failed", "waiting"]))
        record["output"] = {"v": draw.draw(sized_text)}
        record["ended_at"] = 3.0
    elif op == "retry" and steps:
        record = _to_change(steps, draw.draw(st.sampled_from(sorted(steps))))
        record["attempts"] = record.get("attempts", 1) + 1
    elif op == "carry":
        snapshot["carry"] = {"v": draw.draw(sized_text)}
    elif op == "state":
        snapshot["state"] = draw.draw(st.none() | st.just({}) | st.builds(dict, v=sized_text))
    elif op == "foreach":
        size = draw.draw(st.integers(0, 150))
        snapshot["carry"] = list(range(size))
        snapshot["progress"] = {"outputs": [None] * size, "done": [False] * size}
    elif op == "item" and snapshot["progress"] and "done" in snapshot["progress"]:
        done = snapshot["progress"]["done"]
        left = [index for index, flag in enumerate(done) if not flag]
        if left:
            index = draw.draw(st.sampled_from(left))
            snapshot["progress"]["outputs"][index] = {"n": index, "v": draw.draw(sized_text)}
            done[index] = True
            encoder.item_done(index)
    elif op == "progress":
        snapshot["progress"] = draw.draw(st.none() | st.builds(dict, iteration=st.integers(1, 9)))
    elif op == "each":  # a foreach over a nested workflow starts, or starts again
        key = draw.draw(each_keys)
        items = [{"n": index} for index in range(draw.draw(st.integers(0, 90)))]
        progress = {"items": items, "outputs": [], "started_at": 2.0}
        snapshot["scopes"] = {**snapshot["scopes"], key: progress}
    elif op == "each_item":  # its nested workflow is done with the next item
        key = draw.draw(each_keys)
        progress = snapshot["scopes"].get(key)
        if progress is not None and len(progress["outputs"]) < len(progress["items"]):
            output = {"v": draw.draw(sized_text)}
            progress = {**progress, "outputs": [*progress["outputs"], output]}
            snapshot["scopes"] = {**snapshot["scopes"], key: progress, "inner.": output}
    elif op == "suspend":  # a step (or item) suspends, or suspends again with a new payload
        key = draw.draw(suspended_keys)
        if draw.draw(st.booleans()):  # with an id, as this callboard suspends it
            suspend_at(snapshot, key, {"v": draw.draw(sized_text)})
        else:  # as a run recorded before ids goes on
            snapshot["suspended"] = {**snapshot["suspended"], key: {"v": draw.draw(sized_text)}}
            forget_suspensions(snapshot, (key,))
        encoder.suspended_changed(key)
    elif op == "suspend_many":  # a foreach's items suspend, past a page of them
        for index in range(draw.draw(st.integers(60, 140))):
            suspend_at(snapshot, f"many[{index}]", index)
            encoder.suspended_changed(f"many[{index}]")
    elif op == "unsuspend" and snapshot["suspended"]:  # one is resumed
        key = draw.draw(st.sampled_from(sorted(snapshot["suspended"])))
        snapshot["suspended"] = {k: v for k, v in snapshot["suspended"].items() if k != key}
        forget_suspensions(snapshot, (key,))
        encoder.suspended_changed(key, gone=True)
    elif op == "unsuspend_all":  # the run ends: told to no encoder
        snapshot["suspended"] = {}
        snapshot.pop("suspensions", None)
    elif op == "each_end":  # done with every item: the lists go to the step record
        key = draw.draw(each_keys)
        snapshot["scopes"] = {k: v for k, v in snapshot["scopes"].items() if k != key}
    elif op == "status":
        snapshot["status"] = draw.draw(st.sampled_from(["running", "waiting", "failed"]))


def _to_change(steps: dict[str, Any], path: str) -> dict[str, Any]:
    """The record at ``path``, to change in place: a settled one is replaced by a copy first.

    The run actor's contract with the encoders: a step record that succeeded,
    failed or was cancelled is never changed in place, only replaced.
    """
    record = steps[path]
    if record["status"] in ("success", "failed", "canceled"):
        record = steps[path] = dict(record)
    return record


each_keys = st.sampled_from(["inner#each", "outer.inner#each"])
suspended_keys = st.sampled_from(["ask", "inner.ask", *[f"each[{i}]" for i in range(6)]])

OPS = [
    "start",
    "end",
    "retry",
    "carry",
    "state",
    "foreach",
    "item",
    "progress",
    "status",
    "each",
    "each_item",
    "each_end",
    "suspend",
    "suspend_many",
    "unsuspend",
    "unsuspend_all",
]


@settings(max_examples=150, deadline=None)
@given(st.data(), st.sampled_from([-1, 0, 2048]))
def test_every_record_in_parts_reads_back_as_its_snapshot_whole_and_part_by_part(
    draw: st.DataObject, whole_until: int
) -> None:
    snapshot = a_snapshot()
    encoder = IncrementalEncoder(snapshot, whole_until=whole_until)
    kept = PartsKeeper()
    for op in draw.draw(st.lists(st.sampled_from(OPS), min_size=1, max_size=40)):
        apply(draw, snapshot, encoder, op)
        record = encoder.next_record(float(snapshot["seq"]))

        assert unpack(record.data) == snapshot  # what a store that keeps it whole reads
        read = unpack(kept.take(record))
        assert read == snapshot  # what a store that keeps parts reads
        assert list(read["suspended"]) == list(snapshot["suspended"])  # in the same order


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_every_frozen_record_is_its_snapshot_as_it_was_then(draw: st.DataObject) -> None:
    """A store in memory keeps frozen copies: each is the snapshot of its moment, unchanged.

    But for one thing: while the run actor drives the run, a record may share the copy
    of a foreach's progress (its outputs and done flags) an earlier record made, so
    that a foreach of n items copies its lists about 32 times instead of n times.
    """
    snapshot = a_snapshot()
    freezer = SnapshotFreezer(snapshot)  # type: ignore[arg-type]
    taken: list[tuple[SnapshotRecord, bytes]] = []
    for op in draw.draw(st.lists(st.sampled_from(OPS), min_size=1, max_size=40)):
        apply(draw, snapshot, IncrementalEncoder(snapshot), op)
        record = freezer.next_record(float(snapshot["seq"]))
        taken.append((record, msgpack.packb(snapshot)))
    for index, (record, then) in enumerate(taken):  # later changes reached no earlier record
        got, want = unpack(record.data), msgpack.unpackb(then)
        if got["progress"] != want["progress"]:
            assert want["status"] in ("pending", "running"), "an ending record is exact"
            assert got["progress"] in [msgpack.unpackb(t)["progress"] for _, t in taken[:index]]
            got["progress"] = want["progress"]
        assert got == want


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"queue": {"name": "q", "key": "k", "priority": 3}, "resource_id": "r1", "deadline": 9.5},
        {"status": "pending", "queue": {"name": "q"}},
    ],
)
def test_a_frozen_record_has_the_fields_of_a_plain_record_of_its_snapshot(
    extra: dict[str, Any],
) -> None:
    # SnapshotFreezer.next_record builds a driven run's record itself, not through
    # _record_values: the same fields, in the same order, as record_of's.
    snapshot = {**a_snapshot(), **extra}
    record = SnapshotFreezer(snapshot).next_record(7.0)  # type: ignore[arg-type]
    plain = record_of(snapshot)  # type: ignore[arg-type]

    assert type(record).__name__ == "DeferredRecord"
    assert record._replace(data=b"") == plain._replace(data=b"")
    assert unpack(record.data) == unpack(plain.data)


def _foreach_running(items: int) -> dict[str, Any]:
    snapshot = a_snapshot()
    snapshot["steps"] = {"each": {"status": "running", "payload": list(range(items))}}
    snapshot["carry"] = list(range(items))
    snapshot["progress"] = {"outputs": [None] * items, "done": [False] * items}
    return snapshot


def test_a_foreach_in_memory_copies_its_lists_a_bounded_number_of_times() -> None:
    # A copy of both lists at each item's record made a foreach of n items quadratic:
    # 32,000 items took 16 s in memory, 2,000 took 0.3 s.
    items = 3_200
    snapshot = _foreach_running(items)
    freezer = SnapshotFreezer(snapshot)  # type: ignore[arg-type]
    copies: dict[int, Any] = {}
    for item in range(items):
        snapshot["progress"]["outputs"][item] = {"n": item}
        snapshot["progress"]["done"][item] = True
        freezer.item_done(item)
        record = freezer.next_record(float(item))
        progress = tuple.__getitem__(record, 4)["progress"]
        copies[id(progress)] = progress  # kept alive, so that no id is reused
    snapshot["status"] = "suspended"  # the run actor lets go: the record is whole and exact
    last = unpack(freezer.next_record(float(items)).data)["progress"]

    assert len(copies) <= 40
    assert last == snapshot["progress"]
    for progress in copies.values():  # each copy is a moment of the foreach, never more
        done = progress["done"]
        assert done == [True] * done.count(True) + [False] * (items - done.count(True))


def test_a_record_in_parts_joins_its_whole_bytes_only_when_they_are_read() -> None:
    # Joining them at every record cost the whole snapshot's length per transition: a
    # foreach of n items, n times (a 32,000-item one on SQLite took 30 s, 14 s after).
    snapshot = _foreach_running(1_000)
    encoder = IncrementalEncoder(snapshot, whole_until=-1)
    encoder.next_record(1.0)
    snapshot["progress"]["outputs"][0] = {"n": 0}
    snapshot["progress"]["done"][0] = True
    encoder.item_done(0)
    record = encoder.next_record(2.0)

    held = tuple.__getitem__(record, 4)
    assert not isinstance(held, bytes)  # not joined yet
    assert record.parts is not None and [name for name, _ in record.parts.changed] == ["i0"]
    assert unpack(record.data) == msgpack.unpackb(msgpack.packb(snapshot))
    assert record.data is record.data  # joined once, then kept


def test_a_first_frozen_record_is_its_snapshot_as_it_was_when_taken() -> None:
    """A store in memory keeps a new run's first record unencoded: the run goes on after it."""
    snapshot = a_snapshot()
    snapshot["steps"] = {}
    before = msgpack.packb(snapshot)
    record = first_frozen_record(snapshot)  # type: ignore[arg-type]
    assert record is not None

    snapshot["steps"]["s0"] = {"status": "running", "output": None}  # the run actor's next moves
    snapshot["status"], snapshot["carry"] = "success", {"v": "changed"}

    assert unpack(record.data) == msgpack.unpackb(before)
    assert (record.seq, record.status) == (0, "running")
    for bad in (2**64, "a\ud800b"):  # not plainly storable: the caller encodes, which names it
        assert first_frozen_record({**snapshot, "steps": {}, "input": {"v": bad}}) is None  # type: ignore[typeddict-item]


def test_a_settled_step_record_is_shared_by_the_frozen_records_not_copied() -> None:
    """An open step's record is copied into a record; a settled one is kept as it is."""
    snapshot = a_snapshot()
    open_step = {"status": "running", "payload": {"v": 1}, "started_at": 1.0}
    snapshot["steps"]["s0"] = open_step
    freezer = SnapshotFreezer(snapshot)  # type: ignore[arg-type]
    first = freezer.next_record(1.0)
    open_step["status"], open_step["output"] = "success", {"v": 2}  # settled in place
    second = freezer.next_record(2.0)
    settled = {"status": "failed", "error": {"name": "E"}}
    snapshot["steps"]["s1"] = settled  # added settled
    third = freezer.next_record(3.0)

    def held(record: Any) -> dict[str, Any]:
        return tuple.__getitem__(record, 4)["steps"]  # type: ignore[no-any-return]

    # The frozen copy of the mapping holds the record itself: no object around it.
    assert isinstance(tuple.__getitem__(first, 4), dict)
    assert held(first)["s0"] is not open_step and held(first)["s0"]["status"] == "running"
    assert held(second)["s0"] is open_step  # settled: shared, never changed in place again
    assert held(third)["s0"] is open_step and held(third)["s1"] is settled
    assert unpack(first.data)["steps"]["s0"]["status"] == "running"


def test_a_freezer_of_a_run_of_few_steps_looks_at_them_all_and_notes_none() -> None:
    """Up to ``_FEW_STEPS`` step records, a record copies each open one and shares each
    settled one, without noting which it saw (finding the changed ones costs more than
    it saves there); past them it notes them, and forgets them when the run has few again.
    """
    snapshot = a_snapshot()
    freezer = SnapshotFreezer(snapshot)  # type: ignore[arg-type]
    open_step = {"status": "running", "payload": {"v": 1}, "started_at": 1.0}
    snapshot["steps"]["s0"] = open_step
    first = freezer.next_record(1.0)
    assert freezer._copies is None and freezer._paths == ()
    open_step["status"], open_step["output"] = "success", {"v": 2}  # settled in place
    snapshot["steps"]["s1"] = {"status": "running", "payload": {"v": 2}}
    second = freezer.next_record(2.0)
    assert freezer._copies is None

    def held(record: Any) -> dict[str, Any]:
        return tuple.__getitem__(record, 4)["steps"]  # type: ignore[no-any-return]

    assert held(first)["s0"] is not open_step and held(first)["s0"]["status"] == "running"
    assert held(second)["s0"] is open_step  # settled: shared
    assert held(second)["s1"] is not snapshot["steps"]["s1"]  # open: copied
    for index in range(2, _FEW_STEPS + 2):
        snapshot["steps"][f"s{index}"] = {"status": "success", "output": {"v": index}}
    many = freezer.next_record(3.0)
    assert freezer._paths == tuple(snapshot["steps"])  # past a few: noted
    snapshot["steps"] = {"s9": {"status": "running", "payload": {"v": 9}}}  # gone (time travel)
    few = freezer.next_record(4.0)
    assert freezer._copies is None and freezer._paths == ()
    snapshot["steps"]["s10"] = {"status": "running"}
    for index in range(11, _FEW_STEPS + 12):
        snapshot["steps"][f"s{index}"] = {"status": "success"}
    again = freezer.next_record(5.0)  # many again: noted afresh, from nothing stale
    snapshot["steps"]["s10"]["status"] = "success"
    last = freezer.next_record(6.0)
    for record in (first, second, many, few, again, last):
        assert unpack(record.data)["steps"] == held(record)
    assert list(held(few)) == ["s9"]
    assert held(again)["s10"]["status"] == "running"
    assert held(last) == snapshot["steps"]


def test_a_settled_step_record_changed_in_place_is_caught() -> None:
    """The contract that lets a transition skip settled steps: the test suite checks it."""
    snapshot = a_snapshot()
    snapshot["steps"]["s0"] = {"status": "success", "output": {"v": 1}, "ended_at": 3.0}
    freezer = SnapshotFreezer(snapshot)  # type: ignore[arg-type]
    encoder = IncrementalEncoder(snapshot, whole_until=-1)
    freezer.next_record(1.0)
    encoder.next_record(1.0)
    snapshot["steps"]["s0"]["output"] = {"v": 2}  # in place: against the contract

    # The freezer's last record shares the settled step record: that record is what
    # changed after it was taken.
    with pytest.raises(AssertionError, match="changed after it was taken"):
        freezer.next_record(2.0)
    with pytest.raises(AssertionError, match="does not read back"):
        encoder.next_record(3.0)


def test_a_transition_encodes_what_it_changed_not_the_whole_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    snapshot = a_snapshot()
    for index in range(300):
        snapshot["steps"][f"s{index}"] = {
            "status": "success",
            "payload": {"v": "p" * 200},
            "output": {"v": "o" * 200},
            "error": None,
            "started_at": 2.0,
            "ended_at": 3.0,
        }
    encoder = IncrementalEncoder(snapshot, whole_until=-1)
    first = encoder.next_record(1.0)
    encoded: list[int] = []
    packb = snapshot_module._packb
    monkeypatch.setattr(
        snapshot_module, "_packb", lambda value: encoded.append(len(packb(value))) or packb(value)
    )

    snapshot["steps"]["s150"] = {**snapshot["steps"]["s150"], "output": {"v": "changed"}}
    snapshot["carry"] = {"v": "c" * 1000}
    record = encoder.next_record(2.0)

    assert sum(encoded) < 2000 < len(first.data) // 50  # a step and the carry, and the head
    assert record.parts is not None
    assert sorted(key for key, _ in record.parts.changed) == ["ss150", "vcarry"]
    assert unpack(record.data) == snapshot


def test_an_item_of_a_foreach_over_a_nested_workflow_encodes_its_output_not_the_lists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The scopes were one part: every item encoded every item and every output so far
    # again, and a foreach of n items over a nested workflow was quadratic on SQLite.
    items = 800  # re-encoding the items would be 40 KB an item; the outputs, up to 40 KB
    snapshot = a_snapshot()
    progress: dict[str, Any] = {
        "items": [{"n": index, "text": "i" * 40} for index in range(items)],
        "outputs": [],
        "started_at": 2.0,
    }
    snapshot["scopes"] = {"each#each": progress}
    encoder = IncrementalEncoder(snapshot, whole_until=-1)
    kept = PartsKeeper()
    kept.take(encoder.next_record(1.0))
    encoded: list[int] = []
    packb = snapshot_module._packb
    monkeypatch.setattr(
        snapshot_module, "_packb", lambda value: encoded.append(len(packb(value))) or packb(value)
    )
    per_item: list[int] = []
    for index in range(items):
        encoded.clear()
        output = {"n": index, "text": "o" * 40}
        progress = {**progress, "outputs": [*progress["outputs"], output]}
        snapshot["scopes"] = {"each#each": progress, "each.": output}
        record = encoder.next_record(float(index + 2))
        per_item.append(sum(encoded))
        if index % 200 == 0:
            assert unpack(kept.take(record)) == snapshot
        else:
            kept.take(record)

    assert max(per_item) < 1_000  # an output and the head: not the items, nor the outputs
    assert max(per_item[-100:]) <= 2 * max(per_item[:100])  # flat: not growing with them
    snapshot["scopes"] = {}  # the foreach is done: its parts go
    record = encoder.next_record(float(items + 2))
    assert record.parts is not None and len(record.parts.dropped) == items + 1
    assert unpack(kept.take(record)) == snapshot == unpack(record.data)


def test_a_suspension_has_the_seq_of_the_first_record_that_holds_it_and_a_new_one_a_new_id() -> (
    None
):
    snapshot = a_snapshot()
    encoder = IncrementalEncoder(snapshot, whole_until=-1)
    encoder.next_record(1.0)
    suspend_at(snapshot, "ask", {"q": 1})
    encoder.suspended_changed("ask")
    first = encoder.next_record(2.0)
    assert suspension_of(decode(first.data, first.run_id), "ask") == first.seq
    snapshot["suspended"] = {}
    forget_suspensions(snapshot, ("ask",))
    encoder.suspended_changed("ask", gone=True)
    gone = decode(encoder.next_record(3.0).data, first.run_id)
    assert suspension_of(gone, "ask") is None and "suspensions" not in gone
    suspend_at(snapshot, "ask", {"q": 2})  # the same path, suspended again
    encoder.suspended_changed("ask")
    again = encoder.next_record(4.0)
    assert suspension_of(decode(again.data, again.run_id), "ask") == again.seq > first.seq


def test_a_snapshot_recorded_before_suspension_ids_reads_with_none() -> None:
    snapshot = a_snapshot()
    snapshot["suspended"] = {"ask": {"q": 1}}
    for data in (
        encode(snapshot),
        IncrementalEncoder(snapshot, whole_until=-1).next_record(1.0).data,
    ):
        read = decode(data, snapshot["run_id"])
        assert read["suspended"] == {"ask": {"q": 1}} and suspension_of(read, "ask") is None
