"""Workflows for ``tests/test_cli_worker.py``: a ``callboard worker`` process runs them.

The test process imports this module too, to start runs of the same workflows from a
client runtime. ``gated`` waits, in its step, until a file exists: a gate the test opens
from outside the worker's process, so that it can act while a run is in progress.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from runtime import create_step, create_workflow

GATE_LIMIT = 20.0
"""Seconds a gated step waits for its file at most, so that a broken test fails."""

LINGER = 0.3
"""Seconds a ``slow`` run's step takes."""


class Value(BaseModel):
    value: str


def _wait_for_gate(ctx: Any) -> Value:
    gate = Path(ctx.input_data.value)
    deadline = time.monotonic() + GATE_LIMIT
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gate {gate} was not opened within {GATE_LIMIT} s")
        time.sleep(0.01)
    return Value(value="through")


def _linger(ctx: Any) -> Value:
    time.sleep(LINGER)
    return Value(value=ctx.input_data.value.upper())


shout = create_step(
    id="shout",
    input_schema=Value,
    output_schema=Value,
    execute=lambda ctx: Value(value=ctx.input_data.value.upper()),
)
linger = create_step(id="linger", input_schema=Value, output_schema=Value, execute=_linger)
wait_for_gate = create_step(
    id="wait_for_gate", input_schema=Value, output_schema=Value, execute=_wait_for_gate
)

greet = create_workflow(id="greet", input_schema=Value, output_schema=Value).then(shout).commit()
slow = create_workflow(id="slow", input_schema=Value, output_schema=Value).then(linger).commit()
gated = (
    create_workflow(id="gated", input_schema=Value, output_schema=Value)
    .then(wait_for_gate)
    .commit()
)
also_greet = (
    create_workflow(id="greet", input_schema=Value, output_schema=Value).then(linger).commit()
)
"""Another version of the workflow ``greet`` (another step): a worker may run both."""
greet_again = (
    create_workflow(id="greet", input_schema=Value, output_schema=Value).then(shout).commit()
)
"""The plan of ``greet`` again: a worker refuses to run both."""
