"""Which thread spends a run's CPU: W2 and W5 by thread, beside raw pykka's CPU per run.

Run it with ``.venv/bin/python benchmarks/threads.py`` (about 10 s on 2 cores),
``--quick`` for a smoke run, ``--store memory`` or ``--store sqlite`` for one
store. To measure another checkout of callboard with the same script, put it
first on the path: ``PYTHONPATH=/path/to/checkout .venv/bin/python
benchmarks/threads.py``. Linux only: it reads each thread's CPU time from
``/proc/self/task``.

Every workload in memory is bound by the interpreter lock: its threads' CPU adds
up to about one core, whichever thread spends it. So the question "where does a
run's time go" has two halves, by function (a sampling profiler, see
``README.md``) and by thread, which this script answers: for each workload, the
CPU each group of threads spent per run during the timed part (user and system
time, as the kernel counts it), their sum, the process's own total (the
difference is threads that ended meanwhile, such as step threads retired while
idle), and the wall time. The floor is the raw-pykka pipeline of
``bench.py``'s W2 (a ``ThreadingActor`` per run running three plain functions),
whose CPU per run is measured the same way in the same process.

- ``W2``: ``--runs`` 3-step runs started back to back, then waited for, after a
  warm-up burst; on a store in memory and on a new SQLite file.
- ``W5``: ``--fleet`` runs of ``.sleep(1)`` then one step, all asleep at once
  (memory only, as ``bench.py``'s W5 aim).

Thread groups: ``caller`` (the thread that starts and waits, here the main
thread), ``dispatcher`` (run actors and the supervisor), ``step pool`` (step
actors), ``store writer`` (SQLite's group-commit thread), ``registry``, ``timers``
and ``other`` (the claimer, the pool's monitor, anything else). It asserts
nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import (
    FULL,
    MEMORY,
    SQLITE,
    DatabaseFiles,
    Setup,
    clean_slate,
    fleet_workflow,
    fresh_runtime,
    noop_workflow,
    pykka_pipeline_ns,
    start_and_wait,
)

GROUPS = ("caller", "dispatcher", "step pool", "store writer", "registry", "timers", "other")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _group(name: str) -> str:
    """The group a thread's name puts it in (see the module's docstring)."""
    if name == "MainThread":
        return "caller"
    if name.startswith("callboard-dispatch"):
        return "dispatcher"
    if name.startswith("StepActor"):
        return "step pool"
    if name.endswith("-writer"):
        return "store writer"
    if name.startswith("RegistryActor"):
        return "registry"
    if "timer" in name.lower():
        return "timers"
    return "other"


def _thread_cpu() -> dict[int, float]:
    """Each live thread's CPU seconds (user and system), by native thread id."""
    found: dict[int, float] = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The fields after the command (in parentheses, which may hold spaces).
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            found[int(task.name)] = (int(fields[11]) + int(fields[12])) / _TICKS_PER_S
    return found


@dataclass(frozen=True)
class Split:
    """CPU per run by thread group during one timed stretch."""

    workload: str
    store: str
    runs: int
    wall_s: float
    process_s: float
    by_group: dict[str, float]  # CPU seconds in all

    def per_run_us(self, seconds: float) -> float:
        return seconds / self.runs * 1e6


@contextlib.contextmanager
def measured(workload: str, store: str, runs: int, splits: list[Split]) -> Iterator[None]:
    """Time the block and split the CPU its threads spent by group; append a ``Split``."""
    names: dict[int, str] = {}

    def note_names() -> None:
        for thread in threading.enumerate():
            if thread.native_id is not None:
                names[thread.native_id] = thread.name

    note_names()
    before = _thread_cpu()
    process, wall = time.process_time(), time.perf_counter()
    yield
    wall, process = time.perf_counter() - wall, time.process_time() - process
    after = _thread_cpu()
    note_names()
    by_group = dict.fromkeys(GROUPS, 0.0)
    for tid, seconds in after.items():
        by_group[_group(names.get(tid, ""))] += seconds - before.get(tid, 0.0)
    splits.append(Split(workload, store, runs, wall, process, by_group))


def _succeeded(runs: list[Any]) -> None:
    """Raise unless every run succeeded (read after the timed part: a read costs CPU)."""
    for run in runs:
        if run.wait().status != "success":
            raise RuntimeError(f"a run did not succeed: {run.run_id}")


def w2(setup: Setup, store: str, runs: int, splits: list[Split]) -> None:
    with fresh_runtime(setup, store) as runtime:
        workflow = runtime.register(noop_workflow())
        start_and_wait(workflow, max(100, runs // 4))
        with measured("W2", store, runs, splits):
            done = start_and_wait(workflow, runs)
        _succeeded(done)


def w5(setup: Setup, fleet: int, splits: list[Split]) -> None:
    with fresh_runtime(setup, MEMORY) as runtime:
        workflow = runtime.register(fleet_workflow())
        with measured("W5", MEMORY, fleet, splits):
            done = start_and_wait(workflow, fleet)
        _succeeded(done)


def floor(runs: int) -> Split:
    """The raw-pykka pipeline's split: its threads end with their runs, so read its process CPU."""
    clean_slate()
    pykka_pipeline_ns(max(100, runs // 4))
    clean_slate()
    taken: list[Split] = []
    with measured("floor", "-", runs, taken):
        pykka_pipeline_ns(runs)
    return taken[0]


def print_table(splits: list[Split], base: Split) -> None:
    base_us = base.per_run_us(base.process_s)
    header = ("workload", "store", "wall, s", *GROUPS, "threads", "process", "/ floor")
    widths = [8, 6, 8] + [max(8, len(g)) for g in GROUPS] + [8, 8, 8]

    def line(cells: tuple[str, ...]) -> str:
        return " | ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True))

    print("CPU per run, µs, by thread group (user + system time)")
    print(line(header))
    print("-+-".join("-" * width for width in widths))
    for split in splits:
        groups = tuple(f"{split.per_run_us(split.by_group[g]):.1f}" for g in GROUPS)
        threads = split.per_run_us(sum(split.by_group.values()))
        process = split.per_run_us(split.process_s)
        ratio = process / base_us
        totals = (f"{threads:.1f}", f"{process:.1f}", f"{ratio:.2f}x")
        print(line((split.workload, split.store, f"{split.wall_s:.3f}", *groups, *totals)))
    print(
        f"floor: raw pykka, a ThreadingActor per run running 3 plain functions: "
        f"{base_us:.1f} µs of CPU per run, {base.wall_s:.3f} s for {base.runs:,} runs. "
        "threads = the groups' sum; process = the process's CPU (threads that ended "
        "meanwhile count there only); W5's wall holds its 1 s sleep."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small N: a smoke run")
    parser.add_argument("--store", choices=(MEMORY, SQLITE, "all"), default="all")
    parser.add_argument("--runs", type=int, default=None, help="W2 runs per burst")
    parser.add_argument("--fleet", type=int, default=None, help="W5 runs asleep at once")
    args = parser.parse_args(argv)
    if not Path("/proc/self/task").is_dir():
        print("threads.py reads /proc/self/task: Linux only; nothing measured")
        return 0
    runs = args.runs or (300 if args.quick else 4_000)
    fleet = args.fleet or (300 if args.quick else 10_000)
    stores = (MEMORY, SQLITE) if args.store == "all" else (args.store,)
    print(
        f"callboard threads · {os.cpu_count()} cores · CPython {platform.python_version()} · "
        f"W2 runs={runs} · W5 fleet={fleet}"
    )
    base = floor(runs)
    splits: list[Split] = []
    with tempfile.TemporaryDirectory(prefix="callboard-threads-") as folder:
        setup = Setup(sizes=FULL, stores=stores, files=DatabaseFiles(Path(folder)), record=None)
        for store in stores:
            w2(setup, store, runs, splits)
        if MEMORY in stores:
            w5(setup, fleet, splits)
    print_table(splits, base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
