"""While a PostgreSQL store cannot be reached: waits wait it out, other calls say so.

A query, cancel or resume made while the server is down raises
``StoreUnavailableError`` at once (the caller decides whether to try again);
``wait()``, ``wait_async()`` and ``watch()`` read the store again until it
answers or their timeout passes, and only then raise it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runtime import PostgresStore, Runtime, StoreError, StoreUnavailableError
from tests._support import wait_until
from tests.durable._support.workflows import read_lines
from tests.shared._workflows import WORKFLOWS, held_in_beta

WAIT = 60.0


@pytest.mark.postgres
def test_waits_outlast_a_postgresql_outage_and_other_calls_say_it_is_unavailable(
    postgres_server: Any, postgres_url: str, tmp_path: Path
) -> None:
    if not postgres_server.restartable:
        pytest.skip("CALLBOARD_TEST_POSTGRES names a server these tests may not restart")
    log, hold = tmp_path / "run.log", tmp_path / "hold"
    hold.touch()
    with Runtime(store=postgres_url) as rt:
        wf, run = held_in_beta(rt, log, hold, within=WAIT)

        results: list[Any] = []
        events: list[Any] = []
        waiters = [
            threading.Thread(target=lambda: results.append(run.wait(timeout=WAIT))),
            threading.Thread(
                target=lambda: results.append(asyncio.run(run.wait_async(timeout=WAIT)))
            ),
            threading.Thread(target=lambda: events.extend(run.watch(timeout=WAIT))),
        ]
        postgres_server.stop()
        try:
            with pytest.raises(StoreUnavailableError, match="cannot"):
                wf.get_workflow_run_execution_result(run.run_id)
            with pytest.raises(StoreUnavailableError):
                run.cancel()
            began = time.monotonic()
            with pytest.raises(StoreUnavailableError):
                run.wait(timeout=0.5)
            assert time.monotonic() - began >= 0.5  # it waited out its timeout first
            with pytest.raises(StoreUnavailableError):
                asyncio.run(run.wait_async(timeout=0.5))
            with pytest.raises(StoreUnavailableError):
                run.watch(timeout=0.5)
            for waiter in waiters:
                waiter.start()
            time.sleep(1.5)
            assert all(waiter.is_alive() for waiter in waiters)  # still waiting: no error
            hold.unlink()  # beta ends while the server is down: its save waits
        finally:
            postgres_server.start()
        for waiter in waiters:
            waiter.join(WAIT)
        assert [r.status for r in results] == ["success", "success"]
        assert results[0].result == {"value": "x-a-b-c"}
        assert events and events[-1].status == "success"
        assert read_lines(log).count("start alpha") == 1


@pytest.mark.postgres
def test_starts_through_a_lasting_outage_are_told_in_seconds_while_waits_wait_it_out(
    postgres_server: Any, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each start waited the whole 30 s through an outage of any length: a daemon's request
    # handlers hung one after another. Once every write has failed for REFUSAL_PATIENCE, a
    # start waits REFUSED_WAIT (2 s) at most; the runs and waits on them wait it out.
    if not postgres_server.restartable:
        pytest.skip("CALLBOARD_TEST_POSTGRES names a server these tests may not restart")
    import runtime._stores._writer as writer_module
    import runtime._stores.postgres as postgres_module

    monkeypatch.setattr(writer_module, "REFUSAL_PATIENCE", 0.5)
    monkeypatch.setattr(postgres_module, "CALL_TIMEOUT", WAIT)
    log, hold = tmp_path / "run.log", tmp_path / "hold"
    hold.touch()
    with Runtime(store=postgres_url) as rt:
        wf, run = held_in_beta(rt, log, hold, within=WAIT)
        results: list[Any] = []
        waiter = threading.Thread(target=lambda: results.append(run.wait(timeout=WAIT)))
        postgres_server.stop()
        try:
            waiter.start()
            hold.unlink()  # beta ends: the writer tries its save, and fails, again and again
            wait_until(lambda: "end beta" in read_lines(log), timeout=WAIT, what="beta ends")
            time.sleep(1.5)  # past the patience, tried more than once
            late = wf.create_run()
            with pytest.raises(StoreUnavailableError) as raised:
                late.start_async(input_data={"value": "late"})
            told = str(raised.value)
            assert "did not commit within 2 s (every write has failed for" in told, told
            assert waiter.is_alive()  # the wait waits it out: no error
        finally:
            postgres_server.start()
        waiter.join(WAIT)
        assert [r.status for r in results] == ["success"]
        assert wf.get_workflow_run_execution_result(late.run_id) is None
        after = wf.create_run().start(
            input_data={"value": "y"}, request_context={"log": str(log)}, timeout=WAIT
        )
        assert after.status == "success", after.error


@pytest.mark.postgres
def test_a_store_that_never_opened_is_a_plain_store_error(postgres_url: str) -> None:
    # libpq gives no code that tells an unreachable server from a wrong password: until
    # the store has opened once, a failure to connect is not said to be passing.
    with pytest.raises(StoreError, match="cannot connect") as raised:
        Runtime(store=postgres_url.replace("port=", "port=1"), role="worker").start()
    assert not isinstance(raised.value, StoreUnavailableError)


@pytest.mark.postgres
def test_a_database_read_only_for_a_while_holds_its_runs_writes_until_it_is_writable(
    postgres_server: Any, postgres_url: str, tmp_path: Path
) -> None:
    # What a client that reconnected to a standby before its promotion sees (SQLSTATE
    # 25006). Each write was refused for good: the step's output and then the run's
    # failure, and the run stayed 'running', held by a live worker with no actor.
    log, hold = tmp_path / "run.log", tmp_path / "hold"
    hold.touch()
    dbname = postgres_url.split("///", 1)[1].split("?", 1)[0]
    with Runtime(store=postgres_url) as rt:
        _, run = held_in_beta(rt, log, hold, within=WAIT)
        _read_only(postgres_server, dbname, True)
        try:
            hold.unlink()  # beta ends: its output cannot be written for now
            wait_until(lambda: "end beta" in read_lines(log), timeout=WAIT, what="beta ends")
            time.sleep(1.0)  # its save is tried and refused meanwhile
        finally:
            _read_only(postgres_server, dbname, False)
        result = run.wait(timeout=WAIT)
        assert result.status == "success", result.error
        assert result.result == {"value": "x-a-b-c"}
        assert read_lines(log).count("start beta") == 1


@pytest.mark.postgres
def test_a_start_given_up_says_why_the_store_kept_trying(
    postgres_server: Any, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It said only "did not commit within 30 s": the cause (too many connections, a
    # statement timeout, a read-only database) was in the writer's log lines alone.
    import runtime._stores.postgres as postgres_module

    monkeypatch.setattr(postgres_module, "CALL_TIMEOUT", 1.0)
    dbname = postgres_url.split("///", 1)[1].split("?", 1)[0]
    with Runtime(store=postgres_url) as rt:
        wf = rt.register(WORKFLOWS["logged"])
        _read_only(postgres_server, dbname, True)
        try:
            with pytest.raises(StoreUnavailableError, match="did not commit") as raised:
                wf.create_run().start_async(input_data={"value": "x"})
            assert "its last try: cannot execute" in str(raised.value)
            assert "read-only transaction" in str(raised.value)
        finally:
            _read_only(postgres_server, dbname, False)


def _read_only(server: Any, dbname: str, on: bool) -> None:
    """Make the database read-only (or writable again) for every session from now on.

    Sessions take the setting when they begin: the store's are cut off, to begin anew.
    """
    setting = (
        "SET default_transaction_read_only = on" if on else "RESET default_transaction_read_only"
    )
    with server.admin() as admin:
        admin.execute(f'ALTER DATABASE "{dbname}" {setting}')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )


@pytest.mark.postgres
def test_a_run_whose_acknowledged_commits_the_server_lost_is_taken_up_again_after_a_reconnect(
    postgres_server: Any, postgres_url: str, tmp_path: Path
) -> None:
    # A server that crashes with synchronous_commit off (or fails over to an asynchronous
    # standby) may lose commits it acknowledged. The worker had let go of its run; the
    # database had it 'running' again, owned by that live worker, and nothing took it up.
    if not postgres_server.restartable:
        pytest.skip("CALLBOARD_TEST_POSTGRES names a server these tests may not restart")
    log, hold = tmp_path / "run.log", tmp_path / "hold"
    hold.touch()
    dbname = postgres_url.split("///", 1)[1].split("?", 1)[0]
    with Runtime(store=postgres_url) as rt:
        _, run = held_in_beta(rt, log, hold, within=WAIT)
        with postgres_server.admin(dbname) as admin:
            columns = [
                name
                for (name,) in admin.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = 'callboard_runs' AND is_generated = 'NEVER'"
                ).fetchall()
            ]
            cursor = admin.execute(
                f"SELECT {', '.join(columns)} FROM callboard_runs WHERE run_id = %s",
                (run.run_id,),
            )
            kept = dict(zip(columns, cursor.fetchone(), strict=True))
            parts = admin.execute(
                "SELECT lineage, key, part FROM callboard_run_parts WHERE run_id = %s",
                (run.run_id,),
            ).fetchall()
        assert kept["status"] == "running" and kept["owner_id"] is not None
        hold.unlink()
        assert run.wait(timeout=WAIT).status == "success"

        # The crash took the commits since: the row is as it was while beta ran.
        with postgres_server.admin(dbname) as admin:
            assigned = ", ".join(f"{name} = %({name})s" for name in columns if name != "run_id")
            admin.execute(f"UPDATE callboard_runs SET {assigned} WHERE run_id = %(run_id)s", kept)
            admin.execute("DELETE FROM callboard_run_parts WHERE run_id = %s", (run.run_id,))
            for lineage, key, part in parts:
                admin.execute(
                    "INSERT INTO callboard_run_parts (run_id, lineage, key, part) "
                    "VALUES (%s, %s, %s, %s)",
                    (run.run_id, lineage, key, part),
                )
        # ...and the server comes back from its crash.
        postgres_server.stop()
        postgres_server.start()

        def settled() -> bool:
            with postgres_server.admin(dbname) as admin:
                row = admin.execute(
                    "SELECT status, owner_id FROM callboard_runs WHERE run_id = %s",
                    (run.run_id,),
                ).fetchone()
            return row == ("success", None)

        wait_until(settled, timeout=WAIT, what="the run taken up again and ended")
        assert read_lines(log).count("start beta") == 2  # from its last record kept
        assert read_lines(log).count("start alpha") == 1


@pytest.mark.postgres
def test_health_says_not_ready_through_an_outage_at_once_and_ready_after(
    postgres_server: Any, postgres_url: str
) -> None:
    """A readiness probe is told within its patience, without waiting on the server."""
    if not postgres_server.restartable:
        pytest.skip("CALLBOARD_TEST_POSTGRES names a server these tests may not restart")
    with Runtime(store=PostgresStore(postgres_url, lease=1.0)) as rt:
        assert rt.health(patience=0.5).ready
        postgres_server.stop()
        try:
            wait_until(lambda: not rt.health(patience=0.5).ready, timeout=WAIT, what="unready")
            began = time.monotonic()
            said = rt.health(patience=0.5)
            assert time.monotonic() - began < 0.05  # answered from memory
            assert said.live and said.problems
            assert said.writes_failing_for is not None or said.lease_renewed_ago is not None
        finally:
            postgres_server.start()
        wait_until(lambda: rt.health(patience=0.5).ready, timeout=WAIT, what="ready again")
