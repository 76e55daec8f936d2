"""Deciding and recording: the pure rules on the store's state, then one durable transaction.

:meth:`DecisionRecorder.decide` reads what ``rules.decide_entry``/``decide_exit``
need (lot, lists, reservations, sessions inside, tariff) at the injected clock's
time; :meth:`DecisionRecorder.record` commits the session change, the event and
the outbox row in one transaction (``store.record_decision``). Nothing here moves
the barrier: that comes after, in :mod:`gatekeeper.lane.actuation`.

Where the next steps go (issue 11): closed-vocabulary exit matching (score each
open session's plate on the recogniser's probabilities) replaces the free-text
``plate`` handed to :meth:`decide` for exits: pass the candidates' scores in and
let a pure function in rules.py choose; a ``no_read`` event is recorded here, as
a sibling of :meth:`record` (``store.record_event("no_read", ...)``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from gatekeeper.lane.ports import Clock, LaneStore, Recorded
from gatekeeper.lane.outcome import Source
from gatekeeper.rules import Decision, Policy, decide_entry, decide_exit


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
    ) -> None:
        self.lane_id = lane_id
        self.direction = direction
        self.store = store
        self.clock = clock
        self.policy = policy
        self.upload_photos = upload_photos

    def decide(self, plate: str, *, now: datetime) -> Decision:
        """Pure rules on the store's current state (no side effects)."""
        if self.direction == "entry":
            return decide_entry(
                plate,
                now=now,
                lot=self.store.lot_state(),
                lists=self.store.list_entries(),
                reservations=self.store.reservations(),
                policy=self.policy,
            )
        return decide_exit(
            plate,
            now=now,
            sessions=self.store.inside_sessions(),
            tariff=self.store.tariff(),
            lists=self.store.list_entries(),
            policy=self.policy,
        )

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
