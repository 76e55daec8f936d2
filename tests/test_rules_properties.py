"""Property tests for the pure lane rules (hypothesis): money only grows with time, is whole
minor units, grace and free-minute boundaries hold exactly, and DST days cost real time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.rules import SessionView, Tariff, decide_exit, fee_due, format_money, stay_fee

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
PROPERTY = settings(max_examples=200, deadline=None)

tariffs = st.builds(
    Tariff,
    free_minutes=st.integers(0, 180),
    interval_minutes=st.integers(1, 24 * 60),
    rate=st.integers(0, 10_000),
    daily_max=st.integers(0, 100_000),
    grace_minutes=st.integers(0, 120),
)
#: Instants over several years, DST changes included, always timezone-aware.
instants = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31),
                        timezones=st.just(UTC))
durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=20))


def paid_session(entry_at: datetime, paid_at: datetime) -> SessionView:
    return SessionView(id=1, plate="AB123", entry_at=entry_at, status="paid", paid_at=paid_at, amount_paid=1)


def open_session(entry_at: datetime) -> SessionView:
    return SessionView(id=1, plate="AB123", entry_at=entry_at, status="open")


@PROPERTY
@given(tariff=tariffs, entry=instants, first=durations, more=durations)
def test_the_stay_fee_never_decreases_with_time(tariff: Tariff, entry: datetime, first: timedelta,
                                                more: timedelta) -> None:
    earlier = stay_fee(entry, entry + first, tariff)
    later = stay_fee(entry, entry + first + more, tariff)
    assert earlier <= later


@PROPERTY
@given(tariff=tariffs, entry=instants, paid_after=durations, first=durations, more=durations)
def test_the_fee_due_after_paying_never_decreases_with_time(tariff: Tariff, entry: datetime,
                                                            paid_after: timedelta, first: timedelta,
                                                            more: timedelta) -> None:
    session = paid_session(entry, entry + paid_after)
    now = entry + paid_after + first
    assert fee_due(session, now, tariff) <= fee_due(session, now + more, tariff)


@PROPERTY
@given(tariff=tariffs, entry=instants, stay=durations)
def test_money_is_whole_minor_units_and_never_negative(tariff: Tariff, entry: datetime, stay: timedelta) -> None:
    for amount in (stay_fee(entry, entry + stay, tariff), fee_due(open_session(entry), entry + stay, tariff)):
        assert type(amount) is int and amount >= 0
        text = format_money(amount, tariff.currency, tariff.currency_digits)
        major, minor = text.split()[0].split(".")
        assert int(major) * 100 + int(minor) == amount  # formatting loses no cent


@PROPERTY
@given(tariff=tariffs, entry=instants, seconds=st.integers(0, 3 * 3600))
def test_stays_within_the_free_minutes_cost_nothing(tariff: Tariff, entry: datetime, seconds: int) -> None:
    stay = timedelta(seconds=seconds)
    if stay <= timedelta(minutes=tariff.free_minutes):
        assert stay_fee(entry, entry + stay, tariff) == 0
    elif tariff.rate > 0:
        assert stay_fee(entry, entry + stay, tariff) > 0


@PROPERTY
@given(tariff=tariffs, entry=instants, paid_after=durations, seconds=st.integers(0, 6 * 3600))
def test_grace_boundary_is_exact(tariff: Tariff, entry: datetime, paid_after: timedelta, seconds: int) -> None:
    paid_at = entry + paid_after
    session = paid_session(entry, paid_at)
    now = paid_at + timedelta(seconds=seconds)
    due = fee_due(session, now, tariff)
    if now <= paid_at + tariff.grace:
        assert due == 0
        decision = decide_exit("AB123", now=now, sessions=[session], tariff=tariff)
        assert decision.open
    elif tariff.rate > 0:
        assert due > 0  # the fee runs again from the end of the grace, without free minutes
        decision = decide_exit("AB123", now=now, sessions=[session], tariff=tariff)
        assert not decision.open and decision.fee_due == due


@PROPERTY
@given(tariff=tariffs, entry=instants, paid_after=durations)
def test_one_second_after_the_grace_the_first_interval_is_due(tariff: Tariff, entry: datetime,
                                                                paid_after: timedelta) -> None:
    paid_at = entry + paid_after
    due = fee_due(paid_session(entry, paid_at), paid_at + tariff.grace + timedelta(seconds=1), tariff)
    expected = min(tariff.rate, tariff.daily_max) if tariff.daily_max else tariff.rate
    assert due == expected


@PROPERTY
@given(tariff=tariffs, entry=instants, stay=st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=24)))
def test_a_day_never_costs_more_than_the_daily_maximum(tariff: Tariff, entry: datetime, stay: timedelta) -> None:
    if tariff.daily_max:
        assert stay_fee(entry, entry + stay, tariff) <= tariff.daily_max


@PROPERTY
@given(tariff=tariffs, entry=instants, stay=durations, zone=st.sampled_from([BERLIN, NEW_YORK]))
def test_the_fee_depends_on_real_elapsed_time_not_on_the_time_zone(tariff: Tariff, entry: datetime,
                                                                   stay: timedelta, zone: ZoneInfo) -> None:
    in_utc = stay_fee(entry, entry + stay, tariff)
    local = stay_fee(entry.astimezone(zone), (entry + stay).astimezone(zone), tariff)
    assert local == in_utc


# Nights when the clocks change in Berlin: 2026-03-29 (23 h day) and 2026-10-25 (25 h day).
DST_NIGHTS = [datetime(2026, 3, 29, tzinfo=BERLIN), datetime(2026, 10, 25, tzinfo=BERLIN)]


@PROPERTY
@given(tariff=tariffs, night=st.sampled_from(DST_NIGHTS), start_min=st.integers(0, 6 * 60),
       stay_min=st.integers(0, 10 * 60))
def test_a_stay_across_a_dst_change_costs_what_it_really_lasted(tariff: Tariff, night: datetime, start_min: int,
                                                               stay_min: int) -> None:
    entry = (night.astimezone(UTC) + timedelta(minutes=start_min)).astimezone(BERLIN)
    leave = (entry.astimezone(UTC) + timedelta(minutes=stay_min)).astimezone(BERLIN)
    same_length_on_a_plain_day = datetime(2026, 6, 1, 1, 0, tzinfo=BERLIN)
    expected = stay_fee(same_length_on_a_plain_day, same_length_on_a_plain_day + timedelta(minutes=stay_min), tariff)
    assert stay_fee(entry, leave, tariff) == expected
