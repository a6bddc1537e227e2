"""A peer link's calls stay within the message limits, however large the records."""

from __future__ import annotations

from pathlib import Path

import trio

from a3redis.api.replica_calls import ReplicaCalls
from a3redis.cluster.peers import PeerLink
from a3redis.config import Config
from a3redis.core.batcher import MAX_CALL_BYTES, MAX_READ_KEYS
from a3redis.core.hlc import Version
from a3redis.core.record import ApplyOutcome, Record
from a3redis.core.validation import MAX_PEER_RESPONSE_BYTES
from a3redis.net.address import Address
from a3redis.net.channels import ChannelPool
from a3redis.node import run_node

KIB = 1024


async def test_one_submission_larger_than_a_message_is_split_into_calls_that_fit(
    tmp_path: Path,
) -> None:
    # Values just under the size at which MAX_READ_KEYS of them would exceed a
    # peer's answer; in all, twice what one message may carry.
    value = b"v" * (MAX_PEER_RESPONSE_BYTES // MAX_READ_KEYS - KIB)
    count = 2 * MAX_CALL_BYTES // len(value) + 1
    records = [Record(b"big-%d" % i, value, Version(1_000 + i, 0, "node-9")) for i in range(count)]
    # The default key and value limits, unlike the `running_node` fixture's.
    env = {
        "GRPC_PORT": "0",
        "GOSSIP_PORT": "0",
        "RESP_PORT": "0",
        "DATA_DIR": str(tmp_path),
        "FSYNC": "no",
    }
    async with ChannelPool.open() as channels, trio.open_nursery() as nursery:
        ports = await nursery.start(run_node, Config.from_env(env), trio.Event())
        link = PeerLink(
            "node-1", ReplicaCalls(channels, Address("127.0.0.1", ports.grpc), "node-9"), 30
        )
        await nursery.start(link.run)
        assert await link.apply(records) == [ApplyOutcome.STORED] * count
        assert link.calls == 3
        assert await link.read([record.key for record in records]) == records
        assert link.calls == 3 + -(-count // MAX_READ_KEYS)
        assert link.failures == 0
        nursery.cancel_scope.cancel()
