"""Three scenarios of ``make chaos``, small and seeded: a soak of failing steps, flipped bits,
and a fleet of workers on PostgreSQL killed, stopped and cut off.

``benchmarks/chaos.py`` runs them at full size and prints their figures; here
the same code runs a few hundred runs with a fixed seed, and every figure that
has a bound must meet it. They fail if a step's ``SystemExit`` escaped its
actor, a retry were miscounted, a snapshot's checksum went unchecked, or a
worker on PostgreSQL lost a run, re-ran a completed step, or wrote after it
was fenced off.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from runtime import Runtime, SnapshotFormatError
from tests._support import ROOT, script_module, wait_for_no_callboard_threads

CHAOS = ROOT / "benchmarks" / "chaos.py"
SEED = 20_240_601


@pytest.fixture(scope="module")
def chaos() -> Iterator[ModuleType]:
    """benchmarks/chaos.py imported as a module (benchmarks/ is not a package on the path)."""
    with script_module(CHAOS, "callboard_chaos") as module:
        yield module


def failed_rows(rows: list[Any]) -> list[Any]:
    return [row for row in rows if row.ok is False]


def figure(rows: list[Any], measure: str) -> str:
    found = [row.value for row in rows if row.measure == measure]
    assert len(found) == 1, f"no single row {measure!r}"
    return str(found[0])


def test_a_seeded_soak_of_300_runs_ends_every_run_as_its_input_asked(chaos: ModuleType) -> None:
    rows = chaos.soak(300, SEED)

    assert failed_rows(rows) == []
    outcomes = {row.measure.strip() for row in rows if row.measure.startswith("  expected")}
    for error in ("SystemExit", "KeyboardInterrupt", "NonRetryableError", "SnapshotEncodingError"):
        assert f"expected to end failed, {error}" in outcomes, "the soak never tried it"
    assert figure(rows, "status mismatches") == "0"


def test_a_seeded_soak_on_a_sqlite_file_ends_every_run_as_its_input_asked(
    chaos: ModuleType, tmp_path: Path
) -> None:
    rows = chaos.soak(100, SEED + 1, tmp_path / "soak.db", label="sqlite")

    assert failed_rows(rows) == []


def test_the_soak_expects_retries_to_stop_at_a_non_retryable_error(chaos: ModuleType) -> None:
    plan = chaos.Plan(
        tag=0, attempts=[["error", "nonretryable", "ok"], ["ok", "ok"], ["ok"], ["ok"]]
    )

    expected = chaos.expected_outcome(plan)

    assert (expected.status, expected.error, expected.failed_at) == (
        "failed",
        "NonRetryableError",
        "s1",
    )
    assert expected.attempts == {"s1": 2}


def test_bits_flipped_in_stored_snapshots_are_refused_and_never_misread(
    chaos: ModuleType, tmp_path: Path
) -> None:
    rows = chaos.bit_flips(50, SEED, tmp_path, 6, probe_hangs=False)

    assert failed_rows(rows) == []
    damaged = int(figure(rows, "rows damaged (1 or 2 bits flipped)"))
    assert damaged == 25 + 3
    for path in ("by id", "by id, fields", "list", "RunReader"):
        assert figure(rows, f"damaged rows flagged / read back unchanged: {path}") == (
            f"{damaged} / 0"
        )
    assert figure(rows, "intact unfinished runs finished by recovery") == "3"
    assert not wait_for_no_callboard_threads()


def _damaged_run(chaos: ModuleType, db: Path, *, finished: bool) -> tuple[Any, str]:
    """A workflow and the id of one run of it on ``db`` whose snapshot has a flipped bit."""
    gate = threading.Event()
    workflow = chaos.flip_workflow(gate)
    with Runtime(store=db, stop_timeout=0) as rt:
        wf = rt.register(workflow)
        if finished:
            wf.create_run("damaged").start(input_data={"text": "x"}, timeout=10)
        else:
            wf.create_run("damaged").start_async(input_data={"text": chaos.HOLD + "x"})
            chaos.wait_until_held(wf, ["damaged"], timeout=10)
    gate.set()
    chaos.flip_bits(db, ["damaged"], random.Random(SEED))
    return workflow, "damaged"


def test_waiting_for_a_damaged_unfinished_run_returns_it_failed_instead_of_blocking(
    chaos: ModuleType, tmp_path: Path
) -> None:
    workflow, run_id = _damaged_run(chaos, tmp_path / "runs.db", finished=False)
    with Runtime(store=tmp_path / "runs.db") as rt:
        wf = rt.register(workflow)
        # Recovery cannot resume it: it records it failed, naming why, and wakes the waiter.
        result = wf.create_run(run_id).wait(timeout=10)
    assert result.status == "failed"
    assert result.error is not None and result.error.name == "SnapshotFormatError"


def test_watching_a_damaged_finished_run_raises_instead_of_blocking(
    chaos: ModuleType, tmp_path: Path
) -> None:
    workflow, run_id = _damaged_run(chaos, tmp_path / "runs.db", finished=True)
    with Runtime(store=tmp_path / "runs.db") as rt:
        wf = rt.register(workflow)
        with pytest.raises(SnapshotFormatError):
            list(wf.create_run(run_id).watch(timeout=0.5))


@pytest.mark.postgres
def test_a_seeded_fleet_on_postgresql_under_kills_stops_and_cuts_loses_nothing(
    chaos: ModuleType, postgres_server: Any, tmp_path: Path
) -> None:
    sizes = dataclasses.replace(chaos.QUICK, fleet_runs=150, fleet_seconds=10.0, fleet_restarts=1)

    rows = chaos.fleet(sizes, SEED, tmp_path, server=postgres_server)

    assert failed_rows(rows) == [], rows
    assert figure(rows, "lost runs (acknowledged, not in the store)") == "0"
    assert figure(rows, "completed steps re-run") == "0"
    assert figure(rows, "runs acknowledged by the client's start_async") == "150"
    if postgres_server.restartable:
        assert figure(rows, "server restarts") == "1"
    assert not wait_for_no_callboard_threads()
