"""Partial state: a step with a state schema of its own updates only those keys."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, model_validator

from runtime import Runtime, WorkflowDefinitionError, create_step, create_workflow
from tests._support import Value

WAIT = 10.0


class Order(BaseModel):
    value: int
    label: str
    notes: list[str] = []


class ValueOnly(BaseModel):
    value: int


class LabelOnly(BaseModel):
    label: str


def test_a_step_updates_only_the_keys_of_its_state_schema(runtime: Runtime) -> None:
    seen: list[Any] = []

    def bump(ctx: Any) -> Value:
        seen.append(ctx.state)
        ctx.set_state({"value": ctx.state.value + 1})
        seen.append(ctx.state)
        return ctx.input_data

    def read(ctx: Any) -> Value:
        seen.append(ctx.state)
        return ctx.input_data

    workflow = runtime.register(
        create_workflow(id="partial", input_schema=Value, output_schema=Value, state_schema=Order)
        .then(
            create_step(
                id="bump",
                input_schema=Value,
                output_schema=Value,
                state_schema=ValueOnly,
                execute=bump,
            )
        )
        .then(create_step(id="read", input_schema=Value, output_schema=Value, execute=read))
        .commit()
    )
    result = workflow.create_run().start(
        input_data={"value": "x"},
        initial_state={"value": 1, "label": "keep me", "notes": ["n"]},
        output_options={"include_state": True},
        timeout=WAIT,
    )
    assert result.status == "success", result.error
    assert seen == [
        ValueOnly(value=1),
        ValueOnly(value=2),
        Order(value=2, label="keep me", notes=["n"]),
    ]
    assert result.state == {"value": 2, "label": "keep me", "notes": ["n"]}


def parallel_setters(gate: threading.Barrier) -> tuple[Any, Any]:
    def set_value(ctx: Any) -> Value:
        gate.wait(WAIT)  # both have read the same state before either sets it
        ctx.set_state(ValueOnly(value=ctx.state.value + 10))
        return ctx.input_data

    def set_label(ctx: Any) -> Value:
        gate.wait(WAIT)
        ctx.set_state({"label": ctx.state.label.upper()})
        return ctx.input_data

    return (
        create_step(
            id="set_value",
            input_schema=Value,
            output_schema=Value,
            state_schema=ValueOnly,
            execute=set_value,
        ),
        create_step(
            id="set_label",
            input_schema=Value,
            output_schema=Value,
            state_schema=LabelOnly,
            execute=set_label,
        ),
    )


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_parallel_steps_that_set_different_keys_both_keep_theirs(
    store: str, tmp_path: Path
) -> None:
    gate = threading.Barrier(2)
    steps = parallel_setters(gate)
    workflow = (
        create_workflow(id="both", input_schema=Value, output_schema=Any_, state_schema=Order)
        .parallel(list(steps))
        .commit()
    )
    with Runtime(store=None if store == "memory" else tmp_path / "runs.db") as rt:
        result = (
            rt.register(workflow)
            .create_run()
            .start(
                input_data={"value": "x"},
                initial_state={"value": 1, "label": "ab"},
                output_options={"include_state": True},
                timeout=WAIT,
            )
        )
    assert result.status == "success", result.error
    assert result.state == {"value": 11, "label": "AB", "notes": []}


class Any_(BaseModel):
    model_config = {"extra": "allow"}


def test_a_parallel_step_that_changes_nothing_keeps_its_siblings_change(
    runtime: Runtime,
) -> None:
    first_done = threading.Event()

    def setter(ctx: Any) -> Value:
        ctx.set_state({"value": 5, "label": "set"})  # the whole state, no schema of its own
        first_done.set()
        return ctx.input_data

    def idle(ctx: Any) -> Value:
        first_done.wait(WAIT)  # ends after the setter, having read the old state
        return ctx.input_data

    workflow = runtime.register(
        create_workflow(id="idle", input_schema=Value, output_schema=Any_, state_schema=Order)
        .parallel(
            [
                create_step(id="setter", input_schema=Value, output_schema=Value, execute=setter),
                create_step(id="idle", input_schema=Value, output_schema=Value, execute=idle),
            ]
        )
        .commit()
    )
    result = workflow.create_run().start(
        input_data={"value": "x"},
        initial_state={"value": 1, "label": "old"},
        output_options={"include_state": True},
        timeout=WAIT,
    )
    assert result.status == "success", result.error
    assert result.state == {"value": 5, "label": "set", "notes": []}


class Bounded(BaseModel):
    value: int
    limit: int

    @model_validator(mode="after")
    def _within(self) -> Bounded:
        if self.value > self.limit:
            raise ValueError("value is over the limit")
        return self


def test_the_merge_is_validated_against_the_workflows_state_schema(runtime: Runtime) -> None:
    def too_much(ctx: Any) -> Value:
        ctx.set_state({"value": 99})
        return ctx.input_data

    workflow = runtime.register(
        create_workflow(id="bounded", input_schema=Value, output_schema=Value, state_schema=Bounded)
        .then(
            create_step(
                id="too_much",
                input_schema=Value,
                output_schema=Value,
                state_schema=ValueOnly,
                execute=too_much,
            )
        )
        .commit()
    )
    result = workflow.create_run().start(
        input_data={"value": "x"},
        initial_state={"value": 1, "limit": 10},
        output_options={"include_state": True},
        timeout=WAIT,
    )
    assert result.status == "failed"
    assert result.error is not None and result.error.name == "StepValidationError"
    assert "merged into the state" in result.error.message
    assert "over the limit" in result.error.message
    assert result.state == {"value": 1, "limit": 10}


def test_a_step_state_schema_with_keys_the_workflow_lacks_is_refused_at_commit() -> None:
    class Stranger(BaseModel):
        other: int

    step = create_step(
        id="stranger",
        input_schema=Value,
        output_schema=Value,
        state_schema=Stranger,
        execute=lambda ctx: ctx.input_data,
    )
    workflow = create_workflow(
        id="stranger", input_schema=Value, output_schema=Value, state_schema=Order
    ).then(step)
    with pytest.raises(WorkflowDefinitionError, match="'other'"):
        workflow.commit()


@pytest.mark.parametrize("where", ["then", "parallel", "foreach"])
def test_a_nested_workflow_whose_state_schema_the_parent_lacks_is_refused_at_commit(
    where: str,
) -> None:
    # Its steps read the run's state as the top workflow's model: a key of its own
    # schema that the top one lacks failed the run (AttributeError) once nested.
    class Tally(BaseModel):
        tally: int = 0

    child = (
        create_workflow(id="child", input_schema=Value, output_schema=Value, state_schema=Tally)
        .then(
            create_step(
                id="count", input_schema=Value, output_schema=Value, execute=lambda c: c.input_data
            )
        )
        .commit()
    )

    def nest(parent: Any) -> Any:
        if where == "then":
            return parent.then(child)
        if where == "parallel":
            return parent.parallel([child]).map(lambda ctx: ctx.input_data["child"])
        return (
            parent.map(lambda ctx: [ctx.input_data]).foreach(child).map(lambda c: c.input_data[0])
        )

    for parent_schema, named in ((Order, "'tally'"), (None, "has none")):
        parent = create_workflow(
            id="parent", input_schema=Value, output_schema=Value, state_schema=parent_schema
        )
        with pytest.raises(WorkflowDefinitionError, match=named):
            nest(parent).commit()

    class Wider(BaseModel):
        tally: int = 0
        more: str = ""

    fits = create_workflow(id="parent", input_schema=Value, output_schema=Value, state_schema=Wider)
    nest(fits).commit()


def test_a_nested_step_whose_state_schema_the_top_workflow_lacks_is_refused_at_commit() -> None:
    class Stranger(BaseModel):
        other: int = 0

    child = (
        create_workflow(id="child", input_schema=Value, output_schema=Value)
        .then(
            create_step(
                id="stranger",
                input_schema=Value,
                output_schema=Value,
                state_schema=Stranger,
                execute=lambda ctx: ctx.input_data,
            )
        )
        .commit()
    )
    parent = create_workflow(
        id="parent", input_schema=Value, output_schema=Value, state_schema=Order
    ).then(child)
    with pytest.raises(WorkflowDefinitionError, match="'other'"):
        parent.commit()


def test_partial_state_set_before_a_suspend_is_kept_through_the_resume(runtime: Runtime) -> None:
    def ask(ctx: Any) -> Value:
        if ctx.resume_data is None:
            ctx.set_state({"label": "asked"})
            ctx.suspend({"question": "go on?"})
        ctx.set_state({"label": ctx.state.label + " and answered"})
        return ctx.input_data

    workflow = runtime.register(
        create_workflow(id="ask", input_schema=Value, output_schema=Value, state_schema=Order)
        .then(
            create_step(
                id="ask",
                input_schema=Value,
                output_schema=Value,
                state_schema=LabelOnly,
                execute=ask,
            )
        )
        .commit()
    )
    run = workflow.create_run()
    suspended = run.start(
        input_data={"value": "x"},
        initial_state={"value": 3, "label": "new"},
        output_options={"include_state": True},
        timeout=WAIT,
    )
    assert suspended.status == "suspended"
    assert suspended.state == {"value": 3, "label": "asked", "notes": []}
    done = run.resume(resume_data={"yes": True}, timeout=WAIT)
    assert done.status == "success", done.error
    assert done.state == {"value": 3, "label": "asked and answered", "notes": []}
