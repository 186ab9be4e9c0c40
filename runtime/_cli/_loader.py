"""The ``MODULE:ATTR`` loader of ``callboard start``: import the user's module, take its workflow.

``MODULE`` is a dotted module name, looked up from the current folder first (as for
``python -m``), or a path ending in ``.py``; ``ATTR`` is a dotted attribute path in it,
which must lead to a committed workflow. Every way this can go wrong is a
:class:`LoadError` whose message says what to fix; when the module's own code raises,
its traceback is written to stderr first.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from runtime._workflow import Workflow

__all__ = ["LoadError", "load_workflow"]


class LoadError(Exception):
    """The target names no committed workflow, or its module cannot be imported."""


def load_workflow(target: str) -> Workflow[Any, Any]:
    """Import the module of a ``MODULE:ATTR`` target and return the workflow at ``ATTR``.

    Args:
        target: ``MODULE:ATTR``, like ``myapp.flows:checkout`` or ``flows.py:checkout``.

    Returns:
        The committed workflow found there.

    Raises:
        LoadError: The target is malformed, the module cannot be imported or raises,
            the attribute is missing, or it is not a committed workflow.
    """
    module_name, colon, attribute = target.rpartition(":")
    if not colon or not module_name or not attribute:
        raise LoadError(f"expected MODULE:ATTR (like myapp.flows:checkout), got {target!r}")
    module = _import(module_name)
    found: Any = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise LoadError(f"module {module.__name__!r} has no attribute {attribute!r}") from None
    if not isinstance(found, Workflow):
        raise LoadError(
            f"{target} is not a workflow but {_describe(found)}; "
            "give the committed result of create_workflow(...)"
        )
    if not found.committed:
        raise LoadError(f"workflow {found.id!r} at {target} is not committed: call .commit()")
    return found


def _describe(value: Any) -> str:
    if isinstance(value, type):
        return f"the class {value.__qualname__}"
    return f"a {type(value).__name__}"


def _import(name: str) -> ModuleType:
    """Import a module by dotted name (from the current folder first) or by ``.py`` path."""
    path = Path(name)
    if name.endswith(".py"):
        if not path.is_file():
            raise LoadError(f"cannot import {name}: no such file")
        module_name = path.stem
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise LoadError(f"cannot import {name}: not a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        loader = spec.loader
        try:
            _run_module_code(name, lambda: loader.exec_module(module))
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
        return module
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    imported: list[ModuleType] = []
    _run_module_code(name, lambda: imported.append(importlib.import_module(name)))
    return imported[0]


def _run_module_code(name: str, load: Callable[[], None]) -> None:
    try:
        load()
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise LoadError(f"cannot import {name}: no module named {exc.name!r}") from None
        _import_failed(name)
    except (Exception, SystemExit):
        _import_failed(name)


def _import_failed(name: str) -> NoReturn:
    # The module's own code raised: its traceback is what its author needs.
    sys.stderr.write(traceback.format_exc())
    exc_type, exc_value = sys.exc_info()[:2]
    kind = exc_type.__name__ if exc_type is not None else "an error"
    raise LoadError(f"importing {name} raised {kind}: {exc_value}")
