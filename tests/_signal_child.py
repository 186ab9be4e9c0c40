"""A daemon for ``tests/test_stop_from_signals.py``: it starts and waits on runs, and is signalled.

Run as ``python -m tests._signal_child COMMAND PARAMS``, PARAMS being JSON. It
prints one ``RESULT`` line of JSON at the end (see :class:`Child`). Commands:

- ``trip``: a SIGTERM handler calls ``rt.stop()``; the signal comes while the
  main thread holds a lock of callboard's (``lock``: ``"store"``, the store's
  own; ``"runtime"``, the runtime's, in ``register``), the moment it takes it.
- ``rounds``: ``rounds`` runtimes one after the other, each started and
  waited on in a loop until a thread of the child sends it ``signal`` (SIGTERM,
  whose handler calls ``rt.stop()``, or SIGINT, Python's ``KeyboardInterrupt``)
  at a random moment; then ``rt.stop()`` from the program's flow.
- ``interrupted_stop``: a ``KeyboardInterrupt`` lands inside ``rt.stop()``
  (from SIGINT, while it waits for runs in progress); then ``rt.stop()`` again.

Every runtime's store is a SQLite file (``store``: a path) or memory (``"memory"``).
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from runtime import Runtime, RuntimeStoppedError, create_step, create_workflow
from runtime._stores import sqlite as sqlite_module
from runtime._stores.memory import MemoryStore
from tests._support import callboard_threads, wait_for_no_callboard_threads

HANG_GUARD = 45.0
"""Seconds a wait of the child's own may take before it says so (never in a passing run)."""


class Count(BaseModel):
    value: int


release = threading.Event()
"""Set when the runs with a negative value may end."""


def _add_one(ctx: Any) -> Count:
    if ctx.input_data.value < 0:  # a run in progress until released: a stop waits for it
        release.wait(HANG_GUARD)
    return Count(value=ctx.input_data.value + 1)


add_one = create_step(id="add_one", input_schema=Count, output_schema=Count, execute=_add_one)
counting = create_workflow(id="counting", input_schema=Count, output_schema=Count)
counting = counting.then(add_one).commit()
other = create_workflow(id="other", input_schema=Count, output_schema=Count).then(add_one).commit()


class TrippingLock:
    """A lock that, once armed, sends this process a signal the moment the main thread takes it.

    The signal's Python handler runs as soon as the lock is held: the main
    thread is then inside callboard, holding the lock, as a signal arriving at
    the worst moment would find it.
    """

    def __init__(self, lock: Any, signum: int) -> None:
        self._lock = lock
        self._signum = signum
        self.armed = False
        self.tripped = False

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        taken: bool = self._lock.acquire(blocking, timeout)
        if taken and self.armed and threading.current_thread() is threading.main_thread():
            self.armed = False
            self.tripped = True
            signal.raise_signal(self._signum)
        return taken

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return bool(self._lock.locked())

    def _is_owned(self) -> bool:  # a reentrant lock's: whether this thread holds it
        return bool(self._lock._is_owned())

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _runtime(store: str, stop_timeout: float = 10.0) -> Runtime:
    return Runtime(store=store, stop_timeout=stop_timeout).start()


def _statuses(wf: Any, run_ids: list[str]) -> dict[str, str | None]:
    """The status each run is recorded with (``None``: not recorded)."""
    found = {}
    for run_id in run_ids:
        result = wf.get_workflow_run_execution_result(run_id)
        found[run_id] = None if result is None else str(result.status)
    return found


def _start_and_wait(wf: Any, acked: list[str], runs: int | None = None) -> str:
    """Start runs and wait for each, until the runtime stops (or ``runs`` ended)."""
    n = 0
    try:
        while runs is None or n < runs:
            run = wf.create_run()
            acked.append(run.start_async(input_data={"value": n}).run_id)
            n += 1
            run.wait(timeout=HANG_GUARD)
    except RuntimeStoppedError:
        return "stopped"
    return "finished"


def _stopped_within_guard(rt: Runtime) -> None:
    """``rt.stop()`` from the program's flow; the threads' stacks, if it hangs."""
    done = threading.Event()

    def watch() -> None:
        if not done.wait(HANG_GUARD):
            faulthandler.dump_traceback(all_threads=True)

    watcher = threading.Thread(target=watch, name="stop-watcher", daemon=True)
    watcher.start()
    try:
        rt.stop()
    finally:
        done.set()


def trip(store: str, lock: str) -> dict[str, Any]:
    rt = _runtime(store)
    wf = rt.register(counting)
    handled: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: handled.append(rt.stop() is None))
    if lock == "store":
        target = rt.store
        name = "_lock" if isinstance(target, MemoryStore) else "_write_lock"
    else:
        target, name = rt, "_lock"
    # A closing SQLite store waits up to CREATE_TIMEOUT (30 s) for its writer, which needs the
    # lock: longer than the guard here, so that a stop that waits for the lock hangs.
    sqlite_module.CREATE_TIMEOUT = 10 * HANG_GUARD  # type: ignore[misc]
    tripping = TrippingLock(getattr(target, name), signal.SIGTERM)
    setattr(target, name, tripping)
    acked: list[str] = []
    _start_and_wait(wf, acked, runs=3)  # the runtime works, the lock unarmed
    tripping.armed = True
    registered = "no"
    if lock == "runtime":
        try:
            rt.register(other)
            registered = "yes"
        except RuntimeStoppedError:
            registered = "stopped"
    outcome = _start_and_wait(wf, acked, runs=50)
    _stopped_within_guard(rt)
    return {
        "tripped": tripping.tripped,
        "handled": handled,
        "registered": registered,
        "outcome": outcome,
        "statuses": _statuses(wf, acked),
        "left": [thread.name for thread in wait_for_no_callboard_threads()],
    }


def _signal_later(signum: int, when: Callable[[], object]) -> threading.Thread:
    """A thread (not started) that sends this process ``signum`` once ``when()`` returned."""

    def send() -> None:
        when()
        os.kill(os.getpid(), signum)

    return threading.Thread(target=send, name="signal-sender")


def _stopping(rt: Runtime) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while rt.is_running and time.monotonic() < deadline:
        time.sleep(0.01)


def rounds(store: str, signal_name: str, rounds: int, seed: int) -> dict[str, Any]:
    signum = getattr(signal, signal_name)
    chance = random.Random(seed)
    outcomes: list[str] = []
    lost: list[str] = []
    unfinished: list[str] = []
    left: list[str] = []
    for index in range(rounds):
        path = store if store == "memory" else f"{store}.{index}"
        rt = _runtime(path)
        wf = rt.register(counting)
        if signum == signal.SIGTERM:
            signal.signal(signal.SIGTERM, lambda *_, rt=rt: rt.stop())
        acked: list[str] = []
        sender = _signal_later(signum, functools.partial(time.sleep, chance.uniform(0.0, 0.3)))
        try:
            sender.start()
            outcomes.append(_start_and_wait(wf, acked))
        except KeyboardInterrupt:
            outcomes.append("interrupted")
        sender.join(HANG_GUARD)
        _stopped_within_guard(rt)
        statuses = _statuses(wf, acked)
        lost += [run_id for run_id, status in statuses.items() if status is None]
        if store == "memory":  # a run that did not end failed, saying the runtime stopped
            unfinished += [run_id for run_id, s in statuses.items() if s in ("pending", "running")]
        left += [thread.name for thread in wait_for_no_callboard_threads()]
    return {"outcomes": outcomes, "lost": lost, "unfinished": unfinished, "left": left}


def _stacks_unless_ended(wf: Any, run_ids: list[str], after: float = 5.0) -> None:
    """Every thread's stack to stderr if the runs have not all ended ``after`` seconds on."""
    time.sleep(after)
    with contextlib.suppress(Exception):
        statuses = _statuses(wf, run_ids)
        if set(statuses.values()) != {"success"}:
            print(f"runs not ended {after} s after their release: {statuses}", file=sys.stderr)
            faulthandler.dump_traceback(all_threads=True)


def interrupted_stop(store: str) -> dict[str, Any]:
    rt = _runtime(store, stop_timeout=HANG_GUARD)  # the stop waits for the runs till released
    wf = rt.register(counting)
    acked = [wf.create_run().start_async(input_data={"value": -1}).run_id for _ in range(4)]
    first = "returned"
    # Ctrl-C once the stop is under way, while it waits for the runs, which wait for it.
    sender = _signal_later(signal.SIGINT, functools.partial(_stopping, rt))
    try:
        sender.start()
        rt.stop()
    except KeyboardInterrupt:
        first = "interrupted"
    release.set()
    # The runs end within moments of their release; stacks now and then, if they have not
    # (a rare failure under load, not found yet: the stop waited its whole timeout).
    threading.Thread(
        target=_stacks_unless_ended, args=(wf, acked), name="end-watcher", daemon=True
    ).start()
    sender.join(HANG_GUARD)
    _stopped_within_guard(rt)
    return {
        "first": first,
        "running": rt.is_running,
        "statuses": _statuses(wf, acked),
        "left": [thread.name for thread in wait_for_no_callboard_threads()],
    }


def ctrl_c_in_start(store: str) -> dict[str, Any]:
    """Ctrl-C lands the moment a start on the main thread takes the SQLite store's write lock."""
    rt = _runtime(store)
    wf = rt.register(counting)
    # A stop that waits for a lock left held hangs past the guard (see trip).
    sqlite_module.CREATE_TIMEOUT = 10 * HANG_GUARD  # type: ignore[misc]
    target = rt.store
    tripping = TrippingLock(target._write_lock, signal.SIGINT)  # type: ignore[attr-defined]
    target._write_lock = tripping  # type: ignore[attr-defined]
    acked: list[str] = []
    _start_and_wait(wf, acked, runs=2)
    tripping.armed = True
    interrupted = False
    try:
        wf.create_run().start_async(input_data={"value": 0})
    except KeyboardInterrupt:
        interrupted = True
    inner = tripping._lock
    if hasattr(inner, "_is_owned"):  # reentrant: whether this thread holds it
        held = bool(inner._is_owned())
    else:  # a plain lock: held if it cannot be had (the writer lets go of it at once)
        held = not inner.acquire(timeout=5)
        if not held:
            inner.release()
    if held:  # left held: let go here, so that the rest says what else went wrong
        inner.release()
    outcome = _start_and_wait(wf, acked, runs=2)
    began = time.monotonic()
    _stopped_within_guard(rt)
    return {
        "tripped": tripping.tripped,
        "interrupted": interrupted,
        "held": held,
        "outcome": outcome,
        "stop_s": time.monotonic() - began,
        "statuses": _statuses(wf, acked),
        "left": [thread.name for thread in wait_for_no_callboard_threads()],
    }


COMMANDS: dict[str, Callable[..., dict[str, Any]]] = {
    "trip": trip,
    "ctrl_c_in_start": ctrl_c_in_start,
    "rounds": rounds,
    "interrupted_stop": interrupted_stop,
}


def main() -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # Python's own Ctrl-C, whatever this process inherited: a shell's background job
    # (`cmd &`, as CI may be started) ignores SIGINT, and so would every child of it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    command, params = sys.argv[1], json.loads(sys.argv[2])
    result = COMMANDS[command](**params)
    print("RESULT", json.dumps(result), flush=True)
    threads = [thread.name for thread in callboard_threads()]
    if threads:
        print("threads left at exit:", threads, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
