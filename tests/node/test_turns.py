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


def test_a_thread_working_in_turns_leaves_another_thread_the_interpreter() -> None:
    # The main thread keeps making short blocking calls, as the event loop does;
    # how long it waits to run again after each is what the turns bound.
    done = threading.Event()

    def busy() -> None:
        for _ in turns.in_turns(range(100_000_000), turn=256, pause=0.0005):
            if done.is_set():
                return

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        waits = []
        for _ in range(200):
            before = time.perf_counter()
            time.sleep(0.0002)  # releases the interpreter lock, then needs it back
            waits.append(time.perf_counter() - before - 0.0002)
    finally:
        done.set()
        worker.join()
    waits.sort()
    # Without turns the median wait is a switch interval (5 ms); with them, a turn.
    assert waits[len(waits) // 2] < 0.002
