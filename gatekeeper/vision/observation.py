"""What the plate reader hands the lane: a plate read, and the evidence closed-vocabulary
matching scores (:mod:`gatekeeper.vision.scoring`). Plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from gatekeeper.vision.plate_formats import Decoded
from gatekeeper.vision.scoring import fold


@dataclass(frozen=True)
class PlateRead:
    """One plate read from one image."""

    text: str
    normalised: str
    confidence: float
    box: tuple[int, int, int, int]
    crop: np.ndarray | None = field(default=None, repr=False, compare=False)
    timings: dict[str, float] = field(default_factory=dict, compare=False)
    region: str = ""


@dataclass(frozen=True)
class Glimpse:
    """The recogniser's output for one crop: the evidence closed-vocabulary matching scores.

    ``matrix`` is folded to blank + 0-9A-Z (:func:`gatekeeper.vision.scoring.fold`);
    ``readings`` are the grammar's reading(s) of it, the free reading a candidate is compared with.
    """

    matrix: np.ndarray = field(repr=False, compare=False)
    readings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Observation:
    """One image: the plate read (or None) and every crop's probabilities (even with no read)."""

    read: PlateRead | None
    evidence: tuple[Glimpse, ...] = ()


def glimpse(probs: np.ndarray, alphabet: str, decoded: Sequence[Decoded]) -> Glimpse:
    """One crop's evidence: its folded matrix and the grammar's reading(s) of it."""
    return Glimpse(fold(probs, alphabet).astype(np.float32), tuple(d.plate for d in decoded))
