"""Request context and workflow state: what steps see, what they may change, and who sees it."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

import pytest
from pydantic import BaseModel

from runtime import (
    OutputOptions,
    RequestContext,
    Runtime,
    create_step,
    create_workflow,
)
from tests._support import Value

BLOCK_LIMIT = 10.0


class Tally(BaseModel):
    count: int
    notes: list[str] = []


class CountOnly(BaseModel):
    count: int


# --- RequestContext ---------------------------------------------------------------------


def test_request_context_has_mastras_get_set_has_delete() -> None:
    context = RequestContext({"user": "ada"})
    assert context.get("user") == "ada"
    assert context.get("missing") is None
    assert context.get("missing", "fallback") == "fallback"
    context.set("tier", "gold")
    assert context.has("tier")
    assert not context.has("nope")
    assert context.delete("tier") is True
    assert context.delete("tier") is False
    assert not context.has("tier")
    assert context.to_dict() == {"user": "ada"}


def test_request_context_is_a_mutable_mapping() -> None:
    context = RequestContext({"a": 1}, b=2)
    context["c"] = 3
    del context["a"]
    assert dict(context) == {"b": 2, "c": 3}
    assert len(context) == 2
    assert "b" in context
    assert list(context) == ["b", "c"]
    assert context == {"b": 2, "c": 3}
    with pytest.raises(KeyError):
        context["a"]
    assert "RequestContext" in repr(context)


def test_request_context_keys_must_be_strings() -> None:
    with pytest.raises(TypeError):
        RequestContext({1: "one"})
    context = RequestContext()
    with pytest.raises(TypeError):
        context.set(2, "two")  # type: ignore[arg-type]


def test_to_dict_is_a_copy() -> None:
    context = RequestContext({"a": 1})
    copy = context.to_dict()
    copy["a"] = 2
    assert context["a"] == 1


# --- request context in runs ------------------------------------------------------------


def recording_workflow(seen: dict[tuple[str, str], dict[str, Any]], *, change: bool = True):
    """Two steps that record what request context they see; the first adds a key."""

    def first(ctx):
        seen[(ctx.input_data.value, "first")] = dict(ctx.request_context)
        if change:
            ctx.request_context.set("added_by", f"first of {ctx.input_data.value}")
            ctx.request_context.delete("drop_me")
        return ctx.input_data

    def second(ctx):
        seen[(ctx.input_data.value, "second")] = dict(ctx.request_context)
        return ctx.input_data

    return (
        create_workflow(id="context", input_schema=Value, output_schema=Value)
        .then(create_step(id="first", input_schema=Value, output_schema=Value, execute=first))
        .then(create_step(id="second", input_schema=Value, output_schema=Value, execute=second))
        .commit()
    )


@pytest.mark.parametrize("as_request_context", [True, False], ids=["RequestContext", "dict"])
def test_the_request_context_reaches_every_step(runtime: Runtime, as_request_context) -> None:
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    wf = runtime.register(recording_workflow(seen, change=False))
    values = {"user": "ada", "roles": ["admin"], "limits": {"daily": 3}}
    context = RequestContext(values) if as_request_context else dict(values)
    result = wf.create_run().start(input_data={"value": "r"}, request_context=context, timeout=5)
    assert result.status == "success"
    assert seen[("r", "first")] == values
    assert seen[("r", "second")] == values


def test_steps_see_the_request_context_as_a_request_context(runtime: Runtime) -> None:
    kinds: list[type] = []

    def body(ctx):
        kinds.append(type(ctx.request_context))
        return ctx.input_data

    step = create_step(id="kind", input_schema=Value, output_schema=Value, execute=body)
    wf = runtime.register(
        create_workflow(id="kind", input_schema=Value, output_schema=Value).then(step).commit()
    )
    wf.create_run().start(input_data={"value": "k"}, request_context={"a": 1}, timeout=5)
    wf.create_run().start(input_data={"value": "k"}, timeout=5)
    assert kinds == [RequestContext, RequestContext]


def test_a_step_that_sets_its_request_context_to_none_fails_and_changes_nothing(
    runtime: Runtime,
) -> None:
    # None once stood for a context the step never touched: its changes were kept as if
    # it had made none, where the step had meant to clear it.
    def body(ctx):
        ctx.request_context.set("seen", True)
        ctx.request_context = None
        return ctx.input_data

    step = create_step(id="clear", input_schema=Value, output_schema=Value, execute=body)
    wf = runtime.register(
        create_workflow(id="clear", input_schema=Value, output_schema=Value).then(step).commit()
    )
    result = wf.create_run().start(input_data={"value": "c"}, request_context={"a": 1}, timeout=5)
    assert result.status == "failed" and result.error is not None
    assert result.error.name == "TypeError" and "None" in result.error.message


def test_a_step_change_to_the_request_context_is_seen_by_later_steps_only_in_its_run(
    runtime: Runtime,
) -> None:
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    wf = runtime.register(recording_workflow(seen))
    shared = RequestContext({"user": "ada", "drop_me": True})
    wf.create_run().start(input_data={"value": "one"}, request_context=shared, timeout=5)
    wf.create_run().start(input_data={"value": "two"}, request_context=shared, timeout=5)

    assert seen[("one", "first")] == {"user": "ada", "drop_me": True}
    assert seen[("one", "second")] == {"user": "ada", "added_by": "first of one"}
    # The second run started from the same object and saw none of the first run's changes.
    assert seen[("two", "first")] == {"user": "ada", "drop_me": True}
    assert seen[("two", "second")] == {"user": "ada", "added_by": "first of two"}
    # Nor did the caller's object change.
    assert shared.to_dict() == {"user": "ada", "drop_me": True}


def test_the_caller_changing_its_context_after_the_start_does_not_reach_the_run(
    runtime: Runtime,
) -> None:
    entered, release = threading.Event(), threading.Event()
    seen: list[dict[str, Any]] = []

    def wait_then_read(ctx):
        entered.set()
        release.wait(BLOCK_LIMIT)
        seen.append(ctx.request_context.to_dict())
        return ctx.input_data

    def read_again(ctx):
        seen.append(ctx.request_context.to_dict())
        return ctx.input_data

    workflow = (
        create_workflow(id="leak", input_schema=Value, output_schema=Value)
        .then(
            create_step(id="wait", input_schema=Value, output_schema=Value, execute=wait_then_read)
        )
        .then(create_step(id="again", input_schema=Value, output_schema=Value, execute=read_again))
        .commit()
    )
    wf = runtime.register(workflow)
    context = RequestContext({"user": "ada", "nested": {"n": 1}})
    run = wf.create_run()
    try:
        run.start_async(input_data={"value": "v"}, request_context=context)
        context["user"] = "mallory"
        context["later"] = True
        context.delete("nested")
        assert entered.wait(5)
    finally:
        release.set()
    assert run.wait(timeout=5).status == "success"
    assert seen == [{"user": "ada", "nested": {"n": 1}}] * 2


def test_the_caller_changing_a_nested_context_value_after_the_start_does_not_reach_the_run(
    runtime: Runtime,
) -> None:
    entered, release = threading.Event(), threading.Event()
    seen: list[dict[str, Any]] = []

    def wait_then_read(ctx):
        entered.set()
        release.wait(BLOCK_LIMIT)
        seen.append(ctx.request_context.to_dict())
        return ctx.input_data

    step = create_step(id="wait", input_schema=Value, output_schema=Value, execute=wait_then_read)
    wf = runtime.register(
        create_workflow(id="nested-leak", input_schema=Value, output_schema=Value)
        .then(step)
        .commit()
    )
    context = RequestContext({"nested": {"n": 1}})
    run = wf.create_run()
    try:
        run.start_async(input_data={"value": "v"}, request_context=context)
        context["nested"]["n"] = 2
        assert entered.wait(5)
    finally:
        release.set()
    assert run.wait(timeout=5).status == "success"
    assert seen == [{"nested": {"n": 1}}]


def test_nested_request_context_values_are_not_shared_with_the_caller(runtime: Runtime) -> None:
    def mutate(ctx):
        ctx.request_context["nested"]["touched"] = True
        return ctx.input_data

    step = create_step(id="mutate", input_schema=Value, output_schema=Value, execute=mutate)
    wf = runtime.register(
        create_workflow(id="nested", input_schema=Value, output_schema=Value).then(step).commit()
    )
    nested = {"n": 1}
    result = wf.create_run().start(
        input_data={"value": "v"}, request_context={"nested": nested}, timeout=5
    )
    assert result.status == "success"
    assert nested == {"n": 1}


def test_a_run_started_after_another_run_changed_a_nested_value_does_not_see_the_change(
    runtime: Runtime,
) -> None:
    seen: list[dict[str, Any]] = []

    def touch(ctx):
        seen.append(copy.deepcopy(ctx.request_context.to_dict()))  # to_dict() is shallow
        ctx.request_context["nested"]["touched_by"] = ctx.input_data.value
        return ctx.input_data

    step = create_step(id="touch", input_schema=Value, output_schema=Value, execute=touch)
    wf = runtime.register(
        create_workflow(id="touch", input_schema=Value, output_schema=Value).then(step).commit()
    )
    shared = RequestContext({"nested": {"n": 1}})
    wf.create_run().start(input_data={"value": "first"}, request_context=shared, timeout=5)
    wf.create_run().start(input_data={"value": "second"}, request_context=shared, timeout=5)
    assert seen == [{"nested": {"n": 1}}, {"nested": {"n": 1}}]


# --- workflow state -----------------------------------------------------------------------


def counting_workflow(seen: list[Any], *, state_schema=Tally, workflow_id: str = "counting"):
    """Three steps: the first two add one to the count and a note; all record what they read."""

    def bump(ctx):
        seen.append((ctx.step_id, ctx.state))
        state = ctx.state
        if isinstance(state, BaseModel):
            ctx.set_state(Tally(count=state.count + 1, notes=[*state.notes, ctx.step_id]))
        else:
            ctx.set_state({"count": state["count"] + 1, "notes": [*state["notes"], ctx.step_id]})
        return ctx.input_data

    def read(ctx):
        seen.append((ctx.step_id, ctx.state))
        return ctx.input_data

    workflow = create_workflow(
        id=workflow_id, input_schema=Value, output_schema=Value, state_schema=state_schema
    )
    for step_id, body in (("bump1", bump), ("bump2", bump), ("read", read)):
        workflow.then(
            create_step(id=step_id, input_schema=Value, output_schema=Value, execute=body)
        )
    return workflow.commit()


def test_initial_state_reaches_the_steps_and_set_state_is_seen_by_later_steps(
    runtime: Runtime,
) -> None:
    seen: list[Any] = []
    wf = runtime.register(counting_workflow(seen))
    result = wf.create_run().start(
        input_data={"value": "s"}, initial_state={"count": 10}, timeout=5
    )
    assert result.status == "success"
    assert seen == [
        ("bump1", Tally(count=10, notes=[])),
        ("bump2", Tally(count=11, notes=["bump1"])),
        ("read", Tally(count=12, notes=["bump1", "bump2"])),
    ]
    assert all(isinstance(state, Tally) for _, state in seen)


def test_initial_state_may_be_a_model(runtime: Runtime) -> None:
    seen: list[Any] = []
    wf = runtime.register(counting_workflow(seen))
    wf.create_run().start(
        input_data={"value": "s"}, initial_state=Tally(count=1, notes=["x"]), timeout=5
    )
    assert seen[0] == ("bump1", Tally(count=1, notes=["x"]))


def test_state_without_a_schema_is_a_plain_dict(runtime: Runtime) -> None:
    seen: list[Any] = []
    wf = runtime.register(counting_workflow(seen, state_schema=None, workflow_id="plain-state"))
    result = wf.create_run().start(
        input_data={"value": "s"},
        initial_state={"count": 0, "notes": []},
        output_options=OutputOptions(include_state=True),
        timeout=5,
    )
    assert result.status == "success"
    assert seen[-1] == ("read", {"count": 2, "notes": ["bump1", "bump2"]})
    assert result.state == {"count": 2, "notes": ["bump1", "bump2"]}


def test_the_caller_changing_a_nested_initial_state_after_the_start_does_not_reach_the_run(
    runtime: Runtime,
) -> None:
    entered, release = threading.Event(), threading.Event()
    seen: list[Any] = []

    def wait_then_read(ctx):
        entered.set()
        release.wait(BLOCK_LIMIT)
        seen.append(ctx.state)
        return ctx.input_data

    step = create_step(id="wait", input_schema=Value, output_schema=Value, execute=wait_then_read)
    wf = runtime.register(
        create_workflow(id="nested-state", input_schema=Value, output_schema=Value)
        .then(step)
        .commit()
    )
    state = {"items": ["a"]}
    run = wf.create_run()
    try:
        run.start_async(input_data={"value": "v"}, initial_state=state)
        state["items"].append("added by the caller later")
        assert entered.wait(5)
    finally:
        release.set()
    assert run.wait(timeout=5).status == "success"
    assert seen == [{"items": ["a"]}]


def test_a_step_reading_state_cannot_change_it_without_set_state(runtime: Runtime) -> None:
    seen: list[Any] = []

    def meddle(ctx):
        ctx.state["count"] = 99  # a copy: only set_state changes the state
        return ctx.input_data

    def read(ctx):
        seen.append(ctx.state)
        return ctx.input_data

    workflow = (
        create_workflow(id="meddle", input_schema=Value, output_schema=Value)
        .then(create_step(id="meddle", input_schema=Value, output_schema=Value, execute=meddle))
        .then(create_step(id="read", input_schema=Value, output_schema=Value, execute=read))
        .commit()
    )
    wf = runtime.register(workflow)
    wf.create_run().start(input_data={"value": "m"}, initial_state={"count": 1}, timeout=5)
    assert seen == [{"count": 1}]


def test_a_step_state_schema_gives_it_its_own_view_of_the_state(runtime: Runtime) -> None:
    seen: list[Any] = []

    def view(ctx):
        seen.append(ctx.state)
        return ctx.input_data

    step = create_step(
        id="view", input_schema=Value, output_schema=Value, execute=view, state_schema=CountOnly
    )
    workflow = create_workflow(
        id="view", input_schema=Value, output_schema=Value, state_schema=Tally
    ).then(step)
    wf = runtime.register(workflow.commit())
    wf.create_run().start(
        input_data={"value": "v"}, initial_state={"count": 4, "notes": ["n"]}, timeout=5
    )
    assert seen == [CountOnly(count=4)]
    assert isinstance(seen[0], CountOnly)


def test_state_is_separate_for_each_run(runtime: Runtime) -> None:
    seen: list[Any] = []
    wf = runtime.register(counting_workflow(seen))
    first = wf.create_run().start(
        input_data={"value": "a"},
        initial_state={"count": 0},
        output_options={"include_state": True},
        timeout=5,
    )
    second = wf.create_run().start(
        input_data={"value": "b"},
        initial_state={"count": 100},
        output_options={"include_state": True},
        timeout=5,
    )
    assert first.state == {"count": 2, "notes": ["bump1", "bump2"]}
    assert second.state == {"count": 102, "notes": ["bump1", "bump2"]}


def test_include_state_puts_the_final_state_on_every_result(runtime: Runtime) -> None:
    seen: list[Any] = []
    wf = runtime.register(counting_workflow(seen))
    expected = {"count": 7, "notes": ["bump1", "bump2"]}

    run = wf.create_run()
    from_start = run.start(
        input_data={"value": "s"},
        initial_state={"count": 5},
        output_options=OutputOptions(include_state=True),
        timeout=5,
    )
    assert from_start.state == expected
    assert run.wait(timeout=5).state == expected
    queried = wf.get_workflow_run_execution_result(run.run_id)
    assert queried is not None
    assert queried.state == expected


def test_include_state_shows_the_state_while_the_run_is_in_progress(runtime: Runtime) -> None:
    entered, release = threading.Event(), threading.Event()

    def bump(ctx):
        ctx.set_state({"count": ctx.state.count + 1})
        return ctx.input_data

    def wait(ctx):
        entered.set()
        release.wait(BLOCK_LIMIT)
        return ctx.input_data

    workflow = (
        create_workflow(id="progress", input_schema=Value, output_schema=Value, state_schema=Tally)
        .then(create_step(id="bump", input_schema=Value, output_schema=Value, execute=bump))
        .then(create_step(id="wait", input_schema=Value, output_schema=Value, execute=wait))
        .commit()
    )
    wf = runtime.register(workflow)
    run = wf.create_run()
    try:
        run.start_async(
            input_data={"value": "p"},
            initial_state={"count": 0},
            output_options={"include_state": True},
        )
        assert entered.wait(5)
        # The registry records the step's start on its own thread: wait until it shows.
        deadline = time.monotonic() + 5
        while True:
            result = wf.get_workflow_run_execution_result(run.run_id)
            assert result is not None
            if "wait" in result.steps or time.monotonic() > deadline:
                break
            time.sleep(0.002)
        assert result.status == "running"
        assert result.steps["wait"].status == "running"
        assert result.state == {"count": 1, "notes": []}
    finally:
        release.set()
    assert run.wait(timeout=5).state == {"count": 1, "notes": []}


@pytest.mark.parametrize(
    "output_options", [None, OutputOptions(), OutputOptions(include_state=False), {}]
)
def test_without_include_state_results_carry_no_state(runtime: Runtime, output_options) -> None:
    seen: list[Any] = []
    wf = runtime.register(counting_workflow(seen))
    run = wf.create_run()
    result = run.start(
        input_data={"value": "s"},
        initial_state={"count": 5},
        output_options=output_options,
        timeout=5,
    )
    assert result.status == "success"
    assert seen[-1][1].count == 7  # the state was there; it is just not on the results
    assert result.state is None
    assert run.wait(timeout=5).state is None
    queried = wf.get_workflow_run_execution_result(run.run_id)
    assert queried is not None
    assert queried.state is None


def test_set_state_with_a_value_that_fails_the_state_schema_fails_the_step(
    runtime: Runtime,
) -> None:
    ran_after: list[str] = []

    def bad(ctx):
        ctx.set_state({"count": "lots"})
        return ctx.input_data

    def after(ctx):
        ran_after.append("after")
        return ctx.input_data

    workflow = (
        create_workflow(id="bad-state", input_schema=Value, output_schema=Value, state_schema=Tally)
        .then(create_step(id="bad", input_schema=Value, output_schema=Value, execute=bad))
        .then(create_step(id="after", input_schema=Value, output_schema=Value, execute=after))
        .commit()
    )
    wf = runtime.register(workflow)
    result = wf.create_run().start(
        input_data={"value": "b"},
        initial_state={"count": 1},
        output_options={"include_state": True},
        timeout=5,
    )
    assert result.status == "failed"
    assert ran_after == []
    assert result.error is not None
    assert result.error.name == "StepValidationError"
    assert "'bad'" in result.error.message
    assert "Tally" in result.error.message
    step = result.steps["bad"]
    assert step.status == "failed"
    assert step.error is not None
    assert step.error.name == "StepValidationError"
    assert "after" not in result.steps
    # The rejected value never became the state.
    assert result.state == {"count": 1, "notes": []}


def test_set_state_with_an_unencodable_value_fails_the_step(runtime: Runtime) -> None:
    def bad(ctx):
        ctx.set_state({"handle": object()})
        return ctx.input_data

    workflow = (
        create_workflow(id="unencodable-state", input_schema=Value, output_schema=Value)
        .then(create_step(id="bad", input_schema=Value, output_schema=Value, execute=bad))
        .commit()
    )
    result = runtime.register(workflow).create_run().start(input_data={"value": "b"}, timeout=5)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "SnapshotEncodingError"
    assert "'handle'" in result.error.message


class _Holds(BaseModel):
    count: int = 0
    anything: Any = None


@pytest.mark.parametrize(
    ("state", "named"),
    [
        ({"count": 2**64}, "out of 64-bit range"),
        ({"anything": object()}, "Unable to serialize unknown type"),
    ],
    ids=["int past 64 bits", "object in an Any field"],
)
def test_a_state_its_schema_takes_but_no_snapshot_can_hold_fails_the_step_not_the_actor(
    runtime: Runtime, state: dict[str, Any], named: str
) -> None:
    # It was dumped and not checked: the run actor crashed encoding the snapshot
    # (RunCrashedError, naming no step), or pydantic's raw error came out.
    def sets(ctx: Any) -> Value:
        ctx.set_state(state)
        return ctx.input_data

    workflow = (
        create_workflow(
            id="held-state", input_schema=Value, output_schema=Value, state_schema=_Holds
        )
        .then(create_step(id="sets", input_schema=Value, output_schema=Value, execute=sets))
        .commit()
    )
    result = runtime.register(workflow).create_run().start(input_data={"value": "b"}, timeout=5)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "SnapshotEncodingError"
    assert named in result.error.message
    assert result.steps["sets"].status == "failed"
    assert result.steps["sets"].error is not None
    assert result.steps["sets"].error.name == "SnapshotEncodingError"


def test_steps_run_at_once_each_keep_their_request_context_changes(runtime: Runtime) -> None:
    # The last member of a parallel to finish put back the context it had seen at its
    # start: the others' changes were lost (a member that changed nothing lost them too).
    gate = threading.Event()

    def fast(ctx: Any) -> Value:
        ctx.request_context.set("from_fast", 1)
        gate.set()
        return ctx.input_data

    def slow(ctx: Any) -> Value:
        assert gate.wait(5)
        time.sleep(0.05)
        ctx.request_context.set("from_slow", 2)
        ctx.request_context.delete("drop_me")
        return ctx.input_data

    def idle(ctx: Any) -> Value:
        assert gate.wait(5)
        time.sleep(0.1)  # the last to finish, having changed nothing
        return ctx.input_data

    seen: list[dict[str, Any]] = []

    def after(ctx: Any) -> Value:
        seen.append(ctx.request_context.to_dict())
        return Value(value="done")

    def step(step_id: str, body: Any) -> Any:
        return create_step(id=step_id, input_schema=Value, output_schema=Value, execute=body)

    wf = runtime.register(
        create_workflow(id="together", input_schema=Value, output_schema=Value)
        .parallel([step("fast", fast), step("slow", slow), step("idle", idle)])
        .map(lambda ctx: ctx.input_data["fast"])
        .then(step("after", after))
        .commit()
    )
    result = wf.create_run().start(
        input_data={"value": "v"}, request_context={"user": "ada", "drop_me": 0}, timeout=5
    )

    assert result.status == "success", result.error
    assert seen == [{"user": "ada", "from_fast": 1, "from_slow": 2}]
