"""Replica frames: a node's Read and Apply calls to a peer without HTTP/2 (sans-IO).

Rules: the two calls every quorum read and write makes (a3redis.core.batcher
batches them) go as frames on the peer's gRPC port, which tells them from
HTTP/2 by the first bytes a client sends (PREFACE; HTTP/2's starts "PRI").
Everything else between nodes (anti-entropy, streaming, scans) stays gRPC.
The messages inside are the Replica service's protobuf requests and answers,
byte for byte, and the server hands them to the same methods, checks and
metrics as the gRPC calls: a frame changes how a call travels, not what it
says or who may make it. The cluster secret signs a frame's body for the
method's name exactly as it signs a gRPC call (same channel, same replay
cache), so a call signed for one way cannot be replayed the other.

Wire (integers big-endian):
  client, once:   PREFACE
  server, once:   PREFACE (the server speaks frames; anything else: it does not)
  request:  u32 length | u8 kind (READ, APPLY) | u32 call id | u16 meta length | meta | body
  answer:   u32 length | u8 kind (ANSWER, FAILURE) | u32 call id | body
`length` counts the bytes after itself. `meta` is empty without a cluster
secret, else the four credential fields (sender, timestamp, nonce,
signature) joined by "\n", ASCII. A FAILURE's body is "<code> <message>": the
name of the gRPC status code the same call over gRPC would have failed with,
a space, and its message (UTF-8).
A client numbers its calls; answers may come in any order.

Bounds: a frame longer than `max_frame_bytes`, a kind not expected in its
direction, a length too short for its header, or a meta block that is not
four printable ASCII fields is a FrameError: the connection is not to be
trusted further and closes. Time and sockets are the shell's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PREFACE = b"A3RF/1\r\n"

READ = 1
APPLY = 2
ANSWER = 0x80
FAILURE = 0x81
REQUEST_KINDS = frozenset({READ, APPLY})
ANSWER_KINDS = frozenset({ANSWER, FAILURE})
METHOD_OF_KIND = {READ: "Read", APPLY: "Apply"}

_LENGTH = struct.Struct(">I")
_REQUEST_HEAD = struct.Struct(">IBIH")  # length, kind, call id, meta length
_ANSWER_HEAD = struct.Struct(">IBI")  # length, kind, call id
CALL_IDS = 1 << 32
# The credential fields are a node id, digits, hex: far below this.
MAX_META_BYTES = 1024
META_FIELDS = 4
# The largest body either way, purerpc's message limit: a3redis.net.grpc_server's
# MAX_MESSAGE_BYTES is this value, so a call too large one way is too large the other.
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_FRAME_BYTES = _REQUEST_HEAD.size + MAX_META_BYTES + MAX_BODY_BYTES


class FrameError(Exception):
    """Bytes that break the frame protocol; the connection closes."""


@dataclass(frozen=True, slots=True)
class Frame:
    kind: int
    call_id: int
    body: bytes
    meta: tuple[str, ...] = ()  # a request's credential fields; () unsigned


def preface_answer(received: bytes) -> bool | None:
    """Whether a connection's first bytes are the frame preface: True, False (another
    protocol), or None (a prefix of it so far: wait for more)."""
    if received[: len(PREFACE)] == PREFACE[: len(received)]:
        return True if len(received) >= len(PREFACE) else None
    return False


def request(kind: int, call_id: int, body: bytes, meta: tuple[str, ...] = ()) -> bytes:
    """One request frame (the client's side)."""
    encoded_meta = "\n".join(meta).encode("ascii")
    if len(encoded_meta) > MAX_META_BYTES:
        raise ValueError("credential fields over MAX_META_BYTES")
    length = _REQUEST_HEAD.size - _LENGTH.size + len(encoded_meta) + len(body)
    return _REQUEST_HEAD.pack(length, kind, call_id, len(encoded_meta)) + encoded_meta + body


def failure(code: str, message: str) -> bytes:
    """A FAILURE's body."""
    return f"{code} {message}".encode()


def parse_failure(body: bytes) -> tuple[str, str]:
    """(code, message) of a FAILURE's body; code "UNKNOWN" when it names none."""
    code, _, message = body.decode("utf-8", "replace").partition(" ")
    if not (code.isascii() and code.replace("_", "").isalpha() and code.isupper()):
        return "UNKNOWN", body.decode("utf-8", "replace")
    return code, message


def answer(call_id: int, body: bytes, failed: bool = False) -> bytes:
    """One answer frame (the server's side): the response's bytes, or a failure's message."""
    length = _ANSWER_HEAD.size - _LENGTH.size + len(body)
    return _ANSWER_HEAD.pack(length, FAILURE if failed else ANSWER, call_id) + body


class FrameReader:
    """Bytes in, whole frames out, for one direction of one connection.

    `requests=True` reads what a server receives (request frames), else
    answers. `held` is the bytes kept for a frame still arriving (at most one
    frame's worth: the shell counts them against its inbound budget).
    """

    def __init__(self, max_frame_bytes: int, *, requests: bool) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._requests = requests
        self._head = _REQUEST_HEAD if requests else _ANSWER_HEAD
        self._buffer = bytearray()

    @property
    def held(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """The frames completed by `data`, in order; FrameError on a broken one."""
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        offset = 0
        head = self._head
        while len(buffer) - offset >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, offset)
            if length > self.max_frame_bytes:
                raise FrameError(f"a frame of {length} bytes (at most {self.max_frame_bytes})")
            if length < head.size - _LENGTH.size:
                raise FrameError(f"a frame of {length} bytes is shorter than its header")
            end = offset + _LENGTH.size + length
            if len(buffer) < end:
                break
            frames.append(self._frame(buffer, offset, end))
            offset = end
        if offset:
            del buffer[:offset]
        return frames

    def _frame(self, buffer: bytearray, offset: int, end: int) -> Frame:
        if self._requests:
            _, kind, call_id, meta_length = _REQUEST_HEAD.unpack_from(buffer, offset)
            body_start = offset + _REQUEST_HEAD.size + meta_length
            if kind not in REQUEST_KINDS:
                raise FrameError(f"a request frame of unknown kind {kind}")
            if meta_length > MAX_META_BYTES or body_start > end:
                raise FrameError("a request frame whose credentials overrun it")
            meta = _meta(bytes(buffer[offset + _REQUEST_HEAD.size : body_start]))
            return Frame(kind, call_id, bytes(buffer[body_start:end]), meta)
        _, kind, call_id = _ANSWER_HEAD.unpack_from(buffer, offset)
        if kind not in ANSWER_KINDS:
            raise FrameError(f"an answer frame of unknown kind {kind}")
        return Frame(kind, call_id, bytes(buffer[offset + _ANSWER_HEAD.size : end]))


def _meta(data: bytes) -> tuple[str, ...]:
    if not data:
        return ()
    if not data.isascii():
        raise FrameError("credential fields that are not ASCII")
    fields = data.decode("ascii").split("\n")
    if len(fields) != META_FIELDS or not all(field.isprintable() for field in fields):
        raise FrameError(f"credentials that are not {META_FIELDS} printable fields")
    return tuple(fields)
