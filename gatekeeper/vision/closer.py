"""The closer look: which plate boxes a vehicle about to be left to the attendant has read again
deblurred (:mod:`gatekeeper.vision.deblur` does the deblurring), and how the sharpened copies agree
on a read.

At an exit the copies' probabilities are scored against the sessions inside
(:meth:`CloserLook.evidence`); at an entry they vote for a plate (:meth:`CloserLook.read`): a soft or dim plate that no
single crop reads surely is read alike through several kernels, while scenery and mush read
differently through each (docs/anpr.md, "The entry's closer read"). No I/O.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Callable, Protocol, Sequence, TypeVar

import numpy as np

from gatekeeper.vision.deblur import deblurred_crops
from gatekeeper.vision.observation import Glimpse, Observation, PlateRead
from gatekeeper.vision.plate_finder import TextRow, box_iou
from gatekeeper.vision.plate_formats import Decoded, PlateGrammar, normalise
from gatekeeper.vision.recognition import Recognition, Seen

if TYPE_CHECKING:
    from gatekeeper.vision.plate_detector import PlateBox

Box = tuple[float, float, float, float]
PixelBox = tuple[int, int, int, int]
Job = TypeVar("Job")

#: Plate boxes the closer look deblurs, the surest first. Text-covered vans and trucks put a phone
#: number or a slogan above the plate (docs/anpr.md, stop 30): the plate is then the second box.
CLOSER_LOOK_BOXES = 2
#: ... and the surest plate boxes this many that only the frame enlarged shows (:mod:`gatekeeper.vision.zoom`):
#: on the dev sample's exit copies the detector missed or ranked low a scaled or blurred plate the
#: enlarged tiles rank first (docs/anpr.md, "Small plates").
CLOSER_ZOOM_BOXES = 1
#: The closer look also deblurs a blob's core (``PlateBox.core``) unless it overlaps the box this much.
CORE_SAME_IOU = 0.9
#: A closer read (an entry's closer look) needs this many deblurred crops to read one listed-layout
#: plate alike, each at least this sure, and twice as many as any other reading (dev sample: the
#: plates read 5-7 times, mush once each; docs/anpr.md).
CLOSER_READ_MIN_VOTES = 3
CLOSER_READ_MIN_CONFIDENCE = 0.5


class PlateFinder(Protocol):
    """Where plates are in a frame (:class:`gatekeeper.vision.plate_detector.PlateDetector`)."""

    def detect(self, image: np.ndarray, *, min_contrast: float = ...) -> "Sequence[PlateBox]": ...


def closer_boxes(finder: PlateFinder, grey: np.ndarray, zoomed: "Sequence[PlateBox]" = ()) -> list[Box]:
    """The boxes the closer look deblurs: the two surest plate boxes (as the first look found them), and
    the core of the surest blob of any contrast where that is elsewhere. A washed-out or dark exit photo's
    plate can fall below the first look's contrast floor, and a blurred plate's blob spreads into its
    surround while its core stays on the characters (docs/anpr.md, "Closer look at the blob's core").
    Of ``zoomed`` (the boxes only the enlarged frame shows, surest first), also the first
    :data:`CLOSER_ZOOM_BOXES`."""
    from gatekeeper.vision.plate_detector import FLAT_CONTRAST

    out = [d.box for d in finder.detect(grey)[:CLOSER_LOOK_BOXES]]
    found = finder.detect(grey, min_contrast=FLAT_CONTRAST)
    core = found[0].core if found else None
    if core is not None and all(box_iou(core, b) < CORE_SAME_IOU for b in out):
        out.append(core)
    return out + [d.box for d in zoomed[:CLOSER_ZOOM_BOXES]]


def closer_crops(
    finder: PlateFinder, grey: np.ndarray, *, whole_row: Callable[[Box], TextRow], pad_x: float, pad_y: float,
    real_x: float, zoomed: "Sequence[PlateBox]" = (),
) -> list[tuple[np.ndarray, PixelBox]]:
    """Every recogniser crop of the closer look, with the box it was cut from (full-resolution pixels)."""
    return [(crop, (int(round(box[0])), int(round(box[1])), int(round(box[2])), int(round(box[3]))))
            for box in closer_boxes(finder, grey, zoomed)
            for crop in deblurred_crops(grey, box, whole_row=whole_row, pad_x=pad_x, pad_y=pad_y, real_x=real_x)]


def agreed_reading(readings: Sequence[tuple["Decoded | None", Job]]) -> tuple["Decoded", Job] | None:
    """The listed-layout reading the copies agree on (its surest copy), or None: at least
    :data:`CLOSER_READ_MIN_VOTES` copies read it :data:`CLOSER_READ_MIN_CONFIDENCE` sure, twice as
    many as any other reading."""
    votes: dict[str, list[tuple[Decoded, Job]]] = defaultdict(list)
    for decoded, job in readings:
        if decoded is not None and not decoded.fallback and decoded.confidence >= CLOSER_READ_MIN_CONFIDENCE:
            votes[decoded.plate].append((decoded, job))
    ranked = sorted(votes.values(), key=len, reverse=True)
    if not ranked or len(ranked[0]) < CLOSER_READ_MIN_VOTES or (len(ranked) > 1 and len(ranked[0]) < 2 * len(ranked[1])):
        return None
    return max(ranked[0], key=lambda dj: dj[0].confidence)


class CloserLook:
    """One reader's closer look: ``finder``'s surest boxes (and the enlarged frame's) deblurred, read by ``recognition``.

    ``whole_row`` turns a box into the text row it is cut as, ``view`` is the (pad_x, pad_y, real_x)
    of that cut: the reader's first view, so a sharpened crop is cut as the first look cut the plate.
    """

    def __init__(
        self, *, finder: PlateFinder, recognition: Recognition, whole_row: Callable[[Box], TextRow],
        view: tuple[float, float, float],
    ) -> None:
        self._finder = finder
        self._recognition = recognition
        self._whole_row = whole_row
        self._view = view

    def _seen(
        self, grey: np.ndarray, grammar: PlateGrammar, zoomed: "Sequence[PlateBox]",
    ) -> list[Seen[tuple[np.ndarray, PixelBox]]]:
        pad_x, pad_y, real_x = self._view
        jobs = closer_crops(self._finder, grey, whole_row=self._whole_row, pad_x=pad_x, pad_y=pad_y, real_x=real_x,
                            zoomed=zoomed)
        return self._recognition.read_jobs(jobs, grammar)

    def evidence(self, grey: np.ndarray, grammar: PlateGrammar, *, zoomed: "Sequence[PlateBox]" = ()) -> tuple[Glimpse, ...]:
        """Every deblurred crop's probabilities, the second opinions' included: for an exit's scoring.
        ``zoomed``: the boxes only the enlarged frame shows (:class:`gatekeeper.vision.zoom.ZoomedFinder`)."""
        return self._recognition.evidence(self._seen(grey, grammar, zoomed), grammar)

    def read(
        self, grey: np.ndarray, grammar: PlateGrammar, *, region: str, offset: tuple[int, int] = (0, 0),
        zoomed: "Sequence[PlateBox]" = (),
    ) -> Observation:
        """The plate the copies agree on (:func:`agreed_reading`) as a read, and their probabilities:
        for an entry with no whole read. ``offset`` places the read's box in the whole frame."""
        seen = self._seen(grey, grammar, zoomed)
        evidence = tuple(glimpse for glimpse, _, _ in seen)
        agreed = agreed_reading([(decoded, job) for _, decoded, job in seen])
        if agreed is None:
            return Observation(None, evidence)
        decoded, (crop, (x, y, w, h)) = agreed
        return Observation(PlateRead(
            text=decoded.text, normalised=normalise(decoded.plate), confidence=round(decoded.confidence, 4),
            box=(x + offset[0], y + offset[1], w, h), crop=crop, region=region,
        ), evidence)
