"""What the actor tests share: a store that records every snapshot it is given."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence

from runtime._stores.base import SnapshotRecord
from runtime._stores.memory import MemoryStore


class RecordingStore(MemoryStore):
    """A MemoryStore that remembers every record it was given, per run."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[SnapshotRecord]] = defaultdict(list)
        self._history_lock = threading.Lock()

    def create(self, record: SnapshotRecord) -> bool:
        created = super().create(record)
        if created:
            with self._history_lock:
                self.history[record.run_id].append(record)
        return created

    def save(self, records: Sequence[SnapshotRecord]) -> None:
        with self._history_lock:
            for record in records:
                history = self.history[record.run_id]
                # The same record given again (kept by its run actor, then told to the
                # registry to wake who waits for it: actors._direct) counts once.
                if not history or history[-1] is not record:
                    history.append(record)
        super().save(records)
