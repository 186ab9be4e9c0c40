"""``Runtime``: owns the actors, binds workflows, and the process-wide default runtime."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import functools
import json
import logging
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast, get_args, overload

from pydantic import BaseModel

from runtime import _clock
from runtime._errors import (
    BlockingCallError,
    RoleError,
    RunAlreadyStartedError,
    RuntimeStoppedError,
    StoreError,
    WorkflowDefinitionError,
)
from runtime._handoff import CallPool
from runtime._ids import check_lookup_name
from runtime._model import TERMINAL_STATUSES, RunEvent, RuntimeHealth
from runtime._options import FOREVER, RetentionPolicy, check_timeout
from runtime._plan import ExecutionPlan
from runtime._queue import MAX_LIMIT, Queue
from runtime._run_input import bound_schedule
from runtime._schedule import CatchUp, Overlap, Schedule, ScheduleInfo
from runtime._scheduler import Scheduler, describe
from runtime._snapshot import Snapshot, decode, run_events
from runtime._stores.base import ResumeRequestStore, SnapshotRecord, SnapshotStore, provides
from runtime._stores.memory import MemoryStore
from runtime._stores.open import is_postgres_url, open_store
from runtime._stores.schedules import ScheduleBook, ScheduleRow, book_for, close_book
from runtime._stores.sqlite import path_from_url
from runtime._sync import Channel, EventChannel, Latch, served
from runtime._tracing import emit

if TYPE_CHECKING:
    from actors.system import ActorSystem
    from runtime._workflow import Workflow

__all__ = [
    "APART_THREADS",
    "CALL_THREADS",
    "DEFAULT_STOP_TIMEOUT",
    "AsyncSteps",
    "RunHost",
    "Runtime",
    "default_runtime",
    "offload",
]

W = TypeVar("W", bound="Workflow[Any, Any]")
T = TypeVar("T")

CALL_THREADS: Final = 4
"""The most threads a runtime runs the blocking part of its awaitable calls on.

``astart_async``, ``alist_workflow_runs`` and the other ``a`` calls (but
``acancel``: see :data:`APART_THREADS`) hand their blocking part (validation, a
store commit, a lock another process holds) to these threads and await it, so
the event loop never waits. Calls beyond the bound queue for a thread without
blocking the loop; the threads end with the runtime.

Four, not more: the work on these threads is mostly Python (validation,
decoding a snapshot), so more threads do not make it faster, and each one more
is one more thread the event loop's own thread queues behind for the GIL. With
200 coroutines polling at once on two cores, 4 threads left the loop less late
than 8 (``benchmarks/loop_lag.py``: a mean lag of about 3.5 ms against 5 ms).
For the same reason calls that keep ending run on one of them at a time; the
others take calls only while the ones running are stuck (see
:data:`runtime._handoff.STALL`): the bound is for calls that block.
"""

APART_THREADS: Final = 16
"""The most threads ``acancel`` runs on, apart from :data:`CALL_THREADS`.

A cancel may wait long: for its run's hooks, or for another process to carry
it out. On the four call threads, a few of them held every other awaitable call
up; so cancels have threads of their own, started as they come (each start
waits for the new thread to run, on the loop's thread), at most sixteen, and
later cancels queue for one. They end with the runtime.
"""

DEFAULT_STOP_TIMEOUT: Final = 10.0
"""Seconds ``stop()`` waits for runs in progress before failing them."""

HEALTH_PATIENCE: Final = 5.0
"""Seconds every write may fail before :meth:`Runtime.health` says the runtime is not ready."""

DEFAULT_MAX_STEP_THREADS: Final = max(64, 4 * min(32, (os.cpu_count() or 1) + 4))
"""The most threads a runtime runs sync step bodies on, unless told otherwise.

``max(64, 4 * min(32, cpus + 4))``: 64 up to 12 cores, at most 128. The floor
of 64 comes from measurement: a runtime hands out some 3,000 steps a second on
two cores (``benchmarks/burst.py``), so 64 threads keep steps that block up to
about 20 ms each from queueing (3,000/s x 20 ms = 60 threads), and the issue's
burst of 50,000 starts against 5 ms steps ends sooner on 64 threads (15 s) than
it did on the unbounded pool before (30 s, on 4,101 threads).
That rate is held by the GIL, not by the cores; four times ``concurrent.futures``'
default for I/O-bound work (``min(32, cpus + 4)``) lets a machine of many cores,
whose steps may run C code that releases the GIL, go up to 128. A thread costs
tens of KB of memory and its stack's address space. Steps that block longer,
many at once, need a larger ``max_step_threads``; ``async def`` steps need no
thread while they await.
"""


RoleName = Literal["both", "worker", "client"]
"""A runtime's role on a shared store (see :class:`Runtime`)."""

AsyncSteps = Literal["private", "app"] | asyncio.AbstractEventLoop
"""Where a runtime runs ``async def`` step bodies (see :class:`Runtime`)."""


class RunHost:
    """What a bound workflow's runs use of their runtime: its store and its actor system.

    ``Run`` and ``Workflow`` hold the host of the runtime they are bound to and
    call its methods; they never touch the runtime's private members. The
    host's ``system`` is set by :meth:`Runtime.start` and kept after the stop,
    so that waits and watches of a stopped runtime read what the store holds.
    """

    def __init__(self, store: SnapshotStore | None, role: RoleName = "both") -> None:
        self.store = store
        self.role = role
        self.system: ActorSystem | None = None
        self.state: Literal["new", "running", "stopping", "stopped"] = "new"
        self.failure: str | None = None  # why the runtime stopped itself, if it did
        self.fork_error: str | None = None  # set in a forked child: why it cannot run here
        # Every registered definition of each workflow, by id then fingerprint (see
        # Runtime.register): replaced as a whole, never changed in place.
        self.versions: Mapping[str, Mapping[str, ExecutionPlan]] = {}
        self._calls: CallPool | None = None
        self._apart: CallPool | None = None
        self._calls_lock = threading.Lock()

    @property
    def in_memory(self) -> bool:
        """Whether runs are kept in a :class:`MemoryStore` (records as objects, not bytes)."""
        return type(self.store) is MemoryStore

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Await ``fn(*args, **kwargs)`` run on one of the runtime's call threads.

        The calling task's context variables go with it. A runtime that is not
        running (new, or stopped: its results stay readable) lends no thread:
        the call runs on asyncio's default executor instead.
        """
        return await self.submit(fn, *args, **kwargs)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """:meth:`call`'s future: cancelled before a thread takes it, the call is never made.

        Call from a coroutine, on its loop.
        """
        bound = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        calls = self._calls if self.state == "running" else None
        if calls is None:
            calls = self._pool()
        future: asyncio.Future[T] | None = None
        if calls is not None:
            with contextlib.suppress(RuntimeError):  # closed between the check and the submit
                future = calls.submit(bound)
        if future is None:
            future = asyncio.get_running_loop().run_in_executor(None, bound)
        return future

    async def call_within(self, fn: Callable[[], T], seconds: float) -> T | None:
        """:meth:`call`, given up on if no call thread has taken it within ``seconds``.

        For a read that a caller's timeout bounds: the few call threads may all be
        held by other calls (starts that another process's lock on a SQLite file
        keeps for up to 30 s each). A call no thread has begun by then is never
        made; one a thread has begun is awaited to its end.

        Args:
            fn: The call, which never returns ``None``.
            seconds: How long the call may wait for a thread.

        Returns:
            What ``fn`` returned; ``None`` if no thread took it in time.
        """
        # Whether the call began (on its thread) or was given up on (here): decided under
        # the lock, so that a thread taking the call as it is given up on does not make it.
        decided: list[bool] = []
        lock = threading.Lock()

        def call() -> T:
            with lock:
                if decided:  # given up on: its caller was told it was never made
                    raise asyncio.CancelledError
                decided.append(True)
            return fn()

        future = self.submit(call)
        try:
            await asyncio.wait((future,), timeout=max(0.0, seconds))
            if not future.done():
                with lock:
                    given_up = not decided
                    if given_up:
                        decided.append(False)
                if given_up:
                    future.cancel()
                    return None
            return await future
        except asyncio.CancelledError:
            future.cancel()
            raise

    async def call_apart(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Await ``fn(*args, **kwargs)`` run on a pool of its own (:data:`APART_THREADS`).

        For a call that may wait long (a cancel waits for its run's hooks, or
        for the process that holds the run): on the few shared call threads,
        a handful of them held up every other awaitable call. A thread of its
        own for each such call held the loop instead: starting a thread waits
        for it to run, and a thousand cancels at once held the loop a second.
        """
        bound = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        apart = self._pool(apart=True)
        future: asyncio.Future[T] | None = None
        if apart is not None:
            with contextlib.suppress(RuntimeError):  # closed between the check and the submit
                future = apart.submit(bound)
        if future is None:
            future = asyncio.get_running_loop().run_in_executor(None, bound)
        return await future

    def _pool(self, *, apart: bool = False) -> CallPool | None:
        with self._calls_lock:
            if self.state != "running":
                return None
            if apart:
                if self._apart is None:
                    self._apart = CallPool(APART_THREADS, "callboard-call-apart")
                return self._apart
            if self._calls is None:
                self._calls = CallPool(CALL_THREADS, "callboard-call")
            return self._calls

    def forked(self) -> None:
        """In a forked child of the process that started it: stop here, and refuse every call.

        The runtime's threads were not copied into the child, and its store's
        connections (a SQLite file's, a PostgreSQL pool's) belong to the process
        that opened them: using one from a child can corrupt what the parent
        does with it. So the child never touches them, not even to close them.
        """
        self.fork_error = (
            f"this runtime was started in process {os.getppid()}, and this process "
            f"({os.getpid()}) is a fork of it: a runtime's threads and its store's "
            "connections stay with the process that started it. Start a new Runtime in "
            "this process, after the fork (or start child processes with "
            "multiprocessing's 'spawn' or 'forkserver' method)"
        )
        self.state = "stopped"
        if self.store is not None:
            _left_by_the_parent.append(self.store)  # never closed here: see above
            self.store = cast(SnapshotStore, _ForkedStore(self.fork_error))
        self._calls = self._apart = None
        self._calls_lock = threading.Lock()

    def close_calls(self, timeout: float | None = None) -> None:
        """End the call threads: calls queued go to their loops' executors; calls running end.

        Called once the actors have stopped, when every call still running
        finds the runtime stopped and returns soon; for at most ``timeout``
        seconds (a cancel waits a grace of its own for the store's last commits).
        """
        with self._calls_lock:
            pools = [pool for pool in (self._calls, self._apart) if pool is not None]
            self._calls = self._apart = None
        deadline = None if timeout is None else time.monotonic() + timeout
        for pool in pools:
            pool.close(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def hears_runs(self) -> bool:
        """Whether a run's settling here would still be told: it runs, and its registry lives."""
        system = self.system
        return self.state == "running" and system is not None and system.registry.is_alive()

    def on_step_loop(self) -> bool:
        """Whether the caller runs on the event loop of this runtime's async steps."""
        system = self.system
        return system is not None and system.loop.is_current()

    def running(self) -> ActorSystem:
        """The actor system, for calls that change runs.

        Raises:
            RuntimeStoppedError: if the runtime is not started, or stopped.
        """
        system = self.system
        if self.state != "running" or system is None:
            if self.fork_error is not None:
                raise RuntimeStoppedError(self.fork_error)
            if self.state == "new":
                raise RuntimeStoppedError(
                    "the runtime is not started: use `with Runtime() as rt:` or rt.start()"
                )
            if self.failure is not None:
                raise RuntimeStoppedError(f"the runtime stopped itself: {self.failure}")
            raise RuntimeStoppedError(
                "the runtime is stopped, and a stopped runtime cannot start again: create a "
                "new Runtime and register the workflow on it"
            )
        return system

    def start_run(
        self,
        plan: ExecutionPlan,
        snapshot: Snapshot,
        record: SnapshotRecord,
        queue: Queue | None = None,
        *,
        scheduled: bool = False,
    ) -> None:
        """Record and start a new run (through ``queue``, when it has one).

        Args:
            plan: The run's workflow.
            snapshot: Its first snapshot.
            record: Its first record.
            queue: The queue it goes through, if any.
            scheduled: Started by this runtime's scheduler, which a ``worker`` has too.

        Raises:
            QueueFullError: if the queue's ``max_queued`` runs wait.
            RunAlreadyStartedError: if the run's id (or its idempotency key) is taken.
            RuntimeOverloadedError: if ``max_pending_runs`` runs wait to start.
            RuntimeStoppedError: if the runtime is not running.
            RoleError: if the runtime is a ``worker``.
        """
        if self.role == "worker":  # the usual start asks no more (see may_start)
            self.may_start(record.run_id, scheduled=scheduled)
        system = self.system
        if self.state != "running" or system is None:
            system = self.running()  # raises, saying why
        if not system.start_run(plan, snapshot, record, queue):
            raise RunAlreadyStartedError(
                f"run id {record.run_id!r} is already in use by another run",
                run_id=record.run_id,
            )

    def may_start(self, run_id: str, *, scheduled: bool = False) -> None:
        """Check that this runtime's role lets it start runs (its scheduler's, for a worker).

        Raises:
            RoleError: if the runtime is a ``worker`` and the start is not its scheduler's.
        """
        if self.role == "worker" and not scheduled:
            raise RoleError(
                "this runtime has the role 'worker': it runs what others start, and starts "
                "nothing; start runs from a runtime with the role 'client' or 'both'",
                run_id=run_id,
            )

    def run_for_key(self, workflow_id: str, key: str) -> str | None:
        """The run of ``workflow_id`` started with idempotency key ``key``, or ``None``.

        Raises:
            TypeError: if the store keeps no idempotency keys (a store object of
                another kind).
        """
        store = self.running().store
        # getattr, not isinstance(store, KeyedStore): a protocol check costs tens of
        # microseconds, on every keyed start.
        find: Callable[[str, str], str | None] | None = getattr(store, "run_for_key", None)
        if find is None:
            raise TypeError(
                f"the store {type(store).__name__} keeps no idempotency keys: use the memory, "
                "SQLite or PostgreSQL store to start runs with idempotency_key="
            )
        return find(workflow_id, key)

    def load(self, run_id: str) -> SnapshotRecord | None:
        """The newest stored record of a run (``None``: unknown, or no SQLite store open yet)."""
        store = self.store
        return None if store is None else store.load(run_id)

    def cut_by_stop(
        self, what: str, run_id: str, write: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        """``write(*args, **kwargs)``, a store's refusal that a stop caused raised as the stop.

        A stop closes a durable store, and a write handed to it after that fails
        with the store's "closed" ``StoreError``: a resume, a restart, a cancel or
        a delete the stop caught between its read of the run and its write met that.

        Raises:
            RuntimeStoppedError: for a ``StoreError`` once the runtime is not running.
        """
        try:
            return write(*args, **kwargs)
        except StoreError as exc:
            if self.state == "running":
                raise
            raise RuntimeStoppedError(
                f"the runtime stopped before the {what} of run {run_id!r} was recorded: read "
                "the run on the next runtime on the store",
                run_id=run_id,
            ) from exc

    def writes_refused(self) -> str | None:
        """Why the store cannot record runs now: it refused every write too long (else ``None``)."""
        refused: Callable[[], str | None] | None = getattr(self.store, "writes_refused", None)
        return None if refused is None else refused()

    def listen_for_refusal(self, listener: Callable[[str], None]) -> Callable[[], None] | None:
        """Have ``listener(why)`` called once the store refused every write too long.

        Called on the store's writer thread, each time a refusal outlasts its
        patience, with what :meth:`writes_refused` says from then on.

        Returns:
            The call that stops it; ``None`` for a store that says nothing of
            refusals (memory, a store of the user's).
        """
        listen: Callable[[Callable[[str], None]], Callable[[], None]] | None = getattr(
            self.store, "listen_for_refusal", None
        )
        return None if listen is None else listen(listener)

    def run_deleted(self, run_id: str) -> None:
        """The run's record was deleted: a running runtime forgets its event log."""
        system = self.system
        if system is not None and self.state == "running":
            system.runs_deleted((run_id,))

    def resume_pending(self, run_id: str) -> bool | None:
        """Whether a resume request of the run waits in a shared store, for a worker to carry out.

        See :meth:`~runtime._stores.base.ResumeRequestStore.request_resume`: a
        suspended run with one is as good as resumed. ``None`` on a store that
        takes no requests.
        """
        store = self.store
        if store is None or not store.durable or not provides(store, ResumeRequestStore):
            return None
        return cast("ResumeRequestStore", store).resume_pending(run_id)

    def watch(self, run_id: str, event: threading.Event | Latch | None = None) -> Any:
        """An event (or ``event``) set once the run settles; set at once if nothing runs."""
        system = self.system
        if system is None or self.state == "stopped":
            target = threading.Event() if event is None else event
            target.set()
            return target
        return system.watch(run_id, event)

    def unwatch(self, run_id: str, event: threading.Event | Latch) -> None:
        """Forget ``event`` of an earlier :meth:`watch`: its wait timed out or was cancelled."""
        system = self.system
        if system is not None and self.state != "stopped":
            system.unwatch(run_id, event)

    def subscribe(
        self,
        run_id: str,
        channel: Channel[RunEvent],
        from_seq: int | None = None,
        subscribed: Latch | None = None,
    ) -> None:
        """Put the run's events into ``channel``, closing it when the run ends.

        With ``from_seq``, only the past events numbered above it (``-1``:
        none). ``subscribed`` is set once the subscription is taken.
        """
        system = self.system
        if system is None or self.state == "stopped":
            # Nothing will change any more: what the store holds is the whole story.
            record = self.load(run_id)
            if record is not None and from_seq != -1:
                events = run_events(decode(record.data, record.run_id), "", {})
                if from_seq is not None and events and from_seq > events[-1].seq:
                    # Past every number of this replay: the client's come from a log (this
                    # runtime's before it stopped, another process's), as the registry
                    # takes them; the run's events are told again, numbered on from it.
                    events = run_events(decode(record.data, record.run_id), "", {}, from_seq + 1)
                for event in events:
                    if from_seq is None or event.seq > from_seq:
                        channel.put(event)
            if (
                isinstance(channel, EventChannel)
                and record is not None
                and record.status not in TERMINAL_STATUSES
            ):
                channel.stopped = True  # the story so far, not its end
            channel.close()
            if subscribed is not None:
                subscribed.set()
        else:
            system.subscribe(run_id, channel, from_seq, subscribed)

    def unsubscribe(self, run_id: str, channel: Channel[RunEvent]) -> None:
        """Stop putting the run's events into ``channel`` (a closed or dropped watch)."""
        system = self.system
        if system is not None and self.state != "stopped":
            system.unsubscribe(run_id, channel)


class _Stopping:
    """A stop under way on its own thread (see :meth:`Runtime.stop`)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        # Whether a caller waits for it to end: set by the wait itself, so that an interrupt
        # before the wait began leaves it unattended too.
        self.attended = False
        self.error: BaseException | None = None  # what the stop raised, told to one caller
        self.thread: threading.Thread | None = None  # where it runs (none: on its caller's)
        # Whether its thread took it on, or its caller (interrupted as it started the
        # thread) gave it up first: one or the other, decided under the runtime's lock.
        self.began = False
        self.abandoned = False

    def wait(self, system: ActorSystem | None, timeout: float | None, *, taken_over: bool) -> None:
        """Wait for the stop to end; a ``KeyboardInterrupt`` meanwhile leaves it unattended.

        ``taken_over``: the caller waits for a stop another call began, which
        its ``timeout`` cuts short (the stop's thread halts the runs left then).

        Raises:
            BaseException: what the stop raised (to one caller only).
        """
        try:
            self.attended = True
            if (
                taken_over
                and timeout is not None
                and system is not None
                and not self.done.wait(timeout)
            ):
                system.hurry()
            self.done.wait()
            if self.thread is not None:
                self.thread.join()  # it has ended its work: no thread of ours outlives stop()
        except BaseException:
            self.attended = False  # interrupted: the next call waits for it instead
            raise
        error, self.error = self.error, None
        if error is not None:
            raise error


_HERE = os.path.dirname(__file__)
_MACHINERY = (_HERE + os.sep, os.path.join(os.path.dirname(_HERE), "actors") + os.sep)
"""Where the code that does callboard's work on its callers' threads lives (by file name)."""

_NOT_MACHINERY = tuple(
    os.path.join(_HERE, name)
    for name in (
        "__main__.py",
        "_cli" + os.sep,
        "testing.py",
        "_pytest_plugin.py",
        "_pytest_fixtures.py",
    )
)
"""Entry points that call user code while holding nothing: the command line importing a
user's module, the test kit. A stop from that code stops as from the program's flow."""


def _machinery(filename: str) -> bool:
    return filename.startswith(_MACHINERY) and not filename.startswith(_NOT_MACHINERY)


def _inside_callboard_here() -> bool:
    """Whether :meth:`Runtime.stop`'s caller interrupts a call of callboard's on its own thread.

    Python runs a signal handler on the main thread, between two bytecodes of
    whatever that thread does: when that is a ``start_async()``, a ``wait()`` or
    a store's write, the handler's frame sits on top of callboard's frames, as
    a callback's would. Only the main thread runs signal handlers; on another,
    a stop called from code callboard runs (a step body stopping a runtime of
    its own) stops as from anywhere. Called by ``stop()`` only.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    frame: FrameType | None = sys._getframe(1).f_back  # the caller of stop(): maybe none
    # The stop's own way in (a `with` block's exit) is callboard's code too.
    while frame is not None and _machinery(frame.f_code.co_filename):
        frame = frame.f_back
    while frame is not None:
        if _machinery(frame.f_code.co_filename):
            return True
        frame = frame.f_back
    return False


def _on_a_thread_of_its_own(name: str, fn: Callable[[], object]) -> None:
    """Run ``fn`` (which reports its own outcome) on a new daemon thread, with this context.

    For a start or a stop, which must not wait for a thread of the loop's default
    executor: the application's blocking calls may hold every one of them.
    """
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(fn,), name=name, daemon=True).start()


async def offload(host: RunHost | None, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Await a blocking call off the event loop: on ``host``'s call threads, if it has a host."""
    if host is not None:
        return await host.call(fn, *args, **kwargs)
    bound = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(None, bound)


class Runtime:
    """A workflow runtime: the actors that run workflows and remember their runs.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with Runtime() as rt:
            wf = rt.register(workflow)
            run_id = wf.create_run().start_async(input_data={...}).run_id

    Args:
        store: Where runs are kept: ``"memory"`` (the default: lost with the
            process), a SQLite file as a path or a ``sqlite:///path`` URL
            (created if missing), a PostgreSQL database as a
            ``postgresql://`` or ``postgres://`` URL (the extra
            ``callboard[postgres]``; both opened by :meth:`start`), or a
            store object. On a durable store a run is committed when
            ``start_async`` returns, each step's output is committed before
            the next step starts, and runs left unfinished by a process that
            ended are resumed by a runtime on the store that registers their
            workflow. SQLite and PostgreSQL stores are shared: several
            runtimes (processes; for PostgreSQL, hosts) use one at once.
        max_concurrent_runs: The most runs in progress at once; further runs
            wait, ``pending``, in the order they were started: in memory, or
            on a shared store in the store, where any runtime with room
            claims them. ``None`` (the default) sets no limit.
        max_step_threads: The most threads that run sync step bodies (and
            sync conditions, ``map`` functions and sleep lengths) at once.
            Calls beyond wait for a thread in the order they came, never
            dropped. ``async def`` bodies run on one event loop thread and
            hold none of these while they await. The default,
            :data:`DEFAULT_MAX_STEP_THREADS`, is 64 on most machines (at most
            128). A step that blocks until another run's step ends (a
            ``run.start()`` inside a step) can wait for ever once every thread
            is taken by such steps: bound those runs with
            ``max_concurrent_runs`` below this.
        max_pending_runs: The most runs that may wait to start: started but
            not yet given a run actor, because ``max_concurrent_runs`` runs
            are in progress, their queue's limits hold them, or the
            supervisor has yet to reach them. Runs
            woken from a sleep, resumed or recovered are never refused, but
            count while they queue. When that many wait, ``start_async``
            (and ``start``) raises :class:`RuntimeOverloadedError` before
            recording anything, and the same run can be started later.
            ``None`` (the default) sets no limit: queueing many runs behind
            ``max_concurrent_runs`` is a use the runtime supports, and a
            waiting run costs only its snapshot, no thread. On a shared
            store (SQLite, PostgreSQL) runs beyond ``max_concurrent_runs``
            wait in the store, not in memory, and this bound does not apply:
            the runtime logs ``max_pending_runs_ignored`` (a warning) as it
            starts.
        stop_timeout: Seconds :meth:`stop` (and leaving the ``with`` block)
            waits for runs in progress before recording them as failed (in
            memory) or leaving them for the next runtime (on a durable store).
        retention: Which ended runs to keep: a :class:`RetentionPolicy` (or
            its fields as a mapping), applied in the background while the
            runtime runs. ``None`` (the default) keeps every run, and memory
            grows with them.
        role: What this runtime does on a shared store (SQLite or PostgreSQL):
            ``"both"`` (the default) starts runs and runs them, and takes
            runs others started; ``"worker"`` runs the runs of the workflows
            it registered, whoever started them, and starts none;
            ``"client"`` starts, queries, waits on, resumes and cancels runs,
            and runs none. On a memory store only ``"both"`` makes sense.
        async_steps: Where ``async def`` step bodies run. ``"private"`` (the
            default): on one event loop thread of the runtime's own, whatever
            loop the application runs. ``"app"``: on the event loop running
            where the runtime is started (``start()`` or ``astart()`` called
            inside a coroutine, ``async with Runtime(...)``), so that a step
            can use clients made on the application's loop; an event loop
            object: on that loop. With the application's loop, stop the
            runtime with ``astop()`` (or ``async with``) and use the ``a``
            calls from the loop: a blocking call made on the loop's thread
            would wait for steps that need that very loop.

    Raises:
        TypeError: for a ``store`` that is none of the above, a
            ``max_concurrent_runs``, ``max_step_threads`` or ``max_pending_runs``
            that is not an ``int``, a ``stop_timeout`` that is not a number, or a
            ``retention`` that is neither a policy nor a mapping.
        ValueError: for a ``max_concurrent_runs``, ``max_step_threads`` or
            ``max_pending_runs`` below 1, a ``max_concurrent_runs`` above
            2**31 - 1, a negative or NaN ``stop_timeout``, an
            empty store location or a URL of another scheme (``memory://``,
            ``mysql://``), a retention policy pydantic refuses, an
            unknown ``role``, a role other than ``"both"`` on a memory store,
            or an ``async_steps`` that is none of the above.
    """

    def __init__(
        self,
        *,
        store: SnapshotStore | str | os.PathLike[str] | None = None,
        max_concurrent_runs: int | None = None,
        max_step_threads: int = DEFAULT_MAX_STEP_THREADS,
        max_pending_runs: int | None = None,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        retention: RetentionPolicy | Mapping[str, Any] | None = None,
        role: RoleName = "both",
        async_steps: AsyncSteps = "private",
    ) -> None:
        if not isinstance(async_steps, asyncio.AbstractEventLoop) and async_steps not in (
            "private",
            "app",
        ):
            raise ValueError(
                f"async_steps must be 'private', 'app' or an event loop, got {async_steps!r}"
            )
        self._async_steps = async_steps
        if role not in get_args(RoleName):
            raise ValueError(f"role must be 'both', 'worker' or 'client', got {role!r}")
        if max_concurrent_runs is not None:
            _at_least_one("max_concurrent_runs", max_concurrent_runs)
            if max_concurrent_runs > MAX_LIMIT:  # a shared store keeps it as a worker's capacity
                raise ValueError(
                    f"max_concurrent_runs must be at most {MAX_LIMIT:,}, got {max_concurrent_runs}"
                )
        checked = check_timeout(stop_timeout, "stop_timeout", forever=FOREVER, allow_none=False)
        if stop_timeout < 0:
            raise ValueError(f"stop_timeout must not be negative, got {stop_timeout}")
        self._max_concurrent_runs = max_concurrent_runs
        # Every workflow registered, by id and fingerprint (a test kit recovering from a
        # crash registers them again on the runtime that takes over).
        self._registered_workflows: dict[tuple[str, str], Workflow[Any, Any]] = {}
        self._max_step_threads = _at_least_one("max_step_threads", max_step_threads)
        self._max_pending_runs = (
            None
            if max_pending_runs is None
            else _at_least_one("max_pending_runs", max_pending_runs)
        )
        self._retention = _retention(retention)
        assert checked is not None  # a number, at most ten years
        self._stop_timeout = checked
        self._lock = threading.Lock()
        self._stopping: _Stopping | None = None  # the stop under way, or done
        self._plans: dict[str, ExecutionPlan] = {}
        # Schedules defined here, by id, with their workflow's id: stored when the runtime starts.
        self._schedules: dict[str, tuple[str, Schedule]] = {}
        self._scheduler: Scheduler | None = None
        self._store_location: str | Path | None = None  # opened by start()
        if store is None or store == "memory":
            if role != "both":
                raise ValueError(
                    f"role {role!r} needs a store that runtimes share (SQLite or PostgreSQL); "
                    "a memory store is this runtime's alone"
                )
            self._host = RunHost(MemoryStore())
        elif isinstance(store, str | os.PathLike):
            self._host = RunHost(None, role)
            self._store_location = str(store) if is_postgres_url(store) else path_from_url(store)
        elif isinstance(store, type):
            raise TypeError(
                f"store must be a store object, got the class {store.__name__} itself "
                f"(make one: store={store.__name__}(...))"
            )
        elif provides(store, SnapshotStore):  # not isinstance: see provides()
            self._host = RunHost(store, role)
        else:
            raise TypeError(
                "store must be 'memory', a SQLite path or sqlite:/// URL, or a store object "
                f"(such as MemoryStore or SQLiteStore), got {type(store).__name__}"
            )

    def __repr__(self) -> str:
        return f"<Runtime {self._host.state}>"

    @property
    def is_running(self) -> bool:
        """Whether the runtime is started and not yet stopping."""
        return self._host.state == "running"

    def health(self, patience: float = HEALTH_PATIENCE) -> RuntimeHealth:
        """Whether the runtime works, and can record runs now: for a daemon's health checks.

        It reads what the runtime knows in memory, with no call to the store, so
        it answers at once, from any thread or an event loop, even while the
        store cannot be reached. ``live`` says the runtime runs (a liveness
        probe: restart the process when it is false); ``ready`` that it can
        record runs now (a readiness probe: it may recover by itself, a
        restart would not help an unreachable database).

        Args:
            patience: Seconds every write to the store may fail before the
                runtime is not ``ready``: a blip (a lock held a moment, a
                connection cut and made again) does not flap the probe.

        Returns:
            The state, ``live``, ``ready``, what is wrong (a sentence each), how long
            every write has failed and when the lease was last renewed.

        Raises:
            TypeError: if ``patience`` is not a number.
            ValueError: if it is NaN.
        """
        checked = check_timeout(patience, "patience", forever=math.inf, allow_none=False)
        patience = max(0.0, checked if checked is not None else math.inf)
        host = self._host
        state = host.state
        problems: list[str] = []
        if state != "running":
            if host.failure is not None:
                problems.append(f"the runtime stopped itself: {host.failure}")
            else:
                problems.append(
                    "the runtime has not started" if state == "new" else f"the runtime is {state}"
                )
            return RuntimeHealth(state=state, live=False, ready=False, problems=tuple(problems))
        failing: Callable[[], tuple[float, str] | None] | None = getattr(
            host.store, "writes_failing", None
        )
        failure = None if failing is None else failing()
        failing_for = None if failure is None else failure[0]
        refused = host.writes_refused()
        if refused is not None:
            problems.append(refused)
        elif failure is not None and failure[0] >= patience:
            said = f" (its last try: {failure[1]})" if failure[1] else ""
            problems.append(
                f"every write to the run store {host.store!r} has failed for "
                f"{failure[0]:.1f} s{said}: what it has not recorded waits in memory"
            )
        system = host.system
        renewed_ago = None if system is None else system.lease_renewed_ago()
        lease = getattr(host.store, "lease", None)
        if renewed_ago is not None and isinstance(lease, int | float) and renewed_ago > lease:
            problems.append(
                f"its lease on the store was last renewed {renewed_ago:.1f} s ago, past its "
                f"lease of {lease:g} s: other runtimes may take its runs, and its writes of "
                "them are fenced off"
            )
        return RuntimeHealth(
            state=state,
            live=True,
            ready=not problems,
            problems=tuple(problems),
            writes_failing_for=failing_for,
            lease_renewed_ago=renewed_ago,
        )

    def start(self) -> Runtime:
        """Start the actors. Starting a running runtime does nothing.

        Returns:
            The runtime itself.

        Raises:
            RuntimeStoppedError: if the runtime was stopped: a runtime runs once.
            StoreError: if the store cannot be opened: a SQLite file that is not
                writable, a directory, not a SQLite file; a PostgreSQL server
                that cannot be reached, a database that does not exist, a failed
                login, the extra not installed; or a store written by a newer
                callboard. The message says which.
            ValueError: with ``async_steps="app"``, if no event loop runs here;
                or if the store object given is another runtime's that has not
                stopped (give each runtime its own, or the same path or URL).
        """
        return self._start(_running_loop())

    async def astart(self) -> Runtime:
        """Start the actors without blocking the event loop; see :meth:`start`.

        With ``async_steps="app"``, async step bodies run on the loop awaiting this.

        Returns:
            The runtime itself.
        """
        loop = asyncio.get_running_loop()
        starting: concurrent.futures.Future[bool] = concurrent.futures.Future()

        def start() -> None:
            try:
                started = self._started_here(loop)
            except BaseException as exc:
                starting.set_exception(exc)
            else:
                starting.set_result(started)

        _on_a_thread_of_its_own("callboard-start", start)
        try:
            await asyncio.shield(asyncio.wrap_future(starting))
        except asyncio.CancelledError:
            # The start goes on in its thread, and nobody would stop what it starts:
            # a server cancelled during its startup left the runtime claiming runs.
            # Told in the thread that ends the start (or here, if it has ended).
            starting.add_done_callback(self._undo_start)
            raise
        return self

    def _undo_start(self, starting: concurrent.futures.Future[bool]) -> None:
        """Stop what a cancelled :meth:`astart` started (on a thread: it may wait for runs)."""
        if starting.cancelled() or starting.exception() is not None or not starting.result():
            return
        emit(logging.INFO, "runtime_start_cancelled", hint="the runtime it started is stopped")
        threading.Thread(target=self.stop, name="callboard-start-undone").start()

    def _start(self, running: asyncio.AbstractEventLoop | None) -> Runtime:
        self._started_here(running)
        return self

    def _started_here(self, running: asyncio.AbstractEventLoop | None) -> bool:
        """Start the actors; whether this call started them (not one before it)."""
        step_loop = self._step_loop(running)
        host = self._host
        with self._lock:
            if host.state == "running":
                return False
            if host.state != "new":
                raise RuntimeStoppedError("this runtime was stopped; create a new Runtime")
            if host.store is None:
                assert self._store_location is not None
                host.store = open_store(self._store_location)
            else:
                _take_store(self, host.store)  # a store object given: one runtime's at a time
            try:
                system = self._started_system(host, step_loop)
            except BaseException:
                _let_go_of_store(self, host.store)
                raise
            host.system = system
            host.state = "running"
            _started.add(self)
            if host.role != "client":  # a client starts what it is told to, nothing on its own
                self._scheduler = Scheduler(host, book_for(host.store), self._registered)
                self._scheduler.start()
        return True

    def _started_system(self, host: RunHost, step_loop: Any) -> ActorSystem:
        """An actor system on the host's store, joined to it, with the schedules put."""
        from actors.system import ActorSystem

        assert host.store is not None
        system = ActorSystem(
            host.store,
            max_concurrent_runs=self._max_concurrent_runs,
            max_step_threads=self._max_step_threads,
            max_pending_runs=self._max_pending_runs,
            retention=self._retention,
            on_give_up=self._gave_up,
            role=host.role,
            step_loop=step_loop,
        )
        try:
            # Joins the store: it may fail.
            system.start_claiming(self._registered, self._registered_versions)
            book = book_for(host.store)
            for workflow_id, schedule in self._schedules.values():
                _put_schedule(book, _schedule_row(workflow_id, schedule))
        except BaseException:
            system.shutdown(0)  # nothing left running; the store is closed too
            raise
        return system

    def stop(self, timeout: float | None = None) -> None:
        """Stop the runtime and every actor and thread it started.

        Runs in progress get ``timeout`` seconds (the runtime's ``stop_timeout``
        when omitted) to end; those still going are then recorded as ``failed``
        with a ``RuntimeStoppedError`` (in memory) or halted and left to the next
        runtime (on a durable store). In memory, once no run executes and those
        left only wait on timers due after ``timeout`` (a sleep, a queue's rate
        window), the stop waits no longer: none could end in time. Results stay
        readable after the stop.
        Stopping a stopped runtime does nothing.

        A call while another thread's stop waits for runs in progress returns
        at once: with ``timeout=0`` it makes that stop halt them now (as a
        second Ctrl-C does to ``callboard worker``); with any other it does nothing.

        The stop itself runs on a thread of its own (``callboard-stop``), which
        a signal cannot interrupt. A call made while its own thread is inside
        another call of callboard's (a signal handler that interrupted a
        ``start_async()``, a ``wait()`` or a write on the main thread) hands the
        stop to another thread and returns at once, as the interrupted call may
        hold what the stop needs; that call then goes on, and raises
        ``RuntimeStoppedError`` if the stop got there first. A call whose wait
        is interrupted (``KeyboardInterrupt``) leaves the stop going on. A later
        call, while nobody waits for such a stop, waits for it to end, its own
        ``timeout`` cutting the wait for runs in progress short.

        Args:
            timeout: Seconds to wait for runs in progress.

        Raises:
            BlockingCallError: if called inside a step or hook of one of this
                runtime's runs while it runs, since the stop would wait for that
                run while the run waits for the stop; nothing is stopped.
        """
        timeout = check_timeout(timeout, forever=FOREVER)
        if _inside_callboard_here():
            # A signal handler (or a callback) on a thread that is in the middle of a call
            # of ours: that call may hold a lock the stop takes (the store's, this
            # runtime's), and it cannot go on before the handler returns. Nothing here may
            # wait, not even for this runtime's lock; a fresh context: the interrupted call's
            # (a step's, on an app loop) is not the stop's.
            stop = functools.partial(self._stop_unattended, timeout)
            thread = threading.Thread(
                target=contextvars.Context().run, args=(stop,), name="callboard-stop-handed"
            )
            thread.start()
            return
        self._refuse_inside_own_run("stop")
        begun = self._begin_stop(timeout, attended=True)
        if begun is not None:
            stopping, taken_over = begun
            stopping.wait(self._host.system, timeout, taken_over=taken_over)

    def _stop_unattended(self, timeout: float | None) -> None:
        """A stop handed over by :meth:`stop`: begun here, and waited for by a later call."""
        self._begin_stop(timeout, attended=False)

    def _begin_stop(
        self, timeout: float | None, *, attended: bool
    ) -> tuple[_Stopping, bool] | None:
        """Begin the stop on its own thread; what the caller waits for (``None``: nothing).

        With it, whether the caller takes over a stop that another call began.

        ``attended``: whether the caller waits for the stop to end. A stop in
        progress that nobody waits for (handed over from a signal handler, or
        whose caller was interrupted) is waited for by the next attended call.
        """
        host = self._host
        with self._lock:
            if host.state != "running":
                stopping = self._stopping
                if host.state == "stopping" and timeout == 0 and host.system is not None:
                    host.system.hurry()
                host.state = "stopped" if host.state == "new" else host.state
                if stopping is None or stopping.done.is_set() or not attended:
                    return None
                if stopping.attended:
                    return None  # another caller waits for it: see stop()
                return stopping, True
            system = host.system
            assert system is not None
            # Whether the caller blocks the async steps' loop: decided here, not on the
            # stop's thread (see ActorSystem.shutdown).
            on_step_loop = system.loop.is_current()
            stopping = _Stopping()
            scheduler, previous = self._scheduler, self._stopping
            shut_down = functools.partial(
                self._shut_down, system, scheduler, timeout, on_step_loop, stopping
            )
            # Not a daemon: an interpreter that exits while the stop goes on waits for it,
            # so that its runs are halted and its store closed (bounded: see shutdown).
            thread = threading.Thread(
                target=contextvars.copy_context().run,
                args=(self._stop_thread, stopping, shut_down),
                name="callboard-stop",
            )
            # Everything made first, the state changed last: an interrupt (Ctrl-C) before
            # this leaves the runtime running, for the next stop().
            host.state = "stopping"
            self._stopping, self._scheduler = stopping, None
        try:
            thread.start()
            stopping.thread = thread
        except RuntimeError:  # no new thread at the interpreter's exit: stop here
            stopping.began = True
            shut_down()
        except BaseException:
            # Interrupted (Ctrl-C) as the thread was being started: if it never began, the
            # runtime is running again, for the next stop() (which waited for ever for a
            # thread that would never come); if it began, the stop goes on unattended.
            with self._lock:
                if not stopping.began:
                    stopping.abandoned = True
                    host.state = "running"
                    self._stopping, self._scheduler = previous, scheduler
                else:
                    stopping.thread = thread  # joined by the call that waits for it
            raise
        return stopping, False

    def _stop_thread(self, stopping: _Stopping, shut_down: Callable[[], None]) -> None:
        """The stop's thread: ``shut_down()``, unless its caller, interrupted, gave it up first."""
        with self._lock:
            if stopping.abandoned:
                return
            stopping.began = True
        shut_down()

    def _shut_down(
        self,
        system: ActorSystem,
        scheduler: Scheduler | None,
        timeout: float | None,
        on_step_loop: bool,
        stopping: _Stopping,
    ) -> None:
        """The stop's work, on its thread: the actors, the call threads, the store."""
        host = self._host
        try:
            if scheduler is not None:
                scheduler.stop()
            from actors.system import SHUTDOWN_GRACE

            budget = self._stop_timeout if timeout is None else timeout
            # What stop may take in all (promise 6): its timeout, and the grace of the shutdown.
            deadline = time.monotonic() + budget + SHUTDOWN_GRACE
            try:
                system.shutdown(budget, on_step_loop=on_step_loop)
            finally:
                host.state = "stopped"
                left = deadline - time.monotonic()
                host.close_calls(None if math.isinf(left) else max(0.0, left))
                if host.store is not None:
                    close_book(host.store)
                    _let_go_of_store(self, host.store)
        except BaseException as exc:
            stopping.error = exc
        finally:
            stopping.done.set()

    async def astop(self, timeout: float | None = None) -> None:
        """Stop the runtime without blocking the event loop; see :meth:`stop`.

        Args:
            timeout: Seconds to wait for runs in progress.

        Raises:
            BlockingCallError: if awaited inside a step or hook of one of this
                runtime's runs (see :meth:`stop`).
        """
        timeout = check_timeout(timeout, forever=FOREVER)
        self._refuse_inside_own_run("astop")
        stopped: concurrent.futures.Future[None] = concurrent.futures.Future()

        def stop() -> None:
            try:
                self.stop(timeout)
            except BaseException as exc:
                stopped.set_exception(exc)
            else:
                stopped.set_result(None)

        # Not on the loop's default executor: the application's own blocking calls (a
        # wait for a run, moved off the loop with asyncio.to_thread) may fill it, and
        # the stop that would end them waited behind them for ever.
        _on_a_thread_of_its_own("callboard-stop", stop)
        # Shielded: a cancelled astop() leaves the stop going on (it cannot be undone),
        # and its future for the thread to settle.
        await asyncio.shield(asyncio.wrap_future(stopped))

    def _refuse_inside_own_run(self, call: str) -> None:
        """Refuse a stop from a step or hook of this runtime's: it would wait for its own run.

        A runtime stopping or stopped already has nothing to wait for: such a
        call returns at once, as from anywhere.

        Raises:
            BlockingCallError: if the caller runs such a step or hook.
        """
        run_id, owner = served()
        host = self._host
        system = host.system
        if (
            run_id is None
            or system is None
            or host.state != "running"
            or owner not in (system.pool, system.hooks)
        ):
            return
        raise BlockingCallError(
            f"{call}() was called inside a step or hook of run {run_id!r} of this runtime: "
            "it waits for the runs in progress, that one included, which cannot end before "
            f"the call returns. Stop the runtime from outside its runs (a thread of your "
            f"own, threading.Thread(target=rt.stop).start(), does it)",
            run_id=run_id,
        )

    def _step_loop(
        self, running: asyncio.AbstractEventLoop | None
    ) -> asyncio.AbstractEventLoop | None:
        """The loop async step bodies run on: ``None`` for the runtime's private one."""
        chosen = self._async_steps
        if chosen == "private":
            return None
        if chosen == "app":
            if running is None:
                raise ValueError(
                    "async_steps='app' runs async steps on the application's event loop, "
                    "but no event loop runs here: start the runtime inside a coroutine "
                    "(await rt.astart(), async with Runtime(...)), or pass the loop"
                )
            return running
        assert isinstance(chosen, asyncio.AbstractEventLoop)
        return chosen

    def _registered(self) -> dict[str, ExecutionPlan]:
        """The workflows this runtime runs, by id (none, for a client)."""
        if self._host.role == "client":
            return {}
        return dict(self._plans)  # a copy under the GIL; called with self._lock held too

    def _forked(self) -> None:
        """In a forked child (see ``_after_fork``): stopped here, every call refused with why."""
        self._lock = threading.Lock()
        self._stopping = None  # the parent's, if any: its thread is not in the child
        self._scheduler = None
        self._host.forked()

    def _gave_up(self, reason: str) -> None:
        """The actors failed too often to go on: stop, and say why to every later call."""
        self._host.failure = reason
        self.stop(timeout=0)

    def __enter__(self) -> Runtime:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Runtime:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.astop()

    def register(self, workflow: W) -> W:
        """Bind a committed workflow to this runtime.

        Several definitions of one workflow id may be registered: each is kept
        by the fingerprint of its plan (see ``create_workflow(version=...)``).
        New runs use the one registered last; a run already started goes on
        (resumes, wakes, is recovered) on the one with its own fingerprint, and
        stays as it is while none is registered (``WorkflowVersionError`` from
        ``resume``, a warning from recovery).

        Args:
            workflow: A committed workflow.

        Returns:
            The workflow bound to this runtime: its runs and queries go here.

        Raises:
            TypeError: if ``workflow`` is not a workflow (a step, say).
            WorkflowDefinitionError: if the workflow is not committed, or its
                version label names another definition registered here.
        """
        plan = _plan_of(workflow)
        with self._lock:
            versions = self._host.versions.get(plan.workflow_id, {})
            if plan.version is not None:
                for other in versions.values():
                    if other.version == plan.version and other.fingerprint != plan.fingerprint:
                        raise WorkflowDefinitionError(
                            f"workflow {plan.workflow_id!r}: version {plan.version!r} is already "
                            f"registered here with another plan (fingerprint {other.fingerprint}, "
                            f"this one's is {plan.fingerprint}): give the new definition a new "
                            "version label"
                        )
            known = self._plans.get(plan.workflow_id)
            new_shape = plan.fingerprint not in versions
            # Copied, never changed in place: other threads read it without the lock.
            self._host.versions = {
                **self._host.versions,
                plan.workflow_id: {**versions, plan.fingerprint: plan},
            }
            self._plans[plan.workflow_id] = plan  # new runs use the newest definition
            self._registered_workflows[plan.workflow_id, plan.fingerprint] = workflow
            system = self._host.system if self._host.state == "running" else None
        if system is not None and (known is None or new_shape):
            # A new workflow, or a new shape of one: runs waiting for it may go on now.
            system.workflows_changed(sorted(self._registered()))
            if known is None:
                self._poke_scheduler()  # the store may have schedules of this workflow
        for schedule in workflow.schedules:
            self._define_schedule(plan.workflow_id, schedule)
        return workflow._bound_to(self, self._host)

    def _registered_versions(self) -> Mapping[str, Mapping[str, ExecutionPlan]]:
        """Every registered definition, by workflow id then fingerprint (none, for a client)."""
        if self._host.role == "client":
            return {}
        return self._host.versions  # replaced, never changed in place, by register()

    # --- schedules --------------------------------------------------------------------

    def schedule(
        self,
        workflow: Workflow[Any, Any],
        *,
        cron: str,
        input_data: BaseModel | Mapping[str, Any] | None = None,
        timezone: str = "UTC",
        schedule_id: str | None = None,
        catch_up: CatchUp = "latest",
        overlap: Overlap = "skip",
    ) -> Schedule:
        """Start a run of ``workflow`` at every tick of a cron expression, from now on.

        The workflow is registered here if it is not yet. The schedule is
        kept in the store (from :meth:`start`, or at once on a running
        runtime), where every runtime on the store sees it: on a shared
        store, each tick starts exactly one run, however many runtimes
        (with the role ``both`` or ``worker``, and the workflow registered)
        fire it; its id is ``schedule:<schedule_id>:<tick in UTC>``. A
        ``client`` runtime defines, lists, pauses and deletes schedules but
        fires none. Defining a schedule that the store already has changes
        its definition and keeps its state (paused, its last tick).

        Args:
            workflow: A committed workflow.
            cron: A cron expression (five fields, or six with seconds first).
            input_data: Each run's input, checked against the workflow's input
                schema here.
            timezone: The IANA time zone the expression is read in.
            schedule_id: The schedule's id; the workflow's id when omitted.
            catch_up: Ticks missed while no runtime could fire them:
                ``"latest"`` (one run for the newest), ``"skip"`` or ``"all"``.
            overlap: A tick while the previous run goes on: ``"skip"`` or
                ``"allow"``.

        Returns:
            The :class:`Schedule`, with its id and its input as plain data.

        Raises:
            WorkflowDefinitionError: for an invalid cron expression, time zone
                or policy, a workflow that is not committed, or a schedule id
                this runtime has for another workflow.
            InvalidInputError: if ``input_data`` does not fit the input schema.
            ImportError: if the extra ``callboard[cron]`` is not installed.
            StoreError: if the store refuses the schedule (a running runtime).
            TypeError: if ``workflow`` is not a workflow (a step, say).
        """
        plan = _plan_of(workflow)
        spec = bound_schedule(
            Schedule(
                cron=cron,
                input_data=input_data,
                timezone=timezone,
                schedule_id=schedule_id,
                catch_up=catch_up,
                overlap=overlap,
            ),
            plan.workflow_id,
            plan.input_schema,
        )
        self.register(workflow)
        self._define_schedule(plan.workflow_id, spec)
        return spec

    def _define_schedule(self, workflow_id: str, schedule: Schedule) -> None:
        assert schedule.schedule_id is not None
        with self._lock:
            known = self._schedules.get(schedule.schedule_id)
            if known is not None and known[0] != workflow_id:
                raise WorkflowDefinitionError(
                    f"schedule {schedule.schedule_id!r} is already defined here for workflow "
                    f"{known[0]!r}"
                )
            if self._host.state in ("stopping", "stopped"):
                raise RuntimeStoppedError("the runtime is stopped: define schedules on a new one")
            self._schedules[schedule.schedule_id] = (workflow_id, schedule)
            running = self._host.state == "running"
        if running:
            _put_schedule(self._book(), _schedule_row(workflow_id, schedule))
            self._poke_scheduler()

    def _book(self) -> ScheduleBook:
        store = self._host.store
        if store is None:
            raise RuntimeStoppedError(
                "the runtime is not started: its SQLite store is opened by start()"
            )
        return book_for(store)

    def _poke_scheduler(self) -> None:
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.poke()

    def schedules(self) -> list[ScheduleInfo]:
        """Every schedule in the store, by id, with its next fire time and its last runs.

        Includes the schedules other runtimes on the store defined.

        Raises:
            RuntimeStoppedError: before a SQLite or PostgreSQL runtime is started.
            StoreError: if the store cannot be read.
        """
        book, store = self._book(), self._host.store
        assert store is not None
        now = _clock.time()
        return [describe(row, store.load, now) for row in book.all()]

    def pause_schedule(self, schedule_id: str) -> bool:
        """Pause a schedule, for every runtime on the store: it fires nothing until resumed.

        Returns:
            Whether the store has such a schedule.

        Raises:
            TypeError: if ``schedule_id`` is not a ``str``.
            ValueError: if it is text no store can hold (a NUL, a lone surrogate).
        """
        check_lookup_name(schedule_id, "schedule_id")
        return self._book().set_paused(schedule_id, True, _clock.time())

    def resume_schedule(self, schedule_id: str) -> bool:
        """Resume a paused schedule: it fires from its next tick on.

        The ticks that passed while it was paused are skipped, whatever its
        ``catch_up`` policy (which is for ticks missed while no runtime ran).

        Returns:
            Whether the store has such a schedule.

        Raises:
            TypeError: if ``schedule_id`` is not a ``str``.
            ValueError: if it is text no store can hold (a NUL, a lone surrogate).
        """
        check_lookup_name(schedule_id, "schedule_id")
        found = self._book().set_paused(schedule_id, False, _clock.time())
        self._poke_scheduler()
        return found

    def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule from the store; its runs are kept.

        A program that defines it again (``runtime.schedule``, or a workflow
        with ``schedule=`` registered on a runtime that starts) puts it back.

        Returns:
            Whether the store had such a schedule.

        Raises:
            TypeError: if ``schedule_id`` is not a ``str``.
            ValueError: if it is text no store can hold (a NUL, a lone surrogate).
            RuntimeStoppedError: before a SQLite or PostgreSQL runtime is started
                (nothing is forgotten: the schedule is still stored at the start).
        """
        check_lookup_name(schedule_id, "schedule_id")
        book = self._book()  # before anything is forgotten: it raises before the start
        with self._lock:
            self._schedules.pop(schedule_id, None)
        return book.delete(schedule_id)

    async def aschedule(
        self,
        workflow: Workflow[Any, Any],
        *,
        cron: str,
        input_data: BaseModel | Mapping[str, Any] | None = None,
        timezone: str = "UTC",
        schedule_id: str | None = None,
        catch_up: CatchUp = "latest",
        overlap: Overlap = "skip",
    ) -> Schedule:
        """Await :meth:`schedule` without blocking the event loop (it writes to the store).

        Same arguments, result and errors.
        """
        return await offload(
            self._host,
            functools.partial(
                self.schedule,
                workflow,
                cron=cron,
                input_data=input_data,
                timezone=timezone,
                schedule_id=schedule_id,
                catch_up=catch_up,
                overlap=overlap,
            ),
        )

    async def aschedules(self) -> list[ScheduleInfo]:
        """Await :meth:`schedules` without blocking the event loop; same result and errors."""
        return await offload(self._host, self.schedules)

    async def apause_schedule(self, schedule_id: str) -> bool:
        """Await :meth:`pause_schedule` without blocking the event loop."""
        return await offload(self._host, self.pause_schedule, schedule_id)

    async def aresume_schedule(self, schedule_id: str) -> bool:
        """Await :meth:`resume_schedule` without blocking the event loop."""
        return await offload(self._host, self.resume_schedule, schedule_id)

    async def adelete_schedule(self, schedule_id: str) -> bool:
        """Await :meth:`delete_schedule` without blocking the event loop."""
        return await offload(self._host, self.delete_schedule, schedule_id)

    async def aregister(self, workflow: W) -> W:
        """Await :meth:`register` without blocking the event loop.

        On a shared store, registering on a running runtime tells the store
        (a write); the twin does that on a worker thread. Same result and errors.
        """
        return await offload(self._host, self.register, workflow)

    @property
    def store(self) -> SnapshotStore | None:
        """The store runs are kept in (``None`` for a SQLite file before :meth:`start`)."""
        return self._host.store


def _put_schedule(book: ScheduleBook, row: ScheduleRow) -> None:
    """Store a schedule's definition, and say so if that changed what the store held.

    What it held may be another process's, or this one's before a redeploy: the
    definition written last wins.
    """
    known = book.get(row.schedule_id)
    book.put(row)
    if known is None:
        return
    before = (known.workflow_id, known.cron, known.timezone)
    after = (row.workflow_id, row.cron, row.timezone)
    if before != after:
        emit(
            logging.WARNING,
            "schedule_redefined",
            schedule_id=row.schedule_id,
            before=" ".join(before),
            after=" ".join(after),
            hint="the definition written last wins, for every process on the store; "
            "a new cron or time zone fires from its next tick, with nothing caught up",
        )


def _schedule_row(workflow_id: str, schedule: Schedule) -> ScheduleRow:
    assert schedule.schedule_id is not None
    return ScheduleRow(
        schedule_id=schedule.schedule_id,
        workflow_id=workflow_id,
        cron=schedule.cron,
        timezone=schedule.timezone,
        input=json.dumps(schedule.input_data),
        catch_up=schedule.catch_up,
        overlap=schedule.overlap,
        paused=False,
        created_at=_clock.time(),
    )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _plan_of(workflow: object) -> ExecutionPlan:
    """The plan of a committed workflow given to ``register`` or ``schedule``."""
    from runtime._step import Step
    from runtime._workflow import Workflow  # imports this module

    if isinstance(workflow, Step):
        raise TypeError(
            "expected a workflow (create_workflow(...)....commit()), got a step: "
            "put it in a workflow with .then(step)"
        )
    if not isinstance(workflow, Workflow):
        raise TypeError(
            f"expected a workflow (create_workflow(...)....commit()), got {type(workflow).__name__}"
        )
    return workflow.plan


def _at_least_one(name: str, value: object) -> int:
    # bool is an int, but True threads is a mistake, not a number.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def _retention(value: object) -> RetentionPolicy | None:
    if value is None or isinstance(value, RetentionPolicy):
        return value
    if isinstance(value, Mapping):
        return RetentionPolicy.model_validate(value)
    raise TypeError(f"retention must be a RetentionPolicy or a mapping, got {type(value).__name__}")


_default_lock = threading.Lock()
_default: Runtime | None = None

_stores_taken: dict[int, weakref.ref[Runtime]] = {}
"""The runtime each store object given to one is used by, by the object's ``id``.

While that runtime has not stopped it holds its store, so the ``id`` is that store's.
"""

_stores_lock = threading.Lock()


def _take_store(runtime: Runtime, store: SnapshotStore) -> None:
    """Note that ``runtime`` starts on ``store`` (an object given to it); refuse one in use.

    Two runtimes on one store object shared its connections, threads and state:
    the first to stop closed the store under the other, whose runs never ended.
    """
    with _stores_lock:
        taken = _stores_taken.get(id(store))
        other = None if taken is None else taken()
        if (
            other is not None
            and other is not runtime
            and other._host.store is store
            and other._host.state != "stopped"
        ):
            raise ValueError(
                f"this store object ({type(store).__name__}) is in use by another Runtime "
                "that has not stopped; give each runtime a store object of its own, or the "
                "same path or URL (runtimes on one SQLite file or PostgreSQL database share "
                "its runs)"
            )
        _stores_taken[id(store)] = weakref.ref(runtime)


def _let_go_of_store(runtime: Runtime, store: SnapshotStore) -> None:
    """``runtime`` no longer uses ``store`` (it stopped, or its start failed)."""
    with _stores_lock:
        taken = _stores_taken.get(id(store))
        if taken is not None and taken() in (runtime, None):
            del _stores_taken[id(store)]


_started: weakref.WeakSet[Runtime] = weakref.WeakSet()
"""Every runtime started in this process (a forked child forgets them: see ``_after_fork``)."""

_left_by_the_parent: list[Any] = []
"""In a forked child, the stores of the parent's runtimes: kept, so nothing here closes them."""


class _ForkedStore:
    """Stands in, in a forked child, for the store of a runtime started before the fork."""

    __slots__ = ("_reason",)

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def __getattr__(self, name: str) -> Any:
        raise RuntimeStoppedError(self._reason)


def message_protocol() -> tuple[Mapping[str, frozenset[str]], frozenset[str]]:
    """For the test kit: which actors handle each message, and which messages are calls.

    By name: the runtime reaches the actors only through here (see ``tests/test_layers.py``).
    """
    from actors.system import CALL_MESSAGES, MESSAGE_RECEIVERS

    return MESSAGE_RECEIVERS, CALL_MESSAGES


def _after_fork() -> None:
    """In a forked child: the runtimes started before the fork stop here, and say why.

    The child has one thread: the one that forked. Locks another thread held
    at the fork stay held in the child for ever, so the ones a child may take
    again are made anew.
    """
    global _default_lock, _stores_lock  # noqa: PLW0603 - a lock copied locked is useless
    _default_lock = threading.Lock()
    _stores_lock = threading.Lock()
    _stores_taken.clear()  # the parent's runtimes hold them; the child's may not use them
    for runtime in list(_started):
        runtime._forked()
    _started.clear()


os.register_at_fork(after_in_child=_after_fork)


@overload
def default_runtime() -> Runtime: ...


@overload
def default_runtime(*, start: Literal[True]) -> Runtime: ...


@overload
def default_runtime(*, start: bool) -> Runtime | None: ...


def default_runtime(*, start: bool = True) -> Runtime | None:
    """The process-wide runtime that unbound workflows use, started on first use.

    It is stopped when the interpreter exits. If it has been stopped, the next
    call starts a new one (the old one's results stay readable through it only
    if kept: callboard lets go of a stopped one once it is replaced).

    Args:
        start: Start it if there is none; with ``False``, return ``None`` instead.
    """
    global _default  # noqa: PLW0603 - one runtime per process, created lazily
    with _default_lock:
        if _default is None or _default._host.state in ("stopping", "stopped"):
            if not start:
                return _default
            if _default is not None:
                # Stopped: the exit has nothing left to stop, and its registration kept
                # the runtime, with every run its store held, for the life of the process.
                atexit.unregister(_default.stop)
            _default = Runtime().start()
            atexit.register(_default.stop)
        return _default
