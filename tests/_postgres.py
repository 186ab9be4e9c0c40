"""A throwaway PostgreSQL cluster for the tests, or the server ``CALLBOARD_TEST_POSTGRES`` names.

The session fixture in ``tests/conftest.py`` starts one cluster (``initdb`` and
``pg_ctl`` as the ``postgres`` user when we are root, since ``initdb`` refuses
root), in ``/dev/shm`` where it has room, listening on a private socket directory
and on 127.0.0.1 at a free port, and each test gets a database of its own,
dropped after it. Local connections are trusted; TCP
connections need a password (scram-sha-256), so authentication failures can be
tested. Where no server binaries exist the tests skip, unless
``CALLBOARD_REQUIRE_POSTGRES=1`` (CI) makes them fail.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

REQUIRED = os.environ.get("CALLBOARD_REQUIRE_POSTGRES") == "1"
"""Whether a missing server fails the tests instead of skipping them (set in ``.ci/run``)."""

EXTERNAL = os.environ.get("CALLBOARD_TEST_POSTGRES")
"""A server to use instead of a throwaway cluster: a URL to a database we may create others on."""

PASSWORD_ROLE = "callboard_pw"
PASSWORD = "right-horse-battery"


def unavailable(reason: str) -> None:
    """Skip the test, or fail it where CI requires PostgreSQL."""
    if REQUIRED:
        pytest.fail(f"CALLBOARD_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


def bindir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are, by ``pg_config --bindir`` or Debian's layout."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                ["pg_config", "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
            candidates.append(Path(out))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """A PostgreSQL server for the tests: a throwaway cluster, or an external one.

    ``url(dbname)`` is a URL to one of its databases as the superuser;
    ``new_database()`` makes a fresh one.
    """

    def __init__(self) -> None:
        self._names = itertools.count(1)
        self._released: list[str] = []
        self.external = EXTERNAL
        self.root: Path | None = None
        self.port = 0
        self._bin: Path | None = None
        self._as_postgres = os.geteuid() == 0
        import psycopg

        self._psycopg: Any = psycopg

    # --- the throwaway cluster ------------------------------------------------------

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)

    def create(self) -> None:
        """Make and start the cluster; a test failure (or skip) says why if it cannot."""
        found = bindir()
        if found is None:
            unavailable("no PostgreSQL server binaries (initdb, pg_ctl) were found")
            return
        self._bin = found
        self.root = Path(tempfile.mkdtemp(prefix="callboard-pg-", dir=_cluster_parent()))
        (self.root / "data").mkdir()
        (self.root / "sock").mkdir()
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            for sub in ("data", "sock"):
                shutil.chown(self.root / sub, "postgres", "postgres")
        self.port = free_port()
        done = self._run(
            str(found / "initdb"),
            "-D",
            str(self.root / "data"),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr or done.stdout}")
        self.start()
        with self.admin() as connection:
            connection.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'")

    def start(self) -> None:
        assert self._bin is not None and self.root is not None
        options = (
            f"-k {self.root / 'sock'} -p {self.port} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        done = self._run(
            str(self._bin / "pg_ctl"),
            "-D",
            str(self.root / "data"),
            "-l",
            str(self.root / "log"),
            "-o",
            options,
            "-w",
            "start",
        )
        if done.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stderr or done.stdout}\n{log}")

    def stop(self, mode: str = "fast") -> None:
        assert self._bin is not None and self.root is not None
        self._run(
            str(self._bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", mode, "-w", "stop"
        )

    def destroy(self) -> None:
        if self.root is None:
            self.drop_released()  # on an external server
            return
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
        self._released.clear()  # gone with the cluster

    @property
    def restartable(self) -> bool:
        """Whether the tests may stop and start this server (only a throwaway cluster)."""
        return self.external is None

    # --- databases ----------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        if self.external is not None:
            parts = urlsplit(self.external)
            query = f"?{parts.query}" if parts.query else ""
            return f"{parts.scheme}://{parts.netloc}/{dbname}{query}"
        assert self.root is not None
        host = quote(str(self.root / "sock"))
        return f"postgresql:///{dbname}?host={host}&port={self.port}&user=postgres"

    def password_url(self, password: str, dbname: str = "postgres") -> str:
        """A URL over TCP as a role that needs a password, with ``password`` as the password."""
        return f"postgresql://{PASSWORD_ROLE}:{quote(password)}@127.0.0.1:{self.port}/{dbname}"

    @contextlib.contextmanager
    def admin(self, dbname: str = "postgres") -> Iterator[Any]:
        # The module as imported at the start: a test may hide psycopg for a while.
        psycopg = self._psycopg
        with psycopg.connect(self.url(dbname), autocommit=True) as connection:
            yield connection

    def new_database(self) -> str:
        """A fresh, empty database's URL."""
        self.drop_released()
        name = f"callboard_t{os.getpid()}_{next(self._names)}"
        with self.admin() as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name}")
            connection.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def release_database(self, url: str) -> None:
        """Drop the database of ``url`` once nothing uses it: before the next one is made.

        Not at once: a fixture that asked for a test's database while it was being set up
        is torn down after that database's fixture, and its runtimes are still connected.
        """
        self._released.append(url)

    def drop_released(self) -> None:
        while self._released:
            self.drop_database(self._released.pop())

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with contextlib.suppress(Exception), self.admin() as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


IN_MEMORY_AT_LEAST = 2 << 30
"""Free bytes ``/dev/shm`` must have for the cluster to live there (it stays far smaller:
each test's database is dropped after it)."""


def _cluster_parent() -> str | None:
    """Where the throwaway cluster's folder goes: in memory where there is room, else ``/tmp``.

    Every test creates a database (a copy of ``template0``) and drops it: on ``tmpfs`` that
    takes half the time it takes on a disk, with ``fsync`` off or not.
    """
    shm = Path("/dev/shm")
    try:
        if os.access(shm, os.W_OK | os.X_OK) and shutil.disk_usage(shm).free >= IN_MEMORY_AT_LEAST:
            return str(shm)
    except OSError:
        pass
    return None


def script_server() -> Server | None:
    """A server for a script (a benchmark); ``None`` without psycopg, or binaries and a URL."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None
    server = Server()
    if server.external is None and bindir() is None:
        return None
    return _created(server)


def start_server() -> Server:
    """The server for this session; skips (or fails, in CI) where there is none."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed (pip install 'callboard[postgres]')")
    return _created(Server())


def _created(server: Server) -> Server:
    """``server`` with its throwaway cluster made and started (none for an external one)."""
    if server.external is None:
        try:
            server.create()
        except BaseException:
            server.destroy()
            raise
    return server
