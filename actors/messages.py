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
    "RunCrashed",
    "RunEnded",
    "SnapshotTaken",
    "StartRun",
    "StepFinished",
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
    """End every run in progress or queued as failed with ``error``."""

    error: dict[str, Any]


# --- supervisor -> run actor --------------------------------------------------


@dataclass(frozen=True, slots=True)
class AbortRun:
    """End this run now as failed with ``error``."""

    error: dict[str, Any]


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
    """A run changed; here is its newest snapshot."""

    record: SnapshotRecord
    terminal: bool


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
