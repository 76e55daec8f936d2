"""Plate detector: where in a frame the plates are, from a tiny ONNX network.

Why: the OpenCV row finder (:func:`gatekeeper.vision.reader.find_text_rows`) needs crisp, separate
character blobs; small, blurred or glared plates give none, and signs give plenty. This
network was trained on synthetic street scenes only (``training/train_detector.py``);
it marks plate cells at 1/4 of a ~960 px working frame, and each blob of marked cells is
one plate box. It runs through onnxruntime (no torch) on one thread by default.

The shipped model's SHA-256 is checked at load: a missing or altered file is a clear
:class:`DetectorModelError` naming the file, never a silent wrong detector.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gatekeeper.vision.plate_finder import plate_outline
from gatekeeper.vision.recognizer import ModelNotFoundError

__all__ = ["DETECTOR_FILE", "DETECTOR_SHA256", "DetectorModelError", "PlateBox", "PlateDetector"]

DETECTOR_FILE = Path(__file__).resolve().parent / "models" / "plate_det.onnx"
#: SHA-256 of the shipped ``plate_det.onnx`` (training/README.md says how it was made).
DETECTOR_SHA256 = "56bfd886e176edb8bd385e418ac4a826a753f7cc3c2aa73f911693c4b2baaed5"

#: The network's output is this much smaller than its input.
STRIDE = 4


#: Grey-level standard deviation below which a box cannot hold a plate's characters.
MIN_CONTRAST = 12.0

#: A blob's core is its cells of at least this share of the blob's peak probability.
CORE_SHARE = 0.98

#: Below this grey-level standard deviation a box is a flat frame for any purpose (the exit's
#: closer look asks for boxes down to it: a washed-out or dark exit photo keeps its plate's
#: characters at a standard deviation of 7-9).
FLAT_CONTRAST = 4.0

#: A box between :data:`FLAT_CONTRAST` and :data:`MIN_CONTRAST` is still kept when the network is
#: this sure of it: washed-out plates in sunlight (light grey characters on a light plate on a
#: light car) vary by 7-11 grey levels, and the network marks them at 0.997 and up.
FAINT_MIN_PEAK = 0.99


class DetectorModelError(ModelNotFoundError):
    """The plate detector model is missing, altered or unreadable; the message names the file."""


@dataclass(frozen=True)
class PlateBox:
    """One detected plate: box in the caller's image pixels (x, y, w, h) and the peak probability."""

    box: tuple[float, float, float, float]
    score: float
    #: The blob's core: its cells of at least :data:`CORE_SHARE` of the peak, unnarrowed. On a blurred
    #: plate the blob spreads into its surround and the outline finds no edge, while the core
    #: stays on the characters (the exit's closer look reads it too; docs/anpr.md).
    core: tuple[float, float, float, float] | None = None
    #: Grey-level standard deviation over the blob's box (:data:`MIN_CONTRAST` and up by default).
    contrast: float = math.inf


def _load_checked(path: Path, sha256: str | None) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DetectorModelError(
            f"plate detector model {path} cannot be read ({exc.strerror or exc}): reinstall gatekeeper, or "
            f"set anpr.plate_detector = false to find plates with OpenCV only"
        ) from None
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise DetectorModelError(
                f"plate detector model {path} does not match the shipped file (sha256 {digest[:12]}..., expected "
                f"{sha256[:12]}...): reinstall gatekeeper, or set anpr.plate_detector = false"
            )
    return data


class PlateDetector:
    """Finds plate boxes in a frame. Not thread-safe; one per reader."""

    def __init__(
        self,
        *,
        model_file: Path = DETECTOR_FILE,
        sha256: str | None = DETECTOR_SHA256,
        threads: int = 1,
        work_size: int = 960,
        threshold: float = 0.85,
        extent: float = 0.8,
        outline: bool = True,
    ) -> None:
        """``outline``: narrow each box to the plate's own light rectangle inside it
        (:func:`plate_outline`), where one stands out. The network marks a plate's surround too
        (a bumper recess, a dealer frame); measured on the dev sample (docs/anpr.md, "Plate
        outline"), US boxes within IoU 0.7 of the labelled plate go from 17 to 51 of 115."""
        import onnxruntime as ort

        data = _load_checked(Path(model_file), sha256)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for a corrupt graph
            raise DetectorModelError(f"plate detector model {model_file} is not a usable ONNX model ({exc})") from exc
        self._input = self._session.get_inputs()[0].name
        self.work_size = work_size
        self.threshold = threshold
        self.extent = extent
        self.outline = outline
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def release_memory(self) -> None:
        """Hand the runtime's idle buffers back to the system: a tiny run that shrinks its memory arena.
        The arena keeps the largest frame's buffers for good; after the enlarged tiles of
        :class:`gatekeeper.vision.zoom.ZoomedFinder` (each twice a frame's working set) that is about
        50 MB the daemon would hold from then on (docs/anpr.md, "Small plates")."""
        self._session.run(None, {self._input: np.zeros((1, 1, 32, 32), np.float32)}, self._shrink)

    def probabilities(self, grey: np.ndarray) -> tuple[np.ndarray, float]:
        """Plate probability per cell of the working frame, and the frame-to-working scale."""
        prob, scale, _ = self._run(grey)
        return prob, scale

    def _run(self, grey: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        h, w = grey.shape[:2]
        scale = min(1.0, self.work_size / max(h, w))
        work = grey if scale == 1.0 else cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        wh, ww = work.shape
        ph, pw = -wh % 32, -ww % 32
        if ph or pw:
            work = cv2.copyMakeBorder(work, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
        logits = self._session.run(None, {self._input: work[None, None].astype(np.float32)})[0][0, 0]
        prob = 1.0 / (1.0 + np.exp(-logits))
        return prob[: -(-wh // STRIDE), : -(-ww // STRIDE)], scale, work

    def detect(self, image: np.ndarray, *, min_contrast: float = MIN_CONTRAST) -> list[PlateBox]:
        """Plate boxes, most certain first. A blob of cells above ``extent`` x ``threshold`` is one
        plate, kept when its peak reaches the threshold (hysteresis keeps faint plate ends attached;
        calibrated on the dev sample: a lower extent merges plates with bumpers and grilles) and its
        box's grey levels vary by ``min_contrast`` (standard deviation), or by :data:`FLAT_CONTRAST`
        when its peak is :data:`FAINT_MIN_PEAK` or more (a washed-out plate)."""
        if image is None or image.size == 0 or image.ndim not in (2, 3):
            raise ValueError("not an image")
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        prob, scale, work = self._run(grey)
        n, labels, stats, _ = cv2.connectedComponentsWithStats((prob >= self.extent * self.threshold).astype(np.uint8), 8)
        boxes: list[PlateBox] = []
        if n <= 1:
            return boxes
        peaks = np.zeros(n, np.float32)
        np.maximum.at(peaks, labels.ravel(), prob.ravel())
        f = STRIDE / scale
        for i in range(1, n):
            if peaks[i] < self.threshold:
                continue
            x, y, w, h = (float(v) for v in stats[i, :4])
            # A plate has characters: a box with hardly any contrast (a flat or blinded frame,
            # which the network never saw in training) is not one, unless the network is all but
            # certain of it (a washed-out plate) and the box is not flat.
            cells = work[int(y) * STRIDE: int(y + h) * STRIDE, int(x) * STRIDE: int(x + w) * STRIDE]
            contrast = float(cells.std()) if cells.size else 0.0
            if contrast < FLAT_CONTRAST or (contrast < min_contrast and peaks[i] < FAINT_MIN_PEAK):
                continue
            box = (x * f, y * f, w * f, h * f)
            if self.outline:
                box = plate_outline(grey, box) or box
            core = _core(prob, labels, stats[i, :4], i, peaks[i], f)
            boxes.append(PlateBox(box, round(float(peaks[i]), 4), core, round(contrast, 1)))
        boxes.sort(key=lambda b: -b.score)
        return boxes


def _core(prob: np.ndarray, labels: np.ndarray, stat: np.ndarray, label: int, peak: float, f: float,
          ) -> tuple[float, float, float, float]:
    """The box of blob ``label``'s cells of at least :data:`CORE_SHARE` of its ``peak``, in image pixels."""
    x, y, w, h = (int(v) for v in stat)
    cells = (labels[y: y + h, x: x + w] == label) & (prob[y: y + h, x: x + w] >= CORE_SHARE * peak)
    ys, xs = np.nonzero(cells)
    return ((x + xs.min()) * f, (y + ys.min()) * f, (xs.max() - xs.min() + 1) * f, (ys.max() - ys.min() + 1) * f)
