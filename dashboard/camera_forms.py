"""The bodies of the camera and door set-up pages (admin), as pydantic models (the dashboard/forms.py
pattern: lenient fields as forms send them; :func:`~dashboard.forms.parse` turns the first failure into a
400). A camera is checked as the processors will read it (:class:`CameraConfig`), so a row the dashboard
writes is one a processor can run."""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from dashboard.forms import Flag, Text, form_number
from dashboard.services import Problem
from infra.foundation.config import CameraConfig

MAX_ZONE_POINTS = 64
MAX_PIXELS = 16384  # a coordinate beyond any camera's picture
MAX_TRANSIT_S = 600.0
SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # ids as the config file takes them


class CameraForm(BaseModel):
    """A camera: id (fixed once made), name, role, room, URL, analysis rate, enabled."""
    model_config = ConfigDict(validate_default=True)
    id: Text = ""
    name: Text = ""
    role: Text = ""
    room: Text = ""
    url: Text = ""
    analysis_fps: Text = ""
    enabled: Flag = False

    def camera(self) -> CameraConfig:
        """The camera as a processor reads it, or a 400 naming the field that is wrong."""
        fields = {"id": self.id.strip(), "name": self.name.strip(), "role": self.role.strip(),
                  "room": self.room.strip(), "url": self.url.strip(), "enabled": self.enabled,
                  "analysis_fps": self.analysis_fps.strip() or 5.0}
        try:
            return CameraConfig.model_validate(fields)
        except ValidationError as exc:  # the field named always: "url: must be an rtsp://... URL"
            error = exc.errors(include_url=False)[0]
            where = ".".join(map(str, error["loc"])) or "camera"
            raise Problem(f"{where}: {str(error['msg']).removeprefix('Value error, ')}") from None


class EnabledForm(BaseModel):
    enabled: Flag = False


class ZoneForm(BaseModel):
    """An entry zone: a polygon of 3 to 64 points, in pixels of the room camera's picture, with an area."""
    zone: list[tuple[float, float]]

    @field_validator("zone", mode="before")
    @classmethod
    def _points(cls, value: Any) -> Any:
        if not isinstance(value, list) or not 3 <= len(value) <= MAX_ZONE_POINTS:
            raise ValueError(f"an entry zone is a list of 3 to {MAX_ZONE_POINTS} [x, y] points")
        return value

    @field_validator("zone")
    @classmethod
    def _inside_a_picture(cls, zone: list[tuple[float, float]]) -> list[tuple[float, float]]:
        for x, y in zone:
            if not (math.isfinite(x) and math.isfinite(y) and 0 <= x <= MAX_PIXELS and 0 <= y <= MAX_PIXELS):
                raise ValueError(f"point ({x:g}, {y:g}) is outside any picture: pixels from 0 to {MAX_PIXELS}")
        if polygon_area(zone) < 1.0:
            raise ValueError("the zone has no area: its points are on one line")
        return [(round(x, 1), round(y, 1)) for x, y in zone]


def polygon_area(points: list[tuple[float, float]]) -> float:
    """The shoelace formula's absolute area."""
    twice = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1]))
    return abs(twice) / 2


TransitSeconds = form_number(float, 0, MAX_TRANSIT_S, "seconds", empty="refused")


class DoorForm(BaseModel):
    """A door's cameras (the door camera linked to its room camera) and transit window."""
    model_config = ConfigDict(validate_default=True)
    door_camera: Text = ""
    room_camera: Text = ""
    transit_min_s: TransitSeconds = 0.0
    transit_max_s: TransitSeconds = 0.0

    @model_validator(mode="after")
    def _window(self) -> "DoorForm":
        if self.transit_max_s <= self.transit_min_s:
            raise ValueError(f"transit max ({self.transit_max_s:g} s) must be above transit min "
                             f"({self.transit_min_s:g} s)")
        if not self.door_camera.strip() or not self.room_camera.strip():
            raise ValueError("choose both the door camera and the room camera")
        return self


class NewDoorForm(DoorForm):
    """A new door: its id and room besides its cameras and transit window (the zone is drawn after)."""
    id: Text = ""
    room: Text = ""

    @field_validator("id", "room")
    @classmethod
    def _slug(cls, value: str, info) -> str:
        value = value.strip()
        if not SLUG.match(value):
            raise ValueError(f"{'door id' if info.field_name == 'id' else 'room'} {value[:70]!r} is not valid: "
                             "letters, digits, '_', '.', '-' (up to 64)")
        return value
