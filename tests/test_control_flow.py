"""Control flow: parallel, branch, loops, foreach, map, nested workflows, bail, builder errors."""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, RootModel

from runtime import (
    RetryConfig,
    Runtime,
    WorkflowDefinitionError,
    WorkflowResult,
    create_step,
    create_workflow,
)
from tests._support import N, dbl_step, inc_step, wait_until

WAIT = 10.0


class Loose(BaseModel):
    """Any mapping: lets a test see exactly what a node passed on."""

    model_config = ConfigDict(extra="allow")


class Pair(BaseModel):
    inc: N
    dbl: N


class Text(BaseModel):
    text: str


class Tagged(BaseModel):
    run: str
    n: int


class Batch(BaseModel):
    base: int


class TaggedList(BaseModel):
    items: list[Tagged]


class Out(BaseModel):
    out: list[N]


def recording_step(calls: list[Any], step_id: str = "later", schema: type[BaseModel] = N):
    """A step that records each input it gets and passes it on."""

    def execute(ctx):
        calls.append(ctx.input_data.model_dump())
        return ctx.input_data

    return create_step(id=step_id, input_schema=schema, output_schema=schema, execute=execute)


def run_once(runtime: Runtime, workflow, input_data: Any) -> WorkflowResult:
    return runtime.register(workflow).create_run().start(input_data=input_data, timeout=WAIT)


def outputs(result: WorkflowResult) -> dict[str, Any]:
    return {path: step.output for path, step in result.steps.items()}


# --- parallel ------------------------------------------------------------------------


def test_parallel_output_maps_each_step_id_to_its_output_and_feeds_the_next_step(
    runtime: Runtime,
) -> None:
    seen: list[Any] = []
    workflow = (
        create_workflow(id="par", input_schema=N, output_schema=Pair)
        .parallel([inc_step(), dbl_step()])
        .then(recording_step(seen, schema=Pair))
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 3})

    assert result.status == "success", result.error
    assert seen == [{"inc": {"n": 4}, "dbl": {"n": 6}}]
    assert result.result == {"inc": {"n": 4}, "dbl": {"n": 6}}
    assert result.steps["inc"].status == "success"
    assert result.steps["inc"].output == {"n": 4}
    assert result.steps["dbl"].output == {"n": 6}


def test_a_workflow_ending_in_a_parallel_checks_the_combined_output_not_each_step(
    runtime: Runtime,
) -> None:
    workflow = (
        create_workflow(id="ends-in-par", input_schema=N, output_schema=Pair)
        .parallel([inc_step(), dbl_step()])
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 3})

    assert result.status == "success", result.error
    assert result.result == {"inc": {"n": 4}, "dbl": {"n": 6}}


def test_a_workflow_ending_in_a_parallel_whose_output_does_not_fit_fails_at_commit() -> None:
    # The output is {"inc": ..., "dbl": ...}, which has no "n": refused before any run.
    workflow = create_workflow(id="ends-in-par-badly", input_schema=N, output_schema=N).parallel(
        [inc_step(), dbl_step()]
    )

    with pytest.raises(WorkflowDefinitionError, match=r"the workflow's result.*parallel.*'n'"):
        workflow.commit()


def test_parallel_steps_really_run_at_the_same_time(runtime: Runtime) -> None:
    # Each step waits for the other at a barrier of two: run one after the other,
    # the first would break the barrier and fail the run.
    barrier = threading.Barrier(2, timeout=WAIT)

    def meet(ctx):
        barrier.wait()
        return ctx.input_data

    a = create_step(id="a", input_schema=N, output_schema=N, execute=meet)
    b = create_step(id="b", input_schema=N, output_schema=N, execute=meet)
    workflow = (
        create_workflow(id="par-at-once", input_schema=N, output_schema=Loose)
        .parallel([a, b])
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 1})

    assert result.status == "success", result.error
    assert result.result == {"a": {"n": 1}, "b": {"n": 1}}


def test_parallel_failure_fails_the_run_tells_the_sibling_and_runs_nothing_later(
    runtime: Runtime,
) -> None:
    sibling_started = threading.Event()
    sibling_done = threading.Event()
    told: dict[str, Any] = {}
    later_calls: list[Any] = []

    def fail(ctx):
        assert sibling_started.wait(WAIT)
        raise ValueError("boom in a branch")

    def sibling(ctx):
        sibling_started.set()
        told["woken"] = ctx.abort_signal.wait(WAIT)
        told["aborted"] = ctx.abort_signal.aborted
        told["cancelled"] = ctx.cancelled
        told["reason"] = ctx.abort_signal.reason
        sibling_done.set()
        return ctx.input_data

    workflow = (
        create_workflow(id="par-fail", input_schema=N, output_schema=N)
        .parallel(
            [
                create_step(id="fail", input_schema=N, output_schema=N, execute=fail),
                create_step(id="sibling", input_schema=N, output_schema=N, execute=sibling),
            ]
        )
        .map(lambda ctx: ctx.input_data["sibling"])
        .then(recording_step(later_calls))
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 1})

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "ValueError"
    assert result.error.message == "boom in a branch"
    assert result.steps["fail"].status == "failed"
    assert sibling_done.wait(WAIT)
    assert told == {"woken": True, "aborted": True, "cancelled": True, "reason": "sibling_failed"}
    # The sibling did not fail: it was let go of, and shows no error of another step's.
    assert result.steps["sibling"].status == "canceled"
    assert result.steps["sibling"].error is None
    assert later_calls == []
    assert "later" not in result.steps
    assert not any(path.startswith("map-") for path in result.steps)


@pytest.mark.parametrize("end", ["sibling_failed", "cancel"])
def test_a_member_waiting_out_a_retry_back_off_is_canceled_with_no_error(
    runtime: Runtime, end: str
) -> None:
    """Its last attempt's error was the back-off's; canceled, it keeps none (p2)."""
    in_back_off = threading.Event()

    def down(ctx):
        raise ConnectionError("down")

    def fail(ctx):
        assert in_back_off.wait(WAIT)
        if end == "cancel":
            ctx.abort_signal.wait(WAIT)
            return ctx.input_data
        raise ValueError("boom in a branch")

    workflow = (
        create_workflow(
            id=f"par-back-off-{end}",
            input_schema=N,
            output_schema=N,
            retry_config=RetryConfig(delay=60.0),
        )
        .parallel(
            [
                create_step(id="fail", input_schema=N, output_schema=N, execute=fail),
                create_step(
                    id="flaky",
                    input_schema=N,
                    output_schema=N,
                    execute=down,
                    retries=3,
                ),
            ]
        )
        .map(lambda ctx: ctx.input_data["fail"])
        .commit()
    )
    bound = runtime.register(workflow)
    run_id = bound.create_run().start_async(input_data={"n": 1}).run_id

    def flaky_in_back_off() -> bool:
        current = bound.get_workflow_run_execution_result(run_id)
        flaky = None if current is None else current.steps.get("flaky")
        return flaky is not None and flaky.error is not None and flaky.status == "running"

    wait_until(flaky_in_back_off, WAIT)
    in_back_off.set()
    if end == "cancel":
        assert bound.create_run(run_id=run_id).cancel()
    result = bound.create_run(run_id=run_id).wait(timeout=WAIT)

    assert result.status == ("failed" if end == "sibling_failed" else "canceled")
    assert result.steps["flaky"].status == "canceled"
    assert result.steps["flaky"].error is None


def test_a_nested_workflow_fails_with_the_step_that_failed_in_it(runtime: Runtime) -> None:
    # Its siblings are let go of (canceled, above); the nested workflow that holds the
    # step is not a sibling: it fails with its step's error.
    def fail(ctx):
        raise ValueError("boom inside")

    child = (
        create_workflow(id="child", input_schema=N, output_schema=N)
        .then(inc_step())
        .then(create_step(id="fail", input_schema=N, output_schema=N, execute=fail))
        .commit()
    )
    workflow = (
        create_workflow(id="nested-fail", input_schema=N, output_schema=N)
        .parallel([child, inc_step("beside")])
        .map(lambda ctx: ctx.input_data["beside"])
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 1})

    assert result.status == "failed"
    assert result.error is not None and result.error.message == "boom inside"
    assert result.steps["child.fail"].status == "failed"
    assert result.steps["child"].status == "failed"
    assert result.steps["child"].error is not None
    assert result.steps["child"].error.message == "boom inside"
    assert result.steps["child.inc"].status == "success"
    assert result.steps["beside"].status == "success"


# --- branch ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("take_inc", "take_dbl", "expected"),
    [
        (False, False, {}),
        (True, False, {"inc": {"n": 4}}),
        (False, True, {"dbl": {"n": 6}}),
        (True, True, {"inc": {"n": 4}, "dbl": {"n": 6}}),
    ],
    ids=["no-arm", "first-arm", "second-arm", "both-arms"],
)
def test_branch_outputs_exactly_the_arms_that_ran_and_the_next_step_gets_them(
    runtime: Runtime, take_inc: bool, take_dbl: bool, expected: dict[str, Any]
) -> None:
    seen: list[Any] = []
    workflow = (
        create_workflow(id="branchy", input_schema=N, output_schema=Loose)
        .branch([(lambda ctx: take_inc, inc_step()), (lambda ctx: take_dbl, dbl_step())])
        .then(recording_step(seen, schema=Loose))
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 3})

    assert result.status == "success", result.error
    assert seen == [expected]
    assert result.result == expected
    ran = {path for path in result.steps if path in {"inc", "dbl"}}
    assert ran == set(expected)


def test_a_branch_condition_sees_the_input_as_its_arms_step_input_model(
    runtime: Runtime,
) -> None:
    seen: list[Any] = []

    def cond(ctx):
        seen.append((type(ctx.input_data), ctx.input_data.n))
        return True

    text = create_step(
        id="text",
        input_schema=N,
        output_schema=Text,
        execute=lambda ctx: Text(text=str(ctx.input_data.n)),
    )
    workflow = (
        create_workflow(id="branch-input", input_schema=N, output_schema=Loose)
        .branch([(cond, text)])
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 7})

    assert result.status == "success", result.error
    assert seen == [(N, 7)]
    assert result.result == {"text": {"text": "7"}}


def test_branch_awaits_an_async_condition(runtime: Runtime) -> None:
    async def big(ctx):
        await asyncio.sleep(0)
        return ctx.input_data.n > 2

    async def small(ctx):
        await asyncio.sleep(0)
        return ctx.input_data.n <= 2

    workflow = (
        create_workflow(id="branch-async", input_schema=N, output_schema=Loose)
        .branch([(big, inc_step()), (small, dbl_step())])
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 3})

    assert result.status == "success", result.error
    assert result.result == {"inc": {"n": 4}}
    assert "dbl" not in result.steps


def test_a_branch_condition_that_raises_fails_the_run(runtime: Runtime) -> None:
    calls: list[Any] = []

    def broken(ctx):
        raise KeyError("no such flag")

    workflow = (
        create_workflow(id="branch-raise", input_schema=N, output_schema=Loose)
        .branch([(broken, recording_step(calls, step_id="arm"))])
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 1})

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "KeyError"
    assert "no such flag" in result.error.message
    assert result.error.details["in"] == "condition"
    assert result.error.details["step_id"] == "branch-1"
    assert calls == []


def test_a_loop_condition_that_raises_fails_the_run_saying_so_not_the_step_that_succeeded(
    runtime: Runtime,
) -> None:
    def broken(ctx):
        raise ValueError("the condition has a bug")

    workflow = (
        create_workflow(id="loop-raise", input_schema=N, output_schema=N)
        .dountil(inc_step(), broken)
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 1})

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.message == "the condition has a bug"
    # The step ran and succeeded: the error says it was the loop's condition that raised.
    assert result.steps["inc"].status == "success" and result.steps["inc"].error is None
    assert result.error.details["step_id"] == "inc"
    assert result.error.details["in"] == "condition"


def test_a_branch_condition_cannot_set_state(runtime: Runtime) -> None:
    calls: list[Any] = []

    def sneaky(ctx):
        ctx.set_state({"changed": True})
        return True

    workflow = (
        create_workflow(id="branch-state", input_schema=N, output_schema=Loose)
        .branch([(sneaky, recording_step(calls, step_id="arm"))])
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 1})

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "WorkflowError"
    assert "set_state" in result.error.message
    assert calls == []


# --- loops -----------------------------------------------------------------------------


def test_dowhile_repeats_while_the_condition_holds_and_counts_iterations(
    runtime: Runtime,
) -> None:
    seen: list[tuple[int | None, Any]] = []

    def below_five(ctx):
        seen.append((ctx.iteration_count, ctx.input_data))
        return ctx.input_data.n < 5

    workflow = (
        create_workflow(id="dowhile", input_schema=N, output_schema=N)
        .dowhile(inc_step(), below_five)
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 1})

    assert result.status == "success", result.error
    assert result.result == {"n": 5}
    assert seen == [(1, N(n=2)), (2, N(n=3)), (3, N(n=4)), (4, N(n=5))]
    assert result.steps["inc"].iterations == 4
    assert result.steps["inc"].output == {"n": 5}


def test_dowhile_runs_its_step_once_even_when_the_condition_is_false(runtime: Runtime) -> None:
    workflow = (
        create_workflow(id="dowhile-once", input_schema=N, output_schema=N)
        .dowhile(inc_step(), lambda ctx: False)
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 1})

    assert result.status == "success", result.error
    assert result.result == {"n": 2}
    assert result.steps["inc"].iterations == 1


def test_dountil_repeats_until_the_condition_holds_and_counts_iterations(
    runtime: Runtime,
) -> None:
    seen: list[tuple[int | None, int]] = []

    def reached_four(ctx):
        seen.append((ctx.iteration_count, ctx.input_data.n))
        return ctx.input_data.n >= 4

    workflow = (
        create_workflow(id="dountil", input_schema=N, output_schema=N)
        .dountil(inc_step(), reached_four)
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 1})

    assert result.status == "success", result.error
    assert result.result == {"n": 4}
    assert seen == [(1, 2), (2, 3), (3, 4)]
    assert result.steps["inc"].iterations == 3


@pytest.mark.parametrize("kind", ["dowhile", "dountil"])
def test_a_loop_that_reaches_max_iterations_fails_the_run_with_loop_limit_error(
    runtime: Runtime, kind: str
) -> None:
    calls: list[int] = []

    def count(ctx):
        calls.append(ctx.input_data.n)
        return N(n=ctx.input_data.n + 1)

    step = create_step(id="spin", input_schema=N, output_schema=N, execute=count)
    builder = create_workflow(id=f"{kind}-limit", input_schema=N, output_schema=N)
    if kind == "dowhile":
        builder = builder.dowhile(step, lambda ctx: True, max_iterations=3)
    else:
        builder = builder.dountil(step, lambda ctx: False, max_iterations=3)

    result = run_once(runtime, builder.commit(), {"n": 0})

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "LoopLimitError"
    assert kind in result.error.message
    assert "'spin'" in result.error.message
    assert "max_iterations (3)" in result.error.message
    assert calls == [0, 1, 2]
    assert result.steps["spin"].status == "failed"
    assert result.steps["spin"].iterations == 3


def test_a_loop_whose_condition_ends_it_on_the_last_allowed_iteration_succeeds(
    runtime: Runtime,
) -> None:
    workflow = (
        create_workflow(id="dountil-edge", input_schema=N, output_schema=N)
        .dountil(inc_step(), lambda ctx: ctx.input_data.n >= 3, max_iterations=3)
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 0})

    assert result.status == "success", result.error
    assert result.result == {"n": 3}
    assert result.steps["inc"].iterations == 3


# --- foreach ---------------------------------------------------------------------------


def test_foreach_over_something_that_is_not_a_list_fails_the_run(runtime: Runtime) -> None:
    calls: list[Any] = []
    workflow = (
        create_workflow(id="foreach-dict", input_schema=N, output_schema=Loose)
        .foreach(recording_step(calls, step_id="each"))
        .map(lambda ctx: {"out": ctx.input_data})
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 1})

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "StepValidationError"
    assert "foreach" in result.error.message
    assert "'each'" in result.error.message
    assert calls == []
    assert result.steps["each"].status == "failed"


def test_foreach_outputs_follow_the_input_order_when_later_items_finish_first(
    runtime: Runtime,
) -> None:
    count = 5
    done = {i: threading.Event() for i in range(count)}
    finished: list[int] = []
    lock = threading.Lock()

    def each(ctx):
        n = ctx.input_data.n
        if n + 1 < count:  # every item but the last waits for the one after it
            assert done[n + 1].wait(WAIT)
        with lock:
            finished.append(n)
        done[n].set()
        return N(n=n * 10)

    workflow = (
        create_workflow(id="foreach-order", input_schema=N, output_schema=Out)
        .map(lambda ctx: [{"n": i} for i in range(ctx.input_data["n"])])
        .foreach(
            create_step(id="each", input_schema=N, output_schema=N, execute=each), concurrency=count
        )
        .map(lambda ctx: {"out": ctx.input_data})
        .commit()
    )

    result = run_once(runtime, workflow, {"n": count})

    assert result.status == "success", result.error
    assert finished == [4, 3, 2, 1, 0]
    assert result.result == {"out": [{"n": 0}, {"n": 10}, {"n": 20}, {"n": 30}, {"n": 40}]}
    assert result.steps["each"].payload == [{"n": i} for i in range(count)]
    assert result.steps["each"].output == [{"n": i * 10} for i in range(count)]


def test_foreach_runs_exactly_concurrency_items_at_once(runtime: Runtime) -> None:
    # Four items meet at a barrier of four, so four must run at once; the
    # counter shows no more than four ever do.
    barrier = threading.Barrier(4, timeout=WAIT)
    lock = threading.Lock()
    running = 0
    most = 0

    def each(ctx):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            barrier.wait()
        finally:
            with lock:
                running -= 1
        return ctx.input_data

    workflow = (
        create_workflow(id="foreach-four", input_schema=N, output_schema=Out)
        .map(lambda ctx: [{"n": i} for i in range(ctx.input_data["n"])])
        .foreach(
            create_step(id="each", input_schema=N, output_schema=N, execute=each), concurrency=4
        )
        .map(lambda ctx: {"out": ctx.input_data})
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 12})

    assert result.status == "success", result.error
    assert most == 4
    assert result.result == {"out": [{"n": i} for i in range(12)]}


def test_foreach_items_of_concurrent_runs_never_leak_between_runs(runtime: Runtime) -> None:
    runs, per_run = 10, 10

    async def tag(ctx):
        await asyncio.sleep(random.uniform(0, 0.005))  # finish in a shuffled order
        return Tagged(run=ctx.run_id, n=ctx.input_data.n)

    workflow = runtime.register(
        create_workflow(id="foreach-many", input_schema=Batch, output_schema=TaggedList)
        .map(lambda ctx: [{"n": ctx.input_data["base"] + i} for i in range(per_run)])
        .foreach(
            create_step(id="tag", input_schema=N, output_schema=Tagged, execute=tag),
            concurrency=4,
        )
        .map(lambda ctx: {"items": ctx.input_data})
        .commit()
    )
    started = []
    for r in range(runs):
        run = workflow.create_run()
        run.start_async(input_data={"base": r * 1000})
        started.append((r, run))

    for r, run in started:
        result = run.wait(WAIT)
        assert result.status == "success", result.error
        expected = [{"run": run.run_id, "n": r * 1000 + i} for i in range(per_run)]
        assert result.result == {"items": expected}
        assert result.steps["tag"].payload == [{"n": r * 1000 + i} for i in range(per_run)]


def test_foreach_over_an_empty_list_outputs_an_empty_list(runtime: Runtime) -> None:
    calls: list[Any] = []
    workflow = (
        create_workflow(id="foreach-empty", input_schema=N, output_schema=Out)
        .map(lambda ctx: [])
        .foreach(recording_step(calls, step_id="each"))
        .map(lambda ctx: {"out": ctx.input_data})
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 1})

    assert result.status == "success", result.error
    assert result.result == {"out": []}
    assert result.steps["each"].output == []
    assert calls == []


# --- map -------------------------------------------------------------------------------


def test_map_reshapes_data_for_the_next_step_and_appears_as_map_n(runtime: Runtime) -> None:
    seen: list[Any] = []

    def reshape(ctx):
        seen.append(ctx.input_data)
        return {"text": "x" * ctx.input_data["n"]}

    shout = create_step(
        id="shout",
        input_schema=Text,
        output_schema=Text,
        execute=lambda ctx: Text(text=ctx.input_data.text.upper()),
    )
    workflow = (
        create_workflow(id="mapper", input_schema=N, output_schema=Text)
        .then(inc_step())
        .map(reshape)
        .then(shout)
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 2})

    assert result.status == "success", result.error
    assert seen == [{"n": 3}]  # plain data, not a model
    assert result.result == {"text": "XXX"}
    assert list(result.steps) == ["inc", "map-2", "shout"]
    assert result.steps["map-2"].status == "success"
    assert result.steps["map-2"].output == {"text": "xxx"}


def test_a_map_with_an_id_appears_under_that_id(runtime: Runtime) -> None:
    workflow = (
        create_workflow(id="mapper-id", input_schema=N, output_schema=N)
        .map(lambda ctx: {"n": ctx.input_data["n"] * 3}, id="triple")
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 2})

    assert result.status == "success", result.error
    assert result.result == {"n": 6}
    assert result.steps["triple"].output == {"n": 6}


def test_what_a_map_returns_is_validated_by_the_next_steps_input_schema(
    runtime: Runtime,
) -> None:
    calls: list[Any] = []
    workflow = (
        create_workflow(id="mapper-bad", input_schema=N, output_schema=Text)
        .map(lambda ctx: {"wrong": 1})
        .then(recording_step(calls, step_id="next", schema=Text))
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 2})

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "StepValidationError"
    assert result.error.details.get("step_id") == "next"
    assert result.steps["map-1"].status == "success"
    assert result.steps["next"].status == "failed"
    assert calls == []


def test_a_map_reads_earlier_step_results_and_the_init_data(runtime: Runtime) -> None:
    class Summary(BaseModel):
        first: int
        init: int
        last: int

    def summarize(ctx):
        return {
            "first": ctx.get_step_result("inc").n,
            "init": ctx.get_init_data().n,
            "last": ctx.input_data["n"],
        }

    workflow = (
        create_workflow(id="mapper-read", input_schema=N, output_schema=Summary)
        .then(inc_step())
        .then(dbl_step())
        .map(summarize)
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 5})

    assert result.status == "success", result.error
    assert result.result == {"first": 6, "init": 5, "last": 12}


def test_get_step_result_reads_a_root_model_over_a_list_as_one_output(runtime: Runtime) -> None:
    # Its output is a list: taken for a foreach body's, one model per item.
    class Names(RootModel[list[str]]):
        pass

    names = create_step(
        id="names",
        input_schema=N,
        output_schema=Names,
        execute=lambda ctx: Names([f"n{i}" for i in range(ctx.input_data.n)]),
    )
    read: list[Any] = []

    def reader(ctx: Any) -> N:
        read.extend([ctx.get_step_result(names), ctx.get_step_result("names")])
        return N(n=len(read))

    workflow = (
        create_workflow(id="root-list", input_schema=N, output_schema=N)
        .then(names)
        .map(lambda ctx: {"n": len(ctx.input_data)})
        .then(create_step(id="reader", input_schema=N, output_schema=N, execute=reader))
        .commit()
    )
    result = run_once(runtime, workflow, {"n": 2})

    assert result.status == "success", result.error
    assert read == [Names(["n0", "n1"]), Names(["n0", "n1"])]


def test_a_foreach_over_a_nested_workflow_has_no_output_until_its_list_is_done(
    runtime: Runtime,
) -> None:
    # Its items read the item before's output as the nested workflow's, where a
    # foreach of a step reads none until its list is done.
    read: list[Any] = []

    def reader(ctx: Any) -> N:
        read.append(ctx.get_step_result("kid"))
        return N(n=ctx.input_data.n + 1)

    kid = (
        create_workflow(id="kid", input_schema=N, output_schema=N)
        .then(create_step(id="r", input_schema=N, output_schema=N, execute=reader))
        .commit()
    )
    after = create_step(id="after", input_schema=Loose, output_schema=Loose, execute=reader)
    workflow = (
        create_workflow(id="each-kid", input_schema=Loose, output_schema=Loose)
        .map(lambda ctx: [{"n": 1}, {"n": 2}, {"n": 3}])
        .foreach(kid)
        .map(lambda ctx: {"n": 0, "outputs": ctx.input_data})
        .then(after)
        .commit()
    )
    result = run_once(runtime, workflow, {})

    assert result.status == "success", result.error
    assert read[:3] == [None, None, None]
    assert read[3] == [N(n=2), N(n=3), N(n=4)]


# --- nested workflows ------------------------------------------------------------------


def test_a_nested_workflow_records_itself_and_its_steps_and_reads_its_own_scope(
    runtime: Runtime,
) -> None:
    seen: dict[str, Any] = {}

    def read_scope(ctx):
        seen["init"] = ctx.get_init_data()
        seen["a"] = ctx.get_step_result("a")
        seen["path"] = ctx.path
        return N(n=ctx.get_step_result("a").n + 1)

    child = (
        create_workflow(id="child", input_schema=N, output_schema=N)
        .then(
            create_step(
                id="a",
                input_schema=N,
                output_schema=N,
                execute=lambda ctx: N(n=ctx.input_data.n * 10),
            )
        )
        .then(create_step(id="b", input_schema=N, output_schema=N, execute=read_scope))
        .commit()
    )
    parent = (
        create_workflow(id="parent", input_schema=N, output_schema=N)
        .then(inc_step("a"))  # the parent has its own "a": the child must not see it
        .then(child)
        .commit()
    )

    result = run_once(runtime, parent, {"n": 1})

    assert result.status == "success", result.error
    assert result.result == {"n": 21}
    assert outputs(result) == {
        "a": {"n": 2},
        "child": {"n": 21},
        "child.a": {"n": 20},
        "child.b": {"n": 21},
    }
    assert seen == {"init": N(n=2), "a": N(n=20), "path": "child.b"}


def test_a_workflow_nested_in_a_nested_workflow(runtime: Runtime) -> None:
    inner = create_workflow(id="inner", input_schema=N, output_schema=N).then(dbl_step()).commit()
    middle = (
        create_workflow(id="middle", input_schema=N, output_schema=N)
        .then(inc_step())
        .then(inner)
        .commit()
    )
    outer = (
        create_workflow(id="outer", input_schema=N, output_schema=N)
        .then(middle)
        .then(inc_step("last"))
        .commit()
    )

    result = run_once(runtime, outer, {"n": 1})

    assert result.status == "success", result.error
    assert result.result == {"n": 5}
    assert outputs(result) == {
        "middle": {"n": 4},
        "middle.inc": {"n": 2},
        "middle.inner": {"n": 4},
        "middle.inner.dbl": {"n": 4},
        "last": {"n": 5},
    }


def test_a_failing_step_in_a_nested_workflow_fails_the_parent_run(runtime: Runtime) -> None:
    later_calls: list[Any] = []

    def explode(ctx):
        raise RuntimeError("child step broke")

    child = (
        create_workflow(id="child", input_schema=N, output_schema=N)
        .then(create_step(id="x", input_schema=N, output_schema=N, execute=explode))
        .commit()
    )
    parent = (
        create_workflow(id="parent-fails", input_schema=N, output_schema=N)
        .then(child)
        .then(recording_step(later_calls))
        .commit()
    )

    result = run_once(runtime, parent, {"n": 1})

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "RuntimeError"
    assert result.error.message == "child step broke"
    assert result.steps["child.x"].status == "failed"
    assert result.steps["child.x"].error is not None
    assert result.steps["child.x"].error.name == "RuntimeError"
    assert later_calls == []


class NM(BaseModel):
    n: int
    m: int


def test_a_nested_workflows_input_is_validated_by_its_input_schema(runtime: Runtime) -> None:
    calls: list[Any] = []
    child = (
        create_workflow(id="needs-m", input_schema=NM, output_schema=N)
        .then(recording_step(calls, step_id="c"))
        .commit()
    )
    # Chained straight after the input, the mismatch fails at commit (tests/test_schema_fit.py);
    # after a map, whose output is not known until it runs, the run validates it.
    parent = (
        create_workflow(id="parent-mismatch", input_schema=N, output_schema=N)
        .map(lambda ctx: ctx.input_data)
        .then(child)
        .commit()
    )

    result = run_once(runtime, parent, {"n": 1})

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "StepValidationError"
    assert result.steps["needs-m"].status == "failed"
    assert calls == []


def test_nesting_an_uncommitted_workflow_is_refused_at_then() -> None:
    child = create_workflow(id="child", input_schema=N, output_schema=N).then(inc_step())
    parent = create_workflow(id="parent", input_schema=N, output_schema=N)

    with pytest.raises(WorkflowDefinitionError, match="not committed"):
        parent.then(child)


# --- bail --------------------------------------------------------------------------------


def test_bail_ends_the_run_as_a_success_and_no_later_step_runs(runtime: Runtime) -> None:
    later_calls: list[Any] = []

    def gate(ctx):
        ctx.bail(N(n=99))

    workflow = (
        create_workflow(id="bail", input_schema=N, output_schema=N)
        .then(create_step(id="gate", input_schema=N, output_schema=N, execute=gate))
        .then(recording_step(later_calls))
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 1})

    assert result.status == "success", result.error
    assert result.result == {"n": 99}
    assert result.steps["gate"].status == "success"
    assert later_calls == []
    assert "later" not in result.steps


def test_a_bail_result_that_does_not_fit_the_output_schema_fails_the_step(
    runtime: Runtime,
) -> None:
    later_calls: list[Any] = []

    def gate(ctx):
        ctx.bail({"text": "not an N"})

    workflow = (
        create_workflow(id="bail-bad", input_schema=N, output_schema=N)
        .then(create_step(id="gate", input_schema=N, output_schema=N, execute=gate))
        .then(recording_step(later_calls))
        .commit()
    )

    result = run_once(runtime, workflow, {"n": 1})

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "StepValidationError"
    assert "bail" in result.error.message
    assert result.steps["gate"].status == "failed"
    assert later_calls == []


OPEN_STEP_STATUSES = {"running", "waiting", "suspended"}


@pytest.mark.parametrize("where", ["parallel", "foreach", "nested"])
def test_a_bail_leaves_no_step_open_in_the_finished_run(runtime: Runtime, where: str) -> None:
    sibling_started = threading.Event()

    def slow(ctx):
        sibling_started.set()
        ctx.abort_signal.wait(WAIT)
        return ctx.input_data

    def gate(ctx):
        if where == "parallel":
            assert sibling_started.wait(WAIT)
        if where != "foreach" or ctx.input_data.n == 1:
            ctx.bail(N(n=99))
        return ctx.input_data

    gate_step = create_step(id="gate", input_schema=N, output_schema=N, execute=gate)
    builder_ = create_workflow(id=f"bail-{where}", input_schema=N, output_schema=N)
    if where == "parallel":
        slow_step = create_step(id="slow", input_schema=N, output_schema=N, execute=slow)
        builder_ = builder_.parallel([slow_step, gate_step]).map(lambda ctx: ctx.input_data["gate"])
    elif where == "foreach":
        builder_ = (
            builder_.map(lambda ctx: [{"n": i} for i in range(3)])
            .foreach(gate_step)
            .map(lambda ctx: ctx.input_data[0])
        )
    else:
        child = create_workflow(id="bailing-child", input_schema=N, output_schema=N)
        builder_ = builder_.then(child.then(gate_step).commit()).then(inc_step())

    result = run_once(runtime, builder_.commit(), {"n": 1})

    assert result.status == "success", result.error
    # A bail in a nested workflow ends that workflow: the step after it runs (inc).
    assert result.result == {"n": 100 if where == "nested" else 99}
    still_open = {path: step.status for path, step in result.steps.items()}
    assert not {path for path, status in still_open.items() if status in OPEN_STEP_STATUSES}, (
        still_open
    )
    # The step that bailed succeeded with the bail's output, a foreach whose item bailed
    # as a parallel member (it read canceled).
    gate_path = "bailing-child.gate" if where == "nested" else "gate"
    assert still_open[gate_path] == "success"
    assert result.steps[gate_path].output == {"n": 99}


class Total(BaseModel):
    total: int


def test_a_bail_in_a_nested_workflow_ends_it_with_its_own_output_and_the_run_goes_on(
    runtime: Runtime,
) -> None:
    # As in Mastra, where a nested workflow is a run of its own: its bail is its output.
    # It ended the whole run, and was checked against the outer workflow's output schema
    # (Total here: so it failed the run, "total: Field required").
    sibling_started = threading.Event()
    later: list[str] = []

    def slow(ctx: Any) -> N:
        sibling_started.set()
        ctx.abort_signal.wait(WAIT)
        return ctx.input_data

    def quit_early(ctx: Any) -> N:
        assert sibling_started.wait(WAIT)
        ctx.bail(N(n=ctx.input_data.n * 10))

    def never(ctx: Any) -> N:
        later.append("child.never")
        return ctx.input_data

    child = (
        create_workflow(id="child", input_schema=N, output_schema=N)
        .parallel(
            [
                create_step(id="slow", input_schema=N, output_schema=N, execute=slow),
                create_step(id="quit", input_schema=N, output_schema=N, execute=quit_early),
            ]
        )
        .map(lambda ctx: ctx.input_data["quit"])
        .then(create_step(id="never", input_schema=N, output_schema=N, execute=never))
        .commit()
    )
    finish = create_step(
        id="finish",
        input_schema=N,
        output_schema=Total,
        execute=lambda ctx: Total(total=ctx.input_data.n + 1),
    )
    outer = (
        create_workflow(id="outer", input_schema=N, output_schema=Total)
        .then(child)
        .then(finish)
        .commit()
    )

    result = run_once(runtime, outer, {"n": 4})

    assert result.status == "success", result.error
    assert result.result == {"total": 41}
    assert later == []  # the nested workflow's later step never ran
    statuses = {path: step.status for path, step in result.steps.items()}
    assert statuses["child"] == "success" and result.steps["child"].output == {"n": 40}
    assert statuses["child.quit"] == "success"
    assert statuses["child.slow"] == "canceled"
    assert "child.never" not in statuses and statuses["finish"] == "success"


def test_a_bail_in_a_nested_workflow_must_fit_that_workflows_output_schema(
    runtime: Runtime,
) -> None:
    def wrong(ctx: Any) -> N:
        ctx.bail(Total(total=1))

    child = (
        create_workflow(id="child", input_schema=N, output_schema=N)
        .then(create_step(id="wrong", input_schema=N, output_schema=N, execute=wrong))
        .commit()
    )
    outer = create_workflow(id="outer", input_schema=N, output_schema=N).then(child).commit()

    result = run_once(runtime, outer, {"n": 1})

    assert result.status == "failed" and result.error is not None
    assert "the output schema of the workflow it ends (N)" in result.error.message


def test_a_resumed_item_that_bails_leaves_no_resume_for_the_next_pass_of_its_workflow(
    runtime: Runtime,
) -> None:
    # Its resume data stayed in the run: the nested workflow's next pass (a loop's) handed
    # it to the item again, which went on without asking: one approval let every pass by.
    calls: list[tuple[int, Any]] = []

    def review(ctx: Any) -> N:
        calls.append((ctx.input_data.n, ctx.resume_data))
        if ctx.resume_data is None:
            ctx.suspend({"n": ctx.input_data.n})
        ctx.bail(N(n=ctx.input_data.n + 1))

    child = (
        create_workflow(id="child", input_schema=N, output_schema=N)
        .map(lambda ctx: [ctx.input_data])
        .foreach(create_step(id="review", input_schema=N, output_schema=N, execute=review))
        .map(lambda ctx: ctx.input_data[0])
        .commit()
    )
    outer = (
        create_workflow(id="outer", input_schema=N, output_schema=N)
        .dowhile(child, lambda ctx: ctx.input_data.n < 3)
        .commit()
    )
    run = runtime.register(outer).create_run()
    result = run.start(input_data={"n": 0}, timeout=WAIT)
    asked = 0
    while result.status == "suspended" and asked < 5:
        asked += 1
        result = run.resume(
            step="review", for_each_index=0, resume_data={"ok": asked}, timeout=WAIT
        )

    assert result.status == "success" and result.result == {"n": 3}
    assert asked == 3  # each pass asked
    assert [data for _, data in calls] == [None, {"ok": 1}, None, {"ok": 2}, None, {"ok": 3}]


def test_the_output_of_a_step_that_bailed_is_its_bail_live_as_after_a_resume(
    runtime: Runtime,
) -> None:
    read: list[Any] = []

    def quit_(ctx: Any) -> N:
        ctx.bail(N(n=10))

    def ask(ctx: Any) -> N:
        if ctx.resume_data is None:
            ctx.suspend({})
        return ctx.input_data

    def reader(ctx: Any) -> N:
        read.append(ctx.get_step_result("child.q"))
        return ctx.input_data

    child = (
        create_workflow(id="child", input_schema=N, output_schema=N)
        .then(create_step(id="q", input_schema=N, output_schema=N, execute=quit_))
        .commit()
    )
    outer = (
        create_workflow(id="outer", input_schema=N, output_schema=N)
        .then(child)
        .then(create_step(id="read-live", input_schema=N, output_schema=N, execute=reader))
        .then(create_step(id="ask", input_schema=N, output_schema=N, execute=ask))
        .then(create_step(id="read-resumed", input_schema=N, output_schema=N, execute=reader))
        .commit()
    )
    run = runtime.register(outer).create_run()
    assert run.start(input_data={"n": 1}, timeout=WAIT).status == "suspended"
    result = run.resume(resume_data={}, timeout=WAIT)

    assert result.status == "success", result.error
    assert read == [N(n=10), N(n=10)]  # it was None live, and the bail after a resume


# --- builder errors ----------------------------------------------------------------------


def builder():
    return create_workflow(id="built", input_schema=N, output_schema=N)


@pytest.mark.parametrize(
    "build",
    [
        lambda: builder().parallel([]),
        lambda: builder().branch([]),
        lambda: builder().foreach(inc_step(), concurrency=0),
        lambda: builder().sleep(-1),
        lambda: builder().dowhile(inc_step(), lambda ctx: True, max_iterations=0),
        lambda: builder().dountil(inc_step(), lambda ctx: True, max_iterations=0),
    ],
    ids=["parallel-empty", "branch-empty", "foreach-0", "sleep-negative", "dowhile-0", "dountil-0"],
)
def test_builder_refuses_empty_or_out_of_range_constructs(build) -> None:
    with pytest.raises(WorkflowDefinitionError):
        build()


@pytest.mark.parametrize(
    "build",
    [
        lambda: builder().parallel(inc_step()),
        lambda: builder().parallel("inc"),
        lambda: builder().parallel([inc_step(), object()]),
        lambda: builder().branch([inc_step()]),
        lambda: builder().branch([("not callable", inc_step())]),
        lambda: builder().branch([(lambda ctx: True, "not a step")]),
        lambda: builder().dowhile("not a step", lambda ctx: True),
        lambda: builder().dountil(inc_step(), "not callable"),
        lambda: builder().foreach(lambda ctx: ctx),
        lambda: builder().map("not callable"),
        lambda: builder().then(42),
        lambda: builder().sleep_until("tomorrow"),
    ],
    ids=[
        "parallel-step",
        "parallel-str",
        "parallel-object",
        "branch-bare-step",
        "branch-condition",
        "branch-step",
        "dowhile-step",
        "dountil-condition",
        "foreach-function",
        "map-str",
        "then-int",
        "sleep-until-str",
    ],
)
def test_builder_refuses_wrong_types_with_type_error(build) -> None:
    with pytest.raises(TypeError):
        build()


def test_a_step_id_used_in_then_and_in_parallel_is_refused_at_commit() -> None:
    workflow = builder().then(inc_step()).parallel([inc_step(), dbl_step()])

    with pytest.raises(WorkflowDefinitionError, match="'inc'"):
        workflow.commit()


def test_a_step_id_used_twice_in_one_parallel_is_refused_at_commit() -> None:
    workflow = builder().parallel([inc_step(), inc_step()])

    with pytest.raises(WorkflowDefinitionError, match="'inc'"):
        workflow.commit()
