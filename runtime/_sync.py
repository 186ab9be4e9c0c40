"""Thread-safe signals that both threads and asyncio code can wait on.

A step body runs either on a thread (a plain function) or on an event loop (an
``async def``), and the machinery that cancels it or times it out runs on
other threads. The primitives here serve both sides: a blocking ``wait`` for
threads, and an ``await``-able wait that parks a future on the waiting loop and
resolves it on that loop (:func:`runtime._handoff.deliver`), so the
loop never blocks.

- :class:`Latch`: a one-shot flag.
- :class:`AbortSignal`: what a step sees as ``ctx.abort_signal``: a latch with a
  reason and callbacks.
- :class:`Channel`: an unbounded FIFO with one consumer, synchronous or async;
  :class:`EventChannel`, one its producer may close for lagging behind.
- :func:`wait_for_a_run`: a blocking wait for a run, which a thread of a bounded
  pool (a step actor's) reports, so that the pool does not count it meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

from runtime import _probes
from runtime._handoff import deliver

__all__ = [
    "AbortSignal",
    "Channel",
    "ChannelClosed",
    "EventChannel",
    "Latch",
    "ServedCell",
    "on_a_hook_thread",
    "on_run_waits",
    "served",
    "served_run",
    "serving",
    "serving_in_task",
    "wait_for_a_run",
]

T = TypeVar("T")

_this_thread = threading.local()


class ServedCell:
    """The run an async step body serves, for its task and the tasks it makes, until it ends.

    A cell, not the values: tasks copy the context they are made in, and a task
    the body left running (to notify someone once the run ends, say) still held
    the run after the body returned, and its wait for that run was refused as
    one that would wait for ever.
    """

    __slots__ = ("owner", "run_id")

    def __init__(self, run_id: str, owner: object) -> None:
        self.run_id: str | None = run_id
        self.owner: object = owner

    def end(self) -> None:
        """The body has returned: its tasks serve no run any more."""
        self.run_id = None
        self.owner = None


_served_in_task: ContextVar[ServedCell | None] = ContextVar("callboard_served_run", default=None)
"""The run (and the runtime's part that runs it) whose async step body this task runs."""


def serving(run_id: str | None, owner: object = None) -> None:
    """Note the run whose step or hook the calling thread runs now (``None``: none).

    ``owner`` is what runs it (a runtime's step pool, its hook runner): a call
    that would wait for that runtime's runs can tell it is one of them.
    """
    _this_thread.run_id = run_id
    _this_thread.owner = owner


def serving_hook(run_id: str | None, owner: object, *, ended: bool) -> None:
    """:func:`serving` for a hook; ``ended``: one of the run's end (``on_finish``, ``on_error``).

    Apart from :func:`serving`, which every step call makes: a step thread runs no hook.
    """
    serving(run_id, owner)
    _this_thread.ended = ended


def serving_an_end() -> str | None:
    """The run whose end hook (``on_finish``, ``on_error``) the calling thread runs, if any."""
    return getattr(_this_thread, "run_id", None) if getattr(_this_thread, "ended", False) else None


def serving_in_task(run_id: str, owner: object) -> ServedCell:
    """Note, for the calling asyncio task (and tasks it makes), the run whose async step it runs.

    Async steps share their loop's thread, so :func:`serving` cannot tell them apart.

    Returns:
        The cell to :meth:`~ServedCell.end` when the body returns.
    """
    cell = ServedCell(run_id, owner)
    _served_in_task.set(cell)
    return cell


def served() -> tuple[str | None, object]:
    """The run whose step or hook the caller runs and what runs it; ``(None, None)`` if none.

    An async step body's task (see :func:`serving_in_task`) first, then the thread.
    """
    in_task = _served_in_task.get()
    if in_task is not None and in_task.run_id is not None:
        return in_task.run_id, in_task.owner
    return getattr(_this_thread, "run_id", None), getattr(_this_thread, "owner", None)


def served_run() -> str | None:
    """The run whose step or hook the caller runs, as :func:`served` finds it."""
    return served()[0]


def on_run_waits(
    began: Callable[[str], Any], ended: Callable[[Any], None], *, step: bool = True
) -> None:
    """Have the calling thread report its waits for runs: ``began(run_id)``, then ``ended(it)``.

    ``ended`` is given what ``began`` returned: what the wait was counted under.

    A step actor's thread calls it once: a step body that blocks until another
    run ends (``run.start()`` or ``run.wait()`` inside a step) then tells its
    pool, which does not count the thread against its bound meanwhile. A hook
    thread does too, with ``step`` false: a test harness counts only steps'
    waits among the calls it sees under way.
    """
    _this_thread.hooks = (began, ended)
    _this_thread.step = step


def on_a_hook_thread() -> bool:
    """Whether the caller runs on a thread that calls workflows' hooks (:func:`on_run_waits`)."""
    return getattr(_this_thread, "hooks", None) is not None and not getattr(
        _this_thread, "step", True
    )


def wait_for_a_run(
    wait: Callable[[float | None], bool],
    run_id: str,
    timeout: float | None,
    over: Callable[[], bool] = lambda: False,
) -> bool:
    """``wait(timeout)`` for run ``run_id`` to end, reported if the thread asked for it.

    Under a test harness with time skipping, a step's wait for a run does not
    hold the virtual clock back either: the step waits on callboard alone, until
    ``over()`` says what ``wait`` waits for has come.
    """
    hooks: tuple[Callable[[str], Any], Callable[[Any], None]] | None = getattr(
        _this_thread, "hooks", None
    )
    if hooks is None:  # not a step's thread: nothing to report
        return wait(timeout)
    began, ended = hooks
    counted = began(run_id)
    try:
        parked = _probes.parked if getattr(_this_thread, "step", True) else None
        if parked is None:
            return wait(timeout)
        with parked(over):
            return wait(timeout)
    finally:
        ended(counted)


_Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # it may have been cancelled meanwhile
        future.set_result(None)


def _wake(waiters: Iterable[_Waiter]) -> None:
    """Resolve each waiter's future on its own loop; a closed loop has no one left to wake.

    Through :func:`~runtime._handoff.deliver`: waiters of one loop woken together
    (a latch many coroutines await) wake that loop once, not once each.
    """
    for loop, future in waiters:
        deliver(loop, _resolve, future)


class Latch:
    """A thread-safe one-shot flag: once set, it stays set and every waiter wakes.

    Example::

        latch = Latch()
        threading.Thread(target=latch.set).start()
        latch.wait(timeout=10)        # from a thread
        await latch.wait_async()      # from a coroutine, without blocking its loop
    """

    __slots__ = ("_event", "_lock", "_waiters")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._waiters: set[_Waiter] = set()

    def set(self) -> bool:
        """Set the flag and wake every waiter, thread or coroutine.

        Returns:
            ``True`` if this call set it, ``False`` if it was already set.
        """
        with self._lock:
            if self._event.is_set():
                return False
            self._event.set()
            waiters, self._waiters = self._waiters, set()
        _wake(waiters)
        return True

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block the calling thread until the flag is set.

        Args:
            timeout: Seconds to wait at most; ``None`` waits for ever.

        Returns:
            Whether the flag is set (``False`` only on timeout).
        """
        return self._event.wait(timeout)

    async def wait_async(self) -> None:
        """Wait until the flag is set, without blocking the running event loop.

        Cancel the awaiting task (or wait under :func:`asyncio.timeout`) to
        stop waiting.
        """
        if self._event.is_set():
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = (loop, future)
        with self._lock:
            if self._event.is_set():
                return
            self._waiters.add(waiter)
        try:
            await future
        finally:
            with self._lock:
                self._waiters.discard(waiter)


_SIGNALS_LOCK = threading.Lock()
"""Guards every :class:`AbortSignal`'s reason, callbacks and latch. Each holds it for a
few assignments and no call that could hand the GIL over (a lock held across a
hand-over makes every other thread that wants it wait for the GIL too); a lock of its
own per step call was one more object for the garbage collector per step.
"""


class AbortSignal:
    """Tells a step that its run no longer wants its result, and why.

    A step reads it as ``ctx.abort_signal``. A long step checks
    :attr:`aborted` between units of work, waits on it instead of sleeping, or
    registers a callback that interrupts what it is blocked on. The signal is
    aborted once, by the machinery; the first reason is the one that stays.

    Reasons include ``"canceled"`` (the run was cancelled), ``"timeout"``
    (the step outlasted its timeout) and ``"sibling_failed"`` (another branch
    of a parallel block failed).

    Example::

        def execute(ctx):
            for chunk in chunks:
                if ctx.abort_signal.aborted:
                    raise RuntimeError(f"stopped: {ctx.abort_signal.reason}")
                process(chunk)
            # or wait for something, but not past an abort:
            if ctx.abort_signal.wait(timeout=30):
                return None

    Attributes:
        callback_errors: How many callbacks raised; their exceptions are
            swallowed so that one bad callback cannot stop the others.
    """

    __slots__ = ("_callbacks", "_latch", "_reason", "began", "callback_errors", "waited")

    def __init__(self) -> None:
        # Made on the first wait (the latch) or callback (the list): every step call
        # gets a signal, few wait on one or give it a callback, and each object a
        # signal holds is one more for the garbage collector while its step runs.
        self._latch: Latch | None = None
        self._reason: str | None = None
        self._callbacks: list[Callable[[str], None]] | None = None
        self.callback_errors = 0
        # When the code it is for began to run (callboard's monotonic clock; for a call
        # that waited for a step thread, all taken, first set when an actor is handed
        # it), and whether it waited. A step's timeout counts from it. Set by callboard.
        self.began: float | None = None
        self.waited = False

    @property
    def aborted(self) -> bool:
        """Whether the signal has been aborted."""
        return self._reason is not None

    def _waitable(self) -> Latch:
        latch = self._latch
        if latch is not None:
            return latch
        made = Latch()  # before the lock, which no call that may hand the GIL over holds
        with _SIGNALS_LOCK:
            latch = self._latch
            if latch is None:
                latch = self._latch = made
                aborted = self._reason is not None  # abort() saw no latch to set
            else:
                aborted = False  # another thread's, set (or to be set) as it should be
        if aborted:
            latch.set()
        return latch

    @property
    def reason(self) -> str | None:
        """Why the signal was aborted, or ``None`` while it has not been."""
        return self._reason

    def wait(self, timeout: float | None = None) -> bool:
        """Block the calling thread until the signal is aborted.

        Args:
            timeout: Seconds to wait at most; ``None`` waits for ever.

        Returns:
            Whether the signal is aborted (``False`` only on timeout).

        Raises:
            TypeError: if ``timeout`` is not a number (or ``None``).
            ValueError: if ``timeout`` is NaN (a negative one is none left).

        Under a test harness with time skipping, a wait with no ``timeout``
        does not hold the virtual clock back: the step waits only on callboard.
        """
        from runtime._options import check_timeout  # _options imports from here

        timeout = check_timeout(timeout)
        parked = _probes.parked
        if parked is None or timeout is not None:
            return self._waitable().wait(timeout)
        with parked(lambda: self.aborted):
            return self._waitable().wait(timeout)

    async def wait_async(self) -> None:
        """Wait until the signal is aborted, without blocking the running event loop."""
        parked = _probes.parked
        if parked is None:
            await self._waitable().wait_async()
            return
        with parked(lambda: self.aborted):
            await self._waitable().wait_async()

    def add_callback(self, fn: Callable[[str], None]) -> None:
        """Call ``fn(reason)`` once, when the signal is aborted; at once if it already is.

        Callbacks run on the thread that aborts the signal, so they should be
        quick. An exception from one (a ``SystemExit`` too) is swallowed and counted in
        :attr:`callback_errors`.

        Args:
            fn: Called with the abort's reason.
        """
        one = [fn]  # made before the lock; under it, += (no call that may hand the GIL over)
        with _SIGNALS_LOCK:
            if self._reason is None:
                if self._callbacks is None:
                    self._callbacks = one
                else:
                    self._callbacks += one
                return
            reason = self._reason
        self._call(fn, reason)

    def abort(self, reason: str) -> bool:
        """Abort the signal (the machinery's call, not a step's); the first reason wins.

        Args:
            reason: Why, such as ``"canceled"`` or ``"timeout"``.

        Returns:
            ``True`` if this call aborted the signal, ``False`` if it already was.
        """
        with _SIGNALS_LOCK:
            if self._reason is not None:
                return False
            self._reason = reason
            callbacks, self._callbacks = self._callbacks, None
            latch = self._latch
        if latch is not None:
            latch.set()
        for fn in callbacks or ():
            self._call(fn, reason)
        return True

    def _call(self, fn: Callable[[str], None], reason: str) -> None:
        try:
            fn(reason)
        except BaseException as exc:
            # A SystemExit from a user's callback, on the run actor's thread, crashed the
            # run actor: the cancel that aborted it returned False, and the run failed.
            with _SIGNALS_LOCK:
                self.callback_errors += 1
            if isinstance(exc, KeyboardInterrupt):
                raise  # Ctrl-C, on the main thread: not the callback's to swallow

    def __repr__(self) -> str:
        return f"<AbortSignal aborted={self.aborted} reason={self._reason!r}>"


class ChannelClosed(Exception):
    """The channel is closed and every item put into it has been taken."""


class Channel(Generic[T]):
    """An unbounded thread-safe FIFO read by one consumer, from a thread or with asyncio.

    Producers on any thread :meth:`put` items; the consumer takes them in the
    same order with :meth:`get` (blocking) or :meth:`aget` (awaiting). After
    :meth:`close`, the items already put are still delivered, and then the
    consumer gets :class:`ChannelClosed`.

    Example::

        channel: Channel[int] = Channel()
        channel.put(1)
        channel.close()
        channel.get()     # 1
        channel.get()     # raises ChannelClosed
    """

    __slots__ = ("_closed", "_condition", "_items", "_waiters")

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._items: deque[T] = deque()
        self._closed = False
        self._waiters: set[_Waiter] = set()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (items may still be waiting to be taken)."""
        return self._closed

    def put(self, item: T) -> bool:
        """Add an item at the end, unless the channel is closed.

        A put after :meth:`close` drops the item instead of raising, so that a
        producer racing with the consumer's close needs no error handling.

        Args:
            item: The item.

        Returns:
            ``True`` if the item was queued, ``False`` if the channel is closed.
        """
        with self._condition:
            if self._closed:
                return False
            self._items.append(item)
            self._condition.notify()
            waiters, self._waiters = self._waiters, set()
        if waiters:
            _wake(waiters)
        return True

    def put_many(self, items: Iterable[T]) -> bool:
        """Add items at the end at once: the consumer sees all of them queued, or none.

        Returns:
            ``True`` if they were queued, ``False`` if the channel is closed.
        """
        with self._condition:
            if self._closed:
                return False
            self._items.extend(items)
            self._condition.notify()
            waiters, self._waiters = self._waiters, set()
        if waiters:
            _wake(waiters)
        return True

    def close(self) -> None:
        """Close the channel; the consumer still gets the items already put. Idempotent."""
        with self._condition:
            if self._closed:
                return
            self._closed = True
            self._condition.notify_all()
            waiters, self._waiters = self._waiters, set()
        _wake(waiters)

    def get(self, timeout: float | None = None) -> T:
        """Take the next item, blocking the calling thread until there is one.

        Args:
            timeout: Seconds to wait at most; ``None`` waits for ever.

        Returns:
            The oldest item.

        Raises:
            ChannelClosed: The channel is closed and drained.
            TimeoutError: No item came within ``timeout``.
        """
        with self._condition:
            ready = self._condition.wait_for(lambda: self._items or self._closed, timeout)
            if self._items:
                return self._items.popleft()
            if ready:
                raise ChannelClosed("the channel is closed")
            raise TimeoutError(f"no item within {timeout} s")

    async def aget(self) -> T:
        """Take the next item, waiting without blocking the running event loop.

        Returns:
            The oldest item.

        Raises:
            ChannelClosed: The channel is closed and drained.
        """
        loop = asyncio.get_running_loop()
        while True:
            with self._condition:
                if self._items:
                    return self._items.popleft()
                if self._closed:
                    raise ChannelClosed("the channel is closed")
                future: asyncio.Future[None] = loop.create_future()
                waiter = (loop, future)
                self._waiters.add(waiter)
            try:
                await future
            finally:
                with self._condition:
                    self._waiters.discard(waiter)

    def __len__(self) -> int:
        """How many items wait to be taken."""
        return len(self._items)


class EventChannel(Channel[T]):
    """A :class:`Channel` that its producer may close for lagging behind.

    A producer that will not let a slow consumer grow its queue without bound
    sets :attr:`lagged` and closes the channel; the consumer, once it has
    taken what was queued, sees :attr:`lagged` and knows the end is not the
    end of the stream: it subscribes again from the last item it took. A
    producer that goes away before the stream ended sets :attr:`stopped`
    before it closes the channel, so the consumer can tell that end from the
    stream's own.
    """

    __slots__ = ("lagged", "stopped")

    def __init__(self) -> None:
        super().__init__()
        self.lagged = False
        self.stopped = False
