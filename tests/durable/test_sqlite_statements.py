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

from pydantic import BaseModel, RootModel

from runtime import Runtime, SQLiteStore, create_step, create_workflow
from tests.durable._support.helpers import raw, record

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


class _Item(BaseModel):
    text: str


def test_dropping_a_part_finds_it_by_its_whole_key(tmp_path: Path) -> None:
    # Each item of a foreach over a nested workflow drops a part. Dropped with a row-value
    # IN (VALUES ...), SQLite searched the run's parts by run_id alone (one triple) or
    # scanned the whole table (several): 8,000 items took 29 s, the last ones 3 times
    # longer each than the first.
    path = tmp_path / "runs.db"
    store = SQLiteStore(path)
    statements = traced(store)
    step = create_step(
        id="echo", input_schema=_Item, output_schema=_Item, execute=lambda c: c.input_data
    )
    child = create_workflow(id="child", input_schema=_Item, output_schema=_Item).then(step).commit()
    workflow = (
        create_workflow(id="items", input_schema=_Item, output_schema=RootModel[list[_Item]])
        .map(lambda ctx: [{"text": f"{index:03d}" + "x" * 60} for index in range(40)])
        .foreach(child)
        .commit()
    )
    try:
        with Runtime(store=store) as rt:
            result = rt.register(workflow).create_run().start(input_data={"text": ""}, timeout=WAIT)
        assert result.status == "success"
    finally:
        store.close()
    drops = [sql for sql in statements if sql.startswith("DELETE FROM run_parts") and "key" in sql]
    assert drops  # the run was kept in parts, and its items dropped some
    with raw(path) as connection:
        for sql in set(drops):
            plan = [row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + sql)]
            on_parts = [step for step in plan if "run_parts" in step]
            assert on_parts and all("lineage=? AND key=?" in step for step in on_parts), (sql, plan)
