"""``Run``: one execution of a workflow, started in the background and read by id."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from runtime._errors import (
    CancelError,
    ResumeConflictError,
    ResumeTargetError,
    RunAlreadyStartedError,
    RunDeletedError,
    RunNotStartedError,
    RunNotSuspendedError,
    RunTimeoutError,
    StoreError,
    WorkflowError,
)
from runtime._model import (
    SETTLED_STATUSES,
    TERMINAL_STATUSES,
    RunEvent,
    RunStatus,
    StartAsyncResult,
    WorkflowResult,
)
from runtime._options import OutputOptions, TracingOptions
from runtime._request_context import RequestContext
from runtime._run_input import (
    check_idempotency_key,
    first_record,
    pending_snapshot,
    validated_resume_data,
)
from runtime._snapshot import (
    Snapshot,
    canceled_record,
    decode,
    next_record,
    read_result,
)
from runtime._step import Step
from runtime._stores.base import SharedStore, SnapshotRecord
from runtime._sync import Channel, ChannelClosed, Latch

if TYPE_CHECKING:
    from actors.system import ActorSystem
    from runtime._plan import ExecutionPlan
    from runtime._runtime import RunHost

__all__ = ["Run", "RunWatch"]

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)


class Run(Generic[In, Out]):
    """One execution of a workflow. Create it with ``workflow.create_run()``.

    Attributes:
        run_id: The run's id: what ``start_async`` returns and queries take.
        workflow_id: The id of the run's workflow.
    """

    __slots__ = ("_host", "_lock", "_plan", "_started", "run_id", "workflow_id")

    def __init__(self, plan: ExecutionPlan, host: RunHost, run_id: str) -> None:
        self._plan = plan
        self._host = host
        self._lock = threading.Lock()
        self._started = False
        self.run_id = run_id
        self.workflow_id = plan.workflow_id

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
        idempotency_key: str | None = None,
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
            idempotency_key: A key (a non-empty ``str`` of at most 512
                characters) that makes a repeated start of the same work
                return the first run's id instead of starting another run.
                Keys are scoped to the workflow.

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
            RuntimeStoppedError: if the runtime is not running.
            TypeError: if ``idempotency_key`` is not a ``str``.
            ValueError: if ``idempotency_key`` is empty or too long.
        """
        return self._start(
            input_data=input_data,
            request_context=request_context,
            initial_state=initial_state,
            tracing_options=tracing_options,
            output_options=output_options,
            idempotency_key=idempotency_key,
        )

    def _start(
        self,
        *,
        input_data: Any,
        request_context: Any,
        initial_state: Any = None,
        tracing_options: Any = None,
        output_options: Any = None,
        idempotency_key: str | None = None,
        scheduled: bool = False,
    ) -> StartAsyncResult:
        """:meth:`start_async`, also for the runtime's scheduler (which a worker runs too)."""
        key = None if idempotency_key is None else check_idempotency_key(idempotency_key)
        with self._lock:
            if self._started:
                raise RunAlreadyStartedError(
                    f"run {self.run_id!r} was already started; create a new run with "
                    "workflow.create_run()",
                    run_id=self.run_id,
                )
            plan, run_id, host = self._plan, self.run_id, self._host
            host.running()
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
                idempotency_key=key,
            )
            try:
                host.start_run(plan, snapshot, first_record(snapshot), scheduled=scheduled)
            except RunAlreadyStartedError:
                # Another start with the same key may have won the race since the look-up.
                first = None if key is None else host.run_for_key(plan.workflow_id, key)
                if first is None:
                    raise
                return self._follow(first)
            self._started = True
        return StartAsyncResult(run_id=run_id)

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
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> WorkflowResult:
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
            idempotency_key: As :meth:`start_async`.
            timeout: Seconds to wait for the run to end; ``None`` waits as long as it takes.

        Raises:
            InvalidInputError: as :meth:`start_async`.
            RunAlreadyStartedError: as :meth:`start_async`.
            RuntimeOverloadedError: as :meth:`start_async`.
            RuntimeStoppedError: as :meth:`start_async`.
            RunTimeoutError: if ``timeout`` passed first (the run goes on).
        """
        self.start_async(
            input_data=input_data,
            request_context=request_context,
            initial_state=initial_state,
            tracing_options=tracing_options,
            output_options=output_options,
            idempotency_key=idempotency_key,
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
        idempotency_key: str | None = None,
    ) -> StartAsyncResult:
        """Await :meth:`start_async` without blocking the event loop.

        Same arguments, result and errors. The validation and the store's
        commit run on one of the runtime's call threads. Cancelling the
        awaiting task does not undo a start already on its way: the run may
        still be recorded and run.
        """
        return await self._host.call(
            self.start_async,
            input_data=input_data,
            request_context=request_context,
            initial_state=initial_state,
            tracing_options=tracing_options,
            output_options=output_options,
            idempotency_key=idempotency_key,
        )

    async def astart(
        self,
        *,
        input_data: In | Mapping[str, Any] | None = None,
        request_context: RequestContext | Mapping[str, Any] | None = None,
        initial_state: BaseModel | Mapping[str, Any] | None = None,
        tracing_options: TracingOptions | Mapping[str, Any] | None = None,
        output_options: OutputOptions | Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> WorkflowResult:
        """Await :meth:`start` without blocking the event loop: start, then await the end.

        Same arguments, result and errors as :meth:`start`.
        """
        await self.astart_async(
            input_data=input_data,
            request_context=request_context,
            initial_state=initial_state,
            tracing_options=tracing_options,
            output_options=output_options,
            idempotency_key=idempotency_key,
        )
        return await self.wait_async(timeout)

    def wait(self, timeout: float | None = None) -> WorkflowResult:
        """Block until the run ends or suspends, and return its result.

        A ``waiting`` run (asleep) is waited for; a ``suspended`` one is
        returned as it is, since only a resume moves it on.

        Args:
            timeout: Seconds to wait; ``None`` waits as long as it takes.

        Raises:
            RunNotStartedError: if the run was never started.
            RunDeletedError: if the run ended and its record was deleted or pruned.
            RunTimeoutError: if ``timeout`` passed first (the run goes on).
        """
        record = self._started_record()
        if record.status not in SETTLED_STATUSES:
            if not self._host.watch(self.run_id).wait(timeout):
                raise RunTimeoutError(
                    f"run {self.run_id!r} did not end within {timeout} seconds; it goes on",
                    run_id=self.run_id,
                )
            return self._result(self._host.load(self.run_id))
        return self._result(record)

    async def wait_async(self, timeout: float | None = None) -> WorkflowResult:
        """Await the end (or suspension) of the run without blocking the event loop.

        The awaitable twin of :meth:`wait` (``await`` being a keyword, it keeps
        this name). Cancelling the wait leaves the run going.

        Args:
            timeout: Seconds to wait; ``None`` waits as long as it takes.

        Raises:
            RunNotStartedError: if the run was never started.
            RunDeletedError: if the run ended and its record was deleted or pruned.
            RunTimeoutError: if ``timeout`` passed first (the run goes on).
        """
        if timeout is None:
            return await self._settled()
        try:
            return await asyncio.wait_for(self._settled(), timeout)
        except TimeoutError:
            raise RunTimeoutError(
                f"run {self.run_id!r} did not end within {timeout} seconds; it goes on",
                run_id=self.run_id,
            ) from None

    async def _settled(self) -> WorkflowResult:
        host = self._host
        record: SnapshotRecord | None = await host.call(self._started_record)
        assert record is not None
        if record.status not in SETTLED_STATUSES:
            latch = Latch()
            host.watch(self.run_id, latch)
            await latch.wait_async()
            record = await host.call(host.load, self.run_id)
        return self._result(record)

    def watch(self, timeout: float | None = None) -> RunWatch:
        """The run's events as the registry receives them, ending when the run ends.

        Iterate with ``for`` or ``async for``: first the events so far (each
        step started or finished, each status), then each as it happens::

            for event in run.watch():
                print(event.type, event.path, event.status)

        A run that suspends is still watched (a resume goes on with it); one
        that has already ended yields its events and stops.

        Args:
            timeout: For ``for``: seconds to wait for each next event before
                ``RunTimeoutError``; ``None`` waits as long as it takes.

        Raises:
            RunNotStartedError: if the run was never started.
            SnapshotFormatError: if the run has ended and its stored snapshot
                cannot be read: there are no events to tell.
        """
        record = self._started_record()
        if record.status in TERMINAL_STATUSES:
            read_result(record, self.workflow_id)  # raises for a damaged snapshot
        watch = RunWatch(self.run_id, timeout)
        self._host.subscribe(self.run_id, watch._channel)
        watch._attach(self._host)
        return watch

    async def awatch(self, timeout: float | None = None) -> RunWatch:
        """Await :meth:`watch` without blocking the event loop (it reads the store).

        Same arguments, result and errors; iterate the watch with ``async for``.
        """
        return await self._host.call(self.watch, timeout)

    def resume(
        self,
        *,
        step: Step[Any, Any] | str | None = None,
        resume_data: BaseModel | Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> WorkflowResult:
        """Resume a suspended run and block until it ends or suspends again.

        Same arguments and errors as :meth:`resume_async`, plus:

        Args:
            step: As :meth:`resume_async`.
            resume_data: As :meth:`resume_async`.
            timeout: Seconds to wait; ``None`` waits as long as it takes.

        Raises:
            RunTimeoutError: if ``timeout`` passed first (the run goes on).
        """
        self.resume_async(step=step, resume_data=resume_data)
        return self.wait(timeout)

    def resume_async(
        self,
        *,
        step: Step[Any, Any] | str | None = None,
        resume_data: BaseModel | Mapping[str, Any] | None = None,
    ) -> StartAsyncResult:
        """Resume a suspended run in the background and return at once.

        The suspended step is called again from its start, with the same
        input and ``ctx.resume_data`` set; the steps after it run once.
        When this returns the resume is recorded (committed, on a durable
        store): a query reads the run as ``running``, and if the process dies
        now the next runtime on the store finishes the run.

        When two resumes of the same run race, exactly one wins and the
        other raises ``ResumeConflictError``, whenever it read the run: before
        the winner's resume was recorded, or after it (the run going on, or
        ended). ``RunNotSuspendedError`` is for a run that is not suspended
        and whose suspension nobody resumed: it never suspended, or was
        cancelled while suspended (so a resume that loses to a cancel gets it).

        Args:
            step: The suspended step to resume: a :class:`Step`, its id, or
                its path (``"child.step"``); may be left out when only one
                step is suspended.
            resume_data: Handed to the step as ``ctx.resume_data``, validated
                by its ``resume_schema``.

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
            ResumeConflictError: if another resume of the run's suspension was
                recorded first (``.status`` says where the run is now).
            RunDeletedError: if the run's record was deleted meanwhile.
            RuntimeStoppedError: if the runtime is not running.
        """
        system = self._host.running()
        record = self._started_record()
        snapshot = decode(record.data, record.run_id)
        if snapshot["status"] != RunStatus.SUSPENDED:
            raise _not_resumable(snapshot)
        path = _resume_target(snapshot, step, self.run_id)
        definition = self._plan.by_id[path]
        data = validated_resume_data(definition, resume_data, path, self.run_id)
        snapshot["status"] = RunStatus.RUNNING.value
        snapshot["resume"] = {path: data}
        snapshot["resumed"] = True  # what tells a later resume that this one won
        resumed = next_record(snapshot, time.time())
        # The compare-and-set decides between racing resumes (and cancels); it is
        # committed when it returns, so the resume is acknowledged only once durable.
        if not system.resume(self._plan, snapshot, resumed, record.seq):
            raise self._resume_lost()
        return StartAsyncResult(run_id=self.run_id)

    async def aresume_async(
        self,
        *,
        step: Step[Any, Any] | str | None = None,
        resume_data: BaseModel | Mapping[str, Any] | None = None,
    ) -> StartAsyncResult:
        """Await :meth:`resume_async` without blocking the event loop.

        Same arguments, result and errors; the compare-and-set and its commit
        run on one of the runtime's call threads.
        """
        return await self._host.call(self.resume_async, step=step, resume_data=resume_data)

    async def aresume(
        self,
        *,
        step: Step[Any, Any] | str | None = None,
        resume_data: BaseModel | Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> WorkflowResult:
        """Await :meth:`resume` without blocking the event loop: resume, then await the end.

        Same arguments, result and errors as :meth:`resume`.
        """
        await self.aresume_async(step=step, resume_data=resume_data)
        return await self.wait_async(timeout)

    def _resume_lost(self) -> WorkflowError:
        """Why the store refused a resume of the run read suspended: what changed it since."""
        current = self._host.load(self.run_id)
        if current is None:
            return _deleted(self.run_id)
        snapshot = decode(current.data, current.run_id)
        if snapshot["status"] == RunStatus.SUSPENDED:
            # Only a resume changes a suspended run and leaves it suspended (once the
            # resumed step suspends again): that resume won.
            return _resume_conflict(self.run_id, snapshot["status"])
        return _not_resumable(snapshot)

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
        is recorded after them.

        Returns:
            ``True`` if this call cancelled the run; ``False`` if it had already
            ended (``success``, ``failed`` or ``canceled``), which changes nothing.

        Raises:
            RunNotStartedError: if the run was never started.
            CancelError: if another process holds the run and did not carry out
                the cancel within :data:`REMOTE_CANCEL_PATIENCE` seconds (the
                cancel stays asked for).
            StoreError: if the store refused the canceled snapshot: the cancel is
                not recorded (the run's actor has stopped, but its record
                still reads as before, and a runtime that recovers it runs it on).
            RuntimeStoppedError: if the runtime is not running, or stopped
                before the cancel was recorded.
        """
        system = self._host.running()
        deadline = time.monotonic() + CANCEL_PATIENCE
        while True:
            record = self._started_record()
            if record.status in TERMINAL_STATUSES:
                return False
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
        holds, the wait for that process to carry it out) runs on one of the
        runtime's call threads.
        """
        return await self._host.call(self.cancel)

    def _cancel_elsewhere(self, system: ActorSystem, store: SharedStore) -> bool:
        """Cancel a run no actor here drives, on a shared store.

        A run nobody holds (queued, asleep) is cancelled here with a
        compare-and-set, as a suspended one is. One another worker holds gets
        a cancel request, which that worker carries out; this waits for the
        run to end, and takes over the cancel if the run comes back to the
        queue meanwhile (its worker died).
        """
        deadline = time.monotonic() + REMOTE_CANCEL_PATIENCE
        requested = False
        while True:
            record = self._started_record()
            if record.status in TERMINAL_STATUSES:
                return requested and record.status == RunStatus.CANCELED
            if not store.holds(self.run_id) and self._cancel_unheld(system, record):
                return True
            if system.cancel(self.run_id) != "not_here":  # claimed here meanwhile
                continue
            if not requested:
                requested = store.request_cancel(self.run_id)
                continue
            if time.monotonic() > deadline:
                raise CancelError(
                    f"the worker that holds run {self.run_id!r} did not carry out its cancel "
                    f"within {REMOTE_CANCEL_PATIENCE} s; the cancel stays asked for, and is "
                    "carried out when that worker looks again, or by whoever takes the run over",
                    run_id=self.run_id,
                )
            self._host.watch(self.run_id).wait(0.2)

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
        raise StoreError(
            f"the cancel of run {self.run_id!r} was not recorded: the store did not take the "
            f"canceled snapshot, and the run still reads as {stored.status}"
        )

    def _cancel_unheld(self, system: ActorSystem, record: SnapshotRecord) -> bool:
        """Cancel a run no actor drives (suspended, or queued on a shared store) here."""
        snapshot = decode(record.data, record.run_id)
        canceled = canceled_record(snapshot, time.time())
        # The compare-and-set decides between this cancel and a racing resume, and is
        # committed when it returns. The hooks run after it; the cancel returns once
        # they have, as it does for a run that an actor drove.
        if not system.store.replace(canceled, record.seq):
            return False  # changed meanwhile, or (on a shared store) held by a worker
        hooks_done = threading.Event()

        def then() -> None:
            try:
                system.record(canceled)
            finally:
                hooks_done.set()

        system.run_hooks(self._plan, snapshot, then)
        hooks_done.wait()
        return True

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
                    f"run {self.run_id!r} has not been started", run_id=self.run_id
                )
            raise _deleted(self.run_id)
        return record

    def _result(self, record: SnapshotRecord | None) -> WorkflowResult:
        result = read_result(record, self.workflow_id)
        if result is None:  # gone between the wait and the read
            raise _deleted(self.run_id)
        return result


def _not_resumable(snapshot: Snapshot) -> WorkflowError:
    """Why a run read not suspended cannot be resumed: another resume took it, or none did."""
    run_id, status = snapshot["run_id"], snapshot["status"]
    if snapshot.get("resumed"):
        return _resume_conflict(run_id, status)
    return RunNotSuspendedError(
        f"run {run_id!r} is {status}; only a suspended run can be resumed",
        status=status,
        run_id=run_id,
    )


def _resume_conflict(run_id: str, status: str) -> ResumeConflictError:
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


CANCEL_PATIENCE = 5.0
"""Seconds ``cancel()`` keeps trying to reach the actor of a run that is between two hands."""

REMOTE_CANCEL_PATIENCE = 60.0
"""Seconds ``cancel()`` waits for the worker holding a run (on a shared store) to cancel it."""


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
    """

    def __init__(self, run_id: str, timeout: float | None) -> None:
        self.run_id = run_id
        self._timeout = timeout
        self._channel: Channel[RunEvent] = Channel()
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._closed = False

    def _attach(self, host: RunHost) -> None:
        """Unsubscribe from ``host`` at :meth:`close`, or once this watch is dropped."""
        # The finalizer holds the channel and the host, never the watch itself.
        finalizer = weakref.finalize(self, _unsubscribe, host, self.run_id, self._channel)
        finalizer.atexit = False
        self._finalizer = finalizer

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

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
        if self._closed:
            raise StopIteration
        try:
            return self._channel.get(self._timeout)
        except ChannelClosed:
            raise StopIteration from None
        except TimeoutError:
            raise RunTimeoutError(
                f"no event from run {self.run_id!r} within {self._timeout} seconds",
                run_id=self.run_id,
            ) from None

    def __aiter__(self) -> RunWatch:
        return self

    async def __anext__(self) -> RunEvent:
        if self._closed:
            raise StopAsyncIteration
        try:
            return await self._channel.aget()
        except ChannelClosed:
            raise StopAsyncIteration from None


def _unsubscribe(host: RunHost, run_id: str, channel: Channel[RunEvent]) -> None:
    """End a watch: close its channel, and have the runtime forget it."""
    channel.close()
    host.unsubscribe(run_id, channel)


def _resume_target(snapshot: Snapshot, step: Any, run_id: str) -> str:
    """The path of the suspended step a resume names (or the only one)."""
    suspended = list(snapshot["suspended"])
    if step is None:
        if len(suspended) == 1:
            return suspended[0]
        raise ResumeTargetError(
            f"run {run_id!r} has {len(suspended)} suspended steps {suspended}: name the one "
            "to resume with step=",
            suspended=suspended,
            run_id=run_id,
        )
    if isinstance(step, Step):
        name = step.id
    elif isinstance(step, str):
        name = step
    else:
        raise TypeError(f"step must be a Step or a str, got {type(step).__name__}")
    if name in suspended:
        return name
    matches = [path for path in suspended if path.endswith("." + name)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ResumeTargetError(
            f"run {run_id!r}: {name!r} names several suspended steps {matches}; use a full path",
            suspended=suspended,
            run_id=run_id,
            step_id=name,
        )
    raise ResumeTargetError(
        f"run {run_id!r}: step {name!r} is not suspended (suspended: {suspended})",
        suspended=suspended,
        run_id=run_id,
        step_id=name,
    )
