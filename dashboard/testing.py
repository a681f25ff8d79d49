"""Helpers for the dashboard's tests, bench and demo: a prepared database, demo accounts, the app
served by uvicorn in a background thread, and a logged-in HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Iterator

DEMO_ACCOUNTS = (  # username, role, person id
    ("admin", "admin", None),
    ("turing", "faculty", "prof-turing"),
    ("macron", "student", "macron"),
    ("ardern", "student", "ardern"),
)


def prepare_database(database_url: str, config) -> None:
    """Migrate and load the config's topology (rooms, cameras, courses, rosters, timetable)."""
    from infra import db

    db.migrate(database_url)
    asyncio.run(db.load_topology(database_url, config))


async def _add_accounts(database_url: str, accounts, passwords: dict[str, str], replace: bool) -> None:
    import asyncpg

    from dashboard.auth import create_user

    conn = await asyncpg.connect(database_url)
    try:
        for username, role, person_id in accounts:
            await create_user(conn, username, passwords[username], role, person_id, created_by="demo",
                              replace=replace)
    finally:
        await conn.close()


def add_accounts(database_url: str, accounts=DEMO_ACCOUNTS, passwords: dict[str, str] | None = None,
                 replace: bool = True) -> dict[str, str]:
    """Create (or reset) accounts; returns username → password (random unless given)."""
    from dashboard.auth import new_password

    passwords = dict(passwords or {})
    for username, _, _ in accounts:
        passwords.setdefault(username, new_password())
    asyncio.run(_add_accounts(database_url, accounts, passwords, replace))
    return passwords


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Served:
    url: str
    app: object
    server: object
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop | None = None

    @property
    def services(self):
        return self.app.state.services

    def call(self, coro, timeout: float = 30):
        """Run a coroutine on the server's event loop (e.g. to give the hub an event)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@contextlib.contextmanager
def serve_in_thread(app, port: int | None = None) -> Iterator[Served]:
    """uvicorn serving ``app`` on 127.0.0.1 in a background thread; stopped on exit."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", timeout_graceful_shutdown=2))
    served = Served(f"http://127.0.0.1:{port}", app, server, None)  # type: ignore[arg-type]

    def run() -> None:
        loop = asyncio.new_event_loop()
        served.loop = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.serve())
        loop.close()

    thread = threading.Thread(target=run, name="dashboard-server", daemon=True)
    served.thread = thread
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the dashboard did not start")
        time.sleep(0.02)
    try:
        yield served
    finally:
        server.should_exit = True
        thread.join(15)


def wait_for(check, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


CSRF_META = re.compile(r'name="csrf-token" content="([^"]+)"')


def login(base_url: str, username: str, password: str):
    """An httpx.Client logged in through the JSON login (its .csrf is the session's token)."""
    import httpx

    client = httpx.Client(base_url=base_url, timeout=30, follow_redirects=False)
    page = client.get("/login")
    token = CSRF_META.search(page.text).group(1)
    response = client.post("/login", json={"username": username, "password": password},
                           headers={"X-CSRF-Token": token})
    if response.status_code != 200:
        raise AssertionError(f"login {username}: {response.status_code} {response.text}")
    client.csrf = response.json()["csrf_token"]  # type: ignore[attr-defined]
    client.headers["X-CSRF-Token"] = client.csrf  # type: ignore[attr-defined]
    return client
