"""``benchmarks/waiting.py`` measures what waiting on runs driven elsewhere costs, and runs."""

from __future__ import annotations

from tests._support import ROOT, quick_script_stdout

WAITING = ROOT / "benchmarks" / "waiting.py"


def test_a_quick_run_prints_the_cost_of_waiting_beside_its_floor() -> None:
    printed = quick_script_stdout(WAITING, "--store", "sqlite")
    rows = [line.split("|") for line in printed.splitlines() if line.startswith("sqlite")]
    assert len(rows) == 1, printed
    store, runs, waiting, floor, _ratio, records = (cell.strip() for cell in rows[0])
    assert (store, runs) == ("sqlite", "200")
    for share in (waiting, floor, records):
        assert share.endswith("%"), printed
        float(share.rstrip("%"))
