"""Event-loop lag while an async app starts 200 runs at once and polls them, on SQLite.

Run it with ``.venv/bin/python benchmarks/loop_lag.py`` (``--runs N`` to change
the count, ``--waves W`` for how many times over, ``--repeat K`` to take the
median of K rounds). A ticker on the
application's loop asks to wake every 10 ms and records how late it woke: the
loop's lag, which every other request on the loop also suffers. Meanwhile
``--runs`` client coroutines each start one run and poll its result every
10 ms until it ends, through:

- ``no-op``: each call is ``await asyncio.sleep(0)`` (the runtime runs, idle):
  the floor of what the loop itself costs;
- ``sync``: callboard's sync calls, ``run.start_async(...)`` and
  ``wf.get_workflow_run_execution_result(run_id)``, called on the loop (what an
  async app had to do before the ``a`` twins);
- ``async``: the awaitable twins, ``await run.astart_async(...)`` and
  ``await wf.aget_workflow_run_execution_result(run_id)``;
- ``client``: the same twins on a ``Runtime(role="client")``, while a
  ``callboard worker`` process on the same SQLite file runs the runs: the
  application's process then only starts and reads, and its loop shares the
  GIL with no step.

The workflow is a sync step and an async step that sleeps 20 ms. Each mode gets
a fresh SQLite file and runtime. The script prints a table of the ticker's lag
(p50, p99, max) and the wall time; it asserts no speed.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from runtime import Runtime, create_step, create_workflow

Mode = Literal["no-op", "sync", "async", "client"]
MODES: tuple[Mode, ...] = ("no-op", "sync", "async", "client")
TICK = 0.010
POLL = 0.010


class Item(BaseModel):
    n: int


def _double(ctx: Any) -> Item:
    return Item(n=ctx.input_data.n * 2)


async def _wait_a_little(ctx: Any) -> Item:
    await asyncio.sleep(0.02)
    return ctx.input_data


WORKFLOW = (
    create_workflow(id="lag", input_schema=Item, output_schema=Item)
    .then(create_step(id="double", input_schema=Item, output_schema=Item, execute=_double))
    .then(create_step(id="wait", input_schema=Item, output_schema=Item, execute=_wait_a_little))
    .commit()
)


@dataclass
class Lag:
    mode: Mode
    runs: int
    ticks: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    wall_s: float


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _ticker(lags: list[float], done: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    due = loop.time() + TICK
    while not done.is_set():
        await asyncio.sleep(max(0.0, due - loop.time()))
        now = loop.time()
        lags.append(now - due)
        due = now + TICK  # a long stall counts once, not as many missed ticks


async def _wave(mode: Mode, wf: Any, runs: int) -> None:
    if mode == "no-op":
        await asyncio.gather(*(_noop_client() for _ in range(runs)))
        return
    client: Callable[[Any, int], Awaitable[None]] = (
        _sync_client if mode == "sync" else _async_client
    )
    await asyncio.gather(*(client(wf, n) for n in range(runs)))


async def _noop_client() -> None:
    await asyncio.sleep(0)
    for _ in range(5):  # about as many polls as a run takes
        await asyncio.sleep(0)
        await asyncio.sleep(POLL)


async def _sync_client(wf: Any, n: int) -> None:
    started = wf.create_run().start_async(input_data={"n": n})
    while True:
        result = wf.get_workflow_run_execution_result(started.run_id)
        if result.is_terminal:
            assert result.status == "success", result.error
            return
        await asyncio.sleep(POLL)


async def _async_client(wf: Any, n: int) -> None:
    started = await wf.create_run().astart_async(input_data={"n": n})
    while True:
        result = await wf.aget_workflow_run_execution_result(started.run_id)
        if result.is_terminal:
            assert result.status == "success", result.error
            return
        await asyncio.sleep(POLL)


def _start_worker(store: Path) -> subprocess.Popen[bytes]:
    """A ``callboard worker`` process that runs this file's workflow on ``store``."""
    command = [sys.executable, "-m", "runtime", "worker", f"{Path(__file__).resolve()}:WORKFLOW"]
    return subprocess.Popen([*command, "--db", str(store)], stderr=subprocess.DEVNULL)


def measure(mode: Mode, runs: int, waves: int, directory: Path) -> Lag:
    """One round: the ticker's lag while ``runs`` clients start and poll, ``waves`` times over.

    The runtime starts before the ticker counts and stops after it: only the
    calls are measured.
    """

    async def main() -> Lag:
        lags: list[float] = []
        done = asyncio.Event()
        store = directory / f"{mode}-{time.monotonic_ns()}.db"
        role: Any = "client" if mode == "client" else "both"
        worker: subprocess.Popen[bytes] | None = None
        async with Runtime(store=str(store), role=role) as rt:
            wf = rt.register(WORKFLOW)
            if mode == "client":
                worker = _start_worker(store)
                # Returns once the worker has taken a run: it is up.
                await wf.create_run().astart(input_data={"n": 0}, timeout=60)
            ticker = asyncio.ensure_future(_ticker(lags, done))
            await asyncio.sleep(5 * TICK)  # the ticker settles
            del lags[:]
            began = time.perf_counter()
            try:
                for _ in range(waves):
                    await _wave(mode, wf, runs)
            finally:
                wall = time.perf_counter() - began
                done.set()
                await ticker
                if worker is not None:
                    worker.send_signal(signal.SIGTERM)
                    worker.wait(30)
        return Lag(
            mode=mode,
            runs=runs * waves,
            ticks=len(lags),
            p50_ms=1000 * statistics.median(lags),
            p99_ms=1000 * percentile(lags, 0.99),
            max_ms=1000 * max(lags),
            wall_s=wall,
        )

    return asyncio.run(main())


def median_of(rounds: list[Lag]) -> Lag:
    """The round with the median p99."""
    return sorted(rounds, key=lambda lag: lag.p99_ms)[len(rounds) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--waves", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rows: list[Lag] = []
    with tempfile.TemporaryDirectory(prefix="callboard-lag-") as tmp:
        for mode in MODES:
            rounds = [measure(mode, args.runs, args.waves, Path(tmp)) for _ in range(args.repeat)]
            rows.append(median_of(rounds))
    print(
        f"loop lag with a {TICK * 1000:.0f} ms ticker: {args.waves} waves of {args.runs} runs "
        f"started at once and polled every {POLL * 1000:.0f} ms on SQLite "
        f"(the median of {args.repeat} rounds by p99)"
    )
    header = ("calls", "runs", "ticks", "p50 ms", "p99 ms", "max ms", "wall s")
    print("{:<8} {:>6} {:>6} {:>8} {:>8} {:>8} {:>7}".format(*header))
    for row in rows:
        print(
            f"{row.mode:<8} {row.runs:>6} {row.ticks:>6} {row.p50_ms:>8.2f} {row.p99_ms:>8.2f} "
            f"{row.max_ms:>8.2f} {row.wall_s:>7.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
