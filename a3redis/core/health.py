"""Whether a node serves requests, as the health endpoints say it (no I/O).

Rules:
- One decision, `serves_requests`: a node serves once it has joined its
  cluster (it knows where keys belong), while it is not draining on shutdown
  and its store has not failed. HTTP /ready and the gRPC Health service both
  answer from it; neither decides anything itself.
- The gRPC Health service knows two names (`SERVICES`): "" (the node as a
  whole) and the KeyValue service; both have the node's status. Any other
  name is unknown: `status_of` answers None, which Check turns into NOT_FOUND
  and Watch into SERVICE_UNKNOWN (as the gRPC health protocol asks).
- Watchers are bounded twice: at most `WatchSlots.limit` at once per node
  (one more is refused, not queued), and each is sent only the latest status
  when it is ready for one, never a backlog of the changes it missed, so a
  watcher that reads slowly costs one slot and nothing more.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# The service name of the node as a whole, and of the public key-value API.
OVERALL = ""
KEY_VALUE = "a3redis.v1.KeyValue"
SERVICES = frozenset({OVERALL, KEY_VALUE})

# Watch streams open at once on one node; each holds a call slot on its connection.
MAX_WATCHERS = 100


class ServingStatus(enum.IntEnum):
    """grpc.health.v1's statuses, with the wire's numbering."""

    UNKNOWN = 0
    SERVING = 1
    NOT_SERVING = 2
    SERVICE_UNKNOWN = 3


@dataclass(frozen=True, slots=True)
class NodeCondition:
    """What the decision needs to know about a node, read by its shell."""

    # The node coordinates nothing yet: it has not found its ring (core.transition.Readiness).
    joining: bool
    # The node is stopping: it finishes the calls it has and takes no new ones.
    draining: bool
    # A write or fsync failed: the store refuses writes until the node restarts.
    store_failed: bool


def serves_requests(condition: NodeCondition) -> bool:
    """Whether the node coordinates requests now (HTTP /ready, gRPC Health SERVING)."""
    return not (condition.joining or condition.draining or condition.store_failed)


def status_of(service: str, condition: NodeCondition) -> ServingStatus | None:
    """The status of `service` on a node in `condition`; None for a service not known here."""
    if service not in SERVICES:
        return None
    return ServingStatus.SERVING if serves_requests(condition) else ServingStatus.NOT_SERVING


class WatchSlots:
    """At most `limit` watchers at once: `take` admits one (False: refuse it), `give_back`
    ends one."""

    def __init__(self, limit: int = MAX_WATCHERS) -> None:
        if limit < 1:
            raise ValueError("a node must admit at least one watcher")
        self.limit = limit
        self.taken = 0

    def take(self) -> bool:
        if self.taken >= self.limit:
            return False
        self.taken += 1
        return True

    def give_back(self) -> None:
        if self.taken <= 0:
            raise ValueError("no watcher to end")
        self.taken -= 1
