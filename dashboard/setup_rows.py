"""The shape the set-up handlers share for one row named in the path (a camera, a door): read it or change
it on one connection, a 404 naming it when there is none; and the confirmation a deletion asks for."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from starlette.requests import Request

from dashboard.services import Problem, services_of


async def row_or_404(request: Request, kind: str, fetch: Callable[[Any, str], Awaitable[dict | None]]) -> dict:
    """``fetch(conn, id)`` of the path's ``{kind}_id``; a 404 "no camera 'x'" when it gives None."""
    row_id = request.path_params[f"{kind}_id"]
    async with services_of(request).conn() as conn:
        row = await fetch(conn, row_id)
    if row is None:
        raise Problem(f"no {kind} {row_id!r}", 404)
    return row


async def change_or_404(request: Request, kind: str, change: Callable[[Any, str], Awaitable[bool]]) -> str:
    """``change(conn, id)`` of the path's ``{kind}_id`` (True: a row changed); a 404 when none did. The id.
    This process's campus snapshot is dropped at once (its own pages show the change on the next request;
    other dashboards and the processors follow within their polling period)."""
    row_id = request.path_params[f"{kind}_id"]
    async with services_of(request).conn() as conn:
        if not await change(conn, row_id):
            raise Problem(f"no {kind} {row_id!r}", 404)
    services_of(request).forget_campus()
    return row_id


def confirmed(request: Request, fields: dict, kind: str) -> None:
    """A deletion goes ahead only with ``confirm`` set to the id it deletes (the page's form sends it after
    the browser's confirmation): a stray or replayed request without it deletes nothing (400)."""
    row_id = request.path_params[f"{kind}_id"]
    if str(fields.get("confirm") or "") != row_id:
        raise Problem(f"confirm: send confirm={row_id} to delete {kind} {row_id}")
