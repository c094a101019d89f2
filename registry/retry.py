"""Riding out a short database outage: retry lost connections for a bounded time.

Only connection failures are retried (never integrity errors, never SQL errors): the
operations retried here are single transactions that either happened or did not, and each
caller checks on a retry whether the previous attempt landed after all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

T = TypeVar("T")

RETRY_BUDGET_S = 30.0
FIRST_DELAY_S = 0.25
MAX_DELAY_S = 4.0


def connection_lost(engine: Engine) -> Callable[[OperationalError], bool]:
    """Which OperationalErrors of ``engine`` mean "the server went away".

    On PostgreSQL every OperationalError is about the connection (SQL mistakes are other
    classes); SQLite's are mostly not (locks already wait ``SQLITE_BUSY_TIMEOUT_S``), so
    there only a connection SQLAlchemy itself found broken counts.
    """
    if engine.dialect.name == "sqlite":
        return lambda exc: bool(exc.connection_invalidated)
    return lambda exc: True


def retry_connection(
    attempt: Callable[[int], T],
    transient: Callable[[OperationalError], bool],
    *,
    budget_s: float = RETRY_BUDGET_S,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``attempt(n)`` (n = 0, 1, …) until it returns, retrying transient OperationalErrors
    with exponential backoff for at most ``budget_s``; then the last error is raised."""
    deadline = clock() + budget_s
    delay = FIRST_DELAY_S
    number = 0
    while True:
        try:
            return attempt(number)
        except OperationalError as exc:
            if not transient(exc) or clock() + delay > deadline:
                raise
        sleep(delay)
        delay = min(2 * delay, MAX_DELAY_S)
        number += 1
