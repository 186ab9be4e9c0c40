"""Stores made to refuse every write, and to take writes again, for the refusal tests.

A SQLite file refuses through ``PRAGMA query_only`` on the store's connections:
what a file made read-only under a running runtime gives (``SQLITE_READONLY``;
chmod does not stop root, which these tests may run as). A PostgreSQL database
refuses through a role of its own, owner of the database, from which the test
revokes privileges on callboard's tables.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runtime import Runtime, SQLiteStore, StoreError, StoreUnavailableError


@dataclass
class Refusable:
    """A store's location, how to make it refuse writes (and take them again), what it says."""

    location: str
    refuse: Callable[[Runtime, bool], None]
    says: str


def refuse_on_sqlite(rt: Runtime, on: bool) -> None:
    """Make ``rt``'s SQLite store refuse writes (``on``), or take them again."""
    store = rt.store
    assert isinstance(store, SQLiteStore)
    for connection in (store._connection, store._caller_connection):
        if isinstance(connection, sqlite3.Connection):
            connection.execute(f"PRAGMA query_only = {'ON' if on else 'OFF'}")


def sqlite_refusable(path: Path) -> Refusable:
    """A SQLite file at ``path`` that :func:`refuse_on_sqlite` makes refuse writes."""
    return Refusable(str(path), refuse_on_sqlite, "readonly database")


def stripped_role(server: Any, url: str, role: str, privileges: str) -> Refusable:
    """The database at ``url``, owned by ``role``, whose ``refuse`` takes ``privileges`` away.

    ``refuse(rt, True)`` revokes ``privileges`` on callboard's tables from the
    role, ``refuse(rt, False)`` grants them again.
    """
    dbname = url.split("///", 1)[1].split("?", 1)[0]
    with server.admin() as admin:
        admin.execute(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') "
            f"THEN CREATE ROLE {role} LOGIN; END IF; END $$"
        )
        admin.execute(f'ALTER DATABASE "{dbname}" OWNER TO {role}')

    def refuse(_rt: Runtime, on: bool) -> None:
        with server.admin(dbname) as admin:
            admin.execute(
                f"REVOKE {privileges} ON ALL TABLES IN SCHEMA public FROM {role}"
                if on
                else f"GRANT {privileges} ON ALL TABLES IN SCHEMA public TO {role}"
            )

    return Refusable(url.replace("user=postgres", f"user={role}"), refuse, "permission denied")


def refusable_store(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    timeout: float,
    role: str,
    privileges: str = "INSERT, UPDATE, DELETE",
    patient: bool = True,
) -> Refusable:
    """A store to refuse, by ``request.param``: a SQLite file, or a PostgreSQL role stripped.

    A write's timeout (``CREATE_TIMEOUT``, ``CALL_TIMEOUT``) becomes ``timeout``,
    so that a write that waited it out shows; with ``patient``, a refusal is never
    given up on (a write that waited was told after ``REFUSED_WAIT`` instead).
    """
    from runtime._stores import _writer as writer_module
    from runtime._stores import postgres as postgres_module
    from runtime._stores import sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "CREATE_TIMEOUT", timeout, raising=False)
    monkeypatch.setattr(postgres_module, "CALL_TIMEOUT", timeout, raising=False)
    if patient:
        monkeypatch.setattr(writer_module, "REFUSAL_PATIENCE", 600.0, raising=False)
    if request.param == "sqlite":
        return sqlite_refusable(tmp_path / "runs.db")
    server: Any = request.getfixturevalue("postgres_server")
    url: str = request.getfixturevalue("postgres_url")
    return stripped_role(server, url, role, privileges)


def refusable_fixture(
    *, before: Callable[[pytest.MonkeyPatch], None] | None = None, **options: Any
) -> Any:
    """A ``refusable`` fixture for a test module: :func:`refusable_store`, on each store.

    Parametrized over SQLite and PostgreSQL; ``options`` are :func:`refusable_store`'s
    (``timeout``, ``role``, ...), and ``before`` patches the module first. structlog is
    reset afterwards, for the tests that read logs.
    """

    @pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
    def refusable(
        request: pytest.FixtureRequest,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        _structlog_reset: None,
    ) -> Iterator[Refusable]:
        if before is not None:
            before(monkeypatch)
        yield refusable_store(request, tmp_path, monkeypatch, **options)

    return refusable


def told_at_once(
    name: str, attempt: Callable[[], Any], says: str, *, timeout: float
) -> StoreUnavailableError:
    """Call ``attempt``: it must raise that the store refuses writes, in a third of ``timeout``.

    ``timeout`` is the write's own (raised for the test): a call that waited it
    out shows. ``says`` is what the database's message must hold. Returns the error.
    """
    began = time.monotonic()
    with pytest.raises(StoreUnavailableError) as raised:
        attempt()
    took = time.monotonic() - began
    assert took < timeout / 3, f"{name} took {took:.1f} s, where the write's timeout is {timeout} s"
    assert "refuses writes" in str(raised.value) and says in str(raised.value), raised.value
    return raised.value


def failures_of(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[float]:
    """Note when each call of ``owner.name`` fails with a ``StoreError``; the list of times.

    So that a refusal lasts until several tries failed, counted, rather than for a
    fixed time, which a loaded machine may fill with fewer.
    """
    failures: list[float] = []
    call = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except StoreError:
            failures.append(time.monotonic())
            raise

    monkeypatch.setattr(owner, name, counted)
    return failures


class Outcomes:
    """Calls made each on a thread of its own: what each returned or raised, as they end.

    For waits (``run.wait``, a watch read to its end) that a refusal must wake.
    """

    def __init__(self, *calls: Callable[[], Any]) -> None:
        self.ended: list[BaseException | Any] = []
        self._threads = [threading.Thread(target=self._call, args=(call,)) for call in calls]

    def _call(self, call: Callable[[], Any]) -> None:
        try:
            self.ended.append(call())
        except BaseException as exc:
            self.ended.append(exc)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> bool:
        """Wait for every call, ``timeout`` seconds each at most; whether all have ended."""
        for thread in self._threads:
            thread.join(timeout)
        return not any(thread.is_alive() for thread in self._threads)
