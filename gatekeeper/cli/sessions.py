"""``gatekeeper sessions ...``, ``history`` and ``fee``: parking sessions on the SQLite file."""

from __future__ import annotations

import argparse
from typing import Any

from gatekeeper.cli.util import (
    EXIT_OK,
    SESSION_COLUMNS,
    fail,
    for_people,
    money,
    open_store,
    parse_since,
    print_json,
    print_table,
    rows_for_people,
    settings_from_args,
)
from gatekeeper.config import Settings
from gatekeeper.rules import fee_due
from gatekeeper.store import Store, StoreError, from_iso, session_view

def _session_details(store: Store, settings: Settings, session_id: int) -> dict[str, Any]:
    row = store.session(session_id)
    due = 0
    if row["status"] != "closed":
        due = fee_due(session_view(row), store.clock(), store.tariff())
    return {**row, "fee_due_now": due}


def cmd_sessions_list(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    status = None if args.all else ["open", "paid"]
    with open_store(settings) as store:
        rows = store.sessions(status=status, plate=args.plate, limit=args.limit)
    if args.json:
        print_json(rows, settings)
    else:
        print_table(rows_for_people(rows, settings), SESSION_COLUMNS, empty="(no sessions)")
    return EXIT_OK


def cmd_sessions_show(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with open_store(settings) as store:
        try:
            details = _session_details(store, settings, args.id)
        except StoreError as exc:
            fail(str(exc))
    if args.json:
        print_json(details, settings)
        return EXIT_OK
    for key, value in for_people(details, settings).items():
        print(f"{key:>15}: {'-' if value is None else value}")
    return EXIT_OK


def cmd_sessions_pay(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with open_store(settings) as store:
        try:
            current = _session_details(store, settings, args.id)
            amount = current["fee_due_now"] if args.amount is None else args.amount
            row = store.pay_session(args.id, amount=amount, reference=args.reference, by="technician")
        except StoreError as exc:
            fail(str(exc))
    if args.json:
        print_json({"session": row, "paid": amount, "currency": settings.site.currency,
                    "grace_minutes": settings.tariff.grace_minutes}, settings)
        return EXIT_OK
    print(
        f"session {row['id']} ({row['plate']}) marked paid: {money(settings, amount)}"
        f", exit grace {settings.tariff.grace_minutes} min from now"
    )
    return EXIT_OK


def cmd_sessions_edit(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with open_store(settings) as store:
        try:
            old = store.session(args.id)["plate"]
            row = store.edit_plate(args.id, args.plate)
        except StoreError as exc:
            fail(str(exc))
    if args.json:
        print_json({"session": row, "old_plate": old}, settings)
        return EXIT_OK
    print(f"session {row['id']}: plate {old} -> {row['plate']}")
    return EXIT_OK


def cmd_sessions_delete(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with open_store(settings) as store:
        try:
            store.delete_session(args.id)
        except StoreError as exc:
            fail(str(exc))
    if args.json:
        print_json({"deleted": args.id})
        return EXIT_OK
    print(f"session {args.id} deleted")
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    tz = settings.site.tz
    with open_store(settings) as store:
        rows = store.sessions(plate=args.plate, limit=args.limit)
    if args.since:
        since = parse_since(args.since, tz)
        rows = [r for r in rows if from_iso(r["entry_at"]) >= since]  # type: ignore[operator]
    rows = list(reversed(rows))
    if args.json:
        print_json(rows, settings)
    else:
        print_table(rows_for_people(rows, settings), (*SESSION_COLUMNS, "exit_lane", "fee_charged"), empty="(no visits)")
    return EXIT_OK


def cmd_fee(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with open_store(settings) as store:
        ids = [r["id"] for r in store.sessions(status=["open", "paid"], plate=args.target)]
        if not ids and args.target.isdigit() and _exists(store, int(args.target)):
            ids = [int(args.target)]
        if not ids:
            fail(f"no open session for {args.target!r}")
        details = [_session_details(store, settings, i) for i in ids]
    if args.json:
        print_json([{k: d[k] for k in ("id", "plate", "status", "fee_due_now")} for d in details], settings)
    else:
        for d in details:
            print(f"session {d['id']} {d['plate']} ({d['status']}): {money(settings, d['fee_due_now'])} due now")
    return EXIT_OK


def _exists(store: Store, session_id: int) -> bool:
    try:
        store.session(session_id)
    except StoreError:
        return False
    return True


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    sessions = sub.add_parser("sessions", help="parking sessions").add_subparsers(dest="sessions_cmd", required=True)
    lst = sessions.add_parser("list", help="sessions still inside (default) or all")
    which = lst.add_mutually_exclusive_group()
    which.add_argument("--open", action="store_true", help="open and paid sessions (default)")
    which.add_argument("--all", action="store_true", help="include closed sessions")
    lst.add_argument("--plate")
    lst.add_argument("--limit", type=int, default=200)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_sessions_list)
    show = sessions.add_parser("show", help="one session with its photo path and the fee due now")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_sessions_show)
    pay = sessions.add_parser("pay", help="mark paid by hand (recorded as an event, queued for the cloud)")
    pay.add_argument("id", type=int)
    pay.add_argument("--reference", help="receipt or payment reference")
    pay.add_argument("--amount", type=int, help="minor units (default: the fee due now)")
    pay.add_argument("--json", action="store_true")
    pay.set_defaults(func=cmd_sessions_pay)
    edit = sessions.add_parser("edit", help="fix a misread plate")
    edit.add_argument("id", type=int)
    edit.add_argument("--plate", required=True)
    edit.add_argument("--json", action="store_true")
    edit.set_defaults(func=cmd_sessions_edit)
    delete = sessions.add_parser("delete", help="delete a paid or closed session")
    delete.add_argument("id", type=int)
    delete.add_argument("--json", action="store_true")
    delete.set_defaults(func=cmd_sessions_delete)

    history = sub.add_parser("history", help="visits, oldest first")
    history.add_argument("--plate")
    history.add_argument("--since", metavar="DATE", help="YYYY-MM-DD[THH:MM] in the site's time zone")
    history.add_argument("--limit", type=int, default=1000)
    history.add_argument("--json", action="store_true")
    history.set_defaults(func=cmd_history)

    fee = sub.add_parser("fee", help="fee due now for a plate or a session id")
    fee.add_argument("target", metavar="PLATE-or-ID")
    fee.add_argument("--json", action="store_true")
    fee.set_defaults(func=cmd_fee)
