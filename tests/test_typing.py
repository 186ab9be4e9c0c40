"""The public API's annotations, checked by running mypy on tests/typing_cases/.

Each line of a case marked ``# reveals: T`` must make mypy reveal ``T`` (with
module prefixes dropped), each marked ``# error: code`` must be an error of
that code, and no other line may be an error: a regression in the annotations
(an ``Any`` where a model was, a generic parameter lost) fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests._support import ROOT

CASES = sorted((ROOT / "tests" / "typing_cases").glob("*.py"))

_MARK = re.compile(r"#\s*(reveals|error):\s*(.+?)\s*$")
_NOTE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<kind>note|error): (?P<text>.*)$")
_REVEALED = re.compile(r'^Revealed type is "(.*)"$')
_CODE = re.compile(r"\[([a-z-]+)\]$")
_MODULES = re.compile(r"\b(?:[a-z_][a-z0-9_]*\.)+(?=[A-Z])")


def _expected(case: Path) -> dict[int, tuple[str, str]]:
    marks: dict[int, tuple[str, str]] = {}
    for number, line in enumerate(case.read_text().splitlines(), start=1):
        match = _MARK.search(line)
        if match:
            marks[number] = (match.group(1), match.group(2))
    return marks


def _found(output: str, case: Path) -> dict[int, tuple[str, str]]:
    found: dict[int, tuple[str, str]] = {}
    for raw in output.splitlines():
        match = _NOTE.match(raw)
        if match is None or Path(match["file"]).name != case.name:
            continue
        line, text = int(match["line"]), match["text"]
        revealed = _REVEALED.match(text)
        if match["kind"] == "note" and revealed:
            found[line] = ("reveals", _MODULES.sub("", revealed.group(1)))
        elif match["kind"] == "error":
            code = _CODE.search(text)
            found[line] = ("error", code.group(1) if code else text)
    return found


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", CASES, ids=[case.stem for case in CASES])
def test_mypy_sees_the_types_each_case_expects(case: Path) -> None:
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            # The project's own cache, which ``make typecheck`` fills before the tests run:
            # mypy rechecks whatever changed since (sources and options are hashed), so the
            # answer is the same as from scratch, in a second instead of ten.
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "--config-file",
            str(ROOT / "pyproject.toml"),
            str(case.relative_to(ROOT)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert "Found" in checked.stdout or "Success" in checked.stdout, checked.stdout + checked.stderr
    assert _found(checked.stdout, case) == _expected(case), checked.stdout


def test_the_cases_expect_something() -> None:
    assert CASES
    for case in CASES:
        marks = _expected(case).values()
        assert any(kind == "reveals" for kind, _ in marks), case
        assert any(kind == "error" for kind, _ in marks), case


_DURATIONS = """
from datetime import timedelta

from runtime import RetentionPolicy, RetryConfig

RetryConfig(delay=timedelta(milliseconds=10), max_delay=timedelta(seconds=1))
RetentionPolicy(max_age=timedelta(days=7), interval=timedelta(minutes=5))
RetryConfig(attempts=2, delay=0.5)
RetryConfig(delay="soon")  # error
"""


@pytest.mark.timeout(300)
def test_durations_take_a_timedelta_for_a_checker_without_pydantics_plugin(
    tmp_path: Path,
) -> None:
    # The README promises seconds or a timedelta; without the pydantic plugin (most
    # users' set-up) mypy saw the fields' own type, float, and refused the timedelta.
    case = tmp_path / "durations.py"
    case.write_text(_DURATIONS)
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(case)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MYPYPATH": str(ROOT)},
    )
    errors = [line for line in checked.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and "durations.py:9:" in errors[0], checked.stdout
