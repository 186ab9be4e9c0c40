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
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Final, Literal

import pykka

from actors._dispatch import Dispatcher
from actors._pool import AsyncLoop, StepPool
from actors._retention import Pruner
from actors._timer import Timers
from actors.hooks import HookRunner
from actors.messages import (
    AbortRuns,
    CancelOutcome,
    CancelRun,
    NotifyWhenIdle,
    RecoverRuns,
    SnapshotTaken,
    StartRun,
    SubscribeRun,
    WatchRun,
)
from actors.registry import RegistryActor
from actors.step import error_dict
from actors.supervisor import PendingRuns, SupervisorActor
from runtime._errors import RuntimeOverloadedError, RuntimeStoppedError
from runtime._model import RunEvent
from runtime._options import RetentionPolicy
from runtime._plan import ExecutionPlan
from runtime._snapshot import Snapshot, decode, failed_record
from runtime._stores.base import SnapshotRecord, SnapshotStore
from runtime._sync import Channel, Latch
from runtime._tracing import emit

__all__ = [
    "ORPHAN_REPORT_DELAY",
    "ORPHAN_SCAN_INTERVAL",
    "SHUTDOWN_GRACE",
    "ActorSystem",
    "CancelAnswer",
]

ORPHAN_REPORT_DELAY: Final = 5.0
"""Seconds after start before unfinished runs of unregistered workflows are reported."""

ORPHAN_SCAN_INTERVAL: Final = 2.0
"""Seconds between two looks for runs whose owner died (on a durable store)."""

SHUTDOWN_GRACE: Final = 2.0
"""Seconds :meth:`ActorSystem.shutdown` gives, beyond its ``timeout``, to stop every actor
and thread it started: together, not each. What has not stopped by then (a step blocked
in user code, a hook that does not return) is left on its daemon thread."""

CANCEL_CHECK_EVERY: Final = 1.0
"""Seconds between two checks, while a cancel waits for its answer, that the actors still run."""

CancelAnswer = Literal["recorded", "refused", "not_here"]
"""What :meth:`ActorSystem.cancel` says came of a cancel (see :class:`CancelOutcome`)."""

_CANCEL_ANSWERS: Final[dict[CancelOutcome, CancelAnswer]] = {
    CancelOutcome.RECORDED: "recorded",
    CancelOutcome.REFUSED: "refused",
    CancelOutcome.NOT_HERE: "not_here",
}


class ActorSystem:
    """The actors and threads of a started runtime, behind plain methods.

    Args:
        store: Where runs are kept; the system closes it at :meth:`shutdown`.
        max_concurrent_runs: The most runs in progress at once (``None``: no limit).
        max_step_threads: The most step actor threads at once; calls beyond wait.
        max_pending_runs: The most runs waiting to start before :meth:`start_run`
            refuses new ones (``None``: no limit).
        retention: What ended runs to keep; ``None`` keeps them all.
        on_give_up: Called, once, with the reason, when the supervisor or the
            registry fails too often (:class:`~actors._dispatch.FaultBudget`).
    """

    def __init__(
        self,
        store: SnapshotStore,
        *,
        max_concurrent_runs: int | None,
        max_step_threads: int,
        max_pending_runs: int | None = None,
        retention: RetentionPolicy | None = None,
        on_give_up: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self._on_give_up = on_give_up
        self._scanner: threading.Thread | None = None
        self._scanning_stopped = threading.Event()
        self.pending = None if max_pending_runs is None else PendingRuns(max_pending_runs)
        self.dispatcher = Dispatcher()
        self.loop = AsyncLoop()
        self.pool = StepPool(self.loop, limit=max_step_threads)
        self.timers = Timers()
        self.hooks = HookRunner()
        self.registry = RegistryActor.start(store, self.hooks, self._gave_up)
        self.supervisor = SupervisorActor.start(
            self.dispatcher,
            registry=self.registry,
            pool=self.pool,
            timers=self.timers,
            hooks=self.hooks,
            max_concurrent_runs=max_concurrent_runs,
            pending=self.pending,
            durable=store.durable,
            give_up=self._gave_up,
        )
        self.pruner = None if retention is None else Pruner(store, retention)

    def _gave_up(self, reason: str) -> None:
        """A supervisor or registry spent its fault budget: stop the runtime, saying why.

        Called on the failing actor's own thread, which the shutdown must be
        able to join: the stop runs on a thread of its own.
        """
        if self._on_give_up is not None:
            stopping = threading.Thread(
                target=self._on_give_up, args=(reason,), name="callboard-give-up", daemon=True
            )
            stopping.start()

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
            error = error_dict(stopped, with_traceback=False)
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

    def cancel(self, run_id: str) -> CancelAnswer:
        """Cancel a run that an actor of this runtime drives or holds; what came of it.

        Returns only once the answer is known: ``"recorded"`` once the store
        has taken the run's canceled snapshot (committed it, on a durable
        store; the caller reads back which end the store kept), ``"refused"``
        if the run's actor stopped but the store did not take the snapshot,
        ``"not_here"`` at once if no actor of this runtime drives or holds it.
        The workflow's hooks run before the snapshot is recorded, so this
        waits for them too.

        Raises:
            RuntimeStoppedError: if the actors have stopped, or stop before answering.
        """
        answer: Future[CancelOutcome] = Future()
        try:
            self.supervisor.tell(CancelRun(run_id=run_id, reply=_settler(answer)))
        except pykka.ActorDeadError as exc:
            raise RuntimeStoppedError("the runtime is stopped") from exc
        # Every path answers: the one that records the canceled snapshot, once it is
        # recorded or refused; an actor that stops before reading the message. Waiting
        # in slices only guards against actors stopped under the call at shutdown.
        while True:
            try:
                return _CANCEL_ANSWERS[answer.result(CANCEL_CHECK_EVERY)]
            except FutureTimeout:
                if self.supervisor.is_alive() or self.registry.is_alive():
                    continue
            try:
                # The store commits what it was handed as it closes: a last chance.
                return _CANCEL_ANSWERS[answer.result(SHUTDOWN_GRACE)]
            except FutureTimeout:
                raise RuntimeStoppedError(
                    f"the runtime stopped before the cancel of run {run_id!r} was recorded"
                ) from None

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

    def scan_for_orphans(self, plans: Callable[[], Mapping[str, ExecutionPlan]]) -> None:
        """Look for orphaned runs now and then, and resume those of registered workflows.

        A runtime takes over the runs of a peer that died while it keeps
        running, within the store's lease plus :data:`ORPHAN_SCAN_INTERVAL`:
        it does not wait for a workflow to be registered again. Runs whose
        workflow is not registered here are reported once, after
        :data:`ORPHAN_REPORT_DELAY` (a runtime usually registers its
        workflows just after it starts).
        """
        if not self.store.durable:
            return
        started = time.monotonic()

        def scan() -> None:
            while not self._scanning_stopped.wait(ORPHAN_SCAN_INTERVAL):
                report = time.monotonic() - started >= ORPHAN_REPORT_DELAY
                self.recover(plans(), report_others=report)

        self._scanner = threading.Thread(target=scan, name="callboard-orphan-scan", daemon=True)
        self._scanner.start()

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
        store, where the next runtime resumes them). The whole takes at most
        ``timeout`` plus :data:`SHUTDOWN_GRACE` seconds (and the store's close).
        """
        deadline = time.monotonic() + (timeout or 0.0) + SHUTDOWN_GRACE

        def left() -> float:
            return max(0.05, deadline - time.monotonic())

        self._scanning_stopped.set()
        if self._scanner is not None:
            self._scanner.join(left())
        if self.pruner is not None:
            self.pruner.stop(left())
        try:
            self._drain(timeout, left)
        finally:
            _stop_actor(self.supervisor, left())
            self.timers.stop(left())
            self.pool.stop(left())
            self.hooks.stop(left())  # their runs' last snapshots go to the registry after them
            _stop_actor(self.registry, left())  # after the runs: it records their last ones first
            self.loop.stop(left())
            self.dispatcher.stop(left())
            if not self.store.durable:
                self._fail_unfinished()
            self.store.close()

    def _drain(self, timeout: float | None, left: Callable[[], float]) -> None:
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
            aborted.wait(left())
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


def _settler(future: Future[CancelOutcome]) -> Callable[[CancelOutcome], None]:
    """A reply that settles ``future`` with the first outcome it is given, from any thread."""

    def settle(outcome: CancelOutcome) -> None:
        with contextlib.suppress(InvalidStateError):
            future.set_result(outcome)

    return settle


def _give_back(pending: PendingRuns | None) -> None:
    """Return the place of a run that was admitted but will not wait after all."""
    if pending is not None:
        pending.release()


def _stopped_error() -> dict[str, Any]:
    stopped = RuntimeStoppedError("the runtime stopped before the run ended")
    return error_dict(stopped, with_traceback=False)


def _stop_actor(ref: pykka.ActorRef[Any], timeout: float) -> None:
    try:
        ref.stop(timeout=timeout)
    except pykka.Timeout:
        emit(logging.WARNING, "actor_stop_timed_out", actor=str(ref))
