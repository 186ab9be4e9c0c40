"""``ActorSystem``: the one object the facade calls to reach the actors.

``Runtime.start()`` imports this module, builds one ``ActorSystem`` on its
store, and from then on ``Run``, ``Workflow`` and ``Runtime`` reach the
machinery only through its plain methods: start a run, resume one, cancel,
watch, subscribe, load, shut down. No pykka type or exception crosses this
seam: a stopped actor becomes ``RuntimeStoppedError`` or a settled event.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Final, Literal, TypeVar, cast, get_args

import pykka

from actors._direct import DirectWrites
from actors._dispatch import Dispatcher, tell_safely
from actors._events import EventLogs
from actors._here import RunsHere
from actors._pool import AsyncLoop, StepPool
from actors._queues import QueueGate
from actors._retention import Pruner
from actors._timer import Timers
from actors._watcher import StoreWatcher
from actors.claimer import Claimer, LeaseGuard
from actors.hooks import HookRunner
from actors.messages import (
    AbortRuns,
    Call,
    CancelOutcome,
    CancelRun,
    NotifyWhenIdle,
    RegistryMessage,
    ResumeOutcome,
    ResumeStep,
    RunActorMessage,
    RunDeleted,
    RunsClaimed,
    RunsDeleted,
    SnapshotSeen,
    SnapshotTaken,
    StartRun,
    StepActorMessage,
    StepBodiesEnded,
    StepWaitBegan,
    SubscribeRun,
    SupervisorMessage,
    UnsubscribeRun,
    UnwatchRun,
    WatchRun,
    WritesRefused,
)
from actors.registry import RegistryActor
from actors.run import refused_request, resume_fits
from actors.step import error_dict
from actors.supervisor import PendingRuns, SupervisorActor
from runtime import _clock, _otel
from runtime._errors import (
    RuntimeOverloadedError,
    RuntimeStoppedError,
    SnapshotFormatError,
    StoreError,
)
from runtime._model import TERMINAL_STATUSES, RunEvent, RunStatus
from runtime._options import RetentionPolicy
from runtime._plan import ExecutionPlan, split_item_path
from runtime._queue import Queue, QueueLimits
from runtime._snapshot import (
    Snapshot,
    canceled_record,
    decode,
    failed_record,
    mark_deadline_passed,
    next_record,
    read_another,
    resume_request_bytes,
    run_deadline,
    unpack,
)
from runtime._stores.base import (
    Claimed,
    ResumeRequest,
    ResumeRequested,
    ResumeRequestStore,
    SharedStore,
    SnapshotRecord,
    SnapshotStore,
    provides,
)
from runtime._stores.memory import MemoryStore
from runtime._sync import Channel, Latch, on_a_hook_thread, wait_for_a_run
from runtime._tracing import emit
from runtime._versions import matching_plan

__all__ = [
    "CALL_MESSAGES",
    "MESSAGE_RECEIVERS",
    "ROLES",
    "SHUTDOWN_GRACE",
    "ActorSystem",
    "CancelAnswer",
    "ExpireAnswer",
    "ResumeAnswer",
    "Role",
]


def _receivers() -> dict[str, frozenset[str]]:
    """Which actors handle each message, as the protocol's unions of what each accepts say."""
    handled: dict[str, set[str]] = {}
    for receiver, accepted in (
        ("Supervisor", SupervisorMessage),
        ("Registry", RegistryMessage),
        ("RunActor", RunActorMessage),
        ("StepActor", StepActorMessage),
    ):
        for kind in get_args(accepted):
            handled.setdefault(kind.__name__, set()).add(receiver)
    return {name: frozenset(receivers) for name, receivers in handled.items()}


MESSAGE_RECEIVERS: Final = _receivers()
"""Which actors handle each message type, by name (``CancelRun``: the supervisor and a run
actor): what the test kit's faults may name."""

CALL_MESSAGES: Final = frozenset(kind.__name__ for kind in Call.__subclasses__())
"""The names of the calls of a step's or a node's code (``CallStep``, ``CallMap``...)."""

Role = Literal["both", "worker", "client"]
"""What a runtime does on a shared store: start and run runs, only run them, or only start."""

ROLES: Final[tuple[Role, ...]] = ("both", "worker", "client")

_IDLE_ANSWER: Final = 0.1
"""Seconds a stop on the async steps' loop waits to learn whether any run is in progress."""

SHUTDOWN_GRACE: Final = 2.0
"""Seconds :meth:`ActorSystem.shutdown` gives, beyond its ``timeout``, to stop every actor
and thread it started: together, not each. What has not stopped by then (a step blocked
in user code, a hook that does not return) is left on its daemon thread."""

KILL_WAIT: Final = 0.05
"""Seconds :meth:`ActorSystem.kill` gives a step or hook in user code before leaving it."""

CANCEL_CHECK_EVERY: Final = 1.0
"""Seconds between two checks, while a cancel waits for its answer, that the actors still run."""

_RESUME_LOCKS: Final = 64
"""How many locks the runs' resumes share (by their run id's hash): one run's are in order."""

ResumeAnswer = Literal["recorded", "taken", "gone", "not_here", "stopped"]
"""What :meth:`ActorSystem.resume_waiting` says came of a resume (see :class:`ResumeOutcome`)."""

ExpireAnswer = Literal["canceled", "elsewhere", "later"]
"""What :meth:`ActorSystem.expire_unheld` did with a run whose deadline passed."""

CancelAnswer = Literal["recorded", "refused", "not_here"]
"""What :meth:`ActorSystem.cancel` says came of a cancel (see :class:`CancelOutcome`)."""

_RESUME_ANSWERS: Final[dict[ResumeOutcome, ResumeAnswer]] = {
    ResumeOutcome.RECORDED: "recorded",
    ResumeOutcome.TAKEN: "taken",
    ResumeOutcome.GONE: "gone",
    ResumeOutcome.NOT_HERE: "not_here",
    ResumeOutcome.STOPPED: "stopped",
}

_CANCEL_ANSWERS: Final[dict[CancelOutcome, CancelAnswer]] = {
    CancelOutcome.RECORDED: "recorded",
    CancelOutcome.REFUSED: "refused",
    CancelOutcome.NOT_HERE: "not_here",
}


_T = TypeVar("_T")


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
        role: On a shared store, what this runtime does (see :data:`Role`).
        step_loop: The application's event loop, to run ``async def`` step
            bodies on; ``None`` runs them on a loop thread of the system's own.

    On a shared store (:class:`~runtime._stores.base.SharedStore`) runs beyond
    ``max_concurrent_runs`` wait in the store, not here: a run started here is
    held and run here only while there is room, and the others are claimed
    by whichever worker has room first (:mod:`actors.claimer`). Waits and
    watches of runs that other processes drive read the store
    (:mod:`actors._watcher`).
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
        role: Role = "both",
        step_loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.store = store
        self.role = role
        self._on_give_up = on_give_up
        self._capacity = max_concurrent_runs
        self.shared: SharedStore | None = (
            cast("SharedStore", store) if store.durable and provides(store, SharedStore) else None
        )
        # One that records resumes for a run's driver (callboard's SQLite and PostgreSQL).
        self.requests: ResumeRequestStore | None = (
            cast("ResumeRequestStore", store)
            if self.shared is not None and provides(store, ResumeRequestStore)
            else None
        )
        self.claimer: Claimer | None = None
        self._take: Callable[[Sequence[Claimed], int], None] = lambda _claimed, _gen: None
        self.watcher: StoreWatcher | None = None
        shared = self.shared is not None
        # On a shared store runs wait in the store, never in this process's memory.
        self.pending = None if max_pending_runs is None or shared else PendingRuns(max_pending_runs)
        if max_pending_runs is not None and shared:
            emit(
                logging.WARNING,
                "max_pending_runs_ignored",
                max_pending_runs=max_pending_runs,
                reason="on a shared store runs wait in the store, where this bound does not apply",
            )
        self.dispatcher = Dispatcher()
        self.loop = AsyncLoop(step_loop)
        self.pool = StepPool(self.loop, limit=max_step_threads, on_wait=self._step_wait_began)
        self.timers = Timers()
        self.hooks = HookRunner()
        if self.shared is not None:
            self.watcher = StoreWatcher(self.shared, self._seen, look=self._look_for_deleted)
        # Queues: on a shared store their limits are kept by the store (defined once each
        # here), on a store in memory by the gate the supervisor admits runs through.
        self.gate: QueueGate[StartRun] = QueueGate()
        self._defined: dict[str, QueueLimits] = {}
        self._defined_lock = threading.Lock()
        self._queues_in_use = False
        # Runs whose cancel a call here asked another process for (oldest first, at most
        # CANCELS_ASKED_KEPT): a later cancel() of one, after the first gave up waiting
        # (CancelError), is told it canceled the run, not that another call did.
        self.cancels_asked: dict[str, None] = {}
        # Runs a cancel here took from no actor, whose hooks run before their end is
        # recorded (see take_unheld_end): another cancel of one waits for that end.
        self._ending: dict[str, threading.Event] = {}
        self._ending_lock = threading.Lock()
        # A resume's compare-and-set and its StartRun go together under its run's lock, as
        # does a later resume's ResumeStep: one that read the run resumed finds its actor
        # (or its start) in the supervisor's inbox before its own message.
        self._resume_locks = tuple(threading.Lock() for _ in range(_RESUME_LOCKS))
        logs = EventLogs()
        waiters: dict[str, dict[threading.Event | Latch, None]] = {}
        self.registry = RegistryActor.start(
            store,
            self.hooks,
            self._gave_up,
            self.watcher,
            self._hand_back,
            logs=logs,
            waiters=waiters,
        )
        # A store that refuses every write too long says so (SQLite, PostgreSQL): waits wake.
        self._on_refusal: Callable[[Callable[[], None] | None], None] | None = getattr(
            store, "set_on_refusal", None
        )
        if self._on_refusal is not None:
            self._on_refusal(self._writes_refused)
        self._waiting: deque[StartRun] = deque()
        # On a shared store: the runs with an actor here, which its claims leave alone.
        self._here = RunsHere() if shared else None
        self.supervisor = SupervisorActor.start(
            self.dispatcher,
            registry=self.registry,
            pool=self.pool,
            timers=self.timers,
            hooks=self.hooks,
            max_concurrent_runs=None if shared else max_concurrent_runs,
            pending=self.pending,
            durable=store.durable,
            give_up=self._gave_up,
            shared=shared,
            gate=self.gate,
            waiting=self._waiting,
            # Only a MemoryStore is known to take writes from any thread.
            direct=DirectWrites(store, logs.run_ids, waiters)
            if isinstance(store, MemoryStore)
            else None,
            here=self._here,
            holds=None if self.shared is None else self.shared.holds,
            # In memory a suspended run's deadline is a timer here; a shared store keeps
            # it, and the claimer of whichever worker is alive cancels the run.
            expire=None if shared else self._expire_suspended,
        )
        if not shared:
            # Step bodies counted as they run: one its run let go of (cancelled, timed
            # out) keeps its run's queue slot until it returns (a shared store's claimer
            # counts them through self._here). From the first run in a queue on: a
            # runtime without queues counts nothing at every step.
            bodies = RunsHere()
            bodies.on_free = self._bodies_ended
            self.pool.queued_here = bodies
        if isinstance(store, MemoryStore):
            # A run deleted by hand frees its start in its queue's rate window, as on a SQL
            # store, which counts the window from the runs it holds.
            store.on_delete = self._run_deleted
            # An end hook that returns after a stop stopped the registry: its run's end is
            # recorded still, before the stop fails what it finds unfinished, or after
            # (then the store keeps the failure, which came first).
            self.hooks.record_late = functools.partial(_kept_in, store)
        self.pruner = (
            None if retention is None else Pruner(store, retention, on_pruned=self.runs_deleted)
        )
        # A shutdown's wait for runs in progress, and whether hurry() cut it short.
        self._draining: threading.Event | None = None
        self._hurried_at: float | None = None
        _otel.add_source(self)  # its gauges, while OpenTelemetry metrics are configured

    def _bodies_ended(self) -> None:
        """In memory: step bodies that outlived their runs returned; their slots are free."""
        tell_safely(self.supervisor, StepBodiesEnded())

    # --- gauges (runtime._otel.MetricSource) -------------------------------------------

    def queued_runs(self) -> int:
        """Runs waiting for room: in a shared store's queue, else in the supervisor's."""
        if self.shared is not None:
            return len(self.shared.queued())
        return len(self._waiting)

    def step_threads(self) -> int:
        """Threads in the step pool now."""
        return self.pool.size

    def lease_renewed_ago(self) -> float | None:
        """Seconds since its lease on its shared store was renewed; ``None`` without a lease."""
        claimer = self.claimer
        return None if claimer is None else claimer.lease_renewed_ago()

    def _step_wait_began(self, run_id: str) -> None:
        """A step blocks until ``run_id`` ends: its run's room may go to another run now."""
        tell_safely(self.supervisor, StepWaitBegan(run_id=run_id))
        claimer = self.claimer
        if claimer is not None:
            claimer.poke("settled")

    def _run_deleted(self, run_id: str) -> None:
        """The memory store deleted a run: the supervisor's queues forget its start."""
        tell_safely(self.supervisor, RunDeleted(run_id=run_id))

    def runs_deleted(self, run_ids: Sequence[str] | None = None) -> None:
        """Runs were deleted (``run_ids``) or pruned (``None``): the registry forgets their logs.

        Args:
            run_ids: The runs deleted; ``None`` for a prune, which does not say which.
        """
        tell_safely(self.registry, RunsDeleted(run_ids=None if run_ids is None else tuple(run_ids)))

    def _look_for_deleted(self) -> None:
        """The watcher's look: the registry forgets the logs of runs deleted by anyone."""
        tell_safely(self.registry, RunsDeleted(looked=True))

    def _writes_refused(self) -> None:
        """On the store's writer thread: it refused every write too long; every wait is told."""
        tell_safely(self.registry, WritesRefused())

    def _seen(self, run_id: str, record: SnapshotRecord | None) -> None:
        with contextlib.suppress(pykka.ActorDeadError):
            self.registry.tell(SnapshotSeen(run_id=run_id, record=record))

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

    def start_run(
        self,
        plan: ExecutionPlan,
        snapshot: Snapshot,
        record: SnapshotRecord,
        queue: Queue | None = None,
    ) -> bool:
        """Record a new run and hand it to the supervisor; ``False`` if its id is taken.

        A run with a ``queue`` waits in it (in the store, on a shared store)
        until the queue's limits let it start.

        Raises:
            RuntimeOverloadedError: if ``max_pending_runs`` runs wait to start;
                nothing is recorded.
            QueueFullError: if the queue's ``max_queued`` runs wait; nothing is recorded.
            RuntimeStoppedError: if the actors have stopped; a run recorded just
                before that is recorded failed, never left pending.
        """
        if self.registry.actor_stopped.is_set():  # is_alive(), without its frame
            raise RuntimeStoppedError("the runtime's registry has stopped; no run can start")
        if self.shared is not None:
            if queue is not None:
                self._define(self.shared, queue.limits)
            return self._start_shared(self.shared, plan, snapshot, record)
        if queue is not None:
            self.gate.reserve(queue.limits, record.run_id)  # raises QueueFullError
            try:
                return self._start_here(plan, snapshot, record, queued=True)
            except BaseException:
                self.gate.unreserve(queue.name)
                raise
        return self._start_here(plan, snapshot, record, queued=False)

    def queue_limits(self, name: str) -> QueueLimits | None:
        """The limits of the queue ``name`` as this process last used them, if it did."""
        with self._defined_lock:
            defined = self._defined.get(name)
        return defined if defined is not None else self.gate.limits(name)

    def _define(self, store: SharedStore, limits: QueueLimits) -> None:
        """Keep a queue's limits in the store, once per definition seen in this process."""
        self._queues_in_use = True
        with self._defined_lock:
            if self._defined.get(limits.name) == limits:
                return
        store.define_queue(limits)
        with self._defined_lock:
            self._defined[limits.name] = limits

    def _start_here(
        self, plan: ExecutionPlan, snapshot: Snapshot, record: SnapshotRecord, *, queued: bool
    ) -> bool:
        """Record a new run in a store nobody else shares, and hand it to the supervisor."""
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
            if queued:
                self.gate.unreserve(snapshot["queue"]["name"])
            return False
        try:
            self.supervisor.tell(
                StartRun(plan=plan, snapshot=snapshot, admitted=pending is not None, queued=queued)
            )
        except pykka.ActorDeadError as exc:
            _give_back(pending)
            # The run is recorded but nobody will run it: record it failed, so
            # that it never sits pending for ever, and tell the caller.
            stopped = RuntimeStoppedError("the runtime stopped before the run could start")
            error = error_dict(stopped, with_traceback=False)
            self.store.save((failed_record(snapshot, error, _clock.time()),))
            raise stopped from exc
        return True

    def _start_shared(
        self, store: SharedStore, plan: ExecutionPlan, snapshot: Snapshot, record: SnapshotRecord
    ) -> bool:
        """Record a new run on a shared store: held and run here if there is room, else queued.

        A run with a queue is always queued: only a claim, which counts the
        queue's runs over every worker, may let it start.
        """
        claimer = self.claimer
        hold = record.queue is None and claimer is not None and claimer.reserve()
        try:
            if not store.create(record, hold=hold):
                return False
        finally:
            if hold and claimer is not None:
                claimer.unreserve()
        if hold:
            try:
                self.supervisor.tell(StartRun(plan=plan, snapshot=snapshot))
            except pykka.ActorDeadError as exc:
                # Held here, but nobody here will run it: the store hands it back to
                # the queue as it closes, for any worker.
                raise RuntimeStoppedError(
                    "the runtime stopped before the run could start; it waits in the store "
                    "for another worker"
                ) from exc
        return True

    def resume(
        self,
        plan: ExecutionPlan,
        snapshot: Snapshot,
        record: SnapshotRecord,
        expected_seq: int,
        *,
        reopen: bool = False,
        requested: str | None = None,
    ) -> bool:
        """Record a resume (a compare-and-set on ``expected_seq``) and run the run on.

        On a shared store the run is held and run here if there is room, and
        otherwise queued for whichever worker has room. ``False`` (and nothing
        changed) if the run's stored ``seq`` is no longer ``expected_seq``, or
        (on a shared store) a resume request waits for a suspension it resumes
        (``record.taken``), unless it carries that request out (``requested``,
        its id; then also if that request waits no more). With
        ``reopen``, the run has ended and is restarted in place.

        Raises:
            RuntimeStoppedError: if the actors have stopped.
        """
        with self._resume_lock(record.run_id):
            return self._resume_held(
                plan, snapshot, record, expected_seq, reopen, requested=requested
            )

    def _resume_lock(self, run_id: str) -> threading.Lock:
        return self._resume_locks[hash(run_id) % _RESUME_LOCKS]

    def _resume_held(
        self,
        plan: ExecutionPlan,
        snapshot: Snapshot,
        record: SnapshotRecord,
        expected_seq: int,
        reopen: bool,
        *,
        requested: str | None = None,
    ) -> bool:
        store = self.shared
        queued: str | None = None
        if store is None:
            # A restart waits in its queue as a start does, and is refused as one is when
            # the queue is full (before anything changes): never past ``max_queued``.
            queued = self._reserve_restart(snapshot, record.run_id) if reopen else None
            try:
                replaced = self.store.replace(record, expected_seq, reopen=reopen)
            except BaseException:
                if queued is not None:
                    self.gate.unreserve(queued)
                raise
            if not replaced:
                if queued is not None:
                    self.gate.unreserve(queued)
                return False
            hold = True
        else:
            claimer = self.claimer
            # A run of a queue goes back through a claim, which counts the queue's runs.
            hold = "queue" not in snapshot and claimer is not None and claimer.reserve()
            try:
                # Named only when set: a shared store of the user's written before resume
                # requests still resumes suspended runs.
                if requested is None:
                    applied = store.replace(record, expected_seq, hold=hold, reopen=reopen)
                else:
                    applied = store.replace(
                        record, expected_seq, hold=hold, reopen=reopen, requested=requested
                    )
                if not applied:
                    return False
            finally:
                if hold and claimer is not None:
                    claimer.unreserve()
        if hold:
            try:
                self.supervisor.tell(
                    StartRun(plan=plan, snapshot=snapshot, queued=queued is not None)
                )
            except pykka.ActorDeadError as exc:
                if queued is not None:
                    self.gate.unreserve(queued)
                raise RuntimeStoppedError(
                    "the runtime stopped before the run could resume"
                ) from exc
        return True

    def _reserve_restart(self, snapshot: Snapshot, run_id: str) -> str | None:
        """In memory: take a waiting place in its queue for a run about to restart.

        Returns:
            The queue's name, or ``None`` for a run in no queue this runtime knows.

        Raises:
            QueueFullError: if the queue's ``max_queued`` runs wait; nothing is changed.
        """
        entry = snapshot.get("queue")
        limits = None if not entry else self.gate.limits(entry["name"])
        if limits is None:
            return None
        self.gate.reserve(limits, run_id, restart=True)
        return limits.name

    def resume_waiting(
        self,
        run_id: str,
        path: str,
        data: Any,
        *,
        read_seq: int | None = None,
        read_run: tuple[float, int] | None = None,
    ) -> ResumeAnswer:
        """Resume one suspension of a run that runs on here, whose other suspensions were resumed.

        ``read_seq`` and ``read_run`` say where the caller read ``path`` waiting:
        the actor takes the resume only for that suspension (see :class:`ResumeStep`).

        Returns once the answer is known: ``"recorded"`` once the run's actor took
        the resume and the store has the record that holds it (committed, on a
        durable store); ``"taken"`` if the actor drives the run and the suspension
        does not wait (another resume took it, or the one that waits now came
        after the one read); ``"gone"`` if the actor stopped
        driving the run first (the caller reads it again once it settles);
        ``"not_here"`` if no actor of this runtime drives it; ``"stopped"`` if
        the runtime stopped the actor after it took the resume, which may still
        be committed. Nothing changed after ``"taken"``, ``"gone"`` or ``"not_here"``.

        Raises:
            RuntimeStoppedError: if the actors have stopped, or stop before answering.
        """
        answer: Future[ResumeOutcome] = Future()
        message = ResumeStep(
            run_id=run_id,
            path=path,
            data=data,
            reply=_settler(answer),
            read_seq=read_seq,
            read_run=read_run,
        )
        try:
            with self._resume_lock(run_id):
                self.supervisor.tell(message)
        except pykka.ActorDeadError as exc:
            raise RuntimeStoppedError("the runtime is stopped") from exc
        return _RESUME_ANSWERS[self._answer(answer, f"the resume of run {run_id!r}")]

    def request_resume(
        self, record: SnapshotRecord, snapshot: Snapshot, path: str, data: Any
    ) -> ResumeRequested | None:
        """Record a resume of a suspension that waits while its run runs on, for its driver.

        On a shared store the resume is a request in the store (see
        :meth:`~runtime._stores.base.ResumeRequestStore.request_resume`), committed
        when this returns ``"recorded"``, which the worker that drives the run
        carries out (this one's claimer is told at once). ``record`` is the
        run's record ``path`` was read waiting in, ``snapshot`` its snapshot;
        ``data`` the validated resume data. ``None`` on a store that takes no
        requests (in memory, or a shared store of the user's): the caller hands
        the resume to the run's actor here (:meth:`resume_waiting`).

        Raises:
            StoreError: as the store's write does.
        """
        store = self.requests
        if store is None:
            return None
        blob = resume_request_bytes(data, snapshot)
        return store.request_resume(
            record.run_id, path, blob, seq=record.seq, created_at=record.created_at
        )

    def _resume_requests(self) -> list[ResumeRequest]:
        """The resume requests this worker may act on (the claimer's look at them).

        Of suspended runs, only those of the workflows registered here: those of
        others, however many, must not crowd out the rest of a look.
        """
        store = self.requests
        assert store is not None
        return store.resume_requests(self._plans_of[0]())

    def _resume_requested(self, request: ResumeRequest, done: Callable[[], None]) -> None:
        """On the claimer's thread: act on a resume request of the store's; ``done`` once settled.

        A request of a run held here goes to its actor (:class:`ResumeStep`,
        ``stored``); one of a run that suspended before its worker took the
        request is carried out here, by the resume's compare-and-set; one of a
        run that ended (or is gone) is dropped, as are those that cannot be
        carried out: bytes that do not decode, data the step's ``resume_schema``
        refuses, a suspension that waits no more. A run held by another worker,
        or queued, is left for the worker that takes it.
        """
        store = self.requests
        assert store is not None
        status = request.status
        if status is None or status in TERMINAL_STATUSES:
            store.drop_resume_request(request)  # its run ended first: nothing to resume
            done()
            return
        if not request.held and (
            status != RunStatus.SUSPENDED or request.workflow_id not in self._plans_of[0]()
        ):
            done()  # another worker's, or queued; or a workflow not registered here
            return
        try:
            unpacked = unpack(request.data)
            data = unpacked["resume_data"]
            read_seq = unpacked.get("read_seq")
            read_run = unpacked.get("run")
        except (SnapshotFormatError, KeyError, TypeError) as exc:
            refused_request(request.run_id, request.path, f"its bytes do not decode: {exc}")
            store.drop_resume_request(request)
            done()
            return
        if not isinstance(read_seq, int) or isinstance(read_seq, bool):
            read_seq = None
        if not request.held:
            try:
                self._resume_suspended(store, request, data, read_seq)
            finally:
                done()
            return

        def answered(outcome: ResumeOutcome) -> None:
            if outcome in (ResumeOutcome.TAKEN, ResumeOutcome.REFUSED):
                if outcome is ResumeOutcome.TAKEN:
                    emit(
                        logging.INFO,
                        "resume_request_dropped",
                        run_id=request.run_id,
                        step_id=request.path,
                        reason="the suspension waits no more: the run went on past it",
                    )
                with contextlib.suppress(StoreError):
                    store.drop_resume_request(request)
            done()  # else carried out, or left for a later look (not here yet, gone)

        message = ResumeStep(
            run_id=request.run_id,
            path=request.path,
            data=data,
            reply=answered,
            stored=True,
            read_seq=read_seq,
            read_run=_read_run(read_run),
        )
        try:
            with self._resume_lock(request.run_id):
                self.supervisor.tell(message)
        except pykka.ActorDeadError:
            done()

    def _resume_suspended(
        self, store: ResumeRequestStore, request: ResumeRequest, data: Any, read_seq: int | None
    ) -> None:
        """Carry out a resume request of a run that suspended before its worker took it.

        As ``run.resume()`` resumes a suspended run, with a compare-and-set that
        takes the request too (``requested``): one that loses to another change
        leaves the request for the next look. The compare-and-set holds only
        while that request waits: read before another worker carried it out, it
        would resume a later suspension of the same path with its data again.
        A suspension there whose id is past ``read_seq``, the seq the request
        was read at, is such a later one too: the request is dropped.
        """
        plans, versions = self._plans_of
        record = store.load(request.run_id)
        if record is None or record.status != RunStatus.SUSPENDED:
            return
        try:
            snapshot = decode(record.data, record.run_id)
        except SnapshotFormatError:
            return  # damaged: it can never go on (a cancel ends it), nor be resumed
        deadline = run_deadline(snapshot)
        if deadline is not None and deadline <= _clock.time():
            return  # its time is up: the claimer's look for those cancels it (and then drops this)
        workflow_id = snapshot["workflow_id"]
        plan = matching_plan(snapshot, plans().get(workflow_id), versions().get(workflow_id, {}))
        path = request.path
        if plan is None:
            return  # not a definition registered here: a worker that has it resumes it
        by_id = plan.by_id
        step = by_id.get(path) or by_id.get(split_item_path(path)[0])
        if (
            step is None
            or path not in (snapshot["suspended"] or {})
            or path in (snapshot["resume"] or {})
            or read_another(snapshot, path, read_seq)
        ):
            emit(
                logging.INFO,
                "resume_request_dropped",
                run_id=request.run_id,
                step_id=path,
                reason="the suspension waits no more",
            )
            store.drop_resume_request(request)
            return
        if not resume_fits(step, path, data, request.run_id):
            store.drop_resume_request(request)
            return
        snapshot["status"] = RunStatus.RUNNING.value
        snapshot["resume"] = {path: data}
        snapshot["resumed"] = True  # what tells a later resume that this one won
        resumed = next_record(snapshot, _clock.time())._replace(taken=(path,))
        with contextlib.suppress(RuntimeStoppedError):
            self.resume(plan, snapshot, resumed, record.seq, requested=request.request_id)

    def cancel(self, run_id: str) -> CancelAnswer:
        """Cancel a run that an actor of this runtime drives or holds; what came of it.

        Returns only once the answer is known: ``"recorded"`` once the store
        has taken the run's canceled snapshot (committed it, on a durable
        store; the caller reads back which end the store kept), ``"refused"``
        if the run's actor stopped but the store did not take the snapshot,
        ``"not_here"`` at once if no actor of this runtime drives or holds it.
        On a shared store a refusal of a run the store no longer holds is
        ``"not_here"`` too: its actor here was fenced off at that write (this
        worker was reaped while it stalled), and the run is the store's, or
        another worker's, to cancel. The workflow's hooks run before the
        snapshot is recorded, so this waits for them too.

        Raises:
            RuntimeStoppedError: if the actors have stopped, or stop before answering.
        """
        answer: Future[CancelOutcome] = Future()
        try:
            self.supervisor.tell(CancelRun(run_id=run_id, reply=_settler(answer)))
        except pykka.ActorDeadError as exc:
            raise RuntimeStoppedError("the runtime is stopped") from exc

        # Every path answers: the one that records the canceled snapshot, once it is
        # recorded or refused; an actor that stops before reading the message.
        def answered() -> CancelAnswer:
            said = _CANCEL_ANSWERS[self._answer(answer, f"the cancel of run {run_id!r}")]
            shared = self.shared
            if said == "refused" and shared is not None and not shared.holds(run_id):
                return "not_here"
            return said

        return _waiting_for(run_id, answered)

    def _answer(self, answer: Future[_T], what: str) -> _T:
        """What ``answer`` is given: a cancel's, a resume's, an end's (``what``).

        Every path gives one. Waiting in slices only guards against actors stopped
        under the call at shutdown; then the store commits what it was handed as it
        closes, and the answer gets that last chance.

        Raises:
            RuntimeStoppedError: if the actors stopped without answering.
        """
        while True:
            try:
                return answer.result(CANCEL_CHECK_EVERY)
            except FutureTimeout:
                if self.supervisor.is_alive() or self.registry.is_alive():
                    continue
            try:
                return answer.result(SHUTDOWN_GRACE)
            except FutureTimeout:
                raise RuntimeStoppedError(
                    f"the runtime stopped before {what} was recorded"
                ) from None

    def load(self, run_id: str) -> SnapshotRecord | None:
        """The newest stored record of a run, or ``None``."""
        return self.store.load(run_id)

    def start_claiming(
        self,
        plans: Callable[[], Mapping[str, ExecutionPlan]],
        versions: Callable[[], Mapping[str, Mapping[str, ExecutionPlan]]] | None = None,
    ) -> None:
        """On a shared store: start the claimer, which runs queued runs of these workflows.

        It hands runs of dead workers back to the queue, claims what there is
        room for (runs left by a process that ended included), and passes on
        cancels asked for from elsewhere. A client claims nothing, but reaps.

        Args:
            plans: The definition new runs of each workflow use, by workflow id.
            versions: Every registered definition of each workflow, by workflow
                id then fingerprint: a claimed run goes on only on the one with
                its fingerprint (by default, each workflow's one in ``plans``).
        """
        every = versions or (
            lambda: {workflow_id: {plan.fingerprint: plan} for workflow_id, plan in plans().items()}
        )
        self._take = self._take_claimed(plans, every)
        self._plans_of = (plans, every)
        store = self.shared
        if store is None or self.claimer is not None:
            return
        store.join(
            role=self.role,
            workflows=sorted(plans()) if self.role != "client" else [],
            concurrency=self._capacity,
        )
        guard = LeaseGuard(store)
        if self.role != "client":
            # A step of a run this worker lost while it stalled does not start.
            self.pool.guard = guard
            self.pool.here = self._here  # a body outliving its actor keeps its run here
        self.claimer = Claimer(
            store,
            plans=plans,
            capacity=self._capacity,
            executes=self.role != "client",
            take=self._take,
            cancel=self._cancel_requested,
            requests=None if self.requests is None else self._resume_requests,
            resume=self._resume_requested,
            waiting=lambda: self.pool.waiting_held(store.holds),
            guard=guard,
            here=self._here,
            expire=functools.partial(self._expire_queued, plans, every),
        )
        if self._here is not None:
            self._here.on_free = self.claimer.poke
        store.set_hint(self._hint)

    def workflows_changed(self, workflow_ids: Sequence[str]) -> None:
        """The registered workflows changed: say so in the store, and claim their runs now.

        Runs handed back earlier for want of their definition (see
        :class:`~actors.messages.RunsClaimed`) may be claimed here again.
        """
        store, claimer = self.shared, self.claimer
        if store is None or claimer is None:
            return
        if self.role != "client":
            with contextlib.suppress(StoreError):
                store.join(role=self.role, workflows=workflow_ids, concurrency=self._capacity)
        claimer.definitions_changed()

    def _hand_back(self, run_ids: Sequence[str], generation: int) -> None:
        """On the registry's thread: claimed runs that cannot go on here go back to the queue."""
        if self.claimer is not None:
            self.claimer.park(run_ids, generation)

    def _take_claimed(
        self,
        plans: Callable[[], Mapping[str, ExecutionPlan]],
        versions: Callable[[], Mapping[str, Mapping[str, ExecutionPlan]]],
    ) -> Callable[[Sequence[Claimed], int], None]:
        def take(claimed: Sequence[Claimed], generation: int) -> None:
            if not self._queues_in_use and any(c.record.queue for c in claimed):
                self._queues_in_use = True  # from now on a run that settles frees a slot
            message = RunsClaimed(
                claimed=claimed,
                plans=plans(),
                supervisor=self.supervisor,
                versions=versions(),
                generation=generation,
            )
            self.registry.tell(message)  # dead: the runs go back to the queue at the stop

        return take

    def _cancel_requested(self, run_id: str, done: Callable[[], None]) -> None:
        # Not running here (not yet started, or on its way back to the queue for want of
        # its definition): the next look passes it on again, and a run handed back with
        # its cancel asked for is claimed to end.
        def reply(_outcome: CancelOutcome) -> None:
            done()

        try:
            self.supervisor.tell(CancelRun(run_id=run_id, reply=reply))
        except pykka.ActorDeadError:
            done()

    def _hint(self, kind: str, run_id: str) -> None:
        # A run queued, a cancel asked for, or a run released here (room to claim one).
        if self.claimer is not None and (
            kind != "settled" or self._capacity is not None or self._queues_in_use
        ):
            self.claimer.poke(kind, run_id)
        if self.watcher is not None:
            self.watcher.poke(kind, run_id)

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

    def unwatch(self, run_id: str, event: threading.Event | Latch) -> None:
        """Have the registry forget ``event`` of an earlier :meth:`watch` (a wait given up on)."""
        with contextlib.suppress(pykka.ActorDeadError):
            self.registry.tell(UnwatchRun(run_id=run_id, event=event))

    def subscribe(
        self,
        run_id: str,
        channel: Channel[RunEvent],
        from_seq: int | None = None,
        subscribed: Latch | None = None,
    ) -> None:
        """Have the registry put the run's events into ``channel``, then close it.

        With ``from_seq``, only the past events numbered above it
        (:data:`~actors.messages.FROM_NOW`: none); ``subscribed`` is set once
        the registry has taken the subscription. Once the registry has
        stopped, the channel is closed at once.
        """
        try:
            self.registry.tell(
                SubscribeRun(
                    run_id=run_id, channel=channel, from_seq=from_seq, subscribed=subscribed
                )
            )
        except pykka.ActorDeadError:
            channel.close()
            if subscribed is not None:
                subscribed.set()

    def unsubscribe(self, run_id: str, channel: Channel[RunEvent]) -> None:
        """Have the registry forget ``channel``: its watch was closed or dropped."""
        with contextlib.suppress(pykka.ActorDeadError):
            self.registry.tell(UnsubscribeRun(run_id=run_id, channel=channel))

    # --- ends that happen outside the actors -----------------------------------------------

    def take_unheld_end(self, ending: SnapshotRecord, expected_seq: int) -> bool:
        """Take a run no actor drives for its cancel: a compare-and-set on ``expected_seq``.

        ``ending`` reads ``running`` with its steps closed: a resume or a restart
        finds nothing to resume or restart, as for a run whose actor calls its end
        hooks. On a shared store the run is then held here with its cancel asked
        for, in the same commit, so that whoever takes it over, should this
        process die before :meth:`finish_unheld` records the end, calls the hooks
        and ends it ``canceled``. ``False`` (and nothing changed) if the run
        changed since it was read, or a worker holds it.
        """
        shared = self.shared
        if shared is None:
            taken = self.store.replace(ending, expected_seq)
        else:
            taken = shared.replace(ending, expected_seq, hold=True, canceling=True)
        if taken:
            with self._ending_lock:
                self._ending[ending.run_id] = threading.Event()
        return taken

    def expire_unheld(
        self, record: SnapshotRecord, plan_for: Callable[[Snapshot], ExecutionPlan | None]
    ) -> ExpireAnswer:
        """Cancel a run no actor drives whose ``run_timeout`` is up, as ``cancel()`` would.

        A suspended run (on a shared store also one asleep, queued, or left by a
        dead worker): a compare-and-set takes it, as :meth:`take_unheld_end` takes
        it for a cancel (of this and a racing resume or cancel, one wins), its
        hooks run, and then it is recorded ``canceled``, its error a
        ``RunDeadlineError``. Should this process die first, whoever takes the
        run over ends it so (its cancel is asked for, and its deadline has passed).

        Args:
            record: The run's stored record.
            plan_for: The registered definition the run goes on with (its hooks),
                or ``None`` if there is none here.

        Returns:
            ``"canceled"`` if it took the run and cancels it; ``"elsewhere"`` if
            that cannot be done here (no definition of its version is, or its
            snapshot cannot be read: a ``cancel()`` ends it, saying why);
            ``"later"`` if not now: its deadline has not passed by this
            process's clock, or it ended, changed since ``record`` was read, or
            a worker holds it.
        """
        if record.status in TERMINAL_STATUSES:
            return "later"
        try:
            snapshot = decode(record.data, record.run_id)
        except SnapshotFormatError:
            return "elsewhere"
        now = _clock.time()
        deadline = run_deadline(snapshot)
        if deadline is None or deadline > now:
            return "later"  # judged by the clock the run's deadline was set by
        plan = plan_for(snapshot)
        if plan is None:
            return "elsewhere"
        status = snapshot["status"]
        mark_deadline_passed(snapshot, now)
        snapshot["status"] = RunStatus.RUNNING.value  # its end under way, as a cancel's
        ending = next_record(snapshot, now)
        canceled = canceled_record(snapshot, now)  # what the hooks are told, then stored
        if not self.take_unheld_end(ending, record.seq):
            return "later"
        # No actor counts its end (asleep, suspended, or left by a dead worker).
        _otel.count_canceled_unheld(snapshot, now, status=status)
        run_id = record.run_id

        def recorded(_kept: bool) -> None:
            # Not kept: on a shared store the run stays held here with its cancel asked
            # for, and whoever takes it over ends it (its deadline has passed).
            with self._ending_lock:
                ended = self._ending.pop(run_id, None)
            if ended is not None:
                ended.set()

        self.hooks.finish(plan, snapshot, canceled, self.registry, recorded)
        return "canceled"

    def _expire_suspended(self, run_id: str, plan: ExecutionPlan) -> None:
        """A suspended run's deadline timer (in memory; on the timer thread): cancel it."""
        record = self.store.load(run_id)
        if record is not None and record.status == RunStatus.SUSPENDED:
            self.expire_unheld(record, lambda _snapshot: plan)

    def _expire_queued(
        self,
        plans: Callable[[], Mapping[str, ExecutionPlan]],
        versions: Callable[[], Mapping[str, Mapping[str, ExecutionPlan]]],
        record: SnapshotRecord,
    ) -> ExpireAnswer:
        """For the claimer: cancel a run nobody holds whose deadline passed, if it runs here."""

        def plan_for(snapshot: Snapshot) -> ExecutionPlan | None:
            fingerprint = snapshot.get("fingerprint")
            if fingerprint is None:  # recorded before versions: the one registered
                return plans().get(snapshot["workflow_id"])
            return versions().get(snapshot["workflow_id"], {}).get(fingerprint)

        return self.expire_unheld(record, plan_for)

    def ending_here(self, run_id: str) -> threading.Event | None:
        """Set once the end of a run taken by :meth:`take_unheld_end` is settled, if one is."""
        with self._ending_lock:
            return self._ending.get(run_id)

    def finish_unheld(
        self, plan: ExecutionPlan, snapshot: Snapshot, record: SnapshotRecord
    ) -> bool:
        """Call the hooks of a run taken by :meth:`take_unheld_end`, then record its end.

        As a run actor ends its run: ``record`` goes to the registry once the hooks
        return, and is stored under this worker's hold. Returns once the store has
        committed it (``True``) or did not take it (``False``: refused, or fenced off
        as another worker took the run over meanwhile).

        Raises:
            RuntimeStoppedError: if the actors stopped before the end was recorded.
        """
        answer: Future[bool] = Future()

        def recorded(kept: bool) -> None:
            with contextlib.suppress(InvalidStateError):
                answer.set_result(kept)

        def kept() -> bool:
            return self._answer(answer, f"the cancel of run {record.run_id!r}")

        try:
            self.hooks.finish(plan, snapshot, record, self.registry, recorded)
            return _waiting_for(record.run_id, kept)
        finally:
            with self._ending_lock:
                ended = self._ending.pop(record.run_id, None)
            if ended is not None:
                ended.set()

    def record(self, record: SnapshotRecord) -> None:
        """Hand a record the store already holds to the registry, for waiters and watchers."""
        with contextlib.suppress(pykka.ActorDeadError):
            self.registry.tell(SnapshotTaken(record=record, terminal=True, stored=True))

    # --- shutting down ---------------------------------------------------------------

    def shutdown(self, timeout: float | None, *, on_step_loop: bool = False) -> None:
        """Wait up to ``timeout`` seconds for runs in progress, stop everything, close the store.

        Runs still going then are failed (in memory) or halted (on a durable
        store, where the next runtime resumes them). The whole takes at most
        ``timeout`` plus :data:`SHUTDOWN_GRACE` seconds (and the store's close);
        a :meth:`hurry` from another thread ends the wait for runs at once.
        ``on_step_loop``: the caller blocks the loop of the async steps, so no
        run in progress could end meanwhile: it waits for none (and says so).
        """
        deadline = time.monotonic() + (timeout or 0.0) + SHUTDOWN_GRACE

        def left() -> float:
            hurried_at = self._hurried_at
            end = deadline if hurried_at is None else min(deadline, hurried_at + SHUTDOWN_GRACE)
            return max(0.05, end - time.monotonic())

        _otel.discard_source(self)
        if self.claimer is not None:
            self.claimer.stop(left())  # nothing more is claimed; the rest are drained
        if self.pruner is not None:
            self.pruner.stop(left())
        try:
            self._drain(timeout, left, on_step_loop=on_step_loop)
        finally:
            _stop_actor(self.supervisor, left())
            self.timers.stop(left())
            self.pool.stop(left())
            self.hooks.stop(left())  # their runs' last snapshots go to the registry after them
            _stop_actor(self.registry, left())  # after the runs: it records their last ones first
            self.loop.stop(left())
            self.dispatcher.stop(left())
            if self.watcher is not None:
                self.watcher.stop(left())
            if self.shared is not None:
                self.shared.set_hint(None)
            if self._on_refusal is not None:
                self._on_refusal(None)
            if not self.store.durable:
                self._record_decided_ends()
                self._fail_unfinished()
            store = self.store
            if isinstance(store, MemoryStore) and store.on_delete == self._run_deleted:
                store.on_delete = None  # a store kept after the stop holds none of this
            store.close()

    def kill(self) -> None:
        """Stop every actor and thread at once, as a crash of the process would.

        No run is drained, halted or failed, and the store is closed as it
        stands: on a shared store this worker's runs stay held until its lease
        runs out. Only for a test kit that has first made the actors drop their
        mail (:mod:`runtime._probes`), so that nothing more is recorded; the
        next runtime on the same durable store recovers the runs.
        """
        deadline = time.monotonic() + SHUTDOWN_GRACE
        _otel.discard_source(self)

        def left() -> float:
            return max(0.05, deadline - time.monotonic())

        if self.claimer is not None:
            self.claimer.stop(left())
        if self.pruner is not None:
            self.pruner.stop(left())
        _stop_actor(self.supervisor, left())
        self.timers.stop(left())
        # A crash waits for no user code: a step or hook that runs on keeps its daemon thread.
        self.pool.stop(KILL_WAIT)
        self.hooks.stop(KILL_WAIT)
        _stop_actor(self.registry, left())
        self.loop.stop(left())
        self.dispatcher.stop(left())
        # A crash frees its process's actors: none stays in pykka's registry to be found.
        self.dispatcher.abandon_actors()
        if self.watcher is not None:
            self.watcher.stop(left())
        if self._on_refusal is not None:
            self._on_refusal(None)
        if self.shared is not None:
            self.shared.set_hint(None)
            # Its worker's row and held runs stay, as a killed process leaves them: the
            # lease runs out, and another worker's reaper hands the runs back.
            self.shared.abandon()
        else:
            self.store.close()

    def hurry(self) -> None:
        """Cut a shutdown's wait for runs in progress short: halt them now.

        Safe from any thread, before or during :meth:`shutdown`; the shutdown
        then ends within :data:`SHUTDOWN_GRACE` seconds (and the store's close).
        """
        # Set before reading _draining, which _drain sets before reading this:
        # whichever comes second sees the other's write.
        self._hurried_at = time.monotonic()
        draining = self._draining
        if draining is not None:
            draining.set()

    def _drain(
        self, timeout: float | None, left: Callable[[], float], *, on_step_loop: bool
    ) -> None:
        """Wait for the runs in progress; then fail those still going (halt them, if durable)."""
        try:
            idle = threading.Event()
            self._draining = idle  # before looking at _hurried_at: see hurry()
            # Told the end of the wait, the supervisor also answers once every run left only
            # waits on a timer due after it (a sleep, a rate window); those are halted now.
            until = None if timeout is None or on_step_loop else time.monotonic() + timeout
            self.supervisor.tell(NotifyWhenIdle(event=idle, until=until))
            if on_step_loop:
                # Only for the supervisor's answer: with the loop blocked, no run ends.
                timeout = _IDLE_ANSWER if timeout is None else min(timeout, _IDLE_ANSWER)
            if (
                self._hurried_at is None
                and idle.wait(timeout)
                and self._hurried_at is None
                and until is None
            ):
                return
            if on_step_loop:
                emit(
                    logging.WARNING,
                    "stop_blocks_step_loop",
                    hint="stop() was called on the event loop that runs this runtime's async "
                    "steps, and blocks it: no run in progress could end, so they were halted "
                    "at once; await rt.astop() (or use async with) to let them end",
                )
            aborted = threading.Event()
            # A durable store keeps a halted run unfinished, and the next runtime
            # on it resumes the run; in memory it would be lost, so it fails.
            error = None if self.store.durable else _stopped_error()
            self.supervisor.tell(AbortRuns(error=error))
            self.supervisor.tell(NotifyWhenIdle(event=aborted))
            aborted.wait(left())
        except pykka.ActorDeadError:
            emit(logging.ERROR, "supervisor_found_dead_at_stop")

    def _record_decided_ends(self) -> None:
        # A run whose end hooks outlasted the stop ended as they were told (success,
        # say): in memory, that is what it records, not the stop's failure. (On a
        # durable store it stays unfinished, and the next runtime calls its hooks again.)
        for ended in self.hooks.unrecorded_ends():
            kept = _kept_in(self.store, ended.record)
            if ended.on_recorded is not None:
                ended.on_recorded(kept)

    def _fail_unfinished(self) -> None:
        # With every actor stopped, a run still pending or running would stay so
        # for ever: only a broken machinery (a dead registry or supervisor)
        # leaves one behind. Record it failed rather than lose it.
        for record in self.store.unfinished():
            error = _stopped_error(record.run_id)
            self.store.save(
                (failed_record(decode(record.data, record.run_id), error, _clock.time()),)
            )


def _kept_in(store: SnapshotStore, record: SnapshotRecord) -> bool:
    """Save ``record`` in ``store``; whether the store kept it (not an end that came first)."""
    store.save((record,))
    stored = store.load(record.run_id)
    # The same seq and status: a failure the stop recorded first has the seq after the
    # run's last record, which may be this one's.
    return stored is not None and (stored.seq, stored.status) == (record.seq, record.status)


_Outcome = TypeVar("_Outcome", CancelOutcome, ResumeOutcome)


def _waiting_for(run_id: str, answer: Callable[[], _T]) -> _T:
    """``answer()``, which waits for what becomes of run ``run_id``; on a hook thread, as such.

    A hook that cancels another run waits for that run's hooks: its thread then
    does not count against the hooks' pool bound, so the other run's hooks get
    a thread (two hooks that cancelled each other's runs waited for ever, and
    the runs they had taken read ``running``). A step's cancel keeps its place
    among the runs (the README names the waits that give it up), and a test
    kit's clock does not jump while the other run's hooks do real work.
    """
    if not on_a_hook_thread():
        return answer()
    answers: list[_T] = []

    def wait(_timeout: float | None) -> bool:
        answers.append(answer())
        return True

    wait_for_a_run(wait, run_id, None)
    return answers[0]


def _read_run(value: Any) -> tuple[float, int] | None:
    """The run a resume request was read of (see ``resume_request_bytes``), if it says."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None  # a request of a callboard that did not say
    created_at, restarts = value
    if type(created_at) not in (float, int) or type(restarts) is not int:
        return None
    return created_at, restarts


def _settler(future: Future[_Outcome]) -> Callable[[_Outcome], None]:
    """A reply that settles ``future`` with the first outcome it is given, from any thread."""

    def settle(outcome: _Outcome) -> None:
        with contextlib.suppress(InvalidStateError):
            future.set_result(outcome)

    return settle


def _give_back(pending: PendingRuns | None) -> None:
    """Return the place of a run that was admitted but will not wait after all."""
    if pending is not None:
        pending.release()


def _stopped_error(run_id: str | None = None) -> dict[str, Any]:
    """The error of runs a stop fails; each run's actor puts in its own id (see ``AbortRun``)."""
    stopped = RuntimeStoppedError("the runtime stopped before the run ended", run_id=run_id)
    return error_dict(stopped, with_traceback=False)


def _stop_actor(ref: pykka.ActorRef[Any], timeout: float) -> None:
    try:
        ref.stop(timeout=timeout)
    except pykka.Timeout:
        emit(logging.WARNING, "actor_stop_timed_out", actor=str(ref))
