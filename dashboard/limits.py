"""Request limits of the dashboard, enforced before anything is parsed: the body counted as it streams
in (:class:`BodyLimit`; a chunked body has no Content-Length to trust) and an uploaded photo's pixels read
from its header (:func:`check_image`) before OpenCV decodes it (OpenCV's own cap is 2^30 pixels: a
small, highly compressed file could ask for gigabytes)."""

from __future__ import annotations

import csv
import io

from starlette.responses import JSONResponse


class UploadRefused(Exception):
    """A whole upload refused (a ZIP of photos, a video): the message says why in one line; ``status`` is
    the HTTP status (4xx) the route answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class BodyTooLarge(Exception):
    """A request body over its limit (raised from ``receive`` while it streams in)."""


class BodyLimit:
    """Counts each request's body as it arrives, chunked or not: a declared Content-Length over the limit
    is answered 413 at once, unread; a body that grows past it stops the handler reading it
    (:class:`BodyTooLarge`, answered 413 by the guard). Multipart uploads get ``max_upload_bytes`` (or the
    path's own in ``upload_limits``), everything else ``max_body_bytes``."""

    def __init__(self, app, *, max_body_bytes: int, max_upload_bytes: int, upload_limits: dict[str, int] | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self.upload_limits = dict(upload_limits or {})  # path -> its own multipart limit (the bulk ZIP upload)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        multipart = headers.get(b"content-type", b"").startswith(b"multipart/form-data")
        limit = self.upload_limits.get(scope.get("path", ""), self.max_upload_bytes) if multipart else self.max_body_bytes
        declared = headers.get(b"content-length", b"")
        if declared and (not declared.isdigit() or int(declared) > limit):
            status = 413 if declared.isdigit() else 400
            message = f"the request body is over {limit} bytes" if status == 413 else "Content-Length is not a number"
            response = JSONResponse({"error": message}, status_code=status, headers={"Connection": "close"})
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(f"the request body is over {limit} bytes")
            return message

        await self.app(scope, counted, send)


def check_image(data: bytes, max_pixels: int) -> tuple[str, str] | None:
    """(code, reason) an uploaded photo is refused for before it is decoded: ``not_an_image`` (nothing
    Pillow recognises; the code processor/enroll.py gives too) or ``too_many_pixels`` (over ``max_pixels``),
    else None. Only the header is read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        return "too_many_pixels", f"far more than {max_pixels} pixels (dashboard.max_image_pixels)"
    except (UnidentifiedImageError, OSError, ValueError):
        return "not_an_image", "not an image this system can read (JPEG, PNG, BMP, WebP, TIFF)"
    if width * height > max_pixels:
        return "too_many_pixels", (f"{width}x{height} is {width * height} pixels: at most {max_pixels} "
                                   "(dashboard.max_image_pixels)")
    return None


def only_courses(data: bytes, fmt: str, courses: frozenset[str]) -> bytes:
    """A student export (consumers/exports.py: one row per session, a ``course`` column) cut down to the
    rows of ``courses``: faculty see a student's attendance in their own courses only."""
    if fmt == "csv":
        text = data.decode("utf-8-sig")
        rows = list(csv.reader(io.StringIO(text)))
        column = rows[0].index("course")
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerows([rows[0]] + [r for r in rows[1:] if r[column] in courses])
        return ("\ufeff" + out.getvalue()).encode("utf-8")
    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(data))
    sheet = book.active
    header = next(r[0].row for r in sheet.iter_rows() if any(c.value == "course" for c in r) and r[0].value == "session_id")
    column = next(c.column for c in sheet[header] if c.value == "course")
    for row in range(sheet.max_row, header, -1):
        if sheet.cell(row=row, column=column).value not in courses:
            sheet.delete_rows(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
