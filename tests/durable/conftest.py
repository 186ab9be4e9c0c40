"""Fixtures for the durable tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _every_test_resets_structlog(_structlog_reset: None) -> None:
    """Several of these tests read logs with ``capture_logs()``; none leaves structlog configured.

    They run before ``tests/test_cli.py``, which checks that its command leaves structlog as
    it found it.
    """
