"""The import layers of DESIGN.md, checked by walking every module's imports with ast.

Layers (imports only go down, or stay within a layer):

    0 leaf         runtime._errors, runtime._model, runtime._options,
                   runtime._request_context, runtime._sync, runtime._handoff, runtime._ids,
                   runtime._clock, runtime._probes, runtime._queue, runtime._otel
    1 codec        runtime._snapshot, runtime._tracing, runtime._stores.*
    2 definitions  runtime._step, runtime._step_context, runtime._plan, runtime._schedule,
                   runtime._versions, runtime._schema_fit, runtime._model_keys
    3 machinery    actors.*
    4 facade       runtime._runtime, runtime._run, runtime._stream, runtime._workflow,
                   runtime._queries, runtime._scheduler
    5 entry        runtime (runtime/__init__.py), runtime.testing, runtime._cli.*,
                   runtime.__main__

The facade reaches the machinery only through ``actors.system``, imported by
``runtime._runtime`` inside a function (``Runtime.start``). Imports under
``if TYPE_CHECKING:`` never run, so they may point anywhere within runtime.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests._support import ROOT

RUNTIME_LAYERS = {
    "runtime._errors": 0,
    "runtime._model": 0,
    "runtime._options": 0,
    "runtime._request_context": 0,
    "runtime._sync": 0,
    "runtime._handoff": 0,
    "runtime._ids": 0,
    "runtime._clock": 0,
    "runtime._probes": 0,
    "runtime._queue": 0,
    "runtime._otel": 0,
    "runtime._snapshot": 1,
    "runtime._tracing": 1,
    "runtime._stores": 1,
    "runtime._stores.base": 1,
    "runtime._stores.memory": 1,
    "runtime._stores.sqlite": 1,
    "runtime._stores._writer": 1,
    "runtime._stores._parts": 1,
    "runtime._stores._backup": 1,
    "runtime._stores.open": 1,
    "runtime._stores.postgres": 1,
    "runtime._stores.schedules": 1,
    "runtime._step": 2,
    "runtime._step_context": 2,
    "runtime._plan": 2,
    "runtime._schedule": 2,
    "runtime._versions": 2,
    "runtime._schema_fit": 2,
    "runtime._model_keys": 2,
    "runtime._runtime": 4,
    "runtime._run": 4,
    "runtime._stream": 4,
    "runtime._run_input": 4,
    "runtime._restart": 4,
    "runtime._workflow": 4,
    "runtime._queries": 4,
    "runtime._scheduler": 4,
    "runtime": 5,
    "runtime.testing": 5,
    "runtime._pytest_plugin": 5,
    "runtime._pytest_fixtures": 5,
    "runtime._cli": 5,
    "runtime._cli._commands": 5,
    "runtime._cli._actions": 5,
    "runtime._cli._loader": 5,
    "runtime._cli._render": 5,
    "runtime._cli._schedules": 5,
    "runtime._cli._worker": 5,
    "runtime._cli._health": 5,
    "runtime._cli._check": 5,
    "runtime.__main__": 5,
}
ACTORS_LAYER = 3
ALLOWED_FOR_ACTORS = {name for name, layer in RUNTIME_LAYERS.items() if layer <= 2}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


SOURCES = {
    module_name(path): path
    for package in ("runtime", "actors")
    for path in sorted((ROOT / package).rglob("*.py"))
}
KNOWN_MODULES = set(SOURCES) | set(RUNTIME_LAYERS)


@dataclass(frozen=True)
class Import:
    module: str  # the module imported from, absolute
    line: int
    in_function: bool
    type_checking_only: bool


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    # `from runtime import _errors` imports the submodule runtime._errors.
    names = [f"{base}.{alias.name}" for alias in node.names]
    submodules = [name for name in names if name in KNOWN_MODULES]
    return submodules or [base]


def imports_of(source: str, importer: str, *, is_package: bool = False) -> list[Import]:
    """Every import in the source, with whether it sits in a function or a TYPE_CHECKING block."""
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(alias.name, node.lineno, in_function, type_checking))
        elif isinstance(node, ast.ImportFrom):
            for name in _resolve(node, importer, is_package):
                found.append(Import(name, node.lineno, in_function, type_checking))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, in_function, True)
            for child in node.orelse:
                visit(child, in_function, type_checking)
            return
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner, type_checking)

    visit(ast.parse(source), False, False)
    return found


def _modules(package: str) -> dict[str, list[Import]]:
    return {
        name: imports_of(path.read_text(), name, is_package=path.name == "__init__.py")
        for name, path in SOURCES.items()
        if name.split(".")[0] == package
    }


RUNTIME = _modules("runtime")
ACTORS = _modules("actors")


def _ours(module: str) -> bool:
    return module == "runtime" or module.startswith(("runtime.", "actors.")) or module == "actors"


# --- the walker itself -------------------------------------------------------------


def test_the_walker_finds_imports_in_functions_and_type_checking_blocks() -> None:
    source = """
import msgpack
from typing import TYPE_CHECKING
from runtime import _errors
from runtime._model import RunStatus
if TYPE_CHECKING:
    from runtime._runtime import Runtime
def start():
    from actors.supervisor import Supervisor
    import actors.run
class Box:
    def method(self):
        from . import _plan
"""
    found = {
        (i.module, i.in_function, i.type_checking_only) for i in imports_of(source, "runtime.x")
    }

    assert found == {
        ("msgpack", False, False),
        ("typing", False, False),
        ("runtime._errors", False, False),
        ("runtime._model", False, False),
        ("runtime._runtime", False, True),
        ("actors.supervisor", True, False),
        ("actors.run", True, False),
        ("runtime._plan", True, False),
    }


def test_every_module_is_walked_and_has_a_layer() -> None:
    assert set(RUNTIME) <= set(RUNTIME_LAYERS), set(RUNTIME) - set(RUNTIME_LAYERS)
    assert {"runtime", "runtime._runtime", "runtime._snapshot", "runtime._stores.base"} <= set(
        RUNTIME
    )
    assert {
        "actors",
        "actors._dispatch",
        "actors.messages",
        "actors.registry",
        "actors.run",
        "actors.step",
        "actors.supervisor",
    } <= set(ACTORS)
    for imports in list(RUNTIME.values()) + list(ACTORS.values()):
        for found in imports:
            if found.module.startswith("runtime."):
                assert found.module in RUNTIME_LAYERS, f"{found.module} has no layer"


# --- the rules ----------------------------------------------------------------------


@pytest.mark.parametrize("module", sorted(RUNTIME))
def test_only_init_and_main_of_runtime_look_public(module: str) -> None:
    below = module.split(".")[1:]
    assert below in ([], ["__main__"], ["testing"]) or below[0].startswith("_"), (
        f"{module} looks public: name it with a leading underscore and re-export "
        "its public names from runtime/__init__.py"
    )


@pytest.mark.parametrize("importer", sorted(ACTORS))
def test_actors_import_only_the_lower_runtime_layers_by_module_path(importer: str) -> None:
    bad = [
        f"line {i.line}: {i.module}"
        for i in ACTORS[importer]
        if (i.module == "runtime" or i.module.startswith("runtime."))
        and i.module not in ALLOWED_FOR_ACTORS
    ]
    assert not bad, f"{importer} reaches above layer 2 of runtime: {bad}"


@pytest.mark.parametrize("importer", sorted(RUNTIME))
def test_runtime_imports_only_go_down_the_layers(importer: str) -> None:
    own = RUNTIME_LAYERS[importer]
    bad = [
        f"line {i.line}: {i.module} (layer {RUNTIME_LAYERS[i.module]})"
        for i in RUNTIME[importer]
        if i.module in RUNTIME_LAYERS
        and not i.type_checking_only
        and RUNTIME_LAYERS[i.module] > own
    ]
    assert not bad, f"{importer} (layer {own}) imports upwards: {bad}"


@pytest.mark.parametrize("importer", sorted(RUNTIME))
def test_runtime_reaches_the_actors_only_through_the_actor_system(importer: str) -> None:
    reaching = [
        i for i in RUNTIME[importer] if i.module == "actors" or i.module.startswith("actors.")
    ]
    elsewhere = [i for i in reaching if i.module != "actors.system"]
    assert not elsewhere, f"{importer} imports actors other than actors.system: {elsewhere}"
    running = [i for i in reaching if not i.type_checking_only]
    if importer != "runtime._runtime":
        assert not running, f"{importer} imports the actors: {running}"
        assert not reaching or RUNTIME_LAYERS[importer] == 4, "only the facade may name them"
        return
    assert running, "Runtime.start() is where the facade meets the machinery"
    at_module_level = [i for i in running if not i.in_function]
    assert not at_module_level, f"the runtime imports actors at module level: {at_module_level}"


def test_msgpack_is_imported_only_by_runtime_snapshot() -> None:
    importers = {
        name
        for name, imports in {**RUNTIME, **ACTORS}.items()
        for i in imports
        if i.module == "msgpack" or i.module.startswith("msgpack.")
    }

    assert importers == {"runtime._snapshot"}


def test_nothing_imports_pickle() -> None:
    importers = {
        name
        for name, imports in {**RUNTIME, **ACTORS}.items()
        for i in imports
        if i.module in ("pickle", "cPickle", "dill", "cloudpickle")
    }

    assert importers == set()


def test_leaf_modules_import_nothing_of_ours_but_other_leaves() -> None:
    for importer, own in RUNTIME_LAYERS.items():
        if own != 0 or importer not in RUNTIME:
            continue
        ours = [i.module for i in RUNTIME[importer] if _ours(i.module)]
        assert all(RUNTIME_LAYERS.get(module) == 0 for module in ours), (importer, ours)
