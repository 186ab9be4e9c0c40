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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, is_dataclass
from enum import StrEnum
from typing import Any, Final, Literal, TypeAlias, TypeVar

import pykka
from pydantic import BaseModel

from actors._frozen_init import quick_frozen_init
from runtime._model import RunEvent, RunStatus
from runtime._plan import ExecutionPlan
from runtime._snapshot import Snapshot
from runtime._step import Step
from runtime._stores.base import Claimed, SnapshotRecord
from runtime._sync import AbortSignal, Channel, Latch

__all__ = [
    "FROM_NOW",
    "AbortReason",
    "AbortRun",
    "AbortRuns",
    "Call",
    "CallConditions",
    "CallMap",
    "CallSleepLength",
    "CallStep",
    "CancelOutcome",
    "CancelRun",
    "DeadlinePassed",
    "NotifyWhenIdle",
    "Outcome",
    "QueuesDue",
    "ReadWaited",
    "RecordFailure",
    "RegistryMessage",
    "ResumeOutcome",
    "ResumeStep",
    "RunActorMessage",
    "RunCrashed",
    "RunDeleted",
    "RunEnded",
    "RunParked",
    "RunPart",
    "RunsClaimed",
    "RunsDeleted",
    "SettledCommitted",
    "SnapshotCommitted",
    "SnapshotSeen",
    "SnapshotTaken",
    "StartHookCalled",
    "StartRun",
    "StepActorMessage",
    "StepBodiesEnded",
    "StepFinished",
    "StepWaitBegan",
    "StepWrote",
    "SubscribeRun",
    "SupervisorMessage",
    "TimerFired",
    "UnsubscribeRun",
    "UnwatchRun",
    "WakeRun",
    "WatchRun",
    "WritesRefused",
]


# --- to the supervisor ------------------------------------------------------------
# From the facade: StartRun, NotifyWhenIdle, AbortRuns, CancelRun, ResumeStep; from the
# registry: StartRun (a recovered run); from a timer: WakeRun, DeadlinePassed; from a run
# actor: RunEnded, RunParked, RunCrashed; from a step actor's thread: StepWaitBegan;
# from a MemoryStore's delete: RunDeleted.


@dataclass(frozen=True, slots=True)
class StartRun:
    """Start a run whose pending snapshot is already recorded.

    ``admitted``: the run holds a place in the runtime's
    :class:`~actors.supervisor.PendingRuns`, taken by ``start_async``; the
    supervisor gives it back once the run leaves its queue.
    ``queued``: the run holds a waiting place in its queue (see
    :meth:`actors._queues.QueueGate.reserve`), taken by ``start_async``.
    """

    plan: ExecutionPlan
    snapshot: Snapshot
    admitted: bool = False
    queued: bool = False


@dataclass(frozen=True, slots=True)
class QueuesDue:
    """A queue's rate window has moved on: runs waiting in it may start now."""


@dataclass(frozen=True, slots=True)
class StepBodiesEnded:
    """Step bodies that outlived their runs' hold on them returned: their queue slots are free."""


@dataclass(frozen=True, slots=True)
class StepWaitBegan:
    """A step body began to wait for run ``run_id`` to end: its run makes room meanwhile."""

    run_id: str


@dataclass(frozen=True, slots=True)
class RunDeleted:
    """Run ``run_id`` was deleted from a store in memory: its start leaves its rate window."""

    run_id: str


@dataclass(frozen=True, slots=True)
class NotifyWhenIdle:
    """Set ``event`` once no run is in progress or queued.

    With ``until`` (seconds on :func:`time.monotonic`), also once no run left could end
    before it: each waits on a timer due later (a sleep, a rate window).
    """

    event: threading.Event
    until: float | None = None


@dataclass(frozen=True, slots=True)
class AbortRuns:
    """End every run in progress or queued as failed with ``error``.

    With ``error`` ``None``, halt them instead: record nothing, so that a
    durable store keeps them unfinished for the next runtime to resume.
    """

    error: dict[str, Any] | None


class CancelOutcome(StrEnum):
    """What became of a :class:`CancelRun`: what its ``reply`` receives, once."""

    RECORDED = "recorded"
    """The run is cancelled and the store took its canceled snapshot (on a durable
    store: committed). The store may still have kept another end instead, if one came
    first; the caller reads it back."""
    REFUSED = "refused"
    """The run's actor stopped driving it, but its canceled snapshot was not stored:
    the store refused it for good, or the registry had stopped."""
    NOT_HERE = "not_here"
    """No actor of this runtime drives or holds the run (any more); nothing changed."""


_Answer = TypeVar("_Answer", bound=StrEnum)


def _once(reply: Callable[[_Answer], None]) -> Callable[[_Answer], None]:
    """``reply``, called at most once: the first answer is the answer."""
    lock = threading.Lock()
    answered = False

    def answer(outcome: _Answer) -> None:
        nonlocal answered
        with lock:
            if answered:
                return
            answered = True
        reply(outcome)

    return answer


@dataclass(frozen=True, slots=True)
class CancelRun:
    """Cancel a run; ``reply`` receives the :class:`CancelOutcome`, exactly once.

    The supervisor cancels a run it holds (asleep, or queued) and hands the
    message on to the run's actor otherwise. Either answers only once the
    canceled snapshot is recorded (after the workflow's hooks), so that a
    cancel acknowledged to a caller is one every query already sees, and on a
    durable store one that survives the process.
    """

    run_id: str
    reply: Callable[[CancelOutcome], None]

    def __post_init__(self) -> None:
        # Exactly once, whoever answers: a handler that fails after handing its answer on
        # (to the record of the canceled snapshot) is answered again as undelivered.
        object.__setattr__(self, "reply", _once(self.reply))

    def reply_once_recorded(self) -> Callable[[bool], None]:
        """The ``on_recorded`` of the run's canceled snapshot: it replies to this cancel."""
        reply = self.reply

        def recorded(stored: bool) -> None:
            reply(CancelOutcome.RECORDED if stored else CancelOutcome.REFUSED)

        return recorded


class ResumeOutcome(StrEnum):
    """What became of a :class:`ResumeStep`: what its ``reply`` receives, once."""

    RECORDED = "recorded"
    """The run's actor took the resume, and the store has the record that holds it (on a
    durable store: committed); the step (or item) runs with it."""
    TAKEN = "taken"
    """The run's actor drives the run, and the suspension named is not one that waits:
    another resume took it, or it never suspended. Nothing changed."""
    GONE = "gone"
    """The run's actor stopped driving the run (it suspended, ended or was halted)
    before it read the resume, or before the record holding it was committed. The
    caller reads the run again once it settles."""
    NOT_HERE = "not_here"
    """No actor of this runtime drives the run; nothing changed."""
    STOPPED = "stopped"
    """The runtime stopped the run's actor after it took the resume, before the record
    holding it was committed: it may still be, and then a later runtime goes on with it."""
    REFUSED = "refused"
    """A resume request from the store (``stored``) whose data does not fit the step's
    ``resume_schema`` as the run's actor has it: nothing changed, the suspension waits."""


@dataclass(frozen=True, slots=True)
class ResumeStep:
    """Resume one suspended step (or foreach item) of a run that is running again.

    A run whose other suspensions were resumed runs on while this one waits;
    its actor takes the resume, as the store's compare-and-set takes that of a
    suspended run. The supervisor hands it on to the run's actor, or answers
    :attr:`ResumeOutcome.NOT_HERE`. ``reply`` receives the
    :class:`ResumeOutcome`, exactly once; ``data`` is the validated resume data,
    handed over with the message.

    With ``stored``, it carries out a resume request of a shared store (see
    :meth:`~runtime._stores.base.ResumeRequestStore.request_resume`): ``data`` is
    as the store held it, validated by the actor first (``REFUSED`` if it does
    not fit), and the record that holds the resume carries the request out
    (:attr:`~runtime._stores.base.SnapshotRecord.taken`).

    Stored or not, ``read_seq`` is the seq of the record its caller read the
    suspension waiting in (``None``: not known): a suspension at ``path`` whose
    id is past it (see :func:`~runtime._snapshot.suspension_of`), or that this
    actor saw end after it (taken, or dropped by a bail: one recorded before
    ids), is not the one it asked for, which ended since (``TAKEN``).
    ``read_run`` is the run's ``created_at`` and count of restarts in that
    record (``None``: not known): a run restarted since (or another run given
    its id) waits at ``path`` in a suspension of its own (``TAKEN``).
    """

    run_id: str
    path: str
    data: Any
    reply: Callable[[ResumeOutcome], None]
    stored: bool = False
    read_seq: int | None = None
    read_run: tuple[float, int] | None = None

    def __post_init__(self) -> None:
        # Exactly once: the actor may answer, then stop with the message still counted.
        object.__setattr__(self, "reply", _once(self.reply))


@dataclass(frozen=True, slots=True)
class WakeRun:
    """A sleeping run's time has come: start a run actor from its snapshot."""

    run_id: str


@dataclass(frozen=True, slots=True)
class DeadlinePassed:
    """A run's ``run_timeout`` is up (in memory): cancel it if suspended or waiting for room."""

    run_id: str


@dataclass(frozen=True, slots=True)
class RunEnded:
    """A run reached a terminal status (or was halted) and its actor stopped.

    ``actor`` is the run actor that sends it: a run of the same id started since
    (its first deleted) has another, which this message does not concern.
    """

    run_id: str
    status: RunStatus | Literal["halted"]
    actor: pykka.ActorRef[Any] | None = None


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
    actor: pykka.ActorRef[Any] | None = None  # as RunEnded's


@dataclass(frozen=True, slots=True)
class RunCrashed:
    """A run actor failed; the supervisor records the run as failed."""

    run_id: str
    error: dict[str, Any]
    actor: pykka.ActorRef[Any] | None = None  # as RunEnded's


SupervisorMessage: TypeAlias = (
    StartRun
    | NotifyWhenIdle
    | AbortRuns
    | CancelRun
    | WakeRun
    | DeadlinePassed
    | RunEnded
    | RunParked
    | RunCrashed
    | QueuesDue
    | StepBodiesEnded
    | StepWaitBegan
    | RunDeleted
    | ResumeStep
)
"""Everything :class:`~actors.supervisor.SupervisorActor` accepts."""


# --- to the registry --------------------------------------------------------------
# From run actors, the supervisor, hooks and the facade; SettledCommitted from
# the registry itself, on the store's writer thread; RunsDeleted from the facade's
# delete and the pruner's thread; WritesRefused from the store's writer thread.


@dataclass(frozen=True, slots=True)
class SnapshotTaken:
    """A run changed; here is its newest snapshot.

    Attributes:
        ack_to: Who to tell :class:`SnapshotCommitted` once the snapshot is
            durable (a run actor on a durable store that waits for the commit
            before it goes on), or ``None``.
        refusal_to: Who to tell :class:`AbortRun` if the store refuses the
            snapshot for good, or it never reaches the store (the run actor
            that took it, while it drives the run), or ``None``: the run is
            then recorded failed from its row.
        on_recorded: Called once, from any thread: ``True`` when the store has
            taken the snapshot (committed it, if durable), ``False`` when it
            never will. The reply to a cancel travels this way.
        stored: The store holds the record already (a compare-and-set put it
            there): the registry tells waiters and watchers, and writes nothing.
    """

    record: SnapshotRecord
    terminal: bool
    ack_to: pykka.ActorRef[Any] | None = None
    refusal_to: pykka.ActorRef[Any] | None = None
    on_recorded: Callable[[bool], None] | None = None
    stored: bool = False


@dataclass(frozen=True, slots=True)
class SettledCommitted:
    """A run's terminal (or suspended) snapshot is committed: wake whoever waits for the run.

    ``record`` is that snapshot's: its events are told to the run's watchers
    now, not when it was taken, so that nobody is told an end a crash could
    still undo.
    """

    run_id: str
    record: SnapshotRecord | None = None


@dataclass(frozen=True, slots=True)
class WatchRun:
    """Call ``event.set()`` when the run settles: it ends, or suspends (at once if it has).

    ``event`` is a ``threading.Event`` or anything with a ``set()`` that is
    safe to call from another thread (such as a ``Latch``).
    """

    run_id: str
    event: threading.Event | Latch


@dataclass(frozen=True, slots=True)
class ReadWaited:
    """The registry's note to itself: read the runs of the waits it has noted since its last read.

    A wait that arrives while more mail waits is noted at once and its run read
    later, with every other run waited on meanwhile, in one read of the store:
    a burst of thousands of waits (clients reconnecting together) cost a read
    each, one after another, while every other run's wait queued behind them.
    """


@dataclass(frozen=True, slots=True)
class UnwatchRun:
    """Forget ``event`` of an earlier :class:`WatchRun`: its wait timed out or was cancelled.

    Once a run's last waiter goes, the registry stops reading it from a shared store
    for waiters (a wait given up on must not be kept, and read for, until the run ends).
    """

    run_id: str
    event: threading.Event | Latch


@dataclass(frozen=True, slots=True)
class SubscribeRun:
    """Put each event of the run into ``channel`` as the registry receives it.

    The events so far come first (with ``from_seq``, only those numbered above
    it; :data:`FROM_NOW` for none of them); the channel is closed once the run
    ends.
    """

    run_id: str
    channel: Channel[RunEvent]
    from_seq: int | None = None
    subscribed: Latch | None = None


FROM_NOW: Final = -1
"""``SubscribeRun.from_seq`` for no past event: only those that come next."""


@dataclass(frozen=True, slots=True)
class StepWrote:
    """A step wrote ``data`` with ``ctx.writer.write(data)``, at ``at`` (epoch seconds).

    ``taken`` is called once the registry has handled it: the writer waits for
    room when too many of its writes are not handled yet.
    """

    run_id: str
    path: str
    data: Any
    at: float
    item: int | None = None
    taken: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class UnsubscribeRun:
    """Forget ``channel``: its watch was closed, or dropped by its owner.

    Once a run's last channel goes, the registry stops following the run for
    watchers (the memory of an abandoned watch must not last as long as the run).
    """

    run_id: str
    channel: Channel[RunEvent]


@dataclass(frozen=True, slots=True)
class RecordFailure:
    """Mark a run failed with ``error``, building on its newest stored snapshot.

    With ``plan``, the workflow's hooks are called for the failed run first.
    With ``refused``, the store refused the run's newest snapshot: the failure
    is built from the stored row alone.
    """

    run_id: str
    error: dict[str, Any]
    plan: ExecutionPlan | None = None
    refused: bool = False


@dataclass(frozen=True, slots=True)
class RunsClaimed:
    """Runs this worker claimed from a shared store: start them (or end them, if they must).

    The registry decodes each: one whose snapshot cannot be read fails from
    its row alone, one whose cancel was requested is recorded canceled, one
    whose definition (by its plan's fingerprint) is not registered here goes
    back to the queue unchanged (the claimer hands it back, for a worker that
    has it), and the others go to ``supervisor`` to run on from where they
    were.

    Attributes:
        claimed: The runs, oldest first.
        plans: The registered workflows, by id.
        supervisor: Where to send the runs to start.
        versions: Every registered definition, by workflow id then fingerprint.
        generation: The claimer's count of changes to the registered workflows
            before the claim (see :meth:`actors.claimer.Claimer.park`).
    """

    claimed: Sequence[Claimed]
    plans: Mapping[str, ExecutionPlan]
    supervisor: pykka.ActorRef[Any]
    versions: Mapping[str, Mapping[str, ExecutionPlan]] = field(default_factory=dict)
    generation: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotSeen:
    """Another process changed a run that somebody here waits on or watches.

    Attributes:
        run_id: The run.
        record: Its newest record; ``None`` once it was deleted.
        fenced: Instead: this process lost the run to another worker (its
            write was fenced off), and whoever waits here must now read it
            from the store.
    """

    run_id: str
    record: SnapshotRecord | None
    fenced: bool = False


@dataclass(frozen=True, slots=True)
class RunsDeleted:
    """Runs were deleted (``run_ids``) or pruned (``None``: which, the prune does not say).

    The registry forgets the event logs of those the store no longer holds: a run
    gone keeps no memory here (a daemon that deletes or prunes runs stays bounded).
    """

    run_ids: tuple[str, ...] | None = None
    looked: bool = False
    """Told by the store watcher every :data:`actors._watcher.DELETED_LOOK` seconds while
    the registry keeps logs, on a shared store: another process may have deleted runs."""


@dataclass(frozen=True, slots=True)
class WritesRefused:
    """The store has refused every write for too long: wake every waiter, to tell it so.

    Its runs' ends cannot be recorded meanwhile; each wait reads the store, and
    raises ``StoreUnavailableError`` naming the refusal for a run that has not
    ended (see :meth:`runtime._stores._writer.Refusals`).
    """


RegistryMessage: TypeAlias = (
    SnapshotTaken
    | SettledCommitted
    | WatchRun
    | ReadWaited
    | UnwatchRun
    | SubscribeRun
    | UnsubscribeRun
    | RecordFailure
    | RunsClaimed
    | SnapshotSeen
    | StepWrote
    | RunsDeleted
    | WritesRefused
)
"""Everything :class:`~actors.registry.RegistryActor` accepts."""


# --- to a run actor ---------------------------------------------------------------
# From step actors: StepFinished; from the registry: SnapshotCommitted; from
# its timers: TimerFired; from the supervisor: CancelRun, AbortRun, ResumeStep.


class Outcome(StrEnum):
    """How a call of user code ended (:attr:`StepFinished.outcome`)."""

    SUCCESS = "success"
    FAILED = "failed"
    SUSPENDED = "suspended"
    """The step called ``ctx.suspend()``; the reply's ``output`` holds the suspend payload."""
    BAILED = "bailed"
    """The step called ``ctx.bail()``; the reply's ``result`` holds the run's result."""


@dataclass(frozen=True, slots=True)
class StepFinished:
    """A call of user code ended.

    Attributes:
        outcome: How it ended.
        output: The validated output as plain data (on success): for
            conditions a list of booleans, for a sleep an epoch wake time;
            the suspend payload when suspended, the run's result when bailed.
        error: An ``ErrorInfo`` as a dict (on failure).
        result: The run's result, when this was the last step, or bailed.
        state: The state after the step (changed only through ``set_state``).
        request_context: The request context after the step.
        state_changes: What the step changed in the state: ``{}`` for nothing,
            the keys to merge into the run's state (a step with a state schema
            of its own), or ``None`` to replace the run's state with ``state``.
        retryable: Whether a failure may be retried (not for ``NonRetryableError``).
        token: The :attr:`Call.token` this answers.
    """

    step_id: str
    outcome: Outcome
    output: Any
    error: dict[str, Any] | None
    result: Any
    state: Any
    request_context: dict[str, Any]
    started_at: float
    ended_at: float
    retryable: bool = True
    token: int = 0
    state_changes: dict[str, Any] | None = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the call succeeded (a bail is a success)."""
        outcome = self.outcome
        return outcome is Outcome.SUCCESS or outcome is Outcome.BAILED


@dataclass(frozen=True, slots=True)
class SnapshotCommitted:
    """The snapshot with this sequence number is committed to the durable store."""

    seq: int


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer the run actor set went off: retry a call, time one out, or the run's deadline."""

    token: int
    what: Literal["retry", "timeout", "deadline"]


@dataclass(frozen=True, slots=True)
class AbortRun:
    """End this run now as failed with ``error``; with ``None``, halt it and record nothing.

    ``lost``: halted because this worker no longer holds the run (another took
    it while this one stalled past its lease): the registry is told so too.
    ``unstored``: a snapshot of the run never reached the store, so the next
    one may not build on it (its parts hold everything).
    """

    error: dict[str, Any] | None
    lost: bool = False
    unstored: bool = False


@dataclass(frozen=True, slots=True)
class StartHookCalled:
    """The workflow's ``on_start`` hook returned (or failed): the run's first node may start."""


RunActorMessage: TypeAlias = (
    StepFinished
    | SnapshotCommitted
    | TimerFired
    | CancelRun
    | AbortRun
    | StartHookCalled
    | ResumeStep
)
"""Everything :class:`~actors.run.RunActor` accepts."""


# --- to a step actor --------------------------------------------------------------
# From run actors, through the step pool: one command per kind of user code.


class AbortReason(StrEnum):
    """Why a run tells a call to stop: what ``ctx.abort_signal.reason`` reads.

    The signal is handed the plain ``value``: user code sees the same strings
    it always has.
    """

    CANCELED = "canceled"
    """The run ended (cancelled, suspended, slept, halted) while the call ran."""
    SIBLING_FAILED = "sibling_failed"
    """Another call of the run failed, and with it the run."""
    TIMEOUT = "timeout"
    """The step outlasted its timeout."""


@dataclass(frozen=True, slots=True)
class RunPart:
    """What every call a run actor makes in one (nested) workflow carries alike.

    Made once per run actor and workflow scope and shared by its calls, which
    then carry only what changes from one call to the next: a call of a step
    was 25 fields to set, at every step of every run.

    Attributes:
        run_id: The run the calls belong to.
        workflow_id: The (nested) workflow the code belongs to.
        state_schema: The workflow's state schema.
        input_schema: The (nested) workflow's input schema.
        definitions: The output schema of each step and nested workflow by path, for
            ``ctx.get_step_result()``.
        trace_id: The run's trace.
        parent_span_id: The span of the run actor's ``workflow_run`` (one per
            part of the run: each resume, wake or restart has its own).
        span_parent: The OpenTelemetry context of the run actor's ``workflow_run``
            span, the parent of each call's span; ``None`` without OpenTelemetry.
        reply_to: The run actor.
        prefix: The path prefix of the (nested) workflow the code is in.
        bail_schema: The output schema of the workflow the code is in, for
            ``ctx.bail()``: a bail ends that workflow.
        writer: Where ``ctx.writer.write`` sends what a step writes:
            ``writer(path, data, at, item)``.
    """

    run_id: str
    workflow_id: str
    state_schema: type[BaseModel] | None
    input_schema: type[BaseModel]
    definitions: Mapping[str, type[BaseModel]]
    trace_id: str
    parent_span_id: str
    reply_to: pykka.ActorRef[Any]
    span_parent: Any = None
    prefix: str = ""
    bail_schema: type[BaseModel] | None = None
    writer: Callable[[str, Any, float, int | None], None] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """What every call of user code carries; the step actor replies with :class:`StepFinished`.

    What is the same for every call of the run (in one workflow scope) is in
    ``run``, one object; the properties below read it.

    Attributes:
        run: What the run's calls in this workflow scope carry alike.
        payload: The code's input as plain data.
        state: The run's state, for ``ctx.state``.
        request_context: The run's request context.
        init_data: The (nested) workflow's input, for ``ctx.get_init_data()``.
        outputs: The outputs of the steps done so far, by path.
        token: Names this call within its run; the reply carries it back.
        path: The path of the node the code belongs to, in the run's results.
        signal: The abort signal the run sets to tell the code to stop.
    """

    run: RunPart
    payload: Any
    state: Any
    request_context: dict[str, Any]
    init_data: Any
    outputs: Mapping[str, Any]
    token: int = 0
    path: str = ""
    signal: AbortSignal | None = None

    @property
    def run_id(self) -> str:
        """The run the call belongs to."""
        return self.run.run_id

    @property
    def workflow_id(self) -> str:
        """The (nested) workflow the code belongs to."""
        return self.run.workflow_id

    @property
    def state_schema(self) -> type[BaseModel] | None:
        """The workflow's state schema."""
        return self.run.state_schema

    @property
    def input_schema(self) -> type[BaseModel]:
        """The (nested) workflow's input schema."""
        return self.run.input_schema

    @property
    def definitions(self) -> Mapping[str, type[BaseModel]]:
        """The output schema of each step and nested workflow by path."""
        return self.run.definitions

    @property
    def trace_id(self) -> str:
        """The run's trace."""
        return self.run.trace_id

    @property
    def parent_span_id(self) -> str:
        """The span of the run actor's ``workflow_run``."""
        return self.run.parent_span_id

    @property
    def span_parent(self) -> Any:
        """The OpenTelemetry context of the run actor's span, or ``None``."""
        return self.run.span_parent

    @property
    def reply_to(self) -> pykka.ActorRef[Any]:
        """The run actor."""
        return self.run.reply_to

    @property
    def prefix(self) -> str:
        """The path prefix of the (nested) workflow the code is in."""
        return self.run.prefix


@dataclass(frozen=True, slots=True, kw_only=True)
class CallStep(Call):
    """Run a step body (a step of its own, of a parallel, branch or loop, or one foreach item).

    Attributes:
        step: The step's definition.
        final_schema: The workflow's output schema when this is the last
            node's step: its output is then also the run's result.
        retry_count: How many times this step was retried before this call.
        resume_data: What a resume hands the step, not validated yet.
        item: For a foreach item, its index.
    """

    step: Step[Any, Any]
    final_schema: type[BaseModel] | None
    retry_count: int = 0
    resume_data: Any = None
    item: int | None = None

    @property
    def step_id(self) -> str:
        """The step's id."""
        return self.step.id

    @property
    def bail_schema(self) -> type[BaseModel] | None:
        """The output schema of the workflow the step is in, for ``ctx.bail()``."""
        return self.run.bail_schema

    @property
    def writer(self) -> Callable[[str, Any, float, int | None], None] | None:
        """Where ``ctx.writer.write`` sends what the step writes."""
        return self.run.writer


@dataclass(frozen=True, slots=True, kw_only=True)
class CallConditions(Call):
    """Evaluate the conditions of a ``branch`` (each arm's) or of a loop (its one).

    Attributes:
        step_id: The step the reply names: the first arm's, or the loop's.
        fns: Each condition with the schema its input is validated by.
        iteration: A loop condition's iteration count.
    """

    step_id: str
    fns: tuple[tuple[Callable[[Any], Any], type[BaseModel] | None], ...]
    iteration: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallMap(Call):
    """Call a ``map`` function; its output is the node's output.

    Attributes:
        step_id: The name the reply carries (the node's path).
        fn: The function.
    """

    step_id: str
    fn: Callable[[Any], Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class CallSleepLength(Call):
    """Call the function that computes how long a ``sleep`` lasts; the reply holds the wake time.

    Attributes:
        step_id: The name the reply carries (the node's path).
        fn: The function; it returns seconds or a datetime.
    """

    step_id: str
    fn: Callable[[Any], Any]


StepActorMessage: TypeAlias = CallStep | CallConditions | CallMap | CallSleepLength
"""Everything :class:`~actors.step.StepActor` accepts."""


# Every message gets a quicker __init__ (see actors._frozen_init): a run of three steps
# builds about a dozen of them, and a call of a step carries 14 fields. Every dataclass
# this module exports is a message, so a new one gets it too. A cancel and a resume, rare,
# keep their own, which wraps their reply.
_ANSWERED: Final = (CancelRun, ResumeStep)
for _name in __all__:
    _message = globals()[_name]
    if isinstance(_message, type) and is_dataclass(_message) and _message not in _ANSWERED:
        quick_frozen_init(_message)
del _name, _message
