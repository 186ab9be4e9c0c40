"""StepActor and StepPool: step bodies run, validated, reused actors, growth when blocked."""

from __future__ import annotations

import asyncio
import inspect
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest
from pydantic import BaseModel

from actors.messages import ExecuteStep, StepFinished
from actors.step import AsyncLoop, StepPool
from runtime._step import Step, create_step

WAIT = 10.0


class Value(BaseModel):
    value: str


class Loose(BaseModel):
    value: Any


class Collector(pykka.ThreadingActor):
    """Stands in for a run actor: puts every reply on a queue."""

    use_daemon_thread = True

    def __init__(self, replies: queue.Queue[Any]) -> None:
        super().__init__()
        self.replies = replies

    def on_receive(self, message: Any) -> Any:
        self.replies.put(message)
        return None


def _step_threads() -> set[threading.Thread]:
    return {
        thread
        for thread in threading.enumerate()
        if thread.name.startswith(("StepActor-", "callboard-step-monitor", "callboard-async"))
    }


class Harness:
    """A pool, an async loop, and a collector for the pool's replies."""

    def __init__(self, core: int, limit: int) -> None:
        self.replies: queue.Queue[Any] = queue.Queue()
        self.collector = Collector.start(self.replies)
        self.loop = AsyncLoop()
        self.pool = StepPool(self.loop, core=core, limit=limit)
        self._count = 0

    def execute(
        self,
        step: Step[Any, Any],
        payload: Any,
        *,
        final_schema: type[BaseModel] | None = None,
    ) -> str:
        self._count += 1
        run_id = f"run-{self._count}"
        self.pool.submit(
            ExecuteStep(
                run_id=run_id,
                workflow_id="wf",
                step=step,
                payload=payload,
                state=None,
                state_schema=None,
                request_context={},
                init_data=payload,
                input_schema=step.input_schema,
                definitions={step.id: step},
                outputs={},
                final_schema=final_schema,
                trace_id="ab" * 16,
                parent_span_id="cd" * 8,
                reply_to=self.collector,
            )
        )
        return run_id

    def reply(self) -> StepFinished:
        finished = self.replies.get(timeout=WAIT)
        assert isinstance(finished, StepFinished)
        return finished

    def run(self, step: Step[Any, Any], payload: Any, **kwargs: Any) -> StepFinished:
        self.execute(step, payload, **kwargs)
        return self.reply()

    def stop(self) -> None:
        self.pool.stop()
        self.loop.stop(WAIT)
        self.collector.stop(timeout=WAIT)


@pytest.fixture
def make_harness() -> Iterator[Callable[..., Harness]]:
    before = _step_threads()
    harnesses: list[Harness] = []

    def make(core: int = 2, limit: int = 4096) -> Harness:
        harness = Harness(core, limit)
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        harness.stop()
    for thread in _step_threads() - before:
        thread.join(WAIT)
        assert not thread.is_alive(), f"{thread.name} outlived pool.stop()"


def step(execute: Callable[[Any], Any], *, id: str = "s", output: type[BaseModel] = Value) -> Any:
    return create_step(id=id, input_schema=Value, output_schema=output, execute=execute)


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


def test_sequential_short_steps_reuse_idle_actors_and_do_not_grow_the_pool(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(core=2)
    threads: set[str] = set()

    def body(ctx: Any) -> Value:
        threads.add(threading.current_thread().name)
        return ctx.input_data

    short = step(body)
    for index in range(60):
        assert harness.run(short, {"value": str(index)}).ok

    assert harness.pool.size <= 2
    assert len(threads) <= 2


def test_steps_that_block_make_the_pool_grow_until_all_run_at_once(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(core=2)
    count = 20
    release = threading.Event()
    arrived = threading.Semaphore(0)

    def body(ctx: Any) -> Value:
        arrived.release()
        release.wait(WAIT)
        return ctx.input_data

    blocking = step(body)
    try:
        for index in range(count):
            harness.execute(blocking, {"value": str(index)})
        # Every step must be running at the same time before any is let go.
        for _ in range(count):
            assert arrived.acquire(timeout=WAIT), "a blocked step never got an actor"
        assert harness.pool.size >= count
    finally:
        release.set()
    replies = [harness.reply() for _ in range(count)]
    assert all(finished.ok for finished in replies)


def test_the_pool_does_not_grow_beyond_its_limit(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(core=1, limit=3)
    release = threading.Event()
    arrived = threading.Semaphore(0)

    def body(ctx: Any) -> Value:
        arrived.release()
        release.wait(WAIT)
        return ctx.input_data

    blocking = step(body)
    try:
        for index in range(6):
            harness.execute(blocking, {"value": str(index)})
        for _ in range(3):
            assert arrived.acquire(timeout=WAIT)
        assert not arrived.acquire(timeout=0.2)  # the other three wait their turn
        assert harness.pool.size == 3
    finally:
        release.set()
    assert all(harness.reply().ok for _ in range(6))


def test_pool_stop_ends_the_step_actor_threads(make_harness: Callable[..., Harness]) -> None:
    before = _step_threads()
    harness = make_harness(core=2)
    release = threading.Event()
    arrived = threading.Semaphore(0)

    def body(ctx: Any) -> Value:
        arrived.release()
        release.wait(WAIT)
        return ctx.input_data

    for index in range(6):
        harness.execute(step(body), {"value": str(index)})
    for _ in range(6):
        assert arrived.acquire(timeout=WAIT)
    release.set()
    for _ in range(6):
        harness.reply()
    started = {t for t in _step_threads() - before if t.name.startswith("StepActor-")}
    assert len(started) >= 6

    harness.pool.stop()

    for thread in started:
        thread.join(WAIT)
    assert not [thread.name for thread in started if thread.is_alive()]


def test_pool_refuses_steps_once_stopped(make_harness: Callable[..., Harness]) -> None:
    from runtime._errors import RuntimeStoppedError

    harness = make_harness()
    harness.pool.stop()

    with pytest.raises(RuntimeStoppedError):
        harness.execute(step(lambda ctx: ctx.input_data), {"value": "x"})


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
from actors.messages import ExecuteStep
from actors.step import AsyncLoop, StepPool
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
pool = StepPool(loop)
for step_id, body in (("quitter", leave), ("next", fine)):
    step = create_step(id=step_id, input_schema=Value, output_schema=Value, execute=body)
    pool.submit(ExecuteStep(
        run_id="r", workflow_id="wf", step=step, payload={"value": "x"}, state=None,
        state_schema=None, request_context={}, init_data={"value": "x"}, input_schema=Value,
        definitions={step_id: step}, outputs={}, final_schema=None, trace_id="ab",
        parent_span_id="cd", reply_to=collector,
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


def test_an_async_body_runs_on_the_async_loop_thread(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()
    seen: list[str] = []

    async def body(ctx: Any) -> Value:
        await asyncio.sleep(0)
        seen.append(threading.current_thread().name)
        return Value(value=ctx.input_data.value + "!")

    finished = harness.run(step(body), {"value": "async"})

    assert finished.ok
    assert finished.output == {"value": "async!"}
    assert seen == ["callboard-async"]


def test_an_async_body_holds_no_step_actor_while_it_waits(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(core=1, limit=1)
    gate = threading.Event()

    async def waiting(ctx: Any) -> Value:
        while not gate.is_set():
            await asyncio.sleep(0.005)
        return ctx.input_data

    def opener(ctx: Any) -> Value:
        gate.set()
        return ctx.input_data

    try:
        harness.execute(step(waiting, id="waiting"), {"value": "a"})
        # With one step actor at most, this runs only if the async step let go of it.
        harness.execute(step(opener, id="opener"), {"value": "b"})
        replies = {harness.reply().step_id: True, harness.reply().step_id: True}
    finally:
        gate.set()
    assert set(replies) == {"waiting", "opener"}


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
