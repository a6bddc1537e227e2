"""The Redis protocol (RESP2 and RESP3) as bytes in, requests out, and replies in, bytes out.

Rules:
- No I/O: a shell feeds the bytes it read (`RequestReader.feed`), takes every
  complete request buffered so far (`RequestReader.requests`), and sends what
  `encode` / `encode_all` return. One reader per connection.
- Requests are read as Redis 7 reads them (`processInputBuffer` in
  redis/src/networking.c): a request starting with `*` is a multibulk
  (`*N\\r\\n` then N times `$len\\r\\n<len bytes>\\r\\n`), anything else is an
  inline command (one line split on blanks with Redis's quoting rules).
  `*0`, `*-1` (any count <= 0) and empty inline lines are skipped. Like
  Redis, the two bytes after a `\\r` that ends a header line, and after a
  bulk's data, are skipped unread.
- A request is a `list[bytes]`: the command name and its arguments exactly as
  sent (binary-safe); nothing is decoded or case-folded here.
- Limits (`RespLimits`) are checked as soon as a length is declared, before
  its bytes arrive, and a header or inline line longer than `max_inline` is
  refused as soon as that many bytes are buffered without its end: the bytes
  a reader holds never exceed one request's bounds. Every check gives the
  same answer however the bytes are split into reads (where Redis's own
  checks depend on the split, the longest-line rule above is applied to the
  whole line).
- Bad bytes raise `ProtocolError` with Redis's text (`Protocol error: ...`,
  without the `ERR ` its reply adds). Requests completed before the bad
  bytes are returned first; the call after raises, and so does every call
  after that: a reader that met a protocol error reads nothing more (Redis
  answers the error and closes the connection).
- Two deliberate differences from Redis, both on bytes no client sends: a
  NUL byte in an inline line ends the line's text (Redis's C string split
  would; Redis itself waits forever for a newline its `strchr` cannot see),
  and a byte that is not printable ASCII in "expected '$', got 'X'" is shown
  as `\\xHH` (Redis sends the raw byte, or cuts its text at a NUL).
- Replies are `a3redis.core.resp_values.Reply` values, written in the
  protocol the connection speaks (2 or 3): in RESP2 a map is a flat array, a
  set an array, a double a bulk string, a boolean the integer 1 or 0, a null
  the null bulk string `$-1`. Doubles are formatted as Redis formats them
  (`d2string`: `inf`, `-inf`, `nan`, integers without a point, otherwise the
  shortest digits that read back as the same double, in Redis's layout).
- Status and error texts are written in UTF-8; bytes a client sent that the
  caller decoded with `surrogateescape` (a command name in an error) go back
  as those bytes, as Redis echoes them. A text holding CR or LF, or another
  lone surrogate, is a bug in the caller: `ValueError`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from a3redis.core.resp_values import OK, PONG, ErrorReply, Push, Reply, Status, Verbatim

__all__ = [
    "ProtocolError",
    "RequestReader",
    "RespLimits",
    "encode",
    "encode_all",
    "format_double",
    "split_inline",
]


@dataclass(frozen=True, slots=True)
class RespLimits:
    """Bounds on one request; a declared length over a bound is a protocol error at once."""

    # Elements in one multibulk request.
    max_elements: int = 1_048_576
    # Bytes in one bulk string (Redis's proto-max-bulk-len default is 512 MiB).
    max_bulk: int = 512 * 1024 * 1024
    # Bytes in an inline command line or a `*N` / `$N` header line (PROTO_INLINE_MAX_SIZE).
    max_inline: int = 64 * 1024


class ProtocolError(Exception):
    """Bytes no Redis request can start with; `text` is Redis's (no `ERR ` prefix)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


INVALID_MULTIBULK_LENGTH = "Protocol error: invalid multibulk length"
INVALID_BULK_LENGTH = "Protocol error: invalid bulk length"
TOO_BIG_INLINE = "Protocol error: too big inline request"
TOO_BIG_MULTIBULK_COUNT = "Protocol error: too big mbulk count string"
TOO_BIG_BULK_COUNT = "Protocol error: too big bulk count string"
UNBALANCED_QUOTES = "Protocol error: unbalanced quotes in request"

# Redis counts arguments in a C int.
_INT_MAX = 2**31 - 1
_LLONG_MAX = 2**63 - 1
_STAR = ord("*")

# The canonical header lines of the usual sizes, so the common request needs
# one dictionary look-up per line instead of a validated integer parse.
_COUNT_LINES = {b"*%d" % count: count for count in range(1, 1025)}
_BULK_LINES = {b"$%d" % size: size for size in range(4096)}
# Reads up to this size are first split at every CRLF in one call (see
# `RequestReader._read_canonical`); larger ones are read element by element.
_SPLIT_WINDOW = 1024 * 1024


@functools.lru_cache(maxsize=16)
def _header_lines(limits: RespLimits) -> tuple[dict[bytes, int], dict[bytes, int]]:
    """The canonical `*N` and `$N` lines within `limits`, with their numbers."""
    if limits.max_elements >= len(_COUNT_LINES) and limits.max_bulk >= len(_BULK_LINES):
        return _COUNT_LINES, _BULK_LINES
    counts = {line: count for line, count in _COUNT_LINES.items() if count <= limits.max_elements}
    sizes = {line: size for line, size in _BULK_LINES.items() if size <= limits.max_bulk}
    return counts, sizes


def _long_long(text: bytes) -> int | None:
    """Redis's `string2ll`: an optional `-`, digits without a leading zero, in a long long."""
    if not 0 < len(text) < 21:
        return None
    if text == b"0":
        return 0
    negative = text[0] == ord("-")
    digits = text[1:] if negative else text
    if not digits.isdigit() or digits[0] == ord("0"):
        return None
    value = int(digits)
    if negative:
        return -value if value <= _LLONG_MAX + 1 else None
    return value if value <= _LLONG_MAX else None


def _shown(byte: int) -> str:
    """A byte in an error text: CR and LF become spaces as in Redis's replies."""
    if byte in (0x0A, 0x0D):
        return " "
    if 0x20 <= byte < 0x7F:
        return chr(byte)
    return f"\\x{byte:02x}"


def _expected_dollar(byte: int) -> ProtocolError:
    return ProtocolError(f"Protocol error: expected '$', got '{_shown(byte)}'")


# `isspace` in the C locale: what sdssplitargs skips between arguments.
_C_SPACE = frozenset(b" \t\n\v\f\r")
# What ends an unquoted argument (the NUL is the end of the line).
_WORD_END = frozenset(b" \t\n\r")
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES = {ord("n"): ord("\n"), ord("r"): ord("\r"), ord("t"): ord("\t")}
_ESCAPES |= {ord("b"): ord("\b"), ord("a"): ord("\a")}
# Bytes that make a line need the full split: quotes, and the two blanks
# that sdssplitargs skips between arguments but keeps inside one.
_SPECIAL_INLINE = (b'"', b"'", b"\v", b"\f")


def split_inline(line: bytes) -> list[bytes] | None:
    """An inline line (without its newline) as sdssplitargs splits it; None if unbalanced."""
    end_of_text = line.find(b"\0")
    if end_of_text >= 0:
        line = line[:end_of_text]
    if not any(special in line for special in _SPECIAL_INLINE):
        return line.split()
    return _split_quoted(line)


def _split_quoted(line: bytes) -> list[bytes] | None:
    size = len(line)

    def at(index: int) -> int:
        return line[index] if index < size else 0

    words: list[bytes] = []
    index = 0
    while True:
        while index < size and line[index] in _C_SPACE:
            index += 1
        if index >= size:
            return words
        word = bytearray()
        in_double = in_single = False
        done = False
        while not done:
            byte = at(index)
            if in_double:
                if (
                    byte == ord("\\")
                    and at(index + 1) == ord("x")
                    and at(index + 2) in _HEX_DIGITS
                    and at(index + 3) in _HEX_DIGITS
                ):
                    word.append(int(line[index + 2 : index + 4], 16))
                    index += 3
                elif byte == ord("\\") and at(index + 1):
                    index += 1
                    word.append(_ESCAPES.get(line[index], line[index]))
                elif byte == ord('"'):
                    # A closing quote must be followed by a blank or the end.
                    if at(index + 1) and at(index + 1) not in _C_SPACE:
                        return None
                    done = True
                elif not byte:
                    return None
                else:
                    word.append(byte)
            elif in_single:
                if byte == ord("\\") and at(index + 1) == ord("'"):
                    index += 1
                    word.append(ord("'"))
                elif byte == ord("'"):
                    if at(index + 1) and at(index + 1) not in _C_SPACE:
                        return None
                    done = True
                elif not byte:
                    return None
                else:
                    word.append(byte)
            elif not byte or byte in _WORD_END:
                done = True
            elif byte == ord('"'):
                in_double = True
            elif byte == ord("'"):
                in_single = True
            else:
                word.append(byte)
            if at(index):
                index += 1
        words.append(bytes(word))


class RequestReader:
    """Reads a connection's bytes into requests; see the module's rules."""

    __slots__ = (
        "_args",
        "_args_bytes",
        "_bulk",
        "_bulk_lines",
        "_chunks",
        "_count_lines",
        "_data",
        "_error",
        "_limits",
        "_remaining",
        "_size",
        "_wanted",
    )

    def __init__(self, limits: RespLimits = RespLimits()) -> None:
        self._limits = limits
        self._count_lines, self._bulk_lines = _header_lines(limits)
        # Unparsed bytes: `_data` then the `_chunks` fed since the last parse.
        self._data = b""
        self._chunks: list[bytes] = []
        self._size = 0
        # No parse is worth trying before `_size` reaches this.
        self._wanted = 1
        # The multibulk request being read: its arguments so far, how many
        # more it declared, and the declared length of the next one (-1: its
        # `$` line is not read yet).
        self._args: list[bytes] = []
        self._args_bytes = 0
        self._remaining = 0
        self._bulk = -1
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for requests not returned yet: unparsed, or arguments of an unfinished one."""
        return self._size + self._args_bytes

    @property
    def exhausted(self) -> bool:
        """Whether `requests()` has nothing to return or raise until more bytes are fed."""
        return not (self._size or self._args_bytes) and self._error is None

    def feed(self, data: bytes) -> None:
        """Adds bytes read from the connection; parsing waits for `requests()`."""
        if self._error is not None or not data:
            return
        if type(data) is not bytes:
            data = bytes(data)
        self._chunks.append(data)
        self._size += len(data)

    def requests(self) -> list[list[bytes]]:
        """Every complete request buffered now, in order; may be [].

        Raises ProtocolError when the next bytes cannot start or continue a
        request, unless requests completed before them: those are returned
        and the next call raises.
        """
        if self._error is not None:
            raise self._error
        if self._size < self._wanted:
            return []
        chunks = self._chunks
        if self._data:
            data = self._data + b"".join(chunks)
        elif len(chunks) == 1:
            data = chunks[0]
        else:
            data = b"".join(chunks)
        chunks.clear()
        end = len(data)
        pos = 0
        done: list[list[bytes]] = []
        args = self._args
        remaining = self._remaining
        bulk = self._bulk
        limits = self._limits
        max_inline = limits.max_inline
        max_bulk = limits.max_bulk
        first_new_arg = len(args)
        held = self._args_bytes
        wanted = 1
        count_lines = self._count_lines
        bulk_lines = self._bulk_lines
        split_tried = end > _SPLIT_WINDOW
        try:
            while True:
                if not remaining:
                    if pos >= end:
                        break
                    if data[pos] != _STAR:
                        # An inline command: one line, `\n` or `\r\n` ended.
                        newline = data.find(b"\n", pos, pos + max_inline + 1)
                        if newline < 0:
                            if end - pos > max_inline:
                                raise ProtocolError(TOO_BIG_INLINE)
                            wanted = end - pos + 1
                            break
                        line_end = newline
                        if line_end > pos and data[line_end - 1] == 0x0D:
                            line_end -= 1
                        words = split_inline(data[pos:line_end])
                        if words is None:
                            raise ProtocolError(UNBALANCED_QUOTES)
                        pos = newline + 1
                        if words:
                            done.append(words)
                        continue
                    if not split_tried:
                        split_tried = True
                        pos = self._read_canonical(data, pos, done)
                        continue
                    line_end = data.find(b"\r", pos, pos + max_inline + 1)
                    if line_end < 0 or line_end + 1 >= end:
                        if line_end < 0 and end - pos > max_inline:
                            raise ProtocolError(TOO_BIG_MULTIBULK_COUNT)
                        wanted = end - pos + 1
                        break
                    line = data[pos:line_end]
                    count = count_lines.get(line)
                    if count is None:
                        count = _long_long(line[1:])
                        if count is None or count > _INT_MAX or count > limits.max_elements:
                            raise ProtocolError(INVALID_MULTIBULK_LENGTH)
                    pos = line_end + 2
                    if count <= 0:
                        continue
                    remaining = count
                    args = []
                    first_new_arg = 0
                    held = 0
                while remaining:
                    if bulk < 0:
                        line_end = data.find(b"\r", pos, pos + max_inline + 1)
                        if line_end < 0 or line_end + 1 >= end:
                            if line_end < 0 and end - pos > max_inline:
                                raise ProtocolError(TOO_BIG_BULK_COUNT)
                            wanted = end - pos + 1
                            break
                        line = data[pos:line_end]
                        size = bulk_lines.get(line)
                        if size is None:
                            if data[pos] != 0x24:
                                raise _expected_dollar(data[pos])
                            size = _long_long(line[1:])
                            if size is None or size < 0 or size > max_bulk:
                                raise ProtocolError(INVALID_BULK_LENGTH)
                        bulk = size
                        pos = line_end + 2
                    stop = pos + bulk
                    if stop + 2 > end:
                        wanted = stop + 2 - pos
                        break
                    args.append(data[pos:stop])
                    pos = stop + 2
                    bulk = -1
                    remaining -= 1
                if remaining:
                    break
                done.append(args)
                args = []
        except ProtocolError as error:
            self._fail(error)
            if not done:
                raise
            return done
        self._data = data[pos:] if pos < end else b""
        self._size = end - pos if pos < end else 0
        self._wanted = wanted
        self._args = args
        self._remaining = remaining
        self._bulk = bulk
        self._args_bytes = held + sum(map(len, args[first_new_arg:])) if remaining else 0
        return done

    def _read_canonical(self, data: bytes, pos: int, done: list[list[bytes]]) -> int:
        """Appends the run of canonical requests at `pos` to `done`; returns where the run ends.

        The fast path: one split at every CRLF, then each request is checked
        line by line: `*N` and each `$L` in their canonical form and within
        the limits (the header tables hold nothing else), each bulk exactly
        `L` bytes long. A bulk holding a CRLF fails the check, like anything
        not canonical; the run stops there and `requests` reads on element
        by element, which gives the same result for the same bytes.
        """
        tokens = (data[pos:] if pos else data).split(b"\r\n")
        last = len(tokens) - 1  # the one token no CRLF follows
        count_of = self._count_lines.get
        size_of = self._bulk_lines.get
        index = 0
        while index < last:
            count = count_of(tokens[index])
            if count is None:
                break
            stop = index + 1 + 2 * count
            if stop > last:
                break
            # GET, DEL, SET...: the common counts, unrolled.
            if count == 2:
                name, size, key = tokens[index + 2 : stop]
                if size_of(tokens[index + 1]) != len(name) or size_of(size) != len(key):
                    break
                done.append([name, key])
            elif count == 3:
                name, size, key, value_size, value = tokens[index + 2 : stop]
                if (
                    size_of(tokens[index + 1]) != len(name)
                    or size_of(size) != len(key)
                    or size_of(value_size) != len(value)
                ):
                    break
                done.append([name, key, value])
            else:
                args = tokens[index + 2 : stop : 2]
                if list(map(size_of, tokens[index + 1 : stop : 2])) != list(map(len, args)):
                    break
                done.append(args)
            index = stop
        if index == last:
            return len(data) - len(tokens[last])
        return pos + sum(map(len, tokens[:index])) + 2 * index

    def _fail(self, error: ProtocolError) -> None:
        self._error = error
        self._data = b""
        self._chunks.clear()
        self._size = 0
        self._args = []
        self._args_bytes = 0
        self._remaining = 0
        self._bulk = -1


# --- Replies ---------------------------------------------------------------

_CRLF = b"\r\n"
_BULK_HEADS = [b"$%d\r\n" % size for size in range(1024)]
_ARRAY_HEADS = [b"*%d\r\n" % size for size in range(1024)]
# Redis prints a double as an integer when it is one within +-(LLONG_MAX/2)
# as a C double (`double2ll`).
_HALF_LLONG_MAX = float(_LLONG_MAX // 2)
_NULLS = {2: b"$-1\r\n", 3: b"_\r\n"}
_STATUS_OK = b"+OK\r\n"
_STATUS_PONG = b"+PONG\r\n"


def _bulk_head(size: int) -> bytes:
    return _BULK_HEADS[size] if size < 1024 else b"$%d\r\n" % size


def _single_line(text: str) -> bytes:
    if "\r" in text or "\n" in text:
        raise ValueError(f"a status or error text holds CR or LF: {text!r}")
    return text.encode("utf-8", "surrogateescape")


def format_double(value: float) -> bytes:
    """A double as Redis's `d2string` writes it (its fpconv layout, shortest digits)."""
    if math.isnan(value):
        return b"nan"
    if math.isinf(value):
        return b"inf" if value > 0 else b"-inf"
    if value == 0:
        return b"-0" if math.copysign(1.0, value) < 0 else b"0"
    if -_HALF_LLONG_MAX <= value <= _HALF_LLONG_MAX and value == int(value):
        return b"%d" % int(value)
    # The shortest digits that read back as this double (Python's repr),
    # as digits * 10**exponent.
    mantissa, _, exponent_text = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    exponent = (int(exponent_text) if exponent_text else 0) - len(fraction)
    significant = digits.rstrip("0")
    exponent += len(digits) - len(significant)
    digits = significant
    sign = "-" if value < 0 else ""
    count = len(digits)
    leading = abs(exponent + count - 1)
    if exponent >= 0 and leading < count + 7:
        return f"{sign}{digits}{'0' * exponent}".encode()
    if exponent < 0 and (exponent > -7 or leading < 4):
        point = count + exponent
        if point <= 0:
            return f"{sign}0.{'0' * -point}{digits}".encode()
        return f"{sign}{digits[:point]}.{digits[point:]}".encode()
    text = digits[0] + ("." + digits[1:] if count > 1 else "")
    exponent_sign = "-" if exponent + count - 1 < 0 else "+"
    return f"{sign}{text}e{exponent_sign}{leading}".encode()


def _write(reply: Reply, protocol: int, out: list[bytes]) -> None:
    """Appends `reply`'s encoding to `out`."""
    # The common replies first; `bool` is an `int`, so it is tested before.
    if isinstance(reply, bytes):
        out += (_bulk_head(len(reply)), reply, _CRLF)
    elif reply is None:
        out.append(_NULLS[protocol])
    elif reply is OK:
        out.append(_STATUS_OK)
    elif isinstance(reply, bool):
        if protocol == 3:
            out.append(b"#t\r\n" if reply else b"#f\r\n")
        else:
            out.append(b":1\r\n" if reply else b":0\r\n")
    elif isinstance(reply, int):
        out.append(b":%d\r\n" % reply)
    elif isinstance(reply, list):
        _write_items(reply, protocol, out, b"*")
    elif isinstance(reply, Status):
        out += (b"+", _single_line(reply.text), _CRLF)
    elif isinstance(reply, ErrorReply):
        out += (b"-", _single_line(reply.text), _CRLF)
    elif isinstance(reply, float):
        text = format_double(reply)
        if protocol == 3:
            out += (b",", text, _CRLF)
        else:
            out += (_bulk_head(len(text)), text, _CRLF)
    elif isinstance(reply, dict):
        if protocol == 3:
            out.append(b"%%%d\r\n" % len(reply))
        else:
            out.append(b"*%d\r\n" % (2 * len(reply)))
        for key, value in reply.items():
            _write(key, protocol, out)
            _write(value, protocol, out)
    elif isinstance(reply, frozenset):
        _write_items(list(reply), protocol, out, b"~" if protocol == 3 else b"*")
    elif isinstance(reply, Push):
        _write_items(reply.items, protocol, out, b">" if protocol == 3 else b"*")
    elif isinstance(reply, Verbatim):
        if protocol == 3:
            format_bytes = reply.format.encode()
            if len(format_bytes) != 3 or b":" in format_bytes:
                raise ValueError(f"a verbatim format is three characters: {reply.format!r}")
            out += (b"=%d\r\n" % (len(reply.text) + 4), format_bytes, b":", reply.text, _CRLF)
        else:
            out += (_bulk_head(len(reply.text)), reply.text, _CRLF)
    else:
        raise TypeError(f"not a Redis reply: {reply!r}")


def _write_items(items: list[Reply], protocol: int, out: list[bytes], marker: bytes) -> None:
    count = len(items)
    if count < 1024 and marker == b"*":
        out.append(_ARRAY_HEADS[count])
    else:
        out.append(b"%b%d\r\n" % (marker, count))
    null = _NULLS[protocol]
    for item in items:
        if type(item) is bytes:
            out += (_bulk_head(len(item)), item, _CRLF)
        elif item is None:
            out.append(null)
        else:
            _write(item, protocol, out)


def _check_protocol(protocol: int) -> None:
    if protocol != 2 and protocol != 3:
        raise ValueError(f"RESP protocol 2 or 3, not {protocol!r}")


def encode(reply: Reply, protocol: int) -> bytes:
    """`reply` in RESP`protocol` (2 or 3)."""
    _check_protocol(protocol)
    if isinstance(reply, bytes):
        return b"%b%b\r\n" % (_bulk_head(len(reply)), reply)
    if reply is None:
        return _NULLS[protocol]
    if reply is OK:
        return _STATUS_OK
    if reply is PONG:
        return _STATUS_PONG
    if type(reply) is int:
        return b":%d\r\n" % reply
    out: list[bytes] = []
    if type(reply) is list:
        _write_items(reply, protocol, out, b"*")
    else:
        _write(reply, protocol, out)
    return b"".join(out)


def encode_all(replies: Sequence[Reply], protocol: int) -> bytes:
    """Many replies, one after the other, as one bytes object."""
    if len(replies) == 1:  # most runs: one command, one reply
        return encode(replies[0], protocol)
    _check_protocol(protocol)
    out: list[bytes] = []
    null = _NULLS[protocol]
    for reply in replies:
        if isinstance(reply, bytes):
            out += (_bulk_head(len(reply)), reply, _CRLF)
        elif reply is None:
            out.append(null)
        elif reply is OK:
            out.append(_STATUS_OK)
        elif type(reply) is int:
            out.append(b":%d\r\n" % reply)
        else:
            _write(reply, protocol, out)
    return b"".join(out)
