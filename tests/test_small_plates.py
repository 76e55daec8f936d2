"""Small plates: the detector run again on the frame enlarged, tile by tile, for an entry left unread.

Real detector and recogniser; the plates are drawn (sim_plates) and set into a drawn 1080p street.
"""

from __future__ import annotations

import numpy as np
import pytest

from gatekeeper.vision.plate_detector import PlateDetector
from gatekeeper.vision.reader import SMALL_PLATE_MIN_CONFIDENCE, PlateReader
from gatekeeper.vision.zoom import ZoomedFinder, tile_starts
from tests.test_plate_detector import _car_without_plate, _inside, _plate_in_frame, _street

#: A plate 57 px wide at the left of a 1920 px frame: the whole frame's detector misses it.
SMALL = {"scale": 0.11, "at": (400, 700)}
#: Fits no listed US layout: read only through a fallback (personalised) one.
PERSONALISED = "KAT5"


@pytest.fixture(scope="module")
def detector() -> PlateDetector:
    return PlateDetector(threads=1)


@pytest.fixture(scope="module")
def reader(detector: PlateDetector):
    with PlateReader(region="us", min_confidence=0.2, detector=detector, threads=1) as r:
        yield r


def test_tiles_cover_the_frame_and_overlap() -> None:
    assert tile_starts(300, 480, 120) == [0]                      # smaller than a tile: one tile
    starts = tile_starts(1920, 480, 120)
    assert starts[0] == 0 and starts[-1] == 1920 - 480
    assert all(b - a <= 480 - 120 for a, b in zip(starts, starts[1:]))   # no gap, every seam overlaps


@pytest.mark.parametrize("text", ["7ABC123", "5KLM204"])
def test_a_plate_too_small_for_the_whole_frame_is_found_and_read_enlarged(detector, reader, text: str) -> None:
    frame, plate = _plate_in_frame(text, **SMALL)
    assert not any(_inside(b.box, plate) for b in detector.detect(frame))    # the whole frame misses it
    assert reader.observe(frame).read is None                               # so the first look reads nothing
    boxes = ZoomedFinder(detector).detect(frame)
    assert boxes and _inside(boxes[0].box, plate), (boxes[:2], plate)       # in frame pixels, the surest
    seen = reader.small_plate_read(frame)
    assert seen.read is not None and seen.read.normalised == text and seen.evidence
    assert seen.read.confidence >= SMALL_PLATE_MIN_CONFIDENCE
    x, y, w, h = seen.read.box                          # the text-line crop, in frame pixels, on the plate
    px, py, pw, ph = plate
    assert px - 10 <= x and x + w <= px + pw + 10 and py - 10 <= y and y + h <= py + ph + 10


def test_the_entrys_closer_read_ends_with_the_small_plates(reader) -> None:
    """No sharpened copy of the whole frame's boxes reads a plate; the enlarged tiles do."""
    frame, _ = _plate_in_frame("7ABC123", **SMALL)
    seen = reader.closer_read(frame)
    assert seen.read is not None and seen.read.normalised == "7ABC123"
    assert reader.closer_read(np.zeros((0, 0), np.uint8)).read is None


def test_boxes_the_first_look_read_are_not_found_again(detector) -> None:
    """A plate the whole frame's detector finds is the first look's: the enlarged tiles leave it out."""
    frame, plate = _plate_in_frame("7ABC123", scale=0.13, at=(1300, 600))
    assert any(_inside(b.box, plate) for b in detector.detect(frame)[:4])
    assert not any(_inside(b.box, plate) for b in ZoomedFinder(detector).detect(frame))


@pytest.mark.parametrize("frame", [_street(5), _car_without_plate(1), np.full((1080, 1920, 3), 128, np.uint8)],
                         ids=["street", "car without a plate", "grey"])
def test_no_plate_no_small_plate_read(reader, frame: np.ndarray) -> None:
    assert reader.small_plate_read(frame).read is None


def test_a_personalised_read_of_a_tile_is_no_read(reader) -> None:
    """Only a whole plate (a listed layout) counts: a read through a fallback layout, which a tile of
    scenery gives as easily, is evidence, not a read."""
    frame, _ = _plate_in_frame(PERSONALISED, **SMALL)
    seen = reader.small_plate_read(frame)
    assert any(PERSONALISED in g.readings for g in seen.evidence)       # read, through a fallback layout
    assert seen.read is None


def test_bad_settings_are_refused(detector) -> None:
    with pytest.raises(ValueError, match="zoom"):
        ZoomedFinder(detector, zoom=0.5)
    with pytest.raises(ValueError, match="not an image"):
        ZoomedFinder(detector).detect(np.zeros((0, 0), np.uint8))


def test_the_exits_closer_look_deblurs_the_plate_only_the_enlarged_frame_shows(detector, reader) -> None:
    """An exit camera's small, soft plate: not among the whole frame's boxes the closer look deblurs,
    but the enlarged tiles' surest box; its sharpened copies score the plate (the session the exit
    scores) well, and above a look-alike one glyph away."""
    import cv2

    from gatekeeper.vision.closer import closer_boxes
    from tests.test_deblur import _best, motion_kernel

    frame, plate = _plate_in_frame("7ABC123", **SMALL)
    frame = cv2.filter2D(frame, -1, motion_kernel(3, 0.0))
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    assert not any(_inside(b, plate) for b in closer_boxes(detector, grey))
    assert any(_inside(b, plate) for b in closer_boxes(detector, grey, ZoomedFinder(detector).detect(grey)))
    assert _best(reader.observe(frame).evidence, "7ABC123") < -5            # the first look has nothing of it
    seen = reader.closer_look(frame)
    assert _best(seen, "7ABC123") > -1.0                                   # nats per character
    assert _best(seen, "7ABC123") > _best(seen, "7ABC128") + 0.5


def test_the_enlarged_tiles_buffers_are_handed_back_after_the_search(detector) -> None:
    """Each enlarged tile is twice a frame's working set: the detector's arena is shrunk once the
    tiles are searched, so the daemon does not hold it from then on (the figures: daemon_memory.py)."""
    released: list[int] = []

    class Watched:
        def detect(self, image: np.ndarray, **kwargs: float):
            return detector.detect(image, **kwargs)

        def release_memory(self) -> None:
            released.append(1)
            detector.release_memory()

    frame, plate = _plate_in_frame("7ABC123", **SMALL)
    assert ZoomedFinder(Watched()).detect(frame) and released == [1]
    assert any(_inside(b.box, plate) for b in ZoomedFinder(detector).detect(frame))   # still finds after a release
