"""Workflow versions: a run goes on only on the definition (plan fingerprint) it started on.

A daemon redeployed with a changed workflow while runs wait for a person or
sleep: a run whose definition is not registered stays exactly as it is
(``WorkflowVersionError`` from ``resume``, a warning from recovery), and goes
on once that definition is registered again, beside the new one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import BaseModel

from runtime import (
    InvalidInputError,
    Queue,
    RunStatus,
    Runtime,
    Step,
    Workflow,
    WorkflowDefinitionError,
    WorkflowResult,
    WorkflowVersionError,
    create_step,
    create_workflow,
)
from runtime._cli import main
from runtime._cli._worker import _load
from runtime._snapshot import Snapshot
from runtime._versions import matching_plan
from tests._support import Runtimes, wait_until

WAIT = 10.0


class Value(BaseModel):
    value: str


class Answer(BaseModel):
    answer: str


CALLS: list[str] = []
"""Each step's id, as it runs (cleared by every test)."""


@pytest.fixture(autouse=True)
def _calls_cleared() -> None:
    CALLS.clear()


def _step(step_id: str) -> Step[Any, Any]:
    def execute(ctx: Any) -> Value:
        CALLS.append(step_id)
        return Value(value=f"{ctx.input_data.value}+{step_id}")

    return create_step(id=step_id, input_schema=Value, output_schema=Value, execute=execute)


def _ask_body(ctx: Any) -> Value:
    CALLS.append("ask")
    if ctx.resume_data is None:
        ctx.suspend({"question": "go on?"})
    return Value(value=f"{ctx.input_data.value}+{ctx.resume_data.answer}")


first, extra, last = _step("first"), _step("extra"), _step("last")
ask = create_step(
    id="ask", input_schema=Value, output_schema=Value, resume_schema=Answer, execute=_ask_body
)


def approval(*steps: Step[Any, Any], version: str | None = None) -> Workflow[Value, Value]:
    flow = create_workflow(id="approval", input_schema=Value, output_schema=Value, version=version)
    for step in steps:
        flow = flow.then(step)
    return flow.commit()


V1 = approval(first, ask, last, version="v1")
CHANGES = {
    "a step inserted before the suspended one": approval(first, extra, ask, last, version="v2"),
    "a step inserted at the front": approval(extra, first, ask, last, version="v2"),
    "the suspended step removed": approval(first, last, version="v2"),
}


# --- the fingerprint ---------------------------------------------------------------------


def test_the_fingerprint_follows_the_plan_shape_not_step_bodies_nor_the_label() -> None:
    same_shape = create_step(
        id="first", input_schema=Value, output_schema=Value, execute=lambda ctx: ctx.input_data
    )
    fixed = approval(same_shape, ask, last)  # a fixed body, no label: the same shape

    assert fixed.plan.fingerprint == V1.plan.fingerprint
    assert len(V1.plan.fingerprint) == 16
    changed = {flow.plan.fingerprint for flow in CHANGES.values()}
    assert len(changed) == 3
    assert V1.plan.fingerprint not in changed


def test_a_version_label_must_be_a_non_empty_string() -> None:
    with pytest.raises(TypeError, match="version"):
        create_workflow(id="w", input_schema=Value, output_schema=Value, version="")


def test_a_run_records_its_version_and_fingerprint(runtime: Runtime) -> None:
    wf = runtime.register(approval(first, last, version="2024-06"))

    result = wf.create_run().start(input_data={"value": "x"}, timeout=WAIT)

    assert result.status == RunStatus.SUCCESS
    assert (result.version, result.fingerprint) == ("2024-06", wf.plan.fingerprint)


def test_one_label_for_two_shapes_is_refused(runtime: Runtime) -> None:
    runtime.register(V1)

    with pytest.raises(WorkflowDefinitionError, match="version 'v1' is already registered"):
        runtime.register(approval(first, last, version="v1"))


# --- a suspended run across a changed definition -------------------------------------------


@pytest.mark.parametrize("change", list(CHANGES), ids=lambda name: name.replace(" ", "-"))
def test_a_suspended_run_stays_suspended_on_a_changed_definition_and_resumes_on_its_own(
    runtimes: Runtimes, tmp_path: Path, change: str
) -> None:
    db = tmp_path / "runs.db"
    before = runtimes.start(db)
    run = before.register(V1).create_run()
    suspended = run.start(input_data={"value": "x"}, timeout=WAIT)
    assert suspended.status == RunStatus.SUSPENDED
    before.stop()
    CALLS.clear()

    after = runtimes.start(db)  # redeployed: only the changed definition
    changed = after.register(CHANGES[change])
    again = changed.create_run(run.run_id)
    with pytest.raises(WorkflowVersionError) as raised:
        again.resume(resume_data={"answer": "yes"}, timeout=WAIT)

    error = raised.value
    assert (error.run_id, error.workflow_id) == (run.run_id, "approval")
    assert (error.version, error.fingerprint) == ("v1", V1.plan.fingerprint)
    assert error.registered == [("v2", CHANGES[change].plan.fingerprint)]
    assert "'v1'" in str(error) and "'v2'" in str(error)
    assert CALLS == []  # nothing ran
    assert changed.get_workflow_run_execution_result(run.run_id) == suspended  # not a bit changed

    after.register(V1)  # the old definition beside the new one
    done = again.resume(resume_data={"answer": "yes"}, timeout=WAIT)

    assert done.status == RunStatus.SUCCESS, done.error
    assert done.result == {"value": "x+first+yes+last"}
    assert CALLS == ["ask", "last"]
    assert list(done.steps) == ["first", "ask", "last"]


def test_two_versions_at_once_old_runs_finish_on_v1_new_runs_use_v2(runtime: Runtime) -> None:
    v1 = runtime.register(V1)
    old = v1.create_run()
    assert old.start(input_data={"value": "old"}, timeout=WAIT).status == RunStatus.SUSPENDED

    v2 = runtime.register(CHANGES["a step inserted before the suspended one"])
    new = v2.create_run()
    new_result = new.start(input_data={"value": "new"}, timeout=WAIT)
    assert new_result.status == RunStatus.SUSPENDED
    assert (new_result.version, list(new_result.steps)) == ("v2", ["first", "extra", "ask"])
    CALLS.clear()

    # Resumed through the newest definition's handle: the run still finishes on v1.
    finished = v2.create_run(old.run_id).resume(resume_data={"answer": "yes"}, timeout=WAIT)
    assert finished.status == RunStatus.SUCCESS, finished.error
    assert (finished.version, finished.result) == ("v1", {"value": "old+first+yes+last"})
    assert CALLS == ["ask", "last"]

    # And an unbound start of the id goes to the newest definition too.
    again = v2.create_run().start(input_data={"value": "n2"}, timeout=WAIT)
    assert again.fingerprint == v2.plan.fingerprint
    assert new.resume(resume_data={"answer": "ok"}, timeout=WAIT).result == {
        "value": "new+first+extra+ok+last"
    }


def test_time_travel_from_a_run_of_another_registered_version_goes_on_that_version(
    runtime: Runtime,
) -> None:
    # Time travel built the new run on the handle's definition: a step it has before
    # the target that the original (on v1) never ran was skipped, unrecorded, in a run
    # labelled v2.
    v1 = runtime.register(approval(first, last, version="v1"))
    original = v1.create_run()
    assert original.start(input_data={"value": "x"}, timeout=WAIT).status == RunStatus.SUCCESS
    v2 = runtime.register(approval(first, extra, last, version="v2"))
    CALLS.clear()

    again = v2.time_travel(original.run_id, step="last").wait(WAIT)

    assert again.status == RunStatus.SUCCESS, again.error
    assert (again.version, list(again.steps)) == ("v1", ["first", "last"])
    assert CALLS == ["last"]
    # A step only the new version has is none of the definition the new run goes on.
    with pytest.raises(InvalidInputError, match=r"as run .* started on it \(version 'v1'"):
        v2.time_travel(original.run_id, step=extra)


def test_time_travel_from_a_run_whose_version_is_not_registered_is_refused(
    runtimes: Runtimes, tmp_path: Path
) -> None:
    db = tmp_path / "runs.db"
    before = runtimes.start(db)
    original = before.register(approval(first, last, version="v1")).create_run()
    assert original.start(input_data={"value": "x"}, timeout=WAIT).status == RunStatus.SUCCESS
    before.stop()
    CALLS.clear()

    after = runtimes.start(db)
    v2 = after.register(approval(first, extra, last, version="v2"))
    with pytest.raises(WorkflowVersionError) as raised:
        v2.time_travel(original.run_id, step="last", new_run_id="travelled")

    assert raised.value.version == "v1"
    assert CALLS == []
    assert v2.get_workflow_run_execution_result("travelled") is None


# --- a sleeping run across a restart ---------------------------------------------------------

NAP = 0.5


def napping(
    *steps: Step[Any, Any], version: str, queue: Queue | None = None
) -> Workflow[Value, Value]:
    flow = create_workflow(
        id="napping", input_schema=Value, output_schema=Value, version=version, queue=queue
    )
    for step in steps:
        flow = flow.then(step) if step is not ask else flow.sleep(NAP, id="nap")
    return flow.commit()


NAP_V1 = napping(first, ask, last, version="v1")  # ``ask`` stands for the sleep
NAP_V2 = napping(extra, first, ask, last, version="v2")


def fall_asleep(runtimes: Runtimes, store: str) -> tuple[str, WorkflowResult]:
    """Start a ``napping`` v1 run, wait until it sleeps, stop its runtime: its id and result."""
    before = runtimes.start(store)
    wf = before.register(NAP_V1)
    run = wf.create_run()
    run.start_async(input_data={"value": "x"})
    wait_until(
        lambda: wf.get_workflow_run_execution_result(run.run_id).status == RunStatus.WAITING,
        what="the run falls asleep",
    )
    before.stop()
    asleep = wf.get_workflow_run_execution_result(run.run_id)
    assert asleep is not None and asleep.waiting_until is not None
    CALLS.clear()
    return run.run_id, asleep


def awaiting(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event["event"] == "run_awaits_its_version"]


@pytest.mark.usefixtures("_structlog_reset")
def test_a_sleeping_run_on_a_changed_definition_stays_waiting_until_its_version_is_back(
    runtimes: Runtimes, each_shared_store: str
) -> None:
    run_id, asleep = fall_asleep(runtimes, each_shared_store)

    with structlog.testing.capture_logs() as events:
        after = runtimes.start(each_shared_store)  # restarted with v2 only
        v2 = after.register(NAP_V2)
        wait_until(lambda: awaiting(events), timeout=WAIT, what="the run awaits v1")
        time.sleep(0.3)  # more claim passes: still said once
        warned = awaiting(events)
        assert len(warned) == 1
        assert (warned[0]["run_id"], warned[0]["log_level"]) == (run_id, "warning")
        assert "'v1'" in warned[0]["error"] and "'v2'" in warned[0]["error"]
        assert v2.get_workflow_run_execution_result(run_id) == asleep  # untouched
        assert CALLS == []

        after.register(NAP_V1)  # the matching version: the run wakes on it
        done = v2.create_run(run_id).wait(timeout=WAIT)

    assert done.status == RunStatus.SUCCESS, done.error
    assert (done.version, done.result) == ("v1", {"value": "x+first+last"})
    assert CALLS == ["last"]


@pytest.mark.usefixtures("_structlog_reset")
def test_a_worker_without_the_runs_version_hands_it_back_untouched_when_it_stops(
    runtimes: Runtimes, each_shared_store: str
) -> None:
    run_id, asleep = fall_asleep(runtimes, each_shared_store)

    with structlog.testing.capture_logs() as events:
        new_only = runtimes.start(each_shared_store, role="worker")
        new_only.register(NAP_V2)
        wait_until(lambda: awaiting(events), timeout=WAIT, what="the new worker parks the run")
        new_only.stop()

    assert CALLS == []
    # Read by a client, which executes nothing: by now the nap may be over, and
    # a runtime with v1 would wake the run before the read.
    reader = runtimes.start(each_shared_store, role="client").register(NAP_V1)
    assert reader.get_workflow_run_execution_result(run_id) == asleep  # as it was
    old_too = runtimes.start(each_shared_store)
    wf = old_too.register(NAP_V1)
    done = wf.create_run(run_id).wait(timeout=WAIT)
    assert (done.status, done.result) == (RunStatus.SUCCESS, {"value": "x+first+last"})
    assert CALLS == ["last"]


@pytest.mark.usefixtures("_structlog_reset")
def test_a_parked_run_takes_no_room_from_runs_that_can_go_on(
    runtimes: Runtimes, each_shared_store: str
) -> None:
    run_id, asleep = fall_asleep(runtimes, each_shared_store)

    with structlog.testing.capture_logs() as events:
        one_slot = runtimes.start(each_shared_store, max_concurrent_runs=1)
        v2 = one_slot.register(NAP_V2)
        wait_until(lambda: awaiting(events), timeout=WAIT, what="the run is parked")
        # Held here, unchanged, but not counted: a new run still gets the one slot.
        done = v2.create_run().start(input_data={"value": "y"}, timeout=WAIT)

    assert (done.status, done.result) == (RunStatus.SUCCESS, {"value": "y+extra+first+last"})
    assert v2.get_workflow_run_execution_result(run_id) == asleep


@pytest.mark.usefixtures("_structlog_reset")
def test_in_a_rolling_deploy_a_run_goes_to_the_worker_with_its_version_and_its_queue_flows_on(
    runtimes: Runtimes, each_shared_store: str
) -> None:
    # One run at a time through the queue. A v1 run sleeps; the new worker, with v2
    # only, claims it when it wakes and cannot run it: it must neither hold the queue's
    # one place (new v2 runs wait for ever) nor keep the run from a worker that has v1.
    one_at_a_time = Queue("deploys", concurrency=1)
    old_v1, new_v2 = (
        napping(first, ask, last, version="v1", queue=one_at_a_time),
        napping(extra, first, ask, last, version="v2", queue=one_at_a_time),
    )
    before = runtimes.start(each_shared_store)
    wf = before.register(old_v1)
    run = wf.create_run()
    run.start_async(input_data={"value": "x"})
    wait_until(
        lambda: wf.get_workflow_run_execution_result(run.run_id).status == RunStatus.WAITING,
        what="the v1 run falls asleep",
    )
    before.stop()
    time.sleep(NAP)  # due

    with structlog.testing.capture_logs() as events:
        new = runtimes.start(each_shared_store, role="worker")
        new.register(new_v2)
        wait_until(lambda: awaiting(events), timeout=WAIT, what="the new worker meets the v1 run")
        client = runtimes.start(each_shared_store, role="client")
        v2 = client.register(new_v2)
        fresh = v2.create_run().start(input_data={"value": "y"}, timeout=WAIT)
        assert (fresh.status, fresh.version) == (RunStatus.SUCCESS, "v2")

        both = runtimes.start(each_shared_store, role="worker")
        both.register(old_v1)
        both.register(new_v2)
        done = v2.create_run(run.run_id).wait(timeout=WAIT)

    assert (done.status, done.version, done.result) == (
        RunStatus.SUCCESS,
        "v1",
        {"value": "x+first+last"},
    )
    assert len(awaiting(events)) == 1  # said once, by the worker without v1


# --- the command line ------------------------------------------------------------------------


def test_the_cli_shows_each_runs_version(
    runtimes: Runtimes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "runs.db"
    rt = runtimes.start(db)
    done = rt.register(approval(first, last, version="v7")).create_run("run-1")
    done.start(input_data={"value": "x"}, timeout=WAIT)
    rt.stop()
    capsys.readouterr()

    assert main(["runs", "show", "run-1", "--db", str(db)]) == 0
    shown = capsys.readouterr().out
    fingerprint = approval(first, last).plan.fingerprint
    assert f"version   v7 (fingerprint {fingerprint})" in shown

    assert main(["runs", "list", "--db", str(db)]) == 0
    listed = capsys.readouterr().out
    assert "VERSION" in listed
    row = next(line for line in listed.splitlines() if line.strip().startswith("run-1"))
    assert "v7" in row.split()


def test_a_run_recorded_before_versions_goes_on_only_where_its_steps_fit() -> None:
    legacy: Any = {"run_id": "r", "workflow_id": "approval", "next_step": 2}
    legacy["steps"] = {"first": {}, "ask": {}}
    snapshot: Snapshot = legacy
    assert matching_plan(snapshot, V1.plan, {}) is V1.plan
    gone = CHANGES["the suspended step removed"].plan
    assert matching_plan(snapshot, gone, {gone.fingerprint: gone}) is None


@pytest.mark.usefixtures("_structlog_reset")
def test_a_parked_run_can_be_canceled(runtimes: Runtimes, each_shared_store: str) -> None:
    run_id, _ = fall_asleep(runtimes, each_shared_store)

    with structlog.testing.capture_logs() as events:
        after = runtimes.start(each_shared_store)
        v2 = after.register(NAP_V2)
        wait_until(lambda: awaiting(events), timeout=WAIT, what="the run is parked")

    assert v2.create_run(run_id).cancel() is True
    canceled = v2.get_workflow_run_execution_result(run_id)
    assert canceled is not None and canceled.status == RunStatus.CANCELED
    assert CALLS == []


def test_a_worker_loads_two_versions_of_one_workflow_id_in_order() -> None:
    flows = "tests._worker_flows"
    loaded = _load([f"{flows}:greet", f"{flows}:also_greet"])

    assert [flow.id for flow in loaded] == ["greet", "greet"]
    assert loaded[0].plan.fingerprint != loaded[1].plan.fingerprint


def _fail_once(ctx: Any) -> Value:
    CALLS.append("shaky")
    if CALLS.count("shaky") == 1:
        raise RuntimeError("down")
    return Value(value=f"{ctx.input_data.value}+shaky")


shaky = create_step(id="shaky", input_schema=Value, output_schema=Value, execute=_fail_once)


def test_a_restart_of_a_run_whose_version_is_not_registered_is_refused_and_changes_nothing(
    runtimes: Runtimes, tmp_path: Path
) -> None:
    db = tmp_path / "runs.db"
    before = runtimes.start(db)
    failed = before.register(approval(first, shaky, version="v1")).create_run()
    assert failed.start(input_data={"value": "x"}, timeout=WAIT).status == RunStatus.FAILED
    before.stop()

    after = runtimes.start(db)
    v2 = after.register(approval(first, extra, shaky, version="v2"))
    with pytest.raises(WorkflowVersionError) as raised:
        v2.create_run(failed.run_id).restart_async()
    assert raised.value.version == "v1"
    kept = v2.get_workflow_run_execution_result(failed.run_id)
    assert kept is not None and (kept.status, kept.restarts) == (RunStatus.FAILED, 0)

    v1 = after.register(approval(first, shaky, version="v1"))  # registered again, beside v2
    again = v1.create_run(failed.run_id).restart(timeout=WAIT)
    assert (again.status, again.restarts, again.version) == (RunStatus.SUCCESS, 1, "v1")
    assert CALLS == ["first", "shaky", "shaky"]
