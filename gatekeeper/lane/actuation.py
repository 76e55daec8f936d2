"""Sequencing barrier and display, and recording what the barrier reports.

The order is fixed by :class:`~gatekeeper.lane.sequence.DecisionSequence`: the
decision is on disk first, then :meth:`Actuator.open` moves the barrier, then the
display shows the message. The barrier itself (hardware.barrier) decides when it
may close (never while a presence input is active); the lane only asks it to open.
"""

from __future__ import annotations

import logging
from typing import Callable

from gatekeeper.lane.ports import Barrier, ChangeNotifier, Clock, Display, GateEvent, GateListener, LaneStore
from gatekeeper.messages import GATE_STATE_BY_EVENT, gate_state_message
from gatekeeper.rules import Decision

log = logging.getLogger(__name__)

ALARM_EVENTS = {
    "close_timeout": "barrier open too long without a vehicle passing: closed by timeout",
    "tailgate": "a second vehicle passed under the open barrier",
}

REFUSED_MESSAGE = "Please see attendant"
MANUAL_OPEN_MESSAGE = "Please drive through"
#: What the display says when nothing usable was read (``lane.no_read_message``).
NO_READ_MESSAGE = "Plate not read - please press the call button"


class Actuator:
    """The lane's barrier and display, driven in the order the decision allows."""

    def __init__(
        self, *, lane_id: str, barrier: Barrier, display: Display, no_read_text: str = NO_READ_MESSAGE
    ) -> None:
        self.lane_id = lane_id
        self.barrier = barrier
        self.display = display
        self.no_read_text = no_read_text

    def open(self, *, reason: str, by: str) -> None:
        """Only after the decision (or manual open) is durable."""
        self.barrier.open(reason=reason, by=by)

    def show_decision(self, decision: Decision, *, plate: str) -> None:
        self.display.show(decision.message, plate=plate, kind="entry" if decision.open else "denied")

    def show_refused(self, *, plate: str) -> None:
        """The decision could not be recorded: the barrier stays shut, the driver is told to ask."""
        self.display.show(REFUSED_MESSAGE, plate=plate, kind="error")

    def show_no_read(self) -> None:
        """Nothing usable was read: the barrier stays shut and the driver is told what to do."""
        self.display.show(self.no_read_text, kind="no_read")

    def show_manual_open(self, *, kind: str) -> None:
        self.display.show(MANUAL_OPEN_MESSAGE, kind=kind)

    @property
    def gate_state(self) -> str:
        return str(getattr(self.barrier.state, "value", self.barrier.state))

    def vehicle_waiting(self) -> bool | None:
        return _safe_bool(lambda: self.barrier.vehicle_waiting)

    def safety_active(self) -> bool | None:
        return _safe_bool(lambda: self.barrier.safety_active)

    def leave_safe(self, timeout: float) -> bool:
        """Before the process exits: wait (bounded) for the barrier to be down, then release the pins.

        The barrier itself never closes on a vehicle; here we only give an open
        barrier the chance to finish its cycle so a hold-mode relay is not
        released under a car. Returns True when the barrier was closed.
        """
        closed = self.gate_state == "closed"
        if not closed:
            log.info("lane %s: waiting up to %.0f s for the barrier to close before exit", self.lane_id, timeout)
            closed = bool(self.barrier.wait_for_state("closed", timeout))
            if not closed:
                log.warning("lane %s: barrier still %s at exit", self.lane_id, self.gate_state)
        try:
            self.barrier.close()
        except Exception:
            log.exception("lane %s: releasing the barrier pins failed", self.lane_id)
        return closed


class GateEventRecorder:
    """Barrier events become store events; state changes become retained gate-state messages."""

    def __init__(
        self, *, lane_id: str, store: LaneStore, clock: Clock, wake: ChangeNotifier
    ) -> None:
        self.lane_id = lane_id
        self.store = store
        self.clock = clock
        self.wake = wake
        self.listeners: list[GateListener] = []

    def attach(self, barrier: Barrier) -> None:
        """Chain onto the barrier's ``on_event`` callback (keeping one already set)."""
        previous = barrier.on_event

        def chained(event: GateEvent) -> None:
            self.on_gate_event(event)
            if previous is not None and previous is not chained:
                previous(event)

        barrier.on_event = chained

    def on_gate_event(self, event: GateEvent) -> None:
        try:
            self._record(event)
        except Exception:
            log.exception("lane %s: recording gate event %r failed", self.lane_id, event)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("lane %s: gate listener failed", self.lane_id)

    def _record(self, event: GateEvent) -> None:
        kind = str(event.kind)
        detail = str(event.detail or "")
        if kind in GATE_STATE_BY_EVENT:
            topic, payload = gate_state_message(
                lot=self.store.lot_id,
                lane=self.lane_id,
                state=GATE_STATE_BY_EVENT[kind],
                at=event.at or self.clock.now(),
                detail=detail,
            )
            self.store.enqueue(topic, payload, retain=True)
        elif kind in ("passed", "backed_away"):
            self.store.record_event(
                kind, lane=self.lane_id, reason=kind, message=detail or kind.replace("_", " "), now=self.clock.now()
            )
        elif kind in ALARM_EVENTS:
            log.warning("lane %s ALARM %s: %s", self.lane_id, kind, detail)
            self.store.record_event(
                "alarm", lane=self.lane_id, reason=kind, message=detail or ALARM_EVENTS[kind],
                data={"gate_event": kind}, now=self.clock.now(),
            )
        else:
            return  # presence changes and the like: not worth a row
        self.wake()


def _safe_bool(getter: Callable[[], bool]) -> bool | None:
    try:
        return bool(getter())
    except Exception:
        return None
