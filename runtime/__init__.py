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
    RunNotStartedError,
    RunTimeoutError,
    RuntimeStoppedError,
    SnapshotEncodingError,
    SnapshotFormatError,
    StepValidationError,
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
)
from runtime.options import OutputOptions, TracingOptions
from runtime.run import Run
from runtime.step import Step, StepContext, create_step
from runtime.workflow import Workflow, create_workflow

__version__ = "0.1.0"

__all__ = [
    "ErrorInfo",
    "InvalidInputError",
    "OutputOptions",
    "RequestContext",
    "Run",
    "RunAlreadyStartedError",
    "RunCrashedError",
    "RunNotStartedError",
    "RunStatus",
    "RunTimeoutError",
    "Runtime",
    "RuntimeStoppedError",
    "SnapshotEncodingError",
    "SnapshotFormatError",
    "StartAsyncResult",
    "Step",
    "StepContext",
    "StepResult",
    "StepStatus",
    "StepValidationError",
    "TracingOptions",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowError",
    "WorkflowResult",
    "__version__",
    "create_step",
    "create_workflow",
    "default_runtime",
]
