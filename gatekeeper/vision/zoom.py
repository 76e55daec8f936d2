"""Small plates: the plate detector run again on the frame enlarged, one tile at a time.

Why: the detector works on a frame of about 960 px (:class:`gatekeeper.vision.plate_detector.PlateDetector`),
so a plate 55 px wide in a 1280 px scene arrives about 40 px wide, and its blob is lost among bumper
and grille shapes. Enlarged twice, tile by tile, the same plate is among the surest boxes (dev sample:
``CH0P8Y``, ``CCV020`` and ``J868321``'s plates, none or rank 2-7 in the whole frame, rank 0-1 in
a tile; docs/anpr.md, "Small plates"). A frame costs 8-15 detector runs (about 120 ms CPU in all), so
this is only for a vehicle about to be left to the attendant: the closer look deblurs the tiles'
surest box, and an entry no other look has read gets the first look on their boxes. No I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from gatekeeper.vision.plate_finder import box_iou

if TYPE_CHECKING:
    from gatekeeper.vision.closer import PlateFinder
    from gatekeeper.vision.plate_detector import PlateBox

#: How much each tile is enlarged.
ZOOM = 2.0
#: The enlarged tile's side: the detector's working size, so a tile is read at full resolution.
TILE = 960
#: Tiles overlap by this many frame pixels: more than a small plate's width, so one tile holds it whole.
OVERLAP = 120
#: A box overlapping another this much (intersection over union) is the same plate.
SAME_IOU = 0.3


def tile_starts(length: int, side: int, overlap: int) -> list[int]:
    """Where tiles of ``side`` start along ``length`` pixels, overlapping by ``overlap``; the last ends at the edge."""
    if length <= side:
        return [0]
    step = max(1, side - overlap)
    starts = list(range(0, length - side, step))
    return starts + [length - side]


class ZoomedFinder:
    """A :class:`~gatekeeper.vision.closer.PlateFinder` that finds the plates ``finder`` finds only in the
    frame enlarged ``zoom`` times: boxes overlapping one of ``finder``'s own ``skip`` surest boxes
    (which the first look has read already) are left out."""

    def __init__(self, finder: "PlateFinder", *, zoom: float = ZOOM, tile: int = TILE, overlap: int = OVERLAP,
                 skip: int = 4) -> None:
        if zoom < 1.0 or tile < 32:
            raise ValueError(f"zoom must be at least 1 and tile at least 32 px, got {zoom} and {tile}")
        self.finder = finder
        self.zoom = zoom
        self.side = int(tile / zoom)
        self.overlap = min(overlap, self.side // 2)
        self.skip = skip

    def detect(self, image: np.ndarray, **kwargs: float) -> "list[PlateBox]":
        """The new plate boxes in frame pixels, most certain first (keywords go to ``finder.detect``)."""
        from gatekeeper.vision.plate_detector import PlateBox

        if image is None or image.size == 0 or image.ndim not in (2, 3):
            raise ValueError("not an image")
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        seen: Sequence[PlateBox] = self.finder.detect(grey, **kwargs)[: self.skip]
        found: list[PlateBox] = []
        h, w = grey.shape[:2]
        z = self.zoom
        for y0 in tile_starts(h, self.side, self.overlap):
            for x0 in tile_starts(w, self.side, self.overlap):
                tile = cv2.resize(grey[y0: y0 + self.side, x0: x0 + self.side], None, fx=z, fy=z,
                                  interpolation=cv2.INTER_CUBIC)
                for box in self.finder.detect(tile, **kwargs):
                    found.append(PlateBox(_to_frame(box.box, z, x0, y0), box.score,
                                          None if box.core is None else _to_frame(box.core, z, x0, y0), box.contrast))
        release = getattr(self.finder, "release_memory", None)   # PlateDetector: the tiles' buffers
        if callable(release):
            release()
        found.sort(key=lambda b: -b.score)
        out: list[PlateBox] = []
        for box in found:   # the surest copy of a plate two tiles share; none the first look read
            if all(box_iou(box.box, other.box) <= SAME_IOU for other in (*seen, *out)):
                out.append(box)
        return out


def _to_frame(box: tuple[float, float, float, float], zoom: float, x0: int, y0: int) -> tuple[float, float, float, float]:
    x, y, w, h = box
    return (x / zoom + x0, y / zoom + y0, w / zoom, h / zoom)
