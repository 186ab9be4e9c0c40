"""Tracing: span events for runs and steps over structlog, read with capture_logs."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from structlog.testing import capture_logs

from runtime import Runtime, TracingOptions, create_step, create_workflow
from runtime._tracing import Span
from tests._support import Value

WAIT = 10.0

pytestmark = pytest.mark.usefixtures("_structlog_reset")


def _step(step_id: str, execute: Any) -> Any:
    return create_step(id=step_id, input_schema=Value, output_schema=Value, execute=execute)


def _two_steps(workflow_id: str = "traced", second: Any = None) -> Any:
    return (
        create_workflow(id=workflow_id, input_schema=Value, output_schema=Value)
        .then(_step("first", lambda ctx: Value(value=ctx.input_data.value.upper())))
        .then(_step("second", second or (lambda ctx: Value(value=ctx.input_data.value + "!"))))
        .commit()
    )


def _spans(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] in ("span_start", "span_end") and e["name"] == name]


def test_a_run_logs_a_root_span_and_a_child_span_per_step(runtime: Runtime) -> None:
    wf = runtime.register(_two_steps())

    with capture_logs() as logs:
        result = wf.create_run().start(
            input_data={"value": "hi"},
            tracing_options=TracingOptions(trace_id="abc123", metadata={"tenant": "acme"}),
            timeout=WAIT,
        )

    assert result.status == "success"
    root = _spans(logs, "workflow_run")
    assert [e["event"] for e in root] == ["span_start", "span_end"]
    for event in root:
        assert event["trace_id"] == "abc123".zfill(32)
        assert event["span_id"] == result.span_id
        assert event["parent_span_id"] is None
        assert (event["run_id"], event["workflow_id"]) == (result.run_id, "traced")
        assert event["metadata"] == {"tenant": "acme"}
        assert "step_id" not in event
    assert root[1]["status"] == "success"
    assert isinstance(root[1]["duration_ms"], float) and root[1]["duration_ms"] >= 0
    assert "duration_ms" not in root[0]

    steps = _spans(logs, "workflow_step")
    assert [(e["event"], e["step_id"]) for e in steps] == [
        ("span_start", "first"),
        ("span_end", "first"),
        ("span_start", "second"),
        ("span_end", "second"),
    ]
    for event in steps:
        assert event["trace_id"] == "abc123".zfill(32)
        assert event["parent_span_id"] == result.span_id
        assert (event["run_id"], event["workflow_id"]) == (result.run_id, "traced")
    first_start, first_end, second_start, second_end = steps
    assert first_start["span_id"] == first_end["span_id"]
    assert second_start["span_id"] == second_end["span_id"]
    span_ids = {first_start["span_id"], second_start["span_id"], result.span_id}
    assert len(span_ids) == 3
    for end in (first_end, second_end):
        assert end["status"] == "success"
        assert isinstance(end["duration_ms"], float) and end["duration_ms"] >= 0

    order = [id(e) for e in logs]
    assert order.index(id(root[0])) < order.index(id(first_start))
    assert order.index(id(second_end)) < order.index(id(root[1]))
    assert all(e["log_level"] == "info" for e in root + steps)


def test_a_run_without_a_trace_id_gets_a_new_one_of_32_hex_characters(runtime: Runtime) -> None:
    wf = runtime.register(_two_steps())

    with capture_logs() as logs:
        first = wf.create_run().start(input_data={"value": "a"}, timeout=WAIT)
        second = wf.create_run().start(input_data={"value": "b"}, timeout=WAIT)

    assert first.trace_id is not None and re.fullmatch(r"[0-9a-f]{32}", first.trace_id)
    assert first.trace_id != second.trace_id
    spans = [e for e in logs if e["event"] in ("span_start", "span_end")]
    assert {e["trace_id"] for e in spans if e["run_id"] == first.run_id} == {first.trace_id}
    assert {e["trace_id"] for e in spans if e["run_id"] == second.run_id} == {second.trace_id}
    assert _spans(logs, "workflow_run")[0]["metadata"] == {}


def test_the_given_trace_id_is_used_in_lower_case(runtime: Runtime) -> None:
    wf = runtime.register(_two_steps())

    with capture_logs() as logs:
        result = wf.create_run().start(
            input_data={"value": "a"}, tracing_options={"trace_id": "ABC123"}, timeout=WAIT
        )

    assert result.trace_id == "abc123".zfill(32)  # as OpenTelemetry writes it
    assert {e["trace_id"] for e in logs if e["event"] == "span_end"} == {"abc123".zfill(32)}


def test_the_root_span_ends_before_the_final_result_becomes_visible(runtime: Runtime) -> None:
    release = threading.Event()
    entered = threading.Event()

    def slow(ctx: Any) -> Value:
        entered.set()
        release.wait(WAIT)
        return ctx.input_data

    wf = runtime.register(_two_steps(second=slow))
    runs = [wf.create_run() for _ in range(5)]

    with capture_logs() as logs:
        for run in runs:
            run.start_async(input_data={"value": "x"})
        assert entered.wait(WAIT)
        release.set()
        seen_at_terminal: dict[str, list[dict[str, Any]]] = {}
        while len(seen_at_terminal) < len(runs):
            for run in runs:
                if run.run_id in seen_at_terminal:
                    continue
                result = wf.get_workflow_run_execution_result(run.run_id)
                assert result is not None
                if result.is_terminal:
                    seen_at_terminal[run.run_id] = list(logs)

    for run_id, seen in seen_at_terminal.items():
        ends = [
            e
            for e in seen
            if e["event"] == "span_end" and e["name"] == "workflow_run" and e["run_id"] == run_id
        ]
        assert len(ends) == 1, f"run {run_id} was visible as ended before its root span ended"


def test_a_failing_step_ends_its_span_and_the_runs_span_as_failed(runtime: Runtime) -> None:
    def broken(ctx: Any) -> Value:
        raise KeyError("missing")

    wf = runtime.register(_two_steps(second=broken))

    with capture_logs() as logs:
        result = wf.create_run().start(input_data={"value": "x"}, timeout=WAIT)

    assert result.status == "failed"
    ends = {
        (e["name"], e.get("step_id")): e
        for e in logs
        if e["event"] == "span_end" and e["run_id"] == result.run_id
    }
    assert ends[("workflow_step", "first")]["status"] == "success"
    assert ends[("workflow_step", "second")]["status"] == "failed"
    assert ends[("workflow_step", "second")]["error"] == "KeyError"
    assert ends[("workflow_run", None)]["status"] == "failed"
    assert ends[("workflow_run", None)]["error"] == "KeyError"


def test_step_logger_events_carry_the_runs_trace_id_and_run_id(runtime: Runtime) -> None:
    def chatty(ctx: Any) -> Value:
        ctx.logger.info("step_says_hello", detail=1)
        ctx.logger.warning("step_warns")
        return ctx.input_data

    wf = runtime.register(_two_steps(second=chatty))

    with capture_logs() as logs:
        result = wf.create_run().start(
            input_data={"value": "x"}, tracing_options=TracingOptions(trace_id="beef"), timeout=WAIT
        )

    said = [e for e in logs if e["event"] in ("step_says_hello", "step_warns")]
    assert [e["event"] for e in said] == ["step_says_hello", "step_warns"]
    step_span = next(e for e in logs if e["event"] == "span_start" and e.get("step_id") == "second")
    for event in said:
        assert event["trace_id"] == "beef".zfill(32)
        assert event["run_id"] == result.run_id
        assert event["workflow_id"] == "traced"
        assert event["step_id"] == "second"
        assert event["span_id"] == step_span["span_id"]
    assert said[0]["detail"] == 1


def test_concurrent_runs_keep_their_spans_apart(runtime: Runtime) -> None:
    wf = runtime.register(_two_steps())
    runs = [wf.create_run() for _ in range(20)]

    with capture_logs() as logs:
        for index, run in enumerate(runs):
            run.start_async(
                input_data={"value": str(index)},
                tracing_options=TracingOptions(trace_id=f"{index + 1:x}"),
            )
        results = [run.wait(WAIT) for run in runs]

    for index, result in enumerate(results):
        mine = [e for e in logs if e.get("run_id") == result.run_id and "name" in e]
        assert len(mine) == 6  # a root span and two step spans, each start and end
        assert {e["trace_id"] for e in mine} == {f"{index + 1:032x}"}
        steps = [e for e in mine if e["name"] == "workflow_step"]
        assert {e["parent_span_id"] for e in steps} == {result.span_id}


def _parts(logs: list[dict[str, Any]], run_id: str) -> list[tuple[dict[str, Any], list[str]]]:
    """Each ``workflow_run`` span of a run (its ``span_start``), with its steps' ids, in order."""
    parts: list[tuple[dict[str, Any], list[str]]] = []
    for event in logs:
        if event["event"] != "span_start" or event["run_id"] != run_id:
            continue
        if event["name"] == "workflow_run":
            parts.append((event, []))
        else:
            assert event["parent_span_id"] == parts[-1][0]["span_id"]
            parts[-1][1].append(event["step_id"])
    return parts


def test_a_resumed_run_logs_a_new_run_span_under_its_first_in_the_same_trace(
    runtime: Runtime,
) -> None:
    # Without OpenTelemetry each part of the run logged the span id the run was started
    # with: its run span started and ended twice under one id, its steps' spans in both
    # parts children of it.
    def ask(ctx: Any) -> Value:
        if ctx.resume_data is None:
            ctx.suspend({"question": "go on?"})
        return ctx.input_data

    wf = runtime.register(_two_steps(second=ask))
    run = wf.create_run()

    with capture_logs() as logs:
        waiting = run.start(input_data={"value": "x"}, timeout=WAIT)
        assert waiting.status == "suspended"
        done = run.resume(resume_data={"answer": "yes"}, timeout=WAIT)

    assert done.status == "success"
    assert (done.trace_id, done.span_id) == (waiting.trace_id, waiting.span_id)
    (first, first_steps), (second, second_steps) = _parts(logs, run.run_id)
    assert (first["span_id"], first["parent_span_id"]) == (done.span_id, None)
    assert second["span_id"] != done.span_id
    assert second["parent_span_id"] == done.span_id
    assert (first_steps, second_steps) == (["first", "second"], ["second"])
    ends = [e for e in _spans(logs, "workflow_run") if e["event"] == "span_end"]
    assert [(e["span_id"], e["status"]) for e in ends] == [
        (first["span_id"], "suspended"),
        (second["span_id"], "success"),
    ]
    mine = [e for e in logs if e.get("run_id") == run.run_id and "name" in e]
    assert {e["trace_id"] for e in mine} == {done.trace_id}


def test_a_restarted_run_logs_a_new_run_span_under_its_first_in_the_same_trace(
    runtime: Runtime,
) -> None:
    failures = ["once"]

    def flaky(ctx: Any) -> Value:
        if failures:
            raise RuntimeError(failures.pop())
        return ctx.input_data

    wf = runtime.register(_two_steps(second=flaky))
    run = wf.create_run()

    with capture_logs() as logs:
        assert run.start(input_data={"value": "x"}, timeout=WAIT).status == "failed"
        done = run.restart(timeout=WAIT)

    assert done.status == "success"
    (first, first_steps), (second, second_steps) = _parts(logs, run.run_id)
    assert (first["span_id"], first["parent_span_id"]) == (done.span_id, None)
    assert second["span_id"] != done.span_id
    assert second["parent_span_id"] == done.span_id
    assert (first_steps, second_steps) == (["first", "second"], ["second"])
    mine = [e for e in logs if e.get("run_id") == run.run_id and "name" in e]
    assert {e["trace_id"] for e in mine} == {done.trace_id}


def test_a_sync_step_let_go_at_its_timeout_ends_its_span_then(runtime: Runtime) -> None:
    # Its span_end was logged only when the abandoned body returned: after the run's
    # own span_end, or never for a body still blocked at stop().
    let_go = threading.Event()

    def stuck(ctx: Any) -> Value:
        let_go.wait(WAIT)
        return ctx.input_data

    wf = runtime.register(
        create_workflow(id="stuck", input_schema=Value, output_schema=Value)
        .then(
            create_step(
                id="stuck", input_schema=Value, output_schema=Value, execute=stuck, timeout=0.1
            )
        )
        .commit()
    )
    try:
        with capture_logs() as logs:
            result = wf.create_run().start(input_data={"value": "x"}, timeout=WAIT)
        assert result.status == "failed"
        ends = [e for e in logs if e["event"] == "span_end"]
        assert [(e["name"], e["status"], e.get("error")) for e in ends] == [
            ("workflow_step", "failed", "StepTimeoutError"),
            ("workflow_run", "failed", "StepTimeoutError"),
        ]
    finally:
        let_go.set()


def test_a_span_ends_once_whatever_ends_it_again() -> None:
    # A step's span is ended by its run letting go of the step and by its body
    # returning; the second end must log nothing.
    span = Span("workflow_step", "ab".zfill(32), parent_span_id="1".zfill(16), run_id="r")
    with capture_logs() as logs:
        span.start()
        span.end("failed", failure={"name": "StepTimeoutError", "message": "late"})
        span.end("success")

    assert [(e["event"], e.get("status")) for e in logs] == [
        ("span_start", None),
        ("span_end", "failed"),
    ]


def test_a_spans_duration_is_in_milliseconds_to_the_microsecond(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    clock = iter([5_000_000_000, 5_001_234_567])
    monkeypatch.setattr(time, "perf_counter_ns", lambda: next(clock))
    span = Span("workflow_step", "ab".zfill(32), parent_span_id="1".zfill(16), run_id="r")
    with capture_logs() as logs:
        span.start()
        span.end("success")

    assert logs[-1]["duration_ms"] == 1.235


def test_structlog_configured_after_runs_went_unseen_receives_the_next_runs_step_spans() -> None:
    # Whether anybody would see a step's span is asked at each step, from structlog's
    # own configuration: a runtime whose steps made no span so far makes them once
    # the program configures structlog (and stops again once it is reset).
    import structlog

    structlog.reset_defaults()
    with Runtime() as rt:
        wf = rt.register(_two_steps("configured_later"))
        assert wf.create_run().start(input_data={"value": "a"}, timeout=WAIT).status == "success"
        with capture_logs() as logs:
            result = wf.create_run().start(input_data={"value": "b"}, timeout=WAIT)
        structlog.reset_defaults()
        with capture_logs() as again:
            structlog.reset_defaults()  # capture_logs configured structlog: quiet once more
            wf.create_run().start(input_data={"value": "c"}, timeout=WAIT)

    steps = _spans(logs, "workflow_step")
    assert [(e["event"], e["step_id"]) for e in steps] == [
        ("span_start", "first"),
        ("span_end", "first"),
        ("span_start", "second"),
        ("span_end", "second"),
    ]
    assert all(e["run_id"] == result.run_id for e in steps)
    assert again == []


def test_the_private_structlog_flag_the_quiet_check_reads_exists() -> None:
    # runtime/_tracing.py reads structlog's own configuration flag to tell "nobody
    # configured structlog" without a call at every step (falling back to
    # structlog.is_configured() if a release moves it): this names that private
    # attribute, and fails if the fast path fell back without anybody noticing.
    import structlog

    from runtime import _tracing

    assert _tracing._structlog_config is structlog._config._CONFIG
    structlog.reset_defaults()
    assert _tracing._structlog_config.is_configured is structlog.is_configured() is False
    structlog.configure()
    try:
        assert _tracing._structlog_config.is_configured is structlog.is_configured() is True
        # And the attributes structlog.get_config() copies, read in place before each
        # span event.
        config = structlog.get_config()
        assert _tracing._structlog_config.default_processors is config["processors"]
        assert _tracing._structlog_config.logger_factory is config["logger_factory"]
        assert _tracing._structlog_config.default_wrapper_class is config["wrapper_class"]
        assert _tracing._structlog_config.default_context_class is config["context_class"]
    finally:
        structlog.reset_defaults()
