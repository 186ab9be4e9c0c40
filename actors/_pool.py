"""The step pool and the async loop: where step actors and ``async def`` bodies run.

Step bodies may block (a sync body that sleeps holds its thread), so each
step actor is a threading actor. They live in a :class:`StepPool` that reuses
idle actors and grows only when calls wait for one because the actors are
blocked: a burst of short steps is served by a few threads, while blocked
steps get a thread each up to the pool's limit (the runtime's ``max_step_threads``). Past
the limit, calls wait in the pool's backlog, first in first out, for an actor
to free up: never a thread more, and never a call dropped before the pool
stops. An actor whose step blocks until another run ends (``run.start()`` or
``run.wait()`` in a step body) does not count against the limit while it
waits: otherwise steps that wait for runs, once they held every thread, would
wait for ever for the steps of those runs. ``async def`` bodies
run on one shared event loop thread (:class:`AsyncLoop`) and hold no step
actor while they wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import pykka

from actors.messages import StepActorMessage
from actors.step import StepActor
from runtime import _clock
from runtime._errors import RuntimeStoppedError
from runtime._handoff import deliver
from runtime._sync import served_run
from runtime._tracing import FailingStreak, emit

if TYPE_CHECKING:
    from actors._here import RunsHere
    from actors.claimer import LeaseGuard

__all__ = [
    "BUSY",
    "DOUBTED",
    "HELD",
    "LATE",
    "PROMPT",
    "STOP_TIMEOUT",
    "SWEPT_PAST",
    "TICK",
    "VOIDED",
    "AsyncLoop",
    "BodyFuture",
    "StepPool",
]

TICK: Final = 0.02
"""How long a call waits for a step actor before the pool may grow.

Longer than CPython's GIL switch interval (5 ms), so that a call that waits
only for a busy thread to let go of the GIL does not start a thread."""

BUSY: Final = 0.5
"""Share of one CPU the process may use in a tick for the pool to grow while calls wait.

Calls wait for an actor either because the actors are blocked (sleeping, in
I/O), and more actors help, or because the process is busy and they wait for
the GIL, and more threads only add hand-offs. A process using less CPU than
this is not busy. Actors that finish no call in a whole tick are blocked
however busy the process is."""

LATE: Final = 0.005
"""How late the monitor may wake from a tick for the process's CPU use to count.

A monitor thread that wakes later than this waited for a CPU: the host is
busy, so the process's low CPU use shows a starved process, not blocked
actors."""


HELD: Final = TICK
"""How late past a tick the monitor may wake for the tick to say anything at all.

Later than this, something held the GIL for most of the tick and past it: a
full collection of Python's garbage collector over many runs in flight (40 to
80 ms in ``make bench``'s W5), or a long call into C. No step could finish
meanwhile either, so a tick without a finished call would read as blocked
actors, and the pool grew to its limit for steps that take microseconds. Such
a tick is watched again, at most :data:`VOIDED` times in a row: a host that
starves the process for ever still lets the pool grow for blocked steps."""

VOIDED: Final = 2
"""How many ticks in a row the monitor may set aside for :data:`HELD`."""

DOUBTED: Final = 0.25
"""How soon after a stalled tick another one is believed at once (seconds).

A tick in which no call ended says that the actors are blocked, or that they
could not run: on a loaded host a woken step thread waits for a CPU while
the threads already on one (the caller starting runs, the dispatcher) take
the GIL back, or the host gives the whole process a third of a CPU. Such
misreads come alone, seconds apart, and in W2 under load about one process
in five had one: the pool grew from 4 actors to its limit of 64 for steps of
microseconds, and every later call woke a sleeping thread (10 context
switches a run instead of 1, up to 35% more CPU). So a stalled tick grows the
pool only if another came within this long before it (actors that are
blocked still are a tick later; while calls keep stalling, as in a burst of
blocking steps whose actors the monitor takes a while to start, each stalled
tick grows the pool at once), or if the process rested through it (:data:`BUSY`)
and the monitor woke at once (:data:`PROMPT`): nothing else wanted the CPU,
so the actors are blocked.
"""

SWEPT_PAST: Final = 64
"""The fewest calls let go of by their runs that the backlog is rid of at once.

A call waits in the backlog while every step thread is taken. Its run may let
go of it meanwhile (cancelled, failed elsewhere, past its ``run_timeout``); an
actor handed it later skips it, but until then it keeps its input, its reply
address and its signal. Where every thread is held by bodies that never
return (sync bodies a timeout abandoned, blocked on a socket for ever), that
was for ever: a daemon that cancelled its runs grew by each of them. Runs tell
the pool what they let go of (:meth:`StepPool.let_go`); once the calls let go
of are this many, and half the backlog, they are taken out: one pass over the
backlog for at least as many calls as it keeps, and never more calls kept for
nothing than this many, or than the live ones."""

PROMPT: Final = 0.001
"""How late the monitor may wake from a stalled tick for a resting process to say blocked actors.

Stricter than :data:`LATE`: a host that gives the process a third of a CPU
had the monitor wake 4 ms late from a tick in which no step could run."""


def _tick_verdict(finished: bool, late: float, cpu: float, wall: float) -> str | None:
    """What a tick in which a call waited says: ``"stalled"``, ``"idle"``, or ``None``.

    Args:
        finished: Whether any call ended in the tick.
        late: How long after the tick's deadline the monitor woke.
        cpu: The CPU seconds the process used in the tick.
        wall: The tick's length, as the monitor measured it.

    ``"stalled"``: no call ended, so the actors are blocked (every waiting call
    gets an actor). ``"idle"``: calls ended but the process used less than
    :data:`BUSY` of a CPU and was not starved (:data:`LATE`), so the actors
    wait on something else (the pool may double). ``None``: the calls wait for
    the CPU or the GIL, which more threads would not give them.
    """
    if not finished:
        return "stalled"
    # A monitor that wakes late shares a starved CPU: then low CPU use says nothing
    # about the actors, which may be as starved.
    if late < LATE and cpu < BUSY * wall:
        return "idle"
    return None


def _stall_believed(since: float, late: float, cpu: float, wall: float) -> bool:
    """Whether a ``"stalled"`` tick says that the actors are blocked (see :data:`DOUBTED`).

    Args:
        since: How long before this tick the monitor saw the last stalled one.
        late: How long after the tick's deadline the monitor woke.
        cpu: The CPU seconds the process used in the tick.
        wall: The tick's length, as the monitor measured it.
    """
    return since <= DOUBTED or (late < PROMPT and cpu < BUSY * wall)


STOP_TIMEOUT: Final = 5.0
"""Seconds to wait for one idle step actor to stop."""

_AppBody = tuple[Any, Any, Callable[[], None] | None]
"""A body on the application's loop: its coroutine, the step's own, and its ``on_end``."""

APP_LOOP_POLL: Final = 0.25
"""Seconds between looks at whether the application's loop closed, while steps run on it.

asyncio tells nobody that a loop closed: a step handed to it and not yet run,
or whose task it had not run to the end, would never end (see :class:`AsyncLoop`).
"""


class BodyFuture:
    """What :meth:`AsyncLoop.submit` returns: an ``async def`` body's outcome, from any thread.

    The part of :class:`concurrent.futures.Future` that callboard uses (``result``,
    ``cancel``, ``cancelled``, ``done``, ``add_done_callback``; ``set_result`` and
    ``set_exception`` for the loop), in three tracked objects where
    ``concurrent.futures`` takes a dozen (a condition, its locks and their
    bound methods): one is alive for every async step in progress, and every
    garbage collection walks them. Cancelling is possible until the outcome is
    set. A callback that raises is logged and changes nothing.
    """

    __slots__ = ("__weakref__", "_callbacks", "_lock", "_outcome", "_settled", "_state")

    _PENDING: Final = 0
    _RESULT: Final = 1
    _EXCEPTION: Final = 2
    _CANCELLED: Final = 3

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = self._PENDING
        self._outcome: Any = None
        self._callbacks: list[Callable[[BodyFuture], object]] | None = None
        self._settled: threading.Event | None = None  # made by the first blocking result()

    def done(self) -> bool:
        """Whether the outcome is set or the future cancelled."""
        return self._state != self._PENDING

    def cancelled(self) -> bool:
        """Whether the future was cancelled."""
        return self._state == self._CANCELLED

    def cancel(self) -> bool:
        """Cancel the future unless its outcome is set; ``True`` if it is cancelled."""
        return self._settle(self._CANCELLED, None) or self._state == self._CANCELLED

    def set_result(self, value: Any) -> None:
        """Set the body's value (the loop's call).

        Raises:
            concurrent.futures.InvalidStateError: if it is done already.
        """
        if not self._settle(self._RESULT, value):
            raise concurrent.futures.InvalidStateError("the future is done")

    def set_exception(self, exc: BaseException) -> None:
        """Set the exception the body raised (the loop's call).

        Raises:
            concurrent.futures.InvalidStateError: if it is done already.
        """
        if not self._settle(self._EXCEPTION, exc):
            raise concurrent.futures.InvalidStateError("the future is done")

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the outcome: the value, or the exception raised.

        Raises:
            concurrent.futures.CancelledError: if the future was cancelled.
            TimeoutError: if ``timeout`` seconds passed first.
        """
        if self._state == self._PENDING:
            with self._lock:
                if self._settled is None:
                    self._settled = threading.Event()
                settled = self._settled
            if self._state == self._PENDING and not settled.wait(timeout):
                raise TimeoutError("the async body has not finished")
        if self._state == self._CANCELLED:
            raise concurrent.futures.CancelledError()
        if self._state == self._EXCEPTION:
            try:
                raise self._outcome
            finally:
                del self  # the traceback holds this frame: it must not hold the exception
        return self._outcome

    def add_done_callback(self, fn: Callable[[BodyFuture], object]) -> None:
        """Call ``fn(future)`` once done: at once if it is, else on the thread that ends it."""
        with self._lock:
            if self._state == self._PENDING:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        self._call(fn)

    def _settle(self, state: int, outcome: Any) -> bool:
        with self._lock:
            if self._state != self._PENDING:
                return False
            self._state, self._outcome = state, outcome
            callbacks, self._callbacks = self._callbacks, None
            settled = self._settled
        if settled is not None:
            settled.set()
        for fn in callbacks or ():
            self._call(fn)
        return True

    def _call(self, fn: Callable[[BodyFuture], object]) -> None:
        try:
            fn(self)
        except Exception:
            emit(logging.ERROR, "async_step_callback_failed", exc_info=True)


class AsyncLoop:
    """Where ``async def`` steps run: one event loop on its own thread, or the application's.

    Without ``loop``, a private loop thread is started on first use and ended
    by :meth:`stop`. With ``loop`` (the application's, already running
    elsewhere), bodies run on it as tasks; :meth:`stop` cancels the tasks it
    started there, and leaves the loop itself alone.

    The application may close its loop without stopping the runtime first
    (``asyncio.run()`` returning before ``await rt.astop()``): a body handed to
    it that it never ran, or whose task it never ran to the end (one made
    during ``asyncio.run()``'s own shutdown, after its cancel), would leave its
    run ``running`` for ever in a runtime that goes on. While bodies are on the
    application's loop, a thread (``callboard-app-loop``) looks every
    :data:`APP_LOOP_POLL` seconds whether the loop has closed, and fails them
    if so: no other loop can run them, since they were put on this one for the
    objects bound to it.

    Args:
        loop: The application's event loop, or ``None`` for a private one.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        # Reentrant: a body done before its callback is added calls _forget at once.
        self._lock = threading.RLock()
        self._app_loop = loop
        self._loop: asyncio.AbstractEventLoop | None = loop
        self._thread: threading.Thread | None = None
        self._stopped = False
        # On the application's loop: the bodies not yet ended, to cancel at the stop, or
        # to fail if the loop closes under them, with what to close and call then.
        self._running: dict[BodyFuture, _AppBody] = {}
        self._changed = threading.Condition(self._lock)
        self._watcher: threading.Thread | None = None
        self._lost = False
        self._cancels_seen = False

    def submit(
        self, coroutine: Any, inner: Any = None, on_end: Callable[[], None] | None = None
    ) -> BodyFuture:
        """Schedule a coroutine on the loop; the future completes on the loop thread.

        ``inner`` is a coroutine that ``coroutine`` awaits (a step's body in
        callboard's wrapper): if ``coroutine`` is cancelled before it starts,
        ``inner`` is closed too, on the loop's thread, so that Python does not
        warn that it was never awaited. ``on_end`` is called on the loop's
        thread once the coroutine has really ended, or will never start: a
        cancelled future is done at once, while its task may still unwind.

        Raises:
            RuntimeStoppedError: if the loop has been stopped, or the
                application's loop is closed (the coroutine is closed).
            RuntimeError: if the loop's thread could not be started (the
                coroutine is closed; the next call tries again).
        """
        with self._lock:
            if self._stopped:
                coroutine.close()
                raise RuntimeStoppedError("the runtime is stopped")
            if self._app_loop is not None:
                return self._submit_to_app(self._app_loop, coroutine, inner, on_end)
            if self._loop is None:
                # Kept once its thread started only: a thread the process refused (a limit
                # of threads or memory) fails this body's call, and the next one tries again.
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=_run_until_stopped,
                    args=(loop, lambda: self._stopped),
                    name="callboard-async",
                    daemon=True,
                )
                try:
                    thread.start()
                except BaseException:
                    coroutine.close()
                    _close_unstarted(inner)
                    loop.close()
                    raise
                self._loop, self._thread = loop, thread
            loop = self._loop
        try:
            return _spawn_soon(loop, coroutine, inner, on_end)
        except RuntimeError:  # its loop is closed: its thread has ended
            coroutine.close()
            _close_unstarted(inner)
            raise RuntimeStoppedError("the loop of this runtime's async steps has ended") from None

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called: the runtime is stopping, or has stopped."""
        return self._stopped

    @property
    def on_app_loop(self) -> bool:
        """Whether bodies run on the application's loop rather than on a private one."""
        return self._app_loop is not None

    @property
    def lost(self) -> bool:
        """Whether the application's loop closed with bodies on it, which were cancelled."""
        return self._lost

    def first_cancel_by_other_code(self) -> bool:
        """Note that other code cancelled a body's task; ``True`` the first time only."""
        with self._lock:
            first, self._cancels_seen = not self._cancels_seen, True
        return first

    def is_current(self) -> bool:
        """Whether the calling code runs on this loop (inside an ``async def`` step, say)."""
        loop = self._loop
        if loop is None:
            return False
        # The low-level form: None rather than an exception where no loop runs (called
        # on every blocking wait for a run that has not ended).
        return asyncio._get_running_loop() is loop

    def _submit_to_app(
        self,
        loop: asyncio.AbstractEventLoop,
        coroutine: Any,
        inner: Any = None,
        on_end: Callable[[], None] | None = None,
    ) -> BodyFuture:
        """Schedule on the application's loop (called with the lock held)."""
        future = BodyFuture()
        try:
            # The lock is held: a body whose task ends at once waits in _ended until
            # it is noted here.
            _spawn_soon(loop, coroutine, inner, functools.partial(self._ended, future), future)
        except RuntimeError:  # the loop is closed
            coroutine.close()
            raise RuntimeStoppedError(
                "the application's event loop, which runs this runtime's async steps, is closed"
            ) from None
        self._running[future] = (coroutine, inner, on_end)
        if self._watcher is None:
            watcher = threading.Thread(
                target=self._watch, args=(loop,), name="callboard-app-loop", daemon=True
            )
            # A safety net only: refused (no thread to be had), the body runs on, and the
            # next one tries again.
            with contextlib.suppress(RuntimeError):
                watcher.start()
                self._watcher = watcher
        elif len(self._running) == 1:
            self._changed.notify()  # it waits for bodies without a timeout
        return future

    def _ended(self, future: BodyFuture) -> None:
        """On the loop's thread: a body's task has ended, or will never start."""
        with self._lock:
            body = self._running.pop(future, None)
        if body is not None and body[2] is not None:
            body[2]()

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """The ``callboard-app-loop`` thread: fail the bodies of a loop that closed under them."""
        with self._lock:
            while not self._stopped and not (self._running and loop.is_closed()):
                self._changed.wait(APP_LOOP_POLL if self._running else None)
            if self._stopped:
                return
        # Closed: nothing can be handed to it any more (a hand-off is refused under the lock).
        self._let_go_of_lost_bodies()

    def _let_go_of_lost_bodies(self) -> None:
        """Fail the bodies of the application's loop, which closed without running them."""
        with self._lock:
            self._lost = True
            lost, self._running = self._running, {}
        if not lost:
            return
        emit(
            logging.WARNING,
            "app_loop_closed_under_steps",
            steps=len(lost),
            hint="the application's event loop closed while async steps of this runtime "
            "were on it: stop the runtime before the loop ends, with `await rt.astop()` "
            "or `async with Runtime(...)`",
        )
        for future, (coroutine, inner, on_end) in lost.items():
            # A body never started is closed (or Python warns it was never awaited); one
            # started stays with its task, suspended on the closed loop.
            _close_unstarted(coroutine)
            _close_unstarted(inner)
            future.cancel()  # its step is failed, saying why (see AsyncLoop.lost)
            if on_end is not None:
                on_end()

    def stop(self, timeout: float | None = None) -> None:
        """Cancel what still runs, stop the loop and end its thread.

        On the application's loop, only the bodies started here are cancelled:
        at once, without waiting for them to unwind (the caller may be on that
        loop's own thread).
        """
        with self._lock:
            self._stopped = True
            self._changed.notify_all()
            loop, thread = self._loop, self._thread
            running = list(self._running)
            watcher = self._watcher
        if self._app_loop is not None:
            if watcher is not None:
                watcher.join(timeout)
            if self._app_loop.is_closed():
                self._let_go_of_lost_bodies()
            else:
                for future in running:
                    future.cancel()
            return
        if loop is None or thread is None:
            return

        def cancel_all() -> None:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if not tasks:
                loop.stop()
                return
            # Let the cancelled steps unwind; a step that ignores the cancel is left.
            asyncio.gather(*tasks, return_exceptions=True).add_done_callback(lambda _: loop.stop())

        loop.set_exception_handler(_quiet_at_stop)
        try:
            loop.call_soon_threadsafe(cancel_all)
        except RuntimeError:  # closed already: its thread has ended
            return
        thread.join(timeout)
        if thread.is_alive():
            # A step blocks the loop's thread, or ignores its cancel: the daemon
            # thread is left to it, as a blocked sync step's thread is, and
            # closes the loop once it gets back to it.
            with contextlib.suppress(RuntimeError):  # it closed meanwhile
                loop.call_soon_threadsafe(loop.stop)
            emit(logging.WARNING, "async_steps_abandoned_at_stop")


def _spawn_soon(
    loop: asyncio.AbstractEventLoop,
    coroutine: Any,
    inner: Any = None,
    on_end: Callable[[], None] | None = None,
    future: BodyFuture | None = None,
) -> BodyFuture:
    """``asyncio.run_coroutine_threadsafe``, with the loop woken once for a burst of steps.

    Steps handed to a loop before it gets round to the first start together in one
    callback (:func:`~runtime._handoff.deliver`): on the application's loop, 200
    steps ready at once cost it one wake-up, not 200. Cancelling the returned
    future (``future``, if given) cancels the task, from any thread.

    Raises:
        RuntimeError: if the loop is closed.
    """
    if future is None:
        future = BodyFuture()
    if not deliver(loop, _spawn, (coroutine, future, inner, on_end)):
        raise RuntimeError("the event loop is closed")
    return future


def _spawn(item: tuple[Any, BodyFuture, Any, Callable[[], None] | None]) -> None:
    """On the loop's thread: start the coroutine as a task that settles ``future``."""
    coroutine, future, inner, on_end = item
    if future.cancelled():  # cancelled before it started: it never will
        coroutine.close()
        _close_unstarted(inner)
        if on_end is not None:
            on_end()
        return
    loop = asyncio.get_running_loop()
    try:
        # In a context of its own: a task copies the one it is made in, here that of
        # the callback running this, which is the context of whichever thread first
        # handed the loop something of this burst. Code of the application's (a request
        # closing a watch another task reads) hands it things too: its request's
        # context variables (a tenant, a request id bound for logging) reached the step.
        task = contextvars.Context().run(loop.create_task, coroutine)
    except BaseException as exc:
        if on_end is not None:
            on_end()
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            future.set_exception(exc)
        raise

    # Ended before settled: the step's reply, which _Settle's future sends, comes after
    # the body stopped counting here (its run's queue slot is free once the run ends).
    if on_end is not None:
        task.add_done_callback(_Ended(on_end))
    task.add_done_callback(_Settle(future, inner))
    future.add_done_callback(_CancelTask(task, inner))


class _Ended:
    """A body's task's done callback: ``on_end()``, once the task has really ended."""

    __slots__ = ("on_end",)

    def __init__(self, on_end: Callable[[], None]) -> None:
        self.on_end = on_end

    def __call__(self, _task: asyncio.Task[Any]) -> None:
        self.on_end()


class _Settle:
    """A body's task's done callback: hands the task's outcome to its future.

    Here and in :class:`_CancelTask`, a slotted callable rather than a closure: one
    tracked object for each async step in progress, where a closure and its
    cells take three or four.
    """

    __slots__ = ("future", "inner")

    def __init__(self, future: BodyFuture, inner: Any = None) -> None:
        self.future = future
        self.inner = inner

    def __call__(self, task: asyncio.Task[Any]) -> None:
        future = self.future
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled meanwhile
            if task.cancelled():
                # Cancelled before its first step (by asyncio.run()'s cancel of the tasks
                # left, say): the body it would have awaited was never started.
                _close_unstarted(self.inner)
                future.cancel()
            elif (exc := task.exception()) is not None:
                future.set_exception(exc)
            else:
                future.set_result(task.result())


class _CancelTask:
    """A body's future's done callback: a cancelled future cancels the task, on its loop."""

    __slots__ = ("inner", "task")

    def __init__(self, task: asyncio.Task[Any], inner: Any = None) -> None:
        self.task = task
        self.inner = inner

    def __call__(self, done: BodyFuture) -> None:
        task = self.task
        if done.cancelled() and not task.done():
            deliver(task.get_loop(), _cancel_task, (task, self.inner))


def _cancel_task(item: tuple[asyncio.Task[Any], Any]) -> None:
    """On the loop's thread: cancel the task; a body it never got to start is closed."""
    task, inner = item
    coroutine = task.get_coro()
    unstarted = (
        inspect.iscoroutine(coroutine)
        and inspect.getcoroutinestate(coroutine) == inspect.CORO_CREATED
    )
    task.cancel()
    if unstarted:
        _close_unstarted(inner)


def _close_unstarted(inner: Any) -> None:
    """Close a coroutine that will never be awaited (only one that has not started)."""
    if inspect.iscoroutine(inner) and inspect.getcoroutinestate(inner) == inspect.CORO_CREATED:
        inner.close()


def _run_until_stopped(loop: asyncio.AbstractEventLoop, stopped: Callable[[], bool]) -> None:
    """The loop thread: run the loop until its runtime stops it, then close it (whatever is left).

    A task a step's body made that raises SystemExit or KeyboardInterrupt (an
    ``argparse`` error in a ``gather``-ed call) has asyncio re-raise it out of
    ``run_forever``: the thread died, silently, with every async step in flight
    on the loop, and every later one failed. The task keeps the exception, so
    the body that awaits it fails its step; the loop goes on for the others.
    So it does when a body stops the loop (``asyncio.get_running_loop().stop()``,
    as if it were the application's): the loop closed with the steps in flight
    on it, whose runs stayed ``running`` for ever, and every later async step failed.
    ``stopped``: whether the runtime stopped the loop.
    """
    try:
        while True:
            try:
                loop.run_forever()
            except (SystemExit, KeyboardInterrupt) as exc:
                emit(
                    logging.ERROR,
                    "async_step_task_raised",
                    error=f"{type(exc).__name__}: {exc}",
                    hint="a task made by an async step raised it; the step that awaits the "
                    "task fails, and the loop of async steps goes on",
                )
                continue
            if stopped():
                return
            emit(
                logging.ERROR,
                "async_step_loop_stopped",
                hint="an async step (or a task it made) stopped the loop that runs this "
                "runtime's async steps; it is not the application's loop: it goes on",
            )
    finally:
        loop.close()


def _quiet_at_stop(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """What the loop reports while it stops: a step that would not end, logged at debug."""
    emit(logging.DEBUG, "async_step_left_at_stop", message=context.get("message"))


class StepPool:
    """Step actors to run steps on, reused while idle, grown when calls wait, bounded.

    A call goes to an idle actor, or to a new one while fewer than ``core``
    live; otherwise it joins the backlog, which actors that free up serve in
    order. Actors blocked in a wait for a run (:meth:`wait_began`) are not
    counted, neither against ``core`` nor against ``limit``: each lets one
    more actor live while it waits, and an actor that frees up while more
    than ``limit`` others are not waiting stops. When the oldest call in the
    backlog has waited a whole :data:`TICK`, the monitor thread adds actors,
    up to ``limit``: one for every call waiting if no call ended in that tick
    (the actors are stalled), or at most as many as live (the pool doubles)
    if the process used less than :data:`BUSY` of a CPU in it and was not
    starved of CPU (:data:`LATE`): the actors are blocked, not busy. A tick
    past which the monitor itself could not run (:data:`HELD`) says neither;
    a stalled one is believed only after another, unless the process rested
    through it (:data:`DOUBTED`).

    Args:
        loop: Where ``async def`` bodies run.
        limit: The most step actors (threads) at once; calls beyond wait their
            turn in a first-in, first-out backlog.
        core: Step actors kept even when idle (at most ``limit``).
        idle_timeout: Seconds an idle actor beyond ``core`` lives on.
        on_wait: Called with the run id when a step actor begins to wait for a
            run, once the pool counts it (the runtime makes room for that run).
    """

    def __init__(
        self,
        loop: AsyncLoop,
        *,
        limit: int,
        core: int = 4,
        idle_timeout: float = 60.0,
        on_wait: Callable[[str], object] | None = None,
    ) -> None:
        self.loop = loop
        self._on_wait = on_wait
        self._core = min(core, limit)
        self._limit = limit
        self._idle_timeout = idle_timeout
        # `finished` (once per step) takes the lock itself: a condition's `with`
        # costs two Python calls around the lock's own.
        self._mutex = threading.RLock()
        self._cond = threading.Condition(self._mutex)
        self._idle: list[tuple[pykka.ActorRef[Any], float]] = []
        self._backlog: deque[tuple[StepActorMessage, float]] = deque()
        self._let_go = 0  # calls of the backlog let go of by their runs since the last sweep
        self._live = 0
        self._waiting = 0  # actors blocked in a wait for a run: not counted against the limit
        self._awaiting = 0  # async step bodies awaiting a run: they hold no actor
        # The runs whose bodies wait (blocked or awaiting), by how many: a claimer counts
        # the room a wait makes only for a run its worker still holds.
        self._waits_of: dict[str | None, int] = {}
        self._completions = 0
        self._start_failures = 0  # actors not started since one last was (threads refused)
        self._stopping = False
        # On a shared store: asked before a step body starts whether this worker still
        # holds its run (see actors.claimer.LeaseGuard); set by the runtime.
        self.guard: LeaseGuard | None = None
        # Where each user-code call counts itself while it runs (see actors._here.RunsHere):
        # on a shared store, set by the runtime; in memory, once a run enters a queue
        # (from ``queued_here``), as only a queue's slot needs it there.
        self.here: RunsHere | None = None
        self.queued_here: RunsHere | None = None
        self._monitor = threading.Thread(
            target=self._watch, name="callboard-step-monitor", daemon=True
        )
        self._monitor.start()

    @property
    def size(self) -> int:
        """How many step actors are alive."""
        return self._live

    @property
    def backlog(self) -> int:
        """How many calls wait for a step actor, all of them taken."""
        return len(self._backlog)

    @property
    def waiting(self) -> int:
        """How many step bodies wait for a run: actors blocked in one, async bodies awaiting one.

        Their runs do not count against ``max_concurrent_runs`` meanwhile.
        """
        return self._waiting + self._awaiting

    def waiting_held(self, holds: Callable[[str], bool]) -> int:
        """How many of the :attr:`waiting` bodies are of runs that ``holds`` says are held.

        A body of a run its worker no longer holds (the run was cancelled while
        its step waited, or taken over after the worker stalled) makes no room:
        its run is not counted among the held ones to begin with.
        """
        with self._cond:
            waits = list(self._waits_of.items())
        return sum(count for run_id, count in waits if run_id is not None and holds(run_id))

    def _count_wait(self, run_id: str | None, step: int) -> None:
        """Count a wait of the body of run ``run_id`` in or out (under the lock).

        Out under the run it was counted in under (what ``wait_began`` returned): by
        the end of a wait its task may serve no run any more (a task the body left
        behind, awaiting a run after the body returned).
        """
        left = self._waits_of.get(run_id, 0) + step
        if left > 0:
            self._waits_of[run_id] = left
        else:
            self._waits_of.pop(run_id, None)

    def wait_began(self, run_id: str) -> str | None:
        """A step actor blocks until run ``run_id`` ends: it no longer counts against the bounds.

        A call in the backlog gets a new actor at once if the waiting ones leave
        fewer than ``core`` working: the run waited for may need it.
        """
        call = None
        counted = served_run()
        with self._cond:
            self._waiting += 1
            self._count_wait(counted, 1)
            try:
                if self._backlog and not self._stopping:
                    if self._live - self._waiting < self._core:
                        [call] = self._take_handed(1)
                        self._live += 1
                    else:
                        self._cond.notify()  # the monitor may grow the pool, by the new bound
            except BaseException:  # the step's wait fails of it: it was never counted
                self._waiting -= 1
                self._count_wait(counted, -1)
                raise
        # Told after the count changed, so that whoever it tells sees the room it makes.
        if self._on_wait is not None:
            self._on_wait(run_id)
        if call is not None:
            self._start_actors([call])
        return counted

    def wait_ended(self, counted: str | None = None) -> None:
        """The wait of :meth:`wait_began` is over (an actor beyond the bound stops when free).

        ``counted`` is what :meth:`wait_began` returned.
        """
        with self._cond:
            self._waiting -= 1
            self._count_wait(counted, -1)

    def await_began(self, run_id: str) -> str | None:
        """An async step body awaits run ``run_id``'s end: its run makes room meanwhile.

        As :meth:`wait_began` for a blocked actor, but the body holds no actor,
        so the thread bound is left as it is.
        """
        counted = served_run()
        with self._cond:
            self._awaiting += 1
            self._count_wait(counted, 1)
        if self._on_wait is not None:
            self._on_wait(run_id)
        return counted

    def await_ended(self, counted: str | None = None) -> None:
        """The await of :meth:`await_began` is over; ``counted`` is what that returned."""
        with self._cond:
            self._awaiting -= 1
            self._count_wait(counted, -1)

    def submit(self, call: StepActorMessage) -> None:
        """Run a call on an idle actor, a new one while under ``core``, or when one frees up.

        Raises:
            RuntimeStoppedError: if the pool is stopping.
        """
        with self._mutex:  # the condition's lock, taken without its two Python calls
            if self._stopping:
                raise RuntimeStoppedError("the runtime is stopped")
            if self._idle:
                ref = self._idle.pop()[0]
            elif self._live - self._waiting < self._core:
                self._live += 1
                ref = None
            else:
                self._backlog.append((call, time.monotonic()))
                signal = call.signal
                if signal is not None:
                    signal.waited = True  # its step's timeout waits until it begins
                if len(self._backlog) == 1:
                    self._cond.notify()
                return
        if ref is None:
            self._start_actors([call], first=False)
            return
        ref.tell(call)

    def _start_actors(self, calls: list[StepActorMessage], *, first: bool = True) -> None:
        """Start a new actor for each call, counted in ``live`` already.

        ``first``: the calls came before every call in the backlog (taken from its
        head); else after (a call just handed over).

        A thread the process cannot start (it has reached a limit of threads or
        of memory) loses no call: the calls not started go back into the backlog,
        where they were and uncounted, for actors that free up or a later tick of
        the monitor, which grows the pool again then. Said once, when starts begin
        to fail (``step_actor_start_failed``, an error), and once when one
        succeeds again (``step_actor_start_recovered``).
        """
        for index, call in enumerate(calls):
            try:
                ref = StepActor.start(self)
            except Exception as exc:
                self._not_started(calls[index:], exc, first=first)
                return
            ref.tell(call)
        if self._start_failures:
            with self._mutex:
                failures, self._start_failures = self._start_failures, 0
            if failures:
                emit(logging.INFO, "step_actor_start_recovered", failed_starts=failures)

    def _not_started(self, calls: list[StepActorMessage], exc: Exception, *, first: bool) -> None:
        now = time.monotonic()
        for call in calls:
            signal = call.signal
            if signal is not None:  # waiting again: its step's timeout waits until it begins
                signal.waited = True
                signal.began = None
        with self._cond:
            streak_begins = not self._start_failures
            self._start_failures += 1
            self._live -= len(calls)
            if not self._stopping:  # else stop() has cleared the backlog: the runs stop too
                # Where they were, in the order they came: first in first out still.
                if first:
                    self._backlog.extendleft((call, now) for call in reversed(calls))
                else:
                    self._backlog.extend((call, now) for call in calls)
                self._cond.notify()
        if streak_begins:
            emit(
                logging.ERROR,
                "step_actor_start_failed",
                error=f"{type(exc).__name__}: {exc}",
                waiting=len(calls),
                live=self._live,
                hint="the calls wait for a step thread to free up or to start; the pool "
                "tries to grow again at its next tick, and says when a start succeeds",
            )

    def finished(self, ref: pykka.ActorRef[Any]) -> StepActorMessage | None:
        """Called by a step actor when free: its next call, or ``None`` to idle.

        A pool that is stopping stops the actor instead (after the call it is in).
        """
        with self._mutex:
            self._completions += 1
            # Past the bound once waits for runs have ended: this actor is one too many.
            if not self._stopping and self._live - self._waiting <= self._limit:
                if self._backlog:
                    entry = self._backlog.popleft()
                    call = entry[0]
                    signal = call.signal  # as _handed, without its call once per step
                    if signal is not None:
                        try:
                            signal.began = _clock.monotonic()
                        except BaseException:
                            # The actor ends of it (see StepActor.on_failure): the call goes
                            # back first in line, as it waited, for the next actor free or
                            # the one the monitor starts. Dropped, its run waited for ever.
                            self._backlog.appendleft(entry)
                            raise
                    return call
                self._idle.append((ref, time.monotonic()))
                return None
            self._live -= 1
        ref.stop(block=False)
        return None

    def lost(self, ref: pykka.ActorRef[Any]) -> None:
        """A step actor ended of a fault: it counts no more, and the pool may start another."""
        with self._mutex:
            idle = [entry for entry in self._idle if entry[0] is not ref]
            if len(idle) < len(self._idle):
                self._idle = idle
            self._live -= 1
            if self._backlog:
                self._cond.notify()  # the monitor may start one for calls that wait

    def let_go(self, count: int) -> None:
        """Runs let go of ``count`` calls that waited for an actor (their signals are aborted).

        Once such calls are many (see :data:`SWEPT_PAST`), the backlog is
        rid of them: an actor would skip them (see
        :meth:`actors.step.StepActor._call`), no reply is awaited, and no
        count was taken for them. A call handed to an actor meanwhile is
        counted all the same: at worst a pass finds fewer to take out.
        """
        with self._mutex:
            self._let_go += count
            if self._let_go < max(SWEPT_PAST, len(self._backlog) // 2):
                return
            self._let_go = 0
            self._backlog = deque(entry for entry in self._backlog if not _let_go(entry[0]))

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop idle actors now and busy ones when their step ends; end the monitor.

        Waits up to ``timeout`` seconds in all; a step still in user code then
        keeps its daemon thread until it returns, and its result is dropped.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            self._stopping = True
            idle = [ref for ref, _ in self._idle]
            self._idle.clear()
            self._live -= len(idle)
            self._backlog.clear()
            self._cond.notify_all()
        stopping = [ref.stop(block=False) for ref in idle]
        for future in stopping:
            try:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
            except pykka.Timeout:
                emit(logging.WARNING, "step_actor_stop_timed_out")
        self._monitor.join(max(0.0, deadline - time.monotonic()))

    def _watch(self) -> None:
        """The ``callboard-step-monitor`` thread: grow the pool while calls wait; outlive faults.

        A fault of its own (a ``MemoryError``, say) ended the thread: the pool then
        never grew again, and calls past its core waited for ever behind blocked
        steps. It is said once, and the watch begins again a tick later.
        """
        streak = FailingStreak(
            "step_monitor_failed",
            "step_monitor_recovered",
            hint="the step pool's monitor watches again a tick later; calls waiting for a "
            "step thread are served as step threads free up meanwhile",
        )
        while True:
            try:
                self._monitor_ticks(streak)
                return
            except Exception as exc:
                streak.failure(f"{type(exc).__name__}: {exc}")
                with self._cond:
                    if self._stopping:
                        return
                    self._cond.wait(TICK)

    def _monitor_ticks(self, streak: FailingStreak) -> None:
        """Watch the pool tick after tick until it stops (see :meth:`_watch`)."""
        voided = 0  # ticks set aside in a row because the GIL was held past them (HELD)
        stalled_at = float("-inf")  # when the monitor last saw a stalled tick (see DOUBTED)
        while True:
            with self._cond:
                while not self._backlog and not self._stopping:
                    self._retire_idle()
                    self._cond.wait(self._idle_timeout if self._live > self._core else None)
                if self._stopping:
                    return
                # Watch one tick: how many calls end in it, and how much CPU the process uses.
                seen, began, cpu = self._completions, time.monotonic(), time.process_time()
                deadline = began + TICK
                while not self._stopping and (remaining := deadline - time.monotonic()) > 0:
                    self._cond.wait(remaining)
                if self._stopping:
                    return
                if not self._backlog or self._backlog[0][1] > began:
                    continue  # no call has waited a whole tick
                now = time.monotonic()
                if now - deadline > HELD and voided < VOIDED:
                    voided += 1
                    emit(logging.DEBUG, "step_pool_tick_set_aside", late=round(now - deadline, 4))
                    continue
                voided = 0
                used = time.process_time() - cpu
                verdict = _tick_verdict(
                    self._completions != seen, now - deadline, used, now - began
                )
                stalled = verdict == "stalled"
                if stalled:
                    believed = _stall_believed(now - stalled_at, now - deadline, used, now - began)
                    stalled_at = now
                    if not believed:
                        emit(logging.DEBUG, "step_pool_tick_doubted", cpu=round(used, 4))
                        continue
                elif verdict is None:
                    continue
                # The actors are blocked. Stalled ones all at once: every call
                # waiting gets an actor, up to the limit. Otherwise the pool at
                # most doubles per tick, so that a tick misread costs few threads.
                grow = min(len(self._backlog), self._limit + self._waiting - self._live)
                if not stalled:
                    grow = min(grow, max(1, self._live))
                work = self._take_handed(grow)
                self._live += grow
                streak.success()
                if not work:
                    # At the limit: the waiting calls are served as actors free
                    # up. Look again later, to retire actors once the rush is over.
                    self._cond.wait(self._idle_timeout)
                    continue
            emit(logging.DEBUG, "step_pool_grown", added=len(work), size=self._live)
            self._start_actors(work)

    def _take_handed(self, count: int) -> list[StepActorMessage]:
        """The ``count`` calls at the backlog's head, each handed over (see :func:`_handed`).

        A fault in a hand-over leaves them all where they were, in order: taken and
        dropped, their runs waited for ever. (:meth:`finished`, once per step, does the
        same inline.)
        """
        taken = [self._backlog.popleft() for _ in range(count)]
        try:
            return [_handed(entry[0]) for entry in taken]
        except BaseException:
            self._backlog.extendleft(reversed(taken))
            raise

    def _retire_idle(self) -> None:
        cutoff = time.monotonic() - self._idle_timeout
        while self._live > self._core and self._idle and self._idle[0][1] < cutoff:
            ref, _ = self._idle.pop(0)
            self._live -= 1
            ref.stop(block=False)


def _let_go(call: StepActorMessage) -> bool:
    """Whether the call's run let go of it: its signal was aborted before it began."""
    signal = call.signal
    return signal is not None and signal.aborted


def _handed(call: StepActorMessage) -> StepActorMessage:
    """A call that waited for an actor, as one is handed it: its step's timeout counts from now.

    The actor sets the time again when the code begins; lost before (a test kit's dropped
    ``CallStep``), the call times out a timeout later.
    """
    signal = call.signal
    if signal is not None:
        signal.began = _clock.monotonic()
    return call
