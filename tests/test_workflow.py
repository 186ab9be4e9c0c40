"""Workflows: building, committing, chaining step outputs, and querying runs by id."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from runtime import (
    Runtime,
    StepValidationError,
    Workflow,
    WorkflowDefinitionError,
    WorkflowError,
    create_step,
    create_workflow,
)
from tests._support import Count, Value, shout_step


class Detailed(BaseModel):
    value: str
    extra: int


def simple_workflow(workflow_id: str = "simple"):
    return (
        create_workflow(id=workflow_id, input_schema=Value, output_schema=Value)
        .then(shout_step())
        .commit()
    )


# --- definitions --------------------------------------------------------------------


def test_create_workflow_returns_an_uncommitted_workflow() -> None:
    workflow = create_workflow(id="w", input_schema=Value, output_schema=Value)
    assert isinstance(workflow, Workflow)
    assert workflow.id == "w"
    assert workflow.input_schema is Value
    assert workflow.output_schema is Value
    assert workflow.state_schema is None
    assert not workflow.committed
    assert workflow.runtime is None


def test_then_adds_steps_in_order_and_commit_freezes_them() -> None:
    first, second = shout_step("first"), shout_step("second")
    workflow = create_workflow(id="w", input_schema=Value, output_schema=Value)
    assert workflow.then(first) is workflow
    workflow.then(second)
    assert workflow.commit() is workflow
    assert workflow.committed
    assert workflow.steps == (first, second)
    assert [step.id for step in workflow.plan.steps] == ["first", "second"]


def test_committing_twice_does_nothing() -> None:
    workflow = simple_workflow()
    plan = workflow.plan
    assert workflow.commit().plan is plan


def test_commit_refuses_an_empty_workflow() -> None:
    workflow = create_workflow(id="empty", input_schema=Value, output_schema=Value)
    with pytest.raises(WorkflowDefinitionError, match="no steps") as caught:
        workflow.commit()
    assert isinstance(caught.value, WorkflowError)
    assert isinstance(caught.value, ValueError)
    assert not workflow.committed


def test_commit_refuses_two_steps_with_the_same_id() -> None:
    workflow = (
        create_workflow(id="dupes", input_schema=Value, output_schema=Value)
        .then(shout_step("same"))
        .then(shout_step("other"))
        .then(shout_step("same"))
    )
    with pytest.raises(WorkflowDefinitionError, match="'same'") as caught:
        workflow.commit()
    assert isinstance(caught.value, ValueError)


def test_the_same_step_twice_is_a_duplicate_id() -> None:
    step = shout_step()
    workflow = (
        create_workflow(id="w", input_schema=Value, output_schema=Value).then(step).then(step)
    )
    with pytest.raises(WorkflowDefinitionError):
        workflow.commit()


def test_then_after_commit_raises() -> None:
    workflow = simple_workflow()
    with pytest.raises(WorkflowDefinitionError, match="committed"):
        workflow.then(shout_step("late"))
    assert [step.id for step in workflow.steps] == ["shout"]


def test_then_refuses_something_that_is_not_a_step() -> None:
    workflow = create_workflow(id="w", input_schema=Value, output_schema=Value)
    with pytest.raises(TypeError):
        workflow.then(lambda ctx: ctx)  # type: ignore[arg-type]


def test_create_run_on_an_uncommitted_workflow_raises(runtime: Runtime) -> None:
    workflow = create_workflow(id="open", input_schema=Value, output_schema=Value).then(
        shout_step()
    )
    with pytest.raises(WorkflowDefinitionError, match="commit"):
        workflow.create_run()


def test_register_refuses_an_uncommitted_workflow(runtime: Runtime) -> None:
    workflow = create_workflow(id="open", input_schema=Value, output_schema=Value).then(
        shout_step()
    )
    with pytest.raises(WorkflowDefinitionError):
        runtime.register(workflow)


@pytest.mark.parametrize("schema_field", ["input_schema", "output_schema", "state_schema"])
@pytest.mark.parametrize("bad", [dict, int, Value(value="an instance, not a class"), "Value"])
def test_create_workflow_refuses_schemas_that_are_not_models(schema_field: str, bad) -> None:
    schemas = {"input_schema": Value, "output_schema": Value, schema_field: bad}
    with pytest.raises(TypeError, match=schema_field):
        create_workflow(id="w", **schemas)


@pytest.mark.parametrize("bad_id", ["", None, 3])
def test_create_workflow_refuses_an_id_that_is_not_a_non_empty_string(bad_id) -> None:
    with pytest.raises(WorkflowDefinitionError):
        create_workflow(id=bad_id, input_schema=Value, output_schema=Value)


# --- create_run and queries ---------------------------------------------------------


@pytest.mark.parametrize("bad_run_id", [7, b"bytes-id", 1.5, ["list"]])
def test_create_run_refuses_a_run_id_that_is_not_a_string(runtime: Runtime, bad_run_id) -> None:
    wf = runtime.register(simple_workflow())
    with pytest.raises(TypeError, match="run_id"):
        wf.create_run(run_id=bad_run_id)


def test_create_run_refuses_an_empty_run_id(runtime: Runtime) -> None:
    wf = runtime.register(simple_workflow())
    with pytest.raises(ValueError, match="empty"):
        wf.create_run(run_id="")


@pytest.mark.parametrize("bad_run_id", [7, None, b"bytes-id"])
def test_a_query_with_a_run_id_that_is_not_a_string_raises_type_error(
    runtime: Runtime, bad_run_id
) -> None:
    wf = runtime.register(simple_workflow())
    with pytest.raises(TypeError, match="run_id"):
        wf.get_workflow_run_execution_result(bad_run_id)


def test_a_query_given_start_async_s_result_instead_of_its_run_id_says_to_pass_run_id(
    runtime: Runtime,
) -> None:
    wf = runtime.register(simple_workflow())
    started = wf.create_run().start_async(input_data={"value": "x"})
    with pytest.raises(TypeError, match=r"got StartAsyncResult \(pass its \.run_id"):
        wf.get_workflow_run_execution_result(started)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"pass its \.run_id"):
        wf.create_run(run_id=started)  # type: ignore[arg-type]


def test_a_query_for_an_unknown_run_id_returns_none(runtime: Runtime) -> None:
    wf = runtime.register(simple_workflow())
    assert wf.get_workflow_run_execution_result("no-such-run") is None
    assert wf.get_workflow_run_execution_result("") is None


def test_a_query_for_a_run_of_another_workflow_returns_none(runtime: Runtime) -> None:
    mine = runtime.register(simple_workflow("mine"))
    theirs = runtime.register(simple_workflow("theirs"))
    run = theirs.create_run()
    run.start(input_data={"value": "theirs"}, timeout=5)
    assert theirs.get_workflow_run_execution_result(run.run_id) is not None
    assert mine.get_workflow_run_execution_result(run.run_id) is None


# --- how step outputs flow ------------------------------------------------------------


def test_each_step_receives_the_previous_step_output(runtime: Runtime) -> None:
    add_a = create_step(
        id="add_a",
        input_schema=Value,
        output_schema=Value,
        execute=lambda ctx: Value(value=ctx.input_data.value + "a"),
    )
    add_b = create_step(
        id="add_b",
        input_schema=Value,
        output_schema=Value,
        execute=lambda ctx: Value(value=ctx.input_data.value + "b"),
    )
    workflow = (
        create_workflow(id="chain", input_schema=Value, output_schema=Value)
        .then(add_a)
        .then(add_b)
        .commit()
    )
    result = runtime.register(workflow).create_run().start(input_data={"value": ">"}, timeout=5)
    assert result.steps["add_a"].payload == {"value": ">"}
    assert result.steps["add_b"].payload == {"value": ">a"}
    assert result.result == {"value": ">ab"}


def test_a_sync_step_may_return_a_dict_instead_of_a_model(runtime: Runtime) -> None:
    as_dict = create_step(
        id="as_dict",
        input_schema=Value,
        output_schema=Detailed,
        execute=lambda ctx: {"value": ctx.input_data.value, "extra": 3},
    )
    workflow = (
        create_workflow(id="dicts", input_schema=Value, output_schema=Detailed)
        .then(as_dict)
        .commit()
    )
    result = runtime.register(workflow).create_run().start(input_data={"value": "d"}, timeout=5)
    assert result.status == "success"
    assert result.steps["as_dict"].output == {"value": "d", "extra": 3}
    assert result.result == {"value": "d", "extra": 3}


def test_the_next_step_may_take_a_subset_of_the_previous_output(runtime: Runtime) -> None:
    seen: list[object] = []
    detail = create_step(
        id="detail",
        input_schema=Value,
        output_schema=Detailed,
        execute=lambda ctx: Detailed(value=ctx.input_data.value, extra=42),
    )

    def narrow(ctx):
        seen.append(ctx.input_data)
        return Value(value=ctx.input_data.value * 2)

    narrow_step = create_step(id="narrow", input_schema=Value, output_schema=Value, execute=narrow)
    workflow = (
        create_workflow(id="subset", input_schema=Value, output_schema=Value)
        .then(detail)
        .then(narrow_step)
        .commit()
    )
    result = runtime.register(workflow).create_run().start(input_data={"value": "s"}, timeout=5)
    assert result.status == "success"
    assert seen == [Value(value="s")]
    assert result.result == {"value": "ss"}


def test_a_step_input_that_does_not_fit_its_schema_fails_the_run(runtime: Runtime) -> None:
    ran: list[str] = []
    shout = shout_step()

    def count(ctx):
        ran.append("count")
        return Count(count=ctx.input_data.count)

    count_step = create_step(id="count_it", input_schema=Count, output_schema=Count, execute=count)
    # Step to step, commit() refuses this chain (tests/test_schema_fit.py); a map's output
    # is known only when it runs, so there the run finds the misfit.
    workflow = (
        create_workflow(id="mismatch", input_schema=Value, output_schema=Count)
        .then(shout)
        .map(lambda ctx: ctx.input_data, id="as-is")
        .then(count_step)
        .commit()
    )
    result = runtime.register(workflow).create_run().start(input_data={"value": "m"}, timeout=5)
    assert result.status == "failed"
    assert ran == []
    assert result.steps["shout"].status == "success"
    failed = result.steps["count_it"]
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error.name == "StepValidationError"
    assert "'count_it'" in failed.error.message
    assert "Count" in failed.error.message
    assert result.error == failed.error


def test_the_workflow_result_is_validated_against_its_output_schema(runtime: Runtime) -> None:
    class MaybeCount(BaseModel):
        count: int | None = None

    # commit() lets int | None meet int (it may fit); the None this step outputs does not.
    last = create_step(
        id="last", input_schema=Value, output_schema=MaybeCount, execute=lambda ctx: MaybeCount()
    )
    workflow = (
        create_workflow(id="wrong-output", input_schema=Value, output_schema=Count)
        .then(last)
        .commit()
    )
    result = runtime.register(workflow).create_run().start(input_data={"value": "o"}, timeout=5)
    assert result.status == "failed"
    assert result.result is None
    assert result.error is not None
    assert result.error.name == "StepValidationError"
    assert "'last'" in result.error.message
    assert "Count" in result.error.message
    assert result.steps["last"].status == "failed"
    assert result.steps["last"].error == result.error


def test_the_workflow_result_is_the_last_output_as_the_workflow_schema_reads_it(
    runtime: Runtime,
) -> None:
    detail = create_step(
        id="detail",
        input_schema=Value,
        output_schema=Detailed,
        execute=lambda ctx: Detailed(value=ctx.input_data.value, extra=1),
    )
    workflow = (
        create_workflow(id="narrow-result", input_schema=Value, output_schema=Value)
        .then(detail)
        .commit()
    )
    result = runtime.register(workflow).create_run().start(input_data={"value": "r"}, timeout=5)
    assert result.status == "success"
    assert result.steps["detail"].output == {"value": "r", "extra": 1}
    assert result.result == {"value": "r"}


def test_step_validation_error_is_a_workflow_error_and_a_value_error() -> None:
    assert issubclass(StepValidationError, WorkflowError)
    assert issubclass(StepValidationError, ValueError)
