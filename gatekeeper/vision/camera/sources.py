"""Camera frame sources: what a lane's ``camera`` string opens (see :func:`open_source`).

* ``"0"`` or ``"/dev/video0"`` - a V4L2/USB device,
* ``"rtsp://..."``, ``"http(s)://..."`` - a network stream through OpenCV's FFmpeg backend,
* ``"file:PATH"`` or a path ending in a video extension - a video file (``loop`` for demos),
* ``"dir:PATH"`` - a watch folder (:mod:`~gatekeeper.vision.camera.folder`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from gatekeeper.vision.camera.folder import WatchFolderSource
from gatekeeper.vision.camera.frames import FrameSource, SourceError
from gatekeeper.vision.camera.spec import parse_spec, redact

log = logging.getLogger(__name__)


def open_source(spec: str, *, loop: bool = False) -> FrameSource:
    """The source for a camera string (not yet opened). ``loop`` only applies to video files."""
    parsed = parse_spec(spec)
    if parsed.kind == "dir":
        return WatchFolderSource(folder=Path(parsed.target))
    if parsed.kind == "file":
        return VideoFileSource(path=Path(parsed.target), loop=loop)
    if parsed.kind == "stream":
        return StreamSource(url=parsed.target)
    return DeviceSource(device=parsed.index if parsed.index is not None else parsed.target)


# --------------------------------------------------------------------------- OpenCV captures


class _CaptureSource:
    """Common ground of the OpenCV ``VideoCapture`` sources."""

    spec: str

    def __init__(self) -> None:
        self._capture: cv2.VideoCapture | None = None

    def _open_capture(self) -> cv2.VideoCapture:
        raise NotImplementedError

    def open(self) -> None:
        self.close()
        try:
            capture = self._open_capture()
        except cv2.error as exc:
            raise SourceError(f"cannot open {self.spec}: {exc}") from exc
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {self.spec}")
        self._capture = capture

    def close(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()

    def _require(self) -> cv2.VideoCapture:
        if self._capture is None:
            raise SourceError(f"{self.spec} is not open")
        return self._capture

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


class _LiveSource(_CaptureSource):
    """A camera that produces frames on its own clock: a failed read is a symptom, not an end."""

    def __init__(self, *, stall_s: float, max_failed_reads: int) -> None:
        super().__init__()
        self.stall_s = stall_s
        self.max_failed_reads = max_failed_reads
        self._failed = 0
        self._last_ok = 0.0

    def open(self) -> None:
        super().open()
        self._failed = 0
        self._last_ok = time.monotonic()

    def read(self, timeout: float) -> tuple[np.ndarray, Path | None] | None:
        capture = self._require()
        try:
            ok, image = capture.read()
        except cv2.error as exc:
            raise SourceError(f"{self.spec}: read failed: {exc}") from exc
        if ok and image is not None and image.size:
            self._failed = 0
            self._last_ok = time.monotonic()
            return image, None
        self._failed += 1
        silent = time.monotonic() - self._last_ok
        if self._failed >= self.max_failed_reads or silent >= self.stall_s:
            raise SourceError(f"{self.spec}: no frame for {silent:.1f} s ({self._failed} failed reads)")
        return None


class DeviceSource(_LiveSource):
    """A V4L2/USB camera: an index or a /dev/video path."""

    def __init__(self, *, device: int | str, stall_s: float = 5.0, max_failed_reads: int = 10) -> None:
        super().__init__(stall_s=stall_s, max_failed_reads=max_failed_reads)
        self.device = device
        self.spec = str(device)

    def _open_capture(self) -> cv2.VideoCapture:
        api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        capture = cv2.VideoCapture(self.device, api)
        if capture.isOpened():
            # A one-frame driver queue: what we read is what the camera sees now.
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            capture.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.stall_s * 1000)
        return capture


class StreamSource(_LiveSource):
    """An RTSP/HTTP stream through FFmpeg, with bounded open and read times.

    RTSP goes over TCP unless ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` is already set: UDP drops
    packets on busy Wi-Fi and smears plates.
    """

    def __init__(
        self,
        *,
        url: str,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        stall_s: float = 10.0,
        max_failed_reads: int = 5,
    ) -> None:
        super().__init__(stall_s=stall_s, max_failed_reads=max_failed_reads)
        self.url = url
        self.spec = redact(url)
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s

    def _open_capture(self) -> cv2.VideoCapture:
        if self.url.lower().startswith(("rtsp://", "rtsps://")):
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000),
        ]
        return cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)


class VideoFileSource(_CaptureSource):
    """A recorded video, played at its own frame rate (``realtime``) so a demo behaves like a camera."""

    def __init__(self, *, path: Path, loop: bool = False, realtime: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.spec = f"file:{self.path}"
        self.loop = loop
        self.realtime = realtime
        self.finished = False
        self._interval = 0.0
        self._due = 0.0
        self._frames_this_pass = 0

    def _open_capture(self) -> cv2.VideoCapture:
        if not self.path.is_file():
            raise SourceError(f"video file {self.path} not found")
        return cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)

    def open(self) -> None:
        super().open()
        fps = self._require().get(cv2.CAP_PROP_FPS)
        self._interval = 1.0 / fps if 0.5 <= fps <= 1000 else 1.0 / 25
        self._due = time.monotonic()
        self._frames_this_pass = 0
        self.finished = False

    def read(self, timeout: float) -> tuple[np.ndarray, Path | None] | None:
        capture = self._require()
        if self.finished:
            time.sleep(timeout)  # played to the end and not looping: nothing new, ever
            return None
        ok, image = capture.read()
        if not ok or image is None:
            if self._frames_this_pass == 0:
                raise SourceError(f"{self.spec}: no decodable frame")
            if not self.path.is_file():
                raise SourceError(f"{self.spec}: the file is gone")
            if not self.loop:
                log.info("%s: end of video (%d frames); not looping", self.spec, self._frames_this_pass)
                self.finished = True
                return None
            self._rewind()
            ok, image = capture.read()
            if not ok or image is None:
                raise SourceError(f"{self.spec}: cannot rewind to the first frame")
        self._frames_this_pass += 1
        if self.realtime:
            delay = self._due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._due = max(self._due + self._interval, time.monotonic() - self._interval)
        return image, None

    def _rewind(self) -> None:
        capture = self._require()
        self._frames_this_pass = 0
        if not capture.set(cv2.CAP_PROP_POS_FRAMES, 0):
            self.open()  # some containers cannot seek: start over
