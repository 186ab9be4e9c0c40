"""Fixtures for the durable tests: the store's file, a SQLite store on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import SQLiteStore


@pytest.fixture(autouse=True)
def _every_test_resets_structlog(_structlog_reset: None) -> None:
    """Several of these tests read logs with ``capture_logs()``; none leaves structlog configured.

    They run before ``tests/test_cli.py``, which checks that its command leaves structlog as
    it found it.
    """


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The path of a store's file, not created yet."""
    return tmp_path / "runs.db"


@pytest.fixture
def sqlite_store(db: Path) -> Iterator[SQLiteStore]:
    """A SQLite store on ``db``, closed afterwards."""
    opened = SQLiteStore(db)
    try:
        yield opened
    finally:
        opened.close()
