"""The unknown-face review queue (admin): the list, a face's crop, accepting or rejecting a face."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from consumers import api as attendance_api
from dashboard import queries
from dashboard.forms import ReviewAcceptance, parse
from dashboard.guard import RouteTable
from dashboard.services import Problem, services_of
from dashboard.web import ADMIN, body, current_user, done, render

ROUTES = RouteTable()


@ROUTES.page("/review", ADMIN)
async def review_page(request: Request) -> Response:
    """The unknown-face review queue."""
    async with services_of(request).conn() as conn:
        rows = await queries.review_queue(conn)
    return render(request, "review.html", {"items": rows})


@ROUTES.api("/api/review", ADMIN)
async def review_api(request: Request) -> Response:
    """Pending review items (?status=pending|accepted|rejected)."""
    status = request.query_params.get("status", "pending")
    if status not in ("pending", "accepted", "rejected"):
        raise Problem(f"status {status!r} is not one of pending, accepted, rejected")
    async with services_of(request).conn() as conn:
        return JSONResponse({"items": await queries.review_queue(conn, status=status)})


@ROUTES.api("/api/review/{review_id:int}/crop.jpg", ADMIN)
async def review_crop(request: Request) -> Response:
    """The best crop of an unknown face (JPEG)."""
    review_id = request.path_params["review_id"]
    async with services_of(request).conn() as conn:
        data = await queries.review_crop(conn, review_id)  # None once expired
        if data is not None:  # who looked at which face: audit_log 'review.crop_view'
            await attendance_api.record_audit(conn, current_user(request).username, "review.crop_view", str(review_id))
    if data is None:
        raise Problem("no crop for this review item", 404)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})


@ROUTES.api("/api/review/{review_id:int}/accept", ADMIN, methods=("POST",))
async def review_accept(request: Request) -> Response:
    """Accept a face: {person_id, name?, new_person: bool, consent: yes}; its embedding becomes a face_enrolment."""
    services, user = services_of(request), current_user(request)
    fields = parse(ReviewAcceptance, await body(request))
    async with services.conn() as conn:
        try:
            result = await queries.accept_review(
                conn, request.path_params["review_id"], person_id=fields.person_id, name=fields.name or None,
                new_person=fields.new_person, actor=user.username, consent_note=fields.note or None,
                retention_days=services.config.privacy.enrolment_retention_days)
        except queries.ReviewProblem as exc:
            raise Problem(str(exc), exc.status) from None
    services.forget_names()
    return done(request, result, f"face accepted as {fields.person_id}")


@ROUTES.api("/api/review/{review_id:int}/reject", ADMIN, methods=("POST",))
async def review_reject(request: Request) -> Response:
    """Reject a face (its crop is deleted)."""
    async with services_of(request).conn() as conn:
        try:
            result = await queries.reject_review(conn, request.path_params["review_id"],
                                                 actor=current_user(request).username)
        except queries.ReviewProblem as exc:
            raise Problem(str(exc), exc.status) from None
    return done(request, result, "face rejected")
