"""OpenTelemetry traces and metrics, when the application installed and configured them.

callboard depends only on the OpenTelemetry API, and only through the extra
``callboard[otel]``. The application brings an implementation (the SDK) and
sets its tracer and meter providers; until it does, every function here
returns at its first check, and without the package installed that check is
a module constant. So a program that does not use OpenTelemetry pays one
``if`` per span and per measurement.

The spans (see DESIGN.md, Tracing):

- ``workflow_start``: the ``start_async`` call itself, on the caller's
  thread, a child of the caller's current span (or of
  ``TracingOptions.parent``). Its trace and span ids become the run's
  ``trace_id`` and ``span_id``, persisted with the run.
- ``workflow_run``: one per time an actor drives the run (the first, then
  after each resume, wake or recovery), a child of the run's ``span_id``. A
  run that suspends and resumes has several, each with a span id of its own,
  all in the run's trace.
- ``workflow_step``: one per step call, a child of the ``workflow_run`` span
  that called it.

Metrics come from the meter ``callboard`` (see :class:`Instruments`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Protocol

try:  # the extra callboard[otel]
    from opentelemetry import context as otel_context
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace as otel_trace
    from opentelemetry.metrics import _internal as otel_metrics_state
except ImportError:  # pragma: no cover - the suite runs with the extra installed
    otel_trace = None  # type: ignore[assignment]
    otel_metrics = None  # type: ignore[assignment]
    otel_context = None  # type: ignore[assignment]
    otel_metrics_state = None  # type: ignore[assignment]

__all__ = [
    "INSTALLED",
    "Instruments",
    "MetricSource",
    "add_source",
    "attributes",
    "context_with",
    "discard_source",
    "empty_context",
    "end_span",
    "instruments",
    "parse_traceparent",
    "remote_parent",
    "traceparent_of",
    "tracer",
    "using",
]

INSTALLED: Final = otel_trace is not None
"""Whether the OpenTelemetry API can be imported."""

# The fast "nothing configured" check. ``get_tracer_provider()`` looks up an
# environment variable on every call (about 2 us) before it answers with its
# proxy; the API keeps the provider an application set in a module global,
# ``None`` until then, which costs a few nanoseconds to read. A provider named
# by an environment variable is loaded by the public getter, so with one set
# (or if a later API moves the global) every check takes the public way.
# tests/test_otel.py names these private attributes.
_TRACE_GLOBAL: Final = (
    otel_trace is not None
    and hasattr(otel_trace, "_TRACER_PROVIDER")
    and "OTEL_PYTHON_TRACER_PROVIDER" not in os.environ
)
_METER_GLOBAL: Final = (
    otel_metrics_state is not None
    and hasattr(otel_metrics_state, "_METER_PROVIDER")
    and "OTEL_PYTHON_METER_PROVIDER" not in os.environ
)

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def parse_traceparent(value: str) -> tuple[str, str, bool]:
    """The trace id, span id and sampled flag of a W3C ``traceparent`` header value.

    Raises:
        ValueError: if ``value`` is not a valid ``traceparent`` (version 00, ids
            not all zeros).
    """
    match = _TRACEPARENT.fullmatch(value.strip().lower())
    if match is None or match[1] == "ff":
        raise ValueError(
            f"parent must be a W3C traceparent like '00-<32 hex>-<16 hex>-01', got {value!r}"
        )
    trace_id, span_id = match[2], match[3]
    if int(trace_id, 16) == 0 or int(span_id, 16) == 0:
        raise ValueError(f"parent {value!r} has an all-zero trace id or span id")
    return trace_id, span_id, bool(int(match[4], 16) & 1)


def traceparent_of(value: Any) -> str | None:
    """The ``traceparent`` of an OpenTelemetry ``Span`` or ``SpanContext``, else ``None``."""
    if otel_trace is None:
        return None
    if isinstance(value, otel_trace.Span):
        value = value.get_span_context()
    if isinstance(value, otel_trace.SpanContext) and value.is_valid:
        flags = int(value.trace_flags) & 0xFF
        return f"00-{value.trace_id:032x}-{value.span_id:016x}-{flags:02x}"
    return None


# --- traces -----------------------------------------------------------------------

_tracer: tuple[object, Any] | None = None


def tracer() -> Any | None:
    """Callboard's tracer, or ``None`` while no tracer provider is configured (or installed)."""
    global _tracer  # noqa: PLW0603 - a cache, replaced whole
    if otel_trace is None or (_TRACE_GLOBAL and otel_trace._TRACER_PROVIDER is None):
        return None
    provider = otel_trace.get_tracer_provider()
    cached = _tracer
    if cached is not None and cached[0] is provider:
        return cached[1]
    if isinstance(provider, otel_trace.ProxyTracerProvider | otel_trace.NoOpTracerProvider):
        return None
    found = provider.get_tracer("callboard")
    _tracer = (provider, found)
    return found


def context_with(span: Any) -> Any:
    """An OpenTelemetry context whose current span is ``span``."""
    return otel_trace.set_span_in_context(span)


def using(span: Any) -> contextlib.AbstractContextManager[Any]:
    """Make ``span`` the current span inside the ``with`` block (it is not ended on exit)."""
    return otel_trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    )


def empty_context() -> Any:
    """An OpenTelemetry context without a span: a span started in it is a root."""
    return otel_context.Context()


def remote_parent(trace_id: str, span_id: str, *, sampled: bool = True) -> Any | None:
    """An OpenTelemetry context whose span is the (remote) span with these ids, else ``None``."""
    if otel_trace is None:
        return None
    try:
        parent = otel_trace.SpanContext(
            int(trace_id, 16),
            int(span_id, 16),
            is_remote=True,
            trace_flags=otel_trace.TraceFlags(
                otel_trace.TraceFlags.SAMPLED if sampled else otel_trace.TraceFlags.DEFAULT
            ),
        )
    except ValueError:
        return None
    if not parent.is_valid:
        return None
    return otel_trace.set_span_in_context(otel_trace.NonRecordingSpan(parent))


_ATTRIBUTE_NAMES: Final = {
    "run_id": "callboard.run.id",
    "workflow_id": "callboard.workflow.id",
    "step_id": "callboard.step.id",
}


_INT64: Final = range(-(2**63), 2**63)
"""The ints an OpenTelemetry attribute holds: exporters refuse others (OTLP's is an int64)."""


def _one_kind(items: list[Any] | tuple[Any, ...]) -> bool:
    """Whether ``items`` are all strs, all bools, all ints (of 64 bits) or all floats."""
    kinds: set[type] = {type(item) for item in items}
    if not kinds:
        return True
    if len(kinds) > 1:
        return False
    kind = kinds.pop()
    return kind in (str, bool, float) or (kind is int and all(item in _INT64 for item in items))


def _metadata_value(value: Any) -> Any | None:
    """A ``TracingOptions.metadata`` value as an OpenTelemetry attribute value (``None``: none).

    Attributes hold strings, booleans, signed 64-bit ints, floats and lists of
    one of them. Any other value is kept as its JSON text (a larger int as its
    digits), not left out: a span said nothing of ``{"tags": [...]}`` or of a
    nested mapping, while the structlog events carried them whole.
    """
    if value is None:
        return None
    if isinstance(value, str | bool | float):
        return value
    if isinstance(value, int):
        return value if value in _INT64 else str(value)
    if isinstance(value, list | tuple) and _one_kind(value):
        return tuple(value)
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=repr)
    except (TypeError, ValueError):  # a mapping with keys JSON has no form for
        return repr(value)


def attributes(fields: Mapping[str, Any]) -> dict[str, Any]:
    """OpenTelemetry attributes for a span's structlog fields (metadata flattened).

    Metadata values are converted by :func:`_metadata_value`; other fields are
    kept when they are scalars.
    """
    found: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "metadata" and isinstance(value, Mapping):
            for name, item in value.items():
                converted = _metadata_value(item)
                if converted is not None:
                    found[f"callboard.metadata.{name}"] = converted
        elif key in _ATTRIBUTE_NAMES:
            found[_ATTRIBUTE_NAMES[key]] = value
        elif isinstance(value, str | bool | int | float):
            found[f"callboard.{key}"] = value
    return found


def end_span(
    span: Any,
    status: str,
    *,
    error: Mapping[str, Any] | None = None,
    exception: BaseException | None = None,
) -> None:
    """End an OpenTelemetry span with callboard's ``status``; a failure is recorded as an error."""
    span.set_attribute("callboard.status", status)
    if status == "failed":
        description = None
        if error is not None:
            description = f"{error.get('name')}: {error.get('message')}"
        if exception is not None:
            span.record_exception(exception)
            description = description or f"{type(exception).__name__}: {exception}"
        elif error is not None:
            span.add_event(
                "exception",
                {
                    "exception.type": str(error.get("name")),
                    "exception.message": str(error.get("message")),
                },
            )
        span.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR, description))
    span.end()


# --- metrics ----------------------------------------------------------------------


class MetricSource(Protocol):
    """Something whose gauges are read when metrics are collected: a running runtime."""

    def queued_runs(self) -> int:
        """Runs waiting to be run: in this runtime's queue, or queued in a shared store."""
        ...

    def step_threads(self) -> int:
        """Threads in the runtime's step pool now."""
        ...


_sources: weakref.WeakSet[Any] = weakref.WeakSet()
_sources_lock = threading.Lock()


def _after_fork() -> None:
    # In a forked child the parent's runtimes are stopped: their gauges are not this
    # process's. A lock another thread held at the fork would stay held for ever.
    global _sources_lock, _instruments_lock  # noqa: PLW0603
    _sources_lock = threading.Lock()
    _instruments_lock = threading.Lock()
    _sources.clear()


os.register_at_fork(after_in_child=_after_fork)


def add_source(source: MetricSource) -> None:
    """Read ``source``'s gauges at each collection, while it lives or until discarded."""
    with _sources_lock:
        _sources.add(source)


def discard_source(source: MetricSource) -> None:
    """Stop reading ``source``'s gauges."""
    with _sources_lock:
        _sources.discard(source)


def _observe(read: Callable[[Any], int]) -> Callable[[Any], Iterable[Any]]:
    def callback(_options: Any) -> Iterable[Any]:
        with _sources_lock:
            sources = list(_sources)
        total = 0
        for source in sources:
            try:
                total += read(source)
            except Exception:
                continue
        return [otel_metrics.Observation(total)]

    return callback


class Instruments:
    """callboard's instruments on one meter provider (meter ``callboard``).

    Attributes:
        runs_started: Counter ``callboard.runs.started`` (by ``callboard.workflow.id``).
        runs_ended: Counter ``callboard.runs.ended`` (by workflow and ``callboard.status``).
        runs_active: Up-down counter ``callboard.runs.active``: runs an actor drives now.
        run_duration: Histogram ``callboard.run.duration`` in seconds, from the
            start to the end of a run (by workflow and status).
        step_duration: Histogram ``callboard.step.duration`` in seconds, of one
            step call (by workflow, ``callboard.step.id`` and status).
        commit_duration: Histogram ``callboard.store.commit.duration`` in
            seconds, of one group commit of a store's writer.

    Observable gauges ``callboard.runs.queued`` (runs waiting for room: in a
    runtime's queue or queued in a shared store) and
    ``callboard.step_pool.threads`` are read from every running runtime.
    """

    def __init__(self, meter: Any) -> None:
        self.runs_started = meter.create_counter(
            "callboard.runs.started", unit="{run}", description="Runs that began running"
        )
        self.runs_ended = meter.create_counter(
            "callboard.runs.ended", unit="{run}", description="Runs that ended, by status"
        )
        self.runs_active = meter.create_up_down_counter(
            "callboard.runs.active", unit="{run}", description="Runs an actor drives now"
        )
        self.run_duration = meter.create_histogram(
            "callboard.run.duration", unit="s", description="From a run's start to its end"
        )
        self.step_duration = meter.create_histogram(
            "callboard.step.duration", unit="s", description="One call of a step"
        )
        self.commit_duration = meter.create_histogram(
            "callboard.store.commit.duration",
            unit="s",
            description="One group commit of a store's writer",
        )
        meter.create_observable_gauge(
            "callboard.runs.queued",
            callbacks=[_observe(lambda source: source.queued_runs())],
            unit="{run}",
            description="Runs waiting for room to run",
        )
        meter.create_observable_gauge(
            "callboard.step_pool.threads",
            callbacks=[_observe(lambda source: source.step_threads())],
            unit="{thread}",
            description="Threads in the step pools",
        )

    def run_ended(self, workflow_id: str, status: str, created_at: float, now: float) -> None:
        """Count a run's end and record its duration, by workflow and status."""
        ended = {"callboard.workflow.id": workflow_id, "callboard.status": status}
        self.runs_ended.add(1, ended)
        self.run_duration.record(max(0.0, now - created_at), ended)


_instruments: tuple[object, Instruments] | None = None
_instruments_lock = threading.Lock()


def instruments() -> Instruments | None:
    """Callboard's instruments, or ``None`` while no meter provider is configured (or installed)."""
    global _instruments  # noqa: PLW0603 - a cache, replaced whole
    if otel_metrics is None or (_METER_GLOBAL and otel_metrics_state._METER_PROVIDER is None):
        return None
    provider = otel_metrics.get_meter_provider()
    cached = _instruments
    if cached is not None and cached[0] is provider:
        return cached[1]
    if isinstance(provider, otel_metrics.NoOpMeterProvider) or type(provider).__name__ == (
        "_ProxyMeterProvider"
    ):
        return None
    with _instruments_lock:
        cached = _instruments
        if cached is not None and cached[0] is provider:
            return cached[1]
        made = Instruments(provider.get_meter("callboard"))
        _instruments = (provider, made)
        return made


def count_canceled_unheld(
    snapshot: Mapping[str, Any], ended_at: float, *, status: str | None = None
) -> None:
    """Count the end of a run canceled with no run actor to count it.

    Asleep, suspended, or left by a worker that died with its cancel asked for. A
    run that never began (still ``pending``: queued) was not counted as started,
    and is not counted ended either. Its time counts from its last restart, if
    any, as a run actor counts it.

    Args:
        snapshot: The run's snapshot (its workflow and times; its status, unless
            ``status`` is given, as it was before the cancel marked it).
        ended_at: When the cancel ended it.
        status: The run's status before the cancel, for a snapshot marked already.
    """
    meter = instruments()
    if meter is None or (snapshot["status"] if status is None else status) == "pending":
        return
    since = snapshot.get("restarted_at", snapshot["created_at"])
    meter.run_ended(snapshot["workflow_id"], "canceled", since, ended_at)
