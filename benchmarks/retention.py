"""Memory of a long-lived runtime: 200,000 runs through a memory store, with retention.

Run it with ``.venv/bin/python benchmarks/retention.py``;
``--quick`` runs 40,000. It prints a table: RSS after warm-up and at the end,
for callboard with ``RetentionPolicy(max_runs=1000)`` and without retention,
against a floor measured in the same process beforehand: a plain dict that
keeps the newest 1,000 of as many records of the same size.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Sequence

from pydantic import BaseModel

from runtime import RetentionPolicy, RunDeletedError, Runtime, create_step, create_workflow

BATCH = 10_000
KEEP = 1_000


class Value(BaseModel):
    value: str


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def floor(total: int) -> tuple[float, float]:
    """A dict keeping the newest KEEP records of ~1 KB: RSS after warm-up and at the end."""
    kept: OrderedDict[int, bytes] = OrderedDict()
    warm = 0.0
    for index in range(total):
        kept[index] = os.urandom(1000)
        if len(kept) > KEEP:
            kept.popitem(last=False)
        if index + 1 == 2 * BATCH:
            gc.collect()
            warm = rss_mb()
    gc.collect()
    return warm, rss_mb()


def callboard(total: int, retention: RetentionPolicy | None) -> tuple[float, float, int, float]:
    """RSS after warm-up (2 batches) and at the end, the runs left, and the wall time."""
    step = create_step(
        id="echo", input_schema=Value, output_schema=Value, execute=lambda c: c.input_data
    )
    workflow = (
        create_workflow(id="soak", input_schema=Value, output_schema=Value).then(step).commit()
    )
    warm = 0.0
    started = time.perf_counter()
    with Runtime(retention=retention) as rt:
        wf = rt.register(workflow)
        for batch in range(total // BATCH):
            runs = [wf.create_run() for _ in range(BATCH)]
            for run in runs:
                run.start_async(input_data={"value": "x" * 100})
            for run in runs:
                with contextlib.suppress(RunDeletedError):  # pruned already: as it should
                    run.wait(60)
            del runs
            if batch == 1:
                gc.collect()
                warm = rss_mb()
        gc.collect()
        end = rss_mb()
        store = rt.store
        left = len(store) if store is not None and hasattr(store, "__len__") else -1
    return warm, end, left, time.perf_counter() - started


def phase(name: str, total: int) -> tuple[float, float, int, float | None]:
    """One measurement in a fresh process, so that no phase's memory counts in another's."""
    done = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--total", str(total)],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    warm, end, left, wall = json.loads(done.stdout.strip().splitlines()[-1])
    return warm, end, left, wall


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="40,000 runs instead of 200,000")
    parser.add_argument("--phase", choices=["floor", "kept", "every"], help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase is not None:
        if args.phase == "floor":
            print(json.dumps([*floor(args.total), KEEP, None]))
        else:
            policy = RetentionPolicy(max_runs=KEEP, interval=0.2) if args.phase == "kept" else None
            print(json.dumps(list(callboard(args.total, policy))))
        return 0
    total = 4 * BATCH if args.quick else 20 * BATCH
    print(
        f"callboard retention · {os.cpu_count()} cores · {total:,} runs of one step, "
        f"in batches of {BATCH:,}; warm = RSS after the first {2 * BATCH:,}; each row in a "
        "fresh process"
    )
    floor_row = phase("floor", total)
    kept = phase("kept", total)
    every = phase("every", total)
    rows = [
        ("floor: dict of the newest 1,000 (1 KB each)", *floor_row),
        ("callboard, retention max_runs=1000", *kept),
        ("callboard, no retention", *every),
    ]
    print(f"{'what':44} | {'RSS warm':>9} | {'RSS end':>9} | {'growth':>8} | {'kept':>7} | wall")
    print("-" * 95)
    for name, warm, end, left, wall in rows:
        wall_text = "-" if wall is None else f"{wall:.1f} s"
        print(
            f"{name:44} | {warm:7.1f}MB | {end:7.1f}MB | {end - warm:+6.1f}MB | {left:7,} | "
            f"{wall_text}"
        )
    growth = kept[1] - kept[0]
    runs_after = total - 2 * BATCH
    print(
        f"\nwith retention, RSS grew {growth:+.1f} MB after warm-up over {runs_after:,} more runs "
        f"({growth * 1e6 / runs_after:+.0f} B/run); the floor grew "
        f"{floor_row[1] - floor_row[0]:+.1f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
