"""What a step actor leaves out when nothing needs it, and what it keeps.

A step's span is made only when something would see it; its request context
is copied only when the step touches it; an awaitable is recognised by its
type. Each shortcut must keep what a step, its logs and its run see.
"""

from __future__ import annotations

import abc
import re
import types
from collections.abc import Awaitable, Callable, Generator, Iterator
from typing import Any

import pytest
import structlog
from pydantic import BaseModel
from structlog.testing import capture_logs

import actors.step as step_module
from actors.messages import CallStep
from runtime._errors import SnapshotEncodingError
from tests.actors.harness import Harness, Value, harnesses, step


@pytest.fixture
def make_harness() -> Iterator[Callable[..., Harness]]:
    yield from harnesses()


@pytest.fixture
def unconfigured_structlog() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def _call_with_context(
    harness: Harness, body: Callable[[Any], Any], context: dict[str, Any]
) -> CallStep:
    s = step(body)
    fields = harness.common({"value": "x"}, definitions={s.id: s}, request_context=context)
    return CallStep(**fields, step=s, final_schema=None)


# --- request context ----------------------------------------------------------------------


def test_a_step_that_only_reads_scalars_hands_back_the_runs_own_request_context(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()
    context = {"user": "ada", "tags": ["a"]}
    seen: list[Any] = []

    def body(ctx: Any) -> Value:
        seen.append(
            (ctx.request_context["user"], "tags" in ctx.request_context, len(ctx.request_context))
        )
        return ctx.input_data

    finished = harness.call(_call_with_context(harness, body, context))

    assert finished.ok
    assert seen == [("ada", True, 2)]
    assert finished.request_context is context  # nothing copied, nothing to check


def test_a_step_that_changes_a_nested_value_hands_back_a_copy_and_the_runs_is_untouched(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()
    context = {"user": "ada", "tags": ["a"]}

    def body(ctx: Any) -> Value:
        ctx.request_context["tags"].append("b")
        return ctx.input_data

    finished = harness.call(_call_with_context(harness, body, context))

    assert finished.ok
    assert finished.request_context == {"user": "ada", "tags": ["a", "b"]}
    assert context == {"user": "ada", "tags": ["a"]}


def test_a_failed_step_that_changed_the_request_context_leaves_the_runs_as_it_was(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()
    context = {"user": "ada", "tags": ["a"]}

    def body(ctx: Any) -> Value:
        ctx.request_context.set("user", "bob")
        ctx.request_context.get("tags").append("b")
        ctx.request_context.delete("tags")
        raise RuntimeError("no")

    finished = harness.call(_call_with_context(harness, body, context))

    assert not finished.ok
    assert finished.request_context is context
    assert context == {"user": "ada", "tags": ["a"]}


def test_a_value_set_in_the_request_context_that_cannot_be_stored_fails_the_step(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()

    def body(ctx: Any) -> Value:
        ctx.request_context["when"] = object()
        return ctx.input_data

    finished = harness.call(_call_with_context(harness, body, {"user": "ada"}))

    assert not finished.ok and finished.error is not None
    assert finished.error["name"] == SnapshotEncodingError.__name__
    assert "request_context" in finished.error["message"]


# --- spans --------------------------------------------------------------------------------


def _span_ids(harness: Harness, times: int) -> list[str]:
    ids: list[str] = []

    def body(ctx: Any) -> Value:
        ids.append(structlog.get_context(ctx.logger)["span_id"])
        return ctx.input_data

    for _ in range(times):
        assert harness.run(step(body), {"value": "x"}).ok
    return ids


def test_a_span_nobody_would_see_is_not_made_but_the_steps_logger_has_a_span_id_of_its_own(
    make_harness: Callable[..., Harness],
    unconfigured_structlog: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[Any] = []
    real_span = step_module.Span
    monkeypatch.setattr(step_module, "Span", lambda *a, **k: made.append(a) or real_span(*a, **k))
    harness = make_harness()

    ids = _span_ids(harness, 2)

    assert made == []
    assert all(re.fullmatch(r"[0-9a-f]{16}", span_id) for span_id in ids)
    assert len(set(ids)) == 2 and "cd" * 8 not in ids  # not the run's span: one per step


def test_a_span_the_logs_would_see_is_made_and_the_steps_logger_reports_its_id(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()

    with capture_logs() as logs:
        ids = _span_ids(harness, 1)

    starts = [e for e in logs if e["event"] == "span_start" and e["name"] == "workflow_step"]
    ends = [e for e in logs if e["event"] == "span_end" and e["name"] == "workflow_step"]
    assert [e["span_id"] for e in starts] == ids == [e["span_id"] for e in ends]
    assert starts[0]["parent_span_id"] == "cd" * 8


# --- awaitables ---------------------------------------------------------------------------


class _Later(BaseModel):
    value: str = "x"


def test_awaitable_answers_as_inspect_does_for_models_plain_data_and_coroutines() -> None:
    async def body() -> int:
        return 1

    coroutine = body()
    try:
        for _ in range(2):  # the second time from the remembered types
            assert not step_module._awaitable(_Later())
            assert not step_module._awaitable({"value": "x"})
            assert not step_module._awaitable(None)
            assert step_module._awaitable(coroutine)
    finally:
        coroutine.close()


def test_a_type_registered_as_awaitable_later_is_awaitable_from_then_on() -> None:
    class Late:
        pass

    assert not step_module._awaitable(Late())
    token = abc.get_cache_token()
    Awaitable.register(Late)
    assert abc.get_cache_token() != token
    assert step_module._awaitable(Late())


def test_a_generator_is_asked_each_time_whether_it_is_a_coroutine() -> None:
    def plain_generator() -> Generator[int, None, None]:
        yield 1

    @types.coroutine
    def generator_coroutine() -> Generator[Any, None, int]:
        yield
        return 1

    first, second = plain_generator(), generator_coroutine()
    assert not step_module._awaitable(first)
    assert step_module._awaitable(second)
    first.close()
    second.close()
