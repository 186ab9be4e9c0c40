"""What a run's snapshots keep of a model, and how a model reads its fields back.

A run keeps every model it handles (input, outputs, state, payloads) as
``model_dump(mode="json", by_alias=True)`` and validates it again where it is
used next. :func:`refuse_unkept` refuses, at definition, a schema whose data
would not survive that trip; :func:`validation_keys` says which keys a model
reads a field by, for this and for the chain check of :mod:`runtime._schema_fit`.
"""

from __future__ import annotations

import enum
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Final, Literal, Union

import pydantic
from pydantic import BaseModel, Json, SecretBytes, SecretStr, TypeAdapter

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


Unkept = tuple[
    str, Literal["secret", "excluded", "computed", "alias", "json", "enum", "key", "bytes"]
]
"""Where a model holds a value a snapshot cannot keep, and why."""


def unkept_field(model: type[BaseModel]) -> Unkept | None:
    """Where ``model`` holds a value a run's snapshot cannot keep, as ``field.inner[]``, and why.

    A run keeps its data as JSON-like snapshots (``model_dump``), where pydantic
    writes a secret (a ``SecretStr``...) as ``"**********"`` and leaves out a
    field marked ``Field(exclude=True)``: a step would be handed the stars, or
    the field's default, or fail for want of it. A computed field of a model
    that forbids extra fields is written, and then refused as an extra one by
    the same model; a field written under a key (its serialization alias)
    that the model does not read it back by is lost. And some JSON forms do not
    validate back at all, so the next step refused its input: a ``Json[...]``
    field is written as the value it parsed (not as JSON text), an enum member
    whose value is no JSON scalar (a tuple) as a list, and a dict key of a tuple
    type (or ``None``) as a string; and bytes written in one form and read in
    another (``ser_json_bytes`` without the same ``val_json_bytes``) come back
    as their encoded text, encoded again at every step. Nested models, containers, unions and
    ``Annotated`` are looked into. ``None`` if it keeps everything.
    """
    return _unkept_in(model, "", set())


def _is_json(annotation: Any, metadata: Any = ()) -> bool:
    """Whether ``annotation`` (or the field ``metadata`` beside it) is pydantic's ``Json``."""
    marks = list(metadata)
    while typing.get_origin(annotation) is typing.Annotated:
        marks.extend(annotation.__metadata__)
        annotation = typing.get_args(annotation)[0]
    return annotation is Json or any(mark is Json or type(mark) is Json for mark in marks)


@functools.lru_cache(maxsize=256)
def _unkept_member(kind: type[enum.Enum]) -> str | None:
    """The first member of ``kind`` whose JSON form does not validate back to it, if any."""
    adapter: TypeAdapter[Any] = TypeAdapter(kind)
    for member in kind:
        try:
            back = adapter.validate_python(adapter.dump_python(member, mode="json"))
        except Exception:  # pydantic's serialization errors have no common base
            return member.name
        if back is not member:
            return member.name
    return None


def _unkept_key(key: Any) -> bool:
    """Whether a dict key of this type comes back from its JSON form (a string) changed or not."""
    key = strip_annotated(key)
    origin = typing.get_origin(key)
    if origin in UNION_ORIGINS:
        return any(_unkept_key(member) for member in typing.get_args(key))
    kind = origin if origin is not None else key
    return kind is type(None) or (isinstance(kind, type) and issubclass(kind, tuple | frozenset))


def _unkept_in(
    annotation: Any, path: str, seen: set[type], bytes_differ: bool = False
) -> Unkept | None:
    """:func:`unkept_field` of ``annotation`` at ``path``.

    ``bytes_differ``: the model holding it writes bytes in JSON otherwise than it
    reads them (``ser_json_bytes`` is not ``val_json_bytes``).
    """
    if _is_json(annotation):
        return (path or "the model itself", "json")
    annotation = strip_annotated(annotation)
    origin = typing.get_origin(annotation)
    kind = origin if origin is not None else annotation
    if isinstance(kind, type) and issubclass(kind, _SECRET_TYPES):
        return (path or "the model itself", "secret")
    if bytes_differ and isinstance(kind, type) and issubclass(kind, bytes | bytearray):
        return (path or "the model itself", "bytes")
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return None
        seen.add(annotation)
        computed = annotation.model_computed_fields
        if computed and annotation.model_config.get("extra") == "forbid":
            name = next(iter(computed))
            return (f"{path}.{name}" if path else name, "computed")
        config = annotation.model_config
        differ = config.get("ser_json_bytes", "utf8") != config.get("val_json_bytes", "utf8")
        for name, field in annotation.model_fields.items():
            where = f"{path}.{name}" if path else name
            if field.exclude is True:
                return (where, "excluded")
            keys = validation_keys(annotation, name, field)
            written = field.serialization_alias or field.alias or name
            if keys is not None and written not in keys:
                return (where, "alias")
            if _is_json(field.annotation, field.metadata):
                return (where, "json")
            found = _unkept_in(field.annotation, where, seen, differ)
            if found is not None:
                return found
        return None
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        member = _unkept_member(annotation)
        if member is None:
            return None
        return (f"{path or 'the model itself'}: {annotation.__name__}.{member}", "enum")
    arguments = typing.get_args(annotation)
    mapping = isinstance(kind, type) and issubclass(kind, Mapping)
    if mapping and arguments and _unkept_key(arguments[0]):
        return (f"{path}[]" if path else "the model itself", "key")
    inner = path if origin in UNION_ORIGINS else f"{path}[]"  # a union's member is the field
    for argument in arguments:
        found = _unkept_in(argument, inner, seen, bytes_differ)
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
    "json": "has the Json field {where!r}: pydantic writes it as the value it parsed, not as "
    "JSON text, so the snapshot's data no longer validates as Json and the next step would "
    "refuse it. Type the field as the parsed value (list[int], not Json[list[int]]) and parse "
    "the text before the run (Model.model_validate_json)",
    "enum": "has an enum member whose value has no JSON form that validates back to it "
    "({where}; a tuple is written as a list): a run keeps its data as JSON-like snapshots, so "
    "the next step would refuse it. Give the enum str or int values",
    "bytes": "writes the bytes field {where!r} in one form and reads it in another (its "
    "ser_json_bytes is not its val_json_bytes): a run keeps its data as JSON-like snapshots, "
    "so each step would get the encoded text as the bytes (b'abc' as b'YWJj'). Give both the "
    "same value: ConfigDict(ser_json_bytes='base64', val_json_bytes='base64')",
    "key": "has the dict {where!r} whose key type is a tuple or takes None: a run keeps its "
    "data as JSON-like snapshots, where a key is a string ('1,2', 'None'), which the next "
    "step would refuse or read as another key. Use str keys (or a list of pairs)",
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
