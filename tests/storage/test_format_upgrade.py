"""Files of older formats still load: v1 (written before records carried an
expiry) and v2 (before frames named their batch).

The fixtures in tests/storage/data/v1 and v2 were made by the releases that
wrote those formats (tests/storage/data/make_fixtures.py says how); a node of
today opens such a DATA_DIR and hints directory as they are and reads every
record back, and later writes go on in the current format.
"""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import pytest

from a3redis.cluster.hinted_handoff import HintStore
from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.storage import codec
from a3redis.storage.store import Store

DATA = Path(__file__).parent / "data"
V1 = DATA / "v1"
WALL = 1_764_000_000_000
OLD_FORMATS = pytest.mark.parametrize("old", [1, 2], ids=["v1", "v2"])
# The v2 fixtures hold one more record, with an expiry (a v1 file cannot).
ETA = Record(b"eta", b"seven", Version(WALL + 13, 0, "node-3"), WALL + 10**12)


@OLD_FORMATS
async def test_an_old_data_dir_loads_with_every_record(tmp_path: Path, old: int) -> None:
    shutil.copytree(DATA / f"v{old}" / "data", tmp_path / "data")
    async with Store.open(tmp_path / "data") as store:
        alpha = store.get(b"alpha")
        assert alpha is not None and alpha.value == b"two"
        assert alpha.version == Version(WALL + 10, 0, "node-1")
        assert store.get(b"beta") is None  # purged in the log
        gamma = store.get(b"gamma")
        assert gamma is not None and gamma.value is None
        delta = store.get(b"delta")
        assert delta is not None and delta.value == b"four"
        expected = [b"alpha", b"delta", b"gamma"] + ([b"eta"] if old >= 2 else [])
        assert sorted(r.key for r in store.scan(include_tombstones=True)) == sorted(expected)
        assert store.get(b"eta") == (ETA if old >= 2 else None)
        assert all(r.expires_at_ms == 0 for r in store.scan() if r.key != b"eta")
        await store.apply(alpha._replace(value=b"three", version=Version(WALL + 30, 0, "node-1")))
    async with Store.open(tmp_path / "data") as store:
        again = store.get(b"alpha")
        assert again is not None and again.value == b"three"
        assert store.get(b"delta") == delta


@OLD_FORMATS
def test_an_old_hints_file_loads(tmp_path: Path, old: int) -> None:
    shutil.copytree(DATA / f"v{old}" / "hints", tmp_path / "hints")
    hints = HintStore(tmp_path / "hints", window_s=3600, wall_ms=lambda: WALL + 100)
    hints.load()
    held = hints.held("node-2")
    assert sorted(held) == [b"epsilon", b"zeta"]
    assert held[b"epsilon"].value == b"five" and held[b"zeta"].value is None
    assert all(r.expires_at_ms == 0 for r in held.values())


@OLD_FORMATS
async def test_writes_after_the_upgrade_go_to_a_new_log_of_the_current_format(
    tmp_path: Path, old: int
) -> None:
    shutil.copytree(DATA / f"v{old}" / "data", tmp_path / "data")
    old_log = (DATA / f"v{old}" / "data" / "log-0000000002.wal").read_bytes()
    async with Store.open(tmp_path / "data") as store:
        ttl = Record(b"session", b"s", Version(WALL + 40, 0, "node-1"), WALL + 60_000)
        assert await store.apply(ttl)
    # The old log is never appended to: it would mix layouts.
    assert (tmp_path / "data" / "log-0000000002.wal").read_bytes() == old_log
    newer = (tmp_path / "data" / "log-0000000003.wal").read_bytes()
    assert codec.header_format(newer) == codec.FORMAT_VERSION
    async with Store.open(tmp_path / "data") as store:
        assert store.get(b"session") == ttl
        alpha = store.get(b"alpha")
        assert alpha is not None and alpha.value == b"two"


@OLD_FORMATS
def test_an_old_hints_file_is_rewritten_in_the_current_format_on_load(
    tmp_path: Path, old: int
) -> None:
    shutil.copytree(DATA / f"v{old}" / "hints", tmp_path / "hints")
    HintStore(tmp_path / "hints", window_s=3600, wall_ms=lambda: WALL + 100).load()
    data = (tmp_path / "hints" / "node-2.hints").read_bytes()
    assert codec.header_format(data) == codec.FORMAT_VERSION
    decoded = codec.decode_file(data, codec.FileKind.HINTS)
    assert [r.key for r in decoded.records] == [b"epsilon", b"zeta"]


def test_frames_of_v3_carry_their_batch_and_old_frames_read_as_they_were() -> None:
    v2 = (DATA / "v2" / "data" / "log-0000000002.wal").read_bytes()
    salt = codec.decode_header(v2, codec.FileKind.LOG)
    records = codec.decode_file(v2, codec.FileKind.LOG).records
    today = codec.encode_file(codec.FileKind.LOG, salt, records)
    assert codec.header_format(today) == 3 and codec.header_format(v2) == 2
    # Each v3 frame is 4 bytes longer (its `back`); the payloads are those of v2.
    assert len(today) - len(v2) == 4 * len(records)
    assert codec.decode_file(today, codec.FileKind.LOG).records == records
    v1 = (V1 / "data" / "log-0000000002.wal").read_bytes()
    # A record without an expiry was encoded in v2 exactly as in v1.
    assert v2.startswith(v1[codec.HEADER_SIZE :], codec.HEADER_SIZE)


def test_a_v1_file_holding_a_frame_with_an_expiry_is_corrupt() -> None:
    v1 = (V1 / "data" / "log-0000000002.wal").read_bytes()
    salt = codec.decode_header(v1, codec.FileKind.LOG)
    ttl = Record(b"k", b"v", Version(WALL, 0, "node-1"), WALL + 1)
    payload = codec.encode_payload(ttl)
    # A v1 frame: no `back`, the checksum from the salt and the offset alone.
    checksum = zlib.crc32(payload, codec.salt_seed(salt) ^ len(v1))
    frame = struct.pack("<II", len(payload), checksum) + payload
    with pytest.raises(codec.CorruptLogError, match="invalid body"):
        codec.decode_file(v1 + frame, codec.FileKind.LOG)
    # The same record in a file of the current format is a record with its expiry.
    today = codec.encode_file(codec.FileKind.LOG, salt, [ttl])
    assert codec.decode_file(today, codec.FileKind.LOG).records == [ttl]
