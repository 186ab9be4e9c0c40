"""A process out of file descriptors (``EMFILE``): SQLite reads say so, and waits ride it out.

Each thread that reads a SQLite store opens a connection of its own, which holds
the file, its ``-wal`` and its ``-shm``. SQLite reports an ``open()`` that failed
with ``EMFILE`` as "unable to open database file", naming no cause.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from runtime import RunStatus, Runtime, StoreUnavailableError, create_step, create_workflow
from runtime._stores.base import SnapshotRecord
from runtime._stores.sqlite import SQLiteStore

resource = pytest.importorskip("resource")

WAIT = 30.0


class Value(BaseModel):
    value: str


def _workflow() -> Any:
    def body(ctx: Any) -> Value:
        return ctx.input_data

    return (
        create_workflow(id="fds", input_schema=Value, output_schema=Value)
        .then(create_step(id="s", input_schema=Value, output_schema=Value, execute=body))
        .commit()
    )


def _open_now() -> int:
    return len(os.listdir("/dev/fd")) - 1  # less the listing's own


@contextlib.contextmanager
def _descriptor_limit(room: int) -> Iterator[None]:
    """The process's soft limit of open files set to what it holds now plus ``room``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (_open_now() + room, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def _every_descriptor_taken() -> Iterator[None]:
    """Files opened until the process may open no more; closed on exit."""
    held: list[int] = []
    try:
        with _descriptor_limit(room=16):
            while True:
                try:
                    held.append(os.open(os.devnull, os.O_RDONLY))
                except OSError:
                    break
            yield
    finally:
        for fd in held:
            os.close(fd)


def _read_on_a_new_thread(wf: Any, run_id: str) -> Any:
    """What a query from a thread that has not read the store yet returns or raises."""
    outcome: list[Any] = []

    def read() -> None:
        try:
            outcome.append(wf.get_workflow_run_execution_result(run_id))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    thread.join(WAIT)
    return outcome[0]


def test_a_read_out_of_descriptors_names_the_limit_and_works_once_files_close(
    tmp_path: Path,
) -> None:
    with Runtime(store=tmp_path / "runs.db") as rt:
        wf = rt.register(_workflow())
        run_id = wf.create_run().start(input_data={"value": "v"}, timeout=WAIT).run_id
        with _every_descriptor_taken():
            error = _read_on_a_new_thread(wf, run_id)
        assert isinstance(error, StoreUnavailableError), error
        assert "unable to open database file" in str(error)
        assert "RLIMIT_NOFILE" in str(error)
        result = _read_on_a_new_thread(wf, run_id)
        assert result is not None and result.status == RunStatus.SUCCESS


def test_waits_from_more_threads_than_the_limit_lets_read_at_once_all_end(
    tmp_path: Path,
) -> None:
    # Room for six readers' three files each, for 24 threads that each open one (and
    # the runtime's own threads that read). A read that found no descriptor failed the
    # wait (a StoreError), and its thread's reader kept the file open without its -wal
    # and -shm, so that the threads stuck so kept each other out: now it is closed, and
    # the wait tries again, as through any outage of the store.
    with Runtime(store=tmp_path / "runs.db") as rt:
        wf = rt.register(_workflow())
        wf.create_run().start(input_data={"value": "warm"}, timeout=WAIT)
        statuses: list[Any] = []
        lock = threading.Lock()

        def start_and_wait(index: int) -> None:
            run = wf.create_run()
            run.start_async(input_data={"value": str(index)})
            try:
                status: Any = run.wait(timeout=WAIT).status
            except Exception as exc:
                status = exc
            with lock:
                statuses.append(status)

        with _descriptor_limit(room=18):
            threads = [threading.Thread(target=start_and_wait, args=(i,)) for i in range(24)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(2 * WAIT)
        assert statuses == [RunStatus.SUCCESS] * len(threads), statuses


def test_a_failed_open_near_the_limit_counts_as_out_of_files_though_a_few_are_free_now(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Other threads close their files between a thread's failed open and its count of the
    # files open: a thread that found a few free then said "unable to open database file"
    # (a plain StoreError, which a wait does not ride out) where its neighbours were told
    # the limit was reached (seen under load: one wait in 24 failed so).
    import sqlite3

    from runtime._stores.sqlite import _out_of_descriptors

    with pytest.raises(sqlite3.Error) as failed:
        sqlite3.connect(tmp_path / "no such folder" / "runs.db")
    assert failed.value.sqlite_errorcode == sqlite3.SQLITE_CANTOPEN
    open_now = len(os.listdir("/dev/fd"))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    monkeypatch.setattr(resource, "getrlimit", lambda _which: (open_now + 6, hard))
    said = _out_of_descriptors(failed.value)
    assert said is not None and "RLIMIT_NOFILE" in said
    # Far from the limit, the open failed for another reason: not said so.
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (open_now + 500, hard))
    assert _out_of_descriptors(failed.value) is None


def _big(run_id: str, seq: int, status: str) -> SnapshotRecord:
    return SnapshotRecord(
        run_id=run_id,
        workflow_id="wf",
        seq=seq,
        status=status,
        data=os.urandom(60_000),
        created_at=1_700_000_000.0,
        updated_at=1_700_000_000.0 + seq,
        trace_id="ef" * 16,
    )


def test_a_big_batch_of_saves_commits_with_every_descriptor_taken(tmp_path: Path) -> None:
    # A batch this big needs room for SQLite's temporary files (a statement journal
    # past 64 KiB, a sort that spills), which it opened as files in /var/tmp. Out of
    # descriptors, the writer's batch failed with "unable to open database file", try
    # after try, while every run waited on it (`chaos.py --only limits` hung so in
    # two runs of three). They are kept in memory now.
    store = SQLiteStore(tmp_path / "runs.db")
    try:
        run_ids = [f"r{index}" for index in range(12)]
        for run_id in run_ids:
            assert store.create(_big(run_id, 0, "pending")) is True
        done = threading.Event()
        errors: list[BaseException] = []
        with _every_descriptor_taken():
            store.save(
                [_big(run_id, 1, "running") for run_id in run_ids],
                on_commit=done.set,
                on_error=lambda exc: (errors.append(exc), done.set()),
            )
            assert done.wait(WAIT), "the batch never committed"
        assert not errors
        assert [store.load(run_id).seq for run_id in run_ids] == [1] * 12  # type: ignore[union-attr]
    finally:
        store.close()
