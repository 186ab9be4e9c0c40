"""A ``-wal`` (or ``-shm``) deleted from beside a SQLite file in use: nothing acknowledged is lost.

SQLite deletes a database's write-ahead log only when the last connection closes,
so one gone while a runtime has the file open was deleted by hand (``rm runs.db-*``,
a clean-up job). SQLite goes on committing to the log it holds open, which no other
process reads, without a word: every start acknowledged since the last checkpoint
was lost when the process was killed. The store now sees it within ``MOVED_EVERY``
seconds, folds what the lost log holds into the file at once, and refuses writes
from then on (a start raises ``StoreUnavailableError`` saying why), until the
process starts again.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import textwrap
import time
from pathlib import Path

import pytest

from runtime import RunStatus, Runtime, SQLiteStore
from tests._support import end_child, python_child
from tests.durable._support.workflows import logged

WRITER = textwrap.dedent(
    """
    import sys, time
    import runtime._stores.sqlite as sqlite_module
    from runtime import Runtime, StoreError
    from tests.durable._support.workflows import logged

    sqlite_module.MOVED_EVERY = 0.05
    with Runtime(store=sys.argv[1]) as rt:
        bound = rt.register(logged)
        index = 0
        while True:
            run_id = f"run-{index:05d}"
            try:
                bound.create_run(run_id).start_async(
                    input_data={"value": run_id}, request_context={"log": sys.argv[2]}
                )
            except StoreError as exc:
                print("refused", run_id, str(exc).replace(chr(10), " "), flush=True)
                time.sleep(0.05)
            else:
                print("acked", run_id, flush=True)  # start_async returned
            index += 1
            time.sleep(0.002)
    """
)


def stored(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {row[0] for row in connection.execute("SELECT run_id FROM runs")}


@pytest.mark.parametrize("deleted", [("-wal",), ("-wal", "-shm"), ("-shm",)])
def test_a_deleted_log_loses_no_acknowledged_start_when_the_process_is_killed(
    tmp_path: Path, deleted: tuple[str, ...]
) -> None:
    db = tmp_path / "runs.db"
    child = python_child(WRITER, str(db), str(tmp_path / "steps.log"))
    acked: list[str] = []
    refused: list[str] = []
    try:
        assert child.stdout is not None
        while len(acked) < 100:
            word, run_id, *_ = child.stdout.readline().rstrip("\n").split(" ", 2)
            assert word == "acked", (word, run_id)
            acked.append(run_id)
        for suffix in deleted:
            db.with_name(db.name + suffix).unlink()
        deadline = time.monotonic() + 30
        while not refused and time.monotonic() < deadline:
            line = child.stdout.readline()
            assert line, "the writing child ended"
            word, run_id, *rest = line.rstrip("\n").split(" ", 2)
            if word == "acked":
                acked.append(run_id)
            else:
                refused.append(" ".join(rest))
        assert refused, "no start was refused within 30 s of the log's deletion"
        assert "write-ahead log" in refused[0] and "deleted or replaced" in refused[0]
        assert "what was committed has been folded back into the file" in refused[0], refused[0]
        assert "Never delete the -wal or -shm file of a database in use" in refused[0]
    finally:
        child.send_signal(signal.SIGKILL)
        end_child(child, 30)
    missing = [run_id for run_id in acked if run_id not in stored(db)]
    assert not missing, f"{len(missing)} acknowledged starts lost, first {missing[:3]}"

    # A runtime started again goes on with them: the file is whole, the log made anew.
    with Runtime(store=SQLiteStore(db, lease=0.5)) as rt:
        bound = rt.register(logged)
        for run_id in acked[-5:]:
            result = bound.create_run(run_id).wait(timeout=60)
            assert result.status == RunStatus.SUCCESS, (run_id, result.status, result.error)
        fresh = bound.create_run("after").start(
            input_data={"value": "a"}, request_context={"log": str(tmp_path / "steps.log")}
        )
        assert fresh.status == RunStatus.SUCCESS
