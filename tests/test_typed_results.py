"""``result.output``: a run's result as its workflow's output model."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from runtime import (
    RunReader,
    Runtime,
    StepContext,
    WorkflowError,
    WorkflowResult,
    create_step,
    create_workflow,
)


class Order(BaseModel):
    item: str
    quantity: int


class Priced(BaseModel):
    item: str
    total: float


def price_body(ctx: StepContext[Order]) -> Priced:
    return Priced(item=ctx.input_data.item, total=ctx.input_data.quantity * 2.5)


def confirm_body(ctx: StepContext[Priced]) -> Priced:
    earlier = ctx.get_step_result(price)
    assert isinstance(earlier, Priced)
    return earlier


price = create_step(id="price", input_schema=Order, output_schema=Priced, execute=price_body)
confirm = create_step(id="confirm", input_schema=Priced, output_schema=Priced, execute=confirm_body)
workflow = (
    create_workflow(id="orders", input_schema=Order, output_schema=Priced)
    .then(price)
    .then(confirm)
    .commit()
)


def test_output_is_the_result_as_the_output_model(runtime: Runtime) -> None:
    run = runtime.register(workflow).create_run()

    result = run.start(input_data=Order(item="tea", quantity=2))

    assert result.status == "success", result.error
    assert result.result == {"item": "tea", "total": 5.0}
    assert result.output == Priced(item="tea", total=5.0)


def test_output_is_none_unless_the_run_succeeded(runtime: Runtime) -> None:
    def fail(ctx: StepContext[Order]) -> Priced:
        raise RuntimeError("no price")

    failing = (
        create_workflow(id="failing", input_schema=Order, output_schema=Priced)
        .then(create_step(id="fail", input_schema=Order, output_schema=Priced, execute=fail))
        .commit()
    )

    result = runtime.register(failing).create_run().start(input_data={"item": "x", "quantity": 1})

    assert result.status == "failed"
    assert result.output is None


def test_results_read_through_the_workflow_know_their_output_model(runtime: Runtime) -> None:
    bound = runtime.register(workflow)
    run = bound.create_run()
    run.start(input_data={"item": "tea", "quantity": 4})

    by_id = bound.get_workflow_run_by_id(run.run_id)
    listed = bound.list_workflow_runs().runs

    assert by_id is not None
    assert by_id.output == Priced(item="tea", total=10.0)
    assert [r.output for r in listed] == [Priced(item="tea", total=10.0)]


def test_a_result_read_without_its_workflow_says_how_to_get_the_output(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    with Runtime(store=path) as runtime:
        run = runtime.register(workflow).create_run()
        typed = run.start(input_data={"item": "tea", "quantity": 2})
    with RunReader(path) as reader:
        untyped = reader.get_run(run.run_id)

    assert untyped is not None
    assert untyped == typed  # the output model is not part of the result's value
    assert untyped.result == {"item": "tea", "total": 5.0}
    with pytest.raises(WorkflowError, match="through its workflow"):
        _ = untyped.output


def test_a_copied_or_pickled_result_keeps_its_output_model(runtime: Runtime) -> None:
    run = runtime.register(workflow).create_run()
    result = run.start(input_data={"item": "tea", "quantity": 2})

    copies = [
        copy.copy(result),
        copy.deepcopy(result),
        result.model_copy(),
        pickle.loads(pickle.dumps(result)),
    ]

    for kept in copies:
        assert kept == result
        assert kept.output == Priced(item="tea", total=5.0)


def test_a_result_stays_frozen_and_its_output_model_is_no_field(runtime: Runtime) -> None:
    run = runtime.register(workflow).create_run()
    result = run.start(input_data={"item": "tea", "quantity": 2})

    with pytest.raises(ValidationError, match="frozen"):
        result.status = "failed"  # type: ignore[misc]
    assert "_output_schema" not in result.model_dump()
    assert type(result) is WorkflowResult
