"""The lane's decisions as pure functions: no I/O, no clock, no globals.

Everything a decision needs (the read, the time, the lot's state, the tariff,
the lists) comes in as arguments; a :class:`Decision` comes out, carrying the
reason a technician reads in ``gatekeeper events`` and the message the driver
reads on the lane display. The lane runner then makes it durable and acts on it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Iterable, Literal, Protocol, Sequence

from gatekeeper.schedules import WeeklySchedule

_NON_ALNUM = re.compile(r"[^A-Z0-9]")

#: Characters OCR confuses; a substitution inside one group costs LOOKALIKE_COST.
LOOKALIKE_GROUPS: tuple[str, ...] = ("0ODQ", "1IL", "2Z", "5S", "8B", "6G")
LOOKALIKE_COST = 0.25
_GROUP_OF = {ch: i for i, group in enumerate(LOOKALIKE_GROUPS) for ch in group}


def normalise_plate(text: str) -> str:
    """Upper-case letters and digits only: the key plates are stored and matched by."""
    return _NON_ALNUM.sub("", text.upper())


def _sub_cost(a: str, b: str) -> float:
    if a == b:
        return 0.0
    ga, gb = _GROUP_OF.get(a), _GROUP_OF.get(b)
    return LOOKALIKE_COST if ga is not None and ga == gb else 1.0


def plate_distance(a: str, b: str) -> float:
    """Edit distance where look-alike substitutions (O/0, I/1, ...) are cheap."""
    a, b = normalise_plate(a), normalise_plate(b)
    prev = [float(j) for j in range(len(b) + 1)]
    for i, ca in enumerate(a, 1):
        cur = [float(i)]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1.0, cur[j - 1] + 1.0, prev[j - 1] + _sub_cost(ca, cb)))
        prev = cur
    return prev[-1]


# --------------------------------------------------------------------------- money


@dataclass(frozen=True)
class Tariff:
    """Prices in integer minor units (cents); never floats."""

    free_minutes: int = 15
    interval_minutes: int = 60
    rate: int = 250
    daily_max: int = 2000
    grace_minutes: int = 15
    currency: str = "EUR"
    currency_digits: int = 2

    def __post_init__(self) -> None:
        for name in ("free_minutes", "rate", "daily_max", "grace_minutes", "currency_digits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"tariff.{name} must be a whole number >= 0, got {value!r}")
        if not isinstance(self.interval_minutes, int) or self.interval_minutes < 1:
            raise ValueError(f"tariff.interval_minutes must be a whole number >= 1, got {self.interval_minutes!r}")

    @property
    def grace(self) -> timedelta:
        return timedelta(minutes=self.grace_minutes)


def format_money(minor: int, currency: str, digits: int = 2) -> str:
    """``450, 'EUR'`` -> ``'4.50 EUR'`` without touching floats."""
    sign = "-" if minor < 0 else ""
    minor = abs(minor)
    if digits == 0:
        return f"{sign}{minor} {currency}"
    unit = 10**digits
    return f"{sign}{minor // unit}.{minor % unit:0{digits}d} {currency}"


def _charge(elapsed: timedelta, tariff: Tariff) -> int:
    """Charge for one continuous stay measured in real elapsed time.

    Each full 24 h costs the daily maximum (or 24 h of intervals, if cheaper);
    the rest costs the rate per *started* interval, capped at the daily maximum.
    """
    seconds = max(0, math.ceil(elapsed.total_seconds()))
    days, rest = divmod(seconds, 24 * 3600)
    interval_s = tariff.interval_minutes * 60

    def capped(intervals: int) -> int:
        amount = intervals * tariff.rate
        return min(amount, tariff.daily_max) if tariff.daily_max else amount

    full_day = capped(math.ceil(24 * 3600 / interval_s))
    return days * full_day + (capped(math.ceil(rest / interval_s)) if rest else 0)


def stay_fee(entry_at: datetime, now: datetime, tariff: Tariff) -> int:
    """Fee for a stay from entry to now.

    Stays up to ``free_minutes`` are free; a longer stay is charged from entry.
    Times must be timezone-aware: the difference is real elapsed time, so a stay
    across midnight or a DST change costs what its real duration costs.
    """
    elapsed = _elapsed(entry_at, now)
    if elapsed <= timedelta(minutes=tariff.free_minutes):
        return 0
    return _charge(elapsed, tariff)


def fee_due(session: "SessionView", now: datetime, tariff: Tariff) -> int:
    """What the driver must pay now to leave.

    Unpaid: the stay fee. Paid and inside the exit grace: nothing. Paid but the
    grace has run out: the fee runs again from the end of the grace (no free
    minutes the second time).
    """
    if session.status == "open":
        return stay_fee(session.entry_at, now, tariff)
    if session.status == "paid" and session.paid_at is not None:
        overstay = _elapsed(session.paid_at + tariff.grace, now)
        return 0 if overstay <= timedelta(0) else _charge(overstay, tariff)
    return 0


def _elapsed(start: datetime, end: datetime) -> timedelta:
    """Real time between two instants.

    Python subtracts two datetimes sharing one tzinfo as wall-clock times, which
    is wrong across a DST change; converting to UTC first gives real time.
    """
    for moment in (start, end):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"naive datetime {moment.isoformat()} (times must carry a time zone)")
    return end.astimezone(UTC) - start.astimezone(UTC)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class SessionView:
    """What the rules need to know about a parking session."""

    id: int
    plate: str  # normalised
    entry_at: datetime
    status: Literal["open", "paid", "closed"]
    paid_at: datetime | None = None
    amount_paid: int = 0
    #: Other spellings its entry evidence supported nearly as well (``vision.scoring.alternatives``),
    #: with their log-likelihood ratio against ``plate``: the exit scorer tries them too.
    alternates: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class ListEntry:
    """An allow- or deny-list entry with an optional validity window and (allow only) weekly schedule.

    ``valid_from``/``valid_until`` bound when the entry exists at all; ``schedule`` (None = always)
    the weekly hours it holds within that, on the lot's wall clock (:mod:`gatekeeper.schedules`).
    """

    plate: str
    kind: Literal["allow", "deny"]
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    schedule: WeeklySchedule | None = None

    def valid(self, now: datetime) -> bool:
        """Inside the validity window (the schedule aside)."""
        return (self.valid_from is None or self.valid_from <= now) and (
            self.valid_until is None or now < self.valid_until
        )

    def in_schedule(self, moment: datetime) -> bool:
        return self.schedule is None or self.schedule.admits(moment)

    def active(self, now: datetime) -> bool:
        return self.valid(now) and self.in_schedule(now)


@dataclass(frozen=True)
class Reservation:
    """A booked space: the plate may enter within the window even when the lot is full.

    With a ``schedule`` only at those weekly hours within the window (a recurring booking).
    """

    id: str
    plate: str
    valid_from: datetime
    valid_until: datetime
    schedule: WeeklySchedule | None = None

    def active(self, now: datetime) -> bool:
        return self.valid_from <= now < self.valid_until and (self.schedule is None or self.schedule.admits(now))


@dataclass(frozen=True)
class LotState:
    capacity: int
    sessions: Sequence[SessionView]  # every session still inside (open or paid)

    @property
    def occupied(self) -> int:
        return len(self.sessions)

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.occupied)


@dataclass(frozen=True)
class MatchThresholds:
    """When closed-vocabulary scoring may take its best candidate (docs/anpr.md, calibration).

    ``min_score_norm``: per-character natural-log probability of the best candidate;
    ``min_margin``: nats it must beat the runner-up by; ``max_free_gap``: nats the free
    (unconstrained) reading may be more likely than it. ``outside_prior``: the log prior of a
    plate that is *not* a candidate (a car with no session whose plate is one look-alike away
    from one inside) against one that is; the best candidate must beat such look-alike twins by
    the margin after this prior (0 treats them as likely as a car inside).
    """

    min_score_norm: float = -2.25
    min_margin: float = 3.0
    max_free_gap: float = 8.0
    outside_prior: float = -8.0
    #: ``min_score_norm`` for a match that needs the exit's closer look (deblurred crops): thirty
    #: sharpened copies give a wrong plate more chances to read well (docs/anpr.md, "Closer look").
    closer_min_score: float = -0.75
    #: A closer-look match that scores below ``closer_min_score`` but at least ``closer_clear_score``
    #: is still taken when it is clear: ``closer_clear_margin`` nats over the runner-up and a free
    #: reading at most ``closer_clear_gap`` nats likelier (docs/anpr.md, "Closer look at the blob's core").
    closer_clear_score: float = -1.5
    closer_clear_margin: float = 5.0
    closer_clear_gap: float = 6.0
    #: A sure whole read (``contradicting_confidence`` and up: the lane's ``anpr.accept_confidence``)
    #: of another plate than the scorer's choice (more than the string matcher's distance from it)
    #: vetoes a choice scoring below ``contradicted_min_score``: a car with no session read clearly,
    #: other text of its photo faintly like a car inside, stays shut (docs/anpr.md, stop 28).
    contradicted_min_score: float = -1.75
    contradicting_confidence: float = 0.85

    def for_closer_look(self) -> tuple["MatchThresholds", ...]:
        """The thresholds a match resting on the closer look must clear, any one of them: the
        stricter score, or the clear match's lower score with its wider margin and narrower gap."""
        strict = replace(self, min_score_norm=max(self.min_score_norm, self.closer_min_score))
        clear = replace(self, min_score_norm=max(self.min_score_norm, self.closer_clear_score),
                        min_margin=max(self.min_margin, self.closer_clear_margin),
                        max_free_gap=min(self.max_free_gap, self.closer_clear_gap))
        return strict, clear


@dataclass(frozen=True)
class Policy:
    anti_passback: Literal["deny", "reuse"] = "deny"
    match_max_distance: float = 1.0
    thresholds: MatchThresholds = MatchThresholds()


class PlateScores(Protocol):
    """Known plates ranked on one vehicle's probabilities (``vision.scoring.Ranking``)."""

    best: str
    score_norm: float
    free: str  # the likeliest reading of the evidence other than ``best`` (``best`` when there is none)
    free_gap: float
    scores: tuple[tuple[str, float], ...]
    twin: str  # the evidence's own reading, ``best`` with look-alikes swapped ('' when none)

    @property
    def margin(self) -> float: ...


# --------------------------------------------------------------------------- outputs


class Reason(StrEnum):
    """Why a decision was taken; stable codes for events and the cloud."""

    ENTRY = "entry"
    ENTRY_RESERVED = "entry_reservation"
    ENTRY_ALLOWED = "entry_allow_list"
    REENTRY = "reentry_reuse_session"
    FULL = "full"
    DENY_LIST = "deny_list"
    ALREADY_INSIDE = "already_inside"
    NO_PLATE = "no_plate"
    PAID = "paid_within_grace"
    FREE_STAY = "free_stay"
    ALLOW_LIST_EXIT = "allow_list_exit"
    UNPAID = "unpaid"
    GRACE_EXPIRED = "grace_expired"
    NO_ENTRY_RECORD = "no_entry_record"
    AMBIGUOUS = "ambiguous_match"


class Action(StrEnum):
    START_SESSION = "start_session"
    REUSE_SESSION = "reuse_session"
    CLOSE_SESSION = "close_session"
    NONE = "none"


@dataclass(frozen=True)
class Match:
    session: SessionView
    distance: float


@dataclass(frozen=True)
class Decision:
    """The outcome for one vehicle at one lane."""

    open: bool
    reason: Reason
    message: str
    action: Action = Action.NONE
    plate: str = ""
    session_id: int | None = None
    fee_due: int = 0
    match_distance: float | None = None
    candidates: tuple[str, ...] = ()
    reservation_id: str | None = None
    detail: str = ""
    extra: dict[str, str] = field(default_factory=dict)


MESSAGES = {
    Reason.ENTRY: "Welcome",
    Reason.ENTRY_RESERVED: "Welcome - reservation",
    Reason.ENTRY_ALLOWED: "Welcome",
    Reason.REENTRY: "Welcome back",
    Reason.FULL: "Parking full",
    Reason.DENY_LIST: "Access denied",
    Reason.ALREADY_INSIDE: "Already inside - please see attendant",
    Reason.NO_PLATE: "Plate not read - please use intercom",
    Reason.PAID: "Goodbye",
    Reason.FREE_STAY: "Goodbye",
    Reason.ALLOW_LIST_EXIT: "Goodbye",
    Reason.NO_ENTRY_RECORD: "No entry record",
    Reason.AMBIGUOUS: "Please see attendant",
}


# --------------------------------------------------------------------------- matching


def match_session(
    plate: str, sessions: Iterable[SessionView], *, max_distance: float = 1.0
) -> tuple[Match | None, tuple[Match, ...]]:
    """Find the session a read belongs to: ``(match, candidates)``.

    Exact normalised plate first. Otherwise the candidates within
    ``max_distance`` (look-alikes count a quarter); the best wins only when it
    is clearly better than the next (by at least half an edit). Otherwise no
    match and the candidates are returned so the attendant can choose.
    """
    key = normalise_plate(plate)
    pool = [s for s in sessions if s.status != "closed"]
    exact = [s for s in pool if s.plate == key]
    if len(exact) == 1:
        return Match(exact[0], 0.0), (Match(exact[0], 0.0),)
    if len(exact) > 1:
        tied = tuple(Match(s, 0.0) for s in exact)
        return None, tied
    if not key:
        return None, ()
    scored = sorted(
        (m for m in (Match(s, plate_distance(key, s.plate)) for s in pool) if m.distance <= max_distance),
        key=lambda m: (m.distance, m.session.id),
    )
    if not scored:
        return None, ()
    if len(scored) == 1 or scored[1].distance - scored[0].distance >= 0.5:
        return scored[0], tuple(scored)
    return None, tuple(scored)


def scored_choice(scores: PlateScores | None, thresholds: MatchThresholds) -> str | None:
    """The best candidate when it clears the threshold, the margin over the runner-up and the free gap."""
    if scores is None or not scores.best or scores.twin:
        return None
    if (
        scores.score_norm >= thresholds.min_score_norm
        and scores.margin >= thresholds.min_margin
        and scores.free_gap <= thresholds.max_free_gap
    ):
        return scores.best
    return None


def closer_choice(scores: PlateScores | None, thresholds: MatchThresholds) -> str | None:
    """The best candidate of evidence that includes the closer look, when it clears one of the
    closer look's threshold sets (:meth:`MatchThresholds.for_closer_look`)."""
    return next((c for c in (scored_choice(scores, t) for t in thresholds.for_closer_look()) if c), None)


def unmatched_refusal(decision: "Decision") -> bool:
    """Refused as unread, with no session found, or between close candidates: the refusals an exit's
    closer look may undo (its stricter thresholds still ask the margin over the runner-up and twins)."""
    return not decision.open and decision.reason in (Reason.NO_PLATE, Reason.NO_ENTRY_RECORD, Reason.AMBIGUOUS)


def scored_ambiguous(scores: PlateScores | None, thresholds: MatchThresholds) -> bool:
    """The best candidate fits the evidence, but another fits nearly as well: an attendant must choose."""
    return (
        scores is not None
        and bool(scores.best)
        and scores.score_norm >= thresholds.min_score_norm
        and (bool(scores.twin) or (scores.free_gap <= thresholds.max_free_gap and scores.margin < thresholds.min_margin))
    )


def _fallback_allowed(scores: PlateScores, thresholds: MatchThresholds) -> bool:
    """Only the score threshold failed: no rival within the margin, nothing likelier in the evidence."""
    return not scores.twin and scores.margin >= thresholds.min_margin and scores.free_gap <= thresholds.max_free_gap


def _grammar_reads_best(scores: PlateScores, thresholds: MatchThresholds) -> bool:
    """Only the score threshold failed, and the free reading of the evidence *is* the best
    candidate (nothing else read there): calibrated with 0 wrong accepts (docs/anpr.md)."""
    return _fallback_allowed(scores, thresholds) and bool(scores.best) and scores.free == scores.best


def _read_contradicts(
    key: str, confidence: float | None, chosen: str, scores: PlateScores, policy: "Policy"
) -> bool:
    """A sure whole read names another plate than the scorer's choice, which is too weak to overrule it
    (``confidence`` None: a whole read of unknown confidence counts as sure)."""
    t = policy.thresholds
    return (
        bool(key)
        and (confidence is None or confidence >= t.contradicting_confidence)
        and scores.score_norm < t.contradicted_min_score
        and plate_distance(key, chosen) > policy.match_max_distance
    )


def _close_candidates(scores: PlateScores, thresholds: MatchThresholds, limit: int = 5) -> tuple[str, ...]:
    """The candidates within the margin of the best (what the attendant chooses among)."""
    if not scores.scores:
        return ()
    top = scores.scores[0][1]
    close = tuple(p for p, s in scores.scores[:limit] if top - s < max(thresholds.min_margin, 1e-9) or p == scores.best)
    return close + ((scores.twin,) if scores.twin and scores.twin not in close else ())


# --------------------------------------------------------------------------- decisions


def _active_list(plate: str, entries: Iterable[ListEntry], kind: str, now: datetime) -> bool:
    return any(e.kind == kind and e.plate == plate and e.active(now) for e in entries)


def _off_schedule(plate: str, now: datetime, lists: Iterable[ListEntry], reservations: Iterable[Reservation]) -> str:
    """Why a plate's valid allow-list entry or reservation does not hold now (outside its weekly schedule), for
    the event a technician reads; '' when none."""
    def shown(schedule: WeeklySchedule | None) -> str:
        text = schedule.describe() if schedule else ""
        return text if len(text) <= 60 else text[:57] + "..."

    parts = [f"allow list: outside its schedule {shown(e.schedule)}" for e in lists
             if e.kind == "allow" and e.plate == plate and e.valid(now) and not e.in_schedule(now)]
    parts += [f"reservation {r.id}: outside its schedule {shown(r.schedule)}" for r in reservations
              if r.plate == plate and r.valid_from <= now < r.valid_until and not r.active(now)]
    return "; ".join(parts)


def _allow_list_exit(session: SessionView, lists: Iterable[ListEntry], now: datetime) -> bool:
    """An allow-listed stay leaves free: the entry is still valid, and its schedule held when the stay began
    (a stay is a permit stay or a visitor's from its entry on; leaving after the window closes costs nothing)."""
    return any(e.kind == "allow" and e.plate == session.plate and e.valid(now) and e.in_schedule(session.entry_at)
               for e in lists)


def decide_entry(
    plate: str,
    *,
    now: datetime,
    lot: LotState,
    lists: Sequence[ListEntry] = (),
    reservations: Sequence[Reservation] = (),
    policy: Policy = Policy(),
    scores: PlateScores | None = None,
    sure: bool = True,
) -> Decision:
    """Entry lane: deny list, anti-passback, capacity (reservations and allow list may pass a full lot).

    Allow-list entries and reservations hold only inside their weekly schedule, if they have one;
    outside it the plate is a visitor like any other (the event's detail says why).

    ``plate`` is a whole read ('' when there is none). ``scores`` ranks the active allow-list
    and reservation plates on the vehicle's probabilities: when the lot is full and the read is
    not one of them, or there is no read, or it is unsure, a candidate that clears
    ``policy.thresholds`` is the plate. An unsure read (``sure`` False: below the lane's sure floor,
    taken because a no-read needs the attendant at once) is otherwise a visitor's: the reservation
    or allow-list entry of the plate it spells does not count (a full lot, or someone's reservation).
    """
    key = normalise_plate(plate)
    privileged = {r.plate for r in reservations if r.active(now)} | {
        e.plate for e in lists if e.kind == "allow" and e.active(now)
    }
    if (not key or not sure or (lot.free <= 0 and key not in privileged)) and (
        chosen := scored_choice(scores, policy.thresholds)
    ) is not None and chosen in privileged:
        key, sure = chosen, True
    if not key:
        return Decision(False, Reason.NO_PLATE, MESSAGES[Reason.NO_PLATE])
    if _active_list(key, lists, "deny", now):
        return Decision(False, Reason.DENY_LIST, MESSAGES[Reason.DENY_LIST], plate=key)
    inside = [s for s in lot.sessions if s.plate == key and s.status != "closed"]
    if inside:
        session = max(inside, key=lambda s: s.entry_at)
        if policy.anti_passback == "reuse":
            return Decision(
                True, Reason.REENTRY, MESSAGES[Reason.REENTRY], Action.REUSE_SESSION, key, session.id
            )
        return Decision(
            False, Reason.ALREADY_INSIDE, MESSAGES[Reason.ALREADY_INSIDE], plate=key, session_id=session.id
        )
    # An unsure read that spells a privileged plate is a visitor: it neither takes a full lot's
    # space nor uses up someone's reservation.
    reservation = next((r for r in reservations if r.plate == key and r.active(now)), None) if sure else None
    allowed = sure and _active_list(key, lists, "allow", now)
    if lot.free > 0:
        reason = Reason.ENTRY_RESERVED if reservation else Reason.ENTRY_ALLOWED if allowed else Reason.ENTRY
    elif reservation:
        reason = Reason.ENTRY_RESERVED
    elif allowed:
        reason = Reason.ENTRY_ALLOWED
    else:
        return Decision(False, Reason.FULL, MESSAGES[Reason.FULL], plate=key,
                        detail=_off_schedule(key, now, lists, reservations))
    return Decision(
        True,
        reason,
        MESSAGES[reason],
        Action.START_SESSION,
        key,
        reservation_id=reservation.id if reservation else None,
        detail="" if reason != Reason.ENTRY else _off_schedule(key, now, lists, reservations),
    )


def decide_exit(
    plate: str,
    *,
    now: datetime,
    sessions: Sequence[SessionView],
    tariff: Tariff,
    lists: Sequence[ListEntry] = (),
    policy: Policy = Policy(),
    scores: PlateScores | None = None,
    read_confidence: float | None = None,
) -> Decision:
    """Exit lane: match the vehicle to a session inside, then paid/grace/fee.

    With ``scores`` (the plates inside ranked on the vehicle's probabilities) the scorer
    decides: its best candidate when it clears ``policy.thresholds``; shut with the close
    candidates when another fits nearly as well. The whole read ``plate`` is matched by
    :func:`match_session` only where the scorer agrees or has no view (see docs/anpr.md); a sure
    one (``read_confidence``) of another plate vetoes a weak choice of the scorer.
    An allow-listed plate leaves free while its entry is valid, if its schedule held when the stay began.
    """
    key = normalise_plate(plate)
    if scores is not None:
        chosen = scored_choice(scores, policy.thresholds)
        if chosen is not None and _read_contradicts(key, read_confidence, chosen, scores, policy):
            chosen = None
        by_plate = {s.plate: s for s in sessions if s.status != "closed"}
        for s in sessions:
            if s.status != "closed":
                for alt, _ in s.alternates:
                    by_plate.setdefault(alt, s)
        if chosen is None and scored_ambiguous(scores, policy.thresholds):
            close = _close_candidates(scores, policy.thresholds)
            return Decision(
                False,
                Reason.AMBIGUOUS,
                MESSAGES[Reason.AMBIGUOUS],
                plate=key,
                candidates=close,
                detail="candidate sessions: "
                + ", ".join(f"#{by_plate[p].id} {p}" if p in by_plate else p for p in close),
            )
        match = None
        if chosen is not None and chosen in by_plate:
            match = Match(by_plate[chosen], 0.0 if chosen == key else plate_distance(key, chosen) if key else 0.0)
        elif key and _fallback_allowed(scores, policy.thresholds):
            # The scorer is unsure only because the evidence is weak: the whole read may still
            # match, when the scorer's own best is that very session.
            found, _ = match_session(key, sessions, max_distance=policy.match_max_distance)
            if found is not None and found.session.plate == scores.best:
                match = found
        if match is None and not key and _grammar_reads_best(scores, policy.thresholds) and scores.best in by_plate:
            # No whole read was sure enough, but the grammar's own reading of the evidence is the
            # scorer's best, unrivalled: the string fallback's case, read on the evidence itself
            # (never against a whole read of another plate).
            match = Match(by_plate[scores.best], 0.0)
        if match is None:
            if not key:
                return Decision(False, Reason.NO_PLATE, MESSAGES[Reason.NO_PLATE], candidates=_close_candidates(
                    scores, policy.thresholds))
            return Decision(False, Reason.NO_ENTRY_RECORD, MESSAGES[Reason.NO_ENTRY_RECORD], plate=key)
    else:
        if not key:
            return Decision(False, Reason.NO_PLATE, MESSAGES[Reason.NO_PLATE])
        match, candidates = match_session(key, sessions, max_distance=policy.match_max_distance)
        if match is None:
            if candidates:
                return Decision(
                    False,
                    Reason.AMBIGUOUS,
                    MESSAGES[Reason.AMBIGUOUS],
                    plate=key,
                    candidates=tuple(c.session.plate for c in candidates),
                    detail="candidate sessions: "
                    + ", ".join(f"#{c.session.id} {c.session.plate}" for c in candidates),
                )
            return Decision(False, Reason.NO_ENTRY_RECORD, MESSAGES[Reason.NO_ENTRY_RECORD], plate=key)
    session = match.session
    common = dict(plate=session.plate, session_id=session.id, match_distance=match.distance)
    if _allow_list_exit(session, lists, now):
        return Decision(True, Reason.ALLOW_LIST_EXIT, MESSAGES[Reason.ALLOW_LIST_EXIT], Action.CLOSE_SESSION, **common)
    due = fee_due(session, now, tariff)
    if due == 0:
        reason = Reason.PAID if session.status == "paid" else Reason.FREE_STAY
        return Decision(True, reason, MESSAGES[reason], Action.CLOSE_SESSION, **common)
    money = format_money(due, tariff.currency, tariff.currency_digits)
    if session.status == "paid":
        return Decision(
            False, Reason.GRACE_EXPIRED, f"Grace expired - please pay {money}", fee_due=due, **common
        )
    return Decision(False, Reason.UNPAID, f"Please pay {money}", fee_due=due, **common)
