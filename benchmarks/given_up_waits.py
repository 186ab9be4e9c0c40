"""Waits given up by the thousand: what they cost every other run's start and wait.

Run it with ``.venv/bin/python benchmarks/given_up_waits.py`` (``--waits 2000,10000``
for how many, ``--store memory`` or a SQLite path's directory with ``--store sqlite``,
the default).

Long-poll and SSE endpoints await a run with ``wait_async()``; when their clients go
away together (a deploy, a network blip), thousands of those waits are cancelled at
once. The registry, one actor, forgets each; while it works through them, every
``wait`` of every run queues behind it. This gives up ``--waits`` waits of one long
run, then times a quick, unrelated run started and awaited with ``astart()``. The
floor is the same quick run with no wait given up, measured in the same process
first. Before the registry kept each run's waiters in an ordered set (it rebuilt a
list at each wait given up, quadratic in their number), 20,000 waits made the quick
run take over 6 s on SQLite. It asserts no speed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime import Runtime, create_step, create_workflow


class Value(BaseModel):
    value: str


RELEASE = threading.Event()


def _held(ctx: Any) -> Value:
    RELEASE.wait(600)
    return ctx.input_data


LONG = (
    create_workflow(id="long", input_schema=Value, output_schema=Value)
    .then(create_step(id="held", input_schema=Value, output_schema=Value, execute=_held))
    .commit()
)
QUICK = (
    create_workflow(id="quick", input_schema=Value, output_schema=Value)
    .then(
        create_step(
            id="pass", input_schema=Value, output_schema=Value, execute=lambda ctx: ctx.input_data
        )
    )
    .commit()
)


async def _registered(rt: Runtime) -> None:
    """Until the registry has taken every wait (each reads the run from the store first).

    Its mailbox stays empty for half a second once the last wait is in.
    """
    system = rt._host.system
    assert system is not None
    inbox = system.registry.actor_inbox
    quiet = 0
    while quiet < 10:
        await asyncio.sleep(0.05)
        quiet = quiet + 1 if inbox.empty() else 0


async def _measure(rt: Runtime, waits: int) -> tuple[float, float]:
    """(seconds to give up ``waits`` waits, seconds of a quick run's start and wait after)."""
    quick = rt.register(QUICK)
    await quick.create_run().astart(input_data={"value": "warm"})
    given_up = 0.0
    if waits:
        long = rt.register(LONG).create_run()
        await long.astart_async(input_data={"value": "held"})
        tasks = [asyncio.ensure_future(long.wait_async(600)) for _ in range(waits)]
        await _registered(rt)
        began = time.perf_counter()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        given_up = time.perf_counter() - began
    began = time.perf_counter()
    result = await quick.create_run().astart(input_data={"value": "x"})
    took = time.perf_counter() - began
    assert result.status == "success", result.error
    return given_up, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waits", default="2000,10000,20000")
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    args = parser.parse_args()
    counts = [0, *(int(part) for part in args.waits.split(","))]
    rows: list[tuple[int, float, float]] = []
    with tempfile.TemporaryDirectory() as folder:
        for index, waits in enumerate(counts):
            store: Any = "memory" if args.store == "memory" else Path(folder) / f"{index}.db"
            RELEASE.clear()
            rt = Runtime(store=store, stop_timeout=1.0)

            async def run(rt: Runtime = rt, waits: int = waits) -> tuple[float, float]:
                async with rt:
                    try:
                        return await _measure(rt, waits)
                    finally:
                        RELEASE.set()

            given_up, took = asyncio.run(run())
            rows.append((waits, given_up, took))
    floor = rows[0][2]
    print(f"store: {args.store}; floor: a quick run's astart() with no wait given up")
    print(f"{'waits given up':>15} {'giving up (s)':>14} {'quick run (s)':>14} {'x floor':>8}")
    for waits, given_up, took in rows:
        print(f"{waits:>15,} {given_up:>14.3f} {took:>14.4f} {took / floor:>8.1f}")


if __name__ == "__main__":
    main()
