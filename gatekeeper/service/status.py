"""What the daemon tells ``gatekeeper status`` and systemd, and the control-socket commands it serves."""

from __future__ import annotations

import os
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from typing import Any, Callable, Mapping, Protocol

from gatekeeper import __version__
from gatekeeper.config import Settings
from gatekeeper.lane import LaneRunner
from gatekeeper.service.control import PeerCredentials
from gatekeeper.store import Store, StoreError


class SyncLike(Protocol):
    """What the status needs of the cloud sync."""

    @property
    def connected(self) -> bool: ...

    @property
    def refusal(self) -> str | None:
        """What the broker refuses the lot right now, or None."""

    def health(self) -> Mapping[str, Any]: ...


def status_report(
    *,
    settings: Settings,
    store: Store | None,
    sync: SyncLike | None,
    lanes: Mapping[str, LaneRunner],
    sim: bool,
    ready: bool,
    started_at: datetime | None,
    healthy: bool,
) -> dict[str, Any]:
    """The live status (the control socket's ``status`` reply)."""
    sync_health: Any = None
    if sync is not None:
        try:
            h = sync.health()
            sync_health = asdict(h) if is_dataclass(h) else dict(h)
        except Exception as exc:
            sync_health = {"connected": False, "error": str(exc)}
    elif settings.mqtt.enabled:
        sync_health = {"connected": False, "error": "not started"}
    return {
        "ok": True,
        "pid": os.getpid(),
        "version": __version__,
        "sim": sim,
        "ready": ready,
        "started_at": started_at.isoformat(timespec="seconds") if started_at else None,
        "uptime_s": round((datetime.now(UTC) - started_at).total_seconds(), 1) if started_at else 0,
        "lot": settings.site.lot_id,
        "occupancy": store.occupancy() if store else None,
        "outbox": store.outbox_stats() if store else None,
        "storage_fault": store.storage_fault if store else None,
        "healthy": healthy,
        "lanes": [lane_status(runner) for runner in lanes.values()],
        "sync": sync_health,
    }


def lane_status(runner: LaneRunner) -> dict[str, Any]:
    """The lane's status, with its camera's resolution (from the newest frame) for ``doctor``."""
    status = runner.status()
    camera = status.get("camera")
    grabber = getattr(runner, "grabber", None)
    if isinstance(camera, dict) and grabber is not None:
        try:
            frame = grabber.latest()
        except Exception:
            frame = None
        shape = getattr(getattr(frame, "image", None), "shape", None)
        camera["resolution"] = [int(shape[1]), int(shape[0])] if shape is not None else None
    return status


def status_line(*, store: Store | None, sync: SyncLike | None, lanes: Mapping[str, LaneRunner]) -> str:
    """systemd's one-line ``STATUS=``."""
    if store is None:
        return "starting"
    occ = store.occupancy()
    backlog = store.outbox_stats()["pending"]
    gates = ", ".join(f"{r.id} {r.status()['gate']}" for r in lanes.values()) or "no lanes"
    online = ""
    if sync is not None:
        try:
            refusal = sync.refusal
            online = "; cloud " + ("online" if sync.connected else "offline")
            online += f" - MQTT {refusal}" if refusal else ""
        except Exception:
            online = ""
    fault = f"; STORAGE FAULT: {store.storage_fault}" if store.storage_fault else ""
    return f"{occ['occupied']}/{occ['capacity']} occupied; {gates}; outbox {backlog} waiting{online}{fault}"


class ControlCommands:
    """The control socket's commands: ``status``, ``open``, ``arrive``, ``reload``."""

    def __init__(
        self,
        *,
        lanes: Mapping[str, LaneRunner],
        status: Callable[[], dict[str, Any]],
        reload: Callable[..., dict[str, Any]],
        stopping: Callable[[], bool],
    ) -> None:
        self.lanes = lanes
        self._status = status
        self._reload = reload
        self._stopping = stopping

    def handle(self, request: dict[str, Any], peer: PeerCredentials) -> dict[str, Any]:
        """Serve one control-socket command (``status``, ``open``, ``arrive``, ``reload``)."""
        cmd = request.get("cmd")
        if cmd == "status":
            return self._status()
        if self._stopping():
            return {"ok": False, "error": "the daemon is stopping"}
        asked_by = str(request.get("by") or "").strip()
        by = asked_by if asked_by == peer.user or not asked_by else f"{asked_by} (as {peer.user})"
        if cmd == "reload":
            return self._reload(by=f"control:{peer.user}")
        if cmd in ("open", "arrive"):
            lane_id = request.get("lane")
            runner = self.lanes.get(lane_id) if isinstance(lane_id, str) else None
            if runner is None:
                return {"ok": False, "error": f"no lane {lane_id!r} (configured: {', '.join(self.lanes) or 'none'})"}
            if cmd == "open":
                reason = request.get("reason")
                if not isinstance(reason, str) or not reason.strip():
                    return {"ok": False, "error": "open needs a reason"}
                event_id = runner.open_manual(reason=reason.strip(), by=by)
                return {"ok": True, "lane": runner.id, "event_id": event_id, "gate": runner.status()["gate"]}
            plate = request.get("plate")
            if not isinstance(plate, str):
                return {"ok": False, "error": "arrive needs a plate"}
            try:
                outcome = runner.arrive(plate, by=by)
            except (ValueError, StoreError) as exc:  # e.g. the disk is full: the lane said "see attendant"
                return {"ok": False, "error": str(exc)}
            return {"ok": True, "lane": runner.id, "decision": outcome.as_dict()}
        return {"ok": False, "error": f"unknown command {cmd!r} (status, open, arrive, reload)"}
