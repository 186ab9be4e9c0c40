"""``run.restart()`` in place, and ``workflow.time_travel()`` into a new, linked run."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from runtime import (
    InvalidInputError,
    OutputOptions,
    Queue,
    RunDeletedError,
    RunNotRestartableError,
    RunNotStartedError,
    RunReader,
    Runtime,
    create_step,
    create_workflow,
)
from tests._support import Runtimes

WAIT = 10.0


class Value(BaseModel):
    value: str


calls: Counter[str] = Counter()
broken = {"second": True}


def _first(ctx):  # type: ignore[no-untyped-def]
    calls["first"] += 1
    return Value(value=ctx.input_data.value + "-1")


def _second(ctx):  # type: ignore[no-untyped-def]
    calls["second"] += 1
    if broken["second"]:
        raise RuntimeError("a bad deploy")
    return Value(value=ctx.input_data.value + "-2")


def _third(ctx):  # type: ignore[no-untyped-def]
    calls["third"] += 1
    return Value(value=ctx.input_data.value + "-3")


first = create_step(id="first", input_schema=Value, output_schema=Value, execute=_first)
second = create_step(id="second", input_schema=Value, output_schema=Value, execute=_second)
third = create_step(id="third", input_schema=Value, output_schema=Value, execute=_third)
chain = (
    create_workflow(id="chain", input_schema=Value, output_schema=Value)
    .then(first)
    .then(second)
    .then(third)
    .commit()
)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    calls.clear()
    broken["second"] = True


def test_a_failed_run_restarts_in_place_from_its_last_completed_step(runtime: Runtime) -> None:
    wf = runtime.register(chain)
    run = wf.create_run()
    failed = run.start(input_data={"value": "a"}, timeout=WAIT)
    assert failed.status == "failed" and failed.steps["second"].status == "failed"
    told = list(run.stream(timeout=WAIT))  # a UI showed the failure
    assert told[-1].type == "run_finish" and told[-1].status == "failed"

    broken["second"] = False
    result = run.restart(timeout=WAIT)
    assert result.run_id == run.run_id
    assert result.status == "success" and result.result == {"value": "a-1-2-3"}
    assert result.error is None and result.restarts == 1
    assert calls == Counter(first=1, second=2, third=1)
    assert result.steps["first"] == failed.steps["first"]  # kept, not run again
    # Its stream tells both: the failure, then the restart to its end, numbered on.
    ends = [
        (event.type, event.status)
        for event in run.stream(timeout=WAIT)
        if event.type in ("run_start", "run_finish")
    ]
    assert ends == [
        ("run_start", "pending"),
        ("run_finish", "failed"),
        ("run_start", "running"),
        ("run_finish", "success"),
    ]
    with pytest.raises(RunNotRestartableError) as caught:
        run.restart()
    assert caught.value.status == "success"


def test_a_canceled_run_restarts_and_the_step_it_stopped_in_runs_again(runtime: Runtime) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(ctx):  # type: ignore[no-untyped-def]
        calls["slow"] += 1
        if calls["slow"] == 1:
            entered.set()
            ctx.abort_signal.wait(WAIT)
        return ctx.input_data

    wf = runtime.register(
        create_workflow(id="slow", input_schema=Value, output_schema=Value)
        .then(first)
        .then(create_step(id="slow", input_schema=Value, output_schema=Value, execute=slow))
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"value": "c"})
    assert entered.wait(WAIT)
    assert run.cancel() is True
    release.set()
    result = run.restart(timeout=WAIT)
    assert result.status == "success" and result.result == {"value": "c-1"}
    assert calls["first"] == 1 and calls["slow"] == 2


def test_only_a_failed_or_canceled_run_restarts(runtime: Runtime) -> None:
    def ask(ctx):  # type: ignore[no-untyped-def]
        ctx.suspend({"q": 1})

    wf = runtime.register(
        create_workflow(id="held", input_schema=Value, output_schema=Value)
        .then(create_step(id="ask", input_schema=Value, output_schema=Value, execute=ask))
        .commit()
    )
    run = wf.create_run()
    assert run.start(input_data={"value": "x"}, timeout=WAIT).status == "suspended"
    with pytest.raises(RunNotRestartableError) as caught:
        run.restart()
    assert caught.value.status == "suspended"
    with pytest.raises(RunNotStartedError):
        wf.create_run().restart()


class Answer(BaseModel):
    answer: str


def _approve(ctx):  # type: ignore[no-untyped-def]
    calls["approve"] += 1
    if ctx.resume_data is None:
        ctx.suspend({"question": "ship it?"})
    if broken["second"]:
        raise RuntimeError("the shipping service is down")
    return Value(value=f"{ctx.input_data.value}:{ctx.resume_data.answer}")


approving = (
    create_workflow(id="approving", input_schema=Value, output_schema=Value)
    .then(first)
    .then(
        create_step(
            id="approve",
            input_schema=Value,
            output_schema=Value,
            execute=_approve,
            resume_schema=Answer,
        )
    )
    .commit()
)


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_step_that_failed_after_its_resume_restarts_with_its_resume_data(
    store: str, tmp_path: Path
) -> None:
    # It ran again without the data, suspended again, and asked the approver anew.
    with Runtime(store=store if store == "memory" else tmp_path / "runs.db") as rt:
        run = rt.register(approving).create_run()
        assert run.start(input_data={"value": "v"}, timeout=WAIT).status == "suspended"
        failed = run.resume(resume_data={"answer": "yes"}, timeout=WAIT)
        assert failed.status == "failed"
        assert failed.steps["approve"].resume_payload == {"answer": "yes"}
        broken["second"] = False

        result = run.restart(timeout=WAIT)

    assert result.status == "success", result.error
    assert result.result == {"value": "v-1:yes"}
    assert result.steps["approve"].resume_payload == {"answer": "yes"}
    assert calls == Counter(first=1, approve=3)  # suspend, fail, succeed: no second ask


def test_restart_on_sqlite_across_a_process_restart(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with Runtime(store=db) as rt:
        run = rt.register(chain).create_run(resource_id="user-1")
        assert run.start(input_data={"value": "s"}, timeout=WAIT).status == "failed"
    broken["second"] = False  # the fix is deployed
    with Runtime(store=db) as rt:  # another runtime on the same file
        again = rt.register(chain).create_run(run.run_id)
        result = again.restart(timeout=WAIT)
        assert result.status == "success" and result.result == {"value": "s-1-2-3"}
        assert result.resource_id == "user-1" and result.restarts == 1
    assert calls == Counter(first=1, second=2, third=1)
    with RunReader(db) as reader:
        stored = reader.get_run(run.run_id)
        assert stored is not None and stored.status == "success" and stored.restarts == 1


def test_time_travel_on_sqlite_across_a_process_restart_reuses_earlier_outputs(
    tmp_path: Path,
) -> None:
    db = tmp_path / "runs.db"
    broken["second"] = False
    with Runtime(store=db) as rt:
        original = rt.register(chain).create_run(resource_id="user-9")
        done = original.start(input_data={"value": "t"}, timeout=WAIT)
        assert done.result == {"value": "t-1-2-3"}
    with Runtime(store=db) as rt:
        wf = rt.register(chain)
        new = wf.time_travel(original.run_id, step="second", input_data={"value": "fixed"})
        assert new.run_id != original.run_id
        result = new.wait(WAIT)
        assert result.status == "success" and result.result == {"value": "fixed-2-3"}
        assert result.steps["first"].output == {"value": "t-1"}  # recorded, not run again
        assert result.steps["second"].payload == {"value": "fixed"}
        assert result.time_traveled_from is not None
        assert result.time_traveled_from.run_id == original.run_id
        assert result.time_traveled_from.step == "second"
        assert result.resource_id == "user-9" and result.input == {"value": "t"}
        # Without input_data, the step's recorded input.
        replay = wf.time_travel(original.run_id, step=third).wait(WAIT)
        assert replay.result == {"value": "t-1-2-3"}
        unchanged = wf.get_workflow_run_by_id(original.run_id)
        assert unchanged is not None and unchanged.time_traveled_from is None
        listed = wf.list_workflow_runs(resource_id="user-9")
        assert {(r.run_id, r.time_traveled_from is not None) for r in listed.runs} == {
            (original.run_id, False),
            (new.run_id, True),
            (replay.run_id, True),
        }
    assert calls == Counter(first=1, second=2, third=3)


def test_time_travel_hands_resume_data_to_the_step(runtime: Runtime) -> None:
    def ask(ctx):  # type: ignore[no-untyped-def]
        if ctx.resume_data is None:
            ctx.suspend({"question": "ok?"})
        return Value(value=f"{ctx.input_data.value}:{ctx.resume_data['answer']}")

    wf = runtime.register(
        create_workflow(id="approve", input_schema=Value, output_schema=Value)
        .then(first)
        .then(create_step(id="ask", input_schema=Value, output_schema=Value, execute=ask))
        .commit()
    )
    run = wf.create_run()
    assert run.start(input_data={"value": "r"}, timeout=WAIT).status == "suspended"
    result = wf.time_travel(run.run_id, step="ask", resume_data={"answer": "yes"}).wait(WAIT)
    assert result.status == "success" and result.result == {"value": "r-1:yes"}
    assert calls["first"] == 1


def test_time_travel_refuses_what_it_cannot_do(runtime: Runtime) -> None:
    wf = runtime.register(chain)
    run = wf.create_run()
    run.start(input_data={"value": "z"}, timeout=WAIT)  # fails at second: third never ran
    with pytest.raises(InvalidInputError) as caught:
        wf.time_travel(run.run_id, step="third")
    assert caught.value.field == "input_data"
    with pytest.raises(InvalidInputError) as caught:
        wf.time_travel(run.run_id, step="nowhere")
    assert caught.value.field == "step"
    with pytest.raises(InvalidInputError):
        wf.time_travel(run.run_id, step="second", input_data={"wrong": 1})
    with pytest.raises(RunNotStartedError):
        wf.time_travel("no-such-run", step="second")


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_time_travel_to_the_failed_step_of_a_run_restarted_and_waiting_for_its_queue(
    kind: str, tmp_path: Path, runtimes: Runtimes
) -> None:
    rt = runtimes.start("memory" if kind == "memory" else str(tmp_path / "runs.db"))
    one = Queue("restart-one", concurrency=1)
    wf = rt.register(
        create_workflow(id="queued-chain", input_schema=Value, output_schema=Value, queue=one)
        .then(first)
        .then(second)
        .then(third)
        .commit()
    )
    entered, release = threading.Event(), runtimes.gate()

    def hold(ctx):  # type: ignore[no-untyped-def]
        entered.set()
        release.wait(WAIT)
        return ctx.input_data

    holder = rt.register(
        create_workflow(id="holder", input_schema=Value, output_schema=Value, queue=one)
        .then(create_step(id="hold", input_schema=Value, output_schema=Value, execute=hold))
        .commit()
    )
    run = wf.create_run()
    assert run.start(input_data={"value": "q"}, timeout=WAIT).status == "failed"
    held = holder.create_run()
    held.start_async(input_data={"value": "h"})
    assert entered.wait(WAIT)
    broken["second"] = False
    run.restart_async()  # it waits for the queue's one place, which the holder has
    waiting = wf.get_workflow_run_execution_result(run.run_id)
    assert waiting is not None and waiting.status == "running"
    assert "second" not in waiting.steps and waiting.restarts == 1

    traveled = wf.time_travel(run.run_id, step="second")  # the input it failed on
    release.set()
    result = traveled.wait(WAIT)
    assert result.status == "success" and result.result == {"value": "q-1-2-3"}
    assert result.steps["second"].payload == {"value": "q-1"}
    assert run.wait(WAIT).status == "success"
    assert calls["first"] == 1 and calls["second"] == 3


@pytest.mark.parametrize(
    "kind", ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_every_store_reopens_only_a_run_that_has_ended(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from runtime._stores.memory import MemoryStore
    from runtime._stores.open import open_store
    from runtime._stores.sqlite import SQLiteStore
    from tests.test_store_contract import rec, save_and_wait

    if kind == "memory":
        store = MemoryStore()
    elif kind == "sqlite":
        store = SQLiteStore(tmp_path / "runs.db")
    else:
        store = open_store(request.getfixturevalue("postgres_url"))
    try:
        assert store.create(rec("r"))
        assert not store.replace(rec("r", 1, "running"), 0, reopen=True)  # not ended
        save_and_wait(store, rec("r", 1, "failed"))
        assert not store.replace(rec("r", 2, "running"), 1)  # a terminal status is final...
        assert store.replace(rec("r", 2, "running"), 1, reopen=True)  # ...but for a restart
        assert not store.replace(rec("r", 3, "running"), 1, reopen=True)  # seq moved on
        loaded = store.load("r")
        assert loaded is not None and (loaded.seq, loaded.status) == (2, "running")
        save_and_wait(store, rec("r", 3, "success"))
        loaded = store.load("r")
        assert loaded is not None and loaded.status == "success"
    finally:
        store.close()


class Num(BaseModel):
    n: int


class Nums(BaseModel):
    items: list[Num]


failing = {"n": -1}


def _check(ctx):  # type: ignore[no-untyped-def]
    calls[f"check {ctx.input_data.n}"] += 1
    if ctx.input_data.n == failing["n"]:
        raise RuntimeError("a bad deploy")
    if ctx.input_data.n % 2 == 0 and ctx.resume_data is None:
        ctx.suspend({"n": ctx.input_data.n})
    return Num(n=ctx.input_data.n * 10)


checks = (
    create_workflow(id="checks", input_schema=Nums, output_schema=Nums)
    .map(lambda ctx: ctx.input_data["items"])
    .foreach(create_step(id="check", input_schema=Num, output_schema=Num, execute=_check))
    .map(lambda ctx: {"items": ctx.input_data})
    .commit()
)


@pytest.mark.parametrize("ended", ["canceled", "failed"])
def test_a_foreach_restarts_with_the_items_it_had_done(runtime: Runtime, ended: str) -> None:
    # The foreach's own record did not survive the restart (it had not succeeded) and its
    # actor crashed at the next item (KeyError: the step's path).
    failing["n"] = 5 if ended == "failed" else -1
    wf = runtime.register(checks)
    run = wf.create_run()
    first = run.start(input_data={"items": [{"n": n} for n in (1, 2, 5)]}, timeout=WAIT)
    if ended == "canceled":
        assert first.status == "suspended" and set(first.suspended) == {"check[1]"}
        assert run.cancel()
    else:
        assert first.status == "failed"
    failing["n"] = -1

    again = run.restart(timeout=WAIT)
    assert again.status == "suspended", again.error
    assert set(again.suspended) == {"check[1]"}
    done = run.resume(step="check", for_each_index=1, resume_data={}, timeout=WAIT)

    assert done.status == "success", done.error
    assert done.result == {"items": [{"n": 10}, {"n": 20}, {"n": 50}]}
    assert done.restarts == 1
    assert calls["check 1"] == 1  # done before the restart: not again


class Count(BaseModel):
    n: int


@pytest.mark.parametrize("max_iterations", [4, None])
def test_a_loop_restarts_at_the_iteration_it_stopped_in_with_its_input(
    runtime: Runtime, max_iterations: int | None
) -> None:
    # The loop's step record (which alone holds the input of the iteration it stopped
    # in) was dropped: the loop began again from its first input, counting on from where
    # it stopped, and hit max_iterations (or ran the done iterations again).
    seen: list[int] = []
    broken = {"on": True}

    def inc(ctx: Any) -> Count:
        seen.append(ctx.input_data.n)
        if ctx.input_data.n == 2 and broken["on"]:
            raise RuntimeError("down at 2")
        return Count(n=ctx.input_data.n + 1)

    wf = runtime.register(
        create_workflow(id="counting", input_schema=Count, output_schema=Count)
        .dountil(
            create_step(id="inc", input_schema=Count, output_schema=Count, execute=inc),
            lambda ctx: ctx.input_data.n >= 4,
            max_iterations=max_iterations,
        )
        .commit()
    )
    run = wf.create_run()
    first = run.start(input_data={"n": 0}, timeout=WAIT)
    assert first.status == "failed"
    assert seen == [0, 1, 2]
    broken["on"] = False

    again = run.restart(timeout=WAIT)

    assert again.status == "success", again.error
    assert again.result == {"n": 4}
    assert seen == [0, 1, 2, 2, 3]  # the iteration it failed in, then the next
    assert again.steps["inc"].iterations == 4


def test_time_travel_into_a_nested_workflow_run_as_a_member_is_refused_plainly(
    runtime: Runtime,
) -> None:
    # The construct's progress is not kept once its run ended: the new run crashed at
    # the nested workflow's end ("KeyError: 'parallel-1#flows'", "KeyError: 'kid#each'").
    def step(step_id: str, factor: int) -> Any:
        return create_step(
            id=step_id,
            input_schema=Count,
            output_schema=Count,
            execute=lambda ctx: Count(n=ctx.input_data.n * factor),
        )

    kid = (
        create_workflow(id="kid", input_schema=Count, output_schema=Count)
        .then(step("k1", 2))
        .then(step("k2", 3))
        .commit()
    )
    together = runtime.register(
        create_workflow(id="together", input_schema=Count, output_schema=Count)
        .parallel([step("side", 1), kid])
        .map(lambda ctx: ctx.input_data["kid"])
        .commit()
    )
    each = runtime.register(
        create_workflow(id="each", input_schema=Count, output_schema=Count)
        .map(lambda ctx: [{"n": 1}, {"n": 2}])
        .foreach(kid)
        .map(lambda ctx: ctx.input_data[-1])
        .commit()
    )
    for wf, owner in ((together, "parallel-1"), (each, "kid")):
        run = wf.create_run()
        assert run.start(input_data={"n": 1}, timeout=WAIT).status == "success"
        with pytest.raises(InvalidInputError, match=f"lies in a nested workflow .*{owner!r}"):
            wf.time_travel(run.run_id, step="kid.k2")
    # Before such a member, and into a nested workflow that runs alone, it goes on.
    chained = runtime.register(
        create_workflow(id="chained", input_schema=Count, output_schema=Count)
        .then(step("first", 1))
        .then(kid)
        .commit()
    )
    run = chained.create_run()
    assert run.start(input_data={"n": 1}, timeout=WAIT).result == {"n": 6}
    again = chained.time_travel(run.run_id, step="kid.k2", input_data={"n": 5})
    assert again.wait(timeout=WAIT).result == {"n": 15}


# --- time travel and the constructs after the target (found by a helper) -------------------


class N(BaseModel):
    n: int


class Order(BaseModel):
    name: str


class Ok(BaseModel):
    ok: bool


def _gate(ctx):  # type: ignore[no-untyped-def]
    if ctx.input_data.n == 11 and ctx.resume_data is None:
        ctx.suspend({"n": ctx.input_data.n})
    return ctx.input_data


def test_time_travel_to_a_step_before_a_loop_counts_the_loop_from_its_first_pass(
    runtime: Runtime,
) -> None:
    # The recorded run stopped in the loop's second pass; the new run's loop counted on
    # from there and hit max_iterations a pass early (LoopLimitError).
    inner = (
        create_workflow(id="inner", input_schema=N, output_schema=N)
        .then(
            create_step(id="gate", input_schema=N, output_schema=N, resume_schema=Ok, execute=_gate)
        )
        .then(
            create_step(
                id="inc", input_schema=N, output_schema=N, execute=lambda c: N(n=c.input_data.n + 1)
            )
        )
        .commit()
    )
    workflow = runtime.register(
        create_workflow(id="looping", input_schema=N, output_schema=N)
        .then(
            create_step(
                id="tens",
                input_schema=N,
                output_schema=N,
                execute=lambda c: N(n=c.input_data.n * 10),
            )
        )
        .dountil(inner, lambda ctx: ctx.input_data.n >= 13, max_iterations=3)
        .commit()
    )
    source = workflow.create_run()
    assert source.start(input_data={"n": 1}, timeout=WAIT).status == "suspended"  # pass 2

    run = workflow.time_travel(source.run_id, step="tens")
    result = run.wait(timeout=WAIT)
    assert result.status == "suspended"  # at n == 11 again, in the new run's second pass
    result = workflow.create_run(run.run_id).resume(resume_data={"ok": True}, timeout=WAIT)
    assert result.status == "success", result.error
    assert result.result == {"n": 13}
    assert result.steps["inner"].iterations == 3


def _fails(ctx):  # type: ignore[no-untyped-def]
    raise RuntimeError("a fails")


def _from_start(ctx):  # type: ignore[no-untyped-def]
    return N(n=ctx.get_init_data().n * 100 + ctx.input_data.n)


def _entering_workflow() -> Any:
    sub = (
        create_workflow(id="sub", input_schema=N, output_schema=N)
        .then(create_step(id="b", input_schema=N, output_schema=N, execute=_from_start))
        .then(create_step(id="c", input_schema=N, output_schema=N, execute=_from_start))
        .commit()
    )
    return (
        create_workflow(id="entering", input_schema=Order, output_schema=N)
        .then(create_step(id="a", input_schema=Order, output_schema=N, execute=_fails))
        .then(sub)
        .commit()
    )


def test_time_travel_into_a_nested_workflow_never_entered_gives_it_the_input_given(
    runtime: Runtime,
) -> None:
    # Its ctx.get_init_data() read the run's own input (an Order), checked against the
    # nested workflow's schema: the step failed; and the nested workflow had no record.
    workflow = runtime.register(_entering_workflow())
    source = workflow.create_run()
    assert source.start(input_data={"name": "abc"}, timeout=WAIT).status == "failed"

    result = workflow.time_travel(source.run_id, step="sub.b", input_data={"n": 5}).wait(WAIT)
    assert result.status == "success", result.error
    assert result.result == {"n": 1005}  # b: 5 * 100 + 5; c: 5 * 100 + 505
    assert result.steps["sub"].status == "success"
    assert result.steps["sub"].payload == {"n": 5}

    # A later step of it: nothing says what the nested workflow's input would be.
    with pytest.raises(InvalidInputError, match="never entered nested workflow 'sub'"):
        workflow.time_travel(source.run_id, step="sub.c", input_data={"n": 5})


def test_time_travel_to_a_foreach_step_with_resume_data_is_refused_not_dropped(
    runtime: Runtime,
) -> None:
    # The data was kept for the step, and a foreach gives resume data to items
    # ("item[2]"): every item asked again and nothing said why.
    item = create_step(id="item", input_schema=N, output_schema=N, resume_schema=Ok, execute=_gate)
    workflow = runtime.register(
        create_workflow(id="each-gate", input_schema=N, output_schema=N)
        .map(lambda ctx: [{"n": 10}, {"n": 11}])
        .foreach(item)
        .map(lambda ctx: ctx.input_data[-1])
        .commit()
    )
    source = workflow.create_run()
    assert source.start(input_data={"n": 0}, timeout=WAIT).status == "suspended"
    with pytest.raises(InvalidInputError, match="foreach body, whose items are resumed one by"):
        workflow.time_travel(source.run_id, step="item", resume_data={"ok": True})


def test_a_time_traveled_runs_events_told_from_its_record_begin_at_its_creation(
    tmp_path: Path,
) -> None:
    # Its first steps are the original's, started before it was created: its "running"
    # was dated by them, before its own "pending".
    path = tmp_path / "runs.db"
    broken["second"] = False
    with Runtime(store=path) as rt:
        workflow = rt.register(chain)
        original = workflow.create_run().start(input_data={"value": "v"}, timeout=WAIT).run_id
        time.sleep(0.05)
        traveled = workflow.time_travel(original, step="third")
        assert traveled.wait(timeout=WAIT).status == "success"
    with Runtime(store=path) as rt:
        events = list(rt.register(chain).create_run(traveled.run_id).watch(timeout=WAIT))
    assert [(e.type, str(e.status)) for e in events[:2]] == [
        ("status", "pending"),
        ("status", "running"),
    ]
    assert events[0].at <= events[1].at
    assert all(event.status == "running" for event in events if event.type != "status")


# --- time travel and the workflow state ---------------------------------------------------


class Log(BaseModel):
    log: list[str] = []
    pad: str = ""  # large enough that a durable store keeps the step records in parts


PAD = "p" * 1500


def _appending(name: str) -> Any:
    def body(ctx):  # type: ignore[no-untyped-def]
        ctx.set_state({"log": [*ctx.state.log, name], "pad": ctx.state.pad})
        return Value(value=ctx.input_data.value + name)

    return create_step(id=name, input_schema=Value, output_schema=Value, execute=body)


def _reading(ctx):  # type: ignore[no-untyped-def]
    ctx.set_state({"log": ctx.state.log, "pad": ctx.state.pad})  # the same state: no change
    return Value(value=ctx.input_data.value + ".")


def _logging_workflow() -> Any:
    reads = create_step(id="reads", input_schema=Value, output_schema=Value, execute=_reading)
    return (
        create_workflow(id="logging", input_schema=Value, output_schema=Value, state_schema=Log)
        .then(_appending("a"))
        .then(reads)
        .then(_appending("b"))
        .then(_appending("c"))
        .commit()
    )


def _stored_steps(rt: Runtime, run_id: str) -> dict[str, dict[str, Any]]:
    from runtime._snapshot import decode

    assert rt.store is not None
    record = rt.store.load(run_id)
    assert record is not None
    return dict(decode(record.data, run_id)["steps"])


@pytest.mark.parametrize(
    "kind", ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_time_travel_runs_a_step_on_the_state_it_began_with_in_the_original(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # The new run's state was the original's as it ended: a step that appended to the
    # state appended twice (["a", "b", "c", "b", "c"]).
    store = {
        "memory": None,
        "sqlite": tmp_path / "runs.db",
        "postgres": request.getfixturevalue("postgres_url") if kind == "postgres" else None,
    }[kind]
    with Runtime(store=store) as rt:
        workflow = rt.register(_logging_workflow())
        source = workflow.create_run()
        done = source.start(
            input_data={"value": ""},
            initial_state={"log": [], "pad": PAD},
            output_options=OutputOptions(include_state=True),
            timeout=WAIT,
        )
        assert done.status == "success" and done.state == {"log": ["a", "b", "c"], "pad": PAD}
        began = {
            path: record.get("start_state")
            for path, record in _stored_steps(rt, source.run_id).items()
        }
        # Only the steps that changed the state keep the state they began with.
        assert began == {
            "a": {"log": [], "pad": PAD},
            "reads": None,
            "b": {"log": ["a"], "pad": PAD},
            "c": {"log": ["a", "b"], "pad": PAD},
        }
        assert "start_state" not in _stored_steps(rt, source.run_id)["reads"]
        for step, value in [("a", "a.bc"), ("reads", "a.bc"), ("b", "a.bc"), ("c", "a.bc")]:
            traveled = workflow.time_travel(source.run_id, step=step).wait(WAIT)
            assert traveled.status == "success", traveled.error
            assert traveled.result == {"value": value}
            assert traveled.state == {"log": ["a", "b", "c"], "pad": PAD}, step
            assert "start_state" not in traveled.steps["b"].model_dump()
        # A run made by time travel keeps the records it took over, the state they began
        # with included: time travel from it goes back as far.
        again = workflow.time_travel(source.run_id, step="c").wait(WAIT)
        assert workflow.time_travel(again.run_id, step="b").wait(WAIT).state == {
            "log": ["a", "b", "c"],
            "pad": PAD,
        }


def test_time_travel_to_a_parallel_member_starts_the_group_on_the_state_it_began_with(
    runtime: Runtime,
) -> None:
    workflow = runtime.register(
        create_workflow(id="both-log", input_schema=Value, output_schema=Value, state_schema=Log)
        .then(_appending("a"))
        .parallel([_appending("x"), _appending("y")])
        .map(lambda ctx: Value(value=ctx.input_data["x"]["value"] + ctx.input_data["y"]["value"]))
        .commit()
    )
    # Each member replaces the whole state: the last to finish wins, as in the original.
    source = workflow.create_run()
    include = OutputOptions(include_state=True)
    done = source.start(input_data={"value": ""}, output_options=include, timeout=WAIT)
    assert done.status == "success" and done.state["log"] in (["a", "x"], ["a", "y"])
    traveled = workflow.time_travel(source.run_id, step="y").wait(WAIT)
    assert traveled.status == "success", traveled.error
    # Both members began on ["a"] again, not on the state one of them left.
    assert traveled.state["log"] in (["a", "x"], ["a", "y"])


def test_a_run_whose_state_never_changes_keeps_no_start_state_in_its_step_records(
    tmp_path: Path,
) -> None:
    # The records of such runs are as they were: not a byte more.
    fields = {"status", "payload", "output", "error", "started_at", "ended_at"}
    broken["second"] = False
    with Runtime(store=tmp_path / "runs.db") as rt:
        stateless = rt.register(chain).create_run()
        assert stateless.start(input_data={"value": "s"}, timeout=WAIT).status == "success"
        unchanged = rt.register(
            create_workflow(
                id="reads-only", input_schema=Value, output_schema=Value, state_schema=Log
            )
            .then(create_step(id="r1", input_schema=Value, output_schema=Value, execute=_reading))
            .then(create_step(id="r2", input_schema=Value, output_schema=Value, execute=_reading))
            .commit()
        ).create_run()
        done = unchanged.start(input_data={"value": ""}, initial_state={"log": ["x"]}, timeout=WAIT)
        assert done.status == "success"
        for run in (stateless, unchanged):
            steps = _stored_steps(rt, run.run_id)
            assert steps and all(set(record) == fields for record in steps.values()), steps


def test_time_travel_from_a_record_without_start_states_starts_on_the_state_as_it_ended(
    tmp_path: Path,
) -> None:
    # Records written before callboard kept the state a step began with: time travel
    # works as it did then, on the state the run ended with.
    from runtime._snapshot import decode, encode, record_of
    from runtime._stores.sqlite import SQLiteStore

    db = tmp_path / "runs.db"
    with Runtime(store=db) as rt:
        source = rt.register(_logging_workflow()).create_run()
        done = source.start(input_data={"value": ""}, initial_state={"log": []}, timeout=WAIT)
        assert done.status == "success"
    store = SQLiteStore(db)
    try:
        record = store.load(source.run_id)
        assert record is not None
        old = decode(record.data, source.run_id)
        for step in old["steps"].values():
            step.pop("start_state", None)
        old["run_id"] = "from-an-older-callboard"
        assert store.create(record_of(old, data=encode(old)))
    finally:
        store.close()
    with Runtime(store=db) as rt:
        workflow = rt.register(_logging_workflow())
        traveled = workflow.time_travel("from-an-older-callboard", step="b").wait(WAIT)
        assert traveled.status == "success", traveled.error
        assert traveled.result == {"value": "a.bc"}
        assert _final_state(rt, traveled.run_id)["log"] == ["a", "b", "c", "b", "c"]


def _final_state(rt: Runtime, run_id: str) -> dict[str, Any]:
    from runtime._snapshot import decode

    assert rt.store is not None
    record = rt.store.load(run_id)
    assert record is not None
    state: dict[str, Any] = decode(record.data, run_id)["state"]
    return state


def test_a_resumed_step_keeps_the_state_it_first_began_with(runtime: Runtime) -> None:
    # It appended before it suspended, and again when resumed (its body runs again from
    # the start): time travel to it starts it on the state it first began with.
    def ask(ctx):  # type: ignore[no-untyped-def]
        ctx.set_state({"log": [*ctx.state.log, "ask"], "pad": ""})
        if ctx.resume_data is None:
            ctx.suspend({"question": "ok?"})
        return Value(value=ctx.input_data.value + "?")

    workflow = runtime.register(
        create_workflow(id="log-ask", input_schema=Value, output_schema=Value, state_schema=Log)
        .then(_appending("a"))
        .then(create_step(id="ask", input_schema=Value, output_schema=Value, execute=ask))
        .commit()
    )
    run = workflow.create_run()
    include = OutputOptions(include_state=True)
    assert run.start(input_data={"value": ""}, output_options=include, timeout=WAIT).status == (
        "suspended"
    )
    resumed = run.resume(step="ask", resume_data={"ok": True}, timeout=WAIT)
    assert resumed.status == "success" and resumed.state["log"] == ["a", "ask", "ask"]
    traveled = workflow.time_travel(run.run_id, step="ask", resume_data={"ok": True}).wait(WAIT)
    assert traveled.status == "success", traveled.error
    assert traveled.state["log"] == ["a", "ask"]


def test_time_travel_into_a_nested_workflow_starts_on_the_state_its_step_began_with(
    runtime: Runtime,
) -> None:
    inner = (
        create_workflow(id="inner", input_schema=Value, output_schema=Value)
        .then(_appending("b"))
        .then(_appending("c"))
        .commit()
    )
    workflow = runtime.register(
        create_workflow(id="outer", input_schema=Value, output_schema=Value, state_schema=Log)
        .then(_appending("a"))
        .then(inner)
        .then(_appending("d"))
        .commit()
    )
    source = workflow.create_run()
    include = OutputOptions(include_state=True)
    done = source.start(input_data={"value": ""}, output_options=include, timeout=WAIT)
    assert done.status == "success" and done.state["log"] == ["a", "b", "c", "d"]
    for step in ("inner.b", "inner.c", "d"):
        traveled = workflow.time_travel(source.run_id, step=step).wait(WAIT)
        assert traveled.status == "success", traveled.error
        assert traveled.state["log"] == ["a", "b", "c", "d"], step


# --- time travel into a parallel or branch member, and into a loop's body ------------------


class Anything(BaseModel):
    model_config = {"extra": "allow"}


def _counting(step_id: str, factor: int) -> Any:
    def execute(ctx):  # type: ignore[no-untyped-def]
        calls[step_id] += 1  # a side effect, as an email sent
        return Count(n=ctx.input_data.n * factor)

    return create_step(id=step_id, input_schema=Count, output_schema=Count, execute=execute)


def test_time_travel_to_a_parallel_member_runs_that_member_alone(runtime: Runtime) -> None:
    # The other members ran again on input_data: a side effect repeated, and their
    # recorded outputs changed. As in Mastra, they keep what they did, nested workflows
    # among them too, and the group's output is theirs with the target's new one.
    kid = (
        create_workflow(id="kid", input_schema=Count, output_schema=Count)
        .then(_counting("k1", 1000))
        .commit()
    )
    workflow = runtime.register(
        create_workflow(id="members", input_schema=Count, output_schema=Anything)
        .parallel([_counting("email", 1), kid, _counting("calc", 100)])
        .commit()
    )
    source = workflow.create_run()
    done = source.start(input_data={"n": 1}, timeout=WAIT)
    assert done.status == "success", done.error
    calls.clear()

    traveled = workflow.time_travel(source.run_id, step="calc", input_data={"n": 7}).wait(WAIT)

    assert traveled.status == "success", traveled.error
    assert calls == {"calc": 1}
    assert traveled.result == {"email": {"n": 1}, "kid": {"n": 1000}, "calc": {"n": 700}}
    assert list(traveled.result) == ["email", "kid", "calc"]  # the members' order
    assert traveled.steps["email"].payload == {"n": 1}  # the input it ran on
    assert traveled.steps["email"].output == {"n": 1}
    assert traveled.steps["kid.k1"].status == "success"
    assert traveled.steps["calc"].payload == {"n": 7}
    # Without input_data the target runs on the input it had; the others are kept still.
    calls.clear()
    again = workflow.time_travel(traveled.run_id, step="email").wait(WAIT)
    assert again.status == "success", again.error
    assert calls == {"email": 1}
    assert again.result == {"email": {"n": 1}, "kid": {"n": 1000}, "calc": {"n": 700}}


class _Halves(BaseModel):
    x: str = ""
    y: str = ""


class _XHalf(BaseModel):
    x: str = ""


class _YHalf(BaseModel):
    y: str = ""


def test_time_travel_to_a_parallel_member_runs_a_sibling_that_changed_the_state_again(
    runtime: Runtime,
) -> None:
    # The new run starts on the state the group began with, and a kept sibling's record
    # holds the state it began with, not its change: kept, its change was lost (the run
    # went on with x == ""). It runs again and makes it again; a sibling that changed no
    # state is still kept.
    ran: list[str] = []

    def setting(key: str, schema: type[BaseModel]) -> Any:
        def execute(ctx):  # type: ignore[no-untyped-def]
            ran.append(key)
            ctx.set_state({key: f"{key}-done"})
            return ctx.input_data

        return create_step(
            id=key, input_schema=Count, output_schema=Count, state_schema=schema, execute=execute
        )

    def quiet(ctx):  # type: ignore[no-untyped-def]
        ran.append("quiet")
        return ctx.input_data

    workflow = runtime.register(
        create_workflow(
            id="halves", input_schema=Count, output_schema=Anything, state_schema=_Halves
        )
        .parallel(
            [
                setting("x", _XHalf),
                setting("y", _YHalf),
                create_step(id="quiet", input_schema=Count, output_schema=Count, execute=quiet),
            ]
        )
        .commit()
    )
    source = workflow.create_run()
    done = source.start(
        input_data={"n": 1}, output_options=OutputOptions(include_state=True), timeout=WAIT
    )
    assert done.state == {"x": "x-done", "y": "y-done"}
    ran.clear()

    traveled = workflow.time_travel(source.run_id, step="y").wait(WAIT)

    assert traveled.status == "success", traveled.error
    assert sorted(ran) == ["x", "y"]
    assert traveled.state == {"x": "x-done", "y": "y-done"}


def test_a_sibling_that_runs_again_in_a_time_travel_takes_the_input_given(
    runtime: Runtime,
) -> None:
    # A group's members share one input: the one given to the time travel, for the
    # target and for a sibling that runs again (it changed the state); a kept sibling
    # keeps the output it made on the original's input (p2: the README said "on its
    # input", which read as the sibling's own recorded one).
    seen: dict[str, int] = {}

    def setting(ctx):  # type: ignore[no-untyped-def]
        seen["x"] = ctx.input_data.n
        ctx.set_state({"x": "x-done"})
        return ctx.input_data

    def plain(key: str) -> Any:
        def execute(ctx):  # type: ignore[no-untyped-def]
            seen[key] = ctx.input_data.n
            return ctx.input_data

        return create_step(id=key, input_schema=Count, output_schema=Count, execute=execute)

    workflow = runtime.register(
        create_workflow(
            id="shared", input_schema=Count, output_schema=Anything, state_schema=_Halves
        )
        .parallel(
            [
                create_step(
                    id="x",
                    input_schema=Count,
                    output_schema=Count,
                    state_schema=_XHalf,
                    execute=setting,
                ),
                plain("kept"),
                plain("target"),
            ]
        )
        .commit()
    )
    source = workflow.create_run()
    assert source.start(input_data={"n": 1}, timeout=WAIT).status == "success"
    seen.clear()

    traveled = workflow.time_travel(source.run_id, step="target", input_data={"n": 7}).wait(WAIT)

    assert traveled.status == "success", traveled.error
    assert seen == {"x": 7, "target": 7}
    assert traveled.result == {"x": {"n": 7}, "kept": {"n": 1}, "target": {"n": 7}}


def test_time_travel_to_a_branch_arm_runs_that_arm_alone_without_its_condition(
    runtime: Runtime,
) -> None:
    workflow = runtime.register(
        create_workflow(id="arms", input_schema=Count, output_schema=Anything)
        .branch(
            [
                (lambda ctx: ctx.input_data.n > 5, _counting("big", -1)),
                (lambda ctx: True, _counting("any", 1)),
                (lambda ctx: ctx.input_data.n > 5, _counting("other", 2)),
            ]
        )
        .commit()
    )
    source = workflow.create_run()
    assert source.start(input_data={"n": 1}, timeout=WAIT).result == {"any": {"n": 1}}
    calls.clear()

    # The arm the original ran runs alone on the new input: "big" and "other", whose
    # conditions now hold, do not run (they did not in the original).
    traveled = workflow.time_travel(source.run_id, step="any", input_data={"n": 9}).wait(WAIT)
    assert traveled.status == "success", traveled.error
    assert calls == {"any": 1}
    assert traveled.result == {"any": {"n": 9}}
    assert "big" not in traveled.steps and "other" not in traveled.steps

    # An arm the original did not run runs, its condition not asked; the arm that
    # ran keeps its output.
    calls.clear()
    chosen = workflow.time_travel(source.run_id, step="big", input_data={"n": 2}).wait(WAIT)
    assert chosen.status == "success", chosen.error
    assert calls == {"big": 1}
    assert chosen.result == {"big": {"n": -2}, "any": {"n": 1}}


def test_time_travel_into_a_nested_workflow_run_by_a_loop_counts_its_passes_from_the_first(
    runtime: Runtime,
) -> None:
    # The nested workflow's record kept the original's three passes (a step as the
    # loop's body counted one).
    kid = (
        create_workflow(id="kid", input_schema=Count, output_schema=Count)
        .then(
            create_step(
                id="a",
                input_schema=Count,
                output_schema=Count,
                execute=lambda c: Count(n=c.input_data.n + 1),
            )
        )
        .commit()
    )
    seen: list[int] = []

    def enough(ctx):  # type: ignore[no-untyped-def]
        seen.append(ctx.iteration_count)
        return ctx.input_data.n >= 3

    workflow = runtime.register(
        create_workflow(id="passes", input_schema=Count, output_schema=Count)
        .dountil(kid, enough, max_iterations=3)
        .commit()
    )
    source = workflow.create_run()
    done = source.start(input_data={"n": 0}, timeout=WAIT)
    assert done.status == "success" and done.steps["kid"].iterations == 3
    seen.clear()

    traveled = workflow.time_travel(source.run_id, step="kid.a", input_data={"n": 2}).wait(WAIT)

    assert traveled.status == "success", traveled.error
    assert traveled.result == {"n": 3}
    assert seen == [1]
    assert traveled.steps["kid"].iterations == 1


def test_time_travel_into_a_loop_body_the_original_stopped_in_counts_from_the_first_pass(
    runtime: Runtime,
) -> None:
    # The original suspended in the loop's second pass: the new run counted on from its
    # count, and hit max_iterations a pass early (LoopLimitError).
    inner = (
        create_workflow(id="inner", input_schema=N, output_schema=N)
        .then(
            create_step(id="gate", input_schema=N, output_schema=N, resume_schema=Ok, execute=_gate)
        )
        .then(
            create_step(
                id="inc", input_schema=N, output_schema=N, execute=lambda c: N(n=c.input_data.n + 1)
            )
        )
        .commit()
    )
    seen: list[int] = []

    def enough(ctx):  # type: ignore[no-untyped-def]
        seen.append(ctx.iteration_count)
        return ctx.input_data.n >= 14

    workflow = runtime.register(
        create_workflow(id="stopped-looping", input_schema=N, output_schema=N)
        .dountil(inner, enough, max_iterations=3)
        .commit()
    )
    source = workflow.create_run()
    stopped = source.start(input_data={"n": 10}, timeout=WAIT)
    assert stopped.status == "suspended" and stopped.steps["inner"].iterations == 2
    seen.clear()

    traveled = workflow.time_travel(
        source.run_id, step="inner.gate", input_data={"n": 11}, resume_data={"ok": True}
    ).wait(WAIT)

    assert traveled.status == "success", traveled.error
    assert traveled.result == {"n": 14}
    assert seen == [1, 2, 3]
    assert traveled.steps["inner"].iterations == 3


def test_of_two_restarts_that_read_the_run_together_exactly_one_wins(
    each_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runtime._run as run_module

    with Runtime(store=each_store) as rt:
        wf = rt.register(chain)
        run = wf.create_run()
        assert run.start(input_data={"value": "v"}, timeout=WAIT).status == "failed"
        broken["second"] = False
        together = threading.Barrier(2, timeout=WAIT)
        restarted = run_module.restarted

        def after_both_read(snapshot: Any) -> None:
            together.wait()  # each has read the failed run
            restarted(snapshot)

        monkeypatch.setattr(run_module, "restarted", after_both_read)
        outcomes: list[str] = []

        def restart() -> None:
            try:
                wf.create_run(run.run_id).restart_async()
                outcomes.append("restarted")
            except RunNotRestartableError:
                outcomes.append("refused")

        threads = [threading.Thread(target=restart) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        result = run.wait(WAIT)

    assert sorted(outcomes) == ["refused", "restarted"]
    assert (result.status, result.restarts, calls["second"]) == ("success", 1, 2)


def test_a_run_deleted_while_its_restart_is_built_stays_deleted(
    each_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runtime._run as run_module

    with Runtime(store=each_store) as rt:
        wf = rt.register(chain)
        run = wf.create_run()
        assert run.start(input_data={"value": "v"}, timeout=WAIT).status == "failed"
        restarted = run_module.restarted

        def deleted_first(snapshot: Any) -> None:
            assert wf.delete_workflow_run_by_id(run.run_id)  # after the restart read it
            restarted(snapshot)

        monkeypatch.setattr(run_module, "restarted", deleted_first)
        with pytest.raises(RunDeletedError):
            run.restart_async()
        monkeypatch.undo()

        assert wf.get_workflow_run_execution_result(run.run_id) is None
        assert wf.list_workflow_runs(limit=None).total == 0
        broken["second"] = False
        again = wf.create_run(run.run_id).start(input_data={"value": "w"}, timeout=WAIT)
    assert (again.status, again.restarts) == ("success", 0)  # its id was free
