"""Run queries: by id with fields, listing with filters and pages, deleting, and other processes."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from runtime import (
    OutputOptions,
    RunInProgressError,
    RunReader,
    RunStatus,
    Runtime,
    StoreError,
    create_step,
    create_workflow,
)
from tests._support import Counter, Runtimes, Value, held_workflow, quick_workflow, wait_until
from tests.durable._support.helpers import raw
from tests.durable._support.processes import Child
from tests.durable._support.workflows import count, logged


class Tally(BaseModel):
    seen: int = 0


@pytest.fixture(params=["memory", "sqlite"])
def rt(request: pytest.FixtureRequest, tmp_path: Path, runtimes: Runtimes) -> Runtime:
    return runtimes.start("memory" if request.param == "memory" else tmp_path / "runs.db")


def stateful_workflow():
    def count_and_shout(ctx):  # type: ignore[no-untyped-def]
        ctx.set_state(Tally(seen=ctx.state.seen + 1))
        return Value(value=ctx.input_data.value.upper())

    step = create_step(id="shout", input_schema=Value, output_schema=Value, execute=count_and_shout)
    return (
        create_workflow(id="stateful", input_schema=Value, output_schema=Value, state_schema=Tally)
        .then(step)
        .commit()
    )


def failing_workflow():
    def fail(ctx):  # type: ignore[no-untyped-def]
        raise RuntimeError(f"no {ctx.input_data.value}")

    step = create_step(id="fail", input_schema=Value, output_schema=Value, execute=fail)
    return (
        create_workflow(id="failing", input_schema=Value, output_schema=Value).then(step).commit()
    )


def one_after_another(starts: int, start: Any) -> list[str]:
    """Run ids of ``starts`` runs created at distinct moments, oldest first."""
    ids = []
    for index in range(starts):
        ids.append(start(index))
        pass_the_clock()
    return ids


def pass_the_clock(seconds: float = 0.002) -> None:
    """Let the clock move on, so that the runs before and after have distinct creation times."""
    until = time.time() + seconds
    while time.time() < until:
        pass


# --- get_workflow_run_by_id -----------------------------------------------------------


def test_get_workflow_run_by_id_returns_the_whole_run_by_default(rt: Runtime) -> None:
    wf = rt.register(stateful_workflow())
    done = wf.create_run().start(
        input_data={"value": "v"}, output_options=OutputOptions(include_state=True)
    )
    found = wf.get_workflow_run_by_id(done.run_id)
    assert found == done
    assert found is not None and found.state == {"seen": 1} and found.steps and found.input


@pytest.mark.parametrize(
    ("fields", "present"),
    [
        (["input"], {"input"}),
        (["result", "steps"], {"result", "steps"}),
        (["state"], {"state"}),
        ([], set()),
        (("input", "result", "error", "steps", "state"), {"input", "result", "steps", "state"}),
    ],
)
def test_fields_select_the_parts_of_a_run_and_leave_the_others_empty(
    fields: list[str], present: set[str], rt: Runtime
) -> None:
    wf = rt.register(stateful_workflow())
    done = wf.create_run().start(
        input_data={"value": "v"}, output_options=OutputOptions(include_state=True)
    )
    found = wf.get_workflow_run_by_id(done.run_id, fields=fields)
    assert found is not None
    parts = {"input": {"value": "v"}, "result": {"value": "V"}, "state": {"seen": 1}}
    for name, value in parts.items():
        assert getattr(found, name) == (value if name in present else None), name
    assert (found.steps == done.steps) if "steps" in present else (found.steps == {})
    # Ids, status and times always come back.
    assert (found.run_id, found.workflow_id, found.status) == (done.run_id, "stateful", "success")
    assert (found.created_at, found.updated_at, found.trace_id) == (
        done.created_at,
        done.updated_at,
        done.trace_id,
    )


def test_the_error_field_holds_a_failed_runs_error(rt: Runtime) -> None:
    wf = rt.register(failing_workflow())
    done = wf.create_run().start(input_data={"value": "luck"})
    with_error = wf.get_workflow_run_by_id(done.run_id, fields=["error"])
    without = wf.get_workflow_run_by_id(done.run_id, fields=["input"])
    assert with_error is not None and without is not None
    assert with_error.error is not None and with_error.error.message == "no luck"
    assert with_error.status == without.status == "failed"
    assert without.error is None


def test_an_unknown_field_is_a_value_error(rt: Runtime) -> None:
    wf = rt.register(quick_workflow())
    run_id = wf.create_run().start(input_data={"value": "v"}).run_id
    with pytest.raises(ValueError, match="outputs"):
        wf.get_workflow_run_by_id(run_id, fields=["input", "outputs"])


def test_get_workflow_run_by_id_finds_no_unknown_run_nor_another_workflows(rt: Runtime) -> None:
    wf, other = rt.register(quick_workflow()), rt.register(quick_workflow("other"))
    theirs = other.create_run().start(input_data={"value": "v"}).run_id
    assert wf.get_workflow_run_by_id("no-such-run") is None
    assert wf.get_workflow_run_by_id(theirs) is None
    assert other.get_workflow_run_by_id(theirs) is not None


# --- list_workflow_runs ---------------------------------------------------------------


def test_runs_are_listed_newest_first_with_the_total(rt: Runtime) -> None:
    wf = rt.register(quick_workflow())
    ids = one_after_another(4, lambda i: wf.create_run().start(input_data={"value": str(i)}).run_id)
    page = wf.list_workflow_runs()
    assert [r.run_id for r in page.runs] == ids[::-1]
    assert page.total == 4
    assert page.unreadable == []
    assert page.runs[0].result == {"value": "3"}


def test_runs_are_paged_with_limit_and_offset(rt: Runtime) -> None:
    wf = rt.register(quick_workflow())
    ids = one_after_another(
        5, lambda i: wf.create_run().start(input_data={"value": str(i)}).run_id
    )[::-1]
    pages = [wf.list_workflow_runs(limit=2, offset=offset) for offset in (0, 2, 4, 6)]
    assert [[r.run_id for r in p.runs] for p in pages] == [ids[0:2], ids[2:4], ids[4:], []]
    assert {p.total for p in pages} == {5}
    assert [r.run_id for r in wf.list_workflow_runs(limit=None).runs] == ids


def test_runs_are_filtered_by_status(rt: Runtime, runtimes: Runtimes) -> None:
    counter, gate = Counter(), runtimes.gate()
    wf = rt.register(held_workflow(counter, gate))
    ok = wf.create_run()
    gate.set()
    ok.start(input_data={"value": "ok"})
    gate.clear()
    running = wf.create_run()
    running.start_async(input_data={"value": "held"})
    wait_until(lambda: counter[f"{running.run_id}/hold"] == 1)
    failing = rt.register(failing_workflow())
    failing.create_run().start(input_data={"value": "luck"})

    def ids(status: Any) -> list[str]:
        return [r.run_id for r in wf.list_workflow_runs(status=status).runs]

    assert ids("success") == [ok.run_id]
    assert ids(RunStatus.RUNNING) == [running.run_id]
    assert ids("failed") == []  # the failed run belongs to another workflow
    assert wf.list_workflow_runs(status="running").total == 1
    assert [r.status for r in failing.list_workflow_runs(status="failed").runs] == ["failed"]
    gate.set()


def test_runs_are_filtered_by_creation_time(rt: Runtime) -> None:
    wf = rt.register(quick_workflow())
    marks: list[datetime] = []

    def start(index: int) -> str:
        if index:
            marks.append(datetime.now(UTC))
            pass_the_clock()
        return wf.create_run().start(input_data={"value": str(index)}).run_id

    first, second, third = one_after_another(3, start)
    after_first, after_second = marks

    def ids(**dates: datetime) -> list[str]:
        return [r.run_id for r in wf.list_workflow_runs(**dates).runs]

    assert ids(from_date=after_first) == [third, second]
    assert ids(to_date=after_first) == [first]
    assert ids(from_date=after_first, to_date=after_second) == [second]
    assert wf.list_workflow_runs(from_date=after_second).total == 1
    # The same moment in another time zone is the same moment.
    elsewhere = after_first.astimezone(timezone(timedelta(hours=-7)))
    assert ids(from_date=elsewhere) == [third, second]


def test_a_naive_datetime_is_taken_as_utc_whatever_the_local_time_zone(rt: Runtime) -> None:
    wf = rt.register(quick_workflow())
    earlier = wf.create_run().start(input_data={"value": "a"}).run_id
    pass_the_clock()
    mark = datetime.now(UTC)
    pass_the_clock()
    later = wf.create_run().start(input_data={"value": "b"}).run_id
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"  # UTC+05:30: a naive time read as local would be off
    time.tzset()
    try:
        naive = mark.replace(tzinfo=None)
        from_naive = [r.run_id for r in wf.list_workflow_runs(from_date=naive).runs]
        to_naive = [r.run_id for r in wf.list_workflow_runs(to_date=naive).runs]
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()
    assert from_naive == [later]
    assert to_naive == [earlier]


def test_other_workflows_runs_are_not_listed(rt: Runtime) -> None:
    wf, other = rt.register(quick_workflow()), rt.register(quick_workflow("other"))
    mine = [wf.create_run().start(input_data={"value": "m"}).run_id for _ in range(2)]
    for _ in range(3):
        other.create_run().start(input_data={"value": "o"})
    page = wf.list_workflow_runs()
    assert sorted(r.run_id for r in page.runs) == sorted(mine)
    assert page.total == 2
    assert other.list_workflow_runs().total == 3


@pytest.mark.parametrize(
    "arguments", [{"status": "finished"}, {"limit": 0}, {"offset": -1}], ids=str
)
def test_bad_list_arguments_are_value_errors(arguments: dict[str, Any], rt: Runtime) -> None:
    wf = rt.register(quick_workflow())
    with pytest.raises(ValueError):
        wf.list_workflow_runs(**arguments)


# --- delete_workflow_run_by_id ----------------------------------------------------------


def test_a_finished_run_is_deleted_once(rt: Runtime) -> None:
    wf = rt.register(quick_workflow())
    run_id = wf.create_run().start(input_data={"value": "v"}).run_id
    kept = wf.create_run().start(input_data={"value": "w"}).run_id
    assert wf.delete_workflow_run_by_id(run_id) is True
    assert wf.get_workflow_run_by_id(run_id) is None
    assert wf.delete_workflow_run_by_id(run_id) is False
    assert [r.run_id for r in wf.list_workflow_runs().runs] == [kept]


def test_a_run_in_progress_cannot_be_deleted(rt: Runtime, runtimes: Runtimes) -> None:
    counter, gate = Counter(), runtimes.gate()
    wf = rt.register(held_workflow(counter, gate))
    run = wf.create_run()
    run.start_async(input_data={"value": "v"})
    wait_until(lambda: counter["hold"] == 1)
    with pytest.raises(RunInProgressError) as caught:
        wf.delete_workflow_run_by_id(run.run_id)
    assert caught.value.run_id == run.run_id
    gate.set()
    assert run.wait(timeout=10).status == "success"
    assert wf.get_workflow_run_by_id(run.run_id) is not None


def test_another_workflows_run_is_not_deleted(rt: Runtime) -> None:
    wf, other = rt.register(quick_workflow()), rt.register(quick_workflow("other"))
    theirs = other.create_run().start(input_data={"value": "v"}).run_id
    assert wf.delete_workflow_run_by_id(theirs) is False
    assert other.get_workflow_run_by_id(theirs) is not None


def test_an_unknown_run_is_not_deleted(rt: Runtime) -> None:
    assert rt.register(quick_workflow()).delete_workflow_run_by_id("no-such-run") is False


# --- RunReader ------------------------------------------------------------------------


def test_a_reader_gets_and_lists_the_runs_of_every_workflow(
    tmp_path: Path, runtimes: Runtimes
) -> None:
    db = tmp_path / "runs.db"
    rt = runtimes.start(db)
    wf, other = rt.register(quick_workflow()), rt.register(failing_workflow())
    mine = one_after_another(2, lambda i: wf.create_run().start(input_data={"value": "m"}).run_id)
    theirs = other.create_run().start(input_data={"value": "luck"}).run_id
    with RunReader(db) as reader:
        everything = reader.list_runs()
        only_quick = reader.list_runs(workflow_id="quick")
        failed = reader.list_runs(status="failed")
        paged = reader.list_runs(limit=1, offset=1)
        one = reader.get_run(theirs)
        partial = reader.get_run(mine[0], fields=["input"])
        missing = reader.get_run("no-such-run")
    assert [r.run_id for r in everything.runs] == [theirs, *mine[::-1]]
    assert everything.total == 3
    assert [r.run_id for r in only_quick.runs] == mine[::-1]
    assert [r.run_id for r in failed.runs] == [theirs]
    assert [r.run_id for r in paged.runs] == [mine[1]] and paged.total == 3
    assert one == other.get_workflow_run_by_id(theirs)
    assert partial is not None and partial.input == {"value": "m"} and partial.steps == {}
    assert missing is None


def test_a_reader_writes_nothing(tmp_path: Path, runtimes: Runtimes) -> None:
    db = tmp_path / "runs.db"
    rt = runtimes.start(db)
    run_id = rt.register(quick_workflow()).create_run().start(input_data={"value": "v"}).run_id
    with raw(db) as connection:
        owners = connection.execute("SELECT * FROM owners").fetchall()
    with RunReader(db) as reader:
        assert reader.get_run(run_id) is not None
    with raw(db) as connection:
        assert connection.execute("SELECT * FROM owners").fetchall() == owners


def test_a_reader_needs_an_existing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        RunReader(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
    (tmp_path / "empty.db").touch()
    with pytest.raises(StoreError, match="not a callboard run store"):
        RunReader(tmp_path / "empty.db")


# --- other processes ------------------------------------------------------------------


class Flood:
    """Runs started one after another on a thread until stopped: a store being written."""

    def __init__(self, start: Any) -> None:
        self.results: list[Any] = []
        self._stop = threading.Event()
        self._start = start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.results) < 5000:
            self.results.append(self._start())

    def stop(self) -> list[Any]:
        self._stop.set()
        self._thread.join(30)
        return self.results


def test_another_process_reads_the_runs_while_this_one_writes(
    tmp_path: Path, runtimes: Runtimes
) -> None:
    db = tmp_path / "runs.db"
    rt = runtimes.start(db)
    wf = rt.register(quick_workflow())
    counter, gate = Counter(), runtimes.gate()
    in_flight = rt.register(held_workflow(counter, gate)).create_run()
    in_flight.start_async(input_data={"value": "v"})
    finished = [wf.create_run().start(input_data={"value": "f"}).run_id for _ in range(3)]
    wait_until(lambda: counter["hold"] == 1)
    flood = Flood(lambda: wf.create_run().start(input_data={"value": "x"}, timeout=10).status)
    try:
        with Child(
            "read", db=str(db), run_ids=[in_flight.run_id, *finished], grow=20, within=30
        ) as child:
            seen = child.result()
            assert child.wait() == 0
    finally:
        statuses = flood.stop()
    assert seen["errors"] == []
    assert seen["seen"] == {in_flight.run_id: "running", **dict.fromkeys(finished, "success")}
    assert seen["last"] - seen["first"] >= 20, "the reader did not see the new runs come in"
    assert "locked" not in child.error_output() + "".join(child.stdout)
    assert set(statuses) == {"success"}


def test_another_process_runs_its_own_runs_on_the_same_file_meanwhile(
    tmp_path: Path, runtimes: Runtimes
) -> None:
    db, hold, held_log = tmp_path / "runs.db", tmp_path / "hold", tmp_path / "held.log"
    rt = runtimes.start(db)
    wf = rt.register(logged)
    hold.touch()
    held = wf.create_run()
    held.start_async(
        input_data={"value": "h"},
        request_context={"log": str(held_log), "hold_step": "beta", "hold_file": str(hold)},
    )
    try:
        wait_until(lambda: count(held_log, "start beta") == 1)
        flood = Flood(
            lambda: wf.create_run().start(
                input_data={"value": "p"},
                request_context={"log": str(tmp_path / "parent.log")},
                timeout=10,
            )
        )
        try:
            with Child("run-many", db=str(db), count=30, log_dir=str(tmp_path)) as child:
                child.expect("READY")
                theirs = child.result()
                assert child.wait() == 0, child.error_output()
        finally:
            mine = flood.stop()
        # The child registered the workflow while this process drove a run of it: not taken.
        assert count(held_log, "start beta") == 1
    finally:
        hold.unlink()
    assert held.wait(timeout=10).result == {"value": "h-a-b-c"}
    assert "locked" not in child.error_output() + "".join(child.stdout)
    assert len(theirs) == 30
    assert {status for status, _ in theirs.values()} == {"success"}
    assert mine and {r.status for r in mine} == {"success"}
    found = [wf.get_workflow_run_execution_result(run_id) for run_id in theirs]
    assert [(r.status, r.result) for r in found if r is not None] == [
        ("success", result) for _, result in theirs.values()
    ]
    # The two processes wrote at the same time: some of this one's runs began while the
    # other was going through its runs (halfway, it waits until they have).
    first, last = min(r.created_at for r in found), max(r.created_at for r in found)
    assert any(first < r.created_at < last for r in mine)
    assert wf.list_workflow_runs(limit=1).total == 1 + len(mine) + 30
