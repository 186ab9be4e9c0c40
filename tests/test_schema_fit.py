"""``commit()`` refuses a chain whose next input cannot be fed by the previous output."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from pydantic.alias_generators import to_camel

from runtime import Runtime, Step, WorkflowDefinitionError, create_step, create_workflow


class Name(BaseModel):
    name: str


class Count(BaseModel):
    count: int


class CountAsText(BaseModel):
    count: str


class Both(BaseModel):
    name: str
    count: int


class NameAndMaybe(BaseModel):
    name: str
    note: str = ""


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class Inner(BaseModel):
    value: int


class Outer(BaseModel):
    inner: Inner


class InnerText(BaseModel):
    value: str


class OuterText(BaseModel):
    inner: InnerText


class Anything(BaseModel):
    count: Any


class IntOrStr(BaseModel):
    count: int | str


class Floats(BaseModel):
    count: float


class Items(BaseModel):
    items: list[int]


class TextItems(BaseModel):
    items: list[str]


def step(
    step_id: str, input_schema: type[BaseModel], output_schema: type[BaseModel]
) -> Step[Any, Any]:
    def body(ctx: Any) -> Any:
        raise AssertionError("a step of a refused chain never runs")

    return create_step(
        id=step_id, input_schema=input_schema, output_schema=output_schema, execute=body
    )


def test_a_missing_required_field_fails_at_commit_naming_both_steps_and_the_field() -> None:
    workflow = (
        create_workflow(id="wf", input_schema=Name, output_schema=Both)
        .then(step("first", Name, Name))
        .then(step("second", Both, Both))
    )

    with pytest.raises(WorkflowDefinitionError) as caught:
        workflow.commit()

    message = str(caught.value)
    assert "step 'second'" in message
    assert "step 'first'" in message
    assert "'count'" in message
    assert "missing" in message
    assert not workflow.committed


def test_an_int_field_fed_to_a_str_field_fails_at_commit() -> None:
    workflow = (
        create_workflow(id="wf", input_schema=Count, output_schema=CountAsText)
        .then(step("counts", Count, Count))
        .then(step("shows", CountAsText, CountAsText))
    )

    with pytest.raises(WorkflowDefinitionError, match=r"field 'count' is int.*str"):
        workflow.commit()


def test_the_first_step_is_checked_against_the_workflow_input() -> None:
    workflow = create_workflow(id="wf", input_schema=Name, output_schema=Count).then(
        step("counts", Count, Count)
    )

    with pytest.raises(WorkflowDefinitionError, match=r"step 'counts'.*the workflow's input"):
        workflow.commit()


def test_the_last_output_is_checked_against_the_workflow_output_schema() -> None:
    workflow = create_workflow(id="wf", input_schema=Name, output_schema=Count).then(
        step("names", Name, Name)
    )

    with pytest.raises(WorkflowDefinitionError, match=r"the workflow's result.*step 'names'"):
        workflow.commit()


def test_a_nested_model_field_is_compared_field_by_field() -> None:
    workflow = (
        create_workflow(id="wf", input_schema=Outer, output_schema=OuterText)
        .then(step("a", Outer, Outer))
        .then(step("b", OuterText, OuterText))
    )

    with pytest.raises(WorkflowDefinitionError, match=r"'inner\.value' is int"):
        workflow.commit()


def test_a_list_item_type_that_cannot_fit_fails() -> None:
    workflow = (
        create_workflow(id="wf", input_schema=Items, output_schema=TextItems)
        .then(step("a", Items, Items))
        .then(step("b", TextItems, TextItems))
    )

    with pytest.raises(WorkflowDefinitionError, match=r"'items\[\]'"):
        workflow.commit()


@pytest.mark.parametrize(
    ("output_schema", "input_schema"),
    [
        (Both, Name),  # extra fields are dropped
        (Name, NameAndMaybe),  # a missing field with a default
        (Count, Anything),  # Any takes anything
        (Count, IntOrStr),  # a union that holds the type
        (IntOrStr, Count),  # a union with a member that fits
        (Count, Floats),  # an int is a float
        (Loose, Both),  # extra="allow" may carry anything
    ],
)
def test_chains_that_may_fit_commit(
    output_schema: type[BaseModel], input_schema: type[BaseModel]
) -> None:
    (
        create_workflow(id="wf", input_schema=output_schema, output_schema=input_schema)
        .then(step("a", output_schema, output_schema))
        .then(step("b", input_schema, input_schema))
        .commit()
    )


def test_a_subclass_output_feeds_its_base_input() -> None:
    class Named(Name):
        extra: int = 0

    (
        create_workflow(id="wf", input_schema=Named, output_schema=Name)
        .then(step("a", Named, Named))
        .then(step("b", Name, Name))
        .commit()
    )


def test_validators_that_reshape_the_input_are_trusted() -> None:
    class Reshaped(BaseModel):
        count: int

        @model_validator(mode="before")
        @classmethod
        def from_name(cls, data: Any) -> Any:
            return {"count": len(data["name"])}

    class Parsed(BaseModel):
        count: int

        @field_validator("count", mode="before")
        @classmethod
        def parse(cls, value: Any) -> Any:
            return int(value.strip())

    (
        create_workflow(id="wf", input_schema=Name, output_schema=Count)
        .then(step("a", Name, Name))
        .then(step("b", Reshaped, Count))
        .commit()
    )
    (
        create_workflow(id="wf2", input_schema=CountAsText, output_schema=Count)
        .then(step("a", CountAsText, CountAsText))
        .then(step("b", Parsed, Count))
        .commit()
    )


def test_after_a_map_the_next_step_is_not_checked() -> None:
    (
        create_workflow(id="wf", input_schema=Name, output_schema=Count)
        .then(step("a", Name, Name))
        .map(lambda ctx: {"count": len(ctx.input_data["name"])})
        .then(step("b", Count, Count))
        .commit()
    )


def test_a_sleep_passes_the_previous_output_through_to_the_check() -> None:
    workflow = (
        create_workflow(id="wf", input_schema=Name, output_schema=Count)
        .then(step("a", Name, Name))
        .sleep(0)
        .then(step("b", Count, Count))
    )

    with pytest.raises(WorkflowDefinitionError, match=r"step 'b'.*step 'a'"):
        workflow.commit()


def test_each_parallel_member_is_checked_and_the_keyed_output_is_not() -> None:
    refused = (
        create_workflow(id="wf", input_schema=Name, output_schema=Loose)
        .then(step("a", Name, Name))
        .parallel([step("p", Name, Name), step("q", Count, Count)])
    )
    with pytest.raises(WorkflowDefinitionError, match=r"step 'q'.*step 'a'.*'count'"):
        refused.commit()

    (
        create_workflow(id="wf", input_schema=Name, output_schema=Loose)
        .parallel([step("p", Name, Name), step("q", Name, Count)])
        .map(lambda ctx: {"count": ctx.input_data["q"]["count"]})
        .then(step("b", Count, Loose))
        .commit()
    )


def test_the_output_of_parallel_is_checked_as_each_members_output_under_its_id() -> None:
    class Joined(BaseModel):
        p: Name
        q: Count

    class JoinedWrongly(BaseModel):
        p: Count

    class Missing(BaseModel):
        r: Name

    (
        create_workflow(id="wf", input_schema=Name, output_schema=Joined)
        .parallel([step("p", Name, Name), step("q", Name, Count)])
        .commit()
    )
    wrong = create_workflow(id="wf", input_schema=Name, output_schema=JoinedWrongly).parallel(
        [step("p", Name, Name)]
    )
    with pytest.raises(WorkflowDefinitionError, match=r"'p\.count' is missing.*parallel"):
        wrong.commit()
    missing = (
        create_workflow(id="wf", input_schema=Name, output_schema=Missing)
        .parallel([step("p", Name, Name)])
        .then(step("r", Missing, Missing))
    )
    with pytest.raises(WorkflowDefinitionError, match=r"step 'r'.*parallel 'parallel-1'.*'r'"):
        missing.commit()


def test_a_field_an_extra_forbid_input_refuses_fails() -> None:
    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str

    workflow = (
        create_workflow(id="wf", input_schema=Both, output_schema=Strict)
        .then(step("a", Both, Both))
        .then(step("b", Strict, Strict))
    )

    with pytest.raises(WorkflowDefinitionError, match=r"'count' is not allowed"):
        workflow.commit()


def test_each_branch_arm_is_checked() -> None:
    workflow = create_workflow(id="wf", input_schema=Name, output_schema=Loose).branch(
        [(lambda ctx: True, step("p", Name, Name)), (lambda ctx: False, step("q", Count, Count))]
    )

    with pytest.raises(WorkflowDefinitionError, match=r"step 'q'.*the workflow's input"):
        workflow.commit()


def test_a_nested_workflow_is_checked_by_its_input_and_output_schemas() -> None:
    child = (
        create_workflow(id="child", input_schema=Count, output_schema=Count)
        .then(step("c", Count, Count))
        .commit()
    )
    refused = create_workflow(id="wf", input_schema=Name, output_schema=Count).then(child)
    with pytest.raises(WorkflowDefinitionError, match=r"nested workflow 'child'.*workflow's input"):
        refused.commit()

    after = (
        create_workflow(id="wf2", input_schema=Count, output_schema=Name)
        .then(child)
        .then(step("n", Name, Name))
    )
    with pytest.raises(WorkflowDefinitionError, match=r"step 'n'.*nested workflow 'child'"):
        after.commit()


def test_a_loop_step_must_take_its_own_output() -> None:
    workflow = create_workflow(id="wf", input_schema=Name, output_schema=Count).dowhile(
        step("grow", Name, Count), lambda ctx: False
    )

    with pytest.raises(WorkflowDefinitionError, match=r"previous iteration"):
        workflow.commit()


def test_foreach_takes_a_list_so_its_input_and_output_are_not_checked() -> None:
    (
        create_workflow(id="wf", input_schema=Name, output_schema=Loose)
        .then(step("a", Name, Name))
        .foreach(step("each", Count, Count))
        .map(lambda ctx: {"n": len(ctx.input_data)})
        .commit()
    )


# --- aliases: a snapshot holds a model dumped by alias ---------------------------------------


class CamelOrder(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel)

    order_id: int


class CamelNamed(BaseModel):
    orderId: int  # a field named as the JSON key


class SnakeOrder(BaseModel):
    order_id: int


class CamelOrSnake(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    order_id: int


@pytest.mark.parametrize(
    ("output_schema", "input_schema"),
    [
        (CamelOrder, CamelNamed),  # the alias is the other model's field name
        (CamelNamed, CamelOrder),  # and the other way round
        (SnakeOrder, CamelOrSnake),  # a model that takes names too
        (CamelOrder, CamelOrSnake),
    ],
)
def test_aliased_chains_that_fit_commit_and_run(
    output_schema: type[BaseModel], input_schema: type[BaseModel]
) -> None:
    def same(ctx: Any) -> Any:
        return ctx.input_data

    workflow = (
        create_workflow(id="wf", input_schema=output_schema, output_schema=input_schema)
        .then(
            create_step(
                id="a", input_schema=output_schema, output_schema=output_schema, execute=same
            )
        )
        .then(
            create_step(id="b", input_schema=input_schema, output_schema=input_schema, execute=same)
        )
        .commit()
    )
    first = output_schema.model_validate(
        {"orderId": 5} if output_schema is not SnakeOrder else {"order_id": 5}
    )
    with Runtime() as runtime:
        result = runtime.register(workflow).create_run().start(input_data=first, timeout=10)

    assert result.status == "success", result.error


@pytest.mark.parametrize(
    ("output_schema", "input_schema", "key"),
    [
        (CamelOrder, SnakeOrder, "order_id"),  # the snapshot holds orderId
        (SnakeOrder, CamelOrder, "orderId"),  # an alias the model alone takes
    ],
)
def test_aliased_chains_that_cannot_fit_fail_at_commit_naming_the_key(
    output_schema: type[BaseModel], input_schema: type[BaseModel], key: str
) -> None:
    workflow = (
        create_workflow(id="wf", input_schema=output_schema, output_schema=input_schema)
        .then(step("a", output_schema, output_schema))
        .then(step("b", input_schema, input_schema))
    )

    with pytest.raises(WorkflowDefinitionError, match=f"required field '{key}' is missing"):
        workflow.commit()
