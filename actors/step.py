"""The step actor: where user step bodies run, validated on the way in and out.

Step bodies may block, so each step actor is a threading actor. Step actors
live in the step pool (:mod:`actors._pool`), which hands a free actor the next
step waiting; ``async def`` bodies run on the pool's event loop thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from actors._dispatch import ThreadActor, tell_safely
from actors.messages import ExecuteStep, StepFinished
from runtime._errors import (
    NonRetryableError,
    RuntimeStoppedError,
    SnapshotEncodingError,
    StepTimeoutError,
)
from runtime._model import ErrorInfo
from runtime._plan import MAX_SLEEP
from runtime._request_context import RequestContext
from runtime._snapshot import check_encodable, copy_plain, find_unencodable
from runtime._step import plain, validate_for_step
from runtime._step_context import BailOut, StepContext, SuspendRequest
from runtime._tracing import Span, emit

if TYPE_CHECKING:
    from actors._pool import StepPool

__all__ = ["StepActor", "error_dict"]


def error_dict(exc: BaseException, **context: Any) -> dict[str, Any]:
    """An :class:`ErrorInfo` for ``exc`` as the plain dict snapshots hold."""
    return ErrorInfo.from_exception(exc, **context).model_dump()


class StepActor(ThreadActor):
    """Runs user code: validates the input, calls the body, validates the output.

    Every exception from user code is caught, ``BaseException`` included: a step
    that raises ``SystemExit`` fails its run and stops nothing else.
    """

    def __init__(self, pool: StepPool) -> None:
        super().__init__()
        self._pool = pool

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, ExecuteStep):
            return super().on_receive(message)
        next_message: ExecuteStep | None = message
        while next_message is not None:
            try:
                self._execute(next_message)
            except Exception as exc:
                # A fault in callboard's own handling, not in the step body
                # (whose exceptions _execute catches): the run must still end.
                _fault(next_message, exc)
            # Free again: go on with a step that waited for an actor, if any.
            next_message = self._pool.finished(self.actor_ref)
        return None

    def _execute(self, message: ExecuteStep) -> None:
        span = None
        if message.kind in {"step", "map"}:
            span = Span(
                "workflow_step",
                message.trace_id,
                parent_span_id=message.parent_span_id,
                run_id=message.run_id,
                workflow_id=message.workflow_id,
                step_id=message.path or message.step.id,
            )
            span.start()
        started = time.time()
        ctx: StepContext[Any] | None = None
        try:
            ctx = self._context(message, span)
            value = _call(message, ctx)
            if inspect.isawaitable(value):
                self._await(message, ctx, span, started, value)
                return
            finished = _outcome(message, ctx, value, started)
        except BaseException as exc:
            finished = _failure(message, exc, started, ctx)
        _report(message, span, finished)

    def _context(self, message: ExecuteStep, span: Span | None) -> StepContext[Any]:
        step = message.step
        kind = message.kind
        if kind == "step":
            input_data: Any = validate_for_step(
                step.input_schema,
                message.payload,
                f"step {step.id!r}: its input",
                "its input schema",
                run_id=message.run_id,
                step_id=step.id,
            )
            resume_data = message.resume_data
            if resume_data is not None and step.resume_schema is not None:
                resume_data = step.resume_schema.model_validate(resume_data)
        else:
            resume_data = None
            # Conditions, map and sleep functions read the run; they change nothing.
            input_data = message.payload
        path = message.path or step.id
        context_copy = copy_plain(message.request_context) if message.request_context else None
        return StepContext(
            step=step if kind == "step" else None,
            input_data=input_data,
            run_id=message.run_id,
            workflow_id=message.workflow_id,
            state=message.state,
            workflow_state_schema=message.state_schema,
            # Each call gets its own copy: a step that fails must not have
            # changed what the run holds.
            request_context=RequestContext(context_copy),
            init_data=message.init_data,
            workflow_input_schema=message.input_schema,
            definitions=message.definitions,
            outputs=message.outputs,
            log_fields={
                "trace_id": message.trace_id,
                "span_id": span.span_id if span is not None else message.parent_span_id,
                "run_id": message.run_id,
                "workflow_id": message.workflow_id,
                "step_id": path,
            },
            path=path,
            prefix=message.prefix,
            retry_count=message.retry_count,
            resume_data=resume_data,
            abort_signal=message.signal,
            read_only=kind != "step",
            iteration_count=message.iteration,
            bail_schema=message.bail_schema,
        )

    def _await(
        self,
        message: ExecuteStep,
        ctx: StepContext[Any],
        span: Span | None,
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

        signal = ctx.abort_signal

        def done(future: concurrent.futures.Future[tuple[bool, Any]]) -> None:
            try:
                if future.cancelled():
                    if signal.reason == "timeout":
                        raise StepTimeoutError(
                            f"step {ctx.path!r} was cancelled: it outlasted its timeout",
                            run_id=message.run_id,
                            step_id=message.step.id,
                        )
                    raise RuntimeStoppedError(
                        f"step {ctx.path!r} was cancelled: the runtime stopped",
                        run_id=message.run_id,
                        step_id=message.step.id,
                    )
                ok, value = future.result()
                if not ok:
                    raise value
                finished = _outcome(message, ctx, value, started)
            except BaseException as exc:
                finished = _failure(message, exc, started, ctx)
            _report(message, span, finished)

        try:
            future = self._pool.loop.submit(body())
        except RuntimeStoppedError as exc:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # it will never run: do not leave it unawaited
            _report(message, span, _failure(message, exc, started, ctx))
            return
        future.add_done_callback(done)

        # A timeout cancels an async body (a sync one cannot be stopped).
        def on_abort(reason: str) -> None:
            if reason == "timeout":
                future.cancel()

        signal.add_callback(on_abort)


def _call(message: ExecuteStep, ctx: StepContext[Any]) -> Any:
    """Call the user code the message names; may return an awaitable."""
    kind = message.kind
    if kind == "step":
        return message.step.execute(ctx)
    if kind == "conditions":
        return _conditions(message, ctx)
    return message.fns[0][0](ctx)


def _condition_input(message: ExecuteStep, schema: type[BaseModel] | None) -> Any:
    if schema is None:
        return message.payload
    return validate_for_step(
        schema,
        message.payload,
        f"{message.path!r}: the input of its condition",
        "the schema it is checked against",
        run_id=message.run_id,
        step_id=message.path,
    )


def _conditions(message: ExecuteStep, ctx: StepContext[Any]) -> Any:
    """Evaluate each condition in order; a list of booleans, or an awaitable of one."""
    results: list[bool] = []
    for index, (fn, schema) in enumerate(message.fns):
        ctx.input_data = _condition_input(message, schema)
        value = fn(ctx)
        if inspect.isawaitable(value):
            return _conditions_async(message, ctx, results, value, index + 1)
        results.append(bool(value))
    return results


async def _conditions_async(
    message: ExecuteStep, ctx: StepContext[Any], results: list[bool], first: Any, rest: int
) -> list[bool]:
    results.append(bool(await first))
    for fn, schema in message.fns[rest:]:
        ctx.input_data = _condition_input(message, schema)
        value = fn(ctx)
        if inspect.isawaitable(value):
            value = await value
        results.append(bool(value))
    return results


def _report(message: ExecuteStep, span: Span | None, finished: StepFinished) -> None:
    if span is not None:
        span.end(
            "success" if finished.ok else finished.outcome,
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
        "details": {"step_id": message.step.id, "type": "runtime._errors.RunCrashedError"},
    }
    tell_safely(
        message.reply_to,
        StepFinished(
            step_id=message.step.id,
            outcome="failed",
            output=None,
            error=error,
            result=None,
            state=message.state,
            request_context=message.request_context,
            started_at=now,
            ended_at=now,
            retryable=False,
            token=message.token,
        ),
    )


def _failure(
    message: ExecuteStep, exc: BaseException, started: float, ctx: StepContext[Any] | None
) -> StepFinished:
    state, request_context = message.state, message.request_context
    if isinstance(exc, SuspendRequest | BailOut) and ctx is not None:
        try:
            state, request_context = _after(message, ctx)
        except BaseException as late:
            exc = late
    if isinstance(exc, SuspendRequest):
        outcome, output, result, error = "suspended", exc.payload, None, None
    elif isinstance(exc, BailOut):
        outcome, output, result, error = "bailed", exc.result, exc.result, None
    else:
        outcome, output, result = "failed", None, None
        error = error_dict(exc, step_id=message.path or message.step.id)
    return StepFinished(
        step_id=message.step.id,
        outcome=outcome,
        output=output,
        error=error,
        result=result,
        state=state,
        request_context=request_context,
        started_at=started,
        ended_at=time.time(),
        retryable=not isinstance(exc, NonRetryableError),
        token=message.token,
    )


def _after(message: ExecuteStep, ctx: StepContext[Any]) -> tuple[Any, dict[str, Any]]:
    """The state and request context a step leaves behind (checked to be storable)."""
    if message.kind != "step":
        return message.state, message.request_context
    request_context = ctx.request_context.to_dict()
    _check(request_context, "request_context", message)
    return ctx.raw_state, request_context


def _outcome(
    message: ExecuteStep, ctx: StepContext[Any], value: Any, started: float
) -> StepFinished:
    """Validate and encode-check what the code returned; raise on anything wrong."""
    kind = message.kind
    result = None
    if kind == "step":
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
        if message.final_schema is not None:
            result = _final(output, message.final_schema, message)
    elif kind == "conditions":
        output = value
    elif kind == "sleep":
        output = _wake_time(value, message)
    else:
        output = plain(value)
        _check(output, f"{message.path!r} output", message)
        output = copy_plain(output)
    state, request_context = _after(message, ctx)
    return StepFinished(
        step_id=message.step.id,
        outcome="success",
        output=output,
        error=None,
        result=result,
        state=state,
        request_context=request_context,
        started_at=started,
        ended_at=time.time(),
        token=message.token,
    )


def _wake_time(value: Any, message: ExecuteStep) -> float:
    """When a sleep whose length a function computed ends, as epoch seconds."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if not 0 <= seconds <= MAX_SLEEP:  # NaN fails this too
            raise ValueError(
                f"{message.path!r}: the sleep function returned {value!r}; seconds must be "
                f"from 0 to {MAX_SLEEP:g}"
            )
        return time.time() + seconds
    raise TypeError(
        f"{message.path!r}: the sleep function returned {type(value).__name__}; "
        "it must return seconds (a number) or a datetime"
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
