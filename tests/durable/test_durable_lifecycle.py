"""Durable sleeps and suspensions on SQLite: they outlive their runtime, and their process.

A sleeping run is ``waiting`` in the file: a runtime that stops (or a process
that is killed) leaves it so, and the next runtime on the file that registers
its workflow wakes it at its time, not before. A suspended run waits for a
resume, which any runtime on the file gives through ``create_run(run_id)``;
of two racing resumes exactly one wins. Snapshots written in format version 1
still read, and still resume.

Every step writes a line to the file named by the run's request context
(``log``), so that a test can count executions across processes. The tests
that need a second process run this module as a script
(``python -m tests.durable.test_durable_lifecycle COMMAND JSON``, see the end of the
file), so that the child registers the very workflows defined here.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
from pydantic import BaseModel

from actors.run import WAKE_EARLY
from runtime import (
    InvalidInputError,
    ResumeConflictError,
    RunNotSuspendedError,
    RunReader,
    Runtime,
    SnapshotRecord,
    SQLiteStore,
    create_step,
    create_workflow,
)
from runtime._snapshot import decode, to_result
from tests._support import Runtimes, Value, wait_until
from tests.durable._support.helpers import barrier, row
from tests.durable._support.processes import Child
from tests.durable._support.workflows import append_line, count, read_lines

CHILD_LIMIT = 30.0
"""Seconds a child process waits at most for its parent, so that a broken test cannot hang."""


class Decision(BaseModel):
    ok: bool


# --- the workflows ---------------------------------------------------------------------


def _log(ctx: Any, line: str) -> None:
    append_line(ctx.request_context["log"], line)


def _suffix_step(step_id: str, suffix: str, *, stamp: bool = False) -> Any:
    """A step that appends ``suffix``; it logs its id (and, with ``stamp``, the time)."""

    def execute(ctx: Any) -> Value:
        _log(ctx, f"{step_id} {time.time()!r}" if stamp else step_id)
        return Value(value=f"{ctx.input_data.value}-{suffix}")

    return create_step(id=step_id, input_schema=Value, output_schema=Value, execute=execute)


def _nap_seconds(ctx: Any) -> float:
    _log(ctx, "nap")
    return float(ctx.request_context["nap"])


def _approve(ctx: Any) -> Value:
    _log(ctx, "approve")
    if ctx.resume_data is None:
        ctx.suspend({"question": f"ship {ctx.input_data.value}?"})
    return Value(value=f"{ctx.input_data.value}-{'yes' if ctx.resume_data.ok else 'no'}")


napping = (
    create_workflow(id="napping", input_schema=Value, output_schema=Value)
    .then(_suffix_step("before", "b"))
    .sleep(_nap_seconds, id="nap")
    .then(_suffix_step("after", "a", stamp=True))
    .commit()
)
"""``before``, a sleep of ``request_context["nap"]`` seconds, ``after`` (which logs its time)."""

approval = (
    create_workflow(id="approval", input_schema=Value, output_schema=Value)
    .then(_suffix_step("before", "b"))
    .then(
        create_step(
            id="approve",
            input_schema=Value,
            output_schema=Value,
            resume_schema=Decision,
            execute=_approve,
        )
    )
    .then(_suffix_step("after", "a"))
    .commit()
)
"""``before``, ``approve`` (suspends until resumed with a :class:`Decision`), ``after``."""

legacy = (
    create_workflow(id="legacy", input_schema=Value, output_schema=Value)
    .then(_suffix_step("first", "1"))
    .then(_suffix_step("second", "2"))
    .commit()
)
"""Two steps: the shape of a workflow that a version-1 snapshot can describe."""


# --- helpers ---------------------------------------------------------------------------


def status(db: Path, run_id: str) -> str | None:
    found = row(db, run_id)
    return None if found is None else found["status"]


def read_run(db: Path, run_id: str) -> Any:
    """A run as another process sees it: through a read-only ``RunReader``."""
    with RunReader(db) as reader:
        found = reader.get_run(run_id)
    assert found is not None
    return found


def step_statuses(result: Any) -> dict[str, str]:
    return {path: step.status.value for path, step in result.steps.items()}


def woke_at(log: Path) -> list[float]:
    """The times the ``after`` step of ``napping`` ran, from its log lines."""
    return [float(line.split()[1]) for line in read_lines(log) if line.startswith("after ")]


def put_to_sleep(runtimes: Runtimes, db: Path, log: Path, nap: float) -> tuple[str, float]:
    """Start a ``napping`` run, wait until it sleeps, stop its runtime: the run id and wake time."""
    rt = runtimes.start(db)
    run = rt.register(napping).create_run()
    run.start_async(input_data={"value": "x"}, request_context={"log": str(log), "nap": nap})
    wait_until(lambda: status(db, run.run_id) == "waiting", what="the run falls asleep")
    rt.stop(timeout=10)
    left = read_run(db, run.run_id)
    assert left.status == "waiting"
    assert left.waiting_until is not None
    return run.run_id, left.waiting_until.timestamp()


def suspend_one(rt: Runtime, log: Path, run_id: str | None = None) -> str:
    """Start an ``approval`` run on ``rt`` and return its id once it is suspended."""
    run = rt.register(approval).create_run(run_id)
    result = run.start(input_data={"value": "x"}, request_context={"log": str(log)}, timeout=10)
    assert result.status == "suspended", result
    return run.run_id


class Script(Child):
    """This module run as a script in a child process: its lines carry JSON payloads."""

    def __init__(self, command: str, **params: Any) -> None:
        super().__init__(command, module="tests.durable.test_durable_lifecycle", **params)

    def payload(self, word: str, timeout: float = CHILD_LIMIT) -> Any:
        """The JSON payload of the first line that starts with ``word``."""
        return json.loads(self.expect(word + " ", timeout))


# --- sleeps ----------------------------------------------------------------------------


def test_a_sleeping_run_outlives_stop_and_the_next_runtime_wakes_it_at_its_time(
    tmp_path: Path, db: Path, runtimes: Runtimes
) -> None:
    log = tmp_path / "steps.log"
    run_id, wake_at = put_to_sleep(runtimes, db, log, nap=1.5)
    left = read_run(db, run_id)
    assert step_statuses(left) == {"before": "success", "nap": "waiting"}
    assert left.result is None and left.error is None
    assert read_lines(log) == ["before", "nap"]

    wf = runtimes.start(db).register(napping)
    wait_until(lambda: status(db, run_id) == "success", what="the run wakes and ends")
    result = wf.get_workflow_run_execution_result(run_id)
    assert result is not None
    assert result.result == {"value": "x-b-a"}
    assert step_statuses(result) == {"before": "success", "nap": "success", "after": "success"}
    assert result.waiting_until is None
    [woke] = woke_at(log)
    # Not before its time: a sleep within WAKE_EARLY of its end counts as over, by design.
    assert woke >= wake_at - WAKE_EARLY
    assert (count(log, "before"), count(log, "nap")) == (1, 1)


def test_a_run_whose_sleep_ended_while_no_runtime_was_up_wakes_at_once_on_restart(
    tmp_path: Path, db: Path, runtimes: Runtimes
) -> None:
    log = tmp_path / "steps.log"
    run_id, wake_at = put_to_sleep(runtimes, db, log, nap=0.5)
    time.sleep(max(0.0, wake_at - time.time()) + 0.1)  # the clock is the thing waited for
    assert status(db, run_id) == "waiting"  # nobody was up to wake it

    wf = runtimes.start(db).register(napping)
    wait_until(lambda: status(db, run_id) == "success", what="the overdue run wakes")
    result = wf.get_workflow_run_execution_result(run_id)
    assert result is not None and result.result == {"value": "x-b-a"}
    assert len(woke_at(log)) == 1
    # It went on from the sleep it was in: the sleep's length was not asked for again.
    assert (count(log, "before"), count(log, "nap")) == (1, 1)


def test_a_run_sleeping_in_a_killed_process_is_woken_by_the_next_runtime(
    tmp_path: Path, db: Path, runtimes: Runtimes
) -> None:
    log = tmp_path / "steps.log"
    with Script("nap", db=str(db), run_id="sleeper", log=str(log), nap=1.5) as child:
        wake_at = child.payload("WAITING")
        child.kill()
    left = read_run(db, "sleeper")
    assert left.status == "waiting"
    assert left.waiting_until is not None and left.waiting_until.timestamp() == pytest.approx(
        wake_at, abs=1e-5
    )
    assert read_lines(log) == ["before", "nap"]

    wf = runtimes.start(db).register(napping)
    wait_until(lambda: status(db, "sleeper") == "success", what="the run is woken here")
    result = wf.get_workflow_run_execution_result("sleeper")
    assert result is not None and result.result == {"value": "x-b-a"}
    [woke] = woke_at(log)
    assert woke >= wake_at - WAKE_EARLY
    assert (count(log, "before"), count(log, "nap")) == (1, 1)


def test_cancelling_a_sleeping_run_taken_over_after_a_restart_is_durable(
    tmp_path: Path, db: Path, runtimes: Runtimes
) -> None:
    log = tmp_path / "steps.log"
    run_id, _ = put_to_sleep(runtimes, db, log, nap=60)
    rt = runtimes.start(db)
    wf = rt.register(napping)
    assert isinstance(rt.store, SQLiteStore)
    barrier(rt)
    # Asleep, it waits in the store for its wake time, held by no runtime.
    assert (row(db, run_id) or {}).get("owner_id") is None

    assert wf.create_run(run_id).cancel() is True
    assert status(db, run_id) == "canceled"  # committed when cancel() returned
    rt.stop(timeout=10)
    canceled = read_run(db, run_id)
    assert canceled.status == "canceled"
    assert step_statuses(canceled) == {"before": "success", "nap": "canceled"}
    assert canceled.waiting_until is None

    later = runtimes.start(db)
    later.register(napping)
    barrier(later)
    assert status(db, run_id) == "canceled"
    assert woke_at(log) == []


def test_a_sleeping_run_started_by_another_live_runtime_is_cancelled_from_here(
    tmp_path: Path, db: Path, runtimes: Runtimes
) -> None:
    log = tmp_path / "steps.log"
    first = runtimes.start(db)
    run = first.register(napping).create_run()
    run.start_async(input_data={"value": "x"}, request_context={"log": str(log), "nap": 60})
    wait_until(lambda: status(db, run.run_id) == "waiting", what="the run falls asleep")

    second = runtimes.start(db)
    assert second.register(napping).create_run(run.run_id).cancel() is True
    assert status(db, run.run_id) == "canceled"
    assert run.cancel() is False  # already ended, for its own runtime too
    assert run.wait(timeout=5).status == "canceled"


# --- suspensions -------------------------------------------------------------------------


def test_a_suspended_run_survives_a_restart_and_is_resumed_by_its_id(
    tmp_path: Path, db: Path, runtimes: Runtimes
) -> None:
    log = tmp_path / "steps.log"
    first = runtimes.start(db)
    run_id = suspend_one(first, log)
    first.stop(timeout=10)
    left = read_run(db, run_id)
    assert left.status == "suspended"
    assert left.suspended == {"approve": {"question": "ship x-b?"}}
    assert step_statuses(left) == {"before": "success", "approve": "suspended"}

    rt = runtimes.start(db)
    wf = rt.register(approval)
    barrier(rt)
    assert status(db, run_id) == "suspended"  # a suspended run is no orphan: nothing resumed it
    assert read_lines(log) == ["before", "approve"]

    run = wf.create_run(run_id)
    result = run.resume(resume_data={"ok": True}, timeout=10)
    assert result.status == "success"
    assert result.result == {"value": "x-b-yes-a"}
    assert result.suspended == {}
    assert result.steps["approve"].suspend_payload == {"question": "ship x-b?"}
    assert result.steps["approve"].resume_payload == {"ok": True}
    assert (count(log, "before"), count(log, "approve"), count(log, "after")) == (1, 2, 1)
    assert read_run(db, run_id).status == "success"


def test_bad_resume_data_after_a_restart_leaves_the_run_suspended_in_the_file(
    tmp_path: Path, db: Path, runtimes: Runtimes
) -> None:
    log = tmp_path / "steps.log"
    first = runtimes.start(db)
    run_id = suspend_one(first, log)
    first.stop(timeout=10)
    before = row(db, run_id)

    run = runtimes.start(db).register(approval).create_run(run_id)
    with pytest.raises(InvalidInputError) as caught:
        run.resume(resume_data={"ok": "perhaps"}, timeout=10)
    assert caught.value.field == "resume_data"
    assert row(db, run_id) == before
    assert run.resume(resume_data={"ok": False}, timeout=10).result == {"value": "x-b-no-a"}


def test_two_processes_racing_to_resume_the_same_suspended_runs_make_one_winner_each(
    tmp_path: Path, db: Path, runtimes: Runtimes
) -> None:
    rt = runtimes.start(db)
    wf = rt.register(approval)
    logs = {f"race-{i}": tmp_path / f"race-{i}.log" for i in range(8)}
    for run_id, log in logs.items():
        suspend_one(rt, log, run_id)

    with Script("resume", db=str(db), run_ids=list(logs), ok=False) as child:
        child.payload("READY")
        child.send("go")
        won, lost = [], {}
        for run_id in logs:  # the child resumes them in the same order: they collide
            try:
                wf.create_run(run_id).resume_async(resume_data={"ok": True})
                won.append(run_id)
            except (ResumeConflictError, RunNotSuspendedError) as exc:
                lost[run_id] = type(exc).__name__
        theirs = child.payload("RESULT")
        assert child.proc.wait(CHILD_LIMIT) == 0, "".join(child.stderr)

    assert sorted(won + theirs["won"]) == sorted(logs), (won, theirs)
    assert set(lost) == set(theirs["won"]) and set(theirs["lost"]) == set(won)
    # Each loser conflicts, whichever process it is in and whenever it read the run.
    assert set(lost.values()) | set(theirs["lost"].values()) == {"ResumeConflictError"}
    for run_id, log in logs.items():
        wait_until(
            lambda run_id=run_id: status(db, run_id) == "success",  # type: ignore[misc]
            what=f"run {run_id} ends",
        )
        result = wf.get_workflow_run_execution_result(run_id)
        assert result is not None
        # The winner's decision is the one the run went on with, and it went on once.
        assert result.result == {"value": "x-b-yes-a" if run_id in won else "x-b-no-a"}
        assert (count(log, "approve"), count(log, "after")) == (2, 1), run_id


@pytest.mark.parametrize("where", ["same-runtime", "after-restart"])
def test_cancelling_a_suspended_run_is_durable(
    where: str, tmp_path: Path, db: Path, runtimes: Runtimes
) -> None:
    log = tmp_path / "steps.log"
    rt = runtimes.start(db)
    run_id = suspend_one(rt, log)
    if where == "after-restart":
        rt.stop(timeout=10)
        rt = runtimes.start(db)
    run = rt.register(approval).create_run(run_id)

    assert run.cancel() is True
    assert run.cancel() is False
    rt.stop(timeout=10)
    canceled = read_run(db, run_id)
    assert canceled.status == "canceled"
    assert canceled.suspended == {}
    assert step_statuses(canceled) == {"before": "success", "approve": "canceled"}

    later = runtimes.start(db).register(approval).create_run(run_id)
    with pytest.raises(RunNotSuspendedError):
        later.resume(resume_data={"ok": True}, timeout=10)
    assert status(db, run_id) == "canceled"
    assert read_lines(log) == ["before", "approve"]


# --- snapshots written in format version 1 ------------------------------------------------


def v1_snapshot(run_id: str, log: Path, *, status: str, next_step: int) -> dict[str, Any]:
    """A ``legacy`` run as format version 1 recorded it: none of the keys version 2 added."""
    now = time.time() - 60
    steps: dict[str, Any] = {}
    if next_step >= 1:
        steps["first"] = {
            "status": "success",
            "payload": {"value": "x"},
            "output": {"value": "x-1"},
            "error": None,
            "started_at": now,
            "ended_at": now + 1,
        }
    return {
        "run_id": run_id,
        "workflow_id": "legacy",
        "seq": 3,
        "status": status,
        "input": {"value": "x"},
        "result": None,
        "error": None,
        "steps": steps,
        "next_step": next_step,
        "state": None,
        "request_context": {"log": str(log)},
        "include_state": False,
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "metadata": {},
        "created_at": now,
        "updated_at": now + 1,
    }


def v1_record(snapshot: dict[str, Any]) -> SnapshotRecord:
    return SnapshotRecord(
        run_id=snapshot["run_id"],
        workflow_id=snapshot["workflow_id"],
        seq=snapshot["seq"],
        status=snapshot["status"],
        data=msgpack.packb((1, snapshot), use_bin_type=True),
        created_at=snapshot["created_at"],
        updated_at=snapshot["updated_at"],
        trace_id=snapshot["trace_id"],
    )


def test_a_version_1_snapshot_decodes_and_reads_as_a_result(tmp_path: Path) -> None:
    data = v1_record(v1_snapshot("old", tmp_path / "log", status="running", next_step=1)).data
    snapshot = decode(data)
    assert snapshot["carry"] == {"value": "x-1"}  # what the next step takes
    assert (snapshot["wake_at"], snapshot["suspended"], snapshot["resume"]) == (None, {}, None)
    result = to_result(snapshot)
    assert result.status == "running"
    assert result.suspended == {} and result.waiting_until is None
    first = result.steps["first"]
    assert (first.status, first.output, first.attempts, first.iterations) == (
        "success",
        {"value": "x-1"},
        1,
        None,
    )
    assert (first.suspend_payload, first.resume_payload) == (None, None)


def test_a_run_recorded_in_version_1_at_its_second_step_resumes_from_there(
    tmp_path: Path, db: Path, runtimes: Runtimes
) -> None:
    log = tmp_path / "steps.log"
    old = SQLiteStore(db)
    assert old.create(v1_record(v1_snapshot("old", log, status="running", next_step=1)))
    old.close()  # its owner is gone: the run is an orphan
    left = read_run(db, "old")
    assert left.status == "running"
    assert step_statuses(left) == {"first": "success"}

    wf = runtimes.start(db).register(legacy)
    wait_until(lambda: status(db, "old") == "success", what="the version-1 run is resumed")
    result = wf.get_workflow_run_execution_result("old")
    assert result is not None
    assert result.result == {"value": "x-1-2"}
    assert step_statuses(result) == {"first": "success", "second": "success"}
    assert result.steps["second"].payload == {"value": "x-1"}
    assert result.trace_id == "ab" * 16
    assert read_lines(log) == ["second"]  # the first step had run before: not again


# --- this module as a child process --------------------------------------------------------


def _say(word: str, payload: Any) -> None:
    print(f"{word} {json.dumps(payload)}", flush=True)


def _child_nap(params: dict[str, Any]) -> None:
    """Start a ``napping`` run, announce its wake time once it sleeps, wait to be killed."""
    rt = Runtime(store=params["db"]).start()
    wf = rt.register(napping)
    run_id = params["run_id"]
    wf.create_run(run_id).start_async(
        input_data={"value": "x"}, request_context={"log": params["log"], "nap": params["nap"]}
    )
    deadline = time.monotonic() + CHILD_LIMIT
    while time.monotonic() < deadline:
        result = wf.get_workflow_run_execution_result(run_id)
        if result is not None and result.status == "waiting":
            assert result.waiting_until is not None
            _say("WAITING", result.waiting_until.timestamp())
            break
        time.sleep(0.005)
    threading.Event().wait(CHILD_LIMIT)
    _say("NOT_KILLED", None)
    os._exit(1)


def _child_resume(params: dict[str, Any]) -> None:
    """On a word from the parent, try to resume each run; wait for those won; report."""
    with Runtime(store=params["db"]) as rt:
        wf = rt.register(approval)
        _say("READY", None)
        sys.stdin.readline()
        won, lost = [], {}
        for run_id in params["run_ids"]:
            try:
                wf.create_run(run_id).resume_async(resume_data={"ok": params["ok"]})
                won.append(run_id)
            except (ResumeConflictError, RunNotSuspendedError) as exc:
                lost[run_id] = type(exc).__name__
        for run_id in won:
            wf.create_run(run_id).wait(CHILD_LIMIT)
        _say("RESULT", {"won": won, "lost": lost})


if __name__ == "__main__":
    {"nap": _child_nap, "resume": _child_resume}[sys.argv[1]](json.loads(sys.argv[2]))
