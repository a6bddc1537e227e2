"""A ring of members by name, some known down, for driving the coordinator and the keyspace
without gossip: what they read of the node's topology, and no peer links."""

from __future__ import annotations

from a3redis.core.ring import Ring


class FakeTopology:
    def __init__(self, members: list[str], factor: int = 3, down: tuple[str, ...] = ()) -> None:
        self.ring = Ring(members, factor, 16)
        self.replication_factor = factor
        self.down = set(down)
        self.joining = False
        self.other_ring: Ring | None = None
        self.lagging: set[str] = set()

    def is_down(self, member: str) -> bool:
        return member in self.down

    def is_lagging(self, member: str) -> bool:
        return member in self.lagging

    def link(self, member: str) -> None:
        """No links: a write a peer must take fails there (as if it never answered)."""
        return None
