"""Deciding and recording: the pure rules on the store's state, then one durable transaction.

:meth:`DecisionRecorder.decide` reads what ``rules.decide_entry``/``decide_exit``
need (lot, lists, reservations, sessions inside, tariff) at the injected clock's
time; :meth:`DecisionRecorder.record` commits the session change, the event and
the outbox row in one transaction (``store.record_decision``). Nothing here moves
the barrier: that comes after, in :mod:`gatekeeper.lane.actuation`.

Closed-vocabulary matching: with the vehicle's probabilities (``photos``), the plates
that could be the answer are scored on them (:func:`gatekeeper.vision.scoring.rank`): at an
exit the sessions inside, at an entry the active allow-list and reservation plates. The pure
rules (``rules.decide_exit``/``decide_entry``) choose with the calibrated thresholds.
:meth:`record_no_read` records a vehicle nothing usable was read of.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal, Mapping, Sequence

from gatekeeper.lane.ports import Clock, Glimpse, LaneStore, Recorded, WholePlate
from gatekeeper.lane.outcome import Source
from gatekeeper.rules import (
    Decision, PlateScores, Policy, SessionView, closer_choice, decide_entry, decide_exit,
)
from gatekeeper.vision.scoring import alternatives, rank_photos, single_swaps

#: The reason code (and event kind) of a vehicle with no usable read.
NO_READ = "no_read"


class DecisionRecorder:
    """The rules' decision for one plate at one lane, made durable before anything moves."""

    def __init__(
        self,
        *,
        lane_id: str,
        direction: Literal["entry", "exit"],
        store: LaneStore,
        clock: Clock,
        policy: Policy,
        upload_photos: bool = False,
        is_whole: WholePlate | None = None,
    ) -> None:
        self.lane_id = lane_id
        self.direction = direction
        self.store = store
        self.clock = clock
        self.policy = policy
        self.upload_photos = upload_photos
        self.is_whole = is_whole

    def decide(
        self, plate: str, *, now: datetime, photos: Sequence[Sequence[Glimpse]] = (), sure: bool = True,
        confidence: float | None = None,
    ) -> Decision:
        """Pure rules on the store's current state (no side effects).

        ``plate`` is the whole read ('' for none) and ``confidence`` its confidence; ``photos`` the
        vehicle's probabilities, per photo; ``sure``: the read cleared the sure floor (an unsure entry
        read grants no full-lot privilege).
        """
        if self.direction == "entry":
            lot = self.store.lot_state()
            lists = self.store.list_entries()
            reservations = self.store.reservations()
            scores = None
            if photos and (lot.free <= 0 or not plate or not sure):
                privileged = [r.plate for r in reservations if r.active(now)]
                privileged += [e.plate for e in lists if e.kind == "allow" and e.active(now)]
                scores = score(photos, privileged, is_whole=self.is_whole,
                               outside_prior=self.policy.thresholds.outside_prior)
            return decide_entry(
                plate, now=now, lot=lot, lists=lists, reservations=reservations, policy=self.policy, scores=scores,
                sure=sure,
            )
        sessions = self.store.inside_sessions()
        return self._decide_exit(plate, confidence, now, sessions,
                                 self._score_sessions(photos, sessions) if photos else None)

    def decide_closer(
        self, plate: str, *, now: datetime, photos: Sequence[Sequence[Glimpse]], confidence: float | None = None,
    ) -> Decision | None:
        """The exit decision on ``photos`` (the closer look's crops added) when they give a match the
        closer look's stricter thresholds accept outright (no string fallback), else None."""
        sessions = self.store.inside_sessions()
        ranked = self._score_sessions(photos, sessions)
        if closer_choice(ranked, self.policy.thresholds) is None:
            return None
        return self._decide_exit(plate, confidence, now, sessions, ranked)

    def is_inside(self, session_id: int) -> bool:
        """Whether the session is still open (its vehicle has not left)."""
        return any(s.id == session_id for s in self.store.inside_sessions())

    def _decide_exit(
        self, plate: str, confidence: float | None, now: datetime, sessions: Sequence[SessionView],
        scores: PlateScores | None,
    ) -> Decision:
        return decide_exit(plate, now=now, sessions=sessions, tariff=self.store.tariff(),
                           lists=self.store.list_entries(), policy=self.policy, scores=scores,
                           read_confidence=confidence)

    def _score_sessions(self, photos: Sequence[Sequence[Glimpse]], sessions: Sequence[SessionView]) -> PlateScores | None:
        """The sessions inside (their plates and entry alternates) ranked on ``photos``."""
        return score(photos, [s.plate for s in sessions], is_whole=self.is_whole,
                     outside_prior=self.policy.thresholds.outside_prior,
                     alternates={s.plate: dict(s.alternates) for s in sessions if s.alternates})

    def record(
        self,
        decision: Decision,
        *,
        now: datetime,
        plate_read: str,
        confidence: float | None,
        photo: str | None,
        source: Source,
        by: str,
    ) -> Recorded:
        """Session change + event + outbox row, one commit; raises ``StoreError`` when refused."""
        return self.store.record_decision(
            decision,
            lane=self.lane_id,
            direction=self.direction,
            plate_read=plate_read,
            confidence=confidence,
            photo=photo,
            source=source,
            upload=self.upload_photos and photo is not None,
            data=None if source == "camera" else {"by": by},
            now=now,
        )

    def remember_alternates(self, session_id: int, plate: str, photos: Sequence[Sequence[Glimpse]]) -> dict[str, float]:
        """Store the other spellings this entry's evidence supported nearly as well as ``plate``.

        An entry read one character off (``BT77148`` for ``BTZ7148``) would otherwise leave the
        car at the exit with "no entry record" when the exit camera reads it right; the exit scorer
        tries these spellings as the same session, carrying their log ratio as a prior.
        """
        if not photos or self.is_whole is None:
            return {}
        found = alternatives(
            [[g.matrix for g in photo] for photo in photos], plate,
            readings=[r for photo in photos for g in photo for r in g.readings],
            keep=self.is_whole, window=ALTERNATE_WINDOW, limit=ALTERNATE_LIMIT,
        )
        if found:
            self.store.set_alternates(session_id, found)
        return found

    def record_no_read(
        self,
        *,
        photo: str | None,
        guesses: Sequence[str],
        candidates: Sequence[str] = (),
        message: str,
    ) -> str:
        """A vehicle with no usable read: lane, time, photo and the best guesses, for the technician."""
        return self.store.record_event(
            NO_READ,
            lane=self.lane_id,
            reason=NO_READ,
            message=message,
            data={
                "direction": self.direction,
                "image": f"{self.store.lot_id}/{Path(photo).name}" if photo else None,
                "photo": photo,
                "guesses": list(guesses),
                "candidates": list(candidates),
            },
            now=self.clock.now(),
        )

    def record_same_vehicle(self, *, reason: str, plate: str, session_id: int | None, plate_read: str) -> str:
        """A repeat photo of a vehicle whose decision it did not change: kept on record, not sent."""
        return self.store.record_event(
            "same_vehicle",
            lane=self.lane_id,
            reason=reason,
            message="the same vehicle again within the hold-off: evidence added, decision unchanged",
            plate=plate,
            session_id=session_id,
            data={"direction": self.direction, "plate_read": plate_read},
            publish=False,
            now=self.clock.now(),
        )

    def record_manual_open(self, *, kind: str, reason: str, by: str) -> str:
        """A hand-made open (technician or cloud), recorded with who and why before the relay moves."""
        return self.store.record_event(
            kind,
            lane=self.lane_id,
            reason=kind,
            message=f"opened by {by}: {reason}",
            data={"by": by, "why": reason, "direction": self.direction},
            now=self.clock.now(),
        )


#: An entry spelling is kept as a session's alternate within this many nats of its plate
#: (docs/anpr.md, "Entry alternates"), at most this many per session.
ALTERNATE_WINDOW = 4.0
ALTERNATE_LIMIT = 6

#: Log prior of a candidate plate that no listed layout fits (the grammar's fallback penalty).
NOT_WHOLE_PRIOR = -3.0


def score(
    photos: Sequence[Sequence[Glimpse]], plates: Sequence[str], *, is_whole: WholePlate | None = None,
    outside_prior: float = 0.0,
    alternates: Mapping[str, Mapping[str, float]] | None = None,
) -> PlateScores | None:
    """The known ``plates`` ranked on the vehicle's probabilities (None: nothing to rank).

    With the lane's grammar (``is_whole``) a plate no listed layout fits carries the grammar's
    fallback penalty, and the best candidate must also beat its look-alike twins that are
    valid plates (any twin, for a plate that is not: the grammar cannot tell those apart),
    as a car that is not inside could carry them, weighted by ``outside_prior`` (the log prior
    of such a car against one inside; docs/anpr.md, calibration). The evidence reading the
    best's look-alike twin refuses outright only when that twin is a candidate too, with a prior
    below 0 (:func:`gatekeeper.vision.scoring.twin_refuses`).

    ``alternates`` (per plate: other spellings of that session with their log ratio) are scored
    too, carrying that ratio as a prior, and count as the same vehicle as their plate.
    """
    if not photos or not plates:
        return None
    owner: dict[str, str] = {}
    bias: dict[str, float] = {}
    for plate in plates:
        owner.setdefault(plate, plate)
        bias[plate] = 0.0
    for plate, alts in (alternates or {}).items():
        for alt, ratio in alts.items():
            if alt not in owner:
                owner[alt] = plate
                bias[alt] = min(0.0, float(ratio))
    whole = is_whole

    def prior(plate: str) -> float:
        grammar = 0.0 if whole is None or whole(plate) else NOT_WHOLE_PRIOR
        return grammar + bias.get(plate, 0.0)

    shadows = None
    if whole is not None:

        def shadows(plate: str) -> list[str]:
            return [t for t in single_swaps(plate) if whole(t) or not whole(plate)]

    return rank_photos(
        [[g.matrix for g in photo] for photo in photos],
        list(owner),
        free=[[list(g.readings) for g in photo] for photo in photos],
        prior=prior,
        shadows=shadows,
        shadow_prior=outside_prior,
        group=lambda p: owner.get(p, p),
    )
