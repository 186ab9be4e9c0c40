"""Two PID namespaces, one host name, one SQLite file: nobody is reaped for a pid unseen.

A worker on this host whose process is gone is dead at once, without waiting
for its lease: the reaper asks the kernel about its pid. Two containers on the
host's network share its host name, but each has a PID namespace of its own, in
which the other's pids do not exist: a reaper there took a live worker here
for dead, handed its runs back, and ran their steps a second time (and the
workers went on reaping each other). Worker rows now name the PID namespace
beside the host name outside the host's own, and a row of another namespace is
judged by its lease alone, as a row of another host is.

The second namespace is made with ``unshare --pid --fork`` (root, or user
namespaces): where it cannot be, the test skips, saying so.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runtime import Runtime, SQLiteStore
from runtime._stores.base import this_host
from tests._support import end_child, python_child, wait_until
from tests.durable._support.workflows import count, logged

LEASE = 600.0
"""Both workers' lease: only a wrong judgement by pid could reap either within the test."""

WATCH = 3.0
"""Seconds the worker in the other namespace has to reap (it reaps at once, then every
quarter lease or second): the old code took the run within the first."""

CHILD = textwrap.dedent(
    """
    import os, sys
    from runtime import Runtime, SQLiteStore
    from runtime._stores.base import this_host
    from tests.durable._support.workflows import logged

    with Runtime(store=SQLiteStore(sys.argv[1], lease=float(sys.argv[2])), role="worker") as rt:
        rt.register(logged)
        print("ready", os.getpid(), this_host(), flush=True)
        sys.stdin.read()
    """
)


def _unshare() -> list[str]:
    """The command that runs a program in a PID namespace of its own, or skip."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("a second PID namespace needs unshare(1), and there is none")
    command = [unshare, "--pid", "--fork"]
    tried = subprocess.run(
        [*command, sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=False,
    )
    if tried.returncode != 0 or tried.stdout.strip() != "1":
        reason = tried.stderr.strip() or tried.stdout.strip() or f"exit {tried.returncode}"
        pytest.skip(f"a second PID namespace needs unshare --pid, which was refused: {reason}")
    return command


def test_a_worker_in_another_pid_namespace_is_not_reaped_for_a_pid_it_cannot_see(
    tmp_path: Path,
) -> None:
    command = _unshare()
    db, log, hold = tmp_path / "runs.db", tmp_path / "steps.log", tmp_path / "hold"
    hold.touch()
    with Runtime(store=SQLiteStore(db, lease=LEASE)) as rt:
        run = rt.register(logged).create_run("held-here")
        run.start_async(
            input_data={"value": "x"},
            request_context={"log": str(log), "hold_step": "beta", "hold_file": str(hold)},
        )
        wait_until(lambda: count(log, "start beta") == 1, timeout=30, what="beta holds here")
        child = python_child(CHILD, str(db), str(LEASE), before=command)
        try:
            assert child.stdout is not None
            said = child.stdout.readline().split()
            assert said[:2] == ["ready", "1"], said  # pid 1: a namespace of its own
            # Its row names the namespace; ours, in the host's, the host name alone.
            assert said[2].startswith(this_host() + "[pidns:"), said
            began = time.monotonic()
            while time.monotonic() - began < WATCH:
                assert count(log, "start beta") == 1, "the run was taken from a live worker"
                time.sleep(0.05)
            store = rt.store
            assert isinstance(store, SQLiteStore)
            assert store.owner_id in {worker.worker_id for worker in store.workers()}
            assert store.holds("held-here")
        finally:
            hold.unlink()
            code = end_child(child, 30)
        result = run.wait(timeout=30)
    assert result.status == "success"
    assert (count(log, "start beta"), count(log, "start gamma")) == (1, 1)
    assert code == 0
