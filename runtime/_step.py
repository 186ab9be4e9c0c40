"""Steps: typed units of work, and the context a step body receives."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeVar, overload

from pydantic import BaseModel, ValidationError

from runtime._errors import StepValidationError, WorkflowDefinitionError, WorkflowError
from runtime._request_context import RequestContext
from runtime._snapshot import check_encodable, copy_plain
from runtime._sync import AbortSignal
from runtime._tracing import step_logger

__all__ = [
    "BailOut",
    "Step",
    "StepContext",
    "SuspendRequest",
    "create_step",
    "plain",
    "validate_for_step",
]


class SuspendRequest(BaseException):
    """Raised by ``ctx.suspend()`` to leave the step body; the runtime catches it.

    A ``BaseException``, so that a body's ``except Exception`` does not swallow it.
    """

    def __init__(self, payload: Any) -> None:
        super().__init__("the step suspended")
        self.payload = payload


class BailOut(BaseException):
    """Raised by ``ctx.bail()`` to end the run as a success; the runtime catches it."""

    def __init__(self, result: Any) -> None:
        super().__init__("the step bailed out")
        self.result = result


In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)

StepBody = Callable[["StepContext[Any]"], Any]
"""``execute(ctx)``: returns the output model or a dict, or a coroutine that does."""


def plain(value: Any) -> Any:
    """A model as plain JSON-like data; anything else unchanged."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


M = TypeVar("M", bound=BaseModel)


def validate_for_step(
    schema: type[M], value: Any, what: str, role: str, *, run_id: str, step_id: str
) -> M:
    """``value`` as a ``schema`` model (as it is if it already is one).

    Args:
        schema: The model to validate against.
        value: A model or plain data.
        what: What the value is, for the message: ``"step 'a': its input"``.
        role: What the schema is, for the message: ``"its input schema"``.
        run_id: The run, for the error.
        step_id: The step, for the error.

    Raises:
        StepValidationError: ``"<what> does not fit <role> <Schema>: <errors>"``.
    """
    if isinstance(value, schema):
        return value
    try:
        return schema.model_validate(plain(value))
    except ValidationError as exc:
        raise StepValidationError.from_validation(
            f"{what} does not fit {role} {schema.__name__}", exc, run_id=run_id, step_id=step_id
        ) from exc


@dataclass(frozen=True, slots=True, eq=False)
class Step(Generic[In, Out]):
    """A typed unit of work. Build one with :func:`create_step`.

    Attributes:
        id: Unique within a workflow; names the step in results.
        input_schema: The pydantic model the step's input is validated against.
        output_schema: The pydantic model the step's output is validated against.
        execute: The body: ``execute(ctx)``, a plain function or an ``async def``.
        state_schema: The model ``ctx.state`` is read as, when the step wants a
            view of the workflow state of its own.
        description: Free text for people reading the workflow.
        retries: Retries after a failed call; ``None`` follows the
            workflow's ``retry_config``.
        timeout: Seconds one call may take before it fails with
            ``StepTimeoutError`` (an async body is cancelled, a sync one abandoned).
        suspend_schema: The model ``ctx.suspend(payload)`` validates its payload against.
        resume_schema: The model ``resume_data`` is validated against on resume.
    """

    id: str
    input_schema: type[In]
    output_schema: type[Out]
    execute: StepBody
    state_schema: type[BaseModel] | None = None
    description: str | None = None
    retries: int | None = None
    timeout: float | None = None
    suspend_schema: type[BaseModel] | None = None
    resume_schema: type[BaseModel] | None = None
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        body: Any = self.execute
        is_async = inspect.iscoroutinefunction(body) or inspect.iscoroutinefunction(
            getattr(body, "__call__", None)  # noqa: B004 - an object with an async __call__
        )
        object.__setattr__(self, "is_async", is_async)

    def __repr__(self) -> str:
        return f"Step(id={self.id!r})"


def _check_schema(value: Any, what: str, step_id: str) -> None:
    if not (isinstance(value, type) and issubclass(value, BaseModel)):
        raise TypeError(
            f"step {step_id!r}: {what} must be a pydantic BaseModel subclass, got {value!r}"
        )


def _build_step(
    *,
    id: str | None,
    input_schema: type[In],
    output_schema: type[Out],
    execute: StepBody,
    state_schema: type[BaseModel] | None,
    description: str | None,
    retries: int | None = None,
    timeout: float | None = None,
    suspend_schema: type[BaseModel] | None = None,
    resume_schema: type[BaseModel] | None = None,
) -> Step[In, Out]:
    if id is None:
        id = getattr(execute, "__name__", None)
    if not isinstance(id, str) or not id:
        raise WorkflowDefinitionError(f"a step id must be a non-empty string, got {id!r}")
    _check_schema(input_schema, "input_schema", id)
    _check_schema(output_schema, "output_schema", id)
    if "." in id:
        raise WorkflowDefinitionError(
            f"step id {id!r} holds a '.', which separates a nested workflow's id from its "
            "steps' ids in results"
        )
    for name, schema in (
        ("state_schema", state_schema),
        ("suspend_schema", suspend_schema),
        ("resume_schema", resume_schema),
    ):
        if schema is not None:
            _check_schema(schema, name, id)
    if not callable(execute):
        raise TypeError(f"step {id!r}: execute must be callable, got {execute!r}")
    if retries is not None and (
        isinstance(retries, bool) or not isinstance(retries, int) or retries < 0
    ):
        raise WorkflowDefinitionError(
            f"step {id!r}: retries must be a whole number of 0 or more, got {retries!r}"
        )
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise WorkflowDefinitionError(
            f"step {id!r}: timeout must be a number of seconds above 0, got {timeout!r}"
        )
    return Step(
        id=id,
        input_schema=input_schema,
        output_schema=output_schema,
        execute=execute,
        state_schema=state_schema,
        description=description,
        retries=retries,
        timeout=None if timeout is None else float(timeout),
        suspend_schema=suspend_schema,
        resume_schema=resume_schema,
    )


@overload
def create_step(
    *,
    id: str,
    input_schema: type[In],
    output_schema: type[Out],
    execute: Callable[[StepContext[In]], Out | Mapping[str, Any] | Awaitable[Any]],
    state_schema: type[BaseModel] | None = None,
    description: str | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    suspend_schema: type[BaseModel] | None = None,
    resume_schema: type[BaseModel] | None = None,
) -> Step[In, Out]: ...


@overload
def create_step(
    *,
    id: str | None = None,
    input_schema: type[In],
    output_schema: type[Out],
    execute: None = None,
    state_schema: type[BaseModel] | None = None,
    description: str | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    suspend_schema: type[BaseModel] | None = None,
    resume_schema: type[BaseModel] | None = None,
) -> Callable[[Callable[[StepContext[In]], Any]], Step[In, Out]]: ...


def create_step(
    *,
    id: str | None = None,
    input_schema: type[In],
    output_schema: type[Out],
    execute: Callable[[StepContext[In]], Any] | None = None,
    state_schema: type[BaseModel] | None = None,
    description: str | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    suspend_schema: type[BaseModel] | None = None,
    resume_schema: type[BaseModel] | None = None,
) -> Step[In, Out] | Callable[[Callable[[StepContext[In]], Any]], Step[In, Out]]:
    """Define a step.

    Called with ``execute`` it returns the :class:`Step`; called without, it is a
    decorator, and the step's id defaults to the function's name::

        @create_step(input_schema=Value, output_schema=Value)
        def shout(ctx):
            return Value(value=ctx.input_data.value.upper())

    Args:
        id: Unique within a workflow (defaults to the function's name in the
            decorator form).
        input_schema: pydantic model for the step's input.
        output_schema: pydantic model for the step's output.
        execute: ``execute(ctx)`` returning the output model or a dict; an
            ``async def`` is awaited without holding up other runs.
        state_schema: pydantic model for this step's view of the workflow state.
        description: Free text.
        retries: Retries after a failed call (the step's own count wins over
            the workflow's ``retry_config``); ``NonRetryableError`` stops them.
        timeout: Seconds one call may take; then it fails with
            ``StepTimeoutError`` (and may be retried). An ``async def`` body is
            cancelled; a plain function cannot be stopped, so it is abandoned:
            it runs on, and what it returns is ignored.
        suspend_schema: pydantic model for the payload of ``ctx.suspend()``.
        resume_schema: pydantic model for the ``resume_data`` of ``run.resume()``.

    Returns:
        The step, or a decorator that makes one.

    Raises:
        WorkflowDefinitionError: for an empty id, an id with a ``.``, or a bad
            ``retries`` or ``timeout``.
        TypeError: for schemas that are not pydantic models or a body that is
            not callable.
    """
    options: dict[str, Any] = {
        "state_schema": state_schema,
        "description": description,
        "retries": retries,
        "timeout": timeout,
        "suspend_schema": suspend_schema,
        "resume_schema": resume_schema,
    }
    if execute is not None:
        return _build_step(
            id=id,
            input_schema=input_schema,
            output_schema=output_schema,
            execute=execute,
            **options,
        )

    def decorate(body: Callable[[StepContext[In]], Any]) -> Step[In, Out]:
        return _build_step(
            id=id, input_schema=input_schema, output_schema=output_schema, execute=body, **options
        )

    return decorate


class StepContext(Generic[In]):
    """What a step body (or a condition, or a ``map`` function) receives as ``ctx``.

    Attributes:
        input_data: The step's input, validated against its ``input_schema``.
        run_id: The run's id.
        workflow_id: The id of the workflow the step belongs to (a nested
            workflow's own id inside it).
        step_id: This step's id.
        path: This step's path in the run's results (``"child.step"`` inside
            a nested workflow).
        request_context: The run's :class:`RequestContext`; changes are seen by
            later steps of the same run.
        retry_count: How many times this step has been retried in this round (0 at first).
        resume_data: What ``run.resume()`` passed, validated against the step's
            ``resume_schema`` (``None`` unless this call resumes the step).
        abort_signal: Set when the step should give up: the run was
            cancelled, a sibling in ``parallel`` failed, or the step timed out.
        iteration_count: In a loop's condition, how many times the loop has
            run its step; ``None`` elsewhere.
    """

    __slots__ = (
        "_bail_schema",
        "_definitions",
        "_init_data",
        "_log_fields",
        "_logger",
        "_outputs",
        "_prefix",
        "_read_only",
        "_state",
        "_workflow_input_schema",
        "_workflow_state_schema",
        "abort_signal",
        "input_data",
        "iteration_count",
        "path",
        "request_context",
        "resume_data",
        "retry_count",
        "run_id",
        "step",
        "step_id",
        "workflow_id",
    )

    def __init__(
        self,
        *,
        step: Step[In, Any] | None,
        input_data: In,
        run_id: str,
        workflow_id: str,
        state: Any,
        workflow_state_schema: type[BaseModel] | None,
        request_context: RequestContext,
        init_data: Any,
        workflow_input_schema: type[BaseModel],
        definitions: Mapping[str, Step[Any, Any]],
        outputs: Mapping[str, Any],
        log_fields: dict[str, Any],
        path: str | None = None,
        prefix: str = "",
        retry_count: int = 0,
        resume_data: Any = None,
        abort_signal: AbortSignal | None = None,
        read_only: bool = False,
        iteration_count: int | None = None,
        bail_schema: type[BaseModel] | None = None,
    ) -> None:
        self.step = step
        self.step_id = step.id if step is not None else (path or "")
        self.path = path if path is not None else self.step_id
        self.input_data = input_data
        self.run_id = run_id
        self.workflow_id = workflow_id
        self.request_context = request_context
        self.retry_count = retry_count
        self.resume_data = resume_data
        self.abort_signal = abort_signal if abort_signal is not None else AbortSignal()
        self.iteration_count = iteration_count
        self._state = state
        self._workflow_state_schema = workflow_state_schema
        self._init_data = init_data
        self._workflow_input_schema = workflow_input_schema
        self._definitions = definitions
        self._outputs = outputs
        self._log_fields = log_fields
        self._logger: Any = None
        self._prefix = prefix
        self._read_only = read_only
        self._bail_schema = bail_schema

    @property
    def cancelled(self) -> bool:
        """Whether the step has been told to stop (``abort_signal`` is set)."""
        return self.abort_signal.aborted

    @property
    def state(self) -> Any:
        """The workflow state, as the step sees it.

        A model of the step's ``state_schema`` (or else the workflow's), or a
        copy of the plain dict when there is no schema.
        """
        schema = (self.step.state_schema if self.step else None) or self._workflow_state_schema
        if schema is not None:
            return schema.model_validate(self._state or {})
        return copy.deepcopy(self._state) if self._state is not None else {}

    def _refuse(self, what: str) -> None:
        if self._read_only:
            raise WorkflowError(
                f"{self.path!r}: {what} is not available here: a condition or map "
                "function only reads the run",
                run_id=self.run_id,
                step_id=self.step_id,
            )

    def set_state(self, value: Any) -> None:
        """Replace the workflow state; later steps read the new value.

        Args:
            value: A model or a mapping, validated against the workflow's
                ``state_schema`` when it has one.

        Raises:
            StepValidationError: if the value fails the workflow's state schema.
            SnapshotEncodingError: if the value cannot be stored in a snapshot.
            WorkflowError: in a condition or a ``map`` function, which only read.
        """
        self._refuse("set_state()")
        schema = self._workflow_state_schema
        if schema is not None:
            model = validate_for_step(
                schema,
                value,
                f"step {self.step_id!r}: the set_state() value",
                "the workflow's state schema",
                run_id=self.run_id,
                step_id=self.step_id,
            )
            new_state = model.model_dump(mode="json")
        else:
            new_state = plain(value)
            if isinstance(new_state, Mapping):
                new_state = dict(new_state)
            check_encodable(new_state, "state")
            new_state = copy_plain(new_state)  # later changes to the caller's value stay out
        self._state = new_state

    def suspend(self, payload: Any = None) -> NoReturn:
        """Suspend the run at this step; it waits, holding no thread, for ``run.resume()``.

        This leaves the body at once (it raises an exception the runtime
        catches, derived from ``BaseException`` so ``except Exception`` does
        not stop it). On resume the body is called again from the start with
        the same input and ``ctx.resume_data`` set.

        Args:
            payload: What the run's result shows for this step (a model or
                plain data), validated against the step's ``suspend_schema``.

        Raises:
            StepValidationError: if the payload does not fit ``suspend_schema``.
            WorkflowError: in a condition or a ``map`` function.
        """
        self._refuse("suspend()")
        schema = self.step.suspend_schema if self.step is not None else None
        if schema is not None:
            payload = validate_for_step(
                schema,
                payload,
                f"step {self.step_id!r}: the suspend() payload",
                "its suspend schema",
                run_id=self.run_id,
                step_id=self.step_id,
            ).model_dump(mode="json")
        else:
            payload = plain(payload)
            check_encodable(payload, f"step {self.step_id!r} suspend payload")
            payload = copy_plain(payload)
        raise SuspendRequest(payload)

    def bail(self, result: Any) -> NoReturn:
        """End the whole run now as a success, with ``result`` as its result.

        Leaves the body at once, like :meth:`suspend`; no later step runs.

        Args:
            result: The run's result (a model or plain data), validated
                against the workflow's ``output_schema``.

        Raises:
            StepValidationError: if the result does not fit the output schema.
            WorkflowError: in a condition or a ``map`` function.
        """
        self._refuse("bail()")
        schema = self._bail_schema
        if schema is not None:
            result = validate_for_step(
                schema,
                result,
                f"step {self.step_id!r}: the bail() result",
                "the workflow's output schema",
                run_id=self.run_id,
                step_id=self.step_id,
            ).model_dump(mode="json")
        else:
            result = plain(result)
            check_encodable(result, f"step {self.step_id!r} bail result")
        raise BailOut(result)

    @property
    def raw_state(self) -> Any:
        """The state as plain data (for the runtime)."""
        return self._state

    def get_init_data(self) -> Any:
        """The input of the workflow this step belongs to, as its ``input_schema`` model."""
        return self._workflow_input_schema.model_validate(self._init_data)

    def get_step_result(self, step: Step[Any, Any] | str) -> Any:
        """The output of an earlier step of this run, as its ``output_schema`` model.

        Inside a nested workflow a step id names a step of the same nested
        workflow; a full path (``"child.step"``) names any step.

        Args:
            step: The step or its id (or path).

        Returns:
            The output model, or ``None`` when that step has not succeeded in this run.

        Raises:
            KeyError: if the workflow has no step with that id.
        """
        step_id = step if isinstance(step, str) else step.id
        path = self._prefix + step_id
        definition = self._definitions.get(path)
        if definition is None:
            path = step_id
            definition = self._definitions.get(path)
        if definition is None:
            raise KeyError(f"workflow {self.workflow_id!r} has no step {step_id!r}")
        output = self._outputs.get(path)
        if output is None:
            return None
        return definition.output_schema.model_validate(output)

    @property
    def logger(self) -> Any:
        """A structlog logger bound to the run's ``trace_id``, ``run_id`` and this step."""
        if self._logger is None:
            self._logger = step_logger(**self._log_fields)
        return self._logger
