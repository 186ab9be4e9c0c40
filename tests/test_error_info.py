"""Structured errors: an exception's public attributes and its cause chain in ``ErrorInfo``."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime import ErrorInfo, Runtime, create_step, create_workflow
from runtime._model import ATTRIBUTE_BYTES, MAX_ATTRIBUTES, MAX_CAUSES
from runtime._snapshot import check_encodable
from tests._support import Value, wait_for_no_callboard_threads


class Kind(enum.StrEnum):
    TRANSIENT = "transient"


class HttpError(Exception):
    """An exception such as an HTTP client raises: a status code, a flag, headers."""

    def __init__(self, message: str, status_code: int, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retryable = status_code >= 500
        self.headers = headers
        self.kind = Kind.TRANSIENT
        self.response = object()  # not plain data: dropped with a note
        self._secret = "private"  # not public: left out


class LowLevelError(Exception):
    def __init__(self, message: str, errno: int) -> None:
        super().__init__(message)
        self.errno_code = errno


def call_the_api(ctx: Any) -> Value:
    try:
        try:
            raise LowLevelError("connection reset", 104)
        except LowLevelError as low:
            raise ConnectionError("the socket closed") from low
    except ConnectionError:
        # raised while handling: the ConnectionError is the context, not an explicit cause
        raise HttpError("bad gateway", 502, {"retry-after": "3"}) from None
    raise AssertionError("unreachable")


def chained(ctx: Any) -> Value:
    try:
        try:
            raise LowLevelError("connection reset", 104)
        except LowLevelError as low:
            raise ConnectionError("the socket closed") from low
    except ConnectionError:
        raise HttpError("bad gateway", 502, {"retry-after": "3"})  # noqa: B904 - the context


def test_attributes_and_cause_chain_survive_a_sqlite_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    workflow = (
        create_workflow(id="api", input_schema=Value, output_schema=Value)
        .then(create_step(id="call", input_schema=Value, output_schema=Value, execute=chained))
        .commit()
    )
    with Runtime(store=db) as first:
        result = first.register(workflow).create_run().start(input_data={"value": "x"})
        assert result.status == "failed"
        run_id = result.run_id
    assert not wait_for_no_callboard_threads()
    with Runtime(store=db) as second:
        read = second.register(workflow).get_workflow_run_execution_result(run_id)
    assert read is not None
    for error in (result.error, read.error, read.steps["call"].error):
        assert error is not None
        assert error.name == "HttpError"
        assert error.attributes == {
            "status_code": 502,
            "retryable": True,
            "headers": {"retry-after": "3"},
            "kind": "transient",
        }
        assert type(error.attributes["kind"]) is str
        assert "response" in error.details["dropped_attributes"]
        assert "_secret" not in error.details.get("dropped_attributes", {})
        cause = error.cause
        assert cause is not None
        assert (cause.name, cause.message) == ("ConnectionError", "the socket closed")
        assert "traceback" not in cause.details
        assert cause.cause is not None
        assert cause.cause.name == "LowLevelError"
        assert cause.cause.attributes == {"errno_code": 104}
        assert cause.cause.cause is None
    assert read.error == result.error


def test_a_suppressed_context_is_no_cause() -> None:
    try:
        call_the_api(None)
    except HttpError as exc:
        info = ErrorInfo.from_exception(exc)
    assert info.cause is None
    assert info.attributes["status_code"] == 502


def test_a_caller_can_decide_on_the_status_code(runtime: Runtime) -> None:
    workflow = runtime.register(
        create_workflow(id="decide", input_schema=Value, output_schema=Value)
        .then(create_step(id="call", input_schema=Value, output_schema=Value, execute=call_the_api))
        .commit()
    )
    result = workflow.create_run().start(input_data={"value": "x"})
    assert result.error is not None
    assert result.error.attributes["status_code"] == 502
    assert result.error.attributes["retryable"] is True


class Unencodable(Exception):
    def __init__(self) -> None:
        super().__init__("odd attributes")
        self.huge = "x" * (ATTRIBUTE_BYTES + 1)
        self.big_int = 2**70
        self.keys = {1: "not a str key"}
        self.deep: Any = []
        inner = self.deep
        for _ in range(100):
            inner.append([])
            inner = inner[0]
        self.surrogate = "\udc80"
        self.fine = ("a", 1, None, 2.5, b"raw")


def test_unencodable_attributes_are_dropped_with_a_note_and_the_snapshot_is_fine(
    runtime: Runtime,
) -> None:
    def body(ctx: Any) -> Value:
        raise Unencodable()

    workflow = runtime.register(
        create_workflow(id="odd", input_schema=Value, output_schema=Value)
        .then(create_step(id="odd", input_schema=Value, output_schema=Value, execute=body))
        .commit()
    )
    result = workflow.create_run().start(input_data={"value": "x"})
    assert result.status == "failed" and result.error is not None
    assert result.error.name == "Unencodable"
    assert result.error.attributes == {"fine": ["a", 1, None, 2.5, b"raw"]}
    dropped = result.error.details["dropped_attributes"]
    assert set(dropped) == {"huge", "big_int", "keys", "deep", "surrogate"}
    assert "larger than" in dropped["huge"]
    assert "int key" in dropped["keys"]


class Many(Exception):
    def __init__(self) -> None:
        super().__init__("many")
        for index in range(MAX_ATTRIBUTES + 5):
            setattr(self, f"a{index:02d}", index)


def test_attributes_are_bounded_in_number_and_causes_in_length() -> None:
    info = ErrorInfo.from_exception(Many())
    assert len(info.attributes) == MAX_ATTRIBUTES
    assert len(info.details["dropped_attributes"]) == 5

    exc: BaseException = ValueError("0")
    for index in range(1, MAX_CAUSES + 5):
        try:
            raise ValueError(str(index)) from exc
        except ValueError as raised:
            exc = raised
    links = 0
    info = ErrorInfo.from_exception(exc)
    while info.cause is not None:
        info, links = info.cause, links + 1
    assert links == MAX_CAUSES


def test_a_cause_cycle_ends() -> None:
    first, second = ValueError("first"), ValueError("second")
    first.__cause__, second.__cause__ = second, first
    info = ErrorInfo.from_exception(first)
    assert info.cause is not None and info.cause.cause is None


class Hostile(Exception):
    @property
    def __dict__(self) -> dict[str, Any]:  # type: ignore[override]
        raise RuntimeError("no")


def test_an_exception_whose_attributes_cannot_be_read_is_still_described() -> None:
    info = ErrorInfo.from_exception(Hostile("still"))
    assert info.message == "still"
    assert info.attributes == {}


def containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)


plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    containers,
    max_leaves=20,
)


@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), plain))
def test_whatever_the_attributes_the_error_is_encodable(values: dict[str, Any]) -> None:
    exc = Exception("x")
    for name, value in values.items():
        setattr(exc, name, value)
    info = ErrorInfo.from_exception(exc)
    check_encodable(info.model_dump(), "error")
    assert set(info.attributes) | set(info.details.get("dropped_attributes", {})) == set(values)


def test_runs_show_prints_the_attributes_and_the_cause_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime._cli import main

    db = tmp_path / "runs.db"
    workflow = (
        create_workflow(id="api", input_schema=Value, output_schema=Value)
        .then(create_step(id="call", input_schema=Value, output_schema=Value, execute=chained))
        .commit()
    )
    with Runtime(store=db) as rt:
        rt.register(workflow).create_run(run_id="r1").start(input_data={"value": "x"})
    assert not wait_for_no_callboard_threads()
    capsys.readouterr()
    code = main(["runs", "show", "r1", "--db", str(db)])
    out = capsys.readouterr().out
    assert code == 1
    assert '"status_code": 502' in out
    causes = [line.split(None, 2)[2] for line in out.splitlines() if line.startswith("caused by")]
    assert causes == ["ConnectionError: the socket closed", "LowLevelError: connection reset"]
