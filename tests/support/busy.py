"""A task that keeps the event loop busy, for tests of "gather while busy"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


@asynccontextmanager
async def always_runnable(limit: float = 5.0) -> AsyncIterator[None]:
    """Keep one task runnable (never blocked) while the body runs.

    Fails if the body is still running after `limit` seconds: whatever it
    waits for waited for the loop to go idle, which this task never lets it.
    """
    spinning, gave_up = True, False

    async def spin() -> None:
        nonlocal gave_up
        deadline = trio.current_time() + limit
        while spinning:
            if trio.current_time() > deadline:
                gave_up = True
                return
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(spin)
        try:
            yield
        finally:
            spinning = False
    assert not gave_up, f"the body waited for an idle loop for more than {limit} s"
