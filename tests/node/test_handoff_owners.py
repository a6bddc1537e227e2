"""Handoff gives nothing to an owner that is not alive, even one that dies during a pass."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import cast

from a3redis.cluster.ownership import BATCH, Handoff
from a3redis.cluster.topology import Topology
from a3redis.core.hlc import Version
from a3redis.core.membership import (
    GossipMessage,
    Membership,
    MemberState,
    Probe,
    Status,
)
from a3redis.core.merkle import MerkleIndex
from a3redis.core.record import ApplyOutcome, Record
from a3redis.core.ring import Ring
from a3redis.storage.store import Store

ME, OWNER = "node-b", "node-a"


class Owner:
    """The owner's replica link: records what it is sent; dies after its first batch."""

    def __init__(self, membership: Membership) -> None:
        self.membership = membership
        self.batches: list[list[Record]] = []

    async def apply(self, records: Sequence[Record]) -> list[ApplyOutcome]:
        self.batches.append(list(records))
        # It stops answering probes: suspect from now on (then dead).
        message = self.membership.message(0.0)
        self.membership.on_probe_failed(Probe(f"{OWNER}:2", OWNER, message), 1.0)
        return [ApplyOutcome.STORED] * len(records)


class Holder:
    """What handoff needs of the store: the records, and purging them."""

    def __init__(self, records: dict[bytes, Record]) -> None:
        self.records = records
        self.purged: list[bytes] = []

    def get(self, key: bytes) -> Record | None:
        return self.records.get(key)

    def read(self, keys: Sequence[bytes]) -> list[Record | None]:
        return [self.records.get(key) for key in keys]

    async def purge(self, batch: list[Record]) -> int:
        self.purged += [record.key for record in batch]
        return len(batch)


async def test_an_owner_that_stops_answering_during_a_pass_is_sent_nothing_more() -> None:
    ring = Ring([ME, OWNER], 1, 1)
    assert ring.partition_owners(0) == (OWNER,)  # partition 0 is not ours: it must go
    me = MemberState(ME, f"{ME}:1", f"{ME}:2", Status.ALIVE, 1)
    membership = Membership(me, "c", 1)
    owner_state = MemberState(OWNER, f"{OWNER}:1", f"{OWNER}:2", Status.ALIVE, 1)
    membership.on_exchange(GossipMessage("c", 1, OWNER, (owner_state,)), 0.0)
    owner = Owner(membership)
    keys = [b"key-%04d" % n for n in range(3 * BATCH)]
    holder = Holder({key: Record(key, b"v", Version(1, 0, ME)) for key in keys})
    cluster = SimpleNamespace(
        node_id=ME,
        ring=ring,
        joining=False,
        changing=False,
        membership=membership,
        link=lambda node_id: owner if node_id == OWNER else None,
    )
    index = SimpleNamespace(
        occupied_partitions=lambda: {0}, partition_keys=lambda partition: sorted(keys)
    )

    async def the_index() -> MerkleIndex:
        return cast(MerkleIndex, index)

    async def no_pacing(count: int) -> None:
        pass

    handoff = Handoff(
        cast(Store, holder), holder.read, cast(Topology, cluster), the_index, no_pacing
    )
    assert await handoff.run_pass() == 0  # the first pass only sees the ring
    await handoff.run_pass()
    # The first batch went (and, answered, left here); then the owner was suspect: no more.
    assert [len(batch) for batch in owner.batches] == [BATCH]
    assert holder.purged == sorted(keys)[:BATCH]
    assert handoff.stats.partitions_waiting == 1
    member = membership.get(OWNER)
    assert member is not None and member.status is Status.SUSPECT
    # While it is not alive, later passes send it nothing at all.
    await handoff.run_pass()
    assert len(owner.batches) == 1


async def test_a_node_alone_in_its_ring_owns_everything_and_builds_no_index_to_see_it() -> None:
    me = MemberState(ME, f"{ME}:1", f"{ME}:2", Status.ALIVE, 1)
    cluster = SimpleNamespace(
        node_id=ME,
        ring=Ring([ME], 1, 16),
        joining=False,
        changing=False,
        membership=Membership(me, "c", 1),
        link=lambda node_id: None,
    )
    built: list[str] = []

    async def the_index() -> MerkleIndex:
        built.append("index")  # a whole pass over the store's records, in a node
        return MerkleIndex(16, 4)

    async def no_pacing(count: int) -> None:
        pass

    holder = Holder({})
    handoff = Handoff(
        cast(Store, holder), holder.read, cast(Topology, cluster), the_index, no_pacing
    )
    for _ in range(3):
        assert await handoff.run_pass() == 0
    assert built == []
