"""The per-lane grabber thread: the newest frame of a lane's camera, reconnecting on its own.

A lane's ``camera`` string picks the source (:func:`~gatekeeper.vision.camera.sources.open_source`).

:class:`FrameGrabber` runs one thread per lane. For live sources it reads flat out and keeps
only the newest frame, so the plate reader never works on a stale, buffered picture. For a
watch folder every file is a vehicle, so the grabber reads the next file only after the
consumer took the previous frame (``lossless``): nothing is dropped even when OCR is slow,
and unread files stay safely on disk. The thread never dies: a broken source is closed,
counted, and re-opened with exponential backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from gatekeeper.vision.camera.frames import CameraHealth, Frame, FrameSource, SourceError
from gatekeeper.vision.camera.sources import open_source
from gatekeeper.vision.camera.spec import redact

if TYPE_CHECKING:
    from gatekeeper.config import LaneConfig

log = logging.getLogger(__name__)


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
