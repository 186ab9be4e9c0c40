"""Runtime: starting and stopping, binding workflows, the concurrency limit, the default runtime."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime import (
    RunAlreadyStartedError,
    RunNotStartedError,
    Runtime,
    RuntimeStoppedError,
    WorkflowError,
    create_step,
    create_workflow,
    default_runtime,
)
from tests._support import Value, callboard_threads, shout, wait_for_no_callboard_threads

BLOCK_LIMIT = 10.0


async def shout_async(ctx):
    await asyncio.sleep(0)
    return Value(value=ctx.input_data.value.upper())


def single_step_workflow(body=shout, workflow_id: str = "shout"):
    step = create_step(id="body", input_schema=Value, output_schema=Value, execute=body)
    return (
        create_workflow(id=workflow_id, input_schema=Value, output_schema=Value).then(step).commit()
    )


class Gates:
    """Per-input gates: a step for input ``name`` marks itself entered and waits to be let go."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entered: dict[str, threading.Event] = {}
        self.release: dict[str, threading.Event] = {}

    def _pair(self, name: str) -> tuple[threading.Event, threading.Event]:
        with self._lock:
            return (
                self.entered.setdefault(name, threading.Event()),
                self.release.setdefault(name, threading.Event()),
            )

    def step_body(self) -> Callable:
        def body(ctx):
            entered, release = self._pair(ctx.input_data.value)
            entered.set()
            release.wait(BLOCK_LIMIT)
            return Value(value=ctx.input_data.value.upper())

        return body

    def wait_entered(self, name: str, timeout: float = 5.0) -> bool:
        return self._pair(name)[0].wait(timeout)

    def let_go(self, name: str) -> None:
        self._pair(name)[1].set()

    def let_all_go(self) -> None:
        with self._lock:
            for event in self.release.values():
                event.set()


def wait_for_status(wf, run_id: str, status: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = wf.get_workflow_run_execution_result(run_id)
        if result is not None and result.status == status:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} did not reach {status!r}: {result and result.status}")
        time.sleep(0.002)


# --- lifecycle ----------------------------------------------------------------------------


def test_a_runtime_works_as_a_context_manager() -> None:
    with Runtime() as rt:
        assert rt.is_running
        wf = rt.register(single_step_workflow())
        result = wf.create_run().start(input_data={"value": "cm"}, timeout=5)
        assert result.result == {"value": "CM"}
    assert not rt.is_running
    assert wait_for_no_callboard_threads() == []


def test_a_runtime_works_with_start_and_stop() -> None:
    rt = Runtime()
    assert not rt.is_running
    assert rt.start() is rt
    assert rt.start() is rt  # starting a running runtime does nothing
    try:
        wf = rt.register(single_step_workflow())
        assert wf.create_run().start(input_data={"value": "ss"}, timeout=5).status == "success"
    finally:
        rt.stop()
    assert not rt.is_running
    rt.stop()  # stopping a stopped runtime does nothing
    assert wait_for_no_callboard_threads() == []


def test_a_stopped_runtime_cannot_start_again() -> None:
    rt = Runtime().start()
    rt.stop()
    with pytest.raises(RuntimeStoppedError):
        rt.start()


def test_stop_leaves_no_callboard_thread_behind() -> None:
    rt = Runtime().start()
    try:
        sync_wf = rt.register(single_step_workflow(shout, "sync"))
        async_wf = rt.register(single_step_workflow(shout_async, "async"))
        runs = [wf.create_run() for wf in (sync_wf, async_wf) for _ in range(20)]
        for index, run in enumerate(runs):
            run.start_async(input_data={"value": f"v{index}"})
        assert all(run.wait(timeout=10).status == "success" for run in runs)
        # The runtime's threads, async loop included, are there to be left behind.
        assert "callboard-async" in {thread.name for thread in callboard_threads()}
    finally:
        rt.stop(timeout=5)
    left = wait_for_no_callboard_threads()
    assert left == [], [thread.name for thread in left]


def test_start_async_on_a_runtime_never_started_raises_runtime_stopped() -> None:
    rt = Runtime()
    wf = rt.register(single_step_workflow())
    run = wf.create_run()
    with pytest.raises(RuntimeStoppedError, match="not started") as caught:
        run.start_async(input_data={"value": "v"})
    assert isinstance(caught.value, WorkflowError)
    assert wf.get_workflow_run_execution_result(run.run_id) is None


def test_start_async_after_stop_raises_runtime_stopped() -> None:
    with Runtime() as rt:
        wf = rt.register(single_step_workflow())
    run = wf.create_run()
    with pytest.raises(RuntimeStoppedError) as caught:
        run.start_async(input_data={"value": "late"})
    assert str(caught.value) == (
        "the runtime is stopped, and a stopped runtime cannot start again: create a new "
        "Runtime and register the workflow on it"
    )
    with pytest.raises(RuntimeStoppedError):
        run.start(input_data={"value": "late"}, timeout=1)
    assert wf.get_workflow_run_execution_result(run.run_id) is None


def test_a_run_refused_by_a_stopped_runtime_is_not_marked_started() -> None:
    with Runtime() as rt:
        wf = rt.register(single_step_workflow())
    run = wf.create_run()
    with pytest.raises(RuntimeStoppedError):
        run.start_async(input_data={"value": "late"})
    # Not RunAlreadyStartedError: the refused start left no trace.
    with pytest.raises(RuntimeStoppedError):
        run.start_async(input_data={"value": "late"})
    with pytest.raises(RunNotStartedError):
        run.wait(timeout=0)


def test_results_stay_readable_after_stop() -> None:
    with Runtime() as rt:
        wf = rt.register(single_step_workflow())
        run = wf.create_run()
        result = run.start(input_data={"value": "kept"}, timeout=5)
    assert wf.get_workflow_run_execution_result(run.run_id) == result
    assert run.wait(timeout=1) == result


@pytest.mark.parametrize(
    "kwargs", [{"max_concurrent_runs": 0}, {"max_concurrent_runs": -1}, {"stop_timeout": -1}]
)
def test_runtime_refuses_nonsense_settings(kwargs) -> None:
    with pytest.raises(ValueError):
        Runtime(**kwargs)


# --- register -------------------------------------------------------------------------------


def test_register_returns_the_workflow_bound_to_the_runtime(runtime: Runtime) -> None:
    workflow = single_step_workflow()
    bound = runtime.register(workflow)
    assert bound.runtime is runtime
    assert bound.id == workflow.id
    assert bound.plan is workflow.plan
    assert workflow.runtime is None  # the definition itself stays unbound
    assert runtime.register(bound) is bound
    run = bound.create_run()
    run.start(input_data={"value": "b"}, timeout=5)
    assert bound.get_workflow_run_execution_result(run.run_id) is not None


def test_registering_the_same_workflow_twice_is_fine(runtime: Runtime) -> None:
    workflow = single_step_workflow()
    first, second = runtime.register(workflow), runtime.register(workflow)
    run = first.create_run()
    run.start(input_data={"value": "x"}, timeout=5)
    assert second.get_workflow_run_execution_result(run.run_id) is not None


def test_registering_another_workflow_with_the_same_id_makes_it_the_one_new_runs_use(
    runtime: Runtime,
) -> None:
    # Several definitions of one id may be registered (see tests/test_versions.py): each
    # handle starts runs on its own definition, and the one registered last is the current.
    old = runtime.register(single_step_workflow(lambda ctx: Value(value="old"), "taken"))
    new = runtime.register(single_step_workflow(shout_async, "taken"))
    assert old.create_run().start(input_data={"value": "x"}, timeout=5).result == {"value": "old"}
    assert new.create_run().start(input_data={"value": "x"}, timeout=5).result == {"value": "X"}
    assert runtime._registered()["taken"] is new.plan


def test_one_workflow_may_be_registered_with_two_runtimes() -> None:
    workflow = single_step_workflow()
    with Runtime() as one, Runtime() as two:
        in_one, in_two = one.register(workflow), two.register(workflow)
        run = in_one.create_run()
        run.start(input_data={"value": "one"}, timeout=5)
        assert in_one.get_workflow_run_execution_result(run.run_id) is not None
        assert in_two.get_workflow_run_execution_result(run.run_id) is None
        # Run ids are per runtime.
        other = in_two.create_run(run_id=run.run_id)
        assert other.start(input_data={"value": "two"}, timeout=5).result == {"value": "TWO"}


def test_a_run_id_in_use_by_another_workflow_cannot_be_reused(runtime: Runtime) -> None:
    first = runtime.register(single_step_workflow(shout, "first"))
    second = runtime.register(single_step_workflow(shout, "second"))
    first.create_run(run_id="taken").start(input_data={"value": "a"}, timeout=5)
    with pytest.raises(RunAlreadyStartedError):
        second.create_run(run_id="taken").start_async(input_data={"value": "b"})
    assert second.get_workflow_run_execution_result("taken") is None


# --- stopping with runs in progress -------------------------------------------------------


def test_a_run_in_progress_when_stop_times_out_ends_failed_with_runtime_stopped() -> None:
    gates = Gates()
    rt = Runtime().start()
    try:
        wf = rt.register(single_step_workflow(gates.step_body(), "blocked"))
        run = wf.create_run()
        run.start_async(input_data={"value": "stuck"})
        assert gates.wait_entered("stuck")
        rt.stop(timeout=0.05)
        result = run.wait(timeout=5)
        assert result.status == "failed"
        assert result.error is not None
        assert result.error.name == "RuntimeStoppedError"
        # One error fails every run the stop aborts: each names its own run.
        assert result.error.attributes["run_id"] == run.run_id
        assert result.steps["body"].status == "failed"
        assert result.steps["body"].error is not None
        assert result.steps["body"].error.name == "RuntimeStoppedError"
        assert wf.get_workflow_run_execution_result(run.run_id) == result
    finally:
        gates.let_all_go()
        rt.stop(timeout=1)
    # The step that was still running ends once let go, and its late outcome changes nothing.
    assert wait_for_no_callboard_threads() == []
    assert wf.get_workflow_run_execution_result(run.run_id) == result


def test_an_async_step_in_progress_at_stop_ends_its_run_failed() -> None:
    never = asyncio.Event()
    entered = threading.Event()

    async def wait_forever(ctx):
        entered.set()
        await asyncio.wait_for(never.wait(), timeout=BLOCK_LIMIT)
        return ctx.input_data

    rt = Runtime().start()
    try:
        wf = rt.register(single_step_workflow(wait_forever, "async-blocked"))
        run = wf.create_run()
        run.start_async(input_data={"value": "stuck"})
        assert entered.wait(5)
        rt.stop(timeout=0.05)
        result = run.wait(timeout=5)
    finally:
        rt.stop(timeout=1)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "RuntimeStoppedError"
    assert wait_for_no_callboard_threads() == []


def test_stop_waits_for_runs_that_end_within_the_timeout() -> None:
    gates = Gates()
    rt = Runtime().start()
    wf = rt.register(single_step_workflow(gates.step_body(), "ends-in-time"))
    run = wf.create_run()
    run.start_async(input_data={"value": "soon"})
    assert gates.wait_entered("soon")
    stopper = threading.Thread(target=rt.stop, kwargs={"timeout": 10})
    stopper.start()
    try:
        gates.let_go("soon")
    finally:
        stopper.join(15)
        gates.let_all_go()
    assert not stopper.is_alive()
    assert run.wait(timeout=1).status == "success"


def test_runs_queued_behind_the_limit_when_stop_times_out_end_failed() -> None:
    gates = Gates()
    rt = Runtime(max_concurrent_runs=1).start()
    try:
        wf = rt.register(single_step_workflow(gates.step_body(), "queued"))
        running, queued = wf.create_run(), wf.create_run()
        running.start_async(input_data={"value": "running"})
        assert gates.wait_entered("running")
        queued.start_async(input_data={"value": "queued"})
        rt.stop(timeout=0.05)
        assert running.wait(timeout=5).status == "failed"
        result = queued.wait(timeout=5)
        assert result.status == "failed"
        assert result.error is not None
        assert result.error.name == "RuntimeStoppedError"
        assert not gates.entered.get("queued", threading.Event()).is_set()
    finally:
        gates.let_all_go()
        rt.stop(timeout=1)
    assert wait_for_no_callboard_threads() == []


# --- concurrency limit ---------------------------------------------------------------------


def test_max_concurrent_runs_holds_further_runs_pending_until_one_ends() -> None:
    gates = Gates()
    rt = Runtime(max_concurrent_runs=2).start()
    try:
        wf = rt.register(single_step_workflow(gates.step_body(), "limited"))
        runs = {name: wf.create_run() for name in ("a", "b", "c")}
        runs["a"].start_async(input_data={"value": "a"})
        runs["b"].start_async(input_data={"value": "b"})
        assert gates.wait_entered("a") and gates.wait_entered("b")
        runs["c"].start_async(input_data={"value": "c"})

        # The third run waits its turn: its step does not start while two runs are in progress.
        assert not gates.wait_entered("c", timeout=0.3)
        held = wf.get_workflow_run_execution_result(runs["c"].run_id)
        assert held is not None
        assert held.status == "pending"
        assert held.steps == {}

        gates.let_go("a")
        assert runs["a"].wait(timeout=5).status == "success"
        assert gates.wait_entered("c"), "the held run did not start when a slot freed up"
        wait_for_status(wf, runs["c"].run_id, "running")
        gates.let_all_go()
        assert [runs[name].wait(timeout=5).result for name in "abc"] == [
            {"value": "A"},
            {"value": "B"},
            {"value": "C"},
        ]
    finally:
        gates.let_all_go()
        rt.stop(timeout=5)
    assert wait_for_no_callboard_threads() == []


def test_held_runs_start_in_the_order_they_were_started() -> None:
    started: list[str] = []
    gates = Gates()
    body = gates.step_body()

    def record(ctx):
        started.append(ctx.input_data.value)
        return body(ctx)

    rt = Runtime(max_concurrent_runs=1).start()
    try:
        wf = rt.register(single_step_workflow(record, "ordered"))
        runs = [wf.create_run() for _ in range(5)]
        for index, run in enumerate(runs):
            run.start_async(input_data={"value": str(index)})
        for index in range(5):
            assert gates.wait_entered(str(index))
            gates.let_go(str(index))
        assert all(run.wait(timeout=5).status == "success" for run in runs)
    finally:
        gates.let_all_go()
        rt.stop(timeout=5)
    assert started == ["0", "1", "2", "3", "4"]


# --- the default runtime --------------------------------------------------------------------


def test_an_unbound_workflow_runs_on_the_default_runtime(default_runtime_stopped_after) -> None:
    workflow = single_step_workflow(shout, "unbound")
    assert workflow.runtime is None
    run = workflow.create_run()
    result = run.start(input_data={"value": "default"}, timeout=5)
    assert result.status == "success"
    assert result.result == {"value": "DEFAULT"}
    assert workflow.get_workflow_run_execution_result(run.run_id) == result
    assert default_runtime().is_running


def test_the_default_runtime_is_one_runtime(default_runtime_stopped_after) -> None:
    assert default_runtime() is default_runtime()


def test_start_async_on_the_default_runtime_records_the_run_at_once(
    default_runtime_stopped_after,
) -> None:
    workflow = single_step_workflow(shout_async, "unbound-async")
    run = workflow.create_run()
    run_id = run.start_async(input_data={"value": "x"}).run_id
    assert workflow.get_workflow_run_execution_result(run_id) is not None
    assert run.wait(timeout=5).result == {"value": "X"}


def test_a_stopped_default_runtime_is_let_go_once_a_new_one_replaces_it(
    default_runtime_stopped_after,
) -> None:
    workflow = single_step_workflow(shout, "unbound-replaced")
    first = default_runtime()
    assert workflow.create_run().start(input_data={"value": "a"}, timeout=5).status == "success"
    gone = weakref.ref(first)
    first.stop(timeout=5)
    del first
    assert default_runtime().is_running  # the replacement
    gc.collect()
    # The exit's registration of the first one's stop held it, and every run in its store.
    assert gone() is None


_REPLACED_DEFAULT_AT_EXIT = """
from runtime import create_step, create_workflow, default_runtime
from tests._support import Value

step = create_step(
    id="body", input_schema=Value, output_schema=Value, execute=lambda ctx: ctx.input_data
)
workflow = (
    create_workflow(
        id="asleep", input_schema=Value, output_schema=Value,
        on_finish=lambda outcome: print("ended", outcome.status, flush=True),
    )
    .then(step)
    .sleep(3600)
    .commit()
)
default_runtime().stop()
workflow.create_run().start_async(input_data={"value": "x"})
"""


def test_the_default_runtime_that_replaced_a_stopped_one_is_stopped_at_exit() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _REPLACED_DEFAULT_AT_EXIT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ended", "failed"]  # the stop at exit ended the asleep run
