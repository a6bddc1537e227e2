"""Waiting for a condition, bounded in time: the one polling rule of the tests.

Rules: a wait always has a bound and, when it runs out, fails with what it was
waiting for (and the last transient error, if any). A condition that cannot be
checked this time (a node still starting refuses the connection: OSError; a
check that raises TransientError) counts as "not yet", not as a failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio


class TransientError(Exception):
    """A check that could not be made this time; `wait_for` tries again."""


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> float:
    """Poll until `condition` holds; return the seconds it took."""
    started = time.monotonic()
    last_error: Exception | None = None
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except (TransientError, OSError) as error:
            last_error = error
        if time.monotonic() - started >= timeout:
            detail = f" (last error: {last_error})" if last_error else ""
            raise AssertionError(f"{what}: not within {timeout}s{detail}")
        time.sleep(every)


async def wait_for_in_trio(
    condition: Callable[[], bool], timeout: float = 10, every: float = 0.01
) -> None:
    """Inside trio: poll a condition that offers no event to wait on (trio.TooSlowError)."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(every)
