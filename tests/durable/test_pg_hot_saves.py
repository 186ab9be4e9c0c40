"""Saves of a run in progress on PostgreSQL are HOT updates; schema version 6 and its migration.

A save that changes no indexed column, and finds room on its page, is a HOT update:
PostgreSQL writes the row's new version beside the old one and no index entry. Until
schema version 6 an index held ``updated_at`` (which every save changes), so every save
wrote an entry into each of the table's indexes. Now retention reads ``ended_at``
(``updated_at`` once the run ended, NULL before) and the table keeps room on its pages.
The counts are PostgreSQL's own (``pg_stat_user_tables``), not timed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import runtime._stores.postgres as pg
from runtime import PostgresStore, Runtime
from runtime._model import TERMINAL_STATUSES
from tests.durable.test_pg_plans import batch, fill, held, plan
from tests.durable.test_step_records import TEXT, chain

WAIT = 10.0


@pytest.fixture
def runs(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    with fill(postgres_url, parts=False) as connection:
        yield connection


def updates(url: str, least: int) -> tuple[int, int]:
    """``callboard_runs``' updates and HOT updates, once at least ``least`` are counted.

    Backends hand their counts over when idle or gone, so they may lag a moment.
    """
    deadline = time.monotonic() + WAIT
    with psycopg.connect(url, autocommit=True) as connection:
        while True:
            connection.execute("SELECT pg_stat_clear_snapshot()")
            row = connection.execute(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                "WHERE relname = 'callboard_runs'"
            ).fetchone()
            assert row is not None
            if row[0] >= least or time.monotonic() > deadline:
                return int(row[0]), int(row[1])
            time.sleep(0.05)


def test_the_steps_of_a_run_are_saved_by_hot_updates(postgres_url: str) -> None:
    with Runtime(store=postgres_url) as rt:
        wf = rt.register(chain(12, "hot"))
        run = wf.create_run().start(input_data={"value": TEXT}, timeout=WAIT)
        assert run.status == "success"
    # The claim (owner), the first save (status: running) and the last (ended) change
    # indexed columns; the saves of the steps between change none.
    done, hot = updates(postgres_url, 12)
    assert done >= 12
    assert hot >= done - 4, (done, hot)


def test_a_batch_of_saves_writes_no_index(runs: psycopg.Connection[Any]) -> None:
    records = batch()
    for seq in range(2, 7):
        for record in records:
            record["seq"] = seq
            record["updated_at"] = time.time()
        # Both statements: in a transaction that locked the rows, and alone (locking them).
        statement = pg._SAVE_HELD if seq % 2 else pg._SAVE_HELD_ALONE
        saved = runs.execute(statement, held(records)).fetchall()
        assert all(row[1] for row in saved)
    runs.execute("SELECT pg_stat_force_next_flush()")
    runs.execute("SELECT 1")
    url = runs.info.dsn
    done, hot = updates(url, 5 * len(records))
    assert done >= 5 * len(records)
    assert hot >= done * 0.9, (done, hot)


def test_retention_finds_ended_runs_by_the_index_of_when_they_ended(
    postgres_url: str,
) -> None:
    connection = fill(postgres_url, parts=False)
    with connection:
        statuses = sorted(TERMINAL_STATUSES)
        text = plan(connection, pg._ENDED_BEFORE, (statuses, time.time() - 3600, 1000))
        assert "callboard_runs_ended" in text and "Seq Scan" not in text, text
        # ``keep``'s cutoff reads the newest of each status by the index, in its order, and
        # no more than it keeps: not a sort of every ended run (half the table here).
        newest = " UNION ALL ".join(pg._NEWEST_OF for _ in statuses)
        text = plan(
            connection,
            f"SELECT ended_at FROM ({newest}) AS n ORDER BY ended_at DESC LIMIT 1 OFFSET %s",
            (*[value for each in statuses for value in (each, 1000)], 999),
        )
        assert "callboard_runs_ended" in text and "Seq Scan" not in text, text
        indexes = {
            row[0]
            for row in connection.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'callboard_runs'"
            ).fetchall()
        }
        assert "callboard_runs_by_end" not in indexes
        # ended_at is updated_at for ended runs, NULL for the others.
        row = connection.execute(
            "SELECT count(*) FILTER (WHERE ended_at IS DISTINCT FROM updated_at), "
            "count(*) FILTER (WHERE ended_at IS NOT NULL) FROM callboard_runs "
            "WHERE status = 'success'"
        ).fetchone()
        assert row is not None and row[0] == 0 and row[1] > 1000
        assert connection.execute(
            "SELECT count(*) FROM callboard_runs WHERE status <> 'success' AND ended_at IS NOT NULL"
        ).fetchone() == (0,)


def test_a_version_5_database_migrates_and_its_ended_runs_can_be_pruned(
    postgres_url: str,
) -> None:
    PostgresStore(postgres_url).close()
    now = time.time()
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        # Back to version 5: the index of (status, updated_at), full pages, no ended_at.
        connection.execute("ALTER TABLE callboard_runs DROP COLUMN ended_at")
        connection.execute("ALTER TABLE callboard_runs RESET (fillfactor)")
        connection.execute(
            "CREATE INDEX callboard_runs_by_end ON callboard_runs (status, updated_at)"
        )
        connection.execute("UPDATE callboard_meta SET value = '5' WHERE key = 'schema_version'")
        rows = [
            {
                "run_id": name,
                "workflow_id": "w",
                "status": status,
                "seq": 1,
                "owner_id": None,
                "epoch": 0,
                "wake_at": None,
                "created_at": now - age,
                "updated_at": now - age,
                "trace_id": "t",
                "snapshot": "AA==",
            }
            for name, status, age in (
                ("old-done", "success", 7200),
                ("old-failed", "failed", 7200),
                ("new-done", "success", 10),
                ("old-running", "running", 7200),
            )
        ]
        connection.execute(pg._CREATE, (json.dumps(rows),))
    store = PostgresStore(postgres_url)
    try:
        assert store.prune(ended_before=now - 3600) == 2
        assert store.load("new-done") is not None and store.load("old-running") is not None
        assert store.prune(keep=0) == 1
        assert store.load("old-running") is not None
    finally:
        store.close()
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        assert connection.execute(
            "SELECT value FROM callboard_meta WHERE key = 'schema_version'"
        ).fetchone() == (str(pg.SCHEMA_VERSION),)
        indexes = {
            row[0]
            for row in connection.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'callboard_runs'"
            ).fetchall()
        }
        assert "callboard_runs_ended" in indexes and "callboard_runs_by_end" not in indexes
        options = connection.execute(
            "SELECT reloptions FROM pg_class WHERE relname = 'callboard_runs'"
        ).fetchone()
        assert options is not None and "fillfactor=50" in options[0]
