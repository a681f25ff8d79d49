"""The dates Rollcall accepts from a person (command-line options, dashboard filters, export spans).

Attendance is about these years, and the day after each still exists (9999-12-31 has no next day: a
window ending "the day after" would overflow). One definition, used by the command line, the dashboard
and the exports.
"""

from __future__ import annotations

import datetime as dt

FIRST_DATE, LAST_DATE = dt.date(1900, 1, 1), dt.date(2999, 12, 31)
