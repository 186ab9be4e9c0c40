"""While the store refuses every write, starts are told at once, and watches once it is long.

A start (and a restart) is a new admission that nothing has committed: met by a
store that refuses writes (a read-only SQLite file, a PostgreSQL role stripped
of its privileges) it raises ``StoreUnavailableError`` with the database's
message within a try, not after the create's whole timeout, and leaves nothing
behind. The runs in flight keep their writes in memory and go on once the store
takes writes again. A watch or a stream of such a run, which would wait in
silence, raises the same error as ``wait()`` once the refusal outlasted the
patience, and goes on from where it was once the store takes writes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import runtime._stores._writer as writer_module
from runtime import (
    PostgresStore,
    Queue,
    Runtime,
    SQLiteStore,
    StoreUnavailableError,
    create_step,
    create_workflow,
)
from tests._support import Value, wait_until
from tests.durable._support.workflows import read_lines
from tests.shared._refusal import (
    Refusable,
    refusable_fixture,
    told_at_once,
)
from tests.shared._workflows import WORKFLOWS, held_in_beta

WAIT = 60.0
TIMEOUT = 12.0
"""The create's timeout here (30 s by default): a start that waited for it shows (a start
told at once returns within a third of it: see ``told_at_once``)."""
TOLD_WITHIN = 15.0
"""Seconds a watch may take to be told: the patience, and a retry a second at most."""
ROLE = "callboard_refused_starts"


def _told(name: str, attempt: Callable[[], Any], says: str) -> StoreUnavailableError:
    return told_at_once(name, attempt, says, timeout=TIMEOUT)


refusable = refusable_fixture(
    timeout=TIMEOUT, role=ROLE, privileges="INSERT, UPDATE", patient=False
)


def _flagged(ctx: Any) -> Value:
    if Path(ctx.request_context["fail"]).exists():
        raise RuntimeError("flagged to fail")
    return Value(value=ctx.input_data.value + "-ok")


flaky = (
    create_workflow(id="flaky", input_schema=Value, output_schema=Value)
    .then(create_step(id="once", input_schema=Value, output_schema=Value, execute=_flagged))
    .commit()
)

INBOX = Queue("refused-inbox", max_queued=3)

queued = (
    create_workflow(id="queued", input_schema=Value, output_schema=Value, queue=INBOX)
    .then(
        create_step(
            id="echo",
            input_schema=Value,
            output_schema=Value,
            execute=lambda ctx: Value(value=ctx.input_data.value),
        )
    )
    .commit()
)


def _held(rt: Runtime, tmp_path: Path) -> tuple[Any, Any, Path, Path]:
    """The ``logged`` workflow, and a run of it held in beta: (workflow, run, log, hold)."""
    log, hold = tmp_path / "run.log", tmp_path / "hold"
    hold.touch()
    wf, run = held_in_beta(rt, log, hold, within=WAIT)
    return wf, run, log, hold


def test_starts_while_a_refusal_is_under_way_fail_at_once_and_leave_nothing_behind(
    refusable: Refusable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _structlog_reset: None
) -> None:
    # The refusal is never given up on here: starts waited the create's whole timeout.
    monkeypatch.setattr(writer_module, "REFUSAL_PATIENCE", 600.0, raising=False)
    flag = tmp_path / "fail"
    flag.touch()
    with capture_logs() as logs, Runtime(store=refusable.location, max_concurrent_runs=2) as rt:
        wf, run, log, hold = _held(rt, tmp_path)
        fl, qu = rt.register(flaky), rt.register(queued)
        broken = fl.create_run()
        assert broken.start(
            input_data={"value": "b"}, request_context={"fail": str(flag)}
        ).status == ("failed")
        flag.unlink()
        listed = wf.list_workflow_runs().total
        stats = rt.store.queue_stats()  # type: ignore[attr-defined]
        refusable.refuse(rt, True)
        try:
            hold.unlink()  # beta ends: its output waits in memory, tried again and again
            wait_until(
                lambda: any(e["event"] == "store_write_refused" for e in logs),
                timeout=WAIT,
                what="the refusal begins",
            )

            def start(run_id: str, **options: Any) -> Any:
                return wf.create_run(run_id=run_id).start_async(
                    input_data={"value": "y"}, **options
                )

            attempts: dict[str, Callable[[], Any]] = {
                "start_async": lambda: start("plain"),
                "a keyed start": lambda: start("keyed", idempotency_key="order-1"),
                "astart_async": lambda: asyncio.run(
                    wf.create_run(run_id="awaited").astart_async(input_data={"value": "y"})
                ),
                "a start into a queue": lambda: qu.create_run(run_id="queued").start_async(
                    input_data={"value": "q"}
                ),
                "restart_async": broken.restart_async,
            }
            for name, attempt in attempts.items():
                _told(name, attempt, refusable.says)
            # Nothing of them is recorded, nor counted.
            assert wf.list_workflow_runs().total == listed
            assert rt.store.queue_stats() == stats  # type: ignore[attr-defined]
            assert fl.get_workflow_run_execution_result(broken.run_id).status == "failed"
        finally:
            refusable.refuse(rt, False)
        # The run in flight goes on from where it was, each step once.
        result = run.wait(timeout=WAIT)
        assert result.status == "success", result.error
        assert result.result == {"value": "x-a-b-c"}
        assert [read_lines(log).count(f"start {step}") for step in ("beta", "gamma")] == [1, 1]
        for run_id in ("plain", "keyed", "awaited"):
            assert wf.get_workflow_run_execution_result(run_id) is None
        assert qu.get_workflow_run_execution_result("queued") is None
        # Starts work at once, the key is free, and no start kept a place: with room for
        # two runs here, a place each would have left none.
        again = wf.create_run(run_id="keyed-again").start_async(
            input_data={"value": "z"}, idempotency_key="order-1"
        )
        assert again.run_id == "keyed-again"
        runs = [wf.create_run() for _ in range(3)]
        for each in runs:
            each.start_async(input_data={"value": "n"}, request_context={"log": str(log)})
        assert qu.create_run(run_id="queued").start(input_data={"value": "q"}).status == "success"
        assert broken.restart(timeout=WAIT).result == {"value": "b-ok"}
        for each in runs:
            assert each.wait(timeout=WAIT).status == "success"
    assert "store_refuses_writes" not in [e["event"] for e in logs]


def test_a_start_is_told_at_once_while_a_claim_pass_meets_the_refusal(
    refusable: Refusable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _structlog_reset: None
) -> None:
    # With a capacity, the claimer claims under the lock that each start of the process
    # takes to count its room. A claim queued in the writer behind the refused saves
    # waited there the whole timeout, and every start with it (a start that raced a claim
    # pass waited 12 s here, where it raced none and raised at once).
    monkeypatch.setattr(writer_module, "REFUSAL_PATIENCE", 600.0, raising=False)
    claims: list[float] = []
    with capture_logs() as logs, Runtime(store=refusable.location, max_concurrent_runs=2) as rt:
        wf, run, _log, hold = _held(rt, tmp_path)
        store_class: Any = type(rt.store)
        claim = store_class.claim

        def spied(self: Any, *args: Any, **kwargs: Any) -> Any:
            claims.append(time.monotonic())
            return claim(self, *args, **kwargs)

        monkeypatch.setattr(store_class, "claim", spied)
        refusable.refuse(rt, True)
        try:
            hold.unlink()  # beta ends: its output is refused, and waits in the writer
            wait_until(
                lambda: any(e["event"] == "store_write_refused" for e in logs),
                timeout=WAIT,
                what="the refusal begins",
            )
            refused = time.monotonic()
            wait_until(
                lambda: any(at > refused for at in claims), timeout=WAIT, what="a claim pass"
            )
            time.sleep(0.2)  # the claim is in the writer's hands, behind the refused saves
            _told(
                "a start beside a claim",
                lambda: wf.create_run(run_id="beside").start_async(input_data={"value": "y"}),
                refusable.says,
            )
        finally:
            refusable.refuse(rt, False)
        result = run.wait(timeout=WAIT)
        assert result.status == "success", result.error
        assert wf.get_workflow_run_execution_result("beside") is None


def test_the_first_start_to_meet_a_refusal_fails_at_once_and_the_next_starts_once_allowed(
    refusable: Refusable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _structlog_reset: None
) -> None:
    monkeypatch.setattr(writer_module, "REFUSAL_PATIENCE", 600.0, raising=False)
    log = tmp_path / "run.log"
    with Runtime(store=refusable.location) as rt:
        wf = rt.register(WORKFLOWS["logged"])
        store_type = SQLiteStore if isinstance(rt.store, SQLiteStore) else PostgresStore
        refusable.refuse(rt, True)
        try:
            # On the caller's own connection (a store's fast path), then through the writer.
            _told(
                "a start on the caller's connection",
                lambda: wf.create_run(run_id="first").start_async(input_data={"value": "y"}),
                refusable.says,
            )
            with monkeypatch.context() as patch:
                patch.setattr(store_type, "_fast_creates", False)
                _told(
                    "a start through the writer",
                    lambda: wf.create_run(run_id="second").start_async(input_data={"value": "y"}),
                    refusable.says,
                )
        finally:
            refusable.refuse(rt, False)
        for run_id in ("first", "second"):
            assert wf.get_workflow_run_execution_result(run_id) is None
            result = wf.create_run(run_id=run_id).start(
                input_data={"value": "y"}, request_context={"log": str(log)}
            )
            assert result.status == "success", result.error


def test_a_watch_and_a_stream_are_told_once_the_refusal_outlasts_the_patience_and_go_on_after(
    refusable: Refusable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _structlog_reset: None
) -> None:
    monkeypatch.setattr(writer_module, "REFUSAL_PATIENCE", 0.5, raising=False)
    with capture_logs() as logs, Runtime(store=refusable.location) as rt:
        _, run, _, hold = _held(rt, tmp_path)
        watch = run.watch()
        outcomes: dict[str, BaseException | None] = {}
        taken: list[Any] = []

        def watching() -> None:
            try:
                taken.extend(watch)
                outcomes["watch"] = None
            except BaseException as exc:
                outcomes["watch"] = exc

        async def streamed() -> None:
            async with await run.astream() as events:
                async for _ in events:
                    pass

        def streaming() -> None:
            try:
                asyncio.run(streamed())
                outcomes["stream"] = None
            except BaseException as exc:
                outcomes["stream"] = exc

        readers = [threading.Thread(target=watching), threading.Thread(target=streaming)]
        refusable.refuse(rt, True)
        try:
            for reader in readers:
                reader.start()
            time.sleep(0.2)  # both wait before beta's output is refused
            hold.unlink()
            for reader in readers:
                reader.join(TOLD_WITHIN)
            assert not any(reader.is_alive() for reader in readers), "a reader was never told"
            for name in ("watch", "stream"):
                told = outcomes[name]
                assert isinstance(told, StoreUnavailableError), (name, told)
                assert refusable.says in str(told) and run.run_id in str(told)
            # Asked again while the refusal lasts, the watch says it again at once.
            with pytest.raises(StoreUnavailableError, match=refusable.says):
                next(watch)
        finally:
            refusable.refuse(rt, False)
        wait_until(
            lambda: any(e["event"] == "store_writes_accepted" for e in logs),
            timeout=WAIT,
            what="the store takes writes again",
        )
        # The same watch goes on to the run's end, from the last event it took.
        rest = list(watch)
        seqs = [event.seq for event in taken + rest]
        assert seqs == sorted(set(seqs))
        assert rest[-1].type == "status" and rest[-1].status == "success"
        watch.close()
        store = rt.store
        assert isinstance(store, SQLiteStore | PostgresStore)
        assert not store._refusals._listeners  # every ear went with its watch
