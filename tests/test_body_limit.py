"""dashboard/limits.py's BodyLimit: a multipart upload gets ``max_upload_bytes``, except on a path with its own
limit (the bulk-enrolment ZIP); JSON and forms ``max_body_bytes``. A tiny app, no database."""

from __future__ import annotations

import warnings

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from dashboard.limits import BodyLimit, BodyTooLarge

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


async def _read(request):
    try:
        return PlainTextResponse(str(len(await request.body())))
    except BodyTooLarge as exc:
        return PlainTextResponse(str(exc), status_code=413)


def _client() -> TestClient:
    app = Starlette(routes=[Route("/api/people/import", _read, methods=["POST"]),
                            Route("/api/people", _read, methods=["POST"])])
    return TestClient(BodyLimit(app, max_body_bytes=1_000, max_upload_bytes=4_000,
                                upload_limits={"/api/people/import": 20_000}))


def test_the_zip_path_takes_its_own_upload_limit_and_other_uploads_keep_theirs():
    client = _client()
    upload = {"zip": ("class.zip", b"x" * 10_000, "application/zip")}
    assert client.post("/api/people/import", files=upload).status_code == 200
    refused = client.post("/api/people", files=upload)
    assert refused.status_code == 413 and "over 4000 bytes" in refused.text
    assert client.post("/api/people/import", files={"zip": ("big.zip", b"x" * 30_000, "application/zip")}
                       ).status_code == 413
    # not multipart: the small limit everywhere, the ZIP path included
    assert client.post("/api/people/import", content=b"x" * 2_000,
                       headers={"content-type": "application/json"}).status_code == 413
