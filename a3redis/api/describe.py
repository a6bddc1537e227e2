"""Ask a node who it is over its gRPC port (KeyValue.Describe): how gossip resolves a
PEERS entry that names a gRPC address.

Rules: the only gossip-side use of the generated protobuf code; a failure of any
kind means "not resolvable yet" (None), and the channel is dropped so the next
try connects afresh.
"""

from __future__ import annotations

import logging

import trio

from a3redis.net.address import Address
from a3redis.net.channels import ChannelPool
from a3redis.v1 import kv_pb2 as pb
from a3redis.v1.kv_grpc import KeyValueStub

log = logging.getLogger(__name__)


class Describer:
    """Resolves a node's gRPC address to its gossip address through `channels`."""

    def __init__(self, channels: ChannelPool, timeout: float) -> None:
        self._channels = channels
        self._timeout = timeout

    async def gossip_address(self, address: Address) -> str | None:
        try:
            with trio.move_on_after(self._timeout):
                stub = await self._channels.stub(address, KeyValueStub)
                info = await stub.Describe(pb.DescribeRequest())
                return str(info.gossip_address)
        except Exception as error:  # any failure means "not resolvable yet"
            log.debug("describe %s failed: %r", address, error)
            self._channels.discard(address)
        return None
