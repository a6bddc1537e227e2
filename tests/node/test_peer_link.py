"""A peer link batches what its callers queue, against a real node's Replica service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import pytest
import trio

from a3redis.api.replica_calls import ReplicaCalls
from a3redis.cluster.peers import PeerLink, PeerUnavailableError, ReplicaTransport
from a3redis.core.hlc import Version
from a3redis.core.record import ApplyOutcome, Record
from a3redis.net.address import Address
from a3redis.net.channels import ChannelPool
from a3redis.net.grpc_socket import ConnectionLostError
from tests.node.conftest import RunningNode
from tests.support.busy import always_runnable


async def test_a_call_waits_for_requests_still_running_once_calls_are_shared(
    running_node: RunningNode,
) -> None:
    records = [
        Record(b"link-%d" % i, b"v%d" % i, Version(1_000 + i, 0, "node-9")) for i in range(4)
    ]
    async with ChannelPool.open() as channels, trio.open_nursery() as nursery:
        link = PeerLink(
            "node-1",
            ReplicaCalls(channels, Address("127.0.0.1", running_node.ports.grpc), "node-9"),
            5,
        )
        await nursery.start(link.run)
        await link.apply(records)  # connected; this call carried one submission
        answers: dict[int, list[Record | None]] = {}

        async def read(index: int, busy_first: bool) -> None:
            if busy_first:  # runnable all along, like a request still being decoded
                for _ in range(50):
                    await trio.lowlevel.checkpoint()
            answers[index] = await link.read([records[index].key])

        async def round_of_reads(indexes: range, busy_last: bool) -> int:
            calls = link.calls
            async with trio.open_nursery() as readers:
                for index in indexes:
                    readers.start_soon(read, index, busy_last and index == indexes[-1])
            return link.calls - calls

        # The last call carried one submission: a call starts at once, so the
        # busy reader comes too late for it and needs a call of its own.
        assert await round_of_reads(range(0, 2), busy_last=True) == 2
        # Reads that queue together share a call, and after a shared call the
        # next one waits until nothing else can run: the busy reader joins it.
        assert await round_of_reads(range(0, 3), busy_last=False) == 1
        assert await round_of_reads(range(1, 4), busy_last=True) == 1
        assert {index: answer[0] for index, answer in answers.items()} == dict(enumerate(records))

        # A node that always has work does not hold a call back for good: the
        # gathering ends after GATHER_DELAY.
        async with always_runnable():
            assert await link.read([records[0].key]) == [records[0]]
        nursery.cancel_scope.cancel()


class _LosesConnections:
    """A peer whose connection is lost under the first `losses` calls (as when it restarted)."""

    address = Address("127.0.0.1", 1)

    def __init__(self, losses: int) -> None:
        self.losses = losses
        self.calls = 0
        self.discarded = 0

    def discard(self) -> None:
        self.discarded += 1

    async def apply(self, records: Sequence[Record]) -> list[ApplyOutcome]:
        await self._maybe_lose()
        return [ApplyOutcome.STORED] * len(records)

    async def read(self, keys: Sequence[bytes]) -> list[Record | None]:
        await self._maybe_lose()
        return [None] * len(keys)

    async def _maybe_lose(self) -> None:
        self.calls += 1
        await trio.lowlevel.checkpoint()
        if self.calls <= self.losses:
            raise ConnectionLostError("the connection closed", unsent=False)


async def test_a_call_whose_connection_was_lost_is_sent_once_more_on_a_fresh_one() -> None:
    record = Record(b"k", b"v", Version(1_000, 0, "node-9"))
    peer = _LosesConnections(losses=1)
    async with trio.open_nursery() as nursery:
        link = PeerLink("node-2", cast(ReplicaTransport, peer), 5)
        await nursery.start(link.run)
        assert await link.apply([record]) == [ApplyOutcome.STORED]
        assert (link.reconnects, link.failures, peer.calls) == (1, 0, 2)
        # Lost again on the second try: the peer counts as failed, no third try.
        peer.losses, peer.calls = 2, 0
        with pytest.raises(PeerUnavailableError):
            await link.read([record.key])
        assert (link.reconnects, link.failures, peer.calls) == (2, 1, 2)
        nursery.cancel_scope.cancel()
