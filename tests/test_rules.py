"""The pure lane core: fees, grace, matching, capacity, anti-passback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gatekeeper.rules import (
    Action,
    ListEntry,
    LotState,
    Policy,
    Reason,
    Reservation,
    SessionView,
    Tariff,
    decide_entry,
    decide_exit,
    fee_due,
    format_money,
    match_session,
    normalise_plate,
    plate_distance,
    stay_fee,
)
from gatekeeper.schedules import parse_schedule

BERLIN = ZoneInfo("Europe/Berlin")
T = Tariff(free_minutes=15, interval_minutes=60, rate=250, daily_max=2000, grace_minutes=15)
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def session(id: int, plate: str, *, entered: datetime = NOW - timedelta(hours=2), status: str = "open",
            paid_at: datetime | None = None) -> SessionView:
    return SessionView(id=id, plate=plate, entry_at=entered, status=status, paid_at=paid_at)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- fees


@pytest.mark.parametrize(
    "entry, leave, expected",
    [
        # within the free minutes: nothing
        (local(2026, 11, 23, 10, 0), local(2026, 11, 23, 10, 15), 0),
        # just past the free minutes: the first started hour, counted from entry
        (local(2026, 11, 23, 10, 0), local(2026, 11, 23, 10, 16), 250),
        (local(2026, 11, 23, 10, 0), local(2026, 11, 23, 11, 0), 250),
        (local(2026, 11, 23, 10, 0), local(2026, 11, 23, 11, 0, 1), 500),
        # across midnight: one continuous stay, not two half-days
        (local(2026, 11, 23, 23, 30), local(2026, 11, 24, 0, 30), 250),
        (local(2026, 11, 23, 22, 0), local(2026, 11, 24, 1, 0), 750),
        # daily maximum caps a long day
        (local(2026, 11, 23, 8, 0), local(2026, 11, 23, 20, 0), 2000),
        # several days: each full 24 h at the daily max plus the rest
        (local(2026, 11, 20, 10, 0), local(2026, 11, 23, 10, 0), 6000),
        (local(2026, 11, 20, 10, 0), local(2026, 11, 23, 12, 30), 6750),
        (local(2026, 11, 20, 10, 0), local(2026, 11, 23, 23, 0), 8000),
        # DST spring forward (Berlin, 29 Mar 2026 02:00 -> 03:00): 01:30 -> 03:30 is one real hour
        (local(2026, 3, 29, 1, 30), local(2026, 3, 29, 3, 30), 250),
        # DST fall back (25 Oct 2026 03:00 -> 02:00): 01:30 -> 03:30 wall clock is three real hours
        (local(2026, 10, 25, 1, 30), local(2026, 10, 25, 3, 30), 750),
    ],
)
def test_stay_fee(entry: datetime, leave: datetime, expected: int) -> None:
    assert stay_fee(entry, leave, T) == expected


def test_fee_without_daily_max_and_in_other_intervals() -> None:
    t = Tariff(free_minutes=0, interval_minutes=30, rate=100, daily_max=0)
    assert stay_fee(NOW, NOW + timedelta(hours=30), t) == 60 * 100
    assert stay_fee(NOW, NOW + timedelta(minutes=1), t) == 100


def test_fee_is_integer_money_and_refuses_naive_times() -> None:
    assert isinstance(stay_fee(NOW, NOW + timedelta(hours=5), T), int)
    with pytest.raises(ValueError, match="naive"):
        stay_fee(datetime(2026, 1, 1), datetime(2026, 1, 1, 2), T)


@pytest.mark.parametrize("field, value", [("rate", 2.5), ("rate", -1), ("interval_minutes", 0), ("daily_max", "20")])
def test_tariff_rejects_non_integer_money(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        Tariff(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "minor, currency, digits, text",
    [(450, "EUR", 2, "4.50 EUR"), (5, "USD", 2, "0.05 USD"), (1200, "JPY", 0, "1200 JPY"), (12345, "BHD", 3, "12.345 BHD")],
)
def test_format_money(minor: int, currency: str, digits: int, text: str) -> None:
    assert format_money(minor, currency, digits) == text


# --------------------------------------------------------------------------- grace


@pytest.mark.parametrize(
    "minutes_after_payment, due",
    [(0, 0), (15, 0), (16, 250), (75, 250), (76, 500), (15 + 24 * 60, 2000)],
)
def test_paid_session_grace_then_fee_runs_again_from_grace_end(minutes_after_payment: int, due: int) -> None:
    paid_at = NOW - timedelta(hours=1)
    s = session(1, "AB123", entered=NOW - timedelta(hours=5), status="paid", paid_at=paid_at)
    assert fee_due(s, paid_at + timedelta(minutes=minutes_after_payment), T) == due


def test_exit_grace_expired_says_so_and_asks_for_the_new_fee() -> None:
    paid_at = NOW - timedelta(minutes=40)
    s = session(7, "AB123", status="paid", paid_at=paid_at)
    d = decide_exit("AB123", now=NOW, sessions=[s], tariff=T)
    assert (d.open, d.reason, d.fee_due) == (False, Reason.GRACE_EXPIRED, 250)
    assert d.message == "Grace expired - please pay 2.50 EUR"


# --------------------------------------------------------------------------- matching


@pytest.mark.parametrize(
    "a, b, distance",
    [
        ("AB123", "AB123", 0),
        ("AB-123", "ab 123", 0),
        ("AB1Z3", "AB123", 0.25),  # 2/Z
        ("O8I5", "0B15", 0.75),  # O/0, 8/B, I/1
        ("AB123", "AB124", 1),
        ("AB123", "AB1234", 1),
        ("AB123", "XY987", 5),
    ],
)
def test_plate_distance(a: str, b: str, distance: float) -> None:
    assert plate_distance(a, b) == pytest.approx(distance)


def test_normalise_plate() -> None:
    assert normalise_plate(" ab-12 cd·3 ") == "AB12CD3"


@pytest.mark.parametrize(
    "read, plates, expected_id, n_candidates",
    [
        ("KA1234", ["KA1234", "KA1235"], 1, 1),  # exact wins over a near neighbour
        ("KAI234", ["KA1234", "MX9999"], 1, 1),  # look-alike
        ("KA12345", ["KA1234", "MX9999"], 1, 1),  # one insertion
        ("KA1239", ["KA1234", "KA1235"], None, 2),  # two equally near: ambiguous
        ("KA1Z34", ["KA1234", "KA1734"], 1, 2),  # look-alike beats a full substitution
        ("ZZ0000", ["KA1234"], None, 0),  # nothing near
    ],
)
def test_match_session(read: str, plates: list[str], expected_id: int | None, n_candidates: int) -> None:
    sessions = [session(i, p) for i, p in enumerate(plates, 1)]
    match, candidates = match_session(read, sessions, max_distance=1.0)
    assert (match.session.id if match else None) == expected_id
    assert len(candidates) == n_candidates


def test_closed_sessions_are_never_matched() -> None:
    match, _ = match_session("KA1234", [session(1, "KA1234", status="closed")])
    assert match is None


# --------------------------------------------------------------------------- entry


def lot(capacity: int, *plates: str) -> LotState:
    return LotState(capacity=capacity, sessions=tuple(session(i, p) for i, p in enumerate(plates, 1)))


def test_entry_opens_and_starts_a_session_when_there_is_space() -> None:
    d = decide_entry("b-xy 42", now=NOW, lot=lot(2, "AAA1"))
    assert (d.open, d.action, d.plate, d.message) == (True, Action.START_SESSION, "BXY42", "Welcome")


def test_full_lot_stays_shut() -> None:
    d = decide_entry("BXY42", now=NOW, lot=lot(2, "AAA1", "AAA2"))
    assert (d.open, d.reason, d.message, d.action) == (False, Reason.FULL, "Parking full", Action.NONE)


def test_reservation_enters_a_full_lot_only_inside_its_window() -> None:
    full = lot(1, "AAA1")
    r = Reservation("r-1", "BXY42", NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    d = decide_entry("BXY42", now=NOW, lot=full, reservations=[r])
    assert (d.open, d.reason, d.reservation_id) == (True, Reason.ENTRY_RESERVED, "r-1")
    late = decide_entry("BXY42", now=NOW + timedelta(hours=2), lot=full, reservations=[r])
    assert (late.open, late.reason) == (False, Reason.FULL)


def test_allow_list_passes_a_full_lot_and_deny_list_never_enters() -> None:
    full = lot(1, "AAA1")
    allow = ListEntry("BXY42", "allow")
    assert decide_entry("BXY42", now=NOW, lot=full, lists=[allow]).reason == Reason.ENTRY_ALLOWED
    deny = ListEntry("BXY42", "deny", valid_until=NOW + timedelta(days=1))
    d = decide_entry("BXY42", now=NOW, lot=lot(10), lists=[deny, allow])
    assert (d.open, d.reason, d.message) == (False, Reason.DENY_LIST, "Access denied")
    expired = ListEntry("BXY42", "deny", valid_until=NOW - timedelta(seconds=1))
    assert decide_entry("BXY42", now=NOW, lot=lot(10), lists=[expired]).open


STAFF = parse_schedule("Mon-Fri 07:00-19:00", tz=BERLIN)
MONDAY_9, MONDAY_20, SATURDAY_10 = local(2026, 11, 23, 9), local(2026, 11, 23, 20), local(2026, 11, 28, 10)


def test_a_scheduled_allow_list_entry_passes_a_full_lot_only_in_its_hours() -> None:
    full = lot(1, "AAA1")
    staff = [ListEntry("BXY42", "allow", schedule=STAFF)]
    inside = decide_entry("BXY42", now=MONDAY_9, lot=full, lists=staff)
    assert (inside.open, inside.reason, inside.detail) == (True, Reason.ENTRY_ALLOWED, "")
    for outside in (MONDAY_20, SATURDAY_10):
        d = decide_entry("BXY42", now=outside, lot=full, lists=staff)
        assert (d.open, d.reason, d.message) == (False, Reason.FULL, "Parking full")
        assert d.detail == "allow list: outside its schedule Mon-Fri 07:00-19:00"
    # With space, outside its hours the plate is a visitor, and the event says why.
    visitor = decide_entry("BXY42", now=SATURDAY_10, lot=lot(10), lists=staff)
    assert (visitor.open, visitor.reason, visitor.detail) == (
        True, Reason.ENTRY, "allow list: outside its schedule Mon-Fri 07:00-19:00")
    # The validity window still bounds it: expired is expired, whatever the hour (and no schedule detail).
    expired = [ListEntry("BXY42", "allow", valid_until=MONDAY_9 - timedelta(days=1), schedule=STAFF)]
    d = decide_entry("BXY42", now=MONDAY_9, lot=full, lists=expired)
    assert (d.reason, d.detail) == (Reason.FULL, "")


def test_a_scheduled_reservation_holds_only_in_its_hours_within_its_window() -> None:
    full = lot(1, "AAA1")
    weekly = Reservation("r-7", "BXY42", MONDAY_9 - timedelta(days=30), MONDAY_9 + timedelta(days=30),
                         schedule=parse_schedule("Mon 08:00-12:00", tz=BERLIN))
    d = decide_entry("BXY42", now=MONDAY_9, lot=full, reservations=[weekly])
    assert (d.open, d.reason, d.reservation_id) == (True, Reason.ENTRY_RESERVED, "r-7")
    d = decide_entry("BXY42", now=MONDAY_9 + timedelta(days=1), lot=full, reservations=[weekly])
    assert (d.open, d.reason, d.detail) == (False, Reason.FULL, "reservation r-7: outside its schedule Mon 08:00-12:00")
    assert decide_entry("BXY42", now=MONDAY_9 + timedelta(days=35), lot=full, reservations=[weekly]).detail == ""


def test_a_scheduled_deny_entry_denies_only_in_its_hours() -> None:
    """The store and the commands give schedules to allow entries only; the rule reads any entry the same way."""
    nights = [ListEntry("BXY42", "deny", schedule=parse_schedule("daily 22:00-06:00", tz=BERLIN))]
    assert decide_entry("BXY42", now=MONDAY_9, lot=lot(10), lists=nights).open
    assert decide_entry("BXY42", now=MONDAY_20 + timedelta(hours=3), lot=lot(10), lists=nights).reason == Reason.DENY_LIST


@pytest.mark.parametrize(
    "entered, leaves, free",
    [
        (MONDAY_9, MONDAY_9 + timedelta(hours=8), True),  # in the hours, and leaves in them
        (MONDAY_9, MONDAY_20 + timedelta(hours=3), True),  # entered in the hours: leaving late costs nothing
        (SATURDAY_10, SATURDAY_10 + timedelta(hours=3), False),  # a visitor's stay pays
        (local(2026, 11, 23, 6, 30), MONDAY_9, False),  # came before the hours: a visitor's stay
    ],
)
def test_an_allow_listed_stay_leaves_free_when_its_schedule_held_at_entry(entered: datetime, leaves: datetime,
                                                                            free: bool) -> None:
    staff = [ListEntry("BXY42", "allow", schedule=STAFF)]
    d = decide_exit("BXY42", now=leaves, sessions=[session(1, "BXY42", entered=entered)], tariff=T, lists=staff)
    assert (d.open, d.reason == Reason.ALLOW_LIST_EXIT) == (free, free)
    assert free or (d.reason, d.fee_due > 0) == (Reason.UNPAID, True)


@pytest.mark.parametrize(
    "policy, open_, reason, action",
    [
        ("deny", False, Reason.ALREADY_INSIDE, Action.NONE),
        ("reuse", True, Reason.REENTRY, Action.REUSE_SESSION),
    ],
)
def test_anti_passback(policy: str, open_: bool, reason: Reason, action: Action) -> None:
    d = decide_entry("AAA1", now=NOW, lot=lot(10, "AAA1"), policy=Policy(anti_passback=policy))  # type: ignore[arg-type]
    assert (d.open, d.reason, d.action, d.session_id) == (open_, reason, action, 1)


def test_empty_read_is_not_a_plate() -> None:
    assert decide_entry(" - ", now=NOW, lot=lot(10)).reason == Reason.NO_PLATE
    assert decide_exit("", now=NOW, sessions=[], tariff=T).reason == Reason.NO_PLATE


# --------------------------------------------------------------------------- exit


def test_exit_unpaid_asks_for_the_fee_and_never_opens() -> None:
    d = decide_exit("KA1234", now=NOW, sessions=[session(3, "KA1234")], tariff=T)
    assert (d.open, d.reason, d.fee_due, d.session_id) == (False, Reason.UNPAID, 500, 3)
    assert d.message == "Please pay 5.00 EUR"


def test_exit_paid_within_grace_opens_and_closes_the_session() -> None:
    s = session(3, "KA1234", status="paid", paid_at=NOW - timedelta(minutes=10))
    d = decide_exit("KAI234", now=NOW, sessions=[s], tariff=T)
    assert (d.open, d.reason, d.action, d.session_id, d.message) == (True, Reason.PAID, Action.CLOSE_SESSION, 3, "Goodbye")
    assert d.plate == "KA1234" and d.match_distance == pytest.approx(0.25)


def test_exit_within_free_minutes_opens() -> None:
    s = session(3, "KA1234", entered=NOW - timedelta(minutes=10))
    d = decide_exit("KA1234", now=NOW, sessions=[s], tariff=T)
    assert (d.open, d.reason) == (True, Reason.FREE_STAY)


def test_exit_no_entry_record() -> None:
    d = decide_exit("ZZ9999", now=NOW, sessions=[session(1, "KA1234")], tariff=T)
    assert (d.open, d.reason, d.message) == (False, Reason.NO_ENTRY_RECORD, "No entry record")


def test_exit_ambiguous_stays_shut_and_lists_candidates() -> None:
    paid = dict(status="paid", paid_at=NOW - timedelta(minutes=5))
    d = decide_exit("KA1239", now=NOW, sessions=[session(1, "KA1234", **paid), session(2, "KA1235", **paid)], tariff=T)
    assert (d.open, d.reason, d.message) == (False, Reason.AMBIGUOUS, "Please see attendant")
    assert set(d.candidates) == {"KA1234", "KA1235"}
    assert "#1 KA1234" in d.detail and "#2 KA1235" in d.detail


# --------------------------------------------------------------------------- closed-vocabulary scores


from dataclasses import dataclass as _dataclass

from gatekeeper.rules import (  # noqa: E402
    Decision as _Decision, MatchThresholds, Policy as _Policy, decide_entry as _decide_entry, decide_exit as _decide_exit,
)


@_dataclass(frozen=True)
class Scores:
    best: str
    score_norm: float
    margin: float
    free_gap: float
    scores: tuple[tuple[str, float], ...] = ()
    twin: str = ""
    free: str = ""


STRICT = _Policy(thresholds=MatchThresholds(min_score_norm=-0.5, min_margin=3.0, max_free_gap=2.0))


def test_exit_never_opens_when_the_evidence_reads_a_look_alike_twin_of_the_best() -> None:
    """The grammar reads NYM7544, the best session is NYM7S44: a car not inside could be the twin."""
    sessions = [session(1, "NYM7S44", status="paid", paid_at=NOW)]
    d = _decide_exit("NYM7544", now=NOW, sessions=sessions, tariff=Tariff(), policy=STRICT,
                     scores=Scores("NYM7S44", -0.1, 20.0, 0.0, (("NYM7S44", -0.7),), twin="NYM7544"))
    assert (d.open, d.reason) == (False, Reason.AMBIGUOUS) and "NYM7544" in d.candidates


def test_exit_scorer_choice_opens_the_session_whatever_the_string_read() -> None:
    sessions = [session(1, "AB123CD", status="paid", paid_at=NOW), session(2, "KL456MN")]
    d = _decide_exit("", now=NOW, sessions=sessions, tariff=Tariff(), policy=STRICT,
                     scores=Scores("AB123CD", -0.1, 9.0, 0.0, (("AB123CD", -1.0), ("KL456MN", -40.0))))
    assert (d.open, d.session_id, d.reason) == (True, 1, Reason.PAID)


def test_exit_scorer_close_call_stays_shut_even_when_the_read_is_exact() -> None:
    sessions = [session(1, "AB812CD", status="paid", paid_at=NOW), session(2, "ABB12CD", status="paid", paid_at=NOW)]
    d = _decide_exit("AB812CD", now=NOW, sessions=sessions, tariff=Tariff(), policy=STRICT,
                     scores=Scores("AB812CD", -0.2, 0.4, 0.0, (("AB812CD", -1.4), ("ABB12CD", -1.8))))
    assert (d.open, d.reason) == (False, Reason.AMBIGUOUS) and set(d.candidates) == {"AB812CD", "ABB12CD"}


def test_exit_string_fallback_never_opens_against_the_evidence() -> None:
    """The read is one edit from a session, but the evidence says the read, not the session."""
    sessions = [session(1, "AB123CD", status="paid", paid_at=NOW)]
    d = _decide_exit("AB128CD", now=NOW, sessions=sessions, tariff=Tariff(), policy=STRICT,
                     scores=Scores("AB123CD", -1.4, float("inf"), 9.0, (("AB123CD", -10.0),)))
    assert (d.open, d.reason) == (False, Reason.NO_ENTRY_RECORD)


def test_exit_string_fallback_when_only_the_score_is_weak() -> None:
    sessions = [session(1, "AB123CD", status="paid", paid_at=NOW), session(2, "XY987ZZ")]
    d = _decide_exit("AB123CD", now=NOW, sessions=sessions, tariff=Tariff(), policy=STRICT,
                     scores=Scores("AB123CD", -0.9, 12.0, 0.5, (("AB123CD", -6.0), ("XY987ZZ", -30.0))))
    assert (d.open, d.session_id) == (True, 1)


def test_exit_no_read_without_a_confident_candidate() -> None:
    sessions = [session(1, "AB123CD")]
    d = _decide_exit("", now=NOW, sessions=sessions, tariff=Tariff(), policy=STRICT,
                     scores=Scores("AB123CD", -2.5, float("inf"), 6.0, (("AB123CD", -17.0),)))
    assert (d.open, d.reason) == (False, Reason.NO_PLATE)


def test_exit_opens_when_the_evidence_reads_the_unrivalled_best_though_no_read_was_sure() -> None:
    """No whole read cleared min_confidence; the grammar's reading of the crop is the session's plate."""
    sessions = [session(1, "KM80RAK", status="paid", paid_at=NOW), session(2, "RK082AL")]
    weak = dict(score_norm=-2.0, margin=50.0, free_gap=0.0, scores=(("KM80RAK", -14.0), ("RK082AL", -64.0)))
    d = _decide_exit("", now=NOW, sessions=sessions, tariff=Tariff(), policy=STRICT,
                     scores=Scores("KM80RAK", free="KM80RAK", **weak))
    assert (d.open, d.session_id, d.reason) == (True, 1, Reason.PAID)
    # The evidence reads something else too (or a rival is close, or a twin): stays shut.
    for scores in (Scores("KM80RAK", free="KM8ORAK", **weak),
                   Scores("KM80RAK", free="KM80RAK", **{**weak, "margin": 1.0}),
                   Scores("KM80RAK", free="KM80RAK", twin="KMB0RAK", **weak)):
        assert not _decide_exit("", now=NOW, sessions=sessions, tariff=Tariff(), policy=STRICT, scores=scores).open
    # A whole read of another plate is never overruled this way.
    d = _decide_exit("XY987ZZ", now=NOW, sessions=sessions, tariff=Tariff(), policy=STRICT,
                     scores=Scores("KM80RAK", free="KM80RAK", **weak))
    assert (d.open, d.reason) == (False, Reason.NO_ENTRY_RECORD)


def test_a_sure_read_of_another_plate_vetoes_a_weak_scorer_choice() -> None:
    """A car with no session read clearly (OZC8400), other text of its photo faintly like a car
    inside (OZR2224 at -2.2 per character): shut. The same choice stands when it scores surely,
    when the read is unsure, or when the read is within the string matcher's reach of it."""
    loose = _Policy(thresholds=MatchThresholds(min_score_norm=-2.25))
    sessions = [session(1, "OZR2224", status="paid", paid_at=NOW), session(2, "JRD2238")]

    def exit_(read: str, confidence: float | None, score_norm: float) -> "_Decision":
        scores = Scores("OZR2224", score_norm, 3.3, 2.4, (("OZR2224", 7 * score_norm), ("JRD2238", -18.7)))
        return _decide_exit(read, now=NOW, sessions=sessions, tariff=Tariff(), policy=loose, scores=scores,
                            read_confidence=confidence)

    vetoed = exit_("OZC8400", 0.98, -2.2)
    assert (vetoed.open, vetoed.session_id, vetoed.reason) == (False, None, Reason.NO_ENTRY_RECORD)
    assert not exit_("OZC8400", None, -2.2).open                  # unknown confidence counts as sure
    assert exit_("OZC8400", 0.98, -1.5).open                      # the scorer is sure enough to overrule
    assert exit_("931ZTK", 0.55, -2.2).open                       # an unsure read vetoes nothing
    assert exit_("OZR2Z24", 0.98, -2.2).open                      # the read is the session's, one look-alike off
    assert exit_("", None, -2.2).open                             # no whole read: the scorer decides


def test_entry_scores_only_let_privileged_plates_into_a_full_lot() -> None:
    lot = LotState(capacity=1, sessions=[session(1, "AB123CD")])
    allow = [ListEntry("PERMIT1", "allow")]
    sure = Scores("PERMIT1", -0.1, float("inf"), 0.0, (("PERMIT1", -0.7),))
    d = _decide_entry("", now=NOW, lot=lot, lists=allow, policy=STRICT, scores=sure)
    assert (d.open, d.reason, d.plate) == (True, Reason.ENTRY_ALLOWED, "PERMIT1")
    weak = Scores("PERMIT1", -1.5, float("inf"), 5.0, (("PERMIT1", -10.0),))
    assert _decide_entry("PERM1T7", now=NOW, lot=lot, lists=allow, policy=STRICT, scores=weak).reason == Reason.FULL


def test_an_unsure_read_of_a_privileged_plate_is_a_visitor_unless_the_scorer_picks_it() -> None:
    """An entry takes an unsure whole read (a no-read needs the attendant at once), but the plate it
    spells takes neither a full lot's space nor someone's reservation on that read alone."""
    full = LotState(capacity=1, sessions=[session(1, "AB123CD")])
    allow = [ListEntry("PERMIT1", "allow")]
    assert decide_entry("PERMIT1", now=NOW, lot=full, lists=allow, sure=False).reason == Reason.FULL
    assert decide_entry("PERMIT1", now=NOW, lot=full, lists=allow).reason == Reason.ENTRY_ALLOWED
    sure = Scores("PERMIT1", -0.1, float("inf"), 0.0, (("PERMIT1", -0.7),))
    d = _decide_entry("PERMIT1", now=NOW, lot=full, lists=allow, policy=STRICT, scores=sure, sure=False)
    assert (d.open, d.reason) == (True, Reason.ENTRY_ALLOWED)
    r = Reservation("r-1", "BXY42", NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    visitor = decide_entry("BXY42", now=NOW, lot=lot(10), reservations=[r], sure=False)
    assert (visitor.open, visitor.reason, visitor.reservation_id) == (True, Reason.ENTRY, None)
    denied = decide_entry("BXY42", now=NOW, lot=lot(10), lists=[ListEntry("BXY42", "deny")], sure=False)
    assert (denied.open, denied.reason) == (False, Reason.DENY_LIST)


def test_a_closer_look_match_is_taken_when_sure_or_clear_never_when_merely_close() -> None:
    """The closer look's matches: sure (-0.75 per character), or clear (-1.5 with 5 nats over the
    runner-up and the free reading within 6 nats); a weaker or closer-run match is not taken."""
    from gatekeeper.rules import closer_choice

    t = MatchThresholds()
    assert closer_choice(Scores("CCLVM3", -0.5, 3.5, 1.0), t) == "CCLVM3"            # sure
    assert closer_choice(Scores("CCLVM3", -1.3, 7.7, 2.9), t) == "CCLVM3"            # clear
    assert closer_choice(Scores("CCLVM3", -1.3, 4.0, 2.9), t) is None                # a rival too close
    assert closer_choice(Scores("CCLVM3", -1.3, 7.7, 7.0), t) is None                # the evidence reads more
    assert closer_choice(Scores("RK485AF", -1.83, 11.3, 0.0), t) is None             # below the clear score
    assert closer_choice(Scores("CCLVM3", -0.5, 9.0, 0.0, twin="CCLVN3"), t) is None  # its look-alike twin is read
    assert closer_choice(None, t) is None
