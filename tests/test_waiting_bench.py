"""``benchmarks/waiting.py`` measures what waiting on runs driven elsewhere costs, and runs."""

from __future__ import annotations

import subprocess
import sys

from tests._support import ROOT

WAITING = ROOT / "benchmarks" / "waiting.py"


def test_a_quick_run_prints_the_cost_of_waiting_beside_its_floor() -> None:
    done = subprocess.run(
        [sys.executable, str(WAITING), "--quick", "--store", "sqlite"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith("sqlite")]
    assert len(rows) == 1, done.stdout
    store, runs, waiting, floor, _ratio, records = (cell.strip() for cell in rows[0])
    assert (store, runs) == ("sqlite", "200")
    for share in (waiting, floor, records):
        assert share.endswith("%"), done.stdout
        float(share.rstrip("%"))
