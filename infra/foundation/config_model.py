"""The campus configuration's data model: every section and key, their defaults and their checks
(pydantic). Loading it from TOML and the environment is :mod:`infra.foundation.config`, which re-exports
these classes; import them from there.
"""

from __future__ import annotations

import re
import datetime as dt
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from infra.foundation.paths import PROJECT_ROOT

EMBEDDED = "embedded"
EXAMPLE_CONFIG = PROJECT_ROOT / "infra" / "rollcall.example.toml"

Slug = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in a campus config must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteConfig(_Strict):
    name: str = "Rollcall campus"
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as 'Europe/Paris'") from None
        return value


class TopicConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")
    partitions: int = Field(default=6, ge=1, le=1000)
    replication_factor: int = Field(default=1, ge=1, le=10)
    compacted: bool = False  # cleanup.policy=compact: the latest message per key is kept, the rest go


class TopicsConfig(_Strict):
    # The .v1 suffix is the event contract's major version: a breaking change gets new topics.
    recognitions: TopicConfig = TopicConfig(name="rollcall.recognitions.v1", partitions=12)
    presence: TopicConfig = TopicConfig(name="rollcall.presence.v1", partitions=12)
    attendance: TopicConfig = TopicConfig(name="rollcall.attendance.v1", partitions=6)
    dead_letter: TopicConfig = TopicConfig(name="rollcall.dead-letter.v1", partitions=3)
    # Per-room people counts once a second (the dashboard's analytics charts), keyed by room.
    occupancy: TopicConfig = TopicConfig(name="rollcall.occupancy.v1", partitions=6)
    # What each camera's tracks look like at analysis rate (boxes, labels), for the dashboard's live
    # overlays; keyed by camera. Short-lived: consumers read from the end.
    overlays: TopicConfig = TopicConfig(name="rollcall.overlays.v1", partitions=6)
    # Each processor's cameras and their analysis, every few seconds, keyed by processor (who runs what).
    processors: TopicConfig = TopicConfig(name="rollcall.processors.v1", partitions=3)
    # Internal to a processor group (not part of the event contract): one partition per camera slot, whose
    # assignment in the group says which member runs which cameras; no messages are ever written to it.
    camera_slots: TopicConfig = TopicConfig(name="rollcall.camera-slots", partitions=64)
    # Internal: each room camera's live tracks (compacted, keyed by camera), resumed by the camera's next owner.
    room_tracks: TopicConfig = TopicConfig(name="rollcall.room-tracks", partitions=6, compacted=True)

    def all(self) -> list[TopicConfig]:
        return [self.recognitions, self.presence, self.attendance, self.dead_letter, self.occupancy,
                self.overlays, self.processors, self.camera_slots, self.room_tracks]


class KafkaConfig(_Strict):
    bootstrap_servers: str = EMBEDDED
    client_id: str = "rollcall"
    # Works on a real Kafka cluster; the bundled Tansu broker rejects aiokafka's InitProducerId v0.
    enable_idempotence: bool = False
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    topics: TopicsConfig = TopicsConfig()


class DatabaseConfig(_Strict):
    url: str = EMBEDDED

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if value != EMBEDDED and not re.match(r"^postgres(ql)?://", value):
            raise ValueError("must be 'embedded' or a postgresql://user@host:port/dbname URL")
        return value


class StackConfig(_Strict):
    """The embedded single-machine stack (`rollcall up`); 0 picks a free port and keeps it."""

    postgres_port: int = Field(default=0, ge=0, le=65535)
    kafka_port: int = Field(default=0, ge=0, le=65535)
    rtsp_port: int = Field(default=0, ge=0, le=65535)
    # Scenario specs whose rendered videos the embedded RTSP server serves (mounts /<name>/door, /<name>/room).
    scenarios: list[str] = ["infra/scenarios/default.toml"]


class ModelsConfig(_Strict):
    pack: str = "open"
    providers: list[str] = Field(
        default_factory=list,
        description="onnxruntime providers in order of preference; empty = CUDA/TensorRT when present, else CPU",
    )
    person_precision: Literal["auto", "fp32", "int8"] = Field(
        default="auto",
        description="the room person detector: fp32 as exported, or int8 (quantised once on the pack's sample "
                    "photos and cached; `make setup` and `rollcall models quantize --person` build them ahead, a "
                    "running processor builds a missing one in the background, the float model serving "
                    "meanwhile; 1.6-2.7x faster on a CPU, nearly the same detections); auto (the default): int8 "
                    "on a CPU, fp32 on a GPU")
    face_embedder_precision: Literal["fp32", "int8"] = Field(
        default="fp32",
        description="the face embedder: fp32 as shipped, or int8 (quantised once, cached, and used only if its "
                    "check on the photo set keeps every identity; refused: fp32 with a warning)")


class ThresholdsConfig(_Strict):
    # Cosine similarity needed to accept a face match; None = the model pack's calibrated default.
    face_match: float | None = Field(default=None, ge=-1.0, le=1.0)
    face_margin: float = Field(default=0.08, ge=0.0, le=2.0)
    face_stranger_gap: float = Field(
        default=0.15, ge=0.0, le=2.0,
        description="a door face track whose embeddings, once it has face_clear_after of them, match nobody better "
                    "than face_match less this is a clear stranger: its further faces are embedded only when "
                    "clearly better than its best (2: never)")
    face_known_gap: float = Field(
        default=0.15, ge=0.0, le=2.0,
        description="a door face track whose embeddings match an enrolled person by at least face_match plus this "
                    "(and the margin) is clearly known: its further faces are embedded only when clearly better "
                    "than its best, and it is decided once clearly live (2: never)")
    face_clear_after: int = Field(
        default=3, ge=1, le=100,
        description="embeddings after which a door face track's clear answer (see face_stranger_gap and "
                    "face_known_gap) needs no more; 5, the embeddings any decision waits for, or more: the "
                    "clear answer is taken only then")
    face_detection: float = Field(default=0.6, gt=0.0, lt=1.0)
    min_face_px: int = Field(default=40, ge=8)
    min_sharpness: float = Field(default=40.0, ge=0.0, description="variance of the Laplacian on the face crop")
    max_yaw_deg: float = Field(default=40.0, gt=0.0, le=90.0)
    person_detection: float = Field(default=0.4, gt=0.0, lt=1.0)


class LivenessConfig(_Strict):
    """The liveness check of door face tracks (processor/stages/liveness.py): a printed photo or a phone
    screen held up at the door never gives anyone attendance."""

    enabled: bool = Field(default=True, description="check every door face track for a picture of a face; "
                          "off: every track counts as live (recognition events carry no liveness)")
    suspect_below: float = Field(default=0.5, gt=0.0, lt=1.0,
                                 description="a track whose liveness score is below this is a suspected spoof: "
                                             "no identity, sent to the review queue")
    min_frames: int = Field(default=20, ge=1, le=600,
                            description="frames of cues before a recognised track may be decided early (live); "
                                        "otherwise it is decided when it ends, on its whole passage")
    clear_frames: int = Field(default=12, ge=1, le=600,
                              description="frames of cues before a recognised track whose cues show no picture "
                                          "edge at all (score 1.0) may be decided early; at most min_frames")

    @model_validator(mode="after")
    def _clear_before_min(self) -> "LivenessConfig":
        if self.clear_frames > self.min_frames:
            raise ValueError(f"clear_frames ({self.clear_frames}) must not exceed min_frames ({self.min_frames})")
        return self


class TrackingConfig(_Strict):
    """Room-camera person tracks and the door-to-room handoff."""

    lost_after_s: float = Field(default=2.0, gt=0.0, le=60.0, description="unseen this long: the track is lost")
    reacquire_s: float = Field(default=5.0, gt=0.0, le=600.0,
                               description="a lost track that reappears nearby within this time keeps its id "
                                           "and identity; after it, the person has left")
    reacquire_heights: float = Field(default=0.6, gt=0.0, le=10.0,
                                     description="how near a reappearance must be: feet within this many of the "
                                                 "track's box heights, with a box height within a factor 1.4")
    handoff_ambiguity_s: float = Field(default=0.5, ge=0.0, le=30.0,
                                       description="two arrivals closer than this (at the door and in the room) "
                                                   "cannot be told apart: their tracks stay unknown")
    door_face_gone_s: float = Field(default=0.4, ge=0.0, le=10.0,
                                    description="a door face track recognised and live whose face has been out of "
                                                "view this long (and two analysed frames) is decided then, not "
                                                "when its track ends a second later; 0: off")
    recognition_delay_s: float = Field(default=3.0, ge=0.0, le=60.0,
                                       description="longest delay from a face at the door to its recognition event")
    presence_update_s: float = Field(default=10.0, gt=0.0, le=3600.0, description="period of presence 'update' events")
    room_faces: bool = Field(default=True, description="look for faces on room cameras too: a recognised face "
                                                       "confirms or corrects a track's identity")
    person_input_px: int = Field(default=640, ge=64, le=1280, multiple_of=32,
                                 description="the room person detector's input, long side (the frame is fitted "
                                             "into it): cost grows with its square; smaller loses far, small people")
    motion_gating: bool = Field(default=True, description="run the room person detector only on frames where "
                                "something moved since it last ran (tracks coast through still frames)")
    motion_max_skip_s: float = Field(default=2.0, gt=0.0, le=30.0,
                                     description="with motion gating, the detector still runs at least this often")
    motion_max_skip_busy_s: float = Field(default=6.0, gt=0.0, le=60.0,
                                          description="... and at least this often while the camera is behind (its "
                                                      "next frames already wait): a still room's periodic run is "
                                                      "put off for frames that may show something")
    motion_width_px: int = Field(default=160, ge=32, le=1280,
                                 description="width of the small grey copy of each frame motion is measured on")
    motion_pixel_threshold: int = Field(default=25, ge=1, le=255,
                                        description="grey levels a pixel must change by to count as motion")
    motion_free_px: int = Field(default=12, ge=1, le=100000,
                                description="changed pixels (of the small copy) outside every track's box, or in "
                                            "an entry zone, that make the detector run: somebody new")
    motion_track_share: float = Field(default=0.2, gt=0.0, le=1.0,
                                      description="share of a track's box that must change to make the detector "
                                                  "run (a seated person's hands change much less)")
    adaptive_input: bool = Field(default=True, description="shrink a room camera's person-detector input while "
                                 "every person it sees there is large (back to full on a small or missed one), "
                                 "on a settled room's frames only (needs motion_gating)")
    person_input_min_px: int = Field(default=320, ge=64, le=1280, multiple_of=32,
                                     description="with adaptive_input, the smallest person-detector input side")
    person_min_height_px: float = Field(default=64.0, ge=16.0, le=640.0,
                                        description="with adaptive_input, the smallest person seen on a camera "
                                                    "must stay at least this high in the detector's input")
    trace_dir: str | None = Field(default=None, min_length=1, max_length=4096,
                                  description="debugging: write each room camera's tracker input (detections, "
                                              "torso colour looks) and track events as JSON lines under this "
                                              "folder, for `rollcall bench trace`; off by default")

    @model_validator(mode="after")
    def _order(self) -> "TrackingConfig":
        if self.reacquire_s < self.lost_after_s:
            raise ValueError("reacquire_s must be at least lost_after_s")
        return self


class SchedulingConfig(_Strict):
    """What the processor serves first when the machine is near capacity (processor/scheduler.py)."""

    room_min_fps: float = Field(default=2.0, gt=0.0, le=60.0,
                                description="a room camera's minimum tracking rate, unless the camera sets "
                                            "min_tracking_fps: served before any extra work")
    door_active_fps: float = Field(default=5.0, gt=0.0, le=60.0,
                                   description="door frames analysed first while a face is in view")
    door_idle_fps: float = Field(default=2.0, gt=0.0, le=60.0,
                                 description="door frames analysed first while nobody is at the door")
    door_idle_keyframes: bool = Field(default=True,
                                      description="while nobody is at a door its camera decodes keyframes only "
                                                  "(when they come at most 2 s apart); a face in view, or a burst "
                                                  "of P-frame bytes (motion), wakes it at once: the GOP so far is "
                                                  "decoded again from its keyframe (processor.ingest.idle)")
    door_idle_hold_s: float = Field(default=3.0, ge=0.0, le=60.0,
                                    description="a door stays on full decoding this long after the last face "
                                                "in view, so one passage is never split by going idle")
    window_s: float = Field(default=4.0, ge=1.0, le=60.0, description="rates are measured over this window")
    room_batch: int = Field(default=1, ge=1, le=64,
                            description="room frames per person-detector call; a call holds the inference "
                                        "gate, so on a CPU one frame a turn lets the doors in between (on a "
                                        "GPU larger batches pay)")
    inference_slots: int = Field(default=2, ge=1, le=16,
                                 description="model calls at a time: 2 on a CPU (one call on every core leaves "
                                             "a quarter of them idle; a detection beside an embedding uses it, "
                                             "README Benchmarks); raise on a GPU")
    inference_threads: int = Field(default=0, ge=0, le=256,
                                   description="onnxruntime intra-op threads per model call; 0: onnxruntime's "
                                               "default, every core")
    door_batches_in_flight: int = Field(default=2, ge=1, le=8,
                                        description="door face batches taken at once: with 2 the next batch is "
                                                    "converted and queued at the gate while one is in its model "
                                                    "call, results still in order (README Benchmarks); 1: one "
                                                    "at a time")
    room_batches_in_flight: int = Field(default=2, ge=1, le=8,
                                        description="room batches taken at once, never two rounds of one camera "
                                                    "(its motion plan follows from its last detection): with 2 "
                                                    "the next camera's frame is planned, and coasted or queued "
                                                    "at the gate, while one is in its model call; 1: one at a "
                                                    "time")
    gil_switch_interval_ms: float = Field(default=1.0, ge=0.1, le=100.0,
                                          description="the processor's Python thread switch interval (Python's "
                                                      "default 5 ms): a model call's worker thread waits this "
                                                      "long at most for the interpreter lock when it hands its "
                                                      "result back, while decoders and the event loop hold it")


class CameraConfig(_Strict):
    id: Slug
    url: str
    role: Literal["door", "room"]
    room: Slug
    name: str = ""
    analysis_fps: float = Field(default=5.0, gt=0.0, le=60.0)
    # room cameras: the tracking rate served before any extra work (None: [scheduling] room_min_fps)
    min_tracking_fps: float | None = Field(default=None, gt=0.0, le=60.0)
    enabled: bool = True

    @model_validator(mode="after")
    def _minimum_reachable(self) -> "CameraConfig":
        if self.min_tracking_fps is not None:
            if self.role != "room":
                raise ValueError("min_tracking_fps applies to room cameras only")
            if self.min_tracking_fps > self.analysis_fps:
                raise ValueError(f"min_tracking_fps ({self.min_tracking_fps:g}) must not exceed analysis_fps "
                                 f"({self.analysis_fps:g})")
        return self

    @field_validator("url")
    @classmethod
    def _camera_url(cls, value: str) -> str:
        if not re.match(r"^(rtsp|rtsps|http|https|file)://|^embedded:[A-Za-z0-9_./-]+$", value):
            raise ValueError("must be an rtsp://, http(s):// or file:// URL, or embedded:<mount> for the embedded RTSP server")
        return value


class RoomConfig(_Strict):
    id: Slug
    name: str = ""
    capacity: int | None = Field(default=None, ge=1)


class TransitWindow(_Strict):
    min_s: float = Field(default=1.0, ge=0.0)
    max_s: float = Field(default=15.0, gt=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> "TransitWindow":
        if self.max_s <= self.min_s:
            raise ValueError("max_s must be greater than min_s")
        return self


class DoorConfig(_Strict):
    id: Slug
    room: Slug
    door_camera: Slug
    room_camera: Slug
    # Polygon on the room camera's image, in pixels, where people arriving through this door appear.
    entry_zone: list[tuple[float, float]] = Field(min_length=3)
    transit: TransitWindow = TransitWindow()


class AttendancePolicy(_Strict):
    early_arrival_min: int = Field(default=15, ge=0, description="how early before the start a person may arrive")
    late_after_min: int = Field(default=10, ge=0, description="arriving later than this after the start is late")
    present_min_minutes: int = Field(default=20, ge=0, description="minutes of presence needed to count as present")
    left_early_min: int = Field(default=10, ge=0, description="leaving this long before the end counts as left early")
    # Recognised at the room's door but too little presence in the room (the room camera lost them, or they
    # turned back): 'unconfirmed' (a status of its own for faculty to resolve, not counted as attended),
    # 'present' (door evidence alone counts) or 'absent'. See README "Sessions and the attendance rules".
    door_only: Literal["present", "unconfirmed", "absent"] = Field(
        default="unconfirmed", description="status of someone recognised at the door with too little room presence")


class CourseConfig(_Strict):
    id: Slug
    name: str = ""
    roster: list[Slug] = []
    faculty: list[Slug] = []
    policy: AttendancePolicy = AttendancePolicy()


class TimetableEntry(_Strict):
    course: Slug
    room: Slug
    weekday: Weekday | None = None  # weekly recurring slot
    date: dt.date | None = None  # or a one-off session
    start: dt.time
    end: dt.time

    @model_validator(mode="after")
    def _one_kind(self) -> "TimetableEntry":
        if (self.weekday is None) == (self.date is None):
            raise ValueError("give exactly one of weekday (weekly slot) or date (one-off session)")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class PrivacyConfig(_Strict):
    keep_enrolment_photos: bool = False  # embeddings only, unless a campus decides otherwise
    enrolment_retention_days: int = Field(default=365, ge=1)
    # The best crop of unknown face tracks goes to the review queue (PostgreSQL) only when this is on.
    review_unknown_faces: bool = False
    review_crop_retention_days: int = Field(default=7, ge=1)
    presence_event_retention_days: int = Field(default=30, ge=1)
    pseudonymise_attendance_on_erase: bool = True
    # The key of the keyed hashes (HMAC-SHA256) that pseudonymise erased people in the audit log: created
    # (0600, random) on first use; ROLLCALL_PSEUDONYM_KEY overrides it. Relative paths: the project folder.
    pseudonym_key_file: str = "var/privacy-pseudonym.key"


class AttendanceWriterConfig(_Strict):
    """The attendance writer (consumers/): a Kafka consumer group into PostgreSQL."""

    group_id: str = "rollcall-attendance-writer"
    # A batch is what the consumer has at hand, up to max_batch: a large one never delays a lone event, and
    # under a backlog it spreads the per-batch work (track upsert, attendance recompute: per touched track,
    # not per event) over more events (`rollcall bench writer`, README "Benchmark" under Attendance).
    max_batch: int = Field(default=20_000, ge=1, le=100_000)
    max_wait_ms: int = Field(default=200, ge=1, le=60_000)
    # Every message through the full JSON Schema (~0.3 ms each) instead of checking the fields the writer uses.
    full_validation: bool = False
    # A session is closed by the clock this long after its end (sightings that arrive late still count).
    close_grace_s: float = Field(default=300.0, ge=0.0)
    # Run the retention purge every this many seconds from the writer (0: only `rollcall privacy purge`).
    # On by default: a retention policy that nothing enforces is not a policy.
    purge_interval_s: float = Field(default=3600.0, ge=0.0, le=7 * 86400.0, allow_inf_nan=False)
    # Consumer group timing (a real Kafka cluster's defaults; the bundled broker is fine with short ones).
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    rebalance_timeout_ms: int = Field(default=10_000, ge=500)
    # Plausibility bounds on event times (README "Bad messages"): beyond them an event is dead-lettered.
    # Ahead of the writer's clock (camera/processor clock skew); behind it (an unset clock: 1970, 0001).
    max_event_future_s: float = Field(default=600.0, ge=0.0, le=366 * 86400.0)
    max_event_age_days: float = Field(default=3650.0, gt=0.0, le=36500.0)
    # first_seen, frame_time and last_seen of one event at most this far apart (one track on one camera).
    max_track_span_s: float = Field(default=86400.0, gt=0.0)
    # An event this far from its batch's median frame time is an outlier (0: no batch bound).
    max_batch_spread_s: float = Field(default=7 * 86400.0, ge=0.0)
    # Dead letters keep at most this many bytes of the message value (a longer value is cut, flagged
    # 'truncated'), so a dead letter always fits the producer's request size.
    dead_letter_max_value_bytes: int = Field(default=512 * 1024, ge=1024, le=768 * 1024)


class GroupConfig(_Strict):
    """Processors as one Kafka consumer group (processor/group/): cameras spread over the live members."""

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,200}$",
                             description="the group's name (`rollcall run --group`); none: this processor "
                                         "runs every enabled camera of its configuration")
    session_timeout_s: float = Field(default=6.0, ge=1.0, le=300.0,
                                     description="a member silent this long is dead and its cameras move "
                                                 "(a real Kafka refuses less than its group.min.session.timeout.ms, 6 s)")
    heartbeat_s: float = Field(default=1.0, gt=0.0, le=100.0)
    door_cost: float = Field(default=1.0, gt=0.0, le=1000.0, description="the load a door camera puts on a member")
    room_cost: float = Field(default=3.0, gt=0.0, le=1000.0,
                             description="the load a room camera puts on a member (person detection on every "
                                         "analysed frame: about three doors on a CPU)")
    capacity: float = Field(default=1.0, gt=0.0, le=1000.0,
                            description="this member's share relative to the others (2: twice the cameras' cost)")
    room_standby: bool = Field(default=True,
                               description="each room camera also tracked, unpublished, by another member at "
                                           "standby_fps: its tracks and handoffs are warm when it takes over")
    standby_fps: float = Field(default=2.0, gt=0.0, le=60.0)
    cameras_poll_s: float = Field(default=2.0, gt=0.0, le=600.0,
                                  description="how often the camera table in PostgreSQL is read for changes")
    checkpoint_every_s: float = Field(default=1.0, gt=0.0, le=60.0,
                                      description="how often each room camera's live tracks are checkpointed")
    status_every_s: float = Field(default=2.0, gt=0.0, le=600.0,
                                  description="how often a processor reports its cameras on the processors topic")

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> "GroupConfig":
        if self.heartbeat_s * 3 > self.session_timeout_s:
            raise ValueError("heartbeat_s must be at most a third of session_timeout_s")
        return self


class DashboardConfig(_Strict):
    """The live dashboard (dashboard/)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # The cookie-signing key: read from this file (created with a random key on first start when missing);
    # ROLLCALL__DASHBOARD__SECRET_KEY_FILE points it elsewhere.
    secret_key_file: str = "var/dashboard-secret.key"
    session_max_age_s: int = Field(default=8 * 3600, ge=60)
    https_only_cookies: bool = False  # set true behind TLS
    # Failed logins allowed per username and client address within login_window_s before 429.
    login_max_failures: int = Field(default=5, ge=1, le=1000)
    login_window_s: int = Field(default=300, ge=1)
    # The processors' Prometheus endpoints (`rollcall run --metrics-port`), for the health page.
    processor_metrics_urls: list[str] = ["http://127.0.0.1:9108/metrics"]
    # Live video: the dashboard decodes each camera itself and draws the processor's overlays on it.
    video_width: int = Field(default=640, ge=160, le=3840)
    video_fps: float = Field(default=10.0, gt=0.0, le=30.0)
    # live video is shown this late so that each frame gets the boxes of its own moment (the processor's
    # overlay events arrive a few hundred ms after their frame); 0 = newest frame with the newest boxes
    video_delay_s: float = Field(default=0.5, ge=0.0, le=5.0)
    max_video_peers: int = Field(default=32, ge=1, le=1000)
    # Live event feed: at most this many connected clients (SSE); each keeps this many events queued.
    max_live_clients: int = Field(default=2000, ge=1)
    client_queue: int = Field(default=1000, ge=10)
    # A room track with no presence event for this long leaves the presence board.
    presence_expiry_s: float = Field(default=60.0, gt=0.0)
    # Occupancy history kept in memory per room for the analytics charts (occupancy events are 1/s).
    occupancy_history_s: int = Field(default=3600, ge=60)
    # Request limits, counted while the body streams in (a chunked body too), before anything is parsed:
    # a JSON or form body; a multipart upload in all (its files spill to disk up to this); files per
    # upload; and the pixels of an uploaded photo (read from its header before it is decoded).
    max_body_bytes: int = Field(default=1_000_000, ge=1024, le=100_000_000)
    max_upload_bytes: int = Field(default=32_000_000, ge=1024, le=1_000_000_000)
    max_upload_files: int = Field(default=20, ge=1, le=1000)
    max_image_pixels: int = Field(default=40_000_000, ge=10_000, le=500_000_000)
    # Bulk enrolment by ZIP (a folder per person): the upload itself (instead of max_upload_bytes), its entries,
    # one photo and all of them unpacked. Entries are read bounded by these, never by what the ZIP declares
    # alone: a ZIP bomb stops at them.
    max_zip_upload_bytes: int = Field(default=500_000_000, ge=1024, le=10_000_000_000)
    max_zip_entries: int = Field(default=5000, ge=1, le=100_000)
    max_zip_photo_bytes: int = Field(default=20_000_000, ge=1024, le=64_000_000)
    max_zip_total_bytes: int = Field(default=2_000_000_000, ge=1024, le=50_000_000_000)
    # Enrolment from a short video or a webcam capture: the upload (instead of max_upload_bytes), its length,
    # the frames sampled per second of it, and the frames enrolled (the sharpest, most varied of those).
    max_enrol_video_bytes: int = Field(default=100_000_000, ge=1024, le=2_000_000_000)
    max_enrol_video_s: float = Field(default=20.0, gt=0.0, le=600.0)
    enrol_video_sample_fps: float = Field(default=4.0, gt=0.0, le=30.0)
    enrol_video_frames: int = Field(default=5, ge=1, le=50)
    # Addresses (IPs or CIDRs) of reverse proxies whose X-Forwarded-For is believed; nobody's by default.
    trusted_proxies: list[str] = []
    # A WebRTC connection that has not connected this long after its offer is closed.
    video_connect_timeout_s: float = Field(default=20.0, gt=0.0, le=600.0)
    # Live streams one account may hold open at once: WebRTC peers, MJPEG streams and live-feed clients.
    max_streams_per_user: int = Field(default=12, ge=1, le=1000)
    # Cameras set up in the dashboard may read files on the dashboard's and processors' machine (file://):
    # off, as an admin could otherwise read local files through a camera's test, snapshot or live video.
    # The config file's cameras (scenarios, benchmarks) are not held to it.
    allow_file_cameras: bool = False

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/24)") from None
        return value


class SmtpConfig(_Strict):
    """The mail server reports go through (plain SMTP, STARTTLS or implicit TLS; login when a user is set:
    put the password in ROLLCALL__REPORTS__SMTP__PASSWORD, not in the file)."""
    host: str = "localhost"
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "none"
    username: str = ""
    password: str = Field(default="", repr=False)
    from_address: str = Field(default="rollcall@localhost", pattern=r"^[^@\s]+@[^@\s]+$")
    timeout_s: float = Field(default=30.0, gt=0.0, le=600.0)


class ReportsConfig(_Strict):
    """E-mail reports, sent by the attendance writer's housekeeping (or now: `rollcall reports send`): each
    week at ``weekly_at`` (site time), every course's attendance of the week before to its faculty, and to
    each student absent from at least ``absence_threshold`` sessions of a course within the last
    ``absence_window_days`` days, a notice (once a week at most). People get mail at their e-mail address
    (set with their dashboard account)."""
    enabled: bool = False
    smtp: SmtpConfig = SmtpConfig()
    weekly_on: Weekday = "mon"
    weekly_at: dt.time = dt.time(7, 0)
    absence_threshold: int = Field(default=3, ge=1, le=1000)
    absence_window_days: int = Field(default=28, ge=1, le=366)
    # How often the writer looks whether a report is due (a report is sent once: PostgreSQL keeps what was sent).
    check_every_s: float = Field(default=60.0, ge=1.0, le=86400.0)


class Config(_Strict):
    site: SiteConfig = SiteConfig()
    database: DatabaseConfig = DatabaseConfig()
    kafka: KafkaConfig = KafkaConfig()
    stack: StackConfig = StackConfig()
    models: ModelsConfig = ModelsConfig()
    thresholds: ThresholdsConfig = ThresholdsConfig()
    liveness: LivenessConfig = LivenessConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    tracking: TrackingConfig = TrackingConfig()
    scheduling: SchedulingConfig = SchedulingConfig()
    attendance: AttendanceWriterConfig = AttendanceWriterConfig()
    dashboard: DashboardConfig = DashboardConfig()
    group: GroupConfig = GroupConfig()
    reports: ReportsConfig = ReportsConfig()
    cameras: list[CameraConfig] = []
    rooms: list[RoomConfig] = []
    doors: list[DoorConfig] = []
    courses: list[CourseConfig] = []
    timetable: list[TimetableEntry] = []

    # Where it was read from: relative paths in the file (stack.scenarios) resolve against it.
    source: Path | None = Field(default=None, exclude=True)

    def camera(self, camera_id: str) -> CameraConfig:
        for camera in self.cameras:
            if camera.id == camera_id:
                return camera
        raise KeyError(camera_id)

    def min_tracking_fps(self, camera: CameraConfig) -> float:
        """A room camera's minimum tracking rate: its own, else the site default, never above its analysis rate."""
        if camera.min_tracking_fps is not None:
            return camera.min_tracking_fps
        return min(self.scheduling.room_min_fps, camera.analysis_fps)

    def resolve_path(self, value: str) -> Path:
        path = Path(value)
        if path.is_absolute():
            return path
        for base in ([self.source.parent] if self.source else []) + [Path.cwd(), PROJECT_ROOT]:
            if (base / path).exists():
                return (base / path).resolve()
        return (PROJECT_ROOT / path).resolve()
