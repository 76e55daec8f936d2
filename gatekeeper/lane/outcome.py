"""What the lane did for one vehicle, and who is told about it."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Callable, Literal

log = logging.getLogger(__name__)

Source = Literal["camera", "operator"]


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

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


#: ``listener(kind, outcome)``; kinds are listed at :meth:`LaneRunner.add_vehicle_listener`.
VehicleListener = Callable[[str, "LaneOutcome | None"], None]


def notify_all(listeners: list[VehicleListener], kind: str, outcome: LaneOutcome | None, *, lane: str) -> None:
    """Tell every listener; one that fails is logged and does not stop the others or the lane."""
    for listener in list(listeners):
        try:
            listener(kind, outcome)
        except Exception:
            log.exception("lane %s: vehicle listener failed", lane)
