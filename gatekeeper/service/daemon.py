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
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable

from gatekeeper import __version__
from gatekeeper.config import ConfigError, Settings, load_settings
from gatekeeper.lane import ConsolidatorFactory, LaneRunner, ReaderLike, default_consolidator_factory, policy_from_settings
from gatekeeper.service.assembly import BarrierFactory, GrabberFactory, build_lane, load_readers, start_sync
from gatekeeper.service.control import ControlServer, PeerCredentials
from gatekeeper.service.lock import AlreadyRunning, DataDirLock
from gatekeeper.service.sdnotify import SystemdNotifier
from gatekeeper.service.simulator import SimulatedTraffic
from gatekeeper.service.status import ControlCommands, status_line, status_report
from gatekeeper.store import Store, tariff_from_config

if TYPE_CHECKING:
    from gatekeeper.sync import CloudSync

log = logging.getLogger(__name__)

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
        lock: DataDirLock | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        if sim:
            settings.hardware.pin_factory = "mock"
        self.settings = settings
        self.sim = sim
        self.notifier = notifier or SystemdNotifier()
        self.shutdown_timeout_s = shutdown_timeout_s
        self._reader = reader   # injected: every lane reads with it
        self._readers: dict[str, ReaderLike] = {}
        self._pin_factory = pin_factory
        self._grabber_factory = grabber_factory
        self._barrier_factory = barrier_factory
        self._consolidator_factory = consolidator_factory
        self._want_control = control_socket
        self._on_ready = on_ready
        self.reader_lock = threading.Lock()
        self.decision_lock = threading.RLock()
        self.store: Store | None = None
        self.lanes: dict[str, LaneRunner] = {}
        self.sync: CloudSync | None = None
        self.control: ControlServer | None = None
        self.simulator: SimulatedTraffic | None = None
        self.lock: DataDirLock | None = lock  # taken by the caller already (``gatekeeper run``), or at start
        self.started_at: datetime | None = None
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._wakeup = threading.Event()
        self._unhealthy: set[str] = set()
        self._last_status = 0.0
        self._control_commands = ControlCommands(
            lanes=self.lanes, status=self.status, reload=self.reload, stopping=self._stop.is_set
        )

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
        """Lock the lot, open the store, load the reader, start lanes, sync and control socket; then READY=1.

        The lock comes first: a second daemon on the same lot stops here (:class:`AlreadyRunning`)
        before it touches a relay, a camera, the broker or the database.
        """
        t0 = time.monotonic()
        self.started_at = datetime.now(UTC)
        s = self.settings
        if self.lock is None:
            self.lock = DataDirLock.acquire(s.storage.data_dir)
        self.store = Store.from_settings(s)  # creates the data directory 0700
        if self.store.created:
            log.warning("NEW LOT %r: created an empty database at %s", s.site.lot_id, self.store.path)
        directions = {lane.direction for lane in s.lanes}
        if self._reader is not None:
            self._readers = {direction: self._reader for direction in directions}
        elif not self._readers:
            self._readers = load_readers(s.anpr, directions)
        if self._pin_factory is None:
            from gatekeeper.hardware.pins import make_pin_factory

            self._pin_factory = make_pin_factory(s.hardware.pin_factory)
        if self._consolidator_factory is None:
            self._consolidator_factory = default_consolidator_factory(s.anpr)
        self.sync = start_sync(s, self.store, open_handler=self._remote_open, on_config_change=self.request_reload,
                               lane_health=self.lane_health)
        for lane in s.lanes:
            self.lanes[lane.id] = build_lane(
                s, lane, store=self.store, reader=self._readers[lane.direction], pin_factory=self._pin_factory,
                consolidator_factory=self._consolidator_factory, reader_lock=self.reader_lock,
                decision_lock=self.decision_lock, on_change=self._wake_sync,
                grabber_factory=self._grabber_factory, barrier_factory=self._barrier_factory,
            )
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
        if self._on_ready is not None:
            self._on_ready()
        log.info("ready in %.1f s: %d lane(s), pin factory %s", time.monotonic() - t0, len(self.lanes), s.hardware.pin_factory)

    def _wake_sync(self) -> None:
        if self.sync is not None:
            self.sync.wake()

    def _remote_open(self, lane: str, reason: str, by: str) -> None:
        """The cloud's verified open command (sync/commands.py checked signature and replay)."""
        runner = self.lanes.get(lane)
        if runner is None:
            raise KeyError(f"no lane {lane!r}")
        runner.open_manual(reason=reason, by=by, remote=True)

    def lane_health(self) -> dict[str, str]:
        """Each lane ``ok`` or ``stalled`` (its worker missed ``daemon.lane_stall_s``), for Home Assistant."""
        stall = self.settings.daemon.lane_stall_s
        return {lane_id: "ok" if runner.healthy(stall) else "stalled" for lane_id, runner in list(self.lanes.items())}

    # -- main loop -----------------------------------------------------------------------

    def run(self) -> int:
        """Start, supervise until SIGTERM/SIGINT, shut down cleanly. Returns the exit code."""
        self._install_signals()
        try:
            self.start()
        except AlreadyRunning as exc:
            log.error("not starting: %s", exc)
            self.notifier.close()
            return 1
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
            if self.store is not None and self.store.storage_fault is not None:
                self.store.check_storage()  # a full disk: notice (and record) its recovery without traffic
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
            changed = _apply_reloaded(self.settings, fresh)
            self.store.set_default_tariff(tariff_from_config(self.settings))
            policy = policy_from_settings(self.settings)
            for runner in self.lanes.values():
                runner.policy = policy
        message = _reload_summary(self.store, by, changed)
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
        _stop_lanes(list(self.lanes.values()), deadline=time.monotonic() + self.shutdown_timeout_s)
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
        owned = [] if self._reader is not None else list({id(r): r for r in self._readers.values()}.values())
        for reader in owned:
            try:
                reader.close()  # type: ignore[attr-defined]
            except Exception:
                log.exception("closing the plate reader failed")
        self._readers = {}
        if self.store is not None:
            self.store.close()  # WAL checkpoint; every decision was already committed
            self.store = None
        self.lanes.clear()
        if self.lock is not None:
            self.lock.release()  # last: nothing of this daemon touches the lot after this
            self.lock = None
        self.notifier.close()
        log.info("stopped")

    # -- status and control --------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return status_report(
            settings=self.settings, store=self.store, sync=self.sync, lanes=self.lanes, sim=self.sim,
            ready=self.ready.is_set(), started_at=self.started_at, healthy=not self._unhealthy,
        )

    def status_line(self) -> str:
        return status_line(store=self.store, sync=self.sync, lanes=self.lanes)

    def handle_control(self, request: dict[str, Any], peer: PeerCredentials) -> dict[str, Any]:
        """Serve one control-socket command (see :class:`ControlCommands`)."""
        return self._control_commands.handle(request, peer)


def _apply_reloaded(settings: Settings, fresh: Settings) -> list[str]:
    """Take ``fresh``'s tariff and rules into the running ``settings``; what changed, by name."""
    changed: list[str] = []
    if fresh.tariff != settings.tariff or fresh.site.currency != settings.site.currency:
        changed.append("tariff")
    if fresh.rules != settings.rules:
        changed.append("rules")
    if [lane.model_dump() for lane in fresh.lanes] != [lane.model_dump() for lane in settings.lanes]:
        log.warning("reload: lane settings changed; they take effect after a restart")
    settings.tariff = fresh.tariff
    settings.rules = fresh.rules
    return changed


def _reload_summary(store: Store, by: str, changed: list[str]) -> str:
    """One line for the log and the event: the lists, reservations and tariff now in force."""
    entries = store.list_entries()
    allow = sum(1 for e in entries if e.kind == "allow")
    tariff = store.tariff()
    return (
        f"reloaded ({by}): {allow} allow, {len(entries) - allow} deny, {len(store.reservations())} reservation(s); "
        f"tariff {tariff.rate} per {tariff.interval_minutes} min, max {tariff.daily_max}/day"
        + (f"; changed: {', '.join(changed)}" if changed else "")
    )


def _stop_lanes(runners: list[LaneRunner], *, deadline: float) -> None:
    """Stop every lane's frames at once, finish their decisions, then leave all barriers safe in parallel."""
    for runner in runners:
        runner.request_stop()
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
