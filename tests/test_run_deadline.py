"""A run's time limit (``run_timeout``): its deadline, fixed when it begins to execute,
stored with it, and enforced wherever the run is, on every store."""

from __future__ import annotations

import math
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from runtime import (
    Queue,
    RunNotSuspendedError,
    RunOutcome,
    StepContext,
    WorkflowDefinitionError,
    WorkflowResult,
    create_step,
    create_workflow,
)
from runtime.testing import Harness
from tests._support import Runtimes, Value, wait_until
from tests.durable._support.helpers import drop_deadlines, raw, row
from tests.durable._support.processes import Child
from tests.durable._support.workflows import asking, count, logged, read_lines

WAIT = 10.0
LIMIT = 0.4  # seconds: the run_timeout of these tests' runs


def ended(wf: Any, run_id: str, timeout: float = WAIT) -> WorkflowResult[Any]:
    """The run's result once it has ended (a suspended run is not waited for by wait())."""
    found: list[WorkflowResult[Any]] = []

    def done() -> bool:
        result = wf.get_workflow_run_execution_result(run_id)
        found[:] = [result]
        return result is not None and result.is_terminal

    wait_until(done, timeout, f"run {run_id} ends")
    return found[0]


def assert_timed_out(result: WorkflowResult[Any], limit: float = LIMIT) -> None:
    assert result.status == "canceled"
    assert result.error is not None and result.error.name == "RunDeadlineError"
    assert f"exceeded its timeout of {limit:g} s" in result.error.message


def patient_workflow(workflow_id: str, seen: dict[str, Any], **options: Any) -> Any:
    """One sync step that waits on its abort signal, then returns (too late to count)."""

    @create_step(id="patient", input_schema=Value, output_schema=Value)
    def patient(ctx: StepContext[Value]) -> Value:
        seen["told"] = ctx.abort_signal.wait(WAIT)
        seen["returned"] = threading.Event()
        seen["returned"].set()
        return Value(value="too late")

    return create_workflow(id=workflow_id, input_schema=Value, output_schema=Value, **options).then(
        patient
    )


@create_step(input_schema=Value, output_schema=Value)
def ask(ctx: StepContext[Value]) -> Value:
    if ctx.resume_data is None:
        ctx.suspend({"question": "go on?"})
    return ctx.input_data


@create_step(input_schema=Value, output_schema=Value)
def quick(ctx: StepContext[Value]) -> Value:
    return Value(value=ctx.input_data.value + "!")


def test_a_running_sync_step_is_told_and_its_run_canceled_at_the_deadline(
    each_store: Any, runtimes: Runtimes
) -> None:
    seen: dict[str, Any] = {}
    wf = runtimes.start(each_store).register(patient_workflow("patient", seen).commit())
    began = time.monotonic()

    result = wf.create_run().start(input_data={"value": "x"}, run_timeout=LIMIT, timeout=WAIT)

    assert LIMIT <= time.monotonic() - began < LIMIT + 3
    assert_timed_out(result)
    assert result.steps["patient"].status == "canceled"
    wait_until(lambda: "returned" in seen, WAIT, "the step body returns")
    assert seen["told"] is True  # ctx.abort_signal was set
    time.sleep(0.1)  # what it returned, too late, changes nothing
    later = wf.get_workflow_run_execution_result(result.run_id)
    assert later is not None and later.status == "canceled" and later.result is None
    assert later.steps["patient"].status == "canceled"


def test_a_suspended_run_is_canceled_at_its_deadline_hooks_told_and_a_resume_refused(
    each_store: Any, runtimes: Runtimes
) -> None:
    outcomes: list[RunOutcome] = []
    wf = runtimes.start(each_store).register(
        create_workflow(
            id="approval",
            input_schema=Value,
            output_schema=Value,
            run_timeout=timedelta(seconds=LIMIT),
            on_finish=outcomes.append,
        )
        .then(ask)
        .commit()
    )
    run = wf.create_run()
    assert run.start(input_data={"value": "x"}, timeout=WAIT).status == "suspended"

    result = ended(wf, run.run_id)

    assert_timed_out(result)
    assert result.steps["ask"].status == "canceled"
    assert [(o.status, o.error.name if o.error else None) for o in outcomes] == [
        ("canceled", "RunDeadlineError")
    ]
    with pytest.raises(RunNotSuspendedError, match="exceeded its timeout") as caught:
        run.resume(resume_data={})
    assert caught.value.status == "canceled"


def test_a_resume_while_the_deadline_cancels_the_run_says_so(
    each_store: Any, runtimes: Runtimes
) -> None:
    in_hook, release = threading.Event(), runtimes.gate()

    def slow_finish(outcome: RunOutcome) -> None:
        in_hook.set()
        release.wait(WAIT)

    wf = runtimes.start(each_store).register(
        create_workflow(
            id="approval", input_schema=Value, output_schema=Value, on_finish=slow_finish
        )
        .then(ask)
        .commit()
    )
    run = wf.create_run()
    assert run.start(input_data={"value": "x"}, run_timeout=LIMIT, timeout=WAIT).status == (
        "suspended"
    )
    assert in_hook.wait(WAIT)  # its deadline passed: its end hooks are under way

    with pytest.raises(RunNotSuspendedError, match=r"being canceled: .*exceeded its timeout"):
        run.resume(resume_data={})

    release.set()
    assert_timed_out(ended(wf, run.run_id))


def test_a_sleeping_run_is_canceled_at_its_deadline_not_at_its_wake(
    each_store: Any, runtimes: Runtimes
) -> None:
    wf = runtimes.start(each_store).register(
        create_workflow(id="napping", input_schema=Value, output_schema=Value)
        .sleep(3600)
        .then(quick)
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"value": "x"}, run_timeout=LIMIT)

    result = ended(wf, run.run_id)

    assert_timed_out(result)
    assert "quick" not in result.steps


def test_the_time_a_run_waits_in_its_queue_does_not_count(
    each_store: Any, runtimes: Runtimes
) -> None:
    gate = runtimes.gate()

    @create_step(input_schema=Value, output_schema=Value)
    def hold(ctx: StepContext[Value]) -> Value:
        gate.wait(WAIT)
        return ctx.input_data

    one_at_a_time = Queue("one-at-a-time", concurrency=1)
    rt = runtimes.start(each_store)
    holding = rt.register(
        create_workflow(id="holding", input_schema=Value, output_schema=Value, queue=one_at_a_time)
        .then(hold)
        .commit()
    )
    behind = rt.register(
        create_workflow(
            id="behind",
            input_schema=Value,
            output_schema=Value,
            queue=one_at_a_time,
            run_timeout=LIMIT,
        )
        .then(quick)
        .commit()
    )
    first = holding.create_run()
    first.start_async(input_data={"value": "first"})
    wait_until(
        lambda: holding.get_workflow_run_execution_result(first.run_id).status == "running"  # type: ignore[union-attr]
    )
    second = behind.create_run()
    second.start_async(input_data={"value": "second"})
    time.sleep(LIMIT * 2)  # waiting for the queue, longer than its limit
    assert behind.get_workflow_run_execution_result(second.run_id).status == "pending"  # type: ignore[union-attr]

    gate.set()

    assert first.wait(WAIT).status == "success"
    result = second.wait(WAIT)
    assert result.status == "success" and result.result == {"value": "second!"}


@pytest.mark.parametrize("how", ["woken", "resumed"])
def test_in_memory_a_run_that_began_and_waits_for_room_is_canceled_at_its_deadline(
    how: str, runtimes: Runtimes
) -> None:
    gate = runtimes.gate()

    @create_step(input_schema=Value, output_schema=Value)
    def hold(ctx: StepContext[Value]) -> Value:
        gate.wait(WAIT)
        return ctx.input_data

    rt = runtimes.start("memory", max_concurrent_runs=1)
    holding = rt.register(
        create_workflow(id="holding", input_schema=Value, output_schema=Value).then(hold).commit()
    )
    waits = (
        create_workflow(id="waits", input_schema=Value, output_schema=Value, run_timeout=LIMIT)
        .sleep(LIMIT / 4)
        .then(quick)
        if how == "woken"
        else create_workflow(
            id="waits", input_schema=Value, output_schema=Value, run_timeout=LIMIT
        ).then(ask)
    )
    wf = rt.register(waits.commit())
    run = wf.create_run()
    run.start_async(input_data={"value": "x"})
    wait_until(
        lambda: wf.get_workflow_run_execution_result(run.run_id).status in ("waiting", "suspended")  # type: ignore[union-attr]
    )
    hog = holding.create_run()
    hog.start_async(input_data={"value": "hog"})  # the only room, until the gate opens
    if how == "resumed":
        threading.Thread(target=run.resume, kwargs={"resume_data": {}}, daemon=True).start()

    result = ended(wf, run.run_id, timeout=LIMIT * 5)  # canceled while it waits for room

    assert_timed_out(result)
    gate.set()
    assert hog.wait(WAIT).status == "success"
    assert wf.get_workflow_run_execution_result(run.run_id).status == "canceled"  # type: ignore[union-attr]


def test_a_restart_of_a_run_canceled_at_its_deadline_gets_a_new_deadline(
    runtimes: Runtimes,
) -> None:
    tries: list[int] = []

    @create_step(input_schema=Value, output_schema=Value)
    def slow_first(ctx: StepContext[Value]) -> Value:
        tries.append(len(tries))
        if len(tries) == 1:
            ctx.abort_signal.wait(WAIT)
        return ctx.input_data

    wf = runtimes.start("memory").register(
        create_workflow(id="again", input_schema=Value, output_schema=Value, run_timeout=LIMIT)
        .then(slow_first)
        .commit()
    )
    run = wf.create_run()
    assert_timed_out(run.start(input_data={"value": "x"}, timeout=WAIT))
    time.sleep(LIMIT)  # the first deadline is long past

    result = run.restart(timeout=WAIT)

    assert result.status == "success" and result.restarts == 1 and tries == [0, 1]


def test_a_nested_workflow_shares_the_deadline_of_the_run_it_is_in(runtimes: Runtimes) -> None:
    seen: dict[str, Any] = {}
    child = patient_workflow("child", seen, run_timeout=3600).commit()  # its own is not used
    parent = create_workflow(
        id="parent", input_schema=Value, output_schema=Value, run_timeout=LIMIT
    )
    wf = runtimes.start("memory").register(parent.then(child).commit())

    result = wf.create_run().start(input_data={"value": "x"}, timeout=WAIT)

    assert_timed_out(result)
    assert result.steps["child.patient"].status == "canceled"
    wait_until(lambda: "returned" in seen)
    assert seen["told"] is True


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, ValueError),
        (-1.0, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (timedelta(0), ValueError),
        (10**400, ValueError),
        # Past a century (as the longest sleep): time skipping would jump the clock there,
        # and the run's end would be recorded at a time no datetime holds.
        (1e300, ValueError),
        (timedelta.max, ValueError),
        (timedelta(days=100 * 366), ValueError),
        (True, TypeError),
        ("60", TypeError),
    ],
)
def test_a_bad_run_timeout_is_refused_at_the_call_and_nothing_is_recorded(
    value: Any, error: type[Exception], runtimes: Runtimes
) -> None:
    wf = runtimes.start("memory").register(
        create_workflow(id="plain", input_schema=Value, output_schema=Value).then(quick).commit()
    )
    run = wf.create_run()
    with pytest.raises(error, match="run_timeout"):
        run.start_async(input_data={"value": "x"}, run_timeout=value)
    assert wf.get_workflow_run_execution_result(run.run_id) is None
    assert run.start(input_data={"value": "x"}, run_timeout=60, timeout=WAIT).status == "success"
    with pytest.raises(WorkflowDefinitionError, match="run_timeout"):
        create_workflow(id="bad", input_schema=Value, output_schema=Value, run_timeout=value)


def test_a_run_timeout_of_a_century_is_taken(runtimes: Runtimes) -> None:
    wf = runtimes.start("memory").register(
        create_workflow(
            id="patient",
            input_schema=Value,
            output_schema=Value,
            run_timeout=100 * 365.25 * 86400.0,  # the longest there is
        )
        .then(quick)
        .commit()
    )
    result = wf.create_run().start(
        input_data={"value": "x"}, run_timeout=timedelta(days=100 * 365), timeout=WAIT
    )
    assert result.status == "success"


# --- time skipping ---------------------------------------------------------------------


def test_time_skipping_jumps_to_a_suspended_or_sleeping_runs_deadline(each_store: Any) -> None:
    day = 86400.0
    began = time.perf_counter()
    store = "sqlite" if isinstance(each_store, Path) else each_store  # the harness's own file
    with Harness(store=store) as harness:
        waiting = harness.register(
            create_workflow(id="waiting", input_schema=Value, output_schema=Value)
            .then(ask)
            .commit()
        )
        sleeping = harness.register(
            create_workflow(id="sleeping", input_schema=Value, output_schema=Value)
            .sleep(30 * day)
            .then(quick)
            .commit()
        )
        start = harness.clock.now()
        held = waiting.create_run()
        held.start_async(input_data={"value": "x"}, run_timeout=day)
        napping = sleeping.create_run()
        napping.start_async(input_data={"value": "x"}, run_timeout=2 * day)

        suspended_end = ended(waiting, held.run_id)
        asleep_end = ended(sleeping, napping.run_id)

    assert_timed_out(suspended_end, day)
    assert_timed_out(asleep_end, 2 * day)
    # Canceled at the deadline the clock jumped to, not at the sleep's end.
    assert suspended_end.updated_at.timestamp() == pytest.approx(start + day, abs=1.0)
    assert asleep_end.updated_at.timestamp() == pytest.approx(start + 2 * day, abs=1.0)
    assert time.perf_counter() - began < 10


# --- durable stores: a crash, another process -------------------------------------------


def test_a_run_whose_process_died_is_canceled_at_once_by_the_next_if_its_deadline_passed(
    tmp_path: Path, runtimes: Runtimes
) -> None:
    db, log, hold = tmp_path / "runs.db", tmp_path / "steps.log", tmp_path / "hold"
    hold.touch()
    run_id = "died-in-beta"
    with Child(
        "crash-in-step",
        db=str(db),
        run_id=run_id,
        value="x",
        log=str(log),
        hold_step="beta",
        hold_file=str(hold),
        run_timeout=LIMIT,
    ) as child:
        assert child.expect("holding") == f"beta {run_id}"
        child.kill()
    hold.unlink()
    stored = row(db, run_id)
    assert stored is not None and stored["status"] == "running" and stored["deadline"] is not None
    time.sleep(max(0.0, stored["deadline"] - time.time()) + 0.05)  # past it, nobody alive

    wf = runtimes.start(db).register(logged)
    result = ended(wf, run_id)

    assert_timed_out(result)
    assert result.steps["alpha"].status == "success" and result.steps["beta"].status == "canceled"
    assert read_lines(log) == ["start alpha", "end alpha", "start beta"]  # beta not run again


def test_on_a_shared_file_another_process_cancels_a_run_at_its_deadline(
    tmp_path: Path, runtimes: Runtimes
) -> None:
    db, log = tmp_path / "runs.db", tmp_path / "steps.log"
    run_id = "asked-elsewhere"
    # This process is alive on the file first: the run's own process dies, this one enforces.
    wf = runtimes.start(db, role="worker").register(asking)
    with Child(
        "suspend-then-die", db=str(db), run_id=run_id, value="x", log=str(log), run_timeout=1.0
    ) as child:
        assert child.expect("SUSPENDED") == f'"{run_id}"'
        child.kill()

    result = ended(wf, run_id)

    assert_timed_out(result, 1.0)
    assert result.steps["ask"].status == "canceled"
    assert count(log, "start ask") == 1


# --- the schema before deadlines ----------------------------------------------------------


BEFORE_DEADLINES = 7
"""The schema version before run deadlines, on both stores (later steps, there again, stay)."""


def back_to_the_schema_before_deadlines(store: str) -> None:
    """Take a store of today's schema back to the one before run deadlines (version 7)."""
    if store.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(store, autocommit=True) as connection:
            connection.execute("DROP INDEX callboard_runs_by_deadline")
            connection.execute("ALTER TABLE callboard_runs DROP COLUMN deadline")
            connection.execute(
                "UPDATE callboard_meta SET value = %s WHERE key = 'schema_version'",
                (str(BEFORE_DEADLINES),),
            )
        return
    with raw(Path(store)) as connection:
        drop_deadlines(connection)
        connection.execute(f"PRAGMA user_version = {BEFORE_DEADLINES}")


def deadline_column(store: str, run_id: str) -> tuple[bool, float | None]:
    """Whether the store's deadline index is there, and the run's ``deadline`` column."""
    if store.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(store, autocommit=True) as connection:
            index = connection.execute(
                "SELECT 1 FROM pg_indexes WHERE indexname = 'callboard_runs_by_deadline'"
            ).fetchone()
            found = connection.execute(
                "SELECT deadline FROM callboard_runs WHERE run_id = %s", (run_id,)
            ).fetchone()
        return index is not None, None if found is None else found[0]
    with raw(Path(store)) as connection:
        indexes = {r[1] for r in connection.execute("PRAGMA index_list(runs)")}
        found = connection.execute(
            "SELECT deadline FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
    return "runs_by_deadline" in indexes, None if found is None else found[0]


def test_a_store_of_the_schema_before_deadlines_migrates_and_its_runs_go_on(
    each_shared_store: str, runtimes: Runtimes
) -> None:
    approval = (
        create_workflow(id="approval", input_schema=Value, output_schema=Value)
        .then(ask)
        .then(quick)
        .commit()
    )
    first = runtimes.start(each_shared_store)
    old = first.register(approval).create_run()
    assert old.start(input_data={"value": "old"}, timeout=WAIT).status == "suspended"
    first.stop()
    back_to_the_schema_before_deadlines(each_shared_store)

    wf = runtimes.start(each_shared_store).register(approval)

    assert wf.create_run(old.run_id).resume(resume_data={}, timeout=WAIT).result == {
        "value": "old!"
    }
    new = wf.create_run()
    assert (
        new.start(input_data={"value": "new"}, run_timeout=LIMIT, timeout=WAIT).status
        == "suspended"
    )
    indexed, deadline = deadline_column(each_shared_store, new.run_id)
    assert indexed and deadline is not None
    assert_timed_out(ended(wf, new.run_id))
    assert deadline_column(each_shared_store, new.run_id)[1] is None  # ended: none kept
