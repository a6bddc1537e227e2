"""Handoff: copies of partitions this node does not own go to their owners, then go.

Rules: what moves, to whom, and when it may be dropped here are
core.ownership's; this shell reads the records, sends them and purges.
A pass runs after each anti-entropy round. Records are read as reads see
them: one beyond the clock-skew bound is not handed off (every owner would
refuse it) and stays until a write replaces it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from a3redis.cluster.peers import PeerUnavailableError
from a3redis.cluster.topology import Topology
from a3redis.core.membership import Status
from a3redis.core.merkle import MerkleIndex
from a3redis.core.ownership import (
    BATCH,
    Settling,
    batches,
    durably_held,
    foreign_partitions,
    may_send,
)
from a3redis.core.record import ApplyOutcome, Record
from a3redis.storage.store import Store

log = logging.getLogger("a3redis.cluster.ownership")

__all__ = ["BATCH", "Handoff", "HandoffStats"]


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
        cluster: Topology,
        index: Callable[[], Awaitable[MerkleIndex]],
        pace: Callable[[int], Awaitable[None]],
    ) -> None:
        self._store = store
        self._read = read
        self._cluster = cluster
        self._index = index
        self._pace = pace
        self._settling = Settling()
        self.stats = HandoffStats()

    def _alive(self, node_id: str) -> bool:
        member = self._cluster.membership.get(node_id)
        return member is not None and member.status is Status.ALIVE

    async def run_pass(self) -> int:
        """Hand off what we hold but do not own; return the keys dropped here."""
        cluster = self._cluster
        ring = cluster.ring
        # While a member joins or leaves, former owners keep every copy (core.transition).
        if not self._settling.settled(ring.members, cluster.joining or cluster.changing):
            return 0
        if ring.sole_owners == (cluster.node_id,):
            return 0  # a ring of one: every partition is ours, no index needed to see it
        index = await self._index()
        foreign = foreign_partitions(
            index.occupied_partitions(), cluster.node_id, ring.partition_owners
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
        if not may_send(owners, self._alive):
            return None
        dropped = 0
        for keys in batches(index.partition_keys(partition)):
            batch: list[Record] = [record for record in self._read(keys) if record is not None]
            if not batch:
                continue
            for owner in owners:
                link = self._cluster.link(owner)
                if not may_send((owner,), self._alive) or link is None:
                    return None
                try:
                    outcomes = await link.apply(batch)
                except PeerUnavailableError as error:
                    log.debug("[handoff] partition=%d owner=%s: %s", partition, owner, error)
                    return None
                if not durably_held(outcomes):
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
