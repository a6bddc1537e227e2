"""The hint store's own files: durable across restarts, newest per key, expiring."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
import trio

from a3redis.cluster.hinted_handoff import HintStore
from a3redis.cluster.topology import Topology
from a3redis.core.hinted_handoff import REWRITE_SLACK
from a3redis.core.membership import (
    GossipMessage,
    Membership,
    MembershipSettings,
    MemberState,
    Status,
)
from tests.support.records import rec


async def test_hints_survive_a_restart_and_keep_the_newest_per_key(tmp_path: Path) -> None:
    now = 1_000_000
    hints = HintStore(tmp_path, window_s=3600, wall_ms=lambda: now)
    hints.load()
    await hints.store("node-2", [rec(b"a", b"v", now - 5), rec(b"b", b"v", now - 4)])
    await hints.store("node-2", [rec(b"a", None, now - 1), rec(b"b", b"v", now - 9)])
    await hints.store("node-3", [rec(b"c", b"v", now)])
    assert hints.pending() == {"node-2": 2, "node-3": 1}

    reopened = HintStore(tmp_path, window_s=3600, wall_ms=lambda: now)
    reopened.load()
    assert reopened.pending() == {"node-2": 2, "node-3": 1}
    assert reopened.held("node-2")[b"a"] == rec(b"a", None, now - 1)
    assert reopened.held("node-2")[b"b"] == rec(b"b", b"v", now - 4)


async def test_hints_older_than_the_window_are_dropped(tmp_path: Path) -> None:
    now = 10_000_000
    hints = HintStore(tmp_path, window_s=60, wall_ms=lambda: now)
    hints.load()
    await hints.store("node-2", [rec(b"old", b"v", now - 61_000), rec(b"new", b"v", now - 1_000)])
    later = HintStore(tmp_path, window_s=60, wall_ms=lambda: now)
    later.load()
    assert list(later.held("node-2")) == [b"new"]
    assert later.expired == 1


async def test_a_torn_hints_file_keeps_its_whole_records(tmp_path: Path) -> None:
    hints = HintStore(tmp_path, window_s=3600, wall_ms=lambda: 5_000)
    hints.load()
    await hints.store("node-2", [rec(b"a", b"v", 4_000), rec(b"b", b"v", 4_001)])
    with open(tmp_path / "node-2.hints", "ab") as handle:
        handle.write(b"\x20\x00\x00\x00partial")
    reopened = HintStore(tmp_path, window_s=3600, wall_ms=lambda: 5_000)
    reopened.load()
    assert reopened.pending() == {"node-2": 2}


async def test_a_hint_file_is_only_ever_named_by_a_valid_id_inside_its_directory(
    tmp_path: Path,
) -> None:
    hints = HintStore(tmp_path / "hints", window_s=3600, wall_ms=lambda: 5_000)
    hints.load()
    for odd in ("../../x", "a/b", "x" * 256, "\ud800", ".", ""):
        with pytest.raises(AssertionError):
            await hints.store(odd, [rec(b"a", b"v", 4_000)])
    await hints.store("node-2", [rec(b"a", b"v", 4_000)])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["hints", "node-2.hints"]


async def test_files_an_older_release_named_badly_are_left_alone_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "hints"
    directory.mkdir()
    (directory / "a b.hints").write_bytes(b"whatever")
    (directory / "-x.hints").write_bytes(b"whatever")
    (directory / "dir.hints").mkdir()
    hints = HintStore(directory, window_s=3600, wall_ms=lambda: 5_000)
    hints.load()
    assert hints.pending() == {}
    assert (directory / "a b.hints").exists() and (directory / "dir.hints").is_dir()
    assert caplog.text.count("not named by a valid node id") == 1


async def test_the_file_of_a_target_that_stays_down_is_rewritten_not_grown(
    tmp_path: Path,
) -> None:
    """A dead target's file held every overwrite until delivery, which never came."""
    now = 1_000_000
    hints = HintStore(tmp_path, window_s=3600, wall_ms=lambda: now)
    hints.load()
    membership = Membership(
        MemberState("node-1", "a:1", "a:2", Status.ALIVE, 1), "c", 3, MembershipSettings()
    )
    membership.on_exchange(
        GossipMessage("c", 3, "node-2", (MemberState("node-2", "b:1", "b:2", Status.DEAD, 1),)),
        0.0,
    )
    # Each round overwrites the same 100 keys, until the file holds far more than its live hints.
    for round_ in range(3 + REWRITE_SLACK // 100):
        await hints.store("node-2", [rec(b"k%d" % i, b"v", now - 100 + round_) for i in range(100)])
    grown = (tmp_path / "node-2.hints").stat().st_size
    cluster = cast(Topology, SimpleNamespace(membership=membership))
    with trio.move_on_after(0.5):
        await hints.run_delivery(cluster, interval=0.1)
    assert (tmp_path / "node-2.hints").stat().st_size < grown / 10
    reopened = HintStore(tmp_path, window_s=3600, wall_ms=lambda: now)
    reopened.load()
    assert reopened.pending() == hints.pending() == {"node-2": len(hints.held("node-2"))}
    # Once the hints expire, the file goes.
    now += 3_600_001
    with trio.move_on_after(0.5):
        await hints.run_delivery(cluster, interval=0.1)
    assert not (tmp_path / "node-2.hints").exists()


async def test_a_disk_error_keeping_hints_is_counted_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hints = HintStore(tmp_path / "hints", window_s=3600, wall_ms=lambda: 5_000)
    hints.load()

    def disk_full(path: Path, payloads: list[bytes]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(HintStore, "_append", staticmethod(disk_full))
    await hints.store("node-2", [rec(b"a", b"v", 4_000)])
    await hints.store("node-2", [rec(b"b", b"v", 4_000)])
    assert hints.pending() == {"node-2": 2}  # kept in memory
    assert hints.errors.counts == {("hints_store", "OSError"): 2}
