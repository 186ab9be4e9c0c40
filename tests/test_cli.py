"""The ``callboard`` command (runtime/_cli/): runs list, show, watch, and start.

Most tests drive ``main([...])`` in this process and read what it printed with
capsys; a few run the real thing, ``python -m runtime`` and the ``callboard``
console script, in a subprocess.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from runtime import (
    ErrorInfo,
    RunReader,
    RunStatus,
    Runtime,
    StepResult,
    StepStatus,
    WorkflowResult,
    WorkflowRunList,
    create_step,
    create_workflow,
)
from runtime._cli import _actions, _commands, _render, main
from tests._support import ROOT, Value, exclaim_step, shout_step, wait_for_no_callboard_threads

CONSOLE_SCRIPT = ROOT / ".venv" / "bin" / "callboard"
TIMEOUT = 60.0

# --- workflows for runs made in this process ----------------------------------------------


shout = shout_step()
exclaim = exclaim_step()


def _refuse(ctx: Any) -> Value:
    raise ValueError(f"refused [bold]{ctx.input_data.value}[/bold]")


refuse = create_step(id="refuse", input_schema=Value, output_schema=Value, execute=_refuse)
greet = create_workflow(id="greet", input_schema=Value, output_schema=Value)
greet = greet.then(shout).then(exclaim).commit()
failing = create_workflow(id="failing", input_schema=Value, output_schema=Value)
failing = failing.then(shout).then(refuse).commit()

# --- a module of workflows for `callboard start` --------------------------------------------

FLOWS = textwrap.dedent(
    """
    import time

    from pydantic import BaseModel, ConfigDict

    from runtime import create_step, create_workflow


    class Value(BaseModel):
        value: str


    class Anything(BaseModel):
        model_config = ConfigDict(extra="allow")


    def _refuse(ctx):
        raise ValueError(f"refused {ctx.input_data.value}")


    def _linger(ctx):
        time.sleep(0.3)
        return ctx.input_data


    shout = create_step(
        id="shout",
        input_schema=Value,
        output_schema=Value,
        execute=lambda ctx: Value(value=ctx.input_data.value.upper()),
    )
    refuse = create_step(id="refuse", input_schema=Value, output_schema=Value, execute=_refuse)
    linger = create_step(id="linger", input_schema=Value, output_schema=Value, execute=_linger)
    same = create_step(
        id="same", input_schema=Anything, output_schema=Anything, execute=lambda ctx: ctx.input_data
    )

    greet = create_workflow(id="greet", input_schema=Value, output_schema=Value)
    greet = greet.then(shout).commit()
    failing = (
        create_workflow(id="failing", input_schema=Value, output_schema=Value)
        .then(shout)
        .then(refuse)
        .commit()
    )
    slow = (
        create_workflow(id="slow", input_schema=Value, output_schema=Value)
        .then(linger)
        .then(shout)
        .commit()
    )
    echo = (
        create_workflow(id="echo", input_schema=Anything, output_schema=Anything)
        .then(same)
        .commit()
    )
    draft = create_workflow(id="draft", input_schema=Value, output_schema=Value).then(shout)
    asking = create_step(
        id="ask",
        input_schema=Value,
        output_schema=Value,
        execute=lambda ctx: ctx.input_data if ctx.resume_data else ctx.suspend({"ok": "?"}),
    )
    approval = (
        create_workflow(id="approval", input_schema=Value, output_schema=Value)
        .then(asking)
        .commit()
    )
    answer = 42


    class Namespace:
        greet = greet
    """
)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "runs.db")


@pytest.fixture
def flows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of a fresh module of workflows in the current folder (tmp_path)."""
    name = f"flows_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(FLOWS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the command puts the folder on it
    try:
        yield name
    finally:
        sys.modules.pop(name, None)
    assert not wait_for_no_callboard_threads(), "callboard start left threads behind"


@pytest.fixture
def stored_runs(db: str) -> dict[str, WorkflowResult]:
    """Three ended runs in ``db``, made by a runtime that has stopped: two ok, one failed."""
    with Runtime(store=db) as rt:
        ok = rt.register(greet)
        bad = rt.register(failing)
        results = [
            ok.create_run(run_id="run-1").start(input_data={"value": "first"}, timeout=10),
            bad.create_run(run_id="run-2").start(input_data={"value": "second"}, timeout=10),
            ok.create_run(run_id="run-3").start(input_data={"value": "third"}, timeout=10),
        ]
    return {result.run_id: result for result in results}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(out: str) -> list[list[str]]:
    """The rows of the first table printed, as lists of cells (split on 2+ spaces)."""
    lines = out.splitlines()
    rule = next(index for index, line in enumerate(lines) if set(line.strip()) == {"─"})
    rows = []
    for line in lines[rule + 1 :]:
        if not line.strip():
            break
        rows.append([cell for cell in line.strip().split("  ") if cell.strip()])
    return [[cell.strip() for cell in row] for row in rows]


# --- runs list ---------------------------------------------------------------------------


def test_runs_list_shows_every_run_newest_first_with_its_workflow_and_status(
    db: str, stored_runs: dict[str, WorkflowResult], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "runs", "list", "--db", db)
    assert code == 0, err
    rows = table_rows(out)
    assert [row[:3] for row in rows] == [
        ["run-3", "greet", "success"],
        ["run-2", "failing", "failed"],
        ["run-1", "greet", "success"],
    ]
    assert rows[1][3] == "1 done, refuse failed"
    assert out.strip().splitlines()[-1] == "3 runs"
    assert err == ""


def test_runs_list_json_is_the_page_with_the_runs_and_the_total(
    db: str, stored_runs: dict[str, WorkflowResult], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "runs", "list", "--db", db, "--json")
    assert code == 0
    page = json.loads(out)
    assert page["total"] == 3 and page["unreadable"] == []
    assert [run["run_id"] for run in page["runs"]] == ["run-3", "run-2", "run-1"]
    assert WorkflowResult.model_validate(page["runs"][2]) == stored_runs["run-1"]


def test_runs_list_to_a_pipe_keeps_every_column_of_every_row_whatever_one_value_holds(
    db: str, stored_runs: dict[str, WorkflowResult], capsys: pytest.CaptureFixture[str]
) -> None:
    # The table was fitted to 200 columns: a run id of 250 characters hid every column
    # but two, of every row, and `runs list | grep failed` found nothing.
    long_id = "r" * 250
    with Runtime(store=db) as rt:
        rt.register(greet).create_run(run_id=long_id).start(input_data={"value": "x"})
    code, out, _ = run_cli(capsys, "runs", "list", "--db", db)

    assert code == 0
    rows = table_rows(out)
    assert rows[0][:3] == [long_id, "greet", "success"]
    assert [row[2] for row in rows[1:]] == ["success", "failed", "success"]
    assert len([line for line in out.splitlines() if "failed" in line]) == 1


def test_runs_list_filters_by_status_and_by_workflow(
    db: str, stored_runs: dict[str, WorkflowResult], capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run_cli(capsys, "runs", "list", "--db", db, "--json", "--status", "failed")
    assert [run["run_id"] for run in json.loads(out)["runs"]] == ["run-2"]
    _, out, _ = run_cli(capsys, "runs", "list", "--db", db, "--json", "--workflow", "greet")
    assert [run["run_id"] for run in json.loads(out)["runs"]] == ["run-3", "run-1"]
    _, out, _ = run_cli(capsys, "runs", "list", "--db", db, "--status", "pending")
    assert out.strip() == "no runs"


def test_runs_list_pages_with_limit_and_offset(
    db: str, stored_runs: dict[str, WorkflowResult], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "runs", "list", "--db", db, "--limit", "1", "--offset", "1")
    assert code == 0
    assert [row[0] for row in table_rows(out)] == ["run-2"]
    assert out.strip().splitlines()[-1] == "runs 2-2 of 3"
    _, out, _ = run_cli(capsys, "runs", "list", "--db", db, "--json", "--limit", "2")
    page = json.loads(out)
    assert len(page["runs"]) == 2 and page["total"] == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["--status", "finished"],
        ["--limit", "0"],
        ["--limit", "many"],
        ["--offset", "-1"],
        ["--no-such-option"],
    ],
    ids=["unknown-status", "zero-limit", "word-limit", "negative-offset", "unknown-option"],
)
def test_runs_list_rejects_bad_arguments_with_exit_2(
    db: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "runs", "list", "--db", db, *argv)
    assert code == 2
    assert out == ""
    assert "error:" in err and "Traceback" not in err


def test_runs_list_keeps_each_row_on_one_line_off_a_terminal_whatever_columns_says(
    db: str,
    stored_runs: dict[str, WorkflowResult],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    code, out, _ = run_cli(capsys, "runs", "list", "--db", db)
    assert code == 0
    assert [row[0] for row in table_rows(out)] == ["run-3", "run-2", "run-1"]


@pytest.fixture
def corrupted(db: str, stored_runs: dict[str, WorkflowResult]) -> str:
    """``db`` with the stored snapshot of run-2 overwritten by bytes that are not one."""
    connection = sqlite3.connect(db)
    with connection:
        connection.execute("UPDATE runs SET snapshot = x'c1c1c1' WHERE run_id = 'run-2'")
    connection.close()
    return db


def test_runs_list_leaves_out_an_unreadable_run_names_it_and_keeps_stdout_json(
    corrupted: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    code, out, err = run_cli(capsys, "runs", "list", "--db", corrupted, "--json")
    assert code == 0
    page = json.loads(out)  # no log line in the middle of the JSON
    assert [run["run_id"] for run in page["runs"]] == ["run-3", "run-1"]
    assert page["unreadable"] == ["run-2"] and page["total"] == 3
    assert "callboard: warning: 1 run(s) could not be read and are left out: run-2" in err
    # callboard's own warning: through standard logging, which pytest has set up (a
    # command with no logging set up prints it on stderr: test_quiet.py).
    [warning] = [r for r in caplog.records if r.name == "callboard"]
    assert warning.getMessage().startswith("run_unreadable ")
    assert warning.callboard_fields["run_id"] == "run-2"  # type: ignore[attr-defined]
    assert "run_unreadable" not in out
    assert not structlog.is_configured()  # the command left structlog as it found it


def test_runs_list_logs_through_the_applications_structlog_configuration_when_there_is_one(
    corrupted: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with structlog.testing.capture_logs() as events:
        code, _, err = run_cli(capsys, "runs", "list", "--db", corrupted)
    assert code == 0
    assert [event["run_id"] for event in events if event["event"] == "run_unreadable"] == ["run-2"]
    assert "run_unreadable" not in err


def test_runs_show_of_an_unreadable_run_exits_2_with_one_line(
    corrupted: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "runs", "show", "run-2", "--db", corrupted)
    assert code == 2
    assert out == ""
    assert err.startswith(f"callboard: error: run 'run-2' in {corrupted} cannot be read: ")
    assert err.count("cannot be read") == 1  # said once, not once more inside
    assert err.count("\n") == 1


# --- runs show ---------------------------------------------------------------------------


def test_runs_show_prints_the_status_input_each_step_and_the_result(
    db: str, stored_runs: dict[str, WorkflowResult], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "runs", "show", "run-1", "--db", db)
    assert code == 0, err
    fields = dict(line.split(None, 1) for line in out.splitlines()[:3])
    assert fields == {"run": "run-1", "workflow": "greet", "status": "success"}
    assert '{"value": "first"}' in out  # the input
    assert '{"value": "FIRST!"}' in out  # the result
    steps = table_rows(out)
    assert [row[:2] for row in steps] == [["shout", "success"], ["exclaim", "success"]]
    assert steps[0][-1] == '{"value": "FIRST"}'


def test_runs_show_of_a_failed_run_exits_1_with_the_error_and_its_step(
    db: str, stored_runs: dict[str, WorkflowResult], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "runs", "show", "run-2", "--db", db)
    assert code == 1
    assert "error     ValueError: refused [bold]SECOND[/bold]" in out  # verbatim, not markup
    assert "in step   refuse" in out
    steps = table_rows(out)
    assert [row[:2] for row in steps] == [["shout", "success"], ["refuse", "failed"]]
    assert steps[1][-1] == "ValueError: refused [bold]SECOND[/bold]"


def test_runs_show_json_reads_back_as_the_same_result(
    db: str, stored_runs: dict[str, WorkflowResult], capsys: pytest.CaptureFixture[str]
) -> None:
    for run_id, expected_code in (("run-1", 0), ("run-2", 1)):
        code, out, _ = run_cli(capsys, "runs", "show", run_id, "--db", db, "--json")
        assert code == expected_code
        assert WorkflowResult.model_validate(json.loads(out)) == stored_runs[run_id]


def test_runs_show_of_an_unknown_run_exits_3_with_one_line_on_stderr(
    db: str, stored_runs: dict[str, WorkflowResult], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "runs", "show", "no-such-run", "--db", db)
    assert code == 3
    assert out == ""
    assert err == f"callboard: error: no run 'no-such-run' in {db}\n"


def test_runs_show_of_a_run_in_progress_exits_0_and_shows_the_running_step(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    gate = threading.Event()
    held = create_step(
        id="held",
        input_schema=Value,
        output_schema=Value,
        execute=lambda ctx: ctx.input_data if gate.wait(10) else None,
    )
    workflow = create_workflow(id="held", input_schema=Value, output_schema=Value)
    with Runtime(store=db) as rt:
        wf = rt.register(workflow.then(held).commit())
        run = wf.create_run(run_id="in-progress")
        run.start_async(input_data={"value": "x"})
        try:
            code, out, _ = run_cli(capsys, "runs", "show", "in-progress", "--db", db)
            assert code == 0
            status = dict(line.split(None, 1) for line in out.splitlines()[:3])["status"]
            assert status in ("pending", "running")
        finally:
            gate.set()
        assert run.wait(10).status == "success"


# --- runs watch --------------------------------------------------------------------------


def test_runs_watch_follows_a_run_until_it_ends_and_exits_0_on_success(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    held = create_step(
        id="held",
        input_schema=Value,
        output_schema=Value,
        execute=lambda ctx: ctx.input_data if gate.wait(10) else None,
    )
    workflow = create_workflow(id="held", input_schema=Value, output_schema=Value)
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        # The step goes on only once watch has looked at the run in progress.
        pauses.append(seconds)
        gate.set()
        time.sleep(seconds)

    monkeypatch.setattr(_commands, "_sleep", pause)
    with Runtime(store=db) as rt:
        wf = rt.register(workflow.then(held).then(shout).commit())
        run = wf.create_run(run_id="watched")
        run.start_async(input_data={"value": "watch me"})
        try:
            code, out, err = run_cli(
                capsys, "runs", "watch", "watched", "--db", db, "--interval", "0.02"
            )
        finally:
            gate.set()
    assert code == 0, err
    assert pauses and set(pauses) == {0.02}
    progress = [line for line in out.splitlines() if " run watched " in line]
    assert progress, out
    assert progress[0].split(" run watched ")[1].split(":")[0] in ("pending", "running")
    assert dict(line.split(None, 1) for line in out.splitlines()[len(progress) :][:3]) == {
        "run": "watched",
        "workflow": "held",
        "status": "success",
    }
    assert '{"value": "WATCH ME"}' in out


def test_runs_watch_of_a_failed_run_exits_1(
    db: str, stored_runs: dict[str, WorkflowResult], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "runs", "watch", "run-2", "--db", db)
    assert code == 1
    assert "status    failed" in out


def test_runs_watch_of_an_unknown_run_exits_3(
    db: str, stored_runs: dict[str, WorkflowResult], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "runs", "watch", "no-such-run", "--db", db)
    assert code == 3
    assert "no run 'no-such-run'" in err


def test_runs_watch_rejects_an_interval_that_is_not_above_zero(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "runs", "watch", "x", "--db", db, "--interval", "0")
    assert code == 2
    assert "--interval" in err


# --- the run store: --db, CALLBOARD_DB, and stores that cannot be read ----------------------


@pytest.mark.parametrize(
    "argv",
    [["runs", "list"], ["runs", "show", "run-1"], ["runs", "watch", "run-1"]],
    ids=["list", "show", "watch"],
)
def test_a_reading_command_on_a_missing_store_exits_2_and_creates_nothing(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.db"
    code, out, err = run_cli(capsys, *argv, "--db", str(missing))
    assert code == 2
    assert out == ""
    assert err.startswith(f"callboard: error: no run store at {missing}")
    assert "CALLBOARD_DB" in err and err.count("\n") == 1
    assert not missing.exists()


@pytest.mark.parametrize("kind", ["directory", "not-sqlite"])
@pytest.mark.parametrize(
    "argv",
    [
        ["runs", "list"],
        ["runs", "show", "run-1"],
        ["start", "{flows}:greet", "--input", '{{"value": "x"}}'],
    ],
    ids=["list", "show", "start"],
)
def test_a_store_that_is_a_directory_or_not_sqlite_exits_2_with_one_line(
    tmp_path: Path, flows: str, kind: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.db"
    if kind == "directory":
        bad.mkdir()
    else:
        bad.write_bytes(b"this is not a SQLite database, only some text\n" * 20)
    before = None if kind == "directory" else bad.read_bytes()
    code, out, err = run_cli(capsys, *[part.format(flows=flows) for part in argv], "--db", str(bad))
    assert code == 2
    assert out == ""
    assert err.startswith("callboard: error: ") and err.count("\n") == 1, err
    assert str(bad) in err
    assert "Traceback" not in err
    if before is not None:
        assert bad.read_bytes() == before


def test_the_store_comes_from_callboard_db_when_no_db_is_given(
    db: str,
    stored_runs: dict[str, WorkflowResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("CALLBOARD_DB", db)
    code, out, _ = run_cli(capsys, "runs", "show", "run-1", "--json")
    assert code == 0
    assert json.loads(out)["run_id"] == "run-1"
    # --db wins over the environment.
    code, _, err = run_cli(capsys, "runs", "list", "--db", str(elsewhere / "other.db"))
    assert code == 2 and "other.db" in err


def test_the_store_is_callboard_db_in_the_current_folder_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CALLBOARD_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    with Runtime(store=tmp_path / "callboard.db") as rt:
        rt.register(greet).create_run(run_id="here").start(input_data={"value": "x"}, timeout=10)
    code, out, _ = run_cli(capsys, "runs", "list", "--json")
    assert code == 0
    assert [run["run_id"] for run in json.loads(out)["runs"]] == ["here"]


def test_db_may_be_a_sqlite_url_and_a_malformed_one_exits_2(
    db: str, stored_runs: dict[str, WorkflowResult], flows: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "runs", "list", "--db", f"sqlite:///{db}", "--json")
    assert code == 0
    assert json.loads(out)["total"] == 3
    for argv in (["runs", "list"], ["start", f"{flows}:greet", "--input", '{"value": "x"}']):
        code, out, err = run_cli(capsys, *argv, "--db", "sqlite://runs.db")
        assert code == 2
        assert err.startswith("callboard: error: --db: a SQLite URL is sqlite:///")
        assert err.count("\n") == 1


def test_db_may_be_given_before_the_command(
    db: str, stored_runs: dict[str, WorkflowResult], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "--db", db, "runs", "show", "run-3", "--json")
    assert code == 0
    assert json.loads(out)["run_id"] == "run-3"
    code, out, _ = run_cli(capsys, "runs", "--db", db, "list", "--json")
    assert code == 0
    assert json.loads(out)["total"] == 3


# --- start -------------------------------------------------------------------------------


def test_start_wait_runs_a_workflow_from_a_module_and_shows_the_result(
    db: str, flows: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "start", f"{flows}:greet", "--input", '{"value": "hello"}', "--wait", "--db", db
    )
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith("started run ") and first.endswith(f" of workflow greet in {db}")
    run_id = first.split()[2]
    assert "status    success" in out
    assert '{"value": "HELLO"}' in out
    with RunReader(db) as reader:
        result = reader.get_run(run_id)
    assert result is not None and result.status == "success"
    assert result.result == {"value": "HELLO"}


def test_start_wait_of_a_failing_run_exits_1_and_shows_the_error(
    db: str, flows: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys, "start", f"{flows}:failing", "--input", '{"value": "no"}', "--wait", "--db", db
    )
    assert code == 1
    assert "status    failed" in out
    assert "ValueError: refused NO" in out


def test_start_wait_shows_progress_while_the_run_goes_on(
    db: str, flows: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys, "start", f"{flows}:slow", "--input", '{"value": "a"}', "--wait", "--db", db
    )
    assert code == 0
    run_id = out.splitlines()[0].split()[2]
    # The first step takes 0.3 s: the run is seen in progress before its final view.
    progress = [line for line in out.splitlines()[1:] if f" run {run_id} " in line]
    assert progress, out
    statuses = {line.split(f" run {run_id} ")[1].split(":")[0] for line in progress}
    assert statuses <= {"pending", "running"}, progress
    assert out.index(progress[-1]) < out.index(f"run       {run_id}")


def test_start_wait_json_prints_the_result_as_json(
    db: str, flows: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys, "start", f"{flows}:failing", "--input", '{"value": "j"}', "--wait", "--json",
        "--db", db,
    )  # fmt: skip
    assert code == 1
    result = WorkflowResult.model_validate(json.loads(out))
    assert result.status == "failed" and result.error is not None
    assert result.error.message == "refused J"


def test_start_without_wait_commits_the_run_and_prints_its_id(
    db: str, flows: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys, "start", f"{flows}:greet", "--input", '{"value": "x"}', "--run-id", "mine",
        "--db", db,
    )  # fmt: skip
    assert code == 0
    assert out.splitlines() == [
        f"started run mine of workflow greet in {db}",
        "run mine ended: success",
    ]
    with RunReader(db) as reader:
        result = reader.get_run("mine")
    assert result is not None and result.result == {"value": "X"}


def test_start_without_wait_json_prints_the_run_id_and_status(
    db: str, flows: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys, "start", f"{flows}:greet", "--input", '{"value": "x"}', "--json", "--db", db
    )
    assert code == 0
    printed = json.loads(out)
    assert printed["status"] == "success"
    with RunReader(db) as reader:
        assert reader.get_run(printed["run_id"]) is not None


def test_start_leaves_a_run_that_outlasts_its_timeout_in_the_store_and_says_so(
    db: str, flows: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys, "start", f"{flows}:slow", "--input", '{"value": "later"}', "--run-id", "left",
        "--timeout", "0", "--db", db,
    )  # fmt: skip
    assert code == 0
    assert out.splitlines()[-1].startswith("run left is still ")
    assert (
        "the next runtime on that store that registers workflow 'slow' (a callboard worker, "
        "say) resumes it" in out
    )
    with RunReader(db) as reader:
        result = reader.get_run("left")
    assert result is not None and not result.is_terminal

    # And so it is: a runtime that registers the workflow takes the run up again.
    module = sys.modules[flows]
    with Runtime(store=db) as rt:
        rt.register(module.slow)
        code, out, _ = run_cli(capsys, "runs", "watch", "left", "--db", db, "--interval", "0.05")
    assert code == 0
    assert '{"value": "LATER"}' in out


def test_start_wait_gives_up_after_its_timeout_with_exit_1(
    db: str, flows: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        capsys, "start", f"{flows}:slow", "--input", '{"value": "x"}', "--wait",
        "--timeout", "0.05", "--db", db,
    )  # fmt: skip
    assert code == 1
    assert "did not end within 0.05 seconds" in err
    assert "resumes it from its last completed step" in err


def test_start_wait_of_a_run_that_suspends_names_the_command_that_resumes_it(
    db: str, flows: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # It said a program would resume it with run.resume(), and not the command.
    code, out, err = run_cli(
        capsys, "start", f"{flows}:approval", "--input", '{"value": "x"}', "--wait",
        "--run-id", "asked", "--db", db,
    )  # fmt: skip
    assert "suspended" in out + err
    assert "callboard runs resume asked --data JSON" in out + err, (code, out, err)


def test_start_loads_a_workflow_from_a_python_file_and_a_dotted_attribute(
    db: str, flows: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"{flows}.py"
    code, out, err = run_cli(
        capsys, "start", f"{path}:Namespace.greet", "--input", '{"value": "f"}', "--wait",
        "--json", "--db", db,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["result"] == {"value": "F"}


def test_start_with_input_that_is_not_json_exits_2_and_records_nothing(
    db: str, flows: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "start", f"{flows}:greet", "--input", "{value: 1}", "--db", db)
    assert code == 2
    assert out == ""
    assert err.startswith("callboard: error: --input is not JSON: ")
    assert err.count("\n") == 1
    assert not Path(db).exists()  # nothing was started, not even the store


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ('{"valu": "typo"}', "value: Field required"),
        ('{"value": 7}', "value: Input should be a valid string"),
        ("[1, 2]", "value: Input should be a valid dictionary or instance of Value"),
    ],
    ids=["missing-field", "wrong-type", "not-an-object"],
)
def test_start_with_input_that_fails_the_schema_exits_2_with_pydantics_message(
    db: str, flows: str, given: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "start", f"{flows}:greet", "--input", given, "--wait", "--db", db
    )
    assert code == 2
    assert out == ""
    assert f"does not fit Value, the input schema of workflow 'greet': {message}" in err
    assert err.count("\n") == 1
    # Checked before the store is opened: none is made at a --db where there was none.
    assert not Path(db).exists()


def test_start_with_a_run_id_that_is_taken_exits_2(
    db: str, flows: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["start", f"{flows}:greet", "--input", '{"value": "x"}', "--run-id", "once"]
    assert run_cli(capsys, *argv, "--db", db)[0] == 0
    code, _, err = run_cli(capsys, *argv, "--db", db)
    assert code == 2
    assert "'once' is already in use" in err


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_here:greet", "cannot import no_such_module_here: no module named"),
        ("{flows}:missing", "has no attribute 'missing'"),
        ("{flows}:answer", "is not a workflow but a int"),
        ("{flows}:Value", "is not a workflow but the class Value"),
        ("{flows}:draft", "workflow 'draft' at {flows}:draft is not committed"),
        ("{flows}", "expected MODULE:ATTR"),
        ("missing_file.py:greet", "cannot import missing_file.py: no such file"),
    ],
)
def test_start_of_a_target_that_is_not_a_committed_workflow_exits_2(
    db: str, flows: str, target: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "start", target.format(flows=flows), "--input", "{}", "--db", db
    )
    assert code == 2
    assert out == ""
    assert message.format(flows=flows) in err
    assert err.count("\n") == 1, err


def test_start_of_a_module_that_raises_exits_2_with_its_traceback(
    db: str, tmp_path: Path, flows: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"broken_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('half-written module')\n")
    try:
        code, _, err = run_cli(capsys, "start", f"{name}:flow", "--db", db)
    finally:
        sys.modules.pop(name, None)
    assert code == 2
    assert "Traceback" in err  # the module's own error: its author needs the trace
    assert err.splitlines()[-1] == (
        f"callboard: error: importing {name} raised RuntimeError: half-written module"
    )


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=10),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.text(st.characters(exclude_categories=("Cs",)), max_size=5), children, max_size=3
        )
    ),
    max_leaves=8,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=st.dictionaries(
        st.text(st.characters(exclude_categories=("Cs",)), max_size=5), JSON_VALUES, max_size=4
    )
)
def test_start_input_reaches_the_run_and_show_json_unchanged(
    db: str, flows: str, capsys: pytest.CaptureFixture[str], value: dict[str, Any]
) -> None:
    code, out, err = run_cli(
        capsys, "start", f"{flows}:echo", "--input", json.dumps(value), "--wait", "--json",
        "--db", db,
    )  # fmt: skip
    assert code == 0, err
    started = json.loads(out)
    assert started["input"] == value and started["result"] == value
    code, out, _ = run_cli(capsys, "runs", "show", started["run_id"], "--db", db, "--json")
    assert code == 0
    assert json.loads(out) == started


@given(
    # "-" and "@PATH" name where the JSON is (stdin, a file), not JSON: tested on their own.
    text=st.text(max_size=20).filter(
        lambda text: not _is_json(text) and text != "-" and not text.startswith("@")
    )
)
def test_start_refuses_any_input_that_is_not_json_before_importing_anything(text: str) -> None:
    code = main(["start", "never_imported_module:flow", "--input", text, "--db", os.devnull])
    assert code == 2
    assert "never_imported_module" not in sys.modules


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# --- usage -------------------------------------------------------------------------------


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    assert "runs" in out and "start" in out
    assert (
        "exit codes: 0 success, 1 the run failed or was canceled, 2 usage or input error, "
        "3 not found"
    ) in " ".join(out.split())


@pytest.mark.parametrize("argv", [[], ["runs"]], ids=["nothing", "runs-alone"])
def test_a_command_line_without_a_command_prints_help_and_exits_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.startswith("usage: callboard")


def test_an_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "jobs", "list")
    assert code == 2
    assert "invalid choice: 'jobs'" in err


# --- the real command, in a subprocess ---------------------------------------------------


def _run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        check=False,
        env={**os.environ, **env},
    )


def test_python_m_runtime_is_the_command(
    db: str, stored_runs: dict[str, WorkflowResult], tmp_path: Path
) -> None:
    listed = _run([sys.executable, "-m", "runtime", "runs", "list", "--db", db, "--json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["total"] == 3
    missing = _run(
        [sys.executable, "-m", "runtime", "runs", "show", "nope"], tmp_path, CALLBOARD_DB=db
    )
    assert missing.returncode == 3
    assert missing.stderr == f"callboard: error: no run 'nope' in {db}\n"
    assert missing.stdout == ""


def test_python_m_runtime_reports_bad_input_in_one_line_without_a_traceback(
    db: str, flows: str, tmp_path: Path
) -> None:
    result = _run(
        [sys.executable, "-m", "runtime", "start", f"{flows}:greet", "--input", "[1,", "--db", db],
        tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("callboard: error: --input is not JSON")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("wait", [False, True], ids=["no-wait", "wait"])
def test_start_json_keeps_what_a_steps_child_process_writes_off_standard_output(
    db: str, tmp_path: Path, wait: bool
) -> None:
    # redirect_stdout moved Python's sys.stdout only: a child process a step started
    # wrote to descriptor 1, before the JSON, which then did not parse.
    (tmp_path / "shelling.py").write_text(
        textwrap.dedent(
            """
            import subprocess, sys
            from pydantic import BaseModel
            from runtime import create_step, create_workflow

            class Value(BaseModel):
                value: str

            def shell(ctx):
                subprocess.run([sys.executable, "-c", "print('from a child process')"], check=True)
                return ctx.input_data

            step = create_step(id="shell", input_schema=Value, output_schema=Value, execute=shell)
            flow = create_workflow(id="shelling", input_schema=Value, output_schema=Value)
            flow = flow.then(step).commit()
            """
        )
    )
    argv = [sys.executable, "-m", "runtime", "start", "shelling:flow", "--input", '{"value": "v"}']
    result = _run([*argv, "--json", *(["--wait"] if wait else []), "--db", db], tmp_path)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "success"
    assert "from a child process" in result.stderr


@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="the callboard script is not installed")
def test_the_callboard_console_script_starts_a_run_and_exits_with_its_status(
    db: str, flows: str, tmp_path: Path
) -> None:
    ok = _run(
        [
            str(CONSOLE_SCRIPT),
            "start",
            f"{flows}:greet",
            "--input",
            '{"value": "s"}',
            "--wait",
            "--db",
            db,
        ],
        tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert "status    success" in ok.stdout
    failed = _run(
        [
            str(CONSOLE_SCRIPT),
            "start",
            f"{flows}:failing",
            "--input",
            '{"value": "s"}',
            "--wait",
            "--db",
            db,
        ],
        tmp_path,
    )
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr == ""
    listed = _run([str(CONSOLE_SCRIPT), "runs", "list", "--db", db], tmp_path)
    assert listed.returncode == 0
    assert [row[1:3] for row in table_rows(listed.stdout)] == [
        ["failing", "failed"],
        ["greet", "success"],
    ]


# --- the run lifecycle: waiting, suspended, canceled, retried --------------------------------

MOMENT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def lifecycle_result(status: str, **fields: Any) -> WorkflowResult:
    """A result as a reader would return it, for a run in any status."""
    return WorkflowResult(
        run_id=fields.pop("run_id", f"{status}-run"),
        workflow_id="lifecycle",
        status=RunStatus(status),
        input={"value": "in"},
        created_at=MOMENT,
        updated_at=MOMENT,
        **fields,
    )


class FakeReader:
    """Stands in for the reader of `_commands._reader`: hands out prepared results, each in turn.

    A run's results are handed out one per read, the last one for every read after.
    """

    def __init__(self, *runs: list[WorkflowResult]) -> None:
        self.runs = {results[0].run_id: list(results) for results in runs}
        self.status_filters: list[str | None] = []
        self.pending: list[bool] = []  # resume_pending's answers, each in turn (then False)

    def __call__(self, db: str) -> FakeReader:
        return self

    def __enter__(self) -> FakeReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def get_run(self, run_id: str) -> WorkflowResult | None:
        results = self.runs.get(run_id)
        if not results:
            return None
        return results.pop(0) if len(results) > 1 else results[0]

    def awaits_a_worker(self, result: WorkflowResult) -> bool:
        return False  # these prepared runs have their worker

    def get_run_and_limit(self, run_id: str) -> tuple[WorkflowResult, _render.TimeLimit] | None:
        result = self.get_run(run_id)
        return None if result is None else (result, _render.NO_TIME_LIMIT)

    def resume_pending(self, run_id: str) -> bool:
        return self.pending.pop(0) if self.pending else False

    def resumes_pending(self, run_ids: Any) -> set[str]:
        return {run_id for run_id in run_ids if self.resume_pending(run_id)}

    def list_runs(
        self,
        *,
        workflow_id: str | None,
        status: str | None,
        limit: int,
        offset: int,
        resource_id: str | None = None,
        from_date: Any = None,
        to_date: Any = None,
    ) -> WorkflowRunList:
        self.status_filters.append(status)
        runs = [
            results[-1]
            for results in self.runs.values()
            if (status is None or results[-1].status == status)
            and (resource_id is None or results[-1].resource_id == resource_id)
        ]
        return WorkflowRunList(runs=runs, total=len(runs))


def serve(monkeypatch: pytest.MonkeyPatch, *runs: list[WorkflowResult]) -> FakeReader:
    reader = FakeReader(*runs)
    monkeypatch.setattr(_commands, "_reader", reader)
    return reader


def test_every_run_and_step_status_has_a_colour() -> None:
    statuses = {status.value for status in RunStatus} | {status.value for status in StepStatus}
    assert statuses <= set(_render._STATUS_STYLES)


@pytest.mark.parametrize("status", ["waiting", "suspended", "canceled"])
def test_runs_list_filters_by_the_lifecycle_statuses(
    db: str, status: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reader = serve(
        monkeypatch,
        [lifecycle_result("success", run_id="done")],
        [lifecycle_result(status, run_id="this-one")],
    )
    code, out, err = run_cli(capsys, "runs", "list", "--db", db, "--status", status)
    assert code == 0, err
    assert reader.status_filters == [status]
    assert [row[:3] for row in table_rows(out)] == [["this-one", "lifecycle", status]]


def test_runs_show_of_a_suspended_run_shows_each_suspended_step_with_its_payload_and_exits_0(
    db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    suspended = lifecycle_result(
        "suspended",
        steps={
            "approve": StepResult(status=StepStatus.SUSPENDED, suspend_payload={"ask": "ok?"}),
            "review.check": StepResult(status=StepStatus.SUSPENDED, suspend_payload=[1, 2]),
        },
        suspended={"approve": {"ask": "ok?"}, "review.check": [1, 2]},
    )
    serve(monkeypatch, [suspended])
    code, out, err = run_cli(capsys, "runs", "show", "suspended-run", "--db", db)
    assert code == 0, err
    lines = out.splitlines()
    assert dict(line.split(None, 1) for line in lines[:3])["status"] == "suspended"
    at = next(index for index, line in enumerate(lines) if line.startswith("suspended "))
    assert lines[at].split(None, 1)[1] == 'approve: {"ask": "ok?"}'
    assert lines[at + 1].strip() == "review.check: [1, 2]"
    assert [row[:2] for row in table_rows(out)] == [
        ["approve", "suspended"],
        ["review.check", "suspended"],
    ]


def test_runs_show_of_a_waiting_run_shows_when_its_sleep_ends(
    db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    serve(monkeypatch, [lifecycle_result("waiting", waiting_until=MOMENT)])
    code, out, err = run_cli(capsys, "runs", "show", "waiting-run", "--db", db)
    assert code == 0, err
    expected = MOMENT.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert f"waiting until  {expected}" in out.splitlines()


def test_runs_show_of_a_canceled_run_exits_1(
    db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    serve(monkeypatch, [lifecycle_result("canceled")])
    code, out, err = run_cli(capsys, "runs", "show", "canceled-run", "--db", db)
    assert code == 1
    assert err == ""
    assert dict(line.split(None, 1) for line in out.splitlines()[:3])["status"] == "canceled"
    code, _, _ = run_cli(capsys, "runs", "show", "canceled-run", "--db", db, "--json")
    assert code == 1


def test_runs_show_gives_a_steps_attempts_only_when_it_was_retried(
    db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    retried = lifecycle_result(
        "failed",
        steps={
            "fetch": StepResult(status=StepStatus.SUCCESS, output=1, attempts=3),
            "store": StepResult(
                status=StepStatus.FAILED,
                error=ErrorInfo(name="OSError", message="disk full"),
                attempts=1,
            ),
        },
    )
    serve(monkeypatch, [retried])
    code, out, _ = run_cli(capsys, "runs", "show", "failed-run", "--db", db)
    assert code == 1
    assert [row[:2] for row in table_rows(out)] == [
        ["fetch", "success (3 attempts)"],
        ["store", "failed"],
    ]


def test_runs_watch_follows_a_suspended_run_until_it_is_canceled_and_exits_1(
    db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    suspended = lifecycle_result("suspended", run_id="r", suspended={"approve": None})
    resumed = lifecycle_result("running", run_id="r")
    canceled = lifecycle_result("canceled", run_id="r")
    serve(monkeypatch, [suspended, suspended, suspended, resumed, canceled])
    pauses: list[float] = []
    monkeypatch.setattr(_commands, "_sleep", pauses.append)
    code, out, err = run_cli(capsys, "runs", "watch", "r", "--db", db, "--interval", "0.01")
    assert code == 1, err
    assert len(pauses) == 3  # it went on looking at the suspended run
    progress = [line.split(" run r ")[1] for line in out.splitlines() if " run r " in line]
    # The suspended run says so once, with what it waits for and how to resume it.
    assert progress == [
        "suspended, waiting for a resume: approve asked null (callboard runs resume r --data JSON)",
        "running",
    ]
    assert "status    canceled" in out


def test_runs_watch_on_a_terminal_names_what_a_suspended_run_waits_for_and_how_to_resume_it(
    db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The live view showed the run, but not the resume command a pipe is told.
    suspended = lifecycle_result("suspended", run_id="r", suspended={"approve": None})
    serve(monkeypatch, [suspended, suspended, lifecycle_result("canceled", run_id="r")])
    monkeypatch.setattr(_commands, "_sleep", lambda seconds: None)
    screen = io.StringIO()
    monkeypatch.setattr(
        _commands,
        "console_for",
        lambda stream: Console(file=screen, force_terminal=True, width=200, color_system=None),
    )
    code, _, err = run_cli(capsys, "runs", "watch", "r", "--db", db)
    assert code == 1, err
    drawn = screen.getvalue()
    assert "waiting for a resume: approve asked null" in drawn
    assert "(callboard runs resume r --data JSON)" in drawn


def test_runs_watch_says_a_resume_asked_for_waits_for_the_worker_until_it_is_dropped(
    db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # It said to resume a run whose resume request waited (recorded while it ran on):
    # that resume would be refused, the request having come first. A request its worker
    # drops (its data refused) leaves the run as it was: then it waits for a resume.
    suspended = lifecycle_result("suspended", run_id="r", suspended={"approve": None})
    canceled = lifecycle_result("canceled", run_id="r")
    reader = serve(monkeypatch, [suspended, suspended, suspended, suspended, canceled])
    reader.pending = [True, True, False]  # the first read only finds the run
    monkeypatch.setattr(_commands, "_sleep", lambda seconds: None)
    code, out, err = run_cli(capsys, "runs", "watch", "r", "--db", db)
    assert code == 1, err
    progress = [line.split(" run r ")[1] for line in out.splitlines() if " run r " in line]
    assert progress == [
        "suspended, a resume was asked for and waits for the worker: approve asked null "
        "(a worker that registers workflow lifecycle carries it out)",
        "suspended, waiting for a resume: approve asked null (callboard runs resume r --data JSON)",
    ]


def test_runs_watch_json_marks_a_suspension_a_resume_request_waits_for_until_it_is_dropped(
    db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The text said a resume was asked for and waits for the worker; the JSON told only
    # "suspended", as for a run that waits for a resume. A request its worker drops (its
    # data refused) leaves the run suspended: told again, waiting for a resume now.
    suspended = lifecycle_result("suspended", run_id="r", suspended={"approve": None})
    canceled = lifecycle_result("canceled", run_id="r")
    reader = serve(monkeypatch, [suspended, suspended, suspended, canceled])
    reader.pending = [True, True, False]
    monkeypatch.setattr(_actions, "_sleep", lambda seconds: None)
    code, out, err = run_cli(capsys, "runs", "watch", "r", "--db", db, "--json")
    assert code == 1, err
    told = [event for event in map(json.loads, out.splitlines()) if event["type"] == "status"]
    assert [(event["status"], event.get("resume_requested")) for event in told] == [
        ("suspended", True),
        ("suspended", False),
        ("canceled", None),  # the key is only on a suspended run's line
    ]
    assert all(event["suspended"] == {"approve": None} for event in told[:2])


def test_runs_watch_on_a_terminal_says_a_resume_asked_for_waits_for_the_worker(
    db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    suspended = lifecycle_result("suspended", run_id="r", suspended={"approve": None, "sign": None})
    ended = lifecycle_result("canceled", run_id="r")
    serve(monkeypatch, [suspended, suspended, ended]).pending = [True]
    monkeypatch.setattr(_commands, "_sleep", lambda seconds: None)
    screen = io.StringIO()
    monkeypatch.setattr(
        _commands,
        "console_for",
        lambda stream: Console(file=screen, force_terminal=True, width=300, color_system=None),
    )
    code, _, err = run_cli(capsys, "runs", "watch", "r", "--db", db)
    assert code == 1, err
    drawn = screen.getvalue()
    assert "a resume was asked for and waits for the worker: approve asked null" in drawn
    # The store tells of a request for the run, not for which suspension: the other may wait.
    assert (
        "(a worker that registers workflow lifecycle carries it out; a suspension it does not "
        "name: callboard runs resume r --step STEP --data JSON)"
    ) in drawn


def test_runs_watch_exits_0_once_a_resumed_run_succeeds(
    db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    suspended = lifecycle_result("suspended", run_id="r", suspended={"approve": None})
    serve(monkeypatch, [suspended, suspended, lifecycle_result("success", run_id="r")])
    monkeypatch.setattr(_commands, "_sleep", lambda seconds: None)
    code, out, err = run_cli(capsys, "runs", "watch", "r", "--db", db)
    assert code == 0, err
    assert "status    success" in out


@pytest.mark.parametrize("form", ["file", "stdin"])
def test_start_reads_its_input_from_a_file_or_standard_input(
    db: str,
    flows: str,
    *,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    form: str,
) -> None:
    # A big input, or one with quotes a shell would mangle, need not be on the command line.
    text = json.dumps({"value": 'it\'s "quoted" ' + "x" * 100_000})
    if form == "file":
        (tmp_path / "input.json").write_text(text)
        given = f"@{tmp_path / 'input.json'}"
    else:
        monkeypatch.setattr("sys.stdin", io.StringIO(text))
        given = "-"

    code, out, err = run_cli(
        capsys, "start", f"{flows}:greet", "--input", given, "--wait", "--json", "--db", db
    )

    assert code == 0, err
    assert json.loads(out)["result"]["value"] == json.loads(text)["value"].upper()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("@{tmp}/missing.json", "--input @{tmp}/missing.json: cannot read the file: No such file"),
        ("@{tmp}", "--input @{tmp}: cannot read the file: Is a directory"),
        ("@{tmp}/bad.json", "--input @{tmp}/bad.json is not JSON"),
    ],
    ids=["missing", "a-folder", "not-json"],
)
def test_start_input_from_a_file_that_will_not_do_is_one_line_and_exit_2(
    db: str,
    flows: str,
    *,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    given: str,
    message: str,
) -> None:
    (tmp_path / "bad.json").write_text("{not json")

    code, out, err = run_cli(
        capsys, "start", f"{flows}:greet", "--input", given.format(tmp=tmp_path), "--db", db
    )

    assert code == 2 and out == ""
    assert err.startswith(f"callboard: error: {message.format(tmp=tmp_path)}")
    assert err.count("\n") == 1
