"""The attendance side's interface for the other services: the operations on attendance data the
dashboard performs for its users (the layer contract in pyproject.toml allows ``dashboard ->
consumers.api`` and nothing else of consumers/).

- sessions: :func:`open_session`, :func:`close_session`, :func:`resolve_unconfirmed`, :func:`refresh_timetable`
  (after the timetable changed);
- exports: :func:`export_session`, :func:`export_course`, :func:`export_student` (CSV or XLSX);
- privacy: :func:`erase_person`, :func:`record_audit`, :func:`audit_login`.
"""

from consumers.exports import export_course, export_session, export_student
from consumers.privacy import audit_login, erase_person, record_audit
from consumers.sessions import close_session, open_session, resolve_unconfirmed
from consumers.timetable import refresh_timetable

__all__ = ["audit_login", "close_session", "erase_person", "export_course", "export_session", "export_student",
           "open_session", "record_audit", "refresh_timetable", "resolve_unconfirmed"]
