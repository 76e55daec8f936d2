"""What a camera hands the lane: frames, health, and the protocol every source follows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


class SourceError(Exception):
    """The source is broken (gone, unreachable, stalled); the grabber re-opens it with backoff."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One picture from a lane camera. Treat ``image`` as read-only: it may be shared."""

    image: np.ndarray  # BGR
    lane: str
    at: datetime  # UTC, when grabbed
    seq: int  # increasing per grabber, from 0
    source: str  # the camera spec, credentials masked
    path: Path | None = None  # the file behind a watch-folder frame (in PATH/processed/)


@dataclass(frozen=True)
class CameraHealth:
    """What ``gatekeeper status`` and the watchdog need to know about a camera."""

    connected: bool
    fps: float
    last_frame_age_s: float | None
    frames: int
    errors: int
    reconnects: int
    last_error: str | None
    retry_in_s: float | None = None  # seconds until the next re-open attempt while disconnected


@runtime_checkable
class FrameSource(Protocol):
    """One implementation per source kind. ``read`` blocks for at most about ``timeout``
    (OpenCV captures are bounded by their own read timeout instead) and returns
    ``(bgr_image, file_or_None)``, ``None`` when nothing new arrived, or raises
    :class:`SourceError` when the source is broken."""

    def open(self) -> None: ...

    def read(self, timeout: float) -> tuple[np.ndarray, Path | None] | None: ...

    def close(self) -> None: ...
