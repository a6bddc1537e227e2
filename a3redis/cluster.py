"""The node's view of the cluster for the data path: ring, replica states, peer links.

Rules: placement comes from the `Ring` of the current ring members (members
that have not left), rebuilt only when that set changes; a replica is "down"
when membership says dead or left. A node given peers is `joining` until it
knows one (from a peer's table or the one it saved): until then its ring
would be itself alone, and nothing may be placed on it. Links to peers are
created on first use, replaced when a peer's address changes, closed (with
their channel) when the peer has left or is no longer in the member table
(a later use makes a new one), and
supervised by the nursery given at construction (the node's), so none
outlives the node and their number never exceeds the member table's.
"""

from __future__ import annotations

import trio

from a3redis.channels import ChannelPool
from a3redis.config import Address
from a3redis.core.membership import Membership, Status
from a3redis.core.ring import Ring
from a3redis.peers import PeerLink


class Cluster:
    def __init__(
        self,
        membership: Membership,
        replication_factor: int,
        channels: ChannelPool,
        nursery: trio.Nursery,
        peer_timeout: float,
        *,
        has_peers: bool = False,
    ) -> None:
        self.membership = membership
        self._has_peers = has_peers
        self.replication_factor = replication_factor
        self._channels = channels
        self._nursery = nursery
        self._peer_timeout = peer_timeout
        self._ring: Ring | None = None
        self._ring_key: tuple[str, ...] = ()
        # node id -> (the grpc_addr its link was made for, the link)
        self._links: dict[str, tuple[str, PeerLink]] = {}

    @property
    def node_id(self) -> str:
        return self.membership.node_id

    @property
    def joining(self) -> bool:
        return self._has_peers and not self.membership.joined

    @property
    def ring(self) -> Ring:
        # Every request asks for the ring: compare the ring members in the
        # membership's own order (sorting them each time showed in profiles)
        # and build a Ring only when that set changed.
        members = tuple(m.node_id for m in self.membership.states() if m.status is not Status.LEFT)
        if self._ring is None or members != self._ring_key:
            self._ring = Ring(members, self.replication_factor)
            self._ring_key = members
            self._close_links_of_forgotten_members()
        return self._ring

    def _close_links_of_forgotten_members(self) -> None:
        for node_id in [n for n in self._links if n not in self._ring_key]:
            _, link = self._links.pop(node_id)
            link.close()
            self._channels.discard(link.address)

    def replicas(self, key: bytes) -> tuple[str, ...]:
        return self.ring.preference_list(key)

    def is_down(self, node_id: str) -> bool:
        member = self.membership.get(node_id)
        return member is None or member.status in (Status.DEAD, Status.LEFT)

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
            link = PeerLink(node_id, self.node_id, address, self._channels, self._peer_timeout)
            self._nursery.start_soon(link.run)
        self._links[node_id] = (member.grpc_addr, link)
        return link

    def links(self) -> list[PeerLink]:
        return [link for _, link in self._links.values()]
