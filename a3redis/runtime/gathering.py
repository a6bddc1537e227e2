"""Letting a batch gather: wait while the node still has other work to run.

Rules: one place for the rule group commit (a3redis.storage.store) and the
peer links (a3redis.cluster.peers) share: a batch about to leave first lets every
task that can still run (requests being decoded) add to it, for `limit`
seconds at most, and leaves at once when nothing else can run. A fixed sleep
instead idles the loop whenever every client already waits on the batch.
"""

from __future__ import annotations

import trio

# trio.testing re-exports this from trio's core. Importing trio.testing itself
# imports pytest wherever pytest is installed (for its RaisesGroup), a cost that
# every node start would pay in test and development environments.
from trio._core._run import wait_all_tasks_blocked


async def while_busy(limit: float) -> None:
    """Return once every other task is blocked, or after `limit` seconds."""
    # trio.testing's name notwithstanding, this is trio's one way to ask "has
    # every other task blocked?" (I/O that is ready counts as work: it is
    # polled before the answer).
    with trio.move_on_after(limit):
        await wait_all_tasks_blocked()
