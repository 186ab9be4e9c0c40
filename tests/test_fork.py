"""A runtime started before ``os.fork()``: the child is told so, and a new runtime there works.

A daemon that forks its workers after starting a runtime (``gunicorn --preload``,
``multiprocessing``'s default ``fork`` on Linux) gives each child a copy of the
runtime without its threads, and with its store's connections, which are the
parent's. Without the fork hook, a start in the child returned a run id and the
run never ran (memory), or the child hung (SQLite).
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import select
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pykka
import pytest

from runtime import (
    RunReader,
    Runtime,
    RuntimeStoppedError,
    SQLiteStore,
    StoreError,
    create_step,
    create_workflow,
)
from tests._support import Value

WAIT = 10.0
CHILD_DEADLINE = 60.0

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork, threads (3.12+)


def _workflow() -> Any:
    step = create_step(
        id="echo", input_schema=Value, output_schema=Value, execute=lambda ctx: ctx.input_data
    )
    return create_workflow(id="forked", input_schema=Value, output_schema=Value).then(step).commit()


def _in_a_child(body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``body`` in a forked child; its report, or a failure if it hung or died.

    A child that hangs writes every thread's stack to a file first, which the
    failure shows: a hang after a fork is a lock some thread held at the fork.
    The parent asks for them with SIGABRT, which faulthandler answers from its
    signal handler: a thread of the child's own that sleeps and then dumps them
    wrote nothing the two times a child hung in the suite (the hung thread held
    the GIL, or that thread never woke).
    """
    with tempfile.TemporaryFile() as stacks:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, and leave without running the parent's cleanup
            os.close(read_end)
            # Not faulthandler.dump_traceback_later: it first cancels the parent's timer
            # (pytest's faulthandler_timeout), and waits for a thread the child lacks.
            faulthandler.enable(file=stacks, all_threads=True)
            try:
                report = body()
            except BaseException as exc:
                report = {"raised": f"{type(exc).__name__}: {exc}"}
            os.write(write_end, json.dumps(report).encode())
            os._exit(0)
        os.close(write_end)
        chunks: list[bytes] = []
        deadline = time.monotonic() + CHILD_DEADLINE
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    _stop_with_stacks(pid)
                    stacks.seek(0)
                    pytest.fail(
                        f"the forked child did not finish within {CHILD_DEADLINE} s; "
                        "its threads:\n" + stacks.read().decode(errors="replace")
                    )
                ready, _, _ = select.select([read_end], [], [], remaining)
                if ready:
                    chunk = os.read(read_end, 65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        finally:
            os.close(read_end)
            with contextlib.suppress(ChildProcessError):  # reaped if it had to be stopped
                os.waitpid(pid, 0)
    assert chunks, "the forked child reported nothing"
    report: dict[str, Any] = json.loads(b"".join(chunks))
    return report


def _stop_with_stacks(pid: int) -> None:
    """Have a hung child write its threads' stacks (SIGABRT), then end it for sure."""
    os.kill(pid, signal.SIGABRT)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def _refusal(call: Callable[[], object]) -> str | None:
    try:
        call()
    except RuntimeStoppedError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "sqlite"])
def test_a_runtime_started_before_a_fork_refuses_in_the_child_and_a_new_one_runs(
    tmp_path: Path, durable: bool
) -> None:
    _fork_after_start(str(tmp_path / "runs.db") if durable else "memory", durable=durable)


def test_a_postgresql_runtime_started_before_a_fork_leaves_the_parent_its_connections(
    postgres_url: str,
) -> None:
    # The child neither uses nor closes the parent's pooled connections: the parent's
    # runtime goes on with them after the child has ended.
    _fork_after_start(postgres_url, durable=True)


def _fork_after_start(store: str, *, durable: bool) -> None:
    with Runtime(store=store) as rt:
        wf = rt.register(_workflow())
        before = wf.create_run().start(input_data={"value": "parent"}, timeout=WAIT)
        assert before.status == "success"

        def child() -> dict[str, Any]:
            report: dict[str, Any] = {
                "start": _refusal(lambda: wf.create_run().start_async(input_data={"value": "c"})),
                "read": _refusal(lambda: wf.get_workflow_run_execution_result(before.run_id)),
                "running": rt.is_running,
            }
            began = time.monotonic()
            rt.stop()  # nothing to stop here, and nothing of the parent's to wait for
            report["stop_s"] = time.monotonic() - began
            try:
                fresh = Runtime(store=store).start()
            except StoreError as exc:  # SQLite's own state does not survive the fork
                report["fresh_refused"] = str(exc)
                fresh = Runtime().start()
            with fresh:
                mine = fresh.register(_workflow())
                ran = mine.create_run().start(input_data={"value": "child"}, timeout=WAIT)
                report["fresh"] = ran.status
                found = mine.get_workflow_run_execution_result(before.run_id)
                report["parent_run"] = None if found is None else found.status
            return report

        report = _in_a_child(child)
        after = wf.create_run().start(input_data={"value": "parent again"}, timeout=WAIT)

    assert "raised" not in report, report
    for call in ("start", "read"):
        assert report[call] is not None, f"{call} was not refused in the child"
        assert "is a fork of it" in report[call]
        assert f"started in process {os.getpid()}" in report[call]
    assert report["running"] is False
    assert report["stop_s"] < 5
    assert report["fresh"] == "success"
    if store.startswith("postgresql"):
        # A new runtime in the child reads the database through connections of its own.
        assert "fresh_refused" not in report
        assert report["parent_run"] == "success"
    elif durable:
        # SQLite's process-wide state (its list of open files, their locks and mutexes)
        # is the parent's, copied as it was: a store is not opened in the child.
        assert f"is a fork of process {os.getpid()}" in report["fresh_refused"]
        assert "spawn" in report["fresh_refused"]
        assert report["parent_run"] is None  # the memory runtime it used instead
    else:
        assert "fresh_refused" not in report
        assert report["parent_run"] is None
    assert after.status == "success"  # the parent's runtime never noticed


@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
def test_a_run_reader_opened_before_a_fork_refuses_in_the_child_and_the_parent_reads_on(
    tmp_path: Path, where: str, request: pytest.FixtureRequest
) -> None:
    # It read through the parent's connection: on PostgreSQL the two processes' replies
    # got mixed up on the shared socket (a run id read as a count, IndexError).
    store = (
        str(tmp_path / "runs.db") if where == "sqlite" else request.getfixturevalue("postgres_url")
    )
    with Runtime(store=store) as rt:
        run_id = rt.register(_workflow()).create_run().start(input_data={"value": "x"}).run_id
    with RunReader(store) as reader:
        assert reader.get_run(run_id) is not None

        def child() -> dict[str, Any]:
            try:
                reader.get_run(run_id)
            except StoreError as exc:
                refused = str(exc)
            else:
                refused = ""
            reader.close()  # touches nothing of the parent's
            return {"refused": refused}

        report = _in_a_child(child)
        found = reader.get_run(run_id)  # the parent's connections, untouched
        listed = reader.list_runs()

    assert "is a fork of it" in report["refused"], report
    assert "new RunReader" in report["refused"]
    assert found is not None and found.status == "success"
    assert listed.total == 1


def test_an_unbound_workflow_gets_a_default_runtime_of_its_own_in_a_forked_child(
    default_runtime_stopped_after: None,
) -> None:
    workflow = _workflow()
    assert workflow.create_run().start(input_data={"value": "x"}, timeout=WAIT).status == "success"

    def child() -> dict[str, Any]:
        result = workflow.create_run().start(input_data={"value": "y"}, timeout=WAIT)
        return {"status": result.status}

    assert _in_a_child(child) == {"status": "success"}


def test_a_runtime_created_but_not_started_before_a_fork_starts_in_the_child() -> None:
    rt = Runtime()

    def child() -> dict[str, Any]:
        with rt:
            wf = rt.register(_workflow())
            result = wf.create_run().start(input_data={"value": "y"}, timeout=WAIT)
        return {"status": result.status}

    assert _in_a_child(child) == {"status": "success"}


def test_locks_other_threads_held_at_the_fork_do_not_stop_new_runtimes_in_the_child(
    default_runtime_stopped_after: None,
) -> None:
    # A fork comes at any moment of the parent's other threads: here, while one holds
    # pykka's actor registry (a step pool growing) and the default runtime's lock.
    from runtime import _runtime as engine

    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with pykka.ActorRegistry._actor_refs_lock, engine._default_lock:
            holding.set()
            release.wait(WAIT)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(WAIT)

        def child() -> dict[str, Any]:
            with Runtime() as rt:
                wf = rt.register(_workflow())
                bound = wf.create_run().start(input_data={"value": "y"}, timeout=WAIT)
            unbound = _workflow().create_run().start(input_data={"value": "z"}, timeout=WAIT)
            return {"bound": bound.status, "unbound": unbound.status}

        report = _in_a_child(child)
    finally:
        release.set()
        holder.join(WAIT)
    assert report == {"bound": "success", "unbound": "success"}


def test_a_forked_child_leaves_the_sqlite_readers_of_the_parents_threads_alone(
    tmp_path: Path,
) -> None:
    # As the child starts, Python frees what the parent's other threads kept in
    # thread-locals: a SQLite store's reader of each thread. Freeing one closed its
    # connection, a SQLite call in the child on the parent's connection: the child hung
    # when a parent thread held one of SQLite's mutexes at the fork (seen twice in the
    # suite; then caught with its stack, in _Reader.__del__ under os.fork()).
    store = SQLiteStore(tmp_path / "runs.db")
    done_reading, release = threading.Event(), threading.Event()

    def read_then_wait() -> None:
        store.load("nothing")  # this thread's reader
        done_reading.set()
        release.wait(WAIT)

    reader = threading.Thread(target=read_then_wait)
    reader.start()
    try:
        assert done_reading.wait(WAIT)
        readers = set(store._readers)
        assert readers

        def child() -> dict[str, Any]:
            return {"kept": len(set(store._readers) & readers)}

        report = _in_a_child(child)
    finally:
        release.set()
        reader.join(WAIT)
        store.close()
    assert report == {"kept": len(readers)}  # none closed, none forgotten, in the child
