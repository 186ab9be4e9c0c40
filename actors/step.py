"""The step actor: where user code runs, validated on the way in and out.

A step actor takes one command per kind of user code (a step body, the
conditions of a branch or loop, a ``map`` function, the function that computes
a sleep's length), calls it with its :class:`StepContext`, and replies to the
run actor with :class:`StepFinished`. Step actors live in the step pool
(:mod:`actors._pool`), which hands a free actor the next call waiting.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from types import GeneratorType, TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError
from pykka import ActorDeadError

from actors._dispatch import ThreadActor, UnexpectedMessageError, tell_safely, unexpected
from actors.messages import (
    AbortReason,
    AbortRun,
    CallConditions,
    CallMap,
    CallSleepLength,
    CallStep,
    Outcome,
    StepActorMessage,
    StepFinished,
)
from runtime import _clock, _otel, _probes
from runtime._errors import (
    NonRetryableError,
    RunCrashedError,
    RuntimeStoppedError,
    SnapshotEncodingError,
    StepTimeoutError,
)
from runtime._model import ErrorInfo
from runtime._options import seconds_of
from runtime._plan import MAX_SLEEP
from runtime._snapshot import check_encodable, copy_plain
from runtime._step import (
    dump_model,
    not_dumped_error,
    plain,
    stored_as,
    validate_for_step,
    validate_input,
    validate_output,
)
from runtime._step_context import BailOut, StepContext, SuspendRequest
from runtime._sync import on_run_waits, serving, serving_in_task
from runtime._tracing import Span, emit, observed

if TYPE_CHECKING:
    from actors._here import RunsHere
    from actors._pool import AsyncLoop, BodyFuture, StepPool

__all__ = ["StepActor", "error_dict"]

C = TypeVar("C", CallStep, CallConditions, CallMap, CallSleepLength)
"""One kind of call: the generic parts of a step actor handle each the same way."""

ReaderCall = CallConditions | CallMap | CallSleepLength
"""A call of code that only reads the run: it cannot change the state, suspend or bail."""

_SPAN_STATUS: Final = {outcome: outcome.value for outcome in Outcome} | {
    Outcome.BAILED: Outcome.SUCCESS.value  # a bail ends the step (and its run) well
}
"""The status a call's span ends with, as plain text."""


def error_dict(exc: BaseException, **context: Any) -> dict[str, Any]:
    """An :class:`ErrorInfo` for ``exc`` as the plain dict snapshots hold."""
    return ErrorInfo.from_exception(exc, **context).model_dump()


class StepActor(ThreadActor):
    """Runs user code: validates the input, calls the code, validates the output.

    Every exception from user code is caught, ``BaseException`` included: a step
    that raises ``SystemExit`` fails its run and stops nothing else.

    Args:
        pool: The pool the actor belongs to; it is asked for the next call
            each time one ends.
    """

    def __init__(self, pool: StepPool) -> None:
        super().__init__()
        self._pool = pool
        self._ref = self.actor_ref  # read once: it is a property

    def on_start(self) -> None:
        # On the actor's own thread: a step body that blocks here until another run ends
        # tells the pool, which does not count this thread meanwhile.
        on_run_waits(self._pool.wait_began, self._pool.wait_ended)

    def on_receive(self, message: StepActorMessage) -> None:
        call: StepActorMessage | None = message
        while call is not None:
            observer = _probes.observer
            if observer is not None and not observer(self, call):
                call = self._pool.finished(self._ref)
                continue
            try:
                self._handle(call)
            except UnexpectedMessageError:
                raise  # a bug in whoever sent it; logged by ThreadActor
            except Exception as exc:
                # A fault of callboard's own outside the guard of _call (before the user's
                # code, a MemoryError say): the call's run is told, as from _call, and the
                # actor goes on. Let through, it ended the actor and lost the call: its
                # run waited for ever, and the pool counted an actor that was gone.
                _fault(call, exc)
            # Free again: go on with a call that waited for an actor, if any.
            call = self._pool.finished(self._ref)

    def on_failure(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc_value, UnexpectedMessageError):
            return  # refused and said (see ThreadActor): the actor lives on
        # Ended by a fault (in the pool's own handling of its end): the pool no longer
        # counts it, else the pool's bound shrank by one actor at every such fault.
        emit(
            logging.ERROR,
            "step_actor_crashed",
            error=f"{exc_type.__name__ if exc_type else 'error'}: {exc_value}",
            exc_info=(exc_type, exc_value, traceback),
        )
        self._pool.lost(self._ref)

    def _handle(self, call: StepActorMessage) -> None:
        match call:
            case CallStep():
                self._on_call_step(call)
            case CallConditions():
                self._on_call_conditions(call)
            case CallMap():
                self._on_call_map(call)
            case CallSleepLength():
                self._on_call_sleep_length(call)
            case _:
                unexpected(self, call)

    # --- messages -------------------------------------------------------------------

    def _on_call_step(self, call: CallStep) -> None:
        guard = self._pool.guard
        if guard is not None and not guard.may_start(call.run_id):
            # Another worker took the run while this one stalled past its lease: the
            # step must not run here (its output would be fenced off, its effects not).
            reason = guard.why_not(call.run_id)
            emit(
                logging.DEBUG if reason is None else logging.WARNING,
                "step_not_started",
                run_id=call.run_id,
                step_id=call.step_id,
                reason=reason or "the run ended (was cancelled, say) or was deleted meanwhile",
            )
            tell_safely(call.reply_to, AbortRun(error=None, lost=True))
            return
        body = _probes.step_body
        # The body is called as it is, with no frame of ours around it; a test kit's
        # override or injected fault (a probe) is called with the call as well.
        invoke = call.step.execute if body is None else functools.partial(body, call)
        self._call(call, _step_context, invoke, _step_outcome, traced=True)

    def _on_call_conditions(self, call: CallConditions) -> None:
        self._call(call, _reader_context, functools.partial(_conditions, call), _conditions_outcome)

    def _on_call_map(self, call: CallMap) -> None:
        self._call(call, _reader_context, call.fn, _map_outcome, traced=True)

    def _on_call_sleep_length(self, call: CallSleepLength) -> None:
        self._call(call, _reader_context, call.fn, _sleep_outcome)

    # --- running user code ----------------------------------------------------------

    def _call(
        self,
        call: C,
        context: Callable[[C, str | None], StepContext[Any]],
        invoke: Callable[[StepContext[Any]], Any],
        outcome: Callable[[C, StepContext[Any], Any, float], StepFinished],
        *,
        traced: bool = False,
    ) -> None:
        """Call user code with its context; reply with its outcome (later, if it is async).

        Args:
            call: The command.
            context: Builds the ``ctx`` the code receives (and validates the
                input), given the id of the span its logger reports (``None``
                for a span not made).
            invoke: The code, called with the ``ctx`` alone; it may return an awaitable.
            outcome: Validates what the code returned into the reply; raises
                on anything wrong with it.
            traced: Whether the call has a ``workflow_step`` span of its own.
        """
        signal = call.signal
        if signal is not None:
            if signal.aborted:
                # Its run let go of it while it waited for a step thread (cancelled,
                # failed or timed out): its reply would be ignored, and its code must
                # not start after a cancel() that returned True.
                return
            signal.began = _clock.monotonic()  # its timeout counts from here
        run_id = call.run.run_id
        serving(run_id, self._pool)  # a wait for its own run (or a stop) is refused
        here = self._pool.here
        if here is not None:
            here.body_began(run_id)  # its run is not claimed here again until it returns
        handed_on = False  # an async body's task ends the count, once it has ended
        try:
            if not traced:
                span, span_id = None, call.run.parent_span_id
            elif observed():
                span = _span(call)
                span_id = span.span_id
            else:
                # Nobody would see the span (no OpenTelemetry tracer, structlog
                # unconfigured): the step's logger, if it asks for one, gets an id
                # of its own (see StepContext.logger).
                span, span_id = None, None
            started = _clock.time()
            ctx: StepContext[Any] | None = None
            try:
                # User code runs in a copy of the thread's context variables: what it
                # sets (a tenant a logging helper binds, say) stays with this call,
                # where it was seen by every later run's steps on this thread (and by
                # their async bodies, whose tasks copy it).
                if span is None:
                    ctx = context(call, span_id)
                    value = contextvars.copy_context().run(invoke, ctx)
                else:
                    # The step's span is current while user code runs: spans it
                    # makes (an HTTP client's, say) are its children.
                    with span.current():
                        ctx = context(call, span_id)
                        value = contextvars.copy_context().run(invoke, ctx)
                known, kinds = _sync_kinds  # _awaitable's quick answer, without its call
                seen = type(value) in kinds and abc.get_cache_token() == known
                if not seen and _awaitable(value):
                    handed_on = self._await(
                        call, ctx, span, started, value, outcome=outcome, traced=traced, here=here
                    )
                    return
                finished = outcome(call, ctx, value, started)
            except BaseException as exc:
                finished = _failure(call, exc, started, ctx)
                here = _body_ended(here, run_id)
                _report(call, span, finished, exc, traced=traced)
                return
            if here is not None:  # as _body_ended, without its call once per step
                here.body_ended(run_id)
                here = None
            _report(call, span, finished, traced=traced)
        except Exception as exc:
            # A fault in callboard's own handling, not in the user's code
            # (whose exceptions are caught above): the run must still end.
            if not handed_on:
                here = _body_ended(here, run_id)
            _fault(call, exc)
        finally:
            if here is not None and not handed_on:
                here.body_ended(run_id)

    def _await(
        self,
        call: C,
        ctx: StepContext[Any],
        span: Span | None,
        started: float,
        awaitable: Any,
        *,
        outcome: Callable[[C, StepContext[Any], Any, float], StepFinished],
        traced: bool,
        here: RunsHere | None,
    ) -> bool:
        """Run an ``async def`` body on the async loop; reply when it is done.

        Returns whether the body was handed to the loop (and its end is reported there).
        """
        loop = self._pool.loop
        awaiting = _Awaiting(call, ctx, span, started, outcome, traced=traced, loop=loop)
        # The body counts as running here until its task has really ended: a timeout
        # cancels the future at once, while the task may take its time to unwind.
        on_end = None if here is None else functools.partial(here.body_ended, call.run_id)
        try:
            future = loop.submit(_body(awaitable, span, call.run_id, self._pool), awaitable, on_end)
        except RuntimeStoppedError as exc:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # it will never run: do not leave it unawaited
            _report(call, span, _failure(call, exc, started, ctx), traced=traced)
            return False
        future.add_done_callback(awaiting.done)
        # A timeout cancels an async body (a sync one cannot be stopped).
        ctx.abort_signal.add_callback(_CancelOnTimeout(future))
        return True


def _body_ended(here: RunsHere | None, run_id: str) -> RunsHere | None:
    """Say the run's user code returned, before its reply; ``None``, what ``here`` becomes.

    Before: the reply may end the run, and a run that ended with its body still
    counted here would keep its queue's slot (see :class:`~actors._here.RunsHere`).
    """
    if here is not None:
        here.body_ended(run_id)
    return None


async def _body(awaitable: Any, span: Span | None, run_id: str, owner: object) -> tuple[bool, Any]:
    """An ``async def`` step body as the async loop runs it: ``(True, value)`` or ``(False, exc)``.

    A BaseException (SystemExit, KeyboardInterrupt) must not escape into the
    event loop: it would end the loop's thread, and with it every async step of
    every run. Cancellation still propagates. A module function, not a closure:
    the exception's traceback holds this frame, and a frame that held the
    future or the step's context would make each failed step a reference cycle.
    Its task notes the run it serves: a wait for that run, or a stop of its
    runtime, inside the body is refused.
    """
    served = serving_in_task(run_id, owner)
    try:
        with contextlib.nullcontext() if span is None else span.current():
            return True, await awaitable
    except asyncio.CancelledError as exc:
        # Not kept in a local: the re-raised error's traceback keeps this frame, and the
        # task keeps the error, so a timed-out body (its context, signal, writer) was a
        # reference cycle only the garbage collector freed.
        if not _cancelled_from_outside():
            # Nobody cancelled this task: the body raised it itself (it awaited a
            # task something else cancelled, as HTTP clients do). A failure of the
            # step, as in a sync body, not a stop of the runtime.
            return False, exc
        raise
    except BaseException as exc:
        return False, exc
    finally:
        served.end()  # tasks it left running serve no run: they may wait for this one


def _cancelled_from_outside() -> bool:
    """Whether the running task was cancelled by something else (a timeout, a stop)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class _Awaiting:
    """An async step call waiting for its body: replies when the body's future is done.

    One slotted object instead of closures over the call's values, so that an
    async step in progress holds a few objects, not a dozen cells and
    functions (each of which every garbage collection walks), and none of them
    holds the future: the future holds :meth:`done`.
    """

    __slots__ = ("call", "ctx", "loop", "outcome", "span", "started", "traced")

    def __init__(
        self,
        call: Any,
        ctx: StepContext[Any],
        span: Span | None,
        started: float,
        outcome: Callable[[Any, StepContext[Any], Any, float], StepFinished],
        *,
        traced: bool,
        loop: AsyncLoop,
    ) -> None:
        self.call = call
        self.ctx = ctx
        self.loop = loop
        self.span = span
        self.started = started
        self.outcome = outcome
        self.traced = traced

    def done(self, future: BodyFuture) -> None:
        call, ctx, span, started = self.call, self.ctx, self.span, self.started
        traced = self.traced
        try:
            if future.cancelled():
                if ctx.abort_signal.reason == AbortReason.TIMEOUT:
                    raise StepTimeoutError(
                        f"step {ctx.path!r} was cancelled: it outlasted its timeout",
                        run_id=call.run_id,
                        step_id=call.step_id,
                    )
                if self.loop.lost:
                    raise RuntimeStoppedError(
                        f"step {ctx.path!r} did not end: the application's event loop, which "
                        "runs this runtime's async steps, closed first (stop the runtime "
                        "before the loop ends, with `await rt.astop()` or `async with`)",
                        run_id=call.run_id,
                        step_id=call.step_id,
                    )
                if self.loop.stopped:
                    raise RuntimeStoppedError(
                        f"step {ctx.path!r} was cancelled: the runtime stopped",
                        run_id=call.run_id,
                        step_id=call.step_id,
                    )
                raise _cancelled_by_other_code(call, ctx.path, self.loop)
            ok, value = future.result()
            if ok:
                finished = self.outcome(call, ctx, value, started)
        except BaseException as exc:
            _report(call, span, _failure(call, exc, started, ctx), exc, traced=traced)
            return
        if not ok:
            # The body raised: its exception is reported as it is. Raised again
            # here, its traceback would hold this frame, whose locals hold it: a
            # reference cycle per failed step.
            _report(call, span, _failure(call, value, started, ctx), value, traced=traced)
            return
        _report(call, span, finished, traced=traced)


def _cancelled_by_other_code(call: Any, path: str, loop: AsyncLoop) -> asyncio.CancelledError:
    """The error of a step whose task code other than callboard's cancelled.

    Who cancelled cannot be told: on the application's loop it is most often the
    loop's own shutdown (``asyncio.run()`` cancels the tasks left when its
    coroutine returns), which the runtime outlives, but it may be the body
    cancelling its own task while the loop and the runtime go on. So the step
    fails with the ``CancelledError`` it got, not with "the runtime stopped",
    and the likely cause and its cure are said, in the error and once per runtime in a log.
    """
    if not loop.on_app_loop:
        return asyncio.CancelledError(
            f"step {path!r} was cancelled, not by callboard: its task was cancelled "
            "(by the step's own code, say)"
        )
    hint = (
        "stop the runtime before the application's event loop ends, with "
        "`await rt.astop()` or `async with Runtime(...)`"
    )
    if loop.first_cancel_by_other_code():
        emit(
            logging.WARNING,
            "async_step_cancelled_on_app_loop",
            run_id=call.run_id,
            step_id=path,
            hint=f"{hint}; later such steps are not logged",
        )
    return asyncio.CancelledError(
        f"step {path!r} was cancelled, not by callboard: its task on the application's "
        "event loop was cancelled, by the loop shutting down, say (asyncio.run() cancels "
        f"the tasks left when its coroutine returns): {hint}"
    )


class _EndOnLetGo:
    """An abort callback that ends a call's span when its run lets go of the call.

    A sync body cannot be stopped: the span of one that outlived its timeout
    (or ran on after its run was cancelled) stayed open until the body
    returned, if it ever did, long after its run had recorded the step's end
    and ended its own span. The span ends when the run gives the call up, with
    what the run recorded; the body's own end, later, ends it no more (see
    :meth:`Span.end`). It holds the span and two strings, not the call, which
    holds the signal that holds this callback: no reference cycle per call.
    """

    __slots__ = ("path", "run_id", "span")

    def __init__(self, span: Span, call: StepActorMessage) -> None:
        self.span = span
        self.path = call.path or call.step_id
        self.run_id = call.run_id

    def __call__(self, reason: str) -> None:
        status, error, exception = _let_go(self.path, self.run_id, reason)
        _end_span(self.span, status, error, exception)


class _CancelOnTimeout:
    """An abort callback that cancels an async body's future when the step times out.

    It holds the future weakly: the future holds :meth:`_Awaiting.done`, which
    holds the step's context and so its abort signal, and a strong reference
    back would make every async step a reference cycle that only the garbage
    collector frees, with its run's actor and records.
    """

    __slots__ = ("future",)

    def __init__(self, future: BodyFuture) -> None:
        self.future = weakref.ref(future)

    def __call__(self, reason: str) -> None:
        if reason == AbortReason.TIMEOUT and (future := self.future()) is not None:
            future.cancel()


# --- contexts ---------------------------------------------------------------------


def _span(call: StepActorMessage) -> Span:
    """The call's span, started, ended by its run letting go of the call if that comes first."""
    attributes: dict[str, Any] = {"callboard.step.attempt": 1}
    if isinstance(call, CallStep):
        attributes["callboard.step.attempt"] = call.retry_count + 1
        if call.item is not None:  # a foreach's item: the items' spans told apart
            attributes["callboard.step.item"] = call.item
    run = call.run
    span = Span(
        "workflow_step",
        run.trace_id,
        parent_span_id=run.parent_span_id,
        otel_parent=run.span_parent,
        otel_attributes=attributes,
        run_id=run.run_id,
        workflow_id=run.workflow_id,
        step_id=call.path or call.step_id,
    )
    span.start()
    signal = call.signal
    if signal is not None:
        signal.add_callback(_EndOnLetGo(span, call))
    return span


def _step_context(call: CallStep, span_id: str | None) -> StepContext[Any]:
    step = call.step
    input_data = validate_input(step, call.payload, call.run.run_id)
    resume_data = call.resume_data
    if resume_data is not None and step.resume_schema is not None:
        # Checked at resume() by a runtime that has the definition; not by one that
        # resumes by the record alone (the command line's runs resume).
        resume_data = validate_for_step(
            step.resume_schema,
            resume_data,
            f"step {step.id!r}: its resume data",
            "its resume schema",
            run_id=call.run_id,
            step_id=step.id,
            stored=True,
        )
    return StepContext._of_call(
        call,
        step,
        step.id,
        input_data,
        span_id,
        retry_count=call.retry_count,
        resume_data=resume_data,
    )


def _reader_context(call: ReaderCall, span_id: str | None) -> StepContext[Any]:
    """Conditions, map and sleep functions read the run; they change nothing."""
    return StepContext._of_call(
        call,
        None,
        call.path or call.step_id,
        call.payload,
        span_id,
        iteration_count=call.iteration if isinstance(call, CallConditions) else None,
        read_only=True,
    )


# --- calling the code -------------------------------------------------------------

# The types whose values ``inspect.isawaitable`` found not awaitable, with abc's
# cache token at the time: registering any class with an ABC (such as
# ``Awaitable.register``) changes the token and so forgets them, as it resets
# abc's own caches. Replaced whole, never cleared, so a thread holding the
# old pair is not fooled.
_sync_kinds: tuple[object, set[type]] = (abc.get_cache_token(), set())

_SYNC_KINDS_KEPT: Final = 256
"""The most types remembered (types made at run time must not pile up)."""


def _awaitable(value: Any) -> bool:
    """``inspect.isawaitable(value)``, at the cost of a set lookup for a type seen before.

    A step returns a model or plain data, never awaitable; asking abc each
    time costs two Python calls. Generators are asked every time: whether one
    is awaitable depends on its code's flags, not on its type.
    """
    global _sync_kinds  # noqa: PLW0603 - a cache, replaced whole
    kind = type(value)
    token = abc.get_cache_token()
    known, kinds = _sync_kinds
    if kind in kinds and token == known:
        return False
    if inspect.isawaitable(value):
        return True
    if kind is not GeneratorType:
        if token != known:
            _sync_kinds = (token, {kind})
        elif len(kinds) < _SYNC_KINDS_KEPT:
            kinds.add(kind)
    return False


def _condition_input(call: CallConditions, schema: type[BaseModel] | None) -> Any:
    if schema is None:
        return call.payload
    return validate_for_step(
        schema,
        call.payload,
        f"{call.path!r}: the input of its condition",
        "the schema it is checked against",
        run_id=call.run_id,
        step_id=call.path,
        stored=True,
    )


def _conditions(call: CallConditions, ctx: StepContext[Any]) -> Any:
    """Evaluate each condition in order; a list of booleans, or an awaitable of one."""
    results: list[bool] = []
    for index, (fn, schema) in enumerate(call.fns):
        ctx.input_data = _condition_input(call, schema)
        value = fn(ctx)
        if inspect.isawaitable(value):
            return _conditions_async(call, ctx, results, value, index + 1)
        results.append(bool(value))
    return results


async def _conditions_async(
    call: CallConditions, ctx: StepContext[Any], results: list[bool], first: Any, rest: int
) -> list[bool]:
    results.append(bool(await first))
    for fn, schema in call.fns[rest:]:
        ctx.input_data = _condition_input(call, schema)
        value = fn(ctx)
        if inspect.isawaitable(value):
            value = await value
        results.append(bool(value))
    return results


# --- outcomes ---------------------------------------------------------------------


def _step_outcome(
    call: CallStep, ctx: StepContext[Any], value: Any, started: float
) -> StepFinished:
    """Validate and encode-check what a step body returned; raise on anything wrong."""
    step = call.step
    model = value
    schema = step.output_schema
    # A model of it is the usual return, told by its type first: isinstance goes
    # through pydantic's ABC metaclass (about 0.3 us).
    if type(value) is not schema and not isinstance(value, schema):
        model = validate_output(step, value, call.run.run_id)
    try:
        output = dump_model(model)
    except (PydanticSerializationError, ValueError) as exc:
        # ValueError: JSON-mode dumping of bytes that are not UTF-8, for one.
        raise not_dumped_error(
            model, step._output_name, exc, run_id=call.run_id, step_id=step.id
        ) from exc
    if not _flat_and_plain(output):
        try:
            check_encodable(output, step._output_name, str_keys_known=True)
        except SnapshotEncodingError as exc:  # as _check, without a call per step
            exc.run_id, exc.step_id = call.run_id, step.id
            raise
    final_schema = call.final_schema
    if final_schema is None:
        result = None
    elif type(model) is final_schema:
        # The last step's output model is one of the workflow's output schema (the
        # usual case: the same model): validated already, and dumped the same.
        result = output
    else:
        result = _final(output, final_schema, call)
    state, request_context, changes = ctx._after()
    if request_context is None:  # untouched: still the run's own
        request_context = call.request_context
    # By position, in the fields' order: a dozen keywords cost a third of making it.
    return StepFinished(
        step.id,
        Outcome.SUCCESS,
        output,
        None,
        result,
        state,
        request_context,
        started,
        _clock.time(),
        True,
        call.token,
        changes,
    )


_FLAT_SCALARS: Final = frozenset({float, bool, bytes, type(None)})
_INT64: Final = range(-(2**63), 2**64)
_FLAT_KEYS: Final = 16
"""The most keys :func:`_flat_and_plain` looks at (at about 30, msgpack's trial costs the same)."""


def _flat_and_plain(output: Any) -> bool:
    """Whether a dumped output is a small dict of scalars msgpack surely encodes.

    The usual output (a model of a few plain fields), checked in a loop a fifth
    the cost of :func:`~runtime._snapshot.check_encodable`'s trial encoding. ``False``
    means only "try the encoding": a nested value, a non-ASCII string (it may
    hold a lone surrogate, which pydantic's JSON-mode dump lets through), a
    type told by identity only. Not :func:`~runtime._snapshot._plainly_encodable`,
    which walks every nested value in Python: for a large output msgpack's trial in
    C is the cheaper check, so this one gives up at the first container.
    """
    if type(output) is not dict or len(output) > _FLAT_KEYS:
        return False
    for key, value in output.items():
        if type(key) is not str or not key.isascii():
            return False
        kind = type(value)
        if kind is str:
            if not value.isascii():
                return False
        elif kind is int:
            if value not in _INT64:
                return False
        elif kind not in _FLAT_SCALARS:
            return False
    return True


def _conditions_outcome(
    call: CallConditions, ctx: StepContext[Any], value: Any, started: float
) -> StepFinished:
    return _read(call, value, started)


def _map_outcome(call: CallMap, ctx: StepContext[Any], value: Any, started: float) -> StepFinished:
    output = plain(value)
    _check(output, f"{call.path!r} output", call)
    return _read(call, copy_plain(output), started)


def _sleep_outcome(
    call: CallSleepLength, ctx: StepContext[Any], value: Any, started: float
) -> StepFinished:
    return _read(call, _wake_time(value, call), started)


def _read(call: ReaderCall, output: Any, started: float) -> StepFinished:
    """The reply to code that only reads the run: the state and request context as they were."""
    return StepFinished(
        step_id=call.step_id,
        outcome=Outcome.SUCCESS,
        output=output,
        error=None,
        result=None,
        state=call.state,
        request_context=call.request_context,
        started_at=started,
        ended_at=_clock.time(),
        token=call.token,
    )


def _failure(
    call: StepActorMessage, exc: BaseException, started: float, ctx: StepContext[Any] | None
) -> StepFinished:
    state, request_context = call.state, call.request_context
    changes: dict[str, Any] | None = {}  # a failed call changes nothing
    if isinstance(exc, SuspendRequest | BailOut) and ctx is not None:
        try:
            state, request_context, changes = _after(call, ctx)
        except BaseException as late:
            exc = late
    if isinstance(exc, SuspendRequest):
        outcome, output, result, error = Outcome.SUSPENDED, exc.payload, None, None
    elif isinstance(exc, BailOut):
        outcome, output, result, error = Outcome.BAILED, exc.result, exc.result, None
    else:
        outcome, output, result = Outcome.FAILED, None, None
        error = error_dict(exc, step_id=call.path or call.step_id)
    return StepFinished(
        step_id=call.step_id,
        outcome=outcome,
        output=output,
        error=error,
        result=result,
        state=state,
        request_context=request_context,
        started_at=started,
        ended_at=_clock.time(),
        retryable=not isinstance(exc, NonRetryableError),
        token=call.token,
        state_changes=changes,
    )


def _after(
    call: StepActorMessage, ctx: StepContext[Any]
) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
    """The state, request context (checked to be storable) and state changes the code leaves.

    Only a step body changes them.
    """
    if isinstance(call, CallStep):
        state, request_context, changes = ctx._after()
        if request_context is None:  # untouched: still the run's own
            request_context = call.request_context
        return state, request_context, changes
    return call.state, call.request_context, {}


def _report(
    call: StepActorMessage,
    span: Span | None,
    finished: StepFinished,
    exception: BaseException | None = None,
    *,
    traced: bool = False,
) -> None:
    """End the call's span, record its duration (for a traced call) and reply."""
    status, error = _SPAN_STATUS[finished.outcome], finished.error
    signal = call.signal
    if signal is not None and signal.aborted and error is None:
        # A sync body cannot be stopped: it ran on after its run let go of it (its
        # timeout passed, or the run was cancelled), and what it returns is ignored.
        # Its span and duration say what the run recorded, not "success".
        status, error, exception = _let_go(call.path or call.step_id, call.run_id, signal.reason)
    if span is not None:
        # Ended already (and this does nothing) if the run let go of the call first.
        _end_span(span, status, error, exception)
    if traced:
        meter = _otel.instruments()
        if meter is not None:
            meter.step_duration.record(
                max(0.0, finished.ended_at - finished.started_at),
                {
                    "callboard.workflow.id": call.run.workflow_id,
                    "callboard.step.id": call.path or call.step_id,
                    "callboard.status": status,
                },
            )
    try:  # tell_safely, without its call once per step (and not suppress(): three calls)
        call.run.reply_to.tell(finished)
    except ActorDeadError:
        return  # its run actor stopped: nobody awaits the reply


def _end_span(
    span: Span, status: str, error: dict[str, Any] | None, exception: BaseException | None
) -> None:
    """End a call's span with its status, and with its error if it failed."""
    span.end(
        status,
        failure=error,
        exception=exception if error is not None else None,
        **({} if error is None else {"error": error["name"]}),
    )


def _let_go(
    path: str, run_id: str, reason: str | None
) -> tuple[str, dict[str, Any] | None, BaseException | None]:
    """The status, error and exception of a call (at ``path``) its run let go of."""
    if reason == AbortReason.TIMEOUT:
        timeout = StepTimeoutError(
            f"step {path!r} did not finish within its timeout",
            run_id=run_id,
            step_id=path,
        )
        return Outcome.FAILED.value, error_dict(timeout, with_traceback=False), timeout
    return "canceled", None, None


def _fault(call: StepActorMessage, exc: Exception) -> None:
    emit(logging.ERROR, "step_actor_fault", step_id=call.step_id, exc_info=True)
    now = _clock.time()
    crash = RunCrashedError(
        f"callboard failed while running step {call.step_id!r}: {type(exc).__name__}: {exc}"
    )
    error = error_dict(crash, step_id=call.step_id)
    tell_safely(
        call.reply_to,
        StepFinished(
            step_id=call.step_id,
            outcome=Outcome.FAILED,
            output=None,
            error=error,
            result=None,
            state=call.state,
            request_context=call.request_context,
            started_at=now,
            ended_at=now,
            retryable=False,
            token=call.token,
        ),
    )


# --- checks -----------------------------------------------------------------------


def _wake_time(value: Any, call: CallSleepLength) -> float:
    """When a sleep whose length a function computed ends, as epoch seconds."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.timestamp()
    value = seconds_of(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if not 0 <= seconds <= MAX_SLEEP:  # NaN fails this too
            raise ValueError(
                f"{call.path!r}: the sleep function returned {value!r}; seconds must be "
                f"from 0 to {MAX_SLEEP:g}"
            )
        return _clock.time() + seconds
    raise TypeError(
        f"{call.path!r}: the sleep function returned {type(value).__name__}; "
        "it must return seconds (a number), a timedelta or a datetime"
    )


def _check(value: Any, path: str, call: StepActorMessage, *, str_keys_known: bool = False) -> None:
    try:
        check_encodable(value, path, str_keys_known=str_keys_known)
    except SnapshotEncodingError as exc:
        exc.run_id, exc.step_id = call.run_id, call.step_id
        raise


def _final(output: Any, schema: type[BaseModel], call: CallStep) -> Any:
    return stored_as(  # the last step's output, dumped
        schema,
        output,
        f"the output of the last step {call.step.id!r}",
        "the workflow's output schema",
        run_id=call.run_id,
        step_id=call.step.id,
    )
