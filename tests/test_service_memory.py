"""The daemon caps glibc's malloc arenas before its threads start (service/memory.py)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from gatekeeper.service.memory import limit_malloc_arenas

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt arenas are glibc's")


@glibc
def test_the_cap_is_taken_by_glibc_in_a_fresh_process() -> None:
    code = "from gatekeeper.service.memory import limit_malloc_arenas as f; print(f())"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "True"


def test_an_operator_setting_in_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False


@glibc
def test_freed_heap_pages_go_back_to_the_system_in_a_fresh_process() -> None:
    """Buffers of 100 KB come from the heap, not mmap: freed between live ones they stay
    resident until the heap is trimmed (what onnxruntime's per-batch buffers do in the daemon)."""
    code = (
        "import ctypes, ctypes.util\n"
        "from gatekeeper.service.memory import release_free_heap\n"
        "libc = ctypes.CDLL(ctypes.util.find_library('c'))\n"
        "libc.malloc.restype = ctypes.c_void_p\n"
        "libc.free.argtypes = [ctypes.c_void_p]\n"
        "def rss():\n"
        "    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) // 1024\n"
        "blocks = [libc.malloc(100_000) for _ in range(2000)]\n"
        "for b in blocks:\n"
        "    ctypes.memset(b, 1, 100_000)\n"
        "for b in blocks[:-1]:\n"
        "    libc.free(b)\n"
        "held = rss()\n"
        "done = release_free_heap()\n"
        "print(done, held, rss())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    done, held, after = out.stdout.split()
    assert done == "True"
    assert int(held) - int(after) >= 150      # ~190 MB freed but resident before the trim


def test_the_lane_hands_memory_back_after_each_read_and_closer_look() -> None:
    import threading
    from datetime import datetime, timezone

    import numpy as np

    from gatekeeper.lane.evidence import FrameReader
    from gatekeeper.vision.camera.frames import Frame

    class Reader:       # the reader seam: a camera read and a closer look, nothing read
        def read(self, image, *, region=None, roi=None):
            return None

        def closer_look(self, image, *, region=None, roi=None):
            return ()

    released = []
    frames = FrameReader(lane_id="exit-1", reader=Reader(), lock=threading.Lock(), region="us", roi=None,
                         on_error=lambda message: None, beat=lambda: None, after_read=lambda: released.append(1))
    frame = Frame(image=np.zeros((8, 8), np.uint8), lane="exit-1", at=datetime.now(timezone.utc), seq=1,
                  source="test", path=None)
    frames.read(frame)
    frames.closer_look(frame)
    assert len(released) == 2
