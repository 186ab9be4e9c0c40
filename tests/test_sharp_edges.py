"""Sharp edges a new user found: the original of a registered workflow, a resumed step's times."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from runtime import Runtime, StepContext, UnboundWorkflowError, create_step, create_workflow
from tests._support import Value

WAIT = 10.0


def _workflow(workflow_id: str) -> Any:
    step = create_step(
        id="echo", input_schema=Value, output_schema=Value, execute=lambda ctx: ctx.input_data
    )
    return (
        create_workflow(id=workflow_id, input_schema=Value, output_schema=Value).then(step).commit()
    )


def test_the_original_of_a_registered_workflow_is_refused_while_its_runtime_runs(
    tmp_path: Path,
) -> None:
    workflow = _workflow("registered_original")
    with Runtime(store=tmp_path / "runs.db") as rt:
        bound = rt.register(workflow)
        with pytest.raises(UnboundWorkflowError, match=r"use the workflow register\(\) returned"):
            workflow.create_run()
        with pytest.raises(UnboundWorkflowError):
            workflow.get_workflow_run_execution_result("any")
        with pytest.raises(UnboundWorkflowError):
            workflow.list_workflow_runs()
        # The bound copy is unaffected, and its runs reach the runtime's store.
        result = bound.create_run().start(input_data={"value": "x"}, timeout=WAIT)
        assert result.status == "success"
        assert rt.store is not None and rt.store.load(result.run_id) is not None


def test_a_runtime_not_started_yet_counts_too() -> None:
    workflow = _workflow("registered_before_start")
    rt = Runtime()
    rt.register(workflow)
    with pytest.raises(UnboundWorkflowError):
        workflow.create_run()
    rt.stop()


@pytest.mark.usefixtures("default_runtime_stopped_after")
def test_once_its_runtime_stopped_the_original_runs_on_the_default_runtime() -> None:
    workflow = _workflow("registered_then_stopped")
    with Runtime() as rt:
        rt.register(workflow)
    result = workflow.create_run().start(input_data={"value": "x"}, timeout=WAIT)
    assert result.status == "success"


@pytest.mark.usefixtures("default_runtime_stopped_after")
def test_a_workflow_never_registered_runs_on_the_default_runtime_as_before() -> None:
    workflow = _workflow("never_registered")
    assert workflow.create_run().start(input_data={"value": "y"}, timeout=WAIT).status == "success"
    # Using it on the default runtime registers it there: that is no reason to refuse.
    assert workflow.create_run().start(input_data={"value": "z"}, timeout=WAIT).status == "success"


def test_a_resumed_step_keeps_when_it_first_started_and_records_when_it_was_resumed(
    runtime: Runtime,
) -> None:
    def ask(ctx: StepContext[Value]) -> Value:
        if ctx.resume_data is None:
            ctx.suspend({"question": "go?"})
        return ctx.input_data

    step = create_step(id="ask", input_schema=Value, output_schema=Value, execute=ask)
    wf = runtime.register(
        create_workflow(id="resumed_times", input_schema=Value, output_schema=Value)
        .then(step)
        .commit()
    )
    run = wf.create_run()
    suspended = run.start(input_data={"value": "v"}, timeout=WAIT)
    first_start = suspended.steps["ask"].started_at
    assert first_start is not None and suspended.steps["ask"].resumed_at is None
    time.sleep(0.05)  # the time a person takes to answer

    done = run.resume(resume_data={"yes": True}, timeout=WAIT)

    record = done.steps["ask"]
    assert record.status == "success"
    assert record.started_at == first_start
    assert record.resumed_at is not None and record.ended_at is not None
    assert first_start < record.resumed_at <= record.ended_at
    assert (record.resumed_at - first_start).total_seconds() >= 0.05


def test_a_foreach_records_when_its_items_were_resumed(runtime: Runtime) -> None:
    def ask(ctx: StepContext[Value]) -> Value:
        if ctx.resume_data is None:
            ctx.suspend({"question": ctx.input_data.value})
        return ctx.input_data

    step = create_step(id="ask", input_schema=Value, output_schema=Value, execute=ask)
    wf = runtime.register(
        create_workflow(id="resumed_items", input_schema=Value, output_schema=Value)
        .map(lambda ctx: [{"value": "a"}, {"value": "b"}])
        .foreach(step)
        .map(lambda ctx: ctx.input_data[0])
        .commit()
    )
    run = wf.create_run()
    suspended = run.start(input_data={"value": "v"}, timeout=WAIT)
    assert suspended.steps["ask"].resumed_at is None
    assert suspended.steps["ask"].suspend_payload == {
        "0": {"question": "a"},
        "1": {"question": "b"},
    }

    half = run.resume(step="ask[0]", resume_data={}, timeout=WAIT)
    first_resume = half.steps["ask"].resumed_at
    assert half.status == "suspended" and first_resume is not None  # it was None
    done = run.resume(step="ask[1]", resume_data={}, timeout=WAIT)

    record = done.steps["ask"]
    assert done.status == "success", done.error
    assert record.resumed_at is not None and first_resume <= record.resumed_at
    assert record.started_at is not None and record.started_at < first_resume
