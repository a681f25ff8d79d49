"""Campus set-up in a real headless Chromium (Debian's chromium, Python playwright) against the dashboard on
its own database of the session's PostgreSQL: an admin adds and edits rooms and courses, imports a roster
CSV whose bad row the preview refuses (the good rows written only after confirming), imports a timetable
CSV and sees its sessions, exports both and imports the exports again without a duplicate; and
`rollcall db load-config --dry-run` shows a difference and writes nothing, and the import after it keeps
what the admin added in the dashboard. An admin creates a faculty account (its one-time password shown once)
that logs in and sees the course made in the dashboard, changes its own password, and is disabled; and
enrols a ZIP of a folder per person, watching the progress and a reason for each refused photo. Cameras: an
admin adds one whose RTSP stream the session's server serves on loopback, tests its connection and sees its
snapshot, disables and enables it; links a door to it as the room camera, draws the door's entry zone on its
snapshot, and a group member's catalogue watcher hands the new zone to its running room stage; accepts the
transit window suggested from single arrivals. The tests run in order on one database. Screenshots go to
var/artifacts/screenshots/ with the others."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import html
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest

from consumers.reports import report_loop
from infra.devstack import dashboard as testing
from infra.devstack import stack as embedded
from infra.devstack.ports import choose_free_port
from infra.foundation.config import EXAMPLE_CONFIG, ReportsConfig, SmtpConfig, load_config
from infra.foundation.paths import PROJECT_ROOT
from infra.scenario.mounts import render_cached
from processor.group.catalogue import CatalogueWatcher
from processor.stages.room import RoomStage
from tests import dashboard_kit as kit
from tests import webcam_kit
from processor.model_catalogue import PHOTOS_DIR as PHOTOS
from tests.test_gallery_enroll import two_portraits


@pytest.fixture(scope="module")
def served(stack):
    config = load_config(EXAMPLE_CONFIG, environ={})
    with kit.served_dashboard(stack, config, "test_setup", secret_key="s" * 48) as server:
        server.config = config
        yield server


@pytest.fixture(scope="module")
def admin_page(served):  # after the dashboard: playwright's sync API keeps an event loop in this thread
    with kit.chromium() as chromium:
        yield kit.open_logged_in(kit.new_page(chromium, accept_downloads=True), served, "admin", "/setup/rooms",
                                 ready="#rooms")


def _flash(page) -> str:
    page.wait_for_selector(".flash")
    return page.locator(".flash").inner_text()


def _upload(page, form: str, path: Path) -> None:
    page.locator(f"{form} input[type=file]").set_input_files(str(path))
    page.locator(f"{form} button").click()
    page.wait_for_load_state()


def test_only_admins_set_up_the_campus(served):
    faculty, token = kit.login_with_token(served, "turing")
    for path in ("/setup/rooms", "/setup/courses", "/setup/rosters", "/setup/timetable", "/setup/roster.csv"):
        assert faculty.get(path).status_code == 403, path
    response = faculty.post("/setup/rooms", data={"csrf_token": token, "id": "Z1"})
    assert response.status_code == 403
    assert kit.db(served, "SELECT id FROM room WHERE id = 'Z1'") == []


def test_admin_adds_and_edits_rooms_and_courses(admin_page, served):
    page = kit.open_page(admin_page, served, "/setup/rooms")
    form = page.locator("#new-room")
    kit.fill_form(form, {"id": "B202", "name": "Seminar room", "capacity": "25"})
    form.locator("button").click()
    assert "room B202 added" in _flash(page)
    row = page.locator("tr[data-room=B202]")
    row.locator("input[name=name]").fill("Seminar room B202")
    row.locator("button").click()
    assert "room B202 saved" in _flash(page)
    assert [tuple(r) for r in kit.db(served, "SELECT name, capacity FROM room WHERE id = 'B202'")] == [
        ("Seminar room B202", 25)]
    # a bad capacity is a 400 with the reason, nothing written
    row = page.locator("tr[data-room=B202]")
    row.locator("input[name=capacity]").fill("lots")
    with page.expect_response(lambda r: r.url.endswith("/setup/rooms/B202")) as answer:
        row.locator("button").click()
    assert answer.value.status == 400 and "capacity 'lots'" in page.locator("main").inner_text()
    page.goto(served.url + "/setup/rooms")
    kit.shot(page, "setup-rooms")

    page.goto(served.url + "/setup/courses")
    form = page.locator("#new-course")
    kit.fill_form(form, {"id": "PH110", "name": "Physics"})
    form.locator("button").click()
    assert "course PH110 added" in _flash(page)
    page.locator("tr[data-course=PH110] input[name=late_after_min]").fill("5")
    page.locator("tr[data-course=PH110] button").click()
    assert "course PH110 saved" in _flash(page)
    assert kit.db(served, "SELECT late_after_min FROM course WHERE id = 'PH110'")[0][0] == 5
    kit.shot(page, "setup-courses")


def test_roster_csv_preview_refuses_the_bad_row_and_confirm_writes_the_good_ones(admin_page, served, tmp_path):
    page = admin_page
    members = "SELECT course_id, person_id, role FROM course_member WHERE course_id = 'PH110' ORDER BY person_id"
    csv_file = tmp_path / "roster.csv"
    csv_file.write_text("course_id,person_id,role\nPH110,macron,student\nPH110,nobody,student\n"
                        "PH110,prof-turing,faculty\nPH110,macron,student\n", encoding="utf-8")
    kit.open_page(page, served, "/setup/rosters")
    _upload(page, "#roster-import", csv_file)
    assert "2 row(s) will be imported, 2 refused" in page.locator("#preview-summary").inner_text()
    assert "unknown person 'nobody'" in page.locator("tr[data-line='3']").inner_text()
    assert "duplicate of line 2" in page.locator("tr[data-line='5']").inner_text()
    assert page.locator("tr.valid").count() == 2
    assert kit.db(served, members) == []  # nothing written by the preview
    kit.shot(page, "setup-preview")
    page.locator("#confirm-import button").click()
    assert "2 roster row(s) imported, 2 refused" in _flash(page)
    assert [tuple(r) for r in kit.db(served, members)] == [("PH110", "macron", "student"),
                                                          ("PH110", "prof-turing", "faculty")]
    assert page.locator("tr[data-member='PH110/macron']").count() == 1
    kit.shot(page, "setup-rosters")
    # a file that is not the layout: a 400 with the reason, never a 500
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"name;course\n\xff\xfe")
    with page.expect_response(lambda r: r.url.endswith("/setup/roster/import")) as answer:
        _upload(page, "#roster-import", bad)
    assert answer.value.status == 400 and "not UTF-8" in page.locator("main").inner_text()


def test_timetable_csv_import_shows_its_sessions(admin_page, served, tmp_path):
    day = dt.datetime.now(ZoneInfo(served.config.site.timezone)).date() + dt.timedelta(days=2)
    csv_file = tmp_path / "timetable.csv"
    csv_file.write_text("course_id,room_id,day,start,end\n"
                        f"PH110,B202,{day.isoformat()},10:00,11:30\n"
                        "PH110,B202,fri,16:00,17:00\n"
                        "PH110,B202,mon,9:75,10:00\n", encoding="utf-8")
    page = kit.open_page(admin_page, served, "/setup/timetable")
    _upload(page, "#timetable-import", csv_file)
    assert "bad time '9:75'" in page.locator("tr[data-line='4']").inner_text()
    assert kit.db(served, "SELECT id FROM timetable_slot WHERE course_id = 'PH110'") == []
    page.locator("#confirm-import button").click()
    assert "2 timetable row(s) imported, 1 refused" in _flash(page)
    slots = page.locator("#slots tr", has_text="PH110")
    assert slots.count() == 2
    # the one-off entry's session is on the page at once, at its local time
    upcoming = page.locator("#upcoming tr", has_text="PH110")
    assert f"{day.isoformat()} 10:00" in upcoming.filter(has_text=day.isoformat()).inner_text()
    kit.shot(page, "setup-timetable")


@pytest.mark.parametrize("kind, page_path, table", [("timetable", "/setup/timetable", "timetable_slot"),
                                                    ("roster", "/setup/rosters", "course_member")])
def test_export_then_import_again_gives_no_duplicates(admin_page, served, tmp_path, kind, page_path, table):
    page = kit.open_page(admin_page, served, page_path)
    with page.expect_download() as download_info:
        page.click(f"#{kind}-export")
    exported = Path(download_info.value.path()).read_text(encoding="utf-8")
    before = kit.db(served, f"SELECT count(*) FROM {table}")[0][0]
    sessions = kit.db(served, "SELECT count(*) FROM class_session")[0][0]
    assert len(exported.splitlines()) == before + 1  # header + every row
    again = tmp_path / f"{kind}.csv"
    again.write_text(exported, encoding="utf-8")
    _upload(page, f"#{kind}-import", again)
    assert f"{before} row(s) will be imported, 0 refused" in page.locator("#preview-summary").inner_text()
    page.locator("#confirm-import button").click()
    assert f"{before} {kind} row(s) imported" in _flash(page)
    assert kit.db(served, f"SELECT count(*) FROM {table}")[0][0] == before
    assert kit.db(served, "SELECT count(*) FROM class_session")[0][0] == sessions


def test_load_config_dry_run_shows_a_difference_and_writes_nothing(served, tmp_path):
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8").replace('name = "Lecture room A101"', 'name = "Main lecture hall"')
    config_file = tmp_path / "rollcall.toml"
    config_file.write_text(text, encoding="utf-8")
    env = {**os.environ, "DATABASE_URL": served.database_url, "PYTHONPATH": str(PROJECT_ROOT)}

    def load_config_cli(*flags: str) -> str:
        result = subprocess.run([sys.executable, "-m", "infra.cli.main", "--config", str(config_file), "db",
                                 "load-config", *flags], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def room_names():
        return {r["id"]: r["name"] for r in kit.db(served, "SELECT id, name FROM room")}

    before = room_names()
    out = load_config_cli("--dry-run")
    assert "~ room A101" in out and "dry run, nothing written" in out
    # what the admin added in the dashboard is listed as kept, not removed
    assert "= 1 rooms only in the database, kept" in out and "B202" in out
    assert "timetable entries only in the database" in out
    assert room_names() == before
    out = load_config_cli()
    assert "imported: rooms: +0 ~1 -0" in out
    assert room_names() == {**before, "A101": "Main lecture hall"}
    assert kit.db(served, "SELECT count(*) FROM timetable_slot WHERE course_id = 'PH110'")[0][0] == 2
    assert "dry run" in load_config_cli("--dry-run") and "~ room" not in load_config_cli("--dry-run")
    # the dashboard reads the tables: the renamed room shows at once
    admin = kit.login(served, "admin")
    assert "Main lecture hall" in admin.get("/setup/rooms").text


def test_accounts_are_for_admins_and_bad_requests_are_refused_with_the_reason(served):
    faculty = kit.login(served, "turing")
    assert faculty.get("/accounts").status_code == 403
    assert faculty.post("/api/accounts", json={"username": "x1", "role": "admin"}).status_code == 403
    admin = kit.login(served, "admin")
    refusals = [({"username": "bad name", "role": "faculty"}, "username 'bad name' is not valid"),
                ({"username": "x2", "role": "root"}, "role 'root' is not one of"),
                ({"username": "x3", "role": "faculty"}, "needs the person it belongs to"),
                ({"username": "x4", "role": "faculty", "person_id": "nobody-yet"}, "give a name to add them"),
                ({"username": "x5", "role": "faculty", "person_id": "p5", "name": "P", "courses": ["NO101"]},
                 "no course 'NO101'"),
                ({"username": "turing", "role": "faculty", "person_id": "prof-turing"}, "exists already")]
    for fields, reason in refusals:
        response = admin.post("/api/accounts", json=fields)
        assert response.status_code == 400 and reason in response.json()["error"], (fields, response.text)
    assert kit.db(served, "SELECT person_id FROM course_member WHERE person_id = 'p5'") == []  # nothing half-made
    assert admin.post("/api/accounts/admin/reset").status_code == 409  # your own: the My password page
    assert admin.post("/api/accounts/admin/disable").status_code == 409
    assert admin.post("/api/accounts/ghost/reset").status_code == 404
    # a student account through the API: its one-time password logs in; a reset replaces it and ends its sessions
    made = admin.post("/api/accounts", json={"username": "jacinda", "role": "student", "person_id": "ardern"})
    assert made.status_code == 201 and made.headers["cache-control"] == "no-store"
    student = testing.login(served.url, "jacinda", made.json()["password"])
    assert student.get("/api/me").json()["person_id"] == "ardern"
    reset = admin.post("/api/accounts/jacinda/reset")
    assert reset.status_code == 200 and "1 session(s) ended" in reset.json()["message"]
    assert student.get("/api/me").status_code == 401
    with pytest.raises(AssertionError, match="400"):
        testing.login(served.url, "jacinda", made.json()["password"])
    assert testing.login(served.url, "jacinda", reset.json()["password"]).get("/api/me").status_code == 200


def test_admin_creates_a_faculty_account_that_logs_in_and_sees_its_course(admin_page, served):
    page = kit.open_page(admin_page, served, "/accounts")
    form = page.locator("#new-account")
    kit.fill_form(form, {"username": "curie", "role": "faculty", "person_id": "prof-curie", "name": "Marie Curie",
                         "email": "curie@example.org", "courses": ["PH110"]})
    form.locator("button").click()
    password = page.locator("#one-time-password").inner_text().strip()
    assert len(password) >= 10 and "account curie (faculty) added" in page.locator("#one-time").inner_text()
    assert [tuple(r) for r in kit.db(served, "SELECT course_id, role FROM course_member WHERE person_id = 'prof-curie'")
            ] == [("PH110", "faculty")]
    assert kit.db(served, "SELECT password_hash FROM dashboard_user WHERE username = 'curie'")[0][0].startswith("$argon2")
    kit.shot(page, "accounts")
    page.goto(served.url + "/accounts")  # shown once: a reload of the list does not show it again
    assert page.locator("#one-time").count() == 0 and password not in page.content()

    faculty = kit.open_logged_in(page.context.browser.new_context(viewport={"width": 1400, "height": 900}).new_page(),
                                 served, "curie", "/attendance", ready="select[name=course]", password=password)
    # the course made in the dashboard (not in the TOML file) is theirs; another course is not
    options = faculty.locator("#open-session select[name=course] option").all_inner_texts()
    assert options == ["PH110"]  # not CS101, which the TOML file gives turing
    assert faculty.locator("#sessions tr", has_text="PH110").count() >= 1  # its timetable's sessions
    assert faculty.locator("#open-session select[name=room] option").all_inner_texts() == ["B202"]
    assert faculty.goto(served.url + "/setup/rooms").status == 403

    faculty.goto(served.url + "/account")  # their own password
    faculty.fill("input[name=current_password]", password)
    faculty.fill("input[name=new_password]", "curie-radium-1898")
    faculty.click("#password-change button")
    assert "password changed" in _flash(faculty)
    kit.shot(faculty, "account-password")

    page.goto(served.url + "/accounts")  # the admin disables the account: the faculty's session ends at once
    page.locator("tr[data-account=curie] form.toggle button").click()
    assert "account curie disabled" in _flash(page)
    faculty.goto(served.url + "/attendance")
    assert "/login" in faculty.url
    faculty.context.close()


def _class_zip(path: Path) -> Path:
    """A ZIP as a registrar would make it: one enclosing folder, a folder per person (by id, or by name),
    good photos and the kinds enrolment refuses, and an entry that tries to climb out."""
    sharp = cv2.imread(str(PHOTOS / "obama_congress.jpg"))
    made = {"blank.png": np.full((400, 300, 3), 200, np.uint8),
            "with_biden.jpg": two_portraits("obama_oval.jpg", "biden.jpg"),
            "tiny.jpg": cv2.resize(sharp, None, fx=0.08, fy=0.08, interpolation=cv2.INTER_AREA),
            "blurred.jpg": cv2.GaussianBlur(sharp, (0, 0), 10)}
    with zipfile.ZipFile(path, "w") as archive:
        for folder, photos in {"obama": ["obama_oval.jpg", "obama_senate.jpg"], "macron": ["macron_2014.jpg"],
                               "Jacinda Ardern": ["ardern_2018.jpg"]}.items():
            for photo in photos:
                archive.write(PHOTOS / photo, f"class-2026/{folder}/{photo}")
        archive.writestr("class-2026/obama/name.txt", "Barack Obama\n")
        for name, image in made.items():
            archive.writestr(f"class-2026/{'macron' if name == 'blank.png' else 'obama'}/{name}",
                             cv2.imencode(Path(name).suffix, image)[1].tobytes())
        archive.writestr("../escape.jpg", (PHOTOS / "sunak.jpg").read_bytes())
    return path


def test_bulk_enrolment_of_a_zip_shows_progress_and_a_reason_per_photo(admin_page, served, tmp_path):
    page = kit.open_page(admin_page, served, "/people")
    form = page.locator("#zip-import")
    form.locator("input[name=zip]").set_input_files(str(_class_zip(tmp_path / "class.zip")))
    form.locator("input[name=consent]").check()
    form.locator("button").click()
    page.wait_for_selector("#zip-summary.summary", timeout=120_000)
    assert "4 photo(s) enrolled of 3 person folder(s); 5 refused" in page.locator("#zip-summary").inner_text()
    bar = page.locator("#zip-progress progress")
    assert bar.evaluate("b => [b.value, b.max]") == [8, 8]  # every photo ticked
    results = {row.get_attribute("data-photo"): (row.get_attribute("class"), row.get_attribute("data-code"),
                                                 row.inner_text()) for row in page.locator("#zip-results tbody tr").all()}
    assert {k for k, v in results.items() if v[0] == "ok"} == {
        "obama/obama_oval.jpg", "obama/obama_senate.jpg", "macron/macron_2014.jpg", "Jacinda Ardern/ardern_2018.jpg"}
    assert results["macron/blank.png"][1] == "no_face" and "no face found" in results["macron/blank.png"][2]
    assert results["obama/with_biden.jpg"][1] == "several_faces" and "2 faces found" in results["obama/with_biden.jpg"][2]
    assert results["obama/tiny.jpg"][1] == "too_small" and "too small" in results["obama/tiny.jpg"][2]
    assert results["obama/blurred.jpg"][1] == "too_blurry" and "too blurry" in results["obama/blurred.jpg"][2]
    assert results["../escape.jpg"][1] == "unsafe_path" and len(results) == 9
    # the folder named by a name became a person with an id made from it; embeddings stored, photos not
    rows = kit.db(served, """SELECT e.person_id, p.display_name, e.source, e.photo IS NULL AS no_photo
                             FROM face_enrolment e JOIN person p ON p.id = e.person_id ORDER BY 1""")
    assert sorted({(r[0], r[1]) for r in rows}) == [("jacinda-ardern", "Jacinda Ardern"), ("macron", "macron"),
                                                    ("obama", "Barack Obama")]
    assert len(rows) == 4 and all(r["source"] == "import" and r["no_photo"] for r in rows)
    kit.shot(page, "people-zip")

    not_a_zip = tmp_path / "photos.zip"
    not_a_zip.write_text("a list of names, not a ZIP\n")
    form.locator("input[name=zip]").set_input_files(str(not_a_zip))
    with page.expect_response(lambda r: r.url.endswith("/api/people/import")) as answer:
        form.locator("button").click()
    assert answer.value.status == 400
    page.wait_for_selector("#zip-summary.error")
    assert "not a ZIP file" in page.locator("#zip-summary").inner_text()


class _Inbox:
    """aiosmtpd's handler: every message the local SMTP server receives."""

    def __init__(self):
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content, policy=email_policy.default))
        return "250 OK"


def _closed_sessions(served, monday: dt.date, attended: dict[int, list[str]]) -> None:
    """PH110's closed sessions on the days after ``monday`` (06:00 site time) with who attended each."""
    async def work(conn):
        zone = ZoneInfo(served.config.site.timezone)
        for day, people in attended.items():
            start = dt.datetime.combine(monday + dt.timedelta(days=day), dt.time(6, 0), zone)
            session_id = await conn.fetchval(
                """INSERT INTO class_session (course_id, room_id, starts_at, ends_at, state, closed_at)
                   VALUES ('PH110', 'B202', $1, $2, 'closed', $2) RETURNING id""", start, start + dt.timedelta(hours=1))
            for person in people:
                await conn.execute("INSERT INTO attendance (session_id, person_id, status) VALUES ($1, $2, 'present')",
                                   session_id, person)
    kit.db_call(served, work)


def test_the_schedule_mails_the_weekly_report_and_absence_notices_to_a_local_smtp_server(served):
    from aiosmtpd.controller import Controller

    zone = ZoneInfo(served.config.site.timezone)
    today = dt.datetime.now(zone).date()
    last_monday = today - dt.timedelta(days=today.weekday() + 7)
    _closed_sessions(served, last_monday, {0: ["macron"], 1: [], 2: [], 3: []})  # macron absent 3 times of 4
    kit.db(served, "UPDATE person SET email = 'macron@example.org' WHERE id = 'macron'")
    # curie's account was disabled above, and a disabled account gets no reports: enabled again for hers
    admin, _ = kit.login_with_token(served, "admin")
    assert admin.post("/api/accounts/curie/enable").status_code == 200
    # the weekly report falls due at the very start of the week (Monday 00:00, site time): last week's is then
    # the one due whatever the day and hour the test runs (the example's Monday 07:00 would, on a Monday
    # morning, still owe the week before)
    env = {**os.environ, "DATABASE_URL": served.database_url, "PYTHONPATH": str(PROJECT_ROOT),
           "ROLLCALL__REPORTS__SMTP__HOST": "127.0.0.1", "ROLLCALL__REPORTS__WEEKLY_ON": "mon",
           "ROLLCALL__REPORTS__WEEKLY_AT": "00:00:00"}

    def send_now(port: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "infra.cli.main", "--config", str(EXAMPLE_CONFIG), "reports",
                               "send", "--json"], env={**env, "ROLLCALL__REPORTS__SMTP__PORT": str(port)},
                              capture_output=True, text=True, timeout=120)

    # no mail server yet: nothing sent, said in one line, and nothing marked sent (the next check retries)
    away = send_now(choose_free_port())
    assert away.returncode == 2 and "2 report(s) not sent: the SMTP server 127.0.0.1:" in away.stderr, away.stderr
    assert len(json.loads(away.stdout)["failed"]) == 2 and kit.db(served, "SELECT * FROM report_sent") == []
    inbox = _Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=choose_free_port())
    smtp.start()
    try:
        reports = ReportsConfig(enabled=True, smtp=SmtpConfig(host="127.0.0.1", port=smtp.port),
                                weekly_on="mon", weekly_at=dt.time(0, 0), absence_threshold=3,
                                check_every_s=1)
        config = served.config.model_copy(update={"reports": reports})
        stop = asyncio.Event()

        async def schedule():  # what the writer's housekeeping runs, until both mails are in
            loop = asyncio.create_task(report_loop(config, served.database_url, stop))
            async with asyncio.timeout(60):
                while len(inbox.messages) < 2:
                    await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # one more check: nothing is sent twice
            stop.set()
            await loop
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # playwright keeps an event loop in this thread
            pool.submit(asyncio.run, schedule()).result()
        by_recipient = {m["To"]: m for m in inbox.messages}
        assert sorted(by_recipient) == ["curie@example.org", "macron@example.org"] and len(inbox.messages) == 2
        weekly = by_recipient["curie@example.org"]
        week = f"{last_monday.isocalendar()[0]}-W{last_monday.isocalendar()[1]:02d}"
        assert weekly["Subject"] == f"Attendance PH110 week {week}"
        assert "4 session(s) held" in weekly.get_content()
        assert ["macron", "1", "0", "3", "25%"] in [line.split() for line in weekly.get_content().splitlines()]
        notice = by_recipient["macron@example.org"]
        assert notice["Subject"] == "Absences in PH110: 3 in the last 28 days"
        assert len([line for line in notice.get_content().splitlines() if line.startswith("  ")]) == 3  # the dates
        # sending now from the command line: already sent, nothing goes twice
        result = send_now(smtp.port)
        assert result.returncode == 0 and json.loads(result.stdout) == {"sent": [], "failed": []}, result.stderr
        assert len(inbox.messages) == 2
    finally:
        smtp.stop()


# ------------------------------------------------------------------------------------ cameras and doors
# (after the load-config test: its import would otherwise re-set the door these tests redraw)

@pytest.fixture(scope="module")
def room_stream(stack):
    """The default scenario's room video served by the session's RTSP server on loopback; its rtsp:// URL."""
    _, rendered = render_cached(PROJECT_ROOT / "infra" / "scenarios" / "default.toml")
    embedded.change_rtsp_mounts(add={"/setup-test/room": rendered.room_video})
    yield stack.rtsp_url("setup-test/room")
    embedded.change_rtsp_mounts(remove=["/setup-test/room"])


def test_only_admins_manage_cameras_and_doors(served):
    faculty, token = kit.login_with_token(served, "turing")
    for path in ("/setup/cameras", "/setup/doors", "/setup/cameras/room-a101/snapshot.jpg", "/setup/doors/A101-main/zone"):
        assert faculty.get(path).status_code == 403, path
    assert faculty.post("/setup/doors/A101-main/zone", json={"zone": [[0, 0], [9, 0], [9, 9]]},
                        headers={"X-CSRF-Token": token}).status_code == 403
    assert faculty.post("/setup/cameras/room-a101/test", headers={"X-CSRF-Token": token}).status_code == 403


def test_admin_adds_a_camera_tests_it_and_sees_its_snapshot(admin_page, served, room_stream):
    page = kit.open_page(admin_page, served, "/setup/cameras")
    form = page.locator("#new-camera")
    kit.fill_form(form, {"id": "room-a101-back", "role": "room", "room": "A101", "url": room_stream,
                         "analysis_fps": "4"})
    form.locator("button").click()
    assert "camera room-a101-back added" in _flash(page)
    assert [tuple(r) for r in kit.db(served, "SELECT role, room_id, url, analysis_fps, enabled FROM camera "
                                             "WHERE id = 'room-a101-back'")] == [("room", "A101", room_stream, 4.0, True)]
    row = page.locator("tr[data-camera=room-a101-back]")
    row.locator("button.probe").click()
    page.wait_for_selector("tr[data-camera=room-a101-back] .probe-result:is(.ok, .error)", timeout=30000)
    assert row.locator(".probe-result").inner_text().startswith("ok: h264 1280x720")
    row.locator("button.snap").click()
    snapshot = row.locator("figure.snapshot img")
    page.wait_for_selector("tr[data-camera=room-a101-back] figure.snapshot:not([hidden]) img", timeout=30000)
    assert snapshot.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [1280, 720]
    kit.shot(page, "setup-cameras")
    # a camera nobody serves: the test says why in one line
    admin, token = kit.login_with_token(served, "admin")
    assert admin.post("/setup/cameras", data={"csrf_token": token, "id": "door-gone", "role": "door", "room": "A101",
                                              "url": "rtsp://127.0.0.1:9/nothing", "enabled": "yes"}).status_code == 201
    result = admin.post("/setup/cameras/door-gone/test", headers={"X-CSRF-Token": token}).json()
    assert result["ok"] is False and "refused" in result["result"].lower()
    assert admin.get("/setup/cameras/door-gone/snapshot.jpg").status_code == 502


@pytest.mark.parametrize("fields, status, message", [
    ({"id": "cam-x", "role": "door", "room": "A101", "url": "ftp://cam/x"}, 400, "url: must be an rtsp://"),
    ({"id": "cam-x", "role": "door", "room": "Z9", "url": "rtsp://cam/x"}, 400, "no room 'Z9'"),
    ({"id": "cam-x", "role": "door", "room": "A101", "url": "rtsp://cam/x", "analysis_fps": "fast"}, 400, "analysis_fps"),
    ({"id": "door-a101", "role": "door", "room": "A101", "url": "rtsp://cam/x"}, 409, "exists already"),
])
def test_bad_cameras_are_4xx_with_the_reason(served, fields, status, message):
    admin, token = kit.login_with_token(served, "admin")
    response = admin.post("/setup/cameras", data={"csrf_token": token, **fields})
    assert response.status_code == status and message in html.unescape(response.text), response.text[:300]
    assert kit.db(served, "SELECT id FROM camera WHERE id = 'cam-x'") == []


def test_a_camera_is_disabled_and_enabled_again(admin_page, served):
    page = kit.open_page(admin_page, served, "/setup/cameras")
    page.locator("tr[data-camera=door-gone] form.toggle button").click()
    assert "camera door-gone disabled" in _flash(page)
    assert kit.db(served, "SELECT enabled FROM camera WHERE id = 'door-gone'")[0][0] is False
    page.locator("tr[data-camera=door-gone] form.toggle button").click()
    assert "camera door-gone enabled" in _flash(page)
    assert kit.db(served, "SELECT enabled FROM camera WHERE id = 'door-gone'")[0][0] is True


@contextlib.contextmanager
def catalogue_followed_by(served, stage: RoomStage, camera_id: str):
    """A processor group member's catalogue watcher (processor/group/catalogue.py, polling every 0.2 s) on
    the served database, in a thread of its own, applying each new catalogue to ``stage`` as a member does
    (processor/service.py run_cameras); ``camera_id``'s tracker made on the first one."""
    def follow(catalogue):
        stage.reconfigure(catalogue.applied_to(served.config))
        stage._tracker(camera_id)

    watcher = CatalogueWatcher(served.database_url, 4, 0.2, follow)
    loop = asyncio.new_event_loop()
    task = loop.create_task(watcher.run())
    thread = threading.Thread(target=lambda: loop.run_until_complete(asyncio.wait([task])), daemon=True)
    thread.start()
    try:
        _until(lambda: watcher.current is not None, "the first catalogue read")
        yield watcher
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(10)
        if not thread.is_alive():
            loop.close()


def _until(predicate, what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        time.sleep(0.1)


def test_admin_links_a_door_and_draws_its_entry_zone_which_a_running_processor_takes(admin_page, served):
    page = kit.open_page(admin_page, served, "/setup/doors")
    row = page.locator("tr[data-door=A101-main]")
    row.locator("select[name=room_camera]").select_option("room-a101-back")
    row.locator(".door-form button").click()
    assert "door A101-main saved: door-a101 → room-a101-back" in _flash(page)
    stage = RoomStage(served.config, publish=lambda *a, **k: True, topic="presence", recognitions=asyncio.Queue())
    feet_low_right = np.array([[900.0, 500.0, 1000.0, 650.0]])  # a box whose feet are at 74 %, 90 % of the picture
    with catalogue_followed_by(served, stage, "room-a101-back"):
        tracker = stage.trackers["room-a101-back"]
        assert tracker.zone_of(feet_low_right) == [None]  # the file's zone, up left
        page.locator("tr[data-door=A101-main] a", has_text="Draw").click()
        page.wait_for_selector("#zone-editor[data-ready=yes]", timeout=30000)
        drawing = page.locator("#zone-drawing")
        box = drawing.bounding_box()
        corners = [(0.5, 0.6), (0.9, 0.6), (0.9, 0.95), (0.5, 0.95)]  # fractions of the picture
        for fx, fy in corners:
            drawing.click(position={"x": fx * box["width"], "y": fy * box["height"]})
        page.locator("#zone-save").click()
        page.wait_for_selector("#zone-status.ok")
        assert "entry zone of A101-main saved (4 points)" in page.locator("#zone-status").inner_text()
        zone = json.loads(kit.db(served, "SELECT entry_zone FROM door WHERE id = 'A101-main'")[0][0])
        assert [(round(x / 1280, 2), round(y / 720, 2)) for x, y in zone] == corners  # in the camera's pixels
        kit.shot(page, "setup-zone")
        # the running member's room stage takes the new zone on its next read, same tracker, no restart
        _until(lambda: tracker.zone_of(feet_low_right) == ["A101-main"], "the redrawn zone in the room stage")
        assert stage.trackers["room-a101-back"] is tracker and tracker.entry_zones["A101-main"] == [tuple(p) for p in zone]
    # a zone on one line: a 400 with the reason, the saved one kept
    admin, token = kit.login_with_token(served, "admin")
    refused = admin.post("/setup/doors/A101-main/zone", json={"zone": [[0, 0], [5, 5], [9, 9]]},
                         headers={"X-CSRF-Token": token})
    assert refused.status_code == 400 and "the zone has no area" in html.unescape(refused.text)


def test_admin_adds_a_door_whose_zone_starts_as_the_whole_picture(admin_page, served):
    page = kit.open_page(admin_page, served, "/setup/doors")
    form = page.locator("#new-door")
    kit.fill_form(form, {"id": "A101-back", "door_camera": "door-gone", "room_camera": "room-a101-back"})
    form.locator("button").click()
    assert "door A101-back added: draw its entry zone now" in _flash(page)
    [door] = kit.db(served, "SELECT room_id, door_camera_id, room_camera_id, entry_zone FROM door WHERE id = 'A101-back'")
    assert tuple(door[:3]) == ("A101", "door-gone", "room-a101-back")
    assert json.loads(door[3]) == [[0, 0], [1280, 0], [1280, 720], [0, 720]]
    admin, token = kit.login_with_token(served, "admin")
    wrong = admin.post("/setup/doors", data={"csrf_token": token, "id": "A101-side",
                                             "room": "A101", "door_camera": "room-a101", "room_camera": "room-a101",
                                             "transit_min_s": "1", "transit_max_s": "9"})
    assert wrong.status_code == 400 and "is not a door camera of room A101" in html.unescape(wrong.text)


def test_the_transit_window_suggested_from_single_arrivals_is_accepted(admin_page, served):
    now = dt.datetime.now(dt.timezone.utc)
    transits = [3.0, 3.5, 4.0, 4.2, 4.5, 5.0, 5.5, 6.0]
    rows = []
    for i, transit in enumerate(transits):
        at = now - dt.timedelta(hours=1, minutes=5 * i)
        rows.append(("recognition", "door-a101", "obama", at, at))
        rows.append(("enter", "room-a101-back", None, at + dt.timedelta(seconds=transit),
                     at + dt.timedelta(seconds=transit)))
    kit.db_call(served, lambda conn: conn.executemany(
        """INSERT INTO presence_event (event_id, kind, room_id, camera_id, track_id, person_id, frame_time,
                                       first_seen, last_seen, topic, kafka_partition, kafka_offset)
           VALUES (gen_random_uuid(), $1, 'A101', $2, $6, $3, $4, $5, $5, 'test', 0, $7)""",
        [(*row, f"t{n}", n) for n, row in enumerate(rows)]))
    page = kit.open_page(admin_page, served, "/setup/doors")
    row = page.locator("tr[data-door=A101-main]")
    assert "over 8 arrivals" in row.locator(".suggestion").inner_text()
    kit.shot(page, "setup-doors")
    row.locator(".accept-suggestion button").click()
    assert "door A101-main saved" in _flash(page)
    low, high = kit.db(served, "SELECT transit_min_s, transit_max_s FROM door WHERE id = 'A101-main'")[0]
    assert 2.5 <= low <= 3.0 and 6.5 <= high <= 7.0, (low, high)
    # the operator edits it: a window upside down is a 400 with the reason
    row = page.locator("tr[data-door=A101-main]")
    row.locator(".door-form input[name=transit_min_s]").fill("9")
    row.locator(".door-form input[name=transit_max_s]").fill("3")
    with page.expect_response(lambda r: r.url.endswith("/setup/doors/A101-main")) as answer:
        row.locator(".door-form button").click()
    assert answer.value.status == 400 and "must be above transit min" in page.locator("main").inner_text()


# ------------------------------------------------------------------------------------- enrolment from video

def test_enrol_from_a_webcam_capture_picks_sharp_varied_frames_that_recognise_the_person(admin_page, served, tmp_path):
    """Chromium's fake camera plays a rendered clip of Rishi Sunak (swaying, leaning, the light changing, a fast
    blurred move): the capture page records it and the frames enrolled recognise his other photo."""
    clip = webcam_kit.webcam_clip("sunak.jpg", tmp_path / "sunak.y4m")
    browser = webcam_kit.chromium_with_fake_camera(admin_page.context.browser.browser_type, kit.CHROMIUM,
                                                   kit.CHROMIUM_ARGS, clip)
    try:
        page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        page.goto(served.url + "/people/capture")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", kit.PASSWORDS["admin"])
        page.click("button[type=submit]")
        form = page.locator("#video-enrol")
        form.locator("input[name=person_id]").fill("sunak")
        form.locator("input[name=consent]").check()
        page.click("#camera-start")
        page.wait_for_selector("#preview[data-live=yes]")  # the live preview plays the fake camera
        assert page.locator("#preview").evaluate("v => [v.videoWidth, v.videoHeight]") == [640, 480]
        page.click("#capture")
        page.wait_for_selector("#video-summary.summary, #video-summary.error", timeout=120_000)
        summary = page.locator("#video-summary").inner_text()
        assert page.locator("#video-summary.summary").count() == 1, summary
        assert page.locator("#capture-progress progress").evaluate("b => b.value === b.max && b.max > 0")
        enrolled = page.locator("#video-results tbody tr.ok").count()
        codes = [row.get_attribute("data-code") for row in page.locator("#video-results tbody tr.error").all()]
        assert 2 <= enrolled <= served.config.dashboard.enrol_video_frames, summary
        assert codes and set(codes) <= {"not_picked", "less_sharp", "too_blurry", "no_face", "low_score", "pose"}, codes
        kit.shot(page, "people-capture")
    finally:
        browser.close()
    rows = kit.db(served, """SELECT source, photo IS NULL AS no_photo, consent_by FROM face_enrolment
                             WHERE person_id = 'sunak'""")
    assert len(rows) == enrolled and all(tuple(r) == ("dashboard", True, "admin") for r in rows)
    # the enrolled frames are him: his door photo (mirrored, re-lit, turned) is recognised, Macron's is not
    assert webcam_kit.recognised_in(served, served.config, "sunak_door.png").person_id == "sunak"
    assert webcam_kit.recognised_in(served, served.config, "macron_2025.jpg").person_id != "sunak"


def test_enrol_from_an_uploaded_video_and_bad_videos_refused_with_the_reason(served, tmp_path):
    admin = kit.login(served, "admin")
    fields = {"person_id": "biden", "name": "Joe Biden", "consent": "yes"}

    def post(path: Path, **changes):
        with path.open("rb") as video:
            return admin.post("/api/people/enrol-video", data={**fields, **changes},
                              files={"video": (path.name, video, "video/mp4")})

    clip = webcam_kit.webcam_clip("biden.jpg", tmp_path / "biden.mp4")
    answer = post(clip)
    assert answer.status_code == 201, answer.text
    result = answer.json()
    assert 2 <= len(result["accepted"]) == len(result["picked"]) <= served.config.dashboard.enrol_video_frames
    assert result["frames_sampled"] == len(result["picked"]) + len(result["rejected"])
    assert "less_sharp" in {r["code"] for r in result["rejected"]}  # the fast move's motion blur left out
    assert kit.db(served, "SELECT count(*) FROM face_enrolment WHERE person_id = 'biden' AND photo IS NULL "
                          "AND source = 'dashboard'")[0][0] == len(result["accepted"])
    assert webcam_kit.recognised_in(served, served.config, "biden_door.png").person_id == "biden"
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("a list of names, not a video\n")
    refusals = [(post(clip, consent=""), 400, "without consent"),
                (post(clip, person_id="bad id!"), 400, "is not valid"),
                (post(not_a_video), 400, "not a video"),
                (post(webcam_kit.noise_video(tmp_path / "nobody.mp4", 3)), 422, "shows one clear face"),
                (post(webcam_kit.noise_video(tmp_path / "long.mp4", served.config.dashboard.max_enrol_video_s + 5)),
                 413, "max_enrol_video_s")]
    for response, status, words in refusals:
        assert response.status_code == status and words in response.json()["error"], (status, response.text)
