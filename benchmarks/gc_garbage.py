"""What callboard leaves to the cyclic garbage collector, per run, and what the collector costs.

Run it with ``.venv/bin/python benchmarks/gc_garbage.py`` (``--runs N`` per
scenario, ``--only NAME`` for some scenarios, ``--no-timing`` to skip the second
table). To measure another checkout of callboard with the same script, put it
first on the path: ``PYTHONPATH=/path/to/checkout .venv/bin/python
benchmarks/gc_garbage.py``.

Three tables:

1. **Garbage per run.** Each scenario starts a fresh runtime, warms it up, then,
   with the collector disabled and ``gc.DEBUG_SAVEALL`` set, runs ``--runs`` runs
   to their end, drops every handle on them and calls :func:`gc.collect`. What
   that collection finds is what reference counting could not free: objects in
   reference cycles and everything only they kept alive. The table shows per
   run: the objects found, the cycles (strongly connected components) among
   them, the types found most often, and the tracked objects the finished runs
   still hold (``gc.get_objects()`` after against before: what every full
   collection walks for each run the store keeps). The runtime itself is still
   up at the collection, so its own objects are not counted, except in the
   ``loop-lag`` scenario, which starts and stops one runtime, as
   ``loop_lag.py`` does.
2. **Collections.** With the collector on, as in any process: a W2-like
   workload (3-step runs started back to back, in memory and on SQLite) and
   the ``async`` round of ``loop_lag.py``; how many collections of each
   generation ran, on any thread, and their total and longest pause
   (timed with :data:`gc.callbacks`). A full (generation 2) collection holds the
   GIL while it walks every tracked object of the process.

3. **Runs kept.** One runtime on a store in memory keeps more and more ended
   runs (``--kept``): the length of a full collection with nothing to free, and
   the objects tracked, at each count. A kept run should add nothing to it.

It asserts nothing; ``tests/test_gc_garbage.py`` holds the per-run garbage at
zero.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import importlib.util
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from runtime import Runtime, StepContext, create_step, create_workflow

HERE = Path(__file__).resolve().parent


class Value(BaseModel):
    value: str


PAYLOAD = {"value": "gc"}
FAILING = ("gc-fail", "gc-fail-a", "gc-slow")
"""The workflows whose runs end ``failed``."""


def _pass(ctx: Any) -> Any:
    return ctx.input_data


async def _pass_async(ctx: Any) -> Any:
    await asyncio.sleep(0)
    return ctx.input_data


class _Refusal(ValueError):
    """An error with attributes, as an application's may have: the run's error keeps them."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
        self.hints = ["retry later", {"after_s": 5}]


def _fail(ctx: Any) -> Any:
    raise _Refusal("this step fails", 42)


async def _fail_async(ctx: Any) -> Any:
    await asyncio.sleep(0)
    raise _Refusal("this async step fails", 7)


def _fail_once(ctx: StepContext[Any]) -> Any:
    if ctx.retry_count == 0:
        raise ConnectionError("busy, try again")
    return ctx.input_data


def _ask(ctx: StepContext[Any]) -> Any:
    if ctx.resume_data is None:
        ctx.suspend({"question": "go on?"})
    return ctx.input_data


def _until_aborted(ctx: StepContext[Any]) -> Any:
    ctx.abort_signal.wait(10)
    return ctx.input_data


async def _too_slow(ctx: Any) -> Any:
    await asyncio.sleep(10)
    return ctx.input_data


def _step(name: str, execute: Callable[[Any], Any], **options: Any) -> Any:
    return create_step(id=name, input_schema=Value, output_schema=Value, execute=execute, **options)


def _workflow(name: str, *steps: Any) -> Any:
    workflow = create_workflow(id=f"gc-{name}", input_schema=Value, output_schema=Value)
    for step in steps:
        workflow.then(step)
    return workflow.commit()


def _three(name: str) -> Any:
    return _workflow(name, *(_step(n, _pass) for n in ("first", "second", "third")))


def _control_flow() -> Any:
    return (
        create_workflow(id="gc-flow", input_schema=Value, output_schema=Value)
        .parallel([_step("left", _pass), _step("right", _pass)])
        .map(lambda ctx: [PAYLOAD, PAYLOAD])
        .foreach(_step("each", _pass), concurrency=2)
        .map(lambda ctx: ctx.input_data[0])
        .sleep(0.001)
        .commit()
    )


# --- scenarios: each runs ``count`` runs to their end on ``rt`` ------------------------


def _start_and_wait(wf: Any, count: int) -> None:
    runs = [wf.create_run() for _ in range(count)]
    for run in runs:
        run.start_async(input_data=PAYLOAD)
    expected = "failed" if wf.id in FAILING else "success"
    for run in runs:
        result = run.wait(timeout=60)
        assert result.status == expected, (wf.id, result.status, result.error)


def _suspend_and_resume(wf: Any, count: int) -> None:
    runs = [wf.create_run() for _ in range(count)]
    for run in runs:
        run.start_async(input_data=PAYLOAD)
    for run in runs:
        assert run.wait(timeout=60).status == "suspended"
        assert run.resume(resume_data={}).status == "success"


def _cancel(wf: Any, count: int) -> None:
    runs = [wf.create_run() for _ in range(count)]
    for run in runs:
        run.start_async(input_data=PAYLOAD)
    for run in runs:
        run.cancel()
        assert run.wait(timeout=60).status == "canceled"


def _async_twins(wf: Any, count: int) -> None:
    async def one() -> None:
        started = await wf.create_run().astart_async(input_data=PAYLOAD)
        while not (await wf.aget_workflow_run_execution_result(started.run_id)).is_terminal:
            await asyncio.sleep(0.005)

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(count)))

    asyncio.run(main())


@dataclass(frozen=True)
class Scenario:
    name: str
    store: str  # "memory" or "sqlite"
    workflow: Callable[[], Any]
    drive: Callable[[Any, int], None] = _start_and_wait
    what: str = ""


SCENARIOS = (
    Scenario("w2", "memory", lambda: _three("w2"), what="3 sync steps"),
    Scenario("w2", "sqlite", lambda: _three("w2"), what="3 sync steps"),
    Scenario("async-step", "memory", lambda: _workflow("async", _step("a", _pass_async))),
    Scenario("async-twins", "sqlite", lambda: _three("twins"), _async_twins, "astart + aget"),
    Scenario("failing", "memory", lambda: _workflow("fail", _step("boom", _fail))),
    Scenario("failing-async", "memory", lambda: _workflow("fail-a", _step("boom", _fail_async))),
    Scenario("retry", "memory", lambda: _workflow("retry", _step("r", _fail_once, retries=1))),
    Scenario("timeout", "memory", lambda: _workflow("slow", _step("t", _too_slow, timeout=0.01))),
    Scenario("flow", "memory", _control_flow, what="parallel, foreach, map, sleep"),
    Scenario(
        "suspend", "memory", lambda: _workflow("ask", _step("ask", _ask)), _suspend_and_resume
    ),
    Scenario("cancel", "memory", lambda: _workflow("stop", _step("w", _until_aborted)), _cancel),
)


# --- measuring ------------------------------------------------------------------------


def type_name(obj: object) -> str:
    kind = type(obj)
    if kind.__name__ == "function":
        return f"function {obj.__qualname__}"  # type: ignore[attr-defined]
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def cycles(objects: list[object]) -> list[list[object]]:
    """The strongly connected components of ``objects``: more than one object, or a self-loop."""
    by_id = {id(obj): obj for obj in objects}
    edges = {
        key: [id(r) for r in gc.get_referents(obj) if id(r) in by_id] for key, obj in by_id.items()
    }
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    found: list[list[object]] = []
    for root in by_id:
        if root in index:
            continue
        work = [(root, 0)]
        while work:  # Tarjan's algorithm, without recursion
            node, at = work.pop()
            if at == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            for position in range(at, len(edges[node])):
                other = edges[node][position]
                if other not in index:
                    work += [(node, position + 1), (other, 0)]
                    break
                if other in on_stack:
                    low[node] = min(low[node], index[other])
            else:
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in edges[node]:
                        found.append([by_id[member] for member in component])
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
    return found


def cycle_path(component: list[object]) -> str:
    """A shortest cycle through the component's least generic object, as type names."""
    members = {id(obj): obj for obj in component}
    generic = ("builtins", "cell", "function", "method", "tuple", "dict", "list")

    def rank(obj: object) -> tuple[bool, str]:
        return type(obj).__module__ in generic or type_name(obj).startswith(generic), type_name(obj)

    start = min(component, key=rank)
    came_from: dict[int, int | None] = {id(start): None}
    queue = collections.deque([id(start)])
    last: int | None = None
    while queue and last is None:
        node = queue.popleft()
        for referent in gc.get_referents(members[node]):
            if id(referent) == id(start):
                last = node
                break
            if id(referent) in members and id(referent) not in came_from:
                came_from[id(referent)] = node
                queue.append(id(referent))
    path: list[str] = []
    step: int | None = last
    while step is not None:
        path.append(type_name(members[step]))
        step = came_from[step]
    path.reverse()
    return " -> ".join([*path, path[0]]) if path else "?"


@dataclass
class Garbage:
    scenario: str
    store: str
    runs: int
    objects: int
    components: int
    live_growth: int
    by_type: collections.Counter[str] = field(default_factory=collections.Counter)
    paths: collections.Counter[str] = field(default_factory=collections.Counter)


def _tracked(leaving: Collection[object] = ()) -> collections.Counter[str]:
    """Tracked objects by type, but for those in ``leaving`` (compared by identity)."""
    skip = {id(obj) for obj in leaving}
    skip.add(id(leaving))
    return collections.Counter(type_name(obj) for obj in gc.get_objects() if id(obj) not in skip)


def _store(kind: str, directory: Path) -> str | None:
    return None if kind == "memory" else str(directory / f"gc-{time.monotonic_ns()}.db")


def garbage_of(scenario: Scenario, runs: int, directory: Path) -> Garbage:
    """Run ``runs`` runs of the scenario with the collector off; collect what they left."""
    with Runtime(store=_store(scenario.store, directory)) as rt:
        wf = rt.register(scenario.workflow())
        scenario.drive(wf, 20)  # warm up: caches, pools and threads the runs share

        def drive() -> None:
            scenario.drive(wf, runs)
            time.sleep(0.2)  # the run actors' last messages and the writer's last batch

        found, growth = _left_by(drive)
    return _summary(scenario.name, scenario.store, runs, found, growth)


def _left_by(action: Callable[[], object]) -> tuple[list[object], collections.Counter[str]]:
    """What ``action`` left to the cyclic collector, and the tracked objects it added.

    The collector is off while it runs, then one collection with
    ``DEBUG_SAVEALL`` keeps what it found in ``gc.garbage`` instead of freeing it.
    The objects added are counted after that collection, without what it found:
    what the next full collection walks (a collection stops tracking a tuple or
    dict that holds only plain values, such as a finished run's stored record).
    """
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        before = _tracked()
        action()
        gc.collect()
        found = list(gc.garbage)
        gc.garbage.clear()
        after = _tracked(found)
    finally:
        gc.set_debug(0)
        gc.enable()
    return found, after - before


def _summary(
    name: str, store: str, runs: int, found: list[object], growth: collections.Counter[str]
) -> Garbage:
    components = cycles(found)
    result = Garbage(name, store, runs, len(found), len(components), sum(growth.values()))
    result.by_type.update(type_name(obj) for obj in found)
    result.paths.update(cycle_path(component) for component in components)
    return result


def loop_lag_garbage(loop_lag: ModuleType, runs: int, directory: Path) -> Garbage:
    """The ``async`` round of loop_lag.py (one wave), runtime start and stop included."""
    loop_lag.measure("async", 20, 1, directory)  # warm up
    found, growth = _left_by(lambda: loop_lag.measure("async", runs, 1, directory))
    return _summary("loop-lag", "sqlite", runs, found, growth)


# --- collections, with the collector on ---------------------------------------------


class Collections:
    """Times every collection, by generation, on any thread, while entered."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self.spans: list[tuple[float, float, int]] = []  # (began, ended, generation)
        self._began: dict[int, float] = {}

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began[threading.get_ident()] = time.perf_counter()
        elif (began := self._began.pop(threading.get_ident(), None)) is not None:
            ended = time.perf_counter()
            self.pauses[info["generation"]].append(ended - began)
            self.spans.append((began, ended, info["generation"]))

    def __enter__(self) -> Collections:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


@dataclass
class Timing:
    workload: str
    runs: int
    wall_s: float
    pauses: dict[int, list[float]]
    tracked_after: int


def timing_w2(store: str, runs: int, directory: Path) -> Timing:
    """``runs`` 3-step runs started back to back and waited for, in batches of 200."""
    with Runtime(store=_store(store, directory)) as rt:
        wf = rt.register(_three("w2"))
        _start_and_wait(wf, 200)
        gc.collect()
        began = time.perf_counter()
        with Collections() as seen:
            for _ in range(runs // 200):
                _start_and_wait(wf, 200)
        wall = time.perf_counter() - began
        tracked = len(gc.get_objects())
    return Timing(f"w2 {store}", runs, wall, seen.pauses, tracked)


def timing_loop_lag(loop_lag: ModuleType, runs: int, directory: Path) -> tuple[Timing, list[str]]:
    """The ``async`` round of loop_lag.py: 200 runs at a time, ``runs // 200`` waves.

    Also returns its worst ticks, each with the collections that overlapped it.
    """
    loop_lag.measure("async", 20, 1, directory)
    ticks: list[tuple[float, float]] = []  # (woke, lag)
    plain_ticker = loop_lag._ticker

    async def ticker(lags: list[float], done: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + loop_lag.TICK
        while not done.is_set():
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            lags.append(now - due)
            ticks.append((time.perf_counter(), now - due))
            due = now + loop_lag.TICK

    loop_lag._ticker = ticker
    gc.collect()
    began = time.perf_counter()
    try:
        with Collections() as seen:
            lag = loop_lag.measure("async", 200, max(1, runs // 200), directory)
    finally:
        loop_lag._ticker = plain_ticker
    wall = time.perf_counter() - began
    worst = []
    for woke, late in sorted(ticks, key=lambda tick: -tick[1])[:8]:
        overlapping = [
            f"gen{generation} {1000 * (ended - start):.1f} ms"
            for start, ended, generation in seen.spans
            if ended > woke - late - 0.001 and start < woke and generation > 0
        ]
        worst.append(
            f"  {1000 * late:7.1f} ms late: {', '.join(overlapping) or 'no gen1/gen2 collection'}"
        )
    timing = Timing(f"loop-lag async (p99 {lag.p99_ms:.1f} ms)", runs, wall, seen.pauses, 0)
    return timing, worst


def timing_kept(kept: list[int]) -> list[tuple[int, int, float]]:
    """A full collection's length in a runtime keeping more and more ended runs in memory.

    For each count in ``kept`` (rising): 3-step runs until the memory store keeps that
    many, then the shortest of three :func:`gc.collect` calls with nothing to free,
    and the objects tracked. The first count is the floor the others are measured against.
    """
    rows = []
    with Runtime() as rt:
        wf = rt.register(_three("kept"))
        for count in kept:
            while len(rt.store) < count:
                _start_and_wait(wf, min(200, count - len(rt.store)))
            lengths = []
            for _ in range(3):
                began = time.perf_counter()
                gc.collect()
                lengths.append(time.perf_counter() - began)
            rows.append((len(rt.store), len(gc.get_objects()), min(lengths)))
    return rows


# --- output ---------------------------------------------------------------------------


def print_garbage(rows: list[Garbage], top: int) -> None:
    print("garbage per run: what gc.collect() found after N finished runs, the collector off")
    header = ("scenario", "store", "runs", "objects", "cycles", "live")
    print("{:<12} {:<7} {:>6} {:>8} {:>7} {:>6}  most found (per run)".format(*header))
    for row in rows:
        most = ", ".join(
            f"{name} {count / row.runs:.2f}" for name, count in row.by_type.most_common(top)
        )
        print(
            f"{row.scenario:<12} {row.store:<7} {row.runs:>6} {row.objects / row.runs:>8.2f} "
            f"{row.components / row.runs:>7.2f} {row.live_growth / row.runs:>6.2f}  {most or '-'}"
        )
    print("(objects, cycles: found by the collection, per run; live: tracked objects still held")
    print(" per finished run)")
    for row in rows:
        for path, count in row.paths.most_common(top):
            print(f"  {row.scenario}/{row.store}: {count / row.runs:.2f}/run  {path}")


def print_timing(rows: list[Timing]) -> None:
    print()
    print("collections with the collector on (any thread): count, total ms, longest ms")
    print(f"{'workload':<34} {'runs':>6} {'wall s':>7}   {'gen0':>16} {'gen1':>16} {'gen2':>16}")
    for row in rows:
        cells = []
        for generation in (0, 1, 2):
            pauses = row.pauses[generation]
            total = 1000 * sum(pauses)
            longest = 1000 * max(pauses, default=0.0)
            cells.append(f"{len(pauses):>4} {total:>6.1f} {longest:>5.1f}")
        print(f"{row.workload:<34} {row.runs:>6} {row.wall_s:>7.2f}   " + " ".join(cells))


def print_kept(rows: list[tuple[int, int, float]]) -> None:
    print()
    print("a full collection (gc.collect(), nothing to free) with ended runs kept in memory")
    print(f"{'runs kept':>10} {'tracked':>9} {'full gc ms':>11} {'vs first':>9}")
    floor = rows[0][2]
    for kept, tracked, length in rows:
        print(f"{kept:>10,} {tracked:>9,} {1000 * length:>11.1f} {length / floor:>8.2f}x")


def _loop_lag() -> ModuleType:
    spec = importlib.util.spec_from_file_location("callboard_loop_lag", HERE / "loop_lag.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _selected(only: list[str] | None) -> Iterator[Scenario]:
    for scenario in SCENARIOS:
        if not only or scenario.name in only:
            yield scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400, help="runs per garbage scenario")
    parser.add_argument("--timing-runs", type=int, default=2000, help="runs per timed workload")
    parser.add_argument("--only", nargs="*", help="scenario names (and loop-lag)")
    parser.add_argument("--no-timing", action="store_true", help="skip the second and third tables")
    parser.add_argument("--top", type=int, default=4)
    parser.add_argument(
        "--kept",
        type=int,
        nargs="+",
        default=[200, 10_000, 40_000],
        help="ended runs kept in memory at each full collection timed (rising)",
    )
    args = parser.parse_args(argv)
    import runtime

    print(f"callboard from {Path(runtime.__file__).parent.parent}, Python {sys.version.split()[0]}")
    loop_lag = _loop_lag()
    with tempfile.TemporaryDirectory(prefix="callboard-gc-") as tmp:
        directory = Path(tmp)
        rows = [garbage_of(scenario, args.runs, directory) for scenario in _selected(args.only)]
        if not args.only or "loop-lag" in args.only:
            rows.append(loop_lag_garbage(loop_lag, 200, directory))
        print_garbage(rows, args.top)
        if not args.no_timing:
            lagged, worst = timing_loop_lag(loop_lag, args.timing_runs, directory)
            timings = [
                timing_w2("memory", args.timing_runs, directory),
                timing_w2("sqlite", args.timing_runs, directory),
                lagged,
            ]
            print_timing(timings)
            print("the loop-lag round's worst ticks, and the collections (gen1, gen2) during each:")
            print("\n".join(worst))
            print_kept(timing_kept(args.kept))
    return 0


if __name__ == "__main__":
    sys.exit(main())
