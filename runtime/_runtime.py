"""``Runtime``: owns the actors, binds workflows, and the process-wide default runtime."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, overload

import pykka

from runtime._errors import (
    RunAlreadyStartedError,
    RuntimeStoppedError,
    WorkflowDefinitionError,
)
from runtime._model import ErrorInfo, RunEvent
from runtime._plan import ExecutionPlan
from runtime._snapshot import Snapshot, decode, failed_record
from runtime._stores.base import MemoryStore, SnapshotRecord, SnapshotStore
from runtime._stores.sqlite import SQLiteStore, path_from_url
from runtime._sync import Channel, Latch
from runtime._tracing import emit

if TYPE_CHECKING:
    from runtime._workflow import Workflow

__all__ = ["Runtime", "default_runtime"]

W = TypeVar("W", bound="Workflow[Any, Any]")

ORPHAN_REPORT_DELAY: Final = 5.0
"""Seconds after start before unfinished runs of unregistered workflows are reported."""

DEFAULT_STOP_TIMEOUT: Final = 10.0
"""Seconds ``stop()`` waits for runs in progress before failing them."""


def _stopped_error() -> dict[str, Any]:
    stopped = RuntimeStoppedError("the runtime stopped before the run ended")
    return ErrorInfo.from_exception(stopped, with_traceback=False).model_dump()


def _stop_actor(ref: pykka.ActorRef[Any]) -> None:
    try:
        ref.stop(timeout=DEFAULT_STOP_TIMEOUT)
    except pykka.Timeout:
        emit(logging.WARNING, "actor_stop_timed_out", actor=str(ref))


class _Machinery:
    """The actors and threads of a started runtime (imported only here, at start)."""

    def __init__(self, store: SnapshotStore, max_concurrent_runs: int | None) -> None:
        from actors._dispatch import Dispatcher
        from actors._pool import AsyncLoop, StepPool
        from actors._timer import Timers
        from actors.hooks import HookRunner
        from actors.registry import RegistryActor
        from actors.supervisor import SupervisorActor

        self.store = store
        self.report_timer: threading.Timer | None = None
        self.dispatcher = Dispatcher()
        self.loop = AsyncLoop()
        self.pool = StepPool(self.loop)
        self.timers = Timers()
        self.hooks = HookRunner()
        self.registry = RegistryActor.start(store, self.hooks)
        self.supervisor = SupervisorActor.start(
            self.dispatcher,
            registry=self.registry,
            pool=self.pool,
            timers=self.timers,
            hooks=self.hooks,
            max_concurrent_runs=max_concurrent_runs,
            durable=store.durable,
        )

    def report_orphans_later(self, plans: Callable[[], Mapping[str, ExecutionPlan]]) -> None:
        """In a moment, resume what is registered by then and report the rest, once.

        A runtime usually registers its workflows just after it starts; orphaned
        runs of those are resumed as each is registered, and only runs whose
        workflow is still missing after :data:`ORPHAN_REPORT_DELAY` are reported.
        """
        if not self.store.durable:
            return
        self.report_timer = threading.Timer(
            ORPHAN_REPORT_DELAY, lambda: self.recover(plans(), report_others=True)
        )
        self.report_timer.name = "callboard-orphan-report"
        self.report_timer.daemon = True
        self.report_timer.start()

    def recover(self, plans: Mapping[str, ExecutionPlan], *, report_others: bool) -> None:
        """Resume, in the background, the orphaned runs of these workflows (durable stores)."""
        from actors.messages import RecoverRuns

        if self.store.durable:
            message = RecoverRuns(
                plans=dict(plans), supervisor=self.supervisor, report_others=report_others
            )
            with contextlib.suppress(pykka.ActorDeadError):
                self.registry.tell(message)

    def start_run(self, plan: ExecutionPlan, snapshot: Snapshot, record: SnapshotRecord) -> bool:
        from actors.messages import StartRun

        if not self.registry.is_alive():
            raise RuntimeStoppedError("the runtime's registry has stopped; no run can start")
        if not self.store.create(record):
            return False
        try:
            self.supervisor.tell(StartRun(plan=plan, snapshot=snapshot))
        except pykka.ActorDeadError as exc:
            # The run is recorded but nobody will run it: record it failed, so
            # that it never sits pending for ever, and tell the caller.
            stopped = RuntimeStoppedError("the runtime stopped before the run could start")
            error = ErrorInfo.from_exception(stopped, with_traceback=False).model_dump()
            self.store.save((failed_record(snapshot, error, time.time()),))
            raise stopped from exc
        return True

    def resume_run(self, plan: ExecutionPlan, snapshot: Snapshot) -> None:
        """Start a run actor for a run whose resumed snapshot the store already holds."""
        from actors.messages import StartRun

        try:
            self.supervisor.tell(StartRun(plan=plan, snapshot=snapshot))
        except pykka.ActorDeadError as exc:
            raise RuntimeStoppedError("the runtime stopped before the run could resume") from exc

    def watch(self, run_id: str, event: threading.Event | Latch | None = None) -> Any:
        """An event (or ``event``) set once the run settles: it ends, or suspends."""
        from actors.messages import WatchRun

        target = threading.Event() if event is None else event
        try:
            self.registry.tell(WatchRun(run_id=run_id, event=target))
        except pykka.ActorDeadError:
            target.set()  # the registry has stopped: what the store holds is final
        return target

    def subscribe(self, run_id: str, channel: Channel[RunEvent]) -> None:
        """Have the registry put the run's events into ``channel``."""
        from actors.messages import SubscribeRun

        try:
            self.registry.tell(SubscribeRun(run_id=run_id, channel=channel))
        except pykka.ActorDeadError:
            channel.close()

    def cancel(self, run_id: str, timeout: float) -> str:
        """Ask the supervisor to cancel a run it drives; its answer (see ``CancelRun``)."""
        from concurrent.futures import Future
        from concurrent.futures import TimeoutError as FutureTimeout

        from actors.messages import CancelRun

        answer: Future[str] = Future()
        try:
            self.supervisor.tell(CancelRun(run_id=run_id, reply=answer.set_result))
            return answer.result(timeout)
        except pykka.ActorDeadError as exc:
            raise RuntimeStoppedError("the runtime is stopped") from exc
        except FutureTimeout:
            return "unknown"

    def run_hooks(
        self, plan: ExecutionPlan, snapshot: Snapshot, then: Callable[[], object]
    ) -> None:
        """Call the workflow's hooks for a run that ended outside the actors, then ``then``."""
        self.hooks.run(plan, snapshot, then)

    def record(self, record: SnapshotRecord) -> None:
        """Hand a record the store already holds to the registry, for waiters and watchers."""
        from actors.messages import SnapshotTaken

        with contextlib.suppress(pykka.ActorDeadError):
            self.registry.tell(SnapshotTaken(record=record, terminal=True))

    def shutdown(self, timeout: float | None) -> None:
        if self.report_timer is not None:
            self.report_timer.cancel()
        try:
            self._drain(timeout)
        finally:
            _stop_actor(self.supervisor)
            self.timers.stop(DEFAULT_STOP_TIMEOUT)
            self.pool.stop()
            self.hooks.stop()  # their runs' last snapshots go to the registry after them
            _stop_actor(self.registry)  # after the runs: it records their last snapshots first
            self.loop.stop(DEFAULT_STOP_TIMEOUT)
            self.dispatcher.stop(DEFAULT_STOP_TIMEOUT)
            if not self.store.durable:
                self._fail_unfinished()
            self.store.close()

    def _drain(self, timeout: float | None) -> None:
        """Wait for the runs in progress; then fail those still going (halt them, if durable)."""
        from actors.messages import AbortRuns, NotifyWhenIdle

        try:
            idle = threading.Event()
            self.supervisor.tell(NotifyWhenIdle(event=idle))
            if idle.wait(timeout):
                return
            aborted = threading.Event()
            # A durable store keeps a halted run unfinished, and the next runtime
            # on it resumes the run; in memory it would be lost, so it fails.
            error = None if self.store.durable else _stopped_error()
            self.supervisor.tell(AbortRuns(error=error))
            self.supervisor.tell(NotifyWhenIdle(event=aborted))
            aborted.wait(DEFAULT_STOP_TIMEOUT)
        except pykka.ActorDeadError:
            emit(logging.ERROR, "supervisor_found_dead_at_stop")

    def _fail_unfinished(self) -> None:
        # With every actor stopped, a run still pending or running would stay so
        # for ever: only a broken machinery (a dead registry or supervisor)
        # leaves one behind. Record it failed rather than lose it.
        error = _stopped_error()
        for record in self.store.unfinished():
            self.store.save((failed_record(decode(record.data), error, time.time()),))


class Runtime:
    """A workflow runtime: the actors that run workflows and remember their runs.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with Runtime() as rt:
            wf = rt.register(workflow)
            run_id = wf.create_run().start_async(input_data={...}).run_id

    Args:
        store: Where runs are kept: ``"memory"`` (the default: lost with the
            process), a SQLite file as a path or a ``sqlite:///path`` URL
            (created if missing; opened by :meth:`start`), or a store object.
            On a SQLite store a run is committed when ``start_async`` returns,
            each step's output is committed before the next step starts, and
            runs left unfinished by a process that ended are resumed by the
            next runtime on the file that registers their workflow.
        max_concurrent_runs: The most runs in progress at once; further runs
            wait, ``pending``, in the order they were started. ``None`` (the
            default) sets no limit.
        stop_timeout: Seconds :meth:`stop` (and leaving the ``with`` block)
            waits for runs in progress before recording them as failed (in
            memory) or leaving them for the next runtime (on a durable store).

    Raises:
        ValueError: for a ``max_concurrent_runs`` below 1, a negative
            ``stop_timeout`` or an empty store location.
    """

    def __init__(
        self,
        *,
        store: SnapshotStore | str | os.PathLike[str] | None = None,
        max_concurrent_runs: int | None = None,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        if max_concurrent_runs is not None and max_concurrent_runs < 1:
            raise ValueError(f"max_concurrent_runs must be at least 1, got {max_concurrent_runs}")
        if stop_timeout < 0:
            raise ValueError(f"stop_timeout must not be negative, got {stop_timeout}")
        self._max_concurrent_runs = max_concurrent_runs
        self._stop_timeout = stop_timeout
        self._lock = threading.Lock()
        self._state = "new"
        self._machinery: _Machinery | None = None
        self._plans: dict[str, ExecutionPlan] = {}
        self._store: SnapshotStore | None
        self._store_path: Path | None = None
        if store is None or store == "memory":
            self._store = MemoryStore()
        elif isinstance(store, str | os.PathLike):
            self._store = None
            self._store_path = path_from_url(store)
        else:
            self._store = store

    def __repr__(self) -> str:
        return f"<Runtime {self._state}>"

    @property
    def is_running(self) -> bool:
        """Whether the runtime is started and not yet stopping."""
        return self._state == "running"

    def start(self) -> Runtime:
        """Start the actors. Starting a running runtime does nothing.

        Returns:
            The runtime itself.

        Raises:
            RuntimeStoppedError: if the runtime was stopped: a runtime runs once.
            StoreError: if the SQLite store cannot be opened: not writable, a
                directory, not a SQLite file, or written by a newer callboard.
        """
        with self._lock:
            if self._state == "running":
                return self
            if self._state != "new":
                raise RuntimeStoppedError("this runtime was stopped; create a new Runtime")
            if self._store is None:
                assert self._store_path is not None
                self._store = SQLiteStore(self._store_path)
            self._machinery = _Machinery(self._store, self._max_concurrent_runs)
            self._machinery.recover(self._plans, report_others=False)
            self._machinery.report_orphans_later(lambda: dict(self._plans))
            self._state = "running"
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop the runtime and every actor and thread it started.

        Runs in progress get ``timeout`` seconds (the runtime's ``stop_timeout``
        when omitted) to end; those still going are then recorded as ``failed``
        with a ``RuntimeStoppedError``. Results stay readable after the stop.
        Stopping a stopped runtime does nothing.

        Args:
            timeout: Seconds to wait for runs in progress.
        """
        with self._lock:
            if self._state != "running":
                self._state = "stopped" if self._state == "new" else self._state
                return
            self._state = "stopping"
            machinery = self._machinery
        assert machinery is not None
        try:
            machinery.shutdown(self._stop_timeout if timeout is None else timeout)
        finally:
            self._state = "stopped"

    def __enter__(self) -> Runtime:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def register(self, workflow: W) -> W:
        """Bind a committed workflow to this runtime.

        Args:
            workflow: A committed workflow.

        Returns:
            The workflow bound to this runtime: its runs and queries go here.

        Raises:
            WorkflowDefinitionError: if the workflow is not committed, or another
                workflow with the same id is registered here.
        """
        plan = workflow.plan
        with self._lock:
            known = self._plans.get(plan.workflow_id)
            if known is not None and known is not plan:
                raise WorkflowDefinitionError(
                    f"another workflow with the id {plan.workflow_id!r} is already "
                    "registered with this runtime"
                )
            self._plans[plan.workflow_id] = plan
            machinery = self._machinery if self._state == "running" else None
        if machinery is not None and known is None:
            machinery.recover({plan.workflow_id: plan}, report_others=False)
        return workflow._bound_to(self)

    # --- used by Run and Workflow ------------------------------------------------

    def _running(self) -> _Machinery:
        machinery = self._machinery
        if self._state != "running" or machinery is None:
            if self._state == "new":
                raise RuntimeStoppedError(
                    "the runtime is not started: use `with Runtime() as rt:` or rt.start()"
                )
            raise RuntimeStoppedError("the runtime is stopped")
        return machinery

    def _start_run(self, plan: ExecutionPlan, snapshot: Snapshot, record: SnapshotRecord) -> None:
        if not self._running().start_run(plan, snapshot, record):
            raise RunAlreadyStartedError(
                f"run id {record.run_id!r} is already in use by another run",
                run_id=record.run_id,
            )

    @property
    def store(self) -> SnapshotStore | None:
        """The store runs are kept in (``None`` for a SQLite file before :meth:`start`)."""
        return self._store

    def _store_for_writes(self) -> SnapshotStore:
        self._running()
        assert self._store is not None
        return self._store

    def _load(self, run_id: str) -> SnapshotRecord | None:
        store = self._store
        return None if store is None else store.load(run_id)

    def _watch(self, run_id: str, event: threading.Event | Latch | None = None) -> Any:
        machinery = self._machinery
        if machinery is None or self._state == "stopped":
            target = threading.Event() if event is None else event
            target.set()
            return target
        return machinery.watch(run_id, event)


_default_lock = threading.Lock()
_default: Runtime | None = None


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
    if kept).

    Args:
        start: Start it if there is none; with ``False``, return ``None`` instead.
    """
    global _default  # noqa: PLW0603 - one runtime per process, created lazily
    with _default_lock:
        if _default is None or _default._state in ("stopping", "stopped"):
            if not start:
                return _default
            _default = Runtime().start()
            atexit.register(_default.stop)
        return _default
