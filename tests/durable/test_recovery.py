"""Recovery: runs left unfinished in a SQLite store are resumed by the next runtime, once."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import actors.claimer as claimer_module
from runtime import RunReader, Runtime, SQLiteStore
from tests._support import Counter, Runtimes, held_workflow, quick_workflow, wait_until
from tests.durable._support.helpers import barrier, dead_pid, hand_over, row


def leave_unfinished(
    runtimes: Runtimes,
    db: Path,
    workflow: Any,
    counter: Counter,
    count: int = 1,
    **options: Any,
) -> list[str]:
    """Start ``count`` runs of ``workflow`` (a held workflow whose gate is shut) and stop
    the runtime under them: they stay unfinished in the file, their owner gone.

    Those that run are stopped in their held step, its body entered (``counter``): a row
    reads ``running`` as soon as the first step's call goes out, and a run stopped in
    ``first`` ran ``hold`` once in all, not twice.
    """
    rt = runtimes.start(db, **options)
    wf = rt.register(workflow)
    run_ids = [
        wf.create_run().start_async(input_data={"value": str(i)}).run_id for i in range(count)
    ]
    running = min(count, options.get("max_concurrent_runs") or count)
    wait_until(
        lambda: (
            sum(1 for r in run_ids if (row(db, r) or {}).get("status") == "running") == running
            and sum(1 for r in run_ids if counter[f"{r}/hold"]) == running
        ),
        what="the runs reach their held step",
    )
    rt.stop(timeout=0.05)
    return run_ids


def status(db: Path, run_id: str) -> str:
    found = row(db, run_id)
    assert found is not None
    return found["status"]


# --- stop, and the next runtime -----------------------------------------------------


def test_stop_leaves_a_run_blocked_in_a_step_unfinished_and_the_next_runtime_finishes_it(
    db: Path, runtimes: Runtimes
) -> None:
    counter, gate = Counter(), runtimes.gate()
    workflow = held_workflow(counter, gate)
    [run_id] = leave_unfinished(runtimes, db, workflow, counter)
    with RunReader(db) as reader:
        halted = reader.get_run(run_id)
    assert halted is not None
    assert halted.status == "running"
    assert halted.error is None
    assert {k: s.status for k, s in halted.steps.items()} == {"first": "success", "hold": "running"}
    gate.set()
    wf = runtimes.start(db).register(workflow)
    wait_until(lambda: status(db, run_id) == "success", what="the run is resumed")
    result = wf.get_workflow_run_execution_result(run_id)
    assert result is not None and result.result == {"value": "0-1-2-3"}
    assert counter[f"{run_id}/first"] == 1  # completed before the stop: never again
    assert counter[f"{run_id}/hold"] == 2  # interrupted: run again
    assert counter[f"{run_id}/last"] == 1


def test_a_resumed_run_keeps_its_input_context_and_trace(db: Path, runtimes: Runtimes) -> None:
    counter, gate = Counter(), runtimes.gate()
    workflow = held_workflow(counter, gate)
    rt = runtimes.start(db)
    run = rt.register(workflow).create_run()
    run.start_async(input_data={"value": "in"}, request_context={"user": "ada"})
    wait_until(lambda: counter["hold"] == 1)
    before = rt.register(workflow).get_workflow_run_execution_result(run.run_id)
    rt.stop(timeout=0.05)
    gate.set()
    wf = runtimes.start(db).register(workflow)
    wait_until(lambda: status(db, run.run_id) == "success")
    after = wf.get_workflow_run_execution_result(run.run_id)
    assert before is not None and after is not None
    assert (after.input, after.trace_id, after.span_id, after.created_at) == (
        before.input,
        before.trace_id,
        before.span_id,
        before.created_at,
    )
    assert after.steps["first"] == before.steps["first"]


def test_runs_left_pending_are_resumed_too(db: Path, runtimes: Runtimes) -> None:
    counter, gate = Counter(), runtimes.gate()
    workflow = held_workflow(counter, gate)
    run_ids = leave_unfinished(runtimes, db, workflow, counter, count=3, max_concurrent_runs=1)
    assert sorted(status(db, r) for r in run_ids) == ["pending", "pending", "running"]
    gate.set()
    runtimes.start(db).register(workflow)
    for run_id in run_ids:
        wait_until(lambda run_id=run_id: status(db, run_id) == "success")
        assert counter[f"{run_id}/last"] == 1


# --- who owns a run -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "process", "heartbeat_age", "resumed"),
    [
        pytest.param("here", "gone", 0, True, id="its-process-is-gone"),
        pytest.param("here", "alive", 60, True, id="its-lease-expired"),
        pytest.param("here", "alive", 0, False, id="it-is-alive"),
        pytest.param("elsewhere", "gone", 0, False, id="another-host-still-heartbeating"),
        pytest.param("elsewhere", "gone", 60, True, id="another-host-lease-expired"),
    ],
)
def test_a_run_is_resumed_only_when_its_owner_is_gone(
    *, host: str, process: str, heartbeat_age: float, resumed: bool, db: Path, runtimes: Runtimes
) -> None:
    counter, gate = Counter(), runtimes.gate()
    workflow = held_workflow(counter, gate)
    [run_id] = leave_unfinished(runtimes, db, workflow, counter)
    gate.set()
    hand_over(
        db,
        [run_id],
        "other-owner",
        pid=dead_pid() if process == "gone" else os.getpid(),
        heartbeat_at=time.time() - heartbeat_age,
        host=None if host == "here" else "some-other-host.invalid",
    )
    before = row(db, run_id)
    rt = runtimes.start(db)
    rt.register(workflow)
    if resumed:
        wait_until(lambda: status(db, run_id) == "success", what="the run is resumed")
        assert counter[f"{run_id}/hold"] == 2
        assert counter[f"{run_id}/last"] == 1
    else:
        barrier(rt)
        assert row(db, run_id) == before
        assert counter[f"{run_id}/hold"] == 1
        assert counter[f"{run_id}/last"] == 0


def test_a_run_in_progress_on_a_live_runtime_is_not_taken_over(
    db: Path, runtimes: Runtimes
) -> None:
    counter, gate = Counter(), runtimes.gate()
    workflow = held_workflow(counter, gate)
    first = runtimes.start(db)
    run = first.register(workflow).create_run()
    run.start_async(input_data={"value": "v"})
    wait_until(lambda: counter["hold"] == 1)
    second = runtimes.start(db)
    second.register(workflow)
    barrier(second)
    assert counter[f"{run.run_id}/hold"] == 1
    owner = row(db, run.run_id)
    assert owner is not None
    assert isinstance(first.store, SQLiteStore) and owner["owner_id"] == first.store.owner_id
    gate.set()
    assert run.wait(timeout=10).result == {"value": "v-1-2-3"}
    assert (counter["first"], counter["hold"], counter["last"]) == (1, 1, 1)


def test_two_runtimes_racing_for_the_same_orphans_resume_each_exactly_once(
    db: Path, runtimes: Runtimes
) -> None:
    counter, gate = Counter(), runtimes.gate()
    workflow = held_workflow(counter, gate)
    run_ids = leave_unfinished(runtimes, db, workflow, counter, count=6)
    gate.set()
    racers = [runtimes.start(db), runtimes.start(db)]
    start_line = threading.Barrier(len(racers))

    def register(rt: Runtime) -> None:
        start_line.wait(10)
        rt.register(workflow)
        barrier(rt)

    threads = [threading.Thread(target=register, args=(rt,)) for rt in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    for run_id in run_ids:
        wait_until(lambda run_id=run_id: status(db, run_id) == "success")
    for rt in racers:
        rt.stop(timeout=10)  # a second resumption, had there been one, ends first
    for run_id in run_ids:
        assert counter[f"{run_id}/hold"] == 2, f"run {run_id} resumed more than once"
        assert counter[f"{run_id}/last"] == 1
        found = row(db, run_id) or {}
        assert found.get("owner_id") is None  # ended: nobody's
        assert found.get("epoch") == 2, "held at its start, then claimed once, by one racer"


# --- workflows nobody registers -------------------------------------------------------


def test_a_run_whose_workflow_is_not_registered_is_left_alone_and_reported_once(
    db: Path, monkeypatch: pytest.MonkeyPatch, runtimes: Runtimes
) -> None:
    monkeypatch.setattr(claimer_module, "REPORT_DELAY", 0.1)
    counter, gate = Counter(), runtimes.gate()
    workflow = held_workflow(counter, gate)
    [run_id] = leave_unfinished(runtimes, db, workflow, counter)
    gate.set()
    before = row(db, run_id)
    with capture_logs() as logs:
        rt = runtimes.start(db)
        rt.register(quick_workflow())

        def reports() -> list[dict[str, Any]]:
            return [e for e in list(logs) if e["event"] == "run_awaits_its_workflow"]

        wait_until(reports, what="the unregistered run is reported")
        rt.register(quick_workflow("another"))  # recovery runs again; no second report
        barrier(rt)
        assert row(db, run_id) == before
        assert counter[f"{run_id}/hold"] == 1
        [report] = reports()
    assert report["run_id"] == run_id
    assert report["workflow_id"] == "held"
    assert report["log_level"] == "warning"
    # Registered at last, the run is resumed.
    rt.register(workflow)
    wait_until(lambda: status(db, run_id) == "success")


def test_orphans_of_workflows_registered_before_start_are_resumed_at_start(
    db: Path, runtimes: Runtimes
) -> None:
    counter, gate = Counter(), runtimes.gate()
    workflow = held_workflow(counter, gate)
    [run_id] = leave_unfinished(runtimes, db, workflow, counter)
    gate.set()
    rt = Runtime(store=db)
    rt.register(workflow)
    runtimes.started.append(rt)
    rt.start()
    wait_until(lambda: status(db, run_id) == "success")
    assert counter[f"{run_id}/last"] == 1


def test_recovery_does_not_hold_up_start_or_register(
    db: Path, monkeypatch: pytest.MonkeyPatch, runtimes: Runtimes
) -> None:
    counter, gate = Counter(), runtimes.gate()
    workflow = held_workflow(counter, gate)
    run_ids = leave_unfinished(runtimes, db, workflow, counter, count=20, max_concurrent_runs=2)
    gate.set()
    looking, go_on = threading.Event(), threading.Event()
    claim = SQLiteStore.claim

    def slow_claim(self, workflow_ids, limit, skip=()):  # type: ignore[no-untyped-def]
        looking.set()
        go_on.wait(10)
        return claim(self, workflow_ids, limit, skip)

    monkeypatch.setattr(SQLiteStore, "claim", slow_claim)
    rt = Runtime(store=db)
    runtimes.started.append(rt)
    returned = threading.Event()

    def start_and_register() -> None:
        rt.start()
        rt.register(workflow)
        returned.set()

    try:
        threading.Thread(target=start_and_register, daemon=True).start()
        assert returned.wait(5), "start() or register() waited for recovery"
        assert looking.wait(5)
    finally:
        go_on.set()
    for run_id in run_ids:
        wait_until(lambda run_id=run_id: status(db, run_id) == "success")
