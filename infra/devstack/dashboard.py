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

import asyncpg
import httpx
import uvicorn
from aiokafka import AIOKafkaProducer

from dashboard.auth import create_user, new_password
from infra.foundation import db
from schemas.events import build_event, encode, new_event_id, now_timestamp

DEMO_ACCOUNTS = (  # username, role, person id
    ("admin", "admin", None),
    ("turing", "faculty", "prof-turing"),
    ("macron", "student", "macron"),
    ("ardern", "student", "ardern"),
)


def prepare_database(database_url: str, config) -> None:
    """Migrate and load the config's topology (rooms, cameras, courses, rosters, timetable)."""

    db.migrate(database_url)
    asyncio.run(db.load_topology(database_url, config))


async def _add_accounts(database_url: str, accounts, passwords: dict[str, str], replace: bool) -> None:
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


# ------------------------------------------------------------------------------------------ events

def make_event(event_type: str, **fields) -> dict:
    """A valid event of ``event_type`` (schemas/*.json) for room A101's cameras, ``fields`` overriding,
    with ``published_at`` set (as the publisher would)."""

    now = time.time()
    defaults: dict = {
        "recognition": dict(camera_id="door-a101", room_id="A101", door_id="A101-main", track_id="t1",
                            person_id="macron", score=0.7, margin=0.3, quality=0.9, frames=5, frame_time=now,
                            first_seen=now - 1, last_seen=now, box=(100, 100, 200, 220), frame_size=(1280, 720),
                            model_pack="open"),
        "presence": dict(kind="enter", room_id="A101", camera_id="room-a101", track_id="p1", identity="known",
                         person_id="macron", identity_source="handoff", handoff=None, ambiguous=False,
                         previous_person_id=None, frame_time=now, first_seen=now - 2, last_seen=now, dwell_s=2.0,
                         box=(100, 100, 300, 600), frame_size=(1280, 720)),
        "occupancy": dict(room_id="A101", camera_id="room-a101", frame_time=now, people=3, people_avg=2.5,
                          known=2, unknown=1),
        "overlay": dict(camera_id="room-a101", room_id="A101", role="room", frame_time=now, pts_s=1.0,
                        frame_size=(1280, 720), objects=[]),
    }[event_type]
    if event_type == "recognition":
        fields.setdefault("identity", "known" if fields.get("person_id", "macron") else "unknown")
    if event_type == "presence" and fields.get("identity_source", "handoff") == "handoff" and "handoff" not in fields:

        fields["handoff"] = {"door_id": "A101-main", "recognition_event_id": new_event_id(), "transit_s": 3.0}
    event = build_event(event_type, {**defaults, **fields})
    event["published_at"] = now_timestamp()
    return event


async def publish(bootstrap: str, items: list[tuple[str, dict]]) -> None:
    """Send (topic, event) pairs, keyed like the processor (camera or room id), and wait for the broker."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        for topic, event in items:
            key = (event.get("camera_id") if event["event_type"] in ("recognition", "presence", "overlay")
                   else event.get("room_id"))
            await producer.send_and_wait(topic, encode(event), key=key.encode())
    finally:
        await producer.stop()
