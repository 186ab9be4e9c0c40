"""What many test modules share, defined once: import it, it is no conftest.

The fixtures built on these live in ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
from pydantic import BaseModel

from runtime import Runtime, create_step, create_workflow

if TYPE_CHECKING:
    from actors.system import ActorSystem

ROOT = Path(__file__).resolve().parents[1]
"""The repository: where the examples, the README and the sources are."""

BLOCK_LIMIT = 10.0
"""Seconds a gated step waits at most, so that a bug fails instead of hanging."""

# Threads callboard starts: pykka names threading actors after their class.
CALLBOARD_THREAD_PREFIXES = (
    "callboard-",
    "StepActor-",
    "RegistryActor-",
)


def callboard_threads() -> list[threading.Thread]:
    """The live threads that belong to callboard's machinery."""
    return [
        thread
        for thread in threading.enumerate()
        if thread.name.startswith(CALLBOARD_THREAD_PREFIXES)
    ]


def wait_for_no_callboard_threads(timeout: float = 5.0) -> list[threading.Thread]:
    """Wait until callboard's threads have ended; return those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := callboard_threads()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return left


def _fail(reason: str) -> NoReturn:
    # pytest is imported here, not at the top: the worker processes of the tests import this
    # module, and pytest would add a fifth of a second to each one's start.
    import pytest

    pytest.fail(reason)


def looks_at_lock(lock: Any, work: Callable[[], object]) -> dict[str, int]:
    """How often a second thread finds ``lock`` held, and free, while ``work`` runs.

    The interpreter lock is handed between threads as often as it can be
    (``sys.setswitchinterval(1e-6)``) meanwhile. A thread can only look while
    the one doing ``work`` has handed the interpreter over, so ``held`` counts
    the times that thread did so while holding ``lock``.
    """
    done = threading.Event()
    looks = {"free": 0, "held": 0}

    def look() -> None:
        while not done.is_set():
            looks["held" if lock.locked() else "free"] += 1

    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    looker = threading.Thread(target=look)
    looker.start()
    try:
        work()
    finally:
        sys.setswitchinterval(before)
        done.set()
        looker.join()
    return looks


def python_child(script: str, *args: str, before: Sequence[str] = ()) -> subprocess.Popen[str]:
    """``python -c script args...`` in the repository, its stdin and stdout piped, as text.

    ``before``: a command the interpreter runs under (``unshare --pid --fork``).
    See :func:`end_child`.
    """
    return subprocess.Popen(
        [*before, sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def end_child(child: subprocess.Popen[str], timeout: float = 60.0) -> int:
    """Close a child's stdin (which tells it to stop) and wait for it; kill it past ``timeout``.

    Its stdout pipe is closed too. Returns its exit status.
    """
    if child.stdin is not None:
        with contextlib.suppress(OSError):
            child.stdin.close()
    try:
        child.wait(timeout)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    return child.returncode


@contextlib.contextmanager
def small_tmpfs(size: str, needed_for: str) -> Iterator[Path]:
    """A ``tmpfs`` of ``size`` (``"1m"``) on a new folder: a disk a test can fill.

    Unmounted (lazily, if a file on it is still open) and removed afterwards.
    Mounting needs root: where ``mount`` is missing or refused, the test skips,
    saying that ``needed_for`` needs it.
    """
    if shutil.which("mount") is None:
        pytest.skip(f"{needed_for} needs a tmpfs mounted, and there is no mount")
    mount = Path(tempfile.mkdtemp(prefix="callboard-tmpfs-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        mount.rmdir()
        reason = (mounted.stderr or mounted.stdout).strip() or f"exit {mounted.returncode}"
        pytest.skip(f"{needed_for} needs a tmpfs mounted, and mount refused: {reason}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False)
        with contextlib.suppress(OSError):
            mount.rmdir()


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            _fail(f"not reached within {timeout} s: {what or predicate}")
        time.sleep(0.005)


# --- tiny schemas ---------------------------------------------------------------------


class Value(BaseModel):
    value: str


class N(BaseModel):
    n: int


class Count(BaseModel):
    count: int


# --- steps ----------------------------------------------------------------------------


def shout(ctx: Any) -> Value:
    """A step body: the input's value in capitals."""
    return Value(value=ctx.input_data.value.upper())


def shout_step(step_id: str = "shout") -> Any:
    """A step that upper-cases the value."""
    return create_step(id=step_id, input_schema=Value, output_schema=Value, execute=shout)


def exclaim_step(step_id: str = "exclaim") -> Any:
    """A step that appends ``!`` to the value."""
    return create_step(
        id=step_id,
        input_schema=Value,
        output_schema=Value,
        execute=lambda ctx: Value(value=ctx.input_data.value + "!"),
    )


def inc_step(step_id: str = "inc") -> Any:
    """A step that adds one to ``n``."""
    return create_step(
        id=step_id,
        input_schema=N,
        output_schema=N,
        execute=lambda ctx: N(n=ctx.input_data.n + 1),
    )


def dbl_step(step_id: str = "dbl") -> Any:
    """A step that doubles ``n``."""
    return create_step(
        id=step_id,
        input_schema=N,
        output_schema=N,
        execute=lambda ctx: N(n=ctx.input_data.n * 2),
    )


# --- workflows, and what their steps count --------------------------------------------


class Counter:
    """Counts calls by key, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def add(self, key: str) -> None:
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def __getitem__(self, key: str) -> int:
        return self.counts.get(key, 0)


def held_workflow(
    counter: Counter,
    gate: threading.Event,
    entered: threading.Event | None = None,
    workflow_id: str = "held",
):
    """``first`` (appends ``-1``), ``hold`` (waits for ``gate``; ``-2``), ``last`` (``-3``).

    Every execution of a step is counted in ``counter``, by step id and by
    ``RUN_ID/STEP_ID``.
    """

    def count(ctx):
        counter.add(ctx.step_id)
        counter.add(f"{ctx.run_id}/{ctx.step_id}")

    def first(ctx):
        count(ctx)
        return Value(value=ctx.input_data.value + "-1")

    def hold(ctx):
        count(ctx)
        if entered is not None:
            entered.set()
        gate.wait(BLOCK_LIMIT)
        return Value(value=ctx.input_data.value + "-2")

    def last(ctx):
        count(ctx)
        return Value(value=ctx.input_data.value + "-3")

    return (
        create_workflow(id=workflow_id, input_schema=Value, output_schema=Value)
        .then(create_step(id="first", input_schema=Value, output_schema=Value, execute=first))
        .then(create_step(id="hold", input_schema=Value, output_schema=Value, execute=hold))
        .then(create_step(id="last", input_schema=Value, output_schema=Value, execute=last))
        .commit()
    )


def gated_workflow(workflow_id: str, calls: list[str], entered: threading.Event, gate: Any):
    """One step, ``held``, adding one to ``n``; its first attempt hangs until ``gate`` opens.

    Each attempt appends its run id to ``calls``; the first sets ``entered``
    first. For a worker that stalls (or is killed) in the middle of a step.
    """

    def body(ctx):
        calls.append(ctx.run_id)
        if len(calls) == 1:
            entered.set()
            gate.wait(BLOCK_LIMIT)  # the first attempt hangs, in a worker that stalls
        return N(n=ctx.input_data.n + 1)

    step = create_step(id="held", input_schema=N, output_schema=N, execute=body)
    return create_workflow(id=workflow_id, input_schema=N, output_schema=N).then(step).commit()


def quick_workflow(workflow_id: str = "quick"):
    """One step that upper-cases the value."""
    return (
        create_workflow(id=workflow_id, input_schema=Value, output_schema=Value)
        .then(shout_step())
        .commit()
    )


# --- runtimes a test starts -----------------------------------------------------------


class Runtimes:
    """Runtimes a test starts; all stopped at teardown, leaving no callboard thread."""

    def __init__(self) -> None:
        self.started: list[Runtime] = []
        self.gates: list[threading.Event] = []

    def start(self, store: Any, **options: Any) -> Runtime:
        rt = Runtime(store=store, **options)
        self.started.append(rt)
        return rt.start()

    def gate(self) -> threading.Event:
        """An event opened at teardown at the latest, so that no gated step outlives a test."""
        event = threading.Event()
        self.gates.append(event)
        return event

    def close(self) -> None:
        for gate in self.gates:
            gate.set()
        for rt in self.started:
            rt.stop(timeout=5)
        left = wait_for_no_callboard_threads(10)
        assert not left, f"threads left after the runtimes stopped: {[t.name for t in left]}"


def stall_writer(store: Any) -> tuple[threading.Event, threading.Event]:
    """Stop a store's group-commit writer at its next batch until ``go_on`` is set.

    What is written meanwhile queues up, and goes in one batch after that one
    (creates on a SQLite store's callers' threads still commit). Touches the
    store's private writer. Returns ``(stopped, go_on)``: ``stopped`` is set once
    the writer waits; set ``go_on`` (at teardown at the latest) to let it commit.
    """
    writer = store._writer
    commit = writer._commit
    stopped, go_on = threading.Event(), threading.Event()

    def stalled_commit(writes: list[Any]) -> Any:
        if not go_on.is_set():
            stopped.set()
            go_on.wait(10)
        return commit(writes)

    writer._commit = stalled_commit
    return stopped, go_on


def actor_system(rt: Runtime) -> ActorSystem:
    """The actor system of a started runtime, for tests that break its actors on purpose."""
    system = rt._host.system
    assert system is not None, "the runtime is not started"
    return system


def advance_until(clock: Any, predicate: Callable[[], Any], seconds: float, what: str = "") -> None:
    """Move a harness's virtual ``clock`` by ``seconds`` until ``predicate`` holds.

    Again and again: a timer set a moment after one move (a back-off the run actor
    has not scheduled yet) is due after the next.
    """
    deadline = time.monotonic() + 10.0
    while not predicate():
        if time.monotonic() > deadline:
            _fail(f"not reached within 10 s of moving the clock: {what or predicate}")
        clock.advance(seconds)
        time.sleep(0.005)


def quick_script_stdout(path: Path, *args: str) -> str:
    """What a script (``benchmarks/*.py``) prints when run with ``--quick`` and ``args``.

    Run in a process of its own, as a user runs it; a failed run fails the test with
    the script's error output.
    """
    done = subprocess.run(
        [sys.executable, str(path), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextlib.contextmanager
def script_module(path: Path, name: str, *, beside: bool = False) -> Iterator[ModuleType]:
    """A script (``benchmarks/*.py``, ``examples/demo.py``) imported as module ``name``.

    Those folders are not packages on the path. With ``beside``, the script's folder
    is put first on ``sys.path`` meanwhile, for a script that imports its neighbours.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    if beside:
        sys.path.insert(0, str(path.parent))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]
        if beside:
            sys.path.remove(str(path.parent))


def importable_flows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, prefix: str
) -> Iterator[tuple[str, ModuleType]]:
    """A fresh module of ``source`` in ``tmp_path``, made the current folder: name and module.

    For a fixture to ``yield from``: the module is forgotten afterwards, and no callboard
    thread may be left (a command that leaves one fails the test).
    """
    name = f"{prefix}_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    try:
        yield name, importlib.import_module(name)
    finally:
        sys.modules.pop(name, None)
    assert not wait_for_no_callboard_threads(), "a command left threads behind"


def hold_back_resume_requests(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """While the event returned is set, the claimers of runtimes in this process leave resume
    requests alone, as a worker that has not looked yet would: a request waits in the store.

    Clear it to let them look (their next look carries the requests out).
    """
    from actors.system import ActorSystem

    real = ActorSystem._resume_requested
    held = threading.Event()
    held.set()

    def maybe(self: ActorSystem, request: Any, done: Callable[[], None]) -> None:
        if held.is_set():
            done()
        else:
            real(self, request, done)

    monkeypatch.setattr(ActorSystem, "_resume_requested", maybe)
    return held
