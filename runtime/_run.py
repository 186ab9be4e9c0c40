"""``Run``: one execution of a workflow, started in the background and read by id."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
import weakref
from collections.abc import Callable, Container, Mapping
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, cast

from pydantic import BaseModel

from runtime import _clock, _otel, _probes
from runtime._errors import (
    BlockingCallError,
    CancelError,
    InvalidInputError,
    QueueFullError,
    ResumeConflictError,
    ResumeTargetError,
    RunAlreadyStartedError,
    RunDeletedError,
    RunNotRestartableError,
    RunNotStartedError,
    RunNotSuspendedError,
    RunTimeoutError,
    RuntimeOverloadedError,
    RuntimeStoppedError,
    SnapshotFormatError,
    StoreError,
    StoreUnavailableError,
    WorkflowError,
)
from runtime._ids import check_resource_id, new_span_id, new_trace_id
from runtime._model import (
    SETTLED_STATUSES,
    TERMINAL_STATUSES,
    ErrorInfo,
    RunEvent,
    RunStatus,
    StartAsyncResult,
    WorkflowResult,
    with_output_schema,
)
from runtime._options import OutputOptions, TracingOptions, check_run_timeout, check_timeout
from runtime._otel import count_canceled_unheld, end_span
from runtime._plan import item_path, split_item_path
from runtime._queue import Queue
from runtime._request_context import RequestContext
from runtime._restart import restarted, target_path, time_travel_snapshot
from runtime._run_input import (
    DRAWN_IDS,
    check_idempotency_key,
    enter_queue,
    first_record,
    pending_snapshot,
    start_span,
    validated_resume_data,
)
from runtime._snapshot import (
    EACH_SCOPE,
    LOOP_SCOPE,
    Snapshot,
    canceled_record,
    decode,
    is_stand_in,
    mark_canceled,
    next_record,
    read_another,
    read_result,
    run_deadline,
    stand_in_record,
)
from runtime._step import Step
from runtime._stores.base import SharedStore, SnapshotRecord
from runtime._stream import RunStream
from runtime._sync import (
    Channel,
    ChannelClosed,
    EventChannel,
    Latch,
    served,
    served_run,
    serving_an_end,
    wait_for_a_run,
)
from runtime._versions import matching_plan, version_error

if TYPE_CHECKING:
    from actors.system import ActorSystem
    from runtime._plan import ExecutionPlan
    from runtime._runtime import RunHost
    from runtime._workflow import Workflow

__all__ = ["Run", "RunWatch"]

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)
T = TypeVar("T")


# What start_async returns, made by the model's validator: the model's __init__ is a Python
# frame around the same call (0.76 µs against 0.63, of a start's 10 in memory).
_start_result = StartAsyncResult.__pydantic_validator__.validate_python


class Run(Generic[In, Out]):
    """One execution of a workflow. Create it with ``workflow.create_run()``.

    Attributes:
        run_id: The run's id: what ``start_async`` returns and queries take.
        workflow_id: The id of the run's workflow.
        resource_id: The user or tenant the run is for, as given to
            ``create_run`` (or to ``start_async``, once started); ``None`` for none.
    """

    __slots__ = ("_host", "_lock", "_plan", "_started", "resource_id", "run_id", "workflow_id")

    def __init__(
        self, plan: ExecutionPlan, host: RunHost, run_id: str, resource_id: str | None = None
    ) -> None:
        self._plan = plan
        self._host = host
        self._lock = threading.Lock()
        self._started = False
        self.run_id = run_id
        self.workflow_id = plan.workflow_id
        self.resource_id = resource_id

    def __repr__(self) -> str:
        return f"<Run {self.run_id!r} of workflow {self.workflow_id!r}>"

    def start_async(
        self,
        *,
        input_data: In | Mapping[str, Any] | None = None,
        request_context: RequestContext | Mapping[str, Any] | None = None,
        initial_state: BaseModel | Mapping[str, Any] | None = None,
        tracing_options: TracingOptions | Mapping[str, Any] | None = None,
        output_options: OutputOptions | Mapping[str, Any] | None = None,
        queue: Queue | None = None,
        priority: int | None = None,
        concurrency_key: str | None = None,
        resource_id: str | None = None,
        idempotency_key: str | None = None,
        run_timeout: float | timedelta | None = None,
    ) -> StartAsyncResult:
        """Start the run in the background and return its id at once.

        When this returns, the run is recorded (``pending``, or already further)
        and a query by its id from any thread finds it; no step has necessarily
        run yet.

        With an ``idempotency_key``, a start whose key an earlier run of the
        same workflow holds starts nothing: it returns that run's id without
        validating anything, and this ``Run`` follows that run from then on
        (``run.run_id`` becomes its id). A key is remembered as long as its
        run's record is kept (until it is deleted, or pruned by retention), in
        every store and for every process that shares it; of two starts that
        race with one key, one records the run and the other returns its id.

        Args:
            input_data: The run's input: a model of the workflow's input schema
                or a mapping validated against it.
            request_context: Values every step can read (and change) through
                ``ctx.request_context``; copied, so later changes by the caller
                do not reach the run. Values must be msgpack-encodable.
            initial_state: The workflow state to begin with, validated by the
                workflow's ``state_schema`` when it has one.
            tracing_options: Span metadata and a trace id to join.
            output_options: Whether results carry the workflow ``state``.
            queue: The :class:`Queue` the run goes through, instead of its
                workflow's (if any): it starts executing once the queue's
                limits allow.
            priority: Its priority within the queue: higher first, equal ones
                in the order they started (an int within ±1,000,000).
            concurrency_key: Its partition in the queue, instead of the
                queue's ``key`` function.
            resource_id: The user or tenant the run is for, when not given to
                ``create_run`` (this one wins); stored with the run, shown in
                queries, and what ``list_workflow_runs(resource_id=...)`` filters on.
            idempotency_key: A key (a non-empty ``str`` of at most 512
                characters) that makes a repeated start of the same work
                return the first run's id instead of starting another run.
                Keys are scoped to the workflow.
            run_timeout: Seconds (or a ``timedelta``) the run may take, instead
                of its workflow's ``run_timeout``: counted from when it begins to
                execute (a wait in a queue, or for room under
                ``max_concurrent_runs``, does not count), its deadline is stored
                with the run and holds across sleeps, suspensions, a crash or
                another process taking the run over. When it passes, the run is
                canceled as :meth:`cancel` cancels it, with a ``RunDeadlineError``
                as its error. A :meth:`restart` gets a new deadline.

        Returns:
            ``StartAsyncResult(run_id=...)``: this run's id, or with an
            ``idempotency_key`` already used, the id of the run that holds it.

        Raises:
            InvalidInputError: if an argument is rejected; nothing is recorded,
                and the run can be started again with good arguments.
            RunAlreadyStartedError: if this run was started before, or its id is
                taken by another run (whatever the ``idempotency_key``, when
                that run does not hold the key).
            RuntimeOverloadedError: if the runtime's ``max_pending_runs`` runs
                wait to start; nothing is recorded, and the run can be started
                again later.
            QueueFullError: if the queue's ``max_queued`` runs wait; nothing is recorded.
            QueueKeyError: if the queue's key function raises or names no
                non-empty str; nothing is recorded.
            ValueError: for a ``priority`` or ``concurrency_key`` without a queue.
            RuntimeStoppedError: if the runtime is not running.
            StoreUnavailableError: if the store could not be reached, or did not
                commit the start within 30 s, or refuses writes (a read-only
                file, privileges revoked: said at once, with the database's
                message); nothing is recorded (but for a commit under way when
                the connection went: starting this run again records it or
                raises ``RunAlreadyStartedError``).
            StoreError: if the store refused the run for good (a value too large
                for it, say).
            TypeError: if ``idempotency_key`` is not a ``str``, or
                ``run_timeout`` not a number of seconds or a timedelta.
            ValueError: if ``idempotency_key`` is empty or too long, or
                ``run_timeout`` is not above 0 and at most about a century.
        """
        return self._start(
            input_data=input_data,
            request_context=request_context,
            initial_state=initial_state,
            tracing_options=tracing_options,
            output_options=output_options,
            queue=queue,
            priority=priority,
            concurrency_key=concurrency_key,
            resource_id=resource_id,
            idempotency_key=idempotency_key,
            run_timeout=run_timeout,
        )

    def _start(
        self,
        *,
        input_data: Any,
        request_context: Any,
        initial_state: Any = None,
        tracing_options: Any = None,
        output_options: Any = None,
        queue: Queue | None = None,
        priority: int | None = None,
        concurrency_key: str | None = None,
        resource_id: str | None = None,
        idempotency_key: str | None = None,
        scheduled: bool = False,
        run_timeout: float | timedelta | None = None,
    ) -> StartAsyncResult:
        """:meth:`start_async`, also for the runtime's scheduler (which a worker runs too)."""
        key = None if idempotency_key is None else check_idempotency_key(idempotency_key)
        limit = None if run_timeout is None else check_run_timeout(run_timeout)
        with self._lock:
            if self._started:
                raise RunAlreadyStartedError(
                    f"run {self.run_id!r} was already started; create a new run with "
                    "workflow.create_run()",
                    run_id=self.run_id,
                )
            plan, run_id, host = self._plan, self.run_id, self._host
            host.running()
            if resource_id is None:
                resource_id = self.resource_id
            else:
                resource_id = _checked_resource_id(resource_id, run_id)
            if key is not None:
                host.may_start(run_id, scheduled=scheduled)  # a worker is told so, keyed or not
                first = host.run_for_key(plan.workflow_id, key)
                if first is not None:
                    return self._follow(first)
            snapshot = pending_snapshot(
                plan,
                run_id,
                input_data=input_data,
                request_context=request_context,
                initial_state=initial_state,
                tracing_options=tracing_options,
                output_options=output_options,
                resource_id=resource_id,
                idempotency_key=key,
                input_stored=scheduled,  # a schedule's input is the JSON form it kept
                run_timeout=limit,
            )
            chosen = enter_queue(
                plan, snapshot, queue=queue, priority=priority, concurrency_key=concurrency_key
            )
            try:
                _start_traced(
                    host,
                    plan,
                    snapshot,
                    chosen,
                    tracing_options=tracing_options,
                    scheduled=scheduled,
                )
            except (RunAlreadyStartedError, QueueFullError, RuntimeOverloadedError):
                # Another start with the same key may have won the race since the look-up,
                # and taken the queue's last place, or the runtime's, with it: this start
                # is that one's, not refused.
                first = None if key is None else host.run_for_key(plan.workflow_id, key)
                if first is None:
                    raise
                return self._follow(first)
            self._started = True
            self.resource_id = resource_id
        result: StartAsyncResult = _start_result({"run_id": run_id})
        return result

    def _follow(self, run_id: str) -> StartAsyncResult:
        """Become the handle of the run that holds this start's idempotency key."""
        self.run_id = run_id
        self._started = True
        return StartAsyncResult(run_id=run_id)

    def start(
        self,
        *,
        input_data: In | Mapping[str, Any] | None = None,
        request_context: RequestContext | Mapping[str, Any] | None = None,
        initial_state: BaseModel | Mapping[str, Any] | None = None,
        tracing_options: TracingOptions | Mapping[str, Any] | None = None,
        output_options: OutputOptions | Mapping[str, Any] | None = None,
        queue: Queue | None = None,
        priority: int | None = None,
        concurrency_key: str | None = None,
        resource_id: str | None = None,
        idempotency_key: str | None = None,
        run_timeout: float | timedelta | None = None,
        timeout: float | None = None,
    ) -> WorkflowResult[Out]:
        """Start the run and block until it ends; same arguments as :meth:`start_async`.

        With an ``idempotency_key`` an earlier run holds, this waits for that run.

        A run that fails returns its result with ``status == "failed"``; it does
        not raise.

        Args:
            input_data: As :meth:`start_async`.
            request_context: As :meth:`start_async`.
            initial_state: As :meth:`start_async`.
            tracing_options: As :meth:`start_async`.
            output_options: As :meth:`start_async`.
            queue: As :meth:`start_async`.
            priority: As :meth:`start_async`.
            concurrency_key: As :meth:`start_async`.
            resource_id: As :meth:`start_async`.
            idempotency_key: As :meth:`start_async`.
            run_timeout: As :meth:`start_async`: the run's own time limit.
            timeout: Seconds to wait for the run to end; ``None`` waits as long as it takes.

        Raises:
            InvalidInputError: as :meth:`start_async`.
            RunAlreadyStartedError: as :meth:`start_async`.
            RuntimeOverloadedError: as :meth:`start_async`.
            RuntimeStoppedError: as :meth:`start_async`.
            RunTimeoutError: if ``timeout`` passed first (the run goes on).
            BlockingCallError: if called on the event loop of the runtime's async
                steps (nothing is started).
        """
        timeout = check_timeout(timeout)
        self._refuse_on_step_loop("start")
        self.start_async(
            input_data=input_data,
            request_context=request_context,
            initial_state=initial_state,
            tracing_options=tracing_options,
            output_options=output_options,
            queue=queue,
            priority=priority,
            concurrency_key=concurrency_key,
            resource_id=resource_id,
            idempotency_key=idempotency_key,
            run_timeout=run_timeout,
        )
        return self.wait(timeout)

    async def astart_async(
        self,
        *,
        input_data: In | Mapping[str, Any] | None = None,
        request_context: RequestContext | Mapping[str, Any] | None = None,
        initial_state: BaseModel | Mapping[str, Any] | None = None,
        tracing_options: TracingOptions | Mapping[str, Any] | None = None,
        output_options: OutputOptions | Mapping[str, Any] | None = None,
        queue: Queue | None = None,
        priority: int | None = None,
        concurrency_key: str | None = None,
        resource_id: str | None = None,
        idempotency_key: str | None = None,
        run_timeout: float | timedelta | None = None,
    ) -> StartAsyncResult:
        """Await :meth:`start_async` without blocking the event loop.

        Same arguments, result and errors. The validation and the store's
        commit run on one of the runtime's call threads. Cancelling the
        awaiting task does not undo a start already on its way: the run may
        still be recorded and run (one still waiting for a thread is never
        made). This run started again says which: it waits for the first call,
        then raises ``RunAlreadyStartedError`` if that one recorded the run.
        """
        # The ids drawn here, in the order the caller's tasks run (see DRAWN_IDS);
        # the call below takes the task's context variables with it.
        drawn = DRAWN_IDS.set((new_trace_id(), new_span_id()))
        try:
            return await self._host.call(
                self.start_async,
                input_data=input_data,
                request_context=request_context,
                initial_state=initial_state,
                tracing_options=tracing_options,
                output_options=output_options,
                queue=queue,
                priority=priority,
                concurrency_key=concurrency_key,
                resource_id=resource_id,
                idempotency_key=idempotency_key,
                run_timeout=run_timeout,
            )
        finally:
            DRAWN_IDS.reset(drawn)

    async def astart(
        self,
        *,
        input_data: In | Mapping[str, Any] | None = None,
        request_context: RequestContext | Mapping[str, Any] | None = None,
        initial_state: BaseModel | Mapping[str, Any] | None = None,
        tracing_options: TracingOptions | Mapping[str, Any] | None = None,
        output_options: OutputOptions | Mapping[str, Any] | None = None,
        queue: Queue | None = None,
        priority: int | None = None,
        concurrency_key: str | None = None,
        resource_id: str | None = None,
        idempotency_key: str | None = None,
        run_timeout: float | timedelta | None = None,
        timeout: float | None = None,
    ) -> WorkflowResult[Out]:
        """Await :meth:`start` without blocking the event loop: start, then await the end.

        Same arguments, result and errors as :meth:`start`.
        """
        timeout = check_timeout(timeout)
        await self.astart_async(
            input_data=input_data,
            request_context=request_context,
            initial_state=initial_state,
            tracing_options=tracing_options,
            output_options=output_options,
            queue=queue,
            priority=priority,
            concurrency_key=concurrency_key,
            resource_id=resource_id,
            idempotency_key=idempotency_key,
            run_timeout=run_timeout,
        )
        return await self.wait_async(timeout)

    def wait(self, timeout: float | None = None) -> WorkflowResult[Out]:
        """Block until the run ends or suspends, and return its result.

        A ``waiting`` run (asleep) is waited for; a ``suspended`` one is
        returned as it is, since only a resume moves it on (unless, on a shared
        store, a resume of it was recorded already, which a worker carries
        out: that one is waited for).

        Args:
            timeout: Seconds to wait; ``None`` waits as long as it takes.

        Raises:
            RunNotStartedError: if the run was never started.
            RunDeletedError: if the run ended and its record was deleted or pruned.
            RunTimeoutError: if ``timeout`` passed first (the run goes on).
            RuntimeStoppedError: if the runtime stopped (or was stopped) first,
                leaving the run unfinished in a durable store for the next runtime.
            BlockingCallError: if the run has not ended and the caller runs on the
                event loop of the runtime's async steps (see :meth:`wait_async`).
            StoreUnavailableError: if the store could not be reached when
                ``timeout`` passed (until then, the wait reads it again and again);
                or, for a run that has not ended, once the store has refused every
                write for ``REFUSAL_PATIENCE`` (30) seconds: the message says why.
        """
        if timeout is not None:
            timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        record = self._through_outage(self._started_record, deadline)
        status = record.status
        if status not in SETTLED_STATUSES or (
            status == _SUSPENDED and self._resume_requested(record)
        ):
            self._refuse_on_step_loop("wait")
            self._refuse_inside_itself("wait() was called")
            self._unrecordable(record)
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                # Inside a step, its thread (and its run's place) is not counted meanwhile.
                event = self._host.watch(self.run_id)
                try:
                    settled = wait_for_a_run(event.wait, self.run_id, left, event.is_set)
                finally:
                    if not event.is_set():  # timed out (or interrupted): nobody waits here
                        self._host.unwatch(self.run_id, event)
                if not settled:
                    raise RunTimeoutError(
                        f"run {self.run_id!r} did not end within {timeout} seconds; it goes on",
                        run_id=self.run_id,
                    )
                woken = self._through_outage(self._load, deadline)
                self._unrecordable(woken)
                if self._resume_requested(woken) and self._host.hears_runs():
                    # Suspended with a resume recorded for a worker to carry out: it goes
                    # on soon. (The watch would wake at once: it is read again shortly.)
                    left = None if deadline is None else deadline - time.monotonic()
                    time.sleep(
                        _REQUESTED_PAUSE if left is None else max(0.0, min(left, _REQUESTED_PAUSE))
                    )
                    continue
                if not self._woken_early(woken):
                    return self._waited(woken)
        return self._result(record)

    async def wait_async(self, timeout: float | None = None) -> WorkflowResult[Out]:
        """Await the end (or suspension) of the run without blocking the event loop.

        The awaitable twin of :meth:`wait` (``await`` being a keyword, it keeps
        this name). Cancelling the wait leaves the run going.

        Args:
            timeout: Seconds to wait; ``None`` waits as long as it takes.

        Raises:
            RunNotStartedError: if the run was never started.
            RunDeletedError: if the run ended and its record was deleted or pruned.
            RunTimeoutError: if ``timeout`` passed first (the run goes on).
            RuntimeStoppedError: if the runtime stopped (or was stopped) first,
                leaving the run unfinished in a durable store for the next runtime.
            BlockingCallError: if the run has not ended and this is awaited inside
                one of its own steps, which it would wait for.
            StoreUnavailableError: if the store could not be reached when
                ``timeout`` passed (until then, the wait reads it again and again);
                or, for a run that has not ended, once the store has refused every
                write for ``REFUSAL_PATIENCE`` (30) seconds: the message says why.
        """
        timeout = check_timeout(timeout)
        outage: list[StoreUnavailableError] = []  # the last read's error, while it lasts
        if timeout is None:
            return await self._settled(outage)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        first: SnapshotRecord | None = None
        try:
            read = await self._first_read(deadline)
        except StoreUnavailableError as exc:
            if loop.time() >= deadline or self._host.state != "running":
                raise
            outage[:] = [exc]
        else:
            if read is None:
                raise _calls_held(self.run_id, "could not be read", timeout)
            first = read
            if first.status in SETTLED_STATUSES and not await self._resume_requested_async(first):
                return self._result(first)
        try:
            # Not asyncio.wait_for: on Python 3.11 it returned the result to a task
            # cancelled in the loop turn the result came, and the cancel was lost.
            async with asyncio.timeout_at(deadline):
                return await self._settled(outage, first)
        except TimeoutError:
            if outage:
                raise outage[-1] from None
            raise RunTimeoutError(
                f"run {self.run_id!r} did not end within {timeout} seconds; it goes on",
                run_id=self.run_id,
            ) from None

    async def _first_read(self, deadline: float) -> SnapshotRecord | None:
        """The first read of a wait with a timeout, made whatever the timeout, as wait() makes it.

        Under the timeout, a wait_async(0) of a run that had ended said it "goes on".
        But wait() reads on its caller's thread, while this read waits for one of the
        few call threads, which other calls may all hold (starts that another
        process's lock on a SQLite file keeps for up to 30 s each): a
        ``wait_async(0.5)`` raised ``RunTimeoutError`` a minute later. So a read
        that no thread has taken by the deadline (or, for a shorter timeout,
        :data:`FIRST_READ_PATIENCE` seconds after the call) is given up on, and
        skipped when its turn comes (``None``); one a thread has begun is awaited
        to its end.
        """
        loop = asyncio.get_running_loop()
        until = max(deadline, loop.time() + FIRST_READ_PATIENCE)
        return await self._host.call_within(self._started_record, until - loop.time())

    async def _settled(
        self, outage: list[StoreUnavailableError], record: SnapshotRecord | None = None
    ) -> WorkflowResult[Out]:
        """Wait for the run to settle; ``record`` is a read of it already made, if any."""
        host = self._host
        if record is None:
            record = await self._through_outage_async(self._started_record, outage)
        if record.status not in SETTLED_STATUSES or await self._resume_requested_async(record):
            self._refuse_inside_itself("wait_async() was awaited")
            self._unrecordable(record)
            # Inside an async step body: its run does not count against
            # max_concurrent_runs while it awaits, as a blocked step's does not.
            pool = served()[1]
            began = getattr(pool, "await_began", None)
            ended = getattr(pool, "await_ended", None)
            parks = began is not None and getattr(pool, "parks_clock", True)
            while True:
                latch = Latch()
                host.watch(self.run_id, latch)
                parked = _probes.parked if parks else None
                counted = began(self.run_id) if began is not None else None
                try:
                    # Under a test harness, a step waiting for a run holds its clock
                    # back no more than a sync step's wait does (it waited for ever).
                    with contextlib.nullcontext() if parked is None else parked(latch.is_set):
                        await latch.wait_async()
                except BaseException:  # cancelled, or timed out: this wait is given up
                    host.unwatch(self.run_id, latch)
                    raise
                finally:
                    if ended is not None:
                        ended(counted)
                woken = await self._through_outage_async(self._load, outage)
                self._unrecordable(woken)
                if await self._resume_requested_async(woken) and host.hears_runs():
                    await asyncio.sleep(_REQUESTED_PAUSE)  # see wait()
                    continue
                if not self._woken_early(woken):
                    return self._waited(woken)
        return self._result(record)

    def watch(self, timeout: float | None = None, *, from_seq: int | None = None) -> RunWatch:
        """The run's events as the registry receives them, ending when the run ends.

        Iterate with ``for`` or ``async for``: first the events so far (each
        step started or finished, each status, what steps wrote), then each as
        it happens::

            for event in run.watch():
                print(event.seq, event.type, event.path, event.status)

        A run that suspends is still watched (a resume goes on with it); one
        that has already ended yields its events and stops. Each event has its
        own time (``at``) and number (``seq``).

        Args:
            timeout: Seconds to wait for each next event (with ``for`` and
                ``async for`` alike) before ``RunTimeoutError``; ``None`` waits
                as long as it takes.
            from_seq: Only the events numbered above this one (the last a
                client saw before it lost its connection); ``None`` for all.

        Raises:
            RunNotStartedError: if the run was never started.
            SnapshotFormatError: if the run has ended and its stored snapshot
                cannot be read: there are no events to tell.
            StoreUnavailableError: if the store could not be reached when
                ``timeout`` passed (until then, this reads it again and again).
            TypeError: if ``from_seq`` is not an ``int``.
            ValueError: if ``from_seq`` is negative.

        While iterating, after the events so far, :class:`RuntimeStoppedError`
        if the runtime stopped (or was stopped) before the run ended: a watch
        ends quietly only with its run. And :class:`StoreUnavailableError`, as
        :meth:`wait` raises it, for a run that has not settled once its store
        has refused every write for ``REFUSAL_PATIENCE`` (30) seconds: a watch
        waiting for the next event wakes to say it, and each next event asked
        for raises it again while the refusal lasts; once the store takes writes,
        the same watch goes on from the last event taken. A ``for`` loop (not
        ``async for``) over the watch of a run that had not ended raises
        :class:`BlockingCallError` on the event loop of the runtime's async
        steps, which it would stop; so does a watch of a run not ended inside
        one of its own steps or hooks, which it would outlast.
        """
        timeout = check_timeout(timeout)
        if from_seq is not None:
            _check_seq(from_seq)
        deadline = None if timeout is None else time.monotonic() + timeout
        record = self._through_outage(self._started_record, deadline)
        if record.status in TERMINAL_STATUSES:
            read_result(record, self.workflow_id)  # raises for a damaged snapshot
        else:
            self._refuse_inside_itself("watch() (or stream()) was called")
        watch = RunWatch(self.run_id, timeout, from_seq)
        watch._ended = record.status in TERMINAL_STATUSES
        watch._status = record.status
        watch._attach(self._host)
        return watch

    async def awatch(
        self, timeout: float | None = None, *, from_seq: int | None = None
    ) -> RunWatch:
        """Await :meth:`watch` without blocking the event loop (it reads the store).

        Same arguments, result and errors; iterate the watch with ``async for``.
        """
        self._refuse_inside_itself("watch() (or stream()) was called")
        return await self._within(self.watch, timeout, from_seq)

    def stream(self, *, from_seq: int | None = None, timeout: float | None = None) -> RunStream:
        """The run's events as typed stream events, for UIs, until the run settles.

        Iterate with ``for`` or ``async for``::

            for event in run.stream():
                match event:
                    case StepOutputEvent():
                        print(event.path, event.data)   # what the step wrote
                    case RunFinishEvent():
                        print(event.status, event.result)

        The events: ``run_start``, ``step_start``, ``step_output`` (what a step
        wrote with ``ctx.writer.write``), ``step_waiting``, ``step_suspended``,
        ``step_finish``, and last ``run_finish`` (for a run that suspends too,
        with status ``suspended``: :meth:`resume_stream` goes on from there).
        On a shared store a suspension that a resume request waits for, which
        a worker carries out, is no settle: the stream goes on, as :meth:`wait`
        waits on. Each has its time and its number within the run (``seq``); a
        client that reconnects passes the last number it saw as ``from_seq``.

        Args:
            from_seq: Only the events numbered above this one; ``None`` for
                the run's events from its start.
            timeout: Seconds to wait for each next event (with ``for`` and
                ``async for`` alike) before ``RunTimeoutError``; ``None`` waits
                as long as it takes.

        Raises:
            As :meth:`watch`.
        """
        return RunStream(self.watch(timeout, from_seq=from_seq))

    async def astream(
        self, *, from_seq: int | None = None, timeout: float | None = None
    ) -> RunStream:
        """Await :meth:`stream` without blocking the event loop; iterate with ``async for``."""
        self._refuse_inside_itself("watch() (or stream()) was called")
        watch = await self._within(self.watch, timeout, from_seq)
        return RunStream(watch)

    async def _within(
        self, watch: Callable[..., RunWatch], timeout: float | None, from_seq: int | None
    ) -> RunWatch:
        """``watch(timeout, from_seq=from_seq)`` on a call thread, within ``timeout``.

        The watch reads the run, within ``timeout`` as :meth:`watch` does; but
        awaited, its read first waits for one of the few call threads, which
        other calls may all hold: it is given up on once no thread has taken it
        by then (or :data:`FIRST_READ_PATIENCE` seconds, for a shorter timeout).

        Raises:
            RunTimeoutError: if no call thread took the read in time.
        """
        timeout = check_timeout(timeout)
        if timeout is None:
            return await self._host.call(watch, timeout, from_seq=from_seq)
        made = await self._host.call_within(
            functools.partial(watch, timeout, from_seq=from_seq),
            max(timeout, FIRST_READ_PATIENCE),
        )
        if made is None:
            raise _calls_held(self.run_id, "could not be read", timeout)
        return made

    def resume_stream(
        self,
        *,
        step: Step[Any, Any] | Workflow[Any, Any] | str | None = None,
        resume_data: BaseModel | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        for_each_index: int | None = None,
    ) -> RunStream:
        """Resume a suspended run and stream what follows (Mastra's ``resumeStream``).

        The stream starts with the resume (a ``run_start``, when the run was
        suspended; a run that runs on after the resume of another of its
        suspensions starts nothing anew, and its stream begins with the resumed
        step's ``step_start``) and ends when the run settles again; the events
        before the resume are left out.

        Args:
            step: As :meth:`resume_async`.
            resume_data: As :meth:`resume_async`.
            timeout: As :meth:`stream`.
            for_each_index: As :meth:`resume_async`.

        Raises:
            As :meth:`resume_async`; nothing is streamed then.
        """
        timeout = check_timeout(timeout)
        # Subscribed before the resume is recorded: the stream starts where the
        # suspension ended, and misses nothing after it.
        record = self._started_record()
        if record.status in TERMINAL_STATUSES:
            raise _not_resumable(decode(record.data, record.run_id), self._per_item)
        watch = RunWatch(self.run_id, timeout, _FROM_NOW)
        watch._attach(self._host, wait=True)
        stream = RunStream(watch)
        try:
            self.resume_async(step=step, resume_data=resume_data, for_each_index=for_each_index)
        except BaseException:
            stream.close()
            raise
        return stream

    async def aresume_stream(
        self,
        *,
        step: Step[Any, Any] | Workflow[Any, Any] | str | None = None,
        resume_data: BaseModel | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        for_each_index: int | None = None,
    ) -> RunStream:
        """Await :meth:`resume_stream` without blocking the event loop."""
        return await self._host.call(
            self.resume_stream,
            step=step,
            resume_data=resume_data,
            timeout=timeout,
            for_each_index=for_each_index,
        )

    def resume(
        self,
        *,
        step: Step[Any, Any] | Workflow[Any, Any] | str | None = None,
        resume_data: BaseModel | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        for_each_index: int | None = None,
    ) -> WorkflowResult[Out]:
        """Resume a suspended run and block until it ends or suspends again.

        Same arguments and errors as :meth:`resume_async`, plus:

        Args:
            step: As :meth:`resume_async`.
            resume_data: As :meth:`resume_async`.
            timeout: Seconds to wait; ``None`` waits as long as it takes.
            for_each_index: As :meth:`resume_async`.

        Raises:
            RunTimeoutError: if ``timeout`` passed first (the run goes on).
        """
        timeout = check_timeout(timeout)
        self._refuse_on_step_loop("resume")
        self.resume_async(step=step, resume_data=resume_data, for_each_index=for_each_index)
        return self.wait(timeout)

    def resume_async(
        self,
        *,
        step: Step[Any, Any] | Workflow[Any, Any] | str | None = None,
        resume_data: BaseModel | Mapping[str, Any] | None = None,
        for_each_index: int | None = None,
    ) -> StartAsyncResult:
        """Resume a suspended run in the background and return at once.

        The suspended step is called again from its start, with the same
        input and ``ctx.resume_data`` set; the steps after it run once.
        When this returns the resume is recorded (committed, on a durable
        store): a query reads the run as ``running``, and if the process dies
        now the next runtime on the store finishes the run.

        Each suspension is resumed on its own: while the run goes on after a
        resume of one foreach item or parallel member, a resume of another
        that still waits is recorded before this returns, and the actor that
        drives the run takes it. On a shared store (SQLite, PostgreSQL) it is
        a request committed in the store, from whichever process or host: the
        worker that drives the run carries it out (or the one that takes the
        run over, or runs it once there is room). When two resumes of the same
        suspension race, exactly one wins and the other raises
        ``ResumeConflictError``, whenever it read the run: before the winner's
        resume was recorded, or after it (the run going on, or ended). On a
        store in memory so does a resume of a running run that waits for room
        to run. ``RunNotSuspendedError`` is for a run that is not suspended and whose
        suspension nobody resumed: it never suspended, or was cancelled while
        suspended (so a resume that loses to a cancel gets it).

        Args:
            step: The suspended step to resume: a :class:`Step`, its id, or
                its path (``"child.step"``); may be left out when only one
                step is suspended.
            resume_data: Handed to the step as ``ctx.resume_data``, validated
                by its ``resume_schema``.
            for_each_index: For a step of a ``foreach`` whose items suspended,
                the index of the item to resume (suspended items are listed in
                the result's ``suspended`` as ``"step[3]"``, which ``step`` may
                also name). The foreach goes on once every item is done.

        Returns:
            ``StartAsyncResult(run_id=...)``.

        Raises:
            RunNotStartedError: if the run was never started.
            RunNotSuspendedError: if the run is not suspended and nobody resumed
                it: it never suspended, or was cancelled while suspended.
            ResumeTargetError: if ``step`` is not suspended, or several steps
                are and none was named.
            InvalidInputError: if ``resume_data`` does not fit the step's
                ``resume_schema``; the run stays suspended.
            ResumeConflictError: if another resume of the same suspension was
                recorded first (from any process), or, on a store in memory,
                the run waits for room to run (``.status`` says where the run is now).
            WorkflowVersionError: if the run started on a definition of its
                workflow (a plan fingerprint) not registered on this runtime;
                the run stays suspended.
            RunDeletedError: if the run's record was deleted meanwhile.
            RuntimeStoppedError: if the runtime is not running, or stopped before
                the resume was recorded.
        """
        system = self._host.running()
        record = self._started_record()
        # The seq of the record the suspension named was first read waiting in: a run read
        # again (it changed under this resume) must still wait in that one, not a later one.
        read: int | None = None
        while True:
            snapshot = decode(record.data, record.run_id)
            if snapshot["status"] == RunStatus.RUNNING and snapshot["suspended"]:
                # Running on after another of its suspensions was resumed (or before it
                # ever suspended as a whole): its actor takes the resume of one that waits.
                path = _waiting_target(snapshot, step, self.run_id, for_each_index)
                step, for_each_index = path, None  # read again, it names the same one
                read = _same_suspension(read, snapshot, path)
                _, data = self._resume_data(snapshot, path, resume_data)
                # On a shared store, a request in the store, for whichever worker drives
                # the run (this one, another process, or the next to claim it).
                requested = self._host.cut_by_stop(
                    "resume",
                    self.run_id,
                    system.request_resume,
                    record,
                    snapshot,
                    path,
                    data,
                )
                if requested == "recorded":
                    return StartAsyncResult(run_id=self.run_id)
                if requested == "requested":  # another's request for it waits: it won
                    waiting = [other for other in _still_waiting(snapshot) if other != path]
                    raise _resume_conflict(self.run_id, snapshot["status"], waiting)
                if requested == "changed":  # ended, or a suspension resumed since: read again
                    current = self._started_record()
                    if current.seq == record.seq:
                        raise _resume_conflict(self.run_id, current.status)
                    record = current
                    continue
                said = system.resume_waiting(
                    self.run_id,
                    path,
                    data,
                    read_seq=read,
                    read_run=(snapshot["created_at"], snapshot.get("restarts", 0)),
                )
                if said == "recorded":
                    return StartAsyncResult(run_id=self.run_id)
                if said == "taken":
                    raise _resume_conflict(self.run_id, snapshot["status"])
                if said == "stopped":
                    raise RuntimeStoppedError(
                        f"the runtime stopped while the resume of {path!r} of run "
                        f"{self.run_id!r} was being recorded: it may have been, and then "
                        "the next runtime on the store goes on with it (read the run to know)",
                        run_id=self.run_id,
                    )
                # Gone (it suspended or ended before it read the resume), or not here: it
                # may have just suspended, its actor let go of before the registry stored
                # its record. Read it as it is once it settled.
                self._until_settled()
                current = self._started_record()
                if current.seq == record.seq:
                    raise _driven_elsewhere(self.run_id, path)
                record = current
                continue
            if snapshot["status"] != RunStatus.SUSPENDED:
                raise _not_waiting(snapshot, step, self.run_id, for_each_index, self._per_item)
            if _past_deadline(snapshot):
                # Its time is up, and whoever was to cancel it has not yet: it is
                # canceled here, as that worker would, and this resume refused.
                record = self._expire(system, record, snapshot)
                continue
            path = _resume_target(snapshot, step, self.run_id, for_each_index)
            step, for_each_index = path, None
            read = _same_suspension(read, snapshot, path)
            plan, data = self._resume_data(snapshot, path, resume_data)
            resumed = _resumed_record(snapshot, path, data)
            # The compare-and-set decides between racing resumes (and cancels); it is
            # committed when it returns, so the resume is acknowledged only once durable.
            if self._host.cut_by_stop(
                "resume",
                self.run_id,
                system.resume,
                plan,
                snapshot,
                resumed,
                record.seq,
            ):
                return StartAsyncResult(run_id=self.run_id)
            lost = self._host.load(self.run_id)
            if lost is None or lost.seq == record.seq:
                raise self._resume_lost(lost)
            # Changed since it was read: another of its suspensions resumed (this one
            # may still wait), or this one, or a cancel. Read as it is now.
            record = lost

    def _expire(
        self, system: ActorSystem, record: SnapshotRecord, snapshot: Snapshot
    ) -> SnapshotRecord:
        """Cancel a suspended run whose deadline passed; its record once that is settled."""
        if system.expire_unheld(record, self._going_on) == "canceled":
            ending = system.ending_here(self.run_id)
            if ending is not None:
                ending.wait()  # its hooks, then its canceled record
        else:
            self._until_settled()  # another took it: a resume, a cancel, or its deadline
        return self._started_record()

    @property
    def _per_item(self) -> frozenset[str]:
        """The paths of the steps a ``foreach`` runs, in the workflow's plan."""
        return self._plan.output_schemas.per_item

    def _resume_data(
        self, snapshot: Snapshot, path: str, resume_data: BaseModel | Mapping[str, Any] | None
    ) -> tuple[ExecutionPlan, Any]:
        """The definition the run goes on with, and ``resume_data`` validated for ``path``.

        Raises:
            WorkflowVersionError: if the run's definition is not registered here.
            InvalidInputError: if the data does not fit the step's ``resume_schema``.
        """
        plan = self._going_on(snapshot)
        by_id = plan.by_id
        if path not in by_id and split_item_path(path)[0] not in by_id:
            # A run from before versions were recorded, whose step is gone from this definition.
            raise version_error(snapshot, self._host.versions.get(self.workflow_id, {}))
        definition = by_id[path] if path in by_id else by_id[split_item_path(path)[0]]
        return plan, validated_resume_data(definition, resume_data, path, self.run_id)

    def _until_settled(self) -> None:
        """Wait (a little at most) for the run to settle: its actor stopped driving it.

        What it recorded last is committed soon after; a run another worker took
        over meanwhile (this one stalled) may go on for long, and is read as it is.
        """
        event = self._host.watch(self.run_id)
        try:
            event.wait(_SETTLE_PATIENCE)
        finally:
            if not event.is_set():
                self._host.unwatch(self.run_id, event)

    async def aresume_async(
        self,
        *,
        step: Step[Any, Any] | Workflow[Any, Any] | str | None = None,
        resume_data: BaseModel | Mapping[str, Any] | None = None,
        for_each_index: int | None = None,
    ) -> StartAsyncResult:
        """Await :meth:`resume_async` without blocking the event loop.

        Same arguments, result and errors; the compare-and-set and its commit
        run on one of the runtime's call threads.
        """
        return await self._host.call(
            self.resume_async, step=step, resume_data=resume_data, for_each_index=for_each_index
        )

    async def aresume(
        self,
        *,
        step: Step[Any, Any] | Workflow[Any, Any] | str | None = None,
        resume_data: BaseModel | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        for_each_index: int | None = None,
    ) -> WorkflowResult[Out]:
        """Await :meth:`resume` without blocking the event loop: resume, then await the end.

        Same arguments, result and errors as :meth:`resume`.
        """
        timeout = check_timeout(timeout)
        await self.aresume_async(step=step, resume_data=resume_data, for_each_index=for_each_index)
        return await self.wait_async(timeout)

    def restart_async(self) -> StartAsyncResult:
        """Run a failed or canceled run again, in place, from where it stopped; return at once.

        The run keeps its id, its input and the records (and outputs) of the
        steps that succeeded; it goes on at the node where it failed or was
        canceled, whose steps run again, then on to its end. Its hooks are
        called again when it ends (``on_start`` is not). The result counts
        ``restarts``. When this returns the restart is recorded (committed,
        on a durable store): a query reads the run as ``running``, and a
        runtime that opens the store after this process died runs it on.

        Returns:
            ``StartAsyncResult(run_id=...)``.

        Raises:
            RunNotStartedError: if the run was never started.
            RunNotRestartableError: if the run did not fail and was not
                canceled (it succeeded, or has not ended), or another restart
                of it was recorded first.
            WorkflowVersionError: if the run started on a definition of its
                workflow not registered on this runtime; the run is not changed.
            QueueFullError: if the run's queue has ``max_queued`` runs waiting,
                as a start into it would be told; the run is not changed, and can
                be restarted once the queue has drained.
            RunDeletedError: if the run's record was deleted meanwhile.
            RuntimeStoppedError: if the runtime is not running, or stopped before
                the restart was recorded.
        """
        system = self._host.running()
        record = self._started_record()
        snapshot = decode(record.data, record.run_id)
        if snapshot["status"] not in _RESTARTABLE:
            raise _not_restartable(self.run_id, snapshot["status"])
        if is_stand_in(snapshot):
            raise RunNotRestartableError(
                f"run {self.run_id!r} failed because its snapshot could not be read or "
                "stored, and its record was rebuilt from its row alone: it holds no input "
                "and no steps to restart from; start a new run",
                status=snapshot["status"],
                run_id=self.run_id,
            )
        plan = self._going_on(snapshot)
        restarted(snapshot)
        reopened = next_record(snapshot, _clock.time())
        # A compare-and-set on a run that has ended: of two restarts, one wins.
        if not self._host.cut_by_stop(
            "restart",
            self.run_id,
            system.resume,
            plan,
            snapshot,
            reopened,
            record.seq,
            reopen=True,
        ):
            current = self._host.load(self.run_id)
            if current is None:
                raise _deleted(self.run_id)
            raise _not_restartable(self.run_id, current.status)
        return StartAsyncResult(run_id=self.run_id)

    def restart(self, *, timeout: float | None = None) -> WorkflowResult[Out]:
        """Restart the run (see :meth:`restart_async`) and block until it ends or suspends.

        Args:
            timeout: Seconds to wait; ``None`` waits as long as it takes.

        Raises:
            As :meth:`restart_async`, and ``RunTimeoutError`` if ``timeout``
            passed first (the run goes on).
        """
        timeout = check_timeout(timeout)
        self._refuse_on_step_loop("restart")
        self.restart_async()
        return self.wait(timeout)

    async def arestart_async(self) -> StartAsyncResult:
        """Await :meth:`restart_async` without blocking the event loop."""
        return await self._host.call(self.restart_async)

    async def arestart(self, *, timeout: float | None = None) -> WorkflowResult[Out]:
        """Await :meth:`restart` without blocking the event loop."""
        timeout = check_timeout(timeout)
        await self.arestart_async()
        return await self.wait_async(timeout)

    def _time_travel(
        self,
        source_run_id: str,
        step: Step[Any, Any] | str,
        input_data: Any,
        resume_data: Any,
        resource_id: str | None,
    ) -> None:
        """Start this new run from the run ``source_run_id`` at ``step`` (``time_travel``)."""
        with self._lock:
            if self._started:
                raise RunAlreadyStartedError(
                    f"run {self.run_id!r} was already started", run_id=self.run_id
                )
            host = self._host
            host.running()
            record = host.load(source_run_id)
            if record is None or record.workflow_id != self.workflow_id:
                raise RunNotStartedError(
                    f"workflow {self.workflow_id!r} has no run {source_run_id!r} to time travel "
                    "from",
                    run_id=source_run_id,
                )
            source = decode(record.data, record.run_id)
            # On the definition the source ran on, as a restart: on another, the steps
            # before the target that the source never ran were skipped, unrecorded.
            plan = self._going_on(source)
            try:
                path = target_path(plan, step, self.run_id)
            except InvalidInputError as exc:
                if plan is self._plan:
                    raise
                # A step of this definition, not of the one the run started on.
                name = step.id if isinstance(step, Step) else step
                raise InvalidInputError(
                    f"step {name!r} is not a step of workflow {self.workflow_id!r} as run "
                    f"{source_run_id!r} started on it ({plan.label}), which the new run goes "
                    "on: time travel to a step of that definition",
                    field="step",
                    errors=exc.errors,
                    run_id=self.run_id,
                ) from exc
            if resource_id is None:
                resource_id = self.resource_id or source.get("resource_id")
            else:
                resource_id = _checked_resource_id(resource_id, self.run_id)
            snapshot = time_travel_snapshot(
                plan,
                source,
                self.run_id,
                path,
                input_data=input_data,
                resume_data=resume_data,
                resource_id=resource_id,
            )
            queue = self._source_queue(source, snapshot)
            # As a start's: the run's trace hangs under the caller's current span.
            _start_traced(host, plan, snapshot, queue, tracing_options=None)
            self._started = True
            self.resource_id = resource_id

    def _source_queue(self, source: Snapshot, snapshot: Snapshot) -> Queue | None:
        """The queue a time-traveled run goes through: its source's, with its key and priority.

        The workflow's queue, or the one the source was started with, as this
        runtime knows it (from starting it here, or from the store's limits on a
        shared store, where a claim enforces them by name). Without it, none.
        """
        entry = source.get("queue")
        if not entry:
            return None
        name = entry["name"]
        kept = {"name": name, "key": entry.get("key"), "priority": int(entry.get("priority", 0))}
        if self._plan.queue is not None and self._plan.queue.name == name:
            snapshot["queue"] = kept
            return self._plan.queue
        system = self._host.running()
        limits = system.queue_limits(name)
        if limits is not None or system.shared is not None:
            snapshot["queue"] = kept  # else unknown here: nothing would admit it
        return None if limits is None else Queue.of_limits(limits)

    def _going_on(self, snapshot: Snapshot) -> ExecutionPlan:
        """The registered definition with the run's fingerprint: what it goes on with.

        Raises:
            WorkflowVersionError: if none is registered; the run is not changed.
        """
        versions = self._host.versions.get(self.workflow_id, {})
        plan = matching_plan(snapshot, self._plan, versions)
        if plan is None:
            raise version_error(snapshot, versions)
        return plan

    def _resume_lost(self, current: SnapshotRecord | None) -> WorkflowError:
        """Why the store refused a resume of the run read suspended: what changed it since."""
        return _resume_lost(self.run_id, current, self._per_item)

    def cancel(self) -> bool:
        """Cancel the run: it becomes ``canceled`` and no further step starts.

        A step that is running is told through ``ctx.abort_signal`` (an async
        step is not interrupted otherwise; a sync one cannot be); what it
        returns is ignored. Works on a run that is pending, running, waiting
        or suspended, and on a shared store (SQLite, PostgreSQL) whichever
        process or host drives it: the cancel is asked for in the store, and
        the worker that holds the run carries it out (or, if that worker
        dies, whoever takes the run over).

        When this returns ``True`` the cancel is recorded: every query, from
        any thread (and on a shared store from any process), reads the run as
        ``canceled``, and on a durable store it is committed, so it survives
        the process. The workflow's hooks have run by then: the canceled run
        is recorded after them. A run no actor drives (suspended, and on a
        shared store queued or asleep) is cancelled by this call: it takes the
        run from the store first (of a cancel and a racing resume, one wins),
        and the run reads ``running`` while the hooks run here, with nothing
        left to resume or restart. Should this process die before the
        canceled run is recorded, the cancel stays asked for in the store:
        the runtime that takes the run over calls the hooks again and records
        it ``canceled``.

        Returns:
            ``True`` if this call cancelled the run; ``False`` if it had already
            ended (``success``, ``failed`` or ``canceled``), which changes nothing.

        Raises:
            RunNotStartedError: if the run was never started.
            CancelError: if another process holds the run and did not carry out
                the cancel within :data:`REMOTE_CANCEL_PATIENCE` seconds (the
                cancel stays asked for), or took the run over while this call ran
                its hooks (this worker's lease ran out): that worker ends it
                canceled unless it was changed since.
            StoreUnavailableError: if the store could not be reached (to read
                the run, or to record the cancel within 30 s).
            StoreError: if the store refused the canceled snapshot: the cancel is
                not recorded (the run's actor has stopped, but its record
                still reads as before, and a runtime that recovers it runs it on;
                a run this call took from the store reads ``running``, its cancel
                asked for, and the runtime that takes it over next ends it).
            RuntimeStoppedError: if the runtime is not running, or stopped
                before the cancel was recorded.

        A run nobody drives (suspended, queued) whose stored snapshot cannot be
        read (it is damaged) can never go on: it is cancelled all the same, its
        error saying why and its bytes kept (``SnapshotFormatError`` before), so
        that it can be deleted.
        """
        # A write of the cancel the stop caught met the store it closed: the stop cut it.
        return self._host.cut_by_stop("cancel", self.run_id, self._cancel)

    def _cancel(self) -> bool:
        """:meth:`cancel`, but for how a stop that caught it is told."""
        system = self._host.running()
        self._release_own_start()
        if serving_an_end() == self.run_id:
            # In its own on_finish or on_error: it has ended, and its end is recorded
            # once that hook returns (a cancel waited for it, then raised CancelError).
            self._started_record()  # the errors a cancel raises: not started, deleted
            return False
        deadline = time.monotonic() + CANCEL_PATIENCE
        while True:
            record = self._started_record()
            if record.status in TERMINAL_STATUSES:
                return False
            ending = system.ending_here(self.run_id)
            if ending is not None:
                # Another cancel here took the run, and calls its hooks: its end decides.
                ending.wait()
                continue
            if record.status == RunStatus.SUSPENDED:
                if self._cancel_unheld(system, record):
                    return True
                continue  # resumed meanwhile: cancel it where it runs now
            answer = system.cancel(self.run_id)
            if answer != "not_here":
                return self._canceled(answer == "recorded")
            if system.shared is not None:
                return self._cancel_elsewhere(system, system.shared)
            if time.monotonic() > deadline:
                raise CancelError(
                    f"run {self.run_id!r} is {record.status} but no actor of this runtime "
                    "drives it",
                    run_id=self.run_id,
                )
            time.sleep(0.005)  # between two hands (a resume on its way to an actor)

    async def acancel(self) -> bool:
        """Await :meth:`cancel` without blocking the event loop.

        Same result and errors. The cancel (and, for a run another process
        holds, the wait for that process to carry it out) runs on a thread of
        its own: it may wait for the run's hooks, or for that process, and
        other awaitable calls do not wait behind it.
        """
        if serving_an_end() == self.run_id:
            return self.cancel()  # its own end hook: at once, without a thread (see cancel)
        self._release_own_start()  # here: the cancel's own thread is no hook's
        return await self._host.call_apart(self.cancel)

    def _release_own_start(self) -> None:
        """Inside this run's own ``on_start``: let its end's hooks go without waiting for it.

        They wait for ``on_start`` to return, and the recorded cancel waits for them.
        """
        in_hook_of, owner = served()
        release = getattr(owner, "release_start", None)
        if in_hook_of == self.run_id and release is not None:
            release(self.run_id)

    def _cancel_elsewhere(self, system: ActorSystem, store: SharedStore) -> bool:
        """Cancel a run no actor here drives, on a shared store.

        A run nobody holds (queued, asleep) is cancelled here with a
        compare-and-set, as a suspended one is. One another worker holds gets
        a cancel request, which that worker carries out; this waits for the
        run to end, and takes over the cancel if the run comes back to the
        queue meanwhile (its worker died).
        """
        deadline = time.monotonic() + REMOTE_CANCEL_PATIENCE
        requested = False  # asked for, by this call or another before it
        mine = False  # asked for by this call: of two cancels, one is told True
        while True:
            record = self._started_record()
            if record.status in TERMINAL_STATUSES:
                return mine and record.status == RunStatus.CANCELED
            if not store.holds(self.run_id) and self._cancel_unheld(system, record):
                return True
            answer = system.cancel(self.run_id)
            if answer != "not_here":  # claimed here meanwhile: carried out here
                return self._canceled(answer == "recorded")
            if not requested:
                asked = system.cancels_asked
                mine = store.request_cancel(self.run_id) or self.run_id in asked
                requested = True
                if mine:
                    asked[self.run_id] = None
                    if len(asked) > CANCELS_ASKED_KEPT:
                        del asked[next(iter(asked))]
                continue
            if time.monotonic() > deadline:
                raise CancelError(
                    f"the worker that holds run {self.run_id!r} did not carry out its cancel "
                    f"within {REMOTE_CANCEL_PATIENCE} s; the cancel stays asked for, and is "
                    "carried out when that worker looks again, or by whoever takes the run over",
                    run_id=self.run_id,
                )
            event = self._host.watch(self.run_id)
            if not event.wait(0.2):
                self._host.unwatch(self.run_id, event)

    def _canceled(self, recorded: bool) -> bool:
        """Whether the store reads the run canceled, once the actors answered a cancel.

        The actors answer once the store has taken the canceled snapshot (or
        refused it); what the store holds now is what every query reads.
        """
        stored = self._host.load(self.run_id)
        if stored is None:
            if recorded:
                return True  # pruned as soon as it ended
            raise _deleted(self.run_id)
        if stored.status == RunStatus.CANCELED:
            return recorded
        if stored.status in TERMINAL_STATUSES:
            return False  # it ended otherwise first: this cancel changed nothing
        if recorded:
            # Recorded, and reopened since by a restart (the one thing that takes a run
            # back from an end): this call canceled it all the same.
            return True
        raise StoreError(
            f"the cancel of run {self.run_id!r} was not recorded: the store did not take the "
            f"canceled snapshot, and the run still reads as {stored.status}"
        )

    def _cancel_unheld(self, system: ActorSystem, record: SnapshotRecord) -> bool:
        """Cancel a run no actor drives (suspended, or queued on a shared store) here.

        As a run actor ends a run: the hooks run first, and the canceled record
        after them. A compare-and-set takes the run first (see
        :meth:`ActorSystem.take_unheld_end`): it decides between this cancel and a
        racing resume, and meanwhile the run reads ``running``.
        """
        try:
            snapshot = decode(record.data, record.run_id)
        except SnapshotFormatError as exc:
            return self._cancel_unreadable(system, record, exc)
        now = _clock.time()
        mark_canceled(snapshot, now)
        snapshot["status"] = RunStatus.RUNNING.value  # its end under way
        ending = next_record(snapshot, now)
        canceled = canceled_record(snapshot, now)  # what the hooks are told, and then stored
        if not system.take_unheld_end(ending, record.seq):
            return False  # changed meanwhile, or (on a shared store) held by a worker
        if not system.finish_unheld(self._plan, snapshot, canceled):
            return self._unheld_end_lost(system)
        # No actor counts its end (asleep, suspended, or left by a dead worker).
        count_canceled_unheld(snapshot, _clock.time(), status=record.status)
        return True

    def _unheld_end_lost(self, system: ActorSystem) -> bool:
        """After the store did not take the canceled record of a run this cancel took.

        The run's cancel stays asked for (on a shared store): a worker that took it
        over meanwhile (this one was reaped while the hooks ran) ends it canceled.

        Raises:
            CancelError: if that worker has not ended it yet.
            StoreError: if the store refused the record, and the run is not canceled.
            RuntimeStoppedError: if the runtime stopped meanwhile.
        """
        stored = self._host.load(self.run_id)
        if stored is None:
            raise _deleted(self.run_id)
        if stored.status == RunStatus.CANCELED:
            return True  # by the worker that took the run over, as this cancel asked
        if self._host.state != "running":
            raise RuntimeStoppedError(
                f"the runtime stopped before the cancel of run {self.run_id!r} was recorded"
                + ("; the cancel stays asked for" if system.shared is not None else ""),
                run_id=self.run_id,
            )
        if system.shared is not None and not system.shared.holds(self.run_id):
            raise CancelError(
                f"run {self.run_id!r} was taken over by another worker before its cancel was "
                f"recorded here (this worker's lease ran out while the hooks ran), and reads "
                f"{stored.status}: that worker ends it canceled unless the run was changed "
                "since (a restart, say); read it to know",
                run_id=self.run_id,
            )
        raise StoreError(
            f"the cancel of run {self.run_id!r} was not recorded: the store did not take the "
            f"canceled snapshot, and the run reads as {stored.status}"
            + (" with its cancel asked for" if system.shared is not None else "")
        )

    def _cancel_unreadable(
        self, system: ActorSystem, record: SnapshotRecord, exc: SnapshotFormatError
    ) -> bool:
        """Cancel a run nobody holds whose stored snapshot is damaged: it can never go on.

        It ends canceled, with the reason as its error and its bytes kept, as
        ``callboard runs cancel`` ends it, so that it can be deleted; its hooks are
        not called (there is nothing of the run to hand them).
        """
        error = ErrorInfo.from_exception(exc, run_id=self.run_id, with_traceback=False)
        canceled = stand_in_record(
            record, error.model_dump(), _clock.time(), keep_bytes=True, status="canceled"
        )
        if not system.store.replace(canceled, record.seq):
            return False  # changed meanwhile, or (on a shared store) held by a worker
        system.record(canceled)
        return True

    def _load(self) -> SnapshotRecord | None:
        return self._host.load(self.run_id)

    def _through_outage(self, read: Callable[[], T], deadline: float | None) -> T:
        """``read()``, tried again while the store cannot be reached, until ``deadline``.

        For the calls that wait: a wait outlasts a server's restart as it
        outlasts a slow run. The pauses between tries grow to
        :data:`OUTAGE_PAUSE_MAX` seconds; a stopped runtime ends them.

        Raises:
            StoreUnavailableError: the last try's, once ``deadline`` passed.
        """
        pause = OUTAGE_PAUSE_MIN
        while True:
            try:
                return read()
            except StoreUnavailableError:
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or self._host.state != "running":
                    raise
                time.sleep(pause if left is None else min(pause, left))
                pause = min(pause * 2, OUTAGE_PAUSE_MAX)

    async def _through_outage_async(
        self, read: Callable[[], T], outage: list[StoreUnavailableError]
    ) -> T:
        """:meth:`_through_outage` on the caller's loop, until cancelled (its timeout).

        ``outage`` holds the last try's error while the store cannot be reached.
        """
        pause = OUTAGE_PAUSE_MIN
        while True:
            try:
                value = await self._host.call(read)
            except StoreUnavailableError as exc:
                if self._host.state != "running":
                    raise
                outage[:] = [exc]
                await asyncio.sleep(pause)
                pause = min(pause * 2, OUTAGE_PAUSE_MAX)
                continue
            outage.clear()
            return value

    def _started_record(self) -> SnapshotRecord:
        record = self._host.load(self.run_id)
        if record is not None and record.workflow_id != self.workflow_id:
            raise RunNotStartedError(
                f"run {self.run_id!r} is a run of workflow {record.workflow_id!r}, "
                f"not of {self.workflow_id!r}",
                run_id=self.run_id,
            )
        if record is None:
            if not self._started:
                raise RunNotStartedError(
                    f"run {self.run_id!r} has not been started (no run has this id): call "
                    "start_async() or start() on it first",
                    run_id=self.run_id,
                )
            raise _deleted(self.run_id)
        return record

    def _refuse_inside_itself(self, what: str) -> None:
        """Refuse a wait for this run inside one of its own steps or hooks, which it would outlast.

        Raises:
            BlockingCallError: if the caller runs one of them.
        """
        if served_run() == self.run_id:
            raise BlockingCallError(
                f"run {self.run_id!r}: {what} inside one of its own steps or hooks, and would "
                "wait for ever: the run ends only once that step or hook has returned",
                run_id=self.run_id,
            )

    def _refuse_on_step_loop(self, call: str) -> None:
        """Refuse a blocking ``call`` on the loop of the runtime's async steps, which it would stop.

        Raises:
            BlockingCallError: if the caller runs on that loop.
        """
        if self._host.on_step_loop():
            a_twin = {"wait": "wait_async"}.get(call, f"a{call}")
            raise BlockingCallError(
                f"run {self.run_id!r}: {call}() blocks until the run ends, and was called on "
                "the event loop that runs this runtime's async steps (inside an async def "
                "step, say): it would stop that loop, which the run may need in order to "
                f"end; await run.{a_twin}() instead",
                run_id=self.run_id,
            )

    def _unrecordable(self, record: SnapshotRecord | None) -> None:
        """Raise for a run that has not settled while the store refuses every write.

        Its end could not be recorded, and a wait would last until the store
        takes writes again, with nothing saying why: the caller is told.

        Raises:
            StoreUnavailableError: naming the store's refusal.
        """
        if record is not None and record.status not in SETTLED_STATUSES:
            why = self._host.writes_refused()
            if why is not None:
                raise _unrecordable(self.run_id, why)

    def _woken_early(self, record: SnapshotRecord | None) -> bool:
        """Whether a wait was woken while the run goes on and its end will be told: wait again.

        A wake-up names no record: the one that woke it may be older than what
        the wait had read (the commit of a suspension, told after a resume of
        that suspension was recorded). What the store reads now decides.
        """
        return (
            record is not None and record.status not in SETTLED_STATUSES and self._host.hears_runs()
        )

    def _resume_requested(self, record: SnapshotRecord | None) -> bool:
        """Whether the run reads suspended while a resume of it waits in a shared store.

        A resume of a suspension recorded while the run ran on, which a worker
        carries out: the run suspended before the worker took it, and runs again
        once the worker does. A wait goes on waiting.

        ``record`` was read before the store is asked for requests: a worker
        may have taken the last one in between (the run runs again, its request
        gone), so a record that changed since says "read again" too.
        """
        if record is None or record.status != RunStatus.SUSPENDED:
            return False
        host = self._host
        pending = host.resume_pending(self.run_id)
        if pending is None or pending:  # a store that takes no requests: the record is all
            return bool(pending)
        again = host.load(self.run_id)
        return again is not None and again.seq != record.seq

    async def _resume_requested_async(self, record: SnapshotRecord | None) -> bool:
        """:meth:`_resume_requested`, its read of the store on a call thread."""
        if record is None or record.status != RunStatus.SUSPENDED:
            return False  # the usual case: no read, no thread
        requested: bool = await self._host.call(self._resume_requested, record)
        return requested

    def _waited(self, record: SnapshotRecord | None) -> WorkflowResult[Out]:
        """The result a wait ends with: the run's, once it ended or suspended.

        Raises:
            RuntimeStoppedError: if the wait ended because the runtime stopped
                (or was stopped) while the run goes on in a durable store.
        """
        if record is not None and record.status not in SETTLED_STATUSES:
            raise RuntimeStoppedError(
                f"the runtime stopped while waiting for run {self.run_id!r}, which is "
                f"{record.status} in its store: a runtime on that store that registers "
                f"workflow {self.workflow_id!r} goes on with it (wait for it there)",
                run_id=self.run_id,
            )
        return self._result(record)

    def _result(self, record: SnapshotRecord | None) -> WorkflowResult[Out]:
        # A store in memory holds bytes this process encoded: read without the checks
        # against damage that bytes from a disk or a server get.
        result = read_result(record, self.workflow_id, own_bytes=self._host.in_memory)
        if result is None:  # gone between the wait and the read
            raise _deleted(self.run_id)
        return with_output_schema(result, self._plan.output_schema)


_SUBSCRIBE_PATIENCE = 5.0
"""Seconds ``resume_stream`` waits for the runtime to take its subscription."""

_FROM_NOW = -1
"""``from_seq`` for no past event (the registry's ``FROM_NOW``)."""


def _check_seq(seq: object) -> None:
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise TypeError(f"from_seq must be an int, got {type(seq).__name__}")
    if seq < 0:
        raise ValueError(f"from_seq must be 0 or more, got {seq}")


def _checked_resource_id(resource_id: object, run_id: str) -> str:
    try:
        return check_resource_id(resource_id)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"resource_id for run {run_id!r} is invalid: {exc}",
            field="resource_id",
            errors=[{"type": "string_type", "loc": (), "msg": str(exc)}],
            run_id=run_id,
        ) from exc


_RESTARTABLE = frozenset({RunStatus.FAILED, RunStatus.CANCELED})


def _not_restartable(run_id: str, status: str) -> RunNotRestartableError:
    why = (
        "it succeeded: nothing is left to run"
        if status == RunStatus.SUCCESS
        else "it has not ended (a suspended run takes a resume)"
    )
    return RunNotRestartableError(
        f"run {run_id!r} is {status}; only a failed or canceled run can be restarted: {why}",
        status=status,
        run_id=run_id,
    )


def _not_resumable(snapshot: Snapshot, per_item: Container[str] = frozenset()) -> WorkflowError:
    """Why a run read not suspended cannot be resumed: another resume took it, or none did.

    ``per_item``: the paths of the steps a ``foreach`` runs (see :func:`_suspensions`).
    """
    run_id, status = snapshot["run_id"], snapshot["status"]
    if snapshot.get("resumed"):
        if status in TERMINAL_STATUSES and _suspensions(snapshot, per_item) > 1:
            # An ended run keeps no note of which of its suspensions were resumed: the one
            # named may be the one a resume took, or one that still waited at the end.
            return ResumeConflictError(
                f"run {run_id!r} has ended (it is {status}) since one of its suspensions was "
                "resumed: the suspension named was resumed by another call, or still waited "
                "when the run ended; this resume changed nothing",
                status=status,
                run_id=run_id,
            )
        return _resume_conflict(run_id, status, _still_waiting(snapshot))
    error = snapshot["error"]
    if error and error.get("name") == "RunDeadlineError":
        # Canceled at its deadline, or being canceled: its end hooks are under way (it
        # reads running until they are done), and it ends canceled all the same.
        state = "canceled" if status == RunStatus.CANCELED else "being canceled"
        return RunNotSuspendedError(
            f"run {run_id!r} is {state}: {error.get('message')}; only a suspended run can "
            "be resumed",
            status=status,
            run_id=run_id,
        )
    return RunNotSuspendedError(
        f"run {run_id!r} is {status}; only a suspended run can be resumed",
        status=status,
        run_id=run_id,
    )


def _resume_lost(
    run_id: str, current: SnapshotRecord | None, per_item: Container[str] = frozenset()
) -> WorkflowError:
    """Why the store refused a resume of a run read suspended, read again as ``current``.

    For a ``current`` that did not change since (the store refused it unchanged: a
    resume request of that suspension waits), or that cannot be resumed now.
    ``per_item``: as for :func:`_not_resumable`.
    """
    if current is None:
        return _deleted(run_id)
    snapshot = decode(current.data, current.run_id)
    if snapshot["status"] == RunStatus.SUSPENDED:
        # Only a resume changes a suspended run and leaves it suspended (once the
        # resumed step suspends again): that resume won.
        return _resume_conflict(run_id, snapshot["status"], _still_waiting(snapshot))
    return _not_resumable(snapshot, per_item)


def _past_deadline(snapshot: Snapshot) -> bool:
    """Whether the run's ``run_timeout`` is up (it has one, and began to execute)."""
    deadline = run_deadline(snapshot)
    return deadline is not None and deadline <= _clock.time()


def _suspensions(snapshot: Snapshot, per_item: Container[str]) -> int:
    """How many suspensions the run's step records show: a foreach's items each count.

    ``per_item``: the paths of the steps a ``foreach`` runs, whose ``suspend_payload``
    holds each suspended item's payload by its index.
    """
    count = 0
    for path, step in snapshot["steps"].items():
        payload = step.get("suspend_payload")
        if payload is not None:
            count += len(payload) if path in per_item and type(payload) is dict else 1
    return count


def _not_waiting(
    snapshot: Snapshot,
    step: Any,
    run_id: str,
    for_each_index: int | None,
    per_item: Container[str] = frozenset(),
) -> WorkflowError:
    """Why a resume of a run none of whose suspensions waits is refused.

    As :func:`_not_resumable` says, but for a resume of a running run that names a
    step whose records show no suspension: nobody resumed it, so it is not "already
    resumed by another call" but not suspended (``ResumeTargetError``), as it is
    while the run is suspended.

    ``per_item``: as for :func:`_not_resumable`.
    """
    if snapshot["status"] == RunStatus.RUNNING and snapshot.get("resumed"):
        never = _never_suspended(snapshot, step, run_id, for_each_index)
        if never is not None:
            return never
    return _not_resumable(snapshot, per_item)


def _never_suspended(
    snapshot: Snapshot, step: Any, run_id: str, for_each_index: int | None
) -> ResumeTargetError | None:
    """The refusal of a resume of a running run that names none of its suspensions.

    What it names has not suspended, as the run's records show: a step after the
    one resumed, or in a nested workflow of a ``parallel`` or ``branch`` after the
    one running (they run one after another), or none of the run's steps. ``None``
    if it may name a suspension a resume took (then another came first), or names
    nothing: a nested workflow a loop or a foreach is going round again has no
    records of its earlier passes, which may have suspended at the name.
    """
    from runtime._workflow import Workflow  # here: it imports this module

    if isinstance(step, Step | Workflow):
        name = step.id
    elif isinstance(step, str):
        name = step
    else:
        return None  # none named (the only one: taken), or not a name at all
    if any(key.endswith((EACH_SCOPE, LOOP_SCOPE)) for key in snapshot.get("scopes") or {}):
        return None
    named = [(key, *split_item_path(key)) for key in _suspended_since(snapshot)]
    if for_each_index is not None:
        named = [entry for entry in named if entry[2] == for_each_index]
    if _matching(name, named):
        return None
    where = "" if for_each_index is None else f" at item {for_each_index}"
    return ResumeTargetError(
        f"run {run_id!r} is running: step {name!r} is not suspended{where} and has not "
        "suspended (none of the run's suspensions waits now); a step that suspends later "
        "is resumed once the run has suspended there (wait() returns then): the nested "
        "workflows of a parallel or branch, and a foreach's items over a nested workflow, "
        "run one after another, each once the one before it has ended",
        suspended=[],
        run_id=run_id,
        step_id=name,
    )


def _suspended_since(snapshot: Snapshot) -> dict[str, None]:
    """The suspensions the run's records show: waiting, or taken by a resume.

    A resume takes its suspension out of ``"suspended"``, and out of ``"resume"``
    once its step begins (a foreach item's, once it ends), but the step's record
    keeps its ``suspend_payload`` (a foreach's record, its items' by index). A
    record of a loop's later pass (``iterations`` over 1) counts too: its earlier
    pass may have suspended, and its record is new.
    """
    seen: dict[str, None] = dict.fromkeys(snapshot.get("resume") or {})
    seen.update(dict.fromkeys(snapshot["suspended"]))
    for path, record in snapshot["steps"].items():
        payload = record.get("suspend_payload")
        if type(payload) is dict and payload and all(_is_index(key) for key in payload):
            seen.update(dict.fromkeys(item_path(path, int(key)) for key in payload))
        elif payload is not None or (record.get("iterations") or 0) > 1:
            seen[path] = None
    return seen


def _is_index(key: object) -> bool:
    """Whether ``key`` is a foreach item's index as its step's ``suspend_payload`` holds it."""
    return type(key) is str and key.isdigit() and key.isascii()


def _still_waiting(snapshot: Snapshot) -> list[str]:
    """The run's suspensions no resume has taken yet.

    A resume recorded but not yet begun is in ``"resume"``, and its step stays in
    ``"suspended"`` until its step starts.
    """
    taken = snapshot.get("resume") or {}
    return sorted(path for path in snapshot.get("suspended") or {} if path not in taken)


def _waiting_target(snapshot: Snapshot, step: Any, run_id: str, for_each_index: int | None) -> str:
    """The suspension a resume of a running run names, among those no resume took yet.

    Raises:
        ResumeConflictError: if it names one that another resume took.
        ResumeTargetError: if it names none that waits (or several, or none was
            named and several wait).
        RunNotSuspendedError: if none waits, and none was ever resumed.
    """
    waiting = _still_waiting(snapshot)
    if not waiting:
        raise _not_waiting(snapshot, step, run_id, for_each_index)
    suspended = snapshot["suspended"]
    view = cast(Snapshot, {**snapshot, "suspended": {path: suspended[path] for path in waiting}})
    try:
        return _resume_target(view, step, run_id, for_each_index)
    except ResumeTargetError as among_waiting:
        # Named one of the run's suspensions that a resume took (its step may have
        # begun since, or ended: it is then in neither "suspended" nor "resume", but
        # its record says it suspended): another resume came first. Naming none of
        # them (or several) is the caller's mistake.
        every = cast(Snapshot, {**snapshot, "suspended": _suspended_since(snapshot)})
        try:
            _resume_target(every, step, run_id, for_each_index)
        except ResumeTargetError:
            raise among_waiting from None
        raise _resume_conflict(run_id, snapshot["status"], waiting) from None


def _resumed_record(snapshot: Snapshot, path: str, data: Any) -> SnapshotRecord:
    """The record of a suspended run resumed at ``path`` with ``data`` (``snapshot`` becomes it)."""
    snapshot["status"] = RunStatus.RUNNING.value
    snapshot["resume"] = {path: data}
    snapshot["resumed"] = True  # what tells a later resume that this one won
    # Taken: on a shared store the compare-and-set is refused while a resume request
    # (recorded while the run ran) waits for this suspension.
    return next_record(snapshot, _clock.time())._replace(taken=(path,))


def _same_suspension(read: int | None, snapshot: Snapshot, path: str) -> int:
    """The seq of the record a resume of ``path`` first read it waiting in, given the run now.

    A resume reads its run again when the run changed under it; the suspension at
    ``path`` it finds then is the one it first read only if that suspension's id
    is not past the first read's seq (see :func:`~runtime._snapshot.suspension_of`).
    ``read`` is that first read's seq (``None``: ``snapshot`` is the first read).

    Raises:
        ResumeConflictError: if another resume took the suspension first read, and
            ``path`` has suspended again since.
    """
    if read is None:
        return snapshot["seq"]
    if read_another(snapshot, path, read):
        status = snapshot["status"]
        raise ResumeConflictError(
            f"run {snapshot['run_id']!r} is {status}: the suspension of {path!r} this "
            f"resume read was resumed by another call, and {path!r} has suspended again "
            "since (resume that one with what it asks now); this resume changed nothing",
            status=status,
            run_id=snapshot["run_id"],
        )
    return read


def _driven_elsewhere(run_id: str, path: str) -> ResumeConflictError:
    return ResumeConflictError(
        f"run {run_id!r} is running, and no actor of this runtime drives it (it waits for "
        f"room to run here): {path!r} is resumed once the run has suspended again (wait() "
        "returns then); this resume changed nothing",
        status=RunStatus.RUNNING.value,
        run_id=run_id,
    )


def _resume_conflict(
    run_id: str, status: str, waiting: list[str] | None = None
) -> ResumeConflictError:
    if waiting:
        # Another of its suspensions was resumed, not one of those that wait: a foreach's
        # other item, a parallel's other member.
        return ResumeConflictError(
            f"run {run_id!r} is {status}: the suspension named was already resumed by "
            f"another call; {', '.join(repr(path) for path in waiting)} still wait, and "
            "each can be resumed now; this resume changed nothing",
            status=status,
            run_id=run_id,
        )
    return ResumeConflictError(
        f"run {run_id!r} was already resumed by another call (it is {status} now); "
        "this resume changed nothing",
        status=status,
        run_id=run_id,
    )


def _deleted(run_id: str) -> RunDeletedError:
    return RunDeletedError(
        f"run {run_id!r} has no record any more: it ended and was deleted, or pruned by "
        "the runtime's retention policy",
        run_id=run_id,
    )


_SUSPENDED: Final = RunStatus.SUSPENDED.value  # read once: an enum's .value is a property

_REQUESTED_PAUSE = 0.05
"""Seconds between two reads of a suspended run a wait finds a resume request of (see wait)."""

FIRST_READ_PATIENCE = 0.25
"""Seconds a ``wait_async`` with a shorter timeout gives its first read to get a call thread.

Time enough for an idle call thread to take it on a busy machine, so that
``wait_async(0)`` of a run that has ended returns it, as ``wait(0)`` does.
"""

_SETTLE_PATIENCE = 5.0
"""Seconds a resume that found the run's actor gone waits for the run to settle, then reads it."""

CANCEL_PATIENCE = 5.0
"""Seconds ``cancel()`` keeps trying to reach the actor of a run that is between two hands."""

REMOTE_CANCEL_PATIENCE = 60.0
"""Seconds ``cancel()`` waits for the worker holding a run (on a shared store) to cancel it."""

CANCELS_ASKED_KEPT = 10_000
"""How many runs whose cancel it asked another process for a runtime remembers."""

OUTAGE_PAUSE_MIN = 0.05
OUTAGE_PAUSE_MAX = 1.0
"""Seconds between two reads of a wait while its store cannot be reached: doubling, to this."""


class RunWatch:
    """The events of one run, for ``for`` and ``async for``; see :meth:`Run.watch`.

    A watch holds a subscription in the runtime until the run ends. Close it
    when you are done before then (``close()``, or use it as a context
    manager, ``with`` or ``async with``); a watch that is dropped without a
    close is closed when it is garbage-collected::

        with run.watch() as events:
            for event in events:
                if event.type == "step_finished":
                    break

    A watch that falls far behind (``SUBSCRIBER_BUFFER`` events queued and
    not taken) is cut off by the runtime, which would otherwise queue events
    for it without bound; it then subscribes again from the last event it
    took, transparently, and the runtime replays what its log still holds.
    """

    def __init__(self, run_id: str, timeout: float | None, from_seq: int | None = None) -> None:
        self.run_id = run_id
        self._timeout = timeout
        self._channel: EventChannel[RunEvent] = EventChannel()
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._closed = False
        self._host: RunHost | None = None
        self._last_seq = from_seq
        self._ended = False  # whether the run had ended when watched: its events are all told
        self._status = ""  # the run's status as last told (or read when watched); "": unknown
        # Told by the store once it has refused every write too long (see _heard), and the
        # call that stops telling it: a run not settled cannot go on, nor end, meanwhile.
        self._ear: _Ear | None = None
        self._stop_hearing: Callable[[], None] | None = None

    @property
    def last_seq(self) -> int | None:
        """The number of the last event taken (or the ``from_seq`` it started after)."""
        return self._last_seq

    def _attach(self, host: RunHost, *, wait: bool = False) -> None:
        """Subscribe on ``host``; unsubscribe at :meth:`close`, or once this watch is dropped.

        With ``wait``, return once the runtime has taken the subscription, so that
        whatever the caller does next to the run is told to this watch.
        """
        self._host = host
        if not self._ended:
            # The ear closes the channel it has (to wake the reader): the new one, from
            # before the runtime can tell it anything.
            if self._ear is None:
                self._ear = _Ear(self._channel)
                self._stop_hearing = host.listen_for_refusal(self._ear)
            else:
                self._ear.channel = self._channel
                self._ear.told = False
        subscribed = Latch() if wait else None
        host.subscribe(self.run_id, self._channel, self._last_seq, subscribed)
        if subscribed is not None:
            subscribed.wait(_SUBSCRIBE_PATIENCE)
        # The finalizer holds the channel, the host and the ear's stop, never the watch.
        finalizer = weakref.finalize(
            self, _unsubscribe, host, self.run_id, self._channel, self._stop_hearing
        )
        finalizer.atexit = False
        self._finalizer = finalizer

    def _lagged(self) -> bool:
        """Whether the runtime cut this watch off for lagging; if so, subscribe again."""
        if self._closed or not self._channel.lagged or self._host is None:
            return False
        if self._finalizer is not None:
            self._finalizer.detach()  # the runtime forgot that channel already
        self._channel = EventChannel()
        self._attach(self._host)
        return True

    def _heard(self) -> bool:
        """Whether the store's refusal closed the channel (see :class:`_Ear`): subscribe anew.

        The runtime forgets the closed channel, and the new one is told the events
        after the last one taken: the watch goes on where it was, once the refusal
        is said (:meth:`_check_recordable`) or has ended.
        """
        ear, host = self._ear, self._host
        if self._closed or ear is None or not ear.told or host is None:
            return False
        if self._finalizer is not None:
            self._finalizer.detach()  # it would stop the ear too, which hears on
        _unsubscribe(host, self.run_id, self._channel)
        self._channel = EventChannel()
        self._attach(host)
        return True

    def _check_recordable(self) -> None:
        """Before waiting for an event: raise if the run cannot go on, its store refusing writes.

        A run that has not settled holds where it is while its store refuses every
        write, and a watch would wait for its next event in silence. Once the
        refusal outlasted the store's patience (when ``wait()`` raises too), it is
        said instead; events already come are told first. Not a read of the store:
        what its writer has found.

        Raises:
            StoreUnavailableError: naming the store's refusal.
        """
        host = self._host
        if (
            self._ended
            or host is None
            or self._status in SETTLED_STATUSES
            or self._channel.closed
            or len(self._channel)
        ):
            return
        why = host.writes_refused()
        if why is not None:
            raise _unrecordable(self.run_id, why)

    def _stop_listening(self) -> None:
        """The run's events have all been told: the store need not tell this watch of refusals."""
        stop, self._stop_hearing = self._stop_hearing, None
        if stop is not None:
            stop()

    def _took(self, event: RunEvent) -> RunEvent:
        """Note an event taken: its number, and the run's status if it tells one."""
        self._last_seq = event.seq
        if event.type == "status":
            self._status = event.status
        return event

    def _check_not_stopped(self) -> None:
        """At the end of the events: raise if the runtime's stop ended them, not the run.

        Raises:
            RuntimeStoppedError: if the runtime stopped (or was stopped) before
                the run ended; the run goes on in a durable store.
        """
        if self._closed or not self._channel.stopped:
            return
        self._closed = True  # told once; a next ``next()`` ends the iteration
        raise RuntimeStoppedError(
            f"the runtime stopped while watching run {self.run_id!r}, which had not ended: "
            "these are its events so far; on a durable store, a runtime that registers its "
            "workflow goes on with it (watch it there)",
            run_id=self.run_id,
        )

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def queued(self) -> int:
        """How many events have come and wait to be taken."""
        return len(self._channel)

    def close(self) -> None:
        """Stop watching: the iteration ends, and the runtime forgets this watch.

        Events not yet taken are dropped. Closing a closed watch does nothing.
        """
        self._closed = True
        finalizer = self._finalizer
        if finalizer is not None:
            finalizer()
        else:
            self._channel.close()

    def __enter__(self) -> RunWatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> RunWatch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> RunWatch:
        return self

    def __next__(self) -> RunEvent:
        if not self._ended and self._host is not None and self._host.on_step_loop():
            raise BlockingCallError(
                f"run {self.run_id!r}: a for loop over its watch blocks until each next event, "
                "and runs on the event loop that runs this runtime's async steps (inside an "
                "async def step, or on the app's loop with async_steps='app'): it would stop "
                "that loop, which the run may need in order to go on; use async for instead",
                run_id=self.run_id,
            )
        event = self._next_within(self._timeout)
        if event is None:
            raise self._timed_out()
        return event

    def __aiter__(self) -> RunWatch:
        return self

    async def __anext__(self) -> RunEvent:
        event = await self._anext_within(self._timeout)
        if event is None:
            raise self._timed_out()
        return event

    def _next_within(self, timeout: float | None) -> RunEvent | None:
        """The next event, or ``None`` if none came within ``timeout`` seconds.

        Raises:
            StopIteration: at the end of the events.
            RuntimeStoppedError: as :meth:`_check_not_stopped`.
            StoreUnavailableError: as :meth:`_check_recordable`.
        """
        while not self._closed:
            self._check_recordable()
            try:
                event = self._channel.get(timeout)
            except ChannelClosed:
                if self._lagged() or self._heard():
                    continue
                self._stop_listening()
                self._check_not_stopped()
                break
            except TimeoutError:
                return None
            return self._took(event)
        self._stop_listening()
        raise StopIteration

    async def _anext_within(self, timeout: float | None) -> RunEvent | None:
        """:meth:`_next_within`, awaited (``StopAsyncIteration`` at the end)."""
        while not self._closed:
            self._check_recordable()
            try:
                async with asyncio.timeout(timeout):  # None: as long as it takes
                    event = await self._channel.aget()
            except ChannelClosed:
                if self._lagged() or self._heard():
                    continue
                self._stop_listening()
                self._check_not_stopped()
                break
            except TimeoutError:
                return None
            return self._took(event)
        self._stop_listening()
        raise StopAsyncIteration

    def _timed_out(self) -> RunTimeoutError:
        return RunTimeoutError(
            f"no event from run {self.run_id!r} within {self._timeout} seconds",
            run_id=self.run_id,
        )

    def _look_timed_out(self) -> RunTimeoutError:
        """The error of a look at a suspension (see :meth:`_agoes_on`) no call thread took."""
        return _calls_held(
            self.run_id,
            "was told suspended, and whether a resume request waits could not be read",
            self._timeout,
        )

    def _goes_on(self) -> bool:
        """Whether the run, whose last event told it suspended, goes on rather than settles.

        As a wait judges it (see :meth:`Run.wait`): on a shared store a resume
        of the run may wait as a request, which the worker that drives it
        carries out soon; or a worker carried one out since the run suspended
        (the request gone, the record moved on), and what follows is told.
        ``False``, with no read, on a store that takes no requests; and if the
        runtime is not running or the store cannot be read (the suspension is
        then where a stream ends, as it was).
        """
        host = self._host
        if host is None or self._closed or host.state != "running":
            return False
        try:
            pending = host.resume_pending(self.run_id)
            if not pending:
                # Read after the requests: a worker takes a request and resumes the run
                # in one commit, so a request gone means a record moved on by now.
                record = None if pending is None else host.load(self.run_id)
                return record is not None and record.status != RunStatus.SUSPENDED
        except StoreError:
            return False
        return True

    async def _agoes_on(self, within: float | None = None) -> bool | None:
        """:meth:`_goes_on`, its reads on one of the runtime's call threads.

        Args:
            within: Seconds the look may wait for a call thread, which other
                calls may all hold (at least :data:`FIRST_READ_PATIENCE`);
                ``None``: as long as it takes.

        Returns:
            As :meth:`_goes_on`; ``None`` if no call thread took the look in
            time (it is never made).
        """
        host = self._host
        if host is None or self._closed or host.state != "running":
            return False
        if within is None:
            goes_on: bool = await host.call(self._goes_on)
            return goes_on
        return await host.call_within(self._goes_on, max(within, FIRST_READ_PATIENCE))


def _calls_held(run_id: str, what: str, timeout: float | None) -> RunTimeoutError:
    """The error of an awaitable call that no call thread took within its ``timeout``."""
    return RunTimeoutError(
        f"run {run_id!r} {what} within {timeout} seconds: other awaitable calls held every "
        "call thread of the runtime meanwhile",
        run_id=run_id,
    )


def _start_traced(
    host: RunHost,
    plan: ExecutionPlan,
    snapshot: Snapshot,
    queue: Queue | None,
    *,
    tracing_options: Any,
    scheduled: bool = False,
) -> None:
    """Record a new run and start it, inside its ``workflow_start`` span (if traced).

    Its first record is taken once the span gave the run its trace and span ids:
    taken before, it kept the ids made without the span, and a run that waited in
    a durable store's queue went on from it, in another trace.

    Raises:
        What ``first_record`` and ``host.start_run`` raise; the span ends failed with it.
    """
    tracer = _otel.tracer()
    span = None if tracer is None else start_span(tracer, snapshot, tracing_options)
    try:
        record = first_record(snapshot, in_memory=host.in_memory)
        host.start_run(plan, snapshot, record, queue, scheduled=scheduled)
    except BaseException as exc:
        if span is not None:
            end_span(span, "failed", exception=exc)
        raise
    if span is not None:
        end_span(span, "pending")


def _unsubscribe(
    host: RunHost,
    run_id: str,
    channel: Channel[RunEvent],
    stop_hearing: Callable[[], None] | None = None,
) -> None:
    """End a watch: close its channel, have the runtime forget it, and the store its ear."""
    channel.close()
    host.unsubscribe(run_id, channel)
    if stop_hearing is not None:
        stop_hearing()


class _Ear:
    """A watch's ear for its store's refusal: told, it closes the watch's channel.

    Called on the store's writer thread once the store has refused every write
    for its patience (see ``RunHost.listen_for_refusal``): the watch's reader,
    waiting for the next event of a run that cannot go on, wakes to say why
    (:meth:`RunWatch._heard`). It holds the channel, never the watch.
    """

    __slots__ = ("channel", "told")

    def __init__(self, channel: EventChannel[RunEvent]) -> None:
        self.channel = channel
        self.told = False

    def __call__(self, _why: str) -> None:
        self.told = True
        self.channel.close()


def _unrecordable(run_id: str, why: str) -> StoreUnavailableError:
    """The error of a wait or a watch on a run that cannot go on: its store refuses writes."""
    return StoreUnavailableError(
        f"run {run_id!r} has not ended, and cannot be recorded now: {why}", run_id=run_id
    )


def _resume_target(
    snapshot: Snapshot, step: Any, run_id: str, for_each_index: int | None = None
) -> str:
    """The name of the suspended step (or foreach item) a resume names, or the only one.

    A name is the suspended path itself; else a step id that ends a path; else
    a nested workflow's id, naming the steps suspended inside it. A foreach's
    suspended items are ``"path[index]"``, which ``for_each_index`` picks.
    """
    if for_each_index is not None and (
        isinstance(for_each_index, bool) or not isinstance(for_each_index, int)
    ):
        raise TypeError(f"for_each_index must be an int, got {type(for_each_index).__name__}")
    if for_each_index is not None and for_each_index < 0:
        raise ValueError(f"for_each_index must be 0 or more, got {for_each_index}")
    if for_each_index is not None and isinstance(step, Step | str):
        # A step and an item, as a resume of one item of a large foreach names them: what
        # the rules below find, without a pass over every suspension.
        name = step.id if isinstance(step, Step) else step
        key = item_path(name, for_each_index)
        if split_item_path(name)[1] is None and key in snapshot["suspended"]:
            return key
    suspended = list(snapshot["suspended"])
    named = [(key, *split_item_path(key)) for key in suspended]
    if for_each_index is not None:
        named = [entry for entry in named if entry[2] == for_each_index]
    if step is None:
        if len(named) == 1:
            return named[0][0]
        if for_each_index is None:
            message = (
                f"run {run_id!r} has {len(suspended)} suspended steps {suspended}: name the one "
                "to resume with step="
            )
        else:
            message = (
                f"run {run_id!r}: {len(named)} suspended items have the index {for_each_index} "
                f"(suspended: {suspended}); name the step with step="
            )
        raise ResumeTargetError(message, suspended=suspended, run_id=run_id)
    from runtime._workflow import Workflow  # here: it imports this module

    if isinstance(step, Step | Workflow):  # a nested workflow: the step suspended in it
        name = step.id
    elif isinstance(step, str):
        name = step
    else:
        raise TypeError(f"step must be a Step, a Workflow or a str, got {type(step).__name__}")
    matches = _matching(name, named)
    if len(matches) == 1:
        return matches[0]
    if matches:
        items = any(split_item_path(match)[1] is not None for match in matches)
        raise ResumeTargetError(
            f"run {run_id!r}: {name!r} names several suspended steps {matches}; use a full "
            f"path{' or for_each_index=' if items else ''}",
            suspended=suspended,
            run_id=run_id,
            step_id=name,
        )
    where = "" if for_each_index is None else f" at item {for_each_index}"
    raise ResumeTargetError(
        f"run {run_id!r}: step {name!r} is not suspended{where} (suspended: {suspended})",
        suspended=suspended,
        run_id=run_id,
        step_id=name,
    )


def _matching(name: str, named: list[tuple[str, str, int | None]]) -> list[str]:
    """The suspensions a name picks among ``named`` (each ``(name, step path, item)``).

    The suspension's name itself; else a step's path; else a step id that ends
    a path; else a nested workflow's id, picking the steps suspended inside it.
    """
    matches = [key for key, _, _ in named if key == name]
    if not matches:
        matches = [key for key, base, _ in named if base == name]
    if not matches:
        matches = [key for key, base, _ in named if base.endswith("." + name)]
    if not matches:  # a nested workflow: the suspended steps inside it
        inside = "." + name + "."
        matches = [key for key, base, _ in named if inside in "." + base]
    return matches
