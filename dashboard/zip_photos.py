"""A ZIP of people's photos for bulk enrolment (a folder per person), unpacked safely, and the person each
folder stands for.

Layout: ``<folder>/<photo>`` for each person, where the folder is the person's id or their name (an
optional ``name.txt`` in the folder gives the display name); one enclosing folder around them all (what
zipping a folder gives) is taken off. What makes the whole ZIP refused (:class:`ZipRefused`, a 4xx): not a
ZIP, more entries than ``dashboard.max_zip_entries``, more bytes unpacked than ``max_zip_total_bytes``, no
photo at all. What refuses one entry (reported with its reason, the others go on): a path that is
absolute or climbs out (``..``), a photo outside a person's folder or in a folder within it, an encrypted
or damaged entry, a photo over ``max_zip_photo_bytes`` or ``max_image_pixels``, a file that is no image.

Nothing is written under a name from the ZIP: each photo is saved as ``<n>/<nn>-<safe name>`` in a folder
of our own, so a hostile name cannot reach anywhere else; every read is bounded by the limits, not by the
sizes the ZIP declares (a ZIP bomb stops there).
"""

from __future__ import annotations

import re
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from dashboard.limits import UploadRefused, check_image
from processor.api import PERSON_ID

NAME_FILE = "name.txt"
IGNORED = ("__macosx", "thumbs.db", "desktop.ini")  # and any name starting with "." (.DS_Store, ._x.jpg)


class ZipRefused(UploadRefused):
    """The whole ZIP is refused (one line, a 4xx)."""


@dataclass(frozen=True)
class ZipLimits:
    entries: int
    photo_bytes: int
    total_bytes: int
    image_pixels: int


@dataclass(frozen=True)
class Refusal:
    folder: str | None
    photo: str
    code: str
    reason: str


@dataclass
class PersonFolder:
    folder: str  # as named in the ZIP
    saved_in: Path  # a folder of our own (numbered), never named from the ZIP
    photos: list[tuple[str, Path]] = field(default_factory=list)  # (name in the ZIP, where it was saved)
    name: str | None = None  # from name.txt


@dataclass
class ZipContents:
    people: list[PersonFolder]
    refused: list[Refusal]

    @property
    def photos(self) -> int:
        return sum(len(p.photos) for p in self.people)


def entry_parts(name: str) -> list[str] | None:
    """The path of a ZIP entry as its parts, or None when it is unsafe (absolute, a drive, ``..``, control
    characters). Backslashes count as separators (ZIPs made on Windows)."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or not name.isprintable():
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return None if ".." in parts else parts


def _ignored(name: str) -> bool:
    """What zip tools add beside the photos; an unsafe path is never ignored (it is refused, said)."""
    parts = entry_parts(name)
    return parts is not None and any(p.startswith(".") or p.lower() in IGNORED for p in parts)


def _strip_enclosing_folder(paths: list[list[str]]) -> list[list[str]]:
    """``top/<person>/<photo>`` for every file → ``<person>/<photo>`` (one folder zipped whole)."""
    tops = {p[0] for p in paths}
    if len(tops) == 1 and all(len(p) >= 3 for p in paths):
        return [p[1:] for p in paths]
    return paths


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[-80:] or "photo"


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes | str:
    """The entry's bytes (at most ``limit``), or the reason it cannot be read."""
    if info.flag_bits & 0x1:
        return "encrypted: the ZIP must not have a password"
    if info.file_size > limit:
        return f"too large: {info.file_size} bytes, at most {limit} (dashboard.max_zip_photo_bytes)"
    try:
        with archive.open(info) as handle:
            data = handle.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError, ValueError) as exc:
        return f"damaged or unsupported entry ({type(exc).__name__}: {str(exc)[:80]})"
    if len(data) > limit:
        return f"too large: over {limit} bytes (dashboard.max_zip_photo_bytes)"
    return data


def _open(file: IO[bytes], limits: ZipLimits) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError):
        raise ZipRefused("the upload is not a ZIP file (or it is damaged): zip one folder per person") from None
    infos = archive.infolist()
    if len(infos) > limits.entries:
        raise ZipRefused(f"the ZIP has {len(infos)} entries: at most {limits.entries} (dashboard.max_zip_entries)", 413)
    files = [i for i in infos if not i.is_dir() and not _ignored(i.filename)]
    declared = sum(i.file_size for i in files)
    if declared > limits.total_bytes:
        raise ZipRefused(f"the ZIP unpacks to {declared} bytes: at most {limits.total_bytes} "
                         "(dashboard.max_zip_total_bytes)", 413)
    if not files:
        raise ZipRefused("the ZIP holds no photos: zip one folder per person (named by person id or name) "
                         "with their photos in it")
    return archive, files


def unpack(file: IO[bytes], limits: ZipLimits, into: Path) -> ZipContents:
    """The people's folders of the ZIP ``file``, their photos saved under ``into`` (blocking: run it in a
    worker thread). Raises :class:`ZipRefused` for the whole ZIP."""
    archive, files = _open(file, limits)
    refused: list[Refusal] = []
    people: dict[str, PersonFolder] = {}
    safe = [(info, entry_parts(info.filename)) for info in files]
    for info, _ in [(i, p) for i, p in safe if p is None]:
        refused.append(Refusal(None, info.filename[:200], "unsafe_path", "the path leaves the ZIP's folder "
                               "(absolute, or '..'): refused"))
    kept = [(i, p) for i, p in safe if p is not None]
    total = 0
    with archive:
        for info, parts in zip([i for i, _ in kept], _strip_enclosing_folder([p for _, p in kept])):
            shown = "/".join(parts)
            if len(parts) != 2:
                where = "not in a person's folder" if len(parts) == 1 else "in a folder within a person's folder"
                refused.append(Refusal(parts[0] if len(parts) > 2 else None, shown, "not_in_person_folder",
                                       f"{where}: put photos directly in <person id or name>/"))
                continue
            data = _read_entry(archive, info, limits.photo_bytes)
            if isinstance(data, str):
                refused.append(Refusal(parts[0], parts[1], "unreadable", data))
                continue
            total += len(data)
            if total > limits.total_bytes:
                raise ZipRefused(f"the ZIP unpacks to over {limits.total_bytes} bytes (dashboard.max_zip_total_bytes)", 413)
            _add(people, parts, data, into, limits, refused)
    if not people and not refused:
        raise ZipRefused("the ZIP holds no photos in person folders")
    return ZipContents(list(people.values()), refused)


def _add(people: dict[str, PersonFolder], parts: list[str], data: bytes, into: Path, limits: ZipLimits,
         refused: list[Refusal]) -> None:
    """One entry of a person's folder: their name (name.txt) or a photo, checked and saved."""
    folder, photo = parts
    person = people.get(folder)
    if person is None:
        person = people[folder] = PersonFolder(folder, into / str(len(people) + 1))
        person.saved_in.mkdir()
    if photo.lower() == NAME_FILE:
        lines = [ln.strip() for ln in data.decode("utf-8", errors="replace").splitlines() if ln.strip()]
        person.name = lines[0][:200] if lines else None
        return
    refusal = check_image(data, limits.image_pixels)  # the header only, before anything decodes it
    if refusal:
        refused.append(Refusal(folder, photo, *refusal))
        return
    path = person.saved_in / f"{len(person.photos):03d}-{_safe_name(photo)}"
    path.write_bytes(data)
    person.photos.append((photo, path))


def slug_of(name: str) -> str:
    """A person id made from a name ("Jacinda Ardern" → "jacinda-ardern"); "" when nothing is left."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:64].strip("-")


async def person_of(conn, folder: str, name: str | None) -> tuple[str, str | None] | str:
    """(person id, display name to set or None) for a ZIP folder, or the reason it names nobody: a valid id
    is the id; else a name matching one person's display name is that person; else a new person with an
    id made from the name."""
    if PERSON_ID.match(folder):
        return folder, name
    rows = await conn.fetch("""SELECT id FROM person WHERE lower(display_name) = lower($1)
                               AND pseudonymised_at IS NULL ORDER BY id LIMIT 2""", folder.strip())
    if len(rows) == 1:
        return rows[0]["id"], name
    if len(rows) > 1:
        return f"several people are called {folder!r}: name the folder by person id"
    person_id = slug_of(folder)
    if not PERSON_ID.match(person_id):
        return f"folder name {folder!r} is neither a person id nor a name an id can be made from"
    taken = await conn.fetchval("SELECT display_name FROM person WHERE id = $1", person_id)
    if taken is not None:
        return f"the id {person_id!r} made from {folder!r} is another person's ({taken}): name the folder by person id"
    return person_id, name or folder.strip()
