"""While the store refuses every write, deletes and prunes fail at once, and the log stays calm.

A delete of a run and a prune (``delete_workflow_run_by_id``, ``store.prune``,
``callboard runs prune``) met by a store that refuses writes (a read-only SQLite
file, a PostgreSQL role stripped of its privileges) raise ``StoreUnavailableError``
with the database's message at the first try, not after the write's whole
timeout, and delete nothing; once the store takes writes again they work. The
pruner of a retention policy, whose passes then fail at once, and the claimer,
whose passes fail at once while a run's deadline cannot be recorded, say so in
the log when the failures begin and when they end, not at every try.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import actors._retention as retention_module
import runtime._stores._writer as writer_module
import runtime._stores.postgres as postgres_module
from runtime import (
    RetentionPolicy,
    Runtime,
    StepContext,
    StoreUnavailableError,
    create_step,
    create_workflow,
)
from runtime._cli import main
from tests._support import Value, actor_system, wait_until
from tests.durable._support.workflows import read_lines
from tests.shared._refusal import (
    Refusable,
    failures_of,
    refusable_fixture,
    stripped_role,
    told_at_once,
)
from tests.shared._workflows import held_in_beta

WAIT = 60.0
TIMEOUT = 12.0
"""The write's timeout here (30 s by default): a delete or a prune that waited for it shows."""
PROMPT = TIMEOUT / 3
"""A delete or a prune told at once returns well within this."""
AGED = 2.0
"""Seconds after its end that the pruner's policy deletes a run, in the test of its log."""
FAILED_PASSES = 2
"""Passes of the pruner or claimer that fail after the first before the refusal ends, in
the tests of their logs: the log says the failure once, not at each."""
ROLE = "callboard_refused_deletes"


def _told(name: str, attempt: Callable[[], Any], says: str) -> StoreUnavailableError:
    return told_at_once(name, attempt, says, timeout=TIMEOUT)


refusable = refusable_fixture(timeout=TIMEOUT, role=ROLE)


quick = (
    create_workflow(id="quick", input_schema=Value, output_schema=Value)
    .then(
        create_step(
            id="echo",
            input_schema=Value,
            output_schema=Value,
            execute=lambda ctx: Value(value=ctx.input_data.value),
        )
    )
    .commit()
)


@create_step(input_schema=Value, output_schema=Value)
def ask(ctx: StepContext[Value]) -> Value:
    if ctx.resume_data is None:
        ctx.suspend({"question": "go on?"})
    return ctx.input_data


def _status(wf: Any, run_id: str) -> str | None:
    result = wf.get_workflow_run_execution_result(run_id)
    return None if result is None else str(result.status)


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def test_a_delete_and_a_prune_while_the_store_refuses_writes_fail_at_once_and_delete_nothing(
    refusable: Refusable, tmp_path: Path
) -> None:
    log, hold = tmp_path / "run.log", tmp_path / "hold"
    hold.touch()
    with capture_logs() as logs, Runtime(store=refusable.location) as rt:
        qu = rt.register(quick)
        for n in range(3):
            done = qu.create_run(run_id=f"done-{n}").start(input_data={"value": "x"})
            assert done.status == "success", done.error
        logged, run = held_in_beta(rt, log, hold, within=WAIT)
        refusable.refuse(rt, True)
        try:
            # The first writes to meet the refusal: nothing else waits in the writer.
            error = _told(
                "delete_workflow_run_by_id",
                lambda: qu.delete_workflow_run_by_id("done-0"),
                refusable.says,
            )
            assert "'done-0' was not deleted" in str(error)
            _told("a prune", lambda: rt.store.prune(keep=0), refusable.says)
            # Then behind the run's own write, which waits in memory and is tried again.
            hold.unlink()
            wait_until(lambda: "end beta" in read_lines(log), timeout=WAIT, what="beta ends")
            time.sleep(0.3)  # its output reaches the writer, and is refused
            _told(
                "adelete_workflow_run_by_id",
                lambda: asyncio.run(qu.adelete_workflow_run_by_id("done-1")),
                refusable.says,
            )
            _told(
                "a prune by age",
                lambda: rt.store.prune(ended_before=time.time() + 3600),
                refusable.says,
            )
            # Nothing was deleted.
            assert qu.list_workflow_runs().total == 3
            for n in range(3):
                kept = qu.get_workflow_run_execution_result(f"done-{n}")
                assert kept is not None and kept.status == "success"
            assert _status(logged, run.run_id) == "running"  # its step's output waits
        finally:
            refusable.refuse(rt, False)
        assert run.wait(timeout=WAIT).status == "success"
        assert _events(logs, "store_writes_accepted")
        # Once it takes writes again, the same delete and prune work.
        assert qu.delete_workflow_run_by_id("done-0") is True
        assert qu.get_workflow_run_execution_result("done-0") is None
        assert rt.store.prune(keep=0) == 3  # done-1, done-2 and the held run


@pytest.mark.postgres
def test_callboard_runs_prune_on_a_role_that_may_not_delete_says_so_at_once_and_deletes_nothing(
    postgres_server: Any,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The command opens a store of its own, which must write to open (its worker's row):
    # only the deletes are refused here. (Its own connection to a SQLite file cannot be
    # made to refuse from here, but for a file that root may not write either.)
    monkeypatch.setattr(postgres_module, "CALL_TIMEOUT", TIMEOUT, raising=False)
    monkeypatch.setattr(writer_module, "REFUSAL_PATIENCE", 600.0, raising=False)
    refusable = stripped_role(postgres_server, postgres_url, ROLE, "DELETE")
    prune = ["runs", "prune", "--keep", "0", "--db", refusable.location]
    with Runtime(store=refusable.location) as rt:
        qu = rt.register(quick)
        assert qu.create_run(run_id="done").start(input_data={"value": "x"}).status == "success"
        refusable.refuse(rt, True)
        try:
            began = time.monotonic()
            code = main(prune)
            took = time.monotonic() - began
            _, err = capsys.readouterr()
            assert code != 0
            assert took < PROMPT, f"the command took {took:.1f} s, where its timeout is {TIMEOUT} s"
            assert "refuses writes" in err and refusable.says in err, err
        finally:
            refusable.refuse(rt, False)
        assert qu.get_workflow_run_execution_result("done") is not None
        assert main(prune) == 0
        assert qu.get_workflow_run_execution_result("done") is None


def test_the_pruner_says_a_refusal_once_when_its_passes_begin_to_fail_and_once_when_they_end(
    refusable: Refusable, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pass every 0.05 s, for runs ended AGED s ago: a pass that finds none to delete
    # writes nothing, and succeeds whatever the store refuses (a PostgreSQL role without
    # DELETE). The run ended here is pruned first by a pass during the refusal.
    policy = RetentionPolicy(max_age=AGED, interval=0.05)
    with capture_logs() as logs, Runtime(store=refusable.location, retention=policy) as rt:
        # Every pass is counted, so that the refusal lasts until several passes failed
        # (rather than for a fixed time that a loaded machine may fill with fewer).
        passes: list[float] = []
        prune = rt.store.prune  # type: ignore[union-attr]

        def counted(**kwargs: Any) -> int:
            passes.append(time.monotonic())
            return prune(**kwargs)

        monkeypatch.setattr(rt.store, "prune", counted)
        qu = rt.register(quick)
        assert qu.create_run().start(input_data={"value": "x"}, timeout=WAIT).status == "success"
        refusable.refuse(rt, True)
        try:
            wait_until(lambda: _events(logs, "prune_failed"), timeout=WAIT, what="a pass fails")
            began = time.monotonic()
            wait_until(
                lambda: len([at for at in passes if at > began]) >= FAILED_PASSES,
                timeout=WAIT,
                what=f"{FAILED_PASSES} more passes fail",
            )
            refused_for = time.monotonic() - began
            failed = _events(logs, "prune_failed")
            assert len(failed) == 1, failed
            assert refusable.says in failed[0]["error"]
        finally:
            refusable.refuse(rt, False)
        wait_until(lambda: _events(logs, "prune_recovered"), timeout=WAIT, what="a pass succeeds")
        [recovered] = _events(logs, "prune_recovered")
        # Tried again no more than once per FAILED_PASS_PAUSE, not at every 0.05 s tick (at
        # every tick, one try failed 44 passes in its first 4 s).
        pause = retention_module.FAILED_PASS_PAUSE
        assert 2 <= recovered["failed_passes"] <= recovered["failed_for"] / pause + 1, recovered
        assert recovered["failed_for"] >= refused_for - 1
        assert len(_events(logs, "prune_failed")) == 1
        # And it prunes again.
        assert qu.create_run().start(input_data={"value": "y"}).status == "success"
        wait_until(lambda: qu.list_workflow_runs().total == 0, timeout=WAIT, what="pruned")


def test_the_claimer_says_failed_passes_once_when_they_begin_and_once_when_they_end(
    refusable: Refusable, monkeypatch: pytest.MonkeyPatch
) -> None:
    with capture_logs() as logs, Runtime(store=refusable.location) as rt:
        # Every failed pass is counted, so that the refusal lasts until several failed
        # (rather than for a fixed time that a loaded machine may fill with fewer).
        claimer = actor_system(rt).claimer
        assert claimer is not None
        failures = failures_of(monkeypatch, claimer, "_pass")
        wf = rt.register(
            create_workflow(
                id="approval",
                input_schema=Value,
                output_schema=Value,
                run_timeout=timedelta(seconds=3),
            )
            .then(ask)
            .commit()
        )
        run = wf.create_run()
        assert run.start(input_data={"value": "x"}, timeout=WAIT).status == "suspended"
        refusable.refuse(rt, True)
        try:
            # Its deadline passes while the store refuses writes: every pass that cancels
            # it fails at once, a second apart.
            assert _status(wf, run.run_id) == "suspended", "the deadline passed before"
            wait_until(
                lambda: _events(logs, "claim_pass_failed"), timeout=WAIT, what="a pass fails"
            )
            began = time.monotonic()
            wait_until(
                lambda: len([at for at in failures if at > began]) >= FAILED_PASSES,
                timeout=WAIT,
                what=f"{FAILED_PASSES} more passes fail",
            )
            refused_for = time.monotonic() - began
            failed = _events(logs, "claim_pass_failed")
            assert len(failed) == 1, failed
            assert refusable.says in failed[0]["error"]
        finally:
            refusable.refuse(rt, False)
        wait_until(
            lambda: _events(logs, "claim_pass_recovered"), timeout=WAIT, what="a pass succeeds"
        )
        [recovered] = _events(logs, "claim_pass_recovered")
        assert recovered["failed_passes"] >= 2, recovered
        assert recovered["failed_for"] >= refused_for - 1
        assert len(_events(logs, "claim_pass_failed")) == 1
        # The run is canceled at its deadline once the store takes writes.
        wait_until(lambda: _status(wf, run.run_id) == "canceled", timeout=WAIT, what="the run ends")
        result = wf.get_workflow_run_execution_result(run.run_id)
        assert result is not None and result.error is not None
        assert result.error.name == "RunDeadlineError"
