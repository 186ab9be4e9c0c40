"""A client is told when the runs it started wait for a worker that is not there.

A client runs nothing: a run it starts waits in the queue for a worker that
registers its workflow. With none on the store (the workers are down, or run
other workflows) the run waited in silence, and ``wait()`` with it. The
client's claimer now looks every ``REPORT_EVERY`` seconds and logs
``runs_await_a_worker`` once for the runs no live worker can take, by workflow.
A worker's own report (``run_awaits_its_workflow``) leaves out the runs another
live worker registers: it said so of every run queued behind a busy one.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from structlog.testing import capture_logs

import actors.claimer as claimer_module
from runtime import RunStatus, create_step, create_workflow
from runtime._cli import main
from tests._support import Value, wait_until
from tests.shared.conftest import Fleet


def _echo(ctx: Any) -> Value:
    return Value(value=ctx.input_data.value)


def _workflow(workflow_id: str) -> Any:
    return (
        create_workflow(id=workflow_id, input_schema=Value, output_schema=Value)
        .then(create_step(id="echo", input_schema=Value, output_schema=Value, execute=_echo))
        .commit()
    )


SERVED, ALONE = _workflow("unserved-served"), _workflow("unserved-alone")


@pytest.fixture(autouse=True)
def _look_often(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claimer_module, "REPORT_DELAY", 0.05)
    monkeypatch.setattr(claimer_module, "REPORT_EVERY", 0.1)


def _said(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == "runs_await_a_worker"]


def test_runs_no_worker_takes_are_told_once_and_go_on_when_one_comes(fleet: Fleet) -> None:
    with capture_logs() as logs:
        client = fleet.runtime("client")
        served, alone = client.register(SERVED), client.register(ALONE)
        waiting = [served.create_run(f"early-{index}") for index in range(3)]
        for run in waiting:
            run.start_async(input_data={"value": run.run_id})
        wait_until(lambda: _said(logs), timeout=30, what="runs_await_a_worker")
        [first] = _said(logs)
        assert first["log_level"] == "warning"
        assert first["workflow_id"] == "unserved-served" and first["runs"] == 3
        assert first["first"] == ["early-0", "early-1", "early-2"]
        assert "no live worker on the store registers workflow 'unserved-served'" in first["hint"]
        time.sleep(0.5)  # several looks more: each run is told once
        assert len(_said(logs)) == 1

        worker = fleet.runtime("worker")
        worker.register(SERVED)
        for run in waiting:
            assert run.wait(timeout=30).status == RunStatus.SUCCESS
        # A workflow the worker registers is not told again; one it does not, is.
        served.create_run("later").start(input_data={"value": "later"}, timeout=30)
        alone.create_run("lonely").start_async(input_data={"value": "lonely"})
        wait_until(lambda: len(_said(logs)) == 2, timeout=30, what="the second report")
        time.sleep(0.5)
    said = _said(logs)
    assert len(said) == 2, said
    assert (said[1]["workflow_id"], said[1]["first"]) == ("unserved-alone", ["lonely"])


def test_a_worker_whose_lease_ran_out_counts_as_gone(fleet: Fleet) -> None:
    worker = fleet.runtime("worker", lease=0.5)
    worker.register(SERVED)
    worker.store.abandon()  # type: ignore[union-attr]  # as if killed: its row stays, stale
    with capture_logs() as logs:
        client = fleet.runtime("client")
        client.register(SERVED).create_run("orphan").start_async(input_data={"value": "o"})
        wait_until(lambda: _said(logs), timeout=30, what="runs_await_a_worker")
    assert _said(logs)[0]["first"] == ["orphan"]


def test_runs_show_says_a_run_waits_for_a_worker_that_is_not_there(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    client = fleet.runtime("client")
    served = client.register(SERVED)
    served.create_run("queued").start_async(input_data={"value": "q"})
    capsys.readouterr()
    assert main(["--db", fleet.location, "runs", "show", "queued"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the view wraps its lines
    assert "no live worker on the store registers this workflow" in out
    assert main(["--db", fleet.location, "runs", "show", "queued", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["awaits_a_worker"] is True

    worker = fleet.runtime("worker")
    worker.register(SERVED)
    later = served.create_run("later")
    later.start_async(input_data={"value": "l"})
    # Pending or running, with a worker that registers it: nothing to say.
    assert main(["--db", fleet.location, "runs", "show", "later", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown.get("awaits_a_worker", False) is False, shown
    assert later.wait(timeout=30).status == RunStatus.SUCCESS
    assert main(["--db", fleet.location, "runs", "show", "queued", "--json"]) == 0
    assert "awaits_a_worker" not in json.loads(capsys.readouterr().out)  # it ended
    assert main(["--db", fleet.location, "runs", "show", "queued"]) == 0
    assert "no live worker" not in capsys.readouterr().out


GATE = threading.Event()


def _gated(ctx: Any) -> Value:
    GATE.wait(30)
    return Value(value=ctx.input_data.value)


BUSY = (
    create_workflow(id="unserved-busy", input_schema=Value, output_schema=Value)
    .then(create_step(id="gated", input_schema=Value, output_schema=Value, execute=_gated))
    .commit()
)


def test_a_worker_says_nothing_of_runs_another_live_worker_runs(fleet: Fleet) -> None:
    """Runs queued for a busy worker of another workflow are its, not waiting for nobody."""
    GATE.clear()
    others = fleet.runtime("worker", max_concurrent_runs=1)
    others.register(BUSY)
    busy = fleet.runtime("client").register(BUSY)
    with capture_logs() as logs:
        here = fleet.runtime("worker")
        here.register(SERVED)
        runs = [busy.create_run(f"busy-{index}") for index in range(3)]
        for run in runs:
            run.start_async(input_data={"value": run.run_id})  # one runs, two queue
        time.sleep(1.0)  # about ten looks of each runtime here
        assert [e for e in logs if e["event"] == "run_awaits_its_workflow"] == []
        others.stop(timeout=0)  # its runs go back to the queue, and nobody runs them now
        wait_until(
            lambda: (
                {e["run_id"] for e in logs if e["event"] == "run_awaits_its_workflow"}
                == {run.run_id for run in runs}
            ),
            timeout=30,
            what="every run of the stopped worker's workflow said to wait",
        )
    GATE.set()


def test_check_names_the_workflows_whose_runs_wait_for_a_worker(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    client = fleet.runtime("client")
    client.register(SERVED).create_run("waiting").start_async(input_data={"value": "w"})
    capsys.readouterr()
    assert main(["--db", fleet.location, "check"]) == 1
    out = capsys.readouterr().out
    assert "problem: 1 queued run(s) of workflow 'unserved-served' wait for a worker" in out
    worker = fleet.runtime("worker")
    worker.register(SERVED)
    assert client.register(SERVED).create_run("waiting").wait(timeout=30).status == "success"
    assert main(["--db", fleet.location, "check", "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said["problems"] == [] and said["runs"]["success"] == 1
    assert said["workers"]["live"] == 2  # the client and the worker
    assert ("file" in said) == ("://" not in fleet.location)  # only a SQLite file has one
