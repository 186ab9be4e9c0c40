"""Fixtures for the durable tests: the store's file, a SQLite store on it.

Every durable test runs twice: with snapshots as the runtime encodes them
(whole while they are small, in parts once they are large) and with every
snapshot in parts, in this process and in the children it starts, so that
each promise holds for step records kept apart too. A module whose tests only
hand a store records made by hand (no run actor, no child process) overrides
``snapshot_encoding`` and runs them once: the second run would prove nothing new.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import runtime._snapshot as snapshot_module
import runtime._stores.sqlite as sqlite_module
from runtime import SQLiteStore
from runtime._snapshot import WHOLE_UNTIL
from tests.durable._support import ALL_PARTS


@pytest.fixture(autouse=True, params=["as-sized", "all-parts"])
def snapshot_encoding(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How run actors encode snapshots: by their size (the default), or always in parts."""
    if request.param == "all-parts":
        monkeypatch.setattr(snapshot_module, "WHOLE_UNTIL", -1)
        monkeypatch.setenv(ALL_PARTS, "1")
    else:
        monkeypatch.setattr(snapshot_module, "WHOLE_UNTIL", WHOLE_UNTIL)
    return str(request.param)


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


@pytest.fixture
def quick_lock_store(db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SQLiteStore]:
    """A SQLite store on ``db`` whose writer waits 0.05 s, not 5 s, for another writer's lock.

    ``LOCK_TIMEOUT`` is patched before the store opens, since its connections take their
    busy timeout when they are made: a test of a locked database sees the writer retry at once.
    """
    monkeypatch.setattr(sqlite_module, "LOCK_TIMEOUT", 0.05)
    opened = SQLiteStore(db)
    try:
        yield opened
    finally:
        opened.close()
