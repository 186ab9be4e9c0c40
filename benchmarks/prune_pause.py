"""What a retention pass costs the runs beside it: how long a save waits while a store prunes.

Run it with ``.venv/bin/python benchmarks/prune_pause.py`` (about a minute on 2 cores);
``--quick`` keeps 10,000 ended runs instead of 50,000, deletes 4,000 a pass instead of
20,000 and watches half as long; ``--store`` picks stores (``memory sqlite postgres``,
the default). PostgreSQL runs on a throwaway cluster, as the tests start one
(``tests/_postgres.py``), and is skipped with a message where there are no server
binaries or no psycopg.

For each store it fills a fresh database with ``--kept`` ended runs (a 1 KB snapshot
each), then starts a saver: a thread that saves a new snapshot of one run in progress
2 ms after its save before committed, and notes how long each save waited for its
commit. Meanwhile it makes the calls a ``RetentionPolicy`` pass makes
(``store.prune(ended_before=..., keep=...)``, on this thread, as the pruner's own):

- **floor**: the saves' waits over a second (half with ``--quick``) with no pass;
- **nothing to delete** by ``max_runs`` (``keep``: every run kept) and by ``max_age``
  (nothing older than the cut): ten passes 50 ms apart, and the saves that overlapped one;
- **delete** ``--doomed`` runs by ``max_runs``, then as many more by ``max_age``: one
  pass each, and the saves that overlapped it;
- **after**: as long again after each deleting pass, while a SQLite store gives the
  freed pages back to the file system, 8 MiB each time its writer is idle.

A save counts in a stretch when its wait overlaps it. Ratios are to the floor measured
on the same store in the same run. It asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime import MemoryStore, SnapshotRecord, SnapshotStore, SQLiteStore  # noqa: E402

SAVE_EVERY = 0.002
"""Seconds between two saves of the run in progress (after the one before committed)."""

DATA = os.urandom(1000)
"""A snapshot's bytes: about what a run of a few steps with small values stores."""

FILL_BATCH = 500
"""Runs ended in one ``save`` while filling: the writer commits them together."""

FILL_THREADS = 16
"""Threads that create the runs while filling."""

GAP = 0.05
"""Seconds between two passes with nothing to delete: the pruner's thread makes one a
``RetentionPolicy.interval``, so back to back they would only measure the GIL's hand-over."""

KINDS = ("memory", "sqlite", "postgres")


def record(run_id: str, status: str, at: float, seq: int) -> SnapshotRecord:
    """A run's snapshot of ``DATA``, taken at ``at`` (epoch seconds)."""
    return SnapshotRecord(
        run_id=run_id,
        workflow_id="pruned",
        seq=seq,
        status=status,
        data=DATA,
        created_at=at,
        updated_at=at,
        trace_id="ab" * 16,
    )


def committed(store: SnapshotStore, records: Sequence[SnapshotRecord]) -> None:
    """Save ``records`` and return once they are committed."""
    done = threading.Event()
    failed: list[BaseException] = []
    store.save(records, on_commit=done.set, on_error=failed.append)
    if not done.wait(60) or failed:
        raise RuntimeError(f"a save was not committed: {failed or 'timed out'}")


def fill(store: SnapshotStore, count: int, base: float) -> None:
    """``count`` runs that ended one millisecond apart from ``base`` on, oldest first.

    Created from ``FILL_THREADS`` threads at once, as a burst of starts comes: a
    PostgreSQL store then commits many in one transaction of its writer's.
    """
    with ThreadPoolExecutor(FILL_THREADS) as pool:
        for at in range(0, count, FILL_BATCH):
            batch = range(at, min(count, at + FILL_BATCH))
            runs = [record(f"r{index:06d}", "running", base + index / 1000, 0) for index in batch]
            if not all(pool.map(store.create, runs)):
                raise RuntimeError("a run id was taken: the store was not fresh")
            committed(store, [run._replace(status="success", seq=1) for run in runs])


class Saver:
    """A thread that saves a run in progress every ``SAVE_EVERY`` seconds, timing each save.

    ``waits`` holds ``(began, ended)`` of every save, by ``time.perf_counter()``.
    """

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store
        self._stop = threading.Event()
        self.waits: list[tuple[float, float]] = []
        store.create(record("live", "running", time.time(), 0))
        self._thread = threading.Thread(target=self._run, name="saver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            began = time.perf_counter()
            committed(self._store, [record("live", "running", time.time(), seq)])
            self.waits.append((began, time.perf_counter()))
            time.sleep(SAVE_EVERY)

    def during(self, began: float, ended: float) -> list[float]:
        """The waits (seconds) of the saves that overlapped ``began`` .. ``ended``."""
        return [end - start for start, end in list(self.waits) if end >= began and start <= ended]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


@dataclass
class Row:
    """One line of the table: passes made in a stretch, and the saves' waits in it."""

    what: str
    passes: list[float]
    deleted: int
    waits: list[float]


def p99(values: list[float]) -> float:
    """The 99th percentile (the largest of fewer than 100 values)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def stretch(saver: Saver, what: str, seconds: float) -> Row:
    """The saves' waits over ``seconds`` with no pass."""
    began = time.perf_counter()
    time.sleep(seconds)
    return Row(what, [], 0, saver.during(began, time.perf_counter()))


def passes(saver: Saver, what: str, prune: Callable[[], int], count: int = 1) -> Row:
    """``count`` passes, ``GAP`` apart, with the waits of the saves that overlapped one."""
    took: list[float] = []
    deleted = 0
    waits: list[float] = []
    for index in range(count):
        if index:
            time.sleep(GAP)
        start = time.perf_counter()
        deleted += prune()
        end = time.perf_counter()
        took.append(end - start)
        time.sleep(0.05)  # the save under way at the pass's end ends
        waits += saver.during(start, end)
    return Row(what, took, deleted, waits)


def measure(
    store: SnapshotStore, kept: int, doomed: int, floor_for: float, repeat: int
) -> list[Row]:
    """The rows of one store, filled with ``kept`` ended runs; ``doomed`` go a pass.

    ``floor_for`` seconds of saves with no pass are the floor, and as long is watched
    after each deleting pass (a SQLite store gives its pages back then); the passes
    with nothing to delete are made ``repeat`` times.
    """
    base = time.time() - 7200  # ended two hours ago, a millisecond apart
    after = f"  the {floor_for:.1f} s after it"
    fill(store, kept, base)
    saver = Saver(store)
    try:
        time.sleep(0.2)  # the saver's first saves warm its path up
        rows = [stretch(saver, "floor: saves, no pass", floor_for)]
        rows.append(
            passes(saver, "nothing to delete: max_runs", lambda: store.prune(keep=kept), repeat)
        )
        rows.append(
            passes(
                saver,
                "nothing to delete: max_age",
                lambda: store.prune(ended_before=base - 1),
                repeat,
            )
        )
        rows.append(
            passes(saver, f"delete {doomed:,}: max_runs", lambda: store.prune(keep=kept - doomed))
        )
        rows.append(stretch(saver, after, floor_for))
        cut = base + 2 * doomed / 1000 - 0.0005  # the next ``doomed``, oldest first
        rows.append(
            passes(saver, f"delete {doomed:,}: max_age", lambda: store.prune(ended_before=cut))
        )
        rows.append(stretch(saver, after, floor_for))
    finally:
        saver.stop()
    return rows


def print_rows(name: str, rows: list[Row]) -> None:
    floor = rows[0].waits
    floor_p99, floor_max = p99(floor), max(floor)
    for row in rows:
        wall = f"{statistics.median(row.passes) * 1000:8.1f} ms" if row.passes else f"{'-':>11}"
        count = f"{len(row.passes):>6}" if row.passes else f"{'-':>6}"
        deleted = f"{row.deleted:>7,}" if row.passes else f"{'-':>7}"
        if row.waits:
            middle, high, top = statistics.median(row.waits), p99(row.waits), max(row.waits)
            waits = (
                f"{middle * 1000:7.2f} ms | {high * 1000:7.2f} ms | {top * 1000:8.2f} ms | "
                f"{high / floor_p99:7.1f}x | "
                f"{top / floor_max:7.1f}x"
            )
        else:  # a pass shorter than the saves' pace
            waits = f"{'-':>10} | {'-':>10} | {'-':>11} | {'-':>8} | {'-':>8}"
        saves = f"{len(row.waits):>5}"
        print(f"{name:8} | {row.what:28} | {count} | {deleted} | {wall} | {saves} | {waits}")


@contextlib.contextmanager
def opened(kind: str, folder: Path) -> Iterator[SnapshotStore | str]:
    """A fresh store of ``kind``, closed after; or why there is none."""
    if kind == "memory":
        yield MemoryStore()
        return
    if kind == "sqlite":
        store = SQLiteStore(folder / "runs.db")
        try:
            yield store
        finally:
            store.close()
        return
    from tests._postgres import script_server

    server = script_server()
    if server is None:
        yield "no psycopg, or no PostgreSQL server binaries (initdb, pg_ctl) here"
        return
    try:
        from runtime import PostgresStore

        postgres = PostgresStore(server.new_database())
        try:
            yield postgres
        finally:
            postgres.close()
    finally:
        server.destroy()


def free_pages(path: Path) -> int:
    """Pages of a SQLite file on its free list (not yet given back to the file system)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row: Any = connection.execute("PRAGMA freelist_count").fetchone()
        return int(row[0])
    finally:
        connection.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="10,000 kept, 4,000 a pass")
    parser.add_argument(
        "--store",
        nargs="+",
        choices=KINDS,
        default=list(KINDS),
        help="the stores to measure (all three by default)",
    )
    parser.add_argument("--kept", type=int, help="ended runs in the store (default 50,000)")
    parser.add_argument("--doomed", type=int, help="runs a deleting pass deletes (20,000)")
    parser.add_argument("--db-dir", type=Path, default=None, help="where the SQLite file goes")
    args = parser.parse_args(argv)
    kept = args.kept or (10_000 if args.quick else 50_000)
    doomed = args.doomed or (4_000 if args.quick else 20_000)
    if 2 * doomed > kept:
        parser.error("--doomed may be at most half of --kept: two passes delete that many")
    floor_for = 0.5 if args.quick else 1.0
    repeat = 5 if args.quick else 10
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"callboard prune pause · {os.cpu_count()} cores · load average {load} · SQLite "
        f"{sqlite3.sqlite_version} · {kept:,} ended runs of 1 KB kept · a save every "
        f"{SAVE_EVERY * 1000:.0f} ms beside · floor: {floor_for:.1f} s of saves, no pass"
    )
    header = (
        f"{'store':8} | {'row':28} | {'passes':>6} | {'deleted':>7} | {'pass (med)':>11} | "
        f"{'saves':>5} | {'wait p50':>10} | {'wait p99':>10} | {'wait max':>11} | "
        f"{'p99 / fl':>8} | {'max / fl':>8}"
    )
    print(header)
    print("-" * len(header))
    for kind in args.store:
        with (
            tempfile.TemporaryDirectory(dir=args.db_dir) as folder,
            opened(kind, Path(folder)) as store,
        ):
            if isinstance(store, str):
                print(f"{kind:8} | skipped: {store}")
                continue
            began = time.perf_counter()
            rows = measure(store, kept, doomed, floor_for, repeat)
            print_rows(kind, rows)
            note = f"{kind:8} | ({time.perf_counter() - began:.1f} s in all, fill included"
            if isinstance(store, SQLiteStore):
                note += f"; {free_pages(Path(folder) / 'runs.db'):,} pages still free at the end"
            print(note + ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
