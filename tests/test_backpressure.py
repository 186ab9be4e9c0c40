"""Backpressure: a bounded step pool, and a bound on runs waiting to start."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from actors._pool import SWEPT_PAST
from runtime import (
    Queue,
    RunAlreadyStartedError,
    Runtime,
    RuntimeOverloadedError,
    WorkflowError,
    create_step,
    create_workflow,
)
from runtime._runtime import DEFAULT_MAX_STEP_THREADS
from runtime.testing import Harness
from tests._support import (
    BLOCK_LIMIT,
    Runtimes,
    Value,
    actor_system,
    advance_until,
    quick_workflow,
    shout_step,
    wait_until,
)

NOT_BEFORE = 0.5
"""Seconds to watch for something that must not happen (the pool grows within 20 ms)."""


def step_threads() -> set[threading.Thread]:
    """The live threads of step actors (pykka names a threading actor's thread after its class)."""
    return {thread for thread in threading.enumerate() if thread.name.startswith("StepActor-")}


def gated_workflow(
    arrived: threading.Semaphore, gate: threading.Event, seen: list[tuple[int, int]]
) -> Any:
    """One step that notes the step threads and all threads, signals ``arrived``, waits."""

    def hold(ctx: Any) -> Value:
        seen.append((len(step_threads()), threading.active_count()))
        arrived.release()
        gate.wait(BLOCK_LIMIT)
        return ctx.input_data

    step = create_step(id="hold", input_schema=Value, output_schema=Value, execute=hold)
    return create_workflow(id="gated", input_schema=Value, output_schema=Value).then(step).commit()


def hold_more_steps_than_threads(
    rt: Runtime, gate: threading.Event, bound: int, runs: int
) -> list[tuple[int, int]]:
    """Start ``runs`` runs of a blocking step; exactly ``bound`` of them may be running.

    Returns what each step saw as it began: the live step threads and all threads.
    """
    arrived = threading.Semaphore(0)
    seen: list[tuple[int, int]] = []
    before = step_threads()
    wf = rt.register(gated_workflow(arrived, gate, seen))
    started = [wf.create_run() for _ in range(runs)]
    for run in started:
        run.start_async(input_data={"value": "x"})

    for _ in range(bound):
        assert arrived.acquire(timeout=BLOCK_LIMIT), "a step never got a thread"
    # Every thread is blocked; the pool would have grown within a tick (20 ms).
    assert not arrived.acquire(timeout=NOT_BEFORE), "a step ran past max_step_threads"
    assert len(step_threads() - before) == bound
    gate.set()

    results = [run.wait(timeout=BLOCK_LIMIT) for run in started]
    assert [result.status for result in results] == ["success"] * runs  # none lost
    assert len(seen) == runs
    assert max(steps for steps, _ in seen) <= bound
    return seen


def test_a_burst_of_blocking_steps_runs_on_at_most_max_step_threads(runtimes: Runtimes) -> None:
    threads_before = threading.active_count()
    rt = runtimes.start("memory", max_step_threads=3)

    seen = hold_more_steps_than_threads(rt, runtimes.gate(), bound=3, runs=30)

    # The step threads and a few of the runtime's own (dispatcher, step pool
    # monitor, registry), none per run.
    assert max(threads for _, threads in seen) - threads_before <= 3 + 5


def test_the_default_bound_holds_too(runtimes: Runtimes) -> None:
    rt = runtimes.start("memory")
    hold_more_steps_than_threads(
        rt, runtimes.gate(), bound=DEFAULT_MAX_STEP_THREADS, runs=DEFAULT_MAX_STEP_THREADS + 8
    )


def test_the_default_bound_is_64_to_128_threads() -> None:
    assert 64 <= DEFAULT_MAX_STEP_THREADS <= 128


def test_steps_beyond_the_bound_wait_their_turn_and_every_run_ends(runtimes: Runtimes) -> None:
    rt = runtimes.start("memory", max_step_threads=1)
    seen: list[str] = []

    def note(ctx: Any) -> Value:
        seen.append(ctx.input_data.value)
        return Value(value=ctx.input_data.value.upper())

    step = create_step(id="note", input_schema=Value, output_schema=Value, execute=note)
    wf = rt.register(
        create_workflow(id="one-thread", input_schema=Value, output_schema=Value)
        .then(step)
        .then(create_step(id="again", input_schema=Value, output_schema=Value, execute=note))
        .commit()
    )
    runs = [wf.create_run() for _ in range(200)]
    for index, run in enumerate(runs):
        run.start_async(input_data={"value": f"v{index}"})

    results = [run.wait(timeout=BLOCK_LIMIT) for run in runs]

    assert [result.result for result in results] == [{"value": f"V{i}"} for i in range(200)]
    assert len(seen) == 400


def test_a_step_waiting_for_a_thread_when_its_run_is_cancelled_never_starts(
    runtimes: Runtimes,
) -> None:
    # Its call was handed to the step threads already: it ran once a thread came free,
    # after cancel() had returned True ("no further step starts").
    rt = runtimes.start("memory", max_step_threads=1)
    gate = runtimes.gate()
    seen: list[str] = []

    def note(ctx: Any) -> Value:
        seen.append(ctx.input_data.value)
        if ctx.input_data.value == "blocker":
            assert gate.wait(BLOCK_LIMIT)
        return ctx.input_data

    wf = rt.register(
        create_workflow(id="queued-call", input_schema=Value, output_schema=Value)
        .then(create_step(id="note", input_schema=Value, output_schema=Value, execute=note))
        .commit()
    )
    blocker = wf.create_run()
    blocker.start_async(input_data={"value": "blocker"})
    wait_until(lambda: seen == ["blocker"], what="the blocker holds the only step thread")
    waiting = wf.create_run()
    waiting.start_async(input_data={"value": "waiting"})
    time.sleep(0.1)  # its step's call waits for the thread

    assert waiting.cancel() is True
    gate.set()
    assert blocker.wait(timeout=BLOCK_LIMIT).status == "success"
    after = wf.create_run().start(input_data={"value": "after"}, timeout=BLOCK_LIMIT)
    assert after.status == "success"  # the thread went on to the next call

    assert seen == ["blocker", "after"]
    assert waiting.wait(timeout=BLOCK_LIMIT).status == "canceled"


def let_go_workflow(seen: list[str], gate: threading.Event) -> Any:
    """One step that notes its input; the input ``blocker`` holds its thread until ``gate``."""

    def note(ctx: Any) -> Value:
        seen.append(ctx.input_data.value)
        if ctx.input_data.value == "blocker":
            assert gate.wait(BLOCK_LIMIT)
        return ctx.input_data

    return (
        create_workflow(id="let-go", input_schema=Value, output_schema=Value)
        .then(create_step(id="note", input_schema=Value, output_schema=Value, execute=note))
        .commit()
    )


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_runs_cancelled_while_their_steps_wait_for_a_thread_leave_nothing_waiting(
    runtimes: Runtimes, tmp_path: Path, store: str
) -> None:
    # A daemon whose only step thread is held by a body that does not return cancels
    # its runs one after another: their calls, let go of, did not wait on for a thread.
    rt = runtimes.start("memory" if store == "memory" else tmp_path / "runs.db", max_step_threads=1)
    gate, seen = runtimes.gate(), []
    wf = rt.register(let_go_workflow(seen, gate))
    pool = actor_system(rt).pool
    wf.create_run().start_async(input_data={"value": "blocker"})
    wait_until(lambda: seen == ["blocker"], what="the blocker holds the only step thread")
    for index in range(300):
        run = wf.create_run()
        before = pool.backlog
        run.start_async(input_data={"value": f"cancelled-{index}"})
        # Its step's call waits for the thread (the backlog grows only as one comes).
        wait_until(
            lambda before=before: pool.backlog > before,
            what="its step's call waits for the thread",
        )
        assert run.cancel() is True
    last = wf.create_run()
    last.start_async(input_data={"value": "last"})

    assert pool.backlog <= 1 + SWEPT_PAST  # not one call per cancelled run
    gate.set()
    assert last.wait(timeout=BLOCK_LIMIT).status == "success"
    assert seen == ["blocker", "last"]


def test_runs_past_their_run_timeout_while_their_steps_wait_for_a_thread_leave_nothing_waiting(
    runtimes: Runtimes,
) -> None:
    # A burst of runs queued behind a held thread, all past their deadline before it
    # frees: nothing comes after them to make room, and still their calls do not stay.
    rt = runtimes.start("memory", max_step_threads=1)
    gate, seen = runtimes.gate(), []
    wf = rt.register(let_go_workflow(seen, gate))
    pool = actor_system(rt).pool
    wf.create_run().start_async(input_data={"value": "blocker"})
    wait_until(lambda: seen == ["blocker"], what="the blocker holds the only step thread")
    runs = [wf.create_run() for _ in range(300)]
    for run in runs:
        run.start_async(input_data={"value": "late"}, run_timeout=0.05)

    assert {run.wait(timeout=BLOCK_LIMIT).status for run in runs} == {"canceled"}
    assert pool.backlog <= SWEPT_PAST
    gate.set()
    assert wf.create_run().start(input_data={"value": "after"}).status == "success"
    assert seen == ["blocker", "after"]


def test_async_steps_hold_no_step_thread_while_they_await(runtimes: Runtimes) -> None:
    rt = runtimes.start("memory", max_step_threads=1)
    count = 20
    before = step_threads()
    inside = 0
    everyone_inside: asyncio.Event | None = None

    async def meet(ctx: Any) -> Value:
        # All the bodies await at once: with one step thread, they can only
        # if none holds the thread while it waits.
        nonlocal inside, everyone_inside
        if everyone_inside is None:
            everyone_inside = asyncio.Event()
        inside += 1
        if inside == count:
            everyone_inside.set()
        await asyncio.wait_for(everyone_inside.wait(), BLOCK_LIMIT)
        return ctx.input_data

    step = create_step(id="meet", input_schema=Value, output_schema=Value, execute=meet)
    wf = rt.register(
        create_workflow(id="meet", input_schema=Value, output_schema=Value).then(step).commit()
    )
    runs = [wf.create_run() for _ in range(count)]
    for run in runs:
        run.start_async(input_data={"value": "x"})

    results = [run.wait(timeout=2 * BLOCK_LIMIT) for run in runs]

    assert [result.status for result in results] == ["success"] * count
    assert len(step_threads() - before) <= 1


@pytest.mark.parametrize("value", [0, -1])
def test_max_step_threads_below_one_is_a_value_error(value: int) -> None:
    with pytest.raises(ValueError, match="max_step_threads must be at least 1"):
        Runtime(max_step_threads=value)


@pytest.mark.parametrize("value", [2.0, "8", True, None])
def test_max_step_threads_that_is_not_an_int_is_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match="max_step_threads must be an int"):
        Runtime(max_step_threads=value)


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (0, ValueError, "must be at least 1"),
        (2**31, ValueError, "must be at most 2,147,483,647"),
        # Taken before, and then no run ever ran on a shared store: every claim failed.
        (1.5, TypeError, "must be an int"),
        (float("inf"), TypeError, "must be an int"),
        ("3", TypeError, "must be an int"),
        (True, TypeError, "must be an int"),
    ],
)
def test_a_bad_max_concurrent_runs_is_refused_when_the_runtime_is_made(
    value: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=f"max_concurrent_runs {match}"):
        Runtime(max_concurrent_runs=value)


# --- max_pending_runs -------------------------------------------------------------------


def held_and_quick(rt: Runtime, gate: threading.Event) -> tuple[Any, Any]:
    """Start a run whose step waits for ``gate``: on ``max_concurrent_runs=1`` it holds the slot.

    Returns a bound one-step workflow to start more runs of, and the holding
    run, whose step has begun by then.
    """
    entered = threading.Event()

    def hold(ctx: Any) -> Value:
        entered.set()
        gate.wait(BLOCK_LIMIT)
        return ctx.input_data

    held = rt.register(
        create_workflow(id="held", input_schema=Value, output_schema=Value)
        .then(create_step(id="hold", input_schema=Value, output_schema=Value, execute=hold))
        .commit()
    )
    holder = held.create_run()
    holder.start_async(input_data={"value": "held"})
    assert entered.wait(BLOCK_LIMIT)
    return rt.register(quick_workflow()), holder


def test_start_async_refuses_a_run_when_max_pending_runs_wait_and_records_nothing(
    runtimes: Runtimes,
) -> None:
    rt = runtimes.start("memory", max_concurrent_runs=1, max_pending_runs=3)
    gate = runtimes.gate()
    wf, holder = held_and_quick(rt, gate)
    waiting = [wf.create_run() for _ in range(3)]
    for run in waiting:
        run.start_async(input_data={"value": "w"})
    refused = wf.create_run()

    with pytest.raises(RuntimeOverloadedError) as overloaded:
        refused.start_async(input_data={"value": "r"})

    assert isinstance(overloaded.value, WorkflowError)
    assert (overloaded.value.limit, overloaded.value.run_id) == (3, refused.run_id)
    assert "max_pending_runs" in str(overloaded.value)
    assert wf.get_workflow_run_execution_result(refused.run_id) is None
    assert rt.store is not None and rt.store.load(refused.run_id) is None
    with pytest.raises(RuntimeOverloadedError):  # run.start() goes the same way
        wf.create_run().start(input_data={"value": "r"}, timeout=BLOCK_LIMIT)

    gate.set()
    assert holder.wait(timeout=BLOCK_LIMIT).status == "success"
    assert [run.wait(timeout=BLOCK_LIMIT).status for run in waiting] == ["success"] * 3
    # The same Run object starts once runs have drained.
    assert refused.start(input_data={"value": "r"}, timeout=BLOCK_LIMIT).result == {"value": "R"}
    assert actor_system(rt).pending is not None
    assert actor_system(rt).pending.count == 0


def test_a_waiting_run_that_is_cancelled_frees_its_place(runtimes: Runtimes) -> None:
    rt = runtimes.start("memory", max_concurrent_runs=1, max_pending_runs=1)
    gate = runtimes.gate()
    wf, _ = held_and_quick(rt, gate)
    waiting = wf.create_run()
    waiting.start_async(input_data={"value": "w"})
    with pytest.raises(RuntimeOverloadedError):
        wf.create_run().start_async(input_data={"value": "x"})

    waiting.cancel()

    later = wf.create_run()
    later.start_async(input_data={"value": "x"})  # the cancelled run's place
    gate.set()
    assert later.wait(timeout=BLOCK_LIMIT).status == "success"
    assert waiting.wait(timeout=BLOCK_LIMIT).status == "canceled"


def test_a_start_refused_for_its_run_id_gives_its_place_back(runtimes: Runtimes) -> None:
    rt = runtimes.start("memory", max_concurrent_runs=1, max_pending_runs=1)
    gate = runtimes.gate()
    wf, holder = held_and_quick(rt, gate)

    with pytest.raises(RunAlreadyStartedError):
        wf.create_run(holder.run_id).start_async(input_data={"value": "same id"})

    wf.create_run().start_async(input_data={"value": "x"})  # not refused: the place is free
    with pytest.raises(RuntimeOverloadedError):
        wf.create_run().start_async(input_data={"value": "y"})


@pytest.mark.parametrize("queued", [False, True], ids=["no-queue", "queue"])
def test_a_run_woken_from_its_sleep_takes_a_place_while_it_waits(queued: bool) -> None:
    # In a queue it took none: a run woken there waited uncounted, and new starts went in.
    gate = threading.Event()
    about_to_sleep = threading.Event()

    def nap(ctx: Any) -> float:
        about_to_sleep.set()
        return 60.0

    # On a virtual clock moved by hand: the sleeper wakes only once the held run below has
    # taken the run slot, however slow the machine (on the wall clock a 1 s nap had to be
    # long enough for that).
    with Harness(time_skipping=False, max_concurrent_runs=1, max_pending_runs=2) as harness:
        rt = harness.runtime
        try:
            sleepers = rt.register(
                create_workflow(
                    id="sleeper",
                    input_schema=Value,
                    output_schema=Value,
                    queue=Queue("naps") if queued else None,
                )
                .sleep(nap)
                .then(shout_step())
                .commit()
            )
            sleeper = sleepers.create_run()
            sleeper.start_async(input_data={"value": "s"})
            assert about_to_sleep.wait(BLOCK_LIMIT)

            def asleep() -> bool:
                result = sleepers.get_workflow_run_execution_result(sleeper.run_id)
                return result is not None and result.status == "waiting"

            wait_until(asleep, what="the sleeper asleep")
            wf, _ = held_and_quick(rt, gate)
            pending = actor_system(rt).pending
            assert pending is not None
            assert pending.count == 0
            advance_until(
                harness.clock,
                lambda: pending.count == 1,
                60,
                "the woken run queued behind the held one",
            )

            wf.create_run().start_async(input_data={"value": "x"})
            with pytest.raises(RuntimeOverloadedError):
                wf.create_run().start_async(input_data={"value": "y"})
        finally:
            gate.set()
        assert sleeper.wait(timeout=BLOCK_LIMIT).result == {"value": "S"}
        wait_until(lambda: pending.count == 0, what="every place given back")


def test_concurrent_starts_admit_exactly_max_pending_runs(runtimes: Runtimes) -> None:
    rt = runtimes.start("memory", max_concurrent_runs=1, max_pending_runs=50)
    gate = runtimes.gate()
    wf, _ = held_and_quick(rt, gate)
    threads, per_thread = 8, 25
    go = threading.Barrier(threads, timeout=BLOCK_LIMIT)
    admitted: list[Any] = []
    refused: list[Any] = []

    def starter() -> None:
        runs = [wf.create_run() for _ in range(per_thread)]
        go.wait()
        for run in runs:
            try:
                run.start_async(input_data={"value": "x"})
            except RuntimeOverloadedError:
                refused.append(run)
            else:
                admitted.append(run)

    workers = [threading.Thread(target=starter) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(BLOCK_LIMIT)

    assert (len(admitted), len(refused)) == (50, threads * per_thread - 50)
    assert all(wf.get_workflow_run_execution_result(run.run_id) is None for run in refused)
    gate.set()
    assert all(run.wait(timeout=BLOCK_LIMIT).status == "success" for run in admitted)


@pytest.mark.usefixtures("_structlog_reset")
def test_max_pending_runs_on_a_shared_store_says_once_that_it_does_not_apply(
    tmp_path: Path,
) -> None:
    # It was ignored without a word: only Runtime's docstring said so.
    import structlog.testing

    with (
        structlog.testing.capture_logs() as logs,
        Runtime(store=tmp_path / "runs.db", max_concurrent_runs=1, max_pending_runs=2) as rt,
    ):
        wf = rt.register(quick_workflow())
        runs = [wf.create_run() for _ in range(5)]
        for run in runs:
            run.start_async(input_data={"value": "x"})  # none refused: they wait in the store
        assert all(run.wait(timeout=BLOCK_LIMIT).status == "success" for run in runs)
    said = [log for log in logs if log["event"] == "max_pending_runs_ignored"]
    assert len(said) == 1
    assert said[0]["log_level"] == "warning" and said[0]["max_pending_runs"] == 2
    with structlog.testing.capture_logs() as logs, Runtime(max_pending_runs=2):
        pass
    assert not [log for log in logs if log["event"] == "max_pending_runs_ignored"]


@pytest.mark.parametrize("value", [0, -5])
def test_max_pending_runs_below_one_is_a_value_error(value: int) -> None:
    with pytest.raises(ValueError, match="max_pending_runs must be at least 1"):
        Runtime(max_pending_runs=value)


@pytest.mark.parametrize("value", [1.5, "10", False])
def test_max_pending_runs_that_is_not_an_int_is_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match="max_pending_runs must be an int"):
        Runtime(max_pending_runs=value)


def test_without_max_pending_runs_nothing_is_counted(runtimes: Runtimes) -> None:
    rt = runtimes.start("memory", max_concurrent_runs=1)
    gate = runtimes.gate()
    wf, _ = held_and_quick(rt, gate)
    runs = [wf.create_run() for _ in range(500)]
    for run in runs:
        run.start_async(input_data={"value": "x"})  # none refused
    assert actor_system(rt).pending is None
    gate.set()
    assert runs[-1].wait(timeout=BLOCK_LIMIT).status == "success"
