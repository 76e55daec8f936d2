"""What the lane needs from the world, as Protocols: every seam typed, nothing ``Any``.

The real parts (``vision.camera.FrameGrabber``, ``vision.reader.PlateReader``,
``store.Store``, ``hardware.barrier.Barrier``, ``hardware.display``) satisfy these
structurally; tests hand in fakes of the same shape (a plate source at the reader
seam, a :class:`~gatekeeper.lane.clock.FakeClock`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Callable, Literal, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from gatekeeper.rules import Decision, ListEntry, LotState, Reservation, SessionView, Tariff


class Clock(Protocol):
    """The lane's only source of time."""

    def now(self) -> datetime:
        """Wall time, timezone-aware UTC: what decisions and records are stamped with."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps: read windows, hold-off, heartbeat, alarm rate."""
        ...


# --------------------------------------------------------------------------- camera and reader


class Frame(Protocol):
    image: np.ndarray
    lane: str
    at: datetime
    seq: int
    source: str
    path: Path | None


class FrameSource(Protocol):
    """The lane camera's grabber: newest frame only."""

    def start(self) -> None: ...
    def next_frame(self, after_seq: int = -1, timeout: float | None = None) -> Frame | None: ...
    def latest(self) -> Frame | None: ...
    def health(self) -> object:
        """A dataclass (``CameraHealth``) or a mapping; shown as is in ``status``."""
        ...
    def close(self) -> None: ...


class PlateRead(Protocol):
    text: str
    normalised: str
    confidence: float


class PlateReader(Protocol):
    def read(
        self, image: np.ndarray, *, region: str | None = None, roi: tuple[int, int, int, int] | None = None
    ) -> PlateRead | None: ...


class Glimpse(Protocol):
    """One crop's recogniser output, folded to blank + 0-9A-Z, with the grammar's reading(s) of it."""

    matrix: np.ndarray
    readings: tuple[str, ...]


class Observation(Protocol):
    read: PlateRead | None
    evidence: Sequence[Glimpse]


@runtime_checkable
class EvidenceReader(Protocol):
    """A reader that also hands out the probabilities behind its read (``vision.reader.PlateReader``).

    A reader with ``read`` only (a test's plate source) gives the lane strings and no
    probabilities; closed-vocabulary matching then has nothing to score.
    """

    def observe(
        self, image: np.ndarray, *, region: str | None = None, roi: tuple[int, int, int, int] | None = None
    ) -> Observation: ...


#: Is this normalised plate a whole plate of the lane's grammar? (``vision.plate_formats``)
WholePlate = Callable[[str], bool]


class Consolidator(Protocol):
    """Several whole reads of one vehicle -> one plate (the free reading; probabilities go beside it)."""

    def add(self, read: PlateRead | None) -> None: ...
    @property
    def done(self) -> bool: ...
    def result(self) -> PlateRead | None: ...


ConsolidatorFactory = Callable[[], Consolidator]


# --------------------------------------------------------------------------- store


class Recorded(Protocol):
    event_id: str
    session_id: int | None


class LaneStore(Protocol):
    """The store as the lane uses it: the state a decision reads, and the transactions it writes.

    ``record_decision`` raises ``gatekeeper.store.StoreError`` when it refuses
    (e.g. the session was closed by another lane a moment ago): the lane then
    keeps the barrier shut and tells the driver to ask.
    """

    lot_id: str

    def lot_state(self) -> LotState: ...
    def list_entries(self) -> list[ListEntry]: ...
    def reservations(self) -> list[Reservation]: ...
    def inside_sessions(self) -> list[SessionView]: ...
    def set_alternates(self, session_id: int, alternates: Mapping[str, float]) -> None: ...
    def tariff(self) -> Tariff: ...

    def record_decision(
        self,
        decision: Decision,
        *,
        lane: str,
        direction: Literal["entry", "exit"],
        plate_read: str = "",
        confidence: float | None = None,
        photo: str | None = None,
        source: str = "camera",
        upload: bool = False,
        data: Mapping[str, object] | None = None,
        now: datetime | None = None,
    ) -> Recorded: ...

    def record_event(
        self,
        kind: str,
        *,
        lane: str | None = None,
        reason: str = "",
        message: str = "",
        plate: str = "",
        session_id: int | None = None,
        data: Mapping[str, object] | None = None,
        publish: bool = True,
        now: datetime | None = None,
    ) -> str: ...

    def enqueue(self, topic: str, payload: Mapping[str, object], *, retain: bool = False, qos: int = 1) -> None: ...


# --------------------------------------------------------------------------- barrier and display


class GateEvent(Protocol):
    """What the barrier reports: opening/opened/closing/closed, passed, backed_away, alarms, presence."""

    kind: str
    at: datetime
    detail: str


GateListener = Callable[[GateEvent], None]


class Barrier(Protocol):
    """The barrier state machine (hardware.barrier.Barrier); it alone decides when it may close."""

    on_event: GateListener | None

    @property
    def state(self) -> str:
        """The state's name ("closed", "opening", "open", "closing"); a StrEnum qualifies."""
        ...

    @property
    def vehicle_waiting(self) -> bool: ...
    @property
    def safety_active(self) -> bool: ...
    def open(self, *, reason: str, by: str) -> None: ...
    def wait_for_state(self, state: str, timeout: float | None = None) -> bool: ...
    def close(self) -> None: ...


class Display(Protocol):
    def show(self, message: str, *, plate: str = "", kind: str = "") -> None: ...
    @property
    def last(self) -> str | None: ...


# --------------------------------------------------------------------------- who hears about it


#: Called after anything was queued for the cloud: wakes the outbox pump.
ChangeNotifier = Callable[[], None]
