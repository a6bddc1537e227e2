"""Byte encoding of records in log and snapshot files (pure, no I/O).

Rules: a file is a sequence of frames `[u32 payload length][u32 crc32][payload]`
(little endian). The payload is `[u8 kind][u64 wall_ms][u32 logical]
[u16 node id length][u32 key length][node id][key][value]`; kind 1 is a value,
kind 2 a tombstone. Decoding tells a torn tail (an incomplete final write,
which a crash may leave and which is cut) from corruption (a bad frame with
intact data after it, which must stop the node rather than lose data).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from a3redis.core.hlc import Version
from a3redis.core.record import Record

_HEADER = struct.Struct("<II")
_BODY = struct.Struct("<BQIHI")
KIND_VALUE = 1
KIND_TOMBSTONE = 2
# A frame longer than this is corruption, not data: values are capped far below.
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024


class CorruptLogError(Exception):
    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"corrupt record at byte offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


def encode(record: Record) -> bytes:
    version = record.version
    node = version.node_id.encode()
    if record.value is None:
        kind, value = KIND_TOMBSTONE, b""
    else:
        kind, value = KIND_VALUE, record.value
    body = _BODY.pack(kind, version.wall_ms, version.logical, len(node), len(record.key))
    payload = b"".join((body, node, record.key, value))
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(slots=True)
class DecodeResult:
    records: list[Record]
    # Bytes that hold whole, valid frames; anything after is a torn tail to cut.
    valid_length: int


def decode(data: bytes | bytearray | memoryview) -> DecodeResult:
    """Decode every whole frame; raise CorruptLogError for damage before the tail.

    A bad frame is a torn tail only if no valid frame starts anywhere after
    it: appends are ordered (a batch is written only after the previous one
    is durable), so a crash can only damage the end of the file. A bad frame
    followed by a valid one is corruption, and cutting there would lose data.
    """
    view = memoryview(data)
    size = len(view)
    records: list[Record] = []
    append = records.append
    node_ids: dict[bytes, str] = {}
    unpack_header = _HEADER.unpack_from
    unpack_body = _BODY.unpack_from
    body_size = _BODY.size
    crc32 = zlib.crc32
    offset = 0
    while offset + 8 <= size:
        length, checksum = unpack_header(view, offset)
        start = offset + 8
        end = start + length
        if length < body_size or length > MAX_PAYLOAD_BYTES or end > size:
            _require_torn_tail(view, offset, "impossible frame length")
            break
        payload = view[start:end]
        if crc32(payload) != checksum:
            _require_torn_tail(view, offset, "checksum mismatch")
            break
        kind, wall_ms, logical, node_len, key_len = unpack_body(payload)
        node_end = body_size + node_len
        key_end = node_end + key_len
        if key_end > length or kind not in (KIND_VALUE, KIND_TOMBSTONE):
            raise CorruptLogError(offset, "checksummed frame with an invalid body")
        raw_node = bytes(payload[body_size:node_end])
        node = node_ids.get(raw_node)
        if node is None:
            try:
                node = node_ids[raw_node] = raw_node.decode()
            except UnicodeDecodeError:
                raise CorruptLogError(offset, "checksummed frame with an invalid node id") from None
        value = bytes(payload[key_end:]) if kind == KIND_VALUE else None
        append(Record(bytes(payload[node_end:key_end]), value, Version(wall_ms, logical, node)))
        offset = end
    if offset < size and offset + 8 > size:
        _require_torn_tail(view, offset, "incomplete frame header")
    return DecodeResult(records, offset)


def _is_frame_at(view: memoryview, position: int) -> bool:
    if position + 8 + _BODY.size > len(view):
        return False
    length, checksum = _HEADER.unpack_from(view, position)
    end = position + 8 + length
    if length < _BODY.size or end > len(view):
        return False
    return bool(zlib.crc32(view[position + 8 : end]) == checksum)


def _require_torn_tail(view: memoryview, offset: int, reason: str) -> None:
    for position in range(offset + 1, len(view) - 8):
        if _is_frame_at(view, position):
            raise CorruptLogError(
                offset, f"{reason}, followed by a valid record at offset {position}"
            )
