"""While the store refuses every write, the lease thread's beats fail at once, and it says so once.

A worker's heartbeat met by a store that refuses writes (a read-only SQLite
file, a PostgreSQL role stripped of its privileges) raises
``StoreUnavailableError`` saying so at the first try, not after the write's
whole timeout, also when it goes through the writer behind the runs' refused
writes. The lease thread then tries again every second (at most every quarter
lease), logs ``lease_renewal_failed`` when its beats begin to fail and
``lease_renewal_recovered`` when one succeeds, not at every beat, and renews the
lease as soon as the store takes writes again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import actors.claimer as claimer_module
import runtime._stores.postgres as postgres_module
from actors.claimer import Claimer
from runtime import Runtime, SQLiteStore, StoreUnavailableError
from tests._support import actor_system, wait_until
from tests.durable._support.workflows import read_lines
from tests.shared._refusal import (
    Refusable,
    failures_of,
    refusable_fixture,
    told_at_once,
)
from tests.shared._workflows import held_in_beta

WAIT = 60.0
TIMEOUT = 12.0
"""The write's timeout here (30 s by default): a beat that waited for it shows."""
BEAT = 0.5
"""Seconds between two beats of the lease thread here (a quarter lease, at most 2 s)."""
FAILED_BEATS = 3
"""Beats that fail after the first before the refusal ends: several, each told at once
(well within one write's timeout), the log saying the failure once."""
ROLE = "callboard_refused_lease"


refusable = refusable_fixture(
    timeout=TIMEOUT,
    role=ROLE,
    before=lambda monkeypatch: monkeypatch.setattr(claimer_module, "HEARTBEAT_EVERY", BEAT),
)


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def _heartbeat_age(store: Any) -> float:
    [me] = [worker for worker in store.workers() if worker.worker_id == store.owner_id]
    return float(me.heartbeat_age)


def test_the_lease_thread_says_a_refusal_once_tries_again_at_once_and_renews_after_it(
    refusable: Refusable, monkeypatch: pytest.MonkeyPatch
) -> None:
    with capture_logs() as logs, Runtime(store=refusable.location) as rt:
        store: Any = rt.store
        # The lease thread's failed beats are counted, so that the refusal lasts until
        # several failed (rather than for a fixed time a loaded machine may fill with fewer).
        claimer = actor_system(rt).claimer
        assert claimer is not None
        guard = claimer._guard
        failures = failures_of(monkeypatch, guard, "beat")
        refusable.refuse(rt, True)
        try:
            # A beat is told at once (the lease thread's may be under way beside it).
            error = told_at_once("a heartbeat", store.heartbeat, refusable.says, timeout=TIMEOUT)
            assert "the lease was not renewed" in str(error)
            wait_until(
                lambda: _events(logs, "lease_renewal_failed"), timeout=WAIT, what="a beat fails"
            )
            began = time.monotonic()
            wait_until(
                lambda: len([at for at in failures if at > began]) >= FAILED_BEATS,
                timeout=WAIT,
                what=f"{FAILED_BEATS} more beats fail",
            )
            refused_for = time.monotonic() - began
            failed = _events(logs, "lease_renewal_failed")
            assert len(failed) == 1, failed
            assert "refuses writes" in failed[0]["error"], failed
            assert refusable.says in failed[0]["error"], failed
            assert failed[0]["worker"] == store.owner_id
            assert _events(logs, "lease_renewal_recovered") == []
            stale = _heartbeat_age(store)
            assert stale >= refused_for, "the lease was renewed during the refusal"
        finally:
            refusable.refuse(rt, False)
        wait_until(
            lambda: _events(logs, "lease_renewal_recovered"), timeout=WAIT, what="a beat succeeds"
        )
        [recovered] = _events(logs, "lease_renewal_recovered")
        assert recovered["worker"] == store.owner_id
        # Several beats failed, each told at once: one that waited out the write's
        # timeout would have taken TIMEOUT for each (and failed none in a refusal shorter).
        assert recovered["failed_passes"] >= 3, recovered
        assert recovered["failed_for"] < (recovered["failed_passes"] - 1) * TIMEOUT, recovered
        assert recovered["failed_for"] >= refused_for - 1, recovered
        assert len(_events(logs, "lease_renewal_failed")) == 1
        assert _events(logs, "lease_renewal_crashed") == []
        # The lease is renewed: the worker's row has a fresh heartbeat again.
        assert _heartbeat_age(store) < stale


def test_a_heartbeat_queued_behind_the_runs_refused_writes_is_told_at_once(
    refusable: Refusable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, hold = tmp_path / "run.log", tmp_path / "hold"
    hold.touch()
    with Runtime(store=refusable.location) as rt:
        store: Any = rt.store
        if isinstance(store, postgres_module.PostgresStore):
            # Through the writer, as a beat that found its row gone goes (the lease is
            # renewed beside it otherwise, on a connection of its own).
            monkeypatch.setattr(store, "_renewed", lambda: False)
        logged, run = held_in_beta(rt, log, hold, within=WAIT)
        refusable.refuse(rt, True)
        try:
            hold.unlink()
            wait_until(lambda: "end beta" in read_lines(log), timeout=WAIT, what="beta ends")
            time.sleep(0.3)  # its output reaches the writer, and is refused
            error = told_at_once("a heartbeat", store.heartbeat, refusable.says, timeout=TIMEOUT)
            assert "the lease was not renewed" in str(error)
            result = logged.get_workflow_run_execution_result(run.run_id)
            assert result is not None and result.status == "running"  # its output waits
        finally:
            refusable.refuse(rt, False)
        assert run.wait(timeout=WAIT).status == "success"
        assert store.heartbeat() is True


def test_a_failed_beat_is_tried_again_within_a_second_not_a_quarter_lease_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _structlog_reset: None
) -> None:
    # A quarter lease of a minute: the beat after a failed one comes a second later, so
    # that a short refusal lapses the lease no sooner than a beat that waited it out did.
    every = 60.0
    monkeypatch.setattr(claimer_module, "HEARTBEAT_EVERY", every)
    store = SQLiteStore(tmp_path / "runs.db", lease=4 * every)
    heartbeat = store.heartbeat
    beats: list[bool] = []

    def refused_twice() -> bool:
        beats.append(len(beats) >= 2)
        if not beats[-1]:
            raise StoreUnavailableError("refused for the test")
        return heartbeat()

    store.heartbeat = refused_twice  # type: ignore[method-assign]
    with capture_logs() as logs:
        claimer = Claimer(
            store,
            plans=dict,
            capacity=None,
            executes=False,
            take=lambda _claimed, _generation: None,
            cancel=lambda _run_id, done: done(),
        )
        try:
            wait_until(
                lambda: _events(logs, "lease_renewal_recovered"),
                timeout=every / 2,
                what="a beat succeeds",
            )
            [recovered] = _events(logs, "lease_renewal_recovered")
            assert recovered["failed_passes"] == 2, recovered
            assert recovered["failed_for"] < every / 2, recovered
            assert beats[:3] == [False, False, True]
            assert len(_events(logs, "lease_renewal_failed")) == 1
        finally:
            claimer.stop(5)
            store.close()
