"""The roster and timetable CSV layouts (pure logic, no database): every kind of bad row is refused with
its reason while the good rows keep their values, a file that is not the layout is refused as a whole,
and an export reads back to the same rows."""

from __future__ import annotations

import datetime as dt

from dashboard import campus_csv

COURSES, PEOPLE, ROOMS = {"CS101", "MA201"}, {"macron", "ardern", "turing"}, {"A101", "B202"}


def _roster(text: str):
    return campus_csv.check_roster(text.encode(), courses=COURSES, people=PEOPLE)


def _timetable(text: str):
    return campus_csv.check_timetable(text.encode(), courses=COURSES, rooms=ROOMS)


def test_roster_rows_are_checked_one_by_one():
    checked = _roster("course_id,person_id,role\n"
                      "CS101,macron,student\n"      # 2 ok
                      "CS101,nobody,student\n"      # 3 unknown person
                      "XX999,macron,\n"             # 4 unknown course
                      "CS101,ardern,teacher\n"      # 5 bad role
                      "CS101,macron,faculty\n"      # 6 duplicate of 2
                      "CS101,ardern\n"              # 7 wrong column count
                      "\n"                          # blank lines are skipped
                      " MA201 , turing ,FACULTY\n")  # 9 ok, trimmed, any case
    assert not checked.problem
    errors = {r.line: r.error for r in checked.invalid}
    assert "unknown person 'nobody'" in errors[3] and "unknown course 'XX999'" in errors[4]
    assert "role 'teacher'" in errors[5] and "duplicate of line 2" in errors[6] and "2 columns, expected 3" in errors[7]
    assert [(r.line, r.values) for r in checked.valid] == [(2, ("CS101", "macron", "student")),
                                                           (9, ("MA201", "turing", "faculty"))]


def test_timetable_rows_are_checked_one_by_one():
    checked = _timetable("course_id,room_id,day,start,end\n"
                         "CS101,A101,mon,09:00,10:30\n"            # 2 ok, weekly
                         "CS101,A101,2026-12-24,14:00:30,15:00\n"  # 3 ok, one-off, seconds
                         "CS101,Z999,tue,09:00,10:00\n"            # 4 unknown room
                         "CS101,A101,someday,09:00,10:00\n"        # 5 bad day
                         "CS101,A101,wed,25:00,26:00\n"            # 6 bad time
                         "CS101,A101,wed,11:00,10:00\n"            # 7 end before start
                         "CS101,A101,mon,09:00,11:00\n"            # 8 duplicate of 2 (same key, other end)
                         "CS101,A101,mon,09:00,11:00,extra\n"      # 9 wrong column count
                         "XX,A101,mon,09:00,10:00\n")              # 10 unknown course
    errors = {r.line: r.error for r in checked.invalid}
    assert set(errors) == {4, 5, 6, 7, 8, 9, 10}
    assert "unknown room" in errors[4] and "neither mon..sun nor a date" in errors[5] and "bad time '25:00'" in errors[6]
    assert "not after start" in errors[7] and "duplicate of line 2" in errors[8] and "6 columns" in errors[9]
    assert "unknown course" in errors[10]
    assert [r.values for r in checked.valid] == [
        ("CS101", "A101", 1, None, dt.time(9), dt.time(10, 30)),
        ("CS101", "A101", None, dt.date(2026, 12, 24), dt.time(14, 0, 30), dt.time(15))]


def test_a_file_that_is_not_the_layout_is_refused_whole():
    assert "header course_id,person_id,role" in _roster("person,course\nmacron,CS101\n").problem
    assert "header" in _roster("").problem
    assert "not UTF-8" in campus_csv.check_roster(b"\xff\xfe\x00c", courses=COURSES, people=PEOPLE).problem
    assert "NUL" in _timetable("course_id,room_id,day,start,end\nCS101,A101,mon,09:00,10:\x0000\n").problem
    assert not _roster("\ufeffCourse_ID,Person_ID,Role\r\nCS101,macron,\r\n").problem  # BOM, CRLF, header case


def test_export_reads_back_to_the_same_rows():
    roster = [{"course_id": "CS101", "person_id": "macron", "role": "student"},
              {"course_id": "MA201", "person_id": "turing", "role": "faculty"}]
    again = _roster(campus_csv.roster_csv(roster))
    assert not again.invalid and [r.values for r in again.valid] == [tuple(r.values()) for r in roster]
    slots = [{"course_id": "CS101", "room_id": "A101", "weekday": 3, "on_date": None,
              "start_time": dt.time(9), "end_time": dt.time(10, 30)},
             {"course_id": "MA201", "room_id": "B202", "weekday": None, "on_date": dt.date(2026, 12, 24),
              "start_time": dt.time(14, 0, 30), "end_time": dt.time(15)}]
    text = campus_csv.timetable_csv(slots)
    assert text.splitlines()[1:] == ["CS101,A101,wed,09:00,10:30", "MA201,B202,2026-12-24,14:00:30,15:00"]
    again = _timetable(text)
    assert [r.values for r in again.valid] == [("CS101", "A101", 3, None, dt.time(9), dt.time(10, 30)),
                                               ("MA201", "B202", None, dt.date(2026, 12, 24), dt.time(14, 0, 30),
                                                dt.time(15))]
