"""Ride out a service that is briefly unreachable (a Postgres restart, an S3 outage).

    with_retries(action, retry_on=(OperationalError,), delays_s=(1, 2, 4), what="database")

runs `action`, and while it raises one of `retry_on` waits the next delay (a warning per retry)
and tries again; after the last delay the error of the final try goes to the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from jewelcut.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")


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
