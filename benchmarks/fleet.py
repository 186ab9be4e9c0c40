"""W6: a fleet of worker processes on one PostgreSQL store, beside a raw-SQL floor.

``make bench`` runs it after ``bench.py`` (or: ``.venv/bin/python benchmarks/fleet.py``).
It starts a throwaway PostgreSQL cluster (as the tests do: ``tests/_postgres.py``),
or uses ``--url``/``$CALLBOARD_TEST_POSTGRES``, and for 1, 2 and 4 worker processes:

- **callboard**: ``--runs`` runs of a 3-step workflow are started by a client
  (``role="client"``, so they wait in the store), then every worker process
  (``role="worker"``, ``max_concurrent_runs=--concurrency``) registers the
  workflow at once; the time runs from that go to the last run's ``success``.
- **floor**: the same number of processes, each claiming up to 32 queued rows
  of a plain table with ``SELECT ... FOR UPDATE SKIP LOCKED``, bumping their
  epoch, then writing each of the 3 steps' snapshots for the whole batch in one
  transaction conditioned on owner and epoch, then the end: what callboard
  does, with nothing else (no actors, no validation, no encoding beyond bytes).

It prints a table with runs/s and the ratio to the floor measured in the same
run; the aim is at least 0.5x with 4 workers. Then W1 and W4 on PostgreSQL, in
this process: the median ``start_async`` of a burst (each start committed before
it returns), on a runtime that runs them and on a ``role="client"`` one that only
starts them, beside one committed ``INSERT`` by psycopg, and the median
``get_workflow_run_execution_result`` beside one ``SELECT`` of a snapshot by id.
It asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from runtime import Runtime, create_step, create_workflow  # noqa: E402


class Number(BaseModel):
    n: int


def _add(ctx: Any) -> Number:
    return Number(n=ctx.input_data.n + 1)


def workflow() -> Any:
    """Three steps, each adding one: the run's work is the runtime's, not the steps'."""
    return (
        create_workflow(id="w6", input_schema=Number, output_schema=Number)
        .then(create_step(id="one", input_schema=Number, output_schema=Number, execute=_add))
        .then(create_step(id="two", input_schema=Number, output_schema=Number, execute=_add))
        .then(create_step(id="three", input_schema=Number, output_schema=Number, execute=_add))
        .commit()
    )


# --- the processes -------------------------------------------------------------------


def worker_main(url: str, concurrency: int) -> None:
    """A callboard worker: ready at once, registers the workflow on ``go``, runs until EOF."""
    with Runtime(store=url, role="worker", max_concurrent_runs=concurrency) as rt:
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return
        began = cpu_seconds()
        rt.register(workflow())
        sys.stdin.read()
        print(f"cpu {cpu_seconds() - began}", flush=True)


def floor_main(url: str, batch: int) -> None:
    """The floor's process: claim a batch, three fenced saves of it, the end; until none left."""
    import psycopg

    me = uuid.uuid4().hex
    data = os.urandom(600)  # about a 3-step snapshot's size
    with psycopg.connect(url) as connection:
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return
        began = cpu_seconds()
        while True:
            with connection.transaction():
                rows = connection.execute(
                    "UPDATE floor_runs SET owner = %s, epoch = epoch + 1 WHERE run_id IN ("
                    "SELECT run_id FROM floor_runs WHERE owner IS NULL AND status = 'pending' "
                    "ORDER BY created LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING run_id, epoch",
                    (me, batch),
                ).fetchall()
            if not rows:
                break
            ids = [row[0] for row in rows]
            epochs = [row[1] for row in rows]
            for seq, status in ((1, "running"), (2, "running"), (3, "running"), (4, "success")):
                with connection.transaction():
                    connection.execute(
                        "UPDATE floor_runs AS r SET status = %s, seq = %s, snapshot = %s, "
                        "owner = CASE WHEN %s = 'success' THEN NULL ELSE r.owner END "
                        "FROM unnest(%s::text[], %s::int[]) AS f(run_id, epoch) "
                        "WHERE r.run_id = f.run_id AND r.owner = %s AND r.epoch = f.epoch",
                        (status, seq, data, status, ids, epochs, me),
                    )
        print(f"cpu {cpu_seconds() - began}", flush=True)


def cpu_seconds() -> float:
    """This process's CPU time (user and system), in seconds."""
    times = os.times()
    return times.user + times.system


def server_cpu_seconds(server: Any) -> float | None:
    """CPU seconds the throwaway cluster's processes have spent.

    The postmaster's own time and its reaped children's (an ended backend's time is
    added to its parent's when the postmaster reaps it), plus the time of its living
    children (backends, the checkpointer, the WAL writer). ``None`` for a server that
    is not ours, or one whose processes cannot be read.
    """
    if server.external is not None or server.root is None:
        return None
    try:
        postmaster = int((server.root / "data" / "postmaster.pid").read_text().split()[0])
        process = psutil.Process(postmaster)
        times = process.cpu_times()
        spent = times.user + times.system + times.children_user + times.children_system
        for child in process.children():
            with contextlib.suppress(psutil.Error):  # ended meanwhile: its parent counts it
                child_times = child.cpu_times()
                spent += child_times.user + child_times.system
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    return spent


class ServerClock:
    """The server's CPU seconds over a measurement (``None`` where it cannot be read)."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self._began = server_cpu_seconds(server)

    def spent(self) -> float | None:
        """Seconds since this clock was made, once the ended connections' backends are reaped."""
        if self._began is None:
            return None
        time.sleep(0.3)  # the workers' backends end when they do; the postmaster reaps them
        now = server_cpu_seconds(self._server)
        return None if now is None else now - self._began


# --- the measurements ------------------------------------------------------------------


def spawn(role: str, url: str, arg: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, f"--{role}", url, str(arg)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def go(processes: list[subprocess.Popen[str]], server: Any) -> tuple[float, ServerClock]:
    """Once every process is ready, tell them to go: when, and the server's CPU clock."""
    for proc in processes:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"a process did not start: {line!r}")
    clock = ServerClock(server)
    started = time.perf_counter()
    for proc in processes:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    return started, clock


def finish(processes: list[subprocess.Popen[str]]) -> float:
    """End the processes; the CPU seconds they said they spent from ``go`` on, summed."""
    for proc in processes:
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
    spent = 0.0
    for proc in processes:
        try:
            proc.wait(30)  # what it prints after "ready" is one line: no pipe fills up
        except subprocess.TimeoutExpired:
            proc.kill()
            continue
        assert proc.stdout is not None
        for line in proc.stdout.read().splitlines():
            if line.startswith("cpu "):
                spent += float(line.split()[1])
    return spent


def count_done(connection: Any, table: str) -> int:
    row = connection.execute(f"SELECT count(*) FROM {table} WHERE status = 'success'").fetchone()
    return int(row[0]) if row else 0


def wait_all(url: str, table: str, runs: int, started: float, limit: float = 600.0) -> float:
    """Seconds from ``started`` until all ``runs`` rows of ``table`` are ``success``.

    One connection for all the polls, and polls that come often (every 10 ms) only
    near the end: a count scans the table, and a new connection is a new server
    process. Polling every 10 ms on a new connection took about a tenth of the
    server's time during a callboard measurement (the table is wider and more updated
    than the floor's), away from the work it measures.
    """
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        while True:
            done = count_done(connection, table)
            elapsed = time.perf_counter() - started
            if done >= runs:
                return elapsed
            if elapsed > limit:
                raise RuntimeError(f"{table}: not done within {limit} s")
            # A quarter of the time the rest should take at the rate so far.
            left = (runs - done) * elapsed / done if done else 0.2
            time.sleep(min(0.25, max(0.01, left / 4)))


Rate = tuple[float, float, float | None]
"""Runs/s, the processes' CPU milliseconds per run, and the server's (``None``: unknown)."""


def per_run_ms(seconds: float | None, runs: int) -> float | None:
    return None if seconds is None else seconds / runs * 1e3


def callboard_rate(server: Any, url: str, workers: int, runs: int, concurrency: int) -> Rate:
    """Runs/s, the workers' CPU milliseconds per run, and the server's."""
    processes = [spawn("worker", url, concurrency) for _ in range(workers)]
    try:
        with Runtime(store=url, role="client") as client:
            wf = client.register(workflow())
            for index in range(runs):
                wf.create_run().start_async(input_data={"n": index})
        started, clock = go(processes, server)
        elapsed = wait_all(url, "callboard_runs", runs, started)
    finally:
        spent = finish(processes)
    return runs / elapsed, spent / runs * 1e3, per_run_ms(clock.spent(), runs)


def floor_rate(server: Any, url: str, workers: int, runs: int, batch: int) -> Rate:
    """Runs/s, the processes' CPU milliseconds per run, and the server's."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE floor_runs (run_id text PRIMARY KEY, status text NOT NULL, "
            "seq int NOT NULL, epoch int NOT NULL DEFAULT 0, owner text, created double "
            "precision NOT NULL, snapshot bytea NOT NULL)"
        )
        connection.execute(
            "CREATE INDEX floor_queued ON floor_runs (created) "
            "WHERE owner IS NULL AND status = 'pending'"
        )
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO floor_runs (run_id, status, seq, created, snapshot) "
                "VALUES (%s, 'pending', 0, %s, %s)",
                [(uuid.uuid4().hex, time.time(), b"x" * 300) for _ in range(runs)],
            )
    processes = [spawn("floor", url, batch) for _ in range(workers)]
    try:
        started, clock = go(processes, server)
        elapsed = wait_all(url, "floor_runs", runs, started)
    finally:
        spent = finish(processes)
    return runs / elapsed, spent / runs * 1e3, per_run_ms(clock.spent(), runs)


def _cpu(rates: list[Rate]) -> tuple[float, float | None]:
    """The median CPU ms per run of the processes, and of the server (``None``: unknown)."""
    processes = statistics.median(spent for _, spent, _ in rates)
    known = [server for _, _, server in rates if server is not None]
    return processes, statistics.median(known) if known else None


def cpu_cell(rates: list[Rate]) -> str:
    processes, server = _cpu(rates)
    if server is None:
        return f"{processes:.2f} + ? = ?"
    return f"{processes:.2f} + {server:.2f} = {processes + server:.2f}"


def full_cell(rates: list[Rate]) -> str:
    """The runs/s at which the measured CPU per run (processes and server) fills every core."""
    processes, server = _cpu(rates)
    if server is None or processes + server <= 0:
        return "?"
    return f"{(os.cpu_count() or 1) * 1e3 / (processes + server):,.0f} r/s"


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def timed_starts(wf: Any, count: int) -> tuple[list[float], list[str]]:
    """Start ``count`` runs one after another: each ``start_async``'s seconds, and the ids."""
    seconds: list[float] = []
    run_ids: list[str] = []
    for index in range(count):
        run = wf.create_run()
        began = time.perf_counter()
        run.start_async(input_data={"n": index})
        seconds.append(time.perf_counter() - began)
        run_ids.append(run.run_id)
    return seconds, run_ids


def w1_w4(url: str, count: int) -> list[tuple[str, float, float, str]]:
    """W1 and W4 on PostgreSQL: callboard beside raw psycopg, in microseconds."""
    import psycopg

    rows: list[tuple[str, float, float, str]] = []
    with Runtime(store=url) as rt:
        wf = rt.register(workflow())
        starts, run_ids = timed_starts(wf, count)
        for run_id in run_ids:
            wf.create_run(run_id).wait(timeout=60)
        queries: list[float] = []
        for run_id in run_ids:
            began = time.perf_counter()
            wf.get_workflow_run_execution_result(run_id)
            queries.append(time.perf_counter() - began)
    with Runtime(store=url, role="client") as client:  # starts only: the runs wait queued
        queued, _ = timed_starts(client.register(workflow()), count)
    inserts: list[float] = []
    selects: list[float] = []
    data = os.urandom(300)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE floor_starts (run_id text PRIMARY KEY, snapshot bytea)")
        ids = [uuid.uuid4().hex for _ in range(count)]
        for run_id in ids:
            began = time.perf_counter()
            connection.execute("INSERT INTO floor_starts VALUES (%s, %s)", (run_id, data))
            inserts.append(time.perf_counter() - began)
        for run_id in ids:
            began = time.perf_counter()
            connection.execute(
                "SELECT snapshot FROM floor_starts WHERE run_id = %s", (run_id,)
            ).fetchone()
            selects.append(time.perf_counter() - began)
    rows.append(
        (
            "W1 start_async median, burst",
            median_us(starts),
            median_us(inserts),
            "psycopg: 1 committed INSERT",
        )
    )
    rows.append(
        (
            "W1 start_async median, client",
            median_us(queued),
            median_us(inserts),
            "psycopg: 1 committed INSERT",
        )
    )
    rows.append(
        (
            "W4 query median",
            median_us(queries),
            median_us(selects),
            "psycopg: SELECT one snapshot by id",
        )
    )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--url", default=os.environ.get("CALLBOARD_TEST_POSTGRES"))
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--quick", action="store_true", help="500 runs: a smoke run")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--floor", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker[0], int(args.worker[1]))
        return 0
    if args.floor:
        floor_main(args.floor[0], int(args.floor[1]))
        return 0
    if args.quick:
        args.runs = 500
    try:
        import psycopg  # noqa: F401
    except ImportError:
        print("W6 skipped: psycopg is not installed (pip install 'callboard[postgres]')")
        return 0
    from tests._postgres import Server, bindir

    server = Server()
    if args.url:
        server.external = args.url
    elif bindir() is None:
        print("W6 skipped: no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
        return 0
    else:
        server.create()
    try:
        print(
            f"W6 · PostgreSQL fleet · {os.cpu_count()} cores · runs={args.runs} "
            f"concurrency={args.concurrency} floor batch={args.batch} rounds={args.rounds}"
            + ("" if args.url else " · throwaway cluster (fsync off, as in the tests)")
        )
        header = (
            f"{'workers':>7} | {'callboard':>13} | {'raw-SQL floor':>13} | {'ratio':>6} | "
            f"{'aim':<12} | CPU ms/run: workers + server = all, floor's | 2 cores full at"
        )
        print(header)
        print("-" * len(header))
        for workers in args.workers:
            ours: list[Rate] = []
            floors: list[Rate] = []
            for _ in range(args.rounds):
                url = server.new_database()
                try:
                    ours.append(callboard_rate(server, url, workers, args.runs, args.concurrency))
                    floors.append(floor_rate(server, url, workers, args.runs, args.batch))
                finally:
                    server.drop_database(url)
            mine = statistics.median(rate for rate, _, _ in ours)
            floor = statistics.median(rate for rate, _, _ in floors)
            aim = ">= 0.50x " + ("yes" if mine / floor >= 0.5 else "NO") if workers == 4 else "-"
            print(
                f"{workers:>7} | {mine:>8,.0f} r/s | {floor:>8,.0f} r/s | "
                f"{mine / floor:>5.2f}x | {aim:<12} | {cpu_cell(ours)}, {cpu_cell(floors)}"
                f" | {full_cell(ours)}, {full_cell(floors)}"
            )
        print(
            "CPU per run of the measured processes and of the cluster's (from /proc); "
            "2 cores full at: the runs/s at which that CPU would take every core"
        )
        print()
        url = server.new_database()
        try:
            rows = w1_w4(url, 200 if args.quick else 1000)
        finally:
            server.drop_database(url)
        header = f"{'row':<30} | {'callboard':>10} | {'floor':>10} | {'ratio':>7} | floor is"
        print(header)
        print("-" * len(header))
        for name, mine, floor, what in rows:
            print(
                f"{name:<30} | {mine:>7.1f} µs | {floor:>7.1f} µs | {mine / floor:>6.2f}x | {what}"
            )
    finally:
        server.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
