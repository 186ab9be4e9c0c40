"""What a SQLite store holds in SQLite's own heap: compiled statements, mostly.

Run it with ``.venv/bin/python benchmarks/sqlite_heap.py`` (``--ids N`` workflows
registered one by one, ``--bursts N`` bursts of 200 runs). To measure another
checkout with the same script, put it first on the path:
``PYTHONPATH=/path/to/checkout .venv/bin/python benchmarks/sqlite_heap.py``.

Each connection keeps its last 128 compiled statements, and SQL whose text
changes with the data compiles anew for each text. Two scenarios, each on a
fresh runtime and file, read ``sqlite3_memory_used()`` (through ctypes, from the
library Python's ``sqlite3`` is linked to) and the process's RSS:

- ``ids``: workflows registered one after the other, each with a run, as a
  daemon that defines workflows at run time does. The floor is the heap after
  the first few: what should stay, if a query's text does not depend on how many
  workflows there are.
- ``bursts``: bursts of 200 runs of 3 KB inputs, each run two steps, with a
  retention policy keeping 50: batches of every size. The floor is the heap
  after the first burst.

It asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from runtime import RetentionPolicy, RunDeletedError, Runtime, create_step, create_workflow


class Text(BaseModel):
    text: str


def _library() -> Any:
    import _sqlite3  # the extension module: its library is the one loaded

    name = ctypes.util.find_library("sqlite3")
    handle = ctypes.CDLL(_sqlite3.__file__) if name is None else ctypes.CDLL(name)
    used = handle.sqlite3_memory_used
    used.restype = ctypes.c_int64
    return used


_USED = _library()


def heap_kb() -> int:
    return int(_USED()) // 1024


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


def _echo(ctx: Any) -> Text:
    return Text(text=ctx.input_data.text)


def _doubled(ctx: Any) -> Text:
    return Text(text=ctx.input_data.text * 2)


def ids(count: int, folder: Path) -> list[tuple[str, int, int]]:
    """Register ``count`` workflows one by one, a run each; the heap at a few counts."""
    rows = []
    with Runtime(store=folder / "ids.db") as rt:
        marks = {5, count // 4, count // 2, count}
        for number in range(1, count + 1):
            step = create_step(id="s", input_schema=Text, output_schema=Text, execute=_echo)
            workflow = (
                create_workflow(id=f"wf-{number}", input_schema=Text, output_schema=Text)
                .then(step)
                .commit()
            )
            rt.register(workflow).create_run().start(input_data={"text": "a"}, timeout=60)
            if number in marks:
                time.sleep(0.3)  # the claimer's and the waker's next passes
                rows.append((f"{number} workflows", heap_kb(), rss_kb()))
    return rows


def bursts(count: int, folder: Path) -> list[tuple[str, int, int]]:
    """``count`` bursts of 200 runs; the heap after a few of them."""
    rows = []
    workflow = (
        create_workflow(id="burst", input_schema=Text, output_schema=Text)
        .then(create_step(id="a", input_schema=Text, output_schema=Text, execute=_echo))
        .then(create_step(id="b", input_schema=Text, output_schema=Text, execute=_doubled))
        .commit()
    )
    retention = RetentionPolicy(max_runs=50, interval=0.2)
    with Runtime(store=folder / "bursts.db", retention=retention) as rt:
        bound = rt.register(workflow)
        marks = {1, count // 2, count}
        for number in range(1, count + 1):
            runs = [bound.create_run() for _ in range(200)]
            for run in runs:
                run.start_async(input_data={"text": "x" * 3000})
            for run in runs:
                with contextlib.suppress(RunDeletedError):  # ended, and pruned already
                    run.wait(timeout=60)
            if number in marks:
                rows.append((f"after burst {number}", heap_kb(), rss_kb()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ids", type=int, default=1000, help="workflows registered")
    parser.add_argument("--bursts", type=int, default=12, help="bursts of 200 runs")
    options = parser.parse_args()
    print(f"SQLite {__import__('sqlite3').sqlite_version}, Python {sys.version.split()[0]}")
    print(f"{'scenario':<8} | {'when':<20} | {'SQLite heap':>12} | {'x floor':>7} | {'RSS':>10}")
    with tempfile.TemporaryDirectory() as folder:
        for name, rows in (
            ("ids", ids(options.ids, Path(folder))),
            ("bursts", bursts(options.bursts, Path(folder))),
        ):
            floor = rows[0][1] or 1
            for when, heap, rss in rows:
                print(
                    f"{name:<8} | {when:<20} | {heap:>9,} kB | {heap / floor:>6.2f}x | {rss:>7,} kB"
                )


if __name__ == "__main__":
    main()
