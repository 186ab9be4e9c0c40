"""The scheduler: one thread per runtime that starts the runs of cron schedules when due.

It never blocks a caller or an actor: it sleeps on an event until the next
tick of any schedule (or :data:`POLL` seconds, to see schedules that other
processes added, paused or deleted), reading the time through
:mod:`runtime._clock` so that a test's virtual clock drives it, and starts
each run as ``start_async`` does.

Exactly once across a fleet: every runtime on a store that runs the
scheduler computes the same ticks from the same stored schedule, and a
tick's run has an id made from the schedule's id and the tick's time
(:func:`~runtime._schedule.tick_run_id`). The first runtime to create that
run wins; the others get ``RunAlreadyStartedError`` and only move the
schedule's last tick on, which moves only forward.

Except when it lies ahead of the store's clock. A runtime whose clock ran
ahead for a moment (a virtual machine resumed with a stale clock, an NTP step,
one misconfigured host) fired the ticks of its future and stored the newest as
the last tick: once its clock was right, no runtime on the store fired any
tick until real time reached it. A pass that finds a last tick more than
:data:`~runtime._stores.schedules.AHEAD_MARGIN` later than the store's clock
(the clock every runtime on the store shares) says so once and moves it back,
with a compare-and-set, to the newest tick by the store's clock; the schedule
fires from there by its catch-up policy. The ticks fired early ran early, once:
when real time reaches them, their runs exist, and are not started again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError

from runtime import _clock
from runtime._errors import (
    InvalidInputError,
    QueueFullError,
    RunAlreadyStartedError,
    WorkflowError,
)
from runtime._model import UNFINISHED_STATUSES, RunStatus
from runtime._run import Run
from runtime._schedule import (
    ALL_AT_MOST,
    ON_TIME,
    ScheduledRun,
    ScheduleInfo,
    newest_tick,
    next_tick,
    tick_of,
    tick_run_id,
    ticks_after,
    ticks_before,
    utc,
)
from runtime._stores.base import SnapshotRecord
from runtime._stores.schedules import AHEAD_MARGIN, ScheduleBook, ScheduleRow
from runtime._tracing import emit

if TYPE_CHECKING:
    from runtime._plan import ExecutionPlan
    from runtime._runtime import RunHost

__all__ = ["LAST_RUNS", "POLL", "Scheduler", "describe", "still_going"]

POLL: Final = 5.0
"""The longest the scheduler sleeps (real seconds) before it reads the schedules again:
how soon it sees a schedule another process added, resumed or changed."""

_SLICE: Final = 0.25
"""Seconds of one slice of the scheduler's sleep, between two looks at the runtime's state."""

_GOING: Final = UNFINISHED_STATUSES | {RunStatus.SUSPENDED.value}

AHEAD_SAID_AGAIN: Final = 3600.0
"""Real seconds before a runtime says again that it moved back a schedule's tick ahead of
the store's clock: a host whose clock stays ahead stores such ticks at every pass, and one
line an hour says so; a new incident a day later is said again."""

GOING_LOOKED_AT: Final = 1000
"""The most unfinished runs of a workflow a redefined schedule looks through for its own."""


def still_going(host: RunHost, run_id: str | None) -> bool:
    """Whether a schedule's previous run has not ended (pending, running, waiting, suspended)."""
    if run_id is None:
        return False
    record = host.load(run_id)
    return record is not None and record.status in _GOING


class Scheduler:
    """Fires the due ticks of the schedules whose workflows this runtime registered.

    Args:
        host: The runtime's host: its store, and where runs start.
        book: Where the schedules are kept.
        plans: The workflows this runtime registered, by id.
    """

    def __init__(
        self,
        host: RunHost,
        book: ScheduleBook,
        plans: Callable[[], dict[str, ExecutionPlan]],
    ) -> None:
        self._host = host
        self._book = book
        self._plans = plans
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._watched: set[str] = set()  # runs whose end wakes the scheduler (buffer_one)
        # Schedules this process cannot fire, with what was said of each (said once).
        self._said: dict[str, tuple[str, str, str]] = {}
        # When (monotonic s) this runtime last said it moved back a schedule's tick ahead.
        self._rewound: dict[str, float] = {}
        self._store_now: float | None = None  # the store's clock, read at most once a pass
        self._begun = 0  # passes begun
        self._done = 0  # the last pass done
        self.next_due: float | None = None
        """When the soonest tick of the schedules seen by the last pass is due (epoch s)."""
        self._passed = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="callboard-scheduler", daemon=True)
        self._forget_waker: Callable[[], None] | None = None

    def start(self) -> None:
        """Start the thread; it fires the ticks due now at once."""
        self._forget_waker = _clock.on_advance(self.poke)
        self._thread.start()

    def poke(self) -> None:
        """Look at the schedules now: one was added, resumed or changed, or the clock jumped."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (a start under way finishes first)."""
        self._stopping.set()
        self._wake.set()
        if self._forget_waker is not None:
            self._forget_waker()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def idle(self) -> bool:
        """Whether no pass is under way or asked for (a test kit's time skipper waits for one).

        After a virtual clock's jump the scheduler fires the ticks due and notes
        the next: the clock must not jump again before.
        """
        with self._passed:
            return self._begun == self._done and not self._wake.is_set()

    def caught_up(self, timeout: float) -> bool:
        """Have a pass begin now, and wait until it is done; whether it was in time.

        For whoever moved a virtual clock (or changed schedules) and then
        looks at what fired.
        """
        with self._passed:
            target = self._begun + 1
        self.poke()
        with self._passed:
            return self._passed.wait_for(lambda: self._done >= target, timeout)

    def _loop(self) -> None:
        while not self._stopping.is_set() and self._host.state == "running":
            with self._passed:  # begun before the clear: idle() never sees a gap between
                self._begun += 1
                begun = self._begun
            self._wake.clear()
            try:
                due = self.run_pass()
            except Exception as exc:  # a store that is down: try again after a while
                emit(logging.WARNING, "schedules_unreadable", error=str(exc))
                due = None
            with self._passed:
                self.next_due = due
                self._done = begun
                self._passed.notify_all()
            wait = POLL if due is None else min(POLL, max(0.0, due - _clock.time()))
            self._sleep(wait)

    def _sleep(self, seconds: float) -> None:
        """Wait until woken or ``seconds`` pass; or until the runtime is no longer running.

        Waits in slices, so that a runtime whose actors are stopped without
        :meth:`stop` (a harness's crash, a forced shutdown) sees this thread
        end within a slice.
        """
        deadline = time.monotonic() + seconds
        while self._host.state == "running":
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._wake.wait(min(remaining, _SLICE)):
                return

    def run_pass(self) -> float | None:
        """Fire every due tick of the schedules this runtime can start; the next tick's time."""
        plans = self._plans()
        soonest: float | None = None
        self._store_now = None
        for row in self._book.all():
            if self._stopping.is_set():
                return None
            plan = plans.get(row.workflow_id)
            if row.paused or plan is None:
                continue
            if row.damaged is not None:
                self._say_damaged(row)
                continue
            try:
                upcoming = self._fire_due(row, plan)
            except QueueFullError as exc:
                # The tick stays due (its run was not recorded): a later pass starts it, once
                # the queue has room. QueueFullError's own message tells a caller to start
                # the run again, which is this thread's job, not the reader's.
                if self._host.state != "running":
                    return None
                emit(
                    logging.WARNING,
                    "schedule_tick_deferred",
                    schedule_id=row.schedule_id,
                    run_id=exc.run_id,
                    queue=exc.queue,
                    limit=exc.limit,
                    hint=f"queue {exc.queue!r} has {exc.limit} runs waiting (max_queued): the "
                    f"tick's run starts at a later pass (every {POLL:g} s), once it has room",
                )
                upcoming = _clock.time() + POLL
            except WorkflowError as exc:  # the store refused (down, locked): the next pass retries
                if self._host.state != "running":
                    return None  # stopping: the start was refused for that
                emit(
                    logging.WARNING,
                    "schedule_tick_failed",
                    schedule_id=row.schedule_id,
                    error=str(exc),
                )
                upcoming = _clock.time() + POLL
            except Exception as exc:
                # Not this store's fault: this process cannot compute the schedule's ticks
                # (a time zone its tz database lacks, a cron its parser refuses, written by
                # another process). It fires none of them; the other schedules go on.
                self._unusable(row, exc)
                continue
            self._said.pop(row.schedule_id, None)
            if upcoming is not None and (soonest is None or upcoming < soonest):
                soonest = upcoming
        return soonest

    def _unusable(self, row: ScheduleRow, exc: Exception) -> None:
        """Say (once for each definition) that this process cannot fire a schedule, and why."""
        self._say_once(
            row,
            "schedule_unusable",
            f"{type(exc).__name__}: {exc}",
            "this process fires none of its ticks; a process that can read its cron "
            "and time zone does, or define it again with ones this process reads",
            cron=row.cron,
            timezone=row.timezone,
        )

    def _say_damaged(self, row: ScheduleRow) -> None:
        """Say (once for each damage) that a schedule's row cannot be read, and how to mend it."""
        self._say_once(
            row,
            "schedule_damaged",
            f"the store's row is damaged: {row.damaged}",
            "no process fires its ticks until it is defined again (Runtime.schedule "
            "with its id mends the row, counting its ticks from then), or delete it: "
            f"callboard schedules delete {row.schedule_id}",
        )

    def _say_once(self, row: ScheduleRow, event: str, error: str, hint: str, **fields: Any) -> None:
        """Log ``event`` for the schedule once for each definition and error."""
        said = (row.cron, row.timezone, error)
        if self._said.get(row.schedule_id) == said:
            return
        self._said[row.schedule_id] = said
        emit(logging.ERROR, event, schedule_id=row.schedule_id, error=error, hint=hint, **fields)

    def _fire_due(self, row: ScheduleRow, plan: ExecutionPlan) -> float | None:
        """Start the runs of the schedule's due ticks by its policies; when its next tick is."""
        now = _clock.time()
        if row.last_tick is not None and row.last_tick > now + AHEAD_MARGIN:
            row = self._rewind(row)
        anchor = row.created_at if row.last_tick is None else row.last_tick
        if row.buffered is not None:
            row = self._start_buffered(row, plan)
        newest, ticks = due_ticks(row, anchor, now, ALL_AT_MOST)
        if newest is not None and newest > anchor:
            if row.catch_up == "all" and len(ticks) == ALL_AT_MOST and ticks[-1] < newest:
                self._wake.set()  # more to catch up on: the next pass goes on at once
            last_run = row.last_run_id
            if last_run is None and row.overlap != "allow" and ticks:
                last_run = self._left_going(row)
            for tick in ticks:
                if not self._still_due(row, tick):
                    break  # paused, deleted, defined anew or handled elsewhere meanwhile
                last_run, row = self._fire(row, plan, tick, last_run)
            if not ticks:
                self._book.advance(row.schedule_id, newest, None)
                emit(logging.INFO, "schedule_ticks_missed", schedule_id=row.schedule_id)
        # A buffered tick waits for the last run's end, which wakes the scheduler (and a
        # pass comes at least every POLL seconds anyway).
        return next_tick(row.cron, row.timezone, max(now, anchor))

    def _rewind(self, row: ScheduleRow) -> ScheduleRow:
        """Move back a last tick that is ahead of the store's clock; the row as it is then.

        This runtime's clock finds the tick ahead; the store's clock decides, so
        that a runtime whose own clock is behind never moves back the ticks of
        runtimes whose clocks are right. The cursor goes to the newest tick by the
        store's clock (not before the definition), only if no runtime moved it
        since this pass read it: the store checks both in one statement.
        """
        assert row.last_tick is not None
        if self._store_now is None:
            self._store_now = self._book.clock()
        store_now = self._store_now
        if row.last_tick <= store_now + AHEAD_MARGIN:
            return row  # this runtime's clock is behind the store's: the tick is not ahead
        newest = newest_tick(row.cron, row.timezone, store_now)
        to = max(store_now if newest is None else newest, row.created_at)
        if to >= row.last_tick or not self._book.rewind(row.schedule_id, row.last_tick, to):
            return row  # moved by another runtime meanwhile: the next pass reads it anew
        said = self._rewound.get(row.schedule_id)
        if said is None or time.monotonic() - said >= AHEAD_SAID_AGAIN:
            self._rewound[row.schedule_id] = time.monotonic()
            emit(
                logging.WARNING,
                "schedule_tick_ahead_of_clock",
                schedule_id=row.schedule_id,
                tick=row.last_tick,
                store_time=store_now,
                rewound_to=to,
                hint=f"its last tick was {row.last_tick - store_now:.0f} s after the store's "
                "clock: a runtime whose clock ran ahead fired its ticks early; it is moved "
                "back, and the schedule fires from there by its catch-up policy (the ticks "
                "fired early ran once, and do not run again); check the clocks of the hosts "
                f"on this store (said at most every {AHEAD_SAID_AGAIN:.0f} s for each schedule)",
            )
        buffered = None if row.buffered is not None and row.buffered > to else row.buffered
        return row._replace(last_tick=to, buffered=buffered)

    def _still_due(self, row: ScheduleRow, tick: float) -> bool:
        """Whether ``tick`` of the schedule as read at the pass's start is still to fire.

        A catch-up fires up to :data:`ALL_AT_MOST` ticks a pass: a pause or delete made
        meanwhile let the rest of them start their runs after the call returned.
        """
        now = self._book.get(row.schedule_id)
        return (
            now is not None
            and not now.paused
            # The same definition: not one defined anew after a delete (a new creation).
            and (now.cron, now.timezone, now.created_at) == (row.cron, row.timezone, row.created_at)
            and (now.last_tick is None or now.last_tick < tick)
        )

    def _start_buffered(self, row: ScheduleRow, plan: ExecutionPlan) -> ScheduleRow:
        """Start the buffered tick's run once the last run has ended; the row as it is then."""
        assert row.buffered is not None
        # A tick kept for room in its queue (see _fire) waits for no run under "allow".
        if row.overlap != "allow" and self._going(row.last_run_id):
            return row
        tick = row.buffered
        run_id = self._start(row, plan, tick)
        if run_id is None:  # its input no longer fits: the tick is dropped
            self._book.release(row.schedule_id, tick, row.last_run_id or "")
            return row._replace(buffered=None)
        self._book.release(row.schedule_id, tick, run_id)
        return row._replace(buffered=None, last_run_id=run_id)

    def _left_going(self, row: ScheduleRow) -> str | None:
        """The newest run of the schedule not yet ended, for a schedule with no last run.

        A schedule deleted and defined again (a redeploy, ``callboard schedules
        delete``) starts with no last run: the run its previous definition left
        going would not hold back the next tick, and two ran at once. At most
        :data:`GOING_LOOKED_AT` unfinished runs of the workflow are looked at.
        """
        store = self._host.store
        if store is None:
            return None
        records, _ = store.list_runs(
            workflow_id=row.workflow_id, status=sorted(_GOING), limit=GOING_LOOKED_AT
        )
        for record in records:  # newest first
            # Its own run, by the tick it names: "report" is a prefix of the runs of a
            # schedule "report:eu" too, whose runs held back every tick of "report".
            if tick_of(row.schedule_id, record.run_id) is not None:
                return record.run_id
        return None

    def _going(self, run_id: str | None) -> bool:
        """Whether the run has not ended; if so, its end (or suspension) wakes the scheduler."""
        if not still_going(self._host, run_id):
            if run_id is not None:
                self._watched.discard(run_id)
            return False
        assert run_id is not None
        if run_id not in self._watched:
            self._watched.add(run_id)
            self._host.watch(run_id, self._wake)
        return True

    def _start(self, row: ScheduleRow, plan: ExecutionPlan, tick: float) -> str | None:
        """Start the run of a tick; its id (``None``: the stored input no longer fits)."""
        run_id = tick_run_id(row.schedule_id, tick)
        try:
            Run(plan, self._host, run_id)._start(
                input_data=json.loads(row.input), request_context=None, scheduled=True
            )
            emit(logging.INFO, "schedule_fired", schedule_id=row.schedule_id, run_id=run_id)
        except RunAlreadyStartedError:
            pass  # another runtime on the store started this tick's run first
        except InvalidInputError as exc:
            # The workflow's schema changed under the stored input: this tick cannot run.
            emit(
                logging.ERROR,
                "schedule_input_invalid",
                schedule_id=row.schedule_id,
                run_id=run_id,
                error=str(exc),
            )
            return None
        return run_id

    def _fire(
        self, row: ScheduleRow, plan: ExecutionPlan, tick: float, last_run: str | None
    ) -> tuple[str | None, ScheduleRow]:
        """Start the run of one tick, unless the overlap policy says no.

        Returns:
            The newest run, and the row as this leaves it (a tick buffered).
        """
        run_id = tick_run_id(row.schedule_id, tick)
        if row.overlap != "allow" and last_run != run_id and self._going(last_run):
            buffer = row.overlap == "buffer_one" and row.buffered is None
            # A previous run found going (left by an earlier definition) is recorded as
            # the schedule's: the buffered tick waits for it, not for none.
            found = last_run if last_run != row.last_run_id else None
            self._book.advance(row.schedule_id, tick, found, buffer=buffer)
            row = row._replace(last_run_id=last_run, buffered=tick if buffer else row.buffered)
            if buffer:
                event = "schedule_tick_buffered"
            elif row.overlap == "buffer_one":
                event = "schedule_tick_dropped"  # one waits already: at most one does
            else:
                event = "schedule_tick_skipped"
            emit(
                logging.INFO,
                event,
                schedule_id=row.schedule_id,
                tick=tick,
                still_running=last_run,
            )
            return last_run, row
        try:
            started = self._start(row, plan, tick)
        except QueueFullError:
            # Kept in the store as a buffered tick, which a later pass starts once the queue
            # has room (by any runtime): left due, it became a missed tick once the queue
            # stayed full past ON_TIME, and catch_up="skip" (or "latest", once the next tick
            # came) dropped it.
            if row.buffered is None:
                self._book.advance(row.schedule_id, tick, None, buffer=True)
            raise
        self._book.advance(row.schedule_id, tick, started)
        return (last_run if started is None else started), row


def due_ticks(
    row: ScheduleRow, anchor: float, now: float, limit: int
) -> tuple[float | None, list[float]]:
    """The schedule's newest tick by ``now``, and the past ticks its policies fire, oldest first.

    Ticks after ``anchor`` (the last tick handled) are due. Those up to
    :data:`ON_TIME` late are not missed: each gets its run, whatever the policy
    (a schedule every few seconds, with its runtimes held up for a while, fired
    only the newest). The ``catch_up`` policy is for the others: ``"all"`` fires
    them all (``limit`` at most), ``"latest"`` the newest, ``"skip"`` none.
    """
    newest = newest_tick(row.cron, row.timezone, now)
    if newest is None or newest <= anchor:
        return newest, []
    if row.catch_up == "all":
        return newest, ticks_after(row.cron, row.timezone, anchor, now, limit)
    on_time = ticks_after(row.cron, row.timezone, max(anchor, now - ON_TIME - 0.001), now, limit)
    if on_time:
        return newest, on_time
    return newest, [newest] if row.catch_up == "latest" else []


LAST_RUNS: Final = 5
"""How many of a schedule's recent ticks a listing looks up runs for."""


def describe(
    row: ScheduleRow, load: Callable[[str], SnapshotRecord | None], now: float
) -> ScheduleInfo:
    """A schedule as listings show it: with its next fire time, and its recent runs.

    Args:
        row: The schedule as the book keeps it.
        load: Reads a run's record by id (a store's ``load``).
        now: The time now (epoch seconds).
    """
    anchor = row.created_at if row.last_tick is None else row.last_tick
    next_fire: float | None = None
    ticks: list[float] = []
    error = None if row.damaged is None else f"the store's row is damaged: {row.damaged}"
    try:
        if not row.paused and row.damaged is None:  # a damaged one fires nothing
            # A tick due shows as its own past time (it showed as "now", alike an
            # hour later when no runtime registered the workflow to fire it).
            _, due = due_ticks(row, anchor, now, 1)
            next_fire = due[0] if due else next_tick(row.cron, row.timezone, max(now, anchor))
        if row.last_tick is not None:
            ticks = ticks_before(row.cron, row.timezone, row.last_tick, LAST_RUNS)
    except Exception as exc:  # written by a process that reads what this one cannot
        error = f"{type(exc).__name__}: {exc}"
    runs: list[ScheduledRun] = []
    for tick in ticks:
        record = load(tick_run_id(row.schedule_id, tick))
        if record is not None:
            runs.append(ScheduledRun(run_id=record.run_id, tick_at=utc(tick), status=record.status))
    last = row.last_run_id
    if last is not None and all(run.run_id != last for run in runs):
        # Its run from longer ago (a long run that later ticks passed over, or one before
        # a pause): what the overlap policy waits for. Listed too, newest first as all.
        record = load(last)
        tick_at = tick_of(row.schedule_id, last)
        if record is not None and tick_at is not None:
            runs.append(ScheduledRun(run_id=last, tick_at=tick_at, status=record.status))
            runs.sort(key=lambda run: run.tick_at, reverse=True)
    try:
        given: Any = json.loads(row.input)
    except ValueError as exc:
        given, error = None, error or f"its input is not JSON: {exc}"
    fields: dict[str, Any] = {
        "schedule_id": row.schedule_id,
        "workflow_id": row.workflow_id,
        "cron": row.cron,
        "timezone": row.timezone,
        "input": given,
        "catch_up": row.catch_up,
        "overlap": row.overlap,
        "paused": row.paused,
        "next_fire_at": utc(next_fire),
        "last_tick_at": utc(row.last_tick),
        "last_runs": runs,
        "buffered_tick_at": utc(row.buffered),
    }
    try:
        return ScheduleInfo(**fields, error=error)
    except ValidationError as exc:
        # A policy this process does not know (a newer one wrote it): the schedule is
        # listed as it is, unreadable, not the listing refused for it.
        problem = error or f"{exc.error_count()} of its values this process cannot read"
        return ScheduleInfo.model_construct(**fields, error=problem)
