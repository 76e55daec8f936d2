"""``gatekeeper status``: occupancy, sessions inside, outbox, last events; live lanes when the daemon runs."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from gatekeeper.cli.util import TIME_KEYS, local_time, open_store, print_json, print_table, rows_with_local_times, settings_from_args
from gatekeeper.config import Settings

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
    with open_store(settings) as store:
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
        if daemon.get("storage_fault"):
            print(f"  STORAGE FAULT: {daemon['storage_fault']} - lanes refuse vehicles until it clears")
        if daemon.get("sync") is not None:
            sync = daemon["sync"]
            rejected = sync.get("rejections_total")
            print(f"  sync: {'connected' if sync.get('connected') else 'offline'}"
                  + (f", {rejected} command(s) rejected since start" if rejected else ""))
    print("\nInside:")
    print_table(report["open_sessions"], ("id", "plate", "status", "entry_lane", "entry_at", "paid_at"))
    print("\nLast events:")
    print_table(report["last_events"], ("at", "lane", "kind", "reason", "plate", "session_id", "message"))
    return 0


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    status = sub.add_parser("status", help="occupancy, open sessions, outbox backlog, last events, live lanes")
    status.add_argument("--json", action="store_true")
    status.add_argument("--events", type=int, default=10, metavar="N", help="how many recent events")
    status.set_defaults(func=cmd_status)
