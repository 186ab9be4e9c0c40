"""``callboard check``: a store looked over in one command, exit 1 when something is wrong.

Each problem the command names is made here for real: a snapshot with a flipped
byte, a page of the file overwritten, a run queued for a workflow no worker runs,
a worker that stopped renewing its lease while it held a run.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from runtime import Runtime, SQLiteStore, create_step, create_workflow
from runtime._cli import main
from tests._support import Value, wait_until


@pytest.fixture
def snapshot_encoding() -> str:
    """What is looked at is the store, not how runs were encoded: once is enough."""
    return "as-sized"


GATE = threading.Event()


def _echo(ctx: Any) -> Value:
    if ctx.input_data.value == "hold":
        GATE.wait(30)
    return Value(value=ctx.input_data.value)


ECHO = (
    create_workflow(id="check-echo", input_schema=Value, output_schema=Value)
    .then(create_step(id="echo", input_schema=Value, output_schema=Value, execute=_echo))
    .commit()
)


def check(db: Path, capsys: pytest.CaptureFixture[str], *more: str) -> tuple[int, str]:
    code = main(["--db", str(db), "check", *more])
    out, err = capsys.readouterr()
    assert err == "", err
    return code, out


def some_runs(db: Path, count: int = 3) -> None:
    with Runtime(store=db) as rt:
        bound = rt.register(ECHO)
        for index in range(count):
            bound.create_run(f"run-{index}").start(input_data={"value": "x" * 3000})


def test_a_sound_store_is_said_so_with_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "runs.db"
    some_runs(db)
    code, out = check(db, capsys)
    assert code == 0, out
    assert "quick_check ok" in out and "runs: 3 (success 3)" in out
    assert out.rstrip().endswith("no problem found")
    code, out = check(db, capsys, "--json")
    said = json.loads(out)
    assert code == 0 and said["problems"] == [] and said["runs"]["success"] == 3
    assert said["file"]["quick_check"] == "ok" and said["unreadable"] == []


def test_a_run_whose_snapshot_was_damaged_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "runs.db"
    some_runs(db)
    with contextlib.closing(sqlite3.connect(db)) as connection:
        (blob,) = connection.execute("SELECT snapshot FROM runs WHERE run_id = 'run-1'").fetchone()
        damaged = bytearray(blob)
        damaged[len(damaged) // 2] ^= 0xFF
        connection.execute("UPDATE runs SET snapshot = ? WHERE run_id = 'run-1'", (bytes(damaged),))
        connection.commit()
    code, out = check(db, capsys)
    assert code == 1, out
    assert "problem: 1 run(s) cannot be read (a damaged snapshot), first run-1" in out
    code, out = check(db, capsys, "--json")
    assert json.loads(out)["unreadable"] == ["run-1"]


def test_a_damaged_page_of_the_file_is_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "runs.db"
    some_runs(db, 40)
    with contextlib.closing(sqlite3.connect(db)) as connection:
        page = connection.execute("PRAGMA page_size").fetchone()[0]
        root = connection.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'runs'"
        ).fetchone()[0]
    with db.open("r+b") as file:  # the runs table's root page, zeroed
        file.seek((root - 1) * page)
        file.write(b"\0" * page)
    code, out = check(db, capsys)
    assert code == 1, out
    assert "quick_check FAILED" in out and "problem: SQLite finds the file damaged" in out
    assert "problem: the runs cannot be read" in out


def test_queued_runs_no_worker_runs_and_a_worker_past_its_lease_are_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "runs.db"
    GATE.clear()
    holder = Runtime(store=SQLiteStore(db, lease=0.2)).start()
    try:
        holder.register(ECHO).create_run("held").start_async(input_data={"value": "hold"})
        wait_until(lambda: _held(holder), what="the run is held")
        holder.store.abandon()  # type: ignore[union-attr]  # as if stalled: no more heartbeats
        with Runtime(store=db, role="client") as client:
            client.register(ECHO).create_run("queued").start_async(input_data={"value": "q"})
        wait_until(lambda: check(db, capsys)[0] == 1, what="the problems said")
        _, out = check(db, capsys)
        assert "worker(s) past their lease hold 1 run(s)" in out, out
        assert "queued run(s) of workflow 'check-echo' wait for a worker" in out, out
        said = json.loads(check(db, capsys, "--json")[1])
        assert said["workers"]["runs_held_past_lease"] == 1
        assert said["awaiting_a_worker"] == {"check-echo": 1}
    finally:
        GATE.set()
        holder.stop(timeout=0)


def _held(rt: Runtime) -> bool:
    store = rt.store
    return isinstance(store, SQLiteStore) and store.holds("held")


def test_a_missing_store_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", str(tmp_path / "none.db"), "check"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
