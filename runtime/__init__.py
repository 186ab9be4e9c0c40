"""callboard: an in-process workflow runtime built on actors.

Define workflows from typed steps, start runs in the background with
``start_async()``, and read each run's execution result by its id.
"""

from runtime._errors import (
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
    WorkflowVersionError,
)
from runtime._model import (
    ErrorInfo,
    RunEvent,
    RunFinishEvent,
    RunOrigin,
    RunOutcome,
    RunStartEvent,
    RunStatus,
    RunStreamEvent,
    RuntimeHealth,
    StartAsyncResult,
    StepFinishEvent,
    StepOutputEvent,
    StepResult,
    StepStartEvent,
    StepStatus,
    StepSuspendedEvent,
    StepWaitingEvent,
    StreamEvent,
    WorkflowResult,
    WorkflowRunList,
)
from runtime._options import OutputOptions, RetentionPolicy, RetryConfig, TracingOptions
from runtime._queries import RunReader
from runtime._queue import Queue
from runtime._request_context import RequestContext
from runtime._run import Run, RunWatch
from runtime._runtime import Runtime, default_runtime
from runtime._schedule import Schedule, ScheduledRun, ScheduleInfo
from runtime._step import Step, create_step
from runtime._step_context import StepContext, StepWriter
from runtime._stores._backup import StoreBackup
from runtime._stores.base import SnapshotRecord, SnapshotStore
from runtime._stores.memory import MemoryStore
from runtime._stores.postgres import PostgresStore
from runtime._stores.sqlite import SQLiteStore
from runtime._stream import RunStream
from runtime._sync import AbortSignal
from runtime._workflow import Workflow, create_workflow

__version__ = "0.1.0"  # the one place: pyproject.toml reads it ([tool.hatch.version])

__all__ = [
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


def _claim_public_exceptions() -> None:
    """Name ``runtime`` as the home of the public errors, not the private module they live in.

    The qualified type recorded with a failed run (``ErrorInfo.details["type"]``)
    and every traceback then show ``runtime.RunTimeoutError``, the name users
    import, rather than a private path that may move.
    """
    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) and issubclass(obj, BaseException):
            obj.__module__ = __name__


_claim_public_exceptions()
