"""OpenCV plate finding: rows of character-like blobs of similar height.

Why: EasyOCR's own text detector costs seconds per frame on a Pi-class CPU. A row of
blobs of one height is a strong plate cue and yields a tight, deskewed text-line crop,
which the recogniser needs. The reader (:mod:`gatekeeper.vision.reader`) ranks and
reads these rows; the optional trained detector (:mod:`gatekeeper.vision.plate_detector`)
only says where to look more closely (:func:`rows_in_plate_box`).
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass

import cv2
import numpy as np


def stretch_contrast(grey: np.ndarray) -> np.ndarray:
    """Contrast stretch between the 5th and 95th percentile: the recogniser likes crisp crops."""
    lo, hi = np.percentile(grey, (5, 95))
    return np.clip((grey.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0)), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class TextRow:
    """A row of character-like blobs: where a plate's characters probably are."""

    box: tuple[float, float, float, float]   # x, y, w, h of the blobs, working-image pixels
    angle: float                        # degrees, from a line fit through blob centres
    char_height: float
    count: int
    score: float


def _components(binary: np.ndarray, min_h: int, max_h: int) -> np.ndarray:
    """Character-like connected components as rows of (x, y, w, h)."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return np.empty((0, 4), dtype=np.int32)
    s = stats[1:]
    x, y, w, h, area = s[:, 0], s[:, 1], s[:, 2], s[:, 3], s[:, 4]
    fill = area / np.maximum(w * h, 1)
    # A solid blob is a blotch, except a thin one: I and 1 in many plate typefaces are bars.
    max_fill = np.where(w < 0.3 * h, 1.01, 0.92)
    ok = (
        (h >= min_h) & (h <= max_h)
        & (h >= 0.75 * w) & (h <= 8.0 * w)
        & (fill > 0.18) & (fill < max_fill)
    )
    return np.stack([x[ok], y[ok], w[ok], h[ok]], axis=1).astype(np.int32)


def _group_rows(boxes: np.ndarray, min_count: int = 3) -> list[np.ndarray]:
    """Union blobs of similar height that sit side by side on one line."""
    n = len(boxes)
    if n < min_count:
        return []
    order = np.argsort(boxes[:, 0])
    b = boxes[order].astype(np.float64)
    x, y, w, h = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    cy = y + h / 2
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    right = x + w
    for i in range(n):
        reach = right[i] + 1.1 * h[i]
        j_end = int(np.searchsorted(x, reach, side="right"))
        if j_end <= i + 1:
            continue
        js = np.arange(i + 1, j_end)
        hr = h[js] / h[i]
        gap = x[js] - right[i]
        ok = (
            (hr > 0.75) & (hr < 1.33)
            & (np.abs(cy[js] - cy[i]) < 0.3 * np.maximum(h[js], h[i]))
            & (gap > -0.2 * h[i])
            & (np.abs(y[js] - y[i]) < 0.35 * h[i])
        )
        for j in js[ok]:
            ri, rj = find(i), find(int(j))
            if ri != rj:
                parent[rj] = ri
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[find(i)].append(i)
    return [b[idx] for idx in groups.values() if len(idx) >= min_count]


def _row_from_group(g: np.ndarray) -> TextRow | None:
    x, y, w, h = g[:, 0], g[:, 1], g[:, 2], g[:, 3]
    # Drop blobs nested inside others (holes / inner parts picked up by a second binarisation).
    x0, y0 = float(x.min()), float(y.min())
    x1, y1 = float((x + w).max()), float((y + h).max())
    hm = float(np.median(h))
    count = len(g)
    cx, cy = x + w / 2, y + h / 2
    angle = 0.0
    if count >= 3 and np.ptp(cx) > 0:
        slope = float(np.polyfit(cx, cy, 1)[0])
        angle = math.degrees(math.atan(slope))
    if abs(angle) > 25:
        return None
    width = x1 - x0
    if width < 1.5 * hm or width > 14 * hm:
        return None
    h_spread = float(np.std(h) / hm)
    # Plates carry 4-8 characters; rows far off that, or ragged, are weaker evidence.
    count_score = 1.0 - min(abs(count - 6.5), 5.0) / 6.0
    score = count_score + 0.5 * (1.0 - min(h_spread * 4, 1.0)) + 0.15 * math.log(hm)
    return TextRow((int(x0), int(y0), int(width), int(y1 - y0)), angle, hm, count, score)


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union else 0.0


def find_text_rows(
    grey: np.ndarray, *, max_rows: int = 8, min_h: int | None = None, max_h: int | None = None,
    blocks: tuple[int, ...] = (15, 31), offsets: tuple[int, ...] = (7,),
) -> list[TextRow]:
    """Rows of similar-height character blobs in a grey image, most plate-like first.

    Both polarities are searched (dark text on light plates and the reverse), with
    two adaptive-threshold window sizes so both small and large characters survive.
    Character heights default to 1/120 .. 1/3 of the image (a whole frame).
    """
    h_img = grey.shape[0]
    min_h = min_h or max(7, h_img // 120)
    max_h = max_h or max(min_h + 1, h_img // 3)
    rows: list[TextRow] = []
    for block, offset in itertools.product(blocks, offsets):
        for invert in (True, False):
            mode = cv2.THRESH_BINARY_INV if invert else cv2.THRESH_BINARY
            binary = cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, mode, block, offset)
            for g in _group_rows(_components(binary, min_h, max_h)):
                row = _row_from_group(g)
                if row is not None:
                    rows.append(row)
    rows.sort(key=lambda r: -r.score)
    kept: list[TextRow] = []
    for r in rows:
        if all(box_iou(r.box, k.box) < 0.5 for k in kept):
            kept.append(r)
        if len(kept) >= max_rows:
            break
    return kept


#: The second look's binarisations (:func:`find_more_rows`): smaller windows keep the strokes
#: of blurred or small characters apart, which the first look's windows merge into one blob
#: (a second offset, 12, cost twice the time for 3 more covered views of 648: not kept).
SECOND_LOOK_BLOCKS = (9, 21)
SECOND_LOOK_OFFSETS = (7,)
#: ... on the frame at these scales: a larger copy gives small plates' characters blobs.
SECOND_LOOK_SCALES = (1.0, 1.5)


def find_more_rows(
    grey: np.ndarray, known: "list[TextRow]", *, max_rows: int = 4, scales: tuple[float, ...] | None = None,
) -> list[TextRow]:
    """Rows a second, differently binarised look at ``grey`` finds where ``known`` rows are not.

    The image is first equalised locally (CLAHE): a dim, glared or blurred plate then has
    stroke contrast the adaptive threshold can separate. It is searched at each of
    ``scales`` (default :data:`SECOND_LOOK_SCALES`), rows returned in ``grey``'s pixels.
    Rows overlapping a known row (IoU >= 0.3) are dropped: those crops were read already.
    """
    equalised = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(grey)
    h_img = grey.shape[0]
    min_h = max(7, h_img // 120)
    found: list[TextRow] = []
    for f in SECOND_LOOK_SCALES if scales is None else scales:
        image = equalised if f == 1.0 else cv2.resize(equalised, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
        rows = find_text_rows(image, max_rows=max_rows + len(known), blocks=SECOND_LOOK_BLOCKS,
                              offsets=SECOND_LOOK_OFFSETS, min_h=int(min_h * (0.8 * f if f > 1 else 1.0)),
                              max_h=int(f * max(min_h + 1, h_img // 3)))
        found += [TextRow((r.box[0] / f, r.box[1] / f, r.box[2] / f, r.box[3] / f), r.angle, r.char_height / f,
                          r.count, r.score) for r in rows]
    kept: list[TextRow] = []
    for r in sorted(found, key=lambda r: -r.score):
        if all(box_iou(r.box, k.box) < 0.5 for k in kept) and all(box_iou(r.box, k.box) < 0.3 for k in known):
            kept.append(r)
    return kept[:max_rows]


def row_crop(
    grey: np.ndarray, row: TextRow, scale: float, *, pad_x: float = 0.45, pad_y: float = 0.22,
    real_x: float | None = None,
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Deskewed crop of a text row from the full-resolution grey image, and its box there.

    With ``real_x``, only that much of the horizontal padding is taken from the image; the
    rest is plain background: the recogniser gets the margin it likes without the frame
    edge, bolt or country strip beside the characters, which it would read as one more.
    """
    if real_x is not None and real_x < pad_x:
        crop, box = row_crop(grey, row, scale, pad_x=real_x, pad_y=pad_y)
        extra = int(round((pad_x - real_x) * row.char_height / scale))
        bg = int(np.median(crop))   # characters cover less of a tight row crop than the plate does
        return cv2.copyMakeBorder(crop, 0, 0, extra, extra, cv2.BORDER_CONSTANT, value=bg), box
    x, y, w, h = (v / scale for v in row.box)
    ch = row.char_height / scale
    cx, cy = x + w / 2, y + h / 2
    # The row box of a tilted line is taller than a character; the rotated crop is not.
    out_w = int(round(w / math.cos(math.radians(row.angle)) + 2 * pad_x * ch))
    out_h = int(round(ch * (1 + 2 * pad_y)))
    rot = cv2.getRotationMatrix2D((cx, cy), row.angle, 1.0)
    rot[0, 2] += out_w / 2 - cx
    rot[1, 2] += out_h / 2 - cy
    crop = cv2.warpAffine(grey, rot, (max(out_w, 8), max(out_h, 8)), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    bx = int(max(0, cx - out_w / 2))
    by = int(max(0, cy - out_h / 2))
    return crop, (bx, by, int(out_w), int(out_h))


def plate_outline(
    grey: np.ndarray, box: tuple[float, float, float, float],
) -> tuple[float, float, float, float] | None:
    """The plate's own light rectangle inside a detector ``box``, or None when none stands out.

    Why: a box from the detector often spans the plate's surround too (a bumper recess, a
    dealer frame), and rows and crops cut from it hold that surround's text and edges. A
    plate is the largest light, plate-shaped region of its box (Otsu's threshold); a dark
    plate or one merged with a light bumper has none, and the box stays as it is.
    """
    x, y, w, h = box
    full_h, full_w = grey.shape[:2]
    x0, y0 = max(0, int(x - 0.05 * w)), max(0, int(y - 0.1 * h))
    x1, y1 = min(full_w, int(x + 1.05 * w)), min(full_h, int(y + 1.1 * h))
    if x1 - x0 < 16 or y1 - y0 < 8:
        return None
    sub = cv2.GaussianBlur(grey[y0:y1, x0:x1], (3, 3), 0)
    _, light = cv2.threshold(sub, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    contours, _ = cv2.findContours(light, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    area = float(sub.shape[0] * sub.shape[1])
    for contour in sorted(contours, key=cv2.contourArea, reverse=True)[:3]:
        rx, ry, rw, rh = cv2.boundingRect(contour)
        if rh >= 8 and 1.3 <= rw / rh <= 4.0 and 0.12 * area <= rw * rh <= 0.9 * area:
            return (float(x0 + rx), float(y0 + ry), float(rw), float(rh))
    return None


#: Bands of a plate box read when no row gave a plate (:func:`plate_bands`): heights as shares of
#: the box's height, centres as shares down it. A US plate's characters fill about half its
#: height, between the state's name and a dealer frame's text, a little below the middle.
BAND_SHARES = (0.45, 0.55, 0.65)
BAND_CENTRES = (0.45, 0.5, 0.55, 0.6)


def plate_bands(
    grey: np.ndarray, box: tuple[float, float, float, float], *,
    shares: tuple[float, ...] = BAND_SHARES, centres: tuple[float, ...] = BAND_CENTRES,
) -> list[np.ndarray]:
    """Horizontal bands of a plate box, each a crop for the recogniser (contrast stretched, with
    half a band's height of plain background each side, as :func:`row_crop` pads its rows).

    Why: where the characters touch the plate's frame or its text no row of separate blobs
    exists, and the whole box reads the state name and the dealer's text with the characters.
    """
    x, y, w, h = box
    full_h, full_w = grey.shape[:2]
    xa, xb = int(max(0, x - 0.02 * w)), int(min(full_w, x + 1.02 * w))
    crops = []
    for share in shares:
        for centre in centres:
            ya, yb = int(max(0, y + (centre - share / 2) * h)), int(min(full_h, y + (centre + share / 2) * h))
            if yb - ya < 6 or xb - xa < 10:
                continue
            band = grey[ya:yb, xa:xb]
            pad = (yb - ya) // 2
            band = cv2.copyMakeBorder(band, 0, 0, pad, pad, cv2.BORDER_CONSTANT, value=int(np.median(band)))
            crops.append(stretch_contrast(band))
    return crops


#: A detected plate is brought to about this height (px) before its rows are looked for:
#: the row finder's thresholds suit characters of 20-60 px.
PLATE_ROW_HEIGHT = 80.0


def rows_in_plate_box(
    grey: np.ndarray, box: tuple[float, float, float, float], scale: float, *, max_rows: int = 2,
) -> list[TextRow]:
    """Text rows inside a detected plate box of the full-resolution ``grey``, as rows of the
    working image (``scale`` of full resolution), so :func:`row_crop` cuts them as usual.

    The box is widened (detector boxes are coarse: 4 working pixels) and brought to
    :data:`PLATE_ROW_HEIGHT`, so tiny plates get blobs the finder can use and characters
    are looked for at plate size (1/5 .. 0.95 of the plate's height), not frame size.
    """
    x, y, w, h = box
    full_h, full_w = grey.shape[:2]
    # A margin of plate around the box; wider (0.3 w + 0.5 h) let bumper text join small plates' rows.
    mx, my = 0.1 * w + 0.3 * h, 0.35 * h
    x0, y0 = max(0, int(x - mx)), max(0, int(y - my))
    x1, y1 = min(full_w, int(x + w + mx)), min(full_h, int(y + h + my))
    if x1 - x0 < 8 or y1 - y0 < 6:
        return []
    u = float(np.clip(PLATE_ROW_HEIGHT / max(h, 1.0), 0.5, 4.0))
    crop = cv2.resize(grey[y0:y1, x0:x1], None, fx=u, fy=u,
                      interpolation=cv2.INTER_CUBIC if u > 1 else cv2.INTER_AREA)
    plate_h = h * u
    limits = {"max_rows": max_rows, "min_h": max(6, int(0.2 * plate_h)), "max_h": int(0.95 * plate_h) + 1}
    # A blurred or dim plate has no separate blobs at a fixed threshold offset: look again in a
    # sharpened, contrast-stretched copy (blur perturbation, ground-truth boxes: us 59 -> 77 %).
    crisp = stretch_contrast(np.clip(crop.astype(np.float32) * 2.0 - cv2.GaussianBlur(crop, (0, 0), 3), 0, 255).astype(np.uint8))
    rows: list[TextRow] = []
    for r in sorted(find_text_rows(crop, **limits) + find_text_rows(crisp, **limits), key=lambda r: -r.score):
        if all(box_iou(r.box, k.box) < 0.5 for k in rows):
            rows.append(r)
    rows = rows[:max_rows]
    f = scale / u
    return [
        TextRow((x0 * scale + r.box[0] * f, y0 * scale + r.box[1] * f, r.box[2] * f, r.box[3] * f),
                r.angle, r.char_height * f, r.count, r.score)
        for r in rows
    ]
