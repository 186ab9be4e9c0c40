"""callboard: an in-process workflow runtime built on actors.

Define workflows from typed steps, start runs in the background with
``start_async()``, and read each run's execution result by its id.
"""

from runtime.context import RequestContext
from runtime.engine import Runtime, default_runtime
from runtime.errors import (
    InvalidInputError,
    RunAlreadyStartedError,
    RunCrashedError,
    RunInProgressError,
    RunNotStartedError,
    RunTimeoutError,
    RuntimeStoppedError,
    SnapshotEncodingError,
    SnapshotFormatError,
    StepValidationError,
    StoreError,
    WorkflowDefinitionError,
    WorkflowError,
)
from runtime.model import (
    ErrorInfo,
    RunStatus,
    StartAsyncResult,
    StepResult,
    StepStatus,
    WorkflowResult,
    WorkflowRunList,
)
from runtime.options import OutputOptions, TracingOptions
from runtime.queries import RunReader
from runtime.run import Run
from runtime.sqlite import SQLiteStore
from runtime.step import Step, StepContext, create_step
from runtime.store import MemoryStore, SnapshotRecord, SnapshotStore
from runtime.workflow import Workflow, create_workflow

__version__ = "0.1.0"

__all__ = [
    "ErrorInfo",
    "InvalidInputError",
    "MemoryStore",
    "OutputOptions",
    "RequestContext",
    "Run",
    "RunAlreadyStartedError",
    "RunCrashedError",
    "RunInProgressError",
    "RunNotStartedError",
    "RunReader",
    "RunStatus",
    "RunTimeoutError",
    "Runtime",
    "RuntimeStoppedError",
    "SQLiteStore",
    "SnapshotEncodingError",
    "SnapshotFormatError",
    "SnapshotRecord",
    "SnapshotStore",
    "StartAsyncResult",
    "Step",
    "StepContext",
    "StepResult",
    "StepStatus",
    "StepValidationError",
    "StoreError",
    "TracingOptions",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowError",
    "WorkflowResult",
    "WorkflowRunList",
    "__version__",
    "create_step",
    "create_workflow",
    "default_runtime",
]
