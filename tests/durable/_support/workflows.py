"""Workflows whose steps leave a trace in a file, so that another process can count them.

Each step appends ``start STEP`` and ``end STEP`` to the file named by the run's
request context (``log``), so a test can tell which steps ran, how often, and
in which process, even after the process that ran them was killed. A step
named by ``hold_step`` waits, after its ``start`` line, for as long as the file
named by ``hold_file`` exists: a test removes the file to let it go on (or
kills the process meanwhile). With ``announce`` it first prints
``holding STEP RUN_ID`` on stdout, for a parent process to wait on.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from runtime import Workflow, create_step, create_workflow
from tests._support import Value

HOLD_LIMIT = 30.0
"""Seconds a held step waits at most, so that a broken test fails instead of hanging."""


def append_line(path: str | os.PathLike[str], line: str) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")


def read_lines(path: str | os.PathLike[str]) -> list[str]:
    log = Path(path)
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def count(path: str | os.PathLike[str], line: str) -> int:
    return read_lines(path).count(line)


def _hold(ctx: Any) -> None:
    context = ctx.request_context
    if context.get("hold_step") != ctx.step_id:
        return
    hold_file = context["hold_file"]
    if not os.path.exists(hold_file):
        return
    if context.get("announce"):
        # One write with its newline: print() writes the newline apart, and a line the
        # main thread prints meanwhile ("ready ...") would land in the middle.
        sys.stdout.write(f"holding {ctx.step_id} {ctx.run_id}\n")
        sys.stdout.flush()
    deadline = time.monotonic() + HOLD_LIMIT
    while os.path.exists(hold_file) and time.monotonic() < deadline:
        time.sleep(0.005)


def logged_step(step_id: str, suffix: str):
    def execute(ctx: Any) -> Value:
        log = ctx.request_context["log"]
        append_line(log, f"start {step_id}")
        _hold(ctx)
        append_line(log, f"end {step_id}")
        return Value(value=f"{ctx.input_data.value}-{suffix}")

    return create_step(id=step_id, input_schema=Value, output_schema=Value, execute=execute)


def logged_workflow(workflow_id: str = "logged") -> Workflow[Value, Value]:
    """Three steps, alpha, beta and gamma, each adding its letter: ``x`` becomes ``x-a-b-c``."""
    return (
        create_workflow(id=workflow_id, input_schema=Value, output_schema=Value)
        .then(logged_step("alpha", "a"))
        .then(logged_step("beta", "b"))
        .then(logged_step("gamma", "c"))
        .commit()
    )


def _finish_logged(outcome: Any) -> None:
    """An ``on_finish`` hook: logs ``on_finish``, and may be held as a step is (``hold_step``)."""
    context = outcome.request_context
    append_line(context["log"], f"on_finish {outcome.status}")
    if context.get("hold_step") == "on_finish" and os.path.exists(context["hold_file"]):
        if context.get("announce"):
            sys.stdout.write(f"holding on_finish {outcome.run_id}\n")
            sys.stdout.flush()
        deadline = time.monotonic() + HOLD_LIMIT
        while os.path.exists(context["hold_file"]) and time.monotonic() < deadline:
            time.sleep(0.005)


def finished_workflow() -> Workflow[Value, Value]:
    """``logged``'s three steps and an ``on_finish`` hook that logs (and may be held)."""
    return (
        create_workflow(
            id="finished", input_schema=Value, output_schema=Value, on_finish=_finish_logged
        )
        .then(logged_step("alpha", "a"))
        .then(logged_step("beta", "b"))
        .then(logged_step("gamma", "c"))
        .commit()
    )


def blocker_workflow() -> Workflow[Value, Value]:
    """One step, ``block``, meant to be held so that it keeps a concurrency slot."""
    return (
        create_workflow(id="blocker", input_schema=Value, output_schema=Value)
        .then(logged_step("block", "z"))
        .commit()
    )


class Decision(BaseModel):
    ok: bool


def asking_step(step_id: str = "ask") -> Any:
    """Logs ``start``; suspends until resumed with a :class:`Decision`; then logs ``end``."""

    def execute(ctx: Any) -> Value:
        log = ctx.request_context["log"]
        append_line(log, f"start {step_id}")
        if ctx.resume_data is None:
            ctx.suspend({"question": f"go on with {ctx.input_data.value}?"})
        _hold(ctx)  # resumed: a test may hold it here, to kill its process meanwhile
        append_line(log, f"end {step_id}")
        return Value(value=f"{ctx.input_data.value}-{'yes' if ctx.resume_data.ok else 'no'}")

    return create_step(
        id=step_id,
        input_schema=Value,
        output_schema=Value,
        resume_schema=Decision,
        execute=execute,
    )


def sleepy_workflow() -> Workflow[Value, Value]:
    """``alpha``, a sleep of a minute, ``gamma``: a run that is ``waiting`` for a long time."""
    return (
        create_workflow(id="sleepy", input_schema=Value, output_schema=Value)
        .then(logged_step("alpha", "a"))
        .sleep(60, id="nap")
        .then(logged_step("gamma", "c"))
        .commit()
    )


def asking_workflow() -> Workflow[Value, Value]:
    """``alpha``, ``ask`` (suspends until resumed), ``gamma``: ``x`` becomes ``x-a-yes-c``."""
    return (
        create_workflow(id="asking", input_schema=Value, output_schema=Value)
        .then(logged_step("alpha", "a"))
        .then(asking_step())
        .then(logged_step("gamma", "c"))
        .commit()
    )


def asking_finished_workflow() -> Workflow[Value, Value]:
    """``asking``'s steps and ``finished``'s ``on_finish`` hook, which logs (and may be held)."""
    return (
        create_workflow(
            id="asking-finished",
            input_schema=Value,
            output_schema=Value,
            on_finish=_finish_logged,
        )
        .then(logged_step("alpha", "a"))
        .then(asking_step())
        .then(logged_step("gamma", "c"))
        .commit()
    )


def asking_items_workflow() -> Workflow[Value, Value]:
    """``ask`` for each of two items, ``x1`` and ``x2`` (each suspends until resumed)."""
    return (
        create_workflow(id="asking-items", input_schema=Value, output_schema=Value)
        .map(lambda ctx: [{"value": f"{ctx.input_data['value']}{n}"} for n in (1, 2)])
        .foreach(asking_step(), concurrency=2)
        .map(lambda ctx: {"value": ",".join(item["value"] for item in ctx.input_data)})
        .commit()
    )


logged = logged_workflow()
finished = finished_workflow()
blocker = blocker_workflow()
sleepy = sleepy_workflow()
asking = asking_workflow()
asking_finished = asking_finished_workflow()
asking_items = asking_items_workflow()


def items_waiting(store: str | os.PathLike[str], folder: Path) -> str:
    """A run of :data:`asking_items` on ``store``, both items suspended; its id.

    Started to hold each item it resumes for as long as ``folder / "hold"`` exists,
    logging to ``folder / "items.log"``.
    """
    from runtime import Runtime

    hold = folder / "hold"
    hold.touch()
    context = {"log": str(folder / "items.log"), "hold_step": "ask", "hold_file": str(hold)}
    with Runtime(store=store) as rt:
        run = rt.register(asking_items).create_run()
        waiting = run.start(input_data={"value": "x"}, request_context=context, timeout=30)
    assert waiting.status == "suspended" and len(waiting.suspended) == 2, waiting
    return run.run_id


def both_items_approved(store: str | os.PathLike[str], folder: Path, run_id: str) -> Any:
    """Two approvers on ``store``: a runtime resumes item 0 of :func:`items_waiting`'s run
    and drives it; while item 0 runs, a client (as another process would) resumes item 1.

    Returns the run's result once both items ended.
    """
    from runtime import Runtime
    from tests._support import wait_until

    log = folder / "items.log"
    with Runtime(store=store) as driver, Runtime(store=store, role="client") as client:
        driver.register(asking_items).create_run(run_id).resume_async(
            step="ask", for_each_index=0, resume_data={"ok": True}
        )
        wait_until(lambda: count(log, "start ask") == 3, timeout=30, what="item 0 runs")
        other = client.register(asking_items).create_run(run_id)
        other.resume_async(step="ask", for_each_index=1, resume_data={"ok": False})
        wait_until(lambda: count(log, "start ask") == 4, timeout=30, what="item 1 runs beside")
        (folder / "hold").unlink()
        return other.wait(timeout=30)
