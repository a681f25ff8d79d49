"""The bulk-enrolment ZIP, unpacked (dashboard/zip_photos.py): people's folders and their photos saved under
names of our own, one enclosing folder taken off, hostile paths and oversized or damaged entries refused
one by one with a reason, and a ZIP that is not one, too big or a bomb refused whole. No database."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from dashboard.zip_photos import ZipLimits, ZipRefused, entry_parts, slug_of, unpack

LIMITS = ZipLimits(entries=50, photo_bytes=200_000, total_bytes=1_000_000, image_pixels=1_000_000)


def _png(size=(32, 32), colour=(200, 150, 120)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def _zip(entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> io.BytesIO:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    out.seek(0)
    return out


def test_folders_become_people_and_photos_are_saved_under_our_own_names(tmp_path: Path):
    contents = unpack(_zip({"class/macron/a.png": _png(), "class/macron/b.png": _png((40, 40)),
                            "class/Jacinda Ardern/one.png": _png(), "class/Jacinda Ardern/name.txt": b"\nJacinda\n",
                            "class/__MACOSX/._a.png": b"junk", "class/.DS_Store": b"junk"}), LIMITS, tmp_path)
    assert contents.refused == []
    by_folder = {p.folder: p for p in contents.people}
    assert sorted(by_folder) == ["Jacinda Ardern", "macron"]  # the enclosing "class/" taken off
    assert [name for name, _ in by_folder["macron"].photos] == ["a.png", "b.png"]
    assert by_folder["Jacinda Ardern"].name == "Jacinda"
    saved = [path for p in contents.people for _, path in p.photos]
    assert all(path.is_file() and path.parent.parent == tmp_path for path in saved)
    assert saved[0].read_bytes() == _png()


def test_hostile_paths_and_bad_entries_are_refused_one_by_one_with_a_reason(tmp_path: Path):
    contents = unpack(_zip({"../evil/x.png": _png(), "/etc/cron.d/x.png": _png(), "c:\\win\\x.png": _png(),
                            "ok/..\\..\\x.png": _png(), "loose.png": _png(), "p1/deeper/x.png": _png(),
                            "p1/text.png": b"not an image at all", "p1/big.png": b"\0" * 300_000,
                            "p1/good.png": _png(), "p1/huge.png": _png((1100, 1000))}), LIMITS, tmp_path)
    codes = {r.photo: r.code for r in contents.refused}
    assert [codes[n] for n in ("../evil/x.png", "/etc/cron.d/x.png", "c:\\win\\x.png", "ok/..\\..\\x.png")] == [
        "unsafe_path"] * 4
    assert codes["loose.png"] == codes["p1/deeper/x.png"] == "not_in_person_folder"
    assert codes["text.png"] == "not_an_image" and codes["huge.png"] == "too_many_pixels"
    assert codes["big.png"] == "unreadable" and "too large" in next(r.reason for r in contents.refused
                                                                      if r.photo == "big.png")
    assert [(p.folder, [n for n, _ in p.photos]) for p in contents.people] == [("p1", ["good.png"])]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["000-good.png", "1"]  # nothing else written


@pytest.mark.parametrize("upload, limits, message, status", [
    (io.BytesIO(b"PK\x03\x04 not really a zip"), LIMITS, "not a ZIP file", 400),
    (io.BytesIO(b""), LIMITS, "not a ZIP file", 400),
    (_zip({f"p/{i}.png": b"x" for i in range(51)}), LIMITS, "51 entries: at most 50", 413),
    (_zip({"p/readme.txt/": b"", ".hidden": b"x"}), LIMITS, "holds no photos", 400),
    # a bomb: 50 MB of zeros in a few kB, declared honestly (refused before anything is read)
    (_zip({f"p/{i}.png": b"\0" * 10_000_000 for i in range(5)}), LIMITS, "unpacks to 50000000 bytes", 413),
])
def test_a_zip_that_is_not_one_too_big_or_a_bomb_is_refused_whole(tmp_path, upload, limits, message, status):
    with pytest.raises(ZipRefused) as refused:
        unpack(upload, limits, tmp_path)
    assert message in str(refused.value) and refused.value.status == status
    assert list(tmp_path.iterdir()) == []


def test_a_bomb_that_lies_about_its_size_stops_at_the_photo_limit(tmp_path: Path):
    upload = _zip({"p/bomb.png": b"\0" * 5_000_000})
    data = bytearray(upload.getvalue())
    # rewrite the declared uncompressed size (local header and central directory) to 100 bytes
    for offset in (22, data.rindex(b"PK\x01\x02") + 24):
        data[offset:offset + 4] = (100).to_bytes(4, "little")
    contents = unpack(io.BytesIO(bytes(data)), LIMITS, tmp_path)
    # zipfile reads no more than the declared 100 bytes, whose CRC then does not match: a damaged entry
    assert [(r.code, r.reason.split(" (")[0]) for r in contents.refused] == [("unreadable", "damaged or unsupported entry")]
    assert contents.people == [] and not any(f.is_file() for f in tmp_path.rglob("*"))


def test_entry_paths_and_slugs():
    assert entry_parts("a/./b//c.png") == ["a", "b", "c.png"]
    assert entry_parts("a\\b.png") == ["a", "b.png"]
    assert entry_parts("a/../../b.png") is None and entry_parts("a/\x00.png") is None
    assert slug_of("Jacinda  Ardern") == "jacinda-ardern" and slug_of("Zoë O'Brien") == "zoe-o-brien"
    assert slug_of("日本") == ""
