"""Helpers for supervisors that hand a nursery-backed resource to their caller.

Rules: an exception raised by the caller's own code inside `async with
resource:` reaches the caller as itself, not wrapped in an ExceptionGroup by
the resource's internal nursery; genuine multi-failure groups stay groups.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def unwrap_single_group() -> Iterator[None]:
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            found.extend(_leaves(error))
        else:
            found.append(error)
    return found
