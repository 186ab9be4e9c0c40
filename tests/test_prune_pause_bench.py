"""``benchmarks/prune_pause.py`` runs, and prints what a retention pass costs the saves beside."""

from __future__ import annotations

from tests._support import ROOT, quick_script_stdout

PRUNE_PAUSE = ROOT / "benchmarks" / "prune_pause.py"


def test_a_quick_run_prints_each_pass_beside_the_floor_of_saves() -> None:
    printed = quick_script_stdout(
        PRUNE_PAUSE, "--store", "memory", "sqlite", "--kept", "2000", "--doomed", "500"
    )
    for store in ("memory", "sqlite"):
        rows = [
            [cell.strip() for cell in line.split("|")]
            for line in printed.splitlines()
            if line.startswith(store) and "in all" not in line
        ]
        assert [row[1] for row in rows] == [
            "floor: saves, no pass",
            "nothing to delete: max_runs",
            "nothing to delete: max_age",
            "delete 500: max_runs",
            "the 0.5 s after it",
            "delete 500: max_age",
            "the 0.5 s after it",
        ], printed
        assert [row[3] for row in rows] == ["-", "0", "0", "500", "-", "500", "-"], printed
        assert rows[0][10] == "1.0x", printed  # the floor beside itself
