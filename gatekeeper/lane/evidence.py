"""Gathering the evidence for one vehicle: frames -> reads -> one consolidated plate.

The worker hands each frame and its read to :class:`EvidenceGatherer`; it says
when a vehicle's evidence is complete (the consolidator is sure, the read window
ran out, a watch-folder still arrived, or the arrival loop emptied). Time comes
from the injected clock, so a test moves the read window with ``FakeClock``.

:class:`SameVehicleHoldOff` remembers recent decisions so a vehicle read again
moments later is not decided twice.

Where the next steps go (issue 11): evidence that accumulates as probabilities
while the vehicle waits belongs in :class:`VehicleEvidence` (keep per-frame
recogniser outputs beside ``reads``) and in :meth:`EvidenceGatherer.add` (when a
vehicle is complete); a same-vehicle photo adding evidence instead of being
dropped belongs in :class:`SameVehicleHoldOff`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

from gatekeeper.lane.ports import Clock, Consolidator, ConsolidatorFactory, Frame, PlateRead, PlateReader
from gatekeeper.rules import Decision, plate_distance

log = logging.getLogger(__name__)

#: A camera read this close to an earlier plate (look-alikes count a quarter) is the same plate.
SAME_PLATE_DISTANCE = 1.0


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
    ) -> None:
        self.lane_id = lane_id
        self.reader = reader
        self.lock = lock
        self.region = region
        self.roi = roi
        self.on_error = on_error
        self.beat = beat
        self.reads = 0

    def read(self, frame: Frame) -> PlateRead | None:
        try:
            with self.lock:
                self.beat()
                read = self.reader.read(frame.image, region=self.region, roi=self.roi)
        except Exception as exc:
            self.on_error(f"reader: {exc}")
            log.exception("lane %s: reading frame %s failed; skipping it", self.lane_id, frame.seq)
            return None
        if read is not None:
            self.reads += 1
            log.debug("lane %s frame %s: %s (%.2f)", self.lane_id, frame.seq, read.text, read.confidence)
        return read


@dataclass
class VehicleEvidence:
    """One vehicle being read over several frames."""

    consolidator: Consolidator
    deadline: float
    started: float
    reads: list[tuple[PlateRead, Frame]] = field(default_factory=list)
    first_frame: Frame | None = None

    def add(self, read: PlateRead | None, frame: Frame) -> None:
        self.consolidator.add(read)
        if self.first_frame is None:
            self.first_frame = frame
        if read is not None:
            self.reads.append((read, frame))

    def result(self) -> PlateRead | None:
        return self.consolidator.result()

    def frame_for(self, result: PlateRead | None) -> Frame | None:
        """The frame that best shows the chosen plate: the session photo."""
        if result is not None:
            same = [(r, f) for r, f in self.reads if r.normalised == result.normalised]
            if same:
                return max(same, key=lambda rf: rf[0].confidence)[1]
        return self.reads[0][1] if self.reads else self.first_frame


class EvidenceGatherer:
    """The vehicle being read on one lane, if any, and when its evidence is complete.

    With an arrival loop, frames count only while a vehicle waits on it, and a
    waiting vehicle with no read still ends in a (no-plate) decision, once per
    arrival; without one, frames with no read are passing scenery.
    """

    def __init__(
        self, *, consolidator_factory: ConsolidatorFactory, clock: Clock, read_window_s: float, uses_arrival: bool
    ) -> None:
        self._factory = consolidator_factory
        self._clock = clock
        self.read_window_s = read_window_s
        self.uses_arrival = uses_arrival
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

    def add(self, read: PlateRead | None, frame: Frame) -> VehicleEvidence | None:
        """One frame's read; returns the vehicle when its evidence is complete."""
        if self.vehicle is None:
            if read is None and (not self.uses_arrival or self._no_plate_done):
                return None
            now = self._clock.monotonic()
            self.vehicle = VehicleEvidence(self._factory(), deadline=now + self.read_window_s, started=now)
        self.vehicle.add(read, frame)
        snapshot = frame.path is not None  # a camera-triggered still: one file is one vehicle
        if self.vehicle.consolidator.done or snapshot:
            return self._take()
        return None

    def finished(self, kind: str) -> None:
        """How the vehicle ended: after a no-plate decision, the same arrival is not decided again."""
        if kind == "no_plate":
            self._no_plate_done = True

    def _take(self) -> VehicleEvidence | None:
        vehicle, self.vehicle = self.vehicle, None
        return vehicle


@dataclass
class _Recent:
    plate: str
    opened: bool
    last_seen: float


class SameVehicleHoldOff:
    """The last decision per plate on this lane, for the same-vehicle hold-off (``lane.same_vehicle_s``)."""

    def __init__(self, *, window_s: float, clock: Clock) -> None:
        self.window_s = window_s
        self._clock = clock
        self._recent: dict[str, _Recent] = {}

    def suppresses(self, plate: str, decision: Decision) -> bool:
        """A camera read of a plate decided moments ago is that vehicle again, not a new one.

        Suppressed unless its situation changed so that it may now pass (it
        was refused, then paid while waiting): that one opens.
        """
        if not plate or self.window_s <= 0:
            return False
        now = self._clock.monotonic()
        for key in [k for k, r in self._recent.items() if now - r.last_seen > self.window_s]:
            del self._recent[key]
        for recent in self._recent.values():
            if plate_distance(plate, recent.plate) <= SAME_PLATE_DISTANCE:
                if recent.opened or not decision.open:
                    recent.last_seen = now
                    return True
        return False

    def remember(self, plate: str, *, opened: bool) -> None:
        if plate:
            self._recent[plate] = _Recent(plate, opened, self._clock.monotonic())
