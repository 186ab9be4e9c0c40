"""Every call raced on a handful of runs from eight threads: only the errors each call
documents, nothing stuck, nothing brought back.

Starts (new ids, and ids in use or deleted), resumes (right and wrong targets),
cancels, deletes, restarts, waits, watches, reads and listings, at random, on
the newest four runs, for a couple of seconds a store. This is how a run
deleted with a write still on its way came back, how that write landed on a
new run of the same id, and how a delete took a run restarted under it.

The same storm also runs through a queue (then no slot of it may be lost), beside a
worker process, while PostgreSQL restarts, and while another connection holds SQLite's
write lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs

from runtime import (
    Queue,
    ResumeConflictError,
    ResumeTargetError,
    RunAlreadyStartedError,
    RunDeletedError,
    RunInProgressError,
    RunNotRestartableError,
    RunNotStartedError,
    RunNotSuspendedError,
    Runtime,
    RunTimeoutError,
    RuntimeStoppedError,
    StoreError,
    WorkflowError,
    create_step,
    create_workflow,
)
from runtime._run import Run
from tests._support import wait_until

SECONDS = 2.0
THREADS = 8
WAIT = 10.0
# What each call may answer when another thread got there first.
EXPECTED = (
    ResumeConflictError,
    ResumeTargetError,
    RunAlreadyStartedError,
    RunDeletedError,
    RunInProgressError,
    RunNotRestartableError,
    RunNotStartedError,
    RunNotSuspendedError,
    RunTimeoutError,
)


class Number(BaseModel):
    n: int


def _ask(ctx: Any) -> Number:
    if ctx.resume_data is None and ctx.input_data.n % 2 == 0:
        ctx.suspend({"n": ctx.input_data.n})
    return ctx.input_data


def _add(ctx: Any) -> Number:
    time.sleep(0.002)
    return Number(n=ctx.input_data.n + 1)


RACED = (
    create_workflow(id="raced", input_schema=Number, output_schema=Number)
    .then(create_step(id="ask", input_schema=Number, output_schema=Number, execute=_ask))
    .sleep(0.01)
    .then(create_step(id="add", input_schema=Number, output_schema=Number, execute=_add))
    .commit()
)
# The same through a foreach of three items (n, n + 2, n + 4: none or all suspend); its
# result is the first item's number plus one, as RACED's is.
RACED_FOREACH = (
    create_workflow(id="raced-foreach", input_schema=Number, output_schema=Number)
    .map(lambda ctx: [{"n": ctx.input_data["n"] + step} for step in (0, 2, 4)])
    .foreach(
        create_step(id="ask", input_schema=Number, output_schema=Number, execute=_ask),
        concurrency=2,
    )
    .map(lambda ctx: {"n": ctx.input_data[0]["n"] + 1})
    .commit()
)
# The same through a queue of two slots, one for each parity of the input.
QUEUE = Queue("raced", concurrency=2, key=lambda number: str(number.n % 2), key_concurrency=1)
RACED_QUEUED = (
    create_workflow(id="raced-queued", input_schema=Number, output_schema=Number, queue=QUEUE)
    .then(create_step(id="ask", input_schema=Number, output_schema=Number, execute=_ask))
    .sleep(0.01)
    .then(create_step(id="add", input_schema=Number, output_schema=Number, execute=_add))
    .commit()
)
WORKFLOWS = {"steps": RACED, "foreach": RACED_FOREACH, "queued": RACED_QUEUED}
STORM_AT_MOST = 8
"""A storm lasts SECONDS, and up to this many times longer until enough calls went through
(a loaded machine makes fewer in the same time)."""


def _storming(until: float, enough: Callable[[], bool]) -> bool:
    """Whether a storm goes on: for SECONDS, then until ``enough()`` (for a while at most)."""
    now = time.monotonic()
    if now < until:
        return True
    return now < until + (STORM_AT_MOST - 1) * SECONDS and not enough()


KINDS = [
    "start", "start_same", "resume", "resume_item", "resume_wrong", "cancel", "delete",
    "restart", "wait", "watch", "get", "list",
]  # fmt: skip


def _call(wf: Any, kind: str, run_id: str | None, rng: random.Random) -> str | None:
    """Make one call; return the id of a run it started."""
    if kind == "start" or run_id is None:
        run = wf.create_run()
        run.start_async(input_data={"n": rng.randrange(10)})
        return str(run.run_id)
    run = wf.create_run(run_id)
    if kind == "start_same":
        run.start_async(input_data={"n": 1})
    elif kind == "start_key":  # one of three keys: mostly the run that holds it
        keyed = wf.create_run()
        keyed.start_async(input_data={"n": 1}, idempotency_key=f"key-{rng.randrange(3)}")
        return str(keyed.run_id)
    elif kind == "resume":
        run.resume_async(resume_data={})
    elif kind == "resume_item":
        run.resume_async(step="ask", for_each_index=rng.randrange(3), resume_data={})
    elif kind == "resume_wrong":
        run.resume_async(step="no-such-step", resume_data={})
    elif kind == "cancel":
        run.cancel()
    elif kind == "delete":
        wf.delete_workflow_run_by_id(run_id)
    elif kind == "restart":
        run.restart_async()
    elif kind == "wait":
        run.wait(timeout=0.05)
    elif kind == "watch":
        for _ in run.watch(timeout=0.05):
            pass
    elif kind == "get":
        wf.get_workflow_run_execution_result(run_id)
    else:
        wf.list_workflow_runs(limit=20)
    return None


@pytest.mark.parametrize("shape", sorted(WORKFLOWS))
def test_calls_raced_from_many_threads_answer_as_documented(each_store: Any, shape: str) -> None:
    # Over a foreach it found restart() crashing the actor of a run ended inside one, and
    # a restart whose compare-and-set landed on a new run of the deleted run's id.
    store = each_store
    _storm(store, WORKFLOWS[shape])


@contextlib.contextmanager
def _beside_a_worker(
    store: Any, attr: str = "RACED", *, options: tuple[str, ...] = ()
) -> Iterator[Any]:
    """A ``callboard worker`` process on ``store`` that runs this module's ``attr``.

    Stopped (killed, if it is still there) when the block ends; it must have left no
    traceback on its stderr.
    """
    from tests.test_cli_worker import Worker

    Runtime(store=store).start().stop()  # the store's schema, before the worker opens it
    worker = Worker(str(store), f"tests.test_races:{attr}", options=options)
    try:
        worker.started()
        yield worker
    except BaseException:
        print("the worker's stderr:", worker.output())  # shown with the failure
        raise
    finally:
        worker.close()
    assert "Traceback" not in worker.output()


def _suspended_run(rt: Runtime) -> Any:
    """A run of ``RACED`` on ``rt``, started and waited for until it suspends."""
    run = rt.register(RACED).create_run()
    run.start_async(input_data={"n": 0})  # even: it suspends
    assert run.wait(WAIT).status == "suspended"
    return run


def _as_the_next_runtime_reads(store: Any, run_id: str) -> Any:
    """The run as a new runtime on ``store`` (stopped before) reads it."""
    with Runtime(store=store) as rt:
        return rt.register(RACED).get_workflow_run_execution_result(run_id)


def _stop_from_another_thread(rt: Runtime) -> None:
    """``rt.stop()`` as another thread of the program calls it, waited for here.

    Called inside a call of callboard's on this thread, ``rt.stop()`` would be taken for
    a signal handler's (see ``Runtime.stop``): handed over, it returns at once, before the
    stop has closed the store. Here the stop lands between two steps of the call, as a
    stop from anywhere else does.
    """
    stopper = threading.Thread(target=rt.stop, name="test-stopper")
    stopper.start()
    stopper.join(WAIT)
    assert not stopper.is_alive(), "the stop did not end"


def _stopped_by_sigterm(worker: Any) -> None:
    worker.signal(signal.SIGTERM)
    assert worker.exit_code() == 0, worker.output()


@pytest.mark.parametrize("attr", ["RACED", "RACED_QUEUED"])
def test_calls_raced_beside_a_worker_process_answer_as_documented(
    each_shared_store: str, attr: str
) -> None:
    # The same, while a `callboard worker` process on the store takes runs too: cancels,
    # resumes and waits then go across processes.
    store = each_shared_store
    with _beside_a_worker(store, attr) as worker:
        _storm(store, globals()[attr], fenced_allowed=True)
        _stopped_by_sigterm(worker)


@pytest.mark.postgres
@pytest.mark.parametrize("beside", ["alone", "beside a worker"])
def test_calls_raced_while_postgres_restarts_lose_nothing(
    postgres_server: Any, postgres_url: str, beside: str
) -> None:
    # The storm again, and the server stopped for half a second in the middle of it:
    # calls may fail with StoreError while it is gone, and every run still settles.
    # (Beside a worker process, this once left a run `pending` with no step started,
    # held by the test's runtime: a cancel's compare-and-set had ended the run under
    # the actor a claim here had just started, and a restart gave it a second actor.)
    if not postgres_server.restartable:
        pytest.skip("an external server is not ours to restart")

    down: list[float] = []  # when the server was stopped, and when it was back

    def restart() -> None:
        time.sleep(SECONDS / 3)
        postgres_server.stop("fast")
        down.append(time.monotonic())
        try:
            time.sleep(0.5)
        finally:
            postgres_server.start()
            down.append(time.monotonic())

    calls: list[tuple[float, float, str | None, str, str]] = []
    if beside == "alone":
        answers = _storm(postgres_url, RACED, during=restart, also=(StoreError,), calls_out=calls)
    else:
        with _beside_a_worker(postgres_url) as worker:
            answers = _storm(
                postgres_url,
                RACED,
                fenced_allowed=True,
                during=restart,
                also=(StoreError,),
                calls_out=calls,
            )
            _stopped_by_sigterm(worker)
    # The server was down while calls were made: some were in flight then, and met it
    # (a StoreError) or rode it out (the store retries a commit until it is back). Which
    # of the two depends on the timing: on a loaded machine every call in flight may
    # have been one that waits.
    stopped, back = down
    assert any(began < back and ended > stopped for began, ended, *_ in calls), answers


@pytest.mark.parametrize("fault", ["killed", "stopped past its lease"])
def test_calls_raced_while_a_worker_process_fails_lose_nothing(
    each_shared_store: str, fault: str
) -> None:
    # The storm beside a worker with a lease of a second, killed (SIGKILL) in the middle
    # of it, or stopped (SIGSTOP) for twice its lease and then let go on: the runs it
    # held are taken over and every run settles; the stopped one goes on once woken.
    store = each_shared_store
    with _beside_a_worker(store, options=("--lease", "1")) as worker:

        def fail() -> None:
            time.sleep(SECONDS / 3)
            if fault == "killed":
                worker.signal(signal.SIGKILL)
                return
            worker.signal(signal.SIGSTOP)
            try:
                time.sleep(2.0)
            finally:
                worker.signal(signal.SIGCONT)

        _storm(store, RACED, fenced_allowed=True, during=fail)
        if fault == "killed":
            assert worker.exit_code() == -signal.SIGKILL
        else:
            _stopped_by_sigterm(worker)


def test_calls_raced_while_another_process_holds_the_sqlite_lock_lose_nothing(
    tmp_path: Path,
) -> None:
    # The storm on SQLite, and the database's write lock taken by another connection
    # for a second in the middle of it: every call waits for it (none fails), and every
    # run still settles.
    path = tmp_path / "locked.db"

    def hold_the_lock() -> None:
        time.sleep(SECONDS / 3)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            time.sleep(1.0)
            other.execute("ROLLBACK")
        finally:
            other.close()

    _storm(path, RACED, during=hold_the_lock)


STOPPED_AFTER = SECONDS / 2
"""When a storm that stops its runtime stops it."""
KEYS = 3
"""How many idempotency keys the keyed starts of a storm share."""


def test_calls_raced_while_the_runtime_stops_answer_as_documented(each_store: Any) -> None:
    # The storm, keyed starts among its calls, and the runtime stopped in the middle of
    # it: a call answers as documented, or with RuntimeStoppedError once the stop cut it
    # (a delete the stop caught between its read and its write raised the store's
    # StoreError, "the run store ... is closed"); none hangs. On a durable store, every
    # run a call acknowledged and nobody deleted is there for the next runtime, which
    # ends them (a wait, the store and `callboard runs show` tell one status) and serves
    # new runs.
    store = each_store
    told = _storm_cut_by_stop(store, stop_after=STOPPED_AFTER)

    assert told["surprises"] == []
    answers = Counter(told["answers"])
    assert answers["start: ok"] > 0 and answers["start: RuntimeStoppedError"] > 0, answers
    assert told["longest"] < WAIT  # the calls' own timeouts are 0.05 s: none waited long
    if store == "memory":  # nothing outlives the stop
        with Runtime() as rt:
            fresh = rt.register(RACED).create_run().start(input_data={"n": 1}, timeout=WAIT)
        assert fresh.status == "success"
        return
    _taken_on_by_the_next_runtime(store, told["ids"], told["deleted"], told["keyed"])


_TWIN = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from tests.test_races import _storm_cut_by_stop
    go = Path({go!r})
    while not go.exists():
        time.sleep(0.001)
    told = _storm_cut_by_stop({store!r}, stop_after=None, seed={seed!r})
    print(json.dumps(told), flush=True)
    """
)


def test_calls_raced_from_two_processes_one_stopped_under_them_lose_nothing(
    each_shared_store: str, tmp_path: Path
) -> None:
    # The storm from two processes at once on one store, each a runtime that runs runs,
    # and this one stopped in the middle of it, the other going on (it takes over the
    # runs this one held): cancels, resumes, restarts and deletes cross the processes,
    # and the keyed starts of both share their keys. (It found a restart cut by the stop
    # raising the closed store's StoreError.) Every call answers as documented; every
    # run acknowledged and not deleted is found and ends, its status told alike; one
    # run at most holds a key.
    store = each_shared_store
    Runtime(store=store).start().stop()  # the store's schema, before both open it
    go = tmp_path / "go"
    script = _TWIN.format(root=str(Path(__file__).parent.parent), go=str(go), store=store, seed=1)
    twin = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        go.touch()
        mine = _storm_cut_by_stop(store, stop_after=STOPPED_AFTER, seed=0)
        out, err = twin.communicate(timeout=STORM_AT_MOST * SECONDS + 3 * WAIT)
    finally:
        if twin.poll() is None:
            twin.kill()
            twin.communicate()
    assert twin.returncode == 0, err
    theirs = json.loads(out.strip().splitlines()[-1])

    assert mine["surprises"] == [] and theirs["surprises"] == []
    assert mine["answers"].get("start: RuntimeStoppedError", 0) > 0  # this one was cut
    assert theirs["answers"].get("start: ok", 0) > 0
    keyed = {key: mine["keyed"].get(key, []) + theirs["keyed"].get(key, []) for key in _keys()}
    _taken_on_by_the_next_runtime(
        store, mine["ids"] + theirs["ids"], mine["deleted"] + theirs["deleted"], keyed
    )


def _keys() -> list[str]:
    return [f"key-{index}" for index in range(KEYS)]


def _storm_cut_by_stop(store: Any, *, stop_after: float | None, seed: int = 0) -> dict[str, Any]:
    """Race every call, keyed starts among them, on a runtime stopped after ``stop_after`` s.

    Without ``stop_after``, the storm lasts SECONDS and the runtime is stopped after it,
    once the runs it holds ended or suspended. Returns what the calls told, as plain data
    (a child process prints it): ``answers`` by kind, ``surprises`` (errors a call does
    not document), the ``ids`` of the runs started (in order), those ``deleted`` by a
    delete that said so, the ids each key's start answered (``keyed``), and the
    ``longest`` call in seconds.
    """
    ids: list[str] = []  # in the order they started: the storm takes the newest
    deleted: list[str] = []
    keyed: dict[str, list[str]] = {key: [] for key in _keys()}
    lock = threading.Lock()
    answers: Counter[str] = Counter()
    surprises: list[str] = []
    longest: list[float] = [0.0]

    def call(wf: Any, kind: str, run_id: str | None, rng: random.Random) -> str | None:
        if kind == "delete" and run_id is not None:
            if wf.delete_workflow_run_by_id(run_id):
                with lock:
                    deleted.append(run_id)
            return None
        if kind == "start_key":
            key = rng.choice(_keys())
            run = wf.create_run()
            run.start_async(input_data={"n": 1}, idempotency_key=key)
            with lock:
                keyed[key].append(str(run.run_id))
            return str(run.run_id)
        return _call(wf, kind, run_id, rng)

    def storm(rng: random.Random, wf: Any, until: float) -> None:
        while time.monotonic() < until:
            kind = rng.choice([*KINDS, "start_key"])
            with lock:
                run_id = rng.choice(ids[-4:]) if ids else None
            began = time.monotonic()
            try:
                started = call(wf, kind, run_id, rng)
            except (*EXPECTED, RuntimeStoppedError) as exc:
                answers[f"{kind}: {type(exc).__name__}"] += 1
            except Exception as exc:  # an error a call does not document for this
                surprises.append(f"{kind}: {type(exc).__name__}: {exc}")
            else:
                answers[f"{kind}: ok"] += 1
                if started is not None:
                    with lock:
                        ids.append(started)
            longest[0] = max(longest[0], time.monotonic() - began)

    rt = Runtime(store=store).start()
    wf = rt.register(RACED)
    until = time.monotonic() + SECONDS
    threads = [
        threading.Thread(target=storm, args=(random.Random(f"{seed}-{index}"), wf, until))
        for index in range(THREADS)
    ]
    try:
        for thread in threads:
            thread.start()
        if stop_after is not None:
            time.sleep(stop_after)
            rt.stop()
        for thread in threads:
            thread.join(WAIT + SECONDS)
        if stop_after is None:
            wait_until(lambda: all(_settled(wf, run_id) for run_id in ids), WAIT, "this one's runs")
    finally:
        rt.stop()
        for thread in threads:
            thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)
    return {
        "answers": dict(answers),
        "surprises": surprises,
        "ids": ids,
        "deleted": deleted,
        "keyed": keyed,
        "longest": longest[0],
    }


def _settled(wf: Any, run_id: str) -> bool:
    """Whether a run ended or waits for a resume (or is gone)."""
    try:
        result = wf.get_workflow_run_execution_result(run_id)
    except WorkflowError:
        return False
    return result is None or result.status in ("success", "failed", "canceled", "suspended")


def _taken_on_by_the_next_runtime(
    store: Any, ids: list[str], deleted: Any, keyed: dict[str, list[str]]
) -> None:
    """A runtime on ``store`` finds every run of ``ids`` not ``deleted`` and ends them.

    Each ended run's status is the same by ``wait()``, in the store's row and by
    ``callboard runs show``; of the runs a key's starts answered, one at most is
    still there; and the runtime runs a new run.
    """
    with Runtime(store=store) as rt:
        wf = rt.register(RACED)
        kept = sorted(set(ids) - set(deleted))
        lost = [run_id for run_id in kept if wf.get_workflow_run_execution_result(run_id) is None]
        assert lost == []
        wait_until(lambda: all(_settled(wf, run_id) for run_id in kept), WAIT, "every run")
        ended = [
            run_id
            for run_id in kept
            if wf.get_workflow_run_execution_result(run_id).status != "suspended"
        ]
        told = {
            run_id: (
                wf.create_run(run_id).wait(WAIT).status.value,
                _stored_status(store, run_id),
                _shown_status(store, run_id),
            )
            for run_id in ended
        }
        # (A run a key's start answered may have been deleted, and its id started again,
        # without the key, by a start of that id.)
        holders = {
            key: {run_id for run_id in answered if _key_of(wf, run_id) == key}
            for key, answered in keyed.items()
        }
        fresh = wf.create_run().start(input_data={"n": 1}, timeout=WAIT)
    assert told and {run_id: t for run_id, t in told.items() if len(set(t)) != 1} == {}
    assert all(len(held) <= 1 for held in holders.values()), holders
    assert fresh.status == "success" and fresh.result == {"n": 2}


def _key_of(wf: Any, run_id: str) -> str | None:
    """The idempotency key of the run ``run_id`` (``None`` without one, or without the run)."""
    result = wf.get_workflow_run_execution_result(run_id)
    return None if result is None else result.idempotency_key


def _stored_status(store: Any, run_id: str) -> str:
    """The status in a durable store's row of the run."""
    query = "SELECT status FROM {} WHERE run_id = ?"
    if str(store).startswith("postgres"):
        import psycopg

        with psycopg.connect(store) as connection:
            row = connection.execute(
                query.format("callboard_runs").replace("?", "%s"), (run_id,)
            ).fetchone()
    else:
        with contextlib.closing(sqlite3.connect(store)) as connection:
            row = connection.execute(query.format("runs"), (run_id,)).fetchone()
    assert row is not None, run_id
    return str(row[0])


def _shown_status(store: Any, run_id: str) -> str:
    """The status ``callboard runs show RUN_ID --json`` prints."""
    import io
    import json

    from runtime._cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["runs", "show", run_id, "--db", str(store), "--json"])
    return str(json.loads(out.getvalue())["status"])


def _storm(
    store: Any,
    workflow: Any,
    *,
    fenced_allowed: bool = False,
    during: Callable[[], None] | None = None,
    also: tuple[type[BaseException], ...] = (),
    calls_out: list[tuple[float, float, str | None, str, str]] | None = None,
) -> Counter[str]:
    """Race every call on ``workflow``'s newest runs; what the calls answered, by kind.

    ``during`` runs on this thread while the storm goes on (a fault to inject); ``also``
    are errors the calls may raise besides the documented ones. ``calls_out`` gets every
    call: when it began and ended (``time.monotonic()``), its run id, kind and answer.
    """
    ids: list[str] = []
    lock = threading.Lock()
    answers: Counter[str] = Counter()
    surprises: list[str] = []
    calls: list[tuple[float, float, str | None, str, str]] = [] if calls_out is None else calls_out

    least = 10 if during is None else 5

    def enough() -> bool:
        return answers["start: ok"] > least and answers["cancel: ok"] > least

    def storm(seed: int, wf: Any, until: float) -> None:
        rng = random.Random(seed)
        while _storming(until, enough):
            kind = rng.choice(KINDS)
            with lock:
                run_id = rng.choice(ids[-4:]) if ids else None
            began = time.monotonic()
            try:
                started = _call(wf, kind, run_id, rng)
            except EXPECTED + also as exc:
                answers[f"{kind}: {type(exc).__name__}"] += 1
                calls.append((began, time.monotonic(), run_id, kind, type(exc).__name__))
            except Exception as exc:  # an error a call does not document for this
                surprises.append(f"{kind}: {type(exc).__name__}: {exc}")
            else:
                answers[f"{kind}: ok"] += 1
                calls.append((began, time.monotonic(), started or run_id, kind, "ok"))
                if started is not None:
                    with lock:
                        ids.append(started)

    with capture_logs() as logs, Runtime(store=store) as rt:
        wf = rt.register(workflow)
        until = time.monotonic() + SECONDS
        threads = [
            threading.Thread(target=storm, args=(seed, wf, until)) for seed in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        if during is not None:
            during()
        for thread in threads:
            thread.join()

        def settled(run_id: str) -> bool:
            try:
                result = wf.get_workflow_run_execution_result(run_id)
            except WorkflowError:
                return False
            return result is None or result.status in ("success", "failed", "canceled", "suspended")

        def unsettled() -> list[str]:
            return [run_id for run_id in ids if not settled(run_id)]

        try:
            wait_until(lambda: not unsettled(), WAIT, "every run settled")
        except BaseException:
            stuck = unsettled()
            where = {run_id: _where(store, wf, run_id) for run_id in stuck}
            told = [event for event in logs if event.get("run_id") in stuck]
            mine = [call for call in calls if call[2] in stuck]
            pytest.fail(f"runs left unsettled: {where}; their log: {told}; calls: {mine}")
        fresh = wf.create_run().start(input_data={"n": 1}, timeout=WAIT)
        if workflow is RACED_QUEUED:  # no slot of the queue was lost: both run at once
            _both_slots_free(rt)
        assert rt.is_running

    assert surprises == []
    assert fresh.status == "success" and fresh.result == {"n": 2}
    if not fenced_allowed:  # one process drives every run: nothing is fenced off
        assert [e for e in logs if e["event"] == "run_fenced"] == []
    # The storm made its calls: that many of each kind went through. (With a fault
    # injected, part of its two seconds is the fault's; on a loaded machine it goes on
    # longer, until they did.)
    assert enough(), answers
    return answers


def _where(store: Any, wf: Any, run_id: str) -> str:
    """A run's status, its steps' and, on a shared store, its row's owner: for a failure."""
    try:
        result = wf.get_workflow_run_execution_result(run_id)
    except WorkflowError as exc:
        return f"unreadable: {exc}"
    if result is None:
        return "gone"
    where = f"{result.status.value}, steps {[(p, s.status.value) for p, s in result.steps.items()]}"
    query = "SELECT status, owner_id FROM {} WHERE run_id = ?"
    if isinstance(store, str) and store.startswith("postgres"):
        import psycopg

        with psycopg.connect(store) as connection:
            row = connection.execute(
                query.format("callboard_runs").replace("?", "%s"), (run_id,)
            ).fetchone()
    elif store != "memory":  # a SQLite file's path
        with contextlib.closing(sqlite3.connect(store)) as connection:
            row = connection.execute(query.format("runs"), (run_id,)).fetchone()
    else:
        return where
    return f"{where}; row (status, owner): {row}"


def _both_slots_free(rt: Runtime) -> None:
    """Two runs of the queue, one of each key, execute at the same time."""
    together = threading.Barrier(2)

    def meet(ctx: Any) -> Number:
        together.wait(WAIT)  # BrokenBarrierError: the other run never started
        return ctx.input_data

    meeting = (
        create_workflow(id="meeting", input_schema=Number, output_schema=Number, queue=QUEUE)
        .then(create_step(id="meet", input_schema=Number, output_schema=Number, execute=meet))
        .commit()
    )
    wf = rt.register(meeting)
    runs = [wf.create_run() for _ in range(2)]
    for n, run in enumerate(runs):
        run.start_async(input_data={"n": n})
    assert [run.wait(2 * WAIT).status for run in runs] == ["success", "success"]


def _held_first(workflow_id: str, *then: Any) -> tuple[Any, threading.Event, threading.Event]:
    """A workflow whose first step sets ``entered`` and waits for ``gate``; then ``then``.

    Returns the workflow and the two events: the test sets ``gate`` to let the step end.
    """
    entered, gate = threading.Event(), threading.Event()

    def held(ctx: Any) -> Number:
        entered.set()
        gate.wait(WAIT)
        return ctx.input_data

    workflow = create_workflow(id=workflow_id, input_schema=Number, output_schema=Number).then(
        create_step(id="held", input_schema=Number, output_schema=Number, execute=held)
    )
    for step in then:
        workflow = workflow.then(step)
    return workflow.commit(), entered, gate


def test_a_cancel_followed_at_once_by_a_restart_says_it_canceled_the_run(
    each_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = each_store
    # The cancel is recorded, then reads the store back to tell which end the run
    # kept. A restart in between reopened the run, and the cancel raised StoreError
    # ("not recorded ... still reads as running") though it had been recorded.
    read_back = Run._canceled

    def restarted_first(self: Any, recorded: bool) -> bool:
        self.restart_async()
        return read_back(self, recorded)

    holding, entered, gate = _held_first("holding")
    try:
        with Runtime(store=store) as rt:
            wf = rt.register(holding)
            run = wf.create_run()
            run.start_async(input_data={"n": 1})
            assert entered.wait(WAIT)  # its actor drives it: the cancel goes there
            monkeypatch.setattr(Run, "_canceled", restarted_first)
            assert run.cancel() is True
            monkeypatch.undo()
            gate.set()
            result = run.wait(WAIT)
    finally:
        gate.set()

    assert result.status == "success" and result.restarts == 1


def test_a_cancel_that_read_the_run_unheld_before_this_worker_claimed_it_goes_to_its_actor(
    each_shared_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cancel on a shared store looks whether this worker holds the run; if not, and no
    # actor here drives it, it ends it in the store with a compare-and-set. A claim here
    # in between made the run this worker's, and the compare-and-set ended it all the
    # same, under the actor the claim had started: that actor ran on, its writes went
    # nowhere, and a restart then gave the run a second actor here. (The storm beside a
    # worker process found it: a run left `running` for ever.) The cancel must go to the
    # actor, which ends the run: its next step never runs.
    store = each_shared_store
    after: list[int] = []

    def then(ctx: Any) -> Number:
        after.append(ctx.input_data.n)
        return ctx.input_data

    gated, entered, gate = _held_first(
        "gated", create_step(id="then", input_schema=Number, output_schema=Number, execute=then)
    )
    try:
        with Runtime(store=store) as rt:
            wf = rt.register(gated)
            run = wf.create_run()
            run.start_async(input_data={"n": 1})
            assert entered.wait(WAIT)  # held here, its actor in the first step
            system = rt._host.system
            assert system is not None and system.shared is not None
            # What the cancel saw before the claim landed: not held here, no actor here.
            monkeypatch.setattr(type(system.shared), "holds", lambda self, run_id: False)
            answers = iter(["not_here"])
            real_cancel = type(system).cancel
            monkeypatch.setattr(
                type(system),
                "cancel",
                lambda self, run_id: next(answers, None) or real_cancel(self, run_id),
            )
            assert run.cancel() is True
            monkeypatch.undo()
            gate.set()
            result = run.wait(WAIT)
        # The stop waited for every run's actor to end.
    finally:
        gate.set()

    assert result.status == "canceled"
    assert after == []  # the actor ended the run: no step of it ran after the cancel


async def _acall(wf: Any, kind: str, run_id: str | None, rng: random.Random) -> str | None:
    """The awaitable twin of :func:`_call`."""
    if kind == "start" or run_id is None:
        run = wf.create_run()
        await run.astart_async(input_data={"n": rng.randrange(10)})
        return str(run.run_id)
    run = wf.create_run(run_id)
    if kind == "start_same":
        await run.astart_async(input_data={"n": 1})
    elif kind == "resume":
        await run.aresume_async(resume_data={})
    elif kind == "resume_item":
        await run.aresume_async(step="ask", for_each_index=rng.randrange(3), resume_data={})
    elif kind == "resume_wrong":
        await run.aresume_async(step="no-such-step", resume_data={})
    elif kind == "cancel":
        await run.acancel()
    elif kind == "delete":
        await wf.adelete_workflow_run_by_id(run_id)
    elif kind == "restart":
        await run.arestart_async()
    elif kind == "wait":
        await run.wait_async(timeout=0.05)
    elif kind == "watch":
        async for _ in run.watch(timeout=0.05):
            pass
    elif kind == "get":
        await wf.aget_workflow_run_execution_result(run_id)
    else:
        await wf.alist_workflow_runs(limit=20)
    return None


def test_awaitable_calls_raced_on_one_loop_answer_as_documented(each_store: Any) -> None:
    store = each_store
    # The same storm through the `a` twins, from sixteen tasks on one event loop (it
    # found `async for` over a watch ignoring its timeout: every task hung in one).
    ids: list[str] = []
    surprises: list[str] = []
    answers: Counter[str] = Counter()

    def enough() -> bool:
        return answers["start: ok"] > 10 and answers["watch: ok"] > 10

    async def client(seed: int, wf: Any, until: float) -> None:
        rng = random.Random(seed)
        while _storming(until, enough):
            kind = rng.choice(KINDS)
            run_id = rng.choice(ids[-4:]) if ids else None
            try:
                started = await _acall(wf, kind, run_id, rng)
            except EXPECTED as exc:
                answers[f"{kind}: {type(exc).__name__}"] += 1
            except Exception as exc:
                surprises.append(f"{kind}: {type(exc).__name__}: {exc}")
            else:
                answers[f"{kind}: ok"] += 1
                if started is not None:
                    ids.append(started)

    async def main() -> Any:
        async with Runtime(store=store) as rt:
            wf = rt.register(RACED)
            until = time.monotonic() + SECONDS
            await asyncio.gather(*(client(seed, wf, until) for seed in range(2 * THREADS)))
            return await wf.create_run().astart(input_data={"n": 1}, timeout=WAIT)

    fresh = asyncio.run(asyncio.wait_for(main(), STORM_AT_MOST * SECONDS + 3 * WAIT))

    assert surprises == []
    assert fresh.status == "success" and fresh.result == {"n": 2}
    assert enough(), answers


@pytest.mark.parametrize("when", ["after its read", "after its write was handed over"])
def test_a_delete_the_stop_catches_raises_runtime_stopped_at_once(
    each_shared_store: str, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    # A delete reads the run, then hands its write to the store's writer thread. The stop
    # closes the store in between: the delete raised the store's own StoreError ("the
    # run store ... is closed"). Or its write went to the writer's queue as the stop
    # ended the writer (it had seen the writer alive a moment before): the write was left
    # in the queue, nobody to commit it, and the delete waited 30 s for it, then said
    # the store "stayed locked". Either way the stop cut it: RuntimeStoppedError, at once,
    # and the run is kept.
    from runtime._stores._writer import GroupCommitWriter

    store = each_shared_store
    handed = threading.Event()
    answers: list[BaseException | bool] = []
    real_submit = GroupCommitWriter.submit

    def late(self: GroupCommitWriter, kind: Any, payload: Any, done: Any) -> Any:
        if kind == "delete":
            handed.set()
            self._thread.join(WAIT)  # the stop ended the writer meanwhile
        return real_submit(self, kind, payload, done)

    with Runtime(store=store) as rt:
        wf = rt.register(RACED)
        run_id = wf.create_run().start(input_data={"n": 1}, timeout=WAIT).run_id
        if when == "after its read":
            real_load = type(rt.store).load

            def read_then_stopped(self: Any, wanted: str) -> Any:
                record = real_load(self, wanted)
                if wanted == run_id and threading.current_thread() is not main:
                    handed.set()
                    wait_until(lambda: rt._host.state == "stopped", WAIT, "the stop")
                return record

            monkeypatch.setattr(type(rt.store), "load", read_then_stopped)
        else:
            monkeypatch.setattr(GroupCommitWriter, "submit", late)
        main = threading.current_thread()

        def delete() -> None:
            try:
                answers.append(wf.delete_workflow_run_by_id(run_id))
            except BaseException as exc:
                answers.append(exc)

        deleting = threading.Thread(target=delete)
        deleting.start()
        assert handed.wait(WAIT)
    # Stopped.
    deleting.join(WAIT / 2)
    monkeypatch.undo()
    assert not deleting.is_alive()
    assert len(answers) == 1 and isinstance(answers[0], RuntimeStoppedError), answers
    assert _as_the_next_runtime_reads(store, run_id) is not None


@pytest.mark.parametrize("call", ["resume", "restart"])
def test_a_resume_or_restart_the_stop_catches_raises_runtime_stopped(
    each_store: Any, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    # Both read the run, then record themselves with a compare-and-set. A stop in
    # between closed the durable store, and the call raised the store's StoreError ("the
    # run store ... is closed"), which neither documents. (The storm of two processes on
    # PostgreSQL, one stopped in the middle of it, found the restart.) The stop cut it:
    # RuntimeStoppedError, and the next runtime on the store finds the run as it was.
    store = each_store
    with Runtime(store=store) as rt:
        run = _suspended_run(rt)
        if call == "restart":
            assert run.cancel() is True
        real_going_on = Run._going_on

        def stopped_first(self: Run[Any, Any], snapshot: Any) -> Any:
            _stop_from_another_thread(rt)
            return real_going_on(self, snapshot)

        monkeypatch.setattr(Run, "_going_on", stopped_first)
        with pytest.raises(RuntimeStoppedError, match="stopped before the"):
            if call == "resume":
                run.resume_async(resume_data={})
            else:
                run.restart_async()
        monkeypatch.undo()
    if store == "memory":
        return
    result = _as_the_next_runtime_reads(store, run.run_id)
    assert result is not None
    assert result.status == ("suspended" if call == "resume" else "canceled")


def test_a_cancel_the_stop_catches_raises_runtime_stopped(
    each_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cancel of a run no actor drives (suspended) takes it from the store with a
    # compare-and-set. A stop just before closed the durable store, and the cancel raised
    # the closed store's StoreError, which it documents only for a canceled snapshot the
    # store refused. (The storm of two processes on PostgreSQL found it.) The stop cut
    # it: RuntimeStoppedError, and the run is still suspended for the next runtime.
    from actors.system import ActorSystem

    store = each_store
    with Runtime(store=store) as rt:
        run = _suspended_run(rt)
        real_take = ActorSystem.take_unheld_end

        def stopped_first(self: ActorSystem, *args: Any, **kwargs: Any) -> Any:
            _stop_from_another_thread(rt)
            return real_take(self, *args, **kwargs)

        monkeypatch.setattr(ActorSystem, "take_unheld_end", stopped_first)
        with pytest.raises(RuntimeStoppedError):
            run.cancel()
        monkeypatch.undo()
    if store == "memory":
        return
    result = _as_the_next_runtime_reads(store, run.run_id)
    assert result is not None and result.status == "suspended"
