"""The barrier: one relay output and the vehicle-presence inputs, over gpiozero.

The state machine (closed -> opening -> open -> closing -> closed) lives here and
nowhere else, so its one promise can be tested on mock pins: **the barrier never
closes while a safety input (loop under the boom, photocell) is active.** If a
safety input becomes active while closing, the barrier goes back up.

Two ways to wire the relay (see docs/install.md):

* ``pulse``: the relay closes the controller's "open" contact for ``pulse_time``;
  the controller then runs its own auto-close and safety logic. We cannot stop
  that controller from closing, so the lane must wire its safety loop/photocell
  to the controller as well; we *track* the state and re-pulse when a vehicle
  appears while closing.
* ``hold``: the relay is energised for as long as the barrier should stay up and
  released to let it close, so this class decides when it closes.

Inputs are debounced in software (a level must be stable for ``debounce_time``),
not with gpiozero's ``bounce_time``: MockPin ignores bounce_time, and RPi.GPIO's
version drops the edges that follow an edge, so a short glitch can leave a loop
stuck looking occupied or free. Software debounce behaves the same on every factory.

Callbacks (``on_event``, ``on_arrival``) run on one dispatcher thread per barrier,
in order, never on gpiozero's pin thread and never under the barrier's lock: a
slow listener (SQLite, MQTT) cannot delay the relay or a safety input.
:meth:`Barrier.wait_for_state` returns only after the events that led to that
state have been delivered, so a caller can check their effects straight away.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

from gpiozero.exc import DeviceClosed

from gatekeeper.hardware.devices import BarrierPins, PresenceInput
from gatekeeper.hardware.scheduling import Dispatcher, Timers

if TYPE_CHECKING:
    from gpiozero import Factory

    from gatekeeper.config import LaneConfig, PinSpec

log = logging.getLogger(__name__)

RelayMode = Literal["pulse", "hold"]
GateEventKind = Literal[
    "opening", "opened", "closing", "closed", "passed", "backed_away", "close_timeout", "tailgate", "presence"
]
EventCallback = Callable[["GateEvent"], None]
ArrivalCallback = Callable[[], None]


class GateState(StrEnum):
    """Where the boom is (as far as we know: in pulse mode the controller moves it)."""

    CLOSED = "closed"
    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"


@dataclass(frozen=True, slots=True)
class GateEvent:
    """Something the barrier saw or did; the lane runner records it.

    ``kind`` is one of: opening, opened, closing, closed (state changes);
    passed, backed_away (a vehicle's fate); close_timeout, tailgate (alarms);
    presence (a debounced input changed).
    """

    kind: GateEventKind
    lane: str
    at: datetime
    detail: str = ""


@dataclass(slots=True)
class VehicleCycle:
    """The vehicle bookkeeping of one open cycle (from leaving CLOSED until CLOSED again)."""

    authorised: int = 0  # vehicles allowed through and not yet seen passing
    passes: int = 0  # vehicles that cleared the safety zone since the barrier left CLOSED
    occupant: str | None = None  # who is in the safety zone now: authorised/tailgating/unknown

    def classify(self, *, barrier_down: bool) -> str:
        """A vehicle entered the safety zone (or stood there as we opened): whose turn is it?"""
        if self.authorised > 0:
            self.authorised -= 1
            self.occupant = "authorised"
        elif not barrier_down and self.passes > 0:
            self.occupant = "tailgating"
        else:
            self.occupant = "unknown"
        return self.occupant


class Barrier:
    """One barrier: relay, arrival loop, safety inputs and the state machine between them.

    ``open()`` is called once the decision is durable; everything after that
    (when to close, alarms) is decided here from the inputs and timers.
    """

    def __init__(
        self,
        *,
        lane: str,
        relay_pin: PinSpec,
        relay_active_high: bool = True,
        relay_mode: RelayMode = "pulse",
        pulse_time: float = 0.5,
        arrival_pin: PinSpec | None = None,
        safety_pins: Sequence[PinSpec] = (),
        presence_active_high: bool = False,
        debounce_time: float = 0.1,
        open_time: float = 3.0,
        close_time: float | None = None,
        close_timeout: float = 60.0,
        pin_factory: Factory | None = None,
        on_event: EventCallback | None = None,
        on_arrival: ArrivalCallback | None = None,
    ) -> None:
        _check_timing(relay_mode, pulse_time, debounce_time, open_time, close_time, close_timeout)
        self.lane = lane
        self.relay_mode: RelayMode = relay_mode
        self.pulse_time = pulse_time
        self.debounce_time = debounce_time
        self.open_time = open_time
        self.close_time = open_time if close_time is None else close_time
        self.close_timeout = close_timeout
        self.on_event = on_event
        self.on_arrival = on_arrival

        self._lock = threading.RLock()
        self._state = GateState.CLOSED
        self._closed = False
        self._timers = Timers(self._lock, name=f"gate-{lane}", stopped=lambda: self._closed)
        self._cycle = VehicleCycle()
        self._close_reason: str | None = None  # closing is wanted, as soon as the safety zone is free

        self._events = GateListeners(self, self._lock)

        self._pins = BarrierPins(
            lane=lane, relay_pin=relay_pin, relay_active_high=relay_active_high, arrival_pin=arrival_pin,
            safety_pins=safety_pins, presence_active_high=presence_active_high, pin_factory=pin_factory,
            debounce_time=debounce_time, timers=self._timers, on_change=self._input_changed,
        )
        self._events.start()
        log.info(
            "lane %s: barrier on relay %s (%s, active-%s), arrival %s, safety %s",
            lane, relay_pin, relay_mode, "high" if relay_active_high else "low",
            arrival_pin, list(safety_pins) or "none",
        )

    @classmethod
    def from_config(
        cls,
        lane: LaneConfig,
        *,
        pin_factory: Factory | None,
        on_event: EventCallback | None = None,
        on_arrival: ArrivalCallback | None = None,
    ) -> "Barrier":
        """A barrier wired as ``[[lanes]]`` describes (times there are in ms / s)."""
        return cls(**barrier_options(lane), pin_factory=pin_factory, on_event=on_event, on_arrival=on_arrival)

    # -- public interface -------------------------------------------------------------

    @property
    def state(self) -> GateState:
        with self._lock:
            return self._state

    @property
    def vehicle_waiting(self) -> bool:
        """A vehicle stands on the arrival loop (debounced). False when there is no arrival loop."""
        with self._lock:
            return self._pins.accepted("arrival")

    @property
    def safety_active(self) -> bool:
        """Something is under the boom (any safety input, debounced)."""
        with self._lock:
            return self._pins.accepted("safety")

    @property
    def relay_active(self) -> bool:
        """The relay coil is energised right now."""
        with self._lock:
            return self._pins.relay_energised

    @property
    def released(self) -> bool:
        """The pins are freed (:meth:`release`): says nothing about the boom, see :attr:`state`."""
        return self._closed

    #: Old name of :attr:`released` (a released barrier is not a ``GateState.CLOSED`` one).
    closed = released

    def open(self, *, reason: str, by: str) -> None:
        """Raise the barrier for one more vehicle. The caller has already recorded the decision durably."""
        with self._lock:
            if self._closed:
                raise DeviceClosed(f"barrier of lane {self.lane} is closed")
            self._close_reason = None
            if self._state is GateState.CLOSED:
                self._cycle = VehicleCycle(authorised=1)
                if self._pins.accepted("safety"):
                    self._classify_entry()  # the vehicle already at the boom is the one we open for
                self._raise(f"{reason} (by {by})")
                log.info("lane %s: opening the barrier: %s (by %s)", self.lane, reason, by)
                return
            self._cycle.authorised += 1
            log.info(
                "lane %s: barrier already %s; one more vehicle allowed through (%d waiting): %s (by %s)",
                self.lane, self._state, self._cycle.authorised, reason, by,
            )
            if self._state is GateState.OPEN:
                self._timers.schedule("timeout", self.close_timeout, self._on_timeout)
            elif self._state is GateState.CLOSING:
                self._raise(f"reopened for the next vehicle: {reason} (by {by})")

    def wait_for_state(self, state: GateState | str, timeout: float | None = None) -> bool:
        """Block until the barrier is in ``state`` (and listeners have heard about it); False on timeout.

        Called from an ``on_event`` listener it waits on the live state instead, since
        the listener itself is what delivery waits for.
        """
        wanted = GateState(state)
        return self._events.wait_for(wanted, live=lambda: self._state, timeout=timeout)

    def release(self) -> None:
        """Release the relay and the pins; stop timers and the event thread. Idempotent.

        Not a command to lower the boom (that is ``GateState.CLOSED``): in hold mode releasing
        the relay lets the controller lower it, so the daemon first waits (bounded) for
        ``GateState.CLOSED``; we log when that did not happen.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._timers.cancel_all()
            if self._state is not GateState.CLOSED:
                log.warning("lane %s: barrier released while %s", self.lane, self._state)
            self._pins.release()
        self._events.stop()

    #: ``close()`` as for any resource (``with Barrier(...)``): the same as :meth:`release`.
    close = release

    def __enter__(self) -> "Barrier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return f"<gatekeeper.Barrier lane={self.lane!r} closed>"
        return f"<gatekeeper.Barrier lane={self.lane!r} state={self._state.value} mode={self.relay_mode}>"

    # -- inputs -----------------------------------------------------------------------

    def _input_changed(self, inp: PresenceInput, was_occupied: bool | None) -> None:
        """An input's debounced level changed (lock held); ``was_occupied`` None: a glitch, no change."""
        if was_occupied is None:
            if inp.role == "safety":
                self._retry_close()  # a glitch may have held a close back
            return
        self._emit("presence", f"{inp.name} {'active' if inp.accepted else 'inactive'}")
        if inp.role == "arrival":
            if inp.accepted:
                self._events.arrival()
            else:
                self._arrival_released()
        elif inp.accepted and not was_occupied:
            self._safety_entered()
        elif was_occupied and not self._pins.accepted("safety"):
            self._safety_cleared()

    def _classify_entry(self) -> None:
        """A vehicle entered the safety zone (or stood there as we opened): whose turn is it?"""
        if self._cycle.classify(barrier_down=self._state is GateState.CLOSED) == "tailgating":
            self._emit("tailgate", "a second vehicle entered under the open barrier after the first had passed")
            log.warning("lane %s: tailgating vehicle under the barrier", self.lane)

    def _safety_entered(self) -> None:
        if self._state is GateState.CLOSED:
            return
        self._classify_entry()
        if self._state is GateState.CLOSING:
            self._raise("reopened: safety input active while closing")

    def _safety_cleared(self) -> None:
        occupant, self._cycle.occupant = self._cycle.occupant, None
        if self._state is GateState.CLOSED:
            return
        self._cycle.passes += 1
        self._emit("passed", {"authorised": "vehicle passed", "tailgating": "tailgating vehicle passed"}.get(
            occupant or "", "vehicle passed (not expected)"))
        if self._cycle.authorised > 0:
            if self._state is GateState.OPEN:
                self._timers.schedule("timeout", self.close_timeout, self._on_timeout)  # the next one's turn
        else:
            self._want_close("vehicle passed")

    def _arrival_released(self) -> None:
        """The arrival loop emptied. Without the safety zone ever seeing it, the vehicle backed away."""
        if (
            self._pins.has_safety
            and self._state in (GateState.OPENING, GateState.OPEN)
            and self._cycle.authorised > 0
            and self._cycle.occupant is None
            and not self._pins.safety_engaged()
        ):
            self._cycle.authorised -= 1
            self._emit("backed_away", "vehicle left the arrival loop without passing the barrier")
            log.info("lane %s: vehicle backed away", self.lane)
            if self._cycle.authorised == 0:
                self._want_close("vehicle backed away")

    # -- state machine ----------------------------------------------------------------

    def _raise(self, why: str) -> None:
        """From closed or closing: drive the relay and start the boom's rise."""
        self._timers.cancel("close")
        self._timers.cancel("timeout")
        relay = self._pins.relay
        assert relay is not None
        # Energised here, synchronously: a caller (and the latency benchmark) may rely on the
        # coil being driven when open() returns. gpiozero's blink() would do it on a new thread.
        relay.on()
        if self.relay_mode == "pulse":
            self._timers.schedule("pulse", self.pulse_time, relay.off)
        self._set_state(GateState.OPENING, "opening", why)
        self._timers.schedule("open", self.open_time, self._on_risen)

    def _on_risen(self) -> None:
        self._set_state(GateState.OPEN, "opened", "barrier up")
        self._timers.schedule("timeout", self.close_timeout, self._on_timeout)
        self._retry_close()  # a vehicle may have passed or backed away while it rose

    def _on_timeout(self) -> None:
        if self._state is not GateState.OPEN:
            return
        if self._pins.safety_engaged():
            self._emit("close_timeout", f"open for {self.close_timeout:g} s with a safety input active: staying open")
            log.warning("lane %s: close timeout with a vehicle under the boom; staying open", self.lane)
            self._timers.schedule("timeout", self.close_timeout, self._on_timeout)
            return
        self._emit("close_timeout", f"no vehicle passed within {self.close_timeout:g} s: closing")
        log.warning("lane %s: no vehicle passed within %g s; closing", self.lane, self.close_timeout)
        self._cycle.authorised = 0
        self._want_close("close timeout")

    def _want_close(self, reason: str) -> None:
        self._close_reason = reason
        self._retry_close()

    def _retry_close(self) -> None:
        """Close if closing is wanted, the boom is up and nothing is in the safety zone."""
        if self._close_reason is None or self._state is not GateState.OPEN or self._pins.safety_engaged():
            return
        reason, self._close_reason = self._close_reason, None
        self._timers.cancel("timeout")
        relay = self._pins.relay
        assert relay is not None
        if self.relay_mode == "hold":
            relay.off()
        self._set_state(GateState.CLOSING, "closing", reason)
        log.info("lane %s: barrier closing (%s)", self.lane, reason)
        self._timers.schedule("close", self.close_time, self._on_lowered)

    def _on_lowered(self) -> None:
        self._cycle = VehicleCycle()
        self._close_reason = None
        self._set_state(GateState.CLOSED, "closed", "barrier down")

    def _set_state(self, state: GateState, kind: GateEventKind, detail: str) -> None:
        """Change state and tell listeners: the event is delivered before waiters on this state wake."""
        self._state = state
        self._emit(kind, detail)
        self._events.state(state)

    def _emit(self, kind: GateEventKind, detail: str) -> None:
        self._events.event(GateEvent(kind=kind, lane=self.lane, at=datetime.now(UTC), detail=detail))


class GateListeners:
    """Tells a barrier's listeners (``on_event``, ``on_arrival``) on one thread, in order, outside the lock,
    and knows the last state they were told of (what :meth:`Barrier.wait_for_state` waits for)."""

    def __init__(self, barrier: "Barrier", lock: threading.RLock) -> None:
        self._barrier = barrier
        self._changed = threading.Condition(lock)
        self._published = GateState.CLOSED
        self._dispatcher = Dispatcher(self._deliver, name=f"gate-{barrier.lane}-events")

    def start(self) -> None:
        self._dispatcher.start()

    def stop(self) -> None:
        self._dispatcher.stop()

    def event(self, event: GateEvent) -> None:
        self._dispatcher.put(("event", event))

    def arrival(self) -> None:
        self._dispatcher.put(("arrival", None))

    def state(self, state: GateState) -> None:
        """A state change (lock held): delivered after the events queued before it."""
        self._dispatcher.put(("state", state))
        self._changed.notify_all()

    def wait_for(self, wanted: GateState, *, live: Callable[[], GateState], timeout: float | None) -> bool:
        on_dispatcher = self._dispatcher.on_thread()
        with self._changed:
            return self._changed.wait_for(lambda: (live() if on_dispatcher else self._published) is wanted, timeout)

    def _deliver(self, item: tuple[str, Any]) -> None:
        what, payload = item
        if what == "state":
            with self._changed:
                self._published = payload
                self._changed.notify_all()
            return
        callback: Callable[..., None] | None = self._barrier.on_event if what == "event" else self._barrier.on_arrival
        if callback is None:
            return
        try:
            callback(payload) if what == "event" else callback()
        except Exception:
            log.exception("lane %s: barrier %s listener failed", self._barrier.lane, what)


def _check_timing(
    relay_mode: str,
    pulse_time: float,
    debounce_time: float,
    open_time: float,
    close_time: float | None,
    close_timeout: float,
) -> None:
    if relay_mode not in ("pulse", "hold"):
        raise ValueError(f"relay_mode must be 'pulse' or 'hold', not {relay_mode!r}")
    if relay_mode == "pulse" and pulse_time <= 0:
        raise ValueError("pulse_time must be positive in pulse mode")
    for what, value in (("debounce_time", debounce_time), ("open_time", open_time)):
        if value < 0:
            raise ValueError(f"{what} must not be negative")
    if close_time is not None and close_time < 0:
        raise ValueError("close_time must not be negative")
    if close_timeout <= 0:
        raise ValueError("close_timeout must be positive")


def barrier_options(lane: LaneConfig) -> dict[str, Any]:
    """The :class:`Barrier` keyword arguments for a ``[[lanes]]`` entry (its times are in ms / s)."""
    return dict(
        lane=lane.id,
        relay_pin=lane.relay_pin,
        relay_active_high=lane.relay_active_high,
        relay_mode=lane.relay_mode,
        pulse_time=lane.pulse_ms / 1000,
        arrival_pin=lane.arrival_pin,
        safety_pins=tuple(lane.safety_pins),
        presence_active_high=lane.presence_active_high,
        debounce_time=lane.debounce_ms / 1000,
        open_time=lane.open_time_s,
        close_time=lane.close_time_s,
        close_timeout=lane.close_timeout_s,
    )
