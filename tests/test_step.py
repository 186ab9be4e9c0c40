"""Steps: create_step and its decorator form, sync and async bodies, and the step context."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from typing import Any

import pytest
import structlog
from pydantic import BaseModel

from runtime import (
    Runtime,
    Step,
    StepContext,
    WorkflowDefinitionError,
    create_step,
    create_workflow,
)
from tests._support import Count, Value


def run_steps(runtime: Runtime, *steps: Step, input_data: Any, output_schema=None, **options):
    """Run a workflow of ``steps`` on ``runtime`` and return its result."""
    workflow = create_workflow(
        id="steps-under-test",
        input_schema=steps[0].input_schema,
        output_schema=output_schema or steps[-1].output_schema,
    )
    for step in steps:
        workflow.then(step)
    wf = runtime.register(workflow.commit())
    return wf.create_run().start(input_data=input_data, timeout=5, **options)


# --- create_step -------------------------------------------------------------------


def test_create_step_returns_a_step_with_what_it_was_given() -> None:
    def body(ctx):
        return Value(value=ctx.input_data.value)

    step = create_step(
        id="copy",
        input_schema=Value,
        output_schema=Value,
        execute=body,
        state_schema=Count,
        description="copies its input",
    )
    assert isinstance(step, Step)
    assert step.id == "copy"
    assert step.input_schema is Value
    assert step.output_schema is Value
    assert step.execute is body
    assert step.state_schema is Count
    assert step.description == "copies its input"
    assert not step.is_async


def test_create_step_knows_an_async_body() -> None:
    async def body(ctx):
        return Value(value="async")

    step = create_step(id="a", input_schema=Value, output_schema=Value, execute=body)
    assert step.is_async


def test_the_decorator_form_names_the_step_after_the_function() -> None:
    @create_step(input_schema=Value, output_schema=Value)
    def shout(ctx):
        return Value(value=ctx.input_data.value.upper())

    assert isinstance(shout, Step)
    assert shout.id == "shout"
    assert shout.input_schema is Value
    assert shout.output_schema is Value


def test_the_decorator_form_takes_an_explicit_id() -> None:
    @create_step(id="loud", input_schema=Value, output_schema=Value, description="d")
    def shout(ctx):
        return Value(value=ctx.input_data.value.upper())

    assert shout.id == "loud"
    assert shout.description == "d"


def test_a_decorated_step_runs_in_a_workflow(runtime: Runtime) -> None:
    @create_step(input_schema=Value, output_schema=Value)
    def shout(ctx):
        return Value(value=ctx.input_data.value.upper())

    @create_step(input_schema=Value, output_schema=Value)
    async def exclaim(ctx):
        return Value(value=ctx.input_data.value + "!")

    result = run_steps(runtime, shout, exclaim, input_data={"value": "hey"})
    assert result.status == "success"
    assert list(result.steps) == ["shout", "exclaim"]
    assert result.result == {"value": "HEY!"}


@pytest.mark.parametrize("schema_field", ["input_schema", "output_schema", "state_schema"])
@pytest.mark.parametrize("bad", [dict, int, Value(value="an instance, not a class"), "Value"])
def test_create_step_refuses_schemas_that_are_not_models(schema_field: str, bad) -> None:
    schemas = {"input_schema": Value, "output_schema": Value, schema_field: bad}
    with pytest.raises(TypeError, match=schema_field):
        create_step(id="s", execute=lambda ctx: None, **schemas)


def test_the_decorator_form_refuses_schemas_that_are_not_models() -> None:
    with pytest.raises(TypeError, match="output_schema"):

        @create_step(input_schema=Value, output_schema=dict)  # type: ignore[type-var]
        def body(ctx):
            return {}


def test_create_step_refuses_a_body_that_is_not_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        create_step(id="s", input_schema=Value, output_schema=Value, execute="not a function")


def _body(ctx, suffix):
    return Value(value=ctx.input_data.value + suffix)


@pytest.mark.parametrize(
    ("execute", "signature"),
    [
        (lambda: None, "()"),
        (lambda ctx, extra: None, "(ctx, extra)"),
        (lambda ctx, *, k: 0, "(ctx, *, k)"),
    ],
    ids=["no_argument", "two_arguments", "a_required_keyword"],
)
def test_create_step_refuses_a_body_that_cannot_be_called_with_the_context(
    execute, signature: str
) -> None:
    # Taken before, and every run of the workflow failed with Python's TypeError instead.
    with pytest.raises(TypeError) as caught:
        create_step(id="s", input_schema=Value, output_schema=Value, execute=execute)
    assert str(caught.value) == (
        "step 's': execute must take one argument, the step's context (execute(ctx)), but its "
        f"signature is {signature}"
    )


@pytest.mark.parametrize(
    "execute",
    [
        lambda ctx, extra=1: ctx.input_data,
        lambda *args: args[0].input_data,
        functools.partial(_body, suffix=""),
    ],
    ids=["a_default", "star_args", "partial"],
)
def test_create_step_takes_any_body_that_can_be_called_with_the_context(
    runtime: Runtime, execute
) -> None:
    step = create_step(id="s", input_schema=Value, output_schema=Value, execute=execute)
    assert run_steps(runtime, step, input_data={"value": "v"}).result == {"value": "v"}


@pytest.mark.parametrize("bad_id", ["", 5])
def test_create_step_refuses_an_id_that_is_not_a_non_empty_string(bad_id) -> None:
    with pytest.raises(WorkflowDefinitionError):
        create_step(id=bad_id, input_schema=Value, output_schema=Value, execute=lambda ctx: None)


@pytest.mark.parametrize(
    ("execute", "what"),
    [(lambda ctx: ctx.input_data, "a lambda"), (functools.partial(_body, suffix="!"), "partial")],
    ids=["lambda", "partial"],
)
def test_create_step_without_an_id_refuses_a_body_with_no_name_and_says_to_pass_one(
    execute, what: str
) -> None:
    # Every lambda is named "<lambda>": taking that as the id made two such steps clash
    # at commit() over an id the user never wrote.
    with pytest.raises(WorkflowDefinitionError) as caught:
        create_step(input_schema=Value, output_schema=Value, execute=execute)
    message = str(caught.value)
    assert message.startswith("create_step() needs id=... here")
    assert what in message
    assert "<lambda>" not in message
    with pytest.raises(WorkflowDefinitionError, match="needs id="):
        create_step(input_schema=Value, output_schema=Value)(execute)


def test_create_step_without_an_id_refuses_a_body_that_is_not_callable_as_such() -> None:
    with pytest.raises(TypeError, match="execute must be callable, got 5"):
        create_step(input_schema=Value, output_schema=Value, execute=5)  # type: ignore[call-overload]


def test_create_step_without_an_id_names_a_step_after_a_named_function() -> None:
    def tidy(ctx):
        return ctx.input_data

    assert create_step(input_schema=Value, output_schema=Value)(tidy).id == "tidy"


# --- bodies ---------------------------------------------------------------------------


def test_a_plain_function_step_runs(runtime: Runtime) -> None:
    def shout(ctx):
        return Value(value=ctx.input_data.value.upper())

    step = create_step(id="shout", input_schema=Value, output_schema=Value, execute=shout)
    result = run_steps(runtime, step, input_data={"value": "plain"})
    assert result.status == "success"
    assert result.result == {"value": "PLAIN"}


def test_an_async_step_is_awaited(runtime: Runtime) -> None:
    async def shout(ctx):
        await asyncio.sleep(0)
        return Value(value=ctx.input_data.value.upper())

    step = create_step(id="shout", input_schema=Value, output_schema=Value, execute=shout)
    result = run_steps(runtime, step, input_data={"value": "async"})
    assert result.status == "success"
    assert result.steps["shout"].output == {"value": "ASYNC"}
    assert result.result == {"value": "ASYNC"}


def test_an_async_step_may_return_a_dict(runtime: Runtime) -> None:
    async def count(ctx):
        return {"count": len(ctx.input_data.value)}

    step = create_step(id="count", input_schema=Value, output_schema=Count, execute=count)
    result = run_steps(runtime, step, input_data={"value": "four"})
    assert result.result == {"count": 4}


def test_an_async_step_that_raises_fails_the_run(runtime: Runtime) -> None:
    async def broken(ctx):
        await asyncio.sleep(0)
        raise RuntimeError("async trouble")

    step = create_step(id="broken", input_schema=Value, output_schema=Value, execute=broken)
    result = run_steps(runtime, step, input_data={"value": "x"})
    assert result.status == "failed"
    assert result.error is not None
    assert (result.error.name, result.error.message) == ("RuntimeError", "async trouble")
    assert result.steps["broken"].error == result.error


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_step_that_returns_none_fails_its_run_asking_for_a_return(
    runtime: Runtime, is_async: bool
) -> None:
    def forgot(ctx):
        Value(value=ctx.input_data.value.upper())  # built, never returned

    async def forgot_async(ctx):
        forgot(ctx)

    step = create_step(
        id="forgot",
        input_schema=Value,
        output_schema=Value,
        execute=forgot_async if is_async else forgot,
    )
    result = run_steps(runtime, step, input_data={"value": "x"})
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "StepValidationError"
    assert result.error.message == (
        "step 'forgot' returned None: its body must return a Value (its output schema) or a "
        "dict that fits it; is a return statement missing?"
    )
    assert result.error.details["errors"][0]["type"] == "model_type"


def test_sync_and_async_steps_mix_in_one_workflow(runtime: Runtime) -> None:
    async def first(ctx):
        return Value(value=ctx.input_data.value + "1")

    def second(ctx):
        return Value(value=ctx.input_data.value + "2")

    async def third(ctx):
        return Value(value=ctx.input_data.value + "3")

    steps = [
        create_step(id=body.__name__, input_schema=Value, output_schema=Value, execute=body)
        for body in (first, second, third)
    ]
    result = run_steps(runtime, *steps, input_data={"value": ">"})
    assert result.result == {"value": ">123"}


def test_an_object_with_an_async_call_is_an_async_step(runtime: Runtime) -> None:
    class Shouter:
        async def __call__(self, ctx):
            return Value(value=ctx.input_data.value.upper())

    step = create_step(id="callable", input_schema=Value, output_schema=Value, execute=Shouter())
    assert step.is_async
    assert run_steps(runtime, step, input_data={"value": "obj"}).result == {"value": "OBJ"}


# --- the step context -----------------------------------------------------------------


class Order(BaseModel):
    item: str
    quantity: int


class Priced(BaseModel):
    item: str
    quantity: int
    total: float


class Receipt(BaseModel):
    line: str


def test_the_context_gives_the_validated_input_and_the_run_identity(runtime: Runtime) -> None:
    seen: dict[str, Any] = {}

    def inspect_ctx(ctx):
        seen["ctx"] = type(ctx)
        seen["input"] = ctx.input_data
        seen["run_id"] = ctx.run_id
        seen["workflow_id"] = ctx.workflow_id
        seen["step_id"] = ctx.step_id
        return Value(value="ok")

    step = create_step(id="inspect", input_schema=Order, output_schema=Value, execute=inspect_ctx)
    workflow = create_workflow(id="ctx-ids", input_schema=Order, output_schema=Value).then(step)
    wf = runtime.register(workflow.commit())
    run = wf.create_run()
    # "3" is coerced by the schema: the step sees the validated model, not the raw dict.
    run.start(input_data={"item": "tea", "quantity": "3"}, timeout=5)
    assert issubclass(seen["ctx"], StepContext)
    assert seen["input"] == Order(item="tea", quantity=3)
    assert isinstance(seen["input"], Order)
    assert seen["run_id"] == run.run_id
    assert seen["workflow_id"] == "ctx-ids"
    assert seen["step_id"] == "inspect"


def test_get_init_data_returns_the_workflow_input_model(runtime: Runtime) -> None:
    seen: list[Any] = []
    price = create_step(
        id="price",
        input_schema=Order,
        output_schema=Priced,
        execute=lambda ctx: Priced(**ctx.input_data.model_dump(), total=2.5),
    )

    def receipt(ctx):
        seen.append(ctx.get_init_data())
        return Receipt(line=f"{ctx.input_data.item} x{ctx.input_data.quantity}")

    receipt_step = create_step(
        id="receipt", input_schema=Priced, output_schema=Receipt, execute=receipt
    )
    result = run_steps(runtime, price, receipt_step, input_data={"item": "tea", "quantity": 2})
    assert result.status == "success"
    assert seen == [Order(item="tea", quantity=2)]
    assert isinstance(seen[0], Order)


def test_get_step_result_returns_an_earlier_step_output_model(runtime: Runtime) -> None:
    seen: dict[str, Any] = {}
    price = create_step(
        id="price",
        input_schema=Order,
        output_schema=Priced,
        execute=lambda ctx: Priced(**ctx.input_data.model_dump(), total=7.5),
    )

    def receipt(ctx):
        seen["by_step"] = ctx.get_step_result(price)
        seen["by_id"] = ctx.get_step_result("price")
        seen["not_yet_run"] = ctx.get_step_result("thanks")
        try:
            ctx.get_step_result("no-such-step")
        except KeyError as exc:
            seen["unknown"] = exc
        return Receipt(line="r")

    receipt_step = create_step(
        id="receipt", input_schema=Priced, output_schema=Receipt, execute=receipt
    )
    thanks = create_step(
        id="thanks",
        input_schema=Receipt,
        output_schema=Receipt,
        execute=lambda ctx: Receipt(line=ctx.input_data.line + ", thanks"),
    )
    result = run_steps(
        runtime, price, receipt_step, thanks, input_data={"item": "tea", "quantity": 3}
    )
    assert result.status == "success"
    assert seen["by_step"] == Priced(item="tea", quantity=3, total=7.5)
    assert isinstance(seen["by_step"], Priced)
    assert seen["by_id"] == seen["by_step"]
    assert seen["not_yet_run"] is None
    assert isinstance(seen["unknown"], KeyError)
    assert "no-such-step" in str(seen["unknown"])


def _double() -> Step[Count, Count]:
    return create_step(
        id="double",
        input_schema=Count,
        output_schema=Count,
        execute=lambda ctx: Count(count=ctx.input_data.count * 2),
    )


def test_get_step_result_of_a_foreach_step_is_its_list_by_id_and_refused_by_step(
    runtime: Runtime,
) -> None:
    # Typed to give one model, the step form failed the run with pydantic's raw error
    # on the list of outputs.
    seen: dict[str, Any] = {}
    double = _double()

    def after(ctx):
        seen["by_id"] = ctx.get_step_result("double")
        try:
            ctx.get_step_result(double)
        except TypeError as exc:
            seen["by_step"] = exc
        return Count(count=len(seen["by_id"]))

    workflow = (
        create_workflow(id="each-result", input_schema=Value, output_schema=Count)
        .map(lambda ctx: [{"count": 1}, {"count": 2}])
        .foreach(double)
        .map(lambda ctx: {"count": 0})
        .then(create_step(id="after", input_schema=Count, output_schema=Count, execute=after))
        .commit()
    )
    result = runtime.register(workflow).create_run().start(input_data={"value": "v"})

    assert result.status == "success", result.error
    assert seen["by_id"] == [Count(count=2), Count(count=4)]
    assert "ran as a foreach body" in str(seen["by_step"])
    assert "ctx.get_step_result('double') (by id)" in str(seen["by_step"])


def test_get_step_result_is_per_run(runtime: Runtime) -> None:
    seen: dict[str, Any] = {}
    first = create_step(
        id="first",
        input_schema=Value,
        output_schema=Value,
        execute=lambda ctx: Value(value=ctx.input_data.value + "-first"),
    )

    def second(ctx):
        seen[ctx.run_id] = ctx.get_step_result("first")
        return ctx.input_data

    second_step = create_step(id="second", input_schema=Value, output_schema=Value, execute=second)
    workflow = create_workflow(id="per-run", input_schema=Value, output_schema=Value)
    wf = runtime.register(workflow.then(first).then(second_step).commit())
    runs = {name: wf.create_run() for name in ("a", "b")}
    for name, run in runs.items():
        run.start(input_data={"value": name}, timeout=5)
    assert seen == {
        runs["a"].run_id: Value(value="a-first"),
        runs["b"].run_id: Value(value="b-first"),
    }


def test_get_step_result_of_a_map_is_a_copy_of_its_output_live_and_after_a_resume(
    runtime: Runtime,
) -> None:
    read: list[Any] = []

    def reader(ctx):
        shaped = ctx.get_step_result("shaped")
        read.append((dict(shaped), ctx.get_step_result("map-2")))
        shaped["value"] = "changed"  # a copy: the run's record keeps its own
        if ctx.resume_data is None and len(read) == 1:
            ctx.suspend({})
        return ctx.input_data

    workflow = (
        create_workflow(id="maps", input_schema=Value, output_schema=Value)
        .map(lambda ctx: {"value": ctx.input_data["value"] + "!"}, id="shaped")
        .map(lambda ctx: {"value": ctx.input_data["value"] * 2})
        .then(create_step(id="read", input_schema=Value, output_schema=Value, execute=reader))
        .commit()
    )
    run = runtime.register(workflow).create_run()
    assert run.start(input_data={"value": "a"}, timeout=5).status == "suspended"
    result = run.resume(resume_data={}, timeout=5)

    assert result.status == "success", result.error
    expected = ({"value": "a!"}, {"value": "a!a!"})
    assert read == [expected, expected]  # live (it raised KeyError), and after the resume
    assert result.steps["shaped"].output == {"value": "a!"}


TENANT: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)


@pytest.mark.parametrize("async_steps", ["private", "app"])
def test_a_context_variable_a_step_sets_stays_with_that_step(async_steps: str) -> None:
    # A logging helper binding a tenant in one run's step: a later run of another
    # workflow, on the same step thread, saw it in its steps (sync and async).
    seen: dict[str, str | None] = {}

    def tag(ctx):
        TENANT.set(ctx.input_data.value)
        seen["tagging step"] = TENANT.get()
        return ctx.input_data

    def sync_read(ctx):
        seen["sync step"] = TENANT.get()
        return ctx.input_data

    async def async_read(ctx):
        seen["async step"] = TENANT.get()
        return ctx.input_data

    def one_step(workflow_id: str, execute: Any) -> Any:
        step = create_step(id=workflow_id, input_schema=Value, output_schema=Value, execute=execute)
        return (
            create_workflow(id=workflow_id, input_schema=Value, output_schema=Value)
            .then(step)
            .commit()
        )

    async def main() -> None:
        async with Runtime(async_steps=async_steps, max_step_threads=1) as rt:
            for workflow_id, execute in [("tag", tag), ("sync", sync_read), ("async", async_read)]:
                wf = rt.register(one_step(workflow_id, execute))
                result = await wf.create_run().astart(input_data={"value": "acme"}, timeout=5)
                assert result.status == "success", result.error

    asyncio.run(main())
    assert seen == {"tagging step": "acme", "sync step": None, "async step": None}
    assert TENANT.get() is None


def test_the_context_works_the_same_in_an_async_step(runtime: Runtime) -> None:
    seen: dict[str, Any] = {}
    first = create_step(
        id="first",
        input_schema=Value,
        output_schema=Value,
        execute=lambda ctx: Value(value=ctx.input_data.value.upper()),
    )

    async def second(ctx):
        seen["input"] = ctx.input_data
        seen["init"] = ctx.get_init_data()
        seen["first"] = ctx.get_step_result(first)
        seen["run_id"] = ctx.run_id
        return ctx.input_data

    second_step = create_step(id="second", input_schema=Value, output_schema=Value, execute=second)
    workflow = create_workflow(id="async-ctx", input_schema=Value, output_schema=Value)
    wf = runtime.register(workflow.then(first).then(second_step).commit())
    run = wf.create_run()
    run.start(input_data={"value": "a"}, timeout=5)
    assert seen == {
        "input": Value(value="A"),
        "init": Value(value="a"),
        "first": Value(value="A"),
        "run_id": run.run_id,
    }


def test_ctx_logger_logs_with_the_run_trace_id_and_run_id(runtime: Runtime) -> None:
    def talk(ctx):
        ctx.logger.info("step_says_hello", answer=42)
        return ctx.input_data

    async def talk_async(ctx):
        ctx.logger.warning("async_step_says_hello")
        return ctx.input_data

    steps = [
        create_step(id="talk", input_schema=Value, output_schema=Value, execute=talk),
        create_step(id="talk_async", input_schema=Value, output_schema=Value, execute=talk_async),
    ]
    with structlog.testing.capture_logs() as logs:
        result = run_steps(runtime, *steps, input_data={"value": "log"})
    assert result.status == "success"
    said = [entry for entry in logs if entry["event"] == "step_says_hello"]
    assert len(said) == 1
    assert said[0]["answer"] == 42
    assert said[0]["log_level"] == "info"
    assert said[0]["trace_id"] == result.trace_id
    assert said[0]["run_id"] == result.run_id
    assert said[0]["step_id"] == "talk"
    said_async = [entry for entry in logs if entry["event"] == "async_step_says_hello"]
    assert len(said_async) == 1
    assert said_async[0]["trace_id"] == result.trace_id
    assert said_async[0]["run_id"] == result.run_id
    assert said_async[0]["step_id"] == "talk_async"


def test_get_step_result_reads_a_nested_workflows_output_by_the_workflow_or_its_id(
    runtime: Runtime,
) -> None:
    # A nested workflow is a step: its output is recorded at its id, and Mastra reads it
    # with getStepResult(child). It raised KeyError: "workflow 'parent' has no step 'child'".
    seen: dict[str, Any] = {}
    double = _double()
    child = create_workflow(id="child", input_schema=Count, output_schema=Count).then(double)
    child_workflow = child.commit()

    def after(ctx: Any) -> Count:
        seen["by_workflow"] = ctx.get_step_result(child_workflow)
        seen["by_id"] = ctx.get_step_result("child")
        seen["inner"] = ctx.get_step_result("child.double")
        return ctx.input_data

    parent = (
        create_workflow(id="parent", input_schema=Count, output_schema=Count)
        .then(child_workflow)
        .then(create_step(id="after", input_schema=Count, output_schema=Count, execute=after))
        .commit()
    )
    result = runtime.register(parent).create_run().start(input_data={"count": 2}, timeout=10)

    assert result.status == "success", result.error
    assert seen["by_workflow"] == Count(count=4) and isinstance(seen["by_workflow"], Count)
    assert seen["by_id"] == seen["inner"] == Count(count=4)


# --- validation and dumps: what they read of a model class --------------------------


def test_validation_and_dumps_read_a_model_class_past_its_metaclass_hook() -> None:
    """``validate_model``, ``validate_stored`` and ``dump_model`` run at every start and
    step: they read the class's validator and serializer with ``type.__getattribute__``,
    not through pydantic's metaclass, whose ``__getattr__`` makes each read cost about
    twice as much. A metaclass that counts the reads made through it sees none."""
    from pydantic._internal._model_construction import ModelMetaclass

    from runtime._model import validate_stored
    from runtime._step import dump_model, validate_model

    reads: list[str] = []

    class Counting(ModelMetaclass):
        def __getattribute__(cls, name: str) -> Any:
            reads.append(name)
            return super().__getattribute__(name)

    class Counted(BaseModel, metaclass=Counting):
        value: str

    reads.clear()
    model = validate_model(Counted, {"value": "x"})
    assert dump_model(model) == {"value": "x"}
    assert validate_stored(Counted, {"value": "x"}) == model
    assert reads == []
