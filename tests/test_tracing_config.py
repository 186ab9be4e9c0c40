"""Span events follow structlog's configuration as it changes: between runs, mid-run, in place.

runtime/_tracing.py keeps the logger of the configuration it last saw and
compares structlog's configuration with it before each event, rather than
copying it out with ``structlog.get_config()`` every time. These tests hold
that comparison to noticing every change, on the fast path (structlog's
configuration object read in place) and on the path kept for a structlog
without that object.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import CapturingLoggerFactory, capture_logs

from runtime import Runtime, _tracing, create_step, create_workflow
from tests._support import Value

WAIT = 10.0

pytestmark = pytest.mark.usefixtures("_structlog_reset")


@pytest.fixture(params=["in_place", "get_config"])
def lookup(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test twice: reading structlog's configuration object, and through its functions."""
    structlog.reset_defaults()
    if request.param == "get_config":
        monkeypatch.setattr(_tracing, "_structlog_config", None)
    yield request.param


def _collect(into: list[dict[str, Any]]) -> Any:
    """A processor that keeps each event's copy in ``into`` and drops the event."""

    def processor(logger: Any, method: str, event_dict: dict[str, Any]) -> Any:
        into.append(dict(event_dict))
        raise structlog.DropEvent

    return processor


def _workflow(workflow_id: str, first: Any = None) -> Any:
    def passed_on(ctx: Any) -> Value:
        return Value(value=ctx.input_data.value)

    steps = [("first", first or passed_on), ("second", passed_on)]
    workflow = create_workflow(id=workflow_id, input_schema=Value, output_schema=Value)
    for step_id, execute in steps:
        workflow.then(
            create_step(id=step_id, input_schema=Value, output_schema=Value, execute=execute)
        )
    return workflow.commit()


def _spans(events: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [
        (e["event"], e["name"], e.get("step_id"))
        for e in events
        if e["event"] in ("span_start", "span_end")
    ]


def _run_ids(events: list[dict[str, Any]]) -> set[str]:
    return {e["run_id"] for e in events if e["event"] in ("span_start", "span_end")}


def _run(wf: Any, value: str = "a") -> str:
    result = wf.create_run().start(input_data={"value": value}, timeout=WAIT)
    assert result.status == "success", result.error
    return str(result.run_id)


def test_a_new_configuration_reaches_the_next_run_though_loggers_are_cached_on_first_use(
    lookup: str,
) -> None:
    # cache_logger_on_first_use (structlog's advice for speed) pins a lazy proxy's
    # first logger for good: callboard's events must still follow a reconfiguration.
    before: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []
    structlog.configure(processors=[_collect(before)], cache_logger_on_first_use=True)
    with Runtime() as rt:
        wf = rt.register(_workflow("cached_first"))
        one = _run(wf)
        structlog.configure(processors=[_collect(after)])
        two = _run(wf)

    assert _run_ids(before) == {one}
    assert _run_ids(after) == {two}


def test_a_configuration_changed_mid_run_takes_effect_at_the_next_event(lookup: str) -> None:
    before: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []

    def reconfigure(ctx: Any) -> Value:
        structlog.configure(processors=[_collect(after)])
        return Value(value=ctx.input_data.value)

    structlog.configure(processors=[_collect(before)])
    with Runtime() as rt:
        _run(rt.register(_workflow("mid_run", first=reconfigure)))

    assert _spans(before) == [
        ("span_start", "workflow_run", None),
        ("span_start", "workflow_step", "first"),
    ]
    assert _spans(after) == [
        ("span_end", "workflow_step", "first"),
        ("span_start", "workflow_step", "second"),
        ("span_end", "workflow_step", "second"),
        ("span_end", "workflow_run", None),
    ]


def test_processors_swapped_in_place_in_the_configured_list_are_seen(lookup: str) -> None:
    # The list stays the one structlog holds (bound loggers keep a reference to
    # it); only its contents change, as capture_logs() changes them.
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    processors = [_collect(first)]
    structlog.configure(processors=processors)
    with Runtime() as rt:
        wf = rt.register(_workflow("in_place"))
        one = _run(wf)
        processors[:] = [_collect(second)]
        two = _run(wf)

    assert _run_ids(first) == {one}
    assert _run_ids(second) == {two}


def test_capture_logs_inside_a_configuration_captures_and_then_gives_it_back(
    lookup: str,
) -> None:
    mine: list[dict[str, Any]] = []
    structlog.configure(processors=[_collect(mine)])
    with Runtime() as rt:
        wf = rt.register(_workflow("captured_inside"))
        one = _run(wf)
        with capture_logs() as logs:
            two = _run(wf)
        three = _run(wf)

    assert _run_ids(logs) == {two}
    assert _run_ids(mine) == {one, three}


def test_after_capture_logs_an_unconfigured_program_is_quiet_again(
    lookup: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # capture_logs() leaves structlog configured, with its built-in processors put
    # back into the same list: nothing shows, and no span is made.
    with Runtime() as rt:
        wf = rt.register(_workflow("captured_unconfigured"))
        with capture_logs() as logs:
            two = _run(wf)
        assert structlog.is_configured()
        assert not _tracing.observed()
        _run(wf)

    assert _run_ids(logs) == {two}
    assert capsys.readouterr().out == ""


def test_reset_defaults_mid_run_makes_the_rest_of_the_run_quiet(
    lookup: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before: list[dict[str, Any]] = []

    def reset(ctx: Any) -> Value:
        structlog.reset_defaults()
        return Value(value=ctx.input_data.value)

    structlog.configure(processors=[_collect(before)])
    with Runtime() as rt:
        _run(rt.register(_workflow("reset_mid_run", first=reset)))

    assert _spans(before) == [
        ("span_start", "workflow_run", None),
        ("span_start", "workflow_step", "first"),
    ]
    assert capsys.readouterr().out == ""


def test_a_new_logger_factory_receives_the_next_runs_events(lookup: str) -> None:
    old, new = CapturingLoggerFactory(), CapturingLoggerFactory()
    structlog.configure(processors=[], logger_factory=old)
    with Runtime() as rt:
        wf = rt.register(_workflow("new_factory"))
        one = _run(wf)
        structlog.configure(logger_factory=new)
        two = _run(wf)

    def run_ids(factory: CapturingLoggerFactory) -> set[str]:
        return {
            call.kwargs["run_id"]
            for call in factory.logger.calls
            if call.kwargs["event"] in ("span_start", "span_end")
        }

    assert run_ids(old) == {one}
    assert run_ids(new) == {two}


def test_span_events_do_not_copy_structlogs_configuration_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # structlog.get_config() builds a new dict at each call: with structlog's
    # configuration object at hand, a run's eight span events make none.
    assert _tracing._structlog_config is not None
    events: list[dict[str, Any]] = []
    structlog.configure(processors=[_collect(events)])
    calls = 0
    real = structlog.get_config

    def counted() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return real()

    with Runtime() as rt:
        wf = rt.register(_workflow("counted"))
        _run(wf)
        monkeypatch.setattr(structlog, "get_config", counted)
        runs = {_run(wf, str(n)) for n in range(5)}

    assert _run_ids(events) >= runs
    assert calls == 0


@pytest.mark.parametrize("kind", [tuple, collections.deque])
def test_processors_in_a_tuple_or_another_iterable_are_followed_too(lookup: str, kind: Any) -> None:
    # A list is compared by its contents; a tuple cannot change; any other iterable
    # (a deque here, changed in place) is looked up again at every event.
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    structlog.configure(processors=kind([_collect(first)]))
    with Runtime() as rt:
        wf = rt.register(_workflow(f"processors_in_a_{kind.__name__}"))
        one = _run(wf)
        if kind is tuple:
            structlog.configure(processors=(_collect(second),))
        else:
            processors = structlog.get_config()["processors"]
            processors.clear()
            processors.append(_collect(second))
        two = _run(wf)
        structlog.reset_defaults()
        assert not _tracing.observed()

    assert _run_ids(first) == {one}
    assert _run_ids(second) == {two}
