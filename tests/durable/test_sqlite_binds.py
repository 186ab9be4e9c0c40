"""A SQLite store's rows bind no ``None`` and no ``bytes``, and still write NULL and blobs.

Python 3.11's sqlite3 module puts every such value through its adapter protocol,
which raises and clears an AttributeError each time: the eight of a start cost
about a tenth of its instructions on its caller's thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from runtime import Runtime, SQLiteStore
from tests._support import quick_workflow
from tests.durable._support.helpers import record, row, save_and_wait

WAIT = 10.0


class _Noting:
    """A connection that notes the values bound to each statement writing ``runs``."""

    def __init__(self, connection: sqlite3.Connection, bound: list[Any]) -> None:
        self._connection = connection
        self._bound = bound

    def execute(self, sql: str, params: Any = ()) -> Any:
        if "INTO runs" in sql:
            self._bound.extend(params)
        return self._connection.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


@contextmanager
def noting_binds(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    bound: list[Any] = []
    connect = SQLiteStore._connect

    def noting_connect(self: SQLiteStore, *, readonly: bool = False) -> Any:
        connection = connect(self, readonly=readonly)
        return connection if readonly else _Noting(connection, bound)

    with monkeypatch.context() as patch:
        patch.setattr(SQLiteStore, "_connect", noting_connect)
        yield bound


def test_a_run_from_its_start_to_its_end_binds_no_none_and_no_bytes_to_its_row(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with noting_binds(monkeypatch) as bound, Runtime(store=db) as rt:
        wf = rt.register(quick_workflow("binds"))
        run = wf.create_run()
        run.start_async(input_data={"value": "v"})
        assert run.wait(WAIT).status == "success"
        # The start, then the run's saves (through the writer).
        assert len(bound) > 2 * 14
    assert [value for value in bound if value is None] == []
    assert {type(value) for value in bound} <= {str, int, float, bytearray}
    stored = row(db, run.run_id)
    assert stored is not None
    assert stored["lineage"] is None or isinstance(stored["lineage"], int)
    assert stored["wake_at"] is None and stored["deadline"] is None
    assert stored["resource_id"] is None and stored["idempotency_key"] is None
    assert stored["queue"] is None and stored["queue_key"] is None
    assert stored["owner_id"] is None  # settled: nobody's
    assert isinstance(stored["snapshot"], bytes)


@pytest.mark.parametrize("snapshot_encoding", ["by-hand"])  # records made by hand: once
@pytest.mark.parametrize("creates", ["on the caller's thread", "through the writer"])
def test_a_value_that_looks_like_the_stand_in_for_null_is_stored_as_it_is(
    db: Path, snapshot_encoding: str, creates: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NULL is bound as 0 in a text column and as '' in a number column: a text "0" and
    # a number 0 are other values (SQLite never finds two storage classes equal). A
    # create on its own writes one row; the writer's, rows of a batch (see _inserts).
    monkeypatch.setattr(SQLiteStore, "_fast_creates", creates != "through the writer")
    sqlite_store = SQLiteStore(db)
    try:
        check_stand_ins(db, sqlite_store)
    finally:
        sqlite_store.close()


def check_stand_ins(db: Path, sqlite_store: SQLiteStore) -> None:
    looks_alike = record("looks-alike")._replace(
        resource_id="0", idempotency_key="0", deadline=0.0, data=b"\x00"
    )
    assert sqlite_store.create(looks_alike)
    assert sqlite_store.create(record("nulls"), hold=False)
    stored = row(db, "looks-alike")
    assert stored is not None
    assert (stored["resource_id"], stored["idempotency_key"]) == ("0", "0")
    assert stored["deadline"] == 0.0 and isinstance(stored["deadline"], float)
    assert stored["owner_id"] == sqlite_store.owner_id
    assert stored["snapshot"] == b"\x00" and stored["lineage"] is None
    nulls = row(db, "nulls")
    assert nulls is not None
    for column in ("owner_id", "lineage", "wake_at", "resource_id", "deadline", "queue"):
        assert nulls[column] is None, column
    assert (nulls["queue_key"], nulls["idempotency_key"]) == (None, None)
    # A save writes them as they are too: a sleep's wake time at 0, then none.
    save_and_wait(sqlite_store, record("nulls", seq=1, status="waiting")._replace(wake_at=0.0))
    slept = row(db, "nulls")
    assert slept is not None and slept["wake_at"] == 0.0 and slept["seq"] == 1
    save_and_wait(sqlite_store, record("nulls", seq=2, status="running"))
    woken = row(db, "nulls")
    assert woken is not None and woken["wake_at"] is None and woken["seq"] == 2
    assert woken["resource_id"] is None and woken["owner_id"] is None
