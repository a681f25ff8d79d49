"""`rollcall` commands of the consumers package (added to the root group by infra.cli.main): `attendance`
(writer, session, export), `privacy purge`, `person erase` and `reports send`."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import logging
import signal
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import click

from consumers.exports import export_course, export_session, export_student
from consumers.privacy import erase_person, purge
from consumers.reports import due_mails, send_due
from consumers.sessions import close_session, list_sessions, materialise_timetable, open_session
from consumers.writer import AttendanceWriter
from infra.cli.support import config_of as _config
from infra.cli.support import print_json as _print_json
from infra.cli.types import ROW_ID, FiniteFloat
from infra.foundation import metrics
from infra.foundation.db import describe_unreachable
from infra.foundation.endpoints import resolve
from infra.foundation.dates import FIRST_DATE, LAST_DATE
from infra.foundation.errors import RollcallError

MAX_LIST_SPAN_DAYS = 3660  # `session list` makes the timetable's sessions of its window: ten years at most


def _database_url(config) -> str:
    return resolve(config, need=("database",)).database_url


def _bootstrap(config) -> str:
    return resolve(config, need=("kafka",)).kafka_bootstrap_servers


async def _connect(url: str):
    try:
        return await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise describe_unreachable(url, exc) from None


def _with_connection(config, work):
    """Run ``work(conn)`` on a connection to the configured database; a missing table means unmigrated."""

    async def main():
        conn = await _connect(_database_url(config))
        try:
            return await work(conn)
        except asyncpg.UndefinedTableError as exc:
            raise RollcallError(f"the database is not migrated ({exc}): run `rollcall db migrate`") from None
        finally:
            await conn.close()

    return asyncio.run(main())


def _date(value: str | None, name: str) -> dt.date | None:
    if value is None:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise RollcallError(f"{name} {value!r} is not a date: use YYYY-MM-DD") from None
    if not FIRST_DATE <= day <= LAST_DATE:
        raise RollcallError(f"{name} {value!r} is out of range: use a date from {FIRST_DATE} to {LAST_DATE}")
    return day


def _moment(value: str | None, name: str, tz: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise RollcallError(f"{name} {value!r} is not a date and time: use YYYY-MM-DDTHH:MM (site time zone) "
                            "or with an offset") from None
    if not FIRST_DATE <= moment.date() <= LAST_DATE:
        raise RollcallError(f"{name} {value!r} is out of range: use a time from {FIRST_DATE} to {LAST_DATE}")
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(tz))


def _actor(actor: str | None) -> str:
    return actor or f"cli:{getpass.getuser()}"


_json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def _dry_run_and_json_options(dry_run_help: str):
    """--dry-run (said what it leaves undone by ``dry_run_help``) and --json, with the command's context."""
    def decorate(command):
        return click.option("--dry-run", is_flag=True, help=dry_run_help)(_json_option(click.pass_context(command)))
    return decorate


def _print_result(result, as_json: bool, text_lines) -> None:
    """A command's ``result``: one JSON document with --json, else the lines ``text_lines(result)`` gives."""
    if as_json:
        _print_json(result)
        return
    for line in text_lines(result):
        click.echo(line)


# --- attendance -----------------------------------------------------------------------------------
@click.group()
def attendance() -> None:
    """The attendance writer, class sessions and exports."""


@attendance.command("writer")
@click.option("-v", "--verbose", is_flag=True, help="Log each batch's figures every 10 s.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus metrics on this port (0: any free one; printed).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address the metrics server binds.")
@click.pass_context
def attendance_writer(ctx: click.Context, verbose: bool, metrics_port: int | None, metrics_host: str) -> None:
    """Run the attendance writer (a consumer group member) until SIGTERM or Ctrl-C.

    Start more of them with the same [attendance] group_id to scale out (up to the partition count).
    """
    config = _config(ctx)
    database_url, bootstrap = _database_url(config), _bootstrap(config)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # the writer says in one line what it waits for; aiokafka's own errors repeat it with more noise
    logging.getLogger("aiokafka").setLevel(logging.WARNING if verbose else logging.CRITICAL)

    async def main():
        writer = AttendanceWriter(config, database_url=database_url, bootstrap_servers=bootstrap)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, writer.stop)
        task = asyncio.create_task(writer.run())
        while not task.done():
            await asyncio.wait([task], timeout=10)
            if verbose:
                s = writer.stats
                logging.getLogger("rollcall.writer").info(
                    "messages %d, new events %d, duplicates %d, dead letters %d, attendance changes %d, published %d, retries %d",
                    s.messages, s.events, s.duplicates, s.dead_letters, s.attendance_changes, s.published, s.retries)
        task.result()

    click.echo(f"attendance writer: group {config.attendance.group_id}, kafka {bootstrap}", err=True)
    if metrics_port is not None:

        try:
            bound = metrics.serve(metrics_port, metrics_host)
        except OSError as exc:
            raise RollcallError(f"metrics port {metrics_port} on {metrics_host}: {exc.strerror or exc}; "
                                "choose another --metrics-port") from None
        click.echo(f"metrics on http://{metrics_host}:{bound}/metrics", err=True)
    asyncio.run(main())


@attendance.group("session")
def session_group() -> None:
    """Class sessions: open or close one by hand, list them."""


@session_group.command("open")
@click.option("--course", "course_id", required=True, help="Course id.")
@click.option("--room", "room_id", required=True, help="Room id.")
@click.option("--minutes", type=FiniteFloat(0, 1440, low_open=True),
              help="A one-off session of this length (up to a day), from --starts-at (default now).")
@click.option("--starts-at", help="YYYY-MM-DDTHH:MM (site time zone unless an offset is given).")
@click.option("--ends-at", help="YYYY-MM-DDTHH:MM.")
@click.option("--actor", help="Who opens it (audit log; default cli:<login>).")
@click.pass_context
def session_open(ctx, course_id, room_id, minutes, starts_at, ends_at, actor) -> None:
    """Open a session by hand: the course's timetable session now, or a one-off one (--minutes/--ends-at)."""

    config = _config(ctx)
    tz = config.site.timezone
    if minutes is not None and minutes <= 0:
        raise RollcallError("--minutes must be positive")
    first, last = _moment(starts_at, "--starts-at", tz), _moment(ends_at, "--ends-at", tz)  # before connecting
    info = _with_connection(config, lambda conn: open_session(
        conn, course_id=course_id, room_id=room_id, actor=_actor(actor), starts_at=first, ends_at=last,
        minutes=minutes))
    click.echo(f"session {info['id']} open: {info['course_id']} in {info['room_id']}, "
               f"{info['starts_at']:%Y-%m-%d %H:%M} to {info['ends_at']:%H:%M} UTC")


@session_group.command("close")
@click.argument("session_id", type=ROW_ID)
@click.option("--actor", help="Who closes it (audit log; default cli:<login>).")
@click.pass_context
def session_close(ctx, session_id: int, actor: str | None) -> None:
    """Close a session now: later sightings do not count, statuses become final, absentees are marked."""

    info = _with_connection(_config(ctx), lambda conn: close_session(conn, session_id, actor=_actor(actor)))
    counts = ", ".join(f"{k} {v}" for k, v in info["counts"].items())
    click.echo(f"session {session_id} closed at {info['closed_at']:%Y-%m-%d %H:%M:%S} UTC: {counts}")


@session_group.command("list")
@click.option("--room", "room_id")
@click.option("--course", "course_id")
@click.option("--from", "date_from", help="YYYY-MM-DD")
@click.option("--to", "date_to", help="YYYY-MM-DD")
@_json_option
@click.pass_context
def session_list(ctx, room_id, course_id, date_from, date_to, as_json) -> None:
    """List sessions (timetable sessions appear once the writer or `session open` made them)."""

    config = _config(ctx)
    first, last = _date(date_from, "--from"), _date(date_to, "--to")
    today = dt.date.today()
    if first and last and last < first:
        raise RollcallError("--to is before --from")
    if ((last or today) - (first or today)).days > MAX_LIST_SPAN_DAYS:
        raise RollcallError(f"--from/--to span more than {MAX_LIST_SPAN_DAYS} days: list a shorter range")

    async def work(conn):
        today = dt.date.today()
        await materialise_timetable(conn, first or today - dt.timedelta(days=7), last or today + dt.timedelta(days=7))
        return await list_sessions(conn, room_id=room_id, course_id=course_id, date_from=first, date_to=last)

    _print_result(_with_connection(config, work), as_json, lambda sessions: (
        f"{s['id']:>6}  {s['course_id']:10} {s['room_id']:8} {s['starts_at']:%Y-%m-%d %H:%M}-{s['ends_at']:%H:%M} UTC"
        f"  {s['state']:9} attended {s['attended']}" for s in sessions))


@attendance.group("export")
def export_group() -> None:
    """Export attendance as CSV or XLSX: per session, per course over dates, per student."""


def _export_options(command):
    command = click.option("--format", "fmt", type=click.Choice(["csv", "xlsx"]), default="csv", show_default=True)(command)
    command = click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
                           help="Output file (default: stdout for CSV; required for XLSX).")(command)
    return command


def _write_export(data: bytes, fmt: str, out: Path | None) -> None:
    if out is None:
        if fmt == "xlsx":
            raise RollcallError("XLSX is binary: give --out FILE.xlsx")
        sys.stdout.buffer.write(data)
        return
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise RollcallError(f"cannot write {out}: {exc.strerror}: pick a writable path") from None
    click.echo(f"wrote {out} ({len(data)} bytes)", err=True)


def _export_span(ctx, export, subject: str, date_from: str, date_to: str, fmt: str, out: Path | None) -> None:
    """An export over --from .. --to (a course's register, a student's sessions), written to --out or stdout."""
    config = _config(ctx)
    first, last = _date(date_from, "--from"), _date(date_to, "--to")
    if last < first:
        raise RollcallError("--to is before --from")
    _write_export(_with_connection(config, lambda c: export(c, subject, first, last, fmt, tz=config.site.timezone,
                                                             actor=_actor(None))), fmt, out)


@export_group.command("session")
@click.argument("session_id", type=ROW_ID)
@_export_options
@click.pass_context
def export_session_command(ctx, session_id: int, fmt: str, out: Path | None) -> None:
    """One session's class list."""

    config = _config(ctx)
    _write_export(_with_connection(config, lambda c: export_session(c, session_id, fmt, tz=config.site.timezone,
                                                                    actor=_actor(None))), fmt, out)


@export_group.command("course")
@click.argument("course_id")
@click.option("--from", "date_from", required=True, help="YYYY-MM-DD")
@click.option("--to", "date_to", required=True, help="YYYY-MM-DD")
@_export_options
@click.pass_context
def export_course_command(ctx, course_id: str, date_from: str, date_to: str, fmt: str, out: Path | None) -> None:
    """The course register: students by sessions over the dates."""

    _export_span(ctx, export_course, course_id, date_from, date_to, fmt, out)


@export_group.command("student")
@click.argument("person_id")
@click.option("--from", "date_from", required=True, help="YYYY-MM-DD")
@click.option("--to", "date_to", required=True, help="YYYY-MM-DD")
@_export_options
@click.pass_context
def export_student_command(ctx, person_id: str, date_from: str, date_to: str, fmt: str, out: Path | None) -> None:
    """One student's sessions over the dates."""

    _export_span(ctx, export_student, person_id, date_from, date_to, fmt, out)


# --- privacy --------------------------------------------------------------------------------------
@click.group()
def privacy() -> None:
    """Retention of personal data."""


@privacy.command("purge")
@_dry_run_and_json_options("Count what would be deleted; delete nothing.")
def privacy_purge(ctx, dry_run: bool, as_json: bool) -> None:
    """Delete raw sightings, review crops and enrolments past their retention ([privacy])."""

    config = _config(ctx)
    verb = "would delete" if dry_run else "deleted"
    _print_result(_with_connection(config, lambda conn: purge(conn, config, dry_run=dry_run)), as_json, lambda report: [
        f"{verb}: {report['presence_events']} presence events (before {report['presence_events_before']}), "
        f"{report['review_crops']} review crops, {report['enrolments']} enrolments"])


@click.group()
def person() -> None:
    """People's personal data."""


@person.command("erase")
@click.argument("person_id")
@click.option("--pseudonymise/--delete-attendance", default=None,
              help="Keep attendance under a pseudonym, or delete it (default: [privacy] pseudonymise_attendance_on_erase).")
@click.option("--actor", help="Who erases (audit log; default cli:<login>).")
@click.pass_context
def person_erase(ctx, person_id: str, pseudonymise: bool | None, actor: str | None) -> None:
    """Erase a person's biometric data everywhere (embeddings, photos, crops, raw sightings)."""

    config = _config(ctx)
    keep = config.privacy.pseudonymise_attendance_on_erase if pseudonymise is None else pseudonymise
    report = _with_connection(config, lambda conn: erase_person(conn, person_id, pseudonymise=keep, actor=_actor(actor),
                                                                privacy=config.privacy))
    kept = (f"attendance kept as {report['pseudonym']} ({report['attendance_kept']} sessions)" if keep
            else f"attendance deleted ({report['attendance_deleted']} sessions)")
    click.echo(f"erased {person_id}: {report['enrolments']} enrolments, {report['review_crops']} review crops, "
               f"{report['sightings']} sightings; {kept}")


# --- reports --------------------------------------------------------------------------------------
@click.group()
def reports() -> None:
    """E-mail reports ([reports]): weekly attendance per course to its faculty, absence notices to students."""


@reports.command("send")
@_dry_run_and_json_options("List the reports due (sent ones too); send nothing.")
def reports_send(ctx, dry_run: bool, as_json: bool) -> None:
    """Send the reports due now that were not sent yet (what the writer's schedule does at each check)."""

    config = _config(ctx)
    now = dt.datetime.now(dt.timezone.utc)
    if dry_run:
        due = _with_connection(config, lambda conn: due_mails(conn, config, now))
        result = {"due": [f"{m.kind} {m.period} {m.subject_key} -> {m.recipient}" for m in due]}
    else:
        result = _with_connection(config, lambda conn: send_due(conn, config, now))
    _print_result(result, as_json, lambda result: (
        text for key, lines in result.items() for text in (f"{key}: {len(lines)}", *(f"  {line}" for line in lines))))
    if result.get("failed"):
        raise RollcallError(f"{len(result['failed'])} report(s) not sent: the SMTP server "
                            f"{config.reports.smtp.host}:{config.reports.smtp.port} refused or is away (retried "
                            "at the writer's next check)")


COMMANDS = (attendance, privacy, person, reports)
