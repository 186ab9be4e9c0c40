"""Sleeping runs (sleep, sleep_until), watching a run's events, and waiting without blocking."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from actors import supervisor
from actors.run import RunActor
from runtime import (
    RunEvent,
    RunStatus,
    Runtime,
    RunTimeoutError,
    StepResult,
    StepStatus,
    WorkflowResult,
    create_step,
    create_workflow,
)
from runtime._snapshot import decode, run_events
from runtime.testing import Harness
from tests._support import (
    N,
    actor_system,
    dbl_step,
    inc_step,
    wait_for_no_callboard_threads,
    wait_until,
)

WAIT = 10.0  # seconds any wait may take at most, so that a bug fails instead of hanging


class Delay(BaseModel):
    n: int
    seconds: float


class At(BaseModel):
    n: int
    at: datetime


def status_of(wf: Any, run_id: str) -> WorkflowResult:
    result = wf.get_workflow_run_execution_result(run_id)
    assert result is not None
    return result


def is_waiting(wf: Any, run_id: str) -> bool:
    return status_of(wf, run_id).status == RunStatus.WAITING


def gated_step(entered: threading.Event, release: threading.Event, step_id: str = "gate") -> Any:
    def body(ctx: Any) -> N:
        entered.set()
        release.wait(WAIT)
        return N(n=ctx.input_data.n + 1)

    return create_step(id=step_id, input_schema=N, output_schema=N, execute=body)


def pairs(events: list[RunEvent]) -> list[tuple[str, str | None]]:
    return [(event.type, event.path) for event in events]


def step_pairs(events: list[RunEvent]) -> list[tuple[str, str | None]]:
    return [(event.type, event.path) for event in events if event.type != "status"]


def statuses(events: list[RunEvent]) -> list[str]:
    return [event.status.value for event in events if event.type == "status"]


@pytest.fixture
def other_timezone() -> Iterator[None]:
    """Run the test with a local time zone five hours behind UTC (no tz database needed)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TZ", "XXX+05")
    time.tzset()
    try:
        yield
    finally:
        mp.undo()
        time.tzset()


# --- sleep ----------------------------------------------------------------------------------------


def test_a_sleeping_run_is_waiting_until_its_time_then_goes_on(runtime: Runtime) -> None:
    wf = runtime.register(
        create_workflow(id="nap", input_schema=N, output_schema=N)
        .sleep(0.3)
        .then(inc_step())
        .commit()
    )
    run = wf.create_run()
    before = time.time()
    run.start_async(input_data={"n": 1})
    wait_until(lambda: is_waiting(wf, run.run_id))
    seen_waiting = time.time()
    waiting = status_of(wf, run.run_id)
    sleep_id = next(iter(waiting.steps))
    assert sleep_id.startswith("sleep-")
    assert waiting.steps[sleep_id].status == StepStatus.WAITING
    assert "inc" not in waiting.steps
    assert waiting.waiting_until is not None
    wake = waiting.waiting_until.timestamp()
    # The wake time was fixed after the start and before the run was seen waiting.
    assert before + 0.3 <= wake <= seen_waiting + 0.3

    final = run.wait(WAIT)
    assert final.status == RunStatus.SUCCESS
    assert final.result == {"n": 2}
    assert final.waiting_until is None
    assert final.steps[sleep_id].status == StepStatus.SUCCESS
    assert final.steps[sleep_id].output == {"n": 1}
    assert final.steps["inc"].payload == {"n": 1}
    assert list(final.steps) == [sleep_id, "inc"]


def test_the_input_passes_through_a_sleep_unchanged(runtime: Runtime) -> None:
    wf = runtime.register(
        create_workflow(id="only-nap", input_schema=Delay, output_schema=Delay)
        .then(
            create_step(
                id="keep",
                input_schema=Delay,
                output_schema=Delay,
                execute=lambda c: Delay(n=c.input_data.n * 10, seconds=c.input_data.seconds),
            )
        )
        .sleep(0.05, id="pause")
        .commit()
    )
    final = wf.create_run().start(input_data={"n": 4, "seconds": 1.5}, timeout=WAIT)
    assert final.status == RunStatus.SUCCESS
    assert final.result == {"n": 40, "seconds": 1.5}
    assert final.steps["pause"].payload == {"n": 40, "seconds": 1.5}
    assert final.steps["pause"].output == {"n": 40, "seconds": 1.5}


def test_a_sleep_function_reads_the_input_to_choose_the_length(runtime: Runtime) -> None:
    seen: list[Any] = []

    def length(ctx: Any) -> float:
        seen.append(ctx.input_data)
        return ctx.input_data["seconds"]

    wf = runtime.register(
        create_workflow(id="nap-fn", input_schema=Delay, output_schema=Delay).sleep(length).commit()
    )
    run = wf.create_run()
    before = time.time()
    run.start_async(input_data={"n": 1, "seconds": 0.4})
    wait_until(lambda: is_waiting(wf, run.run_id))
    seen_waiting = time.time()
    waiting_until = status_of(wf, run.run_id).waiting_until
    assert waiting_until is not None
    assert before + 0.4 <= waiting_until.timestamp() <= seen_waiting + 0.4
    final = run.wait(WAIT)
    assert final.status == RunStatus.SUCCESS
    assert final.result == {"n": 1, "seconds": 0.4}
    assert seen == [{"n": 1, "seconds": 0.4}]


def test_sleep_until_an_aware_datetime_waits_until_that_moment(runtime: Runtime) -> None:
    moment = datetime.now(UTC) + timedelta(seconds=0.3)
    wf = runtime.register(
        create_workflow(id="until", input_schema=N, output_schema=N)
        .sleep_until(moment)
        .then(inc_step())
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"n": 1})
    wait_until(lambda: is_waiting(wf, run.run_id))
    assert status_of(wf, run.run_id).waiting_until == moment
    final = run.wait(WAIT)
    assert final.status == RunStatus.SUCCESS
    assert final.result == {"n": 2}


def test_sleep_until_takes_a_naive_datetime_as_utc(runtime: Runtime, other_timezone: None) -> None:
    aware = datetime.now(UTC) + timedelta(seconds=0.3)
    naive = aware.replace(tzinfo=None)
    wf = runtime.register(
        create_workflow(id="until-naive", input_schema=N, output_schema=N)
        .sleep_until(naive)
        .then(inc_step())
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"n": 1})
    wait_until(lambda: is_waiting(wf, run.run_id))
    # Read as local time (five hours behind UTC here) it would be five hours late.
    assert status_of(wf, run.run_id).waiting_until == aware
    final = run.wait(WAIT)
    assert final.status == RunStatus.SUCCESS


def test_sleep_until_a_past_moment_does_not_pause(runtime: Runtime) -> None:
    wf = runtime.register(
        create_workflow(id="until-past", input_schema=N, output_schema=N)
        .sleep_until(datetime(2000, 1, 1, tzinfo=UTC), id="past")
        .then(inc_step())
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"n": 1})
    events = list(run.watch(timeout=WAIT))
    assert RunStatus.WAITING not in statuses(events)
    assert all(event.status != RunStatus.WAITING for event in events)
    final = run.wait(WAIT)
    assert final.status == RunStatus.SUCCESS
    assert final.result == {"n": 2}
    assert final.steps["past"].status == StepStatus.SUCCESS


def test_sleep_until_a_function_of_the_input(runtime: Runtime) -> None:
    moment = datetime.now(UTC) + timedelta(seconds=0.3)
    wf = runtime.register(
        create_workflow(id="until-fn", input_schema=At, output_schema=At)
        .sleep_until(lambda ctx: datetime.fromisoformat(ctx.input_data["at"]))
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"n": 1, "at": moment})
    wait_until(lambda: is_waiting(wf, run.run_id))
    assert status_of(wf, run.run_id).waiting_until == moment
    final = run.wait(WAIT)
    assert final.status == RunStatus.SUCCESS
    assert final.result == {"n": 1, "at": moment.isoformat().replace("+00:00", "Z")}


def test_a_sleep_function_that_returns_a_string_fails_the_run_with_a_type_error(
    runtime: Runtime,
) -> None:
    wf = runtime.register(
        create_workflow(id="nap-bad", input_schema=N, output_schema=N)
        .sleep(lambda ctx: "soon", id="bad-nap")
        .then(inc_step())
        .commit()
    )
    final = wf.create_run().start(input_data={"n": 1}, timeout=WAIT)
    assert final.status == RunStatus.FAILED
    assert final.error is not None
    assert final.error.name == "TypeError"
    assert "bad-nap" in final.error.message
    assert "str" in final.error.message
    assert "seconds" in final.error.message
    assert final.steps["bad-nap"].status == StepStatus.FAILED
    assert "inc" not in final.steps


# --- sleeping runs hold no thread, no actor, no slot ----------------------------------------------


def test_two_thousand_sleeping_runs_hold_no_threads_and_all_succeed() -> None:
    # On a virtual clock moved by hand: every run is seen waiting before any wakes,
    # however long starting and looking at 2,000 runs takes.
    with Harness(time_skipping=False) as harness:
        wf = harness.register(
            create_workflow(id="crowd", input_schema=N, output_schema=N)
            .sleep(3600)
            .then(inc_step())
            .commit()
        )
        threads_at_start = threading.active_count()
        runs = [wf.create_run() for _ in range(2000)]
        for index, run in enumerate(runs):
            run.start_async(input_data={"n": index})

        peak = threading.active_count()
        not_yet_waiting = {run.run_id for run in runs}

        def all_seen_waiting() -> bool:
            nonlocal peak
            for run_id in list(not_yet_waiting):
                peak = max(peak, threading.active_count())
                status = status_of(wf, run_id).status
                if status == RunStatus.WAITING:
                    not_yet_waiting.discard(run_id)
                else:
                    assert status in (RunStatus.PENDING, RunStatus.RUNNING), status
            return not not_yet_waiting

        wait_until(all_seen_waiting)
        peak = max(peak, threading.active_count())
        assert peak <= threads_at_start + 10

        harness.clock.advance(3600)
        for index, run in enumerate(runs):
            final = run.wait(WAIT)
            assert final.status == RunStatus.SUCCESS, final.error
            assert final.result == {"n": index + 1}


def test_runs_held_back_while_the_dispatcher_is_behind_all_wake_once_in_order(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sleeps that end together: the first woken run's actor waits for the dispatcher
    # while the supervisor takes the others' wakes, and with a backlog of one allowed
    # the others are held back (as their ids) and woken as it catches up.
    monkeypatch.setattr(supervisor, "WAKE_BACKLOG", 1)
    held = 0
    on_wakes_held = supervisor.SupervisorActor._on_wakes_held

    def counted(self: supervisor.SupervisorActor) -> None:
        nonlocal held
        held += 1
        on_wakes_held(self)

    monkeypatch.setattr(supervisor.SupervisorActor, "_on_wakes_held", counted)
    moment = datetime.now(UTC) + timedelta(seconds=0.5)
    wf = runtime.register(
        create_workflow(id="together", input_schema=N, output_schema=N)
        .sleep_until(moment)
        .then(inc_step())
        .commit()
    )
    runs = [wf.create_run() for _ in range(40)]
    for index, run in enumerate(runs):
        run.start_async(input_data={"n": index})

    finals = [run.wait(WAIT) for run in runs]

    assert held > 0
    assert [final.result for final in finals] == [{"n": index + 1} for index in range(40)]
    woken = []
    for final in finals:
        sleep = next(iter(final.steps.values()))
        assert sleep.status == StepStatus.SUCCESS
        assert sleep.ended_at is not None and sleep.ended_at >= moment
        woken.append(sleep.ended_at)
    # The timers fire in the order the sleeps began, the supervisor takes their wakes in
    # that order, and the ids it holds back too: woken as started.
    assert woken == sorted(woken)


def test_a_waiting_run_holds_no_actor(runtime: Runtime) -> None:
    wf = runtime.register(
        create_workflow(id="idle", input_schema=N, output_schema=N)
        .sleep(60)
        .then(inc_step())
        .commit()
    )
    runs = [wf.create_run() for _ in range(50)]
    for run in runs:
        run.start_async(input_data={"n": 1})
    wait_until(lambda: all(is_waiting(wf, run.run_id) for run in runs))
    supervisor = actor_system(runtime).supervisor.actor_inbox._actor  # read only, between messages

    def parked() -> bool:
        return not supervisor._runs and len(supervisor._sleeping) == 50

    wait_until(parked)
    ids = {run.run_id for run in runs}

    def ours() -> list[Any]:
        # Run actors of other runtimes (earlier tests, the default runtime) do not count.
        return [
            ref
            for ref in actor_system(runtime).dispatcher.actors(RunActor)
            if getattr(ref.actor_inbox._actor, "_snapshot", {}).get("run_id") in ids
        ]

    wait_until(lambda: not ours())
    for run in runs:
        assert run.cancel() is True
    assert all(run.wait(WAIT).status == RunStatus.CANCELED for run in runs)
    wait_until(lambda: not supervisor._sleeping)


def test_sleeping_runs_do_not_hold_concurrency_slots() -> None:
    rt = Runtime(max_concurrent_runs=2).start()
    try:
        wf = rt.register(
            create_workflow(id="slots", input_schema=N, output_schema=N)
            .then(inc_step())
            .sleep(60)
            .then(dbl_step())
            .commit()
        )
        runs = [wf.create_run() for _ in range(10)]
        for run in runs:
            run.start_async(input_data={"n": 1})
        # All ten are asleep at the same moment: two slots were enough for all of them.
        wait_until(lambda: all(is_waiting(wf, run.run_id) for run in runs))
        for run in runs:
            assert run.cancel() is True
        assert all(run.wait(WAIT).status == RunStatus.CANCELED for run in runs)
    finally:
        rt.stop(timeout=5)
    assert not wait_for_no_callboard_threads()


def test_stopping_a_memory_runtime_fails_a_sleeping_run() -> None:
    rt = Runtime().start()
    try:
        wf = rt.register(
            create_workflow(id="long-nap", input_schema=N, output_schema=N)
            .sleep(60)
            .then(inc_step())
            .commit()
        )
        run = wf.create_run()
        run.start_async(input_data={"n": 1})
        wait_until(lambda: is_waiting(wf, run.run_id))
    finally:
        rt.stop(timeout=0.5)
    assert not rt.is_running
    final = status_of(wf, run.run_id)
    assert final.status == RunStatus.FAILED
    assert final.error is not None
    assert final.error.name == "RuntimeStoppedError"
    assert "inc" not in final.steps
    assert not wait_for_no_callboard_threads()


# --- watch ----------------------------------------------------------------------------------------


def test_watch_yields_a_run_events_in_order_and_ends_with_its_final_status(
    runtime: Runtime,
) -> None:
    entered, release = threading.Event(), threading.Event()
    wf = runtime.register(
        create_workflow(id="watched", input_schema=N, output_schema=N)
        .then(gated_step(entered, release, "inc"))
        .sleep(0.1, id="nap")
        .then(dbl_step())
        .commit()
    )
    run = wf.create_run()
    try:
        run.start_async(input_data={"n": 1})
        watch = run.watch(timeout=WAIT)
        assert entered.wait(WAIT)
    finally:
        release.set()
    events = list(watch)

    assert all(event.run_id == run.run_id for event in events)
    assert step_pairs(events) == [
        ("step_started", "inc"),
        ("step_finished", "inc"),
        ("step_started", "nap"),
        ("step_finished", "nap"),
        ("step_started", "dbl"),
        ("step_finished", "dbl"),
    ]
    seen = statuses(events)
    if seen[0] == RunStatus.PENDING:
        seen = seen[1:]
    assert seen == ["running", "waiting", "running", "success"]
    assert (events[-1].type, events[-1].status) == ("status", RunStatus.SUCCESS)
    kinds = pairs(events)
    asleep = next(i for i, e in enumerate(events) if e.type == "status" and e.status == "waiting")
    assert kinds.index(("step_started", "nap")) < asleep < kinds.index(("step_finished", "nap"))

    finished = {event.path: event.step for event in events if event.type == "step_finished"}
    assert all(isinstance(step, StepResult) for step in finished.values())
    assert finished["inc"] is not None and finished["inc"].output == {"n": 2}
    assert finished["nap"] is not None and finished["nap"].status == StepStatus.SUCCESS
    assert finished["dbl"] is not None and finished["dbl"].output == {"n": 4}
    assert finished["dbl"].status == StepStatus.SUCCESS


def test_watching_a_finished_run_yields_its_events_and_ends(runtime: Runtime) -> None:
    wf = runtime.register(
        create_workflow(id="done", input_schema=N, output_schema=N)
        .then(inc_step())
        .then(dbl_step())
        .commit()
    )
    run = wf.create_run()
    assert run.start(input_data={"n": 1}, timeout=WAIT).status == RunStatus.SUCCESS
    events = list(run.watch(timeout=WAIT))
    assert pairs(events) == [
        ("status", None),  # told from its record: it began pending, at its creation,
        ("status", None),  # and ran from its first step's start
        ("step_started", "inc"),
        ("step_finished", "inc"),
        ("step_started", "dbl"),
        ("step_finished", "dbl"),
        ("status", None),
    ]
    # Its steps moved while it ran (each read "success" before), and then it ended.
    assert [event.status for event in events] == [
        RunStatus.PENDING,
        *[RunStatus.RUNNING] * 5,
        RunStatus.SUCCESS,
    ]
    assert events[5].step is not None and events[5].step.output == {"n": 4}
    # A start told late carries the step's record as it was when it started.
    started = events[2].step
    assert started is not None and started.status == "running"
    assert started.output is None and started.ended_at is None
    assert events[2].at == started.started_at


def _nested(workflow_id: str, execute: Any) -> Any:
    inner = create_step(id="inner", input_schema=N, output_schema=N, execute=execute)
    child = create_workflow(id="child", input_schema=N, output_schema=N).then(inner).commit()
    return create_workflow(id=workflow_id, input_schema=N, output_schema=N).then(child).commit()


def _finishes(events: Any) -> list[tuple[str | None, str]]:
    return [
        (event.path, event.step.status.value)
        for event in events
        if event.type == "step_finished" and event.step is not None
    ]


def test_a_nested_workflow_ends_after_its_step_under_a_clock_that_stands_still() -> None:
    """The test kit's clock does not move while steps run: one time for both ends (p2)."""
    with Harness() as harness:
        run = harness.register(_nested("still", lambda ctx: ctx.input_data)).create_run()
        run.start_async(input_data={"n": 1})
        live = _finishes(run.watch(timeout=WAIT))
        told = _finishes(run.watch(timeout=WAIT))  # from its record, ended

    assert live == told == [("child.inner", "success"), ("child", "success")]


def test_a_canceled_nested_workflow_ends_after_its_suspended_step(runtime: Runtime) -> None:
    """A cancel ends the step and the nested workflow at one clock reading (p2)."""

    def ask(ctx: Any) -> Any:
        if ctx.resume_data is None:
            ctx.suspend({})
        return ctx.input_data

    run = runtime.register(_nested("asks", ask)).create_run()
    run.start_async(input_data={"n": 1})
    watch = run.watch(timeout=WAIT)
    assert run.wait(timeout=WAIT).status == RunStatus.SUSPENDED
    assert run.cancel()

    assert _finishes(watch)[-2:] == [("child.inner", "canceled"), ("child", "canceled")]
    assert _finishes(run.watch(timeout=WAIT))[-2:] == [
        ("child.inner", "canceled"),
        ("child", "canceled"),
    ]


def _blocked_run(runtime: Runtime, release: threading.Event) -> Any:
    """A run started and waiting in its one step until ``release`` is set."""
    entered = threading.Event()
    wf = runtime.register(
        create_workflow(id="stuck", input_schema=N, output_schema=N)
        .then(gated_step(entered, release))
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"n": 1})
    assert entered.wait(WAIT)
    return run


def test_watch_with_a_timeout_raises_run_timeout_while_a_step_blocks(runtime: Runtime) -> None:
    release = threading.Event()
    try:
        run = _blocked_run(runtime, release)
        watch = run.watch(timeout=0.2)
        received: list[RunEvent] = []
        with pytest.raises(RunTimeoutError) as caught:
            for event in watch:
                received.append(event)
        assert caught.value.run_id == run.run_id
        assert ("step_finished", "gate") not in pairs(received)
    finally:
        release.set()
    assert run.wait(WAIT).status == RunStatus.SUCCESS
    # The same watch goes on after a timeout: the rest of the events are still there.
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            received.extend(watch)
            break
        except RunTimeoutError:
            continue
    assert ("step_finished", "gate") in pairs(received)
    assert (received[-1].type, received[-1].status) == ("status", RunStatus.SUCCESS)


def test_async_for_over_a_watch_with_a_timeout_raises_run_timeout_too(runtime: Runtime) -> None:
    # The timeout was for `for` only: `async for` over watch(timeout=...) of a run with
    # nothing to tell (a step that blocks, a suspended run) waited for ever.
    release = threading.Event()

    async def watch_until_timeout(run: Any) -> tuple[list[RunEvent], RunTimeoutError | None]:
        received: list[RunEvent] = []
        try:
            async for event in run.watch(timeout=0.2):
                received.append(event)
        except RunTimeoutError as exc:
            return received, exc
        return received, None

    try:
        run = _blocked_run(runtime, release)
        received, timed_out = asyncio.run(asyncio.wait_for(watch_until_timeout(run), WAIT))
        assert timed_out is not None and timed_out.run_id == run.run_id
        assert ("step_started", "gate") in pairs(received)
        assert ("step_finished", "gate") not in pairs(received)
    finally:
        release.set()
    assert run.wait(WAIT).status == RunStatus.SUCCESS


def test_async_for_over_watch_yields_the_events(runtime: Runtime) -> None:
    wf = runtime.register(
        create_workflow(id="async-watch", input_schema=N, output_schema=N)
        .then(inc_step())
        .sleep(0.05, id="nap")
        .then(dbl_step())
        .commit()
    )

    async def main() -> list[RunEvent]:
        run = wf.create_run()
        run.start_async(input_data={"n": 1})
        return [event async for event in run.watch()]

    events = asyncio.run(asyncio.wait_for(main(), WAIT))
    assert ("step_finished", "dbl") in pairs(events)
    assert ("step_finished", "nap") in pairs(events)
    assert (events[-1].type, events[-1].status) == ("status", RunStatus.SUCCESS)
    finished = [e for e in events if e.type == "step_finished" and e.path == "dbl"]
    assert finished[0].step is not None and finished[0].step.output == {"n": 4}


def test_two_watchers_of_a_run_both_get_every_event(runtime: Runtime) -> None:
    entered, release = threading.Event(), threading.Event()
    wf = runtime.register(
        create_workflow(id="two-watchers", input_schema=N, output_schema=N)
        .then(gated_step(entered, release))
        .then(dbl_step())
        .commit()
    )
    run = wf.create_run()
    try:
        run.start_async(input_data={"n": 1})
        assert entered.wait(WAIT)
        wait_until(lambda: "gate" in status_of(wf, run.run_id).steps)
        first, second = run.watch(timeout=WAIT), run.watch(timeout=WAIT)
    finally:
        release.set()
    one, two = list(first), list(second)
    expected = [
        ("step_started", "gate"),
        ("step_finished", "gate"),
        ("step_started", "dbl"),
        ("step_finished", "dbl"),
    ]
    for events in (one, two):
        assert step_pairs(events) == expected
        assert (events[-1].type, events[-1].status) == ("status", RunStatus.SUCCESS)
    assert [(e.type, e.path, e.status) for e in one] == [(e.type, e.path, e.status) for e in two]


def test_a_retried_step_yields_a_step_retrying_event(runtime: Runtime) -> None:
    entered, release = threading.Event(), threading.Event()

    def flaky(ctx: Any) -> N:
        if ctx.retry_count == 0:
            entered.set()
            release.wait(WAIT)
            raise ValueError("first attempt fails")
        return N(n=ctx.input_data.n + ctx.retry_count)

    wf = runtime.register(
        create_workflow(
            id="retrying", input_schema=N, output_schema=N, retry_config={"delay": 0.05}
        )
        .then(create_step(id="flaky", input_schema=N, output_schema=N, execute=flaky, retries=2))
        .commit()
    )
    run = wf.create_run()
    try:
        run.start_async(input_data={"n": 1})
        assert entered.wait(WAIT)
        watch = run.watch(timeout=WAIT)
        # The registry takes a watch in its own time: its first event says it has, so
        # the failure below comes while the run is watched, not before.
        events = [next(iter(watch))]
    finally:
        release.set()
    events += list(watch)
    assert step_pairs(events) == [
        ("step_started", "flaky"),
        ("step_retrying", "flaky"),
        ("step_finished", "flaky"),
    ]
    retrying = events[[e.type for e in events].index("step_retrying")]
    assert retrying.step is not None and retrying.step.attempts == 2
    assert events[-1].status == RunStatus.SUCCESS
    assert run.wait(WAIT).result == {"n": 2}


def test_a_retried_item_of_a_foreach_yields_a_step_retrying_event(runtime: Runtime) -> None:
    # The foreach's record kept attempts 1 through its items' retries: no event told them.
    entered, release = threading.Event(), threading.Event()

    def flaky(ctx: Any) -> N:
        if ctx.retry_count == 0 and ctx.input_data.n == 2:
            entered.set()
            release.wait(WAIT)
            raise ValueError("the first attempt of item 2 fails")
        return ctx.input_data

    wf = runtime.register(
        create_workflow(id="items", input_schema=N, output_schema=N)
        .map(lambda ctx: [{"n": n} for n in range(ctx.input_data["n"])])
        .foreach(create_step(id="flaky", input_schema=N, output_schema=N, execute=flaky, retries=2))
        .map(lambda ctx: {"n": len(ctx.input_data)})
        .commit()
    )
    run = wf.create_run()
    try:
        run.start_async(input_data={"n": 3})
        assert entered.wait(WAIT)
        watch = run.watch(timeout=WAIT)
        events = [next(iter(watch))]
    finally:
        release.set()
    events += list(watch)
    retrying = [e for e in events if e.type == "step_retrying"]
    assert [e.path for e in retrying] == ["flaky"]
    assert retrying[0].step is not None and retrying[0].step.attempts == 2
    assert retrying[0].step.error is not None
    assert "item 2 fails" in retrying[0].step.error.message
    result = run.wait(WAIT)
    assert result.result == {"n": 3} and result.steps["flaky"].attempts == 2


# --- waiting: wait_async, suspended runs ----------------------------------------------------------


def test_wait_async_does_not_block_the_event_loop(runtime: Runtime) -> None:
    ticked = threading.Event()

    def needs_ticks(ctx: Any) -> N:
        # Only a ticker task on the caller's event loop can let this step end well.
        if not ticked.wait(WAIT):
            raise RuntimeError("the event loop did not tick while the run was awaited")
        return N(n=ctx.input_data.n + 1)

    wf = runtime.register(
        create_workflow(id="async-wait", input_schema=N, output_schema=N)
        .then(create_step(id="needs-ticks", input_schema=N, output_schema=N, execute=needs_ticks))
        .commit()
    )

    async def main() -> tuple[WorkflowResult, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1
                if ticks == 5:
                    ticked.set()

        run = wf.create_run()
        run.start_async(input_data={"n": 1})
        task = asyncio.create_task(ticker())
        try:
            result = await run.wait_async()
        finally:
            task.cancel()
        return result, ticks

    result, ticks = asyncio.run(asyncio.wait_for(main(), 2 * WAIT))
    assert result.status == RunStatus.SUCCESS, result.error
    assert result.result == {"n": 2}
    assert ticks >= 5


def test_wait_async_can_be_given_a_timeout_with_wait_for(runtime: Runtime) -> None:
    entered, release = threading.Event(), threading.Event()
    wf = runtime.register(
        create_workflow(id="async-timeout", input_schema=N, output_schema=N)
        .then(gated_step(entered, release))
        .commit()
    )
    run = wf.create_run()

    async def main() -> WorkflowResult:
        run.start_async(input_data={"n": 1})
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(run.wait_async(), 0.2)
        assert status_of(wf, run.run_id).status == RunStatus.RUNNING
        release.set()
        return await asyncio.wait_for(run.wait_async(), WAIT)

    try:
        result = asyncio.run(main())
    finally:
        release.set()
    assert result.status == RunStatus.SUCCESS
    assert result.result == {"n": 2}


def test_wait_returns_for_a_suspended_run(runtime: Runtime) -> None:
    def ask(ctx: Any) -> N:
        if ctx.resume_data is None:
            ctx.suspend({"question": "go on?"})
        return ctx.input_data

    wf = runtime.register(
        create_workflow(id="asks", input_schema=N, output_schema=N)
        .then(create_step(id="ask", input_schema=N, output_schema=N, execute=ask))
        .then(inc_step())
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"n": 1})
    result = run.wait(WAIT)
    assert result.status == RunStatus.SUSPENDED
    assert result.suspended == {"ask": {"question": "go on?"}}
    assert "inc" not in result.steps
    awaited = asyncio.run(asyncio.wait_for(run.wait_async(), WAIT))
    assert awaited.status == RunStatus.SUSPENDED
    assert run.cancel() is True


# --- known bugs ---------------------------------------------------------------------------------


def test_watching_a_finished_run_after_the_runtime_stopped_yields_its_events() -> None:
    rt = Runtime().start()
    try:
        wf = rt.register(
            create_workflow(id="after-stop", input_schema=N, output_schema=N)
            .then(inc_step())
            .commit()
        )
        run = wf.create_run()
        assert run.start(input_data={"n": 1}, timeout=WAIT).status == RunStatus.SUCCESS
    finally:
        rt.stop(timeout=5)
    events = list(run.watch(timeout=WAIT))
    assert pairs(events) == [
        ("status", None),  # pending, at its creation
        ("status", None),  # running, from its first step's start
        ("step_started", "inc"),
        ("step_finished", "inc"),
        ("status", None),
    ]


@pytest.mark.parametrize("seconds", [float("nan"), float("inf")])
def test_sleep_refuses_seconds_that_are_not_finite(seconds: float) -> None:
    from runtime import WorkflowDefinitionError

    builder = create_workflow(id="nap-odd", input_schema=N, output_schema=N)
    with pytest.raises(WorkflowDefinitionError):
        builder.sleep(seconds)


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), 1e300])
def test_a_sleep_function_that_returns_a_number_that_is_not_finite_fails_the_run(
    runtime: Runtime, seconds: float
) -> None:
    wf = runtime.register(
        create_workflow(id="nap-fn-odd", input_schema=N, output_schema=N)
        .sleep(lambda ctx: seconds, id="odd-nap")
        .then(inc_step())
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"n": 1})
    try:
        wait_until(lambda: status_of(wf, run.run_id).status not in ("pending", "running"))
        final = status_of(wf, run.run_id)
    finally:
        run.cancel()  # a run that parked for ever must not hold up the runtime's stop
    assert final.status == RunStatus.FAILED
    assert final.error is not None
    assert "odd-nap" in final.error.message


def test_waiting_until_is_right_for_a_moment_far_in_the_future(runtime: Runtime) -> None:
    moment = datetime(3000, 1, 1, tzinfo=UTC)
    wf = runtime.register(
        create_workflow(id="far", input_schema=N, output_schema=N)
        .sleep_until(moment)
        .then(inc_step())
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"n": 1})
    wait_until(lambda: is_waiting(wf, run.run_id))
    waiting_until = status_of(wf, run.run_id).waiting_until
    assert run.cancel() is True
    assert waiting_until == moment


@pytest.mark.parametrize("how", ["resume", "restart"])
def test_a_step_that_ran_again_unseen_is_told_started_before_its_end(
    runtime: Runtime, how: str
) -> None:
    # A watcher in another process reads a run's newest snapshot only: one that saw a
    # step suspended (or failed) and next sees it ended never saw it running again,
    # and told its end with no start.
    failing = [True]

    def ask(ctx: Any) -> N:
        if how == "resume" and ctx.resume_data is None:
            ctx.suspend({})
        if how == "restart" and failing[0]:
            failing[0] = False
            raise ValueError("not yet")
        return N(n=ctx.input_data.n + 1)

    wf = runtime.register(
        create_workflow(id="again", input_schema=N, output_schema=N)
        .then(create_step(id="ask", input_schema=N, output_schema=N, execute=ask))
        .commit()
    )
    run = wf.create_run()
    first = run.start(input_data={"n": 1}, timeout=WAIT)
    assert first.status == ("suspended" if how == "resume" else "failed")
    before = decode_record(runtime, run.run_id)
    if how == "resume":
        run.resume(resume_data={}, timeout=WAIT)
    else:
        run.restart(timeout=WAIT)
    after = decode_record(runtime, run.run_id)
    seen = {
        path: (step["status"], step.get("attempts", 1), step.get("iterations") or 0)
        for path, step in before["steps"].items()
    }

    told = run_events(after, before["status"], seen)

    assert [(e.type, e.path) for e in told if e.path] == [
        ("step_started", "ask"),
        ("step_finished", "ask"),
    ]
    started = next(e for e in told if e.type == "step_started")
    assert started.step is not None and started.step.status == "running"
    assert told[-1].status == RunStatus.SUCCESS


def decode_record(runtime: Runtime, run_id: str) -> Any:
    record = runtime.store.load(run_id)
    assert record is not None
    return decode(record.data, run_id)
