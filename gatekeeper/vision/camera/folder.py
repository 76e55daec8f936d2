"""The watch-folder source: every JPEG/PNG an ANPR camera uploads (by FTP, on its own trigger)
into ``PATH`` is one frame; it is moved to ``PATH/processed/`` once read, or to
``PATH/rejected/`` when it does not decode.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from gatekeeper.vision.camera.frames import SourceError
from gatekeeper.vision.camera.spec import IMAGE_EXTENSIONS, PARTIAL_SUFFIXES

log = logging.getLogger(__name__)


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
