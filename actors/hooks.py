"""The workflow hooks: ``on_start`` as a run starts; ``on_finish`` and ``on_error`` as it ends."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import pykka

from actors._dispatch import tell_safely
from actors.messages import SnapshotTaken
from runtime._model import RunOutcome, RunStatus
from runtime._plan import ExecutionPlan
from runtime._snapshot import Snapshot, copy_plain, public_steps
from runtime._stores.base import SnapshotRecord
from runtime._sync import on_run_waits, serving_hook
from runtime._tracing import emit

__all__ = ["HookRunner", "outcome_of"]

HOOK_THREADS: Final = 2
"""Threads that call hooks: a slow hook holds up the ends of other runs with hooks, no more.

A hook that waits for another run (``run.start()``, ``run.wait()``) does not count
meanwhile: that run's own hooks may need a thread to end, so one more is started
when hooks are queued and every thread counted is busy."""


def outcome_of(snapshot: Snapshot) -> RunOutcome:
    """What the hooks receive: the run at its end, as public data."""
    return RunOutcome.model_validate(
        {
            "run_id": snapshot["run_id"],
            "workflow_id": snapshot["workflow_id"],
            "status": snapshot["status"],
            "input": snapshot["input"],
            "resource_id": snapshot.get("resource_id"),
            "result": snapshot["result"],
            "error": snapshot["error"],
            "steps": public_steps(snapshot["steps"]),
            "state": snapshot["state"],
            "request_context": snapshot["request_context"] or {},
        }
    )


class HookRunner:
    """Calls a workflow's hooks off the actors' threads, then records the run's end.

    The terminal snapshot is recorded only after the hooks return, so whoever
    sees a run's final result (``run.start()`` returning, a query) can count
    on its hooks having run. An exception in a hook is logged and changes
    nothing. Runs of workflows without hooks pay nothing: their end is
    recorded at once, on the caller's thread.
    """

    def __init__(self) -> None:
        self._executor: _HookThreads | None = None
        self._lock = threading.Lock()
        self._pending: set[concurrent.futures.Future[None]] = set()
        # Runs whose on_start is called now: their end's hooks wait for it.
        self._starting: dict[str, concurrent.futures.Future[None]] = {}
        # The ends decided and not yet handed to the registry, their hooks under way.
        self._ends: dict[int, SnapshotTaken] = {}
        self.record_late: Callable[[SnapshotRecord], bool] | None = None
        """For a store in memory: records an end whose hooks returned once the registry
        had stopped (the stop fails what it finds unfinished, the end told or not), and
        says whether the store kept it."""

    def run(self, plan: ExecutionPlan, snapshot: Snapshot, then: Callable[[], object]) -> None:
        """Call ``plan``'s hooks for the ended run in ``snapshot``, then ``then()``.

        ``snapshot`` is copied first: the caller may go on using it. A run whose
        ``on_start`` is still being called (a cancel came meanwhile) has its end's
        hooks called once it has returned: ``on_finish`` tore down what ``on_start``
        was still setting up, beside it.
        """
        if not plan.has_hooks:
            then()
            return
        copied = copy_plain(snapshot)
        with self._lock:
            starting = self._starting.get(snapshot["run_id"])
            if starting is not None:
                # Counted as handed over already: a stop meanwhile waits for it too.
                chained: concurrent.futures.Future[None] = concurrent.futures.Future()
                self._pending.add(chained)
        if starting is None:
            self._submit(_call_hooks, plan, copied, then)
            return
        chained.add_done_callback(self._forget)

        def call(_started: object) -> None:
            future = self._submit(_call_hooks, plan, copied, then)
            if future is None:  # called already, here (shut down)
                chained.set_result(None)
            else:
                future.add_done_callback(lambda _: chained.set_result(None))

        starting.add_done_callback(call)

    def release_start(self, run_id: str) -> None:
        """Let the end's hooks of ``run_id`` go before its ``on_start`` returns.

        For an ``on_start`` that cancels its own run: the cancel waits for the end,
        which would wait for that ``on_start``.
        """
        with self._lock:
            gate = self._starting.pop(run_id, None)
        if gate is not None and not gate.done():
            gate.set_result(None)

    def start(self, plan: ExecutionPlan, snapshot: Snapshot, then: Callable[[], object]) -> None:
        """Call ``plan``'s ``on_start`` hook for the run starting in ``snapshot``, then ``then()``.

        Off the caller's thread, as the other hooks; ``snapshot`` is copied first.
        """
        if plan.on_start is None:
            then()
            return
        run_id = snapshot["run_id"]
        # Noted before the hook is handed over: an end that comes at once waits for it.
        gate: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._lock:
            self._starting[run_id] = gate

        def started(_done: object = None) -> None:
            with self._lock:
                if self._starting.get(run_id) is gate:
                    del self._starting[run_id]
            if not gate.done():  # released early: see release_start
                gate.set_result(None)

        future = self._submit(_call_start_hook, plan, copy_plain(snapshot), then)
        if future is None:
            started()  # called here already (shut down)
        else:
            future.add_done_callback(started)

    def _submit(
        self,
        fn: Callable[[ExecutionPlan, Snapshot, Callable[[], object], object], None],
        plan: ExecutionPlan,
        snapshot: Snapshot,
        then: Callable[[], object],
    ) -> concurrent.futures.Future[None] | None:
        """Hand the call to a hook thread; its future (``None``: called here, at once)."""
        if self._executor is None:
            self._executor = _HookThreads(HOOK_THREADS)
        try:
            future = self._executor.submit(fn, plan, snapshot, then, self)
        except RuntimeError:  # shut down: call them here rather than skip them
            fn(plan, snapshot, then, self)
            return None
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    # An async hook's await of another run (``await run.wait_async()``, ``astart()``):
    # its thread does not count meanwhile, as for a sync hook's wait (``on_run_waits``).
    # Both hook threads awaiting runs whose own hooks had no thread left: none ended.

    parks_clock: Final = False
    """A test kit's clock does not take a hook's await for a step's (see ``_settled``)."""

    def at_work(self) -> bool:
        """Whether a hook is being called, or waits for a thread; one awaiting a run is not.

        What a test kit's clock takes for work under way, as a step's body.
        """
        executor = self._executor
        return executor is not None and executor.at_work()

    def await_began(self, run_id: str) -> None:
        """A hook on this thread awaits run ``run_id``'s end."""
        executor = self._executor
        if executor is not None:
            executor.wait_began(run_id)

    def await_ended(self, _counted: object = None) -> None:
        """The await of :meth:`await_began` is over."""
        executor = self._executor
        if executor is not None:
            executor.wait_ended()

    def finish(
        self,
        plan: ExecutionPlan,
        snapshot: Snapshot,
        record: SnapshotRecord,
        registry: pykka.ActorRef[Any],
        on_recorded: Callable[[bool], None] | None = None,
    ) -> None:
        """Call the hooks for the run that ended in ``snapshot``, then record its end.

        ``record`` (the terminal snapshot's) goes to ``registry`` after the hooks
        return; ``on_recorded`` is called once it is stored (see
        :class:`~actors.messages.SnapshotTaken`), with ``False`` at once if the
        registry has stopped.
        """
        ended = SnapshotTaken(record=record, terminal=True, on_recorded=on_recorded)
        if not plan.has_hooks:
            if not tell_safely(registry, ended) and on_recorded is not None:
                on_recorded(False)
            return
        key = id(ended)
        with self._lock:
            self._ends[key] = ended

        def record_end() -> None:
            with self._lock:
                if self._ends.pop(key, None) is None:
                    return  # recorded by the stop meanwhile (see unrecorded_ends)
            if tell_safely(registry, ended):
                return
            late = self.record_late
            # The registry stopped under a stop: the end is the one the hooks were told.
            kept = late is not None and late(record)
            if on_recorded is not None:
                on_recorded(kept)

        self.run(plan, snapshot, record_end)

    def unrecorded_ends(self) -> list[SnapshotTaken]:
        """Take the ends whose hooks are still under way: their records are not in the store.

        For a stop that waited for the hooks as long as it could: the run's end is
        decided (its hooks were told it), so a store in memory records it rather
        than fail the run. The hooks, when they return, record nothing more.
        """
        with self._lock:
            ends = list(self._ends.values())
            self._ends.clear()
        return ends

    def stop(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds for the hooks already handed over; release the threads.

        A hook still running then is left to finish on its own.
        """
        executor = self._executor
        if executor is None:
            return
        executor.shutdown()
        with self._lock:
            pending = list(self._pending)
        concurrent.futures.wait(pending, timeout)


class _HookThreads:
    """Threads that take calls in order: ``size`` of them, and more while some wait for runs.

    A thread whose hook waits for another run (see :func:`~runtime._sync.on_run_waits`)
    is not counted: were the threads all waiting, the hooks of the runs they wait
    for could never be called, and none would end.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._cond = threading.Condition(threading.Lock())
        self._calls: deque[tuple[concurrent.futures.Future[None], Callable[[], None]]] = deque()
        self._live = 0  # threads
        self._idle = 0  # threads waiting for a call
        self._waiting = 0  # threads whose hook waits for a run
        self._shut = False
        self._failing = False  # the last thread wanted could not be started
        self._names = itertools.count(1)

    def submit(self, fn: Callable[..., None], /, *args: Any) -> concurrent.futures.Future[None]:
        """Call ``fn(*args)`` on a thread; its future.

        Raises:
            RuntimeError: after :meth:`shutdown`.
        """
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._cond:
            if self._shut:
                raise RuntimeError("the hook threads are shut down")
            self._calls.append((future, functools.partial(fn, *args)))
            if not self._more() and self._live == self._waiting:
                # No thread could start, and none is free or will be but by a wait's end:
                # its caller calls it, rather than leave it to a thread that may never come.
                self._calls.pop()
                raise RuntimeError("no hook thread could be started")
        return future

    def shutdown(self) -> None:
        """Take no more calls; the threads end once the calls handed over are done."""
        with self._cond:
            self._shut = True
            self._cond.notify_all()

    def _more(self) -> bool:
        """Wake an idle thread for a call, or start one if every thread counted is busy.

        Returns:
            ``False`` if a thread was wanted and the process could not start one
            (a limit of threads or of memory): the calls wait for a busy thread.
        """
        if self._idle:
            self._cond.notify()
        elif self._live - self._waiting < self._size:
            # A daemon: an idle one waits for calls with no end, and a program that never
            # stopped its runtime must still exit (stop() waits for the hooks under way).
            thread = threading.Thread(
                target=self._work, name=f"callboard-hooks-{next(self._names)}", daemon=True
            )
            try:
                thread.start()
            except RuntimeError as exc:
                if not self._failing:  # said once, until a thread starts again
                    self._failing = True
                    emit(
                        logging.ERROR,
                        "hook_thread_start_failed",
                        error=f"{type(exc).__name__}: {exc}",
                        live=self._live,
                    )
                return False
            self._live += 1
            self._failing = False
        return True

    def _work(self) -> None:
        on_run_waits(self.wait_began, self.wait_ended, step=False)
        while True:
            with self._cond:
                while not self._calls and not self._shut and self._live <= self._size:
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                if not self._calls:  # shut down, or one more than needed: let it go
                    self._live -= 1
                    return
                future, call = self._calls.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                call()
            except BaseException as exc:  # told to the future, as an executor does
                future.set_exception(exc)
            else:
                future.set_result(None)

    def at_work(self) -> bool:
        """Whether a call waits for a thread, or a thread calls one that waits for no run."""
        with self._cond:
            return bool(self._calls) or self._live - self._idle - self._waiting > 0

    def wait_began(self, run_id: str) -> None:
        """A hook on one of these threads waits for run ``run_id``: it counts no more."""
        with self._cond:
            self._waiting += 1
            if self._calls:
                self._more()

    def wait_ended(self, _counted: object = None) -> None:
        """The wait of :meth:`wait_began` is over."""
        with self._cond:
            self._waiting -= 1


def _call_start_hook(
    plan: ExecutionPlan, snapshot: Snapshot, then: Callable[[], object], owner: object
) -> None:
    snapshot["status"] = RunStatus.RUNNING.value
    _call_hooks(plan, snapshot, then, owner, [("on_start", plan.on_start)])


def _call_hooks(
    plan: ExecutionPlan,
    snapshot: Snapshot,
    then: Callable[[], object],
    owner: object,
    hooks: list[tuple[str, Any]] | None = None,
) -> None:
    # A hook's wait for its own run, or its runtime's stop, is refused; a cancel of its
    # own run from an end hook is told the run has ended.
    try:
        serving_hook(snapshot["run_id"], owner, ended=hooks is None)
        if hooks is None:
            hooks = [("on_finish", plan.on_finish)]
            if snapshot["status"] == RunStatus.FAILED:
                hooks.insert(0, ("on_error", plan.on_error))
        outcome = outcome_of(snapshot)
        for name, hook in hooks:
            if hook is None:
                continue
            try:
                returned = hook(outcome)
                if inspect.isawaitable(returned):
                    asyncio.run(_awaited(returned))
            except BaseException:
                emit(
                    logging.ERROR,
                    "workflow_hook_failed",
                    hook=name,
                    run_id=snapshot["run_id"],
                    workflow_id=snapshot["workflow_id"],
                    exc_info=True,
                )
    except Exception:
        emit(logging.ERROR, "workflow_hooks_not_called", run_id=snapshot["run_id"], exc_info=True)
    finally:
        try:
            serving_hook(None, None, ended=False)
        finally:
            then()  # whatever failed above: the run's end is recorded


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
