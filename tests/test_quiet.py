"""Quiet by default: nothing on stdout or stderr unless the application configures logging."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import structlog

from runtime import Runtime, create_step, create_workflow
from runtime._tracing import emit
from tests._support import ROOT

PROGRAM = """
from pydantic import BaseModel
from runtime import Runtime, TracingOptions, create_step, create_workflow

class Value(BaseModel):
    value: str

def shout(ctx):
    ctx.logger.debug("shouting")  # the application's logger: quiet only if unconfigured
    return Value(value=ctx.input_data.value.upper())

step = create_step(id="shout", input_schema=Value, output_schema=Value, execute=shout)
flow = create_workflow(id="quiet", input_schema=Value, output_schema=Value).then(step).commit()

with Runtime() as rt:
    wf = rt.register(flow)
    for n in range(3):
        result = wf.create_run().start(
            input_data={"value": f"run {n}"},
            tracing_options=TracingOptions(metadata={"n": n}),
            timeout=10,
        )
        assert result.status == "success", result
# The default runtime too, stopped at exit.
assert flow.create_run().start(input_data={"value": "default"}, timeout=10).status == "success"
"""


def _run(program: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(program)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_program_that_configures_no_logging_sees_nothing_while_runs_succeed() -> None:
    done = _run(PROGRAM.replace('ctx.logger.debug("shouting")', "pass"))

    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == ""


def test_a_program_that_configures_structlog_receives_the_span_events() -> None:
    configure = """
    import structlog
    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer(key_order=["event", "name"])],
    )
    """
    done = _run(textwrap.dedent(configure) + PROGRAM)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    root_ends = [line for line in lines if line.startswith("event='span_end' name='workflow_run'")]
    step_starts = [
        line for line in lines if line.startswith("event='span_start' name='workflow_step'")
    ]
    assert len(root_ends) == 4
    assert len(step_starts) == 4
    assert sum("event='shouting'" in line for line in lines) == 4
    assert "metadata={'n': 2}" in done.stdout


@pytest.fixture
def unconfigured_structlog() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def test_runs_in_this_process_print_nothing_while_structlog_is_unconfigured(
    unconfigured_structlog: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from pydantic import BaseModel

    class Value(BaseModel):
        value: str

    flow = (
        create_workflow(id="quiet-here", input_schema=Value, output_schema=Value)
        .then(
            create_step(
                id="same", input_schema=Value, output_schema=Value, execute=lambda c: c.input_data
            )
        )
        .commit()
    )
    with Runtime() as rt:
        wf = rt.register(flow)
        results = [wf.create_run().start(input_data={"value": "x"}, timeout=10) for _ in range(3)]

    assert [r.status for r in results] == ["success"] * 3
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "")


def test_in_quiet_mode_a_warning_goes_to_stderr_never_to_stdout() -> None:
    script = (
        "import logging\n"
        "from runtime._tracing import emit\n"
        "emit(logging.WARNING, 'store_locked', path='x.db')\n"
        "emit(logging.INFO, 'span_start', name='dropped')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == ""
    assert "store_locked" in done.stderr
    assert "dropped" not in done.stderr


def test_with_standard_logging_set_up_warnings_and_errors_go_through_it() -> None:
    # A daemon that set up only the standard library's logging (no structlog): before,
    # callboard's errors bypassed its handlers and went to stderr.
    script = """
import logging, sys
logging.basicConfig(stream=sys.stdout, format="%(name)s|%(levelname)s|%(message)s")
from pydantic import BaseModel
from runtime import Runtime, create_step, create_workflow
from runtime._tracing import emit

class Value(BaseModel):
    value: str

def broken_hook(outcome):
    raise RuntimeError("the hook broke")

def same(ctx):
    return ctx.input_data

step = create_step(id="same", input_schema=Value, output_schema=Value, execute=same)
flow = (
    create_workflow(id="hooked", input_schema=Value, output_schema=Value, on_finish=broken_hook)
    .then(step)
    .commit()
)
emit(logging.WARNING, "store_locked", path="x.db")
emit(logging.INFO, "span_start", name="dropped")
with Runtime() as rt:
    result = rt.register(flow).create_run().start(input_data={"value": "x"}, timeout=10)
    assert result.status == "success"
"""
    done = _run(script)

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert "callboard|WARNING|store_locked path='x.db'" in lines
    assert "dropped" not in done.stdout and "span_start" not in done.stdout
    [hook] = [line for line in lines if "workflow_hook_failed" in line]
    assert hook.startswith("callboard|ERROR|workflow_hook_failed hook='on_finish' run_id=")
    assert "RuntimeError: the hook broke" in done.stdout  # the traceback, as exc_info


def test_a_logging_record_carries_the_event_and_its_fields_and_levels_apply(
    unconfigured_structlog: None,
) -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    callboard_logger = logging.getLogger("callboard")
    callboard_logger.addHandler(handler)
    try:
        emit(logging.WARNING, "store_locked", path="x.db", waiting=3)
        callboard_logger.setLevel(logging.ERROR)  # the application's choice holds
        emit(logging.WARNING, "store_locked", path="y.db", waiting=1)
    finally:
        callboard_logger.removeHandler(handler)
        callboard_logger.setLevel(logging.NOTSET)

    [record] = records
    assert record.levelno == logging.WARNING and record.name == "callboard"
    assert record.getMessage() == "store_locked path='x.db' waiting=3"
    assert record.callboard_event == "store_locked"  # type: ignore[attr-defined]
    assert record.callboard_fields == {"path": "x.db", "waiting": 3}  # type: ignore[attr-defined]
