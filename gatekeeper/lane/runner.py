"""One lane at work: frames -> plate -> rules -> durable record -> barrier -> display.

The frame grabber (camera.py) keeps only the newest frame; this runner's own
worker thread takes frames with ``next_frame(after_seq)`` and runs OCR there,
so a slow read never makes frames queue up stale.

Order of a decision, always: (1) ``store.record_decision`` commits the session
change, the event and the outbox row; (2) the barrier opens; (3) the display
shows the message. A crash between (1) and (2) leaves a recorded decision and a
closed barrier (the driver asks the intercom), never an open barrier nobody
can account for.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

import numpy as np

from gatekeeper.config import AnprConfig, LaneConfig, Settings, StorageConfig
from gatekeeper.hardware.display import LaneDisplay, make_display
from gatekeeper.rules import (
    Decision,
    Policy,
    decide_entry,
    decide_exit,
    normalise_plate,
    plate_distance,
)
from gatekeeper.store import Recorded, Store, StoreError

log = logging.getLogger(__name__)

#: A camera read this close to an earlier plate (look-alikes count a quarter) is the same plate.
SAME_PLATE_DISTANCE = 1.0
#: The camera's latest frame is kept as the photo of an operator arrival only if this fresh.
OPERATOR_PHOTO_MAX_AGE_S = 10.0
#: How often the disk-low alarm may repeat.
DISK_ALARM_EVERY_S = 600.0


# --------------------------------------------------------------------------- what the runner needs


class FrameLike(Protocol):
    image: np.ndarray
    lane: str
    at: datetime
    seq: int
    source: str
    path: Path | None


class GrabberLike(Protocol):
    def start(self) -> None: ...
    def next_frame(self, after_seq: int = -1, timeout: float | None = None) -> FrameLike | None: ...
    def latest(self) -> FrameLike | None: ...
    def health(self) -> Any: ...
    def close(self) -> None: ...


class PlateReadLike(Protocol):
    text: str
    normalised: str
    confidence: float


class ReaderLike(Protocol):
    def read(
        self, image: np.ndarray, *, region: str | None = None, roi: tuple[int, int, int, int] | None = None
    ) -> PlateReadLike | None: ...


class ConsolidatorLike(Protocol):
    def add(self, read: PlateReadLike | None) -> None: ...
    @property
    def done(self) -> bool: ...
    def result(self) -> PlateReadLike | None: ...


class BarrierLike(Protocol):
    @property
    def state(self) -> Any: ...
    @property
    def vehicle_waiting(self) -> bool: ...
    def open(self, *, reason: str, by: str) -> None: ...
    def wait_for_state(self, state: Any, timeout: float | None = None) -> bool: ...
    def close(self) -> None: ...


ConsolidatorFactory = Callable[[], ConsolidatorLike]
Source = Literal["camera", "operator"]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class LaneOutcome:
    """What the lane did for one vehicle: for ``gatekeeper status`` and the control socket."""

    lane: str
    direction: str
    at: str
    plate: str
    plate_read: str
    confidence: float | None
    open: bool
    reason: str
    message: str
    fee_due: int
    session_id: int | None
    event_id: str | None
    source: str
    photo: str | None

    def summary(self) -> str:
        verdict = "opened" if self.open else "stayed shut"
        plate = self.plate or "(no plate)"
        return f"{plate} {verdict}: {self.message} [{self.reason}] at {self.at}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Recent:
    """The last decision for a plate on this lane, for the same-vehicle hold-off."""

    plate: str
    opened: bool
    last_seen: float


@dataclass
class _Vehicle:
    """One vehicle being read over several frames."""

    consolidator: ConsolidatorLike
    deadline: float
    started: float
    reads: list[tuple[PlateReadLike, FrameLike]] = field(default_factory=list)
    first_frame: FrameLike | None = None

    def add(self, read: PlateReadLike | None, frame: FrameLike) -> None:
        self.consolidator.add(read)
        if self.first_frame is None:
            self.first_frame = frame
        if read is not None:
            self.reads.append((read, frame))

    def frame_for(self, result: PlateReadLike | None) -> FrameLike | None:
        """The frame that best shows the chosen plate: the session photo."""
        if result is not None:
            same = [(r, f) for r, f in self.reads if r.normalised == result.normalised]
            if same:
                return max(same, key=lambda rf: rf[0].confidence)[1]
        return self.reads[0][1] if self.reads else self.first_frame


# --------------------------------------------------------------------------- the runner


class LaneRunner:
    """Runs one lane in a worker thread; ``arrive`` and ``open_manual`` serve the operator."""

    def __init__(
        self,
        *,
        lane: LaneConfig,
        store: Store,
        reader: ReaderLike,
        barrier: BarrierLike,
        grabber: GrabberLike | None,
        consolidator_factory: ConsolidatorFactory,
        display: LaneDisplay | None = None,
        region: str | None = None,
        storage: StorageConfig | None = None,
        policy: Policy = Policy(),
        upload_photos: bool = False,
        reader_lock: threading.Lock | None = None,
        decision_lock: threading.RLock | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.lane = lane
        self.store = store
        self.reader = reader
        self.barrier = barrier
        self.grabber = grabber
        self.consolidator_factory = consolidator_factory
        self.display: LaneDisplay = display or make_display(lane.display, lane=lane.id)
        self.region = region
        self.storage = storage or StorageConfig()
        self.policy = policy
        self.upload_photos = upload_photos
        self.reader_lock = reader_lock or threading.Lock()
        self.decision_lock = decision_lock or threading.RLock()
        self.on_change = on_change
        self._gate_listeners: list[Callable[[Any], None]] = []
        self._vehicle_listeners: list[Callable[[str, LaneOutcome | None], None]] = []
        self._recent: dict[str, _Recent] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._heartbeat = time.monotonic()
        self._last: LaneOutcome | None = None
        self._last_disk_alarm = -DISK_ALARM_EVERY_S
        self.frames = 0
        self.reads = 0
        self.decisions = 0
        self.errors = 0
        self.last_error: str | None = None
        self._attach_barrier()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        lane: LaneConfig,
        *,
        store: Store,
        reader: ReaderLike,
        barrier: BarrierLike,
        grabber: GrabberLike | None,
        consolidator_factory: ConsolidatorFactory | None = None,
        reader_lock: threading.Lock | None = None,
        decision_lock: threading.RLock | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> "LaneRunner":
        return cls(
            lane=lane,
            store=store,
            reader=reader,
            barrier=barrier,
            grabber=grabber,
            consolidator_factory=consolidator_factory or default_consolidator_factory(settings.anpr),
            region=settings.anpr.region,
            storage=settings.storage,
            policy=policy_from_settings(settings),
            upload_photos=settings.cloud.enabled,
            reader_lock=reader_lock,
            decision_lock=decision_lock,
            on_change=on_change,
        )

    # -- lifecycle ---------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.lane.id

    def start(self) -> None:
        if self.grabber is not None:
            self.grabber.start()
        self._heartbeat = time.monotonic()
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
        """Before the process exits: wait (bounded) for the barrier to be down, then release the pins.

        The barrier itself never closes on a vehicle; here we only give an open
        barrier the chance to finish its cycle so a hold-mode relay is not
        released under a car. Returns True when the barrier was closed.
        """
        closed = _state_name(self.barrier.state) == "closed"
        if not closed:
            log.info("lane %s: waiting up to %.0f s for the barrier to close before exit", self.id, timeout)
            closed = bool(self.barrier.wait_for_state("closed", timeout))
            if not closed:
                log.warning("lane %s: barrier still %s at exit", self.id, _state_name(self.barrier.state))
        try:
            self.barrier.close()
        except Exception:
            log.exception("lane %s: releasing the barrier pins failed", self.id)
        return closed

    # -- health and status ---------------------------------------------------------

    @property
    def heartbeat_age_s(self) -> float:
        return time.monotonic() - self._heartbeat

    def healthy(self, stall_s: float) -> bool:
        """The worker is alive and went round its loop within ``stall_s``."""
        alive = self._thread is not None and self._thread.is_alive()
        return alive and self.heartbeat_age_s < stall_s

    @property
    def last_outcome(self) -> LaneOutcome | None:
        return self._last

    def status(self) -> dict[str, Any]:
        camera: dict[str, Any] | None = None
        if self.grabber is not None:
            try:
                health = self.grabber.health()
                camera = asdict(health) if is_dataclass(health) else dict(health)
            except Exception as exc:
                camera = {"connected": False, "last_error": f"health unavailable: {exc}"}
        return {
            "id": self.id,
            "direction": self.lane.direction,
            "gate": _state_name(self.barrier.state),
            "vehicle_waiting": _safe_bool(lambda: self.barrier.vehicle_waiting),
            "safety_active": _safe_bool(lambda: getattr(self.barrier, "safety_active")),
            "camera": camera,
            "last_decision": self._last.summary() if self._last else None,
            "last": self._last.as_dict() if self._last else None,
            "display": self.display.last,
            "frames": self.frames,
            "reads": self.reads,
            "decisions": self.decisions,
            "errors": self.errors,
            "last_error": self.last_error,
            "heartbeat_age_s": round(self.heartbeat_age_s, 3),
            "running": self._thread is not None and self._thread.is_alive(),
        }

    def add_vehicle_listener(self, listener: Callable[[str, "LaneOutcome | None"], None]) -> None:
        """Call ``listener(kind, outcome)`` after each vehicle the camera saw.

        ``kind`` is "decided" (with the outcome), "same_vehicle" (hold-off: no
        new decision), "no_plate", or "error"; operator arrivals report "decided",
        manual and remote opens "open_manual" / "open_remote" (outcome None);
        "not_waiting" for a frame skipped because nobody is on the arrival loop.
        """
        self._vehicle_listeners.append(listener)

    def add_gate_listener(self, listener: Callable[[Any], None]) -> None:
        """Also tell ``listener`` about every gate event (the simulator drives the safety loop with it)."""
        self._gate_listeners.append(listener)

    # -- operator actions ------------------------------------------------------------

    def arrive(self, plate: str, *, by: str) -> LaneOutcome:
        """The intercom fallback: an operator typed the plate; the same rules as a camera read apply."""
        if not normalise_plate(plate):
            raise ValueError(f"{plate!r} is not a plate (no letters or digits)")
        frame = self.grabber.latest() if self.grabber is not None else None
        if frame is not None and (datetime.now(frame.at.tzinfo) - frame.at).total_seconds() > OPERATOR_PHOTO_MAX_AGE_S:
            frame = None  # the camera's last view is not this vehicle
        outcome = self._decide_and_act(
            plate_read=plate, confidence=None, frame=frame, source="operator", by=by
        )
        assert outcome is not None  # operator reads are never suppressed
        self._notify("decided", outcome)
        return outcome

    def open_manual(self, *, reason: str, by: str, remote: bool = False) -> str:
        """Open by hand (technician) or from the cloud: recorded with who and why, durably, before the relay moves."""
        if not reason.strip():
            raise ValueError("an open needs a reason")
        kind = "open_remote" if remote else "open_manual"
        with self.decision_lock:
            event_id = self.store.record_event(
                kind,
                lane=self.id,
                reason=kind,
                message=f"opened by {by}: {reason}",
                data={"by": by, "why": reason, "direction": self.lane.direction},
            )
            self._wake()
            self.barrier.open(reason=reason, by=by)
        self.display.show("Please drive through", kind=kind)
        log.info("lane %s: %s by %s (%s)", self.id, kind, by, reason)
        self._notify(kind, None)
        return event_id

    # -- the worker ---------------------------------------------------------------------

    def _beat(self) -> None:
        self._heartbeat = time.monotonic()

    @property
    def _uses_arrival(self) -> bool:
        return self.lane.arrival_pin is not None

    def _run(self) -> None:
        if self.grabber is None:
            # Operator-only lane (no camera): stay alive for the watchdog.
            while not self._stop.wait(0.5):
                self._beat()
            return
        after = -1
        vehicle: _Vehicle | None = None
        was_waiting = False
        no_plate_done = False
        while not self._stop.is_set():
            self._beat()
            wait = 0.5 if vehicle is None else min(0.5, max(0.01, vehicle.deadline - time.monotonic()))
            try:
                frame = self.grabber.next_frame(after, timeout=wait)
            except Exception as exc:
                self._count_error(f"camera: {exc}")
                log.exception("lane %s: taking a frame failed", self.id)
                self._stop.wait(0.5)
                continue
            self._beat()
            if frame is not None:
                after = frame.seq
                self.frames += 1
            if vehicle is not None and time.monotonic() >= vehicle.deadline:
                self._finish(vehicle)  # read window over: decide on what we have
                vehicle = None
            if frame is None:
                continue
            if self._uses_arrival:
                waiting = _safe_bool(lambda: self.barrier.vehicle_waiting)
                if waiting and not was_waiting:
                    no_plate_done = False  # a new vehicle on the arrival loop
                was_waiting = waiting
                if not waiting:
                    if vehicle is not None:
                        self._finish(vehicle)
                        vehicle = None
                    self._notify("not_waiting", None)
                    continue  # nobody waiting: frames are not read
            read = self._read(frame)
            self._beat()
            if vehicle is None:
                if read is None and (not self._uses_arrival or no_plate_done):
                    continue
                now = time.monotonic()
                vehicle = _Vehicle(self.consolidator_factory(), deadline=now + self.lane.read_window_s, started=now)
            vehicle.add(read, frame)
            snapshot = frame.path is not None  # a camera-triggered still: one file is one vehicle
            if vehicle.consolidator.done or snapshot:
                if self._finish(vehicle) == "no_plate":
                    no_plate_done = True
                vehicle = None

    def _read(self, frame: FrameLike) -> PlateReadLike | None:
        try:
            with self.reader_lock:
                self._beat()
                read = self.reader.read(frame.image, region=self.region, roi=self.lane.roi)
        except Exception as exc:
            self._count_error(f"reader: {exc}")
            log.exception("lane %s: reading frame %s failed; skipping it", self.id, frame.seq)
            return None
        if read is not None:
            self.reads += 1
            log.debug("lane %s frame %s: %s (%.2f)", self.id, frame.seq, read.text, read.confidence)
        return read

    def _finish(self, vehicle: _Vehicle) -> str:
        """Consolidate the vehicle's reads into one decision and carry it out."""
        try:
            result = vehicle.consolidator.result()
        except Exception as exc:
            self._count_error(f"consolidation: {exc}")
            log.exception("lane %s: consolidating reads failed", self.id)
            return "error"
        if result is None and not self._uses_arrival:
            return "none"
        try:
            outcome = self._decide_and_act(
                plate_read=result.text if result else "",
                confidence=float(result.confidence) if result else None,
                frame=vehicle.frame_for(result),
                source="camera",
                by="camera",
            )
        except Exception as exc:
            self._count_error(f"decision: {exc}")
            log.exception("lane %s: carrying out the decision failed", self.id)
            self._notify("error", None)
            return "error"
        kind = "same_vehicle" if outcome is None else "no_plate" if not outcome.plate else "decided"
        self._notify(kind, outcome)
        return kind

    def _notify(self, kind: str, outcome: LaneOutcome | None) -> None:
        for listener in list(self._vehicle_listeners):
            try:
                listener(kind, outcome)
            except Exception:
                log.exception("lane %s: vehicle listener failed", self.id)

    def _count_error(self, text: str) -> None:
        self.errors += 1
        self.last_error = text

    # -- deciding ----------------------------------------------------------------------

    def _decide(self, plate: str) -> Decision:
        now = self.store.clock()
        if self.lane.direction == "entry":
            return decide_entry(
                plate,
                now=now,
                lot=self.store.lot_state(),
                lists=self.store.list_entries(),
                reservations=self.store.reservations(),
                policy=self.policy,
            )
        return decide_exit(
            plate,
            now=now,
            sessions=self.store.inside_sessions(),
            tariff=self.store.tariff(),
            lists=self.store.list_entries(),
            policy=self.policy,
        )

    def _same_vehicle(self, plate: str, decision: Decision) -> bool:
        """A camera read of a plate decided moments ago is that vehicle again, not a new one.

        Suppressed unless its situation changed so that it may now pass (it
        was refused, then paid while waiting): that one opens.
        """
        if not plate or self.lane.same_vehicle_s <= 0:
            return False
        now = time.monotonic()
        for key in [k for k, r in self._recent.items() if now - r.last_seen > self.lane.same_vehicle_s]:
            del self._recent[key]
        for recent in self._recent.values():
            if plate_distance(plate, recent.plate) <= SAME_PLATE_DISTANCE:
                if recent.opened or not decision.open:
                    recent.last_seen = now
                    return True
        return False

    def _decide_and_act(
        self,
        *,
        plate_read: str,
        confidence: float | None,
        frame: FrameLike | None,
        source: Source,
        by: str,
    ) -> LaneOutcome | None:
        plate = normalise_plate(plate_read)
        with self.decision_lock:
            decision = self._decide(plate)
            if source == "camera" and self._same_vehicle(plate, decision):
                log.debug("lane %s: %s again within %.0f s: same vehicle", self.id, plate, self.lane.same_vehicle_s)
                return None
            photo = self._keep_photo(frame) if frame is not None else None
            try:
                recorded = self.store.record_decision(
                    decision,
                    lane=self.id,
                    direction=self.lane.direction,
                    plate_read=plate_read,
                    confidence=confidence,
                    photo=photo,
                    source=source,
                    upload=self.upload_photos and photo is not None,
                    data=None if source == "camera" else {"by": by},
                )
            except StoreError as exc:
                # e.g. the session was closed by another lane a moment ago: refuse, say why.
                log.error("lane %s: decision for %s not recorded: %s", self.id, plate, exc)
                self._count_error(f"store: {exc}")
                self.display.show("Please see attendant", plate=plate, kind="error")
                raise
            # (1) is on disk: now (2) the barrier, then (3) the display.
            if decision.open:
                self.barrier.open(reason=str(decision.reason), by=by)
            if plate:
                self._recent[plate] = _Recent(plate, decision.open, time.monotonic())
        self.display.show(decision.message, plate=plate, kind="entry" if decision.open else "denied")
        self._wake()
        outcome = self._outcome(decision, recorded, plate_read, confidence, source, photo)
        self._last = outcome
        self.decisions += 1
        log.info(
            "lane %s: %s %s -> %s (%s)%s",
            self.id, source, plate or "(no plate)", "OPEN" if decision.open else "shut", decision.reason,
            f", fee due {decision.fee_due}" if decision.fee_due else "",
        )
        return outcome

    def _outcome(
        self,
        decision: Decision,
        recorded: Recorded,
        plate_read: str,
        confidence: float | None,
        source: str,
        photo: str | None,
    ) -> LaneOutcome:
        return LaneOutcome(
            lane=self.id,
            direction=self.lane.direction,
            at=self.store.clock().isoformat(timespec="seconds"),
            plate=decision.plate,
            plate_read=plate_read,
            confidence=confidence,
            open=decision.open,
            reason=str(decision.reason),
            message=decision.message,
            fee_due=decision.fee_due,
            session_id=recorded.session_id,
            event_id=recorded.event_id,
            source=source,
            photo=photo,
        )

    # -- photos --------------------------------------------------------------------------

    def _keep_photo(self, frame: FrameLike) -> str | None:
        """Keep the frame as the session photo; skipped (with an alarm) when the disk is nearly full."""
        root = self.storage.photos_path
        try:
            free_mb = shutil.disk_usage(_existing_ancestor(root)).free / 1_048_576
        except OSError as exc:
            log.error("lane %s: cannot check free space for photos in %s: %s", self.id, root, exc)
            return None
        if free_mb < self.storage.min_free_mb:
            log.warning(
                "lane %s: only %.0f MB free (< storage.min_free_mb=%d): photo not kept",
                self.id, free_mb, self.storage.min_free_mb,
            )
            if time.monotonic() - self._last_disk_alarm >= DISK_ALARM_EVERY_S:
                self._last_disk_alarm = time.monotonic()
                try:
                    self.store.record_event(
                        "alarm", lane=self.id, reason="disk_low",
                        message=f"only {free_mb:.0f} MB free: photos are not kept",
                        data={"free_mb": round(free_mb, 1), "min_free_mb": self.storage.min_free_mb},
                    )
                except Exception:
                    log.exception("lane %s: recording the disk-low alarm failed", self.id)
            return None
        at = frame.at
        source_file = _find_frame_file(frame.path)
        suffix = source_file.suffix.lower() if source_file is not None else ".jpg"
        dest = root / f"{at:%Y}" / f"{at:%m}" / f"{at:%d}" / f"{self.id}-{uuid.uuid4().hex}{suffix}"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if source_file is not None:
                shutil.copyfile(source_file, dest)
            else:
                import cv2

                if not cv2.imwrite(str(dest), frame.image):
                    raise OSError("cv2.imwrite refused the frame")
        except OSError as exc:
            log.error("lane %s: cannot keep the photo in %s: %s (deciding without it)", self.id, dest, exc)
            return None
        return str(dest)

    # -- gate events -------------------------------------------------------------------------

    def _attach_barrier(self) -> None:
        """Subscribe to the barrier's events (GateEvent) whatever way it offers."""
        previous = getattr(self.barrier, "on_event", None)
        if hasattr(self.barrier, "on_event"):
            def chained(event: Any) -> None:
                self._on_gate_event(event)
                if previous is not None and previous is not chained:
                    previous(event)
            self.barrier.on_event = chained  # type: ignore[attr-defined]
        elif hasattr(self.barrier, "add_listener"):
            self.barrier.add_listener(self._on_gate_event)  # type: ignore[attr-defined]
        else:
            log.warning("lane %s: the barrier offers no event callback; gate events are not recorded", self.id)

    def _on_gate_event(self, event: Any) -> None:
        """Barrier events become store events; state changes become retained gate-state messages."""
        try:
            self._record_gate_event(event)
        except Exception:
            log.exception("lane %s: recording gate event %r failed", self.id, event)
        for listener in list(self._gate_listeners):
            try:
                listener(event)
            except Exception:
                log.exception("lane %s: gate listener failed", self.id)

    def _record_gate_event(self, event: Any) -> None:
        kind = str(getattr(event, "kind", ""))
        detail = str(getattr(event, "detail", "") or "")
        if kind in GATE_STATE_EVENTS:
            state = GATE_STATE_EVENTS[kind]
            self.store.enqueue(
                f"lanes/{self.id}/gate",
                {
                    "id": uuid.uuid4().hex,
                    "lot": self.store.lot_id,
                    "lane": self.id,
                    "state": state,
                    "at": _iso(getattr(event, "at", None) or self.store.clock()),
                    "detail": detail,
                },
                retain=True,
            )
        elif kind in ("passed", "backed_away"):
            self.store.record_event(kind, lane=self.id, reason=kind, message=detail or kind.replace("_", " "))
        elif kind in ALARM_EVENTS:
            log.warning("lane %s ALARM %s: %s", self.id, kind, detail)
            self.store.record_event(
                "alarm", lane=self.id, reason=kind, message=detail or ALARM_EVENTS[kind], data={"gate_event": kind}
            )
        else:
            return  # presence changes and the like: not worth a row
        self._wake()

    def _wake(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                log.exception("lane %s: waking the sync failed", self.id)


GATE_STATE_EVENTS = {"opening": "opening", "opened": "open", "closing": "closing", "closed": "closed"}
ALARM_EVENTS = {
    "close_timeout": "barrier open too long without a vehicle passing: closed by timeout",
    "tailgate": "a second vehicle passed under the open barrier",
}


# --------------------------------------------------------------------------- helpers


def policy_from_settings(settings: Settings) -> Policy:
    return Policy(anti_passback=settings.rules.anti_passback, match_max_distance=settings.rules.match_max_distance)


def default_consolidator_factory(anpr: AnprConfig) -> ConsolidatorFactory:
    """PlateConsolidator from anpr.py with the configured thresholds."""
    from gatekeeper.vision.reader import PlateConsolidator

    def make() -> ConsolidatorLike:
        return PlateConsolidator(accept_confidence=anpr.accept_confidence, max_frames=anpr.max_frames)

    return make


def _state_name(state: Any) -> str:
    value = getattr(state, "value", state)
    return str(value)


def _safe_bool(getter: Callable[[], Any]) -> bool | None:
    try:
        return bool(getter())
    except Exception:
        return None


def _iso(moment: Any) -> str:
    if isinstance(moment, datetime):
        return moment.isoformat(timespec="milliseconds")
    if isinstance(moment, (int, float)):
        return datetime.fromtimestamp(moment).astimezone().isoformat(timespec="milliseconds")
    return str(moment)


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _find_frame_file(path: Path | None) -> Path | None:
    """The watch-folder file behind a frame, wherever the grabber has moved it by now."""
    if path is None:
        return None
    for candidate in (path, path.parent / "processed" / path.name):
        if candidate.is_file():
            return candidate
    return None
