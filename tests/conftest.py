"""Shared fixtures: started runtimes that are stopped, and checked for leftover threads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import structlog
from hypothesis import settings

import runtime._snapshot as snapshot_module
from runtime import Runtime
from tests._pooler import TransactionPooler, transaction_pooler
from tests._postgres import Server, start_server
from tests._support import Runtimes, wait_for_no_callboard_threads

CHECK_PARTS = "CALLBOARD_TEST_CHECK_PARTS"
"""Set for the whole session, so that child processes check their records in parts too."""


# No wall-clock limit on an example: the machines are shared and noisy, and a deadline
# (hypothesis's default is 200 ms) failed a property test with the load at 10 on 2 cores.
settings.register_profile("callboard", deadline=None)
settings.load_profile("callboard")


@pytest.fixture(scope="session", autouse=True)
def _records_in_parts_are_checked() -> Iterator[None]:
    """Every record in parts is decoded again and compared with its snapshot.

    A change the run actor makes that the encoder does not see fails the test
    that made it. Runs encode their snapshots in parts from the first record
    (not only once they are large), so that every control flow goes through
    them; the durable tests run both ways (see ``tests/durable/conftest.py``).
    """
    saved = snapshot_module.CHECK_PARTS, snapshot_module.WHOLE_UNTIL
    snapshot_module.CHECK_PARTS = True
    snapshot_module.WHOLE_UNTIL = -1  # type: ignore[misc]
    os.environ[CHECK_PARTS] = "1"
    try:
        yield
    finally:
        snapshot_module.CHECK_PARTS, snapshot_module.WHOLE_UNTIL = saved  # type: ignore[misc]
        os.environ.pop(CHECK_PARTS, None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs a PostgreSQL server is marked ``postgres``."""
    for item in items:
        if "postgres_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    """A started runtime; stopped afterwards, and no actor thread may outlive it."""
    rt = Runtime().start()
    try:
        yield rt
    finally:
        rt.stop(timeout=5)
    left = wait_for_no_callboard_threads()
    assert not left, f"threads left after Runtime.stop(): {[t.name for t in left]}"


@pytest.fixture
def runtimes() -> Iterator[Runtimes]:
    """Runtimes a test starts with ``runtimes.start(store, **options)``.

    Afterwards every gate from ``runtimes.gate()`` is opened, every runtime is stopped, and
    no callboard thread may be left.
    """
    started = Runtimes()
    yield started
    started.close()


@pytest.fixture
def default_runtime_stopped_after() -> Iterator[None]:
    """For tests that use the process-wide default runtime: stop it afterwards."""
    yield
    from runtime import _runtime as engine

    if engine._default is not None:
        engine._default.stop(timeout=5)
    assert not wait_for_no_callboard_threads()


@pytest.fixture
def _structlog_reset() -> Iterator[None]:
    """For tests that read logs with ``capture_logs()``: structlog is reset afterwards.

    ``capture_logs()`` leaves structlog configured; later tests expect the library quiet.
    """
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    """A PostgreSQL server for the session: a throwaway cluster, stopped and deleted at the end.

    ``CALLBOARD_TEST_POSTGRES`` names a server to use instead. Without server binaries the
    tests that use it skip, or fail where ``CALLBOARD_REQUIRE_POSTGRES=1``.
    """
    server = start_server()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def postgres_url(postgres_server: Server) -> Iterator[str]:
    """The URL of a fresh database of its own for one test, dropped after it.

    Dropped on the throwaway cluster too: it stays small (it may live in memory), and its
    deletion at the end of the session takes no time.
    """
    url = postgres_server.new_database()
    yield url
    postgres_server.release_database(url)


@pytest.fixture
def pooler(postgres_server: Any) -> Iterator[TransactionPooler]:
    """A pooler in transaction mode in front of the test cluster (see ``tests._pooler``)."""
    if postgres_server.root is None:
        pytest.skip("the pooler reaches the throwaway cluster by its socket (login trusted)")
    socket = f"{postgres_server.root}/sock/.s.PGSQL.{postgres_server.port}"
    with transaction_pooler(socket, size=8) as made:
        yield made


@pytest.fixture
def pooled_url(pooler: TransactionPooler, postgres_url: str) -> str:
    """The test's database, through the pooler."""
    return pooler.url(urlsplit(postgres_url).path.lstrip("/"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def each_shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store several runtimes and processes share, once of each kind: a SQLite file's
    path (not created yet), a fresh PostgreSQL database's URL."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return str(tmp_path / "runs.db")


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def each_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """What ``Runtime(store=...)`` takes, once for each store: ``"memory"``, a SQLite file's
    path (not created yet), a fresh PostgreSQL database's URL."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return "memory" if request.param == "memory" else tmp_path / "runs.db"
