"""The node's view of the cluster for the data path: rings, replica states, peer links.

Rules: placement comes from the `Ring`s of the configurations of the moment
(a3redis.core.transition: the ring reads use and, while a member joins or
leaves, the other one writes also need), recomputed only when a member set
changes (the member table's `version` says when to look). A change that costs little (a few
members joining or leaving) is applied at once; a big one (hundreds of
members learned at once, a first build of a large table) is computed in a
worker thread while requests keep the previous ring, so no change blocks
the event loop for long (RING_INLINE_COST bounds it); the other
configuration differs by one member and is computed inline. A replica is
"down" when membership says dead or left. A node is `joining` (it places
nothing) until core.transition.Readiness says it knows its ring. Links to peers are
created on first use, replaced when a peer's address changes, closed (with
their channel) when the peer has left or was forgotten (a later use makes a
new one), and supervised by the nursery given at construction (the node's),
so none outlives the node and made-up members leave no link behind.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from a3redis.cluster.peers import PeerLink, ReplicaTransport
from a3redis.core.membership import Membership, Status
from a3redis.core.ring import Ring
from a3redis.core.transition import Configurations, Readiness, configurations
from a3redis.net.address import Address

# Member-partition scores a ring change may compute on the event loop (Ring.change_cost):
# a few members joining or leaving stay under it; hundreds learned at once go to a
# worker thread. How long that many scores take: benchmarks/README.md.
RING_INLINE_COST = 200_000


class Topology:
    def __init__(
        self,
        membership: Membership,
        replication_factor: int,
        connect: Callable[[Address], ReplicaTransport],
        nursery: trio.Nursery,
        peer_timeout: float,
        *,
        readiness: Readiness | None = None,
    ) -> None:
        self.membership = membership
        # None: a node alone (tests, a cluster of one) is ready at once.
        self.readiness = readiness
        self.replication_factor = replication_factor
        # How to reach a peer's Replica service (a3redis.api.replica_calls, given by the node).
        self._connect = connect
        self._nursery = nursery
        self._peer_timeout = peer_timeout
        self._ring: Ring | None = None
        self._other: Ring | None = None
        self._ring_version = -1
        self._configurations = Configurations(frozenset(), frozenset(), False)
        self._ring_target: frozenset[str] = frozenset()
        self._rebuilding = False
        # node id -> (the grpc_addr its link was made for, the link)
        self._links: dict[str, tuple[str, PeerLink]] = {}

    @property
    def node_id(self) -> str:
        return self.membership.node_id

    @property
    def joining(self) -> bool:
        """Whether this node coordinates nothing now (core.transition.Readiness)."""
        readiness = self.readiness
        if readiness is None:
            return False
        return not readiness.check(self.membership, trio.current_time())

    @property
    def ring(self) -> Ring:
        """The ring reads use."""
        # Every request asks for the ring: look at the members only when the
        # table changed, and change the Ring only when its member set did.
        if self._ring is None or self.membership.version != self._ring_version:
            self._refresh()
        assert self._ring is not None
        return self._ring

    @property
    def other_ring(self) -> Ring | None:
        """While a member joins or leaves: the other configuration (writes need both)."""
        if self._ring is None or self.membership.version != self._ring_version:
            self._refresh()
        return self._other

    @property
    def configurations(self) -> Configurations:
        """The member sets of the moment (core.transition)."""
        if self._ring is None or self.membership.version != self._ring_version:
            self._refresh()
        return self._configurations

    @property
    def changing(self) -> bool:
        """Whether a member is joining or leaving the ring."""
        return self.other_ring is not None

    def transition_rings(self) -> tuple[Ring, Ring]:
        """The rings before and after the transition in progress (the same ring if none)."""
        ring, other = self.ring, self.other_ring
        if other is None:
            return ring, ring
        return (other, ring) if self._configurations.switched else (ring, other)

    def _refresh(self) -> None:
        self._ring_version = self.membership.version
        configs = self._configurations = configurations(self.membership.states())
        self._ring_target = configs.read
        self._close_links_of_strangers()
        if self._ring is None:
            self._ring = Ring(self._ring_target, self.replication_factor)
        elif self._rebuilding or frozenset(self._ring.members) == self._ring_target:
            pass  # the rebuild in progress picks the new target up when it is done
        elif self._ring.change_cost(self._ring_target) <= RING_INLINE_COST:
            self._ring = self._ring.with_members(self._ring_target)
        else:
            self._rebuilding = True
            self._nursery.start_soon(self._rebuild)
        other = (configs.old if configs.switched else configs.new) if configs.changing else None
        if other is None:
            self._other = None
        elif self._other is None or frozenset(self._other.members) != other:
            self._other = self._ring.with_members(other)

    def _ring_members(self) -> frozenset[str]:
        return configurations(self.membership.states()).read

    async def prepare_ring(self) -> None:
        """Build the first ring in a worker thread (a restored table may be large)."""
        target = self._ring_members()
        ring = await trio.to_thread.run_sync(Ring, target, self.replication_factor)
        if self._ring is None:
            self._ring = ring

    async def _rebuild(self) -> None:
        """Catch the ring up with its target off the event loop, then swap it in."""
        try:
            while self._ring is not None and frozenset(self._ring.members) != self._ring_target:
                self._ring = await trio.to_thread.run_sync(
                    self._ring.with_members, self._ring_target, abandon_on_cancel=True
                )
        finally:
            self._rebuilding = False

    def replicas(self, key: bytes) -> tuple[str, ...]:
        return self.ring.preference_list(key)

    def is_down(self, node_id: str) -> bool:
        member = self.membership.get(node_id)
        return member is None or member.status in (Status.DEAD, Status.LEFT)

    def is_lagging(self, node_id: str) -> bool:
        held = self._links.get(node_id)
        return held is not None and held[1].lagging(trio.current_time())

    def link(self, node_id: str) -> PeerLink | None:
        """The link to a peer, or None if we do not know where it listens."""
        member = self.membership.get(node_id)
        if member is None:
            return None
        held = self._links.get(node_id)
        # Every replica call asks: parse the address only when it changed.
        if held is not None and held[0] == member.grpc_addr:
            return held[1]
        try:
            address = Address.parse(member.grpc_addr)
        except ValueError:
            return None
        link = held[1] if held is not None else None
        if link is None or link.address != address:
            if link is not None:
                link.close()
            link = PeerLink(node_id, self._connect(address), self._peer_timeout)
            self._nursery.start_soon(link.run)
        self._links[node_id] = (member.grpc_addr, link)
        return link

    def _close_links_of_strangers(self) -> None:
        """Close the links of members that left or are no longer in the table (forgotten)."""
        keep = self._configurations.old | self._configurations.new
        for node_id in [n for n in self._links if n not in keep]:
            _, link = self._links.pop(node_id)
            link.close(drop_connection=True)

    def links(self) -> list[PeerLink]:
        return [link for _, link in self._links.values()]
