"""Fixtures for actor-level tests: a runtime whose store records every snapshot it is given."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence

import pytest
import structlog

from runtime import Runtime
from runtime._stores.base import MemoryStore, SnapshotRecord
from tests._support import wait_for_no_callboard_threads


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
                self.history[record.run_id].append(record)
        super().save(records)


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore()


@pytest.fixture
def rt(store: RecordingStore) -> Iterator[Runtime]:
    """A started runtime on the recording store; stopped, and checked for leftover threads."""
    runtime = Runtime()
    runtime._store = store  # before start(): the machinery is built on it
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.stop(timeout=5)
        structlog.reset_defaults()
    assert not wait_for_no_callboard_threads()
