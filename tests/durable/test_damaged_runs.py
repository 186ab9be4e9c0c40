"""One bad run never stops the runtime: damaged rows fail alone, faults in actors stay local.

A run whose stored snapshot cannot be read (a flipped bit, a missing key,
another run's id) is recorded ``failed`` with a ``SnapshotFormatError`` naming
it, its bytes kept, and every other run goes on; a fault in a handler of the
supervisor or the registry, even a ``SystemExit``, is logged and the actor
goes on.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import actors._dispatch as dispatch_module
from actors._dispatch import FaultBudget
from actors.registry import RegistryActor
from actors.run import RunActor
from actors.supervisor import SupervisorActor
from runtime import (
    RunNotRestartableError,
    Runtime,
    RunTimeoutError,
    RuntimeStoppedError,
    SnapshotFormatError,
    create_step,
    create_workflow,
)
from runtime._snapshot import WHOLE_UNTIL, decode, encode, is_parted, unpack
from tests._support import Value, shout_step, wait_for_no_callboard_threads, wait_until
from tests.durable._support.helpers import raw

WAIT = 10.0


def open_gate() -> threading.Event:
    gate = threading.Event()
    gate.set()
    return gate


def held_workflow(gate: threading.Event) -> Any:
    def hold(ctx: Any) -> Value:
        gate.wait(WAIT)
        return ctx.input_data

    return (
        create_workflow(id="damaged", input_schema=Value, output_schema=Value)
        .then(create_step(id="hold", input_schema=Value, output_schema=Value, execute=hold))
        .then(shout_step())
        .commit()
    )


def leave_unfinished(db: Path, run_ids: list[str], padding: str = "") -> None:
    """Runs in progress when their runtime stops at once: left for the next one to resume.

    Each run's input is its id, then ``padding``: a long one makes its snapshot
    large enough to be kept in parts.
    """
    gate = threading.Event()
    with Runtime(store=db, stop_timeout=0) as rt:
        wf = rt.register(held_workflow(gate))
        for run_id in run_ids:
            wf.create_run(run_id).start_async(input_data={"value": run_id + padding})
        wait_until(
            lambda: all(
                (result := wf.get_workflow_run_execution_result(run_id)) is not None
                and "hold" in result.steps
                for run_id in run_ids
            ),
            what="every run in its held step",
        )
    gate.set()


def stored(db: Path, run_id: str) -> bytes:
    """The run's snapshot as a reader gets it: its row's bytes, and its parts if it has them."""
    with raw(db) as connection:
        connection.execute("BEGIN")
        data: bytes = connection.execute(
            "SELECT snapshot FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()[0]
        parts = [
            part
            for (part,) in connection.execute(
                "SELECT part FROM run_parts WHERE run_id = ?", (run_id,)
            )
        ]
        connection.execute("COMMIT")
    return data + b"".join(parts) if is_parted(data) else data


def overwrite(db: Path, run_id: str, data: bytes) -> None:
    """Keep ``data`` whole in the run's row, in place of what the run had."""
    with raw(db) as connection:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "UPDATE runs SET snapshot = ?, lineage = NULL WHERE run_id = ?", (data, run_id)
        )
        connection.execute("DELETE FROM run_parts WHERE run_id = ?", (run_id,))
        connection.execute("COMMIT")


def flip_a_bit(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x10
    return bytes(damaged)


def without(data: bytes, key: str) -> bytes:
    snapshot = unpack(data)
    del snapshot[key]
    return encode(snapshot)


def another_runs(data: bytes) -> bytes:
    return encode({**unpack(data), "run_id": "somebody-else"})


def status_of(wf: Any, run_id: str) -> str | None:
    """The run's status, or ``None`` while its row cannot be read (before recovery fails it)."""
    try:
        result = wf.get_workflow_run_execution_result(run_id)
    except SnapshotFormatError:
        return None
    return None if result is None else str(result.status)


DAMAGE = {"flipped bit": flip_a_bit, "missing steps": lambda d: without(d, "steps")}
DAMAGE["another run's id"] = another_runs


def _ask(ctx: Any) -> Value:
    if ctx.resume_data is None:
        ctx.suspend({})
    return ctx.input_data


def asking_workflow() -> Any:
    """One step that suspends until it is resumed."""
    return (
        create_workflow(id="asking", input_schema=Value, output_schema=Value)
        .then(create_step(id="ask", input_schema=Value, output_schema=Value, execute=_ask))
        .commit()
    )


def test_a_suspended_run_whose_snapshot_is_damaged_can_be_cancelled_then_deleted(
    db: Path,
) -> None:
    # Nobody claims a suspended run, so nothing ever failed it; resume and cancel raised
    # SnapshotFormatError and a delete refused it as in progress: it stayed for ever.
    workflow = asking_workflow()
    with Runtime(store=db) as rt:
        run = rt.register(workflow).create_run("held")
        assert run.start(input_data={"value": "v"}).status == "suspended"
    overwrite(db, "held", flip_a_bit(stored(db, "held")))

    with Runtime(store=db) as rt:
        wf = rt.register(workflow)
        again = wf.create_run("held")
        assert again.cancel() is True
        result = wf.get_workflow_run_execution_result("held")
        assert result is not None and result.status == "canceled"
        assert result.error is not None and result.error.name == "SnapshotFormatError"
        assert again.cancel() is False
        assert wf.delete_workflow_run_by_id("held") is True


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_recovery_fails_a_damaged_run_alone_and_resumes_the_others(db: Path, damage: str) -> None:
    leave_unfinished(db, ["healthy", "damaged"])
    original = stored(db, "damaged")
    overwrite(db, "damaged", DAMAGE[damage](original))

    with capture_logs() as logs, Runtime(store=db) as rt:
        wf = rt.register(held_workflow(open_gate()))
        wait_until(
            lambda: status_of(wf, "damaged") == "failed", what="the damaged run recorded failed"
        )
        healthy = wf.create_run("healthy").wait(WAIT)
        fresh = wf.create_run().start(input_data={"value": "after"}, timeout=WAIT)
        # Its record holds nothing of its own to go on from: a restart says so.
        with pytest.raises(RunNotRestartableError, match="rebuilt from its row alone"):
            wf.create_run("damaged").restart_async()

    assert healthy.status == "success" and healthy.result == {"value": "HEALTHY"}
    assert fresh.status == "success"
    failed = wf.get_workflow_run_execution_result("damaged")
    assert failed is not None and failed.error is not None
    assert failed.error.name == "SnapshotFormatError"
    assert "damaged" in failed.error.message or "snapshot" in failed.error.message
    assert unpack(stored(db, "damaged"))["damaged"] == DAMAGE[damage](original)  # kept
    with raw(db) as connection:
        ids = {row[0] for row in connection.execute("SELECT run_id FROM runs")}
    assert "somebody-else" not in ids  # no row for a run nobody started
    assert any(e["event"] == "run_failed_unreadable" for e in logs)


def flip_a_bit_in_part(db: Path, run_id: str, kind: str) -> str:
    """Flip a bit in one stored part of the run, where it lies: its head, or a part's row."""
    with raw(db) as connection:
        if kind == "h":
            (blob,) = connection.execute(
                "SELECT snapshot FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            assert is_parted(blob), "the run is kept in parts"
            connection.execute(
                "UPDATE runs SET snapshot = ? WHERE run_id = ?", (flip_a_bit(blob), run_id)
            )
            return "h"
        key, blob = connection.execute(
            "SELECT key, part FROM run_parts WHERE run_id = ? AND key LIKE ? ORDER BY key",
            (run_id, kind + "%"),
        ).fetchone()
        connection.execute(
            "UPDATE run_parts SET part = ? WHERE run_id = ? AND key = ?",
            (flip_a_bit(blob), run_id, key),
        )
        return str(key)


@pytest.mark.parametrize("kind", ["h", "s", "v"], ids=["head", "step record", "value"])
def test_a_flipped_bit_in_any_stored_part_fails_that_run_alone(db: Path, kind: str) -> None:
    padding = "." * WHOLE_UNTIL  # kept in parts
    leave_unfinished(db, ["healthy", "damaged"], padding)
    damaged = stored(db, "damaged")
    flip_a_bit_in_part(db, "damaged", kind)

    with pytest.raises(SnapshotFormatError):
        decode(stored(db, "damaged"), "damaged")
    with Runtime(store=db) as rt:
        wf = rt.register(held_workflow(open_gate()))
        wait_until(
            lambda: status_of(wf, "damaged") == "failed", what="the damaged run recorded failed"
        )
        healthy = wf.create_run("healthy").wait(WAIT)

    assert healthy.status == "success" and healthy.result == {"value": "HEALTHY" + padding}
    failed = wf.get_workflow_run_execution_result("damaged")
    assert failed is not None and failed.error is not None
    assert failed.error.name == "SnapshotFormatError"
    kept = unpack(stored(db, "damaged"))["damaged"]
    assert len(kept) == len(damaged) and kept != damaged  # the damaged bytes, kept


def test_a_run_left_unreadable_does_not_hang_its_waiter(db: Path) -> None:
    leave_unfinished(db, ["damaged"])
    overwrite(db, "damaged", flip_a_bit(stored(db, "damaged")))

    with Runtime(store=db) as rt:
        wf = rt.register(held_workflow(open_gate()))
        try:
            result = wf.create_run("damaged").wait(WAIT)
        except RunTimeoutError:
            pytest.fail("wait() on a damaged run never returned")

    assert result.status == "failed"


def test_watching_a_damaged_finished_run_ends_and_the_registry_goes_on(db: Path) -> None:
    with Runtime(store=db) as rt:
        wf = rt.register(
            create_workflow(id="watched", input_schema=Value, output_schema=Value)
            .then(shout_step())
            .commit()
        )
        run = wf.create_run()
        run.start(input_data={"value": "v"}, timeout=WAIT)
        overwrite(db, run.run_id, without(stored(db, run.run_id), "status"))

        with pytest.raises(SnapshotFormatError):
            list(run.watch(timeout=WAIT))
        after = wf.create_run().start(input_data={"value": "still serving"}, timeout=WAIT)

    assert after.status == "success"


def test_a_system_exit_in_a_run_actors_handler_fails_that_run_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handle = RunActor._on_step_finished

    def explode_for_one_run(self: RunActor, message: Any) -> None:
        if self._snapshot["input"] == {"value": "doomed"}:
            raise SystemExit("a step's reply handler exited")
        handle(self, message)

    monkeypatch.setattr(RunActor, "_on_step_finished", explode_for_one_run)
    workflow = (
        create_workflow(id="exits", input_schema=Value, output_schema=Value)
        .then(shout_step())
        .commit()
    )
    with capture_logs(), Runtime() as rt:
        wf = rt.register(workflow)
        doomed = wf.create_run().start(input_data={"value": "doomed"}, timeout=WAIT)
        others = [
            wf.create_run().start(input_data={"value": f"v{index}"}, timeout=WAIT)
            for index in range(5)
        ]

    assert doomed.status == "failed" and doomed.error is not None
    assert doomed.error.name == "RunCrashedError"
    assert [result.status for result in others] == ["success"] * 5


def test_a_fault_in_a_supervisor_handler_is_logged_and_the_supervisor_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ended = SupervisorActor._on_run_ended
    calls = {"n": 0}

    def fails_once(self: SupervisorActor, message: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt("a fault in the supervisor")
        ended(self, message)

    monkeypatch.setattr(SupervisorActor, "_on_run_ended", fails_once)
    workflow = (
        create_workflow(id="supervised", input_schema=Value, output_schema=Value)
        .then(shout_step())
        .commit()
    )
    with capture_logs() as logs, Runtime(stop_timeout=1) as rt:
        wf = rt.register(workflow)
        results = [
            wf.create_run().start(input_data={"value": f"v{index}"}, timeout=WAIT)
            for index in range(3)
        ]

    assert [result.status for result in results] == ["success"] * 3
    assert any(e["event"] == "actor_message_failed" for e in logs)


def test_a_fault_in_a_registry_handler_is_logged_and_the_registry_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watch = RegistryActor._on_watch_run
    calls = {"n": 0}

    def fails_once(self: RegistryActor, message: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise SystemExit("a fault in the registry")
        watch(self, message)

    monkeypatch.setattr(RegistryActor, "_on_watch_run", fails_once)
    gate = threading.Event()
    with capture_logs() as logs, Runtime() as rt:
        wf = rt.register(held_workflow(gate))
        first = wf.create_run()
        first.start_async(input_data={"value": "first"})
        with pytest.raises(RunTimeoutError):
            first.wait(0.2)  # its watch was lost with the fault; the run itself goes on
        gate.set()
        later = wf.create_run().start(input_data={"value": "later"}, timeout=WAIT)
        wait_until(
            lambda: (wf.get_workflow_run_execution_result(first.run_id) or Any).status == "success",
            what="the first run ended all the same",
        )

    assert later.status == "success"
    assert any(e["event"] == "registry_message_failed" for e in logs)


def test_decode_names_the_missing_key_of_a_stored_row(db: Path) -> None:
    leave_unfinished(db, ["r"])
    data = without(stored(db, "r"), "seq")

    with pytest.raises(ValueError, match="'seq'"):
        decode(data, "r")


@pytest.mark.parametrize("actor", ["supervisor", "registry"])
def test_an_actor_that_keeps_failing_stops_the_runtime_cleanly_saying_why(
    monkeypatch: pytest.MonkeyPatch, actor: str
) -> None:
    monkeypatch.setattr(dispatch_module, "MAX_FAULTS", 2)
    if actor == "supervisor":
        monkeypatch.setattr(SupervisorActor, "_on_run_ended", always_fails)
    else:
        monkeypatch.setattr(RegistryActor, "_on_watch_run", always_fails)
    workflow = (
        create_workflow(id="broken", input_schema=Value, output_schema=Value)
        .then(shout_step())
        .commit()
    )
    with capture_logs() as logs:
        rt = Runtime(stop_timeout=1).start()
        wf = rt.register(workflow)
        for index in range(3):  # the third fault is one too many
            with contextlib.suppress(RunTimeoutError):
                wf.create_run().start(input_data={"value": f"v{index}"}, timeout=0.5)
        wait_until(lambda: not rt.is_running, what="the runtime stopped itself")

        with pytest.raises(RuntimeStoppedError, match="stopped itself") as caught:
            wf.create_run().start_async(input_data={"value": "after"})

    assert "failed 3 times" in str(caught.value)
    assert any(e["event"] == "actor_gave_up" for e in logs)
    assert not wait_for_no_callboard_threads()


def always_fails(self: Any, message: Any) -> None:
    raise RuntimeError("a handler that always fails")


def test_a_few_faults_spread_out_do_not_spend_the_budget() -> None:
    given_up: list[str] = []
    budget = FaultBudget(given_up.append, max_faults=2, window=60.0)

    for _ in range(2):
        budget.spend("actor", RuntimeError("once"))
    assert given_up == []
    budget.spend("actor", RuntimeError("thrice"))
    budget.spend("actor", RuntimeError("and again"))

    assert len(given_up) == 1 and "failed 3 times" in given_up[0]
