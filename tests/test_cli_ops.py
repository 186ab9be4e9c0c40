"""What an operator meets at the ``callboard`` command: a mistyped ``--db``, odd numbers,
``--json`` everywhere, and ids with control characters in them.

- The commands that write refuse a location with no run store, as the reading commands
  do, and create none (a SQLite file; the tables in a PostgreSQL database). ``--db
  memory`` is refused: ``Runtime(store="memory")`` is a store of one process.
- ``--interval`` and ``--lease`` take a finite number of seconds, at most a day;
  a timeout may be ``inf`` (no limit), never NaN.
- ``runs resume --definition M:A --json`` keeps standard output for the JSON.
- ``schedules pause|resume|delete`` take ``--json``.
- Control characters in run ids are shown escaped, never dropped: ``order-1\\r`` and
  ``order-1`` are two rows that read differently.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from runtime import Runtime, SQLiteStore, StoreUnavailableError
from runtime._cli import _actions, _commands, main
from tests._support import importable_flows
from tests.actors.test_registry import record

WAIT = 10.0

FLOWS = textwrap.dedent(
    """
    from pydantic import BaseModel

    from runtime import create_step, create_workflow

    print("the flows module says hello at import")


    class Value(BaseModel):
        value: str


    class Answer(BaseModel):
        answer: str


    def _ask(ctx):
        if ctx.resume_data is None:
            ctx.suspend({"question": "go on?"})
        return Value(value=f"{ctx.input_data.value}: {ctx.resume_data.answer}")


    ask = create_step(
        id="ask", input_schema=Value, output_schema=Value, resume_schema=Answer, execute=_ask
    )
    approval = create_workflow(id="approval", input_schema=Value, output_schema=Value)
    approval = approval.then(ask).commit()


    def _shout(ctx):
        return Value(value=ctx.input_data.value.upper())


    shout = create_step(id="shout", input_schema=Value, output_schema=Value, execute=_shout)
    quick = create_workflow(id="quick", input_schema=Value, output_schema=Value)
    quick = quick.then(shout).commit()
    """
)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "runs.db")


@pytest.fixture
def flows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, ModuleType]]:
    """A fresh module of workflows in the current folder: its name and the module."""
    yield from importable_flows(tmp_path, monkeypatch, FLOWS, "ops_flows")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # what came before the command is not its output
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def suspended_run(db: str, module: ModuleType, run_id: str = "r1") -> None:
    with Runtime(store=db) as rt:
        result = (
            rt.register(module.approval)
            .create_run(run_id)
            .start(input_data={"value": "post"}, timeout=WAIT)
        )
    assert result.status == "suspended"


@pytest.fixture
def suspended(db: str, flows: tuple[str, ModuleType]) -> str:
    """A store holding one suspended run, ``r1``: a watch of it goes on for ever."""
    suspended_run(db, flows[1])
    return db


def ended_runs(db: str, module: ModuleType, *run_ids: str) -> None:
    with Runtime(store=db) as rt:
        quick = rt.register(module.quick)
        for run_id in run_ids:
            result = quick.create_run(run_id).start(input_data={"value": "v"}, timeout=WAIT)
            assert result.status == "success"


# --- no store at --db: nothing created ----------------------------------------------------

WRITING_COMMANDS = [
    pytest.param(["runs", "cancel", "x"], id="runs-cancel"),
    pytest.param(["runs", "delete", "x"], id="runs-delete"),
    pytest.param(["runs", "resume", "x", "--data", "{}"], id="runs-resume"),
    pytest.param(["schedules", "pause", "s"], id="schedules-pause"),
    pytest.param(["schedules", "resume", "s"], id="schedules-resume"),
    pytest.param(["schedules", "delete", "s"], id="schedules-delete"),
]


@pytest.mark.parametrize("argv", WRITING_COMMANDS)
def test_a_writing_command_on_a_mistyped_sqlite_db_says_there_is_no_store_and_creates_none(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "typo.db"

    code, out, err = cli(capsys, *argv, "--db", str(typo))

    assert code == 2, err
    assert out == ""
    assert err.count("\n") == 1
    assert f"no run store at {typo}" in err and "--db" in err
    assert list(tmp_path.iterdir()) == []  # neither the file nor its -wal and -shm
    # The same line as a reading command's.
    assert cli(capsys, "runs", "list", "--db", str(typo))[2] == err


@pytest.mark.parametrize(
    "argv",
    [
        *WRITING_COMMANDS,
        pytest.param(["runs", "list"], id="runs-list"),
        pytest.param(["start", "{flows}:quick", "--input", '{"value": "v"}'], id="start"),
        pytest.param(["worker", "{flows}:quick"], id="worker"),
    ],
)
def test_db_memory_is_refused_as_a_store_no_command_can_reach_and_no_file_is_made(
    argv: list[str],
    flows: tuple[str, ModuleType],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``Runtime(store="memory")`` names a memory store; ``--db memory`` made a file ``memory``."""
    before = set(tmp_path.iterdir())

    argv = [arg.replace("{flows}", flows[0]) for arg in argv]
    code, out, err = cli(capsys, *argv, "--db", "memory")

    assert code == 2, err
    assert out == ""
    assert "--db memory: a memory store" in err and "./memory" in err
    assert set(tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    "argv",
    [
        *WRITING_COMMANDS,
        pytest.param(["runs", "list"], id="runs-list"),
        pytest.param(["start", "{flows}:quick", "--input", '{"value": "v"}'], id="start"),
        pytest.param(["worker", "{flows}:quick"], id="worker"),
    ],
)
def test_a_postgresql_connection_string_of_keywords_is_refused_unshown_and_makes_no_file(
    argv: list[str],
    flows: tuple[str, ModuleType],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # psql's form was taken for a file name: runs list said "no run store at
    # /cwd/host=db ... password=hunter2 ...", and start made a SQLite file so named.
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.iterdir())

    argv = [arg.replace("{flows}", flows[0]) for arg in argv]
    dsn = "host=db.example port=5432 user=ada password=hunter2 dbname=runs"
    code, out, err = cli(capsys, *argv, "--db", dsn)

    assert code == 2, err
    assert out == "" and err.count("\n") == 1
    assert "connection string" in err and "postgresql://" in err
    assert "hunter2" not in err
    assert set(tmp_path.iterdir()) == before


@pytest.mark.postgres
@pytest.mark.parametrize("argv", WRITING_COMMANDS)
def test_a_writing_command_on_a_postgresql_database_without_the_schema_creates_no_tables(
    argv: list[str], postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, *argv, "--db", postgres_url)

    assert code == 2, err
    assert out == ""
    assert "has no callboard schema" in err
    # Still none: a reading command says so again (with tables it would list no runs).
    code, _out, again = cli(capsys, "runs", "list", "--db", postgres_url)
    assert code == 2 and again == err


def test_a_writing_command_on_an_existing_store_still_acts_on_it(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    suspended_run(db, flows[1])

    assert cli(capsys, "runs", "delete", "nope", "--db", db)[0] == 3
    assert cli(capsys, "schedules", "pause", "nope", "--db", db)[0] == 3
    assert cli(capsys, "runs", "cancel", "r1", "--db", db)[0] == 0
    assert cli(capsys, "runs", "delete", "r1", "--db", db)[0] == 0


# --- numbers: finite intervals and leases, timeouts that may be inf ------------------------


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e12", "86400.5", "1e400", "0"])
@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["runs", "watch", "r1", "--interval"], id="watch"),
        pytest.param(["runs", "watch", "r1", "--json", "--interval"], id="watch-json"),
        pytest.param(["runs", "list", "--follow", "--interval"], id="list-follow"),
        pytest.param(["worker", "no_such_module_here:flow", "--lease"], id="worker"),
    ],
)
def test_an_interval_or_a_lease_that_is_not_a_finite_number_up_to_a_day_is_a_usage_error(
    argv: list[str],
    value: str,
    suspended: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Taken, the value reached time.sleep, which overflowed (inf, 1e12) with a
    # traceback; here the first sleep ends the command instead, with another code.
    monkeypatch.setattr(_commands, "_sleep", _interrupt)
    monkeypatch.setattr(_actions, "_sleep", _interrupt)

    code, out, err = cli(capsys, *argv[:-1], f"{argv[-1]}={value}", "--db", suspended)

    assert code == 2, err
    assert out == ""
    assert err.count("\n") == 1
    least = "from 0.2 to" if argv[-1] == "--lease" else "above 0 and at most"  # the store's
    assert f"argument {argv[-1]}: expected a number of seconds {least} 86400" in err
    assert repr(value) in err


def _interrupt(seconds: float) -> None:
    raise KeyboardInterrupt


def test_an_interval_of_a_day_is_taken(
    db: str,
    flows: tuple[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    suspended_run(db, flows[1])
    slept: list[float] = []

    def pause(seconds: float) -> None:
        slept.append(seconds)
        raise KeyboardInterrupt

    monkeypatch.setattr(_commands, "_sleep", pause)

    code, _out, err = cli(capsys, "runs", "watch", "r1", "--interval", "86400", "--db", db)

    assert code == 130, err
    assert slept == [86400.0]


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["runs", "cancel", "r1", "--timeout"], id="cancel"),
        pytest.param(["start", "no_such_module_here:flow", "--timeout"], id="start"),
        pytest.param(["worker", "no_such_module_here:flow", "--stop-timeout"], id="worker"),
    ],
)
def test_a_timeout_may_not_be_nan(
    argv: list[str], db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = cli(capsys, *argv, "nan", "--db", db)

    assert code == 2
    assert f"argument {argv[-1]}: expected a number of seconds" in err and "'nan'" in err


def test_a_cancel_timeout_of_inf_waits_without_limit_and_cancels(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    suspended_run(db, flows[1])

    code, out, err = cli(capsys, "runs", "cancel", "r1", "--timeout", "inf", "--db", db, "--json")

    assert code == 0, err
    assert json.loads(out) == {"run_id": "r1", "canceled": True, "status": "canceled"}


def test_a_start_timeout_of_inf_runs_the_run_to_its_end(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    name, _module = flows

    code, out, err = cli(
        capsys,
        "start", f"{name}:quick", "--input", '{"value": "a"}', "--timeout", "inf",
        "--wait", "--json", "--db", db,
    )  # fmt: skip

    assert code == 0, err
    assert json.loads(out)["status"] == "success"


# --- runs resume --json: only JSON on stdout ----------------------------------------------


def test_runs_resume_with_a_definition_and_json_keeps_the_modules_output_off_stdout(
    db: str, flows: tuple[str, ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, module = flows
    suspended_run(db, module)

    # The path form imports the module afresh, so its print at import runs again.
    code, out, err = cli(
        capsys,
        "runs", "resume", "r1", "--data", '{"answer": "yes"}',
        "--definition", f"{tmp_path / name}.py:approval", "--json", "--db", db,
    )  # fmt: skip

    assert code == 0, err
    assert json.loads(out) == {
        "run_id": "r1", "resumed": "ask", "status": "running", "requested": False
    }  # fmt: skip
    assert "the flows module says hello at import" in err


def test_runs_resume_with_a_definition_without_json_still_prints_to_stdout(
    db: str, flows: tuple[str, ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, module = flows
    suspended_run(db, module)

    code, out, err = cli(
        capsys,
        "runs", "resume", "r1", "--data", '{"answer": "yes"}',
        "--definition", f"{tmp_path / name}.py:approval", "--db", db,
    )  # fmt: skip

    assert code == 0, err
    assert "the flows module says hello at import" in out
    assert "resumed run r1 at ask" in out


# --- schedules pause|resume|delete --json -------------------------------------------------


def test_schedules_pause_resume_and_delete_print_one_json_object_each(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    with Runtime(store=db, role="client") as rt:
        rt.schedule(
            flows[1].quick, cron="*/5 * * * *", input_data={"value": "x"}, schedule_id="five"
        )

    def listed() -> bool:
        code, out, _err = cli(capsys, "schedules", "list", "--db", db, "--json")
        assert code == 0
        [schedule] = json.loads(out)
        paused: bool = schedule["paused"]
        return paused

    code, out, err = cli(capsys, "schedules", "pause", "five", "--json", "--db", db)
    assert code == 0, err
    assert json.loads(out) == {"schedule_id": "five", "paused": True}
    assert listed()

    code, out, err = cli(capsys, "schedules", "resume", "five", "--json", "--db", db)
    assert code == 0, err
    assert json.loads(out) == {"schedule_id": "five", "paused": False}
    assert not listed()

    code, out, err = cli(capsys, "schedules", "delete", "five", "--json", "--db", db)
    assert code == 0, err
    assert json.loads(out) == {"schedule_id": "five", "deleted": True}

    code, out, err = cli(capsys, "schedules", "delete", "five", "--json", "--db", db)
    assert code == 3
    assert out == "" and f"no schedule 'five' in {db}" in err  # which store, as runs say


# --- control characters: escaped, never dropped -------------------------------------------


def test_runs_list_shows_a_run_id_ending_in_a_carriage_return_apart_from_the_one_without(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    ended_runs(db, flows[1], "order-1\r", "order-1")

    code, out, err = cli(capsys, "runs", "list", "--db", db)

    assert code == 0, err
    rows = [line.split()[0] for line in out.splitlines() if line.startswith(" order-1")]
    assert sorted(rows) == ["order-1", "order-1\\x0d"]
    assert "\r" not in out


@pytest.mark.parametrize("control", ["\x07", "\x08", "\x0b", "\x0c", "\r", "\x1b"])
def test_each_control_character_in_a_run_id_is_shown_escaped_in_every_view(
    control: str,
    db: str,
    flows: tuple[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = f"order{control}1"
    escaped = f"order\\x{ord(control):02x}1"
    suspended_run(db, flows[1], run_id)

    monkeypatch.setattr(_actions, "_sleep", _interrupt)  # --follow: one look
    outputs = [
        cli(capsys, "runs", "list", "--db", db),
        cli(capsys, "runs", "show", run_id, "--db", db),
        cli(capsys, "runs", "list", "--follow", "--db", db),
        cli(capsys, "runs", "cancel", run_id, "--db", db),
    ]

    for code, out, err in outputs:
        assert code in (0, 130), err
        assert escaped in out, out
        assert control not in out
    assert "canceled run " + escaped in outputs[-1][1]


@pytest.mark.parametrize("control", ["\n", "\t"])
def test_a_newline_or_a_tab_in_a_run_id_is_shown_escaped_and_makes_no_row_of_its_own(
    control: str,
    db: str,
    flows: tuple[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "order\n fake  approval  success" printed a second row that read as another run.
    run_id = f"order{control} fake  approval  success"
    escaped = f"order\\x{ord(control):02x} fake"
    suspended_run(db, flows[1], run_id)

    monkeypatch.setattr(_actions, "_sleep", _interrupt)  # --follow, watch: one look
    monkeypatch.setattr(_commands, "_sleep", _interrupt)
    outputs = [
        cli(capsys, "runs", "list", "--db", db),
        cli(capsys, "runs", "show", run_id, "--db", db),
        cli(capsys, "runs", "watch", run_id, "--db", db),
        cli(capsys, "runs", "list", "--follow", "--db", db),
        cli(capsys, "runs", "cancel", run_id, "--db", db),
    ]

    for code, out, err in outputs:
        assert code in (0, 130), err
        assert escaped in out, out
        assert not any(line.lstrip().startswith("fake") for line in out.splitlines()), out
        assert "\t" not in out
    assert "canceled run " + escaped in outputs[-1][1]


def test_runs_show_escapes_the_run_id_rich_would_drop(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    ended_runs(db, flows[1], "order-1\r", "order-1")

    shown = cli(capsys, "runs", "show", "order-1\r", "--db", db)[1]
    plain = cli(capsys, "runs", "show", "order-1", "--db", db)[1]

    assert "run       order-1\\x0d\n" in shown
    assert "run       order-1\n" in plain


# --- cancels an operator needs to go through ---------------------------------------------


def test_a_suspended_run_whose_snapshot_cannot_be_read_is_canceled_and_then_deleted(
    capsys: pytest.CaptureFixture[str], suspended: str
) -> None:
    # Nobody can resume it or run it on: without a cancel it would stay for ever, and
    # a delete refuses a run that has not ended.
    with contextlib.closing(sqlite3.connect(suspended)) as connection, connection:
        (blob,) = connection.execute("SELECT snapshot FROM runs WHERE run_id = 'r1'").fetchone()
        damaged = bytes([blob[0], blob[1] ^ 0x10, *blob[2:]])
        connection.execute("UPDATE runs SET snapshot = ? WHERE run_id = 'r1'", (damaged,))
    code, out, _ = cli(capsys, "runs", "cancel", "r1", "--db", suspended, "--json")
    assert code == 0, out
    assert json.loads(out) == {"run_id": "r1", "canceled": True, "status": "canceled"}
    _, out, _ = cli(capsys, "runs", "show", "r1", "--db", suspended, "--json")
    assert json.loads(out)["status"] == "canceled"
    assert cli(capsys, "runs", "delete", "r1", "--db", suspended)[0] == 0


def test_a_run_held_by_a_worker_that_died_is_canceled_once_its_lease_has_run_out(
    capsys: pytest.CaptureFixture[str], db: str
) -> None:
    # Nobody drives it: no runtime looks for dead workers, so the cancel does.
    dead = SQLiteStore(db, lease=0.2)
    dead.create(record("r1", 0, "running"))  # held by it
    dead.abandon()  # as a killed process leaves it: its row, its run
    time.sleep(0.3)
    code, out, err = cli(capsys, "runs", "cancel", "r1", "--db", db, "--timeout", "5", "--json")
    assert code == 0, err
    assert json.loads(out) == {"run_id": "r1", "canceled": True, "status": "canceled"}


# --- a store that cannot be reached for a while ----------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["runs", "watch", "done"], id="watch"),
        pytest.param(["runs", "watch", "done", "--json"], id="watch-json"),
    ],
)
def test_following_a_run_reads_again_while_the_store_is_unavailable(
    capsys: pytest.CaptureFixture[str],
    db: str,
    flows: tuple[str, ModuleType],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
) -> None:
    # A PostgreSQL restart under `runs watch` (as `watch()` in the API does, it waits
    # the outage out): two reads fail for now, then the store answers.
    ended_runs(db, flows[1], "done")
    failures = [StoreUnavailableError("the server is restarting")] * 2

    def failing(name: str) -> Any:  # the text reads a run with its time limit
        real = getattr(_commands._Reader, name)

        def read(self: Any, run_id: str) -> Any:
            if failures:
                raise failures.pop()
            return real(self, run_id)

        return read

    for name in ("get_run", "get_run_and_limit"):
        monkeypatch.setattr(_commands._Reader, name, failing(name))
    monkeypatch.setattr(_commands, "_sleep", lambda _seconds: None)
    code, out, err = cli(capsys, *argv, "--db", db)
    assert code == 0, err
    assert "the server is restarting; reading again until it answers" in err
    assert err.count("reading again") == 1  # said once
    assert "success" in out
