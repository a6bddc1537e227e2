"""The gossip shell: performs the membership core's probes over HTTP, on a timer.

Rules: every decision is the core's (`Membership`); this module only keeps
time, sends what `tick` returns, and feeds answers and failures back. One
httpx client (on trio, connection reuse, short timeouts, bound to the node's
own address) serves every probe. Seeds given as gRPC addresses (the seed's
`PEERS` form) are resolved to gossip addresses with the `Describe` call;
gossip addresses work too. A seed that is not up yet is retried with backoff
and logged once. The member table is saved in DATA_DIR whenever it changes
(`MemberFile`), so a restart begins with the ring it left with.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from collections.abc import Callable
from pathlib import Path

import httpx
import trio

from a3redis.channels import ChannelPool
from a3redis.config import Address, Config
from a3redis.core.membership import (
    GossipMessage,
    IncompatiblePeerError,
    Membership,
    MemberState,
    MessageError,
    Probe,
)
from a3redis.v1 import kv_pb2 as pb
from a3redis.v1.kv_grpc import KeyValueStub

log = logging.getLogger("a3redis.gossip")

INCARNATION_FILE = "incarnation"
# Requests to peers must be short: a slow peer is what failure detection is for.
PROBE_TIMEOUT = 1.0
LEAVE_TIMEOUT = 0.5


def start_incarnation(data_dir: Path, wall_ms: int) -> int:
    """A fresh incarnation for this start: above any used before, even with a lost file."""
    stored = 0
    with contextlib.suppress(FileNotFoundError, ValueError):
        stored = int((data_dir / INCARNATION_FILE).read_text().strip() or 0)
    return max(stored + 1, wall_ms // 1000)


def save_incarnation(data_dir: Path, incarnation: int) -> None:
    temporary = data_dir / (INCARNATION_FILE + ".tmp")
    temporary.write_text(f"{incarnation}\n")
    temporary.replace(data_dir / INCARNATION_FILE)


class MemberFile:
    """The member table saved in DATA_DIR (JSON, replaced atomically when it changes).

    Losing it is safe (the node then waits to hear from a peer, as on its first
    start), so it is not fsynced; a damaged file is ignored with a warning.
    """

    NAME = "members.json"
    FORMAT = 1

    def __init__(self, data_dir: Path, cluster: str) -> None:
        self.path = data_dir / self.NAME
        self.cluster = cluster
        self._saved: list[dict[str, object]] | None = None

    def load(self) -> list[MemberState]:
        try:
            raw = json.loads(self.path.read_text())
            if raw.get("format") != self.FORMAT:
                raise ValueError(f"unknown format {raw.get('format')!r}")
            if raw.get("cluster") != self.cluster:
                log.warning(
                    "ignoring %s: it belongs to cluster %r, not %r",
                    self.path,
                    raw.get("cluster"),
                    self.cluster,
                )
                return []
            states = [MemberState.from_json(entry) for entry in raw["members"]]
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            log.warning("ignoring damaged %s: %s", self.path, error)
            return []
        self._saved = [state.to_json() for state in states]
        return states

    def save(self, states: list[MemberState]) -> None:
        """Write the table if it differs from what the file holds."""
        entries = [state.to_json() for state in states]
        if entries == self._saved:
            return
        temporary = self.path.with_suffix(".tmp")
        body = {"format": self.FORMAT, "cluster": self.cluster, "members": entries}
        temporary.write_text(json.dumps(body, indent=1) + "\n")
        temporary.replace(self.path)
        self._saved = entries


def seed_addresses(config: Config) -> list[Address]:
    """PEERS as given, or with only TOTAL_NODES, nodes 1..N of this host at the standard ports."""
    if config.peers:
        return list(config.peers)
    if config.total_nodes:
        return [
            Address(config.advertise_host, 8000 + number)
            for number in range(1, config.total_nodes + 1)
            if number != config.node_num
        ]
    return []


class GossipLoop:
    def __init__(
        self,
        config: Config,
        membership: Membership,
        http: httpx.AsyncClient,
        channels: ChannelPool,
        rng: random.Random,
        on_change: Callable[[], None],
    ) -> None:
        self.config = config
        self.membership = membership
        self._http = http
        self._channels = channels
        self._rng = rng
        self._on_change = on_change
        self._unresolved = seed_addresses(config)
        self._warned: set[str] = set()
        self.stats = {"probes": 0, "probe_failures": 0, "exchanges_served": 0, "rejected": 0}

    # ----- the loop -----------------------------------------------------------------------

    async def run(
        self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._resolve_seeds)
            while not stop.is_set():
                probes = self.membership.tick(trio.current_time(), self._rng)
                self._on_change()
                for probe in probes:
                    nursery.start_soon(self._probe, probe)
                with trio.move_on_after(self.config.gossip_interval):
                    await stop.wait()
            nursery.cancel_scope.cancel()
        await self._announce_leave()

    async def _announce_leave(self) -> None:
        probes = self.membership.leave(trio.current_time())
        self._on_change()
        with trio.move_on_after(LEAVE_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for probe in probes:
                    nursery.start_soon(self._post, probe)
        log.info("announced leave to %d members", len(probes))

    # ----- probing ------------------------------------------------------------------------

    async def _probe(self, probe: Probe) -> None:
        self.stats["probes"] += 1
        try:
            reply = await self._post(probe)
        except IncompatiblePeerError as error:
            self._warn_once(probe.gossip_addr, f"refusing peer {probe.gossip_addr}: {error}")
            return
        now = trio.current_time()
        if reply is None:
            self.stats["probe_failures"] += 1
            if self.membership.on_probe_failed(probe, now):
                log.info("seed %s is not reachable yet; retrying with backoff", probe.gossip_addr)
            self._on_change()
            return
        try:
            self.membership.on_reply(probe, reply, now)
        except IncompatiblePeerError as error:
            self._warn_once(reply.sender, f"refusing peer {reply.sender}: {error}")
        self._on_change()

    async def _post(self, probe: Probe) -> GossipMessage | None:
        """POST the message; the reply, or None when the peer did not answer usefully."""
        try:
            response = await self._http.post(
                f"http://{probe.gossip_addr}/gossip", json=probe.message.to_json()
            )
        except httpx.HTTPError:
            return None
        if response.status_code == 409:
            raise IncompatiblePeerError(_error_text(response))
        if response.status_code != 200:
            log.debug("gossip to %s: HTTP %d", probe.gossip_addr, response.status_code)
            return None
        try:
            return GossipMessage.from_json(response.json())
        except (MessageError, ValueError) as error:
            log.warning("malformed gossip reply from %s: %s", probe.gossip_addr, error)
            return None

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.error("%s", text)

    # ----- serving ------------------------------------------------------------------------

    def serve_exchange(self, body: str | bytes) -> tuple[int, dict[str, object]]:
        """Handle a POST /gossip body; returns (HTTP status, JSON body)."""
        try:
            message = GossipMessage.from_json(json.loads(body))
        except (MessageError, ValueError, RecursionError) as error:
            self.stats["rejected"] += 1
            return 400, {"error": f"malformed gossip message: {error}"}
        try:
            reply = self.membership.on_exchange(message, trio.current_time())
        except IncompatiblePeerError as error:
            self.stats["rejected"] += 1
            self._warn_once(message.sender, f"refusing peer {message.sender}: {error}")
            return 409, {"error": f"incompatible peer: {error}"}
        self.stats["exchanges_served"] += 1
        self._on_change()
        return 200, reply.to_json()

    # ----- seeds --------------------------------------------------------------------------

    async def _resolve_seeds(self) -> None:
        """Turn PEERS entries into gossip addresses, retrying with backoff until all resolve."""
        backoff = 0.5
        while self._unresolved:
            still: list[Address] = []
            for address in self._unresolved:
                gossip = await self._resolve(address)
                if gossip is None:
                    still.append(address)
                    if str(address) not in self._warned:
                        self._warned.add(str(address))
                        log.info("peer %s is not reachable yet; retrying with backoff", address)
                else:
                    self.membership.add_seeds([gossip])
            self._unresolved = still
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 16.0)

    async def _resolve(self, address: Address) -> str | None:
        """A peer's gossip address from its gRPC address (Describe) or itself if it is one."""
        if address.port == self.config.gossip_port and address.host == self.config.advertise_host:
            return None
        try:
            response = await self._http.get(f"http://{address}/health")
            if response.status_code in (200, 503) and "node_id" in response.json():
                return str(address)
        except (httpx.HTTPError, ValueError):
            pass
        try:
            with trio.move_on_after(PROBE_TIMEOUT):
                stub = await self._channels.stub(address, KeyValueStub)
                info = await stub.Describe(pb.DescribeRequest())
                return str(info.gossip_address)
        except Exception as error:  # any failure means "not resolvable yet"
            log.debug("describe %s failed: %r", address, error)
            self._channels.discard(address)
        return None


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text


def make_http_client(config: Config) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(
        local_address=config.bind_host if config.bind_host not in ("0.0.0.0", "::") else None,
        retries=0,
    )
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(PROBE_TIMEOUT),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        trust_env=False,
    )
