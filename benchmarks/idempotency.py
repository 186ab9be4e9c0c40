"""The cost of idempotency keys on ``start_async``, beside starts without one.

``.venv/bin/python benchmarks/idempotency.py [--runs N] [--url postgresql://...]``

For each store (memory, a SQLite file, and PostgreSQL: ``--url`` or
``$CALLBOARD_TEST_POSTGRES``, else a throwaway cluster when the server binaries are
there), on a ``client`` runtime where the store
is shared (so that the starts are measured, not the runs), three kinds of burst
of ``--runs`` sequential starts (interleaved, best of three) of a one-step workflow:

- **no key**: the floor, measured in the same run;
- **new key**: each start with a key of its own (a look-up, then the create
  with the key's unique index);
- **repeated key**: every start with the key of a run already started (the
  look-up alone: nothing is validated or recorded).

It prints starts per second and the ratio to the floor. It asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydantic import BaseModel  # noqa: E402

from runtime import Runtime, create_step, create_workflow  # noqa: E402
from tests._postgres import script_server  # noqa: E402

ROUNDS = 3


class Number(BaseModel):
    n: int


def _workflow() -> Any:
    step = create_step(
        id="one", input_schema=Number, output_schema=Number, execute=lambda ctx: ctx.input_data
    )
    return create_workflow(id="keys", input_schema=Number, output_schema=Number).then(step).commit()


def _burst(wf: Any, runs: int, key: str | None, offset: int) -> float:
    began = time.perf_counter()
    for index in range(runs):
        given = None if key is None else (f"{key}-{offset + index}" if key != "same" else key)
        wf.create_run().start_async(input_data={"n": index}, idempotency_key=given)
    return runs / (time.perf_counter() - began)


def _measure(store: Any, runs: int, role: str) -> list[tuple[str, float]]:
    best = {"no key (floor)": 0.0, "new key": 0.0, "repeated key": 0.0}
    with Runtime(store=store, role=role) as rt:  # type: ignore[arg-type]
        wf = rt.register(_workflow())
        _burst(wf, min(200, runs), None, 0)  # warm up: imports, connections, pages
        wf.create_run().start_async(input_data={"n": 0}, idempotency_key="same")
        # Interleaved, best of three: a shared machine's noise hits each kind alike.
        for round_ in range(ROUNDS):
            for label, key in (
                ("no key (floor)", None),
                ("new key", "order"),
                ("repeated key", "same"),
            ):
                rate = _burst(wf, runs, key, round_ * runs)
                best[label] = max(best[label], rate)
    return list(best.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--url", default=os.environ.get("CALLBOARD_TEST_POSTGRES"))
    args = parser.parse_args()
    stores: list[tuple[str, Any, str]] = [("memory", "memory", "both")]
    folder = Path(tempfile.mkdtemp())
    stores.append(("sqlite", folder / "keys.db", "client"))
    server: Any = None
    if args.url:
        stores.append(("postgres", args.url, "client"))
    else:
        server = script_server()  # fsync off, as in the tests
        if server is not None:
            stores.append(("postgres", server.new_database(), "client"))
    print(f"start_async, {args.runs} sequential starts per row (starts/s; ratio to no key)")
    print(f"{'store':<10} {'start':<16} {'starts/s':>10} {'ratio':>7}")
    try:
        for name, store, role in stores:
            rows = _measure(store, args.runs, role)
            floor = rows[0][1]
            for label, rate in rows:
                print(f"{name:<10} {label:<16} {rate:>10.0f} {rate / floor:>6.2f}x")
    finally:
        if server is not None:
            server.destroy()


if __name__ == "__main__":
    main()
