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
