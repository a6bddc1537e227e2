"""Files of format v1 (written before records carried an expiry) still load.

The fixtures in tests/storage/data/v1 were made by the release that wrote
format v1 (tests/storage/data/make_v1_fixtures.py says how); a node of today
opens such a DATA_DIR and hints directory as they are and reads every record
back with no expiry, and later writes go on in the current format.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from a3redis.cluster.hinted_handoff import HintStore
from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.storage import codec
from a3redis.storage.store import Store

V1 = Path(__file__).parent / "data" / "v1"
WALL = 1_764_000_000_000


async def test_a_v1_data_dir_loads_with_every_record_and_no_expiry(tmp_path: Path) -> None:
    shutil.copytree(V1 / "data", tmp_path / "data")
    async with Store.open(tmp_path / "data") as store:
        alpha = store.get(b"alpha")
        assert alpha is not None and alpha.value == b"two"
        assert alpha.version == Version(WALL + 10, 0, "node-1")
        assert store.get(b"beta") is None  # purged in the log
        gamma = store.get(b"gamma")
        assert gamma is not None and gamma.value is None
        delta = store.get(b"delta")
        assert delta is not None and delta.value == b"four"
        assert [r.key for r in store.scan(include_tombstones=True)] == [
            b"alpha",
            b"delta",
            b"gamma",
        ]
        assert all(r.expires_at_ms == 0 for r in store.scan(include_tombstones=True))
        await store.apply(alpha._replace(value=b"three", version=Version(WALL + 30, 0, "node-1")))
    async with Store.open(tmp_path / "data") as store:
        again = store.get(b"alpha")
        assert again is not None and again.value == b"three"
        assert store.get(b"delta") == delta


def test_a_v1_hints_file_loads(tmp_path: Path) -> None:
    shutil.copytree(V1 / "hints", tmp_path / "hints")
    hints = HintStore(tmp_path / "hints", window_s=3600, wall_ms=lambda: WALL + 100)
    hints.load()
    held = hints.held("node-2")
    assert sorted(held) == [b"epsilon", b"zeta"]
    assert held[b"epsilon"].value == b"five" and held[b"zeta"].value is None
    assert all(r.expires_at_ms == 0 for r in held.values())


async def test_writes_after_the_upgrade_go_to_a_new_log_of_the_current_format(
    tmp_path: Path,
) -> None:
    shutil.copytree(V1 / "data", tmp_path / "data")
    v1_log = (V1 / "data" / "log-0000000002.wal").read_bytes()
    async with Store.open(tmp_path / "data") as store:
        ttl = Record(b"session", b"s", Version(WALL + 40, 0, "node-1"), WALL + 60_000)
        assert await store.apply(ttl)
    # The v1 log is never appended to: it would mix layouts.
    assert (tmp_path / "data" / "log-0000000002.wal").read_bytes() == v1_log
    newer = (tmp_path / "data" / "log-0000000003.wal").read_bytes()
    assert codec.header_format(newer) == codec.FORMAT_VERSION
    async with Store.open(tmp_path / "data") as store:
        assert store.get(b"session") == ttl
        alpha = store.get(b"alpha")
        assert alpha is not None and alpha.value == b"two"


def test_a_v1_hints_file_is_rewritten_in_the_current_format_on_load(tmp_path: Path) -> None:
    shutil.copytree(V1 / "hints", tmp_path / "hints")
    HintStore(tmp_path / "hints", window_s=3600, wall_ms=lambda: WALL + 100).load()
    data = (tmp_path / "hints" / "node-2.hints").read_bytes()
    assert codec.header_format(data) == codec.FORMAT_VERSION
    decoded = codec.decode_file(data, codec.FileKind.HINTS)
    assert [r.key for r in decoded.records] == [b"epsilon", b"zeta"]


def test_a_record_without_an_expiry_is_encoded_as_in_format_v1() -> None:
    v1 = (V1 / "data" / "log-0000000002.wal").read_bytes()
    salt = codec.decode_header(v1, codec.FileKind.LOG)
    records = codec.decode_file(v1, codec.FileKind.LOG).records
    today = codec.encode_file(codec.FileKind.LOG, salt, records)
    # Only the header's format version (and so its checksum) differ.
    assert today[codec.HEADER_SIZE :] == v1[codec.HEADER_SIZE :]
    assert codec.header_format(today) == 2 and codec.header_format(v1) == 1


def test_a_v1_file_holding_a_frame_with_an_expiry_is_corrupt() -> None:
    v1 = (V1 / "data" / "log-0000000002.wal").read_bytes()
    salt = codec.decode_header(v1, codec.FileKind.LOG)
    ttl = Record(b"k", b"v", Version(WALL, 0, "node-1"), WALL + 1)
    frame = codec.frame(codec.encode_payload(ttl), codec.salt_seed(salt), len(v1))
    with pytest.raises(codec.CorruptLogError, match="invalid body"):
        codec.decode_file(v1 + frame, codec.FileKind.LOG)
    # The same frame in a file of the current format is a record with its expiry.
    v2 = codec.encode_file(codec.FileKind.LOG, salt, [ttl])
    assert codec.decode_file(v2, codec.FileKind.LOG).records == [ttl]
