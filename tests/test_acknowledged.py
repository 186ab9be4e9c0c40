"""What a call acknowledged is visible at once: a cancel that returned ``True``, a resume.

Promise 7 of DESIGN.md, in memory: when ``cancel()`` returns ``True`` every query, from
any thread, reads the run ``canceled``, whether an actor drove the run, the supervisor held
it (asleep, or queued behind the concurrency limit) or only the store kept it (suspended).
Of two resumes of one suspended run, the loser raises ``ResumeConflictError`` however the
two interleave. ``tests/durable/test_acknowledged.py`` holds the same on SQLite, and across
a killed process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel, field_validator

from runtime import (
    ResumeConflictError,
    RunNotSuspendedError,
    RunOutcome,
    RunStatus,
    Runtime,
    StepStatus,
    create_step,
    create_workflow,
)
from tests._support import N, wait_for_no_callboard_threads, wait_until

WAIT = 10.0  # seconds any wait may take at most, so that a bug fails instead of hanging
TRIALS = 20
GRACE = 0.3
"""Seconds a test gives a call that must not return yet to return anyway (it never has to)."""

WHERE = ["running", "sleeping", "pending", "suspended"]
"""Where a run can be when it is cancelled: which part of the runtime answers the cancel."""


class Approval(BaseModel):
    ok: bool


def stalled_step(entered: threading.Event) -> Any:
    """Runs until its run is cancelled (or for ``WAIT`` seconds)."""

    def body(ctx: Any) -> N:
        entered.set()
        ctx.abort_signal.wait(WAIT)
        return ctx.input_data

    return create_step(id="stalled", input_schema=N, output_schema=N, execute=body)


def approval_step(resume_schema: type[BaseModel] = Approval) -> Any:
    def body(ctx: Any) -> N:
        if ctx.resume_data is None:
            ctx.suspend({"question": "go on?"})
        return N(n=ctx.input_data.n + (100 if ctx.resume_data.ok else 0))

    return create_step(
        id="approve", input_schema=N, output_schema=N, execute=body, resume_schema=resume_schema
    )


def later_step(calls: list[int]) -> Any:
    def body(ctx: Any) -> N:
        calls.append(ctx.input_data.n)
        return ctx.input_data

    return create_step(id="later", input_schema=N, output_schema=N, execute=body)


class Setting:
    """A runtime and a way to bring a fresh run to where it is cancelled from."""

    def __init__(self, rt: Runtime, where: str, on_finish: Callable[[RunOutcome], None] | None):
        self.rt, self.where = rt, where
        self.entered = threading.Event()
        self.later: list[int] = []
        builder = create_workflow(
            id=f"ack-{where}", input_schema=N, output_schema=N, on_finish=on_finish
        )
        if where == "running":
            builder = builder.then(stalled_step(self.entered))
        elif where == "sleeping":
            builder = builder.sleep(60)
        elif where == "suspended":
            builder = builder.then(approval_step())
        self.wf = rt.register(builder.then(later_step(self.later)).commit())
        self.release = threading.Event()
        if where == "pending":
            # One run holds the only slot: every run started after it stays pending.
            blocker = rt.register(
                create_workflow(id="ack-blocker", input_schema=N, output_schema=N)
                .then(stalled_step(threading.Event()))
                .commit()
            )
            self._blocker = blocker.create_run()
            self._blocker.start_async(input_data={"n": 0})

    def status(self, run_id: str) -> str | None:
        result = self.wf.get_workflow_run_execution_result(run_id)
        return None if result is None else result.status

    def new_run(self) -> Any:
        """A run that is ``self.where`` now."""
        run = self.wf.create_run()
        if self.where == "suspended":
            assert run.start(input_data={"n": 1}, timeout=WAIT).status == "suspended"
            return run
        self.entered.clear()
        run.start_async(input_data={"n": 1})
        if self.where == "running":
            assert self.entered.wait(WAIT)
        else:
            wanted = "waiting" if self.where == "sleeping" else "pending"
            wait_until(lambda: self.status(run.run_id) == wanted, what=f"the run is {wanted}")
        return run

    def close(self) -> None:
        if self.where == "pending":
            assert self._blocker.cancel() is True


@pytest.fixture(params=WHERE)
def where(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def limited_runtime() -> Iterator[Runtime]:
    """One run at a time, so that a second run stays pending."""
    rt = Runtime(max_concurrent_runs=1).start()
    try:
        yield rt
    finally:
        rt.stop(timeout=5)
    left = wait_for_no_callboard_threads()
    assert not left, f"threads left after Runtime.stop(): {[t.name for t in left]}"


def setting_for(where: str, request: pytest.FixtureRequest, on_finish: Any = None) -> Setting:
    fixture = "limited_runtime" if where == "pending" else "runtime"
    setting = Setting(request.getfixturevalue(fixture), where, on_finish)
    request.addfinalizer(setting.close)
    return setting


def cancel_in_a_thread(setting: Setting, run: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Cancel ``run`` on a thread of its own, which reads the run the moment ``cancel`` returns."""
    seen: dict[str, Any] = {}
    returned = threading.Event()

    def cancel() -> None:
        try:
            seen["returned"] = run.cancel()
            seen["read"] = setting.status(run.run_id)
        except Exception as exc:
            seen["raised"] = exc
        finally:
            returned.set()

    thread = threading.Thread(target=cancel)
    thread.start()
    seen["event"] = returned
    return thread, seen


# --- cancel --------------------------------------------------------------------------------------


def test_every_query_right_after_a_cancel_that_returned_true_reads_canceled(
    where: str, request: pytest.FixtureRequest
) -> None:
    setting = setting_for(where, request)
    for trial in range(TRIALS):
        run = setting.new_run()

        thread, seen = cancel_in_a_thread(setting, run)
        assert seen["event"].wait(WAIT)
        on_this_thread = setting.status(run.run_id)
        thread.join(WAIT)

        assert seen.get("returned") is True, (trial, seen)
        assert seen["read"] == RunStatus.CANCELED, f"trial {trial}: the canceller read {seen}"
        assert on_this_thread == RunStatus.CANCELED, f"trial {trial}: another thread read it"
        assert run.cancel() is False
    assert setting.later == []


def test_a_cancel_returns_only_once_the_hooks_have_run_and_the_run_is_recorded_canceled(
    where: str, request: pytest.FixtureRequest
) -> None:
    hook_entered, hook_release = threading.Event(), threading.Event()
    outcomes: list[str] = []

    def on_finish(outcome: RunOutcome) -> None:
        hook_entered.set()
        hook_release.wait(WAIT)
        outcomes.append(outcome.status)

    setting = setting_for(where, request, on_finish)
    run = setting.new_run()

    thread, seen = cancel_in_a_thread(setting, run)
    try:
        assert hook_entered.wait(WAIT)
        assert not seen["event"].wait(GRACE), f"cancel returned while the hook ran: {seen}"
        # The canceled snapshot is recorded after the hooks: nobody reads it yet (a
        # suspended run, which the cancel takes from the store, reads running meanwhile).
        assert setting.status(run.run_id) != RunStatus.CANCELED
    finally:
        hook_release.set()
    thread.join(WAIT)

    assert seen.get("returned") is True, seen
    assert seen["read"] == RunStatus.CANCELED
    assert outcomes == ["canceled"]


def test_a_canceled_run_that_was_running_has_its_step_canceled_and_nothing_after_it(
    runtime: Runtime,
) -> None:
    entered = threading.Event()
    later: list[int] = []
    wf = runtime.register(
        create_workflow(id="ack-steps", input_schema=N, output_schema=N)
        .then(stalled_step(entered))
        .then(later_step(later))
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"n": 1})
    assert entered.wait(WAIT)

    assert run.cancel() is True

    # Read at once, with no wait in between: the recorded result is the final one.
    result = wf.get_workflow_run_execution_result(run.run_id)
    assert result is not None
    assert result.status == RunStatus.CANCELED
    assert result.steps["stalled"].status == StepStatus.CANCELED
    assert "later" not in result.steps
    assert run.wait(WAIT).status == RunStatus.CANCELED
    assert later == []


def test_of_two_threads_cancelling_one_run_exactly_one_gets_true_and_both_then_read_canceled(
    where: str, request: pytest.FixtureRequest
) -> None:
    setting = setting_for(where, request)
    for trial in range(TRIALS):
        run = setting.new_run()
        start = threading.Barrier(2)
        seen: list[tuple[bool, str | None]] = []
        lock = threading.Lock()

        def cancel(
            run: Any = run,
            start: threading.Barrier = start,
            seen: list[tuple[bool, str | None]] = seen,
            lock: threading.Lock = lock,
        ) -> None:
            start.wait(WAIT)
            returned = run.cancel()
            read = setting.status(run.run_id)
            with lock:
                seen.append((returned, read))

        threads = [threading.Thread(target=cancel) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)

        assert sorted(returned for returned, _ in seen) == [False, True], (trial, seen)
        assert [read for _, read in seen] == [RunStatus.CANCELED] * 2, (trial, seen)


# --- resume --------------------------------------------------------------------------------------


def suspended_run(runtime: Runtime, workflow_id: str, schema: type[BaseModel] = Approval) -> Any:
    wf = runtime.register(
        create_workflow(id=workflow_id, input_schema=N, output_schema=N)
        .then(approval_step(schema))
        .commit()
    )
    run = wf.create_run()
    assert run.start(input_data={"n": 1}, timeout=WAIT).status == RunStatus.SUSPENDED
    return wf, run


def test_a_resume_that_reads_the_run_after_another_resume_was_recorded_conflicts(
    runtime: Runtime,
) -> None:
    wf, run = suspended_run(runtime, "ack-resume-after")
    other = wf.create_run(run.run_id)

    run.resume_async(resume_data={"ok": True})
    with pytest.raises(ResumeConflictError) as while_running:
        other.resume_async(resume_data={"ok": False})
    assert run.wait(WAIT).result == {"n": 101}

    with pytest.raises(ResumeConflictError) as once_ended:
        other.resume(resume_data={"ok": False}, timeout=WAIT)

    assert once_ended.value.status == RunStatus.SUCCESS
    assert while_running.value.run_id == run.run_id
    assert run.wait(WAIT).result == {"n": 101}


RACE: dict[threading.Thread, Callable[[], None]] = {}
"""What a resuming thread does while ``Interrupted`` validates its resume data."""


class Interrupted(BaseModel):
    """An ``Approval`` whose validation, in a thread listed in ``RACE``, first does that thing.

    ``resume()`` validates the resume data after reading the run and before writing the
    resume: what is done here lands in between, deterministically.
    """

    ok: bool

    @field_validator("ok")
    @classmethod
    def _let_another_call_in(cls, value: bool) -> bool:
        meanwhile = RACE.pop(threading.current_thread(), None)
        if meanwhile is not None:
            meanwhile()
        return value


def test_a_resume_that_read_the_run_suspended_and_lost_to_another_resume_conflicts(
    runtime: Runtime,
) -> None:
    wf, run = suspended_run(runtime, "ack-resume-lost", Interrupted)
    winner = wf.create_run(run.run_id)
    RACE[threading.current_thread()] = lambda: winner.resume_async(resume_data={"ok": True})

    with pytest.raises(ResumeConflictError):
        run.resume_async(resume_data={"ok": False})

    assert winner.wait(WAIT).result == {"n": 101}


def test_a_resume_that_lost_to_a_cancel_finds_the_run_not_suspended_however_it_read_it(
    runtime: Runtime,
) -> None:
    wf, run = suspended_run(runtime, "ack-resume-canceled", Interrupted)
    canceller = wf.create_run(run.run_id)
    RACE[threading.current_thread()] = canceller.cancel

    with pytest.raises(RunNotSuspendedError) as read_before:
        run.resume_async(resume_data={"ok": True})
    with pytest.raises(RunNotSuspendedError) as read_after:
        run.resume_async(resume_data={"ok": True})

    assert read_before.value.status == read_after.value.status == RunStatus.CANCELED


def test_the_losers_of_resumes_racing_on_threads_always_get_resume_conflict(
    runtime: Runtime,
) -> None:
    wf, _ = suspended_run(runtime, "ack-resume-race")
    racers = 4
    for trial in range(TRIALS):
        run = wf.create_run()
        assert run.start(input_data={"n": trial}, timeout=WAIT).status == RunStatus.SUSPENDED
        start = threading.Barrier(racers)
        outcomes: list[Any] = [None] * racers

        def resume(
            slot: int,
            run_id: str = run.run_id,
            start: threading.Barrier = start,
            outcomes: list[Any] = outcomes,
        ) -> None:
            start.wait(WAIT)
            try:
                wf.create_run(run_id).resume_async(resume_data={"ok": True})
                outcomes[slot] = "won"
            except Exception as exc:
                outcomes[slot] = exc

        threads = [threading.Thread(target=resume, args=(slot,)) for slot in range(racers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)

        assert outcomes.count("won") == 1, (trial, outcomes)
        losers = [outcome for outcome in outcomes if outcome != "won"]
        assert all(isinstance(loser, ResumeConflictError) for loser in losers), (trial, losers)
        assert run.wait(WAIT).result == {"n": trial + 100}


@pytest.mark.parametrize("ending", ["ends", "suspends", "sleeps"])
def test_a_cancel_racing_the_run_to_its_end_or_its_parking_answers_as_the_store_reads(
    runtime: Runtime, ending: str
) -> None:
    builder = create_workflow(id=f"ack-race-{ending}", input_schema=N, output_schema=N)
    builder = builder.then(later_step([]))
    if ending == "suspends":
        builder = builder.then(approval_step())
    elif ending == "sleeps":
        builder = builder.sleep(60)
    wf = runtime.register(builder.commit())
    for trial in range(TRIALS * 5):
        run = wf.create_run()
        run.start_async(input_data={"n": trial})

        # The cancel may reach the run's actor as the actor stops (its run ended, or
        # left it to the supervisor or the store): it still gets an answer.
        returned = run.cancel()
        result = wf.get_workflow_run_execution_result(run.run_id)

        assert result is not None
        if returned:
            assert result.status == RunStatus.CANCELED, trial
        else:
            assert ending == "ends" and result.status == RunStatus.SUCCESS, (trial, result)
