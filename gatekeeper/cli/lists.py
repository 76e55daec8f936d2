"""``gatekeeper allow|deny add|remove|list`` and ``gatekeeper reservations``: the access lists on the SQLite file.

The cloud normally keeps these lists (``cmd/lists``, ``cmd/reservation``); these commands are for a lot
without one, or for a fix on site. They write the same table the cloud's commands do, so a later
``replace`` from the cloud overwrites them. The daemon reads the lists at every decision: a change
holds from the next vehicle on, with no reload.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from gatekeeper.cli.util import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    fail,
    open_store,
    parse_since,
    print_json,
    print_table,
    rows_for_people,
    settings_from_args,
)
from gatekeeper.config import Settings
from gatekeeper.rules import normalise_plate
from gatekeeper.schedules import ScheduleError, WeeklySchedule, from_wire, parse_schedule
from gatekeeper.store import Store, StoreError

LIST_COLUMNS = ("plate", "schedule", "active_now", "valid_from", "valid_until", "note", "updated_at")
RESERVATION_COLUMNS = ("id", "plate", "valid_from", "valid_until", "schedule", "active_now", "note")
ALWAYS = "always"


def _schedule_arg(args: argparse.Namespace, settings: Settings) -> WeeklySchedule | None:
    if not args.schedule:
        return None
    try:
        return parse_schedule(args.schedule, tz=settings.site.tz)
    except ScheduleError as exc:
        fail(f"--schedule: {exc}", EXIT_USAGE)


def _moment(text: str | None, settings: Settings, option: str) -> datetime | None:
    return None if text is None else parse_since(text, settings.site.tz, option=option)


def _described(rows: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """Rows for people: the schedule as its text (``always`` when none)."""
    tz = settings.site.tz
    return [{**row, "schedule": from_wire(row["schedule"], tz=tz).describe() if row["schedule"] else ALWAYS,
             "active_now": "yes" if row["active_now"] else "no"} for row in rows_for_people(rows, settings)]


def cmd_list_add(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    plate = normalise_plate(args.plate)
    if not plate:
        fail(f"plate {args.plate!r} has no letters or digits", EXIT_USAGE)
    schedule = _schedule_arg(args, settings) if args.kind == "allow" else None
    valid_from = _moment(args.valid_from, settings, "--from")
    valid_until = _moment(args.valid_until, settings, "--until")
    if valid_from and valid_until and valid_until <= valid_from:
        fail("--until must be after --from", EXIT_USAGE)
    entry = {"plate": plate, "valid_from": valid_from, "valid_until": valid_until, "schedule": schedule,
             "note": args.note}
    with open_store(settings) as store:
        try:
            store.set_list_entries(args.kind, [entry])
        except StoreError as exc:
            fail(str(exc))
        row = _with_active(store, args.kind, plate)
    if args.json:
        print_json(row, settings)
        return EXIT_OK
    when = schedule.describe() + f" ({settings.site.timezone})" if schedule else ALWAYS
    print(f"{args.kind} list: {plate} added, {when}")
    return EXIT_OK


def cmd_list_remove(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with open_store(settings) as store:
        removed = store.remove_list_entries(args.kind, args.plates)
    if args.json:
        print_json({"kind": args.kind, "removed": removed})
    else:
        print(f"{args.kind} list: {removed} of {len(args.plates)} removed")
    return EXIT_OK if removed == len(args.plates) else EXIT_REFUSED


def cmd_list_show(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with open_store(settings) as store:
        active = {e.plate for e in store.list_entries() if e.kind == args.kind and e.active(store.clock())}
        rows = [{**row, "active_now": row["plate"] in active} for row in store.list_rows(args.kind)]
    if args.json:
        print_json([{k: v for k, v in row.items() if k != "kind"} for row in rows], settings)
        return EXIT_OK
    print_table(_described(rows, settings), LIST_COLUMNS, empty=f"(the {args.kind} list is empty)")
    if args.kind == "allow" and rows:
        print(f"schedules are in the lot's time zone, {settings.site.timezone}")
    return EXIT_OK


def cmd_reservations(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with open_store(settings) as store:
        now = store.clock()
        active = {r.id for r in store.reservations() if r.active(now)}
        rows = [{**row, "active_now": row["id"] in active} for row in store.reservation_rows()]
    if args.json:
        print_json(rows, settings)
        return EXIT_OK
    print_table(_described(rows, settings), RESERVATION_COLUMNS, empty="(no reservations)")
    return EXIT_OK


def _with_active(store: Store, kind: str, plate: str) -> dict[str, Any]:
    [row] = [r for r in store.list_rows(kind) if r["plate"] == plate]
    entry = next(e for e in store.list_entries() if e.kind == kind and e.plate == plate)
    return {**row, "active_now": entry.active(store.clock())}


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    for kind, what in (("allow", "permit holders: enter a full lot, leave free"), ("deny", "refused at the entry")):
        group = sub.add_parser(kind, help=f"the {kind} list ({what})").add_subparsers(dest=f"{kind}_cmd", required=True)
        add = group.add_parser("add", help=f"add or replace one {kind}-list entry (replaced whole)")
        add.add_argument("plate")
        if kind == "allow":
            add.add_argument(
                "--schedule", action="append", metavar="RULE",
                help="weekly hours in the lot's time zone, e.g. 'Mon-Fri 07:00-19:00'; repeat for more rules, "
                "or join them with ';'. An end at or before the start runs past midnight ('Fri 22:00-06:00'). "
                "Without it the entry holds always.",
            )
        add.add_argument("--from", dest="valid_from", metavar="DATE", help="YYYY-MM-DD[THH:MM], lot's time zone")
        add.add_argument("--until", dest="valid_until", metavar="DATE", help="YYYY-MM-DD[THH:MM], exclusive")
        add.add_argument("--note")
        add.add_argument("--json", action="store_true")
        add.set_defaults(func=cmd_list_add, kind=kind)
        remove = group.add_parser("remove", help=f"remove {kind}-list entries (exit 1 if one was not listed)")
        remove.add_argument("plates", nargs="+", metavar="PLATE")
        remove.add_argument("--json", action="store_true")
        remove.set_defaults(func=cmd_list_remove, kind=kind)
        show = group.add_parser("list", help=f"the {kind} list, with schedules and whether each holds now")
        show.add_argument("--json", action="store_true")
        show.set_defaults(func=cmd_list_show, kind=kind)
    reservations = sub.add_parser("reservations", help="reservations (sent by the cloud), with schedules")
    reservations.add_argument("--json", action="store_true")
    reservations.set_defaults(func=cmd_reservations)
