"""One text row's readings over its views, and the votes that pick its plate.

Each view of a row (:class:`gatekeeper.vision.candidates.View`) is read and decoded through the
grammar; the row's plate is the reading with most votes, a vote being the reading's confidence.
Pooled (:func:`pooled_votes`), every view backs every reading of the row by how likely it finds
it, so a plate whose views each hesitate on a different glyph is not split into several strings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from gatekeeper.vision.plate_finder import TextRow
from gatekeeper.vision.plate_formats import Decoded
from gatekeeper.vision.scoring import ctc_log_probs

__all__ = ["FALLBACK_WEIGHT", "PLATE_BONUS", "SETTLED_CONFIDENCE", "RowCandidate", "pooled_votes", "vote_weight"]


#: Added to the score of a row inside a detected plate box: a sign or dealer text read with
#: similar confidence loses to it.
PLATE_BONUS = 0.15

#: A reading through a fallback (``~``) layout counts this much of its confidence when
#: rows compete: a sign or slogan that fits no real layout should lose to one that does.
FALLBACK_WEIGHT = 0.7

#: A first reading this sure (through a listed layout: fallback readings weigh less) is
#: taken without the extra views; most clear plates stop here, at about half the cost.
SETTLED_CONFIDENCE = 0.8


@dataclass
class RowCandidate:
    """A text row the reader may take the plate from: its readings' votes and each view read."""

    row: TextRow
    rank: int
    bonus: float = 0.0          # PLATE_BONUS when inside a detected plate box
    votes: dict[str, float] = field(default_factory=dict)
    best: dict[str, tuple[Decoded, np.ndarray, tuple[int, int, int, int]]] = field(default_factory=dict)
    read: list[tuple[Decoded, np.ndarray]] = field(default_factory=list)   # each view's reading and matrix

    def add(self, decoded: Decoded, crop: np.ndarray, box: tuple[int, int, int, int], matrix: np.ndarray) -> None:
        self.votes[decoded.plate] = self.votes.get(decoded.plate, 0.0) + vote_weight(decoded)
        self.read.append((decoded, matrix))
        held = self.best.get(decoded.plate)
        if held is None or decoded.confidence > held[0].confidence:
            self.best[decoded.plate] = (decoded, crop, box)

    def pool(self) -> None:
        """Votes by probability rather than by string (:func:`pooled_votes`)."""
        self.votes = pooled_votes(self.read)

    def settled(self) -> bool:
        """One view is enough: the leading reading is :data:`SETTLED_CONFIDENCE` sure by itself, and
        with the plate box's bonus. The bonus alone does not settle a row: ``OO2S6M`` read at 0.71 in a
        plate box cut the last glyph of ``00256M1``, which the extra views read (docs/anpr.md, "Pooled views")."""
        lead = self.leader
        return lead is not None and min(self.score(1), self.best[lead][0].confidence) >= SETTLED_CONFIDENCE

    @property
    def leader(self) -> str | None:
        return max(self.votes, key=lambda k: self.votes[k]) if self.votes else None

    def score(self, views: int) -> float:
        """Mean confidence of the leading reading over the views read, nudged by geometry rank."""
        lead = self.leader
        if lead is None:
            return -math.inf
        return self.votes[lead] / views - 0.03 * self.rank + self.bonus


def pooled_votes(read: Sequence[tuple[Decoded, np.ndarray]]) -> dict[str, float]:
    """Each reading's votes when every view of a row backs every reading, not only its own.

    A view's vote (its reading's confidence) goes to each reading in proportion to how likely the
    view finds it, per character against its own reading (CTC on the view's matrix, capped at 1);
    a fallback layout's reading keeps :data:`FALLBACK_WEIGHT` of its votes. Four views of one plate
    that read ``00256M1``, ``0O256M1``, ``00256N1`` and ``0O256M1`` split their votes as strings and
    none reaches 0.5; pooled, ``00256M1`` leads at 0.58 (docs/anpr.md, "Pooled views").
    """
    fallback: dict[str, bool] = {}
    for decoded, _ in read:
        fallback[decoded.plate] = fallback.get(decoded.plate, True) and decoded.fallback
    plates = list(fallback)
    lengths = np.array([max(1, len(p)) for p in plates])
    pooled = dict.fromkeys(plates, 0.0)
    for decoded, matrix in read:
        per = ctc_log_probs(matrix, plates) / lengths
        own = per[plates.index(decoded.plate)]
        for plate, lp in zip(plates, per):
            share = 1.0 if plate == decoded.plate else math.exp(min(0.0, float(lp - own)))
            pooled[plate] += decoded.confidence * share
    return {p: v * (FALLBACK_WEIGHT if fallback[p] else 1.0) for p, v in pooled.items()}


def vote_weight(decoded: Decoded) -> float:
    """A reading's vote: its confidence, :data:`FALLBACK_WEIGHT` of it through a fallback layout."""
    return decoded.confidence * (FALLBACK_WEIGHT if decoded.fallback else 1.0)
