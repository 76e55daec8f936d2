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
import queue
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

from gpiozero import DigitalInputDevice, DigitalOutputDevice
from gpiozero.exc import DeviceClosed

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
class _Input:
    """One presence input with its raw (last edge) and accepted (debounced) level."""

    name: str
    role: Literal["arrival", "safety"]
    device: DigitalInputDevice
    raw: bool
    accepted: bool


@dataclass(slots=True)
class _Timer:
    """A pending action; the entry's identity tells a fired timer whether it is still current."""

    thread: threading.Timer


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
        self._changed = threading.Condition(self._lock)
        self._state = GateState.CLOSED
        self._published = GateState.CLOSED  # the state as far as event listeners have been told
        self._closed = False
        self._timers: dict[str, _Timer] = {}
        # The vehicle bookkeeping of one open cycle.
        self._authorised = 0  # vehicles allowed through and not yet seen passing
        self._passes = 0  # vehicles that cleared the safety zone since the barrier left CLOSED
        self._occupant: str | None = None  # who is in the safety zone now: authorised/tailgating/unknown
        self._close_reason: str | None = None  # closing is wanted, as soon as the safety zone is free

        self._queue: queue.SimpleQueue[tuple[str, Any] | None] = queue.SimpleQueue()
        self._dispatcher = threading.Thread(target=self._dispatch, name=f"gate-{lane}-events", daemon=True)

        self._relay: DigitalOutputDevice | None = None
        self._inputs: list[_Input] = []
        try:
            self._relay = DigitalOutputDevice(
                relay_pin, active_high=relay_active_high, initial_value=False, pin_factory=pin_factory
            )
            pull_up = not presence_active_high  # active-low contacts pull up, active-high pull down
            if arrival_pin is not None:
                self._inputs.append(self._make_input("arrival", "arrival", arrival_pin, pull_up, pin_factory))
            for n, spec in enumerate(safety_pins, start=1):
                self._inputs.append(self._make_input(f"safety{n}", "safety", spec, pull_up, pin_factory))
        except BaseException:
            self._close_devices()
            raise
        self._dispatcher.start()
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
        return cls(
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
            pin_factory=pin_factory,
            on_event=on_event,
            on_arrival=on_arrival,
        )

    # -- public interface -------------------------------------------------------------

    @property
    def state(self) -> GateState:
        with self._lock:
            return self._state

    @property
    def vehicle_waiting(self) -> bool:
        """A vehicle stands on the arrival loop (debounced). False when there is no arrival loop."""
        with self._lock:
            return any(i.accepted for i in self._inputs if i.role == "arrival")

    @property
    def safety_active(self) -> bool:
        """Something is under the boom (any safety input, debounced)."""
        with self._lock:
            return any(i.accepted for i in self._inputs if i.role == "safety")

    @property
    def relay_active(self) -> bool:
        """The relay coil is energised right now."""
        with self._lock:
            return bool(self._relay is not None and not self._relay.closed and self._relay.value)

    @property
    def closed(self) -> bool:
        return self._closed

    def open(self, *, reason: str, by: str) -> None:
        """Raise the barrier for one more vehicle. The caller has already recorded the decision durably."""
        with self._lock:
            self._check_open()
            self._close_reason = None
            if self._state is GateState.CLOSED:
                self._authorised = 1
                self._passes = 0
                self._occupant = None
                if self._safety_accepted():
                    self._classify_entry()  # the vehicle already at the boom is the one we open for
                self._raise(f"{reason} (by {by})")
                log.info("lane %s: opening the barrier: %s (by %s)", self.lane, reason, by)
                return
            self._authorised += 1
            log.info(
                "lane %s: barrier already %s; one more vehicle allowed through (%d waiting): %s (by %s)",
                self.lane, self._state, self._authorised, reason, by,
            )
            if self._state is GateState.OPEN:
                self._schedule("timeout", self.close_timeout, self._on_timeout)
            elif self._state is GateState.CLOSING:
                self._raise(f"reopened for the next vehicle: {reason} (by {by})")

    def wait_for_state(self, state: GateState | str, timeout: float | None = None) -> bool:
        """Block until the barrier is in ``state`` (and listeners have heard about it); False on timeout.

        Called from an ``on_event`` listener it waits on the live state instead, since
        the listener itself is what delivery waits for.
        """
        wanted = GateState(state)
        on_dispatcher = threading.current_thread() is self._dispatcher
        with self._changed:
            return self._changed.wait_for(
                lambda: (self._state if on_dispatcher else self._published) is wanted, timeout
            )

    def close(self) -> None:
        """Release the relay and the pins; stop timers and the event thread. Idempotent.

        In hold mode releasing the relay lets the controller lower the boom, so the
        daemon first waits (bounded) for ``closed``; we log when that did not happen.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for timer in self._timers.values():
                timer.thread.cancel()
            self._timers.clear()
            if self._state is not GateState.CLOSED:
                log.warning("lane %s: barrier released while %s", self.lane, self._state)
            self._close_devices()
        self._queue.put(None)
        if threading.current_thread() is not self._dispatcher and self._dispatcher.is_alive():
            self._dispatcher.join(timeout=5)

    def __enter__(self) -> "Barrier":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return f"<gatekeeper.Barrier lane={self.lane!r} closed>"
        return f"<gatekeeper.Barrier lane={self.lane!r} state={self._state.value} mode={self.relay_mode}>"

    # -- devices ----------------------------------------------------------------------

    def _make_input(
        self, name: str, role: Literal["arrival", "safety"], spec: PinSpec, pull_up: bool, factory: Factory | None
    ) -> _Input:
        device = DigitalInputDevice(spec, pull_up=pull_up, bounce_time=None, pin_factory=factory)
        level = bool(device.is_active)
        inp = _Input(name=name, role=role, device=device, raw=level, accepted=level)
        device.when_activated = lambda: self._on_edge(inp, True)
        device.when_deactivated = lambda: self._on_edge(inp, False)
        return inp

    def _close_devices(self) -> None:
        for inp in self._inputs:
            try:
                inp.device.when_activated = None
                inp.device.when_deactivated = None
                inp.device.close()
            except Exception:
                log.exception("lane %s: closing input %s failed", self.lane, inp.name)
        if self._relay is not None:
            try:
                if not self._relay.closed:
                    self._relay.off()
                self._relay.close()
            except Exception:
                log.exception("lane %s: releasing the relay failed", self.lane)

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceClosed(f"barrier of lane {self.lane} is closed")

    # -- inputs -----------------------------------------------------------------------

    def _on_edge(self, inp: _Input, active: bool) -> None:
        """gpiozero pin callback: remember the raw level; accept it once stable."""
        with self._lock:
            if self._closed:
                return
            inp.raw = active
            if self.debounce_time <= 0:
                self._settle(inp)
            else:
                self._schedule(f"debounce-{inp.name}", self.debounce_time, lambda: self._settle(inp))

    def _settle(self, inp: _Input) -> None:
        if inp.raw == inp.accepted:
            if inp.role == "safety":
                self._retry_close()  # a glitch may have held a close back
            return
        was_occupied = self._safety_accepted()
        inp.accepted = inp.raw
        self._emit("presence", f"{inp.name} {'active' if inp.accepted else 'inactive'}")
        if inp.role == "arrival":
            if inp.accepted:
                self._queue.put(("arrival", None))
            else:
                self._arrival_released()
        elif inp.accepted and not was_occupied:
            self._safety_entered()
        elif was_occupied and not self._safety_accepted():
            self._safety_cleared()

    def _safety_accepted(self) -> bool:
        return any(i.accepted for i in self._inputs if i.role == "safety")

    def _safety_engaged(self) -> bool:
        """Debounced *or* raw: when deciding to close, an unconfirmed edge still counts as a vehicle."""
        return any(i.accepted or i.raw for i in self._inputs if i.role == "safety")

    def _classify_entry(self) -> None:
        """A vehicle entered the safety zone (or stood there as we opened): whose turn is it?"""
        if self._authorised > 0:
            self._authorised -= 1
            self._occupant = "authorised"
        elif self._state is not GateState.CLOSED and self._passes > 0:
            self._occupant = "tailgating"
            self._emit("tailgate", "a second vehicle entered under the open barrier after the first had passed")
            log.warning("lane %s: tailgating vehicle under the barrier", self.lane)
        else:
            self._occupant = "unknown"

    def _safety_entered(self) -> None:
        if self._state is GateState.CLOSED:
            return
        self._classify_entry()
        if self._state is GateState.CLOSING:
            self._raise("reopened: safety input active while closing")

    def _safety_cleared(self) -> None:
        occupant, self._occupant = self._occupant, None
        if self._state is GateState.CLOSED:
            return
        self._passes += 1
        self._emit("passed", {"authorised": "vehicle passed", "tailgating": "tailgating vehicle passed"}.get(
            occupant or "", "vehicle passed (not expected)"))
        if self._authorised > 0:
            if self._state is GateState.OPEN:
                self._schedule("timeout", self.close_timeout, self._on_timeout)  # the next one's turn
        else:
            self._want_close("vehicle passed")

    def _arrival_released(self) -> None:
        """The arrival loop emptied. Without the safety zone ever seeing it, the vehicle backed away."""
        has_safety = any(i.role == "safety" for i in self._inputs)
        if (
            has_safety
            and self._state in (GateState.OPENING, GateState.OPEN)
            and self._authorised > 0
            and self._occupant is None
            and not self._safety_engaged()
        ):
            self._authorised -= 1
            self._emit("backed_away", "vehicle left the arrival loop without passing the barrier")
            log.info("lane %s: vehicle backed away", self.lane)
            if self._authorised == 0:
                self._want_close("vehicle backed away")

    # -- state machine ----------------------------------------------------------------

    def _raise(self, why: str) -> None:
        """From closed or closing: drive the relay and start the boom's rise."""
        self._cancel("close")
        self._cancel("timeout")
        assert self._relay is not None
        # Energised here, synchronously: a caller (and the latency benchmark) may rely on the
        # coil being driven when open() returns. gpiozero's blink() would do it on a new thread.
        self._relay.on()
        if self.relay_mode == "pulse":
            self._schedule("pulse", self.pulse_time, self._relay.off)
        self._set_state(GateState.OPENING, "opening", why)
        self._schedule("open", self.open_time, self._on_risen)

    def _on_risen(self) -> None:
        self._set_state(GateState.OPEN, "opened", "barrier up")
        self._schedule("timeout", self.close_timeout, self._on_timeout)
        self._retry_close()  # a vehicle may have passed or backed away while it rose

    def _on_timeout(self) -> None:
        if self._state is not GateState.OPEN:
            return
        if self._safety_engaged():
            self._emit("close_timeout", f"open for {self.close_timeout:g} s with a safety input active: staying open")
            log.warning("lane %s: close timeout with a vehicle under the boom; staying open", self.lane)
            self._schedule("timeout", self.close_timeout, self._on_timeout)
            return
        self._emit("close_timeout", f"no vehicle passed within {self.close_timeout:g} s: closing")
        log.warning("lane %s: no vehicle passed within %g s; closing", self.lane, self.close_timeout)
        self._authorised = 0
        self._want_close("close timeout")

    def _want_close(self, reason: str) -> None:
        self._close_reason = reason
        self._retry_close()

    def _retry_close(self) -> None:
        """Close if closing is wanted, the boom is up and nothing is in the safety zone."""
        if self._close_reason is None or self._state is not GateState.OPEN or self._safety_engaged():
            return
        reason, self._close_reason = self._close_reason, None
        self._cancel("timeout")
        assert self._relay is not None
        if self.relay_mode == "hold":
            self._relay.off()
        self._set_state(GateState.CLOSING, "closing", reason)
        log.info("lane %s: barrier closing (%s)", self.lane, reason)
        self._schedule("close", self.close_time, self._on_lowered)

    def _on_lowered(self) -> None:
        self._authorised = 0
        self._passes = 0
        self._occupant = None
        self._close_reason = None
        self._set_state(GateState.CLOSED, "closed", "barrier down")

    def _set_state(self, state: GateState, kind: GateEventKind, detail: str) -> None:
        """Change state and tell listeners: the event is delivered before waiters on this state wake."""
        self._state = state
        self._emit(kind, detail)
        self._queue.put(("state", state))
        self._changed.notify_all()

    def _emit(self, kind: GateEventKind, detail: str) -> None:
        self._queue.put(("event", GateEvent(kind=kind, lane=self.lane, at=datetime.now(UTC), detail=detail)))

    # -- timers -----------------------------------------------------------------------

    def _schedule(self, key: str, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` under the lock after ``delay`` unless cancelled or rescheduled first."""
        self._cancel(key)
        entry: _Timer

        def fire() -> None:
            with self._lock:
                if self._closed or self._timers.get(key) is not entry:
                    return  # cancelled or replaced while we waited for the lock
                del self._timers[key]
                try:
                    action()
                except Exception:
                    log.exception("lane %s: barrier timer %s failed", self.lane, key)

        entry = _Timer(threading.Timer(delay, fire))
        entry.thread.name = f"gate-{self.lane}-{key}"
        entry.thread.daemon = True
        self._timers[key] = entry
        entry.thread.start()

    def _cancel(self, key: str) -> None:
        entry = self._timers.pop(key, None)
        if entry is not None:
            entry.thread.cancel()

    # -- event delivery ---------------------------------------------------------------

    def _dispatch(self) -> None:
        """The one thread that tells listeners, in the order things happened."""
        while True:
            item = self._queue.get()
            if item is None:
                return
            what, payload = item
            if what == "state":
                with self._changed:
                    self._published = payload
                    self._changed.notify_all()
                continue
            callback: Callable[..., None] | None = self.on_event if what == "event" else self.on_arrival
            if callback is None:
                continue
            try:
                callback(payload) if what == "event" else callback()
            except Exception:
                log.exception("lane %s: barrier %s listener failed", self.lane, what)
