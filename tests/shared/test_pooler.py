"""A PostgreSQL store reached through a pooler in transaction mode (PgBouncer, Supavisor).

Such a pooler lends a server connection for one transaction at a time, so
nothing a session keeps between transactions may be relied on: psycopg's
prepared statements (the first runs through one failed with ``prepared
statement "_pg3_3" does not exist``, their records refused), a session's
``SET lock_timeout`` (left behind for the pooler's next client), a ``LISTEN``.
These tests put :class:`tests._pooler.TransactionPooler` between the store
and the throwaway cluster: the runs finish, nothing is left set on the server's
connections, a write gives up a lock after ``lock_timeout``, and a direct
connection keeps its prepared statements. (Fleets of worker processes and a
client go through it in every fleet test: the ``[pooled]`` ones in this folder.)
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from runtime import PostgresStore, Runtime, create_step, create_workflow
from runtime._stores.postgres import LOCK_TIMEOUT, PREPARE_THRESHOLD
from tests._pooler import TransactionPooler
from tests._support import N, wait_until

pytestmark = pytest.mark.postgres

WAIT = 60.0


def _add_one(ctx: Any) -> N:
    return N(n=ctx.input_data.n + 1)


def _three_steps() -> Any:
    workflow = create_workflow(id="pooled", input_schema=N, output_schema=N)
    for name in ("a", "b", "c"):
        workflow = workflow.then(
            create_step(id=name, input_schema=N, output_schema=N, execute=_add_one)
        )
    return workflow.commit()


def test_runs_finish_through_a_pooler_in_transaction_mode(
    pooler: TransactionPooler, pooled_url: str
) -> None:
    with capture_logs() as logs, Runtime(store=pooled_url) as rt:
        wf = rt.register(_three_steps())
        runs = [wf.create_run() for _ in range(60)]
        for index, run in enumerate(runs):
            run.start_async(input_data={"n": index})
        results = [run.wait(timeout=WAIT) for run in runs]
        assert [r.status for r in results] == ["success"] * 60, [r.error for r in results]
        assert [r.result for r in results] == [{"n": index + 3} for index in range(60)]
        store = rt.store
        assert isinstance(store, PostgresStore)
        assert store._pooled
    # Each statement would have been run more than psycopg's threshold times, on server
    # connections taken in turn: prepared, they were missing on the next one.
    assert pooler.server_connections >= 2
    assert pooler.transactions > 60
    told = [e for e in logs if e["event"] == "store_behind_pooler"]
    assert len(told) == 1, told
    assert "prepared" in told[0]["hint"]


def test_no_setting_of_the_store_is_left_on_the_servers_connections(
    pooler: TransactionPooler, pooled_url: str
) -> None:
    with Runtime(store=pooled_url) as rt:
        wf = rt.register(_three_steps())
        for index in range(10):
            wf.create_run().start(input_data={"n": index})
    # Another client of the pooler, on each of its server connections in turn.
    seen = set()
    with psycopg.connect(pooled_url, autocommit=True, prepare_threshold=None) as other:
        for _ in range(12):
            row = other.execute("SHOW lock_timeout").fetchone()
            assert row is not None
            seen.add(row[0])
    assert seen == {"0"}, f"the store's session settings were left behind: {seen}"


def test_a_write_through_a_pooler_gives_up_a_lock_after_lock_timeout(
    pooled_url: str, postgres_url: str
) -> None:
    with Runtime(store=pooled_url) as rt:
        wf = rt.register(_three_steps())
        run = wf.create_run()
        run.start(input_data={"n": 1})
        done: list[Any] = []
        with capture_logs() as logs, psycopg.connect(postgres_url) as holder:
            holder.execute(
                "SELECT 1 FROM callboard_runs WHERE run_id = %s FOR UPDATE", (run.run_id,)
            )
            deleting = threading.Thread(
                target=lambda: done.append(wf.delete_workflow_run_by_id(run.run_id))
            )
            began = time.monotonic()
            deleting.start()
            # Without a lock_timeout in its transaction, the writer would wait for as
            # long as the lock is held, saying nothing.
            wait_until(
                lambda: any(
                    e["event"] == "store_write_retrying" and "lock" in e["error"] for e in logs
                ),
                WAIT,
                "the writer gave up the lock and said so",
            )
            assert time.monotonic() - began >= LOCK_TIMEOUT * 0.8
            assert not done
            holder.rollback()
        deleting.join(WAIT)
        assert done == [True]


def test_a_direct_connection_still_prepares_its_statements(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    try:
        assert not store._pooled
        connection = store._connection()
        assert connection.prepare_threshold == PREPARE_THRESHOLD
        with store._readers.connection() as reader:
            assert reader.prepare_threshold == PREPARE_THRESHOLD
            row = reader.execute("SHOW lock_timeout").fetchone()
        assert row is not None and row[0] == f"{int(LOCK_TIMEOUT)}s"
    finally:
        store.close()
