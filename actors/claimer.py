"""The claimer: how a worker takes runs from a shared store, and gives back those of the dead.

One thread per runtime on a shared store (SQLite or PostgreSQL), and one beside
it that renews the worker's lease every quarter lease (at most every
:data:`HEARTBEAT_EVERY` seconds): a claim or a reap waits for the store's writer,
which may wait for a lock a paused worker holds, and a heartbeat that waited
with them let a live worker's lease run out. A heartbeat that fails (the
store unreachable, or refusing writes, which fails it at once) is tried again
every second, at most every quarter lease; the log says so once when beats
begin to fail (``lease_renewal_failed``) and once when one succeeds again
(``lease_renewal_recovered``). Each pass the claimer

- hands the runs of workers whose lease ran out back to the queue (every
  quarter lease, at most every second, and after a virtual clock's jump):
  recovery re-enqueues, it never runs anything in place;
- passes on the cancels requested for runs this worker holds;
- passes on the resumes requested from other processes (see
  :meth:`~runtime._stores.base.ResumeRequestStore.request_resume`): to the actors of runs
  this worker holds; for a run that suspended before its worker took one, the
  resume itself; and forgets those of runs that ended;
- claims as many queued runs of its registered workflows as it has room for
  (``max_concurrent_runs`` less the runs it holds), and hands them to the
  registry, which starts them;
- hands back to the queue the runs the registry found it cannot drive (their
  version is not registered here), and leaves them out of its claims until
  the registered workflows change;
- notes when the next sleeping run of its workflows is due, and wakes then;
- cancels the runs of its workflows that nobody holds (suspended, asleep,
  queued, left by a dead worker) whose ``run_timeout`` is up, and notes when
  the next one's is, to wake then.

It passes every :data:`POLL_INTERVAL` seconds, and at once when poked: by the
store after a commit here that queued a run, by the store's notifications
from other processes (PostgreSQL), or by the runtime when it registers a
workflow. Polling alone is always correct; pokes only make it sooner. A pass
that fails (the store unreachable, or refusing writes) is tried again a second
later; the log says so once when passes begin to fail (``claim_pass_failed``)
and once when one succeeds again (``claim_pass_recovered``), not at every try.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final, cast

from actors._here import RunsHere, say_slot_held
from runtime import _clock
from runtime._errors import SnapshotFormatError, StoreError
from runtime._model import TERMINAL_STATUSES
from runtime._plan import ExecutionPlan
from runtime._queue import queue_entry
from runtime._snapshot import decode
from runtime._stores.base import (
    Claimed,
    DeadlineStore,
    ResumeRequest,
    SharedStore,
    SnapshotRecord,
    provides,
    served_workflows,
)
from runtime._tracing import FailingStreak, emit

__all__ = [
    "CLAIM_BATCH",
    "POLL_INTERVAL",
    "REPORT_AT_MOST",
    "REPORT_DELAY",
    "SKIPPED_AT_MOST",
    "Claimer",
    "LeaseGuard",
]

POLL_INTERVAL: Final = 0.25
"""Seconds between two passes when nothing pokes the claimer."""

HEARTBEAT_EVERY: Final = 2.0
"""The most seconds between two heartbeats (a quarter lease, if shorter)."""

REAP_EVERY: Final = 1.0
"""The most seconds between two looks for dead workers (a quarter lease, if shorter)."""

LAPSE_MARGIN: Final = 0.001
"""Seconds past a lease's end at which its worker is surely dead (the judgement is strict)."""

CLAIM_BATCH: Final = 64
"""The most runs one claim takes."""

REPORT_DELAY: Final = 5.0
"""Seconds after start before queued runs of workflows nobody here registered are reported."""

REPORT_EVERY: Final = 30.0
"""Seconds between two looks for queued runs of workflows not registered here."""

_REPORTED_AT_MOST: Final = 10_000
"""The most run ids remembered as reported (then the memory is cleared)."""

REPORT_AT_MOST: Final = 100
"""Queued runs of unregistered workflows a report reads at most (the oldest): each is said once."""

SKIPPED_AT_MOST: Final = 10_000
"""The most runs a worker remembers to leave out of its claims (then it forgets them all)."""

_EXPIRE_ROUNDS: Final = 16
"""The most batches of runs whose deadline passed that one pass cancels (the next goes on)."""

_NEVER: Final = float("inf")

_ERROR_PAUSE: Final = 1.0
"""Seconds to wait after a pass or a heartbeat failed (the store unreachable) before the next."""


class LeaseGuard:
    """Keeps a worker whose lease may have lapsed from starting a step of a run it lost.

    Writes are fenced by the store: a worker that stalled past its lease (a
    SIGSTOP, a long pause, a lost network) and wakes up changes no run another
    worker took over meanwhile. But a step body's effects are the user's, and
    a woken worker's run actor would go on to start the next step before its
    first write is refused: after the run was cancelled, say, or beside the
    worker that took it. So before a step starts, :meth:`may_start` checks
    that this worker still holds the run, and, when its lease was last known
    renewed more than half a lease ago (by this process's monotonic clock,
    which runs on through a stop), renews it first: a worker that was reaped
    meanwhile learns so there, and the runs it held are no longer its own.

    The claimer's lease thread renews the lease through :meth:`beat`, every
    quarter lease at most, so in a worker that runs normally a step's check is
    a clock read and a set lookup. A stall that begins right after the check is
    not seen: the window is the time from the check to the body's first line.

    Args:
        store: The shared store whose lease this worker holds.
    """

    def __init__(self, store: SharedStore) -> None:
        self._store = store
        self._fresh_for = store.lease / 2
        self._renewed = time.monotonic()  # joining the store made the first heartbeat
        self._lock = threading.Lock()

    def beat(self) -> bool:
        """Renew the lease (:meth:`SharedStore.heartbeat`); ``False`` (and a warning) if reaped.

        Raises:
            StoreError: as ``heartbeat`` does.
        """
        sent = time.monotonic()
        renewed = self._store.heartbeat()
        if renewed:
            self._renewed = max(self._renewed, sent)
        else:
            emit(logging.WARNING, "worker_lease_was_lost", worker=self._store.owner_id)
        return renewed

    def renewed_ago(self) -> float:
        """Seconds since the lease was last known renewed, by this process's monotonic clock."""
        return time.monotonic() - self._renewed

    def may_start(self, run_id: str) -> bool:
        """Whether a step of ``run_id`` may start here now: this worker holds the run.

        Renews the lease first when it was last renewed more than half a lease
        ago. A store that cannot be reached cannot tell: the step starts, as it
        would have (its output is fenced off if the run was lost).
        """
        try:
            self.refresh()  # reaped: the runs it held are fenced, not held
        except StoreError:
            return True
        return self._store.holds(run_id)

    def refresh(self) -> None:
        """Renew the lease if it was last renewed more than half a lease ago.

        Raises:
            StoreError: as ``heartbeat`` does.
        """
        if time.monotonic() - self._renewed >= self._fresh_for:
            with self._lock:  # one renewal at a time: the others find the lease fresh
                if time.monotonic() - self._renewed >= self._fresh_for:
                    self.beat()

    def why_not(self, run_id: str) -> str | None:
        """Why a step of ``run_id`` may not start here, as :meth:`may_start` found.

        ``None`` when the run ended or went meanwhile (cancelled, say): no
        step of it starts anywhere, and nothing is amiss.
        """
        try:
            record = self._store.load(run_id)
        except StoreError:
            record = None  # the store said no just now: the lease is the likelier cause
        else:
            if record is None or record.status in TERMINAL_STATUSES:
                return None
        return "this worker no longer holds the run: its lease lapsed meanwhile"


class Claimer:
    """The thread that reaps, claims and passes on cancels for one runtime.

    Args:
        store: The shared store.
        plans: The registered workflows, read at every pass.
        capacity: The most runs this worker holds at once (``None``: no limit).
        executes: Whether this runtime runs workflows (not a client).
        take: Called with the runs claimed, to start them, and the count of
            changes to the registered workflows before the claim.
        cancel: Called with a run held here whose cancel was requested; it
            calls ``done`` once the cancel is settled (recorded or not).
        requests: Reads the resume requests this worker may act on (the
            store's :meth:`~runtime._stores.base.ResumeRequestStore.resume_requests`),
            on a store that takes them.
        resume: Called with each of those; it calls ``done`` once it is
            settled (carried out, refused, or left for a later look).
        waiting: How many steps of runs held here wait for another run to end
            (``run.start()`` in a step body): each makes room for one more run,
            which may be the one it waits for.
        guard: Through which it renews the lease, so that steps know when it
            was last renewed (a guard of its own if not given).
        here: The runs with an actor or a step body in this process (see
            :class:`~actors._here.RunsHere`): one the store lost (this worker
            was reaped while it stalled) is not claimed back until nothing
            of it runs here, and takes room meanwhile.
        expire: Called with a run nobody holds whose deadline has passed, to
            cancel it; ``"elsewhere"`` if it cannot be here (no definition of
            its version is registered here): it is left out of later looks.
    """

    def __init__(
        self,
        store: SharedStore,
        *,
        plans: Callable[[], Mapping[str, ExecutionPlan]],
        capacity: int | None,
        executes: bool,
        take: Callable[[Sequence[Claimed], int], None],
        cancel: Callable[[str, Callable[[], None]], None],
        requests: Callable[[], Sequence[ResumeRequest]] | None = None,
        resume: Callable[[ResumeRequest, Callable[[], None]], None] | None = None,
        waiting: Callable[[], int] = lambda: 0,
        guard: LeaseGuard | None = None,
        here: RunsHere | None = None,
        expire: Callable[[SnapshotRecord], str] | None = None,
    ) -> None:
        self._store = store
        # Only a store that keeps deadlines apart can be asked for the runs whose time is up.
        self._deadlines = (
            cast("DeadlineStore", store)
            if expire is not None and provides(store, DeadlineStore)
            else None
        )
        self._expire = expire
        self._deadline_at: float | None = None  # the next deadline of a run nobody holds
        self._not_expired: set[str] = set()  # runs whose deadline passed that expire() left
        self._here = here
        self._guard = guard or LeaseGuard(store)
        self._plans = plans
        self._capacity = capacity
        # Runs claimed here that cannot go on here (see park): to hand back, and then
        # to skip in this worker's claims until its definitions change.
        # (Under a lock of their own: the registry's thread parks runs, and must never
        # wait for a claim or hand-back under way.)
        self._handing_back: list[tuple[str, int]] = []  # with the generation of their claim
        self._skipped: set[str] = set()
        self._generation = 0  # changes to the registered workflows, each a new look
        self._parked_lock = threading.Lock()
        self._steps_waiting = waiting
        self._executes = executes
        self._take = take
        self._cancel = cancel
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._canceling: set[str] = set()
        self._canceling_lock = threading.Lock()
        self._requests = requests
        self._resume = resume
        self._resuming: set[tuple[str, str, str]] = set()  # under _canceling_lock too
        # Those settled since the look at requests under way began (under the lock too):
        # what that look read of them may be older than their settling.
        self._settled: set[tuple[str, str, str]] = set()
        self._reported: set[str] = set()
        self._started = time.monotonic()
        self._next_reap = 0.0
        # What the next pass looks at besides the claim: all of it every POLL_INTERVAL,
        # and in between only what a poke asked for (a storm of "settled" hints as runs
        # end costs a claim each, not every query).
        self._next_full = 0.0
        self._claim_wanted = self._cancels_wanted = self._wake_wanted = True
        self._deadline_look = True  # look for runs whose deadline passed, and the next one
        self._resumes_wanted = True
        self._wake_at: float | None = None  # the next queued sleeper's wake time (epoch s)
        self._next_report = self._started + REPORT_DELAY
        self._reserved = 0
        self._room_lock = threading.Lock()
        self._abandoned_said: set[str] = set()  # abandoned bodies' runs said to hold a slot
        # The runs whose bodies here hold their queue slots, as last named to the store.
        self._executing_noted: frozenset[str] = frozenset()
        # Whether the store's claim counts such runs apart from busy ones (callboard's do).
        self._names_executing = _takes_executing(store)
        self._reap_wanted = False  # a virtual clock jumped: leases may have run out
        self._passing = False  # a pass is under way
        # A virtual clock's jump renews this worker's lease before any reaper judges by
        # the new time, and then has the next pass look for workers that did not renew.
        self._forget_clock = (
            _clock.on_jump(self._renew, store.owner_id),
            _clock.on_advance(self._advanced),
        )
        self._thread = threading.Thread(target=self._run, name="callboard-claimer", daemon=True)
        self._lease_thread = threading.Thread(
            target=self._keep_lease, name="callboard-lease", daemon=True
        )
        self._lease_thread.start()
        self._thread.start()

    def poke(self, kind: str = "", _run_id: str = "") -> None:
        """Pass now, looking at what ``kind`` says changed; without one, at everything.

        ``"queued"``: a run may be claimable; ``"settled"``: room came free;
        ``"cancel"``: a cancel waits; ``"resume"``: a resume request waits.
        """
        if kind != "cancel":
            self._deadline_look = True  # a run may have suspended, slept or come back
        if kind == "cancel":
            self._cancels_wanted = True
        elif kind == "resume":
            self._resumes_wanted = True
        elif kind == "settled":
            self._claim_wanted = True
        elif kind == "queued":
            self._claim_wanted = self._wake_wanted = True
        else:
            self._claim_wanted = self._cancels_wanted = self._wake_wanted = True
            self._resumes_wanted = True
        self._wake.set()

    def park(self, run_ids: Sequence[str], generation: int) -> None:
        """Hand these runs, held here, back to the queue: none can go on here.

        No definition of their version is registered here (see
        :class:`~actors.messages.RunsClaimed`). The next pass hands them back,
        unchanged, for a worker that has theirs; they take no room here
        meanwhile, and this worker's claims leave them until
        :meth:`definitions_changed` (but for one whose cancel is requested:
        it is claimed to end). ``generation`` is what :meth:`_claim` handed on
        with them: if the registered workflows changed since, they are not
        skipped (they were judged by what was registered before).
        """
        with self._parked_lock:
            self._handing_back.extend((run_id, generation) for run_id in run_ids)
        self.poke("settled")  # room came free: claim in their place

    def definitions_changed(self) -> None:
        """The registered workflows changed: runs handed back may go on here now."""
        with self._parked_lock:
            self._generation += 1
            self._skipped.clear()
        self._not_expired = set()  # a version registered now may cancel them
        self.poke()

    def reserve(self) -> bool:
        """Take room for a run this process starts (or resumes) and holds at once.

        ``False`` if this worker holds as many runs as it may: the run then
        waits in the store, for whichever worker has room. Call
        :meth:`unreserve` once the store counts the run (or did not take it).
        """
        if not self._executes:
            return False
        with self._room_lock:
            capacity = self._capacity
            if capacity is not None and self._in_use() >= capacity:
                return False
            self._reserved += 1
            return True

    def _in_use(self, busy: Sequence[str] | None = None) -> int:
        """Room taken (under ``_room_lock``).

        Runs held, but for those to hand back and one per step waiting for a run, and room
        reserved; and runs lost while this worker stalled whose steps still run here
        (``busy``, when the caller has them already).
        """
        held = self._store.held() - len(self._handing_back)
        lost = len(self._busy() if busy is None else busy)
        return held - self._steps_waiting() + self._reserved + lost

    def _busy(self) -> list[str]:
        """Runs this worker lost (fenced off) that still have an actor or a step body here."""
        here = self._here
        if here is None:
            return []
        fenced = getattr(self._store, "fenced", None)
        if fenced is None:  # a store of the user's: every run here it does not hold
            return [run_id for run_id in here() if not self._store.holds(run_id)]
        return here.among(fenced())

    def _abandoned(self, busy: Sequence[str]) -> list[str]:
        """Runs not held here, but for ``busy``, whose step body still runs here.

        A sync body cannot be stopped: cancelled, timed out, or its run ended or
        slept meanwhile, it runs on until it returns. Its run executes in its queue
        until then (``executing``, see the store's ``claim``), whatever its status,
        and is claimed as any other (asleep, it wakes). Each such run of
        a queue is said once (a ``queue_slot_held_by_abandoned_step`` warning), so that
        a queue a stuck body holds says why it does not move.
        """
        here = self._here
        if here is None:
            return []
        store = self._store
        lost = set(busy)
        abandoned = [
            run_id for run_id in here.bodies() if run_id not in lost and not store.holds(run_id)
        ]
        said = self._abandoned_said
        said.intersection_update(abandoned)  # bounded: only those still running are kept
        for run_id in abandoned:
            if run_id in said:
                continue
            said.add(run_id)
            try:
                record = store.load(run_id)
                entry = None if record is None else queue_entry(decode(record.data, run_id))
            except (StoreError, SnapshotFormatError):
                continue  # a log's look only: the claim goes on, and counts the run
            if record is not None and entry is not None:
                say_slot_held(run_id, entry[0], entry[1], record.status)
        return abandoned

    def lease_renewed_ago(self) -> float:
        """Seconds since this worker's lease was last renewed (see :class:`LeaseGuard`)."""
        return self._guard.renewed_ago()

    def unreserve(self) -> None:
        """Give back room taken by :meth:`reserve`."""
        with self._room_lock:
            self._reserved -= 1

    def stop(self, timeout: float) -> None:
        """End the thread (waiting up to ``timeout`` seconds); its lease is renewed no more."""
        for forget in self._forget_clock:
            forget()
        self._stopped.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        self._thread.join(timeout)
        self._lease_thread.join(max(0.0, deadline - time.monotonic()))

    def _renew(self) -> None:
        """Renew the lease inside a virtual clock's jump (on the jumping thread)."""
        if self._stopped.is_set():
            return
        try:
            self._guard.beat()
        except Exception:  # a store closing or unreachable: the next pass says so
            emit(logging.DEBUG, "lease_renewal_failed", worker=self._store.owner_id)

    def idle(self) -> bool:
        """Whether no pass is under way or asked for (a test kit's time skipper waits for one).

        After a virtual clock's jump the claimer reaps, claims what fell due,
        and notes the next wake-up: the clock must not jump again before.
        """
        return not (self._passing or self._wake.is_set())

    def store_deadlines(self) -> list[float]:
        """When the store's own judgement next changes with no write: for a time skipper.

        The soonest lapse of a lease of a worker that holds runs and renews
        no more at a virtual clock's jumps (a stalled or killed one), the
        soonest opening of a rate window where runs of this worker's
        workflows wait, and the soonest deadline (``run_timeout``) of a run
        of them that nobody holds: one that suspended or went to sleep just
        now, which this thread has not looked at yet, included. Reads the
        store (three queries).
        """
        store = self._store
        lapse = store.next_lapse(_clock.live_workers())
        deadlines = [] if lapse is None else [lapse + LAPSE_MARGIN]
        workflows = sorted(self._plans()) if self._executes else []
        opening = store.next_opening(workflows) if workflows else None
        if opening is not None:
            deadlines.append(opening)
        if workflows and self._deadlines is not None:
            due = self._deadlines.next_deadline(workflows, self._not_expired)
            if due is not None:
                deadlines.append(due)
        return deadlines

    def _advanced(self) -> None:
        self._reap_wanted = True
        self.poke()

    # --- the loop --------------------------------------------------------------------

    def _run(self) -> None:
        wait = 0.0
        # A store that refuses writes fails every pass that writes (a claim, a run to cancel
        # at its deadline), at once, for as long as it lasts: said when passes begin to
        # fail and when one succeeds, not every second.
        streak = FailingStreak(
            "claim_pass_failed",
            "claim_pass_recovered",
            hint="passes go on every second; the log says when one succeeds",
        )
        while not self._stopped.is_set():
            self._wake.wait(wait)
            self._passing = True  # before the clear: idle() never sees a gap between
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                wait = self._pass()
                streak.success()
            except StoreError as exc:
                streak.failure(str(exc))
                wait = _ERROR_PAUSE
                # The next pass, even one a poke brings early, is a full one: it tries
                # again what this one failed at (its claim's want was spent before the
                # claim failed). A poked pass that only read said the streak ended while
                # the store still refused writes, and the next failure said it again.
                self._next_full = 0.0
            except Exception:
                emit(logging.ERROR, "claim_pass_crashed", exc_info=True)
                wait = _ERROR_PAUSE
                self._next_full = 0.0
            finally:
                self._passing = False

    def _keep_lease(self) -> None:
        """The lease thread: renew the lease every quarter lease (at most every few seconds).

        A beat that fails (the store unreachable, or refusing writes, which fails
        it at once) is tried again sooner: every second, at most every quarter
        lease. So the lease is renewed within about a second of the store taking
        writes again, as soon as a beat that waited through the refusal in the
        writer (tried at most a second apart) renewed it: a short refusal lets
        no lease lapse that it did not let lapse before. A failed beat fences
        nothing here: steps go on starting (see :meth:`LeaseGuard.may_start`).
        """
        every = min(self._store.lease / 4, HEARTBEAT_EVERY)
        # Said when beats begin to fail and when one succeeds, not at every beat: a
        # refusal that lasts an hour fails some 3600 of them.
        streak = FailingStreak(
            "lease_renewal_failed",
            "lease_renewal_recovered",
            hint="beats are tried again every second; the log says when one succeeds",
            worker=self._store.owner_id,
        )
        while not self._stopped.is_set():
            wait = every
            try:
                # Not while a virtual clock jumps: a beat stamped with the time before a
                # jump, committed after it, would make this live worker look dead.
                with _clock.judging_leases:
                    self._guard.beat()
                streak.success()
            except StoreError as exc:
                streak.failure(str(exc))
                wait = min(every, _ERROR_PAUSE)
            except Exception:
                emit(logging.ERROR, "lease_renewal_crashed", exc_info=True)
            self._stopped.wait(wait)

    def _pass(self) -> float:
        """One pass; the seconds until the next one is due."""
        store = self._store
        now = time.monotonic()
        unreaped: StoreError | None = None
        if now >= self._next_reap or self._reap_wanted:
            self._reap_wanted = False
            try:
                with _clock.judging_leases:  # not while a virtual clock jumps
                    # Woken from a stop, this worker renews before it judges, as the lease
                    # thread may not have yet: else it reaped itself, its lease run out.
                    self._guard.refresh()
                    store.reap()
            except StoreError as exc:
                # Tried again at the next pass; the rest of this one goes on. (Raised at
                # once, every pass stopped here for as long as a refusal lasted: no run
                # was claimed, no cancel request read, no wake time looked at.)
                self._reap_wanted = True
                unreaped = exc
            else:
                self._next_reap = now + min(store.lease / 4, REAP_EVERY)
        wait = self._work_pass(store, now)
        if unreaped is not None:
            raise unreaped  # said as the pass's failure (see _run)
        return wait

    def _work_pass(self, store: SharedStore, now: float) -> float:
        """The pass past its reap: cancels, resumes, claims, wakes; the seconds to the next."""
        if not self._executes:
            if now >= self._next_report:
                self._report_unserved()
            return max(0.0, min(POLL_INTERVAL, self._next_reap - now, self._next_report - now))
        if now >= self._next_full:
            self._next_full = now + POLL_INTERVAL
            self._claim_wanted = self._cancels_wanted = self._wake_wanted = True
            self._deadline_look = True
            self._resumes_wanted = True
        if self._wake_at is not None and _clock.time() >= self._wake_at:
            self._claim_wanted = self._wake_wanted = True
        if self._cancels_wanted:
            self._cancels_wanted = False
            for run_id in store.cancel_requests():
                self._pass_on_cancel(run_id)
        if self._resumes_wanted and self._requests is not None:
            self._resumes_wanted = False
            with self._canceling_lock:
                self._settled.clear()  # settled before this look's read: it reads them anew
            for request in self._requests():
                self._pass_on_resume(request)
        if self._handing_back:
            self._hand_back()
        plans = self._plans()
        workflows = sorted(plans)
        wait = max(0.0, min(self._next_full, self._next_reap) - now)
        if not workflows:
            return wait
        if self._claim_wanted:
            self._claim_wanted = False
            if self._claim(workflows):
                self._claim_wanted = True  # more may wait
                wait = 0.0
        if self._wake_wanted:
            self._wake_wanted = False
            with self._parked_lock:
                skipped = tuple(self._skipped)
            self._wake_at = store.next_wake(workflows, skipped)
        if self._wake_at is not None:
            wait = min(wait, max(0.0, self._wake_at - _clock.time()))
        if self._deadlines is not None:
            wait = min(wait, self._expire_due(workflows))
        if time.monotonic() >= self._next_report:
            self._report_unregistered(plans)
        return wait

    def _expire_due(self, workflows: Sequence[str]) -> float:
        """Cancel the runs nobody holds whose deadline passed; seconds until the next is due.

        The next deadline is read again at every full pass and every poke (a run
        may have suspended or gone to sleep with one sooner); the runs whose
        deadline passed are read only once it has.

        Raises:
            StoreError: as the store's reads do; the next pass looks again.
        """
        store, expire = self._deadlines, self._expire
        assert store is not None and expire is not None
        skip = self._not_expired
        if self._deadline_look:
            self._deadline_look = False
            self._deadline_at = store.next_deadline(workflows, skip)
        due = self._deadline_at
        if due is not None and _clock.time() >= due:
            for _ in range(_EXPIRE_ROUNDS):
                expired = store.expired(workflows, CLAIM_BATCH, skip)
                for record in expired:
                    if expire(record) == "elsewhere":
                        if len(skip) >= SKIPPED_AT_MOST:
                            skip.clear()  # bounded: those forgotten are looked at once more
                        skip.add(record.run_id)
                if len(expired) < CLAIM_BATCH:
                    break
            self._deadline_at = due = store.next_deadline(workflows, skip)
        if due is None:
            return _NEVER
        # One not taken (another worker's meanwhile, or due by the store's reading and not
        # yet by this clock) is looked at again at the next pass, not in a busy loop.
        left = due - _clock.time()
        return left if left > 0 else POLL_INTERVAL

    def _claim(self, workflows: Sequence[str]) -> bool:
        """Claim queued runs for the room there is and hand them on; whether more may wait."""
        store = self._store
        with self._parked_lock:
            skipped = tuple(self._skipped)
            generation = self._generation  # read before the claim: see park
        # Runs lost while this worker stalled, whose actors here are still in a step.
        busy = self._busy()
        # And runs let go of (cancelled, timed out, ended) whose step body runs on here:
        # they execute in their queues until it returns, not in this worker's room.
        abandoned = self._abandoned(busy)
        if (busy or abandoned) and self._here is not None:
            self._here.left_out([*busy, *abandoned])  # the claimer is poked once they let go
        self._note_executing([*busy, *abandoned])
        # Named only when there are some: a store of the user's written before
        # claim() took busy runs still claims (it never sees a stalled worker's).
        extra: dict[str, list[str]] = {"busy": busy} if busy else {}
        if abandoned and self._names_executing:
            # Counted in their queues, not left out of the claim as busy ones are: a run
            # asleep (or suspended) while the body it let go of runs on wakes (resumes).
            extra["executing"] = abandoned
        if self._capacity is None:
            room = CLAIM_BATCH
            claimed = store.claim(workflows, room, skipped, **extra)
        else:
            # Room counted and taken under one lock: a run started here meanwhile
            # (reserve) waits for the claim and then counts the runs it took. Counted
            # before and claimed after, the same room went to both, one run too many.
            with self._room_lock:
                room = min(CLAIM_BATCH, self._capacity - self._in_use(busy))
                claimed = store.claim(workflows, room, skipped, **extra) if room > 0 else []
        if claimed:
            self._take(claimed, generation)
        return room > 0 and len(claimed) == room

    def _note_executing(self, run_ids: Sequence[str]) -> None:
        """Name to the store the runs whose step bodies here hold queue slots, if that changed.

        What ``callboard queues list`` shows as held (a store of the user's may
        keep none). A store that cannot be reached now is told at a later pass.
        """
        note = getattr(self._store, "note_executing", None)
        executing = frozenset(run_ids)
        if note is None or executing == self._executing_noted:
            return
        try:
            note(sorted(executing))
        except StoreError:
            return
        self._executing_noted = executing

    def _hand_back(self) -> None:
        """Hand back the runs parked since the last pass, and skip them from now on.

        Raises:
            StoreError: as :meth:`SharedStore.hand_back` does; they are tried again.
        """
        # Under the room lock, as a claim: the room they leave is counted once, not
        # both before and after the store lets them go.
        with self._room_lock:
            with self._parked_lock:
                parked = list(self._handing_back)
            self._store.hand_back([run_id for run_id, _ in parked])
            with self._parked_lock:
                del self._handing_back[: len(parked)]
                if len(self._skipped) + len(parked) > SKIPPED_AT_MOST:
                    # Bounded: those forgotten are claimed once more, and handed back again.
                    self._skipped.clear()
                now = self._generation
                self._skipped.update(run_id for run_id, judged in parked if judged == now)
        self._claim_wanted = self._wake_wanted = True

    def _pass_on_cancel(self, run_id: str) -> None:
        with self._canceling_lock:
            if run_id in self._canceling:
                return
            self._canceling.add(run_id)

        def done() -> None:
            with self._canceling_lock:
                self._canceling.discard(run_id)

        self._cancel(run_id, done)

    def _pass_on_resume(self, request: ResumeRequest) -> None:
        """Hand a resume request on, unless it is under way or was settled during this look.

        A request handed on in an earlier look and settled since this look read the
        store may have been carried out after the read: the record that carried it
        out dropped it, but not from what this look holds. Handed on again, a run's
        actor whose step suspended again at that path since would take it a second
        time. The next look reads the store again, and hands on what still waits.
        """
        key = (request.run_id, request.path, request.request_id)
        with self._canceling_lock:
            if key in self._resuming or key in self._settled:
                return
            self._resuming.add(key)

        def done() -> None:
            with self._canceling_lock:
                self._resuming.discard(key)
                self._settled.add(key)

        assert self._resume is not None
        try:
            self._resume(request, done)
        except BaseException:
            done()
            raise

    def _report_unregistered(self, plans: Mapping[str, ExecutionPlan]) -> None:
        """Say once, for each queued run no live runtime registers, that it waits for one.

        Runs of a workflow another live worker registers are its to take, however
        long they queue: in a fleet whose workers run different workflows, each
        worker said so of every run of the others' that it saw queued.
        """
        self._next_report = time.monotonic() + REPORT_EVERY
        if len(self._reported) > _REPORTED_AT_MOST:
            self._reported.clear()
        served = sorted(self._served().union(plans))
        # The oldest few, three fields each: a store with a million queued runs of
        # other workflows costs this pass no more than one with a hundred.
        for run_id, workflow_id, status in self._store.awaiting_others(served, REPORT_AT_MOST):
            if run_id in self._reported:
                continue
            self._reported.add(run_id)
            emit(
                logging.WARNING,
                "run_awaits_its_workflow",
                run_id=run_id,
                workflow_id=workflow_id,
                status=status,
                hint="a runtime on this store that registers the workflow runs it",
            )

    def _report_unserved(self) -> None:
        """A client's look: say which queued runs no live runtime on the store can run.

        A client runs nothing, so a run it started waits in the queue for a worker
        that registers its workflow; with none on the store (the workers are down,
        or run other workflows), nothing else would tell the process that started
        it. Said once per run (a warning a workflow, naming its oldest few runs);
        a worker whose lease ran out counts as gone.
        """
        self._next_report = time.monotonic() + REPORT_EVERY
        if len(self._reported) > _REPORTED_AT_MOST:
            self._reported.clear()
        waiting: dict[str, list[str]] = {}
        served = sorted(self._served())
        for run_id, workflow_id, _status in self._store.awaiting_others(served, REPORT_AT_MOST):
            if run_id not in self._reported:
                self._reported.add(run_id)
                waiting.setdefault(workflow_id, []).append(run_id)
        for workflow_id, run_ids in waiting.items():
            emit(
                logging.WARNING,
                "runs_await_a_worker",
                workflow_id=workflow_id,
                runs=len(run_ids),
                first=run_ids[:5],
                hint=(
                    f"no live worker on the store registers workflow {workflow_id!r}: its "
                    "runs wait in the queue until one does (callboard worker MODULE:ATTR; "
                    "callboard workers list shows who is there)"
                ),
            )

    def _served(self) -> set[str]:
        """The workflows some live runtime on the store runs (one past its lease is gone)."""
        return served_workflows(self._store.workers())


def _takes_executing(store: SharedStore) -> bool:
    """Whether ``store.claim`` takes ``executing`` (a store of the user's may not)."""
    try:
        return "executing" in inspect.signature(store.claim).parameters
    except (TypeError, ValueError):  # no signature to read
        return False
