"""A reader's recognisers: the one whose readings vote for the plate, and the second opinions
whose probabilities of the same crops only join the evidence (``anpr.exit_recognizers``,
docs/anpr.md "Exit lanes ask a blur-trained recogniser for a second opinion").

Kept apart from the reader so that every way of cutting crops (rows, bands, the closer look)
reads them the same way: in small batches, each crop's grammar reading and folded matrix.
"""

from __future__ import annotations

from typing import Any, Sequence, TypeVar

import numpy as np

from gatekeeper.vision.observation import Glimpse, glimpse
from gatekeeper.vision.plate_formats import Decoded, PlateGrammar, reduce_probabilities
from gatekeeper.vision.recognizer import Recognizer

#: Crops recognised per call. A call's activations grow with its batch: with the heap trimmed after
#: each read (service/memory.py) three instead of six take a read's peak from about 67 to 46 MB
#: (docs/anpr.md, "Detector retrained with mounted plates").
RECOGNISE_BATCH = 3

Job = TypeVar("Job")
#: One crop read: its evidence, its grammar reading (or None), and what it was cut as.
Seen = tuple[Glimpse, "Decoded | None", Job]


class Recognition:
    """``recognizer`` reads; each of ``second_opinions`` reads the same crops again as evidence.

    Warmed up at construction: the first inference pays for thread pools and kernel set-up, and
    that belongs to start-up, not to the first car. ``close()`` closes every network (idempotent).
    """

    def __init__(self, recognizer: Recognizer, *, second_opinions: Sequence[Recognizer] = ()) -> None:
        self._recognizer: Recognizer | None = recognizer
        self._second_opinions = tuple(second_opinions)
        if any(r.alphabet != recognizer.alphabet for r in self._second_opinions):
            raise ValueError("a second opinion must spell with the reader's recogniser's alphabet")
        for network in (recognizer, *self._second_opinions):
            network.probabilities([np.full((32, 160), 200, np.uint8), np.full((32, 96), 60, np.uint8)])

    @property
    def recognizer(self) -> Recognizer | None:
        """The recogniser that reads (None once closed)."""
        return self._recognizer

    @property
    def second_opinions(self) -> tuple[Recognizer, ...]:
        return self._second_opinions

    @property
    def reader(self) -> Recognizer:
        """The recogniser that reads; RuntimeError once closed."""
        self.check_open()
        assert self._recognizer is not None
        return self._recognizer

    def check_open(self) -> None:
        """RuntimeError once closed: a closed reader must say so, not read with a closed network."""
        if self._recognizer is None:
            raise RuntimeError("PlateReader is closed")

    def recognise(
        self, crops: Sequence[np.ndarray], grammar: PlateGrammar, recognizer: Recognizer | None = None,
    ) -> list[tuple[Glimpse, list[Decoded]]]:
        """Each crop's evidence and grammar reading by ``recognizer`` (default the one that reads),
        :data:`RECOGNISE_BATCH` crops per call: one batch of thirty grows the runtime's memory arena for good."""
        recognizer = recognizer or self.reader
        alphabet = recognizer.alphabet
        out = []
        for i in range(0, len(crops), RECOGNISE_BATCH):
            for probs in recognizer.probabilities(crops[i: i + RECOGNISE_BATCH]):
                decoded = grammar.decode(reduce_probabilities(probs, alphabet), top=1)
                out.append((glimpse(probs, alphabet, decoded), decoded))
        return out

    def read_jobs(self, jobs: Sequence[tuple[np.ndarray, Job]], grammar: PlateGrammar) -> list[Seen[Job]]:
        """Each (crop, job) read by the recogniser that reads: its evidence, its grammar reading (or
        None), and the job, for crops cut from a box (plate bands, the closer look's deblurred copies)."""
        read = self.recognise([crop for crop, _ in jobs], grammar)
        return [(seen, decoded[0] if decoded else None, job) for job, (seen, decoded) in zip(jobs, read)]

    def evidence(self, seen: Sequence[Seen[tuple[np.ndarray, Any]]], grammar: PlateGrammar) -> tuple[Glimpse, ...]:
        """The evidence of :meth:`read_jobs`' crops: their own, then the second opinions' of the same crops."""
        crops = [crop for _, _, (crop, _) in seen]
        return (*(g for g, _, _ in seen), *self.second_glimpses(crops, grammar))

    def second_glimpses(self, crops: Sequence[np.ndarray], grammar: PlateGrammar) -> list[Glimpse]:
        """The second opinions' evidence of ``crops``, in order, each opinion's crops in turn."""
        return [g for opinion in self._second_opinions for g, _ in self.recognise(crops, grammar, opinion)]

    def close(self) -> None:
        if self._recognizer is not None:
            for network in (self._recognizer, *self._second_opinions):
                network.close()
            self._recognizer = None
