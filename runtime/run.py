"""``Run``: one execution of a workflow, started in the background and read by id."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from runtime.context import RequestContext
from runtime.errors import (
    InvalidInputError,
    RunAlreadyStartedError,
    RunNotStartedError,
    RunTimeoutError,
    SnapshotEncodingError,
    SnapshotFormatError,
    summarize_errors,
)
from runtime.model import TERMINAL_STATUSES, RunStatus, StartAsyncResult, WorkflowResult
from runtime.options import OutputOptions, TracingOptions
from runtime.snapshot import (
    Snapshot,
    check_encodable,
    copy_plain,
    decode,
    record_of,
    to_result,
)
from runtime.step import plain
from runtime.store import SnapshotRecord
from runtime.tracing import new_span_id, new_trace_id

if TYPE_CHECKING:
    from runtime.engine import Runtime
    from runtime.plan import ExecutionPlan

__all__ = ["Run", "read_result"]

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)

_DEFAULT_TRACING = TracingOptions()
_DEFAULT_OUTPUT = OutputOptions()


class Run(Generic[In, Out]):
    """One execution of a workflow. Create it with ``workflow.create_run()``.

    Attributes:
        run_id: The run's id: what ``start_async`` returns and queries take.
        workflow_id: The id of the run's workflow.
    """

    __slots__ = ("_lock", "_plan", "_runtime", "_started", "run_id", "workflow_id")

    def __init__(self, plan: ExecutionPlan, runtime: Runtime, run_id: str) -> None:
        self._plan = plan
        self._runtime = runtime
        self._lock = threading.Lock()
        self._started = False
        self.run_id = run_id
        self.workflow_id = plan.workflow_id

    def __repr__(self) -> str:
        return f"<Run {self.run_id!r} of workflow {self.workflow_id!r}>"

    def start_async(
        self,
        *,
        input_data: In | Mapping[str, Any] | None = None,
        request_context: RequestContext | Mapping[str, Any] | None = None,
        initial_state: BaseModel | Mapping[str, Any] | None = None,
        tracing_options: TracingOptions | Mapping[str, Any] | None = None,
        output_options: OutputOptions | Mapping[str, Any] | None = None,
    ) -> StartAsyncResult:
        """Start the run in the background and return its id at once.

        When this returns, the run is recorded (``pending``, or already further)
        and a query by its id from any thread finds it; no step has necessarily
        run yet.

        Args:
            input_data: The run's input: a model of the workflow's input schema
                or a mapping validated against it.
            request_context: Values every step can read (and change) through
                ``ctx.request_context``; copied, so later changes by the caller
                do not reach the run. Values must be msgpack-encodable.
            initial_state: The workflow state to begin with, validated by the
                workflow's ``state_schema`` when it has one.
            tracing_options: Span metadata and a trace id to join.
            output_options: Whether results carry the workflow ``state``.

        Returns:
            ``StartAsyncResult(run_id=...)``.

        Raises:
            InvalidInputError: if an argument is rejected; nothing is recorded,
                and the run can be started again with good arguments.
            RunAlreadyStartedError: if this run was started before, or its id is
                taken by another run.
            RuntimeStoppedError: if the runtime is not running.
        """
        with self._lock:
            if self._started:
                raise RunAlreadyStartedError(
                    f"run {self.run_id!r} was already started; create a new run with "
                    "workflow.create_run()",
                    run_id=self.run_id,
                )
            plan, run_id = self._plan, self.run_id
            runtime = self._runtime
            runtime._running()
            snapshot = _pending_snapshot(
                plan,
                run_id,
                input_data=input_data,
                request_context=request_context,
                initial_state=initial_state,
                tracing_options=tracing_options,
                output_options=output_options,
            )
            runtime._start_run(plan, snapshot, record_of(snapshot))
            self._started = True
        return StartAsyncResult(run_id=run_id)

    def start(
        self,
        *,
        input_data: In | Mapping[str, Any] | None = None,
        request_context: RequestContext | Mapping[str, Any] | None = None,
        initial_state: BaseModel | Mapping[str, Any] | None = None,
        tracing_options: TracingOptions | Mapping[str, Any] | None = None,
        output_options: OutputOptions | Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> WorkflowResult:
        """Start the run and block until it ends; same arguments as :meth:`start_async`.

        A run that fails returns its result with ``status == "failed"``; it does
        not raise.

        Args:
            input_data: As :meth:`start_async`.
            request_context: As :meth:`start_async`.
            initial_state: As :meth:`start_async`.
            tracing_options: As :meth:`start_async`.
            output_options: As :meth:`start_async`.
            timeout: Seconds to wait for the run to end; ``None`` waits as long as it takes.

        Raises:
            InvalidInputError: as :meth:`start_async`.
            RunAlreadyStartedError: as :meth:`start_async`.
            RuntimeStoppedError: as :meth:`start_async`.
            RunTimeoutError: if ``timeout`` passed first (the run goes on).
        """
        self.start_async(
            input_data=input_data,
            request_context=request_context,
            initial_state=initial_state,
            tracing_options=tracing_options,
            output_options=output_options,
        )
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> WorkflowResult:
        """Block until the run ends, and return its result.

        Args:
            timeout: Seconds to wait; ``None`` waits as long as it takes.

        Raises:
            RunNotStartedError: if the run was never started.
            RunTimeoutError: if ``timeout`` passed first (the run goes on).
        """
        if not self._started:
            raise RunNotStartedError(
                f"run {self.run_id!r} has not been started", run_id=self.run_id
            )
        record = self._runtime._load(self.run_id)
        if record is None or record.status not in TERMINAL_STATUSES:
            if not self._runtime._watch(self.run_id).wait(timeout):
                raise RunTimeoutError(
                    f"run {self.run_id!r} did not end within {timeout} seconds; it goes on",
                    run_id=self.run_id,
                )
            record = self._runtime._load(self.run_id)
        result = read_result(record, self.workflow_id)
        assert result is not None, "a started run is always recorded"
        return result


def read_result(record: SnapshotRecord | None, workflow_id: str) -> WorkflowResult | None:
    """The public result of a stored record, if it belongs to ``workflow_id``."""
    if record is None or record.workflow_id != workflow_id:
        return None
    try:
        return to_result(decode(record.data))
    except SnapshotFormatError as exc:
        raise SnapshotFormatError(
            f"run {record.run_id!r} cannot be read: {exc}", run_id=record.run_id
        ) from exc


def _pending_snapshot(
    plan: ExecutionPlan,
    run_id: str,
    *,
    input_data: Any,
    request_context: Any,
    initial_state: Any,
    tracing_options: Any,
    output_options: Any,
) -> Snapshot:
    """Validate every start argument and build the run's first snapshot."""
    inputs = _validated(plan.input_schema, input_data, "input_data", run_id)
    state = (
        _validated(plan.state_schema, initial_state, "initial_state", run_id)
        if plan.state_schema is not None
        else _plain_mapping(initial_state, "initial_state", run_id)
    )
    context = _plain_mapping(request_context, "request_context", run_id) or {}
    tracing = _options(TracingOptions, tracing_options, _DEFAULT_TRACING, "tracing_options", run_id)
    metadata: dict[str, Any] = {}
    if tracing.metadata:
        _encodable(tracing.metadata, "tracing_options.metadata", "tracing_options", run_id)
        metadata = copy_plain(tracing.metadata)
    output = _options(OutputOptions, output_options, _DEFAULT_OUTPUT, "output_options", run_id)
    now = time.time()
    return {
        "run_id": run_id,
        "workflow_id": plan.workflow_id,
        "seq": 0,
        "status": RunStatus.PENDING.value,
        "input": inputs,
        "result": None,
        "error": None,
        "steps": {},
        "next_step": 0,
        "state": state,
        "request_context": context,
        "include_state": output.include_state,
        "trace_id": tracing.trace_id or new_trace_id(),
        "span_id": new_span_id(),
        "metadata": metadata,
        "created_at": now,
        "updated_at": now,
    }


def _validated(schema: type[BaseModel], value: Any, field: str, run_id: str) -> Any:
    try:
        model = (
            value
            if isinstance(value, schema)
            else schema.model_validate({} if value is None else plain(value))
        )
    except ValidationError as exc:
        errors = [dict(error) for error in exc.errors(include_url=False)]
        raise InvalidInputError(
            f"{field} for run {run_id!r} does not fit {schema.__name__}: "
            f"{summarize_errors(errors)}",
            field=field,
            errors=errors,
            run_id=run_id,
        ) from exc
    try:
        return model.model_dump(mode="json")
    except Exception as exc:  # pydantic's serialization errors have no common base
        raise InvalidInputError(
            f"{field} for run {run_id!r} holds a value that cannot be stored: {exc}",
            field=field,
            errors=[{"type": "not_encodable", "loc": (), "msg": str(exc)}],
            run_id=run_id,
        ) from exc


def _plain_mapping(value: Any, field: str, run_id: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"{field} for run {run_id!r} must be a mapping, got {type(value).__name__}",
            field=field,
            errors=[{"type": "dict_type", "loc": (), "msg": "Input should be a mapping"}],
            run_id=run_id,
        )
    data = dict(value)
    for key in data:
        if not isinstance(key, str):
            raise InvalidInputError(
                f"{field} for run {run_id!r} has a key of type {type(key).__name__}: "
                "keys must be str",
                field=field,
                errors=[{"type": "key_type", "loc": (repr(key),), "msg": "keys must be str"}],
                run_id=run_id,
            )
    _encodable(data, field, field, run_id)
    # A deep copy: the run owns its values, and neither the caller's later
    # changes nor the run's own reach the other side.
    copied: dict[str, Any] = copy_plain(data)
    return copied


def _encodable(value: Any, path: str, field: str, run_id: str) -> None:
    try:
        check_encodable(value, path)
    except SnapshotEncodingError as exc:
        raise InvalidInputError(
            f"{exc} (run {run_id!r})",
            field=field,
            errors=[{"type": "not_encodable", "loc": (exc.path,), "msg": str(exc)}],
            run_id=run_id,
        ) from exc


def _options(kind: type[Any], value: Any, default: Any, field: str, run_id: str) -> Any:
    if value is None:
        return default
    if isinstance(value, kind):
        return value
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"{field} for run {run_id!r} must be a {kind.__name__} or a mapping, "
            f"got {type(value).__name__}",
            field=field,
            errors=[{"type": "model_type", "loc": (), "msg": f"Input should be {kind.__name__}"}],
            run_id=run_id,
        )
    try:
        return kind.model_validate(value)
    except ValidationError as exc:
        errors = [dict(error) for error in exc.errors(include_url=False)]
        raise InvalidInputError(
            f"{field} for run {run_id!r} are invalid: {summarize_errors(errors)}",
            field=field,
            errors=errors,
            run_id=run_id,
        ) from exc
