"""Snapshots a run actor puts straight into a store in memory, without a hop to the registry.

On a store in memory a snapshot needs no writer thread: keeping it is a dict
assignment under a lock, safe from any thread. Sending each one to the
registry actor costs a wake-up of the registry's thread and a hand-off of the
interpreter lock per transition of every run, which on a machine with few
cores is most of what a run costs. So a run actor on a store in memory keeps
its snapshots that change nothing for anyone waiting (neither settled nor
terminal) itself, and tells the registry only:

- a snapshot that settles the run (terminal or suspended): the registry wakes
  whoever waits for it;
- a snapshot of a run somebody watches or streams (the registry keeps an event
  log for it): the registry turns it into events. The snapshot is stored first
  and the log looked for after, while the registry makes a log before it reads
  the store: so either the registry reads the snapshot from the store, or the
  run actor sees the log and tells it (an event told twice is told once: the
  log skips a snapshot no newer than the last it saw);
- every snapshot while a test kit observes the actors' messages
  (:data:`runtime._probes.observer`), so that its trace and its faults see the
  same messages as on a durable store.

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
    """

    __slots__ = ("_store", "_watched")

    def __init__(self, store: SnapshotStore, watched: Container[str]) -> None:
        if store.durable:
            raise ValueError("a durable store's snapshots go through the registry")
        self._store = store
        self._watched = watched

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
