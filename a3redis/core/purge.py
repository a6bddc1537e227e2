"""When a tombstone may be purged without any risk of the deleted key coming back.

Rules (Riak's): a tombstone is purged only when both
- it is older than TOMBSTONE_GRACE, and
- every other replica of its partition is known to hold it: an anti-entropy
  round that compared the partition with that replica and left it identical
  completed after the tombstone was written (a round copies the tombstone to
  a replica that lacked it, so "identical afterwards" means "holds it").
Confirmation times must come at least half the grace period after the
tombstone's version, which absorbs any clock skew between the coordinator
that stamped the delete and this node. A replica that missed repair for
longer than the grace period must be wiped before it rejoins (its old values
would otherwise come back); the README says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from a3redis.core.record import Record


def purgeable(
    tombstones: Iterable[Record],
    now_ms: int,
    grace_ms: int,
    partition_of: Callable[[bytes], int],
    other_replicas: Callable[[int], Iterable[str]],
    confirmed_ms: Mapping[tuple[int, str], int],
) -> list[Record]:
    """The tombstones that may go now."""
    chosen = []
    for tombstone in tombstones:
        if tombstone.value is not None:
            continue
        written = tombstone.version.wall_ms
        if now_ms < written + grace_ms:
            continue
        partition = partition_of(tombstone.key)
        needed = written + grace_ms // 2
        if all(confirmed_ms.get((partition, r), -1) >= needed for r in other_replicas(partition)):
            chosen.append(tombstone)
    return chosen
