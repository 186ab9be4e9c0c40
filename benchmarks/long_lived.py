"""What a process that lives for months keeps of each thing it did: a leak hunt, as a table.

Run it with ``.venv/bin/python benchmarks/long_lived.py`` (about 3 minutes on 2
cores), ``--quick`` for a smoke run, ``--store memory`` or ``--store sqlite``
for one store (``--store postgresql``: on a throwaway cluster, as the tests start
one, a database for each scenario), ``--only NAME ...`` for some scenarios. To measure another
checkout of callboard with the same script, put it first on the path:
``PYTHONPATH=/path/to/checkout .venv/bin/python benchmarks/long_lived.py``.
Linux only: it counts file descriptors in ``/proc/self/fd``.

Each scenario does one thing a daemon does again and again (a run that ends,
fails, is cancelled or timed out; a watch or a stream opened and dropped
unread; a restart; a schedule made and deleted; a whole runtime started and
stopped, as a test suite does), first a few times to warm up, then ``--ops``
times. Around the second part it counts the process's threads, file
descriptors and objects the garbage collector tracks, and the memory
allocated meanwhile and still held at the end (``tracemalloc``); and it sums
the length of every container attribute of callboard's own objects, by class
and attribute, to name the one that grew most. Runs are kept by a retention
policy (``max_runs=50``), except in ``runtimes``, so a run the store keeps is
not counted as a leak: a runtime without retention keeps every run on
purpose (see the README's *Retention*).

Something that leaks grows with ``--ops``: run twice with different counts,
and a figure that stays put is a constant, not a leak. It asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from runtime import (
    RetentionPolicy,
    RunDeletedError,
    Runtime,
    create_step,
    create_workflow,
)

KEPT = 10
WARM_UP = 30


class Value(BaseModel):
    value: str


INPUT = {"value": "x"}
gate = threading.Event()  # what a held step waits for


def _echo(ctx: Any) -> Any:
    return ctx.input_data


def _fail(ctx: Any) -> Any:
    raise RuntimeError("failed on purpose")


def _slow(ctx: Any) -> Any:
    time.sleep(0.05)
    return ctx.input_data


async def _slow_async(ctx: Any) -> Any:
    await asyncio.sleep(0.05)
    return ctx.input_data


def _held(ctx: Any) -> Any:
    gate.wait(60)
    return ctx.input_data


def workflow(workflow_id: str, body: Callable[[Any], Any], **step: Any) -> Any:
    """One step running ``body``, with the step options ``step`` (a ``timeout``)."""
    return (
        create_workflow(id=workflow_id, input_schema=Value, output_schema=Value)
        .then(create_step(id="s", input_schema=Value, output_schema=Value, execute=body, **step))
        .commit()
    )


# --- the scenarios: each does its thing ``count`` times on a started runtime ---------


def ends(rt: Runtime, count: int) -> None:
    wf = rt.register(workflow("ends", _echo))
    for _ in range(count):
        wf.create_run().start(input_data=INPUT)


def fails(rt: Runtime, count: int) -> None:
    wf = rt.register(workflow("fails", _fail))
    for _ in range(count):
        wf.create_run().start(input_data=INPUT)


def cancels(rt: Runtime, count: int) -> None:
    wf = rt.register(workflow("cancels", _slow))
    for _ in range(count):
        run = wf.create_run()
        run.start_async(input_data=INPUT)
        run.cancel()
        with contextlib.suppress(RunDeletedError):
            run.wait(10)


def times_out(rt: Runtime, count: int) -> None:
    sync = rt.register(workflow("times-out", _slow, timeout=0.005))
    asynchronous = rt.register(workflow("times-out-async", _slow_async, timeout=0.005))
    for index in range(count):
        (sync if index % 2 else asynchronous).create_run().start(input_data=INPUT)


def watches_dropped(rt: Runtime, count: int) -> None:
    # A watch and a stream of a run asleep, each read once and dropped unclosed.
    wf = rt.register(
        create_workflow(id="watched", input_schema=Value, output_schema=Value)
        .sleep(0.05)
        .then(create_step(id="s", input_schema=Value, output_schema=Value, execute=_echo))
        .commit()
    )
    runs = []
    for _ in range(count):
        run = wf.create_run()
        run.start_async(input_data=INPUT)
        next(iter(run.watch(timeout=10)))
        next(iter(run.stream(timeout=10)))
        runs.append(run)
    for run in runs:
        with contextlib.suppress(RunDeletedError):
            run.wait(10)


def restarts(rt: Runtime, count: int) -> None:
    run = rt.register(workflow("restarts", _fail)).create_run()
    run.start(input_data=INPUT)
    for _ in range(count):
        run.restart(timeout=10)


def schedules(rt: Runtime, count: int) -> None:
    wf = rt.register(workflow("scheduled", _echo))
    for index in range(count):
        rt.schedule(wf, cron="0 0 1 1 *", schedule_id=f"s{index}", input_data=INPUT)
        rt.delete_schedule(f"s{index}")


def idempotent(rt: Runtime, count: int) -> None:
    wf = rt.register(workflow("idempotent", _echo))
    for _ in range(count):
        key = os.urandom(8).hex()
        wf.create_run().start(input_data=INPUT, idempotency_key=key)


def let_go_waiting(rt: Runtime, count: int) -> None:
    # The one step thread is held by a body that does not return (till the scenario
    # ends); the runs queued behind it are cancelled, as a daemon whose dependency
    # hangs cancels them. The first call's blocker holds the thread, later ones queue.
    wf = rt.register(workflow("let-go", _held))
    wf.create_run().start_async(input_data=INPUT)
    for _ in range(count):
        run = wf.create_run()
        run.start_async(input_data=INPUT)
        time.sleep(0.001)
        run.cancel()


SCENARIOS: dict[str, tuple[Callable[[Runtime, int], None], dict[str, Any]]] = {
    "ends": (ends, {}),
    "fails": (fails, {}),
    "cancels": (cancels, {}),
    "times-out": (times_out, {}),
    "watches-dropped": (watches_dropped, {}),
    "restarts": (restarts, {}),
    "schedules": (schedules, {}),
    "idempotency-keys": (idempotent, {}),
    "let-go-waiting": (let_go_waiting, {"max_step_threads": 1}),
}
ALL = [*SCENARIOS, "runtimes"]


# --- counting -----------------------------------------------------------------------


def own_containers() -> collections.Counter[str]:
    """The summed length of each container attribute of callboard's objects, by class.attr."""
    gc.collect()
    sizes: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        cls = type(obj)
        module = cls.__dict__.get("__module__")
        if not isinstance(module, str) or not module.startswith(("actors", "runtime")):
            continue
        attributes = dict(getattr(obj, "__dict__", None) or {})
        for slot in getattr(cls, "__slots__", ()) or ():
            if isinstance(slot, str) and hasattr(obj, slot):
                attributes[slot] = getattr(obj, slot)
        for name, value in attributes.items():
            if isinstance(value, (dict, list, set, collections.deque)):
                sizes[f"{cls.__qualname__}.{name}"] += len(value)
        sizes[f"{cls.__qualname__} objects"] += 1
    return sizes


@dataclass
class Census:
    threads: int
    fds: int
    objects: int
    traced: int
    containers: collections.Counter[str]

    @classmethod
    def now(cls) -> Census:
        containers = own_containers()  # collects first
        return cls(
            threads=threading.active_count(),
            fds=len(os.listdir("/proc/self/fd")),
            objects=len(gc.get_objects()),
            traced=tracemalloc.get_traced_memory()[0],
            containers=containers,
        )


@dataclass
class Row:
    scenario: str
    store: str
    ops: int
    before: Census
    middle: Census
    after: Census
    wall: float = 0.0

    def most_grown(self) -> str:
        grown = self.after.containers - self.middle.containers
        if not grown:
            return "-"
        name, by = grown.most_common(1)[0]
        return f"{name} +{by}"


def measured(
    scenario: str, store: str, ops: int, rows: list[Row], do: Callable[[int], None]
) -> None:
    """Do ``ops`` times what ``do(count)`` does, in two halves, counting around each."""
    first = ops // 2
    time.sleep(0.3)  # what the warm-up left settles (retention passes, idle actors)
    tracemalloc.start()
    try:
        before = Census.now()
        do(first)
        time.sleep(0.3)
        middle = Census.now()
        do(ops - first)
        time.sleep(0.3)
        rows.append(Row(scenario, store, ops, before, middle, Census.now()))
    finally:
        tracemalloc.stop()


_server: Any = None
"""The throwaway PostgreSQL cluster of ``--store postgresql`` (made on first use)."""


def store_for(store: str, folder: Path, name: str) -> Any:
    if store == "memory":
        return "memory"
    if store == "sqlite":
        return folder / f"{name}.db"
    global _server  # noqa: PLW0603 - one cluster for the whole table
    if _server is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests._postgres import script_server

        _server = script_server()
        if _server is None:
            raise SystemExit("--store postgresql needs psycopg and PostgreSQL's server binaries")
    return _server.new_database()  # a database a scenario (or a runtime) of its own


def run_scenario(name: str, store: str, ops: int, folder: Path, rows: list[Row]) -> None:
    if name == "runtimes":
        made = iter(range(10**9))

        def cycles(count: int) -> None:
            for _ in range(count):
                location = store_for(store, folder, f"runtime-{next(made)}")
                with Runtime(store=location) as rt:
                    ends(rt, 2)

        cycles(WARM_UP // 3)
        measured(name, store, ops, rows, cycles)
        return
    body, options = SCENARIOS[name]
    retention = RetentionPolicy(max_runs=KEPT, interval=0.05)
    gate.clear()
    with Runtime(store=store_for(store, folder, name), retention=retention, **options) as rt:
        try:
            body(rt, WARM_UP)
            measured(name, store, ops, rows, lambda count: body(rt, count))
        finally:
            gate.set()  # held steps end: the runtime stops without waiting for them


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'scenario':17} | {'store':10} | {'ops':>5} | {'held KB 1st':>11} | "
        f"{'threads':>7} | {'fds':>4} | {'objects':>7} | {'held KB':>8} | {'B/op':>6} | "
        f"{'wall':>6} | grew most (callboard's own containers)"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        first = row.middle.traced - row.before.traced
        held = row.after.traced - row.middle.traced
        second = row.ops - row.ops // 2
        print(
            f"{row.scenario:17} | {row.store:10} | {row.ops:5} | {first / 1024:+11.1f} | "
            f"{row.after.threads - row.middle.threads:+7d} | "
            f"{row.after.fds - row.middle.fds:+4d} | "
            f"{row.after.objects - row.middle.objects:+7d} | {held / 1024:+8.1f} | "
            f"{held / second:+6.0f} | {row.wall:5.1f}s | {row.most_grown()}"
        )
    print(
        "\nheld KB 1st: memory allocated in the first half of the ops and still held (caches "
        "filling up count here); the other columns are the second half's: a figure there "
        "that grows with --ops is a leak"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 40 ops a scenario")
    parser.add_argument("--ops", type=int, default=300, help="times each scenario is done")
    parser.add_argument(
        "--store", nargs="*", choices=["memory", "sqlite", "postgresql"], default=None
    )
    parser.add_argument("--only", nargs="*", choices=ALL, default=None)
    args = parser.parse_args(argv)
    ops = 40 if args.quick else args.ops
    stores = args.store or ["memory", "sqlite"]
    names = args.only or ALL
    print(
        f"callboard long-lived · {os.cpu_count()} cores · Python {sys.version.split()[0]} · "
        f"{ops} ops a scenario after {WARM_UP} to warm up · retention max_runs={KEPT} · "
        "counted around each half of the ops"
    )
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            for name in names:
                for store in stores:
                    began = time.perf_counter()
                    run_scenario(name, store, ops, Path(folder), rows)
                    rows[-1].wall = time.perf_counter() - began
    finally:
        if _server is not None:
            _server.destroy()
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
