"""Camera frame sources and the per-lane grabber thread.

A lane's ``camera`` string picks the source (see :func:`parse_spec`):

* ``"0"`` or ``"/dev/video0"`` - a V4L2/USB device,
* ``"rtsp://..."``, ``"http(s)://..."`` - a network stream through OpenCV's FFmpeg backend,
* ``"file:PATH"`` or a path ending in a video extension - a video file (``loop`` for demos),
* ``"dir:PATH"`` - a watch folder: every JPEG/PNG an ANPR camera uploads there (by FTP, on its
  own trigger) is one frame; it is moved to ``PATH/processed/`` once read, or to
  ``PATH/rejected/`` when it does not decode.

:class:`FrameGrabber` runs one thread per lane. For live sources it reads flat out and keeps
only the newest frame, so the plate reader never works on a stale, buffered picture. For a
watch folder every file is a vehicle, so the grabber reads the next file only after the
consumer took the previous frame (``lossless``): nothing is dropped even when OCR is slow,
and unread files stay safely on disk. The thread never dies: a broken source is closed,
counted, and re-opened with exponential backoff.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

import cv2
import numpy as np

from gatekeeper.vision.camera.spec import (  # noqa: F401 - re-exported: callers name them from here
    IMAGE_EXTENSIONS,
    PARTIAL_SUFFIXES,
    STREAM_SCHEMES,
    VIDEO_EXTENSIONS,
    SourceKind,
    SourceSpec,
    parse_spec,
    redact,
)

if TYPE_CHECKING:
    from gatekeeper.config import LaneConfig

log = logging.getLogger(__name__)


class SourceError(Exception):
    """The source is broken (gone, unreachable, stalled); the grabber re-opens it with backoff."""


# --------------------------------------------------------------------------- public records


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


# --------------------------------------------------------------------------- watch folder


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float  # monotonic time this size/mtime was first seen
    undecodable: bool = False  # tried once at this size/mtime and it did not decode


class WatchFolderSource:
    """Snapshots uploaded into a folder, one file per frame, oldest first.

    A file is taken once it looks complete: the JPEG end marker or the PNG ``IEND`` chunk is
    there, its size has not changed for ``settle_s`` and it decodes. A file without the end
    marker, or one that does not decode, is given ``reject_after_s`` of unchanged size (a
    stalled upload may still resume) before it is decoded once more and rejected if it fails. Read files go to ``processed/`` (newest ``keep_processed`` kept), files
    that do not decode to ``rejected/`` (newest ``keep_rejected`` kept), so a restart never
    reads a file twice and nothing is deleted unseen. Dotfiles and ``*.part``/``*.tmp`` names
    are uploads in progress and are left alone.
    """

    lossless = True  # one file is one vehicle: the grabber must not drop frames

    def __init__(
        self,
        *,
        folder: Path,
        poll_s: float = 0.05,
        settle_s: float = 0.05,
        reject_after_s: float = 3.0,
        keep_processed: int = 500,
        keep_rejected: int = 100,
    ) -> None:
        self.folder = Path(folder)
        self.spec = f"dir:{self.folder}"
        self.poll_s = poll_s
        self.settle_s = settle_s
        self.reject_after_s = reject_after_s
        self.keep_processed = keep_processed
        self.keep_rejected = keep_rejected
        #: Called with a message for each file that is rejected or cannot be moved (the grabber counts them).
        self.on_error: Callable[[str], None] | None = None
        self.rejected = 0
        self._seen: dict[str, _Seen] = {}
        self._stuck: set[tuple[str, int, int]] = set()  # read but could not be moved away: never read again
        self._ignored: set[str] = set()
        self._open = False

    @property
    def processed_dir(self) -> Path:
        return self.folder / "processed"

    @property
    def rejected_dir(self) -> Path:
        return self.folder / "rejected"

    def open(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.processed_dir.mkdir(exist_ok=True)
            self.rejected_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise SourceError(f"cannot create watch folder {self.folder}: {exc.strerror or exc}") from exc
        self._seen.clear()
        self._open = True
        _prune(self.processed_dir, self.keep_processed)
        _prune(self.rejected_dir, self.keep_rejected)

    def close(self) -> None:
        self._open = False
        self._seen.clear()

    def read(self, timeout: float) -> tuple[np.ndarray, Path | None] | None:
        if not self._open:
            raise SourceError(f"{self.spec} is not open")
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            got = self._take_one()
            if got is not None:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(self.poll_s, left))

    def __repr__(self) -> str:
        return f"WatchFolderSource({self.spec!r})"

    # -- one scan -------------------------------------------------------------------------

    def _take_one(self) -> tuple[np.ndarray, Path | None] | None:
        """Scan once; decode and move the oldest complete file, if any."""
        now = time.monotonic()
        candidates: list[tuple[int, str, os.stat_result]] = []
        present: set[str] = set()
        try:
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith(".") or name.lower().endswith(PARTIAL_SUFFIXES):
                        continue
                    try:
                        if not entry.is_file(follow_symlinks=False):
                            continue
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # renamed or removed between listing and stat
                    if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                        if name not in self._ignored:
                            self._ignored.add(name)
                            log.warning("%s: ignoring %s: not a .jpg/.jpeg/.png snapshot", self.spec, name)
                        continue
                    if (name, st.st_size, st.st_mtime_ns) in self._stuck:
                        continue
                    present.add(name)
                    candidates.append((st.st_mtime_ns, name, st))
        except FileNotFoundError as exc:
            raise SourceError(f"watch folder {self.folder} has disappeared") from exc
        except OSError as exc:
            raise SourceError(f"cannot list watch folder {self.folder}: {exc.strerror or exc}") from exc

        for gone in set(self._seen) - present:
            del self._seen[gone]
        candidates.sort()
        for _, name, st in candidates:
            seen = self._seen.get(name)
            if seen is None or seen.size != st.st_size or seen.mtime_ns != st.st_mtime_ns:
                self._seen[name] = _Seen(st.st_size, st.st_mtime_ns, now)
                # Already old on disk (e.g. there before we started): no need to watch it settle.
                age = time.time() - st.st_mtime_ns / 1e9
                if age < self.settle_s:
                    continue
                stable_for = age
            else:
                stable_for = max(now - seen.since, time.time() - st.st_mtime_ns / 1e9)
            if stable_for < self.settle_s:
                continue
            if st.st_size == 0:
                if stable_for >= self.reject_after_s:
                    self._reject(self.folder / name, "empty file")  # an upload that never started
                continue
            if self._seen[name].undecodable and stable_for < self.reject_after_s:
                continue  # failed once at this size: wait for more bytes or for the verdict
            got = self._try_file(self.folder / name, st, stable_for)
            if got is not None:
                return got
        return None

    def _try_file(self, path: Path, st: os.stat_result, stable_for: float) -> tuple[np.ndarray, Path | None] | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._give_up(path, st, f"cannot read {path.name}: {exc.strerror or exc}")
            return None
        if len(data) != st.st_size:
            return None  # still being written
        complete = _looks_complete(data)
        if not complete and stable_for < self.reject_after_s:
            return None  # an upload in progress (or stalled): give it time
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if image is None or not image.size:
            if stable_for < self.reject_after_s:
                # An end marker can also close an embedded thumbnail: maybe more bytes are coming.
                seen = self._seen.get(path.name)
                if seen is not None:
                    seen.undecodable = True
                return None
            self._reject(path, "not a decodable JPEG/PNG" if complete else "truncated or not an image")
            return None
        dest = self._move(path, self.processed_dir)
        if dest is None:
            self._give_up(path, st, f"read {path.name} but could not move it to {self.processed_dir}")
            return image, path
        _prune(self.processed_dir, self.keep_processed)
        self._seen.pop(path.name, None)
        return image, dest

    def _reject(self, path: Path, why: str) -> None:
        self.rejected += 1
        dest = self._move(path, self.rejected_dir)
        self._seen.pop(path.name, None)
        where = f"moved to {dest}" if dest is not None else "left in place"
        message = f"{self.spec}: rejected {path.name}: {why} ({where})"
        log.error(message)
        if dest is None:
            try:
                st = path.stat()
                self._stuck.add((path.name, st.st_size, st.st_mtime_ns))
            except OSError:
                pass
        else:
            _prune(self.rejected_dir, self.keep_rejected)
        self._report(message)

    def _give_up(self, path: Path, st: os.stat_result, message: str) -> None:
        """A file we cannot read or move: remember it so it is not handed out again and again."""
        self._stuck.add((path.name, st.st_size, st.st_mtime_ns))
        log.error("%s: %s", self.spec, message)
        self._report(f"{self.spec}: {message}")

    def _report(self, message: str) -> None:
        if self.on_error is not None:
            try:
                self.on_error(message)
            except Exception:
                log.exception("%s: error callback failed", self.spec)

    @staticmethod
    def _move(path: Path, folder: Path) -> Path | None:
        """Move ``path`` into ``folder`` under a free name; None when that fails."""
        try:
            folder.mkdir(exist_ok=True)
            dest = folder / path.name
            n = 1
            while dest.exists():
                dest = folder / f"{path.stem}.{n}{path.suffix}"
                n += 1
            os.replace(path, dest)
            return dest
        except OSError as exc:
            log.error("cannot move %s to %s: %s", path, folder, exc.strerror or exc)
            return None


def _looks_complete(data: bytes) -> bool:
    """A JPEG ends with FFD9 (some cameras add a few trailing bytes), a PNG with its IEND chunk."""
    if data.startswith(b"\xff\xd8"):
        return b"\xff\xd9" in data[-64:]
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data.endswith(b"IEND\xaeB`\x82")
    return False


def _prune(folder: Path, keep: int) -> None:
    """Keep the newest ``keep`` files of ``folder`` (by modification time)."""
    try:
        with os.scandir(folder) as entries:
            files = [(e.stat(follow_symlinks=False).st_mtime_ns, e.name) for e in entries if e.is_file(follow_symlinks=False)]
    except OSError as exc:
        log.warning("cannot list %s to prune it: %s", folder, exc.strerror or exc)
        return
    if len(files) <= keep:
        return
    files.sort()
    for _, name in files[: len(files) - keep]:
        try:
            (folder / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot delete old %s: %s", folder / name, exc.strerror or exc)


# --------------------------------------------------------------------------- the grabber


class FrameGrabber:
    """A thread per lane that reads its camera and keeps the newest frame.

    ``next_frame(after_seq)`` waits for a frame newer than the one the caller has.
    With a ``lossless`` source (a watch folder) the thread reads the next file only after
    ``next_frame`` handed out the current one, so every snapshot reaches the lane.
    ``latest()`` only peeks and never counts as taken.
    """

    #: Time a single ``source.read`` may wait for news, so ``close()`` is honoured promptly.
    READ_SLICE_S = 0.1

    def __init__(
        self,
        *,
        source: FrameSource | str,
        lane: str,
        loop: bool = False,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        lossless: bool | None = None,
        fps_window_s: float = 5.0,
        join_timeout_s: float = 5.0,
    ) -> None:
        if backoff_min_s <= 0 or backoff_max_s < backoff_min_s:
            raise ValueError("need 0 < backoff_min_s <= backoff_max_s")
        self.source: FrameSource = open_source(source, loop=loop) if isinstance(source, str) else source
        self.lane = lane
        self.spec = redact(source) if isinstance(source, str) else str(getattr(self.source, "spec", repr(self.source)))
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.lossless = bool(getattr(self.source, "lossless", False)) if lossless is None else lossless
        self.fps_window_s = fps_window_s
        self.join_timeout_s = join_timeout_s
        self._clock = clock
        if hasattr(self.source, "on_error"):
            self.source.on_error = self._source_problem  # type: ignore[attr-defined]

        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._frame: Frame | None = None
        self._taken = True  # nothing pending yet
        self._seq = -1
        # health, guarded by _cond
        self._connected = False
        self._frames = 0
        self._errors = 0
        self._reconnects = 0
        self._last_error: str | None = None
        self._last_frame_at: float | None = None
        self._stamps: deque[float] = deque()
        self._retry_at: float | None = None

    @classmethod
    def from_config(cls, lane: "LaneConfig") -> "FrameGrabber":
        """The grabber a configured lane asks for."""
        return cls(source=lane.camera, lane=lane.id, loop=lane.camera_loop)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"camera grabber for lane {self.lane} already started")
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.lane}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and close the source; returns once the thread has ended (or timed out)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread = self._thread
        if thread is None:
            self._close_source()
            return
        if thread is not threading.current_thread():
            thread.join(self.join_timeout_s)
            if thread.is_alive():
                log.warning("lane %s: camera thread still blocked in %s after %.1f s", self.lane, self.spec,
                            self.join_timeout_s)

    def __enter__(self) -> "FrameGrabber":
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- consumers ------------------------------------------------------------------------

    def next_frame(self, after_seq: int = -1, timeout: float | None = None) -> Frame | None:
        """The newest frame with ``seq > after_seq``, waiting up to ``timeout`` (None: forever, until close)."""
        with self._cond:
            if self._frame is not None and self._frame.seq <= after_seq and not self._taken:
                # The caller already has this frame (e.g. from latest()): let the next one come.
                self._taken = True
                self._cond.notify_all()
            self._cond.wait_for(
                lambda: self._stop.is_set() or (self._frame is not None and self._frame.seq > after_seq),
                timeout,
            )
            frame = self._frame
            if frame is None or frame.seq <= after_seq:
                return None
            if not self._taken:
                self._taken = True
                self._cond.notify_all()
            return frame

    def latest(self) -> Frame | None:
        """The newest frame, without waiting and without marking it taken."""
        with self._cond:
            return self._frame

    def health(self) -> CameraHealth:
        now = self._clock()
        with self._cond:
            self._trim_stamps(now)
            stamps = self._stamps
            fps = (len(stamps) - 1) / max(now - stamps[0], 1e-6) if len(stamps) >= 2 else 0.0
            retry = max(0.0, self._retry_at - now) if self._retry_at is not None and not self._connected else None
            return CameraHealth(
                connected=self._connected,
                fps=round(fps, 2),
                last_frame_age_s=None if self._last_frame_at is None else max(0.0, now - self._last_frame_at),
                frames=self._frames,
                errors=self._errors,
                reconnects=self._reconnects,
                last_error=self._last_error,
                retry_in_s=retry,
            )

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self.backoff_min_s
        opened_before = False
        is_open = False
        connected_since = 0.0
        log.info("lane %s: camera %s starting", self.lane, self.spec)
        while not self._stop.is_set():
            try:
                if not is_open:
                    if opened_before:
                        log.info("lane %s: re-opening camera %s", self.lane, self.spec)
                    self.source.open()
                    is_open = True
                    connected_since = self._clock()
                    with self._cond:
                        self._connected = True
                        self._retry_at = None
                        if opened_before:
                            self._reconnects += 1
                    if opened_before:
                        log.info("lane %s: camera %s is back", self.lane, self.spec)
                    opened_before = True
                if self.lossless and not self._wait_until_taken():
                    break
                got = self.source.read(self.READ_SLICE_S)
                if got is None:
                    continue
                image, path = got
                self._publish(image, path)
                backoff = self.backoff_min_s
            except Exception as exc:  # never die: log, count, back off, retry
                if is_open and self._clock() - connected_since >= self.backoff_max_s:
                    backoff = self.backoff_min_s  # it had been fine for a long while: retry soon
                message = str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}"
                log.warning("lane %s: camera %s failed: %s; retrying in %.1f s", self.lane, self.spec, message, backoff,
                            exc_info=not isinstance(exc, SourceError))
                self._close_source()
                is_open = False
                opened_before = True  # the next successful open is a reconnect
                with self._cond:
                    self._connected = False
                    self._errors += 1
                    self._last_error = message
                    self._retry_at = self._clock() + backoff
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self.backoff_max_s)
        self._close_source()
        with self._cond:
            self._connected = False
            self._retry_at = None
            self._cond.notify_all()
        log.info("lane %s: camera %s stopped", self.lane, self.spec)

    def _wait_until_taken(self) -> bool:
        """Lossless sources: hold the next read until the current frame was handed out. False: stopping."""
        with self._cond:
            self._cond.wait_for(lambda: self._stop.is_set() or self._taken)
            return not self._stop.is_set()

    def _publish(self, image: np.ndarray, path: Path | None) -> None:
        now = self._clock()
        with self._cond:
            self._seq += 1
            self._frame = Frame(
                image=image, lane=self.lane, at=datetime.now(timezone.utc), seq=self._seq, source=self.spec, path=path
            )
            self._taken = False
            self._frames += 1
            self._last_frame_at = now
            self._connected = True
            self._stamps.append(now)
            self._trim_stamps(now)
            self._cond.notify_all()

    def _trim_stamps(self, now: float) -> None:
        while self._stamps and self._stamps[0] < now - self.fps_window_s:
            self._stamps.popleft()

    def _source_problem(self, message: str) -> None:
        """A source-level problem that does not break the source (e.g. a rejected file)."""
        with self._cond:
            self._errors += 1
            self._last_error = message

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception:
            log.exception("lane %s: closing camera %s failed", self.lane, self.spec)

