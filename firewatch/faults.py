"""Telling a bad day from a poison item: which errors are worth trying again.

A loop over a stream (gateway messages, spooled batches) retries only what can pass: a broker or
database away comes back, and the same item then goes through.  An item whose own content makes
the handler fail fails the same way every time; retried, it would hold up every item behind it,
so it is set aside with its reason instead.  Between the two are errors nobody foresaw: retried a
bounded number of times, then set aside (see ``firewatch.consumer``).
"""

from __future__ import annotations

import sqlite3
from enum import Enum

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StatementError,
)


class Refused(Exception):
    """A server refused the item for good, for its content (an HTTP 4xx such as InfluxDB's
    "points beyond retention policy"): sending it again gets the same answer."""


class Unavailable(Exception):
    """A server could not take the item now (an HTTP 5xx, a refused login): try again."""


class Fault(Enum):
    TRANSIENT = "transient"  # the world: retry the same item, unacknowledged
    CONTENT = "content"  # the item itself: set it aside
    UNKNOWN = "unknown"  # neither known: retry a few times, then set the item aside


def classify(exc: BaseException) -> Fault:
    # OperationalError: connection refused or lost, "database is locked", a server shutting
    # down; InterfaceError: a closed connection; a DBAPIError marked connection_invalidated: the
    # pool's connection went away under the statement
    if isinstance(
        exc,
        OperationalError
        | InterfaceError
        | OSError
        | TimeoutError
        | Unavailable
        | sqlite3.OperationalError,
    ):
        return Fault.TRANSIENT
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return Fault.TRANSIENT
    # an integrity or data error is the row's own: the same values fail again
    if isinstance(
        exc, IntegrityError | DataError | Refused | sqlite3.IntegrityError | sqlite3.DataError
    ):
        return Fault.CONTENT
    if (
        isinstance(exc, StatementError)
        and exc.orig is not None
        and not isinstance(exc.orig, DBAPIError)
    ):
        return classify(exc.orig)  # a Python error while binding the item's values
    # a value out of range (a date in year 9999 plus a day), of the wrong type, missing, or
    # nested too deep to handle: computations on the item's values
    if isinstance(exc, ValueError | TypeError | ArithmeticError | LookupError | RecursionError):
        return Fault.CONTENT
    return Fault.UNKNOWN


def reason_of(exc: BaseException) -> str:
    """An exception as a stored reason: its type and message."""
    return storable(f"{type(exc).__name__}: {exc}")


def storable(text: str, limit: int = 2000) -> str:
    """Text any database takes, bounded: without the NUL and lone surrogates that PostgreSQL's
    text type refuses (hostile payloads put both into error messages)."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\\x00")[:limit]
