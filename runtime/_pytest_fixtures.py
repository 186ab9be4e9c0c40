"""The fixtures of callboard's pytest plugin (registered by :mod:`runtime._pytest_plugin`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime._runtime import Runtime
from runtime.testing import Harness

__all__ = ["callboard_harness", "callboard_runtime"]


@pytest.fixture
def callboard_harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """An open test harness (options from ``@pytest.mark.callboard(...)``); closed afterwards."""
    marker = request.node.get_closest_marker("callboard")
    options = dict(marker.kwargs) if marker is not None else {}
    with Harness(**options) as harness:
        yield harness


@pytest.fixture
def callboard_runtime(callboard_harness: Harness) -> Runtime:
    """The runtime of ``callboard_harness``."""
    return callboard_harness.runtime
