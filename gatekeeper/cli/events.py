"""``gatekeeper events`` (the decision log) and ``gatekeeper outbox`` (messages waiting for the cloud)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Sequence

from gatekeeper.cli.util import EXIT_OK, for_people, open_store, print_json, print_table, rows_for_people, settings_from_args
from gatekeeper.config import Settings


def _print_events(rows: Sequence[dict[str, Any]], settings: Settings, as_json: bool) -> None:
    if as_json:
        for row in rows:
            print_json(row, settings, indent=None)  # one object per line; `data` is an object, not a string
        return
    for row in rows:
        r = for_people(row, settings)
        session = f"#{r['session_id']}" if r["session_id"] else "-"
        print(
            f"{r['at']}  {r['lane'] or '-':<10} {r['kind']:<12} {r['reason'] or '-':<22} "
            f"{r['plate'] or '-':<10} {session:<6} {r['message'] or ''}".rstrip() + _no_read_hint(row),
            flush=True,
        )


def _no_read_hint(row: dict[str, Any]) -> str:
    """For a no_read: the reader's guesses and the command that resolves it."""
    if row.get("kind") != "no_read":
        return ""
    data = row.get("data") or {}
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            data = {}
    guesses = ", ".join(data.get("guesses") or []) or "none"
    how = "--session ID" if data.get("direction") == "exit" else "--plate P"
    return f" [guesses: {guesses}; photo: {data.get('photo') or '-'}; gatekeeper resolve {row['id']} {how}]"


def cmd_events(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with open_store(settings) as store:
        rows = store.events(tail=args.tail, plate=args.plate)
        _print_events(rows, settings, args.json)
        last = rows[-1]["seq"] if rows else (store.events(tail=1) or [{"seq": 0}])[-1]["seq"]
        while args.follow:
            time.sleep(args.interval)  # polling a file another process writes: no event to wait on
            rows = store.events(after_seq=last)
            if rows:
                _print_events(rows, settings, args.json)
                last = rows[-1]["seq"]
    return EXIT_OK


def cmd_outbox(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with open_store(settings) as store:
        stats = store.outbox_stats()
        pending = [
            {"id": r.id, "msg_id": r.msg_id, "topic": r.topic, "created_at": r.created_at, "retain": r.retain}
            for r in store.outbox_pending(limit=args.limit)
        ]
    if args.json:
        print_json({**stats, "rows": pending}, settings)
        return EXIT_OK
    print(f"{stats['pending']} waiting, {stats['sent']} sent and kept")
    print_table(rows_for_people(pending, settings), ("id", "topic", "created_at", "msg_id"))
    return EXIT_OK


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
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
