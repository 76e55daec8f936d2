"""Keeping a vehicle's frame as its session photo, unless the disk is nearly full."""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

from gatekeeper.config import StorageConfig
from gatekeeper.lane.ports import Clock, Frame, LaneStore

log = logging.getLogger(__name__)

#: How often the disk-low alarm may repeat.
DISK_ALARM_EVERY_S = 600.0


class PhotoKeeper:
    """Copies (watch folder) or writes (live camera) the frame under ``storage.photos_path/YYYY/MM/DD``.

    A full disk or a write error never stops a decision: the lane decides
    without the photo, and a full disk raises a (rate-limited) ``disk_low`` alarm.
    """

    def __init__(self, *, lane_id: str, storage: StorageConfig, store: LaneStore, clock: Clock) -> None:
        self.lane_id = lane_id
        self.storage = storage
        self.store = store
        self.clock = clock
        self._last_disk_alarm: float | None = None

    def keep(self, frame: Frame) -> str | None:
        """The photo's path, or None when it was not kept."""
        root = self.storage.photos_path
        try:
            free_mb = shutil.disk_usage(_existing_ancestor(root)).free / 1_048_576
        except OSError as exc:
            log.error("lane %s: cannot check free space for photos in %s: %s", self.lane_id, root, exc)
            return None
        if free_mb < self.storage.min_free_mb:
            log.warning(
                "lane %s: only %.0f MB free (< storage.min_free_mb=%d): photo not kept",
                self.lane_id, free_mb, self.storage.min_free_mb,
            )
            self._disk_alarm(free_mb)
            return None
        at = frame.at
        source_file = _find_frame_file(frame.path)
        suffix = source_file.suffix.lower() if source_file is not None else ".jpg"
        dest = root / f"{at:%Y}" / f"{at:%m}" / f"{at:%d}" / f"{self.lane_id}-{uuid.uuid4().hex}{suffix}"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if source_file is not None:
                shutil.copyfile(source_file, dest)
            else:
                import cv2

                if not cv2.imwrite(str(dest), frame.image):
                    raise OSError("cv2.imwrite refused the frame")
        except OSError as exc:
            log.error("lane %s: cannot keep the photo in %s: %s (deciding without it)", self.lane_id, dest, exc)
            return None
        return str(dest)

    def _disk_alarm(self, free_mb: float) -> None:
        now = self.clock.monotonic()
        if self._last_disk_alarm is not None and now - self._last_disk_alarm < DISK_ALARM_EVERY_S:
            return
        self._last_disk_alarm = now
        try:
            self.store.record_event(
                "alarm", lane=self.lane_id, reason="disk_low",
                message=f"only {free_mb:.0f} MB free: photos are not kept",
                data={"free_mb": round(free_mb, 1), "min_free_mb": self.storage.min_free_mb},
                now=self.clock.now(),
            )
        except Exception:
            log.exception("lane %s: recording the disk-low alarm failed", self.lane_id)


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
