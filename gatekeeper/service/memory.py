"""Keep the daemon's heap small: glibc's per-thread malloc arenas.

Why: every lane, camera and sync thread that allocates gets its own glibc malloc arena (up to
8 per core), and each arena keeps the freed buffers of the largest frame it ever held. With two
lanes reading 1920x1080 photos that is ~40 MB of resident memory for nothing (measured with
benchmarks/daemon_memory.py: peak 246 -> 204 MB with the default reader, 297 -> 266 MB with the
plate detector). Two arenas are enough for a handful of threads that mostly wait on one shared
reader lock. ``MALLOC_ARENA_MAX`` in the environment (e.g. the systemd unit) wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

#: glibc's mallopt parameter number for the arena limit (malloc.h: M_ARENA_MAX).
M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas before the threads start; False where that is not possible."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False  # the environment already decided, and glibc read it at start
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        done = bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    log.debug("malloc arenas capped at %d: %s", arenas, done)
    return done
