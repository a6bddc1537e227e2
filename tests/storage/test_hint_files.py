"""Hints files in the storage file format: a header of kind hints, torn tails, damage."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from a3redis.cluster.hinted_handoff import HintStore
from a3redis.storage import codec
from tests.support.records import rec

NOW = 1_000_000


def hint_store(path: Path) -> HintStore:
    hints = HintStore(path, window_s=3600, wall_ms=lambda: NOW)
    hints.load()
    return hints


def stored(path: Path, node: str = "node-2") -> list[bytes]:
    hints = hint_store(path)
    return sorted(hints.held(node))


async def test_a_hints_file_is_a_file_of_kind_hints(tmp_path: Path) -> None:
    hints = hint_store(tmp_path)
    await hints.store("node-2", [rec(b"a", b"1", NOW)])
    await hints.store("node-2", [rec(b"b", b"2", NOW)])
    data = (tmp_path / "node-2.hints").read_bytes()
    decoded = codec.decode_file(data, codec.FileKind.HINTS)
    assert decoded.records == [rec(b"a", b"1", NOW), rec(b"b", b"2", NOW)]
    assert decoded.valid_length == len(data)


async def test_a_torn_tail_is_cut_on_load_so_later_hints_are_read_back(tmp_path: Path) -> None:
    hints = hint_store(tmp_path)
    await hints.store("node-2", [rec(b"a", b"1", NOW)])
    path = tmp_path / "node-2.hints"
    whole = path.stat().st_size
    with open(path, "ab") as handle:
        handle.write(b"\x20\x00\x00\x00partial")
    reopened = hint_store(tmp_path)
    assert path.stat().st_size == whole
    # Appended after the cut: a later load finds them, rather than a bad frame before them.
    await reopened.store("node-2", [rec(b"b", b"2", NOW)])
    assert stored(tmp_path) == [b"a", b"b"]


async def test_a_hints_file_torn_in_its_header_starts_again(tmp_path: Path) -> None:
    (tmp_path / "node-2.hints").write_bytes(b"A3RED")
    hints = hint_store(tmp_path)
    assert hints.pending() == {}
    await hints.store("node-2", [rec(b"a", b"1", NOW)])
    assert stored(tmp_path) == [b"a"]


async def test_a_hints_file_with_a_bad_header_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hints = hint_store(tmp_path)
    await hints.store("node-2", [rec(b"a", b"1", NOW)])
    path = tmp_path / "node-2.hints"
    data = bytearray(path.read_bytes())
    data[13] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="a3redis.cluster.hinted_handoff"):
        reopened = hint_store(tmp_path)
    assert reopened.pending() == {}
    assert not path.exists()
    assert any("dropping unreadable hints file" in m for m in caplog.messages)
    await reopened.store("node-2", [rec(b"b", b"2", NOW)])
    assert stored(tmp_path) == [b"b"]


async def test_rewritten_hints_files_keep_the_format(tmp_path: Path) -> None:
    records = [rec(b"a", b"1", NOW), rec(b"b", None, NOW)]
    HintStore._rewrite(tmp_path / "node-2.hints", records)
    data = (tmp_path / "node-2.hints").read_bytes()
    assert codec.decode_file(data, codec.FileKind.HINTS).records == records
    assert not list(tmp_path.glob("*.tmp"))
    HintStore._rewrite(tmp_path / "node-2.hints", [])
    assert not (tmp_path / "node-2.hints").exists()
