"""Ties a processor to its group: the camera catalogue (PostgreSQL) and the member's slots (Kafka) give
the cameras it runs; either changing calls ``apply`` with the campus as the database has it and the ids
of the cameras this member owns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Callable

from infra.foundation.config import Config
from processor.group.catalogue import Catalogue, CatalogueWatcher
from processor.group.membership import GroupMember

log = logging.getLogger("rollcall.group")


class GroupCoordinator:
    def __init__(self, config: Config, *, database_url: str, bootstrap_servers: str, member_name: str,
                 apply: Callable[[Config, set[str], set[str]], None]):
        group = config.group
        self.config = config
        self.apply = apply
        self.slots: set[int] = set()
        self.owned: set[str] = set()
        self.standby: set[str] = set()  # room cameras this member shadows (not published) for a fast takeover
        self.watcher = CatalogueWatcher(database_url, config.kafka.topics.camera_slots.partitions,
                                        group.cameras_poll_s, self._on_catalogue)
        self.member = GroupMember(bootstrap_servers, group.name, config.kafka.topics.camera_slots.name,
                                  name=member_name, capacity=group.capacity, costs=self._costs,
                                  on_slots=self._on_slots, session_timeout_s=group.session_timeout_s,
                                  heartbeat_s=group.heartbeat_s, client_id=config.kafka.client_id,
                                  security_protocol=config.kafka.security_protocol,
                                  wants_standby=self._wants_standby)

    @property
    def catalogue(self) -> Catalogue | None:
        return self.watcher.current

    async def prepare(self) -> None:
        """Before joining: the control topic exists (its partition count is the slot count)."""
        self.watcher.slot_count = await self.member.check_topic()

    async def run(self) -> None:
        """Watch the catalogue; once read, be a member of the group (until cancelled)."""
        watching = asyncio.create_task(self.watcher.run(), name="camera-catalogue")
        try:
            ready = asyncio.create_task(self.watcher.ready.wait())
            done, _ = await asyncio.wait({ready, watching}, return_when=asyncio.FIRST_COMPLETED)
            if watching in done:
                ready.cancel()
                watching.result()  # raises what ended it
            await self.member.run()
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watching

    def _costs(self) -> dict[int, float]:
        catalogue = self.watcher.current
        group = self.config.group
        return catalogue.costs(group.door_cost, group.room_cost) if catalogue is not None else {}

    def _wants_standby(self) -> set[int]:
        """Every slot (when standbys are on): a camera added later, or enabled, has its standby at once."""
        return set(range(self.watcher.slot_count)) if self.config.group.room_standby else set()

    async def _on_catalogue(self, catalogue: Catalogue) -> None:
        log.info("group %s: %d camera(s) in the catalogue", self.config.group.name, len(catalogue.cameras))
        self._apply()

    async def _on_slots(self, slots: set[int]) -> None:
        self.slots = set(slots)
        self._apply()

    def _apply(self) -> None:
        catalogue = self.watcher.current
        if catalogue is None:
            return
        owned = catalogue.in_slots(self.slots)
        rooms = {c.id for c in catalogue.cameras if c.role == "room"}
        standby = (catalogue.in_slots(self.member.standby) & rooms) - owned if self.config.group.room_standby else set()
        if owned != self.owned or standby != self.standby:
            log.info("group %s: running %s; standby of %s", self.config.group.name, ", ".join(sorted(owned)) or "no camera",
                     ", ".join(sorted(standby)) or "none")
        self.owned, self.standby = owned, standby
        self.apply(catalogue.applied_to(self.config), owned, standby)
