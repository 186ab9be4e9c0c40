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


def _three_steps(workflow_id: str, **options: Any) -> Any:
    workflow = create_workflow(id=workflow_id, input_schema=Value, output_schema=Value, **options)
    for name in ("a", "b", "c"):
        workflow.then(
            create_step(
                id=name, input_schema=Value, output_schema=Value, execute=lambda c: c.input_data
            )
        )
    return workflow.commit()


@pytest.fixture
def told(monkeypatch: pytest.MonkeyPatch) -> list[SnapshotRecord]:
    """Every snapshot the registry is told of."""
    seen: list[SnapshotRecord] = []
    original = RegistryActor._on_snapshot_taken

    def recording(self: RegistryActor, message: SnapshotTaken) -> None:
        seen.append(message.record)
        original(self, message)

    monkeypatch.setattr(RegistryActor, "_on_snapshot_taken", recording)
    return seen


def test_in_memory_a_run_nobody_waits_for_never_reaches_the_registry(
    told: list[SnapshotRecord],
) -> None:
    with Runtime() as rt:
        bound = rt.register(_three_steps("direct"))
        run = bound.create_run()
        run.start_async(input_data={"value": "x"})
        deadline = time.monotonic() + WAIT
        while (found := bound.get_workflow_run_execution_result(run.run_id)).status != "success":
            assert time.monotonic() < deadline
            time.sleep(0.01)

    assert found.result == {"value": "x"}
    assert [r for r in told if r.run_id == run.run_id] == []


def test_in_memory_the_end_of_a_run_waited_for_reaches_the_registry_alone(
    told: list[SnapshotRecord],
) -> None:
    release = threading.Event()

    def hold(ctx: Any) -> Value:
        release.wait(WAIT)
        return Value(value=ctx.input_data.value)

    workflow = (
        create_workflow(id="direct-wait", input_schema=Value, output_schema=Value)
        .then(create_step(id="hold", input_schema=Value, output_schema=Value, execute=hold))
        .commit()
    )
    with Runtime() as rt:
        run = rt.register(workflow).create_run()
        run.start_async(input_data={"value": "x"})
        waited = threading.Thread(target=run.wait, args=(WAIT,))
        waited.start()
        time.sleep(0.2)  # the wait is noted by the registry before the step returns
        release.set()
        waited.join(WAIT)
        assert not waited.is_alive()
        assert run.wait(WAIT).status == "success"

    assert [(r.status, r.seq) for r in told if r.run_id == run.run_id] == [("success", 2)]


def test_the_end_of_a_run_with_hooks_goes_through_the_registry_after_them(
    told: list[SnapshotRecord],
) -> None:
    finished: list[str] = []
    with Runtime() as rt:
        workflow = _three_steps("direct-hooks", on_finish=lambda o: finished.append(o.status))
        result = rt.register(workflow).create_run().start(input_data={"value": "x"})

    assert result.status == "success" and finished == ["success"]
    assert [r.status for r in told if r.run_id == result.run_id] == ["success"]


def test_many_runs_waited_for_as_they_end_all_wake() -> None:
    """A wait racing the run actor's own store of the run's end is never left hanging."""
    with Runtime() as rt:
        bound = rt.register(_three_steps("direct-race"))
        for _ in range(5):
            runs = [bound.create_run() for _ in range(200)]
            for run in runs:
                run.start_async(input_data={"value": "x"})
            assert all(run.wait(WAIT).status == "success" for run in runs)


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


def test_a_step_s_writes_come_before_its_end_in_a_stream_however_late_the_registry_takes_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = RegistryActor._on_step_wrote

    def slow(self: RegistryActor, message: Any) -> None:
        time.sleep(0.2)  # the run goes on meanwhile
        original(self, message)

    monkeypatch.setattr(RegistryActor, "_on_step_wrote", slow)
    release = threading.Event()

    def work(ctx: Any) -> Value:
        ctx.writer.write({"percent": 10})
        return Value(value=ctx.input_data.value)

    def hold(ctx: Any) -> Value:
        release.wait(WAIT)
        return Value(value=ctx.input_data.value)

    workflow = (
        create_workflow(id="direct-writes", input_schema=Value, output_schema=Value)
        .then(create_step(id="work", input_schema=Value, output_schema=Value, execute=work))
        .then(create_step(id="hold", input_schema=Value, output_schema=Value, execute=hold))
        .commit()
    )
    with Runtime() as rt:
        run = rt.register(workflow).create_run()
        run.start_async(input_data={"value": "x"})
        time.sleep(0.05)  # "work" has written and ended; the registry is still asleep
        watch = run.watch(timeout=WAIT)
        release.set()
        events = [(event.type, event.path) for event in watch]

    work_events = [kind for kind, path in events if path == "work"]
    assert work_events == ["step_started", "step_output", "step_finished"], events
