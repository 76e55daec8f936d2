"""The barrier's pins as small devices: the relay coil and the vehicle-presence inputs.

Only pin handling lives here (gpiozero devices, pull-ups, raw and debounced levels, release);
what the levels mean for the boom is the barrier's business.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal, Sequence

from gpiozero import DigitalInputDevice, DigitalOutputDevice

from gatekeeper.hardware.scheduling import Timers

if TYPE_CHECKING:
    from gpiozero import Factory

    from gatekeeper.config import PinSpec

log = logging.getLogger(__name__)

InputRole = Literal["arrival", "safety"]


class Relay:
    """The output driving the barrier controller; starts de-energised."""

    def __init__(self, pin: PinSpec, *, active_high: bool = True, pin_factory: Factory | None = None) -> None:
        self._device = DigitalOutputDevice(pin, active_high=active_high, initial_value=False, pin_factory=pin_factory)

    def on(self) -> None:
        self._device.on()

    def off(self) -> None:
        self._device.off()

    @property
    def energised(self) -> bool:
        return bool(not self._device.closed and self._device.value)

    def release(self) -> None:
        """De-energise and free the pin. Idempotent."""
        if not self._device.closed:
            self._device.off()
        self._device.close()


@dataclass(slots=True)
class PresenceInput:
    """One presence input (loop, photocell) with its raw (last edge) and accepted (debounced) level."""

    name: str
    role: InputRole
    device: DigitalInputDevice
    raw: bool
    accepted: bool

    @classmethod
    def open(
        cls,
        name: str,
        role: InputRole,
        pin: PinSpec,
        *,
        active_high: bool,
        pin_factory: Factory | None,
        on_edge: Callable[["PresenceInput", bool], None],
    ) -> "PresenceInput":
        """Open the pin (active-low contacts pull up, active-high pull down) and report every edge.

        No gpiozero ``bounce_time``: the barrier debounces in software, the same on every factory.
        """
        device = DigitalInputDevice(pin, pull_up=not active_high, bounce_time=None, pin_factory=pin_factory)
        level = bool(device.is_active)
        inp = cls(name=name, role=role, device=device, raw=level, accepted=level)
        device.when_activated = lambda: on_edge(inp, True)
        device.when_deactivated = lambda: on_edge(inp, False)
        return inp

    def release(self) -> None:
        self.device.when_activated = None
        self.device.when_deactivated = None
        self.device.close()


class BarrierPins:
    """A barrier's relay and presence inputs, opened together and released together."""

    def __init__(
        self,
        *,
        lane: str,
        relay_pin: PinSpec,
        relay_active_high: bool,
        arrival_pin: PinSpec | None,
        safety_pins: Sequence[PinSpec],
        presence_active_high: bool,
        pin_factory: Factory | None,
        debounce_time: float,
        timers: Timers,
        on_change: Callable[[PresenceInput, bool | None], None],
    ) -> None:
        self.lane = lane
        self.debounce_time = debounce_time
        self._timers = timers
        self._on_change = on_change
        self._released = False
        self.relay: Relay | None = None
        self.inputs: list[PresenceInput] = []
        try:
            self.relay = Relay(relay_pin, active_high=relay_active_high, pin_factory=pin_factory)
            wanted: list[tuple[str, InputRole, PinSpec]] = [("arrival", "arrival", arrival_pin)] if arrival_pin is not None else []
            wanted += [(f"safety{n}", "safety", spec) for n, spec in enumerate(safety_pins, start=1)]
            for name, role, spec in wanted:
                self.inputs.append(PresenceInput.open(
                    name, role, spec, active_high=presence_active_high, pin_factory=pin_factory, on_edge=self._on_edge
                ))
        except BaseException:
            self.release()
            raise

    def _on_edge(self, inp: PresenceInput, active: bool) -> None:
        """gpiozero pin callback: remember the raw level; accept it once stable (software debounce)."""
        with self._timers.lock:
            if self._released or self._timers.stopped():
                return
            inp.raw = active
            if self.debounce_time <= 0:
                self._settle(inp)
            else:
                self._timers.schedule(f"debounce-{inp.name}", self.debounce_time, lambda: self._settle(inp))

    def _settle(self, inp: PresenceInput) -> None:
        """Accept the raw level (lock held) and tell the owner: was the safety zone occupied before?"""
        if inp.raw == inp.accepted:
            self._on_change(inp, None)
            return
        was_occupied = self.accepted("safety")
        inp.accepted = inp.raw
        self._on_change(inp, was_occupied)

    def accepted(self, role: InputRole) -> bool:
        """Any input of ``role`` is active (debounced)."""
        return any(i.accepted for i in self.inputs if i.role == role)

    def safety_engaged(self) -> bool:
        """Debounced *or* raw: when deciding to close, an unconfirmed edge still counts as a vehicle."""
        return any(i.accepted or i.raw for i in self.inputs if i.role == "safety")

    @property
    def has_safety(self) -> bool:
        return any(i.role == "safety" for i in self.inputs)

    @property
    def relay_energised(self) -> bool:
        return self.relay is not None and self.relay.energised

    def release(self) -> None:
        """Free every pin; a failure is logged and the rest are still released."""
        self._released = True
        for inp in self.inputs:
            try:
                inp.release()
            except Exception:
                log.exception("lane %s: closing input %s failed", self.lane, inp.name)
        if self.relay is not None:
            try:
                self.relay.release()
            except Exception:
                log.exception("lane %s: releasing the relay failed", self.lane)
