"""An account's e-mail address after the account is made (the dashboard on its own database of the
session's PostgreSQL, over HTTP): an admin edits anyone's, a user their own; a bad address is a 400 with
the reason and nothing written; and the reports (consumers/reports.py) go to nobody whose accounts are all
disabled, while a person without an account still gets theirs."""

from __future__ import annotations

import datetime as dt
import html
from zoneinfo import ZoneInfo

import pytest

from consumers.reports import absence_mails, weekly_mails
from tests import dashboard_kit as kit

EMAIL_OF = "SELECT email FROM person WHERE id = $1"


@pytest.fixture(scope="module")
def served(stack):
    with kit.served_example(stack, "test_email", secret_key="e" * 48) as server:
        yield server


def _email(served, person_id: str):
    return kit.db(served, EMAIL_OF, person_id)[0][0]


def test_an_admin_edits_the_email_of_an_account_and_removes_it(served):
    admin, token = kit.login_with_token(served, "admin")
    answer = admin.post("/api/accounts/turing/email", json={"email": " alan@example.org "})
    assert answer.status_code == 200 and answer.json()["person_id"] == "prof-turing", answer.text
    assert _email(served, "prof-turing") == "alan@example.org"
    assert 'value="alan@example.org"' in admin.get("/accounts").text
    # the page's form: back to the list with the message
    page = admin.post("/api/accounts/turing/email", data={"csrf_token": token, "next": "/accounts",
                                                          "email": "turing@example.org"}, follow_redirects=True)
    assert page.status_code == 200 and "e-mail of turing set to turing@example.org" in page.text
    assert _email(served, "prof-turing") == "turing@example.org"
    assert admin.post("/api/accounts/ardern/email", json={"email": "ardern@example.org"}).status_code == 200
    assert admin.post("/api/accounts/ardern/email", json={"email": ""}).json()["message"] == "e-mail of ardern removed"
    assert _email(served, "ardern") is None
    audit = kit.db(served, "SELECT actor, detail->>'email' FROM audit_log WHERE action = 'user.email' "
                           "AND subject = 'ardern' ORDER BY id")
    assert [tuple(r) for r in audit] == [("admin", "ardern@example.org"), ("admin", None)]


@pytest.mark.parametrize("username, email, status, reason", [
    ("turing", "not an address", 400, "e-mail 'not an address' is not an address"),
    ("turing", "a@b@c", 400, "is not an address"),
    ("turing", "x" * 250 + "@example.org", 400, "is not an address"),
    ("admin", "root@example.org", 400, "belongs to no person"),
    ("ghost", "ghost@example.org", 404, "no account 'ghost'"),
])
def test_a_bad_email_edit_is_4xx_with_the_reason_and_writes_nothing(served, username, email, status, reason):
    admin, _ = kit.login_with_token(served, "admin")
    before = _email(served, "prof-turing")
    answer = admin.post(f"/api/accounts/{username}/email", json={"email": email})
    assert answer.status_code == status and reason in html.unescape(answer.json()["error"]), answer.text
    assert _email(served, "prof-turing") == before


def test_users_edit_only_their_own_email(served):
    student, token = kit.login_with_token(served, "macron")
    assert student.post("/api/accounts/ardern/email", json={"email": "x@example.org"}).status_code == 403
    assert student.post("/api/me/email", json={"email": "bad"}).status_code == 400
    answer = student.post("/api/me/email", data={"csrf_token": token, "next": "/account",
                                                 "email": "emmanuel@example.org"}, follow_redirects=True)
    assert answer.status_code == 200 and "e-mail of macron set to emmanuel@example.org" in answer.text
    assert 'value="emmanuel@example.org"' in student.get("/account").text
    assert _email(served, "macron") == "emmanuel@example.org" and _email(served, "ardern") is None
    admin, _ = kit.login_with_token(served, "admin")  # an admin without a person: no e-mail form, a 400
    assert 'id="email-change"' not in admin.get("/account").text
    assert admin.post("/api/me/email", json={"email": "root@example.org"}).status_code == 400


def _recipients(served, monday: dt.date) -> tuple[list[str], list[str]]:
    """Who the weekly reports of the week of ``monday`` and the absence notices (one absence) go to now."""
    timezone = served.config.site.timezone

    async def work(conn):
        weekly = await weekly_mails(conn, monday, timezone)
        notices = await absence_mails(conn, dt.datetime.now(dt.timezone.utc), timezone, 1, 28)
        return sorted(m.recipient for m in weekly), sorted(m.recipient for m in notices)
    return kit.db_call(served, work)


def test_disabled_accounts_get_no_reports_and_people_without_an_account_still_do(served):
    yesterday = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    day = yesterday.astimezone(ZoneInfo(served.config.site.timezone)).date()
    monday = day - dt.timedelta(days=day.weekday())  # the week of the session, as the weekly report counts it
    kit.db(served, """INSERT INTO class_session (course_id, room_id, starts_at, ends_at, state, closed_at)
                      VALUES ('CS101', 'A101', $1, $2, 'closed', $2)""", yesterday, yesterday + dt.timedelta(hours=1))
    admin, _ = kit.login_with_token(served, "admin")
    for username, email in (("turing", "turing@example.org"), ("macron", "macron@example.org")):
        assert admin.post(f"/api/accounts/{username}/email", json={"email": email}).status_code == 200
    kit.db(served, "UPDATE person SET email = 'obama@example.org' WHERE id = 'obama'")  # no account
    assert not kit.db(served, "SELECT 1 FROM dashboard_user WHERE person_id = 'obama'")
    everyone = (["turing@example.org"], ["macron@example.org", "obama@example.org"])
    assert _recipients(served, monday) == everyone
    for username in ("turing", "macron"):
        assert admin.post(f"/api/accounts/{username}/disable").status_code == 200
    assert _recipients(served, monday) == ([], ["obama@example.org"])
    for username in ("turing", "macron"):
        assert admin.post(f"/api/accounts/{username}/enable").status_code == 200
    assert _recipients(served, monday) == everyone
