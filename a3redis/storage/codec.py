"""Byte encoding of log, snapshot and hints files (pure, no I/O): format v3 (reads v1, v2).

Rules: a file is a 24-byte header, then a sequence of frames (little endian).

Header: `[8s magic b"A3REDIS\\0"][u16 format version = 3][u16 file kind]
[u64 salt][u32 crc32 of the previous 20 bytes]`. Kind 1 is a log, 2 a
snapshot, 3 a hints file. The salt is random, chosen when the file is created.

Frame (v3): `[u32 payload length][u32 checksum][u32 back][payload]`. Frames
are written in batches, each batch by one write; `back` is how many bytes
before this frame its batch's first frame starts (0 for that frame; capped
at 2**32 - 1). The checksum is `crc32(payload)` started from
`crc32(salt as u64) ^ (offset mod 2**32) ^ back`, where `offset` is where
the frame starts in its file. Frames of formats v1 and v2 are
`[u32 payload length][u32 checksum][payload]`, their checksum started from
`crc32(salt as u64) ^ (offset mod 2**32)`.

The payload is `[u8 kind][u64 wall_ms][u32 logical][u16 node id length]
[u32 key length][node id][key][value]`; kind 1 is a value, kind 2 a
tombstone, kind 3 a purge (logs only: the record of that key and version is
gone for good; decoded as `Purge`). Since v2 a kind byte with EXPIRES_FLAG
(0x80) set is followed by `[u64 expires_at_ms]` right after the fixed
fields, before the node id. Files of older formats are read as they are;
the store and the hints never append to one (they start a new file in the
current format), so a file never mixes layouts.

A frame therefore validates only in the file it was written to and only at
the offset it was written at: a copy of a frame inside a value, or stale
blocks of another file, never pass for a record. That is what makes the
torn-tail rule reliable. A bad frame is a torn tail (an unacknowledged final
batch, cut there) only if every valid frame after it belongs to a batch that
began at or before it; a valid frame of a later batch after it means
corruption, which must stop the node rather than lose data. A batch is
written only once the one before it is durable, so a crash can damage only
the final batch, but anywhere in it: a log may overwrite space it wrote
ahead of its records (files.AppendLog), and the pages of one overwriting
write reach the disk in no particular order. In files of formats v1 and v2
(appended, with no batch marks) any valid frame after a bad one means
corruption.
"""

from __future__ import annotations

import enum
import re
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.core.table import Entry

MAGIC = b"A3REDIS\x00"
FORMAT_VERSION = 3
# Formats this release reads; anything else stops the node, naming the file.
READABLE_FORMATS = (1, 2, 3)
_FILE_HEADER = struct.Struct("<8sHHQI")
HEADER_SIZE = _FILE_HEADER.size  # 24
_HEADER_CHECKED = HEADER_SIZE - 4  # the header's own crc covers everything before it

_FRAME = struct.Struct("<III")
FRAME_HEADER_SIZE = _FRAME.size
_BODY = struct.Struct("<BQIHI")
_FRAME_AND_BODY = struct.Struct("<IIIBQIHI")  # both in one unpack, for decoding
# Frames of formats v1 and v2: no `back`.
_OLD_FRAME = struct.Struct("<II")
_OLD_FRAME_AND_BODY = struct.Struct("<IIBQIHI")


class _Framing(NamedTuple):
    """How one format lays out a frame's header."""

    header: struct.Struct
    header_and_body: struct.Struct
    batched: bool  # whether the header holds `back`


_FRAMING_OF_FORMAT = {
    1: _Framing(_OLD_FRAME, _OLD_FRAME_AND_BODY, False),
    2: _Framing(_OLD_FRAME, _OLD_FRAME_AND_BODY, False),
    3: _Framing(_FRAME, _FRAME_AND_BODY, True),
}
KIND_VALUE = 1
KIND_TOMBSTONE = 2
KIND_PURGE = 3
EXPIRES_FLAG = 0x80
_EXPIRY = struct.Struct("<Q")
_KINDS_WITH_EXPIRY = frozenset(
    (
        KIND_VALUE,
        KIND_TOMBSTONE,
        KIND_PURGE,
        KIND_VALUE | EXPIRES_FLAG,
        KIND_TOMBSTONE | EXPIRES_FLAG,
    )
)
_KINDS_OF_FORMAT = {
    1: frozenset((KIND_VALUE, KIND_TOMBSTONE, KIND_PURGE)),
    2: _KINDS_WITH_EXPIRY,
    3: _KINDS_WITH_EXPIRY,
}
# A frame longer than this is corruption, not data: values are capped far below.
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
_MASK32 = 0xFFFFFFFF
# Where a frame may start, its payload's first byte (the kind) is 1, 2 or 3,
# possibly with EXPIRES_FLAG.
_KIND_BYTE = re.compile(b"[\x01-\x03\x81\x82]")


class Purge(Record):
    """A log entry that removes the record `(key, version)` for good (value is None).

    A tombstone purged after its grace period, or a copy handed off to its owners."""

    __slots__ = ()


class FileKind(enum.IntEnum):
    LOG = 1
    SNAPSHOT = 2
    HINTS = 3


class CorruptLogError(Exception):
    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"corrupt record at byte offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


class HeaderError(CorruptLogError):
    """The file header is unusable: not ours, damaged, or from another format version."""

    def __init__(self, reason: str) -> None:
        super().__init__(0, reason)
        self.args = (f"bad file header: {reason}",)


# ----- header --------------------------------------------------------------------------------


def encode_header(kind: FileKind, salt: int) -> bytes:
    head = _FILE_HEADER.pack(MAGIC, FORMAT_VERSION, kind, salt, 0)[:_HEADER_CHECKED]
    return head + struct.pack("<I", zlib.crc32(head))


def decode_header(data: bytes | bytearray | memoryview, kind: FileKind) -> int:
    """Check a file's header; return its salt or raise HeaderError."""
    if len(data) < HEADER_SIZE:
        raise HeaderError(f"incomplete header ({len(data)} of {HEADER_SIZE} bytes)")
    magic, version, found_kind, salt, checksum = _FILE_HEADER.unpack_from(data)
    if magic != MAGIC:
        raise HeaderError(
            "no a3redis format header (not an a3redis data file, a damaged one, "
            "or one written before file format v1)"
        )
    # The version comes before the checksum: a later format may lay out the rest differently.
    if version not in READABLE_FORMATS:
        raise HeaderError(
            f"file format version {version}, but this a3redis reads versions "
            f"{', '.join(map(str, READABLE_FORMATS))} (written by a newer a3redis, or a "
            "damaged header)"
        )
    if zlib.crc32(memoryview(data)[:_HEADER_CHECKED]) != checksum:
        raise HeaderError("header checksum mismatch")
    if found_kind != kind:
        try:
            found = FileKind(found_kind).name.lower()
        except ValueError:
            found = f"unknown kind {found_kind}"
        raise HeaderError(f"a {found} file where a {kind.name.lower()} file belongs")
    return int(salt)


def header_format(data: bytes | bytearray | memoryview) -> int:
    """The format version of a file whose header `decode_header` accepted."""
    return int(_FILE_HEADER.unpack_from(data)[1])


def salt_seed(salt: int) -> int:
    """The crc start value every frame checksum of a file derives from."""
    return zlib.crc32(salt.to_bytes(8, "little"))


# ----- frames --------------------------------------------------------------------------------


def encode_payload(record: Record) -> bytes:
    """A record's frame payload; raises (struct.error) if a field is out of range."""
    version = record.version
    node = version.node_id.encode()
    if isinstance(record, Purge):
        kind, value = KIND_PURGE, b""
    elif record.value is None:
        kind, value = KIND_TOMBSTONE, b""
    else:
        kind, value = KIND_VALUE, record.value
    expires = record.expires_at_ms
    if expires and kind != KIND_PURGE:
        body = _BODY.pack(
            kind | EXPIRES_FLAG, version.wall_ms, version.logical, len(node), len(record.key)
        )
        return b"".join((body, _EXPIRY.pack(expires), node, record.key, value))
    body = _BODY.pack(kind, version.wall_ms, version.logical, len(node), len(record.key))
    return b"".join((body, node, record.key, value))


def frame(payload: bytes, seed: int, offset: int, back: int = 0) -> bytes:
    """Frame `payload` to start at `offset` of a file whose salt_seed is `seed`,
    `back` bytes after the first frame of its batch (0: it is the first)."""
    back = min(back, _MASK32)
    checksum = zlib.crc32(payload, seed ^ (offset & _MASK32) ^ back)
    return _FRAME.pack(len(payload), checksum, back) + payload


def frame_all(payloads: Iterable[bytes], seed: int, offset: int) -> bytes:
    """Frame payloads as one batch, to be written in one go, the first at `offset`."""
    out: list[bytes] = []
    crc32 = zlib.crc32
    pack = _FRAME.pack
    mask = _MASK32
    header = FRAME_HEADER_SIZE
    start = offset
    for payload in payloads:
        back = offset - start
        if back > mask:
            back = mask
        out.append(pack(len(payload), crc32(payload, seed ^ (offset & mask) ^ back), back))
        out.append(payload)
        offset += header + len(payload)
    return b"".join(out)


def encode(record: Record, salt: int = 0, offset: int = 0) -> bytes:
    """One record's frame, at `offset` of a file with `salt`.

    The defaults only suit measuring a frame (its length does not depend on
    them): offset 0 is a header, so such a frame never validates in a file.
    """
    return frame(encode_payload(record), salt_seed(salt), offset)


def encode_file(kind: FileKind, salt: int, records: Iterable[Record]) -> bytes:
    """A whole file: header and every record."""
    seed = salt_seed(salt)
    payloads = (encode_payload(record) for record in records)
    return encode_header(kind, salt) + frame_all(payloads, seed, HEADER_SIZE)


# ----- decoding ------------------------------------------------------------------------------


@dataclass(slots=True)
class DecodeResult:
    records: list[Record]
    # Bytes that hold the header and whole, valid frames; anything after is a
    # torn tail to cut. 0: the header itself is torn (a crash while creating).
    valid_length: int
    # Why the tail is bad (None: there is no tail).
    tail_reason: str | None = None


def decode_file(data: bytes | bytearray | memoryview, kind: FileKind) -> DecodeResult:
    """Decode a whole file; raise CorruptLogError (HeaderError) for damage before the tail.

    A header that is incomplete, or bad with nothing after it, is a torn
    tail at 0: a crash while the file was being created (no record can
    have been written, since the header is synced first). A bad header
    with bytes after it is never guessed at, and an unknown format version
    or file kind is never read.
    """
    size = len(data)
    if size < HEADER_SIZE:
        reason = "incomplete file header" if size else None
        return DecodeResult([], 0, reason)
    if size == HEADER_SIZE:
        magic, version, _, _, checksum = _FILE_HEADER.unpack_from(data)
        damaged = magic != MAGIC or (
            version in READABLE_FORMATS
            and zlib.crc32(memoryview(data)[:_HEADER_CHECKED]) != checksum
        )
        if damaged:
            return DecodeResult([], 0, "damaged file header with nothing after it")
    salt = decode_header(data, kind)
    return decode_frames(data, salt_seed(salt), HEADER_SIZE, header_format(data))


def decode_frames(
    data: bytes | bytearray | memoryview,
    seed: int,
    start: int,
    file_format: int = FORMAT_VERSION,
) -> DecodeResult:
    """Decode the frames of `data` (a whole file of `file_format`) from `start` on.

    A bad frame is a torn tail only if no valid frame of a later batch
    starts after it (see the module's rules): batches are written one at a
    time, each once the one before is durable, so a crash can only damage
    the final batch. Anything else is corruption, and cutting there would
    lose data.
    """
    # Slicing bytes (not a memoryview) makes each field in one step, one unpack
    # reads a frame's header and body together, and tuple.__new__ skips the
    # NamedTuple constructors' Python frames: decoding is most of a restart.
    buf = data if isinstance(data, bytes) else bytes(data)
    view = memoryview(buf)
    size = len(buf)
    records: list[Record] = []
    append = records.append
    node_ids: dict[bytes, str] = {}
    framing = _FRAMING_OF_FORMAT[file_format]
    batched = framing.batched
    header = framing.header.size
    unpack_header = framing.header.unpack_from
    unpack_frame = framing.header_and_body.unpack_from
    frame_and_body = framing.header_and_body.size
    body_size = _BODY.size
    crc32 = zlib.crc32
    new = tuple.__new__
    kinds = _KINDS_OF_FORMAT[file_format]
    unpack_expiry = _EXPIRY.unpack_from
    offset = start
    back = 0
    tail_reason = None
    while offset + header <= size:
        if offset + frame_and_body > size:
            # No room for a body: the length checks below find this frame torn.
            length, checksum, *_ = unpack_header(buf, offset)
            kind = wall_ms = logical = node_len = key_len = 0
        elif batched:
            length, checksum, back, kind, wall_ms, logical, node_len, key_len = unpack_frame(
                buf, offset
            )
        else:
            length, checksum, kind, wall_ms, logical, node_len, key_len = unpack_frame(buf, offset)
        payload_start = offset + header
        end = payload_start + length
        if length < body_size or length > MAX_PAYLOAD_BYTES or end > size:
            plausible = body_size <= length <= MAX_PAYLOAD_BYTES
            tail_reason = "incomplete frame" if plausible else "impossible frame length"
            _require_torn_tail(data, seed, offset, tail_reason, file_format)
            break
        # zlib.crc32 takes its start value mod 2**32: no mask needed on this hot path.
        if crc32(view[payload_start:end], seed ^ offset ^ back) != checksum:
            tail_reason = "checksum mismatch"
            if end == size:
                # The frame is whole: a write torn by a crash, or a damaged final record.
                tail_reason = "checksum mismatch in a frame that reaches the end of the file"
            _require_torn_tail(data, seed, offset, tail_reason, file_format)
            break
        node_start = payload_start + body_size
        expires = 0
        if kind & EXPIRES_FLAG:
            if node_start + 8 <= end:
                (expires,) = unpack_expiry(buf, node_start)
            node_start += 8
        key_start = node_start + node_len
        key_end = key_start + key_len
        if key_end > end or kind not in kinds:
            raise CorruptLogError(offset, "checksummed frame with an invalid body")
        kind &= ~EXPIRES_FLAG
        raw_node = buf[node_start:key_start]
        node = node_ids.get(raw_node)
        if node is None:
            node = _new_node_id(raw_node, node_ids)
            if node is None:
                raise CorruptLogError(offset, "checksummed frame with an invalid node id")
        value = buf[key_end:end] if kind == KIND_VALUE else None
        version = new(Version, (wall_ms, logical, node))
        if kind == KIND_PURGE:
            append(new(Purge, (buf[key_start:key_end], None, version, 0)))
        else:
            append(new(Record, (buf[key_start:key_end], value, version, expires)))
        offset = end
    if offset < size and tail_reason is None:
        tail_reason = "incomplete frame header"
        _require_torn_tail(data, seed, offset, tail_reason, file_format)
    return DecodeResult(records, offset, tail_reason)


def _new_node_id(raw: bytes, node_ids: dict[bytes, str]) -> str | None:
    """`raw` decoded, and remembered in `node_ids` (a page or a file repeats a few
    node ids many times); None if it is not UTF-8."""
    try:
        node = node_ids[raw] = raw.decode()
    except UnicodeDecodeError:
        return None
    return node


def _require_torn_tail(
    data: bytes | bytearray | memoryview, seed: int, offset: int, reason: str, file_format: int
) -> None:
    """Raise CorruptLogError unless the bad frame at `offset` is in the final batch:
    unless every valid frame after it belongs to a batch that began at or
    before it. (Frames of formats v1 and v2 name no batch: any valid one after
    it is corruption.)"""
    for position, back in valid_frames(data, seed, offset + 1, file_format):
        if position - back > offset:
            raise CorruptLogError(
                offset, f"{reason}, followed by a valid record at offset {position}"
            )


def find_frame(
    data: bytes | bytearray | memoryview, seed: int, start: int, file_format: int = FORMAT_VERSION
) -> int | None:
    """The first offset >= `start` where a valid frame of this file begins, if any."""
    for position, _ in valid_frames(data, seed, start, file_format):
        return position
    return None


def valid_frames(
    data: bytes | bytearray | memoryview, seed: int, start: int, file_format: int = FORMAT_VERSION
) -> Iterator[tuple[int, int]]:
    """Each valid frame of this file at or after `start`: its offset and its `back`
    (0 in formats without batches), in order; a frame's own bytes are skipped.

    Only offsets whose payload kind byte is a kind can start a frame; a
    regular expression finds those in C, so a long tail of zeros (the usual
    torn tail, or space written ahead) costs one pass, not a Python loop per byte.
    """
    buffer = data if isinstance(data, bytes | bytearray) else bytes(data)
    size = len(buffer)
    framing = _FRAMING_OF_FORMAT[file_format]
    batched = framing.batched
    header = framing.header.size
    unpack_header = framing.header.unpack_from
    unpack_body = _BODY.unpack_from
    body_size = _BODY.size
    crc32 = zlib.crc32
    view = memoryview(buffer)
    skip_to = start
    for match in _KIND_BYTE.finditer(buffer, start + header):
        payload_start = match.start()
        position = payload_start - header
        if position < skip_to:
            continue
        if payload_start + body_size > size:
            break
        length, checksum, *rest = unpack_header(buffer, position)
        back = rest[0] if batched else 0
        end = payload_start + length
        if length < body_size or length > MAX_PAYLOAD_BYTES or end > size:
            continue
        kind, _, _, node_len, key_len = unpack_body(buffer, payload_start)
        if body_size + (8 if kind & EXPIRES_FLAG else 0) + node_len + key_len > length:
            continue
        if crc32(view[payload_start:end], seed ^ (position & _MASK32) ^ back) == checksum:
            yield position, back
            skip_to = end


# ----- payloads on the wire ------------------------------------------------------------------
#
# A Stream page (core.streaming) may carry its records as their log payloads,
# each after its u32 length: a joining node decodes them without a message
# object per record and writes the same bytes to its own log (framed there
# with its own file's checksums). They come from another node, so decoding is
# strict: a payload is accepted only if it is exactly what `encode_payload`
# makes of the record decoded from it, and that is what lets it go to the log
# as it is.

_LENGTH = struct.Struct("<I")
_LENGTH_AND_BODY = struct.Struct("<IBQIHI")
_WIRE_KINDS = frozenset(
    (KIND_VALUE, KIND_TOMBSTONE, KIND_VALUE | EXPIRES_FLAG, KIND_TOMBSTONE | EXPIRES_FLAG)
)


class MalformedPayloadsError(ValueError):
    """Bytes that are not payloads `pack_payloads` would have made."""


def pack_payloads(payloads: Iterable[bytes]) -> bytes:
    """Payloads one after the other, each after its u32 length."""
    pack = _LENGTH.pack
    out: list[bytes] = []
    for payload in payloads:
        out.append(pack(len(payload)))
        out.append(payload)
    return b"".join(out)


def pack_records(records: Iterable[Record]) -> bytes:
    """Each record's payload, packed as `pack_payloads` packs them (what
    `unpack_payloads` reads back); raises struct.error as `encode_payload` does."""
    encode = encode_payload
    return pack_payloads([encode(record) for record in records])


def pack_entries(
    keys: Sequence[bytes], entries: Sequence[Entry | None], max_wall_ms: int
) -> list[bytes | None]:
    """Each key's record, held as a table entry, as `pack_records` packs it (its u32
    length, then its payload); None where the key has no entry or its version's
    wall time is beyond `max_wall_ms`. Raises struct.error as `encode_payload` does.

    The same bytes as `pack_records` of the records the entries hold, made
    straight from the entries: a source answers a Stream page of thousands
    of records without a Record made, encoded and packed apart for each.
    """
    packed: list[bytes | None] = []
    append = packed.append
    pack = _LENGTH_AND_BODY.pack
    pack_expiry = _EXPIRY.pack
    join = b"".join
    body_size = _BODY.size
    node_bytes: dict[str, bytes] = {}
    for key, entry in zip(keys, entries, strict=True):
        if entry is None:
            append(None)
            continue
        value, wall_ms, logical, node_id, expires_at_ms = entry
        if wall_ms > max_wall_ms:
            append(None)
            continue
        node = node_bytes.get(node_id)
        if node is None:
            node = node_bytes[node_id] = node_id.encode()
        if value is None:
            kind, value = KIND_TOMBSTONE, b""
        else:
            kind = KIND_VALUE
        length = body_size + len(node) + len(key) + len(value)
        if expires_at_ms:
            head = pack(length + 8, kind | EXPIRES_FLAG, wall_ms, logical, len(node), len(key))
            append(join((head, pack_expiry(expires_at_ms), node, key, value)))
        else:
            head = pack(length, kind, wall_ms, logical, len(node), len(key))
            append(join((head, node, key, value)))
    return packed


def unpack_payloads(data: bytes, max_count: int) -> tuple[list[Record], list[bytes]]:
    """The records of `pack_payloads`' bytes and each one's payload; no purges.

    Raises MalformedPayloadsError for more than `max_count` payloads, a
    length that runs past the end, an unknown kind, fields that do not fill
    their payload exactly, an expiry flag without an expiry, or a node id
    that is not UTF-8. Field values (key and value sizes, the version) are
    the caller's to check, as for any record another node sends.
    """
    records: list[Record] = []
    payloads: list[bytes] = []
    node_ids: dict[bytes, str] = {}
    unpack = _LENGTH_AND_BODY.unpack_from
    unpack_expiry = _EXPIRY.unpack_from
    fixed = _LENGTH_AND_BODY.size
    body_size = _BODY.size
    kinds = _WIRE_KINDS
    new = tuple.__new__
    size = len(data)
    offset = 0
    while offset < size:
        if len(records) == max_count:
            raise MalformedPayloadsError(f"more than {max_count} records")
        if offset + fixed > size:
            raise MalformedPayloadsError(f"a record cut short at byte {offset}")
        length, kind, wall_ms, logical, node_len, key_len = unpack(data, offset)
        start = offset + 4
        end = start + length
        if length < body_size or end > size:
            raise MalformedPayloadsError(f"a record of impossible length at byte {offset}")
        if kind not in kinds:
            raise MalformedPayloadsError(f"a record of unknown kind {kind} at byte {offset}")
        node_start = start + body_size
        expires = 0
        if kind & EXPIRES_FLAG:
            if node_start + 8 > end:
                raise MalformedPayloadsError(f"a record's expiry cut short at byte {offset}")
            (expires,) = unpack_expiry(data, node_start)
            if not expires:
                raise MalformedPayloadsError(f"an expiry flag without an expiry at byte {offset}")
            node_start += 8
            kind &= ~EXPIRES_FLAG
        key_start = node_start + node_len
        key_end = key_start + key_len
        if key_end > end or (kind == KIND_TOMBSTONE and key_end != end):
            raise MalformedPayloadsError(f"a record whose fields overrun it at byte {offset}")
        raw_node = data[node_start:key_start]
        node = node_ids.get(raw_node)
        if node is None:
            node = _new_node_id(raw_node, node_ids)
            if node is None:
                raise MalformedPayloadsError(f"a record's node id is not UTF-8 at byte {offset}")
        value = data[key_end:end] if kind == KIND_VALUE else None
        version = new(Version, (wall_ms, logical, node))
        records.append(new(Record, (data[key_start:key_end], value, version, expires)))
        payloads.append(data[start:end])
        offset = end
    return records, payloads
