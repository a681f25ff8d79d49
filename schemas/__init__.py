"""The event contract: JSON Schema (draft 2020-12) files, one per event type and major version.

The ``*.json`` files in this folder are the single definition of every event: downstream systems read
them as they are, and Rollcall's code reads them here (:mod:`schemas.events` builds, validates and
decodes events with them). Names are ``<event_type>.v<MAJOR>`` (``recognition.v1``); shared definitions
live in ``common.v1``, referenced as ``common.v1.json#/$defs/NAME`` and resolved locally (the ``$id``
URLs are identifiers, never fetched).

- :func:`load_schema` — a schema file as a dict (a fresh copy; the parsed file is cached).
- :func:`validator` — a cached ``Draft202012Validator`` for it (its ``$ref`` to the other files inlined,
  for speed) with format checking of ``uuid`` and ``date-time``.
- :func:`fast_validator` — the same schema and the same format checks compiled by jsonschema-rs: ~20 µs
  against ~200 µs an attendance event (most of it the calls back into Python for the format checks), so it
  answers "valid" for events built or read at stream rates; its "not valid" is left to :func:`validator`,
  which names the field (and decides).
- :func:`resolve` — follow a ``$ref`` of a schema (to the shared definitions).
- ``SCHEMA_VERSIONS`` — ``{event_type: "MAJOR.MINOR"}``, the newest version of each event type (the
  ``default`` of its ``schema_version`` property); ``EVENT_SCHEMAS`` — ``{event_type: schema name}``.

jsonschema checks ``date-time`` only when the optional ``rfc3339-validator`` package is installed; it is
not a dependency, so the schema files also carry a pattern for it and :func:`validator` adds a checker
of its own (a real calendar date and time, UTC).
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMA_DIR = Path(__file__).resolve().parent
_NAME = re.compile(r"^[a-z][a-z0-9_-]*\.v[1-9][0-9]*$")


def schema_names() -> list[str]:
    """Every schema in the folder, by name (``common.v1``, ``recognition.v1``, ...)."""
    return list(_names())


@functools.cache
def _names() -> tuple[str, ...]:
    return tuple(sorted(path.name[: -len(".json")] for path in SCHEMA_DIR.glob("*.json")))


def _normalise(name: str) -> str:
    name = name[: -len(".json")] if name.endswith(".json") else name
    if not _NAME.match(name) or name not in _names():
        raise KeyError(f"no event schema {name!r} in {SCHEMA_DIR}: known are {', '.join(schema_names())}")
    return name


@functools.cache
def _parsed(name: str) -> dict[str, Any]:
    path = SCHEMA_DIR / f"{name}.json"
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    Draft202012Validator.check_schema(schema)
    return schema


def load_schema(name: str) -> dict[str, Any]:
    """The schema ``name`` (``"recognition.v1"``, ``.json`` optional) as a dict; a copy, safe to change."""
    return copy.deepcopy(_parsed(_normalise(name)))


@functools.cache
def _registry() -> Registry:
    resources = []
    for name in schema_names():
        schema = _parsed(name)
        resources.append((schema["$id"], Resource.from_contents(schema, default_specification=DRAFT202012)))
    return Registry().with_resources(resources).crawl()


def resolve(name: str, subschema: dict[str, Any]) -> dict[str, Any]:
    """``subschema`` (a part of schema ``name``) with its ``$ref`` followed, as long as there is one."""
    resolver = _registry().resolver(base_uri=_parsed(_normalise(name))["$id"])
    for _ in range(16):
        ref = subschema.get("$ref")
        if not isinstance(ref, str):
            return subschema
        resolved = resolver.lookup(ref)
        subschema, resolver = resolved.contents, resolved.resolver
    raise ValueError(f"{name}: $ref chain too long")


def _is_utc_date_time(instance: object) -> bool:
    if not isinstance(instance, str):
        return True  # the type keyword judges non-strings
    if not instance.endswith("Z"):
        return False
    text = instance[:-1]
    if "." in text:  # Python's fromisoformat takes 3 or 6 fraction digits only; RFC 3339 allows any number
        head, _, fraction = text.partition(".")
        if not fraction.isdigit():
            return False
        text = f"{head}.{fraction[:6].ljust(6, '0')}"
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return "T" in text


def format_checker() -> FormatChecker:
    """Draft 2020-12's format checker (``uuid`` is in it) plus ``date-time`` as UTC RFC 3339."""
    checker = FormatChecker(formats=())
    checker.checkers = dict(Draft202012Validator.FORMAT_CHECKER.checkers)
    if "date-time" not in checker.checkers:
        checker.checks("date-time")(_is_utc_date_time)
    return checker


def validator(name: str) -> Draft202012Validator:
    """A validator of schema ``name`` that resolves ``$ref`` to the other files and checks formats (cached)."""
    return _validator(_normalise(name))


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(_inlined(name) or _parsed(name), registry=_registry(), format_checker=format_checker())


def fast_validator(name: str) -> jsonschema_rs.Validator | None:
    """jsonschema-rs's validator of schema ``name`` with :func:`format_checker`'s checks (cached); None for a
    recursive schema. Trust its "valid" only: an instance it refuses goes to :func:`validator`, which says
    why, and which takes a few things jsonschema-rs refuses (NaN as a number; a pattern's ``$`` before a
    final newline, as Python's ``re`` reads it)."""
    return _fast_validator(_normalise(name))


@functools.cache
def _fast_validator(name: str) -> jsonschema_rs.Validator | None:
    schema = _inlined(name)
    if schema is None:
        return None
    # The same format functions as jsonschema's (a leap second, an offset: one answer for both validators).
    checker = format_checker()
    formats = {fmt: functools.partial(checker.conforms, format=fmt) for fmt in checker.checkers}
    return jsonschema_rs.validator_for(schema, formats=formats, validate_formats=True)


@functools.cache
def _inlined(name: str) -> dict[str, Any] | None:
    """Schema ``name`` with its references inlined (None for a recursive schema): jsonschema resolving a $ref
    on every use costs more than half of a validation's time. Same rules; the definition's own keywords win
    over annotations beside the $ref."""
    try:
        return _inline(name, _parsed(name), depth=0)
    except RecursionError:  # a recursive schema: leave the references to the registry
        return None


def _inline(name: str, node: Any, depth: int) -> Any:
    if depth > 32:
        raise RecursionError(f"{name}: $ref nesting deeper than 32")
    if isinstance(node, list):
        return [_inline(name, item, depth) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _inline(name, value, depth) for key, value in node.items()}
    if isinstance(node.get("$ref"), str):
        target = _inline(name, resolve(name, {"$ref": node.pop("$ref")}), depth + 1)
        node = {**node, **target}
    return node


def _event_schemas() -> dict[str, str]:
    """{event_type: name of its newest schema}: the schemas whose event_type property is a const."""
    newest: dict[str, tuple[int, str]] = {}
    for name in schema_names():
        event_type = _parsed(name).get("properties", {}).get("event_type", {}).get("const")
        if isinstance(event_type, str):
            major = int(name.rpartition(".v")[2])
            if major > newest.get(event_type, (0, ""))[0]:
                newest[event_type] = (major, name)
    return {event_type: name for event_type, (_, name) in newest.items()}


EVENT_SCHEMAS: dict[str, str] = _event_schemas()
SCHEMA_VERSIONS: dict[str, str] = {
    event_type: _parsed(name)["properties"]["schema_version"]["default"] for event_type, name in EVENT_SCHEMAS.items()
}

__all__ = ["EVENT_SCHEMAS", "SCHEMA_DIR", "SCHEMA_VERSIONS", "fast_validator", "format_checker", "load_schema",
           "resolve", "schema_names", "validator"]
