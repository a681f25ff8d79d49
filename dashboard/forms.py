"""The request bodies the dashboard accepts (a form, or a JSON object), as pydantic models.

The fields are as lenient as the forms they come from: a missing or empty value is "", a yes/no field
takes a JSON true or "yes", "on", "true", "1". What a field must be is said by its validator in one
line; :func:`parse` turns the first failure into a :class:`~dashboard.services.Problem` (400).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, field_validator

from dashboard.auth import ROLES, USERNAME
from dashboard.services import Problem
from processor.api import PERSON_ID

YES = ("yes", "on", "true", "1")

# any value as text; None, "", 0, false and a missing field are ""
Text = Annotated[str, BeforeValidator(lambda value: str(value) if value else "")]
# a ticked box: JSON true, or one of YES (any case)
Flag = Annotated[bool, BeforeValidator(lambda value: value is True or str(value or "").lower() in YES)]

Model = TypeVar("Model", bound=BaseModel)


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
    minutes: int | None = None

    @field_validator("minutes", mode="before")
    @classmethod
    def _minutes(cls, value: Any) -> int | None:
        if not str(value or "").strip():
            return None
        try:
            minutes = int(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"minutes {str(value)[:40]!r} is not a number") from None
        if not 1 <= minutes <= 24 * 60:
            raise ValueError("minutes must be between 1 and 1440")
        return minutes


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


def _minutes(value: Any, what: str, default: int) -> int:
    text = str(value if value is not None else "").strip()
    if not text:
        return default
    try:
        minutes = int(text)
    except ValueError:
        raise ValueError(f"{what} {text[:20]!r} is not a whole number of minutes") from None
    if not 0 <= minutes <= 24 * 60:
        raise ValueError(f"{what} must be between 0 and 1440 minutes")
    return minutes


class RoomForm(BaseModel):
    """A room: its id (fixed once made), name and capacity (empty: unknown)."""
    model_config = ConfigDict(validate_default=True)
    id: Text = ""
    name: Text = ""
    capacity: int | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return _slug(value, "room id")

    @field_validator("capacity", mode="before")
    @classmethod
    def _capacity(cls, value: Any) -> int | None:
        text = str(value if value is not None else "").strip()
        if not text:
            return None
        if not text.isdigit() or not 1 <= int(text) <= 100000:
            raise ValueError(f"capacity {text[:20]!r} must be a whole number from 1 to 100000, or empty")
        return int(text)


class CourseForm(BaseModel):
    """A course and its attendance policy (minutes; empty: the defaults of the config file's courses)."""
    model_config = ConfigDict(validate_default=True)
    id: Text = ""
    name: Text = ""
    early_arrival_min: int = 15
    late_after_min: int = 10
    present_min_minutes: int = 20
    left_early_min: int = 10
    door_only: Text = "unconfirmed"

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return _slug(value, "course id")

    @field_validator("early_arrival_min", "late_after_min", "present_min_minutes", "left_early_min", mode="before")
    @classmethod
    def _policy(cls, value: Any, info) -> int:
        return _minutes(value, info.field_name.replace("_", " "), cls.model_fields[info.field_name].default)

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
        value = value.strip()
        if value and (len(value) > 254 or not re.match(r"^[^@\s]+@[^@\s]+$", value)):
            raise ValueError(f"e-mail {value[:70]!r} is not an address (name@host)")
        return value

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
