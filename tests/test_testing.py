"""runtime.testing: the harness, virtual time, the trace, faults, overrides, seeded ids."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import re
import subprocess
import sys
import threading
import time
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

import pykka
import pytest
import structlog
from pydantic import BaseModel

import runtime._run as run_module
from actors.run import RunActor
from runtime import (
    RetryConfig,
    Runtime,
    RunTimeoutError,
    SQLiteStore,
    StepContext,
    _clock,
    _ids,
    _probes,
    create_step,
    create_workflow,
    testing,
)
from runtime.testing import Harness, InjectedCrashError, Trace, TraceEvent, VirtualClock
from tests._support import BLOCK_LIMIT, gated_workflow, wait_for_no_callboard_threads, wait_until

pytest_plugins = ["pytester"]

DAY = 86400.0


class N(BaseModel):
    n: int


def _inc(ctx: StepContext[N]) -> N:
    return N(n=ctx.input_data.n + 1)


def _step(step_id: str, **options: Any) -> Any:
    return create_step(id=step_id, input_schema=N, output_schema=N, execute=_inc, **options)


def _three_steps(workflow_id: str = "three") -> Any:
    return (
        create_workflow(id=workflow_id, input_schema=N, output_schema=N)
        .then(_step("a"))
        .then(_step("b"))
        .then(_step("c"))
        .commit()
    )


@pytest.fixture(autouse=True)
def _no_threads_left() -> Any:
    yield
    assert not wait_for_no_callboard_threads()


# --- virtual time -----------------------------------------------------------------------


def test_a_month_of_sleep_an_hour_of_back_off_and_a_timeout_take_well_under_a_second() -> None:
    def hang_on_first_attempt(ctx: StepContext[N]) -> N:
        if ctx.retry_count == 0:
            ctx.abort_signal.wait()  # until its 10-minute timeout aborts it
        return N(n=ctx.input_data.n + 1)

    flaky = _step("flaky", retries=5)
    slow = create_step(
        id="slow",
        input_schema=N,
        output_schema=N,
        execute=hang_on_first_attempt,
        timeout=600,
        retries=1,
    )
    workflow = (
        create_workflow(
            id="long",
            input_schema=N,
            output_schema=N,
            retry_config=RetryConfig(delay=60, backoff=4, max_delay=3600),
        )
        .then(_step("a"))
        .sleep(30 * DAY)
        .then(flaky)
        .then(slow)
        .commit()
    )
    began = time.perf_counter()
    with Harness() as harness:
        harness.fail_step(flaky, ConnectionError("the service is down"), attempt=[1, 2, 3, 4, 5])
        start = harness.clock.now()
        result = harness.register(workflow).create_run().start(input_data={"n": 0}, timeout=10)
        elapsed = harness.clock.now() - start
    wall = time.perf_counter() - began

    assert result.status == "success" and result.result == {"n": 3}
    assert {path: step.status for path, step in result.steps.items()} == {
        "a": "success",
        "sleep-2": "success",
        "flaky": "success",
        "slow": "success",
    }
    assert result.steps["flaky"].attempts == 6
    assert result.steps["slow"].attempts == 2
    # 30 days; back-offs of 60 s, 4 min, 16 min, 1 h, 1 h (capped); a 10-minute timeout
    # and the 60 s back-off before the timed-out step's second attempt.
    backoffs = 60 + 240 + 960 + 3600 + 3600
    assert elapsed == pytest.approx(30 * DAY + backoffs + 600 + 60, abs=5)
    assert wall < 1.0


def test_steps_read_virtual_time_with_ctx_now() -> None:
    seen: list[datetime] = []

    def note(ctx: StepContext[N]) -> N:
        seen.append(ctx.now())
        return ctx.input_data

    workflow = (
        create_workflow(id="clocked", input_schema=N, output_schema=N)
        .then(create_step(id="before", input_schema=N, output_schema=N, execute=note))
        .sleep(7 * DAY)
        .then(create_step(id="after", input_schema=N, output_schema=N, execute=note))
        .commit()
    )
    with Harness() as harness:
        harness.register(workflow).create_run().start(input_data={"n": 0}, timeout=10)

    assert (seen[1] - seen[0]).total_seconds() == pytest.approx(7 * DAY, abs=1)


def test_a_runs_record_is_stamped_by_the_virtual_clock() -> None:
    workflow = (
        create_workflow(id="stamped", input_schema=N, output_schema=N)
        .then(_step("before"))
        .sleep(7 * DAY)
        .then(_step("after"))
        .commit()
    )
    with Harness() as harness:
        began = harness.clock.now()
        result = harness.register(workflow).create_run().start(input_data={"n": 0}, timeout=10)
        ended = harness.clock.now()

    assert result.status == "success"
    before, after = result.steps["before"], result.steps["after"]
    assert before.ended_at is not None and after.started_at is not None
    assert after.ended_at is not None
    # Every time in the record is on one clock: the week between the steps shows.
    assert (after.started_at - before.ended_at).total_seconds() == pytest.approx(7 * DAY, abs=1)
    tick = 1e-3  # datetimes keep microseconds
    assert began - tick <= result.created_at.timestamp() <= before.started_at.timestamp() + tick
    assert after.ended_at.timestamp() - tick <= result.updated_at.timestamp() <= ended + tick


def _asleep(harness: Harness, workflow: Any) -> tuple[Any, Any]:
    """The workflow bound to the harness, and a run of it started and gone to sleep."""
    bound = harness.register(workflow)
    run = bound.create_run()
    run.start_async(input_data={"n": 0})
    wait_until(lambda: bound.get_workflow_run_execution_result(run.run_id).status == "waiting")
    return bound, run


def test_without_time_skipping_the_clock_moves_only_when_advanced() -> None:
    workflow = (
        create_workflow(id="napping", input_schema=N, output_schema=N)
        .sleep(60)
        .then(_step("a"))
        .commit()
    )
    with Harness(time_skipping=False) as harness:
        bound, run = _asleep(harness, workflow)
        time.sleep(0.05)
        assert bound.get_workflow_run_execution_result(run.run_id).status == "waiting"

        harness.clock.advance(59)
        time.sleep(0.05)
        assert bound.get_workflow_run_execution_result(run.run_id).status == "waiting"

        harness.clock.advance(1)
        assert run.wait(timeout=BLOCK_LIMIT).status == "success"


@pytest.mark.parametrize("seconds", [math.inf, 9_000 * 365 * 86_400.0])
def test_advance_past_the_year_9999_is_refused_and_the_harness_goes_on(seconds: float) -> None:
    # advance(math.inf) was taken: the clock read inf, and every start after it failed.
    workflow = create_workflow(id="plain", input_schema=N, output_schema=N).then(_step("a"))
    with Harness(time_skipping=False) as harness:
        bound = harness.register(workflow.commit())
        before = harness.clock.now()
        with pytest.raises(ValueError, match="year 9999"):
            harness.clock.advance(seconds)
        assert harness.clock.now() == before
        assert bound.create_run().start(input_data={"n": 0}, timeout=BLOCK_LIMIT).status == (
            "success"
        )
    for start in (math.inf, -1.0, math.nan):
        with pytest.raises(ValueError, match="between 1970 and the year 9999"):
            VirtualClock(start=start)


def test_advance_walks_through_each_timer_the_runs_set_on_the_way() -> None:
    # A single jump fired the first sleep's timer only: the second sleep was set after
    # it, from the new time, and the run stayed asleep though its 20 seconds had passed.
    retried = itertools.count()

    def flaky(ctx: StepContext[N]) -> N:
        if next(retried) == 0:
            raise RuntimeError("once")
        return N(n=ctx.input_data.n + 1)

    workflow = (
        create_workflow(id="walked", input_schema=N, output_schema=N)
        .sleep(10)
        .then(_step("a"))
        .sleep(5)
        .then(create_step(id="flaky", input_schema=N, output_schema=N, execute=flaky, retries=1))
        .commit()
    )
    with Harness(time_skipping=False) as harness:
        _, run = _asleep(harness, workflow)
        began = harness.clock.now()

        harness.clock.advance(10 + 5 + 2)  # the two sleeps and the retry's back-off of 0

        assert run.wait(timeout=BLOCK_LIMIT).status == "success"
        assert harness.clock.now() == pytest.approx(began + 17)


def test_advance_handles_a_timer_due_at_the_target_itself() -> None:
    # The walk stopped once the clock reached the target: the second sleep, due at it
    # exactly, was not waited for, and the run read just after was still asleep.
    workflow = (
        create_workflow(id="twice", input_schema=N, output_schema=N)
        .sleep(10)
        .sleep(10)
        .then(_step("a"))
        .commit()
    )
    with Harness(time_skipping=False) as harness:
        bound, run = _asleep(harness, workflow)
        began = harness.clock.now()
        harness.clock.advance(20)
        result = bound.get_workflow_run_execution_result(run.run_id)  # at once, no wait
        assert result.status == "success" and list(result.steps) == ["sleep-1", "sleep-2", "a"]
        assert harness.clock.now() == began + 20


def test_advance_does_not_wait_for_ever_on_a_step_the_test_holds() -> None:
    # A step blocked until the test lets it go makes no progress: the walk goes on
    # without it after WALK_PATIENCE, and the timers due fire all the same.
    held, release, let_go = threading.Event(), threading.Event(), threading.Event()

    def hold(ctx: StepContext[N]) -> N:
        held.set()
        release.wait(BLOCK_LIMIT)
        let_go.set()
        return ctx.input_data

    sleeper = create_workflow(id="sleeper", input_schema=N, output_schema=N).sleep(30).commit()
    holder = (
        create_workflow(id="holder", input_schema=N, output_schema=N)
        .then(create_step(id="hold", input_schema=N, output_schema=N, execute=hold))
        .commit()
    )
    with Harness(time_skipping=False) as harness:
        asleep = harness.register(sleeper).create_run()
        asleep.start_async(input_data={"n": 0})
        harness.register(holder).create_run().start_async(input_data={"n": 0})
        assert held.wait(BLOCK_LIMIT)
        try:
            harness.clock.advance(30)
            assert not let_go.is_set()  # the walk did not wait for the held step to end
            assert asleep.wait(timeout=BLOCK_LIMIT).status == "success"
        finally:
            release.set()


def test_a_hook_waiting_for_a_run_does_not_hide_that_runs_step_from_time_skipping() -> None:
    # The hook's wait counted as a step's (parked), which hid the step executing for
    # real meanwhile: the clock jumped to that step's timeout, and failed it.
    def slow(ctx: StepContext[N]) -> N:
        time.sleep(0.3)  # real time: the clock must keep up with it, not jump past it
        return ctx.input_data

    followed = (
        create_workflow(id="followed", input_schema=N, output_schema=N)
        .then(create_step(id="slow", input_schema=N, output_schema=N, execute=slow, timeout=60))
        .commit()
    )
    told: list[str] = []
    with Harness() as harness:
        follow = harness.register(followed)

        def on_finish(outcome: Any) -> None:
            told.append(follow.create_run().start(input_data={"n": 1}, timeout=BLOCK_LIMIT).status)

        first = harness.register(
            create_workflow(id="first", input_schema=N, output_schema=N, on_finish=on_finish)
            .then(_step("a"))
            .commit()
        )
        assert (
            first.create_run().start(input_data={"n": 0}, timeout=BLOCK_LIMIT).status == "success"
        )

    assert told == ["success"]


def _parent_of(child: Any, parent_id: str) -> None:
    """A run whose step (timeout 10 s) starts a run of ``child`` and waits for it, in a harness.

    It must succeed, the harness's clock moving less than the step's timeout.
    """
    with Harness() as harness:
        children = harness.register(child)

        def wait_for_child(ctx: StepContext[N]) -> N:
            result = children.create_run().start(input_data={"n": 1}, timeout=BLOCK_LIMIT)
            return N(n=len(result.status))

        parent = harness.register(
            create_workflow(id=parent_id, input_schema=N, output_schema=N)
            .then(
                create_step(
                    id="p", input_schema=N, output_schema=N, execute=wait_for_child, timeout=10
                )
            )
            .commit()
        )
        began = harness.clock.now()
        result = parent.create_run().start(input_data={"n": 0}, timeout=BLOCK_LIMIT)
        assert result.status == "success", result.error
        assert harness.clock.now() - began < 10  # kept up with real time


def test_a_hook_at_work_holds_the_clock_as_a_step_does() -> None:
    # A step waiting for a child run is parked; the child's on_finish did real work
    # meanwhile, which the clock did not count: it jumped to the step's timeout, and the
    # step failed with StepTimeoutError while the hook still ran.
    def on_finish(_outcome: Any) -> None:
        time.sleep(0.3)  # real work: the clock must keep up with it, not jump past it

    child = (
        create_workflow(id="child_with_hook", input_schema=N, output_schema=N, on_finish=on_finish)
        .then(_step("c"))
        .commit()
    )
    _parent_of(child, "parent_of_hooked")


def test_a_step_slow_to_wake_after_its_child_ended_holds_the_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The step waiting for a child run counted as parked until its thread left the wait:
    # a thread slow to be scheduled once the child had ended (a loaded machine) left the
    # runtime looking quiet, and the clock jumped to the step's timeout (CI, stop 58).
    # Here the thread dawdles 0.3 s after its wait is over, as a starved one would.
    real = run_module.wait_for_a_run

    def slow_to_wake(wait: Any, run_id: str, timeout: Any, *over: Any) -> bool:
        def dawdling(left: Any) -> bool:
            done = bool(wait(left))
            time.sleep(0.3)
            return done

        return real(dawdling, run_id, timeout, *over)

    monkeypatch.setattr(run_module, "wait_for_a_run", slow_to_wake)
    child = (
        create_workflow(id="child_plain", input_schema=N, output_schema=N).then(_step("c")).commit()
    )
    _parent_of(child, "parent_slow_to_wake")


def test_a_virtual_clock_never_goes_back() -> None:
    clock = VirtualClock(start=100.0)
    clock.advance(0)
    clock.advance(2.5)

    assert clock.now() == 102.5
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="forward"):
        clock.advance(float("nan"))


def test_a_real_sleep_in_a_step_is_not_skipped() -> None:
    def nap(ctx: StepContext[N]) -> N:
        time.sleep(0.2)
        return ctx.input_data

    workflow = (
        create_workflow(id="real-nap", input_schema=N, output_schema=N)
        .then(create_step(id="nap", input_schema=N, output_schema=N, execute=nap))
        .commit()
    )
    with Harness() as harness:
        began = time.perf_counter()
        harness.register(workflow).create_run().start(input_data={"n": 0}, timeout=10)

        assert time.perf_counter() - began >= 0.2


@pytest.mark.parametrize("body", ["sync", "async"])
def test_a_step_that_hangs_past_its_timeout_fails_with_step_timeout_error(body: str) -> None:
    # The clock stood still while the step ran, so its timeout (a timer on that clock)
    # never fired: the step ran to its end (a hung one, for ever) and succeeded.
    release = threading.Event()

    def hang(ctx: StepContext[N]) -> N:
        release.wait(10)
        return ctx.input_data

    async def ahang(ctx: StepContext[N]) -> N:
        await asyncio.sleep(10)
        return ctx.input_data

    step = create_step(
        id="hang",
        input_schema=N,
        output_schema=N,
        execute=hang if body == "sync" else ahang,
        timeout=0.2,
    )
    workflow = create_workflow(id="hangs", input_schema=N, output_schema=N).then(step).commit()
    try:
        with Harness() as harness:
            began = harness.clock.now()
            result = harness.register(workflow).create_run().start(input_data={"n": 0}, timeout=10)
            assert result.status == "failed"
            assert result.error is not None and result.error.name == "StepTimeoutError"
            assert 0.2 <= harness.clock.now() - began < 10  # the timeout's, not the body's end
            release.set()  # the abandoned sync body ends before the harness checks threads
    finally:
        release.set()


def test_a_step_that_ends_before_its_timeout_leaves_the_clock_where_the_timers_put_it() -> None:
    # Keeping up with real time is for steps that outlast a timer: a day of sleep after
    # a quick step still jumps, and whole, to the day's end.
    workflow = (
        create_workflow(id="quick-then-sleep", input_schema=N, output_schema=N)
        .then(_step("quick", timeout=5.0))
        .sleep(DAY)
        .commit()
    )
    with Harness() as harness:
        began = harness.clock.now()
        result = harness.register(workflow).create_run().start(input_data={"n": 0}, timeout=10)
        assert result.status == "success"
        assert harness.clock.now() - began == pytest.approx(DAY, abs=1.0)


def test_sleeps_on_a_sqlite_store_are_skipped_too(tmp_path: Path) -> None:
    workflow = (
        create_workflow(id="durable-nap", input_schema=N, output_schema=N)
        .sleep(3 * DAY)
        .then(_step("a"))
        .commit()
    )
    began = time.perf_counter()
    with Harness(store=tmp_path / "runs.db") as harness:
        result = harness.register(workflow).create_run().start(input_data={"n": 0}, timeout=10)

    assert result.status == "success"
    assert time.perf_counter() - began < 5.0


def test_sleeps_on_a_postgresql_store_are_skipped_too(postgres_server: Any) -> None:
    workflow = (
        create_workflow(id="pg-nap", input_schema=N, output_schema=N)
        .then(_step("a"))
        .sleep(3 * DAY)
        .then(_step("b"))
        .commit()
    )
    url = postgres_server.new_database()
    try:
        with Harness(store=url) as harness:
            began = harness.clock.now()
            result = harness.register(workflow).create_run().start(input_data={"n": 0}, timeout=10)
            slept = harness.clock.now() - began
    finally:
        postgres_server.drop_database(url)

    # Due by the virtual clock, not the database's: a real wait would time out above.
    assert result.status == "success" and result.result == {"n": 2}
    assert slept == pytest.approx(3 * DAY, abs=60)


# --- leases on virtual time -------------------------------------------------------------

HOUR_LEASE = 3600.0
"""A lease no test could wait out for real: a run handed back under it proves virtual time."""


def test_a_stalled_workers_run_goes_back_once_the_virtual_clock_passes_its_lease(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    calls: list[str] = []
    entered, gate = threading.Event(), threading.Event()
    workflow = gated_workflow("leased", calls, entered, gate)
    with Harness(store=SQLiteStore(path, lease=HOUR_LEASE), time_skipping=False) as harness:
        harness.register(workflow)
        stalled = Runtime(store=SQLiteStore(path, lease=HOUR_LEASE))
        stalled.start()
        try:
            run = stalled.register(workflow).create_run()
            run.start_async(input_data={"n": 0})
            assert entered.wait(BLOCK_LIMIT)
            # The worker stalls: nothing renews its lease any more (its claimer is gone).
            claimer = stalled._host.system.claimer
            assert claimer is not None
            claimer.stop(BLOCK_LIMIT)
            store, theirs = harness.runtime.store, stalled.store
            assert isinstance(store, SQLiteStore) and isinstance(theirs, SQLiteStore)

            def held() -> dict[str, int]:
                return {w.worker_id: w.held for w in store.workers()}

            time.sleep(0.3)  # passes of the harness's reaper on the real clock: no effect
            assert held() == {store.owner_id: 0, theirs.owner_id: 1}
            harness.clock.advance(HOUR_LEASE - 60)  # not yet
            time.sleep(0.3)
            assert held() == {store.owner_id: 0, theirs.owner_id: 1}

            harness.clock.advance(120)  # past the stalled worker's lease, not the harness's
            result = harness.workflow("leased").create_run(run_id=run.run_id).wait(BLOCK_LIMIT)
            assert held() == {store.owner_id: 0}  # the stalled worker was reaped
        finally:
            gate.set()  # the stalled attempt returns; its write is fenced off
            stalled.stop(BLOCK_LIMIT)

    assert result.status == "success" and result.result == {"n": 1}
    assert calls == [run.run_id, run.run_id]  # handed back and run again, by the harness


@pytest.mark.usefixtures("_structlog_reset")
def test_a_jump_of_the_clock_renews_the_leases_of_live_workers(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    workflow = (
        create_workflow(id="month-nap", input_schema=N, output_schema=N)
        .sleep(30 * DAY)
        .then(_step("a"))
        .commit()
    )
    with structlog.testing.capture_logs() as events, Harness(store=path) as harness:
        other = Runtime(store=path)  # a second live worker on the same file, in this process
        other.start()
        try:
            other.register(workflow)
            result = harness.register(workflow).create_run().start(input_data={"n": 0}, timeout=10)
            store, theirs = harness.runtime.store, other.store
            assert isinstance(store, SQLiteStore) and isinstance(theirs, SQLiteStore)
            workers = {w.worker_id: w.heartbeat_age for w in store.workers()}
        finally:
            other.stop(BLOCK_LIMIT)

    assert result.status == "success"
    assert set(workers) == {store.owner_id, theirs.owner_id}  # nobody was reaped
    assert all(age < HOUR_LEASE for age in workers.values())  # renewed within the month
    assert not [e for e in events if e["event"] in ("worker_reaped", "worker_lease_lost")]


def test_the_clock_seam_is_the_wall_clock_outside_a_harness() -> None:
    with Harness():
        assert _clock.time is not time.time
        assert _probes.observer is not None

    assert _clock.time is time.time
    assert _probes.observer is None and _probes.step_body is None and _probes.parked is None


# --- the trace --------------------------------------------------------------------------


def test_the_trace_of_a_three_step_run_lists_the_messages_in_the_designed_order() -> None:
    with Harness() as harness:
        result = harness.register(_three_steps()).create_run().start(input_data={"n": 0})
        trace = harness.trace.of(result.run_id)

    assert result.status == "success"
    # The run actor tells the registry each new snapshot and hands the next call to a
    # step actor in one handler: the two are handled at once, in either order. What
    # one message causes comes after it.
    trace.expect_in_order(
        "Supervisor<-StartRun",
        "StepActor<-CallStep:a",
        "RunActor<-StepFinished:a",
        "StepActor<-CallStep:b",
        "RunActor<-StepFinished:b",
        "StepActor<-CallStep:c",
        "RunActor<-StepFinished:c",
        "Supervisor<-RunEnded",
    )
    assert trace.events[0].message in ("StartRun", "WatchRun")  # start() sends both at once
    # pending -> running (announcing a), then one after each step's output.
    assert trace.messages().count("SnapshotTaken") == 4
    calls = [(e.message, e.step_path) for e in trace if e.message in ("CallStep", "StepFinished")]
    assert calls == [
        ("CallStep", "a"),
        ("StepFinished", "a"),
        ("CallStep", "b"),
        ("StepFinished", "b"),
        ("CallStep", "c"),
        ("StepFinished", "c"),
    ]
    call_a = next(e for e in trace if e.message == "CallStep")
    assert call_a.sender == "RunActor" and call_a.receiver == "StepActor"
    assert call_a.run_id == result.run_id
    sequences = [e.sequence for e in trace]
    assert sequences == sorted(sequences)


def test_on_a_durable_store_a_step_waits_for_the_commit_of_the_previous_steps_output(
    tmp_path: Path,
) -> None:
    with Harness(store=tmp_path / "runs.db") as harness:
        result = harness.register(_three_steps()).create_run().start(input_data={"n": 0})
        trace = harness.trace.of(result.run_id)

    assert result.status == "success"
    # Not the snapshot marking a running before a's call: a new run's first step goes out
    # without waiting for it, and either may arrive first (it failed about 1 run in 20).
    trace.expect_in_order(
        "StepActor<-CallStep:a",
        "RunActor<-StepFinished:a",
        "Registry<-SnapshotTaken",
        "StepActor<-CallStep:b",
        "RunActor<-StepFinished:b",
        "Registry<-SnapshotTaken",
        "StepActor<-CallStep:c",
        "RunActor<-StepFinished:c",
        "Registry<-SnapshotTaken",
    )
    # A SnapshotCommitted comes for each commit the run waits for, and for no other: the
    # one that holds a's output and announces b, then b's output and c. Not the first
    # (step a running), which a new run's first call does not wait for: it was asked for
    # too, and came before the run's end or after, when nobody received it.
    events = trace.events

    def commits_before(step: str) -> int:
        call = next(
            i for i, e in enumerate(events) if e.message == "CallStep" and e.step_path == step
        )
        return sum(1 for e in events[:call] if e.message == "SnapshotCommitted")

    assert commits_before("b") == 1
    assert commits_before("c") == 2
    assert sum(1 for e in events if e.message == "SnapshotCommitted") == 2


def test_a_crash_at_snapshot_committed_fires_at_the_same_commit_every_time(
    tmp_path: Path,
) -> None:
    # It fired in about half of the runs of one step, and in runs of more at the first
    # snapshot's commit or at the next, as the commit raced the run: at random.
    two = (
        create_workflow(id="two", input_schema=N, output_schema=N)
        .then(_step("a"))
        .then(_step("b"))
        .commit()
    )
    one = create_workflow(id="one", input_schema=N, output_schema=N).then(_step("a")).commit()
    seen = set()
    with structlog.testing.capture_logs():  # the injected crash logs its traceback
        for attempt in range(8):
            with Harness(store=tmp_path / f"runs-{attempt}.db") as harness:
                bound, alone = harness.register(two), harness.register(one)
                harness.crash_run(at="SnapshotCommitted")
                # One step: its call waits for no commit, so no SnapshotCommitted comes.
                lone = alone.create_run().start(input_data={"n": 0}, timeout=BLOCK_LIMIT)
                crashed = bound.create_run().start(input_data={"n": 0}, timeout=BLOCK_LIMIT)
            assert crashed.error is not None
            seen.add(
                (
                    lone.status,
                    crashed.status,
                    crashed.error.name,
                    tuple((path, step.status) for path, step in crashed.steps.items()),
                )
            )

    # The commit of a's output, which b's call waits for: a is done, b is not.
    assert seen == {("success", "failed", "RunCrashedError", (("a", "success"), ("b", "failed")))}


@pytest.mark.parametrize("fault", ["crash", "drop", "delay"])
def test_a_fault_at_a_commit_a_run_of_one_step_never_waits_for_fails_the_close(
    fault: str,
) -> None:
    # A run of one step waits for no commit, so no SnapshotCommitted comes: the fault
    # was taken, never fired, and the test passed without it.
    one = create_workflow(id="one", input_schema=N, output_schema=N).then(_step("a")).commit()
    harness = Harness(store="sqlite").start()
    try:
        run = harness.register(one).create_run()
        if fault == "crash":
            harness.crash_run(at="SnapshotCommitted", run_id=run.run_id)
        elif fault == "drop":
            harness.drop_message("SnapshotCommitted", run_id=run.run_id)
        else:
            harness.delay_message("SnapshotCommitted", 60, run_id=run.run_id)
        result = run.start(input_data={"n": 0}, timeout=BLOCK_LIMIT)
        assert result.status == "success"
    finally:
        with pytest.raises(AssertionError) as said:
            harness.close()
    method = {"crash": "crash_run", "drop": "drop_message", "delay": "delay_message"}[fault]
    assert f"{method}(at='SnapshotCommitted', run_id={run.run_id!r}) met 0 of the 1" in str(
        said.value
    )
    assert "so a run of one step receives none" in str(said.value)


def test_a_fault_at_a_commit_fires_on_a_restarted_run_of_one_step() -> None:
    # The restarted run's first call waits for the commit of the record that restarts it.
    one = create_workflow(id="one", input_schema=N, output_schema=N).then(_step("a")).commit()
    with structlog.testing.capture_logs(), Harness(store="sqlite") as harness:
        harness.fail_step("a", ValueError("once"))
        run = harness.register(one).create_run()
        assert run.start(input_data={"n": 0}, timeout=BLOCK_LIMIT).status == "failed"
        harness.crash_run(at="SnapshotCommitted", run_id=run.run_id)
        run.restart()
        crashed = run.wait(BLOCK_LIMIT)
    assert crashed.status == "failed" and crashed.error is not None
    assert crashed.error.name == "RunCrashedError"


@pytest.mark.parametrize("at", ["SnapshotCommitted", "SettledCommitted"])
def test_a_fault_at_a_commit_is_refused_on_a_store_in_memory(at: str) -> None:
    # Taken, it never came: a store in memory commits nothing.
    given = Harness()
    with pytest.raises(ValueError, match=f"a {at} is sent only once a durable store"):
        given.drop_message(at)  # before it opens, from the store it was given
    with given as harness:
        with pytest.raises(ValueError, match="keeps its runs in memory"):
            harness.delay_message(at, 1.0)
        if at == "SnapshotCommitted":
            with pytest.raises(ValueError, match="could never come"):
                harness.crash_run(at=at)


def test_trace_events_are_frozen_and_a_failed_expectation_prints_the_trace() -> None:
    with Harness() as harness:
        result = harness.register(_three_steps()).create_run().start(input_data={"n": 0})
        trace = harness.trace.of(result.run_id)

    event = trace.events[0]
    assert isinstance(event, TraceEvent)
    with pytest.raises(AttributeError):
        event.message = "other"  # type: ignore[misc]
    with pytest.raises(AssertionError, match=r"(?s)StepFinished:c.*CallStep\s+run="):
        trace.expect_in_order("StepFinished:c", "CallStep:a")
    assert "StepActor" in trace.dump() and str(event) in trace.dump()
    assert Trace().dump() == "(no messages)"


def test_expect_in_order_refuses_a_message_or_receiver_that_could_never_match() -> None:
    # A misspelt type failed as "no CallStpe message was handled": a run that never got
    # there, to read it; a misspelt receiver listed each message it missed.
    with Harness() as harness:
        result = harness.register(_three_steps()).create_run().start(input_data={"n": 0})
        trace = harness.trace.of(result.run_id)

    with pytest.raises(ValueError, match=r"'CallStpe:a' names no message 'CallStpe'; the ac"):
        trace.expect_in_order("StartRun", "CallStpe:a")
    with pytest.raises(ValueError, match=r"a StepFinished is handled by the RunActor, never "):
        trace.expect_in_order("Runactor<-StepFinished")
    with pytest.raises(ValueError, match=r"handled by the StepActor, never by 'RunActor'"):
        trace.expect_in_order("RunActor<-CallStep:a")
    with pytest.raises(AssertionError, match="no CancelRun message was handled"):
        trace.expect_in_order("RunActor<-CancelRun")


def test_expect_in_order_names_a_nested_step_by_its_id_or_by_its_whole_path() -> None:
    # "CallStep:inc" missed the step at outer.inc, which a fault names by "inc" too, and
    # the error printed the trace without saying which steps the CallSteps were for.
    outer = create_workflow(id="outer", input_schema=N, output_schema=N).then(_step("inc"))
    workflow = create_workflow(id="top", input_schema=N, output_schema=N).then(outer.commit())
    with Harness() as harness:
        result = (
            harness.register(workflow.then(_step("last")).commit())
            .create_run()
            .start(input_data={"n": 0})
        )
        trace = harness.trace.of(result.run_id)

    assert result.status == "success"
    trace.expect_in_order("CallStep:inc", "StepFinished:inc", "CallStep:last")
    trace.expect_in_order("StepActor<-CallStep:outer.inc", "RunActor<-StepFinished:outer.inc")
    call = next(event for event in trace if event.message == "CallStep")
    # A dotted name is the whole path, and a name without one a whole last part.
    for missing in ("CallStep:uter.inc", "CallStep:top.outer.inc", "CallStep:nc"):
        with pytest.raises(AssertionError) as missed:
            trace.expect_in_order(missing)
        said = str(missed.value)
        assert f"#{call.sequence} RunActor -> StepActor step=outer.inc" in said, said
        assert "a step named without a dot matches the last part of a path" in said
    with pytest.raises(AssertionError) as missed:
        trace.expect_in_order("CallStep:last", "CallStep:inc")
    said = str(missed.value)
    assert "after 'CallStep:last' (matched by message #" in said
    assert "step=outer.inc (before)" in said
    with pytest.raises(AssertionError, match="no TimerFired message was handled"):
        trace.expect_in_order("TimerFired")


def test_the_trace_keeps_other_runs_apart() -> None:
    with Harness() as harness:
        bound = harness.register(_three_steps())
        first = bound.create_run().start(input_data={"n": 0})
        second = bound.create_run().start(input_data={"n": 5})
        both = harness.trace

    assert {e.run_id for e in both.of(first.run_id)} == {first.run_id}
    assert len(both.of(first.run_id)) + len(both.of(second.run_id)) <= len(both)


def test_a_held_back_reply_is_traced_once_where_it_was_handled_by_its_path() -> None:
    # It was traced when held back, and again when handled, then by the step's id: the
    # trace showed a's reply before b's, and "StepFinished:child.a" came never after b's.
    child = (
        create_workflow(id="child", input_schema=N, output_schema=N)
        .parallel([_step("a"), _step("b")])
        .map(lambda ctx: {"n": 0})
        .commit()
    )
    workflow = create_workflow(id="pair", input_schema=N, output_schema=N).then(child)
    with Harness() as harness:
        harness.delay_message("StepFinished", 60, step="child.a")
        result = harness.register(workflow.commit()).create_run().start(input_data={"n": 0})
        trace = harness.trace.of(result.run_id)

    assert result.status == "success"
    replies = [event.step_path for event in trace if event.message == "StepFinished"]
    assert replies == ["child.b", "child.a", "child.map-2"]
    trace.expect_in_order("RunActor<-StepFinished:child.b", "RunActor<-StepFinished:child.a")


def test_a_dropped_message_is_not_traced_as_handled() -> None:
    guarded = _step("guarded", timeout=60)
    workflow = create_workflow(id="lossy", input_schema=N, output_schema=N).then(guarded)
    with Harness() as harness:
        harness.drop_message("StepFinished", step="guarded")
        result = harness.register(workflow.commit()).create_run().start(input_data={"n": 0})
        trace = harness.trace.of(result.run_id)

    assert result.status == "failed"  # its reply lost, its timeout failed it
    assert [e.step_path for e in trace if e.message == "CallStep"] == ["guarded"]
    assert [e.step_path for e in trace if e.message == "StepFinished"] == []


def _held_pair(release: threading.Event, began: list[str]) -> Any:
    """Steps ``a`` and ``b`` in parallel: each suspends, and once resumed waits for ``release``."""

    def member(name: str) -> Any:
        def execute(ctx: Any) -> N:
            if ctx.resume_data is None:
                ctx.suspend({"who": name})
            began.append(name)
            release.wait(BLOCK_LIMIT)
            return N(n=ctx.input_data.n + ctx.resume_data["add"])

        return create_step(id=name, input_schema=N, output_schema=N, execute=execute)

    return (
        create_workflow(id="pair", input_schema=N, output_schema=N)
        .parallel([member("a"), member("b")])
        .map(lambda ctx: {"n": ctx.input_data["a"]["n"] + ctx.input_data["b"]["n"]})
        .commit()
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_lost_resume_is_answered_and_its_caller_goes_on(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nobody answered the resume whose message was lost: resume_async() hung for ever (in
    # memory), and the request a worker took from the file was never carried out (SQLite).
    from runtime import ResumeConflictError

    # Told "not here" while its actor is alive (the lost mail), the caller waits for the run
    # to settle, which it does not while step a holds it: half a second, not five, to learn so.
    monkeypatch.setattr(run_module, "_SETTLE_PATIENCE", 0.5)

    release, began = threading.Event(), []
    with Harness(store=store) as harness:
        bound = harness.register(_held_pair(release, began))
        run = bound.create_run()
        assert run.start(input_data={"n": 1}, timeout=BLOCK_LIMIT).status == "suspended"
        try:
            run.resume_async(step="a", resume_data={"add": 10})  # the run runs on: b waits

            def a_running() -> bool:
                read = bound.get_workflow_run_execution_result(run.run_id)
                return read is not None and read.steps["a"].status == "running"

            wait_until(a_running)
            harness.drop_message("ResumeStep")
            if store == "memory":
                # Answered as mail its actor never read: the caller read the run again,
                # found it unchanged, and was told that this resume changed nothing.
                with pytest.raises(ResumeConflictError, match="this resume changed nothing"):
                    run.resume_async(step="b", resume_data={"add": 100})
                read = bound.get_workflow_run_execution_result(run.run_id)
                assert read is not None and list(read.suspended) == ["b"]
            # Given again (in memory), or the request the worker looks at again (SQLite).
            run.resume_async(step="b", resume_data={"add": 100})
            wait_until(lambda: "b" in began)
        finally:
            release.set()
        result = run.wait(BLOCK_LIMIT)

    assert result.status == "success", result.error
    assert result.result == {"n": 112}
    assert began == ["a", "b"]


@pytest.mark.timeout(60)
def test_a_lost_cancel_is_answered_and_the_cancel_given_again() -> None:
    # Nobody answered the cancel whose message was lost: run.cancel() hung for ever.
    calls: list[str] = []
    entered, gate = threading.Event(), threading.Event()
    with Harness() as harness:
        run = harness.register(gated_workflow("held", calls, entered, gate)).create_run()
        run.start_async(input_data={"n": 0})
        try:
            assert entered.wait(BLOCK_LIMIT)
            harness.drop_message("CancelRun")
            assert run.cancel() is True
        finally:
            gate.set()
        result = run.wait(BLOCK_LIMIT)
        dropped_and_given_again = [
            event.receiver for event in harness.trace.of(run.run_id) if event.message == "CancelRun"
        ]

    assert result.status == "canceled"
    # The first was lost at the supervisor; the one given again reached the run's actor.
    assert dropped_and_given_again == ["Supervisor", "RunActor"]


# --- faults -----------------------------------------------------------------------------


def test_a_step_that_fails_on_its_first_attempt_is_retried() -> None:
    flaky = _step("flaky", retries=2)
    workflow = create_workflow(id="retried", input_schema=N, output_schema=N).then(flaky).commit()
    with Harness() as harness:
        harness.fail_step(flaky, ConnectionError("once"), attempt=1)
        result = harness.register(workflow).create_run().start(input_data={"n": 0})

    assert result.status == "success"
    assert result.steps["flaky"].attempts == 2


def test_a_step_that_fails_on_every_attempt_fails_its_run_with_that_error() -> None:
    flaky = _step("flaky", retries=1)
    workflow = create_workflow(id="doomed", input_schema=N, output_schema=N).then(flaky).commit()
    with Harness() as harness:
        harness.fail_step("flaky", TimeoutError, attempt=[1, 2])
        result = harness.register(workflow).create_run().start(input_data={"n": 0})

    assert result.status == "failed"
    assert result.error is not None and result.error.name == "TimeoutError"
    assert "attempt 2" in result.error.message
    assert result.steps["flaky"].attempts == 2


def test_a_step_fault_of_a_type_that_needs_more_than_a_message_is_refused_when_made() -> None:
    # Made from a message as it fired, it failed the step with "TypeError: __init__()
    # missing 1 required positional argument": a test of PaymentDeclined saw a TypeError.
    class PaymentDeclined(Exception):
        def __init__(self, code: int, reason: str) -> None:
            super().__init__(f"{code}: {reason}")

    with Harness() as harness:
        harness.register(_three_steps())
        with pytest.raises(TypeError, match=r"PaymentDeclined cannot be made from a message"):
            harness.fail_step("a", PaymentDeclined)
        harness.fail_step("a", PaymentDeclined(402, "card declined"))
        failed = harness.workflow("three").create_run().start(input_data={"n": 0})

    assert failed.status == "failed"
    assert (failed.error.name, failed.error.message) == ("PaymentDeclined", "402: card declined")


def test_a_step_fault_can_be_limited_to_one_run() -> None:
    workflow = _three_steps()
    with Harness() as harness:
        bound = harness.register(workflow)
        doomed = bound.create_run()
        harness.fail_step("b", ValueError("only here"), run_id=doomed.run_id)
        failed = doomed.start(input_data={"n": 0})
        fine = bound.create_run().start(input_data={"n": 0})

    assert failed.status == "failed" and failed.error is not None
    assert failed.error.name == "ValueError" and failed.error.message == "only here"
    assert fine.status == "success"


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_step_fault_fails_an_attempt_once_in_a_run_not_again_after_a_restart(
    store: str,
) -> None:
    # The restarted step counts its attempts from 1 again, and the fault failed its first
    # attempt again: a fault meant to fire once fired at every restart.
    calls: list[str] = []

    def body(ctx: StepContext[N]) -> N:
        calls.append(ctx.run_id)
        return N(n=ctx.input_data.n + 1)

    once = create_step(id="once", input_schema=N, output_schema=N, execute=body)
    workflow = create_workflow(id="restarted", input_schema=N, output_schema=N).then(once)
    with Harness(store=store) as harness:
        bound = harness.register(workflow.commit())
        harness.fail_step(once, ValueError("the first attempt"), attempt=1)
        run = bound.create_run()
        assert run.start(input_data={"n": 0}, timeout=BLOCK_LIMIT).status == "failed"
        run.restart()
        restarted = run.wait(BLOCK_LIMIT)

        # Every run has its own first attempt; a fault given again fails it again.
        other = bound.create_run()
        assert other.start(input_data={"n": 5}, timeout=BLOCK_LIMIT).status == "failed"
        harness.fail_step(once, ValueError("given again"), attempt=1)
        other.restart()
        again = other.wait(BLOCK_LIMIT)
        other.restart()
        last = other.wait(BLOCK_LIMIT)

    assert restarted.status == "success", restarted.error
    assert restarted.result == {"n": 1}
    assert again.status == "failed" and again.error is not None
    assert again.error.message == "given again"
    assert last.status == "success" and last.result == {"n": 6}
    assert calls == [run.run_id, other.run_id]


def test_a_step_fault_does_not_fail_a_resumed_step_again() -> None:
    # The resumed step's call counts from attempt 1 again: the fault failed it again.
    attempts: list[Any] = []

    def body(ctx: StepContext[N]) -> N:
        attempts.append(ctx.resume_data)
        if ctx.resume_data is None:
            ctx.suspend({"why": "approval"})
        return N(n=ctx.input_data.n + ctx.resume_data["add"])

    approve = create_step(id="approve", input_schema=N, output_schema=N, execute=body, retries=1)
    workflow = create_workflow(id="approved", input_schema=N, output_schema=N).then(approve)
    with Harness() as harness:
        harness.fail_step(approve, ConnectionError("once"), attempt=1)
        run = harness.register(workflow.commit()).create_run()
        assert run.start(input_data={"n": 0}, timeout=BLOCK_LIMIT).status == "suspended"
        result = run.resume(resume_data={"add": 2}, timeout=BLOCK_LIMIT)

    assert result.status == "success" and result.result == {"n": 2}
    assert attempts == [None, {"add": 2}]  # its second attempt suspended, its resume ran
    assert result.steps["approve"].attempts == 1  # the resumed call, not failed again


def test_a_step_fault_fails_a_loops_step_on_its_first_iteration_only() -> None:
    # Each iteration's call counts its attempts from 1: every iteration was failed once.
    counted = _step("counted", retries=1)
    workflow = create_workflow(id="loop", input_schema=N, output_schema=N)
    workflow = workflow.dountil(counted, lambda ctx: ctx.input_data.n >= 3).commit()
    with Harness() as harness:
        harness.fail_step(counted, ConnectionError("the first attempt"), attempt=1)
        result = harness.register(workflow).create_run().start(input_data={"n": 0})
        retries = [
            event
            for event in harness.trace.of(result.run_id)
            if event.message == "TimerFired"  # a retry's back-off ending
        ]

    assert result.status == "success" and result.result == {"n": 3}
    assert result.steps["counted"].iterations == 3
    assert len(retries) == 1  # the first iteration's, alone


def test_each_foreach_item_counts_its_own_attempts_for_a_step_fault() -> None:
    flaky = _step("flaky", retries=1)
    workflow = (
        create_workflow(id="items", input_schema=N, output_schema=N)
        .map(lambda ctx: [{"n": n} for n in range(3)])
        .foreach(flaky, concurrency=3)
        .map(lambda ctx: {"n": sum(item["n"] for item in ctx.input_data)})
        .commit()
    )
    with Harness() as harness:
        harness.fail_step(flaky, ConnectionError("each item's first"), attempt=1)
        result = harness.register(workflow).create_run().start(input_data={"n": 0})

    assert result.status == "success" and result.result == {"n": 6}
    assert result.steps["flaky"].attempts == 4  # a foreach step counts its items' retries


def test_clear_faults_takes_back_the_faults_given_and_keeps_the_overrides() -> None:
    workflow = _three_steps()
    with Harness() as harness:
        bound = harness.register(workflow)
        harness.override("c", lambda ctx: N(n=100))
        harness.fail_step("a", ValueError("taken back"))
        harness.crash_run(at="StepFinished", step="b")
        harness.fail_step("nowhere", ValueError)  # taken back too: the close names it not
        harness.clear_faults()
        result = bound.create_run().start(input_data={"n": 0}, timeout=BLOCK_LIMIT)
        harness.fail_step("a", ValueError("given after"))
        failed = bound.create_run().start(input_data={"n": 0}, timeout=BLOCK_LIMIT)

    assert result.status == "success" and result.result == {"n": 100}
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.message == "given after"


def test_a_crashed_run_actor_becomes_a_failed_run_with_run_crashed_error() -> None:
    with Harness() as harness:
        bound = harness.register(_three_steps())
        harness.crash_run(at="StepFinished", step="b")
        crashed = bound.create_run().start(input_data={"n": 0}, timeout=10)
        after = bound.create_run().start(input_data={"n": 0}, timeout=10)

    assert crashed.status == "failed"
    assert crashed.error is not None and crashed.error.name == "RunCrashedError"
    assert InjectedCrashError.__name__ in crashed.error.message
    assert crashed.steps["a"].status == "success"
    assert after.status == "success"  # the crash happens once


def _runtime_in_another_process(db: Path) -> subprocess.Popen[str]:
    """A process whose runtime has joined ``db`` (it has said so), until its stdin closes."""
    script = (
        "import sys\n"
        "from runtime import Runtime\n"
        "with Runtime(store=sys.argv[1]):\n"
        "    print('joined', flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    other = subprocess.Popen(
        [sys.executable, "-c", script, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert other.stdout is not None and other.stdout.readline() == "joined\n"
    return other


def _end(other: subprocess.Popen[str]) -> None:
    assert other.stdin is not None and other.stdout is not None
    other.stdin.close()
    other.wait(BLOCK_LIMIT)
    other.stdout.close()


def test_a_time_skipping_harness_refuses_a_file_another_live_process_uses(
    tmp_path: Path,
) -> None:
    # Its clock jumped past the other process's leases, and it ran that one's runs again
    # (and the other this one's): pytest-xdist's workers given one path, every test passing.
    db = tmp_path / "runs.db"
    other = _runtime_in_another_process(db)
    try:
        refused = rf"in use by 1 other process\(es\) \(.+:{other.pid}\)"
        with pytest.raises(RuntimeError, match=refused), Harness(store=db):
            pass
        with Harness(store=db, time_skipping=False) as harness:  # its clock moves when told
            assert harness.register(_three_steps()).create_run().start(input_data={"n": 0})
    finally:
        _end(other)
    with Harness(store=db) as harness:  # stopped: its row is gone
        result = harness.register(_three_steps()).create_run().start(input_data={"n": 0})
    assert result.status == "success"


def test_a_process_that_joins_a_time_skipping_harness_s_file_after_it_opened_fails_the_close(
    tmp_path: Path,
) -> None:
    # Opening found no other process; one that joined later had its leases lapse at the
    # clock's next jump (a day's sleep), and the test passed all the same.
    db = tmp_path / "runs.db"
    sleeper = (
        create_workflow(id="sleeper", input_schema=N, output_schema=N)
        .sleep(DAY)
        .then(_step("a"))
        .commit()
    )
    harness = Harness(store=db)
    other: subprocess.Popen[str] | None = None
    try:
        with pytest.raises(AssertionError) as closed, harness:
            bound = harness.register(sleeper)
            other = _runtime_in_another_process(db)
            result = bound.create_run().start(input_data={"n": 0}, timeout=10)
            assert result.status == "success"
    finally:
        if other is not None:
            _end(other)
    said = str(closed.value)
    assert f":{other.pid}) used the store {db} while this harness skipped time" in said
    assert "time_skipping=False" in said
    # Without another process, the same test closes quietly.
    with Harness(store=db) as harness:
        result = harness.register(sleeper).create_run().start(input_data={"n": 0}, timeout=10)
    assert result.status == "success"


@pytest.mark.parametrize("registered", ["with the harness", "on its runtime"])
def test_crash_and_recover_runs_completed_steps_once_and_the_interrupted_step_again(
    tmp_path: Path, registered: str
) -> None:
    calls = {"a": 0, "b": 0, "c": 0}
    entered = threading.Event()
    gate = threading.Event()

    def counting(step_id: str) -> Any:
        def body(ctx: StepContext[N]) -> N:
            calls[step_id] += 1
            if step_id == "b" and calls["b"] == 1:
                entered.set()
                gate.wait(BLOCK_LIMIT)  # the crash comes while it runs
            return N(n=ctx.input_data.n + 1)

        return create_step(id=step_id, input_schema=N, output_schema=N, execute=body)

    workflow = (
        create_workflow(id="recovered", input_schema=N, output_schema=N)
        .then(counting("a"))
        .then(counting("b"))
        .then(counting("c"))
        .commit()
    )
    with Harness(store=tmp_path / "runs.db") as harness:
        # As the callboard_runtime fixture invites: the new runtime has it too. It had
        # not: harness.workflow() raised a bare KeyError and the run was never recovered.
        register = harness.register if registered == "with the harness" else None
        run = (register or harness.runtime.register)(workflow).create_run()
        run.start_async(input_data={"n": 0})
        assert entered.wait(BLOCK_LIMIT)
        old = harness.runtime

        new = harness.crash_and_recover()
        gate.set()  # the interrupted call returns now, to a runtime that is gone
        result = harness.workflow("recovered").create_run(run_id=run.run_id).wait(BLOCK_LIMIT)

    assert new is not old and not old.is_running
    assert result.status == "success" and result.result == {"n": 3}
    assert calls == {"a": 1, "b": 2, "c": 1}
    # The crashed runtime's actors are gone too: none is left on its dispatcher's list.
    assert old._host.system is not None
    assert old._host.system.dispatcher.actors(RunActor) == []


def test_a_lost_step_reply_looks_like_a_step_that_never_returns_and_times_out() -> None:
    guarded = _step("guarded", timeout=60, retries=1)
    workflow = create_workflow(id="lossy", input_schema=N, output_schema=N).then(guarded).commit()
    with Harness() as harness:
        harness.drop_message("StepFinished", step="guarded")
        start = harness.clock.now()
        result = harness.register(workflow).create_run().start(input_data={"n": 0}, timeout=10)
        elapsed = harness.clock.now() - start

    assert result.status == "success"
    assert result.steps["guarded"].attempts == 2
    assert elapsed >= 60


def test_a_delayed_step_reply_arrives_late_in_virtual_time() -> None:
    guarded = _step("guarded", timeout=60)
    workflow = create_workflow(id="late", input_schema=N, output_schema=N).then(guarded).commit()
    with Harness() as harness:
        bound = harness.register(workflow)
        harness.delay_message("StepFinished", 30, step="guarded")
        start = harness.clock.now()
        in_time = bound.create_run().start(input_data={"n": 0}, timeout=10)
        elapsed = harness.clock.now() - start
        harness.delay_message("StepFinished", 90, step="guarded")
        too_late = bound.create_run().start(input_data={"n": 0}, timeout=10)

    assert in_time.status == "success" and elapsed == pytest.approx(30, abs=1)
    assert too_late.status == "failed"
    assert too_late.error is not None and too_late.error.name == "StepTimeoutError"


@pytest.mark.parametrize("fault", ["drop", "delay"])
def test_a_lost_or_held_step_call_does_not_keep_the_clock_at_real_time(fault: str) -> None:
    # The call counted as a step executing until its reply came, which never came (or came
    # late): time skipping kept pace with the real clock meanwhile, for every run. An hour's
    # sleep of another run then took an hour.
    guarded = _step("guarded", timeout=3600)
    lossy = create_workflow(id="lossy", input_schema=N, output_schema=N).then(guarded).commit()
    napper = create_workflow(id="napper", input_schema=N, output_schema=N).sleep(3600)
    with Harness() as harness:
        if fault == "drop":
            harness.drop_message("CallStep", step="guarded")
        else:
            harness.delay_message("CallStep", 1800, step="guarded")
        lost = harness.register(lossy).create_run()
        lost.start_async(input_data={"n": 0})
        began = time.monotonic()
        napped = harness.register(napper.then(_step("a")).commit()).create_run()
        result = napped.start(input_data={"n": 0}, timeout=30)
        took = time.monotonic() - began
        ended = lost.wait(timeout=30)

    assert result.status == "success" and took < 30  # virtual: not the hour it sleeps
    # Dropped, the call's timeout fails it; held 30 minutes, it runs then and succeeds.
    assert ended.status == ("failed" if fault == "drop" else "success")


def test_a_step_call_lost_after_it_waited_for_a_thread_still_times_out() -> None:
    # Its timeout counted from the body's start, which never came: re-armed for ever, the
    # run never ended and the virtual clock raced on.
    def holds_the_thread(ctx: StepContext[N]) -> N:
        time.sleep(0.3)  # real time: the only step thread is taken meanwhile
        return ctx.input_data

    lost = _step("lost", timeout=5)
    both = (
        create_workflow(id="both", input_schema=N, output_schema=BaseModel)
        .parallel(
            [
                create_step(id="busy", input_schema=N, output_schema=N, execute=holds_the_thread),
                lost,
            ]
        )
        .commit()
    )
    with Harness(max_step_threads=1) as harness:
        harness.drop_message("CallStep", step="lost")
        result = harness.register(both).create_run().start(input_data={"n": 0}, timeout=30)
    assert result.status == "failed"
    assert result.error is not None and result.error.name == "StepTimeoutError"


def test_a_fault_names_a_nested_step_by_its_path_in_its_reply_too() -> None:
    child = create_workflow(id="child", input_schema=N, output_schema=N).then(_step("lookup"))
    nested = create_workflow(id="nested", input_schema=N, output_schema=N)
    workflow = nested.then(child.commit()).commit()
    with Harness() as harness:
        bound = harness.register(workflow)
        harness.crash_run(at="StepFinished", step="child.lookup")
        crashed = bound.create_run().start(input_data={"n": 0}, timeout=10)
        fine = bound.create_run().start(input_data={"n": 0}, timeout=10)
        # The trace names the reply as the call: by the step's path.
        harness.trace.expect_in_order("CallStep:child.lookup", "StepFinished:child.lookup")

    assert crashed.status == "failed" and "InjectedCrashError" in str(crashed.error)
    assert fine.status == "success"


@pytest.mark.parametrize("fault", ["crash", "drop", "delay"])
@pytest.mark.parametrize("by", ["step", "id"])
def test_a_message_fault_names_a_nested_step_by_its_id_too(fault: str, by: str) -> None:
    # Only the path matched: a fault naming child.lookup by its id (or the step itself)
    # never fired, and the test passed without it.
    lookup = _step("lookup", timeout=60)
    child = create_workflow(id="child", input_schema=N, output_schema=N).then(lookup)
    nested = create_workflow(id="nested", input_schema=N, output_schema=N)
    workflow = nested.then(child.commit()).commit()
    name: Any = lookup if by == "step" else "lookup"
    with Harness() as harness:
        bound = harness.register(workflow)
        if fault == "crash":
            harness.crash_run(at="StepFinished", step=name)
        elif fault == "drop":
            harness.drop_message("CallStep", step=name)
        else:
            harness.delay_message("StepFinished", 3600, step=name)
        began = harness.clock.now()
        result = bound.create_run().start(input_data={"n": 0}, timeout=BLOCK_LIMIT)
        took = harness.clock.now() - began

    if fault == "crash":
        assert result.status == "failed" and "InjectedCrashError" in str(result.error)
    elif fault == "drop":  # the call never came: its timeout failed it
        assert result.status == "failed"
        assert result.error is not None and result.error.name == "StepTimeoutError"
    else:  # the reply came an hour late: past its timeout
        assert took >= 60 and result.status == "failed"


def test_a_fault_on_a_message_that_names_no_step_cannot_be_given_one() -> None:
    with Harness() as harness, pytest.raises(ValueError, match="a TimerFired names no step"):
        harness.crash_run(at="TimerFired", step="a")


@pytest.mark.parametrize(
    ("at", "step", "receiver"),
    [
        ("StartRun", None, "Supervisor"),
        ("CallStep", "a", "StepActor"),
        ("WakeRun", None, "Supervisor"),
        ("RunEnded", None, "Supervisor"),
        ("WatchRun", None, "Registry"),
    ],
)
def test_a_crash_at_a_message_no_run_actor_receives_is_refused(
    at: str, step: str | None, receiver: str
) -> None:
    # Taken: a run actor never receives one, so the crash never came and the test passed.
    with Harness() as harness:
        harness.register(_three_steps())
        with pytest.raises(ValueError, match=f"a run actor never receives a {at} .*{receiver}"):
            harness.crash_run(at=at, step=step)


def test_every_message_of_the_protocol_may_be_faulted_and_is_traced_from_its_sender() -> None:
    # UnwatchRun, UnsubscribeRun and StepWrote (the registry's) were refused as no
    # message at all, and traced from "?".
    from actors import messages
    from runtime import testing

    protocol = {
        kind.__name__
        for union in (
            messages.SupervisorMessage,
            messages.RegistryMessage,
            messages.RunActorMessage,
            messages.StepActorMessage,
        )
        for kind in typing.get_args(union)
    }
    assert protocol - testing._HANDED_ON <= set(testing._SENDERS)  # told by receiver
    with Harness(store="sqlite") as harness:  # a durable store's: its commits' messages too
        for name in sorted(protocol):
            harness.drop_message(name, occurrence=10**9)  # taken: never reached
        for name in ("StepFinished", "SnapshotCommitted", "TimerFired", "StartHookCalled"):
            harness.crash_run(at=name, occurrence=10**9)
        harness.clear_faults()  # taken back: a fault at a commit never met fails the close


def test_sleeping_runs_wake_in_the_order_of_their_wake_times() -> None:
    woke: list[int] = []

    def note(ctx: StepContext[N]) -> N:
        woke.append(ctx.input_data.n)
        return ctx.input_data

    workflow = (
        create_workflow(id="ordered", input_schema=N, output_schema=N)
        .sleep(lambda ctx: ctx.input_data["n"] * 3600)
        .then(create_step(id="note", input_schema=N, output_schema=N, execute=note))
        .commit()
    )
    order = [5, 1, 4, 2, 3, 9, 7, 8, 6]
    with Harness() as harness:
        bound = harness.register(workflow)
        runs = [bound.create_run() for _ in order]
        for run, n in zip(runs, order, strict=True):
            run.start_async(input_data={"n": n})
        results = [run.wait(timeout=10) for run in runs]

    assert all(result.status == "success" for result in results)
    assert woke == sorted(order)


def _crash_mid_step_and_recover(store: Any) -> tuple[Any, dict[str, int]]:
    calls = {"a": 0, "b": 0}
    entered = threading.Event()
    gate = threading.Event()

    def counting(step_id: str) -> Any:
        def body(ctx: StepContext[N]) -> N:
            calls[step_id] += 1
            if step_id == "b" and calls["b"] == 1:
                entered.set()
                gate.wait(BLOCK_LIMIT)
            return N(n=ctx.input_data.n + 1)

        return create_step(id=step_id, input_schema=N, output_schema=N, execute=body)

    workflow = (
        create_workflow(id="recovered-pg", input_schema=N, output_schema=N)
        .then(counting("a"))
        .then(counting("b"))
        .commit()
    )
    with Harness(store=store) as harness:
        run = harness.register(workflow).create_run()
        run.start_async(input_data={"n": 0})
        assert entered.wait(BLOCK_LIMIT)
        harness.crash_and_recover()
        gate.set()
        result = harness.workflow(workflow.id).create_run(run_id=run.run_id).wait(BLOCK_LIMIT)
    return result, calls


def test_crash_and_recover_on_postgresql(postgres_server: Any) -> None:
    url = postgres_server.new_database()
    try:
        result, calls = _crash_mid_step_and_recover(url)
    finally:
        postgres_server.drop_database(url)

    assert result.status == "success" and result.result == {"n": 2}
    assert calls == {"a": 1, "b": 2}


def test_a_crash_after_awaitable_calls_leaves_no_call_thread_behind(tmp_path: Path) -> None:
    """The crashed runtime's call threads (``astart``'s) end: the close finds none left."""
    workflow = _three_steps("crash-calls")

    async def first(harness: Harness) -> str:
        run = await harness.register(workflow).create_run().astart(input_data={"n": 1}, timeout=10)
        return run.status

    # The close raised AssertionError naming callboard-call-0 before the crash ended them.
    with Harness(store=str(tmp_path / "calls.db")) as harness:
        assert asyncio.run(first(harness)) == "success"
        harness.crash_and_recover()
        after = harness.workflow("crash-calls").create_run().start(input_data={"n": 2})
        assert after.status == "success" and after.result == {"n": 5}


def test_crash_and_recover_needs_a_durable_store() -> None:
    with Harness() as harness, pytest.raises(ValueError, match="durable"):
        harness.crash_and_recover()


# --- overrides --------------------------------------------------------------------------


def test_an_override_replaces_a_step_body_in_the_harness_only() -> None:
    fetch = _step("fetch")
    workflow = create_workflow(id="stubbed", input_schema=N, output_schema=N).then(fetch).commit()
    with Harness() as harness:
        harness.override(fetch, lambda ctx: N(n=ctx.input_data.n * 100))
        stubbed = harness.register(workflow).create_run().start(input_data={"n": 2})

    with Runtime() as rt:
        real = rt.register(workflow).create_run().start(input_data={"n": 2})

    assert stubbed.result == {"n": 200}
    assert real.result == {"n": 3}


def test_an_override_keeps_the_steps_schemas() -> None:
    fetch = _step("fetch")
    workflow = create_workflow(id="checked", input_schema=N, output_schema=N).then(fetch).commit()
    with Harness() as harness:
        harness.override("fetch", lambda ctx: {"n": "not a number"})
        bound = harness.register(workflow)
        result = bound.create_run().start(input_data={"n": 2})

    assert result.status == "failed"
    assert result.error is not None and result.error.name == "StepValidationError"


def test_an_async_override_is_awaited() -> None:
    async def stub(ctx: StepContext[N]) -> N:
        await asyncio.sleep(0)
        return N(n=-1)

    workflow = _three_steps()
    with Harness() as harness:
        harness.override("b", stub)
        result = harness.register(workflow).create_run().start(input_data={"n": 0})

    assert result.result == {"n": 0}


# --- the harness itself -----------------------------------------------------------------


def test_a_workflow_not_registered_with_the_harness_is_refused_not_run_on_the_default() -> None:
    # It started the process's default runtime, whose first sleep waited for ever on the
    # harness's clock; without a sleep, the harness's close failed on its threads.
    from runtime import UnboundWorkflowError
    from runtime._runtime import default_runtime

    sleepy = create_workflow(id="forgotten", input_schema=N, output_schema=N).sleep(3600).commit()
    with Harness():
        with pytest.raises(UnboundWorkflowError, match=r"harness\.register\(\)"):
            sleepy.create_run().start(input_data={"n": 1}, timeout=5)
        assert sleepy.list_workflow_runs().total == 0  # a query starts no runtime: it may ask
    assert default_runtime(start=False) is None or not default_runtime(start=False).is_running


def test_only_one_harness_is_open_at_a_time() -> None:
    with Harness(), pytest.raises(RuntimeError, match="another Harness") as refused:
        Harness().start()
    # Where the open one was opened: a test that left one open fails the ones after it.
    assert f"{__file__}:" in str(refused.value)
    with Harness() as harness, pytest.raises(RuntimeError, match="open already"):
        harness.start()
    with pytest.raises(RuntimeError, match="not open"):
        _ = harness.runtime  # it was the stopped runtime


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda h: h.fail_step("a", "oops"), TypeError, "an exception or its type"),
        (lambda h: h.fail_step("a", ValueError, attempt=0), ValueError, "counted from 1"),
        (lambda h: h.fail_step("a", ValueError, attempt=[]), ValueError, "counted from 1"),
        (lambda h: h.crash_run(at="StepFinishd"), ValueError, "no message 'StepFinishd'"),
        (lambda h: h.drop_message("CallStep", occurrence=0), ValueError, "counted from 1"),
        (lambda h: h.delay_message("StepFinished", -5), ValueError, "finite"),
        (lambda h: h.delay_message("StepFinished", float("inf")), ValueError, "finite"),
        (lambda h: h.override("a", 42), TypeError, "callable"),
        (lambda h: h.override(_three_steps(), _inc), TypeError, "name the steps of a nested"),
        (lambda h: h.fail_step(_three_steps(), ValueError), TypeError, "paths ('three."),
        (lambda h: h.drop_message("CallStep", step=3), TypeError, "got int"),
    ],
)
def test_a_fault_or_override_that_could_never_work_is_refused_when_it_is_made(
    make: Any, error: type[Exception], words: str
) -> None:
    # Each was taken and never fired (a typo), or fired wrongly (a string raised as a
    # TypeError inside the step, then retried), or spun the clock to infinity.
    with Harness() as harness, pytest.raises(error, match=re.escape(words)):
        make(harness)


@pytest.mark.parametrize(
    "make",
    [
        lambda h: h.override("bb", _inc),
        lambda h: h.fail_step("b.a", ValueError),
        lambda h: h.crash_run(step="three.b"),
        lambda h: h.delay_message("StepFinished", 1, step="c "),
    ],
)
def test_a_harness_closing_names_an_override_or_fault_for_a_step_no_workflow_has(
    make: Any,
) -> None:
    # A misspelt step was taken and never applied: the test passed without its fault.
    harness = Harness().start()
    try:
        harness.register(_three_steps())
        make(harness)
        result = harness.workflow("three").create_run().start(input_data={"n": 0}, timeout=5)
        assert result.status == "success"
    finally:
        with pytest.raises(AssertionError, match=r"no registered workflow has: \[") as said:
            harness.close()
    assert "'a', 'b', 'c'" in str(said.value)  # the steps it does know


@pytest.mark.parametrize(
    "make",
    [
        lambda h: h.delay_message("CallMap", 3600, step="shape"),
        lambda h: h.delay_message("StepFinished", 3600, step="child.shape"),
        lambda h: h.delay_message("CallConditions", 3600, step="branch-4"),
        lambda h: h.delay_message("CallSleepLength", 3600, step="child.nap"),
    ],
)
def test_a_message_fault_may_name_a_map_branch_or_computed_sleep_node(make: Any) -> None:
    # Fired, by the node's path or id, and then the close said no workflow had it.
    child = (
        create_workflow(id="child", input_schema=N, output_schema=N)
        .then(_step("a"))
        .map(lambda ctx: {"n": 5}, id="shape")
        .sleep(lambda ctx: 1, id="nap")
        .branch([(lambda ctx: True, _step("b"))])
        .map(lambda ctx: ctx.get_step_result("child.b"))
        .commit()
    )
    workflow = create_workflow(id="nodes", input_schema=N, output_schema=N).then(child)
    with Harness() as harness:
        bound = harness.register(workflow.commit())
        make(harness)
        began = harness.clock.now()
        result = bound.create_run().start(input_data={"n": 0}, timeout=BLOCK_LIMIT)
        assert result.status == "success" and harness.clock.now() - began >= 3600  # it fired


def test_an_override_or_step_fault_naming_a_node_is_named_at_close() -> None:
    workflow = (
        create_workflow(id="mapped", input_schema=N, output_schema=N)
        .then(_step("a"))
        .map(lambda ctx: {"n": 5}, id="shape")
        .commit()
    )
    harness = Harness().start()
    try:
        harness.register(workflow)
        harness.override("shape", _inc)  # a map's function is no step's body
    finally:
        with pytest.raises(AssertionError, match=r"has: \['shape'\]") as said:
            harness.close()
    assert "may name (map, branch, computed sleep) are ['shape']" in str(said.value)


def _nesting() -> Any:
    return (
        create_workflow(id="outer", input_schema=N, output_schema=N)
        .then(_three_steps("inner"))
        .then(_step("after"))
        .commit()
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda h: h.override("inner", _inc),
        lambda h: h.fail_step("inner", ValueError),
        lambda h: h.crash_run(step="inner"),
        lambda h: h.drop_message("StepFinished", step="inner"),
    ],
)
def test_a_nested_workflows_id_given_as_a_step_is_refused_when_registered_and_named_at_close(
    make: Any,
) -> None:
    # Given the workflow object it was refused; given its id it was taken, never fired,
    # and the close said no registered workflow had 'inner' (the outer one does).
    with Harness() as harness:
        harness.register(_nesting())
        with pytest.raises(TypeError, match=r"'inner' names a nested workflow, not a step"):
            make(harness)
    harness = Harness()
    make(harness)  # before anything is registered it cannot be told apart...
    harness.start()
    try:
        harness.register(_nesting())
    finally:
        with pytest.raises(AssertionError, match=r"\['inner'\] name nested workflows") as said:
            harness.close()  # ...and the close says what it was
    assert "'inner.<step id>'" in str(said.value)


def test_the_on_start_hooks_reply_is_traced_from_the_hooks_and_may_be_crashed_at() -> None:
    # It was traced from "?", and a fault at it was refused as no message an actor handles.
    hooked = (
        create_workflow(id="hooked", input_schema=N, output_schema=N, on_start=lambda o: None)
        .then(_step("a"))
        .commit()
    )
    with Harness() as harness:
        run = harness.register(hooked).create_run()
        harness.crash_run(at="StartHookCalled", run_id=run.run_id)
        result = run.start(input_data={"n": 0}, timeout=5)
        assert result.status == "failed"
        assert result.error is not None and "InjectedCrashError" in result.error.message
        told = [e for e in harness.trace.of(run.run_id) if e.message == "StartHookCalled"]
        assert [(e.sender, e.receiver) for e in told] == [("Hooks", "RunActor")]


def test_faults_for_known_steps_that_never_fired_and_a_failing_test_close_quietly() -> None:
    with Harness() as harness:
        harness.register(_three_steps())
        harness.fail_step("b", ValueError, attempt=3)  # b never gets a third attempt
        harness.crash_run(step="c", occurrence=2)
        harness.workflow("three").create_run().start(input_data={"n": 0}, timeout=5)
    # A test failing already is not told of a misspelt step on top of its own failure.
    with pytest.raises(KeyError), Harness() as harness:
        harness.override("nowhere", _inc)
        raise KeyError("the test's own failure")


def test_a_test_failing_while_a_step_runs_keeps_its_own_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The close's "threads of callboard left" replaced it, the test's error its context.
    monkeypatch.setattr(testing, "THREADS_PATIENCE", 0.5)  # the step stays: no need to wait long
    release = threading.Event()

    def waits(ctx: StepContext[N]) -> N:
        release.wait(BLOCK_LIMIT)  # what the failing test would have released
        return ctx.input_data

    workflow = create_workflow(id="held", input_schema=N, output_schema=N).then(
        create_step(id="waits", input_schema=N, output_schema=N, execute=waits)
    )
    try:
        with (
            pytest.raises(ValueError, match="the test's own failure") as raised,
            Harness(stop_timeout=0.1) as harness,
        ):
            harness.register(workflow.commit()).create_run().start_async(input_data={"n": 0})
            raise ValueError("the test's own failure")
    finally:
        release.set()

    # The last: before it, the run not ended may be told (once the supervisor took it).
    note = raised.value.__notes__[-1]
    assert re.fullmatch(
        r"\(and threads of callboard left .*: \['StepActor-\d+'\] \(a step is still executing "
        r"its body, .*: release what it waits for before the harness closes .*\)\)",
        note,
    )


def test_a_runtime_the_test_left_running_fails_the_close_saying_to_stop_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The close named the threads alone ('callboard-dispatch-0', 'RegistryActor-1', ...):
    # a runtime the test forgot to stop read like a step stuck in user code.
    monkeypatch.setattr(testing, "THREADS_PATIENCE", 0.5)  # they stay: no need to wait long
    left = Runtime()
    try:
        with pytest.raises(AssertionError) as raised, Harness():
            left.start()
    finally:
        left.stop(timeout=5)

    said = str(raised.value)
    assert said.startswith("threads of callboard left after the harness closed: [")
    assert said.endswith(
        "(a Runtime started while the harness was open is still running: stop it "
        "(runtime.stop(), or `with Runtime() as runtime:`), or use harness.runtime)"
    )


def test_a_test_failing_in_a_harness_is_told_the_errors_of_the_runs_that_failed() -> None:
    # It read "assert 'failed' == 'success'" alone: the step's own error was out of sight.
    def check(ctx: StepContext[N]) -> N:
        assert ctx.input_data.n == 2, "the order is wrong"
        return ctx.input_data

    checked = (
        create_workflow(id="checked", input_schema=N, output_schema=N)
        .then(create_step(id="check", input_schema=N, output_schema=N, execute=check))
        .commit()
    )
    with pytest.raises(AssertionError) as failed, Harness() as harness:
        bound = harness.register(checked)
        results = [bound.create_run().start(input_data={"n": n}) for n in (0, 1, 2, 3, 4, 5)]
        assert all(result.status == "success" for result in results)

    note = "\n".join(failed.value.__notes__)
    assert note.startswith("5 run(s) of the harness failed (the first 3 shown):\n")
    assert note.count("of workflow 'checked' failed at step 'check': AssertionError") == 3
    assert f"run {results[0].run_id} " in note and f"run {results[5].run_id} " not in note
    assert 'assert ctx.input_data.n == 2, "the order is wrong"' in note  # the step's line


def test_a_test_failing_in_a_harness_is_told_what_its_runs_not_ended_wait_for() -> None:
    # Without time skipping, a run asleep on the standing clock ended the test's wait in
    # RunTimeoutError ("did not end within 0.2 seconds; it goes on"), with no word of it.
    asleep = (
        create_workflow(id="asleep", input_schema=N, output_schema=N)
        .sleep(3600)
        .then(_step("a"))
        .commit()
    )
    with pytest.raises(RunTimeoutError) as raised, Harness(time_skipping=False) as harness:
        harness.register(asleep).create_run().start(input_data={"n": 0}, timeout=0.2)

    [note] = raised.value.__notes__
    assert re.fullmatch(
        r"1 run\(s\) of the harness not ended:\nrun \S+ of workflow 'asleep' waits until "
        r"\S+ \S+ \(36\d\d(\.\d+)? s ahead of the clock, and this harness's clock moves only "
        r"when the test calls harness.clock.advance\(seconds\)\)",
        note,
    )


def test_time_skipping_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="True or False"):
        Harness(time_skipping="no")  # type: ignore[arg-type]


def test_a_harness_is_an_async_context_manager_too() -> None:
    async def main() -> str:
        async with Harness() as harness:
            run = harness.register(_three_steps()).create_run()
            run.start_async(input_data={"n": 0})
            result = await run.wait_async()
            return str(result.status)

    assert asyncio.run(main()) == "success"


def test_runtime_of_a_closed_harness_is_refused() -> None:
    harness = Harness()
    with pytest.raises(RuntimeError, match="not open"):
        _ = harness.runtime


def test_overrides_and_faults_given_to_a_closed_harness_are_refused_not_dropped() -> None:
    steps = _three_steps()
    with Harness() as harness:
        harness.register(steps)
    given = [
        lambda: harness.override("a", lambda ctx: {"n": 0}),
        lambda: harness.fail_step("a", ValueError),
        harness.crash_run,
        lambda: harness.drop_message("StepFinished"),
        lambda: harness.delay_message("StepFinished", 1.0),
    ]
    for give in given:
        with pytest.raises(RuntimeError, match="Harness is closed"):
            give()

    # Before it opens, they are taken (and apply once it is open).
    later = Harness()
    later.override("a", lambda ctx: {"n": 41})
    with later:
        result = later.register(steps).create_run().start(input_data={"n": 0})
    assert result.status == "success"
    assert result.result == {"n": 43}


def test_a_harness_opened_again_starts_clean() -> None:
    # One harness opened by each test of a module: the second test failed with the
    # first's fault and override, and its trace and clock went on from the first's.
    steps = _three_steps()
    harness = Harness()
    with harness:
        harness.override("a", lambda ctx: N(n=-1))
        harness.fail_step("b", ValueError("the first test's fault"))
        harness.crash_run(at="StepFinished", step="c")
        harness.drop_message("CallStep", step="c")
        first = harness.register(steps).create_run().start(input_data={"n": 0}, timeout=5)
        harness.clock.advance(DAY)
        ahead = harness.clock.now()
    assert first.status == "failed"

    with harness:
        assert harness.clock.now() < ahead  # a new clock, from the wall clock's now
        # The workflows registered before are registered again.
        second = harness.workflow("three").create_run().start(input_data={"n": 0}, timeout=5)
        runs = {event.run_id for event in harness.trace if event.run_id is not None}

    assert second.status == "success" and second.result == {"n": 3}
    assert runs == {second.run_id}


def test_a_harness_given_a_store_object_opens_again_on_the_same_file(tmp_path: Path) -> None:
    # The first close closed the object with its runtime: the second opening's first start
    # failed with "the run store ... is closed".
    store = SQLiteStore(tmp_path / "runs.db", lease=3.0)
    harness = Harness(store=store)
    with harness:
        first = harness.register(_three_steps()).create_run().start(input_data={"n": 0})
    with harness:
        again = harness.runtime.store
        second = harness.workflow("three").create_run().start(input_data={"n": 1})
        listed = harness.workflow("three").list_workflow_runs().total

    assert (first.status, second.status, listed) == ("success", "success", 2)
    assert again is not store and (again.path, again.lease) == (store.path, 3.0)


def test_a_seed_makes_run_ids_and_trace_ids_repeat() -> None:
    def draw() -> tuple[str, str]:
        with Harness(seed=7) as harness:
            result = harness.register(_three_steps()).create_run().start(input_data={"n": 0})
        return result.run_id, result.trace_id or ""

    first, second = draw(), draw()

    assert first == second
    assert _ids.new_id() != first[0]  # unseeded again afterwards


def test_a_seed_makes_the_ids_of_concurrent_awaitable_starts_repeat() -> None:
    # astart_async validates and commits on a call thread, where the trace ids were
    # drawn, in whatever order the threads ran: the run ids repeated, the trace ids did
    # not (nor matched those of the same starts made with the sync API).
    async def draw() -> list[tuple[str, str]]:
        async with Harness(seed=7) as harness:
            wf = harness.register(_three_steps())
            runs = [wf.create_run() for _ in range(20)]
            results = await asyncio.gather(*(run.astart(input_data={"n": 0}) for run in runs))
        return [(result.run_id, result.trace_id or "") for result in results]

    def draw_sync() -> list[tuple[str, str]]:
        with Harness(seed=7) as harness:
            wf = harness.register(_three_steps())
            runs = [wf.create_run() for _ in range(20)]
            for run in runs:
                run.start_async(input_data={"n": 0})
            results = [run.wait(timeout=BLOCK_LIMIT) for run in runs]
        return [(result.run_id, result.trace_id or "") for result in results]

    first, second = asyncio.run(draw()), asyncio.run(draw())

    assert first == second
    assert draw_sync() == first


def test_seeded_harnesses_on_one_file_draw_run_ids_it_does_not_hold_and_repeat(
    tmp_path: Path,
) -> None:
    # Each drew the same first run id, which the first had taken: the second test's
    # start raised RunAlreadyStartedError. So did the first test of the next session.
    def session(folder: Path) -> list[tuple[str, str]]:
        folder.mkdir()
        drawn = []
        for _ in range(3):  # three tests giving the same path and seed
            with Harness(store=folder / "runs.db", seed=7) as harness:
                owner = harness.runtime.store.owner_id
                result = harness.register(_three_steps()).create_run().start(input_data={"n": 0})
                assert result.status == "success"
                drawn.append((result.run_id, owner))
        return drawn

    first, second = session(tmp_path / "one"), session(tmp_path / "two")

    assert len({run_id for run_id, _ in first}) == 3
    # Run to run, the same store contents draw the same ids; the store's owner ids are
    # never seeded (two seeded processes on one store would be one worker to it).
    assert [run_id for run_id, _ in second] == [run_id for run_id, _ in first]
    assert len({owner for _, owner in first + second}) == 6
    with Harness(store=tmp_path / "one" / "runs.db", seed=7) as harness:  # the next session
        again = harness.register(_three_steps()).create_run().start(input_data={"n": 0})
    assert again.status == "success" and again.run_id not in dict(first)


def test_the_private_names_the_harness_relies_on_exist(tmp_path: Path) -> None:
    with Harness() as harness:
        system = harness.runtime._host.system
        assert system is not None
        assert isinstance(system.dispatcher._ready.empty(), bool)
        assert all(isinstance(t, threading.Thread) for t in system.dispatcher._threads)
        assert system.dispatcher._work.__name__ == "_work"
        assert callable(system.timers.next_deadline) and callable(system.timers.wake)
        assert callable(system.kill)
        assert harness.runtime._scheduler is not None
    assert callable(_ids._getrandbits)
    assert callable(pykka.ThreadingActor._actor_loop_running)
    from actors.claimer import Claimer
    from runtime import PostgresStore

    assert "_wake_at" in Claimer.__init__.__code__.co_names
    assert "_deadline_at" in Claimer.__init__.__code__.co_names
    for store_class in (SQLiteStore, PostgresStore):
        assert "_writer" in store_class.__init__.__code__.co_names
        assert callable(getattr(store_class, "abandon", None))
    assert "_url" in PostgresStore.__init__.__code__.co_names
    for store_class in (SQLiteStore, PostgresStore):
        assert "_closed" in store_class.__init__.__code__.co_names
    with Harness(store=tmp_path / "runs.db") as harness:
        system = harness.runtime._host.system
        assert system is not None and system.claimer is not None
        assert isinstance(system.store._writer.busy(), bool)
        assert isinstance(system.claimer.idle(), bool)
        assert harness.runtime._scheduler is not None
        assert isinstance(harness.runtime._scheduler.idle(), bool)


# --- the pytest plugin ------------------------------------------------------------------


def test_the_pytest_plugin_gives_fixtures_once_turned_on(pytester: pytest.Pytester) -> None:
    # In this process (pytester runs pytest in-process): the plugin is loaded from its
    # pytest11 entry point as in any project's run, without two interpreters' start-up.
    pytester.makepyfile(
        test_flow="""
        import pytest
        from pydantic import BaseModel
        from runtime import create_step, create_workflow

        class N(BaseModel):
            n: int

        inc = create_step(id="inc", input_schema=N, output_schema=N,
                          execute=lambda ctx: N(n=ctx.input_data.n + 1))
        flow = (create_workflow(id="flow", input_schema=N, output_schema=N)
                .then(inc).sleep(3600).commit())

        def test_harness(callboard_harness, callboard_runtime):
            assert callboard_harness.runtime is callboard_runtime
            result = callboard_harness.register(flow).create_run().start(input_data={"n": 1})
            assert result.result == {"n": 2}

        @pytest.mark.callboard(time_skipping=False)
        def test_marker(callboard_harness):
            assert callboard_harness.time_skipping is False

        @pytest.mark.callboard(time_skipping=False, stop_timeout=2.0)
        class TestMarkersAddUp:
            @pytest.mark.callboard(stop_timeout=1.0)
            def test_merged(self, callboard_harness):
                # The class's time_skipping=False held only for tests with no marker.
                assert callboard_harness.time_skipping is False
                assert callboard_harness.stop_timeout == 1.0

        @pytest.mark.callboard("x.db")
        def test_positional(callboard_harness):
            pass

        @pytest.mark.callboard(store="sqlite", time_skipping=False)
        class TestAFileEach:
            # Each test's file is its own: the run the first leaves asleep is not the
            # second's to recover (a path given as store= would be).
            def test_leaves_one_asleep(self, callboard_harness):
                store = callboard_harness.runtime.store
                assert store.path.name == "runs.db"
                callboard_harness.register(flow).create_run().start_async(input_data={"n": 1})

            def test_finds_none(self, callboard_harness):
                assert callboard_harness.register(flow).list_workflow_runs().total == 0

        def test_own_harness_beside_the_fixtures(callboard_harness):
            from runtime.testing import Harness
            with pytest.raises(RuntimeError) as refused:
                Harness().start()
            assert "by the callboard_harness fixture of test_flow.py::" in str(refused.value)
        """
    )
    quick = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")
    # Off, the marker is unknown too; this process turns warnings into errors.
    off = pytester.runpytest_inprocess(*quick, "-W", "ignore::pytest.PytestUnknownMarkWarning")
    on = pytester.runpytest_inprocess(*quick, "--callboard")

    assert off.ret != 0
    off.stdout.fnmatch_lines(["*fixture 'callboard_harness' not found*"])
    on.assert_outcomes(passed=6, errors=1)
    on.stdout.fnmatch_lines(["*takes options by name*"])  # a positional one was dropped


def test_the_fixture_says_nothing_of_a_misspelt_step_when_the_test_failed_already(
    pytester: pytest.Pytester,
) -> None:
    # pytest hands a fixture nothing of the test's failure: the close named the step too,
    # and one failing test read "1 failed, 1 error".
    pytester.makepyfile(
        test_typo="""
        from pydantic import BaseModel
        from runtime import create_step, create_workflow

        class N(BaseModel):
            n: int

        charge = create_step(id="charge", input_schema=N, output_schema=N,
                             execute=lambda ctx: N(n=ctx.input_data.n + 1))
        flow = create_workflow(id="flow", input_schema=N, output_schema=N).then(charge).commit()

        def test_fails_with_a_typo(callboard_harness):
            callboard_harness.fail_step("chrage", ConnectionError)
            result = callboard_harness.register(flow).create_run().start(input_data={"n": 1})
            assert result.status == "failed"

        def test_passes_with_a_typo(callboard_harness):
            callboard_harness.fail_step("chrage", ConnectionError)
            callboard_harness.register(flow).create_run().start(input_data={"n": 1})
        """
    )
    ran = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--callboard"
    )

    ran.assert_outcomes(failed=1, passed=1, errors=1)  # the error: the passing test's close
    ran.stdout.fnmatch_lines(["ERROR test_typo.py::test_passes_with_a_typo - AssertionError*"])
    ran.stdout.no_fnmatch_line("ERROR test_typo.py::test_fails_with_a_typo*")


def test_under_xdist_the_fixture_gives_each_worker_a_file_of_its_own(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Workers given one path jumped clocks of their own: each took the other's leases for
    # lapsed and ran its runs again, hundreds of step bodies instead of a dozen.
    shared = pytester.path / "elsewhere" / "shared.db"
    shared.parent.mkdir()
    pytester.makepyfile(
        test_paths=f"""
        from pathlib import Path
        import pytest

        @pytest.mark.callboard(store="runs.db")
        def test_relative(callboard_harness):
            assert callboard_harness.runtime.store.path == Path.cwd() / "runs-gw3.db"

        @pytest.mark.callboard(store="sqlite:///" + {str(shared)!r})
        def test_url(callboard_harness):
            assert callboard_harness.runtime.store.path.name == "shared-gw3.db"
        """
    )
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    ran = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--callboard"
    )
    ran.assert_outcomes(passed=2)
    assert sorted(p.name for p in shared.parent.iterdir() if p.suffix == ".db") == ["shared-gw3.db"]
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    pytester.makepyfile(
        test_alone="""
        import pytest

        @pytest.mark.callboard(store="runs.db")
        def test_relative(callboard_harness):
            assert callboard_harness.runtime.store.path.name == "runs.db"
        """
    )
    alone = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--callboard", "test_alone.py"
    )
    alone.assert_outcomes(passed=1)


def test_the_fixture_of_a_test_failing_while_a_step_runs_adds_no_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its teardown raised "threads of callboard left": "1 failed, 1 error" for one failure.
    monkeypatch.setattr(testing, "THREADS_PATIENCE", 0.5)  # the step stays: no need to wait long
    pytester.makepyfile(
        test_stuck="""
        import threading
        import pytest
        from pydantic import BaseModel
        from runtime import create_step, create_workflow

        class N(BaseModel):
            n: int

        release = threading.Event()

        def waits(ctx):
            release.wait(10)
            return ctx.input_data

        step = create_step(id="waits", input_schema=N, output_schema=N, execute=waits)
        flow = create_workflow(id="flow", input_schema=N, output_schema=N).then(step).commit()

        @pytest.fixture(autouse=True)
        def _release():
            yield
            release.set()  # after the harness's close, as a test's own fixture would

        @pytest.mark.callboard(stop_timeout=0.1)
        def test_fails_while_its_step_runs(callboard_harness):
            callboard_harness.register(flow).create_run().start_async(input_data={"n": 1})
            raise ValueError("the test's own failure")
        """
    )
    ran = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--callboard"
    )

    ran.assert_outcomes(failed=1)
    ran.stdout.fnmatch_lines(["*ValueError: the test's own failure*"])


def test_the_fixture_parametrized_indirectly_takes_each_case_s_options(
    pytester: pytest.Pytester,
) -> None:
    # The fixture read no request.param: every case ran on the memory store, and passed.
    pytester.makepyfile(
        test_indirect="""
        import pytest

        @pytest.mark.callboard(store="sqlite", time_skipping=False)
        @pytest.mark.parametrize(
            "callboard_harness", [{"store": "memory"}, {"stop_timeout": 1.0}], indirect=True
        )
        def test_each_case(callboard_harness):
            assert callboard_harness.time_skipping is False  # the marker's, not overridden
            if callboard_harness.stop_timeout == 1.0:
                assert callboard_harness.runtime.store.durable  # the marker's sqlite
            else:
                assert not callboard_harness.runtime.store.durable  # the case's memory

        @pytest.mark.parametrize("callboard_harness", ["sqlite"], indirect=True)
        def test_not_a_dict(callboard_harness):
            pass
        """
    )
    ran = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--callboard"
    )

    ran.assert_outcomes(passed=2, errors=1)
    ran.stdout.fnmatch_lines(["*parametrized indirectly takes a dict of harness options*"])


def test_a_store_object_a_marker_gives_every_test_serves_each_and_is_keyed_by_worker(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first test's close closed the one object: every later test of the module failed
    # with "the run store ... is closed"; under xdist the workers shared its file.
    pytester.makepyfile(
        test_object="""
        import pytest
        from pydantic import BaseModel
        from runtime import SQLiteStore, create_step, create_workflow

        class N(BaseModel):
            n: int

        inc = create_step(id="inc", input_schema=N, output_schema=N,
                          execute=lambda ctx: N(n=ctx.input_data.n + 1))
        flow = create_workflow(id="flow", input_schema=N, output_schema=N).then(inc).commit()
        pytestmark = pytest.mark.callboard(store=SQLiteStore("runs.db", lease=4.0))

        @pytest.mark.parametrize("n", range(3))
        def test_each(callboard_harness, n):
            store = callboard_harness.runtime.store
            assert (store.path.name, store.lease) == ("runs-gw3.db", 4.0)
            result = callboard_harness.register(flow).create_run().start(input_data={"n": n})
            assert result.result == {"n": n + 1}
            assert callboard_harness.register(flow).list_workflow_runs().total == n + 1
        """
    )
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    ran = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--callboard"
    )
    ran.assert_outcomes(passed=3)


def test_a_harness_a_test_left_open_fails_that_test_and_not_the_ones_after_it(
    pytester: pytest.Pytester,
) -> None:
    # The test that left it passed; every later test that opened a harness failed with
    # "another Harness is open".
    pytester.makepyfile(
        test_left="""
        from runtime.testing import Harness

        def test_leaves_it_open():
            Harness().start()

        def test_fails_and_leaves_it_open():
            Harness().start()
            raise ValueError("the test's own failure")

        def test_after_it(callboard_harness):
            pass

        def test_after_it_too():
            with Harness():
                pass
        """
    )
    ran = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--callboard"
    )

    ran.assert_outcomes(failed=2, passed=2)
    ran.stdout.fnmatch_lines(
        [
            "the test left a Harness open (opened at *test_left.py:4)*",
            "*ValueError: the test's own failure",
            "*(and the test left a Harness open (opened at *test_left.py:7)*",
        ]
    )


def test_the_report_of_a_failing_test_shows_the_errors_of_the_harness_s_failed_runs(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_failed_run="""
        import pytest
        from pydantic import BaseModel
        from runtime import create_step, create_workflow

        class N(BaseModel):
            n: int

        def check(ctx):
            assert ctx.input_data.n == 2, "the order is wrong"
            return ctx.input_data

        step = create_step(id="check", input_schema=N, output_schema=N, execute=check)
        flow = create_workflow(id="flow", input_schema=N, output_schema=N).then(step).commit()

        def test_fails(callboard_harness):
            result = callboard_harness.register(flow).create_run().start(input_data={"n": 1})
            assert result.status == "success"

        def test_passes_with_a_failed_run(callboard_harness):
            result = callboard_harness.register(flow).create_run().start(input_data={"n": 1})
            assert result.status == "failed"

        asleep = create_workflow(id="asleep", input_schema=N, output_schema=N).sleep(60)
        asleep = asleep.then(step).commit()

        @pytest.mark.callboard(time_skipping=False)
        def test_waits_on_a_clock_that_stands_still(callboard_harness):
            run = callboard_harness.register(asleep).create_run()
            run.start(input_data={"n": 2}, timeout=0.2)
        """
    )
    ran = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--callboard", "-rA"
    )

    ran.assert_outcomes(failed=2, passed=1)
    ran.stdout.fnmatch_lines(
        [
            "*- callboard: runs that failed -*",
            "1 run(s) of the harness failed:",
            "run * of workflow 'flow' failed at step 'check': AssertionError: the order is wrong",
            "*test_failed_run.py*, line 9, in check",
        ]
    )
    ran.stdout.fnmatch_lines(
        [
            "*RunTimeoutError: run * did not end within 0.2 seconds; it goes on",
            "*- callboard: runs not ended -*",
            "1 run(s) of the harness not ended:",
            "run * of workflow 'asleep' waits until * (60 s ahead of the clock, and this "
            "harness's clock moves only when the test calls harness.clock.advance(seconds))",
        ]
    )
    assert ran.stdout.str().count("callboard: runs that failed") == 1  # not the passing test's


def test_time_skipping_goes_on_after_crash_and_recover(tmp_path: Path) -> None:
    entered = threading.Event()
    gate = threading.Event()

    def stuck_once(ctx: StepContext[N]) -> N:
        if not entered.is_set():
            entered.set()
            gate.wait(BLOCK_LIMIT)
        return N(n=ctx.input_data.n + 1)

    workflow = (
        create_workflow(id="sleepy-recovered", input_schema=N, output_schema=N)
        .then(create_step(id="stuck", input_schema=N, output_schema=N, execute=stuck_once))
        .sleep(DAY)
        .then(_step("after"))
        .commit()
    )
    with Harness(store=tmp_path / "runs.db") as harness:
        run = harness.register(workflow).create_run()
        run.start_async(input_data={"n": 0})
        assert entered.wait(BLOCK_LIMIT)
        harness.crash_and_recover()
        gate.set()
        began = time.perf_counter()
        result = harness.workflow(workflow.id).create_run(run_id=run.run_id).wait(BLOCK_LIMIT)

    assert result.status == "success" and result.result == {"n": 2}
    assert time.perf_counter() - began < 5.0


def _stop_timeouts_given(monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    """The timeouts each ``Runtime.stop`` is given from now on, in order."""
    given: list[float | None] = []
    stop = Runtime.stop

    def noted(self: Runtime, timeout: float | None = None) -> None:
        given.append(timeout)
        stop(self, timeout)

    monkeypatch.setattr(Runtime, "stop", noted)
    return given


def test_closing_with_runs_only_asleep_on_a_clock_that_stands_still_waits_for_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without time skipping nothing wakes them during the close: each such close waited
    # its whole stop_timeout for nothing. A step in user code still gets it.
    given = _stop_timeouts_given(monkeypatch)
    entered, release = threading.Event(), threading.Event()

    def held(ctx: StepContext[N]) -> N:
        entered.set()
        release.wait(BLOCK_LIMIT)
        return ctx.input_data

    napping = create_workflow(id="napping", input_schema=N, output_schema=N).sleep(3600)
    with Harness(time_skipping=False, stop_timeout=30.0) as harness:
        _asleep(harness, napping.then(_step("a")).commit())
    holding = create_workflow(id="holding", input_schema=N, output_schema=N)
    step = create_step(id="held", input_schema=N, output_schema=N, execute=held)
    with Harness(time_skipping=False, stop_timeout=30.0) as harness:
        harness.register(holding.then(step).commit()).create_run().start_async(input_data={"n": 0})
        assert entered.wait(BLOCK_LIMIT)
        threading.Timer(0.2, release.set).start()

    assert given == [0.0, 30.0]


def test_closing_as_a_run_just_went_to_sleep_waits_for_its_actors_not_its_stop_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The close looked once: a run read asleep in the store while its actor still told
    # the supervisor so (actors busy at that moment) had the close wait 30 s for it.
    given = _stop_timeouts_given(monkeypatch)
    busy = Harness._actors_busy
    looks: list[bool] = []

    def busy_at_first(self: Harness, system: Any) -> bool:
        looks.append(True)
        return len(looks) <= 3 or busy(self, system)

    napping = create_workflow(id="napping", input_schema=N, output_schema=N).sleep(3600)
    with Harness(time_skipping=False, stop_timeout=30.0) as harness:
        _asleep(harness, napping.then(_step("a")).commit())
        monkeypatch.setattr(Harness, "_actors_busy", busy_at_first)

    assert given == [0.0]
    assert len(looks) > 3


def test_closing_while_an_on_start_hook_runs_gives_it_the_stop_timeout() -> None:
    # Without time skipping the close gave runs no time when no step executed: a run whose
    # on_start was still being called failed with RuntimeStoppedError.
    entered, release = threading.Event(), threading.Event()

    def on_start(_outcome: Any) -> None:
        entered.set()
        release.wait(BLOCK_LIMIT)

    hooked = create_workflow(id="hooked", input_schema=N, output_schema=N, on_start=on_start).then(
        _step("a")
    )
    with Harness(time_skipping=False, stop_timeout=BLOCK_LIMIT) as harness:
        bound = harness.register(hooked.commit())
        run = bound.create_run()
        run.start_async(input_data={"n": 0})
        assert entered.wait(BLOCK_LIMIT)
        threading.Timer(0.2, release.set).start()
    result = bound.get_workflow_run_execution_result(run.run_id)
    assert result.status == "success" and list(result.steps) == ["a"]


def test_store_sqlite_is_a_file_of_the_harness_own_removed_when_it_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It made a file named ./sqlite in the working directory, which every harness that
    # gave it shared; the pytest marker's store="sqlite" is a file of the test's own.
    monkeypatch.chdir(tmp_path)
    workflow = create_workflow(id="napping", input_schema=N, output_schema=N).sleep(60)
    with Harness(store="sqlite", time_skipping=False) as harness:
        path = harness.runtime.store.path
        assert path.exists() and path.name == "runs.db" and tmp_path not in path.parents
        _asleep(harness, workflow.then(_step("a")).commit())
        harness.crash_and_recover()  # durable: the new runtime finds the run there
        assert harness.runtime.store.path == path
    assert not path.exists() and not path.parent.exists()
    assert list(tmp_path.iterdir()) == []
    assert harness.store == "sqlite"
