"""Steps: typed units of work (``Step``, ``create_step``) and how values are validated for them."""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Generic, TypeAlias, TypeVar, overload

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from runtime._errors import SnapshotEncodingError, StepValidationError, WorkflowDefinitionError
from runtime._ids import shown_name, unstorable_text
from runtime._model import _MODEL_VALIDATE, class_attribute, validate_stored
from runtime._model_keys import refuse_unkept
from runtime._options import seconds_of

if TYPE_CHECKING:
    from runtime._step_context import StepContext

__all__ = [
    "Step",
    "create_step",
    "dump_for_step",
    "not_dumped_error",
    "plain",
    "stored_as",
    "validate_for_step",
    "validate_input",
    "validate_output",
    "validate_stored",
    "where_not_dumped",
]


In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)
# A Step and a StepContext only hand out their types: a Step[Order, Receipt] is a
# Step[BaseModel, BaseModel], so that members of different types join in one list.
In_co = TypeVar("In_co", bound=BaseModel, covariant=True)
Out_co = TypeVar("Out_co", bound=BaseModel, covariant=True)

StepBody = Callable[["StepContext[Any]"], Any]
_Returned: TypeAlias = Out | Mapping[str, Any] | Awaitable[Out | Mapping[str, Any]]
"""What a body of a step with output ``Out`` may return, for the type checker."""
"""``execute(ctx)``: returns the output model or a dict, or a coroutine that does."""


def plain(value: Any) -> Any:
    """A model as plain JSON-like data; anything else unchanged."""
    if isinstance(value, BaseModel):
        return dump_model(value)
    return value


M = TypeVar("M", bound=BaseModel)

_MODEL_DUMP: Final = BaseModel.model_dump


def validate_model(schema: type[M], data: Any) -> M:
    """``schema.model_validate(data)``; straight to pydantic's validator if ``schema`` keeps it.

    ``model_validate`` is a Python wrapper around the validator that costs about
    as much as validating a small input (measured: 4.4 µs for validate and dump
    of a one-field input, 1.4 µs straight). A schema that overrides it, or whose
    definition is not complete yet, gets the wrapper.
    """
    if getattr(class_attribute(schema, "model_validate"), "__func__", None) is _MODEL_VALIDATE and (
        class_attribute(schema, "__pydantic_complete__")
    ):
        model: M = class_attribute(schema, "__pydantic_validator__").validate_python(data)
        return model
    return schema.model_validate(data)


def dump_model(model: BaseModel) -> Any:
    """``model.model_dump(mode="json", by_alias=True)``; straight to the serializer if it can.

    By alias: what a snapshot holds is validated again by the same schema (the
    next step's input, ``ctx.state``, a typed result), and a model whose fields
    have aliases validates them, not the fields' names (unless it also allows
    those), as the JSON a web framework returns for it holds them.
    """
    kind = type(model)
    if class_attribute(kind, "model_dump") is _MODEL_DUMP:
        serializer = class_attribute(kind, "__pydantic_serializer__")
        return serializer.to_python(model, mode="json", by_alias=True)
    return model.model_dump(mode="json", by_alias=True)


_BYTES_HINT: Final = (
    "a bytes field is kept as UTF-8 text in a snapshot; for bytes that are not UTF-8, give its "
    "model ConfigDict(ser_json_bytes='base64', val_json_bytes='base64')"
)


def why_not_dumped(exc: Exception) -> str:
    """What :func:`dump_model`'s error says, and for bytes that are not UTF-8, what to do."""
    text = str(exc)
    return f"{text} ({_BYTES_HINT})" if "utf-8" in text.lower() else text


def where_not_dumped(model: BaseModel, path: str, exc: Exception) -> tuple[str, str] | None:
    """Where in ``model`` sits what its JSON-mode dump refused with ``exc``, and what it is.

    Looked for in the model's Python-mode dump (by alias, as a snapshot names
    the fields), only once the dump failed: the first value pydantic cannot
    write as JSON on its own (bytes that are not UTF-8, an object of an unknown
    type), or else, for pydantic's "maximum serialization depth", the deepest
    list or dict. A value the Python-mode dump keeps as it is (a ``datetime``)
    is not blamed for what another field did.

    Args:
        model: The model whose ``dump_model`` failed.
        path: How the model is named in the error, such as ``"input_data"``.
        exc: What the dump raised.

    Returns:
        The path (``input_data['items'][3]``) and a description of the value,
        or ``None`` if it cannot be told (the Python-mode dump failed too).
    """
    try:
        data = model.model_dump(by_alias=True)
    except Exception:  # pydantic's serialization errors have no common base
        return None
    too_deep = "depth" in str(exc).lower()
    deepest: tuple[str, str, int] | None = None
    stack: list[tuple[Any, str, int]] = [(data, path, 0)]
    while stack:  # without recursion: the value may be nested thousands deep
        item, where, depth = stack.pop()
        if isinstance(item, Mapping):
            children = [(value, f"{where}[{key!r}]") for key, value in item.items()]
        elif isinstance(item, list | tuple | set | frozenset):
            children = [(value, f"{where}[{index}]") for index, value in enumerate(item)]
        else:
            if not too_deep:
                try:
                    to_jsonable_python(item)
                except Exception:
                    return (where, type(item).__qualname__)
            continue
        if deepest is None or depth > deepest[2]:
            deepest = (where, type(item).__name__, depth)
        stack.extend((value, at, depth + 1) for value, at in reversed(children))
    if too_deep and deepest is not None:
        where, kind, depth = deepest
        return (where, f"{kind} (nested {depth} levels deep, deeper than pydantic serializes)")
    return None


def validate_for_step(
    schema: type[M],
    value: Any,
    what: str,
    role: str,
    *,
    run_id: str,
    step_id: str,
    stored: bool = False,
) -> M:
    """``value`` as a ``schema`` model (as it is if it already is one).

    A model of another class is dumped and validated as a snapshot would hold it
    (see :func:`validate_stored`).

    Args:
        schema: The model to validate against.
        value: A model or plain data.
        what: What the value is, for the message: ``"step 'a': its input"``.
        role: What the schema is, for the message: ``"its input schema"``.
        run_id: The run, for the error.
        step_id: The step, for the error.
        stored: ``value`` is plain data a snapshot held (see :func:`validate_stored`),
            not data the user handed over.

    Raises:
        StepValidationError: ``"<what> does not fit <role> <Schema>: <errors>"``.
    """
    if isinstance(value, schema):
        return value
    if isinstance(value, BaseModel):  # plain(value), without a call: a step's input is a dict
        value = dump_for_step(value, what, run_id=run_id, step_id=step_id)
        stored = True
    try:
        return validate_stored(schema, value) if stored else validate_model(schema, value)
    except ValidationError as exc:
        raise _unfit(f"{what} does not fit {role}", schema, exc, run_id, step_id) from exc


def dump_for_step(model: BaseModel, what: str, *, run_id: str | None, step_id: str | None) -> Any:
    """:func:`dump_model` of a value a step hands over; a refused dump names where and why.

    Args:
        model: The validated model (a suspend payload, a writer payload...).
        what: How to name it in the error: ``"step 'a' suspend payload"``.
        run_id: The run, for the error.
        step_id: The step, for the error (``None`` for a start's argument).

    Raises:
        SnapshotEncodingError: naming the path inside the value and its type (bytes
            that are not UTF-8, with what to do; nesting too deep), not pydantic's
            bare ``UnicodeDecodeError``.
    """
    try:
        return dump_model(model)
    except Exception as exc:  # pydantic's serialization errors have no common base
        raise not_dumped_error(model, what, exc, run_id=run_id, step_id=step_id) from exc


def not_dumped_error(
    model: BaseModel, what: str, exc: Exception, *, run_id: str | None, step_id: str | None
) -> SnapshotEncodingError:
    """The error for ``model`` (named ``what``), whose JSON-mode dump raised ``exc``.

    It names the path inside the value and its type (:func:`where_not_dumped`), or
    the model's type when that cannot be told, and why (:func:`why_not_dumped`).
    """
    where, type_name = where_not_dumped(model, what, exc) or (what, type(model).__name__)
    return SnapshotEncodingError(
        f"{where} holds a value of type {type_name}, which cannot be stored in a snapshot: "
        f"{why_not_dumped(exc)}",
        path=where,
        type_name=type_name,
        run_id=run_id,
        step_id=step_id,
    )


def stored_as(
    schema: type[BaseModel], data: Any, what: str, role: str, *, run_id: str, step_id: str
) -> Any:
    """``data`` (a snapshot's) validated by ``schema`` and dumped again, as the next node takes it.

    Nothing the user's schema does escapes it (the run actor calls it on its own
    thread): a validator may raise what pydantic passes on (all but ``ValueError``
    and ``AssertionError``), or put into a field a value JSON cannot hold. Either
    crashed the run actor (``RunCrashedError``, a traceback on stderr).

    Args:
        schema: The model the data must fit.
        data: Plain data, as a snapshot holds it.
        what: What the data is, for the message: ``"the input of nested workflow 'c'"``.
        role: What the schema is, for the message: ``"its input schema"``.
        run_id: The run, for the error.
        step_id: The step or node, for the error.

    Raises:
        StepValidationError: ``"<what> does not fit <role> <Schema>: <errors>"``, or
            ``"... was rejected by ..."`` for a validator's own exception.
        SnapshotEncodingError: for a validated value that cannot be stored.
    """
    try:
        model = validate_stored(schema, data)
    except ValidationError as exc:
        text = f"{what} does not fit {role} {schema.__name__}"
        raise StepValidationError.from_validation(
            text, exc, run_id=run_id, step_id=step_id
        ) from exc
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise StepValidationError(
            f"{what} was rejected by {role} {schema.__name__}: a validator raised {reason}",
            errors=[{"type": "validator_raised", "loc": (), "msg": reason}],
            run_id=run_id,
            step_id=step_id,
        ) from exc
    try:
        return dump_model(model)
    except Exception as exc:  # pydantic's serialization errors have no common base
        where, type_name = where_not_dumped(model, schema.__name__, exc) or (
            schema.__name__,
            schema.__name__,
        )
        raise SnapshotEncodingError(
            f"{what}, validated by {role} {schema.__name__}, cannot be stored in a snapshot: "
            f"{where} holds a value of type {type_name} ({why_not_dumped(exc)})",
            path=where,
            type_name=type_name,
            run_id=run_id,
            step_id=step_id,
        ) from exc


def validate_input(step: Step[M, Any], value: Any, run_id: str) -> M:
    """:func:`validate_for_step` of a step's input; its message is made on failure."""
    schema = step.input_schema
    # A snapshot's dict (the usual input) is told by its type: an isinstance of
    # BaseModel goes through its ABC metaclass, a quarter of pydantic's validation.
    if type(value) is not dict and isinstance(value, BaseModel):
        return validate_for_step(
            schema,
            value,
            f"step {step.id!r}: its input",
            "its input schema",
            run_id=run_id,
            step_id=step.id,
        )
    try:
        return validate_stored(schema, value)  # what the run's snapshot holds
    except ValidationError as exc:
        text = f"step {step.id!r}: its input does not fit its input schema"
        raise _unfit(text, schema, exc, run_id, step.id) from exc


def validate_output(step: Step[Any, M], value: Any, run_id: str) -> M:
    """:func:`validate_for_step` of what a step's body returned; its message is made on failure."""
    schema = step.output_schema
    if isinstance(value, schema):
        return value
    try:
        if isinstance(value, BaseModel):  # another model: checked as its dump is
            dumped = dump_for_step(value, step._output_name, run_id=run_id, step_id=step.id)
            return validate_stored(schema, dumped)
        return validate_model(schema, value)
    except ValidationError as exc:
        if value is None:  # most often a body without a return: say so, not "NoneType"
            raise StepValidationError(
                f"step {step.id!r} returned None: its body must return a {schema.__name__} "
                "(its output schema) or a dict that fits it; is a return statement missing?",
                errors=[
                    dict(item)
                    for item in exc.errors(
                        include_url=False, include_context=False, include_input=False
                    )
                ],
                run_id=run_id,
                step_id=step.id,
            ) from exc
        returned = f"step {step.id!r}: the {type(value).__name__} it returned"
        text = f"{returned} does not fit its output schema"
        raise _unfit(text, schema, exc, run_id, step.id) from exc


def _unfit(
    text: str, schema: type[BaseModel], exc: ValidationError, run_id: str, step_id: str
) -> StepValidationError:
    """The error for a value that does not fit ``schema``: ``text``, the schema and the errors."""
    return StepValidationError.from_validation(
        f"{text} {schema.__name__}", exc, run_id=run_id, step_id=step_id
    )


@dataclass(frozen=True, slots=True, eq=False)
class Step(Generic[In_co, Out_co]):
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
        writer_schema: The model ``ctx.writer.write(payload)`` validates its
            payloads against (``None``: any plain data).
    """

    id: str
    input_schema: type[In_co]
    output_schema: type[Out_co]
    execute: StepBody
    state_schema: type[BaseModel] | None = None
    description: str | None = None
    retries: int | None = None
    timeout: float | None = None
    suspend_schema: type[BaseModel] | None = None
    resume_schema: type[BaseModel] | None = None
    writer_schema: type[BaseModel] | None = None
    is_async: bool = field(init=False)
    _output_name: str = field(init=False, repr=False)
    """What the step's output is called in an error, made once rather than per call."""

    def __post_init__(self) -> None:
        body: Any = self.execute
        is_async = inspect.iscoroutinefunction(body) or inspect.iscoroutinefunction(
            getattr(body, "__call__", None)  # noqa: B004 - an object with an async __call__
        )
        object.__setattr__(self, "is_async", is_async)
        object.__setattr__(self, "_output_name", f"step {self.id!r} output")

    def __repr__(self) -> str:
        return f"Step(id={self.id!r})"


def _check_schema(value: Any, what: str, step_id: str) -> None:
    if not (isinstance(value, type) and issubclass(value, BaseModel)):
        raise TypeError(
            f"step {step_id!r}: {what} must be a pydantic BaseModel subclass, got {value!r}"
        )
    refuse_unkept(value, f"step {step_id!r}: {what}")


def _check_takes_ctx(execute: Callable[..., Any], step_id: str) -> None:
    """Refuse a body that cannot be called as ``execute(ctx)``, at definition, not in a run.

    A callable whose signature Python cannot read (some builtins) is let through.

    Raises:
        TypeError: if ``execute`` cannot take one positional argument.
    """
    try:
        signature = inspect.signature(execute)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(None)
    except TypeError:
        raise TypeError(
            f"step {step_id!r}: execute must take one argument, the step's context "
            f"(execute(ctx)), but its signature is {signature}"
        ) from None


def _default_id(execute: Any) -> str:
    """The id a step takes from its body's name, for a body that has a name of its own.

    Raises:
        TypeError: if ``execute`` is not callable.
        WorkflowDefinitionError: if it has no name to give: a lambda (every one is
            ``<lambda>``, so two would clash as one id no caller wrote), a
            ``functools.partial``, a callable object.
    """
    if not callable(execute):
        raise TypeError(f"execute must be callable, got {execute!r}")
    name = getattr(execute, "__name__", None)
    if isinstance(name, str) and name and name != "<lambda>":
        return name
    what = "a lambda" if name == "<lambda>" else f"a {type(execute).__name__} object"
    raise WorkflowDefinitionError(
        f"create_step() needs id=... here: a step's id defaults to its function's name, "
        f"and execute is {what}, which has none"
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
    timeout: float | timedelta | None = None,
    suspend_schema: type[BaseModel] | None = None,
    resume_schema: type[BaseModel] | None = None,
    writer_schema: type[BaseModel] | None = None,
) -> Step[In, Out]:
    if id is None:
        id = _default_id(execute)
    if not isinstance(id, str) or not id:
        raise WorkflowDefinitionError(f"a step id must be a non-empty string, got {id!r}")
    problem = unstorable_text(id)
    if problem is not None:
        raise WorkflowDefinitionError(f"step id {shown_name(id)} {problem}")
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
        ("writer_schema", writer_schema),
    ):
        if schema is not None:
            _check_schema(schema, name, id)
    if not callable(execute):
        raise TypeError(f"step {id!r}: execute must be callable, got {execute!r}")
    _check_takes_ctx(execute, id)
    if retries is not None and (
        isinstance(retries, bool) or not isinstance(retries, int) or retries < 0
    ):
        raise WorkflowDefinitionError(
            f"step {id!r}: retries must be a whole number of 0 or more, got {retries!r}"
        )
    timeout = seconds_of(timeout)
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout < math.inf
    ):
        raise WorkflowDefinitionError(
            f"step {id!r}: timeout must be a finite number of seconds above 0 or a timedelta "
            f"(None for no timeout), got {timeout!r}"
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
        writer_schema=writer_schema,
    )


@overload
def create_step(
    *,
    id: str,
    input_schema: type[In],
    output_schema: type[Out],
    execute: Callable[[StepContext[In]], _Returned[Out]],
    state_schema: type[BaseModel] | None = None,
    description: str | None = None,
    retries: int | None = None,
    timeout: float | timedelta | None = None,
    suspend_schema: type[BaseModel] | None = None,
    resume_schema: type[BaseModel] | None = None,
    writer_schema: type[BaseModel] | None = None,
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
    timeout: float | timedelta | None = None,
    suspend_schema: type[BaseModel] | None = None,
    resume_schema: type[BaseModel] | None = None,
    writer_schema: type[BaseModel] | None = None,
) -> Callable[[Callable[[StepContext[In]], _Returned[Out]]], Step[In, Out]]: ...


def create_step(
    *,
    id: str | None = None,
    input_schema: type[In],
    output_schema: type[Out],
    execute: Callable[[StepContext[In]], Any] | None = None,
    state_schema: type[BaseModel] | None = None,
    description: str | None = None,
    retries: int | None = None,
    timeout: float | timedelta | None = None,
    suspend_schema: type[BaseModel] | None = None,
    resume_schema: type[BaseModel] | None = None,
    writer_schema: type[BaseModel] | None = None,
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
        timeout: Seconds (or a ``timedelta``) one call may take; then it fails with
            ``StepTimeoutError`` (and may be retried). An ``async def`` body is
            cancelled; a plain function cannot be stopped, so it is abandoned:
            it runs on, and what it returns is ignored.
        suspend_schema: pydantic model for the payload of ``ctx.suspend()``.
        resume_schema: pydantic model for the ``resume_data`` of ``run.resume()``.
        writer_schema: pydantic model for the payloads the step writes into
            the run's stream with ``ctx.writer.write(payload)``.

    Returns:
        The step, or a decorator that makes one.

    Raises:
        WorkflowDefinitionError: for an empty id, an id with a ``.``, no id for
            a body without a name of its own (a lambda), or a bad ``retries``
            or ``timeout``.
        TypeError: for schemas that are not pydantic models or a body that is
            not callable, or cannot be called with one argument (``execute(ctx)``).
    """
    options: dict[str, Any] = {
        "state_schema": state_schema,
        "description": description,
        "retries": retries,
        "timeout": timeout,
        "suspend_schema": suspend_schema,
        "resume_schema": resume_schema,
        "writer_schema": writer_schema,
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
