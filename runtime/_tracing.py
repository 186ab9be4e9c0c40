"""Span events logged through structlog, and callboard's own quiet logger.

A run is a root span ``workflow_run``; each step is a child span
``workflow_step``. A span logs ``span_start`` and ``span_end`` with its ids, its
name and its fields, and ``span_end`` adds ``status`` and ``duration_ms``.

The library never configures structlog and is quiet by default: while
structlog runs with its built-in configuration, callboard's own events below
WARNING are dropped before they are built, the way the
standard library shows nothing below WARNING to a program that set up no
logging; warnings and errors go to the standard library's logger
``callboard`` if the program set up ``logging``, else to standard error.
Once the application configures structlog (or a test uses
``structlog.testing.capture_logs()``), every event goes through that
configuration.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from typing import Any

import structlog

from runtime import _otel
from runtime._ids import new_span_id

__all__ = [
    "FailingStreak",
    "Span",
    "emit",
    "logger",
    "observed",
    "step_logger",
]

logger: Any = structlog.get_logger("callboard")
"""callboard's own logger; emit through :func:`emit` so that quiet mode holds."""


def _configuration_key() -> tuple[Any, ...]:
    config = structlog.get_config()
    return (
        tuple(config["processors"]),
        config["logger_factory"],
        config["wrapper_class"],
        config["context_class"],
    )


# structlog's built-in configuration, as found at import. It is the one a
# program runs with until it configures structlog, and the one it returns to
# after `structlog.testing.capture_logs()` (which leaves `is_configured()` true)
# or `structlog.reset_defaults()`.
_builtin = None if structlog.is_configured() else _configuration_key()


# One bound logger per structlog configuration (its key above). `logger` is
# structlog's lazy proxy, which binds a new logger on every call unless the
# application set cache_logger_on_first_use; and once it has, the proxy keeps its
# first logger for good: a fresh proxy binds the logger of each new configuration.
_bound: tuple[tuple[Any, ...], Any] | None = None


# structlog's own configuration object, whose flag `structlog.is_configured()` returns
# and whose attributes `structlog.get_config()` copies into a new dict at each call:
# read here without those calls (a run logs eight span events, and asks before each
# step whether its span would be seen). Another structlog keeps the calls.
_structlog_config: Any = getattr(getattr(structlog, "_config", None), "_CONFIG", None)
if not isinstance(getattr(_structlog_config, "is_configured", None), bool) or not all(
    hasattr(_structlog_config, name)
    for name in (
        "default_processors",
        "logger_factory",
        "default_wrapper_class",
        "default_context_class",
    )
):
    _structlog_config = None


_UNSEEN = (object(), None, None, None, None, None)
"""`_seen` before a look-up, or after one of processors other than a list or a tuple:
its processors are no configuration's."""

# The configuration `_active_logger` last looked up, and its answer: the
# processors (the object, and a copy of a list's contents: `capture_logs()`
# swaps a configured list's contents in place, keeping the list), the logger
# factory, the wrapper class, the context class, and the logger (or None: the
# built-in configuration). Replaced whole, never mutated, so a thread reads one
# consistent tuple.
_seen: tuple[Any, Any, Any, Any, Any, Any] = _UNSEEN


def _active_logger() -> Any | None:
    """The logger to emit through, or ``None`` while structlog has its built-in configuration.

    Asked before every span event, so it reads structlog's configuration in
    place and compares it with the one it last saw; a changed configuration
    (``configure()``, ``reset_defaults()``, ``capture_logs()``) is seen at the
    next event.
    """
    config = _structlog_config
    if config is None:
        if not structlog.is_configured():
            return None
        return _logger_for(_configuration_key())
    if not config.is_configured:
        return None
    seen = _seen
    processors = config.default_processors
    if (
        processors is seen[0]
        and config.logger_factory is seen[2]
        and config.default_wrapper_class is seen[3]
        and config.default_context_class is seen[4]
        and (processors is seen[1] or processors == seen[1])
    ):
        return seen[5]
    return _look_up(config)


def _look_up(config: Any) -> Any | None:
    """:func:`_active_logger` for a configuration it has not seen: the answer, kept in `_seen`."""
    global _seen  # noqa: PLW0603 - a cache, replaced whole, never mutated
    processors = config.default_processors
    factory = config.logger_factory
    wrapper = config.default_wrapper_class
    context = config.default_context_class
    kind = type(processors)
    contents = processors.copy() if kind is list else processors
    found = _logger_for((tuple(contents), factory, wrapper, context))
    # Only a list or a tuple is cheap to compare; any other iterable is looked up each time.
    cheap = kind is list or kind is tuple
    _seen = (processors, contents, factory, wrapper, context, found) if cheap else _UNSEEN
    return found


def _logger_for(key: tuple[Any, ...]) -> Any | None:
    """The bound logger of the configuration ``key``, or ``None`` for the built-in one."""
    global _bound  # noqa: PLW0603 - a cache, replaced whole, never mutated
    if key == _builtin:
        return None
    bound = _bound
    if bound is None or bound[0] != key:
        bound = _bound = (key, structlog.get_logger("callboard").bind())
    return bound[1]


def observed() -> bool:
    """Whether a span started now would be seen: by an OpenTelemetry tracer, or in the logs.

    A span nobody sees need not be made: a step's span costs about a fifth of
    its step actor's time. Its id still goes to the step's logger.
    """
    if _otel.tracer() is not None:
        return True
    config = _structlog_config
    if config is not None and not config.is_configured:  # quiet: no call to ask
        return False
    return _active_logger() is not None


_stdlib_logger = logging.getLogger("callboard")
"""Where quiet mode's warnings and errors go once the program has set up standard logging."""


def emit(level: int, event: str, **fields: Any) -> None:
    """Log one of callboard's events, unless quiet mode drops it.

    In quiet mode a warning or an error still shows: through the standard
    library's logger ``callboard`` once the program has set up ``logging``
    (a handler on it or on the root logger: its handlers, levels and
    filters then apply), else on standard error, never on standard output:
    that is the program's (its ``--json``, its pipes).
    """
    active = _active_logger()
    if active is not None:
        active.log(level, event, **fields)
    elif level >= logging.WARNING:
        if _stdlib_logger.hasHandlers():
            _log_to_stdlib(level, event, fields)
        else:
            structlog.wrap_logger(structlog.PrintLogger(sys.stderr)).log(level, event, **fields)


def _log_to_stdlib(level: int, event: str, fields: dict[str, Any]) -> None:
    """An event as a record of the standard library's logger ``callboard``.

    The message is the event and its fields (``key=value``, as structlog
    shows them); a handler that formats records its own way finds them in the
    record's ``callboard_event`` and ``callboard_fields``, and ``exc_info``
    is the record's.
    """
    if not _stdlib_logger.isEnabledFor(level):
        return
    exc_info = fields.pop("exc_info", None)
    message = " ".join([event, *(f"{key}={value!r}" for key, value in fields.items())])
    _stdlib_logger.log(
        level,
        "%s",
        message,
        exc_info=exc_info,
        extra={"callboard_event": event, "callboard_fields": fields},
    )


class FailingStreak:
    """The passes of a background loop failing in a row, said in the log when they begin and end.

    A store that refuses writes fails a pass at once, for as long as the refusal
    lasts: logged at every pass, a loop that tries every second said the same
    thing hundreds of times. Said twice instead: the first failure (``failed``,
    with the error and ``hint``), and the first success after it (``recovered``,
    with ``failed_passes`` and ``failed_for``, in seconds).

    Args:
        failed: The event of the first failure of a streak.
        recovered: The event of the success that ends it.
        hint: What the failure event says happens next.
        fields: Fields both events carry (which worker's loop it is, say).
    """

    __slots__ = ("_failed", "_fields", "_hint", "_recovered", "_since", "count")

    def __init__(self, failed: str, recovered: str, hint: str, **fields: Any) -> None:
        self._failed = failed
        self._recovered = recovered
        self._hint = hint
        self._fields = fields
        self._since = 0.0
        self.count = 0  # the passes failed in this streak

    def failure(self, error: str) -> None:
        """A pass failed with ``error``: said if it begins a streak."""
        if not self.count:
            self._since = time.monotonic()
            emit(logging.WARNING, self._failed, error=error, hint=self._hint, **self._fields)
        self.count += 1

    def success(self) -> None:
        """A pass succeeded: said if it ends a streak."""
        if self.count:
            emit(
                logging.WARNING,
                self._recovered,
                failed_passes=self.count,
                failed_for=round(time.monotonic() - self._since, 1),
                **self._fields,
            )
            self.count = 0


_NO_SPAN: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
"""What :meth:`Span.current` returns without an OpenTelemetry span: a nullcontext holds
no state, so one serves every ``with`` block, on every thread, nested or not."""

_ENDING = threading.Lock()
"""Taken to mark a span ended: a step's span may be ended by two threads at once (see
:meth:`Span.end`)."""


class Span:
    """A span: logs ``span_start`` on :meth:`start` and ``span_end`` on :meth:`end`.

    With an OpenTelemetry tracer provider configured (see :mod:`runtime._otel`)
    it is also an OpenTelemetry span, whose ids are OpenTelemetry's own.

    Args:
        name: ``workflow_run`` or ``workflow_step``.
        trace_id: The trace this span belongs to.
        parent_span_id: The enclosing span's id, or ``None`` for a root span.
        span_id: The span's own id; a new random one when omitted.
        otel_parent: The OpenTelemetry parent: a context, or ``None`` for the
            span ``(trace_id, parent_span_id)`` (or ``trace_id`` and ``span_id``
            for a span without a parent id).
        otel_attributes: Attributes only the OpenTelemetry span carries.
        sampled: Whether a parent made from ids is sampled.
        fields: Fields added to both events (``run_id``, ``workflow_id``,
            ``step_id``, ``metadata``).
    """

    __slots__ = (
        "_ended",
        "_otel",
        "_started",
        "fields",
        "name",
        "otel_attributes",
        "otel_parent",
        "parent_span_id",
        "sampled",
        "span_id",
        "trace_id",
    )

    def __init__(
        self,
        name: str,
        trace_id: str,
        parent_span_id: str | None = None,
        span_id: str | None = None,
        *,
        otel_parent: Any = None,
        otel_attributes: dict[str, Any] | None = None,
        sampled: bool = True,
        **fields: Any,
    ) -> None:
        self.name = name
        self.trace_id = trace_id
        self.parent_span_id = parent_span_id
        self.span_id = span_id or new_span_id()
        self.fields = fields
        self.otel_parent = otel_parent
        self.otel_attributes = otel_attributes
        self.sampled = sampled
        self._started = 0
        self._ended = False
        self._otel: Any = None

    def otel_context(self) -> Any:
        """The OpenTelemetry context of this span, for its children; ``None`` without one."""
        span = self._otel
        return None if span is None else _otel.context_with(span)

    def current(self) -> contextlib.AbstractContextManager[Any]:
        """A ``with`` block in which this span is OpenTelemetry's current span.

        User code called inside it (a step body) makes its own spans children
        of this one. Without an OpenTelemetry span it does nothing.
        """
        span = self._otel
        return _NO_SPAN if span is None else _otel.using(span)

    def _start_otel(self, tracer: Any) -> None:
        parent = self.otel_parent
        if parent is None:
            parent = _otel.remote_parent(
                self.trace_id, self.parent_span_id or self.span_id, sampled=self.sampled
            )
        attributes = _otel.attributes(self.fields)
        if self.otel_attributes:
            attributes.update(self.otel_attributes)
        # An explicit context: a span is never parented to whatever span happens to be
        # current on an actor's thread.
        span = self._otel = tracer.start_span(
            self.name,
            context=parent if parent is not None else _otel.empty_context(),
            attributes=attributes,
        )
        # The log events name the spans OpenTelemetry exports: this one's id, and its
        # parent's (a run's workflow_start, a step's workflow_run), so that logs and
        # traces join by span id.
        own = span.get_span_context()
        if own.is_valid:
            self.span_id = f"{own.span_id:016x}"
            above = getattr(span, "parent", None)  # an SDK span's parent span context
            if above is not None and above.is_valid:
                self.parent_span_id = f"{above.span_id:016x}"

    def start(self) -> None:
        """Mark the span's start and log ``span_start``."""
        self._started = time.perf_counter_ns()
        tracer = _otel.tracer()
        if tracer is not None:
            self._start_otel(tracer)
        active = _active_logger()
        if active is not None:
            active.info(
                "span_start",
                trace_id=self.trace_id,
                span_id=self.span_id,
                parent_span_id=self.parent_span_id,
                name=self.name,
                **self.fields,
            )

    def end(
        self,
        status: str,
        *,
        failure: dict[str, Any] | None = None,
        exception: BaseException | None = None,
        **extra: Any,
    ) -> None:
        """Log ``span_end`` with the span's ``status`` and ``duration_ms``, once.

        A span ends once: a later call does nothing. A step's span is ended by
        the run actor's thread when its run lets go of the step (a timeout, a
        cancel), while the step's own thread ends it when the body returns; a
        sync body cannot be stopped, and may return at that very moment.

        Args:
            status: How the span ended (a run or step status).
            failure: The error (an ``ErrorInfo`` dict) a failed span records.
            exception: The exception a failed span records, when there is one.
            extra: More fields for the ``span_end`` event.
        """
        with _ENDING:
            if self._ended:
                return
            self._ended = True
        span = self._otel
        if span is not None:
            self._otel = None
            _otel.end_span(span, status, error=failure, exception=exception)
        active = _active_logger()
        if active is not None:
            active.info(
                "span_end",
                trace_id=self.trace_id,
                span_id=self.span_id,
                parent_span_id=self.parent_span_id,
                name=self.name,
                status=status,
                duration_ms=_milliseconds(time.perf_counter_ns() - self._started),
                **self.fields,
                **extra,
            )


def _milliseconds(nanoseconds: int) -> float:
    """``nanoseconds`` in milliseconds, to the nearest microsecond (a half rounds up).

    What ``round(ms, 3)`` gave, in integers and one division: ``round()`` to 3
    places goes through a decimal string, about four times as long (0.4 µs at
    every span's end).
    """
    return (nanoseconds + 500) // 1000 / 1000


def step_logger(**bound: Any) -> Any:
    """A structlog logger bound to a step's trace (``trace_id``, ``run_id``, ...).

    This is the logger a step body writes through (``ctx.logger``); its events
    are the application's and follow its structlog configuration.
    """
    return structlog.get_logger("callboard.step").bind(**bound)
