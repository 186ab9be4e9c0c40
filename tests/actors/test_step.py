"""StepActor: each kind of call runs its user code, validated, and replies; BaseExceptions too."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import BaseModel
from structlog.testing import capture_logs

from actors._dispatch import UnexpectedMessageError
from actors._here import RunsHere
from actors.messages import CallStep, Outcome
from tests.actors.harness import WAIT, Harness, Value, harnesses, step


class Loose(BaseModel):
    value: Any


@pytest.fixture
def make_harness() -> Iterator[Callable[..., Harness]]:
    yield from harnesses()


def test_a_step_runs_and_replies_with_its_validated_output(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()
    shout = step(lambda ctx: {"value": ctx.input_data.value.upper()})

    finished = harness.run(shout, {"value": "hi"})

    assert finished.ok
    assert (finished.step_id, finished.output, finished.error) == ("s", {"value": "HI"}, None)
    assert finished.result is None
    assert finished.started_at <= finished.ended_at


def test_the_last_step_also_replies_with_the_result_validated_by_the_final_schema(
    make_harness: Callable[..., Harness],
) -> None:
    class Final(BaseModel):
        value: str

    harness = make_harness()

    finished = harness.run(
        step(lambda ctx: Value(value="done")), {"value": "x"}, final_schema=Final
    )

    assert finished.ok
    assert finished.result == {"value": "done"}


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt, GeneratorExit])
def test_a_body_raising_a_base_exception_replies_failed_and_stops_no_actor(
    make_harness: Callable[..., Harness], exc_type: type[BaseException]
) -> None:
    harness = make_harness(core=1, limit=1)

    def body(ctx: Any) -> Value:
        raise exc_type("leaving")

    finished = harness.run(step(body, id="quitter"), {"value": "x"})

    assert not finished.ok
    assert finished.error is not None
    assert finished.error["name"] == exc_type.__name__
    assert finished.error["details"]["step_id"] == "quitter"
    assert harness.collector.is_alive()
    # The only step actor is still there to run the next step.
    assert harness.run(step(lambda ctx: ctx.input_data), {"value": "next"}).ok


ASYNC_BASE_EXCEPTION = """
import asyncio, queue, sys
import pykka
from pydantic import BaseModel
from actors._pool import AsyncLoop, StepPool
from actors.messages import CallStep, RunPart
from runtime._step import create_step

class Value(BaseModel):
    value: str

class Collector(pykka.ThreadingActor):
    use_daemon_thread = True
    def __init__(self, replies):
        super().__init__()
        self.replies = replies
    def on_receive(self, message):
        self.replies.put(message)

exc_type = {"SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt}[sys.argv[1]]

async def leave(ctx):
    await asyncio.sleep(0)
    raise exc_type("leaving")

async def fine(ctx):
    await asyncio.sleep(0)
    return ctx.input_data

replies = queue.Queue()
collector = Collector.start(replies)
loop = AsyncLoop()
pool = StepPool(loop, limit=4)
for step_id, body in (("quitter", leave), ("next", fine)):
    step = create_step(id=step_id, input_schema=Value, output_schema=Value, execute=body)
    run = RunPart(
        run_id="r", workflow_id="wf", state_schema=None, input_schema=Value,
        definitions={step_id: step}, trace_id="ab", parent_span_id="cd", reply_to=collector,
    )
    pool.submit(CallStep(
        run=run, step=step, payload={"value": "x"}, state=None, request_context={},
        init_data={"value": "x"}, outputs={}, final_schema=None,
    ))
    try:
        finished = replies.get(timeout=3)
    except queue.Empty:
        print(step_id, "no reply")
        break
    print(step_id, finished.ok, finished.error and finished.error["name"])
pool.stop()
loop.stop(3)
collector.stop()
"""


@pytest.mark.parametrize("exc_type", ["SystemExit", "KeyboardInterrupt"])
def test_an_async_body_raising_a_base_exception_replies_failed_and_the_loop_goes_on(
    exc_type: str,
) -> None:
    # In a child process: the loop thread dying with a traceback, while pytest
    # formats its report, can trip CPython 3.11's AST recursion counter.
    done = subprocess.run(
        [sys.executable, "-c", ASYNC_BASE_EXCEPTION, exc_type],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.stdout.splitlines() == [f"quitter False {exc_type}", "next True None"], (
        done.stdout + done.stderr[-2000:]
    )


def test_an_exception_from_a_body_replies_failed_with_its_name_and_message(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()

    def body(ctx: Any) -> Value:
        raise RuntimeError("it broke")

    finished = harness.run(step(body), {"value": "x"})

    assert not finished.ok
    assert finished.error is not None
    assert (finished.error["name"], finished.error["message"]) == ("RuntimeError", "it broke")
    assert finished.output is None


@pytest.mark.parametrize("payload", [{"value": 3}, {}, None, "text", {"value": ["x"]}])
def test_input_that_does_not_fit_the_input_schema_fails_with_step_validation_error(
    make_harness: Callable[..., Harness], payload: Any
) -> None:
    harness = make_harness()
    called = threading.Event()

    def body(ctx: Any) -> Value:
        called.set()
        return ctx.input_data

    finished = harness.run(step(body, id="picky"), payload)

    assert not finished.ok
    assert finished.error is not None
    assert finished.error["name"] == "StepValidationError"
    assert "picky" in finished.error["message"]
    assert not called.is_set()


def test_output_that_does_not_fit_the_output_schema_fails_with_step_validation_error(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()

    finished = harness.run(step(lambda ctx: {"other": 1}), {"value": "x"})

    assert not finished.ok
    assert finished.error is not None
    assert finished.error["name"] == "StepValidationError"


def test_output_that_cannot_be_stored_fails_naming_the_type(
    make_harness: Callable[..., Harness],
) -> None:
    class Opaque:
        pass

    harness = make_harness()

    finished = harness.run(step(lambda ctx: {"value": Opaque()}, output=Loose), {"value": "x"})

    assert not finished.ok
    assert finished.error is not None
    assert finished.error["name"] == "SnapshotEncodingError"
    assert "Opaque" in finished.error["message"]


def test_an_async_body_that_raises_replies_failed(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness()

    async def body(ctx: Any) -> Value:
        await asyncio.sleep(0)
        raise LookupError("not there")

    finished = harness.run(step(body), {"value": "x"})

    assert not finished.ok
    assert finished.error is not None
    assert (finished.error["name"], finished.error["message"]) == ("LookupError", "not there")


class Ready:
    """An awaitable that is not a coroutine: nothing to close if it is never awaited."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Any:
        yield from asyncio.sleep(0).__await__()
        return self.value


def test_an_async_step_submitted_after_the_loop_stopped_replies_failed(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()
    harness.loop.stop(WAIT)

    finished = harness.run(step(lambda ctx: Ready(ctx.input_data)), {"value": "x"})

    assert not finished.ok
    assert finished.error is not None
    assert finished.error["name"] == "RuntimeStoppedError"


def test_the_coroutine_of_a_step_that_cannot_run_is_closed_not_left_unawaited(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()
    harness.loop.stop(WAIT)
    made: list[Any] = []

    async def body(ctx: Any) -> Value:
        return ctx.input_data

    def execute(ctx: Any) -> Any:
        made.append(body(ctx))
        return made[-1]

    try:
        finished = harness.run(step(execute), {"value": "x"})

        assert not finished.ok
        # Left unclosed, it warns "coroutine ... was never awaited" when collected.
        assert inspect.getcoroutinestate(made[0]) == inspect.CORO_CLOSED
    finally:
        for coroutine in made:
            coroutine.close()


# --- conditions, map and sleep functions ---------------------------------------------


def test_conditions_reply_with_one_boolean_per_condition_checked_against_its_schema(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()
    seen: list[Any] = []

    def long(ctx: Any) -> bool:
        seen.append(ctx.input_data)
        return len(ctx.input_data.value) > 3

    fns = ((long, Value), (lambda ctx: ctx.input_data["value"] == "tiny", None))

    finished = harness.conditions(fns, {"value": "tiny"}, iteration=3)

    assert finished.outcome is Outcome.SUCCESS
    assert (finished.step_id, finished.output) == ("arm", [True, True])
    assert seen == [Value(value="tiny")]


def test_a_condition_sees_its_loop_iteration_and_cannot_change_the_state(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()
    iterations: list[int | None] = []

    def condition(ctx: Any) -> bool:
        iterations.append(ctx.iteration_count)
        ctx.set_state({"changed": True})
        return True

    finished = harness.conditions(((condition, None),), {"value": "x"}, iteration=4)

    assert iterations == [4]
    assert finished.outcome is Outcome.FAILED
    assert finished.error is not None
    assert finished.error["name"] == "WorkflowError"
    assert finished.state is None


def test_a_map_function_replies_with_its_output_as_plain_data(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()

    finished = harness.map(lambda ctx: Value(value=ctx.input_data["value"] * 2), {"value": "ab"})

    assert finished.ok
    assert (finished.step_id, finished.output) == ("reshape", {"value": "abab"})


def test_a_sleep_function_replies_with_the_epoch_time_the_sleep_ends(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()
    moment = datetime(2030, 1, 2, tzinfo=UTC)

    before = time.time()
    in_seconds = harness.sleep_length(lambda ctx: 30, {"value": "x"})
    at_moment = harness.sleep_length(lambda ctx: moment, {"value": "x"})
    negative = harness.sleep_length(lambda ctx: -1, {"value": "x"})

    assert in_seconds.ok
    assert before + 30 <= in_seconds.output <= time.time() + 30
    assert at_moment.output == moment.timestamp()
    assert not negative.ok
    assert negative.error is not None
    assert negative.error["name"] == "ValueError"


# --- the protocol ------------------------------------------------------------------


def test_a_message_that_is_not_a_call_is_refused_and_the_step_actor_lives_on(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(core=1, limit=1)
    assert harness.run(step(lambda ctx: ctx.input_data), {"value": "x"}).ok
    (ref,) = [ref for ref, _ in harness.pool._idle]

    with pytest.raises(UnexpectedMessageError, match=r"StepActor .* does not accept builtins\.str"):
        ref.ask("hello", timeout=WAIT)
    with capture_logs() as logs:
        ref.tell("hello again")
        assert harness.run(step(lambda ctx: ctx.input_data), {"value": "y"}).ok
    structlog.reset_defaults()

    refused = [entry for entry in logs if entry["log_level"] == "error"]
    assert [entry["event"] for entry in refused] == ["unexpected_message"]
    assert "StepActor" in refused[0]["actor"]
    assert "builtins.str" in refused[0]["error"]
    assert ref.is_alive()


class _Order:
    """Stands in for a run actor (``tell``) and notes, at each reply, whether the body counts."""

    def __init__(self, here: RunsHere, run_id: str) -> None:
        self.here = here
        self.run_id = run_id
        self.counted_at_reply: list[bool] = []
        self.replied = threading.Event()

    def tell(self, _message: Any) -> None:
        self.counted_at_reply.append(self.here.has_body(self.run_id))
        self.replied.set()


@pytest.mark.parametrize("kind", ["sync", "async", "raises"])
def test_a_step_body_stops_counting_as_running_here_before_its_step_replies(
    make_harness: Callable[..., Harness], kind: str
) -> None:
    # The reply may end the run; a run that ended while its body still counted here
    # would look like one whose body outlived it, and keep its queue's slot.
    harness = make_harness()
    here = RunsHere()
    harness.pool.here = here

    def body(ctx: Any) -> Value:
        if kind == "raises":
            raise LookupError("not there")
        return ctx.input_data

    async def async_body(ctx: Any) -> Value:
        await asyncio.sleep(0)
        return ctx.input_data

    called = step(async_body if kind == "async" else body)
    order = _Order(here, "")
    fields = harness.common({"value": "x"}, definitions={called.id: called}, reply_to=order)
    order.run_id = fields["run"].run_id
    harness.pool.submit(CallStep(**fields, step=called, final_schema=None))

    assert order.replied.wait(WAIT)
    assert order.counted_at_reply == [False]
