"""Relative time: cues like "yesterday" or "last summer" resolved against the day they were said."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

WEEKDAYS = [date(2024, 1, d).strftime("%A") for d in range(1, 8)]  # 1 January 2024 was a Monday


def format_day(day: date) -> str:
    """'8 May 2023': the one date form EDU texts use (no leading zero, month spelled out)."""
    return f"{day.day} {day:%B %Y}"


# --- time cues ---------------------------------------------------------------------------------------
# dateparser was measured for this: it answers points, not periods ("last month" -> 8 April, not April),
# misses "last weekend", seasons and "a couple of weeks ago", and costs 1-200 ms a call; the calendar
# arithmetic below is what is needed and nothing more.

_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "a couple of": 2, "a couple": 2,
    "couple of": 2, "couple": 2,
}  # fmt: skip
_SEASONS = {"spring": 3, "summer": 6, "fall": 9, "autumn": 9, "winter": 12}
_NUM = (
    r"(?:\d{1,2}|a couple of|a couple|couple of|an?|one|two|three|four|five|six|seven|eight|nine|ten"
    r"|eleven|twelve)"
)
_CUE = re.compile(
    r"\b(?:(?P<fixed>the day before yesterday|yesterday|last night|today|tonight|this morning"
    r"|this afternoon|this evening|tomorrow)"
    r"|(?P<num>" + _NUM + r")\s+(?P<unit>day|week|month|year)s?\s+ago"
    r"|(?P<rel>last|next|this|past|coming)\s+(?P<what>week|weekend|month|year|spring|summer|fall|autumn"
    r"|winter|monday|tuesday|wednesday|thursday|friday|saturday|sunday))\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class TimeCue:
    start: int
    end: int
    cue: str  # as written
    label: str  # what is inserted after the cue, e.g. "7 May 2023"
    day: date  # first day of the period the cue names
    until: date  # the day after its last day


@dataclass(frozen=True)
class Period:
    """A span of days a query asks about: [start, until)."""

    start: date
    until: date


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _season_start(day: date, name: str, shift: int) -> date:
    """First day of the season containing `day` (winter starts in December), moved `shift` seasons."""
    month = _SEASONS[name]
    start = date(day.year, month, 1)
    if month == 12 and day.month <= 2:
        start = date(day.year - 1, 12, 1)
    return date(start.year + shift, start.month, 1)


def _season_label(start: date, name: str) -> str:
    if start.month == 12:
        return f"winter {start.year}-{start.year + 1}"
    return f"{name.lower()} {start.year}"


def _resolve(match: re.Match[str], today: date) -> tuple[str, date, date] | None:
    """The label of the period the cue names, its first day, and the day after its last."""
    label, start = _resolve_start(match, today)
    text = match.group(0).lower()
    if match.group("unit"):
        unit = match.group("unit").lower()
    else:
        unit = next((w for w in ("weekend", "week", "month", "year") if w in text), "day")
        if any(season in text for season in _SEASONS):
            unit = "season"
    if unit == "day":
        until = start + timedelta(days=1)
    elif unit in ("week", "weekend"):
        until = start + timedelta(days=7 if unit == "week" else 2)
    elif unit == "month":
        until = _add_months(start, 1)
    elif unit == "season":
        until = _add_months(start, 3)
    else:
        until = date(start.year + 1, 1, 1)
    return label, start, until


def _resolve_start(match: re.Match[str], today: date) -> tuple[str, date]:
    if fixed := match.group("fixed"):
        offset = {"the day before yesterday": -2, "yesterday": -1, "last night": -1, "tomorrow": 1}
        day = today + timedelta(days=offset.get(fixed.lower(), 0))
        return format_day(day), day
    if num := match.group("num"):
        n = int(num) if num.isdigit() else _NUMBERS[num.lower()]
        unit = match.group("unit").lower()
        if unit == "day":
            day = today - timedelta(days=n)
            return format_day(day), day
        if unit == "week":
            monday = today - timedelta(days=today.weekday() + 7 * n)
            return f"the week of {format_day(monday)}", monday
        if unit == "month":
            first = _add_months(today, -n)
            return f"{first:%B %Y}", first
        return str(today.year - n), date(today.year - n, 1, 1)
    rel, what = match.group("rel").lower(), match.group("what").lower()
    step = {"last": -1, "past": -1, "next": 1, "coming": 1, "this": 0}[rel]
    if what == "week":
        monday = today - timedelta(days=today.weekday()) + timedelta(weeks=step)
        return f"the week of {format_day(monday)}", monday
    if what == "weekend":  # weeks run Monday-Sunday; "this weekend" is the current week's
        saturday = today - timedelta(days=today.weekday() - 5) + timedelta(weeks=step)
        return f"the weekend of {format_day(saturday)}", saturday
    if what == "month":
        first = _add_months(today, step)
        return f"{first:%B %Y}", first
    if what == "year":
        return str(today.year + step), date(today.year + step, 1, 1)
    if what in _SEASONS:
        current = _season_start(today, what, 0)
        if step == 0:
            start = current
        elif step == -1:  # the latest such season that is over: last summer, said in October, is this year's
            start = current if _add_months(current, 3) <= today else _season_start(today, what, -1)
        else:
            start = current if current > today else _season_start(today, what, 1)
        return _season_label(start, what), start
    weekday = WEEKDAYS.index(what.capitalize())
    if step == -1:  # the latest such day strictly before today
        day = today - timedelta(days=(today.weekday() - weekday - 1) % 7 + 1)
    elif step == 1:  # the first such day strictly after today
        day = today + timedelta(days=(weekday - today.weekday() - 1) % 7 + 1)
    else:  # "this Friday": the one in the current Monday-Sunday week
        day = today + timedelta(days=weekday - today.weekday())
    return format_day(day), day


def find_time_cues(text: str, today: date) -> list[TimeCue]:
    """Relative time cues in `text`, each with the absolute date or period it names (said on `today`)."""
    cues: list[TimeCue] = []
    for match in _CUE.finditer(text):
        resolved = _resolve(match, today)
        if resolved is not None:
            cues.append(TimeCue(match.start(), match.end(), match.group(0), *resolved))
    return cues


def date_time_cues(text: str, today: date) -> tuple[str, list[TimeCue]]:
    """`text` with "(<date>)" after each resolved cue, and the cues found."""
    cues = find_time_cues(text, today)
    out, pos = [], 0
    for cue in cues:
        out.append(text[pos : cue.end])
        out.append(f" ({cue.label})")
        pos = cue.end
    out.append(text[pos:])
    return "".join(out), cues


# --- periods a query names ------------------------------------------------------------------------
_MONTHS = [date(2024, m, 1).strftime("%B") for m in range(1, 13)]
_MONTH = r"(?P<month>" + "|".join(_MONTHS) + r")"
_EXPLICIT = re.compile(
    r"\b(?:" + _MONTH + r"\s+(?P<md>\d{1,2})(?:st|nd|rd|th)?,?\s+(?P<mdy>\d{4})"  # October 13, 2023
    r"|(?P<dm>\d{1,2})(?:st|nd|rd|th)?\s+(?P<dmonth>"
    + "|".join(_MONTHS)
    + r"),?\s+(?P<dmy>\d{4})"  # 13 October 2023
    r"|(?P<mmonth>" + "|".join(_MONTHS) + r")\s+(?P<my>\d{4})"  # July 2023
    r"|(?:in|during|of|since)\s+(?P<year>(?:19|20)\d\d))\b",  # in 2023
    re.IGNORECASE,
)


def _month_number(name: str) -> int:
    return [m.lower() for m in _MONTHS].index(name.lower()) + 1


def _explicit_period(match: re.Match[str]) -> Period | None:
    try:
        if match.group("month"):
            day = date(int(match.group("mdy")), _month_number(match.group("month")), int(match.group("md")))
        elif match.group("dmonth"):
            day = date(int(match.group("dmy")), _month_number(match.group("dmonth")), int(match.group("dm")))
        elif match.group("mmonth"):
            first = date(int(match.group("my")), _month_number(match.group("mmonth")), 1)
            return Period(first, _add_months(first, 1))
        else:
            year = int(match.group("year"))
            return Period(date(year, 1, 1), date(year + 1, 1, 1))
    except ValueError:  # "February 30, 2023"
        return None
    return Period(day, day + timedelta(days=1))


def query_periods(query: str, asked_on: date | None) -> tuple[str, list[Period]]:
    """The periods a search query asks about, and the query with its relative cues dated.

    Explicit dates ("October 13, 2023", "July 2023", "in 2023") need nothing else; relative ones
    ("last summer", "two weeks ago") only mean something against the day the question is asked,
    so they are resolved only when that day is given.
    """
    periods = [p for m in _EXPLICIT.finditer(query) if (p := _explicit_period(m)) is not None]
    if asked_on is None:
        return query, periods
    dated, cues = date_time_cues(query, asked_on)
    return dated, periods + [Period(c.day, c.until) for c in cues]
