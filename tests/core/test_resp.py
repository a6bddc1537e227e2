"""The RESP codec: requests read as Redis reads them, replies written as Redis writes them."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a3redis.core.resp import (
    ProtocolError,
    RequestReader,
    RespLimits,
    encode,
    encode_all,
    format_double,
    split_inline,
)
from a3redis.core.resp_values import OK, PONG, ErrorReply, Push, Reply, Status, Verbatim

DEFAULT = RespLimits()
SMALL = RespLimits(max_elements=4, max_bulk=8, max_inline=16)


def request(*args: bytes) -> bytes:
    """A request as clients write it."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def read_pieces(
    pieces: list[bytes], limits: RespLimits = DEFAULT
) -> tuple[list[list[bytes]], str | None]:
    """Every request read from `pieces` fed one by one, and the protocol error met, if any."""
    reader = RequestReader(limits)
    got: list[list[bytes]] = []
    try:
        for piece in pieces:
            reader.feed(piece)
            got += reader.requests()
        got += reader.requests()
    except ProtocolError as error:
        return got, error.text
    return got, None


def read(data: bytes, limits: RespLimits = DEFAULT) -> tuple[list[list[bytes]], str | None]:
    return read_pieces([data], limits)


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[index : index + 1] for index in range(len(data))]


# --- Reading requests ---------------------------------------------------------


def test_a_multibulk_request_is_read_as_its_arguments() -> None:
    assert read(request(b"SET", b"key", b"value")) == ([[b"SET", b"key", b"value"]], None)


def test_every_complete_request_of_one_read_is_returned_together() -> None:
    reader = RequestReader()
    reader.feed(request(b"GET", b"a") + request(b"GET", b"b") + b"PING\r\n" + b"*1\r\n$4\r\nEC")
    assert reader.requests() == [[b"GET", b"a"], [b"GET", b"b"], [b"PING"]]
    assert reader.requests() == []
    reader.feed(b"HO\r\n")
    assert reader.requests() == [[b"ECHO"]]
    assert reader.buffered == 0


def test_a_pipeline_of_10000_requests_in_one_feed_is_read_in_order() -> None:
    expected = [[b"SET", b"key:%d" % n, b"v" * (n % 50)] for n in range(10_000)]
    data = b"".join(request(*args) for args in expected)
    reader = RequestReader()
    reader.feed(data)
    assert reader.requests() == expected
    assert reader.buffered == 0


def test_binary_keys_with_crlf_and_nul_are_read_exactly() -> None:
    key = b"\r\nk\x00e\ry\n\r\n\xff"
    value = b"\x00" * 3 + b"\r\n" * 3
    assert read(request(b"SET", key, value) + request(b"GET", key)) == (
        [[b"SET", key, value], [b"GET", key]],
        None,
    )
    assert read_pieces(byte_by_byte(request(b"SET", key, value))) == ([[b"SET", key, value]], None)


@pytest.mark.parametrize(
    "args",
    [
        [b"GET", b"k\r\n"],
        [b"GET\r\n", b"k"],
        [b"SET", b"k", b"\r\nv"],
        [b"SET", b"k\r\n", b"v"],
        [b"MSET", b"a", b"1", b"b\r\n", b"2"],
        [b"\r\n"],
    ],
)
def test_an_argument_holding_crlf_is_read_exactly_wherever_it_is(args: list[bytes]) -> None:
    expected = [[b"PING"], args, args, [b"PING"]]
    data = request(b"PING") + request(*args) + request(*args) + request(b"PING")
    assert read(request(*args) + request(b"PING")) == ([args, [b"PING"]], None)
    assert read(data) == (expected, None)


def test_an_empty_bulk_string_is_an_empty_argument() -> None:
    assert read(request(b"SET", b"", b"")) == ([[b"SET", b"", b""]], None)


def test_a_partial_request_waits_and_counts_as_buffered() -> None:
    reader = RequestReader()
    reader.feed(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nval")
    assert reader.requests() == []
    assert reader.buffered == len(b"SET") + len(b"k") + len(b"val")
    reader.feed(b"ue\r\n")
    assert reader.requests() == [[b"SET", b"k", b"value"]]
    assert reader.buffered == 0


@pytest.mark.parametrize(
    "skipped", [b"*0\r\n", b"*-1\r\n", b"*-5\r\n", b"\r\n", b"\n", b"  \t\r\n"]
)
def test_empty_multibulks_and_blank_inline_lines_are_skipped(skipped: bytes) -> None:
    assert read(skipped + b"PING\r\n" + skipped) == ([[b"PING"]], None)


def test_like_redis_the_two_bytes_after_a_bulk_and_after_a_header_cr_are_not_checked() -> None:
    assert read(b"*1\r\n$4\r\nPINGxx") == ([[b"PING"]], None)
    assert read(b"*2\rx$3\r?GET\r\n$1\r\nk\r\n") == ([[b"GET", b"k"]], None)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"PING", [b"PING"]),
        (b"SET k v", [b"SET", b"k", b"v"]),
        (b"  SET \t k   v  ", [b"SET", b"k", b"v"]),
        (b'SET "a b" c', [b"SET", b"a b", b"c"]),
        (b'SET k "\\x41\\x7a\\n\\r\\t\\b\\a\\\\\\"\\q"', [b"SET", b"k", b'Az\n\r\t\b\a\\"q']),
        (b'SET k "\\x4"', [b"SET", b"k", b"x4"]),
        (b"SET k 'it\\'s \"x\"'", [b"SET", b"k", b'it\'s "x"']),
        (b"SET k 'a\\nb'", [b"SET", b"k", b"a\\nb"]),
        (b'SET k ""', [b"SET", b"k", b""]),
        (b'ab"c d"', [b"abc d"]),
        (b"a\vb \fc", [b"a\vb", b"c"]),
        (b"GET k\x00 ignored", [b"GET", b"k"]),
        (b"", []),
    ],
)
def test_an_inline_line_is_split_with_redis_quoting_rules(line: bytes, words: list[bytes]) -> None:
    assert split_inline(line) == words


@pytest.mark.parametrize(
    "line", [b'SET "a', b"SET 'a", b'SET "a"b', b"SET 'a'b", b'SET "a\\"', b'"\\x4']
)
def test_unbalanced_quotes_are_a_protocol_error(line: bytes) -> None:
    assert split_inline(line) is None
    assert read(b"PING\r\n" + line + b"\r\n") == (
        [[b"PING"]],
        "Protocol error: unbalanced quotes in request",
    )


def test_an_inline_line_ends_at_lf_with_or_without_cr() -> None:
    assert read(b"SET k v\nGET k\r\nGET\rk\n") == (
        [[b"SET", b"k", b"v"], [b"GET", b"k"], [b"GET", b"k"]],
        None,
    )


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"*x\r\n", "Protocol error: invalid multibulk length"),
        (b"*\r\n", "Protocol error: invalid multibulk length"),
        (b"*01\r\n", "Protocol error: invalid multibulk length"),
        (b"*+1\r\n", "Protocol error: invalid multibulk length"),
        (b"*-0\r\n", "Protocol error: invalid multibulk length"),
        (b"*2147483648\r\n", "Protocol error: invalid multibulk length"),
        (b"*-99999999999999999999\r\n", "Protocol error: invalid multibulk length"),
        (b"*1048577\r\n", "Protocol error: invalid multibulk length"),
        (b"*1\r\n$x\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$03\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$ 3\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$536870913\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\nPING\r\n", "Protocol error: expected '$', got 'P'"),
        (b"*2\r\n$1\r\na\r\n:1\r\n", "Protocol error: expected '$', got ':'"),
        (b"*1\r\n\r\n", "Protocol error: expected '$', got ' '"),
        (b"*1\r\n\xff\r\n", "Protocol error: expected '$', got '\\xff'"),
        (b"x" * (64 * 1024 + 1), "Protocol error: too big inline request"),
        (b"*" + b"1" * (64 * 1024), "Protocol error: too big mbulk count string"),
        (b"*1\r\n$" + b"1" * (64 * 1024), "Protocol error: too big bulk count string"),
        (b"SET 'k v\r\n", "Protocol error: unbalanced quotes in request"),
    ],
)
def test_each_protocol_error_has_redis_text(data: bytes, text: str) -> None:
    assert read(data) == ([], text)
    assert read_pieces(byte_by_byte(data)) == ([], text)


def test_requests_before_bad_bytes_are_returned_first_then_the_error() -> None:
    reader = RequestReader()
    reader.feed(request(b"GET", b"a") + b"PING\r\n*1\r\n:5\r\n" + request(b"GET", b"b"))
    assert reader.requests() == [[b"GET", b"a"], [b"PING"]]
    assert not reader.exhausted  # the error is still to be raised, with nothing buffered
    with pytest.raises(ProtocolError, match=r"^Protocol error: expected '\$', got ':'$"):
        reader.requests()


def test_a_reader_is_exhausted_only_with_nothing_buffered_and_no_error_to_raise() -> None:
    reader = RequestReader()
    assert reader.exhausted
    whole = request(b"SET", b"k", b"v")
    reader.feed(whole[:5])
    assert not reader.exhausted  # part of a request: `requests` reads it once it is whole
    assert reader.requests() == []
    assert not reader.exhausted  # its arguments so far are held
    reader.feed(whole[5:])
    assert reader.requests() == [[b"SET", b"k", b"v"]]
    assert reader.exhausted


def test_a_reader_that_met_a_protocol_error_reads_nothing_more() -> None:
    reader = RequestReader()
    reader.feed(b"*x\r\n")
    with pytest.raises(ProtocolError):
        reader.requests()
    reader.feed(b"PING\r\n")
    with pytest.raises(ProtocolError, match="invalid multibulk length"):
        reader.requests()
    assert reader.buffered == 0


def test_an_element_count_over_the_limit_fails_before_the_elements_arrive() -> None:
    assert read(b"*5\r\n", SMALL) == ([], "Protocol error: invalid multibulk length")
    assert read(request(b"a", b"b", b"c", b"d"), SMALL) == ([[b"a", b"b", b"c", b"d"]], None)


def test_a_bulk_length_over_the_limit_fails_before_the_data_arrives() -> None:
    assert read(b"*1\r\n$9\r\n", SMALL) == ([], "Protocol error: invalid bulk length")
    assert read(request(b"12345678"), SMALL) == ([[b"12345678"]], None)


def test_a_line_over_the_limit_fails_as_soon_as_its_bytes_exceed_it() -> None:
    reader = RequestReader(SMALL)
    reader.feed(b"x" * 16)
    assert reader.requests() == []
    assert reader.buffered == 16
    reader.feed(b"x")
    with pytest.raises(ProtocolError, match="too big inline request"):
        reader.requests()
    # The same line, whole: refused however the bytes arrive (Redis would take it whole).
    assert read(b"x" * 17 + b"\r\n", SMALL) == ([], "Protocol error: too big inline request")
    assert read(b"x" * 16 + b"\n", SMALL) == ([[b"x" * 16]], None)
    assert read(b"*" + b"1" * 15, SMALL) == ([], None)
    assert read(b"*" + b"1" * 16, SMALL) == ([], "Protocol error: too big mbulk count string")
    assert read(b"*1\r\n$" + b"1" * 15, SMALL) == ([], None)
    assert read(b"*1\r\n$" + b"1" * 16, SMALL) == ([], "Protocol error: too big bulk count string")


def test_limits_also_hold_for_the_sizes_the_fast_path_knows() -> None:
    limits = RespLimits(max_elements=1, max_bulk=2, max_inline=64)
    assert read(request(b"GET", b"k"), limits) == ([], "Protocol error: invalid multibulk length")
    assert read(request(b"abc"), limits) == ([], "Protocol error: invalid bulk length")
    assert read(request(b"ab"), limits) == ([[b"ab"]], None)


FRAGMENTS = st.sampled_from(
    [
        b"*",
        b"$",
        b"\r\n",
        b"\r",
        b"\n",
        b"0",
        b"1",
        b"2",
        b"3",
        b"9",
        b"-",
        b"-1",
        b"GET",
        b"k",
        b" ",
        b'"',
        b"'",
        b"\\",
        b"x4",
        b"\x00",
        b":",
        request(b"GET", b"k"),
        request(b"SET", b"k\r\n", b"v"),
        request(b"GET", b"\r\n"),
        request(b"SET", b"k", b"v\r\n"),
        request(b"a", b"b", b"c", b"d"),
        request(b"123456789"),
        b"PING\r\n",
    ]
)
LIMITS = st.sampled_from([DEFAULT, SMALL])


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(FRAGMENTS, max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    limits=LIMITS,
)
def test_any_split_of_the_bytes_reads_the_same_requests_and_error(
    parts: list[bytes], cuts: list[int], limits: RespLimits
) -> None:
    data = b"".join(parts)
    whole = read(data, limits)
    assert read_pieces(byte_by_byte(data), limits) == whole
    points = sorted({0, len(data), *(cut for cut in cuts if cut < len(data))})
    pieces = [data[start:stop] for start, stop in itertools.pairwise(points)]
    assert read_pieces(pieces, limits) == whole


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(FRAGMENTS, max_size=40))
def test_a_reader_never_holds_more_than_one_request_bounds(parts: list[bytes]) -> None:
    limits = SMALL
    reader = RequestReader(limits)
    bound = limits.max_elements * limits.max_bulk + max(limits.max_inline + 1, limits.max_bulk + 2)
    for piece in byte_by_byte(b"".join(parts)):
        reader.feed(piece)
        try:
            reader.requests()
        except ProtocolError:
            return
        assert reader.buffered <= bound


# --- Writing replies ----------------------------------------------------------


def parse_reply(data: bytes, pos: int = 0) -> tuple[object, int]:
    """A plain RESP2/RESP3 reply parser, written for these tests from the protocol's spec."""
    kind = data[pos : pos + 1]
    line_end = data.index(b"\r\n", pos)
    line = data[pos + 1 : line_end]
    pos = line_end + 2
    if kind == b"+":
        return Status(line.decode()), pos
    if kind == b"-":
        return ErrorReply(line.decode()), pos
    if kind == b":":
        return int(line), pos
    if kind == b"_":
        return None, pos
    if kind == b"#":
        return {b"t": True, b"f": False}[line], pos
    if kind == b",":
        return float(line), pos
    if kind in (b"$", b"="):
        size = int(line)
        if size < 0:
            return None, pos
        body = data[pos : pos + size]
        assert data[pos + size : pos + size + 2] == b"\r\n"
        if kind == b"=":
            return Verbatim(body[4:], body[:3].decode()), pos + size + 2
        return body, pos + size + 2
    if kind in (b"*", b"~", b">", b"%"):
        count = int(line)
        if count < 0:
            return None, pos
        items = []
        for _ in range(count * 2 if kind == b"%" else count):
            item, pos = parse_reply(data, pos)
            items.append(item)
        if kind == b"~":
            return frozenset(items), pos
        if kind == b">":
            return Push(items), pos  # type: ignore[arg-type]
        if kind == b"%":
            return dict(zip(items[::2], items[1::2], strict=True)), pos
        return items, pos
    raise AssertionError(f"unknown reply type {kind!r}")


def parse_one(data: bytes) -> object:
    value, pos = parse_reply(data)
    assert pos == len(data)
    return value


def as_resp2(reply: Reply) -> object:
    """What a RESP2 client reads for `reply`."""
    if isinstance(reply, bool):
        return int(reply)
    if isinstance(reply, Verbatim):
        return reply.text
    if isinstance(reply, Push):
        return [as_resp2(item) for item in reply.items]
    if isinstance(reply, list):
        return [as_resp2(item) for item in reply]
    if isinstance(reply, frozenset):
        return [as_resp2(item) for item in reply]
    if isinstance(reply, dict):
        return [as_resp2(part) for pair in reply.items() for part in pair]
    return reply


ONE_LINE = st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=20
)
SCALARS = st.one_of(
    st.binary(max_size=40),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.none(),
    st.booleans(),
    ONE_LINE.map(Status),
    ONE_LINE.map(lambda text: ErrorReply("ERR " + text)),
    st.binary(max_size=20).map(Verbatim),
)
KEYS = st.one_of(st.binary(max_size=10), st.integers(-1000, 1000))


def containers(children: st.SearchStrategy[Reply]) -> st.SearchStrategy[Reply]:
    return st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(KEYS, children, max_size=4),
        st.frozensets(KEYS, max_size=4),
        st.lists(children, max_size=3).map(Push),
    )


REPLIES = st.recursive(SCALARS, containers, max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(reply=REPLIES)
def test_a_reply_reads_back_the_same_in_resp3(reply: Reply) -> None:
    assert parse_one(encode(reply, 3)) == reply


@settings(max_examples=300, deadline=None)
@given(reply=REPLIES)
def test_a_reply_reads_back_as_resp2_clients_see_it(reply: Reply) -> None:
    assert parse_one(encode(reply, 2)) == as_resp2(reply)


@settings(max_examples=300, deadline=None)
@given(value=st.floats(allow_nan=False))
def test_a_double_reads_back_as_the_same_double_in_both_protocols(value: float) -> None:
    assert parse_one(encode(value, 3)) == value
    assert float(parse_one(encode(value, 2))) == value  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(replies=st.lists(REPLIES, max_size=8), protocol=st.sampled_from([2, 3]))
def test_encode_all_is_the_replies_one_after_the_other(replies: list[Reply], protocol: int) -> None:
    assert encode_all(replies, protocol) == b"".join(encode(r, protocol) for r in replies)


@pytest.mark.parametrize(
    ("reply", "resp2", "resp3"),
    [
        (b"v", b"$1\r\nv\r\n", b"$1\r\nv\r\n"),
        (b"", b"$0\r\n\r\n", b"$0\r\n\r\n"),
        (None, b"$-1\r\n", b"_\r\n"),
        (OK, b"+OK\r\n", b"+OK\r\n"),
        (PONG, b"+PONG\r\n", b"+PONG\r\n"),
        (Status("QUEUED"), b"+QUEUED\r\n", b"+QUEUED\r\n"),
        (ErrorReply("ERR no"), b"-ERR no\r\n", b"-ERR no\r\n"),
        (42, b":42\r\n", b":42\r\n"),
        (-7, b":-7\r\n", b":-7\r\n"),
        (True, b":1\r\n", b"#t\r\n"),
        (False, b":0\r\n", b"#f\r\n"),
        (1.5, b"$3\r\n1.5\r\n", b",1.5\r\n"),
        (math.inf, b"$3\r\ninf\r\n", b",inf\r\n"),
        (-math.inf, b"$4\r\n-inf\r\n", b",-inf\r\n"),
        (math.nan, b"$3\r\nnan\r\n", b",nan\r\n"),
        ([b"a", None, 1], b"*3\r\n$1\r\na\r\n$-1\r\n:1\r\n", b"*3\r\n$1\r\na\r\n_\r\n:1\r\n"),
        ([], b"*0\r\n", b"*0\r\n"),
        ({b"k": 1}, b"*2\r\n$1\r\nk\r\n:1\r\n", b"%1\r\n$1\r\nk\r\n:1\r\n"),
        (frozenset({b"m"}), b"*1\r\n$1\r\nm\r\n", b"~1\r\n$1\r\nm\r\n"),
        (Push([b"x"]), b"*1\r\n$1\r\nx\r\n", b">1\r\n$1\r\nx\r\n"),
        (Verbatim(b"a:b"), b"$3\r\na:b\r\n", b"=7\r\ntxt:a:b\r\n"),
        (Verbatim(b"# x", "mkd"), b"$3\r\n# x\r\n", b"=7\r\nmkd:# x\r\n"),
        ([[b"a"], {b"b": [True]}], b"*2\r\n*1\r\n$1\r\na\r\n*2\r\n$1\r\nb\r\n*1\r\n:1\r\n",
         b"*2\r\n*1\r\n$1\r\na\r\n%1\r\n$1\r\nb\r\n*1\r\n#t\r\n"),
    ],
)  # fmt: skip
def test_each_reply_type_is_written_as_redis_writes_it(
    reply: Reply, resp2: bytes, resp3: bytes
) -> None:
    assert encode(reply, 2) == resp2
    assert encode(reply, 3) == resp3
    assert encode_all([reply, reply], 2) == resp2 * 2
    assert encode_all([reply, reply], 3) == resp3 * 2


def test_a_large_bulk_and_a_large_array_have_their_exact_lengths() -> None:
    value = b"x" * 100_000
    assert encode(value, 2) == b"$100000\r\n" + value + b"\r\n"
    assert encode([b"k"] * 2000, 3) == b"*2000\r\n" + b"$1\r\nk\r\n" * 2000


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, b"0"),
        (-0.0, b"-0"),
        (1.0, b"1"),
        (-2.5, b"-2.5"),
        (3.14, b"3.14"),
        (0.1, b"0.1"),
        (1e-5, b"0.00001"),
        (1e-7, b"1e-7"),
        (1.2345678e-7, b"1.2345678e-7"),
        (123456.78901234, b"1.2345678901234e+5"),
        (1e19, b"1e+19"),
        (1.5e300, b"1.5e+300"),
        (-1.5e-300, b"-1.5e-300"),
        (2.0**62, b"4611686018427387904"),
        (2.0**63, b"9223372036854776000"),
        (1e21, b"1e+21"),
    ],
)
def test_a_double_is_formatted_as_redis_formats_it(value: float, text: bytes) -> None:
    assert format_double(value) == text


@pytest.mark.parametrize("reply", [Status("O\r\nK"), Status("a\nb"), ErrorReply("ERR a\rb")])
def test_a_status_or_error_with_cr_or_lf_is_refused(reply: Reply) -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        encode(reply, 2)
    with pytest.raises(ValueError, match="CR or LF"):
        encode_all([b"ok", [reply]], 3)


def test_bytes_a_client_sent_go_back_raw_in_an_error_text() -> None:
    name = b"G\xffT".decode("utf-8", "surrogateescape")
    assert encode(ErrorReply(f"ERR unknown command '{name}'"), 2) == (
        b"-ERR unknown command 'G\xffT'\r\n"
    )
    with pytest.raises(ValueError, match="surrogate"):
        encode(Status("\ud800"), 3)


def test_only_protocols_2_and_3_exist() -> None:
    with pytest.raises(ValueError, match="2 or 3"):
        encode(b"x", 1)
    with pytest.raises(ValueError, match="2 or 3"):
        encode_all([], 4)


def test_a_verbatim_format_must_be_three_characters() -> None:
    with pytest.raises(ValueError, match="three characters"):
        encode(Verbatim(b"x", "text"), 3)


def test_a_value_that_is_no_reply_is_refused() -> None:
    with pytest.raises(TypeError, match="not a Redis reply"):
        encode(["text"], 2)  # type: ignore[list-item]
