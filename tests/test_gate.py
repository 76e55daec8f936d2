"""The barrier state machine on gpiozero's MockFactory pins.

Relay states and timings are checked with MockPin's own ``states`` record and
``assert_states_and_times`` (tolerance 50 ms); inputs are driven with
``drive_high()``/``drive_low()``. Waiting is always on an event or a state, with
a timeout, never a bare sleep.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from typing import Any, Callable, Iterator

import pytest
from gpiozero.exc import DeviceClosed
from gpiozero.pins.mock import MockFactory, MockPin

from gatekeeper.config import LaneConfig
from gatekeeper.hardware.barrier import Barrier, GateEvent, GateState
from gatekeeper.hardware.pins import PinFactoryError, make_pin_factory

RELAY, ARRIVAL, SAFETY_LOOP, PHOTOCELL = 17, 5, 27, 22
WAIT = 3.0  # generous upper bound for anything that should take tens of ms


class WatchedPin(MockPin):
    """A mock pin that calls ``watch(pin, new_state)`` just before its output changes (the relay coil)."""

    watch: Callable[["WatchedPin", bool], None] | None = None

    def _change_state(self, value: bool) -> bool:  # type: ignore[override]
        if WatchedPin.watch is not None and self._function == "output" and self._state != value:
            WatchedPin.watch(self, value)
        return super()._change_state(value)


class Lane:
    """A barrier on mock pins with its events on a queue and helpers to play a vehicle."""

    def __init__(self, *, presence_active_high: bool = False, **kwargs: Any) -> None:
        self.factory = MockFactory(pin_class=WatchedPin)
        self.events: queue.Queue[GateEvent] = queue.Queue()
        self.seen: list[GateEvent] = []
        self.arrivals: queue.Queue[str] = queue.Queue()
        settings: dict[str, Any] = dict(
            lane="L1",
            relay_pin=RELAY,
            relay_mode="pulse",
            pulse_time=0.1,
            arrival_pin=ARRIVAL,
            safety_pins=(SAFETY_LOOP, PHOTOCELL),
            presence_active_high=presence_active_high,
            debounce_time=0,
            open_time=0.05,
            close_time=0.05,
            close_timeout=5.0,
        )
        settings.update(kwargs)
        self.barrier = Barrier(
            **settings,
            pin_factory=self.factory,
            on_event=self.events.put,
            on_arrival=lambda: self.arrivals.put(threading.current_thread().name),
        )
        self.active_high = presence_active_high
        self.relay: MockPin = self.factory.pin(RELAY)
        self.relay.clear_states()

    def pin(self, number: int) -> MockPin:
        return self.factory.pin(number)

    def activate(self, number: int) -> None:
        pin = self.pin(number)
        pin.drive_high() if self.active_high else pin.drive_low()

    def release(self, number: int) -> None:
        pin = self.pin(number)
        pin.drive_low() if self.active_high else pin.drive_high()

    def expect(self, kind: str, timeout: float = WAIT) -> GateEvent:
        """The next event of ``kind``; everything before it is kept in ``seen``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                event = self.events.get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise AssertionError(f"no {kind!r} event within {timeout} s; saw {self.kinds()}") from None
            self.seen.append(event)
            if event.kind == kind:
                return event

    def drain(self) -> list[str]:
        """Events delivered so far (call after a wait_for_state: delivery happened before it returned)."""
        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                return self.kinds()

    def kinds(self, *, presence: bool = False) -> list[str]:
        return [e.kind for e in self.seen if presence or e.kind != "presence"]

    def relay_states(self) -> list[bool]:
        return [s.state for s in self.relay.states]

    def open_and_wait(self, *, reason: str = "entry granted", by: str = "rules") -> None:
        self.barrier.open(reason=reason, by=by)
        assert self.barrier.wait_for_state(GateState.OPEN, WAIT)


@pytest.fixture
def make_lane() -> Iterator[Callable[..., Lane]]:
    lanes: list[Lane] = []

    def make(**kwargs: Any) -> Lane:
        lane = Lane(**kwargs)
        lanes.append(lane)
        return lane

    yield make
    WatchedPin.watch = None
    for lane in lanes:
        lane.barrier.close()


# --------------------------------------------------------------------------- pin factories


def test_mock_factory_and_clear_errors_for_missing_hardware() -> None:
    assert isinstance(make_pin_factory("mock"), MockFactory)
    with pytest.raises(ValueError, match="unknown pin factory 'gpiod'"):
        make_pin_factory("gpiod")
    # This test machine is no Raspberry Pi: each hardware factory fails with a message saying what to do.
    for name in ("lgpio", "rpigpio", "native"):
        with pytest.raises(PinFactoryError, match=f"pin factory '{name}'") as info:
            make_pin_factory(name)
        assert "install" in str(info.value) or "Raspberry Pi" in str(info.value)


# --------------------------------------------------------------------------- relay wiring


def test_pulse_mode_energises_for_pulse_time_then_tracks_the_boom(make_lane: Callable[..., Lane]) -> None:
    lane = make_lane(pulse_time=0.2, open_time=0.1)
    pulse_done = threading.Event()
    WatchedPin.watch = lambda pin, value: pulse_done.set() if pin is lane.relay and not value else None
    started = time.monotonic()
    lane.barrier.open(reason="entry granted", by="rules")
    assert lane.barrier.state is GateState.OPENING
    assert lane.relay.state is True  # energised synchronously inside open()
    opened = lane.expect("opened")
    assert time.monotonic() - started >= 0.1
    assert lane.kinds() == ["opening", "opened"]
    assert lane.seen[0].detail == "entry granted (by rules)" and opened.lane == "L1"
    assert pulse_done.wait(WAIT)  # the pulse ends on its own; the boom stays up
    lane.relay.assert_states_and_times([(0.0, False), (0.0, True), (0.2, False)])
    assert lane.relay_states() == [False, True, False]
    assert lane.barrier.state is GateState.OPEN


def test_active_low_relay_idles_high_and_pulses_low(make_lane: Callable[..., Lane]) -> None:
    lane = make_lane(relay_active_high=False, pulse_time=0.15)
    assert lane.relay.state is True  # not energised: an active-low relay board idles high
    assert not lane.barrier.relay_active
    lane.open_and_wait()
    pulse_done = threading.Event()
    WatchedPin.watch = lambda pin, value: pulse_done.set() if pin is lane.relay and value else None
    assert pulse_done.wait(WAIT)
    lane.relay.assert_states_and_times([(0.0, True), (0.0, False), (0.15, True)])
    assert lane.relay_states() == [True, False, True]


def test_hold_mode_keeps_the_relay_energised_until_the_vehicle_has_passed(make_lane: Callable[..., Lane]) -> None:
    lane = make_lane(relay_mode="hold", relay_active_high=False)
    lane.open_and_wait()
    assert lane.relay_states() == [True, False]  # active-low: energised = low, and it stays there
    assert lane.barrier.relay_active
    lane.activate(SAFETY_LOOP)
    lane.expect("presence")
    assert lane.barrier.safety_active and lane.relay.state is False
    lane.release(SAFETY_LOOP)
    assert lane.barrier.wait_for_state(GateState.CLOSED, WAIT)
    assert lane.drain() == ["opening", "opened", "passed", "closing", "closed"]
    assert lane.relay_states() == [True, False, True]
    assert not lane.barrier.relay_active


def test_closes_after_the_vehicle_passed_in_pulse_mode(make_lane: Callable[..., Lane]) -> None:
    lane = make_lane(close_time=0.2)
    lane.activate(ARRIVAL)
    lane.open_and_wait()
    lane.activate(SAFETY_LOOP)  # the car rolls onto the loop under the boom
    lane.release(ARRIVAL)  # ...leaving the arrival loop: not a back-away, it is under the boom
    lane.activate(PHOTOCELL)
    lane.release(SAFETY_LOOP)
    assert lane.barrier.state is GateState.OPEN  # the photocell still sees it
    lane.release(PHOTOCELL)
    closing = lane.expect("closing")
    assert lane.barrier.state is GateState.CLOSING and closing.detail == "vehicle passed"
    started = time.monotonic()
    assert lane.barrier.wait_for_state(GateState.CLOSED, WAIT)
    assert time.monotonic() - started >= 0.15
    assert lane.drain() == ["opening", "opened", "passed", "closing", "closed"]
    assert lane.relay_states() == [False, True, False]  # one pulse; the controller closes by itself


# --------------------------------------------------------------------------- safety


def test_never_closes_while_a_safety_input_is_active_even_after_the_timeout(make_lane: Callable[..., Lane]) -> None:
    lane = make_lane(relay_mode="hold", close_timeout=0.15)
    lane.open_and_wait()
    lane.activate(PHOTOCELL)
    alarm = lane.expect("close_timeout")
    assert "staying open" in alarm.detail
    lane.expect("close_timeout")  # and again a period later: still there, still open
    assert lane.barrier.state is GateState.OPEN
    assert lane.relay.state is True and lane.relay_states() == [False, True]
    lane.release(PHOTOCELL)
    assert lane.barrier.wait_for_state(GateState.CLOSED, WAIT)
    assert lane.drain()[-3:] == ["passed", "closing", "closed"]
    assert lane.relay_states() == [False, True, False]


@pytest.mark.parametrize("mode", ["hold", "pulse"])
def test_safety_input_during_closing_sends_the_barrier_back_up(make_lane: Callable[..., Lane], mode: str) -> None:
    lane = make_lane(relay_mode=mode, close_timeout=0.1, close_time=0.5)
    lane.open_and_wait()
    lane.expect("close_timeout")  # nobody came: it starts to close...
    lane.expect("closing")
    lane.activate(SAFETY_LOOP)  # ...and a car noses in under the falling boom
    reopening = lane.expect("opening")
    assert "safety input active while closing" in reopening.detail
    assert lane.barrier.wait_for_state(GateState.OPEN, WAIT)
    assert lane.relay_states()[:4] == [False, True, False, True]  # released / pulse ended, then driven again
    assert "closed" not in lane.drain()
    assert "tailgate" not in lane.kinds()  # nobody had passed yet: not a tailgater
    lane.release(SAFETY_LOOP)
    assert lane.barrier.wait_for_state(GateState.CLOSED, WAIT)


def test_no_relay_release_with_any_safety_input_active_in_random_traffic(make_lane: Callable[..., Lane]) -> None:
    """Hold mode, random vehicles and glitches: the relay is never released while a safety pin is active."""
    lane = make_lane(relay_mode="hold", close_timeout=0.08, open_time=0.01, close_time=0.03, debounce_time=0.01)
    safety_pins = [lane.pin(SAFETY_LOOP), lane.pin(PHOTOCELL)]
    violations: list[str] = []
    releases: list[float] = []

    def watch(pin: WatchedPin, value: bool) -> None:
        if pin is lane.relay and not value:
            releases.append(time.monotonic())
            active = [p for p in safety_pins if p.state is lane.active_high]
            if active:
                violations.append(f"relay released with {active} active")

    WatchedPin.watch = watch
    rng = random.Random(4)
    for _ in range(120):
        action = rng.choice(["open", "safety", "photocell", "arrival", "glitch", "pause"])
        if action == "open":
            lane.barrier.open(reason="random", by="test")
        elif action in ("safety", "photocell", "arrival"):
            number = {"safety": SAFETY_LOOP, "photocell": PHOTOCELL, "arrival": ARRIVAL}[action]
            lane.activate(number) if lane.pin(number).state is not lane.active_high else lane.release(number)
        elif action == "glitch":
            number = rng.choice([SAFETY_LOOP, PHOTOCELL])
            if lane.pin(number).state is not lane.active_high:
                lane.activate(number)
                lane.release(number)
        else:
            threading.Event().wait(rng.uniform(0.0, 0.06))  # let timers run: pacing, not synchronisation
    for number in (SAFETY_LOOP, PHOTOCELL, ARRIVAL):
        lane.release(number)
    assert lane.barrier.wait_for_state(GateState.CLOSED, WAIT)
    WatchedPin.watch = None
    assert violations == []
    assert releases, "the random traffic never closed the barrier: the test proved nothing"


# --------------------------------------------------------------------------- alarms and events


def test_close_timeout_alarm_when_nobody_passes(make_lane: Callable[..., Lane]) -> None:
    lane = make_lane(close_timeout=0.2)
    lane.open_and_wait()
    opened_at = time.monotonic()
    alarm = lane.expect("close_timeout")
    assert time.monotonic() - opened_at >= 0.18
    assert "no vehicle passed within 0.2 s" in alarm.detail
    assert lane.barrier.wait_for_state(GateState.CLOSED, WAIT)
    assert lane.drain() == ["opening", "opened", "close_timeout", "closing", "closed"]


def test_vehicle_backing_away_is_an_event_and_the_barrier_closes(make_lane: Callable[..., Lane]) -> None:
    lane = make_lane(relay_mode="hold")
    lane.activate(ARRIVAL)
    lane.open_and_wait()
    lane.release(ARRIVAL)  # the driver reverses out without ever reaching the boom
    event = lane.expect("backed_away")
    assert "without passing" in event.detail
    assert lane.barrier.wait_for_state(GateState.CLOSED, WAIT)
    assert lane.drain() == ["opening", "opened", "backed_away", "closing", "closed"]
    assert lane.relay_states() == [False, True, False]


def test_tailgater_after_the_first_vehicle_cleared_raises_an_alarm(make_lane: Callable[..., Lane]) -> None:
    lane = make_lane(close_time=0.5)
    lane.open_and_wait()
    lane.activate(SAFETY_LOOP)
    lane.release(SAFETY_LOOP)
    lane.expect("closing")
    lane.activate(SAFETY_LOOP)  # a second car follows under the closing boom
    alarm = lane.expect("tailgate")
    assert "second vehicle" in alarm.detail
    assert lane.barrier.wait_for_state(GateState.OPEN, WAIT)  # and the boom goes back up for it
    lane.release(SAFETY_LOOP)
    assert lane.barrier.wait_for_state(GateState.CLOSED, WAIT)
    assert lane.drain() == [
        "opening", "opened", "passed", "closing", "tailgate", "opening", "opened", "passed", "closing", "closed",
    ]
    assert [e.detail for e in lane.seen if e.kind == "passed"] == ["vehicle passed", "tailgating vehicle passed"]


def test_a_second_authorised_vehicle_is_no_tailgater(make_lane: Callable[..., Lane]) -> None:
    lane = make_lane()
    lane.open_and_wait(reason="car one")
    lane.activate(SAFETY_LOOP)
    lane.barrier.open(reason="car two", by="rules")  # decided while car one is still under the boom
    lane.release(SAFETY_LOOP)
    lane.expect("passed")
    assert lane.barrier.state is GateState.OPEN  # car two's turn: stays up
    lane.activate(SAFETY_LOOP)
    lane.release(SAFETY_LOOP)
    assert lane.barrier.wait_for_state(GateState.CLOSED, WAIT)
    assert lane.drain() == ["opening", "opened", "passed", "passed", "closing", "closed"]
    assert lane.relay_states() == [False, True, False]  # the boom was up: no second pulse


# --------------------------------------------------------------------------- inputs


def test_debounce_ignores_a_short_glitch_and_accepts_a_steady_level(make_lane: Callable[..., Lane]) -> None:
    lane = make_lane(debounce_time=0.08)
    lane.activate(ARRIVAL)  # a glitch far shorter than 80 ms
    lane.release(ARRIVAL)
    started = time.monotonic()
    lane.activate(SAFETY_LOOP)  # a steady change after it
    first = lane.expect("presence")
    assert time.monotonic() - started >= 0.08  # accepted only once stable for the debounce time
    assert first.detail == "safety1 active"  # the glitch, earlier, never became an event
    assert lane.barrier.safety_active and not lane.barrier.vehicle_waiting
    assert lane.arrivals.empty()
    lane.activate(ARRIVAL)
    lane.expect("presence")
    assert lane.arrivals.get(timeout=WAIT).startswith("gate-L1")  # on_arrival runs on the event thread
    assert lane.barrier.vehicle_waiting


def test_active_high_presence_from_config(make_lane: Callable[..., Lane]) -> None:
    config = LaneConfig(
        id="exit-2", direction="exit", camera="0", relay_pin=RELAY, relay_mode="hold", arrival_pin=ARRIVAL,
        safety_pins=[SAFETY_LOOP], presence_active_high=True, debounce_ms=0, open_time_s=0.05, close_timeout_s=5,
    )
    factory = MockFactory()
    events: queue.Queue[GateEvent] = queue.Queue()
    with Barrier.from_config(config, pin_factory=factory, on_event=events.put) as barrier:
        assert barrier.lane == "exit-2" and barrier.close_time == 0.05  # close_time_s defaults to open_time_s
        assert factory.pin(SAFETY_LOOP).pull == "down" and not barrier.safety_active
        factory.pin(ARRIVAL).drive_high()
        assert events.get(timeout=WAIT).detail == "arrival active"
        assert barrier.vehicle_waiting
        barrier.open(reason="paid", by="rules")
        assert barrier.wait_for_state("open", WAIT)
        factory.pin(SAFETY_LOOP).drive_high()
        factory.pin(SAFETY_LOOP).drive_low()
        assert barrier.wait_for_state("closed", WAIT)
    assert barrier.closed


# --------------------------------------------------------------------------- plumbing


def test_wait_for_state_returns_only_after_listeners_heard(make_lane: Callable[..., Lane]) -> None:
    lane = make_lane(close_time=0.0)
    delivered: list[str] = []

    def slow_listener(event: GateEvent) -> None:
        if event.kind in ("passed", "closed"):
            threading.Event().wait(0.2)  # a slow SQLite write, say
        delivered.append(event.kind)

    lane.barrier.on_event = slow_listener
    lane.open_and_wait()
    lane.activate(SAFETY_LOOP)
    lane.release(SAFETY_LOOP)
    assert lane.barrier.wait_for_state("closed", WAIT)
    assert delivered[-3:] == ["passed", "closing", "closed"]
    assert lane.barrier.wait_for_state("open", 0.05) is False
    with pytest.raises(ValueError):
        lane.barrier.wait_for_state("ajar", 0.01)


def test_a_failing_listener_does_not_stop_the_barrier(make_lane: Callable[..., Lane]) -> None:
    lane = make_lane()

    def broken(event: GateEvent) -> None:
        raise RuntimeError("listener bug")

    lane.barrier.on_event = broken
    lane.open_and_wait()
    lane.activate(SAFETY_LOOP)
    lane.release(SAFETY_LOOP)
    assert lane.barrier.wait_for_state("closed", WAIT)


def test_concurrent_opens_pulse_once(make_lane: Callable[..., Lane]) -> None:
    lane = make_lane()
    start = threading.Barrier(8)

    def open_it(n: int) -> None:
        start.wait()
        lane.barrier.open(reason=f"request {n}", by="test")

    threads = [threading.Thread(target=open_it, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert lane.barrier.wait_for_state("open", WAIT)
    assert lane.drain().count("opening") == 1
    assert lane.relay_states()[:2] == [False, True]
    assert lane.relay_states().count(True) == 1


def test_close_releases_the_relay_and_refuses_further_use(make_lane: Callable[..., Lane]) -> None:
    lane = make_lane(relay_mode="hold")
    lane.open_and_wait()
    assert lane.relay.state is True
    lane.barrier.close()
    lane.barrier.close()  # idempotent
    assert lane.relay.state is False
    assert lane.barrier.closed and "closed" in repr(lane.barrier)
    with pytest.raises(DeviceClosed):
        lane.barrier.open(reason="late", by="test")
    # The pins are free again: a new barrier can claim them.
    Barrier(lane="L1b", relay_pin=RELAY, safety_pins=[SAFETY_LOOP], pin_factory=lane.factory).close()


def test_release_frees_the_pins_and_is_not_the_boom_closing(make_lane: Callable[..., Lane]) -> None:
    """``release()``/``released`` (old names ``close()``/``closed``) are about the pins, not GateState.CLOSED."""
    lane = make_lane(relay_mode="hold")
    lane.open_and_wait()
    assert not lane.barrier.released
    lane.barrier.release()
    assert lane.barrier.released and lane.barrier.closed
    assert lane.barrier.state is GateState.OPEN  # the last known boom position is not rewritten
    assert lane.relay.state is False
