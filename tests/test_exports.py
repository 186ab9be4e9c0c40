"""The public names of ``runtime``, pinned so that none appears or vanishes by accident."""

from __future__ import annotations

import importlib.metadata
import inspect
import subprocess
import sys
import typing
from typing import Any

import pytest

import runtime

EXPORTED = [
    "AbortSignal",
    "BlockingCallError",
    "CancelError",
    "ErrorInfo",
    "InvalidInputError",
    "LoopLimitError",
    "MemoryStore",
    "NonRetryableError",
    "OutputOptions",
    "PostgresStore",
    "Queue",
    "QueueFullError",
    "QueueKeyError",
    "RequestContext",
    "ResumeConflictError",
    "ResumeTargetError",
    "RetentionPolicy",
    "RetryConfig",
    "RoleError",
    "Run",
    "RunAlreadyStartedError",
    "RunCrashedError",
    "RunDeadlineError",
    "RunDeletedError",
    "RunEvent",
    "RunFinishEvent",
    "RunInProgressError",
    "RunNotRestartableError",
    "RunNotStartedError",
    "RunNotSuspendedError",
    "RunOrigin",
    "RunOutcome",
    "RunReader",
    "RunStartEvent",
    "RunStatus",
    "RunStream",
    "RunStreamEvent",
    "RunTimeoutError",
    "RunWatch",
    "Runtime",
    "RuntimeHealth",
    "RuntimeOverloadedError",
    "RuntimeStoppedError",
    "SQLiteStore",
    "Schedule",
    "ScheduleInfo",
    "ScheduledRun",
    "SnapshotEncodingError",
    "SnapshotFormatError",
    "SnapshotRecord",
    "SnapshotStore",
    "StartAsyncResult",
    "Step",
    "StepContext",
    "StepFinishEvent",
    "StepOutputEvent",
    "StepResult",
    "StepStartEvent",
    "StepStatus",
    "StepSuspendedEvent",
    "StepTimeoutError",
    "StepValidationError",
    "StepWaitingEvent",
    "StepWriter",
    "StoreBackup",
    "StoreError",
    "StoreUnavailableError",
    "StreamEvent",
    "TracingOptions",
    "UnboundWorkflowError",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowError",
    "WorkflowResult",
    "WorkflowRunList",
    "WorkflowVersionError",
    "__version__",
    "create_step",
    "create_workflow",
    "default_runtime",
]


def test_all_is_exactly_the_pinned_list() -> None:
    assert runtime.__all__ == EXPORTED


def test_all_is_sorted() -> None:
    assert runtime.__all__ == sorted(runtime.__all__)


def test_all_has_no_duplicates() -> None:
    assert len(set(runtime.__all__)) == len(runtime.__all__)


@pytest.mark.parametrize("name", EXPORTED)
def test_every_exported_name_is_importable(name: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"from runtime import {name}", namespace)

    assert namespace[name] is getattr(runtime, name)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, Any] = {}
    exec("from runtime import *", namespace)

    assert sorted(set(namespace) - {"__builtins__"}) == sorted(EXPORTED)


def test_the_version_is_a_string() -> None:
    assert isinstance(runtime.__version__, str) and runtime.__version__


def _public_objects() -> list[tuple[str, Any]]:
    found = []
    for name in EXPORTED:
        obj = getattr(runtime, name)
        if typing.get_origin(obj) is not None:
            continue  # a type alias (RunStreamEvent): documented where it is defined
        if not (inspect.isclass(obj) or callable(obj)):
            continue
        found.append((name, obj))
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                value = (
                    member.__func__ if isinstance(member, staticmethod | classmethod) else member
                )
                if inspect.isfunction(value) or isinstance(value, property):
                    found.append((f"{name}.{attr}", value))
    return found


@pytest.mark.parametrize(("name", "obj"), _public_objects(), ids=[n for n, _ in _public_objects()])
def test_every_public_class_function_and_method_has_a_docstring(name: str, obj: Any) -> None:
    doc = obj.__doc__
    assert doc and doc.strip(), f"{name} has no docstring"


def test_public_objects_live_in_the_runtime_package() -> None:
    for name, obj in _public_objects():
        if "." in name:
            continue
        assert obj.__module__.split(".")[0] == "runtime", name


def test_importing_runtime_leaves_no_public_looking_name_outside_all() -> None:
    # In a fresh interpreter, so that modules the test session imported do not count.
    code = (
        "import runtime; "
        "print(sorted(n for n in vars(runtime) if not n.startswith('_') "
        "and n not in runtime.__all__))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert out.stdout.strip() == "[]"


def test_the_installed_version_is_the_package_version() -> None:
    assert importlib.metadata.version("callboard") == runtime.__version__


@pytest.mark.parametrize(
    "name",
    [
        name
        for name in EXPORTED
        if inspect.isclass(getattr(runtime, name))
        and issubclass(getattr(runtime, name), BaseException)
    ],
)
def test_public_errors_name_the_public_package_as_their_module(name: str) -> None:
    error = getattr(runtime, name)

    assert error.__module__ == "runtime"
    instance = error.__new__(error)  # some take required context; the type is what counts
    assert runtime.ErrorInfo.from_exception(instance).details["type"] == f"runtime.{name}"


# --- runtime.testing, the second public module --------------------------------------------

TESTING_EXPORTED = [
    "Harness",
    "InjectedCrashError",
    "Trace",
    "TraceEvent",
    "VirtualClock",
]


def test_the_test_kit_exports_exactly_the_pinned_list() -> None:
    import runtime.testing

    assert runtime.testing.__all__ == TESTING_EXPORTED == sorted(TESTING_EXPORTED)


@pytest.mark.parametrize("name", TESTING_EXPORTED)
def test_every_name_of_the_test_kit_and_its_public_methods_have_docstrings(name: str) -> None:
    import runtime.testing

    obj = getattr(runtime.testing, name)
    assert obj.__doc__ and obj.__doc__.strip(), name
    for attr, member in vars(obj).items():
        if attr.startswith("_"):
            continue
        if inspect.isfunction(member) or isinstance(member, property):
            assert member.__doc__ and member.__doc__.strip(), f"{name}.{attr}"


def test_importing_runtime_does_not_import_the_test_kit() -> None:
    code = "import sys, runtime; print('runtime.testing' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert out.stdout.strip() == "False"
