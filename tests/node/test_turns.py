"""Worker-thread work in turns (a3redis.runtime.turns)."""

from __future__ import annotations

import threading
import time

import pytest

from a3redis.runtime import turns


def test_every_item_comes_through_in_order_with_a_pause_after_each_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(time, "sleep", pauses.append)
    assert list(turns.in_turns(range(10), turn=4, pause=0.25)) == list(range(10))
    assert pauses == [0.25, 0.25]


def median_wait_beside(turn: int) -> float:
    """The main thread's median wait for the interpreter after a short blocking call
    (as the event loop makes one per recv or send) while a thread iterates in turns."""
    done = threading.Event()

    def busy() -> None:
        for _ in turns.in_turns(range(100_000_000), turn=turn, pause=0.0005):
            if done.is_set():
                return

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        waits = []
        for _ in range(100):
            before = time.perf_counter()
            time.sleep(0.0002)  # releases the interpreter lock, then needs it back
            waits.append(time.perf_counter() - before - 0.0002)
    finally:
        done.set()
        worker.join()
    return sorted(waits)[len(waits) // 2]


def test_a_thread_working_in_turns_leaves_another_thread_the_interpreter() -> None:
    # One endless turn is a thread that never pauses: the main thread waits a
    # switch interval (5 ms) each time; with short turns, a small part of that.
    assert median_wait_beside(turn=256) < median_wait_beside(turn=10**9) / 3
