"""Idempotent starts: one run per idempotency key and workflow, on every store and process."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from runtime import (
    Queue,
    RoleError,
    RunAlreadyStartedError,
    Runtime,
    create_step,
    create_workflow,
)
from runtime._cli import main
from runtime._stores import sqlite as sqlite_module
from runtime._stores.open import open_store
from runtime._stores.sqlite import SQLiteStore
from tests._support import ROOT, wait_for_no_callboard_threads

STORES = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class Value(BaseModel):
    value: str


shout = create_step(
    id="shout",
    input_schema=Value,
    output_schema=Value,
    execute=lambda ctx: Value(value=ctx.input_data.value.upper()),
)
orders = create_workflow(id="orders", input_schema=Value, output_schema=Value).then(shout).commit()
refunds = (
    create_workflow(id="refunds", input_schema=Value, output_schema=Value).then(shout).commit()
)


@pytest.fixture(params=STORES)
def rt(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    kind = request.param
    if kind == "memory":
        location: Any = "memory"
    elif kind == "sqlite":
        location = tmp_path / "runs.db"
    else:
        location = request.getfixturevalue("postgres_url")
    runtime = Runtime(store=location).start()
    try:
        yield runtime
    finally:
        runtime.stop(timeout=5)
    assert not wait_for_no_callboard_threads()


def test_a_second_start_with_the_same_key_returns_the_first_run_id(rt: Runtime) -> None:
    wf = rt.register(orders)
    first = wf.create_run()
    started = first.start_async(input_data={"value": "a"}, idempotency_key="order-1234")
    assert started.run_id == first.run_id
    again = wf.create_run()
    # Not validated: bad input with a used key still answers with the first run.
    repeated = again.start_async(input_data={"value": 42}, idempotency_key="order-1234")
    assert repeated.run_id == first.run_id
    assert again.run_id == first.run_id  # the handle follows the first run
    result = again.wait(10)
    assert result.result == {"value": "A"}
    assert result.idempotency_key == "order-1234"
    listed = wf.list_workflow_runs()
    assert listed.total == 1


def test_start_with_a_used_key_waits_for_the_first_run(rt: Runtime) -> None:
    wf = rt.register(orders)
    first = wf.create_run().start(input_data={"value": "b"}, idempotency_key="k", timeout=10)
    second = wf.create_run().start(input_data={"value": "zzz"}, idempotency_key="k", timeout=10)
    assert second.run_id == first.run_id
    assert second.result == {"value": "B"}


def test_keys_are_scoped_to_the_workflow(rt: Runtime) -> None:
    one = (
        rt.register(orders).create_run().start_async(input_data={"value": "x"}, idempotency_key="k")
    )
    two = (
        rt.register(refunds)
        .create_run()
        .start_async(input_data={"value": "x"}, idempotency_key="k")
    )
    assert one.run_id != two.run_id


def test_an_explicit_run_id_that_is_taken_still_raises(rt: Runtime) -> None:
    wf = rt.register(orders)
    wf.create_run("fixed").start_async(input_data={"value": "x"})
    with pytest.raises(RunAlreadyStartedError):
        wf.create_run("fixed").start_async(input_data={"value": "x"})
    with pytest.raises(RunAlreadyStartedError):
        wf.create_run("fixed").start_async(input_data={"value": "x"}, idempotency_key="fresh")
    # The key of the refused start was not recorded: it starts a run of its own.
    later = wf.create_run().start_async(input_data={"value": "x"}, idempotency_key="fresh")
    assert later.run_id != "fixed"
    # The same run id with the key it was started with is a repeat, not a clash.
    wf.create_run("keyed").start_async(input_data={"value": "x"}, idempotency_key="mine")
    assert (
        wf.create_run("keyed").start_async(input_data={"value": "x"}, idempotency_key="mine").run_id
        == "keyed"
    )


def test_a_key_is_forgotten_with_its_run(rt: Runtime) -> None:
    wf = rt.register(orders)
    first = wf.create_run().start(input_data={"value": "x"}, idempotency_key="once", timeout=10)
    assert wf.delete_workflow_run_by_id(first.run_id)
    second = wf.create_run().start_async(input_data={"value": "x"}, idempotency_key="once")
    assert second.run_id != first.run_id


def test_a_key_is_forgotten_with_its_run_when_it_is_pruned(rt: Runtime) -> None:
    wf = rt.register(orders)
    first = wf.create_run().start(input_data={"value": "x"}, idempotency_key="once", timeout=10)
    assert rt.store is not None and rt.store.prune(keep=0) == 1
    second = wf.create_run().start_async(input_data={"value": "x"}, idempotency_key="once")
    assert second.run_id != first.run_id


def test_concurrent_starts_with_one_key_make_one_run(rt: Runtime) -> None:
    wf = rt.register(orders)
    barrier = threading.Barrier(8)
    ids: list[str] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            barrier.wait(5)
            ids.append(
                wf.create_run()
                .start_async(input_data={"value": "x"}, idempotency_key="race")
                .run_id
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not errors
    assert len(ids) == 8 and len(set(ids)) == 1
    assert wf.list_workflow_runs().total == 1


def test_a_start_that_lost_the_race_for_its_key_and_a_full_queue_returns_the_first_run(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its look-up of the key came before the first start was recorded, which took the
    # queue's last place: the store refused it as full before it saw the key taken, and
    # a retried webhook was told QueueFullError for a run that exists.
    holding, held = threading.Event(), threading.Event()

    def hold(ctx: Any) -> Value:
        holding.set()
        held.wait(20)
        return ctx.input_data

    blocking = (
        create_workflow(id="blocking", input_schema=Value, output_schema=Value)
        .then(create_step(id="hold", input_schema=Value, output_schema=Value, execute=hold))
        .commit()
    )
    line = Queue("line", concurrency=1, max_queued=1)
    wf, blocker = rt.register(orders), rt.register(blocking)
    try:
        blocker.create_run().start_async(input_data={"value": "b"}, queue=line)
        assert holding.wait(20)  # executing: the queue's one place is free
        first = wf.create_run()
        first.start_async(input_data={"value": "x"}, queue=line, idempotency_key="once")
        late = wf.create_run()
        monkeypatch.setattr(late._host, "run_for_key", _misses_once(late._host.run_for_key))

        again = late.start_async(input_data={"value": "x"}, queue=line, idempotency_key="once")

        assert again.run_id == first.run_id
        assert wf.list_workflow_runs().total == 1
    finally:
        held.set()


def _misses_once(look_up: Any) -> Any:
    """``run_for_key`` that finds nothing the first time, as a look-up that lost a race."""
    calls = []

    def run_for_key(*args: Any) -> Any:
        calls.append(args)
        return None if len(calls) == 1 else look_up(*args)

    return run_for_key


def test_the_awaitable_start_takes_a_key(rt: Runtime) -> None:
    wf = rt.register(orders)

    async def main() -> tuple[str, str]:
        first = await wf.create_run().astart_async(input_data={"value": "x"}, idempotency_key="aio")
        second = await wf.create_run().astart(
            input_data={"value": "x"}, idempotency_key="aio", timeout=10
        )
        return first.run_id, second.run_id

    first_id, second_id = asyncio.run(main())
    assert first_id == second_id


@pytest.mark.parametrize(
    ("key", "error"),
    [(12, TypeError), ("", ValueError), ("x" * 513, ValueError), ("\ud800", ValueError)],
)
def test_a_bad_key_is_refused_before_anything_is_recorded(
    runtime: Runtime, key: Any, error: type[Exception]
) -> None:
    wf = runtime.register(orders)
    with pytest.raises(error, match="idempotency_key"):
        wf.create_run().start_async(input_data={"value": "x"}, idempotency_key=key)
    assert wf.list_workflow_runs().total == 0


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from runtime import Runtime
    from tests.test_idempotency import orders
    go = Path({go!r})
    with Runtime(store={store!r}, role="client") as rt:
        wf = rt.register(orders)
        while not go.exists():
            time.sleep(0.001)
        run_id = wf.create_run().start_async(
            input_data={{"value": "p"}}, idempotency_key="cross-process"
        ).run_id
        print(run_id, flush=True)
    """
)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_processes_starting_with_one_key_make_one_run(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    go = tmp_path / "go"
    if kind == "sqlite":
        store: str = str(tmp_path / "runs.db")
        SQLiteStore(store).close()  # made once: neither child migrates while the other starts
    else:
        store = request.getfixturevalue("postgres_url")
        open_store(store).close()
    script = _CHILD.format(root=str(ROOT), go=str(go), store=store)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    go.touch()
    outputs = [child.communicate(timeout=60) for child in children]
    for child, (_out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    ids = {out.strip() for out, _err in outputs}
    assert len(ids) == 1
    reader = open_store(store, readonly=True)
    try:
        records, total = reader.list_runs()
    finally:
        reader.close()
    assert total == 1 and records[0].run_id in ids


@pytest.mark.postgres
def test_a_postgres_database_from_before_keys_gets_them_on_open(postgres_url: str) -> None:
    import psycopg

    open_store(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("DROP TABLE callboard_schedules")
        connection.execute("DROP INDEX callboard_runs_by_idempotency_key")
        connection.execute("ALTER TABLE callboard_runs DROP COLUMN idempotency_key")
        connection.execute(  # the schema version before keys and schedules: 4 (step 4 -> 5)
            "UPDATE callboard_meta SET value = %s WHERE key = 'schema_version'",
            ("4",),
        )
    with Runtime(store=postgres_url) as rt:
        wf = rt.register(orders)
        first = wf.create_run().start_async(input_data={"value": "p"}, idempotency_key="k")
        again = wf.create_run().start_async(input_data={"value": "p"}, idempotency_key="k")
        assert again.run_id == first.run_id
        assert rt.schedules() == []


def test_a_store_of_the_schema_before_keys_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    connection = sqlite3.connect(path, isolation_level=None)
    connection.executescript(sqlite_module._SCHEMA)
    for steps in sqlite_module._MIGRATIONS[:2]:  # the schema before this feature: version 3
        for statement in steps:
            connection.execute(statement)
    connection.execute("PRAGMA user_version = 3")
    connection.close()
    with Runtime(store=path) as rt:
        wf = rt.register(orders)
        first = wf.create_run().start(input_data={"value": "m"}, idempotency_key="k", timeout=10)
        again = wf.create_run().start_async(input_data={"value": "m"}, idempotency_key="k")
        assert again.run_id == first.run_id
        assert rt.schedules() == []
    connection = sqlite3.connect(path)
    try:
        assert (
            connection.execute("PRAGMA user_version").fetchone()[0] == sqlite_module.SCHEMA_VERSION
        )
    finally:
        connection.close()


def test_a_worker_refuses_a_keyed_start_as_any_other(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with Runtime(store=path) as both:
        both.register(orders).create_run().start_async(
            input_data={"value": "x"}, idempotency_key="k"
        )
        with Runtime(store=path, role="worker") as worker:
            wf = worker.register(orders)
            with pytest.raises(RoleError):
                wf.create_run().start_async(input_data={"value": "x"}, idempotency_key="k")


def test_callboard_runs_show_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "runs.db"
    with Runtime(store=path) as rt:
        run_id = (
            rt.register(orders)
            .create_run()
            .start(input_data={"value": "x"}, idempotency_key="order-77", timeout=10)
            .run_id
        )
    assert main(["runs", "show", run_id, "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert "idempotency key" in out and "order-77" in out
    assert main(["runs", "show", run_id, "--db", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["idempotency_key"] == "order-77"
