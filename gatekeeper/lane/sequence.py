"""One vehicle's decision carried out, always in this order.

(1) ``DecisionRecorder.record`` commits the session change, the event and the
outbox row; (2) the barrier opens; (3) the display shows the message. A crash
between (1) and (2) leaves a recorded decision and a closed barrier (the driver
asks the intercom), never an open barrier nobody can account for.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from gatekeeper.lane.actuation import Actuator
from gatekeeper.lane.evidence import SameVehicleHoldOff
from gatekeeper.lane.outcome import LaneOutcome, Source
from gatekeeper.lane.photos import PhotoKeeper
from gatekeeper.lane.ports import ChangeNotifier, Clock, Frame, Recorded
from gatekeeper.lane.recorder import DecisionRecorder
from gatekeeper.rules import Decision, normalise_plate
from gatekeeper.store import StoreError

log = logging.getLogger(__name__)


@dataclass
class LaneCounters:
    """What ``status`` reports about the lane's work."""

    frames: int = 0
    decisions: int = 0
    errors: int = 0
    last_error: str | None = None

    def error(self, text: str) -> None:
        self.errors += 1
        self.last_error = text


class DecisionSequence:
    """decide -> same-vehicle hold-off -> photo -> durable record -> barrier -> display."""

    def __init__(
        self,
        *,
        lane_id: str,
        recorder: DecisionRecorder,
        actuator: Actuator,
        photos: PhotoKeeper,
        hold_off: SameVehicleHoldOff,
        clock: Clock,
        counters: LaneCounters,
        wake: ChangeNotifier,
        decision_lock: threading.RLock,
    ) -> None:
        self.lane_id = lane_id
        self.recorder = recorder
        self.actuator = actuator
        self.photos = photos
        self.hold_off = hold_off
        self.clock = clock
        self.counters = counters
        self.wake = wake
        self.decision_lock = decision_lock
        self.last: LaneOutcome | None = None

    def carry_out(
        self, *, plate_read: str, confidence: float | None, frame: Frame | None, source: Source, by: str
    ) -> LaneOutcome | None:
        """The outcome, or None for a camera read the hold-off took for the same vehicle again."""
        plate = normalise_plate(plate_read)
        with self.decision_lock:
            now = self.clock.now()
            decision = self.recorder.decide(plate, now=now)
            if source == "camera" and self.hold_off.suppresses(plate, decision):
                log.debug("lane %s: %s again within %.0f s: same vehicle", self.lane_id, plate, self.hold_off.window_s)
                return None
            photo = self.photos.keep(frame) if frame is not None else None
            try:
                recorded = self.recorder.record(
                    decision, now=now, plate_read=plate_read, confidence=confidence,
                    photo=photo, source=source, by=by,
                )
            except StoreError as exc:
                # e.g. the session was closed by another lane a moment ago: refuse, say why.
                log.error("lane %s: decision for %s not recorded: %s", self.lane_id, plate, exc)
                self.counters.error(f"store: {exc}")
                self.actuator.show_refused(plate=plate)
                raise
            # (1) is on disk: now (2) the barrier, then (3) the display.
            if decision.open:
                self.actuator.open(reason=str(decision.reason), by=by)
            self.hold_off.remember(plate, opened=decision.open)
        self.actuator.show_decision(decision, plate=plate)
        self.wake()
        outcome = self._outcome(decision, recorded, plate_read, confidence, source, photo)
        self.last = outcome
        self.counters.decisions += 1
        log.info(
            "lane %s: %s %s -> %s (%s)%s",
            self.lane_id, source, plate or "(no plate)", "OPEN" if decision.open else "shut", decision.reason,
            f", fee due {decision.fee_due}" if decision.fee_due else "",
        )
        return outcome

    def open_manual(self, *, kind: str, reason: str, by: str) -> str:
        """Recorded with who and why, durably, before the relay moves."""
        with self.decision_lock:
            event_id = self.recorder.record_manual_open(kind=kind, reason=reason, by=by)
            self.wake()
            self.actuator.open(reason=reason, by=by)
        self.actuator.show_manual_open(kind=kind)
        return event_id

    def _outcome(
        self,
        decision: Decision,
        recorded: Recorded,
        plate_read: str,
        confidence: float | None,
        source: str,
        photo: str | None,
    ) -> LaneOutcome:
        return LaneOutcome(
            lane=self.lane_id,
            direction=self.recorder.direction,
            at=self.clock.now().isoformat(timespec="seconds"),
            plate=decision.plate,
            plate_read=plate_read,
            confidence=confidence,
            open=decision.open,
            reason=str(decision.reason),
            message=decision.message,
            fee_due=decision.fee_due,
            session_id=recorded.session_id,
            event_id=recorded.event_id,
            source=source,
            photo=photo,
        )
