"""The simulator's anti-entropy is the node's: its messages can be lost, its rules hold."""

from __future__ import annotations

from functools import partial

from a3redis.core.hlc import Version
from a3redis.core.record import Record
from tests.faults.simcluster import SimCluster, SimConfig

GRACE_S = 10.0


def pair() -> SimCluster:
    """Two nodes that replicate everything, members of each other."""
    cluster = SimCluster(SimConfig(nodes=2, replication_factor=2, sync_interval=1e6), 7, 0)
    cluster.start()
    cluster.loop.run_until(5.0)
    return cluster


def exchange(cluster: SimCluster, grace_s: float = GRACE_S) -> None:
    me, peer = cluster.nodes
    ended: list[bool] = []
    cluster.anti_entropy(me, peer, partial(ended.append, True), tombstone_grace_s=grace_s)
    cluster.loop.run_until(cluster.loop.now + 5 * cluster.config.peer_timeout)
    assert ended == [True]


def test_an_expired_tombstone_overwrites_an_older_value_but_is_not_copied_where_absent() -> None:
    cluster = pair()
    me, peer = cluster.nodes
    long_ago = me.wall_ms() - int(GRACE_S * 1000) - 1
    gone = Record(b"gone", None, Version(long_ago, 0, me.node_id))
    replaced = Record(b"replaced", None, Version(long_ago, 0, me.node_id))
    me.table.apply(gone)
    me.table.apply(replaced)
    peer.table.apply(Record(b"replaced", b"old", Version(long_ago - 5, 0, peer.node_id)))

    exchange(cluster)

    assert peer.table.get(b"gone") is None
    assert peer.table.get(b"replaced") == replaced
    # Within the grace period the same tombstone goes everywhere.
    exchange(cluster, grace_s=3600.0)
    assert peer.table.get(b"gone") == gone


def test_newer_wins_both_ways_and_a_lost_answer_ends_the_exchange_with_nothing_moved() -> None:
    cluster = pair()
    me, peer = cluster.nodes
    wall = me.wall_ms()
    mine = Record(b"a", b"mine", Version(wall, 0, me.node_id))
    theirs = Record(b"b", b"theirs", Version(wall, 0, peer.node_id))
    me.table.apply(mine)
    peer.table.apply(theirs)

    cluster.partition([[0], [1]])
    exchange(cluster)  # every call times out: ended, nothing moved
    assert me.table.get(b"b") is None and peer.table.get(b"a") is None

    cluster.heal()
    exchange(cluster)
    assert me.table.get(b"b") == theirs and peer.table.get(b"a") == mine
