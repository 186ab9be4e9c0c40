"""Schemas and what a run's snapshots keep of their models: aliases, and no secrets.

A snapshot holds each model as ``model_dump(mode="json", by_alias=True)``: the
next step's input, ``ctx.state``, ``ctx.resume_data`` and a typed result are
that data validated again by the schema, and a model with aliases (``Field(alias=...)``,
an ``alias_generator``) validates the aliases, not the fields' names. Dumped by
name, every such workflow failed at its first step: "userId: Field required".
"""

from __future__ import annotations

import enum
import math
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from ipaddress import IPv4Address, IPv6Network
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Generic, Literal, TypeVar

import pytest
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Json,
    RootModel,
    SecretBytes,
    SecretStr,
    computed_field,
)
from pydantic.alias_generators import to_camel

from runtime import (
    RunStatus,
    Runtime,
    StepContext,
    WorkflowDefinitionError,
    create_step,
    create_workflow,
)

WAIT = 20.0


class Order(BaseModel):
    """camelCase on the wire, as a web API has it."""

    model_config = ConfigDict(alias_generator=to_camel)

    order_id: int
    unit_price: float


class Tally(BaseModel):
    total_cents: int = Field(alias="totalCents", default=0)


class Approval(BaseModel):
    approved_by: str = Field(alias="approvedBy")


@pytest.fixture(params=["memory", "sqlite"])
def rt(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    store = None if request.param == "memory" else tmp_path / "runs.db"
    with Runtime(store=store) as runtime:
        yield runtime


def _double(ctx: StepContext[Order]) -> Order:
    order = ctx.input_data
    ctx.set_state(Tally.model_validate({"totalCents": int(order.unit_price * 100)}))
    return Order(orderId=order.order_id, unitPrice=order.unit_price * 2)


def _check(ctx: StepContext[Order]) -> Order:
    tally = ctx.state  # the state, validated again from the snapshot
    assert isinstance(tally, Tally) and tally.total_cents == 150
    return ctx.input_data


def test_a_chain_of_steps_with_aliased_schemas_runs_and_stores_the_aliases(rt: Runtime) -> None:
    double = create_step(id="double", input_schema=Order, output_schema=Order, execute=_double)
    check = create_step(id="check", input_schema=Order, output_schema=Order, execute=_check)
    wf = rt.register(
        create_workflow(id="orders", input_schema=Order, output_schema=Order, state_schema=Tally)
        .then(double)
        .then(check)
        .commit()
    )

    result = wf.create_run().start(
        input_data={"orderId": 7, "unitPrice": 1.5}, output_options={"include_state": True}
    )

    assert result.status == RunStatus.SUCCESS, result.error
    assert result.input == {"orderId": 7, "unitPrice": 1.5}
    assert result.result == {"orderId": 7, "unitPrice": 3.0}
    assert result.state == {"totalCents": 150}
    assert result.steps["double"].output == {"orderId": 7, "unitPrice": 3.0}
    assert result.output == Order(orderId=7, unitPrice=3.0)  # the typed result, validated again
    again = wf.get_workflow_run_execution_result(result.run_id)
    assert again is not None and again.output == Order(orderId=7, unitPrice=3.0)


def test_aliased_resume_data_and_suspend_payload_round_trip(rt: Runtime) -> None:
    def ask(ctx: StepContext[Order]) -> Order:
        if ctx.resume_data is None:
            ctx.suspend(Approval(approvedBy="nobody yet"))
        assert isinstance(ctx.resume_data, Approval)
        return Order(orderId=ctx.resume_data.approved_by.count("a"), unitPrice=1.0)

    step = create_step(
        id="ask",
        input_schema=Order,
        output_schema=Order,
        suspend_schema=Approval,
        resume_schema=Approval,
        execute=ask,
    )
    wf = rt.register(
        create_workflow(id="approvals", input_schema=Order, output_schema=Order).then(step).commit()
    )
    run = wf.create_run()

    suspended = run.start(input_data=Order(orderId=1, unitPrice=2.0), timeout=WAIT)
    assert suspended.status == RunStatus.SUSPENDED
    assert suspended.suspended == {"ask": {"approvedBy": "nobody yet"}}
    resumed = run.resume(step="ask", resume_data={"approvedBy": "ada lovelace"}, timeout=WAIT)

    assert resumed.status == RunStatus.SUCCESS, resumed.error
    assert resumed.result == {"orderId": 3, "unitPrice": 1.0}


def test_a_nested_workflow_and_a_bail_with_aliased_schemas(rt: Runtime) -> None:
    def bail_early(ctx: StepContext[Order]) -> Any:
        if ctx.input_data.order_id < 0:
            ctx.bail(Order(orderId=0, unitPrice=0.0))
        return ctx.input_data

    inner = (
        create_workflow(id="inner-orders", input_schema=Order, output_schema=Order)
        .then(create_step(id="bail", input_schema=Order, output_schema=Order, execute=bail_early))
        .commit()
    )
    wf = rt.register(
        create_workflow(id="outer-orders", input_schema=Order, output_schema=Order)
        .then(inner)
        .commit()
    )

    ran = wf.create_run().start(input_data={"orderId": 4, "unitPrice": 0.5}, timeout=WAIT)
    bailed = wf.create_run().start(input_data={"orderId": -1, "unitPrice": 0.5}, timeout=WAIT)

    assert ran.status == RunStatus.SUCCESS, ran.error
    assert ran.result == {"orderId": 4, "unitPrice": 0.5}
    assert bailed.status == RunStatus.SUCCESS, bailed.error
    assert bailed.result == {"orderId": 0, "unitPrice": 0.0}


# --- secrets, which a snapshot would keep as stars -------------------------------------------


class Token(BaseModel):
    name: str
    secret: SecretStr


class Login(BaseModel):
    user: str
    tokens: list[Token] = []


class Vault(BaseModel):
    keys: dict[str, SecretBytes | None] = {}


@pytest.mark.parametrize(
    ("schema", "where"),
    [(Token, "secret"), (Login, "tokens[].secret"), (Vault, "keys[]")],
    ids=["field", "in-a-list-of-models", "in-a-dict-of-optionals"],
)
@pytest.mark.parametrize("role", ["step-input", "step-resume", "workflow-input", "workflow-state"])
def test_a_schema_holding_a_secret_is_refused_at_definition(
    schema: type[BaseModel], where: str, role: str
) -> None:
    # Before: pydantic wrote the secret as "**********" into the run's snapshot, and the
    # next step got the stars: a login that failed with nothing to say why.
    def body(ctx: StepContext[Any]) -> Any:
        return ctx.input_data

    with pytest.raises(WorkflowDefinitionError) as caught:
        if role == "step-input":
            create_step(id="s", input_schema=schema, output_schema=Order, execute=body)
        elif role == "step-resume":
            create_step(
                id="s", input_schema=Order, output_schema=Order, resume_schema=schema, execute=body
            )
        elif role == "workflow-input":
            create_workflow(id="w", input_schema=schema, output_schema=Order)
        else:
            create_workflow(id="w", input_schema=Order, output_schema=Order, state_schema=schema)

    message = str(caught.value)
    assert f"{schema.__name__} holds a secret at {where!r}" in message
    assert "'**********'" in message and "Keep the secret out of the run's data" in message


class Signup(BaseModel):
    user: str
    password: str = Field(exclude=True)


class Flags(BaseModel):
    name: str
    tags: list[Signup] = []


@pytest.mark.parametrize(
    ("schema", "where"), [(Signup, "password"), (Flags, "tags[].password")], ids=["top", "nested"]
)
def test_a_schema_excluding_a_field_from_its_dumps_is_refused_at_definition(
    schema: type[BaseModel], where: str
) -> None:
    # Before: a required one failed the first step ("password: Field required") after
    # start_async had taken the input; one with a default came back as the default.
    with pytest.raises(WorkflowDefinitionError) as caught:
        create_workflow(id="w", input_schema=schema, output_schema=Order)

    assert f"{schema.__name__} excludes the field {where!r}" in str(caught.value)
    with pytest.raises(WorkflowDefinitionError, match="excludes the field"):
        create_step(id="s", input_schema=Order, output_schema=schema, execute=lambda c: c)


class Priced(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cents: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def euros(self) -> float:
        return self.cents / 100


class PricedLoosely(BaseModel):
    cents: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def euros(self) -> float:
        return self.cents / 100


def test_a_computed_field_in_a_model_that_forbids_extras_is_refused_at_definition() -> None:
    # Before: the snapshot held "euros", and the first step's input refused it as extra.
    with pytest.raises(WorkflowDefinitionError, match="has the computed field 'euros'"):
        create_workflow(id="w", input_schema=Priced, output_schema=Order)


def test_a_computed_field_in_a_model_that_ignores_extras_rides_along(rt: Runtime) -> None:
    step = create_step(
        id="same",
        input_schema=PricedLoosely,
        output_schema=PricedLoosely,
        execute=lambda ctx: ctx.input_data,
    )
    wf = rt.register(
        create_workflow(id="priced", input_schema=PricedLoosely, output_schema=PricedLoosely)
        .then(step)
        .commit()
    )

    result = wf.create_run().start(input_data={"cents": 250}, timeout=WAIT)

    assert result.status == RunStatus.SUCCESS, result.error
    assert result.result == {"cents": 250, "euros": 2.5}


class WrittenElsewhere(BaseModel):
    total: int = Field(serialization_alias="sum")


class ReadElsewhere(BaseModel):
    total: int = Field(validation_alias="amount", serialization_alias="sum")


@pytest.mark.parametrize("schema", [WrittenElsewhere, ReadElsewhere])
def test_a_field_written_under_a_key_its_model_does_not_read_is_refused(
    schema: type[BaseModel],
) -> None:
    # Stored by alias ("sum") and validated again by "total" or "amount": before, the
    # first step failed for want of a field the input had.
    with pytest.raises(WorkflowDefinitionError, match="writes the field 'total' under a key"):
        create_workflow(id="w", input_schema=schema, output_schema=Order)


class Color(enum.Enum):
    RED = "red"


class Event(BaseModel):
    """Strict, as many services make their models: a datetime, a UUID, an enum, a set."""

    model_config = ConfigDict(strict=True)

    at: datetime
    event_id: uuid.UUID
    color: Color
    tags: set[int]


EVENT = Event(
    at=datetime(2026, 1, 5, 12, 0, tzinfo=UTC),
    event_id=uuid.UUID(int=7),
    color=Color.RED,
    tags={1, 2},
)


class Seen(BaseModel):
    model_config = ConfigDict(strict=True)

    last: datetime | None = None


def test_strict_models_go_through_every_step_and_come_back_equal(rt: Runtime) -> None:
    # A snapshot holds the JSON form of a model (an ISO string for a datetime), which
    # strict validation refuses in Python mode: every run failed before its first body,
    # and a strict state schema with a raw ValidationError.
    def first(ctx: StepContext[Event]) -> Event:
        ctx.set_state(Seen(last=ctx.input_data.at))
        return ctx.input_data

    def second(ctx: StepContext[Event]) -> Event:
        assert ctx.state == Seen(last=EVENT.at)
        assert ctx.get_step_result(first_step) == EVENT
        assert ctx.get_init_data() == EVENT
        return ctx.input_data.model_copy(update={"tags": {*ctx.input_data.tags, 3}})

    def inner(ctx: StepContext[Event]) -> Event:
        assert ctx.get_init_data() == ctx.input_data  # the nested workflow's input
        return ctx.input_data

    first_step = create_step(id="first", input_schema=Event, output_schema=Event, execute=first)
    child = (
        create_workflow(id="strict_child", input_schema=Event, output_schema=Event)
        .then(create_step(id="inner", input_schema=Event, output_schema=Event, execute=inner))
        .commit()
    )
    wf = rt.register(
        create_workflow(id="strict", input_schema=Event, output_schema=Event, state_schema=Seen)
        .then(first_step)
        .then(create_step(id="second", input_schema=Event, output_schema=Event, execute=second))
        .then(child)
        .commit()
    )

    result = wf.create_run().start(input_data=EVENT, timeout=WAIT)

    assert result.status == RunStatus.SUCCESS, result.error
    assert result.output == EVENT.model_copy(update={"tags": {1, 2, 3}})
    with pytest.raises(Exception, match="valid datetime"):  # the user's own data: still strict
        wf.create_run().start(input_data={**EVENT.model_dump(mode="json")}, timeout=WAIT)


class Announced(BaseModel):
    """The workflow's output: Event's fields in another, strict, class."""

    model_config = ConfigDict(strict=True)

    at: datetime
    event_id: uuid.UUID
    color: Color
    tags: set[int]


def _echoes(
    workflow_id: str, schema: type[BaseModel], output: type[BaseModel] | None = None
) -> Any:
    """A workflow of one step that returns its input, all of ``schema`` (output: ``output``)."""
    step = create_step(
        id=f"{workflow_id}_step", input_schema=schema, output_schema=schema, execute=_echo
    )
    return (
        create_workflow(id=workflow_id, input_schema=schema, output_schema=output or schema)
        .then(step)
        .commit()
    )


def _echo(ctx: StepContext[Any]) -> Any:
    return ctx.input_data


def test_a_strict_workflow_output_of_another_class_than_the_last_steps_is_taken(
    rt: Runtime,
) -> None:
    # The last step's output, dumped, was checked strictly against the workflow's output
    # schema: every run failed "at: Input should be a valid datetime".
    wf = rt.register(_echoes("announce", Event, Announced))
    result = wf.create_run().start(input_data=EVENT, timeout=WAIT)
    assert result.status == RunStatus.SUCCESS, result.error
    assert result.output == Announced(**dict(EVENT))


def test_a_start_with_a_model_of_another_class_is_checked_as_its_dump(rt: Runtime) -> None:
    wf = rt.register(_echoes("announced_in", Announced))
    result = wf.create_run().start(input_data=EVENT, timeout=WAIT)
    assert result.status == RunStatus.SUCCESS, result.error


class Lowered(BaseModel):
    name: str

    @classmethod
    def model_validate(cls, obj: Any) -> Lowered:  # type: ignore[override]
        # As some code bases narrow it, to normalise: no strict, no context.
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            obj = {**obj, "name": obj["name"].lower()}
        return super().model_validate(obj)


def test_a_model_validate_of_the_users_that_takes_no_strict_is_called_as_it_is(
    rt: Runtime,
) -> None:
    # Called with strict=False, it raised TypeError, and every run failed at its second step.
    wf = rt.register(
        create_workflow(id="lowered", input_schema=Lowered, output_schema=Lowered)
        .then(
            create_step(
                id="first",
                input_schema=Lowered,
                output_schema=Lowered,
                execute=lambda c: {"name": "Bob"},
            )
        )
        .then(create_step(id="second", input_schema=Lowered, output_schema=Lowered, execute=_echo))
        .commit()
    )
    result = wf.create_run().start(input_data={"name": "ADA"}, timeout=WAIT)
    assert result.status == RunStatus.SUCCESS, result.error
    assert result.output == Lowered(name="bob")


def test_a_schedule_of_a_strict_model_starts_its_runs() -> None:
    # A schedule keeps its input as JSON; each tick validated it strictly, refused it
    # ("schedule_input_invalid") and started nothing, for ever.
    from runtime.testing import Harness

    with Harness() as harness:
        wf = harness.register(_echoes("strict_ticks", Event))
        harness.runtime.schedule(wf, cron="*/5 * * * *", input_data=EVENT)
        deadline = time.monotonic() + WAIT
        while not (runs := wf.list_workflow_runs(status="success").runs):
            assert time.monotonic() < deadline, "no tick's run succeeded"
            time.sleep(0.01)
        harness.runtime.pause_schedule("strict_ticks")
    assert runs[0].output == EVENT


# --- fields whose JSON form does not validate back ----------------------------------------


class Pair(enum.Enum):
    ORIGIN = (0, 0)


class Level(enum.Enum):
    LOW = 1.5
    HIGH = None


class Raw(BaseModel):
    payload: Json[list[int]]


class Raws(BaseModel):
    payloads: list[Json]  # type: ignore[type-arg]


class Plotted(BaseModel):
    at: Pair


class Grid(BaseModel):
    cells: dict[tuple[int, int], str]


class Optional_(BaseModel):
    counts: dict[str | None, int]


class Holder(BaseModel):
    grids: list[Grid] = []


class HalfBase64(BaseModel):
    """Base64 when written, UTF-8 (pydantic's default) when read."""

    model_config = ConfigDict(ser_json_bytes="base64")

    data: dict[str, bytes | None]


@pytest.mark.parametrize(
    ("schema", "said"),
    [
        (Raw, "has the Json field 'payload'"),
        (Raws, "has the Json field 'payloads[]'"),
        (Plotted, "(at: Pair.ORIGIN; a tuple is written as a list)"),
        (Grid, "has the dict 'cells[]' whose key type is a tuple or takes None"),
        (Optional_, "has the dict 'counts[]' whose key type is a tuple or takes None"),
        (Holder, "has the dict 'grids[].cells[]'"),
        (HalfBase64, "writes the bytes field 'data[]' in one form and reads it in another"),
    ],
)
def test_a_field_whose_json_form_does_not_validate_back_is_refused_at_definition(
    schema: type[BaseModel], said: str
) -> None:
    # Each was taken at commit() and at the start, and every run then failed at its first
    # step ("its input does not fit its input schema"), or (a None key) came back as "None",
    # or (the bytes) came back as their base64 text, encoded again at every step.
    with pytest.raises(WorkflowDefinitionError) as caught:
        create_workflow(id="w", input_schema=schema, output_schema=Order)
    assert said in str(caught.value)
    with pytest.raises(WorkflowDefinitionError, match=re.escape(said)):
        create_step(id="s", input_schema=Order, output_schema=schema, execute=_echo)


class Cat(BaseModel):
    kind: Literal["cat"] = "cat"
    lives: int = 9


class Dog(BaseModel):
    kind: Literal["dog"] = "dog"
    weight: float = 0.0


class Scores(RootModel[list[int]]):
    pass


T = TypeVar("T")


class Boxed(BaseModel, Generic[T]):
    item: T


class Everything(BaseModel):
    """Types whose JSON form validates back (lax) to the same value, all in one model."""

    amount: Decimal
    span: timedelta
    pair: tuple[int, str]
    ids: set[int]
    names: frozenset[str]
    path: PurePosixPath
    host: IPv4Address
    net: IPv6Network
    key: uuid.UUID
    wave: complex
    pet: Annotated[Cat | Dog, Field(discriminator="kind")]
    scores: Scores
    box: Boxed[int]
    mode: Literal[1, "one"]
    small: Annotated[int, Field(gt=0, lt=10)]
    far: float
    zero: float
    unsigned: int
    at: datetime
    naive: datetime
    day: date
    level: Level
    blob: bytes
    text: str
    by_int: dict[int, str]
    by_day: dict[date, int]


EVERYTHING = Everything(
    amount=Decimal("3.14159265358979323846264338327950288"),
    span=timedelta(days=-1, microseconds=1),
    pair=(1, "a"),
    ids={3, 1, 2},
    names=frozenset({"b", "a"}),
    path=PurePosixPath("/srv/data"),
    host=IPv4Address("10.0.0.1"),
    net=IPv6Network("2001:db8::/32"),
    key=uuid.UUID(int=2**128 - 1),
    wave=complex(1.5, -2),
    pet=Dog(weight=1.5),
    scores=Scores([3, 1]),
    box=Boxed[int](item=7),
    mode="one",
    small=9,
    far=-math.inf,
    zero=-0.0,
    unsigned=2**64 - 1,
    at=datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    naive=datetime(2026, 1, 1, 0, 0, 0, 1),
    day=date(2024, 2, 29),
    level=Level.HIGH,
    blob=b"a\x00b",
    text="nul \x00 and \U0010ffff",
    by_int={1: "a", -2: "b"},
    by_day={date(2024, 1, 1): 1},
)


def test_values_whose_json_form_validates_back_come_back_equal(rt: Runtime) -> None:
    def keep(ctx: StepContext[Everything]) -> Everything:
        ctx.set_state(ctx.input_data)
        return ctx.input_data

    def check(ctx: StepContext[Everything]) -> Everything:
        assert ctx.state == EVERYTHING and ctx.input_data == EVERYTHING
        return ctx.input_data

    wf = rt.register(
        create_workflow(
            id="everything",
            input_schema=Everything,
            output_schema=Everything,
            state_schema=Everything,
        )
        .then(
            create_step(id="keep", input_schema=Everything, output_schema=Everything, execute=keep)
        )
        .then(
            create_step(
                id="check", input_schema=Everything, output_schema=Everything, execute=check
            )
        )
        .commit()
    )

    run = wf.create_run()
    run.start_async(input_data=EVERYTHING, initial_state=EVERYTHING)
    result = run.wait(timeout=WAIT)

    assert result.status == RunStatus.SUCCESS, result.error
    assert result.output == EVERYTHING
    again = wf.get_workflow_run_execution_result(run.run_id)
    assert again is not None and again.output == EVERYTHING
