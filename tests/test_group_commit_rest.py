"""The group-commit writer's rest under load, which leaves SQLite's lock to the store's callers.

A start on SQLite commits on its caller's thread, under the lock the writer holds
through each of its transactions. A writer that commits back to back, as it does
beside hundreds of runs in progress, held that lock almost always, and a start
waited through most of a transaction for it (median 1.7 ms against 0.6 ms with
the rest; ``benchmarks/README.md``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runtime._stores import _writer
from runtime._stores._writer import MAX_REST, GroupCommitWriter, Write, ignore
from runtime._stores.sqlite import SQLiteStore

WAIT = 10.0


class _Recorder:
    """A commit function that can be held, and the batches and rests it saw."""

    def __init__(self, slow: float) -> None:
        self.slow = slow  # how long a batch of several writes takes
        self.batches: list[list[str]] = []
        self.rests: list[tuple[int, float]] = []  # (batches committed before, seconds)
        self.gate = threading.Event()
        self.first_taken = threading.Event()
        self.done = threading.Event()

    def commit(self, writes: list[Write]) -> list[Write]:
        if not self.batches:
            self.first_taken.set()
            assert self.gate.wait(WAIT)
        if len(writes) > 1:
            time.sleep(self.slow)
        self.batches.append([write.payload for write in writes])
        for write in writes:
            write.done(None, None)
        if sum(len(batch) for batch in self.batches) == 4:
            self.done.set()
        return []

    def sleep(self, seconds: float) -> None:
        self.rests.append((len(self.batches), seconds))
        time.sleep(seconds)


def _writer_of(recorder: _Recorder, *, rest: bool) -> GroupCommitWriter:
    return GroupCommitWriter(
        name="test-writer",
        commit=recorder.commit,
        idle=lambda _empty: None,
        give_up=lambda _writes: None,
        finish=lambda: None,
        batch=64,
        rest=rest,
    )


def _one_then_two_then_one(writer: GroupCommitWriter, recorder: _Recorder) -> None:
    """Batches of one, two and one write: the third comes while the second commits."""
    writer.submit("save", "a", ignore)
    assert recorder.first_taken.wait(WAIT)
    writer.submit("save", "b", ignore)
    writer.submit("save", "c", ignore)
    recorder.gate.set()
    deadline = time.monotonic() + WAIT
    while len(recorder.batches) < 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(recorder.slow / 2)  # the batch of two is committing
    writer.submit("save", "d", ignore)
    assert recorder.done.wait(WAIT)
    writer.stop(WAIT)


@pytest.mark.parametrize("rest", [True, False])
def test_a_writer_rests_after_a_batch_of_several_writes_only_when_told_to(
    monkeypatch: pytest.MonkeyPatch, rest: bool
) -> None:
    recorder = _Recorder(slow=4 * MAX_REST)
    monkeypatch.setattr(_writer, "_sleep", recorder.sleep)
    _one_then_two_then_one(_writer_of(recorder, rest=rest), recorder)
    assert recorder.batches == [["a"], ["b", "c"], ["d"]]
    if not rest:
        assert recorder.rests == []
        return
    # No rest after the batch of one; after the batch of two (which took longer than
    # MAX_REST), a rest of at most MAX_REST before the next transaction.
    assert len(recorder.rests) == 1, recorder.rests
    after, seconds = recorder.rests[0]
    assert after == 2
    assert 0 < seconds <= MAX_REST


def test_a_run_whose_saves_come_one_at_a_time_never_waits_for_a_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = _Recorder(slow=0.0)
    recorder.gate.set()
    monkeypatch.setattr(_writer, "_sleep", recorder.sleep)
    writer = _writer_of(recorder, rest=True)
    for name in "abcd":
        settled = threading.Event()
        writer.submit("save", name, lambda _result, _error, e=settled: e.set())
        assert settled.wait(WAIT)
    writer.stop(WAIT)
    assert recorder.batches == [["a"], ["b"], ["c"], ["d"]]
    assert recorder.rests == []


def test_the_sqlite_store_rests_its_writer_for_the_creates_of_its_callers(
    tmp_path: Path,
) -> None:
    store: Any = SQLiteStore(tmp_path / "runs.db")
    try:
        assert store._caller_connection is not None
        assert store._writer._rest is True
    finally:
        store.close()
