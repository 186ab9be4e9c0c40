"""DirectWrites: a run actor on a store in memory keeps its snapshots itself, in order."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from pydantic import BaseModel

from actors._direct import DirectWrites
from actors.messages import SnapshotTaken
from actors.registry import RegistryActor
from runtime import Runtime, create_step, create_workflow
from runtime._stores.base import SnapshotRecord
from runtime._stores.memory import MemoryStore
from runtime._stores.sqlite import SQLiteStore
from tests.actors.test_registry import record

WAIT = 10.0


class Value(BaseModel):
    value: str


def test_a_running_snapshot_is_kept_in_the_store_without_the_registry() -> None:
    store = MemoryStore()
    store.create(record("r", 1, "pending"))
    direct = DirectWrites(store, set())

    assert direct.keep(record("r", 2, "running")) is True
    stored = store.load("r")
    assert stored is not None and (stored.seq, stored.status) == (2, "running")


@pytest.mark.parametrize("status", ["success", "failed", "canceled", "suspended"])
def test_a_snapshot_that_settles_the_run_goes_to_the_registry_unstored(status: str) -> None:
    store = MemoryStore()
    store.create(record("r", 1, "pending"))
    direct = DirectWrites(store, set())

    assert direct.keep(record("r", 2, status)) is False
    stored = store.load("r")
    assert stored is not None and stored.seq == 1  # the registry stores it, and wakes waiters


def test_a_watched_run_s_snapshot_is_stored_and_still_told_to_the_registry() -> None:
    store = MemoryStore()
    store.create(record("r", 1, "pending"))
    direct = DirectWrites(store, {"r"})

    assert direct.keep(record("r", 2, "running")) is False
    stored = store.load("r")
    assert stored is not None and stored.seq == 2


def test_an_older_snapshot_kept_late_never_replaces_a_newer_one() -> None:
    store = MemoryStore()
    store.create(record("r", 1, "pending"))
    direct = DirectWrites(store, set())
    direct.keep(record("r", 3, "running"))

    direct.keep(record("r", 2, "running"))

    stored = store.load("r")
    assert stored is not None and stored.seq == 3


def test_a_durable_store_is_refused(tmp_path: Any) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    try:
        with pytest.raises(ValueError, match="durable"):
            DirectWrites(store, set())
    finally:
        store.close()


def test_in_memory_only_the_settling_snapshot_of_an_unwatched_run_reaches_the_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    told: list[SnapshotRecord] = []
    original = RegistryActor._on_snapshot_taken

    def recording(self: RegistryActor, message: SnapshotTaken) -> None:
        told.append(message.record)
        original(self, message)

    monkeypatch.setattr(RegistryActor, "_on_snapshot_taken", recording)
    steps = [
        create_step(
            id=name, input_schema=Value, output_schema=Value, execute=lambda c: c.input_data
        )
        for name in ("a", "b", "c")
    ]
    workflow = create_workflow(id="direct", input_schema=Value, output_schema=Value)
    for step in steps:
        workflow.then(step)
    with Runtime() as rt:
        result = rt.register(workflow.commit()).create_run().start(input_data={"value": "x"})

    assert result.status == "success"
    assert [(r.status, r.seq) for r in told if r.run_id == result.run_id] == [("success", 4)]


def test_a_query_while_a_step_runs_sees_the_steps_kept_directly() -> None:
    inside = threading.Event()
    release = threading.Event()

    def hold(ctx: Any) -> Value:
        inside.set()
        release.wait(WAIT)
        return Value(value=ctx.input_data.value)

    first = create_step(
        id="first", input_schema=Value, output_schema=Value, execute=lambda c: c.input_data
    )
    second = create_step(id="second", input_schema=Value, output_schema=Value, execute=hold)
    workflow = (
        create_workflow(id="direct-query", input_schema=Value, output_schema=Value)
        .then(first)
        .then(second)
        .commit()
    )
    with Runtime() as rt:
        bound = rt.register(workflow)
        run = bound.create_run()
        run.start_async(input_data={"value": "x"})
        assert inside.wait(WAIT)
        seen = bound.get_workflow_run_execution_result(run.run_id)
        release.set()
        assert run.wait(WAIT).status == "success"

    assert seen is not None and seen.status == "running"
    assert seen.steps["first"].status == "success"
    assert seen.steps["second"].status == "running"


def test_a_watch_opened_while_runs_go_sees_every_step_of_each(monkeypatch: Any) -> None:
    """A watch that races the run actor's direct writes misses no event (see actors._direct)."""
    names = [f"s{index}" for index in range(6)]
    workflow = create_workflow(id="direct-watch", input_schema=Value, output_schema=Value)
    for name in names:
        workflow.then(
            create_step(
                id=name,
                input_schema=Value,
                output_schema=Value,
                execute=lambda c: (time.sleep(0.001), c.input_data)[1],
            )
        )
    plan = workflow.commit()
    with Runtime() as rt:
        bound = rt.register(plan)
        runs = [bound.create_run() for _ in range(20)]
        watches = []
        for index, run in enumerate(runs):
            run.start_async(input_data={"value": str(index)})
            time.sleep(0.002 * (index % 5))  # open each watch at another point of its run
            watches.append(run.watch(timeout=WAIT))
        for watch in watches:
            events = list(watch)
            finished = [e.path for e in events if e.type == "step_finished"]
            assert finished == names
            assert events[-1].type == "status" and events[-1].status == "success"
