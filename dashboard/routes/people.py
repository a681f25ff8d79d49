"""People (admin): the list, enrolment with photos and consent, erasure."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from consumers import api as attendance_api
from dashboard import queries
from dashboard.forms import Enrolment, parse
from dashboard.guard import RouteTable
from dashboard.limits import check_image
from dashboard.services import Problem, services_of
from dashboard.web import ADMIN, current_user, done, render
from processor.api import enroll_photos

ROUTES = RouteTable()


@ROUTES.page("/people", ADMIN)
async def people_page(request: Request) -> Response:
    """People: enrol with photos and consent, list, erase."""
    async with services_of(request).conn() as conn:
        rows = await queries.people(conn, search=request.query_params.get("q") or None)
    return render(request, "people.html", {"people": rows, "q": request.query_params.get("q", "")})


@ROUTES.api("/api/people", ADMIN)
async def people_api(request: Request) -> Response:
    """Everyone the database knows (?q= to search by id or name), with enrolment counts."""
    async with services_of(request).conn() as conn:
        return JSONResponse({"people": await queries.people(conn, search=request.query_params.get("q") or None)})


@ROUTES.api("/api/people", ADMIN, methods=("POST",))
async def enrol_api(request: Request) -> Response:
    """Enrol a person (multipart: person_id, name, consent=yes, photos[]): the CLI's checks, a reason per photo."""
    services, user = services_of(request), current_user(request)
    form = request.state.form
    if form is None:
        raise Problem("send the photos as multipart/form-data (fields person_id, name, consent, photos)")
    fields = parse(Enrolment, {k: v for k, v in form.items()})
    person_id, name = fields.person_id.strip(), fields.name.strip() or None
    uploads = [f for f in form.getlist("photos") if hasattr(f, "read") and getattr(f, "filename", "")]
    if not uploads:
        raise Problem("no photos: choose at least one photo of the person")
    config = services.config
    with tempfile.TemporaryDirectory(prefix="rollcall-enrol-") as folder:
        paths, refused = await _save_photos(uploads, Path(folder), config.dashboard.max_image_pixels)
        if not paths:
            return JSONResponse({"person_id": person_id, "accepted": [], "rejected": refused,
                                 "summary": "no photo could be used"}, status_code=422)
        report = await enroll_photos(services.database_url, person_id, name, paths, consent=True,
                                     consent_by=user.username, pack=config.models.pack, thresholds=config.thresholds,
                                     privacy=config.privacy, source="dashboard")
    services.forget_names()

    def shown(path: Path) -> str:
        return path.name[3:]  # without the "NN-" the photo was saved under

    result = {"person_id": person_id, "model_pack": report.model_pack, "summary": report.summary(),
              "accepted": [{"photo": shown(a.path), "enrolment_id": a.enrolment_id, "quality": round(a.quality, 3),
                            "renewed": a.renewed} for a in report.accepted],
              "rejected": refused + [{"photo": shown(r.path), "code": r.code, "reason": r.reason}
                                     for r in report.rejected]}
    return JSONResponse(result, status_code=201 if report.accepted else 422)


async def _save_photos(uploads: list, folder: Path, max_pixels: int) -> tuple[list[Path], list[dict]]:
    """The uploads that may be decoded, saved in ``folder`` under safe names ("NN-name"), and a reason for
    each of the others."""
    paths, refused = [], []
    for index, upload in enumerate(uploads):
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(upload.filename).name)[:80] or "photo"
        data = await upload.read()
        refusal = check_image(data, max_pixels)  # before OpenCV decodes it
        if refusal:
            refused.append({"photo": safe, "code": refusal[0], "reason": refusal[1]})
            continue
        path = folder / f"{index:02d}-{safe}"
        path.write_bytes(data)
        paths.append(path)
    return paths, refused


@ROUTES.api("/api/people/{person_id}/erase", ADMIN, methods=("POST",))
async def erase_api(request: Request) -> Response:
    """Erase a person (face data and identity; attendance kept under a pseudonym when the policy says so)."""
    services, user = services_of(request), current_user(request)
    person_id = request.path_params["person_id"]
    privacy = services.config.privacy
    async with services.conn() as conn:
        if not await queries.person_exists(conn, person_id):
            raise Problem(f"no person {person_id!r}", 404)
        # erase_person removes their dashboard accounts too (and pseudonymises the audit rows naming them)
        result = await attendance_api.erase_person(conn, person_id, pseudonymise=privacy.pseudonymise_attendance_on_erase,
                                                   actor=user.username, privacy=privacy)
    services.forget_names()
    payload = result if isinstance(result, dict) else {"result": str(result)} if result is not None else {}
    return done(request, {"person_id": person_id, **payload}, f"{person_id} erased")
