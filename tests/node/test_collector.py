"""The collector's young passes, paced by time (a3redis.runtime.collector)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import trio

from a3redis.runtime.collector import pace_young_passes

CHUNKS = 20
PER_CHUNK = 1_000


@pytest.fixture
def no_automatic_passes() -> Iterator[None]:
    """CPython's own trigger out of the way: only the pacer (or nothing) collects."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.set_threshold(10**9, thresholds[1], thresholds[2])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


async def replace_objects(held: list[list[int]]) -> None:
    """Overwrite a store's worth of tracked objects: one new for each one freed,
    the load under which CPython's own count never starts a pass."""
    for chunk in range(CHUNKS):
        for slot in range(PER_CHUNK):
            held[chunk * PER_CHUNK + slot] = [chunk, slot]
        await trio.sleep(0.02)


async def test_without_the_pacer_an_overwriting_load_piles_up_in_the_young_generation(
    no_automatic_passes: None,
) -> None:
    held = [[n] for n in range(CHUNKS * PER_CHUNK)]
    gc.collect()
    await replace_objects(held)
    assert len(gc.get_objects(generation=0)) >= CHUNKS * PER_CHUNK


async def test_with_the_pacer_the_young_generation_holds_about_one_intervals_survivors(
    no_automatic_passes: None,
) -> None:
    held = [[n] for n in range(CHUNKS * PER_CHUNK)]
    gc.collect()
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(pace_young_passes, stop, 0.005)
        await replace_objects(held)
        await trio.sleep(0.03)
        young = len(gc.get_objects(generation=0))
        stop.set()
    assert young < PER_CHUNK


async def test_the_pacer_ends_when_told_to_stop() -> None:
    stop = trio.Event()
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            await nursery.start(pace_young_passes, stop, 10.0)
            stop.set()
