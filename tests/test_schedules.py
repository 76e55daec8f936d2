"""Weekly access schedules (gatekeeper/schedules.py): the pure logic, and properties across the 2026 DST changes.

The property tests check the schedule against an oracle that does not use zoneinfo: the 2026 UTC offsets of
Europe/London and America/New_York written out by hand, and a window spelled out as the set of wall-clock
minutes it covers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.schedules import (
    ScheduleError,
    WeeklySchedule,
    Window,
    from_wire,
    parse_rule,
    parse_schedule,
)

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
PROPERTY = settings(max_examples=300, deadline=None)

#: 2026 by hand: (UTC instant the offset starts, offset). London: BST 29 Mar 01:00Z - 25 Oct 01:00Z;
#: New York: EDT 8 Mar 07:00Z (02:00 EST) - 1 Nov 06:00Z (02:00 EDT).
OFFSETS_2026 = {
    "Europe/London": [(datetime(2026, 1, 1, tzinfo=UTC), 0), (datetime(2026, 3, 29, 1, tzinfo=UTC), 1),
                      (datetime(2026, 10, 25, 1, tzinfo=UTC), 0)],
    "America/New_York": [(datetime(2026, 1, 1, tzinfo=UTC), -5), (datetime(2026, 3, 8, 7, tzinfo=UTC), -4),
                         (datetime(2026, 11, 1, 6, tzinfo=UTC), -5)],
}
TRANSITIONS = [at for changes in OFFSETS_2026.values() for at, _ in changes[1:]]


def wall_clock(moment: datetime, zone: str) -> datetime:
    """The oracle's local time: UTC plus the hand-written offset (no zoneinfo)."""
    offset = [hours for start, hours in OFFSETS_2026[zone] if start <= moment][-1]
    return (moment.astimezone(UTC) + timedelta(hours=offset)).replace(tzinfo=None)


def cells(window: Window) -> set[tuple[int, int]]:
    """The oracle's window: every (weekday, minute of the day) it covers, walked minute by minute."""
    length = window.end - window.start if window.end > window.start else 24 * 60 - window.start + window.end
    out = set()
    for day in window.days:
        for k in range(length):
            minute = window.start + k
            out.add(((day + minute // 1440) % 7, minute % 1440))
    return out


def local(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0, *,
          tz: tzinfo = LONDON, fold: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=tz, fold=fold)


def real_minutes_admitted(schedule: WeeklySchedule, start: datetime, hours: int) -> int:
    """Real (UTC) minutes from ``start`` on, for ``hours`` real hours, whose instant the schedule admits."""
    start = start.astimezone(UTC)
    return sum(schedule.admits(start + timedelta(minutes=m, seconds=30)) for m in range(hours * 60))


# --------------------------------------------------------------------------- strategies


@st.composite
def windows(draw: st.DrawFn) -> Window:
    days = draw(st.frozensets(st.integers(0, 6), min_size=1))
    start = draw(st.integers(0, 24 * 60 - 1))
    end = draw(st.integers(1, 24 * 60).filter(lambda e: e != start))
    return Window(days, start, end)


zones_2026 = st.sampled_from(sorted(OFFSETS_2026))
#: Instants within four days of a 2026 DST change (either zone), to the second.
near_a_change = st.builds(lambda at, delta: at + delta, st.sampled_from(TRANSITIONS),
                          st.timedeltas(min_value=timedelta(days=-4), max_value=timedelta(days=4)))
anywhere_in_2026 = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31),
                                timezones=st.just(UTC))
instants_2026 = st.one_of(near_a_change, anywhere_in_2026)


# --------------------------------------------------------------------------- properties


@PROPERTY
@given(rules=st.lists(windows(), min_size=1, max_size=4), zone=zones_2026, moment=instants_2026)
def test_a_schedule_admits_exactly_the_wall_clock_minutes_of_its_windows(rules: list[Window], zone: str,
                                                                          moment: datetime) -> None:
    """Both ways: never a time whose local wall clock is outside every window, always one inside a window."""
    schedule = WeeklySchedule(tuple(rules), ZoneInfo(zone))
    wall = wall_clock(moment, zone)
    inside = any((wall.weekday(), wall.hour * 60 + wall.minute) in cells(w) for w in rules)
    assert schedule.admits(moment) == inside, (schedule.describe(), zone, moment.isoformat(), wall.isoformat())


@PROPERTY
@given(window=windows(), zone=zones_2026, date=st.dates(min_value=datetime(2026, 1, 2).date(),
                                                        max_value=datetime(2026, 12, 30).date()))
def test_a_window_starts_on_its_first_second_and_ends_before_its_last(window: Window, zone: str, date: object) -> None:
    """One day's window: its start is inside, the second before and its end are not (where the wall clock has
    those times that day: the spring gap has none)."""
    day = datetime.combine(date, datetime.min.time())  # type: ignore[arg-type]
    window = Window(frozenset({day.weekday()}), window.start, window.end)
    schedule = WeeklySchedule((window,), ZoneInfo(zone))
    starts = (day + timedelta(minutes=window.start)).replace(tzinfo=ZoneInfo(zone))
    ends = (day + timedelta(days=int(window.overnight), minutes=window.end)).replace(tzinfo=ZoneInfo(zone))

    def exists(moment: datetime) -> bool:
        return moment.astimezone(UTC).astimezone(moment.tzinfo).replace(tzinfo=None) == moment.replace(tzinfo=None)

    if exists(starts):
        assert schedule.admits(starts) and not schedule.admits(starts - timedelta(seconds=1)), (window, starts)
    if exists(ends):
        assert not schedule.admits(ends), (window, ends)


@PROPERTY
@given(moment=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
       zone=st.sampled_from(["Europe/London", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu",
                             "Pacific/Chatham", "America/St_Johns", "UTC"]))
def test_all_week_all_day_always_admits(moment: datetime, zone: str) -> None:
    assert parse_schedule("daily 00:00-24:00", tz=ZoneInfo(zone)).admits(moment)
    assert parse_schedule("Mon-Sun 00:00-24:00", tz=ZoneInfo(zone)).admits(moment.astimezone(ZoneInfo(zone)))


@PROPERTY
@given(start=st.integers(0, 1439), end=st.integers(0, 1439), zone=zones_2026, moment=instants_2026)
def test_a_day_split_at_two_times_admits_each_instant_exactly_once(start: int, end: int, zone: str,
                                                                   moment: datetime) -> None:
    """daily S-E and daily E-S partition the week on the wall clock, DST nights included."""
    if start == end:
        return
    every_day = frozenset(range(7))
    one = WeeklySchedule((Window(every_day, start, end),), ZoneInfo(zone))
    other = WeeklySchedule((Window(every_day, end, start or 1440),), ZoneInfo(zone))
    assert one.admits(moment) != other.admits(moment)


@PROPERTY
@given(day=st.integers(0, 6), start=st.integers(1, 1439), end=st.integers(1, 1439), zone=zones_2026,
       moment=instants_2026)
def test_a_window_past_midnight_is_the_evening_plus_the_next_morning(day: int, start: int, end: int, zone: str,
                                                                     moment: datetime) -> None:
    if end > start:
        start, end = end, start
    if end == start:
        return
    overnight = WeeklySchedule((Window(frozenset({day}), start, end),), ZoneInfo(zone))
    split = WeeklySchedule((Window(frozenset({day}), start, 1440), Window(frozenset({(day + 1) % 7}), 0, end)),
                           ZoneInfo(zone))
    assert overnight.admits(moment) == split.admits(moment)


@PROPERTY
@given(rules=st.lists(windows(), min_size=1, max_size=5))
def test_text_and_wire_forms_read_back_to_the_same_schedule(rules: list[Window]) -> None:
    schedule = WeeklySchedule(tuple(rules), LONDON)
    assert parse_schedule(schedule.describe(), tz=LONDON) == schedule
    assert from_wire(schedule.to_wire(), tz=LONDON) == schedule


# --------------------------------------------------------------------------- examples


def test_staff_hours_on_weekdays() -> None:
    staff = parse_schedule(["Mon-Fri 07:00-19:00", "Sat 06:00-09:00"], tz=LONDON)
    assert staff.admits(local(2026, 6, 5, 7))  # Friday
    assert staff.admits(local(2026, 6, 5, 18, 59, 59))
    assert not staff.admits(local(2026, 6, 5, 19))  # the end is exclusive
    assert not staff.admits(local(2026, 6, 5, 6, 59, 59))
    assert staff.admits(local(2026, 6, 6, 8, 30)) and not staff.admits(local(2026, 6, 6, 9))  # Saturday
    assert not staff.admits(local(2026, 6, 7, 12))  # Sunday
    assert staff.admits(datetime(2026, 6, 5, 17, 30, tzinfo=UTC))  # 18:30 BST: any aware instant works


def test_a_window_past_midnight_covers_the_next_morning_only() -> None:
    night = parse_schedule("Fri 22:00-06:00", tz=LONDON)
    assert not night.admits(local(2026, 6, 5, 21, 59))  # Friday evening, before
    assert night.admits(local(2026, 6, 5, 22)) and night.admits(local(2026, 6, 5, 23, 59, 59))
    assert night.admits(local(2026, 6, 6, 0)) and night.admits(local(2026, 6, 6, 5, 59, 59))  # early Saturday
    assert not night.admits(local(2026, 6, 6, 6)) and not night.admits(local(2026, 6, 6, 23))
    assert not night.admits(local(2026, 6, 4, 23)) and not night.admits(local(2026, 6, 5, 1))  # Thursday night
    sunday_night = parse_schedule("Sun 22:00-06:00", tz=LONDON)
    assert sunday_night.admits(local(2026, 6, 8, 5))  # Monday morning: the week wraps


def test_the_wall_clock_rules_over_the_spring_and_autumn_changes() -> None:
    # London, Sunday 29 March 2026: 01:00 GMT jumps to 02:00 BST.
    spring = datetime(2026, 3, 29, 0, tzinfo=UTC)  # local midnight
    assert real_minutes_admitted(parse_schedule("Sun 00:00-24:00", tz=LONDON), spring, 26) == 23 * 60
    assert real_minutes_admitted(parse_schedule("Sun 01:00-02:00", tz=LONDON), spring, 26) == 0  # never on a clock
    assert real_minutes_admitted(parse_schedule("Sun 00:30-02:30", tz=LONDON), spring, 26) == 60
    assert real_minutes_admitted(parse_schedule("Sun 07:00-19:00", tz=LONDON), spring, 26) == 12 * 60
    # Sunday 25 October 2026: 02:00 BST falls back to 01:00 GMT; 01:00-02:00 happens twice.
    autumn = datetime(2026, 10, 24, 23, tzinfo=UTC)  # local midnight (BST)
    assert real_minutes_admitted(parse_schedule("Sun 00:00-24:00", tz=LONDON), autumn, 26) == 25 * 60
    assert real_minutes_admitted(parse_schedule("Sun 01:00-02:00", tz=LONDON), autumn, 26) == 120
    once, twice = local(2026, 10, 25, 1, 30), local(2026, 10, 25, 1, 30, fold=1)
    assert (twice - once) == timedelta(0) and twice.astimezone(UTC) - once.astimezone(UTC) == timedelta(hours=1)
    assert parse_schedule("Sun 01:00-02:00", tz=LONDON).admits(once)
    assert parse_schedule("Sun 01:00-02:00", tz=LONDON).admits(twice)


def test_new_york_skips_two_to_three_in_march_and_repeats_one_to_two_in_november() -> None:
    march = datetime(2026, 3, 8, 5, tzinfo=UTC)  # Sunday 00:00 EST
    assert real_minutes_admitted(parse_schedule("Sun 02:00-03:00", tz=NEW_YORK), march, 26) == 0
    saturday_night = parse_schedule("Sat 22:00-06:00", tz=NEW_YORK)
    assert real_minutes_admitted(saturday_night, march - timedelta(hours=2), 12) == 7 * 60
    november = datetime(2026, 11, 1, 4, tzinfo=UTC)  # Sunday 00:00 EDT
    assert real_minutes_admitted(parse_schedule("Sun 01:00-02:00", tz=NEW_YORK), november, 26) == 120
    assert real_minutes_admitted(saturday_night, november - timedelta(hours=2), 12) == 9 * 60


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        parse_schedule("daily 00:00-24:00", tz=LONDON).admits(datetime(2026, 6, 5, 12))


def test_the_zone_is_the_schedules_not_the_instants() -> None:
    staff = parse_schedule("Mon-Fri 07:00-19:00", tz=NEW_YORK)
    berlin_noon = datetime(2026, 6, 5, 12, tzinfo=timezone(timedelta(hours=2)))  # 06:00 in New York
    assert not staff.admits(berlin_noon)
    assert staff.admits(berlin_noon + timedelta(hours=1))


@pytest.mark.parametrize(
    "text, days, start, end",
    [
        ("Mon-Fri 07:00-19:00", {0, 1, 2, 3, 4}, 420, 1140),
        ("sat,SUN 6:00 - 9:30", {5, 6}, 360, 570),
        ("Fri-Mon 22:00-06:00", {4, 5, 6, 0}, 1320, 360),
        ("daily 00:00-24:00", set(range(7)), 0, 1440),
        ("Wednesday 12:00-13:00", {2}, 720, 780),
    ],
)
def test_rules_as_people_write_them(text: str, days: set[int], start: int, end: int) -> None:
    assert parse_rule(text) == Window(frozenset(days), start, end)


@pytest.mark.parametrize(
    "text, says",
    [
        ("Mon-Fry 07:00-19:00", "unknown day 'Fry'"),
        ("Mon 07:00-07:00", "is empty"),
        ("Mon 7-19", r"start .7. is not a time \(HH:MM\)"),
        ("Mon 24:00-06:00", "24:00 is only an end"),
        ("Mon 07:00-24:30", "not a time of day"),
        ("Mon 07:60-08:00", "not a time of day"),
        ("Mon,Tue,Mon 07:00-08:00", "Mon is given twice"),
        ("07:00-19:00", "expected days and a time window"),
        ("", "no schedule given"),
        ("Mon 07:00-19:00;;", None),
    ],
)
def test_bad_rules_say_what_is_wrong(text: str, says: str | None) -> None:
    if says is None:
        assert parse_schedule(text, tz=LONDON).describe() == "Mon 07:00-19:00"
        return
    with pytest.raises(ScheduleError, match=says):
        parse_schedule(text, tz=LONDON)


def test_the_wire_model_knows_the_same_days() -> None:
    from typing import get_args

    from gatekeeper.messages import Weekday
    from gatekeeper.schedules import DAY_NAMES

    assert get_args(Weekday) == DAY_NAMES


def test_describe_groups_days_monday_first() -> None:
    text = "Mon,Wed,Fri 07:00-12:00; Sat-Sun 10:00-14:00; Fri-Mon 22:00-06:00; Mon-Sun 00:00-24:00"
    assert parse_schedule(text, tz=LONDON).describe() == (
        "Mon,Wed,Fri 07:00-12:00; Sat-Sun 10:00-14:00; Mon,Fri-Sun 22:00-06:00; Mon-Sun 00:00-24:00")


@pytest.mark.parametrize(
    "rules, says",
    [
        ([], "at least one window"),
        ([{"days": ["mon"], "start": "07:00"}], r"\[0\]: a rule has exactly days, start and end"),
        ([{"days": ["mon"], "start": "07:00", "end": "19:00"}, {"days": ["xx"], "start": "07:00", "end": "19:00"}],
         r"\[1\]\.days: 'xx'"),
        ([{"days": ["mon"], "start": "7:00", "end": "19:00"}], r"\[0\]\.start"),
        ([{"days": ["mon"], "start": "24:00", "end": "19:00"}], r"\[0\]\.start: 24:00 is only an end"),
        ([{"days": ["mon"], "start": "19:00", "end": "19:00"}], r"\[0\]: 19:00-19:00 is empty"),
        ("mon 07:00-19:00", "a list of rules"),
    ],
)
def test_bad_wire_rules_name_the_rule_and_field(rules: object, says: str) -> None:
    with pytest.raises(ScheduleError, match=says):
        from_wire(rules, tz=LONDON)  # type: ignore[arg-type]
