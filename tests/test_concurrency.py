"""Many runs at once, from many threads: every run is recorded at once, none lost, none mixed up."""

from __future__ import annotations

import asyncio
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

from runtime import Runtime, create_step, create_workflow
from tests._support import Value, exclaim_step, shout_step

THREADS = 8


def shout_workflow(workflow_id: str = "shout"):
    return (
        create_workflow(id=workflow_id, input_schema=Value, output_schema=Value)
        .then(shout_step())
        .then(exclaim_step())
        .commit()
    )


def test_an_immediate_query_after_start_async_never_returns_none(runtime: Runtime) -> None:
    wf = runtime.register(shout_workflow())
    runs_per_thread = 200
    start = threading.Barrier(THREADS)

    def start_and_query(thread: int) -> list:
        start.wait()
        runs = []
        for index in range(runs_per_thread):
            run = wf.create_run()
            run_id = run.start_async(input_data={"value": f"t{thread}-{index}"}).run_id
            result = wf.get_workflow_run_execution_result(run_id)
            assert result is not None, f"run {run_id} was not recorded when start_async returned"
            assert result.run_id == run_id
            assert result.input == {"value": f"t{thread}-{index}"}
            runs.append(run)
        return runs

    with ThreadPoolExecutor(THREADS) as pool:
        started = [run for runs in pool.map(start_and_query, range(THREADS)) for run in runs]
    assert len(started) == THREADS * runs_per_thread
    assert all(run.wait(timeout=30).status == "success" for run in started)


def test_a_run_id_handed_to_another_thread_is_found_there_at_once(runtime: Runtime) -> None:
    wf = runtime.register(shout_workflow())
    producers, runs_per_producer = 4, 250
    handed: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    missing: list[str] = []
    seen: list[str] = []

    def produce(thread: int) -> None:
        for index in range(runs_per_producer):
            handed.put(
                wf.create_run().start_async(input_data={"value": f"{thread}.{index}"}).run_id
            )

    def consume() -> None:
        while (run_id := handed.get()) is not None:
            seen.append(run_id)
            if wf.get_workflow_run_execution_result(run_id) is None:
                missing.append(run_id)

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        with ThreadPoolExecutor(producers) as pool:
            list(pool.map(produce, range(producers)))
    finally:
        handed.put(None)
        consumer.join(30)
    assert not consumer.is_alive()
    assert len(seen) == producers * runs_per_producer
    assert missing == []


def test_a_thousand_runs_from_eight_threads_all_succeed_with_their_own_output(
    runtime: Runtime,
) -> None:
    wf = runtime.register(shout_workflow())
    total = 1000
    start = threading.Barrier(THREADS)

    def start_runs(thread: int) -> list[tuple[str, str, object]]:
        start.wait()
        started = []
        for index in range(thread, total, THREADS):
            value = f"run-{index}"
            run = wf.create_run()
            started.append((run.start_async(input_data={"value": value}).run_id, value, run))
        return started

    with ThreadPoolExecutor(THREADS) as pool:
        started = [item for items in pool.map(start_runs, range(THREADS)) for item in items]

    run_ids = [run_id for run_id, _, _ in started]
    assert len(run_ids) == total
    assert len(set(run_ids)) == total, "a run id was given out twice"
    assert sorted(value for _, value, _ in started) == sorted(f"run-{i}" for i in range(total))

    for run_id, value, run in started:
        result = run.wait(timeout=30)
        assert result.run_id == run_id
        assert result.status == "success", (run_id, result.error)
        assert result.input == {"value": value}
        assert result.steps["shout"].output == {"value": value.upper()}
        assert result.result == {"value": value.upper() + "!"}
        assert wf.get_workflow_run_execution_result(run_id) == result


def test_blocked_sync_steps_do_not_hold_up_other_runs(runtime: Runtime) -> None:
    # Each of several runs waits for the next one's step to have started: this
    # only ends if all their steps run at the same time.
    count = 6
    entered = [threading.Event() for _ in range(count)]

    def chained(ctx):
        index = int(ctx.input_data.value)
        entered[index].set()
        if index + 1 < count and not entered[index + 1].wait(10):
            raise TimeoutError(f"step {index + 1} never started while step {index} waited")
        return ctx.input_data

    step = create_step(id="chained", input_schema=Value, output_schema=Value, execute=chained)
    workflow = create_workflow(id="blocked", input_schema=Value, output_schema=Value).then(step)
    wf = runtime.register(workflow.commit())
    runs = [wf.create_run() for _ in range(count)]
    for index, run in enumerate(runs):
        run.start_async(input_data={"value": str(index)})
    results = [run.wait(timeout=15) for run in runs]
    assert [result.status for result in results] == ["success"] * count


def test_async_steps_of_different_runs_overlap(runtime: Runtime) -> None:
    # Two runs whose async steps each wait for the other's to have started:
    # both succeed only if neither blocks the other while it waits.
    started: dict[str, asyncio.Event] = {}
    guard = threading.Lock()

    def event(name: str) -> asyncio.Event:
        with guard:
            return started.setdefault(name, asyncio.Event())

    async def meet(ctx):
        me = ctx.input_data.value
        other = "right" if me == "left" else "left"
        event(me).set()
        await asyncio.wait_for(event(other).wait(), timeout=10)
        return Value(value=f"{me} met {other}")

    step = create_step(id="meet", input_schema=Value, output_schema=Value, execute=meet)
    workflow = create_workflow(id="meet", input_schema=Value, output_schema=Value).then(step)
    wf = runtime.register(workflow.commit())
    left, right = wf.create_run(), wf.create_run()
    left.start_async(input_data={"value": "left"})
    right.start_async(input_data={"value": "right"})
    assert left.wait(timeout=15).result == {"value": "left met right"}
    assert right.wait(timeout=15).result == {"value": "right met left"}


def test_many_waiting_async_steps_are_all_in_flight_at_once(runtime: Runtime) -> None:
    # More async steps than there are step actors wait on one gate that opens
    # only once all of them have started.
    count = 200
    arrived = 0
    gate = asyncio.Event()

    async def gather(ctx):
        nonlocal arrived
        arrived += 1  # the steps share one event loop thread: no lock needed
        if arrived == count:
            gate.set()
        await asyncio.wait_for(gate.wait(), timeout=10)
        return ctx.input_data

    step = create_step(id="gather", input_schema=Value, output_schema=Value, execute=gather)
    workflow = create_workflow(id="gather", input_schema=Value, output_schema=Value).then(step)
    wf = runtime.register(workflow.commit())
    runs = [wf.create_run() for _ in range(count)]
    for index, run in enumerate(runs):
        run.start_async(input_data={"value": str(index)})
    assert all(run.wait(timeout=20).status == "success" for run in runs)
    assert arrived == count


def test_a_run_status_never_goes_back(runtime: Runtime) -> None:
    order = {"missing": -1, "pending": 0, "running": 1, "success": 2, "failed": 2}
    release = threading.Event()

    def slow(ctx):
        release.wait(10)
        return ctx.input_data

    steps = [
        create_step(id=f"s{index}", input_schema=Value, output_schema=Value, execute=body)
        for index, body in enumerate([lambda ctx: ctx.input_data, slow, lambda ctx: ctx.input_data])
    ]
    workflow = create_workflow(id="monotonic", input_schema=Value, output_schema=Value)
    for step in steps:
        workflow.then(step)
    wf = runtime.register(workflow.commit())
    run = wf.create_run()
    run_id = run.start_async(input_data={"value": "m"}).run_id
    observed: list[tuple[str, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            result = wf.get_workflow_run_execution_result(run_id)
            if result is None:
                observed.append(("missing", -1))
                return
            observed.append((result.status, len(result.steps)))
            if result.is_terminal:
                return

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        release.set()
        final = run.wait(timeout=10)
    finally:
        watcher.join(10)
        stop.set()
    assert final.status == "success"
    assert ("missing", -1) not in observed
    ranks = [order[status] for status, _ in observed]
    assert ranks == sorted(ranks), observed
    steps_seen = [count for _, count in observed]
    assert steps_seen == sorted(steps_seen), observed
    assert observed[-1][0] == "success"
