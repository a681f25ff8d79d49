"""Attendance exports as CSV or XLSX bytes: per session (the class list), per course over a date range
(the register: students by sessions, one status code a cell, with totals) and per student (their sessions).
Used by `rollcall attendance export` and the dashboard. Times are shown in ``tz`` (the site's time zone).

Status codes in the register (students of the course's roster): P present, L late, E left early,
U unconfirmed (recognised at the door, too little presence in the room: for faculty to resolve), A absent,
``-`` no record (the session is not closed yet, or the student was never seen in an open one). The class
list and a student's sessions show each record's evidence: door recognitions and the first one, room
tracks and minutes in the room, whether the room camera saw the person's face, and who resolved an
unconfirmed record by hand.

Every text cell that a spreadsheet program would read as a formula (OWASP "CSV injection": a cell starting
with ``=``, ``+``, ``-``, ``@``, tab, CR or LF) is neutralised: in CSV it gets a leading ``'`` (shown by
spreadsheet programs as text, and the visible mark that the value was escaped); in XLSX it is stored as a
text cell with the quote-prefix style, so the value is kept exactly and never becomes a formula. Numbers stay
numbers. Every export writes an ``attendance.export`` audit_log row naming who exported what.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from typing import Any, Sequence
from zoneinfo import ZoneInfo

from consumers.privacy import record_audit
from consumers.sessions import ATTENDED
from infra.foundation.dates import FIRST_DATE, LAST_DATE
from infra.foundation.errors import RollcallError

FORMATS = ("csv", "xlsx")
STATUS_CODES = {"present": "P", "late": "L", "left_early": "E", "unconfirmed": "U", "absent": "A"}
EVIDENCE_HEADER = ["door_recognitions", "first_door", "room_tracks", "room_face", "resolved_by"]
# What spreadsheet programs start a formula (or DDE call) with (OWASP CSV injection); LF as well as CR.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
OWN_CODES = frozenset({"-"})  # the register's "no record" code: ours, and no program reads it as a formula
SHEET_TITLE_BAD = re.compile(r"[\\/*?:\[\]]")


def _dangerous(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(FORMULA_START) and value not in OWN_CODES


def _csv_cell(value: Any) -> Any:
    return "'" + value if _dangerous(value) else value


def _local(value: dt.datetime | None, tz: ZoneInfo) -> str:
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def _render(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str,
            preamble: Sequence[tuple[str, Any]] = ()) -> bytes:
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow([_csv_cell(v) for v in header])
        writer.writerows([_csv_cell(v) for v in row] for row in rows)
        return ("\ufeff" + buffer.getvalue()).encode("utf-8")  # BOM: spreadsheet apps read UTF-8 right
    if fmt == "xlsx":
        return _xlsx(title, header, rows, preamble)
    raise RollcallError(f"export format {fmt!r} is not supported: use one of {', '.join(FORMATS)}")


def _append(sheet, values: Sequence[Any]) -> None:
    """One row; a text that would start a formula is kept as text (openpyxl would store "=..." as a formula)."""
    sheet.append(list(values))
    for cell in sheet[sheet.max_row]:
        if _dangerous(cell.value):
            cell.data_type = "s"
            cell.quotePrefix = True


def _xlsx(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]],
          preamble: Sequence[tuple[str, Any]]) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    sheet = book.active
    sheet.title = SHEET_TITLE_BAD.sub("_", title)[:31] or "export"
    for label, value in preamble:
        _append(sheet, [label, value])
    if preamble:
        sheet.append([])
    _append(sheet, header)
    for cell in sheet[sheet.max_row]:
        cell.font = Font(bold=True)
    sheet.freeze_panes = sheet.cell(row=sheet.max_row + 1, column=1)
    for row in rows:
        _append(sheet, row)
    for index, name in enumerate(header, start=1):
        width = max([len(str(name))] + [len(str(r[index - 1])) for r in rows[:500]])
        sheet.column_dimensions[sheet.cell(row=1, column=index).column_letter].width = min(max(width + 2, 6), 40)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _evidence(row, tz: ZoneInfo) -> list:
    """The evidence columns (EVIDENCE_HEADER) of an attendance row, and who resolved it if it was
    unconfirmed; empty without a row."""
    if row["status"] is None:
        return [""] * len(EVIDENCE_HEADER)
    return [row["door_recognitions"], _local(row["first_door_at"], tz), row["room_tracks"],
            "yes" if row["room_face"] else "no", row["resolved_by"] or ""]


def _window(date_from: dt.date, date_to: dt.date, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """[start of date_from, end of date_to) in the site's zone; dates out of range are the caller's error
    (9999-12-31 has no next day: an OverflowError, not a 500)."""
    for name, day in (("from", date_from), ("to", date_to)):
        if not FIRST_DATE <= day <= LAST_DATE:
            raise RollcallError(f"{name} date {day.isoformat()} is out of range: use {FIRST_DATE} to {LAST_DATE}")
    if date_to < date_from:
        raise RollcallError(f"to date {date_to.isoformat()} is before from date {date_from.isoformat()}")
    return (dt.datetime.combine(date_from, dt.time(), zone),
            dt.datetime.combine(date_to + dt.timedelta(days=1), dt.time(), zone))


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise RollcallError(f"export format {fmt!r} is not supported: use one of {', '.join(FORMATS)}")


async def _audit(conn, actor: str, kind: str, subject: str, fmt: str, rows: int, **span: dt.date) -> None:
    detail = {"kind": kind, "format": fmt, "rows": rows, **{k: v.isoformat() for k, v in span.items()}}
    await record_audit(conn, actor, "attendance.export", subject, detail)


async def export_session(conn, session_id: int, fmt: str, *, tz: str = "UTC", actor: str = "unknown") -> bytes:
    """One session's class list: every student of the course and everyone else recorded, with status."""
    _check_format(fmt)
    zone = ZoneInfo(tz)
    session = await conn.fetchrow(
        """SELECT cs.*, c.name AS course_name FROM class_session cs JOIN course c ON c.id = cs.course_id
           WHERE cs.id = $1""", session_id)
    if session is None:
        raise RollcallError(f"session {session_id} does not exist: `rollcall attendance session list` shows them")
    rows = await conn.fetch(
        """SELECT p.id, p.display_name, coalesce(m.role, 'not on roster') AS role, a.status, a.first_seen, a.last_seen,
                  a.presence_s, coalesce(array_length(a.evidence_event_ids, 1), 0) AS evidence,
                  a.door_recognitions, a.first_door_at, a.room_tracks, a.room_face, a.resolved_by
           FROM person p
           LEFT JOIN attendance a ON a.person_id = p.id AND a.session_id = $1
           LEFT JOIN course_member m ON m.person_id = p.id AND m.course_id = $2
           WHERE a.session_id IS NOT NULL OR m.role = 'student'
           ORDER BY p.display_name, p.id""", session_id, session["course_id"])
    header = ["person_id", "name", "role", "status", "first_seen", "last_seen", "minutes_present", "evidence_events",
              *EVIDENCE_HEADER]
    body = [[r["id"], r["display_name"], r["role"], r["status"] or ("not seen" if session["state"] != "closed" else "absent"),
             _local(r["first_seen"], zone), _local(r["last_seen"], zone),
             round((r["presence_s"] or 0) / 60, 1), r["evidence"], *_evidence(r, zone)] for r in rows]
    preamble = [("course", f"{session['course_id']} {session['course_name']}".strip()), ("room", session["room_id"]),
                ("starts", _local(session["starts_at"], zone)), ("ends", _local(session["ends_at"], zone)),
                ("state", session["state"]), ("time zone", tz)]
    data = _render(f"session {session_id}", header, body, fmt, preamble)
    await _audit(conn, actor, "session", str(session_id), fmt, len(body))
    return data


async def export_course(conn, course_id: str, date_from: dt.date, date_to: dt.date, fmt: str, *,
                        tz: str = "UTC", actor: str = "unknown") -> bytes:
    """The course register from ``date_from`` to ``date_to`` (inclusive, local dates): a row per student,
    a column per session (status code), then counts and the attendance rate of closed sessions."""
    _check_format(fmt)
    zone = ZoneInfo(tz)
    if not await conn.fetchval("SELECT 1 FROM course WHERE id = $1", course_id):
        raise RollcallError(f"course {course_id!r} does not exist: check the id (`rollcall attendance session list`)")
    start, end = _window(date_from, date_to, zone)
    sessions = await conn.fetch(
        """SELECT id, starts_at, room_id, state FROM class_session WHERE course_id = $1 AND starts_at >= $2
           AND starts_at < $3 AND state <> 'cancelled' ORDER BY starts_at""", course_id, start, end)
    students = await conn.fetch(
        """SELECT p.id, p.display_name FROM course_member m JOIN person p ON p.id = m.person_id
           WHERE m.course_id = $1 AND m.role = 'student' ORDER BY p.display_name, p.id""", course_id)
    marks = await conn.fetch("SELECT session_id, person_id, status FROM attendance WHERE session_id = ANY($1::bigint[])",
                             [s["id"] for s in sessions])
    status = {(m["session_id"], m["person_id"]): m["status"] for m in marks}
    header = ["person_id", "name"] + [f"{s['starts_at'].astimezone(zone):%Y-%m-%d %H:%M} {s['room_id']}" for s in sessions]
    header += [*STATUS_CODES, "attendance_rate"]
    body = []
    for student in students:
        codes = [status.get((s["id"], student["id"])) for s in sessions]
        counts = {k: sum(1 for c in codes if c == k) for k in STATUS_CODES}
        closed = [c for c, s in zip(codes, sessions) if s["state"] == "closed"]
        attended = sum(1 for c in closed if c in ATTENDED)
        rate = round(attended / len(closed), 3) if closed else ""
        body.append([student["id"], student["display_name"]] + [STATUS_CODES.get(c, "-") for c in codes]
                    + [counts[k] for k in STATUS_CODES] + [rate])
    data = _render(f"{course_id} register", header, body, fmt,
                   [("course", course_id), ("from", date_from.isoformat()), ("to", date_to.isoformat()),
                    ("codes", "P present, L late, E left early, U unconfirmed (door only), A absent, - no record"), ("time zone", tz)])
    await _audit(conn, actor, "course", course_id, fmt, len(body), **{"from": date_from, "to": date_to})
    return data


async def export_student(conn, person_id: str, date_from: dt.date, date_to: dt.date, fmt: str, *,
                         tz: str = "UTC", actor: str = "unknown") -> bytes:
    """One student's sessions from ``date_from`` to ``date_to``: the courses they are enrolled in and any
    other session they were recorded in."""
    _check_format(fmt)
    zone = ZoneInfo(tz)
    person = await conn.fetchrow("SELECT id, display_name FROM person WHERE id = $1", person_id)
    if person is None:
        raise RollcallError(f"person {person_id!r} does not exist: check the id")
    start, end = _window(date_from, date_to, zone)
    rows = await conn.fetch(
        """SELECT cs.id, cs.course_id, cs.room_id, cs.starts_at, cs.ends_at, cs.state, a.status, a.first_seen,
                  a.last_seen, a.presence_s, a.door_recognitions, a.first_door_at, a.room_tracks, a.room_face,
                  a.resolved_by
           FROM class_session cs
           LEFT JOIN attendance a ON a.session_id = cs.id AND a.person_id = $1
           WHERE cs.starts_at >= $2 AND cs.starts_at < $3 AND cs.state <> 'cancelled'
             AND (a.person_id IS NOT NULL OR cs.course_id IN (SELECT course_id FROM course_member WHERE person_id = $1
                                                              AND role = 'student'))
           ORDER BY cs.starts_at""", person_id, start, end)
    header = ["session_id", "course", "room", "starts", "ends", "status", "first_seen", "last_seen", "minutes_present",
              *EVIDENCE_HEADER]
    body = [[r["id"], r["course_id"], r["room_id"], _local(r["starts_at"], zone), _local(r["ends_at"], zone),
             r["status"] or ("not seen" if r["state"] != "closed" else "absent"), _local(r["first_seen"], zone),
             _local(r["last_seen"], zone), round((r["presence_s"] or 0) / 60, 1), *_evidence(r, zone)] for r in rows]
    data = _render(f"{person_id}"[:31], header, body, fmt,
                   [("person", f"{person['id']} {person['display_name']}"), ("from", date_from.isoformat()),
                    ("to", date_to.isoformat()), ("time zone", tz)])
    await _audit(conn, actor, "student", person_id, fmt, len(body), **{"from": date_from, "to": date_to})
    return data
