"""What many test modules share, defined once: import it, it is no conftest.

The fixtures built on these live in ``tests/conftest.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from runtime import create_step

ROOT = Path(__file__).resolve().parents[1]
"""The repository: where the examples, the README and the sources are."""

# Threads callboard starts: pykka names threading actors after their class.
CALLBOARD_THREAD_PREFIXES = (
    "callboard-",
    "StepActor-",
    "RegistryActor-",
)


def callboard_threads() -> list[threading.Thread]:
    """The live threads that belong to callboard's machinery."""
    return [
        thread
        for thread in threading.enumerate()
        if thread.name.startswith(CALLBOARD_THREAD_PREFIXES)
    ]


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not reached within {timeout} s: {what or predicate}")
        time.sleep(0.005)


def wait_for_no_callboard_threads(timeout: float = 5.0) -> list[threading.Thread]:
    """Wait until callboard's threads have ended; return those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := callboard_threads()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return left


# --- tiny schemas ----------------------------------------------------------------------


class Value(BaseModel):
    value: str


class N(BaseModel):
    n: int


class Count(BaseModel):
    count: int


# --- steps -----------------------------------------------------------------------------


def shout(ctx: Any) -> Value:
    """A step body: the input's value in capitals."""
    return Value(value=ctx.input_data.value.upper())


def shout_step(step_id: str = "shout") -> Any:
    """A step that upper-cases the value."""
    return create_step(id=step_id, input_schema=Value, output_schema=Value, execute=shout)


def exclaim_step(step_id: str = "exclaim") -> Any:
    """A step that appends ``!`` to the value."""
    return create_step(
        id=step_id,
        input_schema=Value,
        output_schema=Value,
        execute=lambda ctx: Value(value=ctx.input_data.value + "!"),
    )


def inc_step(step_id: str = "inc") -> Any:
    """A step that adds one to ``n``."""
    return create_step(
        id=step_id,
        input_schema=N,
        output_schema=N,
        execute=lambda ctx: N(n=ctx.input_data.n + 1),
    )


def dbl_step(step_id: str = "dbl") -> Any:
    """A step that doubles ``n``."""
    return create_step(
        id=step_id,
        input_schema=N,
        output_schema=N,
        execute=lambda ctx: N(n=ctx.input_data.n * 2),
    )
