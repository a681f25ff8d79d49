"""Bulk enrolment (admin): a ZIP with a folder per person (named by person id or name), enrolled person by
person with a reason for every refused photo, the progress streamed as it goes.

The ZIP is checked and unpacked first (:mod:`dashboard.zip_photos`: a bad or oversized ZIP is a 4xx with
the reason, nothing enrolled); then the answer streams as JSON lines (``application/x-ndjson``): ``start``
(people, photos, the entries refused while unpacking), ``photo`` after each photo (done of total), ``person``
with each person's accepted and refused photos, and ``end`` with the summary. Each person is enrolled in a
transaction of their own (processor/enroll.py, source ``import``): embeddings, not photos, unless
``privacy.keep_enrolment_photos``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import AsyncIterator

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dashboard.forms import ZipEnrolment, parse
from dashboard.guard import RouteTable
from dashboard.services import Problem, Services, services_of
from dashboard.web import ADMIN, current_user
from dashboard.zip_photos import PersonFolder, ZipContents, ZipLimits, ZipRefused, person_of, unpack
from infra.foundation.errors import RollcallError
from processor.api import enroll_photos

ROUTES = RouteTable()
IMPORT_PATH = "/api/people/import"


def _limits(services: Services) -> ZipLimits:
    d = services.config.dashboard
    return ZipLimits(entries=d.max_zip_entries, photo_bytes=d.max_zip_photo_bytes, total_bytes=d.max_zip_total_bytes,
                     image_pixels=d.max_image_pixels)


@ROUTES.api(IMPORT_PATH, ADMIN, methods=("POST",))
async def import_zip(request: Request) -> Response:
    """Enrol everyone in a ZIP (multipart: zip, consent=yes): JSON lines of progress and per-photo results."""
    services = services_of(request)
    form = request.state.form
    if form is None:
        raise Problem("send the ZIP as multipart/form-data (fields zip, consent)")
    parse(ZipEnrolment, {k: v for k, v in form.items()})
    upload = form.get("zip")
    if not hasattr(upload, "read") or not getattr(upload, "filename", ""):
        raise Problem("no ZIP: choose a ZIP file with one folder per person")
    folder = Path(tempfile.mkdtemp(prefix="rollcall-zip-"))
    try:
        contents = await asyncio.to_thread(unpack, upload.file, _limits(services), folder)
    except ZipRefused as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise Problem(str(exc), exc.status) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    lines = _enrol_all(services, current_user(request).username, contents, folder)
    return StreamingResponse(lines, media_type="application/x-ndjson",
                             background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))


def _refused(folder: str | None, photo: str, code: str, reason: str) -> dict:
    return {"folder": folder, "photo": photo, "code": code, "reason": reason}


async def _enrol_all(services: Services, admin: str, contents: ZipContents, folder: Path) -> AsyncIterator[bytes]:
    """The JSON lines of the whole run; the photos' folder removed at the end (or when the client goes)."""
    queue: asyncio.Queue = asyncio.Queue()
    totals = {"done": 0, "photos": contents.photos, "accepted": 0, "rejected": len(contents.refused)}

    async def work() -> None:
        try:
            for person in contents.people:
                await _enrol_person(services, admin, person, totals, queue.put_nowait)
        finally:
            queue.put_nowait(None)

    yield _line({"event": "start", "people": len(contents.people), "photos": contents.photos,
                 "refused": [_refused(r.folder, r.photo, r.code, r.reason) for r in contents.refused]})
    task = asyncio.create_task(work())
    try:
        while (item := await queue.get()) is not None:
            yield _line(item)
        await task
        services.forget_names()
        yield _line({"event": "end", **totals, "summary": f"{totals['accepted']} photo(s) enrolled of "
                     f"{len(contents.people)} person folder(s); {totals['rejected']} refused"})
    except (RollcallError, OSError, Problem) as exc:  # the database went away mid-run: said, not a broken stream
        yield _line({"event": "error", "error": str(exc).splitlines()[0]})
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        shutil.rmtree(folder, ignore_errors=True)


async def _enrol_person(services: Services, admin: str, person: PersonFolder, totals: dict, put) -> None:
    """Enrol one folder's photos; puts a ``photo`` line per photo done and the folder's ``person`` line."""
    config = services.config
    if not person.photos:  # only refused entries (listed at the start) or a name.txt: nothing to enrol
        return
    async with services.conn() as conn:
        who = await person_of(conn, person.folder, person.name)
    result = {"event": "person", "folder": person.folder, "person_id": None, "accepted": [], "rejected": []}
    shown = {path: name for name, path in person.photos}

    def tick(done: int, total: int, path: Path) -> None:
        totals["done"] += 1
        put({"event": "photo", "done": totals["done"], "total": totals["photos"], "folder": person.folder,
             "photo": shown.get(path, path.name)})

    if isinstance(who, str):
        result["rejected"] = [_refused(person.folder, name, "bad_person_id", who) for name, _ in person.photos]
        for _, path in person.photos:
            tick(0, 0, path)
    else:
        result["person_id"] = who[0]
        try:
            report = await enroll_photos(services.database_url, who[0], who[1], [p for _, p in person.photos],
                                         consent=True, consent_by=admin, pack=config.models.pack,
                                         thresholds=config.thresholds, privacy=config.privacy, progress=tick,
                                         source="import")
        except RollcallError as exc:  # e.g. the person was erased: every photo of the folder refused, said why
            result["rejected"] = [_refused(person.folder, name, "refused", str(exc)) for name, _ in person.photos]
        else:
            result["accepted"] = [{"photo": shown.get(a.path, a.path.name), "quality": round(a.quality, 3),
                                   "renewed": a.renewed} for a in report.accepted]
            result["rejected"] = [_refused(person.folder, shown.get(r.path, r.path.name), r.code, r.reason)
                                  for r in report.rejected]
    totals["accepted"] += len(result["accepted"])
    totals["rejected"] += len(result["rejected"])
    put(result)


def _line(item: dict) -> bytes:
    return (json.dumps(item, default=str) + "\n").encode("utf-8")
