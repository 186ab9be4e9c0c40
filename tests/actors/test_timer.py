"""Timers: one thread, heaps of wall-clock and monotonic deadlines, callbacks in deadline order."""

from __future__ import annotations

import gc
import random
import threading
import time
import tracemalloc
import weakref
from collections.abc import Iterator
from functools import partial

import pytest
import structlog

from actors._timer import Timers
from runtime import _clock
from runtime._errors import RuntimeStoppedError
from runtime.testing import VirtualClock

WAIT = 10.0
FAR = 3600.0  # a deadline no test reaches


def timer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "callboard-timers"]


@pytest.fixture
def timers() -> Iterator[Timers]:
    t = Timers()
    try:
        yield t
    finally:
        assert t.stop(timeout=WAIT)
    assert t._thread is None or not t._thread.is_alive()


class Gate:
    """A callback that holds the timer thread until released, so the heap fills meanwhile."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> None:
        self.entered.set()
        assert self.release.wait(WAIT)


def hold(timers: Timers) -> Gate:
    gate = Gate()
    timers.call_at(time.time() - 1, gate)
    assert gate.entered.wait(WAIT)
    return gate


def wait_until_the_thread_sleeps(timers: Timers) -> None:
    """Wait until the timer thread waits on its condition (CPython's Condition keeps waiters)."""
    deadline = time.monotonic() + WAIT
    while not timers._condition._waiters:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the timer thread never went to sleep"
        time.sleep(0.001)


def noop() -> None:
    pass


def noop_with(*_args: object) -> None:
    pass


# --- firing ----------------------------------------------------------------------


def test_timers_fire_in_deadline_order(timers: Timers) -> None:
    gate = hold(timers)
    fired: list[int] = []
    done = threading.Event()
    base = time.time() - 100  # all due: only their order decides
    order = list(range(50))
    random.Random(4).shuffle(order)
    for i in order:
        timers.call_at(base + i, partial(fired.append, i))
    timers.call_at(base + 50, done.set)

    gate.release.set()

    assert done.wait(WAIT)
    assert fired == list(range(50))


def test_equal_deadlines_fire_in_the_order_they_were_scheduled(timers: Timers) -> None:
    gate = hold(timers)
    fired: list[int] = []
    done = threading.Event()
    when = time.time() - 10
    for i in range(20):
        timers.call_at(when, partial(fired.append, i))
    timers.call_at(when, done.set)

    gate.release.set()

    assert done.wait(WAIT)
    assert fired == list(range(20))


def test_future_deadlines_fire_in_order(timers: Timers) -> None:
    # On a virtual clock: each delay counts from the same now, however slowly the test
    # thread gets to the next line (on the wall clock, a 20 ms stall between the first two
    # calls made them due in the other order).
    clock = VirtualClock()
    _clock.install(clock.now)
    forget = _clock.on_advance(timers.wake)
    try:
        fired: list[str] = []
        done = threading.Event()
        timers.call_later(0.03, lambda: fired.append("late"))
        timers.call_later(0.01, lambda: fired.append("early"))
        timers.call_later(0.05, done.set)
        time.sleep(0.05)  # real time passes: nothing is due on the virtual clock
        assert fired == []

        clock.advance(0.05)

        assert done.wait(WAIT)
        assert fired == ["early", "late"]
    finally:
        forget()
        _clock.uninstall()


def test_a_past_deadline_fires_at_once_even_behind_a_far_one() -> None:
    # With the clock re-read only every hour, only the wake-up on a new
    # earliest deadline can fire the second timer within the wait.
    timers = Timers(max_wait=FAR)
    try:
        fired = threading.Event()
        timers.call_later(FAR, noop)
        wait_until_the_thread_sleeps(timers)
        timers.call_at(time.time() - 60, fired.set)

        assert fired.wait(WAIT)
        assert len(timers) == 1
    finally:
        assert timers.stop(timeout=WAIT)


def test_callbacks_run_on_the_timer_thread(timers: Timers) -> None:
    names: list[str] = []
    done = threading.Event()

    def record() -> None:
        names.append(threading.current_thread().name)
        done.set()

    timers.call_later(0, record)

    assert done.wait(WAIT)
    assert names == ["callboard-timers"]


def test_a_callback_may_schedule_and_cancel_timers(timers: Timers) -> None:
    done = threading.Event()
    cancelled: list[bool] = []
    later = timers.call_later(FAR, noop)

    def reschedule() -> None:
        cancelled.append(later.cancel())
        timers.call_later(0, done.set)

    timers.call_later(0, reschedule)

    assert done.wait(WAIT)
    assert cancelled == [True]
    assert len(timers) == 0


def test_a_raising_callback_is_logged_and_later_ones_still_fire(timers: Timers) -> None:
    done = threading.Event()

    def boom() -> None:
        raise RuntimeError("boom")

    with structlog.testing.capture_logs() as logs:
        now = time.time()
        timers.call_at(now - 2, boom)
        timers.call_at(now - 1, done.set)

        assert done.wait(WAIT)
    structlog.reset_defaults()

    failures = [entry for entry in logs if entry["event"] == "timer_callback_failed"]
    assert len(failures) == 1
    assert failures[0]["log_level"] == "error"
    assert failures[0]["exc_info"] is True
    assert timers._thread is not None and timers._thread.is_alive()


# --- cancel and len ----------------------------------------------------------------


def test_a_cancelled_timer_never_fires(timers: Timers) -> None:
    gate = hold(timers)
    fired: list[str] = []
    done = threading.Event()
    now = time.time()
    first = timers.call_at(now - 3, lambda: fired.append("first"))
    timers.call_at(now - 2, lambda: fired.append("second"))
    timers.call_at(now - 1, done.set)

    assert first.cancel() is True
    assert first.cancel() is False
    assert first.cancelled
    gate.release.set()

    assert done.wait(WAIT)
    assert fired == ["second"]


def test_cancel_after_firing_returns_false(timers: Timers) -> None:
    done = threading.Event()
    handle = timers.call_later(0, done.set)

    assert done.wait(WAIT)
    assert handle.cancel() is False
    assert not handle.cancelled


def test_len_counts_only_live_timers(timers: Timers) -> None:
    handles = [timers.call_later(FAR, noop) for _ in range(10)]
    assert len(timers) == 10

    handles[3].cancel()
    handles[7].cancel()
    assert len(timers) == 8

    done = threading.Event()
    timers.call_later(0, done.set)
    assert done.wait(WAIT)
    assert len(timers) == 8


def test_cancelling_drops_the_callback_and_its_arguments_at_once() -> None:
    timers = Timers()
    try:

        class Callback:
            def __call__(self, _argument: object) -> None:
                pass

        class Argument:
            pass

        callback, argument = Callback(), Argument()
        refs = [weakref.ref(callback), weakref.ref(argument)]
        handle = timers.call_later(FAR, callback, argument)
        del callback, argument
        gc.collect()
        assert all(ref() is not None for ref in refs)  # the pending timer keeps them

        handle.cancel()
        gc.collect()

        assert all(ref() is None for ref in refs)
    finally:
        assert timers.stop(timeout=WAIT)


def test_a_timer_calls_its_callback_with_its_arguments_and_lets_go_of_them(
    timers: Timers,
) -> None:
    class Argument:
        pass

    calls: list[tuple[object, ...]] = []
    done = threading.Event()
    argument = Argument()
    ref = weakref.ref(argument)

    def record(*args: object) -> None:
        calls.append(args)
        done.set()

    timers.call_later(0, record, argument, "run-1")
    del argument
    assert done.wait(WAIT)
    assert len(calls) == 1
    assert calls[0][0] is ref() and calls[0][1] == "run-1"
    calls.clear()
    # Once fired, the timer thread keeps nothing of it while it waits for the next.
    wait_until_the_thread_sleeps(timers)
    gc.collect()
    assert ref() is None


def test_a_timer_with_text_arguments_holds_nothing_tracked_but_its_callback(
    timers: Timers,
) -> None:
    """A sleeping run's timer: one callback for every run, and the run's id."""
    wake = partial(noop_with, "shared")
    handles = [timers.call_at(time.time() + FAR, wake, f"run-{i}") for i in range(100)]
    gc.collect()  # the collector stops tracking a tuple of text once it has seen it
    for handle in handles:
        tracked = [
            referent
            for referent in gc.get_referents(handle)
            if gc.is_tracked(referent) and referent is not type(handle)
        ]
        assert sorted(map(id, tracked)) == sorted(map(id, [timers, wake]))


def test_the_heap_is_compacted_once_more_than_half_is_cancelled(timers: Timers) -> None:
    handles = [timers.call_later(FAR, noop) for _ in range(1000)]

    for handle in handles[:900]:
        handle.cancel()

    assert len(timers) == 100
    assert len(timers._heap) <= 2 * len(timers) + 1

    for handle in handles[900:]:
        handle.cancel()
    assert len(timers._heap) <= 1


# --- scale -------------------------------------------------------------------------


def test_ten_thousand_timers_cost_one_thread_and_little_memory(timers: Timers) -> None:
    threads_before = threading.active_count()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        now = time.time()
        handles = [timers.call_at(now + FAR + i, noop) for i in range(10_000)]
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()

    assert threading.active_count() - threads_before <= 1
    assert len(timers_threads := timer_threads()) == 1, timers_threads
    assert len(timers) == 10_000
    # A handle with __slots__ and its heap entry take about 200 bytes.
    assert used < 4_000_000, f"{used} bytes for 10,000 timers"
    assert not hasattr(handles[0], "__dict__")


def test_ten_thousand_due_timers_all_fire(timers: Timers) -> None:
    count = 0
    done = threading.Event()

    def tick() -> None:
        nonlocal count
        count += 1
        if count == 10_000:
            done.set()

    now = time.time()
    for i in range(10_000):
        timers.call_at(now - 1 + i * 1e-6, tick)

    assert done.wait(WAIT)
    assert len(timers) == 0


# --- lifecycle ---------------------------------------------------------------------


def test_the_thread_starts_on_the_first_timer(timers: Timers) -> None:
    assert timers._thread is None

    timers.call_later(FAR, noop)

    assert timers._thread is not None and timers._thread.is_alive()
    assert timers._thread.daemon
    assert timers._thread.name == "callboard-timers"


def test_stop_drops_pending_timers_and_ends_the_thread() -> None:
    timers = Timers()
    fired: list[str] = []
    gate = hold(timers)
    timers.call_at(time.time() - 1, lambda: fired.append("due"))
    timers.call_later(FAR, lambda: fired.append("far"))

    # The thread is inside the gate: stop cannot end it yet, but marks it stopped.
    assert timers.stop(timeout=0) is False
    gate.release.set()

    assert timers.stop(timeout=WAIT) is True
    assert fired == []
    assert len(timers) == 0
    assert timers._thread is not None and not timers._thread.is_alive()


def test_stop_without_a_timer_started_no_thread() -> None:
    timers = Timers()

    assert timers.stop(timeout=WAIT) is True
    assert timers._thread is None


def test_call_at_after_stop_raises(timers: Timers) -> None:
    timers.call_later(FAR, noop)
    timers.stop(timeout=WAIT)

    with pytest.raises(RuntimeStoppedError):
        timers.call_at(time.time(), noop)
    with pytest.raises(RuntimeStoppedError):
        timers.call_later(1, noop)


def test_a_callback_may_stop_the_timers(timers: Timers) -> None:
    results: list[bool] = []
    done = threading.Event()

    def stop_from_inside() -> None:
        results.append(timers.stop(timeout=WAIT))
        done.set()

    # The far one first: the near one may fire, and stop the timers, at once.
    timers.call_later(FAR, noop)
    timers.call_later(0, stop_from_inside)

    assert done.wait(WAIT)
    assert results == [False]  # it cannot join itself; it ends once the callback returns
    assert timers._thread is not None
    timers._thread.join(WAIT)
    assert not timers._thread.is_alive()


def test_cancel_after_stop_does_not_break_len() -> None:
    timers = Timers()
    handle = timers.call_later(FAR, noop)
    assert timers.stop(timeout=WAIT)

    handle.cancel()

    assert len(timers) == 0


def test_a_nan_deadline_is_refused(timers: Timers) -> None:
    with pytest.raises(ValueError, match="NaN"):
        timers.call_at(float("nan"), noop)


# --- the wall clock jumps ------------------------------------------------------------


def jump_wall_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    system = time.time
    monkeypatch.setattr(_clock, "time", lambda: system() + seconds)


def test_a_forward_jump_of_the_wall_clock_fires_call_at_but_not_call_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    timers = Timers(max_wait=0.01)
    try:
        fired: list[str] = []
        timers.call_later(60, lambda: fired.append("delay"))
        timers.call_at(time.time() + 60, lambda: fired.append("moment"))
        wait_until_the_thread_sleeps(timers)

        jump_wall_clock(monkeypatch, FAR)
        looked = threading.Event()
        timers.call_at(_clock.time() - 1, looked.set)  # fires after whatever the jump made due

        assert looked.wait(WAIT)
        assert fired == ["moment"]
        assert len(timers) == 1
    finally:
        assert timers.stop(timeout=WAIT)


def test_a_backward_jump_of_the_wall_clock_does_not_stretch_call_later(
    timers: Timers, monkeypatch: pytest.MonkeyPatch
) -> None:
    fired = threading.Event()
    handle = timers.call_later(0.05, fired.set)
    jump_wall_clock(monkeypatch, -FAR)

    assert fired.wait(WAIT)  # an hour on, if it counted on the wall clock
    assert handle.steady and not handle.cancelled


def test_next_deadline_gives_a_delay_in_wall_clock_time(timers: Timers) -> None:
    before = time.time()
    timers.call_later(100, noop)
    timers.call_at(before + 200, noop)

    deadline = timers.next_deadline()

    assert deadline is not None and before + 99 < deadline < time.time() + 101


def test_cancelled_delays_are_compacted_with_the_moments(timers: Timers) -> None:
    later = [timers.call_later(FAR, noop) for _ in range(600)]
    at = [timers.call_at(time.time() + FAR, noop) for _ in range(400)]

    for handle in [*later[:550], *at[:350]]:
        handle.cancel()

    assert len(timers) == 100
    assert len(timers._heap) + len(timers._steady) <= 2 * len(timers) + 1


def test_a_nan_delay_is_refused(timers: Timers) -> None:
    with pytest.raises(ValueError, match="NaN"):
        timers.call_later(float("nan"), noop)
