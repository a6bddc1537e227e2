"""The node's ring follows its member table without blocking the event loop for long."""

from __future__ import annotations

import functools
import random
import time

import pytest
import trio

from a3redis.api.replica_calls import ReplicaCalls
from a3redis.cluster.peers import PeerUnavailableError
from a3redis.cluster.topology import Topology
from a3redis.core.membership import (
    GossipMessage,
    Membership,
    MembershipSettings,
    MemberState,
    Status,
)
from a3redis.core.ring import Ring
from a3redis.net.channels import ChannelPool


def member(node_id: str) -> MemberState:
    return MemberState(node_id, f"{node_id}:1", f"{node_id}:2", Status.ALIVE, 1)


async def test_a_thousand_members_at_once_join_the_ring_off_the_event_loop() -> None:
    me = member("node-0")
    membership = Membership(me, "c", 3, MembershipSettings())
    crowd = tuple(member(f"node-{i}") for i in range(1, 1000))
    longest_gap = 0.0
    done = trio.Event()

    async def watch_the_loop() -> None:
        # How long the loop goes without running this task: what a request would wait.
        nonlocal longest_gap
        last = time.perf_counter()
        while not done.is_set():
            await trio.sleep(0.002)
            now = time.perf_counter()
            longest_gap = max(longest_gap, now - last)
            last = now

    async with ChannelPool.open(1.0, None) as channels, trio.open_nursery() as nursery:
        cluster = Topology(
            membership,
            3,
            functools.partial(ReplicaCalls, channels, coordinator="node-0"),
            nursery,
            1.0,
        )
        assert cluster.ring.members == ("node-0",)
        nursery.start_soon(watch_the_loop)
        await trio.sleep(0.05)
        membership.on_exchange(GossipMessage("c", 3, "node-1", crowd), trio.current_time())
        started = time.perf_counter()
        stale = cluster.ring  # a big change: computed in a thread, the old ring meanwhile
        assert time.perf_counter() - started < 0.05
        assert stale.members == ("node-0",)
        with trio.fail_after(60):
            while len(cluster.ring.members) < 1000:
                await trio.sleep(0.01)
        ring = cluster.ring
        # One more member is a small change: applied at once, on the loop.
        membership.on_exchange(
            GossipMessage("c", 3, "late", (member("late"),)), trio.current_time()
        )
        started = time.perf_counter()
        assert "late" in cluster.ring.members
        small_change = time.perf_counter() - started
        done.set()
    # Generous bounds for a loaded 2-core host (measured: gaps ~10-30 ms, change ~8 ms).
    assert longest_gap < 0.3, longest_gap
    assert small_change < 0.25, small_change
    fresh = Ring(ring.members, 3)
    assert [ring.partition_owners(p) for p in range(0, 4096, 97)] == [
        fresh.partition_owners(p) for p in range(0, 4096, 97)
    ]


async def test_the_link_to_a_forgotten_member_is_closed() -> None:
    settings = MembershipSettings(failure_timeout=1.0, dead_member_reap=1.0)
    membership = Membership(member("node-0"), "c", 1, settings)
    ghost = MemberState("ghost", "127.0.0.1:1", "127.0.0.1:2", Status.ALIVE, 1)
    membership.on_exchange(GossipMessage("c", 1, "ghost", (ghost,)), 0.0)
    async with ChannelPool.open(1.0, None) as channels, trio.open_nursery() as nursery:
        cluster = Topology(
            membership,
            1,
            functools.partial(ReplicaCalls, channels, coordinator="node-0"),
            nursery,
            1.0,
        )
        link = cluster.link("ghost")
        assert link is not None and cluster.links() == [link]
        rng = random.Random(1)
        membership.tick(1.0, rng)  # dead
        assert "ghost" in cluster.ring.members and cluster.links() == [link]
        membership.tick(2.0, rng)  # forgotten
        assert cluster.ring.members == ("node-0",)
        assert cluster.links() == [] and cluster.link("ghost") is None
        with pytest.raises(PeerUnavailableError):
            await link.apply([])
        nursery.cancel_scope.cancel()
