"""Request limits and consistency levels."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a3redis.core.consistency import Consistency
from a3redis.core.validation import InvalidRequestError, Limits

SMALL = Limits(max_key_bytes=8, max_value_bytes=16, max_batch_keys=3)


def test_default_limits() -> None:
    assert Limits() == Limits(
        max_key_bytes=1024,
        max_value_bytes=1024 * 1024,
        max_batch_keys=10_000,
        max_clock_skew_ms=60_000,
    )


def test_empty_key_is_rejected() -> None:
    with pytest.raises(InvalidRequestError, match="empty"):
        SMALL.check_key(b"")


@pytest.mark.parametrize("limits", [SMALL, Limits()])
def test_key_of_exactly_the_limit_is_accepted_and_one_more_is_not(limits: Limits) -> None:
    limits.check_key(b"k" * limits.max_key_bytes)
    limits.check_key(b"\x00")
    with pytest.raises(InvalidRequestError) as caught:
        limits.check_key(b"k" * (limits.max_key_bytes + 1))
    message = str(caught.value)
    assert f"MAX_KEY_BYTES={limits.max_key_bytes}" in message
    assert f"{limits.max_key_bytes + 1} bytes" in message


@pytest.mark.parametrize("limits", [SMALL, Limits()])
def test_value_of_exactly_the_limit_is_accepted_and_one_more_is_not(limits: Limits) -> None:
    limits.check_value(b"")
    limits.check_value(b"v" * limits.max_value_bytes)
    with pytest.raises(InvalidRequestError) as caught:
        limits.check_value(b"v" * (limits.max_value_bytes + 1))
    message = str(caught.value)
    assert f"MAX_VALUE_BYTES={limits.max_value_bytes}" in message
    assert f"{limits.max_value_bytes + 1} bytes" in message


def test_zero_value_limit_allows_only_empty_values() -> None:
    limits = Limits(max_value_bytes=0)
    limits.check_value(b"")
    with pytest.raises(InvalidRequestError, match="MAX_VALUE_BYTES=0"):
        limits.check_value(b"x")


@given(key=st.binary(max_size=12), value=st.binary(max_size=20))
def test_checks_agree_with_the_limits(key: bytes, value: bytes) -> None:
    key_ok = 0 < len(key) <= SMALL.max_key_bytes
    value_ok = len(value) <= SMALL.max_value_bytes
    try:
        SMALL.check_pairs([(key, value)])
    except InvalidRequestError as error:
        assert not (key_ok and value_ok)
        assert str(error).startswith("pair 0: ")
    else:
        assert key_ok and value_ok
    assert SMALL.fits(key, value) is (key_ok and value_ok)
    assert SMALL.fits(key, None) is key_ok  # a delete: the key alone


def test_invalid_request_error_is_a_value_error() -> None:
    assert issubclass(InvalidRequestError, ValueError)


def test_batch_limit() -> None:
    SMALL.check_batch(0)
    SMALL.check_batch(3)
    with pytest.raises(InvalidRequestError, match=r"batch has 4 keys; the limit is 3"):
        SMALL.check_batch(4)


@pytest.mark.parametrize(
    ("bad_index", "bad_pair", "limit_name"),
    [
        (0, (b"k" * 9, b"v"), "MAX_KEY_BYTES=8"),
        (2, (b"k", b"v" * 17), "MAX_VALUE_BYTES=16"),
        (3, (b"", b"v"), "empty"),
    ],
)
def test_check_pairs_names_the_offending_pair(
    bad_index: int, bad_pair: tuple[bytes, bytes], limit_name: str
) -> None:
    pairs = [(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4")]
    pairs[bad_index] = bad_pair
    with pytest.raises(InvalidRequestError) as caught:
        SMALL.check_pairs(pairs)
    message = str(caught.value)
    assert message.startswith(f"pair {bad_index}: ")
    assert limit_name in message


def test_check_pairs_reports_the_first_bad_pair_and_accepts_good_ones() -> None:
    SMALL.check_pairs([])
    SMALL.check_pairs([(b"k" * 8, b"v" * 16)] * 5)
    with pytest.raises(InvalidRequestError, match=r"^pair 1: "):
        SMALL.check_pairs(iter([(b"a", b""), (b"", b""), (b"k" * 9, b"")]))


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("quorum", Consistency.QUORUM),
        ("QUORUM", Consistency.QUORUM),
        ("Quorum", Consistency.QUORUM),
        ("consistency_quorum", Consistency.QUORUM),
        ("CONSISTENCY_QUORUM", Consistency.QUORUM),
        (" one ", Consistency.ONE),
        ("all", Consistency.ALL),
        ("local", Consistency.LOCAL),
        ("consistency_local", Consistency.LOCAL),
    ],
)
def test_parse_accepts_names(text: str, level: Consistency) -> None:
    assert Consistency.parse(text) is level


@pytest.mark.parametrize(
    "text", ["quorom", "", "consistency_", "2", "ONE_", "consistency_consistency_one", "majority"]
)
def test_parse_rejects_unknown_names_listing_the_choices(text: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        Consistency.parse(text)
    message = str(caught.value)
    assert repr(text) in message
    assert "one, quorum, all, local" in message


@given(st.sampled_from(list(Consistency)), st.sampled_from(["", "consistency_", "CONSISTENCY_"]))
def test_parse_round_trips_every_level(level: Consistency, prefix: str) -> None:
    assert Consistency.parse(prefix + level.name) is level
    assert Consistency.parse(prefix + level.name.lower()) is level


@pytest.mark.parametrize(
    ("replicas", "one", "quorum", "all_", "local"),
    [
        (1, 1, 1, 1, 1),
        (2, 1, 2, 2, 1),
        (3, 1, 2, 3, 1),
        (4, 1, 3, 4, 1),
        (5, 1, 3, 5, 1),
        (6, 1, 4, 6, 1),
        (7, 1, 4, 7, 1),
    ],
)
def test_required_acknowledgements(
    replicas: int, one: int, quorum: int, all_: int, local: int
) -> None:
    assert Consistency.ONE.required(replicas) == one
    assert Consistency.QUORUM.required(replicas) == quorum
    assert Consistency.ALL.required(replicas) == all_
    assert Consistency.LOCAL.required(replicas) == local


@given(st.integers(1, 64))
def test_two_quorums_always_overlap(replicas: int) -> None:
    quorum = Consistency.QUORUM.required(replicas)
    assert 1 <= quorum <= replicas
    assert 2 * quorum > replicas
    for level in Consistency:
        assert 1 <= level.required(replicas) <= replicas
