"""Turn configured addresses into real ones: ``embedded`` means the stack that `rollcall up` runs.

This is the only place that knows about the embedded stack's ports; everything else receives plain
URLs, so the same code runs against a campus's Kafka cluster, PostgreSQL and cameras.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.foundation.errors import RollcallError
from infra.foundation.config import EMBEDDED, Config
from infra.foundation.embedded import current_state


@dataclass(frozen=True)
class Endpoints:
    database_url: str
    kafka_bootstrap_servers: str
    camera_urls: dict[str, str]


def resolve(config: Config, *, need: tuple[str, ...] = ("database", "kafka", "cameras")) -> Endpoints:
    state = None

    def embedded(what: str, variable: str):
        nonlocal state
        if state is None:
            state = current_state()
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
