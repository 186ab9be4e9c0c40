"""Damaged snapshots are caught when read: a checksum on the bytes, every key checked.

A flipped bit in a stored row must never read back as a different, valid run,
and a snapshot that decodes but lacks a key or names another run must be
refused in one place, with ``SnapshotFormatError``, before anything acts on it.
"""

from __future__ import annotations

import random
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from runtime import Runtime, SnapshotFormatError, create_step, create_workflow
from runtime._snapshot import FORMAT_VERSION, decode, encode


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
