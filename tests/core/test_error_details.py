"""What a failed request tells programs: reason, metadata, retry delay (core.error_details)."""

from __future__ import annotations

import pytest

from a3redis.core.error_details import DOMAIN, INVALID_REASONS, details, details_of
from a3redis.core.errors import (
    NodeUnavailableError,
    NotJoinedError,
    RequestError,
    TimedOutError,
    UnavailableError,
    UnsatisfiableError,
    WriteRejectedError,
    replica_counts,
)
from a3redis.core.validation import InvalidRequestError, Limits, Reason


@pytest.mark.parametrize(
    ("error", "reason", "retry_delay"),
    [
        (UnavailableError("m", metadata=replica_counts(2, 1)), "QUORUM_UNAVAILABLE", 1.0),
        (NotJoinedError("m"), "NOT_JOINED", 1.0),
        (TimedOutError("m"), "REPLICA_TIMEOUT", None),
        (NodeUnavailableError("m"), "NODE_UNAVAILABLE", None),
        (UnsatisfiableError("m"), "TOO_FEW_NODES", None),
        (WriteRejectedError("m"), "LOST_LAST_WRITE_WINS", None),
        (InvalidRequestError("m", Reason.CLOCK_SKEW), "CLOCK_SKEW", None),
        (InvalidRequestError("m", Reason.MALFORMED), "MALFORMED_REQUEST", None),
        (InvalidRequestError("m"), "INVALID_ARGUMENT", None),
    ],
)
def test_each_error_names_its_reason_and_whether_a_retry_helps(
    error: RequestError, reason: str, retry_delay: float | None
) -> None:
    said = details_of(error)
    assert (said.reason, said.retry_delay, said.domain) == (reason, retry_delay, DOMAIN)


def test_quorum_failures_say_how_many_replicas_were_needed_and_alive() -> None:
    said = details_of(UnavailableError("m", metadata=replica_counts(2, 1)))
    assert said.metadata == {"required": "2", "alive": "1"}


def test_size_limits_name_the_narrow_reason_and_the_numbers() -> None:
    limits = Limits(max_key_bytes=4, max_value_bytes=8)
    with pytest.raises(InvalidRequestError) as key:
        limits.check_key(b"12345")
    with pytest.raises(InvalidRequestError) as empty:
        limits.check_key(b"")
    with pytest.raises(InvalidRequestError) as pair:
        limits.check_pairs([(b"k", b"1"), (b"k", b"123456789")])
    assert details_of(key.value).reason == "KEY_TOO_LARGE"
    assert details_of(key.value).metadata == {"bytes": "5", "limit": "4"}
    assert details_of(empty.value).reason == "INVALID_KEY"
    assert details_of(pair.value).reason == "VALUE_TOO_LARGE"
    assert details_of(pair.value).metadata == {"bytes": "9", "limit": "8", "index": "1"}
    # The metric label of the refusal is unchanged.
    assert key.value.reason is Reason.KEY


def test_every_validation_reason_has_an_upper_snake_reason() -> None:
    assert set(INVALID_REASONS) == set(Reason)
    assert all(name.isupper() for name in INVALID_REASONS.values())


def test_a_shell_failure_gets_the_delay_of_its_reason() -> None:
    assert details("QUORUM_UNAVAILABLE").retry_delay == 1.0
    assert details("NOT_SERVED", {"x": "y"}) == details_of(RequestError()).__class__(
        "NOT_SERVED", {"x": "y"}, None
    )
