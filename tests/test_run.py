"""Run: start_async, start, wait, and what a run's result holds."""

from __future__ import annotations

import re
import threading
import time

import pytest
from pydantic import BaseModel

from runtime import (
    RunAlreadyStartedError,
    RunNotStartedError,
    RunStatus,
    Runtime,
    RunTimeoutError,
    SnapshotFormatError,
    StartAsyncResult,
    StepStatus,
    TracingOptions,
    WorkflowError,
    WorkflowResult,
    create_step,
    create_workflow,
)
from tests._support import Value, shout_step, wait_until

BLOCK_LIMIT = 10.0  # seconds a gated step waits at most, so that a bug fails instead of hanging


class Tagged(BaseModel):
    value: str
    length: int


def gated_workflow(entered: threading.Event, release: threading.Event, workflow_id: str = "gated"):
    def first(ctx):
        entered.set()
        release.wait(BLOCK_LIMIT)
        return Value(value=ctx.input_data.value.upper())

    step = create_step(id="first", input_schema=Value, output_schema=Value, execute=first)
    return create_workflow(id=workflow_id, input_schema=Value, output_schema=Value).then(step)


def two_step_workflow():
    measure = create_step(
        id="measure",
        input_schema=Value,
        output_schema=Tagged,
        execute=lambda ctx: Tagged(value=ctx.input_data.value, length=len(ctx.input_data.value)),
    )
    return (
        create_workflow(id="two-steps", input_schema=Value, output_schema=Tagged)
        .then(shout_step())
        .then(measure)
        .commit()
    )


def test_start_async_returns_while_the_first_step_is_still_blocked(runtime: Runtime) -> None:
    entered, release = threading.Event(), threading.Event()
    wf = runtime.register(gated_workflow(entered, release).commit())
    run = wf.create_run()
    try:
        started = run.start_async(input_data={"value": "initial data"})
        assert isinstance(started, StartAsyncResult)
        assert started.run_id == run.run_id
        assert not release.is_set()  # the step cannot have ended: start_async did not wait for it
        assert entered.wait(5), "the first step never started"

        def reads_running() -> bool:
            result = wf.get_workflow_run_execution_result(started.run_id)
            return result is not None and result.status == "running"

        wait_until(reads_running)
        result = wf.get_workflow_run_execution_result(started.run_id)
        assert result is not None
        assert result.status == RunStatus.RUNNING
        assert result.steps["first"].status == StepStatus.RUNNING
        assert result.steps["first"].ended_at is None
        assert result.result is None
    finally:
        release.set()
    final = run.wait(timeout=5)
    assert final.status == "success"
    assert final.result == {"value": "INITIAL DATA"}


def test_a_run_is_recorded_before_start_async_returns(runtime: Runtime) -> None:
    entered, release = threading.Event(), threading.Event()
    wf = runtime.register(gated_workflow(entered, release).commit())
    run = wf.create_run()
    try:
        run_id = run.start_async(input_data={"value": "x"}).run_id
        result = wf.get_workflow_run_execution_result(run_id)
        assert result is not None
        assert result.status in ("pending", "running")
        assert result.run_id == run_id
        assert result.workflow_id == "gated"
        assert result.input == {"value": "x"}
    finally:
        release.set()
    assert run.wait(timeout=5).status == "success"


def test_start_blocks_until_the_run_ends_and_returns_its_result(runtime: Runtime) -> None:
    wf = runtime.register(two_step_workflow())
    result = wf.create_run().start(input_data={"value": "hello"}, timeout=5)
    assert isinstance(result, WorkflowResult)
    assert result.status == "success"
    assert result.result == {"value": "HELLO", "length": 5}


def test_start_accepts_the_input_as_a_model(runtime: Runtime) -> None:
    wf = runtime.register(two_step_workflow())
    result = wf.create_run().start(input_data=Value(value="model"), timeout=5)
    assert result.input == {"value": "model"}
    assert result.result == {"value": "MODEL", "length": 5}


def test_a_run_result_describes_every_step(runtime: Runtime) -> None:
    wf = runtime.register(two_step_workflow())
    before = time.time()
    result = wf.create_run().start(input_data={"value": "abc"}, timeout=5)

    assert result.input == {"value": "abc"}
    assert result.error is None
    assert list(result.steps) == ["shout", "measure"]

    shout, measure = result.steps["shout"], result.steps["measure"]
    assert shout.status == "success"
    assert shout.payload == {"value": "abc"}
    assert shout.output == {"value": "ABC"}
    assert shout.error is None
    assert measure.status == "success"
    assert measure.payload == {"value": "ABC"}
    assert measure.output == {"value": "ABC", "length": 3}
    assert measure.error is None

    for step in (shout, measure):
        assert step.started_at is not None and step.ended_at is not None
        assert step.started_at <= step.ended_at
        assert step.started_at.tzinfo is not None
    assert shout.ended_at <= measure.started_at

    assert result.created_at <= result.updated_at
    assert result.created_at.timestamp() >= before - 1
    assert result.trace_id is not None and re.fullmatch(r"[0-9a-f]{32}", result.trace_id)
    assert result.span_id is not None and re.fullmatch(r"[0-9a-f]+", result.span_id)
    assert result.state is None


def test_statuses_compare_equal_to_plain_strings(runtime: Runtime) -> None:
    wf = runtime.register(two_step_workflow())
    result = wf.create_run().start(input_data={"value": "a"}, timeout=5)
    assert result.status == "success"
    assert result.steps["shout"].status == "success"
    assert result.is_terminal
    assert {status.value for status in RunStatus} == {
        "pending",
        "running",
        "waiting",
        "suspended",
        "success",
        "failed",
        "canceled",
    }
    assert RunStatus.FAILED == "failed"
    assert StepStatus.RUNNING == "running"


def test_a_query_after_the_run_ends_returns_the_same_result_as_wait(runtime: Runtime) -> None:
    wf = runtime.register(two_step_workflow())
    run = wf.create_run()
    run_id = run.start_async(input_data={"value": "same"}).run_id
    waited = run.wait(timeout=5)
    queried = wf.get_workflow_run_execution_result(run_id)
    assert queried == waited


def test_a_given_trace_id_is_the_run_trace_id(runtime: Runtime) -> None:
    wf = runtime.register(two_step_workflow())
    result = wf.create_run().start(
        input_data={"value": "t"},
        tracing_options=TracingOptions(trace_id="ABCDEF0123"),
        timeout=5,
    )
    assert result.trace_id == "abcdef0123".zfill(32)  # lower case, 32 digits


def test_a_run_can_be_given_its_own_id(runtime: Runtime) -> None:
    wf = runtime.register(two_step_workflow())
    run = wf.create_run(run_id="my-run-1")
    assert run.run_id == "my-run-1"
    assert run.start_async(input_data={"value": "mine"}).run_id == "my-run-1"
    assert run.wait(timeout=5).run_id == "my-run-1"


def test_create_run_gives_every_run_a_new_id(runtime: Runtime) -> None:
    wf = runtime.register(two_step_workflow())
    ids = {wf.create_run().run_id for _ in range(50)}
    assert len(ids) == 50


def test_starting_a_run_twice_raises_run_already_started(runtime: Runtime) -> None:
    wf = runtime.register(two_step_workflow())
    run = wf.create_run()
    first = run.start(input_data={"value": "once"}, timeout=5)
    with pytest.raises(RunAlreadyStartedError) as caught:
        run.start_async(input_data={"value": "twice"})
    assert isinstance(caught.value, WorkflowError)
    assert caught.value.run_id == run.run_id
    # The first run is untouched.
    assert wf.get_workflow_run_execution_result(run.run_id) == first


def test_two_runs_created_with_the_same_id_cannot_both_start(runtime: Runtime) -> None:
    wf = runtime.register(two_step_workflow())
    first = wf.create_run(run_id="shared-id")
    second = wf.create_run(run_id="shared-id")
    first.start_async(input_data={"value": "first"})
    with pytest.raises(RunAlreadyStartedError):
        second.start_async(input_data={"value": "second"})
    result = first.wait(timeout=5)
    assert result.input == {"value": "first"}
    assert result.result == {"value": "FIRST", "length": 5}


def test_wait_with_a_short_timeout_on_a_blocked_run_raises_run_timeout(runtime: Runtime) -> None:
    entered, release = threading.Event(), threading.Event()
    wf = runtime.register(gated_workflow(entered, release).commit())
    run = wf.create_run()
    try:
        run.start_async(input_data={"value": "slow"})
        assert entered.wait(5)
        with pytest.raises(RunTimeoutError) as caught:
            run.wait(timeout=0.05)
        assert isinstance(caught.value, TimeoutError)
        assert isinstance(caught.value, WorkflowError)
        assert caught.value.run_id == run.run_id
    finally:
        release.set()
    # The run went on.
    assert run.wait(timeout=5).status == "success"


def test_start_with_a_timeout_raises_run_timeout_and_the_run_goes_on(runtime: Runtime) -> None:
    entered, release = threading.Event(), threading.Event()
    wf = runtime.register(gated_workflow(entered, release).commit())
    run = wf.create_run()
    try:
        with pytest.raises(RunTimeoutError):
            run.start(input_data={"value": "slow"}, timeout=0.05)
    finally:
        release.set()
    assert run.wait(timeout=5).result == {"value": "SLOW"}


def test_wait_on_a_run_never_started_raises_run_not_started(runtime: Runtime) -> None:
    wf = runtime.register(two_step_workflow())
    run = wf.create_run()
    with pytest.raises(RunNotStartedError) as caught:
        run.wait(timeout=1)
    assert isinstance(caught.value, WorkflowError)
    assert caught.value.run_id == run.run_id
    assert str(caught.value) == (
        f"run {run.run_id!r} has not been started (no run has this id): call start_async() "
        "or start() on it first"
    )
    assert wf.get_workflow_run_execution_result(run.run_id) is None


def test_wait_on_an_ended_run_returns_at_once(runtime: Runtime) -> None:
    wf = runtime.register(two_step_workflow())
    run = wf.create_run()
    run.start(input_data={"value": "done"}, timeout=5)
    assert run.wait(timeout=0).status == "success"


def test_wait_reads_a_store_in_memorys_result_without_the_checks_against_damage(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """Bytes this process encoded and kept in memory need no checksum nor key-by-key check.

    A durable store's bytes get both: they crossed a disk (or a wire) and may be damaged.
    """
    import runtime._snapshot as snapshot_module

    checked: list[str] = []
    original = snapshot_module._problem

    def problem(snapshot):
        checked.append(snapshot["run_id"])
        return original(snapshot)

    monkeypatch.setattr(snapshot_module, "_problem", problem)
    workflow = create_workflow(id="read", input_schema=Value, output_schema=Value).then(
        shout_step()
    )
    with Runtime() as rt:
        run = rt.register(workflow.commit()).create_run()
        result = run.start(input_data={"value": "hi"})
        assert result.status == "success" and result.result == {"value": "HI"}
        assert run.wait().steps["shout"].output == {"value": "HI"}
        assert checked == []
    with Runtime(store=tmp_path / "runs.db") as rt:
        run = rt.register(workflow.commit()).create_run()
        assert run.start(input_data={"value": "hi"}).result == {"value": "HI"}
        assert run.run_id in checked


@pytest.mark.parametrize("put", ["another run's record", "bytes of no mapping"])
def test_wait_on_a_store_in_memory_still_refuses_a_record_not_of_its_run(put: str) -> None:
    # A program that puts records in its MemoryStore itself: wait() read another run's
    # result as this one's, or failed with AttributeError, where a query refuses both.
    from runtime._snapshot import encode
    from runtime._stores.memory import _record

    workflow = (
        create_workflow(id="mine", input_schema=Value, output_schema=Value)
        .then(shout_step())
        .commit()
    )
    with Runtime() as rt:
        wf = rt.register(workflow)
        mine, other = wf.create_run(), wf.create_run()
        mine.start(input_data={"value": "a"})
        other.start(input_data={"value": "b"})
        records = rt.store._records  # type: ignore[attr-defined]
        kept = _record(records[mine.run_id])
        if put == "another run's record":
            data = _record(records[other.run_id]).data
        else:
            data = encode([1, 2])  # type: ignore[arg-type]
        records[mine.run_id] = kept._replace(data=data)

        with pytest.raises(SnapshotFormatError, match="cannot be read"):
            mine.wait()
        with pytest.raises(SnapshotFormatError):
            wf.get_workflow_run_execution_result(mine.run_id)


CALLER_PYTHON_CALLS_PER_START = 29
"""The Python functions one ``start_async`` in memory calls on the caller's thread, with
no tracer configured and the suite's checks on (27 without them). It was 30 while the
first record was built through a helper of one caller (``_deferred``)."""


def test_a_start_in_memory_costs_the_caller_a_bounded_number_of_python_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python calls only, the fewest of 20 starts: a C call's count moves with the machine
    (a dispatcher found idle is woken with one more), and a start may run a finalizer of
    the collector's; the path of a start does not move."""
    import sys

    from runtime import _otel

    # A tracer provider another test set stays set for the process: none here.
    monkeypatch.setattr(_otel, "tracer", lambda: None)
    calls = [0]

    def count(_frame: object, event: str, _arg: object) -> None:
        if event == "call":
            calls[0] += 1

    counts = []
    with Runtime() as rt:
        wf = rt.register(
            create_workflow(id="calls", input_schema=Value, output_schema=Value)
            .then(shout_step())
            .commit()
        )
        for _ in range(3):  # warm: caches filled
            wf.create_run().start(input_data={"value": "x"})
        runs = [wf.create_run() for _ in range(20)]
        for run in runs:
            calls[0] = 0
            sys.setprofile(count)
            try:
                run.start_async(input_data={"value": "x"})
            finally:
                sys.setprofile(None)
            counts.append(calls[0])
        for run in runs:
            assert run.wait(5).status == "success"
    assert min(counts) <= CALLER_PYTHON_CALLS_PER_START, counts
