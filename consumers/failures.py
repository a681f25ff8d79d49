"""Whose fault a failed batch is: a message's content (dead-letter it, store the rest) or the database or
the broker being away (roll back, retry with backoff; nothing is committed and nothing is lost)."""

from __future__ import annotations

import asyncpg

# The database away (or failing): the batch is rolled back and read again.
DB_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, ConnectionError, asyncpg.PostgresError,
                                              asyncpg.InterfaceError)
# SQLSTATE classes of errors a message's data causes: cardinality violation, data exception, integrity
# constraint violation, program limit exceeded (say an index row too large). Any other is the database's.
_CONTENT_SQLSTATES = ("21", "22", "23", "54")
# Python errors that converting a message's values can raise (asyncpg's client-side DataError is a ValueError).
_CONTENT_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, ArithmeticError, RecursionError,
                                                    LookupError)


class BrokerAway(Exception):
    """The broker did not take a dead letter or an attendance event: retried as for a database outage."""


def content_error(exc: BaseException) -> bool:
    """Whether the database work failed because of the data it was given (not because it is away)."""
    if isinstance(exc, asyncpg.PostgresError):
        return (getattr(exc, "sqlstate", None) or "")[:2] in _CONTENT_SQLSTATES
    return isinstance(exc, _CONTENT_ERRORS) and not isinstance(exc, OSError)


def one_line(exc: BaseException) -> str:
    """The exception's type and the first line of its message, for a log line or a dead letter's reason."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
