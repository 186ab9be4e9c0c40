"""SupervisorActor: a crashed run actor becomes a failed run; the runtime goes on serving."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs

from actors._dispatch import UnexpectedMessageError
from actors._queues import QueueGate
from actors.messages import StepFinished
from actors.run import RunActor
from runtime import Queue, Runtime, create_step, create_workflow
from tests._support import actor_system
from tests.actors._support import RecordingStore

WAIT = 10.0
CRASHING = "crash-me"


class Value(BaseModel):
    value: str


def _crash_in(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """Make one RunActor method raise, only for the run with id CRASHING."""
    original = getattr(RunActor, method)

    def crashing(self: RunActor, *args: Any, **kwargs: Any) -> Any:
        if self._snapshot["run_id"] == CRASHING:
            raise RuntimeError(f"bug in {method}")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RunActor, method, crashing)


def _same(ctx: Any) -> Value:
    return Value(value=ctx.input_data.value)


def _workflow() -> Any:
    def upper(ctx: Any) -> Value:
        return Value(value=ctx.input_data.value.upper())

    def exclaim(ctx: Any) -> Value:
        return Value(value=ctx.input_data.value + "!")

    return (
        create_workflow(id="supervised", input_schema=Value, output_schema=Value)
        .then(create_step(id="first", input_schema=Value, output_schema=Value, execute=upper))
        .then(create_step(id="second", input_schema=Value, output_schema=Value, execute=exclaim))
        .commit()
    )


@pytest.mark.parametrize(
    ("method", "statuses"),
    [
        ("_on_step_finished", ["pending", "running", "failed"]),
        ("_enter", ["pending", "failed"]),  # fails in on_start, before any step
    ],
)
def test_a_crashed_run_actor_becomes_a_failed_run_with_run_crashed_error(
    rt: Runtime,
    store: RecordingStore,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    statuses: list[str],
) -> None:
    _crash_in(monkeypatch, method)
    wf = rt.register(_workflow())
    run = wf.create_run(CRASHING)

    with capture_logs() as logs:
        run.start_async(input_data={"value": "x"})
        result = run.wait(WAIT)  # woken: the crash does not leave it hanging

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "RunCrashedError"
    assert CRASHING in result.error.message
    assert f"bug in {method}" in result.error.message
    assert result.result is None
    assert all(step.status != "running" for step in result.steps.values())
    if method == "_on_step_finished":
        assert result.steps["first"].status == "failed"
        assert result.steps["first"].error is not None
        assert result.steps["first"].error.name == "RunCrashedError"
    # Seen by a later query too, and the order of statuses only went forward.
    again = wf.get_workflow_run_execution_result(CRASHING)
    assert again is not None and again.status == "failed"
    seqs = [record.seq for record in store.history[CRASHING]]
    assert seqs == sorted(set(seqs))
    assert [record.status for record in store.history[CRASHING]] == statuses
    assert any(
        entry["event"] == "actor_crashed" and entry["log_level"] == "error" for entry in logs
    )


def test_other_runs_and_later_runs_succeed_after_a_run_actor_crashes(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    _crash_in(monkeypatch, "_on_step_finished")
    wf = rt.register(_workflow())
    before = [wf.create_run() for _ in range(20)]
    crashing = wf.create_run(CRASHING)

    with capture_logs():
        for index, run in enumerate(before):
            run.start_async(input_data={"value": f"a{index}"})
            if index == 10:
                crashing.start_async(input_data={"value": "x"})
        assert crashing.wait(WAIT).status == "failed"
        after = [wf.create_run() for _ in range(20)]
        for index, run in enumerate(after):
            run.start_async(input_data={"value": f"b{index}"})
        results = [run.wait(WAIT) for run in before + after]

    assert [r.status for r in results] == ["success"] * 40
    assert [r.result for r in results] == [{"value": f"A{i}!"} for i in range(20)] + [
        {"value": f"B{i}!"} for i in range(20)
    ]
    assert actor_system(rt).supervisor.is_alive()


def test_waiters_on_a_crashed_run_in_other_threads_are_woken(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    entered = threading.Event()
    original = RunActor._on_step_finished

    def crashing(self: RunActor, message: StepFinished) -> None:
        if self._snapshot["run_id"] == CRASHING:
            raise RuntimeError("bug after the step")
        original(self, message)

    monkeypatch.setattr(RunActor, "_on_step_finished", crashing)

    def slow(ctx: Any) -> Value:
        entered.set()
        release.wait(WAIT)
        return ctx.input_data

    wf = rt.register(
        create_workflow(id="slow", input_schema=Value, output_schema=Value)
        .then(create_step(id="slow", input_schema=Value, output_schema=Value, execute=slow))
        .commit()
    )
    run = wf.create_run(CRASHING)
    outcomes: list[str] = []

    with capture_logs():
        run.start_async(input_data={"value": "x"})
        assert entered.wait(WAIT)
        waiters = [
            threading.Thread(target=lambda: outcomes.append(run.wait(WAIT).status))
            for _ in range(3)
        ]
        for waiter in waiters:
            waiter.start()
        release.set()
        for waiter in waiters:
            waiter.join(WAIT)

    assert outcomes == ["failed"] * 3


@dataclass(frozen=True)
class Stray:
    """A message outside the supervisor's protocol."""


def test_a_message_outside_the_protocol_is_refused_and_the_supervisor_goes_on(
    rt: Runtime,
) -> None:
    supervisor = actor_system(rt).supervisor
    wf = rt.register(_workflow())

    with pytest.raises(UnexpectedMessageError, match=r"SupervisorActor .* does not accept"):
        supervisor.ask(Stray(), timeout=WAIT)
    with capture_logs() as logs:
        supervisor.tell(Stray())
        result = wf.create_run().start(input_data={"value": "on"}, timeout=WAIT)

    assert result.status == "success"
    refused = [entry for entry in logs if entry["log_level"] == "error"]
    assert [entry["event"] for entry in refused] == ["unexpected_message"]
    assert "test_supervisor.Stray" in refused[0]["error"]
    assert supervisor.is_alive()


def test_a_runs_end_asks_the_queue_gate_nothing_until_a_run_went_through_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Runs in no queue never wait in the gate: their ends need not count what it holds."""
    counted: list[int] = []
    original = QueueGate.__len__

    def counting(self: QueueGate[Any]) -> int:
        counted.append(1)
        return original(self)

    monkeypatch.setattr(QueueGate, "__len__", counting)
    with Runtime() as rt:
        plain = rt.register(_workflow())
        for _ in range(3):
            assert plain.create_run().start(input_data={"value": "x"}).status == "success"
        assert counted == []
        queued = rt.register(
            create_workflow(id="queued", input_schema=Value, output_schema=Value)
            .then(create_step(id="same", input_schema=Value, output_schema=Value, execute=_same))
            .commit(),
        )
        run = queued.create_run()
        assert run.start(input_data={"value": "x"}, queue=Queue("q", concurrency=1)).status == (
            "success"
        )
        assert plain.create_run().start(input_data={"value": "x"}).status == "success"
        assert counted  # once a run went through the gate, ends ask it what waits there
