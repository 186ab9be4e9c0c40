"""Timers: one thread per runtime that calls functions at deadlines.

Sleeps, step timeouts and retry back-offs all need "tell this actor at time T".
A thread or a :class:`threading.Timer` per deadline would cost a thread each;
:class:`Timers` keeps every deadline in two heaps served by one daemon thread,
``callboard-timers``, started on first use.

Two kinds of deadline, one heap each:

- :meth:`Timers.call_at` takes a wall-clock moment, in epoch seconds
  (:func:`time.time`): a durable sleep stores the time it wakes at, and that
  time has to mean the same thing in the process that resumes it. If the
  system's clock jumps, such a deadline moves with it.
- :meth:`Timers.call_later` takes a duration, counted on the monotonic clock:
  a step's timeout or a retry's back-off lives only in this process, and must
  last as long as it says whatever the wall clock does (an NTP step of an hour
  forward would otherwise time out every step in flight).

Both clocks are read through :mod:`runtime._clock`, which a test kit can point
at a virtual clock (then :meth:`Timers.wake` makes the thread look at it again
when it jumps). Callbacks run on the timer thread, one at a time, each heap's
in deadline order; they must be quick (they ``tell`` an actor).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
from collections.abc import Callable
from typing import Any, Final

from runtime import _clock
from runtime._errors import RuntimeStoppedError
from runtime._tracing import emit

__all__ = ["MAX_WAIT", "TimerHandle", "Timers"]

FAULT_PAUSE: Final = 0.05
"""How long the timer thread waits after a fault of its own before it looks again."""

MAX_WAIT: Final = 1.0
"""The longest the timer thread sleeps before it reads the wall clock again.

The thread sleeps with :class:`threading.Condition`, which counts monotonic
time; a wall clock that jumps (an NTP step, a suspended machine) would
otherwise make a wall-clock deadline fire late by the size of the jump.
"""

_PENDING: Final = 0
_FIRED: Final = 1
_CANCELLED: Final = 2


class TimerHandle:
    """A scheduled call, returned by :meth:`Timers.call_at`; cancel it with :meth:`cancel`.

    Attributes:
        when: The deadline: epoch seconds for :meth:`Timers.call_at`, seconds on
            the monotonic clock (:func:`runtime._clock.monotonic`) for
            :meth:`Timers.call_later`.
        steady: Whether ``when`` is on the monotonic clock.
    """

    __slots__ = ("_args", "_fn", "_state", "_timers", "steady", "when")

    def __init__(
        self,
        timers: Timers,
        when: float,
        fn: Callable[..., object],
        args: tuple[Any, ...] = (),
        *,
        steady: bool = False,
    ) -> None:
        self._timers = timers
        self.when = when
        self.steady = steady
        self._fn: Callable[..., object] | None = fn
        self._args = args
        self._state = _PENDING

    def cancel(self) -> bool:
        """Cancel the call if it has not happened yet.

        Returns:
            ``True`` if the callback had not fired (and now never will),
            ``False`` if it has already fired or was already cancelled.
        """
        return self._timers._cancel(self)

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` stopped this call."""
        return self._state == _CANCELLED

    def __repr__(self) -> str:
        state = ("pending", "fired", "cancelled")[self._state]
        clock = " monotonic" if self.steady else ""
        return f"<TimerHandle when={self.when!r}{clock} {state}>"


class Timers:
    """Wall-clock and monotonic deadlines served by one daemon thread.

    Args:
        max_wait: The longest the thread sleeps before reading the clock again
            (see :data:`MAX_WAIT`).

    Example::

        timers = Timers()
        handle = timers.call_later(5.0, actor_ref.tell, Wake())
        handle.cancel()       # True: it had not fired
        timers.stop(timeout=5)
    """

    def __init__(self, *, max_wait: float = MAX_WAIT) -> None:
        self._max_wait = max_wait
        # Taken as ``with self._lock``: the lock's own context manager is C, a
        # Condition's __enter__ and __exit__ are two Python calls each time (a push and
        # a fire per sleeping run). Waits and notifies go through the condition.
        self._lock = threading.Lock()
        self._condition = threading.Condition(self._lock)
        # Entries are (when, sequence, handle): the sequence keeps equal
        # deadlines in the order they were scheduled and spares comparing handles.
        self._heap: list[tuple[float, int, TimerHandle]] = []  # wall-clock deadlines
        self._steady: list[tuple[float, int, TimerHandle]] = []  # monotonic deadlines
        self._sequence = itertools.count()
        self._cancelled = 0  # cancelled entries still in either heap (deleted lazily)
        self._stopped = False
        self._thread: threading.Thread | None = None

    def call_at(self, when: float, fn: Callable[..., object], /, *args: Any) -> TimerHandle:
        """Call ``fn(*args)`` on the timer thread at ``when``; a past deadline fires at once.

        Passing ``args`` rather than a closure that captures them saves a function
        and a cell per value, all tracked by the garbage collector while the timer
        waits: a sleeping run holds nothing else but its snapshot.

        Args:
            when: The deadline, in epoch seconds (:func:`time.time`).
            fn: A quick callable; an exception from it is logged as
                ``timer_callback_failed`` and later timers still fire.
            args: What ``fn`` is called with.

        Returns:
            A handle to cancel the call with.

        Raises:
            RuntimeStoppedError: The timers were stopped.
            ValueError: ``when`` is NaN.
        """
        if math.isnan(when):
            raise ValueError("a timer deadline cannot be NaN")
        return self._push(TimerHandle(self, when, fn, args), self._heap)

    def call_later(self, delay: float, fn: Callable[..., object], /, *args: Any) -> TimerHandle:
        """Call ``fn(*args)`` on the timer thread once ``delay`` seconds have passed.

        The delay is counted on the monotonic clock: a jump of the system's
        wall clock neither shortens nor stretches it.

        Args:
            delay: Seconds from now; zero or less fires at once.
            fn: As for :meth:`call_at`.
            args: As for :meth:`call_at`.

        Returns:
            A handle to cancel the call with.

        Raises:
            RuntimeStoppedError: The timers were stopped.
            ValueError: ``delay`` is NaN.
        """
        if math.isnan(delay):
            raise ValueError("a timer delay cannot be NaN")
        handle = TimerHandle(self, _clock.monotonic() + delay, fn, args, steady=True)
        return self._push(handle, self._steady)

    def _push(self, handle: TimerHandle, heap: list[tuple[float, int, TimerHandle]]) -> TimerHandle:
        with self._lock:
            if self._stopped:
                raise RuntimeStoppedError("the runtime's timers are stopped")
            if self._thread is None:
                # Kept once started only: a thread the process refused (a limit of threads
                # or memory) fails this timer's caller, and the next timer tries again.
                thread = threading.Thread(target=self._run, name="callboard-timers", daemon=True)
                thread.start()
                self._thread = thread
            entry = (handle.when, next(self._sequence), handle)
            heapq.heappush(heap, entry)
            # Only a new earliest deadline changes how long the thread should sleep.
            if heap[0] is entry:
                self._condition.notify()
        return handle

    def next_deadline(self) -> float | None:
        """The earliest deadline of a timer neither cancelled nor fired, or ``None``.

        In epoch seconds: a monotonic deadline is given as the wall-clock
        moment it falls on if the clocks keep their pace.
        """
        with self._lock:
            pending = [when for when, _, handle in self._heap if handle._state == _PENDING]
            steady = [when for when, _, handle in self._steady if handle._state == _PENDING]
        if steady:
            soonest = min(steady)
            wall, monotonic = _clock.time, _clock.monotonic
            # Under a test kit both clocks are its virtual one: no conversion, no rounding.
            pending.append(soonest if monotonic is wall else soonest - monotonic() + wall())
        return min(pending, default=None)

    def wake(self) -> None:
        """Make the thread read the clock again now (a virtual clock has jumped)."""
        with self._lock:
            self._condition.notify()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the thread; pending callbacks never run. Idempotent.

        A callback that is running when ``stop`` is called finishes; no other
        one starts.

        Args:
            timeout: How long to wait for the thread to end; ``None`` waits
                as long as it takes.

        Returns:
            Whether the thread has ended (``True`` if it never started).
        """
        with self._lock:
            self._stopped = True
            for _, _, handle in (*self._heap, *self._steady):
                handle._fn, handle._args = None, ()
            self._heap.clear()
            self._steady.clear()
            self._cancelled = 0
            self._condition.notify()
            thread = self._thread
        if thread is None:
            return True
        if thread is not threading.current_thread():
            thread.join(timeout)
        return not thread.is_alive()

    def __len__(self) -> int:
        """The number of timers that are neither cancelled nor fired."""
        with self._lock:
            return len(self._heap) + len(self._steady) - self._cancelled

    def _cancel(self, handle: TimerHandle) -> bool:
        with self._lock:
            if handle._state != _PENDING:
                return False
            handle._state = _CANCELLED
            # The callback and its arguments are freed now, not when the deadline comes.
            handle._fn, handle._args = None, ()
            if self._stopped:  # the heap is already empty
                return True
            self._cancelled += 1
            if self._cancelled * 2 > len(self._heap) + len(self._steady):
                self._heap = _compacted(self._heap)
                self._steady = _compacted(self._steady)
                self._cancelled = 0
        return True

    def _next_due_or_pause(self) -> tuple[Callable[..., object], tuple[Any, ...]] | None:
        """:meth:`_next_due`, through a fault of its own (an allocation that failed).

        The thread must outlive it: every sleeping run, deadline and retry waits on
        it. A fault is said, and the heaps are looked at again a moment later.
        """
        while True:
            try:
                return self._next_due()
            except Exception:
                emit(logging.ERROR, "timers_wait_failed", exc_info=True)
                with self._lock:
                    if self._stopped:
                        return None
                    self._condition.wait(FAULT_PAUSE)

    def _next_due(self) -> tuple[Callable[..., object], tuple[Any, ...]] | None:
        """Wait for the earliest deadline; its callback and arguments, or ``None`` once stopped."""
        with self._lock:
            while not self._stopped:
                # Read each time: compaction replaces the lists.
                wall, steady = self._heap, self._steady
                # A cancelled entry on top of either heap is dropped (in place, not by a
                # call: the loop runs at every fire).
                if wall and wall[0][2]._state == _CANCELLED:
                    heapq.heappop(wall)
                    self._cancelled -= 1
                    continue
                if steady and steady[0][2]._state == _CANCELLED:
                    heapq.heappop(steady)
                    self._cancelled -= 1
                    continue
                if not wall and not steady:
                    self._condition.wait()
                    continue
                delay: float | None = None
                for heap, now in ((wall, _clock.time), (steady, _clock.monotonic)):
                    if not heap:
                        continue
                    left = heap[0][0] - now()
                    if left <= 0:
                        handle = heapq.heappop(heap)[2]
                        handle._state = _FIRED
                        fn, args = handle._fn, handle._args
                        handle._fn, handle._args = None, ()
                        assert fn is not None  # a pending handle has its callback
                        return fn, args
                    delay = left if delay is None else min(delay, left)
                assert delay is not None
                self._condition.wait(min(delay, self._max_wait))
        return None

    def _run(self) -> None:
        while (due := self._next_due_or_pause()) is not None:
            # The lock is not held here, so a callback may schedule or cancel timers.
            try:
                due[0](*due[1])
            except BaseException:
                emit(logging.ERROR, "timer_callback_failed", exc_info=True)
            due = None  # nothing of a fired timer is kept while the thread waits for the next


def _compacted(heap: list[tuple[float, int, TimerHandle]]) -> list[tuple[float, int, TimerHandle]]:
    """The entries of ``heap`` still pending, as a heap."""
    kept = [entry for entry in heap if entry[2]._state == _PENDING]
    heapq.heapify(kept)
    return kept
