"""Snapshots a run actor puts straight into a store in memory, without a hop to the registry.

On a store in memory a snapshot needs no writer thread: keeping it is a dict
assignment under a lock, safe from any thread. Sending each one to the
registry actor costs a wake-up of the registry's thread and a hand-off of the
interpreter lock per transition of every run, which on a machine with few
cores is most of what a run costs. So a run actor on a store in memory keeps
its snapshots itself, and tells the registry only:

- a snapshot that suspends the run, or ends a run that has hooks to call or a
  cancel waiting for it: the registry wakes whoever waits for it;
- the end of a run somebody waits for (``run.wait()``, ``start``): the
  registry wakes them;
- a snapshot of a run somebody watches or streams (the registry keeps an event
  log for it): the registry turns it into events;
- every snapshot of a run whose steps wrote events (``ctx.writer.write``, told to
  the registry): its snapshots must reach the run's event log after those writes;
- every snapshot while a test kit observes the actors' messages
  (:data:`runtime._probes.observer`), so that its trace and its faults see the
  same messages as on a durable store.

Both waits and watches are looked for after the snapshot is stored, while the
registry notes a waiter or a log before it reads the store: so either the
registry reads the snapshot from the store, or the run actor sees the waiter
or the log and tells it (a waiter woken twice wakes once; an event told twice
is told once: the log skips a snapshot no newer than the last it saw).

The store keeps snapshots in order itself (a lower ``seq`` never replaces a
higher one, nothing replaces a terminal one), so a snapshot kept here and an
older one the registry stores later cannot take a run back.
"""

from __future__ import annotations

from collections.abc import Container

from runtime import _probes
from runtime._model import SETTLED_STATUSES
from runtime._stores.base import SnapshotRecord, SnapshotStore

__all__ = ["DirectWrites"]


class DirectWrites:
    """A store in memory, as its run actors write to it (see the module's docstring).

    Args:
        store: The store; not a durable one (whose writes go through the registry's
            writer and are acknowledged).
        watched: The runs whose snapshots the registry must still hear of: its event
            logs, read (``in``) from run actors' threads.
        waited: The runs somebody waits for: the registry's waiters, read the same way.
    """

    __slots__ = ("_store", "_waited", "_watched")

    def __init__(
        self, store: SnapshotStore, watched: Container[str], waited: Container[str] = ()
    ) -> None:
        if store.durable:
            raise ValueError("a durable store's snapshots go through the registry")
        self._store = store
        self._watched = watched
        self._waited = waited

    def keep(self, record: SnapshotRecord) -> bool:
        """Store a snapshot here and now if that is all it needs; whether it was.

        ``False``: the registry must be told of it (it settles the run, the run
        is watched, or a test kit observes the messages); it may have been
        stored already.
        """
        if record.status in SETTLED_STATUSES or _probes.observer is not None:
            return False
        self._store.save((record,))
        return record.run_id not in self._watched

    def end(self, record: SnapshotRecord) -> bool:
        """Store a run's terminal snapshot here and now if nobody waits for it; whether it was.

        The caller keeps the registry for an end that has hooks to call first or
        a caller to answer once it is stored. ``False``: the registry must be
        told of it, to wake who waits or watches; it may have been stored already.
        """
        if _probes.observer is not None:
            return False
        self._store.save((record,))
        run_id = record.run_id
        return run_id not in self._waited and run_id not in self._watched
