"""Issue 11 on a fake clock: probability evidence, closed-vocabulary matching, whole reads, no-reads.

The rig of test_lane_scenarios (real store, rules, barrier on MockFactory pins, one
FakeClock), with a reader seam that also hands out probabilities: hand-built CTC matrices
(blank + 0-9A-Z per frame, as ``vision.reader.Glimpse`` carries them) in which each
character is sure or split between look-alikes. The real reader's matrices are covered by
test_plate_scoring.py and the end-to-end daemon test.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gatekeeper.lane.evidence import whole_plate_check
from gatekeeper.vision.reader import Glimpse, Observation, PlateRead
from gatekeeper.vision.scoring import CHARS
from tests.test_lane_scenarios import ENTRY, EXIT, Frame, Lot, Read

SURE = 0.97


def matrix(plate: str, split: dict[int, dict[str, float]] | None = None) -> np.ndarray:
    """A folded CTC matrix spelling ``plate``: one frame per character (``split`` spreads one), blanks between."""
    rows = [_row({})]
    for i, ch in enumerate(plate):
        rows.append(_row((split or {}).get(i, {ch: SURE})))
        rows.append(_row({}))
    return np.array(rows, dtype=np.float32)


def _row(chars: dict[str, float]) -> np.ndarray:
    row = np.full(1 + len(CHARS), 1e-4)
    for ch, p in chars.items():
        row[1 + CHARS.index(ch)] = p
    row[0] = max(1e-4, 1.0 - row[1:].sum()) if chars else 0.99
    return row / row.sum()


def glimpse(plate: str, split: dict[int, dict[str, float]] | None = None, reading: str | None = None) -> Glimpse:
    return Glimpse(matrix(plate, split), (reading if reading is not None else plate,))


@dataclass
class Photo:
    read: PlateRead | None
    glimpses: tuple[Glimpse, ...]


class EvidenceSource:
    """The reader seam with probabilities: one queued photo per frame."""

    def __init__(self) -> None:
        self.queue: deque[Photo] = deque()

    def read(self, image: np.ndarray, *, region: str | None = None, roi: Any = None) -> PlateRead | None:
        return self.observe(image, region=region, roi=roi).read

    def observe(self, image: np.ndarray, *, region: str | None = None, roi: Any = None) -> Observation:
        photo = self.queue.popleft() if self.queue else Photo(None, ())
        return Observation(photo.read, photo.glimpses)


class EvidenceLot(Lot):
    def __init__(self, tmp_path: Path, **kwargs: Any) -> None:
        super().__init__(tmp_path, **kwargs)
        self.evidence = EvidenceSource()
        for runner in self.runners.values():
            runner.frame_reader.reader = self.evidence

    def frame(self, lane_id: str, read: Any) -> list[tuple[str, Any]]:
        """A plain camera frame with a read and no probabilities (the rig's ``enter`` uses it)."""
        self.evidence.queue.clear()
        self.evidence.queue.append(Photo(read, ()))
        return super().frame(lane_id, None)

    def photo(self, lane_id: str, read: PlateRead | None, *glimpses: Glimpse) -> list[tuple[str, Any]]:
        """A watch-folder still (one file, one vehicle) with this read and these crops' probabilities."""
        self.evidence.queue.clear()
        self.evidence.queue.append(Photo(read, tuple(glimpses)))
        self._seq += 1
        before = len(self.outcomes[lane_id])
        frame = Frame(np.zeros((8, 8, 3), np.uint8), lane_id, self.clock.now(), self._seq,
                      path=Path(f"/nonexistent/{self._seq}.jpg"))
        self.runners[lane_id].step(frame)
        return self.outcomes[lane_id][before:]

    def one(self, lane_id: str, read: PlateRead | None, *glimpses: Glimpse) -> tuple[str, Any]:
        reported = self.photo(lane_id, read, *glimpses)
        assert len(reported) == 1, reported
        return reported[0]


@pytest.fixture
def lot(tmp_path: Path, request: pytest.FixtureRequest) -> EvidenceLot:
    rig = EvidenceLot(tmp_path)
    request.addfinalizer(rig.close)
    return rig


def paid_session(lot: EvidenceLot, plate: str) -> int:
    """A car inside that has paid (typed in at the entry: any plate, look-alike twins too)."""
    sid = lot.runners[ENTRY].arrive(plate, by="test").session_id
    assert sid is not None
    lot.store.pay_session(sid, amount=250)
    return sid


# --------------------------------------------------------------------------- closed vocabulary at the exit


def test_exit_opens_on_probabilities_when_no_whole_plate_was_read(lot: EvidenceLot) -> None:
    """The reader's string is partial ('AB123C'), but the matrices spell one session's plate clearly."""
    sid = paid_session(lot, "AB123CD")
    paid_session(lot, "KL456MN")
    kind, outcome = lot.one(EXIT, Read("AB123C", 0.6), glimpse("AB123CD", reading="AB123CD"))
    assert kind == "decided" and (outcome.open, outcome.session_id, outcome.reason) == (True, sid, "paid_within_grace")


def test_two_look_alike_sessions_stay_shut_with_both_candidates(lot: EvidenceLot) -> None:
    """AB81234 vs ABB1234 (both valid layouts): the evidence cannot tell 8 from B there: shut, both named."""
    paid_session(lot, "AB81234")
    paid_session(lot, "ABB1234")
    split = {2: {"8": 0.49, "B": 0.49}}
    kind, outcome = lot.one(EXIT, None, glimpse("AB81234", split, reading="AB81234"))
    assert kind == "decided" and (outcome.open, outcome.reason) == (False, "ambiguous_match")
    assert not lot.relay_energised(EXIT)
    event = lot.events("denied")[-1]
    assert sorted(json.loads(event["data"])["candidates"]) == ["AB81234", "ABB1234"]
    assert all(s["status"] == "paid" for s in lot.store.sessions())


def test_six_g_swap_with_a_sure_read_opens_only_the_right_one(lot: EvidenceLot) -> None:
    paid_session(lot, "GH612KL")
    sid = paid_session(lot, "GHG12KL")
    kind, outcome = lot.one(EXIT, None, glimpse("GHG12KL"))
    assert (outcome.open, outcome.session_id) == (True, sid)


def test_a_car_not_inside_never_opens(lot: EvidenceLot) -> None:
    paid_session(lot, "AB123CD")
    paid_session(lot, "AB128CD")
    kind, outcome = lot.one(EXIT, Read("ZX987YW"), glimpse("ZX987YW"))
    assert (outcome.open, outcome.reason) == (False, "no_entry_record")
    assert not lot.relay_energised(EXIT)


def test_the_look_alike_twin_of_a_car_inside_does_not_open_its_session(lot: EvidenceLot) -> None:
    """Inside: AB123CD. At the exit AB128CD, read surely: one edit away (today's matcher took it), not it."""
    paid_session(lot, "AB123CD")
    kind, outcome = lot.one(EXIT, Read("AB128CD"), glimpse("AB128CD"))
    assert not outcome.open and not lot.relay_energised(EXIT)


def test_unreadable_exit_photo_then_a_good_one_opens_once(lot: EvidenceLot) -> None:
    sid = paid_session(lot, "AB123CD")
    blurred = {i: {ch: 0.2 for ch in CHARS[:5]} for i in range(7)}
    kind, outcome = lot.one(EXIT, None, glimpse("AB123CD", blurred, reading=""))
    assert kind == "no_read" and not outcome.open
    event = lot.events("no_read")[-1]
    assert json.loads(event["data"])["direction"] == "exit"
    lot.clock.advance(3)
    kind, outcome = lot.one(EXIT, Read("AB123CD"), glimpse("AB123CD"))
    assert kind == "decided" and (outcome.open, outcome.session_id) == (True, sid)
    lot.clock.advance(2)  # the same car photographed again: never a second opening
    assert lot.one(EXIT, Read("AB123CD"), glimpse("AB123CD")) == ("same_vehicle", None)
    assert len(lot.events("exit")) == 1


def test_refused_unpaid_then_paid_repeat_photo_is_decided_again(lot: EvidenceLot) -> None:
    sid = lot.enter("AB123CD")
    lot.clock.advance(timedelta(hours=1))
    kind, outcome = lot.one(EXIT, Read("AB123CD"), glimpse("AB123CD"))
    assert (outcome.open, outcome.reason) == (False, "unpaid")
    lot.clock.advance(2)
    assert lot.one(EXIT, Read("AB123CD"), glimpse("AB123CD")) == ("same_vehicle", None)  # still unpaid
    lot.store.pay_session(sid, amount=250)
    lot.clock.advance(2)
    kind, outcome = lot.one(EXIT, Read("AB123CD"), glimpse("AB123CD"))
    assert (outcome.open, outcome.session_id) == (True, sid)
    assert [e["kind"] for e in lot.events() if e["lane"] == EXIT] == ["denied", "same_vehicle", "exit"]


def test_repeat_photos_add_evidence_until_the_session_is_clear(lot: EvidenceLot) -> None:
    """Two photos, each unsure at a different place, together pick one of two look-alike sessions."""
    paid_session(lot, "AB81234")
    sid = paid_session(lot, "ABB1234")
    first = glimpse("ABB1234", {2: {"8": 0.49, "B": 0.49}}, reading="ABB1234")
    kind, outcome = lot.one(EXIT, None, first)
    assert outcome.reason == "ambiguous_match"
    lot.clock.advance(2)
    kind, outcome = lot.one(EXIT, Read("ABB1234"), glimpse("ABB1234"))
    assert (outcome.open, outcome.session_id) == (True, sid)


# --------------------------------------------------------------------------- entry


def test_partial_read_never_starts_a_session_and_is_a_visible_no_read(lot: EvidenceLot) -> None:
    kind, outcome = lot.one(ENTRY, Read("6PGM"), glimpse("6PGM335", {4: {"3": 0.3}, 5: {"3": 0.3}, 6: {"5": 0.3}},
                                                          reading="6PGM"))
    assert kind == "no_read" and not outcome.open and lot.store.sessions() == []
    [event] = lot.events("no_read")
    data = json.loads(event["data"])
    assert (event["lane"], data["direction"]) == (ENTRY, "entry") and "6PGM" in data["guesses"]
    assert lot.displays[ENTRY].last == "Plate not read - please press the call button"
    [message] = lot.outbox("events/no_read")  # valid against the contract's NoReadEvent
    assert message["guesses"] == data["guesses"]


def test_no_read_display_text_is_configurable(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    lot = EvidenceLot(tmp_path, no_read_message="Kennzeichen nicht erkannt - bitte klingeln")
    request.addfinalizer(lot.close)
    kind, _ = lot.one(ENTRY, Read("AB1"), glimpse("AB1"))
    assert kind == "no_read" and lot.displays[ENTRY].last == "Kennzeichen nicht erkannt - bitte klingeln"


def test_photo_with_no_vehicle_is_not_a_no_read(lot: EvidenceLot) -> None:
    assert lot.photo(ENTRY, None) == []
    assert lot.events() == [] and lot.displays[ENTRY].last is None


def test_full_lot_allow_list_plate_enters_on_probabilities(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    lot = EvidenceLot(tmp_path, capacity=1)
    request.addfinalizer(lot.close)
    lot.enter("AB123CD")
    lot.store.set_list_entries("allow", [{"plate": "PERMIT1"}])  # a vanity plate: no listed layout fits it
    kind, outcome = lot.one(ENTRY, Read("PERMIT1"), glimpse("PERMIT1"))
    assert (outcome.open, outcome.reason, outcome.plate) == (True, "entry_allow_list", "PERMIT1")


def test_full_lot_stranger_is_not_taken_for_an_allow_list_plate(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    lot = EvidenceLot(tmp_path, capacity=1)
    request.addfinalizer(lot.close)
    lot.enter("AB123CD")
    lot.store.set_list_entries("allow", [{"plate": "KL456MN"}])
    kind, outcome = lot.one(ENTRY, Read("KL458MN"), glimpse("KL458MN"))
    assert (outcome.open, outcome.reason) == (False, "full")


def test_whole_plate_check_follows_the_region_grammar() -> None:
    us = whole_plate_check("us")
    assert us("6PGM335") and not us("6PGM") and not us("AGEN")
    assert us("K179658") and us("CN2X798")                   # Illinois A12-3456, Texas AB1-C234
    assert not us("7AB1231")                                 # 1AB2345 (Maryland) is not listed: see docs/anpr.md
    eu = whole_plate_check("eu", {"eu": ["LLLLLLN"]})
    assert eu("AB123CD") and eu("PERMITS1"[:6] + "1") and not eu("AB12")


def test_two_different_unread_cars_in_a_row_are_two_no_reads(lot: EvidenceLot) -> None:
    lot.one(EXIT, Read("AB1"), glimpse("AB1"))
    lot.clock.advance(2)
    kind, _ = lot.one(EXIT, Read("XY9"), glimpse("XY9"))
    assert kind == "no_read" and len(lot.events("no_read")) == 2
    lot.clock.advance(2)  # the second car's photo again: the same vehicle, noted once
    assert lot.one(EXIT, Read("XY9"), glimpse("XY9")) == ("same_vehicle", None)
    assert len(lot.events("no_read")) == 2 and len(lot.events("same_vehicle")) == 1


def test_two_unread_cars_whose_scraps_are_one_edit_apart_are_two_no_reads(lot: EvidenceLot) -> None:
    """Two unread cars in a row leave scraps ("TS", "T5") one edit apart by chance: the second car is
    decided on its own photo; pooled with the first car's (undecided between two other sessions) it
    was a no-read. A plate-long guess one glyph off, or the very same guess again, is still the same car."""
    sid = paid_session(lot, "R589789")
    paid_session(lot, "KL3B8K")
    paid_session(lot, "KL3B6K")
    torn = Glimpse(matrix("KL3B8K", {4: {"8": 0.48, "6": 0.48}}), ("TS",))   # undecided between two cars inside
    assert lot.one(EXIT, Read("TS"), torn)[1].reason == "ambiguous_match"
    lot.clock.advance(2)
    two = Glimpse(matrix("R589789"), ("T5",))           # its guess is a scrap, its crops spell a session
    kind, outcome = lot.one(EXIT, Read("T5"), two)
    assert kind == "decided" and (outcome.open, outcome.session_id) == (True, sid)
    lot.clock.advance(2)
    lot.one(EXIT, Read("KB48"), glimpse("KB48"))
    lot.clock.advance(2)
    assert lot.one(EXIT, Read("KB4B"), glimpse("KB4B")) == ("same_vehicle", None)
    lot.clock.advance(2)
    assert lot.one(EXIT, Read("KB4B"), glimpse("KB4B")) == ("same_vehicle", None)
    assert len(lot.events("no_read")) == 1


# --------------------------------------------------------------------------- entry alternates


def _enter_hesitant(lot: EvidenceLot, read: str, split: dict[int, dict[str, float]]) -> int:
    """A camera entry whose read is the network's first choice, with a runner-up glyph ``split`` keeps."""
    kind, outcome = lot.one(ENTRY, Read(read), glimpse(read, split, reading=read))
    assert kind == "decided" and outcome.open and outcome.session_id is not None
    lot.store.pay_session(outcome.session_id, amount=250)
    lot.clock.advance(30)
    return outcome.session_id


def test_an_entry_read_one_glyph_off_still_matches_the_right_read_at_the_exit(lot: EvidenceLot) -> None:
    """Entry read BT77148 (the network hesitated between 7 and Z); the exit reads BTZ7148 surely."""
    sid = _enter_hesitant(lot, "BT77148", {2: {"7": 0.6, "Z": 0.37}})
    alternates = json.loads(lot.store.session(sid)["alternates"])
    assert "BTZ7148" in dict(alternates) and all(ratio <= 0 for _, ratio in alternates)
    kind, outcome = lot.one(EXIT, Read("BTZ7148"), glimpse("BTZ7148"))
    assert kind == "decided" and (outcome.open, outcome.session_id) == (True, sid)
    assert lot.store.session(sid)["status"] == "closed" and lot.store.session(sid)["plate"] == "BT77148"


def test_a_sure_entry_read_keeps_no_alternate_and_a_one_glyph_neighbour_stays_shut(lot: EvidenceLot) -> None:
    """Without hesitation at the entry, a car one glyph away at the exit is another car."""
    sid = _enter_hesitant(lot, "BT77148", {})
    assert lot.store.session(sid)["alternates"] is None
    kind, outcome = lot.one(EXIT, Read("BTZ7148"), glimpse("BTZ7148"))
    assert (outcome.open, outcome.reason) == (False, "no_entry_record")
    assert not lot.relay_energised(EXIT)


def test_a_car_two_glyphs_from_a_hesitant_entry_stays_shut(lot: EvidenceLot) -> None:
    _enter_hesitant(lot, "BT77148", {2: {"7": 0.6, "Z": 0.37}})
    kind, outcome = lot.one(EXIT, Read("BTZ7198"), glimpse("BTZ7198"))
    assert (outcome.open, outcome.reason) == (False, "no_entry_record")
    assert not lot.relay_energised(EXIT)


def test_an_alternate_never_takes_a_car_inside_for_another(lot: EvidenceLot) -> None:
    """AB81234 entered hesitating 8/B, so ABB1234 is its alternate; ABB1234 is also inside, its own car."""
    _enter_hesitant(lot, "AB81234", {2: {"8": 0.6, "B": 0.37}})
    own = paid_session(lot, "ABB1234")
    kind, outcome = lot.one(EXIT, Read("ABB1234"), glimpse("ABB1234"))
    assert (outcome.open, outcome.session_id) == (True, own)


def test_damaged_alternates_are_ignored_not_fatal(lot: EvidenceLot) -> None:
    sid = _enter_hesitant(lot, "BT77148", {2: {"7": 0.6, "Z": 0.37}})
    with lot.store.database.transaction() as conn:
        conn.execute("UPDATE sessions SET alternates='not json' WHERE id=?", (sid,))
    kind, outcome = lot.one(EXIT, Read("BT77148"), glimpse("BT77148"))
    assert (outcome.open, outcome.session_id) == (True, sid)


# --------------------------------------------------------------------------- personalised (vanity) plates


def test_a_sure_long_read_no_layout_fits_is_a_vanity_plate_and_enters(lot: EvidenceLot) -> None:
    """NEILDMND fits no listed layout; read 0.97 sure through the fallback (weighed 0.7) it is a whole plate."""
    kind, outcome = lot.one(ENTRY, Read("NEILDMND", 0.68), glimpse("NEILDMND"))
    assert kind == "decided" and outcome.open and lot.store.sessions()[0]["plate"] == "NEILDMND"
    lot.store.pay_session(outcome.session_id, amount=250)
    lot.clock.advance(30)
    kind, out = lot.one(EXIT, Read("NEILDMND", 0.68), glimpse("NEILDMND"))
    assert (out.open, out.session_id) == (True, outcome.session_id)


def test_a_sure_five_character_read_no_layout_fits_is_a_personalised_plate(lot: EvidenceLot) -> None:
    """KCS1M, FWE50, M5XSX: five-character personalised plates (anpr.vanity_min_length 5)."""
    kind, outcome = lot.one(ENTRY, Read("KCS1M", 0.68), glimpse("KCS1M"))
    assert kind == "decided" and outcome.open and lot.store.sessions()[0]["plate"] == "KCS1M"


@pytest.mark.parametrize("read, confidence", [("NEILDMND", 0.5), ("KCS1M", 0.55), ("XKCS1M", 0.5), ("AGEN", 0.7)])
def test_unsure_or_short_reads_no_layout_fits_stay_no_reads(lot: EvidenceLot, read: str, confidence: float) -> None:
    kind, outcome = lot.one(ENTRY, Read(read, confidence), glimpse(read))
    assert kind == "no_read" and not outcome.open and lot.store.sessions() == []


def test_a_fairly_sure_personalised_read_lets_the_car_in_as_a_visitor(
    tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    """SGTE5 read 0.83 sure through a fallback (0.58 after the weight): below the exit's floor for a
    personalised plate (0.63), above the entry's (0.56). The car enters as a visitor: the reservation
    its plate holds is not taken on that read alone (no crops for the scorer to confirm it), and the
    exit scores the session out on its own photo."""
    lot = EvidenceLot(tmp_path)
    request.addfinalizer(lot.close)
    lot.store.upsert_reservation("r-1", "SGTE5", lot.clock.now(), lot.clock.now() + timedelta(hours=4))
    kind, outcome = lot.one(ENTRY, Read("SGTE5", 0.58))
    assert (kind, outcome.open, outcome.reason, outcome.plate) == ("decided", True, "entry", "SGTE5")
    assert lot.store.session(outcome.session_id)["reservation_id"] is None
    lot.store.pay_session(outcome.session_id, amount=250)
    lot.clock.advance(30)
    kind, out = lot.one(EXIT, Read("SGTE5", 0.58), glimpse("SGTE5"))
    assert (out.open, out.session_id) == (True, outcome.session_id)


def test_a_personalised_read_an_entry_takes_is_no_whole_read_at_the_exit(lot: EvidenceLot) -> None:
    """At the exit the scorer decides; a personalised read below 0.63 is only a guess there: a car
    with no session is "plate not read", not "no entry record"."""
    kind, outcome = lot.one(EXIT, Read("SGTE5", 0.58), glimpse("SGTE5"))
    assert kind == "no_read" and not outcome.open
    kind, outcome = lot.one(EXIT, Read("SGTE5", 0.68), glimpse("SGTE5"))
    assert (kind, outcome.reason) == ("decided", "no_entry_record")


def test_an_unsure_whole_read_lets_the_car_in_and_the_exit_scores_it_out(lot: EvidenceLot) -> None:
    """Entry floor (anpr.entry_min_confidence 0.2) below the exit's (min_confidence 0.5): an unsure whole
    read at the entry starts a session, and the exit's scorer matches the car on its probabilities."""
    kind, outcome = lot.one(ENTRY, Read("AB123CD", 0.3), glimpse("AB123CD"))
    assert kind == "decided" and outcome.open and lot.store.sessions()[0]["plate"] == "AB123CD"
    lot.store.pay_session(outcome.session_id, amount=250)
    lot.clock.advance(30)
    kind, out = lot.one(EXIT, Read("AB123CD", 0.3), glimpse("AB123CD"))
    assert (out.open, out.session_id) == (True, outcome.session_id)


def test_an_unsure_read_at_the_exit_is_no_whole_read(lot: EvidenceLot) -> None:
    """Below the exit's floor a read is only a guess: "plate not read", not "no entry record"."""
    kind, outcome = lot.one(EXIT, Read("XY987ZW", 0.3), glimpse("XY987ZW"))
    assert kind == "no_read" and not outcome.open
    kind, outcome = lot.one(EXIT, Read("XY987ZW", 0.6), glimpse("XY987ZW"))
    assert (kind, outcome.reason) == ("decided", "no_entry_record")


def test_an_unsure_entry_read_below_the_floor_is_a_no_read(lot: EvidenceLot) -> None:
    kind, outcome = lot.one(ENTRY, Read("AB123CD", 0.15), glimpse("AB123CD"))
    assert kind == "no_read" and not outcome.open and lot.store.sessions() == []


def test_vanity_plates_can_be_switched_off() -> None:
    from gatekeeper.lane.evidence import VehicleEvidence

    class Never:
        done = False

        def add(self, read: Any) -> None:
            self.last = read

    frame = Frame(np.zeros((8, 8, 3), np.uint8), ENTRY, None, 1)
    for length, whole in ((6, True), (0, False), (9, False)):
        v = VehicleEvidence(Never(), deadline=1.0, started=0.0, is_whole=whole_plate_check("eu"), vanity_min_length=length)
        v.add(Read("NEILDMND", 0.68), (), frame)
        assert (len(v.reads), len(v.partial)) == ((1, 0) if whole else (0, 1)), length


# --------------------------------------------------------------------------- closer look (deblurred plate box)


class LookingSource(EvidenceSource):
    """The reader seam with a closer look: hands out ``closer`` and counts the calls."""

    def __init__(self) -> None:
        super().__init__()
        self.closer: tuple[Glimpse, ...] = ()
        self.looks = 0
        self.fail = False

    def closer_look(self, image: np.ndarray, *, region: str | None = None, roi: Any = None) -> tuple[Glimpse, ...]:
        self.looks += 1
        if self.fail:
            raise RuntimeError("detector gone")
        return self.closer

    def closer_read(self, image: np.ndarray, *, region: str | None = None, roi: Any = None) -> Observation:
        """The entry's closer look: ``closer_plate`` read (None: the copies disagreed)."""
        self.reads += 1
        if self.fail:
            raise RuntimeError("detector gone")
        read = Read(self.closer_plate, 0.9) if self.closer_plate else None
        return Observation(read, self.closer)

    closer_plate = ""
    reads = 0


@pytest.fixture
def looking(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[EvidenceLot, LookingSource]:
    rig = EvidenceLot(tmp_path)
    request.addfinalizer(rig.close)
    source = LookingSource()
    rig.evidence = source
    for runner in rig.runners.values():
        runner.frame_reader.reader = source
    return rig, source


def _smeared(plate: str) -> Glimpse:
    """What a blurred exit photo gives: every glyph spread over its look-alikes and neighbours."""
    return glimpse(plate, {i: {ch: 0.1, "X": 0.4, "7": 0.4} for i, ch in enumerate(plate)}, reading="")


def test_an_unmatched_exit_gets_a_closer_look_that_opens_its_session(looking) -> None:
    lot, source = looking
    sid = paid_session(lot, "AB123CD")
    paid_session(lot, "KL456MN")
    source.closer = (glimpse("AB123CD"),)
    kind, outcome = lot.one(EXIT, None, _smeared("AB123CD"))
    assert kind == "decided" and (outcome.open, outcome.session_id) == (True, sid)
    assert source.looks == 1 and lot.runners[EXIT].counters.closer_looks == 1


def test_an_exit_undecided_between_two_sessions_gets_a_closer_look(looking) -> None:
    """The photo fits AB123CD and AB125CD alike (ambiguous): the closer look's clear crop decides;
    when it is as undecided, the lane stays shut as ambiguous (the attendant chooses)."""
    lot, source = looking
    sid = paid_session(lot, "AB123CD")
    paid_session(lot, "AB125CD")
    source.closer = (glimpse("AB123CD"),)
    kind, outcome = lot.one(EXIT, Read("AB123CD", 0.6), glimpse("AB123CD", {4: {"3": 0.02, "5": 0.02, "X": 0.96}}))
    assert (outcome.open, outcome.session_id) == (True, sid) and source.looks == 1
    lot.clock.advance(60)
    paid_session(lot, "KL456MN")
    paid_session(lot, "KL486MN")
    torn = {3: {"5": 0.02, "8": 0.02, "X": 0.96}}
    source.closer = (glimpse("KL456MN", torn),)
    kind, outcome = lot.one(EXIT, Read("KL456MN", 0.6), glimpse("KL456MN", torn))
    assert not outcome.open and outcome.reason == "ambiguous_match" and source.looks == 2


def test_no_closer_look_for_a_clear_match_or_at_an_entry(looking) -> None:
    lot, source = looking
    sid = paid_session(lot, "AB123CD")
    kind, outcome = lot.one(EXIT, Read("AB123CD"), glimpse("AB123CD"))
    assert (outcome.open, outcome.session_id) == (True, sid)
    kind, _ = lot.one(ENTRY, Read("AB1"), glimpse("AB1"))
    assert kind == "no_read" and source.looks == 0


def test_a_closer_look_that_shows_nothing_or_fails_still_ends_in_a_no_read(looking) -> None:
    lot, source = looking
    paid_session(lot, "AB123CD")
    kind, outcome = lot.one(EXIT, None, _smeared("AB123CD"))
    assert kind == "no_read" and not outcome.open and source.looks == 1
    lot.clock.advance(60)
    source.fail = True
    kind, outcome = lot.one(EXIT, None, _smeared("ZZ999ZZ"))
    assert kind == "no_read" and not outcome.open and source.looks == 2
    assert lot.runners[EXIT].counters.errors == 1 and "detector gone" in lot.runners[EXIT].counters.last_error


def test_a_closer_look_never_opens_for_a_car_that_is_not_inside(looking) -> None:
    lot, source = looking
    paid_session(lot, "AB123CD")
    source.closer = (glimpse("AB128CD"),)
    kind, outcome = lot.one(EXIT, Read("AB128CD"), _smeared("AB128CD"))
    assert not outcome.open and outcome.reason == "no_entry_record" and source.looks == 1


def test_no_closer_look_for_a_repeat_photo_of_a_car_already_let_out(looking) -> None:
    lot, source = looking
    sid = paid_session(lot, "AB123CD")
    kind, outcome = lot.one(EXIT, Read("AB123CD"), glimpse("AB123CD"))
    assert (outcome.open, outcome.session_id) == (True, sid)
    lot.clock.advance(2)                          # the exit camera fires again as the car drives off
    kind, outcome = lot.one(EXIT, Read("AB123CD"), _smeared("AB123CD"))
    assert kind == "same_vehicle" and outcome is None
    assert source.looks == 0 and lot.runners[EXIT].counters.closer_looks == 0


# --------------------------------------------------------------------------- closer read (an unread entry)


def test_an_unread_entry_is_read_closer_and_let_in(looking) -> None:
    """No whole read at the entry; the deblurred copies read KL456MN alike: the car enters under it,
    and the exit finds the session on the closer crops' evidence stored with it."""
    lot, source = looking
    source.closer_plate, source.closer = "KL456MN", (glimpse("KL456MN"),)
    kind, outcome = lot.one(ENTRY, None, _smeared("KL456MN"))
    assert kind == "decided" and outcome.open and outcome.plate == "KL456MN"
    assert lot.store.sessions()[0]["plate"] == "KL456MN" and lot.relay_energised(ENTRY)
    assert source.reads == 1 and source.looks == 0 and lot.runners[ENTRY].counters.closer_looks == 1


def test_a_closer_read_that_reads_nothing_or_fails_is_a_no_read(looking) -> None:
    lot, source = looking
    kind, outcome = lot.one(ENTRY, None, _smeared("KL456MN"))
    assert kind == "no_read" and not outcome.open and source.reads == 1 and lot.store.sessions() == []
    lot.clock.advance(60)
    source.fail = True
    kind, outcome = lot.one(ENTRY, None, _smeared("ZZ999ZZ"))
    assert kind == "no_read" and not outcome.open and source.reads == 2
    assert "detector gone" in lot.runners[ENTRY].counters.last_error


def test_a_closer_read_of_the_car_just_let_in_is_the_same_vehicle(looking) -> None:
    """The entry camera fires again as the car drives in, too blurred to read at first sight."""
    lot, source = looking
    kind, outcome = lot.one(ENTRY, Read("KL456MN"), glimpse("KL456MN"))
    assert kind == "decided" and outcome.open and source.reads == 0
    lot.clock.advance(2)
    source.closer_plate = "KL456MN"
    kind, outcome = lot.one(ENTRY, None, _smeared("KL456MN"))
    assert kind == "same_vehicle" and outcome is None and len(lot.store.sessions()) == 1


def test_a_closer_read_grants_no_privilege(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A full lot: an allow-listed plate read only by the closer look is a visitor's read (sure=False)."""
    lot = EvidenceLot(tmp_path, capacity=1)
    request.addfinalizer(lot.close)
    source = LookingSource()
    lot.evidence = source
    for runner in lot.runners.values():
        runner.frame_reader.reader = source
    lot.enter("AB123CD")
    lot.store.set_list_entries("allow", [{"plate": "KL456MN"}])
    source.closer_plate = "KL456MN"
    kind, outcome = lot.one(ENTRY, None, _smeared("KL456MN"))
    assert (kind, outcome.open, outcome.reason) == ("decided", False, "full")


# --------------------------------------------------------------------------- two cars one glyph apart


def test_two_cars_one_glyph_apart_back_to_back_are_two_vehicles(lot: EvidenceLot) -> None:
    """Fleet cars with consecutive plates: each photo reads its own plate clearly, so the hold-off
    does not take the second car for the first one read with a slip."""
    kind, first = lot.one(ENTRY, Read("AB123CD"), glimpse("AB123CD"))
    assert kind == "decided" and first.open
    lot.clock.advance(3)
    kind, second = lot.one(ENTRY, Read("AB124CD"), glimpse("AB124CD"))
    assert kind == "decided" and second.open and second.session_id != first.session_id
    assert sorted(s["plate"] for s in lot.store.sessions()) == ["AB123CD", "AB124CD"]


def test_one_car_read_again_with_a_slip_is_the_same_vehicle(lot: EvidenceLot) -> None:
    """The same car photographed again as it drives in, the 3 read as a 4 this time but hesitantly:
    its photo does not tell the two plates apart, so it is the car already let in."""
    kind, first = lot.one(ENTRY, Read("AB123CD"), glimpse("AB123CD"))
    assert kind == "decided" and first.open
    lot.clock.advance(2)
    slipped = glimpse("AB124CD", {4: {"4": 0.55, "3": 0.4}})
    assert lot.one(ENTRY, Read("AB124CD"), slipped) == ("same_vehicle", None)
    assert [s["plate"] for s in lot.store.sessions()] == ["AB123CD"]


def test_at_an_exit_a_read_one_glyph_off_the_car_just_let_out_stays_that_car(lot: EvidenceLot) -> None:
    """An exit photo clearly reading a plate one glyph off the car it just let out is that car again:
    deciding it would open for the other plate's session (tell_apart is for entry lanes only)."""
    mine = paid_session(lot, "AB123CD")
    other = paid_session(lot, "AB124CD")
    kind, outcome = lot.one(EXIT, Read("AB123CD"), glimpse("AB123CD"))
    assert kind == "decided" and (outcome.open, outcome.session_id) == (True, mine)
    lot.clock.advance(2)
    assert lot.one(EXIT, Read("AB124CD"), glimpse("AB124CD")) == ("same_vehicle", None)
    assert [s["status"] for s in lot.store.sessions() if s["id"] == other] != ["closed"]
