"""Drawn car photos for the simulated lane: the tests, the lane benchmark, trying out ``run --sim``.

:func:`draw_plate_scene` paints a car-ish scene with a white plate and big
black characters (OpenCV's Hershey font) that the real plate reader reads;
:func:`drop_photo` puts it into a watch folder the way an FTP upload should
(temporary name, then an atomic rename), so the camera never sees half a file.

From the shell (the README walk-through): ``python -m gatekeeper.sim.plates AB-123-CD FOLDER``
draws a car with that plate and drops it into FOLDER under a new name.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np


def draw_plate_scene(text: str, *, seed: int = 0, size: tuple[int, int] = (960, 540)) -> np.ndarray:
    """A BGR image (``size`` = width, height): noisy background, car body, a 520x130 plate reading ``text``."""
    width, height = size
    rng = np.random.default_rng(seed)
    image = rng.integers(70, 140, (height, width, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(image, (7, 7), 0)
    cv2.rectangle(image, (width // 6, height // 3), (width * 5 // 6, height - 10), (60, 45, 110), -1)  # body
    plate_w, plate_h = 520, 130
    x0, y0 = (width - plate_w) // 2, height - plate_h - 50
    cv2.rectangle(image, (x0, y0), (x0 + plate_w, y0 + plate_h), (255, 255, 255), -1)
    cv2.rectangle(image, (x0, y0), (x0 + plate_w, y0 + plate_h), (0, 0, 0), 3)
    font, thickness, scale = cv2.FONT_HERSHEY_SIMPLEX, 8, 3.0
    while True:
        (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
        if tw <= plate_w - 50 or scale < 1.0:
            break
        scale -= 0.1
    cv2.putText(
        image, text, (x0 + (plate_w - tw) // 2, y0 + (plate_h + th) // 2), font, scale, (0, 0, 0), thickness,
        cv2.LINE_AA,
    )
    return image


def drop_photo(folder: Path, name: str, image: np.ndarray, *, quality: int = 95) -> Path:
    """Write ``image`` as ``folder/name.jpg``: temporary name, then rename. Returns the final path."""
    folder.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot encode {name} as JPEG")
    tmp = folder / f".{name}.part"
    tmp.write_bytes(data.tobytes())
    final = folder / f"{name}.jpg"
    os.replace(tmp, final)
    return final


def main(argv: Sequence[str] | None = None) -> int:
    """Draw a car photo with PLATE and drop it into FOLDER (a new file name each time); print its path."""
    parser = argparse.ArgumentParser(
        prog="python -m gatekeeper.sim.plates",
        description="Draw a car photo with a readable plate and drop it into a watch folder (atomically).",
    )
    parser.add_argument("plate", help='plate text as painted, e.g. "AB-123-CD"')
    parser.add_argument("folder", type=Path, help="watch folder, e.g. gatekeeper-data/cameras/entry-1")
    parser.add_argument("--name", help="file name without .jpg (default: car-<random>)")
    args = parser.parse_args(argv)
    name = args.name or f"car-{uuid.uuid4().hex[:8]}"
    path = drop_photo(args.folder, name, draw_plate_scene(args.plate))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
