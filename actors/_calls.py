"""The calls of user code one run makes, from the command to the reply.

A run actor makes a call for each piece of user code it needs run: a step
body, the conditions of a branch or loop, a ``map`` or sleep function.
:class:`Calls` stands between the run actor and the step pool:

- it builds each call's command from what the run holds at that moment, and
  names it with a token, which the reply carries back;
- it holds each call until the snapshot announcing it is recorded, and on a
  durable store until that snapshot is committed, so that a step whose output
  is recorded never runs again after a crash (commit gating; a pending run's
  first calls, with no output before them to store, go at once);
- it sets a step's timeout timer when the step is handed over, and holds a
  failed step for its retry back-off, on a timer rather than a thread;
- it tells every call still in flight to stop when the run ends.

Where a call comes from in the plan and what its reply means are the run
actor's business (:mod:`actors.run`).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pykka
from pydantic import BaseModel

from actors._dispatch import tell_safely
from actors._pool import StepPool
from actors._timer import TimerHandle, Timers
from actors.messages import (
    AbortReason,
    CallConditions,
    CallMap,
    CallSleepLength,
    CallStep,
    RunPart,
    StepActorMessage,
    TimerFired,
)
from runtime import _clock
from runtime._plan import (
    ExecutionPlan,
    MapNode,
    Node,
    RetryPolicy,
    Scope,
    SleepNode,
    StepNode,
    leaf_steps,
)
from runtime._snapshot import Snapshot
from runtime._sync import AbortSignal

__all__ = ["Calls", "Job"]

_rng = random.Random()
"""Draws the jitter of retry back-offs (not the seeded module-level generator)."""


@dataclass(slots=True, eq=False)
class Job:
    """One call of user code in flight (or waiting to be retried).

    Attributes:
        call: The command the step actor receives.
        index: The plan node the call belongs to.
        signal: The call's abort signal (also in ``call``).
        step_node: For a step's call, the step.
        item: For a foreach item's call, the item's index.
        attempt: How many times the step was retried before this call.
        timer: The step's timeout timer, once it is handed over.
        delay: Seconds to wait before handing it over: what was left of a
            retry's back-off when the run was recovered.
    """

    call: StepActorMessage
    index: int
    signal: AbortSignal
    step_node: StepNode | None = None
    item: int | None = None
    attempt: int = 0
    timer: TimerHandle | None = None
    delay: float | None = None


class Calls:
    """The calls of user code one run actor has in flight, or waiting to be retried.

    Args:
        run: The run actor: where replies and :class:`TimerFired` go.
        plan: The run's plan.
        snapshot: The run's snapshot, which the run actor keeps up to date:
            each call carries what it holds when the call is made.
        pool: The step pool calls are handed to.
        timers: The runtime's timers, for timeouts and retry back-offs.
        announce: Records the run's snapshot, which announces the calls about
            to be sent; returns its sequence number.
        durable: Whether the run's snapshots go to a durable store: then a
            call waits until the snapshot announcing it is committed (unless
            sent while ``gated`` is off).

    Attributes:
        gated: Whether calls sent now wait for the commit of the snapshot that
            announces them (on a durable store). The run actor clears it while
            it sends a pending run's first calls, which have no step output
            before them that is not stored yet.
    """

    __slots__ = (
        "_awaiting_commit",
        "_jobs",
        "_part",
        "_plan",
        "_pool",
        "_retrying",
        "_run",
        "_snapshot",
        "_span_id",
        "_span_parent",
        "_timers",
        "_tokens",
        "_writer",
        "gated",
    )

    def __init__(
        self,
        run: pykka.ActorRef[Any],
        plan: ExecutionPlan,
        snapshot: Snapshot,
        pool: StepPool,
        timers: Timers,
        *,
        durable: bool,
        writer: Callable[[str, Any, float, int | None], None] | None = None,
    ) -> None:
        self._run = run
        self._writer = writer
        self._plan = plan
        self._snapshot = snapshot
        self._pool = pool
        self._timers = timers
        self._span_parent: Any = None
        self._span_id: str | None = None
        # What the calls in the latest workflow scope share (see RunPart): made at the
        # first call, again when the calls go into another scope or the span changes.
        self._part: RunPart | None = None
        self.gated = True
        self._tokens = 0  # the last call's token
        self._jobs: dict[int, Job] = {}
        self._retrying: dict[int, tuple[Job, TimerHandle]] = {}
        # Calls waiting for the snapshot that announces them to be committed.
        # (Only on a durable store: one object fewer per run for the garbage collector.)
        self._awaiting_commit: deque[tuple[int, list[Job]]] | None = deque() if durable else None

    @property
    def span_parent(self) -> Any:
        """The OpenTelemetry context of the run actor's span, each call's parent, or ``None``."""
        return self._span_parent

    @span_parent.setter
    def span_parent(self, value: Any) -> None:
        self._span_parent = value
        self._part = None

    @property
    def span_id(self) -> str | None:
        """The span id each call names as its parent.

        The run actor's ``workflow_run`` span's, or ``None`` while the actor has
        no span (the run's own, as stored, then).
        """
        return self._span_id

    @span_id.setter
    def span_id(self, value: str | None) -> None:
        self._span_id = value
        self._part = None

    def _part_of(self, scope: Scope) -> RunPart:
        """What every call in ``scope`` carries alike, made once (while the scope is the latest)."""
        plan, snapshot = self._plan, self._snapshot
        prefix = scope.prefix
        self._part = part = RunPart(
            snapshot["run_id"],
            scope.workflow_id,
            plan.state_schema,
            scope.input_schema,
            plan.output_schemas,
            snapshot["trace_id"],
            self._span_id or snapshot["span_id"],
            self._run,
            self._span_parent,
            prefix,
            # A bail ends the workflow the step is in: a nested one's is its own output.
            plan.output_schemas[prefix[:-1]] if prefix else plan.output_schema,
            self._writer,
        )
        return part

    def _token(self) -> int:
        """The next call's token: 1, 2, 3... (an int, not an iterator: fewer objects per run)."""
        self._tokens = token = self._tokens + 1
        return token

    def __len__(self) -> int:
        """How many calls are in flight or waiting to be retried."""
        return len(self._jobs) + len(self._retrying)

    # --- making calls -------------------------------------------------------------

    def step(
        self,
        index: int,
        step_node: StepNode,
        payload: Any,
        outputs: Mapping[str, Any],
        *,
        item: int | None = None,
        resume_data: Any = None,
        attempt: int = 0,
    ) -> Job:
        """A call of a step body.

        Args:
            index: The plan node the step belongs to.
            step_node: The step.
            payload: Its input.
            outputs: The outputs of the steps done so far, by path.
            item: For a foreach item, its index.
            resume_data: What a resume hands the step.
            attempt: How many times the step was retried before.
        """
        plan, snapshot = self._plan, self._snapshot
        scope = step_node.scope
        part = self._part
        if part is None or part.prefix != scope.prefix:
            part = self._part_of(scope)
        signal = AbortSignal()
        self._tokens = token = self._tokens + 1  # _token(), inline: a call fewer per step
        # The step that is the last node is checked against the workflow's output
        # schema too; the steps of a last parallel, branch or loop are not: their
        # node's combined output is, when the run completes.
        last = (
            item is None
            and index == len(plan.nodes) - 1
            and isinstance(plan.nodes[index], StepNode)
        )
        call = CallStep(
            run=part,
            payload=payload,
            state=snapshot["state"],
            request_context=snapshot["request_context"],
            init_data=snapshot["scopes"].get(scope.prefix, snapshot["input"])
            if scope.prefix
            else snapshot["input"],
            outputs=outputs,
            token=token,
            path=step_node.path,
            signal=signal,
            step=step_node.step,
            final_schema=plan.output_schema if last else None,
            retry_count=attempt,
            resume_data=resume_data,
            item=item,
        )
        # By position: keywords take twice as long to match to a dataclass's parameters.
        return Job(call, index, signal, step_node, item, attempt)

    def conditions(
        self,
        index: int,
        node: Node,
        payload: Any,
        outputs: Mapping[str, Any],
        fns: tuple[tuple[Callable[[Any], Any], type[BaseModel] | None], ...],
        *,
        iteration: int | None = None,
    ) -> Job:
        """A call of a branch's conditions, or a loop's (with its ``iteration``)."""
        signal = AbortSignal()
        call = CallConditions(
            **self._reading(node, payload, outputs, signal), fns=fns, iteration=iteration
        )
        return Job(call=call, index=index, signal=signal)

    def map(self, index: int, node: MapNode, payload: Any, outputs: Mapping[str, Any]) -> Job:
        """A call of a ``map`` function."""
        assert node.fn is not None
        signal = AbortSignal()
        call = CallMap(**self._reading(node, payload, outputs, signal), fn=node.fn)
        return Job(call=call, index=index, signal=signal)

    def sleep_length(
        self,
        index: int,
        node: SleepNode,
        payload: Any,
        outputs: Mapping[str, Any],
        fn: Callable[[Any], Any],
    ) -> Job:
        """A call of the function that computes how long a sleep lasts."""
        signal = AbortSignal()
        call = CallSleepLength(**self._reading(node, payload, outputs, signal), fn=fn)
        return Job(call=call, index=index, signal=signal)

    def _reading(
        self, node: Node, payload: Any, outputs: Mapping[str, Any], signal: AbortSignal
    ) -> dict[str, Any]:
        """What a call of code that only reads the run carries, whatever its kind."""
        snapshot = self._snapshot
        scope = node.scope
        part = self._part
        if part is None or part.prefix != scope.prefix:
            part = self._part_of(scope)
        steps = leaf_steps(node)
        return {
            "run": part,
            "payload": payload,
            "state": snapshot["state"],
            "request_context": snapshot["request_context"],
            "init_data": snapshot["scopes"].get(scope.prefix, snapshot["input"])
            if scope.prefix
            else snapshot["input"],
            "outputs": outputs,
            "token": self._token(),
            "path": node.path,
            "signal": signal,
            # The step the reply names: the node's first, else the node itself.
            "step_id": steps[0].step.id if steps else node.path,
        }

    # --- sending them ---------------------------------------------------------------

    def send(self, jobs: list[Job], seq: int, *, now: bool = False) -> int:
        """Hand these calls to step actors once the snapshot that announces them is recorded.

        The run actor records that snapshot first, and names it here: no callable
        bound to the actor is kept for it (one object and one reference cycle
        fewer per run in flight). On a durable store the calls wait until that
        snapshot is committed (:meth:`committed`), so a step whose output is
        recorded never runs again after a crash; while ``gated`` is off they go
        at once. A step's timeout timer is set as its call is handed over.

        Args:
            jobs: The calls, made since the snapshot before.
            seq: The sequence number of the snapshot that announces them
                (with ``now``, only returned).
            now: Hand them over now, without waiting for a commit: calls in
                flight already whose snapshot was committed, or a retry whose
                back-off is over. One let go of meanwhile (its run aborted) is
                not handed over.

        Returns:
            ``seq``.
        """
        running = self._jobs
        waiting = self._awaiting_commit
        if not now and waiting is not None and self.gated:  # on a durable store
            held: list[Job] = []
            for job in jobs:
                if job.delay is None:
                    running[job.call.token] = job
                    held.append(job)
                else:  # in a back-off that a recovery found under way: it waits out the rest
                    self.retry_later(job, job.delay)
            if held:
                waiting.append((seq, held))
            return seq
        pool = self._pool
        for job in jobs:
            if job.delay is not None:  # as above: it waits out the rest of its back-off
                self.retry_later(job, job.delay)
                continue
            token = job.call.token
            if not now:
                running[token] = job
            elif token not in running:
                continue  # aborted while its snapshot was being committed
            step_node = job.step_node  # only a step's call has one
            if step_node is not None and step_node.timeout is not None:
                job.timer = self._after(step_node.timeout, TimerFired(token, "timeout"))
            pool.submit(job.call)
        return seq

    def gates(self, jobs: list[Job]) -> bool:
        """Whether :meth:`send` holds these calls until their snapshot is committed.

        On a durable store, while ``gated``, if one of them goes out now (not
        one that waits out a back-off first).
        """
        if self._awaiting_commit is None or not self.gated:
            return False
        return any(job.delay is None for job in jobs)

    def committed(self, seq: int) -> None:
        """The snapshot ``seq`` is committed: hand over the calls it announced (and earlier)."""
        waiting = self._awaiting_commit
        while waiting and waiting[0][0] <= seq:  # None (not durable) is false too
            announced, jobs = waiting.popleft()
            self.send(jobs, announced, now=True)

    # --- their ends -----------------------------------------------------------------

    def finished(self, token: int) -> Job | None:
        """The call a reply answers, which is no longer in flight.

        Returns:
            The call, its timeout timer cancelled; ``None`` for a call that
            was abandoned (timed out, or aborted with its run).
        """
        job = self._jobs.pop(token, None)
        if job is not None and job.timer is not None:
            job.timer.cancel()
        return job

    def timed_out(self, token: int) -> Job | None:
        """A step's timeout timer went off: abandon its call and tell it to stop, if it is due.

        A timeout counts from when the step's code began, not from when its call
        was handed over: one that waited for a step thread (all of them taken)
        failed, its body never called, and counted as an attempt. A call that
        waited and has not begun yet, or began less than its timeout ago, has
        its timer set again. One that never waited and never began (lost on its
        way) times out.

        Returns:
            The call, or ``None`` if it had finished just before, or is not due.
        """
        job = self._jobs.get(token)
        if job is None:
            return None
        step_node = job.step_node
        assert step_node is not None and step_node.timeout is not None
        signal, timeout = job.signal, step_node.timeout
        began = signal.began  # begun, or handed to an actor after it waited
        if began is not None:
            left = began + timeout - _clock.monotonic()
        else:
            left = timeout if signal.waited else 0.0
        if left > _TIMEOUT_SLACK:
            job.timer = self._after(left, TimerFired(token, "timeout"))
            return None
        del self._jobs[token]
        job.signal.abort(AbortReason.TIMEOUT.value)
        return job

    @staticmethod
    def backoff(job: Job, policy: RetryPolicy) -> float:
        """Seconds to wait before ``job``, a failed step's next attempt, as the policy says."""
        return policy.delay_before(job.attempt, _rng)

    def retry_later(self, job: Job, delay: float) -> None:
        """Hand ``job`` (a failed step's next attempt) over after ``delay`` seconds.

        The wait holds no thread: a timer tells the run actor when the time
        has come, and the run actor calls :meth:`retry_due`.
        """
        token = job.call.token
        job.delay = None
        handle = self._after(delay, TimerFired(token, "retry"))
        self._retrying[token] = (job, handle)

    def retry_due(self, token: int) -> None:
        """A retry's back-off is over: hand the call over (its snapshot was recorded)."""
        entry = self._retrying.pop(token, None)
        if entry is not None:
            job = entry[0]
            self._jobs[token] = job
            self.send([job], 0, now=True)

    def abort(self, reason: AbortReason) -> None:
        """Tell every call still in flight to stop, and forget them and their timers.

        The pool is told how many waited for an actor, not yet handed one: it
        takes them out of its backlog once they are many.
        """
        waiting = 0
        for job in self._jobs.values():
            signal = job.signal
            signal.abort(reason.value)
            if signal.waited and signal.began is None:
                waiting += 1
            if job.timer is not None:
                job.timer.cancel()
        if waiting:
            self._pool.let_go(waiting)
        for _, handle in self._retrying.values():
            handle.cancel()
        self._jobs.clear()
        self._retrying.clear()
        if self._awaiting_commit is not None:
            self._awaiting_commit.clear()

    def _after(self, delay: float, message: TimerFired) -> TimerHandle:
        return self._timers.call_later(delay, tell_safely, self._run, message)


_TIMEOUT_SLACK = 0.001
"""Seconds left of a timeout that count as none: a timer may fire a little early."""
