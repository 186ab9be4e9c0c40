"""A SQLite file deleted, moved away or replaced under a running runtime: writes are refused.

In WAL mode SQLite goes on writing to a file that is no longer at its path, without
a word, and what it writes is lost: no process opens that file again (a new runtime
on the path starts an empty store). The store looks, at most once every
``MOVED_EVERY`` seconds, whether its path still names the file it opened; while it
does not, writes are refused as a read-only file's are: a start raises
``StoreUnavailableError`` saying why, the runs' writes wait in memory, and once the
file is back at its path everything goes on, nothing lost.
"""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import runtime._stores.sqlite as sqlite_module
from runtime import (
    Runtime,
    StoreUnavailableError,
    create_step,
    create_workflow,
)
from tests._support import Value, wait_until

WAIT = 10.0


@pytest.fixture(autouse=True)
def _look_often(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_module, "MOVED_EVERY", 0.05)


class Held:
    """A workflow whose first step waits for ``release``; each step counts its calls, by run."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self.release = threading.Event()
        self.entered = threading.Event()

    def workflow(self) -> Any:
        def first(ctx: Any) -> Value:
            self.calls[ctx.run_id, "first"] += 1
            self.entered.set()
            self.release.wait(WAIT)
            return ctx.input_data

        def second(ctx: Any) -> Value:
            self.calls[ctx.run_id, "second"] += 1
            return Value(value=ctx.input_data.value + "!")

        return (
            create_workflow(id="moved", input_schema=Value, output_schema=Value)
            .then(create_step(id="first", input_schema=Value, output_schema=Value, execute=first))
            .then(create_step(id="second", input_schema=Value, output_schema=Value, execute=second))
            .commit()
        )


def refused_start(wf: Any, says: str) -> StoreUnavailableError:
    """A start refused, naming ``says``: the first that comes once the store has looked."""
    errors: list[StoreUnavailableError] = []

    def refused() -> bool:
        try:
            wf.create_run().start_async(input_data={"value": "late"})
        except StoreUnavailableError as exc:
            errors.append(exc)
            return True
        return False

    # Starts made before the store's next look still go to the file that left.
    wait_until(refused, timeout=WAIT, what="a start refused")
    assert says in str(errors[0]), errors[0]
    return errors[0]


@pytest.fixture
def runs_db(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "runs.db"


def test_a_file_moved_away_refuses_writes_until_it_is_back_and_nothing_is_lost(
    runs_db: Path, _structlog_reset: None
) -> None:
    held = Held()
    away = runs_db.with_name("away.db")
    with capture_logs() as logs, Runtime(store=runs_db) as rt:
        wf = rt.register(held.workflow())
        run = wf.create_run()
        run.start_async(input_data={"value": "v"})
        assert held.entered.wait(WAIT)
        runs_db.rename(away)
        error = refused_start(wf, "deleted or moved away")
        assert str(runs_db) in str(error)
        held.release.set()  # its output cannot be recorded: the run holds before "second"
        wait_until(
            lambda: any(e["event"] == "store_write_refused" for e in logs),
            timeout=WAIT,
            what="the writer refused the run's write",
        )
        assert held.calls[run.run_id, "second"] == 0
        away.rename(runs_db)
        result = run.wait(WAIT)
        fresh = wf.create_run().start(input_data={"value": "after"}, timeout=WAIT)

    assert result.status == "success" and result.result == {"value": "v!"}
    assert (held.calls[run.run_id, "first"], held.calls[run.run_id, "second"]) == (1, 1)
    assert fresh.status == "success"
    events = [e["event"] for e in logs]
    assert events.count("store_file_moved") == 1, events
    assert events.count("store_file_back") == 1, events
    assert events.count("store_write_refused") == 1, events
    assert events.count("store_writes_accepted") == 1, events
    # Nothing lost: the next runtime on the path reads both runs as they ended.
    with Runtime(store=runs_db) as again:
        wf = again.register(held.workflow())
        for run_id in (run.run_id, fresh.run_id):
            stored = wf.get_workflow_run_execution_result(run_id)
            assert stored is not None and stored.status == "success", run_id


def test_another_file_in_its_place_is_not_written_and_the_start_says_so(runs_db: Path) -> None:
    held = Held()
    held.release.set()
    # A start made before the store looks runs on, its writes refused: the stop gives up on it.
    with Runtime(store=runs_db, stop_timeout=1) as rt:
        wf = rt.register(held.workflow())
        assert wf.create_run().start(input_data={"value": "v"}, timeout=WAIT).status == "success"
        copy = runs_db.with_name("copy.db")
        shutil.copyfile(runs_db, copy)
        copy.replace(runs_db)  # a new file (another inode) where the store's was
        refused_start(wf, "another file took its place")


def test_a_runtime_whose_file_was_deleted_refuses_starts_and_still_stops(runs_db: Path) -> None:
    held = Held()
    rt = Runtime(store=runs_db, stop_timeout=2).start()
    try:
        wf = rt.register(held.workflow())
        run = wf.create_run()
        run.start_async(input_data={"value": "v"})
        assert held.entered.wait(WAIT)
        for path in runs_db.parent.iterdir():
            path.unlink()
        refused_start(wf, "deleted or moved away")
        held.release.set()
    finally:
        stopping = threading.Thread(target=rt.stop)
        stopping.start()
        stopping.join(WAIT * 3)
    assert not stopping.is_alive(), "the stop hung on writes that can never be made"
