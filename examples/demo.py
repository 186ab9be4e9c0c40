"""callboard demo: six orders go through validate -> price -> confirm in the background.

Each order is one run, started with ``start_async()``. The demo then polls every
run by its id with ``get_workflow_run_execution_result()`` and prints a table of
where each run and each step stands, until all of them have ended. One order
carries an expired coupon on purpose: its ``price`` step raises, the run ends
``failed``, and the demo shows the error. The other runs are not affected.

The runs are kept in a SQLite run store, a file in a fresh temporary folder
(or the path given as the first argument, replaced if it exists). The demo ends
by reading the same runs back from that file with the ``callboard`` command
(``callboard runs list --db FILE``), as any other process could, and leaves the
file there for you to look at with ``callboard runs show RUN_ID --db FILE``.

Run it with ``make demo`` (or ``.venv/bin/python examples/demo.py [FILE]``). It
exits 0 when every run ended as expected: the good orders in ``success``, the
bad one in ``failed`` with the coupon error.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from runtime import Runtime, StepContext, WorkflowResult, create_step, create_workflow
from runtime._cli import main as callboard

POLL_INTERVAL = 0.2
"""Seconds between two tables while runs are in progress."""

DEADLINE = 15.0
"""Seconds the demo waits for all runs before it gives up (they take about one)."""

# --- the data each step takes and returns ------------------------------------------


class LineItem(BaseModel):
    sku: str
    quantity: int = Field(gt=0)


class Order(BaseModel):
    """The workflow's input."""

    order_id: str
    customer: str
    items: list[LineItem] = Field(min_length=1)
    coupon: str | None = None


class CheckedOrder(Order):
    """What ``validate`` returns: the order, with every SKU known to the catalogue."""

    item_count: int


class PricedOrder(BaseModel):
    """What ``price`` returns."""

    order_id: str
    customer: str
    subtotal_cents: int
    discount_cents: int
    total_cents: int


class Confirmation(BaseModel):
    """What ``confirm`` returns, and the workflow's output."""

    order_id: str
    confirmation_code: str
    total: str


# --- the steps ------------------------------------------------------------------------

PRICES_CENTS = {"tea": 450, "mug": 1200, "honey": 800, "scone": 275, "teapot": 3400}
COUPONS = {"WELCOME10": 10, "FRIENDS15": 15}  # percent off
EXPIRED_COUPONS = {"SPRING19": "2019-05-31"}


class CouponExpiredError(ValueError):
    """An order used a coupon that no longer holds."""


@create_step(input_schema=Order, output_schema=CheckedOrder)
def validate(ctx: StepContext[Order]) -> CheckedOrder:
    """Check every SKU against the catalogue and count the items."""
    order = ctx.input_data
    unknown = [item.sku for item in order.items if item.sku not in PRICES_CENTS]
    if unknown:
        raise LookupError(f"unknown SKUs: {', '.join(unknown)}")
    count = sum(item.quantity for item in order.items)
    return CheckedOrder(**order.model_dump(), item_count=count)


@create_step(input_schema=CheckedOrder, output_schema=PricedOrder)
async def price(ctx: StepContext[CheckedOrder]) -> PricedOrder:
    """Price the order; an async step, as if it asked a pricing service."""
    order = ctx.input_data
    # The "pricing service" answers slower for bigger orders, so runs finish apart.
    await asyncio.sleep(0.2 + 0.05 * order.item_count)
    subtotal = sum(PRICES_CENTS[item.sku] * item.quantity for item in order.items)
    percent = 0
    if order.coupon is not None:
        if order.coupon in EXPIRED_COUPONS:
            raise CouponExpiredError(
                f"coupon {order.coupon!r} expired on {EXPIRED_COUPONS[order.coupon]}"
            )
        percent = COUPONS.get(order.coupon, 0)
    discount = subtotal * percent // 100
    return PricedOrder(
        order_id=order.order_id,
        customer=order.customer,
        subtotal_cents=subtotal,
        discount_cents=discount,
        total_cents=subtotal - discount,
    )


@create_step(input_schema=PricedOrder, output_schema=Confirmation)
def confirm(ctx: StepContext[PricedOrder]) -> Confirmation:
    """Book the order: a plain (blocking) step, as if it wrote to a database."""
    order = ctx.input_data
    time.sleep(0.1)
    code = f"CB-{order.order_id.split('-')[-1]}-{order.total_cents % 97:02d}"
    return Confirmation(
        order_id=order.order_id,
        confirmation_code=code,
        total=f"${order.total_cents / 100:.2f}",
    )


checkout = (
    create_workflow(id="checkout", input_schema=Order, output_schema=Confirmation)
    .then(validate)
    .then(price)
    .then(confirm)
    .commit()
)

# --- the orders -----------------------------------------------------------------------

BAD_ORDER = "order-1004"
"""The order that fails on purpose: its coupon has expired."""

ORDERS: list[dict[str, Any]] = [
    {"order_id": "order-1001", "customer": "Ada", "items": [{"sku": "tea", "quantity": 2}]},
    {
        "order_id": "order-1002",
        "customer": "Grace",
        "items": [{"sku": "mug", "quantity": 2}, {"sku": "honey", "quantity": 1}],
        "coupon": "WELCOME10",
    },
    {"order_id": "order-1003", "customer": "Alan", "items": [{"sku": "teapot", "quantity": 1}]},
    {
        "order_id": BAD_ORDER,
        "customer": "Edsger",
        "items": [{"sku": "scone", "quantity": 3}],
        "coupon": "SPRING19",
    },
    {
        "order_id": "order-1005",
        "customer": "Barbara",
        "items": [{"sku": "scone", "quantity": 4}, {"sku": "tea", "quantity": 2}],
        "coupon": "FRIENDS15",
    },
    {"order_id": "order-1006", "customer": "Ken", "items": [{"sku": "honey", "quantity": 1}]},
]

# --- printing -------------------------------------------------------------------------

STEP_IDS = [step.id for step in checkout.steps]


def items(count: int) -> str:
    return f"{count} item" if count == 1 else f"{count} items"


OUTPUT_SUMMARY: dict[str, Callable[[dict[str, Any]], str]] = {
    "validate": lambda out: items(out["item_count"]),
    "price": lambda out: f"${out['total_cents'] / 100:.2f}",
    "confirm": lambda out: out["confirmation_code"],
}
"""How each step's output (plain data, as the snapshot holds it) reads in a table cell."""


def step_cell(result: WorkflowResult, step_id: str) -> str:
    """One step of one run, in a few characters: its status and a digest of its output."""
    step = result.steps.get(step_id)
    if step is None:
        return "-"
    if step.status == "success":
        return f"ok {OUTPUT_SUMMARY[step_id](step.output)}"
    if step.status == "failed" and step.error is not None:
        return f"FAILED ({step.error.name})"
    return str(step.status)


def table(results: dict[str, WorkflowResult]) -> str:
    """The runs as a plain-text table, one row per run."""
    header = ["run", "status", *STEP_IDS]
    rows = [
        [run_id, str(result.status), *(step_cell(result, step_id) for step_id in STEP_IDS)]
        for run_id, result in results.items()
    ]
    widths = [max(len(row[col]) for row in [header, *rows]) for col in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def failed_step(result: WorkflowResult) -> str:
    """The id of the step a failed run stopped at."""
    for step_id, step in result.steps.items():
        if step.status == "failed":
            return step_id
    return "?"


# --- the demo -------------------------------------------------------------------------


def fresh_store(argv: list[str]) -> Path:
    """The run store's file: the one given (removed first, if it exists), or a new temporary one."""
    if not argv:
        return Path(tempfile.mkdtemp(prefix="callboard-demo-")) / "callboard.db"
    db = Path(argv[0])
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        path.unlink(missing_ok=True)
    return db


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the exit status (0 when every run ended as expected).

    Args:
        argv: ``[FILE]``: where to keep the runs; a new temporary file when empty.
    """
    db = fresh_store([] if argv is None else argv)
    print(f"callboard demo: {len(ORDERS)} orders through {' -> '.join(STEP_IDS)}")
    print(f"runs are kept in the SQLite run store {db}", flush=True)
    began = time.monotonic()
    with Runtime(store=db) as rt:
        workflow = rt.register(checkout)
        run_ids = []
        for order in ORDERS:
            run = workflow.create_run(run_id=order["order_id"])
            run_ids.append(run.start_async(input_data=order).run_id)
        print(f"started {len(run_ids)} runs with start_async(); polling them by run id\n")

        while True:
            results: dict[str, WorkflowResult] = {}
            for run_id in run_ids:
                result = workflow.get_workflow_run_execution_result(run_id)
                assert result is not None, "a started run is always recorded"
                results[run_id] = result
            in_progress = sum(not result.is_terminal for result in results.values())
            elapsed = time.monotonic() - began
            if not in_progress or elapsed > DEADLINE:
                break
            print(f"t={elapsed:.1f}s  {in_progress} of {len(run_ids)} runs in progress")
            print(table(results) + "\n", flush=True)
            time.sleep(POLL_INTERVAL)

    print(f"t={elapsed:.1f}s  final results")
    print(table(results) + "\n")

    for run_id, result in results.items():
        if result.status == "failed" and result.error is not None:
            print(
                f"run {run_id} failed in step {failed_step(result)!r}: "
                f"{result.error.name}: {result.error.message}"
            )
        elif result.status == "success":
            print(f"run {run_id} succeeded: {result.result}")
        else:
            print(f"run {run_id} did not end within {DEADLINE:.0f} s: {result.status}")

    good = [run_id for run_id in run_ids if run_id != BAD_ORDER]
    succeeded = [run_id for run_id in good if results[run_id].status == "success"]
    bad = results[BAD_ORDER]
    bad_as_intended = (
        bad.status == "failed"
        and bad.error is not None
        and bad.error.name == CouponExpiredError.__name__
    )
    print(
        f"\nsummary: {len(succeeded)} of {len(good)} good orders succeeded; "
        f"{BAD_ORDER} {'failed as intended' if bad_as_intended else 'did NOT fail as intended'}"
    )

    # The runtime has stopped; the runs are in the file, for any process to read.
    print("\nthe same runs, read back from the run store by the callboard command:")
    print(f"$ callboard runs list --db {db}", flush=True)
    listed = callboard(["runs", "list", "--db", str(db)])
    print(f"(and one of them in full: callboard runs show {BAD_ORDER} --db {db})")
    return 0 if len(succeeded) == len(good) and bad_as_intended and listed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
