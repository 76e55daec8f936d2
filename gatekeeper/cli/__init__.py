"""The ``gatekeeper`` command: the technician's tool and the daemon's entry point.

Read-only and admin commands work straight on the SQLite file through the same
store and rules the daemon uses, so they work with the daemon stopped. Commands
that move a barrier (``open``, ``arrive``) go through the daemon's socket.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from typing import Any, Sequence

from gatekeeper import __version__
from gatekeeper.cli.util import (
    fail,
    local_time,
    parse_since,
    print_json,
    print_table,
    rows_with_local_times,
    settings_from_args,
)
from gatekeeper.config import Settings, masked_dump
from gatekeeper.rules import fee_due, format_money
from gatekeeper.store import Store, StoreError, from_iso, session_view

#: Modules that add their own subcommands with ``register(subparsers)``.
COMMAND_MODULES = ("gatekeeper.cli.read", "gatekeeper.cli.daemon", "gatekeeper.cli.resolve")

SESSION_COLUMNS = ("id", "plate", "status", "entry_lane", "entry_at", "paid_at", "amount_paid", "exit_at")
TIME_KEYS = ("entry_at", "paid_at", "exit_at", "at", "created_at", "sent_at")


def _open_store(settings: Settings) -> Store:
    try:
        return Store.from_settings(settings)
    except (OSError, StoreError) as exc:
        fail(f"cannot open the database {settings.storage.database_path}: {exc}")
    except Exception as exc:  # sqlite3.DatabaseError: not a database, corrupt, locked
        fail(f"cannot open the database {settings.storage.database_path}: {exc}")


def _money(settings: Settings, minor: int | None) -> str:
    return format_money(minor or 0, settings.site.currency, settings.site.currency_digits)


# --------------------------------------------------------------------------- config


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    data = masked_dump(settings)
    if args.json:
        print_json(data)
    else:
        print(f"# configuration OK ({settings.source or 'built-in defaults'})")
        for section, body in data.items():
            if section == "lanes":
                for lane in body:
                    print("\n[[lanes]]")
                    for key, value in lane.items():
                        print(f"{key} = {json.dumps(value)}")
            elif isinstance(body, dict):
                print(f"\n[{section}]")
                for key, value in body.items():
                    print(f"{key} = {json.dumps(value, default=str)}")
    return 0


# --------------------------------------------------------------------------- status


def _daemon_status(settings: Settings) -> dict[str, Any] | None:
    """Live lane/camera/sync state from a running daemon, or None when none answers."""
    try:
        control = importlib.import_module("gatekeeper.service.control")
        return control.request(settings.control_socket_path, {"cmd": "status"}, timeout=3.0)
    except Exception:  # no daemon, no socket, or no permission: the database still answers
        return None


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    tz = settings.site.tz
    with _open_store(settings) as store:
        report = {
            "lot": settings.site.lot_id,
            "occupancy": store.occupancy(),
            "open_sessions": rows_with_local_times(store.sessions(status=["open", "paid"]), TIME_KEYS, tz),
            "outbox": store.outbox_stats(),
            "last_events": rows_with_local_times(store.events(tail=args.events), TIME_KEYS, tz),
            "daemon": _daemon_status(settings),
        }
    if args.json:
        print_json(report)
        return 0
    occ = report["occupancy"]
    print(f"Lot {report['lot']}: {occ['occupied']}/{occ['capacity']} occupied, {occ['free']} free")
    ob = report["outbox"]
    print(f"Outbox: {ob['pending']} waiting for the cloud" + (f" (oldest {local_time(ob['oldest_pending_at'], tz)})" if ob["pending"] else ""))
    daemon = report["daemon"]
    if daemon is None:
        print("Daemon: not running (or its control socket is not reachable)")
    else:
        print("Daemon: running")
        for lane in daemon.get("lanes", []):
            cam = lane.get("camera") or {}
            print(
                f"  lane {lane.get('id')} ({lane.get('direction')}): gate {lane.get('gate')}, "
                f"camera {'ok' if cam.get('connected') else 'DOWN'}"
                + (f", last: {lane['last_decision']}" if lane.get("last_decision") else "")
            )
        if daemon.get("sync") is not None:
            sync = daemon["sync"]
            print(f"  sync: {'connected' if sync.get('connected') else 'offline'}")
    print("\nInside:")
    print_table(report["open_sessions"], ("id", "plate", "status", "entry_lane", "entry_at", "paid_at"))
    print("\nLast events:")
    print_table(report["last_events"], ("at", "lane", "kind", "reason", "plate", "session_id", "message"))
    return 0


# --------------------------------------------------------------------------- sessions


def _session_details(store: Store, settings: Settings, session_id: int) -> dict[str, Any]:
    row = store.session(session_id)
    due = 0
    if row["status"] != "closed":
        due = fee_due(session_view(row), store.clock(), store.tariff())
    return {**row, "fee_due_now": due, "fee_due_display": _money(settings, due)}


def cmd_sessions_list(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    status = None if args.all else ["open", "paid"]
    with _open_store(settings) as store:
        rows = store.sessions(status=status, plate=args.plate, limit=args.limit)
    rows = rows_with_local_times(rows, TIME_KEYS, settings.site.tz)
    if args.json:
        print_json(rows)
    else:
        print_table(rows, SESSION_COLUMNS, empty="(no sessions)")
    return 0


def cmd_sessions_show(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with _open_store(settings) as store:
        try:
            details = _session_details(store, settings, args.id)
        except StoreError as exc:
            fail(str(exc))
    if args.json:
        print_json(details)
        return 0
    tz = settings.site.tz
    for key, value in details.items():
        if key in TIME_KEYS:
            value = local_time(value, tz)
        if key in ("amount_paid", "fee_charged", "fee_due_now") and value is not None:
            value = _money(settings, value)
        if key != "fee_due_display":
            print(f"{key:>15}: {'-' if value is None else value}")
    return 0


def cmd_sessions_pay(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with _open_store(settings) as store:
        try:
            current = _session_details(store, settings, args.id)
            amount = current["fee_due_now"] if args.amount is None else args.amount
            row = store.pay_session(args.id, amount=amount, reference=args.reference, by="technician")
        except StoreError as exc:
            fail(str(exc))
    print(
        f"session {row['id']} ({row['plate']}) marked paid: {_money(settings, amount)}"
        f", exit grace {settings.tariff.grace_minutes} min from now"
    )
    return 0


def cmd_sessions_edit(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with _open_store(settings) as store:
        try:
            old = store.session(args.id)["plate"]
            row = store.edit_plate(args.id, args.plate)
        except StoreError as exc:
            fail(str(exc))
    print(f"session {row['id']}: plate {old} -> {row['plate']}")
    return 0


def cmd_sessions_delete(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with _open_store(settings) as store:
        try:
            store.delete_session(args.id)
        except StoreError as exc:
            fail(str(exc))
    print(f"session {args.id} deleted")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    tz = settings.site.tz
    with _open_store(settings) as store:
        rows = store.sessions(plate=args.plate, limit=args.limit)
    if args.since:
        since = parse_since(args.since, tz)
        rows = [r for r in rows if from_iso(r["entry_at"]) >= since]  # type: ignore[operator]
    rows = rows_with_local_times(list(reversed(rows)), TIME_KEYS, tz)
    if args.json:
        print_json(rows)
    else:
        print_table(rows, (*SESSION_COLUMNS, "exit_lane", "fee_charged"), empty="(no visits)")
    return 0


# --------------------------------------------------------------------------- events, outbox, fee


def _print_events(rows: Sequence[dict[str, Any]], settings: Settings, as_json: bool) -> None:
    rows = rows_with_local_times(rows, TIME_KEYS, settings.site.tz)
    if as_json:
        for row in rows:
            print(json.dumps(row, default=str), flush=True)
    else:
        for r in rows:
            print(
                f"{r['at']}  {r['lane'] or '-':<10} {r['kind']:<12} {r['reason'] or '-':<22} "
                f"{r['plate'] or '-':<10} {('#' + str(r['session_id'])) if r['session_id'] else '-':<6} {r['message'] or ''}"
                + _no_read_hint(r),
                flush=True,
            )


def _no_read_hint(row: dict[str, Any]) -> str:
    """For a no_read: the guesses and how to resolve it."""
    if row.get("kind") != "no_read":
        return ""
    try:
        data = json.loads(row.get("data") or "{}")
    except ValueError:
        data = {}
    guesses = ", ".join(data.get("guesses") or []) or "none"
    how = "--session ID" if data.get("direction") == "exit" else "--plate P"
    return f" [guesses: {guesses}; photo: {data.get('photo') or '-'}; gatekeeper resolve {row['id']} {how}]"


def cmd_events(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with _open_store(settings) as store:
        rows = store.events(tail=args.tail, plate=args.plate)
        _print_events(rows, settings, args.json)
        last = rows[-1]["seq"] if rows else (store.events(tail=1) or [{"seq": 0}])[-1]["seq"]
        while args.follow:
            time.sleep(args.interval)  # polling a file another process writes: no event to wait on
            rows = store.events(after_seq=last)
            if rows:
                _print_events(rows, settings, args.json)
                last = rows[-1]["seq"]
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with _open_store(settings) as store:
        stats = store.outbox_stats()
        pending = [
            {"id": r.id, "msg_id": r.msg_id, "topic": r.topic, "created_at": r.created_at, "retain": r.retain}
            for r in store.outbox_pending(limit=args.limit)
        ]
    if args.json:
        print_json({**stats, "rows": pending})
        return 0
    print(f"{stats['pending']} waiting, {stats['sent']} sent and kept")
    print_table(rows_with_local_times(pending, TIME_KEYS, settings.site.tz), ("id", "topic", "created_at", "msg_id"))
    return 0


def cmd_fee(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with _open_store(settings) as store:
        ids = [r["id"] for r in store.sessions(status=["open", "paid"], plate=args.target)]
        if not ids and args.target.isdigit() and _exists(store, int(args.target)):
            ids = [int(args.target)]
        if not ids:
            fail(f"no open session for {args.target!r}")
        details = [_session_details(store, settings, i) for i in ids]
    if args.json:
        print_json([{k: d[k] for k in ("id", "plate", "status", "fee_due_now")} for d in details])
    else:
        for d in details:
            print(f"session {d['id']} {d['plate']} ({d['status']}): {d['fee_due_display']} due now")
    return 0


def _exists(store: Store, session_id: int) -> bool:
    try:
        store.session(session_id)
    except StoreError:
        return False
    return True


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatekeeper",
        description="Unattended parking lane: plate reading, barrier, sessions and cloud sync.",
    )
    parser.add_argument("--config", metavar="PATH", help="config file (default: $GATEKEEPER_CONFIG or built-in defaults)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("--version", action="version", version=f"gatekeeper {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    config = sub.add_parser("config", help="configuration").add_subparsers(dest="config_cmd", required=True)
    check = config.add_parser("check", help="validate and print the effective configuration (secrets masked)")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_config_check)

    status = sub.add_parser("status", help="occupancy, open sessions, outbox backlog, last events, live lanes")
    status.add_argument("--json", action="store_true")
    status.add_argument("--events", type=int, default=10, metavar="N", help="how many recent events")
    status.set_defaults(func=cmd_status)

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
    pay.set_defaults(func=cmd_sessions_pay)
    edit = sessions.add_parser("edit", help="fix a misread plate")
    edit.add_argument("id", type=int)
    edit.add_argument("--plate", required=True)
    edit.set_defaults(func=cmd_sessions_edit)
    delete = sessions.add_parser("delete", help="delete a paid or closed session")
    delete.add_argument("id", type=int)
    delete.set_defaults(func=cmd_sessions_delete)

    history = sub.add_parser("history", help="visits, oldest first")
    history.add_argument("--plate")
    history.add_argument("--since", metavar="DATE", help="YYYY-MM-DD[THH:MM] in the site's time zone")
    history.add_argument("--limit", type=int, default=1000)
    history.add_argument("--json", action="store_true")
    history.set_defaults(func=cmd_history)

    events = sub.add_parser("events", help="the decision log")
    events.add_argument("--tail", type=int, default=20, metavar="N")
    events.add_argument("--plate")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.set_defaults(func=cmd_events)

    outbox = sub.add_parser("outbox", help="messages waiting for the cloud")
    outbox.add_argument("--limit", type=int, default=50)
    outbox.add_argument("--json", action="store_true")
    outbox.set_defaults(func=cmd_outbox)

    fee = sub.add_parser("fee", help="fee due now for a plate or a session id")
    fee.add_argument("target", metavar="PLATE-or-ID")
    fee.add_argument("--json", action="store_true")
    fee.set_defaults(func=cmd_fee)

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # an optional part not installed in this build
        module.register(sub)
    return parser


def hoist_config_option(argv: Sequence[str]) -> list[str]:
    """Accept ``--config PATH`` after the subcommand too (``gatekeeper run --config X``)."""
    argv = list(argv)
    front: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--":
            break
        if argv[i] == "--config" and i + 1 < len(argv):
            front += argv[i : i + 2]
            del argv[i : i + 2]
            continue
        if argv[i].startswith("--config="):
            front.append(argv.pop(i))
            continue
        i += 1
    return front + argv


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(hoist_config_option(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2) if args.command != "run" else logging.INFO - 10 * min(args.verbose, 1),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
