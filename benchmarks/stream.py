"""What ``run.stream()`` and ``ctx.writer.write`` cost, and that a slow reader stays bounded.

A plain script (pytest never collects it) that prints one table. Each figure stands
beside a floor measured in the same process and run:

- runs/s of a two-step workflow that nobody streams, beside the same runs each
  streamed to its end by ``run.stream()`` (the ratio is what a stream adds);
- events/s that one step writes with ``ctx.writer.write`` and a stream reads,
  beside a ``queue.SimpleQueue`` between two threads carrying as many items;
- the memory a subscriber that never reads holds while a step writes N events,
  for two N ten times apart: bounded, it does not grow with N.

    .venv/bin/python benchmarks/stream.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import queue
import statistics
import threading
import time
import tracemalloc
from typing import Any

from pydantic import BaseModel

from runtime import Runtime, create_step, create_workflow


class Value(BaseModel):
    value: int


def _two_steps() -> Any:
    first = create_step(
        id="first",
        input_schema=Value,
        output_schema=Value,
        execute=lambda ctx: Value(value=ctx.input_data.value + 1),
    )
    second = create_step(
        id="second",
        input_schema=Value,
        output_schema=Value,
        execute=lambda ctx: Value(value=ctx.input_data.value * 2),
    )
    return (
        create_workflow(id="two", input_schema=Value, output_schema=Value)
        .then(first)
        .then(second)
        .commit()
    )


def _writer(count: int, gate: threading.Event | None = None) -> Any:
    def write(ctx):  # type: ignore[no-untyped-def]
        if gate is not None:
            gate.wait(60)
        for index in range(count):
            ctx.writer.write(index)
        return ctx.input_data

    step = create_step(id="writes", input_schema=Value, output_schema=Value, execute=write)
    return create_workflow(id="writes", input_schema=Value, output_schema=Value).then(step).commit()


def runs_per_second(runs: int, *, streamed: bool) -> float:
    with Runtime() as rt:
        wf = rt.register(_two_steps())
        began = time.perf_counter()
        for index in range(runs):
            run = wf.create_run()
            run.start_async(input_data={"value": index})
            if streamed:
                for _event in run.stream(timeout=30):
                    pass
            else:
                run.wait(30)
        return runs / (time.perf_counter() - began)


def writes_per_second(count: int) -> tuple[float, int]:
    """Events/s written and read through a stream, and how many the reader got.

    A reader that falls more than ``SUBSCRIBER_BUFFER`` + ``EVENT_LOG_SIZE`` events
    behind loses the oldest of them (its ``seq``s jump): the policy that keeps memory
    bounded. The count says whether it happened.
    """
    with Runtime() as rt:
        gate = threading.Event()
        run = rt.register(_writer(count, gate)).create_run()
        run.start_async(input_data={"value": 0})
        stream = run.stream(timeout=30)
        next(stream)  # subscribed
        began = time.perf_counter()
        gate.set()
        taken = sum(1 for event in stream if event.type == "step_output")
        elapsed = time.perf_counter() - began
        return count / elapsed, taken


def queue_floor(count: int) -> float:
    items: queue.SimpleQueue[int | None] = queue.SimpleQueue()

    def produce() -> None:
        for index in range(count):
            items.put(index)
        items.put(None)

    began = time.perf_counter()
    threading.Thread(target=produce).start()
    while items.get() is not None:
        pass
    return count / (time.perf_counter() - began)


def idle_reader_peak(count: int) -> float:
    """KiB allocated at the peak while a step writes ``count`` events nobody reads."""
    with Runtime() as rt:
        gate = threading.Event()
        run = rt.register(_writer(count, gate)).create_run()
        run.start_async(input_data={"value": 0})
        stream = run.stream(timeout=30)
        next(stream)
        gc.collect()
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        gate.set()
        run.wait(60)
        time.sleep(0.2)  # the registry has handed over what it would
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        stream.close()
        return peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller N, one round")
    args = parser.parse_args()
    runs, writes, rounds = (200, 5_000, 1) if args.quick else (1_000, 20_000, 3)
    small, large = (2_000, 20_000) if args.quick else (5_000, 50_000)

    plain = statistics.median(runs_per_second(runs, streamed=False) for _ in range(rounds))
    streamed = statistics.median(runs_per_second(runs, streamed=True) for _ in range(rounds))
    measured = [writes_per_second(writes) for _ in range(rounds)]
    written = statistics.median(rate for rate, _ in measured)
    read = min(taken for _, taken in measured)
    floor = statistics.median(queue_floor(writes) for _ in range(rounds))
    peak_small = idle_reader_peak(small)
    peak_large = idle_reader_peak(large)

    rows = [
        (f"{runs} two-step runs, waited (floor)", f"{plain:,.0f} runs/s", "1.00"),
        (
            f"{runs} two-step runs, each streamed",
            f"{streamed:,.0f} runs/s",
            f"{plain / streamed:.2f}",
        ),
        (f"{writes} items through a SimpleQueue (floor)", f"{floor:,.0f} items/s", "1.00"),
        (
            f"{writes} ctx.writer.write, streamed ({read} read)",
            f"{written:,.0f} events/s",
            f"{floor / written:.2f}",
        ),
        (f"idle reader, {small} writes", f"{peak_small:,.0f} KiB peak", "1.00"),
        (
            f"idle reader, {large} writes",
            f"{peak_large:,.0f} KiB peak",
            f"{peak_large / peak_small:.2f}",
        ),
    ]
    width = max(len(row[0]) for row in rows)
    print(f"{'scenario':<{width}}  {'figure':>20}  {'x floor':>7}")
    for name, figure, ratio in rows:
        print(f"{name:<{width}}  {figure:>20}  {ratio:>7}")


if __name__ == "__main__":
    main()
