"""Exit lanes read with recognisers of their own (``anpr.exit_recognizers``): the first reads, the
others give second opinions whose probabilities join the evidence the sessions are scored on.

Real shipped ONNX models and the real plate detector; scenes are drawn here (gatekeeper.sim).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from gatekeeper.config import AnprConfig
from gatekeeper.service.assembly import load_readers
from gatekeeper.sim.plates import draw_plate_scene
from gatekeeper.vision.onnx_recognizer import OnnxRecognizer
from gatekeeper.vision.reader import PlateReader
from gatekeeper.vision.recognizer import BLUR_RECOGNIZER, EASYOCR_RECOGNIZER, PLATE_RECOGNIZER
from gatekeeper.vision.scoring import ctc_log_probs


def _streaked(image: np.ndarray, length: int) -> np.ndarray:
    """A horizontal motion streak of ``length`` pixels: a car still moving past an exit camera."""
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0 / length
    return cv2.filter2D(image, -1, kernel)


@pytest.fixture(scope="module")
def plate() -> OnnxRecognizer:
    return OnnxRecognizer(name=PLATE_RECOGNIZER, threads=1)


@pytest.fixture(scope="module")
def blur() -> OnnxRecognizer:
    return OnnxRecognizer(name=BLUR_RECOGNIZER, threads=1)


class _Kept:
    """Keeps its recogniser open when a reader closes it (the module's fixtures are shared)."""

    def __init__(self, inner: OnnxRecognizer) -> None:
        self.inner, self.alphabet, self.name = inner, inner.alphabet, inner.name

    def probabilities(self, crops):
        return self.inner.probabilities(crops)

    def close(self) -> None: ...


@pytest.mark.parametrize("streak", [0, 9])
def test_a_second_opinion_adds_evidence_and_leaves_the_read_alone(
    plate: OnnxRecognizer, blur: OnnxRecognizer, streak: int,
) -> None:
    scene = draw_plate_scene("KX52TRA", seed=3)
    scene = _streaked(scene, streak) if streak else scene
    alone = PlateReader(region="eu", recognizer=_Kept(plate), threads=1).observe(scene)
    both = PlateReader(region="eu", recognizer=_Kept(plate), second_opinions=[_Kept(blur)], threads=1).observe(scene)
    assert both.read == alone.read
    # Every crop read is read again by the second opinion: the reader's own evidence, and as much again.
    assert len(both.evidence) == 2 * len(alone.evidence) > 0
    own = [g for g in both.evidence if any(np.array_equal(g.matrix, a.matrix) for a in alone.evidence)]
    assert len(own) == len(alone.evidence)
    # The sessions are scored on the best crop: a second opinion can only add to a plate's best score.
    def best(evidence) -> float:
        return max(float(ctc_log_probs(g.matrix, ["KX52TRA"])[0]) for g in evidence)

    assert best(both.evidence) >= best(alone.evidence)


def test_each_of_two_second_opinions_adds_its_evidence(plate: OnnxRecognizer, blur: OnnxRecognizer) -> None:
    scene = _streaked(draw_plate_scene("KX52TRA", seed=3), 9)
    alone = PlateReader(region="eu", recognizer=_Kept(plate), threads=1).observe(scene)
    three = PlateReader(region="eu", recognizer=_Kept(plate), second_opinions=[_Kept(blur), _Kept(plate)],
                        threads=1).observe(scene)
    assert three.read == alone.read
    assert len(three.evidence) == 3 * len(alone.evidence) > 0


def test_a_second_opinion_must_spell_with_the_reader_s_alphabet(plate: OnnxRecognizer) -> None:
    class Digits:
        alphabet = "0123456789"

        def probabilities(self, crops):   # pragma: no cover - never reached
            raise AssertionError

        def close(self) -> None: ...

    with pytest.raises(ValueError, match="alphabet"):
        PlateReader(region="eu", recognizer=_Kept(plate), second_opinions=[Digits()], threads=1)


def test_exit_lanes_get_their_own_reader_sharing_the_loaded_models() -> None:
    anpr = AnprConfig(region="eu", threads=1, exit_recognizers=[PLATE_RECOGNIZER, BLUR_RECOGNIZER])
    readers = load_readers(anpr, {"entry", "exit"})
    entry, exit_ = readers["entry"], readers["exit"]
    try:
        assert entry is not exit_
        assert entry.second_opinions == ()
        assert [r.name for r in exit_.second_opinions] == [BLUR_RECOGNIZER]
        # plate_g2 and the plate detector are loaded once, for both directions.
        assert exit_.recognizer is entry.recognizer
        assert exit_.detector is entry.detector is not None
    finally:
        entry.close()
        exit_.close()


@pytest.mark.parametrize("exits", [[], [PLATE_RECOGNIZER]])
def test_without_exit_recognisers_of_their_own_every_lane_shares_one_reader(exits: list[str]) -> None:
    readers = load_readers(AnprConfig(region="eu", threads=1, exit_recognizers=exits), {"entry", "exit"})
    try:
        assert readers["entry"] is readers["exit"]
        assert readers["entry"].recognizer.name == PLATE_RECOGNIZER
        assert readers["entry"].second_opinions == ()
    finally:
        readers["entry"].close()


def test_an_exit_only_site_loads_only_the_exit_recognisers() -> None:
    readers = load_readers(AnprConfig(region="eu", threads=1, exit_recognizers=[BLUR_RECOGNIZER]), {"exit"})
    try:
        assert list(readers) == ["exit"]
        assert readers["exit"].recognizer.name == BLUR_RECOGNIZER
        assert readers["exit"].second_opinions == ()
    finally:
        readers["exit"].close()


def test_a_recogniser_named_twice_or_unknown_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="at most once"):
        AnprConfig(exit_recognizers=[BLUR_RECOGNIZER, BLUR_RECOGNIZER])
    with pytest.raises(ValidationError):
        AnprConfig(exit_recognizers=["plate_g9"])
    assert AnprConfig(exit_recognizers=[EASYOCR_RECOGNIZER]).exit_recognizers == [EASYOCR_RECOGNIZER]


def test_the_shipped_blur_recogniser_is_the_export_of_the_shipped_tuning() -> None:
    """plate_g3.onnx (what the lane runs) was made from plate_g3.pt (what training/ reproduces)."""
    import json

    from gatekeeper.vision.onnx_recognizer import MANIFEST, MODELS_DIR, sha256_of, verified_model
    from gatekeeper.vision.recognizer import TUNING_FILES

    path, entry = verified_model(MODELS_DIR, BLUR_RECOGNIZER)
    tuning = TUNING_FILES[BLUR_RECOGNIZER]
    assert entry["sources"][tuning.name] == sha256_of(tuning)
    known = json.loads((MODELS_DIR / "checksums.json").read_text())["sha256"]
    assert known[tuning.name] == sha256_of(tuning)
    assert json.loads((MODELS_DIR / MANIFEST).read_text())["recognizers"][BLUR_RECOGNIZER]["file"] == path.name


def test_a_model_folder_without_the_exit_recogniser_fails_at_start_saying_which_setting(tmp_path) -> None:
    """A site's own export made before plate_g3 existed: the daemon refuses to start, naming the
    setting that asks for the missing network and how to do without it."""
    import json
    import shutil

    from gatekeeper.vision.onnx_recognizer import MANIFEST, MODELS_DIR
    from gatekeeper.vision.recognizer import ModelNotFoundError

    manifest = json.loads((MODELS_DIR / MANIFEST).read_text())
    manifest["recognizers"] = {PLATE_RECOGNIZER: manifest["recognizers"][PLATE_RECOGNIZER]}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    shutil.copy(MODELS_DIR / f"{PLATE_RECOGNIZER}.onnx", tmp_path)
    anpr = AnprConfig(region="eu", threads=1, model_dir=tmp_path)
    with pytest.raises(ModelNotFoundError, match=r"exit_recognizers names 'plate_g3'.*exit_recognizers = \[\]"):
        load_readers(anpr, {"entry", "exit"})
    readers = load_readers(anpr.model_copy(update={"exit_recognizers": []}), {"entry", "exit"})
    assert readers["entry"] is readers["exit"]
    readers["entry"].close()
