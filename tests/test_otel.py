"""OpenTelemetry: runs and steps as real spans, and callboard's metrics, read in memory.

The tracer and meter providers are process-wide: this module sets them for its own
tests and unsets them afterwards, and clears the exporter between tests. Whether
nothing happens without OpenTelemetry is checked in fresh interpreters.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import opentelemetry.metrics._internal as metrics_state
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from opentelemetry.util._once import Once
from structlog.testing import capture_logs

from runtime import Runtime, StepContext, TracingOptions, create_step, create_workflow
from tests._support import ROOT, Value, wait_until

WAIT = 10.0


@pytest.fixture(scope="module")
def providers() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    """The SDK's providers, set globally for this module's tests and unset after them.

    OpenTelemetry lets a process set its providers once; unsetting them (as the
    OpenTelemetry project's own test utilities do, through the same private
    globals) keeps the other test modules running without OpenTelemetry.
    """
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    global _meter_provider  # noqa: PLW0603 - for a test that swaps the tracer provider
    _meter_provider = meter_provider
    _reset_globals()
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    try:
        yield exporter, reader
    finally:
        _reset_globals()
        tracer_provider.shutdown()
        meter_provider.shutdown()


_meter_provider: MeterProvider | None = None


def _reset_globals() -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    metrics_state._METER_PROVIDER_SET_ONCE = Once()
    metrics_state._METER_PROVIDER = None


@contextlib.contextmanager
def _tracer_provider_swapped(provider: TracerProvider | None) -> Iterator[None]:
    """The session's meter provider with ``provider`` as the tracer provider (or none)."""
    kept = trace.get_tracer_provider()
    _reset_globals()
    if provider is not None:
        trace.set_tracer_provider(provider)
    metrics.set_meter_provider(_meter_provider)
    try:
        yield
    finally:
        _reset_globals()
        trace.set_tracer_provider(kept)
        metrics.set_meter_provider(_meter_provider)


@pytest.fixture
def exporter(
    providers: tuple[InMemorySpanExporter, InMemoryMetricReader],
) -> Iterator[InMemorySpanExporter]:
    spans = providers[0]
    spans.clear()
    yield spans
    spans.clear()


@pytest.fixture
def reader(providers: tuple[InMemorySpanExporter, InMemoryMetricReader]) -> InMemoryMetricReader:
    found = providers[1]
    found.get_metrics_data()  # start from what is measured from here on (cumulative: diffs)
    return found


def _step(step_id: str, execute: Any) -> Any:
    return create_step(id=step_id, input_schema=Value, output_schema=Value, execute=execute)


def _two_steps(workflow_id: str, second: Any = None) -> Any:
    return (
        create_workflow(id=workflow_id, input_schema=Value, output_schema=Value)
        .then(_step("first", lambda ctx: Value(value=ctx.input_data.value.upper())))
        .then(_step("second", second or (lambda ctx: Value(value=ctx.input_data.value + "!"))))
        .commit()
    )


def _named(spans: Any, name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def _of_workflow(exporter: InMemorySpanExporter, name: str, workflow_id: str) -> list[ReadableSpan]:
    """The finished spans called ``name`` of the runs of ``workflow_id``."""
    return [
        span
        for span in _named(exporter.get_finished_spans(), name)
        if span.attributes is not None
        and span.attributes.get("callboard.workflow.id") == workflow_id
    ]


def _step_durations(reader: InMemoryMetricReader, workflow_id: str) -> list[Any]:
    """The ``callboard.step.duration`` points of ``workflow_id``'s steps."""
    return [
        point
        for point in _points(reader).get("callboard.step.duration", [])
        if point.attributes["callboard.workflow.id"] == workflow_id
    ]


def _held_step(workflow_id: str, let_go: threading.Event, **options: Any) -> Any:
    """A workflow of one sync step that blocks until ``let_go`` (or ``WAIT``) whatever comes."""

    def slow(ctx: StepContext[Value]) -> Value:
        let_go.wait(WAIT)
        return ctx.input_data

    step = create_step(
        id=workflow_id, input_schema=Value, output_schema=Value, execute=slow, **options
    )
    return (
        create_workflow(id=workflow_id, input_schema=Value, output_schema=Value).then(step).commit()
    )


def _hex(value: int, width: int) -> str:
    return f"{value:0{width}x}"


def test_a_run_is_a_start_span_a_run_span_and_a_span_per_step(
    runtime: Runtime, exporter: InMemorySpanExporter
) -> None:
    wf = runtime.register(_two_steps("otel_ok"))

    result = wf.create_run().start(
        input_data={"value": "hi"},
        tracing_options=TracingOptions(metadata={"tenant": "acme"}),
        timeout=WAIT,
    )

    assert result.status == "success"
    spans = exporter.get_finished_spans()
    (start,) = _named(spans, "workflow_start")
    (run,) = _named(spans, "workflow_run")
    steps = _named(spans, "workflow_step")
    assert start.parent is None  # no span was current: the run is a trace of its own
    # The run's ids are the start span's: a result leads to its trace.
    assert _hex(start.context.trace_id, 32) == result.trace_id
    assert _hex(start.context.span_id, 16) == result.span_id
    assert run.parent is not None and run.parent.span_id == start.context.span_id
    assert {span.attributes["callboard.step.id"] for span in steps} == {"first", "second"}
    for span in steps:
        assert span.parent is not None and span.parent.span_id == run.context.span_id
        assert span.attributes["callboard.run.id"] == result.run_id
        assert span.attributes["callboard.workflow.id"] == "otel_ok"
        assert span.attributes["callboard.step.attempt"] == 1
        assert span.attributes["callboard.status"] == "success"
    assert {span.context.trace_id for span in spans} == {start.context.trace_id}
    assert run.attributes["callboard.status"] == "success"
    assert run.attributes["callboard.metadata.tenant"] == "acme"
    assert start.attributes["callboard.run.id"] == result.run_id


def test_metadata_that_is_no_attribute_value_as_it_stands_is_kept_in_a_form_that_is(
    runtime: Runtime, exporter: InMemorySpanExporter
) -> None:
    # Lists and mappings were left out of the spans (the structlog events carried them),
    # and an int beyond 64 bits was put on them, which an OTLP exporter cannot encode.
    wf = runtime.register(_two_steps("otel_metadata"))
    metadata = {
        "tags": ["blue", "green"],
        "sizes": [1, 2],
        "limits": {"cpu": 2, "names": ["a"]},
        "mixed": [1, "a"],
        "hash": 2**64 - 1,
        "small": -(2**63),
        "nothing": None,
        "empty": [],
        "tenant": "acme",
    }

    result = wf.create_run().start(
        input_data={"value": "hi"},
        tracing_options=TracingOptions(metadata=metadata),
        timeout=WAIT,
    )

    assert result.status == "success"
    for name in ("workflow_start", "workflow_run"):
        (span,) = _of_workflow(exporter, name, "otel_metadata")
        found = {
            key.removeprefix("callboard.metadata."): value
            for key, value in (span.attributes or {}).items()
            if key.startswith("callboard.metadata.")
        }
        assert found == {
            "tags": ("blue", "green"),
            "sizes": (1, 2),
            "limits": '{"cpu":2,"names":["a"]}',
            "mixed": '[1,"a"]',
            "hash": "18446744073709551615",
            "small": -(2**63),
            "empty": (),
            "tenant": "acme",
        }


@pytest.mark.usefixtures("_structlog_reset")
def test_the_log_events_name_the_spans_opentelemetry_exports(
    runtime: Runtime, exporter: InMemorySpanExporter
) -> None:
    # The run's events named its workflow_start span, and each step's (with what the
    # step logged) an id no exported span had: logs and traces did not join by span id.
    logged: list[dict[str, Any]] = []

    def second(ctx: StepContext[Value]) -> Value:
        ctx.logger.info("charging card")
        return ctx.input_data

    wf = runtime.register(_two_steps("otel_logs", second=second))
    with capture_logs() as logs:
        result = wf.create_run().start(input_data={"value": "hi"}, timeout=WAIT)
        logged = list(logs)

    assert result.status == "success"
    spans = {_hex(span.context.span_id, 16): span for span in exporter.get_finished_spans()}
    starts = [event for event in logged if event["event"] == "span_start"]
    assert {event["name"] for event in starts} == {"workflow_run", "workflow_step"}
    for event in starts:
        span = spans[event["span_id"]]
        assert span.name == event["name"]
        assert span.parent is not None
        assert event["parent_span_id"] == _hex(span.parent.span_id, 16)
    (charging,) = [event for event in logged if event["event"] == "charging card"]
    assert spans[charging["span_id"]].attributes["callboard.step.id"] == "second"


def test_a_run_started_inside_a_span_is_its_child(
    runtime: Runtime, exporter: InMemorySpanExporter
) -> None:
    wf = runtime.register(_two_steps("otel_nested"))
    tracer = trace.get_tracer("the-app")

    with tracer.start_as_current_span("POST /runs") as request:
        started = wf.create_run().start_async(input_data={"value": "hi"})
    result = wf.create_run(started.run_id).wait(WAIT)

    assert result.status == "success"
    spans = exporter.get_finished_spans()
    (start,) = _named(spans, "workflow_start")
    (run,) = _named(spans, "workflow_run")
    assert start.parent is not None
    assert start.parent.span_id == request.get_span_context().span_id
    assert run.parent is not None and run.parent.span_id == start.context.span_id
    trace_id = request.get_span_context().trace_id
    assert {span.context.trace_id for span in spans} == {trace_id}
    assert result.trace_id == _hex(trace_id, 32)


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_run_that_waits_in_the_queue_stays_in_the_trace_it_was_started_in(
    store: str, tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    # Its first record was taken before its workflow_start span gave it its ids: on a
    # durable store a run that waited went on from that record, in a trace of its own,
    # and in memory its result read so while it waited.
    release = threading.Event()
    workflow = _held_until("otel_queued", release)
    where = "memory" if store == "memory" else tmp_path / "runs.db"
    tracer = trace.get_tracer("the-app")
    with Runtime(store=where, max_concurrent_runs=1) as rt:
        wf = rt.register(workflow)
        first, second = wf.create_run(), wf.create_run()
        with tracer.start_as_current_span("POST /runs") as request:
            first.start_async(input_data={"value": "a"})
            second.start_async(input_data={"value": "b"})
        waiting = wf.get_workflow_run_execution_result(second.run_id)
        release.set()
        done = second.wait(WAIT)

    trace_id = _hex(request.get_span_context().trace_id, 32)
    assert waiting is not None and waiting.status == "pending"
    assert (waiting.trace_id, done.trace_id) == (trace_id, trace_id)
    spans = exporter.get_finished_spans()
    (start,) = [s for s in _named(spans, "workflow_start") if _run_of(s) == second.run_id]
    (run,) = [s for s in _named(spans, "workflow_run") if _run_of(s) == second.run_id]
    assert run.parent is not None and run.parent.span_id == start.context.span_id
    assert done.span_id == _hex(start.context.span_id, 16)


def _held_until(workflow_id: str, release: threading.Event) -> Any:
    """A one-step workflow whose step returns once ``release`` is set."""

    def held(ctx: Any) -> Value:
        release.wait(WAIT)
        return ctx.input_data

    step = _step("held", held)
    return (
        create_workflow(id=workflow_id, input_schema=Value, output_schema=Value).then(step).commit()
    )


def _run_of(span: ReadableSpan) -> Any:
    return (span.attributes or {}).get("callboard.run.id")


def test_a_time_traveled_run_is_a_trace_under_the_callers_span_like_a_start(
    runtime: Runtime, exporter: InMemorySpanExporter
) -> None:
    # It had no workflow_start span: its workflow_run hung under a span never exported,
    # in a trace of its own, whatever span was current.
    wf = runtime.register(_two_steps("otel_travel"))
    first = wf.create_run().start(input_data={"value": "hi"}, timeout=WAIT)
    exporter.clear()
    tracer = trace.get_tracer("the-app")

    with tracer.start_as_current_span("debug") as debug:
        result = wf.time_travel(first.run_id, step="second").wait(WAIT)

    assert result.status == "success"
    spans = exporter.get_finished_spans()
    (start,) = _named(spans, "workflow_start")
    (run,) = _named(spans, "workflow_run")
    assert start.parent is not None and start.parent.span_id == debug.get_span_context().span_id
    assert run.parent is not None and run.parent.span_id == start.context.span_id
    assert result.trace_id == _hex(debug.get_span_context().trace_id, 32)
    assert result.span_id == _hex(start.context.span_id, 16)


def test_a_run_started_from_async_code_inside_a_span_is_its_child(
    runtime: Runtime, exporter: InMemorySpanExporter
) -> None:
    wf = runtime.register(_two_steps("otel_async"))
    tracer = trace.get_tracer("the-app")

    async def handler() -> Any:
        # The awaitable twin runs on a call thread: the caller's context goes with it.
        with tracer.start_as_current_span("POST /runs") as request:
            started = await wf.create_run().astart_async(input_data={"value": "hi"})
        return request, await wf.create_run(started.run_id).wait_async(WAIT)

    request, result = asyncio.run(handler())

    assert result.trace_id == _hex(request.get_span_context().trace_id, 32)
    (start,) = _named(exporter.get_finished_spans(), "workflow_start")
    assert start.parent is not None
    assert start.parent.span_id == request.get_span_context().span_id


def test_a_traceparent_string_is_the_parent(
    runtime: Runtime, exporter: InMemorySpanExporter
) -> None:
    wf = runtime.register(_two_steps("otel_traceparent"))
    trace_id, span_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"

    result = wf.create_run().start(
        input_data={"value": "hi"},
        tracing_options=TracingOptions(parent=f"00-{trace_id}-{span_id}-01"),
        timeout=WAIT,
    )

    assert result.trace_id == trace_id
    spans = exporter.get_finished_spans()
    (start,) = _named(spans, "workflow_start")
    assert start.parent is not None and _hex(start.parent.span_id, 16) == span_id
    assert {_hex(span.context.trace_id, 32) for span in spans} == {trace_id}


def test_a_span_object_is_taken_as_a_parent(
    runtime: Runtime, exporter: InMemorySpanExporter
) -> None:
    wf = runtime.register(_two_steps("otel_span_parent"))
    with trace.get_tracer("the-app").start_as_current_span("job") as job:
        options = TracingOptions(parent=job)
    result = wf.create_run().start(input_data={"value": "x"}, tracing_options=options, timeout=WAIT)

    assert options.parent is not None and options.parent.startswith("00-")
    assert result.trace_id == _hex(job.get_span_context().trace_id, 32)
    (start,) = _named(exporter.get_finished_spans(), "workflow_start")
    assert start.parent is not None and start.parent.span_id == job.get_span_context().span_id


@pytest.mark.parametrize(
    "options",
    [
        {"parent": "not a traceparent"},
        {"parent": "00-" + "0" * 32 + "-b7ad6b7169203331-01"},
        {"parent": 42},
        {"parent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "trace_id": "abc"},
    ],
)
def test_a_bad_parent_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"parent|trace"):
        TracingOptions(**options)


def test_a_failed_step_records_its_exception_and_an_error_status(
    runtime: Runtime, exporter: InMemorySpanExporter
) -> None:
    def boom(ctx: StepContext[Value]) -> Value:
        raise KeyError("missing")

    wf = runtime.register(_two_steps("otel_failed", second=boom))
    result = wf.create_run().start(input_data={"value": "hi"}, timeout=WAIT)

    assert result.status == "failed"
    spans = exporter.get_finished_spans()
    (second,) = [s for s in spans if s.attributes.get("callboard.step.id") == "second"]
    assert second.status.status_code is StatusCode.ERROR
    (event,) = [e for e in second.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "KeyError"
    assert "missing" in str(event.attributes["exception.message"])
    (run,) = _named(spans, "workflow_run")
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes["callboard.status"] == "failed"
    assert any(e.name == "exception" for e in run.events)


def test_a_retried_step_has_a_span_per_attempt(
    runtime: Runtime, exporter: InMemorySpanExporter
) -> None:
    calls: list[int] = []

    def flaky(ctx: StepContext[Value]) -> Value:
        calls.append(ctx.retry_count)
        if len(calls) < 2:
            raise RuntimeError("once")
        return ctx.input_data

    step = create_step(
        id="flaky", input_schema=Value, output_schema=Value, execute=flaky, retries=1
    )
    wf = runtime.register(
        create_workflow(id="otel_retry", input_schema=Value, output_schema=Value)
        .then(step)
        .commit()
    )
    assert wf.create_run().start(input_data={"value": "x"}, timeout=WAIT).status == "success"

    attempts = sorted(
        (span.attributes["callboard.step.attempt"], span.attributes["callboard.status"])
        for span in _named(exporter.get_finished_spans(), "workflow_step")
    )
    assert attempts == [(1, "failed"), (2, "success")]


def _suspending(workflow_id: str) -> Any:
    def ask(ctx: StepContext[Value]) -> Value:
        if ctx.resume_data is None:
            ctx.suspend({"question": "go?"})
        return Value(value=f"{ctx.input_data.value}:{ctx.resume_data['answer']}")

    return (
        create_workflow(id=workflow_id, input_schema=Value, output_schema=Value)
        .then(_step("before", lambda ctx: ctx.input_data))
        .then(_step("ask", ask))
        .commit()
    )


def test_a_resumed_run_continues_its_trace_across_runtimes_with_new_span_ids(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    store = tmp_path / "runs.db"
    tracer = trace.get_tracer("the-app")
    with Runtime(store=store) as first:
        wf = first.register(_suspending("otel_resume"))
        with tracer.start_as_current_span("POST /runs") as request:
            run = wf.create_run()
            waiting = run.start(input_data={"value": "v"}, timeout=WAIT)
        assert waiting.status == "suspended"
    with Runtime(store=store) as second:
        wf = second.register(_suspending("otel_resume"))
        done = wf.create_run(run.run_id).resume(resume_data={"answer": "yes"}, timeout=WAIT)
    assert done.status == "success"

    spans = exporter.get_finished_spans()
    trace_id = request.get_span_context().trace_id
    assert {span.context.trace_id for span in spans} == {trace_id}
    (start,) = _named(spans, "workflow_start")
    runs = _named(spans, "workflow_run")
    assert [span.attributes["callboard.status"] for span in runs] == ["suspended", "success"]
    for span in runs:
        assert span.parent is not None and span.parent.span_id == start.context.span_id
    span_ids = [span.context.span_id for span in spans]
    assert len(span_ids) == len(set(span_ids))
    # Each step span is the child of the run span that called it.
    asks = _named(spans, "workflow_step")
    parents = {span.attributes["callboard.step.id"]: [] for span in asks}
    for span in asks:
        assert span.parent is not None
        parents[span.attributes["callboard.step.id"]].append(span.parent.span_id)
    assert parents["before"] == [runs[0].context.span_id]
    assert parents["ask"] == [runs[0].context.span_id, runs[1].context.span_id]


# --- metrics --------------------------------------------------------------------------


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    found: dict[str, list[Any]] = {}
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            if scope.scope.name != "callboard":
                continue
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def _sum(points: list[Any], **attributes: Any) -> float:
    keys = {f"callboard.{key.replace('_', '.')}": value for key, value in attributes.items()}
    return sum(
        point.value
        for point in points
        if all(point.attributes.get(key) == value for key, value in keys.items())
    )


def test_runs_are_counted_by_workflow_and_status_with_their_durations(
    runtime: Runtime, reader: InMemoryMetricReader
) -> None:
    def boom(ctx: StepContext[Value]) -> Value:
        raise RuntimeError("no")

    ok = runtime.register(_two_steps("metrics_ok"))
    bad = runtime.register(_two_steps("metrics_bad", second=boom))
    for _ in range(3):
        assert ok.create_run().start(input_data={"value": "a"}, timeout=WAIT).status == "success"
    assert bad.create_run().start(input_data={"value": "a"}, timeout=WAIT).status == "failed"

    points = _points(reader)
    started = points["callboard.runs.started"]
    assert _sum(started, workflow_id="metrics_ok") == 3
    assert _sum(started, workflow_id="metrics_bad") == 1
    ended = points["callboard.runs.ended"]
    assert _sum(ended, workflow_id="metrics_ok", status="success") == 3
    assert _sum(ended, workflow_id="metrics_bad", status="failed") == 1
    assert _sum(ended, workflow_id="metrics_bad", status="success") == 0
    (runs,) = [
        p
        for p in points["callboard.run.duration"]
        if p.attributes["callboard.workflow.id"] == "metrics_ok"
    ]
    assert runs.count == 3 and runs.sum >= 0
    steps = [
        p
        for p in points["callboard.step.duration"]
        if p.attributes["callboard.workflow.id"] == "metrics_bad"
    ]
    outcomes = {
        (p.attributes["callboard.step.id"], p.attributes["callboard.status"]) for p in steps
    }
    assert outcomes == {("first", "success"), ("second", "failed")}
    # Every run that began has ended: none is in flight.
    assert _sum(points["callboard.runs.active"], workflow_id="metrics_ok") == 0


def test_a_restart_is_counted_as_a_start_and_its_duration_from_the_restart(
    runtime: Runtime, reader: InMemoryMetricReader
) -> None:
    # It was counted as ended twice and started once (started minus ended went below
    # zero), and its duration ran from the run's creation, through the time it lay failed.
    broken = {"now": True}

    def flaky(ctx: StepContext[Value]) -> Value:
        if broken["now"]:
            raise RuntimeError("a bad deploy")
        return ctx.input_data

    wf = runtime.register(_two_steps("metrics_restart", second=flaky))
    run = wf.create_run()
    assert run.start(input_data={"value": "a"}, timeout=WAIT).status == "failed"
    time.sleep(1.0)  # lying failed, before the fix is deployed
    broken["now"] = False
    began = time.monotonic()
    assert run.restart(timeout=WAIT).status == "success"
    restarting = time.monotonic() - began

    points = _points(reader)
    assert _sum(points["callboard.runs.started"], workflow_id="metrics_restart") == 2
    assert _sum(points["callboard.runs.ended"], workflow_id="metrics_restart") == 2
    (succeeded,) = [
        p
        for p in points["callboard.run.duration"]
        if p.attributes["callboard.workflow.id"] == "metrics_restart"
        and p.attributes["callboard.status"] == "success"
    ]
    assert succeeded.sum <= restarting + 0.01  # within the restart: counted from it


def test_a_run_canceled_while_queued_is_not_counted_ended_as_it_never_started(
    reader: InMemoryMetricReader,
) -> None:
    # In memory the check read the status after the cancel had marked it canceled: the
    # run was counted ended (and its duration recorded) though never counted started.
    release = threading.Event()
    workflow = _held_until("metrics_queued", release)
    with Runtime(max_concurrent_runs=1) as rt:
        wf = rt.register(workflow)
        first, second = wf.create_run(), wf.create_run()
        first.start_async(input_data={"value": "a"})
        second.start_async(input_data={"value": "b"})
        assert second.cancel() is True
        release.set()
        assert first.wait(WAIT).status == "success"

    points = _points(reader)
    assert _sum(points["callboard.runs.started"], workflow_id="metrics_queued") == 1
    ended = points["callboard.runs.ended"]
    assert _sum(ended, workflow_id="metrics_queued") == 1
    assert _sum(ended, workflow_id="metrics_queued", status="canceled") == 0


def test_a_restarted_run_canceled_while_suspended_counts_its_time_from_the_restart(
    runtime: Runtime, reader: InMemoryMetricReader
) -> None:
    # Canceled with no actor to count it, its duration ran from the run's creation,
    # through the time it lay failed, where a run actor counts from the restart.
    broken = {"now": True}

    def ask(ctx: StepContext[Value]) -> Value:
        if broken["now"]:
            raise RuntimeError("a bad deploy")
        return ctx.suspend({}) if ctx.resume_data is None else ctx.input_data

    wf = runtime.register(_two_steps("metrics_restart_cancel", second=ask))
    run = wf.create_run()
    assert run.start(input_data={"value": "a"}, timeout=WAIT).status == "failed"
    time.sleep(1.0)  # lying failed
    broken["now"] = False
    assert run.restart(timeout=WAIT).status == "suspended"
    assert run.cancel() is True

    (canceled,) = [
        p
        for p in _points(reader)["callboard.run.duration"]
        if p.attributes["callboard.workflow.id"] == "metrics_restart_cancel"
        and p.attributes["callboard.status"] == "canceled"
    ]
    assert canceled.sum < 1.0  # from the restart, not from before the second it lay failed


def test_step_durations_are_recorded_with_metrics_and_no_tracer(
    reader: InMemoryMetricReader,
) -> None:
    # Nobody sees a step's span here (no tracer, structlog unconfigured), so none
    # is made; its duration is measured all the same.
    with _tracer_provider_swapped(None), Runtime() as rt:
        wf = rt.register(_two_steps("metrics_no_tracer"))
        result = wf.create_run().start(input_data={"value": "a"}, timeout=WAIT)
    assert result.status == "success"
    steps = [
        p
        for p in _points(reader)["callboard.step.duration"]
        if p.attributes["callboard.workflow.id"] == "metrics_no_tracer"
    ]
    assert {
        (p.attributes["callboard.step.id"], p.attributes["callboard.status"]) for p in steps
    } == {
        ("first", "success"),
        ("second", "success"),
    }


def test_runs_in_flight_queued_runs_and_pool_threads_are_gauged(
    reader: InMemoryMetricReader,
) -> None:
    import threading

    gate = threading.Event()

    def held(ctx: StepContext[Value]) -> Value:
        gate.wait(WAIT)
        return ctx.input_data

    workflow = (
        create_workflow(id="metrics_gauges", input_schema=Value, output_schema=Value)
        .then(_step("held", held))
        .commit()
    )
    with Runtime(max_concurrent_runs=2) as rt:
        wf = rt.register(workflow)
        ids = [wf.create_run().start_async(input_data={"value": "x"}).run_id for _ in range(5)]
        try:
            points: dict[str, list[Any]] = {}
            # Until both runs in room are in their step and the supervisor has queued the
            # other three (their starts may reach it after the first two runs began).
            for _ in range(200):
                points = _points(reader)
                active = points.get("callboard.runs.active", [])
                queued = points.get("callboard.runs.queued", [])
                if _sum(active, workflow_id="metrics_gauges") == 2 and _sum(queued) == 3:
                    break
                gate.wait(0.02)
            assert _sum(points["callboard.runs.active"], workflow_id="metrics_gauges") == 2
            assert _sum(points["callboard.runs.queued"]) == 3
            assert _sum(points["callboard.step_pool.threads"]) >= 2
        finally:
            gate.set()
        for run_id in ids:
            assert wf.create_run(run_id).wait(WAIT).status == "success"
    points = _points(reader)
    assert _sum(points["callboard.runs.active"], workflow_id="metrics_gauges") == 0
    # A stopped runtime is no longer read.
    assert _sum(points.get("callboard.runs.queued", [])) == 0


def test_store_commits_are_timed(tmp_path: Path, reader: InMemoryMetricReader) -> None:
    with Runtime(store=tmp_path / "runs.db") as rt:
        wf = rt.register(_two_steps("metrics_commit"))
        assert wf.create_run().start(input_data={"value": "a"}, timeout=WAIT).status == "success"
    (commits,) = [
        p
        for p in _points(reader)["callboard.store.commit.duration"]
        if p.attributes["callboard.store.busy"] is False
    ]
    assert commits.count >= 2 and commits.sum > 0


# --- without OpenTelemetry ------------------------------------------------------------

_PROBE = textwrap.dedent(
    """
    import sys
    {block}
    from pydantic import BaseModel
    from runtime import Runtime, create_step, create_workflow
    from runtime import _otel

    class V(BaseModel):
        v: str

    step = create_step(id="s", input_schema=V, output_schema=V, execute=lambda ctx: ctx.input_data)
    wf = create_workflow(id="w", input_schema=V, output_schema=V).then(step).commit()
    with Runtime() as rt:
        result = rt.register(wf).create_run().start(input_data={{"v": "x"}}, timeout=10)
    assert result.status == "success", result
    assert _otel.tracer() is None and _otel.instruments() is None
    # Nothing was built: no tracer, no instruments were ever cached.
    assert _otel._tracer is None and _otel._instruments is None
    print(_otel.INSTALLED, len(result.trace_id))
    """
)


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("", "True 32"),  # installed, but the application configured no provider
        ("sys.modules['opentelemetry'] = None", "False 32"),  # not installed
    ],
)
def test_without_configured_opentelemetry_nothing_is_made(block: str, expected: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(block=block)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected
    assert done.stderr == ""


def test_the_private_attributes_the_fast_check_and_these_tests_use_exist() -> None:
    # runtime/_otel.py reads the provider globals to tell "no provider" in nanoseconds
    # (if an OpenTelemetry release moves them, it falls back to the public getters);
    # this module's fixture also resets the set-once guards.
    from runtime import _otel

    assert hasattr(trace, "_TRACER_PROVIDER")
    assert hasattr(metrics_state, "_METER_PROVIDER")
    assert isinstance(trace._TRACER_PROVIDER_SET_ONCE, Once)
    assert isinstance(metrics_state._METER_PROVIDER_SET_ONCE, Once)
    assert _otel._TRACE_GLOBAL and _otel._METER_GLOBAL


def test_spans_a_step_body_makes_are_children_of_its_step_span(
    runtime: Runtime, exporter: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("the-app")

    def sync_body(ctx: StepContext[Value]) -> Value:
        with tracer.start_as_current_span("sync work"):
            return ctx.input_data

    async def async_body(ctx: StepContext[Value]) -> Value:
        await asyncio.sleep(0)
        with tracer.start_as_current_span("async work"):
            return ctx.input_data

    wf = runtime.register(
        create_workflow(id="otel_inner", input_schema=Value, output_schema=Value)
        .then(_step("sync_step", sync_body))
        .then(_step("async_step", async_body))
        .commit()
    )
    assert wf.create_run().start(input_data={"value": "x"}, timeout=WAIT).status == "success"

    spans = exporter.get_finished_spans()
    by_step = {s.attributes["callboard.step.id"]: s for s in _named(spans, "workflow_step")}
    for name, step in (("sync work", "sync_step"), ("async work", "async_step")):
        (inner,) = _named(spans, name)
        assert inner.parent is not None
        assert inner.parent.span_id == by_step[step].context.span_id


def test_a_run_recovered_after_a_crash_continues_its_trace(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    from runtime.testing import Harness

    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow_once(ctx: StepContext[Value]) -> Value:
        calls.append(1)
        if len(calls) == 1:
            entered.set()
            release.wait(WAIT)  # the crash loses whatever this returns
        return ctx.input_data

    workflow = (
        create_workflow(id="otel_recovered", input_schema=Value, output_schema=Value)
        .then(_step("first", lambda ctx: ctx.input_data))
        .then(_step("slow", slow_once))
        .commit()
    )
    with Harness(store=tmp_path / "runs.db", time_skipping=False) as harness:
        run = harness.register(workflow).create_run()
        run.start_async(input_data={"value": "x"})
        assert entered.wait(WAIT)
        recovered = harness.crash_and_recover()
        release.set()
        # The crashed worker's runs go back once its lease runs out, on the harness's clock.
        harness.clock.advance(recovered.store.lease + 1)  # type: ignore[union-attr]
        result = recovered.register(workflow).create_run(run.run_id).wait(WAIT)
    assert result.status == "success"

    spans = exporter.get_finished_spans()
    assert {_hex(span.context.trace_id, 32) for span in spans} == {result.trace_id}
    (start,) = _named(spans, "workflow_start")
    (run_span,) = _named(spans, "workflow_run")  # the crashed one never ended
    assert run_span.attributes["callboard.status"] == "success"
    assert run_span.parent is not None and run_span.parent.span_id == start.context.span_id
    span_ids = [span.context.span_id for span in spans]
    assert len(span_ids) == len(set(span_ids))


def test_a_run_whose_cancel_the_next_worker_carries_out_is_counted_ended(
    tmp_path: Path, reader: InMemoryMetricReader
) -> None:
    # Its worker died with the run under way and its cancel asked for: the worker that
    # claimed it ended it canceled, counted by no one (the dead one counted its start).
    from runtime.testing import Harness

    entered, release = threading.Event(), threading.Event()
    workflow = (
        create_workflow(id="metrics_claimed_cancel", input_schema=Value, output_schema=Value)
        .then(_step("held", lambda ctx: (entered.set(), release.wait(WAIT), ctx.input_data)[2]))
        .commit()
    )
    try:
        with Harness(store=tmp_path / "runs.db", time_skipping=False) as harness:
            run = harness.register(workflow).create_run()
            run.start_async(input_data={"value": "x"})
            assert entered.wait(WAIT)
            # Under way in the store too: a first step starts before the snapshot that marks
            # its run running commits. A crash before that leaves the run pending, which the
            # next worker neither counts started (though this one did) nor, canceled, ended.
            stored = harness.runtime.store
            assert stored is not None
            wait_until(
                lambda: stored.load(run.run_id).status == "running",  # type: ignore[union-attr]
                WAIT,
                "the run is recorded running",
            )
            recovered = harness.crash_and_recover()
            release.set()  # the crashed step ends, its result lost
            store = recovered.store
            assert store is not None and store.request_cancel(run.run_id)  # type: ignore[attr-defined]
            harness.clock.advance(store.lease + 1)  # type: ignore[attr-defined]
            result = recovered.register(workflow).create_run(run.run_id).wait(WAIT)
    finally:
        release.set()
    assert result.status == "canceled"

    points = _points(reader)
    assert _sum(points["callboard.runs.started"], workflow_id="metrics_claimed_cancel") == 1
    ended = points["callboard.runs.ended"]
    assert _sum(ended, workflow_id="metrics_claimed_cancel", status="canceled") == 1


def test_a_run_whose_start_span_is_not_sampled_records_no_span_later(
    providers: tuple[InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    exporter = InMemorySpanExporter()
    unsampled = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    unsampled.add_span_processor(SimpleSpanProcessor(exporter))
    with _tracer_provider_swapped(unsampled), Runtime() as rt:
        wf = rt.register(_two_steps("otel_unsampled"))
        result = wf.create_run().start(input_data={"value": "x"}, timeout=WAIT)
    assert result.status == "success"
    # The run's own spans follow its start span's sampling decision, kept with the run.
    assert exporter.get_finished_spans() == ()


def test_runs_queued_in_a_shared_store_are_gauged(
    tmp_path: Path, reader: InMemoryMetricReader
) -> None:
    # A client starts runs and runs none: they wait in the store for a worker.
    with Runtime(store=tmp_path / "runs.db", role="client") as client:
        wf = client.register(_two_steps("metrics_store_queue"))
        for _ in range(3):
            wf.create_run().start_async(input_data={"value": "x"})
        assert _sum(_points(reader)["callboard.runs.queued"]) == 3


def test_a_sync_step_its_run_let_go_of_is_not_reported_a_success(
    runtime: Runtime, exporter: InMemorySpanExporter, reader: InMemoryMetricReader
) -> None:
    # A sync body cannot be stopped: one that outlived its timeout returned later, and
    # its span and duration said "success" while its run recorded a StepTimeoutError.
    let_go = threading.Event()
    wf = runtime.register(_held_step("otel_timeout", let_go, timeout=0.1))
    result = wf.create_run().start(input_data={"value": "a"}, timeout=WAIT)
    assert result.status == "failed"
    assert result.error is not None and result.error.name == "StepTimeoutError"
    let_go.set()

    # The body's duration is recorded when it returns.
    wait_until(lambda: _step_durations(reader, "otel_timeout"), what="the body returned")
    (span,) = _of_workflow(exporter, "workflow_step", "otel_timeout")
    assert span.attributes["callboard.status"] == "failed"
    assert span.status.status_code is StatusCode.ERROR
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "runtime.StepTimeoutError"
    assert {p.attributes["callboard.status"] for p in _step_durations(reader, "otel_timeout")} == {
        "failed"
    }


def test_a_sync_steps_span_ends_when_its_timeout_lets_it_go_not_when_it_returns(
    runtime: Runtime, exporter: InMemorySpanExporter, reader: InMemoryMetricReader
) -> None:
    # Its span stayed open while the abandoned body ran on, ended only when (if ever)
    # it returned: after its run's span, or never for a body still blocked at stop().
    let_go = threading.Event()
    wf = runtime.register(_held_step("otel_let_go", let_go, timeout=0.1, retries=1))
    try:
        result = wf.create_run().start(input_data={"value": "a"}, timeout=WAIT)
        assert result.status == "failed"
        assert result.error is not None and result.error.name == "StepTimeoutError"
        # Both attempts' bodies are still blocked; their spans ended as their run let go.
        spans = _of_workflow(exporter, "workflow_step", "otel_let_go")
        assert sorted(s.attributes["callboard.step.attempt"] for s in spans) == [1, 2]
        (run_span,) = _of_workflow(exporter, "workflow_run", "otel_let_go")
        for span in spans:
            assert span.attributes["callboard.status"] == "failed"
            assert span.status.status_code is StatusCode.ERROR
            (event,) = [e for e in span.events if e.name == "exception"]
            assert event.attributes["exception.type"] == "runtime.StepTimeoutError"
            assert span.parent is not None and span.parent.span_id == run_span.context.span_id
            assert span.end_time is not None and run_span.end_time is not None
            assert span.end_time <= run_span.end_time
    finally:
        let_go.set()

    # Once the bodies have returned (each records its call's duration then), nothing
    # more is exported: each span ended once.
    wait_until(
        lambda: sum(p.count for p in _step_durations(reader, "otel_let_go")) == 2,
        what="both bodies returned",
    )
    assert len(_of_workflow(exporter, "workflow_step", "otel_let_go")) == 2


def test_runs_cancelled_while_asleep_or_suspended_are_counted_as_ended(
    runtime: Runtime, reader: InMemoryMetricReader
) -> None:
    # No actor drives such a run: its end went uncounted, and started minus ended
    # drifted up for good.
    asleep = runtime.register(
        create_workflow(id="otel_asleep", input_schema=Value, output_schema=Value)
        .sleep(60)
        .then(_step("after", lambda ctx: ctx.input_data))
        .commit()
    )

    def ask(ctx: StepContext[Value]) -> Value:
        return ctx.suspend({"question": "go on?"}) if ctx.resume_data is None else ctx.input_data

    suspended = runtime.register(
        create_workflow(id="otel_suspended", input_schema=Value, output_schema=Value)
        .then(_step("ask", ask))
        .commit()
    )
    for wf, status in ((asleep, "waiting"), (suspended, "suspended")):
        run = wf.create_run()
        run.start_async(input_data={"value": "a"})
        deadline = time.monotonic() + WAIT
        while wf.get_workflow_run_execution_result(run.run_id).status != status:
            assert time.monotonic() < deadline, f"the run did not become {status}"
            time.sleep(0.01)
        assert run.cancel() is True

    ended = _points(reader)["callboard.runs.ended"]
    for workflow_id in ("otel_asleep", "otel_suspended"):
        assert _sum(ended, workflow_id=workflow_id, status="canceled") == 1


def test_the_spans_of_a_foreachs_items_carry_their_index(
    runtime: Runtime, exporter: InMemorySpanExporter
) -> None:
    # They could not be told apart: each had the step's id and attempt 1.
    wf = runtime.register(
        create_workflow(id="otel_each", input_schema=Value, output_schema=Value)
        .map(lambda ctx: [{"value": "a"}, {"value": "b"}, {"value": "c"}])
        .foreach(_step("each", lambda ctx: ctx.input_data))
        .map(lambda ctx: ctx.input_data[0])
        .commit()
    )
    assert wf.create_run().start(input_data={"value": "x"}, timeout=WAIT).status == "success"

    items = [
        span.attributes.get("callboard.step.item")
        for span in _named(exporter.get_finished_spans(), "workflow_step")
        if span.attributes.get("callboard.step.id") == "each"
    ]
    assert sorted(items) == [0, 1, 2]
