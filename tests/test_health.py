"""``Runtime.health()``: live and ready, or why not, from memory, with no call to the store.

A daemon's liveness probe asks whether the runtime runs (restart the process if
not); its readiness probe whether it can record runs now (it may come back by
itself). The answer never waits on the store: a probe that hangs on an
unreachable database is worse than none.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

import actors._dispatch as dispatch_module
from actors.supervisor import SupervisorActor
from runtime import (
    Runtime,
    RuntimeHealth,
    RunTimeoutError,
    SQLiteStore,
    create_workflow,
)
from tests._support import Value, shout_step, wait_until


def test_a_runtime_is_live_and_ready_only_while_it_runs() -> None:
    rt = Runtime()
    before = rt.health()
    assert isinstance(before, RuntimeHealth)
    assert (before.state, before.live, before.ready) == ("new", False, False)
    assert before.problems == ("the runtime has not started",)
    with rt:
        running = rt.health()
        assert (running.state, running.live, running.ready, running.problems) == (
            "running",
            True,
            True,
            (),
        )
        assert running.writes_failing_for is None and running.lease_renewed_ago is None
    after = rt.health()
    assert (after.state, after.live, after.ready) == ("stopped", False, False)
    assert after.problems == ("the runtime is stopped",)


def _always_fails(self: Any, message: Any) -> None:
    raise RuntimeError("a handler that always fails")


def test_a_runtime_that_stopped_itself_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch_module, "MAX_FAULTS", 2)
    monkeypatch.setattr(SupervisorActor, "_on_run_ended", _always_fails)
    workflow = (
        create_workflow(id="health-broken", input_schema=Value, output_schema=Value)
        .then(shout_step())
        .commit()
    )
    rt = Runtime(stop_timeout=1).start()
    try:
        wf = rt.register(workflow)
        for index in range(3):  # the third fault is one too many
            with contextlib.suppress(RunTimeoutError):
                wf.create_run().start(input_data={"value": f"v{index}"}, timeout=0.5)
        wait_until(lambda: not rt.health().live, what="the runtime stopped itself")
        said = rt.health()
        assert not said.ready
        [problem] = said.problems
        assert problem.startswith("the runtime stopped itself: ") and "failed 3 times" in problem
    finally:
        rt.stop()


def test_a_store_locked_for_longer_than_the_patience_is_not_ready_then_is_again(
    tmp_path: Path,
) -> None:
    """Another process holds the SQLite file's write lock: every write fails, the lease lapses."""
    db = tmp_path / "runs.db"
    with Runtime(store=SQLiteStore(db, lease=0.5)) as rt:
        assert rt.health().ready
        lease = rt.health().lease_renewed_ago
        assert lease is not None and lease < 0.5
        with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as other:
            other.execute("BEGIN EXCLUSIVE")
            # The lease lapses first: the heartbeat waits on the lock (up to LOCK_TIMEOUT)
            # before it counts as failed.
            wait_until(lambda: not rt.health(patience=0.2).ready, timeout=30, what="not ready")
            began = time.monotonic()
            said = rt.health(patience=0.2)
            assert time.monotonic() - began < 0.05  # from memory: the lock holds no probe
            assert said.live and "past its lease of 0.5 s" in said.problems[-1]
            wait_until(lambda: len(rt.health(patience=0.2).problems) == 2, timeout=30, what="both")
            assert rt.health().writes_failing_for is not None
            failing, lapsed = rt.health(patience=0.2).problems
            assert (
                failing.startswith("every write to the run store") and "has failed for" in failing
            )
            assert "(its last try: another process holds the file's write lock)" in failing
            assert "past its lease of 0.5 s" in lapsed
            # A patience longer than the lock has held says nothing of the writes.
            assert not any("every write" in p for p in rt.health(patience=3600).problems)
            other.execute("ROLLBACK")
        wait_until(lambda: rt.health(patience=0.2).ready, timeout=30, what="ready again")
        assert rt.health().writes_failing_for is None


def test_patience_must_be_a_number() -> None:
    with Runtime() as rt:
        with pytest.raises(TypeError, match="patience"):
            rt.health(patience="5")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="patience"):
            rt.health(patience=math.nan)
        assert rt.health(patience=-1).ready  # none left: as ready as any
