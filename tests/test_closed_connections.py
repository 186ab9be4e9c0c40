"""Every raw ``sqlite3`` connection the project opens in a ``with`` block is closed there.

``with sqlite3.connect(path) as connection:`` commits or rolls back at the end of
the block but leaves the connection open until it is collected; Python 3.13 warns
then (``ResourceWarning: unclosed database``), at whatever test happens to be
running, and the suite makes warnings errors. CI runs 3.11, which does not warn,
so this reads the sources instead: such a block wraps the connection in
``contextlib.closing`` (``with closing(sqlite3.connect(p)) as c, c:``).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests._support import ROOT


def _bare_connects(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line`` (from ``root``) of each ``with`` item that is a bare ``sqlite3.connect()``."""
    found: list[str] = []
    text = path.read_text()
    if "sqlite3.connect" not in text:
        return found
    for node in ast.walk(ast.parse(text, str(path))):
        if not isinstance(node, ast.With | ast.AsyncWith):
            continue
        for item in node.items:
            call = item.context_expr
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr == "connect"
                and isinstance(call.func.value, ast.Name)
                and call.func.value.id == "sqlite3"
            ):
                found.append(f"{path.relative_to(root)}:{call.lineno}")
    return found


def test_no_with_block_leaves_a_sqlite3_connection_open() -> None:
    sources = [
        path
        for folder in ("runtime", "actors", "tests", "benchmarks", "examples")
        for path in sorted((ROOT / folder).rglob("*.py"))
    ]
    assert len(sources) > 100
    bare = [where for path in sources for where in _bare_connects(path)]
    assert bare == [], "wrap these in contextlib.closing(...): " + ", ".join(bare)


def test_the_check_finds_a_bare_connect(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import contextlib, sqlite3\n"
        "with contextlib.closing(sqlite3.connect(':memory:')) as c, c:\n"
        "    pass\n"
        "with open(__file__) as f, sqlite3.connect(':memory:') as c:\n"
        "    pass\n"
    )
    assert _bare_connects(probe, tmp_path) == ["probe.py:4"]
