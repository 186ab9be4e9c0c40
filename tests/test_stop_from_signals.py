"""``rt.stop()`` from a signal handler, and Ctrl-C inside callboard's calls, in a daemon.

Each test runs a child process (``tests/_signal_child.py``): signal handlers
run on the main thread, between two bytecodes of whatever it does, and a test
must not take over its own process's signals. Timeouts here only guard against
a hang; a child still running at the end is killed.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.durable._support.processes import Child

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")

HANG_GUARD = 90.0
"""Seconds a child may take: only a hang comes near it."""


def _result(command: str, **params: Any) -> Any:
    """The child's RESULT, with what it wrote to stderr under ``"stderr"``."""
    with Child(command, module="tests._signal_child", **params) as child:
        try:
            result = child.result(HANG_GUARD)
        except AssertionError as exc:
            if child.proc.poll() is None:  # hung: its threads' stacks, to its stderr
                child.proc.send_signal(signal.SIGUSR1)
                time.sleep(2)
                child.proc.kill()
            raise AssertionError(f"{exc}\nstderr: {child.error_output()}") from None
        assert child.wait(HANG_GUARD) == 0, child.error_output()
        result["stderr"] = child.error_output()
        return result


def _store(tmp_path: Path, kind: str) -> str:
    return "memory" if kind == "memory" else str(tmp_path / "runs.db")


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("lock", ["store", "runtime"])
def test_a_stop_from_a_handler_that_interrupts_a_call_holding_a_lock_returns_and_stops(
    tmp_path: Path, kind: str, lock: str
) -> None:
    # The handler runs while the main thread holds the store's lock (in a start) or the
    # runtime's (in register): a stop that waited for either waited for ever (the runtime's
    # lock) or until the store gave up on its writer (30 s, on SQLite).
    result = _result("trip", store=_store(tmp_path, kind), lock=lock)

    assert result["tripped"]
    assert result["handled"] == [True]  # the handler's stop() returned
    assert result["outcome"] == "stopped"  # the next call said the runtime stopped
    assert None not in result["statuses"].values()  # every acknowledged start is recorded
    assert result["left"] == []


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_ctrl_c_inside_stop_leaves_it_going_and_a_later_stop_finishes_it(
    tmp_path: Path, kind: str
) -> None:
    result = _result("interrupted_stop", store=_store(tmp_path, kind))

    assert result["first"] == "interrupted"
    assert not result["running"]
    # The runs the stop waited for ended; the later stop left no thread behind.
    assert set(result["statuses"].values()) == {"success"}, result["stderr"]
    assert result["left"] == []


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_signals_at_random_moments_of_a_busy_daemon_never_wedge_it_nor_lose_a_run(
    tmp_path: Path, kind: str, signal_name: str
) -> None:
    # SIGTERM: a handler calls rt.stop(); SIGINT: a KeyboardInterrupt lands wherever the main
    # thread is (a start, a wait, a write). Then rt.stop() from the program's flow, each round.
    result = _result(
        "rounds",
        store=_store(tmp_path, kind),
        signal_name=signal_name,
        rounds=12,
        seed=sum(map(ord, kind + signal_name)),
    )

    outcome = "stopped" if signal_name == "SIGTERM" else "interrupted"
    assert set(result["outcomes"]) == {outcome}
    assert result["lost"] == []
    assert result["unfinished"] == []
    assert result["left"] == []


def test_ctrl_c_as_a_start_takes_the_store_lock_leaves_the_lock_free(tmp_path: Path) -> None:
    # Python raises the KeyboardInterrupt as the lock's acquire returns, before the next
    # statement: the start's lock was held for good, every write waited on it, and the
    # stop took its whole timeout, leaving the writes queued uncommitted.
    result = _result("ctrl_c_in_start", store=str(tmp_path / "runs.db"))

    assert result["tripped"] and result["interrupted"]
    assert not result["held"]
    assert result["outcome"] == "finished"  # the starts after it work
    assert result["stop_s"] < HANG_GUARD / 3, result["stop_s"]
    assert set(result["statuses"].values()) == {"success"}
    assert result["left"] == []
