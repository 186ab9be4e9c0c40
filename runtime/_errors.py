"""The errors callboard raises, all under one root.

The hierarchy::

    WorkflowError                        the root: catch it to catch everything callboard raises
    ├── WorkflowDefinitionError          a workflow or step that cannot be built (also ValueError)
    ├── InvalidInputError                input, state, request context or options rejected at the
    │                                    call, with pydantic's error list (also ValueError)
    ├── StepValidationError              inside a run: a step's input or output fails its schema
    │                                    (also ValueError)
    ├── SnapshotEncodingError            a value that msgpack cannot encode (also TypeError)
    ├── SnapshotFormatError              stored snapshot bytes that cannot be read (also ValueError)
    ├── StoreError                       the run store cannot be opened, read or written
    │   └── StoreUnavailableError        it cannot be reached for now (a server down, a file
    │                                    kept locked): the same call may succeed later
    ├── RunAlreadyStartedError           a run started twice, or a run id already in use
    ├── RunNotStartedError               waiting on a run that was never started
    ├── RunInProgressError               deleting a run that has not ended
    ├── RunDeletedError                  a started run whose record is gone: deleted, or pruned
    │                                    by the retention policy (also LookupError)
    ├── RunCrashedError                  the machinery that drove a run failed; the run is failed
    ├── RuntimeStoppedError              a stopped runtime was used, or stopped under a run
    ├── RuntimeOverloadedError           a start refused: ``max_pending_runs`` runs wait to
    │                                    start; nothing was recorded, try again later
    ├── QueueFullError                   a start refused: its queue's ``max_queued`` runs wait;
    │                                    nothing was recorded, try again later
    ├── QueueKeyError                    a queue's key function raised or named no string
    │                                    (also ValueError); nothing was recorded
    ├── RunTimeoutError                  a wait for a run outlasted its timeout (also TimeoutError)
    ├── RunNotSuspendedError             resuming a run that is not suspended, and whose
    │                                    last suspension nobody resumed (never suspended,
    │                                    or cancelled while suspended)
    ├── ResumeTargetError                resuming a step that is not suspended, or not naming
    │                                    one of several suspended steps (also ValueError)
    ├── ResumeConflictError              another resume of the same suspension was recorded
    │                                    first, however the two calls interleaved
    ├── WorkflowVersionError             a run started on a definition (fingerprint) of its
    │                                    workflow that this runtime has not registered; the
    │                                    run is left as it is
    ├── RunNotRestartableError           restarting a run that has not failed or been canceled
    ├── CancelError                      the process holding a run did not carry out its cancel
    ├── RoleError                        a call the runtime's role does not allow
    ├── UnboundWorkflowError             the original of a workflow used while it is registered
    │                                    on a runtime: use what ``register`` returned
    ├── NonRetryableError                raised by a step body: fail now, do not retry
    ├── StepTimeoutError                 inside a run: a step outlasted its ``timeout``
    │                                    (also TimeoutError)
    ├── RunDeadlineError                 inside a run: the run outlasted its ``run_timeout``
    │                                    and was canceled (also TimeoutError)
    └── LoopLimitError                   inside a run: a loop reached its ``max_iterations``

Errors that happen inside a run do not propagate to the caller: they end the run
as ``failed`` and are described on its result by an
:class:`~runtime._model.ErrorInfo` whose ``name`` is the exception's class name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

__all__ = [
    "CancelError",
    "InvalidInputError",
    "LoopLimitError",
    "NonRetryableError",
    "QueueFullError",
    "QueueKeyError",
    "ResumeConflictError",
    "ResumeTargetError",
    "RoleError",
    "RunAlreadyStartedError",
    "RunCrashedError",
    "RunDeadlineError",
    "RunDeletedError",
    "RunInProgressError",
    "RunNotRestartableError",
    "RunNotStartedError",
    "RunNotSuspendedError",
    "RunTimeoutError",
    "RuntimeOverloadedError",
    "RuntimeStoppedError",
    "SnapshotEncodingError",
    "SnapshotFormatError",
    "StepTimeoutError",
    "StepValidationError",
    "StoreError",
    "StoreUnavailableError",
    "UnboundWorkflowError",
    "WorkflowDefinitionError",
    "WorkflowError",
    "WorkflowVersionError",
    "summarize_errors",
]


def summarize_errors(errors: Sequence[Mapping[str, Any]]) -> str:
    """Summarize pydantic's error list in one line: ``"sku: Field required; quantity: ..."``."""
    parts = []
    for error in errors:
        where = ".".join(str(item) for item in error.get("loc", ())) or "value"
        parts.append(f"{where}: {error.get('msg', '')}")
    return "; ".join(parts)


class WorkflowError(Exception):
    """The root of every error callboard raises.

    Attributes:
        run_id: The run the error is about, when there is one.
        step_id: The step the error is about, when there is one.
    """

    def __init__(self, message: str, *, run_id: str | None = None, step_id: str | None = None):
        super().__init__(message)
        self.run_id = run_id
        self.step_id = step_id

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its message and attributes, without __init__: an exception's own
        # reduce calls cls(*args), which misses the keyword-only arguments most of the
        # errors here take, so one sent back by a process pool or a task queue would not
        # load ("missing 2 required keyword-only arguments").
        return (_rebuilt, (type(self), self.args), self.__dict__)


def _rebuilt(kind: type[WorkflowError], args: tuple[Any, ...]) -> WorkflowError:
    """An error of ``kind`` with ``args``, its attributes to be set by unpickling."""
    error = kind.__new__(kind, *args)
    error.args = args
    return error


class WorkflowDefinitionError(WorkflowError, ValueError):
    """A workflow or step definition that cannot be used (empty, duplicate ids, uncommitted)."""


class InvalidInputError(WorkflowError, ValueError):
    """Input rejected before anything was recorded.

    Attributes:
        field: Which argument was rejected: ``"input_data"``, ``"initial_state"``,
            ``"request_context"`` or ``"tracing_options"``.
        errors: pydantic's list of errors (``ValidationError.errors()``), or one
            entry of the same shape for checks pydantic does not make.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str,
        errors: list[dict[str, Any]],
        run_id: str | None = None,
    ):
        super().__init__(message, run_id=run_id)
        self.field = field
        self.errors = errors


class StepValidationError(WorkflowError, ValueError):
    """A step's input or output did not fit its schema during a run.

    Attributes:
        errors: pydantic's list of errors (``ValidationError.errors()``).
    """

    def __init__(
        self,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        run_id: str | None = None,
        step_id: str | None = None,
    ):
        super().__init__(message, run_id=run_id, step_id=step_id)
        self.errors = errors or []

    @classmethod
    def from_validation(
        cls,
        message: str,
        error: ValidationError,
        *,
        run_id: str | None = None,
        step_id: str | None = None,
    ) -> StepValidationError:
        """Wrap pydantic's error: ``message``, then its errors summarized in one line."""
        errors = [
            dict(item)
            for item in error.errors(include_url=False, include_context=False, include_input=False)
        ]
        return cls(
            f"{message}: {summarize_errors(errors)}",
            errors=errors,
            run_id=run_id,
            step_id=step_id,
        )


class SnapshotEncodingError(WorkflowError, TypeError):
    """A value that has to be stored in a snapshot cannot be encoded with msgpack.

    Attributes:
        path: Where the value sits, such as ``"request_context['user']"``.
        type_name: The name of the offending value's type.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str = "",
        type_name: str = "",
        run_id: str | None = None,
        step_id: str | None = None,
    ):
        super().__init__(message, run_id=run_id, step_id=step_id)
        self.path = path
        self.type_name = type_name


class SnapshotFormatError(WorkflowError, ValueError):
    """Snapshot bytes that are corrupt or written by an unknown format version."""


class StoreError(WorkflowError):
    """The run store cannot be opened, read or written (its message says which file and why)."""


class StoreUnavailableError(StoreError):
    """The run store cannot be reached for now; the same call may succeed later.

    A PostgreSQL server that is down, restarting or cut off, a connection that
    no pool slot freed within its time, a commit that did not come within its
    time, or a SQLite file that another connection kept locked. The call that
    raised it changed nothing, with one exception: a start whose commit was
    under way when the connection went may have recorded its run (starting
    the same :class:`~runtime.Run` again either records it or raises
    :class:`RunAlreadyStartedError`). ``wait()``, ``wait_async()`` and
    ``watch()`` do not raise it while their timeout lasts: they read again
    until the store answers (but for a store that has refused every write
    for 30 s: a run that cannot go on is said at once).
    """


class RunAlreadyStartedError(WorkflowError):
    """A run was started a second time, or its run id is already taken."""


class RunNotStartedError(WorkflowError):
    """The run has not been started, so there is nothing to wait for."""


class RunInProgressError(WorkflowError):
    """The run has not ended, so it cannot be deleted."""


class RunDeletedError(WorkflowError, LookupError):
    """A run that was started has no record any more.

    It ended and was then deleted, or pruned by the runtime's retention
    policy; its result is gone.
    """


class RunCrashedError(WorkflowError):
    """The actor driving a run failed; the supervisor recorded the run as failed."""


class RuntimeStoppedError(WorkflowError):
    """The runtime is stopped (or stopped while a run was still in progress)."""


class RuntimeOverloadedError(WorkflowError):
    """A start refused because ``max_pending_runs`` runs already wait to start.

    Nothing was recorded: the same run can be started again once runs have
    drained. It is no ``ValueError`` (the arguments were fine) and no
    ``TimeoutError`` (nothing waited): the runtime said no at once.

    Attributes:
        limit: The runtime's ``max_pending_runs``.
    """

    def __init__(self, message: str, *, limit: int, run_id: str | None = None):
        super().__init__(message, run_id=run_id)
        self.limit = limit


class QueueFullError(WorkflowError):
    """A start (or restart) refused because its queue already has ``max_queued`` runs waiting.

    Nothing was recorded: the same run can be started again once the queue
    has drained. A refused ``run.restart()`` leaves the run as it ended.

    Attributes:
        queue: The queue's name.
        limit: The queue's ``max_queued``.
    """

    def __init__(self, message: str, *, queue: str, limit: int, run_id: str | None = None):
        super().__init__(message, run_id=run_id)
        self.queue = queue
        self.limit = limit


class QueueKeyError(WorkflowError, ValueError):
    """A queue's ``key`` function raised, or returned something other than a non-empty ``str``.

    Raised by the start, before anything is recorded; the original error, if
    any, is chained as ``__cause__``.

    Attributes:
        queue: The queue's name.
    """

    def __init__(self, message: str, *, queue: str, run_id: str | None = None):
        super().__init__(message, run_id=run_id)
        self.queue = queue


class RunTimeoutError(WorkflowError, TimeoutError):
    """The run did not end within the time the caller was willing to wait."""


class RunNotSuspendedError(WorkflowError):
    """``resume`` was called on a run that is not ``suspended`` and was not resumed.

    The run was never suspended, or it was cancelled while suspended. (A run
    whose suspension another resume took raises :class:`ResumeConflictError`.)

    Attributes:
        status: The run's status when the resume was refused.
    """

    def __init__(self, message: str, *, status: str, run_id: str | None = None):
        super().__init__(message, run_id=run_id)
        self.status = status


class RunNotRestartableError(WorkflowError):
    """``restart`` was called on a run that did not fail and was not canceled.

    A run in progress (or suspended, or asleep) goes on by itself or with a
    resume; a run that succeeded has nothing left to run.

    Attributes:
        status: The run's status when the restart was refused.
    """

    def __init__(self, message: str, *, status: str, run_id: str | None = None):
        super().__init__(message, run_id=run_id)
        self.status = status


class ResumeTargetError(WorkflowError, ValueError):
    """The step named to resume is not suspended, or several are and none was named.

    Attributes:
        suspended: The paths of the run's suspended steps.
    """

    def __init__(
        self,
        message: str,
        *,
        suspended: list[str],
        run_id: str | None = None,
        step_id: str | None = None,
    ):
        super().__init__(message, run_id=run_id, step_id=step_id)
        self.suspended = suspended


class WorkflowVersionError(WorkflowError):
    """A run cannot go on here: no registered definition of its workflow has its fingerprint.

    A run goes on (resumes, wakes, is recovered) only on a definition of its
    workflow whose plan has the fingerprint recorded when it started. The
    run is left exactly as it was: register the definition it started on
    (beside the new one) and try again.

    Attributes:
        workflow_id: The run's workflow.
        version: The run's version label (``None``: it had none).
        fingerprint: The fingerprint of the plan the run started on.
        registered: The ``(version, fingerprint)`` of each definition of the
            workflow registered on this runtime.
    """

    def __init__(
        self,
        message: str,
        *,
        workflow_id: str,
        version: str | None,
        fingerprint: str | None,
        registered: list[tuple[str | None, str]],
        run_id: str | None = None,
    ):
        super().__init__(message, run_id=run_id)
        self.workflow_id = workflow_id
        self.version = version
        self.fingerprint = fingerprint
        self.registered = registered


class ResumeConflictError(WorkflowError):
    """Another resume of the same suspension was recorded first; this one changed nothing.

    Raised whenever this resume read the run: before the other one was
    recorded (the store's compare-and-set, its resume requests, or the run's
    actor, then refuses this one), or after, while the run goes on, or once it
    has ended. Also raised, changing nothing, on a store in memory, for a
    suspension that waits while its run waits for room to run: only the actor
    that drives a running run takes a resume of another of its suspensions.

    Attributes:
        status: The run's status when the resume was refused (``None`` if unknown).
    """

    def __init__(self, message: str, *, status: str | None = None, run_id: str | None = None):
        super().__init__(message, run_id=run_id)
        self.status = status


class UnboundWorkflowError(WorkflowError):
    """The workflow object ``register`` was given was used while that runtime is not stopped.

    ``runtime.register(workflow)`` returns a copy bound to the runtime; the
    original stays unbound, and an unbound workflow runs on the process-wide
    default runtime (in memory). Using the original by mistake would send the
    runs there, not to the runtime (and store) it was registered on, so it is
    refused until that runtime has stopped. While a test
    :class:`~runtime.testing.Harness` is open, an unbound workflow is refused
    too: the default runtime would read the harness's virtual clock, which
    moves for the harness's own runtime only.
    """


class CancelError(WorkflowError):
    """The cancel could not be carried out: the worker that holds the run did not answer in time.

    The cancel stays requested in the store: the run is cancelled when its
    worker next looks, or by whichever worker takes it over.
    """


class RoleError(WorkflowError):
    """The runtime's role does not allow the call: a ``worker`` starts no runs.

    A ``client`` executes none; a runtime on a store that is not shared
    (memory) can only have the role ``both``.
    """


class NonRetryableError(WorkflowError):
    """Raise it from a step body to fail the step at once, without the retries it has left."""


class BlockingCallError(WorkflowError, RuntimeError):
    """A blocking call where it could wait for ever: ``wait()`` inside an ``async def`` step.

    An ``async def`` step runs on the event loop that runs every async step of
    the runtime; a blocking ``run.wait()`` (or ``run.start()``) there stops that
    loop until the run ends, and the run may need the loop to end. Await
    ``run.wait_async()`` (or ``run.astart()``) instead. A ``wait()`` or
    ``wait_async()`` inside one of the run's own steps or hooks is refused too:
    the run ends only after it. So is ``Runtime.stop()`` (or ``astop()``) inside
    a step or hook of one of the runtime's runs, which the stop would wait for.
    """


class StepTimeoutError(WorkflowError, TimeoutError):
    """A step ran longer than its ``timeout``; an async body was cancelled, a sync one abandoned."""


class RunDeadlineError(WorkflowError, TimeoutError):
    """A run outlasted its ``run_timeout``: it was canceled, and its result's error says so.

    Never raised to a caller: it is the ``error`` (an ``ErrorInfo`` named
    ``RunDeadlineError``) of a run canceled at its deadline.
    """


class LoopLimitError(WorkflowError):
    """A ``dowhile``/``dountil`` loop ran its step ``max_iterations`` times without ending."""
