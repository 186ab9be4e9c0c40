"""The ``on_start`` hook, and what every hook receives: the run's input and resource id."""

from __future__ import annotations

import threading
from typing import Any

from pydantic import BaseModel
from structlog.testing import capture_logs

from runtime import RunOutcome, Runtime, create_step, create_workflow

WAIT = 10.0


class Value(BaseModel):
    value: str


def test_on_start_runs_before_the_first_step_with_the_input_and_resource_id(
    runtime: Runtime,
) -> None:
    seen: list[tuple[str, Any]] = []

    def first(ctx):  # type: ignore[no-untyped-def]
        seen.append(("step", ctx.input_data.value))
        return ctx.input_data

    def on_start(outcome: RunOutcome) -> None:
        seen.append(("on_start", (outcome.status, outcome.input, outcome.resource_id)))

    def on_finish(outcome: RunOutcome) -> None:
        seen.append(("on_finish", (outcome.status, outcome.input, outcome.resource_id)))

    wf = runtime.register(
        create_workflow(
            id="started",
            input_schema=Value,
            output_schema=Value,
            on_start=on_start,
            on_finish=on_finish,
        )
        .then(create_step(id="first", input_schema=Value, output_schema=Value, execute=first))
        .commit()
    )
    result = wf.create_run(resource_id="user-42").start(input_data={"value": "a"}, timeout=WAIT)
    assert result.status == "success"
    assert seen == [
        ("on_start", ("running", {"value": "a"}, "user-42")),
        ("step", "a"),
        ("on_finish", ("success", {"value": "a"}, "user-42")),
    ]


def test_on_error_gets_the_input_and_an_async_on_start_is_awaited(runtime: Runtime) -> None:
    seen: list[tuple[str, Any]] = []

    async def on_start(outcome: RunOutcome) -> None:
        seen.append(("on_start", outcome.input))

    def boom(ctx):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    wf = runtime.register(
        create_workflow(
            id="failing",
            input_schema=Value,
            output_schema=Value,
            on_start=on_start,
            on_error=lambda outcome: seen.append(("on_error", outcome.input, outcome.resource_id)),
        )
        .then(create_step(id="boom", input_schema=Value, output_schema=Value, execute=boom))
        .commit()
    )
    result = wf.create_run().start(input_data={"value": "b"}, resource_id="t-1", timeout=WAIT)
    assert result.status == "failed"
    assert seen == [("on_start", {"value": "b"}), ("on_error", {"value": "b"}, "t-1")]


def test_on_start_is_called_once_not_again_on_resume_and_its_failure_changes_nothing(
    runtime: Runtime,
) -> None:
    calls: list[str] = []

    def on_start(outcome: RunOutcome) -> None:
        calls.append(outcome.run_id)
        raise ValueError("a broken hook")

    def ask(ctx):  # type: ignore[no-untyped-def]
        if ctx.resume_data is None:
            ctx.suspend({"q": 1})
        return ctx.input_data

    wf = runtime.register(
        create_workflow(id="asked", input_schema=Value, output_schema=Value, on_start=on_start)
        .then(create_step(id="ask", input_schema=Value, output_schema=Value, execute=ask))
        .commit()
    )
    run = wf.create_run()
    with capture_logs() as logs:
        assert run.start(input_data={"value": "c"}, timeout=WAIT).status == "suspended"
    assert any(log["event"] == "workflow_hook_failed" and log["hook"] == "on_start" for log in logs)
    assert run.resume(resume_data={}, timeout=WAIT).status == "success"
    assert calls == [run.run_id]


def test_a_run_cancelled_while_on_start_runs_starts_no_step(runtime: Runtime) -> None:
    entered, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def on_start(outcome: RunOutcome) -> None:
        entered.set()
        release.wait(WAIT)

    def step(ctx):  # type: ignore[no-untyped-def]
        ran.append("step")
        return ctx.input_data

    wf = runtime.register(
        create_workflow(id="slow-start", input_schema=Value, output_schema=Value, on_start=on_start)
        .then(create_step(id="step", input_schema=Value, output_schema=Value, execute=step))
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"value": "d"})
    assert entered.wait(WAIT)
    assert run.cancel() is True
    release.set()
    assert run.wait(WAIT).status == "canceled"
    assert ran == []
