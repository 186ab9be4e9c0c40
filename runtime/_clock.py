"""The clocks every timer of callboard reads: the system's, or a test's virtual one.

Sleeps, ``sleep_until``, retry back-offs, step timeouts, schedules, queues'
rate windows and the leases of a shared store's workers (their heartbeats and
the reaper's judgement; PostgreSQL is told the time in each session) read the
time through :func:`time`, a module attribute that is
:func:`time.time` itself unless a test kit (:mod:`runtime.testing`) installs
a virtual clock. The times a run records (created, updated, a step's start
and end) and retention's age read it too, so that a run's record agrees with
its timers. A reading costs what ``time.time()`` costs: one attribute
lookup on a module and a call of the same builtin. Whoever waits for a
deadline (the timer thread) registers a wake-up with :func:`on_advance`, so
that a virtual clock that jumps forward is noticed at once rather than at the
next poll.

Durations that live only in this process (a step's timeout, a retry's back-off,
a queue's rate window) are counted on :func:`monotonic` instead: the system's
wall clock can jump (an NTP step, a virtual machine resumed on another host,
``date -s``), and a jump of an hour would otherwise fail every step in flight
that has a timeout, or stretch a back-off by the hour. What is stored (a
sleep's wake time, a schedule's next fire) keeps wall-clock time, since it
has to mean the same moment in another process. With a virtual clock
installed, :func:`monotonic` reads it too.

Leases need more than a reading. A live worker renews its lease every few
seconds; a virtual clock that jumps a month forward would make every worker
look dead to the others' reapers. So a jump happens inside :func:`jumping`:
it moves the clock and renews the lease of every live worker in the process
(registered with :func:`on_jump`) while reapers wait (a reaper judges inside
:func:`judging_leases`). A worker that no longer renews (a stalled or killed
one) is found dead as soon as the clock passes its lease. Outside a test kit
:func:`judging_leases` is a shared no-op context.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time as _time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

__all__ = [
    "install",
    "judging_leases",
    "jumping",
    "live_workers",
    "monotonic",
    "notify_advanced",
    "on_advance",
    "on_jump",
    "time",
    "uninstall",
]

time: Callable[[], float] = _time.time
"""Epoch seconds now: :func:`time.time`, or the virtual clock's reading while one is installed."""

monotonic: Callable[[], float] = _time.monotonic
"""Seconds on a clock that never jumps: :func:`time.monotonic`, or the virtual clock's reading
while one is installed (a test kit's clock moves only forward, when the test moves it)."""

_wakers: list[Callable[[], None]] = []
_renewers: list[tuple[Callable[[], None], str | None]] = []
_renewers_lock = threading.Lock()


def _after_fork() -> None:
    # In a forked child the parent's stores renew nothing (their runtimes are stopped
    # here), and a lock another thread held at the fork would stay held for ever.
    global _renewers_lock  # noqa: PLW0603
    _renewers_lock = threading.Lock()
    _renewers.clear()


os.register_at_fork(after_in_child=_after_fork)

_NO_LOCK: AbstractContextManager[object] = contextlib.nullcontext()
judging_leases: AbstractContextManager[object] = _NO_LOCK
"""Held by a reaper while it judges which workers' leases ran out: a no-op on the system's
clock, a lock shared with :func:`jumping` while a virtual clock is installed."""


def install(reading: Callable[[], float]) -> None:
    """Make :func:`time` and :func:`monotonic` read ``reading`` (a virtual clock).

    Until :func:`uninstall`.
    """
    global time, monotonic, judging_leases  # noqa: PLW0603 - the module attributes are the seam
    judging_leases = threading.RLock()
    # Both read the virtual clock itself, so that a deadline counted as now + delay on
    # either is the very float a jump of delay reaches (a reading shifted by an offset
    # would round differently, and a skip to the deadline could stop a hair short of it).
    time = reading
    monotonic = reading


def uninstall() -> None:
    """Read the system's clock again, and forget every wake-up."""
    global time, monotonic, judging_leases  # noqa: PLW0603
    time = _time.time
    monotonic = _time.monotonic
    judging_leases = _NO_LOCK
    _wakers.clear()


@contextlib.contextmanager
def jumping() -> Iterator[None]:
    """Move a virtual clock inside this: reapers wait, and live workers renew their leases.

    The block moves the clock; on leaving, every renewer registered with
    :func:`on_jump` is called, still before any reaper can judge by the new
    time; then the wake-ups registered with :func:`on_advance` are called.
    """
    with judging_leases:
        yield
        with _renewers_lock:
            renewers = [renew for renew, _ in _renewers]
        for renew in renewers:
            renew()
    notify_advanced()


def on_jump(renew: Callable[[], None], worker: str | None = None) -> Callable[[], None]:
    """Call ``renew`` inside every jump of a virtual clock; returns a function that forgets it.

    ``renew`` runs on the thread that moves the clock and must not raise.
    ``worker`` names the lease it renews: until forgotten, that worker is one
    of :func:`live_workers`.
    """
    entry = (renew, worker)
    with _renewers_lock:
        _renewers.append(entry)

    def forget() -> None:
        with _renewers_lock:
            if entry in _renewers:
                _renewers.remove(entry)

    return forget


def live_workers() -> frozenset[str]:
    """The workers whose leases every jump renews: those a virtual clock never finds dead.

    A time skipper jumps to the moment another worker's lease runs out (one
    that stopped renewing, and holds runs), never to a live one's, which each
    jump would only push on.
    """
    with _renewers_lock:
        return frozenset(worker for _, worker in _renewers if worker is not None)


def on_advance(waker: Callable[[], None]) -> Callable[[], None]:
    """Call ``waker`` whenever a virtual clock jumps; returns a function that forgets it."""
    _wakers.append(waker)

    def forget() -> None:
        if waker in _wakers:
            _wakers.remove(waker)

    return forget


def notify_advanced() -> None:
    """A virtual clock jumped: wake whoever waits for a deadline."""
    for waker in list(_wakers):
        waker()
