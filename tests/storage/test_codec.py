"""The file codec: round trips, headers, torn tails (cut) versus corruption (refused)."""

from __future__ import annotations

import itertools
import os
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.core.table import Entry
from a3redis.storage import codec
from a3redis.storage.codec import HEADER_SIZE, FileKind
from tests.storage.support import SALT, file_bytes, frames
from tests.support.records import rec

node_ids = st.text(max_size=12)  # any unicode, surrogates excluded (not encodable)
versions = st.builds(Version, st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), node_ids)
expiries = st.just(0) | st.integers(1, 2**64 - 1)
records = st.builds(
    Record, st.binary(max_size=40), st.none() | st.binary(max_size=40), versions, expiries
)
record_lists = st.lists(records, min_size=1, max_size=6)
salts = st.integers(0, 2**64 - 1)
SEED = codec.salt_seed(SALT)
OTHER_SALT = 0xFEDC_BA98_7654_3210


def decode(data: bytes | bytearray, kind: FileKind = FileKind.LOG) -> codec.DecodeResult:
    return codec.decode_file(data, kind)


def encoded_frames(items: list[Record], salt: int = SALT, one_batch: bool = False) -> list[bytes]:
    """Each record's frame, at the offset it has in a file of `items`: each
    record a batch of its own, or all of them one batch (`one_batch`)."""
    encoded = []
    offset = HEADER_SIZE
    seed = codec.salt_seed(salt)
    for item in items:
        back = offset - HEADER_SIZE if one_batch else 0
        encoded.append(codec.frame(codec.encode_payload(item), seed, offset, back))
        offset += len(encoded[-1])
    return encoded


def batched_file(items: list[Record], salt: int = SALT) -> bytes:
    """A log in which each record was a batch of its own (a store with one writer)."""
    return codec.encode_header(FileKind.LOG, salt) + b"".join(encoded_frames(items, salt))


def offsets(encoded: list[bytes]) -> list[int]:
    """Start offset of each frame, in a file that starts with a header."""
    return list(itertools.accumulate((len(f) for f in encoded[:-1]), initial=HEADER_SIZE))


def raw_frame(body: bytes, offset: int, salt: int = SALT) -> bytes:
    """A frame around any bytes, checksummed right for its place."""
    return codec.frame(body, codec.salt_seed(salt), offset)


def header(version: int = codec.FORMAT_VERSION, kind: int = FileKind.LOG) -> bytes:
    """A header with a good checksum, whatever its version and kind."""
    head = codec.MAGIC + struct.pack("<HHQ", version, kind, SALT)
    return head + struct.pack("<I", zlib.crc32(head))


# ----- round trips -------------------------------------------------------------------------


@given(st.lists(records, max_size=20), salts)
def test_round_trip(items: list[Record], salt: int) -> None:
    data = file_bytes(items, salt=salt)
    result = decode(data)
    assert result.records == items
    assert result.valid_length == len(data)
    assert result.tail_reason is None
    # Byte-level types survive too: b"" stays b"" (a value), None stays None (a tombstone).
    assert [r.value is None for r in result.records] == [r.value is None for r in items]


@given(record_lists, salts)
def test_the_file_is_its_header_then_each_frame_at_its_offset(
    items: list[Record], salt: int
) -> None:
    data = file_bytes(items, salt=salt)
    assert data[:HEADER_SIZE] == codec.encode_header(FileKind.LOG, salt)
    # A file written in one go is one batch.
    assert data[HEADER_SIZE:] == b"".join(encoded_frames(items, salt, one_batch=True))
    assert decode(batched_file(items, salt)).records == items
    assert codec.decode_header(data, FileKind.LOG) == salt


def test_frame_layout_is_length_checksum_back_payload() -> None:
    record = rec(b"key", b"value", 1)
    payload = codec.encode_payload(record)
    framed = codec.encode(record, SALT, 1000)
    start = zlib.crc32(SALT.to_bytes(8, "little")) ^ 1000
    assert framed == struct.pack("<III", len(payload), zlib.crc32(payload, start), 0) + payload
    # A later frame of a batch names how far back the batch began, and its
    # checksum covers that too.
    later = codec.frame(payload, SEED, 1000, back=300)
    assert (
        later == struct.pack("<III", len(payload), zlib.crc32(payload, start ^ 300), 300) + payload
    )
    capped = codec.frame(payload, SEED, 1000, back=2**40)
    assert capped[8:12] == struct.pack("<I", 2**32 - 1)
    # The frame length does not depend on where the frame goes.
    assert len(codec.encode(record)) == len(framed)


def test_frames_past_4_gib_use_the_offset_mod_2_32() -> None:
    far = 2**32 + 1000
    record = rec(b"key", b"value", 1)
    assert codec.encode(record, SALT, far) == codec.encode(record, SALT, 1000)
    # Decoding leaves the masking to zlib (a 4 GiB file is too big for a test).
    payload = codec.encode_payload(record)
    assert zlib.crc32(payload, SEED ^ far) == zlib.crc32(payload, (SEED ^ far) & 0xFFFFFFFF)


def test_empty_value_and_tombstone_are_distinct() -> None:
    items = [rec(b"k", b"", 1), rec(b"k", None, 1), rec(b"", b"v", 2, node="nœud-☃-𝄞")]
    decoded = decode(file_bytes(items)).records
    assert decoded == items
    assert decoded[0].value == b""
    assert decoded[1].value is None
    assert decoded[2].version.node_id == "nœud-☃-𝄞"


def test_empty_file_and_header_only_file() -> None:
    assert decode(b"") == codec.DecodeResult([], 0, None)
    assert decode(file_bytes([])) == codec.DecodeResult([], HEADER_SIZE, None)


def test_snapshot_and_hints_kinds_round_trip() -> None:
    items = [rec(b"a", b"1", 1), rec(b"b", None, 2)]
    for kind in (FileKind.SNAPSHOT, FileKind.HINTS):
        assert decode(file_bytes(items, kind), kind).records == items


# ----- headers -----------------------------------------------------------------------------


def test_a_header_torn_while_the_file_was_created_is_a_torn_tail_at_zero() -> None:
    whole = codec.encode_header(FileKind.LOG, SALT)
    for cut in range(1, HEADER_SIZE):
        for torn in (whole[:cut], bytes(cut)):
            result = decode(torn)
            assert (result.records, result.valid_length) == ([], 0), cut
            assert result.tail_reason == "incomplete file header"


@pytest.mark.parametrize("position", range(HEADER_SIZE))
def test_a_garbled_header_with_data_after_it_is_refused(position: int) -> None:
    data = bytearray(file_bytes([rec(b"a", b"1", 1)]))
    data[position] ^= 0x10
    with pytest.raises(codec.HeaderError) as caught:
        decode(data)
    assert caught.value.offset == 0
    assert "header" in str(caught.value)


@pytest.mark.parametrize("position", range(HEADER_SIZE))
def test_a_garbled_header_with_nothing_after_it_is_a_torn_tail(position: int) -> None:
    """A header is synced before any record, so nothing can be lost behind it."""
    data = bytearray(codec.encode_header(FileKind.LOG, SALT))
    data[position] ^= 0x10
    if position in (8, 9):  # but a version this build does not know is never guessed at
        with pytest.raises(codec.HeaderError, match="file format version"):
            decode(data)
    else:
        assert decode(data) == codec.DecodeResult(
            [], 0, "damaged file header with nothing after it"
        )


@pytest.mark.parametrize("with_data", [False, True], ids=["header-only", "with-records"])
def test_an_unknown_format_version_is_refused(with_data: bool) -> None:
    data = header(version=4) + (frames([rec(b"a", b"1", 1)]) if with_data else b"")
    with pytest.raises(
        codec.HeaderError, match="file format version 4, but this a3redis reads versions 1, 2, 3"
    ):
        decode(data)


def test_a_file_of_another_kind_is_refused() -> None:
    with pytest.raises(codec.HeaderError, match="a snapshot file where a log file belongs"):
        decode(file_bytes([], FileKind.SNAPSHOT), FileKind.LOG)
    with pytest.raises(codec.HeaderError, match="unknown kind 9"):
        decode(header(kind=9), FileKind.LOG)


def test_a_file_without_a_header_is_refused() -> None:
    """A file written before format v1 (frames only) or no a3redis file at all."""
    legacy = struct.pack("<II", 30, 0) + bytes(30)
    with pytest.raises(codec.HeaderError, match="before file format v1"):
        decode(legacy)


# ----- torn tails --------------------------------------------------------------------------


@settings(max_examples=60)
@given(record_lists)
def test_torn_tail_of_every_length_is_cut(items: list[Record]) -> None:
    data = file_bytes(items)
    last = offsets(encoded_frames(items))[-1]
    for cut in range(last, len(data)):
        result = decode(data[:cut])
        assert result.records == items[:-1], cut
        assert result.valid_length == last, cut
        assert (result.tail_reason is None) == (cut == last)


@pytest.mark.parametrize("zeros", [1, 7, 8, 26, 27, 28, 100, 4096])
def test_zero_filled_tail_is_cut(zeros: int) -> None:
    items = [rec(b"a", b"1", 1), rec(b"b", None, 2), rec(b"c", b"33", 3)]
    data = file_bytes(items)
    result = decode(data + bytes(zeros))
    assert result.records == items
    assert result.valid_length == len(data)
    # A partly written frame followed by zeros (preallocated blocks) is torn too.
    partial = data[: len(data) - 5] + bytes(zeros)
    result = decode(partial)
    assert result.records == items[:-1]
    assert result.valid_length == len(file_bytes(items[:-1]))


@settings(max_examples=80)
@given(record_lists, st.data(), st.integers(1, 255))
def test_flipped_byte_in_the_last_frame_is_a_torn_tail(
    items: list[Record], data: st.DataObject, mask: int
) -> None:
    encoded = encoded_frames(items)
    last = offsets(encoded)[-1]
    position = last + data.draw(st.integers(0, len(encoded[-1]) - 1), label="byte")
    damaged = bytearray(file_bytes(items))
    damaged[position] ^= mask
    result = decode(damaged)
    assert result.records == items[:-1]
    assert result.valid_length == last
    assert result.tail_reason is not None


def test_torn_frame_whose_value_embeds_a_frame_is_still_a_torn_tail() -> None:
    """A value holding a frame of this very file (a stored copy of the log) is no record."""
    first = rec(b"a", b"1", 1)
    first_frame = codec.encode(first, SALT, HEADER_SIZE)
    # The inner frame is checksummed for the place it had in the copied log...
    inner = codec.encode(rec(b"inner", b"payload", 7), SALT, HEADER_SIZE + len(first_frame))
    outer = codec.encode(
        rec(b"blob", inner + b"-and-more", 2), SALT, HEADER_SIZE + len(first_frame)
    )
    data = codec.encode_header(FileKind.LOG, SALT) + first_frame + outer
    # ...but here it sits inside the outer frame, at another offset.
    assert data.find(inner) > HEADER_SIZE + len(first_frame)
    result = decode(data[: len(data) - 3])  # tear the outer frame after the inner one
    assert result.records == [first]
    assert result.valid_length == HEADER_SIZE + len(first_frame)


@settings(max_examples=40)
@given(record_lists, st.integers(1, 1000))
def test_torn_frame_whose_value_is_a_copy_of_the_whole_file_is_a_torn_tail(
    items: list[Record], tear: int
) -> None:
    data = file_bytes(items)
    copy = rec(b"backup", data, 99)
    with_copy = data + codec.encode(copy, SALT, len(data))
    torn = with_copy[: len(with_copy) - min(tear, len(with_copy) - len(data) - 1)]
    result = decode(torn)
    assert result.records == items
    assert result.valid_length == len(data)


def test_a_frame_copied_from_another_file_inside_a_torn_tail_is_still_a_torn_tail() -> None:
    """Even at the very offset it had there: the other file has another salt."""
    items = [rec(b"a", b"1", 1), rec(b"b", b"2", 2)]
    data = file_bytes(items)
    torn_frame = codec.encode(rec(b"c", b"x" * 100, 3), SALT, len(data))[:50]
    foreign_at = len(data) + len(torn_frame)
    foreign = codec.encode(rec(b"foreign", b"y", 4), OTHER_SALT, foreign_at)
    result = decode(data + torn_frame + foreign)
    assert result.records == items
    assert result.valid_length == len(data)
    # The same frame with this file's salt would be a record after damage: corruption.
    native = codec.encode(rec(b"foreign", b"y", 4), SALT, foreign_at)
    with pytest.raises(codec.CorruptLogError) as caught:
        decode(data + torn_frame + native)
    assert caught.value.offset == len(data)
    assert f"valid record at offset {foreign_at}" in str(caught.value)


def test_stale_blocks_of_a_deleted_log_in_a_torn_tail_are_a_torn_tail() -> None:
    """A crash may show an old file's blocks past the last write: same layout, other salt."""
    old = [rec(b"k%d" % i, b"old-%d" % i, i + 1) for i in range(50)]
    new = [rec(b"k%d" % i, b"new-%d" % i, i + 100) for i in range(50)]
    old_file = file_bytes(old, salt=OTHER_SALT)
    new_file = file_bytes(new)
    assert len(old_file) == len(new_file)  # every old frame sits where a new one would
    kept = offsets(encoded_frames(new))[10]
    torn = new_file[: kept + 5] + old_file[kept + 5 :]
    result = decode(torn)
    assert result.records == new[:10]
    assert result.valid_length == kept


# ----- corruption --------------------------------------------------------------------------


@settings(max_examples=80)
@given(
    st.lists(records, min_size=2, max_size=6),
    st.data(),
    st.integers(1, 255),
)
def test_flipped_byte_in_a_middle_frame_is_corruption(
    items: list[Record], data: st.DataObject, mask: int
) -> None:
    encoded = encoded_frames(items)
    starts = offsets(encoded)
    index = data.draw(st.integers(0, len(items) - 2), label="frame")
    position = starts[index] + data.draw(st.integers(0, len(encoded[index]) - 1), label="byte")
    damaged = bytearray(batched_file(items))
    damaged[position] ^= mask
    with pytest.raises(codec.CorruptLogError) as caught:
        decode(damaged)
    assert caught.value.offset == starts[index]
    assert f"offset {starts[index]}" in str(caught.value)


def test_every_flipped_byte_of_a_middle_frame_is_corruption() -> None:
    items = [rec(b"a", b"x" * 10, 1), rec(b"bb", b"yy", 2), rec(b"c", None, 3)]
    encoded = encoded_frames(items)
    start = offsets(encoded)[1]
    for position in range(start, start + len(encoded[1])):
        damaged = bytearray(batched_file(items))
        damaged[position] ^= 0xFF
        with pytest.raises(codec.CorruptLogError) as caught:
            decode(damaged)
        assert caught.value.offset == start, position


def two_batches(first: list[Record], final: list[Record]) -> tuple[bytes, list[int]]:
    """A log of two batches, as the store writes them, and where each frame of
    the final batch starts."""
    seed = codec.salt_seed(SALT)
    data = codec.encode_header(FileKind.LOG, SALT)
    data += codec.frame_all([codec.encode_payload(r) for r in first], seed, len(data))
    final_start = len(data)
    data += codec.frame_all([codec.encode_payload(r) for r in final], seed, final_start)
    sizes = [codec.FRAME_HEADER_SIZE + len(codec.encode_payload(r)) for r in final]
    return data, list(itertools.accumulate(sizes[:-1], initial=final_start))


@settings(max_examples=80)
@given(record_lists, st.lists(records, min_size=2, max_size=6), st.data())
def test_a_page_of_the_final_batch_lost_with_later_ones_on_disk_is_a_torn_tail(
    first: list[Record], final: list[Record], data: st.DataObject
) -> None:
    """An overwriting write's pages reach the disk in any order: a crash may
    leave zeros (or old bytes) where the final batch's middle was, with its
    later frames whole. That batch was never acknowledged: cut it there."""
    file, starts = two_batches(first, final)
    index = data.draw(st.integers(0, len(final) - 2), label="lost frame")
    lost_from = starts[index] + data.draw(st.integers(0, 11), label="byte")
    lost_to = starts[index + 1] - data.draw(st.integers(0, 3), label="kept bytes")
    damaged = file[:lost_from] + bytes(lost_to - lost_from) + file[lost_to:]
    result = decode(damaged)
    assert result.records == first + final[:index]
    assert result.valid_length == starts[index]
    assert result.tail_reason is not None


@settings(max_examples=80)
@given(st.lists(records, min_size=2, max_size=6), record_lists, st.data())
def test_damage_in_an_earlier_batch_is_corruption_even_when_the_final_one_is_torn(
    first: list[Record], final: list[Record], data: st.DataObject
) -> None:
    """A frame of a later batch after the damage proves the damaged batch was
    synced (batches are written one at a time): corruption, whatever else the
    crash did to the final batch (here: its first frame lost too)."""
    file, starts = two_batches(first, final)
    first_starts = offsets(encoded_frames(first, one_batch=True))
    index = data.draw(st.integers(0, len(first) - 1), label="damaged frame")
    damaged = bytearray(file)
    damaged[first_starts[index] + data.draw(st.integers(0, 11), label="byte")] ^= 0x5A
    if len(final) > 1 and data.draw(st.booleans(), label="final batch torn too"):
        damaged[starts[0] : starts[1]] = bytes(starts[1] - starts[0])
    with pytest.raises(codec.CorruptLogError) as caught:
        decode(damaged)
    assert caught.value.offset == first_starts[index]


def test_a_frame_that_lies_about_its_batch_does_not_validate() -> None:
    """`back` is under the checksum: a flipped bit there cannot make a frame
    of a later batch pass for one of the torn batch."""
    file, starts = two_batches([rec(b"a", b"1", 1)], [rec(b"b", b"2", 2), rec(b"c", b"3", 3)])
    damaged = bytearray(file)
    damaged[starts[1] + 8] ^= 0x01
    assert codec.find_frame(bytes(damaged), SEED, starts[1]) is None
    result = decode(damaged)
    assert result.records == [rec(b"a", b"1", 1), rec(b"b", b"2", 2)]


def test_in_files_of_format_v2_any_valid_frame_after_a_bad_one_is_corruption() -> None:
    """v2 logs were only appended to, and their frames name no batch: the old
    rule holds for them."""
    items = [rec(b"a", b"1", 1), rec(b"b", b"2", 2), rec(b"c", b"3", 3)]
    data = bytearray(header(version=2))
    starts = []
    for item in items:
        payload = codec.encode_payload(item)
        starts.append(len(data))
        checksum = zlib.crc32(payload, SEED ^ len(data))
        data += struct.pack("<II", len(payload), checksum) + payload
    assert decode(bytes(data)).records == items
    data[starts[1] + 9] ^= 0x01
    with pytest.raises(codec.CorruptLogError) as caught:
        decode(bytes(data))
    assert caught.value.offset == starts[1]
    assert codec.find_frame(bytes(data), SEED, starts[1], file_format=2) == starts[2]


def test_a_frame_moved_to_another_offset_does_not_validate() -> None:
    items = [rec(b"a", b"1", 1), rec(b"b", b"2", 2), rec(b"c", b"3", 3)]
    encoded = encoded_frames(items)
    swapped = codec.encode_header(FileKind.LOG, SALT) + encoded[0] + encoded[2] + encoded[1]
    result = decode(swapped)  # neither moved frame checks out where it now is
    assert result.records == items[:1]
    assert result.valid_length == HEADER_SIZE + len(encoded[0])


def test_oversized_length_at_the_tail_is_torn_but_in_the_middle_is_corrupt() -> None:
    good = file_bytes([rec(b"a", b"1", 1)])
    huge = struct.pack("<II", codec.MAX_PAYLOAD_BYTES + 1, 0) + b"junk" * 10
    result = decode(good + huge)
    assert result.records == [rec(b"a", b"1", 1)]
    assert result.valid_length == len(good)
    assert result.tail_reason == "impossible frame length"
    after = frames([rec(b"b", b"2", 2)], offset=len(good) + len(huge))
    with pytest.raises(codec.CorruptLogError) as caught:
        decode(good + huge + after)
    assert caught.value.offset == len(good)


def test_checksummed_frame_with_invalid_kind_is_corruption_even_at_the_tail() -> None:
    good = file_bytes([rec(b"a", b"1", 1)])
    body = struct.pack("<BQIHI", 4, 1, 0, 2, 1) + b"n1" + b"k" + b"v"
    with pytest.raises(codec.CorruptLogError) as caught:
        decode(good + raw_frame(body, len(good)))
    assert caught.value.offset == len(good)


def test_checksummed_frame_with_overlong_key_is_corruption() -> None:
    body = struct.pack("<BQIHI", codec.KIND_VALUE, 1, 0, 2, 50) + b"n1" + b"k"
    with pytest.raises(codec.CorruptLogError) as caught:
        decode(file_bytes([]) + raw_frame(body, HEADER_SIZE))
    assert caught.value.offset == HEADER_SIZE


def test_checksummed_frame_with_invalid_utf8_node_id_is_corruption() -> None:
    good = file_bytes([rec(b"a", b"1", 1)])
    body = struct.pack("<BQIHI", codec.KIND_VALUE, 1, 0, 2, 1) + b"\xff\xfe" + b"k" + b"v"
    with pytest.raises(codec.CorruptLogError) as caught:
        decode(good + raw_frame(body, len(good)))
    assert caught.value.offset == len(good)


# ----- finding a frame after a bad one -----------------------------------------------------


@settings(max_examples=100)
@given(
    st.binary(max_size=300),
    records,
    st.binary(max_size=50),
    st.sampled_from(["random", "zeros", "kind-bytes"]),
)
def test_find_frame_finds_a_frame_anywhere_in_garbage(
    before: bytes, record: Record, after: bytes, filler: str
) -> None:
    if filler == "zeros":
        before, after = bytes(len(before)), bytes(len(after))
    elif filler == "kind-bytes":  # every position is a candidate for the fast scan
        before, after = b"\x01\x02" * (len(before) // 2), b"\x02" * len(after)
    position = HEADER_SIZE + len(before)
    data = file_bytes([]) + before + codec.encode(record, SALT, position) + after
    assert codec.find_frame(data, SEED, HEADER_SIZE) == position
    assert codec.find_frame(memoryview(data), SEED, position) == position
    assert codec.find_frame(data, SEED, position + 1) is None
    assert codec.find_frame(data, codec.salt_seed(OTHER_SALT), HEADER_SIZE) is None


def test_a_multi_megabyte_torn_tail_is_cut() -> None:
    """Zeros or random stale blocks: the scan for a valid frame after them finds none."""
    good = file_bytes([rec(b"a", b"1", 1)])
    for tail in (bytes(4 << 20), os.urandom(4 << 20)):
        result = decode(good + tail)
        assert result.valid_length == len(good)


# ----- payloads on the wire (Stream pages) ---------------------------------------------------


@given(st.lists(records, max_size=20))
def test_payloads_round_trip_to_the_records_and_their_exact_encodings(
    items: list[Record],
) -> None:
    encoded = [codec.encode_payload(item) for item in items]
    decoded, payloads = codec.unpack_payloads(codec.pack_payloads(encoded), len(items))
    assert decoded == items
    assert [r.value is None for r in decoded] == [r.value is None for r in items]
    assert payloads == encoded


@given(st.lists(records, max_size=20), st.integers(0, 2**64 - 1))
def test_entries_pack_as_their_records_do_and_none_beyond_the_wall_bound(
    items: list[Record], max_wall_ms: int
) -> None:
    """A source packs a page straight from its table's entries: the bytes are those
    of packing the records, and a key without an entry, or whose version is
    beyond the bound, is None."""
    keys = [item.key for item in items] + [b"absent"]
    entries: list[Entry | None] = [
        (r.value, r.version.wall_ms, r.version.logical, r.version.node_id, r.expires_at_ms)
        for r in items
    ]
    packed = codec.pack_entries(keys, [*entries, None], max_wall_ms)
    expected = [
        codec.pack_records([item]) if item.version.wall_ms <= max_wall_ms else None
        for item in items
    ]
    assert packed == [*expected, None]


def _damaged(packed: bytes, position: int, byte: int) -> bytes:
    position %= max(len(packed), 1)
    return packed[:position] + bytes([byte]) + packed[position + 1 :]


# Random bytes, and valid pages with one byte changed anywhere (most often accepted or
# refused for a subtle reason: a kind, a length, a flag, a node id).
hostile_payloads = st.binary(max_size=120) | st.builds(
    _damaged,
    st.lists(records, min_size=1, max_size=4).map(
        lambda items: codec.pack_payloads(codec.encode_payload(item) for item in items)
    ),
    st.integers(0, 30) | st.integers(0, 10_000),  # the first record's fields, or anywhere
    st.sampled_from([0, 1, 2, 3, 0x81, 0x82, 0xFF]) | st.integers(0, 255),
)


@settings(max_examples=300)
@given(hostile_payloads)
def test_any_bytes_are_refused_or_decode_to_records_that_encode_to_the_same_bytes(
    data: bytes,
) -> None:
    """What lets a joining node log a page's payloads as they are: decoding accepts
    exactly what encoding makes, whatever a peer sends."""
    try:
        decoded, payloads = codec.unpack_payloads(data, 1000)
    except codec.MalformedPayloadsError:
        return
    assert payloads == [codec.encode_payload(record) for record in decoded]
    assert codec.pack_payloads(payloads) == data


def _payload(kind: int, node: bytes = b"n1", key: bytes = b"k", rest: bytes = b"") -> bytes:
    return struct.pack("<BQIHI", kind, 5, 0, len(node), len(key)) + rest + node + key


@pytest.mark.parametrize(
    ("payloads", "reason"),
    [
        ([_payload(codec.KIND_PURGE)], "unknown kind 3"),
        ([_payload(9)], "unknown kind 9"),
        (
            [_payload(codec.KIND_VALUE | codec.EXPIRES_FLAG, rest=bytes(8))],
            "an expiry flag without an expiry",
        ),
        (
            [struct.pack("<BQIHI", codec.KIND_VALUE | codec.EXPIRES_FLAG, 5, 0, 0, 0) + bytes(4)],
            "expiry cut short",
        ),
        ([_payload(codec.KIND_TOMBSTONE) + b"value"], "fields overrun"),
        ([_payload(codec.KIND_VALUE, key=b"k")[:-1]], "fields overrun"),
        ([_payload(codec.KIND_VALUE, node=b"\xff\xfe")], "node id is not UTF-8"),
        ([b"\x01\x02", codec.encode_payload(rec(b"b", b"2", 2))], "impossible length"),
    ],
)
def test_malformed_payloads_are_refused_naming_what_is_wrong(
    payloads: list[bytes], reason: str
) -> None:
    good = codec.encode_payload(rec(b"a", b"1", 1))
    with pytest.raises(codec.MalformedPayloadsError, match=reason):
        codec.unpack_payloads(codec.pack_payloads([good, *payloads]), 10)


def test_payloads_cut_short_or_too_many_are_refused() -> None:
    packed = codec.pack_payloads([codec.encode_payload(rec(b"k%d" % n, b"v", n)) for n in range(3)])
    assert len(codec.unpack_payloads(packed, 3)[0]) == 3
    with pytest.raises(codec.MalformedPayloadsError, match="more than 2 records"):
        codec.unpack_payloads(packed, 2)
    for cut in (1, 10, 30):
        with pytest.raises(codec.MalformedPayloadsError, match=r"cut short|impossible length"):
            codec.unpack_payloads(packed[:-cut], 3)


def test_a_checksummed_frame_whose_node_id_is_not_utf8_is_corruption() -> None:
    body = struct.pack("<BQIHI", codec.KIND_VALUE, 5, 0, 1, 1) + b"\xff" + b"k" + b"v"
    with pytest.raises(codec.CorruptLogError, match="invalid node id"):
        decode(header() + raw_frame(body, HEADER_SIZE))
