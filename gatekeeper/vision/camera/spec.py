"""What a lane's ``camera`` string means (see :func:`parse_spec`).

Kept apart from the sources so that the settings can check a camera string without loading
OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

SourceKind = Literal["device", "stream", "file", "dir"]

VIDEO_EXTENSIONS = frozenset(
    {".avi", ".mp4", ".m4v", ".mkv", ".mov", ".webm", ".mjpeg", ".mjpg", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"}
)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
#: Names an uploader uses while a file is still being written.
PARTIAL_SUFFIXES = (".part", ".tmp", ".filepart", ".partial")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://")


@dataclass(frozen=True)
class SourceSpec:
    """A parsed camera string."""

    kind: SourceKind
    target: str  # device index or path, URL, file path or folder path

    @property
    def index(self) -> int | None:
        return int(self.target) if self.kind == "device" and self.target.isdigit() else None


def parse_spec(spec: str) -> SourceSpec:
    """Decide what a ``LaneConfig.camera`` string means; ``ValueError`` names the accepted forms."""
    text = spec.strip()
    if not text:
        raise ValueError("camera source is empty")
    lower = text.lower()
    if lower.startswith("dir:"):
        return SourceSpec("dir", _nonempty(text[4:], spec))
    if lower.startswith("file:"):
        return SourceSpec("file", _nonempty(text[5:], spec))
    if lower.startswith(STREAM_SCHEMES):
        return SourceSpec("stream", text)
    if text.isdigit():
        return SourceSpec("device", text)
    if text.startswith("/dev/"):
        return SourceSpec("device", text)
    if Path(text).suffix.lower() in VIDEO_EXTENSIONS:
        return SourceSpec("file", text)
    raise ValueError(
        f"camera source {redact(spec)!r} not understood: use a device index ('0') or /dev/videoN, "
        "rtsp://, http:// or https:// URL, file:PATH or a video file path "
        f"({', '.join(sorted(VIDEO_EXTENSIONS))}), or dir:PATH for a watch folder"
    )


def _nonempty(target: str, spec: str) -> str:
    if not target.strip():
        raise ValueError(f"camera source {spec!r} names no path")
    return target.strip()


def redact(spec: str) -> str:
    """The spec with any URL password masked, so logs and frames never carry camera credentials."""
    try:
        parts = urlsplit(spec)
    except ValueError:
        return spec
    if parts.password is None:
        return spec
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
