"""The crash test: a process running a workflow is killed with SIGKILL; the next one finishes it.

A child process runs ``logged`` (steps alpha, beta, gamma, each writing ``start``
and ``end`` lines to a file) on a SQLite store and is killed in the middle of a
step. This process then opens the same store and registers the workflow: the
run must finish with the right result, each step completed before the kill
must not run again, and the interrupted step runs at most twice.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from runtime import RunReader, WorkflowResult
from tests._support import Runtimes, wait_until
from tests.durable._support.helpers import row
from tests.durable._support.processes import Child
from tests.durable._support.workflows import asking_finished, count, finished, logged, read_lines

RESUME_TIMEOUT = 20.0


def resume(runtimes: Runtimes, db: Path, run_id: str) -> WorkflowResult:
    """Open the store in this process, register ``logged``, and wait for the run to end."""
    wf = runtimes.start(db).register(logged)
    wait_until(
        lambda: (row(db, run_id) or {}).get("status") in ("success", "failed"),
        timeout=RESUME_TIMEOUT,
        what=f"run {run_id} finishes after recovery",
    )
    result = wf.get_workflow_run_execution_result(run_id)
    assert result is not None
    return result


def test_a_run_killed_in_the_middle_of_a_step_finishes_in_the_next_process(
    tmp_path: Path, runtimes: Runtimes
) -> None:
    db, log, hold = tmp_path / "runs.db", tmp_path / "steps.log", tmp_path / "hold"
    hold.touch()
    run_id = "crash-in-beta"
    with Child(
        "crash-in-step",
        db=str(db),
        run_id=run_id,
        value="x",
        log=str(log),
        hold_step="beta",
        hold_file=str(hold),
    ) as child:
        assert child.expect("holding") == f"beta {run_id}"
        child.kill()
    assert read_lines(log) == ["start alpha", "end alpha", "start beta"]

    with RunReader(db) as reader:
        left = reader.get_run(run_id)
    assert left is not None and left.status == "running"
    assert {k: s.status for k, s in left.steps.items()} == {"alpha": "success", "beta": "running"}
    assert left.steps["alpha"].output == {"value": "x-a"}

    hold.unlink()
    result = resume(runtimes, db, run_id)
    assert result.status == "success"
    assert result.result == {"value": "x-a-b-c"}
    assert [s.status for s in result.steps.values()] == ["success"] * 3
    assert (count(log, "start alpha"), count(log, "end alpha")) == (1, 1)
    assert count(log, "start beta") <= 2
    assert count(log, "end beta") == 1
    assert (count(log, "start gamma"), count(log, "end gamma")) == (1, 1)
    assert read_lines(log)[-4:] == ["start beta", "end beta", "start gamma", "end gamma"]


def test_a_run_killed_while_pending_is_started_by_the_next_process(
    tmp_path: Path, runtimes: Runtimes
) -> None:
    db, hold = tmp_path / "runs.db", tmp_path / "hold"
    log, blocker_log = tmp_path / "steps.log", tmp_path / "blocker.log"
    hold.touch()
    run_id, blocker_id = "waiting-its-turn", "holding-the-slot"
    with Child(
        "crash-pending",
        db=str(db),
        run_id=run_id,
        value="x",
        log=str(log),
        blocker_id=blocker_id,
        blocker_log=str(blocker_log),
        hold_file=str(hold),
    ) as child:
        assert child.expect("STARTED") == f'"{run_id}"'
        child.kill()

    with RunReader(db) as reader:
        left = reader.get_run(run_id)
        blocker = reader.get_run(blocker_id)
    assert left is not None and left.status == "pending" and left.steps == {}
    assert blocker is not None and blocker.status in ("pending", "running")
    assert read_lines(log) == []

    hold.unlink()
    result = resume(runtimes, db, run_id)
    assert result.status == "success"
    assert result.result == {"value": "x-a-b-c"}
    assert read_lines(log) == [
        "start alpha",
        "end alpha",
        "start beta",
        "end beta",
        "start gamma",
        "end gamma",
    ]
    # Nobody here registers the blocker's workflow: its run is left as it was.
    after = row(db, blocker_id)
    assert after is not None and after["status"] == blocker.status


def test_a_process_killed_the_moment_start_async_returns_has_recorded_its_run(
    tmp_path: Path, runtimes: Runtimes
) -> None:
    db, log = tmp_path / "runs.db", tmp_path / "steps.log"
    run_id = "killed-at-once"
    with Child("kill-after-start", db=str(db), run_id=run_id, value="x", log=str(log)) as child:
        assert child.wait() == -9, child.error_output()
    left = row(db, run_id)
    assert left is not None, "start_async returned before its run was committed"
    assert left["status"] in ("pending", "running", "success")

    result = resume(runtimes, db, run_id)
    assert result.status == "success"
    assert result.result == {"value": "x-a-b-c"}
    for step in ("alpha", "beta", "gamma"):
        assert 1 <= count(log, f"end {step}") <= count(log, f"start {step}") <= 2
    # At most one step (the one under way at the kill) ran twice.
    assert len(read_lines(log)) <= 8


def test_a_live_runtime_takes_over_a_dead_peers_runs_without_registering_again(
    tmp_path: Path, runtimes: Runtimes
) -> None:
    db, log = tmp_path / "runs.db", tmp_path / "steps.log"
    wf = runtimes.start(db).register(logged)  # registered before the peer even starts
    time.sleep(0.5)  # the peer dies well after this runtime's start
    run_ids = [f"peer-{index}" for index in range(3)]
    with contextlib.ExitStack() as stack:  # three peers at once, each killed after its start
        peers = [
            stack.enter_context(
                Child("kill-after-start", db=str(db), run_id=run_id, value=run_id, log=str(log))
            )
            for run_id in run_ids
        ]
        for peer in peers:
            assert peer.wait() == -9, peer.error_output()

    wait_until(
        lambda: all((row(db, run_id) or {}).get("status") == "success" for run_id in run_ids),
        timeout=RESUME_TIMEOUT,
        what="the live runtime finished the dead peer's runs",
    )
    for run_id in run_ids:
        result = wf.get_workflow_run_execution_result(run_id)
        assert result is not None and result.result == {"value": f"{run_id}-a-b-c"}


def test_a_run_killed_in_its_on_finish_hook_does_not_run_its_last_step_again(
    tmp_path: Path, runtimes: Runtimes
) -> None:
    # The end is recorded after the hooks, and only the end's record held the last step's
    # output: the next process ran gamma again, then on_finish a second time.
    db, log, hold = tmp_path / "runs.db", tmp_path / "steps.log", tmp_path / "hold"
    hold.touch()
    run_id = "crash-in-on-finish"
    with Child(
        "crash-in-on-finish",
        db=str(db),
        run_id=run_id,
        value="x",
        log=str(log),
        hold_file=str(hold),
    ) as child:
        assert child.expect("holding") == f"on_finish {run_id}"
        child.kill()
    hold.unlink()
    wf = runtimes.start(db).register(finished)
    wait_until(
        lambda: (row(db, run_id) or {}).get("status") == "success",
        timeout=RESUME_TIMEOUT,
        what=f"run {run_id} finishes after recovery",
    )
    result = wf.get_workflow_run_execution_result(run_id)
    assert result is not None and result.result == {"value": "x-a-b-c"}
    for step in ("alpha", "beta", "gamma"):
        assert count(log, f"start {step}") == 1, read_lines(log)
    # The hook itself is called again: its first call was cut off by the kill.
    assert count(log, "on_finish success") == 2


def test_a_cancel_killed_in_its_on_finish_hook_is_carried_out_by_the_next_runtime(
    tmp_path: Path, runtimes: Runtimes
) -> None:
    # The canceled record was committed before the hook: the kill left the run canceled,
    # its on_finish cut off and never called again.
    db, log, hold = tmp_path / "runs.db", tmp_path / "steps.log", tmp_path / "hold"
    hold.touch()
    run_id = "cancel-in-on-finish"
    params = {"db": str(db), "run_id": run_id, "log": str(log), "hold_file": str(hold)}
    with Child("cancel-in-on-finish", **params) as child:
        assert child.expect("holding") == f"on_finish {run_id}"
        child.kill()
    hold.unlink()
    # Not acknowledged, and not recorded either: the hook had not returned.
    assert (row(db, run_id) or {}).get("status") == "running"
    wf = runtimes.start(db).register(asking_finished)
    wait_until(
        lambda: (row(db, run_id) or {}).get("status") == "canceled",
        timeout=RESUME_TIMEOUT,
        what=f"run {run_id} ends canceled after recovery",
    )
    result = wf.get_workflow_run_execution_result(run_id)
    assert result is not None and result.steps["ask"].status == "canceled"
    # The hook cut off by the kill is called anew; no step ran again.
    assert count(log, "on_finish canceled") == 2, read_lines(log)
    assert count(log, "start alpha") == 1 and count(log, "start ask") == 1
    assert count(log, "start gamma") == 0
