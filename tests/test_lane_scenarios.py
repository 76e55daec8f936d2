"""Lane scenarios on a fake clock: entry, exit, full lot, lists, hold-off, presence, errors.

Real parts: the SQLite store in tmp_path, the rules, the barrier state machine on
gpiozero MockFactory pins, the lane's own evidence/decision/actuation code. At
the reader seam a plate source hands the lane its reads directly (the reader is
covered by test_anpr.py and the end-to-end test_lane.py). One FakeClock drives
the store and the lane, so hours pass (fees, grace) and read windows close
without a single sleep; ``LaneRunner.step`` is called in the test's thread.
"""

from __future__ import annotations

import json
import queue
import sqlite3
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from gatekeeper import messages
from gatekeeper.config import LaneConfig, MqttConfig, RulesConfig, Settings, SiteConfig, StorageConfig, TariffConfig
from gatekeeper.hardware.barrier import Barrier
from gatekeeper.lane import FakeClock, LaneOutcome, LaneRunner
from gatekeeper.rules import normalise_plate
from gatekeeper.store import Store
from gatekeeper.vision.reader import PlateRead

T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
ENTRY, EXIT = "entry-1", "exit-1"
PINS = {ENTRY: (17, 27, 5), EXIT: (22, 23, 6)}  # relay, safety, arrival


# --------------------------------------------------------------------------- fakes at the seams


def Read(text: str, confidence: float = 0.95) -> PlateRead:  # noqa: N802 - reads like a record
    """What the reader seam returns: a plate as read, with its confidence."""
    return PlateRead(text=text, normalised=normalise_plate(text), confidence=confidence, box=(0, 0, 8, 8))


class PlateSource:
    """The reader seam: hands out the reads the scenario queued, one per frame (None = no plate)."""

    def __init__(self) -> None:
        self.queue: deque[PlateRead | None | Exception] = deque()
        self.calls = 0

    def read(self, image: np.ndarray, *, region: str | None = None, roi: Any = None) -> PlateRead | None:
        self.calls += 1
        item = self.queue.popleft() if self.queue else None
        if isinstance(item, Exception):
            raise item
        return item


@dataclass(frozen=True, eq=False)
class Frame:
    image: np.ndarray
    lane: str
    at: datetime
    seq: int
    source: str = "fake"
    path: Path | None = None


@dataclass
class Display:
    shown: list[tuple[str, str, str]] = field(default_factory=list)

    def show(self, message: str, *, plate: str = "", kind: str = "") -> None:
        self.shown.append((message, plate, kind))

    @property
    def last(self) -> str | None:
        return self.shown[-1][0] if self.shown else None

    @property
    def messages(self) -> list[str]:
        return [m for m, _, _ in self.shown]


class CoilPin(MockPin):
    """A mock pin that calls ``on_output(value)`` as an output changes (the relay coil)."""

    on_output: dict[str, Any] = {}

    def _change_state(self, value: bool) -> bool:  # type: ignore[override]
        hook = CoilPin.on_output.get(str(self.info.name))
        if hook is not None and self._function == "output" and self._state != value:
            hook(value)
        return super()._change_state(value)


# --------------------------------------------------------------------------- the rig


class Lot:
    """An entry and an exit lane over one real store, driven frame by frame on one fake clock."""

    def __init__(self, tmp_path: Path, *, capacity: int = 10, anti_passback: str = "deny",
                 arrival: bool = False, min_free_mb: int = 0, store: Store | None = None, **lane_extra: Any) -> None:
        self.clock = FakeClock(T0)
        self.settings = Settings(
            site=SiteConfig(capacity=capacity),
            lanes=[self._lane(ENTRY, "entry", arrival, lane_extra), self._lane(EXIT, "exit", arrival, lane_extra)],
            storage=StorageConfig(data_dir=tmp_path / "data", min_free_mb=min_free_mb),
            mqtt=MqttConfig(enabled=False),
            rules=RulesConfig(anti_passback=anti_passback),
            tariff=TariffConfig(free_minutes=15, interval_minutes=60, rate=250, daily_max=2000, grace_minutes=15),
        )
        self.store = store or Store.from_settings(self.settings, clock=self.clock)
        CoilPin.on_output = {}
        self.factory = MockFactory(pin_class=CoilPin)
        self.source = PlateSource()
        self.displays = {ENTRY: Display(), EXIT: Display()}
        self.outcomes: dict[str, list[tuple[str, LaneOutcome | None]]] = {ENTRY: [], EXIT: []}
        self.gate_events: dict[str, queue.Queue[Any]] = {ENTRY: queue.Queue(), EXIT: queue.Queue()}
        self.wakes = 0
        self.runners: dict[str, LaneRunner] = {}
        self._seq = 0
        for lane in self.settings.lanes:
            barrier = Barrier.from_config(lane, pin_factory=self.factory)
            runner = LaneRunner.from_settings(
                self.settings, lane, store=self.store, reader=self.source, barrier=barrier, grabber=None,
                display=self.displays[lane.id], clock=self.clock, on_change=self._wake,
            )
            runner.add_vehicle_listener(lambda kind, outcome, lane_id=lane.id: self.outcomes[lane_id].append((kind, outcome)))
            runner.add_gate_listener(self.gate_events[lane.id].put)
            self.runners[lane.id] = runner

    @staticmethod
    def _lane(lane_id: str, direction: str, arrival: bool, extra: dict[str, Any]) -> LaneConfig:
        relay, safety, arrival_pin = PINS[lane_id]
        values: dict[str, Any] = dict(
            id=lane_id, direction=direction, camera="dir:/nonexistent", relay_pin=relay, relay_mode="pulse",
            pulse_ms=20, safety_pins=[safety], open_time_s=0.01, close_timeout_s=30, debounce_ms=0,
            arrival_pin=arrival_pin if arrival else None,
        )
        values.update(extra)
        return LaneConfig(**values)

    def _wake(self) -> None:
        self.wakes += 1

    # -- driving ----------------------------------------------------------------------

    def frame(self, lane_id: str, read: PlateRead | None | Exception) -> list[tuple[str, LaneOutcome | None]]:
        """One camera frame whose read is ``read``; returns what the lane reported for it."""
        self.source.queue.clear()  # a frame the lane does not read leaves no read behind
        self.source.queue.append(read)
        self._seq += 1
        before = len(self.outcomes[lane_id])
        self.runners[lane_id].step(Frame(np.zeros((8, 8, 3), np.uint8), lane_id, self.clock.now(), self._seq))
        return self.outcomes[lane_id][before:]

    def vehicle(self, lane_id: str, plate: str, confidence: float = 0.95) -> tuple[str, LaneOutcome | None]:
        """A vehicle read surely in one frame: the lane decides on it at once."""
        reported = self.frame(lane_id, Read(plate, confidence))
        assert len(reported) == 1, reported
        return reported[0]

    def decided(self, lane_id: str, plate: str) -> LaneOutcome:
        kind, outcome = self.vehicle(lane_id, plate)
        assert kind == "decided" and outcome is not None, (kind, outcome)
        return outcome

    def tick(self, lane_id: str, seconds: float) -> list[tuple[str, LaneOutcome | None]]:
        """Time passes with no new frame (the worker's frame wait timed out)."""
        self.clock.advance(seconds)
        before = len(self.outcomes[lane_id])
        self.runners[lane_id].step(None)
        return self.outcomes[lane_id][before:]

    def enter(self, plate: str) -> int:
        outcome = self.decided(ENTRY, plate)
        assert outcome.open and outcome.session_id is not None
        self.clock.advance(60)  # past the same-vehicle hold-off
        return outcome.session_id

    # -- looking ----------------------------------------------------------------------

    def relay_energised(self, lane_id: str) -> bool:
        return True in [s.state for s in self.factory.pin(PINS[lane_id][0]).states]

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.store.events() if kind is None or e["kind"] == kind]

    def outbox(self, topic_prefix: str) -> list[dict[str, Any]]:
        rows = [r for r in self.store.outbox_pending(limit=1000) if r.topic.startswith(topic_prefix)]
        for row in rows:  # every payload the lane caused is a valid message of the contract
            messages.validate_outbound(row.topic, row.payload)
        return [json.loads(r.payload) for r in rows]

    def close(self) -> None:
        for runner in self.runners.values():
            runner.barrier.close()
        self.store.close()


@pytest.fixture
def lot(tmp_path: Path) -> Iterator[Lot]:
    rig = Lot(tmp_path)
    try:
        yield rig
    finally:
        rig.close()


def make_lot(tmp_path: Path, request: pytest.FixtureRequest, **kwargs: Any) -> Lot:
    rig = Lot(tmp_path, **kwargs)
    request.addfinalizer(rig.close)
    return rig


# --------------------------------------------------------------------------- entry


def test_entry_with_space_opens_and_starts_a_session(lot: Lot) -> None:
    outcome = lot.decided(ENTRY, "AB-123 CD")
    assert (outcome.open, outcome.reason, outcome.plate, outcome.plate_read) == (True, "entry", "AB123CD", "AB-123 CD")
    session = lot.store.session(outcome.session_id)
    assert (session["status"], session["entry_lane"], session["entry_at"]) == ("open", ENTRY, "2026-03-10T09:00:00.000+00:00")
    assert lot.relay_energised(ENTRY) and not lot.relay_energised(EXIT)
    assert lot.displays[ENTRY].shown == [("Welcome", "AB123CD", "entry")]
    assert lot.outbox("occupancy")[-1]["occupied"] == 1
    assert lot.wakes >= 1


def test_full_lot_says_parking_full_and_stays_shut(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    lot = make_lot(tmp_path, request, capacity=1)
    lot.enter("AB123CD")
    outcome = lot.decided(ENTRY, "KL456MN")
    assert (outcome.open, outcome.reason, outcome.message, outcome.session_id) == (False, "full", "Parking full", None)
    assert lot.displays[ENTRY].last == "Parking full"
    assert [s["plate"] for s in lot.store.sessions()] == ["AB123CD"]


def test_reservation_enters_a_full_lot(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    lot = make_lot(tmp_path, request, capacity=1)
    lot.enter("AB123CD")
    lot.store.upsert_reservation("r-1", "KL456MN", T0, T0 + timedelta(hours=4))
    outcome = lot.decided(ENTRY, "KL456MN")
    assert (outcome.open, outcome.reason) == (True, "entry_reservation")
    assert lot.store.session(outcome.session_id)["reservation_id"] == "r-1"
    assert lot.displays[ENTRY].last == "Welcome - reservation"


def test_expired_reservation_does_not_enter_a_full_lot(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    lot = make_lot(tmp_path, request, capacity=1)
    lot.store.upsert_reservation("r-1", "KL456MN", T0, T0 + timedelta(minutes=30))
    lot.enter("AB123CD")
    lot.clock.advance(timedelta(hours=1))
    assert lot.decided(ENTRY, "KL456MN").reason == "full"


def test_allow_list_enters_a_full_lot(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    lot = make_lot(tmp_path, request, capacity=1)
    lot.enter("AB123CD")
    lot.store.set_list_entries("allow", [{"plate": "PM777AA"}])
    outcome = lot.decided(ENTRY, "PM777AA")
    assert (outcome.open, outcome.reason) == (True, "entry_allow_list")


def test_a_scheduled_allow_list_entry_enters_a_full_lot_only_in_its_hours(tmp_path: Path,
                                                                          request: pytest.FixtureRequest) -> None:
    """Staff Mon-Fri 07:00-19:00 in the lot's zone (Europe/Berlin): in a full lot they enter in their hours,
    get "Parking full" outside them, and the hours follow the wall clock across the March DST change."""
    lot = make_lot(tmp_path, request, capacity=1)  # T0 = Tuesday 10 March 2026, 10:00 in Berlin
    lot.enter("AB123CD")
    lot.store.set_list_entries("allow", [{"plate": "PM777AA", "schedule": [
        {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "07:00", "end": "19:00"}]}])
    inside = lot.decided(ENTRY, "PM777AA")
    assert (inside.open, inside.reason, lot.displays[ENTRY].last) == (True, "entry_allow_list", "Welcome")
    lot.clock.advance(timedelta(hours=8, minutes=30))  # 18:31: still in the hours
    assert lot.decided(EXIT, "PM777AA").reason == "allow_list_exit"

    lot.clock.advance(timedelta(hours=1))  # 19:31: the hours are over
    late = lot.decided(ENTRY, "PM777AA")
    assert (late.open, late.reason, late.session_id) == (False, "full", None)
    assert lot.displays[ENTRY].last == "Parking full"
    denied = lot.outbox("events/denied")[-1]
    assert denied["plate"] == "PM777AA" and denied["message"] == (
        "Parking full (allow list: outside its schedule Mon-Fri 07:00-19:00)")

    # Monday 23 March, 05:30 UTC is 06:30 in Berlin (CET): before the hours.
    lot.clock.advance(datetime(2026, 3, 23, 5, 30, tzinfo=UTC) - lot.clock.now())
    assert lot.decided(ENTRY, "PM777AA").reason == "full"
    # Monday 30 March, the same 05:30 UTC is 07:30 in Berlin (CEST): in the hours.
    lot.clock.advance(timedelta(days=7))
    again = lot.decided(ENTRY, "PM777AA")
    assert (again.open, again.reason, lot.displays[ENTRY].last) == (True, "entry_allow_list", "Welcome")
    assert sorted(s["plate"] for s in lot.store.sessions(status=["open"])) == ["AB123CD", "PM777AA"]


def test_outside_its_hours_an_allow_listed_plate_is_a_visitor_and_pays(tmp_path: Path,
                                                                        request: pytest.FixtureRequest) -> None:
    lot = make_lot(tmp_path, request)
    lot.store.set_list_entries("allow", [{"plate": "CL34NER", "schedule": [
        {"days": ["sat"], "start": "06:00", "end": "09:00"}]}])
    visitor = lot.decided(ENTRY, "CL34NER")  # a Tuesday
    assert (visitor.open, visitor.reason, lot.displays[ENTRY].last) == (True, "entry", "Welcome")
    assert lot.events("entry")[-1]["message"] == "Welcome (allow list: outside its schedule Sat 06:00-09:00)"
    lot.clock.advance(timedelta(hours=3))
    leaving = lot.decided(EXIT, "CL34NER")
    assert (leaving.open, leaving.reason, leaving.fee_due) == (False, "unpaid", 750)


def test_deny_list_is_refused(lot: Lot) -> None:
    lot.store.set_list_entries("deny", [{"plate": "BAD666"}])
    outcome = lot.decided(ENTRY, "BAD666")
    assert (outcome.open, outcome.reason, outcome.message) == (False, "deny_list", "Access denied")
    assert not lot.relay_energised(ENTRY)
    assert lot.events("denied")[-1]["reason"] == "deny_list"


def test_anti_passback_deny(lot: Lot) -> None:
    first = lot.enter("AB123CD")
    outcome = lot.decided(ENTRY, "AB123CD")
    assert (outcome.open, outcome.reason, outcome.session_id) == (False, "already_inside", first)
    assert outcome.message == "Already inside - please see attendant"
    assert len(lot.store.sessions()) == 1


def test_anti_passback_reuse_opens_on_the_same_session(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    lot = make_lot(tmp_path, request, anti_passback="reuse")
    first = lot.enter("AB123CD")
    outcome = lot.decided(ENTRY, "AB123CD")
    assert (outcome.open, outcome.reason, outcome.session_id, outcome.message) == (
        True, "reentry_reuse_session", first, "Welcome back")
    assert len(lot.store.sessions()) == 1


# --------------------------------------------------------------------------- exit


def test_exit_paid_within_grace_opens_and_closes(lot: Lot) -> None:
    sid = lot.enter("AB123CD")
    lot.clock.advance(timedelta(hours=2))
    lot.store.pay_session(sid, amount=500, reference="r")
    lot.clock.advance(timedelta(minutes=10))
    outcome = lot.decided(EXIT, "AB123CD")
    assert (outcome.open, outcome.reason, outcome.message, outcome.session_id) == (True, "paid_within_grace", "Goodbye", sid)
    session = lot.store.session(sid)
    assert (session["status"], session["exit_lane"], session["fee_charged"]) == ("closed", EXIT, 500)
    assert lot.relay_energised(EXIT)
    assert lot.outbox("occupancy")[-1]["occupied"] == 0


def test_exit_unpaid_asks_for_the_fee(lot: Lot) -> None:
    sid = lot.enter("AB123CD")  # a minute in by now
    lot.clock.advance(timedelta(hours=1, minutes=59))
    outcome = lot.decided(EXIT, "AB123CD")
    assert (outcome.open, outcome.reason, outcome.fee_due, outcome.message) == (False, "unpaid", 500, "Please pay 5.00 EUR")
    assert lot.store.session(sid)["status"] == "open" and not lot.relay_energised(EXIT)
    assert lot.displays[EXIT].shown == [("Please pay 5.00 EUR", "AB123CD", "denied")]


def test_exit_after_grace_the_fee_runs_again(lot: Lot) -> None:
    sid = lot.enter("AB123CD")
    lot.clock.advance(timedelta(hours=1))
    lot.store.pay_session(sid, amount=500)
    lot.clock.advance(timedelta(minutes=16))  # grace is 15 minutes
    outcome = lot.decided(EXIT, "AB123CD")
    assert (outcome.open, outcome.reason, outcome.fee_due) == (False, "grace_expired", 250)
    assert outcome.message == "Grace expired - please pay 2.50 EUR"


def test_exit_at_the_last_second_of_grace_opens(lot: Lot) -> None:
    sid = lot.enter("AB123CD")
    lot.store.pay_session(sid, amount=250)
    lot.clock.advance(timedelta(minutes=15))
    assert lot.decided(EXIT, "AB123CD").reason == "paid_within_grace"


def test_exit_within_free_minutes_costs_nothing(lot: Lot) -> None:
    sid = lot.enter("AB123CD")  # 1 minute in by now
    lot.clock.advance(timedelta(minutes=13))
    outcome = lot.decided(EXIT, "AB123CD")
    assert (outcome.open, outcome.reason, outcome.fee_due) == (True, "free_stay", 0)
    assert lot.store.session(sid)["fee_charged"] == 0


def test_exit_just_past_free_minutes_is_charged(lot: Lot) -> None:
    lot.enter("AB123CD")
    lot.clock.advance(timedelta(minutes=14, seconds=1))
    outcome = lot.decided(EXIT, "AB123CD")
    assert (outcome.reason, outcome.fee_due) == ("unpaid", 250)


def test_exit_a_long_stay_is_capped_per_day(lot: Lot) -> None:
    lot.enter("AB123CD")
    lot.clock.advance(timedelta(hours=25))
    assert lot.decided(EXIT, "AB123CD").fee_due == 2000 + 250 + 250


def test_allow_listed_plate_leaves_free(lot: Lot) -> None:
    sid = lot.enter("PM777AA")
    lot.store.set_list_entries("allow", [{"plate": "PM777AA"}])
    lot.clock.advance(timedelta(hours=5))
    outcome = lot.decided(EXIT, "PM777AA")
    assert (outcome.open, outcome.reason, outcome.fee_due) == (True, "allow_list_exit", 0)
    assert lot.store.session(sid)["status"] == "closed"


def test_exit_without_entry_record_stays_shut(lot: Lot) -> None:
    lot.enter("AB123CD")
    outcome = lot.decided(EXIT, "ZZ999ZZ")
    assert (outcome.open, outcome.reason, outcome.message) == (False, "no_entry_record", "No entry record")
    assert not lot.relay_energised(EXIT)


def test_exit_look_alike_read_matches_the_one_session(lot: Lot) -> None:
    sid = lot.enter("AB123CD")
    lot.clock.advance(timedelta(minutes=5))
    outcome = lot.decided(EXIT, "AB123CO")  # O for D: a quarter edit (both whole plates)
    assert (outcome.open, outcome.session_id, outcome.plate) == (True, sid, "AB123CD")
    assert json.loads(lot.events("exit")[-1]["data"])["match_distance"] == 0.25


def test_ambiguous_look_alike_match_stays_shut(lot: Lot) -> None:
    lot.enter("AB123CD")
    lot.enter("AB123CO")
    lot.clock.advance(timedelta(minutes=5))
    outcome = lot.decided(EXIT, "AB123CQ")  # a quarter from each: too close to call
    assert (outcome.open, outcome.reason, outcome.message) == (False, "ambiguous_match", "Please see attendant")
    assert not lot.relay_energised(EXIT)
    event = lot.events("denied")[-1]
    assert sorted(json.loads(event["data"])["candidates"]) == ["AB123CD", "AB123CO"]
    assert "candidate sessions" in event["message"]
    assert all(s["status"] == "open" for s in lot.store.sessions())


# --------------------------------------------------------------------------- evidence for one vehicle


def test_unsure_reads_are_decided_when_the_read_window_closes(lot: Lot) -> None:
    assert lot.frame(ENTRY, Read("AB123CD", 0.6)) == []
    assert lot.frame(ENTRY, Read("AB123CO", 0.5)) == []
    assert lot.tick(ENTRY, 1.0) == []  # read window is 2 s
    [(kind, outcome)] = lot.tick(ENTRY, 1.0)
    assert kind == "decided" and outcome is not None and outcome.plate == "AB123CD"
    assert outcome.confidence is not None and outcome.confidence < 0.6  # the consolidator's, not a sure read


def test_max_frames_ends_the_vehicle(lot: Lot) -> None:
    for _ in range(4):
        assert lot.frame(ENTRY, Read("KL456MN", 0.5)) == []
    [(kind, outcome)] = lot.frame(ENTRY, Read("KL456MN", 0.5))  # anpr.max_frames = 5
    assert kind == "decided" and outcome is not None and outcome.plate == "KL456MN"


def test_frames_without_a_plate_are_scenery(lot: Lot) -> None:
    for _ in range(3):
        assert lot.frame(ENTRY, None) == []
    assert lot.tick(ENTRY, 10) == []
    assert lot.events() == [] and lot.runners[ENTRY].status()["frames"] == 3


def test_reader_crash_is_counted_and_the_next_frame_is_read(lot: Lot) -> None:
    assert lot.frame(ENTRY, RuntimeError("simulated OCR crash")) == []
    outcome = lot.decided(ENTRY, "QR357ST")
    status = lot.runners[ENTRY].status()
    assert outcome.open and status["errors"] == 1 and "simulated OCR crash" in status["last_error"]


def test_arrival_loop_empty_frames_are_not_read(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    lot = make_lot(tmp_path, request, arrival=True)
    assert lot.frame(ENTRY, Read("AB123CD")) == [("not_waiting", None)]
    assert lot.source.calls == 0 and lot.events() == []


def test_arrival_loop_vehicle_without_a_read_gets_one_no_read_event(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    lot = make_lot(tmp_path, request, arrival=True)
    lot.factory.pin(PINS[ENTRY][2]).drive_low()  # active-low loop: a vehicle waits
    for _ in range(4):
        assert lot.frame(ENTRY, None) == []
    [(kind, outcome)] = lot.frame(ENTRY, None)  # anpr.max_frames frames, none read
    assert kind == "no_read" and outcome is not None
    assert (outcome.open, outcome.reason) == (False, "no_read")
    assert outcome.message == lot.displays[ENTRY].last == "Plate not read - please press the call button"
    for _ in range(6):  # the same arrival: not declared unread again
        assert lot.frame(ENTRY, None) == []
    assert lot.tick(ENTRY, 30) == []
    [event] = lot.events("no_read")
    assert lot.events("denied") == [] and lot.store.sessions() == [] and not lot.relay_energised(ENTRY)
    [message] = lot.outbox("events/no_read")
    assert (message["lane"], message["direction"], message["reason"]) == (ENTRY, "entry", "no_read")
    lot.factory.pin(PINS[ENTRY][2]).drive_high()  # it leaves; the next one arrives and is read
    assert lot.frame(ENTRY, None) == [("not_waiting", None)]
    lot.factory.pin(PINS[ENTRY][2]).drive_low()
    assert lot.decided(ENTRY, "AB123CD").open


def test_arrival_loop_unread_vehicle_read_later_is_decided(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Still on the loop after its no-read, the vehicle is read at last: decided then (no-read -> read now)."""
    lot = make_lot(tmp_path, request, arrival=True)
    lot.factory.pin(PINS[ENTRY][2]).drive_low()
    assert lot.frame(ENTRY, None) == []
    assert lot.tick(ENTRY, 1.9) == []
    [(kind, outcome)] = lot.tick(ENTRY, 0.1)  # the read window (2 s) is the timeout while it waits
    assert kind == "no_read" and outcome is not None and outcome.reason == "no_read"
    assert lot.frame(ENTRY, None) == []
    assert lot.tick(ENTRY, 5) == []  # no second no-read for the same arrival
    outcome = lot.decided(ENTRY, "AB123CD")
    assert outcome.open and len(lot.events("no_read")) == 1 and len(lot.events("entry")) == 1


def test_partial_read_never_starts_a_session(lot: Lot) -> None:
    """'6PGM' of '6PGM335' (a fallback layout only) is not a plate of the grammar: no session, a no-read."""
    assert lot.frame(ENTRY, Read("6PGM", 0.95)) == []   # not whole: the lane keeps reading
    [(kind, outcome)] = lot.tick(ENTRY, 2.0)
    assert kind == "no_read" and outcome is not None and not outcome.open
    assert lot.store.sessions() == [] and not lot.relay_energised(ENTRY)
    assert json.loads(lot.events("no_read")[0]["data"])["guesses"] == ["6PGM"]


def test_partial_read_never_matches_a_session_by_itself(lot: Lot) -> None:
    lot.enter("AB123CD")
    lot.clock.advance(timedelta(minutes=5))
    assert lot.frame(EXIT, Read("AB12", 0.95)) == []
    [(kind, outcome)] = lot.tick(EXIT, 2.0)
    assert kind == "no_read" and outcome is not None and not lot.relay_energised(EXIT)
    # Five sure characters may be a personalised plate (anpr.vanity_min_length): still not this session.
    lot.clock.advance(timedelta(minutes=1))
    [(kind, outcome)] = lot.frame(EXIT, Read("AB123", 0.95))
    assert (kind, outcome.reason, outcome.open) == ("decided", "no_entry_record", False)
    assert lot.store.sessions()[0]["status"] == "open" and not lot.relay_energised(EXIT)


def test_photo_with_no_vehicle_is_nothing(lot: Lot) -> None:
    """No read and no crop read: no decision, no event, nothing shown."""
    assert lot.frame(ENTRY, None) == []
    assert lot.tick(ENTRY, 10) == []
    assert lot.events() == [] and lot.displays[ENTRY].last is None


# --------------------------------------------------------------------------- same-vehicle hold-off


def test_same_vehicle_again_within_hold_off_is_not_decided_twice(lot: Lot) -> None:
    lot.decided(ENTRY, "AB123CD")
    lot.clock.advance(5)
    assert lot.vehicle(ENTRY, "AB123CD") == ("same_vehicle", None)
    assert lot.vehicle(ENTRY, "AB123CO") == ("same_vehicle", None)  # a look-alike read of it too
    assert len(lot.events("entry")) == 1 and len(lot.store.sessions()) == 1
    # Not silent: each repeat photo is on record (kept locally, not sent to the cloud).
    repeats = lot.events("same_vehicle")
    assert [e["reason"] for e in repeats] == ["entry", "entry"]
    assert lot.outbox("events/same_vehicle") == []


def test_after_the_hold_off_the_plate_is_a_new_vehicle(lot: Lot) -> None:
    lot.decided(ENTRY, "AB123CD")
    lot.clock.advance(11)  # same_vehicle_s = 10
    assert lot.decided(ENTRY, "AB123CD").reason == "already_inside"


def test_a_vehicle_that_left_since_is_a_new_arrival_within_the_hold_off(lot: Lot) -> None:
    """In and straight out again (a free stay): the same plate at the entry moments later is a car
    arriving again, not the one it let in still waiting at the barrier."""
    first = lot.decided(ENTRY, "AB123CD")
    lot.clock.advance(3)
    assert lot.decided(EXIT, "AB123CD").reason == "free_stay"
    lot.clock.advance(2)  # within same_vehicle_s = 10 of the entry
    again = lot.decided(ENTRY, "AB123CD")
    assert again.open and again.reason == "entry" and again.session_id != first.session_id
    assert lot.events("same_vehicle") == [] and len(lot.store.sessions()) == 2


def test_refused_twice_within_hold_off_is_one_denial(lot: Lot) -> None:
    lot.enter("AB123CD")
    lot.clock.advance(timedelta(hours=1))
    assert lot.decided(EXIT, "AB123CD").reason == "unpaid"
    lot.clock.advance(3)
    assert lot.vehicle(EXIT, "AB123CD") == ("same_vehicle", None)
    assert len(lot.events("denied")) == 1 and [e["reason"] for e in lot.events("same_vehicle")] == ["unpaid"]


def test_refused_then_paid_within_hold_off_opens(lot: Lot) -> None:
    sid = lot.enter("AB123CD")
    lot.clock.advance(timedelta(hours=1))
    assert not lot.decided(EXIT, "AB123CD").open
    lot.store.pay_session(sid, amount=250)
    lot.clock.advance(3)
    assert lot.decided(EXIT, "AB123CD").open


def test_operator_arrival_is_never_held_off(lot: Lot) -> None:
    lot.decided(ENTRY, "AB123CD")
    outcome = lot.runners[ENTRY].arrive("ab 123 cd", by="alice")
    assert (outcome.reason, outcome.source) == ("already_inside", "operator")
    assert json.loads(lot.events("denied")[-1]["data"])["by"] == "alice"
    assert lot.outcomes[ENTRY][-1] == ("decided", outcome)


# --------------------------------------------------------------------------- barrier, presence, gate events


def test_barrier_stays_open_while_presence_is_active(tmp_path: Path) -> None:
    """A hold-mode barrier under a car: the close timeout fires, the boom stays up until the loop clears."""
    clock = FakeClock(T0)
    lane = Lot._lane(ENTRY, "entry", False, {"relay_mode": "hold"})
    settings = Settings(site=SiteConfig(capacity=5), lanes=[lane], mqtt=MqttConfig(enabled=False),
                        storage=StorageConfig(data_dir=tmp_path / "data", min_free_mb=0))
    store = Store.from_settings(settings, clock=clock)
    factory = MockFactory()
    events: queue.Queue[Any] = queue.Queue()
    barrier = Barrier(lane=ENTRY, relay_pin=17, relay_mode="hold", safety_pins=[27], debounce_time=0,
                      open_time=0.01, close_time=0.01, close_timeout=0.05, pin_factory=factory)
    source = PlateSource()
    runner = LaneRunner.from_settings(settings, lane, store=store, reader=source, barrier=barrier, grabber=None,
                                      display=Display(), clock=clock)
    runner.add_gate_listener(events.put)
    try:
        source.queue.append(Read("AB123CD"))
        runner.step(Frame(np.zeros((8, 8, 3), np.uint8), ENTRY, clock.now(), 1))
        assert barrier.wait_for_state("open", 2)
        relay, loop = factory.pin(17), factory.pin(27)
        loop.drive_low()  # the car stands under the boom (active-low loop)
        kinds = _gate_kinds_until(events, "close_timeout")
        assert "closing" not in kinds
        assert str(barrier.state) == "open" and relay.state is True  # held up under the car
        loop.drive_high()  # the car has gone
        assert barrier.wait_for_state("closed", 2)
        assert relay.state is False
        kinds = [e["kind"] for e in store.events()]
        # The alarm repeats each close timeout the car stays: once or more, by how long it stood.
        assert kinds[0] == "entry" and kinds[-1] == "passed" and len(kinds) >= 3 and set(kinds[1:-1]) == {"alarm"}
        assert store.events(kinds=["alarm"])[0]["reason"] == "close_timeout"
    finally:
        barrier.close()
        store.close()


def _gate_kinds_until(events: queue.Queue[Any], kind: str) -> list[str]:
    seen: list[str] = []
    while not seen or seen[-1] != kind:
        seen.append(str(events.get(timeout=5).kind))
    return seen


def test_gate_states_are_queued_retained_as_valid_messages(lot: Lot) -> None:
    lot.decided(ENTRY, "AB123CD")
    barrier = lot.runners[ENTRY].barrier
    assert barrier.wait_for_state("open", 2)
    safety = lot.factory.pin(PINS[ENTRY][1])
    safety.drive_low()
    safety.drive_high()  # a car passed
    assert barrier.wait_for_state("closed", 2)
    rows = [r for r in lot.store.outbox_pending(limit=100) if r.topic == "lanes/entry-1/gate"]
    assert rows and all(r.retain for r in rows)
    states = [lot.outbox("lanes/entry-1/gate")[i]["state"] for i in range(len(rows))]
    assert states == ["opening", "open", "closing", "closed"]
    assert [e["kind"] for e in lot.events()] == ["entry", "passed"]


def test_manual_open_is_recorded_before_the_relay_and_shown(lot: Lot) -> None:
    on_disk: list[list[tuple[Any, ...]]] = []
    db = lot.settings.storage.database_path

    def check(value: bool) -> None:  # when the coil is energised, the event must be committed
        if value:
            conn = sqlite3.connect(db)
            on_disk.append(conn.execute("SELECT kind, reason FROM events").fetchall())
            conn.close()

    CoilPin.on_output[f"GPIO{PINS[EXIT][0]}"] = check
    event_id = lot.runners[EXIT].open_manual(reason="ticket machine broken", by="bob")
    assert lot.relay_energised(EXIT)
    assert on_disk and on_disk[0] == [("open_manual", "open_manual")]
    assert lot.events("open_manual")[0]["id"] == event_id
    assert lot.displays[EXIT].last == "Please drive through"
    assert lot.outcomes[EXIT][-1] == ("open_manual", None)
    with pytest.raises(ValueError):
        lot.runners[EXIT].open_manual(reason="  ", by="bob")


# --------------------------------------------------------------------------- store and disk errors


class RacingStore(Store):
    """A second lane closes the session between this lane's decision and its record."""

    race_session: int | None = None

    def record_decision(self, decision: Any, **kwargs: Any) -> Any:
        if self.race_session is not None and kwargs.get("lane") == EXIT:
            sid, self.race_session = self.race_session, None
            from gatekeeper.rules import Action, Decision, Reason

            super().record_decision(
                Decision(True, Reason.PAID, "Goodbye", Action.CLOSE_SESSION, decision.plate, sid),
                lane="exit-2", direction="exit",
            )
        return super().record_decision(decision, **kwargs)


def test_store_refusal_keeps_the_barrier_shut_and_says_see_attendant(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    probe = Lot(tmp_path / "probe")
    settings = probe.settings.model_copy(update={"storage": StorageConfig(data_dir=tmp_path / "data", min_free_mb=0)})
    probe.close()
    store = RacingStore.from_settings(settings, clock=FakeClock(T0))
    lot = make_lot(tmp_path, request, store=store)
    store.clock = lot.clock
    sid = lot.enter("AB123CD")
    lot.store.pay_session(sid, amount=250)
    store.race_session = sid
    assert lot.vehicle(EXIT, "AB123CD") == ("error", None)
    assert not lot.relay_energised(EXIT)
    assert lot.displays[EXIT].shown == [("Please see attendant", "AB123CD", "error")]
    status = lot.runners[EXIT].status()
    assert status["errors"] == 2  # counted as the store's refusal and as the failed decision, as before
    assert "not inside any more" in status["last_error"]
    assert [e["lane"] for e in lot.events("exit")] == ["exit-2"]


def test_disk_low_decides_without_photo_and_alarms_once_per_ten_minutes(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    lot = make_lot(tmp_path, request, min_free_mb=10**9)
    first = lot.decided(ENTRY, "AB123CD")
    assert first.open and first.photo is None
    lot.clock.advance(60)
    assert lot.decided(ENTRY, "KL456MN").photo is None
    assert len(lot.events("alarm")) == 1
    lot.clock.advance(timedelta(minutes=10))
    lot.decided(ENTRY, "QR357ST")
    alarms = lot.events("alarm")
    assert len(alarms) == 2 and alarms[0]["reason"] == "disk_low"


def test_photo_is_kept_with_the_session(lot: Lot) -> None:
    outcome = lot.decided(ENTRY, "AB123CD")
    assert outcome.photo is not None and Path(outcome.photo).is_file()
    assert "/2026/03/10/" in outcome.photo
    assert lot.store.session(outcome.session_id)["photo"] == outcome.photo


def test_unwritable_photo_folder_decides_without_photo(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    lot = make_lot(tmp_path, request)
    photos = lot.settings.storage.photos_path
    photos.parent.mkdir(parents=True, exist_ok=True)
    photos.write_text("not a folder")
    outcome = lot.decided(ENTRY, "AB123CD")
    assert outcome.open and outcome.photo is None and lot.store.session(outcome.session_id)["photo"] is None


# --------------------------------------------------------------------------- records and messages


def test_every_decision_writes_one_event_and_one_valid_message(lot: Lot) -> None:
    sid = lot.enter("AB123CD")
    lot.clock.advance(timedelta(minutes=50))
    lot.decided(EXIT, "AB123CD")  # unpaid
    lot.store.pay_session(sid, amount=250)
    lot.clock.advance(60)
    lot.decided(EXIT, "AB123CD")  # paid
    lot.clock.advance(60)
    lot.decided(EXIT, "ZZ999ZZ")  # unknown
    decisions = [e for e in lot.events() if e["kind"] in ("entry", "exit", "denied")]
    assert [(e["kind"], e["reason"]) for e in decisions] == [
        ("entry", "entry"), ("denied", "unpaid"), ("exit", "paid_within_grace"), ("denied", "no_entry_record")]
    sent = {m["id"]: m for m in lot.outbox("events/")}
    assert all(e["id"] in sent for e in decisions)
    assert sent[decisions[1]["id"]]["fee_due"] == 250 and sent[decisions[1]["id"]]["currency"] == "EUR"
    assert [o.reason for _, o in lot.outcomes[EXIT] if o] == ["unpaid", "paid_within_grace", "no_entry_record"]


def test_status_reports_the_last_decision(lot: Lot) -> None:
    lot.decided(ENTRY, "AB123CD")
    status = lot.runners[ENTRY].status()
    assert status["last"]["plate"] == "AB123CD" and status["display"] == "Welcome"
    assert status["decisions"] == 1 and status["reads"] == 1 and status["gate"] in ("opening", "open", "closing", "closed")
    assert "AB123CD opened: Welcome [entry]" in status["last_decision"]


def test_gate_state_message_builder() -> None:
    topic, payload = messages.gate_state_message(lot="lot-1", lane="x", state="open", at=T0, detail="barrier up")
    assert topic == "lanes/x/gate" and payload["at"] == "2026-03-10T09:00:00.000+00:00"
    messages.validate_outbound(topic, json.dumps(payload))
    with pytest.raises(ValueError):
        messages.gate_state_message(lot="l", lane="x", state="open", at=datetime(2026, 1, 1))


# --------------------------------------------------------------------------- the worker thread


class FrameQueue:
    """The frame-source seam: frames the test puts in, handed out newest-first like the grabber."""

    def __init__(self) -> None:
        self.frames: queue.Queue[Frame | None] = queue.Queue()
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def next_frame(self, after_seq: int = -1, timeout: float | None = None) -> Frame | None:
        try:
            return self.frames.get(timeout=timeout)
        except queue.Empty:
            return None

    def latest(self) -> Frame | None:
        return None

    def health(self) -> dict[str, object]:
        return {"connected": True, "frames": self.frames.qsize()}

    def close(self) -> None:
        self.closed = True


def test_worker_thread_reads_frames_and_decides(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    lot = make_lot(tmp_path, request)
    frames = FrameQueue()
    runner = LaneRunner.from_settings(
        lot.settings, lot.settings.lane(ENTRY), store=lot.store, reader=lot.source,
        barrier=lot.runners[ENTRY].barrier, grabber=frames, display=Display(), clock=lot.clock,
    )
    seen: queue.Queue[tuple[str, LaneOutcome | None]] = queue.Queue()
    runner.add_vehicle_listener(lambda kind, outcome: seen.put((kind, outcome)))
    lot.source.queue.append(Read("AB123CD"))
    runner.start()
    try:
        frames.frames.put(Frame(np.zeros((8, 8, 3), np.uint8), ENTRY, lot.clock.now(), 1))
        kind, outcome = seen.get(timeout=5)
        assert kind == "decided" and outcome is not None and outcome.plate == "AB123CD"
        status = runner.status()
        assert frames.started and status["running"] and status["camera"] == {"connected": True, "frames": 0}
        assert runner.healthy(stall_s=30)
    finally:
        runner.request_stop()
        frames.frames.put(None)  # the frame wait ends at once: no 0.5 s timeout to sit out
        assert runner.stop(timeout=5)
    assert frames.closed and not runner.running and not runner.healthy(stall_s=30)
