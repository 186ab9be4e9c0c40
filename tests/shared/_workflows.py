"""Workflows for the tests of runtimes that share a store, importable by worker processes.

The steps leave lines in the file named by ``request_context["log"]`` (see
:mod:`tests.durable._support.workflows`), so a test counts which steps ran,
and how often, across processes killed or stopped on the way.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from runtime import Queue, Runtime, Workflow, create_step, create_workflow
from tests._support import Value, wait_until
from tests.durable._support.workflows import (
    append_line,
    asking,
    asking_items,
    logged,
    read_lines,
)

__all__ = ["TENANT_QUEUE", "WORKFLOWS", "napper", "tenant_job", "ticker"]


def _stamped(step_id: str) -> Any:
    def execute(ctx: Any) -> Value:
        append_line(ctx.request_context["log"], f"{step_id} at {time.time():.3f} pid {os.getpid()}")
        return Value(value=f"{ctx.input_data.value}-{step_id[0]}")

    return create_step(id=step_id, input_schema=Value, output_schema=Value, execute=execute)


def _nap(ctx: Any) -> float:
    return float(ctx.request_context["nap"])


def napper_workflow() -> Workflow[Value, Value]:
    """``before``, a sleep of ``request_context["nap"]`` seconds, ``after`` (logs its time)."""
    return (
        create_workflow(id="napper", input_schema=Value, output_schema=Value)
        .then(_stamped("before"))
        .sleep(_nap, id="nap")
        .then(_stamped("after"))
        .commit()
    )


napper = napper_workflow()

TENANT_QUEUE = Queue("tenants", key=lambda job: job.value, key_concurrency=2)
"""The queue of :data:`tenant_job`: at most two runs of one tenant execute at once."""


def _hold(ctx: Any) -> Value:
    path = ctx.request_context["log"]
    append_line(path, f"enter {time.time():.6f} pid {os.getpid()}")
    time.sleep(float(ctx.request_context.get("hold", 0.2)))
    append_line(path, f"leave {time.time():.6f} pid {os.getpid()}")
    return Value(value=ctx.input_data.value)


tenant_job: Workflow[Value, Value] = (
    create_workflow(id="tenant_job", input_schema=Value, output_schema=Value, queue=TENANT_QUEUE)
    .then(create_step(id="hold", input_schema=Value, output_schema=Value, execute=_hold))
    .commit()
)
"""One step that holds for ``request_context["hold"]`` seconds, logging when it enters and
leaves (to ``request_context["log"]``), in the queue of tenants (the input's value)."""


def _tick(ctx: Any) -> Value:
    append_line(ctx.input_data.value, f"{ctx.run_id} pid {os.getpid()}")
    return Value(value="ticked")


ticker: Workflow[Value, Value] = (
    create_workflow(id="ticker", input_schema=Value, output_schema=Value)
    .then(create_step(id="tick", input_schema=Value, output_schema=Value, execute=_tick))
    .commit()
)
"""For schedules, whose runs have no request context: one step that logs its run's id and
its process to the file its input names."""

WORKFLOWS: dict[str, Workflow[Any, Any]] = {
    wf.id: wf for wf in (logged, asking, asking_items, napper, tenant_job, ticker)
}
"""What every worker process registers."""


def held_in_beta(rt: Runtime, log: Path, hold: Path, *, within: float) -> tuple[Any, Any]:
    """The ``logged`` workflow on ``rt``, and a run of it started and held in ``beta``.

    ``beta`` holds while ``hold`` exists; each step's start is logged to ``log``.
    Waits up to ``within`` seconds for ``beta`` to start. Returns (workflow, run).
    """
    wf = rt.register(WORKFLOWS["logged"])
    run = wf.create_run()
    run.start_async(
        input_data={"value": "x"},
        request_context={"log": str(log), "hold_step": "beta", "hold_file": str(hold)},
    )
    wait_until(lambda: "start beta" in read_lines(log), timeout=within, what="beta holds")
    return wf, run
