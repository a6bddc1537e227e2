"""A simulated cluster of membership cores over an in-memory network with fake time.

Rules: no sockets, no sleeps, no threads: `round()` advances the clock by one
gossip interval, ticks every running node in a seeded random order and
delivers each probe at once (or fails it, if either end is down or the link
is cut). Deterministic for a given seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from a3redis.core.membership import (
    GossipMessage,
    IncompatiblePeerError,
    Membership,
    MembershipSettings,
    MemberState,
    Status,
)


def gossip_addr(index: int) -> str:
    return f"10.0.0.{index}:8000"  # never dialled: the network is a dict


@dataclass
class SimNode:
    index: int
    core: Membership
    running: bool = True


@dataclass
class SimNetwork:
    seed: int
    failure_timeout: float = 10.0
    replication_factor: int = 3
    now: float = 0.0
    nodes: dict[str, SimNode] = field(default_factory=dict)
    cut: set[frozenset[str]] = field(default_factory=set)
    rng: random.Random = field(init=False)
    messages: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def add(
        self, index: int, seeds: list[int], incarnation: int = 1, rf: int | None = None
    ) -> SimNode:
        node_id = f"node-{index}"
        me = MemberState(node_id, f"grpc-{index}", gossip_addr(index), Status.ALIVE, incarnation)
        core = Membership(
            me,
            "sim",
            rf or self.replication_factor,
            MembershipSettings(failure_timeout=self.failure_timeout),
        )
        core.add_seeds(gossip_addr(seed) for seed in seeds)
        node = SimNode(index, core)
        self.nodes[node_id] = node
        return node

    def restart(self, node_id: str, seeds: list[int]) -> SimNode:
        old = self.nodes[node_id]
        return self.add(old.index, seeds, incarnation=old.core.me.incarnation + 1)

    def by_addr(self, addr: str) -> SimNode | None:
        return next((n for n in self.nodes.values() if n.core.me.gossip_addr == addr), None)

    def linked(self, a: str, b: str) -> bool:
        return frozenset((a, b)) not in self.cut

    def partition(self, *groups: set[str]) -> None:
        self.cut = {
            frozenset((a, b))
            for i, left in enumerate(groups)
            for right in groups[i + 1 :]
            for a in left
            for b in right
        }

    def heal(self) -> None:
        self.cut.clear()

    def round(self) -> None:
        self.now += 1.0
        order = sorted(self.nodes)
        self.rng.shuffle(order)
        for node_id in order:
            node = self.nodes[node_id]
            if not node.running:
                continue
            for probe in node.core.tick(self.now, self.rng):
                self.deliver(node, probe.gossip_addr, probe)

    def deliver(self, source: SimNode, addr: str, probe: object) -> None:
        from a3redis.core.membership import Probe

        assert isinstance(probe, Probe)
        self.messages += 1
        target = self.by_addr(addr)
        ok = (
            target is not None
            and target.running
            and self.linked(source.core.node_id, target.core.node_id)
        )
        if not ok or target is None:
            source.core.on_probe_failed(probe, self.now)
            return
        try:
            reply: GossipMessage = target.core.on_exchange(probe.message, self.now)
        except IncompatiblePeerError:
            return
        try:
            source.core.on_reply(probe, reply, self.now)
        except IncompatiblePeerError:
            return

    def leave(self, node_id: str) -> None:
        node = self.nodes[node_id]
        for probe in node.core.leave(self.now):
            self.deliver(node, probe.gossip_addr, probe)
        node.running = False

    def view(self, observer: str) -> dict[str, Status]:
        return {m.node_id: m.status for m in self.nodes[observer].core.members()}

    def running_ids(self) -> list[str]:
        return sorted(n for n, node in self.nodes.items() if node.running)

    def all_see(self, expected: dict[str, Status], observers: list[str] | None = None) -> bool:
        return all(self.view(o) == expected for o in (observers or self.running_ids()))
