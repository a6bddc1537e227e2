"""AppendLog's zeros written ahead: overwritten by the next writes, renewed past
their end, cut on close, and every frame readable wherever the writes fell."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a3redis.storage import codec
from a3redis.storage.files import AppendLog
from tests.support.records import rec

WRITE_AHEAD = 300


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.binary(max_size=200), min_size=1, max_size=4), max_size=8))
def test_batches_overwrite_the_zeros_ahead_and_renew_them_past_their_end(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[bytes]]
) -> None:
    path = tmp_path_factory.mktemp("log") / "log-0000000001.wal"
    log_file = AppendLog(path, write_ahead=WRITE_AHEAD)
    written = []
    wall = 0
    for values in batches:
        records = []
        for value in values:
            wall += 1
            records.append(rec(b"k%d" % wall, value, wall))
        log_file.write_and_sync(log_file.frames([codec.encode_payload(r) for r in records]))
        written.extend(records)
        data = path.read_bytes()
        # The frames, then what is left of the zeros last written ahead: a write
        # that fits in them overwrites, one that does not writes new ones.
        assert data[log_file.size :] == bytes(len(data) - log_file.size)
        assert 0 <= len(data) - log_file.size <= WRITE_AHEAD
        decoded = codec.decode_file(data, codec.FileKind.LOG)
        assert decoded.records == written
        assert decoded.valid_length == log_file.size
    size = log_file.size
    log_file.close()
    assert path.stat().st_size == size


def test_a_log_without_write_ahead_holds_only_its_frames(tmp_path: Path) -> None:
    path = tmp_path / "log-0000000001.wal"
    log_file = AppendLog(path)
    log_file.write_and_sync(log_file.frames([codec.encode_payload(rec(b"a", b"1", 1))]))
    assert path.stat().st_size == log_file.size
    log_file.close()
