"""Latch, AbortSignal and Channel: waited on from threads and from asyncio alike."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from functools import partial

import pytest

from runtime._sync import AbortSignal, Channel, ChannelClosed, Latch

WAIT = 10.0


def later(fn: Callable[[], object]) -> threading.Thread:
    """Run ``fn`` on another thread."""
    thread = threading.Thread(target=fn)
    thread.start()
    return thread


async def while_ticking(
    waiting: Callable[[], Awaitable[object]], wake: Callable[[], object]
) -> tuple[object, int]:
    """Await ``waiting()`` while a ticker task runs; another thread calls ``wake`` once it ticked.

    Returns what ``waiting()`` returned and how many ticks the other thread saw
    before waking it: more than zero proves the wait left the loop running.
    """
    ticks = 0
    ticked = threading.Event()
    stop = False

    async def ticker() -> None:
        nonlocal ticks
        while not stop:
            ticks += 1
            if ticks >= 20:
                ticked.set()
            await asyncio.sleep(0.001)

    seen: list[int] = []

    def waker() -> None:
        ticked.wait(WAIT)  # on a blocked loop this times out, and the test fails below
        seen.append(ticks)
        wake()

    waiter = asyncio.ensure_future(waiting())
    await asyncio.sleep(0)  # the waiter parks before the ticker starts
    tick_task = asyncio.ensure_future(ticker())
    thread = later(waker)
    try:
        result = await asyncio.wait_for(waiter, WAIT * 2)
    finally:
        stop = True
        await tick_task
        thread.join(WAIT)
    return result, seen[0]


# --- Latch -------------------------------------------------------------------------


def test_a_latch_starts_unset_and_stays_set() -> None:
    latch = Latch()
    assert not latch.is_set()
    assert latch.wait(timeout=0.01) is False

    assert latch.set() is True
    assert latch.set() is False

    assert latch.is_set()
    assert latch.wait(timeout=0) is True


def test_a_latch_wakes_a_waiting_thread() -> None:
    latch = Latch()
    woke = threading.Event()

    def waiter() -> None:
        if latch.wait(WAIT):
            woke.set()

    thread = later(waiter)

    latch.set()

    thread.join(WAIT)
    assert woke.is_set()


def test_an_async_wait_is_woken_from_another_thread_without_blocking_the_loop() -> None:
    latch = Latch()

    _, ticks_before_set = asyncio.run(while_ticking(latch.wait_async, latch.set))

    assert ticks_before_set >= 20
    assert latch._waiters == set()


def test_an_async_wait_on_a_set_latch_returns_at_once() -> None:
    latch = Latch()
    latch.set()

    asyncio.run(asyncio.wait_for(latch.wait_async(), WAIT))


def test_set_wakes_waiters_on_several_loops() -> None:
    latch = Latch()
    parked = threading.Barrier(3)
    woke: list[str] = []

    def loop_thread(name: str) -> None:
        async def main() -> None:
            task = asyncio.ensure_future(latch.wait_async())
            await asyncio.sleep(0)
            parked.wait(WAIT)
            await asyncio.wait_for(task, WAIT)
            woke.append(name)

        asyncio.run(main())

    threads = [later(partial(loop_thread, n)) for n in ("a", "b")]
    parked.wait(WAIT)
    assert len(latch._waiters) == 2

    latch.set()

    for thread in threads:
        thread.join(WAIT)
    assert sorted(woke) == ["a", "b"]


def test_a_cancelled_async_wait_leaves_no_waiter_behind() -> None:
    latch = Latch()

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(latch.wait_async(), 0.01)

    asyncio.run(main())

    assert latch._waiters == set()
    assert latch.set() is True


def test_a_closed_loop_does_not_make_set_raise() -> None:
    latch = Latch()
    closed = asyncio.new_event_loop()
    task = closed.create_task(latch.wait_async())
    closed.run_until_complete(asyncio.sleep(0))
    assert len(latch._waiters) == 1
    closed.close()

    woke = threading.Event()

    async def live() -> None:
        waiting = asyncio.ensure_future(latch.wait_async())
        await asyncio.sleep(0)
        later(latch.set)
        await asyncio.wait_for(waiting, WAIT)
        woke.set()

    asyncio.run(live())  # the closed loop's waiter is skipped, the live one still wakes

    assert woke.is_set()
    task._log_destroy_pending = False  # type: ignore[attr-defined]  # its loop is gone on purpose


def test_set_on_a_closed_loop_is_quiet_when_called_directly() -> None:
    latch = Latch()
    closed = asyncio.new_event_loop()
    task = closed.create_task(latch.wait_async())
    closed.run_until_complete(asyncio.sleep(0))
    closed.close()

    assert latch.set() is True
    task._log_destroy_pending = False  # type: ignore[attr-defined]


# --- AbortSignal -------------------------------------------------------------------


def test_a_new_signal_is_not_aborted() -> None:
    signal = AbortSignal()

    assert signal.aborted is False
    assert signal.reason is None
    assert signal.wait(timeout=0.01) is False


def test_the_first_abort_wins() -> None:
    signal = AbortSignal()

    assert signal.abort("timeout") is True
    assert signal.abort("canceled") is False

    assert signal.aborted is True
    assert signal.reason == "timeout"
    assert signal.wait(timeout=0) is True


def test_an_abort_wakes_a_waiting_thread() -> None:
    signal = AbortSignal()
    woke: list[str | None] = []

    def waiter() -> None:
        if signal.wait(WAIT):
            woke.append(signal.reason)

    thread = later(waiter)

    signal.abort("canceled")

    thread.join(WAIT)
    assert woke == ["canceled"]


def test_an_async_wait_for_an_abort_leaves_the_loop_running() -> None:
    signal = AbortSignal()

    _, ticks_before_abort = asyncio.run(
        while_ticking(signal.wait_async, lambda: signal.abort("sibling_failed"))
    )

    assert ticks_before_abort >= 20
    assert signal.reason == "sibling_failed"


def test_callbacks_are_called_once_with_the_reason() -> None:
    signal = AbortSignal()
    calls: list[str] = []
    signal.add_callback(calls.append)
    signal.add_callback(lambda reason: calls.append(f"second:{reason}"))

    signal.abort("canceled")
    signal.abort("timeout")

    assert calls == ["canceled", "second:canceled"]


def test_a_callback_added_after_the_abort_is_called_at_once() -> None:
    signal = AbortSignal()
    signal.abort("timeout")
    calls: list[str] = []

    signal.add_callback(calls.append)

    assert calls == ["timeout"]


def test_a_raising_callback_is_counted_and_the_others_still_run() -> None:
    signal = AbortSignal()
    calls: list[str] = []

    def bad(reason: str) -> None:
        raise RuntimeError(reason)

    signal.add_callback(bad)
    signal.add_callback(calls.append)

    assert signal.abort("canceled") is True
    signal.add_callback(bad)

    assert calls == ["canceled"]
    assert signal.callback_errors == 2


def test_callbacks_run_once_when_threads_race_to_abort() -> None:
    signal = AbortSignal()
    calls: list[str] = []
    signal.add_callback(calls.append)
    start = threading.Barrier(8)
    won: list[bool] = []

    def racer(reason: str) -> None:
        start.wait(WAIT)
        won.append(signal.abort(reason))

    threads = [later(partial(racer, f"r{i}")) for i in range(8)]
    for thread in threads:
        thread.join(WAIT)

    assert won.count(True) == 1
    assert calls == [signal.reason]


# --- Channel -----------------------------------------------------------------------


def test_a_channel_delivers_items_in_order() -> None:
    channel: Channel[int] = Channel()
    for i in range(100):
        assert channel.put(i) is True

    assert [channel.get(timeout=WAIT) for _ in range(100)] == list(range(100))


def test_get_times_out_on_an_empty_open_channel() -> None:
    channel: Channel[int] = Channel()

    with pytest.raises(TimeoutError):
        channel.get(timeout=0.01)


def test_close_delivers_what_was_put_then_raises_channel_closed() -> None:
    channel: Channel[str] = Channel()
    channel.put("a")
    channel.put("b")

    channel.close()
    channel.close()  # idempotent

    assert channel.closed
    assert channel.get() == "a"
    assert channel.get() == "b"
    with pytest.raises(ChannelClosed):
        channel.get(timeout=WAIT)
    with pytest.raises(ChannelClosed):
        channel.get()


def test_a_put_after_close_is_dropped() -> None:
    channel: Channel[int] = Channel()
    channel.close()

    assert channel.put(1) is False
    with pytest.raises(ChannelClosed):
        channel.get(timeout=0)


def test_a_blocked_get_is_woken_by_a_put_and_by_close() -> None:
    channel: Channel[int] = Channel()
    got: list[object] = []

    def consume() -> None:
        got.append(channel.get(timeout=WAIT))
        try:
            channel.get(timeout=WAIT)
        except ChannelClosed as error:
            got.append(type(error))

    thread = later(consume)
    channel.put(7)
    channel.close()
    thread.join(WAIT)

    assert got == [7, ChannelClosed]


def test_items_from_many_producer_threads_keep_each_producers_order() -> None:
    channel: Channel[tuple[int, int]] = Channel()

    def produce(producer: int) -> None:
        for i in range(500):
            channel.put((producer, i))

    threads = [later(partial(produce, p)) for p in range(4)]
    for thread in threads:
        thread.join(WAIT)
    channel.close()

    items: list[tuple[int, int]] = []
    while True:
        try:
            items.append(channel.get(timeout=WAIT))
        except ChannelClosed:
            break

    assert len(items) == 2000
    for producer in range(4):
        assert [i for p, i in items if p == producer] == list(range(500))


def test_aget_is_woken_by_a_put_from_another_thread_without_blocking_the_loop() -> None:
    channel: Channel[str] = Channel()

    item, ticks_before_put = asyncio.run(while_ticking(channel.aget, lambda: channel.put("x")))

    assert item == "x"
    assert ticks_before_put >= 20
    assert channel._waiters == set()


def test_aget_reads_in_order_then_raises_once_closed() -> None:
    channel: Channel[int] = Channel()

    async def consume() -> list[int]:
        items = []
        while True:
            try:
                items.append(await asyncio.wait_for(channel.aget(), WAIT))
            except ChannelClosed:
                return items

    def produce() -> None:
        for i in range(200):
            channel.put(i)
        channel.close()

    async def main() -> list[int]:
        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0)
        thread = later(produce)
        try:
            return await task
        finally:
            thread.join(WAIT)

    assert asyncio.run(main()) == list(range(200))


def test_aget_is_woken_by_close() -> None:
    channel: Channel[int] = Channel()

    async def main() -> None:
        waiting = asyncio.ensure_future(channel.aget())
        await asyncio.sleep(0)
        later(channel.close)
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(waiting, WAIT)

    asyncio.run(main())


def test_a_cancelled_aget_loses_no_item() -> None:
    channel: Channel[int] = Channel()

    async def main() -> int:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(channel.aget(), 0.01)
        assert channel._waiters == set()
        channel.put(5)
        return await asyncio.wait_for(channel.aget(), WAIT)

    assert asyncio.run(main()) == 5
