"""Step actors: where user step bodies run, validated on the way in and out.

Step bodies may block (a sync body that sleeps holds its thread), so each step
actor is a threading actor. They live in a :class:`StepPool` that reuses idle
actors and grows only when the work waiting makes no progress: a burst of
short CPU-bound steps is served by a few threads, while many blocked steps get
a thread each (up to a limit). ``async def`` bodies run on one shared event
loop thread (:class:`AsyncLoop`) and hold no step actor while they wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
import time
from collections import deque
from typing import Any, Final

import pykka
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from actors._dispatch import ThreadActor, tell_safely
from actors.messages import ExecuteStep, StepFinished
from runtime.context import RequestContext
from runtime.errors import (
    RuntimeStoppedError,
    SnapshotEncodingError,
)
from runtime.model import ErrorInfo
from runtime.snapshot import check_encodable, copy_plain, find_unencodable
from runtime.step import StepContext, validate_for_step
from runtime.tracing import Span, emit

__all__ = ["AsyncLoop", "StepActor", "StepPool", "error_dict"]

TICK: Final = 0.02
"""How long waiting steps may go without any step finishing before the pool grows.

Longer than CPython's GIL switch interval (5 ms), so a busy dispatcher thread
is not mistaken for steps that block."""


STOP_TIMEOUT: Final = 5.0
"""Seconds to wait for one idle step actor to stop."""


def error_dict(exc: BaseException, **context: Any) -> dict[str, Any]:
    """An :class:`ErrorInfo` for ``exc`` as the plain dict snapshots hold."""
    return ErrorInfo.from_exception(exc, **context).model_dump()


class AsyncLoop:
    """One event loop on its own thread, started on first use, for ``async def`` steps."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    def submit(self, coroutine: Any) -> concurrent.futures.Future[Any]:
        """Schedule a coroutine on the loop; the future completes on the loop thread."""
        with self._lock:
            if self._stopped:
                coroutine.close()
                raise RuntimeStoppedError("the runtime is stopped")
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="callboard-async", daemon=True
                )
                self._thread.start()
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coroutine, loop)

    def stop(self, timeout: float | None = None) -> None:
        """Cancel what still runs, stop the loop and end its thread."""
        with self._lock:
            self._stopped = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        def cancel_all() -> None:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.call_soon(loop.stop)

        loop.call_soon_threadsafe(cancel_all)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()


_STOP: Any = object()


class StepPool:
    """Step actors to run steps on, reused while idle, grown when steps block.

    Args:
        loop: Where ``async def`` bodies run.
        core: Step actors kept even when idle.
        limit: The most step actors at once; steps beyond wait their turn.
        idle_timeout: Seconds an idle actor beyond ``core`` lives on.
    """

    def __init__(
        self,
        loop: AsyncLoop,
        *,
        core: int = 4,
        limit: int = 4096,
        idle_timeout: float = 60.0,
    ) -> None:
        self.loop = loop
        self._core = core
        self._limit = limit
        self._idle_timeout = idle_timeout
        self._cond = threading.Condition()
        self._idle: list[tuple[pykka.ActorRef[Any], float]] = []
        self._backlog: deque[ExecuteStep] = deque()
        self._live = 0
        self._completions = 0
        self._stopping = False
        self._monitor = threading.Thread(
            target=self._watch, name="callboard-step-monitor", daemon=True
        )
        self._monitor.start()

    @property
    def size(self) -> int:
        """How many step actors are alive."""
        return self._live

    def submit(self, message: ExecuteStep) -> None:
        """Run a step on an idle actor, a new one while under ``core``, or when one frees up.

        Raises:
            RuntimeStoppedError: if the pool is stopping.
        """
        with self._cond:
            if self._stopping:
                raise RuntimeStoppedError("the runtime is stopped")
            if self._idle:
                ref = self._idle.pop()[0]
            elif self._live < self._core:
                self._live += 1
                ref = None
            else:
                self._backlog.append(message)
                if len(self._backlog) == 1:
                    self._cond.notify()
                return
        if ref is None:
            ref = StepActor.start(self)
        ref.tell(message)

    def finished(self, ref: pykka.ActorRef[Any]) -> Any:
        """Called by a step actor when free: its next step, ``None`` to idle, or ``_STOP``."""
        with self._cond:
            self._completions += 1
            if self._stopping:
                self._live -= 1
                return _STOP
            if self._backlog:
                return self._backlog.popleft()
            self._idle.append((ref, time.monotonic()))
            return None

    def stop(self) -> None:
        """Stop idle actors now and busy ones when their step ends; end the monitor."""
        with self._cond:
            self._stopping = True
            idle = [ref for ref, _ in self._idle]
            self._idle.clear()
            self._live -= len(idle)
            self._backlog.clear()
            self._cond.notify_all()
        stopping = [ref.stop(block=False) for ref in idle]
        for future in stopping:
            try:
                future.get(timeout=STOP_TIMEOUT)
            except pykka.Timeout:
                emit(logging.WARNING, "step_actor_stop_timed_out")
        self._monitor.join(STOP_TIMEOUT)

    def _watch(self) -> None:
        while True:
            with self._cond:
                while not self._backlog and not self._stopping:
                    self._retire_idle()
                    self._cond.wait(self._idle_timeout if self._live > self._core else None)
                if self._stopping:
                    return
                seen = self._completions
                deadline = time.monotonic() + TICK
                while not self._stopping and (remaining := deadline - time.monotonic()) > 0:
                    self._cond.wait(remaining)
                if self._stopping:
                    return
                if not self._backlog or self._completions != seen:
                    continue
                # Nothing finished for a whole tick while steps waited: the
                # actors are blocked, so give every waiting step an actor.
                grow = min(len(self._backlog), self._limit - self._live)
                work = [self._backlog.popleft() for _ in range(grow)]
                self._live += grow
            if work:
                emit(logging.DEBUG, "step_pool_grown", added=len(work), size=self._live)
            for message in work:
                StepActor.start(self).tell(message)

    def _retire_idle(self) -> None:
        cutoff = time.monotonic() - self._idle_timeout
        while self._live > self._core and self._idle and self._idle[0][1] < cutoff:
            ref, _ = self._idle.pop(0)
            self._live -= 1
            ref.stop(block=False)


class StepActor(ThreadActor):
    """Runs step bodies: validates the input, calls the body, validates the output.

    Every exception from user code is caught, ``BaseException`` included: a step
    that raises ``SystemExit`` fails its run and stops nothing else.
    """

    def __init__(self, pool: StepPool) -> None:
        super().__init__()
        self._pool = pool

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, ExecuteStep):
            return super().on_receive(message)
        next_message: Any = message
        while next_message is not None:
            try:
                self._execute(next_message)
            except Exception as exc:
                # A fault in callboard's own handling, not in the step body
                # (whose exceptions _execute catches): the run must still end.
                _fault(next_message, exc)
            next_message = self._pool.finished(self.actor_ref)
            if next_message is _STOP:
                self.stop()
                return None
        return None

    def _execute(self, message: ExecuteStep) -> None:
        step = message.step
        span = Span(
            "workflow_step",
            message.trace_id,
            parent_span_id=message.parent_span_id,
            run_id=message.run_id,
            workflow_id=message.workflow_id,
            step_id=step.id,
        )
        span.start()
        started = time.time()
        try:
            ctx = self._context(message, span)
            value = step.execute(ctx)
            if inspect.isawaitable(value):
                self._await(message, ctx, span, started, value)
                return
            finished = _outcome(message, ctx, value, started)
        except BaseException as exc:
            finished = _failure(message, exc, started)
        _report(message, span, finished)

    def _context(self, message: ExecuteStep, span: Span) -> StepContext[Any]:
        step = message.step
        input_data = validate_for_step(
            step.input_schema,
            message.payload,
            f"step {step.id!r}: its input",
            "its input schema",
            run_id=message.run_id,
            step_id=step.id,
        )
        return StepContext(
            step=step,
            input_data=input_data,
            run_id=message.run_id,
            workflow_id=message.workflow_id,
            state=message.state,
            workflow_state_schema=message.state_schema,
            # Each step gets its own copy: a step that fails must not have
            # changed what the run holds.
            request_context=RequestContext(
                copy_plain(message.request_context) if message.request_context else None
            ),
            init_data=message.init_data,
            workflow_input_schema=message.input_schema,
            definitions=message.definitions,
            outputs=message.outputs,
            log_fields={
                "trace_id": message.trace_id,
                "span_id": span.span_id,
                "run_id": message.run_id,
                "workflow_id": message.workflow_id,
                "step_id": step.id,
            },
        )

    def _await(
        self,
        message: ExecuteStep,
        ctx: StepContext[Any],
        span: Span,
        started: float,
        awaitable: Any,
    ) -> None:
        async def body() -> tuple[bool, Any]:
            # A BaseException (SystemExit, KeyboardInterrupt) must not escape
            # into the event loop: it would end the loop's thread, and with it
            # every async step of every run. Cancellation still propagates.
            try:
                return True, await awaitable
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                return False, exc

        def done(future: concurrent.futures.Future[tuple[bool, Any]]) -> None:
            try:
                if future.cancelled():
                    raise RuntimeStoppedError(
                        f"step {message.step.id!r} was cancelled: the runtime stopped",
                        run_id=message.run_id,
                        step_id=message.step.id,
                    )
                ok, value = future.result()
                if not ok:
                    raise value
                finished = _outcome(message, ctx, value, started)
            except BaseException as exc:
                finished = _failure(message, exc, started)
            _report(message, span, finished)

        try:
            self._pool.loop.submit(body()).add_done_callback(done)
        except RuntimeStoppedError as exc:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # it will never run: do not leave it unawaited
            _report(message, span, _failure(message, exc, started))


def _report(message: ExecuteStep, span: Span, finished: StepFinished) -> None:
    span.end(
        "success" if finished.ok else "failed",
        **({} if finished.error is None else {"error": finished.error["name"]}),
    )
    tell_safely(message.reply_to, finished)


def _fault(message: ExecuteStep, exc: Exception) -> None:
    emit(logging.ERROR, "step_actor_fault", step_id=message.step.id, exc_info=True)
    now = time.time()
    error = {
        "name": "RunCrashedError",
        "message": (
            f"callboard failed while running step {message.step.id!r}: {type(exc).__name__}"
        ),
        "details": {"step_id": message.step.id, "type": "runtime.errors.RunCrashedError"},
    }
    tell_safely(
        message.reply_to,
        StepFinished(
            step_id=message.step.id,
            ok=False,
            output=None,
            error=error,
            result=None,
            state=message.state,
            request_context=message.request_context,
            started_at=now,
            ended_at=now,
        ),
    )


def _failure(message: ExecuteStep, exc: BaseException, started: float) -> StepFinished:
    return StepFinished(
        step_id=message.step.id,
        ok=False,
        output=None,
        error=error_dict(exc, step_id=message.step.id),
        result=None,
        state=message.state,
        request_context=message.request_context,
        started_at=started,
        ended_at=time.time(),
    )


def _outcome(
    message: ExecuteStep, ctx: StepContext[Any], value: Any, started: float
) -> StepFinished:
    """Validate and encode-check what a body returned; raise on anything wrong."""
    step = message.step
    model = validate_for_step(
        step.output_schema,
        value,
        f"step {step.id!r}: the {type(value).__name__} it returned",
        "its output schema",
        run_id=message.run_id,
        step_id=step.id,
    )
    output = _dump(model, message)
    _check(output, f"step {step.id!r} output", message, str_keys_known=True)
    result = None
    if message.final_schema is not None:
        result = _final(output, message.final_schema, message)
    request_context = ctx.request_context.to_dict()
    _check(request_context, "request_context", message)
    return StepFinished(
        step_id=step.id,
        ok=True,
        output=output,
        error=None,
        result=result,
        state=ctx.raw_state,
        request_context=request_context,
        started_at=started,
        ended_at=time.time(),
    )


def _dump(model: BaseModel, message: ExecuteStep) -> Any:
    try:
        return model.model_dump(mode="json")
    except (PydanticSerializationError, ValueError) as exc:
        # ValueError: JSON-mode dumping of bytes that are not UTF-8, for one.
        output = f"step {message.step.id!r} output"
        found = find_unencodable(model.model_dump(), output)
        if found is not None:
            where, type_name = found
            text = (
                f"{where} holds a value of type {type_name}, which cannot be stored in a snapshot"
            )
        else:
            where, type_name = output, type(model).__name__
            text = f"{output} ({type_name}) cannot be stored in a snapshot: {exc}"
        raise SnapshotEncodingError(
            text,
            path=where,
            type_name=type_name,
            run_id=message.run_id,
            step_id=message.step.id,
        ) from exc


def _check(value: Any, path: str, message: ExecuteStep, *, str_keys_known: bool = False) -> None:
    try:
        check_encodable(value, path, str_keys_known=str_keys_known)
    except SnapshotEncodingError as exc:
        exc.run_id, exc.step_id = message.run_id, message.step.id
        raise


def _final(output: Any, schema: type[BaseModel], message: ExecuteStep) -> Any:
    return validate_for_step(
        schema,
        output,
        f"the output of the last step {message.step.id!r}",
        "the workflow's output schema",
        run_id=message.run_id,
        step_id=message.step.id,
    ).model_dump(mode="json")
