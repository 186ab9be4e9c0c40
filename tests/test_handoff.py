"""Handing work between threads and an event loop: few wake-ups, and a bounded call pool."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from runtime._handoff import CallPool, deliver

WAIT = 10.0


def test_a_burst_of_deliveries_wakes_the_loop_once_and_runs_them_in_order() -> None:
    async def main() -> tuple[list[int], int]:
        loop = asyncio.get_running_loop()
        wakes = 0
        call_soon_threadsafe = loop.call_soon_threadsafe

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal wakes
            wakes += 1
            return call_soon_threadsafe(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        got: list[int] = []
        all_in = threading.Event()

        def producer() -> None:
            for n in range(100):
                assert deliver(loop, got.append, n)
            all_in.set()

        thread = threading.Thread(target=producer)
        thread.start()
        # The loop is busy (this blocking wait holds it) while the thread delivers.
        assert all_in.wait(WAIT)
        thread.join()
        while len(got) < 100:
            await asyncio.sleep(0.001)
        return got, wakes

    got, wakes = asyncio.run(main())
    assert got == list(range(100))
    assert wakes == 1


def test_a_delivery_to_a_closed_loop_is_refused() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    assert not deliver(loop, print, "never")


def test_one_bad_delivered_callback_does_not_stop_the_others() -> None:
    async def main() -> tuple[list[str], list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        got: list[str] = []

        def bad(_: str) -> None:
            raise ValueError("bad callback")

        def producer() -> None:
            deliver(loop, bad, "x")
            deliver(loop, got.append, "after")

        await asyncio.to_thread(producer)
        while not got:
            await asyncio.sleep(0.001)
        return got, reported

    got, reported = asyncio.run(main())
    assert got == ["after"]
    assert isinstance(reported[0]["exception"], ValueError)


def test_the_call_pool_returns_results_and_raises_errors_on_its_bounded_threads() -> None:
    pool = CallPool(2, "test-call")
    seen: set[str] = set()

    def work(n: int) -> int:
        seen.add(threading.current_thread().name)
        time.sleep(0.001)
        if n == 7:
            raise KeyError(n)
        return n * 2

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(pool.submit(lambda n=n: work(n)) for n in range(50)), return_exceptions=True
        )

    try:
        results = asyncio.run(main())
    finally:
        pool.close()
    assert [r for n, r in enumerate(results) if n != 7] == [n * 2 for n in range(50) if n != 7]
    assert isinstance(results[7], KeyError)
    assert 1 <= len(seen) <= 2 and pool.threads() <= 2
    assert all(name.startswith("test-call-") for name in seen)
    assert not [t for t in threading.enumerate() if t.name.startswith("test-call-")]


def test_closing_the_call_pool_runs_queued_calls_elsewhere_and_waits_for_the_running_one() -> None:
    # A call queued behind busy threads when the pool closes (the runtime stopping) runs on
    # its loop's default executor, as a call made after the stop does: its caller was
    # handed asyncio.CancelledError, which no `except Exception` catches, though nobody
    # cancelled it.
    pool = CallPool(1, "test-call")
    running = threading.Event()
    release = threading.Event()
    ran: list[str] = []

    def slow() -> str:
        running.set()
        release.wait(WAIT)
        ran.append("slow")
        return "slow"

    def queued() -> str:
        ran.append("queued")
        return threading.current_thread().name

    def failing() -> None:
        raise KeyError("told as raised")

    async def main() -> tuple[str, str]:
        first = pool.submit(slow)
        second = pool.submit(queued)
        third = pool.submit(failing)
        await asyncio.to_thread(running.wait, WAIT)
        threading.Timer(0.05, release.set).start()
        await asyncio.to_thread(pool.close)
        with pytest.raises(RuntimeError):
            pool.submit(lambda: None)
        with pytest.raises(KeyError, match="told as raised"):
            await third
        return await first, await second

    slow_result, queued_on = asyncio.run(main())
    assert slow_result == "slow" and not queued_on.startswith("test-call-")
    assert sorted(ran) == ["queued", "slow"]


def test_a_call_sent_elsewhere_at_the_close_whose_caller_was_cancelled_logs_nothing() -> None:
    # Its caller was cancelled while the loop's executor ran it: asyncio logged its
    # error ("Future exception was never retrieved") once per call at a stop (p3).
    import gc

    pool = CallPool(1, "test-call")
    running, release, started = threading.Event(), threading.Event(), threading.Event()
    logged: list[dict[str, Any]] = []

    def slow() -> None:
        running.set()
        release.wait(WAIT)

    def failing() -> None:
        started.set()
        time.sleep(0.2)  # its caller is cancelled meanwhile
        raise KeyError("nobody reads this")

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: logged.append(context))
        first = pool.submit(slow)
        queued = asyncio.ensure_future(pool.submit(failing))
        await asyncio.sleep(0)  # the call is queued behind the busy thread
        await asyncio.to_thread(running.wait, WAIT)
        threading.Timer(0.05, release.set).start()
        await asyncio.to_thread(pool.close)
        await asyncio.to_thread(started.wait, WAIT)  # on the loop's default executor
        queued.cancel()
        await first
        await asyncio.sleep(0.5)  # the call ends, its error unread by its caller
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(main())
    assert logged == []


def test_a_loop_closed_before_its_deliveries_ran_is_refused_and_let_go() -> None:
    # A loop that closed with a drain scheduled and not run: later deliveries were taken
    # (True) and never run, and what the inbox held kept the loop alive for ever.
    import gc
    import weakref

    from runtime import _handoff

    loop = asyncio.new_event_loop()
    assert deliver(loop, print, "scheduled, never run")
    loop.close()
    assert not deliver(loop, print, "refused")
    held = asyncio.new_event_loop()
    assert deliver(held, print, "also never run")
    future = held.create_future()
    assert deliver(held, future.set_result, None)  # the inbox holds the loop's future
    held.close()
    gone = weakref.ref(held)
    del held, future
    fresh = asyncio.new_event_loop()
    try:
        assert deliver(fresh, print, "a new loop's inbox lets go of the closed ones")
    finally:
        fresh.close()
    gc.collect()
    assert gone() is None
    # Only the newest is held, until another loop's inbox is made.
    assert [key for key in list(_handoff._inboxes) if key.is_closed()] == [fresh]


def test_a_call_whose_task_was_cancelled_before_it_ran_is_skipped() -> None:
    pool = CallPool(1, "test-call")
    running = threading.Event()
    release = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        first = pool.submit(lambda: (running.set(), release.wait(WAIT)))
        second = pool.submit(lambda: ran.append("cancelled one"))
        await asyncio.to_thread(running.wait, WAIT)
        second.cancel()
        release.set()
        await first
        await pool.submit(lambda: ran.append("next"))

    try:
        asyncio.run(main())
    finally:
        pool.close()
    assert ran == ["next"]


def test_async_steps_handed_to_the_apps_loop_in_a_burst_wake_it_once_and_cancel_alike() -> None:
    from actors._pool import AsyncLoop

    async def main() -> tuple[list[Any], bool, int]:
        loop = asyncio.get_running_loop()
        wakes = 0
        call_soon_threadsafe = loop.call_soon_threadsafe

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal wakes
            wakes += 1
            return call_soon_threadsafe(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        steps = AsyncLoop(loop)
        never = asyncio.Event()

        async def body(n: int) -> int:
            await asyncio.sleep(0)
            return n

        async def stuck() -> None:
            await never.wait()

        futures = []

        def from_a_thread() -> None:  # as step actors hand bodies over, from their threads
            futures.extend(steps.submit(body(n)) for n in range(50))
            futures.append(steps.submit(stuck()))

        thread = threading.Thread(target=from_a_thread)
        thread.start()
        thread.join()  # the loop is held here while all 51 are handed over
        woken = wakes
        results = await asyncio.to_thread(lambda: [f.result(5) for f in futures[:50]])
        # From another thread, as a step's timeout does.
        assert await asyncio.to_thread(futures[50].cancel)
        await asyncio.sleep(0.05)
        cancelled = futures[50].cancelled() and not [
            t for t in asyncio.all_tasks() if t.get_coro().__name__ == "stuck"
        ]
        steps.stop()
        return results, cancelled, woken

    results, cancelled, woken = asyncio.run(main())
    assert results == list(range(50))
    assert cancelled
    assert woken == 1


def test_a_call_that_raises_stop_iteration_is_told_as_a_runtime_error_not_left_waiting() -> None:
    # A future refuses StopIteration (TypeError in the loop's callback): the awaiting
    # task waited for ever.
    pool = CallPool(1, "test-call")

    def exhausted() -> None:
        next(iter(()))

    async def main() -> BaseException:
        with pytest.raises(RuntimeError, match="raised StopIteration") as raised:
            await asyncio.wait_for(pool.submit(exhausted), WAIT)
        return raised.value

    try:
        error = asyncio.run(main())
    finally:
        pool.close(WAIT)
    assert isinstance(error.__cause__, StopIteration)


def test_a_call_given_up_on_for_want_of_a_thread_is_not_made_by_one_that_takes_it_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # call_within looked whether the call had begun, then cancelled it: a call thread
    # that took it in between made it all the same, its caller told it was never made.
    from runtime import Runtime

    host = Runtime()._host
    taken: list[Any] = []

    def submit(call: Any) -> asyncio.Future[Any]:
        taken.append(call)  # no thread takes it in time
        return asyncio.get_running_loop().create_future()

    monkeypatch.setattr(host, "submit", submit)
    made: list[str] = []

    async def main() -> Any:
        return await host.call_within(lambda: made.append("made") or "made", 0.01)

    assert asyncio.run(main()) is None
    with pytest.raises(asyncio.CancelledError):
        taken[0]()  # the thread that takes it now
    assert made == []
