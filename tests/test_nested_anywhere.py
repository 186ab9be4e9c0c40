"""A committed workflow wherever a step can stand: parallel, branch, loops, foreach.

With its results keyed as in ``.then()`` (``child``, ``child.step``), and suspend
and resume through each construct; a suspended child reads ``suspended``, and
``resume(step="child")`` resumes its one suspended step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from runtime import (
    ResumeConflictError,
    ResumeTargetError,
    Runtime,
    Workflow,
    create_step,
    create_workflow,
)
from tests._support import Value, wait_for_no_callboard_threads, wait_until

WAIT = 10.0


class Combined(BaseModel):
    model_config = {"extra": "allow"}


class Items(BaseModel):
    items: list[Value]


def exclaim(step_id: str = "exclaim") -> Any:
    return create_step(
        id=step_id,
        input_schema=Value,
        output_schema=Value,
        execute=lambda ctx: Value(value=ctx.input_data.value + "!"),
    )


def ask(ctx: Any) -> Value:
    """Suspends until resumed with ``{"answer": ...}``, then appends the answer."""
    if ctx.resume_data is None:
        ctx.suspend({"question": f"answer for {ctx.input_data.value}?"})
    return Value(value=ctx.input_data.value + ctx.resume_data["answer"])


def child(*, asking: bool = False, workflow_id: str = "child") -> Workflow[Any, Any]:
    workflow = create_workflow(id=workflow_id, input_schema=Value, output_schema=Value).then(
        exclaim("prep")
    )
    if asking:
        workflow = workflow.then(
            create_step(id="ask", input_schema=Value, output_schema=Value, execute=ask)
        )
    return workflow.commit()


def parent(workflow_id: str, output: type[BaseModel] = Combined) -> Workflow[Any, Any]:
    return create_workflow(id=workflow_id, input_schema=Value, output_schema=output)


def to_items(ctx: Any) -> list[dict[str, str]]:
    return [{"value": letter} for letter in ctx.input_data["value"]]


def short(ctx: Any) -> bool:
    return len(ctx.input_data.value) < 4


# --- each construct, without suspending ----------------------------------------------


def test_a_workflow_as_a_parallel_member(runtime: Runtime) -> None:
    workflow = runtime.register(
        parent("p").parallel([exclaim("a"), child(), exclaim("b")]).commit()
    )
    result = workflow.create_run().start(input_data={"value": "x"}, timeout=WAIT)
    assert result.status == "success", result.error
    assert result.result == {"a": {"value": "x!"}, "child": {"value": "x!"}, "b": {"value": "x!"}}
    assert list(result.result) == ["a", "child", "b"]  # in the order of the members
    assert result.steps["child"].status == "success"
    assert result.steps["child"].payload == {"value": "x"}
    assert result.steps["child.prep"].output == {"value": "x!"}


def test_workflows_only_in_parallel_each_get_the_same_input(runtime: Runtime) -> None:
    workflow = runtime.register(
        parent("only")
        .parallel([child(), child(workflow_id="other")])
        .map(
            lambda ctx: {
                "value": ctx.input_data["child"]["value"] + ctx.input_data["other"]["value"]
            }
        )
        .commit()
    )
    result = workflow.create_run().start(input_data={"value": "x"}, timeout=WAIT)
    assert result.status == "success", result.error
    assert result.result == {"value": "x!x!"}
    assert result.steps["other.prep"].payload == {"value": "x"}


def test_a_workflow_as_a_branch_arm(runtime: Runtime) -> None:
    workflow = runtime.register(
        parent("b")
        .branch(
            [
                (lambda ctx: ctx.input_data.value == "step", exclaim("arm")),
                (lambda ctx: ctx.input_data.value != "step", child()),
            ]
        )
        .commit()
    )
    taken = workflow.create_run().start(input_data={"value": "flow"}, timeout=WAIT)
    assert taken.status == "success", taken.error
    assert taken.result == {"child": {"value": "flow!"}}
    assert "arm" not in taken.steps
    other = workflow.create_run().start(input_data={"value": "step"}, timeout=WAIT)
    assert other.result == {"arm": {"value": "step!"}}
    assert "child" not in other.steps


@pytest.mark.parametrize("until", [False, True])
def test_a_workflow_as_a_loop_body(runtime: Runtime, until: bool) -> None:
    built = parent(f"loop-{until}", Value)
    if until:
        built = built.dountil(child(), lambda ctx: not short(ctx))
    else:
        built = built.dowhile(child(), short)
    workflow = runtime.register(built.commit())
    result = workflow.create_run().start(input_data={"value": "x"}, timeout=WAIT)
    assert result.status == "success", result.error
    assert result.result == {"value": "x!!!"}
    assert result.steps["child"].iterations == 3
    assert result.steps["child.prep"].output == {"value": "x!!!"}


def test_a_loop_over_a_workflow_keeps_its_max_iterations(runtime: Runtime) -> None:
    workflow = runtime.register(
        parent("limit", Value).dowhile(child(), lambda ctx: True, max_iterations=2).commit()
    )
    result = workflow.create_run().start(input_data={"value": "x"}, timeout=WAIT)
    assert result.status == "failed"
    assert result.error is not None and result.error.name == "LoopLimitError"
    assert result.steps["child"].status == "failed"


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_workflow_as_a_foreach_body(runtime: Runtime, concurrency: int) -> None:
    workflow = runtime.register(
        create_workflow(id=f"each-{concurrency}", input_schema=Value, output_schema=Items)
        .map(to_items)
        .foreach(child(), concurrency=concurrency)
        .map(lambda ctx: {"items": ctx.input_data})
        .commit()
    )
    result = workflow.create_run().start(input_data={"value": "abc"}, timeout=WAIT)
    assert result.status == "success", result.error
    assert result.result == {"items": [{"value": "a!"}, {"value": "b!"}, {"value": "c!"}]}
    record = result.steps["child"]
    assert record.status == "success"
    assert record.payload == [{"value": "a"}, {"value": "b"}, {"value": "c"}]
    assert record.output == [{"value": "a!"}, {"value": "b!"}, {"value": "c!"}]
    assert result.steps["child.prep"].payload == {"value": "c"}  # the last item's


def test_a_foreach_over_a_workflow_with_no_items(runtime: Runtime) -> None:
    workflow = runtime.register(
        create_workflow(id="none", input_schema=Value, output_schema=Items)
        .map(lambda ctx: [])
        .foreach(child())
        .map(lambda ctx: {"items": ctx.input_data})
        .commit()
    )
    result = workflow.create_run().start(input_data={"value": "x"}, timeout=WAIT)
    assert result.status == "success", result.error
    assert result.result == {"items": []}
    assert "child.prep" not in result.steps


def test_constructs_over_workflows_nest_inside_nested_workflows(runtime: Runtime) -> None:
    middle = (
        create_workflow(id="middle", input_schema=Value, output_schema=Items)
        .map(to_items)
        .foreach(child())
        .map(lambda ctx: {"items": ctx.input_data})
        .commit()
    )
    workflow = runtime.register(parent("outer").parallel([exclaim("side"), middle]).commit())
    result = workflow.create_run().start(input_data={"value": "ab"}, timeout=WAIT)
    assert result.status == "success", result.error
    assert result.result == {
        "side": {"value": "ab!"},
        "middle": {"items": [{"value": "a!"}, {"value": "b!"}]},
    }
    assert result.steps["middle.child"].output == [{"value": "a!"}, {"value": "b!"}]
    assert result.steps["middle.child.prep"].status == "success"


def test_a_failure_inside_a_nested_member_fails_the_run(runtime: Runtime) -> None:
    def boom(ctx: Any) -> Value:
        raise ValueError("no")

    failing = (
        create_workflow(id="failing", input_schema=Value, output_schema=Value)
        .then(create_step(id="boom", input_schema=Value, output_schema=Value, execute=boom))
        .commit()
    )
    workflow = runtime.register(parent("fails").parallel([exclaim("a"), failing]).commit())
    result = workflow.create_run().start(input_data={"value": "x"}, timeout=WAIT)
    assert result.status == "failed"
    assert result.steps["failing.boom"].status == "failed"
    assert result.error is not None and result.error.message == "no"


# --- suspend and resume through each construct ---------------------------------------


def in_parallel() -> Workflow[Any, Any]:
    return parent("s-parallel").parallel([exclaim("a"), child(asking=True)]).commit()


def in_branch() -> Workflow[Any, Any]:
    return (
        parent("s-branch")
        .branch([(lambda ctx: False, exclaim("never")), (lambda ctx: True, child(asking=True))])
        .commit()
    )


def in_loop() -> Workflow[Any, Any]:
    return parent("s-loop", Value).dountil(child(asking=True), lambda ctx: True).commit()


def in_foreach() -> Workflow[Any, Any]:
    return (
        create_workflow(id="s-foreach", input_schema=Value, output_schema=Items)
        .map(to_items)
        .foreach(child(asking=True), concurrency=2)
        .map(lambda ctx: {"items": ctx.input_data})
        .commit()
    )


CASES: dict[str, tuple[Callable[[], Workflow[Any, Any]], str, Any]] = {
    "parallel": (in_parallel, "x", {"a": {"value": "x!"}, "child": {"value": "x!?"}}),
    "branch": (in_branch, "x", {"child": {"value": "x!?"}}),
    "loop": (in_loop, "x", {"value": "x!?"}),
    "foreach": (in_foreach, "ab", {"items": [{"value": "a!?"}, {"value": "b!?"}]}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_suspend_and_resume_through_a_nested_workflow_in_each_construct(
    runtime: Runtime, case: str
) -> None:
    build, value, expected = CASES[case]
    workflow = runtime.register(build())
    run = workflow.create_run()
    result = run.start(input_data={"value": value}, timeout=WAIT)
    rounds = 0
    while result.status == "suspended":
        rounds += 1
        assert list(result.suspended) == ["child.ask"]
        assert result.steps["child.ask"].status == "suspended"
        # The nested workflow reads suspended too, while its step is and the run is.
        assert result.steps["child"].status == "suspended"
        # Named by the nested workflow itself too, as a step is (it was a TypeError).
        named: Any = child(asking=True) if rounds % 2 else "child"
        result = run.resume(step=named, resume_data={"answer": "?"}, timeout=WAIT)
    assert result.status == "success", result.error
    assert result.result == expected
    assert rounds == len(value)
    assert result.steps["child"].status == "success"


def test_a_suspended_nested_workflow_reads_running_again_once_resumed(runtime: Runtime) -> None:
    import threading

    release = threading.Event()

    def slow_ask(ctx: Any) -> Value:
        if ctx.resume_data is None:
            ctx.suspend({"q": 1})
        release.wait(WAIT)
        return ctx.input_data

    asking = (
        create_workflow(id="child", input_schema=Value, output_schema=Value)
        .then(create_step(id="ask", input_schema=Value, output_schema=Value, execute=slow_ask))
        .commit()
    )
    workflow = runtime.register(parent("again", Value).then(asking).commit())
    run = workflow.create_run()
    assert run.start(input_data={"value": "x"}, timeout=WAIT).status == "suspended"
    run.resume_async(resume_data={"a": 1})
    try:
        wait_until(
            lambda: (
                workflow.get_workflow_run_execution_result(run.run_id).steps["child.ask"].status
                == "running"
            ),
            what="the resumed step runs",
        )
        result = workflow.get_workflow_run_execution_result(run.run_id)
        assert result is not None and result.status == "running"
        assert result.steps["child"].status == "running"
    finally:
        release.set()
    assert run.wait(WAIT).status == "success"


def test_resume_by_the_nested_workflows_id_is_ambiguous_with_two_suspended_steps(
    runtime: Runtime,
) -> None:
    def ask_too(ctx: Any) -> Value:
        if ctx.resume_data is None:
            ctx.suspend({"q": 2})
        return ctx.input_data

    two = (
        create_workflow(id="child", input_schema=Value, output_schema=Combined)
        .parallel(
            [
                create_step(id="ask", input_schema=Value, output_schema=Value, execute=ask),
                create_step(id="ask2", input_schema=Value, output_schema=Value, execute=ask_too),
            ]
        )
        .commit()
    )
    workflow = runtime.register(parent("two").then(two).commit())
    run = workflow.create_run()
    result = run.start(input_data={"value": "x"}, timeout=WAIT)
    assert result.status == "suspended"
    assert sorted(result.suspended) == ["child.ask", "child.ask2"]
    assert result.steps["child"].status == "suspended"
    with pytest.raises(ResumeTargetError) as caught:
        run.resume_async(step="child", resume_data={"answer": "?"})
    assert sorted(caught.value.suspended) == ["child.ask", "child.ask2"]
    result = run.resume(step="child.ask", resume_data={"answer": "?"}, timeout=WAIT)
    assert result.status == "suspended" and list(result.suspended) == ["child.ask2"]
    assert result.steps["child"].status == "suspended"
    result = run.resume(step="child", resume_data={}, timeout=WAIT)
    assert result.status == "success", result.error


@pytest.mark.parametrize("case", list(CASES))
def test_a_run_suspended_inside_a_nested_member_resumes_in_another_runtime(
    tmp_path: Path, case: str
) -> None:
    build, value, expected = CASES[case]
    db = tmp_path / "runs.db"
    with Runtime(store=db) as first:
        run = first.register(build()).create_run()
        result = run.start(input_data={"value": value}, timeout=WAIT)
        assert result.status == "suspended"
        assert result.steps["child"].status == "suspended"
        run_id = run.run_id
    assert not wait_for_no_callboard_threads()
    for _ in range(len(value)):
        with Runtime(store=db) as later:
            workflow = later.register(build())
            read = workflow.get_workflow_run_execution_result(run_id)
            assert read is not None and read.status == "suspended"
            assert read.steps["child"].status == "suspended"
            result = workflow.create_run(run_id).resume(
                step="child", resume_data={"answer": "?"}, timeout=WAIT
            )
        assert not wait_for_no_callboard_threads()
    assert result.status == "success", result.error
    assert result.result == expected


# --- resumes while the run runs on, around nested members ---------------------------


class Held:
    """Asking steps that, once resumed, hold until ``release``; each call is noted."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.began: list[str] = []
        self.calls: list[str] = []

    def step(self, step_id: str) -> Any:
        def execute(ctx: Any) -> Value:
            self.calls.append(f"{step_id}:{ctx.input_data.value}")
            if ctx.resume_data is None:
                ctx.suspend({"who": step_id})
            self.began.append(f"{step_id}:{ctx.input_data.value}")
            self.release.wait(WAIT)
            return Value(value=ctx.input_data.value + ctx.resume_data["answer"])

        return create_step(id=step_id, input_schema=Value, output_schema=Value, execute=execute)

    def child(self, workflow_id: str, *steps: str) -> Workflow[Any, Any]:
        """A nested workflow of ``steps``, side by side (in a parallel) if several."""
        if len(steps) == 1:
            built = create_workflow(id=workflow_id, input_schema=Value, output_schema=Value)
            return built.then(self.step(steps[0])).commit()
        built = create_workflow(id=workflow_id, input_schema=Value, output_schema=Combined)
        return built.parallel([self.step(step_id) for step_id in steps]).commit()


def _store(tmp_path: Path, store: str) -> Any:
    return None if store == "memory" else tmp_path / "runs.db"


def _nested_members(held: Held, shape: str) -> Workflow[Any, Any]:
    first, second = held.child("c1", "ask"), held.child("c2", "ask")
    if shape == "parallel":
        return parent("two-members").parallel([first, second]).commit()
    return (
        parent("two-arms").branch([(lambda ctx: True, first), (lambda ctx: True, second)]).commit()
    )


@pytest.mark.parametrize("store", ["memory", "sqlite"])
@pytest.mark.parametrize("shape", ["parallel", "branch"])
def test_a_later_nested_member_named_while_the_first_runs_on_is_not_suspended_yet(
    tmp_path: Path, store: str, shape: str
) -> None:
    # The nested workflows of a parallel (or branch) run one after another: while c1
    # runs on after its resume, c2 has not begun, so c2.ask has not suspended. Its
    # resume read "already resumed by another call" (ResumeConflictError).
    held = Held()
    with Runtime(store=_store(tmp_path, store)) as rt:
        workflow = rt.register(_nested_members(held, shape))
        run = workflow.create_run()
        result = run.start(input_data={"value": "x"}, timeout=WAIT)
        assert list(result.suspended) == ["c1.ask"]
        try:
            run.resume_async(step="c1.ask", resume_data={"answer": "1"})
            wait_until(lambda: held.began == ["ask:x"], what="c1.ask resumed")
            for named in ("c2.ask", "c2"):
                with pytest.raises(ResumeTargetError) as caught:
                    run.resume_async(step=named, resume_data={"answer": "2"})
                message = str(caught.value)
                assert "already resumed" not in message
                assert f"step {named!r} is not suspended" in message
                assert "once the run has suspended there" in message
                assert caught.value.suspended == []
            # The one that was resumed: another resume came first, as for a plain member.
            for named in ("c1.ask", "c1"):
                with pytest.raises(ResumeConflictError, match="already resumed"):
                    run.resume_async(step=named, resume_data={"answer": "3"})
            read = workflow.get_workflow_run_execution_result(run.run_id)
            assert read is not None and read.status == "running" and read.suspended == {}
            assert "c2" not in read.steps and "c2.ask" not in read.steps
        finally:
            held.release.set()
        result = run.wait(WAIT)
        assert result.status == "suspended" and list(result.suspended) == ["c2.ask"]
        result = run.resume(step="c2.ask", resume_data={"answer": "2"}, timeout=WAIT)
    assert result.status == "success", result.error
    assert result.result == {"c1": {"value": "x1"}, "c2": {"value": "x2"}}
    assert held.calls == ["ask:x", "ask:x", "ask:x", "ask:x"]  # each ask: suspended, resumed


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_waiting_step_of_a_nested_member_is_resumed_while_its_sibling_runs_on(
    tmp_path: Path, store: str
) -> None:
    # c1 holds a parallel of two asking steps; c2, after it, asks too. A second resume
    # of c1.a, begun already while c1.b waited, read "step 'c1.a' is not suspended"
    # (ResumeTargetError) where another resume had come first.
    held = Held()
    with Runtime(store=_store(tmp_path, store)) as rt:
        workflow = rt.register(
            parent("inner").parallel([held.child("c1", "a", "b"), held.child("c2", "ask")]).commit()
        )
        run = workflow.create_run()
        result = run.start(input_data={"value": "x"}, timeout=WAIT)
        assert sorted(result.suspended) == ["c1.a", "c1.b"]
        try:
            run.resume_async(step="c1.a", resume_data={"answer": "1"})
            wait_until(lambda: held.began == ["a:x"], what="c1.a resumed")
            with pytest.raises(ResumeConflictError) as conflict:
                run.resume_async(step="c1.a", resume_data={"answer": "9"})
            assert "'c1.b' still wait" in str(conflict.value)
            with pytest.raises(ResumeTargetError, match=r"'c2.ask' is not suspended"):
                run.resume_async(step="c2.ask", resume_data={"answer": "9"})
            read = workflow.get_workflow_run_execution_result(run.run_id)
            assert read is not None and read.status == "running"
            assert read.steps["c1"].status == "running"
            assert read.steps["c1.b"].status == "suspended"
            run.resume_async(step="c1", resume_data={"answer": "2"})  # its one waiting step
            wait_until(lambda: sorted(held.began) == ["a:x", "b:x"], what="c1.b resumed")
            for named in ("c1.a", "c1.b", "c1"):
                with pytest.raises(ResumeConflictError, match="already resumed"):
                    run.resume_async(step=named, resume_data={"answer": "9"})
        finally:
            held.release.set()
        result = run.wait(WAIT)
        assert result.status == "suspended" and list(result.suspended) == ["c2.ask"]
        result = run.resume(step="c2", resume_data={"answer": "3"}, timeout=WAIT)
    assert result.status == "success", result.error
    assert result.result == {
        "c1": {"a": {"value": "x1"}, "b": {"value": "x2"}},
        "c2": {"value": "x3"},
    }
    assert sorted(held.calls) == ["a:x", "a:x", "ask:x", "ask:x", "b:x", "b:x"]
    assert result.steps["c1.b"].resume_payload == {"answer": "2"}


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_the_suspension_of_a_foreach_over_a_nested_workflow_is_resumed_once_per_item(
    tmp_path: Path, store: str
) -> None:
    # Its items run one after another, each suspending at the same path: while the
    # first runs on after its resume, that path names the suspension resumed.
    held = Held()
    with Runtime(store=_store(tmp_path, store)) as rt:
        workflow = rt.register(
            create_workflow(id="each-held", input_schema=Value, output_schema=Items)
            .map(to_items)
            .foreach(held.child("c1", "ask"), concurrency=2)
            .map(lambda ctx: {"items": ctx.input_data})
            .commit()
        )
        run = workflow.create_run()
        result = run.start(input_data={"value": "ab"}, timeout=WAIT)
        assert list(result.suspended) == ["c1.ask"]
        try:
            run.resume_async(step="c1.ask", resume_data={"answer": "1"})
            wait_until(lambda: held.began == ["ask:a"], what="item 0 resumed")
            for named in ("c1.ask", "c1"):
                with pytest.raises(ResumeConflictError, match="already resumed"):
                    run.resume_async(step=named, resume_data={"answer": "9"})
        finally:
            held.release.set()
        result = run.wait(WAIT)
        assert result.status == "suspended" and list(result.suspended) == ["c1.ask"]
        assert result.suspended["c1.ask"] == {"who": "ask"}
        result = run.resume(step="c1.ask", resume_data={"answer": "2"}, timeout=WAIT)
    assert result.status == "success", result.error
    assert result.result == {"items": [{"value": "a1"}, {"value": "b2"}]}
    assert held.calls == ["ask:a", "ask:a", "ask:b", "ask:b"]


# --- a crash inside a region ---------------------------------------------------------


@pytest.mark.parametrize("construct", ["parallel", "loop", "foreach"])
def test_a_crash_inside_a_nested_member_recovers_where_it_was(
    tmp_path: Path, construct: str
) -> None:
    import threading

    from runtime.testing import Harness

    calls: dict[str, int] = {}
    entered = threading.Event()
    gate = threading.Event()

    def counted(ctx: Any) -> Value:
        key = ctx.input_data.value
        calls[key] = calls.get(key, 0) + 1
        if key == "b!" and calls[key] == 1:
            entered.set()
            gate.wait(WAIT)  # the crash comes while it runs
        return Value(value=key + "?")

    inner = (
        create_workflow(id="child", input_schema=Value, output_schema=Value)
        .then(exclaim("prep"))
        .then(create_step(id="count", input_schema=Value, output_schema=Value, execute=counted))
        .commit()
    )
    expected: Any
    if construct == "parallel":
        workflow = parent("crash-p").parallel([exclaim("a"), inner]).commit()
        start, expected = "b", {"a": {"value": "b!"}, "child": {"value": "b!?"}}
    elif construct == "loop":
        # "a!?" the first round, then "b" (a map in the child would do; the condition
        # keeps it simple): the second round is interrupted.
        workflow = (
            parent("crash-l", Value)
            .dowhile(
                create_workflow(id="child", input_schema=Value, output_schema=Value)
                .map(lambda ctx: {"value": "b" if ctx.input_data["value"] == "a!?" else "a"})
                .then(exclaim("prep"))
                .then(
                    create_step(
                        id="count", input_schema=Value, output_schema=Value, execute=counted
                    )
                )
                .commit(),
                lambda ctx: ctx.input_data.value == "a!?",
            )
            .commit()
        )
        start, expected = "x", {"value": "b!?"}
    else:
        workflow = (
            create_workflow(id="crash-f", input_schema=Value, output_schema=Items)
            .map(to_items)
            .foreach(inner)
            .map(lambda ctx: {"items": ctx.input_data})
            .commit()
        )
        start = "abc"
        expected = {"items": [{"value": "a!?"}, {"value": "b!?"}, {"value": "c!?"}]}
    with Harness(store=tmp_path / "runs.db") as harness:
        run = harness.register(workflow).create_run()
        run.start_async(input_data={"value": start})
        assert entered.wait(WAIT)
        harness.crash_and_recover()
        gate.set()  # the interrupted call returns to a runtime that is gone
        result = harness.workflow(workflow.id).create_run(run_id=run.run_id).wait(WAIT)
    assert result.status == "success", result.error
    assert result.result == expected
    assert calls["b!"] == 2  # the interrupted step, again
    assert all(count == 1 for key, count in calls.items() if key != "b!")
    if construct == "loop":
        assert result.steps["child"].iterations == 2
