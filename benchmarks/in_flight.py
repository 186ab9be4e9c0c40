"""Short runs beside many long ones: what runs in flight cost the runs that come and go.

Run it with ``.venv/bin/python benchmarks/in_flight.py`` (``--held 0,1000,5000``
for the counts of long runs, ``--runs N`` short runs per round, ``--rounds K``).
To measure another checkout of callboard with the same script, put it first on
the path: ``PYTHONPATH=/path/to/checkout .venv/bin/python benchmarks/in_flight.py``.

A daemon often holds many runs that last (each waiting in an ``async def`` step
for a reply, say) while short ones come and go. Each round starts a fresh
runtime on a store in memory, starts ``--held`` runs whose one async step sleeps
for an hour, waits until they all are in their step, then starts ``--runs``
3-step runs back to back and waits for each (the W2 workload of ``bench.py``):
their throughput and the process CPU time per short run (every thread). The
floor is the same round with no run held; a cost per run that grows with the
runs in flight shows as a ratio above 1 (CPU) or below 1 (runs/s). Python's
cyclic garbage collector walks every run in flight at each full collection, so
some growth is expected; a scan of every run in flight at each run's end (as
pykka's registry did) shows as much more. It asserts no speed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from runtime import Runtime, create_step, create_workflow

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # the W2 workflow and its start-and-wait loop


class Value(BaseModel):
    value: str


async def _wait_an_hour(ctx: Any) -> Value:
    await asyncio.sleep(3600)
    return Value(value=ctx.input_data.value)


HELD = (
    create_workflow(id="held", input_schema=Value, output_schema=Value)
    .then(create_step(id="wait", input_schema=Value, output_schema=Value, execute=_wait_an_hour))
    .commit()
)


def one_round(held: int, runs: int) -> tuple[float, float]:
    """Runs/s and CPU µs per short run, beside ``held`` runs waiting in their async step."""
    runtime = Runtime().start()
    try:
        long = runtime.register(HELD)
        short = runtime.register(bench.chain_workflow(3))
        for _ in range(held):
            long.create_run().start_async(input_data={"value": "x"})
        deadline = time.monotonic() + 120
        while _running(long) < held:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {held} held runs did not all reach their step")
            time.sleep(0.05)
        bench.start_and_wait(short, 50)  # warm
        cpu, wall = time.process_time(), time.perf_counter()
        bench.start_and_wait(short, runs)
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        return runs / wall, cpu / runs * 1e6
    finally:
        runtime.stop(timeout=1)


def _running(workflow: Any) -> int:
    return int(workflow.list_workflow_runs(status="running", limit=1).total)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held", default="0,1000,5000")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    counts = [int(count) for count in args.held.split(",")]
    if 0 not in counts:
        counts.insert(0, 0)
    results: dict[int, list[tuple[float, float]]] = {count: [] for count in counts}
    for _ in range(args.rounds):  # counts take turns, so that load hits them alike
        for count in counts:
            results[count].append(one_round(count, args.runs))
    floor_rate = statistics.median(rate for rate, _ in results[0])
    floor_cpu = statistics.median(cpu for _, cpu in results[0])
    print(
        f"3-step runs on a store in memory beside runs held in an async step "
        f"({args.runs} short runs a round, the median of {args.rounds} rounds)"
    )
    print(f"{'held':>6} {'runs/s':>8} {'x floor':>8} {'CPU µs/run':>11} {'x floor':>8}")
    for count in counts:
        rate = statistics.median(rate for rate, _ in results[count])
        cpu = statistics.median(cpu for _, cpu in results[count])
        print(
            f"{count:>6} {rate:>8,.0f} {rate / floor_rate:>8.2f} {cpu:>11,.0f} "
            f"{cpu / floor_cpu:>8.2f}"
        )
    print("floor: the same short runs with no run held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
