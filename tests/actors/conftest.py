"""Fixtures for actor-level tests: a runtime whose store records every snapshot it is given."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from runtime import Runtime
from tests._support import wait_for_no_callboard_threads
from tests.actors._support import RecordingStore


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore()


@pytest.fixture
def rt(store: RecordingStore) -> Iterator[Runtime]:
    """A started runtime on the recording store; stopped, and checked for leftover threads."""
    runtime = Runtime(store=store).start()
    try:
        yield runtime
    finally:
        runtime.stop(timeout=5)
        structlog.reset_defaults()
    assert not wait_for_no_callboard_threads()
