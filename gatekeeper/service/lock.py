"""One daemon per lot: an exclusive ``flock`` on ``DATA_DIR/gatekeeper.lock`` holding the owner's pid.

Taken first thing at start, before any relay, camera, broker or even the database is
touched, so a second ``gatekeeper run`` on the same lot never pulses a barrier or
kicks the running daemon off the broker with the same client id. The kernel drops
the lock when the process dies (even by SIGKILL), so a stale file never blocks a
restart; the pid inside is only there to name the owner.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

LOCK_NAME = "gatekeeper.lock"


class AlreadyRunning(RuntimeError):
    """Another process holds the lot's lock; ``pid`` names it when it could be read."""

    def __init__(self, path: Path, pid: int | None) -> None:
        owner = f"pid {pid}" if pid else "another process"
        super().__init__(f"another gatekeeper ({owner}) is already running on this lot (lock {path}); "
                         "stop it first (systemctl stop gatekeeper) or use another data directory")
        self.path = path
        self.pid = pid


class DataDirLock:
    """Hold ``path`` locked for the life of this object (or of the process)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> "DataDirLock":
        """Lock the data directory or raise :class:`AlreadyRunning` at once (never waits)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise AlreadyRunning(path, read_owner(path)) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def read_owner(path: Path) -> int | None:
    """The pid written in a lock file, if any."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def lock_holder(data_dir: Path) -> int | None:
    """Pid of the process holding the lot's lock, or None when nobody holds it (for ``doctor``)."""
    path = data_dir / LOCK_NAME
    if not path.exists():
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return read_owner(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return read_owner(path) or -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
