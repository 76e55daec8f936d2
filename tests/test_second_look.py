"""The reader's second look: other binarisations when the first look reads nothing sure.

Drawn scenes only (gatekeeper.sim.plates), the real shipped recogniser. A small, blurred
plate (what a farther, softer exit camera sees) merges into blobs the first look cannot use.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gatekeeper.sim.plates import draw_plate_scene
from gatekeeper.vision.plate_finder import box_iou, find_more_rows, find_text_rows
from gatekeeper.vision.reader import PlateReader
from gatekeeper.vision.scoring import ctc_log_probs, per_char


def _soft_small(text: str, *, seed: int = 1) -> np.ndarray:
    """The drawn car at a quarter of its size, Gaussian-blurred: a second camera's soft view."""
    image = cv2.resize(draw_plate_scene(text, seed=seed), None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(image, (0, 0), 1.5)


def _plate_rows(rows, box=(55, 90, 130, 33)) -> list:  # type: ignore[no-untyped-def]
    """Rows lying on the drawn plate (its box at quarter size) and spanning most of it."""
    x, y, w, h = box
    return [r for r in rows if x <= r.box[0] + r.box[2] / 2 <= x + w and y <= r.box[1] + r.box[3] / 2 <= y + h
            and r.box[2] >= 0.5 * w]


@pytest.fixture(scope="module")
def readers():  # type: ignore[no-untyped-def]
    with PlateReader(region="eu", min_confidence=0.5, threads=1) as with_second, \
            PlateReader(region="eu", min_confidence=0.5, threads=1, second_look_rows=0) as first_only:
        yield with_second, first_only


def test_second_look_finds_the_row_the_first_misses() -> None:
    grey = cv2.cvtColor(_soft_small("RK 346 AL"), cv2.COLOR_BGR2GRAY)
    first = find_text_rows(grey, max_rows=4)
    assert not _plate_rows(first), "the first look finds no row on the blurred plate"
    more = find_more_rows(grey, first)
    assert _plate_rows(more)
    assert all(box_iou(m.box, f.box) < 0.3 for m in more for f in first), "rows already read are not read again"


def test_a_soft_small_plate_is_read_only_with_the_second_look(readers) -> None:  # type: ignore[no-untyped-def]
    with_second, first_only = readers
    image = _soft_small("RK 346 AL")
    assert first_only.read(image) is None
    observed = with_second.observe(image)
    assert observed.read is not None and observed.read.normalised == "RK346AL"
    # The evidence closed-vocabulary matching scores holds the plate too.
    best = max(per_char(float(ctc_log_probs(g.matrix, ["RK346AL"])[0]), "RK346AL") for g in observed.evidence)
    assert best > -0.5


def test_a_clear_plate_gets_no_second_look(readers) -> None:  # type: ignore[no-untyped-def]
    with_second, _ = readers
    inner = with_second.recognizer
    batches: list[int] = []

    class Counting:
        alphabet, input_height = inner.alphabet, inner.input_height

        def probabilities(self, crops):  # type: ignore[no-untyped-def]
            batches.append(len(crops))
            return inner.probabilities(crops)

        def close(self) -> None: ...

    counted = PlateReader(region="eu", recognizer=Counting(), min_confidence=0.5)
    batches.clear()   # the reader's own warm-up
    read = counted.read(draw_plate_scene("KA 482 BD", seed=5))
    assert read is not None and read.normalised == "KA482BD"
    assert batches == [1], "one crop read, no further look"


def test_no_second_look_rows_where_nothing_is_written() -> None:
    flat = np.full((240, 320), 128, np.uint8)
    assert find_more_rows(flat, []) == []


def test_the_second_look_follows_the_config_switch() -> None:
    """`anpr.second_look = false` (a slow Pi that would rather refuse soft photos) reads as before it."""
    from gatekeeper.config import AnprConfig

    image = _soft_small("RK 346 AL")
    with PlateReader.from_config(AnprConfig(region="eu", threads=1, second_look=False, plate_detector=False)) as off:
        assert off.read(image) is None
    with PlateReader.from_config(AnprConfig(region="eu", threads=1, plate_detector=False)) as on:
        read = on.read(image)
        assert read is not None and read.normalised == "RK346AL"
