"""Each thread that reads a SQLite store gets a read-only connection; none is left open.

A connection left for the garbage collector makes Python 3.13 and later warn
``ResourceWarning: unclosed database`` for every thread that read and ended (the
claimer, step threads, the application's own), and for every store freed in a
collection of reference cycles. So a thread's reader is closed when the thread
ends, and the readers of a store that is freed are closed before the collector
finalizes them.
"""

from __future__ import annotations

import gc
import sqlite3
import threading
import warnings
from pathlib import Path

import pytest

from runtime import SQLiteStore

WAIT = 10.0


def is_closed(connection: sqlite3.Connection) -> bool:
    try:
        connection.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


def test_the_reader_of_a_thread_that_ended_is_closed(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    try:
        seen: list[sqlite3.Connection] = []

        def read() -> None:
            assert store.load("no-such-run") is None
            seen.append(store._reader())

        thread = threading.Thread(target=read)
        thread.start()
        thread.join(WAIT)

        [connection] = seen
        gc.collect()  # only for the thread's own objects: its reader goes when it ends
        assert is_closed(connection)
        assert connection not in store._readers
        assert store.load("no-such-run") is None  # this thread's reader still works
    finally:
        store.close()


def test_the_readers_of_a_store_freed_in_a_cycle_are_closed_without_a_warning(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    assert store.load("no-such-run") is None
    connection = store._reader()
    store.close()
    store.cycle = store  # type: ignore[attr-defined]  # only the collector can free it now
    del store

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()

    assert is_closed(connection)
    unclosed = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not unclosed, [str(w.message) for w in unclosed]


@pytest.mark.parametrize("threads", [8])
def test_readers_of_many_threads_are_all_closed_as_they_end(tmp_path: Path, threads: int) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    try:
        barrier = threading.Barrier(threads)

        def read() -> None:
            barrier.wait(WAIT)
            store.load("no-such-run")

        workers = [threading.Thread(target=read) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(WAIT)

        assert not store._readers  # every reader went with its thread
    finally:
        store.close()
