"""What a run's snapshots keep of a model, and how a model reads its fields back.

A run keeps every model it handles (input, outputs, state, payloads) as
``model_dump(mode="json", by_alias=True)`` and validates it again where it is
used next. :func:`refuse_unkept` refuses, at definition, a schema whose data
would not survive that trip; :func:`validation_keys` says which keys a model
reads a field by, for this and for the chain check of :mod:`runtime._schema_fit`.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Final, Literal, Union

import pydantic
from pydantic import BaseModel, SecretBytes, SecretStr

from runtime._errors import WorkflowDefinitionError

__all__ = [
    "UNION_ORIGINS",
    "Unkept",
    "refuse_unkept",
    "strip_annotated",
    "unkept_field",
    "validation_keys",
]

UNION_ORIGINS: tuple[Any, ...] = (Union, types.UnionType)


def strip_annotated(annotation: Any) -> Any:
    """``annotation`` without the ``Annotated[...]`` around it, if any."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def validation_keys(model: type[BaseModel], name: str, field: Any) -> list[str] | None:
    """The keys ``model`` takes field ``name`` by (alias first); ``None`` if not plain keys."""
    chosen = field.validation_alias
    if chosen is not None and not isinstance(chosen, str):
        return None
    config = model.model_config
    aliases = [chosen or field.alias] if (chosen or field.alias) else []
    if config.get("validate_by_alias") is False:
        aliases = []
    by_name = bool(config.get("populate_by_name") or config.get("validate_by_name"))
    return [*aliases, name] if by_name or not aliases else aliases


_SECRET_TYPES: tuple[type, ...] = tuple(
    kind
    for kind in (SecretStr, SecretBytes, getattr(pydantic, "Secret", None))
    if isinstance(kind, type)
)
"""pydantic's secret types: ``model_dump(mode="json")`` writes their values as stars."""


Unkept = tuple[str, Literal["secret", "excluded", "computed", "alias"]]
"""Where a model holds a value a snapshot cannot keep, and why."""


def unkept_field(model: type[BaseModel]) -> Unkept | None:
    """Where ``model`` holds a value a run's snapshot cannot keep, as ``field.inner[]``, and why.

    A run keeps its data as JSON-like snapshots (``model_dump``), where pydantic
    writes a secret (a ``SecretStr``...) as ``"**********"`` and leaves out a
    field marked ``Field(exclude=True)``: a step would be handed the stars, or
    the field's default, or fail for want of it. A computed field of a model
    that forbids extra fields is written, and then refused as an extra one by
    the same model; a field written under a key (its serialization alias)
    that the model does not read it back by is lost. Nested models, containers,
    unions and ``Annotated`` are looked into. ``None`` if it keeps everything.
    """
    return _unkept_in(model, "", set())


def _unkept_in(annotation: Any, path: str, seen: set[type]) -> Unkept | None:
    annotation = strip_annotated(annotation)
    origin = typing.get_origin(annotation)
    kind = origin if origin is not None else annotation
    if isinstance(kind, type) and issubclass(kind, _SECRET_TYPES):
        return (path or "the model itself", "secret")
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return None
        seen.add(annotation)
        computed = annotation.model_computed_fields
        if computed and annotation.model_config.get("extra") == "forbid":
            name = next(iter(computed))
            return (f"{path}.{name}" if path else name, "computed")
        for name, field in annotation.model_fields.items():
            where = f"{path}.{name}" if path else name
            if field.exclude is True:
                return (where, "excluded")
            keys = validation_keys(annotation, name, field)
            written = field.serialization_alias or field.alias or name
            if keys is not None and written not in keys:
                return (where, "alias")
            found = _unkept_in(field.annotation, where, seen)
            if found is not None:
                return found
        return None
    inner = path if origin in UNION_ORIGINS else f"{path}[]"  # a union's member is the field
    for argument in typing.get_args(annotation):
        found = _unkept_in(argument, inner, seen)
        if found is not None:
            return found
    return None


_WHY: Final[dict[str, str]] = {
    "secret": "holds a secret at {where!r} (a pydantic SecretStr, SecretBytes or Secret): a "
    "run keeps its data in snapshots, where pydantic writes a secret as '**********', so the "
    "steps after it, and the result, would get the stars, not the secret. Keep the secret "
    "out of the run's data: pass what names it, and read it inside the step (from your "
    "configuration or secret store)",
    "excluded": "excludes the field {where!r} from its dumps (Field(exclude=True)): a run keeps "
    "its data in snapshots, which would leave it out, so the steps after it would get its "
    "default, or fail for want of it. Drop exclude=True from a schema a workflow uses "
    "(exclude it where you show the data)",
    "computed": "has the computed field {where!r} in a model that forbids extra fields: a run "
    "keeps its data in snapshots, where the computed field is written, and the same model "
    "then refuses it as an extra input. Allow extra fields (extra='ignore', the default), or "
    "compute the value inside the step",
    "alias": "writes the field {where!r} under a key it does not read it back by (its "
    "serialization_alias is not its validation alias): a run stores a model by alias and "
    "validates it again, so the next step would not find the field. Give the field one "
    "alias for both (Field(alias=...))",
}
"""What each reason of :data:`Unkept` means for a run, and what to do instead."""


def refuse_unkept(schema: type[BaseModel], what: str) -> None:
    """Refuse a schema whose data a run's snapshots cannot keep (see :func:`unkept_field`).

    Args:
        schema: The schema.
        what: Whose schema it is, for the message: ``"step 'a': input_schema"``.

    Raises:
        WorkflowDefinitionError: naming the field, why, and what to do instead.
    """
    found = unkept_field(schema)
    if found is not None:
        where, why = found
        reason = _WHY[why].format(where=where)
        raise WorkflowDefinitionError(f"{what} {schema.__name__} {reason}")
