"""What a failed request tells programs beside its status code (no I/O, no protobuf).

Rules:
- Every failure a front end answers has `ErrorDetails`: a stable reason
  (UPPER_SNAKE, listed in proto/a3redis/v1/kv.proto), the domain "a3redis",
  metadata (facts as text, e.g. `required` and `alive` replicas) and, only
  where retrying the same call after a pause may succeed, a retry delay.
- A RequestError's details come from the error alone (`details_of`): its
  `detail` if it names a narrower reason, else its `reason`; a refused
  request's validation reason (a metric label) is turned into an
  UPPER_SNAKE one here. Failures a shell makes itself (an unknown method, too
  many watchers) name their reason through `details`.
- Plain data only: the gRPC shell encodes it as google.rpc.Status with an
  ErrorInfo and a RetryInfo (a3redis.api.status_details).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from a3redis.core.errors import RequestError
from a3redis.core.validation import InvalidRequestError, Reason

DOMAIN = "a3redis"

# How long to wait before the same call may succeed, by reason. A node learns
# that a replica is back within a gossip round or two (about a second); a
# node that has not joined hears from its peers as fast. A failure that only
# another node, or an operator, can fix has no delay (clients move on).
RETRY_DELAY: Mapping[str, float] = MappingProxyType(
    {
        "QUORUM_UNAVAILABLE": 1.0,
        "NOT_JOINED": 1.0,
    }
)

# The reason of a refused request, by the validation reason that refused it.
INVALID_REASONS: Mapping[Reason, str] = MappingProxyType(
    {
        Reason.KEY: "INVALID_KEY",
        Reason.VALUE: "INVALID_VALUE",
        Reason.BATCH: "BATCH_TOO_LARGE",
        Reason.NODE_ID: "INVALID_VERSION",
        Reason.LOGICAL: "INVALID_VERSION",
        Reason.WALL_MS: "INVALID_VERSION",
        Reason.CLOCK_SKEW: "CLOCK_SKEW",
        Reason.EXPIRY: "INVALID_EXPIRY",
        Reason.WRONG_KEY: "WRONG_KEY",
        Reason.MALFORMED: "MALFORMED_REQUEST",
        Reason.RESPONSE_SIZE: "RESPONSE_TOO_LARGE",
        Reason.OTHER: "INVALID_ARGUMENT",
    }
)


@dataclass(frozen=True, slots=True)
class ErrorDetails:
    reason: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Seconds after which the same call may succeed; None: waiting does not help.
    retry_delay: float | None = None
    domain: str = DOMAIN


def details(reason: str, metadata: Mapping[str, str] | None = None) -> ErrorDetails:
    """The details of a failure named `reason` (with its retry delay, if it has one)."""
    return ErrorDetails(reason, metadata or {}, RETRY_DELAY.get(reason))


def details_of(error: RequestError) -> ErrorDetails:
    """What `error` tells a program: its reason, its facts, when to retry."""
    return details(reason_of(error), error.metadata)


def reason_of(error: RequestError) -> str:
    if error.detail is not None:
        return error.detail
    if isinstance(error, InvalidRequestError):
        return INVALID_REASONS.get(error.reason, "INVALID_ARGUMENT")
    return error.reason
