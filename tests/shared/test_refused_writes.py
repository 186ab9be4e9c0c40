"""While the store refuses every write (a read-only file, privileges revoked), waits are told.

The runs' writes wait in memory and are tried again, at most once a second,
as on a full disk; once the refusal has lasted ``REFUSAL_PATIENCE`` seconds a
wait on a run that has not ended raises ``StoreUnavailableError`` with the
database's message, the log says it once, and everything goes on, nothing
lost, once the store takes writes again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import runtime._stores._writer as writer_module
from runtime import Runtime, StoreError, StoreUnavailableError
from tests._support import wait_until
from tests.durable._support.workflows import read_lines
from tests.shared._refusal import Outcomes, sqlite_refusable, stripped_role
from tests.shared._workflows import held_in_beta

WAIT = 60.0
PATIENCE = 0.5
TOLD_WITHIN = 15.0
"""Seconds a wait may take to be told: the patience, and a retry a second at most."""
REFUSED_START_WITHIN = 5.0
"""Seconds a start may take to raise once the refusal outlasted the patience (REFUSED_WAIT)."""
ROLE = "callboard_refused"


@pytest.fixture(autouse=True)
def _short_patience(monkeypatch: pytest.MonkeyPatch, _structlog_reset: None) -> None:
    monkeypatch.setattr(writer_module, "REFUSAL_PATIENCE", PATIENCE, raising=False)


def test_waits_on_a_sqlite_file_that_refuses_writes_are_told_and_the_run_ends_once_it_takes_them(
    tmp_path: Path,
) -> None:
    refusable = sqlite_refusable(tmp_path / "runs.db")
    _told_then_recovered(refusable.location, tmp_path, refusable.refuse, refusable.says)


@pytest.mark.postgres
def test_waits_on_a_postgresql_role_stripped_of_writes_are_told_and_the_run_ends_once_granted(
    postgres_server: Any, postgres_url: str, tmp_path: Path
) -> None:
    refusable = stripped_role(postgres_server, postgres_url, ROLE, "INSERT, UPDATE")
    _told_then_recovered(refusable.location, tmp_path, refusable.refuse, refusable.says)


def _told_then_recovered(
    location: str, tmp_path: Path, refuse: Callable[[Runtime, bool], None], says: str
) -> None:
    log, hold = tmp_path / "run.log", tmp_path / "hold"
    hold.touch()
    with capture_logs() as logs, Runtime(store=location) as rt:
        wf, run = held_in_beta(rt, log, hold, within=WAIT)
        # No timeout: it was for ever.
        waits = Outcomes(run.wait, lambda: asyncio.run(run.wait_async()))
        refuse(rt, True)
        try:
            waits.start()
            time.sleep(0.2)  # both wait before beta's output is refused
            hold.unlink()
            assert waits.join(TOLD_WITHIN), "a wait was never told"
            assert len(waits.ended) == 2
            for outcome in waits.ended:
                assert isinstance(outcome, StoreUnavailableError), outcome
                assert says in str(outcome) and run.run_id in str(outcome)
            # A wait begun now is told at once.
            with pytest.raises(StoreUnavailableError, match=says):
                run.wait()
            # A start is told within a try or two, not after the 30 s a write may wait.
            began = time.monotonic()
            refused_start = wf.create_run()
            with pytest.raises(StoreError, match=says):
                refused_start.start_async(input_data={"value": "y"})
            assert time.monotonic() - began < REFUSED_START_WITHIN
            time.sleep(1.5)  # more tries, each refused, none said again
        finally:
            refuse(rt, False)
        wait_until(
            lambda: any(e["event"] == "store_writes_accepted" for e in logs),
            timeout=WAIT,
            what="the store takes writes again",
        )
        result = run.wait(timeout=WAIT)
        assert result.status == "success", result.error
        assert result.result == {"value": "x-a-b-c"}
        assert read_lines(log).count("start beta") == 1
        assert read_lines(log).count("start gamma") == 1
        # A start that raised was never recorded, then or since.
        assert wf.get_workflow_run_execution_result(refused_start.run_id) is None
    events = [e["event"] for e in logs]
    assert events.count("store_write_refused") == 1
    assert events.count("store_refuses_writes") == 1
    assert events.count("store_writes_accepted") == 1
    assert "store_write_failed" not in events and "snapshot_refused" not in events
