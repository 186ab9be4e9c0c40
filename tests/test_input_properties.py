"""Property tests: whatever a caller passes to start_async, it is either a run or a clear error."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from runtime import (
    InvalidInputError,
    Runtime,
    TracingOptions,
    create_step,
    create_workflow,
)


class Order(BaseModel):
    sku: str
    quantity: int


echo = create_step(
    id="echo", input_schema=Order, output_schema=Order, execute=lambda ctx: ctx.input_data
)
orders = create_workflow(id="orders", input_schema=Order, output_schema=Order).then(echo).commit()

plain_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3)
    ),
    max_leaves=8,
)


def fits(value: Any) -> bool:
    try:
        Order.model_validate(value)
    except ValidationError:
        return False
    return True


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=plain_values | st.dictionaries(st.sampled_from(["sku", "quantity", "x"]), plain_values)
)
def test_any_input_either_starts_a_run_or_raises_invalid_input_and_records_nothing(
    runtime: Runtime, value: Any
) -> None:
    workflow = runtime.register(orders)
    run = workflow.create_run()
    if fits(value):
        assert run.start(input_data=value, timeout=10).status == "success"
        return
    try:
        run.start_async(input_data=value)
    except InvalidInputError as error:
        assert error.field == "input_data"
        assert error.errors, "pydantic's error list is carried"
    else:
        raise AssertionError(f"{value!r} does not fit Order but was accepted")
    assert workflow.get_workflow_run_execution_result(run.run_id) is None
    assert run.start(input_data={"sku": "a", "quantity": 1}, timeout=10).status == "success"


@given(trace_id=st.text(max_size=40))
@example(trace_id="0")
@example(trace_id="0" * 32)
@example(trace_id="aBc")
def test_a_trace_id_is_accepted_exactly_when_it_is_1_to_32_hex_digits_not_all_zero(
    trace_id: str,
) -> None:
    valid = (
        1 <= len(trace_id) <= 32
        and all(c in "0123456789abcdefABCDEF" for c in trace_id)
        and int(trace_id, 16) != 0  # none, to OpenTelemetry
    )
    try:
        options = TracingOptions(trace_id=trace_id)
    except ValueError:
        assert not valid
    else:
        assert valid
        assert options.trace_id == trace_id.lower().zfill(32)
