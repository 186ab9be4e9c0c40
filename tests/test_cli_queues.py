"""``callboard queues list``, and a run's queue in ``runs list`` and ``runs show``."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from runtime import Queue, Runtime, SQLiteStore, create_step, create_workflow
from runtime._cli import main
from tests.test_queues import Job, _abandoning, wait_for


def blocking(gate: threading.Event, started: list[str], queue: Queue) -> Any:
    def body(ctx: Any) -> Job:
        started.append(ctx.input_data.value)
        assert gate.wait(30)
        return ctx.input_data

    step = create_step(id="work", input_schema=Job, output_schema=Job, execute=body)
    return (
        create_workflow(id="blocking", input_schema=Job, output_schema=Job, queue=queue)
        .then(step)
        .commit()
    )


def test_queues_list_shows_waiting_running_and_limits_per_queue_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "runs.db")
    gate, started = threading.Event(), []
    queue = Queue("mail", key=lambda job: job.value, key_concurrency=1, rate_limit=(100, 60))
    with Runtime(store=SQLiteStore(db)) as rt:
        wf = rt.register(blocking(gate, started, queue))
        for tenant in ("acme", "acme", "acme", "globex"):
            wf.create_run().start_async(input_data={"value": tenant}, priority=2)
        wait_for(lambda: len(started) == 2, "one run of each tenant did not start")
        assert main(["queues", "list", "--db", db, "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert listed == [
            {
                "queue": "mail",
                "key": "acme",
                "waiting": 2,
                "running": 1,
                "held": 0,
                "concurrency": None,
                "key_concurrency": 1,
                "rate_limit": [100, 60.0],
                "max_queued": None,
            },
            {
                "queue": "mail",
                "key": "globex",
                "waiting": 0,
                "running": 1,
                "held": 0,
                "concurrency": None,
                "key_concurrency": 1,
                "rate_limit": [100, 60.0],
                "max_queued": None,
            },
        ]
        assert main(["queues", "list", "--db", db]) == 0
        table = capsys.readouterr().out
        assert "mail" in table and "acme" in table and "100/60 s" in table
        assert "1 queue, 2 runs waiting, 2 running" in table
        assert main(["runs", "list", "--db", db]) == 0
        assert "mail key acme priority 2" in capsys.readouterr().out
        assert main(["runs", "list", "--db", db, "--json"]) == 0
        runs = json.loads(capsys.readouterr().out)["runs"]
        assert {(run["queue"], run["queue_key"], run["priority"]) for run in runs} == {
            ("mail", "acme", 2),
            ("mail", "globex", 2),
        }
        assert main(["runs", "show", runs[0]["run_id"], "--db", db]) == 0
        assert "priority 2" in capsys.readouterr().out
        gate.set()


def test_queues_list_of_a_store_without_queues_is_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "runs.db")
    SQLiteStore(db).close()
    assert main(["queues", "list", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["queues", "list", "--db", db]) == 0
    assert "no queues" in capsys.readouterr().out


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_queues_list_shows_a_slot_held_by_a_step_body_its_run_let_go_of(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    # The canceled run's sync body runs on and keeps the queue's one slot: the next run
    # waits. Without "held" the listing read one waiting, none running: a queue stuck for
    # no reason it showed.
    db = str(tmp_path / "runs.db") if store == "sqlite" else request.getfixturevalue("postgres_url")
    released = threading.Event()
    began = {"stuck": threading.Event(), "next": threading.Event()}

    def listed() -> list[dict[str, Any]]:
        assert main(["queues", "list", "--db", db, "--json"]) == 0
        rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
        return rows

    with Runtime(store=db) as rt:
        wf = rt.register(_abandoning(released, began, timeout=None))
        try:
            stuck = wf.create_run()
            stuck.start_async(input_data={"value": "stuck"})
            assert began["stuck"].wait(30)
            assert stuck.cancel() is True
            assert stuck.wait(timeout=30).status == "canceled"
            after = wf.create_run()
            after.start_async(input_data={"value": "next"})
            wait_for(lambda: listed()[0]["held"] == 1, "the held slot was not shown")
            assert {key: listed()[0][key] for key in ("queue", "waiting", "running", "held")} == {
                "queue": "single",
                "waiting": 1,
                "running": 0,
                "held": 1,
            }
            assert main(["queues", "list", "--db", db]) == 0
            table = capsys.readouterr().out
            assert "HELD" in table
            assert "1 queue, 1 run waiting, 0 running, 1 slot held by step bodies" in table
            released.set()
            assert after.wait(timeout=30).status == "success"
            wait_for(lambda: listed()[0]["held"] == 0, "the slot still showed held")
        finally:
            released.set()


def test_queues_list_reads_a_file_from_before_held_slots_were_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Schema version 9 has no column of held runs: the reading command shows none held,
    # and a writable open migrates the file.
    db = tmp_path / "runs.db"
    store = SQLiteStore(db)
    store.define_queue(Queue("mail", concurrency=1).limits)
    store.close()
    with contextlib.closing(sqlite3.connect(db)) as connection, connection:
        connection.execute("ALTER TABLE owners DROP COLUMN executing")
        connection.execute("PRAGMA user_version = 9")
    connection.close()
    assert main(["queues", "list", "--db", str(db), "--json"]) == 0
    assert [(row["queue"], row["held"]) for row in json.loads(capsys.readouterr().out)] == [
        ("mail", 0)
    ]
    SQLiteStore(db).close()
    with contextlib.closing(sqlite3.connect(db)) as connection, connection:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(owners)")}
        version = connection.execute("PRAGMA user_version").fetchone()[0]
    connection.close()
    assert "executing" in columns and version == 10
