"""The supervisor actor: a run actor per run, a limit, sleeping runs, crashes as failures."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import pykka
from pykka import ActorDeadError

from actors._direct import DirectWrites
from actors._dispatch import DispatchedActor, Dispatcher, FaultBudget, tell_safely, unexpected
from actors._here import RunsHere, say_slot_held
from actors._pool import StepPool
from actors._queues import QueueGate
from actors._timer import TimerHandle, Timers
from actors.hooks import HookRunner
from actors.messages import (
    AbortRun,
    AbortRuns,
    CancelOutcome,
    CancelRun,
    DeadlinePassed,
    NotifyWhenIdle,
    QueuesDue,
    RecordFailure,
    ResumeOutcome,
    ResumeStep,
    RunCrashed,
    RunDeleted,
    RunEnded,
    RunParked,
    StartRun,
    StepBodiesEnded,
    StepWaitBegan,
    SupervisorMessage,
    WakeRun,
)
from actors.run import RunActor
from actors.step import error_dict
from runtime import _clock, _otel
from runtime._errors import RunCrashedError
from runtime._model import RunStatus
from runtime._plan import ExecutionPlan
from runtime._queue import Bucket, queue_entry, rank
from runtime._snapshot import (
    Snapshot,
    canceled_record,
    mark_deadline_passed,
    next_record,
    run_deadline,
)
from runtime._tracing import emit

__all__ = ["PendingRuns", "SupervisorActor"]


class PendingRuns:
    """How many runs wait to start, counted from any thread, bounded at admission.

    ``start_async`` takes a place (:meth:`admit`) before it records a run and
    sends ``StartRun(admitted=True)``; the supervisor gives the place back
    (:meth:`release`) when the run leaves its mailbox for a run actor, or
    leaves its queue (started, cancelled or aborted). A run that joins the
    queue without being admitted (woken from a sleep, resumed, recovered)
    cannot be refused but is counted while it waits (:meth:`add`), so that
    new starts wait for it. The count is never below the runs waiting, so
    the bound holds however the threads interleave.

    Args:
        limit: The most runs that may wait.
    """

    __slots__ = ("_count", "_lock", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._count = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """How many runs wait now."""
        return self._count

    def admit(self) -> bool:
        """Take a place for a new run; ``False`` if ``limit`` runs wait already."""
        with self._lock:
            if self._count >= self.limit:
                return False
            self._count += 1
            return True

    def add(self) -> None:
        """Count a run that waits without having been admitted (it may exceed ``limit``)."""
        with self._lock:
            self._count += 1

    def release(self, count: int = 1) -> None:
        """Give back the places of ``count`` runs that no longer wait."""
        with self._lock:
            self._count -= count


WAKE_BACKLOG: Final = 64
"""A run whose sleep is over gets an actor only while fewer actors wait for a dispatcher thread.

Thousands of sleeps that end together would otherwise each start a run actor at
once, all of them alive until the dispatcher gets round to them: the cyclic
garbage collector moved every one into its oldest generation and walked the
whole heap each time enough had (three full collections of ~45 ms each in W5's
wake-up of 10,000 runs). A run held back waits as its id, in order; it is
woken as the dispatcher catches up, not later than it would have run.
"""


@dataclass(frozen=True, slots=True)
class _WakesHeld:
    """The supervisor's note to itself: runs held back by :data:`WAKE_BACKLOG` may wake now."""


def _wake(supervisor: pykka.ActorRef[Any], run_id: str) -> None:
    """A sleeping run's timer: the supervisor starts it again (on the timer thread)."""
    try:  # tell_safely, without its call once per sleep (and not suppress(): three calls)
        supervisor.tell(WakeRun(run_id=run_id))
    except ActorDeadError:
        return  # stopped: on_stop cancelled the other timers; this one had fired


def _deadline_due(supervisor: pykka.ActorRef[Any], run_id: str) -> None:
    """The deadline timer of a run suspended or waiting for room (in memory; timer thread)."""
    tell_safely(supervisor, DeadlinePassed(run_id=run_id))


class SupervisorActor(DispatchedActor):
    """Spawns and watches the run actors of one runtime, and wakes its sleeping runs.

    pykka has no death-watch, so each run actor reports to its supervisor: its
    end (:class:`RunEnded`), its own failure (:class:`RunCrashed`), which the
    supervisor turns into a ``failed`` run instead of a hung one, or that it
    sleeps or suspends (:class:`RunParked`). A sleeping run holds no actor:
    the supervisor keeps its snapshot and a timer, and starts a new run actor
    from the snapshot when the timer fires. Runs beyond
    ``max_concurrent_runs`` wait in the order they were started (or woken);
    with ``pending``, each holds a place in it until it leaves the queue.
    On a store in memory, runs with a queue wait in ``gate`` until their
    queue's limits let them start (a shared store's claims enforce those).
    """

    survives_faults = True  # one bad message is logged; every other run goes on

    _start_placed: StartRun | None
    """The StartRun its handler has placed: in a wait, or with an actor (see on_fault)."""
    _crash_told: RunCrashed | None
    """The RunCrashed whose failure its handler has told the registry (see on_fault)."""
    _woken: tuple[str, ExecutionPlan] | None
    """The run (and plan) the WakeRun being handled took from the sleepers (see on_fault)."""

    def on_fault(self, error: BaseException, message: Any = None) -> None:
        """Make good what the message it failed on leaves undone; count the fault.

        A start or a wake failed on fails its run, which would otherwise never
        end, and a start gives back the places it held (in ``max_pending_runs``,
        in its queue's ``max_queued``); a run's end or crash failed on is taken
        again (its actor out of the table, the room it leaves given on), so that
        its slot is not held for ever and a stop does not wait for it. Too many
        faults too fast and the runtime stops, saying why.
        """
        try:
            if isinstance(message, StartRun):
                # Placed, it holds its places where it is, or failed of its own start
                # (_spawn_taken) with its places given on: nothing is left to make good.
                if self._start_placed is not message:
                    self._give_back_places(message)
                    self._start_failed(message.snapshot["run_id"], message.plan, error, "started")
            elif isinstance(message, WakeRun):
                sleeping = self._sleeping.pop(message.run_id, None)
                plan = None if sleeping is None else sleeping[0]
                woken = self._woken
                if plan is None and woken is not None and woken[0] == message.run_id:
                    plan = woken[1]  # taken from the sleepers already: its hooks are called
                self._start_failed(message.run_id, plan, error, "woken")
            elif isinstance(message, RunEnded | RunCrashed):
                if self._drives(message.run_id, message.actor):
                    if isinstance(message, RunCrashed) and self._crash_told is not message:
                        # Failed before it told the failure: told now, with the plan its
                        # actor ran (still in the table), so that its hooks are called.
                        # Told already, it is not told again: the hooks of a failure told
                        # twice could both run, the second before the first is recorded.
                        running = self._runs.get(message.run_id)
                        plan = running[1] if running is not None else None
                        failure = RecordFailure(
                            run_id=message.run_id, error=message.error, plan=plan
                        )
                        tell_safely(self._registry, failure)
                    self._forget(message.run_id)
                self._ended(None)
        except Exception:
            emit(
                logging.ERROR,
                "supervisor_fault_not_made_good",
                message=type(message).__name__,
                exc_info=True,
            )
        finally:
            self._start_placed = self._crash_told = self._woken = None
            self._faults.spend(self, error)

    def _give_back_places(self, message: StartRun) -> None:
        """A start failed on before it got to a wait or an actor: give back what it held.

        Its places are passed on (or given back) only where it gets to: left held,
        each one kept a queue (or the runtime) one run short for good, refusing
        starts with ``QueueFullError`` (or ``RuntimeOverloadedError``).
        """
        if self._holds_start(message.snapshot["run_id"]):
            return  # its actor started, and only what came after failed
        if message.queued:
            self._gate.unreserve(message.snapshot["queue"]["name"])
        if message.admitted:
            self._release(1)

    def _holds_start(self, run_id: str) -> bool:
        """Whether a start of ``run_id`` got to an actor or to a wait here."""
        return (
            run_id in self._runs
            or any(waiting.snapshot["run_id"] == run_id for waiting in self._waiting)
            or (self._gated and run_id in self._gate)
        )

    def _start_failed(
        self, run_id: str, plan: ExecutionPlan | None, error: BaseException, verb: str
    ) -> None:
        """A start's (or wake's) handler failed: the run fails, unless it got to an actor or a wait.

        Left as it was, the run would stay pending or asleep (in memory) or be taken
        again only by the next runtime, and whoever waits on it would wait for ever.
        Without ``plan`` (a wake that had taken the run already) the run is failed
        from its stored record, its hooks not called.
        """
        if self._holds_start(run_id):
            return
        crash = RunCrashedError(
            f"run {run_id!r} could not be {verb}: {type(error).__name__}: {error}",
            run_id=run_id,
        )
        failure = RecordFailure(run_id=run_id, error=error_dict(crash), plan=plan)
        tell_safely(self._registry, failure)
        self._gone_from_here(run_id)

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        registry: pykka.ActorRef[Any],
        pool: StepPool,
        timers: Timers,
        hooks: HookRunner,
        max_concurrent_runs: int | None,
        pending: PendingRuns | None = None,
        durable: bool = False,
        give_up: Callable[[str], None] | None = None,
        shared: bool = False,
        gate: QueueGate[StartRun] | None = None,
        waiting: deque[StartRun] | None = None,
        direct: DirectWrites | None = None,
        here: RunsHere | None = None,
        holds: Callable[[str], bool] | None = None,
        expire: Callable[[str, ExecutionPlan], None] | None = None,
    ) -> None:
        super().__init__(dispatcher)
        # In memory: what cancels a suspended run at its deadline (DeadlinePassed), and the
        # timers of those and of runs that began and wait for room, with the run's plan, by
        # run (a resume, a spawn, a cancel of a waiting run, a delete or the stop drops one).
        self._expire = expire
        self._deadlines: dict[str, tuple[TimerHandle, ExecutionPlan]] = {}
        self._direct = direct
        self._here = here
        self._holds = holds
        # On a shared store a sleeping run is released to the store, which keeps its
        # wake time: whichever worker is alive then takes it, not a timer here.
        self._shared = shared
        self._faults = FaultBudget(give_up)
        self._start_placed = self._crash_told = self._woken = None
        self._pending = pending
        self._registry = registry
        self._pool = pool
        self._timers = timers
        self._hooks = hooks
        self._durable = durable
        self._limit = max_concurrent_runs
        self._runs: dict[str, tuple[pykka.ActorRef[Any], ExecutionPlan]] = {}
        # Runs waiting for room, oldest first. The system may hand in the deque, to
        # read its length (a gauge) from another thread: len() of a deque is atomic.
        self._waiting: deque[StartRun] = deque() if waiting is None else waiting
        self._sleeping: dict[str, tuple[ExecutionPlan, Snapshot, TimerHandle]] = {}
        self._idle_events: list[NotifyWhenIdle] = []
        self._gate: QueueGate[StartRun] = QueueGate() if gate is None else gate
        # Whether a run was ever offered to the gate: until then it is empty, and a run's
        # end need not ask it (its length is counted under its lock) for runs to admit.
        self._gated = False
        self._bucket_of: dict[str, Bucket] = {}  # runs admitted by the gate, executing
        # Slots of runs that let go of a step body still running (cancelled, timed out):
        # each executes in its queue until its body returns (StepBodiesEnded).
        self._held_by_bodies: dict[str, list[Bucket]] = {}
        self._rate_timer: TimerHandle | None = None
        # A sleeping run's timer calls this with the run's id: one callable for every
        # run, so that a timer holds only the id (a tuple of text, which the garbage
        # collector stops tracking), not a closure of its own.
        self._wake = functools.partial(_wake, self.actor_ref)
        # Runs whose timer fired, held back while the dispatcher is behind (WAKE_BACKLOG),
        # oldest first; and whether a _WakesHeld is on its way to take them.
        self._held_wakes: deque[str] = deque()
        self._wakes_noted = False

    def on_receive(self, message: SupervisorMessage) -> None:
        match message:
            case StartRun():
                self._on_start_run(message)
            case RunEnded():
                self._on_run_ended(message)
            case RunParked():
                self._on_run_parked(message)
            case WakeRun():
                self._on_wake_run(message)
            case _WakesHeld():
                self._on_wakes_held()
            case DeadlinePassed():
                self._on_deadline_passed(message)
            case CancelRun():
                self._on_cancel_run(message)
            case RunCrashed():
                self._on_run_crashed(message)
            case NotifyWhenIdle():
                self._on_notify_when_idle(message)
            case AbortRuns():
                self._on_abort_runs(message)
            case QueuesDue():
                self._on_queues_due(message)
            case StepBodiesEnded():
                self._on_step_bodies_ended(message)
            case StepWaitBegan():
                self._on_step_wait_began(message)
            case RunDeleted():
                self._on_run_deleted(message)
            case ResumeStep():
                self._on_resume_step(message)
            case _:
                unexpected(self, message)

    def on_stop(self) -> None:
        for _, _, handle in self._sleeping.values():
            handle.cancel()
        for handle, _ in self._deadlines.values():
            handle.cancel()
        if self._rate_timer is not None:
            self._rate_timer.cancel()
        for waiting in self._idle_events:
            waiting.event.set()

    # --- messages -------------------------------------------------------------------

    def _on_start_run(self, message: StartRun) -> None:
        self._place_start(message)
        self._start_placed = None

    def _place_start(self, message: StartRun) -> None:
        """Let the run wait in its queue, or for room, or start its actor; mark it placed."""
        if self._deadlines:  # resumed: its actor keeps its deadline now
            self._forget_deadline(message.snapshot["run_id"])
        # queue_entry() only for a run in a queue: this runs for every run.
        entry = (
            None
            if self._shared or not message.snapshot.get("queue")
            else queue_entry(message.snapshot)
        )
        if entry is not None:
            name, key, priority = entry
            snapshot = message.snapshot
            if not self._gated:
                self._gated = True
                pool = self._pool
                if pool.here is None:
                    # Bodies counted from now on: one of a run of a queue that its run
                    # lets go of keeps the run's slot (see _leave_queue). This run's
                    # steps begin once it is admitted, after this.
                    pool.here = pool.queued_here
            # Every run in a queue holds a place, as in the runtime's own queue below: an
            # admitted one has since its start, one woken, resumed or recovered takes it now
            # (and gives it back if it does not get into the queue: on_fault cannot tell).
            adds = None if message.admitted else self._pending
            if adds is not None:
                adds.add()
            try:
                self._gate.offer(
                    snapshot["run_id"],
                    (name, key),
                    rank(snapshot["created_at"], priority),
                    message,
                    reserved=message.queued,
                    # A restart counts in its queue's rate window as a first start does: a
                    # storm of restarts after a bad deploy would otherwise skip the rate.
                    first=snapshot["status"] == RunStatus.PENDING
                    or bool(snapshot.get("restarting")),
                )
            except BaseException:
                if adds is not None:
                    adds.release()
                raise
            self._start_placed = message
            if self._expire is not None:
                self._watch_waiting(message)
            self._ended(None)
            return
        if self._limit is not None and not self._has_room():  # no call without a limit
            # Every run in the queue holds a place; an admitted one has since its start.
            if self._pending is not None and not message.admitted:
                self._pending.add()
            self._waiting.append(message)
            self._start_placed = message
            if self._here is not None:
                self._here.add(message.snapshot["run_id"])
            if self._expire is not None:
                self._watch_waiting(message)
        else:
            self._spawn(message.plan, message.snapshot)
            self._start_placed = message
            if message.admitted:  # after: a start that fails gives it back (on_fault)
                self._release(1)

    def _on_run_ended(self, message: RunEnded) -> None:
        if self._drives(message.run_id, message.actor):
            self._forget(message.run_id)
        if self._waiting or self._gated or not self._runs:
            self._ended(None)  # a run may start in the room this one left, or none runs

    def _drives(self, run_id: str, actor: pykka.ActorRef[Any] | None) -> bool:
        """Whether ``actor`` is the one this supervisor has for ``run_id`` (or it has none).

        Not so for the actor of a run that ended, was deleted, and whose id a new run
        took before its last message came: the table's entry is the new run's.
        """
        entry = self._runs.get(run_id)
        return entry is None or actor is None or entry[0] is actor

    def _on_queues_due(self, _message: QueuesDue) -> None:
        self._rate_timer = None
        self._ended(None)

    def _on_run_parked(self, message: RunParked) -> None:
        """A run sleeps (with a wake time) or suspends: its actor is gone; free its slot."""
        run_id = message.run_id
        if not self._drives(run_id, message.actor):
            self._ended(None)  # a deleted run's actor: the entry is a new run's
            return
        self._forget(run_id)
        if message.wake_at is not None and not self._shared:
            # Woken at its deadline if that comes first: then it is canceled (_on_wake_run).
            # (Only a run with a run_timeout has the key: no call for the others.)
            snapshot = message.snapshot
            deadline = run_deadline(snapshot) if "deadline" in snapshot else None
            wake_at = message.wake_at if deadline is None else min(message.wake_at, deadline)
            try:
                handle = self._timers.call_at(wake_at, self._wake, run_id)
            except Exception as exc:  # a stopped timer thread: the run cannot wake here
                failure = RecordFailure(run_id=run_id, error=error_dict(exc), plan=message.plan)
                tell_safely(self._registry, failure)
            else:
                self._sleeping[run_id] = (message.plan, message.snapshot, handle)
        elif self._expire is not None:
            self._watch_suspended(run_id, message)
        if self._waiting or self._gated or not self._runs:
            self._ended(None)  # a run may start in the room this one left, or none runs

    def _watch_suspended(self, run_id: str, message: RunParked) -> None:
        """In memory: cancel a suspended run at its deadline, if any, unless resumed first."""
        deadline = run_deadline(message.snapshot)
        if deadline is not None and self._expire is not None:
            self._deadline_timer(run_id, deadline, message.plan)

    def _watch_waiting(self, message: StartRun) -> None:
        """In memory: cancel a run that began and now waits for room, at its deadline.

        A run woken, resumed or recovered that waits under ``max_concurrent_runs``
        or in its queue has no actor to keep its deadline; one that has not begun
        (pending) has none yet. On a shared store nobody holds such a run, or its
        holder's claimer looks after it.
        """
        deadline = run_deadline(message.snapshot)
        if deadline is not None:
            self._deadline_timer(message.snapshot["run_id"], deadline, message.plan)

    def _deadline_timer(self, run_id: str, deadline: float, plan: ExecutionPlan) -> None:
        """Set the timer of a run no actor drives that cancels it at its deadline."""
        self._forget_deadline(run_id)
        try:
            handle = self._timers.call_at(deadline, _deadline_due, self.actor_ref, run_id)
        except Exception:  # a stopped timer thread: the runtime is stopping
            return
        self._deadlines[run_id] = (handle, plan)

    def _forget_deadline(self, run_id: str) -> None:
        entry = self._deadlines.pop(run_id, None)
        if entry is not None:
            entry[0].cancel()

    def _on_deadline_passed(self, message: DeadlinePassed) -> None:
        """A run's deadline came (in memory): cancel it, if no actor drives it yet.

        One that waits here for room is canceled here. For a suspended one a
        compare-and-set in the store decides between this and a resume or a
        cancel that came at the same time (see ``ActorSystem.expire_unheld``).
        """
        entry = self._deadlines.pop(message.run_id, None)
        if entry is None or self._expire is None:
            return
        held = self._take_waiting(message.run_id)
        if held is not None:
            # Woken or resumed, it waits for room: canceled here, as a cancel would.
            self._record_canceled(*held, None, deadline_passed=True)
            self._notify_if_idle()
            return
        self._expire(message.run_id, entry[1])

    def _on_wake_run(self, message: WakeRun) -> None:
        if self._held_wakes or self._dispatcher.waiting() >= WAKE_BACKLOG:
            self._held_wakes.append(message.run_id)  # still in _sleeping: a cancel finds it
            self._note_held_wakes()
            return
        self._wake_up(message.run_id)

    def _on_wakes_held(self) -> None:
        """Wake the runs held back, oldest first, as long as the dispatcher keeps up."""
        self._wakes_noted = False
        held = self._held_wakes
        while held and self._dispatcher.waiting() < WAKE_BACKLOG:
            run_id = held.popleft()
            try:
                self._wake_up(run_id)
            except Exception as error:  # as if its WakeRun had failed: the run fails
                self.on_fault(error, WakeRun(run_id=run_id))
        if held:
            # Told after the actors now waiting: looked at again once they had their turn.
            self._note_held_wakes()

    def _note_held_wakes(self) -> None:
        if not self._wakes_noted:
            self._wakes_noted = True
            tell_safely(self._actor_ref, _WakesHeld())

    def _wake_up(self, run_id: str) -> None:
        """A sleeping run's time has come: it runs on, waits for room, or is canceled."""
        sleeping = self._sleeping.pop(run_id, None)
        if sleeping is None:
            return
        plan, snapshot, _ = sleeping
        self._woken = (run_id, plan)  # for on_fault, which finds no sleeper now
        deadline = run_deadline(snapshot) if "deadline" in snapshot else None
        if deadline is not None and deadline <= _clock.time():
            # Its time is up before its sleep: canceled here, as a cancel of a sleeping
            # run is, not after a wait for room to run.
            self._record_canceled(plan, snapshot, None, deadline_passed=True)
            self._woken = None
            self._notify_if_idle()
            return
        if snapshot.get("queue") or (self._limit is not None and not self._has_room()):
            self._on_start_run(StartRun(plan=plan, snapshot=snapshot))
        else:  # _on_start_run's path for a run in no queue, with room, without a StartRun
            self._spawn(plan, snapshot, woken=True)
        self._woken = None

    def _on_cancel_run(self, message: CancelRun) -> None:
        """Hand the cancel to the run's actor, or cancel a run held here (asleep or queued).

        The reply comes once the canceled snapshot is recorded, from whoever records it.
        """
        run_id = message.run_id
        entry = self._runs.get(run_id)
        if entry is not None:
            if self._holds is not None and not self._holds(run_id):
                # Its actor here drives a run the shared store no longer holds here (this
                # worker was reaped while it stalled): its canceled snapshot would be fenced
                # off, and its hooks would tell a cancel that never happened. The cancel is
                # the store's to make, or the holder's.
                message.reply(CancelOutcome.NOT_HERE)
                return
            if not tell_safely(entry[0], message):
                message.reply(CancelOutcome.NOT_HERE)
            return
        snapshot: Snapshot | None = None
        plan: ExecutionPlan | None = None
        sleeping = self._sleeping.pop(run_id, None)
        if sleeping is not None:
            plan, snapshot, handle = sleeping
            handle.cancel()
        else:
            held = self._take_waiting(run_id)
            if held is not None:
                plan, snapshot = held
                if self._deadlines:
                    self._forget_deadline(run_id)
        if snapshot is None or plan is None:
            message.reply(CancelOutcome.NOT_HERE)
            return
        try:
            self._record_canceled(plan, snapshot, message.reply_once_recorded())
        except BaseException:
            message.reply(CancelOutcome.REFUSED)
            raise
        self._notify_if_idle()

    def _on_resume_step(self, message: ResumeStep) -> None:
        """Hand a resume of one suspension of a running run to the actor that drives it.

        A run with no actor here (waiting for room, or driven by another worker
        of a shared store) is not changed: only its actor may add to its record.
        """
        entry = self._runs.get(message.run_id)
        if entry is None or (self._holds is not None and not self._holds(message.run_id)):
            message.reply(ResumeOutcome.NOT_HERE)
            return
        if not tell_safely(entry[0], message):
            message.reply(ResumeOutcome.GONE)

    def _on_run_crashed(self, message: RunCrashed) -> None:
        if not self._drives(message.run_id, message.actor):
            self._ended(None)  # a deleted run's actor: its record is gone, nothing to fail
            return
        running = self._runs.get(message.run_id)
        plan = running[1] if running is not None else None
        failure = RecordFailure(run_id=message.run_id, error=message.error, plan=plan)
        tell_safely(self._registry, failure)
        self._crash_told = message  # a fault from here on must not tell it again
        self._ended(message.run_id)
        self._crash_told = None

    def _on_notify_when_idle(self, message: NotifyWhenIdle) -> None:
        self._idle_events.append(message)
        self._notify_if_idle()

    def _on_abort_runs(self, message: AbortRuns) -> None:
        """Fail (or, without an error, halt) every run in progress, waiting or sleeping."""
        error = message.error
        gated = self._gate.drain()
        self._release(len(gated))
        if error is not None:
            for waiting in [*self._waiting, *gated]:
                failure = RecordFailure(
                    run_id=waiting.snapshot["run_id"], error=error, plan=waiting.plan
                )
                tell_safely(self._registry, failure)
            for run_id, (plan, _, _) in self._sleeping.items():
                tell_safely(self._registry, RecordFailure(run_id=run_id, error=error, plan=plan))
        # Halted, they stay pending or waiting in a durable store, for the next runtime.
        self._release(len(self._waiting))
        self._gone_from_here(*(waiting.snapshot["run_id"] for waiting in self._waiting))
        self._waiting.clear()
        for _, _, handle in self._sleeping.values():
            handle.cancel()
        self._sleeping.clear()
        self._held_wakes.clear()
        for run_id, (ref, plan) in list(self._runs.items()):
            if not tell_safely(ref, AbortRun(error=error)):
                if error is not None:
                    failure = RecordFailure(run_id=run_id, error=error, plan=plan)
                    tell_safely(self._registry, failure)
                self._runs.pop(run_id, None)
                self._gone_from_here(run_id)
        self._notify_if_idle()

    # --- helpers --------------------------------------------------------------------

    def _take_waiting(self, run_id: str) -> tuple[ExecutionPlan, Snapshot] | None:
        """Take a run that waits here for room or in its queue; its plan and snapshot."""
        for queued in self._waiting:
            if queued.snapshot["run_id"] == run_id:
                self._waiting.remove(queued)
                self._gone_from_here(run_id)
                self._release(1)
                return queued.plan, queued.snapshot
        gated = self._gate.remove(run_id)
        if gated is None:
            return None
        self._release(1)
        return gated.plan, gated.snapshot

    def _spawn(self, plan: ExecutionPlan, snapshot: Snapshot, *, woken: bool = False) -> None:
        """Start a run actor for ``snapshot``.

        ``woken``: the snapshot is the one a run actor of this ``plan`` parked here
        (see :class:`RunActor`), taken from ``_sleeping`` when its timer fired.
        """
        run_id = snapshot["run_id"]
        if self._deadlines:  # it waited for room: its actor keeps its deadline now
            self._forget_deadline(run_id)
        ref = RunActor.start(
            self._dispatcher,
            plan=plan,
            snapshot=snapshot,
            registry=self._registry,
            supervisor=self._actor_ref,  # not through pykka's property: a call fewer a run
            pool=self._pool,
            timers=self._timers,
            hooks=self._hooks,
            durable=self._durable,
            direct=self._direct,
            woken=woken,
        )
        self._runs[run_id] = (ref, plan)
        if self._here is not None:
            self._here.add(run_id)

    def _spawn_taken(self, plan: ExecutionPlan, snapshot: Snapshot) -> None:
        """Start a run taken from a wait here (for room, or in its queue), or fail it.

        Taken, it is nowhere else: a fault in its start left to on_fault (which
        knows only the message it failed on, perhaps another run's) lost it, pending
        for ever, and kept its queue's slot. It fails here instead, with its plan
        (its hooks called), its slot freed; the fault is counted, and the runs
        after it are started as before.
        """
        try:
            self._spawn(plan, snapshot)
        except Exception as exc:
            run_id = snapshot["run_id"]
            if run_id in self._runs:
                raise  # its actor started; only what came after failed
            emit(logging.ERROR, "run_start_failed", run_id=run_id, exc_info=True)
            self._forget(run_id)
            self._start_failed(run_id, plan, exc, "started")
            self._faults.spend(self, exc)

    def _ended(self, run_id: str | None) -> None:
        """Forget ``run_id``'s actor, if given; start runs in the room left; notify if idle.

        With no run id, it does nothing unless runs wait (``_waiting``, the gate)
        or none runs: callers on every run's path test that first.
        """
        if run_id is not None:
            self._forget(run_id)
        while self._waiting and self._has_room():
            self._release(1)
            waiting = self._waiting.popleft()
            self._spawn_taken(waiting.plan, waiting.snapshot)
        if self._gated:
            self._admit_from_queues()
        if not self._runs:
            self._notify_if_idle()

    def _forget(self, run_id: str) -> None:
        """The run no longer has an actor here: out of the table, this process and its queue."""
        self._runs.pop(run_id, None)
        if self._here is not None:
            self._here.discard(run_id)
        if self._bucket_of:
            self._leave_queue(run_id)

    def _gone_from_here(self, *run_ids: str) -> None:
        """No actor (or start) of these runs is here any more: a claim may take them here."""
        if self._here is not None:
            self._here.discard(*run_ids)

    def _leave_queue(self, run_id: str) -> None:
        bucket = self._bucket_of.pop(run_id, None)
        if bucket is None:
            return
        bodies = self._pool.here
        if bodies is not None and bodies.has_body(run_id):
            # A sync body cannot be stopped: it ran on after its run let go of it, and
            # the run executes in its queue until it returns (see RunsHere).
            held = self._held_by_bodies.setdefault(run_id, [])
            held.append(bucket)
            if len(held) == 1:
                say_slot_held(run_id, bucket[0], bucket[1])
            bodies.left_out((run_id,))  # StepBodiesEnded once it returned (or at once)
            return
        self._gate.release(bucket)

    def _on_step_bodies_ended(self, _message: StepBodiesEnded) -> None:
        """Free the queue slots of runs whose step bodies, let go of, have returned."""
        bodies = self._pool.here
        for run_id in list(self._held_by_bodies):
            if bodies is None or not bodies.has_body(run_id):
                for bucket in self._held_by_bodies.pop(run_id):
                    self._gate.release(bucket)
            else:
                # A body of the run began since the one told of returned (the run runs
                # again): told once, RunsHere forgot it; be told when this one returns.
                bodies.left_out((run_id,))
        self._ended(None)

    def _admit_from_queues(self) -> None:
        """Start the runs waiting in queues that their limits (and the runtime's) let start."""
        gate = self._gate
        if not len(gate):
            return
        # A rate window is a duration in this process: counted on the monotonic clock, so
        # that a jump of the wall clock neither closes a queue for the jump nor opens it.
        now = _clock.monotonic()
        while self._has_room():
            ready = gate.pop_ready(now)
            if ready is None:
                break
            run_id, bucket, message = ready
            self._release(1)
            self._bucket_of[run_id] = bucket
            self._spawn_taken(message.plan, message.snapshot)
        if len(gate) and self._rate_timer is None:
            opening = gate.next_opening(now)
            if opening is not None:
                me = self.actor_ref
                try:
                    self._rate_timer = self._timers.call_later(
                        opening - now, lambda: tell_safely(me, QueuesDue())
                    )
                except Exception:  # a stopped timer thread: the runtime is stopping
                    self._rate_timer = None

    def _has_room(self) -> bool:
        """Whether one more run may execute: fewer than ``max_concurrent_runs`` do.

        A run whose step waits for another run to end (``run.start()`` in a step
        body) does not count while it waits: the run it waits for may need its
        place, and would otherwise wait for it for ever.
        """
        return self._limit is None or len(self._runs) < self._limit + self._pool.waiting

    def _on_step_wait_began(self, _message: StepWaitBegan) -> None:
        self._ended(None)

    def _on_run_deleted(self, message: RunDeleted) -> None:
        """A run was deleted from the store: its start no longer counts in its rate window."""
        if self._deadlines:
            self._forget_deadline(message.run_id)
        if self._gate.forget(message.run_id):
            self._ended(None)  # a run the window held may start now

    def _release(self, count: int) -> None:
        if self._pending is not None and count:
            self._pending.release(count)

    def _record_canceled(
        self,
        plan: ExecutionPlan,
        snapshot: Snapshot,
        on_recorded: Callable[[bool], None] | None,
        *,
        deadline_passed: bool = False,
    ) -> None:
        now = _clock.time()
        _otel.count_canceled_unheld(snapshot, now)  # asleep: no actor counts it (read unmarked)
        if deadline_passed:
            mark_deadline_passed(snapshot, now)
            record = next_record(snapshot, now)
        else:
            record = canceled_record(snapshot, now)
        self._hooks.finish(plan, snapshot, record, self._registry, on_recorded)

    def on_undelivered(self, message: Any) -> None:
        self.on_undelivered_gone(message)

    @classmethod
    def on_undelivered_gone(cls, message: Any) -> None:
        if isinstance(message, CancelRun):
            message.reply(CancelOutcome.NOT_HERE)  # stopped: the caller finds it stopped
        elif isinstance(message, ResumeStep):
            message.reply(ResumeOutcome.NOT_HERE)

    def _notify_if_idle(self) -> None:
        if not self._idle_events:
            return
        # Sleeping runs count on a store that forgets them, not on a durable one,
        # which keeps them for the next runtime.
        if (
            not self._runs
            and not self._waiting
            and not (self._gated and len(self._gate))
            and (self._durable or not self._sleeping)
        ):
            for waiting in self._idle_events:
                waiting.event.set()
            self._idle_events.clear()
        elif not self._runs and not self._waiting and not self._held_by_bodies:
            # A stop need not wait for runs that only wait on timers due after it gave up
            # (a sleep of an hour, a rate window of a day): none of them could end in time.
            for waiting in list(self._idle_events):
                if waiting.until is not None and self._nothing_due_before(waiting.until):
                    waiting.event.set()
                    self._idle_events.remove(waiting)

    def _nothing_due_before(self, until: float) -> bool:
        """Whether every timer that could start a run left here is due after ``until``.

        ``until`` is on :func:`time.monotonic`. Never with a test kit's virtual clock
        installed: its test may move the clock past any deadline.
        """
        if _clock.monotonic is not time.monotonic:
            return False
        left = until - time.monotonic()
        now = _clock.time()  # sleeps and deadlines are due at epoch seconds
        sleeps = () if self._durable else self._sleeping.values()
        if any(handle.when - now <= left for _, _, handle in sleeps):
            return False
        if any(handle.when - now <= left for handle, _ in self._deadlines.values()):
            return False
        if self._gated and len(self._gate):
            opening = self._rate_timer  # on the monotonic clock: see _admit_from_queues
            if opening is None or opening.when <= until:
                return False
        return True
