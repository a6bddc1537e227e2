"""What a node accepts from outside: versions, records and read keys (core.validation).

The checks are the one gate between what clients and peers send and the
store and the clock; these tests pin each limit at its edge and the message
that names it.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a3redis.config import Config, ConfigError
from a3redis.core.expiry import MAX_EXPIRES_AT_MS
from a3redis.core.hlc import MAX_LOGICAL, HybridLogicalClock, Version
from a3redis.core.record import Record
from a3redis.core.rejections import Rejections
from a3redis.core.table import RecordTable
from a3redis.core.validation import (
    MAX_WALL_MS,
    NODE_ID_FORM,
    InvalidRequestError,
    Limits,
    Reason,
    is_node_id,
)

NOW = 1_800_000_000_000
LIMITS = Limits(max_key_bytes=8, max_value_bytes=16, max_batch_keys=3, max_clock_skew_ms=60_000)


def reason_of(check: object, *args: object) -> tuple[Reason, str]:
    with pytest.raises(InvalidRequestError) as caught:
        check(*args)  # type: ignore[operator]
    return caught.value.reason, str(caught.value)


def test_a_version_at_the_skew_bound_is_accepted_and_one_ms_more_is_not() -> None:
    LIMITS.check_version(Version(NOW + 60_000, MAX_LOGICAL, "node-1"), NOW)
    reason, message = reason_of(
        LIMITS.check_version, Version(NOW + 60_001, 0, "node-1"), NOW, "after"
    )
    assert reason is Reason.CLOCK_SKEW
    assert message == (
        "after.wall_ms is 60001 ms ahead of this node's clock; the limit is MAX_CLOCK_SKEW=60s"
    )


def test_versions_from_the_past_are_fine() -> None:
    LIMITS.check_version(Version(0, 0, "a"), NOW)
    LIMITS.check_version(Version(NOW - 10**9, MAX_LOGICAL, "node-2"), NOW)


def test_the_poisoned_version_of_the_issue_is_refused_naming_field_and_limit() -> None:
    reason, message = reason_of(
        LIMITS.check_version, Version(2**64 - 1, 2**32 - 1, "node-9"), NOW, "record.version"
    )
    assert reason is Reason.CLOCK_SKEW
    assert message.startswith("record.version.wall_ms is ")
    assert "MAX_CLOCK_SKEW=60s" in message


@pytest.mark.parametrize(
    ("version", "reason", "fragment"),
    [
        (Version(NOW, 0, "n" * 70_000), Reason.NODE_ID, "after.node_id is 70000 characters long"),
        (Version(NOW, 0, ""), Reason.NODE_ID, "after.node_id is ''"),
        (Version(NOW, 0, "-lead"), Reason.NODE_ID, "after.node_id is '-lead'"),
        (Version(NOW, 0, "a b"), Reason.NODE_ID, NODE_ID_FORM),
        (Version(NOW, 0, "n" * 65), Reason.NODE_ID, "65 characters long"),
        (Version(NOW, 0, "nöde"), Reason.NODE_ID, NODE_ID_FORM),
        (Version(NOW, MAX_LOGICAL + 1, "a"), Reason.LOGICAL, f"from 0 to {MAX_LOGICAL}"),
        (Version(NOW, -1, "a"), Reason.LOGICAL, "after.logical is -1"),
        (Version(-1, 0, "a"), Reason.WALL_MS, f"from 0 to {MAX_WALL_MS}"),
        (Version(MAX_WALL_MS + 1, 0, "a"), Reason.WALL_MS, "after.wall_ms is"),
    ],
)
def test_malformed_versions_are_refused_precisely(
    version: Version, reason: Reason, fragment: str
) -> None:
    found, message = reason_of(LIMITS.check_version, version, NOW, "after")
    assert found is reason
    assert fragment in message
    assert len(message) < 200, "a message never repeats a huge input"


def test_the_skew_limit_is_configurable() -> None:
    tight = Limits(max_clock_skew_ms=1500)
    tight.check_version(Version(NOW + 1500, 0, "a"), NOW)
    _, message = reason_of(tight.check_version, Version(NOW + 1501, 0, "a"), NOW)
    assert "MAX_CLOCK_SKEW=1.5s" in message
    assert tight.clock_bound(NOW) == NOW + 1500


node_id_texts = st.text(max_size=70) | st.from_regex(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,70}", fullmatch=True
)


@given(node_id_texts)
def test_a_version_may_carry_exactly_the_node_ids_config_accepts(text: str) -> None:
    try:
        config_accepts = Config.from_env({"NODE_ID": text}).node_id == text.strip()
    except ConfigError:
        config_accepts = False
    if text != text.strip():
        return  # the environment's value is stripped first
    assert is_node_id(text) == config_accepts
    assert is_node_id(text) == bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", text))
    if config_accepts:
        LIMITS.check_version(Version(NOW, 0, text), NOW)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (Record(b"", b"v", Version(NOW, 0, "a")), Reason.KEY),
        (Record(b"k" * 9, b"v", Version(NOW, 0, "a")), Reason.KEY),
        (Record(b"k", b"v" * 17, Version(NOW, 0, "a")), Reason.VALUE),
        (Record(b"k", None, Version(NOW + 60_001, 0, "a")), Reason.CLOCK_SKEW),
        (Record(b"k", b"v", Version(NOW, 0, "x" * 100)), Reason.NODE_ID),
    ],
)
def test_records_from_peers_are_checked_like_client_writes(record: Record, reason: Reason) -> None:
    assert reason_of(LIMITS.check_record, record, NOW)[0] is reason


def test_valid_records_and_tombstones_pass() -> None:
    LIMITS.check_record(Record(b"k" * 8, b"v" * 16, Version(NOW, 3, "node-1")), NOW)
    LIMITS.check_record(Record(b"k", None, Version(NOW + 60_000, 0, "node-1")), NOW)


edge_records = st.builds(
    Record,
    st.binary(max_size=9),
    st.none() | st.binary(max_size=17),
    st.builds(
        Version,
        st.sampled_from([-1, 0, NOW, NOW + 60_000, NOW + 60_001, MAX_WALL_MS, MAX_WALL_MS + 1]),
        st.sampled_from([-1, 0, MAX_LOGICAL, MAX_LOGICAL + 1]),
        st.sampled_from(["node-1", "a", "", "x" * 64, "x" * 65, "bad id", "ñ"]),
    ),
    st.sampled_from([-1, 0, 1, MAX_EXPIRES_AT_MS, MAX_EXPIRES_AT_MS + 1]),
)


@given(st.lists(edge_records, max_size=6), st.sampled_from([NOW, MAX_WALL_MS]))
def test_the_first_refused_record_of_a_batch_is_the_first_check_record_refuses(
    records: list[Record], wall_ms: int
) -> None:
    """A Stream page is checked in one call per page: it finds exactly the record the
    per-record check refuses first (which then words the error)."""

    def refused(record: Record) -> bool:
        try:
            LIMITS.check_record(record, wall_ms)
        except InvalidRequestError:
            return True
        return False

    expected = next((i for i, record in enumerate(records) if refused(record)), -1)
    assert LIMITS.first_refused_record(records, wall_ms) == expected


def test_check_keys_names_the_first_bad_key() -> None:
    LIMITS.check_keys([])
    LIMITS.check_keys([b"a", b"k" * 8])
    reason, message = reason_of(LIMITS.check_keys, [b"a", b"", b"k" * 9])
    assert reason is Reason.KEY
    assert message == "key 1: key must not be empty"


def test_client_errors_carry_their_reason() -> None:
    assert reason_of(LIMITS.check_key, b"")[0] is Reason.KEY
    assert reason_of(LIMITS.check_value, b"v" * 17)[0] is Reason.VALUE
    assert reason_of(LIMITS.check_batch, 4)[0] is Reason.BATCH
    assert reason_of(LIMITS.check_pairs, [(b"k", b"v" * 17)])[0] is Reason.VALUE
    assert InvalidRequestError("x").reason is Reason.OTHER


@given(
    wall=st.integers(0, 2**50),
    remotes=st.lists(
        st.builds(
            Version,
            st.integers(0, 2**64 - 1),
            st.integers(0, MAX_LOGICAL),
            st.sampled_from(["a", "node-1", "z"]),
        ),
        max_size=20,
    ),
)
def test_a_clock_that_only_observes_accepted_versions_stays_within_the_bound(
    wall: int, remotes: list[Version]
) -> None:
    """The property the skew check exists for: no accepted input drags the clock past it."""
    clock = HybridLogicalClock("m")
    for remote in remotes:
        try:
            LIMITS.check_version(remote, wall)
        except InvalidRequestError:
            continue
        clock.observe(remote, wall)
    version = clock.now(wall)
    # One millisecond more at most: a counter spent at the bound moves on by 1 ms.
    assert version.wall_ms <= LIMITS.clock_bound(wall) + 1


def test_rejections_are_counted_always_and_logged_at_a_limited_rate() -> None:
    rejections = Rejections(log_interval_s=10.0)
    assert rejections.count("Apply", "clock_skew", 100.0) == 0  # the first: log it
    assert rejections.count("Apply", "clock_skew", 101.0) is None
    assert rejections.count("Apply", "clock_skew", 109.9) is None
    assert rejections.count("Apply", "node_id", 109.9) == 0  # another reason: its own line
    assert rejections.count("Apply", "clock_skew", 110.0) == 2  # due again: 2 went unlogged
    assert rejections.count("Apply", "clock_skew", 111.0) is None
    assert rejections.counts == {("Apply", "clock_skew"): 5, ("Apply", "node_id"): 1}
    assert rejections.total == 6


def test_a_restarted_clock_is_seeded_from_the_greatest_version_within_the_bound() -> None:
    valid = Record(b"a", b"1", Version(NOW + 30_000, 7, "node-2"))
    older = Record(b"b", b"2", Version(NOW - 5, 0, "node-1"))
    poisoned = Record(b"c", b"3", Version(2**64 - 1, MAX_LOGICAL, "node-9"))
    table = RecordTable([valid, older])
    assert table.greatest_version(NOW + 60_000) == valid.version
    table.apply(poisoned)
    assert table.max_version == poisoned.version
    assert table.greatest_version(NOW + 60_000) == valid.version
    assert table.greatest_version(NOW) == older.version
    assert RecordTable([poisoned]).greatest_version(NOW) is None
    assert RecordTable().greatest_version(NOW) is None


@given(
    wall=st.integers(-(2**65), 2**65),
    logical=st.integers(-5, 2**33),
    node_id=st.text(max_size=80) | st.sampled_from(["node-1", "a", "n" * 64, "n" * 65]),
    local_wall=st.integers(0, 2**45),
)
def test_a_version_passes_exactly_when_every_rule_holds(
    wall: int, logical: int, node_id: str, local_wall: int
) -> None:
    rules = (
        0 <= wall <= MAX_WALL_MS
        and wall <= local_wall + LIMITS.max_clock_skew_ms
        and 0 <= logical <= MAX_LOGICAL
        and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", node_id) is not None
    )
    try:
        LIMITS.check_version(Version(wall, logical, node_id), local_wall)
    except InvalidRequestError as error:
        assert not rules
        assert error.reason is not Reason.OTHER
    else:
        assert rules
