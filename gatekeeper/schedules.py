"""Weekly access schedules: weekday x time-window rules on the lot's wall clock. Pure: no clock, no I/O.

Staff may hold an allow-list entry Mon-Fri 07:00-19:00 only, cleaners Sat 06:00-09:00. A
:class:`WeeklySchedule` is a set of :class:`Window` s read in one time zone (the lot's); an instant
is inside when its *local wall-clock time* is inside one window. So a window means what the
sign at the gate says on every day of the year: over a DST change it is as long as the wall clock
makes it (07:00-19:00 is 12 wall-clock hours, and 00:00-24:00 on the spring-forward Sunday is 23
real hours), the autumn's repeated hour is inside a window that contains it both times, and the
spring's skipped hour exists on no clock, so nothing is admitted in it.

A window whose end is at or before its start runs past midnight: ``Fri 22:00-06:00`` covers Friday
from 22:00 and Saturday until 06:00. ``24:00`` is only an end (``00:00-24:00`` is the whole day).

Three spellings, one meaning:

* text, for people and the CLI: ``"Mon-Fri 07:00-19:00"``, ``"Sat,Sun 06:00-09:00"``,
  ``"Fri 22:00-06:00"``, ``"daily 00:00-24:00"``; several rules joined by ``;``
  (:func:`parse_schedule`, :meth:`WeeklySchedule.describe`);
* the wire and the database: ``[{"days": ["mon", ...], "start": "07:00", "end": "19:00"}, ...]``
  (:func:`from_wire`, :meth:`WeeklySchedule.to_wire`);
* the value the rules read: :class:`WeeklySchedule`, bound to its zone.

No schedule (``None`` where one is optional) means always; an empty schedule is refused rather
than read as never.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Iterable, Mapping, Sequence

#: Weekday names on the wire, Monday first (``datetime.weekday()`` order).
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
#: A clock time on the wire: ``HH:MM``, 00:00-23:59, or 24:00 (an end only).
TIME_PATTERN = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"
START_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
#: At most this many rules in one schedule (a week of split shifts fits easily).
MAX_RULES = 50
_DAY_MINUTES = 24 * 60
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
_RULE = re.compile(r"^\s*(?P<days>\S+)\s+(?P<start>[0-9:]+)\s*-\s*(?P<end>[0-9:]+)\s*$")


class ScheduleError(ValueError):
    """A schedule that does not say one clear thing; the message names the part at fault."""


@dataclass(frozen=True)
class Window:
    """On each of ``days`` (0 = Monday), from ``start`` until ``end``, in minutes after local midnight.

    ``end`` (1-1440) at or before ``start`` (0-1439) runs into the next day.
    """

    days: frozenset[int]
    start: int
    end: int

    def __post_init__(self) -> None:
        if not self.days or not all(isinstance(d, int) and 0 <= d <= 6 for d in self.days):
            raise ScheduleError(f"days must be weekdays 0-6 (Monday = 0), at least one, got {sorted(self.days)!r}")
        if not 0 <= self.start < _DAY_MINUTES:
            raise ScheduleError(f"start must be 00:00-23:59, got {_clock(self.start)}")
        if not 0 <= self.end <= _DAY_MINUTES:
            raise ScheduleError(f"end must be 00:00-24:00, got {_clock(self.end)}")
        if self.start == self.end:
            raise ScheduleError(
                f"{_clock(self.start)}-{_clock(self.end)} is empty (the whole day is 00:00-24:00)")

    @property
    def overnight(self) -> bool:
        """Runs past midnight into the next day (its end is at or before its start)."""
        return self.end <= self.start

    def covers(self, weekday: int, minute: float) -> bool:
        """Whether the wall-clock ``minute`` (may be fractional) of ``weekday`` is inside."""
        if not self.overnight:
            return weekday in self.days and self.start <= minute < self.end
        return (weekday in self.days and minute >= self.start) or (
            (weekday - 1) % 7 in self.days and minute < self.end
        )

    def describe(self) -> str:
        return f"{_describe_days(self.days)} {_clock(self.start)}-{_clock(self.end)}"

    def to_wire(self) -> dict[str, Any]:
        return {"days": [DAY_NAMES[d] for d in sorted(self.days)], "start": _clock(self.start), "end": _clock(self.end)}


@dataclass(frozen=True)
class WeeklySchedule:
    """Windows read on the wall clock of ``tz`` (the lot's zone); an instant inside any of them is admitted."""

    windows: tuple[Window, ...]
    tz: tzinfo

    def __post_init__(self) -> None:
        if not self.windows:
            raise ScheduleError("a schedule needs at least one window (no schedule at all means always)")
        if len(self.windows) > MAX_RULES:
            raise ScheduleError(f"at most {MAX_RULES} windows in a schedule, got {len(self.windows)}")

    def admits(self, moment: datetime) -> bool:
        """Whether ``moment`` (timezone-aware) falls in a window on this zone's wall clock."""
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"naive datetime {moment.isoformat()} (times must carry a time zone)")
        local = moment.astimezone(self.tz)
        minute = local.hour * 60 + local.minute + (local.second + local.microsecond / 1e6) / 60
        weekday = local.weekday()
        return any(w.covers(weekday, minute) for w in self.windows)

    def describe(self) -> str:
        """``Mon-Fri 07:00-19:00; Sat 06:00-09:00``: what people read, and what :func:`parse_schedule` reads back."""
        return "; ".join(w.describe() for w in self.windows)

    def to_wire(self) -> list[dict[str, Any]]:
        """The wire and database form (no zone: it is always the lot's)."""
        return [w.to_wire() for w in self.windows]


# --------------------------------------------------------------------------- text (people, the CLI)


def parse_schedule(texts: str | Iterable[str], *, tz: tzinfo) -> WeeklySchedule:
    """Rules as people write them, one per string or joined by ``;``: ``"Mon-Fri 07:00-19:00; Sat 06:00-09:00"``."""
    if isinstance(texts, str):
        texts = [texts]
    rules = [part for text in texts for part in text.split(";") if part.strip()]
    if not rules:
        raise ScheduleError("no schedule given (e.g. 'Mon-Fri 07:00-19:00')")
    return WeeklySchedule(tuple(parse_rule(rule) for rule in rules), tz)


def parse_rule(text: str) -> Window:
    """One rule: days (``Mon``, ``Mon-Fri``, ``Sat,Sun``, ``Fri-Mon``, ``daily``), a space, ``HH:MM-HH:MM``."""
    match = _RULE.match(text)
    if match is None:
        raise ScheduleError(f"{text.strip()!r}: expected days and a time window, e.g. 'Mon-Fri 07:00-19:00'")
    try:
        days = _parse_days(match["days"])
        start, end = _parse_time(match["start"], "start"), _parse_time(match["end"], "end")
        return Window(days, start, end)
    except ScheduleError as exc:
        raise ScheduleError(f"{text.strip()!r}: {exc}") from None


def _parse_days(text: str) -> frozenset[int]:
    if text.lower() in ("daily", "everyday"):
        return frozenset(range(7))
    days: list[int] = []
    for part in text.split(","):
        first, sep, last = part.partition("-")
        a = _day(first)
        span = [a] if not sep else [(a + i) % 7 for i in range((_day(last) - a) % 7 + 1)]
        for day in span:
            if day in days:
                raise ScheduleError(f"{DAY_NAMES[day].title()} is given twice")
            days.append(day)
    return frozenset(days)


def _day(text: str) -> int:
    name = text.strip().lower()
    if name in DAY_NAMES:
        return DAY_NAMES.index(name)
    if name in _FULL_NAMES:
        return _FULL_NAMES.index(name)
    raise ScheduleError(f"unknown day {text.strip()!r} (use Mon, Tue, Wed, Thu, Fri, Sat, Sun, ranges like Mon-Fri, "
                        "lists like Sat,Sun, or daily)")


def _parse_time(text: str, what: str) -> int:
    match = _TIME.match(text.strip())
    if match is None:
        raise ScheduleError(f"{what} {text!r} is not a time (HH:MM)")
    hours, minutes = int(match[1]), int(match[2])
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ScheduleError(f"{what} {text!r} is not a time of day (00:00-23:59, or 24:00 as an end)")
    if what == "start" and hours == 24:
        raise ScheduleError("start 24:00 is not a time of day (00:00-23:59; 24:00 is only an end)")
    return hours * 60 + minutes


# --------------------------------------------------------------------------- the wire and the database


def from_wire(rules: Sequence[Mapping[str, Any]], *, tz: tzinfo) -> WeeklySchedule:
    """``[{"days": ["mon"], "start": "07:00", "end": "19:00"}]`` -> :class:`WeeklySchedule`;
    :class:`ScheduleError` names the rule (``[1].end: ...``)."""
    if not isinstance(rules, Sequence) or isinstance(rules, str | bytes):
        raise ScheduleError(f"a schedule is a list of rules, got {type(rules).__name__}")
    windows = []
    for i, rule in enumerate(rules):
        try:
            windows.append(window_from_wire(rule))
        except ScheduleError as exc:
            raise ScheduleError(f"[{i}]{'' if str(exc).startswith('.') else ': '}{exc}") from None
    return WeeklySchedule(tuple(windows), tz)


def window_from_wire(rule: Mapping[str, Any]) -> Window:
    """One wire rule; the message starts with ``.field:`` when one field is at fault."""
    if not isinstance(rule, Mapping) or set(rule) != {"days", "start", "end"}:
        raise ScheduleError("a rule has exactly days, start and end")
    names = rule["days"]
    if not isinstance(names, list) or not names:
        raise ScheduleError(".days: a non-empty list of mon, tue, wed, thu, fri, sat, sun")
    days: list[int] = []
    for name in names:
        if name not in DAY_NAMES:
            raise ScheduleError(f".days: {name!r} is not one of mon, tue, wed, thu, fri, sat, sun")
        if DAY_NAMES.index(name) in days:
            raise ScheduleError(f".days: {name!r} is given twice")
        days.append(DAY_NAMES.index(name))
    times = {}
    for key in ("start", "end"):
        value = rule[key]
        if not isinstance(value, str) or not re.match(TIME_PATTERN, value):
            raise ScheduleError(f".{key}: {value!r} is not HH:MM (00:00-23:59, or 24:00 as an end)")
        times[key] = int(value[:2]) * 60 + int(value[3:])
    if times["start"] == _DAY_MINUTES:
        raise ScheduleError(".start: 24:00 is only an end (a day starts at 00:00)")
    return Window(frozenset(days), times["start"], times["end"])


# --------------------------------------------------------------------------- shared


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _describe_days(days: Iterable[int]) -> str:
    """Monday-first ranges: ``Mon-Fri``, ``Mon,Wed,Fri``, ``Sat-Sun``."""
    chosen = sorted(set(days))
    if len(chosen) == 7:
        return "Mon-Sun"
    runs: list[list[int]] = []
    for day in chosen:
        if runs and day == runs[-1][-1] + 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    name = lambda d: DAY_NAMES[d].title()  # noqa: E731
    return ",".join(name(r[0]) if len(r) == 1 else f"{name(r[0])}-{name(r[-1])}" for r in runs)
