"""Waits arriving by the thousand: what registering them costs every other run's wait.

Run it with ``.venv/bin/python benchmarks/arriving_waits.py`` (``--waits 1000,5000``
for how many, ``--store memory|sqlite|postgres``; PostgreSQL, the default, needs the
server binaries, as the tests do, and starts a throwaway cluster).

A web service whose handlers await runs with ``wait_async()`` gets a burst of them
when its clients reconnect together (a deploy, a network blip). Each wait is taken
by the registry, one actor, which notes it and reads the run from the store (the run
may have settled between the caller's own read and the note). While it works through
them, every wait of every other run queues behind it. This starts ``--waits`` waits
of one long run at once with ``wait_async()`` and, right behind them, a quick,
unrelated run with ``start()`` on a thread of its own (not behind the waits' own
first reads on the runtime's call threads), and times both: until the registry has
taken every wait, and the quick run's start and wait. The floor is the quick run
with no wait arriving, measured in the same process first. It asserts no speed.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from given_up_waits import LONG, QUICK, RELEASE  # the same two workflows, held and quick

from runtime import Runtime


async def _taken(rt: Runtime, run_id: str, waits: int) -> None:
    """Until the registry has noted every wait of ``run_id`` and has no mail left."""
    system = rt._host.system
    assert system is not None
    registry = system.registry
    waiters = registry._actor_weakref()._waiters  # what the registry has noted
    while len(waiters.get(run_id, ())) < waits or not registry.actor_inbox.empty():
        await asyncio.sleep(0.002)


async def _measure(rt: Runtime, waits: int) -> tuple[float, float]:
    """(seconds until ``waits`` arriving waits are taken, seconds of a quick run's astart())."""
    quick = rt.register(QUICK)
    await quick.create_run().astart(input_data={"value": "warm"})
    long = rt.register(LONG).create_run()
    await long.astart_async(input_data={"value": "held"})
    # Each wait's own first read is on a call thread; the quick run goes behind them all.
    fired = time.perf_counter()
    tasks = [asyncio.ensure_future(long.wait_async(600)) for _ in range(waits)]
    taken = asyncio.ensure_future(_taken(rt, long.run_id, waits))
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(1) as own:
        began = time.perf_counter()
        result = await loop.run_in_executor(
            own, lambda: quick.create_run().start(input_data={"value": "x"})
        )
        took = time.perf_counter() - began
    assert result.status == "success", result.error
    await taken
    registered = time.perf_counter() - fired if waits else 0.0
    RELEASE.set()
    for done in await asyncio.gather(*tasks):
        assert done.status == "success"
    return registered, took


@contextlib.contextmanager
def _stores(kind: str, count: int) -> Iterator[list[Any]]:
    """``count`` fresh stores of ``kind``: paths, URLs or "memory"."""
    if kind == "memory":
        yield ["memory"] * count
        return
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield [Path(folder) / f"{index}.db" for index in range(count)]
        return
    from tests._postgres import script_server

    server = script_server()
    if server is None:
        raise SystemExit("no PostgreSQL server binaries (or psycopg) here: use --store sqlite")
    try:
        yield [server.new_database() for _ in range(count)]
    finally:
        server.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waits", default="1000,5000,10000")
    parser.add_argument("--store", choices=("memory", "sqlite", "postgres"), default="postgres")
    parser.add_argument("--quick", action="store_true", help="waits 0 and 200: a smoke run")
    args = parser.parse_args()
    counts = [0, 200] if args.quick else [0, *(int(part) for part in args.waits.split(","))]
    rows: list[tuple[int, float, float]] = []
    with _stores(args.store, len(counts)) as stores:
        for store, waits in zip(stores, counts, strict=True):
            RELEASE.clear()
            rt = Runtime(store=store, stop_timeout=1.0)

            async def run(rt: Runtime = rt, waits: int = waits) -> tuple[float, float]:
                async with rt:
                    try:
                        return await _measure(rt, waits)
                    finally:
                        RELEASE.set()

            rows.append((waits, *asyncio.run(run())))
    floor = rows[0][2]
    print(f"store: {args.store}; floor: a quick run's start() with no wait arriving")
    print(f"{'waits arriving':>15} {'all taken (s)':>14} {'quick run (s)':>14} {'x floor':>8}")
    for waits, registered, took in rows:
        print(f"{waits:>15,} {registered:>14.3f} {took:>14.4f} {took / floor:>8.1f}")


if __name__ == "__main__":
    main()
