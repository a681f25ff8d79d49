"""The processor's interface for the other services: what the dashboard may use without reaching into
the processor's internals (the layer contract in pyproject.toml allows ``dashboard -> processor.api``
and nothing else of the processor).

- enrolment of uploaded photos (:func:`enroll_photos`, :data:`PERSON_ID`, the id pattern a person id
  must match), used by the dashboard's people pages; the frames of a video to enrol
  (:func:`choose_frames`, :class:`FramePick`: the sharpest, most varied frames of one face);
- a camera source (:class:`CameraSource`, :class:`IngestOptions`) for the live view, which decodes a
  camera the same way the processor does (reconnect with backoff, keyframe resync).
"""

from processor.enrol_frames import FramePick, choose_frames
from processor.enroll import PERSON_ID, enroll_photos
from processor.ingest import CameraSource, IngestOptions

__all__ = ["PERSON_ID", "CameraSource", "FramePick", "IngestOptions", "choose_frames", "enroll_photos"]
