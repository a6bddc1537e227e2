"""A keyspace over a real store and a fake topology, for driving the keyspace's planning
without a node: node `n1`, the wall clock, default limits, a 5 s request timeout."""

from __future__ import annotations

import time
from typing import cast

import trio

from a3redis.cluster.keyspace import Keyspace
from a3redis.cluster.topology import Topology
from a3redis.core.hlc import HybridLogicalClock
from a3redis.core.validation import Limits
from a3redis.storage.store import Store
from tests.support.topology import FakeTopology


def keyspace_over(store: Store, topology: FakeTopology, nursery: trio.Nursery) -> Keyspace:
    return Keyspace(
        store,
        HybridLogicalClock("n1"),
        lambda: int(time.time() * 1000),
        Limits(),
        cast(Topology, topology),
        nursery,
        request_timeout=5.0,
    )
