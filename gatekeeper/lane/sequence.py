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
from datetime import datetime
from typing import Callable, Sequence

from gatekeeper.lane.actuation import Actuator
from gatekeeper.lane.evidence import MAX_PHOTOS, Recent, SameVehicleHoldOff
from gatekeeper.lane.outcome import LaneOutcome, Source
from gatekeeper.lane.photos import PhotoKeeper
from gatekeeper.lane.ports import ChangeNotifier, Clock, Frame, Glimpse, PlateRead, Recorded
from gatekeeper.lane.recorder import NO_READ, DecisionRecorder
from gatekeeper.rules import Action, Decision, Reason, normalise_plate, unmatched_refusal
from gatekeeper.store import StoreError

log = logging.getLogger(__name__)


@dataclass
class LaneCounters:
    """What ``status`` reports about the lane's work."""

    frames: int = 0
    decisions: int = 0
    closer_looks: int = 0   # vehicles read again deblurred before the attendant was called (exit: scored, entry: read)
    errors: int = 0
    last_error: str | None = None

    def error(self, text: str) -> None:
        self.errors += 1
        self.last_error = text


class DecisionSequence:
    """same-vehicle hold-off -> decide -> photo -> durable record (or no-read) -> barrier -> display."""

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
        self,
        *,
        plate_read: str,
        confidence: float | None,
        frame: Frame | None,
        source: Source,
        by: str,
        photos: Sequence[tuple[Glimpse, ...]] = (),
        guesses: Sequence[str] = (),
        closer_look: CloserLook | None = None,
        closer_read: CloserRead | None = None,
        sure: bool = True,
    ) -> LaneOutcome | None:
        """The outcome, or None for a camera read the hold-off took for the same vehicle again.

        A camera vehicle seen again within the hold-off: after a refusal (or a no-read) its
        new evidence joins the earlier one and it is decided again, which may now open (paid
        meanwhile, read now); the same refusal again is only noted (``same_vehicle`` event,
        not sent). After an opening it is never decided again.

        ``closer_look`` (an exit camera's deblurred plate box, docs/anpr.md "Closer look") is
        asked only when the decision would leave the vehicle to the attendant as unread,
        unmatched or undecided between sessions, and its crops count only for a match the
        stricter closer-look score accepts outright. It runs under the decision lock (about
        1-1.5 s, only for such vehicles): the decision it may change is the one being made.
        ``closer_read`` is an entry camera's: asked only for a vehicle with no whole read, its
        read (if any) is decided as an unsure one.

        ``sure``: the read cleared the lane's sure floor (an entry also takes unsure reads, which
        never grant a reservation or allow-list privilege on their own).
        """
        plate = normalise_plate(plate_read)
        evidence = tuple(photos)
        with self.decision_lock:
            now = self.clock.now()
            earlier = self.hold_off.earlier(plate, tuple(guesses), evidence) if source == "camera" else None
            if earlier is not None and self._left_since(earlier):
                self.hold_off.forget(earlier)
                earlier = None
            if earlier is not None and earlier.opened and plate:
                self._same_vehicle(earlier, evidence, plate_read, frame, None)
                return None
            if earlier is not None and not earlier.opened:
                evidence = (*earlier.photos, *evidence)[-MAX_PHOTOS:]
            decision = self.recorder.decide(plate, now=now, photos=evidence, sure=sure, confidence=confidence)
            if closer_look is not None and evidence and unmatched_refusal(decision) and not (earlier and earlier.opened):
                evidence, decision = self._closer(plate, confidence, now, evidence, decision, closer_look)
            if closer_read is not None and evidence and decision.reason == Reason.NO_PLATE and not (earlier and earlier.opened):
                evidence, decision, read = self._closer_entry(now, evidence, decision, closer_read)
                if read is not None:
                    plate, plate_read, confidence = read.normalised, read.text, float(read.confidence)
                    let_in = self.hold_off.earlier(plate, photos=evidence) if earlier is None else None
                    if let_in is not None and let_in.opened and not self._left_since(let_in):
                        self._same_vehicle(let_in, evidence, plate_read, frame, None)   # read at last: it is in
                        return None
            if earlier is not None and (
                (earlier.opened and decision.plate == earlier.plate)
                or (not earlier.opened and not decision.open
                    and (_reason(decision), decision.plate) == (earlier.reason, earlier.plate))
            ):
                self._same_vehicle(earlier, evidence, plate_read, frame, decision)
                return None
            photo = self.photos.keep(frame) if frame is not None else None
            if decision.reason == Reason.NO_PLATE and source == "camera":
                return self._no_read(decision, evidence, guesses, photo, plate_read, earlier)
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
            if decision.action is Action.START_SESSION and evidence and recorded.session_id is not None:
                self._remember_alternates(recorded.session_id, decision.plate, evidence)
            if source == "camera":
                self.hold_off.remember(
                    read=plate, plate=decision.plate, opened=decision.open, reason=_reason(decision),
                    photos=evidence, guesses=tuple(guesses), replaces=earlier, session_id=recorded.session_id,
                )
        self.actuator.show_decision(decision, plate=decision.plate or plate)
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

    def _closer(
        self, plate: str, confidence: float | None, now: datetime, evidence: tuple[tuple[Glimpse, ...], ...],
        decision: Decision, closer_look: "CloserLook",
    ) -> tuple[tuple[tuple[Glimpse, ...], ...], Decision]:
        """The decision again with the closer look's crops added to the latest photo, when they give
        a strict outright match; otherwise the evidence and decision as they were."""
        extra = tuple(closer_look())
        self.counters.closer_looks += 1
        if not extra:
            return evidence, decision
        closer = (*evidence[:-1], (*evidence[-1], *extra))
        again = self.recorder.decide_closer(plate, now=now, photos=closer, confidence=confidence)
        return (evidence, decision) if again is None else (closer, again)

    def _closer_entry(
        self, now: datetime, evidence: tuple[tuple[Glimpse, ...], ...], decision: Decision, closer_read: "CloserRead",
    ) -> tuple[tuple[tuple[Glimpse, ...], ...], Decision, PlateRead | None]:
        """An unread entry vehicle decided again on the closer look's read, when it gives one (as an
        unsure read: no privilege on it alone); otherwise the evidence and decision as they were."""
        read, extra = closer_read()
        self.counters.closer_looks += 1
        if read is None or not read.normalised:
            return evidence, decision, None
        closer = (*evidence[:-1], (*evidence[-1], *extra)) if extra else evidence
        return closer, self.recorder.decide(read.normalised, now=now, photos=closer, sure=False), read

    def _left_since(self, earlier: Recent) -> bool:
        """A vehicle let in whose session has been closed since (it left through an exit, or an
        attendant closed it) is no longer waiting here: the same plate again is a new arrival."""
        if self.recorder.direction != "entry" or not earlier.opened or earlier.session_id is None:
            return False
        return not self.recorder.is_inside(earlier.session_id)

    def _remember_alternates(self, session_id: int, plate: str, evidence: Sequence[tuple[Glimpse, ...]]) -> None:
        """After the barrier moved: an exit match aid only, so a failure costs nothing but a log line."""
        try:
            self.recorder.remember_alternates(session_id, plate, evidence)
        except Exception:
            log.exception("lane %s: alternates of session %s not stored", self.lane_id, session_id)

    def _same_vehicle(
        self, earlier: Recent, evidence: tuple[tuple[Glimpse, ...], ...], plate_read: str, frame: Frame | None,
        decision: Decision | None,
    ) -> None:
        """Noted, not decided again: a technician can tell a photo taken for the same vehicle from a lost one."""
        log.info("lane %s: %s again within %.0f s: same vehicle", self.lane_id,
                 plate_read or "(no plate)", self.hold_off.window_s)
        self.hold_off.seen_again(earlier, evidence if not earlier.opened else earlier.photos)
        self.recorder.record_same_vehicle(
            reason=_reason(decision) if decision is not None else earlier.reason,
            plate=decision.plate if decision is not None else earlier.plate,
            session_id=decision.session_id if decision is not None else None,
            plate_read=plate_read,
        )

    def _no_read(
        self, decision: Decision, evidence: tuple[tuple[Glimpse, ...], ...], guesses: Sequence[str], photo: str | None,
        plate_read: str, earlier: Recent | None,
    ) -> LaneOutcome:
        """Nothing usable read: a ``no_read`` event with the best guesses, and the driver is told what to do."""
        message = self.actuator.no_read_text
        event_id = self.recorder.record_no_read(
            photo=photo, guesses=guesses, candidates=decision.candidates, message=message
        )
        self.hold_off.remember(
            read="", plate="", opened=False, reason=NO_READ, photos=evidence, guesses=tuple(guesses), replaces=earlier
        )
        self.actuator.show_no_read()
        self.wake()
        outcome = LaneOutcome(
            lane=self.lane_id, direction=self.recorder.direction, at=self.clock.now().isoformat(timespec="seconds"),
            plate="", plate_read=plate_read, confidence=None, open=False, reason=NO_READ, message=message,
            fee_due=0, session_id=None, event_id=event_id, source="camera", photo=photo,
        )
        self.last = outcome
        self.counters.decisions += 1
        log.info("lane %s: no read (guesses %s)", self.lane_id, ", ".join(guesses) or "none")
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


#: An exit camera's second, deblurred look at the vehicle's latest frame: its extra crops.
CloserLook = Callable[[], Sequence[Glimpse]]
#: An entry camera's second, deblurred look at the vehicle's latest frame: a read (or None) and its crops.
CloserRead = Callable[[], tuple[PlateRead | None, Sequence[Glimpse]]]


def _reason(decision: Decision) -> str:
    """The decision's reason code; a camera's no-plate decision is a no-read."""
    return NO_READ if decision.reason == Reason.NO_PLATE else str(decision.reason)
