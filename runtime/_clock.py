"""The clock every timer of callboard reads: the system's, or a test's virtual one.

Sleeps, ``sleep_until``, retry back-offs and step timeouts read the time
through :func:`time`, a module attribute that is :func:`time.time` itself
unless a test kit (:mod:`runtime.testing`) installs a virtual clock. A
reading costs what ``time.time()`` costs: one attribute lookup on a module
and a call of the same builtin. Whoever waits for a deadline (the timer
thread) registers a wake-up with :func:`on_advance`, so that a virtual clock
that jumps forward is noticed at once rather than at the next poll.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable

__all__ = ["install", "notify_advanced", "on_advance", "time", "uninstall"]

time: Callable[[], float] = _time.time
"""Epoch seconds now: :func:`time.time`, or the virtual clock's reading while one is installed."""

_wakers: list[Callable[[], None]] = []


def install(reading: Callable[[], float]) -> None:
    """Make :func:`time` read ``reading`` (a virtual clock) until :func:`uninstall`."""
    global time  # noqa: PLW0603 - the module attribute is the seam
    time = reading


def uninstall() -> None:
    """Read the system's clock again, and forget every wake-up."""
    global time  # noqa: PLW0603
    time = _time.time
    _wakers.clear()


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
