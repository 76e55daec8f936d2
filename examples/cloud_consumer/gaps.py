"""Gap detection on a lot's ``seq`` numbers (docs/mqtt.md, "Sequence numbers"). Pure functions.

A lot numbers every JSON message it queues 1, 2, 3, ... across all topics. The cloud keeps, per lot,
``contiguous``: the highest seq below which nothing is missing. A message above ``contiguous + 1``
opens a gap; a gap normally closes within seconds (a re-delivery after a reconnect, or a message
handled by another consumer of the group). A gap that stays open is a lost message.
"""

from __future__ import annotations

from typing import Iterable


def advance(contiguous: int, seqs: Iterable[int]) -> int:
    """The new ``contiguous`` given the seqs received above it (any order, repeats allowed)."""
    present = set(seqs)
    while contiguous + 1 in present:
        contiguous += 1
    return contiguous


def missing(contiguous: int, seqs: Iterable[int], *, limit: int = 100) -> list[int]:
    """The seqs between ``contiguous`` and the highest received that have not arrived (at most ``limit``)."""
    present = {s for s in seqs if s > contiguous}
    if not present:
        return []
    out: list[int] = []
    for seq in range(contiguous + 1, max(present)):
        if seq not in present:
            out.append(seq)
            if len(out) >= limit:
                break
    return out
