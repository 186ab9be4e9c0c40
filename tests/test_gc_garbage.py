"""A finished run leaves nothing for the cyclic garbage collector.

Whatever a run allocates is freed by reference counting when the run ends: a
reference cycle per run (a closure that holds what holds it, an exception that
holds its frames) would survive into the collector's oldest generation with
everything it reaches, run actor and records included, and make every full
collection longer and more frequent (issue 15; ``benchmarks/gc_garbage.py``
prints the figures).

Each test runs ``RUNS`` runs with the collector off and
``gc.DEBUG_SAVEALL`` set, then collects: what the collection finds was not freed
by reference counting. The bound allows a few objects the runtime itself may
leave meanwhile (a step thread retired while idle), far below one per run.
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FunctionType
from typing import Any

import pytest
from pydantic import BaseModel

from runtime import Runtime, StepContext, create_step, create_workflow

RUNS = 60
ALLOWED = RUNS // 4
"""callboard objects the collection may find in all: a per-run cycle leaves at least ``RUNS``."""


class Value(BaseModel):
    value: str


PAYLOAD = {"value": "gc"}


class Refusal(ValueError):
    """An error with attributes: the run's ``ErrorInfo`` copies them as plain data."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = 42
        self.hints = ["later", {"after_s": 5}]


def _pass(ctx: StepContext[Any]) -> Any:
    return ctx.input_data


async def _pass_async(ctx: StepContext[Any]) -> Any:
    await asyncio.sleep(0)
    return ctx.input_data


def _refuse(ctx: StepContext[Any]) -> Any:
    raise Refusal("refused")


async def _refuse_async(ctx: StepContext[Any]) -> Any:
    await asyncio.sleep(0)
    raise Refusal("refused")


def _ask(ctx: StepContext[Any]) -> Any:
    if ctx.resume_data is None:
        ctx.suspend({"question": "go on?"})
    return ctx.input_data


def _until_aborted(ctx: StepContext[Any]) -> Any:
    ctx.abort_signal.wait(10)
    return ctx.input_data


async def _too_slow_async(ctx: StepContext[Any]) -> Any:
    await asyncio.sleep(10)  # cut off by its timeout
    return ctx.input_data


def _step(name: str, execute: Callable[[Any], Any], **options: Any) -> Any:
    return create_step(id=name, input_schema=Value, output_schema=Value, execute=execute, **options)


def _workflow(name: str, *steps: Any) -> Any:
    workflow = create_workflow(id=name, input_schema=Value, output_schema=Value)
    for step in steps:
        workflow.then(step)
    return workflow.commit()


def _flow() -> Any:
    return (
        create_workflow(id="flow", input_schema=Value, output_schema=Value)
        .parallel([_step("left", _pass), _step("right", _pass)])
        .map(lambda ctx: [PAYLOAD, PAYLOAD])
        .foreach(_step("each", _pass), concurrency=2)
        .map(lambda ctx: ctx.input_data[0])
        .sleep(0.001)
        .commit()
    )


def _run_to_the_end(wf: Any, count: int, status: str) -> None:
    runs = [wf.create_run() for _ in range(count)]
    for run in runs:
        run.start_async(input_data=PAYLOAD)
    for run in runs:
        assert run.wait(timeout=30).status == status


def _suspend_and_resume(wf: Any, count: int, status: str) -> None:
    for _ in range(count):
        run = wf.create_run()
        assert run.start(input_data=PAYLOAD, timeout=30).status == "suspended"
        assert run.resume(resume_data={}).status == status


def _cancel(wf: Any, count: int, status: str) -> None:
    runs = [wf.create_run() for _ in range(count)]
    for run in runs:
        run.start_async(input_data=PAYLOAD)
    for run in runs:
        run.cancel()
        assert run.wait(timeout=30).status == status


CASES: dict[str, tuple[Callable[[], Any], Callable[[Any, int, str], None], str]] = {
    "three sync steps": (
        lambda: _workflow("three", *map(_step, "abc", [_pass] * 3)),
        _run_to_the_end,
        "success",
    ),
    "an async step": (
        lambda: _workflow("async", _step("a", _pass_async)),
        _run_to_the_end,
        "success",
    ),
    "a step that fails with attributes": (
        lambda: _workflow("fails", _step("r", _refuse)),
        _run_to_the_end,
        "failed",
    ),
    "an async step that fails": (
        lambda: _workflow("fails-async", _step("r", _refuse_async)),
        _run_to_the_end,
        "failed",
    ),
    "parallel, map, foreach and sleep": (_flow, _run_to_the_end, "success"),
    "suspend and resume": (
        lambda: _workflow("asks", _step("ask", _ask)),
        _suspend_and_resume,
        "success",
    ),
    "cancel": (lambda: _workflow("stops", _step("w", _until_aborted)), _cancel, "canceled"),
    # The body's frame kept the task, which kept the error whose traceback kept the frame.
    "an async step past its timeout": (
        lambda: _workflow("late", _step("late", _too_slow_async, timeout=0.01)),
        _run_to_the_end,
        "failed",
    ),
}


@pytest.fixture
def collector_off() -> Iterator[None]:
    """The collector disabled, keeping what a collection finds in ``gc.garbage``."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()


def _callboards(obj: object) -> str | None:
    """The name of ``obj``'s type if callboard defines it (or ``obj`` is its function)."""
    kind = type(obj)
    module = getattr(obj, "__module__", "") if isinstance(obj, FunctionType) else kind.__module__
    if not isinstance(module, str) or not module.startswith(("runtime.", "actors.")):
        return None
    return obj.__qualname__ if isinstance(obj, FunctionType) else f"{module}.{kind.__qualname__}"


def _found_by_a_collection(older: set[int]) -> Counter[str]:
    """callboard's objects among what a collection finds, by type (or function).

    Only callboard's, and only those made since ``older`` (the ids of the
    objects there were): anything else in the process, such as the test
    runner's records of an earlier test's failure, may become garbage meanwhile.
    A cycle of builtins (cells, tuples) shows up through the callboard
    function or object it holds.
    """
    gc.collect()
    found = Counter(
        name
        for obj in gc.garbage
        if id(obj) not in older and (name := _callboards(obj)) is not None
    )
    gc.garbage.clear()
    return found


def _runs_leave_no_garbage(store: str | None, case: str) -> None:
    workflow, drive, status = CASES[case]
    with Runtime(store=store) as rt:
        wf = rt.register(workflow())
        drive(wf, 10, status)  # warm up: pools, threads and caches the runs share
        gc.collect()
        gc.garbage.clear()
        older = {id(obj) for obj in gc.get_objects()}
        drive(wf, RUNS, status)
        found = _found_by_a_collection(older)
    assert sum(found.values()) <= ALLOWED, f"{RUNS} runs left: {found.most_common(12)}"


@pytest.mark.parametrize("case", list(CASES))
def test_finished_runs_leave_no_cyclic_garbage_in_memory(collector_off: None, case: str) -> None:
    _runs_leave_no_garbage(None, case)


@pytest.mark.parametrize("case", ["three sync steps", "an async step", "an async step that fails"])
def test_finished_runs_leave_no_cyclic_garbage_on_sqlite(
    collector_off: None, tmp_path: Path, case: str
) -> None:
    _runs_leave_no_garbage(str(tmp_path / "runs.db"), case)
