"""Handing work from threads to an event loop, and back, with few wake-ups of the loop.

An event loop's thread shares the GIL with every other thread of the process.
Each time it wakes (a callback from another thread writes to its self-pipe),
it gives up the GIL to poll and to read the pipe, and takes it back again:
behind whichever runtime threads want it, up to a switch interval (5 ms) each.
``loop.call_soon_threadsafe`` per result, as ``loop.run_in_executor`` does, so
costs the loop a wake-up per result, and ``concurrent.futures`` adds a future,
a condition and a chain of callbacks per call on the loop's thread.

- :func:`deliver`: call a function on a loop from any thread. Deliveries to a
  loop that has not yet run the ones before wait in its :class:`_Inbox` and run
  in the same callback: a burst of results wakes the loop once.
- :class:`CallPool`: a few threads that run blocking calls for coroutines
  (:meth:`CallPool.submit` returns an ``asyncio.Future``) and deliver their
  results through the inbox; one at a time while the calls keep ending, so that
  the loop's thread waits behind as few of them as it can when it wakes.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

__all__ = ["STALL", "CallPool", "deliver"]

T = TypeVar("T")
A = TypeVar("A")

_Item = tuple[Callable[[Any], object], Any]


class _Inbox:
    """What other threads hand one loop, run in one callback per wake-up of the loop."""

    __slots__ = ("__weakref__", "_items", "_lock", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the inbox is the value of a dictionary keyed weakly by the loop.
        self._loop = weakref.ref(loop)
        self._lock = threading.Lock()
        self._items: list[_Item] = []
        self._scheduled = False

    def put(self, fn: Callable[[A], object], arg: A) -> bool:
        """Have the loop call ``fn(arg)``; ``False`` if the loop is closed or gone."""
        loop = self._loop()
        with self._lock:
            if self._scheduled and (loop is None or loop.is_closed()):
                # The loop closed before the drain on its way ran: none will run now.
                self._items.clear()
                self._scheduled = False
                return False
            self._items.append((fn, arg))
            if self._scheduled:  # a drain is on its way: it takes this item too
                return True
            self._scheduled = True
        try:
            if loop is None:
                raise RuntimeError("the loop is gone")
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # a closed loop: no one is left to call
            with self._lock:
                self._items.clear()
                self._scheduled = False
            return False
        return True

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            self._scheduled = False
        for fn, arg in items:
            try:
                fn(arg)
            except Exception as exc:  # one bad callback must not starve the others
                loop = self._loop()
                if loop is not None:
                    loop.call_exception_handler(
                        {"message": "callboard: a delivered callback raised", "exception": exc}
                    )


_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Inbox] = weakref.WeakKeyDictionary()
_inboxes_lock = threading.Lock()


def _after_fork() -> None:
    # A lock another thread held at the fork would stay held for ever in the child.
    global _inboxes_lock  # noqa: PLW0603
    _inboxes_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def _inbox(loop: asyncio.AbstractEventLoop) -> _Inbox:
    inbox = _inboxes.get(loop)
    if inbox is None:
        with _inboxes_lock:
            inbox = _inboxes.get(loop)
            if inbox is None:
                _let_go_of_closed_loops()
                inbox = _inboxes[loop] = _Inbox(loop)
    return inbox


def _let_go_of_closed_loops() -> None:
    """Drop the inboxes of loops that closed with a delivery not yet run.

    What such an inbox holds (futures of the loop) keeps its loop, the key that
    would free it, alive: a program that calls ``asyncio.run()`` again and again
    kept every loop that ended with a call in flight. Done as a new loop's inbox
    is made, so that the closed ones are at most as many as the loops in use.
    """
    for loop in [loop for loop in list(_inboxes) if loop.is_closed()]:
        inbox = _inboxes.pop(loop, None)
        if inbox is not None:
            with inbox._lock:
                inbox._items.clear()


def deliver(loop: asyncio.AbstractEventLoop, fn: Callable[[A], object], arg: A) -> bool:
    """Call ``fn(arg)`` on ``loop``'s thread soon; safe from any thread.

    Deliveries made before the loop gets round to the first run together, in
    order, in one callback: the loop wakes once for a burst.

    Returns:
        ``False`` if the loop is closed, and ``fn`` will not be called.
    """
    return _inbox(loop).put(fn, arg)


class _Job(Generic[T]):
    __slots__ = ("fn", "future", "inbox")

    def __init__(self, fn: Callable[[], T], future: asyncio.Future[T], inbox: _Inbox) -> None:
        self.fn = fn
        self.future = future
        self.inbox = inbox


def _settle(outcome: tuple[asyncio.Future[Any], bool, Any]) -> None:
    future, ok, value = outcome
    if future.done():  # the awaiting task was cancelled meanwhile
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _run_on_the_default_executor(job: _Job[Any]) -> None:
    """On the job's loop: run a call the closed pool did not take, on the loop's executor.

    As a call made after the stop would run (see ``RunHost.call``): its caller gets
    its result, or its error, never a cancellation nobody asked for.
    """
    future = job.future
    if future.done():  # its task was cancelled meanwhile
        return
    try:
        elsewhere = future.get_loop().run_in_executor(None, job.fn)
    except RuntimeError as exc:  # the loop's executor is shut down: its loop is ending
        future.set_exception(exc)
        return

    def settle(done: asyncio.Future[Any]) -> None:
        if future.done():
            # Its caller was cancelled meanwhile: the error is read all the same, or
            # asyncio logs it as never retrieved (a stop's RuntimeStoppedError, say).
            if not done.cancelled():
                done.exception()
            return
        if done.cancelled():
            future.cancel()
        elif (error := done.exception()) is not None:
            future.set_exception(error)
        else:
            future.set_result(done.result())

    elsewhere.add_done_callback(settle)


STALL: Final = 0.02
"""Seconds a call on a :class:`CallPool` runs before the next call may go to another thread.

Calls that end sooner (the usual Python work: validation, a store's read or
commit) run one after the other on one thread: more threads would not make them
faster (they take turns at the GIL), and each one more that wants the GIL is
one more that the event loop's thread waits behind whenever it wakes, and more
objects in flight for the collector to promote (more full collections). A call
that runs longer (one that blocks: a lock another process holds) holds no other
call up: once it has run this long, another thread takes the queued calls, up
to the pool's bound (``benchmarks/README.md``, issue 12).
"""


class CallPool:
    """At most ``max_threads`` threads that run blocking calls for coroutines.

    Calls queue, in order, and one thread takes the next as the one before
    ends. A call that runs longer than :data:`STALL` seconds (one that blocks)
    no longer counts: another thread takes the next call, up to the bound.
    Threads start as they are needed and stay until :meth:`close`. A result
    goes back to the awaiting loop through :func:`deliver`, so results that
    end close together wake the loop once.

    Args:
        max_threads: The most threads.
        name: Prefix of the threads' names.
    """

    def __init__(self, max_threads: int, name: str) -> None:
        self._max_threads = max_threads
        self._name = name
        self._ready = threading.Condition(threading.Lock())
        self._jobs: deque[_Job[Any]] = deque()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a call they may take
        self._watching = 0  # of them, those waiting for the calls running to stall
        # When each call running began (time.monotonic()), by the thread making it.
        self._began: dict[int, float] = {}
        self._closed = False

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn()`` on a pool thread; call from a coroutine, and await the future.

        Raises:
            RuntimeError: if the pool is closed, or has no thread and could not
                start one: the call is not made.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(fn, future, _inbox(loop))
        with self._ready:
            if self._closed:
                raise RuntimeError("the call pool is closed")
            self._jobs.append(job)
            if self._began and self._watching:
                return future  # a thread takes it when the one running ends, or stalls
            if self._idle:
                # One thread: it takes the call, or watches the one running for a stall.
                self._ready.notify()
                return future
            if len(self._threads) >= self._max_threads:
                return future  # a busy thread takes it next
            thread = threading.Thread(
                target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had (the process's limit of threads or memory)
            with self._ready:
                self._threads.remove(thread)
                if self._threads:
                    return future  # a thread of the pool takes it in its turn
                # None will: its caller makes it elsewhere, and this one is never made
                # (left queued, a thread started later made it a second time).
                self._jobs.remove(job)
            raise
        return future

    def threads(self) -> int:
        """How many threads the pool has started."""
        return len(self._threads)

    def _next(self) -> _Job[Any] | None:
        """The next call this thread may make, waiting for it; ``None`` once the pool closed."""
        with self._ready:
            while True:
                timeout: float | None = None
                if self._jobs:
                    now = time.monotonic()
                    # The calls running that may still end soon: those younger than a stall.
                    fresh = [began for began in self._began.values() if now - began < STALL]
                    if not fresh:
                        self._began[threading.get_ident()] = now
                        if len(self._jobs) > 1 and self._idle > self._watching:
                            self._ready.notify()  # one of them watches the call now running
                        return self._jobs.popleft()
                    if not self._watching:  # one thread watches for a stall; the others sleep
                        timeout = min(fresh) + STALL - now
                elif self._closed:
                    return None
                watching = int(timeout is not None)
                self._idle += 1
                self._watching += watching
                try:
                    self._ready.wait(timeout)
                finally:
                    self._idle -= 1
                    self._watching -= watching

    def _work(self) -> None:
        while (job := self._next()) is not None:
            try:
                if job.future.cancelled():  # as an executor's queued call, cancelled with its task
                    continue
                try:
                    outcome = (job.future, True, job.fn())
                except StopIteration as exc:
                    # A future refuses it (TypeError, in the loop's callback): the caller
                    # waited for ever. Told as asyncio tells it from a coroutine.
                    error = RuntimeError(f"the call raised StopIteration: {exc!r}")
                    error.__cause__ = exc
                    outcome = (job.future, False, error)
                except BaseException as exc:  # handed to the awaiting task, as an executor does
                    outcome = (job.future, False, exc)
                job.inbox.put(_settle, outcome)
                del outcome
            finally:
                with self._ready:
                    del self._began[threading.get_ident()]
                del job

    def close(self, timeout: float | None = None) -> None:
        """Hand the calls still queued to their loops' executors, let the running ones end.

        Idempotent. Waits for the calls running, for at most ``timeout``
        seconds in all (``None``: as long as they take); a call still running
        then ends on its own daemon thread.
        """
        with self._ready:
            self._closed = True
            queued = list(self._jobs)
            self._jobs.clear()
            self._ready.notify_all()
            threads = list(self._threads)
        for job in queued:
            job.inbox.put(_run_on_the_default_executor, job)
        current = threading.current_thread()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            if thread is not current:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
