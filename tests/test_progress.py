"""Progress for long work: on stderr, only on a terminal or with --progress; stdout stays clean."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2

from gatekeeper.cli.progress import Progress
from gatekeeper.sim.plates import draw_plate_scene

REPO = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_silent_when_not_a_terminal_unless_asked() -> None:
    quiet = io.StringIO()
    Progress(stream=quiet).say("loading...")
    assert quiet.getvalue() == ""
    asked = io.StringIO()
    progress = Progress(enabled=True, stream=asked, min_interval_s=0)
    progress.say("loading...")
    progress.count(2, 2, "reading image")
    assert asked.getvalue() == "loading...\nreading image 2/2\n"


def test_on_a_terminal_each_message_overwrites_the_last_and_done_clears_it() -> None:
    tty = Terminal()
    progress = Progress(stream=tty)
    progress.say("loading the plate reader...")
    progress.say("reading 1/2")
    progress.done()
    out = tty.getvalue()
    assert out.startswith("\rloading the plate reader...") and "\rreading 1/2" in out
    assert out.endswith("\r" + " " * len("reading 1/2") + "\r")  # the line is left empty for the next output


def test_count_is_throttled_but_always_shows_the_last() -> None:
    stream = io.StringIO()
    progress = Progress(enabled=True, stream=stream, min_interval_s=3600)
    for i in range(1, 101):
        progress.count(i, 100, "reading image")
    assert stream.getvalue().splitlines() == ["reading image 1/100", "reading image 100/100"]


def test_read_over_many_images_reports_progress_on_stderr_only(tmp_path: Path) -> None:
    images = []
    for i, plate in enumerate(("AB-123-CD", "EF-456-GH", "JK-789-LM")):
        path = tmp_path / f"car{i}.jpg"
        cv2.imwrite(str(path), draw_plate_scene(plate, seed=i))
        images.append(str(path))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    env["PYTHONPATH"] = str(REPO)
    base = [sys.executable, "-m", "gatekeeper", "read", "--json", "--region", "eu", *images]
    shown = subprocess.run([*base, "--progress"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "loading the plate reader..." in shown.stderr and "reading image 3/3" in shown.stderr
    assert [json.loads(line)["plate"] for line in shown.stdout.splitlines()] == ["AB123CD", "EF456GH", "JK789LM"]
    quiet = subprocess.run(base, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert "reading image" not in quiet.stderr and "loading the plate reader" not in quiet.stderr
