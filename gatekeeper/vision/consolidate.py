"""One vehicle, several frames, one plate: string reads clustered and weighed (the lane's
fallback when a frame brings no evidence to score, :mod:`gatekeeper.lane.runner`)."""

from __future__ import annotations

from collections import defaultdict

from gatekeeper.vision.observation import PlateRead


def _similar(a: str, b: str) -> bool:
    from gatekeeper.rules import plate_distance

    return plate_distance(a, b) <= 1.0


class PlateConsolidator:
    """One vehicle, several frames -> one plate.

    Reads are clustered by similarity (an OCR slip in one frame joins its
    vehicle's cluster); the cluster with the most confidence wins, and inside it
    the spelling with the most confidence. ``done`` turns true as soon as one
    read is sure enough, or after ``max_frames`` frames.
    """

    def __init__(self, *, accept_confidence: float = 0.85, max_frames: int = 5) -> None:
        self.accept_confidence = accept_confidence
        self.max_frames = max_frames
        self._frames = 0
        self._reads: list[PlateRead] = []

    def add(self, read: PlateRead | None) -> None:
        self._frames += 1
        if read is not None and read.normalised:
            self._reads.append(read)

    @property
    def frames(self) -> int:
        return self._frames

    @property
    def done(self) -> bool:
        if self._frames >= self.max_frames:
            return True
        return any(r.confidence >= self.accept_confidence for r in self._reads)

    def result(self) -> PlateRead | None:
        if not self._reads:
            return None
        clusters: list[list[PlateRead]] = []
        for read in sorted(self._reads, key=lambda r: -r.confidence):
            for cluster in clusters:
                if _similar(cluster[0].normalised, read.normalised):
                    cluster.append(read)
                    break
            else:
                clusters.append([read])
        winner = max(clusters, key=lambda c: (sum(r.confidence for r in c), len(c)))
        weight: dict[str, float] = defaultdict(float)
        for r in winner:
            weight[r.normalised] += r.confidence
        spelling = max(weight, key=lambda k: weight[k])
        best = max((r for r in winner if r.normalised == spelling), key=lambda r: r.confidence)
        agreement = weight[spelling] / sum(r.confidence for r in self._reads)
        return PlateRead(
            text=best.text,
            normalised=best.normalised,
            confidence=round(min(1.0, best.confidence * (0.5 + 0.5 * agreement) + 0.05 * (len(winner) - 1)), 4),
            box=best.box,
            crop=best.crop,
            timings=dict(best.timings),
            region=best.region,
        )
