"""The run lifecycle: suspend and resume, cancel, retries, timeouts, and the workflow hooks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, field_validator
from structlog.testing import capture_logs

from runtime import (
    InvalidInputError,
    MemoryStore,
    NonRetryableError,
    ResumeConflictError,
    ResumeTargetError,
    RunNotSuspendedError,
    RunOutcome,
    RunReader,
    RunStatus,
    Runtime,
    SQLiteStore,
    StepStatus,
    create_step,
    create_workflow,
)
from runtime.testing import Harness
from tests._support import N, advance_until, wait_for_no_callboard_threads, wait_until

WAIT = 10.0  # seconds any wait may take at most, so that a bug fails instead of hanging


class Question(BaseModel):
    question: str


class Approval(BaseModel):
    ok: bool


class Pair(BaseModel):
    model_config = {"extra": "allow"}


class Calls:
    """A thread-safe record of what step bodies saw."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seen: list[Any] = []

    def add(self, value: Any = None) -> None:
        with self._lock:
            self.seen.append(value)

    def __len__(self) -> int:
        with self._lock:
            return len(self.seen)


def counting_step(step_id: str, calls: Calls, add: int = 1) -> Any:
    def body(ctx: Any) -> N:
        calls.add(ctx.input_data.n)
        return N(n=ctx.input_data.n + add)

    return create_step(id=step_id, input_schema=N, output_schema=N, execute=body)


def approval_step(step_id: str, calls: Calls, resume_schema: type[BaseModel] = Approval) -> Any:
    """Suspends with a question until resumed; then adds 100 if approved."""

    def body(ctx: Any) -> N:
        calls.add(ctx.resume_data)
        if ctx.resume_data is None:
            ctx.suspend(Question(question=f"{step_id}: approve {ctx.input_data.n}?"))
        return N(n=ctx.input_data.n + (100 if ctx.resume_data.ok else 0))

    return create_step(
        id=step_id,
        input_schema=N,
        output_schema=N,
        execute=body,
        suspend_schema=Question,
        resume_schema=resume_schema,
    )


def gated_step(step_id: str, entered: threading.Event, release: threading.Event) -> Any:
    def body(ctx: Any) -> N:
        entered.set()
        release.wait(WAIT)
        return ctx.input_data

    return create_step(id=step_id, input_schema=N, output_schema=N, execute=body)


@pytest.fixture
def limited_runtime() -> Iterator[Runtime]:
    """A runtime that runs one run at a time."""
    rt = Runtime(max_concurrent_runs=1).start()
    try:
        yield rt
    finally:
        rt.stop(timeout=5)
    left = wait_for_no_callboard_threads()
    assert not left, f"threads left after Runtime.stop(): {[t.name for t in left]}"


# --- suspend and resume ------------------------------------------------------------------------


def test_a_suspended_run_is_queryable_refuses_bad_resume_data_and_resumes_once(
    runtime: Runtime,
) -> None:
    before, approvals, after = Calls(), Calls(), Calls()
    wf = runtime.register(
        create_workflow(id="approve-flow", input_schema=N, output_schema=N)
        .then(counting_step("prepare", before))
        .then(approval_step("approve", approvals))
        .then(counting_step("ship", after, add=1000))
        .commit()
    )
    run = wf.create_run()

    suspended = run.start(input_data={"n": 1}, timeout=WAIT)

    assert suspended.status == RunStatus.SUSPENDED
    assert suspended.suspended == {"approve": {"question": "approve: approve 2?"}}
    assert suspended.steps["prepare"].status == StepStatus.SUCCESS
    assert suspended.steps["approve"].status == StepStatus.SUSPENDED
    assert suspended.steps["approve"].suspend_payload == {"question": "approve: approve 2?"}
    assert "ship" not in suspended.steps
    queried = wf.get_workflow_run_execution_result(run.run_id)
    assert queried is not None
    assert queried.status == "suspended"
    assert queried.suspended == suspended.suspended

    with pytest.raises(InvalidInputError) as bad:
        run.resume(resume_data={"ok": "not a boolean"}, timeout=WAIT)
    assert bad.value.field == "resume_data"
    assert bad.value.errors
    still = wf.get_workflow_run_execution_result(run.run_id)
    assert still is not None
    assert still.status == "suspended"
    assert still.suspended == suspended.suspended

    done = run.resume(resume_data={"ok": True}, timeout=WAIT)

    assert done.status == RunStatus.SUCCESS, done.error
    assert done.result == {"n": 1102}
    assert done.suspended == {}
    assert done.steps["approve"].status == StepStatus.SUCCESS
    assert done.steps["approve"].resume_payload == {"ok": True}
    assert done.steps["approve"].suspend_payload == {"question": "approve: approve 2?"}
    assert done.steps["ship"].status == StepStatus.SUCCESS
    assert before.seen == [1]
    assert after.seen == [102]
    assert [type(value).__name__ for value in approvals.seen] == ["NoneType", "Approval"]


def test_a_suspend_payload_that_does_not_fit_the_suspend_schema_fails_the_step(
    runtime: Runtime,
) -> None:
    def body(ctx: Any) -> N:
        ctx.suspend({"not_a_question": 1})
        return ctx.input_data

    step = create_step(
        id="ask", input_schema=N, output_schema=N, execute=body, suspend_schema=Question
    )
    wf = runtime.register(
        create_workflow(id="bad-suspend", input_schema=N, output_schema=N).then(step).commit()
    )

    result = wf.create_run().start(input_data={"n": 1}, timeout=WAIT)

    assert result.status == RunStatus.FAILED
    assert result.error is not None
    assert result.error.name == "StepValidationError"
    assert "question" in result.error.message
    assert result.steps["ask"].status == StepStatus.FAILED
    assert result.suspended == {}


def test_a_suspend_payload_is_recorded_as_its_suspend_schema_dumps_it(runtime: Runtime) -> None:
    class Count(BaseModel):
        count: int

    def body(ctx: Any) -> N:
        ctx.suspend({"count": "7"})  # pydantic's lax mode makes this 7
        return ctx.input_data

    step = create_step(
        id="ask", input_schema=N, output_schema=N, execute=body, suspend_schema=Count
    )
    wf = runtime.register(
        create_workflow(id="coerced-suspend", input_schema=N, output_schema=N).then(step).commit()
    )

    result = wf.create_run().start(input_data={"n": 1}, timeout=WAIT)

    assert result.status == RunStatus.SUSPENDED
    assert result.suspended == {"ask": {"count": 7}}


def test_resuming_a_running_or_finished_run_raises_run_not_suspended_with_its_status(
    runtime: Runtime,
) -> None:
    entered, release = threading.Event(), threading.Event()
    wf = runtime.register(
        create_workflow(id="not-suspended", input_schema=N, output_schema=N)
        .then(gated_step("gate", entered, release))
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"n": 1})
    assert entered.wait(WAIT)

    def status() -> str | None:
        result = wf.get_workflow_run_execution_result(run.run_id)
        return None if result is None else result.status

    try:
        wait_until(lambda: status() == RunStatus.RUNNING)  # the record may lag the step
        with pytest.raises(RunNotSuspendedError) as running:
            run.resume(resume_data={"ok": True})
    finally:
        release.set()
    assert running.value.status == "running"

    assert run.wait(WAIT).status == RunStatus.SUCCESS
    with pytest.raises(RunNotSuspendedError) as finished:
        run.resume(resume_data={"ok": True})
    assert finished.value.status == "success"


def test_resuming_a_step_that_is_not_suspended_raises_resume_target_error(
    runtime: Runtime,
) -> None:
    before, approvals = Calls(), Calls()
    prepare = counting_step("prepare", before)
    wf = runtime.register(
        create_workflow(id="wrong-target", input_schema=N, output_schema=N)
        .then(prepare)
        .then(approval_step("approve", approvals))
        .commit()
    )
    run = wf.create_run()
    assert run.start(input_data={"n": 1}, timeout=WAIT).status == RunStatus.SUSPENDED

    for target in (prepare, "prepare", "no-such-step"):
        with pytest.raises(ResumeTargetError) as refused:
            run.resume(step=target, resume_data={"ok": True})
        assert refused.value.suspended == ["approve"]

    still = wf.get_workflow_run_execution_result(run.run_id)
    assert still is not None
    assert still.status == RunStatus.SUSPENDED
    assert len(approvals) == 1
    assert run.resume(step="approve", resume_data={"ok": False}, timeout=WAIT).result == {"n": 2}


def test_two_suspended_parallel_steps_must_be_named_and_are_resumed_one_at_a_time(
    runtime: Runtime,
) -> None:
    left_calls, right_calls = Calls(), Calls()
    left, right = approval_step("left", left_calls), approval_step("right", right_calls)
    wf = runtime.register(
        create_workflow(id="two-suspended", input_schema=N, output_schema=Pair)
        .parallel([left, right])
        .commit()
    )
    run = wf.create_run()

    first = run.start(input_data={"n": 1}, timeout=WAIT)

    assert first.status == RunStatus.SUSPENDED
    assert set(first.suspended) == {"left", "right"}
    with pytest.raises(ResumeTargetError) as ambiguous:
        run.resume(resume_data={"ok": True})
    assert sorted(ambiguous.value.suspended) == ["left", "right"]

    second = run.resume(step="left", resume_data={"ok": True}, timeout=WAIT)

    assert second.status == RunStatus.SUSPENDED
    assert second.suspended == {"right": {"question": "right: approve 1?"}}
    assert second.steps["left"].status == StepStatus.SUCCESS
    assert second.steps["right"].status == StepStatus.SUSPENDED

    third = run.resume(step=right, resume_data={"ok": False}, timeout=WAIT)

    assert third.status == RunStatus.SUCCESS, third.error
    assert third.result == {"left": {"n": 101}, "right": {"n": 1}}
    assert len(left_calls) == 2
    assert len(right_calls) == 2


RACERS = 8
RACE_BARRIERS: dict[threading.Thread, threading.Barrier] = {}
"""Racing resumer threads, and the barrier each meets the others at once it has read the run."""


class RacingApproval(BaseModel):
    """An ``Approval`` whose validation waits, in a racing thread, for every other racer.

    ``resume()`` validates ``resume_data`` after it has read the run and before it
    writes the resume, so every racer has read the run as suspended when the first writes.
    """

    ok: bool

    @field_validator("ok")
    @classmethod
    def _meet_the_other_racers(cls, value: bool) -> bool:
        barrier = RACE_BARRIERS.get(threading.current_thread())
        if barrier is not None:
            barrier.wait(WAIT)
        return value


def race_resumes(run: Any, barrier: threading.Barrier | None = None) -> list[Any]:
    """Resume ``run`` from ``RACERS`` threads at once; what each got back (or raised)."""
    start = threading.Barrier(RACERS)
    outcomes: list[Any] = [None] * RACERS

    def resume(slot: int) -> None:
        if barrier is not None:
            RACE_BARRIERS[threading.current_thread()] = barrier
        try:
            start.wait(WAIT)
            outcomes[slot] = run.resume(resume_data={"ok": True}, timeout=WAIT)
        except Exception as exc:
            outcomes[slot] = exc
        finally:
            RACE_BARRIERS.pop(threading.current_thread(), None)

    threads = [threading.Thread(target=resume, args=(slot,)) for slot in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    return outcomes


def test_of_resumes_that_all_read_the_suspended_run_one_wins_and_the_rest_conflict(
    runtime: Runtime,
) -> None:
    approvals, after = Calls(), Calls()
    wf = runtime.register(
        create_workflow(id="resume-conflict", input_schema=N, output_schema=N)
        .then(approval_step("approve", approvals, resume_schema=RacingApproval))
        .then(counting_step("ship", after))
        .commit()
    )

    for round_number in range(20):
        run = wf.create_run()
        assert run.start(input_data={"n": round_number}, timeout=WAIT).status == "suspended"

        outcomes = race_resumes(run, threading.Barrier(RACERS))

        winners = [o for o in outcomes if not isinstance(o, BaseException)]
        losers = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(winners) == 1, outcomes
        assert winners[0].status == RunStatus.SUCCESS
        assert winners[0].result == {"n": round_number + 101}
        assert len(losers) == RACERS - 1
        assert all(isinstance(loser, ResumeConflictError) for loser in losers), losers
        assert after.seen.count(round_number + 100) == 1

    assert len(after) == 20
    assert len(approvals) == 40  # each run: the call that suspended, and one resumed call


def test_of_concurrent_resumes_of_one_run_exactly_one_wins(runtime: Runtime) -> None:
    approvals, after = Calls(), Calls()
    wf = runtime.register(
        create_workflow(id="resume-race", input_schema=N, output_schema=N)
        .then(approval_step("approve", approvals))
        .then(counting_step("ship", after))
        .commit()
    )

    for round_number in range(20):
        run = wf.create_run()
        assert run.start(input_data={"n": round_number}, timeout=WAIT).status == "suspended"

        outcomes = race_resumes(run)

        winners = [o for o in outcomes if not isinstance(o, BaseException)]
        losers = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(winners) == 1, outcomes
        assert winners[0].status == RunStatus.SUCCESS
        assert winners[0].result == {"n": round_number + 101}
        # Whether a loser read the run before the winner's resume landed or after, it
        # conflicts, and changed nothing.
        for loser in losers:
            assert isinstance(loser, ResumeConflictError), repr(loser)
            assert loser.status != "suspended"

    assert len(after) == 20
    assert len(approvals) == 40


def test_a_step_that_suspends_inside_a_dountil_loop_resumes_and_the_loop_goes_on(
    runtime: Runtime,
) -> None:
    calls = Calls()

    def body(ctx: Any) -> N:
        calls.add((ctx.input_data.n, ctx.resume_data is not None))
        if ctx.input_data.n == 2 and ctx.resume_data is None:
            ctx.suspend({"at": ctx.input_data.n})
        return N(n=ctx.input_data.n + 1)

    step = create_step(id="count", input_schema=N, output_schema=N, execute=body)
    wf = runtime.register(
        create_workflow(id="loop-suspend", input_schema=N, output_schema=N)
        .dountil(step, lambda ctx: ctx.input_data.n >= 5)
        .commit()
    )
    run = wf.create_run()

    suspended = run.start(input_data={"n": 0}, timeout=WAIT)

    assert suspended.status == RunStatus.SUSPENDED
    assert suspended.suspended == {"count": {"at": 2}}

    done = run.resume(resume_data={"go": True}, timeout=WAIT)

    assert done.status == RunStatus.SUCCESS, done.error
    assert done.result == {"n": 5}
    assert calls.seen == [(0, False), (1, False), (2, False), (2, True), (3, False), (4, False)]
    assert done.steps["count"].iterations == 5


# --- cancel ------------------------------------------------------------------------------------


def test_cancelling_a_running_run_aborts_its_step_and_starts_no_further_step(
    runtime: Runtime,
) -> None:
    entered, returned = threading.Event(), threading.Event()
    reasons: list[str | None] = []
    later = Calls()

    def slow(ctx: Any) -> N:
        entered.set()
        ctx.abort_signal.wait(WAIT)
        reasons.append(ctx.abort_signal.reason if ctx.cancelled else None)
        returned.set()
        return ctx.input_data

    wf = runtime.register(
        create_workflow(id="cancel-running", input_schema=N, output_schema=N)
        .then(create_step(id="slow", input_schema=N, output_schema=N, execute=slow))
        .then(counting_step("later", later))
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"n": 1})
    assert entered.wait(WAIT)

    assert run.cancel() is True

    result = run.wait(WAIT)
    assert result.status == RunStatus.CANCELED
    assert result.result is None
    assert result.steps["slow"].status == StepStatus.CANCELED
    assert returned.wait(WAIT)
    assert reasons == ["canceled"]
    assert run.cancel() is False
    assert len(later) == 0
    assert "later" not in run.wait(WAIT).steps


def test_cancelling_a_pending_run_means_it_never_runs(limited_runtime: Runtime) -> None:
    entered, release = threading.Event(), threading.Event()
    queued_calls = Calls()
    blocker_wf = limited_runtime.register(
        create_workflow(id="blocker", input_schema=N, output_schema=N)
        .then(gated_step("gate", entered, release))
        .commit()
    )
    queued_wf = limited_runtime.register(
        create_workflow(id="queued", input_schema=N, output_schema=N)
        .then(counting_step("work", queued_calls))
        .commit()
    )
    blocker = blocker_wf.create_run()
    blocker.start_async(input_data={"n": 1})
    assert entered.wait(WAIT)
    queued = queued_wf.create_run()
    queued.start_async(input_data={"n": 1})
    try:
        pending = queued_wf.get_workflow_run_execution_result(queued.run_id)
        assert pending is not None
        assert pending.status == RunStatus.PENDING

        assert queued.cancel() is True
    finally:
        release.set()

    assert queued.wait(WAIT).status == RunStatus.CANCELED
    assert blocker.wait(WAIT).status == RunStatus.SUCCESS
    # The freed slot goes to no one: a later run still runs, and the canceled one stays so.
    follower = queued_wf.create_run()
    assert follower.start(input_data={"n": 5}, timeout=WAIT).status == RunStatus.SUCCESS
    assert queued_calls.seen == [5]
    assert queued.wait(WAIT).status == RunStatus.CANCELED
    assert queued.cancel() is False


def test_cancelling_a_sleeping_run_ends_it_and_the_step_after_the_sleep_never_runs(
    runtime: Runtime,
) -> None:
    later = Calls()
    wf = runtime.register(
        create_workflow(id="cancel-sleeping", input_schema=N, output_schema=N)
        .sleep(60)
        .then(counting_step("later", later))
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"n": 1})

    def status() -> str | None:
        result = wf.get_workflow_run_execution_result(run.run_id)
        return None if result is None else result.status

    wait_until(lambda: status() == RunStatus.WAITING)

    assert run.cancel() is True

    result = run.wait(WAIT)
    assert result.status == RunStatus.CANCELED
    assert result.waiting_until is None
    assert result.steps["sleep-1"].status == StepStatus.CANCELED
    assert "later" not in result.steps
    assert len(later) == 0
    assert run.cancel() is False


def test_a_cancelled_suspended_run_cannot_be_resumed(runtime: Runtime) -> None:
    approvals, after = Calls(), Calls()
    wf = runtime.register(
        create_workflow(id="cancel-suspended", input_schema=N, output_schema=N)
        .then(approval_step("approve", approvals))
        .then(counting_step("ship", after))
        .commit()
    )
    run = wf.create_run()
    assert run.start(input_data={"n": 1}, timeout=WAIT).status == RunStatus.SUSPENDED

    assert run.cancel() is True

    result = run.wait(WAIT)
    assert result.status == RunStatus.CANCELED
    assert result.suspended == {}
    assert result.steps["approve"].status == StepStatus.CANCELED
    with pytest.raises(RunNotSuspendedError) as refused:
        run.resume(resume_data={"ok": True})
    assert refused.value.status == "canceled"
    assert run.cancel() is False
    assert len(approvals) == 1
    assert len(after) == 0


@pytest.mark.parametrize("ending", ["success", "failed"])
def test_cancelling_a_finished_run_returns_false_and_changes_nothing(
    runtime: Runtime, ending: str
) -> None:
    def body(ctx: Any) -> N:
        if ending == "failed":
            raise ValueError("boom")
        return ctx.input_data

    wf = runtime.register(
        create_workflow(id=f"cancel-{ending}", input_schema=N, output_schema=N)
        .then(create_step(id="work", input_schema=N, output_schema=N, execute=body))
        .commit()
    )
    run = wf.create_run()
    assert run.start(input_data={"n": 1}, timeout=WAIT).status == ending

    assert run.cancel() is False

    after = wf.get_workflow_run_execution_result(run.run_id)
    assert after is not None
    assert after.status == ending


# --- retries -----------------------------------------------------------------------------------


def flaky_step(
    step_id: str, calls: Calls, failures: int, retries: int | None = None, error: Any = ValueError
) -> Any:
    """Fails its first ``failures`` calls (``error(f"boom {retry_count}")``), then succeeds."""

    def body(ctx: Any) -> N:
        calls.add(ctx.retry_count)
        if ctx.retry_count < failures:
            raise error(f"boom {ctx.retry_count}")
        return ctx.input_data

    return create_step(id=step_id, input_schema=N, output_schema=N, execute=body, retries=retries)


def test_a_step_that_fails_twice_then_succeeds_with_two_retries_succeeds_on_its_third_call(
    runtime: Runtime,
) -> None:
    calls = Calls()
    wf = runtime.register(
        create_workflow(id="retry-then-succeed", input_schema=N, output_schema=N)
        .then(flaky_step("flaky", calls, failures=2, retries=2))
        .commit()
    )

    result = wf.create_run().start(input_data={"n": 1}, timeout=WAIT)

    assert result.status == RunStatus.SUCCESS, result.error
    assert result.steps["flaky"].attempts == 3
    assert result.steps["flaky"].status == StepStatus.SUCCESS
    assert calls.seen == [0, 1, 2]


def test_retries_wait_as_the_workflow_retry_config_backs_off(runtime: Runtime) -> None:
    times: list[float] = []

    def body(ctx: Any) -> N:
        times.append(time.monotonic())
        if ctx.retry_count < 2:
            raise ValueError("not yet")
        return ctx.input_data

    wf = runtime.register(
        create_workflow(
            id="backoff",
            input_schema=N,
            output_schema=N,
            retry_config={"attempts": 2, "delay": 0.05, "backoff": 2},
        )
        .then(create_step(id="flaky", input_schema=N, output_schema=N, execute=body))
        .commit()
    )

    result = wf.create_run().start(input_data={"n": 1}, timeout=WAIT)

    assert result.status == RunStatus.SUCCESS, result.error
    assert len(times) == 3
    assert times[1] - times[0] >= 0.05
    assert times[2] - times[1] >= 0.1


def test_a_non_retryable_error_fails_the_step_at_once(runtime: Runtime) -> None:
    calls = Calls()
    wf = runtime.register(
        create_workflow(id="non-retryable", input_schema=N, output_schema=N)
        .then(flaky_step("fragile", calls, failures=5, retries=3, error=NonRetryableError))
        .commit()
    )

    result = wf.create_run().start(input_data={"n": 1}, timeout=WAIT)

    assert result.status == RunStatus.FAILED
    assert result.error is not None
    assert result.error.name == "NonRetryableError"
    assert result.steps["fragile"].attempts == 1
    assert calls.seen == [0]


@pytest.mark.parametrize(
    ("step_retries", "workflow_attempts", "calls_made"),
    [
        (0, 3, 1),  # the step's 0 overrides the workflow's 3
        (1, 3, 2),
        (3, 1, 4),
        (None, 2, 3),  # no count of its own: the workflow's applies
    ],
)
def test_a_step_s_own_retries_win_over_the_workflow_retry_config(
    runtime: Runtime, step_retries: int | None, workflow_attempts: int, calls_made: int
) -> None:
    calls = Calls()
    wf = runtime.register(
        create_workflow(
            id="retry-precedence",
            input_schema=N,
            output_schema=N,
            retry_config={"attempts": workflow_attempts},
        )
        .then(flaky_step("always-fails", calls, failures=99, retries=step_retries))
        .commit()
    )

    result = wf.create_run().start(input_data={"n": 1}, timeout=WAIT)

    assert result.status == RunStatus.FAILED
    assert result.steps["always-fails"].attempts == calls_made
    assert len(calls) == calls_made


def test_a_step_that_exhausts_its_retries_fails_with_its_last_error(runtime: Runtime) -> None:
    calls = Calls()
    wf = runtime.register(
        create_workflow(id="exhausted", input_schema=N, output_schema=N)
        .then(flaky_step("always-fails", calls, failures=99, retries=2))
        .commit()
    )

    result = wf.create_run().start(input_data={"n": 1}, timeout=WAIT)

    assert result.status == RunStatus.FAILED
    assert result.error is not None
    assert result.error.name == "ValueError"
    assert result.error.message == "boom 2"
    step = result.steps["always-fails"]
    assert step.status == StepStatus.FAILED
    assert step.attempts == 3
    assert step.error is not None
    assert step.error.message == "boom 2"
    assert calls.seen == [0, 1, 2]


def test_waiting_before_a_retry_holds_no_thread() -> None:
    runs = 100
    # Each call as (run id, attempt, the harness clock's time), so that a retry that comes
    # early says whose it was and when (this test failed once in a whole suite on 4
    # processes on 2 cores: more than the warm-up's retry before the clock was moved).
    calls = Calls()

    def body(ctx: Any) -> N:
        calls.add((ctx.run_id, ctx.retry_count, harness.clock.now()))
        if ctx.retry_count < 1:
            raise ValueError(f"boom {ctx.retry_count}")
        return ctx.input_data

    def attempts(attempt: int) -> list[tuple[str, int, float]]:
        return [call for call in list(calls.seen) if call[1] == attempt]

    workflow = (
        create_workflow(
            id="retry-later",
            input_schema=N,
            output_schema=N,
            retry_config={"attempts": 1, "delay": 60.0},
        )
        .then(create_step(id="flaky", input_schema=N, output_schema=N, execute=body))
        .commit()
    )
    # On a virtual clock moved by hand: every run waits for its retry, however slow the
    # machine, until the test moves the clock (on the wall clock this waited a second).
    with Harness(time_skipping=False) as harness:
        wf = harness.register(workflow)
        # Warm up: the machinery's own threads (timers, a few step actors) start on first use.
        warm_up = wf.create_run()
        warm_up.start_async(input_data={"n": 0})
        wait_until(lambda: len(attempts(0)) == 1)
        advance_until(harness.clock, lambda: len(attempts(1)) == 1, 60, "the warm-up retried")
        assert warm_up.wait(WAIT).status == "success"
        baseline = threading.active_count()
        started = [wf.create_run() for _ in range(runs)]
        for run in started:
            run.start_async(input_data={"n": 1})

        wait_until(lambda: len(attempts(0)) == runs + 1)
        # Every run has failed its first call and now waits a minute before its retry.
        waiting = threading.active_count()
        retried, moved_to = attempts(1), harness.clock.now()
        advance_until(harness.clock, lambda: len(attempts(1)) == runs + 1, 60, "every retry")

        for run in started:
            assert run.wait(WAIT).status == RunStatus.SUCCESS
    # The warm-up's retry only: no other came before the clock moved on.
    assert len(retried) == 1, (
        f"a retry came before its back-off had passed: {retried} (the warm-up is "
        f"{warm_up.run_id}; the clock stood at {moved_to}; first calls at "
        f"{sorted({when for _, _, when in attempts(0)})})"
    )
    assert waiting - baseline <= 10, f"{waiting - baseline} more threads while runs wait to retry"


# --- timeouts ----------------------------------------------------------------------------------


def test_an_async_step_that_outlasts_its_timeout_is_cancelled_and_fails_the_run(
    runtime: Runtime,
) -> None:
    cancelled = threading.Event()

    async def slow(ctx: Any) -> N:
        try:
            await asyncio.sleep(WAIT)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return ctx.input_data

    wf = runtime.register(
        create_workflow(id="async-timeout", input_schema=N, output_schema=N)
        .then(create_step(id="slow", input_schema=N, output_schema=N, execute=slow, timeout=0.2))
        .commit()
    )

    result = wf.create_run().start(input_data={"n": 1}, timeout=WAIT)

    assert result.status == RunStatus.FAILED
    assert result.error is not None
    assert result.error.name == "StepTimeoutError"
    assert result.steps["slow"].status == StepStatus.FAILED
    assert cancelled.wait(WAIT)


def test_a_sync_step_that_outlasts_its_timeout_is_abandoned_and_its_late_return_ignored(
    runtime: Runtime,
) -> None:
    release, returned = threading.Event(), threading.Event()
    later = Calls()

    def stuck(ctx: Any) -> N:
        release.wait(WAIT)
        returned.set()
        return ctx.input_data

    wf = runtime.register(
        create_workflow(id="sync-timeout", input_schema=N, output_schema=N)
        .then(create_step(id="stuck", input_schema=N, output_schema=N, execute=stuck, timeout=0.2))
        .then(counting_step("later", later))
        .commit()
    )
    run = wf.create_run()
    try:
        result = run.start(input_data={"n": 1}, timeout=WAIT)

        assert not returned.is_set(), "the run ended only once the body returned"
    finally:
        release.set()
    assert result.status == RunStatus.FAILED
    assert result.error is not None
    assert result.error.name == "StepTimeoutError"
    assert result.steps["stuck"].status == StepStatus.FAILED

    assert returned.wait(WAIT)
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # the late return must change nothing
        late = wf.get_workflow_run_execution_result(run.run_id)
        assert late is not None
        assert late.status == RunStatus.FAILED
        assert late.steps["stuck"].status == StepStatus.FAILED
        time.sleep(0.02)
    assert len(later) == 0


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_a_call_that_times_out_is_retried(runtime: Runtime, kind: str) -> None:
    calls = Calls()
    release = threading.Event()

    async def async_body(ctx: Any) -> N:
        calls.add(ctx.retry_count)
        if ctx.retry_count == 0:
            await asyncio.sleep(WAIT)
        return ctx.input_data

    def sync_body(ctx: Any) -> N:
        calls.add(ctx.retry_count)
        if ctx.retry_count == 0:
            release.wait(WAIT)
        return ctx.input_data

    step = create_step(
        id="slow-once",
        input_schema=N,
        output_schema=N,
        execute=async_body if kind == "async" else sync_body,
        timeout=0.2,
        retries=1,
    )
    wf = runtime.register(
        create_workflow(id=f"timeout-retry-{kind}", input_schema=N, output_schema=N)
        .then(step)
        .commit()
    )

    try:
        result = wf.create_run().start(input_data={"n": 1}, timeout=WAIT)
    finally:
        release.set()

    assert result.status == RunStatus.SUCCESS, result.error
    assert result.steps["slow-once"].attempts == 2
    assert calls.seen == [0, 1]


# --- hooks -------------------------------------------------------------------------------------


def test_on_finish_gets_the_run_s_outcome_once(runtime: Runtime) -> None:
    outcomes: list[RunOutcome] = []
    errors: list[RunOutcome] = []

    def body(ctx: Any) -> N:
        ctx.set_state({"seen": ctx.input_data.n})
        ctx.request_context.set("step", "was here")
        return N(n=ctx.input_data.n + 1)

    wf = runtime.register(
        create_workflow(
            id="hook-success",
            input_schema=N,
            output_schema=N,
            on_finish=outcomes.append,
            on_error=errors.append,
        )
        .then(create_step(id="work", input_schema=N, output_schema=N, execute=body))
        .commit()
    )
    run = wf.create_run()

    result = run.start(
        input_data={"n": 1},
        request_context={"user": "ann"},
        initial_state={"seen": None},
        timeout=WAIT,
    )

    assert result.status == RunStatus.SUCCESS
    assert len(outcomes) == 1
    outcome = outcomes[0]
    assert outcome.run_id == run.run_id
    assert outcome.workflow_id == "hook-success"
    assert outcome.status == RunStatus.SUCCESS
    assert outcome.result == {"n": 2}
    assert outcome.error is None
    assert list(outcome.steps) == ["work"]
    assert outcome.steps["work"].output == {"n": 2}
    assert outcome.state == {"seen": 1}
    assert outcome.request_context == {"user": "ann", "step": "was here"}
    assert errors == []
    run.wait(WAIT)
    assert len(outcomes) == 1


def test_a_failed_run_calls_on_error_then_on_finish_with_the_error(runtime: Runtime) -> None:
    seen: list[tuple[str, RunOutcome]] = []

    def body(ctx: Any) -> N:
        raise ValueError("broken")

    wf = runtime.register(
        create_workflow(
            id="hook-failed",
            input_schema=N,
            output_schema=N,
            on_finish=lambda outcome: seen.append(("finish", outcome)),
            on_error=lambda outcome: seen.append(("error", outcome)),
        )
        .then(create_step(id="work", input_schema=N, output_schema=N, execute=body))
        .commit()
    )

    result = wf.create_run().start(input_data={"n": 1}, timeout=WAIT)

    assert result.status == RunStatus.FAILED
    assert [name for name, _ in seen] == ["error", "finish"]
    for _, outcome in seen:
        assert outcome.status == RunStatus.FAILED
        assert outcome.result is None
        assert outcome.error is not None
        assert outcome.error.name == "ValueError"
        assert outcome.error.message == "broken"
        assert outcome.steps["work"].status == StepStatus.FAILED


@pytest.mark.usefixtures("_structlog_reset")
def test_a_hook_that_raises_is_logged_and_the_run_still_succeeds(runtime: Runtime) -> None:
    def broken_hook(outcome: RunOutcome) -> None:
        raise RuntimeError("hook broke")

    calls = Calls()
    wf = runtime.register(
        create_workflow(id="hook-raises", input_schema=N, output_schema=N, on_finish=broken_hook)
        .then(counting_step("work", calls))
        .commit()
    )
    run = wf.create_run()

    with capture_logs() as logs:
        result = run.start(input_data={"n": 1}, timeout=WAIT)

    assert result.status == RunStatus.SUCCESS
    assert result.result == {"n": 2}
    failures = [event for event in logs if event["event"] == "workflow_hook_failed"]
    assert len(failures) == 1
    assert failures[0]["hook"] == "on_finish"
    assert failures[0]["run_id"] == run.run_id
    assert failures[0]["log_level"] == "error"
    queried = wf.get_workflow_run_execution_result(run.run_id)
    assert queried is not None
    assert queried.status == RunStatus.SUCCESS


def test_hooks_waiting_for_runs_whose_own_hooks_need_a_thread_do_not_hold_them_up(
    runtime: Runtime,
) -> None:
    # Two runs end at once, and each one's on_finish starts a run whose workflow has an
    # on_finish too, and waits for it. Both hook threads then waited, and the new runs'
    # hooks (so their ends) had no thread: each wait lasted until its timeout.
    both_in_hooks = threading.Barrier(2, timeout=WAIT)
    told: list[str] = []
    follow = runtime.register(
        create_workflow(
            id="follow-up", input_schema=N, output_schema=N, on_finish=lambda outcome: None
        )
        .then(counting_step("follow", Calls()))
        .commit()
    )

    def on_finish(outcome: RunOutcome) -> None:
        both_in_hooks.wait()
        result = follow.create_run().start(input_data={"n": 1}, timeout=WAIT)
        told.append(result.status)

    first = runtime.register(
        create_workflow(id="first", input_schema=N, output_schema=N, on_finish=on_finish)
        .then(counting_step("work", Calls()))
        .commit()
    )
    runs = [first.create_run() for _ in range(2)]
    for run in runs:
        run.start_async(input_data={"n": 1})

    assert [run.wait(2 * WAIT).status for run in runs] == [RunStatus.SUCCESS] * 2
    assert told == [RunStatus.SUCCESS] * 2


@pytest.mark.parametrize("hook", ["on_finish", "on_start"])
def test_async_hooks_awaiting_runs_whose_own_hooks_need_a_thread_do_not_hold_them_up(
    runtime: Runtime, hook: str
) -> None:
    # As above, with async hooks awaiting the follow-up runs (astart): their awaits still
    # counted against the two hook threads, and every run involved stayed running for
    # good, and so did every later run of a workflow with hooks.
    both_in_hooks = threading.Barrier(2, timeout=WAIT)
    told: list[str] = []
    follow = runtime.register(
        create_workflow(
            id="follow-up", input_schema=N, output_schema=N, on_finish=lambda outcome: None
        )
        .then(counting_step("follow", Calls()))
        .commit()
    )

    async def waits_for_a_follow_up(outcome: RunOutcome) -> None:
        await asyncio.to_thread(both_in_hooks.wait)
        result = await follow.create_run().astart(input_data={"n": 1}, timeout=WAIT)
        told.append(result.status)

    first = runtime.register(
        create_workflow(
            id="first", input_schema=N, output_schema=N, **{hook: waits_for_a_follow_up}
        )
        .then(counting_step("work", Calls()))
        .commit()
    )
    runs = [first.create_run() for _ in range(2)]
    for run in runs:
        run.start_async(input_data={"n": 1})

    assert [run.wait(2 * WAIT).status for run in runs] == [RunStatus.SUCCESS] * 2
    assert told == [RunStatus.SUCCESS] * 2


_NEVER_STOPPED = """
import sys
from pydantic import BaseModel
from runtime import Runtime, create_step, create_workflow

class N(BaseModel):
    n: int

step = create_step(id="s", input_schema=N, output_schema=N, execute=lambda ctx: ctx.input_data)
flow = create_workflow(id="h", input_schema=N, output_schema=N, on_finish=lambda o: None)
runtime = Runtime().start()
print(runtime.register(flow.then(step).commit()).create_run().start(input_data={"n": 1}).status)
"""


def test_a_program_that_never_stops_its_runtime_still_exits_after_calling_hooks() -> None:
    # The hook threads waited for more hooks without end, and Python waited for them at
    # exit: the program hung after its last line (the hooks change of 2026-12-05).
    done = subprocess.run(
        [sys.executable, "-c", _NEVER_STOPPED],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "success"


def test_an_async_hook_is_awaited(runtime: Runtime) -> None:
    seen: list[str] = []

    async def on_finish(outcome: RunOutcome) -> None:
        await asyncio.sleep(0.01)
        seen.append(outcome.status)

    wf = runtime.register(
        create_workflow(id="hook-async", input_schema=N, output_schema=N, on_finish=on_finish)
        .then(counting_step("work", Calls()))
        .commit()
    )

    result = wf.create_run().start(input_data={"n": 1}, timeout=WAIT)

    assert result.status == RunStatus.SUCCESS
    assert seen == ["success"]


@pytest.mark.parametrize("while_", ["running", "suspended"])
def test_a_canceled_run_calls_on_finish_but_not_on_error(runtime: Runtime, while_: str) -> None:
    seen: list[tuple[str, RunOutcome]] = []
    entered = threading.Event()

    def body(ctx: Any) -> N:
        entered.set()
        if while_ == "suspended":
            ctx.suspend({"wait": True})
        ctx.abort_signal.wait(WAIT)
        return ctx.input_data

    wf = runtime.register(
        create_workflow(
            id=f"hook-canceled-{while_}",
            input_schema=N,
            output_schema=N,
            on_finish=lambda outcome: seen.append(("finish", outcome)),
            on_error=lambda outcome: seen.append(("error", outcome)),
        )
        .then(create_step(id="work", input_schema=N, output_schema=N, execute=body))
        .commit()
    )
    run = wf.create_run()
    if while_ == "suspended":
        assert run.start(input_data={"n": 1}, timeout=WAIT).status == RunStatus.SUSPENDED
    else:
        run.start_async(input_data={"n": 1})
        assert entered.wait(WAIT)

    assert run.cancel() is True
    result = run.wait(WAIT)

    assert result.status == RunStatus.CANCELED
    assert [name for name, _ in seen] == ["finish"]
    outcome = seen[0][1]
    assert outcome.status == RunStatus.CANCELED
    assert outcome.run_id == run.run_id
    assert outcome.steps["work"].status == StepStatus.CANCELED


def test_the_hooks_have_run_when_start_returns(runtime: Runtime) -> None:
    finished = threading.Event()

    def slow_hook(outcome: RunOutcome) -> None:
        time.sleep(0.3)  # a slow hook: start() must wait for it, not race it
        finished.set()

    wf = runtime.register(
        create_workflow(
            id="hook-before-result", input_schema=N, output_schema=N, on_finish=slow_hook
        )
        .then(counting_step("work", Calls()))
        .commit()
    )
    run = wf.create_run()

    result = run.start(input_data={"n": 1}, timeout=WAIT)

    assert finished.is_set()
    assert result.status == RunStatus.SUCCESS
    queried = wf.get_workflow_run_execution_result(run.run_id)
    assert queried is not None
    assert queried.status == RunStatus.SUCCESS


class Items(BaseModel):
    items: list[N]


@pytest.mark.parametrize("kind", ["step", "foreach item"])
def test_a_run_stopped_in_its_retries_back_off_keeps_its_budget_and_back_off_on_recovery(
    tmp_path: Any, kind: str
) -> None:
    # The recovered runtime called the step with retry_count 0 and a whole new budget:
    # with attempts=2, four calls in all instead of three (a foreach item: still so
    # until 2026-12-05). And it called at once, its back-off forgotten: a process that
    # crashed again and again retried a struggling service with no wait at all.
    seen: list[tuple[int, float]] = []
    delay = 1.0

    def down(ctx: Any) -> N:
        seen.append((ctx.retry_count, time.time()))
        raise RuntimeError(f"down {ctx.retry_count}")

    step = create_step(id="down", input_schema=N, output_schema=N, execute=down)
    built = create_workflow(
        id="down",
        input_schema=N,
        output_schema=N if kind == "step" else Items,
        retry_config={"attempts": 2, "delay": delay},
    )
    if kind == "step":
        workflow = built.then(step).commit()
    else:
        workflow = (
            built.map(lambda ctx: [ctx.input_data])
            .foreach(step)
            .map(lambda ctx: {"items": ctx.input_data})
            .commit()
        )
    path = tmp_path / "runs.db"
    with Runtime(store=path, stop_timeout=0.1) as first:
        run = first.register(workflow).create_run()
        run.start_async(input_data={"n": 1})
        wait_until(lambda: len(seen) == 1, what="the first call failed; its retry waits")
        time.sleep(0.1)  # its back-off recorded
    with Runtime(store=path, stop_timeout=0.1) as second:
        wf = second.register(workflow)
        wait_until(lambda: len(seen) == 2, what="the recovered run called its step")
        # The second call of its budget of three, once its back-off was over.
        assert seen[1][0] == 1
        assert seen[1][1] - seen[0][1] >= delay
        result = wf.create_run(run.run_id).wait(timeout=WAIT)
    assert [retry for retry, _ in seen] == [0, 1, 2]
    assert result.status == RunStatus.FAILED
    assert result.steps["down"].attempts == 3


def test_a_step_that_failed_once_keeps_no_error_once_it_succeeds_or_suspends(
    runtime: Runtime,
) -> None:
    # A foreach whose item succeeded on its retry ended with that item's first error on
    # its record, as did a step that failed once and then suspended.
    def flaky(ctx: Any) -> N:
        if ctx.retry_count == 0:
            raise ConnectionError(f"busy {ctx.input_data.n}")
        return ctx.input_data

    def then_suspends(ctx: Any) -> N:
        if ctx.retry_count == 0:
            raise ConnectionError("busy")
        if ctx.resume_data is None:
            ctx.suspend({})
        return ctx.input_data

    each = runtime.register(
        create_workflow(id="each-flaky", input_schema=N, output_schema=N)
        .map(lambda ctx: [{"n": 0}, {"n": 1}])
        .foreach(create_step(id="flaky", input_schema=N, output_schema=N, execute=flaky, retries=2))
        .map(lambda ctx: ctx.input_data[-1])
        .commit()
    )
    done = each.create_run().start(input_data={"n": 0}, timeout=5)
    assert done.status == "success"
    assert done.steps["flaky"].error is None

    asks = runtime.register(
        create_workflow(id="then-suspends", input_schema=N, output_schema=N)
        .then(
            create_step(
                id="asks", input_schema=N, output_schema=N, execute=then_suspends, retries=1
            )
        )
        .commit()
    )
    waiting = asks.create_run().start(input_data={"n": 0}, timeout=5)
    assert waiting.status == "suspended"
    assert waiting.steps["asks"].error is None


# --- one store object, one runtime at a time ---------------------------------------------


def test_a_store_object_in_use_by_a_running_runtime_is_refused_to_another(tmp_path: Any) -> None:
    # Both started: stopping the first closed the store under the second, whose run in
    # progress never ended and whose every start raised "the store is closed".
    store = SQLiteStore(tmp_path / "runs.db")
    first = Runtime(store=store).start()
    try:
        second = Runtime(store=store)
        with pytest.raises(ValueError, match="in use by another Runtime"):
            second.start()
        # The first is untouched by the refusal.
        workflow = first.register(
            create_workflow(id="one", input_schema=N, output_schema=N)
            .then(create_step(id="same", input_schema=N, output_schema=N, execute=_same))
            .commit()
        )
        assert workflow.create_run().start(input_data={"n": 1}, timeout=10).status == "success"
    finally:
        first.stop()
    assert not second.is_running


def test_a_memory_store_object_goes_to_one_runtime_at_a_time_then_to_the_next() -> None:
    store = MemoryStore()
    with Runtime(store=store), pytest.raises(ValueError, match="in use by another Runtime"):
        Runtime(store=store).start()
    # Stopped: a memory store is not closed, and the next runtime may have it.
    with Runtime(store=store) as later:
        assert later.is_running


@pytest.mark.parametrize("kind", [MemoryStore, SQLiteStore])
def test_a_store_class_given_instead_of_a_store_is_refused_at_the_call(kind: type) -> None:
    with pytest.raises(TypeError, match=f"the class {kind.__name__} itself"):
        Runtime(store=kind)


def _same(ctx: Any) -> N:
    return ctx.input_data


@pytest.mark.parametrize("hook", ["on_finish", "on_error"])
@pytest.mark.parametrize("awaited", [False, True], ids=["cancel", "acancel"])
def test_a_cancel_of_its_own_run_in_an_end_hook_says_at_once_that_it_has_ended(
    runtime: Runtime, hook: str, awaited: bool
) -> None:
    # The run still read running while its end hooks ran: the cancel waited for its
    # end, which waited for the hook, then raised CancelError (after 5 s in memory, 60 s
    # on a shared store), holding the run's end back all that while.
    answers: list[bool] = []

    def cancels_itself(outcome: RunOutcome) -> Any:
        run = runtime.register(flow).create_run(outcome.run_id)
        if awaited:
            answers.append(asyncio.run(run.acancel()))
        else:
            answers.append(run.cancel())

    def fails(ctx: Any) -> N:
        raise RuntimeError("down")

    flow = runtime.register(
        create_workflow(id="self-cancel", input_schema=N, output_schema=N, **{hook: cancels_itself})
        .then(create_step(id="fails", input_schema=N, output_schema=N, execute=fails))
        .commit()
    )
    result = flow.create_run().start(input_data={"n": 1}, timeout=WAIT)
    assert result.status == RunStatus.FAILED
    assert answers == [False]  # it raised CancelError once its patience ran out


def test_a_cancel_while_on_start_runs_calls_on_finish_once_on_start_has_returned(
    runtime: Runtime,
) -> None:
    # on_finish(canceled) ran on the other hook thread while on_start still ran: it tore
    # down what on_start was still setting up; and the cancel returned before on_start did.
    order: list[str] = []
    in_start, let_go = threading.Event(), threading.Event()

    def on_start(outcome: RunOutcome) -> None:
        order.append("on_start begins")
        in_start.set()
        let_go.wait(WAIT)
        order.append("on_start returns")

    def on_finish(outcome: RunOutcome) -> None:
        order.append(f"on_finish {outcome.status}")

    flow = runtime.register(
        create_workflow(
            id="set-up", input_schema=N, output_schema=N, on_start=on_start, on_finish=on_finish
        )
        .then(counting_step("work", Calls()))
        .commit()
    )
    run = flow.create_run()
    run.start_async(input_data={"n": 1})
    assert in_start.wait(WAIT)
    answer: list[bool] = []
    canceling = threading.Thread(target=lambda: answer.append(run.cancel()))
    canceling.start()
    canceling.join(0.5)
    assert canceling.is_alive()  # the cancel waits for the hooks, on_start's included
    let_go.set()
    canceling.join(WAIT)
    assert answer == [True]
    assert order == ["on_start begins", "on_start returns", "on_finish canceled"]


@pytest.mark.parametrize("awaited", [False, True], ids=["cancel", "acancel"])
def test_on_start_cancelling_its_own_run_is_told_true_and_on_finish_sees_canceled(
    runtime: Runtime, awaited: bool
) -> None:
    # The end's hooks wait for on_start; the cancel waits for them: it waited for ever.
    answers: list[Any] = []
    finished: list[str] = []

    def on_start(outcome: RunOutcome) -> Any:
        run = runtime.register(flow).create_run(outcome.run_id)
        answers.append(asyncio.run(run.acancel()) if awaited else run.cancel())

    flow = runtime.register(
        create_workflow(
            id="cancels-at-start",
            input_schema=N,
            output_schema=N,
            on_start=on_start,
            on_finish=lambda outcome: finished.append(outcome.status),
        )
        .then(counting_step("never", Calls()))
        .commit()
    )
    run = flow.create_run()
    run.start_async(input_data={"n": 1})
    assert run.wait(timeout=WAIT).status == RunStatus.CANCELED
    wait_until(lambda: answers, timeout=WAIT, what="on_start's cancel returns")
    assert answers == [True]
    assert finished == [RunStatus.CANCELED]


def test_a_stop_while_on_start_runs_waits_for_the_end_hooks_chained_behind_it() -> None:
    # The end's hooks, waiting for on_start, were not among those the stop waited for:
    # on_finish still ran after stop() had returned.
    log: list[str] = []

    def on_start(outcome: RunOutcome) -> None:
        time.sleep(0.3)
        log.append("on_start returned")

    def on_finish(outcome: RunOutcome) -> None:
        time.sleep(0.2)
        log.append("on_finish returned")

    rt = Runtime(stop_timeout=0).start()
    flow = rt.register(
        create_workflow(
            id="stopped", input_schema=N, output_schema=N, on_start=on_start, on_finish=on_finish
        )
        .then(counting_step("work", Calls()))
        .commit()
    )
    flow.create_run().start_async(input_data={"n": 1})
    time.sleep(0.1)  # on_start runs
    rt.stop()
    assert log == ["on_start returned", "on_finish returned"]


@pytest.mark.parametrize("how", ["last step", "bail"])
def test_a_durable_run_records_its_last_steps_before_on_finish_is_called(
    tmp_path: Any, how: str
) -> None:
    # Only the end's record, written after the hooks, held them: a process that died
    # while on_finish ran lost them, and the next one ran the step again.
    in_hook, let_go = threading.Event(), threading.Event()

    def on_finish(outcome: RunOutcome) -> None:
        in_hook.set()
        let_go.wait(WAIT)

    def last(ctx: Any) -> N:
        if how == "bail":
            ctx.bail(N(n=99))
        return N(n=ctx.input_data.n + 1)

    with Runtime(store=tmp_path / "runs.db") as rt:
        flow = rt.register(
            create_workflow(id="recorded", input_schema=N, output_schema=N, on_finish=on_finish)
            .then(counting_step("first", Calls()))
            .then(create_step(id="last", input_schema=N, output_schema=N, execute=last))
            .commit()
        )
        run = flow.create_run()
        run.start_async(input_data={"n": 1})
        try:
            assert in_hook.wait(WAIT)
            with RunReader(tmp_path / "runs.db") as reader:
                kept = reader.get_run(run.run_id)
        finally:
            let_go.set()
        assert run.wait(timeout=WAIT).status == RunStatus.SUCCESS
    assert kept is not None
    assert kept.status == "running"  # its end is recorded once the hooks return
    assert kept.steps["last"].status == "success"
