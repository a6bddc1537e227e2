"""No version a client or peer sends can poison a node's clock (issue #12), on real processes.

The attacks of the issue, replayed against real nodes: a Replica.Apply whose
version is 2^64-1 ms / 2^32-1 logical, a client `after` minutes ahead at the
top of the counter, a DATA_DIR that an older release let such a version into,
and a replica that answers reads with a version from far ahead. Each time
the hostile input is refused (INVALID_ARGUMENT for a client, a REJECTED and
counted record for a peer) and every node keeps taking writes.
"""

from __future__ import annotations

import grpc
import trio

from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.storage.store import Store
from a3redis.v1 import kv_pb2 as pb
from a3redis.v1 import replica_pb2 as rpb
from tests.conftest import NodeFactory
from tests.hostile.raw import RawClient, now_ms, pb_record, refused
from tests.support.clusters import peered_nodes, start_peered
from tests.support.node_http import rejected_counts, statuses
from tests.support.waiting import wait_for

WALL_MAX = 2**64 - 1
LOGICAL_MAX = 2**32 - 1
QUORUM = pb.CONSISTENCY_QUORUM
ALL = pb.CONSISTENCY_ALL
LOCAL = pb.CONSISTENCY_LOCAL
EVERYONE = {"node-1": "alive", "node-2": "alive", "node-3": "alive"}


def write_directly(data_dir: object, records: list[Record]) -> None:
    """Put records into a DATA_DIR with the store API, as an older release could have."""

    async def write() -> None:
        async with Store.open(data_dir) as store:  # type: ignore[arg-type]
            assert all(await store.apply_many(records))

    trio.run(write)


def test_a_poisoned_apply_is_refused_and_writes_keep_working_through_every_node(
    node_factory: NodeFactory,
) -> None:
    nodes = start_peered(peered_nodes(node_factory, REPLICATION_FACTOR="3"), alive_within=15)
    with RawClient(nodes[0]) as raw:
        outcomes = raw.apply(
            [
                pb_record(b"victim", b"poison", WALL_MAX, LOGICAL_MAX, "node-9"),
                pb_record(b"bystander", b"fine", now_ms(), 0, "node-9"),
            ]
        )
        # Refused alone: the valid record of the same call is stored.
        assert outcomes == [rpb.APPLY_REJECTED, rpb.APPLY_STORED]
        assert not raw.get(b"victim", LOCAL).found
        assert raw.get(b"bystander", LOCAL).value == b"fine"
    assert rejected_counts(nodes[0]) == {("Apply", "clock_skew"): 1.0}
    assert "refused a record from node-9 (Apply): record.version.wall_ms is " in nodes[0].output()
    assert "MAX_CLOCK_SKEW=60s" in nodes[0].output()

    def writes_work_through_every_node(round_name: bytes) -> None:
        for index, node in enumerate(nodes):
            value = b"%s-%d" % (round_name, index)
            with RawClient(node) as raw:
                version = raw.put(b"victim", value, QUORUM).version
                assert version.wall_ms < now_ms() + 5_000, "the clock was dragged ahead"
                raw.put(b"other-%d" % index, value, QUORUM)
                raw.delete(b"other-%d" % index, QUORUM)
                # Read repair runs on every QUORUM read: nothing poisoned to spread.
                for reader in nodes:
                    with RawClient(reader) as other:
                        assert other.get(b"victim", QUORUM).value == value

    writes_work_through_every_node(b"first")
    # The issue saw the failure survive restarts: it must not come back either.
    assert nodes[0].stop() == 0
    nodes[0].start()
    wait_for(lambda: all(statuses(n) == EVERYONE for n in nodes), 15, "all alive again")
    writes_work_through_every_node(b"after-restart")


def test_an_after_far_ahead_is_invalid_argument_and_one_within_the_bound_is_passed(
    node_factory: NodeFactory,
) -> None:
    node = node_factory("single").start()
    with RawClient(node) as raw:
        # The issue's `after`: now + 4 min at the top of the counter.
        ahead = pb.Version(wall_ms=now_ms() + 4 * 60_000, logical=LOGICAL_MAX, node_id="node-9")
        for call, args in (
            (raw.put, (b"k", b"v")),
            (raw.delete, (b"k",)),
        ):
            code, message = refused(call, *args, after=ahead)
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            assert message.startswith("after.wall_ms is "), message
            assert message.endswith(
                "ms ahead of this node's clock; the limit is MAX_CLOCK_SKEW=60s"
            )
        batch = pb.BatchPutRequest(pairs=[pb.KeyValuePair(key=b"a", value=b"1")], after=ahead)
        code, message = refused(
            raw.call, "/a3redis.v1.KeyValue/BatchPut", batch, pb.BatchPutResponse
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "MAX_CLOCK_SKEW" in message
        assert not raw.get(b"k").found and not raw.get(b"a").found

        # Within the bound and at the top of the counter: the clock moves past it
        # (on to the next millisecond) and keeps issuing later versions.
        near = pb.Version(wall_ms=now_ms() + 30_000, logical=LOGICAL_MAX, node_id="node-9")
        first = raw.put(b"k", b"v0", after=near).version
        assert (first.wall_ms, first.logical) > (near.wall_ms, near.logical)
        previous = first
        for i in range(1, 20):
            version = raw.put(b"k", b"v%d" % i).version
            assert (version.wall_ms, version.logical) > (previous.wall_ms, previous.logical)
            previous = version
        raw.delete(b"k", after=near)
        assert not raw.get(b"k").found
    assert node.process is not None and node.process.poll() is None


def test_a_node_on_a_data_dir_holding_a_poisoned_version_starts_and_takes_writes(
    node_factory: NodeFactory,
) -> None:
    node = node_factory("legacy")
    earlier = now_ms() - 1_000
    write_directly(
        node.data_dir,
        [
            Record(b"victim", b"legacy", Version(WALL_MAX, LOGICAL_MAX, "node-9")),
            Record(b"kept", b"still here", Version(earlier, 3, "node-1")),
        ],
    )
    node.start()
    assert (
        f"stored version {WALL_MAX}.{LOGICAL_MAX}@node-9 is more than MAX_CLOCK_SKEW=60s ahead"
        in node.output()
    )
    with RawClient(node) as raw:
        # The poisoned record is no version: not readable, and any write replaces it.
        assert not raw.get(b"victim").found
        assert raw.get(b"kept").value == b"still here"
        version = raw.put(b"fresh", b"1").version
        assert earlier < version.wall_ms < now_ms() + 5_000
        raw.put(b"victim", b"rewritten")
        assert raw.get(b"victim").value == b"rewritten"
        raw.delete(b"kept")
    assert node.stop() == 0
    node.start()
    assert "is more than MAX_CLOCK_SKEW" not in node.output().split("stopped cleanly")[-1]
    with RawClient(node) as raw:
        assert raw.get(b"victim").value == b"rewritten"
        assert not raw.get(b"kept").found
        raw.put(b"victim", b"again")
        assert raw.get(b"victim").value == b"again"


def test_reads_and_repair_do_not_spread_versions_from_far_ahead(
    node_factory: NodeFactory,
) -> None:
    """node-1's clock runs 100 s fast, and its DATA_DIR holds a version 2^64-1 (an older
    release's doing) and one 120 s ahead of true time (20 s ahead of node-1's own clock,
    so node-1 answers with it). The others must refuse both, whatever path they come by."""
    nodes = peered_nodes(node_factory, REPLICATION_FACTOR="3", SYNC_INTERVAL="3600")
    nodes[0].extra_env["A3REDIS_CLOCK_OFFSET_MS"] = "100000"
    write_directly(
        nodes[0].data_dir,
        [
            Record(b"legacy", b"x", Version(WALL_MAX, LOGICAL_MAX, "node-9")),
            Record(b"fast", b"y", Version(now_ms() + 120_000, LOGICAL_MAX, "node-1")),
        ],
    )
    start_peered(nodes, alive_within=15)
    with RawClient(nodes[1]) as raw:
        for key in (b"legacy", b"fast"):
            assert not raw.get(key, ALL).found
        assert [r.present for r in raw.read([b"legacy", b"fast"])] == [False, False]
    with RawClient(nodes[0]) as raw:
        # node-1 itself serves the record 20 s ahead of its clock, hides the other.
        assert [r.present for r in raw.read([b"legacy", b"fast"])] == [False, True]
    assert rejected_counts(nodes[1]).get(("Read", "clock_skew"), 0) >= 1

    # Anti-entropy both ways: node-2 asks node-1, then node-1 asks node-2.
    for asking in (nodes[1], nodes[0]):
        with RawClient(asking) as raw:
            raw.call("/a3redis.v1.KeyValue/Repair", pb.RepairRequest(wait=True), pb.RepairResponse)
    assert rejected_counts(nodes[1]).get(("Entries", "clock_skew"), 0) >= 1
    assert rejected_counts(nodes[1]).get(("Apply", "clock_skew"), 0) >= 1
    for node in nodes[1:]:
        with RawClient(node) as raw:
            for key in (b"legacy", b"fast"):
                assert not raw.get(key, LOCAL).found, (node.endpoint, key)

    # Writes through the nodes with true clocks still reach node-1 and replace the
    # record no clock could have written.
    with RawClient(nodes[1]) as raw:
        raw.put(b"legacy", b"rewritten", ALL)
        raw.put(b"plain", b"z", QUORUM)
    with RawClient(nodes[0]) as raw:
        assert raw.get(b"legacy", LOCAL).value == b"rewritten"
