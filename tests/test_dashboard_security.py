"""Dashboard security on a real app (uvicorn), real PostgreSQL and the real broker: every route but
login refuses an anonymous request (enumerated from app.routes, so new routes are covered), roles see
only what they may, a student cannot read another student's record, state changes need the CSRF
token, logins are rate-limited, and passwords are stored as argon2id hashes."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from starlette.routing import Mount, Route

from infra.devstack import dashboard as testing
from tests.conftest import create_database
from infra.foundation.config import EXAMPLE_CONFIG, load_config
from infra.foundation.config import config_from_dict
from dashboard.app import create_app
from dashboard.auth import create_user
from infra.foundation.errors import RollcallError
from dashboard.health import lag_by_topic

PASSWORDS = {"admin": "admin-password-1", "turing": "turing-password-1", "macron": "macron-password-1",
             "ardern": "ardern-password-1"}


def _database(stack) -> str:
    return create_database(stack, "test_dash")


@pytest.fixture(scope="module")
def config():

    # A second course the faculty member does not teach, in a room of its own.
    base = load_config(EXAMPLE_CONFIG, environ={})
    raw = base.model_dump(exclude={"source"})
    raw["rooms"].append({"id": "B202", "name": "Seminar B202", "capacity": 20})
    raw["courses"].append({"id": "MA201", "name": "Analysis", "roster": ["obama"], "faculty": ["prof-noether"]})
    raw["timetable"].append({"course": "MA201", "room": "B202", "weekday": "tue", "start": "09:00:00",
                             "end": "10:00:00"})
    raw["dashboard"]["login_max_failures"] = 3
    raw["dashboard"]["processor_metrics_urls"] = []

    return config_from_dict(raw, environ={})


@pytest.fixture(scope="module")
def served(stack, config):

    database_url = _database(stack)
    testing.prepare_database(database_url, config)
    testing.add_accounts(database_url, passwords=PASSWORDS)
    app = create_app(config, database_url=database_url, kafka_bootstrap_servers=stack.kafka_bootstrap_servers,
                     camera_urls={c.id: c.url for c in config.cameras}, secret_key="s" * 48)
    with testing.serve_in_thread(app) as server:
        server.database_url = database_url
        yield server


def _concrete(path: str) -> str:
    return re.sub(r"{[^}]+}", lambda m: "1" if m.group(0).endswith(":int}") else "x", path)


def _routes(app):
    for route in app.routes:
        if isinstance(route, Route):
            for method in sorted(route.methods - {"HEAD"}):
                yield route, method


def test_every_route_but_login_refuses_anonymous(served):
    anonymous = httpx.Client(base_url=served.url, follow_redirects=False, timeout=30)
    checked = 0
    for route, method in _routes(served.app):
        path = _concrete(route.path)
        response = anonymous.request(method, path)
        if route.path == "/login":
            assert response.status_code in (200, 403), (method, path, response.status_code)
            continue
        checked += 1
        assert getattr(route.endpoint, "public", None) is False, f"{route.path} is public"
        if path.startswith("/api/"):
            assert response.status_code == 401, (method, path, response.status_code, response.text)
            assert response.json()["error"], path
        else:
            assert response.status_code == 303, (method, path, response.status_code)
            assert response.headers["location"].startswith("/login"), path
    assert checked >= 35, checked
    # The only other thing mounted is the static assets (CSS, JS) the login page needs.
    mounts = [r.path for r in served.app.routes if isinstance(r, Mount)]
    assert mounts == ["/static"]
    assert anonymous.get("/static/app.js").status_code == 200


def test_roles_see_only_what_they_may(served):
    student = testing.login(served.url, "macron", PASSWORDS["macron"])
    faculty = testing.login(served.url, "turing", PASSWORDS["turing"])
    admin = testing.login(served.url, "admin", PASSWORDS["admin"])
    # Student: their own record only.
    assert student.get("/api/students/macron").status_code == 200
    assert student.get("/api/students/macron").json()["person_id"] == "macron"
    for path in ("/api/students/ardern", "/attendance/students/ardern", "/api/students/ardern/export?format=csv"):
        response = student.get(path)
        assert response.status_code == 403, (path, response.status_code)
        assert "ardern" not in response.text.lower().replace("/ardern", "") or "may see only" in response.text
    for path in ("/live", "/api/events/stream", "/api/presence", "/api/sessions", "/people", "/api/people",
                 "/api/review", "/api/health", "/api/cameras", "/analytics", "/attendance"):
        assert student.get(path).status_code == 403, path
    assert student.get("/", follow_redirects=False).headers["location"] == "/attendance/students/macron"
    # Faculty: their course CS101 and its room A101, not MA201/B202; no people, review or health.
    me = faculty.get("/api/me").json()
    assert me["courses"] == ["CS101"] and me["rooms"] == ["A101"]
    assert faculty.get("/api/courses/CS101").status_code == 200
    assert faculty.get("/api/courses/MA201").status_code == 403
    assert faculty.get("/api/occupancy/B202").status_code == 403
    assert faculty.get("/api/occupancy/A101").status_code == 200
    assert [c["id"] for c in faculty.get("/api/cameras").json()["cameras"]] == ["door-a101", "room-a101"]
    assert faculty.get("/api/students/macron").status_code == 200  # on the CS101 roster
    assert faculty.get("/api/students/prof-noether").status_code == 403  # not their student
    for path in ("/people", "/api/people", "/api/review", "/api/health", "/health", "/review"):
        assert faculty.get(path).status_code == 403, path
    # Admin: everything.
    for path in ("/api/courses/MA201", "/api/occupancy/B202", "/api/people", "/api/review", "/api/health",
                 "/api/students/ardern", "/live", "/people", "/review", "/health", "/analytics", "/attendance"):
        assert admin.get(path).status_code == 200, (path, admin.get(path).text[:300])
    rooms = [r["room_id"] for r in admin.get("/api/presence").json()["rooms"]]
    assert rooms == ["A101", "B202"]


def test_state_changes_need_the_csrf_token(served):
    admin = testing.login(served.url, "admin", PASSWORDS["admin"])
    token = admin.headers.pop("X-CSRF-Token")
    posts = [(route, method) for route, method in _routes(served.app) if method != "GET"]
    assert len(posts) >= 8
    for route, method in posts:
        path = _concrete(route.path)
        for kwargs in ({}, {"data": {"csrf_token": "wrong"}}, {"headers": {"X-CSRF-Token": "wrong"}}):
            response = admin.request(method, path, **kwargs)
            assert response.status_code == 403, (method, path, kwargs, response.status_code, response.text[:200])
            assert "CSRF" in response.text
    # With the token the same request gets through the guard (here: refused for its content instead).
    response = admin.post("/api/review/999999/reject", headers={"X-CSRF-Token": token})
    assert response.status_code == 404 and "no review item" in response.json()["error"]
    response = admin.post("/api/review/999999/reject", data={"csrf_token": token})
    assert response.status_code == 404
    # Logging in needs it too (login CSRF).
    fresh = httpx.Client(base_url=served.url, timeout=30)
    fresh.get("/login")
    response = fresh.post("/login", data={"username": "admin", "password": PASSWORDS["admin"]})
    assert response.status_code == 403


def test_login_rate_limit_and_session(served):
    client = httpx.Client(base_url=served.url, timeout=30)
    token = testing.CSRF_META.search(client.get("/login").text).group(1)
    statuses = [client.post("/login", json={"username": "ardern", "password": f"wrong-{i}"},
                            headers={"X-CSRF-Token": token}).status_code for i in range(4)]
    assert statuses == [400, 400, 400, 429], statuses
    limited = client.post("/login", json={"username": "ardern", "password": PASSWORDS["ardern"]},
                          headers={"X-CSRF-Token": token})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    # An unknown user is answered like a wrong password.
    response = client.post("/login", json={"username": "nobody", "password": "x" * 12}, headers={"X-CSRF-Token": token})
    assert response.status_code == 400 and response.json()["error"] == "wrong username or password"
    # A tampered session cookie is no session.
    admin = testing.login(served.url, "admin", PASSWORDS["admin"])
    cookie = admin.cookies["rollcall_session"]
    forged = httpx.Client(base_url=served.url, cookies={"rollcall_session": cookie[:-4] + "AAAA"}, timeout=30)
    assert forged.get("/api/me").status_code == 401
    assert admin.get("/api/me").status_code == 200
    # Logging out ends it.
    assert admin.post("/logout").status_code == 303
    assert admin.get("/api/me").status_code == 401
    # Headers: everything from this origin, no framing.
    page = client.get("/login")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    fresh = httpx.Client(base_url=served.url, timeout=30)
    token = testing.CSRF_META.search(fresh.get("/login").text).group(1)
    response = fresh.post("/login", json={"username": "turing", "password": PASSWORDS["turing"]},
                          headers={"X-CSRF-Token": token})
    cookie_line = response.headers["set-cookie"].lower()
    assert "httponly" in cookie_line and "samesite=lax" in cookie_line
    assert PASSWORDS["turing"] not in response.headers["set-cookie"]


def test_passwords_are_argon2_and_bad_accounts_are_one_line(served):
    import asyncpg


    async def check():
        conn = await asyncpg.connect(served.database_url)
        try:
            hashes = [r["password_hash"] for r in await conn.fetch("SELECT password_hash FROM dashboard_user")]
            assert hashes and all(h.startswith("$argon2id$") for h in hashes)
            assert not any(p in h for h in hashes for p in PASSWORDS.values())
            for args, message in ((("x y", "long-enough-pw", "admin"), "is not valid"),
                                  (("bob", "short", "admin"), "too short"),
                                  (("bob", "long-enough-pw", "student"), "needs --person"),
                                  (("bob", "long-enough-pw", "student", "no-such-person"), "no person"),
                                  (("admin", "long-enough-pw", "admin"), "exists already")):
                with pytest.raises(RollcallError, match=message):
                    await create_user(conn, *args)
        finally:
            await conn.close()

    asyncio.run(check())


def test_openapi_lists_the_api(served):
    admin = testing.login(served.url, "admin", PASSWORDS["admin"])
    document = admin.get("/api/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    api_paths = {re.sub(r"{(\w+)(:\w+)?}", r"{\1}", r.path) for r in served.app.routes
                 if isinstance(r, Route) and r.path.startswith("/api/")}
    assert api_paths <= set(document["paths"]), api_paths - set(document["paths"])
    close = document["paths"]["/api/sessions/{session_id}/close"]["post"]
    assert close["x-roles"] == ["admin", "faculty"]
    assert any(p["name"] == "X-CSRF-Token" for p in close["parameters"])


def test_writer_lag_is_not_clamped_when_committed_offsets_are_past_the_log():
    """A broker that lost its log (or a topic re-created) leaves PostgreSQL's committed offsets past the
    log's end: the health page's lag goes negative and names the partition, it is not shown as 0."""

    ends = {("rollcall.presence.v1", 0): 5, ("rollcall.presence.v1", 1): 40}
    committed = {("rollcall.presence.v1", 0): 900, ("rollcall.presence.v1", 1): 30}
    row = lag_by_topic(["rollcall.presence.v1"], ends, committed)["rollcall.presence.v1"]
    assert row["lag"] == (5 - 900) + (40 - 30) and row["ahead_of_log"] == [0]
    healthy = lag_by_topic(["rollcall.presence.v1"], ends, {("rollcall.presence.v1", 0): 5})["rollcall.presence.v1"]
    assert healthy["lag"] == 40 and healthy["ahead_of_log"] == []
