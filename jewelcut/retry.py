"""Ride out a service that is briefly unreachable (a Postgres restart, an S3 outage).

    with_retries(action, retry_on=(OperationalError,), delays_s=(1, 2, 4), what="database")

runs `action`, and while it raises one of `retry_on` waits the next delay (a warning per retry)
and tries again; after the last delay the error of the final try goes to the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from jewelcut.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")
DATABASE_RETRY_DELAYS_S = (1, 2, 4, 8, 15, 30)  # rides out a Postgres restart


def with_retries(
    action: Callable[[], T],
    *,
    retry_on: tuple[type[BaseException], ...],
    delays_s: Sequence[float],
    what: str,
    retryable: Callable[[BaseException], bool] = lambda _error: True,
) -> T:
    """`action()`, retried after each of `delays_s` while it raises a retryable `retry_on`."""
    for delay in delays_s:
        try:
            return action()
        except retry_on as error:
            if not retryable(error):
                raise
            log.warning(
                "%s unavailable; retrying in %ss",
                what,
                delay,
                extra={"error": f"{type(error).__name__}: {error}"},
            )
            time.sleep(delay)
    return action()


def with_database_retries(action: Callable[[], T]) -> T:
    """Run `action`, retrying while the database is unreachable (a restart, a failover) or a
    transaction lost its connection. Each action must be safe to run again (a commit may have
    gone through unseen)."""
    return with_retries(
        action,
        retry_on=(DBAPIError,),
        retryable=_connection_trouble,
        delays_s=DATABASE_RETRY_DELAYS_S,
        what="database",
    )


def _connection_trouble(error: BaseException) -> bool:
    if isinstance(error, OperationalError | InterfaceError):
        return True
    if getattr(error, "connection_invalidated", False):
        return True
    # psycopg's word for a pooled connection whose last statement died with the server: the
    # pool throws it away, so the next try gets a fresh one.
    return "transaction status ACTIVE" in str(getattr(error, "orig", ""))
