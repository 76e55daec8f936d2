"""Plate reader: cheap OpenCV plate finding, EasyOCR recognition, grammar decoding.

Why this shape: EasyOCR's own text detector costs seconds per frame on a Pi-class
CPU, while its recogniser reads one text line in ~25 ms. So plates are found
with OpenCV as *rows of character-like blobs of similar height* (a strong plate
cue that also yields a tight, deskewed text-line crop, which the recogniser
needs: it reads whole plates with state names and frames badly), the best few
rows are recognised in one batch, and each is decoded through the region's
plate layouts (see :mod:`gatekeeper.vision.plate_formats`), which resolves O/0, I/1,
B/8 ... by position. Which rows are read and how they are cut: :mod:`gatekeeper.vision.candidates`;
the networks: :mod:`gatekeeper.vision.recognition`; the closer look: :mod:`gatekeeper.vision.closer`.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from gatekeeper.vision.recognizer import PLATE_RECOGNIZER, ModelNotFoundError, Recognizer
from gatekeeper.vision.onnx_recognizer import load_recognizer
from gatekeeper.vision.observation import Glimpse, Observation, PlateRead, glimpse
from gatekeeper.vision.plate_formats import Decoded, PlateGrammar, normalise, raw_reading, reduce_probabilities
from gatekeeper.vision.plate_finder import (  # noqa: F401  (find_text_rows, rows_in_plate_box: public here too)
    TextRow,
    row_crop,
    stretch_contrast,
    find_more_rows,
    find_text_rows,
    plate_bands,
    rows_in_plate_box,
)
from gatekeeper.vision.closer import CloserLook, PlateFinder
from gatekeeper.vision.consolidate import PlateConsolidator
from gatekeeper.vision.candidates import (  # noqa: F401  (the views and box_row: public here too)
    BOX_ROW_MIN_SCORE,
    EXTRA_VIEWS,
    FIRST_VIEW,
    WIDE_VIEWS,
    View,
    box_row,
    candidate_rows,
    wide_rows,
)
from gatekeeper.vision.recognition import Recognition
from gatekeeper.vision.scoring import loosen_edges
from gatekeeper.vision.votes import PLATE_BONUS, RowCandidate
from gatekeeper.vision.zoom import ZoomedFinder

if TYPE_CHECKING:
    from gatekeeper.config import AnprConfig
    from gatekeeper.vision.plate_detector import PlateBox

__all__ = [
    "Glimpse",
    "ModelNotFoundError",
    "Observation",
    "PlateConsolidator",
    "PlateRead",
    "PlateReader",
    "find_text_rows",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- reader


#: When the most plate-like row (geometry rank 0) reads at least this sure through a listed
#: layout, the other candidate rows are not read: about 30 % less CPU per photo on the
#: benchmark with the same exact reads (docs/anpr.md). Fallback readings never reach it (0.7x).
SURE_FIRST_ROW = 0.9

#: When no row read in the first look scores this well, the frame gets a second look
#: (:func:`gatekeeper.vision.plate_finder.find_more_rows`): other binarisations find rows of
#: blurred, dim or small plates that the first look's blobs merged or lost (docs/anpr.md).
SECOND_LOOK_BELOW = 0.6

#: A small plate's read (:meth:`PlateReader.small_plate_read`, an entry's last look) must be a whole
#: plate at least this sure. Its boxes are the ones the first look did not read, so it sees scenery
#: too: read alone on the 216 dev photos, what it read as a whole plate off the plate (dealer text,
#: bumpers, Brazilian cars' surroundings) came out at 0.53-0.76 but for one truck slogan, the plate
#: itself (or a misread of it) at 0.8 and up, 28 times, but for two (docs/anpr.md, "Small plates").
SMALL_PLATE_MIN_CONFIDENCE = 0.8

#: Dates and clock times: the timestamp a camera burns into its pictures, never a plate.
_OVERLAY = re.compile(
    r"\d{2,4}[-/.:]\d{1,2}[-/.:]\d{1,4}"            # 2024-05-02, 02.05.24, 12:30:05
    r"|(?:19|20)\d\d[-/.][01]?\d(?!\d)"              # 2024-05
    r"|(?<![A-Z0-9])(?:[01]?\d|2[0-3]):[0-5]\d(?!\d)"  # 12:30, not a plate's "3B9:7236" smudge
)


def looks_like_overlay(raw: str) -> bool:
    """True for a date or time of day as the recogniser spelt it (with its punctuation)."""
    return bool(_OVERLAY.search(raw.replace(" ", "")))


def _at_frame_edge(row: TextRow, frame_h: float) -> bool:
    """True for a row touching the top or bottom 2 % of the frame, where cameras burn in their
    timestamp. Read there as digits only, it is taken for one: the plate_g2 network reads the
    date's digits but, trained on plates, not always its dashes and colons."""
    y, h = row.box[1], row.box[3]
    return y <= 0.02 * frame_h or y + h >= 0.98 * frame_h


def same_line(a: TextRow, b: TextRow) -> bool:
    """True when two rows are pieces of one line of text: same height, same baseline band."""
    ratio = a.char_height / b.char_height
    ay, by = a.box[1] + a.box[3] / 2, b.box[1] + b.box[3] / 2
    return 0.7 < ratio < 1.4 and abs(ay - by) < 0.5 * max(a.char_height, b.char_height)


#: A read from a sure box's bands (:func:`plate_bands`, when no row gave a plate) is taken only
#: through a listed layout and at least this sure: the bands also cut the state's name and the
#: dealer's text, which read as plates now and then (dev sample, docs/anpr.md "Plate bands").
BAND_READ_MIN_CONFIDENCE = 0.9
#: ... and the bands are read when the rows' best reading is below this (or below ``min_confidence``),
#: or is only a fallback layout's (``NW252`` of ``ANW2529``): the lane takes no such read as a plate.
BANDS_BELOW = 0.5

def _grey_in(image: np.ndarray, roi: tuple[int, int, int, int] | None) -> tuple[np.ndarray, int, int]:
    """The grey image within ``roi`` and the roi's offset; ValueError for a non-image or a roi outside it."""
    if image is None or image.size == 0 or image.ndim not in (2, 3):
        raise ValueError("not an image")
    ox = oy = 0
    if roi is not None:
        rx, ry, rw, rh = roi
        ox, oy = max(0, rx), max(0, ry)
        full_h, full_w = image.shape[:2]
        image = image[oy: ry + rh, ox: rx + rw]
        if image.size == 0:
            raise ValueError(f"roi {roi} lies outside the {full_w}x{full_h} image")
    return (image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)), ox, oy


def _shipped_detector() -> "PlateFinder":
    from gatekeeper.vision.plate_detector import PlateDetector   # onnxruntime only when configured

    return PlateDetector(threads=1)


class PlateReader:
    """Reads one plate per image for one region's plate layouts."""

    def __init__(
        self,
        *,
        region: str = "eu",
        formats: dict[str, list[str]] | None = None,
        model_dir: Path | None = None,
        min_confidence: float = 0.5,
        threads: int = 2,
        recognizer: Recognizer | None = None,
        recognizer_name: str = PLATE_RECOGNIZER,
        tuning_file: Path | None = None,
        runtime: str = "onnx",
        work_size: int = 1280,
        max_candidates: int = 4,
        refine: int = 2,
        detector: "PlateFinder | None" = None,
        detector_rows: int = 2,
        box_rows: int = 1,
        plate_bonus: float = PLATE_BONUS,
        second_look_below: float = SECOND_LOOK_BELOW,
        second_look_rows: int = 4,
        plate_bands: bool = True,
        second_opinions: Sequence[Recognizer] = (),
    ) -> None:
        self.region = region
        self.min_confidence = min_confidence
        self._formats = dict(formats or {})
        self._grammars: dict[str, PlateGrammar] = {}
        self._grammar(region)   # unknown region: fail now, not on the first car
        self._work_size = work_size
        self._max_candidates = max_candidates
        self._refine = refine
        self._detector = detector
        self._detector_rows = detector_rows
        self._box_rows = box_rows
        self._plate_bonus = plate_bonus
        self._second_look_below = second_look_below
        self._second_look_rows = second_look_rows
        self._plate_bands = plate_bands
        started = time.perf_counter()
        self._recognition = Recognition(recognizer or load_recognizer(
            runtime=runtime, model_dir=model_dir, threads=threads, name=recognizer_name, tuning_file=tuning_file
        ), second_opinions=second_opinions)
        self._zoomed = None if detector is None else ZoomedFinder(detector, skip=max_candidates)
        self._closer = None if detector is None else CloserLook(
            finder=detector, recognition=self._recognition, whole_row=lambda b: box_row(b, 1.0), view=FIRST_VIEW)
        self.load_seconds = time.perf_counter() - started

    @classmethod
    def from_config(
        cls, anpr: "AnprConfig", *, recognizer: Recognizer | None = None, detector: "PlateFinder | None" = None,
        second_opinions: Sequence[Recognizer] = (),
    ) -> "PlateReader":
        """The reader ``anpr`` describes; ``recognizer``, ``second_opinions`` and ``detector``, when
        given, are models already loaded (shared with another lane direction's reader)."""
        if detector is None and anpr.plate_detector:
            detector = _shipped_detector()
        return cls(
            region=anpr.region,
            formats=anpr.formats,
            model_dir=anpr.model_dir,
            # A reader may serve both kinds of lane: it hands out reads down to the lowest floor, each lane keeps its own.
            min_confidence=min(anpr.min_confidence, anpr.entry_min_confidence),
            threads=anpr.threads,
            recognizer=recognizer,
            recognizer_name=anpr.recognizer,
            tuning_file=anpr.tuning_file,
            runtime=anpr.runtime,
            detector=detector if anpr.plate_detector else None,
            second_look_rows=4 if anpr.second_look else 0,
            second_opinions=second_opinions,
        )

    @property
    def recognizer(self) -> Recognizer | None:
        """The recogniser this reader reads with (None once closed)."""
        return self._recognition.recognizer

    @property
    def second_opinions(self) -> tuple[Recognizer, ...]:
        """Recognisers whose probabilities of the same crops join the evidence, not the vote."""
        return self._recognition.second_opinions

    @property
    def detector(self) -> "PlateFinder | None":
        return self._detector

    def _grammar(self, region: str) -> PlateGrammar:
        grammar = self._grammars.get(region)
        if grammar is None:
            grammar = self._grammars[region] = PlateGrammar.for_region(region, self._formats)
        return grammar

    def _boxes(self, grey: np.ndarray) -> "list[PlateBox]":
        """The detector's plate boxes, surest first (none without a detector)."""
        return list(self._detector.detect(grey)[: self._max_candidates]) if self._detector is not None else []

    def _working(self, grey: np.ndarray) -> tuple[np.ndarray, float]:
        """The working image rows are looked for in (at most ``work_size`` wide) and its scale."""
        scale = min(1.0, self._work_size / max(grey.shape[:2]))
        work = grey if scale == 1.0 else cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return work, scale

    def _candidates(
        self, grey: np.ndarray, work: np.ndarray, scale: float, boxes: "Sequence[PlateBox] | None" = None,
    ) -> list[RowCandidate]:
        """The rows this frame reads (:func:`gatekeeper.vision.candidates.candidate_rows`)."""
        rows = find_text_rows(work, max_rows=self._max_candidates)
        if self._detector is None:
            return [RowCandidate(row, i) for i, row in enumerate(rows)]
        return candidate_rows(grey, rows, scale, self._boxes(grey) if boxes is None else boxes,
                              detector_rows=self._detector_rows, box_rows=self._box_rows, plate_bonus=self._plate_bonus)

    def _read_views(
        self,
        grey: np.ndarray,
        scale: float,
        grammar: PlateGrammar,
        jobs: list[tuple[RowCandidate, View]],
        overlays: list[TextRow] | None = None,
        evidence: list[tuple[RowCandidate, Glimpse]] | None = None,
    ) -> None:
        """Read each (candidate, view) and add its decoding to the candidate.

        Rows that read as a date or time, or as digits only at the frame's edge, go to
        ``overlays`` instead; every other crop's folded probabilities go to ``evidence``.
        """
        recognizer = self._recognition.reader
        crops = [row_crop(grey, cand.row, scale, pad_x=v.pad_x, pad_y=v.pad_y, real_x=v.real_x) for cand, v in jobs]
        views = [stretch_contrast(c) for c, _ in crops]
        alphabet = recognizer.alphabet
        frame_h = grey.shape[0] * scale
        read: list[tuple[RowCandidate, np.ndarray]] = []   # crops that became evidence, for the second opinions
        for (cand, _), (crop, box), view, probs in zip(jobs, crops, views, recognizer.probabilities(views)):
            dated = looks_like_overlay(raw_reading(probs, alphabet))
            decoded = [] if dated else grammar.decode(reduce_probabilities(probs, alphabet), top=1)
            if dated or (decoded and decoded[0].plate.isdigit() and _at_frame_edge(cand.row, frame_h)):
                if overlays is not None:
                    overlays.append(cand.row)
                continue
            seen = glimpse(probs, alphabet, decoded)
            if decoded:
                cand.add(decoded[0], crop, box, seen.matrix)
            if evidence is not None:
                evidence.append((cand, seen))
                read.append((cand, view))
        if evidence is not None:
            owners = [c for c, _ in read] * len(self._recognition.second_opinions)   # each opinion's crops in turn
            evidence += zip(owners, self._recognition.second_glimpses([v for _, v in read], grammar))

    def _read_bands(
        self, grey: np.ndarray, grammar: PlateGrammar, boxes: "Sequence[PlateBox]",
    ) -> list[tuple[Glimpse, Decoded | None, tuple[np.ndarray, tuple[int, int, int, int]]]]:
        """The surest plate box read in bands (:func:`plate_bands`): each band's evidence, its grammar
        reading (or None) and the crop with the box, for a photo no row gave a plate."""
        sure = [d for d in boxes if d.score >= BOX_ROW_MIN_SCORE][: 1 if self._plate_bands else 0]
        jobs = [(crop, tuple(int(round(v)) for v in d.box)) for d in sure for crop in plate_bands(grey, d.box)]
        return self._recognition.read_jobs(jobs, grammar)

    def closer_look(
        self,
        image: np.ndarray,
        *,
        region: str | None = None,
        roi: tuple[int, int, int, int] | None = None,
    ) -> tuple[Glimpse, ...]:
        """The probabilities of the two surest plate boxes (and blob core) read again deblurred
        (:class:`gatekeeper.vision.closer.CloserLook`, :mod:`gatekeeper.vision.deblur`).

        The most plate-like rows are also read wide (:meth:`wide_look`). For a vehicle the lane would
        otherwise hand to the attendant: about 6 s CPU with one second opinion (docs/anpr.md, stop 30).
        No plate detector configured: nothing (the OpenCV rows are already read).
        """
        found = self._closer_grey(image, roi)
        if found is None or self._closer is None:
            return ()
        grammar = self._grammar(region or self.region)
        return (*self._closer.evidence(found[0], grammar, zoomed=self._zoomed_boxes(found[0])),
                *self._wide_evidence(found[0], grammar))

    def wide_look(
        self,
        image: np.ndarray,
        *,
        region: str | None = None,
        roi: tuple[int, int, int, int] | None = None,
    ) -> tuple[Glimpse, ...]:
        """The probabilities of the most plate-like rows cut wide (:data:`candidates.WIDE_VIEWS`): a
        row the finder cut short at an emblem or a graphic holds the whole plate there. Part of
        :meth:`closer_look`; alone for calibration (benchmarks/calibrate_matching.py)."""
        found = self._closer_grey(image, roi)
        if found is None:
            return ()
        return self._wide_evidence(found[0], self._grammar(region or self.region))

    def _wide_evidence(self, grey: np.ndarray, grammar: PlateGrammar) -> tuple[Glimpse, ...]:
        """Each wide view of :func:`candidates.wide_rows` read by every recogniser, its padding
        loosened (:func:`scoring.loosen_edges`): what lies beside the row may be junk."""
        work, scale = self._working(grey)
        jobs, edges = [], []
        for row in wide_rows(self._candidates(grey, work, scale)):
            for view in WIDE_VIEWS:
                crop, box = row_crop(grey, row, scale, pad_x=view.pad_x, pad_y=view.pad_y, real_x=view.real_x)
                if crop.size and min(crop.shape[:2]) >= 8:
                    jobs.append((stretch_contrast(crop), box))
                    edges.append(min(0.5, view.pad_x * row.char_height / scale / crop.shape[1]))
        if not jobs:
            return ()
        seen = self._recognition.evidence(self._recognition.read_jobs(jobs, grammar), grammar)
        # Each recogniser's glimpses come in the jobs' order: the padding beside the row may be junk.
        return tuple(replace(g, matrix=loosen_edges(g.matrix, edges[i % len(edges)]).astype(np.float32))
                     for i, g in enumerate(seen))

    def closer_read(
        self,
        image: np.ndarray,
        *,
        region: str | None = None,
        roi: tuple[int, int, int, int] | None = None,
    ) -> Observation:
        """The closer look's crops as a read (:func:`gatekeeper.vision.closer.agreed_reading`: the
        listed-layout plate 3+ sharpened copies read alike) and their probabilities; when they agree on
        none, :meth:`small_plate_read`'s. For an entry with no whole read (docs/anpr.md, "The entry's
        closer read", "Small plates"); about the cost of :meth:`closer_look`.
        """
        found = self._closer_grey(image, roi)
        if found is None or self._closer is None:
            return Observation(None)
        grey, ox, oy = found
        region = region or self.region
        zoomed = self._zoomed_boxes(grey)   # searched once: the closer read deblurs one, the small-plate read reads them
        closer = self._closer.read(grey, self._grammar(region), region=region, offset=(ox, oy), zoomed=zoomed)
        if closer.read is not None:
            return closer
        small = self._small_plates(grey, (ox, oy), region, zoomed)
        return Observation(small.read, (*closer.evidence, *small.evidence))

    def small_plate_read(
        self,
        image: np.ndarray,
        *,
        region: str | None = None,
        roi: tuple[int, int, int, int] | None = None,
    ) -> Observation:
        """The first look at the plate boxes the detector finds only in the frame enlarged
        (:class:`gatekeeper.vision.zoom.ZoomedFinder`: plates a few dozen pixels wide): a read only
        when it is a whole plate (a listed layout) at least :data:`SMALL_PLATE_MIN_CONFIDENCE` sure.
        Part of :meth:`closer_read`; alone for calibration. No plate detector configured: nothing."""
        found = self._closer_grey(image, roi)
        if found is None:
            return Observation(None)
        grey, ox, oy = found
        return self._small_plates(grey, (ox, oy), region or self.region, self._zoomed_boxes(grey))

    def _zoomed_boxes(self, grey: np.ndarray) -> "list[PlateBox]":
        """The plate boxes only the frame enlarged shows, surest first (none without a detector)."""
        return [] if self._zoomed is None else self._zoomed.detect(grey)

    def _small_plates(
        self, grey: np.ndarray, offset: tuple[int, int], region: str, zoomed: "Sequence[PlateBox]",
    ) -> Observation:
        if not zoomed:
            return Observation(None)
        t0 = time.perf_counter()
        seen = self._look(grey, offset, region, zoomed[: self._max_candidates], t0=t0, small=True)
        read = seen.read
        if read is None or read.confidence < SMALL_PLATE_MIN_CONFIDENCE or not self._grammar(region).listed(read.normalised):
            return Observation(None, seen.evidence)
        return seen

    def _closer_grey(self, image: np.ndarray, roi: tuple[int, int, int, int] | None) -> tuple[np.ndarray, int, int] | None:
        """The grey image the closer look reads and the roi's offset; None without a detector, or for a
        non-image or a roi outside it (the first look said so already). RuntimeError once closed."""
        self._recognition.check_open()
        if self._closer is None:
            return None
        try:
            return _grey_in(image, roi)
        except ValueError:
            return None

    def read(
        self,
        image: np.ndarray,
        *,
        region: str | None = None,
        roi: tuple[int, int, int, int] | None = None,
    ) -> PlateRead | None:
        """The most plausible plate in ``image`` (within ``roi``), or None."""
        return self.observe(image, region=region, roi=roi).read

    def observe(
        self,
        image: np.ndarray,
        *,
        region: str | None = None,
        roi: tuple[int, int, int, int] | None = None,
    ) -> Observation:
        """The read of :meth:`read` and the probabilities of every crop read (not dated overlays)."""
        self._recognition.check_open()
        t0 = time.perf_counter()
        grey, ox, oy = _grey_in(image, roi)
        return self._look(grey, (ox, oy), region or self.region, self._boxes(grey), t0=t0)

    def _look(
        self, grey: np.ndarray, offset: tuple[int, int], region: str, boxes: "Sequence[PlateBox]", *, t0: float,
        small: bool = False,
    ) -> Observation:
        """The first look at ``grey`` with the detector's ``boxes``: OpenCV's rows too, unless ``small``
        (:meth:`small_plate_read`: the boxes are all there is to read, each read whole and in rows)."""
        ox, oy = offset
        grammar = self._grammar(region)
        work, scale = self._working(grey)
        if small:
            candidates = candidate_rows(grey, [], scale, boxes, detector_rows=len(boxes), box_rows=len(boxes),
                                        plate_bonus=self._plate_bonus)
        else:
            candidates = self._candidates(grey, work, scale, boxes)
        t1 = time.perf_counter()
        glimpses: list[tuple[RowCandidate, Glimpse]] = []
        overlays: list[TextRow] = []
        if candidates:
            # The most plate-like row first: when it reads this sure, the others are not read.
            self._read_views(grey, scale, grammar, [(candidates[0], FIRST_VIEW)], overlays, glimpses)
            if candidates[0].score(1) < SURE_FIRST_ROW:
                self._read_views(grey, scale, grammar, [(c, FIRST_VIEW) for c in candidates[1:]], overlays, glimpses)
        if not small and self._second_look_rows > 0 and max((c.score(1) for c in candidates), default=-math.inf) < self._second_look_below:
            more = find_more_rows(work, [c.row for c in candidates], max_rows=self._second_look_rows)
            extra = [RowCandidate(row, i) for i, row in enumerate(more)]
            self._read_views(grey, scale, grammar, [(c, FIRST_VIEW) for c in extra], overlays, glimpses)
            candidates = candidates + extra
        # A burned-in timestamp is often found in pieces ("2024-05-02" and "10.17"):
        # the pieces on a line with a recognised date or time are part of it.
        candidates = [c for c in candidates if not any(same_line(c.row, o) for o in overlays)]
        t2 = time.perf_counter()
        leaders = sorted(candidates, key=lambda c: -c.score(1))[: self._refine]
        leaders = [c for c in leaders if c.leader is not None]
        views = 1
        if leaders and not leaders[0].settled():
            self._read_views(grey, scale, grammar, [(c, v) for c in leaders for v in EXTRA_VIEWS], None, glimpses)
            views += len(EXTRA_VIEWS)
            for c in leaders:
                c.pool()
        t3 = time.perf_counter()
        best = max(leaders, key=lambda c: c.score(views), default=None)
        timings = {
            "find": (t1 - t0) * 1000,
            "recognise": (t2 - t1) * 1000,
            "refine": (t3 - t2) * 1000,
            "total": (t3 - t0) * 1000,
        }
        # Rows later found to be part of a timestamp are no evidence of a plate.
        kept = {id(c) for c in candidates}
        evidence = tuple(g for c, g in glimpses if id(c) in kept)
        confidence = min(1.0, best.votes[best.leader] / views) if best is not None and best.leader else 0.0
        partial = best is not None and best.leader is not None and best.best[best.leader][0].fallback
        unsure = confidence < max(self.min_confidence, BANDS_BELOW)
        banded = self._read_bands(grey, grammar, boxes) if unsure or partial else []
        evidence += self._recognition.evidence(banded, grammar)
        sure = [(d, crop, box) for _, d, (crop, box) in banded
                if d is not None and not d.fallback and d.confidence >= BAND_READ_MIN_CONFIDENCE]
        if sure:        # the plate box's bands read a plate the rows did not
            decoded, crop, (x, y, w, h) = max(sure, key=lambda s: s[0].confidence)
            plate, confidence = decoded.plate, decoded.confidence
            timings["total"] = (time.perf_counter() - t0) * 1000
        elif best is None or best.leader is None or confidence < self.min_confidence:
            log.debug("no plate (%d candidates, %d bands, %.0f ms)", len(candidates), len(banded), timings["total"])
            return Observation(None, evidence)
        else:
            plate = best.leader
            decoded, crop, (x, y, w, h) = best.best[plate]
        return Observation(PlateRead(
            text=decoded.text,
            normalised=normalise(plate),
            confidence=round(confidence, 4),
            box=(x + ox, y + oy, w, h),
            crop=crop,
            timings=timings,
            region=region,
        ), evidence)

    def close(self) -> None:
        self._recognition.close()

    def __enter__(self) -> "PlateReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
