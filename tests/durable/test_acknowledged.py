"""On SQLite, what a call acknowledged is committed: a cancel that returned ``True``, a resume.

Promise 7 of DESIGN.md. A cancel that returned ``True`` is read ``canceled`` at once by
every query, including a ``RunReader`` (another connection, as another process has), and
it survives the process being killed the moment ``cancel()`` returns: the next runtime on
the file finds the run ``canceled`` and runs none of its steps. A resume that returned is
committed too: the next runtime finishes the resumed run. A cancel the store refuses is
never acknowledged. Of resumes racing on threads, every loser conflicts.

The tests that kill a process hold the database's write lock while the child cancels (or
resumes), so that nothing the child writes can commit before the lock is given back: a call
acknowledged before its commit would be killed with its write still queued, every time.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from runtime import RunReader, SnapshotRecord, SQLiteStore, StoreError
from tests._support import Runtimes, wait_until
from tests.durable._support.helpers import barrier, raw, row
from tests.durable._support.processes import Child
from tests.durable._support.workflows import (
    asking,
    asking_items,
    blocker,
    count,
    logged,
    read_lines,
    sleepy,
)
from tests.test_acknowledged import GRACE, TRIALS, WAIT, WHERE, Setting, cancel_in_a_thread

CHILD_LIMIT = 30.0
"""Seconds a child process may take for anything, so that a broken test fails instead of hanging."""


def status(db: Path, run_id: str) -> str | None:
    found = row(db, run_id)
    return None if found is None else found["status"]


def read_run(db: Path, run_id: str) -> Any:
    """A run as another process reads it: through a read-only ``RunReader``."""
    with RunReader(db) as reader:
        found = reader.get_run(run_id)
    assert found is not None
    return found


@pytest.fixture(params=WHERE)
def setting(request: pytest.FixtureRequest, db: Path, runtimes: Runtimes) -> Setting:
    """A runtime on ``db`` and a way to bring a fresh run to where it is cancelled from."""
    where = str(request.param)
    rt = runtimes.start(db, max_concurrent_runs=1 if where == "pending" else None)
    made = Setting(rt, where, None)
    request.addfinalizer(made.close)
    return made


# --- in this process ------------------------------------------------------------------------------


def test_a_run_reader_reads_canceled_right_after_a_cancel_that_returned_true(
    setting: Setting, db: Path
) -> None:
    with RunReader(db) as reader:
        for trial in range(TRIALS):
            run = setting.new_run()

            returned = run.cancel()
            found = reader.get_run(run.run_id)

            assert returned is True, trial
            assert found is not None
            assert found.status == "canceled", f"trial {trial}: a RunReader read {found.status}"
            assert status(db, run.run_id) == "canceled"
    assert setting.later == []


def test_a_cancel_does_not_return_while_its_snapshot_cannot_be_committed(
    setting: Setting, db: Path
) -> None:
    run = setting.new_run()
    with raw(db) as writer:
        writer.execute("BEGIN IMMEDIATE")  # no commit of the runtime's can happen meanwhile
        try:
            thread, seen = cancel_in_a_thread(setting, run)
            assert not seen["event"].wait(GRACE), f"cancel returned before its commit: {seen}"
        finally:
            writer.execute("ROLLBACK")
    thread.join(WAIT)

    assert seen.get("returned") is True, seen
    assert seen["read"] == "canceled"


class RefusingCancels(SQLiteStore):
    """A SQLite store that refuses, for good, every canceled snapshot saved to it."""

    def save(
        self,
        records: Sequence[SnapshotRecord],
        on_commit: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if any(record.status == "canceled" for record in records):
            if on_error is not None:
                on_error(StoreError("the disk refuses canceled snapshots"))
            return
        super().save(records, on_commit, on_error)

    def replace(self, record: SnapshotRecord, expected_seq: int, **options: Any) -> bool:
        if record.status == "canceled":
            raise StoreError(f"the disk refuses the canceled snapshot of run {record.run_id!r}")
        return super().replace(record, expected_seq, **options)


@pytest.mark.parametrize("where", ["running", "sleeping", "pending"])
def test_a_cancel_whose_snapshot_the_store_refuses_raises_store_error_and_is_not_recorded(
    where: str, db: Path, runtimes: Runtimes
) -> None:
    store = RefusingCancels(db)
    rt = runtimes.start(store, max_concurrent_runs=1 if where == "pending" else None)
    setting = Setting(rt, where, None)
    run = setting.new_run()
    if where == "running":  # a run's first step starts before the store has it running
        wait_until(lambda: status(db, run.run_id) == "running", what="the run stored running")
    before = status(db, run.run_id)

    with pytest.raises(StoreError) as refused:
        run.cancel()

    assert run.run_id in str(refused.value)
    if where == "running":
        assert status(db, run.run_id) == before
    else:
        # Taken from the store for its hooks: it reads running, its cancel asked for, and
        # the runtime that takes it over next (this one's stop hands it back) ends it.
        stored = row(db, run.run_id)
        assert stored is not None
        assert (stored["status"], stored["cancel_requested"]) == ("running", 1)
    assert setting.later == []
    rt.stop(timeout=0)  # the blocker, if any, cannot be cancelled either: halt it


# --- across a killed process --------------------------------------------------------------------


def child_acknowledges_under_the_lock(child: Child, db: Path, word: str) -> None:
    """Hold the write lock while ``child`` makes its call (it says ``word`` first), then free it.

    A child that is killed while the lock is held was acknowledged before its commit.
    """
    child.expect("READY", CHILD_LIMIT)
    with raw(db) as writer:
        writer.execute("BEGIN IMMEDIATE")
        try:
            child.send("go")
            child.expect(word, CHILD_LIMIT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(GRACE)  # it should still be waiting for its commit
            died_under_the_lock = child.proc.poll() is not None
        finally:
            writer.execute("ROLLBACK")
    assert child.wait(CHILD_LIMIT) == -signal.SIGKILL, "".join(child.stdout) + child.error_output()
    assert not died_under_the_lock, "the call returned before its write could commit"


@pytest.mark.parametrize("where", WHERE)
def test_a_cancel_that_returned_true_survives_the_process_killed_right_after_it(
    where: str, tmp_path: Path, db: Path, runtimes: Runtimes
) -> None:
    log, blocker_log, hold = tmp_path / "steps.log", tmp_path / "blocker.log", tmp_path / "hold"
    hold.touch()
    params = {"db": str(db), "run_id": "doomed", "where": where, "hold_file": str(hold)}
    with Child("cancel-then-die", log=str(log), blocker_log=str(blocker_log), **params) as child:
        child_acknowledges_under_the_lock(child, db, "CANCELING")
    hold.unlink()
    steps_before = read_lines(log)

    canceled = read_run(db, "doomed")
    assert canceled.status == "canceled"
    assert all(step.status in ("success", "canceled") for step in canceled.steps.values())

    rt = runtimes.start(db)
    for workflow in (logged, blocker, sleepy, asking):
        rt.register(workflow)
    barrier(rt)
    assert status(db, "doomed") == "canceled"
    assert read_lines(log) == steps_before, "a step of the canceled run ran after the restart"
    assert count(log, "start gamma") == 0
    if where == "pending":
        wait_until(lambda: count(blocker_log, "end block") == 1, what="the blocker is resumed")


def test_a_resume_that_returned_survives_the_process_killed_right_after_it(
    tmp_path: Path, db: Path, runtimes: Runtimes
) -> None:
    log = tmp_path / "steps.log"
    first = runtimes.start(db)
    run = first.register(asking).create_run("asked")
    suspended = run.start(
        input_data={"value": "x"}, request_context={"log": str(log)}, timeout=WAIT
    )
    assert suspended.status == "suspended"
    first.stop(timeout=WAIT)

    with Child("resume-then-die", db=str(db), run_id="asked") as child:
        child_acknowledges_under_the_lock(child, db, "RESUMING")

    resumed = read_run(db, "asked")
    assert resumed.status != "suspended", "the resume that returned was lost"
    wf = runtimes.start(db).register(asking)
    wait_until(lambda: status(db, "asked") == "success", what="the next runtime ends the run")
    result = wf.get_workflow_run_execution_result("asked")
    assert result is not None
    assert result.result == {"value": "x-a-yes-c"}
    assert result.steps["ask"].resume_payload == {"ok": True}
    assert count(log, "start alpha") == 1  # done before the suspension: never again
    # The child may have started the resumed step (or the next) before it died: a step
    # interrupted by a crash runs at most once more.
    assert 1 <= count(log, "end ask") <= 2
    assert 1 <= count(log, "end gamma") <= 2


def killed_while_resumed(
    tmp_path: Path, db: Path, runtimes: Runtimes, workflow: Any, run_id: str, **resume: Any
) -> tuple[Any, Path]:
    """Start ``workflow``'s run until it suspends, resume it in a child process and kill
    the child while the resumed step (the ``ask`` of ``asking``) holds; then start the
    next runtime on the file. Its bound workflow, and the steps' log."""
    log, hold = tmp_path / "steps.log", tmp_path / "hold"
    first = runtimes.start(db)
    run = first.register(workflow).create_run(run_id)
    context = {"log": str(log), "hold_step": "ask", "hold_file": str(hold), "announce": True}
    suspended = run.start(input_data={"value": "x"}, request_context=context, timeout=WAIT)
    assert suspended.status == "suspended"
    first.stop(timeout=WAIT)

    hold.touch()
    with Child("resume-then-hold", db=str(db), run_id=run_id, **resume) as child:
        assert child.expect("holding") == f"ask {run_id}"
        child.kill()
    hold.unlink()
    assert read_run(db, run_id).status == "running"
    wf = runtimes.start(db).register(workflow)
    wait_until(lambda: status(db, run_id) != "running", what="the next runtime goes on")
    return wf, log


def test_a_resumed_step_interrupted_by_a_crash_runs_again_with_its_resume_data(
    tmp_path: Path, db: Path, runtimes: Runtimes
) -> None:
    # The resume data left the run's pending resumes when the step began: the next
    # runtime ran the step again without it, and the run suspended again, asking anew.
    wf, log = killed_while_resumed(tmp_path, db, runtimes, asking, "asked")
    result = wf.get_workflow_run_execution_result("asked")
    assert result is not None
    assert result.status == "success", result.suspended
    assert result.result == {"value": "x-a-yes-c"}
    assert result.steps["ask"].resume_payload == {"ok": True}
    assert count(log, "start ask") == 3  # suspended, resumed and killed, resumed again
    assert count(log, "end ask") == 1


def test_a_resumed_foreach_item_interrupted_by_a_crash_runs_again_with_its_resume_data(
    tmp_path: Path, db: Path, runtimes: Runtimes
) -> None:
    wf, _ = killed_while_resumed(tmp_path, db, runtimes, asking_items, "items", for_each_index=1)
    again = wf.get_workflow_run_execution_result("items")
    assert again is not None
    assert again.suspended == {"ask[0]": {"question": "go on with x1?"}}  # item 1 ended
    result = wf.create_run("items").resume(for_each_index=0, resume_data={"ok": True})
    assert result.status == "success" and result.result == {"value": "x1-yes,x2-yes"}


def test_the_losers_of_resumes_racing_on_threads_get_resume_conflict_on_sqlite(
    db: Path, runtimes: Runtimes, tmp_path: Path
) -> None:
    rt = runtimes.start(db)
    wf = rt.register(asking)
    racers = 3
    for trial in range(TRIALS // 2):
        log = tmp_path / f"race-{trial}.log"
        run = wf.create_run()
        started = run.start(
            input_data={"value": "x"}, request_context={"log": str(log)}, timeout=WAIT
        )
        assert started.status == "suspended"
        start = threading.Barrier(racers)
        outcomes: list[Any] = [None] * racers

        def resume(
            slot: int,
            run_id: str = run.run_id,
            start: threading.Barrier = start,
            outcomes: list[Any] = outcomes,
        ) -> None:
            start.wait(WAIT)
            try:
                wf.create_run(run_id).resume_async(resume_data={"ok": slot == 0})
                outcomes[slot] = "won"
            except Exception as exc:
                outcomes[slot] = exc

        threads = [threading.Thread(target=resume, args=(slot,)) for slot in range(racers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)

        assert outcomes.count("won") == 1, (trial, outcomes)
        losers = [type(outcome).__name__ for outcome in outcomes if outcome != "won"]
        assert losers == ["ResumeConflictError"] * (racers - 1), (trial, losers)
        assert run.wait(WAIT).status == "success"
        assert count(log, "start gamma") == 1
