"""The e-mail reports' pure parts (consumers/reports.py): which week is due at a given moment in the site's
time zone, and the weekly report's text. Sending through a real SMTP server: tests/test_dashboard_setup.py."""

from __future__ import annotations

import datetime as dt

import pytest

from consumers.reports import reported_week, week_label, weekly_body

UTC = dt.timezone.utc


@pytest.mark.parametrize("now, on, at, monday", [
    # Monday 2026-12-07 07:00 in Paris is 06:00 UTC: before it, last week's report (of 11-23) is the latest due
    (dt.datetime(2026, 12, 7, 5, 59, tzinfo=UTC), "mon", dt.time(7, 0), dt.date(2026, 11, 23)),
    (dt.datetime(2026, 12, 7, 6, 0, tzinfo=UTC), "mon", dt.time(7, 0), dt.date(2026, 11, 30)),
    (dt.datetime(2026, 12, 13, 22, 0, tzinfo=UTC), "fri", dt.time(18, 0), dt.date(2026, 11, 30)),
    # Sunday 23:30 UTC is already Monday in Paris: a new week
    (dt.datetime(2026, 12, 13, 23, 30, tzinfo=UTC), "mon", dt.time(0, 0), dt.date(2026, 12, 7)),
])
def test_the_week_reported_is_the_one_before_the_latest_sending_time(now, on, at, monday):
    assert reported_week(now, "Europe/Paris", on, at) == monday


def test_week_labels_are_iso_weeks():
    assert week_label(dt.date(2026, 11, 30)) == "2026-W49"
    assert week_label(dt.date(2026, 12, 28)) == "2026-W53" and week_label(dt.date(2027, 1, 4)) == "2027-W01"


def test_weekly_body_has_a_line_per_student_with_the_rate():
    rows = [{"person_id": "macron", "display_name": "Emmanuel Macron", "attended": 3, "late": 1, "absent": 1},
            {"person_id": "ardern", "display_name": "ardern", "attended": 0, "late": 0, "absent": 4}]
    body = weekly_body("PH110", "Physics", "2026-W49", 4, rows).splitlines()
    assert body[0] == "Attendance of PH110 Physics in week 2026-W49: 4 session(s) held."
    assert body[3].split() == ["macron", "(Emmanuel", "Macron)", "3", "1", "1", "75%"]
    assert body[4].split() == ["ardern", "0", "0", "4", "0%"]
