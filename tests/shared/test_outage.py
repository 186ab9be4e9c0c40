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

from runtime import Runtime, StoreError, StoreUnavailableError
from tests._support import wait_until
from tests.durable._support.workflows import read_lines
from tests.shared._workflows import WORKFLOWS

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
        wf = rt.register(WORKFLOWS["logged"])
        run = wf.create_run()
        run.start_async(
            input_data={"value": "x"},
            request_context={"log": str(log), "hold_step": "beta", "hold_file": str(hold)},
        )
        wait_until(lambda: "start beta" in read_lines(log), timeout=WAIT, what="beta holds")

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
def test_a_store_that_never_opened_is_a_plain_store_error(postgres_url: str) -> None:
    # libpq gives no code that tells an unreachable server from a wrong password: until
    # the store has opened once, a failure to connect is not said to be passing.
    with pytest.raises(StoreError, match="cannot connect") as raised:
        Runtime(store=postgres_url.replace("port=", "port=1"), role="worker").start()
    assert not isinstance(raised.value, StoreUnavailableError)
