"""A wait or a watch that the runtime's stop ends says so: neither passes for the run's end.

Before, on a durable store, ``run.wait()`` (and ``wait_async()``, ``start()``) of a run
still in progress when its runtime stopped returned the run's result with status
``running``: the next line of a caller that reads ``result.status == "success"`` took it
for a failure, and nothing said that the run goes on in the store. A watch ended the
same way stopped as if the run had ended.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from runtime import Runtime, RuntimeStoppedError, create_step, create_workflow


class Value(BaseModel):
    value: int


gate = threading.Event()


def _held(ctx: Any) -> Value:
    gate.wait(30)
    return ctx.input_data


held = create_step(id="held", input_schema=Value, output_schema=Value, execute=_held)
flow = create_workflow(id="held-by-stop", input_schema=Value, output_schema=Value)
flow = flow.then(held).commit()


@pytest.fixture(autouse=True)
def _release() -> Any:
    gate.clear()
    yield
    gate.set()


def _waiting(run: Any, outcome: list[Any]) -> threading.Thread:
    """A thread that waits for ``run`` and appends what the wait ended with to ``outcome``."""

    def wait() -> None:
        try:
            outcome.append(run.wait(timeout=30))
        except Exception as exc:  # what the wait ended with is the point
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    return waiter


def test_a_wait_ended_by_the_stop_raises_and_the_run_goes_on_in_the_store(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    outcome: list[Any] = []
    with Runtime(store=store, stop_timeout=0.2) as runtime:
        run = runtime.register(flow).create_run()
        run.start_async(input_data={"value": 1})
        waiter = _waiting(run, outcome)
        runtime.stop()
        waiter.join(10)
        with pytest.raises(RuntimeStoppedError, match="goes on with it"):
            run.wait(timeout=5)  # on the stopped runtime, at once

    assert len(outcome) == 1 and isinstance(outcome[0], RuntimeStoppedError), outcome
    assert outcome[0].run_id == run.run_id
    gate.set()
    with Runtime(store=store) as runtime:  # the next runtime goes on with it
        again = runtime.register(flow).get_workflow_run_execution_result(run.run_id)
        assert again is not None
        assert runtime.register(flow).create_run(run.run_id).wait(timeout=30).status == "success"


def test_an_awaited_wait_ended_by_the_stop_raises(tmp_path: Path) -> None:
    async def main() -> Any:
        runtime = Runtime(store=tmp_path / "runs.db", stop_timeout=0.2)
        await runtime.astart()
        run = runtime.register(flow).create_run()
        await run.astart_async(input_data={"value": 1})
        waiting = asyncio.ensure_future(run.wait_async(timeout=30))
        await asyncio.sleep(0.1)
        await runtime.astop()
        return await asyncio.gather(waiting, return_exceptions=True)

    (outcome,) = asyncio.run(main())

    assert isinstance(outcome, RuntimeStoppedError), outcome


def test_in_memory_the_stop_still_fails_the_run_and_the_wait_returns_it() -> None:
    outcome: list[Any] = []
    with Runtime(stop_timeout=0.2) as runtime:
        run = runtime.register(flow).create_run()
        run.start_async(input_data={"value": 1})
        waiter = threading.Thread(target=lambda: outcome.append(run.wait(timeout=30)))
        waiter.start()
        runtime.stop()
        waiter.join(10)

    assert len(outcome) == 1 and outcome[0].status == "failed"


def _watched(watch: Any) -> tuple[list[str], BaseException | None]:
    """The event types a watch yields, and what its iteration ended with."""
    seen: list[str] = []
    try:
        for event in watch:
            seen.append(event.type)
    except Exception as exc:  # what the watch ended with is the point
        return seen, exc
    return seen, None


def _watched_through_the_stop(store: Any) -> tuple[Any, Any, list[str], BaseException | None]:
    """A run held in its step, watched from a thread while its runtime stops.

    Returns the run, its watch, the event types the watch yielded and what it ended with.
    """
    outcome: list[tuple[list[str], BaseException | None]] = []
    with Runtime(store=store, stop_timeout=0.2) as runtime:
        run = runtime.register(flow).create_run()
        run.start_async(input_data={"value": 1})
        watch = run.watch(timeout=30)
        watcher = threading.Thread(target=lambda: outcome.append(_watched(watch)))
        watcher.start()
        runtime.stop()
        watcher.join(10)
    assert len(outcome) == 1
    return run, watch, *outcome[0]


def test_a_watch_ended_by_the_stop_raises_after_the_events_so_far(tmp_path: Path) -> None:
    run, watch, seen, ended = _watched_through_the_stop(tmp_path / "runs.db")

    assert "step_started" in seen, seen  # what was told before the stop is kept
    assert isinstance(ended, RuntimeStoppedError), ended
    assert ended.run_id == run.run_id and "had not ended" in str(ended)
    assert list(watch) == [] and watch.closed  # told once; then the iteration ends


def test_an_async_watch_ended_by_the_stop_raises(tmp_path: Path) -> None:
    async def main() -> tuple[list[str], BaseException | None]:
        runtime = Runtime(store=tmp_path / "runs.db", stop_timeout=0.2)
        await runtime.astart()
        run = runtime.register(flow).create_run()
        await run.astart_async(input_data={"value": 1})
        seen: list[str] = []

        async def watch() -> None:
            async with await run.awatch() as events:
                async for event in events:
                    seen.append(event.type)

        watching = asyncio.ensure_future(watch())
        await asyncio.sleep(0.1)
        await runtime.astop()
        (ended,) = await asyncio.gather(watching, return_exceptions=True)
        return seen, ended

    seen, ended = asyncio.run(main())

    assert "step_started" in seen, seen
    assert isinstance(ended, RuntimeStoppedError), ended


def test_a_watch_on_a_stopped_runtime_tells_the_story_so_far_and_says_it_is_not_the_end(
    tmp_path: Path,
) -> None:
    runtime = Runtime(store=tmp_path / "runs.db", stop_timeout=0.2)
    with runtime:
        workflow = runtime.register(flow)
        unfinished = workflow.create_run()
        unfinished.start_async(input_data={"value": 1})
        gate.set()
        done = workflow.create_run()
        done.start(input_data={"value": 2})
        gate.clear()
        third = workflow.create_run()
        third.start_async(input_data={"value": 3})

    # The first run may have finished while the gate was open; the third had not.
    seen, ended = _watched(third.watch())
    assert seen[:1] == ["status"], seen
    assert isinstance(ended, RuntimeStoppedError), ended
    seen, ended = _watched(done.watch())
    assert ended is None and seen[-1] == "status", seen  # an ended run's watch ends quietly


def test_in_memory_the_stop_fails_the_run_and_its_watch_ends_with_that() -> None:
    _, watch, seen, ended = _watched_through_the_stop("memory")

    assert ended is None, ended  # the run ended (failed): its watch ends quietly
    assert seen[-1] == "status" and watch.last_seq is not None


def _wake_early(runtime: Runtime, run_id: str) -> None:
    """Tell the registry a settle of ``run_id`` was committed, late: as a suspension's is
    when its commit notice comes after a resume of that suspension was recorded."""
    from actors.messages import SettledCommitted

    assert runtime._host.system is not None
    runtime._host.system.registry.tell(SettledCommitted(run_id=run_id))


def test_a_wait_woken_while_the_run_goes_on_waits_again(tmp_path: Path) -> None:
    outcome: list[Any] = []
    with Runtime(store=tmp_path / "runs.db") as runtime:
        run = runtime.register(flow).create_run()
        run.start_async(input_data={"value": 1})
        waiter = _waiting(run, outcome)
        for _ in range(3):  # each wakes the waiter while the run goes on
            time.sleep(0.05)
            _wake_early(runtime, run.run_id)
        time.sleep(0.05)
        assert outcome == []  # still waiting
        gate.set()
        waiter.join(10)

    assert len(outcome) == 1 and getattr(outcome[0], "status", None) == "success", outcome


def test_an_awaited_wait_woken_while_the_run_goes_on_waits_again(tmp_path: Path) -> None:
    async def main() -> Any:
        async with Runtime(store=tmp_path / "runs.db") as runtime:
            run = runtime.register(flow).create_run()
            await run.astart_async(input_data={"value": 1})
            waiting = asyncio.ensure_future(run.wait_async(timeout=30))
            for _ in range(3):
                await asyncio.sleep(0.05)
                _wake_early(runtime, run.run_id)
            await asyncio.sleep(0.05)
            assert not waiting.done()
            gate.set()
            return await waiting

    assert asyncio.run(main()).status == "success"
