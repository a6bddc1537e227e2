"""The hint store's own files: durable across restarts, newest per key, expiring."""

from __future__ import annotations

from pathlib import Path

from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.hints import HintStore


def rec(key: bytes, wall: int, value: bytes | None = b"v") -> Record:
    return Record(key, value, Version(wall, 0, "node-1"))


async def test_hints_survive_a_restart_and_keep_the_newest_per_key(tmp_path: Path) -> None:
    now = 1_000_000
    hints = HintStore(tmp_path, window_s=3600, wall_ms=lambda: now)
    hints.load()
    await hints.store("node-2", [rec(b"a", now - 5), rec(b"b", now - 4)])
    await hints.store("node-2", [rec(b"a", now - 1, None), rec(b"b", now - 9)])
    await hints.store("node-3", [rec(b"c", now)])
    assert hints.pending() == {"node-2": 2, "node-3": 1}

    reopened = HintStore(tmp_path, window_s=3600, wall_ms=lambda: now)
    reopened.load()
    assert reopened.pending() == {"node-2": 2, "node-3": 1}
    assert reopened._hints["node-2"][b"a"] == rec(b"a", now - 1, None)
    assert reopened._hints["node-2"][b"b"] == rec(b"b", now - 4)


async def test_hints_older_than_the_window_are_dropped(tmp_path: Path) -> None:
    now = 10_000_000
    hints = HintStore(tmp_path, window_s=60, wall_ms=lambda: now)
    hints.load()
    await hints.store("node-2", [rec(b"old", now - 61_000), rec(b"new", now - 1_000)])
    later = HintStore(tmp_path, window_s=60, wall_ms=lambda: now)
    later.load()
    assert list(later._hints["node-2"]) == [b"new"]
    assert later.expired == 1


async def test_a_torn_hints_file_keeps_its_whole_records(tmp_path: Path) -> None:
    hints = HintStore(tmp_path, window_s=3600, wall_ms=lambda: 5_000)
    hints.load()
    await hints.store("node-2", [rec(b"a", 4_000), rec(b"b", 4_001)])
    with open(tmp_path / "node-2.hints", "ab") as handle:
        handle.write(b"\x20\x00\x00\x00partial")
    reopened = HintStore(tmp_path, window_s=3600, wall_ms=lambda: 5_000)
    reopened.load()
    assert reopened.pending() == {"node-2": 2}
