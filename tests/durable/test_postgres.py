"""The PostgreSQL store itself: bad input, its schema, lost connections, locks, its clock."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import runtime._stores.postgres as postgres_module
from runtime import (
    QueueFullError,
    Runtime,
    StoreError,
    StoreUnavailableError,
    create_step,
    create_workflow,
)
from runtime._cli._commands import shown_db
from runtime._queue import QueueLimits
from runtime._stores.base import SnapshotRecord
from runtime._stores.memory import MemoryStore
from runtime._stores.open import open_store
from runtime._stores.postgres import SCHEMA_VERSION, PostgresStore, _scrubbed, _secrets, redact
from runtime._stores.schedules import ScheduleRow, book_for, close_book
from runtime._stores.sqlite import SQLiteStore
from tests import _worker_flows as flows
from tests._postgres import PASSWORD, Server, free_port
from tests._support import wait_for_no_callboard_threads, wait_until
from tests.durable._support.workflows import both_items_approved, items_waiting


@pytest.fixture(autouse=True)
def snapshot_encoding() -> str:
    """These tests run once, not once per encoding (see ``tests/durable/conftest.py``).

    They hand the store records made by hand: no run actor or child process encodes a
    snapshot here.
    """
    return "by-hand"


def rec(run_id: str, seq: int = 0, status: str = "pending", **fields: Any) -> SnapshotRecord:
    values: dict[str, Any] = {
        "run_id": run_id,
        "workflow_id": "wf",
        "seq": seq,
        "status": status,
        "data": f"{run_id}:{seq}".encode(),
        "created_at": 1_700_000_000.0,
        "updated_at": 1_700_000_000.0 + seq,
        "trace_id": "ef" * 16,
    }
    values.update(fields)
    return SnapshotRecord(**values)


@pytest.fixture
def stores(postgres_url: str) -> Iterator[Callable[..., PostgresStore]]:
    """Opens stores on the test's database; closes them afterwards."""
    opened: list[PostgresStore] = []

    def open_(url: str | None = None, **options: Any) -> PostgresStore:
        store = PostgresStore(url or postgres_url, **options)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()
    assert not wait_for_no_callboard_threads()


def sql(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(query, params or None)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def callboard_connections(url: str) -> int:
    rows = sql(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'callboard %' "
        "AND pid <> pg_backend_pid()",
    )
    return int(rows[0][0])


def refused(open_: Callable[[], object], *fragments: str) -> StoreError:
    """Opening fails with a StoreError saying each fragment, and leaves no thread behind."""
    before = set(threading.enumerate())
    with pytest.raises(StoreError) as caught:
        open_()
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert set(threading.enumerate()) <= before
    return caught.value


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["mysql://host/db", "sqlite:///x.db", "host=localhost", ""])
def test_a_url_that_is_not_postgresql_is_refused(url: str) -> None:
    refused(lambda: PostgresStore(url), "postgresql://")


def test_an_unreachable_server_is_a_store_error(postgres_server: Server) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    error = refused(lambda: PostgresStore(url), "cannot connect", "refused")
    assert "127.0.0.1" in str(error)


def test_a_database_that_does_not_exist_is_a_store_error(postgres_server: Server) -> None:
    refused(lambda: PostgresStore(postgres_server.url("no_such_db")), "no_such_db", "not exist")


def test_an_authentication_failure_is_a_store_error_that_never_shows_the_password(
    postgres_server: Server,
) -> None:
    if postgres_server.external is not None:
        pytest.skip("the external server's authentication is not ours to set up")
    url = postgres_server.password_url("wrong-secret-123")
    error = refused(lambda: PostgresStore(url), "password authentication failed")
    assert "wrong-secret-123" not in str(error)
    assert "***" in str(error)


@pytest.mark.parametrize("encoding", ["SQL_ASCII", "LATIN1"])
def test_a_database_not_in_utf8_is_refused_at_the_open_naming_its_encoding(
    postgres_server: Server, encoding: str
) -> None:
    # SQL_ASCII (initdb's default under LANG=C): every text came back as bytes and no run
    # could be read; LATIN1: a workflow id outside it stopped every claim of the runtime.
    name = f"callboard_enc_{encoding.lower()}_{os.getpid()}"
    with postgres_server.admin() as admin:
        admin.execute(
            f"CREATE DATABASE {name} TEMPLATE template0 ENCODING '{encoding}' "
            "LC_COLLATE 'C' LC_CTYPE 'C'"
        )
    try:
        error = refused(lambda: PostgresStore(postgres_server.url(name)), "needs a UTF8 database")
        assert f"has encoding {encoding}" in str(error)
    finally:
        with postgres_server.admin() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_text_goes_as_utf8_whatever_the_client_encoding_in_the_environment(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGCLIENTENCODING", "LATIN1")
    with Runtime(store=postgres_url) as rt:
        fancy = (
            create_workflow(id="fancy-✓", input_schema=flows.Value, output_schema=flows.Value)
            .then(flows.shout)
            .commit()
        )
        result = (
            rt.register(fancy)
            .create_run(run_id="run-✓")
            .start(input_data={"value": "é✓"}, timeout=30)
        )
        assert result.status == "success", result.error
        assert result.run_id == "run-✓"


def test_the_password_shows_in_no_repr(postgres_server: Server, postgres_url: str) -> None:
    if postgres_server.external is not None:
        pytest.skip("the external server's authentication is not ours to set up")
    PostgresStore(postgres_url).close()
    sql(postgres_url, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO callboard_pw")
    dbname = postgres_url.split("?", maxsplit=1)[0].rsplit("/", 1)[1]
    store = PostgresStore(postgres_server.password_url(PASSWORD, dbname), readonly=True)
    try:
        assert PASSWORD not in repr(store)
        assert PASSWORD not in store.location
        assert "***" in repr(store)
        assert store.load("nobody") is None
    finally:
        store.close()


def test_redact_hides_a_password_in_the_user_part_or_the_query() -> None:
    assert redact("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact("postgres://u@h/db?password=pw&sslmode=require") == (
        "postgres://u@h/db?password=***&sslmode=require"
    )
    assert redact("postgresql:///db?host=/tmp") == "postgresql:///db?host=/tmp"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # libpq ends the user info at the first '@' and the host at the first '/'.
        ("postgresql://ada:s3cr@Tail9@h:5/db", "postgresql://ada:***@h:5/db"),
        ("postgresql://ada:s3cr/Tail9@h/db", "postgresql://ada:***@h/db"),
        ("postgresql://ada:k7?Zq9x@h/db", "postgresql://ada:***@h/db"),
        ("postgresql://ada:k7#Zq9x@h/db", "postgresql://ada:***@h/db"),
        # An '@' in a query value leaves the rest alone.
        (
            "postgresql://ada@h:5/db?application_name=a@b",
            "postgresql://ada@h:5/db?application_name=a@b",
        ),
        (
            "postgresql://ada:pw@h:5/db?application_name=a@b",
            "postgresql://ada:***@h:5/db?application_name=a@b",
        ),
    ],
)
def test_redact_hides_a_password_with_unencoded_url_characters_whole(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert shown_db(url) == shown


@pytest.mark.parametrize(
    "url",
    ["postgresql://ada:s3cr@Tail9@127.0.0.1:1/db", "postgresql://ada:s3cr/Tail9@127.0.0.1:1/db"],
)
def test_a_password_with_an_unencoded_at_or_slash_is_refused_without_showing_any_of_it(
    url: str,
) -> None:
    # libpq took "Tail9@127.0.0.1" for the host, and said so: "could not translate host name".
    error = refused(lambda: PostgresStore(url), "not percent-encoded", "%40")
    assert "s3cr" not in str(error) and "Tail9" not in str(error)


def test_an_error_message_shows_no_piece_of_the_password() -> None:
    secrets = _secrets("postgresql://ada:k7?Zq9x@h/db", {})
    message = 'invalid port "k7" near "Zq9x@h/db"'
    assert _scrubbed(message, secrets) == 'invalid port "***" near "***@h/db"'


def test_a_missing_driver_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, postgres_url: str
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    refused(lambda: PostgresStore(postgres_url), "pip install 'callboard[postgres]'")
    refused(lambda: open_store(postgres_url), "callboard[postgres]")


def test_a_readonly_store_on_a_database_without_the_schema_is_refused(postgres_url: str) -> None:
    refused(lambda: PostgresStore(postgres_url, readonly=True), "no callboard schema")
    assert sql(postgres_url, "SELECT to_regclass('callboard_runs')") == [(None,)]


def test_a_newer_schema_is_refused_and_left_untouched(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    sql(postgres_url, "UPDATE callboard_meta SET value = %s", str(SCHEMA_VERSION + 1))
    sql(
        postgres_url,
        "INSERT INTO callboard_runs (run_id, workflow_id, status, seq, created_at, "
        "updated_at, trace_id, snapshot) VALUES ('future', 'wf', 'pending', 0, 0, 0, '', '')",
    )

    def state() -> list[Any]:
        return [
            sql(postgres_url, "SELECT * FROM callboard_meta"),
            sql(postgres_url, "SELECT run_id, owner_id, epoch FROM callboard_runs"),
            sql(postgres_url, "SELECT count(*) FROM callboard_workers"),
        ]

    before = state()
    for readonly in (False, True):
        refused(lambda readonly=readonly: PostgresStore(postgres_url, readonly=readonly), "newer")
    assert state() == before
    wait_until(lambda: callboard_connections(postgres_url) == 0, what="connections closed")


def test_an_upgrade_waits_until_the_processes_of_the_older_schema_are_gone(
    postgres_url: str,
) -> None:
    older = PostgresStore(postgres_url)  # stands for a process that opened it before
    try:
        sql(postgres_url, "UPDATE callboard_meta SET value = %s", str(SCHEMA_VERSION - 1))
        error = refused(lambda: PostgresStore(postgres_url), "older callboard", "stop them first")
        assert f"{socket.gethostname()}:{os.getpid()}" in str(error)
        assert sql(postgres_url, "SELECT value FROM callboard_meta") == [(str(SCHEMA_VERSION - 1),)]
    finally:
        older.close()
    PostgresStore(postgres_url).close()  # gone: the upgrade goes ahead
    assert sql(postgres_url, "SELECT value FROM callboard_meta") == [(str(SCHEMA_VERSION),)]


def test_a_version_9_database_from_before_request_ids_were_kept_gets_their_table(
    postgres_url: str, tmp_path: Path
) -> None:
    # main reached schema version 9 before the ids of resume requests were kept (never
    # released): every request on such a database failed for want of their table.
    run_id = items_waiting(postgres_url, tmp_path)
    sql(postgres_url, "DROP TABLE callboard_resume_request_ids")

    result = both_items_approved(postgres_url, tmp_path, run_id)
    assert result.status == "success", result.error
    assert sql(postgres_url, "SELECT count(*) FROM callboard_resume_request_ids") != [(0,)]


def test_a_database_of_schema_version_8_migrates_and_its_runs_take_resume_requests(
    postgres_url: str, tmp_path: Path
) -> None:
    run_id = items_waiting(postgres_url, tmp_path)
    # Back to version 8, as the callboard before left databases.
    sql(postgres_url, "DROP TABLE callboard_resume_requests, callboard_resume_request_ids")
    sql(postgres_url, "ALTER TABLE callboard_runs DROP COLUMN taken_seq")
    sql(postgres_url, "UPDATE callboard_meta SET value = '8' WHERE key = 'schema_version'")

    result = both_items_approved(postgres_url, tmp_path, run_id)
    assert result.status == "success", result.error
    assert result.result == {"value": "x1-yes,x2-no"}
    assert sql(postgres_url, "SELECT value FROM callboard_meta") == [(str(SCHEMA_VERSION),)]
    assert SCHEMA_VERSION >= 9
    assert sql(postgres_url, "SELECT count(*) FROM callboard_resume_requests") == [(0,)]
    # The ids of the requests its runs took are kept (for a retry whose reply was lost).
    assert sql(postgres_url, "SELECT count(*) FROM callboard_resume_request_ids") != [(0,)]
    columns = sql(
        postgres_url,
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = 'callboard_runs' AND column_name = 'taken_seq'",
    )
    assert columns == [("taken_seq",)]


@pytest.mark.parametrize("lease", [0, 0.1, float("inf"), float("nan"), 86_401])
def test_a_lease_is_a_fifth_of_a_second_to_a_day(postgres_url: str, lease: float) -> None:
    refused(lambda: PostgresStore(postgres_url, lease=lease), "lease must be at least")


def test_a_worker_row_with_an_endless_lease_stops_nobody_from_reaping(postgres_url: str) -> None:
    # Written by a callboard that let `--lease inf` through: computing with it made every
    # worker's reap and claim fail ("interval out of range") for as long as the row stayed.
    store = PostgresStore(postgres_url)
    try:
        sql(
            postgres_url,
            "INSERT INTO callboard_workers (worker_id, host, pid, role, lease) "
            "VALUES ('endless', 'elsewhere', 1, 'worker', 'Infinity')",
        )
        assert store.reap() == 0  # alive for a day at most, by the store's judgement
        assert store.next_lapse() is None  # it holds no run
        assert [info.worker_id for info in store.workers() if info.worker_id == "endless"]
    finally:
        store.close()


# --- the schema -----------------------------------------------------------------------


def test_the_schema_is_made_once_by_workers_starting_together(postgres_url: str) -> None:
    start = threading.Barrier(4)
    opened: list[PostgresStore] = []
    errors: list[BaseException] = []

    def open_() -> None:
        start.wait()
        try:
            opened.append(PostgresStore(postgres_url))
        except BaseException as exc:
            errors.append(exc)

    openers = [threading.Thread(target=open_) for _ in range(4)]
    for opener in openers:
        opener.start()
    for opener in openers:
        opener.join()
    try:
        assert not errors
        assert sql(postgres_url, "SELECT value FROM callboard_meta") == [(str(SCHEMA_VERSION),)]
        assert len(opened[0].workers()) == 4
    finally:
        for store in opened:
            store.close()


def test_a_store_cut_off_while_it_prepares_tries_again(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    join_row = PostgresStore._join_row
    cuts = [psycopg.OperationalError("server closed the connection unexpectedly")]

    def cut_once(self: PostgresStore, connection: Any) -> bool:
        if cuts:  # what a terminated backend or a restarting server does to the first try
            raise cuts.pop()
        return join_row(self, connection)

    monkeypatch.setattr(PostgresStore, "_join_row", cut_once)
    store = PostgresStore(postgres_url)
    try:
        assert not cuts
        assert [w.worker_id for w in store.workers()] == [store.owner_id]
    finally:
        store.close()


def test_a_store_whose_preparation_fails_for_good_is_not_tried_again(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    tries: list[int] = []

    def refuse(self: PostgresStore, connection: Any) -> bool:
        tries.append(1)
        raise psycopg.errors.InsufficientPrivilege("permission denied for table")

    monkeypatch.setattr(PostgresStore, "_join_row", refuse)
    with pytest.raises(StoreError, match=r"cannot prepare the PostgreSQL store.*permission denied"):
        PostgresStore(postgres_url)
    assert len(tries) == 1


def test_a_readonly_store_reads_and_refuses_writes(
    stores: Callable[..., PostgresStore],
) -> None:
    writer = stores()
    writer.create(rec("r1"))
    reader = stores(readonly=True)
    assert reader.load("r1") == rec("r1")
    assert [w.worker_id for w in reader.workers()] == [writer.owner_id]
    with pytest.raises(StoreError, match="read-only"):
        reader.create(rec("r2"))
    with pytest.raises(StoreError, match="read-only"):
        reader.save([rec("r1", 1)])


def test_a_closed_store_refuses_writes(stores: Callable[..., PostgresStore]) -> None:
    store = stores()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.create(rec("r1"))
    with pytest.raises(StoreError, match="closed"):
        store.claim(["wf"], 1)


# --- faults ---------------------------------------------------------------------------


def test_a_record_the_database_refuses_fails_alone(stores: Callable[..., PostgresStore]) -> None:
    store = stores()
    store.create(rec("good"))
    store.create(rec("other"))
    with pytest.raises(StoreError, match="cannot write"):
        store.create(rec("bad\x00id"))
    outcomes: dict[str, Any] = {}
    done = threading.Semaphore(0)

    def report(name: str) -> tuple[Callable[[], None], Callable[[BaseException], None]]:
        def ok() -> None:
            outcomes[name] = "committed"
            done.release()

        def fail(error: BaseException) -> None:
            outcomes[name] = error
            done.release()

        return ok, fail

    for name, record in (
        ("before", rec("good", 1, "running")),
        # A status the database refuses (text holds no NUL): a held save writes the status.
        # Of another run: a record of "good" here would be left out for the one after it
        # (a batch writes a run's newest record only), and so never refused.
        ("poison", rec("other", 1, "run\x00ning")),
        ("after", rec("good", 2, "running")),
    ):
        ok, fail = report(name)
        store.save([record], on_commit=ok, on_error=fail)
    for _ in range(3):
        assert done.acquire(timeout=10)
    assert outcomes["before"] == outcomes["after"] == "committed"
    assert isinstance(outcomes["poison"], StoreError)
    assert store.load("good") == rec("good", 2, "running")
    assert store.load("other") == rec("other")


def test_writes_queued_while_the_server_restarts_commit_once_it_is_back(
    postgres_server: Server, stores: Callable[..., PostgresStore]
) -> None:
    if not postgres_server.restartable:
        pytest.skip("an external server is not ours to restart")
    store, listener = stores(), stores()
    heard: list[tuple[str, str]] = []
    listener.set_hint(lambda kind, run_id: heard.append((kind, run_id)))
    for n in range(5):
        store.create(rec(f"r{n}"))
    committed = threading.Semaphore(0)
    errors: list[BaseException] = []
    created: list[bool] = []
    postgres_server.stop("fast")
    try:
        for seq in (1, 2, 3):
            for n in range(5):
                store.save(
                    [rec(f"r{n}", seq, "running")],
                    on_commit=committed.release,
                    on_error=errors.append,
                )
        creator = threading.Thread(target=lambda: created.append(store.create(rec("new"))))
        creator.start()
        time.sleep(0.5)
        assert not committed.acquire(timeout=0)  # nothing acknowledged before it commits
        assert created == []
    finally:
        postgres_server.start()
    for _ in range(15):
        assert committed.acquire(timeout=15), f"a save was never committed: {errors}"
    creator.join(15)
    assert created == [True]
    assert not errors
    assert [r.seq for r in store.load_many([f"r{n}" for n in range(5)])] == [3] * 5
    # The listener found its way back too.
    wait_until(
        lambda: (
            store.create(rec(f"hint{time.monotonic_ns()}"), hold=False)
            and any(kind == "queued" for kind, _ in heard)
        ),
        timeout=15,
        what="a hint after the restart",
    )


def test_close_while_the_server_is_down_is_bounded_and_fails_what_it_could_not_write(
    postgres_server: Server, stores: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not postgres_server.restartable:
        pytest.skip("an external server is not ours to restart")
    monkeypatch.setattr(postgres_module, "CLOSE_TIMEOUT", 3.0)
    store = stores()
    store.set_hint(lambda kind, run_id: None)
    store.create(rec("r1"))
    errors: list[BaseException] = []
    postgres_server.stop("fast")
    try:
        store.save([rec("r1", 1, "running")], on_error=errors.append)
        started = time.monotonic()
        store.close()
        assert time.monotonic() - started < 8
        assert not wait_for_no_callboard_threads()
    finally:
        postgres_server.start()
    assert len(errors) == 1 and isinstance(errors[0], StoreError)
    assert store.load("r1") == rec("r1")  # reads still work once it is back


def test_a_connection_lost_in_a_pipelined_batch_is_one_warning_not_psycopgs_too(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # psycopg logged "error ignored terminating <psycopg.Pipeline [BAD] at 0x...>" beside
    # the writer's own store_write_retrying.
    store = PostgresStore(postgres_url)
    transaction = store._transaction
    cut: list[int] = []

    def cut_once(connection: Any, writes: Any, batch: Any) -> Any:
        done = transaction(connection, writes, batch)
        if not cut:
            cut.append(connection.info.backend_pid)
            sql(postgres_url, "SELECT pg_terminate_backend(%s)", cut[0])
        return done

    monkeypatch.setattr(store, "_transaction", cut_once)
    with caplog.at_level(logging.WARNING), Runtime(store=store) as rt:
        result = rt.register(flows.greet).create_run().start(input_data={"value": "v"}, timeout=30)
    assert result.status == "success"
    assert cut, "no batch went through the pipeline"
    assert [r.name for r in caplog.records] == ["callboard"], caplog.text  # store_write_retrying
    # The filter is this writer's alone: psycopg's other warnings still come through.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        logging.getLogger("psycopg").warning("error ignored terminating %r: %s", "x", "y")
    assert [r.name for r in caplog.records] == ["psycopg"]


def test_a_writer_connection_left_in_the_middle_of_a_command_is_made_anew_not_failing_writes(
    stores: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seen in make chaos's fleet: a cut in a pipelined batch left the connection ACTIVE
    # (not broken), and every later write failed on it ("can't change 'autocommit' now"),
    # failing the runs whose snapshots it carried.
    store = stores()
    one_statement = store._one_statement
    stuck: list[int] = []

    def leave_it_active(connection: Any, writes: Any, batch: Any) -> Any:
        if not stuck:
            stuck.append(1)
            connection.pgconn.send_query(b"SELECT 1")  # sent, its result never read
        return one_statement(connection, writes, batch)

    store.create(rec("r1", 0, "running"), hold=False)  # on a pooled connection
    monkeypatch.setattr(store, "_one_statement", leave_it_active)
    assert save(store, rec("r1", 1, "running")) is None  # through the writer
    assert stuck
    assert store.load("r1") == rec("r1", 1, "running")


def test_a_write_whose_caller_gave_up_while_the_server_was_down_is_not_done_later(
    postgres_server: Server,
    postgres_url: str,
    stores: Callable[..., PostgresStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg

    if not postgres_server.restartable:
        pytest.skip("an external server is not ours to restart")
    monkeypatch.setattr(postgres_module, "CALL_TIMEOUT", 0.5)
    store = stores()
    store.create(rec("ended", 0, "success"), hold=False)
    store.create(rec("going", 0, "running"), hold=False)
    postgres_server.stop("fast")
    try:
        with pytest.raises(StoreUnavailableError, match="not deleted"):
            store.delete("ended")
        with pytest.raises(StoreUnavailableError, match="no cancel"):
            store.request_cancel("going")
    finally:
        postgres_server.start()
    time.sleep(1.0)  # the writer's next tries: the dropped writes are not in them
    assert store.load("ended") == rec("ended", 0, "success")
    with psycopg.connect(postgres_url) as connection:
        row = connection.execute(
            "SELECT cancel_requested FROM callboard_runs WHERE run_id = 'going'"
        ).fetchone()
    assert row == (False,)


def test_a_table_lock_another_session_holds_bounds_reads_and_starts(
    postgres_url: str, stores: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    # LOCK TABLE (or a long migration, a stuck session) held every read and start for as
    # long as it held the lock, past every timeout: 150 s and more in a helper's campaign.
    import psycopg

    monkeypatch.setattr(postgres_module, "LOCK_TIMEOUT", 0.3)
    monkeypatch.setattr(postgres_module, "CALL_TIMEOUT", 1.0)
    store = stores()
    store.create(rec("before"))
    outcomes: list[Any] = []

    def attempt(call: Callable[[], Any]) -> None:
        try:
            outcomes.append(call())
        except StoreUnavailableError as exc:
            outcomes.append(exc)

    with psycopg.connect(postgres_url) as holder:
        holder.execute("LOCK TABLE callboard_runs IN ACCESS EXCLUSIVE MODE")
        for call in (lambda: store.load("before"), lambda: store.create(rec("during"))):
            caller = threading.Thread(target=attempt, args=(call,))
            caller.start()
            caller.join(20)
            assert not caller.is_alive(), "a call waited for the lock as long as it was held"
        holder.rollback()
    assert [type(outcome) for outcome in outcomes] == [StoreUnavailableError] * 2
    assert "lock" in str(outcomes[0])
    time.sleep(0.5)  # the writer's next tries: the start it gave up is not among them
    assert store.load("during") is None
    assert store.load("before") == rec("before")


def test_a_store_closed_after_the_server_restarted_leaves_the_workers_table(
    postgres_server: Server, postgres_url: str, stores: Callable[..., PostgresStore]
) -> None:
    import psycopg

    if not postgres_server.restartable:
        pytest.skip("an external server is not ours to restart")
    store = stores()
    store.create(rec("r1"))  # held here: handed back when the store closes
    postgres_server.stop("fast")
    postgres_server.start()
    # The writer's connection was dropped while it had nothing to write: closing finds
    # out only when it hands the run back and deletes its row.
    store.close()
    with psycopg.connect(postgres_url) as connection:
        workers = connection.execute(
            "SELECT count(*) FROM callboard_workers WHERE worker_id = %s", (store.owner_id,)
        ).fetchone()
        owner = connection.execute(
            "SELECT owner_id FROM callboard_runs WHERE run_id = 'r1'"
        ).fetchone()
    assert workers == (0,)
    assert owner == (None,)


def test_a_read_after_the_server_restarted_reconnects(
    postgres_server: Server, stores: Callable[..., PostgresStore]
) -> None:
    if not postgres_server.restartable:
        pytest.skip("an external server is not ours to restart")
    store = stores()
    store.create(rec("r1"))
    assert store.load("r1") == rec("r1")  # a pooled connection now exists
    postgres_server.stop("fast")
    try:
        with pytest.raises(StoreUnavailableError, match="cannot"):
            store.load("r1")
    finally:
        postgres_server.start()
    assert store.load("r1") == rec("r1")


# --- locks and clocks -----------------------------------------------------------------


def test_a_claim_skips_a_row_another_transaction_locked_without_waiting(
    postgres_url: str, stores: Callable[..., PostgresStore]
) -> None:
    import psycopg

    store = stores()
    store.create(rec("locked", created_at=1.0), hold=False)
    store.create(rec("free", created_at=2.0), hold=False)
    with psycopg.connect(postgres_url) as other:
        other.execute("SELECT 1 FROM callboard_runs WHERE run_id = 'locked' FOR UPDATE")
        started = time.monotonic()
        assert [c.record.run_id for c in store.claim(["wf"], 10)] == ["free"]
        assert time.monotonic() - started < 1.0
        other.rollback()
    assert [c.record.run_id for c in store.claim(["wf"], 10)] == ["locked"]


def test_the_claim_can_use_the_partial_index_of_queued_runs(
    postgres_url: str, stores: Callable[..., PostgresStore]
) -> None:
    import psycopg

    stores()  # makes the schema
    query = (
        postgres_module._CLAIM.replace("%(workflows)s", "ARRAY['wf']")
        .replace("%(limit)s", "5")
        .replace("%(owner)s", "'me'")
    )
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("SET enable_seqscan = off")
        plan = "\n".join(row[0] for row in connection.execute("EXPLAIN " + query).fetchall())
    assert "callboard_runs_queued" in plan


def test_leases_are_judged_by_the_database_clock_not_the_clients(
    monkeypatch: pytest.MonkeyPatch, stores: Callable[..., PostgresStore]
) -> None:
    worker, reaper = stores(lease=5.0), stores()
    worker.create(rec("r1"))
    monkeypatch.setattr(time, "time", lambda: 4_000_000_000.0)  # a client clock years ahead
    assert reaper.reap() == 0
    assert worker.heartbeat()
    assert reaper.workers()[0].heartbeat_age < 5


def test_runs_of_an_owner_without_a_worker_row_are_reaped(
    postgres_url: str, stores: Callable[..., PostgresStore]
) -> None:
    store = stores()
    store.create(rec("r1"))
    sql(postgres_url, "UPDATE callboard_runs SET owner_id = 'gone-for-good'")
    assert store.reap() == 1
    assert [r.run_id for r in store.queued()] == ["r1"]


@contextlib.contextmanager
def session_of(url: str, store: PostgresStore) -> Iterator[Any]:
    """A connection named as the store's own are: a stand-in for a session of that worker."""
    import psycopg

    with psycopg.connect(url, application_name=f"callboard {store.owner_id}") as connection:
        yield connection


def lapsed(store: PostgresStore, reader: PostgresStore) -> bool:
    """Whether ``reader`` sees the lease of ``store``'s worker run out, by the database's clock."""
    return any(
        w.worker_id == store.owner_id and w.heartbeat_age > w.lease for w in reader.workers()
    )


def reaped_runs(reaper: PostgresStore, at_least: int) -> int:
    """Reap until at least this many runs went back."""
    total = 0

    def more() -> bool:
        nonlocal total
        total += reaper.reap()
        return total >= at_least

    wait_until(more, timeout=20, what=f"{at_least} runs reaped")
    return total


@pytest.mark.parametrize("locked", ["its worker row", "its runs"])
def test_a_worker_stalled_inside_a_transaction_is_ended_and_its_runs_go_back(
    postgres_url: str, stores: Callable[..., PostgresStore], locked: str
) -> None:
    # A worker paused (SIGSTOP, a lost network) inside a transaction held its row or its
    # runs locked, and the reaper skipped them: its runs stayed held until it woke.
    import psycopg

    stalled, reaper = stores(lease=0.3), stores()
    stalled.create(rec("r1"))
    stalled.create(rec("r2"))
    with session_of(postgres_url, stalled) as its_session:
        if locked == "its worker row":  # as its heartbeat, first in each batch, does
            its_session.execute(
                "UPDATE callboard_workers SET heartbeat_at = heartbeat_at WHERE worker_id = %s",
                (stalled.owner_id,),
            )
        else:  # as a batch of its saves does
            its_session.execute(
                "SELECT 1 FROM callboard_runs WHERE owner_id = %s ORDER BY run_id FOR UPDATE",
                (stalled.owner_id,),
            )
        with capture_logs() as logs:
            assert reaped_runs(reaper, 2) == 2
        with pytest.raises(psycopg.OperationalError):
            its_session.execute("SELECT 1")  # ended: its transaction rolled back
    ended = [e for e in logs if e["event"] == "store_stalled_worker_ended"]
    assert [e["worker"] for e in ended] == [stalled.owner_id]
    assert ended[0]["log_level"] == "warning"
    assert [r.run_id for r in reaper.queued()] == ["r1", "r2"]
    # Woken, the worker finds out it was reaped: what it held is fenced off.
    assert stalled.heartbeat() is False
    assert stalled.held() == 0
    assert sorted(c.record.run_id for c in reaper.claim(["wf"], 5)) == ["r1", "r2"]


def test_a_worker_stalled_holding_the_queue_lock_is_ended_and_claims_go_on(
    postgres_url: str, stores: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Paused inside a claim through a limited queue, a worker held the queue's lock: every
    # other worker's claim from a limited queue (and every start into a bounded one) waited
    # for it in vain, and no reap freed it.
    import psycopg

    monkeypatch.setattr(postgres_module, "LOCK_TIMEOUT", 0.3)
    stalled, other = stores(lease=0.3), stores()
    other.define_queue(QueueLimits("q", concurrency=1))
    other.create(rec("q1", queue="q"), hold=False)
    wait_until(lambda: lapsed(stalled, other), what="the stalled worker's lease run out")
    with session_of(postgres_url, stalled) as its_session:
        its_session.execute("SELECT pg_advisory_xact_lock(%s)", (postgres_module._QUEUE_LOCK,))
        other.reap()  # a reaper's pass ends the paused session (claims waiting meanwhile)
        assert [c.record.run_id for c in other.claim(["wf"], 5)] == ["q1"]
        with pytest.raises(psycopg.OperationalError):
            its_session.execute("SELECT 1")


def test_a_stalled_worker_this_role_may_not_end_is_reported_once_and_left(
    postgres_server: Server, postgres_url: str, stores: Callable[..., PostgresStore]
) -> None:
    if postgres_server.external is not None:
        pytest.skip("the external server's roles are not ours to set up")
    stalled = stores(lease=0.3)  # a superuser's: a plain role may not end its sessions
    stalled.create(rec("r1"))
    sql(
        postgres_url,
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO callboard_pw",
    )
    dbname = postgres_url.split("?", maxsplit=1)[0].rsplit("/", 1)[1]
    reaper = stores(url=postgres_server.password_url(PASSWORD, dbname))
    with session_of(postgres_url, stalled) as its_session:
        its_session.execute(
            "UPDATE callboard_workers SET heartbeat_at = heartbeat_at WHERE worker_id = %s",
            (stalled.owner_id,),
        )
        wait_until(lambda: lapsed(stalled, reaper), what="the stalled worker's lease run out")
        with capture_logs() as logs:

            def told() -> bool:
                assert reaper.reap() == 0
                return any(e["event"] == "store_stalled_worker_not_ended" for e in logs)

            wait_until(told, timeout=20, what="the stuck worker reported")
            assert reaper.reap() == 0
        its_session.execute("SELECT 1")  # still there
    stuck = [e for e in logs if e["event"] == "store_stalled_worker_not_ended"]
    assert len(stuck) == 1, stuck
    assert stuck[0]["worker"] == stalled.owner_id
    assert stuck[0]["log_level"] == "warning"
    assert "pg_signal_backend" in stuck[0]["reason"]
    # Once its transaction ends, the next reap hands its run back as usual.
    assert reaped_runs(reaper, 1) == 1


def test_a_live_workers_transaction_is_not_ended(
    postgres_url: str, stores: Callable[..., PostgresStore]
) -> None:
    alive, reaper = stores(lease=0.5), stores()
    alive.create(rec("r1"))
    with session_of(postgres_url, alive) as its_session:
        its_session.execute("SELECT 1 FROM callboard_runs FOR UPDATE")
        deadline = time.monotonic() + 1.5  # three leases, inside one transaction
        while time.monotonic() < deadline:
            assert alive.heartbeat() is True
            assert reaper.reap() == 0
            time.sleep(0.1)
        its_session.execute("SELECT 1")  # still there: its worker renews its lease


def test_a_lapsed_workers_session_running_a_statement_or_waiting_for_a_lock_is_not_ended(
    postgres_url: str, stores: Callable[..., PostgresStore]
) -> None:
    # A worker whose heartbeats wait behind its own long write (a prune of a big backlog),
    # or behind a paused worker's lock, is slow, not paused: ending its session made the
    # long write fail again at every try, and the worker waiting for a lock run its steps
    # twice once reaped. Only a session waiting on its client is a paused process's.
    import psycopg

    slow, reaper = stores(lease=0.3), stores()
    wait_until(lambda: lapsed(slow, reaper), what="the slow worker's lease run out")
    with session_of(postgres_url, slow) as busy, session_of(postgres_url, slow) as blocked:
        with psycopg.connect(postgres_url) as holder:
            holder.execute("SELECT pg_advisory_xact_lock(42)")  # held by nobody's worker
            running = threading.Thread(target=lambda: busy.execute("SELECT pg_sleep(1.5)"))
            waiting = threading.Thread(
                target=lambda: blocked.execute("SELECT pg_advisory_xact_lock(42)")
            )
            running.start()
            waiting.start()
            time.sleep(0.3)  # both under way: one running, one waiting for the lock
            reaper.reap()
            holder.rollback()
            running.join(10)
            waiting.join(10)
        busy.execute("SELECT 1")  # neither was ended
        blocked.execute("SELECT 1")


def join(store: PostgresStore) -> BaseException | None:
    """Join ``store``'s worker again; what it raised, if anything."""
    try:
        store.join(role="both", workflows=["wf"], concurrency=None)
    except BaseException as exc:
        return exc
    return None


def waiting_for_a_lock(url: str, store: PostgresStore) -> bool:
    """Whether a session of ``store``'s worker waits for a lock another session holds."""
    rows = sql(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND application_name = %s",
        f"callboard/w {store.owner_id}",  # the writer's session
    )
    return int(rows[0][0]) > 0


@pytest.mark.parametrize("joining", [False, True], ids=["saves", "saves and a join"])
def test_a_heartbeat_does_not_wait_behind_writes_that_wait_for_a_lock(
    postgres_url: str,
    stores: Callable[..., PostgresStore],
    monkeypatch: pytest.MonkeyPatch,
    joining: bool,
) -> None:
    # A session paused with a run row locked held up a live worker's save of that run, and
    # its heartbeat went in the same transaction: its lease ran out and it was reaped (the
    # step it was running then ran again elsewhere). Nor may a join in that transaction
    # hold the worker's row meanwhile, which the heartbeat takes.
    import psycopg

    monkeypatch.setattr(postgres_module, "CALL_TIMEOUT", 3.0)  # a beat that waits fails soon
    monkeypatch.setattr(postgres_module, "LOCK_TIMEOUT", 0.5)  # the writer tries again soon
    live, reaper = stores(lease=0.5), stores()
    live.create(rec("r1", status="running"))
    saved = threading.Event()
    with psycopg.connect(postgres_url) as holder:
        holder.execute("SELECT 1 FROM callboard_runs WHERE run_id = 'r1' FOR UPDATE")
        live.save([rec("r1", 1, status="running")], on_commit=saved.set)
        wait_until(lambda: waiting_for_a_lock(postgres_url, live), what="the save waiting")
        joined: list[BaseException | None] = []
        if joining:  # it goes in the writer's next try of the saves
            threading.Thread(target=lambda: joined.append(join(live))).start()
        deadline = time.monotonic() + 3.0  # six leases, the save waiting all along
        while time.monotonic() < deadline:
            assert live.heartbeat() is True
            reaper.reap()
            time.sleep(0.1)
        assert live.owner_id in [w.worker_id for w in reaper.workers()]
        assert not saved.is_set()
        if joining:
            wait_until(lambda: joined, timeout=30, what="the join done")
            assert joined == [None]  # committed alone, the saves still waiting
    assert saved.wait(30)  # the lock let go: the save commits, still this worker's
    assert live.heartbeat() is True
    assert live.held() == 1


@pytest.fixture(params=["direct", "pooler"])
def through(request: pytest.FixtureRequest, postgres_url: str) -> str:
    """The test's database, directly and through a pooler in transaction mode.

    Asked for before ``stores``, so that the stores close before the pooler stops.
    """
    if request.param == "pooler":
        url: str = request.getfixturevalue("pooled_url")
        return url
    return postgres_url


def test_a_worker_whose_writes_do_not_reach_the_server_is_not_renewed(
    through: str, stores: Callable[..., PostgresStore]
) -> None:
    # The heartbeat renews the lease beside the writer. A writer cut off in the network
    # (here: a commit that never reaches the server, whose session stays idle) kept its
    # worker's lease, and its runs held, for as long as the cut lasted (r2). Through a
    # pooler, the writer's session is found by its name (the process id is the pooler's):
    # a heartbeat there renewed the lease whatever the writer's state.
    from runtime import StoreUnavailableError

    live, reaper = stores(url=through, lease=0.5), stores()
    live.create(rec("r1", status="running"))
    cut, entered = threading.Event(), threading.Event()
    real = live._commit_group

    def never_sent(writes: Any) -> Any:
        entered.set()
        cut.wait(30)
        return real(writes)

    live._commit_group = never_sent  # type: ignore[method-assign]
    try:
        live.save([rec("r1", 1, status="running")])
        assert entered.wait(10)
        wait_until(lambda: live._writer is not None and live._writer.committing_for() > 0.3)
        with pytest.raises(StoreUnavailableError, match="does not get through"):
            live.heartbeat()
        time.sleep(0.6)  # a lease without a renewal
        reaper.reap()
        assert live.owner_id not in [w.worker_id for w in reaper.workers()]
    finally:
        cut.set()


def test_a_worker_whose_commit_is_slow_between_statements_keeps_its_lease(
    through: str, stores: Callable[..., PostgresStore]
) -> None:
    # On a slow network each statement of a commit is a round trip, and between two of
    # them the server finds the writer's session idle in transaction: the heartbeat took
    # that for a connection cut off and stopped renewing a live worker's lease (r4).
    live = stores(url=through, lease=0.5)
    live.create(rec("r1", status="running"))
    done = threading.Event()
    real = live._commit_group

    def round_trips(writes: Any) -> Any:
        connection = live._connection()
        with connection.transaction():
            for _ in range(12):  # 1.2 s of statements, each after a 0.1 s "trip"
                time.sleep(0.1)
                connection.execute("SELECT 1")
        done.set()
        return real(writes)

    live._commit_group = round_trips  # type: ignore[method-assign]
    live.save([rec("r1", 1, status="running")])
    wait_until(lambda: live._writer is not None and live._writer.committing_for() > 0.3)
    while not done.is_set():
        assert live.heartbeat() is True
        time.sleep(0.05)


def test_a_worker_whose_saves_wait_for_a_paused_sessions_lock_is_not_reaped(
    postgres_url: str,
) -> None:
    # The claimer's claims and reaps waited behind those saves in the writer, and so did
    # the heartbeats it sends between them: the lease of a live worker ran out.
    import psycopg

    gate, ran = threading.Event(), []

    def first(ctx: Any) -> flows.Value:
        ran.append("first")
        gate.wait(30)
        return ctx.input_data  # type: ignore[no-any-return]

    def second(ctx: Any) -> flows.Value:
        ran.append("second")
        return ctx.input_data  # type: ignore[no-any-return]

    value = flows.Value
    workflow = (
        create_workflow(id="held", input_schema=value, output_schema=value)
        .then(create_step(id="first", input_schema=value, output_schema=value, execute=first))
        .then(create_step(id="second", input_schema=value, output_schema=value, execute=second))
        .commit()
    )
    lease = 0.5
    live = Runtime(store=PostgresStore(postgres_url, lease=lease), role="worker").start()
    other = Runtime(store=PostgresStore(postgres_url, lease=lease), role="client").start()
    try:
        live.register(workflow)
        run = other.register(workflow).create_run()
        started = run.start_async(input_data={"value": "x"})
        wait_until(lambda: ran == ["first"], timeout=30, what="the first step running")
        live_store, other_store = live.store, other.store
        assert isinstance(live_store, PostgresStore)
        assert isinstance(other_store, PostgresStore)
        with psycopg.connect(postgres_url) as holder:
            holder.execute(
                "SELECT 1 FROM callboard_runs WHERE run_id = %s FOR UPDATE", (started.run_id,)
            )
            gate.set()  # the first step's output waits for the lock
            wait_until(
                lambda: waiting_for_a_lock(postgres_url, live_store), what="the save waiting"
            )
            deadline = time.monotonic() + 4 * lease
            while time.monotonic() < deadline:
                workers = [w.worker_id for w in other_store.workers()]
                assert live_store.owner_id in workers, "the live worker was reaped"
                time.sleep(0.1)
        assert run.wait(timeout=30).status == "success"
        assert ran == ["first", "second"]  # no step ran twice
    finally:
        gate.set()
        live.stop()
        other.stop()


def test_each_session_is_named_with_its_workers_id(
    postgres_url: str, stores: Callable[..., PostgresStore]
) -> None:
    store = stores()
    named = stores(url=f"{postgres_url}{'&' if '?' in postgres_url else '?'}application_name=éx")
    names = {
        row[0]
        for row in sql(
            postgres_url,
            "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()",
        )
    }
    # The writer's session is marked as the writer's (a heartbeat through a pooler finds it).
    assert f"callboard/w {store.owner_id}" in names
    assert f"?x/w {named.owner_id}" in names
    with store._readers.connection() as reader:
        row = reader.execute("SELECT current_setting('application_name')").fetchone()
    assert row == (f"callboard {store.owner_id}",)


def test_a_claim_bumps_the_epoch_in_the_row(
    postgres_url: str, stores: Callable[..., PostgresStore]
) -> None:
    a = stores()
    a.create(rec("held"))
    a.create(rec("queued"), hold=False)
    assert sql(postgres_url, "SELECT run_id, epoch FROM callboard_runs ORDER BY run_id") == [
        ("held", 1),
        ("queued", 0),
    ]
    a.claim(["wf"], 1)
    assert sql(postgres_url, "SELECT epoch FROM callboard_runs WHERE run_id = 'queued'") == [(1,)]


# --- open_store -----------------------------------------------------------------------


def test_open_store_maps_each_location_to_its_store(postgres_url: str, tmp_path: Any) -> None:
    assert isinstance(open_store("memory"), MemoryStore)
    assert isinstance(open_store(None), MemoryStore)
    for location in (tmp_path / "a.db", str(tmp_path / "b.db"), f"sqlite:///{tmp_path}/c.db"):
        opened = open_store(location)
        assert isinstance(opened, SQLiteStore)
        opened.close()
    store = open_store(postgres_url, lease=3.0)
    try:
        assert isinstance(store, PostgresStore)
        assert store.lease == 3.0
    finally:
        store.close()
    postgres_style = "postgres://" + postgres_url.removeprefix("postgresql://")
    other = open_store(postgres_style, readonly=True)
    assert isinstance(other, PostgresStore)
    other.close()
    with pytest.raises(StoreError, match="unknown store URL scheme"):
        open_store("mysql://host/db")


# --- a commit whose acknowledgement is lost -----------------------------------------------


def lose_the_next_commit_ack(
    store: PostgresStore, meanwhile: Callable[[], object] | None = None
) -> list[int]:
    """The writer's next commit happens, then its connection drops before the reply.

    Touches the store's private writer connection (``_wconn``): the only way to lose
    exactly one acknowledgement. A commit is ``commit()`` after a transaction, or a
    statement run in autocommit (a batch that is one statement: it commits as it runs).
    ``meanwhile`` runs after the commit, before the writer hears it was lost (and tries
    again). Returns a list that counts the commits lost.
    """
    import psycopg

    connection = store._wconn
    assert connection is not None
    real_commit = connection.commit
    real_execute = connection.execute
    lost: list[int] = []

    def drop() -> None:
        lost.append(1)
        if meanwhile is not None:
            meanwhile()
        connection.close()
        raise psycopg.OperationalError("the server's reply was lost")

    def commit() -> None:
        real_commit()
        if not lost:
            drop()

    def execute(query: Any, params: Any = None, **options: Any) -> Any:
        cursor = real_execute(query, params, **options)
        if connection.autocommit and not lost and "set_config" not in str(query):
            drop()
        return cursor

    connection.commit = commit  # type: ignore[method-assign]
    connection.execute = execute  # type: ignore[method-assign]
    return lost


def lose_the_next_caller_ack(store: PostgresStore) -> list[int]:
    """The next create committed on its caller's thread happens, then its reply is lost.

    Puts in the store's private pool of autocommit connections (``_readers``) one
    whose next ``INSERT`` runs and commits, then drops before the reply.
    """
    import psycopg

    connection = store._connect(autocommit=True)
    real_execute = connection.execute
    lost: list[int] = []

    def execute(query: Any, params: Any = None, **options: Any) -> Any:
        cursor = real_execute(query, params, **options)
        if not lost and "INSERT INTO callboard_runs" in str(query):
            lost.append(1)
            connection.close()
            raise psycopg.OperationalError("the server's reply was lost")
        return cursor

    connection.execute = execute  # type: ignore[method-assign]
    store._readers.discard_idle()
    store._readers.add(connection)
    return lost


@contextlib.contextmanager
def writer_held_up(store: PostgresStore, postgres_url: str) -> Iterator[threading.Thread]:
    """The store's writer stuck in a transaction (a join waiting for a row lock).

    Yields the thread whose join the writer holds up; it ends once the lock goes.
    (Not a heartbeat: that goes beside the writer, on a connection of its own.)
    """
    import psycopg

    store.join(role="both", workflows=["wf"], concurrency=None)
    with psycopg.connect(postgres_url) as locker:
        locker.execute(
            "SELECT 1 FROM callboard_workers WHERE worker_id = %s FOR UPDATE", (store.owner_id,)
        )
        beat = threading.Thread(target=join, args=(store,), daemon=True)
        beat.start()
        wait_until(store._writer.busy, what="the writer is held up")  # type: ignore[union-attr]
        yield beat
        locker.rollback()
    beat.join(10)


def test_a_create_commits_on_its_callers_thread_while_the_writer_is_held_up(
    postgres_url: str, stores: Callable[..., PostgresStore]
) -> None:
    store = stores()
    with writer_held_up(store, postgres_url) as beat:
        assert store.create(rec("r1")) is True  # not behind the writer's transaction
        assert store.create(rec("r1")) is False  # its id is taken
        assert (store.held(), store.holds("r1")) == (1, True)
        assert beat.is_alive()  # the writer was held up all along
    assert save(store, rec("r1", 1, "running")) is None  # held here, at epoch 1


def test_a_queued_run_created_on_its_callers_thread_is_announced_here_and_elsewhere(
    stores: Callable[..., PostgresStore],
) -> None:
    client, worker = stores(), stores()
    here: list[tuple[str, str]] = []
    heard: list[tuple[str, str]] = []
    client.set_hint(lambda kind, run_id: here.append((kind, run_id)))
    worker.set_hint(lambda kind, run_id: heard.append((kind, run_id)))
    wait_until(lambda: worker._listener is not None, what="the worker listens")

    def announced() -> bool:  # the listener connects in the background: create until heard
        run_id = f"r{len(here)}"
        assert client.create(rec(run_id), hold=False) is True
        assert ("queued", run_id) in here  # this store's own hint, at once
        time.sleep(0.05)
        return ("queued", run_id) in heard

    wait_until(announced, timeout=10, what="another store hears of a queued run")
    assert client.held() == 0
    assert [c.record.run_id for c in worker.claim(["wf"], 100)] == [r for _, r in here]


def test_a_create_with_no_connection_free_goes_through_the_writer(
    stores: Callable[..., PostgresStore],
) -> None:
    store = stores()
    with contextlib.ExitStack() as taken:  # every pooled connection busy (reads, creates)
        for _ in range(postgres_module.READERS):
            taken.enter_context(store._readers.connection())
        with store._readers.spare() as spare:
            assert spare is None
        assert store.create(rec("r1")) is True  # not waiting for a connection: the writer's
        assert store.holds("r1")
    assert save(store, rec("r1", 1, "running")) is None


def test_a_create_whose_reply_to_its_caller_was_lost_is_still_the_creators(
    stores: Callable[..., PostgresStore],
) -> None:
    store, other = stores(), stores()
    lost = lose_the_next_caller_ack(store)
    # The writer tries it again, and takes the identical row as this create's.
    assert store.create(rec("r1")) is True
    assert lost == [1]
    assert store.held() == 1
    assert save(store, rec("r1", 1, "running")) is None
    assert other.claim(["wf"], 1) == []
    assert other.create(rec("r1")) is False  # and another store's create of it is refused


def test_a_create_whose_reply_was_lost_is_not_adopted_before_the_writer_has_it(
    stores: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    # After a reconnect the store is unsure what it holds, and its next claim adopts the
    # runs the database says are its own. A create committed on the caller's thread whose
    # reply was lost was adopted then, before the caller's create went through the
    # writer, which then took the row as its own too: two actors of one run.
    store = stores()
    lose_the_next_caller_ack(store)
    claimed: list[list[str]] = []
    real_submit = store._submit

    def submit(kind: str, payload: Any, done: Any) -> Any:
        if kind == "create" and payload[2]:  # the caller's create, after the lost reply
            store._ambiguous = True  # as after any reconnect
            claimed.append([c.record.run_id for c in store.claim(["wf"], 10)])
        return real_submit(kind, payload, done)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "_submit", submit)
    assert store.create(rec("r1")) is True
    assert claimed == [[]]  # the claim in between left it alone
    assert store.held() == 1
    assert store.claim(["wf"], 10) == []  # and later ones too: it is held
    assert save(store, rec("r1", 1, "running")) is None


def test_runs_created_on_callers_threads_go_back_to_the_queue_when_the_store_closes(
    postgres_url: str, stores: Callable[..., PostgresStore]
) -> None:
    store, other = stores(), stores()
    with writer_held_up(store, postgres_url):
        assert store.create(rec("r1")) is True  # so, on this thread: the writer is held up
    assert other.claim(["wf"], 5) == []  # held by the first store
    store.close()
    assert [c.record.run_id for c in other.claim(["wf"], 5)] == ["r1"]


def test_a_create_whose_commit_reply_was_lost_is_still_the_creators(
    stores: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(PostgresStore, "_fast_creates", False)  # through the writer
    store, other = stores(), stores()
    lost = lose_the_next_commit_ack(store)
    assert store.create(rec("r1")) is True  # tried again, and found to be the same create
    assert lost == [1]
    assert store.held() == 1
    assert save(store, rec("r1", 1, "running")) is None
    assert other.claim(["wf"], 1) == []


def test_a_claim_whose_commit_reply_was_lost_is_not_lost(
    stores: Callable[..., PostgresStore],
) -> None:
    store, other = stores(), stores()
    other.create(rec("r1", created_at=1.0), hold=False)
    other.create(rec("r2", created_at=2.0), hold=False)
    lost = lose_the_next_commit_ack(store)
    claimed = store.claim(["wf"], 1)
    assert lost == [1]
    assert [c.record.run_id for c in claimed] == ["r1"]  # adopted: the first try took it
    assert store.held() == 1
    assert [c.record.run_id for c in store.claim(["wf"], 5)] == ["r2"]
    assert other.claim(["wf"], 5) == []


def test_a_claim_and_a_replace_whose_commit_reply_was_lost_do_not_both_take_the_run(
    stores: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    # One batch claims, then resumes a suspended run for its caller (a replace that holds
    # it), and the reply to its commit is lost. Tried again, the claim adopted the
    # resumed run (this worker's in the database, held by nothing here yet) and the
    # replace found its first try's row and held it too: two actors of one run here.
    import psycopg

    store, other = stores(), stores()
    other.create(rec("queued", created_at=1.0), hold=False)
    other.create(rec("resumed", 3, "suspended"), hold=False)
    writer = store._writer
    assert writer is not None
    replace_queued = threading.Event()
    real_fill, real_submit, real_transaction = writer._fill, store._submit, store._transaction
    lost: list[list[str]] = []

    def fill(pending: list[Any]) -> bool:  # the writer's thread: the claim waits for the replace
        if pending and pending[0].kind == "claim" and not lost:
            assert replace_queued.wait(10)
        return real_fill(pending)

    def submit(kind: str, payload: Any, done: Any) -> Any:
        write = real_submit(kind, payload, done)  # type: ignore[arg-type]
        if kind == "replace":
            replace_queued.set()
        return write

    def transaction(connection: Any, writes: list[Any], batch: Any) -> Any:
        kinds = [write.kind for write in writes]
        if kinds == ["claim", "replace"] and not lost:
            real_commit = connection.commit

            def commit() -> None:  # this batch's commit happens; its reply is lost
                real_commit()
                lost.append(kinds)
                connection.close()
                raise psycopg.OperationalError("the server's reply was lost")

            connection.commit = commit
        return real_transaction(connection, writes, batch)

    monkeypatch.setattr(writer, "_fill", fill)
    monkeypatch.setattr(store, "_submit", submit)
    monkeypatch.setattr(store, "_transaction", transaction)
    outcomes: dict[str, Any] = {}
    claim = threading.Thread(
        target=lambda: outcomes.update(claimed=[c.record.run_id for c in store.claim(["wf"], 5)])
    )
    claim.start()
    wait_until(writer.busy, what="the writer has the claim")
    outcomes["replaced"] = store.replace(rec("resumed", 4, "running"), 3, hold=True)
    claim.join(10)
    assert lost == [["claim", "replace"]]
    # The replace's caller holds the run (its actor drives it); the claim took only the
    # queued run, as its first try did.
    assert outcomes == {"replaced": True, "claimed": ["queued"]}
    assert store.held() == 2
    assert save(store, rec("resumed", 5, "success")) is None
    assert other.claim(["wf"], 5) == []


def every_outcome(store: PostgresStore, records: list[SnapshotRecord]) -> list[object]:
    """Save ``records`` in one write; every outcome it was told (``"committed"`` or an error).

    Waits for the first, then a moment more: a write is told once, and a second telling
    would show here.
    """
    outcomes: list[object] = []
    done = threading.Event()

    def told(outcome: object) -> None:
        outcomes.append(outcome)
        done.set()

    store.save(records, on_commit=lambda: told("committed"), on_error=told)
    assert done.wait(10)
    time.sleep(0.2)
    return outcomes


def test_saves_whose_commit_reply_was_lost_are_told_committed_once(
    stores: Callable[..., PostgresStore],
) -> None:
    # A batch of saves of held runs is one statement in autocommit: its commit happens as
    # it runs. Tried again after the reply was lost, it finds its records stored already
    # (not newer), the runs still held here: committed, not fenced, told once.
    store, other = stores(), stores()
    store.create(rec("r1"))
    store.create(rec("r2"))
    lost = lose_the_next_commit_ack(store)
    assert every_outcome(store, [rec("r1", 1, "running"), rec("r2", 1, "running")]) == ["committed"]
    assert lost == [1]
    assert store.load("r1") == rec("r1", 1, "running")
    assert store.held() == 2
    assert save(store, rec("r2", 2, "success")) is None
    assert other.load("r2") == rec("r2", 2, "success")
    assert other.claim(["wf"], 5) == []


def test_releases_whose_commit_reply_was_lost_are_told_committed_not_fenced(
    stores: Callable[..., PostgresStore],
) -> None:
    # Saves that let go of their runs (one ends, one sleeps and is due at once), and the
    # reply to their commit is lost; before the writer tries again, another worker
    # claims the sleeper. Tried again, neither row is this worker's: both were told
    # RunFencedError ("held by another worker"), though their records were stored: a run
    # that ended, or a cancel that did, was reported fenced off.
    store, other = stores(), stores()
    store.create(rec("ends"))
    store.create(rec("sleeps"))
    taken: list[list[str]] = []
    lost = lose_the_next_commit_ack(
        store,
        meanwhile=lambda: taken.append([c.record.run_id for c in other.claim(["wf"], 5)]),
    )
    ended, asleep = rec("ends", 1, "success"), rec("sleeps", 1, "waiting", wake_at=1.0)
    assert every_outcome(store, [ended, asleep]) == ["committed"]
    assert (lost, taken) == ([1], [["sleeps"]])
    assert (store.load("ends"), store.load("sleeps")) == (ended, asleep)
    assert store.held() == 0
    assert save(other, rec("sleeps", 2, "success")) is None  # the other worker's to drive


def test_a_prune_whose_commit_reply_was_lost_counts_the_runs_its_first_try_deleted(
    stores: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tried again, a chunk of the prune counted only what its second try deleted: none,
    # or the next chunk's, and `callboard runs prune` said fewer runs than went.
    monkeypatch.setattr(postgres_module, "PRUNE_CHUNK", 3)
    store = stores()
    for index in range(7):
        store.create(rec(f"ended-{index}", 2, "success", updated_at=1_000.0 + index), hold=False)
    store.create(rec("going", 1, "running"), hold=False)
    lost = lose_the_next_commit_ack(store)
    assert store.prune(ended_before=time.time() + 60) == 7
    assert lost == [1]
    assert {record.run_id for record in store.list_runs()[0]} == {"going"}
    # The same, for a chunk whose second try finds the next chunk's runs to delete.
    for index in range(7):
        store.create(rec(f"again-{index}", 2, "success", updated_at=2_000.0 + index), hold=False)
    lost = lose_the_next_commit_ack(store)
    assert store.prune(keep=1) == 6
    assert lost == [1]
    assert len(store.list_runs()[0]) == 2


def test_a_start_into_a_bounded_queue_whose_commit_reply_was_lost_is_not_told_the_queue_is_full(
    stores: Callable[..., PostgresStore],
) -> None:
    # Tried again, the start found its queue full, of its own first try's run: its caller
    # was told QueueFullError (nothing recorded, by the README's word), and the run ran.
    store = stores()
    store.define_queue(QueueLimits("q", max_queued=1))
    lost = lose_the_next_commit_ack(store)
    assert store.create(rec("first", 0, "pending", queue="q"), hold=False) is True
    assert lost == [1]
    assert [record.run_id for record in store.list_runs()[0]] == ["first"]
    with pytest.raises(QueueFullError):  # the queue's one place is taken, by that run
        store.create(rec("second", 0, "pending", queue="q"), hold=False)


def test_a_restart_into_a_bounded_queue_whose_commit_reply_was_lost_is_not_refused(
    stores: Callable[..., PostgresStore],
) -> None:
    # Tried again, the restart found its queue full, of its own first try's run: its
    # caller was told the queue was full (the run not restarted), and the run ran again.
    store = stores()
    store.create(rec("ended", 2, "success", queue="q"), hold=False)
    store.define_queue(QueueLimits("q", max_queued=1))
    lost = lose_the_next_commit_ack(store)
    assert store.replace(rec("ended", 3, "pending", queue="q"), 2, reopen=True) is True
    assert lost == [1]
    loaded = store.load("ended")
    assert loaded is not None and (loaded.seq, loaded.status) == (3, "pending")
    with pytest.raises(QueueFullError):  # the queue's one place is taken, by that run
        store.create(rec("second", 0, "pending", queue="q"), hold=False)


def test_a_delete_whose_commit_reply_was_lost_is_told_it_deleted(
    stores: Callable[..., PostgresStore],
) -> None:
    # Tried again, the delete found no row: it said False, and `callboard runs delete`
    # then said there was no such run, though it had deleted it.
    store = stores()
    store.create(rec("ended", 2, "success"), hold=False)
    store.create(rec("restarted", 2, "success"), hold=False)
    lost = lose_the_next_commit_ack(store)
    assert store.delete("ended") is True
    assert lost == [1]
    assert store.load("ended") is None
    # A run not ended (restarted meanwhile) is still not deleted, doubt or not.
    assert store.replace(rec("restarted", 3, "pending"), 2, reopen=True) is True
    lose_the_next_commit_ack(store)
    assert store.delete("restarted") is False
    assert store.load("restarted") == rec("restarted", 3, "pending")


def lose_a_pooled_connection(store: PostgresStore, *, at_commit: bool) -> list[int]:
    """The next schedules write on a pooled connection loses it: after its commit, or before.

    With ``at_commit``, the commit happens (a transaction's, or an autocommitted
    statement's) and the connection closes before the reply; otherwise the connection
    closes as the statement is sent, which never runs. The schedules' book writes on
    these connections; other statements (the store's own, on other threads) go through
    untouched. Returns a list that counts the connections lost.
    """
    import psycopg

    readers = store._readers
    real_connection = readers.connection
    lost: list[int] = []

    def drop(connection: Any) -> None:
        lost.append(1)
        connection.close()
        raise psycopg.OperationalError("the server's reply was lost")

    @contextlib.contextmanager
    def connection() -> Iterator[Any]:
        with real_connection() as lent:
            if lost:
                yield lent
                return
            real_transaction, real_execute = lent.transaction, lent.execute
            wrote: list[bool] = []

            @contextlib.contextmanager
            def transaction() -> Iterator[Any]:
                with real_transaction() as begun:
                    yield begun
                if wrote and not lost:
                    drop(lent)

            def execute(query: Any, params: Any = None, **options: Any) -> Any:
                text = str(query)
                if lost or "callboard_schedules" not in text or text.startswith("SELECT"):
                    return real_execute(query, params, **options)
                if not at_commit:
                    drop(lent)
                cursor = real_execute(query, params, **options)
                wrote.append(True)
                if lent.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    drop(lent)  # committed as it ran
                return cursor

            lent.transaction = transaction
            lent.execute = execute
            yield lent

    readers.connection = connection  # type: ignore[method-assign]
    return lost


def test_a_schedule_delete_whose_commit_reply_was_lost_is_told_it_deleted(
    stores: Callable[..., PostgresStore],
) -> None:
    # The book's statements go on a pooled connection, tried once more on a new one when
    # that is lost. Tried again after the server committed it, a delete found no row and
    # said False: delete_schedule said there had been no such schedule, and `callboard
    # schedules delete` exited 1.
    store = stores()
    book = book_for(store)
    try:
        book.put(ScheduleRow("s", "report", "* * * * *", "UTC", "{}", "skip", "allow", False, 0))
        lost = lose_a_pooled_connection(store, at_commit=True)
        assert book.delete("s") is True
        assert lost == [1]
        assert book.get("s") is None
        # A schedule that was never there is told so, whichever way the connection went.
        lost = lose_a_pooled_connection(store, at_commit=True)
        assert book.delete("s") is False
        assert lost == [1]
        lost = lose_a_pooled_connection(store, at_commit=False)
        assert book.delete("s") is False
        assert lost == [1]
        # Lost before it ran, a delete of one that is there deletes it on its second try.
        book.put(ScheduleRow("t", "report", "* * * * *", "UTC", "{}", "skip", "allow", False, 0))
        lost = lose_a_pooled_connection(store, at_commit=False)
        assert book.delete("t") is True
        assert lost == [1]
        assert book.all() == []
    finally:
        close_book(store)


def test_a_tick_buffered_by_a_statement_whose_commit_reply_was_lost_stays_buffered(
    stores: Callable[..., PostgresStore],
) -> None:
    # Tried again on a new connection, the advance that buffered a tick behind a run still
    # going took the tick for one that had got its run, and let go of it: it never ran.
    store = stores()
    book = book_for(store)
    try:
        row = ScheduleRow("s", "report", "*/5 * * * *", "UTC", "{}", "skip", "buffer_one", False, 0)
        book.put(row)
        lost = lose_a_pooled_connection(store, at_commit=True)
        assert book.advance("s", 600.0, "left-going", buffer=True)
        assert lost == [1]
        stored = book.get("s")
        assert stored is not None and (stored.last_run_id, stored.buffered) == ("left-going", 600)
    finally:
        close_book(store)


def test_a_cancel_request_whose_commit_reply_was_lost_is_told_it_asked(
    stores: Callable[..., PostgresStore],
) -> None:
    # Tried again, the request found the cancel asked for already (by its own first try)
    # and said False: its caller took the cancel for another's, and cancel() said False.
    store, worker = stores(), stores()
    worker.create(rec("held", 1, "running"))
    lost = lose_the_next_commit_ack(store)
    assert store.request_cancel("held") is True
    assert lost == [1]
    assert worker.cancel_requests() == ["held"]
    assert store.request_cancel("held") is False  # a second caller's: asked for already


def test_a_resume_request_whose_commit_reply_was_lost_is_recorded_however_it_went_since(
    stores: Callable[..., PostgresStore],
) -> None:
    # The writer tries a request again after the reply to its commit was lost. Carried
    # out by the run's worker in between (or dropped, or its run ended), the request was
    # gone and the suspension resumed: the retry said "changed", and its caller raised
    # ResumeConflictError for its own resume, which had been applied.
    holder, client = stores(), stores()
    created_at = rec("r1").created_at

    def request(path: str) -> str:
        return client.request_resume("r1", path, b"d", seq=1, created_at=created_at)

    assert holder.create(rec("r1"))
    assert save(holder, rec("r1", 1, "running")) is None

    def carry_out() -> None:  # the holder's run actor takes it: its record carries it out
        assert save(holder, rec("r1", 2, "running")._replace(taken=("ask[0]",))) is None

    lost = lose_the_next_commit_ack(client, carry_out)
    assert request("ask[0]") == "recorded"
    assert lost == [1]
    assert not client.resume_pending("r1")  # carried out once, not recorded again
    # Found waiting still by the retry: its own, recorded (not "requested").
    lost = lose_the_next_commit_ack(client)
    assert client.request_resume("r1", "ask[1]", b"d", seq=2, created_at=created_at) == ("recorded")
    assert lost == [1]
    [waiting] = holder.resume_requests()
    assert waiting.path == "ask[1]"

    # Dropped by a worker (its run ended) before the retry: recorded, and not again.
    def end_and_drop() -> None:
        assert save(holder, rec("r1", 3, "failed")) is None
        for left in holder.resume_requests():
            holder.drop_resume_request(left)
        wait_until(lambda: not holder.resume_pending("r1"), what="dropped")

    lost = lose_the_next_commit_ack(client, end_and_drop)
    assert client.request_resume("r1", "ask[2]", b"d", seq=2, created_at=created_at) == ("recorded")
    assert lost == [1]
    # Another caller's request of a run that changed since it read it is still refused.
    assert request("ask[3]") == "changed"
    assert not client.resume_pending("r1")


def test_the_ids_of_resume_requests_are_kept_for_a_while_then_pruned(
    postgres_url: str, stores: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_module, "REQUEST_IDS_KEPT", 0.5)
    monkeypatch.setattr(postgres_module, "REQUEST_IDS_PRUNED_EVERY", 0.0)
    holder, client = stores(), stores()
    created_at = rec("r1").created_at
    assert holder.create(rec("r1"))
    assert save(holder, rec("r1", 1, "running")) is None
    assert client.request_resume("r1", "ask[0]", b"d", seq=1, created_at=created_at) == ("recorded")
    time.sleep(0.7)
    assert client.request_resume("r1", "ask[1]", b"d", seq=1, created_at=created_at) == ("recorded")
    kept = sql(postgres_url, "SELECT request_id FROM callboard_resume_request_ids")
    requests = sql(
        postgres_url, "SELECT request_id FROM callboard_resume_requests WHERE path = %s", "ask[1]"
    )
    assert kept == requests  # the first's id pruned, the second's kept
    assert save(holder, rec("r1", 2, "failed")) is None
    assert holder.delete("r1")
    assert sql(postgres_url, "SELECT count(*) FROM callboard_resume_request_ids") == [(0,)]


def save(store: PostgresStore, record: SnapshotRecord) -> BaseException | None:
    """Save one record and wait: ``None`` once committed, else the error."""
    done = threading.Event()
    errors: list[BaseException] = []
    store.save([record], on_commit=done.set, on_error=lambda e: (errors.append(e), done.set()))
    assert done.wait(10)
    return errors[0] if errors else None


def test_hints_beyond_one_notification_go_in_several_all_heard(
    postgres_url: str, stores: Callable[..., PostgresStore]
) -> None:
    import psycopg

    sender, listener = stores(), stores()
    heard: list[tuple[str, str]] = []
    listener.set_hint(lambda kind, run_id: heard.append((kind, run_id)))
    # The listener connects in the background: hint until it hears.
    with psycopg.connect(postgres_url) as connection:

        def first() -> bool:
            hints = postgres_module._Hints()
            hints.add("queued", "warm")
            sender._notify(connection, hints)
            time.sleep(0.05)
            return ("queued", "warm") in heard

        wait_until(first, timeout=10, what="a first hint")
        hints = postgres_module._Hints()
        many = [("settled", f"run-{index:04d}-" + "x" * 40) for index in range(400)]
        for kind, run_id in many:
            hints.add(kind, run_id)
        sender._notify(connection, hints)  # about 24 kB: four notifications
    wait_until(lambda: all(hint in heard for hint in many), timeout=10, what="every hint")


def test_a_batch_that_saves_a_run_more_than_once_is_still_one_statement(
    stores: Callable[..., PostgresStore],
) -> None:
    # A run's first step does not wait for the commit of its running snapshot, so the next
    # save of the run often joins it in the writer's queue: the batch writes the newest
    # record only, in one statement in autocommit, not a transaction of rounds.
    from tests.test_shared_store import queued_saves

    store = stores()
    store.create(rec("mine"))
    store.create(rec("r1"))
    connection = store._wconn
    assert connection is not None
    real_execute = connection.execute
    statements: list[tuple[bool, str]] = []

    def execute(query: Any, params: Any = None, **options: Any) -> Any:
        statements.append((connection.autocommit, str(query)))
        return real_execute(query, params, **options)

    connection.execute = execute  # type: ignore[method-assign]
    outcomes = queued_saves(store, rec("r1", 1, "running"), rec("r1", 2, "running"))
    assert [outcome.committed for outcome in outcomes] == [True] * 3
    saves = [(autocommit, query) for autocommit, query in statements if "set_config" not in query]
    assert len(saves) == 2, saves  # the first batch's statement, then the second's
    assert all(autocommit for autocommit, _ in saves)
    assert store.load("r1") == rec("r1", 2, "running")


def test_a_stopped_runtime_leaves_its_store_to_the_garbage_collector(postgres_url: str) -> None:
    # Its schedule book was kept by store in a weak mapping, and held the store itself:
    # every runtime started and stopped in a process left its store behind for good.
    import gc
    import weakref

    from runtime import Runtime

    stores = []
    for _ in range(3):
        rt = Runtime(store=postgres_url).start()
        assert rt.store is not None
        stores.append(weakref.ref(rt.store))
        rt.stop()
        del rt
    gc.collect()
    assert [ref() for ref in stores] == [None, None, None]


def test_reads_share_the_open_connections_when_the_server_refuses_one_more(
    postgres_server: Server, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A role limited to three connections: the writer's and two for reads. Eight threads
    # reading at once made a third read connection, which the server refused: the read
    # raised StoreUnavailableError ("too many connections for role"), where the two open
    # ones would have come free within milliseconds.
    from urllib.parse import urlsplit

    if postgres_server.external is not None:
        pytest.skip("CALLBOARD_TEST_POSTGRES names a server these tests may not add roles to")
    monkeypatch.setattr(postgres_module, "CROWDED_PAUSE", 0.5)  # one more tried again soon
    role = f"crowded_{os.getpid()}"
    dbname = urlsplit(postgres_url).path.lstrip("/")
    with postgres_server.admin() as connection:
        connection.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 3")
        connection.execute(f"GRANT ALL ON DATABASE {dbname} TO {role}")
    with postgres_server.admin(dbname) as connection:
        connection.execute(f"GRANT ALL ON SCHEMA public TO {role}")
    store = None
    try:
        store = PostgresStore(postgres_url.replace("user=postgres", f"user={role}"))
        store.create(rec("r1"))
        errors: list[BaseException] = []

        def read() -> None:
            try:
                for _ in range(150):
                    found = store.load("r1")
                    assert found is not None and found.run_id == "r1"
            except BaseException as exc:
                errors.append(exc)

        with capture_logs() as logs:
            readers = [threading.Thread(target=read) for _ in range(8)]
            for thread in readers:
                thread.start()
            for thread in readers:
                thread.join(60)
        assert not errors, errors[0]
        crowded = [e for e in logs if e["event"] == "store_connections_crowded"]
        assert crowded, "the refusal was never met: the test proves nothing"
        assert "too many connections" in crowded[0]["error"]
        # Two, but for connections that began at once: the server counts them loosely.
        assert crowded[0]["open"] >= 1
    finally:
        if store is not None:
            store.close()
        with postgres_server.admin(dbname) as connection:
            connection.execute(f"REASSIGN OWNED BY {role} TO postgres")
            connection.execute(f"DROP OWNED BY {role}")
        with postgres_server.admin() as connection:
            connection.execute(f"DROP ROLE {role}")
