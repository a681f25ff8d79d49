"""The roster and timetable CSV layouts: parsing and checking an upload row by row (pure: what the database
knows comes in as sets), and writing the same layout back out, so an export imports again unchanged.

Roster: ``course_id,person_id,role`` (role ``student`` or ``faculty``; empty = student).
Timetable: ``course_id,room_id,day,start,end`` (day: ``mon``..``sun`` for a weekly slot, or a date
``YYYY-MM-DD`` for a one-off; start and end ``HH:MM`` or ``HH:MM:SS``, in the site's time zone).

The first line is the header, exactly these names. A row's natural key (roster: course and person;
timetable: course, room, day and start) says which row it updates on a re-import; a key twice in one file
is an error on the second row.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass, field

ROSTER_COLUMNS = ("course_id", "person_id", "role")
TIMETABLE_COLUMNS = ("course_id", "room_id", "day", "start", "end")
ROLES = ("student", "faculty")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_ROWS = 20000
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


@dataclass
class Row:
    line: int  # the line in the file (the header is line 1)
    cells: list[str]
    values: tuple = ()  # the checked values, when there is no error
    error: str = ""


@dataclass
class Checked:
    kind: str
    rows: list[Row] = field(default_factory=list)
    problem: str = ""  # the whole file refused (no header, not text...)

    @property
    def valid(self) -> list[Row]:
        return [r for r in self.rows if not r.error]

    @property
    def invalid(self) -> list[Row]:
        return [r for r in self.rows if r.error]


def _records(data: bytes, columns: tuple[str, ...], kind: str) -> tuple[list[tuple[int, list[str]]], str]:
    """The file's lines after its header, or why the file cannot be read at all."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [], "the file is not UTF-8 text: save it as CSV (UTF-8)"
    if "\x00" in text:
        return [], "the file holds NUL characters: it is not a CSV file"
    try:
        lines = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        return [], f"the file is not valid CSV: {exc}"
    header = [c.strip().lower() for c in lines[0]] if lines else []
    if tuple(header) != columns:
        return [], (f"the first line must be the header {','.join(columns)} (the {kind} layout), "
                    f"not {','.join(header)[:120] or 'empty'}")
    body = [(n, cells) for n, cells in enumerate(lines[1:], start=2) if any(c.strip() for c in cells)]
    if len(body) > MAX_ROWS:
        return [], f"the file has {len(body)} rows: at most {MAX_ROWS} per import"
    return body, ""


class _Refused(Exception):
    """A row's values refused: the message is the reason shown in the preview."""


def _check_rows(data: bytes, columns: tuple[str, ...], kind: str, row_values) -> Checked:
    """The loop both layouts share: each row's column count, its values from ``row_values(cells)`` (its
    natural key, that key as shown, the values; or :class:`_Refused`), and a key seen twice refused."""
    body, problem = _records(data, columns, kind)
    checked, seen = Checked(kind, problem=problem), {}
    for line, cells in body:
        row = Row(line, cells)
        checked.rows.append(row)
        if len(cells) != len(columns):
            row.error = f"{len(cells)} columns, expected {len(columns)} ({','.join(columns)})"
            continue
        try:
            key, shown, values = row_values([c.strip() for c in cells])
        except _Refused as exc:
            row.error = str(exc)
            continue
        if key in seen:
            row.error = f"duplicate of line {seen[key]} ({shown})"
        else:
            seen[key] = line
            row.values = values
    return checked


def check_roster(data: bytes, *, courses: set[str], people: set[str]) -> Checked:
    """Each row of a roster CSV with its values (course, person, role) or the reason it is refused."""

    def values(cells: list[str]):
        course, person, role = cells
        role = role.lower() or "student"
        if course not in courses:
            raise _Refused(f"unknown course {course!r}")
        if person not in people:
            raise _Refused(f"unknown person {person!r}: enrol or add the person first")
        if role not in ROLES:
            raise _Refused(f"role {role!r} is not student or faculty")
        return (course, person), f"{course}, {person}", (course, person, role)

    return _check_rows(data, ROSTER_COLUMNS, "roster", values)


def parse_time(text: str) -> dt.time | None:
    match = _TIME.match(text.strip())
    if not match:
        return None
    return dt.time(int(match[1]), int(match[2]), int(match[3] or 0))


def parse_day(text: str) -> int | dt.date | None:
    """A weekday (1 = Monday) or a date; None when it is neither."""
    text = text.strip().lower()
    if text in WEEKDAYS:
        return WEEKDAYS.index(text) + 1
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        return None
    return day if 2000 <= day.year <= 2100 else None


def check_timetable(data: bytes, *, courses: set[str], rooms: set[str]) -> Checked:
    """Each row of a timetable CSV with its values (course, room, weekday or None, date or None, start,
    end) or the reason it is refused."""

    def values(cells: list[str]):
        course, room, day_text, start_text, end_text = cells
        day, start, end = parse_day(day_text), parse_time(start_text), parse_time(end_text)
        if course not in courses:
            raise _Refused(f"unknown course {course!r}")
        if room not in rooms:
            raise _Refused(f"unknown room {room!r}")
        if day is None:
            raise _Refused(f"day {day_text[:20]!r} is neither mon..sun nor a date YYYY-MM-DD")
        if start is None or end is None:
            raise _Refused(f"bad time {(start_text if start is None else end_text)[:20]!r}: use HH:MM (00:00 to 23:59)")
        if end <= start:
            raise _Refused(f"end {end_text} is not after start {start_text}")
        weekday, on_date = (day, None) if isinstance(day, int) else (None, day)
        return ((course, room, day, start), f"{course}, {room}, {day_text}, {start_text}",
                (course, room, weekday, on_date, start, end))

    return _check_rows(data, TIMETABLE_COLUMNS, "timetable", values)


def day_text(weekday: int | None, on_date: dt.date | None) -> str:
    return WEEKDAYS[weekday - 1] if weekday else on_date.isoformat()


def time_text(value: dt.time) -> str:
    """HH:MM, with seconds only when there are some (so the export imports back to the same key)."""
    return value.strftime("%H:%M:%S" if value.second else "%H:%M")


def write_csv(columns: tuple[str, ...], rows) -> str:
    """The layout's header and rows; a cell a spreadsheet would run as a formula is prefixed with '."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["'" + c if isinstance(c, str) and c[:1] in ("=", "+", "-", "@") else c for c in row])
    return out.getvalue()


def roster_csv(rows) -> str:
    return write_csv(ROSTER_COLUMNS, [(r["course_id"], r["person_id"], r["role"]) for r in rows])


def timetable_csv(rows) -> str:
    return write_csv(TIMETABLE_COLUMNS, [(r["course_id"], r["room_id"], day_text(r["weekday"], r["on_date"]),
                                          time_text(r["start_time"]), time_text(r["end_time"]))
                                         for r in rows])
