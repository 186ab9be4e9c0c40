"""BodyFuture: the small future an async step body settles, from any thread."""

from __future__ import annotations

import concurrent.futures
import gc
import threading

import pytest

from actors._pool import BodyFuture

WAIT = 5.0


def test_a_result_set_on_another_thread_reaches_a_waiter_and_every_callback_once() -> None:
    future = BodyFuture()
    seen: list[object] = []
    future.add_done_callback(lambda done: seen.append(done.result()))
    threading.Timer(0.01, future.set_result, args=("value",)).start()

    assert future.result(WAIT) == "value"
    future.add_done_callback(lambda done: seen.append("late"))  # done: called at once
    assert seen == ["value", "late"] and future.done() and not future.cancelled()


def test_a_cancelled_future_stays_cancelled_and_refuses_an_outcome() -> None:
    future = BodyFuture()
    called: list[bool] = []
    future.add_done_callback(lambda done: called.append(done.cancelled()))

    assert future.cancel() is True
    assert future.cancel() is True  # still cancelled
    assert called == [True]
    with pytest.raises(concurrent.futures.InvalidStateError):
        future.set_result(1)
    with pytest.raises(concurrent.futures.CancelledError):
        future.result(0)


def test_a_future_with_an_outcome_cannot_be_cancelled() -> None:
    future = BodyFuture()
    future.set_exception(ValueError("bad"))

    assert future.cancel() is False
    with pytest.raises(ValueError, match="bad"):
        future.result()
    with pytest.raises(concurrent.futures.InvalidStateError):
        future.set_exception(ValueError("again"))


def test_waiting_past_the_timeout_raises_timeout_error() -> None:
    with pytest.raises(TimeoutError):
        BodyFuture().result(0.01)


def test_a_callback_that_raises_changes_nothing() -> None:
    future = BodyFuture()
    after: list[int] = []
    future.add_done_callback(lambda done: 1 / 0)  # type: ignore[arg-type,return-value]
    future.add_done_callback(lambda done: after.append(done.result()))
    future.set_result(3)
    assert after == [3]


def test_raising_the_stored_exception_leaves_no_reference_cycle() -> None:
    future = BodyFuture()
    future.set_exception(ValueError("bad"))
    gc.collect()
    gc.disable()
    try:
        with pytest.raises(ValueError):
            future.result()
        del future
        assert gc.collect() == 0
    finally:
        gc.enable()
