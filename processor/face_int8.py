"""An int8 variant of the face embedder, and the check that decides whether it may be offered: it is built
(onnxruntime ``quantize_static``, QDQ, per-channel int8 weights, MinMax calibration on aligned faces of the
enrolment photos), measured against fp32 on the photo set (every identity's other photo or door variant
identified against a gallery of the enrolment photos, with the pack's threshold and margin), and refused with
a one-line reason when it loses an identity, or loses more than half of fp32's room between the closest
different-person pair and the match threshold.

Measured here (2 cores shared with other runs; the open pack's SFace, 38 faces of 25 people, 20 probes): the
variant keeps all 20 identities, the closest different-person pair 0.318 (fp32 0.337, threshold 0.40), lowest
cosine to fp32 0.972: accepted by this check; speed 1.6x in that run but 1.06x in another (calibrated on all
non-door photos, different people up to 0.379), so the ratio needs a quiet machine. A processor running the
variant matches against enrolments `rollcall enroll` embedded in fp32, so the check also matches int8 probes
against fp32 enrolments (all 20 kept, different people up to 0.338). Offered as ``[models]
face_embedder_precision = "int8"`` (processor/face_precision.py). ``quantize_dynamic`` is 4.9x slower
(ConvInteger). YuNet (0.2 MB) is not worth quantising.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from processor import model_packs as mp
from processor.gallery import Gallery, match_settings
from processor.model_catalogue import PHOTOS_DIR
from processor.photo_variants import VARIANTS
from processor.stages import faces as F

Embed = Callable[[np.ndarray], np.ndarray]  # NCHW float32 RGB blob -> (N, D) L2-normalised


@dataclass(frozen=True)
class PhotoFace:
    name: str
    person: str
    blob: np.ndarray  # (3, 112, 112) float32 RGB 0..255, as the embedder takes it


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str  # one line
    figures: dict


def photo_faces(pack: mp.LoadedPack) -> list[PhotoFace]:
    """One aligned face per single-person photo of the pack and per photo variant (a group photo is skipped)."""
    people = {p.name: p.person for p in pack.spec.photos if p.name in _SINGLE}
    people.update({v.name: v.person for v in VARIANTS})
    detector = F.FaceDetector(pack, input_size=None)
    faces = []
    for name, person in sorted(people.items()):
        image = cv2.imread(str(PHOTOS_DIR / name), cv2.IMREAD_COLOR)
        found = detector.detect([image])[0] if image is not None else []
        if found:
            crop = F.align(image, found[0].landmarks)
            faces.append(PhotoFace(name, person, crop[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)))
    return faces


_SINGLE = {"macron_2014.jpg", "macron_2025.jpg", "ardern_2018.jpg", "ardern_2022.jpg", "obama_senate.jpg",
           "obama_oval.jpg", "obama_congress.jpg", "obama_blueroom.jpg", "sunak.jpg", "biden.jpg"}


def enrolled_and_probes(faces: Sequence[PhotoFace]) -> tuple[list[int], list[int]]:
    """Indices: the first photo of each person (enrolled) and every other photo (probes); door variants probe."""
    enrolled: dict[str, int] = {}
    for i, face in enumerate(faces):
        if not face.name.endswith("_door.png"):
            enrolled.setdefault(face.person, i)
    return list(enrolled.values()), [i for i in range(len(faces)) if i not in enrolled.values()]


def int8_embedder(model_file: Path, calibration: Sequence[np.ndarray], input_name: str) -> bytes:
    # Imported here: onnxruntime.quantization is heavy and only building the variant needs it
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Blobs(CalibrationDataReader):
        def __init__(self) -> None:
            self._blobs = iter(calibration)

        def get_next(self):
            blob = next(self._blobs, None)
            return None if blob is None else {input_name: blob[None]}

    with tempfile.TemporaryDirectory(prefix="rollcall-face-int8-") as tmp:
        prepared, quantised = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(model_file), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(quantised), Blobs(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        return quantised.read_bytes()


def session_embed(session, input_name: str) -> Embed:
    def embed(blob: np.ndarray) -> np.ndarray:
        return F.l2_normalise(np.concatenate([session.run(None, {input_name: blob[i:i + 8]})[0]
                                              for i in range(0, len(blob), 8)]))
    return embed


def photo_figures(faces: Sequence[PhotoFace], embed: Embed, threshold: float, margin: float) -> dict:
    """On the photo set: identities found (probe -> enrolled person), strangers accepted, cosine ranges, ms a face."""
    blob = np.stack([f.blob for f in faces])
    embed(blob[:1])  # warm-up
    started = time.perf_counter()
    e = embed(blob)
    ms = 1000.0 * (time.perf_counter() - started) / len(faces)
    enrolled, probes = enrolled_and_probes(faces)
    gallery = Gallery("figures", [faces[i].person for i in enrolled], e[enrolled], threshold=threshold, margin=margin)
    found = {faces[i].name: m.person_id for i, m in zip(probes, gallery.match(e[probes]))}
    cos = e @ e.T
    pairs = [(i, j) for i in range(len(faces)) for j in range(i + 1, len(faces))]
    same = [cos[i, j] for i, j in pairs if faces[i].person == faces[j].person]
    diff = [cos[i, j] for i, j in pairs if faces[i].person != faces[j].person]
    return {"faces": len(faces), "probes": len(probes), "identified": found, "ms_per_face": round(ms, 2),
            "correct": sum(found[faces[i].name] == faces[i].person for i in probes),
            "same_min": round(float(min(same)), 3), "diff_max": round(float(max(diff)), 3), "embeddings": e}


def mixed_figures(faces: Sequence[PhotoFace], fp32: dict, int8: dict, threshold: float, margin: float) -> dict:
    """int8 probes against a gallery of fp32 enrolments: what a processor running the variant meets, since
    `rollcall enroll` stores fp32 embeddings (identities found, closest different-person pair across the two)."""
    enrolled, probes = enrolled_and_probes(faces)
    gallery = Gallery("mixed", [faces[i].person for i in enrolled], fp32["embeddings"][enrolled],
                      threshold=threshold, margin=margin)
    found = {faces[i].name: m.person_id for i, m in zip(probes, gallery.match(int8["embeddings"][probes]))}
    cos = int8["embeddings"] @ fp32["embeddings"].T
    diff = [cos[i, j] for i in range(len(faces)) for j in range(len(faces)) if faces[i].person != faces[j].person]
    return {"identified": found, "correct": sum(found[faces[i].name] == faces[i].person for i in probes),
            "probes": len(probes), "diff_max": round(float(max(diff)), 3)}


def _refusal(fp32: dict, int8: dict, threshold: float, against: str) -> str | None:
    """Why ``int8`` (probes against ``against`` enrolments) is refused next to fp32's figures; None: it is not."""
    lost = sorted(name for name, person in fp32["identified"].items()
                  if person is not None and int8["identified"].get(name) != person)
    if lost:
        return (f"int8 face embedder refused: loses {len(lost)} identities against {against} enrolments "
                f"({', '.join(lost[:4])})")
    if int8["correct"] < fp32["correct"]:
        return (f"int8 face embedder refused: {int8['correct']} of {int8['probes']} probes right against {against} "
                f"enrolments, fp32 {fp32['correct']}")
    if threshold - int8["diff_max"] < (threshold - fp32["diff_max"]) / 2:
        return (f"int8 face embedder refused: different people up to cosine {int8['diff_max']:.3f} against "
                f"{against} enrolments (fp32 {fp32['diff_max']:.3f}): less than half of fp32's room under the "
                f"threshold {threshold:g} left")
    return None


def judge(fp32: dict, int8: dict, threshold: float, margin: float, mixed: dict | None = None) -> Verdict:
    """Accept the variant only if it identifies every probe fp32 identifies and keeps at least half of fp32's room
    between the closest different-person pair and the threshold (where a stranger would be taken for someone),
    both with int8 enrolments and (``mixed``) with fp32 ones; the reason is one line either way."""
    agreement = float(np.min(np.sum(fp32["embeddings"] * int8["embeddings"], axis=1)))
    shown = ("embeddings", "identified")
    figures = {"fp32": {k: v for k, v in fp32.items() if k not in shown},
               "int8": {k: v for k, v in int8.items() if k not in shown},
               "min_cosine_to_fp32": round(agreement, 4),
               "speedup": round(fp32["ms_per_face"] / int8["ms_per_face"], 2),
               "threshold": threshold, "margin": margin}
    if mixed is not None:
        figures["int8_vs_fp32_enrolments"] = {k: v for k, v in mixed.items() if k not in shown}
    reason = _refusal(fp32, int8, threshold, "int8") or (mixed and _refusal(fp32, mixed, threshold, "fp32"))
    if reason:
        return Verdict(False, reason, figures)
    against_fp32 = f", {mixed['diff_max']:.3f} against fp32 enrolments" if mixed is not None else ""
    return Verdict(True, f"int8 face embedder keeps all {int8['correct']} identities, different people up to "
                         f"{int8['diff_max']:.3f}{against_fp32} (fp32 {fp32['diff_max']:.3f}), {figures['speedup']}x",
                   figures)


def check_face_int8(pack: mp.LoadedPack, thresholds=None, variant: bytes | None = None) -> Verdict:
    """Build (unless given) the int8 embedder and judge it against fp32 on the photo set."""
    return build_and_check(pack, thresholds, variant)[1]


def build_and_check(pack: mp.LoadedPack, thresholds=None, variant: bytes | None = None) -> tuple[bytes, Verdict]:
    """The int8 embedder (built unless given, calibrated on the enrolment photos' aligned faces) and its verdict."""
    spec = pack.model("face_embedder")
    if spec.arch != "sface":
        return b"", Verdict(False, f"int8 face embedder: pack '{pack.name}' ({spec.arch}) is not checked here", {})
    faces = photo_faces(pack)
    if not faces:
        return b"", Verdict(False, "int8 face embedder refused: no faces found in the photo set (run `rollcall "
                                   "models fetch`)", {})
    threshold, margin = match_settings(pack.name, thresholds)
    enrolled, _ = enrolled_and_probes(faces)
    data = variant if variant is not None else int8_embedder(pack.path("face_embedder"),
                                                             [faces[i].blob for i in enrolled], spec.input_name)
    fp32 = photo_figures(faces, session_embed(mp.create_session(pack.path("face_embedder")), spec.input_name),
                         threshold, margin)
    int8 = photo_figures(faces, session_embed(mp.create_session(data), spec.input_name), threshold, margin)
    return data, judge(fp32, int8, threshold, margin, mixed_figures(faces, fp32, int8, threshold, margin))
