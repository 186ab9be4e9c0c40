"""W7: the cost of queue limits: runs through a queue beside the same runs through none.

``make bench`` runs it (or: ``.venv/bin/python benchmarks/queues.py [--quick]``). On a
SQLite file and on a throwaway PostgreSQL cluster (as the tests start one:
``tests/_postgres.py``; or ``--url``/``$CALLBOARD_TEST_POSTGRES``), for each case:

- a client runtime (``role="client"``) starts ``--runs`` runs of a 3-step workflow,
  which wait in the store;
- then a worker runtime in this process (``role="worker"``,
  ``max_concurrent_runs=--concurrency``) registers the workflow, and the time runs
  from then to the last run's ``success``.

Cases: **no queue** (the floor, measured in the same run), no queue with the
worker's ``max_concurrent_runs=10`` (the same parallelism as the next case, by the
worker's own bound), a queue of **concurrency 10**, and a queue of **100 keys**
with ``key_concurrency=1`` (each run's key is its number modulo 100). The table
prints runs/s and the ratio to the floor: what the limits cost (claims count the
queue's runs in their transaction, and a limited claim takes fewer runs at a
time); for concurrency 10 also beside "10 at once", which parts the cost of the
bookkeeping from that of running ten runs at a time. Each figure is the median of
``--rounds`` (3) measurements, the cases interleaved. It asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydantic import BaseModel  # noqa: E402

from runtime import Queue, Runtime, create_step, create_workflow  # noqa: E402


class Number(BaseModel):
    n: int


def _add(ctx: Any) -> Number:
    return Number(n=ctx.input_data.n + 1)


def workflow(queue: Queue | None) -> Any:
    """Three steps, each adding one: the run's work is the runtime's, not the steps'."""
    return (
        create_workflow(id="w7", input_schema=Number, output_schema=Number, queue=queue)
        .then(create_step(id="one", input_schema=Number, output_schema=Number, execute=_add))
        .then(create_step(id="two", input_schema=Number, output_schema=Number, execute=_add))
        .then(create_step(id="three", input_schema=Number, output_schema=Number, execute=_add))
        .commit()
    )


CASES: list[tuple[str, Queue | None, int | None]] = [
    ("no queue (floor)", None, None),
    ("no queue, 10 at once", None, 10),
    ("concurrency 10", Queue("w7-ten", concurrency=10), None),
    ("100 keys, 1 each", Queue("w7-keys", key=lambda n: f"k{n.n % 100}", key_concurrency=1), None),
]
"""Each case: its name, its queue, and the worker's ``max_concurrent_runs`` if not the default."""


def rate(store: Any, queue: Queue | None, runs: int, concurrency: int) -> float:
    """Runs/s of ``runs`` queued runs through one worker runtime, from register to the last end."""
    wf = workflow(queue)
    with Runtime(store=store(), role="client") as client:
        bound = client.register(wf)
        for n in range(runs):
            bound.create_run().start_async(input_data={"n": n})
        with Runtime(store=store(), role="worker", max_concurrent_runs=concurrency) as worker:
            started = time.perf_counter()
            worker.register(wf)
            reader = client.store
            assert reader is not None
            deadline = started + 600
            while reader.list_runs(status="success", limit=1)[1] < runs:
                if time.perf_counter() > deadline:
                    raise RuntimeError("W7: the runs did not end within 600 s")
                time.sleep(0.005)
            return runs / (time.perf_counter() - started)


def table(name: str, store_for: Any, runs: int, concurrency: int, rounds: int) -> None:
    """One store's table: each case ``rounds`` times, interleaved, and its median."""
    print(f"W7 · {name} · runs={runs} · worker max_concurrent_runs={concurrency} · rounds={rounds}")
    header = f"{'case':<20} | {'runs/s':>9} | {'vs floor':>8} | {'vs 10 at once':>13}"
    print(header)
    print("-" * len(header))
    samples: dict[str, list[float]] = {case: [] for case, _, _ in CASES}
    for round_ in range(rounds):
        # Each round starts with another case: no case always pays for a cold start.
        order = CASES[round_ % len(CASES) :] + CASES[: round_ % len(CASES)]
        for case, queue, capacity in order:
            samples[case].append(rate(store_for(), queue, runs, capacity or concurrency))
    measured = {case: statistics.median(values) for case, values in samples.items()}
    floor, same = measured[CASES[0][0]], measured[CASES[1][0]]
    for case, _, _ in CASES:
        beside = f"{measured[case] / same:>12.2f}x" if case == "concurrency 10" else ""
        print(
            f"{case:<20} | {measured[case]:>9,.0f} | {measured[case] / floor:>7.2f}x | {beside:>13}"
        )
    print()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--url", default=os.environ.get("CALLBOARD_TEST_POSTGRES"))
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="medians of this many runs")
    parser.add_argument("--quick", action="store_true", help="200 runs: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.rounds = 200, 1
    print(f"{os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as folder:
        count = iter(range(1000))

        def sqlite_store() -> Any:
            path = Path(folder) / f"w7-{next(count)}.db"
            return lambda: str(path)

        table("SQLite", sqlite_store, args.runs, args.concurrency, args.rounds)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        print("W7 on PostgreSQL skipped: psycopg is not installed")
        return 0
    from tests._postgres import Server, bindir

    server = Server()
    if args.url:
        server.external = args.url
    elif bindir() is None:
        print("W7 on PostgreSQL skipped: no PostgreSQL server binaries on this machine")
        return 0
    else:
        server.create()
    urls: list[str] = []
    try:

        def postgres_store() -> Any:
            url = server.new_database()
            urls.append(url)
            return lambda: url

        table(
            "PostgreSQL" + ("" if args.url else " (throwaway cluster, fsync off)"),
            postgres_store,
            args.runs,
            args.concurrency,
            args.rounds,
        )
    finally:
        for url in urls:
            server.drop_database(url)
        server.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
