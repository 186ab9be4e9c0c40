"""Queues: concurrency, per-key limits, rate limits, priorities and bounds, on every store."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from pydantic import BaseModel

from runtime import (
    Queue,
    QueueFullError,
    QueueKeyError,
    RetentionPolicy,
    RetryConfig,
    Runtime,
    SQLiteStore,
    _clock,
    create_step,
    create_workflow,
)
from runtime.testing import Harness
from tests._support import advance_until, wait_until

WAIT = 30.0


class Job(BaseModel):
    value: str


class Gauge:
    """How many steps run at once, overall and per key, measured from inside the steps."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.starts: list[tuple[float, str]] = []

    def enter(self, key: str) -> None:
        with self.lock:
            # callboard's clock: the wall clock, or a harness's virtual one.
            self.starts.append((_clock.time(), key))
            for name in ("*", key):
                self.now[name] = self.now.get(name, 0) + 1
                self.most[name] = max(self.most.get(name, 0), self.now[name])

    def leave(self, key: str) -> None:
        with self.lock:
            for name in ("*", key):
                self.now[name] -= 1


def workflow(gauge: Gauge, *, queue: Queue | None = None, hold: float = 0.05, wf_id: str = "job"):
    def body(ctx: Any) -> Job:
        gauge.enter(ctx.input_data.value)
        time.sleep(hold)
        gauge.leave(ctx.input_data.value)
        return ctx.input_data

    step = create_step(id="work", input_schema=Job, output_schema=Job, execute=body)
    return (
        create_workflow(id=wf_id, input_schema=Job, output_schema=Job, queue=queue)
        .then(step)
        .commit()
    )


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def make_runtime(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., Runtime]]:
    """Started runtimes on one store of each kind, stopped at the end."""
    made: list[Runtime] = []

    def make(**options: Any) -> Runtime:
        if request.param == "memory":
            rt = Runtime(**options)
        elif request.param == "sqlite":
            rt = Runtime(store=SQLiteStore(tmp_path / "runs.db"), **options)
        else:
            from runtime import PostgresStore

            rt = Runtime(store=PostgresStore(request.getfixturevalue("postgres_url")), **options)
        made.append(rt)
        return rt.start()

    yield make
    for rt in made:
        rt.stop(timeout=5)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def timed_runtime(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., tuple[Runtime, Harness]]]:
    """For a test of a queue's timing: a runtime, and the harness it runs in.

    On every store its rate windows and sleeps pass on the harness's virtual clock
    (``time_skipping`` as asked): a store in memory keeps its windows as timers, and a
    shared one judges them at each claim by the time the harness tells it.
    """
    opened: list[Harness] = []

    def make(*, time_skipping: bool = True) -> tuple[Runtime, Harness]:
        store: Any = "memory"
        if request.param == "sqlite":
            store = SQLiteStore(tmp_path / "runs.db")
        elif request.param == "postgres":
            from runtime import PostgresStore

            store = PostgresStore(request.getfixturevalue("postgres_url"))
        harness = Harness(store=store, time_skipping=time_skipping).start()
        opened.append(harness)
        return harness.runtime, harness

    yield make
    for harness in opened:
        harness.close()


def finish_all(wf: Any, run_ids: list[str]) -> None:
    deadline = time.monotonic() + WAIT
    for run_id in run_ids:
        while True:
            result = wf.get_workflow_run_execution_result(run_id)
            if result is not None and result.status in ("success", "failed", "canceled"):
                assert result.status == "success", result.error
                break
            assert time.monotonic() < deadline, f"run {run_id} did not end"
            time.sleep(0.01)


def test_concurrency_bounds_the_runs_of_a_queue_executing_at_once(make_runtime: Any) -> None:
    gauge = Gauge()
    rt = make_runtime()
    wf = rt.register(workflow(gauge, queue=Queue("three", concurrency=3)))
    ids = [wf.create_run().start_async(input_data={"value": f"r{i}"}).run_id for i in range(15)]
    finish_all(wf, ids)
    assert gauge.most["*"] <= 3
    assert gauge.most["*"] >= 2  # the runs did overlap: the bound, not a single file, held them


def test_without_a_queue_the_same_runs_overlap_beyond_three(make_runtime: Any) -> None:
    gauge = Gauge()
    rt = make_runtime()
    wf = rt.register(workflow(gauge, hold=0.2))
    ids = [wf.create_run().start_async(input_data={"value": f"r{i}"}).run_id for i in range(15)]
    finish_all(wf, ids)
    assert gauge.most["*"] > 3  # what the test above would see if the queue did nothing


def test_key_concurrency_bounds_each_partition(make_runtime: Any) -> None:
    gauge = Gauge()
    rt = make_runtime()
    queue = Queue("tenants", key=lambda job: job.value, key_concurrency=2)
    wf = rt.register(workflow(gauge, queue=queue, hold=0.1))
    ids = [
        wf.create_run().start_async(input_data={"value": f"tenant-{i % 3}"}).run_id
        for i in range(18)
    ]
    finish_all(wf, ids)
    for key in ("tenant-0", "tenant-1", "tenant-2"):
        assert gauge.most[key] <= 2, gauge.most
    assert gauge.most["*"] > 2  # partitions ran beside each other


def test_a_concurrency_key_given_at_start_names_the_partition(make_runtime: Any) -> None:
    gauge = Gauge()
    rt = make_runtime()
    wf = rt.register(workflow(gauge, hold=0.1))
    queue = Queue("given", key_concurrency=1)
    ids = [
        wf.create_run()
        .start_async(input_data={"value": "same"}, queue=queue, concurrency_key=f"k{i % 2}")
        .run_id
        for i in range(6)
    ]
    finish_all(wf, ids)
    assert gauge.most["same"] <= 2  # two keys, one run each at a time


def blocked_workflow(gate: threading.Event, order: list[str], queue: Queue, wf_id: str) -> Any:
    def body(ctx: Any) -> Job:
        order.append(ctx.input_data.value)
        if ctx.input_data.value == "blocker":
            assert gate.wait(WAIT)
        return ctx.input_data

    step = create_step(id="work", input_schema=Job, output_schema=Job, execute=body)
    return (
        create_workflow(id=wf_id, input_schema=Job, output_schema=Job, queue=queue)
        .then(step)
        .commit()
    )


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_higher_priority_starts_first_and_equals_keep_their_order(make_runtime: Any) -> None:
    started = [("low-1", 0), ("high-1", 5), ("low-2", 0), ("high-2", 5), ("mid", 2)]
    order = _in_order(make_runtime(), started)
    assert order == ["blocker", "high-1", "high-2", "mid", "low-1", "low-2"]


def test_equal_priorities_keep_their_order_on_a_clock_that_stands_still(
    timed_runtime: Any,
) -> None:
    # The starts' times tied (a test kit's clock without time skipping), and PostgreSQL
    # took equal priorities in the order of their random run ids.
    started = [(f"a{number}", 0) for number in range(8)] + [("b", 1)]
    order = _in_order(timed_runtime(time_skipping=False)[0], started)
    assert order == ["blocker", "b", *(f"a{number}" for number in range(8))]


def _in_order(rt: Runtime, started: list[tuple[str, int]]) -> list[str]:
    """The order in which runs started behind a blocker, with these names and priorities."""
    gate, order = threading.Event(), []
    wf = rt.register(blocked_workflow(gate, order, Queue("one", concurrency=1), "prio"))
    ids = [wf.create_run().start_async(input_data={"value": "blocker"}).run_id]
    wait_for(lambda: order == ["blocker"], "the blocker did not start")
    for name, priority in started:
        run = wf.create_run()
        ids.append(run.start_async(input_data={"value": name}, priority=priority).run_id)
    gate.set()
    finish_all(wf, ids)
    return order


@pytest.mark.parametrize("given_at", ["workflow", "start"])
def test_a_time_traveled_run_goes_through_its_sources_queue(
    make_runtime: Any, given_at: str
) -> None:
    # It went past the queue's limits, and its result named no queue.
    gate, order = threading.Event(), []
    rt = make_runtime()
    one = Queue("one", concurrency=1)
    wf = rt.register(
        blocked_workflow(gate, order, one if given_at == "workflow" else None, "travel")  # type: ignore[arg-type]
    )
    start = {} if given_at == "workflow" else {"queue": one}
    source = wf.create_run()
    source.start_async(input_data={"value": "source"}, priority=3, **start)
    assert source.wait(timeout=WAIT).status == "success"
    blocker = wf.create_run()
    blocker.start_async(input_data={"value": "blocker"}, **start)
    wait_for(lambda: order == ["source", "blocker"], "the blocker did not start")

    traveled = wf.time_travel(source.run_id, step="work", input_data={"value": "traveled"})
    time.sleep(0.3)
    assert order == ["source", "blocker"]  # it waits for the blocker's slot
    info = wf.get_workflow_run_by_id(traveled.run_id)
    assert info is not None and (info.queue, info.priority) == ("one", 3)
    gate.set()
    assert traveled.wait(timeout=WAIT).status == "success"
    assert order == ["source", "blocker", "traveled"]


def test_a_run_that_waited_long_enough_outranks_a_new_higher_priority(make_runtime: Any) -> None:
    from runtime._queue import PRIORITY_AGING, rank

    # The order is by rank: a priority-1 run started one aging period and more ago goes first.
    assert rank(1000.0, 0) < rank(1000.0 + PRIORITY_AGING + 1, 1)
    assert rank(1000.0, 0) > rank(1000.0 + PRIORITY_AGING - 1, 1)


def test_a_sleeping_run_gives_its_slot_back_and_takes_one_when_it_wakes(
    timed_runtime: Any,
) -> None:
    events: list[str] = []
    lock = threading.Lock()

    def note(tag: str) -> Callable[[Any], Job]:
        def body(ctx: Any) -> Job:
            with lock:
                events.append(f"{ctx.input_data.value}:{tag}")
            return ctx.input_data

        return body

    queue = Queue("slot", concurrency=1)
    sleeper = (
        create_workflow(id="sleeper", input_schema=Job, output_schema=Job, queue=queue)
        .then(create_step(id="a", input_schema=Job, output_schema=Job, execute=note("before")))
        .sleep(1.0)
        .then(create_step(id="b", input_schema=Job, output_schema=Job, execute=note("after")))
        .commit()
    )
    quick = (
        create_workflow(id="quick", input_schema=Job, output_schema=Job, queue=queue)
        .then(create_step(id="c", input_schema=Job, output_schema=Job, execute=note("ran")))
        .commit()
    )
    # Under a harness the clock moves only when told: the sleeper cannot wake before the
    # quick run has ended, however slowly this thread starts it.
    rt, harness = timed_runtime(time_skipping=False)
    sleeping, other = rt.register(sleeper), rt.register(quick)
    first = sleeping.create_run().start_async(input_data={"value": "s"}).run_id
    wait_for(lambda: "s:before" in events, "the sleeper did not start")
    second = other.create_run().start_async(input_data={"value": "q"}).run_id
    finish_all(other, [second])
    advance_until(harness.clock, lambda: "s:after" in events, 1.0, "the sleeper woke")
    finish_all(sleeping, [first])
    # The quick run took the slot while the sleeper slept; the sleeper woke and ended after.
    assert events == ["s:before", "q:ran", "s:after"]


def test_a_run_waiting_out_a_retrys_back_off_keeps_its_slot(timed_runtime: Any) -> None:
    # Unlike a sleep, a back-off is part of a step's execution: the run keeps executing,
    # and holds its slot, on every store alike (the README says so).
    events: list[str] = []
    lock = threading.Lock()

    def body(ctx: Any) -> Job:
        with lock:
            events.append(f"{ctx.input_data.value}:{ctx.retry_count}")
        if ctx.input_data.value == "flaky" and ctx.retry_count == 0:
            raise RuntimeError("the service said no, once")
        return ctx.input_data

    retrying = (
        create_workflow(
            id="retrying",
            input_schema=Job,
            output_schema=Job,
            queue=Queue("backing-off", concurrency=1),
            retry_config=RetryConfig(attempts=2, delay=30.0),
        )
        .then(create_step(id="call", input_schema=Job, output_schema=Job, execute=body))
        .commit()
    )
    # The clock moves only when told: the back-off lasts until this test ends it.
    rt, harness = timed_runtime(time_skipping=False)
    wf = rt.register(retrying)
    flaky = wf.create_run().start_async(input_data={"value": "flaky"}).run_id
    wait_for(lambda: "flaky:0" in events, "the flaky run did not start")
    other = wf.create_run().start_async(input_data={"value": "other"}).run_id
    time.sleep(0.3)  # room for a claim, or the gate, to let the other run in: none may
    assert events == ["flaky:0"]
    advance_until(harness.clock, lambda: "other:0" in events, 30.0, "the back-off ended")
    finish_all(wf, [flaky, other])
    assert events == ["flaky:0", "flaky:1", "other:0"]


def test_rate_limit_bounds_starts_per_window(timed_runtime: Any) -> None:
    gauge = Gauge()
    # On a shared store the rate windows are judged by the store at each claim; the time
    # skipper asks the store when the next one opens.
    rt, _harness = timed_runtime()
    window = 60.0  # a virtual minute takes no time
    wf = rt.register(workflow(gauge, queue=Queue("rated", rate_limit=(2, window)), hold=0.0))
    ids = [wf.create_run().start_async(input_data={"value": f"r{i}"}).run_id for i in range(6)]
    finish_all(wf, ids)
    times = sorted(at for at, _ in gauge.starts)
    assert len(times) == 6
    # No three starts within one window (with a little slack for the step's own start).
    slack = 0.15
    for earlier, later in zip(times, times[2:], strict=False):
        assert later - earlier >= window - slack, times
    assert times[-1] - times[0] >= 2 * window - slack


def test_a_woken_run_is_not_held_behind_a_first_start_its_queues_rate_holds_back(
    timed_runtime: Any,
) -> None:
    # In memory each partition kept one line: a run woken from its sleep waited behind a
    # higher-priority run that had yet to start, which the rate held back, for the window.
    events: list[str] = []
    lock = threading.Lock()

    def note(tag: str) -> Callable[[Any], Job]:
        def body(ctx: Any) -> Job:
            with lock:
                events.append(f"{ctx.input_data.value}:{tag}")
            return ctx.input_data

        return body

    napper = (
        create_workflow(
            id="napper",
            input_schema=Job,
            output_schema=Job,
            queue=Queue("rated-naps", rate_limit=(1, 86_400.0)),
        )
        .then(create_step(id="a", input_schema=Job, output_schema=Job, execute=note("before")))
        .sleep(1.0)
        .then(create_step(id="b", input_schema=Job, output_schema=Job, execute=note("after")))
        .commit()
    )
    # The clock moves only when told: the day's window stays shut however slow the machine.
    rt, harness = timed_runtime(time_skipping=False)
    wf = rt.register(napper)
    sleeper = wf.create_run().start_async(input_data={"value": "s"}).run_id  # the window's start
    wait_for(lambda: "s:before" in events, "the sleeper did not start")
    held = wf.create_run().start_async(input_data={"value": "h"}, priority=5).run_id
    advance_until(harness.clock, lambda: "s:after" in events, 1.0, "the sleeper woke and ran")
    finish_all(wf, [sleeper])
    result = wf.get_workflow_run_execution_result(held)
    assert result is not None and result.status == "pending"  # still held by the rate
    assert "h:before" not in events


def test_deleting_a_run_frees_its_start_in_its_queues_rate_window(make_runtime: Any) -> None:
    # SQLite and PostgreSQL count a window from the runs they hold; in memory the start of
    # a run deleted by hand still counted, and the next run waited for the whole window.
    gauge = Gauge()
    rt = make_runtime()
    wf = rt.register(workflow(gauge, queue=Queue("rated-once", rate_limit=(1, 86_400.0)), hold=0.0))
    first = wf.create_run()
    assert first.start(input_data={"value": "first"}, timeout=WAIT).status == "success"
    second = wf.create_run()
    second.start_async(input_data={"value": "second"})
    result = wf.get_workflow_run_execution_result(second.run_id)
    assert result is not None and result.status == "pending"
    assert wf.delete_workflow_run_by_id(first.run_id)
    assert second.wait(timeout=WAIT).status == "success"
    # The second run's start counts in its turn: a third waits for the window.
    third = wf.create_run()
    third.start_async(input_data={"value": "third"})
    time.sleep(0.2)
    result = wf.get_workflow_run_execution_result(third.run_id)
    assert result is not None and result.status == "pending"


def test_a_restart_waits_for_room_in_its_queues_rate_window_and_counts_there(
    make_runtime: Any,
) -> None:
    # A restart never counted: after a bad deploy, restarting every failed run executed
    # them all at once, however tight the rate that guards the service they call.
    calls: list[str] = []
    fixed = threading.Event()

    def body(ctx: Any) -> Job:
        calls.append(ctx.input_data.value)
        if not fixed.is_set():
            raise RuntimeError("the service is down")
        return ctx.input_data

    step = create_step(id="call", input_schema=Job, output_schema=Job, execute=body)
    rt = make_runtime()
    wf = rt.register(
        create_workflow(
            id="rated-restarts",
            input_schema=Job,
            output_schema=Job,
            queue=Queue("rated-restarts", rate_limit=(2, 86_400.0)),
        )
        .then(step)
        .commit()
    )
    runs = [wf.create_run() for _ in range(2)]
    for number, run in enumerate(runs):
        assert run.start(input_data={"value": f"r{number}"}, timeout=WAIT).status == "failed"
    fixed.set()
    for run in runs:  # the window's two starts are taken: both wait
        run.restart_async()
    time.sleep(0.5)
    assert calls == ["r0", "r1"]
    # A start freed (a run deleted by hand, as the window's end would): the other runs.
    assert runs[1].cancel() is True
    assert runs[1].wait(timeout=WAIT).status == "canceled"
    assert wf.delete_workflow_run_by_id(runs[1].run_id)
    again = runs[0].wait(timeout=WAIT)
    assert (again.status, again.restarts) == ("success", 1)
    assert calls == ["r0", "r1", "r0"]
    # Its start took the place of its earlier one: with the deleted run's gone, the
    # window holds one start, and a new run takes the other place.
    assert wf.create_run().start(input_data={"value": "new"}, timeout=WAIT).status == "success"


def test_runs_pruned_inside_their_queues_rate_window_still_count_against_it(
    make_runtime: Any,
) -> None:
    # A shared store counted a window's starts from the runs it still held: retention
    # pruned the two that had ended, and the next two started at once, four in a window
    # of two.
    gauge = Gauge()
    window = 3.0
    rt = make_runtime(retention=RetentionPolicy(max_runs=0, interval=0.05))
    wf = rt.register(workflow(gauge, queue=Queue("rated", rate_limit=(2, window)), hold=0.0))
    for number in range(2):
        wf.create_run().start_async(input_data={"value": f"r{number}"})
    wait_until(lambda: len(gauge.starts) == 2, timeout=WAIT, what="the first two started")
    time.sleep(0.5)  # several passes of the pruner
    for number in range(2, 4):
        wf.create_run().start_async(input_data={"value": f"r{number}"})
    wait_until(lambda: len(gauge.starts) == 4, timeout=WAIT, what="the next two started")
    times = sorted(at for at, _ in gauge.starts)
    # A step starts a little after its run is counted: a second of slack, where the
    # fault made it half a second in all.
    assert times[2] - times[0] >= window - 1.0, times


def test_a_full_queue_refuses_the_start_and_records_nothing(make_runtime: Any) -> None:
    gate, order = threading.Event(), []
    rt = make_runtime()
    queue = Queue("bounded", concurrency=1, max_queued=2)
    wf = rt.register(blocked_workflow(gate, order, queue, "bounded"))
    ids = [wf.create_run().start_async(input_data={"value": "blocker"}).run_id]
    wait_for(lambda: order == ["blocker"], "the blocker did not start")
    ids += [wf.create_run().start_async(input_data={"value": f"w{i}"}).run_id for i in range(2)]
    refused = wf.create_run()
    with pytest.raises(QueueFullError) as caught:
        refused.start_async(input_data={"value": "one too many"})
    assert caught.value.queue == "bounded"
    assert caught.value.limit == 2
    assert wf.get_workflow_run_execution_result(refused.run_id) is None
    gate.set()
    finish_all(wf, ids)
    again = refused.start_async(input_data={"value": "later"}).run_id  # the same run, now
    finish_all(wf, [again])


def test_a_restart_into_a_full_queue_is_refused_and_leaves_the_run_as_it_ended(
    make_runtime: Any,
) -> None:
    # As a start into a full queue: QueueFullError, and nothing changes. A restart that
    # went through regardless took a waiting place beyond max_queued.
    gate, order, fixed = threading.Event(), [], threading.Event()

    def body(ctx: Any) -> Job:
        order.append(ctx.input_data.value)
        if ctx.input_data.value == "blocker":
            assert gate.wait(WAIT)
        if ctx.input_data.value == "flaky" and not fixed.is_set():
            raise RuntimeError("down")
        return ctx.input_data

    step = create_step(id="work", input_schema=Job, output_schema=Job, execute=body)
    queue = Queue("bounded", concurrency=1, max_queued=1)
    rt = make_runtime()
    wf = rt.register(
        create_workflow(id="restarted", input_schema=Job, output_schema=Job, queue=queue)
        .then(step)
        .commit()
    )
    flaky = wf.create_run()
    assert flaky.start(input_data={"value": "flaky"}, timeout=WAIT).status == "failed"
    ids = [wf.create_run().start_async(input_data={"value": "blocker"}).run_id]
    wait_for(lambda: "blocker" in order, "the blocker did not start")
    ids.append(wf.create_run().start_async(input_data={"value": "waiting"}).run_id)
    fixed.set()
    with pytest.raises(QueueFullError) as caught:
        flaky.restart_async()
    assert (caught.value.queue, caught.value.limit, caught.value.run_id) == (
        "bounded",
        1,
        flaky.run_id,
    )
    assert "was not restarted" in str(caught.value)
    left = wf.get_workflow_run_execution_result(flaky.run_id)
    assert left is not None and (left.status, left.restarts) == ("failed", 0)
    gate.set()
    finish_all(wf, ids)
    again = flaky.restart(timeout=WAIT)  # once the queue has drained
    assert (again.status, again.restarts) == ("success", 1)


def test_a_resumed_run_goes_back_into_a_full_queue_and_counts_among_those_waiting(
    make_runtime: Any,
) -> None:
    # max_queued refuses new work, not a run it admitted: the resume of a run that
    # suspended is taken while the queue is full, and the run then waits in the queue,
    # where a start finds one more waiting.
    gate, order = threading.Event(), []

    def body(ctx: Any) -> Job:
        order.append(ctx.input_data.value)
        if ctx.input_data.value == "blocker":
            assert gate.wait(WAIT)
        if ctx.input_data.value == "asks" and ctx.resume_data is None:
            ctx.suspend({"why": "approval"})
        return ctx.input_data

    step = create_step(id="work", input_schema=Job, output_schema=Job, execute=body)
    queue = Queue("bounded", concurrency=1, max_queued=1)
    rt = make_runtime()
    wf = rt.register(
        create_workflow(id="asks", input_schema=Job, output_schema=Job, queue=queue)
        .then(step)
        .commit()
    )
    asks = wf.create_run()
    assert asks.start(input_data={"value": "asks"}, timeout=WAIT).status == "suspended"
    ids = [wf.create_run().start_async(input_data={"value": "blocker"}).run_id]
    wait_for(lambda: "blocker" in order, "the blocker did not start")
    ids.append(wf.create_run().start_async(input_data={"value": "waiting"}).run_id)
    with pytest.raises(QueueFullError):
        wf.create_run().start_async(input_data={"value": "one too many"})
    asks.resume_async(resume_data={})  # not refused: the queue holds its place for it
    with pytest.raises(QueueFullError):
        wf.create_run().start_async(input_data={"value": "still too many"})
    gate.set()
    finish_all(wf, [*ids, asks.run_id])
    assert asks.wait(timeout=WAIT).status == "success"
    assert order.count("asks") == 2


def test_a_key_function_that_raises_is_a_clear_error_and_records_nothing(
    make_runtime: Any,
) -> None:
    def broken(job: Job) -> str:
        raise KeyError("tenant")

    rt = make_runtime()
    wf = rt.register(workflow(Gauge(), queue=Queue("broken", key=broken, key_concurrency=1)))
    run = wf.create_run()
    with pytest.raises(QueueKeyError, match="key function of queue 'broken' raised KeyError"):
        run.start_async(input_data={"value": "x"})
    assert wf.get_workflow_run_execution_result(run.run_id) is None


def test_a_key_function_that_returns_no_string_is_a_clear_error(make_runtime: Any) -> None:
    rt = make_runtime()
    wf = rt.register(workflow(Gauge(), queue=Queue("numbers", key=lambda job: 7)))
    run = wf.create_run()
    with pytest.raises(QueueKeyError, match="must be a non-empty str"):
        run.start_async(input_data={"value": "x"})
    assert wf.get_workflow_run_execution_result(run.run_id) is None
    with pytest.raises(QueueKeyError):
        wf.create_run().start_async(input_data={"value": "x"}, concurrency_key="")
    # The queue is not stuck: a run with a good key goes through.
    good = wf.create_run().start_async(input_data={"value": "x"}, concurrency_key="ok").run_id
    finish_all(wf, [good])


def test_queues_show_on_a_runs_record(make_runtime: Any) -> None:
    rt = make_runtime()
    wf = rt.register(workflow(Gauge(), queue=Queue("shown", key=lambda job: job.value)))
    run_id = wf.create_run().start_async(input_data={"value": "acme"}, priority=3).run_id
    finish_all(wf, [run_id])
    info = wf.get_workflow_run_by_id(run_id)
    assert info is not None
    assert (info.queue, info.queue_key, info.priority) == ("shown", "acme", 3)


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"name": ""}, ValueError, "printable"),
        ({"name": 3}, TypeError, "must be a str"),
        ({"name": "q", "concurrency": 0}, ValueError, "at least 1"),
        ({"name": "q", "concurrency": -2}, ValueError, "at least 1"),
        ({"name": "q", "concurrency": "3"}, TypeError, "int or None"),
        ({"name": "q", "concurrency": True}, TypeError, "int or None"),
        ({"name": "q", "key_concurrency": 0}, ValueError, "at least 1"),
        ({"name": "q", "max_queued": 0}, ValueError, "at least 1"),
        # PostgreSQL keeps limits as integer: one it would refuse is refused everywhere.
        ({"name": "q", "max_queued": 2**31}, ValueError, "at most 2,147,483,647"),
        ({"name": "q", "concurrency": 3_000_000_000}, ValueError, "at most"),
        ({"name": "q", "key_concurrency": 2**63}, ValueError, "at most"),
        ({"name": "q", "rate_limit": (2**31, 1.0)}, ValueError, "at most"),
        ({"name": "q", "key": "tenant"}, TypeError, "function"),
        ({"name": "q", "rate_limit": (0, 1.0)}, ValueError, "at least 1"),
        ({"name": "q", "rate_limit": (1, 0)}, ValueError, "above 0"),
        ({"name": "q", "rate_limit": (1, float("nan"))}, ValueError, "above 0"),
        ({"name": "q", "rate_limit": (1,)}, TypeError, "pair"),
        ({"name": "q", "rate_limit": [1, 1.0]}, TypeError, "pair"),
        ({"name": "q", "rate_limit": (1, "1")}, TypeError, "seconds"),
    ],
)
def test_a_bad_queue_is_refused_at_definition(
    arguments: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Queue(**arguments)


def test_bad_start_arguments_are_refused_before_anything_is_recorded(runtime: Runtime) -> None:
    wf = runtime.register(workflow(Gauge(), wf_id="plain"))
    run = wf.create_run()
    with pytest.raises(ValueError, match="need a queue"):
        run.start_async(input_data={"value": "x"}, priority=2)
    with pytest.raises(ValueError, match="need a queue"):
        run.start_async(input_data={"value": "x"}, concurrency_key="k")
    with pytest.raises(TypeError, match="queue must be a Queue"):
        run.start_async(input_data={"value": "x"}, queue="q")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="priority must be an int"):
        run.start_async(input_data={"value": "x"}, queue=Queue("q"), priority="high")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="priority must lie within"):
        run.start_async(input_data={"value": "x"}, queue=Queue("q"), priority=10**9)
    assert wf.get_workflow_run_execution_result(run.run_id) is None
    with pytest.raises(TypeError, match="queue must be a Queue"):
        create_workflow(id="w", input_schema=Job, output_schema=Job, queue="q")  # type: ignore[arg-type]


def test_a_file_from_before_queues_migrates_and_its_queued_run_finishes(tmp_path: Path) -> None:
    """A SQLite file at the schema just before queues: opened, it migrates in place."""
    import contextlib
    import sqlite3

    from runtime._run_input import first_record, pending_snapshot
    from runtime._stores import sqlite as module

    before = module._QUEUES_FROM - 1
    path = tmp_path / "old.db"
    connection = sqlite3.connect(path, isolation_level=None)
    connection.executescript(module._SCHEMA)
    for steps in module._MIGRATIONS[: before - 1]:
        for statement in steps:
            connection.execute(statement)
    wf = workflow(Gauge(), wf_id="old")
    record = first_record(
        pending_snapshot(
            wf.plan,
            "old-run",
            input_data={"value": "x"},
            request_context=None,
            initial_state=None,
            tracing_options=None,
            output_options=None,
        )
    )
    connection.execute(
        "INSERT INTO runs (run_id, workflow_id, status, seq, created_at, updated_at, trace_id, "
        "snapshot) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            record.run_id,
            record.workflow_id,
            record.status,
            record.seq,
            record.created_at,
            record.updated_at,
            record.trace_id,
            record.data,
        ),
    )
    connection.execute(f"PRAGMA user_version = {before}")
    connection.close()

    with Runtime(store=SQLiteStore(path)) as rt:
        bound = rt.register(wf)
        finish_all(bound, ["old-run"])  # claimed by rank, which the migration set
        queued = rt.register(workflow(Gauge(), queue=Queue("new", concurrency=1), wf_id="new"))
        finish_all(queued, [queued.create_run().start_async(input_data={"value": "y"}).run_id])
        store = rt.store
        assert isinstance(store, SQLiteStore)
        assert [(s.queue, s.waiting, s.running) for s in store.queue_stats()] == [("new", 0, 0)]
    with contextlib.closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == module.SCHEMA_VERSION
        columns = {row[1] for row in connection.execute("PRAGMA table_info(runs)")}
        assert {"queue", "queue_key", "priority", "rank", "started_at"} <= columns


def test_runs_a_stopped_runtime_left_go_back_through_the_queue(
    make_runtime: Any, request: pytest.FixtureRequest
) -> None:
    """The next runtime on a durable store takes the halted runs only as the limits allow."""
    if "memory" in request.node.name:
        pytest.skip("a store in memory keeps no run past its runtime")
    queue = Queue("recovered", concurrency=1)
    first, second = Gauge(), Gauge()
    rt = make_runtime()
    wf = rt.register(workflow(first, queue=queue, hold=0.3, wf_id="recovered"))
    ids = [wf.create_run().start_async(input_data={"value": f"r{i}"}).run_id for i in range(4)]
    wait_for(lambda: len(first.starts) >= 1, "no run started")
    rt.stop(timeout=0.01)  # halts the run in progress: it goes back to the queue
    again = make_runtime()
    resumed = again.register(workflow(second, queue=queue, hold=0.05, wf_id="recovered"))
    finish_all(resumed, ids)
    assert second.most["*"] <= 1
    assert len(second.starts) >= 3  # at least the runs that never started ran here


@pytest.mark.usefixtures("_structlog_reset")
def test_a_queue_whose_stored_limit_is_not_a_number_holds_its_runs_and_the_others_go_on(
    tmp_path: Path,
) -> None:
    # A limit written by hand into the SQLite file made every claim raise: no run of any
    # queue (or of none) started, and `callboard queues list` showed a traceback.
    import io
    import sqlite3
    from contextlib import redirect_stderr, redirect_stdout

    import structlog.testing

    from runtime._cli import main

    path = tmp_path / "runs.db"
    odd = workflow(Gauge(), queue=Queue("odd", concurrency=2), wf_id="odd")
    fine = workflow(Gauge(), queue=Queue("fine", rate_limit=(5, 60.0)), wf_id="fine")
    plain = workflow(Gauge(), wf_id="plain")
    with (
        structlog.testing.capture_logs() as logs,
        Runtime(store=SQLiteStore(path), role="worker") as worker,
        Runtime(store=path, role="client") as rt,
    ):
        bound = {wf.id: (worker.register(wf), rt.register(wf)) for wf in (odd, fine, plain)}
        for wf_id in ("odd", "fine"):  # a process defines a queue at its first start
            result = bound[wf_id][1].create_run().start(input_data={"value": "x"}, timeout=WAIT)
            assert result.status == "success"
        with contextlib.closing(sqlite3.connect(path)) as raw, raw:
            raw.execute("UPDATE queues SET concurrency = 'two' WHERE name = 'odd'")
        held = bound["odd"][1].create_run()
        held.start_async(input_data={"value": "o"})
        for wf_id in ("fine", "plain"):
            result = bound[wf_id][1].create_run().start(input_data={"value": "x"}, timeout=WAIT)
            assert result.status == "success"
        out = io.StringIO()
        with redirect_stdout(out), redirect_stderr(io.StringIO()):
            listed = main(["queues", "list", "--db", str(path)])
        time.sleep(0.5)  # claim passes: its limit is unknown, so it waits
        now = bound["odd"][1].get_workflow_run_execution_result(held.run_id)
        assert now is not None and now.status == "pending"

    assert listed == 0 and "odd" in out.getvalue() and "fine" in out.getvalue()
    said = [log for log in logs if log["event"] == "queue_damaged"]
    assert said and {log["queue"] for log in said} == {"odd"}
    assert "its concurrency is 'two'" in said[0]["error"]
    # A process that defines the queue again (at its first start) mends its row.
    with Runtime(store=SQLiteStore(path)) as mended:
        wf = mended.register(odd)
        assert wf.create_run().start(input_data={"value": "y"}, timeout=WAIT).status == "success"
        assert wf.create_run(run_id=held.run_id).wait(timeout=WAIT).status == "success"


def _abandoning(
    released: threading.Event, began: dict[str, threading.Event], *, timeout: float | None
) -> Any:
    """A concurrency-1 queue's workflow whose "stuck" body ignores its abort signal.

    Each body notes when it began; the stuck one then blocks until ``released`` is set,
    whatever its run's cancel or its timeout says (as a sync call into a library would).
    """

    def body(ctx: Any) -> Job:
        value = ctx.input_data.value
        began[value].set()
        if value == "stuck":
            released.wait(WAIT)  # not ctx.abort_signal: it runs on after its run let go
        return ctx.input_data

    step = create_step(
        id="call", input_schema=Job, output_schema=Job, execute=body, timeout=timeout
    )
    return (
        create_workflow(
            id="abandoning",
            input_schema=Job,
            output_schema=Job,
            queue=Queue("single", concurrency=1),
        )
        .then(step)
        .commit()
    )


@pytest.mark.usefixtures("_structlog_reset")
@pytest.mark.parametrize("let_go_by", ["cancel", "timeout"])
def test_a_step_body_its_run_let_go_of_keeps_the_queues_slot_until_it_returns(
    make_runtime: Any, let_go_by: str
) -> None:
    # A sync body cannot be stopped: cancelled, or timed out and abandoned, it runs on.
    # Until it returns it executes in its queue, and the next run waits for it.
    released = threading.Event()
    began = {"stuck": threading.Event(), "next": threading.Event()}
    rt = make_runtime()
    wf = rt.register(_abandoning(released, began, timeout=0.2 if let_go_by == "timeout" else None))
    try:
        with structlog.testing.capture_logs() as logs:
            stuck = wf.create_run()
            stuck.start_async(input_data={"value": "stuck"})
            assert began["stuck"].wait(WAIT)
            if let_go_by == "cancel":
                assert stuck.cancel() is True
                assert stuck.wait(timeout=WAIT).status == "canceled"
            else:
                result = stuck.wait(timeout=WAIT)
                assert result.status == "failed"
                assert result.error is not None and result.error.name == "StepTimeoutError"
            after = wf.create_run()
            after.start_async(input_data={"value": "next"})
            # Room for a claim, or the gate, to let it in: none may while the body runs.
            assert not began["next"].wait(0.5), "the next run's step began beside the stuck one"
            released.set()
            freed = time.monotonic()
            assert after.wait(timeout=WAIT).status == "success"
            assert time.monotonic() - freed < 2.0  # told when the body returned, not polled
    finally:
        released.set()
    said = [entry for entry in logs if entry["event"] == "queue_slot_held_by_abandoned_step"]
    assert [(entry["run_id"], entry["queue"]) for entry in said] == [(stuck.run_id, "single")]


def test_a_step_body_its_run_let_go_of_takes_no_place_of_the_runtimes_own_limit(
    make_runtime: Any,
) -> None:
    # It holds its queue's slot, not one of max_concurrent_runs: a body stuck for good
    # would otherwise take that place for ever, from runs of every queue (README).
    released = threading.Event()
    began = {"stuck": threading.Event(), "next": threading.Event()}
    rt = make_runtime(max_concurrent_runs=1)
    wf = rt.register(_abandoning(released, began, timeout=None))
    unqueued = rt.register(
        create_workflow(id="free", input_schema=Job, output_schema=Job)
        .then(
            create_step(
                id="echo", input_schema=Job, output_schema=Job, execute=lambda c: c.input_data
            )
        )
        .commit()
    )
    try:
        stuck = wf.create_run()
        stuck.start_async(input_data={"value": "stuck"})
        assert began["stuck"].wait(WAIT)
        assert stuck.cancel() is True
        other = unqueued.create_run()
        other.start_async(input_data={"value": "free"})
        assert other.wait(timeout=WAIT).status == "success"
        assert not released.is_set()  # it ran while the stuck body still did
    finally:
        released.set()


def test_in_memory_step_bodies_are_counted_only_once_a_run_entered_a_queue() -> None:
    # Counting bodies (a lock and a dict, twice a step) serves only a queue's slot in
    # memory: a runtime whose runs are in no queue pays nothing for it at each step.
    with Runtime() as rt:
        system = rt._host.system
        assert system is not None
        plain = rt.register(workflow(Gauge(), hold=0.0, wf_id="plain"))
        assert plain.create_run().start(input_data={"value": "p"}, timeout=WAIT).status == (
            "success"
        )
        assert system.pool.here is None
        queued = rt.register(workflow(Gauge(), queue=Queue("q", concurrency=1), hold=0.0))
        assert queued.create_run().start(input_data={"value": "q"}, timeout=WAIT).status == (
            "success"
        )
        assert system.pool.here is system.pool.queued_here is not None


def test_a_held_queue_slot_is_freed_when_its_runs_next_body_began_before_the_supervisor_heard() -> (
    None
):
    # The abandoned body returns (StepBodiesEnded is told), and a body of the same run
    # begins (the run restarted, say) before the supervisor reads the message: the
    # supervisor still sees a body, keeps the slot, and must be told again once that
    # one returns. It was not: the queue kept one slot fewer for good.
    released = threading.Event()
    began = {"stuck": threading.Event(), "next": threading.Event()}
    rt = Runtime().start()
    try:
        wf = rt.register(_abandoning(released, began, timeout=None))
        system = rt._host.system
        assert system is not None
        bodies = system.pool.queued_here  # counted once a run enters a queue
        assert bodies is not None
        stuck = wf.create_run()
        stuck.start_async(input_data={"value": "stuck"})
        assert began["stuck"].wait(WAIT)
        assert stuck.cancel() is True
        assert stuck.wait(timeout=WAIT).status == "canceled"
        tell = bodies.on_free
        assert tell is not None
        told = threading.Event()

        def on_free() -> None:
            if not told.is_set():
                bodies.body_began(stuck.run_id)  # its next body, in the window
                told.set()
            tell()

        bodies.on_free = on_free
        released.set()
        assert told.wait(WAIT)
        time.sleep(0.2)  # the supervisor reads StepBodiesEnded: a body still runs
        bodies.body_ended(stuck.run_id)  # which returns
        after = wf.create_run()
        after.start_async(input_data={"value": "next"})
        assert after.wait(timeout=5).status == "success"
    finally:
        released.set()
        rt.stop(timeout=5)


def test_a_run_asleep_while_a_body_it_let_go_of_runs_on_wakes(make_runtime: Any) -> None:
    # Its first attempt timed out and runs on; the retry returned, and the run sleeps. A
    # shared store's claimer named the run busy (left out of claims) until the abandoned
    # body returned: it never woke while that body was stuck, where in memory it did.
    released = threading.Event()
    attempts: list[int] = []

    def body(ctx: Any) -> Job:
        attempts.append(ctx.retry_count)
        if len(attempts) == 1:
            released.wait(WAIT)  # ignores its abort signal
        return ctx.input_data

    flaky = create_step(
        id="call", input_schema=Job, output_schema=Job, execute=body, timeout=0.2, retries=1
    )
    done = create_step(
        id="done", input_schema=Job, output_schema=Job, execute=lambda c: c.input_data
    )
    rt = make_runtime()
    wf = rt.register(
        create_workflow(id="napping", input_schema=Job, output_schema=Job)
        .then(flaky)
        .sleep(0.3)
        .then(done)
        .commit()
    )
    try:
        run = wf.create_run()
        run.start_async(input_data={"value": "x"})
        assert run.wait(timeout=5).status == "success"
        assert not released.is_set() and len(attempts) == 2
    finally:
        released.set()
