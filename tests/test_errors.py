"""The error tree, the context errors carry, and no pykka exception reaching a user."""

from __future__ import annotations

import contextlib
import copy
import inspect
import pickle
import threading
import time
from collections.abc import Iterator
from typing import Any

import pykka
import pytest
import structlog
from structlog.testing import capture_logs

import runtime
from runtime import (
    BlockingCallError,
    CancelError,
    InvalidInputError,
    LoopLimitError,
    NonRetryableError,
    QueueFullError,
    QueueKeyError,
    ResumeConflictError,
    ResumeTargetError,
    RoleError,
    RunAlreadyStartedError,
    RunCrashedError,
    RunDeadlineError,
    RunDeletedError,
    RunInProgressError,
    RunNotRestartableError,
    RunNotStartedError,
    RunNotSuspendedError,
    Runtime,
    RunTimeoutError,
    RuntimeOverloadedError,
    RuntimeStoppedError,
    SnapshotEncodingError,
    SnapshotFormatError,
    StepTimeoutError,
    StepValidationError,
    StoreError,
    StoreUnavailableError,
    UnboundWorkflowError,
    WorkflowDefinitionError,
    WorkflowError,
    WorkflowResult,
    WorkflowVersionError,
    create_step,
    create_workflow,
)
from tests._support import Value, actor_system, callboard_threads

WAIT = 10.0

ERRORS = [
    BlockingCallError,
    CancelError,
    WorkflowVersionError,
    LoopLimitError,
    NonRetryableError,
    QueueFullError,
    QueueKeyError,
    ResumeConflictError,
    ResumeTargetError,
    RoleError,
    RunNotRestartableError,
    RunNotSuspendedError,
    StepTimeoutError,
    RunDeadlineError,
    InvalidInputError,
    RunAlreadyStartedError,
    RunCrashedError,
    RunDeletedError,
    RunInProgressError,
    RunNotStartedError,
    RunTimeoutError,
    RuntimeOverloadedError,
    RuntimeStoppedError,
    SnapshotEncodingError,
    SnapshotFormatError,
    StepValidationError,
    StoreError,
    StoreUnavailableError,
    UnboundWorkflowError,
    WorkflowDefinitionError,
]


def test_every_exported_exception_is_listed_here() -> None:
    exported = {
        obj
        for name in runtime.__all__
        if isinstance(obj := getattr(runtime, name), type) and issubclass(obj, BaseException)
    }

    assert exported == {*ERRORS, WorkflowError}


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: e.__name__)
def test_every_error_is_a_workflow_error_named_error(error: type[Exception]) -> None:
    assert issubclass(error, WorkflowError)
    assert error.__name__.endswith("Error")
    assert error.__doc__


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (BlockingCallError, RuntimeError),
        (InvalidInputError, ValueError),
        (WorkflowDefinitionError, ValueError),
        (StepValidationError, ValueError),
        (SnapshotFormatError, ValueError),
        (SnapshotEncodingError, TypeError),
        (RunTimeoutError, TimeoutError),
        (RunDeletedError, LookupError),
        (QueueKeyError, ValueError),
        (StoreUnavailableError, StoreError),
    ],
    ids=lambda e: e.__name__,
)
def test_errors_are_also_the_builtin_error_they_resemble(
    error: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(error, builtin)


@pytest.mark.parametrize(
    "error",
    [
        RunAlreadyStartedError,
        RunNotStartedError,
        RunCrashedError,
        RuntimeStoppedError,
        RuntimeOverloadedError,
    ],
)
def test_run_state_errors_are_not_value_errors(error: type[Exception]) -> None:
    assert not issubclass(error, ValueError | TypeError)


def test_a_workflow_error_carries_its_run_id_and_step_id() -> None:
    error = StepValidationError("bad output", run_id="run-1", step_id="shout")

    assert (error.run_id, error.step_id, str(error)) == ("run-1", "shout", "bad output")
    assert (WorkflowError("plain").run_id, WorkflowError("plain").step_id) == (None, None)


def test_invalid_input_error_carries_the_field_and_pydantics_errors() -> None:
    errors = [{"type": "missing", "loc": ("value",), "msg": "Field required"}]
    error = InvalidInputError("bad", field="input_data", errors=errors, run_id="r")

    assert (error.field, error.errors, error.run_id) == ("input_data", errors, "r")


def test_snapshot_encoding_error_carries_the_path_and_the_type() -> None:
    error = SnapshotEncodingError("no", path="state['x']", type_name="set", run_id="r", step_id="s")

    assert (error.path, error.type_name, error.run_id, error.step_id) == (
        "state['x']",
        "set",
        "r",
        "s",
    )


# --- errors raised by the API carry the run they are about ------------------------------


def _blocking_workflow(release: threading.Event, entered: threading.Event) -> Any:
    def slow(ctx: Any) -> Value:
        entered.set()
        release.wait(WAIT)
        return ctx.input_data

    return (
        create_workflow(id="errors-slow", input_schema=Value, output_schema=Value)
        .then(create_step(id="slow", input_schema=Value, output_schema=Value, execute=slow))
        .commit()
    )


def test_api_errors_carry_the_run_id(runtime: Runtime) -> None:
    release, entered = threading.Event(), threading.Event()
    wf = runtime.register(_blocking_workflow(release, entered))
    run = wf.create_run("the-run")

    with pytest.raises(RunNotStartedError) as not_started:
        run.wait(0)
    with pytest.raises(InvalidInputError) as invalid:
        run.start_async(input_data={"value": 1})
    try:
        run.start_async(input_data={"value": "ok"})
        with pytest.raises(RunAlreadyStartedError) as twice:
            run.start_async(input_data={"value": "ok"})
        with pytest.raises(RunAlreadyStartedError) as taken:
            wf.create_run("the-run").start_async(input_data={"value": "ok"})
        with pytest.raises(RunTimeoutError) as timed_out:
            run.wait(0.01)
    finally:
        release.set()

    for caught in (not_started, invalid, twice, taken, timed_out):
        assert caught.value.run_id == "the-run"
    assert invalid.value.field == "input_data"
    assert run.wait(WAIT).status == "success"


# --- no pykka exception reaches a user ----------------------------------------------------


def _force_shutdown(rt: Runtime) -> None:
    """Stop whatever of the machinery is left, so that a failing test leaks no thread."""
    machinery = rt._host.system
    if machinery is None:
        return
    for ref in (machinery.supervisor, machinery.registry):
        if ref.is_alive():
            ref.stop(timeout=WAIT)
    machinery.pool.stop()
    machinery.loop.stop(WAIT)
    machinery.dispatcher.stop(WAIT)


@pytest.fixture
def broken_runtime() -> Iterator[Runtime]:
    rt = Runtime().start()
    try:
        # Crashing actors log their tracebacks; capture them instead of printing.
        with capture_logs():
            yield rt
    finally:
        rt._host.state = "stopped"
        _force_shutdown(rt)
        structlog.reset_defaults()
    deadline = time.monotonic() + 5
    while callboard_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not callboard_threads()


def _quick_workflow() -> Any:
    return (
        create_workflow(id="errors-quick", input_schema=Value, output_schema=Value)
        .then(
            create_step(
                id="same", input_schema=Value, output_schema=Value, execute=lambda c: c.input_data
            )
        )
        .commit()
    )


def test_a_dead_supervisor_makes_start_async_raise_runtime_stopped_and_records_the_run_failed(
    broken_runtime: Runtime,
) -> None:
    wf = broken_runtime.register(_quick_workflow())
    actor_system(broken_runtime).supervisor.stop(timeout=WAIT)
    run = wf.create_run()

    with pytest.raises(RuntimeStoppedError) as caught:
        run.start_async(input_data={"value": "x"})

    assert not isinstance(caught.value, pykka.ActorDeadError)
    assert isinstance(caught.value.__cause__, pykka.ActorDeadError)  # chained, not hidden
    result = wf.get_workflow_run_execution_result(run.run_id)
    assert result is not None
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "RuntimeStoppedError"


def test_stopping_a_runtime_whose_supervisor_died_raises_no_pykka_error(
    broken_runtime: Runtime,
) -> None:
    actor_system(broken_runtime).supervisor.stop(timeout=WAIT)

    try:
        broken_runtime.stop(timeout=1)
    except pykka.ActorDeadError as exc:
        pytest.fail(f"a pykka error reached the user from Runtime.stop(): {exc!r}")
    assert not broken_runtime.is_running
    # Everything else the runtime started is stopped all the same.
    deadline = time.monotonic() + 5
    while callboard_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not [thread.name for thread in callboard_threads()]


def _wait_outcome(run: Any) -> Any:
    try:
        return run.wait(WAIT)
    except pykka.ActorDeadError as exc:
        pytest.fail(f"a pykka error reached the user from Run.wait(): {exc!r}")
    except WorkflowError as exc:
        return exc


def test_waiting_while_the_registry_is_dead_returns_or_raises_a_callboard_error(
    broken_runtime: Runtime,
) -> None:
    release, entered = threading.Event(), threading.Event()
    wf = broken_runtime.register(_blocking_workflow(release, entered))
    try:
        run = wf.create_run()
        run.start_async(input_data={"value": "x"})
        assert entered.wait(WAIT)
        actor_system(broken_runtime).registry.stop(timeout=WAIT)

        outcome = _wait_outcome(run)
    finally:
        release.set()

    assert isinstance(outcome, WorkflowResult | WorkflowError)


def test_a_waiter_blocked_when_the_registry_dies_is_woken(broken_runtime: Runtime) -> None:
    release, entered = threading.Event(), threading.Event()
    wf = broken_runtime.register(_blocking_workflow(release, entered))
    outcomes: list[Any] = []
    try:
        run = wf.create_run()
        run.start_async(input_data={"value": "x"})
        assert entered.wait(WAIT)
        waiter = threading.Thread(target=lambda: outcomes.append(_wait_outcome(run)))
        waiter.start()
        actor_system(broken_runtime).registry.stop(timeout=WAIT)
        waiter.join(WAIT)
    finally:
        release.set()

    assert not waiter.is_alive()
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], WorkflowResult | WorkflowError)


def test_a_run_whose_registry_died_is_not_left_pending_once_the_runtime_stops(
    broken_runtime: Runtime,
) -> None:
    wf = broken_runtime.register(_quick_workflow())
    actor_system(broken_runtime).registry.stop(timeout=WAIT)
    run = wf.create_run()

    with contextlib.suppress(RuntimeStoppedError):  # refusing the start is fine too
        run.start_async(input_data={"value": "x"})
    try:
        broken_runtime.stop(timeout=1)
    except pykka.ActorDeadError as exc:
        pytest.fail(f"a pykka error reached the user from Runtime.stop(): {exc!r}")

    result = wf.get_workflow_run_execution_result(run.run_id)
    assert result is None or result.status == "failed"


def _an_instance(error: type[Exception]) -> Exception:
    """An instance made with a value for every argument its constructor requires."""
    parameters = list(inspect.signature(error.__init__).parameters.values())[1:]
    positional = [
        f"{error.__name__} happened"
        for p in parameters
        if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    keywords: dict[str, Any] = {
        p.name: [{"type": "missing", "loc": ("x",), "msg": "Field required"}]
        if p.name == "errors"
        else f"the {p.name}"
        for p in parameters
        if p.default is p.empty and p.kind is p.KEYWORD_ONLY
    }
    if "run_id" in {p.name for p in parameters}:
        keywords.setdefault("run_id", "run-7")
    return error(*positional, **keywords)


@pytest.mark.parametrize("error", [*ERRORS, WorkflowError], ids=lambda e: e.__name__)
def test_every_error_survives_pickling_and_copying_with_its_attributes(
    error: type[Exception],
) -> None:
    # A process pool or a task queue pickles an exception to send it back. Before, the
    # errors with keyword-only arguments did not load: "missing 2 required keyword-only
    # arguments: 'field' and 'errors'".
    original = _an_instance(error)

    for copied in (pickle.loads(pickle.dumps(original)), copy.copy(original)):
        assert type(copied) is error
        assert copied.args == original.args and str(copied) == str(original)
        assert vars(copied) == vars(original)
