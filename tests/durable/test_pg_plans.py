"""PostgreSQL statements a batch of saves sends find their rows by key, never by a scan.

A batch's records reach the server as one JSON parameter, which the planner takes for
100 rows. Joined that way, a batch of 20 looked dearer as 20 index probes than as a scan
of a table of a few thousand runs, so every save scanned ``callboard_runs`` (and the
parts statements ``callboard_run_parts`` too): the cost of a save grew with the runs
stored, and W6 (benchmarks/fleet.py) spent a good part of the server's time there.
The plans are read with EXPLAIN on a table of 3,000 runs with 5 parts each. (Here the
planner scanned in the held save and in the drop of single parts; the other statements
got by-key plans on these rows even before, so they are not asserted on.)
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import runtime._stores.postgres as pg
from runtime import PostgresStore

RUNS = 3000
BATCH = 20
HELD = range(100, 100 + BATCH)
SCANNED = ("Seq Scan on callboard_runs", "Seq Scan on callboard_run_parts")


@pytest.fixture(autouse=True)
def snapshot_encoding() -> str:
    """These tests run once, not once per encoding (see ``tests/durable/conftest.py``).

    They hand the store records made by hand: no run actor or child process encodes a
    snapshot here.
    """
    return "by-hand"


CREATED_AT = 1_700_000_000.0  # a run's saves carry its creation time, as a run actor's do


def fill(url: str, *, parts: bool) -> psycopg.Connection[Any]:
    """3,000 runs: the batch's held by ``me``, half the others ended, half held by another
    worker; with ``parts``, each kept in parts of lineage 7 (5 parts a run). Analyzed."""
    PostgresStore(url).close()  # the schema
    snapshot = base64.b64encode(b"x" * 600).decode("ascii")
    now = time.time()
    rows = [
        {
            "run_id": f"r{index:06d}",
            "workflow_id": "w",
            "status": "running" if index in HELD or index % 2 else "success",
            "seq": 1,
            "owner_id": "me" if index in HELD else ("other" if index % 2 else None),
            "epoch": 1,
            "wake_at": None,
            "created_at": CREATED_AT,
            "updated_at": now,
            "trace_id": "t",
            "snapshot": snapshot,
        }
        for index in range(RUNS)
    ]
    connection = psycopg.connect(url, autocommit=True)
    connection.execute(pg._CREATE, (json.dumps(rows),))
    if parts:
        connection.execute("UPDATE callboard_runs SET lineage = 7")
        connection.execute(
            "INSERT INTO callboard_run_parts SELECT run_id, 7, 'k' || g, '\\x00'::bytea "
            "FROM callboard_runs, generate_series(1, 5) AS g"
        )
    connection.execute("VACUUM ANALYZE callboard_runs")
    connection.execute("VACUUM ANALYZE callboard_run_parts")
    return connection


@pytest.fixture
def runs(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    with fill(postgres_url, parts=False) as connection:
        yield connection


@pytest.fixture
def parted(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    with fill(postgres_url, parts=True) as connection:
        yield connection


def plan(connection: psycopg.Connection[Any], statement: str, params: Any) -> str:
    with connection.transaction(force_rollback=True):
        rows = connection.execute("EXPLAIN " + statement, params).fetchall()
    return "\n".join(str(row[0]) for row in rows)


def held(rows: list[dict[str, Any]], me: str = "me") -> dict[str, Any]:
    """Rows as the parameters of the saves of held runs: the snapshots apart, in one blob."""
    blob = b""
    out = []
    for row in rows:
        data = base64.b64decode(row["snapshot"])
        out.append({**row, "snapshot": None, "off": len(blob) + 1, "len": len(data)})
        blob += data
    return {"rows": json.dumps(out), "blob": blob, "me": me}


def batch() -> list[dict[str, Any]]:
    now = time.time()
    return [
        {
            "run_id": f"r{index:06d}",
            "workflow_id": "w",
            "status": "running",
            "seq": 2,
            "owner_id": "me",
            "epoch": 1,
            "wake_at": None,
            "created_at": CREATED_AT,
            "updated_at": now,
            "trace_id": "t",
            "snapshot": base64.b64encode(b"y" * 600).decode("ascii"),
            "lineage": 7,
            "resource_id": None,
        }
        for index in HELD
    ]


def test_a_save_of_runs_held_here_finds_its_rows_by_key(
    runs: psycopg.Connection[Any],
) -> None:
    records = batch()
    text = plan(runs, pg._SAVE_HELD, held(records))
    assert not any(scan in text for scan in SCANNED), text


def test_a_save_alone_finds_its_rows_by_key_and_locks_them_in_order(
    runs: psycopg.Connection[Any],
) -> None:
    records = batch()
    text = plan(runs, pg._SAVE_HELD_ALONE, held(records))
    assert not any(scan in text for scan in SCANNED), text
    # Its rows are locked (in run_id order: ORDER BY under FOR UPDATE) found by key.
    lock = text[text.index("CTE locked") : text.index("CTE written")]
    assert "LockRows" in lock and "Index Scan using callboard_runs_pkey" in lock, text


def test_the_lock_of_a_batchs_rows_finds_them_by_key(runs: psycopg.Connection[Any]) -> None:
    ids = [r["run_id"] for r in batch()]
    text = plan(runs, pg._LOCK_ROWS, [json.dumps(ids)])
    assert not any(scan in text for scan in SCANNED), text


def test_dropping_single_parts_finds_them_by_key(parted: psycopg.Connection[Any]) -> None:
    rows = [{"run_id": r["run_id"], "lineage": 7, "key": "k1", "part": "AA=="} for r in batch()]
    text = plan(parted, pg._DROP_PARTS, {"rows": json.dumps(rows), "n": len(rows), "me": "me"})
    assert not any(scan in text for scan in SCANNED), text
