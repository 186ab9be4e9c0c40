"""Snapshot encoding: msgpack round-trips, refused bytes, unencodable values named."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime._errors import SnapshotEncodingError, SnapshotFormatError
from runtime._model import ErrorInfo, RunStatus, StepStatus, WorkflowResult
from runtime._snapshot import (
    FORMAT_VERSION,
    Snapshot,
    check_encodable,
    decode,
    encode,
    to_result,
    unpack,
)

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


@pytest.mark.parametrize("version", [0, FORMAT_VERSION + 1, 99, "1", None])
def test_decode_rejects_an_unknown_format_version(version: Any) -> None:
    data = msgpack.packb([version, {"run_id": "r"}], use_bin_type=True)

    with pytest.raises(SnapshotFormatError, match="version"):
        unpack(data)


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
    assert result.steps["first"].ended_at is None
    assert result.is_terminal
