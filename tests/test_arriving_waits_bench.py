"""``benchmarks/arriving_waits.py`` runs, and prints a row per count of waits."""

from __future__ import annotations

from tests._support import ROOT, quick_script_stdout

ARRIVING = ROOT / "benchmarks" / "arriving_waits.py"


def test_a_quick_run_prints_the_floor_and_a_burst() -> None:
    printed = quick_script_stdout(ARRIVING, "--store", "memory")
    rows = [line.split() for line in printed.splitlines()[2:]]
    assert [row[0] for row in rows] == ["0", "200"], printed
    assert all(float(row[2]) > 0 for row in rows), printed
