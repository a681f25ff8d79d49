"""The request bodies the dashboard accepts (a form, or a JSON object), as pydantic models.

The fields are as lenient as the forms they come from: a missing or empty value is "", a yes/no field
takes a JSON true or "yes", "on", "true", "1". What a field must be is said by its validator in one
line; :func:`parse` turns the first failure into a :class:`~dashboard.services.Problem` (400).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticUseDefault

from dashboard.accounts import email_address
from dashboard.auth import ROLES, USERNAME
from dashboard.services import Problem
from infra.foundation.errors import RollcallError
from processor.api import PERSON_ID

YES = ("yes", "on", "true", "1")

# any value as text; None, "", 0, false and a missing field are ""
Text = Annotated[str, BeforeValidator(lambda value: str(value) if value else "")]
# a ticked box: JSON true, or one of YES (any case)
Flag = Annotated[bool, BeforeValidator(lambda value: value is True or str(value or "").lower() in YES)]

Model = TypeVar("Model", bound=BaseModel)


def form_number(kind: type[int] | type[float], low: float, high: float, unit: str, *, empty: str = "default"):
    """A number field as a form sends it (text) or JSON does (a number): ``kind`` from ``low`` to ``high``;
    empty (or null) is the field's default (``empty="default"``), None (``"none"``: a field whose default is
    None, which ``validate_default`` reads here too) or refused (``"refused"``). Its error names the field as a person reads it
    ("transit min", "late after min") and the unit: "late after min must be between 0 and 1440 minutes"."""

    def read(value: Any, info: ValidationInfo) -> int | float | None:
        what = info.field_name.removesuffix("_s").replace("_", " ")
        text = str(value if value is not None else "").strip()
        if not text:
            if empty == "refused":
                raise ValueError(f"{what}: a number of {unit} is required")
            if empty == "none":
                return None
            raise PydanticUseDefault()
        try:
            number = kind(text)
        except ValueError:
            raise ValueError(f"{what} {text[:20]!r} is not a number of {'whole ' if kind is int else ''}{unit}") from None
        if not (math.isfinite(number) and low <= number <= high):
            raise ValueError(f"{what} must be between {low:g} and {high:g} {unit}")
        return number if kind is int else round(number, 2)

    return Annotated[kind | None, BeforeValidator(read)]


Minutes = form_number(int, 0, 24 * 60, "minutes")  # a course policy's
OpeningMinutes = form_number(int, 1, 24 * 60, "minutes", empty="none")  # a session opened by hand for so long
Capacity = form_number(int, 1, 100000, "places", empty="none")


def parse(model: type[Model], fields: Any, problem: str | None = None) -> Model:
    """``fields`` as ``model``, or a 400 saying the first thing wrong (``problem``: one message for all)."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        if problem is not None:
            raise Problem(problem) from None
        error = exc.errors(include_url=False)[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] != "value_error":
            message = f"{'.'.join(map(str, error['loc']))}: {message}"
        raise Problem(message) from None


class Login(BaseModel):
    username: Text = ""
    password: Text = ""
    next: Text = ""


class PasswordChange(BaseModel):
    current_password: Text = ""
    new_password: Text = ""


class SessionOpening(BaseModel):
    """A session opened by hand: the course, the room, and minutes (a one-off from now) or none (the
    timetable session running now)."""
    course: Text = ""
    room: Text = ""
    minutes: OpeningMinutes = None


class Resolution(BaseModel):
    status: Text = ""


class VideoOffer(BaseModel):
    """The browser's WebRTC offer."""
    sdp: str
    type: str

    @field_validator("type")
    @classmethod
    def _an_offer(cls, value: str) -> str:
        if value != "offer":
            raise ValueError("not an offer")
        return value


VIDEO_OFFER_PROBLEM = "send the browser's offer as JSON {\"sdp\": ..., \"type\": \"offer\"}"


class Enrolment(BaseModel):
    """The enrolment form's fields (the photos are read from the form itself)."""
    model_config = ConfigDict(validate_default=True)  # a missing consent is refused too
    person_id: Text = ""
    name: Text = ""
    consent: Flag = False

    @field_validator("consent")
    @classmethod
    def _given(cls, value: bool) -> bool:
        if not value:
            raise ValueError("refusing to enrol without consent: confirm the person agreed to face recognition "
                             "(tick the consent box)")
        return value


class ZipEnrolment(BaseModel):
    """The bulk enrolment form's consent (the ZIP is read from the form itself)."""
    model_config = ConfigDict(validate_default=True)
    consent: Flag = False

    @field_validator("consent")
    @classmethod
    def _given(cls, value: bool) -> bool:
        if not value:
            raise ValueError("refusing to enrol without consent: confirm every person in the ZIP agreed to face "
                             "recognition (tick the consent box)")
        return value


class ReviewAcceptance(BaseModel):
    """Accept an unknown face as a person (a new one with ``new_person``)."""
    model_config = ConfigDict(validate_default=True)  # a missing person id or consent is refused too
    person_id: Text = ""
    consent: Flag = False
    new_person: Flag = False
    name: Text = ""
    note: Text = ""

    @field_validator("person_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        value = value.strip()
        if not PERSON_ID.match(value):
            raise ValueError(f"person id {value!r} is not valid: letters, digits, '_', '.', '-' (up to 64)")
        return value

    @field_validator("consent")
    @classmethod
    def _given(cls, value: bool) -> bool:
        if not value:
            raise ValueError("refusing to enrol without consent: confirm the person agreed to face recognition")
        return value


def _slug(value: str, what: str) -> str:
    value = value.strip()
    if not PERSON_ID.match(value):
        raise ValueError(f"{what} {value[:70]!r} is not valid: letters, digits, '_', '.', '-' (up to 64)")
    return value


class RoomForm(BaseModel):
    """A room: its id (fixed once made), name and capacity (empty: unknown)."""
    model_config = ConfigDict(validate_default=True)
    id: Text = ""
    name: Text = ""
    capacity: Capacity = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return _slug(value, "room id")


class CourseForm(BaseModel):
    """A course and its attendance policy (minutes; empty: the defaults of the config file's courses)."""
    model_config = ConfigDict(validate_default=True)
    id: Text = ""
    name: Text = ""
    early_arrival_min: Minutes = 15
    late_after_min: Minutes = 10
    present_min_minutes: Minutes = 20
    left_early_min: Minutes = 10
    door_only: Text = "unconfirmed"

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return _slug(value, "course id")

    @field_validator("door_only")
    @classmethod
    def _door_only(cls, value: str) -> str:
        value = value.strip() or "unconfirmed"
        if value not in ("present", "unconfirmed", "absent"):
            raise ValueError(f"door only {value[:20]!r} is not present, unconfirmed or absent")
        return value


def _course_list(value: Any) -> list[str]:
    """Courses as a list (JSON, or the form's several values) or one comma-separated text."""
    items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    return [_slug(str(item), "course id") for item in items if str(item).strip()]


CourseList = Annotated[list[str], BeforeValidator(_course_list)]


class AccountForm(BaseModel):
    """A new dashboard account: its username, role, the person it belongs to (made when a name is given),
    their e-mail address (where reports go) and, for faculty, the courses it teaches."""
    model_config = ConfigDict(validate_default=True)
    username: Text = ""
    role: Text = ""
    person_id: Text = ""
    name: Text = ""
    email: Text = ""
    courses: CourseList = []

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        try:
            return email_address(value)  # the one rule, shared with the e-mail edit of an existing account
        except RollcallError as problem:
            raise ValueError(str(problem)) from None

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        value = value.strip()
        if not USERNAME.match(value):
            raise ValueError(f"username {value[:70]!r} is not valid: letters, digits, '_', '.', '@', '-' "
                             "(up to 64, starting with a letter or digit)")
        return value

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value not in ROLES:
            raise ValueError(f"role {value[:20]!r} is not one of {', '.join(ROLES)}")
        return value

    @field_validator("person_id")
    @classmethod
    def _person(cls, value: str) -> str:
        return _slug(value, "person id") if value.strip() else ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if len(value.strip()) > 200:
            raise ValueError("the name is too long (at most 200 characters)")
        return value.strip()


class AccountCourses(BaseModel):
    """The courses a faculty account teaches (all of them: the others are dropped)."""
    courses: CourseList = []
