"""A recogniser wrapper that keeps every matrix it returns: the reader's evidence of one photo.

Shared by tests/test_plate_scoring.py and the calibration benchmarks (benchmarks/calibrate_matching.py,
plate_coverage.py), so the tests and the published figures look at the same evidence. It lives with the
tests, not in gatekeeper: the lane gets its evidence from :meth:`PlateReader.observe`, this is only for
looking at everything the recogniser was asked (warm-up aside: reset ``seen`` before each read).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from gatekeeper.vision.recognizer import Recognizer


class Recording:
    """A Recognizer that delegates to ``inner`` and appends each returned matrix to ``seen``."""

    def __init__(self, inner: "Recognizer") -> None:
        self.inner = inner
        self.alphabet = inner.alphabet
        self.input_height = inner.input_height
        self.seen: list[np.ndarray] = []

    def probabilities(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = self.inner.probabilities(crops)
        self.seen += out
        return out

    def close(self) -> None:
        self.inner.close()
