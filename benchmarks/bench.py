"""callboard benchmarks: one table, each row beside a floor measured in the same run.

Run it with ``make bench`` (or ``.venv/bin/python benchmarks/bench.py``); ``--quick``
is a smaller smoke run, ``--only W5`` runs only the named workloads, ``--profile``
adds a cProfile of ``start_async``. Every workload runs on two stores, in memory
and on a SQLite file (a fresh one in a temporary folder for each scenario), and in
two logging modes: with structlog unconfigured (callboard is quiet and drops its
events before building them) and with structlog configured so that every event
goes through a processor chain that ends by dropping it. Each scenario gets a
fresh ``Runtime``, stopped afterwards. The SQLite rows have floors of their own
too: raw ``sqlite3`` transactions on a file in the same folder. See
``benchmarks/README.md`` for what each row measures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import ctypes
import gc
import importlib.metadata
import itertools
import os
import platform
import queue
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pykka
import structlog
from pydantic import BaseModel

from actors._dispatch import DispatchedActor, Dispatcher
from runtime import MemoryStore, Runtime, SnapshotRecord, create_step, create_workflow

NS_PER_US = 1_000
NS_PER_S = 1_000_000_000
MB = 1024 * 1024


# --- sizes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    starts: int  # W1: start_async calls timed
    runs: int  # W2: runs started and waited for
    sleepers: int  # W3: runs in flight at once, each sleeping 1 s
    idle_starts: int  # W1: start_async calls timed on an idle runtime (each run waited)
    queries: int  # W4: finished runs queried
    query_rounds: int  # W4: times each finished run is queried
    warmup: int  # runs done before each timed loop
    rounds: int  # every scenario and its floor, alternately, this many times
    sqlite_rounds: int  # of those rounds, the first this many also run the SQLite scenarios
    fleet: int  # W5: runs in flight at once, each in a 1 s workflow sleep
    fleet_rounds: int  # W5 (10x the runs of W3) runs in this many rounds, not ``rounds``
    fleet_sqlite_rounds: int  # of the W5 rounds, the first this many also run on SQLite


FULL = Sizes(
    starts=2_000,
    runs=2_000,
    sleepers=1_000,
    idle_starts=500,
    queries=1_000,
    query_rounds=3,
    warmup=200,
    rounds=5,
    sqlite_rounds=5,
    fleet=10_000,
    fleet_rounds=2,
    fleet_sqlite_rounds=2,
)
QUICK = Sizes(
    starts=200,
    runs=200,
    sleepers=100,
    idle_starts=50,
    queries=100,
    query_rounds=2,
    warmup=20,
    rounds=1,
    sqlite_rounds=1,
    fleet=1_000,
    fleet_rounds=1,
    fleet_sqlite_rounds=1,
)

SLEEP_S = 1.0
SLEEP_NS = round(SLEEP_S * NS_PER_S)

MEMORY = "memory"
SQLITE = "sqlite"
STORES = (MEMORY, SQLITE)


# --- the workloads --------------------------------------------------------------------


class Value(BaseModel):
    value: str


PAYLOAD = {"value": "benchmark"}


def _pass_input(ctx: Any) -> Any:
    return ctx.input_data


def _sleep_then_pass_input(ctx: Any) -> Any:
    time.sleep(SLEEP_S)
    return ctx.input_data


def noop_workflow() -> Any:
    """Three steps that each return their input."""
    workflow = create_workflow(id="bench-noop", input_schema=Value, output_schema=Value)
    for name in ("first", "second", "third"):
        workflow.then(
            create_step(id=name, input_schema=Value, output_schema=Value, execute=_pass_input)
        )
    return workflow.commit()


def chain_workflow(steps: int) -> Any:
    """``steps`` steps that each return their input."""
    workflow = create_workflow(id=f"bench-chain-{steps}", input_schema=Value, output_schema=Value)
    for index in range(steps):
        workflow.then(
            create_step(
                id=f"step-{index}", input_schema=Value, output_schema=Value, execute=_pass_input
            )
        )
    return workflow.commit()


def sleep_workflow() -> Any:
    """One step that sleeps a second and returns its input."""
    step = create_step(
        id="sleep", input_schema=Value, output_schema=Value, execute=_sleep_then_pass_input
    )
    return (
        create_workflow(id="bench-sleep", input_schema=Value, output_schema=Value)
        .then(step)
        .commit()
    )


def fleet_workflow() -> Any:
    """A workflow sleep of a second, then one step that returns its input."""
    step = create_step(id="after", input_schema=Value, output_schema=Value, execute=_pass_input)
    return (
        create_workflow(id="bench-fleet", input_schema=Value, output_schema=Value)
        .sleep(SLEEP_S)
        .then(step)
        .commit()
    )


def plain_step(value: Any) -> Any:
    return value


PLAIN_STEPS = (plain_step, plain_step, plain_step)


def three_plain_steps(value: Any) -> Any:
    for step in PLAIN_STEPS:
        value = step(value)
    return value


class PipelineActor(pykka.ThreadingActor):
    """The raw-pykka floor: one actor per run runs the steps inline and reports by queue."""

    use_daemon_thread = True

    def __init__(self, done: queue.SimpleQueue[Any]) -> None:
        super().__init__()
        self._done = done

    def on_receive(self, message: Any) -> Any:
        self._done.put(three_plain_steps(message))
        self.stop()
        return None


class FloorStepActor(pykka.ThreadingActor):
    """The design floor's step actor: calls a plain function and tells the result back."""

    use_daemon_thread = True

    def __init__(self, pool: FloorPool) -> None:
        super().__init__()
        self._pool = pool
        self._ref = self.actor_ref

    def on_receive(self, message: Any) -> None:
        call = message
        while call is not None:
            fn, value, reply_to = call
            reply_to.tell(fn(value))
            call = self._pool.finished(self._ref)


class FloorPool:
    """The design floor's step pool: idle step actors reused, at most ``size``, a backlog."""

    def __init__(self, size: int) -> None:
        self._lock = threading.Lock()
        self._idle: list[pykka.ActorRef[Any]] = []
        self._backlog: collections.deque[Any] = collections.deque()
        self._live = 0
        self._size = size

    def submit(self, call: Any) -> None:
        with self._lock:
            if self._idle:
                ref = self._idle.pop()
            elif self._live < self._size:
                self._live += 1
                ref = None
            else:
                self._backlog.append(call)
                return
        (ref or FloorStepActor.start(self)).tell(call)

    def finished(self, ref: pykka.ActorRef[Any]) -> Any:
        with self._lock:
            if self._backlog:
                return self._backlog.popleft()
            self._idle.append(ref)
            return None

    def stop(self) -> None:
        """Stop its step actors (all idle once every run has ended), and no others."""
        with self._lock:
            idle, self._idle = self._idle, []
        for ref in idle:
            ref.stop()


class FloorRunActor(DispatchedActor):
    """The design floor's run actor: each step on the pool in turn, nothing recorded."""

    def __init__(
        self, dispatcher: Dispatcher, pool: FloorPool, done: queue.SimpleQueue[Any], value: Any
    ) -> None:
        super().__init__(dispatcher)
        self._pool = pool
        self._done = done
        self._value = value
        self._next = 0

    def on_start(self) -> None:
        self._pool.submit((PLAIN_STEPS[0], self._value, self.actor_ref))

    def on_receive(self, message: Any) -> None:
        self._next += 1
        if self._next == len(PLAIN_STEPS):
            self._done.put(message)
            self.stop_now()
            return
        self._pool.submit((PLAIN_STEPS[self._next], message, self.actor_ref))


class EchoActor(pykka.ThreadingActor):
    """The W4 floor: answers every ask with the message itself."""

    use_daemon_thread = True

    def on_receive(self, message: Any) -> Any:
        return message


# --- helpers --------------------------------------------------------------------------


def clean_slate() -> None:
    """Collect garbage and hand freed heap back to the OS before a scenario."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def wait_for_threads(at_most: int, timeout: float = 10.0) -> None:
    """Wait (bounded) until the process is back to ``at_most`` threads."""
    deadline = time.monotonic() + timeout
    while threading.active_count() > at_most and time.monotonic() < deadline:
        time.sleep(0.01)


def percentile(samples: Sequence[int], fraction: float) -> float:
    ordered = sorted(samples)
    return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])


def median(samples: Sequence[int]) -> float:
    return float(statistics.median(samples))


class Sampler:
    """Samples this process's RSS and OS thread count on a background thread."""

    def __init__(self, interval: float = 0.005) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.baseline_rss = self._process.memory_info().rss
        self.peak_rss = self.baseline_rss
        self.baseline_threads = self._process.num_threads()
        self.peak_threads = self.baseline_threads
        self._thread = threading.Thread(target=self._sample, name="bench-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._take()

    def _take(self) -> None:
        self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)
        self.peak_threads = max(self.peak_threads, self._process.num_threads())

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._take()


class DatabaseFiles:
    """Fresh SQLite files in one folder, each removed (with its WAL) after use."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._numbers = itertools.count()

    @contextlib.contextmanager
    def fresh(self, name: str) -> Iterator[Path]:
        path = self.directory / f"{name}-{next(self._numbers)}.db"
        try:
            yield path
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{path}{suffix}")


@dataclass(frozen=True)
class Setup:
    """What every workload needs: sizes, the stores to run on, and where SQLite files go."""

    sizes: Sizes
    stores: tuple[str, ...]
    files: DatabaseFiles
    record: SnapshotRecord | None  # a real pending record: what the raw SQLite floors insert

    def stores_in(self, round_index: int, sqlite_rounds: int | None = None) -> tuple[str, ...]:
        """The stores whose scenarios run in this round (SQLite may run fewer rounds).

        ``sqlite_rounds`` overrides ``sizes.sqlite_rounds`` for a workload with rounds of
        its own (W5).
        """
        limit = self.sizes.sqlite_rounds if sqlite_rounds is None else sqlite_rounds
        return tuple(store for store in self.stores if store == MEMORY or round_index < limit)

    def sqlite_in(self, round_index: int) -> bool:
        return SQLITE in self.stores_in(round_index)


@contextlib.contextmanager
def fresh_runtime(setup: Setup, store: str, **options: Any) -> Iterator[Runtime]:
    """A started runtime on a new store: memory, or a new SQLite file removed afterwards.

    ``options`` go to ``Runtime`` as they are.
    """
    with contextlib.ExitStack() as cleanup:
        location: str | Path = (
            MEMORY if store == MEMORY else cleanup.enter_context(setup.files.fresh("callboard"))
        )
        clean_slate()
        runtime = Runtime(store=location, **options).start()
        try:
            yield runtime
        finally:
            runtime.stop()


def start_and_wait(workflow: Any, count: int) -> list[Any]:
    runs = [workflow.create_run() for _ in range(count)]
    for run in runs:
        run.start_async(input_data=PAYLOAD)
    for run in runs:
        run.wait()
    return runs


# --- the raw SQLite floors ------------------------------------------------------------

# A table with the columns of callboard's runs table that a start fills, and the indexes
# a start writes (the partial ones whose condition a held, unqueued run meets: by owner),
# so that a raw INSERT writes as many b-trees as a callboard start does. Until
# 2026-12-03 it had three of the five indexes (runs_by_owner and runs_by_end missing).
FLOOR_SCHEMA = (
    "CREATE TABLE runs (run_id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, "
    "status TEXT NOT NULL, seq INTEGER NOT NULL, created_at REAL NOT NULL, "
    "updated_at REAL NOT NULL, trace_id TEXT NOT NULL, owner_id TEXT, snapshot BLOB NOT NULL)",
    "CREATE INDEX runs_by_created ON runs (created_at)",
    "CREATE INDEX runs_by_workflow ON runs (workflow_id, created_at)",
    "CREATE INDEX runs_by_status ON runs (status, created_at)",
    "CREATE INDEX runs_by_owner ON runs (owner_id) WHERE owner_id IS NOT NULL",
    "CREATE INDEX runs_by_end ON runs (status, updated_at)",
)
FLOOR_INSERT = (
    "INSERT INTO runs (run_id, workflow_id, status, seq, created_at, updated_at, trace_id, "
    "owner_id, snapshot) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
FLOOR_UPDATE = "UPDATE runs SET status = ?, seq = ?, updated_at = ?, snapshot = ? WHERE run_id = ?"
FLOOR_SELECT = "SELECT snapshot FROM runs WHERE run_id = ?"
SNAPSHOTS_PER_RUN = 5  # pending, then one per step started (3), then the terminal one


def pending_record() -> SnapshotRecord:
    """The record ``start_async`` creates for a W1/W2 run: what the raw floors insert."""

    class FirstCreated(MemoryStore):
        first: SnapshotRecord | None = None

        def create(self, record: SnapshotRecord) -> bool:
            if self.first is None:
                self.first = record
            return super().create(record)

    store = FirstCreated()
    with Runtime(store=store) as runtime:
        runtime.register(noop_workflow()).create_run().start(input_data=PAYLOAD, timeout=10)
    assert store.first is not None
    return store.first


@contextlib.contextmanager
def floor_database(setup: Setup) -> Iterator[sqlite3.Connection]:
    """A fresh file in the folder callboard's files go to, set up as callboard sets its own."""
    with setup.files.fresh("floor") as path:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("PRAGMA journal_mode = WAL").fetchone()
            connection.execute("PRAGMA synchronous = NORMAL")
            for statement in FLOOR_SCHEMA:
                connection.execute(statement)
            yield connection
        finally:
            connection.close()


def insert_row(record: SnapshotRecord) -> tuple[Any, ...]:
    now = time.time()
    return (
        uuid.uuid4().hex,
        record.workflow_id,
        record.status,
        record.seq,
        now,
        now,
        record.trace_id,
        "bench-owner",
        record.data,
    )


def commit_insert(connection: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    connection.execute("BEGIN IMMEDIATE")
    connection.execute(FLOOR_INSERT, row)
    connection.execute("COMMIT")


def raw_commit_ns(setup: Setup, count: int, *, by_writer: bool = False) -> list[int]:
    """Times of one committed INSERT transaction of a pending record (WAL, synchronous=NORMAL).

    In the caller's thread; or with ``by_writer`` handed to a writer thread
    that commits it and signals back, the caller waiting for the signal: the
    simplest form of a start that returns once its run is committed.
    """
    assert setup.record is not None
    record = setup.record
    clock = time.perf_counter_ns
    samples = []
    with floor_database(setup) as connection:
        for _ in range(setup.sizes.warmup):
            commit_insert(connection, insert_row(record))
        if not by_writer:
            for _ in range(count):
                row = insert_row(record)
                start = clock()
                commit_insert(connection, row)
                samples.append(clock() - start)
            return samples
        jobs: queue.SimpleQueue[tuple[tuple[Any, ...], threading.Event] | None] = (
            queue.SimpleQueue()
        )

        def write() -> None:
            while (job := jobs.get()) is not None:
                commit_insert(connection, job[0])
                job[1].set()

        writer = threading.Thread(target=write, name="bench-sqlite-writer", daemon=True)
        writer.start()
        try:
            for _ in range(count):
                row, committed = insert_row(record), threading.Event()
                start = clock()
                jobs.put((row, committed))
                committed.wait()
                samples.append(clock() - start)
        finally:
            jobs.put(None)
            writer.join()
    return samples


def raw_runs_ns(setup: Setup, count: int) -> int:
    """Time of ``count`` runs' snapshots as one committed transaction each, on one thread.

    An INSERT and then an UPDATE per later snapshot: what a durable runtime
    without group commit pays for the 3-step workflow, with no step run at all.
    """
    assert setup.record is not None
    record = setup.record
    with floor_database(setup) as connection:
        clock = time.perf_counter_ns
        start = clock()
        for _ in range(count):
            row = insert_row(record)
            commit_insert(connection, row)
            for seq in range(1, SNAPSHOTS_PER_RUN):
                connection.execute("BEGIN IMMEDIATE")
                connection.execute(FLOOR_UPDATE, ("running", seq, time.time(), record.data, row[0]))
                connection.execute("COMMIT")
        return clock() - start


def raw_select_ns(setup: Setup, count: int, rounds: int) -> list[int]:
    """Times of a SELECT of one snapshot by run id, out of ``count`` rows."""
    assert setup.record is not None
    record = setup.record
    with floor_database(setup) as connection:
        rows = [insert_row(record) for _ in range(count)]
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(FLOOR_INSERT, rows)
        connection.execute("COMMIT")
        run_ids = [row[0] for row in rows]
        clock = time.perf_counter_ns
        samples = []
        for _ in range(rounds):
            for run_id in run_ids:
                start = clock()
                connection.execute(FLOOR_SELECT, (run_id,)).fetchone()
                samples.append(clock() - start)
        return samples


# --- the table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    row: str
    store: str
    mode: str
    measure: str
    callboard: float
    floor: float | None
    unit: str
    floor_is: str
    aim: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.floor is None or self.floor == 0:
            return None
        return self.callboard / self.floor


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "us":
        return f"{value / NS_PER_US:,.1f} µs"
    if unit == "s":
        return f"{value / NS_PER_S:,.3f} s"
    if unit == "MB":
        return f"{value / MB:,.1f} MB"
    if unit == "KB":
        return f"{value / 1024:,.1f} KB"
    return f"{value:,.0f} {unit}"


def in_table_order(rows: Sequence[Row]) -> list[Row]:
    """Rows by workload, then store, then mode, then as each workload listed them."""
    return sorted(rows, key=lambda r: (r.row, STORES.index(r.store), MODES.index(r.mode)))


def print_table(rows: Sequence[Row]) -> None:
    header = (
        "row", "store", "mode", "measure", "callboard", "floor", "ratio", "aim", "met?", "floor is"
    )  # fmt: skip
    body = [
        (
            r.row,
            r.store,
            r.mode,
            r.measure,
            fmt(r.callboard, r.unit),
            fmt(r.floor, r.unit),
            "-" if r.ratio is None else f"{r.ratio:,.2f}x",
            r.aim or "-",
            {True: "yes", False: "NO", None: "-"}[r.met],
            r.floor_is,
        )
        for r in rows
    ]
    right = {4, 5, 6}
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return " | ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "-+-".join("-" * width for width in widths)
    print(line(header))
    print(rule)
    previous = None
    for r, cells in zip(rows, body, strict=True):
        if previous is not None and (r.row, r.store, r.mode) != previous:
            print(rule)
        previous = (r.row, r.store, r.mode)
        print(line(cells))


def by_store(setup: Setup) -> dict[str, list[Any]]:
    return {store: [] for store in setup.stores}


# --- W1: start_async latency ----------------------------------------------------------


def queue_handoff_ns(count: int, *, with_work: bool = False, idle: bool = False) -> list[int]:
    """Caller-side time of handing one job to a worker thread that consumes it.

    With ``with_work`` the caller also makes a uuid4 run id and validates the
    input with pydantic first: the irreducible part of what start_async does.
    With ``idle`` the caller waits (untimed) until the worker has taken each job,
    so that every hand-off has to wake a sleeping thread.
    """
    jobs: queue.Queue[Any] = queue.Queue()
    taken: queue.SimpleQueue[None] = queue.SimpleQueue()

    def consume() -> None:
        while jobs.get() is not None:
            if idle:
                taken.put(None)

    worker = threading.Thread(target=consume, name="bench-queue-worker", daemon=True)
    worker.start()
    clock = time.perf_counter_ns
    samples = []
    try:
        for _ in range(count):
            if with_work:
                start = clock()
                jobs.put((str(uuid.uuid4()), Value.model_validate(PAYLOAD)))
                samples.append(clock() - start)
            else:
                job = (PAYLOAD, None)
                start = clock()
                jobs.put(job)
                samples.append(clock() - start)
            if idle:
                taken.get()
    finally:
        jobs.put(None)
        worker.join()
    return samples


def callboard_starts_ns(setup: Setup, store: str, *, idle: bool) -> tuple[list[int], list[int]]:
    """Times of start_async, and of create_run + start_async, on a fresh runtime.

    Back to back (a burst: earlier runs execute while later ones start), or with
    ``idle`` each run waited for (untimed) before the next starts.
    """
    sizes = setup.sizes
    with fresh_runtime(setup, store) as runtime:
        workflow = runtime.register(noop_workflow())
        start_and_wait(workflow, sizes.warmup)
        clock = time.perf_counter_ns
        start_ns: list[int] = []
        create_and_start_ns: list[int] = []
        runs = []
        for _ in range(sizes.idle_starts if idle else sizes.starts):
            t0 = clock()
            run = workflow.create_run()
            t1 = clock()
            run.start_async(input_data=PAYLOAD)
            t2 = clock()
            start_ns.append(t2 - t1)
            create_and_start_ns.append(t2 - t0)
            if idle:
                run.wait()
            else:
                runs.append(run)
        for run in runs:
            run.wait()
    wait_for_threads(1)
    return start_ns, create_and_start_ns


def bench_w1(mode: str, setup: Setup) -> list[Row]:
    sizes = setup.sizes
    queue_handoff_ns(sizes.warmup, with_work=True)  # warm pydantic and the queue path
    burst, burst_create, idle = by_store(setup), by_store(setup), by_store(setup)
    floor: list[int] = []
    floor_work: list[int] = []
    floor_idle: list[int] = []
    commit: list[int] = []
    commit_by_writer: list[int] = []
    for index in range(sizes.rounds):
        for store in setup.stores_in(index):
            starts, creates = callboard_starts_ns(setup, store, idle=False)
            burst[store] += starts
            burst_create[store] += creates
            idle[store] += callboard_starts_ns(setup, store, idle=True)[0]
        floor += queue_handoff_ns(sizes.starts)
        floor_work += queue_handoff_ns(sizes.starts, with_work=True)
        floor_idle += queue_handoff_ns(sizes.idle_starts, idle=True)
        if setup.sqlite_in(index):
            commit += raw_commit_ns(setup, sizes.starts)
            commit_by_writer += raw_commit_ns(setup, sizes.idle_starts, by_writer=True)
    handoff = "queue.Queue put to a busy worker thread"
    handoff_work = "the same + uuid4 + pydantic validate"
    handoff_idle = "queue.Queue put waking an idle worker"
    commit_is = "raw sqlite3: 1 committed INSERT txn, caller's thread"
    commit_by_writer_is = "raw sqlite3: the same committed by a writer thread"
    rows = []
    for store in setup.stores:
        b, memory = burst[store], store == MEMORY
        work_median, work_p99 = median(floor_work), percentile(floor_work, 0.99)
        rows += [
            Row("W1", store, mode, "start_async median, burst", median(b), median(floor), "us",
                handoff),
            Row("W1", store, mode, "start_async p99, burst", percentile(b, 0.99),
                percentile(floor, 0.99), "us", handoff),
            Row("W1", store, mode, "start_async median, burst", median(b), work_median,
                "us", handoff_work,
                *(("<= 2.00x", median(b) <= 2 * work_median) if memory else ())),
            Row("W1", store, mode, "start_async p99, burst", percentile(b, 0.99), work_p99,
                "us", handoff_work,
                *(("<= 10.0x", percentile(b, 0.99) <= 10 * work_p99) if memory else ())),
            Row("W1", store, mode, "create_run+start_async median", median(burst_create[store]),
                median(floor_work), "us", handoff_work),
            Row("W1", store, mode, "start_async median, idle runtime", median(idle[store]),
                median(floor_idle), "us", handoff_idle),
        ]  # fmt: skip
        if store == SQLITE:
            rows += [
                Row("W1", store, mode, "start_async median, burst", median(b), median(commit),
                    "us", commit_is, "< 200 µs", median(b) < 200 * NS_PER_US),
                Row("W1", store, mode, "start_async p99, burst", percentile(b, 0.99),
                    percentile(commit, 0.99), "us", commit_is),
                Row("W1", store, mode, "start_async median, idle runtime", median(idle[store]),
                    median(commit_by_writer), "us", commit_by_writer_is),
            ]  # fmt: skip
    return rows


# --- W2: throughput -------------------------------------------------------------------


def thread_pool_ns(count: int, warmup: int) -> int:
    with concurrent.futures.ThreadPoolExecutor() as pool:
        for future in [pool.submit(three_plain_steps, PAYLOAD) for _ in range(warmup)]:
            future.result()
        clock = time.perf_counter_ns
        start = clock()
        futures = [pool.submit(three_plain_steps, PAYLOAD) for _ in range(count)]
        for future in futures:
            future.result()
        return clock() - start


def pykka_pipeline_ns(count: int) -> int:
    done: queue.SimpleQueue[Any] = queue.SimpleQueue()
    threads = threading.active_count()
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(count):
        PipelineActor.start(done).tell(PAYLOAD)
    for _ in range(count):
        done.get()
    elapsed = clock() - start
    wait_for_threads(threads)
    return elapsed


FLOOR_POOL_THREADS = 4  # as a runtime's step pool keeps (StepPool's ``core``)


def design_floor_ns(count: int, warmup: int) -> int:
    """callboard's design with nothing else, ``count`` runs started and waited for.

    A run actor per run on a dispatcher thread, each of its 3 steps on a pool of
    step actors and told back; no validation, no record, no registry, no span.
    """
    dispatcher = Dispatcher(name="bench-floor")
    pool = FloorPool(FLOOR_POOL_THREADS)
    done: queue.SimpleQueue[Any] = queue.SimpleQueue()
    try:
        for _ in range(warmup):
            FloorRunActor.start(dispatcher, pool, done, PAYLOAD)
        for _ in range(warmup):
            done.get()
        clock = time.perf_counter_ns
        start = clock()
        for _ in range(count):
            FloorRunActor.start(dispatcher, pool, done, PAYLOAD)
        for _ in range(count):
            done.get()
        return clock() - start
    finally:
        dispatcher.stop(5.0)
        pool.stop()


def callboard_runs_ns(setup: Setup, store: str) -> int:
    sizes = setup.sizes
    with fresh_runtime(setup, store) as runtime:
        workflow = runtime.register(noop_workflow())
        start_and_wait(workflow, sizes.warmup)
        clock = time.perf_counter_ns
        start = clock()
        runs = start_and_wait(workflow, sizes.runs)
        elapsed = clock() - start
        if not all(run.wait().status == "success" for run in runs):
            raise RuntimeError("a W2 run did not succeed")
    wait_for_threads(1)
    return elapsed


CHAINS = (3, 10, 30)
"""The lengths of the chains whose CPU per step W2 compares (memory only)."""

CHAIN_PASSES = 3
"""Passes over ``CHAINS`` in a round, taking turns: a burst of load elsewhere hits them alike."""


def chain_cpu_ns(setup: Setup) -> dict[int, float]:
    """Process CPU time (every thread) per run of a chain of each length in ``CHAINS``.

    Each chain runs about as many steps in all (``sizes.runs * 3 / length`` runs),
    on one runtime in memory, in ``CHAIN_PASSES`` passes that take turns (3, 10,
    30, 3, 10, 30, ...), each pass's runs started at once and waited for; a
    length's figure is the median of its passes. Measured one after the other,
    a burst of load from elsewhere on the machine landed on one length and set
    the comparison (its ratio read 0.5 to 1.6 on unchanged code).
    """
    sizes = setup.sizes
    passes: dict[int, list[float]] = {length: [] for length in CHAINS}
    with fresh_runtime(setup, MEMORY) as runtime:
        workflows = {length: runtime.register(chain_workflow(length)) for length in CHAINS}
        for length, workflow in workflows.items():
            start_and_wait(workflow, max(10, sizes.warmup * 3 // length))
        for _ in range(CHAIN_PASSES):
            for length, workflow in workflows.items():
                count = max(10, sizes.runs * 3 // length // CHAIN_PASSES)
                clean_slate()
                began = time.process_time_ns()
                start_and_wait(workflow, count)
                passes[length].append((time.process_time_ns() - began) / count)
    wait_for_threads(1)
    return {length: statistics.median(values) for length, values in passes.items()}


def bench_w2(mode: str, setup: Setup) -> list[Row]:
    sizes = setup.sizes
    pykka_pipeline_ns(sizes.runs)  # thread creation is slower until the process has warmed up
    elapsed = by_store(setup)
    pool_elapsed: list[int] = []
    pykka_elapsed: list[int] = []
    floor_elapsed: list[int] = []
    raw_elapsed: list[int] = []
    chains: list[dict[int, float]] = []
    for index in range(sizes.rounds):
        for store in setup.stores_in(index):
            elapsed[store].append(callboard_runs_ns(setup, store))
        if MEMORY in setup.stores:
            chains.append(chain_cpu_ns(setup))
        clean_slate()
        pool_elapsed.append(thread_pool_ns(sizes.runs, sizes.warmup))
        clean_slate()
        pykka_elapsed.append(pykka_pipeline_ns(sizes.runs))
        clean_slate()
        floor_elapsed.append(design_floor_ns(sizes.runs, sizes.warmup))
        if setup.sqlite_in(index):
            raw_elapsed.append(raw_runs_ns(setup, sizes.runs))

    def per_s(samples: list[int], per_run: int = 1) -> float:
        return sizes.runs * per_run * NS_PER_S / median(samples)

    pool_s, pykka_s = per_s(pool_elapsed), per_s(pykka_elapsed)
    pool_is = "ThreadPoolExecutor, 3 plain functions"
    pykka_is = "raw pykka: ThreadingActor per run, tell"
    floor_is = "the design bare: run actor on dispatcher, steps on pool"
    raw_is = "raw sqlite3, 1 thread: a committed txn per snapshot"
    rows = []
    for store in setup.stores:
        runs_s, memory = per_s(elapsed[store]), store == MEMORY
        aim = (">= 1.50x", runs_s >= 1.5 * pykka_s) if memory else ()
        least = 10_000 if memory else 2_000  # issue 15's aims: runs/s of 3-step runs
        rows += [
            Row("W2", store, mode, "throughput", runs_s, pool_s, "runs/s", pool_is,
                f">= {least:,} runs/s", runs_s >= least),
            Row("W2", store, mode, "throughput", runs_s, pykka_s, "runs/s", pykka_is, *aim),
            Row("W2", store, mode, "throughput", per_s(elapsed[store], 3),
                per_s(pykka_elapsed, 3), "steps/s", pykka_is, *aim),
            Row("W2", store, mode, "throughput", runs_s, per_s(floor_elapsed), "runs/s",
                floor_is),
        ]  # fmt: skip
        if memory and chains:
            rows += chain_rows(mode, chains)
        if store == SQLITE:
            rows.append(
                Row("W2", store, mode, "throughput", runs_s, raw_s := per_s(raw_elapsed),
                    "runs/s", raw_is, ">= 0.50x", runs_s >= 0.5 * raw_s)
            )  # fmt: skip
    return rows


def chain_rows(mode: str, chains: list[dict[int, float]]) -> list[Row]:
    """CPU per step added, from 3 to 10 steps and from 10 to 30 (medians over rounds)."""
    short, middle, long = CHAINS

    def mid(length: int) -> float:
        return statistics.median(chain[length] for chain in chains)

    first = (mid(middle) - mid(short)) / (middle - short)
    second = (mid(long) - mid(middle)) / (long - middle)
    added = f"CPU per step added, {short} to {middle} steps"
    return [
        Row("W2", MEMORY, mode, f"CPU per run, {short} steps", mid(short), None, "us", "-"),
        Row("W2", MEMORY, mode, f"CPU per run, {long} steps", mid(long), None, "us", "-"),
        Row("W2", MEMORY, mode, f"CPU per step added, {middle} to {long}", second, first, "us",
            added, "<= 1.20x", second <= 1.2 * first),
    ]  # fmt: skip


# --- W3: concurrency ------------------------------------------------------------------


@dataclass(frozen=True)
class Concurrency:
    wall_ns: int
    rss_delta: int
    rss_peak: int
    threads_peak: int
    threads_baseline: int
    # W5 only: when the last run began its sleep (after the first start), and how long
    # after the last sleep was due the last run ended: wall ≈ the first + SLEEP_S + the second.
    asleep_ns: int | None = None
    late_ns: int | None = None

    @classmethod
    def of(
        cls, wall_ns: int, sampler: Sampler, phases: tuple[int, int] | None = None
    ) -> Concurrency:
        return cls(
            wall_ns,
            sampler.peak_rss - sampler.baseline_rss,
            sampler.peak_rss,
            sampler.peak_threads,
            sampler.baseline_threads,
            *(phases or (None, None)),
        )

    @property
    def threads_over_baseline(self) -> int:
        return self.threads_peak - self.threads_baseline


def plain_sleepers(count: int) -> Concurrency:
    threads = [threading.Thread(target=time.sleep, args=(SLEEP_S,)) for _ in range(count)]
    clean_slate()
    with Sampler() as sampler:
        clock = time.perf_counter_ns
        start = clock()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = clock() - start
    return Concurrency.of(elapsed, sampler)


def callboard_sleepers(setup: Setup, store: str) -> Concurrency:
    threads_before = threading.active_count()
    # Every sleeper holds a step thread: the pool must be allowed that many.
    with fresh_runtime(setup, store, max_step_threads=setup.sizes.sleepers) as runtime:
        workflow = runtime.register(sleep_workflow())
        runs = [workflow.create_run() for _ in range(setup.sizes.sleepers)]
        clean_slate()
        with Sampler() as sampler:
            clock = time.perf_counter_ns
            start = clock()
            for run in runs:
                run.start_async(input_data=PAYLOAD)
            for run in runs:
                run.wait()
            elapsed = clock() - start
        if not all(run.wait().status == "success" for run in runs):
            raise RuntimeError("a W3 run did not succeed")
    wait_for_threads(threads_before)
    return Concurrency.of(elapsed, sampler)


def bench_w3(mode: str, setup: Setup) -> list[Row]:
    sizes = setup.sizes
    ours: dict[str, list[Concurrency]] = by_store(setup)
    floors: list[Concurrency] = []
    for index in range(sizes.rounds):
        for store in setup.stores_in(index):
            ours[store].append(callboard_sleepers(setup, store))
        floors.append(plain_sleepers(sizes.sleepers))

    def mid(samples: list[Concurrency], field: str) -> float:
        return median([getattr(sample, field) for sample in samples])

    sleepers_is = f"{sizes.sleepers} plain threads sleeping 1 s"
    rows = []
    for store in setup.stores:
        wall, delta, memory = (
            mid(ours[store], "wall_ns"),
            mid(ours[store], "rss_delta"),
            store == MEMORY,
        )
        rows += [
            Row("W3", store, mode, "wall, first start to last end", wall, mid(floors, "wall_ns"),
                "s", sleepers_is, *(("< 1.5 s", wall < 1.5 * NS_PER_S) if memory else ())),
            Row("W3", store, mode, "peak RSS over baseline", delta, mid(floors, "rss_delta"),
                "MB", sleepers_is, *(("< 100 MB", delta < 100 * MB) if memory else ())),
            Row("W3", store, mode, "peak RSS, absolute", mid(ours[store], "rss_peak"),
                mid(floors, "rss_peak"), "MB", sleepers_is),
            Row("W3", store, mode, "peak OS threads", max(o.threads_peak for o in ours[store]),
                max(f.threads_peak for f in floors), "threads", sleepers_is),
        ]  # fmt: skip
    return rows


# --- W4: query latency ----------------------------------------------------------------


def ask_ns(count: int) -> list[int]:
    ref = EchoActor.start()
    clock = time.perf_counter_ns
    samples = []
    try:
        for index in range(count):
            start = clock()
            ref.ask(index)
            samples.append(clock() - start)
    finally:
        ref.stop()
    return samples


def callboard_queries_ns(setup: Setup, store: str) -> list[int]:
    sizes = setup.sizes
    with fresh_runtime(setup, store) as runtime:
        workflow = runtime.register(noop_workflow())
        run_ids = [run.run_id for run in start_and_wait(workflow, sizes.queries)]
        query = workflow.get_workflow_run_execution_result
        for run_id in run_ids[: sizes.warmup]:
            query(run_id)
        clock = time.perf_counter_ns
        samples = []
        for _ in range(sizes.query_rounds):
            for run_id in run_ids:
                start = clock()
                result = query(run_id)
                samples.append(clock() - start)
                if result is None or result.status != "success":
                    raise RuntimeError("a W4 run is missing or did not succeed")
    wait_for_threads(1)
    return samples


def bench_w4(mode: str, setup: Setup) -> list[Row]:
    sizes = setup.sizes
    ask_ns(sizes.warmup)
    samples = by_store(setup)
    floor: list[int] = []
    select: list[int] = []
    for index in range(sizes.rounds):
        for store in setup.stores_in(index):
            samples[store] += callboard_queries_ns(setup, store)
        floor += ask_ns(sizes.queries * sizes.query_rounds)
        if setup.sqlite_in(index):
            select += raw_select_ns(setup, sizes.queries, sizes.query_rounds)
    ask_is = "pykka ask round trip to a ThreadingActor"
    select_is = "raw sqlite3: SELECT one snapshot by run_id"
    rows = []
    for store in setup.stores:
        mid, memory = median(samples[store]), store == MEMORY
        rows += [
            Row("W4", store, mode, "query median", mid, median(floor), "us", ask_is,
                *(("<= 2.00x", mid <= 2 * median(floor)) if memory else ())),
            Row("W4", store, mode, "query p99", percentile(samples[store], 0.99),
                percentile(floor, 0.99), "us", ask_is),
        ]  # fmt: skip
        if store == SQLITE:
            rows.append(
                Row("W4", store, mode, "query median", mid, median(select), "us", select_is)
            )
    return rows


# --- W5: a fleet of sleeping runs ---------------------------------------------------


async def _sleep_one() -> tuple[int, int]:
    clock = time.perf_counter_ns
    asleep = clock()
    await asyncio.sleep(SLEEP_S)
    return asleep, clock()


async def _sleep_all_ns(count: int) -> tuple[int, tuple[int, int]]:
    clock = time.perf_counter_ns
    start = clock()
    tasks = [asyncio.create_task(_sleep_one()) for _ in range(count)]
    times = await asyncio.gather(*tasks)
    elapsed = clock() - start
    return elapsed, fleet_phases(start, times)


def fleet_phases(start: int, runs: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """W5's wall in two parts, from when each run began its sleep and ended, in ns on one clock.

    How long after ``start`` the last run began its sleep, and how long after
    that sleep was due (``SLEEP_S`` later) the last run ended.
    """
    last_asleep = max(asleep for asleep, _ in runs)
    return last_asleep - start, max(end for _, end in runs) - (last_asleep + SLEEP_NS)


def asyncio_sleepers(count: int) -> Concurrency:
    """The W5 floor: ``count`` tasks on one event loop, each awaiting ``asyncio.sleep(1)``."""
    clean_slate()
    with Sampler() as sampler:
        elapsed, phases = asyncio.run(_sleep_all_ns(count))
    return Concurrency.of(elapsed, sampler, phases)


def _epoch_ns(moment: datetime | None) -> int:
    if moment is None:
        raise RuntimeError("a W5 run's record lacks a step time")
    return round(moment.timestamp() * NS_PER_S)


def callboard_fleet(setup: Setup, store: str) -> Concurrency:
    """``sizes.fleet`` runs of ``.sleep(1).then(step)``, all sleeping at once."""
    threads_before = threading.active_count()
    with fresh_runtime(setup, store) as runtime:
        workflow = runtime.register(fleet_workflow())
        runs = [workflow.create_run() for _ in range(setup.sizes.fleet)]
        clean_slate()
        with Sampler() as sampler:
            clock = time.perf_counter_ns
            start, epoch = clock(), time.time_ns()  # step times are on the wall clock
            for run in runs:
                run.start_async(input_data=PAYLOAD)
            for run in runs:
                run.wait()
            elapsed = clock() - start
        results = [run.wait() for run in runs]
        if not all(result.status == "success" for result in results):
            raise RuntimeError("a W5 run did not succeed")
        times = []
        for result in results:
            sleep = next(iter(result.steps.values()))  # the first step a run starts
            times.append((_epoch_ns(sleep.started_at), _epoch_ns(result.updated_at)))
    wait_for_threads(threads_before)
    return Concurrency.of(elapsed, sampler, fleet_phases(epoch, times))


FLEET_THREADS_AIM = 16  # "holds no thread while it sleeps": a few runtime threads, not one per run


def bench_w5(mode: str, setup: Setup) -> list[Row]:
    sizes = setup.sizes
    ours: dict[str, list[Concurrency]] = by_store(setup)
    floors: list[Concurrency] = []
    for index in range(sizes.fleet_rounds):
        for store in setup.stores_in(index, sizes.fleet_sqlite_rounds):
            ours[store].append(callboard_fleet(setup, store))
        floors.append(asyncio_sleepers(sizes.fleet))

    def mid(samples: list[Concurrency], field: str) -> float:
        return median([getattr(sample, field) for sample in samples])

    tasks_is = f"{sizes.fleet} asyncio tasks sleeping 1 s, 1 loop"
    floor_wall = mid(floors, "wall_ns")
    rows = []
    for store in setup.stores:
        wall, memory = mid(ours[store], "wall_ns"), store == MEMORY
        over = max(o.threads_over_baseline for o in ours[store])
        rows += [
            Row("W5", store, mode, "wall, first start to last end", wall, floor_wall, "s",
                tasks_is, *(("<= 1.50x", wall <= 1.5 * floor_wall) if memory else ())),
            Row("W5", store, mode, "last run asleep, after first start",
                mid(ours[store], "asleep_ns"), mid(floors, "asleep_ns"), "s", tasks_is),
            Row("W5", store, mode, "last end, after last sleep was due",
                mid(ours[store], "late_ns"), mid(floors, "late_ns"), "s", tasks_is),
            Row("W5", store, mode, "peak RSS over baseline", mid(ours[store], "rss_delta"),
                mid(floors, "rss_delta"), "MB", tasks_is),
            Row("W5", store, mode, "peak RSS, absolute", mid(ours[store], "rss_peak"),
                mid(floors, "rss_peak"), "MB", tasks_is),
            Row("W5", store, mode, "peak OS threads", max(o.threads_peak for o in ours[store]),
                max(f.threads_peak for f in floors), "threads", tasks_is),
            Row("W5", store, mode, "peak OS threads over baseline", over,
                max(f.threads_over_baseline for f in floors), "threads", tasks_is,
                f"<= {FLEET_THREADS_AIM} threads", over <= FLEET_THREADS_AIM),
        ]  # fmt: skip
    return rows


def fleet_against_blocked(rows: Sequence[Row], sizes: Sizes) -> list[Row]:
    """The "W5 vs W3 per run" rows: RSS per sleeping run beside RSS per blocked step.

    Built from the W3 and W5 rows already measured, for each store and mode that has
    both (none when either workload was left out by ``--only``).
    """
    measure = "peak RSS over baseline"
    blocked = {(r.store, r.mode): r for r in rows if r.row == "W3" and r.measure == measure}
    return [
        Row("W5", r.store, r.mode, "W5 vs W3 per run: RSS over baseline",
            r.callboard / sizes.fleet, w3.callboard / sizes.sleepers, "KB",
            "W3 callboard per run: a step in time.sleep(1)")
        for r in rows
        if r.row == "W5" and r.measure == measure
        and (w3 := blocked.get((r.store, r.mode))) is not None
    ]  # fmt: skip


# --- modes and main -------------------------------------------------------------------


def _drop_every_event(logger: Any, method_name: str, event_dict: Any) -> Any:
    raise structlog.DropEvent


def configure_logging(mode: str) -> None:
    structlog.reset_defaults()
    if mode == "logged":
        # Every event is built and goes through the processor chain, which drops it.
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso"),
                _drop_every_event,
            ],
            cache_logger_on_first_use=True,
        )


MODES = ("quiet", "logged")

Workload = Callable[[str, Setup], list[Row]]
WORKLOADS: dict[str, Workload] = {
    "W1": bench_w1,
    "W2": bench_w2,
    "W3": bench_w3,
    "W4": bench_w4,
    "W5": bench_w5,
}


def machine_line(setup: Setup, quick: bool) -> str:
    sizes = setup.sizes
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    versions = " · ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in ("pykka", "pydantic", "structlog", "msgpack")
    )
    line = (
        f"callboard bench{' --quick' if quick else ''} · {os.cpu_count()} cores "
        f"({affinity} usable) · {platform.python_implementation()} "
        f"{platform.python_version()} · {versions} · SQLite {sqlite3.sqlite_version} · "
        f"{platform.system()} {platform.machine()} · per round: starts={sizes.starts} "
        f"(idle {sizes.idle_starts}) runs={sizes.runs} sleepers={sizes.sleepers} "
        f"queries={sizes.queries}x{sizes.query_rounds} · rounds={sizes.rounds}"
    )
    if SQLITE in setup.stores:
        rounds = min(sizes.rounds, sizes.sqlite_rounds)
        fewer = f" (SQLite rows and their floors: {rounds})" if rounds < sizes.rounds else ""
        line += fewer
    fleet_sqlite = min(sizes.fleet_rounds, sizes.fleet_sqlite_rounds)
    line += f" · W5: fleet={sizes.fleet}, {sizes.fleet_rounds} rounds"
    if SQLITE in setup.stores and fleet_sqlite < sizes.fleet_rounds:
        line += f" (SQLite: {fleet_sqlite})"
    if SQLITE in setup.stores:
        line += f" · SQLite files in {setup.files.directory}"
    return line


def profile_start_async(setup: Setup) -> None:
    """Print where ``start_async`` spends its time, by cProfile (caller's thread only)."""
    import cProfile
    import pstats

    sizes = setup.sizes
    configure_logging("quiet")
    for store in setup.stores:
        with fresh_runtime(setup, store) as runtime:
            workflow = runtime.register(noop_workflow())
            start_and_wait(workflow, sizes.warmup)
            runs = [workflow.create_run() for _ in range(sizes.starts)]
            profiler = cProfile.Profile()
            profiler.enable()
            for run in runs:
                run.start_async(input_data=PAYLOAD)
            profiler.disable()
            for run in runs:
                run.wait()
        print(f"\ncProfile of {sizes.starts} start_async calls ({store}, quiet), by own time:")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(20)


def configure_otel() -> None:
    """OpenTelemetry's SDK with a tracer provider that records spans and exports none."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    print("OpenTelemetry: SDK configured, spans recorded and dropped, metrics kept in memory")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smaller N: a smoke run")
    parser.add_argument("--profile", action="store_true", help="also cProfile start_async")
    parser.add_argument(
        "--store", choices=(*STORES, "all"), default="all", help="run only one store's rows"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=tuple(WORKLOADS),
        default=tuple(WORKLOADS),
        metavar="W",
        help="run only these workloads (W1 .. W5); the W5 vs W3 row needs both",
    )
    parser.add_argument(
        "--otel",
        action="store_true",
        help="configure OpenTelemetry's SDK first (spans recorded, no exporter; metrics kept "
        "in memory): the cost of the instrumentation itself",
    )
    parser.add_argument(
        "--db-dir",
        type=Path,
        default=None,
        help="folder for the SQLite files (default: the system's temporary folder)",
    )
    args = parser.parse_args(argv)
    if args.otel:
        configure_otel()
    sizes = QUICK if args.quick else FULL
    stores = STORES if args.store == "all" else (args.store,)
    began = time.perf_counter_ns()
    with tempfile.TemporaryDirectory(prefix="callboard-bench-", dir=args.db_dir) as directory:
        setup = Setup(
            sizes=sizes,
            stores=stores,
            files=DatabaseFiles(Path(directory)),
            record=pending_record() if SQLITE in stores else None,
        )
        print(machine_line(setup, args.quick))
        print(
            "modes: quiet = structlog unconfigured (callboard drops its events before building "
            "them); logged = structlog configured, every event built and processed, then dropped",
            flush=True,
        )
        rows: list[Row] = []
        try:
            for name, workload in WORKLOADS.items():
                if name not in args.only:
                    continue
                for mode in MODES:
                    configure_logging(mode)
                    rows.extend(workload(mode, setup))
        finally:
            structlog.reset_defaults()
        rows += fleet_against_blocked(rows, sizes)
        print()
        print_table(in_table_order(rows))
        missed = [r for r in rows if r.met is False]
        print(
            f"\naim met in {sum(r.met is True for r in rows)} rows, missed in {len(missed)}; "
            f"ratio = callboard / floor (for runs/s and steps/s higher is better); "
            f"took {(time.perf_counter_ns() - began) / NS_PER_S:.1f} s"
        )
        if args.profile:
            profile_start_async(setup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
