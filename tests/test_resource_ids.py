"""Resource ids: a run attributed to a user or tenant, stored with it, and listed by it."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

import runtime._stores.sqlite as sqlite_module
from runtime import (
    InvalidInputError,
    RunReader,
    Runtime,
    create_step,
    create_workflow,
)
from runtime._stores.base import SnapshotStore
from runtime._stores.memory import MemoryStore
from runtime._stores.open import open_store
from runtime._stores.sqlite import SCHEMA_VERSION, SQLiteStore
from tests.durable._support.helpers import drop_deadlines
from tests.test_store_contract import rec, save_and_wait

STORES = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
WAIT = 10.0


class Value(BaseModel):
    value: str


class Answer(BaseModel):
    ok: bool


def _ask(ctx):  # type: ignore[no-untyped-def]
    if ctx.resume_data is None:
        ctx.suspend({"question": "approve?"})
    return Value(value=ctx.input_data.value)


ask = create_step(id="ask", input_schema=Value, output_schema=Value, execute=_ask)
approval = (
    create_workflow(id="approval", input_schema=Value, output_schema=Value).then(ask).commit()
)


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SnapshotStore]:
    kind = request.param
    if kind == "memory":
        opened: SnapshotStore = MemoryStore()
    elif kind == "sqlite":
        opened = SQLiteStore(tmp_path / "runs.db")
    else:
        opened = open_store(request.getfixturevalue("postgres_url"))
    try:
        yield opened
    finally:
        opened.close()


def _with_resource(record, resource_id):  # type: ignore[no-untyped-def]
    return record._replace(resource_id=resource_id)


def test_every_store_lists_runs_by_resource_id_and_by_several_statuses(
    store: SnapshotStore,
) -> None:
    for index, (run_id, resource, status) in enumerate(
        [
            ("a", "user-42", "suspended"),
            ("b", "user-42", "success"),
            ("c", "user-7", "suspended"),
            ("d", None, "running"),
            ("e", "user-42", "failed"),
        ]
    ):
        first = _with_resource(rec(run_id, created_at=1_700_000_000.0 + index), resource)
        assert store.create(first)
        later = rec(run_id, 1, status, created_at=1_700_000_000.0 + index)
        save_and_wait(store, later)  # a later save keeps the run's resource id

    records, total = store.list_runs(resource_id="user-42")
    assert [r.run_id for r in records] == ["e", "b", "a"] and total == 3
    records, total = store.list_runs(resource_id="user-42", status="suspended")
    assert [r.run_id for r in records] == ["a"] and total == 1
    records, total = store.list_runs(status=("suspended", "running"))
    assert [r.run_id for r in records] == ["d", "c", "a"] and total == 3
    records, total = store.list_runs(resource_id="user-42", status=["failed", "success"], limit=1)
    assert [r.run_id for r in records] == ["e"] and total == 2
    assert store.list_runs(resource_id="nobody") == ([], 0)


@pytest.mark.parametrize("where", ["memory", "sqlite"])
def test_create_run_attributes_a_run_to_a_resource_and_lists_filter_by_it(
    where: str, tmp_path: Path
) -> None:
    location = None if where == "memory" else tmp_path / "runs.db"
    with Runtime(store=location) as rt:
        wf = rt.register(approval)
        mine = wf.create_run(resource_id="user-42")
        assert mine.resource_id == "user-42"
        mine.start(input_data={"value": "a"}, timeout=WAIT)
        theirs = wf.create_run(resource_id="user-7")
        theirs.start(input_data={"value": "b"}, timeout=WAIT)
        done = wf.create_run()
        done.start_async(input_data={"value": "c"}, resource_id="user-42")
        done.wait(WAIT)
        done.resume(resume_data={"ok": True}, timeout=WAIT)

        suspended = wf.list_workflow_runs(status="suspended", resource_id="user-42")
        assert [run.run_id for run in suspended.runs] == [mine.run_id]
        assert suspended.runs[0].resource_id == "user-42"
        assert suspended.total == 1
        everything = wf.list_workflow_runs(resource_id="user-42", status=["suspended", "success"])
        assert {run.run_id for run in everything.runs} == {mine.run_id, done.run_id}
        found = wf.get_workflow_run_by_id(done.run_id)
        assert found is not None and found.resource_id == "user-42"
        assert done.resource_id == "user-42"
        plain = wf.create_run().start(input_data={"value": "d"}, timeout=WAIT)
        assert plain.resource_id is None


def test_resource_ids_survive_the_process_and_a_reader_lists_by_them(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with Runtime(store=db) as rt:
        run = rt.register(approval).create_run(resource_id="tenant-a")
        run.start(input_data={"value": "x"}, timeout=WAIT)
    with RunReader(db) as reader:
        page = reader.list_runs(resource_id="tenant-a", status="suspended")
        assert [result.run_id for result in page.runs] == [run.run_id]
        assert page.runs[0].resource_id == "tenant-a"
    with Runtime(store=db) as rt:
        wf = rt.register(approval)
        assert wf.list_workflow_runs(resource_id="tenant-a").total == 1
        result = wf.create_run(run.run_id).resume(resume_data={"ok": True}, timeout=WAIT)
        assert result.status == "success" and result.resource_id == "tenant-a"


def test_a_bad_resource_id_is_refused_before_anything_is_recorded(runtime: Runtime) -> None:
    wf = runtime.register(approval)
    with pytest.raises(TypeError):
        wf.create_run(resource_id=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        wf.create_run(resource_id="")
    run = wf.create_run()
    with pytest.raises(InvalidInputError) as caught:
        run.start_async(input_data={"value": "x"}, resource_id="\ud800")
    assert caught.value.field == "resource_id"
    assert wf.get_workflow_run_by_id(run.run_id) is None
    with pytest.raises(TypeError):
        wf.list_workflow_runs(status=[3])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        wf.list_workflow_runs(status=["suspended", "asleep"])
    with pytest.raises(ValueError):
        wf.list_workflow_runs(status=[])


def test_a_file_from_before_resource_ids_migrates_in_place(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with Runtime(store=db) as rt:
        old = rt.register(approval).create_run().start(input_data={"value": "old"}, timeout=WAIT)
    # Take the file back to the schema before resource ids (and what came after them).
    with contextlib.closing(sqlite3.connect(db)) as connection:
        drop_deadlines(connection)
        connection.execute("DROP TABLE schedules")
        connection.execute("DROP INDEX runs_by_idempotency_key")
        connection.execute("ALTER TABLE runs DROP COLUMN idempotency_key")
        connection.execute("DROP INDEX runs_by_resource")
        connection.execute("ALTER TABLE runs DROP COLUMN resource_id")
        connection.execute(f"PRAGMA user_version = {sqlite_module._RESOURCES_FROM - 1}")
        connection.commit()
    with RunReader(db) as reader:  # read as it is, before any migration
        assert reader.list_runs(resource_id="user-1").total == 0
        assert reader.list_runs().total == 1

    with Runtime(store=db) as rt:
        wf = rt.register(approval)
        wf.create_run(resource_id="user-1").start(input_data={"value": "new"}, timeout=WAIT)
        assert wf.list_workflow_runs(resource_id="user-1").total == 1
        assert wf.list_workflow_runs(status="suspended").total == 2
        assert wf.get_workflow_run_by_id(old.run_id).resource_id is None  # type: ignore[union-attr]
    with contextlib.closing(sqlite3.connect(db)) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {row[1] for row in connection.execute("PRAGMA index_list(runs)")}
        assert "runs_by_resource" in indexes


def test_the_command_lists_by_resource_id_and_shows_resource_and_time_travel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from runtime._cli import main

    db = tmp_path / "runs.db"
    with Runtime(store=db) as rt:
        wf = rt.register(approval)
        mine = wf.create_run(resource_id="user-42")
        mine.start(input_data={"value": "a"}, timeout=WAIT)
        wf.create_run(resource_id="user-7").start(input_data={"value": "b"}, timeout=WAIT)
        travelled = wf.time_travel(mine.run_id, step="ask", resume_data={"ok": True})
        travelled.wait(WAIT)

    assert main(["runs", "list", "--db", str(db), "--json", "--resource-id", "user-42"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {run["run_id"] for run in listed["runs"]} == {mine.run_id, travelled.run_id}
    assert main(["runs", "show", travelled.run_id, "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "resource" in out and "user-42" in out
    assert f"time travel of  run {mine.run_id} from step ask" in out
