"""``gatekeeper run --sim``: simulated cars on the mock safety loops, so barriers close as on a real lane."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from gatekeeper.config import LaneConfig
from gatekeeper.hardware.barrier import GateEvent, GateState
from gatekeeper.lane import LaneRunner

log = logging.getLogger(__name__)


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
