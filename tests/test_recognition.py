"""A reader's recognisers (``vision.recognition.Recognition``): the one that reads and the second
opinions, warmed at start, read in small batches, closed together.

Real shipped ONNX models; crops are drawn here (gatekeeper.sim).
"""

from __future__ import annotations

import numpy as np
import pytest

from gatekeeper.sim.plates import draw_plate_scene
from gatekeeper.vision.onnx_recognizer import OnnxRecognizer
from gatekeeper.vision.plate_formats import PlateGrammar
from gatekeeper.vision.recognition import RECOGNISE_BATCH, Recognition
from gatekeeper.vision.recognizer import BLUR_RECOGNIZER, PLATE_RECOGNIZER


class _Counting:
    """A real recogniser that counts its calls and the crops of each (the batching is the point)."""

    def __init__(self, name: str) -> None:
        self.inner = OnnxRecognizer(name=name, threads=1)
        self.alphabet, self.name = self.inner.alphabet, name
        self.batches: list[int] = []

    def probabilities(self, crops):
        self.batches.append(len(crops))
        return self.inner.probabilities(crops)

    def close(self) -> None:
        self.inner.close()


def _plate_crops(n: int) -> list[np.ndarray]:
    """``n`` grey crops of a drawn plate, each a little wider than the one before."""
    scene = draw_plate_scene("KX52TRA", seed=5)
    grey = scene.mean(axis=2).astype(np.uint8)
    h, w = grey.shape
    return [grey[h // 3: 2 * h // 3, max(0, w // 4 - 4 * i): min(w, 3 * w // 4 + 4 * i)] for i in range(n)]


def test_crops_are_read_in_small_batches_and_each_opinion_reads_them_all_in_turn() -> None:
    own, second = _Counting(PLATE_RECOGNIZER), _Counting(BLUR_RECOGNIZER)
    recognition = Recognition(own, second_opinions=[second])
    assert own.batches and second.batches          # both warmed at construction, before the first car
    own.batches.clear(), second.batches.clear()
    grammar = PlateGrammar.for_region("eu")
    crops = _plate_crops(7)
    read = recognition.recognise(crops, grammar)
    assert len(read) == 7 and max(own.batches) == RECOGNISE_BATCH
    assert all(glimpse.matrix.shape[1] == 37 for glimpse, _ in read)     # folded: blank + 0-9A-Z
    opinions = recognition.second_glimpses(crops, grammar)
    assert len(opinions) == 7 and max(second.batches) == RECOGNISE_BATCH
    # Same crops, another network: the evidence differs, and is the second network's own reading.
    theirs = Recognition(second.inner).recognise(crops, grammar)
    assert all(np.array_equal(a.matrix, b.matrix) for a, (b, _) in zip(opinions, theirs))
    assert any(not np.array_equal(a.matrix, b.matrix) for a, (b, _) in zip(opinions, read))
    recognition.close()


def test_closing_closes_every_network_once_and_refuses_work_after() -> None:
    own, second = _Counting(PLATE_RECOGNIZER), _Counting(BLUR_RECOGNIZER)
    recognition = Recognition(own, second_opinions=[second])
    recognition.close()
    recognition.close()                             # idempotent
    assert recognition.recognizer is None
    with pytest.raises(RuntimeError, match="closed"):
        recognition.recognise(_plate_crops(1), PlateGrammar.for_region("eu"))
    for network in (own, second):
        with pytest.raises(RuntimeError, match="closed"):
            network.probabilities(_plate_crops(1))


def test_a_second_opinion_with_another_alphabet_is_refused() -> None:
    own = _Counting(PLATE_RECOGNIZER)

    class _Digits:
        alphabet, name = "0123456789", "digits"

        def probabilities(self, crops):
            return [np.full((10, 11), 1 / 11, np.float32) for _ in crops]

        def close(self) -> None: ...

    with pytest.raises(ValueError, match="alphabet"):
        Recognition(own, second_opinions=[_Digits()])
    own.close()
