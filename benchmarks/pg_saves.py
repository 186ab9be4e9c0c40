"""What a batch of saves of runs in progress costs the PostgreSQL server, by table layout.

``.venv/bin/python benchmarks/pg_saves.py`` (or ``--url`` to use a server of your own).
It starts a throwaway cluster as the tests do (``tests/_postgres.py``: fsync off), and in
a fresh database per case stores 3,000 runs (2,000 running, held by one worker, and
1,000 ended), then saves the running ones in batches of 20 with the statement workers
use (``_SAVE_HELD_ALONE``), ``--rounds`` times each (every save a new step: status, owner and
wake time unchanged), one batch a commit, on one connection. Cases:

- **version 5 (floor)**: the layout before schema version 6, rebuilt on the current
  schema: the index ``(status, updated_at)`` and no free room kept on the pages. Every
  save changes ``updated_at``, so none can be a HOT update.
- **version 6**: this code's layout (``ended_at`` indexed instead, ``fillfactor = 50``).
- **version 6, fillfactor 70 / 80 / full pages**: the same with less free room.

It prints, per case, the share of updates that were HOT (``pg_stat_user_tables``), the
WAL written per saved row, the sizes of the table and of its indexes after the saves,
and the median and 90th percentile time of a batch as the
client sees it (one connection, local socket), with the ratio to the floor's median.
Cases alternate, ``--repeat`` times, in that order; the medians are over all batches.
It asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import runtime._stores.postgres as pg  # noqa: E402
from runtime import PostgresStore  # noqa: E402

RUNNING = 2000
ENDED = 1000
BATCH = 20

CASES: dict[str, tuple[str, ...]] = {
    "version 5 (floor)": (
        "DROP INDEX callboard_runs_ended",
        "CREATE INDEX callboard_runs_by_end ON callboard_runs (status, updated_at)",
        "ALTER TABLE callboard_runs RESET (fillfactor)",
    ),
    "version 6": (),
    "version 6, fillfactor 70": ("ALTER TABLE callboard_runs SET (fillfactor = 70)",),
    "version 6, fillfactor 80": ("ALTER TABLE callboard_runs SET (fillfactor = 80)",),
    "version 6, full pages": ("ALTER TABLE callboard_runs SET (fillfactor = 100)",),
}


def rows(
    count: int, start: int, *, status: str, owner: str | None, size: int
) -> list[dict[str, Any]]:
    snapshot = base64.b64encode(b"s" * size).decode("ascii")
    now = time.time()
    return [
        {
            "run_id": f"r{index:06d}",
            "workflow_id": "w",
            "status": status,
            "seq": 1,
            "owner_id": owner,
            "epoch": 1,
            "wake_at": None,
            "created_at": now,
            "updated_at": now,
            "trace_id": "t",
            "snapshot": snapshot,
            "lineage": None,
            "resource_id": None,
        }
        for index in range(start, start + count)
    ]


def held(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows as the parameters of the workers' save: the snapshots apart, in one blob."""
    blob = b""
    out = []
    for row in rows:
        data = base64.b64decode(row["snapshot"])
        out.append({**row, "snapshot": None, "off": len(blob) + 1, "len": len(data)})
        blob += data
    return {"rows": json.dumps(out), "blob": blob, "me": "me"}


def stats(connection: Any) -> tuple[int, int]:
    connection.execute("SELECT pg_stat_clear_snapshot()")
    row = connection.execute(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'callboard_runs'"
    ).fetchone()
    return int(row[0]), int(row[1])


def case(url: str, layout: tuple[str, ...], rounds: int, size: int) -> dict[str, Any]:
    import psycopg

    PostgresStore(url).close()  # the schema, as this code makes it
    with psycopg.connect(url, autocommit=True) as connection:
        for statement in layout:  # before the rows go in, so that fillfactor applies
            connection.execute(statement)
        running = rows(RUNNING, 0, status="running", owner="me", size=size)
        connection.execute(pg._CREATE, (json.dumps(running),))
        ended = rows(ENDED, RUNNING, status="success", owner=None, size=size)
        connection.execute(pg._CREATE, (json.dumps(ended),))
        connection.execute("VACUUM ANALYZE callboard_runs")
        connection.execute("SELECT pg_stat_force_next_flush()")
        updates0, hot0 = stats(connection)
        wal0 = connection.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        times: list[float] = []
        for seq in range(2, rounds + 2):
            for first in range(0, RUNNING, BATCH):
                batch = running[first : first + BATCH]
                for record in batch:
                    record["seq"] = seq
                    record["updated_at"] = time.time()
                began = time.perf_counter()
                saved = connection.execute(pg._SAVE_HELD_ALONE, held(batch)).fetchall()
                times.append(time.perf_counter() - began)
                assert all(row[1] for row in saved), "a save was refused"
        wal = connection.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (wal0,)
        ).fetchone()[0]
        heap, indexes = connection.execute(
            "SELECT pg_relation_size('callboard_runs'), pg_indexes_size('callboard_runs')"
        ).fetchone()
        connection.execute("SELECT pg_stat_force_next_flush()")
        connection.execute("SELECT 1")  # a transaction's end: the counts are flushed
        updates, hot = stats(connection)
        for _ in range(20):  # the flush may lag a moment behind
            if updates - updates0 >= RUNNING * rounds:
                break
            time.sleep(0.1)
            updates, hot = stats(connection)
    saves = RUNNING * rounds
    return {
        "times": times,
        "updates": updates - updates0,
        "hot": hot - hot0,
        "wal_per_row": float(wal) / saves,
        "heap": heap,
        "indexes": indexes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a PostgreSQL server to use (databases are created on it)")
    parser.add_argument("--rounds", type=int, default=5, help="saves of every running run")
    parser.add_argument("--repeat", type=int, default=2, help="times each case is run")
    parser.add_argument("--snapshot", type=int, default=800, help="snapshot bytes a run")
    args = parser.parse_args(argv)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        print("skipped: psycopg is not installed (pip install 'callboard[postgres]')")
        return 0
    from tests._postgres import Server, bindir

    server = Server()
    if args.url:
        server.external = args.url
    elif bindir() is None:
        print("skipped: no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
        return 0
    else:
        server.create()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in CASES}
    try:
        for _ in range(args.repeat):
            for name, layout in CASES.items():
                url = server.new_database()
                try:
                    results[name].append(case(url, layout, args.rounds, args.snapshot))
                finally:
                    server.drop_database(url)
    finally:
        if not args.url:
            server.destroy()
    print(
        f"saves of runs in progress · {RUNNING} running + {ENDED} ended runs · "
        f"batches of {BATCH} · {args.rounds} rounds · snapshot {args.snapshot} B · "
        f"repeat {args.repeat}"
    )
    header = (
        f"{'layout':<25} | {'HOT updates':>13} | {'WAL/row':>8} | {'heap':>7} | "
        f"{'indexes':>7} | {'batch median':>12} | {'p90':>7} | vs floor"
    )
    print(header)
    print("-" * len(header))
    floor = 0.0
    for name, found in results.items():
        times = sorted(t for result in found for t in result["times"])
        median = statistics.median(times) * 1000
        p90 = times[int(len(times) * 0.9)] * 1000
        floor = floor or median
        hot = sum(result["hot"] for result in found)
        updates = sum(result["updates"] for result in found)
        wal = statistics.median(result["wal_per_row"] for result in found)
        heap = statistics.median(result["heap"] for result in found) / 2**20
        indexes = statistics.median(result["indexes"] for result in found) / 2**20
        share = f"{hot:,}/{updates:,}"
        print(
            f"{name:<25} | {share:>13} | {wal:>6.0f} B | {heap:>4.1f} MB | {indexes:>4.1f} MB | "
            f"{median:>9.2f} ms | {p90:>4.2f} ms | {floor / median:.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
