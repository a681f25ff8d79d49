"""Enrolment from a short video or a webcam capture (admin): the page with the webcam's live preview and
recorder (dashboard/static/capture.js) and the upload of a video file, and the API both post to.

The video is decoded and sampled (:mod:`dashboard.enrol_video`), every sampled frame goes through the
enrolment photo rule, and the sharpest, most varied frames are picked (:func:`processor.api.choose_frames`);
those are enrolled like photos (source ``dashboard``, consent recorded with the admin's name): embeddings,
not frames, unless ``privacy.keep_enrolment_photos``. The answer gives a reason for every frame not
enrolled. Not a video, too long, too large: 4xx with the reason; no frame with one good face: 422."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import cv2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dashboard import queries
from dashboard.enrol_video import VIDEO_TYPES, VideoLimits, VideoRefused, sample_frames
from dashboard.forms import Enrolment, parse
from dashboard.guard import RouteTable
from dashboard.services import Problem, services_of
from dashboard.web import ADMIN, current_user, render
from processor.api import PERSON_ID, FramePick, choose_frames, enroll_photos

ROUTES = RouteTable()
ENROL_VIDEO_PATH = "/api/people/enrol-video"
JPEG_QUALITY = 95  # the picked frames are enrolled as JPEG files: near-lossless, so the gate sees the same face


@ROUTES.page("/people/capture", ADMIN)
async def capture_page(request: Request) -> Response:
    """Enrol one person from the webcam (live preview, a few seconds recorded) or from a video file."""
    d = services_of(request).config.dashboard
    person_id = request.query_params.get("person", "")
    async with services_of(request).conn() as conn:
        people = await queries.people(conn)
    return render(request, "people_capture.html", {
        "person_id": person_id, "people": [p for p in people if not p["pseudonymised_at"]],
        "video_types": ",".join(VIDEO_TYPES), "max_seconds": d.max_enrol_video_s, "frames": d.enrol_video_frames})


@ROUTES.api(ENROL_VIDEO_PATH, ADMIN, methods=("POST",))
async def enrol_video_api(request: Request) -> Response:
    """Enrol a person from a video (multipart: person_id, name, consent=yes, video): the frames picked, the
    enrolment of each, a reason for every other frame."""
    services, user = services_of(request), current_user(request)
    form = request.state.form
    if form is None:
        raise Problem("send the video as multipart/form-data (fields person_id, name, consent, video)")
    fields = parse(Enrolment, {k: v for k, v in form.items() if k != "video"})
    person_id, name = fields.person_id.strip(), fields.name.strip() or None
    if not PERSON_ID.match(person_id):
        raise Problem(f"person id {person_id!r} is not valid: use letters, digits, '_', '.', '-' (up to 64)")
    upload = form.get("video")
    if not hasattr(upload, "read") or not getattr(upload, "filename", ""):
        raise Problem("no video: record from the webcam or choose a short video of the person's face")
    d, config = services.config.dashboard, services.config
    limits = VideoLimits(seconds=d.max_enrol_video_s, sample_fps=d.enrol_video_sample_fps, image_pixels=d.max_image_pixels)
    try:
        frames = await asyncio.to_thread(sample_frames, upload.file, limits)
    except VideoRefused as exc:
        raise Problem(str(exc), exc.status) from None
    pick = await asyncio.to_thread(choose_frames, frames, d.enrol_video_frames, pack=config.models.pack,
                                   thresholds=config.thresholds)
    if not pick.picked:
        raise Problem(f"no frame of the {len(frames)} sampled shows one clear face ({_commonest_reason(pick)}): "
                      "face the camera, in good light, alone", 422)
    with tempfile.TemporaryDirectory(prefix="rollcall-video-") as folder:
        paths = _save_picked(pick, frames, Path(folder))
        report = await enroll_photos(services.database_url, person_id, name, list(paths), consent=True,
                                     consent_by=user.username, pack=config.models.pack, thresholds=config.thresholds,
                                     privacy=config.privacy, source="dashboard")
    services.forget_names()
    return JSONResponse(_result(person_id, report, pick, paths), status_code=201 if report.accepted else 422)


def _commonest_reason(pick: FramePick) -> str:
    reasons = [r.reason for r in pick.refused]
    return max(set(reasons), key=reasons.count) if reasons else "no frames"


def _save_picked(pick: FramePick, frames: list, folder: Path) -> dict[Path, int]:
    """The picked frames written as JPEG files (what enrolment reads), each with its frame number."""
    paths = {}
    for face in pick.picked:
        path = folder / f"frame-{face.index:04d}.jpg"
        ok, data = cv2.imencode(".jpg", frames[face.index][1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if ok:
            path.write_bytes(data.tobytes())
            paths[path] = face.index
    return paths


def _result(person_id: str, report, pick: FramePick, paths: dict[Path, int]) -> dict:
    times = {f.index: f.time_s for f in pick.picked}

    def frame(path: Path) -> dict:
        return {"frame": paths[path], "time_s": times[paths[path]]}

    return {"person_id": person_id, "model_pack": report.model_pack, "frames_sampled": pick.sampled,
            "summary": f"{report.summary()}; {len(pick.picked)} of {pick.sampled} sampled frame(s) picked",
            "picked": [{"frame": f.index, "time_s": f.time_s, "sharpness": round(f.sharpness, 1),
                        "yaw_deg": round(f.yaw_deg, 1), "quality": round(f.quality, 3)} for f in pick.picked],
            "accepted": [{**frame(a.path), "enrolment_id": a.enrolment_id, "quality": round(a.quality, 3),
                          "renewed": a.renewed} for a in report.accepted],
            "rejected": [{"frame": r.index, "time_s": r.time_s, "code": r.code, "reason": r.reason} for r in pick.refused]
                        + [{**frame(r.path), "code": r.code, "reason": r.reason} for r in report.rejected]}

