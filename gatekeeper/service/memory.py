"""Keep the daemon's heap small: glibc's per-thread malloc arenas.

Why: every lane, camera and sync thread that allocates gets its own glibc malloc arena (up to
8 per core), and each arena keeps the freed buffers of the largest frame it ever held. With two
lanes reading 1920x1080 photos that is ~40 MB of resident memory for nothing (measured with
benchmarks/daemon_memory.py: peak 246 -> 204 MB with the default reader, 297 -> 266 MB with the
plate detector). Two arenas are enough for a handful of threads that mostly wait on one shared
reader lock. ``MALLOC_ARENA_MAX`` in the environment (e.g. the systemd unit) wins.

And after each plate read the heap's free pages go back to the system (``malloc_trim``):
onnxruntime allocates each batch's buffers afresh (its arena is off), crops come in every
width, and the freed holes otherwise stay resident and grow (measured: two lanes, 100 US photos
each, after the photos 300 -> 239 MB, peak 320 -> 288 MB; a trim takes about 3 ms, at most 11).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

log = logging.getLogger(__name__)

#: glibc's mallopt parameter number for the arena limit (malloc.h: M_ARENA_MAX).
M_ARENA_MAX = -8


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, looked up once (``find_library`` runs ``ldconfig``): not at import time."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas before the threads start; False where that is not possible."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False  # the environment already decided, and glibc read it at start
    libc = _libc()
    try:
        done = bool(libc.mallopt(M_ARENA_MAX, arenas)) if libc is not None else False
    except AttributeError:  # not glibc (musl, macOS): nothing to tune
        return False
    log.debug("malloc arenas capped at %d: %s", arenas, done)
    return done


def release_free_heap() -> bool:
    """Give the heap's free pages back to the system (glibc ``malloc_trim``); False where there is
    no such call. The daemon runs it after each plate read (this module's docstring says why)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True
