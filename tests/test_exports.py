"""Exports on the real PostgreSQL: a closed session's class list, the course register and a student's
sessions, as CSV and XLSX (read back with csv and openpyxl)."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io

import asyncpg
import pytest
from openpyxl import load_workbook

from consumers import store
from consumers.exports import export_course, export_session, export_student
from consumers.sessions import close_session
from infra.foundation.errors import RollcallError
from tests.test_attendance import _row
from tests.test_writer_kit import prepare_database, writer_config


def _csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


def _xlsx(data: bytes) -> list[list]:
    return [list(row) for row in load_workbook(io.BytesIO(data)).active.iter_rows(values_only=True)]


def test_session_course_and_student_exports(fresh_database):
    async def main():
        await prepare_database(fresh_database, writer_config())
        conn = await asyncpg.connect(fresh_database)
        await store.prepare(conn)
        try:
            await store.write_batch(conn, "g", [_row("s1", "a", 0, 90), _row("s2", "b", 30, 90)], {}, {},
                                    store.TimetableCache())
            session_id = await conn.fetchval("SELECT id FROM class_session")
            await close_session(conn, session_id, actor="test")
            rows = _csv(await export_session(conn, session_id, "csv"))
            assert rows[0][:4] == ["person_id", "name", "role", "status"]
            assert {r[0]: r[3] for r in rows[1:]} == {"s1": "present", "s2": "late", "s3": "absent", "s4": "absent"}
            sheet = _xlsx(await export_session(conn, session_id, "xlsx", tz="Europe/Paris"))
            assert ["starts", "2026-11-02 10:00:00"] in [r[:2] for r in sheet], "local time in the sheet"
            assert any(r[:4] == ["s2", "s2", "student", "late"] for r in sheet)

            register = _csv(await export_course(conn, "CS101", dt.date(2026, 11, 1), dt.date(2026, 11, 30), "csv"))
            assert register[0][:2] == ["person_id", "name"] and register[0][2] == "2026-11-02 09:00 A101"
            by_student = {r[0]: r for r in register[1:]}
            assert by_student["s1"][2] == "P" and by_student["s2"][2] == "L" and by_student["s3"][2] == "A"
            assert by_student["s1"][-1] == "1.0" and by_student["s3"][-1] == "0.0"
            assert _xlsx(await export_course(conn, "CS101", dt.date(2026, 11, 1), dt.date(2026, 11, 30), "xlsx"))

            mine = _csv(await export_student(conn, "s2", dt.date(2026, 11, 1), dt.date(2026, 11, 30), "csv"))
            assert len(mine) == 2 and mine[1][5] == "late" and float(mine[1][8]) == 60.0
            with pytest.raises(RollcallError, match="not supported"):
                await export_session(conn, session_id, "pdf")
            with pytest.raises(RollcallError, match="does not exist"):
                await export_student(conn, "nobody", dt.date(2026, 11, 1), dt.date(2026, 11, 30), "csv")
        finally:
            await conn.close()

    asyncio.run(main())
