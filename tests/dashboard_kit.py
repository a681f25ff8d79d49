"""Helpers shared by the tests that drive the real dashboard over HTTP: the served app on its own database
of the session's PostgreSQL (see tests/conftest.py), a query on that database, and a logged-in client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator

import asyncpg

from infra.devstack import dashboard as testing
from infra.foundation.config import EXAMPLE_CONFIG, load_config
from infra.foundation.paths import PROJECT_ROOT
from tests.conftest import create_database
from dashboard.app import create_app

SCREENSHOTS = PROJECT_ROOT / "var" / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
PASSWORDS = {"admin": "admin-password-1", "turing": "turing-password-1", "macron": "macron-password-1",
             "ardern": "ardern-password-1"}


@contextlib.contextmanager
def served_dashboard(stack, config, prefix: str, *, secret_key: str, camera_urls: dict | None = None,
                     accounts=testing.DEMO_ACCOUNTS, passwords: dict[str, str] = PASSWORDS,
                     prepare: Callable[[str], object] | None = None, serve=testing.serve_in_thread,
                     wait_for_hub: bool = False) -> Iterator[testing.Served]:
    """The dashboard app on a new database (migrated, the config's topology loaded, ``accounts`` made with
    ``passwords``) served over HTTP by ``serve``. ``prepare(database_url)`` runs before the app starts; what it
    returns is ``.prepared``. The served object also carries ``.database_url``, ``.bootstrap`` and ``.passwords``."""

    database_url = create_database(stack, prefix)
    testing.prepare_database(database_url, config)
    testing.add_accounts(database_url, accounts=accounts, passwords=passwords)
    prepared = prepare(database_url) if prepare else None
    app = create_app(config, database_url=database_url, kafka_bootstrap_servers=stack.kafka_bootstrap_servers,
                     camera_urls=camera_urls or {}, secret_key=secret_key)
    with serve(app) as server:
        server.database_url, server.bootstrap = database_url, stack.kafka_bootstrap_servers
        server.passwords, server.prepared = passwords, prepared
        if wait_for_hub:
            testing.wait_for(server.services.hub.ready.is_set, 30, what="the live hub at the topics' end")
        yield server


@contextlib.contextmanager
def served_example(stack, prefix: str, *, secret_key: str) -> Iterator[testing.Served]:
    """:func:`served_dashboard` of the example config (as ``.config`` too), with the demo accounts."""
    config = load_config(EXAMPLE_CONFIG, environ={})
    with served_dashboard(stack, config, prefix, secret_key=secret_key) as server:
        server.config = config
        yield server


def login(served, username: str):
    """An httpx.Client logged in as ``username`` (its password: the one the served dashboard was given)."""
    return testing.login(served.url, username, served.passwords[username])


def db_call(served, work):
    """``await work(conn)`` on a connection of its own to the served database; its result. In a thread of its
    own: the caller's thread may run an event loop already (playwright's sync API does)."""
    async def run():
        conn = await asyncpg.connect(served.database_url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def db(served, query: str, *args):
    """The rows of one query on the served database."""
    return db_call(served, lambda conn: conn.fetch(query, *args))


def login_with_token(served, username: str):
    """A client logged in as ``username`` and its CSRF token, for the posts a test makes with it."""
    client = login(served, username)
    return client, client.headers["X-CSRF-Token"]


def open_page(page, served, path: str):
    """``page`` (a playwright page) gone to ``path`` of the served dashboard."""
    page.goto(served.url + path)
    return page


def open_logged_in(page, served, username: str, path: str, *, ready: str, password: str | None = None):
    """``page`` at ``path`` through the login form it is sent to, as ``username`` (``password``: the one the
    served dashboard was given, unless given); returns once ``ready`` (a selector of the page) is shown."""
    open_page(page, served, path)
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password or served.passwords[username])
    page.click("button[type=submit]")
    page.wait_for_selector(ready)
    return page


def fill_form(form, fields: dict[str, str | list[str]]) -> None:
    """Each named field of ``form`` (a playwright locator) set: a select's options chosen, others typed."""
    for name, value in fields.items():
        field = form.locator(f"[name={name}]")
        if field.evaluate("element => element.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)


@contextlib.contextmanager
def chromium() -> Iterator:
    """Debian's headless Chromium through playwright (no browser download), closed after. Open it after the
    served dashboard: playwright's sync API keeps an event loop in this thread."""
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    from playwright.sync_api import sync_playwright  # heavy, and only the browser tests need it

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run infra/setup/debian-packages.sh as root"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser, **context_options):
    """A page of a new browser context at the size the screenshots are taken at."""
    return browser.new_context(viewport={"width": 1400, "height": 900}, **context_options).new_page()


def shot(page, name: str) -> None:
    """The whole page as var/artifacts/screenshots/NAME.png (the README's screenshots)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
