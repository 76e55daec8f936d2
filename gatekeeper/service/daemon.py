"""``gatekeeper run``: every lane, the cloud sync and the control socket in one process.

The main thread only supervises: it feeds the systemd watchdog while every lane
is healthy (its worker went round its loop within ``daemon.lane_stall_s``),
keeps the ``STATUS=`` line current and handles SIGTERM/SIGINT (stop) and
SIGHUP (reload). The lanes work in their own threads; the plate reader is
loaded once and shared with a lock because reading is CPU bound.

Shutdown never closes a barrier on a vehicle: the lanes stop taking frames
(a decision under way is finished), each barrier gets a bounded time to finish
its cycle, then the pins are released, the sync stops and the store closes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Callable

from gatekeeper import __version__
from gatekeeper.config import ConfigError, LaneConfig, Settings, load_settings
from gatekeeper.service.control import ControlServer, PeerCredentials
from gatekeeper.hardware.barrier import Barrier, GateEvent, GateState
from gatekeeper.lane import (
    ConsolidatorFactory,
    GrabberLike,
    LaneRunner,
    ReaderLike,
    default_consolidator_factory,
    policy_from_settings,
)
from gatekeeper.service.sdnotify import SystemdNotifier
from gatekeeper.store import Store, tariff_from_config

log = logging.getLogger(__name__)

GrabberFactory = Callable[[LaneConfig], GrabberLike | None]
BarrierFactory = Callable[[LaneConfig, Any], Any]
#: How often the STATUS= line is refreshed.
STATUS_EVERY_S = 5.0


class Daemon:
    """Runs every configured lane plus sync and control socket until told to stop."""

    def __init__(
        self,
        settings: Settings,
        *,
        sim: bool = False,
        reader: ReaderLike | None = None,
        pin_factory: Any | None = None,
        notifier: SystemdNotifier | None = None,
        grabber_factory: GrabberFactory | None = None,
        barrier_factory: BarrierFactory | None = None,
        consolidator_factory: ConsolidatorFactory | None = None,
        shutdown_timeout_s: float = 20.0,
        control_socket: bool = True,
    ) -> None:
        if sim:
            settings.hardware.pin_factory = "mock"
        self.settings = settings
        self.sim = sim
        self.notifier = notifier or SystemdNotifier()
        self.shutdown_timeout_s = shutdown_timeout_s
        self._reader = reader
        self._owns_reader = reader is None
        self._pin_factory = pin_factory
        self._grabber_factory = grabber_factory
        self._barrier_factory = barrier_factory
        self._consolidator_factory = consolidator_factory
        self._want_control = control_socket
        self.reader_lock = threading.Lock()
        self.decision_lock = threading.RLock()
        self.store: Store | None = None
        self.lanes: dict[str, LaneRunner] = {}
        self.sync: Any | None = None
        self.control: ControlServer | None = None
        self.simulator: "SimulatedTraffic | None" = None
        self.started_at: datetime | None = None
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._wakeup = threading.Event()
        self._unhealthy: set[str] = set()
        self._last_status = 0.0

    # -- public control ------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()
        self._wakeup.set()

    def request_reload(self) -> None:
        self._reload.set()
        self._wakeup.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- start -----------------------------------------------------------------------

    def start(self) -> None:
        """Open the store, load the reader, start lanes, sync and control socket; then READY=1."""
        t0 = time.monotonic()
        self.started_at = datetime.now(UTC)
        s = self.settings
        s.storage.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store.from_settings(s)
        if self._reader is None:
            self._reader = self._load_reader()
        if self._pin_factory is None:
            from gatekeeper.hardware.pins import make_pin_factory

            self._pin_factory = make_pin_factory(s.hardware.pin_factory)
        if self._consolidator_factory is None:
            self._consolidator_factory = default_consolidator_factory(s.anpr)
        self._start_sync()
        for lane in s.lanes:
            self.lanes[lane.id] = self._make_lane(lane)
        if self.sim:
            self.simulator = SimulatedTraffic(self._pin_factory)
            for runner in self.lanes.values():
                self.simulator.attach(runner)
        for runner in self.lanes.values():
            runner.start()
        if self._want_control:
            self.control = ControlServer(s.control_socket_path, self.handle_control, group=s.daemon.socket_group)
            self.control.start()
        self.store.record_event(
            "daemon_started",
            reason="sim" if self.sim else "start",
            message=f"gatekeeper {__version__} running {len(self.lanes)} lane(s)",
            data={"pid": os.getpid(), "lanes": list(self.lanes), "sim": self.sim},
            publish=False,
        )
        self.ready.set()
        self.notifier.ready(status=self.status_line())
        log.info("ready in %.1f s: %d lane(s), pin factory %s", time.monotonic() - t0, len(self.lanes), s.hardware.pin_factory)

    def _load_reader(self) -> ReaderLike:
        from gatekeeper.vision.reader import PlateReader

        t0 = time.monotonic()
        reader = PlateReader.from_config(self.settings.anpr)
        log.info("plate reader loaded in %.1f s", time.monotonic() - t0)
        return reader

    def _make_lane(self, lane: LaneConfig) -> LaneRunner:
        assert self.store is not None and self._reader is not None
        if self._barrier_factory is not None:
            barrier = self._barrier_factory(lane, self._pin_factory)
        else:
            barrier = Barrier.from_config(lane, pin_factory=self._pin_factory)
        if self._grabber_factory is not None:
            grabber = self._grabber_factory(lane)
        else:
            from gatekeeper.vision.camera.grabber import FrameGrabber

            grabber = FrameGrabber.from_config(lane)
        return LaneRunner.from_settings(
            self.settings,
            lane,
            store=self.store,
            reader=self._reader,
            barrier=barrier,
            grabber=grabber,
            consolidator_factory=self._consolidator_factory,
            reader_lock=self.reader_lock,
            decision_lock=self.decision_lock,
            on_change=self._wake_sync,
        )

    def _start_sync(self) -> None:
        if not self.settings.mqtt.enabled and not self.settings.cloud.enabled:
            log.info("cloud sync disabled (mqtt.enabled = false): events stay in the outbox")
            return
        # With MQTT off but cloud.enabled, CloudSync runs only the photo uploader.
        assert self.store is not None
        try:
            from gatekeeper.sync import CloudSync

            self.sync = CloudSync(
                self.settings,
                self.store,
                open_handler=self._remote_open,
                on_config_change=self.request_reload,
            )
            self.sync.start()
        except Exception as exc:
            # No broker, a bad certificate...: the lanes must run regardless; events wait in the outbox.
            log.error("cloud sync not started: %s (events wait in the outbox)", exc)
            self.sync = None

    def _wake_sync(self) -> None:
        if self.sync is not None:
            self.sync.wake()

    def _remote_open(self, lane: str, reason: str, by: str) -> None:
        """The cloud's verified open command (sync.py checked signature and replay)."""
        runner = self.lanes.get(lane)
        if runner is None:
            raise KeyError(f"no lane {lane!r}")
        runner.open_manual(reason=reason, by=by, remote=True)

    # -- main loop -----------------------------------------------------------------------

    def run(self) -> int:
        """Start, supervise until SIGTERM/SIGINT, shut down cleanly. Returns the exit code."""
        self._install_signals()
        try:
            self.start()
        except Exception as exc:
            log.error("cannot start: %s", exc)
            log.debug("start failure", exc_info=True)
            self.shutdown()
            return 1
        tick = self._tick_s()
        while not self._stop.is_set():
            self._wakeup.wait(tick)
            self._wakeup.clear()
            if self._stop.is_set():
                break
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            self.supervise()
        self.shutdown()
        return 0

    def _tick_s(self) -> float:
        interval = self.notifier.watchdog_interval_s
        return min(1.0, interval / 4) if interval else 1.0

    def supervise(self) -> bool:
        """One round of the main loop: feed the watchdog only if every lane is healthy."""
        stall = self.settings.daemon.lane_stall_s
        sick = {lane_id for lane_id, runner in self.lanes.items() if not runner.healthy(stall)}
        for lane_id in sorted(sick - self._unhealthy):
            runner = self.lanes[lane_id]
            log.error(
                "lane %s stalled (no heartbeat for %.1f s > daemon.lane_stall_s=%g): watchdog not fed",
                lane_id, runner.heartbeat_age_s, stall,
            )
            self._record("alarm", lane=lane_id, reason="lane_stalled",
                         message=f"lane {lane_id} stalled for {runner.heartbeat_age_s:.0f} s")
        for lane_id in sorted(self._unhealthy - sick):
            log.info("lane %s healthy again", lane_id)
        self._unhealthy = sick
        healthy = not sick
        if healthy or not self.settings.daemon.watchdog:
            self.notifier.watchdog()
        now = time.monotonic()
        if now - self._last_status >= STATUS_EVERY_S:
            self._last_status = now
            self.notifier.status(self.status_line())
        return healthy

    def _record(self, kind: str, **fields: Any) -> None:
        if self.store is None:
            return
        try:
            self.store.record_event(kind, **fields)
            self._wake_sync()
        except Exception:
            log.exception("recording %s event failed", kind)

    # -- signals and reload ------------------------------------------------------------------

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # embedded (tests): the owner calls request_stop()/request_reload()

        def on_stop(signum: int, frame: FrameType | None) -> None:
            log.info("%s received: stopping", signal.Signals(signum).name)
            self.request_stop()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self.request_reload()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def reload(self, *, by: str = "signal") -> dict[str, Any]:
        """Re-read the config file's tariff and rules; lists, reservations and tariff rows are read per decision."""
        assert self.store is not None
        self.notifier.reloading()
        changed: list[str] = []
        if self.settings.source is not None:
            try:
                fresh = load_settings(self.settings.source)
            except ConfigError as exc:
                log.error("reload: %s is invalid, keeping the running configuration:\n%s", self.settings.source, exc)
                self._record("reload_failed", reason="config_invalid", message=str(exc).splitlines()[0], publish=False)
                self.notifier.ready()
                return {"ok": False, "error": f"invalid configuration: {exc}"}
            if fresh.tariff != self.settings.tariff or fresh.site.currency != self.settings.site.currency:
                changed.append("tariff")
            if fresh.rules != self.settings.rules:
                changed.append("rules")
            if [l.model_dump() for l in fresh.lanes] != [l.model_dump() for l in self.settings.lanes]:
                log.warning("reload: lane settings changed; they take effect after a restart")
            self.settings.tariff = fresh.tariff
            self.settings.rules = fresh.rules
            self.store.set_default_tariff(tariff_from_config(self.settings))
            policy = policy_from_settings(self.settings)
            for runner in self.lanes.values():
                runner.policy = policy
        entries = self.store.list_entries()
        allow = sum(1 for e in entries if e.kind == "allow")
        deny = len(entries) - allow
        reservations = len(self.store.reservations())
        tariff = self.store.tariff()
        message = (
            f"reloaded ({by}): {allow} allow, {deny} deny, {reservations} reservation(s); "
            f"tariff {tariff.rate} per {tariff.interval_minutes} min, max {tariff.daily_max}/day"
            + (f"; changed: {', '.join(changed)}" if changed else "")
        )
        log.info(message)
        self._record("reloaded", reason=f"reload_{by}", message=message, data={"changed": changed}, publish=False)
        self.notifier.ready()
        return {"ok": True, "message": message, "changed": changed}

    # -- shutdown -------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Finish the current decisions, leave barriers safe, flush, close. Idempotent."""
        self._stop.set()
        self.notifier.stopping(status="stopping: finishing decisions, leaving barriers safe")
        if self.control is not None:
            self.control.close()
            self.control = None
        runners = list(self.lanes.values())
        for runner in runners:
            runner.request_stop()  # all lanes stop taking frames at once
        deadline = time.monotonic() + self.shutdown_timeout_s
        for runner in runners:
            runner.stop(timeout=max(1.0, deadline - time.monotonic()))
        threads = [
            threading.Thread(target=r.leave_safe, args=(max(0.5, deadline - time.monotonic()),), daemon=True)
            for r in runners
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, deadline - time.monotonic()) + 1.0)
        if self.simulator is not None:
            self.simulator.close()
        if self.store is not None:
            self._record(
                "daemon_stopped", reason="stop", message="gatekeeper stopped cleanly",
                data={"pid": os.getpid()}, publish=False,
            )
        if self.sync is not None:
            try:
                self.sync.close()
            except Exception:
                log.exception("closing the cloud sync failed")
            self.sync = None
        if self._owns_reader and self._reader is not None and hasattr(self._reader, "close"):
            try:
                self._reader.close()  # type: ignore[attr-defined]
            except Exception:
                log.exception("closing the plate reader failed")
        if self.store is not None:
            self.store.close()  # WAL checkpoint; every decision was already committed
            self.store = None
        self.lanes.clear()
        self.notifier.close()
        log.info("stopped")

    # -- status and control --------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        store = self.store
        sync_health: Any = None
        if self.sync is not None:
            try:
                h = self.sync.health()
                sync_health = asdict(h) if is_dataclass(h) else dict(h)
            except Exception as exc:
                sync_health = {"connected": False, "error": str(exc)}
        elif self.settings.mqtt.enabled:
            sync_health = {"connected": False, "error": "not started"}
        return {
            "ok": True,
            "pid": os.getpid(),
            "version": __version__,
            "sim": self.sim,
            "ready": self.ready.is_set(),
            "started_at": self.started_at.isoformat(timespec="seconds") if self.started_at else None,
            "uptime_s": round((datetime.now(UTC) - self.started_at).total_seconds(), 1) if self.started_at else 0,
            "lot": self.settings.site.lot_id,
            "occupancy": store.occupancy() if store else None,
            "outbox": store.outbox_stats() if store else None,
            "healthy": not self._unhealthy,
            "lanes": [runner.status() for runner in self.lanes.values()],
            "sync": sync_health,
        }

    def status_line(self) -> str:
        if self.store is None:
            return "starting"
        occ = self.store.occupancy()
        backlog = self.store.outbox_stats()["pending"]
        lanes = ", ".join(f"{r.id} {r.status()['gate']}" for r in self.lanes.values()) or "no lanes"
        sync = ""
        if self.sync is not None:
            try:
                sync = "; cloud " + ("online" if self.sync.connected else "offline")
            except Exception:
                sync = ""
        return f"{occ['occupied']}/{occ['capacity']} occupied; {lanes}; outbox {backlog} waiting{sync}"

    def handle_control(self, request: dict[str, Any], peer: PeerCredentials) -> dict[str, Any]:
        """Serve one control-socket command (``status``, ``open``, ``arrive``, ``reload``)."""
        cmd = request.get("cmd")
        if cmd == "status":
            return self.status()
        if self._stop.is_set():
            return {"ok": False, "error": "the daemon is stopping"}
        asked_by = str(request.get("by") or "").strip()
        by = asked_by if asked_by == peer.user or not asked_by else f"{asked_by} (as {peer.user})"
        if cmd == "reload":
            return self.reload(by=f"control:{peer.user}")
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
            except ValueError as exc:
                return {"ok": False, "error": str(exc)}
            return {"ok": True, "lane": runner.id, "decision": outcome.as_dict()}
        return {"ok": False, "error": f"unknown command {cmd!r} (status, open, arrive, reload)"}


class SimulatedTraffic:
    """``--sim``: after a barrier opens, a simulated car drives over the safety loop and leaves.

    It drives the mock safety pins active, then inactive, so the barrier sees a
    vehicle pass and closes normally, as on a real lane.
    """

    def __init__(self, pin_factory: Any, *, enter_after_s: float = 0.5, clear_after_s: float = 1.0) -> None:
        self.pin_factory = pin_factory
        self.enter_after_s = enter_after_s
        self.clear_after_s = clear_after_s
        self._timers: list[threading.Timer] = []
        self._lock = threading.Lock()
        self._closed = False

    def attach(self, runner: LaneRunner) -> None:
        lane = runner.lane
        if not lane.safety_pins:
            log.info("sim: lane %s has no safety loop; its barrier closes by timeout", lane.id)
            return

        def on_gate_event(event: GateEvent) -> None:
            if event.kind == "opened":
                self._vehicle_passes(lane)  # the vehicle the barrier rose for

        def on_vehicle(kind: str, outcome: Any) -> None:
            # Let through while the boom is already up: that vehicle passes too.
            opened = kind in ("open_manual", "open_remote") or (kind == "decided" and outcome is not None and outcome.open)
            if opened and runner.barrier.state == GateState.OPEN:
                self._vehicle_passes(lane)

        runner.add_gate_listener(on_gate_event)
        runner.add_vehicle_listener(on_vehicle)

    def _vehicle_passes(self, lane: LaneConfig) -> None:
        self._schedule(self.enter_after_s, self._drive, lane, True)
        self._schedule(self.enter_after_s + self.clear_after_s, self._drive, lane, False)

    def _schedule(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            if self._closed:
                return
            timer = threading.Timer(delay, fn, args)
            timer.daemon = True
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
            timer.start()

    def _drive(self, lane: LaneConfig, active: bool) -> None:
        level = active if lane.presence_active_high else not active
        for spec in lane.safety_pins:
            try:
                pin = self.pin_factory.pin(spec)
                pin.drive_high() if level else pin.drive_low()
            except Exception:
                log.exception("sim: driving safety pin %s failed", spec)
        log.info("sim: vehicle %s the safety loop of lane %s", "on" if active else "clear of", lane.id)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for timer in self._timers:
                timer.cancel()
