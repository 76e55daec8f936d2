"""``gatekeeper resolve``: a technician says what an unread vehicle was.

A ``no_read`` event (``gatekeeper events``) names the lane and keeps the photo and the
reader's best guesses. At an entry the technician types the plate; at an exit picks the
session (``gatekeeper sessions list``). The decision then goes through the running daemon
like ``gatekeeper arrive`` (the same rules; the barrier opens only if they allow it), and
the resolution itself is recorded as a ``no_read_resolved`` event.
"""

from __future__ import annotations

import argparse
import getpass
import json
from typing import Any

from gatekeeper.cli.util import EXIT_OK, EXIT_REFUSED, fail, open_store, print_json, settings_from_args
from gatekeeper.rules import normalise_plate


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    resolve = sub.add_parser(
        "resolve", help="resolve a no_read event: the plate (entry) or the session (exit) of the unread vehicle"
    )
    resolve.add_argument("event_id", metavar="EVENT", help="the no_read event's id (gatekeeper events --json)")
    which = resolve.add_mutually_exclusive_group(required=True)
    which.add_argument("--plate", metavar="P", help="the plate as the technician reads it on the photo (entry)")
    which.add_argument("--session", type=int, metavar="ID", help="the session inside this vehicle is (exit)")
    resolve.add_argument("--by", help="who resolves it (default: your user name)")
    resolve.add_argument("--json", action="store_true")
    resolve.set_defaults(func=cmd_resolve)


def cmd_resolve(args: argparse.Namespace) -> int:
    from gatekeeper.cli.daemon import _ask

    settings = settings_from_args(args)
    by = args.by or getpass.getuser()
    with open_store(settings) as store:
        event = next((e for e in store.events(kinds=["no_read"]) if e["id"] == args.event_id), None)
        if event is None:
            fail(f"no no_read event {args.event_id!r} (see gatekeeper events)")
        done = [e for e in store.events(kinds=["no_read_resolved"]) if json.loads(e["data"] or "{}").get("no_read_id") == args.event_id]
        if done:
            fail(f"no_read event {args.event_id} was resolved already (event {done[0]['id']})")
        data = json.loads(event["data"] or "{}")
        direction = data.get("direction") or "entry"
        session_id: int | None = None
        if args.session is not None:
            if direction != "exit":
                fail("--session resolves an exit; at an entry type the plate with --plate")
            row = _inside(store, args.session)
            plate, session_id = row["plate"], args.session
        else:
            plate = normalise_plate(args.plate)
            if not plate:
                fail(f"{args.plate!r} is not a plate (no letters or digits)")
        reply = _ask(settings, {"cmd": "arrive", "lane": event["lane"], "plate": plate, "by": by})
        decision: dict[str, Any] = reply["decision"]
        resolved = store.record_event(
            "no_read_resolved",
            lane=event["lane"],
            reason="no_read_resolved",
            message=f"resolved by {by}: {plate}" + (f" (session #{session_id})" if session_id else ""),
            plate=plate,
            session_id=session_id or decision.get("session_id"),
            data={"no_read_id": args.event_id, "by": by, "direction": direction,
                  "decision_event_id": decision.get("event_id")},
        )
    code = EXIT_OK if decision["open"] else EXIT_REFUSED  # as `gatekeeper arrive`: 1 when the lane stays shut
    if args.json:
        print_json({"resolved": resolved, **reply}, settings)
        return code
    verdict = "OPEN" if decision["open"] else "SHUT"
    print(f"no_read {args.event_id} resolved as {plate} (event {resolved}); lane {reply['lane']} -> {verdict}: "
          f"{decision['message']} [{decision['reason']}]")
    return code


def _inside(store: Any, session_id: int) -> dict[str, Any]:
    try:
        row = store.session(session_id)
    except Exception:
        fail(f"no session #{session_id} (see gatekeeper sessions list)")
    if row["status"] == "closed":
        fail(f"session #{session_id} has left already")
    return row
