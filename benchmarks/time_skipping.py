"""What the test kit's time skipping takes in real time, timer by timer.

``make bench`` runs it (or: ``.venv/bin/python benchmarks/time_skipping.py``; add
``--postgres URL`` for a PostgreSQL store too). Under a ``Harness`` with time skipping,
each case waits out timers that would take hours or days on the real clock:

- ``no timer (floor)``: one run of one step, nothing to skip: what the rest are
  measured against, in the same run;
- ``sleep 30 days``: a run that sleeps a month between two steps;
- ``schedule hourly x3``: an hourly cron schedule, until three of its runs ended;
- ``rate 1/h x3``: three runs through a queue that starts one an hour;
- ``crash, lease lapse`` (durable stores): a crash in the middle of a step
  (``crash_and_recover()``), until the new runtime's reaper found the lease run out
  and the run ended.

It prints, per store, the virtual seconds that passed, the real milliseconds (median of
``--rounds``), and that time as a multiple of the floor. It asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from runtime import Queue, StepContext, create_step, create_workflow  # noqa: E402
from runtime.testing import Harness  # noqa: E402

HOUR = 3600.0
_TAGS = iter(range(1_000_000))


def _tag() -> str:
    """A fresh suffix for ids: each case starts clean on a store the rounds share."""
    return f"{next(_TAGS)}"


class N(BaseModel):
    n: int


def _inc(ctx: StepContext[N]) -> N:
    return N(n=ctx.input_data.n + 1)


def _step(step_id: str, body: Callable[[Any], Any] = _inc) -> Any:
    return create_step(id=step_id, input_schema=N, output_schema=N, execute=body)


def _wait_for(done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError("the case did not end within 60 s")
        time.sleep(0.001)


def floor(harness: Harness) -> None:
    workflow = create_workflow(id=f"floor-{_tag()}", input_schema=N, output_schema=N)
    workflow = workflow.then(_step("a"))
    harness.register(workflow.commit()).create_run().start(input_data={"n": 0}, timeout=60)


def sleep_a_month(harness: Harness) -> None:
    workflow = (
        create_workflow(id=f"month-{_tag()}", input_schema=N, output_schema=N)
        .then(_step("a"))
        .sleep(30 * 86400.0)
        .then(_step("b"))
        .commit()
    )
    harness.register(workflow).create_run().start(input_data={"n": 0}, timeout=60)


def hourly_schedule(harness: Harness) -> None:
    workflow_id = f"hourly-{_tag()}"
    workflow = create_workflow(id=workflow_id, input_schema=N, output_schema=N)
    bound = harness.register(workflow.then(_step("a")).commit())
    harness.runtime.schedule(bound, cron="0 * * * *", input_data={"n": 0})
    _wait_for(lambda: bound.list_workflow_runs(status="success").total >= 3)
    harness.runtime.pause_schedule(workflow_id)


def rate_limited(harness: Harness) -> None:
    tag = _tag()
    queue = Queue(f"hourly-{tag}", rate_limit=(1, HOUR))
    workflow = create_workflow(id=f"rated-{tag}", input_schema=N, output_schema=N, queue=queue)
    bound = harness.register(workflow.then(_step("a")).commit())
    ids = [bound.create_run().start_async(input_data={"n": n}).run_id for n in range(3)]
    for run_id in ids:
        bound.create_run(run_id=run_id).wait(60)


def crash_and_lapse(harness: Harness) -> None:
    entered, gate = threading.Event(), threading.Event()

    def held_once(ctx: StepContext[N]) -> N:
        if not entered.is_set():
            entered.set()
            gate.wait(60)
        return N(n=ctx.input_data.n + 1)

    workflow_id = f"crashed-{_tag()}"
    workflow = create_workflow(id=workflow_id, input_schema=N, output_schema=N)
    bound = harness.register(workflow.then(_step("held", held_once)).commit())
    run = bound.create_run()
    run.start_async(input_data={"n": 0})
    entered.wait(60)
    harness.crash_and_recover()
    gate.set()
    harness.workflow(workflow_id).create_run(run_id=run.run_id).wait(60)


CASES: list[tuple[str, Callable[[Harness], None], bool]] = [
    ("no timer (floor)", floor, False),
    ("sleep 30 days", sleep_a_month, False),
    ("schedule hourly x3", hourly_schedule, False),
    ("rate 1/h x3", rate_limited, False),
    ("crash, lease lapse", crash_and_lapse, True),
]


def _measure(store: Callable[[], Any], case: Callable[[Harness], None]) -> tuple[float, float]:
    """Virtual seconds and real seconds the case took in a fresh harness."""
    with Harness(store=store()) as harness:
        began, real = harness.clock.now(), time.perf_counter()
        case(harness)
        return harness.clock.now() - began, time.perf_counter() - real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", help="a postgresql:// URL of a database to use")
    args = parser.parse_args()
    # This script is the application: the reaper's warnings after a crash are expected.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))

    folder = Path(tempfile.mkdtemp(prefix="callboard-skip-"))
    made = iter(range(1_000_000))
    stores: list[tuple[str, Callable[[], Any], bool]] = [
        ("memory", lambda: "memory", False),
        ("sqlite", lambda: folder / f"runs-{next(made)}.db", True),
    ]
    if args.postgres:
        stores.append(("postgres", lambda: args.postgres, True))

    print("time skipping: real time per case (median of rounds), against the floor")
    print(f"{'store':<10}{'case':<22}{'virtual s':>12}{'real ms':>10}{'x floor':>9}")
    for name, store, durable in stores:
        floor_ms = 0.0
        for label, case, needs_durable in CASES:
            if needs_durable and not durable:
                continue
            measured = [_measure(store, case) for _ in range(args.rounds)]
            virtual = statistics.median(v for v, _ in measured)
            real_ms = statistics.median(r for _, r in measured) * 1000
            if case is floor:
                floor_ms = real_ms
            ratio = real_ms / floor_ms if floor_ms else float("nan")
            print(f"{name:<10}{label:<22}{virtual:>12.0f}{real_ms:>10.1f}{ratio:>9.1f}")


if __name__ == "__main__":
    main()
