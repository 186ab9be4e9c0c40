"""Async step bodies on the application's event loop: ``Runtime(async_steps="app" | loop)``."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import structlog

import actors._pool
from runtime import RunStatus, Runtime, create_step, create_workflow
from tests._support import Value, wait_for_no_callboard_threads

WAIT = 10.0


class LoopBoundClient:
    """A client made on the application's loop, as an HTTP or database client is.

    Its ``asyncio.Event`` is used on that loop first, which binds it there:
    used from another loop it raises "bound to a different event loop".
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.ready = asyncio.Event()
        self.calls = 0

    async def warm_up(self) -> None:
        waiter = asyncio.ensure_future(self.ready.wait())  # binds the event to this loop
        await asyncio.sleep(0)
        self.ready.set()
        await waiter

    async def fetch(self, value: str) -> str:
        await self.ready.wait()
        self.calls += 1
        return value.upper()


def client_workflow(client: LoopBoundClient) -> Any:
    async def fetch(ctx: Any) -> Value:
        return Value(value=await client.fetch(ctx.input_data.value))

    return (
        create_workflow(id="fetches", input_schema=Value, output_schema=Value)
        .then(create_step(id="fetch", input_schema=Value, output_schema=Value, execute=fetch))
        .commit()
    )


def test_a_client_bound_to_the_apps_loop_works_in_a_step_with_async_steps_app() -> None:
    async def main() -> None:
        client = LoopBoundClient()
        await client.warm_up()
        async with Runtime(async_steps="app") as rt:
            wf = rt.register(client_workflow(client))
            result = await wf.create_run().astart(input_data={"value": "hi"}, timeout=WAIT)
        assert result.status == RunStatus.SUCCESS and result.result == {"value": "HI"}
        assert client.calls == 1
        # The application's own use of its client still works afterwards.
        assert await client.fetch("after") == "AFTER"

    asyncio.run(main())
    assert not wait_for_no_callboard_threads()


def test_the_same_client_fails_in_a_step_on_the_private_loop() -> None:
    async def main() -> None:
        client = LoopBoundClient()
        await client.warm_up()
        client.ready.clear()  # so that a wait really waits, and checks its loop
        async with Runtime() as rt:  # async_steps="private", the default
            wf = rt.register(client_workflow(client))
            result = await wf.create_run().astart(input_data={"value": "hi"}, timeout=WAIT)
        assert result.status == RunStatus.FAILED
        assert "different event loop" in result.error.message

    asyncio.run(main())


def test_a_runtime_given_a_loop_runs_async_steps_on_that_loop() -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="app-loop")
    thread.start()
    seen: list[asyncio.AbstractEventLoop] = []

    async def where(ctx: Any) -> Value:
        seen.append(asyncio.get_running_loop())
        return ctx.input_data

    wf = (
        create_workflow(id="where", input_schema=Value, output_schema=Value)
        .then(create_step(id="where", input_schema=Value, output_schema=Value, execute=where))
        .commit()
    )
    try:
        with Runtime(async_steps=loop) as rt:
            result = rt.register(wf).create_run().start(input_data={"value": "v"}, timeout=WAIT)
        assert result.status == RunStatus.SUCCESS
        assert seen == [loop]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
    assert not wait_for_no_callboard_threads()


def test_async_steps_app_outside_a_running_loop_is_refused_at_start() -> None:
    rt = Runtime(async_steps="app")
    with pytest.raises(ValueError, match="no event loop runs here"):
        rt.start()
    assert not rt.is_running


def test_async_steps_must_be_private_app_or_a_loop() -> None:
    with pytest.raises(ValueError, match="async_steps"):
        Runtime(async_steps="shared")  # type: ignore[arg-type]


def test_astop_cancels_the_steps_it_started_on_the_apps_loop_and_leaves_the_loop_running() -> None:
    async def main() -> None:
        started = asyncio.Event()

        async def forever(ctx: Any) -> Value:
            started.set()
            await asyncio.sleep(3600)
            return ctx.input_data

        wf = (
            create_workflow(id="forever", input_schema=Value, output_schema=Value)
            .then(
                create_step(id="forever", input_schema=Value, output_schema=Value, execute=forever)
            )
            .commit()
        )
        rt = await Runtime(async_steps="app").astart()
        bound = rt.register(wf)
        run = bound.create_run()
        await run.astart_async(input_data={"value": "v"})
        await asyncio.wait_for(started.wait(), WAIT)
        await rt.astop(timeout=0.1)
        result = await bound.aget_workflow_run_execution_result(run.run_id)
        assert result is not None and result.status == RunStatus.FAILED
        # This loop goes on: only the runtime's own tasks were cancelled.
        assert await asyncio.sleep(0, result="alive") == "alive"
        left = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        assert left == []

    asyncio.run(main())
    assert not wait_for_no_callboard_threads()


@pytest.mark.usefixtures("_structlog_reset")
def test_a_sync_stop_on_the_apps_loop_halts_runs_at_once_and_says_to_await_astop() -> None:
    # The sync stop blocks the very loop the run's async step needs: waiting its
    # timeout (half a minute here) for the run to end could never pay.
    async def main() -> None:
        started = asyncio.Event()

        async def long(ctx: Any) -> Value:
            started.set()
            await asyncio.sleep(3600)
            return ctx.input_data

        wf = (
            create_workflow(id="long", input_schema=Value, output_schema=Value)
            .then(create_step(id="long", input_schema=Value, output_schema=Value, execute=long))
            .commit()
        )
        rt = await Runtime(async_steps="app", stop_timeout=30).astart()
        bound = rt.register(wf)
        run = bound.create_run()
        await run.astart_async(input_data={"value": "v"})
        await asyncio.wait_for(started.wait(), WAIT)
        with structlog.testing.capture_logs() as events:
            began = time.monotonic()
            rt.stop()
            took = time.monotonic() - began
        assert took < 15, f"stop() waited {took:.1f} s for a run that could not end"
        [warned] = [event for event in events if event["event"] == "stop_blocks_step_loop"]
        assert "await rt.astop()" in warned["hint"]
        result = bound.get_workflow_run_execution_result(run.run_id)
        assert result is not None and result.status == RunStatus.FAILED
        assert result.error is not None and "stopped" in result.error.message

        # With no run in progress it waits for none, and has nothing to say.
        idle = await Runtime(async_steps="app", stop_timeout=30).astart()
        with structlog.testing.capture_logs() as events:
            idle.stop()
        assert [event["event"] for event in events if "stop" in event["event"]] == []

    asyncio.run(main())
    assert not wait_for_no_callboard_threads()


# --- the application's loop ends without a stop -------------------------------------------


def forever_workflow(started: threading.Event | None = None) -> Any:
    async def forever(ctx: Any) -> Value:
        if started is not None:
            started.set()
        await asyncio.sleep(3600)
        return ctx.input_data

    return (
        create_workflow(id="forever", input_schema=Value, output_schema=Value)
        .then(create_step(id="forever", input_schema=Value, output_schema=Value, execute=forever))
        .commit()
    )


def handed_to_the_loop(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set once a step body has been handed to an event loop."""
    handed = threading.Event()
    real = actors._pool.deliver

    def deliver(*args: Any) -> bool:
        accepted = real(*args)
        handed.set()
        return accepted

    monkeypatch.setattr(actors._pool, "deliver", deliver)
    return handed


def assert_failed_as_the_loop_closed(result: Any) -> None:
    assert result.status == RunStatus.FAILED
    assert result.error is not None and result.error.name == "RuntimeStoppedError"
    assert "event loop" in result.error.message and "closed" in result.error.message
    assert "astop()" in result.error.message
    assert result.steps["forever"].status == "failed"


@pytest.mark.usefixtures("_structlog_reset")
def test_a_step_handed_to_a_loop_that_closes_before_running_it_fails_its_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The step waited in the loop's inbox; the loop closed without running it, and
    # the run stayed running for ever in a runtime that went on.
    handed = handed_to_the_loop(monkeypatch)
    loop = asyncio.new_event_loop()  # never run: what was handed to it never runs
    rt = Runtime(async_steps=loop).start()
    try:
        run = rt.register(forever_workflow()).create_run()
        run.start_async(input_data={"value": "v"})
        assert handed.wait(WAIT)
        with structlog.testing.capture_logs() as events:
            loop.close()
            result = run.wait(WAIT)
        assert_failed_as_the_loop_closed(result)
        [warned] = [e for e in events if e["event"] == "app_loop_closed_under_steps"]
        assert warned["steps"] == 1 and "astop()" in warned["hint"]
        # Later async steps are refused at once, as before.
        again = rt.register(forever_workflow()).create_run()
        assert again.start(input_data={"value": "v"}, timeout=WAIT).status == RunStatus.FAILED
    finally:
        rt.stop()
    assert not wait_for_no_callboard_threads()


def test_a_step_running_on_a_loop_that_closes_under_it_fails_its_run() -> None:
    # The loop stopped and closed without cancelling the step's task: it never ends.
    started = threading.Event()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="app-loop")
    thread.start()
    rt = Runtime(async_steps=loop).start()
    try:
        run = rt.register(forever_workflow(started)).create_run()
        run.start_async(input_data={"value": "v"})
        assert started.wait(WAIT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        loop.close()
        assert_failed_as_the_loop_closed(run.wait(WAIT))
    finally:
        rt.stop()
    assert not wait_for_no_callboard_threads()


def test_a_step_handed_to_the_apps_loop_during_asyncio_runs_shutdown_fails_its_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # asyncio.run() cancels the tasks left when main() returns, then closes async
    # generators and the default executor, running the loop again: a step's task made
    # then is never cancelled, nor run to its end, and the loop closes under it.
    handed = handed_to_the_loop(monkeypatch)
    kept: dict[str, Any] = {}

    async def main() -> None:
        rt = await Runtime(async_steps="app").astart()
        kept["rt"] = rt
        kept["run"] = run = rt.register(forever_workflow()).create_run()

        async def closed_at_shutdown() -> Any:
            try:
                yield None
            finally:  # in asyncio.run()'s shutdown_asyncgens(), after its cancel
                run.start_async(input_data={"value": "v"})
                assert handed.wait(WAIT)

        kept["gen"] = closed_at_shutdown()
        await kept["gen"].asend(None)
        # Returns without `await rt.astop()`.

    asyncio.run(main())
    try:
        assert_failed_as_the_loop_closed(kept["run"].wait(WAIT))
    finally:
        kept["rt"].stop()
    assert not wait_for_no_callboard_threads()


@pytest.mark.usefixtures("_structlog_reset")
def test_a_step_whose_task_asyncio_run_cancels_at_its_end_fails_saying_to_stop_first() -> None:
    # Cancelled by asyncio.run()'s own cancel, not by callboard nor by the step: the
    # run fails, with a CancelledError that says where it came from and what to do.
    kept: dict[str, Any] = {}

    async def main() -> None:
        started = threading.Event()
        rt = await Runtime(async_steps="app").astart()
        kept["rt"] = rt
        kept["run"] = run = rt.register(forever_workflow(started)).create_run()
        await run.astart_async(input_data={"value": "v"})
        while not started.is_set():
            await asyncio.sleep(0.01)

    with structlog.testing.capture_logs() as events:
        asyncio.run(main())
        try:
            result = kept["run"].wait(WAIT)
        finally:
            kept["rt"].stop()
    assert result.status == RunStatus.FAILED
    assert result.error is not None and result.error.name == "CancelledError"
    assert "not by callboard" in result.error.message
    assert "asyncio.run()" in result.error.message and "astop()" in result.error.message
    [warned] = [e for e in events if e["event"] == "async_step_cancelled_on_app_loop"]
    assert warned["run_id"] == kept["run"].run_id and "astop()" in warned["hint"]
    assert not wait_for_no_callboard_threads()
