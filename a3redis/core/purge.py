"""When a dead record may be purged without any risk of the key coming back.

A record is dead since a moment (core.expiry.dead_since): a tombstone since
its version's wall time, an expired record since its expiry. Rules (Riak's,
for tombstones; Cassandra treats expired cells the same way): a dead record
is purged only when both
- it has been dead for TOMBSTONE_GRACE, and
- every other replica of its partition is known to hold it: an anti-entropy
  round that compared the partition with that replica and left it identical
  completed after it died (a round copies the record to a replica that
  lacked it, so "identical afterwards" means "holds it").
Confirmation times must come at least half the grace period after it died,
which absorbs any clock skew between the coordinator that stamped the
delete (or the clock that judged the expiry) and this node. A replica that
missed repair for longer than the grace period must be wiped before it
rejoins (its old values would otherwise come back); the README says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from a3redis.core.expiry import dead_since
from a3redis.core.record import Record


def purgeable(
    candidates: Iterable[Record],
    now_ms: int,
    grace_ms: int,
    partition_of: Callable[[bytes], int],
    other_replicas: Callable[[int], Iterable[str]],
    confirmed_ms: Mapping[tuple[int, str], int],
) -> list[Record]:
    """The dead records among `candidates` that may go now (live ones never do)."""
    chosen = []
    for record in candidates:
        died = dead_since(record)
        if died is None or now_ms < died + grace_ms:
            continue
        partition = partition_of(record.key)
        needed = died + grace_ms // 2
        if all(confirmed_ms.get((partition, r), -1) >= needed for r in other_replicas(partition)):
            chosen.append(record)
    return chosen
