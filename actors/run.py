"""The run actor: walks one run through its plan, node by node.

A node is a step, or a construct over steps (parallel, branch, loop,
foreach), a ``map``, a ``sleep``, or the entry or exit of a nested workflow.
Every call of user code goes to a step actor as a message, and its reply
comes back as one, so the run actor never blocks: it stays responsive to
cancel, timers and shutdown while steps run. A run that sleeps or suspends
hands its snapshot back to the supervisor and stops; a new run actor is built
from the snapshot when it wakes or is resumed, the same way a crashed
process's runs are recovered.

The calls in flight (their tokens, commit gating, timeouts and retries) are
kept by :class:`actors._calls.Calls`; this module decides what to call next
and what each reply means.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final

import pykka

from actors._calls import Calls, Job
from actors._direct import DirectWrites
from actors._dispatch import DispatchedActor, Dispatcher, tell_safely, unexpected
from actors._pool import StepPool
from actors._timer import TimerHandle, Timers
from actors.hooks import HookRunner
from actors.messages import (
    AbortReason,
    AbortRun,
    CallConditions,
    CallMap,
    CallSleepLength,
    CallStep,
    CancelOutcome,
    CancelRun,
    Outcome,
    ResumeOutcome,
    ResumeStep,
    RunActorMessage,
    RunCrashed,
    RunEnded,
    RunParked,
    SnapshotCommitted,
    SnapshotSeen,
    SnapshotTaken,
    StartHookCalled,
    StepFinished,
    StepWrote,
    TimerFired,
)
from actors.step import error_dict
from runtime import _clock, _otel
from runtime._errors import (
    LoopLimitError,
    RunCrashedError,
    RuntimeStoppedError,
    StepTimeoutError,
    StepValidationError,
    WorkflowDefinitionError,
    WorkflowError,
)
from runtime._model import OPEN_STEP_STATUSES, RunStatus, StepStatus
from runtime._plan import (
    BranchNode,
    CollectNode,
    EachNextNode,
    EachStartNode,
    EnterNode,
    ExecutionPlan,
    ExitNode,
    ForeachNode,
    LoopBackNode,
    LoopNode,
    MapNode,
    ParallelNode,
    SleepNode,
    StepNode,
    item_path,
    split_item_path,
)
from runtime._snapshot import (
    EACH_SCOPE,
    LOOP_SCOPE,
    START_STATE,
    IncrementalEncoder,
    Snapshot,
    SnapshotFreezer,
    StepSnapshot,
    close_open_steps,
    fix_deadline,
    forget_suspensions,
    mark_canceled,
    mark_deadline_passed,
    mark_failed,
    read_another,
    suspend_at,
)
from runtime._step import Step, stored_as, validate_for_step
from runtime._tracing import Span, emit, observed

__all__ = ["RunActor", "refused_request", "resume_fits"]

_FLOWS: Final = "#flows"
"""The suffix of a parallel or branch node's path in the scopes while its nested workflows run."""
_LOOP: Final = LOOP_SCOPE
"""The suffix of a nested workflow's path in the scopes while a loop runs it: the iteration."""
_EACH: Final = EACH_SCOPE
"""The suffix of a nested workflow's path in the scopes while a foreach runs it."""

# Statuses as the plain text snapshots hold, looked up once: an enum's ``.value`` is a
# Python-level property call, and these are set at every step of every run.
_RUN_RUNNING: Final = RunStatus.RUNNING.value
_RUN_WAITING: Final = RunStatus.WAITING.value
_STEP_RUNNING: Final = StepStatus.RUNNING.value
_STEP_WAITING: Final = StepStatus.WAITING.value
_STEP_SUCCESS: Final = StepStatus.SUCCESS.value
_STEP_CANCELED: Final = StepStatus.CANCELED.value

WAKE_EARLY: Final = 0.001
"""A sleep that ends within this many seconds is over: the run goes on at once."""


WRITE_WINDOW: Final = 1024
"""The most writes of one run's steps (``ctx.writer.write``) not yet handled by the registry:
a step that writes faster than the registry takes its writes waits, rather than fill the
registry's inbox without bound."""

WRITE_PATIENCE: Final = 1.0
"""Seconds a write waits for room in the window before it goes anyway (a registry that
has stopped handles nothing more)."""


_WINDOW_LOCK: Final = threading.Lock()
"""Makes a run's write window once, whichever step thread writes first."""


class _Writer:
    """What ``ctx.writer.write`` calls, on the step's thread: the registry takes it.

    The window of :data:`WRITE_WINDOW` writes is made on the first write: most
    runs never write, and a semaphore (a condition and a lock) per run costs
    every run.
    """

    __slots__ = ("_registry", "_run_id", "_window", "wrote")

    def __init__(self, registry: pykka.ActorRef[Any], run_id: str) -> None:
        self._registry = registry
        self._run_id = run_id
        self._window: threading.Semaphore | None = None
        # Set (on the step's thread) before the first write is told to the registry,
        # so before the step's reply reaches the run actor: from then on the run's
        # snapshots go through the registry too, in order with its writes.
        self.wrote = False

    def _made_window(self) -> threading.Semaphore:
        with _WINDOW_LOCK:
            if self._window is None:
                self._window = threading.Semaphore(WRITE_WINDOW)
            return self._window

    def __call__(self, path: str, data: Any, at: float, item: int | None) -> None:
        self.wrote = True
        window = self._window or self._made_window()
        slot = window.acquire(timeout=WRITE_PATIENCE)
        message = StepWrote(
            run_id=self._run_id,
            path=path,
            data=data,
            at=at,
            item=item,
            taken=window.release if slot else None,
        )
        if not tell_safely(self._registry, message) and slot:
            window.release()


def _of_condition(error: dict[str, Any] | None) -> dict[str, Any] | None:
    """A condition's error, its details saying so: its ``step_id`` names the loop or branch."""
    if error is None:
        return None
    details = error.get("details")
    return {
        **error,
        "details": {**(details if isinstance(details, dict) else {}), "in": "condition"},
    }


class RunActor(DispatchedActor):
    """Walks a run's plan: sends each call to a step actor and waits for its reply as a message.

    It never blocks, so it stays responsive while a step runs, and after every
    transition it tells the registry the run's new snapshot. It stops when the
    run ends, sleeps or suspends; if it fails, it reports to its supervisor,
    which records the run as failed.
    """

    # Items resumed while the run ran, behind the next item to consider: they start
    # before it, as there is room. And the answers to resumes taken while the run ran,
    # with the sequence number of the record that holds each: a resume is acknowledged
    # once it is committed. Rare: none until the first (no list made for every run).
    _resumed_items: list[int] | None = None
    _resume_replies: list[tuple[int, Callable[[ResumeOutcome], None]]] | None = None
    # On a shared store: the suspensions a bail let go of, unresumed, which the next
    # record carries out the resume requests of (they asked for those, not for a later
    # suspension at the same path); and, by path, the seq of the last record that
    # ended a suspension there (taken by a request, or let go of): a request read
    # before it was of that one. Rare: none until the first.
    _dropping: tuple[str, ...] = ()
    _spent: dict[str, int] | None = None
    # The timer of the run's deadline (its run_timeout), while this actor drives it.
    _deadline_timer: TimerHandle | None = None

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        plan: ExecutionPlan,
        snapshot: Snapshot,
        registry: pykka.ActorRef[Any],
        supervisor: pykka.ActorRef[Any],
        pool: StepPool,
        timers: Timers,
        hooks: HookRunner,
        durable: bool = False,
        direct: DirectWrites | None = None,
        woken: bool = False,
    ) -> None:
        super().__init__(dispatcher)
        self._plan = plan
        # Woken from a sleep by the supervisor: the snapshot is the one an actor of this
        # same plan parked (_park), so it fits the plan without a check (_plan_mismatch).
        self._woken_here = woken
        # On a store in memory: snapshots kept without telling the registry.
        self._direct = direct
        self._writer = _Writer(registry, snapshot["run_id"])
        self._snapshot = snapshot
        self._registry = registry
        self._supervisor = supervisor
        self._hooks = hooks
        self._timers = timers
        self._durable = durable
        self._ended = False
        # On a durable store, a run with end hooks: the seq of the record that keeps its
        # last steps, and its result, until that record is committed (see _complete).
        self._ending: tuple[int, Any] | None = None
        # Every record of the run is taken through it. On a durable store a transition
        # encodes what it changed, and a store that keeps step records apart writes only
        # that; in a MemoryStore a record is a frozen copy, encoded only if somebody reads it.
        self._encoder: IncrementalEncoder | SnapshotFreezer = (
            SnapshotFreezer(snapshot) if direct is not None else IncrementalEncoder(snapshot)
        )
        self._calls = Calls(
            self._actor_ref,
            plan,
            snapshot,
            pool,
            timers,
            durable=durable,
            writer=self._writer,
        )
        # Foreach: the next item to consider starting, and how many are not done yet
        # (not in the snapshot: items started and not done run again after a crash).
        self._next_item = 0
        self._items_left = 0
        # The state each step record began with, by path (not in the snapshot): a step
        # that changes the state records it, for a time travel to start there again.
        self._began: dict[str, Any] = {}
        # A resumed run starts with the outputs of the steps it completed before. (A
        # loop, not a comprehension: in Python 3.11 that is a call, and every run woken
        # from a sleep comes here.)
        outputs: dict[str, Any] = {}
        for path, step in snapshot["steps"].items():
            if step["status"] == _STEP_SUCCESS:
                outputs[path] = step["output"]
        self._outputs = outputs
        # The run's span, made in on_start only if somebody would see it (see observed()):
        # in a program that traces nothing it is two objects less per run in flight.
        self._span: Span | None = None
        # Whether this actor counts in the runs in flight (callboard.runs.active).
        self._active: _otel.Instruments | None = None

    # --- lifecycle and messages -----------------------------------------------------------

    def on_start(self) -> None:
        snapshot = self._snapshot
        if observed():
            # A pending run's first part is its root span, with the span id the run was
            # started with (its results' span_id). Each later part (after a resume, a
            # wake, a restart or a recovery) is a span of its own under that one, in the
            # same trace: with one id for every part, the logs showed the run's span
            # started and ended again and again, and could not tell the parts apart.
            # (With OpenTelemetry the ids are its own, each part under workflow_start.)
            first = snapshot["status"] == RunStatus.PENDING
            span = self._span = Span(
                "workflow_run",
                snapshot["trace_id"],
                parent_span_id=None if first else snapshot["span_id"],
                span_id=snapshot["span_id"] if first else None,
                run_id=snapshot["run_id"],
                workflow_id=snapshot["workflow_id"],
                sampled=not snapshot.get("unsampled", False),
                metadata=snapshot["metadata"],
            )
            span.start()
            self._calls.span_parent = span.otel_context()
            self._calls.span_id = span.span_id
        meter = _otel.instruments()
        if meter is not None:
            workflow = {"callboard.workflow.id": snapshot["workflow_id"]}
            if snapshot["status"] == RunStatus.PENDING or snapshot.get("restarting"):
                meter.runs_started.add(1, workflow)
            meter.runs_active.add(1, workflow)
            self._active = meter
        # Only a run with recorded steps or past its first node can fail to fit its plan
        # (a new run's next_step is 0), and not one parked by an actor of this plan.
        if (snapshot["steps"] or snapshot["next_step"]) and not self._woken_here:
            mismatch = self._plan_mismatch()
            if mismatch is not None:
                self._finish(RunStatus.FAILED, error=error_dict(mismatch, with_traceback=False))
                return
        if "run_timeout" in snapshot and not self._watch_deadline():
            return  # its time was up: canceled before anything more of it ran
        if snapshot["status"] == RunStatus.WAITING:
            wake_at = snapshot["wake_at"]
            if wake_at is not None and wake_at - _clock.time() > WAKE_EARLY:
                self._park(wake_at)  # recovered before its time: sleep on
                return
            snapshot["status"] = _RUN_RUNNING
            self._woken()
            return
        first = snapshot["status"] == RunStatus.PENDING
        snapshot["status"] = _RUN_RUNNING
        snapshot.pop("restarting", None)  # counted above: a recovery later is not a restart
        if snapshot["suspended"]:
            self._mark_children(StepStatus.SUSPENDED, StepStatus.RUNNING)
        if first and self._plan.on_start is not None:
            # The first node starts once on_start has returned (a pending run recovered
            # after a crash calls it again: it has not started as far as anyone knows).
            me = self.actor_ref
            self._hooks.start(self._plan, snapshot, lambda: tell_safely(me, StartHookCalled()))
            return
        if first:
            self._enter_first()
        else:
            self._enter(snapshot["next_step"])

    def _watch_deadline(self) -> bool:
        """Fix the run's deadline if it begins to execute now, and set its timer.

        ``False`` if the deadline has passed already (a run recovered, woken,
        resumed or claimed after it): the run is canceled now.
        """
        now = _clock.time()
        deadline = fix_deadline(self._snapshot, now)
        if deadline is None:
            return True
        if deadline <= now:
            self._deadline_passed()
            return False
        # Timers stopped: the runtime is stopping, and the run is halted (kept) or failed.
        with contextlib.suppress(RuntimeStoppedError):
            self._deadline_timer = self._timers.call_at(
                deadline, tell_safely, self._actor_ref, TimerFired(token=0, what="deadline")
            )
        return True

    def _deadline_passed(self) -> None:
        """The run's ``run_timeout`` is up: cancel it as a cancel would, its error saying why."""
        if self._ended or self._ending is not None:
            return  # ended, or succeeded and recording its last steps (as for a cancel)
        mark_deadline_passed(self._snapshot, _clock.time())
        self._end(RunStatus.CANCELED, reason=AbortReason.CANCELED, error=self._snapshot["error"])

    def on_stop(self) -> None:
        timer = self._deadline_timer
        if timer is not None:
            # A run that ended (slept, suspended) long before its deadline keeps no timer.
            self._deadline_timer = None
            timer.cancel()

    def _on_start_hook_called(self, message: StartHookCalled) -> None:
        if not self._ended:
            self._enter_first()

    def _enter_first(self) -> None:
        """Enter a pending run's first node; its calls go out without waiting for a commit.

        On a durable store a call waits for the commit of the snapshot that
        announces it, so that the output of the step before it is stored first.
        These have no output before them that is not stored yet (a time-travelled
        run's earlier outputs are in its first record): the run's pending record,
        committed before this actor started, is what a recovery starts them from
        either way. The snapshot marking them running is saved behind them. An on_start
        hook changes nothing that would have to be stored first: a run recovered
        while pending calls it again.
        """
        calls = self._calls
        calls.gated = False
        try:
            self._enter(self._snapshot["next_step"])
        finally:
            calls.gated = True

    def _mark_children(self, old: StepStatus, new: StepStatus) -> None:
        """Give the records of the nested workflows that hold a suspended step a new status.

        A nested workflow is ``suspended`` while its run is suspended at one of
        its steps, and ``running`` again once the run is resumed.
        """
        steps = self._snapshot["steps"]
        for path in self._snapshot["suspended"]:
            parts = path.split(".")
            for end in range(1, len(parts)):
                record = steps.get(".".join(parts[:end]))
                if record is not None and record["status"] == old:
                    record["status"] = new.value

    def on_receive(self, message: RunActorMessage) -> None:
        match message:
            case StartHookCalled():
                self._on_start_hook_called(message)
            case StepFinished():
                self._on_step_finished(message)
            case SnapshotCommitted():
                self._on_snapshot_committed(message)
            case TimerFired():
                self._on_timer_fired(message)
            case CancelRun():
                self._on_cancel_run(message)
            case AbortRun():
                self._on_abort_run(message)
            case ResumeStep():
                self._on_resume_step(message)
            case _:
                unexpected(self, message)

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
        self._calls.abort(AbortReason.CANCELED)
        self._resumes_gone()
        failure = error_dict(crash)
        self._end_span(RunStatus.FAILED.value, failure=failure, error=type(crash).__name__)
        self._count_end(RunStatus.FAILED.value)
        tell_safely(
            self._supervisor,
            RunCrashed(
                run_id=self._snapshot["run_id"], error=error_dict(crash), actor=self.actor_ref
            ),
        )

    def _on_step_finished(self, message: StepFinished) -> None:
        job = self._calls.finished(message.token)
        if job is None or self._ended:
            return  # abandoned (timed out, or the run ended meanwhile): it no longer counts
        call = job.call
        if type(call) is not CallStep:
            self._other_replied(job, message)
            return
        # Only steps change the state and the request context; the others read them.
        changes = message.state_changes
        if changes is None or changes:  # else it changed nothing of the state
            self._take_state(call, message)
        if message.request_context is not call.request_context:  # it changed some
            self._snapshot["request_context"] = _with_changes(
                self._snapshot["request_context"],
                call.request_context,
                message.request_context,
            )
        if message.outcome is not Outcome.SUCCESS:
            self._step_not_done(job, call, message)
            return
        node = self._plan.nodes[job.index]
        if isinstance(node, ForeachNode):
            self._item_done(job, node, message.output)
            return
        output = message.output
        self._finish_step(call.path, output, message)
        self._outputs = {**self._outputs, call.path: output}
        match node:
            case StepNode():
                if message.result is not None or call.final_schema is not None:
                    self._snapshot["carry"] = output
                    self._snapshot["next_step"] = job.index + 1
                    self._succeed(message.result)  # checked by the step actor
                else:
                    self._jump(job.index + 1, output)  # _advance's, inline
            case LoopNode():
                self._check_loop(job.index, node, output)
            case _:  # parallel or branch
                self._group_settled(job.index)

    def _other_replied(self, job: Job, message: StepFinished) -> None:
        """The reply to a call that is not a step's (a condition, a map, a sleep's length)."""
        match job.call:
            case CallConditions() if message.ok:
                self._conditions_replied(job, message.output)
            case CallMap() as call if message.ok:
                self._finish_step(call.path, message.output, message)
                # ctx.get_step_result() reads it as a resumed run's steps would.
                self._outputs = {**self._outputs, call.path: message.output}
                self._advance(message.output)
            case CallSleepLength() if message.ok:
                self._sleep_until(job.index, message.output)
            case CallConditions():
                # A condition's failure is not its step's (a loop's step succeeded): only
                # the run records it, its details saying it was the condition of that path.
                self._fail_at("", _of_condition(message.error))
            case call:
                self._fail_at(call.path, message.error)

    def _take_state(self, call: CallStep, message: StepFinished) -> None:
        """Apply what a step did to the state: nothing, a merge of some keys, or a new state.

        A step that changed nothing leaves the run's state alone, so that a
        sibling in ``parallel`` that finished first keeps its changes; so does
        a merge of the keys a step with its own state schema updated. A step
        that changed it keeps in its record the state it began with (see
        :meth:`_keep_start_state`).
        """
        changes = message.state_changes
        if changes is None:
            state = message.state
        else:  # the keys it changed (the caller skips a step that changed none)
            current = self._snapshot["state"]
            state = {**(current if isinstance(current, dict) else {}), **changes}
        before = self._snapshot["state"]
        self._snapshot["state"] = state
        if state != before:
            self._keep_start_state(call)

    def _keep_start_state(self, call: CallStep) -> None:
        """Keep in the step's record the state it began with: it changed the state.

        Only such a step keeps one, so a run whose state never changes writes
        no byte more. The state a step began with is then the ``start_state``
        of the first record from its own on that has one, or else the run's
        state as it ended: what ``time_travel`` starts the step on.
        """
        steps = self._snapshot["steps"]
        record = steps.get(call.path)
        if record is None or START_STATE in record:
            return  # an item of a foreach after another changed it, or a resumed step
        # The state when its record began: a retry's call carries the state as it is
        # then, a sibling's change included. A record this actor did not begin (a
        # foreach's, resumed) began on the state this call began on: had a call of it
        # changed the state since, the record would have it.
        began = self._began.get(call.path, call.state)
        if record["status"] in OPEN_STEP_STATUSES:
            record[START_STATE] = began
        else:
            # A settled record is never changed in place (the snapshot's encoder
            # encodes it again only if it is another object).
            steps[call.path] = {**record, START_STATE: began}

    def _on_snapshot_committed(self, message: SnapshotCommitted) -> None:
        self._calls.committed(message.seq)
        if self._resume_replies:
            waiting = []
            for seq, reply in self._resume_replies:
                if seq <= message.seq:
                    reply(ResumeOutcome.RECORDED)
                else:
                    waiting.append((seq, reply))
            self._resume_replies = waiting
        ending = self._ending
        if ending is not None and message.seq >= ending[0]:
            self._ending = None
            self._finish(RunStatus.SUCCESS, result=ending[1])

    def _on_timer_fired(self, message: TimerFired) -> None:
        if self._ended:
            return
        if message.what == "retry":
            self._calls.retry_due(message.token)
            return
        if message.what == "deadline":
            self._deadline_passed()
            return
        job = self._calls.timed_out(message.token)
        if job is None:
            return  # it finished just before its timeout
        step_node = job.step_node
        assert step_node is not None
        path = step_node.path
        timeout = StepTimeoutError(
            f"step {path!r} did not finish within its timeout of {step_node.timeout} s",
            run_id=self._snapshot["run_id"],
            step_id=path,
        )
        self._step_failed(job, error_dict(timeout, step_id=path, with_traceback=False), True)

    def _on_cancel_run(self, message: CancelRun) -> None:
        if self._ended or self._ending is not None:
            # Ended, or succeeded and recording its last steps before its hooks: a
            # cancel now would turn a run whose every step succeeded into a canceled one.
            message.reply(CancelOutcome.NOT_HERE)
            return
        try:
            mark_canceled(self._snapshot, _clock.time())
            # The reply travels with the canceled snapshot: the caller hears of the
            # cancel only once every query sees it (and a durable store has it).
            on_recorded = message.reply_once_recorded()
            self._end(RunStatus.CANCELED, reason=AbortReason.CANCELED, on_recorded=on_recorded)
        except BaseException:
            message.reply(CancelOutcome.NOT_HERE)  # the supervisor records the crash
            raise

    def on_undelivered(self, message: Any) -> None:
        self.on_undelivered_gone(message)

    @classmethod
    def on_undelivered_gone(cls, message: Any) -> None:
        if isinstance(message, CancelRun):
            # Stopped (it ended, slept or suspended) before reading it: let the caller
            # look again, where the run is now.
            message.reply(CancelOutcome.NOT_HERE)
        elif isinstance(message, ResumeStep):
            message.reply(ResumeOutcome.GONE)

    def _on_abort_run(self, message: AbortRun) -> None:
        if message.lost:
            # Whoever waits here for the run now reads it from the store, as after
            # a write of it was fenced off.
            run_id = self._snapshot["run_id"]
            tell_safely(self._registry, SnapshotSeen(run_id=run_id, record=None, fenced=True))
        if message.unstored:
            self._encoder.start_over()
        if message.error is None:
            self._halt()
        else:
            self._finish(RunStatus.FAILED, error=_naming_run(message.error, self._snapshot))

    def _on_resume_step(self, message: ResumeStep) -> None:
        """Resume one suspension that waits while the run runs on (another was resumed).

        Of two resumes of one suspension the first is taken, the other answered
        ``TAKEN``. The step (or item) starts once the record that holds its resume
        is committed, and the caller is answered then: what a resume acknowledged
        is durable, and a recovery runs the step with it.
        """
        if self._ended or self._ending is not None:
            message.reply(ResumeOutcome.GONE)
            return
        snapshot = self._snapshot
        path = message.path
        resume = snapshot["resume"] or {}
        if message.stored and path in resume:
            # A request of the store's this actor took already, told again before the
            # record that carries it out was committed: that record carries it out.
            message.reply(ResumeOutcome.RECORDED)
            return
        index = snapshot["next_step"]
        member = self._waiting_member(index, path)
        if member is None or path not in snapshot["suspended"] or path in resume:
            message.reply(ResumeOutcome.TAKEN)
            return
        read_run = message.read_run
        if read_run is not None and read_run != (
            snapshot["created_at"],
            snapshot.get("restarts", 0),
        ):
            # Read before the run was restarted (or of another run of its id, deleted
            # since): the suspensions it ended, and the seqs they ended at, are nothing
            # this actor knows of (``_spent`` is its own), and the one that waits now is
            # not the request's.
            message.reply(ResumeOutcome.TAKEN)
            return
        if read_another(snapshot, path, message.read_seq):
            # Read before the suspension that waits at ``path`` now came (its id, kept in
            # the run's records, is past the seq it was read at): the one it asked for
            # ended since, wherever it was taken (another worker, another actor here).
            message.reply(ResumeOutcome.TAKEN)
            return
        spent = self._spent
        if (
            message.read_seq is not None
            and spent is not None
            and message.read_seq < spent.get(path, -1)
        ):
            # Read before the suspension it asked for ended (a request told again
            # late, or one a bail let go of): the one that waits now is not its own.
            message.reply(ResumeOutcome.TAKEN)
            return
        if message.stored and not resume_fits(member.step, path, message.data, snapshot["run_id"]):
            message.reply(ResumeOutcome.REFUSED)
            return
        taken = (path,) if message.stored else ()
        snapshot["resume"] = {**resume, path: message.data}
        snapshot["resumed"] = True  # a later resume of it is told that this one won
        node = self._plan.nodes[index]
        if isinstance(node, ForeachNode):
            item = split_item_path(path)[1]
            assert item is not None
            if item < self._next_item:  # else the items still to consider include it
                if self._resumed_items is None:
                    self._resumed_items = []
                self._resumed_items.append(item)
            jobs = self._next_items(index, node)
            # The resume's reply waits for its commit.
            seq = self._tell_snapshot(awaited=True, carries=taken)
            if jobs:
                self._calls.send(jobs, seq)
        else:
            job = self._step_job(index, member, snapshot["carry"])
            seq = self._calls.send([job], self._tell_snapshot(awaited=True, carries=taken))
        if taken:
            self._spend(taken, seq)
        if self._durable:
            if self._resume_replies is None:
                self._resume_replies = []
            self._resume_replies.append((seq, message.reply))
        else:
            message.reply(ResumeOutcome.RECORDED)

    def _waiting_member(self, index: int, path: str) -> StepNode | None:
        """The step of the node at ``index`` whose suspension ``path`` names, if it has one.

        Only a node that goes on while some of its members wait holds one: a
        parallel's or branch's steps, a foreach's items.
        """
        node = self._plan.nodes[index] if index < len(self._plan.nodes) else None
        match node:
            case ForeachNode():
                base, item = split_item_path(path)
                step_node = node.step_node
                found = item is not None and step_node is not None and step_node.path == base
                return step_node if found else None
            case ParallelNode() | BranchNode():
                return next((step for step in self._group_steps(index) if step.path == path), None)
            case _:
                return None

    def _resumes_gone(self, outcome: ResumeOutcome = ResumeOutcome.GONE) -> None:
        """The actor stops driving the run: resumes not yet committed are told ``outcome``."""
        replies, self._resume_replies = self._resume_replies or [], None
        for _, reply in replies:
            reply(outcome)

    # --- walking the plan ------------------------------------------------------------

    def _plan_mismatch(self) -> WorkflowDefinitionError | None:
        """Why a resumed run's snapshot does not fit the workflow as registered now, if so."""
        plan, snapshot = self._plan, self._snapshot
        steps = snapshot["steps"]  # none in a new run's: nothing to look up
        if 0 <= snapshot["next_step"] <= len(plan.nodes) and (
            not steps or plan.paths.issuperset(steps)
        ):
            return None
        return WorkflowDefinitionError(
            f"run {snapshot['run_id']!r} cannot resume: its recorded steps "
            f"{list(snapshot['steps'])} (next: {snapshot['next_step']}) do not fit workflow "
            f"{plan.workflow_id!r} as registered now (steps {sorted(plan.paths)})",
            run_id=snapshot["run_id"],
        )

    def _enter(self, index: int) -> None:
        """Start the node at ``index`` (or go on with it, for a run resumed inside it)."""
        snapshot = self._snapshot
        snapshot["next_step"] = index
        nodes = self._plan.nodes
        if index >= len(nodes):
            self._complete()
            return
        node = nodes[index]
        match node:
            case StepNode() if not snapshot["resume"] and node.path not in snapshot["steps"]:
                self._start_step(index, node)
            case StepNode():
                self._start_group(index, (node,))
            case ParallelNode():
                self._start_group(index, node.steps)
            case BranchNode():
                self._enter_branch(index, node)
            case LoopNode():
                self._enter_loop(index, node)
            case ForeachNode():
                self._enter_foreach(index, node)
            case MapNode():
                self._enter_map(index, node)
            case SleepNode():
                self._enter_sleep(index, node)
            case EnterNode():
                self._enter_child(index, node)
            case ExitNode():
                self._exit_child(index, node)
            case CollectNode():
                self._collect(index, node)
            case LoopBackNode():
                self._enter_loop_back(index, node)
            case EachStartNode():
                self._enter_each(index, node)
            case EachNextNode():
                self._each_next(index, node)
            case _:  # pragma: no cover - compile_plan makes no other nodes
                raise TypeError(f"unknown plan node {node!r}")

    def _advance(self, output: Any) -> None:
        """The current node is done with ``output``: hand it to the next node."""
        self._jump(self._snapshot["next_step"] + 1, output)

    def _jump(self, index: int, carry: Any) -> None:
        """Go to the node at ``index`` with ``carry`` as its input (a loop, a region)."""
        snapshot = self._snapshot
        snapshot["carry"] = carry
        snapshot["progress"] = None
        if "retries" in snapshot:  # the node's retries, done with it
            del snapshot["retries"]
        self._enter(index)

    def _complete(self) -> None:
        """Every node is done: the run succeeds with the last output as its result.

        (A last step node's output was checked against the workflow's output schema by
        its step actor: its reply goes to :meth:`_succeed` itself.)
        """
        plan = self._plan
        last = plan.nodes[-1].path
        try:
            result = stored_as(
                plan.output_schema,
                self._snapshot["carry"],
                f"the output of the last step {last!r}",
                "the workflow's output schema",
                run_id=self._snapshot["run_id"],
                step_id=last,
            )
        except WorkflowError as error:
            self._finish(RunStatus.FAILED, error=error_dict(error, step_id=last))
            return
        self._succeed(result)

    def _succeed(self, result: Any) -> None:
        """The run succeeds with ``result`` (its last node's output, or a bail's)."""
        if self._durable and self._plan.has_hooks:
            # The end is recorded after the hooks return, and only the end's record held
            # the last steps' outputs: a crash while on_finish ran lost them, and the run
            # ran its last step (or the step that bailed) again and called on_finish
            # twice. They are recorded first, the run still running past its last node
            # with the result as its carry (what a recovery ends with), and the hooks
            # wait for that record.
            # What still runs (a bail's siblings) is told to stop now, as at the end, and
            # its replies are ignored meanwhile.
            self._calls.abort(AbortReason.CANCELED)
            snapshot = self._snapshot
            snapshot["next_step"] = len(self._plan.nodes)
            snapshot["carry"] = result
            self._ending = (self._tell_snapshot(awaited=True), result)
            return
        self._finish(RunStatus.SUCCESS, result=result)

    # --- steps and groups of steps -------------------------------------------------------

    def _start_group(self, index: int, steps: tuple[StepNode, ...]) -> None:
        """Start every step of a step, parallel or branch node that has not finished yet."""
        snapshot = self._snapshot
        records = snapshot["steps"]
        resume = snapshot["resume"] or {}
        jobs = []
        for step_node in steps:
            record = records.get(step_node.path)
            status = record["status"] if record is not None else None
            if status == StepStatus.SUCCESS:
                continue
            if status == StepStatus.SUSPENDED and step_node.path not in resume:
                continue
            jobs.append(self._step_job(index, step_node, snapshot["carry"]))
        if jobs:
            # _send's, inline: every step (and gates() asked only on a durable store)
            calls = self._calls
            calls.send(jobs, self._tell_snapshot(awaited=self._durable and calls.gates(jobs)))
        else:
            self._group_settled(index)

    def _start_step(self, index: int, step_node: StepNode) -> None:
        """Start a step node that has no record yet, and no resume waits for: the usual node.

        What :meth:`_start_group` and :meth:`_step_job` do for it, without what
        only a step run before needs (its earlier record's attempts, resume data
        and the state it began with): two calls fewer at every step of every run.
        """
        carry = self._snapshot["carry"]
        self._record_step(step_node.path, carry)
        calls = self._calls
        jobs = [calls.step(index, step_node, carry, self._outputs)]
        calls.send(jobs, self._tell_snapshot(awaited=self._durable and calls.gates(jobs)))

    def _send(self, jobs: list[Job]) -> int:
        """Record the snapshot that announces ``jobs`` (made already), then hand them over.

        Returns:
            The sequence number of that snapshot.
        """
        calls = self._calls
        # Only a durable store gates calls: gates() is not asked in memory.
        return calls.send(jobs, self._tell_snapshot(awaited=self._durable and calls.gates(jobs)))

    def _step_job(
        self,
        index: int,
        step_node: StepNode,
        payload: Any,
        *,
        item: int | None = None,
        iteration: int | None = None,
    ) -> Job:
        """A call of a step, its record updated to ``running`` (resume data handed over)."""
        snapshot = self._snapshot
        path = step_node.path
        resume_data = None
        resume = snapshot["resume"]
        attempt = 0
        delay: float | None = None
        if item is None:
            previous = snapshot["steps"].get(path)
            record = self._record_step(path, payload, iterations=iteration)
            if previous is not None and previous["status"] != _STEP_SUCCESS:
                _keep_began(previous, record)  # resumed, or recovered while it ran
            resumed_before = None
            if previous is not None and previous["status"] == _STEP_RUNNING:
                # Recovered in its retries' back-off (or in a retry): the calls made
                # count against its budget, as they would have without the stop, and
                # what is left of the back-off is waited out.
                attempts = previous.get("attempts")
                if attempts is not None and attempts > 1:
                    attempt = attempts - 1
                    record["attempts"] = attempts
                    entry = (snapshot.get("retries") or {}).get(path)
                    if entry is not None:
                        delay = _left(entry[1])
                # Recovered while it ran on a resume: its resume data was taken out of
                # the run's pending resumes when it began, and the committed resume was
                # lost (the step ran again without it, and suspended again).
                resumed_before = previous.get("resume_payload")
            if resumed_before is not None and not (resume and path in resume):
                assert previous is not None
                resume_data = resumed_before
                record["resume_payload"] = resume_data
                record["suspend_payload"] = previous.get("suspend_payload")
                record["resumed_at"] = previous.get("resumed_at")
                record["started_at"] = previous.get("started_at") or record["started_at"]
            elif resume and path in resume:
                resume_data = resume[path]
                snapshot["resume"] = {k: v for k, v in resume.items() if k != path} or None
                record["resume_payload"] = resume_data
                if previous is not None:
                    record["suspend_payload"] = previous.get("suspend_payload")
                    # The time spent waiting for the resume stays visible: the step
                    # keeps when it first started, and records when it was resumed.
                    record["resumed_at"] = record["started_at"]
                    record["started_at"] = previous.get("started_at") or record["started_at"]
                snapshot["suspended"] = {
                    k: v for k, v in snapshot["suspended"].items() if k != path
                }
                forget_suspensions(snapshot, (path,))
                self._encoder.suspended_changed(path, gone=True)
        elif (retries := snapshot.get("retries")) and (
            entry := retries.get(item_path(path, item))
        ) is not None:
            # An item recovered in its retries' back-off (or in a retry), as a step is.
            attempt, delay = int(entry[0]), _left(entry[1])
        if item is not None and resume and (key := item_path(path, item)) in resume:
            resume_data = self._resume_item(path, key, resume[key])
        job = self._calls.step(
            index,
            step_node,
            payload,
            self._outputs,
            item=item,
            resume_data=resume_data,
            attempt=attempt,
        )
        job.delay = delay
        return job

    def _resume_item(self, path: str, key: str, resume_data: Any) -> Any:
        """A suspended item of a foreach, resumed: it alone gets the data.

        The data stays among the pending resumes until the item ends or suspends
        again: a crash meanwhile runs the item again with it (it ran again without,
        and suspended again, its committed resume lost).
        """
        snapshot = self._snapshot
        if key in snapshot["suspended"]:
            snapshot["suspended"] = {k: v for k, v in snapshot["suspended"].items() if k != key}
            forget_suspensions(snapshot, (key,))
            self._encoder.suspended_changed(key, gone=True)
        record = snapshot["steps"][path]
        record["resume_payload"] = resume_data
        record["resumed_at"] = _clock.time()  # the last of its items resumed
        return resume_data

    def _record_step(
        self, path: str, payload: Any, *, iterations: int | None = None
    ) -> StepSnapshot:
        # The keys only some steps need (attempts, iterations, the suspend and
        # resume payloads) are added when they are: every byte is encoded at
        # every transition of every run.
        record: StepSnapshot = {
            "status": _STEP_RUNNING,
            "payload": payload,
            "output": None,
            "error": None,
            "started_at": _clock.time(),
            "ended_at": None,
        }
        if iterations is not None:
            record["iterations"] = iterations
        steps = self._snapshot["steps"]
        steps.pop(path, None)  # a step run again moves to the end, in the order steps ran
        steps[path] = record
        self._began[path] = self._snapshot["state"]
        return record

    # --- replies ---------------------------------------------------------------------------

    def _step_not_done(self, job: Job, call: CallStep, message: StepFinished) -> None:
        """A step's reply other than a success: it failed, bailed or suspended."""
        outcome = message.outcome
        if outcome is Outcome.FAILED:
            self._step_failed(job, message.error or {}, message.retryable)
            return
        if outcome is Outcome.BAILED:
            # Its output is the bail's, as its record says (and a run rebuilt from the
            # record reads): ctx.get_step_result() of it gives the same live. A foreach
            # item's bail ends the foreach so too, as a parallel member's ends it: the
            # step succeeded, its items still running are told to stop.
            self._finish_step(call.path, message.output, message)
            self._outputs = {**self._outputs, call.path: message.output}
            if call.prefix:  # inside a nested workflow: it ends, not the run
                self._bail_out_of(job.index, call.prefix, message.result)
                return
            self._succeed(message.result)
            return
        self._step_suspended(job, message.output, message)  # Outcome.SUSPENDED, the last

    def _finish_step(self, path: str, output: Any, message: StepFinished) -> None:
        record = self._snapshot["steps"][path]
        record["status"] = _STEP_SUCCESS
        record["output"] = output
        record["error"] = None
        began = message.started_at
        started = record["started_at"]
        if not started or began < started:  # min() without its call: at every step of every run
            record["started_at"] = began
        record["ended_at"] = message.ended_at

    def _step_failed(self, job: Job, error: dict[str, Any], retryable: bool) -> None:
        step_node, call = job.step_node, job.call
        assert step_node is not None and isinstance(call, CallStep)
        policy = step_node.retry
        told_to_stop = job.signal.aborted and job.signal.reason != AbortReason.TIMEOUT
        if retryable and job.attempt < policy.attempts and not told_to_stop:
            retry = job.attempt + 1
            record = self._snapshot["steps"][call.path]
            record["error"] = error
            if job.item is None:
                record["attempts"] = retry + 1
            else:
                # A foreach step counts its items' retries: each one shows, and a
                # watcher is told it (step_retrying), as for a step of its own.
                record["attempts"] = record.get("attempts", 1) + 1
            again = self._calls.step(
                job.index,
                step_node,
                call.payload,
                self._outputs,
                item=job.item,
                resume_data=call.resume_data,
                attempt=retry,
            )
            delay = self._calls.backoff(again, policy)
            # Recorded (beside the step records, which readers of older versions check
            # key by key), so that a recovery goes on with its budget and its back-off.
            key = call.path if job.item is None else item_path(call.path, job.item)
            retries = dict(self._snapshot.get("retries") or {})
            retries[key] = [retry, _clock.time() + delay]
            self._snapshot["retries"] = retries
            self._tell_snapshot(terminal=False)
            self._calls.retry_later(again, delay)
            return
        self._fail_at(call.path, error, attempts=job.attempt + 1 if job.item is None else None)

    def _fail_at(
        self, path: str, error: dict[str, Any] | None, attempts: int | None = None
    ) -> None:
        """A call failed for good: its step fails, and with it the run."""
        error = error or {}
        steps = self._snapshot["steps"]
        record = steps.get(path)
        if record is not None:
            # A new record: this one may have settled (a loop's step that succeeded
            # before its loop failed), and a settled record is never changed in place.
            record = steps[path] = record.copy()
            record["status"] = StepStatus.FAILED.value
            record["error"] = error
            record["ended_at"] = _clock.time()
            if attempts is not None:
                record["attempts"] = attempts
        # Its siblings did not fail: they are let go of (canceled), and keep no error,
        # neither another step's nor that of their own attempt before a retry's back-off.
        # The nodes that enclose it (a nested workflow) fail with it.
        now = _clock.time()
        for other, open_record in steps.items():
            if open_record["status"] in OPEN_STEP_STATUSES and not _encloses(other, path):
                steps[other] = {
                    **open_record,
                    "status": _STEP_CANCELED,
                    "ended_at": now,
                    "error": None,
                }
        self._finish(RunStatus.FAILED, error=error)

    # --- parallel and branch ------------------------------------------------------------------

    def _group_steps(self, index: int) -> tuple[StepNode, ...]:
        node = self._plan.nodes[index]
        match node:
            case StepNode():
                return (node,)
            case ParallelNode():
                return node.steps
            case BranchNode():
                chosen = set((self._snapshot["progress"] or {}).get("chosen", ()))
                return tuple(step for _, step in node.arms if step.path in chosen)
            case _:
                raise TypeError(f"node {node.path!r} is not a group of steps")

    def _group_settled(self, index: int) -> None:
        """A call of a parallel or branch node ended: go on once none is still running."""
        # Every call in flight belongs to the current node: the run moves on
        # only when its node has none left.
        if self._calls:
            self._tell_snapshot(terminal=False)
            return
        steps = self._group_steps(index)
        records = self._snapshot["steps"]
        if any(records[step.path]["status"] == StepStatus.SUSPENDED for step in steps):
            self._suspend()
            return
        node = self._plan.nodes[index]
        if isinstance(node, StepNode):  # a single step resumed and done
            self._advance(self._outputs[node.path])
            return
        outputs = {step.step.id: self._outputs[step.path] for step in steps}
        if isinstance(node, ParallelNode | BranchNode) and node.flows:
            self._start_flows(index, node, outputs)
            return
        self._advance(outputs)

    def _step_suspended(self, job: Job, payload: Any, message: StepFinished) -> None:
        path = job.call.path
        if job.item is not None:
            self._item_suspended(job, payload)
            return
        record = self._snapshot["steps"][path]
        record["status"] = StepStatus.SUSPENDED.value
        record["suspend_payload"] = payload
        record["error"] = None  # an earlier attempt's: this one did not fail
        record["ended_at"] = message.ended_at
        suspend_at(self._snapshot, path, payload)
        self._encoder.suspended_changed(path)
        node = self._plan.nodes[job.index]
        if isinstance(node, LoopNode):
            self._suspend()
        else:
            self._group_settled(job.index)

    def _enter_branch(self, index: int, node: BranchNode) -> None:
        progress = self._snapshot["progress"]
        if progress is not None and "chosen" in progress:
            self._start_group(index, self._group_steps(index))
            return
        fns = tuple((cond, step.step.input_schema) for cond, step in node.arms) + tuple(
            (flow.condition, flow.input_schema) for flow in node.flows if flow.condition is not None
        )
        self._send(
            [self._calls.conditions(index, node, self._snapshot["carry"], self._outputs, fns)]
        )

    def _conditions_replied(self, job: Job, results: list[bool]) -> None:
        node = self._plan.nodes[job.index]
        match node:
            case BranchNode():
                paths = [step.path for _, step in node.arms] + [flow.path for flow in node.flows]
                self._snapshot["progress"] = {
                    "chosen": [path for path, hold in zip(paths, results, strict=True) if hold]
                }
                self._start_group(job.index, self._group_steps(job.index))
            case LoopNode():
                self._loop_decided(job.index, node, results[0])
            case LoopBackNode():
                self._loop_back_decided(job.index, node, results[0])

    # --- loops -----------------------------------------------------------------------------------

    def _enter_loop(self, index: int, node: LoopNode) -> None:
        step_node = node.step_node
        assert step_node is not None
        snapshot = self._snapshot
        progress = snapshot["progress"] or {"iteration": 1}
        snapshot["progress"] = progress
        record = snapshot["steps"].get(step_node.path)
        if record is not None and record["status"] == StepStatus.SUCCESS:
            self._check_loop(index, node, record["output"])  # stopped before its condition ran
            return
        payload = record["payload"] if record is not None else snapshot["carry"]
        job = self._step_job(index, step_node, payload, iteration=progress["iteration"])
        self._send([job])

    def _check_loop(self, index: int, node: LoopNode, output: Any) -> None:
        step_node = node.step_node
        assert step_node is not None and node.condition is not None
        iteration = (self._snapshot["progress"] or {}).get("iteration", 1)
        fns = ((node.condition, step_node.step.output_schema),)
        job = self._calls.conditions(index, node, output, self._outputs, fns, iteration=iteration)
        self._send([job])

    def _loop_decided(self, index: int, node: LoopNode, holds: bool) -> None:
        step_node = node.step_node
        assert step_node is not None
        snapshot = self._snapshot
        output = snapshot["steps"][step_node.path]["output"]
        again = holds if not node.until else not holds
        if not again:
            self._advance(output)
            return
        iteration = (snapshot["progress"] or {}).get("iteration", 1)
        if node.max_iterations is not None and iteration >= node.max_iterations:
            kind = "dountil" if node.until else "dowhile"
            error = LoopLimitError(
                f"{kind} loop over step {step_node.path!r} reached its max_iterations "
                f"({node.max_iterations}) without its condition ending it",
                run_id=snapshot["run_id"],
                step_id=step_node.path,
            )
            self._fail_at(
                step_node.path, error_dict(error, step_id=step_node.path, with_traceback=False)
            )
            return
        snapshot["progress"] = {"iteration": iteration + 1}
        self._send([self._step_job(index, step_node, output, iteration=iteration + 1)])

    # --- foreach ---------------------------------------------------------------------------------

    def _enter_foreach(self, index: int, node: ForeachNode) -> None:
        step_node = node.step_node
        assert step_node is not None
        snapshot = self._snapshot
        items = snapshot["carry"]
        if not isinstance(items, list):
            error = StepValidationError(
                f"foreach over step {step_node.path!r} needs a list from the step before it, "
                f"got {type(items).__name__}",
                run_id=snapshot["run_id"],
                step_id=step_node.path,
            )
            self._record_step(step_node.path, items)
            self._fail_at(
                step_node.path, error_dict(error, step_id=step_node.path, with_traceback=False)
            )
            return
        progress = snapshot["progress"]
        if progress is None:
            progress = {"outputs": [None] * len(items), "done": [False] * len(items)}
            snapshot["progress"] = progress
            self._record_step(step_node.path, items)
        else:
            record = snapshot["steps"].get(step_node.path)
            if record is None:
                # Restarted after a cancel or failure: the foreach's record went with
                # it (it did not succeed), its items' progress stays.
                self._record_step(step_node.path, items)
            elif record["status"] == StepStatus.SUSPENDED:
                record["status"] = StepStatus.RUNNING.value  # resumed
                record["ended_at"] = None
        self._next_item = 0
        self._resumed_items = None
        self._items_left = progress["done"].count(False)
        if not self._items_left:
            self._foreach_done(step_node, progress)
            return
        self._items_go_on(index, node)

    def _next_items(self, index: int, node: ForeachNode) -> list[Job]:
        step_node = node.step_node
        assert step_node is not None
        snapshot = self._snapshot
        done = (snapshot["progress"] or {})["done"]
        items = snapshot["carry"]
        suspended, resume = snapshot["suspended"], snapshot["resume"] or {}
        free = node.concurrency - len(self._calls)
        jobs: list[Job] = []
        resumed = self._resumed_items
        while len(jobs) < free and resumed:
            item = resumed.pop(0)
            jobs.append(self._step_job(index, step_node, items[item], item=item))
        while len(jobs) < free and self._next_item < len(done):
            item = self._next_item
            self._next_item += 1
            if done[item]:  # done before a crash: not again
                continue
            if suspended:
                key = item_path(step_node.path, item)
                if key in suspended and key not in resume:
                    continue  # suspended, and not resumed this time: it waits
            jobs.append(self._step_job(index, step_node, items[item], item=item))
        return jobs

    def _items_go_on(self, index: int, node: ForeachNode) -> None:
        """Start the items there is room for; with none running and none to start, suspend."""
        jobs = self._next_items(index, node)
        if jobs:
            self._send(jobs)
        elif self._calls:
            self._tell_snapshot(terminal=False)
        else:
            # Every item not done is suspended: the run waits for their resumes.
            step_node = node.step_node
            assert step_node is not None
            path = step_node.path
            record = self._snapshot["steps"][path]
            record["status"] = StepStatus.SUSPENDED.value
            record["ended_at"] = _clock.time()
            prefix = path + "["
            record["suspend_payload"] = {
                key[len(prefix) : -1]: payload
                for key, payload in self._snapshot["suspended"].items()
                if key.startswith(prefix)
            }
            self._suspend()

    def _item_done(self, job: Job, node: ForeachNode, output: Any) -> None:
        step_node = node.step_node
        assert step_node is not None and job.item is not None
        progress = self._snapshot["progress"] or {}
        progress["outputs"][job.item] = output
        progress["done"][job.item] = True
        self._resume_taken(item_path(job.call.path, job.item))
        self._encoder.item_done(job.item)
        self._items_left -= 1
        if not self._items_left:
            self._foreach_done(step_node, progress)
            return
        self._items_go_on(job.index, node)

    def _item_suspended(self, job: Job, payload: Any) -> None:
        """An item of a foreach suspended: it waits; the others go on."""
        assert job.item is not None
        node = self._plan.nodes[job.index]
        assert isinstance(node, ForeachNode)
        key = item_path(job.call.path, job.item)
        self._resume_taken(key)
        suspend_at(self._snapshot, key, payload)
        self._encoder.suspended_changed(key)
        self._items_go_on(job.index, node)

    def _resume_taken(self, key: str) -> None:
        """The resumed item ``key`` ended or suspended again: its resume is no longer pending."""
        resume = self._snapshot["resume"]
        if resume and key in resume:
            self._snapshot["resume"] = {k: v for k, v in resume.items() if k != key} or None

    def _foreach_done(self, step_node: StepNode, progress: dict[str, Any]) -> None:
        outputs = list(progress["outputs"])
        record = self._snapshot["steps"][step_node.path]
        record["status"] = StepStatus.SUCCESS.value
        record["output"] = outputs
        record["error"] = None  # an item's that failed and then, retried, succeeded
        record["ended_at"] = _clock.time()
        self._outputs = {**self._outputs, step_node.path: outputs}
        self._advance(outputs)

    # --- map, sleep, nested workflows ------------------------------------------------------------

    def _enter_map(self, index: int, node: MapNode) -> None:
        carry = self._snapshot["carry"]
        self._record_step(node.path, carry)
        assert node.fn is not None
        self._send([self._calls.map(index, node, carry, self._outputs)])

    def _enter_sleep(self, index: int, node: SleepNode) -> None:
        snapshot = self._snapshot
        record = snapshot["steps"].get(node.path)
        if record is not None and record["status"] == StepStatus.WAITING and snapshot["wake_at"]:
            self._sleep_until(index, snapshot["wake_at"])
            return
        self._record_step(node.path, snapshot["carry"])
        value = node.seconds if node.seconds is not None else node.until
        if callable(value):
            self._send(
                [self._calls.sleep_length(index, node, snapshot["carry"], self._outputs, value)]
            )
            return
        if isinstance(value, datetime):
            moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
            wake_at = moment.timestamp()
        else:
            wake_at = _clock.time() + float(value or 0.0)
        self._sleep_until(index, wake_at)

    def _sleep_until(self, index: int, wake_at: float) -> None:
        if wake_at - _clock.time() <= WAKE_EARLY:
            self._snapshot["wake_at"] = None
            self._woken()
        else:
            self._park(wake_at)

    def _woken(self) -> None:
        """The sleep at the current node is over: it passes its input on."""
        snapshot = self._snapshot
        node = self._plan.nodes[snapshot["next_step"]]
        record = snapshot["steps"].get(node.path)
        if record is not None:
            record["status"] = _STEP_SUCCESS
            record["output"] = snapshot["carry"]
            record["ended_at"] = _clock.time()
        snapshot["wake_at"] = None
        self._advance(snapshot["carry"])

    def _bail_out_of(self, index: int, prefix: str, result: Any) -> None:
        """A step of the nested workflow whose steps' paths start with ``prefix`` bailed.

        The nested workflow ends there as a success with ``result`` as its output
        (its :class:`ExitNode` checks it), and the run goes on after it, as Mastra
        runs a nested workflow as a run of its own that the bail ends. Its calls
        still in flight (siblings in a parallel, other items of a foreach) are let
        go of, and their records read ``canceled``.
        """
        nodes = self._plan.nodes
        end = next(
            (
                at
                for at in range(index + 1, len(nodes))
                if isinstance(nodes[at], ExitNode) and nodes[at].path + "." == prefix
            ),
            None,
        )
        if end is None:  # pragma: no cover - compile_plan ends every nested workflow
            self._finish(RunStatus.SUCCESS, result=result)
            return
        self._calls.abort(AbortReason.CANCELED)
        snapshot = self._snapshot
        now = _clock.time()
        steps = snapshot["steps"]
        for path, record in list(steps.items()):
            if path.startswith(prefix) and record["status"] in OPEN_STEP_STATUSES:
                steps[path] = {**record, "status": _STEP_CANCELED, "ended_at": now, "error": None}
        if any(path.startswith(prefix) for path in snapshot["suspended"]):
            let_go = tuple(path for path in snapshot["suspended"] if path.startswith(prefix))
            snapshot["suspended"] = {
                path: payload
                for path, payload in snapshot["suspended"].items()
                if not path.startswith(prefix)
            }
            forget_suspensions(snapshot, let_go)
            if self._durable:
                # Requests of those go with the next record: the nested workflow entered
                # again (a loop's next pass) may suspend at the same paths.
                self._dropping += let_go
        # A resume of one of its steps (a foreach item's) is spent: the nested workflow
        # entered again (a loop's next pass, a foreach's next item) asks again.
        resume = snapshot["resume"]
        if resume and any(path.startswith(prefix) for path in resume):
            snapshot["resume"] = {
                path: data for path, data in resume.items() if not path.startswith(prefix)
            } or None
        # What its constructs kept (a loop's count, a foreach's items) is done with; its
        # input stays, as at its end.
        if any(key.startswith(prefix) and key != prefix for key in snapshot["scopes"]):
            snapshot["scopes"] = {
                key: value
                for key, value in snapshot["scopes"].items()
                if not key.startswith(prefix) or key == prefix
            }
        self._jump(end, result)

    def _enter_child(self, index: int, node: EnterNode) -> None:
        snapshot = self._snapshot
        carry = snapshot["carry"]
        iteration = snapshot["scopes"].get(node.path + _LOOP, 1) if node.looped else None
        inside = node.path + "."
        if any(path.startswith(inside) for path in snapshot["steps"]):
            # Entered again (a loop's next iteration, a foreach's next item): its steps
            # run anew, not skipped as done.
            if not node.looped:
                # A foreach's next item comes in the turn its last step ended: that end is
                # told first, or watchers, who saw the step start, never see it finish
                # (a loop's condition, called in between, tells it). Always: whether a
                # watch is on its way to the registry cannot be told from here (telling
                # it only to runs the registry kept events of lost it to a watch taken
                # meanwhile). On a durable store it is a write per item more.
                self._tell_snapshot()
            snapshot["steps"] = {
                path: record
                for path, record in snapshot["steps"].items()
                if not path.startswith(inside)
            }
            self._outputs = {
                path: output
                for path, output in self._outputs.items()
                if not path.startswith(inside)
            }
        self._record_step(node.path, carry, iterations=iteration)
        schema = node.input_schema
        assert schema is not None
        try:
            child_input = stored_as(
                schema,
                carry,
                f"the input of nested workflow {node.path!r}",
                "its input schema",
                run_id=snapshot["run_id"],
                step_id=node.path,
            )
        except WorkflowError as error:
            self._fail_at(node.path, error_dict(error, step_id=node.path))
            return
        snapshot["scopes"] = {**snapshot["scopes"], node.path + ".": child_input}
        self._enter(index + 1)

    def _exit_child(self, index: int, node: ExitNode) -> None:
        snapshot = self._snapshot
        schema = node.output_schema
        assert schema is not None
        try:
            output = stored_as(
                schema,
                snapshot["carry"],
                f"the output of nested workflow {node.path!r}",
                "its output schema",
                run_id=snapshot["run_id"],
                step_id=node.path,
            )
        except WorkflowError as error:
            self._fail_at(node.path, error_dict(error, step_id=node.path))
            return
        record = snapshot["steps"].get(node.path)
        if record is not None:
            record["status"] = StepStatus.SUCCESS.value
            record["output"] = output
            record["ended_at"] = _clock.time()
        # For a foreach's nested workflow this is one item's output, replaced by the list
        # once it is done; a step reads none until then (get_step_result tells by the
        # plan, as it must for outputs rebuilt from a snapshot too).
        self._outputs = {**self._outputs, node.path: output}
        self._advance(output)

    # --- nested workflows inside constructs -------------------------------------------------
    #
    # A nested workflow that is a member of a construct runs in a region of the plan
    # the run jumps to. What the construct keeps meanwhile (its input, the outputs so
    # far, a loop's iteration, a foreach's items) is in the snapshot's scopes, under
    # the construct's path and a suffix, so that a run suspended or recovered inside
    # a region goes on from its snapshot alone.

    def _start_flows(
        self, index: int, node: ParallelNode | BranchNode, outputs: dict[str, Any]
    ) -> None:
        """The steps of a parallel or branch node are done: run its nested workflows."""
        snapshot = self._snapshot
        chosen = (snapshot["progress"] or {}).get("chosen")
        records = snapshot["steps"]
        outputs = dict(outputs)
        todo = []
        for number, flow in enumerate(node.flows):
            if isinstance(node, BranchNode) and (chosen is None or flow.path not in chosen):
                continue
            record = records.get(flow.path)
            if record is not None and record["status"] == StepStatus.SUCCESS:
                # Kept from the recorded run by a time travel to another member, which
                # alone runs again: the nested workflow keeps its output.
                outputs[flow.id] = record["output"]
                continue
            todo.append(number)
        if not todo:
            snapshot["next_step"] = index + node.end - 1  # on past the regions
            self._advance({member: outputs[member] for member in node.members if member in outputs})
            return
        stash = {"input": snapshot["carry"], "outputs": outputs, "todo": todo}
        snapshot["scopes"] = {**snapshot["scopes"], node.path + _FLOWS: stash}
        self._jump(index + node.flows[todo[0]].offset, stash["input"])

    def _collect(self, index: int, node: CollectNode) -> None:
        """A nested workflow of a parallel or branch node is done: the next, or the node's end."""
        snapshot = self._snapshot
        start = index - node.group
        group = self._plan.nodes[start]
        assert isinstance(group, ParallelNode | BranchNode)
        key = group.path + _FLOWS
        scopes = dict(snapshot["scopes"])
        stash = scopes.pop(key)
        todo = stash["todo"]
        outputs = {**stash["outputs"], group.flows[todo[0]].id: snapshot["carry"]}
        todo = todo[1:]
        if todo:
            scopes[key] = {"input": stash["input"], "outputs": outputs, "todo": todo}
            snapshot["scopes"] = scopes
            self._jump(start + group.flows[todo[0]].offset, stash["input"])
            return
        snapshot["scopes"] = scopes
        snapshot["next_step"] = start + group.end - 1
        self._advance({member: outputs[member] for member in group.members if member in outputs})

    def _enter_loop_back(self, index: int, node: LoopBackNode) -> None:
        """A loop's nested workflow has run: ask its condition whether to go round again."""
        assert node.condition is not None
        iteration = self._snapshot["scopes"].get(node.path + _LOOP, 1)
        fns = ((node.condition, node.output_schema),)
        carry = self._snapshot["carry"]
        job = self._calls.conditions(index, node, carry, self._outputs, fns, iteration=iteration)
        self._send([job])

    def _loop_back_decided(self, index: int, node: LoopBackNode, holds: bool) -> None:
        snapshot = self._snapshot
        output = snapshot["carry"]
        key = node.path + _LOOP
        iteration = snapshot["scopes"].get(key, 1)
        if holds == node.until:  # dowhile: it no longer holds; dountil: it holds
            snapshot["scopes"] = {k: v for k, v in snapshot["scopes"].items() if k != key}
            self._advance(output)
            return
        if node.max_iterations is not None and iteration >= node.max_iterations:
            kind = "dountil" if node.until else "dowhile"
            error = LoopLimitError(
                f"{kind} loop over nested workflow {node.path!r} reached its max_iterations "
                f"({node.max_iterations}) without its condition ending it",
                run_id=snapshot["run_id"],
                step_id=node.path,
            )
            self._fail_at(node.path, error_dict(error, step_id=node.path, with_traceback=False))
            return
        snapshot["scopes"] = {**snapshot["scopes"], key: iteration + 1}
        self._jump(index - node.body, output)

    def _enter_each(self, index: int, node: EachStartNode) -> None:
        """A foreach over a nested workflow: keep the list, and send in its first item."""
        snapshot = self._snapshot
        items = snapshot["carry"]
        if not isinstance(items, list):
            error = StepValidationError(
                f"foreach over nested workflow {node.path!r} needs a list from the step before "
                f"it, got {type(items).__name__}",
                run_id=snapshot["run_id"],
                step_id=node.path,
            )
            self._record_step(node.path, items)
            self._fail_at(node.path, error_dict(error, step_id=node.path, with_traceback=False))
            return
        if not items:
            record = self._record_step(node.path, items)
            record["status"] = StepStatus.SUCCESS.value
            record["output"] = []
            record["ended_at"] = record["started_at"]
            self._outputs = {**self._outputs, node.path: []}
            snapshot["next_step"] = index + node.skip
            self._advance([])
            return
        progress = {"items": items, "outputs": [], "started_at": _clock.time()}
        snapshot["scopes"] = {**snapshot["scopes"], node.path + _EACH: progress}
        self._jump(index + 1, items[0])

    def _each_next(self, index: int, node: EachNextNode) -> None:
        """A foreach's nested workflow is done with an item: the next one, or the list's end."""
        snapshot = self._snapshot
        key = node.path + _EACH
        scopes = dict(snapshot["scopes"])
        progress = scopes.pop(key)
        items = progress["items"]
        outputs = [*progress["outputs"], snapshot["carry"]]
        if len(outputs) < len(items):
            scopes[key] = {**progress, "outputs": outputs}
            snapshot["scopes"] = scopes
            self._jump(index - node.body, items[len(outputs)])
            return
        snapshot["scopes"] = scopes
        record = snapshot["steps"][node.path]
        record["payload"] = items
        record["output"] = outputs
        record["started_at"] = progress["started_at"]
        self._outputs = {**self._outputs, node.path: outputs}
        self._advance(outputs)

    # --- leaving: park, suspend, cancel, finish, halt ------------------------------------

    def _park(self, wake_at: float) -> None:
        """Sleep without an actor: hand the snapshot to the supervisor, which wakes the run."""
        snapshot = self._snapshot
        snapshot["status"] = _RUN_WAITING
        snapshot["wake_at"] = wake_at
        record = snapshot["steps"].get(self._plan.nodes[snapshot["next_step"]].path)
        if record is not None:
            record["status"] = _STEP_WAITING
        self._leave(RunStatus.WAITING, wake_at)

    def _suspend(self) -> None:
        snapshot = self._snapshot
        self._mark_children(StepStatus.RUNNING, StepStatus.SUSPENDED)
        snapshot["status"] = RunStatus.SUSPENDED.value
        snapshot["resume"] = None
        snapshot.pop("resumed", None)  # a new suspension: nobody has resumed it yet
        self._leave(RunStatus.SUSPENDED, None)

    def _leave(self, status: RunStatus, wake_at: float | None) -> None:
        """The run waits (``wake_at`` set) or is suspended: stop, handing its snapshot back."""
        self._ended = True
        self._calls.abort(AbortReason.CANCELED)
        if self._resume_replies:
            self._resumes_gone()
        # Neither is there in a program that traces and measures nothing (as in _end).
        if self._span is not None:
            self._end_span(status._value_)
        if self._active is not None:
            self._count_end(None)
        self._tell_snapshot(terminal=False)
        snapshot = self._snapshot
        parked = RunParked(
            run_id=snapshot["run_id"],
            plan=self._plan,
            snapshot=snapshot,
            wake_at=wake_at,
            actor=self._actor_ref,  # not through pykka's property: a call fewer
        )
        tell_safely(self._supervisor, parked)
        self.stop_now()

    def _halt(self) -> None:
        """Stop driving the run, recording nothing: a durable store keeps it for later."""
        self._ended = True
        self._calls.abort(AbortReason.CANCELED)
        # A resume taken and not yet acknowledged may still be committed (the record
        # that holds it is on its way to the store): its caller cannot be told it was not.
        self._resumes_gone(ResumeOutcome.STOPPED)
        self._end_span("interrupted")
        self._count_end(None)
        ended = RunEnded(run_id=self._snapshot["run_id"], status="halted", actor=self.actor_ref)
        tell_safely(self._supervisor, ended)
        self.stop_now()

    def _finish(
        self,
        status: RunStatus,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        if self._ended:
            return
        snapshot = self._snapshot
        if error is None:
            snapshot["status"] = status._value_  # .value is a Python property: slower
            snapshot["result"] = result
            snapshot["suspended"] = {}
            snapshot.pop("suspensions", None)
            # A bail leaves siblings and enclosing nodes open.
            close_open_steps(snapshot, _STEP_CANCELED, _clock.time())
        else:
            mark_failed(snapshot, error, _clock.time())
        reason = AbortReason.CANCELED if error is None else AbortReason.SIBLING_FAILED
        self._end(status, reason=reason, error=error)

    def _end(
        self,
        status: RunStatus,
        *,
        reason: AbortReason,
        error: dict[str, Any] | None = None,
        on_recorded: Callable[[bool], None] | None = None,
    ) -> None:
        """Record a terminal snapshot (after the workflow's hooks), tell the supervisor, stop.

        ``on_recorded`` is called once the store has taken the terminal snapshot
        (see :class:`~actors.messages.SnapshotTaken`).
        """
        self._ended = True
        self._calls.abort(reason)
        if self._resume_replies:  # rare: no call for it at every run's end
            self._resumes_gone()
        snapshot = self._snapshot
        value: str = status._value_  # .value is a Python property: slower
        # The root span ends before the final result becomes visible, so that
        # whoever sees the result can see the whole trace. (Neither is there in a
        # program that traces and measures nothing: no call for them then.)
        if self._span is not None:
            self._end_span(
                value, failure=error, **({} if error is None else {"error": error["name"]})
            )
        if self._active is not None:
            self._count_end(value)
        record = self._encoder.next_record(_clock.time())
        direct = self._direct
        if (
            direct is None
            or on_recorded is not None
            or self._plan.has_hooks
            or self._writer.wrote
            or not direct.end(record)
        ):
            self._hooks.finish(self._plan, snapshot, record, self._registry, on_recorded)
        # The ref as DispatchedActor.start reads it, not through pykka's property: a call
        # fewer at every run's end.
        ended = RunEnded(run_id=snapshot["run_id"], status=status, actor=self._actor_ref)
        tell_safely(self._supervisor, ended)
        if not self.actor_stopped._stopped:  # stop_now's, inline: a call fewer a run
            self._stop()

    def _end_span(self, status: str, **fields: Any) -> None:
        """End the run's span, if it has one (see :meth:`on_start`)."""
        span = self._span
        if span is not None:
            span.end(status, **fields)

    def _count_end(self, status: str | None) -> None:
        """This actor stops driving the run; ``status`` when the run ended, for the metrics."""
        meter, self._active = self._active, None
        if meter is None:
            return
        workflow = {"callboard.workflow.id": self._snapshot["workflow_id"]}
        meter.runs_active.add(-1, workflow)
        if status is not None:
            snapshot = self._snapshot
            began = snapshot.get("restarted_at", snapshot["created_at"])
            meter.run_ended(snapshot["workflow_id"], status, began, _clock.time())

    def _spend(self, paths: tuple[str, ...], seq: int) -> None:
        """Note that the suspensions at ``paths`` ended with the record ``seq`` (see ``_spent``)."""
        if self._spent is None:
            self._spent = {}
        for path in paths:
            self._spent[path] = seq

    def _tell_snapshot(
        self,
        *,
        terminal: bool = False,
        awaited: bool = False,
        carries: tuple[str, ...] = (),
    ) -> int:
        """Tell the registry the run's new snapshot; its sequence number.

        Args:
            terminal: The run has ended with it.
            awaited: The actor waits for its commit before it goes on (calls it
                announces, a resume's reply, the end after the hooks): only then
                does a :class:`SnapshotCommitted` come back for it. One asked for
                and not waited on reached the actor or not, as it happened to
                come before or after the run's end (a test's fault at it fired
                in half of the runs), and cost a message either way.
            carries: The resume requests of the store's that it carries out
                (:attr:`~runtime._stores.base.SnapshotRecord.taken`).
        """
        record = self._encoder.next_record(_clock.time())
        if self._dropping:
            dropped, self._dropping = self._dropping, ()
            self._spend(dropped, record.seq)
            carries += dropped
        if carries:
            record = record._replace(taken=carries)
        direct = self._direct
        # A run whose steps wrote events goes through the registry: its snapshots must
        # reach the run's event log after the writes, as they happened.
        if direct is not None and not terminal and not self._writer.wrote and direct.keep(record):
            return record.seq
        # A dead registry must not take the run down with it; the runtime
        # records unfinished runs as failed when it stops.
        # Told if the snapshot never makes it into the store (refused, or lost to a fault
        # on its way): a run that went on past it would end as its store does not say.
        run = None if terminal else self._actor_ref
        taken = SnapshotTaken(
            record=record,
            terminal=terminal,
            ack_to=run if awaited and self._durable else None,
            refusal_to=run,
        )
        tell_safely(self._registry, taken)
        return record.seq


def resume_fits(step: Step[Any, Any], path: str, data: Any, run_id: str) -> bool:
    """Whether a resume request's data fits the step's ``resume_schema`` as defined here.

    Its caller checked it by its own definition of the run's version; a request
    the step would refuse (a definition changed since, bytes written by
    something else) is refused here, with a warning, and the suspension waits
    on: it never fails the run, nor stops an actor or the claimer.
    """
    schema = step.resume_schema
    if schema is None or data is None:
        return True
    try:
        validate_for_step(
            schema,
            data,
            f"step {path!r}: its resume data",
            "its resume schema",
            run_id=run_id,
            step_id=path,
            stored=True,
        )
    except Exception as exc:  # a user's validator may raise anything
        refused_request(run_id, path, str(exc))
        return False
    return True


def refused_request(run_id: str, path: str, why: str) -> None:
    """Say that a resume request was refused, and why: its suspension still waits."""
    emit(
        logging.WARNING,
        "resume_request_refused",
        run_id=run_id,
        step_id=path,
        error=why,
        hint="the suspension still waits: resume it again, with data that fits",
    )


def _naming_run(error: dict[str, Any], snapshot: Snapshot) -> dict[str, Any]:
    """``error`` with this run's id in its attributes, where it names no run.

    One error fails every run a stop aborts; each run's record names its own run.
    """
    attributes = error.get("attributes")
    if isinstance(attributes, dict) and "run_id" in attributes and attributes["run_id"] is None:
        return {**error, "attributes": {**attributes, "run_id": snapshot["run_id"]}}
    return error


def _with_changes(
    current: dict[str, Any], before: dict[str, Any], after: dict[str, Any]
) -> dict[str, Any]:
    """The run's request context ``current`` with what a step changed from ``before`` to ``after``.

    Keys it set or deleted, not its whole copy: steps that ran at once (a
    parallel's members, a foreach's items) each keep their changes, where the
    last to finish put back what it had seen at its start over the others'.
    """
    if current is before:  # nothing changed it meanwhile: the usual case
        return after
    merged = dict(current)
    for key, value in after.items():
        if key not in before or before[key] != value:
            merged[key] = value
    for key in before:
        if key not in after:
            merged.pop(key, None)
    return merged


def _keep_began(previous: StepSnapshot, record: StepSnapshot) -> None:
    """Carry the state a step began with the first time into its new record, if it has one.

    A step resumed (or recovered while it ran) began when it was first called:
    a loop's next pass, whose record follows one that succeeded, begins anew.
    """
    if START_STATE in previous:
        record[START_STATE] = previous[START_STATE]


def _encloses(outer: str, path: str) -> bool:
    """Whether the step at ``outer`` holds the one at ``path`` (a nested workflow's step)."""
    return path.startswith(outer) and path[len(outer) : len(outer) + 1] in (".", "[")


def _left(due: float) -> float | None:
    """Seconds until ``due`` (a retry's recorded time), or ``None`` if it has come."""
    left = due - _clock.time()
    return left if left > 0 else None
