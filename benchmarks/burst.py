"""The backpressure issue's burst: 50,000 ``start_async`` against steps of 5 ms.

Run it with ``.venv/bin/python benchmarks/burst.py`` (about 2 minutes on 2 cores),
or ``--quick`` for 5,000 runs (about 15 s). Each scenario runs in a fresh Python
process, so that one scenario's threads and heap do not colour the next, and
reports the peak OS thread count, the peak RSS (absolute, and over the baseline
taken just before the first start), the wall time from the first start to the
last run's end, and how long the starts alone took. The scenarios, with a sync
step (``time.sleep(0.005)``) and an async one (``await asyncio.sleep(0.005)``):

- ``bounded``: ``Runtime()``, whose step pool has ``DEFAULT_MAX_STEP_THREADS`` threads.
- ``before``: ``Runtime(max_step_threads=4096)``, the pool's limit when the issue
  was filed: effectively unbounded (the pool grows by today's rule).
- ``paced`` (sync only): ``Runtime(max_concurrent_runs=<the bound>,
  max_pending_runs=1000)``; a start refused with ``RuntimeOverloadedError`` is
  retried a millisecond later (the same ``Run``): backpressure reaching the
  caller instead of a queue that grows.
- ``floor``: the same 50,000 sleeps without callboard: a ``ThreadPoolExecutor``
  with as many workers as the bound (sync), or 50,000 tasks on one ``asyncio``
  loop (async).

The workflow is one step that sleeps and returns its input. Every run must succeed;
a scenario that loses one fails the script. It prints a table and asserts no speed.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from bench import Sampler, clean_slate
from pydantic import BaseModel

from runtime import Runtime, RuntimeOverloadedError, create_step, create_workflow
from runtime._runtime import DEFAULT_MAX_STEP_THREADS

STEP_S = 0.005
FULL_RUNS = 50_000
QUICK_RUNS = 5_000
UNBOUNDED = 4096
PENDING = 1_000
MB = 1024 * 1024
CHILD_TIMEOUT_S = 300


class Value(BaseModel):
    value: str


@dataclass(frozen=True)
class Result:
    scenario: str
    kind: str
    threads_bound: str
    starts_s: float | None
    wall_s: float
    peak_threads: int
    rss_peak_mb: float
    rss_over_baseline_mb: float
    failed: int
    refused: int


# --- in the child process ---------------------------------------------------------------


def sync_sleep(ctx: Any) -> Value:
    time.sleep(STEP_S)
    return ctx.input_data  # type: ignore[no-any-return]


async def async_sleep(ctx: Any) -> Value:
    await asyncio.sleep(STEP_S)
    return ctx.input_data  # type: ignore[no-any-return]


def callboard(
    kind: str, runs: int, bound: int, paced: bool = False
) -> tuple[float | None, float, int, int, Sampler]:
    """Start ``runs`` runs back to back and wait for them all.

    ``paced``: on ``Runtime(max_concurrent_runs=bound, max_pending_runs=PENDING)``, a
    start refused with ``RuntimeOverloadedError`` is retried (the same run) after a
    millisecond; returns how many starts were refused.
    """
    body = sync_sleep if kind == "sync" else async_sleep
    step = create_step(id="sleep", input_schema=Value, output_schema=Value, execute=body)
    workflow = create_workflow(id="burst", input_schema=Value, output_schema=Value).then(step)
    options: dict[str, Any] = {"max_step_threads": bound}
    if paced:
        options |= {"max_concurrent_runs": bound, "max_pending_runs": PENDING}
    refused = 0
    with Runtime(**options) as runtime:
        bound_workflow = runtime.register(workflow.commit())
        created = [bound_workflow.create_run() for _ in range(runs)]
        clean_slate()
        with Sampler() as sampler:
            began = time.perf_counter()
            for run in created:
                while True:
                    try:
                        run.start_async(input_data={"value": "burst"})
                        break
                    except RuntimeOverloadedError:
                        refused += 1
                        time.sleep(0.001)
            started = time.perf_counter()
            failed = sum(run.wait().status != "success" for run in created)
            ended = time.perf_counter()
    return started - began, ended - began, failed, refused, sampler


def thread_pool_floor(runs: int, workers: int) -> tuple[float | None, float, int, int, Sampler]:
    clean_slate()
    with Sampler() as sampler:
        began = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(time.sleep, STEP_S) for _ in range(runs)]
            started = time.perf_counter()
            concurrent.futures.wait(futures)
        ended = time.perf_counter()
    return started - began, ended - began, 0, 0, sampler


def asyncio_floor(runs: int) -> tuple[float | None, float, int, int, Sampler]:
    async def all_sleeps() -> None:
        await asyncio.gather(*(asyncio.sleep(STEP_S) for _ in range(runs)))

    clean_slate()
    with Sampler() as sampler:
        began = time.perf_counter()
        asyncio.run(all_sleeps())
        ended = time.perf_counter()
    return None, ended - began, 0, 0, sampler


def child(scenario: str, kind: str, runs: int) -> Result:
    bound = DEFAULT_MAX_STEP_THREADS
    if scenario == "floor":
        threads_bound = f"{bound} workers" if kind == "sync" else "1 loop"
        measured = thread_pool_floor(runs, bound) if kind == "sync" else asyncio_floor(runs)
    else:
        limit = UNBOUNDED if scenario == "before" else bound
        threads_bound = str(limit)
        measured = callboard(kind, runs, limit, paced=scenario == "paced")
    starts, wall, failed, refused, sampler = measured
    return Result(
        scenario=scenario,
        kind=kind,
        threads_bound=threads_bound,
        starts_s=starts,
        wall_s=wall,
        peak_threads=sampler.peak_threads,
        rss_peak_mb=sampler.peak_rss / MB,
        rss_over_baseline_mb=(sampler.peak_rss - sampler.baseline_rss) / MB,
        failed=failed,
        refused=refused,
    )


# --- in the parent ----------------------------------------------------------------------

SCENARIOS = [
    ("bounded", "sync"),
    ("before", "sync"),
    ("paced", "sync"),  # pacing does not depend on the kind of step: sync only, to save time
    ("floor", "sync"),
    ("bounded", "async"),
    ("before", "async"),
    ("floor", "async"),
]


def run_child(scenario: str, kind: str, runs: int) -> Result:
    command = [sys.executable, __file__, "--child", scenario, kind, str(runs)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{scenario} {kind} failed:\n{done.stderr}")
    return Result(**json.loads(done.stdout.strip().splitlines()[-1]))


def print_table(results: list[Result]) -> None:
    header = (
        "step  | scenario | threads bound | starts   | wall, first start to last end | "
        "peak threads | peak RSS  | RSS over baseline | starts refused | runs failed"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        starts = "-" if r.starts_s is None else f"{r.starts_s:6.2f} s"
        print(
            f"{r.kind:<5} | {r.scenario:<8} | {r.threads_bound:>13} | {starts:>8} | "
            f"{r.wall_s:27.2f} s | {r.peak_threads:12d} | {r.rss_peak_mb:6.0f} MB | "
            f"{r.rss_over_baseline_mb:14.0f} MB | {r.refused:14d} | {r.failed:11d}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RUNS} runs, not {FULL_RUNS}")
    parser.add_argument("--child", nargs=3, metavar=("SCENARIO", "KIND", "RUNS"), help="internal")
    args = parser.parse_args()
    if args.child:
        scenario, kind, runs = args.child
        print(json.dumps(asdict(child(scenario, kind, int(runs)))))
        return 0

    runs = QUICK_RUNS if args.quick else FULL_RUNS
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(
        f"callboard burst{' --quick' if args.quick else ''} · {runs} start_async, one step of "
        f"{STEP_S * 1000:.0f} ms each · {os.cpu_count()} cores ({affinity} usable) · "
        f"{platform.python_implementation()} {platform.python_version()} · "
        f"DEFAULT_MAX_STEP_THREADS={DEFAULT_MAX_STEP_THREADS} · each scenario in a fresh process",
        flush=True,
    )
    began = time.perf_counter()
    results = []
    for scenario, kind in SCENARIOS:
        results.append(run_child(scenario, kind, runs))
        print(f"  {kind} {scenario}: {results[-1].wall_s:.1f} s", file=sys.stderr, flush=True)
    print()
    print_table(results)
    print(f"\ntook {time.perf_counter() - began:.0f} s")
    lost = sum(r.failed for r in results)
    if lost:
        print(f"{lost} runs did not succeed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
