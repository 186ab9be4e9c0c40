"""Scripts the durability tests run in a child process: ``python -m tests.durable._support.child``.

Usage: ``child COMMAND JSON`` where JSON holds the command's parameters. A
child talks to its parent in lines on stdout that start with a word in capitals
(``STARTED``, ``RESULT``); anything else there (a warning callboard logs) is
ignored by the parent.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

from runtime import RunReader, Runtime, WorkflowError
from tests.durable._support.workflows import (
    HOLD_LIMIT,
    asking,
    asking_finished,
    asking_items,
    blocker,
    finished,
    logged,
    read_lines,
    sleepy,
)


def say(word: str, payload: Any = None) -> None:
    # One write with its newline, so that a step's "holding ..." line never splits it.
    sys.stdout.write((word if payload is None else f"{word} {json.dumps(payload)}") + "\n")
    sys.stdout.flush()


def wait_to_be_killed() -> None:
    threading.Event().wait(HOLD_LIMIT)
    say("NOT_KILLED")
    os._exit(1)


def crash_in_step(params: dict[str, Any]) -> None:
    """Start a run of ``logged`` held in ``hold_step``; it announces itself; wait for SIGKILL."""
    rt = Runtime(store=params["db"]).start()
    wf = rt.register(logged)
    wf.create_run(params["run_id"]).start_async(
        input_data={"value": params["value"]},
        request_context={
            "log": params["log"],
            "hold_step": params["hold_step"],
            "hold_file": params["hold_file"],
            "announce": True,
        },
        run_timeout=params.get("run_timeout"),
    )
    wait_to_be_killed()


def suspend_then_die(params: dict[str, Any]) -> None:
    """Start an ``asking`` run with a run_timeout, say ``SUSPENDED`` once it waits, await a kill."""
    rt = Runtime(store=params["db"]).start()
    wf = rt.register(asking)
    run = wf.create_run(params["run_id"])
    run.start_async(
        input_data={"value": params["value"]},
        request_context={"log": params["log"]},
        run_timeout=params["run_timeout"],
    )
    if run.wait(HOLD_LIMIT).status == "suspended":
        say("SUSPENDED", params["run_id"])
    wait_to_be_killed()


def crash_in_on_finish(params: dict[str, Any]) -> None:
    """Start a run of ``finished`` held in its ``on_finish`` hook, announced; await SIGKILL."""
    rt = Runtime(store=params["db"]).start()
    wf = rt.register(finished)
    wf.create_run(params["run_id"]).start_async(
        input_data={"value": params["value"]},
        request_context={
            "log": params["log"],
            "hold_step": "on_finish",
            "hold_file": params["hold_file"],
            "announce": True,
        },
    )
    wait_to_be_killed()


def kill_after_start(params: dict[str, Any]) -> None:
    """Start a run of ``logged`` and kill this process the moment ``start_async`` returns."""
    rt = Runtime(store=params["db"]).start()
    wf = rt.register(logged)
    wf.create_run(params["run_id"]).start_async(
        input_data={"value": params["value"]}, request_context={"log": params["log"]}
    )
    os.kill(os.getpid(), signal.SIGKILL)


def crash_pending(params: dict[str, Any]) -> None:
    """Fill the only run slot with a held ``blocker`` run, start a ``logged`` run behind it.

    The ``logged`` run stays ``pending``; the parent kills this process then.
    """
    rt = Runtime(store=params["db"], max_concurrent_runs=1).start()
    blocking = rt.register(blocker)
    wf = rt.register(logged)
    blocking.create_run(params["blocker_id"]).start_async(
        input_data={"value": "b"},
        request_context={
            "log": params["blocker_log"],
            "hold_step": "block",
            "hold_file": params["hold_file"],
        },
    )
    wf.create_run(params["run_id"]).start_async(
        input_data={"value": params["value"]}, request_context={"log": params["log"]}
    )
    say("STARTED", params["run_id"])
    wait_to_be_killed()


def read(params: dict[str, Any]) -> None:
    """Read the store while another process writes it, until the total has grown by ``grow``."""
    errors: list[str] = []
    seen: dict[str, str] = {}
    totals: list[int] = []
    deadline = time.monotonic() + params["within"]
    with RunReader(params["db"]) as reader:
        while time.monotonic() < deadline:
            try:
                page = reader.list_runs(limit=None)
                for run_id in params["run_ids"]:
                    run = reader.get_run(run_id)
                    if run is not None:
                        seen[run_id] = run.status.value
            except (WorkflowError, OSError) as exc:  # StoreError wraps SQLite's errors
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            totals.append(page.total)
            if totals[-1] - totals[0] >= params["grow"] and len(seen) == len(params["run_ids"]):
                break
    say("RESULT", {"errors": errors, "seen": seen, "first": totals[0], "last": totals[-1]})


def run_many(params: dict[str, Any]) -> None:
    """Run ``count`` runs of ``logged`` one after another, each with its own log; report each.

    Halfway, it waits until another process has started two runs since its first (the
    second of them begun after the first was in the file, so after its own first run):
    under load its runs could otherwise all go by while the other's writer waited for
    the lock, and the two processes' runs would not interleave.
    """
    with Runtime(store=params["db"]) as rt:
        wf = rt.register(logged)
        say("READY")
        results = {}
        count, in_file = params["count"], 0
        for index in range(count):
            run = wf.create_run()
            results[run.run_id] = run.start(
                input_data={"value": str(index)},
                request_context={"log": os.path.join(params["log_dir"], f"child-{index}.log")},
                timeout=HOLD_LIMIT,
            )
            if index == 0:
                in_file = wf.list_workflow_runs(limit=1).total
            elif index == count // 2:
                mine = in_file + index  # its own since then
                _until(
                    "two runs of another process between its own",
                    lambda mine=mine: wf.list_workflow_runs(limit=1).total >= mine + 2,
                )
        say("RESULT", {run_id: [r.status.value, r.result] for run_id, r in results.items()})


def _until(what: str, predicate: Any) -> None:
    deadline = time.monotonic() + HOLD_LIMIT
    while not predicate():
        if time.monotonic() > deadline:
            say("GAVE_UP", what)
            os._exit(1)
        time.sleep(0.005)


def cancel_then_die(params: dict[str, Any]) -> None:
    """Bring a run to ``where``, and on ``go`` cancel it; SIGKILL this process once that is True.

    ``where`` is ``running`` (held in ``beta``), ``pending`` (behind a held ``blocker``
    run in the only slot), ``sleeping`` or ``suspended``. ``CANCELING`` is said just
    before ``cancel()``; nothing is said between its return and the kill.
    """
    where, run_id, log = params["where"], params["run_id"], params["log"]
    rt = Runtime(store=params["db"], max_concurrent_runs=1 if where == "pending" else None)
    rt.start()
    context = {"log": log, "hold_step": "beta", "hold_file": params["hold_file"]}
    if where == "running":
        run = rt.register(logged).create_run(run_id)
        run.start_async(input_data={"value": "x"}, request_context=context)
        _until("beta starts", lambda: "start beta" in read_lines(log))
    elif where == "pending":
        held = {**context, "log": params["blocker_log"], "hold_step": "block"}
        rt.register(blocker).create_run().start_async(
            input_data={"value": "b"}, request_context=held
        )
        _until("the blocker starts", lambda: "start block" in read_lines(params["blocker_log"]))
        run = rt.register(logged).create_run(run_id)
        run.start_async(input_data={"value": "x"}, request_context=context)
    elif where == "sleeping":
        wf = rt.register(sleepy)
        run = wf.create_run(run_id)
        run.start_async(input_data={"value": "x"}, request_context=context)
        _until(
            "the run sleeps",
            lambda: (
                getattr(wf.get_workflow_run_execution_result(run_id), "status", "") == "waiting"
            ),
        )
    else:
        run = rt.register(asking).create_run(run_id)
        outcome = run.start(input_data={"value": "x"}, request_context=context, timeout=HOLD_LIMIT)
        assert outcome.status == "suspended", outcome
    say("READY")
    sys.stdin.readline()
    say("CANCELING")
    if run.cancel():
        os.kill(os.getpid(), signal.SIGKILL)
    say("RESULT", False)


def cancel_in_on_finish(params: dict[str, Any]) -> None:
    """Cancel a suspended ``asking_finished`` run, held in its ``on_finish``; await SIGKILL."""
    rt = Runtime(store=params["db"]).start()
    run = rt.register(asking_finished).create_run(params["run_id"])
    context = {
        "log": params["log"],
        "hold_step": "on_finish",
        "hold_file": params["hold_file"],
        "announce": True,
    }
    outcome = run.start(input_data={"value": "x"}, request_context=context, timeout=HOLD_LIMIT)
    assert outcome.status == "suspended", outcome
    say("RESULT", run.cancel())  # said only if the kill did not come first
    wait_to_be_killed()


def resume_then_die(params: dict[str, Any]) -> None:
    """On ``go``, resume a suspended ``asking`` run; SIGKILL this process once that returns."""
    rt = Runtime(store=params["db"]).start()
    run = rt.register(asking).create_run(params["run_id"])
    say("READY")
    sys.stdin.readline()
    say("RESUMING")
    run.resume_async(resume_data={"ok": True})
    os.kill(os.getpid(), signal.SIGKILL)


def resume_then_hold(params: dict[str, Any]) -> None:
    """Resume a suspended ``asking`` run, whose ``ask`` then holds and says so; await SIGKILL."""
    rt = Runtime(store=params["db"]).start()
    if "for_each_index" in params:
        run = rt.register(asking_items).create_run(params["run_id"])
        run.resume_async(for_each_index=params["for_each_index"], resume_data={"ok": True})
    else:
        rt.register(asking).create_run(params["run_id"]).resume_async(resume_data={"ok": True})
    wait_to_be_killed()


COMMANDS = {
    "cancel-then-die": cancel_then_die,
    "cancel-in-on-finish": cancel_in_on_finish,
    "resume-then-die": resume_then_die,
    "resume-then-hold": resume_then_hold,
    "crash-in-step": crash_in_step,
    "suspend-then-die": suspend_then_die,
    "crash-in-on-finish": crash_in_on_finish,
    "kill-after-start": kill_after_start,
    "crash-pending": crash_pending,
    "read": read,
    "run-many": run_many,
}


if __name__ == "__main__":
    COMMANDS[sys.argv[1]](json.loads(sys.argv[2]))
