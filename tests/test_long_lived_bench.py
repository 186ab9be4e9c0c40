"""``benchmarks/long_lived.py`` runs, and prints a row per scenario and store."""

from __future__ import annotations

from typing import Any

import pytest

from tests._support import ROOT, quick_script_stdout

LONG_LIVED = ROOT / "benchmarks" / "long_lived.py"


def test_a_quick_run_prints_a_row_per_scenario_and_store() -> None:
    scenarios = ["ends", "watches-dropped", "let-go-waiting", "runtimes"]
    printed = quick_script_stdout(LONG_LIVED, "--store", "memory", "--only", *scenarios)
    rows = [
        [cell.strip() for cell in line.split("|")]
        for line in printed.splitlines()
        if line.count("|") >= 10 and not line.startswith("scenario")
    ]
    assert [(row[0], row[1], row[2]) for row in rows] == [
        (scenario, "memory", "40") for scenario in scenarios
    ], printed
    # A runtime started and stopped leaves no thread and no file open.
    runtimes = rows[-1]
    assert (runtimes[4], runtimes[5]) == ("+0", "+0"), printed


@pytest.mark.postgres
def test_a_quick_run_on_postgresql_prints_its_rows(postgres_server: Any) -> None:
    # The script starts a throwaway cluster of its own, as the fixture's shows it can.
    printed = quick_script_stdout(LONG_LIVED, "--store", "postgresql", "--only", "ends", "restarts")
    rows = [
        [cell.strip() for cell in line.split("|")]
        for line in printed.splitlines()
        if line.count("|") >= 10 and not line.startswith("scenario")
    ]
    assert [(row[0], row[1]) for row in rows] == [
        ("ends", "postgresql"),
        ("restarts", "postgresql"),
    ], printed
    assert all(row[4] == "+0" for row in rows), printed  # no thread left behind
