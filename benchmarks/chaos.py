"""callboard's fault campaign: kills, a soak, flipped bits, a full disk and a fleet, in one table.

Run it with ``make chaos`` (or ``.venv/bin/python benchmarks/chaos.py``); ``--quick``
makes every scenario smaller, ``--only soak flips`` runs only those scenarios,
``--seed N`` repeats the random choices of an earlier campaign (the header names
the seed it used), ``--keep`` leaves the files behind for a look. Each row is a
figure; a row with a "must be" fails the campaign (exit status 1) when the
figure misses it, a row without one is only reported. It uses callboard's public
API, child processes, and plain ``sqlite3`` to look at the files. The scenarios:

- ``kills``: a worker process runs a 3-step workflow on a SQLite file and is
  SIGKILLed at random moments, then started again (a new runtime on the file
  resumes the orphaned runs when it registers the workflow). Each step appends
  to a journal, so that the campaign can tell which runs were acknowledged and
  which steps ran again.
- ``soak``: many runs in one process whose steps fail at random, are retried,
  raise ``NonRetryableError``, ``SystemExit`` or ``KeyboardInterrupt``, or
  return what a snapshot cannot hold; every run's final status is computed
  beforehand from what its input asked for.
- ``flips``: finished runs in a SQLite file get one or two bits flipped in their
  stored snapshots (anywhere in a run's row or, for a run kept in parts, in
  its parts); every run is then queried through a new runtime.
- ``disk``: the SQLite file lives on a small tmpfs that runs fill up; waits begun
  on unended runs must be told once it has stayed full a while (2 s here, 30 s
  outside the campaign), then the space comes back, and every run that was
  started must finish. Then the same with a PostgreSQL database in a tablespace
  on a small tmpfs (on a throwaway cluster, as the fleet's).
- ``limits``: a child process whose address space is capped (``RLIMIT_AS``) so
  that the OS refuses threads after a few dozen, as a pids limit or ``ulimit -u``
  would, starts many runs whose steps block on a pool allowed a thread for each;
  every run must succeed, on the threads there are. Then, its limit of open files
  (``RLIMIT_NOFILE``) cut to what it holds plus room for six readers of a SQLite
  store, 24 threads start runs on one and wait for them: every run must succeed.
- ``fleet``: three ``worker`` processes and a ``client`` runtime share a throwaway
  PostgreSQL cluster (as the tests start one; the scenario reports itself skipped
  without the server binaries or psycopg). While the client starts runs (half of
  them sleep between two steps; one in eight suspends until the client resumes
  it) and cancels some, workers are SIGKILLed and replaced, SIGSTOPped
  past their lease and woken, every connection to the database is cut, and the
  server is restarted; then every acknowledged run must end once, no completed
  step may run again, and a worker that wakes fenced off must change nothing.
  Then the same fleet on a SQLite file (worker processes on one host), with the
  kills and stops alone; and on PostgreSQL again, every process reaching it through
  a pooler in transaction mode (``tests/_pooler.py``, 8 server connections), with
  the same faults (a cut ends the pooler's server connections).

This file is also imported by ``tests/test_chaos_fast.py``, which runs small,
seeded versions of the soak and the flips in ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import faulthandler
import json
import logging
import math
import os
import platform
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel

from runtime import (
    NonRetryableError,
    PostgresStore,
    RetryConfig,
    RunAlreadyStartedError,
    RunReader,
    Runtime,
    RunTimeoutError,
    SnapshotFormatError,
    SQLiteStore,
    StepContext,
    StoreError,
    StoreUnavailableError,
    WorkflowResult,
    create_step,
    create_workflow,
)
from runtime._stores import _writer as writer_module

SCRIPT = Path(__file__).resolve()
SCENARIOS = ("kills", "soak", "flips", "disk", "limits", "fleet")
TERMINAL = ("success", "failed", "canceled")


# --- sizes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    kill_runs: int  # runs of the 3-step workflow the killed workers share
    kills: int  # SIGKILLs (at least) before the last worker may finish
    soak_runs: int  # runs in one process, memory store
    soak_sqlite_runs: int  # the same on a SQLite file
    flip_runs: int  # finished runs whose snapshots get flipped bits (half of them)
    flip_unfinished: int  # runs halted unfinished before the flips (half of them damaged)
    disk_max_runs: int  # the most runs started while waiting for the disk to fill
    thread_runs: int  # runs whose steps block, in a process the OS refuses threads
    final_wait: float  # seconds the last kill worker gets to finish every run
    fleet_runs: int  # runs each fleet's client starts during its chaos
    fleet_seconds: float  # how long each fleet's workers are killed, stopped (and cut off)
    fleet_restarts: int  # the most restarts of the PostgreSQL server during it


FULL = Sizes(
    kill_runs=1_000,
    kills=36,
    soak_runs=10_000,
    soak_sqlite_runs=1_000,
    flip_runs=400,
    flip_unfinished=20,
    disk_max_runs=5_000,
    thread_runs=1_000,
    final_wait=180.0,
    fleet_runs=1_500,
    fleet_seconds=60.0,
    fleet_restarts=2,
)
QUICK = Sizes(
    kill_runs=200,
    kills=10,
    soak_runs=1_000,
    soak_sqlite_runs=200,
    flip_runs=100,
    flip_unfinished=10,
    disk_max_runs=5_000,
    thread_runs=300,
    final_wait=90.0,
    fleet_runs=300,
    fleet_seconds=15.0,
    fleet_restarts=1,
)


# --- the table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One figure: ``must`` is empty for a figure that is only reported (``ok`` is None)."""

    scenario: str
    measure: str
    value: str
    must: str = ""
    ok: bool | None = None


def must_be(scenario: str, measure: str, value: Any, expected: Any) -> Row:
    """A figure that must equal ``expected``."""
    return Row(scenario, measure, _text(value), _text(expected), value == expected)


def at_least(scenario: str, measure: str, value: int, least: int) -> Row:
    return Row(scenario, measure, _text(value), f">= {least}", value >= least)


def reported(scenario: str, measure: str, value: Any) -> Row:
    return Row(scenario, measure, _text(value))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(rows: Sequence[Row]) -> None:
    header = ("scenario", "measure", "value", "must be", "ok?")
    cells = [
        (r.scenario, r.measure, r.value, r.must, "" if r.ok is None else ("yes" if r.ok else "NO"))
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(width) if i == 2 else value.ljust(width)
            for i, (value, width) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    print(line(header))
    print(line(["-" * width for width in widths]))
    for values in cells:
        print(line(values))


# --- logging: count callboard's warnings instead of printing them ----------------------


class EventCounter:
    """A structlog configuration that counts warnings and errors by event name, then drops them.

    Only ``main`` (and the child processes) configure it: the library never
    configures structlog, and neither do the fast tests that import this file.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def configure(self) -> None:
        structlog.configure(
            processors=[self._count],
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            cache_logger_on_first_use=False,
        )

    def _count(self, _logger: Any, _method: str, event_dict: Any) -> Any:
        with self._lock:
            self.counts[str(event_dict.get("event"))] += 1
        raise structlog.DropEvent

    def mark(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    def since(self, mark: Counter[str]) -> str:
        with self._lock:
            new = self.counts - mark
        return ", ".join(f"{name} x{n}" for name, n in sorted(new.items())) or "none"


EVENTS = EventCounter()


# --- small helpers --------------------------------------------------------------------


class Journal:
    """A file that lines are appended to, each with one ``write()`` on an ``O_APPEND`` descriptor.

    A line written before a process is killed is in the file: the kernel keeps
    what ``write()`` returned from, whatever happens to the process after. Only a
    power failure would need ``fsync``, and no scenario here cuts the power.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, *words: str) -> None:
        os.write(self._fd, (" ".join(words) + "\n").encode())


def read_journal(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line]


def stored_ids(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
        return {row[0] for row in connection.execute("SELECT run_id FROM runs")}


def integrity(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
    return "; ".join(str(row[0]) for row in rows)


def new_threads(before: set[threading.Thread], timeout: float = 5.0) -> list[str]:
    """Threads started since ``before`` that are still alive after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not left or time.monotonic() > deadline:
            return [t.name for t in left]
        time.sleep(0.02)


class Link(BaseModel):
    """What the kill and disk workflows pass on: the token of the step execution that made it."""

    token: str


# --- scenario 1: kills ----------------------------------------------------------------

KILLS = "kills"
_journal: Journal | None = None


def _traced_step(step_id: str, pause: tuple[float, float]) -> Any:
    """A step that journals ``start`` (with the token it was given) and ``done`` (with its own).

    Its output carries a fresh token, so the journal shows which execution of
    the previous step each execution consumed: a step only starts once the
    previous step's output is committed, so a consumed token is a committed one.
    """

    def body(ctx: StepContext[Link]) -> Link:
        journal = _journal
        assert journal is not None, "the journal is opened before the workflow is registered"
        token = uuid.uuid4().hex[:16]
        pid = str(os.getpid())
        journal.write("start", ctx.run_id, step_id, token, ctx.input_data.token, pid)
        time.sleep(random.uniform(*pause))
        journal.write("done", ctx.run_id, step_id, token, pid)
        return Link(token=token)

    return create_step(id=step_id, input_schema=Link, output_schema=Link, execute=body)


TRACED_STEPS = ("a", "b", "c")
KILL_WORKFLOW = (
    create_workflow(id="chaos-kills", input_schema=Link, output_schema=Link)
    .then(_traced_step("a", (0.01, 0.06)))
    .then(_traced_step("b", (0.01, 0.06)))
    .then(_traced_step("c", (0.01, 0.06)))
    .commit()
)


def kill_worker(params: dict[str, Any]) -> None:
    """In a child: start the runs below ``upto`` not in the store yet, journal them, wait for all.

    ``acked RUN`` is journaled once ``start_async`` has returned, ``final RUN
    STATUS`` once the store holds the run's end (a terminal result read back is
    a committed one). Prints ``READY`` once the workflow is registered (and
    recovery has begun), ``DONE`` when every run below ``upto`` has ended; then,
    with ``linger``, it idles (heartbeats, checkpoints) until it is killed.
    """
    global _journal  # noqa: PLW0603 - one journal per worker process, opened first
    journal = _journal = Journal(Path(params["journal"]))
    pid = str(os.getpid())
    rt = Runtime(store=params["db"], max_concurrent_runs=params["concurrency"]).start()
    wf = rt.register(KILL_WORKFLOW)
    print("READY", flush=True)
    ids = [kill_run_id(index) for index in range(params["upto"])]
    for run_id in ids:
        if wf.get_workflow_run_execution_result(run_id) is not None:
            continue  # started by an earlier worker: recovery drives it
        try:
            wf.create_run(run_id).start_async(input_data={"token": "input"})
        except RunAlreadyStartedError:
            continue
        journal.write("acked", run_id, pid)
    unfinished = set(ids)
    while unfinished:
        for run_id in sorted(unfinished):
            result = wf.get_workflow_run_execution_result(run_id)
            if result is not None and result.is_terminal:
                journal.write("final", run_id, result.status.value, pid)
                unfinished.discard(run_id)
        if unfinished:
            time.sleep(0.05)
    print("DONE", flush=True)
    if params.get("linger"):
        threading.Event().wait(60)
    rt.stop()


def kill_run_id(index: int) -> str:
    return f"kill-{index:05d}"


class Worker:
    """A worker in its own process; a thread reads its stdout for ``READY`` and ``DONE``."""

    def __init__(self, params: dict[str, Any], stderr: Any, role: str = "kill-worker") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--role", role, "--params", json.dumps(params)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        self.ready, self.done = threading.Event(), threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == "READY":
                self.ready.set()
            elif line.strip() == "DONE":
                self.done.set()

    def kill(self) -> int:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        return self.finish()

    def finish(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.proc.stdout.close()
        with contextlib.suppress(OSError):  # a pipe a killed child left unread
            self.proc.stdin.close()
        return code


@dataclass
class KillLog:
    """What a kill campaign's journal says happened."""

    acked: set[str] = field(default_factory=set)
    starts: dict[tuple[str, str], list[tuple[int, str, str]]] = field(default_factory=dict)
    done: set[tuple[str, str, str]] = field(default_factory=set)
    committed_at: dict[tuple[str, str], int] = field(default_factory=dict)
    canceled: dict[str, tuple[int, str]] = field(default_factory=dict)  # line, what it returned
    torn: int = 0

    @classmethod
    def read(cls, path: Path, committed: dict[tuple[str, str], int] | None = None) -> KillLog:
        """Read the journal; ``committed`` adds steps seen committed in the store (by line)."""
        log = cls(committed_at=dict(committed or {}))
        for index, words in enumerate(read_journal(path)):
            match words:
                case ["acked", run_id, _pid]:
                    log.acked.add(run_id)
                case ["start", run_id, step, token, token_in, _pid]:
                    log.starts.setdefault((run_id, step), []).append((index, token, token_in))
                    previous = _previous(step)
                    if previous is not None:
                        # This execution consumed the previous step's output: committed.
                        log.committed(run_id, previous, index)
                case ["done", run_id, step, token, _pid]:
                    log.done.add((run_id, step, token))
                case ["final", run_id, _status, _pid]:
                    log.committed(run_id, TRACED_STEPS[-1], index)
                case ["canceled", run_id, returned, _pid]:
                    log.canceled[run_id] = (index, returned)
                case ["resumed", _run_id, _pid]:
                    pass  # the fleet's client resumed a suspended run
                case ["signal", _name, _pid]:
                    pass  # what the fleet's campaign did to a worker, for a reader of the journal
                case _:
                    log.torn += 1
        return log

    def committed(self, run_id: str, step: str, index: int) -> None:
        """The step was committed by the time of journal line ``index``."""
        known = self.committed_at.get((run_id, step))
        self.committed_at[run_id, step] = index if known is None else min(known, index)

    def completed_reruns(self) -> list[tuple[str, str]]:
        """(run, step) of each step run again after its output was committed."""
        return [
            key
            for key, executions in self.starts.items()
            if (committed := self.committed_at.get(key)) is not None
            and any(index > committed for index, _, _ in executions[1:])
        ]

    def reruns(self) -> tuple[int, int]:
        """Executions beyond the first: (of steps already committed, of interrupted ones)."""
        completed = interrupted = 0
        for key, executions in self.starts.items():
            committed = self.committed_at.get(key)
            again = sum(
                1 for index, _, _ in executions[1:] if committed is not None and index > committed
            )
            completed += again
            interrupted += len(executions) - 1 - again
        return completed, interrupted


def say_completed_reruns(scenario: str, log: KillLog, journal: Path) -> None:
    """On stderr, each run whose committed step ran again, with its journal's lines.

    So that a campaign whose row fails says what happened, without ``--keep``.
    """
    lines = read_journal(journal)
    for run_id, step in log.completed_reruns()[:5]:
        print(
            f"{scenario}: step {step!r} of {run_id} ran again after its output was committed "
            f"(journal line {log.committed_at[run_id, step]}); the run's lines:",
            file=sys.stderr,
        )
        for index, words in enumerate(lines):
            if run_id in words:
                print(f"  {index}: {' '.join(words)}", file=sys.stderr)


def _previous(step: str) -> str | None:
    position = TRACED_STEPS.index(step) if step in TRACED_STEPS else 0
    return TRACED_STEPS[position - 1] if position > 0 else None


def chain_breaks(result: WorkflowResult, log: KillLog) -> int:
    """1 if a finished run's stored steps do not hand tokens on as the journal says, else 0."""
    if [*result.steps] != list(TRACED_STEPS) or result.status != "success":
        return 1
    return token_chain_breaks(result, log, "input")


def token_chain_breaks(result: WorkflowResult, log: KillLog, given: str | None) -> int:
    """1 unless each traced step got the token ``given`` or its previous step's, as journaled."""
    for step in TRACED_STEPS:
        record = result.steps[step]
        token = (record.output or {}).get("token")
        if (record.payload or {}).get("token") != given or (result.run_id, step, token) not in (
            log.done
        ):
            return 1
        given = token
    return 0 if (result.result or {}).get("token") == given else 1


def look_after_kill(
    db: Path, journal: Path, committed: dict[tuple[str, str], int]
) -> tuple[set[str], int]:
    """With no worker alive: the acknowledged runs missing from the store, and the runs in flight.

    Each step the store holds as succeeded is noted in ``committed`` with the
    journal's last line now: any execution of it journaled later ran it again.
    """
    lines = len(read_journal(journal))
    acked = KillLog.read(journal).acked
    try:
        with RunReader(db) as reader:
            runs = reader.list_runs(limit=None).runs
    except StoreError:  # killed before the first worker made the file a run store
        return acked, 0
    for run in runs:
        for path, step in run.steps.items():
            if step.status == "success":
                committed.setdefault((run.run_id, path), lines - 1)
    return acked - stored_ids(db), sum(not run.is_terminal for run in runs)


def kills(sizes: Sizes, seed: int, folder: Path) -> list[Row]:
    rng = random.Random(seed)
    db, journal = folder / "kills.db", folder / "kills.journal"
    stderr_path = folder / "kills.stderr"
    params: dict[str, Any] = {"db": str(db), "journal": str(journal), "concurrency": 16}
    lost: set[str] = set()
    committed: dict[tuple[str, str], int] = {}
    killed = finished_early = crashed = in_flight_at_kills = before_ready = incarnations = 0
    began = time.monotonic()
    with stderr_path.open("w") as stderr:
        while killed < sizes.kills and incarnations < 3 * sizes.kills:
            incarnations += 1
            upto = min(sizes.kill_runs, math.ceil(sizes.kill_runs * (killed + 1) / sizes.kills))
            worker = Worker({**params, "upto": upto, "linger": True}, stderr)
            if rng.random() < 0.15:
                time.sleep(rng.uniform(0.05, 0.6))  # kill while it starts: imports, open, recovery
            elif worker.ready.wait(30.0):
                time.sleep(rng.uniform(0.0, 0.8))
            before_ready += not worker.ready.is_set()
            code = worker.kill()
            if code == -signal.SIGKILL:
                killed += 1
            elif code == 0:
                finished_early += 1
            else:
                crashed += 1
            lost_now, in_flight = look_after_kill(db, journal, committed)
            lost |= lost_now
            in_flight_at_kills += in_flight
        last_began = time.monotonic()
        last = Worker({**params, "upto": sizes.kill_runs}, stderr)
        ended = last.done.wait(sizes.final_wait)
        last_took = time.monotonic() - last_began
        code = last.finish() if ended else last.kill()
        if ended and code != 0:
            crashed += 1
    log = KillLog.read(journal, committed)
    lost |= log.acked - stored_ids(db)
    ids = [kill_run_id(index) for index in range(sizes.kill_runs)]
    unfinished = breaks = not_success = 0
    with RunReader(db) as reader:
        for run_id in ids:
            result = reader.get_run(run_id)
            if result is None or not result.is_terminal:
                unfinished += 1
                continue
            not_success += result.status != "success"
            breaks += chain_breaks(result, log)
    completed_again, interrupted_again = log.reruns()
    if completed_again:
        say_completed_reruns(KILLS, log, journal)
    tracebacks = stderr_path.read_text(encoding="utf-8", errors="replace").count("Traceback")
    return [
        at_least(KILLS, "workers SIGKILLed", killed, sizes.kills),
        reported(KILLS, "  of them before READY (while starting)", before_ready),
        reported(KILLS, "  runs in flight at the kills (sum)", in_flight_at_kills),
        reported(KILLS, "workers that ended before their kill", finished_early),
        must_be(KILLS, "workers that died by themselves", crashed, 0),
        reported(KILLS, "runs acknowledged by start_async", len(log.acked)),
        must_be(KILLS, "lost runs (acknowledged, not in the store)", len(lost), 0),
        must_be(KILLS, f"unfinished at the end (of {sizes.kill_runs:,})", unfinished, 0),
        must_be(KILLS, "ended other than success", not_success, 0),
        must_be(KILLS, "completed steps re-run", completed_again, 0),
        reported(KILLS, "interrupted steps re-run (allowed)", interrupted_again),
        must_be(KILLS, "stored step chains that contradict the journal", breaks, 0),
        reported(KILLS, "journal lines torn by a kill", log.torn),
        reported(KILLS, "tracebacks on the workers' stderr", tracebacks),
        reported(KILLS, "seconds the last worker took to end every run", last_took),
        must_be(KILLS, "PRAGMA integrity_check", integrity(db), "ok"),
        reported(KILLS, "seconds", time.monotonic() - began),
    ]


# --- scenario 2: soak -----------------------------------------------------------------

SOAK = "soak"


class Plan(BaseModel):
    """A soak run's input: what each attempt of each node does (``attempts[node][retry]``)."""

    tag: int
    attempts: list[list[str]]


class Carry(BaseModel):
    tag: int
    hops: int
    extra: Any = None


OK = "ok"
SET_IN_OUTPUT = "set_in_output"  # a set in an ``Any`` field: the schema's JSON dump makes it a list
FAILURES = {
    "error": "ValueError",
    "exit": "SystemExit",
    "interrupt": "KeyboardInterrupt",
    "nonretryable": "NonRetryableError",
    "object": "SnapshotEncodingError",  # an object() inside a dict in the output
    "bigint": "SnapshotEncodingError",  # an int past 64 bits in the output
    "context_set": "SnapshotEncodingError",  # a set put in the request context
}
MAP_SET = "set"  # the map node returns a dict that holds a set: no schema dumps a map's output
SOAK_NODES: tuple[tuple[str, int], ...] = (("s1", 2), ("s2", 1), ("map-3", 0), ("s3", 0))
"""The soak workflow's nodes, by result path, with the retries each gets."""


def _act(ctx: StepContext[Any], node: int) -> Carry | dict[str, Any]:
    behaviour = ctx.get_init_data().attempts[node][ctx.retry_count]
    tag = ctx.input_data.tag
    hops = getattr(ctx.input_data, "hops", 0) + 1
    if behaviour == "error":
        raise ValueError(f"step {ctx.step_id} failed on purpose")
    if behaviour == "exit":
        raise SystemExit(3)
    if behaviour == "interrupt":
        raise KeyboardInterrupt
    if behaviour == "nonretryable":
        raise NonRetryableError("no point in trying again")
    if behaviour == "object":
        return {"tag": tag, "hops": hops, "extra": {"held": object()}}
    if behaviour == "bigint":
        return Carry(tag=tag, hops=hops, extra=2**70)
    if behaviour == "context_set":
        ctx.request_context.set("tags", {"a", "b"})
    if behaviour == SET_IN_OUTPUT:
        return Carry(tag=tag, hops=hops, extra={"kinds": {"x"}})
    return Carry(tag=tag, hops=hops)


def _soak_s1(ctx: StepContext[Plan]) -> Carry | dict[str, Any]:
    return _act(ctx, 0)


async def _soak_s2(ctx: StepContext[Carry]) -> Carry | dict[str, Any]:
    await asyncio.sleep(0)
    return _act(ctx, 1)


def _soak_map(ctx: StepContext[Any]) -> Any:
    if ctx.get_init_data().attempts[2][0] == MAP_SET:
        return {**ctx.input_data, "extra": {"set": {1, 2}}}
    return ctx.input_data


def _soak_s3(ctx: StepContext[Carry]) -> Carry | dict[str, Any]:
    return _act(ctx, 3)


SOAK_WORKFLOW = (
    create_workflow(
        id="chaos-soak",
        input_schema=Plan,
        output_schema=Carry,
        retry_config=RetryConfig(delay=0.001, jitter=0.5),
    )
    .then(create_step(id="s1", input_schema=Plan, output_schema=Carry, execute=_soak_s1, retries=2))
    .then(
        create_step(id="s2", input_schema=Carry, output_schema=Carry, execute=_soak_s2, retries=1)
    )
    .map(_soak_map)
    .then(create_step(id="s3", input_schema=Carry, output_schema=Carry, execute=_soak_s3))
    .commit()
)


def soak_plan(rng: random.Random, tag: int) -> Plan:
    """A random plan: each attempt succeeds three times in four, else fails one way or another."""
    attempts: list[list[str]] = []
    for path, retries in SOAK_NODES:
        if path.startswith("map"):
            attempts.append([MAP_SET if rng.random() < 0.03 else OK])
            continue
        attempts.append(
            [
                (SET_IN_OUTPUT if rng.random() < 0.1 else OK)
                if rng.random() < 0.75
                else rng.choice(sorted(FAILURES))
                for _ in range(retries + 1)
            ]
        )
    return Plan(tag=tag, attempts=attempts)


@dataclass(frozen=True)
class Expected:
    status: str
    error: str | None  # the error's class name
    failed_at: str | None  # the path of the node that failed
    attempts: dict[str, int]  # calls of each step that ran
    result: dict[str, Any] | None = None  # the run's result, on success


def expected_outcome(plan: Plan) -> Expected:
    """What a run of ``SOAK_WORKFLOW`` with this input must end as, by the documented rules.

    A step is called until an attempt succeeds, raises ``NonRetryableError``, or
    its retries run out; every other failure (``SystemExit`` and an
    unencodable output included) is retried. The map node is never retried.
    """
    calls: dict[str, int] = {}
    extra = None
    for (path, retries), behaviours in zip(SOAK_NODES, plan.attempts, strict=True):
        if path.startswith("map"):
            if behaviours[0] == MAP_SET:
                return Expected("failed", "SnapshotEncodingError", path, calls)
            continue
        for attempt, behaviour in enumerate(behaviours[: retries + 1]):
            calls[path] = attempt + 1
            if behaviour in (OK, SET_IN_OUTPUT):
                extra = ["x"] if behaviour == SET_IN_OUTPUT else None
                break
            if behaviour == "nonretryable" or attempt == retries:
                return Expected("failed", FAILURES[behaviour], path, calls)
    steps = sum(not path.startswith("map") for path, _ in SOAK_NODES)
    outcome = {"tag": plan.tag, "hops": steps, "extra": extra and {"kinds": extra}}
    return Expected("success", None, None, calls, outcome)


def soak(runs: int, seed: int, store: str | Path = "memory", label: str = "memory") -> list[Row]:
    """Start ``runs`` soak runs at once, wait for each, compare every outcome with its plan."""
    scenario = f"{SOAK} ({label})"
    rng = random.Random(seed)
    plans = [soak_plan(rng, tag) for tag in range(runs)]
    before = set(threading.enumerate())
    mark = EVENTS.mark()
    began = time.monotonic()
    status_off = error_off = attempts_off = result_off = never_ended = 0
    outcomes: Counter[str] = Counter()
    rt = Runtime(store=store, stop_timeout=30).start()
    try:
        wf = rt.register(SOAK_WORKFLOW)
        started = [wf.create_run() for _ in plans]
        for run, plan in zip(started, plans, strict=True):
            run.start_async(input_data=plan)
        deadline = time.monotonic() + 300
        for run, plan in zip(started, plans, strict=True):
            try:
                result = run.wait(timeout=max(0.1, deadline - time.monotonic()))
            except RunTimeoutError:
                never_ended += 1
                continue
            want = expected_outcome(plan)
            outcomes[want.status if want.error is None else f"failed, {want.error}"] += 1
            error = result.error
            status_off += result.status != want.status
            error_off += (error.name if error else None, _failed_at(result)) != (
                want.error,
                want.failed_at,
            )
            calls = {
                path: step.attempts
                for path, step in result.steps.items()
                if not path.startswith("map")
            }
            attempts_off += calls != want.attempts
            result_off += want.status == "success" and result.result != want.result
        fresh = wf.create_run().start(
            input_data=Plan(tag=-1, attempts=[[OK] * (r + 1) for _, r in SOAK_NODES]), timeout=30
        )
        serving = fresh.status == "success"
    finally:
        rt.stop()
    left = new_threads(before)
    seconds = time.monotonic() - began
    return [
        reported(scenario, "runs", runs),
        *(
            reported(scenario, f"  expected to end {outcome}", count)
            for outcome, count in sorted(outcomes.items(), key=lambda item: -item[1])
        ),
        must_be(scenario, "status mismatches", status_off, 0),
        must_be(scenario, "error (name, step) mismatches", error_off, 0),
        must_be(scenario, "attempt-count mismatches", attempts_off, 0),
        must_be(scenario, "successful runs with another result", result_off, 0),
        must_be(scenario, "runs not ended within 300 s", never_ended, 0),
        must_be(scenario, "runtime still serving (a fresh run succeeds)", serving, True),
        must_be(scenario, "threads left after stop()", len(left), 0),
        reported(scenario, "callboard warnings/errors logged", EVENTS.since(mark)),
        reported(scenario, "runs/s", runs / seconds),
    ]


def _failed_at(result: WorkflowResult) -> str | None:
    if result.error is None:
        return None
    step_id = result.error.details.get("step_id") if result.error.details else None
    return str(step_id) if step_id is not None else None


# --- scenario 3: bit flips ------------------------------------------------------------

FLIPS = "flips"
HOLD = "hold "  # the text of the runs the first runtime leaves unfinished
HANG_PROBE = 0.3  # seconds a wait or a watch of a damaged run gets before it counts as blocked
WATCH_SAMPLE = 10  # finished runs watched, of the damaged and of the intact ones each


class Text(BaseModel):
    text: str


def flip_workflow(gate: threading.Event) -> Any:
    """Two steps; the second waits for ``gate`` when the run's text starts with ``HOLD``."""

    def count(ctx: StepContext[Text]) -> Text:
        if ctx.input_data.text.startswith(HOLD.upper()):
            gate.wait(30)
        return Text(text=f"{ctx.input_data.text} ({len(ctx.input_data.text)})")

    return (
        create_workflow(id="chaos-flips", input_schema=Text, output_schema=Text)
        .then(
            create_step(
                id="upper",
                input_schema=Text,
                output_schema=Text,
                execute=lambda ctx: Text(text=ctx.input_data.text.upper()),
            )
        )
        .then(create_step(id="count", input_schema=Text, output_schema=Text, execute=count))
        .commit()
    )


def flip_bits(db: Path, run_ids: Sequence[str], rng: random.Random) -> dict[str, int]:
    """Flip one or two random bits in each of these runs' stored snapshots; bits flipped by run.

    A run's snapshot is its row's bytes and, for one kept in parts, the parts
    its row reads: the bits fall anywhere among them.
    """
    flipped: dict[str, int] = {}
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as connection:
        connection.execute("BEGIN IMMEDIATE")
        for run_id in run_ids:
            (blob,) = connection.execute(
                "SELECT snapshot FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            stored: list[tuple[str | None, bytearray]] = [(None, bytearray(blob))]
            stored += [
                (key, bytearray(part))
                for key, part in connection.execute(
                    "SELECT p.key, p.part FROM run_parts p JOIN runs r "
                    "ON r.run_id = p.run_id AND r.lineage = p.lineage WHERE p.run_id = ?",
                    (run_id,),
                )
            ]
            sizes = [len(data) * 8 for _, data in stored]
            bits = rng.sample(range(sum(sizes)), rng.choice((1, 2)))
            for bit in bits:
                index, offset = 0, bit
                while offset >= sizes[index]:
                    offset -= sizes[index]
                    index += 1
                stored[index][1][offset // 8] ^= 1 << (offset % 8)
            for key, data in stored:
                if key is None:
                    connection.execute(
                        "UPDATE runs SET snapshot = ? WHERE run_id = ?", (bytes(data), run_id)
                    )
                else:
                    connection.execute(
                        "UPDATE run_parts SET part = ? WHERE run_id = ? AND key = ? AND lineage = "
                        "(SELECT lineage FROM runs WHERE run_id = ?)",
                        (bytes(data), run_id, key, run_id),
                    )
            flipped[run_id] = len(bits)
        connection.execute("COMMIT")
    return flipped


@dataclass
class Reading:
    """How the reads of one query path went, over every run.

    A run's original is its finished result, or ``None`` for a run left
    unfinished (whose result changes as recovery finishes it): a damaged one
    must not be read at all, an intact one may read as anything.
    """

    misread_damaged: int = 0  # a damaged row read back as something else, silently
    misread_intact: int = 0  # an intact row read back as something else, or refused
    flagged: int = 0  # damaged rows refused with SnapshotFormatError or listed unreadable
    unchanged: int = 0  # damaged rows read back equal to the original (nothing to flag)
    blocked: int = 0  # damaged rows a wait or a watch blocked on until its timeout
    other_errors: list[str] = field(default_factory=list)

    def judge(self, got: Any, original: WorkflowResult | None, damaged: bool) -> None:
        if damaged and (
            _failed_as_unreadable(got)
            or (original is None and getattr(got, "status", None) == "failed")
            or (original is None and got == [("status", "failed")])  # a watch's last event
        ):
            # Recovery could not resume it and recorded it failed, naming why (a
            # query with ``fields`` may leave the error out): flagged, not misread.
            self.flagged += 1
        elif original is None:
            self.misread_damaged += damaged
        elif got == original:
            self.unchanged += damaged
        elif damaged:
            self.misread_damaged += 1
        else:
            self.misread_intact += 1

    def refused(self, damaged: bool) -> None:
        if damaged:
            self.flagged += 1
        else:
            self.misread_intact += 1

    def timed_out(self, damaged: bool) -> None:
        if damaged:
            self.blocked += 1
        else:
            self.misread_intact += 1


def _failed_as_unreadable(got: Any) -> bool:
    """A result recording its run failed because its stored snapshot could not be read."""
    error = getattr(got, "error", None)
    return getattr(got, "status", None) == "failed" and getattr(error, "name", None) == (
        "SnapshotFormatError"
    )


def bit_flips(
    runs: int, seed: int, folder: Path, unfinished: int, *, probe_hangs: bool = True
) -> list[Row]:
    """Finish ``runs`` runs and leave ``unfinished`` halted, flip bits in half of each, read all.

    The halted runs are orphans of a stopped runtime: the runtime that reads
    the damaged file resumes the intact ones when it registers their workflow,
    and must refuse the damaged ones without stopping. Every run is read by id
    (whole and with ``fields``), in the workflow's list and a ``RunReader``'s,
    and waited for; a sample is watched. With ``probe_hangs``, the damaged
    unfinished runs are waited for, and damaged runs watched, each for
    ``HANG_PROBE`` seconds: a call still blocked then would block for ever.
    """
    rng = random.Random(seed)
    db = folder / "flips.db"
    gate = threading.Event()
    workflow = flip_workflow(gate)
    ids = [f"flip-{index:05d}" for index in range(runs)]
    halted = [f"halt-{index:05d}" for index in range(unfinished)]
    with Runtime(store=db) as rt:
        wf = rt.register(workflow)
        for index, run_id in enumerate(ids):
            # A third large enough to be kept in parts (see runtime._snapshot.WHOLE_UNTIL).
            text = f"run {index} " * (index % 7) + ("." * 2500 if index % 3 == 0 else "")
            wf.create_run(run_id).start_async(input_data={"text": text})
        originals: dict[str, WorkflowResult | None] = {
            run_id: wf.create_run(run_id).wait(timeout=30) for run_id in ids
        }
    rt = Runtime(store=db, stop_timeout=0).start()
    try:
        wf = rt.register(workflow)
        for run_id in halted:
            wf.create_run(run_id).start_async(input_data={"text": HOLD + run_id})
        wait_until_held(wf, halted)
    finally:
        rt.stop()  # on a durable store the held runs stay running, for the next runtime
        gate.set()
    originals.update(dict.fromkeys(halted))
    flipped = flip_bits(db, rng.sample(ids, runs // 2) + halted[: unfinished // 2], rng)
    watched = {
        *[run_id for run_id in ids if run_id in flipped][:WATCH_SAMPLE],
        *[run_id for run_id in ids if run_id not in flipped][:WATCH_SAMPLE],
        *halted,
    }
    mark = EVENTS.mark()
    names = ("by id", "by id, fields", "list", "RunReader", "wait", "watch")
    paths = {name: Reading() for name in names}
    finished_halted = 0
    rt = Runtime(store=db).start()
    try:
        wf = rt.register(workflow)  # resumes the halted runs it can read
        for run_id, original in originals.items():
            damaged = run_id in flipped
            wait_for = HANG_PROBE if damaged else 10.0
            for name, read in (
                ("by id", wf.get_workflow_run_execution_result),
                ("by id, fields", lambda r: wf.get_workflow_run_by_id(r, fields=["result"])),
                ("wait", lambda r, t=wait_for: wf.create_run(r).wait(timeout=t)),
                ("watch", lambda r, t=wait_for: list(wf.create_run(r).watch(timeout=t))),
            ):
                if name == "watch" and (run_id not in watched or (damaged and not probe_hangs)):
                    continue
                if name == "wait" and damaged and original is None and not probe_hangs:
                    continue
                want: Any = original
                if original is not None and name == "by id, fields":
                    want = original.model_copy(update={"input": None, "steps": {}})
                if original is not None and name == "watch":
                    want = [("status", original.status.value)]
                try:
                    got = read(run_id)
                except SnapshotFormatError:
                    paths[name].refused(damaged)
                except RunTimeoutError:
                    paths[name].timed_out(damaged)
                except Exception as exc:
                    paths[name].other_errors.append(f"{name}: {type(exc).__name__}: {exc}")
                else:
                    if name == "watch":
                        got = [(event.type, event.status.value) for event in got][-1:]
                    paths[name].judge(got, want, damaged)
                    if name == "wait" and original is None and not damaged:
                        finished_halted += got.status == "success"
        page = wf.list_workflow_runs(limit=None)
        _judge_page(paths["list"], page.runs, page.unreadable, originals, flipped)
        with RunReader(db) as reader:
            listed = reader.list_runs(limit=None)
            _judge_page(paths["RunReader"], listed.runs, listed.unreadable, originals, flipped)
        serving = wf.create_run().start(input_data={"text": "still here"}, timeout=30)
        serving_ok = serving.status == "success"
    finally:
        rt.stop()
    intact_halted = unfinished - unfinished // 2
    rows = [
        reported(FLIPS, "finished runs", runs),
        reported(FLIPS, "unfinished runs (halted by a stop)", unfinished),
        reported(FLIPS, "rows damaged (1 or 2 bits flipped)", len(flipped)),
        must_be(FLIPS, "runtime still serving (a fresh run succeeds)", serving_ok, True),
        must_be(
            FLIPS, "intact unfinished runs finished by recovery", finished_halted, intact_halted
        ),
    ]
    for name, reading in paths.items():
        rows.append(must_be(FLIPS, f"runs misread undetected: {name}", reading.misread_damaged, 0))
    for name, reading in paths.items():
        rows.append(
            must_be(FLIPS, f"intact runs misread or refused: {name}", reading.misread_intact, 0)
        )
    for name in ("wait", "watch"):
        rows.append(
            must_be(
                FLIPS,
                f"damaged runs {name}() blocked on, not refused",
                paths[name].blocked,
                0,
            )
        )
    for name, reading in paths.items():
        rows.append(
            reported(
                FLIPS,
                f"damaged rows flagged / read back unchanged: {name}",
                f"{reading.flagged} / {reading.unchanged}",
            )
        )
    others = [error for reading in paths.values() for error in reading.other_errors]
    rows.append(must_be(FLIPS, "queries that failed some other way", len(others), 0))
    if others:
        rows.append(reported(FLIPS, "  the first of them", others[0][:120]))
    rows.append(reported(FLIPS, "callboard warnings/errors logged", EVENTS.since(mark)))
    return rows


def wait_until_held(wf: Any, run_ids: Sequence[str], timeout: float = 30.0) -> None:
    """Until each run is in its second step (which waits for the gate)."""
    deadline = time.monotonic() + timeout
    waiting = set(run_ids)
    while waiting and time.monotonic() < deadline:
        for run_id in list(waiting):
            result = wf.get_workflow_run_execution_result(run_id)
            if result is not None and "count" in result.steps:
                waiting.discard(run_id)
        time.sleep(0.01)
    if waiting:
        raise RuntimeError(f"{len(waiting)} runs never reached their held step")


def _judge_page(
    reading: Reading,
    runs: Sequence[WorkflowResult],
    unreadable: Sequence[str],
    originals: dict[str, WorkflowResult | None],
    flipped: dict[str, int],
) -> None:
    seen = set()
    for result in runs:
        if result.run_id in originals:
            seen.add(result.run_id)
            reading.judge(result, originals[result.run_id], result.run_id in flipped)
    for run_id in unreadable:
        seen.add(run_id)
        reading.refused(run_id in flipped)
    # A run a page leaves out without naming it unreadable is a silent misread too.
    for run_id in set(originals) - seen:
        if run_id in flipped:
            reading.misread_damaged += 1
        else:
            reading.misread_intact += 1


# --- scenario 4: a full disk ----------------------------------------------------------

DISK = "disk"
DISK_SIZE = "2m"
FILLER_BYTES = 512 * 1024
PAD = "p" * 500
DISK_PATIENCE = 2.0  # seconds full before waits and starts are told (REFUSAL_PATIENCE: 30)
DISK_WAITS = 3  # waits begun on unended runs while the disk is full
PG_DISK_SIZE = "32m"  # a database copied from template0 takes about 8 MB of it
PG_ROOM = 1 << 20  # bytes left free for the runs once the database and its schema are made
PACE = 0.005  # seconds between two starts
STALL = 1.0  # seconds a start_async may take before the disk counts as full

DISK_WORKFLOW = (
    create_workflow(id="chaos-disk", input_schema=Link, output_schema=Link)
    .then(_traced_step("a", (0.01, 0.05)))
    .then(_traced_step("b", (0.01, 0.05)))
    .then(_traced_step("c", (0.01, 0.05)))
    .commit()
)


class Starter:
    """Starts runs one after another on a thread until told to stop or one is refused."""

    def __init__(self, wf: Any, limit: int) -> None:
        self.acked: list[str] = []
        self.refused: list[str] = []
        self.calling_since: float | None = None
        self.stop = threading.Event()
        self._wf = wf
        self._limit = limit
        self.thread = threading.Thread(target=self._run, name="chaos-starter")
        self.thread.start()

    def _run(self) -> None:
        for index in range(self._limit):
            if self.stop.is_set():
                return
            run_id = f"disk-{index:05d}"
            self.calling_since = time.monotonic()
            try:
                self._wf.create_run(run_id).start_async(
                    input_data={"token": "input"}, request_context={"pad": PAD}
                )
            except StoreError:
                self.refused.append(run_id)
                return
            finally:
                self.calling_since = None
            self.acked.append(run_id)
            time.sleep(PACE)  # idle moments, in which the store checkpoints its WAL

    def stalled(self) -> bool:
        since = self.calling_since
        return since is not None and time.monotonic() - since > STALL


def disk_child(params: dict[str, Any]) -> None:
    """In a child, on the tmpfs: fill the disk with runs, check, free the filler, check again."""
    global _journal  # noqa: PLW0603 - the traced steps write here
    EVENTS.configure()
    mount, journal_path = Path(params["mount"]), Path(params["journal"])
    url: str | None = params.get("url")  # a PostgreSQL database in a tablespace on the tmpfs
    _journal = Journal(journal_path)
    # Told after DISK_PATIENCE, not the 30 s a store waits before it tells (see _told_while_full).
    writer_module.REFUSAL_PATIENCE = DISK_PATIENCE  # type: ignore[misc]
    filler = mount / "filler"
    if url is None:
        _write_filler(filler, FILLER_BYTES)
    db = mount / "runs.db"
    out: dict[str, Any] = {}
    rt = Runtime(store=db if url is None else url, stop_timeout=30).start()
    try:
        if url is not None:  # the database and its schema made: leave the runs a little room
            _write_filler(filler, shutil.disk_usage(mount).free - PG_ROOM)
        wf = rt.register(DISK_WORKFLOW)
        starter = Starter(wf, params["max_runs"])
        while starter.thread.is_alive() and not starter.stalled():
            time.sleep(0.02)
        out["filled"] = starter.stalled()
        out["acked_when_full"] = len(starter.acked)
        out["in_flight_when_full"] = sum(
            not wf.get_workflow_run_execution_result(run_id).is_terminal for run_id in starter.acked
        )
        time.sleep(1.0)  # let the runs in flight run into the full disk as well
        out["free_bytes_when_full"] = shutil.disk_usage(mount).free
        out["files_when_full"] = (
            ", ".join(
                f"{path.name.replace('runs.db-', '').replace('runs.db', 'db')} "
                f"{path.stat().st_size // 1024}"
                for path in sorted(mount.iterdir())
                if path.name.startswith("runs.db")
            )
            if url is None
            else f"tablespace {_tree_bytes(mount / 'space') // 1024}"
        )
        log = KillLog.read(journal_path)
        out["lost_runs_full"] = sum(
            wf.get_workflow_run_execution_result(run_id) is None for run_id in starter.acked
        )
        out["lost_steps_full"] = _lost_steps(wf, log)
        out["failed_while_full"] = sum(
            (r := wf.get_workflow_run_execution_result(run_id)) is not None and r.status == "failed"
            for run_id in starter.acked
        )
        out.update(_told_while_full(wf, starter.acked))
        starter.stop.set()
        freed_at = time.monotonic()
        filler.unlink()
        starter.thread.join(60)
        out["blocked_start_returned_s"] = time.monotonic() - freed_at
        finished, deadline = 0, time.monotonic() + 120
        for run_id in starter.acked:
            with contextlib.suppress(RunTimeoutError):
                left = max(0.1, deadline - time.monotonic())
                finished += wf.create_run(run_id).wait(timeout=left).status == "success"
        out["started"] = len(starter.acked)
        out["finished"] = finished
        out["refused"] = len(starter.refused)
        out["refused_in_store"] = sum(
            wf.get_workflow_run_execution_result(run_id) is not None for run_id in starter.refused
        )
        log = KillLog.read(journal_path)
        out["lost_runs_end"] = sum(
            wf.get_workflow_run_execution_result(run_id) is None for run_id in starter.acked
        )
        out["lost_steps_end"] = _lost_steps(wf, log)
        out["reruns"] = sum(len(executions) - 1 for executions in log.starts.values())
        out["chain_breaks"] = sum(
            chain_breaks(result, log)
            for run_id in starter.acked
            if (result := wf.get_workflow_run_execution_result(run_id)) is not None
        )
    finally:
        rt.stop()
    out["integrity"] = integrity(db) if url is None else None
    out["events"] = EVENTS.since(Counter())
    print("RESULT " + json.dumps(out), flush=True)


def _told_while_full(wf: Any, acked: Sequence[str]) -> dict[str, Any]:
    """Waits on unended runs, and a start, once the full disk outlasted the store's patience.

    ``DISK_PATIENCE`` stands for ``REFUSAL_PATIENCE`` (30 s) here, to keep the
    campaign short: each must be told, saying the store has had no room.
    """
    unended = [
        run_id
        for run_id in acked
        if not (r := wf.get_workflow_run_execution_result(run_id)) or not r.is_terminal
    ][:DISK_WAITS]
    told: list[str] = []

    def waiting(run_id: str) -> None:
        try:
            wf.create_run(run_id).wait()  # no timeout: without being told, it waits for ever
        except StoreUnavailableError as exc:
            told.append(str(exc))

    waiters = [threading.Thread(target=waiting, args=(r,), daemon=True) for r in unended]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join(DISK_PATIENCE + 15)
    began, start_told = time.monotonic(), None
    try:
        wf.create_run().start_async(input_data={"token": "input"}, request_context={"pad": PAD})
    except StoreError:
        start_told = round(time.monotonic() - began, 2)
    return {
        "waits": len(unended),
        "waits_told": len(told),
        "told_no_room": sum("no room for any write" in why for why in told),
        "start_told_s": start_told,
    }


def _write_filler(path: Path, size: int) -> None:
    """Write ``size`` bytes (as many as fit) to the file at ``path``, synced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        left = max(0, size)
        while left:
            try:
                left -= os.write(fd, b"\0" * min(left, 1 << 20))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        os.fsync(fd)
    finally:
        os.close(fd)


def _tree_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _lost_steps(wf: Any, log: KillLog) -> int:
    """Steps whose output a later step consumed (so it was committed) missing from the store."""
    lost = 0
    for (run_id, step), executions in log.starts.items():
        previous = _previous(step)
        if previous is None:
            continue
        result = wf.get_workflow_run_execution_result(run_id)
        stored = None if result is None else result.steps.get(previous)
        stored_token = None if stored is None or stored.output is None else stored.output["token"]
        consumed = {token_in for _, _, token_in in executions}
        lost += stored_token not in consumed
    return lost


def full_disk(sizes: Sizes, folder: Path) -> list[Row]:
    """Runs started into a SQLite file on a small tmpfs until it is full, then freed."""
    mount = folder / "tmpfs"
    mount.mkdir()
    refused = _mount_tmpfs(mount, DISK_SIZE)
    if refused is not None:
        return [reported(DISK, "skipped: mount refused", refused)]
    began = time.monotonic()
    try:
        child = _disk_child(folder, {"mount": str(mount)}, sizes)
    finally:
        unmounted = subprocess.run(["umount", str(mount)], check=False).returncode == 0
    return _disk_rows(DISK, DISK_SIZE, child, unmounted, began)


def full_disk_postgres(sizes: Sizes, folder: Path) -> list[Row]:
    """The same on PostgreSQL: its database in a tablespace on a small tmpfs, filled and freed.

    The cluster's own files and its WAL stay where they are: a full disk there stops
    the server (a WAL write that fails is a PANIC), which the fleet's restarts cover.
    """
    label = f"{DISK} (postgresql)"
    # Not under the campaign's folder (mode 0700): the server's user must reach it.
    mount = Path(tempfile.mkdtemp(prefix="callboard-chaos-disk-"))
    refused = _mount_tmpfs(mount, PG_DISK_SIZE)
    if refused is not None:
        mount.rmdir()
        return [reported(label, "skipped: mount refused", refused)]
    began = time.monotonic()
    server: Any = None
    try:
        server = _fleet_server()
        if server is None:
            return [reported(label, "skipped", "no psycopg, or no PostgreSQL server binaries")]
        if server.external is not None:
            return [reported(label, "skipped", "a tablespace needs a throwaway cluster")]
        (mount / "space").mkdir()
        shutil.chown(mount / "space", "postgres", "postgres")
        with server.admin() as admin:
            admin.execute(f"CREATE TABLESPACE chaos_disk LOCATION '{mount / 'space'}'")
            admin.execute("CREATE DATABASE chaos_disk TEMPLATE template0 TABLESPACE chaos_disk")
        params = {"mount": str(mount), "url": server.url("chaos_disk")}
        child = _disk_child(folder, params, sizes)
    finally:
        if server is not None:
            server.destroy()
        unmounted = subprocess.run(["umount", str(mount)], check=False).returncode == 0
        if unmounted:
            mount.rmdir()
    return _disk_rows(label, PG_DISK_SIZE, child, unmounted, began)


def _mount_tmpfs(mount: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` at ``mount``; why not, if it could not."""
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        return str(exc)
    if mounted.returncode == 0:
        return None
    reason = (mounted.stderr or mounted.stdout).strip().splitlines()
    return reason[-1] if reason else "no reason"


def _disk_child(
    folder: Path, params: dict[str, Any], sizes: Sizes
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--role",
            "disk-child",
            "--params",
            json.dumps(
                {
                    **params,
                    "journal": str(folder / f"disk-{len(list(folder.glob('disk-*')))}.journal"),
                    "max_runs": sizes.disk_max_runs,
                }
            ),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _disk_rows(
    label: str,
    size: str,
    child: subprocess.CompletedProcess[str],
    unmounted: bool,
    began: float,
) -> list[Row]:
    lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
    if child.returncode != 0 or not lines:
        tail = (child.stderr.strip().splitlines() or ["no output"])[-1]
        return [
            Row(label, "the child crashed", f"exit {child.returncode}: {tail[:100]}", "-", False)
        ]
    out = json.loads(lines[-1][len("RESULT ") :])
    integrity_row = (
        [must_be(label, "PRAGMA integrity_check", out["integrity"], "ok")]
        if out["integrity"] is not None
        else []
    )
    return [
        must_be(label, f"the {size} tmpfs filled up", out["filled"], True),
        reported(label, "runs acknowledged before it was full", out["acked_when_full"]),
        reported(label, "  of them in flight when it was", out["in_flight_when_full"]),
        reported(label, "bytes free while full", out["free_bytes_when_full"]),
        reported(label, "KiB of the files while full", out["files_when_full"]),
        must_be(label, "acknowledged-but-lost runs, while full", out["lost_runs_full"], 0),
        must_be(label, "acknowledged-but-lost steps, while full", out["lost_steps_full"], 0),
        must_be(label, "runs failed by the full disk", out["failed_while_full"], 0),
        must_be(
            label,
            f"waits on unended runs told, once full {DISK_PATIENCE:g} s",
            out["waits_told"],
            out["waits"],
        ),
        must_be(label, "  of them saying the store has no room", out["told_no_room"], out["waits"]),
        reported(label, "s for a start to be told then", out["start_told_s"]),
        reported(
            label, "s for the blocked start to return once freed", out["blocked_start_returned_s"]
        ),
        reported(label, "starts refused (StoreError)", out["refused"]),
        must_be(label, "refused starts found in the store", out["refused_in_store"], 0),
        must_be(label, "runs finished after space returns", out["finished"], out["started"]),
        must_be(label, "acknowledged-but-lost runs, at the end", out["lost_runs_end"], 0),
        must_be(label, "acknowledged-but-lost steps, at the end", out["lost_steps_end"], 0),
        must_be(label, "steps re-run", out["reruns"], 0),
        must_be(label, "stored step chains that contradict the journal", out["chain_breaks"], 0),
        *integrity_row,
        reported(label, "callboard warnings/errors logged", out["events"]),
        must_be(label, "the tmpfs unmounted at the end", unmounted, True),
        reported(label, "seconds", time.monotonic() - began),
    ]


# --- scenario 5: no thread, no file to be had -----------------------------------------

THREADS = "limits"
FILE_ROOM = 18  # descriptors past those the child holds: six readers' file, -wal and -shm
FILE_THREADS = 24  # threads that start runs and wait for them, each reading the store
THREAD_ROOM = 2**30
"""Bytes of address space the child may map past what it holds once its runtime started:
each thread takes a stack (8 MiB by default) and the first ones a malloc arena each (64
MiB of address space): about 40 more threads fit."""
THREAD_BLOCK = 0.2  # seconds each step blocks


def _blocks(ctx: StepContext[Any]) -> Any:
    time.sleep(THREAD_BLOCK)
    return ctx.input_data


THREADS_WORKFLOW = (
    create_workflow(id="chaos-threads", input_schema=Link, output_schema=Link)
    .then(create_step(id="blocks", input_schema=Link, output_schema=Link, execute=_blocks))
    .commit()
)


def _mapped_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def threads_child(params: dict[str, Any]) -> None:
    """In a child: cap the address space, then run steps that each want a thread of their own."""
    import resource

    EVENTS.configure()
    runs = params["runs"]
    out: dict[str, Any] = {}
    with Runtime(max_step_threads=runs, stop_timeout=30) as rt:
        wf = rt.register(THREADS_WORKFLOW)
        cap = _mapped_bytes() + THREAD_ROOM
        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))
        began = time.monotonic()
        started = [
            wf.create_run().start_async(input_data={"token": f"{index:04x}"}).run_id
            for index in range(runs)
        ]
        peak, deadline = threading.active_count(), time.monotonic() + 120
        statuses: Counter[str] = Counter()
        for run_id in started:
            with contextlib.suppress(RunTimeoutError):
                run = wf.create_run(run_id)
                statuses[str(run.wait(timeout=max(0.1, deadline - time.monotonic())).status)] += 1
            peak = max(peak, threading.active_count())
        out["seconds"] = time.monotonic() - began
        out["statuses"] = dict(statuses)
        out["peak_threads"] = peak
        out["events"] = EVENTS.since(Counter())
        out["refused"] = EVENTS.mark()["step_actor_start_failed"]
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    out.update(_out_of_files(Path(params["db"]), runs))
    print("RESULT " + json.dumps(out), flush=True)


def _passes(ctx: StepContext[Any]) -> Any:
    return ctx.input_data


FILES_WORKFLOW = (
    create_workflow(id="chaos-files", input_schema=Link, output_schema=Link)
    .then(create_step(id="passes", input_schema=Link, output_schema=Link, execute=_passes))
    .commit()
)


def _out_of_files(db: Path, runs: int) -> dict[str, Any]:
    """``runs`` runs started and waited for by threads that may not all read at once."""
    import resource

    statuses: Counter[str] = Counter()
    lock = threading.Lock()

    def starts_and_waits(first: int) -> None:
        for index in range(first, runs, FILE_THREADS):
            try:
                run = wf.create_run()
                run.start_async(input_data={"token": f"{index:04x}"})
                status = str(run.wait(timeout=60).status)
            except Exception as exc:
                status = type(exc).__name__
            with lock:
                statuses[status] += 1

    mark = EVENTS.mark()
    with Runtime(store=db, stop_timeout=30) as rt:
        wf = rt.register(FILES_WORKFLOW)
        wf.create_run().start(input_data={"token": "warm"}, timeout=60)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        held = len(os.listdir("/dev/fd")) - 1
        resource.setrlimit(resource.RLIMIT_NOFILE, (held + FILE_ROOM, hard))
        began = time.monotonic()
        try:
            threads = [
                threading.Thread(target=starts_and_waits, args=(first,))
                for first in range(FILE_THREADS)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(180)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        seconds = time.monotonic() - began
    return {
        "files_held": held,
        "files_statuses": dict(statuses),
        "files_seconds": seconds,
        "files_events": EVENTS.since(mark),
    }


def no_threads(sizes: Sizes, folder: Path) -> list[Row]:
    runs = sizes.thread_runs
    child = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--role",
            "threads-child",
            "--params",
            json.dumps({"runs": runs, "db": str(folder / "files.db")}),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
    if child.returncode != 0 or not lines:
        tail = (child.stderr.strip().splitlines() or ["no output"])[-1]
        return [
            Row(THREADS, "the child crashed", f"exit {child.returncode}: {tail[:100]}", "-", False)
        ]
    out = json.loads(lines[-1][len("RESULT ") :])
    return [
        reported(THREADS, f"steps blocking {THREAD_BLOCK} s, a thread allowed each", runs),
        must_be(THREADS, "the OS refused a step thread", out["refused"] > 0, True),
        reported(THREADS, "most threads alive at once", out["peak_threads"]),
        must_be(THREADS, "runs that succeeded", out["statuses"].get("success", 0), runs),
        reported(THREADS, "callboard warnings/errors logged", out["events"]),
        reported(THREADS, "seconds", out["seconds"]),
        reported(THREADS, "files open before the cut", out["files_held"]),
        must_be(
            THREADS,
            f"runs of {FILE_THREADS} threads, room for 6 readers",
            out["files_statuses"].get("success", 0),
            runs,
        ),
        reported(THREADS, "  their ends, by kind", out["files_statuses"]),
        reported(THREADS, "  callboard warnings/errors logged", out["files_events"]),
        reported(THREADS, "  seconds", out["files_seconds"]),
    ]


# --- scenario 6: fleets of workers, on PostgreSQL and on SQLite ----------------------

FLEET = "fleet"
FLEET_LEASE = 1.0  # seconds: a worker stopped for longer is reaped, and fenced off on waking
FLEET_WORKERS = 3
FLEET_NAP = "nap"


def _nap(ctx: StepContext[Any]) -> float:
    """Half the runs sleep between ``a`` and ``b``: whichever worker is alive wakes them."""
    return 0.3 if int(ctx.input_data["token"][-1], 16) % 2 else 0.0


FLEET_WORKFLOW = (
    create_workflow(id="chaos-fleet", input_schema=Link, output_schema=Link)
    .then(_traced_step("a", (0.01, 0.06)))
    .sleep(_nap, id=FLEET_NAP)
    .then(_traced_step("b", (0.01, 0.06)))
    .then(_traced_step("c", (0.01, 0.06)))
    .commit()
)


def _ask(ctx: StepContext[Link]) -> Link:
    """Suspends until the client resumes it with a token, which it passes on."""
    if ctx.resume_data is None:
        ctx.suspend({"asks": ctx.input_data.token})
    resumed: Link = ctx.resume_data
    return resumed


FLEET_ASK = "chaos-fleet-ask"
FLEET_ASK_WORKFLOW = (
    create_workflow(id=FLEET_ASK, input_schema=Link, output_schema=Link)
    .then(
        create_step(
            id="ask", input_schema=Link, output_schema=Link, resume_schema=Link, execute=_ask
        )
    )
    .then(_traced_step("c", (0.01, 0.06)))
    .commit()
)
FLEET_ASK_EVERY = 8
"""One run in this many suspends in its first step until the client resumes it."""


def fleet_resume_token(run_id: str) -> str:
    """What the client resumes a run with: the same at every try, so any try that took is known."""
    return f"resumed-{run_id}"


def fleet_worker(params: dict[str, Any]) -> None:
    """In a child: a ``worker`` runtime on the PostgreSQL store until its stdin closes.

    Prints ``READY`` once the workflow is registered; closing its stdin stops
    it gracefully (exit status 0); the campaign also kills and stops it.
    """
    global _journal  # noqa: PLW0603 - one journal per worker process, opened first
    _journal = Journal(Path(params["journal"]))
    store = fleet_store(params["store"])
    with Runtime(store=store, role="worker", max_concurrent_runs=params["concurrency"]) as rt:
        rt.register(FLEET_WORKFLOW)
        rt.register(FLEET_ASK_WORKFLOW)
        print("READY", flush=True)
        sys.stdin.read()


def fleet_store(location: str) -> PostgresStore | SQLiteStore:
    """The fleet's store at ``location`` (a PostgreSQL URL or a SQLite file), with its lease."""
    if location.startswith("postgresql://"):
        return PostgresStore(location, lease=FLEET_LEASE)
    return SQLiteStore(location, lease=FLEET_LEASE)


def fleet_run_id(index: int) -> str:
    return f"fleet-{index:05d}"


class FleetStarter:
    """The client's starts, paced over the chaos: each run id is tried until it is recorded.

    A start that raises ``StoreError`` (the connection was cut, the server is
    restarting) may or may not have been committed: the same run id is tried
    again, and ``RunAlreadyStartedError`` then says it was. Only a start that
    returned is journaled ``acked``. Every :data:`FLEET_ASK_EVERY`-th run is one
    of ``ask``, which a :class:`FleetResumer` resumes.
    """

    def __init__(self, wfs: tuple[Any, Any], journal: Journal, count: int, seconds: float) -> None:
        self.runs: dict[str, Any] = {}
        self.errors = 0
        self.given_up: list[str] = []
        self.wfs, self._journal, self._count, self._seconds = wfs, journal, count, seconds
        self.thread = threading.Thread(target=self._run, name="chaos-fleet-starter")
        self.thread.start()

    def _run(self) -> None:
        began = time.monotonic()
        for index in range(self._count):
            # Paced so that the starts last about the chaos's first two thirds.
            time.sleep(max(0.0, began + index * self._seconds / self._count - time.monotonic()))
            run_id = fleet_run_id(index)
            run = self.wfs[index % FLEET_ASK_EVERY == FLEET_ASK_EVERY - 1].create_run(run_id)
            deadline = time.monotonic() + 60.0
            while True:
                try:
                    run.start_async(input_data={"token": uuid.uuid4().hex[:16]})
                except RunAlreadyStartedError:
                    self.runs[run_id] = run
                    break
                except StoreError:
                    self.errors += 1
                    if time.monotonic() > deadline:
                        self.given_up.append(run_id)
                        break
                    time.sleep(0.2)
                    continue
                self._journal.write("acked", run_id, str(os.getpid()))
                self.runs[run_id] = run
                break


class FleetResumer:
    """Resumes the client's suspended ``ask`` runs, each with its token, journaled once taken.

    ``resumed RUN`` once ``resume_async`` returned; an error (the server away, the
    run cancelled meanwhile) is counted, and the run looked at again later.
    """

    def __init__(self, starter: FleetStarter, journal: Journal) -> None:
        self.errors: Counter[str] = Counter()
        self.resumed: set[str] = set()
        self.stop = threading.Event()
        self._starter, self._journal, self._ask_wf = starter, journal, starter.wfs[1]
        self.thread = threading.Thread(target=self._run, name="chaos-fleet-resumer")
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            self._resume_suspended()

    def _resume_suspended(self) -> None:
        for run_id, run in list(self._starter.runs.items()):
            if run.workflow_id != FLEET_ASK or run_id in self.resumed:
                continue
            try:
                result = self._ask_wf.get_workflow_run_execution_result(run_id)
                if result is None or result.status != "suspended":
                    continue
                run.resume_async(resume_data={"token": fleet_resume_token(run_id)})
            except Exception as exc:  # reported in the table; looked at again
                self.errors[type(exc).__name__] += 1
                continue
            self.resumed.add(run_id)
            self._journal.write("resumed", run_id, str(os.getpid()))


class FleetCanceler:
    """Cancels a started run now and then from the client, and journals what ``cancel()`` said.

    ``canceled RUN True`` once a cancel returned ``True`` (recorded: no step may
    start after it), ``canceled RUN False`` if the run had ended first, and
    ``canceled RUN TYPE`` for an error (the run is then left to end either way).
    """

    def __init__(self, starter: FleetStarter, journal: Journal, rng: random.Random) -> None:
        self.errors: Counter[str] = Counter()
        self.stop = threading.Event()
        self._starter, self._journal, self._rng = starter, journal, rng
        self.thread = threading.Thread(target=self._run, name="chaos-fleet-canceler")
        self.thread.start()

    def _run(self) -> None:
        asked: set[str] = set()
        while not self.stop.wait(self._rng.uniform(0.1, 0.5)):
            started = [run_id for run_id in list(self._starter.runs) if run_id not in asked]
            if not started:
                continue
            run_id = self._rng.choice(started[-8:])  # a recent one: likely still going
            asked.add(run_id)
            try:
                returned = str(self._starter.runs[run_id].cancel())
            except Exception as exc:  # reported in the table
                returned = type(exc).__name__
                self.errors[returned] += 1
            self._journal.write("canceled", run_id, returned, str(os.getpid()))


def fleet_chain_breaks(result: WorkflowResult, log: KillLog) -> int:
    """As :func:`chain_breaks`, with the nap between ``a`` and ``b`` passing the token on."""
    steps = result.steps
    nap = steps.get(FLEET_NAP)
    if (
        [path for path in steps if path != FLEET_NAP] != list(TRACED_STEPS)
        or nap is None
        or nap.status != "success"
        or result.status != "success"
    ):
        return 1
    return token_chain_breaks(result, log, (result.input or {}).get("token"))


def ask_chain_breaks(result: WorkflowResult, log: KillLog) -> int:
    """1 unless ``ask`` passed on the client's resume token, and ``c`` took it, as journaled."""
    steps = result.steps
    if [*steps] != ["ask", "c"]:
        return 1
    given = fleet_resume_token(result.run_id)
    if (steps["ask"].output or {}).get("token") != given:
        return 1
    c = steps["c"]
    token = (c.output or {}).get("token")
    if (c.payload or {}).get("token") != given or (result.run_id, "c", token) not in log.done:
        return 1
    return 0 if (result.result or {}).get("token") == token else 1


class _Fleet:
    """The worker processes of the fleet scenario, replaced as they are killed."""

    def __init__(self, params: dict[str, Any], stderr: Any, journal: Journal) -> None:
        self.params, self.stderr, self.journal = params, stderr, journal
        self.live: list[Worker] = []
        self.stopped: dict[Worker, float] = {}  # SIGSTOPped, and when to SIGCONT them
        self.killed = self.stops = self.crashed = self.unstarted = 0

    def spawn(self) -> Worker:
        worker = Worker(self.params, self.stderr, role="fleet-worker")
        self.live.append(worker)
        return worker

    def kill(self, worker: Worker) -> None:
        self.live.remove(worker)
        self.stopped.pop(worker, None)
        self.journal.write("signal", "SIGKILL", str(worker.proc.pid))
        code = worker.kill()
        if code == -signal.SIGKILL:
            self.killed += 1
        elif worker.ready.is_set():  # it had died by itself
            self.crashed += 1
        else:
            self.unstarted += 1

    def stop(self, worker: Worker, seconds: float) -> None:
        os.kill(worker.proc.pid, signal.SIGSTOP)
        self.journal.write("signal", "SIGSTOP", str(worker.proc.pid))
        self.stopped[worker] = time.monotonic() + seconds
        self.stops += 1

    def wake_due(self, every: bool = False) -> None:
        now = time.monotonic()
        for worker, due in list(self.stopped.items()):
            if every or due <= now:
                os.kill(worker.proc.pid, signal.SIGCONT)
                self.journal.write("signal", "SIGCONT", str(worker.proc.pid))
                del self.stopped[worker]

    def check_alive(self) -> None:
        """Count and replace a worker that died without being killed.

        One that never got to ``READY`` could not open the store (the server was
        restarting as it started): a start refused, as it should be, counted apart.
        """
        for worker in list(self.live):
            if worker.proc.poll() is not None:
                self.live.remove(worker)
                if worker.ready.is_set():
                    self.crashed += 1
                else:
                    self.unstarted += 1
                worker.finish()
                self.spawn()

    def close(self) -> int:
        """Stop every worker gracefully (stdin closed); how many did not exit with 0."""
        self.wake_due(every=True)
        for worker in self.live:
            assert worker.proc.stdin is not None
            with contextlib.suppress(OSError):
                worker.proc.stdin.close()
        bad = 0
        for worker in self.live:
            try:
                bad += worker.finish(timeout=30.0) != 0
            except subprocess.TimeoutExpired:
                bad += 1
                worker.kill()
        self.live.clear()
        return bad


def _sever(server: Any, dbname: str) -> int:
    """Terminate every connection to the database but this one: what a network cut does."""
    with server.admin() as connection:
        rows = connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchall()
    return len(rows)


def fleet(
    sizes: Sizes, seed: int, folder: Path, server: Any = None, *, pooled: bool = False
) -> list[Row]:
    """Three worker processes and a client on PostgreSQL, under kills, stops, cuts and restarts.

    On ``server`` (a ``tests._postgres.Server``: a test's), in a database of its
    own, restarted only if it is restartable; else on a throwaway cluster of its own.
    ``pooled``: every process reaches it through a pooler in transaction mode
    (``tests._pooler``), which lends each transaction one of 8 server connections as
    PgBouncer's ``pool_mode = transaction`` does; a cut ends the pooler's connections.
    """
    name = f"{FLEET} (pooler)" if pooled else FLEET
    if server is not None:
        return _fleet_campaign(sizes, seed, folder, server, name)
    server = _fleet_server()
    if server is None:
        return [reported(name, "skipped", "no psycopg, or no PostgreSQL server binaries")]
    try:
        return _fleet_campaign(sizes, seed, folder, server, name)
    finally:
        server.destroy()


def _fleet_server() -> Any:
    sys.path.insert(0, str(SCRIPT.parents[1]))
    try:
        from tests._postgres import script_server
    except ImportError:
        return None
    return script_server()


def _fleet_campaign(sizes: Sizes, seed: int, folder: Path, server: Any, name: str) -> list[Row]:
    url = server.new_database()
    try:
        if name == FLEET:
            return _fleet_rows(sizes, random.Random(seed), folder, url, server)
        from tests._pooler import transaction_pooler

        socket = f"{server.root}/sock/.s.PGSQL.{server.port}"
        with transaction_pooler(socket, size=8) as pooler:
            dbname = url.split("?", 1)[0].rsplit("/", 1)[1]
            rows = _fleet_rows(
                sizes, random.Random(seed), folder, pooler.url(dbname), server, name=name
            )
            lent = f"{pooler.transactions:,} ({pooler.server_connections})"
            rows.insert(-1, reported(name, "transactions lent (server connections opened)", lent))
            return rows
    finally:
        server.drop_database(url)


def fleet_sqlite(sizes: Sizes, seed: int, folder: Path) -> list[Row]:
    """The fleet on one SQLite file, worker processes on one host: kills and stops only."""
    return _fleet_rows(sizes, random.Random(seed), folder, str(folder / "fleet.db"), None)


def _fleet_rows(
    sizes: Sizes,
    rng: random.Random,
    folder: Path,
    location: str,
    server: Any,
    *,
    name: str | None = None,
) -> list[Row]:
    """The campaign on ``location``; ``server`` (PostgreSQL's) for its cuts and restarts."""
    if name is None:
        name = FLEET if server is not None else f"{FLEET} (sqlite)"
    dbname = location.split("?", 1)[0].rsplit("/", 1)[1]
    journal_path, stderr_path = folder / f"{name}.journal", folder / f"{name}.stderr"
    journal = Journal(journal_path)
    params = {"store": location, "journal": str(journal_path), "concurrency": 8}
    committed: dict[tuple[str, str], int] = {}
    severed = restarts = 0
    mark = EVENTS.mark()
    began = time.monotonic()
    with stderr_path.open("w") as stderr:
        workers = _Fleet(params, stderr, journal)
        client_store = fleet_store(location)
        client = Runtime(store=client_store, role="client").start()
        try:
            for _ in range(FLEET_WORKERS):
                workers.spawn()
            for worker in workers.live:
                worker.ready.wait(60.0)
            wf = client.register(FLEET_WORKFLOW)
            wfs = (wf, client.register(FLEET_ASK_WORKFLOW))
            starter = FleetStarter(wfs, journal, sizes.fleet_runs, sizes.fleet_seconds * 2 / 3)
            canceler = FleetCanceler(starter, journal, random.Random(rng.random()))
            resumer = FleetResumer(starter, journal)
            chaos_began = time.monotonic()
            chaos_ends = chaos_began + sizes.fleet_seconds
            # The restarts at random moments of the chaos's middle, the rest at random.
            restart_at = sorted(
                chaos_began + rng.uniform(0.2, 0.7) * sizes.fleet_seconds
                for _ in range(sizes.fleet_restarts if server and server.restartable else 0)
            )
            while time.monotonic() < chaos_ends:
                time.sleep(rng.uniform(0.2, 0.9))
                workers.wake_due()
                workers.check_alive()
                if restart_at and restart_at[0] <= time.monotonic():
                    restart_at.pop(0)
                    action = "restart"
                else:
                    action = rng.choices(
                        ("kill", "stop", "sever", "look"), (4, 3, 3 if server else 0, 1)
                    )[0]
                if action == "kill" and workers.live:
                    workers.kill(rng.choice(workers.live))
                    workers.spawn()
                elif action == "stop":
                    awake = [w for w in workers.live if w not in workers.stopped]
                    if len(awake) > 1:  # one stays awake to reap the others
                        workers.stop(rng.choice(awake), rng.uniform(1.5, 4.0) * FLEET_LEASE)
                elif action == "sever":
                    severed += _sever(server, dbname)
                elif action == "restart":
                    restarts += 1
                    server.stop("fast")  # a clean stop: the throwaway cluster's commits are
                    time.sleep(rng.uniform(0.3, 2.0))  # not flushed, and a crash could lose them
                    server.start()
                else:  # look: steps the store holds as succeeded were committed by now
                    _note_committed(client, wf, starter, journal_path, committed)
            workers.wake_due(every=True)
            workers.check_alive()
            starter.thread.join()
            canceler.stop.set()
            canceler.thread.join()
            calm_began = time.monotonic()
            unfinished = _wait_all(starter, sizes.final_wait)
            resumer.stop.set()
            resumer.thread.join()
            calm_took = time.monotonic() - calm_began
            # Every worker awake again, and every run ended: whatever a fenced-off worker
            # still writes must change nothing.
            before = _fleet_states(starter)
            time.sleep(3 * FLEET_LEASE)
            changed = sum(
                before.get(run_id) != state for run_id, state in _fleet_states(starter).items()
            )
            results = {run_id: _fleet_result(starter, run_id) for run_id in starter.runs}
            worker_rows = len(client_store.workers())
        finally:
            not_clean = workers.close()
            client.stop()
    log = KillLog.read(journal_path, committed)
    lost = {run_id for run_id in log.acked if results.get(run_id) is None}
    canceled = {run_id for run_id, (_, said) in log.canceled.items() if said == "True"}
    # A cancel that returned True ends its run canceled; any other run ends in success
    # (a cancel that failed may still have been carried out later: either is right).
    undecided = {
        run_id for run_id, (_, said) in log.canceled.items() if said not in ("True", "False")
    }
    wrong = {
        run_id: r
        for run_id, r in results.items()
        if r is not None
        and run_id not in undecided
        and r.status != ("canceled" if run_id in canceled else "success")
    }
    wrong_end = len(wrong)
    for run_id, r in sorted(wrong.items()):  # what a failed bound needs looked at
        said = log.canceled.get(run_id, (None, "no cancel"))[1]
        error = r.error.name + ": " + r.error.message if r.error is not None else "-"
        print(
            f"  {name}: {run_id} ended {r.status} (cancel: {said}; error: {error})", file=sys.stderr
        )
    breaks = sum(
        (ask_chain_breaks if r.workflow_id == FLEET_ASK else fleet_chain_breaks)(r, log)
        for r in results.values()
        if r is not None and r.status == "success"
    )
    after_cancel = sum(
        1
        for (run_id, _step), executions in log.starts.items()
        if run_id in canceled
        for index, _, _ in executions
        if index > log.canceled[run_id][0]
    )
    completed_again, interrupted_again = log.reruns()
    if completed_again:
        say_completed_reruns(name, log, journal_path)
    tracebacks = stderr_path.read_text(encoding="utf-8", errors="replace").count("Traceback")
    rows = [
        reported(name, "worker processes (at once)", FLEET_WORKERS),
        at_least(name, "workers SIGKILLed (each replaced)", workers.killed, 1),
        at_least(name, "workers SIGSTOPped past their lease", workers.stops, 1),
        *(
            [
                at_least(name, "connections cut (pg_terminate_backend)", severed, 1),
                reported(name, "server restarts", restarts),
            ]
            if server is not None
            else []
        ),
        must_be(name, "workers that died by themselves", workers.crashed, 0),
        reported(name, "workers that could not open the store to start", workers.unstarted),
        reported(name, "runs acknowledged by the client's start_async", len(log.acked)),
        reported(name, "starts that raised StoreError (tried again)", starter.errors),
        must_be(name, "run ids never recorded after 60 s of tries", len(starter.given_up), 0),
        must_be(name, "lost runs (acknowledged, not in the store)", len(lost), 0),
        must_be(name, f"unfinished at the end (of {len(starter.runs):,})", unfinished, 0),
        reported(
            name,
            "cancels from the client (returned True / False)",
            f"{len(canceled)} / {sum(said == 'False' for _, said in log.canceled.values())}",
        ),
        reported(
            name,
            "cancels that raised",
            ", ".join(f"{kind} x{n}" for kind, n in sorted(canceler.errors.items())) or "none",
        ),
        reported(name, "suspended runs the client resumed", len(resumer.resumed)),
        reported(
            name,
            "resumes that raised (tried again)",
            ", ".join(f"{kind} x{n}" for kind, n in sorted(resumer.errors.items())) or "none",
        ),
        must_be(name, "runs ended otherwise than their cancel said", wrong_end, 0),
        must_be(name, "steps started after their run's cancel returned True", after_cancel, 0),
        must_be(name, "completed steps re-run", completed_again, 0),
        reported(name, "interrupted steps re-run (allowed)", interrupted_again),
        must_be(name, "stored step chains that contradict the journal", breaks, 0),
        must_be(name, "runs changed after every run ended", changed, 0),
        must_be(name, "workers that did not stop cleanly at the end", not_clean, 0),
        reported(name, "worker rows on the store before the end", worker_rows),
        reported(name, "tracebacks on the workers' stderr", tracebacks),
        reported(name, "callboard warnings/errors logged by the client", EVENTS.since(mark)),
        reported(name, "seconds from the chaos's end to the last run's end", calm_took),
        reported(name, "seconds", time.monotonic() - began),
    ]
    return rows


def _note_committed(
    client: Runtime,
    wf: Any,
    starter: FleetStarter,
    journal: Path,
    committed: dict[tuple[str, str], int],
) -> None:
    """Steps the store holds as succeeded now were committed before the journal's next line."""
    try:
        runs = wf.list_workflow_runs(limit=None).runs
    except StoreError:  # the server is away: look another time
        return
    lines = len(read_journal(journal))
    for run in runs:
        for path, step in run.steps.items():
            if step.status == "success" and path in TRACED_STEPS:
                committed.setdefault((run.run_id, path), lines - 1)


def _wait_all(starter: FleetStarter, seconds: float) -> int:
    """Wait from the client for every started run; how many did not end in ``seconds``.

    A suspended run is waited for again: the resumer resumes it meanwhile.
    """
    deadline = time.monotonic() + seconds
    unfinished = 0
    for run in starter.runs.values():
        while True:
            try:
                result = run.wait(timeout=max(0.0, deadline - time.monotonic()))
            except (RunTimeoutError, StoreError):
                unfinished += 1
                break
            if result.status == "suspended" and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            unfinished += not result.is_terminal
            break
    return unfinished


def _fleet_result(starter: FleetStarter, run_id: str) -> WorkflowResult | None:
    """The run's result, read through its own workflow."""
    wf = starter.wfs[starter.runs[run_id].workflow_id == FLEET_ASK]
    result: WorkflowResult | None = wf.get_workflow_run_execution_result(run_id)
    return result


def _fleet_states(starter: FleetStarter) -> dict[str, tuple[Any, ...]]:
    states = {}
    for run_id in starter.runs:
        result = _fleet_result(starter, run_id)
        states[run_id] = (
            None if result is None else (result.status, result.updated_at, result.result)
        )
    return states


# --- the campaign ---------------------------------------------------------------------


def guarded(scenario: str, body: Callable[[], list[Row]]) -> list[Row]:
    """A scenario's rows, or one failing row if the scenario itself raised.

    Each scenario says on stderr when it ends and how long it took, so that a campaign
    that runs long shows where (``kill -USR1`` the script for every thread's stack).
    """
    began = time.monotonic()
    try:
        rows = body()
    except Exception as exc:
        rows = [
            Row(scenario, "the scenario raised", f"{type(exc).__name__}: {exc}"[:120], "-", False)
        ]
    failed = sum(row.ok is False for row in rows)
    print(
        f"  {scenario}: {time.monotonic() - began:.0f} s, {len(rows)} figures, {failed} failed",
        file=sys.stderr,
        flush=True,
    )
    return rows


def campaign(sizes: Sizes, seed: int, folder: Path, only: Sequence[str]) -> Iterator[Row]:
    if "kills" in only:
        yield from guarded(KILLS, lambda: kills(sizes, seed, folder))
    if "soak" in only:
        yield from guarded(SOAK, lambda: soak(sizes.soak_runs, seed))
        yield from guarded(
            SOAK,
            lambda: soak(sizes.soak_sqlite_runs, seed + 1, folder / "soak.db", label="sqlite"),
        )
    if "flips" in only:
        yield from guarded(
            FLIPS, lambda: bit_flips(sizes.flip_runs, seed, folder, sizes.flip_unfinished)
        )
    if "disk" in only:
        yield from guarded(DISK, lambda: full_disk(sizes, folder))
        yield from guarded(f"{DISK} (postgresql)", lambda: full_disk_postgres(sizes, folder))
    if "limits" in only:
        yield from guarded(THREADS, lambda: no_threads(sizes, folder))
    if "fleet" in only:
        yield from guarded(FLEET, lambda: fleet(sizes, seed, folder))
        yield from guarded(f"{FLEET} (sqlite)", lambda: fleet_sqlite(sizes, seed + 1, folder))
        yield from guarded(f"{FLEET} (pooler)", lambda: fleet(sizes, seed + 2, folder, pooled=True))


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="callboard-chaos-"))
    try:
        yield folder
    finally:
        if keep:
            print(f"files kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller N in every scenario")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--seed", type=int, default=None, help="repeat an earlier campaign")
    parser.add_argument("--keep", action="store_true", help="keep the files for a look")
    parser.add_argument(
        "--role",
        choices=("kill-worker", "disk-child", "threads-child", "fleet-worker"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    if args.role == "kill-worker":
        kill_worker(json.loads(args.params))
        return 0
    if args.role == "fleet-worker":
        fleet_worker(json.loads(args.params))
        return 0
    if args.role == "disk-child":
        disk_child(json.loads(args.params))
        return 0
    if args.role == "threads-child":
        threads_child(json.loads(args.params))
        return 0
    sizes = QUICK if args.quick else FULL
    seed = random.randrange(2**32) if args.seed is None else args.seed
    EVENTS.configure()
    print(
        f"callboard chaos: seed {seed}{' (quick)' if args.quick else ''}; "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} cores; scenarios: {' '.join(args.only)}",
        flush=True,
    )
    began = time.monotonic()
    rows: list[Row] = []
    with workspace(args.keep) as folder:
        for row in campaign(sizes, seed, folder, args.only):
            rows.append(row)
    print()
    print_table(rows)
    failed = [row for row in rows if row.ok is False]
    print()
    print(
        f"{len(rows)} figures, {sum(row.ok is not None for row in rows)} with a bound, "
        f"{len(failed)} failed; {time.monotonic() - began:.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
