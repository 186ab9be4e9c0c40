"""The README's code runs as written, and it opens with the two commands a new user needs.

Every ```python block of README.md runs, in order, in one namespace, in a fresh
interpreter (so the default runtime and the structlog configuration the README
sets up cannot leak into other tests). A block right after an
``<!-- not-tested -->`` comment is left out. A line ``print(exc)  # message``
promises that message (``...`` stands for anything) on the README's output.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests._support import ROOT

README = ROOT / "README.md"
NOT_TESTED = "<!-- not-tested -->"
TIMEOUT = 60.0

# Runs in a fresh interpreter: reads the blocks as JSON on stdin and executes them
# in one module namespace. Each block is compiled under the README's file name,
# padded so that a traceback points at the README's own line numbers.
RUNNER = textwrap.dedent(
    """
    import json, sys, traceback, types

    blocks = json.load(sys.stdin)
    module = types.ModuleType("readme")
    sys.modules["readme"] = module
    for block in blocks:
        source = "\\n" * (block["line"] - 1) + block["source"]
        try:
            exec(compile(source, block["path"], "exec"), module.__dict__)
        except BaseException as exc:
            print(
                f"README python block {block['number']} (README.md line {block['line']}) "
                f"raised {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            traceback.print_exc()
            sys.exit(1)
    """
)


@dataclass(frozen=True)
class Block:
    number: int  # 1-based, counting only the blocks that run
    line: int  # README line of the block's first line of code
    source: str


def python_blocks(text: str) -> list[Block]:
    """The ```python blocks of a markdown text, without those marked not-tested."""
    blocks: list[Block] = []
    lines = text.splitlines()
    index = 0
    previous = ""  # the last non-blank line before the current one
    while index < len(lines):
        line = lines[index]
        if line.strip() == "```python":
            start = index + 1
            end = start
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            if end == len(lines):
                raise AssertionError(f"README line {index + 1}: a ```python block never closes")
            if previous.strip() != NOT_TESTED:
                source = "\n".join(lines[start:end]) + "\n"
                blocks.append(Block(number=len(blocks) + 1, line=start + 1, source=source))
            index = end + 1
            previous = "```"
            continue
        if line.strip():
            previous = line
        index += 1
    return blocks


def run_python(blocks: list[Block], cwd: Path) -> subprocess.CompletedProcess[str]:
    payload = [
        {"number": block.number, "line": block.line, "source": block.source, "path": str(README)}
        for block in blocks
    ]
    return subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        check=False,
    )


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """The README's python blocks, run once for the whole module."""
    return run_python(python_blocks(README.read_text()), tmp_path_factory.mktemp("readme"))


def test_readme_opens_with_make_demo_and_make_test() -> None:
    head = "\n".join(README.read_text().splitlines()[:15])
    assert "make demo" in head
    assert "make test" in head


def test_readme_says_near_the_top_how_to_install_callboard_and_what_to_import() -> None:
    head = "\n".join(README.read_text().splitlines()[:40])
    assert "pip install /path/to/callboard" in head
    assert "git+" in head
    assert "[postgres,otel,cron]" in head
    assert "from runtime import" in head


def test_every_python_block_in_the_readme_runs_in_order(
    readme_run: subprocess.CompletedProcess[str],
) -> None:
    assert readme_run.returncode == 0, readme_run.stderr


def test_the_readme_prints_the_errors_its_comments_promise(
    readme_run: subprocess.CompletedProcess[str],
) -> None:
    promised = [
        match.group(1).strip()
        for block in python_blocks(README.read_text())
        for match in re.finditer(r"^\s*print\(exc\)\s+#\s*(.+)$", block.source, re.MULTILINE)
    ]
    assert promised, "the README shows no error messages any more: drop or adapt this test"
    printed = readme_run.stdout.splitlines()
    for message in promised:
        pattern = ".*".join(re.escape(part.strip()) for part in message.split("..."))
        assert any(re.fullmatch(pattern, line.strip()) for line in printed), (
            f"the README promises {message!r}, but printed:\n{readme_run.stdout}"
        )


def test_the_readme_has_python_blocks_that_run() -> None:
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 5
    assert all(block.source.strip() for block in blocks)


def test_python_blocks_leaves_out_blocks_marked_not_tested_and_other_languages() -> None:
    text = "\n".join(
        [
            "# title",
            "```sh",
            "make demo",
            "```",
            "```python",
            "a = 1",
            "```",
            NOT_TESTED,
            "",
            "```python",
            "raise SystemExit('skipped')",
            "```",
            "```python",
            "b = a + 1",
            "```",
        ]
    )
    assert python_blocks(text) == [
        Block(number=1, line=6, source="a = 1\n"),
        Block(number=2, line=14, source="b = a + 1\n"),
    ]


def test_a_failing_block_is_reported_with_its_number_and_error(tmp_path: Path) -> None:
    blocks = python_blocks("```python\nx = 1\n```\n\n```python\nassert x == 2, 'x is 1'\n```\n")
    result = run_python(blocks, tmp_path)
    assert result.returncode == 1
    assert "README python block 2 (README.md line 6) raised AssertionError: x is 1" in result.stderr


# The README says callboard is quiet unless the application configures structlog.

QUIET_PROGRAM = textwrap.dedent(
    """
    import structlog
    from pydantic import BaseModel
    from runtime import Runtime, create_step, create_workflow

    class Value(BaseModel):
        value: str

    shout = create_step(id="shout", input_schema=Value, output_schema=Value,
                        execute=lambda ctx: Value(value=ctx.input_data.value.upper()))
    workflow = create_workflow(id="quiet", input_schema=Value, output_schema=Value)
    workflow = workflow.then(shout).commit()

    with Runtime() as rt:
        wf = rt.register(workflow)
        if CAPTURE_FIRST:
            with structlog.testing.capture_logs() as events:
                wf.create_run().start(input_data={"value": "captured"})
            assert any(event["event"] == "span_end" for event in events)
        result = wf.create_run().start(input_data={"value": "quiet"})
        assert result.status == "success"
    """
)


@pytest.mark.parametrize("capture_first", [False, True], ids=["plain", "after_capture_logs"])
def test_a_program_that_configures_no_logging_sees_nothing_from_callboard(
    tmp_path: Path, capture_first: bool
) -> None:
    program = f"CAPTURE_FIRST = {capture_first}\n{QUIET_PROGRAM}"
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == ""


# The spawn example is left out of the run above (it starts interpreters), so it runs
# here as the script it is meant to be: spawned children import the main module again.

SPAWN_MARK = 'multiprocessing.get_context("spawn")'
SPAWN_TIMEOUT = 30.0  # it takes a few seconds; without its main guard it never ends


def _spawn_block(text: str) -> str:
    """The README's python block that uses the spawn start method."""
    blocks = re.findall(r"^```python\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    found = [block for block in blocks if SPAWN_MARK in block]
    assert len(found) == 1, f"expected one README block with {SPAWN_MARK}, found {len(found)}"
    return str(found[0])


def test_the_readme_spawn_example_runs_as_a_script(tmp_path: Path) -> None:
    # What the example uses: the blocks up to the one that defines `words`.
    blocks = python_blocks(README.read_text())
    defining = next(i for i, block in enumerate(blocks) if block.source.startswith("words = ("))
    tour = blocks[: defining + 1]
    script = "\n".join(
        [
            *(block.source for block in tour),
            "from runtime import Runtime",
            _spawn_block(README.read_text()),
            "if __name__ == '__main__':",
            "    print(sorted(str(status) for status in statuses))",
        ]
    )
    (tmp_path / "spawned.py").write_text(script)
    process = subprocess.Popen(
        [sys.executable, "spawned.py"],
        cwd=tmp_path,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so that a pool that respawns its children can be ended whole
    )
    try:
        stdout, stderr = process.communicate(timeout=SPAWN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        said = [line.strip() for line in stderr.splitlines() if "bootstrapping phase" in line]
        pytest.fail(f"the spawn example did not end within {SPAWN_TIMEOUT} s: {said[:1]}")
    assert process.returncode == 0, stderr[-3000:]
    assert stdout.splitlines()[-1] == "['success', 'success']"
    assert "bootstrapping phase" not in stderr
