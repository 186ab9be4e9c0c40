"""What the test kit's seams cost a runtime that does not use them.

``make bench`` runs it (or: ``.venv/bin/python benchmarks/testkit.py``). Outside a
harness each actor checks ``runtime._probes.observer`` (``None``) before it handles a
message, the step actor checks ``runtime._probes.step_body``, and the timers read
``runtime._clock.time`` (``time.time`` itself). It prints:

- the cost of each check alone, beside an empty loop;
- runs/s of a 3-step workflow in memory, with the probes off (as shipped) and with a
  no-op observer installed (what recording would cost at the least), best of
  ``--rounds``;
- what the seams cost a run when off, against the run itself (the floor, measured in
  the same run): the messages and clock readings one run makes (counted with a
  counting observer and clock), times the cost of each check above an empty loop,
  as a share of the time one run takes with the probes off.

It asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydantic import BaseModel  # noqa: E402

from runtime import Runtime, _clock, _probes, create_step, create_workflow  # noqa: E402


class N(BaseModel):
    n: int


def _workflow() -> Any:
    def inc(ctx: Any) -> N:
        return N(n=ctx.input_data.n + 1)

    steps = [
        create_step(id=f"s{i}", input_schema=N, output_schema=N, execute=inc) for i in range(3)
    ]
    builder = create_workflow(id="bench-kit", input_schema=N, output_schema=N)
    for step in steps:
        builder = builder.then(step)
    return builder.commit()


def _runs_per_second(runs: int) -> float:
    with Runtime() as rt:
        bound = rt.register(_workflow())
        began = time.perf_counter()
        started = [bound.create_run() for _ in range(runs)]
        for run in started:
            run.start_async(input_data={"n": 0})
        for run in started:
            run.wait(timeout=60)
        return runs / (time.perf_counter() - began)


def _per_run_counts(runs: int) -> tuple[float, float]:
    """Messages the actors handle, and clock readings, per 3-step run (counting seams)."""
    seen = {"messages": 0, "readings": 0}

    def observer(actor: Any, message: Any) -> bool:
        seen["messages"] += 1
        return True

    def reading() -> float:
        seen["readings"] += 1
        return time.time()

    _probes.observer = observer
    _clock.install(reading)
    try:
        _runs_per_second(runs)
    finally:
        _probes.observer = None
        _clock.uninstall()
    return seen["messages"] / runs, seen["readings"] / runs


def _check_costs() -> list[tuple[str, float]]:
    number = 2_000_000
    namespace = {"_probes": _probes, "_clock": _clock, "time": time}
    cases = [
        ("empty loop", "pass"),
        ("observer is None check", "observer = _probes.observer\nif observer is not None: pass"),
        ("time.time()", "time.time()"),
        ("_clock.time()", "_clock.time()"),
    ]
    return [
        (name, min(timeit.repeat(stmt, globals=namespace, number=number, repeat=3)) / number)
        for name, stmt in cases
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    print("the test kit's seams, outside a harness")
    print(f"{'check':<28}{'ns each':>10}")
    costs = dict(_check_costs())
    for name, seconds in costs.items():
        print(f"{name:<28}{seconds * 1e9:>10.1f}")

    off = max(_runs_per_second(args.runs) for _ in range(args.rounds))
    _probes.observer = lambda actor, message: True
    try:
        on = max(_runs_per_second(args.runs) for _ in range(args.rounds))
    finally:
        _probes.observer = None
    print()
    print(f"{'3-step runs in memory':<28}{'runs/s':>10}")
    print(f"{'probes off (as shipped)':<28}{off:>10.0f}")
    print(f"{'a no-op observer':<28}{on:>10.0f}")

    messages, readings = _per_run_counts(min(args.runs, 500))
    check = max(0.0, costs["observer is None check"] - costs["empty loop"])
    clock = max(0.0, costs["_clock.time()"] - costs["time.time()"])
    seams = messages * check + readings * clock
    run = 1.0 / off
    print()
    print("what the seams cost one run when off (floor: one run, probes off)")
    print(f"{'':<28}{'per run':>10}{'ns':>12}{'of a run':>10}")
    print(f"{'a run (the floor)':<28}{1:>10}{run * 1e9:>12.0f}{1:>10.0%}")
    print(f"{'observer checks':<28}{messages:>10.1f}{messages * check * 1e9:>12.0f}", end="")
    print(f"{messages * check / run:>10.3%}")
    print(f"{'_clock.time() vs time.time()':<28}{readings:>10.1f}", end="")
    print(f"{readings * clock * 1e9:>12.0f}{readings * clock / run:>10.3%}")
    print(f"{'all seams':<28}{'':>10}{seams * 1e9:>12.0f}{seams / run:>10.3%}")


if __name__ == "__main__":
    main()
