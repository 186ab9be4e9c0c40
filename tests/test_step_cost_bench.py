"""``benchmarks/step_cost.py`` still drives a step actor as the runtime does.

The script calls a step actor's handler directly, with a stand-in for its pool; a
pool attribute the actor comes to read that the stand-in lacks broke every mode of
the script once, unnoticed.
"""

from __future__ import annotations

from tests._support import ROOT, quick_script_stdout

STEP_COST = ROOT / "benchmarks" / "step_cost.py"


def test_a_quick_run_prints_a_row_per_mode() -> None:
    printed = quick_script_stdout(STEP_COST)
    rows = [line.split("|") for line in printed.splitlines() if line.count("|") == 4]
    modes = {row[0].strip(): row for row in rows if row[0].strip() != "mode"}
    assert {"quiet", "logged", "otel"} <= set(modes)
    for row in modes.values():
        # CPU per step, then the Python calls per step: both measured, so above zero.
        assert float(row[1].split()[0]) > 0
        assert float(row[2]) > 0
