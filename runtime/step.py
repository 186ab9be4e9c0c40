"""Steps: typed units of work, and the context a step body receives."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel, ValidationError

from runtime.context import RequestContext
from runtime.errors import StepValidationError, WorkflowDefinitionError
from runtime.snapshot import check_encodable, copy_plain
from runtime.tracing import step_logger

__all__ = ["Step", "StepContext", "create_step", "plain", "validate_for_step"]

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
    """

    id: str
    input_schema: type[In]
    output_schema: type[Out]
    execute: StepBody
    state_schema: type[BaseModel] | None = None
    description: str | None = None
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
) -> Step[In, Out]:
    if id is None:
        id = getattr(execute, "__name__", None)
    if not isinstance(id, str) or not id:
        raise WorkflowDefinitionError(f"a step id must be a non-empty string, got {id!r}")
    _check_schema(input_schema, "input_schema", id)
    _check_schema(output_schema, "output_schema", id)
    if state_schema is not None:
        _check_schema(state_schema, "state_schema", id)
    if not callable(execute):
        raise TypeError(f"step {id!r}: execute must be callable, got {execute!r}")
    return Step(
        id=id,
        input_schema=input_schema,
        output_schema=output_schema,
        execute=execute,
        state_schema=state_schema,
        description=description,
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
) -> Callable[[Callable[[StepContext[In]], Any]], Step[In, Out]]: ...


def create_step(
    *,
    id: str | None = None,
    input_schema: type[In],
    output_schema: type[Out],
    execute: Callable[[StepContext[In]], Any] | None = None,
    state_schema: type[BaseModel] | None = None,
    description: str | None = None,
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

    Returns:
        The step, or a decorator that makes one.

    Raises:
        WorkflowDefinitionError: for an empty id.
        TypeError: for schemas that are not pydantic models or a body that is
            not callable.
    """
    if execute is not None:
        return _build_step(
            id=id,
            input_schema=input_schema,
            output_schema=output_schema,
            execute=execute,
            state_schema=state_schema,
            description=description,
        )

    def decorate(body: Callable[[StepContext[In]], Any]) -> Step[In, Out]:
        return _build_step(
            id=id,
            input_schema=input_schema,
            output_schema=output_schema,
            execute=body,
            state_schema=state_schema,
            description=description,
        )

    return decorate


class StepContext(Generic[In]):
    """What a step body receives as ``ctx``.

    Attributes:
        input_data: The step's input, validated against its ``input_schema``.
        run_id: The run's id.
        workflow_id: The workflow's id.
        step_id: This step's id.
        request_context: The run's :class:`RequestContext`; changes are seen by
            later steps of the same run.
        retry_count: How many times this step has been retried in this run (0).
    """

    __slots__ = (
        "_definitions",
        "_init_data",
        "_log_fields",
        "_logger",
        "_outputs",
        "_state",
        "_workflow_input_schema",
        "_workflow_state_schema",
        "input_data",
        "request_context",
        "retry_count",
        "run_id",
        "step",
        "step_id",
        "workflow_id",
    )

    def __init__(
        self,
        *,
        step: Step[In, Any],
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
    ) -> None:
        self.step = step
        self.step_id = step.id
        self.input_data = input_data
        self.run_id = run_id
        self.workflow_id = workflow_id
        self.request_context = request_context
        self.retry_count = 0
        self._state = state
        self._workflow_state_schema = workflow_state_schema
        self._init_data = init_data
        self._workflow_input_schema = workflow_input_schema
        self._definitions = definitions
        self._outputs = outputs
        self._log_fields = log_fields
        self._logger: Any = None

    @property
    def state(self) -> Any:
        """The workflow state, as the step sees it.

        A model of the step's ``state_schema`` (or else the workflow's), or a
        copy of the plain dict when there is no schema.
        """
        schema = self.step.state_schema or self._workflow_state_schema
        if schema is not None:
            return schema.model_validate(self._state or {})
        return copy.deepcopy(self._state) if self._state is not None else {}

    def set_state(self, value: Any) -> None:
        """Replace the workflow state; later steps read the new value.

        Args:
            value: A model or a mapping, validated against the workflow's
                ``state_schema`` when it has one.

        Raises:
            StepValidationError: if the value fails the workflow's state schema.
            SnapshotEncodingError: if the value cannot be stored in a snapshot.
        """
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

    @property
    def raw_state(self) -> Any:
        """The state as plain data (for the runtime)."""
        return self._state

    def get_init_data(self) -> Any:
        """The run's input, validated against the workflow's ``input_schema``."""
        return self._workflow_input_schema.model_validate(self._init_data)

    def get_step_result(self, step: Step[Any, Any] | str) -> Any:
        """The output of an earlier step of this run, as its ``output_schema`` model.

        Args:
            step: The step or its id.

        Returns:
            The output model, or ``None`` when that step has not succeeded in this run.

        Raises:
            KeyError: if the workflow has no step with that id.
        """
        step_id = step if isinstance(step, str) else step.id
        definition = self._definitions.get(step_id)
        if definition is None:
            raise KeyError(f"workflow {self.workflow_id!r} has no step {step_id!r}")
        output = self._outputs.get(step_id)
        if output is None:
            return None
        return definition.output_schema.model_validate(output)

    @property
    def logger(self) -> Any:
        """A structlog logger bound to the run's ``trace_id``, ``run_id`` and this step."""
        if self._logger is None:
            self._logger = step_logger(**self._log_fields)
        return self._logger
