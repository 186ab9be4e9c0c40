"""Damaged snapshots are caught when read: a checksum on the bytes, every key checked.

A flipped bit in a stored row must never read back as a different, valid run,
and a snapshot that decodes but lacks a key or names another run must be
refused in one place, with ``SnapshotFormatError``, before anything acts on it.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from runtime import Runtime, SnapshotFormatError, create_step, create_workflow
from runtime._snapshot import (
    FORMAT_VERSION,
    PARTED_VERSION,
    IncrementalEncoder,
    _frame,
    decode,
    encode,
    is_parted,
    split_parts,
    to_result,
)


class Loose(BaseModel):
    value: Any = None


def _finished_snapshot() -> dict[str, Any]:
    step = create_step(
        id="shout",
        input_schema=Loose,
        output_schema=Loose,
        execute=lambda ctx: Loose(value=str(ctx.input_data.value).upper()),
    )
    wf = create_workflow(id="integrity", input_schema=Loose, output_schema=Loose).then(step)
    with Runtime() as rt:
        bound = rt.register(wf.commit())
        run = bound.create_run("run-1")
        run.start(input_data={"value": "some words"}, timeout=10)
        record = rt.store.load("run-1") if rt.store is not None else None
    assert record is not None
    return dict(decode(record.data, "run-1"))


SNAPSHOT = _finished_snapshot()
DATA = encode(SNAPSHOT)


def _flip(data: bytes, *bits: int) -> bytes:
    damaged = bytearray(data)
    for bit in bits:
        damaged[bit // 8] ^= 1 << (bit % 8)
    return bytes(damaged)


def test_a_finished_run_round_trips_through_encode_and_decode() -> None:
    assert decode(DATA, "run-1") == SNAPSHOT


def test_every_single_flipped_bit_is_caught() -> None:
    missed = [bit for bit in range(len(DATA) * 8) if _reads_back(_flip(DATA, bit))]

    assert missed == []


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_two_flipped_bits_are_caught(data: st.DataObject) -> None:
    bits = data.draw(
        st.lists(st.integers(0, len(DATA) * 8 - 1), min_size=2, max_size=2, unique=True)
    )

    assert not _reads_back(_flip(DATA, *bits))


def test_a_burst_of_damage_is_caught() -> None:
    chooser = random.Random(7)
    for _ in range(200):
        start = chooser.randrange(len(DATA) - 8)
        damaged = bytearray(DATA)
        for offset in range(8):
            damaged[start + offset] = chooser.randrange(256)
        if bytes(damaged) != DATA:
            assert not _reads_back(bytes(damaged))


def _reads_back(data: bytes) -> bool:
    try:
        decode(data, "run-1")
    except SnapshotFormatError:
        return False
    return True


REQUIRED = [
    "run_id",
    "workflow_id",
    "seq",
    "status",
    "input",
    "result",
    "error",
    "steps",
    "next_step",
    "carry",
    "progress",
    "wake_at",
    "suspended",
    "resume",
    "scopes",
    "state",
    "request_context",
    "include_state",
    "trace_id",
    "span_id",
    "metadata",
    "created_at",
    "updated_at",
]


@pytest.mark.parametrize("key", REQUIRED)
def test_a_snapshot_missing_a_key_is_refused_naming_it(key: str) -> None:
    damaged = {name: value for name, value in SNAPSHOT.items() if name != key}

    with pytest.raises(SnapshotFormatError, match=repr(key)):
        decode(encode(damaged), "run-1")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("run_id", None),
        ("run_id", ""),
        ("seq", "3"),
        ("seq", True),
        ("status", "finished"),
        ("status", 1),
        ("steps", []),
        ("steps", {"shout": "success"}),
        ("steps", {"shout": {"status": "exploded"}}),
        ("next_step", 1.5),
        ("error", "boom"),
        ("request_context", None),
        ("include_state", 0),
        ("created_at", "yesterday"),
    ],
)
def test_a_snapshot_with_a_key_of_the_wrong_kind_is_refused(key: str, value: Any) -> None:
    damaged = {**SNAPSHOT, key: value}

    with pytest.raises(SnapshotFormatError):
        decode(encode(damaged))


def test_a_snapshot_naming_another_run_than_its_row_is_refused() -> None:
    with pytest.raises(SnapshotFormatError, match="names run 'run-1'") as caught:
        decode(DATA, "run-2")

    assert caught.value.run_id == "run-2"


def test_version_2_bytes_without_a_checksum_are_still_read() -> None:
    old = msgpack.packb((2, SNAPSHOT), use_bin_type=True)

    assert decode(old, "run-1") == SNAPSHOT


def test_this_code_writes_the_checksummed_format() -> None:
    assert FORMAT_VERSION == 3
    assert DATA[1] == 3
    assert not _reads_back(DATA[:-1])


# --- snapshots in parts (format 4) ----------------------------------------------------


def _parted(snapshot: dict[str, Any]) -> bytes:
    """The snapshot in parts, as a run actor's encoder writes it, with a foreach under way."""
    snapshot = decode(encode(snapshot), "run-1")
    snapshot["carry"] = [{"n": i} for i in range(12)]
    snapshot["progress"] = {"outputs": [None] * 12, "done": [False] * 12}
    encoder = IncrementalEncoder(snapshot, whole_until=-1)
    encoder.next_record(1.0)
    for index in (3, 7):
        snapshot["progress"]["outputs"][index] = {"n": index * 2}
        snapshot["progress"]["done"][index] = True
        encoder.item_done(index)
    record = encoder.next_record(2.0)
    assert decode(record.data, "run-1") == snapshot
    return record.data


PARTED = _parted(SNAPSHOT)


def test_snapshots_in_parts_are_format_4_and_every_part_has_a_checksum() -> None:
    assert PARTED[:2] == bytes((0x92, PARTED_VERSION))
    assert is_parted(PARTED) and not is_parted(DATA)


def test_every_single_flipped_bit_of_a_snapshot_in_parts_is_caught() -> None:
    missed = [bit for bit in range(len(PARTED) * 8) if _reads_back(_flip(PARTED, bit))]

    assert missed == []


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_two_flipped_bits_of_a_snapshot_in_parts_are_caught(data: st.DataObject) -> None:
    bits = data.draw(
        st.lists(st.integers(0, len(PARTED) * 8 - 1), min_size=2, max_size=2, unique=True)
    )

    assert not _reads_back(_flip(PARTED, *bits))


def test_a_snapshot_in_parts_cut_short_or_lengthened_is_caught() -> None:
    cut = [size for size in range(len(PARTED)) if _reads_back(PARTED[:size])]

    assert cut == []
    assert not _reads_back(PARTED + b"\x00")
    assert not _reads_back(PARTED + PARTED[2:40])


def _head_end(data: bytes) -> int:
    """Where the head part ends: the marker, then the head."""
    key, head = split_parts(data, 2)[0]
    assert key == "h"
    return 2 + len(head)


def test_a_snapshot_in_parts_missing_a_part_or_holding_one_twice_is_caught() -> None:
    head = _head_end(PARTED)
    parts = split_parts(PARTED, head)
    assert len(parts) > 3
    for index in range(len(parts)):
        without = PARTED[:head] + b"".join(part for i, (_, part) in enumerate(parts) if i != index)
        assert not _reads_back(without), parts[index][0]
    assert not _reads_back(PARTED + parts[0][1])


def test_the_parts_of_a_snapshot_read_back_in_any_order_after_the_head() -> None:
    head = _head_end(PARTED)
    parts = [part for _, part in split_parts(PARTED, head)]
    random.Random(3).shuffle(parts)

    assert decode(PARTED[:head] + b"".join(parts), "run-1") == decode(PARTED, "run-1")
    assert not _reads_back(PARTED[:2] + parts[0] + PARTED[2:head] + b"".join(parts[1:]))


@pytest.mark.parametrize("kind", ["i", "u", "o"])
def test_a_part_whose_key_holds_a_number_too_long_to_read_is_refused(kind: str) -> None:
    # A part with a well-formed frame and checksum whose name is thousands of digits:
    # int() refuses such text with a ValueError of its own (past 4,300 digits), which
    # must come out as the decoder's SnapshotFormatError, as any other bad part does.
    head = _head_end(PARTED)
    parts = split_parts(PARTED, head)
    digits = "7" * 5000
    name = f"{kind}{digits}" + (":x#each" if kind == "o" else "")
    payload = msgpack.packb({} if kind == "u" else {"n": 1})
    forged = PARTED[:head] + _frame(name, payload) + b"".join(part for _, part in parts[1:])

    assert not _reads_back(forged)


_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_NAMES = st.one_of(
    st.sampled_from(["h", "f", "i3", "i99", "s", "u0", "u1", "e#each", "o0:x#each", "vresult"]),
    st.builds(
        lambda kind, body: kind + body,
        st.sampled_from(list("hfisueovx")),
        st.text(alphabet="0123456789:#eachx", max_size=12) | st.text(max_size=6),
    ),
)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_parts_with_valid_checksums_but_any_keys_and_values_decode_or_are_refused(
    data: st.DataObject,
) -> None:
    # The checksums catch damage; what they cannot catch is bytes framed and summed
    # right that hold the wrong things (a bug of a writer, or forged bytes). Decoding
    # those must give a snapshot or a SnapshotFormatError, never another exception.
    head = _head_end(PARTED)
    parts = [(key, part) for key, part in split_parts(PARTED, head)]
    forged: list[bytes] = []
    for key, part in parts:
        action = data.draw(st.sampled_from(["keep", "keep", "drop", "rename", "refill", "twice"]))
        payload = part[4 + 2 + len(key.encode()) : -4]
        if action == "drop":
            continue
        name = data.draw(_NAMES) if action == "rename" else key
        if action == "refill":
            payload = msgpack.packb(data.draw(_VALUES), use_bin_type=True)
        framed = _frame(name, payload)
        forged += [framed, framed] if action == "twice" else [framed]
    extra = data.draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=3))
    forged += [_frame(name, msgpack.packb(value, use_bin_type=True)) for name, value in extra]
    # The head counts the parts after it: a count that does not match is refused before
    # anything else is looked at, so the forged head counts them (mostly).
    head_key, head_part = split_parts(PARTED, 2)[0]
    head_value = msgpack.unpackb(head_part[4 + 2 + len(head_key) : -4], raw=False)
    head_value[1] = len(forged)
    if data.draw(st.integers(0, 9)) == 0:
        head_value = data.draw(_VALUES)
    forged_head = PARTED[:2] + _frame("h", msgpack.packb(head_value, use_bin_type=True))

    with contextlib.suppress(SnapshotFormatError):
        # A query reads the result too: it is a result, or the same error.
        to_result(decode(forged_head + b"".join(forged), "run-1"))
