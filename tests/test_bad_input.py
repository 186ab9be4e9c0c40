"""Bad input gets a clear error at the call and loses nothing; a failing step fails only its run."""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from runtime import (
    AbortSignal,
    InvalidInputError,
    RequestContext,
    RunReader,
    Runtime,
    RunTimeoutError,
    Step,
    StoreError,
    TracingOptions,
    WorkflowError,
    create_step,
    create_workflow,
)
from runtime._queries import list_runs
from tests._support import Value, callboard_threads, shout, shout_step

BLOCK_LIMIT = 10.0


class Other(BaseModel):
    number: int


class Counter(BaseModel):
    count: int


class Loose(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    value: Any


def shout_workflow(workflow_id: str = "shout", state_schema=None):
    step = create_step(id="shout", input_schema=Value, output_schema=Value, execute=shout)
    return (
        create_workflow(
            id=workflow_id, input_schema=Value, output_schema=Value, state_schema=state_schema
        )
        .then(step)
        .commit()
    )


def single_step_workflow(body, *, workflow_id: str, output_schema=Value):
    step = create_step(id="body", input_schema=Value, output_schema=output_schema, execute=body)
    return (
        create_workflow(id=workflow_id, input_schema=Value, output_schema=output_schema)
        .then(step)
        .commit()
    )


def assert_nothing_recorded_and_a_good_start_works(wf, run) -> None:
    assert wf.get_workflow_run_execution_result(run.run_id) is None
    result = run.start(input_data={"value": "good"}, timeout=5)
    assert result.status == "success"
    assert result.result == {"value": "GOOD"}


# --- input_data -------------------------------------------------------------------------


def test_input_that_fails_the_schema_raises_invalid_input_and_records_nothing(
    runtime: Runtime,
) -> None:
    wf = runtime.register(shout_workflow())
    run = wf.create_run()
    with pytest.raises(InvalidInputError) as caught:
        run.start_async(input_data={"value": 12})
    error = caught.value
    assert isinstance(error, WorkflowError)
    assert isinstance(error, ValueError)
    assert error.field == "input_data"
    assert error.run_id == run.run_id
    assert [(e["loc"], e["type"]) for e in error.errors] == [(("value",), "string_type")]
    assert "Value" in str(error)
    assert_nothing_recorded_and_a_good_start_works(wf, run)


def test_input_missing_a_field_carries_pydantic_error_list(runtime: Runtime) -> None:
    wf = runtime.register(shout_workflow())
    run = wf.create_run()
    with pytest.raises(InvalidInputError) as caught:
        run.start_async(input_data={})
    assert [(e["loc"], e["type"]) for e in caught.value.errors] == [(("value",), "missing")]
    assert_nothing_recorded_and_a_good_start_works(wf, run)


def test_no_input_at_all_is_checked_against_the_schema(runtime: Runtime) -> None:
    wf = runtime.register(shout_workflow())
    run = wf.create_run()
    with pytest.raises(InvalidInputError):
        run.start_async()
    assert_nothing_recorded_and_a_good_start_works(wf, run)


@pytest.mark.parametrize(
    "bad_input",
    ["a plain string", 42, Other(number=1), ["value", "x"]],
    ids=["str", "int", "model-of-another-class", "list"],
)
def test_input_of_the_wrong_type_raises_invalid_input(runtime: Runtime, bad_input) -> None:
    wf = runtime.register(shout_workflow())
    run = wf.create_run()
    with pytest.raises(InvalidInputError) as caught:
        run.start_async(input_data=bad_input)
    assert caught.value.field == "input_data"
    assert caught.value.errors
    assert all({"type", "loc", "msg"} <= set(error) for error in caught.value.errors)
    assert_nothing_recorded_and_a_good_start_works(wf, run)


def test_start_raises_invalid_input_too(runtime: Runtime) -> None:
    wf = runtime.register(shout_workflow())
    run = wf.create_run()
    with pytest.raises(InvalidInputError):
        run.start(input_data={"value": None}, timeout=5)
    assert_nothing_recorded_and_a_good_start_works(wf, run)


class Picky(BaseModel):
    """A schema whose validator raises what pydantic does not turn into a ValidationError."""

    value: str

    @field_validator("value")
    @classmethod
    def _picky(cls, value: str) -> str:
        if value == "type":
            raise TypeError("not this type of value")
        if value == "key":
            raise KeyError("no such key")
        if value == "bare":
            raise LookupError
        return value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("type", "TypeError: not this type of value"),
        ("key", "KeyError: 'no such key'"),
        ("bare", "LookupError"),
    ],
)
def test_a_validator_raising_another_exception_still_raises_invalid_input(
    runtime: Runtime, value: str, reason: str
) -> None:
    # pydantic passes on what a validator raises but ValueError and AssertionError: a
    # caller mapping InvalidInputError to "bad request" must not get a bare KeyError.
    step = create_step(id="shout", input_schema=Picky, output_schema=Value, execute=shout)
    wf = runtime.register(
        create_workflow(id="picky", input_schema=Picky, output_schema=Value).then(step).commit()
    )
    run = wf.create_run()
    with pytest.raises(InvalidInputError) as caught:
        run.start_async(input_data={"value": value})
    error = caught.value
    assert error.field == "input_data"
    assert error.run_id == run.run_id
    assert error.errors == [{"type": "validator_raised", "loc": (), "msg": reason}]
    assert f"rejected by Picky: a validator raised {reason}" in str(error)
    assert type(error.__cause__).__name__ == reason.split(":", maxsplit=1)[0]
    assert_nothing_recorded_and_a_good_start_works(wf, run)


def test_a_validator_raising_another_exception_in_state_or_resume_data_raises_invalid_input(
    runtime: Runtime,
) -> None:
    def ask(ctx: Any) -> Value:
        if ctx.resume_data is None:
            ctx.suspend({"question": "which?"})
        return Value(value=ctx.resume_data.value)

    step = create_step(
        id="ask", input_schema=Value, output_schema=Value, resume_schema=Picky, execute=ask
    )
    wf = runtime.register(
        create_workflow(
            id="picky-state", input_schema=Value, output_schema=Value, state_schema=Picky
        )
        .then(step)
        .commit()
    )
    run = wf.create_run()
    with pytest.raises(InvalidInputError) as caught:
        run.start_async(input_data={"value": "v"}, initial_state={"value": "key"})
    assert caught.value.field == "initial_state"
    assert wf.get_workflow_run_execution_result(run.run_id) is None

    suspended = run.start(input_data={"value": "v"}, initial_state={"value": "s"}, timeout=5)
    assert suspended.status == "suspended"
    with pytest.raises(InvalidInputError) as caught:
        run.resume(step="ask", resume_data={"value": "type"}, timeout=5)
    assert caught.value.field == "resume_data"
    assert caught.value.errors[0]["type"] == "validator_raised"
    assert wf.get_workflow_run_execution_result(run.run_id).status == "suspended"
    resumed = run.resume(step="ask", resume_data={"value": "fine"}, timeout=5)
    assert resumed.status == "success" and resumed.result == {"value": "fine"}


# --- initial_state -----------------------------------------------------------------------


@pytest.mark.parametrize("bad_state", [{"count": "many"}, {}, "not a mapping", Value(value="v")])
def test_invalid_initial_state_raises_invalid_input(runtime: Runtime, bad_state) -> None:
    wf = runtime.register(shout_workflow("stateful", state_schema=Counter))
    run = wf.create_run()
    with pytest.raises(InvalidInputError) as caught:
        run.start_async(input_data={"value": "v"}, initial_state=bad_state)
    assert caught.value.field == "initial_state"
    assert caught.value.errors
    assert wf.get_workflow_run_execution_result(run.run_id) is None
    result = run.start(input_data={"value": "v"}, initial_state={"count": 1}, timeout=5)
    assert result.status == "success"


def test_initial_state_without_a_schema_must_be_an_encodable_mapping(runtime: Runtime) -> None:
    wf = runtime.register(shout_workflow("stateless"))
    run = wf.create_run()
    with pytest.raises(InvalidInputError) as caught:
        run.start_async(input_data={"value": "v"}, initial_state=["not", "a", "mapping"])
    assert caught.value.field == "initial_state"
    with pytest.raises(InvalidInputError) as caught:
        run.start_async(input_data={"value": "v"}, initial_state={"handle": object()})
    assert caught.value.field == "initial_state"
    assert "'handle'" in str(caught.value)
    assert_nothing_recorded_and_a_good_start_works(wf, run)


# --- tracing options ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "trace_id",
    ["", "a" * 33, "not-hex", "xyz", "0123456789abcdeg", " abc", "abc\n"],
    ids=["empty", "33-chars", "dash", "letters", "g", "leading-space", "trailing-newline"],
)
def test_tracing_options_refuse_a_bad_trace_id(trace_id: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TracingOptions(trace_id=trace_id)
    assert isinstance(caught.value, ValueError)
    assert "trace_id" in str(caught.value)


def test_tracing_options_as_a_dict_with_a_bad_trace_id_raise_invalid_input(
    runtime: Runtime,
) -> None:
    wf = runtime.register(shout_workflow())
    run = wf.create_run()
    with pytest.raises(InvalidInputError) as caught:
        run.start_async(input_data={"value": "v"}, tracing_options={"trace_id": "z" * 40})
    assert caught.value.field == "tracing_options"
    assert caught.value.errors[0]["loc"] == ("trace_id",)
    assert_nothing_recorded_and_a_good_start_works(wf, run)


def test_tracing_options_of_the_wrong_type_raise_invalid_input(runtime: Runtime) -> None:
    wf = runtime.register(shout_workflow())
    run = wf.create_run()
    with pytest.raises(InvalidInputError) as caught:
        run.start_async(input_data={"value": "v"}, tracing_options="abc")
    assert caught.value.field == "tracing_options"
    with pytest.raises(InvalidInputError) as caught:
        run.start_async(input_data={"value": "v"}, tracing_options={"unknown_option": 1})
    assert caught.value.field == "tracing_options"
    assert_nothing_recorded_and_a_good_start_works(wf, run)


UNENCODABLE = [
    pytest.param(object(), "object", id="object"),
    pytest.param({1, 2}, "set", id="set"),
    pytest.param(2**70, "int", id="int-beyond-64-bits"),
]


@pytest.mark.parametrize(("bad_value", "type_name"), UNENCODABLE)
def test_metadata_msgpack_cannot_encode_raises_invalid_input_naming_the_key(
    runtime: Runtime, bad_value, type_name: str
) -> None:
    wf = runtime.register(shout_workflow())
    run = wf.create_run()
    with pytest.raises(InvalidInputError) as caught:
        run.start_async(
            input_data={"value": "v"},
            tracing_options=TracingOptions(metadata={"fine": 1, "culprit": bad_value}),
        )
    assert caught.value.field == "tracing_options"
    assert "'culprit'" in str(caught.value)
    assert type_name in str(caught.value)
    assert_nothing_recorded_and_a_good_start_works(wf, run)


# --- request context ---------------------------------------------------------------------


@pytest.mark.parametrize(("bad_value", "type_name"), UNENCODABLE)
@pytest.mark.parametrize("as_request_context", [True, False], ids=["RequestContext", "dict"])
def test_request_context_msgpack_cannot_encode_raises_invalid_input_naming_the_key(
    runtime: Runtime, bad_value, type_name: str, as_request_context: bool
) -> None:
    wf = runtime.register(shout_workflow())
    run = wf.create_run()
    values = {"user": "ada", "culprit": bad_value}
    context = RequestContext(values) if as_request_context else values
    with pytest.raises(InvalidInputError) as caught:
        run.start_async(input_data={"value": "v"}, request_context=context)
    assert caught.value.field == "request_context"
    assert "'culprit'" in str(caught.value)
    assert type_name in str(caught.value)
    assert_nothing_recorded_and_a_good_start_works(wf, run)


def test_a_nested_unencodable_request_context_value_is_named_by_its_path(
    runtime: Runtime,
) -> None:
    wf = runtime.register(shout_workflow())
    run = wf.create_run()
    with pytest.raises(InvalidInputError) as caught:
        run.start_async(
            input_data={"value": "v"},
            request_context={"outer": {"inner": [1, object()]}},
        )
    message = str(caught.value)
    assert "'outer'" in message and "'inner'" in message and "object" in message


def test_a_request_context_that_is_not_a_mapping_raises_invalid_input(runtime: Runtime) -> None:
    wf = runtime.register(shout_workflow())
    run = wf.create_run()
    with pytest.raises(InvalidInputError) as caught:
        run.start_async(input_data={"value": "v"}, request_context=[("user", "ada")])
    assert caught.value.field == "request_context"
    with pytest.raises(InvalidInputError) as caught:
        run.start_async(input_data={"value": "v"}, request_context={1: "int key"})
    assert caught.value.field == "request_context"
    assert_nothing_recorded_and_a_good_start_works(wf, run)


def test_output_options_of_the_wrong_shape_raise_invalid_input(runtime: Runtime) -> None:
    wf = runtime.register(shout_workflow())
    run = wf.create_run()
    with pytest.raises(InvalidInputError) as caught:
        run.start_async(input_data={"value": "v"}, output_options={"include_state": "perhaps"})
    assert caught.value.field == "output_options"
    assert_nothing_recorded_and_a_good_start_works(wf, run)


# --- a step that raises --------------------------------------------------------------------


def test_a_step_that_raises_fails_its_run_with_the_error_name_and_message(
    runtime: Runtime,
) -> None:
    def broken(ctx):
        raise ValueError(f"cannot handle {ctx.input_data.value!r}")

    wf = runtime.register(single_step_workflow(broken, workflow_id="broken"))
    run = wf.create_run()
    run_id = run.start_async(input_data={"value": "this"}).run_id
    result = run.wait(timeout=5)
    assert result.status == "failed"
    assert result.result is None
    assert result.error is not None
    assert result.error.name == "ValueError"
    assert result.error.message == "cannot handle 'this'"
    assert result.error.details["type"] == "builtins.ValueError"
    assert "broken" in result.error.details["traceback"]
    step = result.steps["body"]
    assert step.status == "failed"
    assert step.output is None
    assert step.error == result.error
    assert step.started_at is not None and step.ended_at is not None
    assert step.started_at <= step.ended_at
    assert wf.get_workflow_run_execution_result(run_id) == result


def test_a_failing_step_leaves_other_runs_alone_and_the_runtime_keeps_serving(
    runtime: Runtime,
) -> None:
    entered, release = threading.Event(), threading.Event()

    def body(ctx):
        if ctx.input_data.value == "fail":
            raise RuntimeError("only this run fails")
        if ctx.input_data.value == "slow":
            entered.set()
            release.wait(BLOCK_LIMIT)
        return Value(value=ctx.input_data.value.upper())

    wf = runtime.register(single_step_workflow(body, workflow_id="mixed"))
    slow = wf.create_run()
    try:
        slow.start_async(input_data={"value": "slow"})
        assert entered.wait(5)
        failed = wf.create_run().start(input_data={"value": "fail"}, timeout=5)
        assert failed.status == "failed"
        assert failed.error is not None
        assert failed.error.message == "only this run fails"
    finally:
        release.set()
    assert slow.wait(timeout=5).result == {"value": "SLOW"}
    after = [wf.create_run() for _ in range(5)]
    for index, run in enumerate(after):
        run.start_async(input_data={"value": f"after{index}"})
    assert [run.wait(timeout=5).result for run in after] == [
        {"value": f"AFTER{index}"} for index in range(5)
    ]


def test_an_error_with_an_empty_message_is_named_by_its_class(runtime: Runtime) -> None:
    class QuietError(Exception):
        pass

    def body(ctx):
        raise QuietError

    wf = runtime.register(single_step_workflow(body, workflow_id="quiet"))
    result = wf.create_run().start(input_data={"value": "q"}, timeout=5)
    assert result.error is not None
    assert result.error.name == "QuietError"
    assert result.error.message


def test_a_step_raising_an_exception_that_cannot_be_printed_still_fails_its_run(
    runtime: Runtime,
) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("str() of this exception fails")

    def body(ctx):
        raise Unprintable

    wf = runtime.register(single_step_workflow(body, workflow_id="unprintable"))
    run = wf.create_run()
    run.start_async(input_data={"value": "u"})
    try:
        result = run.wait(timeout=2)
    except RunTimeoutError:
        pytest.fail("the run never ended: describing the step's error failed")
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "Unprintable"
    assert result.steps["body"].status == "failed"


def _raise_system_exit(ctx):
    raise SystemExit(3)


def _raise_keyboard_interrupt(ctx):
    raise KeyboardInterrupt("interrupted by the step")


async def _raise_system_exit_async(ctx):
    raise SystemExit(3)


async def _raise_keyboard_interrupt_async(ctx):
    raise KeyboardInterrupt("interrupted by the step")


async def _shout_async(ctx):
    return Value(value=ctx.input_data.value.upper())


async def _raise_cancelled_async(ctx):
    # What an HTTP client's call does when something else cancelled its inner task.
    inner = asyncio.ensure_future(asyncio.sleep(10))
    inner.cancel()
    return await inner


def _raise_cancelled(ctx):
    raise asyncio.CancelledError


@pytest.mark.parametrize(
    ("body", "name"),
    [
        (_raise_system_exit, "SystemExit"),
        (_raise_keyboard_interrupt, "KeyboardInterrupt"),
        (_raise_system_exit_async, "SystemExit"),
        (_raise_keyboard_interrupt_async, "KeyboardInterrupt"),
        (_raise_cancelled, "CancelledError"),
        # It was "RuntimeStoppedError: ... was cancelled: the runtime stopped", and retried.
        (_raise_cancelled_async, "CancelledError"),
    ],
    ids=[
        "SystemExit",
        "KeyboardInterrupt",
        "async-SystemExit",
        "async-KeyboardInterrupt",
        "CancelledError",
        "async-CancelledError",
    ],
)
def test_a_step_raising_a_base_exception_fails_its_run_and_stops_no_actor(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, body, name: str
) -> None:
    # Record threads that die of an exception, to name them if the step takes one down.
    deaths: list[str] = []
    monkeypatch.setattr(
        threading,
        "excepthook",
        lambda args: deaths.append(f"{args.thread.name}: {args.exc_type.__name__}"),
    )
    good_sync = runtime.register(single_step_workflow(shout, workflow_id="good-sync"))
    good_async = runtime.register(single_step_workflow(_shout_async, workflow_id="good-async"))
    bad = runtime.register(single_step_workflow(body, workflow_id="bad"))
    # Warm up both kinds of step so that every thread that will serve them exists.
    assert good_sync.create_run().start(input_data={"value": "a"}, timeout=5).status == "success"
    assert good_async.create_run().start(input_data={"value": "b"}, timeout=5).status == "success"
    threads_before = callboard_threads()

    run = bad.create_run()
    run.start_async(input_data={"value": "boom"})
    try:
        result = run.wait(timeout=2)
    except RunTimeoutError:
        result = None
    assert deaths == [], "a step's exception killed a callboard thread"
    assert [thread.name for thread in threads_before if not thread.is_alive()] == []
    assert result is not None, "the run never ended"
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == name
    assert result.steps["body"].status == "failed"
    assert result.steps["body"].error == result.error

    again = bad.create_run().start(input_data={"value": "again"}, timeout=3)
    assert (again.status, again.error and again.error.name) == ("failed", name)
    assert good_sync.create_run().start(input_data={"value": "d"}, timeout=3).result == {
        "value": "D"
    }
    assert good_async.create_run().start(input_data={"value": "e"}, timeout=3).result == {
        "value": "E"
    }


# --- a step whose output is wrong ------------------------------------------------------------


def test_a_step_output_that_fails_its_schema_fails_the_run_naming_step_and_schema(
    runtime: Runtime,
) -> None:
    step = create_step(
        id="miscount",
        input_schema=Value,
        output_schema=Counter,
        execute=lambda ctx: {"count": "not a number"},
    )
    workflow = create_workflow(id="bad-output", input_schema=Value, output_schema=Counter)
    wf = runtime.register(workflow.then(step).commit())
    result = wf.create_run().start(input_data={"value": "v"}, timeout=5)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "StepValidationError"
    assert "'miscount'" in result.error.message
    assert "Counter" in result.error.message
    assert result.error.details["step_id"] == "miscount"
    assert result.error.details["errors"][0]["loc"] == ["count"]
    assert result.steps["miscount"].status == "failed"
    assert result.steps["miscount"].output is None


def test_a_step_returning_a_model_of_another_class_fails_the_run(runtime: Runtime) -> None:
    step = create_step(
        id="wrong_model",
        input_schema=Value,
        output_schema=Counter,
        execute=lambda ctx: Value(value="not a counter"),
    )
    workflow = create_workflow(id="wrong-model", input_schema=Value, output_schema=Counter)
    wf = runtime.register(workflow.then(step).commit())
    result = wf.create_run().start(input_data={"value": "v"}, timeout=5)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "StepValidationError"
    assert "'wrong_model'" in result.error.message
    assert "Counter" in result.error.message


def test_a_step_returning_none_fails_the_run(runtime: Runtime) -> None:
    wf = runtime.register(single_step_workflow(lambda ctx: None, workflow_id="returns-none"))
    result = wf.create_run().start(input_data={"value": "v"}, timeout=5)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "StepValidationError"


@pytest.mark.parametrize(
    ("bad_value", "type_name"),
    [
        pytest.param(object(), "object", id="object"),
        pytest.param(2**70, "int", id="int-beyond-64-bits"),
        pytest.param({"deep": [object()]}, "object", id="nested-object"),
    ],
)
def test_a_step_output_that_cannot_be_encoded_fails_the_run_naming_step_and_type(
    runtime: Runtime, bad_value, type_name: str
) -> None:
    step = create_step(
        id="unstorable",
        input_schema=Value,
        output_schema=Loose,
        execute=lambda ctx: Loose(value=bad_value),
    )
    workflow = create_workflow(id="unstorable", input_schema=Value, output_schema=Loose)
    wf = runtime.register(workflow.then(step).commit())
    result = wf.create_run().start(input_data={"value": "v"}, timeout=5)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "SnapshotEncodingError"
    assert "'unstorable'" in result.error.message
    assert type_name in result.error.message
    assert result.steps["unstorable"].status == "failed"
    assert result.steps["unstorable"].error == result.error
    # The runtime goes on serving.
    ok = runtime.register(shout_workflow("after-unstorable"))
    assert ok.create_run().start(input_data={"value": "x"}, timeout=5).status == "success"


def test_a_step_that_puts_an_unencodable_value_in_the_request_context_fails_the_run(
    runtime: Runtime,
) -> None:
    def body(ctx):
        ctx.request_context["handle"] = object()
        return ctx.input_data

    wf = runtime.register(single_step_workflow(body, workflow_id="bad-context"))
    result = wf.create_run().start(input_data={"value": "v"}, timeout=5)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "SnapshotEncodingError"
    assert "'handle'" in result.error.message
    assert "object" in result.error.message


class Blob(BaseModel):
    data: bytes


def test_a_step_output_of_bytes_that_are_not_utf8_fails_the_run_naming_the_step(
    runtime: Runtime,
) -> None:
    step = create_step(
        id="blob", input_schema=Value, output_schema=Blob, execute=lambda ctx: {"data": b"\xff"}
    )
    wf = runtime.register(
        create_workflow(id="blob", input_schema=Value, output_schema=Blob).then(step).commit()
    )
    result = wf.create_run().start(input_data={"value": "x"}, timeout=10)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "SnapshotEncodingError"
    assert "step 'blob' output['data'] holds a value of type bytes" in result.error.message


# --- what register, schedule and the look-ups by name take ------------------------------


def test_registering_something_that_is_not_a_workflow_is_a_type_error(runtime: Runtime) -> None:
    # It was "AttributeError: 'Step' object has no attribute 'plan'".
    step = create_step(id="lonely", input_schema=Value, output_schema=Value, execute=shout)
    with pytest.raises(TypeError, match=r"got a step: put it in a workflow with \.then\(step\)"):
        runtime.register(step)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"expected a workflow .*, got int$"):
        runtime.register(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got a step"):
        runtime.schedule(step, cron="* * * * *")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "error"),
    [(5, TypeError), (b"x", TypeError), ("\ud800", ValueError), ("a\x00b", ValueError)],
)
def test_a_look_up_by_a_name_no_store_can_hold_is_refused_alike_on_every_store(
    each_store: Any, name: Any, error: type[Exception]
) -> None:
    # SQLite raised UnicodeEncodeError for a lone surrogate where memory answered False;
    # a number or None was "no such schedule".
    with Runtime(store=each_store) as rt:
        wf = rt.register(
            create_workflow(id="named", input_schema=Value, output_schema=Value)
            .then(create_step(id="s", input_schema=Value, output_schema=Value, execute=shout))
            .commit()
        )
        for call in (rt.pause_schedule, rt.resume_schedule, rt.delete_schedule):
            with pytest.raises(error, match="schedule_id"):
                call(name)
        assert rt.store is not None
        with pytest.raises(error, match="workflow_id"):
            list_runs(rt.store, workflow_id=name)  # what RunReader.list_runs and the CLI call
        assert rt.pause_schedule("") is False  # names nothing, as an empty run id finds nothing
        assert wf.list_workflow_runs().total == 0


@pytest.mark.parametrize("missing", ["input_schema", "output_schema"])
def test_a_workflow_without_its_input_or_output_schema_is_refused_at_the_call(
    missing: str,
) -> None:
    # None was taken: a run then crashed on its output, or start_async raised an
    # AttributeError from deep inside.
    schemas: dict[str, Any] = {"input_schema": Value, "output_schema": Value, missing: None}
    with pytest.raises(TypeError, match=f"{missing} must be a pydantic BaseModel subclass"):
        create_workflow(id="no-schema", **schemas)


def test_an_abort_callback_raising_system_exit_leaves_the_cancel_done(runtime: Runtime) -> None:
    # It crashed the run actor that aborted the signal: cancel() returned False and the
    # run ended failed (RunCrashedError) instead of canceled.
    started = threading.Event()

    def body(ctx: Any) -> Value:
        ctx.abort_signal.add_callback(lambda reason: sys.exit(4))
        started.set()
        ctx.abort_signal.wait(BLOCK_LIMIT)
        return ctx.input_data

    workflow = runtime.register(
        create_workflow(id="exits", input_schema=Value, output_schema=Value)
        .then(create_step(id="body", input_schema=Value, output_schema=Value, execute=body))
        .commit()
    )
    run = workflow.create_run()
    run.start_async(input_data={"value": "v"})
    assert started.wait(BLOCK_LIMIT)
    assert run.cancel() is True
    assert run.wait(timeout=BLOCK_LIMIT).status == "canceled"


@pytest.mark.parametrize("location", [None, ""])
def test_a_run_reader_given_no_location_is_refused_not_opened_empty(location: Any) -> None:
    # An unset variable: it opened an empty store in memory and listed no runs.
    with pytest.raises(StoreError, match="RunReader reads a durable store"):
        RunReader(location)


@pytest.mark.parametrize("wrong", [None, 5, {"id": "first"}, Step], ids=repr)
def test_get_step_result_of_something_that_is_no_step_fails_the_step_saying_so(
    runtime: Runtime, wrong: Any
) -> None:
    def reads(ctx: Any) -> Value:
        ctx.get_step_result(wrong)
        return ctx.input_data

    workflow = runtime.register(
        create_workflow(id="reads", input_schema=Value, output_schema=Value)
        .then(shout_step())
        .then(create_step(id="reads", input_schema=Value, output_schema=Value, execute=reads))
        .commit()
    )
    result = workflow.create_run().start(input_data={"value": "v"}, timeout=BLOCK_LIMIT)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "TypeError"
    assert "takes a step, a nested workflow or its id" in result.error.message


def test_an_abort_signal_wait_with_a_timeout_that_is_no_number_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="timeout must be a number"):
        AbortSignal().wait("1")  # type: ignore[arg-type]


def test_fields_that_are_not_names_are_a_type_error(runtime: Runtime) -> None:
    workflow = runtime.register(
        create_workflow(id="fields", input_schema=Value, output_schema=Value)
        .then(shout_step())
        .commit()
    )
    run_id = workflow.create_run().start(input_data={"value": "v"}, timeout=BLOCK_LIMIT).run_id
    with pytest.raises(TypeError, match="fields must be names"):
        workflow.get_workflow_run_by_id(run_id, fields=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fields must be names"):
        workflow.get_workflow_run_by_id(run_id, fields=[1])  # type: ignore[list-item]


@pytest.mark.parametrize("hook_name", ["on_start", "on_finish", "on_error"])
def test_a_generator_hook_is_refused_at_definition(hook_name: str) -> None:
    # Called, it made a generator nobody ran: the hook's body never ran, and nothing said so.
    def sync_gen(outcome: Any) -> Any:
        yield outcome

    async def async_gen(outcome: Any) -> Any:
        yield outcome

    for hook in (sync_gen, async_gen):
        with pytest.raises(TypeError, match=f"{hook_name} is a generator function"):
            create_workflow(
                id="gen-hook", input_schema=Value, output_schema=Value, **{hook_name: hook}
            )
