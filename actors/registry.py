"""The registry actor: the newest snapshot of every run, in order, final once terminal."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Container, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import pykka

from actors._dispatch import (
    FaultBudget,
    ThreadActor,
    UnexpectedMessageError,
    tell_safely,
    unexpected,
)
from actors._events import SUBSCRIBER_BUFFER, EventLog, EventLogs
from actors._watcher import StoreWatcher
from actors.hooks import HookRunner
from actors.messages import (
    FROM_NOW,
    AbortRun,
    ReadWaited,
    RecordFailure,
    RegistryMessage,
    RunsClaimed,
    RunsDeleted,
    SettledCommitted,
    SnapshotCommitted,
    SnapshotSeen,
    SnapshotTaken,
    StartRun,
    StepWrote,
    SubscribeRun,
    UnsubscribeRun,
    UnwatchRun,
    WatchRun,
    WritesRefused,
)
from actors.step import error_dict
from runtime import _clock, _otel, _probes
from runtime._errors import RunCrashedError, SnapshotFormatError, StoreError
from runtime._model import (
    PARKED_STATUSES,
    SETTLED_STATUSES,
    TERMINAL_STATUSES,
    RunEvent,
    RunStatus,
)
from runtime._snapshot import (
    canceled_record,
    decode,
    failed_record,
    run_events,
    split_parts,
    stand_in_record,
)
from runtime._stores.base import (
    RunFencedError,
    SharedStore,
    SnapshotRecord,
    SnapshotStore,
)
from runtime._sync import Channel, EventChannel, Latch
from runtime._tracing import emit
from runtime._versions import matching_plan, version_error

__all__ = ["RegistryActor"]


_T = TypeVar("_T")

_READ_AT_MOST = 500
"""The most runs of waits read from a shared store in one query (a burst reads in several)."""

_WARNED_AT_MOST = 10_000
"""The most ids of runs handed back for want of their version remembered as said (then cleared)."""


class RegistryActor(ThreadActor):
    """Keeps each run's newest snapshot in the store and wakes those waiting on it.

    A snapshot older than the last one (by sequence number) never replaces it,
    and nothing replaces a terminal snapshot: a run's status never goes back.
    The store enforces the same rule, so it holds across processes too.

    On a durable store the registry tells a run actor when its snapshot is
    committed (so that a step's output is durable before the next step
    starts), wakes waiters only once a terminal snapshot is committed, and
    starts the runs its runtime's claimer took from a shared store. It owns a thread
    because a durable store blocks.
    """

    def __init__(
        self,
        store: SnapshotStore,
        hooks: HookRunner | None = None,
        give_up: Callable[[str], None] | None = None,
        watcher: StoreWatcher | None = None,
        hand_back: Callable[[Sequence[str], int], None] | None = None,
        *,
        logs: EventLogs | None = None,
        waiters: dict[str, dict[threading.Event | Latch, None]] | None = None,
    ) -> None:
        super().__init__()
        # On a shared store: reads what other processes do to runs waited on here.
        self._watcher = watcher
        self._faults = FaultBudget(give_up)
        self._store = store
        self._durable = store.durable
        self._hooks = hooks if hooks is not None else HookRunner()
        # Shared with the run actors' direct writes too: they look for waiters here.
        self._waiters: dict[str, dict[threading.Event | Latch, None]] = (
            {} if waiters is None else waiters
        )
        # Runs somebody watches: their channels; and the numbered events of the runs
        # watched now or lately (see actors._events).
        # Each run's waiters and channels in dicts as ordered sets: one of thousands
        # given up on (a wait cancelled, a watch closed) goes in O(1), not a list's rebuild.
        self._channels: dict[str, dict[Channel[RunEvent], None]] = {}
        # Shared with the run actors' direct writes on a store in memory (actors._direct):
        # they tell the registry the snapshots of the runs it keeps a log of.
        self._logs = EventLogs() if logs is None else logs
        # On a durable store, the last snapshot handed over for each run in
        # progress: a failure is recorded on top of it even before the store has
        # committed it. (The store itself keeps snapshots in order.)
        self._live: dict[str, SnapshotRecord] = {}
        # The snapshot whose on_recorded was told, while its handler runs: a fault after
        # that tells it nothing more.
        self._answered: SnapshotTaken | None = None
        # Runs whose record in parts was lost to a fault on its way to the store, by the
        # lineage of that record: the next record of that lineage (made on top of the
        # lost one, before its actor heard) goes with every part (see _store_snapshot).
        self._lost_parts: dict[str, int] = {}
        # Runs claimed that cannot go on here (their definition, by fingerprint, is not
        # registered) go to ``hand_back``, unchanged: back to the queue, for a worker
        # that has it. The ids of those said so, to say it once (bounded).
        self._hand_back = hand_back
        self._warned: set[str] = set()
        # Runs of waits noted and not yet read from the store (an ordered set), and
        # whether a ReadWaited is on its way for them.
        self._unread: dict[str, None] = {}
        self._read_asked = False
        # The store, if it reads many runs in one query (a protocol's isinstance is slow:
        # asked once, not at every wait).
        self._many_at_once: SharedStore | None = store if isinstance(store, SharedStore) else None

    def on_receive(self, message: RegistryMessage) -> None:
        observer = _probes.observer
        if observer is not None and not observer(self, message):
            return
        try:
            self._handle(message)
        except UnexpectedMessageError:
            raise  # logged by ThreadActor; the registry goes on
        except BaseException as exc:
            emit(
                logging.ERROR,
                "registry_message_failed",
                message=type(message).__name__,
                run_id=getattr(message, "run_id", None),
                exc_info=True,
            )
            self._faults.spend(self, exc)

    def _handle(self, message: RegistryMessage) -> None:
        match message:
            case SnapshotTaken():
                self._on_snapshot_taken(message)
            case SettledCommitted():
                self._on_settled_committed(message)
            case WatchRun():
                self._on_watch_run(message)
            case ReadWaited():
                self._read_asked = False
                self._read_waited()
            case UnwatchRun():
                self._on_unwatch_run(message)
            case SubscribeRun():
                self._on_subscribe_run(message)
            case UnsubscribeRun():
                self._on_unsubscribe_run(message)
            case RecordFailure():
                self._on_record_failure(message)
            case RunsClaimed():
                self._on_runs_claimed(message)
            case SnapshotSeen():
                self._on_snapshot_seen(message)
            case RunsDeleted():
                self._on_runs_deleted(message)
            case WritesRefused():
                self._on_writes_refused()
            case StepWrote():
                try:
                    self._on_step_wrote(message)
                finally:
                    if message.taken is not None:
                        message.taken()
            case _:
                unexpected(self, message)

    def on_stop(self) -> None:
        # Nobody may wait for ever on a registry that has gone: wake everyone,
        # and let them read what the store holds.
        for events in self._waiters.values():
            for event in events:
                event.set()
        self._waiters.clear()
        for channels in self._channels.values():
            for channel in channels:
                # Their runs have not ended: the watch says the stop cut it short.
                if isinstance(channel, EventChannel):
                    channel.stopped = True
                channel.close()
        self._channels.clear()

    # --- messages -------------------------------------------------------------------

    def _on_snapshot_taken(self, message: SnapshotTaken) -> None:
        record, on_recorded = message.record, message.on_recorded
        try:
            self._store_snapshot(message)
        except BaseException as exc:
            if on_recorded is not None:
                if self._answered is not message:
                    # Nobody may wait for ever on a write that never happens.
                    on_recorded(False)
            else:
                self._not_stored(message, exc)
            raise
        finally:
            self._answered = None
        if record.run_id in self._logs and not (
            self._durable and not message.stored and record.status in SETTLED_STATUSES
        ):
            # A durable store's settle is told once committed (_on_settled_committed):
            # told now, a crash before the commit could undo the end a watcher was told.
            self._publish(record)

    def _store_snapshot(self, message: SnapshotTaken) -> None:
        record, ack_to, on_recorded = message.record, message.ack_to, message.on_recorded
        settles = record.status in SETTLED_STATUSES  # terminal ones included
        if message.stored:
            # In the store already (a cancel's compare-and-set, committed): writing it
            # again would be a write on its way after the run may have been deleted.
            self._live.pop(record.run_id, None)
            if settles:
                self._wake(record.run_id)
            if on_recorded is not None:
                on_recorded(True)
            return
        if self._durable:
            if self._lost_parts:
                record = self._after_lost(record)
            last = self._live.get(record.run_id)
            if last is not None and last.seq >= record.seq and last.created_at == record.created_at:
                # Older than what the store will hold once it commits. (A run of the same
                # id created since, after a delete, is another run: its records count.)
                if on_recorded is not None:
                    on_recorded(False)
                return
            if message.terminal or record.status in PARKED_STATUSES:
                self._live.pop(record.run_id, None)  # no actor drives it any more
            else:
                self._live[record.run_id] = record
            saved = _Saved(
                self.actor_ref, record, settles, ack_to, on_recorded, refusal_to=message.refusal_to
            )
            self._store.save(
                (record,),
                on_commit=saved.committed,
                on_error=saved.refused,
            )
            return
        self._store.save((record,))
        try:
            # Wake waiters only if the store kept it: a stale terminal snapshot
            # (the store refuses those) must not end anyone's wait early. A run no longer
            # there was deleted (retention may prune an end its actor stored before this
            # came): its waiters wake, and find it so.
            stored = self._store.load(record.run_id) if settles or on_recorded is not None else None
            if settles and (stored is None or stored.status in SETTLED_STATUSES):
                self._wake(record.run_id)
            if on_recorded is not None:
                # Kept: the store holds it, or something newer built on it (a restart of
                # the run it ended may have come in between).
                self._answered = message  # told, whatever happens in the call
                on_recorded(stored is not None and stored.seq >= record.seq)
        except BaseException:
            if settles:
                # The store may hold the end now: its waiters read it rather than wait
                # to their timeouts for a wake that failed. (One woken early reads a run
                # not ended, and waits again.)
                self._wake(record.run_id)
            if on_recorded is not None and self._answered is not message:
                # Saved: told whether the store kept it, read once more. Told "not
                # stored", a cancel the store holds answered that it changed nothing.
                self._answered = message
                on_recorded(self._kept(record))
            raise

    def _kept(self, record: SnapshotRecord) -> bool:
        """Whether the store holds ``record`` (or a newer one of its run); ``False`` unread."""
        try:
            stored = self._store.load(record.run_id)
        except Exception:
            return False
        return stored is not None and stored.seq >= record.seq

    def _after_lost(self, record: SnapshotRecord) -> SnapshotRecord:
        """``record``, with every part if it was made on top of a record of its run lost here.

        A record in parts carries only the parts that changed since its encoder's
        record before: on top of one the store never had, it named parts the store
        never wrote, and the row it left could not be read (its run, ended by then,
        read as damaged rather than failed by the fault). Its actor starts over (a
        new lineage) once told; the first record it made before that goes with every
        part, and those after it build on that one.
        """
        lost = self._lost_parts.pop(record.run_id, None)
        change = record.parts
        if lost is None or change is None or change.lineage != lost or change.base_seq is None:
            return record
        every = tuple(split_parts(record.data, len(change.head)))
        return record._replace(parts=change._replace(base_seq=None, changed=every, dropped=()))

    def _not_stored(self, message: SnapshotTaken, exc: BaseException) -> None:
        """A snapshot failed on its way to the store (a fault here, not the store's refusal).

        The run cannot go on from it: its actor, if it waits on the store
        (``refusal_to``), ends the run as failed; else the run is recorded failed
        from what the store holds. Left as it was, an end never recorded kept its
        waiters waiting for ever, and the next snapshot in parts built on one the
        store never had.
        """
        run_id = message.record.run_id
        self._live.pop(run_id, None)
        parts = message.record.parts
        if self._durable and parts is not None:
            self._lost_parts[run_id] = parts.lineage
        crash = RunCrashedError(
            f"run {run_id!r}: its snapshot could not be stored: {type(exc).__name__}: {exc}",
            run_id=run_id,
        )
        error = error_dict(crash, with_traceback=False)
        refusal_to = message.refusal_to
        abort = AbortRun(error=error, unstored=True)
        if refusal_to is None or not tell_safely(refusal_to, abort):
            tell_safely(self.actor_ref, RecordFailure(run_id=run_id, error=error))

    def _on_settled_committed(self, message: SettledCommitted) -> None:
        if message.record is not None and message.run_id in self._logs:
            self._publish(message.record)
        self._wake(message.run_id)

    def _wake(self, run_id: str) -> None:
        events = self._waiters.get(run_id)
        if events is not None:
            for event in events:
                event.set()
            # Forgotten once all are set: a wake that fails midway leaves the rest to
            # be woken again (a waiter woken twice wakes once).
            del self._waiters[run_id]
        self._unwatch(run_id)

    def _unwatch(self, run_id: str) -> None:
        """Stop reading a run from the store once nobody here waits on it or watches it."""
        if run_id in self._waiters or run_id in self._channels:
            return
        if self._watcher is not None:
            self._watcher.remove(run_id)

    def _on_watch_run(self, message: WatchRun) -> None:
        run_id = message.run_id
        # The waiter is noted before the store is read: a run actor that stores its
        # run's end itself looks for waiters after (see actors._direct), and an end
        # committed meanwhile wakes it through _wake. Then the read tells whether the
        # run had settled before it was noted.
        self._waiters.setdefault(run_id, {})[message.event] = None
        self._unread[run_id] = None
        if self.actor_inbox.empty():
            self._read_waited()  # a wait alone: read now
        elif not self._read_asked:
            # More mail waits, perhaps more waits: read their runs together once they
            # are noted (the note goes behind them).
            self._read_asked = True
            self.actor_ref.tell(ReadWaited())

    def _read_waited(self) -> None:
        """Read the runs of the waits noted since the last read; wake those settled or gone."""
        live, waiters, watcher = self._live, self._waiters, self._watcher
        run_ids: list[str] = []
        for run_id in self._unread:
            if run_id not in waiters:
                continue  # woken, or given up on, since it was noted
            last = live.get(run_id)
            if last is None:
                run_ids.append(run_id)
            elif watcher is not None:
                # In progress here (on a durable store): its end comes through this
                # actor, not the store, so it is not read. Should it be lost to another
                # worker, the watcher reads it from then on.
                watcher.add(run_id, last.seq)
        self._unread.clear()
        if not run_ids:
            return
        store, many = self._store, self._many_at_once
        try:
            if len(run_ids) > 1 and many is not None:
                found: dict[str, SnapshotRecord] = {}
                for at in range(0, len(run_ids), _READ_AT_MOST):
                    chunk = run_ids[at : at + _READ_AT_MOST]
                    found.update((record.run_id, record) for record in many.load_many(chunk))
                current: dict[str, SnapshotRecord | None] = {r: found.get(r) for r in run_ids}
            else:
                current = {run_id: store.load(run_id) for run_id in run_ids}
            for run_id, record in current.items():
                if record is None or record.status in SETTLED_STATUSES:
                    self._wake(run_id)  # settled, or deleted: what the waiters read next says so
                elif self._watcher is not None:
                    self._watcher.add(run_id, record.seq)
        except BaseException as exc:
            # They read the store again themselves (through an outage), and wait again if
            # need be: the runs noted are read no more here. (Left, a run that had ended
            # before its wait was noted kept it to its timeout after a fault of ours.)
            if isinstance(exc, StoreError):
                emit(logging.WARNING, "run_waits_read_failed", runs=len(run_ids), error=str(exc))
            for run_id in run_ids:
                self._wake(run_id)
            if not isinstance(exc, StoreError):
                raise  # a fault of ours (a MemoryError): counted as the registry's

    def _on_unwatch_run(self, message: UnwatchRun) -> None:
        """A wait timed out or was cancelled: forget its event, and the run once none is left.

        Its run may have settled meanwhile, its waiters woken and gone: then nothing is left.
        """
        self._forget(self._waiters, message.run_id, message.event)

    def _on_subscribe_run(self, message: SubscribeRun) -> None:
        """``run.watch()``, ``run.stream()``: the events so far, then each one as it comes."""
        try:
            self._subscribe(message)
        finally:
            if message.subscribed is not None:
                message.subscribed.set()

    def _subscribe(self, message: SubscribeRun) -> None:
        run_id, channel, from_seq = message.run_id, message.channel, message.from_seq
        log = self._logs.get(run_id)
        if log is None:
            log = self._logs.new(run_id, self._channels)
            self._look_for_deleted()
            if from_seq is not None and from_seq > 0:
                # The client's numbers come from a log this runtime does not have (another
                # process's, before a restart, or one that went): nothing here is "after"
                # them. The run's events are told again, numbered on from the client's
                # last, so that it takes them, and the run's end, as new.
                log.next_seq = from_seq + 1
        current = self._live.get(run_id) or self._store.load(run_id)
        if current is not None:
            events = self._advance(log, current)
            if events is None:
                channel.close()  # unreadable: nothing can be told
                return
            # The store may be ahead of what this actor was told (a run actor saves to a
            # store in memory itself, then tells): the watchers already here are told
            # what the read found, which the log now holds and will not number again.
            self._tell(run_id, log, events)
            if from_seq is not None and (from_seq >= log.next_seq or log.replayed_at(from_seq)):
                # Past every number this log gave: the client's come from another log (of
                # another process, from before a restart, or one this runtime let go
                # and began again since, for another watcher); or one of a replay like
                # this one. As with no log, the run's events are told again, to this
                # client alone, numbered on from its last (or past every number given).
                # The log's numbering skips theirs: its own clients reconnect as before.
                replay = self._replay(current, max(from_seq, log.next_seq - 1) + 1)
                if replay is None:
                    channel.close()
                    return
                if replay:
                    log.skip(replay[0].seq, replay[-1].seq)
                channel.put_many(replay)
                if log.status in TERMINAL_STATUSES:
                    channel.close()
                    return
                from_seq = FROM_NOW
        if from_seq == FROM_NOW:
            from_seq = log.next_seq - 1
        # At once: a reader that sees the first event of the replay sees all of it queued.
        channel.put_many(log.since(from_seq))
        if log.status in TERMINAL_STATUSES:
            channel.close()
            return
        self._channels.setdefault(run_id, {})[channel] = None
        if self._watcher is not None:
            self._watcher.add(run_id, -1 if current is None else current.seq)

    def _on_unsubscribe_run(self, message: UnsubscribeRun) -> None:
        """A watch was closed or dropped: forget its channel, and the run once none is left."""
        self._forget(self._channels, message.run_id, message.channel)

    def _forget(self, table: dict[str, dict[_T, None]], run_id: str, item: _T) -> None:
        """Take ``item`` from the run's waiters or channels; stop following the run if last.

        By identity (events and channels hash so): each wait has an event of its own,
        each watch a channel.
        """
        items = table.get(run_id)
        if items is None:
            return
        items.pop(item, None)
        if items:
            return
        del table[run_id]
        self._unwatch(run_id)

    def _on_step_wrote(self, message: StepWrote) -> None:
        """A step wrote an event of its own: number it, keep it, tell the run's watchers."""
        run_id = message.run_id
        log = self._logs.get(run_id)
        if log is None:
            # The first write of a run nobody watches yet: its log starts here, so that
            # a stream opened a little later still sees it.
            log = self._logs.new(run_id, self._channels)
            self._look_for_deleted()
            current = self._live.get(run_id) or self._store.load(run_id)
            if current is not None:
                self._advance(log, current)
        # Built without validation: every field is made here, and the data is plain
        # already (the step's writer checked it). A chatty step writes thousands.
        event = RunEvent.model_construct(
            type="step_output",
            run_id=run_id,
            status=RunStatus(log.status or RunStatus.RUNNING),
            path=message.path,
            data=message.data,
            item=message.item,
            at=datetime.fromtimestamp(message.at, UTC),
            seq=log.next_seq,
        )
        log.add([event])
        self._deliver(run_id, [event])

    def _on_snapshot_seen(self, message: SnapshotSeen) -> None:
        """A run changed in another process (or was lost to one): tell who waits here."""
        record, run_id = message.record, message.run_id
        if message.fenced:
            self._live.pop(run_id, None)
            if self._watcher is not None and (run_id in self._waiters or run_id in self._channels):
                self._watcher.add(run_id, -1)
            return
        if record is None:  # deleted: what the waiters read next says so
            self._wake(run_id)
            for channel in self._channels.pop(run_id, {}):
                channel.close()
            self._logs.drop(run_id)
            self._unwatch(run_id)
            return
        if run_id in self._logs:
            self._publish(record)
        if record.status in SETTLED_STATUSES:
            self._wake(run_id)

    def _on_runs_deleted(self, message: RunsDeleted) -> None:
        """Runs were deleted or pruned: forget the logs of those the store no longer holds.

        Looked up in the store here, in order with everything else the registry
        does: a run made again under a deleted id meanwhile keeps its own log.
        A run watched now, or in progress here, was not deleted (only ended runs
        are, and their watches end with them): its log stays.
        """
        logs, channels, live = self._logs, self._channels, self._live
        if message.looked and not logs.run_ids and self._watcher is not None:
            self._watcher.stop_looking()  # no log left: until the next one
        named = logs.run_ids if message.run_ids is None else message.run_ids
        run_ids = [
            run_id
            for run_id in named
            if run_id in logs and run_id not in channels and run_id not in live
        ]
        if not run_ids:
            return
        held: Container[str]
        try:
            if self._many_at_once is not None:
                held = self._many_at_once.seqs(run_ids)
            else:
                held = {run_id for run_id in run_ids if self._store.load(run_id) is not None}
        except StoreError as exc:
            # Kept for now: the next delete, prune or look looks again (the logs stay
            # bounded). A look says nothing: every DELETED_LOOK seconds of an outage.
            if not message.looked:
                emit(logging.WARNING, "deleted_runs_read_failed", runs=len(run_ids), error=str(exc))
            return
        for run_id in run_ids:
            if run_id not in held:
                logs.drop(run_id)

    def _look_for_deleted(self) -> None:
        """On a shared store, have the logged runs' records looked for now and then.

        Another process's delete or prune (``callboard runs delete``, another
        runtime's retention) tells this registry nothing, and the store watcher
        reads only the runs somebody here waits on: the log of an ended run
        deleted elsewhere stayed until 128 other runs pushed it out. The watcher
        tells :class:`RunsDeleted` (``looked``) every
        :data:`~actors._watcher.DELETED_LOOK` seconds while logs are kept: one
        read of the logged runs' seqs (none while each is watched or in progress).
        """
        if self._watcher is not None:
            self._watcher.look_for_deleted()

    def _advance(self, log: EventLog, record: SnapshotRecord) -> list[RunEvent] | None:
        """Number and keep the events since the last snapshot the log saw; ``None``: unreadable.

        Records reach here from this process's actors and from the store
        watcher: one no newer than the last seen is no news.
        """
        if log.created_at is not None and record.created_at != log.created_at:
            # Deleted, and a new run made under the same id: the old run's events go, the
            # numbering goes on, and the new run's events are told from its start.
            log.status, log.steps, log.record_seq = "", {}, -1
            log.events.clear()
        log.created_at = record.created_at
        if record.seq <= log.record_seq:
            return []
        try:
            snapshot = decode(record.data, record.run_id)
        except SnapshotFormatError as exc:
            emit(logging.ERROR, "run_unreadable", run_id=record.run_id, error=str(exc))
            return None
        events = run_events(snapshot, log.status, log.steps, log.next_seq)
        log.status = snapshot["status"]
        log.steps = {
            path: (step["status"], step.get("attempts", 1), step.get("iterations") or 0)
            for path, step in snapshot["steps"].items()
        }
        log.record_seq = record.seq
        log.add(events)
        return events

    def _replay(self, record: SnapshotRecord, first_seq: int) -> list[RunEvent] | None:
        """The run's events from its start, numbered from ``first_seq``; ``None``: unreadable."""
        try:
            snapshot = decode(record.data, record.run_id)
        except SnapshotFormatError as exc:
            emit(logging.ERROR, "run_unreadable", run_id=record.run_id, error=str(exc))
            return None
        return run_events(snapshot, "", {}, first_seq)

    def _publish(self, record: SnapshotRecord) -> None:
        """Tell a run's watchers what changed since the last snapshot its log saw."""
        run_id = record.run_id
        log = self._logs.get(run_id)
        if log is None:
            return
        events = self._advance(log, record)
        if events is None:
            # Nothing more can be said of this run: end its watches rather than hang them.
            for channel in self._channels.pop(run_id, {}):
                channel.close()
            self._logs.drop(run_id)
            self._unwatch(run_id)
            return
        self._tell(run_id, log, events)

    def _tell(self, run_id: str, log: EventLog, events: list[RunEvent]) -> None:
        """Tell the run's watchers ``events``, the log's newest; end their watches with the run."""
        self._deliver(run_id, events)
        if log.status in TERMINAL_STATUSES:
            for channel in self._channels.pop(run_id, {}):
                channel.close()
            self._unwatch(run_id)

    def _deliver(self, run_id: str, events: list[RunEvent]) -> None:
        """Put ``events`` into the run's channels; cut off a subscriber that lags too far."""
        channels = self._channels.get(run_id)
        if not channels or not events:
            return
        kept: dict[Channel[RunEvent], None] = {}
        for channel in channels:
            if len(channel) + len(events) > SUBSCRIBER_BUFFER and isinstance(channel, EventChannel):
                # Its consumer takes events more slowly than they come: rather than
                # queue them without bound, close it as lagged. The consumer takes
                # what is queued, then subscribes again from the last event it took,
                # which the log still holds unless it fell EVENT_LOG_SIZE behind.
                channel.lagged = True
                channel.close()
                continue
            channel.put_many(events)
            kept[channel] = None
        if kept:
            self._channels[run_id] = kept
        else:
            del self._channels[run_id]
            self._unwatch(run_id)

    def _on_writes_refused(self) -> None:
        # Every wait here reads its run again: one that has not ended is told why
        # it cannot be recorded (the facade asks the store), not left waiting.
        for run_id in list(self._waiters):
            self._wake(run_id)

    def _on_record_failure(self, message: RecordFailure) -> None:
        self._lost_parts.pop(message.run_id, None)  # its failure is recorded whole
        current = self._live.get(message.run_id) or self._store.load(message.run_id)
        if current is None or current.status in TERMINAL_STATUSES:
            return
        if message.refused:  # the newest snapshot is what the store refused: build on the row
            self._live.pop(message.run_id, None)
            self._stand_in(current, message.error, keep_bytes=False)
            return
        try:
            snapshot = decode(current.data, current.run_id)
        except SnapshotFormatError as exc:
            self._stand_in(
                current,
                error_dict(exc, run_id=current.run_id, with_traceback=False),
                keep_bytes=True,
            )
            return
        record = failed_record(snapshot, message.error, _clock.time())
        if message.plan is None:
            self._on_snapshot_taken(SnapshotTaken(record=record, terminal=True))
            return
        self._hooks.finish(message.plan, snapshot, record, self.actor_ref)

    def _on_runs_claimed(self, message: RunsClaimed) -> None:
        elsewhere: list[str] = []  # runs that go back to the queue, for another worker
        for claimed in message.claimed:
            record = claimed.record
            plan = message.plans.get(record.workflow_id)
            if plan is None:  # unregistered since the claim
                emit(logging.WARNING, "claimed_run_has_no_workflow", run_id=record.run_id)
                elsewhere.append(record.run_id)
                continue
            try:
                snapshot = decode(record.data, record.run_id)
            except SnapshotFormatError as exc:
                # Nobody can run it on: it fails, naming why, and keeps its bytes.
                self._stand_in(
                    record,
                    error_dict(exc, run_id=record.run_id, with_traceback=False),
                    keep_bytes=True,
                )
                continue
            versions = message.versions.get(record.workflow_id, {})
            matching = matching_plan(snapshot, plan, versions)
            if claimed.cancel_requested:
                # Its cancel was asked for while another worker held it (or while it was
                # on its way back from one that could not drive it): it ends here, with no
                # step run.
                emit(logging.INFO, "run_canceled_on_claim", run_id=record.run_id)
                now = _clock.time()
                # The worker that began it counted its start, not its end.
                _otel.count_canceled_unheld(snapshot, now)
                canceled = canceled_record(snapshot, now)
                self._hooks.finish(matching or plan, snapshot, canceled, self.actor_ref)
                continue
            if matching is None:
                # Not a step of it runs on another definition: it goes back, unchanged, for
                # a worker that has its own, and holds no place in its queue meanwhile.
                if record.run_id not in self._warned:  # said once
                    if len(self._warned) >= _WARNED_AT_MOST:
                        self._warned.clear()
                    self._warned.add(record.run_id)
                    emit(
                        logging.WARNING,
                        "run_awaits_its_version",
                        run_id=record.run_id,
                        workflow_id=record.workflow_id,
                        status=record.status,
                        error=str(version_error(snapshot, versions)),
                        hint="a worker on this store that registers its version runs it",
                    )
                elsewhere.append(record.run_id)
                continue
            if record.status != "pending":
                emit(
                    logging.INFO,
                    "run_resumed",
                    run_id=record.run_id,
                    workflow_id=record.workflow_id,
                    from_step=snapshot["next_step"],
                )
            self._live[record.run_id] = record
            tell_safely(message.supervisor, StartRun(plan=matching, snapshot=snapshot))
        if elsewhere and self._hand_back is not None:
            self._hand_back(elsewhere, message.generation)

    def _stand_in(self, record: SnapshotRecord, error: dict[str, Any], *, keep_bytes: bool) -> None:
        """Record a run failed from its row alone: its snapshot is unreadable or refused."""
        emit(logging.ERROR, "run_failed_unreadable", run_id=record.run_id, error=error["message"])
        failed = stand_in_record(record, error, _clock.time(), keep_bytes=keep_bytes)
        settled = (
            _Saved(self.actor_ref, failed, True, None, None).committed if self._durable else None
        )
        self._store.save((failed,), on_commit=settled, on_error=_log_refusal(failed))
        if not self._durable:
            self._wake(record.run_id)


class _Saved:
    """What the registry does once a durable store committed a snapshot, or refused it for good.

    Its two methods are the save's ``on_commit`` and ``on_error``, called on the
    store's writer thread. One slotted object, not two closures: a save in
    flight holds three tracked objects instead of thirteen cells, tuples and
    functions, and every garbage collection meanwhile walks them.
    """

    __slots__ = ("ack_to", "me", "on_recorded", "record", "refusal_to", "settles")

    def __init__(
        self,
        me: pykka.ActorRef[Any],
        record: SnapshotRecord,
        settles: bool,
        ack_to: pykka.ActorRef[Any] | None,
        on_recorded: Callable[[bool], None] | None,
        *,
        refusal_to: pykka.ActorRef[Any] | None = None,
    ) -> None:
        self.me = me
        self.record = record
        self.settles = settles
        self.ack_to = ack_to
        self.on_recorded = on_recorded
        self.refusal_to = refusal_to

    def committed(self) -> None:
        """The store committed the record: tell who waits on it."""
        if self.on_recorded is not None:
            self.on_recorded(True)
        if self.ack_to is not None:
            tell_safely(self.ack_to, SnapshotCommitted(seq=self.record.seq))
        if self.settles:
            tell_safely(self.me, SettledCommitted(run_id=self.record.run_id, record=self.record))

    def refused(self, exc: BaseException) -> None:
        """The store refused the record for good.

        The run cannot go on without it: its actor (``refusal_to``), if it still
        has one, ends the run as failed; a run with none (its last snapshot
        refused) is recorded failed from its row alone. A write a caller waits
        on (a cancel's) is only reported to it: the caller is told it failed.
        """
        record, on_recorded, refusal_to = self.record, self.on_recorded, self.refusal_to
        if isinstance(exc, RunFencedError):
            # Another worker holds the run now: this one stops, recording nothing.
            if on_recorded is not None:
                on_recorded(False)
            if refusal_to is not None:
                tell_safely(refusal_to, AbortRun(error=None))
            tell_safely(self.me, SnapshotSeen(run_id=record.run_id, record=None, fenced=True))
            return
        if on_recorded is not None:
            # A caller (a cancel) waits on this write and is told it failed;
            # the run stays as its stored record says.
            on_recorded(False)
            emit(logging.ERROR, "snapshot_refused", run_id=record.run_id, error=str(exc))
            return
        error = error_dict(exc, run_id=record.run_id, with_traceback=False)
        emit(logging.ERROR, "snapshot_refused", run_id=record.run_id, error=str(exc))
        if refusal_to is None or not tell_safely(refusal_to, AbortRun(error=error)):
            tell_safely(self.me, RecordFailure(run_id=record.run_id, error=error, refused=True))


def _log_refusal(record: SnapshotRecord) -> Callable[[BaseException], None]:
    def refused(exc: BaseException) -> None:
        emit(logging.ERROR, "stand_in_refused", run_id=record.run_id, error=str(exc))

    return refused
