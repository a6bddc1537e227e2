"""The replica-frames codec: frames survive any split of their bytes; broken ones are refused."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a3redis.core.replica_frames import (
    ANSWER,
    APPLY,
    FAILURE,
    MAX_META_BYTES,
    PREFACE,
    READ,
    Frame,
    FrameError,
    FrameReader,
    answer,
    failure,
    parse_failure,
    preface_answer,
    request,
)

LIMIT = 4096
printable_field = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=40
)
metas = st.one_of(st.just(()), st.tuples(*[printable_field] * 4))
requests = st.builds(
    Frame,
    kind=st.sampled_from([READ, APPLY]),
    call_id=st.integers(0, 2**32 - 1),
    body=st.binary(max_size=300),
    meta=metas,
)
answers = st.builds(
    Frame,
    kind=st.sampled_from([ANSWER, FAILURE]),
    call_id=st.integers(0, 2**32 - 1),
    body=st.binary(max_size=300),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(st.lists(requests, max_size=8), st.lists(st.integers(0, 10_000), max_size=12))
def test_requests_are_read_back_whole_however_their_bytes_arrive(
    sent: list[Frame], cuts: list[int]
) -> None:
    data = b"".join(request(f.kind, f.call_id, f.body, f.meta) for f in sent)
    reader = FrameReader(LIMIT, requests=True)
    received = [frame for piece in split(data, cuts) for frame in reader.feed(piece)]
    assert received == sent
    assert reader.held == 0


@given(st.lists(answers, max_size=8), st.lists(st.integers(0, 10_000), max_size=12))
def test_answers_are_read_back_whole_however_their_bytes_arrive(
    sent: list[Frame], cuts: list[int]
) -> None:
    data = b"".join(answer(f.call_id, f.body, f.kind == FAILURE) for f in sent)
    reader = FrameReader(LIMIT, requests=False)
    received = [frame for piece in split(data, cuts) for frame in reader.feed(piece)]
    assert received == sent


def test_a_frame_still_arriving_is_held_and_counted() -> None:
    data = request(READ, 7, b"x" * 100)
    reader = FrameReader(LIMIT, requests=True)
    assert reader.feed(data[:60]) == []
    assert reader.held == 60
    assert reader.feed(data[60:]) == [Frame(READ, 7, b"x" * 100)]
    assert reader.held == 0


def head(length: int, kind: int, call_id: int = 1, meta_length: int | None = None) -> bytes:
    if meta_length is None:
        return struct.pack(">IBI", length, kind, call_id)
    return struct.pack(">IBIH", length, kind, call_id, meta_length)


@pytest.mark.parametrize(
    ("requests_side", "data", "why"),
    [
        (True, head(LIMIT + 1, READ, 1, 0), "a frame of 4097 bytes"),
        (True, head(2**32 - 1, READ, 1, 0), "at most 4096"),
        (True, head(3, READ, 1, 0), "shorter than its header"),
        (True, head(7, 9, 1, 0), "unknown kind 9"),
        (True, head(7, ANSWER, 1, 0), "unknown kind 128"),
        (True, head(9, READ, 1, 5) + b"ab", "overrun"),
        (True, head(7 + 5, READ, 1, 5) + b"\xff\xfe\n\n\n", "not ASCII"),
        (True, head(7 + 3, READ, 1, 3) + b"a\nb", "4 printable fields"),
        (True, head(7 + 7, READ, 1, 7) + b"a\nb\nc\n\x07", "4 printable fields"),
        (True, head(7 + 2000, READ, 1, 2000) + bytes(2000), "overrun"),
        (False, head(5, READ), "unknown kind 1"),
        (False, head(2, ANSWER), "shorter than its header"),
        (False, head(LIMIT + 1, ANSWER), "at most 4096"),
    ],
)
def test_a_broken_frame_is_refused(requests_side: bool, data: bytes, why: str) -> None:
    reader = FrameReader(LIMIT, requests=requests_side)
    with pytest.raises(FrameError, match=why):
        reader.feed(data)


def test_a_too_long_frame_is_refused_from_its_length_alone() -> None:
    # Nothing of the body is waited for: the length says enough.
    reader = FrameReader(LIMIT, requests=True)
    with pytest.raises(FrameError):
        reader.feed(struct.pack(">I", LIMIT + 1))


def test_credentials_beyond_their_bound_are_not_sent() -> None:
    with pytest.raises(ValueError):
        request(READ, 1, b"", ("x" * MAX_META_BYTES, "a", "b", "c"))


@pytest.mark.parametrize(
    ("received", "verdict"),
    [
        (b"", None),
        (PREFACE[:3], None),
        (PREFACE, True),
        (PREFACE + b"\x00\x00", True),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", False),
        (b"\x16\x03\x01", False),
        (PREFACE[:4] + b"x", False),
    ],
)
def test_the_preface_tells_frames_from_anything_else(received: bytes, verdict: bool | None) -> None:
    assert preface_answer(received) is verdict


def test_a_failure_names_its_code_and_a_nameless_one_is_unknown() -> None:
    assert parse_failure(failure("UNAUTHENTICATED", "not a member")) == (
        "UNAUTHENTICATED",
        "not a member",
    )
    assert parse_failure(failure("INVALID_ARGUMENT", "")) == ("INVALID_ARGUMENT", "")
    assert parse_failure(b"oops: something") == ("UNKNOWN", "oops: something")
    assert parse_failure(b"\xff\xfe") == ("UNKNOWN", "\ufffd\ufffd")
