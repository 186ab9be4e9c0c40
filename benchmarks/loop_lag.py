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
- ``runs``: the same runs, started and polled with the sync calls from one
  thread beside the loop, which only ticks: the floor of sharing a process
  (its GIL, its garbage collector) with 200 runs in progress. What ``async``
  adds to it is the cost of callboard's calls on the loop;
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
(p50, p99, max, and the mean, which a single pause moves less than p99), the
wall time, and the garbage collector's full (generation 2) collections in the
round: how many and the longest, on any thread. A full collection holds the GIL,
so every thread, the loop's too, waits for it; their length grows with the
objects the process holds. ``--gc-freeze`` has each round call
:func:`gc.freeze` once the runtime has started, as an application may after
its start-up (a process-wide choice that is the application's, never
callboard's): full collections then skip what was there, and what remains of
the lag is the GIL and the machine. It asserts no speed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from runtime import Runtime, create_step, create_workflow

Mode = Literal["no-op", "runs", "sync", "async", "client"]
MODES: tuple[Mode, ...] = ("no-op", "runs", "sync", "async", "client")
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
    mean_ms: float
    wall_s: float
    full_gcs: int
    full_gc_max_ms: float


class _FullCollections:
    """Times the garbage collector's generation-2 collections, on every thread, while entered."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._began: dict[int, float] = {}

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._began[threading.get_ident()] = time.perf_counter()
        elif (began := self._began.pop(threading.get_ident(), None)) is not None:
            self.pauses.append(time.perf_counter() - began)

    def __enter__(self) -> _FullCollections:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


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
    if mode == "runs":
        await asyncio.get_running_loop().run_in_executor(None, _clients_on_a_thread, wf, runs)
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


def _clients_on_a_thread(wf: Any, runs: int) -> None:
    """Start ``runs`` runs and poll them every ``POLL`` s until they end, off the loop."""
    waiting = {wf.create_run().start_async(input_data={"n": n}).run_id for n in range(runs)}
    while waiting:
        time.sleep(POLL)
        for run_id in list(waiting):
            result = wf.get_workflow_run_execution_result(run_id)
            if result.is_terminal:
                assert result.status == "success", result.error
                waiting.discard(run_id)


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


def measure(mode: Mode, runs: int, waves: int, directory: Path, *, freeze: bool = False) -> Lag:
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
            if freeze:
                gc.collect()
                gc.freeze()
            ticker = asyncio.ensure_future(_ticker(lags, done))
            await asyncio.sleep(5 * TICK)  # the ticker settles
            del lags[:]
            began = time.perf_counter()
            try:
                with _FullCollections() as collections:
                    for _ in range(waves):
                        await _wave(mode, wf, runs)
            finally:
                wall = time.perf_counter() - began
                done.set()
                await ticker
                if worker is not None:
                    worker.send_signal(signal.SIGTERM)
                    worker.wait(30)
                if freeze:
                    gc.unfreeze()
        return Lag(
            mode=mode,
            runs=runs * waves,
            ticks=len(lags),
            p50_ms=1000 * statistics.median(lags),
            p99_ms=1000 * percentile(lags, 0.99),
            max_ms=1000 * max(lags),
            mean_ms=1000 * statistics.fmean(lags),
            wall_s=wall,
            full_gcs=len(collections.pauses),
            full_gc_max_ms=1000 * max(collections.pauses, default=0.0),
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
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated, among {', '.join(MODES)}"
    )
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() in each round")
    args = parser.parse_args(argv)
    modes = [mode for mode in MODES if mode in args.modes.split(",")]
    rounds: dict[Mode, list[Lag]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="callboard-lag-") as tmp:
        for _ in range(args.repeat):  # modes take turns, so that a burst of load hits them alike
            for mode in modes:
                rounds[mode].append(
                    measure(mode, args.runs, args.waves, Path(tmp), freeze=args.gc_freeze)
                )
    rows = [median_of(rounds[mode]) for mode in modes]
    print(
        f"loop lag with a {TICK * 1000:.0f} ms ticker: {args.waves} waves of {args.runs} runs "
        f"started at once and polled every {POLL * 1000:.0f} ms on SQLite "
        f"(the median of {args.repeat} rounds by p99{', gc.freeze()' if args.gc_freeze else ''})"
    )
    header = ("calls", "runs", "ticks", "p50 ms", "p99 ms", "max ms", "mean ms", "wall s")
    print("{:<8} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7}  full GCs".format(*header))
    for row in rows:
        print(
            f"{row.mode:<8} {row.runs:>6} {row.ticks:>6} {row.p50_ms:>8.2f} {row.p99_ms:>8.2f} "
            f"{row.max_ms:>8.2f} {row.mean_ms:>8.2f} {row.wall_s:>7.2f}  "
            f"{row.full_gcs} (longest {row.full_gc_max_ms:.0f} ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
