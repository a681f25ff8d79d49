"""Rosters and the timetable (admin): the lists, one entry added or removed, the CSV import (upload, a
preview with a reason for every refused row, nothing written until confirmed; then the valid rows in one
transaction, a re-import updating rows by their natural key) and the CSV export in the same layout.

The preview carries the file back in a hidden field and the confirmation checks it again against the
database as it is then: nothing is kept on the server between the two requests.

Every write drops this process's campus snapshot (dashboard/campus_state.py: faculty scope comes from the
roster and the timetable), so the change shows on the next request here; another dashboard process keeps
its own snapshot and shows it within CAMPUS_CACHE_S (5 s)."""

from __future__ import annotations

import datetime as dt

from starlette.requests import Request
from starlette.responses import Response

from consumers import api as attendance_api
from dashboard import campus_csv, campus_queries as q
from dashboard.guard import RouteTable
from dashboard.services import Problem, services_of
from dashboard.web import ADMIN, body, done, render

ROUTES = RouteTable()
SESSION_DAYS = 7  # sessions made, and shown, this many days ahead when the timetable changes

LAYOUTS = {"roster": campus_csv.ROSTER_COLUMNS, "timetable": campus_csv.TIMETABLE_COLUMNS}


@ROUTES.page("/setup/rosters", ADMIN)
async def rosters_page(request: Request) -> Response:
    """Roster entries (?course= to show one course), one entry added, the CSV import and export."""
    course = request.query_params.get("course") or None
    async with services_of(request).conn() as conn:
        rows, known = await q.roster(conn, course), await q.known(conn)
    return render(request, "setup_rosters.html", {"rows": rows, "course": course or "", "courses": sorted(known["courses"]),
                                                  "columns": ",".join(campus_csv.ROSTER_COLUMNS)})


@ROUTES.api("/setup/rosters", ADMIN, methods=("POST",))
async def add_member(request: Request) -> Response:
    fields = await body(request)
    data = ",".join(campus_csv.ROSTER_COLUMNS) + "\n" + ",".join(
        str(fields.get(c, "")).replace(",", " ").replace("\n", " ") for c in campus_csv.ROSTER_COLUMNS)
    async with services_of(request).conn() as conn:
        checked = campus_csv.check_roster(data.encode(), **_subset(await q.known(conn), "courses", "people"))
        row = _the_row(checked)
        await q.upsert_roster(conn, [row.values])
    services_of(request).forget_campus()
    return done(request, {"course": row.values[0], "person": row.values[1]}, f"{row.values[1]} is in {row.values[0]}")


@ROUTES.api("/setup/rosters/remove", ADMIN, methods=("POST",))
async def remove_member(request: Request) -> Response:
    fields = await body(request)
    course, person = str(fields.get("course_id", "")), str(fields.get("person_id", ""))
    async with services_of(request).conn() as conn:
        if not await q.remove_member(conn, course, person):
            raise Problem(f"{person!r} is not in the roster of {course!r}", 404)
    services_of(request).forget_campus()
    return done(request, {"course": course, "person": person}, f"{person} removed from {course}")


@ROUTES.page("/setup/timetable", ADMIN)
async def timetable_page(request: Request) -> Response:
    """Timetable entries, one added or removed, the CSV import and export, and the sessions of the coming days."""
    services = services_of(request)
    async with services.conn() as conn:
        slots, known = await q.timetable(conn), await q.known(conn)
        sessions = await q.upcoming_sessions(conn, SESSION_DAYS, services.config.site.timezone)
    for slot in slots:
        slot["day"] = campus_csv.day_text(slot["weekday"], slot["on_date"])
        slot["start"], slot["end"] = campus_csv.time_text(slot["start_time"]), campus_csv.time_text(slot["end_time"])
    return render(request, "setup_timetable.html", {
        "slots": slots, "sessions": sessions, "courses": sorted(known["courses"]), "rooms": sorted(known["rooms"]),
        "columns": ",".join(campus_csv.TIMETABLE_COLUMNS), "days": SESSION_DAYS,
        "timezone": services.config.site.timezone})


@ROUTES.api("/setup/timetable", ADMIN, methods=("POST",))
async def add_slot(request: Request) -> Response:
    fields = await body(request)
    data = ",".join(campus_csv.TIMETABLE_COLUMNS) + "\n" + ",".join(
        str(fields.get(c, "")).replace(",", " ").replace("\n", " ") for c in campus_csv.TIMETABLE_COLUMNS)
    services = services_of(request)
    async with services.conn() as conn:
        row = _the_row(campus_csv.check_timetable(data.encode(), **_subset(await q.known(conn), "courses", "rooms")))
        await q.upsert_slots(conn, [row.values], services.config.site.timezone)
        await _sessions_follow(conn)
    services.forget_campus()
    return done(request, {"course": row.values[0]}, f"timetable entry of {row.values[0]} saved")


@ROUTES.api("/setup/timetable/{slot_id:int}/remove", ADMIN, methods=("POST",))
async def remove_slot(request: Request) -> Response:
    slot_id = request.path_params["slot_id"]
    async with services_of(request).conn() as conn:
        if not await q.remove_slot(conn, slot_id):
            raise Problem(f"no timetable entry {slot_id}", 404)
        await _sessions_follow(conn)
    services_of(request).forget_campus()
    return done(request, {"slot": slot_id}, f"timetable entry {slot_id} removed")


@ROUTES.api("/setup/{kind:str}/import", ADMIN, methods=("POST",))
async def import_preview(request: Request) -> Response:
    """Upload a CSV (field ``file``): the preview, every row with its values or why it is refused."""
    kind = _kind(request)
    upload = (request.state.form or {}).get("file")
    if upload is None or not hasattr(upload, "read"):
        raise Problem(f"choose a CSV file to import (field 'file', the {kind} layout {','.join(LAYOUTS[kind])})")
    limit = services_of(request).config.dashboard.max_body_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise Problem(f"the file is over {limit} bytes: split it and import the parts one after the other", 413)
    checked = await _check(request, kind, data)
    if checked.problem:  # the whole file refused: no header of the layout, not text...
        raise Problem(checked.problem)
    return render(request, "setup_preview.html", {
        "kind": kind, "checked": checked, "data": data.decode("utf-8-sig"), "columns": LAYOUTS[kind],
        "back": "/setup/rosters" if kind == "roster" else "/setup/timetable"})


@ROUTES.api("/setup/{kind:str}/import/confirm", ADMIN, methods=("POST",))
async def import_confirm(request: Request) -> Response:
    """Write the valid rows of the previewed file (checked again now) in one transaction."""
    kind = _kind(request)
    checked = await _check(request, kind, str((await body(request)).get("data", "")).encode())
    rows = [r.values for r in checked.valid]
    if not rows:
        raise Problem(f"no valid row to import: {checked.problem or 'every row was refused'}")
    services = services_of(request)
    async with services.conn() as conn:
        if kind == "roster":
            await q.upsert_roster(conn, rows)
        else:
            await q.upsert_slots(conn, rows, services.config.site.timezone)
            await _sessions_follow(conn)
    services.forget_campus()
    message = f"{len(rows)} {kind} row(s) imported" + (f", {len(checked.invalid)} refused" if checked.invalid else "")
    return done(request, {"imported": len(rows), "refused": len(checked.invalid)}, message)


@ROUTES.page("/setup/{kind:str}.csv", ADMIN)
async def export_csv(request: Request) -> Response:
    """The roster or the timetable as CSV, in the layout the import reads."""
    kind = _kind(request)
    async with services_of(request).conn() as conn:
        text = (campus_csv.roster_csv(await q.roster(conn)) if kind == "roster"
                else campus_csv.timetable_csv(await q.timetable(conn)))
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{kind}.csv"'})


def _kind(request: Request) -> str:
    kind = request.path_params["kind"]
    if kind not in LAYOUTS:
        raise Problem(f"no CSV import or export of {kind!r}: roster or timetable", 404)
    return kind


async def _check(request: Request, kind: str, data: bytes) -> campus_csv.Checked:
    async with services_of(request).conn() as conn:
        known = await q.known(conn)
    if kind == "roster":
        return campus_csv.check_roster(data, **_subset(known, "courses", "people"))
    return campus_csv.check_timetable(data, **_subset(known, "courses", "rooms"))


def _subset(known: dict, *names: str) -> dict:
    return {name: known[name] for name in names}


def _the_row(checked: campus_csv.Checked) -> campus_csv.Row:
    """The one row of a form turned into the CSV layout, or a 400 with why it is refused."""
    if checked.problem or not checked.rows:
        raise Problem(checked.problem or "fill in every field")
    if checked.rows[0].error:
        raise Problem(checked.rows[0].error)
    return checked.rows[0]


async def _sessions_follow(conn) -> None:
    """The sessions of the coming days follow the timetable at once (writers re-read it on their own)."""
    today = dt.datetime.now(dt.timezone.utc).date()
    await attendance_api.refresh_timetable(conn, today - dt.timedelta(days=1), today + dt.timedelta(days=SESSION_DAYS))
