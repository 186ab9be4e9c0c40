"""Fixtures for runtimes in several processes sharing one store."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime import Runtime, SnapshotStore
from tests.durable._support.processes import Child
from tests.shared._worker import open_store

LEASE = 1.0
"""The lease of the worker processes: short, so that a dead one is found within seconds."""


class Fleet:
    """Worker processes and in-process runtimes on one store, all stopped at the end."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.workers: list[Child] = []
        self.runtimes: list[Runtime] = []

    def worker(self, *, concurrency: int | None = None, lease: float = LEASE) -> Child:
        """Start a worker process; return once it is ready (its id in ``.worker_id``)."""
        [child] = self.start_workers(1, concurrency=concurrency, lease=lease)
        return child

    def start_workers(
        self, count: int, *, concurrency: int | None = None, lease: float = LEASE
    ) -> list[Child]:
        """Start ``count`` worker processes at once; return once every one is ready.

        The store is made first, here, so that no worker migrates it while another starts.
        """
        open_store(self.location, lease).close()
        children = [
            Child(
                "worker",
                module="tests.shared._worker",
                store=self.location,
                lease=lease,
                concurrency=concurrency,
            )
            for _ in range(count)
        ]
        self.workers += children
        for child in children:
            child.worker_id = child.expect("ready", timeout=60, keep_others=True)  # type: ignore[attr-defined]
        return children

    def runtime(self, role: str = "client", **options: Any) -> Runtime:
        """A runtime in this process on the store, started."""
        store: SnapshotStore = open_store(self.location, float(options.pop("lease", LEASE)))
        rt = Runtime(store=store, role=role, **options)  # type: ignore[arg-type]
        self.runtimes.append(rt)
        return rt.start()

    def close(self) -> None:
        for rt in self.runtimes:
            rt.stop(timeout=1)
        # Every worker is told to stop before any is waited for: they stop side by side.
        for child in self.workers:
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.proc.pid, signal.SIGCONT)
                if child.proc.stdin is not None:
                    with contextlib.suppress(OSError):
                        child.proc.stdin.close()
        for child in self.workers:
            try:
                child.proc.wait(10)
            except Exception:
                child.proc.kill()
            child.__exit__(None, None, None)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("pooled", marks=pytest.mark.postgres),
    ]
)
def fleet_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fleet's processes meet: a SQLite file's path, a fresh PostgreSQL database's
    URL, or that database through a pooler in transaction mode."""
    if request.param == "sqlite":
        return str(tmp_path / "runs.db")
    fixture = "pooled_url" if request.param == "pooled" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def fleet(fleet_store: str) -> Iterator[Fleet]:
    made = Fleet(fleet_store)
    try:
        yield made
    finally:
        made.close()
