"""``ActorSystem``: the one object the facade calls to reach the actors.

``Runtime.start()`` imports this module, builds one ``ActorSystem`` on its
store, and from then on ``Run``, ``Workflow`` and ``Runtime`` reach the
machinery only through its plain methods: start a run, resume one, cancel,
watch, subscribe, load, shut down. No pykka type or exception crosses this
seam: a stopped actor becomes ``RuntimeStoppedError`` or a settled event.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Final

import pykka

from actors._dispatch import Dispatcher
from actors._pool import AsyncLoop, StepPool
from actors._retention import Pruner
from actors._timer import Timers
from actors.hooks import HookRunner
from actors.messages import (
    AbortRuns,
    CancelRun,
    NotifyWhenIdle,
    RecoverRuns,
    SnapshotTaken,
    StartRun,
    SubscribeRun,
    WatchRun,
)
from actors.registry import RegistryActor
from actors.supervisor import PendingRuns, SupervisorActor
from runtime._errors import RuntimeOverloadedError, RuntimeStoppedError
from runtime._model import ErrorInfo, RunEvent
from runtime._options import RetentionPolicy
from runtime._plan import ExecutionPlan
from runtime._snapshot import Snapshot, decode, failed_record
from runtime._stores.base import SnapshotRecord, SnapshotStore
from runtime._sync import Channel, Latch
from runtime._tracing import emit

__all__ = ["ORPHAN_REPORT_DELAY", "ActorSystem"]

ORPHAN_REPORT_DELAY: Final = 5.0
"""Seconds after start before unfinished runs of unregistered workflows are reported."""

ACTOR_STOP_TIMEOUT: Final = 10.0
"""Seconds each actor and thread gets to stop at shutdown."""


class ActorSystem:
    """The actors and threads of a started runtime, behind plain methods.

    Args:
        store: Where runs are kept; the system closes it at :meth:`shutdown`.
        max_concurrent_runs: The most runs in progress at once (``None``: no limit).
        max_step_threads: The most step actor threads at once; calls beyond wait.
        max_pending_runs: The most runs waiting to start before :meth:`start_run`
            refuses new ones (``None``: no limit).
        retention: What ended runs to keep; ``None`` keeps them all.
    """

    def __init__(
        self,
        store: SnapshotStore,
        *,
        max_concurrent_runs: int | None,
        max_step_threads: int,
        max_pending_runs: int | None = None,
        retention: RetentionPolicy | None = None,
    ) -> None:
        self.store = store
        self.pending = None if max_pending_runs is None else PendingRuns(max_pending_runs)
        self._report_timer: threading.Timer | None = None
        self.dispatcher = Dispatcher()
        self.loop = AsyncLoop()
        self.pool = StepPool(self.loop, limit=max_step_threads)
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
            pending=self.pending,
            durable=store.durable,
        )
        self.pruner = None if retention is None else Pruner(store, retention)

    # --- runs ------------------------------------------------------------------------

    def start_run(self, plan: ExecutionPlan, snapshot: Snapshot, record: SnapshotRecord) -> bool:
        """Record a new run and hand it to the supervisor; ``False`` if its id is taken.

        Raises:
            RuntimeOverloadedError: if ``max_pending_runs`` runs wait to start;
                nothing is recorded.
            RuntimeStoppedError: if the actors have stopped; a run recorded just
                before that is recorded failed, never left pending.
        """
        if not self.registry.is_alive():
            raise RuntimeStoppedError("the runtime's registry has stopped; no run can start")
        pending = self.pending
        if pending is not None and not pending.admit():
            raise RuntimeOverloadedError(
                f"{pending.limit} runs are waiting to start (max_pending_runs); nothing was "
                "recorded: start the run again once runs have drained",
                limit=pending.limit,
                run_id=record.run_id,
            )
        try:
            created = self.store.create(record)
        except BaseException:
            _give_back(pending)
            raise
        if not created:
            _give_back(pending)
            return False
        try:
            self.supervisor.tell(
                StartRun(plan=plan, snapshot=snapshot, admitted=pending is not None)
            )
        except pykka.ActorDeadError as exc:
            _give_back(pending)
            # The run is recorded but nobody will run it: record it failed, so
            # that it never sits pending for ever, and tell the caller.
            stopped = RuntimeStoppedError("the runtime stopped before the run could start")
            error = ErrorInfo.from_exception(stopped, with_traceback=False).model_dump()
            self.store.save((failed_record(snapshot, error, time.time()),))
            raise stopped from exc
        return True

    def resume_run(self, plan: ExecutionPlan, snapshot: Snapshot) -> None:
        """Start a run actor for a run whose resumed snapshot the store already holds.

        Raises:
            RuntimeStoppedError: if the actors have stopped.
        """
        try:
            self.supervisor.tell(StartRun(plan=plan, snapshot=snapshot))
        except pykka.ActorDeadError as exc:
            raise RuntimeStoppedError("the runtime stopped before the run could resume") from exc

    def cancel(self, run_id: str, timeout: float) -> str:
        """Ask the supervisor to cancel a run it drives; its answer (see ``CancelRun``).

        Returns ``"unknown"`` when no answer came within ``timeout`` seconds.

        Raises:
            RuntimeStoppedError: if the actors have stopped.
        """
        answer: Future[str] = Future()
        try:
            self.supervisor.tell(CancelRun(run_id=run_id, reply=answer.set_result))
            return answer.result(timeout)
        except pykka.ActorDeadError as exc:
            raise RuntimeStoppedError("the runtime is stopped") from exc
        except FutureTimeout:
            return "unknown"

    def load(self, run_id: str) -> SnapshotRecord | None:
        """The newest stored record of a run, or ``None``."""
        return self.store.load(run_id)

    def recover(self, plans: Mapping[str, ExecutionPlan], *, report_others: bool) -> None:
        """Resume, in the background, the orphaned runs of these workflows (durable stores)."""
        if self.store.durable:
            message = RecoverRuns(
                plans=dict(plans), supervisor=self.supervisor, report_others=report_others
            )
            with contextlib.suppress(pykka.ActorDeadError):
                self.registry.tell(message)

    def report_orphans_later(self, plans: Callable[[], Mapping[str, ExecutionPlan]]) -> None:
        """In a moment, resume what is registered by then and report the rest, once.

        A runtime usually registers its workflows just after it starts; orphaned
        runs of those are resumed as each is registered, and only runs whose
        workflow is still missing after :data:`ORPHAN_REPORT_DELAY` are reported.
        """
        if not self.store.durable:
            return
        self._report_timer = threading.Timer(
            ORPHAN_REPORT_DELAY, lambda: self.recover(plans(), report_others=True)
        )
        self._report_timer.name = "callboard-orphan-report"
        self._report_timer.daemon = True
        self._report_timer.start()

    # --- waiting and watching ----------------------------------------------------------

    def watch(self, run_id: str, event: threading.Event | Latch | None = None) -> Any:
        """An event (or ``event``) set once the run settles: it ends, or suspends.

        Once the system has stopped, it is set at once: what the store holds is final.
        """
        target = threading.Event() if event is None else event
        try:
            self.registry.tell(WatchRun(run_id=run_id, event=target))
        except pykka.ActorDeadError:
            target.set()
        return target

    def subscribe(self, run_id: str, channel: Channel[RunEvent]) -> None:
        """Have the registry put the run's events into ``channel``, then close it.

        Once the registry has stopped, the channel is closed at once.
        """
        try:
            self.registry.tell(SubscribeRun(run_id=run_id, channel=channel))
        except pykka.ActorDeadError:
            channel.close()

    # --- ends that happen outside the actors -----------------------------------------------

    def run_hooks(
        self, plan: ExecutionPlan, snapshot: Snapshot, then: Callable[[], object]
    ) -> None:
        """Call the workflow's hooks for a run that ended outside the actors, then ``then``."""
        self.hooks.run(plan, snapshot, then)

    def record(self, record: SnapshotRecord) -> None:
        """Hand a record the store already holds to the registry, for waiters and watchers."""
        with contextlib.suppress(pykka.ActorDeadError):
            self.registry.tell(SnapshotTaken(record=record, terminal=True))

    # --- shutting down ---------------------------------------------------------------

    def shutdown(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` seconds for runs in progress, stop everything, close the store.

        Runs still going then are failed (in memory) or halted (on a durable
        store, where the next runtime resumes them).
        """
        if self._report_timer is not None:
            self._report_timer.cancel()
        if self.pruner is not None:
            self.pruner.stop(ACTOR_STOP_TIMEOUT)
        try:
            self._drain(timeout)
        finally:
            _stop_actor(self.supervisor)
            self.timers.stop(ACTOR_STOP_TIMEOUT)
            self.pool.stop()
            self.hooks.stop()  # their runs' last snapshots go to the registry after them
            _stop_actor(self.registry)  # after the runs: it records their last snapshots first
            self.loop.stop(ACTOR_STOP_TIMEOUT)
            self.dispatcher.stop(ACTOR_STOP_TIMEOUT)
            if not self.store.durable:
                self._fail_unfinished()
            self.store.close()

    def _drain(self, timeout: float | None) -> None:
        """Wait for the runs in progress; then fail those still going (halt them, if durable)."""
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
            aborted.wait(ACTOR_STOP_TIMEOUT)
        except pykka.ActorDeadError:
            emit(logging.ERROR, "supervisor_found_dead_at_stop")

    def _fail_unfinished(self) -> None:
        # With every actor stopped, a run still pending or running would stay so
        # for ever: only a broken machinery (a dead registry or supervisor)
        # leaves one behind. Record it failed rather than lose it.
        error = _stopped_error()
        for record in self.store.unfinished():
            self.store.save(
                (failed_record(decode(record.data, record.run_id), error, time.time()),)
            )


def _give_back(pending: PendingRuns | None) -> None:
    """Return the place of a run that was admitted but will not wait after all."""
    if pending is not None:
        pending.release()


def _stopped_error() -> dict[str, Any]:
    stopped = RuntimeStoppedError("the runtime stopped before the run ended")
    return ErrorInfo.from_exception(stopped, with_traceback=False).model_dump()


def _stop_actor(ref: pykka.ActorRef[Any]) -> None:
    try:
        ref.stop(timeout=ACTOR_STOP_TIMEOUT)
    except pykka.Timeout:
        emit(logging.WARNING, "actor_stop_timed_out", actor=str(ref))
