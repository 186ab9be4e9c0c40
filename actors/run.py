"""The run actor: drives one run through its plan, one step at a time."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

import pykka

from actors._dispatch import DispatchedActor, Dispatcher, tell_safely
from actors.messages import (
    AbortRun,
    ExecuteStep,
    RunCrashed,
    RunEnded,
    SnapshotCommitted,
    SnapshotTaken,
    StepFinished,
)
from actors.step import StepPool, error_dict
from runtime.errors import RunCrashedError, WorkflowDefinitionError
from runtime.model import TERMINAL_STATUSES, RunStatus, StepStatus
from runtime.plan import ExecutionPlan
from runtime.snapshot import Snapshot, mark_failed, record_of
from runtime.tracing import Span

__all__ = ["RunActor"]


class RunActor(DispatchedActor):
    """Walks a run's plan: sends each step to a step actor and waits for its reply as a message.

    It never blocks, so it stays responsive while a step runs, and after every
    transition it tells the registry the run's new snapshot. It stops when the
    run ends; if it fails, it reports to its supervisor, which records the run
    as failed.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        plan: ExecutionPlan,
        snapshot: Snapshot,
        registry: pykka.ActorRef[Any],
        supervisor: pykka.ActorRef[Any],
        pool: StepPool,
        durable: bool = False,
    ) -> None:
        super().__init__(dispatcher)
        self._plan = plan
        self._snapshot = snapshot
        self._registry = registry
        self._supervisor = supervisor
        self._pool = pool
        self._durable = durable
        # The step waiting for its "running" snapshot to be committed (durable stores).
        self._awaiting_commit: tuple[int, ExecuteStep] | None = None
        # A resumed run starts with the outputs of the steps it completed before.
        self._outputs: dict[str, Any] = {
            step_id: step["output"]
            for step_id, step in snapshot["steps"].items()
            if step["status"] == StepStatus.SUCCESS
        }
        self._span = Span(
            "workflow_run",
            snapshot["trace_id"],
            span_id=snapshot["span_id"],
            run_id=snapshot["run_id"],
            workflow_id=snapshot["workflow_id"],
            metadata=snapshot["metadata"],
        )

    def on_start(self) -> None:
        self._span.start()
        self._snapshot["status"] = RunStatus.RUNNING.value
        mismatch = self._plan_mismatch()
        if mismatch is not None:
            self._finish(RunStatus.FAILED, error=error_dict(mismatch, with_traceback=False))
            return
        self._dispatch(self._snapshot["next_step"])

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, StepFinished):
            self._step_finished(message)
        elif isinstance(message, SnapshotCommitted):
            awaiting = self._awaiting_commit
            if awaiting is not None and awaiting[0] == message.seq:
                self._awaiting_commit = None
                self._pool.submit(awaiting[1])
        elif isinstance(message, AbortRun):
            if message.error is None:
                self._halt()
            else:
                self._finish(RunStatus.FAILED, error=message.error)
        else:
            return super().on_receive(message)
        return None

    def on_failure(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        crash = RunCrashedError(
            f"the actor driving run {self._snapshot['run_id']!r} failed: "
            f"{exc_type.__name__ if exc_type else 'error'}: {exc_value}",
            run_id=self._snapshot["run_id"],
        )
        crash.__traceback__ = traceback
        self._span.end(RunStatus.FAILED.value, error=type(crash).__name__)
        tell_safely(
            self._supervisor,
            RunCrashed(run_id=self._snapshot["run_id"], error=error_dict(crash)),
        )

    def _plan_mismatch(self) -> WorkflowDefinitionError | None:
        """Why a resumed run's snapshot does not fit the workflow as registered now, if so."""
        plan, snapshot = self._plan, self._snapshot
        if 0 <= snapshot["next_step"] < len(plan.steps) and all(
            step_id in plan.by_id for step_id in snapshot["steps"]
        ):
            return None
        ids = [step.id for step in plan.steps]
        return WorkflowDefinitionError(
            f"run {snapshot['run_id']!r} cannot resume: its recorded steps "
            f"{list(snapshot['steps'])} (next: {snapshot['next_step']}) do not fit workflow "
            f"{plan.workflow_id!r} as registered now (steps {ids})",
            run_id=snapshot["run_id"],
        )

    def _halt(self) -> None:
        """Stop driving the run, recording nothing: a durable store keeps it for later."""
        self._span.end("interrupted")
        ended = RunEnded(run_id=self._snapshot["run_id"], status="halted")
        tell_safely(self._supervisor, ended)
        self.stop_now()

    def _dispatch(self, index: int) -> None:
        plan, snapshot = self._plan, self._snapshot
        step = plan.steps[index]
        payload = snapshot["input"] if index == 0 else self._outputs[plan.steps[index - 1].id]
        snapshot["steps"][step.id] = {
            "status": StepStatus.RUNNING.value,
            "payload": payload,
            "output": None,
            "error": None,
            "started_at": time.time(),
            "ended_at": None,
        }
        snapshot["next_step"] = index
        message = ExecuteStep(
            run_id=snapshot["run_id"],
            workflow_id=snapshot["workflow_id"],
            step=step,
            payload=payload,
            state=snapshot["state"],
            state_schema=plan.state_schema,
            request_context=snapshot["request_context"],
            init_data=snapshot["input"],
            input_schema=plan.input_schema,
            definitions=plan.by_id,
            outputs=self._outputs,
            final_schema=plan.output_schema if index == len(plan.steps) - 1 else None,
            trace_id=snapshot["trace_id"],
            parent_span_id=snapshot["span_id"],
            reply_to=self.actor_ref,
        )
        seq = self._tell_snapshot(terminal=False)
        if self._durable:
            # The step starts only once the snapshot that says it runs (and holds
            # the previous step's output) is committed: a completed step is never
            # run again after a crash.
            self._awaiting_commit = (seq, message)
        else:
            self._pool.submit(message)

    def _step_finished(self, message: StepFinished) -> None:
        snapshot = self._snapshot
        if snapshot["status"] in TERMINAL_STATUSES:
            return  # aborted while the step ran: its outcome no longer matters
        record = snapshot["steps"][message.step_id]
        record["started_at"] = message.started_at
        record["ended_at"] = message.ended_at
        snapshot["state"] = message.state
        snapshot["request_context"] = message.request_context
        if not message.ok:
            record["status"] = StepStatus.FAILED.value
            record["error"] = message.error
            self._finish(RunStatus.FAILED, error=message.error)
            return
        record["status"] = StepStatus.SUCCESS.value
        record["output"] = message.output
        # A new dict, not an update: the one handed to the step actor stays as it was.
        self._outputs = {**self._outputs, message.step_id: message.output}
        following = snapshot["next_step"] + 1
        if following < len(self._plan.steps):
            self._dispatch(following)
        else:
            snapshot["next_step"] = following
            self._finish(RunStatus.SUCCESS, result=message.result)

    def _finish(
        self,
        status: RunStatus,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        snapshot = self._snapshot
        if error is None:
            snapshot["status"] = status.value
            snapshot["result"] = result
        else:
            mark_failed(snapshot, error, time.time())
        # The root span ends before the final result becomes visible, so that
        # whoever sees the result can see the whole trace.
        self._span.end(status.value, **({} if error is None else {"error": error["name"]}))
        self._tell_snapshot(terminal=True)
        tell_safely(self._supervisor, RunEnded(run_id=snapshot["run_id"], status=status.value))
        self.stop_now()

    def _tell_snapshot(self, *, terminal: bool) -> int:
        snapshot = self._snapshot
        snapshot["seq"] += 1
        now = time.time()
        snapshot["updated_at"] = now
        record = record_of(snapshot)
        # A dead registry must not take the run down with it; the runtime
        # records unfinished runs as failed when it stops.
        ack_to = self.actor_ref if self._durable and not terminal else None
        tell_safely(self._registry, SnapshotTaken(record=record, terminal=terminal, ack_to=ack_to))
        return record.seq
