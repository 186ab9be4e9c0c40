"""A blocking wait for a run on the event loop that runs the runtime's async steps.

``run.start()`` or ``run.wait()`` inside an ``async def`` step stopped the loop
every async step of the runtime runs on, until the run ended; a run with an async
step of its own could then never end (it waited for ever, or until its timeout,
which then blamed the run). Such a call now raises ``BlockingCallError`` at once,
naming the awaitable twin; nothing is started.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs

from runtime import (
    BlockingCallError,
    RunStatus,
    Runtime,
    StepContext,
    create_step,
    create_workflow,
)

WAIT = 20.0


class Number(BaseModel):
    n: int


async def double_later(ctx: StepContext[Number]) -> Number:
    await asyncio.sleep(0.01)
    return Number(n=ctx.input_data.n * 2)


child = (
    create_workflow(id="async-child", input_schema=Number, output_schema=Number)
    .then(create_step(id="double", input_schema=Number, output_schema=Number, execute=double_later))
    .commit()
)


@pytest.fixture
def rt() -> Iterator[Runtime]:
    with Runtime() as runtime:
        yield runtime


def parent(runtime: Runtime, body: Any) -> Any:
    step = create_step(id="parent", input_schema=Number, output_schema=Number, execute=body)
    return runtime.register(
        create_workflow(id="async-parent", input_schema=Number, output_schema=Number)
        .then(step)
        .commit()
    )


def test_start_inside_an_async_step_is_refused_and_starts_nothing(rt: Runtime) -> None:
    children = rt.register(child)

    async def body(ctx: StepContext[Number]) -> Number:
        result = children.create_run().start(input_data={"n": 1}, timeout=WAIT)
        return Number(n=result.result["n"])

    result = parent(rt, body).create_run().start(input_data={"n": 1}, timeout=WAIT)

    assert result.status == RunStatus.FAILED
    assert result.error is not None and result.error.name == "BlockingCallError"
    assert "await run.astart()" in result.error.message
    assert children.list_workflow_runs().total == 0  # refused before anything was recorded


def test_wait_inside_an_async_step_is_refused_for_a_run_going_on(rt: Runtime) -> None:
    children = rt.register(child)

    async def body(ctx: StepContext[Number]) -> Number:
        run = children.create_run()
        run.start_async(input_data={"n": 2})
        try:
            run.wait(WAIT)
        except BlockingCallError as exc:
            assert "await run.wait_async()" in str(exc)
            done = await run.wait_async(WAIT)  # the way that works
            return Number(n=done.result["n"])
        raise AssertionError("wait() was not refused")

    result = parent(rt, body).create_run().start(input_data={"n": 2}, timeout=WAIT)

    assert result.status == RunStatus.SUCCESS, result.error
    assert result.result == {"n": 4}


def test_wait_for_a_run_that_has_ended_returns_even_on_the_loop(rt: Runtime) -> None:
    children = rt.register(child)
    ended = children.create_run()
    assert ended.start(input_data={"n": 5}, timeout=WAIT).status == RunStatus.SUCCESS

    async def body(ctx: StepContext[Number]) -> Number:
        return Number(n=ended.wait().result["n"])  # nothing to wait for: no block

    result = parent(rt, body).create_run().start(input_data={"n": 0}, timeout=WAIT)
    assert result.status == RunStatus.SUCCESS and result.result == {"n": 10}


def test_a_sync_step_may_still_block_on_a_run(rt: Runtime) -> None:
    children = rt.register(child)

    def body(ctx: StepContext[Number]) -> Number:
        return Number(n=children.create_run().start(input_data={"n": 3}, timeout=WAIT).result["n"])

    result = parent(rt, body).create_run().start(input_data={"n": 3}, timeout=WAIT)
    assert result.status == RunStatus.SUCCESS and result.result == {"n": 6}


def test_a_blocking_wait_on_the_apps_loop_is_refused_with_async_steps_app() -> None:
    # With async_steps="app", the application's loop runs the async steps: a blocking
    # wait in the application's own coroutine would stop them the same way.
    async def main() -> None:
        async with Runtime(async_steps="app") as rt:
            children = rt.register(child)
            run = children.create_run()
            with pytest.raises(BlockingCallError, match="astart"):
                run.start(input_data={"n": 1}, timeout=WAIT)
            result = await run.astart(input_data={"n": 1}, timeout=WAIT)
            assert result.status == RunStatus.SUCCESS and result.result == {"n": 2}

    asyncio.run(main())


def test_a_blocking_wait_on_another_loop_is_not_refused() -> None:
    # With the default private loop, the application's loop is not the steps' one: a
    # blocking call there stops the application, not the run (its choice to make).
    async def main() -> None:
        async with Runtime() as rt:
            children = rt.register(child)
            result = children.create_run().start(input_data={"n": 4}, timeout=WAIT)
            assert result.status == RunStatus.SUCCESS and result.result == {"n": 8}

    asyncio.run(main())


# --- a wait for the run one is part of -------------------------------------------------


@pytest.mark.parametrize("how", ["wait", "stream"])
def test_a_step_waiting_for_or_watching_its_own_run_fails_at_once(rt: Runtime, how: str) -> None:
    holder: dict[str, Any] = {}

    def body(ctx: StepContext[Number]) -> Number:
        run = holder["wf"].create_run(ctx.run_id)
        if how == "wait":
            run.wait(WAIT)  # the run ends after this step
        else:
            for _ in run.stream():
                pass
        return ctx.input_data

    wf = holder["wf"] = parent(rt, body)
    result = wf.create_run().start(input_data={"n": 1}, timeout=WAIT)

    assert result.status == RunStatus.FAILED
    assert result.error is not None and result.error.name == "BlockingCallError"
    assert "inside one of its own steps or hooks" in result.error.message


@pytest.mark.parametrize("how", ["wait", "watch", "stream", "awatch", "astream"])
def test_a_hook_waiting_for_or_watching_its_own_run_is_refused_and_the_run_ends(
    rt: Runtime, how: str
) -> None:
    # Before: the wait (or the watch) lasted for ever: the run ends after its hooks.
    failures: list[BaseException] = []
    holder: dict[str, Any] = {}

    def on_finish(outcome: Any) -> None:
        run = holder["wf"].create_run(outcome.run_id)
        try:
            if how == "wait":
                run.wait()
            elif how.startswith("a"):
                asyncio.run(getattr(run, how)())
            else:
                for _ in getattr(run, how)():
                    pass
        except BlockingCallError as exc:
            failures.append(exc)

    step = create_step(
        id="pass", input_schema=Number, output_schema=Number, execute=lambda ctx: ctx.input_data
    )
    wf = holder["wf"] = rt.register(
        create_workflow(id="hooked", input_schema=Number, output_schema=Number, on_finish=on_finish)
        .then(step)
        .commit()
    )
    result = wf.create_run().start(input_data={"n": 7}, timeout=WAIT)

    assert result.status == RunStatus.SUCCESS
    said = "wait() was called" if how == "wait" else "watch() (or stream()) was called"
    assert len(failures) == 1 and f"{said} inside one of its own steps or hooks" in str(failures[0])
    assert len(list(wf.create_run(result.run_id).watch(timeout=WAIT))) > 1  # ended: told


def test_an_async_step_awaiting_its_own_run_fails_at_once(rt: Runtime) -> None:
    holder: dict[str, Any] = {}

    async def body(ctx: StepContext[Number]) -> Number:
        # Before: no timeout, so it waited for ever (and the run with it).
        await holder["wf"].create_run(ctx.run_id).wait_async()
        return ctx.input_data

    wf = holder["wf"] = parent(rt, body)
    result = wf.create_run().start(input_data={"n": 1}, timeout=WAIT)

    assert result.status == RunStatus.FAILED
    assert result.error is not None and result.error.name == "BlockingCallError"
    assert "wait_async() was awaited inside one of its own steps" in result.error.message


def test_an_async_step_may_await_another_run(rt: Runtime) -> None:
    children = rt.register(child)

    async def body(ctx: StepContext[Number]) -> Number:
        result = await children.create_run().astart(input_data={"n": ctx.input_data.n})
        return Number(n=result.result["n"] + 1)

    result = parent(rt, body).create_run().start(input_data={"n": 3}, timeout=WAIT)

    assert result.status == RunStatus.SUCCESS and result.result == {"n": 7}


# --- a stop of the runtime one runs in ------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_step_stopping_its_own_runtime_fails_at_once_and_the_runtime_goes_on(
    rt: Runtime, kind: str
) -> None:
    # Before: the stop waited its whole timeout for the run that called it, and failed it.
    def sync_body(ctx: StepContext[Number]) -> Number:
        rt.stop(timeout=WAIT)
        return ctx.input_data

    async def async_body(ctx: StepContext[Number]) -> Number:
        await rt.astop(timeout=WAIT)
        return ctx.input_data

    wf = parent(rt, sync_body if kind == "sync" else async_body)
    result = wf.create_run().start(input_data={"n": 1}, timeout=WAIT)

    assert result.status == RunStatus.FAILED
    assert result.error is not None and result.error.name == "BlockingCallError"
    assert f"{'a' if kind == 'async' else ''}stop() was called inside a step or hook of run" in (
        result.error.message
    )
    assert rt.is_running  # nothing was stopped
    assert wf.create_run().start(input_data={"n": 2}, timeout=WAIT).status == RunStatus.FAILED


def test_a_hook_stopping_its_own_runtime_is_refused_and_the_run_ends(rt: Runtime) -> None:
    failures: list[BaseException] = []

    def on_finish(outcome: Any) -> None:
        try:
            rt.stop(timeout=WAIT)
        except BlockingCallError as exc:
            failures.append(exc)

    step = create_step(
        id="pass", input_schema=Number, output_schema=Number, execute=lambda ctx: ctx.input_data
    )
    wf = rt.register(
        create_workflow(
            id="stopper", input_schema=Number, output_schema=Number, on_finish=on_finish
        )
        .then(step)
        .commit()
    )
    result = wf.create_run().start(input_data={"n": 7}, timeout=WAIT)

    assert result.status == RunStatus.SUCCESS
    assert len(failures) == 1 and "stop() was called inside a step or hook" in str(failures[0])
    assert rt.is_running


def test_a_step_may_stop_another_runtime_and_its_own_from_a_thread_of_its_own(
    rt: Runtime,
) -> None:
    other = Runtime().start()
    stopper: list[threading.Thread] = []

    def body(ctx: StepContext[Number]) -> Number:
        other.stop(timeout=WAIT)  # not this step's runtime: nothing to wait for here
        thread = threading.Thread(target=rt.stop, kwargs={"timeout": WAIT})
        thread.start()  # this run ends, then the stop goes on
        stopper.append(thread)
        return ctx.input_data

    run = parent(rt, body).create_run()
    run.start_async(input_data={"n": 5})
    stopper_started = _wait_for(lambda: bool(stopper))
    stopper[0].join(WAIT)

    assert stopper_started and not stopper[0].is_alive()
    assert not other.is_running and not rt.is_running
    result = run.wait(WAIT)
    assert result.status == RunStatus.SUCCESS and result.result == {"n": 5}


def _wait_for(condition: Any, limit: float = WAIT) -> bool:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_task_an_async_step_left_running_may_wait_for_the_steps_own_run(rt: Runtime) -> None:
    # The task copied the body's note of the run it served, which never lapsed: its wait
    # for that run, once the step had returned, was refused as one that waits for ever.
    outcomes: list[Any] = []
    left: set[asyncio.Task[None]] = set()
    gate = threading.Event()

    async def notify_when_done(run_id: str) -> None:
        try:
            outcomes.append((await runs.create_run(run_id).wait_async(WAIT)).status)
        except BaseException as exc:  # the test reports what it was
            outcomes.append(exc)

    async def kick(ctx: StepContext[Number]) -> Number:
        left.add(asyncio.create_task(notify_when_done(ctx.run_id)))
        return ctx.input_data

    def held(ctx: StepContext[Number]) -> Number:
        gate.wait(WAIT)  # the run goes on while the task waits for it
        return ctx.input_data

    runs = rt.register(
        create_workflow(id="notifying", input_schema=Number, output_schema=Number)
        .then(create_step(id="kick", input_schema=Number, output_schema=Number, execute=kick))
        .then(create_step(id="held", input_schema=Number, output_schema=Number, execute=held))
        .commit()
    )
    run = runs.create_run()
    run.start_async(input_data={"n": 1})
    time.sleep(0.3)  # the task has asked by now (a refusal comes at once)
    gate.set()
    assert run.wait(WAIT).status == RunStatus.SUCCESS
    deadline = time.monotonic() + WAIT
    while not outcomes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert outcomes == [RunStatus.SUCCESS]


def test_an_own_run_awaited_in_a_task_the_body_awaits_is_still_refused(rt: Runtime) -> None:
    async def body(ctx: StepContext[Number]) -> Number:
        own = parents.create_run(ctx.run_id)
        await asyncio.gather(own.wait_async(WAIT))
        return ctx.input_data

    parents = parent(rt, body)
    result = parents.create_run().start(input_data={"n": 1}, timeout=WAIT)
    assert result.status == RunStatus.FAILED
    assert result.error is not None and result.error.name == "BlockingCallError"


@pytest.mark.parametrize("raised", [SystemExit(2), KeyboardInterrupt()], ids=type)
def test_a_task_of_an_async_step_that_raises_systemexit_fails_its_step_not_the_loop(
    rt: Runtime, raised: BaseException
) -> None:
    # asyncio lets SystemExit and KeyboardInterrupt out of the loop: the loop's thread
    # ended, silently, and every async step after it failed with "the event loop is closed".
    async def fatal() -> None:
        raise raised  # argparse's parse_args() on bad input raises SystemExit(2)

    async def body(ctx: StepContext[Number]) -> Number:
        await asyncio.gather(fatal())
        return ctx.input_data

    result = parent(rt, body).create_run().start(input_data={"n": 1}, timeout=WAIT)
    assert result.status == RunStatus.FAILED
    assert result.error is not None and result.error.name == type(raised).__name__
    # The loop goes on: async steps of other runs still run.
    children = rt.register(child)
    assert children.create_run().start(input_data={"n": 4}, timeout=WAIT).result == {"n": 8}
    assert any(thread.name == "callboard-async" for thread in threading.enumerate())


@pytest.mark.usefixtures("_structlog_reset")
def test_an_async_step_that_stops_the_loop_it_runs_on_does_not_stop_the_async_steps(
    rt: Runtime,
) -> None:
    # The loop closed under it: its run stayed running for ever, and every later async
    # step failed with "the loop of this runtime's async steps has ended".
    async def body(ctx: StepContext[Number]) -> Number:
        asyncio.get_running_loop().stop()  # as if it were the application's loop
        await asyncio.sleep(0.01)
        return ctx.input_data

    with capture_logs() as logs:
        result = parent(rt, body).create_run().start(input_data={"n": 1}, timeout=WAIT)
    assert result.status == RunStatus.SUCCESS
    assert [log["event"] for log in logs if log["log_level"] == "error"] == [
        "async_step_loop_stopped"
    ]
    children = rt.register(child)
    assert children.create_run().start(input_data={"n": 4}, timeout=WAIT).result == {"n": 8}


def test_an_async_step_whose_task_other_code_cancels_does_not_say_the_runtime_stopped(
    rt: Runtime,
) -> None:
    # It failed with RuntimeStoppedError "the runtime stopped", while the runtime ran on.
    async def body(ctx: StepContext[Number]) -> Number:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(1)
        return ctx.input_data

    result = parent(rt, body).create_run().start(input_data={"n": 1}, timeout=WAIT)
    assert result.status == RunStatus.FAILED
    assert result.error is not None and result.error.name == "CancelledError"
    assert "not by callboard" in result.error.message
    assert rt.is_running


# --- a sync watch on the loop ------------------------------------------------------------


def test_a_sync_watch_of_a_run_going_on_is_refused_on_the_apps_loop() -> None:
    # A for loop over a live run's watch blocks between events: on the loop that runs
    # the async steps, the run's own async step could then never run, and the loop
    # waited for ever. async for is the way; a run that has ended may be read either way.
    async def main() -> None:
        async with Runtime(async_steps="app") as rt:
            children = rt.register(child)
            run = children.create_run()
            await run.astart_async(input_data={"n": 1})
            with pytest.raises(BlockingCallError, match="async for"):
                for _ in run.watch(timeout=WAIT):
                    pass
            with pytest.raises(BlockingCallError, match="async for"):
                for _ in run.stream(timeout=WAIT):
                    pass
            events = [event async for event in await run.awatch(timeout=WAIT)]
            assert events[-1].status == RunStatus.SUCCESS
            told = [event.type for event in run.watch(timeout=WAIT)]  # ended: no block
            assert told == [event.type for event in events]

    asyncio.run(main())


def test_a_sync_watch_inside_an_async_step_is_refused(rt: Runtime) -> None:
    children = rt.register(child)

    async def body(ctx: StepContext[Number]) -> Number:
        run = children.create_run()
        await run.astart_async(input_data={"n": 3})
        try:
            next(iter(run.watch(timeout=WAIT)))
        except BlockingCallError as exc:
            assert "async for" in str(exc)
            done = await run.wait_async(WAIT)
            return Number(n=done.result["n"])
        raise AssertionError("the sync watch was not refused")

    result = parent(rt, body).create_run().start(input_data={"n": 3}, timeout=WAIT)
    assert result.status == RunStatus.SUCCESS, result.error
    assert result.result == {"n": 6}
