"""The actors' message protocol.

Messages are frozen values: commands in the imperative, events in the past
tense. pykka does not copy messages between threads, so a message never
carries an object its sender goes on changing: dicts inside a message are
handed over with it and the sender does not touch them again.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pykka
from pydantic import BaseModel

from runtime.plan import ExecutionPlan
from runtime.snapshot import Snapshot
from runtime.step import Step
from runtime.store import SnapshotRecord

__all__ = [
    "AbortRun",
    "AbortRuns",
    "ExecuteStep",
    "NotifyWhenIdle",
    "RecordFailure",
    "RecoverRuns",
    "RunCrashed",
    "RunEnded",
    "SnapshotCommitted",
    "SnapshotTaken",
    "StartRun",
    "StepFinished",
    "TerminalCommitted",
    "WatchRun",
]


# --- facade -> supervisor ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartRun:
    """Start a run whose pending snapshot is already recorded."""

    plan: ExecutionPlan
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class NotifyWhenIdle:
    """Set ``event`` once no run is in progress or queued."""

    event: threading.Event


@dataclass(frozen=True, slots=True)
class AbortRuns:
    """End every run in progress or queued as failed with ``error``.

    With ``error`` ``None``, halt them instead: record nothing, so that a
    durable store keeps them unfinished for the next runtime to resume.
    """

    error: dict[str, Any] | None


# --- supervisor -> run actor --------------------------------------------------


@dataclass(frozen=True, slots=True)
class AbortRun:
    """End this run now as failed with ``error``; with ``None``, halt it and record nothing."""

    error: dict[str, Any] | None


# --- run actor -> supervisor ------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunEnded:
    """A run reached a terminal status and its actor stopped."""

    run_id: str
    status: str


@dataclass(frozen=True, slots=True)
class RunCrashed:
    """A run actor failed; the supervisor records the run as failed."""

    run_id: str
    error: dict[str, Any]


# --- run actor -> step actor --------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExecuteStep:
    """Run one step body and reply to ``reply_to`` with :class:`StepFinished`.

    Attributes:
        step: The step's definition.
        payload: The step's input as plain data (validated by the step actor).
        final_schema: The workflow's output schema when this is the last step:
            its output is then also the run's result.
    """

    run_id: str
    workflow_id: str
    step: Step[Any, Any]
    payload: Any
    state: Any
    state_schema: type[BaseModel] | None
    request_context: dict[str, Any]
    init_data: Any
    input_schema: type[BaseModel]
    definitions: Mapping[str, Step[Any, Any]]
    outputs: Mapping[str, Any]
    final_schema: type[BaseModel] | None
    trace_id: str
    parent_span_id: str
    reply_to: pykka.ActorRef[Any]


# --- step actor -> run actor --------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepFinished:
    """A step body ended.

    Attributes:
        output: The validated output as plain data (on success).
        error: An ``ErrorInfo`` as a dict (on failure).
        result: The run's result, when this was the last step.
        state: The state after the step (changed only through ``set_state``).
        request_context: The request context after the step.
    """

    step_id: str
    ok: bool
    output: Any
    error: dict[str, Any] | None
    result: Any
    state: Any
    request_context: dict[str, Any]
    started_at: float
    ended_at: float


# --- run actor / supervisor / facade -> registry --------------------------------


@dataclass(frozen=True, slots=True)
class SnapshotTaken:
    """A run changed; here is its newest snapshot.

    Attributes:
        ack_to: Who to tell :class:`SnapshotCommitted` once the snapshot is
            durable (a run actor on a durable store), or ``None``.
    """

    record: SnapshotRecord
    terminal: bool
    ack_to: pykka.ActorRef[Any] | None = None


@dataclass(frozen=True, slots=True)
class SnapshotCommitted:
    """The snapshot with this sequence number is committed to the durable store."""

    seq: int


@dataclass(frozen=True, slots=True)
class TerminalCommitted:
    """A run's terminal snapshot is committed: wake whoever waits for the run."""

    run_id: str


@dataclass(frozen=True, slots=True)
class RecoverRuns:
    """Resume the orphaned runs of these workflows (a durable store's runs whose owner is gone).

    Attributes:
        plans: The registered workflows, by id.
        supervisor: Where to send the resumed runs.
        report_others: Also log, once, orphaned runs whose workflow is not here.
    """

    plans: Mapping[str, ExecutionPlan]
    supervisor: pykka.ActorRef[Any]
    report_others: bool


@dataclass(frozen=True, slots=True)
class RecordFailure:
    """Mark a run failed with ``error``, building on its newest stored snapshot."""

    run_id: str
    error: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WatchRun:
    """Set ``event`` when the run reaches a terminal status (at once if it has)."""

    run_id: str
    event: threading.Event
