"""E-mail reports through the configured SMTP server (``[reports]``): each week, every course's attendance
of the week before to the course's faculty; and to a student absent from at least ``absence_threshold``
closed sessions of a course within the last ``absence_window_days`` days, a notice (once a week at most).

:func:`report_loop` runs them on the schedule beside the attendance writer's housekeeping; `rollcall
reports send` sends what is due now. A report is due from ``weekly_on`` at ``weekly_at`` (site time) for
the ISO week before; a writer that was down sends it when it is back. Every mail is claimed in
``report_sent`` (migration 0010) before it goes out, so several writers, a restart or the command never
send one twice; a mail the server refuses is unclaimed and tried again at the next check. Recipients are
people's e-mail addresses (``person.email``); someone without one gets no mail, nor does someone whose
dashboard accounts are all disabled (a person without an account still gets theirs).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import asyncpg

from consumers.failures import DB_ERRORS, one_line

log = logging.getLogger("rollcall.reports")

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ATTENDED = ("present", "late", "left_early")
# Who may get mail, for a query on person p: an address, not erased, and not only disabled accounts
# (bool_and over no account is NULL: a person without an account gets their reports).
RECIPIENT_SQL = """p.email IS NOT NULL AND p.pseudonymised_at IS NULL
    AND (SELECT bool_and(u.disabled) FROM dashboard_user u WHERE u.person_id = p.id) IS NOT TRUE"""


@dataclass(frozen=True)
class Mail:
    kind: str  # 'weekly' or 'absences'
    period: str  # the ISO week, e.g. 2026-W49
    subject_key: str  # the course, or course/person
    recipient: str
    title: str
    body: str


def week_label(monday: dt.date) -> str:
    year, week, _ = monday.isocalendar()
    return f"{year}-W{week:02d}"


def reported_week(now: dt.datetime, timezone: str, weekly_on: str, weekly_at: dt.time) -> dt.date:
    """The Monday of the week the latest due weekly report is about: the week before this week's sending
    time once it has passed, else the week before that (last week's report, sent or still due)."""
    local = now.astimezone(ZoneInfo(timezone))
    monday = local.date() - dt.timedelta(days=local.weekday())
    send_at = dt.datetime.combine(monday + dt.timedelta(days=WEEKDAYS.index(weekly_on)), weekly_at, ZoneInfo(timezone))
    return monday - dt.timedelta(days=7 if local >= send_at else 14)


def _local_bounds(monday: dt.date, timezone: str) -> tuple[dt.datetime, dt.datetime]:
    zone = ZoneInfo(timezone)
    return dt.datetime.combine(monday, dt.time(), zone), dt.datetime.combine(monday + dt.timedelta(days=7), dt.time(), zone)


def weekly_body(course: str, name: str, week: str, sessions: int, rows: list) -> str:
    """The weekly report's text: one line per student of the roster."""
    lines = [f"Attendance of {course} {name} in week {week}: {sessions} session(s) held.", "",
             f"{'student':<32} {'attended':>8} {'late':>5} {'absent':>6} {'rate':>6}"]
    for r in rows:
        rate = f"{r['attended'] / sessions:.0%}" if sessions else "-"
        who = f"{r['person_id']} ({r['display_name']})" if r["display_name"] != r["person_id"] else r["person_id"]
        lines.append(f"{who[:32]:<32} {r['attended']:>8} {r['late']:>5} {r['absent']:>6} {rate:>6}")
    return "\n".join(lines + ["", "Sent by Rollcall."]) + "\n"


WEEKLY_SQL = """
SELECT m.course_id, m.person_id, p.display_name,
       count(*) FILTER (WHERE a.status IN ('present', 'late', 'left_early')) AS attended,
       count(*) FILTER (WHERE a.status = 'late') AS late,
       count(*) FILTER (WHERE a.status IS NULL OR a.status = 'absent') AS absent
FROM class_session s
JOIN course_member m ON m.course_id = s.course_id AND m.role = 'student'
JOIN person p ON p.id = m.person_id AND p.pseudonymised_at IS NULL
LEFT JOIN attendance a ON a.session_id = s.id AND a.person_id = m.person_id
WHERE s.state = 'closed' AND s.starts_at >= $1 AND s.starts_at < $2
GROUP BY m.course_id, m.person_id, p.display_name ORDER BY m.course_id, m.person_id
"""


async def weekly_mails(conn, monday: dt.date, timezone: str) -> list[Mail]:
    """Each course with a closed session in the week of ``monday``: its report to each of its faculty."""
    start, end = _local_bounds(monday, timezone)
    week = week_label(monday)
    held = {r["course_id"]: (r["name"], r["sessions"]) for r in await conn.fetch(
        """SELECT s.course_id, c.name, count(*) AS sessions FROM class_session s JOIN course c ON c.id = s.course_id
           WHERE s.state = 'closed' AND s.starts_at >= $1 AND s.starts_at < $2 GROUP BY s.course_id, c.name""",
        start, end)}
    rows: dict[str, list] = {}
    for r in await conn.fetch(WEEKLY_SQL, start, end):
        rows.setdefault(r["course_id"], []).append(r)
    faculty = await conn.fetch(
        """SELECT m.course_id, p.email FROM course_member m JOIN person p ON p.id = m.person_id
           WHERE m.role = 'faculty' AND """ + RECIPIENT_SQL + """
             AND m.course_id = ANY($1::text[]) ORDER BY m.course_id, p.email""", list(held))
    return [Mail("weekly", week, f["course_id"], f["email"],
                 f"Attendance {f['course_id']} week {week}",
                 weekly_body(f["course_id"], held[f["course_id"]][0], week, held[f["course_id"]][1],
                             rows.get(f["course_id"], [])))
            for f in faculty]


async def absence_mails(conn, now: dt.datetime, timezone: str, threshold: int, window_days: int) -> list[Mail]:
    """A notice to each student absent from ``threshold`` or more closed sessions of a course in the window."""
    local = now.astimezone(ZoneInfo(timezone))
    week = week_label(local.date() - dt.timedelta(days=local.weekday()))
    rows = await conn.fetch(
        """SELECT m.course_id, c.name, m.person_id, p.display_name, p.email, count(*) AS absences,
                  array_agg(to_char(s.starts_at AT TIME ZONE $4, 'Dy YYYY-MM-DD HH24:MI') ORDER BY s.starts_at) AS dates
           FROM class_session s JOIN course c ON c.id = s.course_id
           JOIN course_member m ON m.course_id = s.course_id AND m.role = 'student'
           JOIN person p ON p.id = m.person_id AND """ + RECIPIENT_SQL + """
           LEFT JOIN attendance a ON a.session_id = s.id AND a.person_id = m.person_id
           WHERE s.state = 'closed' AND s.starts_at >= $1 AND s.starts_at < $2 AND (a.status IS NULL OR a.status = 'absent')
           GROUP BY m.course_id, c.name, m.person_id, p.display_name, p.email HAVING count(*) >= $3
           ORDER BY m.course_id, m.person_id""",
        now - dt.timedelta(days=window_days), now, threshold, timezone)
    return [Mail("absences", week, f"{r['course_id']}/{r['person_id']}", r["email"],
                 f"Absences in {r['course_id']}: {r['absences']} in the last {window_days} days",
                 f"Dear {r['display_name']},\n\nyou were absent from {r['absences']} session(s) of {r['course_id']} "
                 f"{r['name']} in the last {window_days} days:\n" + "".join(f"  {d}\n" for d in r["dates"])
                 + "\nIf this is wrong, ask the course's faculty to correct it.\n\nSent by Rollcall.\n")
            for r in rows]


def send_mail(smtp, mail: Mail) -> None:
    """One message through the SMTP server (blocking: run it in a worker thread)."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = smtp.from_address, mail.recipient, mail.title
    message.set_content(mail.body)
    server_class = smtplib.SMTP_SSL if smtp.security == "tls" else smtplib.SMTP
    with server_class(smtp.host, smtp.port, timeout=smtp.timeout_s) as server:
        if smtp.security == "starttls":
            server.starttls(context=ssl.create_default_context())
        if smtp.username:
            server.login(smtp.username, smtp.password)
        server.send_message(message)


async def _claim(conn, mail: Mail) -> bool:
    return await conn.fetchval(
        """INSERT INTO report_sent (kind, period, subject, recipient) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING RETURNING true""", mail.kind, mail.period, mail.subject_key, mail.recipient) is True


async def _unclaim(conn, mail: Mail) -> None:
    await conn.execute("DELETE FROM report_sent WHERE kind = $1 AND period = $2 AND subject = $3 AND recipient = $4",
                       mail.kind, mail.period, mail.subject_key, mail.recipient)


async def due_mails(conn, config, now: dt.datetime) -> list[Mail]:
    """Every report due at ``now`` (sent ones included: :func:`send_due` skips those)."""
    r, tz = config.reports, config.site.timezone
    monday = reported_week(now, tz, r.weekly_on, r.weekly_at)
    return (await weekly_mails(conn, monday, tz)
            + await absence_mails(conn, now, tz, r.absence_threshold, r.absence_window_days))


async def send_due(conn, config, now: dt.datetime | None = None) -> dict[str, list[str]]:
    """Send every due report not sent yet; {"sent": [...], "failed": [...]} as "kind period subject -> to"."""
    out: dict[str, list[str]] = {"sent": [], "failed": []}
    for mail in await due_mails(conn, config, now or dt.datetime.now(dt.timezone.utc)):
        if not await _claim(conn, mail):
            continue
        what = f"{mail.kind} {mail.period} {mail.subject_key} -> {mail.recipient}"
        try:
            await asyncio.to_thread(send_mail, config.reports.smtp, mail)
        except (OSError, smtplib.SMTPException) as exc:  # the server away or refusing: tried again next check
            await _unclaim(conn, mail)
            log.warning("report not sent (%s): %s", what, one_line(exc))
            out["failed"].append(f"{what}: {one_line(exc)}")
            continue
        out["sent"].append(what)
    if out["sent"]:
        log.info("reports sent: %s", "; ".join(out["sent"]))
    return out


async def report_loop(config, database_url: str, stop: asyncio.Event) -> None:
    """Send what is due every ``reports.check_every_s`` until ``stop``; a failed check is logged and retried."""
    while not stop.is_set():
        try:
            conn = await asyncpg.connect(database_url, timeout=10)
            try:
                await send_due(conn, config)
            finally:
                await conn.close()
        except DB_ERRORS as exc:
            log.warning("reports paused (%s); retrying in %.0f s", one_line(exc), config.reports.check_every_s)
        except Exception as exc:  # noqa: BLE001 - the schedule must not stop: said, retried at the next check
            log.error("reports failed, unexpected %s", one_line(exc), exc_info=exc)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(config.reports.check_every_s):
                await stop.wait()
