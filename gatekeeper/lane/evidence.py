"""Gathering the evidence for one vehicle: frames -> reads and probabilities -> one decision.

The worker hands each frame's read and its probabilities (:class:`Glimpse`: one per crop the
reader looked at) to :class:`EvidenceGatherer`. Only a *whole* read (a plate of one of the
lane's listed layouts, not a fallback: ``6PGM`` of ``6PGM335`` is not one) goes to the
consolidator as a plate; every crop's probabilities accumulate in :class:`VehicleEvidence`
for closed-vocabulary scoring. The vehicle is complete when a whole read is sure enough (or
``anpr.max_frames`` frames were read), when the read window ends while it is still there, when a
watch-folder still arrived (one file, one vehicle), or when the arrival loop empties. Time
comes from the injected clock, so a test moves the read window with ``FakeClock``.

:class:`SameVehicleHoldOff` remembers recent vehicles: a new photo of a refused vehicle adds its
evidence to the earlier one and is decided again on both; a vehicle that was let through is
never let through twice.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from gatekeeper.lane.ports import (
    Clock,
    Consolidator,
    ConsolidatorFactory,
    EvidenceReader,
    Frame,
    Glimpse,
    PlateRead,
    PlateReader,
    WholePlate,
)
from gatekeeper.rules import normalise_plate, plate_distance
from gatekeeper.vision.scoring import ctc_log_probs

log = logging.getLogger(__name__)

#: A camera read this close to an earlier plate (look-alikes count a quarter) is the same plate.
SAME_PLATE_DISTANCE = 1.0

#: Two reads within :data:`SAME_PLATE_DISTANCE` are still two vehicles when each one's photos make
#: its own plate this many nats likelier than the other's (about 55 times): fleet cars with
#: consecutive plates arrive back to back, while one car read again with a slip hesitates between
#: the two in at least one of its photos (docs/anpr.md, "Two cars one glyph apart").
TOLD_APART_NATS = 4.0

#: Photos (frames with crops read) kept per vehicle, the newest: a car waiting long is not scored on hundreds.
MAX_PHOTOS = 12


#: A read no listed layout fits (it came through a ``~`` fallback layout, whose confidence the
#: reader weighs by 0.7) is still a whole plate, a vanity plate, when the lane allows it
#: (``anpr.vanity_min_length``) and it is this sure: 0.9 before the fallback weight.
VANITY_MIN_CONFIDENCE = 0.63

#: An entry lane takes a personalised read from 0.8 sure (0.56 after the fallback weight) as an
#: unsure read: it lets the car in as a visitor (no privilege) and the exit scores the session on
#: its own photos. Below 0.8 the dev sample's fallback reads were mush or one glyph too many
#: (``CKQAJ`` of ``CK0A1F``, ``XKCS1M`` of ``KCS1M``, 0.71-0.73); from 0.8 they were the plate
#: (``SGTE5``, ``00256M1``: no-reads before, the attendant at the entry). docs/anpr.md, stop 30.
ENTRY_VANITY_MIN_CONFIDENCE = 0.56


def whole_plate_check(region: str, formats: dict[str, list[str]] | None = None) -> WholePlate:
    """The lane's grammar as a predicate: True for a plate that fits a listed (non-fallback) layout."""
    from gatekeeper.vision.plate_formats import PlateGrammar

    return PlateGrammar.for_region(region, formats or {}).listed


class FrameReader:
    """The plate reader seam for one lane: one read per frame, under the shared reader lock.

    A reader that raises costs that frame only: the error is counted and the lane goes on.
    """

    def __init__(
        self,
        *,
        lane_id: str,
        reader: PlateReader,
        lock: threading.Lock,
        region: str | None,
        roi: tuple[int, int, int, int] | None,
        on_error: Callable[[str], None],
        beat: Callable[[], None],
        after_read: Callable[[], object] | None = None,
    ) -> None:
        """``after_read`` runs under the lock after each read and closer look (the daemon hands
        the reader's freed buffers back to the system there; ``service/memory.py``)."""
        self.lane_id = lane_id
        self.reader = reader
        self.lock = lock
        self.region = region
        self.roi = roi
        self.on_error = on_error
        self.beat = beat
        self.after_read = after_read
        self.reads = 0

    def read(self, frame: Frame) -> tuple[PlateRead | None, tuple[Glimpse, ...]]:
        """The frame's read (or None) and its probabilities (empty from a reader without them)."""
        try:
            with self.lock:
                self.beat()
                if isinstance(self.reader, EvidenceReader):
                    seen = self.reader.observe(frame.image, region=self.region, roi=self.roi)
                    read, glimpses = seen.read, tuple(seen.evidence)
                else:
                    read, glimpses = self.reader.read(frame.image, region=self.region, roi=self.roi), ()
                self._done()
        except Exception as exc:
            self.on_error(f"reader: {exc}")
            log.exception("lane %s: reading frame %s failed; skipping it", self.lane_id, frame.seq)
            return None, ()
        if read is not None:
            self.reads += 1
            log.debug("lane %s frame %s: %s (%.2f)", self.lane_id, frame.seq, read.text, read.confidence)
        return read, glimpses

    def _done(self) -> None:
        if self.after_read is not None:
            self.after_read()

    def closer_look(self, frame: Frame) -> tuple[Glimpse, ...]:
        """The frame's plate read again deblurred (``PlateReader.closer_look``); () from a reader without it."""
        glimpses = self._look_again(frame, "closer_look", "closer look at")
        return () if glimpses is None else tuple(glimpses)

    def closer_read(self, frame: Frame) -> tuple[PlateRead | None, tuple[Glimpse, ...]]:
        """The frame's plate read again deblurred, as a read (``PlateReader.closer_read``) and its
        probabilities; (None, ()) from a reader without it, or when it fails."""
        seen = self._look_again(frame, "closer_read", "closer read of")
        return (None, ()) if seen is None else (seen.read, tuple(seen.evidence))

    def _look_again(self, frame: Frame, method: str, what: str) -> Any:
        """The reader's ``method`` on the frame, under the shared lock; None from a reader without it, or
        when it fails (the error is counted and the lane decides without it)."""
        look = getattr(self.reader, method, None)
        if look is None:
            return None
        try:
            with self.lock:
                self.beat()
                out = look(frame.image, region=self.region, roi=self.roi)
                self._done()
                return out
        except Exception as exc:
            self.on_error(f"reader: {exc}")
            log.exception("lane %s: %s frame %s failed; deciding without it", self.lane_id, what, frame.seq)
            return None


@dataclass
class VehicleEvidence:
    """One vehicle being read over several frames: whole reads, partial reads, probabilities."""

    consolidator: Consolidator
    deadline: float
    started: float
    is_whole: WholePlate
    vanity_min_length: int = 0
    min_confidence: float = 0.0
    vanity_min_confidence: float = VANITY_MIN_CONFIDENCE
    reads: list[tuple[PlateRead, Frame]] = field(default_factory=list)
    partial: list[PlateRead] = field(default_factory=list)
    photos: list[tuple[Glimpse, ...]] = field(default_factory=list)
    first_frame: Frame | None = None

    def add(self, read: PlateRead | None, glimpses: tuple[Glimpse, ...], frame: Frame) -> None:
        whole = read is not None and read.confidence >= self.min_confidence and (
            self.is_whole(read.normalised) or self._vanity(read))
        self.consolidator.add(read if whole else None)
        if self.first_frame is None:
            self.first_frame = frame
        if read is not None:
            if whole:
                self.reads.append((read, frame))
            else:
                self.partial.append(read)
        if glimpses:
            self.photos = [*self.photos, glimpses][-MAX_PHOTOS:]

    def _vanity(self, read: PlateRead) -> bool:
        """A sure read of at least ``vanity_min_length`` characters that no listed layout fits.

        Partial reads (``6PGM`` of ``6PGM335``, ``AGEN`` of ``GWAGEN``) are short; personalised
        plates (``NEILDMND``, ``BIMMIAN``) are long and read as surely as any (docs/anpr.md).
        """
        n = len(read.normalised)
        return 0 < self.vanity_min_length <= n and read.confidence >= self.vanity_min_confidence

    @property
    def empty(self) -> bool:
        """Nothing to go on: no read of any kind and no crop read."""
        return not self.reads and not self.partial and not self.photos

    def result(self) -> PlateRead | None:
        """The consolidated whole read, or None."""
        return self.consolidator.result()

    def guesses(self, limit: int = 5) -> list[str]:
        """What the reader made of it when nothing whole came out: partial reads, then grammar readings."""
        out = [r.normalised for r in sorted(self.partial, key=lambda r: -r.confidence)]
        out += [reading for photo in self.photos for g in photo for reading in g.readings]
        return [p for p in dict.fromkeys(normalise_plate(p) for p in out) if p][:limit]

    def frame_for(self, result: PlateRead | None) -> Frame | None:
        """The frame that best shows the chosen plate: the session photo."""
        if result is not None:
            same = [(r, f) for r, f in self.reads if r.normalised == result.normalised]
            if same:
                return max(same, key=lambda rf: rf[0].confidence)[1]
        if self.reads:
            return self.reads[0][1]
        return self.first_frame


class EvidenceGatherer:
    """The vehicle being read on one lane, if any, and when its evidence is complete.

    With an arrival loop, frames count only while a vehicle waits on it, and a waiting
    vehicle with no read still ends in one no-read, once per arrival (later frames of it
    are still read: a read that comes later starts a new decision). Without one, frames
    with no read are passing scenery, except a watch-folder still with crops read: a
    camera triggered by a vehicle.
    """

    def __init__(
        self,
        *,
        consolidator_factory: ConsolidatorFactory,
        clock: Clock,
        read_window_s: float,
        uses_arrival: bool,
        is_whole: WholePlate,
        vanity_min_length: int = 0,
        min_confidence: float = 0.0,
        vanity_min_confidence: float = VANITY_MIN_CONFIDENCE,
    ) -> None:
        """``min_confidence``: this lane's floor for a whole read (the shared reader's may be lower);
        ``vanity_min_confidence`` its floor for a personalised one."""
        self._factory = consolidator_factory
        self.vanity_min_length = vanity_min_length
        self.vanity_min_confidence = vanity_min_confidence
        self.min_confidence = min_confidence
        self._clock = clock
        self.read_window_s = read_window_s
        self.uses_arrival = uses_arrival
        self.is_whole = is_whole
        self.vehicle: VehicleEvidence | None = None
        self._was_waiting = False
        self._no_plate_done = False

    def wait_s(self, cap: float = 0.5) -> float:
        """How long the worker may wait for the next frame before a read window needs closing."""
        if self.vehicle is None:
            return cap
        return min(cap, max(0.01, self.vehicle.deadline - self._clock.monotonic()))

    def take_expired(self) -> VehicleEvidence | None:
        """The vehicle whose read window is over (decide on what we have), else None."""
        if self.vehicle is not None and self._clock.monotonic() >= self.vehicle.deadline:
            return self._take()
        return None

    def arrival(self, waiting: bool) -> VehicleEvidence | None:
        """The arrival loop's state for this frame; the vehicle to finish now if nobody waits any more."""
        if waiting and not self._was_waiting:
            self._no_plate_done = False  # a new vehicle on the arrival loop
        self._was_waiting = waiting
        return None if waiting else self._take()

    def add(self, read: PlateRead | None, glimpses: tuple[Glimpse, ...], frame: Frame) -> VehicleEvidence | None:
        """One frame's read and probabilities; returns the vehicle when its evidence is complete."""
        snapshot = frame.path is not None  # a camera-triggered still: one file is one vehicle
        if self.vehicle is None:
            starts = read is not None or (
                self.uses_arrival and not self._no_plate_done
            ) or (snapshot and bool(glimpses))
            if not starts:
                return None
            now = self._clock.monotonic()
            self.vehicle = VehicleEvidence(
                self._factory(), deadline=now + self.read_window_s, started=now, is_whole=self.is_whole,
                vanity_min_length=self.vanity_min_length, min_confidence=self.min_confidence,
                vanity_min_confidence=self.vanity_min_confidence,
            )
        self.vehicle.add(read, glimpses, frame)
        if self.vehicle.consolidator.done or snapshot:
            return self._take()
        return None

    def finished(self, kind: str) -> None:
        """How the vehicle ended: after a no-read, the same arrival is not declared unread again."""
        if kind in ("no_read", "same_vehicle"):
            self._no_plate_done = True

    def _take(self) -> VehicleEvidence | None:
        vehicle, self.vehicle = self.vehicle, None
        return vehicle


@dataclass
class Recent:
    """A vehicle decided moments ago on this lane."""

    read: str                       # the whole read ('' when none)
    plate: str                      # the plate decided on ('' for a no-read)
    opened: bool
    reason: str
    last_seen: float
    photos: tuple[tuple[Glimpse, ...], ...] = ()
    guesses: tuple[str, ...] = ()
    session_id: int | None = None   # the session its decision started or matched


class SameVehicleHoldOff:
    """Recent vehicles per lane, for the same-vehicle hold-off (``lane.same_vehicle_s``)."""

    def __init__(self, *, window_s: float, clock: Clock, tell_apart: bool = False) -> None:
        """``tell_apart``: two reads one glyph apart may be two vehicles (:func:`told_apart`). Entry
        lanes only: taking one car for two there costs a stray session, while at an exit the second
        decision could open for the other plate's session."""
        self.window_s = window_s
        self._clock = clock
        self._tell_apart = tell_apart
        self._recent: list[Recent] = []

    def earlier(
        self, read: str, guesses: tuple[str, ...] = (), photos: tuple[tuple[Glimpse, ...], ...] = (),
    ) -> Recent | None:
        """The vehicle this camera read continues, if it was decided within the hold-off.

        The same plate (look-alikes cheap), unless (with ``tell_apart``) both vehicles' photos
        tell the two plates apart (:func:`told_apart`); or, for a read with no whole plate, the
        last vehicle that had none either and whose guesses share one (or neither has any): two
        unread cars in a row are two cars, each with its own no-read.
        """
        if self.window_s <= 0:
            return None
        now = self._clock.monotonic()
        self._recent = [r for r in self._recent if now - r.last_seen <= self.window_s]
        for recent in reversed(self._recent):
            near = [p for p in (recent.read, recent.plate) if p and plate_distance(read, p) <= SAME_PLATE_DISTANCE]
            apart = self._tell_apart and all(told_apart(read, photos, p, recent.photos) for p in near)
            if read and near and not apart:
                return recent
            if not read and not recent.read and _guesses_meet(guesses, recent.guesses):
                return recent
        return None

    def remember(
        self, *, read: str, plate: str, opened: bool, reason: str, photos: tuple[tuple[Glimpse, ...], ...],
        guesses: tuple[str, ...] = (), replaces: Recent | None = None, session_id: int | None = None,
    ) -> None:
        self.forget(replaces)
        merged = tuple(dict.fromkeys((*guesses, *(replaces.guesses if replaces is not None else ()))))
        self._recent.append(Recent(read, plate, opened, reason, self._clock.monotonic(), photos, merged, session_id))

    def forget(self, recent: Recent | None) -> None:
        """No longer the vehicle at this lane (e.g. it has left the lot since)."""
        if recent is not None and recent in self._recent:
            self._recent.remove(recent)

    def seen_again(self, recent: Recent, photos: tuple[tuple[Glimpse, ...], ...]) -> None:
        """The same vehicle again with no new decision: its window starts over, its evidence grows."""
        recent.last_seen = self._clock.monotonic()
        recent.photos = photos


def told_apart(
    a: str, photos_a: tuple[tuple[Glimpse, ...], ...], b: str, photos_b: tuple[tuple[Glimpse, ...], ...],
) -> bool:
    """Two different plates, each the clear reading of its own vehicle's photos: ``a``'s crops make
    ``a`` :data:`TOLD_APART_NATS` likelier than ``b`` (best crop each), and ``b``'s make ``b`` so.
    The same plate, or no evidence on either side, is never told apart."""
    if normalise_plate(a) == normalise_plate(b):
        return False
    return _preference(photos_a, a, b) >= TOLD_APART_NATS and _preference(photos_b, b, a) >= TOLD_APART_NATS


def _preference(photos: tuple[tuple[Glimpse, ...], ...], mine: str, other: str) -> float:
    """Nats by which the best crop for ``mine`` beats the best crop for ``other`` (0 with no crops)."""
    best = [-float("inf"), -float("inf")]
    for photo in photos:
        for glimpse in photo:
            scores = ctc_log_probs(glimpse.matrix, [mine, other])
            best = [max(best[0], float(scores[0])), max(best[1], float(scores[1]))]
    if best[0] == -float("inf"):
        return 0.0
    return best[0] - best[1]


#: Two no-reads meet on the very same guess of at least this many characters ...
MIN_SAME_GUESS = 3
#: ... or on two guesses of at least this many within :data:`SAME_PLATE_DISTANCE`: scraps of two
#: different blurred plates ("TS" and "T5", "S5" and "54") are one edit apart by chance, and taking
#: the second car for the first pooled its photo with the wrong car's (docs/anpr.md, stop 29).
MIN_MEETING_GUESS = 4


def _guesses_meet(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Two no-reads look like one vehicle: a guess in common (the same, or within one look-alike-cheap
    edit when both are plate-long), or none at all."""
    if not a and not b:
        return True
    return any(
        (x == y and len(x) >= MIN_SAME_GUESS)
        or (min(len(x), len(y)) >= MIN_MEETING_GUESS and plate_distance(x, y) <= SAME_PLATE_DISTANCE)
        for x in a for y in b
    )
