"""The gossip shell: performs the membership core's probes over HTTP, on a timer.

Rules: every decision is the core's (`Membership`, and the throttles of
a3redis.core.throttle); this module only keeps time, sends what `tick`
returns, and feeds answers and failures back. One httpx client (on trio,
connection reuse, short timeouts, bound to the node's own address) serves
every probe. Seeds given as gRPC addresses (the seed's `PEERS` form) are
resolved to gossip addresses with the `Describe` call; gossip addresses work
too. A seed that is not up yet is retried with backoff and logged once. The
member table is saved in DATA_DIR whenever it changes (`MemberFile`), so a
restart begins with the ring it left with.

Nothing a peer sends can stop this loop or the node: a request or an answer
that is refused (malformed, incompatible, over a limit, over the sender's
rate) is counted in `rejected` by endpoint and reason and logged at most
once per source per LOG_INTERVAL; a probe's failure is the failure
detector's business. Leaving announces itself to every live member and
ends whatever they answer. Exceptions of any other kind are our own bugs
and still stop the node.

With a cluster secret (`guard`, a3redis.cluster.peer_auth), every message
and every answer is signed over its exact JSON bytes (channels "gossip" and
"gossip-reply"); one that is not is refused (401 or 403, or a probe that
failed) before it is parsed, counted in the guard, and changes nothing.

With TLS (TLS_CERT_FILE) every peer is reached over https: members' gossip
addresses carry no scheme, so a cluster's nodes have TLS all on or all off.
The client verifies each peer's certificate and name and presents the
node's own certificate (`make_http_client`, a3redis.net.tls).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import trio

from a3redis.cluster.peer_auth import Headers, PeerGuard
from a3redis.config import Config
from a3redis.core.membership import (
    MAX_INCARNATION,
    MAX_MEMBERS,
    MAX_MESSAGE_BYTES,
    GossipMessage,
    IncompatiblePeerError,
    Membership,
    MemberState,
    MessageError,
    Probe,
    RefusedInput,
    Status,
    decode_message,
)
from a3redis.core.peer_auth import Refusal
from a3redis.core.throttle import LogThrottle, Tally, TokenBuckets
from a3redis.net.address import Address

log = logging.getLogger("a3redis.cluster.gossip")

INCARNATION_FILE = "incarnation"
# Requests to peers must be short: a slow peer is what failure detection is for.
PROBE_TIMEOUT = 1.0
LEAVE_TIMEOUT = 0.5
# A refused request is logged at most once per source (remote host) per this many seconds.
LOG_INTERVAL = 60.0
# Gossip requests per second each remote host may send (bursts of twice as many):
# a peer sends one or two per GOSSIP_INTERVAL, and a host may run many nodes.
MIN_GOSSIP_RATE_PER_HOST = 50.0
RATE_LIMITED_HOSTS = 1024
# Members named in the one log line a round that says which were forgotten.
FORGOTTEN_NAMED = 5


def start_incarnation(data_dir: Path, wall_ms: int) -> int:
    """A fresh incarnation for this start: above any used before, even with a lost file,
    and never above MAX_INCARNATION (a file holding more, or no number, is ignored)."""
    stored = 0
    path = data_dir / INCARNATION_FILE
    with contextlib.suppress(FileNotFoundError):
        text = path.read_bytes()[:64].strip()
        if text.isdigit() and len(text) <= 19 and int(text) <= MAX_INCARNATION:
            stored = int(text)
        elif text:
            log.warning("ignoring %s: not an incarnation from 0 to 2^63-1", path)
    return min(max(stored + 1, wall_ms // 1000), MAX_INCARNATION)


def save_incarnation(data_dir: Path, incarnation: int) -> None:
    temporary = data_dir / (INCARNATION_FILE + ".tmp")
    temporary.write_text(f"{incarnation}\n")
    temporary.replace(data_dir / INCARNATION_FILE)


class MemberFile:
    """The member table saved in DATA_DIR (JSON, replaced atomically when it changes).

    Losing it is safe (the node then waits to hear from a peer, as on its first
    start), so it is not fsynced. What it holds is validated like gossip: a
    damaged file is ignored and a bad entry (say, from an older release that
    took ids or numbers it should not have) is skipped, with one warning. Dead
    and left members carry `since` (wall-clock seconds of that status), so the
    count towards forgetting them goes on across restarts.
    """

    NAME = "members.json"
    FORMAT = 1

    def __init__(self, data_dir: Path, cluster: str) -> None:
        self.path = data_dir / self.NAME
        self.cluster = cluster
        self._saved: list[dict[str, object]] | None = None

    def load(self, now_wall: float) -> tuple[list[MemberState], dict[str, float]]:
        """The saved members, and for dead or left ones the seconds they have been so."""
        try:
            # A number too long to be anything we wrote makes its entry invalid, not the file.
            raw = json.loads(self.path.read_bytes(), parse_int=_saved_int)
            if not isinstance(raw, dict) or raw.get("format") != self.FORMAT:
                raise ValueError("unknown format")
            if raw.get("cluster") != self.cluster:
                log.warning(
                    "ignoring %s: it belongs to another cluster than %s", self.path, self.cluster
                )
                return [], {}
            entries = raw.get("members")
            if not isinstance(entries, list):
                raise ValueError("no member list")
        except FileNotFoundError:
            return [], {}
        except (ValueError, RecursionError) as error:
            reason = "not JSON" if not isinstance(error, ValueError) else str(error)[:200]
            log.warning("ignoring damaged %s: %s", self.path, reason)
            return [], {}
        states: list[MemberState] = []
        seen: set[str] = set()
        ages: dict[str, float] = {}
        problems: list[str] = []
        for index, entry in enumerate(entries[:MAX_MEMBERS]):
            try:
                state = MemberState.from_json(entry, f"members[{index}]")
            except MessageError as error:
                problems.append(str(error))
                continue
            if state.node_id in seen:
                problems.append(f"members[{index}].id: {state.node_id} is listed twice")
                continue
            seen.add(state.node_id)
            states.append(state)
            since = entry.get("since")
            if state.status in (Status.DEAD, Status.LEFT) and _is_seconds(since):
                ages[state.node_id] = max(0.0, now_wall - since)
        if len(entries) > MAX_MEMBERS:
            problems.append(f"members: over {MAX_MEMBERS} entries (MAX_MEMBERS)")
        if problems:
            log.warning(
                "%s: skipped %d bad entries (first: %s)", self.path, len(problems), problems[0]
            )
        self._saved = [state.to_json() for state in states]
        return states, ages

    def save(self, states: list[MemberState], since: dict[str, int] | None = None) -> None:
        """Write the table if it differs from what the file holds."""
        entries = [state.to_json() for state in states]
        for entry in entries:
            if since and entry["id"] in since:
                entry["since"] = since[entry["id"]]
        if entries == self._saved:
            return
        temporary = self.path.with_suffix(".tmp")
        body = {"format": self.FORMAT, "cluster": self.cluster, "members": entries}
        temporary.write_text(json.dumps(body, indent=1) + "\n")
        temporary.replace(self.path)
        self._saved = entries


def _saved_int(literal: str) -> int:
    return int(literal) if len(literal) <= 20 else -1


def _is_seconds(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value < 1e11
    )


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
        describe: Callable[[Address], Awaitable[str | None]],
        rng: random.Random,
        on_change: Callable[[], None],
        guard: PeerGuard | None = None,
    ) -> None:
        self.config = config
        self.guard = guard
        self.membership = membership
        self._http = http
        self._scheme = "http" if config.tls is None else "https"
        # Asks a node's gRPC port for its gossip address (a3redis.api.describe).
        self._describe = describe
        self._rng = rng
        self._on_change = on_change
        self._unresolved = seed_addresses(config)
        self._warned: set[str] = set()  # PEERS entries (from the config: bounded)
        self._log_throttle = LogThrottle(LOG_INTERVAL)
        rate = max(MIN_GOSSIP_RATE_PER_HOST, 10.0 / config.gossip_interval)
        self._buckets = TokenBuckets(rate, 2 * rate, RATE_LIMITED_HOSTS)
        self.stats = {"probes": 0, "probe_failures": 0, "exchanges_served": 0, "rejected": 0}
        # (endpoint, reason) -> requests or answers refused: what a3redis_rejected_total shows.
        self.rejected = Tally()

    # ----- the loop -----------------------------------------------------------------------

    async def run(
        self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._resolve_seeds)
            while not stop.is_set():
                probes = self.membership.tick(trio.current_time(), self._rng)
                self._log_forgotten(self.membership.take_forgotten())
                self._on_change()
                for probe in probes:
                    nursery.start_soon(self._probe, probe)
                with trio.move_on_after(self.config.gossip_interval):
                    await stop.wait()
            nursery.cancel_scope.cancel()
        await self._announce_departure()

    def peers_unheard(self) -> int:
        """Configured peers (PEERS / TOTAL_NODES) that have not answered yet."""
        return len(self._unresolved) + len(self.membership.seeds_pending())

    def _log_forgotten(self, gone: list[MemberState]) -> None:
        # One line per tick, however many (a flood of made-up members dies together).
        if not gone:
            return
        names = ", ".join(member.node_id for member in gone[:FORGOTTEN_NAMED])
        more = f" and {len(gone) - FORGOTTEN_NAMED} more" if len(gone) > FORGOTTEN_NAMED else ""
        log.warning(
            "forgot %s%s (dead or left for DEAD_MEMBER_REAP=%gs): out of the ring, "
            "their partitions move to the other nodes",
            names,
            more,
            self.config.dead_member_reap,
        )

    async def _announce_departure(self) -> None:
        """Tell everyone we stop (we stay in the ring, as a dead member), or, at the end of
        a decommission, that we left it."""
        now = trio.current_time()
        left = self.membership.me.status is Status.LEFT
        probes = self.membership.leave(now) if left else self.membership.stop(now)
        self._on_change()
        with trio.move_on_after(LEAVE_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for probe in probes:
                    nursery.start_soon(self._tell_leaving, probe)
        log.info("announced %s to %d members", "leave" if left else "stop", len(probes))

    async def _tell_leaving(self, probe: Probe) -> None:
        # Whatever the member answers (a refusal, garbage, nothing), we are leaving.
        try:
            await self._post(probe)
        except RefusedInput as error:
            log.debug("leave announcement to %s refused: %s", probe.gossip_addr, error)

    # ----- probing ------------------------------------------------------------------------

    async def _probe(self, probe: Probe) -> None:
        self.stats["probes"] += 1
        try:
            reply = await self._post(probe)
        except IncompatiblePeerError as error:
            self._refused("gossip_reply", probe.gossip_addr, error, "refused by the peer")
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
        except RefusedInput as error:
            self._refused("gossip_reply", probe.gossip_addr, error, f"refusing peer {reply.sender}")
        self._on_change()

    async def _post(self, probe: Probe) -> GossipMessage | None:
        """POST the message; the reply, or None when the peer did not answer usefully.

        The answer is read up to MAX_MESSAGE_BYTES and within twice PROBE_TIMEOUT
        in all: a peer that trickles or floods is a peer that did not answer.
        """
        body: bytes | None = None
        status = 0
        sent = _encode(probe.message.to_json())
        headers = {"content-type": "application/json"}
        if self.guard is not None:
            headers.update(self.guard.headers("gossip", sent))
        answer_headers: Headers = {}
        with trio.move_on_after(2 * PROBE_TIMEOUT) as deadline:
            try:
                async with self._http.stream(
                    "POST",
                    f"{self._scheme}://{probe.gossip_addr}/gossip",
                    content=sent,
                    headers=headers,
                ) as response:
                    status = response.status_code
                    answer_headers = response.headers
                    body = await _read_at_most(response, MAX_MESSAGE_BYTES)
            except (httpx.HTTPError, httpx.InvalidURL) as error:
                log.debug("gossip to %s: %s", probe.gossip_addr, type(error).__name__)
                return None
        if deadline.cancelled_caught:
            log.debug(
                "gossip to %s: no whole answer within %gs", probe.gossip_addr, 2 * PROBE_TIMEOUT
            )
            return None
        if body is None:
            oversized = MessageError(f"body: over {MAX_MESSAGE_BYTES} bytes", "too_large")
            self._refused("gossip_reply", probe.gossip_addr, oversized, "oversized gossip reply")
            return None
        if status == 409:
            raise IncompatiblePeerError(_error_text(body))
        if status != 200:
            log.debug("gossip to %s: HTTP %d", probe.gossip_addr, status)
            return None
        if self.guard is not None and self.guard.check(
            "gossip-reply", answer_headers, body, probe.gossip_addr
        ):
            return None
        try:
            return decode_message(body)
        except MessageError as error:
            self._refused("gossip_reply", probe.gossip_addr, error, "malformed gossip reply")
            return None

    def _refused(self, endpoint: str, source: str, error: RefusedInput, what: str) -> None:
        """Count a refusal; log it unless this source was logged within LOG_INTERVAL."""
        self.rejected.add((endpoint, error.reason))
        self.stats["rejected"] += 1
        should, held_back = self._log_throttle.should_log(source, trio.current_time())
        if should:
            more = f" ({held_back} more from {source} since the last line)" if held_back else ""
            log.warning("%s (%s): %s%s", what, source, error, more)

    # ----- serving ------------------------------------------------------------------------

    def serve_exchange(
        self, body: bytes, remote: str | None = None, headers: Headers | None = None
    ) -> tuple[int, dict[str, object]]:
        """Handle a POST /gossip body from host `remote` (with its HTTP `headers`, where a
        member's signature is); returns (HTTP status, JSON body)."""
        now = trio.current_time()
        source = remote or "unknown"
        if not self._buckets.allow(source, now):
            error = RefusedInput(
                f"over {self._buckets.rate:g} gossip requests per second from {source}",
                "rate_limited",
            )
            self._refused("gossip", source, error, "refused gossip")
            return 429, {"error": str(error)}
        if self.guard is not None:
            refusal = self.guard.check("gossip", headers or {}, body, source)
            if refusal is not None:
                return refusal_status(refusal), {
                    "error": f"not a member's message: {refusal.value}"
                }
        try:
            message = decode_message(body)
        except MessageError as error:
            self._refused("gossip", source, error, "refused gossip")
            status = 413 if error.reason == "too_large" else 400
            return status, {"error": f"malformed gossip message: {error}"}
        try:
            reply = self.membership.on_exchange(message, now)
        except IncompatiblePeerError as error:
            self._refused("gossip", source, error, f"refusing peer {message.sender}")
            return 409, {"error": f"incompatible peer: {error}"}
        except RefusedInput as error:
            self._refused("gossip", source, error, "refused gossip")
            return 503, {"error": str(error)}
        self.stats["exchanges_served"] += 1
        self._on_change()
        return 200, reply.to_json()

    def encode_answer(self, status: int, answer: dict[str, object]) -> tuple[bytes, dict[str, str]]:
        """An answer of `serve_exchange` as the bytes to send and the headers that sign
        them: only an exchange answered 200 is signed (a refusal gets no signature, so
        a sender without the secret never obtains one), and nothing without a secret."""
        data = _encode(answer)
        if self.guard is None or status != 200:
            return data, {}
        return data, self.guard.headers("gossip-reply", data)

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
            response = await self._http.get(f"{self._scheme}://{address}/health")
            if response.status_code in (200, 503) and "node_id" in response.json():
                return str(address)
        except (httpx.HTTPError, ValueError):
            pass
        return await self._describe(address)


def refusal_status(refusal: Refusal) -> int:
    """The HTTP status of a message the cluster secret refuses: 401 when the sender did
    not prove it holds the secret, 503 when our replay cache is full, 403 otherwise."""
    if refusal.forged_or_missing:
        return 401
    return 503 if refusal is Refusal.BUSY else 403


def _encode(message: dict[str, object]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


async def _read_at_most(response: httpx.Response, limit: int) -> bytes | None:
    """The response body, or None if it is longer than `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _error_text(body: bytes) -> str:
    """A peer's refusal, for our log: its `error` text, shortened, printable ASCII."""
    text: Any = None
    with contextlib.suppress(ValueError, RecursionError):
        text = json.loads(body).get("error") if body.startswith(b"{") else None
    if not isinstance(text, str):
        text = body[:200].decode("utf-8", "replace")
    return str(text)[:300].encode("ascii", "replace").decode()


def make_http_client(
    config: Config, ssl_context: ssl.SSLContext | None = None
) -> httpx.AsyncClient:
    """The gossip client; `ssl_context` (a3redis.net.tls) verifies peers over https."""
    transport = httpx.AsyncHTTPTransport(
        local_address=config.bind_host if config.bind_host not in ("0.0.0.0", "::") else None,
        retries=0,
        verify=True if ssl_context is None else ssl_context,
    )
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(PROBE_TIMEOUT),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        trust_env=False,
    )
