"""The call pool: calls that keep ending share one thread; a call that blocks holds none up."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

from runtime._handoff import STALL, CallPool

WAIT = 10.0


def test_calls_that_keep_ending_run_on_one_thread_not_on_every_thread_of_the_pool() -> None:
    # Each thread more that wants the GIL is one more the event loop's thread waits
    # behind as it wakes. Before, a burst took every thread of the bound at once.
    pool = CallPool(4, "test-call")
    seen: list[str] = []

    def work(n: int) -> int:
        seen.append(threading.current_thread().name)
        time.sleep(STALL / 10)  # ends well within a stall
        return n

    async def main() -> list[int]:
        return await asyncio.gather(*(pool.submit(lambda n=n: work(n)) for n in range(40)))

    try:
        results = asyncio.run(main())
    finally:
        pool.close(WAIT)
    assert results == list(range(40))
    # One thread, but for a watcher that woke in the instant between two calls.
    assert len(set(seen)) <= 2, sorted(set(seen))


def test_calls_queued_behind_one_that_blocks_are_taken_by_another_thread_in_order() -> None:
    pool = CallPool(3, "test-call")
    release = threading.Event()
    ended: list[str] = []

    def blocks() -> str:
        release.wait(WAIT)
        ended.append("blocked")
        return threading.current_thread().name

    def quick(n: int) -> str:
        ended.append(f"quick {n}")
        return threading.current_thread().name

    async def main() -> tuple[str, list[str]]:
        blocked = pool.submit(blocks)
        quick_ones = [pool.submit(lambda n=n: quick(n)) for n in range(5)]
        # All end while the first still blocks: the pool did not wait for it.
        names = await asyncio.wait_for(asyncio.gather(*quick_ones), WAIT)
        assert not blocked.done()
        release.set()
        return await blocked, names

    try:
        blocked_on, quick_on = asyncio.run(main())
    finally:
        release.set()
        pool.close(WAIT)
    assert ended == [f"quick {n}" for n in range(5)] + ["blocked"]
    assert blocked_on not in quick_on
    assert pool.threads() <= 3


def test_calls_that_block_each_bring_a_thread_up_to_the_bound_and_no_more() -> None:
    pool = CallPool(2, "test-call")
    release = threading.Event()
    began = threading.Semaphore(0)

    def blocks() -> None:
        began.release()
        release.wait(WAIT)

    async def main() -> bool:
        first, second = pool.submit(blocks), pool.submit(blocks)
        third = pool.submit(lambda: "after")
        await asyncio.to_thread(lambda: began.acquire(timeout=WAIT) and began.acquire(timeout=WAIT))
        await asyncio.sleep(3 * STALL)
        waiting = not third.done()  # both threads are held: it waits for one, at the bound
        release.set()
        await asyncio.gather(first, second)
        assert await third == "after"
        return waiting

    try:
        assert asyncio.run(main())
    finally:
        release.set()
        pool.close(WAIT)
    assert pool.threads() == 2


def test_while_one_call_blocks_the_calls_behind_it_run_back_to_back_on_another_thread() -> None:
    # Only the calls begun within a stall count: one that blocks for long must not
    # make each later call wait a stall of its own for a thread.
    pool = CallPool(4, "test-call")
    release = threading.Event()

    def quick() -> tuple[str, float]:
        return threading.current_thread().name, time.monotonic()

    async def main() -> list[tuple[str, float]]:
        blocked = pool.submit(lambda: release.wait(WAIT))
        made = await asyncio.gather(*(pool.submit(quick) for _ in range(30)))
        release.set()
        await blocked
        return made

    try:
        made = asyncio.run(main())
    finally:
        release.set()
        pool.close(WAIT)
    names = [name for name, _ in made]
    assert max(names.count(name) for name in set(names)) >= 25, sorted(names)
    # One stall before the first; a stall between each two, had the blocked call counted.
    times = [at for _, at in made]
    waits = [later - sooner for sooner, later in itertools.pairwise(times)]
    assert sum(wait >= STALL for wait in waits) < 10, waits
