"""A quicker ``__init__`` for frozen, slotted dataclasses: the actors' messages.

A frozen dataclass's generated ``__init__`` sets each field with
``object.__setattr__(self, name, value)``: a look-up of ``object`` in builtins,
of its ``__setattr__``, and a generic attribute set that searches the class for
the name, once per field. A call of a step carried 25 fields then and took 4.5 µs
to build (measured on the machines the benchmarks run on), and a run of three
steps builds three of them and three replies. The ``__init__`` made here calls
each field's slot descriptor directly: 2.9 µs for that call of a step (it has 14
fields now, the run's shared ones in one ``RunPart``). The class stays frozen,
since its ``__setattr__`` and ``__delattr__`` are still the dataclass's, which
raise ``FrozenInstanceError``. (Switching an instance's class to a mutable twin
while it is set, to use plain attribute stores, was slower still: see
``benchmarks/README.md``.)
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, TypeVar

__all__ = ["quick_frozen_init"]

T = TypeVar("T")

_NO_VALUE: Any = object()
"""The default of a field made by a factory: the factory is called when it is left out."""


def quick_frozen_init(cls: type[T]) -> type[T]:
    """Replace the ``__init__`` of ``cls``, a frozen slotted dataclass, with a quicker one.

    The new one takes the same parameters (checked: the same signature) and sets
    the same fields; a field with a ``default_factory`` gets a new value from it
    each time it is left out, as before.

    Raises:
        TypeError: if ``cls`` is not a frozen dataclass with slots, or has an
            ``__post_init__`` or a field outside ``__init__``, which this does
            not reproduce.
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen dataclass with slots")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if any(not field.init for field in fields):
        raise TypeError(f"{cls.__name__} has a field outside __init__")
    namespace: dict[str, Any] = {"_NO_VALUE": _NO_VALUE}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for index, field in enumerate(fields):
        name = field.name
        # The slot descriptor's __set__, found through the class (a base class's
        # field has its slot there): it stores into the slot, and nothing else.
        namespace[f"_set{index}"] = getattr(cls, name).__set__
        if field.default is not dataclasses.MISSING:
            namespace[f"_default{index}"] = field.default
            param = f"{name}=_default{index}"
        elif field.default_factory is not dataclasses.MISSING:
            namespace[f"_factory{index}"] = field.default_factory
            param = f"{name}=_NO_VALUE"
            body.append(f"    if {name} is _NO_VALUE:\n        {name} = _factory{index}()")
        else:
            param = name
        (keyword if field.kw_only else positional).append(param)
        body.append(f"    _set{index}(self, {name})")
    params_text = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    source = f"def __init__({params_text}):\n" + ("\n".join(body) or "    pass") + "\n"
    exec(source, namespace)
    made = namespace["__init__"]
    original = cls.__dict__["__init__"]
    if _parameters(made) != _parameters(original):
        raise TypeError(f"the quick __init__ of {cls.__name__} would take other parameters")
    made.__qualname__ = f"{cls.__qualname__}.__init__"
    made.__module__ = cls.__module__
    made.__doc__ = original.__doc__
    made.__annotations__ = dict(getattr(original, "__annotations__", {}))
    setattr(cls, "__init__", made)  # noqa: B010 - a method replaced on purpose
    return cls


def _parameters(function: Any) -> list[tuple[str, Any, bool]]:
    """Each parameter's name, kind and whether it has a default."""
    return [
        (param.name, param.kind, param.default is not inspect.Parameter.empty)
        for param in inspect.signature(function).parameters.values()
    ]
