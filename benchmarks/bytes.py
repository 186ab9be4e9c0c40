"""Bytes written per run on SQLite and PostgreSQL: chains of 3, 10, 30 steps, foreach of 300, 3,000.

Run it with ``make bytes`` (or ``.venv/bin/python benchmarks/bytes.py``; ``--quick``
runs fewer runs of each). Each workload gets a fresh database file and a fresh
``Runtime(store=<file>)``, and its runs run one after the other. Two ways of
counting what the store's writer thread writes, both per run:

- ``params``: the sum of the lengths of the values bound to the writer's
  statements (text as UTF-8, blobs as they are, numbers as 8 bytes): what the
  transactions hand to SQLite, before any page or index overhead.
- ``WAL``: how much the write-ahead log grew, with the store's checkpoints
  turned off, so that every page written stays in the log: what reaches the
  disk, in whole pages.

Beside them, the size of the run's final snapshot as a reader gets it
(``len(record.data)``), the ratio of ``params`` to it (about the number of
times the run's bytes are written: it stays flat as runs grow when writes are
linear in a run's steps, and grows with the steps when they are quadratic),
and the median wall time of one run (``run.start()``, start to result).

Then the same workloads on PostgreSQL (a throwaway cluster, as the tests start
one; skipped with a message where there are no server binaries or no psycopg):
``params`` counted the same way at the writer's connection (the records go as
JSON, their bytes in base64), and ``WAL`` as the growth of the server's
write-ahead log (``pg_current_wal_lsn()``), which includes every index and the
server's own records.

The script counts by patching two private methods of ``SQLiteStore``
(``_connect``, to wrap the writer's connection, and ``_checkpoint``), which
every version of the store since the first has; it runs unchanged on the code
before and after the incremental step records.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from runtime import Runtime, create_step, create_workflow
from runtime._stores import sqlite as sqlite_module
from runtime._stores.sqlite import SQLiteStore

TEXT = "x" * 100  # what each step passes on: enough that step records outweigh the rest


class Value(BaseModel):
    value: str


class Item(BaseModel):
    n: int
    text: str


class Count(BaseModel):
    count: int


class Counter:
    """What the writer's connection was handed: statements, transactions, bound bytes."""

    def __init__(self) -> None:
        self.params = 0
        self.statements = 0
        self.commits = 0

    def add(self, sql: str, params: Any) -> None:
        self.statements += 1
        if sql.strip().upper() == "COMMIT":
            self.commits += 1
        if not params:
            return
        values = params.values() if isinstance(params, dict) else params
        for value in values:
            if isinstance(value, str):
                self.params += len(value.encode("utf-8"))
            elif isinstance(value, bytes | bytearray | memoryview):
                self.params += len(value)
            elif value is not None:
                self.params += 8


class CountingConnection:
    """A writer connection that counts what it executes, and passes everything on."""

    def __init__(self, connection: Any, counter: Counter) -> None:
        self._connection = connection
        self._counter = counter

    def execute(self, sql: str, params: Any = ()) -> Any:
        self._counter.add(sql, params)
        return self._connection.execute(sql, params)

    def commit(self) -> None:  # psycopg commits by a method, not a statement
        self._counter.add("COMMIT", ())
        self._connection.commit()

    def executemany(self, sql: str, rows: Any) -> Any:
        rows = list(rows)
        for row in rows:
            self._counter.add(sql, row)
        return self._connection.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


@contextmanager
def counting(counter: Counter) -> Iterator[None]:
    """Count the writes of every SQLiteStore opened inside, with checkpoints off."""
    connect, checkpoint = SQLiteStore._connect, SQLiteStore._checkpoint

    def counting_connect(self: SQLiteStore, *, readonly: bool = False) -> Any:
        connection = connect(self, readonly=readonly)
        return connection if readonly else CountingConnection(connection, counter)

    SQLiteStore._connect = counting_connect  # type: ignore[method-assign]
    SQLiteStore._checkpoint = lambda self, idle: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        SQLiteStore._connect = connect  # type: ignore[method-assign]
        SQLiteStore._checkpoint = checkpoint  # type: ignore[method-assign]


@contextmanager
def counting_postgres(counter: Counter) -> Iterator[None]:
    """Count the writes of every PostgresStore opened inside."""
    from runtime._stores.postgres import PostgresStore

    connection = PostgresStore._connection

    def counting_connection(self: PostgresStore) -> Any:
        return CountingConnection(connection(self), counter)

    PostgresStore._connection = counting_connection  # type: ignore[method-assign]
    try:
        yield
    finally:
        PostgresStore._connection = connection  # type: ignore[method-assign]


def chain(steps: int) -> Any:
    builder = create_workflow(id=f"chain-{steps}", input_schema=Value, output_schema=Value)
    for index in range(steps):
        builder = builder.then(
            create_step(
                id=f"step-{index}",
                input_schema=Value,
                output_schema=Value,
                execute=lambda ctx: Value(value=ctx.input_data.value),
            )
        )
    return builder.commit()


def foreach(items: int) -> Any:
    each = create_step(
        id="each",
        input_schema=Item,
        output_schema=Item,
        execute=lambda ctx: Item(n=ctx.input_data.n * 2, text=ctx.input_data.text),
    )
    return (
        create_workflow(id=f"foreach-{items}", input_schema=Count, output_schema=Count)
        .map(lambda ctx: [{"n": i, "text": "item"} for i in range(ctx.input_data["count"])])
        .foreach(each)
        .map(lambda ctx: {"count": len(ctx.input_data)})
        .commit()
    )


@dataclass
class Workload:
    name: str
    size: int  # steps or items
    workflow: Callable[[], Any]
    input_data: dict[str, Any]
    runs: int


@dataclass
class Row:
    name: str
    size: int
    runs: int
    params: float
    wal: float
    commits: float
    snapshot: int
    seconds: float


def wal_bytes(db: Path) -> int:
    wal = Path(f"{db}-wal")
    return wal.stat().st_size if wal.exists() else 0


def measure(workload: Workload, folder: Path) -> Row:
    db = folder / f"{workload.name.replace(' ', '-')}.db"
    counter = Counter()
    times: list[float] = []
    with counting(counter), Runtime(store=db) as rt:
        wf = rt.register(workload.workflow())
        params0, commits0, wal0 = counter.params, counter.commits, wal_bytes(db)
        run_id = ""
        for _ in range(workload.runs):
            run = wf.create_run()
            began = time.perf_counter()
            result = run.start(input_data=workload.input_data, timeout=600)
            times.append(time.perf_counter() - began)
            if result.status != "success":
                raise SystemExit(f"{workload.name}: a run ended {result.status}: {result.error}")
            run_id = run.run_id
        # Let the writer finish the last commits' callbacks before reading the counters.
        time.sleep(0.05)
        params, commits, wal = counter.params, counter.commits, wal_bytes(db)
    reader = SQLiteStore(db, readonly=True)
    record = reader.load(run_id)
    assert record is not None
    return Row(
        name=workload.name,
        size=workload.size,
        runs=workload.runs,
        params=(params - params0) / workload.runs,
        wal=(wal - wal0) / workload.runs,
        commits=(commits - commits0) / workload.runs,
        snapshot=len(record.data),
        seconds=statistics.median(times),
    )


def wal_lsn(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def measure_postgres(workload: Workload, url: str) -> Row:
    counter = Counter()
    times: list[float] = []
    with counting_postgres(counter), Runtime(store=url) as rt:
        wf = rt.register(workload.workflow())
        time.sleep(0.05)
        params0, commits0, wal0 = counter.params, counter.commits, wal_lsn(url)
        run_id = ""
        for _ in range(workload.runs):
            run = wf.create_run()
            began = time.perf_counter()
            result = run.start(input_data=workload.input_data, timeout=600)
            times.append(time.perf_counter() - began)
            if result.status != "success":
                raise SystemExit(f"{workload.name}: a run ended {result.status}: {result.error}")
            run_id = run.run_id
        time.sleep(0.05)
        params, commits, wal = counter.params, counter.commits, wal_lsn(url)
        record = rt.store.load(run_id)
    assert record is not None
    return Row(
        name=workload.name,
        size=workload.size,
        runs=workload.runs,
        params=(params - params0) / workload.runs,
        wal=(wal - wal0) / workload.runs,
        commits=(commits - commits0) / workload.runs,
        snapshot=len(record.data),
        seconds=statistics.median(times),
    )


def postgres_rows(quick: bool) -> list[Row] | str:
    """The workloads on a throwaway PostgreSQL cluster; or why they were not measured."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'callboard[postgres]')"
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests._postgres import Server, bindir

    if bindir() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl) on this machine"
    server = Server()
    server.create()
    try:
        return [measure_postgres(w, server.new_database()) for w in workloads(quick)]
    finally:
        server.destroy()


def print_table(rows: list[Row]) -> None:
    header = (
        "| workload | runs | params / run | WAL / run | commits / run | final snapshot "
        "| params / snapshot | time / run |"
    )
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row.name} | {row.runs} | {kib(row.params)} | {kib(row.wal)} | "
            f"{row.commits:,.0f} | {kib(row.snapshot)} | {row.params / row.snapshot:,.1f}x | "
            f"{row.seconds * 1000:,.1f} ms |"
        )


def workloads(quick: bool) -> list[Workload]:
    chains = 5 if quick else 20
    return [
        Workload("3 steps", 3, lambda: chain(3), {"value": TEXT}, chains),
        Workload("10 steps", 10, lambda: chain(10), {"value": TEXT}, chains),
        Workload("30 steps", 30, lambda: chain(30), {"value": TEXT}, chains),
        Workload("foreach 300", 300, lambda: foreach(300), {"count": 300}, 2 if quick else 5),
        Workload("foreach 3,000", 3000, lambda: foreach(3000), {"count": 3000}, 1 if quick else 3),
    ]


def kib(value: float) -> str:
    return f"{value / 1024:,.1f} KiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs of each workload")
    parser.add_argument("--db-dir", type=Path, default=None, help="where the SQLite files go")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args(argv)
    version = getattr(sqlite_module, "SCHEMA_VERSION", "?")
    print(
        f"# bytes written per run on SQLite; schema version {version}, Python "
        f"{sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} cores"
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(dir=args.db_dir) as folder:
        for workload in workloads(args.quick):
            rows.append(measure(workload, Path(folder)))
    print_table(rows)
    if args.no_postgres:
        return 0
    from runtime._stores import postgres as postgres_module

    print()
    print(
        "# bytes written per run on PostgreSQL; schema version "
        f"{getattr(postgres_module, 'SCHEMA_VERSION', '?')} (a throwaway cluster, fsync off)"
    )
    found = postgres_rows(args.quick)
    if isinstance(found, str):
        print(f"PostgreSQL skipped: {found}")
    else:
        print_table(found)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
