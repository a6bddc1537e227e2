"""The node's HTTP endpoint (GOSSIP_PORT): gossip, membership and health, on Quart-trio.

Rules: handlers only render node state or hand a request body to the shell
that owns it (gossip); they never block and never change stored data. A
gossip body over MAX_GOSSIP_BYTES (the core's MAX_MESSAGE_BYTES) is refused
(413) before it is read whole; the gossip shell decides the rest (400 for a
malformed message, 409 incompatible, 429 over the sender's rate, 503 when the
member table is full), with a JSON `error` that names the field and the limit;
a body that does not arrive within BODY_TIMEOUT is refused (408), and a
connection silent for READ_TIMEOUT is closed.
With CLIENT_TOKENS_FILE, the operator endpoints (remove, decommission,
/debug/objects) need an admin token (`token_refusal`: 401 or 403 with a
JSON `error`); /metrics and the status page need a token of any role when
METRICS_REQUIRE_TOKEN / STATUS_REQUIRE_TOKEN say so; /health and /ready stay
open. With a cluster secret, gossip must be signed with it (the gossip shell
checks), and remove and decommission take its signature
(`cluster_secret_refusal`) as well as an admin token.
`serve_http` runs Hypercorn on a socket the node bound itself and stops it
through Hypercorn's shutdown_trigger (cancelling Hypercorn directly logs a
lifespan error and takes seconds). With TLS it serves only https, on the
node's context (a3redis.net.tls), which SIGHUP reloads in place.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import Response, request
from quart_trio import QuartTrio

from a3redis import __version__
from a3redis.api import heap
from a3redis.api.metrics import NodeMetrics, process_usage
from a3redis.cluster.anti_entropy import AntiEntropy
from a3redis.cluster.gossip import GossipLoop, refusal_status
from a3redis.cluster.rebalance import Rebalancer
from a3redis.config import Config
from a3redis.core.client_tokens import Action, TokenHolder, bearer_token
from a3redis.core.errors import ErrorKind, RequestError
from a3redis.core.health import NodeCondition, serves_requests
from a3redis.core.membership import MAX_MESSAGE_BYTES, Status, summary
from a3redis.net.tls import TLS_HANDSHAKE_TIMEOUT, NodeTls
from a3redis.storage.store import Store

MAX_GOSSIP_BYTES = MAX_MESSAGE_BYTES
# Seconds a request body may take to arrive whole (a gossip body is small).
BODY_TIMEOUT = 10.0
# Seconds a connection may stay silent mid-request before Hypercorn closes it.
READ_TIMEOUT = 10
# A self-contained page (no CDN, no build step) that polls the JSON endpoints.
STATUS_PAGE = (resources.files("a3redis.api") / "static" / "status.html").read_bytes()


@dataclass
class NodeView:
    """What the HTTP app may read about its node."""

    config: Config
    store: Store
    gossip: GossipLoop
    repair: AntiEntropy
    metrics: NodeMetrics
    started_at: float
    rebalancer: Rebalancer
    draining: bool = False
    tokens: TokenHolder | None = None  # CLIENT_TOKENS_FILE's tokens; None: not set

    def condition(self) -> NodeCondition:
        """What the readiness decision (a3redis.core.health) needs to know about this node."""
        return NodeCondition(
            joining=self.repair.cluster.joining,
            draining=self.draining,
            store_failed=self.store.failed,
        )

    def ready(self) -> bool:
        """Whether this node coordinates requests (the gRPC Health service's SERVING)."""
        return serves_requests(self.condition())

    def summary_json(self) -> dict[str, Any]:
        """The small JSON the older project's dashboard read, with real numbers."""
        stats = self.store.stats()
        repair = self.repair.stats
        return {
            "node_id": self.config.node_id,
            "operations": self.metrics.summary(),
            "keys": stats.live_keys,
            "keys_with_ttl": self.store.expiring_keys,
            "log_bytes": stats.log_bytes,
            "process": process_usage(),
            "members": dict(summary(self.gossip.membership.members())),
            "last_repair": {
                "rounds": repair.rounds,
                "finished_at": repair.last_round_at or None,
                "seconds": round(repair.last_round_seconds, 4),
                "keys_pulled": repair.keys_pulled,
                "keys_pushed": repair.keys_pushed,
                "peers": [dataclasses.asdict(report) for report in repair.last_reports],
            },
        }

    def ring_json(self) -> dict[str, Any]:
        ring = self.repair.cluster.ring
        membership = self.gossip.membership
        now_wall, now_mono = time.time(), trio.current_time()
        return {
            "replication_factor": ring.replication_factor,
            "partitions": ring.partitions,
            "members": list(ring.members),
            "shares": ring.shares(),
            # Members forgotten after DEAD_MEMBER_REAP (recently: within as long again).
            "forgotten": [
                {
                    "node_id": gone.state.node_id,
                    "status": gone.state.status.name.lower(),
                    "incarnation": gone.state.incarnation,
                    "forgotten_at": round(now_wall - (now_mono - gone.at), 3),
                }
                for gone in membership.forgotten()
            ],
            "dead_member_reap": self.config.dead_member_reap,
        }

    def membership_json(self) -> dict[str, Any]:
        """The older project's shape, keyed by node id, with more fields."""
        membership = self.gossip.membership
        now_wall, now_mono = time.time(), trio.current_time()
        body: dict[str, Any] = {}
        for member in membership.members():
            alive_at = membership.alive_at(member.node_id)
            heard = (
                now_wall
                if member.node_id == membership.node_id or alive_at is None
                else (now_wall - (now_mono - alive_at))
            )
            entry = body[member.node_id] = {
                "addr": member.grpc_addr,
                "gossip_addr": member.gossip_addr,
                "timestamp": int(heard),
                "status": member.status.name.lower(),
                "incarnation": member.incarnation,
                "role": member.role.value,
            }
            if member.status in (Status.DEAD, Status.LEFT):
                age = membership.status_age(member.node_id, now_mono) or 0.0
                # When it became dead or left, and when it will be forgotten (DEAD_MEMBER_REAP).
                entry["since"] = int(now_wall - age)
                entry["forget_in"] = round(membership.forget_in(member.node_id, now_mono) or 0.0)
        for peer in membership.incompatible.values():
            if peer.node_id not in body:
                body[peer.node_id] = {
                    "addr": None,
                    "gossip_addr": peer.gossip_addr,
                    "timestamp": None,
                    "status": "incompatible",
                    "reason": peer.reason,
                }
        return body


# ----- client tokens (CLIENT_TOKENS_FILE) ------------------------------------------------------

HTTP_STATUS_OF_KIND = {ErrorKind.UNAUTHENTICATED: 401, ErrorKind.PERMISSION_DENIED: 403}


def token_refusal(
    tokens: TokenHolder | None, authorization: str | None, action: Action
) -> tuple[dict[str, Any], int, dict[str, str]] | None:
    """None when a request may go on as far as client tokens go: none are configured, or
    its `Authorization: Bearer <token>` has a role that allows `action`. Otherwise the
    answer: 401 (no valid token) or 403 (a token whose role does not allow it)."""
    if tokens is None:
        return None
    try:
        tokens.tokens.check(bearer_token(authorization), action)
    except RequestError as error:
        status = HTTP_STATUS_OF_KIND[error.kind]
        headers = {"WWW-Authenticate": 'Bearer realm="a3redis"'} if status == 401 else {}
        return {"error": str(error)}, status, headers
    return None


def create_app(view: NodeView) -> QuartTrio:
    app = QuartTrio("a3redis")
    app.config["MAX_CONTENT_LENGTH"] = MAX_GOSSIP_BYTES
    # A body that trickles in (1 byte every few seconds) is cut: 408.
    app.config["BODY_TIMEOUT"] = BODY_TIMEOUT
    config = view.config

    def refused(action: Action) -> tuple[dict[str, Any], int, dict[str, str]] | None:
        return token_refusal(view.tokens, request.headers.get("Authorization"), action)

    # With CLIENT_TOKENS_FILE, METRICS_REQUIRE_TOKEN / STATUS_REQUIRE_TOKEN put these
    # behind a token of any role; /health and /ready always stay open.
    metrics_paths = ("/metrics", "/api/metrics/summary")
    status_paths = ("/", "/membership", "/api/ring", "/api/transition")
    guarded = (metrics_paths if config.metrics_require_token else ()) + (
        status_paths if config.status_require_token else ()
    )
    if guarded:

        @app.before_request
        async def require_read_token() -> Any:
            if request.method == "GET" and request.path in guarded:
                return refused(Action.READ)
            return None

    @app.get("/health")
    async def health() -> tuple[dict[str, Any], int]:
        stats = view.store.stats()
        status = "draining" if view.draining else "ok"
        body = {
            "status": status,
            "node_id": config.node_id,
            "cluster_name": config.cluster_name,
            "version": __version__,
            "uptime_s": round(time.monotonic() - view.started_at, 3),
            "keys": stats.live_keys,
            "role": view.rebalancer.role.value,
            "ready": view.ready(),
        }
        return body, 200 if status == "ok" else 503

    @app.get("/ready")
    async def ready() -> tuple[dict[str, Any], int]:
        # For load balancers and readiness probes: whether this node coordinates
        # requests now (it has found its ring), unlike /health (the process is fine).
        body = {"ready": view.ready(), "role": view.rebalancer.role.value}
        return body, 200 if body["ready"] else 503

    @app.get("/membership")
    async def membership() -> dict[str, Any]:
        return view.membership_json()

    @app.get("/")
    async def status_page() -> Response:
        return Response(STATUS_PAGE, status=200, content_type="text/html; charset=utf-8")

    @app.get("/api/ring")
    async def ring() -> dict[str, Any]:
        return view.ring_json()

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = view.metrics.exposition(request.headers.get("Accept"))
        return Response(body, status=200, content_type=content_type)

    @app.get("/api/metrics/summary")
    async def metrics_summary() -> dict[str, Any]:
        return view.summary_json()

    if config.debug_endpoints:

        @app.get("/debug/objects")
        async def debug_objects() -> Any:
            if (refusal := refused(Action.ADMIN)) is not None:
                return refusal  # it walks the whole heap: not for anyone who can connect
            return heap.census()

    @app.post("/gossip")
    async def gossip() -> Response:
        raw = await request.get_data(cache=False, as_text=False)
        data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
        status, body = view.gossip.serve_exchange(data, request.remote_addr, request.headers)
        # Sent as the bytes a cluster secret signs (the signature covers them exactly).
        answer, signed = view.gossip.encode_answer(status, body)
        return Response(answer, status=status, headers=signed, content_type="application/json")

    async def operator_refusal(channel: str) -> Any:
        """None when an operator request may go on: an admin token (CLIENT_TOKENS_FILE)
        or the cluster secret's signature (`cluster_secret_refusal`) is enough, and
        with neither configured it is open. Otherwise the refusal."""
        token = refused(Action.ADMIN)
        if token is None and view.tokens is not None:
            return None  # an admin token
        if view.gossip.guard is None:
            return token  # None when neither is configured
        signature = await cluster_secret_refusal(view, channel)
        if signature is None:
            return None
        # Both configured, neither given: the token's answer names the token it wanted.
        asked_with_token = request.headers.get("Authorization") is not None
        return token if token is not None and asked_with_token else signature

    @app.post("/api/members/<node_id>/remove")
    async def remove_member(node_id: str) -> Any:
        if (refusal := await operator_refusal(f"remove:{node_id}")) is not None:
            return refusal
        # The member's partitions are copied to the members gaining them first; it is
        # announced `left` once they hold them (GET /membership, /api/transition).
        try:
            view.rebalancer.remove(node_id)
        except KeyError as error:
            return {"error": str(error.args[0])}, 404
        except ValueError as error:
            return {"error": str(error)}, 409
        return {"removing": node_id, "status": "removing"}, 202

    @app.get("/api/transition")
    async def transition() -> dict[str, Any]:
        return view.rebalancer.status_json()

    @app.post("/api/members/<node_id>/decommission")
    async def decommission(node_id: str) -> Any:
        if (refusal := await operator_refusal(f"decommission:{node_id}")) is not None:
            return refusal
        membership = view.gossip.membership
        if node_id != membership.node_id:
            member = membership.get(node_id)
            if member is None:
                return {"error": f"no member {node_id!r}"}, 404
            # Only a node can change its own role: the caller asks the node itself.
            return {
                "error": f"ask {node_id} itself, at {member.gossip_addr}",
                "gossip_addr": member.gossip_addr,
            }, 421
        if not view.rebalancer.decommission():
            return {
                "error": f"{node_id} is {membership.role.value}: only a normal owner can be "
                "decommissioned"
            }, 409
        return view.rebalancer.status_json(), 202

    @app.errorhandler(413)
    async def too_large(_: Exception) -> Response:
        return Response(
            f'{{"error": "gossip message over {MAX_GOSSIP_BYTES} bytes"}}',
            status=413,
            content_type="application/json",
        )

    @app.errorhandler(404)
    async def not_found(_: Exception) -> Response:
        return Response('{"error": "not found"}', status=404, content_type="application/json")

    return app


async def cluster_secret_refusal(view: NodeView, channel: str) -> tuple[dict[str, Any], int] | None:
    """With a cluster secret, the refusal of an operator request not signed with it (a
    member's or the CLI's signature, a3redis.cluster.peer_auth); None if it is signed,
    or no secret is set."""
    guard = view.gossip.guard
    if guard is None:
        return None
    raw = await request.get_data(cache=False, as_text=False)
    body = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    refusal = guard.check(channel, request.headers, body, request.remote_addr or "unknown")
    if refusal is None:
        return None
    return {"error": f"needs the cluster secret's signature: {refusal.value}"}, refusal_status(
        refusal
    )


class _HypercornConfig(HypercornConfig):
    """Hypercorn's settings, serving TLS on the node's own context when it has one
    (Hypercorn would build a context of its own from file names, once)."""

    def __init__(self, ssl_context: ssl.SSLContext | None) -> None:
        super().__init__()
        self._node_ssl_context = ssl_context
        self.ssl_handshake_timeout = TLS_HANDSHAKE_TIMEOUT

    @property
    def ssl_enabled(self) -> bool:
        return self._node_ssl_context is not None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return self._node_ssl_context


async def serve_http(
    sock: socket.socket,
    view: NodeView,
    stop: trio.Event,
    *,
    tls: NodeTls | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    hypercorn_config = _HypercornConfig(None if tls is None else tls.http_server)
    # Hypercorn adopts the already-bound socket; detach ours so it is closed once.
    hypercorn_config.bind = [f"fd://{sock.detach()}"]
    hypercorn_config.accesslog = None
    hypercorn_config.errorlog = logging.getLogger("hypercorn.error")
    hypercorn_config.graceful_timeout = view.config.shutdown_grace
    hypercorn_config.read_timeout = READ_TIMEOUT
    await serve(
        create_app(view),
        hypercorn_config,
        shutdown_trigger=stop.wait,
        task_status=task_status,  # type: ignore[arg-type]  # Hypercorn names trio's private type
    )
