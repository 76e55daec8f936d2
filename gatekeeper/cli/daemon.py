"""CLI commands that run or talk to the daemon: ``run [--sim]``, ``open``, ``arrive``.

``open`` and ``arrive`` move a barrier, so they never touch the database
themselves: they ask the running daemon over its control socket, which records
who asked (the socket's peer uid) and why before anything moves.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from gatekeeper.cli.util import (
    EXIT_NO_DAEMON,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    fail,
    human_time,
    money,
    print_json,
    settings_from_args,
)
from gatekeeper.config import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    run = sub.add_parser("run", help="run every lane, the cloud sync and the control socket (the service)")
    run.add_argument(
        "--sim", action="store_true",
        help="simulated lane: mock pins, watch-folder cameras, a simulated car passes after each opening",
    )
    run.set_defaults(func=cmd_run)

    init = sub.add_parser("init", help="create this lot's empty database (refused over an existing lot)")
    init.set_defaults(func=cmd_init)

    open_ = sub.add_parser("open", help="open a barrier by hand (recorded with who and why)")
    open_.add_argument("lane", metavar="LANE")
    open_.add_argument("--reason", required=True, help="why, for the event log (e.g. 'ticket machine broken')")
    open_.add_argument("--by", help="who asks (default: your user name)")
    open_.add_argument("--json", action="store_true")
    open_.set_defaults(func=cmd_open)

    arrive = sub.add_parser("arrive", help="a vehicle at LANE with plate P (intercom fallback when OCR fails)")
    arrive.add_argument("lane", metavar="LANE")
    arrive.add_argument("--plate", required=True, metavar="P")
    arrive.add_argument("--by", help="who typed it (default: your user name)")
    arrive.add_argument("--json", action="store_true")
    arrive.set_defaults(func=cmd_arrive)


# --------------------------------------------------------------------------- init


def cmd_init(args: argparse.Namespace) -> int:
    """A new lot, explicitly: refused when the database exists or the data directory holds a lot's state."""
    from gatekeeper.store import Store, StoreError

    settings = settings_from_args(args)
    path = settings.storage.database_path
    if path.exists() and path.stat().st_size > 0:
        fail(f"{path} already holds a lot's database: nothing to do")
    try:
        with Store.from_settings(settings) as store:
            print(f"created lot {settings.site.lot_id!r}: an empty database at {store.path}")
    except StoreError as exc:
        fail(str(exc))
    return 0


# --------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    from gatekeeper.service.daemon import Daemon
    from gatekeeper.service.lock import AlreadyRunning, DataDirLock
    from gatekeeper.service.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before any lane thread allocates (service/memory.py says why)

    try:  # before anything else: a second daemon must not touch the relays, cameras or broker
        lock = DataDirLock.acquire(settings.storage.data_dir)
    except AlreadyRunning as exc:
        fail(str(exc), EXIT_REFUSED)
    except OSError as exc:
        fail(f"cannot lock the data directory {settings.storage.data_dir}: {exc}", EXIT_REFUSED)
    on_ready = None
    if args.sim:
        settings.hardware.pin_factory = "mock"
        _print_sim_banner(settings)

        def on_ready() -> None:
            print(f"ready: {len(settings.lanes)} lane(s) running; drop car photos into the folders above "
                  "(Ctrl-C stops)", flush=True)

    return Daemon(settings, sim=args.sim, lock=lock, on_ready=on_ready).run()


def _print_sim_banner(settings: Settings) -> None:
    """Tell the person trying it out where things are, before the models load."""
    data = settings.storage.data_dir.resolve()
    out = [
        "gatekeeper simulated lot (mock pins, watch-folder cameras)",
        f"  data directory : {data}",
        f"  database       : {settings.storage.database_path.resolve()}",
        f"  photos         : {settings.storage.photos_path.resolve()}",
        f"  control socket : {settings.control_socket_path.resolve()}",
        "  drop car photos (JPEG/PNG) into:",
    ]
    for lane in settings.lanes:
        if lane.camera.startswith("dir:"):
            folder = _folder(lane.camera)
            folder.mkdir(parents=True, exist_ok=True)
            out.append(f"    {lane.id:<10} ({lane.direction:<5}) {folder}")
        else:
            out.append(f"    {lane.id:<10} ({lane.direction:<5}) camera {lane.camera} (not a watch folder)")
    if settings.mqtt.enabled:
        out.append(f"  cloud sync     : mqtt://{settings.mqtt.host}:{settings.mqtt.port} (offline is fine: events wait in the outbox)")
    out += [
        "  then watch    : gatekeeper status   |   gatekeeper events --follow",
        "  operator      : gatekeeper arrive LANE --plate P   |   gatekeeper open LANE --reason R",
        "loading the plate reader...",
    ]
    print("\n".join(out), flush=True)


def _folder(camera: str) -> Any:
    from pathlib import Path

    return Path(camera[len("dir:"):]).resolve()


# --------------------------------------------------------------------------- open / arrive


def _ask(settings: Settings, payload: dict[str, Any]) -> dict[str, Any]:
    """The daemon's reply; exit 2 for a lane the config does not have, 3 when no daemon answers,
    1 when the daemon refuses."""
    from gatekeeper.service.control import ControlError, request

    lane = payload.get("lane")
    if lane is not None and lane not in {l.id for l in settings.lanes}:
        fail(f"no lane {lane!r} in {settings.source} (lanes: {', '.join(l.id for l in settings.lanes) or 'none'})",
             EXIT_USAGE)
    try:
        reply = request(settings.control_socket_path, payload, timeout=30.0)
    except ControlError as exc:
        fail(f"no daemon is running ({exc}; socket {settings.control_socket_path}); start it with `gatekeeper run`",
             EXIT_NO_DAEMON)
    if not reply.get("ok"):
        fail(str(reply.get("error") or "the daemon refused"), EXIT_REFUSED)
    return reply


def cmd_open(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    reply = _ask(
        settings,
        {"cmd": "open", "lane": args.lane, "reason": args.reason, "by": args.by or getpass.getuser()},
    )
    reply.pop("ok", None)
    if args.json:
        print_json(reply, settings)
    else:
        print(f"lane {reply['lane']}: opening (gate {reply.get('gate')}), recorded as event {reply.get('event_id')}")
    return EXIT_OK


def cmd_arrive(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    reply = _ask(
        settings,
        {"cmd": "arrive", "lane": args.lane, "plate": args.plate, "by": args.by or getpass.getuser()},
    )
    decision = reply["decision"]
    code = EXIT_OK if decision["open"] else EXIT_REFUSED  # a script can tell "refused by the lane"
    reply.pop("ok", None)
    if args.json:
        print_json(reply, settings)
        return code
    verdict = "OPEN" if decision["open"] else "SHUT"
    session = f", session {decision['session_id']}" if decision.get("session_id") else ""
    due = f", {money(settings, decision['fee_due'])} due" if decision.get("fee_due") else ""
    print(
        f"lane {reply['lane']}: {decision['plate']} -> {verdict}: {decision['message']} "
        f"[{decision['reason']}{session}{due}] at {human_time(decision.get('at'), settings.site.tz)}"
    )
    return code


if __name__ == "__main__":  # pragma: no cover - convenience
    from gatekeeper.cli import main

    sys.exit(main())
