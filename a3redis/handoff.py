"""Handoff: copies of partitions this node does not own go to their owners, then go.

Rules: a node can hold records of partitions it does not own: the ring
changed under it (a node joined, or an operator removed one), or a
coordinator whose view was behind sent them. Anti-entropy only compares
partitions two owners share, so nothing else would ever move them; and a
stale copy left behind would come back to life if the ring ever gave the
partition back (a tombstone purged meanwhile could not stop it). So, after
each anti-entropy round, once the ring has stayed the same for a whole
round (a view that is still changing is not acted on), every record of a
partition we do not own is applied on each of its owners, and dropped here
(a purge entry, and only if it is still the same version) once every owner
has durably answered for it. A partition with an owner that is down,
does not answer or refuses a record (REJECTED: its limits or its clock
disagree with ours) stays for a later pass. Nothing leaves on a guess.
Nothing goes to a member that is not alive: every owner's status is checked
again before each batch it is sent, so a member that died (or was declared
dead by gossip) during a pass gets nothing more until it is back.
Records are read as reads see them: one beyond the clock-skew bound is not
handed off (every owner would refuse it) and stays until a write replaces it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from a3redis.cluster import Cluster
from a3redis.core.membership import Status
from a3redis.core.merkle import MerkleIndex
from a3redis.core.record import ApplyOutcome, Record
from a3redis.peers import PeerUnavailableError
from a3redis.storage.store import Store

log = logging.getLogger("a3redis.handoff")

BATCH = 256


@dataclass
class HandoffStats:
    passes: int = 0
    keys_handed_off: int = 0
    partitions_handed_off: int = 0
    partitions_waiting: int = 0


class Handoff:
    def __init__(
        self,
        store: Store,
        read: Callable[[Sequence[bytes]], list[Record | None]],
        cluster: Cluster,
        index: Callable[[], Awaitable[MerkleIndex]],
        pace: Callable[[int], Awaitable[None]],
    ) -> None:
        self._store = store
        self._read = read
        self._cluster = cluster
        self._index = index
        self._pace = pace
        self._ring_seen: tuple[str, ...] | None = None
        self.stats = HandoffStats()

    async def run_pass(self) -> int:
        """Hand off what we hold but do not own; return the keys dropped here."""
        cluster = self._cluster
        ring = cluster.ring
        settled = ring.members == self._ring_seen
        self._ring_seen = ring.members
        if not settled or cluster.joining:
            return 0
        me = cluster.node_id
        index = await self._index()
        foreign = sorted(
            p for p in index.occupied_partitions() if me not in ring.partition_owners(p)
        )
        self.stats.passes += 1
        self.stats.partitions_waiting = 0
        dropped = 0
        moved_partitions = 0
        receivers: set[str] = set()
        for partition in foreign:
            if cluster.ring is not ring:
                break  # the ring changed during the pass: the next one starts over
            owners = ring.partition_owners(partition)
            moved = await self._hand_off(partition, owners, index)
            if moved is None:
                self.stats.partitions_waiting += 1
                continue
            dropped += moved
            moved_partitions += 1
            receivers.update(owners)
        self.stats.partitions_handed_off += moved_partitions
        self.stats.keys_handed_off += dropped
        if moved_partitions or self.stats.partitions_waiting:
            # One line per pass: a join moves thousands of partitions at once.
            log.info(
                "[handoff] partitions=%d keys=%d to=%s waiting=%d (held here, owned elsewhere)",
                moved_partitions,
                dropped,
                ",".join(sorted(receivers)) or "-",
                self.stats.partitions_waiting,
            )
        return dropped

    async def _hand_off(
        self, partition: int, owners: tuple[str, ...], index: MerkleIndex
    ) -> int | None:
        """Apply one partition's records on every owner, then drop them; None if we could not."""
        cluster = self._cluster
        if not owners or any(
            (member := cluster.membership.get(o)) is None or member.status is not Status.ALIVE
            for o in owners
        ):
            return None
        keys = index.partition_keys(partition)
        dropped = 0
        for start in range(0, len(keys), BATCH):
            found = self._read(keys[start : start + BATCH])
            batch: list[Record] = [record for record in found if record is not None]
            if not batch:
                continue
            for owner in owners:
                member = cluster.membership.get(owner)
                link = cluster.link(owner)
                if member is None or member.status is not Status.ALIVE or link is None:
                    return None
                try:
                    # Any answer but REJECTED (stored, duplicate, or it holds newer)
                    # means the owner durably has this version or a later one.
                    outcomes = await link.apply(batch)
                except PeerUnavailableError as error:
                    log.debug("[handoff] partition=%d owner=%s: %s", partition, owner, error)
                    return None
                if ApplyOutcome.REJECTED in outcomes:
                    log.warning(
                        "[handoff] partition=%d owner=%s refused %d record(s); kept here",
                        partition,
                        owner,
                        outcomes.count(ApplyOutcome.REJECTED),
                    )
                    return None
            dropped += await self._store.purge(batch)
            await self._pace(len(batch))
        return dropped
