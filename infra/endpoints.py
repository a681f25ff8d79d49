"""Turn configured addresses into real ones: ``embedded`` means the stack that `rollcall up` runs.

This is the only place that knows about the embedded stack's ports; everything else receives plain
URLs, so the same code runs against a campus's Kafka cluster, PostgreSQL and cameras.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.errors import RollcallError
from processor.config import EMBEDDED, Config


@dataclass(frozen=True)
class Endpoints:
    database_url: str
    kafka_bootstrap_servers: str
    camera_urls: dict[str, str]


def _stack_state():
    from infra import stack

    return stack.current_state()


def resolve(config: Config, *, need: tuple[str, ...] = ("database", "kafka", "cameras")) -> Endpoints:
    state = None

    def embedded(what: str, variable: str):
        nonlocal state
        if state is None:
            state = _stack_state()
        if state is None or not state.is_running(what):
            raise RollcallError(
                f"{variable} is 'embedded' but the embedded {what} is not running: "
                f"run `rollcall up`, or set {variable} to a running server"
            )
        return state

    database_url = config.database.url
    if "database" in need and database_url == EMBEDDED:
        database_url = embedded("postgres", "DATABASE_URL").database_url
    kafka = config.kafka.bootstrap_servers
    if "kafka" in need and kafka == EMBEDDED:
        kafka = embedded("kafka", "KAFKA_BOOTSTRAP_SERVERS").kafka_bootstrap_servers
    cameras: dict[str, str] = {}
    for camera in config.cameras:
        url = camera.url
        if "cameras" in need and url.startswith("embedded:"):
            variable = f"camera {camera.id} url"
            url = embedded("rtsp", variable).rtsp_url(url.removeprefix("embedded:"))
        cameras[camera.id] = url
    return Endpoints(database_url=database_url, kafka_bootstrap_servers=kafka, camera_urls=cameras)


def start_embedded_stack(config: Config, rtsp_mounts=None):
    """`rollcall up` for this config: the embedded stack on the configured ports with the configured
    topics (``rtsp_mounts`` None keeps the served mounts), then the schema migrated. Returns
    (StackState, MigrationReport)."""
    from infra import db, stack

    state = stack.up(
        pg_port=config.stack.postgres_port,
        kafka_port=config.stack.kafka_port,
        rtsp_port=config.stack.rtsp_port,
        topics=[(t.name, t.partitions) for t in config.kafka.topics.all()],
        rtsp_mounts=rtsp_mounts,
    )
    return state, db.migrate(state.database_url)
