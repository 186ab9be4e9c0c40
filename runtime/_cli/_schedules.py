"""``callboard schedules list|pause|resume|delete``: the cron schedules kept in a run store.

``list`` opens the store read-only; ``pause``, ``resume`` and ``delete`` write one
row of the schedules table, as ``Runtime.pause_schedule`` (and the others) do, and
every runtime on the store sees the change at its next look (within
:data:`~runtime._scheduler.POLL` seconds).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from typing import Any, Final

from rich import box
from rich.table import Table
from rich.text import Text

from runtime._cli._commands import CommandError, _opened, require_store, shown_db
from runtime._cli._render import (
    console_for,
    one_line,
    print_json,
    show,
    shown_text,
    status_text,
)
from runtime._schedule import ScheduleInfo
from runtime._scheduler import POLL, describe
from runtime._stores.schedules import book_for

__all__ = [
    "ScheduleNotFoundError",
    "schedules_delete",
    "schedules_list",
    "schedules_pause",
    "schedules_resume",
]


class ScheduleNotFoundError(CommandError):
    """No schedule with that id in the store."""


def schedules_list(args: argparse.Namespace) -> None:
    """``callboard schedules list``: every schedule, its next fire time and last runs."""
    with _opened(args.db, readonly=True) as store:
        book = book_for(store)
        now = time.time()
        infos = [describe(row, store.load, now) for row in book.all()]
        close = getattr(book, "close", None)
        if close is not None:
            close()
    if args.json:
        print_json([info.model_dump(mode="json") for info in infos])
        return
    console = console_for(sys.stdout)
    if infos:
        show(console, schedules_table(infos, now))
        show(console, Text(""))
    count = len(infos)
    show(console, Text(f"{count} schedule{'' if count == 1 else 's'}", style="dim"))


def _change(args: argparse.Namespace, verb: str) -> None:
    """Pause, resume or delete a schedule; say so (one JSON object with ``--json``)."""
    require_store(args.db)  # opening it for writing would create a store at a mistyped --db
    with _opened(args.db, readonly=False) as store:
        book = book_for(store)
        try:
            if verb == "delete":
                found = book.delete(args.schedule_id)
            else:
                found = book.set_paused(args.schedule_id, verb == "pause", time.time())
        finally:
            close = getattr(book, "close", None)
            if close is not None:
                close()
    if not found:
        raise ScheduleNotFoundError(f"no schedule {args.schedule_id!r} in {shown_db(args.db)}")
    if args.json:
        print_json(
            {"schedule_id": args.schedule_id, "deleted": True}
            if verb == "delete"
            else {"schedule_id": args.schedule_id, "paused": verb == "pause"}
        )
        return
    done = {"pause": "paused", "resume": "resumed", "delete": "deleted"}[verb]
    sys.stdout.write(f"schedule {one_line(args.schedule_id)} {done}\n")


def schedules_pause(args: argparse.Namespace) -> None:
    """``callboard schedules pause ID``: no runtime fires it until it is resumed."""
    _change(args, "pause")


def schedules_resume(args: argparse.Namespace) -> None:
    """``callboard schedules resume ID``: it fires from its next tick on."""
    _change(args, "resume")


def schedules_delete(args: argparse.Namespace) -> None:
    """``callboard schedules delete ID``: the schedule goes; its runs stay."""
    _change(args, "delete")


OVERDUE: Final = 2 * POLL
"""Seconds past its time after which a due tick is shown as overdue: a runtime that
registers its workflow fires it within a pass of the scheduler (every POLL seconds)."""


def _moment(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _next_fire(info: ScheduleInfo, now: float) -> Text:
    text = _moment(info.next_fire_at)
    if info.next_fire_at is not None and now - info.next_fire_at.timestamp() > OVERDUE:
        # Due, and nobody fired it: no running runtime registers the workflow.
        return Text(f"{text} overdue", style="red")
    return Text(text)


def _state(info: ScheduleInfo) -> Text:
    if info.error is not None:  # this process cannot read its cron or zone: --json says why
        return Text("unreadable", style="red")
    return Text("paused" if info.paused else "active", style="yellow" if info.paused else "")


def schedules_table(infos: list[ScheduleInfo], now: float) -> Table:
    """Schedules one row each: id, workflow, cron and zone, state, next fire, last run.

    A next fire time more than :data:`OVERDUE` seconds before ``now`` (epoch
    seconds) is marked ``overdue``.
    """
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("SCHEDULE ID", no_wrap=True)
    table.add_column("WORKFLOW", no_wrap=True)
    table.add_column("CRON", no_wrap=True)
    table.add_column("TIME ZONE", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    table.add_column("NEXT FIRE", no_wrap=True)
    table.add_column("LAST RUN", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    for info in infos:
        last: Any = info.last_runs[0] if info.last_runs else None
        table.add_row(
            shown_text(info.schedule_id),
            shown_text(info.workflow_id),
            shown_text(info.cron),
            shown_text(info.timezone),
            _state(info),
            _next_fire(info, now),
            shown_text("-" if last is None else last.run_id),
            Text("-") if last is None else status_text(last.status),
        )
    return table
