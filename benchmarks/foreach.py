"""What one item of a large ``foreach`` costs, as the foreach grows: flat, or growing with it.

Run it with ``.venv/bin/python benchmarks/foreach.py`` (``--sizes 1000 4000 16000`` to
choose the foreaches, ``--store memory`` or ``--store sqlite`` for one store, ``--body
nested`` for a foreach over a nested workflow of one step, ``--body all`` for both; about
a minute a body). To measure another checkout with the same script, put it first on the path:
``PYTHONPATH=/path/to/checkout .venv/bin/python benchmarks/foreach.py``.

Each size runs one run, on a fresh runtime (and a fresh SQLite file): a ``map``
that hands a list of that many items to a ``foreach`` of a step that returns its
item (``concurrency=8``). The table gives the run's wall time and the process's
CPU time (every thread), each per item, and the ratio of the CPU per item to the
smallest size's, measured in the same run: near 1 when an item's cost does not
grow with the foreach, about ``size / smallest`` when every item's record costs
the whole foreach (quadratic). It asserts no speed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from runtime import Runtime, create_step, create_workflow


class Item(BaseModel):
    n: int


class Items(BaseModel):
    items: list[Item]


same = create_step(id="same", input_schema=Item, output_schema=Item, execute=lambda c: c.input_data)
inner = create_workflow(id="inner", input_schema=Item, output_schema=Item).then(same).commit()
FLOWS = {
    body: (
        create_workflow(id=f"bench-foreach-{body}", input_schema=Items, output_schema=Items)
        .map(lambda ctx: ctx.input_data["items"])
        .foreach(item, concurrency=8)
        .map(lambda ctx: {"items": ctx.input_data})
        .commit()
    )
    for body, item in (("step", same), ("nested", inner))
}


def one_run(size: int, store: str, body: str = "step") -> tuple[float, float]:
    """Wall and CPU seconds of one run over ``size`` items."""
    items = {"items": [{"n": n} for n in range(size)]}
    with Runtime(store=store) as runtime:
        workflow = runtime.register(FLOWS[body])
        wall, cpu = time.perf_counter(), time.process_time()
        result = workflow.create_run().start(input_data=items, timeout=600)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if result.status != "success":
        raise RuntimeError(f"the foreach of {size} items ended {result.status}: {result.error}")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--store", choices=("memory", "sqlite", "all"), default="all")
    parser.add_argument(
        "--body",
        choices=("step", "nested", "all"),
        default="step",
        help="what each item runs: a step (the default), or a nested workflow of one step",
    )
    args = parser.parse_args()
    stores = ("memory", "sqlite") if args.store == "all" else (args.store,)
    bodies = ("step", "nested") if args.body == "all" else (args.body,)
    print(
        f"{'body':7} {'store':8} {'items':>7} {'wall s':>8} {'wall/item':>10} {'CPU/item':>10} "
        f"{'ratio':>7}"
    )
    with tempfile.TemporaryDirectory(prefix="callboard-foreach-") as folder:
        for body in bodies:
            for store in stores:
                floor = None
                for size in sorted(args.sizes):
                    where = (
                        "memory" if store == "memory" else str(Path(folder) / f"{body}{size}.db")
                    )
                    wall, cpu = one_run(size, where, body)
                    per_item = cpu / size
                    floor = floor or per_item
                    print(
                        f"{body:7} {store:8} {size:>7,} {wall:>8.2f} {wall / size * 1e6:>8.0f}µs "
                        f"{per_item * 1e6:>8.0f}µs {per_item / floor:>6.2f}x"
                    )


if __name__ == "__main__":
    main()
