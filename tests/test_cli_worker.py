"""``callboard worker`` and ``callboard workers list``, with the worker in a real process.

A worker runs ``python -m runtime worker ...`` on a SQLite file with the workflows of
``tests/_worker_flows.py``; the test process starts runs on the same file from a runtime
with the role ``client`` and waits for the results the worker's process writes. Every
wait polls against a deadline: nothing here sleeps a fixed time and hopes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime import RunStatus, Runtime, SQLiteStore
from runtime._cli import main
from runtime._cli._commands import shown_db
from tests import _worker_flows as flows
from tests._support import ROOT, wait_for_no_callboard_threads, wait_until

DEADLINE = 10.0
"""Seconds any one thing a test waits for may take, on a loaded machine."""

STARTUP = 30.0
"""Seconds a worker process may take to import callboard and join its store: a hang guard.

Under a load of 15 or more on 2 cores, start-ups past 10 s were seen (and failed tests
that had nothing wrong); a worker that never starts still fails, with its stderr."""

FLOWS = "tests._worker_flows"


class Worker:
    """``callboard worker`` in a process of its own; its stderr is read line by line."""

    def __init__(
        self, db: str, *targets: str, options: tuple[str, ...] = (), under: tuple[str, ...] = ()
    ) -> None:
        self.proc = subprocess.Popen(
            [*under, sys.executable, "-m", "runtime", "worker", *targets, "--db", db, *options],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, within: float = DEADLINE) -> str:
        """The first (next) line of stderr that starts with ``prefix``; fail if none comes."""
        deadline = time.monotonic() + within
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {prefix!r} line within {within} s; stderr: {self.output()}")
            if line is None:
                pytest.fail(f"the worker ended before a {prefix!r} line; stderr: {self.output()}")
            if line.startswith(prefix):
                return line

    def started(self) -> dict[str, str]:
        """The fields of the worker's ``started`` line, once it has joined the store."""
        line = self.expect("callboard worker: started ", STARTUP)
        return dict(field.split("=", 1) for field in line.split()[3:])

    def signal(self, number: int) -> None:
        self.proc.send_signal(number)

    def exit_code(self) -> int:
        try:
            return self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker did not exit within {DEADLINE} s; stderr: {self.output()}")

    def output(self) -> str:
        return "".join(self.stderr)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(DEADLINE)
        self._reader.join(DEADLINE)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file; or, for a test parametrized so, a fresh PostgreSQL database."""
    if getattr(request, "param", "sqlite") == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return str(tmp_path / "runs.db")


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Worker processes a test starts with ``spawn``; any still running at the end is killed."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.close()


def spawn(
    started: list[Worker],
    db: str,
    *targets: str,
    options: tuple[str, ...] = (),
    under: tuple[str, ...] = (),
) -> Worker:
    """A worker process; ``under`` is a command it runs under (``nohup``, which execs it)."""
    worker = Worker(db, *targets, options=options, under=under)
    started.append(worker)
    return worker


@pytest.fixture
def client(db: str) -> Iterator[Runtime]:
    """A runtime with the role ``client`` on ``db``: it starts runs and executes none."""
    runtime = Runtime(store=db, role="client").start()
    try:
        yield runtime
    finally:
        runtime.stop(timeout=5)
    assert not wait_for_no_callboard_threads(), "the client runtime left threads behind"


def listed(capsys: pytest.CaptureFixture[str], db: str) -> list[dict[str, Any]]:
    """What ``callboard workers list --json`` prints."""
    code = main(["workers", "list", "--json", "--db", db])
    out, err = capsys.readouterr()
    assert code == 0, err
    workers: list[dict[str, Any]] = json.loads(out)
    return workers


def cells(line: str) -> list[str]:
    """A table line's cells: rich puts two spaces or more between columns."""
    return [cell.strip() for cell in line.strip().split("  ") if cell.strip()]


def row_of(capsys: pytest.CaptureFixture[str], db: str, pid: int) -> dict[str, Any] | None:
    rows = [row for row in listed(capsys, db) if row["pid"] == pid]
    return rows[0] if rows else None


def status_of(db: str, run_id: str) -> tuple[str, str | None]:
    """A run's stored status and owner, read straight from the file."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
        row = connection.execute(
            "SELECT status, owner_id FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
    assert row is not None, f"no run {run_id!r} in {db}"
    return row[0], row[1]


# --- a worker runs what a client starts ------------------------------------------------------


@pytest.mark.parametrize(
    "db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_worker_runs_the_runs_a_client_starts_and_sigterm_stops_it_with_exit_0(
    db: str, workers: list[Worker], client: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = spawn(workers, db, f"{FLOWS}:greet", f"{FLOWS}:slow", options=("--concurrency", "4"))
    fields = worker.started()
    assert fields["pid"] == str(worker.proc.pid)
    assert fields["workflows"] == "greet,slow"
    assert fields["concurrency"] == "4"

    row = row_of(capsys, db, worker.proc.pid)
    assert row is not None
    assert row["worker_id"] == fields["id"]
    assert (row["role"], row["workflows"], row["concurrency"]) == ("worker", ["greet", "slow"], 4)

    greet = client.register(flows.greet)
    runs = [greet.create_run() for _ in range(3)]
    for index, run in enumerate(runs):
        run.start_async(input_data={"value": f"hello {index}"})
    results = [run.wait(DEADLINE) for run in runs]
    assert [result.status for result in results] == [RunStatus.SUCCESS] * 3
    assert [result.result for result in results] == [{"value": f"HELLO {i}"} for i in range(3)]

    worker.signal(signal.SIGTERM)
    assert worker.exit_code() == 0, worker.output()
    assert (
        worker.expect("callboard worker: stopped") == f"callboard worker: stopped id={fields['id']}"
    )
    assert row_of(capsys, db, worker.proc.pid) is None


def test_a_worker_names_each_of_two_definitions_of_one_workflow(
    db: str, workers: list[Worker]
) -> None:
    # Its started line said "workflows=greet,greet".
    worker = spawn(workers, db, f"{FLOWS}:greet", f"{FLOWS}:also_greet")
    names = worker.started()["workflows"].split(",")
    assert names == [
        f"greet@{flows.greet.plan.fingerprint[:12]}",
        f"greet@{flows.also_greet.plan.fingerprint[:12]}",
    ]
    worker.signal(signal.SIGTERM)
    assert worker.exit_code() == 0, worker.output()


def test_a_worker_with_concurrency_1_holds_one_run_at_a_time(
    db: str, workers: list[Worker], client: Runtime
) -> None:
    worker = spawn(workers, db, f"{FLOWS}:slow", options=("--concurrency", "1"))
    worker_id = worker.started()["id"]
    slow = client.register(flows.slow)
    runs = [slow.create_run() for _ in range(3)]
    for run in runs:
        run.start_async(input_data={"value": "x"})

    held: list[int] = []
    reader = SQLiteStore(db, readonly=True)
    try:
        deadline = time.monotonic() + DEADLINE
        while not all(status_of(db, run.run_id)[0] == "success" for run in runs):
            assert time.monotonic() < deadline, "the runs did not end in time"
            held += [row.held for row in reader.workers() if row.worker_id == worker_id]
            time.sleep(0.02)
    finally:
        reader.close()
    assert max(held) == 1, held

    # The store's count is sampled; the steps' own times say the same for the whole span.
    spans = sorted(
        (step.started_at, step.ended_at)
        for result in (run.wait(DEADLINE) for run in runs)
        for step in result.steps.values()
    )
    assert all(end is not None for _, end in spans)
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))

    worker.signal(signal.SIGTERM)
    assert worker.exit_code() == 0, worker.output()


# --- stopping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stop",
    [
        pytest.param((signal.SIGINT, 130), id="SIGINT"),
        # A closed terminal or a dropped ssh session killed the worker, with no line at all.
        pytest.param((signal.SIGHUP, 0), id="SIGHUP"),
    ],
)
def test_sigint_or_sighup_lets_the_run_in_progress_end_then_exits_and_leaves_the_store(
    stop: tuple[signal.Signals, int],
    db: str,
    workers: list[Worker],
    client: Runtime,
    *,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    worker = spawn(workers, db, f"{FLOWS}:gated")
    worker.started()
    gate = tmp_path / "gate"
    run = client.register(flows.gated).create_run()
    run.start_async(input_data={"value": str(gate)})
    wait_until(lambda: status_of(db, run.run_id)[1] is not None, DEADLINE, "the worker claims")

    number, code = stop
    worker.signal(number)
    worker.expect(f"callboard worker: {number.name}: stopping")
    assert worker.proc.poll() is None  # it waits for the run
    gate.touch()

    assert run.wait(DEADLINE).status == RunStatus.SUCCESS
    assert worker.exit_code() == code, worker.output()
    assert row_of(capsys, db, worker.proc.pid) is None


@pytest.mark.skipif(shutil.which("nohup") is None, reason="no nohup on this machine")
def test_a_worker_under_nohup_outlives_a_sighup(
    db: str, workers: list[Worker], client: Runtime
) -> None:
    worker = spawn(workers, db, f"{FLOWS}:greet", under=("nohup",))
    worker.started()

    worker.signal(signal.SIGHUP)
    # A worker that took the SIGHUP would stop claiming: this run would never end.
    run = client.register(flows.greet).create_run()
    run.start_async(input_data={"value": "still here"})
    assert run.wait(DEADLINE).status == RunStatus.SUCCESS
    assert worker.proc.poll() is None

    worker.signal(signal.SIGTERM)
    assert worker.exit_code() == 0, worker.output()
    assert "SIGHUP" not in worker.output()


def test_a_second_signal_halts_the_run_in_progress_and_hands_it_back_to_the_queue(
    db: str,
    workers: list[Worker],
    client: Runtime,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    worker = spawn(workers, db, f"{FLOWS}:gated", options=("--stop-timeout", "60"))
    worker.started()
    gate = tmp_path / "gate"
    run = client.register(flows.gated).create_run()
    run.start_async(input_data={"value": str(gate)})
    wait_until(lambda: status_of(db, run.run_id)[1] is not None, DEADLINE, "the worker claims")

    worker.signal(signal.SIGINT)
    worker.expect("callboard worker: SIGINT: stopping")
    worker.signal(signal.SIGTERM)
    worker.expect("callboard worker: SIGTERM: halting")

    assert worker.exit_code() == 130, worker.output()  # long before the 60 s stop timeout
    assert status_of(db, run.run_id) == ("running", None)  # unfinished, nobody's: queued
    assert row_of(capsys, db, worker.proc.pid) is None


# --- what a worker refuses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["worker", "tests._no_such_module:flow"], "no module named"),
        (["worker", f"{FLOWS}:Value"], "is not a workflow"),
        (["worker", f"{FLOWS}:greet", f"{FLOWS}:greet_again"], "are both workflow 'greet' with"),
        (["worker", f"{FLOWS}:greet", "--concurrency", "0"], "argument --concurrency"),
        (
            ["worker", f"{FLOWS}:greet", "--lease", "0.1"],
            "--lease: expected a number of seconds from 0.2",
        ),
        (["worker", f"{FLOWS}:greet", "--db", "postgresql://u:secret@h/db"], "callboard[postgres]"),
        (["worker", f"{FLOWS}:greet", "--db", "sqlite://runs.db"], "--db: a SQLite URL is"),
        (["worker"], "the following arguments are required: MODULE:ATTR"),
    ],
    ids=[
        "no-module",
        "not-a-workflow",
        "duplicate-id",
        "concurrency-0",
        "short-lease",
        "postgres",
        "bad-url",
        "no-workflow",
    ],
)
def test_a_worker_refuses_bad_input_in_one_line_with_exit_2_and_leaves_nothing_running(
    db: str,
    argv: list[str],
    said: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the extra were not installed
    if "--db" not in argv:
        argv = [*argv, "--db", db]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and said in err, err
    assert "secret" not in err
    assert not wait_for_no_callboard_threads()


def test_a_worker_on_a_store_it_cannot_open_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["worker", f"{FLOWS}:greet", "--db", str(tmp_path)])  # a directory
    _, err = capsys.readouterr()
    assert code == 2
    assert err == f"callboard: error: cannot use {tmp_path} as a run store: it is a directory\n"
    assert not wait_for_no_callboard_threads()


def test_the_real_worker_command_refuses_a_bad_concurrency_at_once(
    db: str, workers: list[Worker]
) -> None:
    worker = spawn(workers, db, f"{FLOWS}:greet", options=("--concurrency", "0"))
    assert worker.exit_code() == 2
    worker.close()
    assert worker.output().startswith("callboard worker: error: argument --concurrency")
    assert worker.output().count("\n") == 1
    assert not Path(db).exists()


@pytest.mark.parametrize("concurrency", ["2147483648", str(2**63 - 1)])
def test_a_concurrency_above_what_a_store_keeps_is_a_usage_error_in_one_line(
    db: str, capsys: pytest.CaptureFixture[str], concurrency: str
) -> None:
    # The runtime refuses more than 2**31 - 1 (a worker's capacity is a PostgreSQL integer).
    code = main(["worker", f"{FLOWS}:greet", "--db", db, "--concurrency", concurrency])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith(
        "callboard worker: error: argument --concurrency: "
        "expected a whole number from 1 to 2,147,483,647"
    )
    assert err.count("\n") == 1
    assert not Path(db).exists()


# --- workers list ------------------------------------------------------------------------------


def test_workers_list_shows_each_runtime_on_the_store_as_a_table(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Runtime(store=db, max_concurrent_runs=3) as runtime:
        runtime.register(flows.greet)
        runtime.register(flows.slow)
        code = main(["workers", "list", "--db", db])
        out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    header, rule, row = (cells(line) for line in lines[:3])
    assert header == [
        "WORKER ID",
        "HOST",
        "PID",
        "ROLE",
        "WORKFLOWS",
        "CONCURRENCY",
        "HEARTBEAT",
        "HELD",
        "STARTED",
    ]
    assert set(rule[0]) == {"─"}
    fields = dict(zip(header, row, strict=True))
    assert fields["PID"] == str(os.getpid())
    assert (fields["ROLE"], fields["WORKFLOWS"], fields["CONCURRENCY"]) == (
        "both",
        "greet, slow",
        "3",
    )
    assert fields["HEARTBEAT"].endswith(" s ago")
    assert fields["HELD"] == "0"
    assert lines[-1] == "1 worker, holding 0 runs"


def test_workers_list_marks_a_worker_past_its_lease_as_expired(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A killed worker showed as alive, holding its runs, however long ago it last beat.
    with Runtime(store=SQLiteStore(db, lease=3600.0)) as runtime:
        runtime.register(flows.greet)
        # Its last heartbeat two hours ago.
        with contextlib.closing(sqlite3.connect(db)) as raw, raw:
            raw.execute("UPDATE owners SET heartbeat_at = heartbeat_at - 7200")
        [worker] = listed(capsys, db)
        code = main(["workers", "list", "--db", db])
        out, err = capsys.readouterr()
    assert (worker["lease"], worker["expired"]) == (3600.0, True)
    assert code == 0, err
    assert "lease (3600.0 s) expired" in out


def test_workers_list_of_a_store_without_workers_is_empty_with_exit_0(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    SQLiteStore(db).close()  # its one worker row leaves with it
    assert listed(capsys, db) == []
    assert main(["workers", "list", "--db", db]) == 0
    assert capsys.readouterr().out == "no workers\n"


def test_workers_list_of_a_store_from_before_worker_rows_is_empty_with_exit_0(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Schema version 1: owners had no role, workflows.
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.executescript(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, "
            "status TEXT NOT NULL, seq INTEGER NOT NULL, created_at REAL NOT NULL, "
            "updated_at REAL NOT NULL, trace_id TEXT NOT NULL, owner_id TEXT, "
            "snapshot BLOB NOT NULL);"
            "CREATE TABLE owners (owner_id TEXT PRIMARY KEY, host TEXT NOT NULL, "
            "pid INTEGER NOT NULL, heartbeat_at REAL NOT NULL);"
            "INSERT INTO owners VALUES ('old', 'host', 1, 0);"
            "PRAGMA user_version = 1;"
        )
        connection.commit()
    assert listed(capsys, db) == []
    with contextlib.closing(sqlite3.connect(db)) as connection:  # read, not migrated
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 1


def test_workers_list_of_a_missing_store_exits_2_and_creates_nothing(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["workers", "list", "--db", db]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not Path(db).exists()


# --- the store's location ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["runs", "list"],
        ["runs", "show", "r"],
        ["workers", "list"],
        ["start", f"{FLOWS}:greet", "--input", '{"value": "x"}'],
    ],
)
def test_every_command_says_a_postgresql_url_needs_the_extra_without_showing_the_password(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CALLBOARD_DB", "postgres://ada:secret@db.example/runs")
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the extra were not installed
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "pip install 'callboard[postgres]'" in err
    assert "secret" not in err


def test_a_store_url_is_shown_without_its_password() -> None:
    assert shown_db("runs.db") == "runs.db"
    assert shown_db("sqlite:////var/lib/runs.db") == "sqlite:////var/lib/runs.db"
    assert shown_db("postgresql://ada:secret@db:5432/runs") == "postgresql://ada:***@db:5432/runs"
    assert (
        shown_db("postgresql://db/runs?user=ada&password=secret&sslmode=require")
        == "postgresql://db/runs?user=ada&password=***&sslmode=require"
    )
    assert shown_db("postgresql://ada:secret@[db/runs") == "postgresql://..."
    # The pass phrase of the client's SSL key was shown as it was.
    assert (
        shown_db("postgresql://ada@db/runs?sslmode=verify-full&sslpassword=k3y&Password=pw")
        == "postgresql://ada@db/runs?sslmode=verify-full&sslpassword=***&Password=***"
    )


def _probe(url: str, method: str = "GET") -> tuple[int, dict[str, Any] | None]:
    """The status of a health probe, and its JSON (``None`` for a body-less HEAD)."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            status, body = answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        status, body = refused.code, refused.read()
    return status, (json.loads(body) if body else None)


def test_a_worker_answers_health_probes_over_http_and_lets_the_port_go_when_it_stops(
    tmp_path: Path, workers: list[Worker]
) -> None:
    db = str(tmp_path / "runs.db")
    options = ("--health-port", "0", "--health-host", "127.0.0.1", "--lease", "0.5")
    worker = spawn(workers, db, f"{FLOWS}:greet", options=options)
    url = worker.started()["health"]
    assert url.startswith("http://127.0.0.1:")
    for path in ("/livez", "/readyz", "/healthz"):
        status, health = _probe(url + path)
        assert status == 200, (path, health)
        assert health is not None and (health["state"], health["live"], health["ready"]) == (
            "running",
            True,
            True,
        )
    assert _probe(url + "/livez", "HEAD") == (200, None)
    assert _probe(url + "/metrics")[0] == 404
    # Another process holds the file's write lock: the worker's lease lapses, it is not
    # ready (503, saying why), and still live; ready again once the lock goes.
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        wait_until(lambda: _probe(url + "/readyz")[0] == 503, timeout=30, what="503")
        status, health = _probe(url + "/readyz")
        assert health is not None and not health["ready"] and health["live"]
        assert any("past its lease" in problem for problem in health["problems"])
        assert _probe(url + "/livez")[0] == 200
        other.execute("ROLLBACK")
    wait_until(lambda: _probe(url + "/readyz")[0] == 200, timeout=30, what="200 again")
    worker.signal(signal.SIGTERM)
    assert worker.exit_code() == 0, worker.output()
    with pytest.raises(urllib.error.URLError):
        _probe(url + "/livez")


def test_a_health_port_in_use_is_a_usage_error_before_anything_starts(
    tmp_path: Path, workers: list[Worker]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        options = ("--health-port", str(port), "--health-host", "127.0.0.1")
        worker = spawn(workers, str(tmp_path / "runs.db"), f"{FLOWS}:greet", options=options)
        assert worker.exit_code() == 2
    said = worker.output()
    assert f"--health-port: cannot listen on 127.0.0.1:{port}" in said, said
    assert "started" not in said
    out_of_range = ["worker", f"{FLOWS}:greet", "--db", str(tmp_path / "x.db")]
    assert main([*out_of_range, "--health-port", "70000"]) == 2
    assert not (tmp_path / "x.db").exists()
