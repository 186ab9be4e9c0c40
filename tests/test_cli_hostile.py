"""The command under hostile arguments: one line on stderr and exit 2, no traceback, no hang."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime import RunReader, Runtime, SQLiteStore
from runtime._cli import main

WORKFLOW = """
from typing import Any
from pydantic import BaseModel
from runtime import create_step, create_workflow

class Loose(BaseModel):
    value: Any = None

echo = create_step(
    id="echo", input_schema=Loose, output_schema=Loose, execute=lambda c: c.input_data
)
flow = create_workflow(id="flow", input_schema=Loose, output_schema=Loose).then(echo).commit()
"""


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a workflow module and a store, as the current folder."""
    (tmp_path / "hostile_flows.py").write_text(WORKFLOW)
    SQLiteStore(tmp_path / "callboard.db").close()
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own refusals
        code = int(exc.code or 0)
    _, err = capsys.readouterr()
    return code, err


DEEP = '{"value": ' + "[" * 5_000 + "]" * 5_000 + "}"


@pytest.mark.parametrize(
    "given",
    [DEEP, '{"value": 18446744073709551616}', '{"value": "\\ud800"}', '{"value": "a\\udfff"}'],
    ids=["nested-5000", "int-2**64", "escaped-surrogate", "escaped-low-surrogate"],
)
def test_start_with_an_input_no_run_can_hold_is_one_line_and_exit_2(
    place: Path, capsys: pytest.CaptureFixture[str], given: str
) -> None:
    code, err = run_cli(capsys, "start", "hostile_flows:flow", "--input", given, "--wait")

    assert code == 2
    assert err.startswith("callboard: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["start", "hostile_flows:flow", "--run-id", "\udcff\udcfe"],
        ["start", "hostile_flows:flow", "--run-id", ""],
        ["runs", "show", "\udcff"],
        ["runs", "watch", "a\udcfe"],
        ["runs", "list", "--limit", str(10**20)],
        ["runs", "list", "--offset", str(10**20)],
        ["runs", "prune", "--keep", str(10**20)],
        ["runs", "list", "--resource-id", ""],
        ["runs", "list", "--resource-id", "\udcff"],
        ["runs", "list", "--workflow", "\udcff"],
        ["runs", "list", "--workflow", ""],
        ["runs", "list", "--status", ","],
        ["schedules", "pause", "\udcff"],
        ["schedules", "delete", ""],
    ],
    ids=[
        "run-id-bytes",
        "run-id-empty",
        "show-bytes",
        "watch-bytes",
        "limit",
        "offset",
        "keep",
        "resource-id-empty",
        "resource-id-bytes",
        "workflow-bytes",
        "workflow-empty",
        "status-none",
        "schedule-bytes",
        "schedule-empty",
    ],
)
def test_arguments_no_store_can_take_are_refused_with_exit_2(
    place: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, err = run_cli(capsys, *argv)

    assert code == 2
    assert "Traceback" not in err and "error:" in err


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ('{"value": NaN}', "NaN is no JSON value"),
        ('{"value": [1, -Infinity]}', "-Infinity is no JSON value"),
        ('{"value": 1e999}', "the number 1e999 is out of range"),
    ],
    ids=["nan", "minus-infinity", "past-a-float"],
)
@pytest.mark.parametrize("command", ["start", "resume"])
def test_json_python_reads_but_json_has_not_is_refused_not_run_as_null(
    place: Path, capsys: pytest.CaptureFixture[str], given: str, said: str, command: str
) -> None:
    # Python's json reads NaN and Infinity (and 1e999 as inf): the run got null.
    if command == "start":
        argv = ["start", "hostile_flows:flow", "--input", given, "--run-id", "r", "--wait"]
    else:
        argv = ["runs", "resume", "r", "--data", given]
    code, err = run_cli(capsys, *argv)

    assert code == 2, err
    option = "--input" if command == "start" else "--data"
    assert err == f"callboard: error: {option}: {said}" + err[err.index(said) + len(said) :]
    assert err.count("\n") == 1
    with RunReader("callboard.db") as reader:
        assert reader.get_run("r") is None  # nothing was started


LONG_ID = "é" * 600  # 1,200 bytes of UTF-8: longer than any store keeps


@pytest.mark.parametrize(
    ("argv", "what"),
    [
        (["start", "hostile_flows:flow", "--run-id", LONG_ID], "a run id"),
        (["runs", "show", LONG_ID], "a run id"),
        (["runs", "cancel", "x" * 5_000], "a run id"),
        (["runs", "list", "--workflow", LONG_ID], "a workflow id"),
        (["schedules", "pause", LONG_ID], "a schedule id"),
    ],
    ids=["start-run-id", "show", "cancel-ascii", "workflow", "schedule"],
)
def test_an_id_too_long_to_store_is_refused_in_a_short_line_that_says_why(
    place: Path, capsys: pytest.CaptureFixture[str], argv: list[str], what: str
) -> None:
    # It echoed the whole id (a 5,000-character line), and said a run id too long was
    # "not valid UTF-8 text".
    code, err = run_cli(capsys, *argv)

    assert code == 2
    assert err.count("\n") == 1 and len(err) < 400, err
    assert f"characters) is not {what}: it is " in err and "bytes long in UTF-8" in err, err
    assert "not valid UTF-8" not in err


def test_an_error_whose_message_has_line_breaks_is_still_one_line(
    place: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # libpq ends its message with a newline: an empty line followed the error.
    pytest.importorskip("psycopg")
    code, err = run_cli(capsys, "runs", "list", "--db", "postgresql://u:hunter2@[::1/db")

    assert code == 2
    assert err.startswith("callboard: error: not a valid PostgreSQL URL"), err
    assert err.count("\n") == 1 and err.endswith('"\n'), err
    assert "hunter2" not in err

    # The module's own error: its traceback first, then the one line, whole.
    (place / "two_lines.py").write_text('raise ValueError("first line\\n  second line")\n')
    code, err = run_cli(capsys, "start", "two_lines:flow")

    assert code == 2
    assert err.splitlines()[-1] == (
        "callboard: error: importing two_lines raised ValueError: first line second line"
    ), err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
@pytest.mark.parametrize("command", [["runs", "list"], ["runs", "prune", "--keep", "1"]])
def test_a_named_pipe_as_the_store_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    code, err = run_cli(capsys, *command, "--db", str(fifo))

    assert code == 2
    assert "not a regular file" in err


def test_the_real_command_survives_bytes_that_are_not_utf8(place: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "runs", "show", os.fsdecode(b"\xff\xfe")],
        capture_output=True,
        cwd=place,
        env=env,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    assert b"Traceback" not in done.stderr
    assert b"not a run id" in done.stderr


@pytest.mark.parametrize("command", [["runs", "list"], ["worker", "hostile_flows:flow"]])
@pytest.mark.parametrize("url", ["memory://", "mysql://host/db", "redis://localhost:6379"])
def test_a_url_of_another_scheme_is_refused_and_makes_no_file(
    place: Path, capsys: pytest.CaptureFixture[str], command: list[str], url: str
) -> None:
    # Taken for a path, "mysql://host/db" named the file mysql:/host/db (a Path folds
    # its "//"), and a worker made "memory:" in the current folder.
    before = sorted(place.rglob("*"))

    code, err = run_cli(capsys, *command, "--db", url)

    assert code == 2
    assert "unknown store URL scheme" in err and "Traceback" not in err
    assert sorted(place.rglob("*")) == before


@pytest.mark.parametrize("option", ["--db", "--store"])
def test_a_reader_that_goes_away_ends_the_command_quietly_with_141(
    place: Path, option: str
) -> None:
    # `callboard runs list | head`: before, a BrokenPipeError traceback, exit 1.
    from hostile_flows import flow  # type: ignore[import-not-found]

    with Runtime(store=place / "callboard.db") as runtime:
        workflow = runtime.register(flow)
        for _ in range(3):
            workflow.create_run().start(input_data={"value": 1}, timeout=30)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "runtime", "runs", "list", option, "callboard.db"]
    reader = subprocess.Popen(
        command, cwd=place, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.close()  # gone before the first line
    with reader.stderr:
        errors = reader.stderr.read()
    code = reader.wait(60)

    assert code == 141
    assert b"Traceback" not in errors and b"BrokenPipe" not in errors


def test_a_reader_that_goes_away_in_a_large_json_output_ends_the_command_with_141(
    place: Path,
) -> None:
    # The document went in one write: a pipe closed after its first bytes took part of
    # it, the write raised nothing, and the command exited 0 where the table exits 141.
    from hostile_flows import flow

    with Runtime(store=place / "callboard.db") as runtime:
        workflow = runtime.register(flow)
        for _ in range(4):
            workflow.create_run().start(input_data={"value": "x" * 100_000}, timeout=30)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "runtime", "runs", "list", "--json", "--db", "callboard.db"]
    reader = subprocess.Popen(
        command, cwd=place, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert reader.stdout is not None and reader.stderr is not None
    assert reader.stdout.read(100)  # `| head -c 100`
    reader.stdout.close()
    with reader.stderr:
        errors = reader.stderr.read()
    code = reader.wait(60)

    assert code == 141
    assert b"Traceback" not in errors


SUSPENDING = """
from pydantic import BaseModel
from runtime import create_step, create_workflow

class Value(BaseModel):
    value: str

def _ask(ctx):
    if ctx.resume_data is None:
        ctx.suspend({"question": "go on?"})
    return ctx.input_data

ask = create_step(id="ask", input_schema=Value, output_schema=Value, execute=_ask)
asking = create_workflow(id="asking", input_schema=Value, output_schema=Value).then(ask).commit()
"""


@pytest.mark.parametrize(
    "command",
    [
        ["runs", "watch", "r1"],
        ["runs", "watch", "r1", "--json"],
        ["runs", "list", "--follow", "--limit", "1"],
    ],
    ids=["watch", "watch-json", "list-follow"],
)
def test_a_reader_that_goes_away_ends_a_command_that_follows_a_quiet_run_with_141(
    place: Path, command: list[str]
) -> None:
    # `callboard runs watch r1 | head -1` of a suspended run: the command wrote nothing
    # more, so it never met the closed pipe, and waited for ever.
    (place / "suspending_flows.py").write_text(SUSPENDING)
    from suspending_flows import asking  # type: ignore[import-not-found]

    with Runtime(store=place / "callboard.db") as runtime:
        run = runtime.register(asking).create_run("r1")
        assert run.start(input_data={"value": "x"}, timeout=30).status == "suspended"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    follow = [sys.executable, "-m", "runtime", *command, "--interval", "0.1"]
    reader = subprocess.Popen(
        follow, cwd=place, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert reader.stdout is not None and reader.stderr is not None
        assert reader.stdout.readline()  # `| head -1`
        reader.stdout.close()
        code = reader.wait(30)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    with reader.stderr:
        errors = reader.stderr.read()

    assert code == 141, errors
    assert b"Traceback" not in errors


def test_an_empty_db_is_refused_not_taken_for_the_default_store(
    place: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `--db "$DB"` with DB unset fell back to CALLBOARD_DB (or ./callboard.db) and
    # deleted the run there.
    from hostile_flows import flow

    with Runtime(store=place / "callboard.db") as runtime:
        run_id = runtime.register(flow).create_run().start(input_data={}, timeout=30).run_id
    monkeypatch.setenv("CALLBOARD_DB", str(place / "callboard.db"))

    code, err = run_cli(capsys, "runs", "delete", run_id, "--db", "")

    assert code == 2 and "--db is empty" in err
    with Runtime(store=place / "callboard.db") as runtime:
        assert runtime.register(flow).get_workflow_run_by_id(run_id) is not None


TERMINAL_CODES = "\x1b[2J\x1b]0;owned\x07\x9b31m\u202e"
"""Clear the screen, retitle the window, a C1 control sequence, a right-to-left override."""

FAILING = """
from typing import Any
from pydantic import BaseModel
from runtime import create_step, create_workflow

class Loose(BaseModel):
    value: Any = None

def refuse(ctx):
    raise ValueError("bad value " + ctx.input_data.value)

refusing = create_step(id="refuse", input_schema=Loose, output_schema=Loose, execute=refuse)
flow = create_workflow(id="failing", input_schema=Loose, output_schema=Loose).then(refusing)
flow = flow.commit()
"""


@pytest.fixture
def marked(place: Path) -> str:
    """A failed run whose id and error message carry what a terminal would obey."""
    (place / "failing_flows.py").write_text(FAILING)
    from failing_flows import flow  # type: ignore[import-not-found]

    run_id = "order-" + TERMINAL_CODES
    with Runtime(store=place / "callboard.db") as runtime:
        run = runtime.register(flow).create_run(run_id=run_id)
        assert run.start(input_data={"value": TERMINAL_CODES}, timeout=30).status == "failed"
    return run_id


def _obeyed(text: str) -> list[str]:
    return [code for code in ("\x1b", "\x07", "\x9b", "\u202e") if code in text]


def _raw_codes(text: str) -> list[str]:
    """The run's own codes left raw in ``text`` (rich adds escape sequences of its own)."""
    return [code for code in ("\x1b[2J", "\x1b]0;", "\x07", "\x9b", "\u202e") if code in text]


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal"])
@pytest.mark.parametrize(
    "command", [["runs", "list"], ["runs", "show", "RUN"], ["runs", "watch", "RUN"]]
)
def test_what_a_run_holds_cannot_drive_the_operators_terminal(
    marked: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    terminal: bool,
) -> None:
    # Run ids and error messages come from programs and their users. Printed as they
    # were, "\x1b[2J" cleared the operator's screen and "\x1b]0;...\x07" retitled it.
    if terminal:  # rich then writes its own colours: only those escapes may remain
        monkeypatch.setenv("FORCE_COLOR", "1")
        monkeypatch.delenv("NO_COLOR", raising=False)
    argv = [marked if part == "RUN" else part for part in command]

    assert main(argv) == (0 if command[1] == "list" else 1)  # the run failed
    out, err = capsys.readouterr()

    assert "\\x1b[2J" in out and "\\u202e" in out and "\\x9b31m" in out
    assert _raw_codes(out) == [], out
    assert ("\x1b[" in out) == terminal  # rich's own colours and cursor moves, kept there
    assert _obeyed(err) == []


def test_an_error_message_the_command_repeats_cannot_drive_the_terminal(
    place: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The module's own traceback is Python's to print; the command's one-line summary
    # of it repeated the message as it was.
    (place / "refusing_module.py").write_text(
        f"raise RuntimeError({'cannot load ' + TERMINAL_CODES!r})\n"
    )

    code, err = run_cli(capsys, "start", "refusing_module:flow")

    assert code == 2
    summary = [line for line in err.splitlines() if line.startswith("callboard: error:")]
    assert len(summary) == 1 and "cannot load \\x1b[2J" in summary[0], err
    assert _obeyed(summary[0]) == []
