"""Keys that expire: the read decision, versions before expiries, the purge rule, EXPIRE."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a3redis.core.anti_entropy import EntryVersion, transfers
from a3redis.core.expiry import (
    MAX_EXPIRES_AT_MS,
    NEVER,
    Condition,
    Decision,
    Expiry,
    Rewrite,
    dead_since,
    decide_expire,
    decide_persist,
    format_duration,
    is_live,
    parse_duration,
    remaining_ms,
    visible,
)
from a3redis.core.hlc import Version
from a3redis.core.merkle import entry_digest
from a3redis.core.purge import purgeable
from a3redis.core.record import Record, merge, supersedes
from a3redis.core.validation import InvalidRequestError, Limits
from tests.core.strategies import keys, records_of

one_key_records = keys.flatmap(lambda key: st.lists(records_of(key), min_size=1, max_size=8))
moments = st.integers(min_value=0, max_value=8)


def value(expires: int, wall: int = 10, key: bytes = b"k") -> Record:
    return Record(key, b"v", Version(wall, 0, "node-1"), expires)


# ----- the read decision -------------------------------------------------------------------


@given(one_key_records, moments)
def test_a_read_judges_only_the_newest_version_never_an_older_live_one(
    records: list[Record], now: int
) -> None:
    newest = functools.reduce(merge, records)
    shown = visible(newest, now)
    if is_live(newest, now):
        assert shown is newest
    else:
        # Missing: whatever older versions were live, and with the newest's version.
        assert shown is not None and shown.value is None and shown.version == newest.version


@given(one_key_records, moments, moments)
def test_a_record_once_expired_stays_expired(records: list[Record], now: int, later: int) -> None:
    for record in records:
        if not is_live(record, now) and later >= now:
            assert not is_live(record, later)


@given(one_key_records)
def test_the_version_decides_whatever_the_expiries(records: list[Record]) -> None:
    for a in records:
        for b in records:
            if a.version != b.version:
                assert supersedes(a, b) == (a.version > b.version)


def test_live_means_a_value_before_its_expiry() -> None:
    assert is_live(value(0), 10**12)
    assert is_live(value(100), 99) and not is_live(value(100), 100)
    assert not is_live(Record(b"k", None, Version(1, 0, "a")), 0)
    assert visible(None, 5) is None
    assert visible(value(100), 100) == Record(b"k", None, Version(10, 0, "node-1"), 100)


def test_remaining_time_answers_as_redis_pttl() -> None:
    assert remaining_ms(None, 0) == -2
    assert remaining_ms(value(100), 100) == -2
    assert remaining_ms(value(0), 100) == -1
    assert remaining_ms(value(100), 40) == 60


def test_a_ttl_counts_from_the_writes_own_version() -> None:
    assert Expiry(ttl_ms=500).resolve(1_000) == 1_500
    assert Expiry(at_ms=42).resolve(1_000) == 42
    assert NEVER.resolve(1_000) == 0


# ----- dead records and the purge rule -----------------------------------------------------

GRACE = 1000
REPLICAS = {0: ["b", "c"]}


def choose(records: list[Record], now: int, confirmed: dict[tuple[int, str], int]) -> list[Record]:
    return purgeable(records, now, GRACE, lambda key: 0, lambda p: REPLICAS[p], confirmed)


def test_an_expired_record_is_dead_since_its_expiry_and_purged_by_the_tombstone_rule() -> None:
    expired = value(expires=2_000)
    assert dead_since(expired) == 2_000
    assert dead_since(value(0)) is None
    assert dead_since(Record(b"k", None, Version(7, 0, "a"))) == 7
    confirmed = {(0, "b"): 2_500, (0, "c"): 2_600}
    assert choose([expired], now=2_999, confirmed=confirmed) == []  # still in grace
    assert choose([expired], now=3_000, confirmed=confirmed) == [expired]
    # A confirmation from before expiry + grace/2 proves nothing about the expired copy.
    assert choose([expired], now=9_000, confirmed={(0, "b"): 2_499, (0, "c"): 2_600}) == []


@given(
    st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 3000), st.booleans()), max_size=10),
    st.integers(0, 6000),
    st.integers(0, 6000),
    st.integers(0, 6000),
)
def test_nothing_live_or_dead_for_less_than_the_grace_is_ever_purged(
    shapes: list[tuple[int, int, bool]], now: int, confirm_b: int, confirm_c: int
) -> None:
    records = [
        Record(b"k%d" % i, None if tomb else b"v", Version(wall, 0, "a"), 0 if tomb else expires)
        for i, (wall, expires, tomb) in enumerate(shapes)
    ]
    confirmed = {(0, "b"): confirm_b, (0, "c"): confirm_c}
    for record in choose(records, now, confirmed):
        assert not is_live(record, now)
        died = dead_since(record)
        assert died is not None and now >= died + GRACE
        assert min(confirm_b, confirm_c) >= died + GRACE // 2


def test_a_long_expired_record_replaces_an_older_value_but_is_not_copied_where_absent() -> None:
    now, grace = 100_000, 1_000
    old = Record(b"k", b"old", Version(100, 0, "node-1"))
    long_expired = Record(b"k", b"v", Version(200, 0, "node-2"), now - grace - 1)
    recent = Record(b"k", b"v", Version(200, 0, "node-2"), now - grace + 1)
    entry = EntryVersion.of
    assert transfers([], {b"k": entry(long_expired)}, now, grace).pull == []
    assert transfers([long_expired], {}, now, grace).push == []
    assert transfers([old], {b"k": entry(long_expired)}, now, grace).pull == [b"k"]
    assert transfers([long_expired], {b"k": entry(old)}, now, grace).push == [long_expired]
    assert transfers([], {b"k": entry(recent)}, now, grace).pull == [b"k"]


# ----- Merkle leaves -----------------------------------------------------------------------


def test_the_expiry_is_hashed_into_the_leaf_and_no_expiry_hashes_as_before() -> None:
    plain = Record(b"key", b"v", Version(1764000000000, 2, "node-1"))
    tomb = Record(b"key", None, Version(1764000000000, 2, "node-1"))
    # The digests of the release before expiries (records of both compare equal).
    assert entry_digest(plain) == 0x441DCBA7F005EE61C66446C461D87A5A
    assert entry_digest(tomb) == 0x959854909BA1D3D3F680AB6ED2F86DD6
    digests = {entry_digest(plain._replace(expires_at_ms=e)) for e in (0, 1, 2, 2**53 - 1)}
    assert len(digests) == 4


# ----- EXPIRE and PERSIST ------------------------------------------------------------------

NOW = 1_000


@pytest.mark.parametrize(
    ("held", "condition", "asked", "changed"),
    [
        (0, Condition.ALWAYS, 5_000, True),
        (0, Condition.NX, 5_000, True),
        (3_000, Condition.NX, 5_000, False),
        (0, Condition.XX, 5_000, False),
        (3_000, Condition.XX, 5_000, True),
        (0, Condition.GT, 5_000, False),  # no expiry is infinite: nothing is greater
        (3_000, Condition.GT, 5_000, True),
        (5_000, Condition.GT, 5_000, False),
        (0, Condition.LT, 5_000, True),  # anything is less than infinite
        (3_000, Condition.LT, 5_000, False),
        (7_000, Condition.LT, 5_000, True),
    ],
)
def test_expire_follows_redis_conditions(
    held: int, condition: Condition, asked: int, changed: bool
) -> None:
    current = value(held)
    decision = decide_expire(current, NOW, Expiry(at_ms=asked), condition)
    if changed:
        assert decision == Decision(True, Rewrite(b"k", b"v", Expiry(at_ms=asked)))
    else:
        assert decision == Decision(False, None)


def test_expire_compares_a_ttl_from_now() -> None:
    current = value(3_000)
    assert decide_expire(current, NOW, Expiry(ttl_ms=1_500), Condition.GT).changed is False
    assert decide_expire(current, NOW, Expiry(ttl_ms=2_500), Condition.GT).changed is True


def test_expire_leaves_a_missing_or_expired_key_and_deletes_on_a_past_expiry() -> None:
    assert decide_expire(None, NOW, Expiry(ttl_ms=10)) == Decision(False, None)
    assert decide_expire(value(NOW), NOW, Expiry(ttl_ms=10)) == Decision(False, None)
    assert decide_expire(value(0), NOW, Expiry(at_ms=NOW)) == Decision(
        True, Rewrite(b"k", None, NEVER)
    )


def test_persist_removes_an_expiry_only_where_there_is_one() -> None:
    assert decide_persist(value(5_000), NOW) == Decision(True, Rewrite(b"k", b"v", NEVER))
    assert decide_persist(value(0), NOW) == Decision(False, None)
    assert decide_persist(value(NOW), NOW) == Decision(False, None)
    assert decide_persist(None, NOW) == Decision(False, None)


# ----- bounds and durations ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expiry", "message"),
    [
        (Expiry(ttl_ms=-5), "ttl_ms is -5; it must be from 1 to"),
        (Expiry(ttl_ms=MAX_EXPIRES_AT_MS), f"ttl_ms is {MAX_EXPIRES_AT_MS}; it must be from 1"),
        (Expiry(ttl_ms=10**5000), "ttl_ms is a huge number"),
        (Expiry(at_ms=-1), "expires_at_ms is -1; it must be from 1 to"),
        (Expiry(at_ms=MAX_EXPIRES_AT_MS + 1), "expires_at_ms is 9007199254740992"),
        (Expiry(ttl_ms=1, at_ms=1), "not both"),
    ],
)
def test_an_invalid_expiry_is_refused_naming_the_field(expiry: Expiry, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        Limits().check_expiry(expiry, 1_764_000_000_000, "put")


def test_a_record_from_a_peer_with_an_expiry_out_of_range_is_refused() -> None:
    Limits().check_record(value(MAX_EXPIRES_AT_MS), 10)
    for bad in (-1, MAX_EXPIRES_AT_MS + 1, 2**64):
        with pytest.raises(InvalidRequestError, match=r"record\.expires_at_ms"):
            Limits().check_record(value(bad), 10)


@pytest.mark.parametrize(
    ("text", "milliseconds"),
    [
        ("500ms", 500),
        ("30s", 30_000),
        ("30", 30_000),
        ("1.5m", 90_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        (" 0.25s ", 250),
        ("0.0005s", 0),
    ],
)
def test_durations_read_as_people_write_them(text: str, milliseconds: int) -> None:
    if milliseconds == 0:
        with pytest.raises(ValueError, match="positive duration"):
            parse_duration(text)
    else:
        assert parse_duration(text) == milliseconds


@pytest.mark.parametrize("text", ["", "-5s", "5 s", "5w", "1e3", "s", "9" * 40])
def test_a_malformed_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_durations_print_for_people() -> None:
    assert [format_duration(ms) for ms in (450, 29_500, 300_000, 7_380_000)] == [
        "450ms",
        "29.5s",
        "5m 0s",
        "2h 3m",
    ]
