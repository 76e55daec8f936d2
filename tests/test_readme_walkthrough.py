"""README.md's set-up and walk-through, run as written against a real ``gatekeeper run --sim``.

The commands and their expected output are parsed from README.md (the blocks after the
``<!-- walkthrough: ... -->`` markers), so README and program cannot drift apart. The
walk-through runs in a temporary copy of the repository's config.toml (the simulated lot),
with car photos drawn by gatekeeper/sim/plates.py; nothing from ../shared is used.

``.venv/bin/gatekeeper`` and ``.venv/bin/python`` are mapped to the interpreter running the
tests (CI's is that very .venv). The install part of the set-up command is CI's job
(.ci/run runs the README's test command; the test below checks they are the same).
Expected output is compared with doctest's checker (``...`` matches anything, whitespace
runs are equal) after every human timestamp, car file name and the temporary directory
are replaced by placeholders, so the README can show realistic values.
"""

from __future__ import annotations

import doctest
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.broker import free_port

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SETUP_RUN = "./install.sh && .venv/bin/gatekeeper run --sim"
SETUP_TEST = "./install.sh --test && .venv/bin/python -m pytest -q"
README_ROOT = "/home/you/gatekeeper"
#: Model loading on a busy 2-core CI machine; a step (read a photo, run a command) likewise.
READY_TIMEOUT_S = 300.0
STEP_TIMEOUT_S = 120.0
#: Commands that only read: retried until their output matches (the daemon works asynchronously).
READING = ("status", "events", "sessions list", "sessions show", "fee", "history", "outbox")

HUMAN_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d")
CAR_FILE = re.compile(r"car-[0-9a-f]{8}\.jpg")


@dataclass
class Step:
    command: str
    expected: str


def readme_block(marker: str) -> str:
    """The fenced block right after ``<!-- walkthrough: MARKER ...-->``."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- walkthrough: " + re.escape(marker) + r"[^>]*-->\s*```[a-z]*\n(.*?)```", text, re.S)
    assert match, f"README.md has no walk-through block marked {marker!r}"
    return match.group(1)


def readme_steps() -> list[Step]:
    steps: list[Step] = []
    for line in readme_block("steps").splitlines():
        if line.startswith("$ "):
            steps.append(Step(line[2:].strip(), ""))
        else:
            assert steps, "the steps block must start with a $ command"
            steps[-1].expected += line + "\n"
    return steps


def argv(command: str) -> list[str]:
    """A README command line as a process argv: the .venv paths become this interpreter."""
    words = shlex.split(command)
    if words[0] == ".venv/bin/gatekeeper":
        return [sys.executable, "-m", "gatekeeper", *words[1:]]
    if words[0] == ".venv/bin/python":
        return [sys.executable, *words[1:]]
    raise AssertionError(f"README walk-through command does not use the .venv: {command}")


def normalise(text: str, root: Path, mqtt_port: int) -> str:
    text = text.replace(str(root), README_ROOT).replace(f"localhost:{mqtt_port}", "localhost:1883")
    text = HUMAN_TIME.sub("<time>", text)
    return CAR_FILE.sub("car-<id>.jpg", text)


def matches(expected: str, got: str, root: Path, mqtt_port: int) -> bool:
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    return checker.check_output(normalise(expected, root, mqtt_port), normalise(got, root, mqtt_port), flags)


def test_readme_setup_commands_are_the_ones_ci_runs() -> None:
    text = README.read_text(encoding="utf-8")
    assert f"\n    {SETUP_RUN}\n" in text
    assert f"\n    {SETUP_TEST}\n" in text
    assert SETUP_TEST in (REPO / ".ci" / "run").read_text(encoding="utf-8")
    steps = readme_steps()
    assert steps and all(s.expected.strip() for s in steps), "every step shows its expected output"


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    root = tmp_path / "gatekeeper"
    root.mkdir()
    shutil.copy(REPO / "config.toml", root / "config.toml")
    mqtt_port = free_port()  # nothing listens there: the sync is offline, as on a laptop, and no real broker is touched
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_") and k != "NOTIFY_SOCKET"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["GATEKEEPER_MQTT__PORT"] = str(mqtt_port)

    run_command = SETUP_RUN.split("&&", 1)[1].strip()
    stderr_log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(argv(run_command), cwd=root, env=env, stdout=subprocess.PIPE, stderr=stderr_log,
                              text=True)
    try:
        banner = read_until_ready(daemon)
        assert matches(readme_block("daemon output"), banner, root, mqtt_port), (
            f"`{run_command}` printed:\n{banner}\nREADME shows:\n{readme_block('daemon output')}"
        )
        for step in readme_steps():
            run_step(step, root=root, env=env, mqtt_port=mqtt_port)
    finally:
        daemon.send_signal(signal.SIGINT)  # Ctrl-C, as the banner says
        try:
            daemon.wait(timeout=STEP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        stderr_log.close()
    assert daemon.returncode == 0, (tmp_path / "daemon.log").read_text()[-3000:]


def read_until_ready(daemon: subprocess.Popen[str]) -> str:
    """The daemon's stdout up to and including its ``ready:`` line (read in a thread: readline blocks)."""
    lines: list[str] = []
    done = threading.Event()

    def reader() -> None:
        assert daemon.stdout is not None
        for line in daemon.stdout:
            lines.append(line)
            if line.startswith("ready:"):
                break
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    assert done.wait(READY_TIMEOUT_S), f"no 'ready:' line within {READY_TIMEOUT_S:g} s; got:\n{''.join(lines)}"
    assert lines and lines[-1].startswith("ready:"), f"the daemon ended before it was ready:\n{''.join(lines)}"
    return "".join(lines)


def run_step(step: Step, *, root: Path, env: dict[str, str], mqtt_port: int) -> None:
    words = shlex.split(step.command)
    reading = words[0] == ".venv/bin/gatekeeper" and any(" ".join(words[1:]).startswith(r) for r in READING)
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while True:
        result = subprocess.run(argv(step.command), cwd=root, env=env, capture_output=True, text=True,
                                timeout=STEP_TIMEOUT_S)
        if result.returncode == 0 and matches(step.expected, result.stdout, root, mqtt_port):
            return
        if not reading or time.monotonic() > deadline:
            pytest.fail(
                f"README step `{step.command}` (exit {result.returncode}) printed:\n{result.stdout}{result.stderr}"
                f"\nREADME shows:\n{step.expected}"
            )
        time.sleep(0.2)  # the daemon is another process deciding on its own time: poll the reading command
