"""The simulator's Stream call is the node's: the same page builder and checks, on fake time."""

from __future__ import annotations

from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.core.ring import partition_of
from a3redis.core.streaming import StreamPage, StreamRequest, next_request
from tests.faults.simcluster import LIMITS, SimCluster, SimConfig

CONFIG = SimConfig(nodes=2, replication_factor=2, sync_interval=1e6)


def pair() -> SimCluster:
    cluster = SimCluster(CONFIG, 11, 0)
    cluster.start()
    cluster.loop.run_until(5.0)
    return cluster


def ask(cluster: SimCluster, request: StreamRequest) -> StreamPage | None:
    me, peer = cluster.nodes
    answers: list[StreamPage | None] = []
    me.link(peer.node_id).stream(request, answers.append)
    cluster.loop.run_until(cluster.loop.now + 2 * CONFIG.peer_timeout)
    [answer] = answers
    return answer


def test_pages_through_a_sim_link_carry_the_peers_records_as_its_reads_see_them() -> None:
    cluster = pair()
    _, peer = cluster.nodes
    wall = peer.wall_ms()
    stored = [
        Record(b"key-%02d" % n, None if n % 3 == 0 else b"v", Version(wall, n, peer.node_id))
        for n in range(40)
    ]
    for record in stored:
        peer.table.apply(record)
    # Beyond the clock-skew bound for the whole test (each call moves time on).
    ahead = Record(b"ahead", b"v", Version(wall + 10 * LIMITS.max_clock_skew_ms, 0, "node-1"))
    peer.table.apply(ahead)
    partitions = CONFIG.partitions

    received: list[Record] = []
    request: StreamRequest | None = StreamRequest(tuple(range(partitions)), b"", 7, partitions)
    while request is not None:
        page = ask(cluster, request)
        assert page is not None and len(page.records) <= 7
        received.extend(page.records)
        request = next_request(request, page)

    assert received == sorted(stored, key=lambda r: (partition_of(r.key, partitions), r.key))


def test_a_refused_request_and_a_lost_call_settle_with_nothing() -> None:
    cluster = pair()
    # The node's default ring is not the simulator's: the peer refuses the request.
    assert ask(cluster, StreamRequest((0,))) is None
    cluster.partition([[0], [1]])
    assert ask(cluster, StreamRequest((0,), b"", 0, CONFIG.partitions)) is None
    cluster.heal()
    assert ask(cluster, StreamRequest((0,), b"", 0, CONFIG.partitions)) == StreamPage([], None)
