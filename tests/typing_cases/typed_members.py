"""What a checker must catch and allow in step bodies, members and run listings.

Type-checked by tests/test_typing.py; never imported or run.
"""

from __future__ import annotations

from typing import Any, reveal_type

from pydantic import BaseModel

from runtime import (
    RunStreamEvent,
    Runtime,
    StepContext,
    create_step,
    create_workflow,
)
from runtime.testing import Harness


class Order(BaseModel):
    item: str


class Receipt(BaseModel):
    total: float


class Label(BaseModel):
    text: str


class Both(BaseModel):
    receipt: Receipt
    label: Label


def pay(ctx: StepContext[Order]) -> Receipt:
    return Receipt(total=1.0)


def label(ctx: StepContext[Order]) -> Label:
    return Label(text=ctx.input_data.item)


paid = create_step(id="receipt", input_schema=Order, output_schema=Receipt, execute=pay)
labelled = create_step(id="label", input_schema=Order, output_schema=Label, execute=label)
members = [paid, labelled]  # steps of different outputs join in one list
reveal_type(members)  # reveals: list[Step[Order, BaseModel]]


def echo(ctx: StepContext[BaseModel]) -> dict[str, Any]:  # one body for any input
    return ctx.input_data.model_dump()


echoed = create_step(id="echo", input_schema=Order, output_schema=Order, execute=echo)

# A body's return is checked against the output schema, in every form.
create_step(id="wrong", input_schema=Order, output_schema=Receipt, execute=label)  # error: arg-type


@create_step(input_schema=Order, output_schema=Receipt)  # error: arg-type
def wrong_decorated(ctx: StepContext[Order]) -> Label:
    return Label(text="no")


async def wrong_async(ctx: StepContext[Order]) -> Label:
    return Label(text="no")


bad = wrong_async
create_step(id="w", input_schema=Order, output_schema=Receipt, execute=bad)  # error: arg-type

workflow = (
    create_workflow(id="checkout", input_schema=Order, output_schema=Both)
    .parallel(members)
    .commit()
)

with Runtime() as runtime:
    bound = runtime.register(workflow)
    page = bound.list_workflow_runs()
    first = page.runs[0]
    reveal_type(first.output)  # reveals: Both | None
    assert first.output is not None
    count: str = first.output.receipt.total  # error: assignment
    for event in bound.create_run().stream():
        shown: RunStreamEvent = event  # the name of what a stream yields
        if shown.type == "run_finish":
            reveal_type(shown)  # reveals: RunFinishEvent


def fake_label(ctx: StepContext[Label]) -> Label:
    return ctx.input_data


with Harness() as harness:
    harness.override(labelled, lambda ctx: Label(text=ctx.input_data.item))
    harness.override(labelled, fake_label)  # error: arg-type
    harness.override("label", fake_label)  # by id: the checker cannot know
