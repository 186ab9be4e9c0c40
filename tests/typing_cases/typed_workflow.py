"""Checked by mypy in tests/test_typing.py: each line's reveals and error marks must hold.

Type-checked only, never run (its last lines are errors on purpose).
"""

from __future__ import annotations

from typing import reveal_type

from pydantic import BaseModel

from runtime import Runtime, StepContext, create_step, create_workflow


class Order(BaseModel):
    item: str
    quantity: int


class Priced(BaseModel):
    item: str
    total: float


class Cart(BaseModel):
    orders: int = 0


def price_body(ctx: StepContext[Order, Cart]) -> Priced:
    reveal_type(ctx.input_data)  # reveals: Order
    reveal_type(ctx.state)  # reveals: Cart
    return Priced(item=ctx.input_data.item, total=ctx.input_data.quantity * 2.5)


price = create_step(id="price", input_schema=Order, output_schema=Priced, execute=price_body)
reveal_type(price)  # reveals: Step[Order, Priced]


@create_step(input_schema=Priced, output_schema=Priced)
def confirm(ctx: StepContext[Priced]) -> Priced:
    earlier = ctx.get_step_result(price)
    reveal_type(earlier)  # reveals: Priced | None
    reveal_type(ctx.get_step_result("price"))  # reveals: Any
    reveal_type(ctx.state)  # reveals: Any
    return ctx.input_data


workflow = (
    create_workflow(id="orders", input_schema=Order, output_schema=Priced, state_schema=Cart)
    .then(price)
    .then(confirm)
    .commit()
)
reveal_type(workflow)  # reveals: Workflow[Order, Priced]

with Runtime() as runtime:
    run = runtime.register(workflow).create_run()
    reveal_type(run)  # reveals: Run[Order, Priced]
    result = run.start(input_data=Order(item="tea", quantity=2))
    reveal_type(result)  # reveals: WorkflowResult[Priced]
    reveal_type(result.output)  # reveals: Priced | None
    assert result.output is not None
    assert result.output.total == 5.0
    run.start(input_data=Priced(item="tea", total=1.0))  # error: arg-type
    total: str = result.output.total  # error: assignment
