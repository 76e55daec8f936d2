"""Which rows of a frame the plate reader reads, and how each is cut out for the recogniser.

OpenCV's rows of character-like blobs come first; the plate detector's boxes add rows where OpenCV
has none, mark the rows on a plate, and its surest boxes are also read whole (:func:`box_row`).
Pure functions, no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np

from gatekeeper.vision.plate_finder import TextRow, box_iou, rows_in_plate_box
from gatekeeper.vision.votes import RowCandidate

if TYPE_CHECKING:
    from gatekeeper.vision.plate_detector import PlateBox


class View(NamedTuple):
    """How a row is cut out for the recogniser: paddings in character heights.

    Only ``real_x`` of the horizontal padding is image; the rest is plain background
    (see :func:`row_crop`).
    """

    pad_x: float
    pad_y: float
    real_x: float = 0.12


#: The first view finds the best rows; the rest are extra views of the leading rows,
#: whose readings are pooled.
FIRST_VIEW = View(1.0, 0.08)
EXTRA_VIEWS = (View(0.45, 0.22), View(1.0, 0.15), View(0.7, 0.3))


#: The exit's closer look also reads the most plate-like rows wide, with this much real image each side
#: (in character heights): a row the finder cut short at an emblem, a state graphic or a bolt
#: (``RK-48`` of ``RK-485AF`` beside the coat of arms, ``664`` of ``EUS [graphic] 664``) holds the
#: whole plate in one of them. Scored as evidence only, never voted (docs/anpr.md, "Wide views").
WIDE_VIEWS = (View(1.5, 0.15, 1.5), View(2.5, 0.15, 2.5))
#: ... of this many rows, those on a detected plate first.
WIDE_ROWS = 3


def wide_rows(candidates: Sequence[RowCandidate]) -> list[TextRow]:
    """The rows the wide views are cut from: on a plate box first, then in the finder's order."""
    ranked = sorted(candidates, key=lambda c: (-c.bonus, c.rank))
    return [c.row for c in ranked[:WIDE_ROWS]]


#: A detector box at least this sure is also read whole (:func:`box_row`), unless a row covers it.
BOX_ROW_MIN_SCORE = 0.9
#: ... its middle band of this share of the box's height is the line. 0.4-0.6 covered 1-3 more dev views
#: (docs/anpr.md) but cuts the characters where the box hugs them, as it does on drawn plates.
BOX_ROW_BAND = 0.8


def box_row(box: tuple[float, float, float, float], scale: float) -> TextRow:
    """A detected plate box as a text row of the working image: its middle :data:`BOX_ROW_BAND`
    of height is the line (a plate's characters fill most of it; the frame's text above and below is cut),
    so :func:`row_crop` with the first view cuts about that band."""
    x, y, w, h = box
    band = BOX_ROW_BAND * h
    return TextRow((x * scale, (y + (h - band) / 2) * scale, w * scale, band * scale), 0.0,
                   band * scale / (1 + 2 * FIRST_VIEW.pad_y), 0, 0.0)


def candidate_rows(
    grey: np.ndarray, rows: list[TextRow], scale: float, boxes: "Sequence[PlateBox]", *,
    detector_rows: int, box_rows: int, plate_bonus: float,
) -> list[RowCandidate]:
    """OpenCV's whole-frame ``rows``, plus up to ``detector_rows`` rows found inside the detector's
    plate ``boxes`` where OpenCV has none; rows inside a box get ``plate_bonus``. The detector
    only adds and marks (measured: letting its rows replace OpenCV's, or rank first, lost reads)."""
    rows = list(rows)
    added = 0
    for det in boxes if detector_rows > 0 else []:
        for row in rows_in_plate_box(grey, det.box, scale, max_rows=1):
            if added < detector_rows and all(box_iou(row.box, k.box) < 0.3 for k in rows):
                rows.append(row)
                added += 1

    def inside(row: TextRow, box: tuple[float, float, float, float]) -> bool:
        x, y, w, h = box
        cx, cy = (row.box[0] + row.box[2] / 2) / scale, (row.box[1] + row.box[3] / 2) / scale
        return x - 0.2 * w <= cx <= x + 1.2 * w and y - 0.5 * h <= cy <= y + 1.5 * h

    def on_plate(row: TextRow) -> bool:
        return any(inside(row, d.box) for d in boxes)

    # The surest plate boxes are also read whole, as one line (box_row): where a plate's
    # characters touch its frame or each other no blobs separate, and rows found inside it
    # may be the frame's dealer text.
    sure = [box_row(d.box, scale) for d in boxes if d.score >= BOX_ROW_MIN_SCORE][:box_rows]
    rows += [b for b in sure if all(box_iou(b.box, r.box) < 0.5 for r in rows)]
    return [RowCandidate(row, i, bonus=plate_bonus if on_plate(row) else 0.0) for i, row in enumerate(rows)]
