"""A deleted run stays deleted: writes still on their way when it went do not bring it back.

Deleting a run that has ended while something of it is still in flight (the
registry's copy of a cancel of a suspended run, the last save of a run that
just ended) used to bring the run back: in memory every time the cancel was of
a suspended run, on SQLite a few times in a hundred. Its id then refused a new
run (``RunAlreadyStartedError``), a listing showed it again, and on SQLite the
parts of a large run outlived it in their table.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import actors.system as system_module
from actors._events import EventLogs
from runtime import RunInProgressError, Runtime, create_step, create_workflow
from runtime._snapshot import WHOLE_UNTIL
from tests._support import wait_until

RUNS = 30
WAIT = 10.0


class Note(BaseModel):
    text: str


def _ask(ctx: Any) -> Note:
    if ctx.resume_data is None:
        ctx.suspend({"question": "go on?"})
    return ctx.input_data


ASKING = (
    create_workflow(id="asking", input_schema=Note, output_schema=Note)
    .then(create_step(id="ask", input_schema=Note, output_schema=Note, execute=_ask))
    .commit()
)


@pytest.mark.parametrize("size", ["small", "kept in parts"])
def test_a_canceled_suspended_run_once_deleted_stays_deleted(each_store: Any, size: str) -> None:
    store = each_store
    text = "." * (WHOLE_UNTIL if size == "kept in parts" else 10)
    with Runtime(store=store) as rt:
        wf = rt.register(ASKING)
        ids = []
        for index in range(RUNS):
            run = wf.create_run(f"asked-{index}")
            assert run.start(input_data={"text": text}, timeout=WAIT).status == "suspended"
            assert run.cancel()
            assert wf.delete_workflow_run_by_id(run.run_id)
            ids.append(run.run_id)
    # The runtime has stopped: every write it had on its way is done. What it kept is
    # still readable (a store in memory goes with its runtime: read it there).
    back = [run_id for run_id in ids if wf.get_workflow_run_execution_result(run_id)]
    listed = {run.run_id for run in wf.list_workflow_runs(limit=None).runs}

    assert back == []
    assert listed.isdisjoint(ids)
    if store == "memory":
        return
    with Runtime(store=store) as rt:
        wf = rt.register(ASKING)
        assert [run_id for run_id in ids if wf.get_workflow_run_execution_result(run_id)] == []
        again = wf.create_run(ids[0]).start(input_data={"text": "again"}, timeout=WAIT)
    assert again.status == "suspended"  # the id is free for a new run
    if isinstance(store, Path):
        with contextlib.closing(sqlite3.connect(store)) as connection, connection:
            orphans = connection.execute(
                "SELECT count(*) FROM run_parts WHERE run_id NOT IN (SELECT run_id FROM runs)"
            ).fetchone()[0]
        assert orphans == 0


def test_a_run_restarted_while_it_is_being_deleted_is_not_deleted(
    each_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = each_store
    # delete_workflow_run_by_id looks at the run, then deletes it. A restart in between
    # reopened the run, and the delete took it from under its new actor: the run was
    # gone, and what that actor wrote next had no row.
    with Runtime(store=store) as rt:
        wf = rt.register(ASKING)
        run = wf.create_run()
        assert run.start(input_data={"text": "t"}, timeout=WAIT).status == "suspended"
        assert run.cancel()
        delete = type(rt.store).delete

        def restart_first(self: Any, run_id: str) -> bool:
            run.restart_async()  # between the look and the delete
            return delete(self, run_id)

        monkeypatch.setattr(type(rt.store), "delete", restart_first)
        with pytest.raises(RunInProgressError):
            wf.delete_workflow_run_by_id(run.run_id)
        monkeypatch.undo()

        result = run.wait(WAIT)
        assert result.status == "suspended"  # restarted, at its step again
        assert wf.get_workflow_run_execution_result(run.run_id) is not None


def test_a_new_run_of_a_deleted_runs_id_keeps_its_actor_when_the_old_ones_end_comes_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The supervisor's table of run actors is keyed by run id. The end of the first run,
    # told after its id was deleted and taken by a new run, took the new run's entry:
    # the new run went on, but a cancel of it found no actor (CancelError after 5 s).
    import actors.run as run_module
    from actors.messages import RunEnded

    held: list[tuple[Any, Any]] = []
    tell = run_module.tell_safely

    def late_end(ref: Any, message: Any) -> bool:
        if isinstance(message, RunEnded) and message.run_id == "same" and not held:
            held.append((ref, message))  # the first run's end, told later
            return True
        return bool(tell(ref, message))

    gate = threading.Event()

    def hold(ctx: Any) -> Note:
        if ctx.input_data.text == "hold":
            gate.wait(WAIT)
        return ctx.input_data

    holding = (
        create_workflow(id="holding", input_schema=Note, output_schema=Note)
        .then(create_step(id="hold", input_schema=Note, output_schema=Note, execute=hold))
        .commit()
    )
    monkeypatch.setattr(run_module, "tell_safely", late_end)
    try:
        with Runtime() as rt:
            wf = rt.register(holding)
            first = wf.create_run("same")
            assert first.start(input_data={"text": "go"}, timeout=WAIT).status == "success"
            wait_until(lambda: held, what="the first run's end, held back")
            assert wf.delete_workflow_run_by_id("same")
            second = wf.create_run("same")
            second.start_async(input_data={"text": "hold"})  # its actor waits in the step
            ref, message = held[0]
            tell(ref, message)  # the first run's end comes now
            assert second.cancel() is True
            assert second.wait(WAIT).status == "canceled"
    finally:
        gate.set()


def _talk(ctx: Any) -> Note:
    for index in range(5):
        ctx.writer.write({"index": index})
    return ctx.input_data


CHATTY = (
    create_workflow(id="chatty", input_schema=Note, output_schema=Note)
    .then(create_step(id="talk", input_schema=Note, output_schema=Note, execute=_talk))
    .commit()
)


@pytest.fixture
def event_logs(monkeypatch: pytest.MonkeyPatch) -> list[EventLogs]:
    """The registry's event logs of each runtime started while the test runs."""
    made: list[EventLogs] = []

    class Noted(EventLogs):
        def __init__(self) -> None:
            super().__init__()
            made.append(self)

    monkeypatch.setattr(system_module, "EventLogs", Noted)
    return made


def test_a_deleted_run_leaves_no_event_log_behind(
    each_store: Any, event_logs: list[EventLogs]
) -> None:
    # The registry keeps the events of each run streamed or written to (a step's
    # ctx.writer.write): a delete left them there, for as long as 128 other runs had
    # not pushed them out.
    with Runtime(store=each_store) as rt:
        wf = rt.register(CHATTY)
        logs = event_logs[-1]
        ids = []
        for index in range(5):
            run = wf.create_run(f"chatty-{index}")
            assert run.start(input_data={"text": "t"}, timeout=WAIT).status == "success"
            assert len(list(run.stream(timeout=WAIT))) > 5
            ids.append(run.run_id)
        kept = wf.create_run("kept")
        assert kept.start(input_data={"text": "t"}, timeout=WAIT).status == "success"
        list(kept.stream(timeout=WAIT))
        assert set(logs.run_ids) == {*ids, "kept"}

        for run_id in ids:
            assert wf.delete_workflow_run_by_id(run_id)
        wait_until(lambda: set(logs.run_ids) == {"kept"}, what="the deleted runs' logs gone")
        again = wf.create_run(ids[0])
        assert again.start(input_data={"text": "again"}, timeout=WAIT).status == "success"
        events = list(again.stream(timeout=WAIT))
        assert [event.data for event in events if event.type == "step_output"] == [
            {"index": index} for index in range(5)
        ]


def test_a_pruned_run_leaves_no_event_log_behind(
    each_store: Any, event_logs: list[EventLogs]
) -> None:
    with Runtime(store=each_store, retention={"max_runs": 0, "interval": 0.02}) as rt:
        wf = rt.register(CHATTY)
        logs = event_logs[-1]
        runs = [wf.create_run() for _ in range(5)]
        for run in runs:
            run.start_async(input_data={"text": "t"})
        wait_until(
            lambda: all(wf.get_workflow_run_execution_result(r.run_id) is None for r in runs),
            what="every run ended and was pruned",
        )
        wait_until(lambda: not logs.run_ids, what="the pruned runs' logs gone")


def test_a_run_deleted_by_another_runtime_leaves_no_event_log_behind(
    each_shared_store: str, event_logs: list[EventLogs]
) -> None:
    # A delete in another process (callboard runs delete, another runtime's prune)
    # told this runtime nothing, and its store watcher reads only the runs somebody
    # here waits on: the log stayed until 128 other runs had pushed it out. Now the
    # watcher has the registry look every 2 seconds (DELETED_LOOK).
    with Runtime(store=each_shared_store) as here, Runtime(store=each_shared_store) as there:
        wf = here.register(CHATTY)
        logs = event_logs[0]
        gone, kept = wf.create_run("gone"), wf.create_run("kept")
        for run in (gone, kept):
            assert run.start(input_data={"text": "t"}, timeout=WAIT).status == "success"
            assert len(list(run.stream(timeout=WAIT))) > 5
        assert set(logs.run_ids) == {"gone", "kept"}

        assert there.register(CHATTY).delete_workflow_run_by_id("gone")
        wait_until(
            lambda: set(logs.run_ids) == {"kept"},
            timeout=6.0,
            what="the log of the run deleted elsewhere gone",
        )
