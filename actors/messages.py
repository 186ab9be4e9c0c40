"""The actors' message protocol: every message, grouped by the actor that receives it.

Messages are frozen values: commands in the imperative, events in the past
tense. pykka does not copy messages between threads, so a message never
carries an object its sender goes on changing: dicts inside a message are
handed over with it and the sender does not touch them again.

Each actor has one union of the messages it accepts (:data:`SupervisorMessage`,
:data:`RegistryMessage`, :data:`RunActorMessage`, :data:`StepActorMessage`); its
``on_receive`` matches on it and mypy checks that every member is handled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import pykka
from pydantic import BaseModel

from runtime._model import RunEvent
from runtime._plan import ExecutionPlan
from runtime._snapshot import Snapshot
from runtime._step import Step
from runtime._stores.base import SnapshotRecord
from runtime._sync import AbortSignal, Channel, Latch

__all__ = [
    "AbortRun",
    "AbortRuns",
    "CancelRun",
    "ExecuteStep",
    "NotifyWhenIdle",
    "RecordFailure",
    "RecoverRuns",
    "RegistryMessage",
    "RunActorMessage",
    "RunCrashed",
    "RunEnded",
    "RunParked",
    "SettledCommitted",
    "SnapshotCommitted",
    "SnapshotTaken",
    "StartRun",
    "StepActorMessage",
    "StepFinished",
    "SubscribeRun",
    "SupervisorMessage",
    "TimerFired",
    "WakeRun",
    "WatchRun",
]


# --- to the supervisor ------------------------------------------------------------
# From the facade: StartRun, NotifyWhenIdle, AbortRuns, CancelRun; from the
# registry: StartRun (a recovered run); from a timer: WakeRun; from a run
# actor: RunEnded, RunParked, RunCrashed.


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


@dataclass(frozen=True, slots=True)
class CancelRun:
    """Cancel a run; ``reply`` receives the run's status after the cancel.

    ``reply`` gets ``"canceled"``, or the terminal status the run had
    already reached, or ``"unknown"`` when no actor of this runtime drives it.
    The supervisor hands it on to the run's actor, if the run has one.
    """

    run_id: str
    reply: Callable[[str], None]


@dataclass(frozen=True, slots=True)
class WakeRun:
    """A sleeping run's time has come: start a run actor from its snapshot."""

    run_id: str


@dataclass(frozen=True, slots=True)
class RunEnded:
    """A run reached a terminal status (or was halted) and its actor stopped."""

    run_id: str
    status: str


@dataclass(frozen=True, slots=True)
class RunParked:
    """A run is waiting or suspended: its actor stopped and hands the snapshot back.

    With ``wake_at`` the supervisor starts a new run actor from the snapshot
    at that time; without, the run waits for a resume.
    """

    run_id: str
    plan: ExecutionPlan
    snapshot: Snapshot
    wake_at: float | None


@dataclass(frozen=True, slots=True)
class RunCrashed:
    """A run actor failed; the supervisor records the run as failed."""

    run_id: str
    error: dict[str, Any]


SupervisorMessage: TypeAlias = (
    StartRun | NotifyWhenIdle | AbortRuns | CancelRun | WakeRun | RunEnded | RunParked | RunCrashed
)
"""Everything :class:`~actors.supervisor.SupervisorActor` accepts."""


# --- to the registry --------------------------------------------------------------
# From run actors, the supervisor, hooks and the facade; SettledCommitted from
# the registry itself, on the store's writer thread.


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
class SettledCommitted:
    """A run's terminal (or suspended) snapshot is committed: wake whoever waits for the run."""

    run_id: str


@dataclass(frozen=True, slots=True)
class WatchRun:
    """Call ``event.set()`` when the run settles: it ends, or suspends (at once if it has).

    ``event`` is a ``threading.Event`` or anything with a ``set()`` that is
    safe to call from another thread (such as a ``Latch``).
    """

    run_id: str
    event: threading.Event | Latch


@dataclass(frozen=True, slots=True)
class SubscribeRun:
    """Put each event of the run into ``channel`` as the registry receives it.

    The events so far come first; the channel is closed once the run ends.
    """

    run_id: str
    channel: Channel[RunEvent]


@dataclass(frozen=True, slots=True)
class RecordFailure:
    """Mark a run failed with ``error``, building on its newest stored snapshot.

    With ``plan``, the workflow's hooks are called for the failed run first.
    """

    run_id: str
    error: dict[str, Any]
    plan: ExecutionPlan | None = None


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


RegistryMessage: TypeAlias = (
    SnapshotTaken | SettledCommitted | WatchRun | SubscribeRun | RecordFailure | RecoverRuns
)
"""Everything :class:`~actors.registry.RegistryActor` accepts."""


# --- to a run actor ---------------------------------------------------------------
# From step actors: StepFinished; from the registry: SnapshotCommitted; from
# its timers: TimerFired; from the supervisor: CancelRun, AbortRun.


@dataclass(frozen=True, slots=True)
class StepFinished:
    """A call of user code ended.

    Attributes:
        outcome: ``"success"``, ``"failed"``, ``"suspended"`` (``output``
            holds the suspend payload) or ``"bailed"`` (``result`` holds the
            run's result).
        output: The validated output as plain data (on success): for
            conditions a list of booleans, for a sleep an epoch wake time.
        error: An ``ErrorInfo`` as a dict (on failure).
        result: The run's result, when this was the last step, or bailed.
        state: The state after the step (changed only through ``set_state``).
        request_context: The request context after the step.
        retryable: Whether a failure may be retried (not for ``NonRetryableError``).
        token: The :attr:`ExecuteStep.token` this answers.
    """

    step_id: str
    outcome: str
    output: Any
    error: dict[str, Any] | None
    result: Any
    state: Any
    request_context: dict[str, Any]
    started_at: float
    ended_at: float
    retryable: bool = True
    token: int = 0

    @property
    def ok(self) -> bool:
        """Whether the call succeeded (a bail is a success)."""
        return self.outcome in {"success", "bailed"}


@dataclass(frozen=True, slots=True)
class SnapshotCommitted:
    """The snapshot with this sequence number is committed to the durable store."""

    seq: int


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer the run actor set went off: retry a call, or time one out."""

    token: int
    what: str


@dataclass(frozen=True, slots=True)
class AbortRun:
    """End this run now as failed with ``error``; with ``None``, halt it and record nothing."""

    error: dict[str, Any] | None


RunActorMessage: TypeAlias = StepFinished | SnapshotCommitted | TimerFired | CancelRun | AbortRun
"""Everything :class:`~actors.run.RunActor` accepts."""


# --- to a step actor --------------------------------------------------------------
# From run actors, through the step pool.


@dataclass(frozen=True, slots=True)
class ExecuteStep:
    """Run one piece of user code and reply to ``reply_to`` with :class:`StepFinished`.

    Most often a step body; also the conditions of a ``branch`` or a loop, a
    ``map`` function, or the function that computes a sleep's length.

    Attributes:
        step: The step's definition (for conditions of a branch: the first arm's).
        payload: The input as plain data (validated by the step actor).
        final_schema: The workflow's output schema when this is the last step:
            its output is then also the run's result.
        token: Names this call within its run; the reply carries it back.
        kind: ``"step"``, ``"conditions"``, ``"map"`` or ``"sleep"``.
        path: The step's path in the run's results.
        fns: For ``conditions``: each condition with the schema its input is
            validated by; for ``map`` and ``sleep``: the one function.
        prefix: The path prefix of the (nested) workflow the step is in.
        bail_schema: The top workflow's output schema, for ``ctx.bail()``.
        retry_count: How many times this step was retried before this call.
        resume_data: What a resume hands the step, already validated.
        signal: The abort signal the run sets to tell the step to stop.
        iteration: A loop condition's iteration count.
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
    token: int = 0
    kind: str = "step"
    path: str = ""
    fns: tuple[tuple[Callable[[Any], Any], type[BaseModel] | None], ...] = ()
    prefix: str = ""
    bail_schema: type[BaseModel] | None = None
    retry_count: int = 0
    resume_data: Any = None
    signal: AbortSignal | None = None
    iteration: int | None = None


StepActorMessage: TypeAlias = ExecuteStep
"""Everything :class:`~actors.step.StepActor` accepts."""
