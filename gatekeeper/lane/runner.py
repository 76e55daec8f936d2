"""One lane at work: the worker loop that ties evidence, decision and actuation together.

The frame grabber keeps only the newest frame; this runner's own worker thread
takes frames with ``next_frame(after_seq)`` and runs OCR there, so a slow read
never makes frames queue up stale. Each frame goes through :meth:`LaneRunner.step`:
read it, add it to the vehicle's evidence (:mod:`.evidence`), and when a vehicle
is complete carry out its decision (:mod:`.sequence`: record, then barrier, then
display). Tests call ``step`` directly with a :class:`~.clock.FakeClock`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, is_dataclass
from typing import Any, Callable, Mapping

from gatekeeper.config import AnprConfig, LaneConfig, Settings, StorageConfig
from gatekeeper.hardware.display import make_display
from gatekeeper.lane.actuation import Actuator, GateEventRecorder
from gatekeeper.lane.clock import SystemClock
from gatekeeper.lane.evidence import (
    ENTRY_VANITY_MIN_CONFIDENCE,
    VANITY_MIN_CONFIDENCE,
    EvidenceGatherer,
    FrameReader,
    SameVehicleHoldOff,
    VehicleEvidence,
    whole_plate_check,
)
from gatekeeper.lane.outcome import LaneOutcome, VehicleListener, notify_all
from gatekeeper.lane.photos import PhotoKeeper
from gatekeeper.lane.ports import (
    Barrier,
    ChangeNotifier,
    Clock,
    Consolidator,
    ConsolidatorFactory,
    Display,
    Frame,
    FrameSource,
    GateListener,
    LaneStore,
    PlateRead,
    PlateReader,
    WholePlate,
)
from gatekeeper.lane.recorder import DecisionRecorder
from gatekeeper.lane.sequence import CloserLook, CloserRead, DecisionSequence, LaneCounters
from gatekeeper.rules import Policy, normalise_plate
from gatekeeper.store import StoreError

log = logging.getLogger(__name__)

#: The camera's latest frame is kept as the photo of an operator arrival only if this fresh.
OPERATOR_PHOTO_MAX_AGE_S = 10.0


class LaneRunner:
    """Runs one lane in a worker thread; ``arrive`` and ``open_manual`` serve the operator."""

    def __init__(
        self,
        *,
        lane: LaneConfig,
        store: LaneStore,
        reader: PlateReader,
        barrier: Barrier,
        grabber: FrameSource | None,
        consolidator_factory: ConsolidatorFactory,
        display: Display | None = None,
        region: str | None = None,
        is_whole: WholePlate | None = None,
        vanity_min_length: int = 0,
        min_confidence: float = 0.0,
        sure_confidence: float = 0.0,
        closer_look: bool = False,
        storage: StorageConfig | None = None,
        policy: Policy = Policy(),
        upload_photos: bool = False,
        reader_lock: threading.Lock | None = None,
        decision_lock: threading.RLock | None = None,
        on_change: ChangeNotifier | None = None,
        clock: Clock | None = None,
        after_read: Callable[[], object] | None = None,
    ) -> None:
        self.lane = lane
        self.closer_look = closer_look
        self.sure_confidence = sure_confidence
        self.store = store
        self.barrier = barrier
        self.grabber = grabber
        self.display: Display = display or make_display(lane.display, lane=lane.id)
        self.clock: Clock = clock or SystemClock()
        self.on_change = on_change
        self.counters = LaneCounters()
        self._vehicle_listeners: list[VehicleListener] = []
        self.frame_reader = FrameReader(
            lane_id=lane.id, reader=reader, lock=reader_lock or threading.Lock(), region=region, roi=lane.roi,
            on_error=self.counters.error, beat=self._beat, after_read=after_read,
        )
        whole = is_whole or whole_plate_check(region or "eu")
        self.evidence = EvidenceGatherer(
            consolidator_factory=consolidator_factory, clock=self.clock,
            read_window_s=lane.read_window_s, uses_arrival=lane.arrival_pin is not None,
            is_whole=whole, vanity_min_length=vanity_min_length, min_confidence=min_confidence,
            vanity_min_confidence=lane_vanity_min_confidence(lane.direction),
        )
        self.recorder = DecisionRecorder(
            lane_id=lane.id, direction=lane.direction, store=store, clock=self.clock,
            policy=policy, upload_photos=upload_photos, is_whole=whole,
        )
        self.actuator = Actuator(
            lane_id=lane.id, barrier=barrier, display=self.display, no_read_text=lane.no_read_message
        )
        self.sequence = DecisionSequence(
            lane_id=lane.id,
            recorder=self.recorder,
            actuator=self.actuator,
            photos=PhotoKeeper(lane_id=lane.id, storage=storage or StorageConfig(), store=store, clock=self.clock),
            hold_off=SameVehicleHoldOff(window_s=lane.same_vehicle_s, clock=self.clock,
                                         tell_apart=lane.direction == "entry"),
            clock=self.clock,
            counters=self.counters,
            wake=self._wake,
            decision_lock=decision_lock or threading.RLock(),
        )
        self.gate_events = GateEventRecorder(lane_id=lane.id, store=store, clock=self.clock, wake=self._wake)
        self.gate_events.attach(barrier)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._after = -1
        self._heartbeat = self.clock.monotonic()

    @classmethod
    def from_settings(cls, settings: Settings, lane: LaneConfig, **parts: Any) -> "LaneRunner":
        """The runner for ``lane`` with the lot's grammar, policy and storage from ``settings``.

        ``parts`` are the collaborators, passed on as keywords of :meth:`__init__` (store,
        reader, barrier, grabber, consolidator_factory, display, locks, on_change, clock).
        """
        parts["consolidator_factory"] = parts.get("consolidator_factory") or default_consolidator_factory(settings.anpr)
        return cls(
            lane=lane,
            region=settings.anpr.region,
            is_whole=whole_plate_check(settings.anpr.region, settings.anpr.formats),
            vanity_min_length=settings.anpr.vanity_min_length,
            min_confidence=lane_min_confidence(settings.anpr, lane.direction),
            sure_confidence=settings.anpr.min_confidence,
            closer_look=settings.anpr.closer_look,
            storage=settings.storage,
            policy=policy_from_settings(settings),
            upload_photos=settings.cloud.enabled,
            **parts,
        )


    @property
    def id(self) -> str:
        return self.lane.id

    @property
    def policy(self) -> Policy:
        return self.recorder.policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        """The daemon replaces it on a configuration reload."""
        self.recorder.policy = policy

    def start(self) -> None:
        if self.grabber is not None:
            self.grabber.start()
        self._beat()
        self._thread = threading.Thread(target=self._run, name=f"lane-{self.id}", daemon=True)
        self._thread.start()
        log.info("lane %s (%s) running: camera %s", self.id, self.lane.direction, self.lane.camera)

    def request_stop(self) -> None:
        """Stop taking frames after the current one (returns at once)."""
        self._stop.set()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop reading frames; a decision being carried out is finished first. True if the worker ended."""
        self._stop.set()
        ended = True
        if self._thread is not None:
            self._thread.join(timeout)
            ended = not self._thread.is_alive()
            if not ended:
                log.error("lane %s: worker did not stop within %.0f s", self.id, timeout)
        if self.grabber is not None:
            try:
                self.grabber.close()
            except Exception:
                log.exception("lane %s: closing the camera failed", self.id)
        return ended

    def leave_safe(self, timeout: float = 20.0) -> bool:
        """Before the process exits: wait (bounded) for the barrier to be down, then release the pins."""
        return self.actuator.leave_safe(timeout)


    @property
    def heartbeat_age_s(self) -> float:
        return self.clock.monotonic() - self._heartbeat

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def healthy(self, stall_s: float) -> bool:
        """The worker is alive and went round its loop within ``stall_s``."""
        return self.running and self.heartbeat_age_s < stall_s

    @property
    def last_outcome(self) -> LaneOutcome | None:
        return self.sequence.last

    @property
    def reads(self) -> int:
        return self.frame_reader.reads

    def status(self) -> dict[str, object]:
        """What ``gatekeeper status`` shows for this lane."""
        return lane_status(self)

    def add_vehicle_listener(self, listener: VehicleListener) -> None:
        """Call ``listener(kind, outcome)`` after each vehicle the camera saw.

        ``kind`` is "decided" (with the outcome), "same_vehicle" (hold-off: no
        new decision), "no_read" (nothing usable read: a no_read event), or "error"; operator arrivals report "decided",
        manual and remote opens "open_manual" / "open_remote" (outcome None);
        "not_waiting" for a frame skipped because nobody is on the arrival loop.
        """
        self._vehicle_listeners.append(listener)

    def add_gate_listener(self, listener: GateListener) -> None:
        """Also tell ``listener`` about every gate event (the simulator drives the safety loop with it)."""
        self.gate_events.listeners.append(listener)


    def arrive(self, plate: str, *, by: str) -> LaneOutcome:
        """The intercom fallback: an operator typed the plate; the same rules as a camera read apply."""
        if not normalise_plate(plate):
            raise ValueError(f"{plate!r} is not a plate (no letters or digits)")
        frame = self.grabber.latest() if self.grabber is not None else None
        if frame is not None and (self.clock.now() - frame.at).total_seconds() > OPERATOR_PHOTO_MAX_AGE_S:
            frame = None  # the camera's last view is not this vehicle
        outcome = self.sequence.carry_out(plate_read=plate, confidence=None, frame=frame, source="operator", by=by)
        assert outcome is not None  # operator reads are never suppressed
        self._notify("decided", outcome)
        return outcome

    def open_manual(self, *, reason: str, by: str, remote: bool = False) -> str:
        """Open by hand (technician) or from the cloud: recorded with who and why, durably, before the relay moves."""
        if not reason.strip():
            raise ValueError("an open needs a reason")
        kind = "open_remote" if remote else "open_manual"
        event_id = self.sequence.open_manual(kind=kind, reason=reason, by=by)
        log.info("lane %s: %s by %s (%s)", self.id, kind, by, reason)
        self._notify(kind, None)
        return event_id


    def _beat(self) -> None:
        self._heartbeat = self.clock.monotonic()

    def _run(self) -> None:
        if self.grabber is None:
            # Operator-only lane (no camera): stay alive for the watchdog.
            while not self._stop.wait(0.5):
                self._beat()
            return
        while not self._stop.is_set():
            self._beat()
            try:
                frame = self.grabber.next_frame(self._after, timeout=self.evidence.wait_s())
            except Exception as exc:
                self.counters.error(f"camera: {exc}")
                log.exception("lane %s: taking a frame failed", self.id)
                self._stop.wait(0.5)
                continue
            self.step(frame)

    def step(self, frame: Frame | None) -> None:
        """One turn of the worker: close an expired read window, then read and weigh ``frame`` (if any)."""
        self._beat()
        if frame is not None:
            self._after = frame.seq
            self.counters.frames += 1
        expired = self.evidence.take_expired()
        if expired is not None:
            self.evidence.finished(self._finish(expired))  # read window over: decide on what we have
        if frame is None:
            return
        if self.evidence.uses_arrival:
            waiting = bool(self.actuator.vehicle_waiting())
            left = self.evidence.arrival(waiting)
            if not waiting:
                if left is not None:
                    self.evidence.finished(self._finish(left))
                self._notify("not_waiting", None)
                return  # nobody waiting: frames are not read
        read, glimpses = self.frame_reader.read(frame)
        self._beat()
        complete = self.evidence.add(read, glimpses, frame)
        if complete is not None:
            self.evidence.finished(self._finish(complete))

    def _sure(self, read: PlateRead) -> bool:
        """Sure enough for a privilege: above the sure floor, and a personalised read above the
        exit's floor for one (an entry takes less sure ones, as a visitor's)."""
        return read.confidence >= self.sure_confidence and (
            self.evidence.is_whole(read.normalised) or read.confidence >= VANITY_MIN_CONFIDENCE)

    def _finish(self, vehicle: VehicleEvidence) -> str:
        """The vehicle's whole read and probabilities -> one decision, carried out (or a no-read)."""
        try:
            result = vehicle.result()
        except Exception as exc:
            self.counters.error(f"consolidation: {exc}")
            log.exception("lane %s: consolidating reads failed", self.id)
            return "error"
        if vehicle.empty and not self.evidence.uses_arrival:
            return "none"
        try:
            frame = vehicle.frame_for(result)
            outcome = self.sequence.carry_out(
                plate_read=result.text if result else "",
                confidence=float(result.confidence) if result else None,
                sure=result is None or self._sure(result),
                frame=frame,
                source="camera",
                by="camera",
                photos=vehicle.photos,
                guesses=vehicle.guesses(),
                closer_look=self._closer_look_at(frame),
                closer_read=self._closer_read_at(frame),
            )
        except StoreError as exc:
            # Refused or the disk is full: the sequence already logged it (one line, no traceback),
            # kept the barrier shut and told the driver to see the attendant.
            self.counters.error(f"decision: {exc}")
            self._notify("error", None)
            return "error"
        except Exception as exc:
            self.counters.error(f"decision: {exc}")
            log.exception("lane %s: carrying out the decision failed", self.id)
            self._notify("error", None)
            return "error"
        kind = "same_vehicle" if outcome is None else "no_read" if outcome.reason == "no_read" else "decided"
        self._notify(kind, outcome)
        return kind

    def _closer_look_at(self, frame: Frame | None) -> CloserLook | None:
        """At an exit: the frame's plate box read again deblurred, for the sequence to ask for only
        before it leaves a vehicle to the attendant (docs/anpr.md, "Closer look")."""
        if not self.closer_look or self.lane.direction != "exit" or frame is None:
            return None
        return lambda: self.frame_reader.closer_look(frame)

    def _closer_read_at(self, frame: Frame | None) -> CloserRead | None:
        """At an entry: the frame's plate box read again deblurred, for the sequence to ask for only
        before it leaves an unread vehicle to the attendant (docs/anpr.md, "The entry's closer read")."""
        if not self.closer_look or self.lane.direction != "entry" or frame is None:
            return None
        return lambda: self.frame_reader.closer_read(frame)

    def _notify(self, kind: str, outcome: LaneOutcome | None) -> None:
        notify_all(self._vehicle_listeners, kind, outcome, lane=self.id)

    def _wake(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                log.exception("lane %s: waking the sync failed", self.id)


# --------------------------------------------------------------------------- helpers


def lane_status(runner: "LaneRunner") -> dict[str, object]:
    camera: dict[str, object] | None = None
    if runner.grabber is not None:
        try:
            camera = _as_dict(runner.grabber.health())
        except Exception as exc:
            camera = {"connected": False, "last_error": f"health unavailable: {exc}"}
    last = runner.sequence.last
    return {
        "id": runner.id,
        "direction": runner.lane.direction,
        "gate": runner.actuator.gate_state,
        "vehicle_waiting": runner.actuator.vehicle_waiting(),
        "safety_active": runner.actuator.safety_active(),
        "camera": camera,
        "last_decision": last.summary() if last else None,
        "last": last.as_dict() if last else None,
        "display": runner.display.last,
        "frames": runner.counters.frames,
        "reads": runner.reads,
        "decisions": runner.counters.decisions,
        "errors": runner.counters.errors,
        "last_error": runner.counters.last_error,
        "heartbeat_age_s": round(runner.heartbeat_age_s, 3),
        "running": runner.running,
    }


def policy_from_settings(settings: Settings) -> Policy:
    return Policy(
        anti_passback=settings.rules.anti_passback,
        match_max_distance=settings.rules.match_max_distance,
        thresholds=settings.anpr.match_thresholds,
    )


def lane_min_confidence(anpr: AnprConfig, direction: str) -> float:
    """The floor of a whole read on a lane of ``direction``: an entry takes unsure reads (docs/anpr.md)."""
    return anpr.entry_min_confidence if direction == "entry" else anpr.min_confidence


def lane_vanity_min_confidence(direction: str) -> float:
    """The floor of a personalised read on a lane of ``direction``: an entry takes less sure ones, as a
    visitor's (docs/anpr.md, stop 30)."""
    return ENTRY_VANITY_MIN_CONFIDENCE if direction == "entry" else VANITY_MIN_CONFIDENCE


def default_consolidator_factory(anpr: AnprConfig) -> ConsolidatorFactory:
    """PlateConsolidator from the reader with the configured thresholds."""
    from gatekeeper.vision.reader import PlateConsolidator

    def make() -> Consolidator:
        return PlateConsolidator(accept_confidence=anpr.accept_confidence, max_frames=anpr.max_frames)

    return make


def _as_dict(health: object) -> dict[str, object]:
    if is_dataclass(health) and not isinstance(health, type):
        return asdict(health)
    if isinstance(health, Mapping):
        return dict(health)
    raise TypeError(f"camera health of type {type(health).__name__} is not a record")
