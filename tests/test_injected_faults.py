"""Faults injected into the runtime's own threads: no run is lost, and the runtime goes on.

Each case makes one internal call, on one of the runtime's threads, raise an
exception it does not expect, once: a ``MemoryError`` (an allocation that failed,
the realistic one) or a ``RuntimeError`` (a bug of ours). A small workload runs
meanwhile. Whatever the point, every run ends (succeeds, or fails with an error
that names what happened), the fault is said (on a run, in an error a start
raised, or in the log), the runtime still runs new runs afterwards, and ``stop()``
returns well within its bound (no run it believes in progress holds it).
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import BaseModel

from runtime import RunStatus, Runtime, RunTimeoutError, create_step, create_workflow

WAIT = 15.0
"""How long a run may take to end: far past what any of them needs when nothing hangs."""

RUNS = 20
AFTER = 3  # runs started once the fault is spent: the runtime must still serve them
MARK = "injected fault"


class Value(BaseModel):
    value: int


@dataclass(frozen=True)
class Point:
    """An internal call that is made to raise: ``module:Class.method`` (or ``module:function``)."""

    where: str
    nth: int = 3  # which call raises: not the first, so that the workload is under way
    stores: tuple[str, ...] = ("memory", "sqlite")  # those on whose runs' path it lies
    waits: bool = False  # a client waits (the store watcher's side)

    def __str__(self) -> str:
        return self.where.split(":")[1]


POINTS = [
    # The dispatcher thread: run actors' handlers and the supervisor.
    Point("actors.run:RunActor.on_start"),
    Point("actors.run:RunActor._on_step_finished"),
    Point("actors.supervisor:SupervisorActor._on_wake_run", stores=("memory",)),
    Point("actors.run:RunActor._on_snapshot_committed", stores=("sqlite",)),
    Point("actors.run:RunActor._tell_snapshot"),
    Point("actors.supervisor:SupervisorActor._spawn"),
    Point("actors.supervisor:SupervisorActor._on_run_ended"),
    Point("actors.supervisor:SupervisorActor._on_start_run"),
    # The registry actor's thread.
    Point("actors.registry:RegistryActor._store_snapshot"),
    # Snapshots, taken on the dispatcher, and the stores' save paths.
    Point("runtime._snapshot:SnapshotFreezer.next_record", stores=("memory",)),
    Point("runtime._snapshot:IncrementalEncoder.next_record", stores=("sqlite",)),
    Point("runtime._stores.memory:MemoryStore.save", stores=("memory",)),
    Point("runtime._stores.sqlite:SQLiteStore._submit", stores=("sqlite",)),
    # The step pool: its actors and its submissions.
    Point("actors.step:StepActor._on_call_step"),
    Point("actors._pool:StepPool.submit"),
    Point("actors._pool:StepPool.finished"),
    # The timers thread, the hook threads.
    Point("actors._timer:Timers._next_due", stores=("memory",)),  # shared: the store wakes
    Point("actors.hooks:serving_hook"),
    # A shared store's threads: the claimer's pass, the lease, the store watcher.
    Point("actors.claimer:Claimer._pass", nth=2, stores=("sqlite",)),
    Point("actors.claimer:Claimer._claim", nth=1, stores=("sqlite",)),
    Point("runtime._stores.sqlite:SQLiteStore.seqs", nth=1, stores=("sqlite",), waits=True),
]


class _Injector:
    """Replaces one callable by one that raises ``error`` at its ``nth`` call, once."""

    def __init__(self, point: Point, error: type[BaseException]) -> None:
        self.point = point
        self.error = error
        self.calls = 0
        self.raised: BaseException | None = None
        self._lock = threading.Lock()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        module_name, _, qualname = self.point.where.partition(":")
        owner: Any = importlib.import_module(module_name)
        *path, name = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        static = isinstance(original, staticmethod)
        function: Callable[..., Any] = original.__func__ if static else original
        injector = self

        def injected(*args: Any, **kwargs: Any) -> Any:
            injector.hit()
            return function(*args, **kwargs)

        monkeypatch.setattr(owner, name, staticmethod(injected) if static else injected)

    def hit(self) -> None:
        with self._lock:
            self.calls += 1
            if self.calls != self.point.nth:
                return
            self.raised = self.error(f"{MARK} at {self.point}")
        raise self.raised


def _workflow(hook_calls: list[str]) -> Any:
    def first(ctx: Any) -> Value:
        time.sleep(0.005)
        return Value(value=ctx.input_data.value + 1)

    def then(ctx: Any) -> Value:
        return Value(value=ctx.input_data.value * 2)

    def on_finish(outcome: Any) -> None:
        hook_calls.append(outcome.run_id)

    return (
        create_workflow(id="injected", input_schema=Value, output_schema=Value, on_finish=on_finish)
        .then(create_step(id="first", input_schema=Value, output_schema=Value, execute=first))
        .sleep(0.02)
        .then(create_step(id="second", input_schema=Value, output_schema=Value, execute=then))
        .then(create_step(id="third", input_schema=Value, output_schema=Value, execute=then))
        .commit()
    )


STOP = 20.0
"""The stop's own bound. Every run has ended when it is called: it should take a sliver of
it, and one that waits for a run it wrongly believes in progress takes all of it."""


def _stop_returns(rt: Runtime) -> bool:
    """Whether ``rt.stop()`` returns well within its bound (half of it): no run held it."""
    done = threading.Event()
    failure: list[BaseException] = []

    def stop() -> None:
        try:
            rt.stop(timeout=STOP)
        except BaseException as exc:  # said by the assertion below
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=stop, name="test-stop", daemon=True).start()
    returned = done.wait(STOP / 2)
    assert not failure, f"stop() raised {failure[0]!r}"
    if not returned:
        done.wait(STOP * 2)  # whatever it waits for, no test after this one meets it
    return returned


@pytest.fixture
def store_of(tmp_path: Path) -> Callable[[str], Any]:
    return lambda kind: "memory" if kind == "memory" else tmp_path / "runs.db"


def _says(event: dict[str, Any], text: str) -> bool:
    """Whether a log event names the fault: in a field, or as the exception it logs."""
    exc_info = event.get("exc_info")
    if exc_info is True:  # logged from the except block that caught it
        return True
    return any(text in str(value) for value in event.values())


@pytest.mark.parametrize("error", [MemoryError, RuntimeError], ids=lambda e: e.__name__)
@pytest.mark.parametrize(
    ("point", "store"),
    [(point, store) for point in POINTS for store in point.stores],
    ids=str,
)
def test_a_fault_on_an_internal_thread_loses_no_run_and_stops_nothing(
    point: Point,
    store: str,
    error: type[BaseException],
    *,
    store_of: Callable[[str], Any],
    monkeypatch: pytest.MonkeyPatch,
    _structlog_reset: None,
) -> None:
    injector = _Injector(point, error)
    hook_calls: list[str] = []
    with structlog.testing.capture_logs() as events:
        rt = Runtime(store=store_of(store), stop_timeout=5.0).start()
        try:
            wf = rt.register(_workflow(hook_calls))
            injector.install(monkeypatch)
            started: list[str] = []
            refused: list[BaseException] = []
            for index in range(RUNS):
                run = wf.create_run()
                try:
                    run.start_async(input_data={"value": index})
                except Exception as exc:  # a start may fail; then it must say so, here
                    refused.append(exc)
                    assert wf.get_workflow_run_execution_result(run.run_id) is None or (
                        wf.get_workflow_run_execution_result(run.run_id).is_terminal
                    )
                    continue
                started.append(run.run_id)
            results = _wait_all(rt, wf, started, WAIT, client=point.waits, store=store_of(store))
            calls = injector.calls
            assert injector.raised is not None, f"the workload called {point} {calls} times"
            left = [run_id for run_id, result in results.items() if not result.is_terminal]
            assert not left, f"runs left unended after {injector.raised!r}: {left}"
            failed = {
                run_id: result.error
                for run_id, result in results.items()
                if result.status != RunStatus.SUCCESS
            }
            for run_id, failure in failed.items():
                assert failure is not None, (
                    f"{run_id} ended {results[run_id].status} saying nothing"
                )
                assert MARK in str(failure), f"{run_id} failed not naming the fault: {failure}"
            for exc in refused:
                assert MARK in str(exc), f"a start raised, not naming the fault: {exc!r}"
            # The runtime still serves: new runs succeed.
            after = [wf.create_run() for _ in range(AFTER)]
            for index, run in enumerate(after):
                run.start_async(input_data={"value": index})
            ends = [run.wait(timeout=WAIT) for run in after]
            assert [end.status for end in ends] == [RunStatus.SUCCESS] * AFTER, [
                end.error for end in ends
            ]
        finally:
            assert _stop_returns(rt), "stop() waited for runs that had ended, or did not return"
    # Said: on a run, or in the log at error.
    said = bool(failed or refused) or any(
        event["log_level"] in ("warning", "error", "critical") and _says(event, MARK)
        for event in events
    )
    assert said, f"{injector.raised!r} was said nowhere"


def _wait_all(
    rt: Runtime, wf: Any, run_ids: list[str], wait: float, *, client: bool, store: Any
) -> dict[str, Any]:
    """Each run's result once ended, or as it stands after ``wait`` seconds."""
    if client:
        # Through another runtime on the same store: its store watcher delivers the ends.
        with Runtime(store=store, role="client") as other:
            theirs = other.register(_workflow([]))
            return _waited(theirs, run_ids, wait)
    return _waited(wf, run_ids, wait)


def _waited(wf: Any, run_ids: list[str], wait: float) -> dict[str, Any]:
    deadline = time.monotonic() + wait
    results: dict[str, Any] = {}
    for run_id in run_ids:
        left = max(0.1, deadline - time.monotonic())
        try:
            results[run_id] = wf.create_run(run_id).wait(timeout=left)
        except RunTimeoutError:
            results[run_id] = wf.get_workflow_run_execution_result(run_id)
    return results


@pytest.fixture(autouse=True)
def _quiet_thread_deaths(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A thread that dies of the fault fails the test: it would have died silently."""
    deaths: list[str] = []
    hook = threading.excepthook

    def excepthook(args: Any) -> None:
        deaths.append(f"{args.thread.name if args.thread else '?'}: {args.exc_value!r}")
        hook(args)

    monkeypatch.setattr(threading, "excepthook", excepthook)
    yield deaths
    assert not deaths, f"threads died: {deaths}"
