"""``gatekeeper status``: occupancy, sessions inside, outbox, last events; live lanes when the daemon runs."""

from __future__ import annotations

import argparse
from typing import Any

from gatekeeper.cli.util import EXIT_OK, human_time, open_store, print_json, print_table, rows_for_people, settings_from_args
from gatekeeper.config import Settings


def daemon_status(settings: Settings, *, timeout: float = 3.0) -> dict[str, Any]:
    """``{"running": True, "socket", **live}`` from the daemon, or ``{"running": False, "socket", "error"}``."""
    from gatekeeper.service.control import ControlError, request

    socket_path = str(settings.control_socket_path)
    try:
        reply = request(settings.control_socket_path, {"cmd": "status"}, timeout=timeout)
    except (ControlError, OSError) as exc:  # no daemon, no socket, or no permission: the database still answers
        return {"running": False, "socket": socket_path, "error": str(exc)}
    reply.pop("ok", None)
    return {"running": True, "socket": socket_path, **reply}


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with open_store(settings) as store:
        stored = {
            "lot": settings.site.lot_id,
            "occupancy": store.occupancy(),
            "open_sessions": store.sessions(status=["open", "paid"]),
            "outbox": store.outbox_stats(),
            "last_events": store.events(tail=args.events),
        }
    daemon = daemon_status(settings)
    if args.json:
        print_json({**stored, "daemon": daemon}, settings)
        return EXIT_OK
    tz = settings.site.tz
    occ = stored["occupancy"]
    print(f"Lot {stored['lot']}: {occ['occupied']}/{occ['capacity']} occupied, {occ['free']} free")
    ob = stored["outbox"]
    oldest = f" (oldest {human_time(ob['oldest_pending_at'], tz)})" if ob["pending"] else ""
    print(f"Outbox: {ob['pending']} waiting for the cloud{oldest}")
    if not daemon["running"]:
        print(f"Daemon: no daemon is running (no answer on {daemon['socket']}); stored state below")
    else:
        print(f"Daemon: running, pid {daemon.get('pid')}" + (" (simulated lot)" if daemon.get("sim") else ""))
        for lane in daemon.get("lanes", []):
            cam = lane.get("camera") or {}
            print(
                f"  lane {lane.get('id')} ({lane.get('direction')}): gate {lane.get('gate')}, "
                f"camera {'ok' if cam.get('connected') else 'DOWN'}"
                + (f", last: {_last(lane['last'], settings)}" if lane.get("last") else "")
            )
        if daemon.get("storage_fault"):
            print(f"  STORAGE FAULT: {daemon['storage_fault']} - lanes refuse vehicles until it clears")
        if daemon.get("sync") is not None:
            for line in sync_lines(daemon["sync"], settings):
                print(f"  {line}")
    print("\nInside:")
    print_table(rows_for_people(stored["open_sessions"], settings),
                ("id", "plate", "status", "entry_lane", "entry_at", "paid_at"))
    print("\nLast events:")
    print_table(rows_for_people(stored["last_events"], settings),
                ("at", "lane", "kind", "reason", "plate", "session_id", "message"))
    return EXIT_OK


def sync_lines(sync: dict[str, Any], settings: Settings) -> list[str]:
    """The MQTT link for people: connected / offline (why) / REFUSED by the broker (what, since when)."""
    link = sync.get("link") or ("connected" if sync.get("connected") else "offline")
    rejected = sync.get("rejections_total")
    head = "sync: " + {"connected": "connected", "refused": "REFUSED by the broker"}.get(link, "offline")
    if link == "offline" and sync.get("last_error"):
        head += f" ({sync['last_error']})"
    elif link == "offline" and sync.get("error"):
        head += f" ({sync['error']})"
    lines = [head + (f", {rejected} command(s) rejected since start" if rejected else "")]
    for refusal in sync.get("refused") or []:
        since = human_time(refusal.get("since"), settings.site.tz)
        lines.append(f"  REFUSED {refusal.get('kind')}: {refusal.get('reason')} ({refusal.get('detail')}); "
                     f"since {since}, {refusal.get('attempts')} attempt(s), tried again every "
                     f"{settings.mqtt.refused_retry_s / 2:g}-{settings.mqtt.refused_retry_s:g} s (docs/security.md)")
    return lines


def _last(decision: dict[str, Any], settings: Settings) -> str:
    verdict = "opened" if decision.get("open") else "stayed shut"
    at = human_time(decision.get("at"), settings.site.tz)
    return f"{decision.get('plate') or '(no plate)'} {verdict}: {decision.get('message')} [{decision.get('reason')}] at {at}"


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    status = sub.add_parser(
        "status", help="occupancy, open sessions, outbox backlog, last events, live lanes",
        description="The stored state of the lot, plus the live lanes when the daemon answers on its control "
        "socket. Exit code 0 whether or not the daemon runs (its state is in the output).",
    )
    status.add_argument("--json", action="store_true")
    status.add_argument("--events", type=int, default=10, metavar="N", help="how many recent events")
    status.set_defaults(func=cmd_status)
