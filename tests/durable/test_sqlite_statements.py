"""The SQL a SQLite store runs has one text per kind of query, whatever its lists' lengths.

Each connection keeps its last 128 compiled statements. A query that wrote a ``?``
for each workflow id registered was new text for each count of them: a daemon that
registered workflow after workflow kept a compiled copy of each query per count,
about 20 KB more per workflow id, never given back (42 MB of SQLite's heap at 2,000).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from runtime import SQLiteStore
from tests.durable._support.helpers import record

WAIT = 10.0


def traced(store: SQLiteStore) -> list[str]:
    """Every statement the store's reader (this thread's) and writer connections run."""
    statements: list[str] = []
    lock = threading.Lock()

    def note(sql: str) -> None:
        with lock:
            statements.append(sql)

    store._reader().set_trace_callback(note)
    store._connection.set_trace_callback(note)
    return statements


_LITERAL = re.compile(r"'(?:[^']|'')*'|-?\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b")


def shapes(statements: list[str]) -> set[str]:
    """The texts of the statements by workflow ids, their values (traced bound) as ``?``."""
    return {
        _LITERAL.sub("?", sql) for sql in statements if "workflow_id" in sql and "INSERT" not in sql
    }


def test_queries_by_workflow_ids_have_one_text_whatever_their_number(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    try:
        statements = traced(store)
        seen: list[set[str]] = []
        for count in (1, 2, 3, 7, 40):
            ids = [f"wf-{number}" for number in range(count)]
            # A run of the last id is queued: the claim goes on to take it.
            queued = record(f"run-{count}", workflow_id=ids[-1])
            assert store.create(queued, hold=False)
            statements.clear()
            claimed = store.claim(ids, 5)
            assert [each.record.run_id for each in claimed] == [f"run-{count}"]
            assert store.claim(ids, 5) == []
            store.next_wake(ids)
            store.next_opening(ids)
            store.queued(ids)
            store.awaiting_others(ids, 5)
            seen.append(shapes(statements))
        assert all(texts == seen[0] for texts in seen), seen
        assert len(seen[0]) >= 5  # the claim's read and write, and the four others
    finally:
        store.close()
