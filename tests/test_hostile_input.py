"""Hostile input gets a documented error at the call: never a crash, a hang or a traceback.

Deep nesting, lone surrogates and integers past 64 bits, in every argument of
``start_async`` and in run ids; odd types and huge numbers in queries. Each is
an ``InvalidInputError`` (a ``ValueError``) naming the argument and the path
inside it, or a ``TypeError``/``ValueError``, the same on every store.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, field_validator

from runtime import (
    InvalidInputError,
    Runtime,
    RunTimeoutError,
    TracingOptions,
    WorkflowDefinitionError,
    create_step,
    create_workflow,
)


class Loose(BaseModel):
    value: Any = None


class Free(BaseModel):
    model_config = {"extra": "allow"}


echo = create_step(
    id="echo", input_schema=Loose, output_schema=Loose, execute=lambda ctx: ctx.input_data
)
loose = create_workflow(id="hostile", input_schema=Loose, output_schema=Loose).then(echo).commit()
stateful = (
    create_workflow(id="hostile-state", input_schema=Loose, output_schema=Loose, state_schema=Free)
    .then(echo)
    .commit()
)


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"down": value}
    return value


def nested_list(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture(params=["memory", "sqlite"])
def rt(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    store = None if request.param == "memory" else tmp_path / "runs.db"
    with Runtime(store=store) as runtime:
        yield runtime


HOSTILE = {
    "deep dict": nested(1_000),
    "deep list": nested_list(1_000),
    "lone surrogate": "a\ud800b",
    "int of 2**64": 2**64,
    "int below -2**63": -(2**63) - 1,
}

ARGUMENTS = ["input_data", "request_context", "initial_state", "tracing_options"]


def _start(rt: Runtime, argument: str, bad: Any) -> Any:
    wf = rt.register(stateful if argument == "initial_state" else loose)
    kwargs: dict[str, Any] = {"input_data": {"value": 1}}
    if argument == "input_data":
        kwargs["input_data"] = {"value": bad}
    elif argument == "tracing_options":
        kwargs["tracing_options"] = TracingOptions(metadata={"k": bad})
    else:
        kwargs[argument] = {"k": bad}
    run = wf.create_run()
    return run, wf, lambda: run.start_async(**kwargs)


@pytest.mark.parametrize("argument", ARGUMENTS)
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_value_in_any_start_argument_is_an_invalid_input_error_naming_it(
    rt: Runtime, argument: str, kind: str
) -> None:
    run, wf, start = _start(rt, argument, HOSTILE[kind])

    with pytest.raises(InvalidInputError) as caught:
        start()

    assert caught.value.field == argument
    assert caught.value.errors, "the error lists what was wrong"
    assert wf.get_workflow_run_execution_result(run.run_id) is None  # nothing recorded


@pytest.mark.parametrize("argument", ["input_data", "request_context", "tracing_options"])
def test_the_error_names_the_path_inside_the_argument(rt: Runtime, argument: str) -> None:
    _, _, start = _start(rt, argument, {"inner": ["ok", "bad\udcff"]})

    with pytest.raises(InvalidInputError) as caught:
        start()

    assert "'inner'" in str(caught.value) and "[1]" in str(caught.value)


@pytest.mark.parametrize("where", ["key", "value"])
def test_a_lone_surrogate_in_a_request_context_key_or_value_is_refused(
    rt: Runtime, where: str
) -> None:
    wf = rt.register(loose)
    context = {"k\ud800": 1} if where == "key" else {"k": "\ud800"}

    with pytest.raises(InvalidInputError) as caught:
        wf.create_run().start_async(input_data={"value": 1}, request_context=context)

    assert caught.value.field == "request_context"


def test_a_run_refused_for_a_hostile_value_starts_with_good_input(rt: Runtime) -> None:
    wf = rt.register(loose)
    run = wf.create_run()
    with pytest.raises(InvalidInputError):
        run.start_async(input_data={"value": nested(1_000)})

    assert run.start(input_data={"value": "fine"}, timeout=10).status == "success"


def test_nesting_within_the_limit_is_stored_and_read_back(rt: Runtime) -> None:
    wf = rt.register(loose)

    result = wf.create_run().start(input_data={"value": nested(100)}, timeout=10)

    assert result.status == "success"
    assert result.result == {"value": nested(100)}


@pytest.mark.parametrize("run_id", ["a\ud800", "\udcff"])
def test_a_run_id_that_is_not_utf8_is_refused_at_create_run(rt: Runtime, run_id: str) -> None:
    wf = rt.register(loose)

    with pytest.raises(ValueError, match="UTF-8"):
        wf.create_run(run_id)


@pytest.mark.parametrize("query", ["get", "by_id", "delete"])
def test_a_surrogate_run_id_in_a_query_is_a_value_error_on_every_store(
    rt: Runtime, query: str
) -> None:
    wf = rt.register(loose)
    call = {
        "get": wf.get_workflow_run_execution_result,
        "by_id": wf.get_workflow_run_by_id,
        "delete": wf.delete_workflow_run_by_id,
    }[query]

    with pytest.raises(ValueError, match="UTF-8"):
        call("x\ud800")


# --- NUL characters: text every store but PostgreSQL would take --------------------------


def test_a_nul_character_in_a_run_id_is_refused_at_create_run_and_in_queries(rt: Runtime) -> None:
    # PostgreSQL's text cannot hold NUL: taken in memory or SQLite, such an id would fail
    # only once the same code ran on a shared store, as a store error.
    wf = rt.register(loose)

    with pytest.raises(ValueError, match="NUL"):
        wf.create_run("run\x00one")
    for query in (wf.get_workflow_run_execution_result, wf.get_workflow_run_by_id):
        with pytest.raises(ValueError, match="NUL"):
            query("run\x00one")


def test_a_nul_character_in_a_resource_id_or_idempotency_key_is_refused_and_records_nothing(
    rt: Runtime,
) -> None:
    wf = rt.register(loose)
    with pytest.raises(ValueError, match="NUL"):
        wf.create_run(resource_id="tenant\x00")
    run = wf.create_run()
    with pytest.raises(ValueError, match=r"resource_id .* NUL"):
        run.start_async(input_data={"value": 1}, resource_id="tenant\x00")
    with pytest.raises(ValueError, match="idempotency_key holds a NUL"):
        run.start_async(input_data={"value": 1}, idempotency_key="key\x00")

    assert wf.get_workflow_run_execution_result(run.run_id) is None
    assert run.start(input_data={"value": 1}, timeout=10).status == "success"


LONG_NAME = "字" * 342
"""1,026 bytes of UTF-8 in 342 characters: more than a PostgreSQL index entry takes with
another name beside it (a run id and a step path, a workflow id and a key)."""


def test_a_name_too_long_for_postgresql_is_refused_on_every_store(rt: Runtime) -> None:
    # PostgreSQL refused it as a value too large for an index (SQLSTATE 54000), which the
    # store took for a passing fault: it tried again for 30 s, holding up every other
    # run's writes, then said "try again later" of what never could succeed.
    wf = rt.register(loose)
    with pytest.raises(ValueError, match="1026 bytes long in UTF-8; at most 1024") as refused:
        wf.create_run(LONG_NAME)
    assert len(str(refused.value)) < 300  # the name is cut short in the message
    with pytest.raises(ValueError, match="bytes long"):
        wf.create_run(resource_id=LONG_NAME)
    run = wf.create_run()
    with pytest.raises(ValueError, match="idempotency_key is 2048 bytes long"):
        run.start_async(input_data={"value": 1}, idempotency_key="😀" * 512)
    assert wf.get_workflow_run_execution_result(run.run_id) is None
    assert wf.create_run("字" * 341).start(input_data={"value": 1}, timeout=10).status == "success"


def test_a_step_path_too_long_for_postgresql_is_refused_at_commit() -> None:
    # Each id within the limit, but a nested workflow's id and its step's id make one path,
    # which a store keys step records by: PostgreSQL refused it, and the run failed there.
    child = (
        create_workflow(id="c" * 600, input_schema=Loose, output_schema=Loose)
        .then(
            create_step(id="s" * 600, input_schema=Loose, output_schema=Loose, execute=echo.execute)
        )
        .commit()
    )
    parent = create_workflow(id="parent", input_schema=Loose, output_schema=Loose).then(child)
    with pytest.raises(WorkflowDefinitionError, match=r"step path .* is 1201 bytes long"):
        parent.commit()


def test_only_postgresql_errors_that_may_pass_are_tried_again() -> None:
    psycopg = pytest.importorskip("psycopg")
    from runtime._stores.postgres import _passing

    # A value too large for an index: an OperationalError to psycopg, but for good.
    assert not _passing(psycopg.errors.ProgramLimitExceeded("index row size exceeds maximum"))
    assert not _passing(psycopg.errors.ObjectInUse("in use"))
    for passing in (
        psycopg.OperationalError("server closed the connection unexpectedly"),  # no SQLSTATE
        psycopg.errors.AdminShutdown("terminating connection"),
        psycopg.errors.LockNotAvailable("could not obtain lock"),
        psycopg.errors.DeadlockDetected("deadlock detected"),
        psycopg.errors.DiskFull("could not extend file"),
    ):
        assert _passing(passing), passing


@pytest.mark.parametrize("where", ["workflow", "step", "map", "version"])
@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800", LONG_NAME])
def test_a_name_no_store_could_keep_is_refused_at_definition(where: str, bad: str) -> None:
    with pytest.raises(WorkflowDefinitionError, match=r"NUL|UTF-8"):
        if where == "workflow":
            create_workflow(id=bad, input_schema=Loose, output_schema=Loose)
        elif where == "step":
            create_step(id=bad, input_schema=Loose, output_schema=Loose, execute=echo.execute)
        elif where == "map":
            create_workflow(id="w", input_schema=Loose, output_schema=Loose).map(dict, id=bad)
        else:
            create_workflow(id="w", input_schema=Loose, output_schema=Loose, version=bad)


@pytest.mark.postgres
def test_a_nul_character_inside_a_runs_values_is_kept_on_postgresql(postgres_url: str) -> None:
    # Values travel in the snapshot's bytes, not in text columns: only names are refused.
    with Runtime(store=postgres_url) as runtime:
        wf = runtime.register(loose)
        result = wf.create_run().start(
            input_data={"value": "a\x00b"},
            request_context={"k\x00": "v\x00"},
            tracing_options={"metadata": {"m": "\x00"}},
            timeout=10,
        )

        assert result.status == "success"
        assert result.result == {"value": "a\x00b"}
        assert wf.get_workflow_run_execution_result(result.run_id).result == {"value": "a\x00b"}


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"from_date": "2020-01-01"}, TypeError),
        ({"to_date": 1_600_000_000}, TypeError),
        ({"limit": 2.5}, TypeError),
        ({"limit": True}, TypeError),
        ({"offset": "3"}, TypeError),
        ({"status": 3}, TypeError),
        ({"limit": 2**63}, ValueError),
        ({"offset": 2**63}, ValueError),
        ({"limit": 0}, ValueError),
        ({"offset": -1}, ValueError),
        ({"status": "sleeping"}, ValueError),
    ],
)
def test_bad_list_arguments_raise_at_the_call_on_every_store(
    rt: Runtime, arguments: dict[str, Any], error: type[Exception]
) -> None:
    wf = rt.register(loose)

    with pytest.raises(error):
        wf.list_workflow_runs(**arguments)


def test_the_largest_page_arguments_are_taken(rt: Runtime) -> None:
    wf = rt.register(loose)
    wf.create_run().start(input_data={"value": 1}, timeout=10)

    page = wf.list_workflow_runs(limit=2**63 - 1, offset=0, from_date=datetime(2000, 1, 1))

    assert page.total == 1


surrogates = st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1)
texts = st.text() | st.builds(lambda a, b, c: a + b + c, st.text(), surrogates, st.text())
values = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=8,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(context=st.dictionaries(texts, values, max_size=3), data=values)
def test_any_context_and_input_is_a_run_or_an_invalid_input_error(
    context: dict[str, Any], data: Any
) -> None:
    with Runtime() as rt:
        wf = rt.register(loose)
        run = wf.create_run()
        try:
            run.start_async(input_data={"value": data}, request_context=context)
        except InvalidInputError:
            assert wf.get_workflow_run_execution_result(run.run_id) is None
            return
        assert run.wait(10).status == "success"


_OTHER_SCHEME = "unknown store URL scheme"
_SQLITE_IN_MEMORY = "use store='memory'"


@pytest.mark.parametrize(
    ("store", "message"),
    [
        # Taken for a path, "memory://" became a SQLite file named "memory:" in the working
        # folder, and "mysql://host/db" a "folder mysql:/host does not exist" at start().
        ("memory://", _OTHER_SCHEME),
        ("mysql://host/db", _OTHER_SCHEME),
        ("redis://localhost", _OTHER_SCHEME),
        ("file:///tmp/runs.db", _OTHER_SCHEME),
        # SQLite's name for a database private to one connection made a file named
        # ":memory:" in the working folder.
        (":memory:", _SQLITE_IN_MEMORY),
        ("sqlite:///:memory:", _SQLITE_IN_MEMORY),
        ("file::memory:?cache=shared", _SQLITE_IN_MEMORY),
    ],
)
def test_a_store_no_file_can_be_is_a_value_error_that_says_why_and_makes_no_file(
    store: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ValueError, match=message):
        Runtime(store=store)

    assert list(tmp_path.iterdir()) == []


def test_a_relative_store_path_keeps_naming_the_same_file_after_the_process_changes_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A daemon that detaches does os.chdir("/"). Each thread's reader and the scheduler
    # open connections of their own later, by path: "runs.db" then named another file,
    # and a query from a new thread failed with "unable to open database file".
    home, elsewhere = tmp_path / "app", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(home)
    runtime = Runtime(store="runs.db")
    monkeypatch.chdir(elsewhere)  # between Runtime(...) and start()
    with runtime:
        bound = runtime.register(loose)
        first = bound.create_run()
        assert first.start(input_data={"value": 1}, timeout=10).status == "success"
        monkeypatch.chdir(tmp_path)  # while it runs
        second = bound.create_run()
        assert second.start(input_data={"value": 2}, timeout=10).status == "success"
        found: list[Any] = []
        reader = threading.Thread(
            target=lambda: found.append(bound.get_workflow_run_execution_result(first.run_id))
        )
        reader.start()
        reader.join(10)
        assert found and found[0] is not None and found[0].result == {"value": 1}

    assert (home / "runs.db").exists()
    assert not list(elsewhere.iterdir())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["app", "elsewhere"]


def test_a_store_path_that_starts_with_a_tilde_is_in_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It was taken for a folder named "~" in the working folder: "folder ~ does not exist".
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "state").mkdir()

    with Runtime(store="~/state/runs.db") as runtime:
        result = runtime.register(loose).create_run().start(input_data={"value": 1}, timeout=10)

    assert result.status == "success"
    assert (tmp_path / "state" / "runs.db").exists()
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize("store", [5, object(), b"runs.db", ["memory"]])
def test_a_runtime_on_something_that_is_not_a_store_is_a_type_error_and_starts_nothing(
    store: Any,
) -> None:
    before = {thread.ident for thread in threading.enumerate()}

    with pytest.raises(TypeError, match="store must be"):
        Runtime(store=store)

    assert {thread.ident for thread in threading.enumerate()} <= before


# --- timeouts ------------------------------------------------------------------------------


def _slow(ctx: Any) -> Any:
    import time

    time.sleep(0.2)
    return ctx.input_data


slow = (
    create_workflow(id="hostile-slow", input_schema=Loose, output_schema=Loose)
    .then(create_step(id="slow", input_schema=Loose, output_schema=Loose, execute=_slow))
    .commit()
)


@pytest.mark.parametrize(
    ("timeout", "error"),
    [
        ("5", TypeError),
        (True, TypeError),
        (b"1", TypeError),
        (Decimal("5"), TypeError),
        (float("nan"), ValueError),
    ],
    ids=["str", "bool", "bytes", "decimal", "nan"],
)
def test_a_timeout_that_is_no_number_of_seconds_is_refused_before_anything_starts(
    rt: Runtime, timeout: Any, error: type[Exception]
) -> None:
    # Before: "'>' not supported between 'str' and 'int'" from deep inside, once the run
    # had started; NaN waited not at all and blamed the run with RunTimeoutError.
    wf = rt.register(loose)
    run = wf.create_run()

    with pytest.raises(error, match="timeout must be a number of seconds or None"):
        run.start(input_data={"value": 1}, timeout=timeout)
    assert wf.get_workflow_run_execution_result(run.run_id) is None

    run.start_async(input_data={"value": 1})
    for call in (run.wait, rt.stop):
        with pytest.raises(error, match="timeout must be a number of seconds"):
            call(timeout)
    assert rt.is_running
    assert run.wait(10).status == "success"


@pytest.mark.parametrize(
    "timeout",
    [float("inf"), 1e30, 10**30, 10**400, Fraction(7, 2)],
    ids=["inf", "1e30", "10**30", "10**400", "fraction"],
)
def test_an_endless_timeout_waits_as_long_as_it_takes(rt: Runtime, timeout: float) -> None:
    # Before: OverflowError ("timestamp out of range for platform time_t").
    wf = rt.register(slow)
    run = wf.create_run()
    run.start_async(input_data={"value": 1})

    assert run.wait(timeout).status == "success"
    assert wf.create_run().start(input_data={"value": 2}, timeout=timeout).status == "success"
    wf.create_run().start_async(input_data={"value": 3})
    rt.stop(timeout)  # the run in progress ends first
    assert not rt.is_running


def test_a_negative_timeout_is_a_deadline_already_past(rt: Runtime) -> None:
    # As threading takes it: `run.wait(deadline - time.monotonic())` late is no error of type.
    wf = rt.register(slow)
    run = wf.create_run()
    run.start_async(input_data={"value": 1})

    with pytest.raises(RunTimeoutError):
        run.wait(-1)
    assert run.wait(10).status == "success"


@pytest.mark.parametrize(
    ("stop_timeout", "error"),
    [(float("nan"), ValueError), ("5", TypeError), (None, TypeError), (-1, ValueError)],
)
def test_a_stop_timeout_that_is_no_number_of_seconds_is_refused(
    stop_timeout: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="stop_timeout must"):
        Runtime(stop_timeout=stop_timeout)


# --- bytes that are not UTF-8 ------------------------------------------------------------


class Blob(BaseModel):
    data: bytes


class Base64Blob(BaseModel):
    model_config = {"ser_json_bytes": "base64", "val_json_bytes": "base64"}

    data: bytes


def test_bytes_that_are_not_utf8_are_refused_with_what_to_do_and_that_works() -> None:
    # pydantic writes a bytes field as UTF-8 text in JSON mode, which is what a snapshot
    # keeps: "'utf-8' codec can't decode byte 0xff" said nothing of how to keep them.
    raw = b"\xff\xfe\x00binary"
    echo_blob = create_step(
        id="echo", input_schema=Blob, output_schema=Blob, execute=lambda ctx: ctx.input_data
    )
    make_blob = create_step(
        id="make", input_schema=Loose, output_schema=Blob, execute=lambda ctx: Blob(data=raw)
    )
    keep, again = (
        create_step(
            id=name,
            input_schema=Base64Blob,
            output_schema=Base64Blob,
            execute=lambda ctx: ctx.input_data,
        )
        for name in ("keep", "again")
    )
    blobs = create_workflow(id="blobs", input_schema=Blob, output_schema=Blob).then(echo_blob)
    made = create_workflow(id="made", input_schema=Loose, output_schema=Blob).then(make_blob)
    kept = create_workflow(id="kept", input_schema=Base64Blob, output_schema=Base64Blob)
    kept = kept.then(keep).then(again)

    with Runtime() as runtime:
        with pytest.raises(InvalidInputError, match="ser_json_bytes='base64'"):
            runtime.register(blobs.commit()).create_run().start(input_data={"data": raw})
        failed = runtime.register(made.commit()).create_run().start(input_data={"value": 1})
        result = runtime.register(kept.commit()).create_run().start(input_data={"data": raw})

    assert failed.status == "failed" and failed.error is not None
    assert "ser_json_bytes='base64'" in failed.error.message
    assert result.status == "success", result.error
    assert result.output is not None and result.output.data == raw


# --- nesting pydantic will not serialize, in a model ------------------------------------


class Pause(BaseModel):
    value: Any = None


def _resumable() -> Any:
    def body(ctx: Any) -> Any:
        if ctx.resume_data is None:
            ctx.suspend()
        return ctx.input_data

    step = create_step(
        id="wait", input_schema=Loose, output_schema=Loose, execute=body, resume_schema=Pause
    )
    return create_workflow(id="hostile-resume", input_schema=Loose, output_schema=Loose).then(step)


@pytest.mark.parametrize(
    ("argument", "depth"),
    [(argument, 1_000) for argument in [*ARGUMENTS, "resume_data"]]
    # Within MAX_NESTING, but past what pydantic serializes in a model's field.
    + [(argument, 255) for argument in ["input_data", "initial_state", "resume_data"]],
)
def test_a_value_nested_too_deep_is_refused_naming_the_path_inside_the_argument(
    rt: Runtime, argument: str, depth: int
) -> None:
    # A model's dump failed with pydantic's "Maximum serialization depth exceeded" alone,
    # without the path the other refused values get (input_data, initial_state, a resume).
    if argument == "resume_data":
        run = rt.register(_resumable().commit()).create_run()
        assert run.start(input_data={"value": 1}, timeout=10).status == "suspended"
        start = lambda: run.resume(resume_data={"value": nested(depth)}, timeout=10)  # noqa: E731
    else:
        _, _, start = _start(rt, argument, nested(depth))
    inside = "value" if argument in ("input_data", "resume_data") else "k"

    with pytest.raises(InvalidInputError) as caught:
        start()

    (where,) = caught.value.errors[0]["loc"]
    assert where.startswith(f"{argument.replace('_options', '_options.metadata')}[{inside!r}]")
    assert where.count("['down']") >= 250
    assert where in str(caught.value)


@pytest.mark.parametrize("where", ["output", "state"])
def test_a_step_value_nested_too_deep_fails_the_run_naming_the_path(
    rt: Runtime, where: str
) -> None:
    def body(ctx: Any) -> Loose:
        if where == "state":
            ctx.set_state({"value": nested(255)})
            return ctx.input_data
        return Loose(value=nested(255))

    step = create_step(id="deep", input_schema=Loose, output_schema=Loose, execute=body)
    workflow = create_workflow(
        id=f"deep-{where}", input_schema=Loose, output_schema=Loose, state_schema=Free
    )

    result = rt.register(workflow.then(step).commit()).create_run().start(input_data={})

    assert result.status == "failed" and result.error is not None
    assert result.error.name == "SnapshotEncodingError"
    prefix = "step 'deep' output['value']" if where == "output" else "state['value']"
    assert prefix + "['down']" * 250 in result.error.message
    assert "nested 255 levels deep" in result.error.message


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ("a\ud800b", "lone surrogate"),
        (2**64, "out of 64-bit range"),
        (-(2**63) - 1, "out of 64-bit range"),
    ],
)
def test_a_flat_step_output_that_cannot_be_stored_fails_the_run_naming_step_and_type(
    rt: Runtime, value: Any, type_name: str
) -> None:
    # A small flat dict of scalars, the usual output, is checked without msgpack's
    # trial encoding: promise 4 holds there as well. A model of the output schema
    # is returned: it is not validated again.
    flat = create_step(
        id="flat", input_schema=Loose, output_schema=Free, execute=lambda ctx: Free(value=value)
    )
    workflow = create_workflow(id="flat", input_schema=Loose, output_schema=Free)

    result = rt.register(workflow.then(flat).commit()).create_run().start(input_data={})

    assert result.status == "failed" and result.error is not None
    assert result.error.name == "SnapshotEncodingError"
    assert "step 'flat' output['value']" in result.error.message
    assert type_name in result.error.message
    assert rt.register(loose).create_run().start(input_data={"value": 1}).status == "success"


class Stamped(BaseModel):
    when: datetime
    data: bytes


def test_a_step_output_that_cannot_be_dumped_blames_the_field_at_fault(rt: Runtime) -> None:
    # The Python-mode dump the path was looked for in keeps a datetime as it is, and the
    # error blamed the first field: "output['when'] holds a value of type datetime".
    step = create_step(
        id="stamp",
        input_schema=Loose,
        output_schema=Stamped,
        execute=lambda ctx: Stamped(when=datetime(2024, 1, 1), data=b"\xff"),
    )
    workflow = create_workflow(id="stamped", input_schema=Loose, output_schema=Stamped)

    result = rt.register(workflow.then(step).commit()).create_run().start(input_data={})

    assert result.status == "failed" and result.error is not None
    assert "step 'stamp' output['data'] holds a value of type bytes" in result.error.message
    assert "ser_json_bytes='base64'" in result.error.message
    assert "datetime" not in result.error.message


class Picky(BaseModel):
    """A schema whose validator raises what pydantic passes on, or keeps what JSON cannot."""

    value: Any = None

    @field_validator("value")
    @classmethod
    def _check(cls, value: Any) -> Any:
        if value == "raise":
            raise KeyError(value)
        return object() if value == "object" else value


def _passing(schema: type[BaseModel], where: str) -> Any:
    """A workflow in which a step's output meets ``schema`` at ``where``, not as its own."""
    step = create_step(
        id="pass", input_schema=Loose, output_schema=Loose, execute=lambda ctx: ctx.input_data
    )
    inner = create_step(
        id="inner", input_schema=Loose, output_schema=Loose, execute=lambda ctx: ctx.input_data
    )
    child_in = schema if where == "nested-input" else Loose
    child_out = schema if where == "nested-output" else Loose
    child = create_workflow(id="child", input_schema=child_in, output_schema=child_out)
    outer = schema if where == "workflow-output" else Loose
    workflow = create_workflow(id=f"picky-{where}", input_schema=Loose, output_schema=outer)
    workflow = workflow.then(step)
    return workflow.then(child.then(inner).commit()) if where != "workflow-output" else workflow


@pytest.mark.parametrize("where", ["workflow-output", "nested-input", "nested-output"])
@pytest.mark.parametrize(
    ("value", "error"),
    [("raise", "StepValidationError"), ("object", "SnapshotEncodingError")],
)
def test_a_schema_between_nodes_that_raises_or_keeps_the_unstorable_fails_the_run_cleanly(
    rt: Runtime, where: str, value: str, error: str
) -> None:
    # Validated again on the run actor's thread (a nested workflow's input or output, the
    # workflow's output): a KeyError from a validator, or an object in an Any field, crashed
    # the run actor ("RunCrashedError", a traceback on stderr), or failed the run with
    # pydantic's bare "Unable to serialize unknown type" from the step.
    wf = rt.register(_passing(Picky, where).commit())

    result = wf.create_run().start(input_data={"value": value}, timeout=10)

    assert result.status == "failed" and result.error is not None
    assert result.error.name == error, result.error.message
    assert "Picky" in result.error.message
    if value == "object":
        assert "Picky['value'] holds a value of type object" in result.error.message


class Bytes(BaseModel):
    data: bytes = b""


def _hands_over(call: str) -> Any:
    """A step that hands ``b"\\xff"`` to ``ctx.<call>`` through a schema with a bytes field."""

    def body(ctx: Any) -> Any:
        if call == "suspend":
            ctx.suspend({"data": b"\xff"})
        elif call == "writer":
            ctx.writer.write({"data": b"\xff"})
        elif call == "bail":
            ctx.bail({"data": b"\xff"})
        else:
            ctx.set_state({"data": b"\xff"})
        return {"data": b"ok"}

    schemas = {"suspend": "suspend_schema", "writer": "writer_schema", "set_state": "state_schema"}
    options = {schemas[call]: Bytes} if call in schemas else {}
    step = create_step(id=call, input_schema=Loose, output_schema=Bytes, execute=body, **options)
    workflow = create_workflow(
        id=f"hands-{call}", input_schema=Loose, output_schema=Bytes, state_schema=Bytes
    )
    return workflow.then(step).commit()


@pytest.mark.parametrize("call", ["suspend", "writer", "bail", "set_state"])
def test_bytes_that_are_not_utf8_handed_to_the_context_fail_as_the_readme_says(
    rt: Runtime, call: str
) -> None:
    # Through a suspend, writer or (the step's own) state schema, or the workflow's output
    # schema for a bail, they failed the run with pydantic's bare UnicodeDecodeError.
    result = rt.register(_hands_over(call)).create_run().start(input_data={}, timeout=10)

    assert result.status == "failed" and result.error is not None
    assert result.error.name == "SnapshotEncodingError", result.error.message
    assert "['data'] holds a value of type bytes" in result.error.message
    assert "ser_json_bytes='base64'" in result.error.message


class OtherBytes(BaseModel):
    data: bytes


def test_a_model_of_another_class_that_cannot_be_dumped_is_refused_as_unstorable(
    rt: Runtime,
) -> None:
    # Handed over as a model of another class, it is checked as its dump is, and the dump
    # failed: at the start "was rejected by Bytes: a validator raised UnicodeDecodeError",
    # from a step the bare UnicodeDecodeError.
    echo_bytes = create_step(
        id="echo", input_schema=Bytes, output_schema=Bytes, execute=lambda ctx: ctx.input_data
    )
    starts = create_workflow(id="other-in", input_schema=Bytes, output_schema=Bytes)
    returns = create_step(
        id="other",
        input_schema=Loose,
        output_schema=Bytes,
        execute=lambda ctx: OtherBytes(data=b"\xff"),
    )
    steps = create_workflow(id="other-out", input_schema=Loose, output_schema=Bytes)

    with pytest.raises(InvalidInputError) as caught:
        rt.register(starts.then(echo_bytes).commit()).create_run().start_async(
            input_data=OtherBytes(data=b"\xff")
        )
    result = rt.register(steps.then(returns).commit()).create_run().start(input_data={})

    assert caught.value.errors[0]["type"] == "not_encodable"
    assert caught.value.errors[0]["loc"] == ("input_data['data']",)
    assert "a validator raised" not in str(caught.value)
    assert result.status == "failed" and result.error is not None
    assert result.error.name == "SnapshotEncodingError"
    assert "step 'other' output['data'] holds a value of type bytes" in result.error.message
