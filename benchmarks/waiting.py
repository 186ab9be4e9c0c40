"""Waiting on runs that other processes drive: what it costs a process that only waits.

Run it with ``.venv/bin/python benchmarks/waiting.py`` (``--runs 1000,5000`` for
how many runs are waited on at once, ``--pad BYTES`` for the size of each run's
input, ``--seconds S`` for how long each is measured, ``--store sqlite`` or
``postgres`` for one store only, ``--quick``).

A web process (``role="client"``) that awaits many runs that workers drive, or an
SSE endpoint that watches them, learns what happens to them from the shared
store: a thread of the runtime reads those runs every 0.1 s. This measures that
thread's cost while nothing happens: a client starts ``--runs`` runs into a
shared store where no worker takes them (so they stay ``pending``, each with an
input of ``--pad`` bytes), awaits every one with ``wait_async()``, lets the waits
settle, and reads the process's CPU time over ``--seconds`` seconds, as a share
of one core.

Two figures from the same process, with the waits gone, set it beside what a
poller must spend: the floor reads the runs' seqs (``store.seqs``, a few bytes a
run: how a poller learns that nothing changed) once per interval; "whole
records" loads the runs' full records (``store.load_many``) once per interval,
as the watcher did before it read seqs first. SQLite always; PostgreSQL where
its server binaries are (a throwaway cluster, as in the tests). It asserts no
speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors._watcher import WATCH_INTERVAL
from runtime import Runtime, create_step, create_workflow
from tests._postgres import script_server


class Value(BaseModel):
    value: str


WORKFLOW = (
    create_workflow(id="waited-on", input_schema=Value, output_schema=Value)
    .then(
        create_step(
            id="pass", input_schema=Value, output_schema=Value, execute=lambda ctx: ctx.input_data
        )
    )
    .commit()
)


def share_of_a_core(seconds: float, work: Callable[[], None] | None = None) -> float:
    """The process's CPU over ``seconds`` as a share of one core; ``work`` every interval."""
    cpu, wall = time.process_time(), time.monotonic()
    end = wall + seconds
    while time.monotonic() < end:
        if work is not None:
            work()
        time.sleep(max(0.0, min(WATCH_INTERVAL, end - time.monotonic())))
    return (time.process_time() - cpu) / (time.monotonic() - wall)


def settle(seconds: float, window: float = 1.0) -> None:
    """Wait until the process's CPU stops falling (the waits set up), at most ``seconds``."""
    deadline = time.monotonic() + seconds
    last = share_of_a_core(window)
    while time.monotonic() < deadline:
        now = share_of_a_core(window)
        if now >= last * 0.8:
            return
        last = now


def one_store(location: str, runs: int, pad: int, seconds: float) -> tuple[float, float, float]:
    """Waiting CPU, the seqs floor and whole records, as shares of a core, for one store."""
    with Runtime(store=location, role="client") as client:
        workflow = client.register(WORKFLOW)
        handles = [workflow.create_run() for _ in range(runs)]
        for handle in handles:
            handle.start_async(input_data={"value": "x" * pad})
        settle(10.0, min(1.0, seconds / 2))
        idle = share_of_a_core(seconds / 2)  # the runtime's own upkeep, nobody waiting

        def measure() -> float:
            settle(30.0, min(1.0, seconds / 2))
            return share_of_a_core(seconds)

        async def waiting_on_all() -> float:
            waits = [asyncio.ensure_future(handle.wait_async()) for handle in handles]
            try:
                return await asyncio.to_thread(measure)  # the loop stays free for the waits
            finally:
                for wait in waits:
                    wait.cancel()
                await asyncio.gather(*waits, return_exceptions=True)

        waiting = asyncio.run(waiting_on_all())
        store: Any = client.store
        ids = [handle.run_id for handle in handles]
        time.sleep(2 * WATCH_INTERVAL)  # the watcher lets go of the runs nobody waits on
        floor = share_of_a_core(seconds, lambda: store.seqs(ids)) - idle
        records = share_of_a_core(seconds, lambda: store.load_many(ids)) - idle
    return waiting - idle, floor, records


@contextmanager
def locations(names: tuple[str, ...]) -> Iterator[Iterator[tuple[str, Callable[[], str]]]]:
    """Yields ``(name, fresh location)`` for each store of ``names`` that can run here."""
    folder = tempfile.mkdtemp(prefix="callboard-waiting-")
    numbers = iter(range(1_000_000))
    server = script_server() if "postgres" in names else None

    def stores() -> Iterator[tuple[str, Callable[[], str]]]:
        if "sqlite" in names:
            yield "sqlite", lambda: os.path.join(folder, f"runs-{next(numbers)}.db")
        if server is not None:
            yield "postgres", server.new_database
        elif "postgres" in names:
            print("PostgreSQL skipped: no server binaries or no psycopg here")

    try:
        yield stores()
    finally:
        if server is not None:
            server.destroy()
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="1000,5000")
    parser.add_argument("--pad", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="200 runs, 1 s each")
    args = parser.parse_args(argv)
    counts = [200] if args.quick else [int(count) for count in args.runs.split(",")]
    seconds = 1.0 if args.quick else args.seconds
    print(
        f"A client awaiting runs nobody takes ({args.pad}-byte inputs), polled every "
        f"{WATCH_INTERVAL} s: CPU as % of one core, {os.cpu_count()} cores"
    )
    header = (
        f"{'store':<9} | {'runs':>6} | {'waiting':>8} | {'seqs floor':>10} | {'ratio':>6} | "
        f"{'whole records':>13}"
    )
    print(header)
    print("-" * len(header))
    names = ("sqlite", "postgres") if args.store == "both" else (args.store,)
    with locations(names) as stores:
        for name, fresh in stores:
            for count in counts:
                waiting, floor, records = one_store(fresh(), count, args.pad, seconds)
                ratio = f"{waiting / floor:.2f}x" if floor > 0.001 else "-"
                print(
                    f"{name:<9} | {count:>6} | {100 * waiting:>7.1f}% | {100 * floor:>9.1f}% | "
                    f"{ratio:>6} | {100 * records:>12.1f}%"
                )
    print(
        "waiting: the process's CPU while it awaits every run, less its CPU with no waits; "
        "seqs floor: store.seqs() of the same runs every interval; whole records: "
        "store.load_many() of them every interval (the watcher before it read seqs first)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
