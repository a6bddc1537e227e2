"""The node's HTTP endpoint (GOSSIP_PORT): health and membership, on Quart-trio.

Rules: handlers only read node state and render it; they never block and
never change stored data. `serve_http` runs Hypercorn on a socket the node
bound itself and stops it through Hypercorn's shutdown_trigger (cancelling
Hypercorn directly logs a lifespan error and takes seconds).
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import Response
from quart_trio import QuartTrio

from a3redis import __version__
from a3redis.config import Config
from a3redis.storage.store import Store


@dataclass
class NodeView:
    """What the HTTP app may read about its node."""

    config: Config
    store: Store
    started_at: float
    draining: bool = False


def create_app(view: NodeView) -> QuartTrio:
    app = QuartTrio("a3redis")
    config = view.config

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
        }
        return body, 200 if status == "ok" else 503

    @app.get("/membership")
    async def membership() -> dict[str, Any]:
        # The older project's format, keyed by node id, with more fields.
        return {
            config.node_id: {
                "addr": str(config.grpc_address),
                "gossip_addr": str(config.gossip_address),
                "timestamp": int(time.time()),
                "status": "alive",
            }
        }

    @app.errorhandler(404)
    async def not_found(_: Exception) -> Response:
        return Response('{"error": "not found"}', status=404, content_type="application/json")

    return app


async def serve_http(
    sock: socket.socket,
    view: NodeView,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    hypercorn_config = HypercornConfig()
    # Hypercorn adopts the already-bound socket; detach ours so it is closed once.
    hypercorn_config.bind = [f"fd://{sock.detach()}"]
    hypercorn_config.accesslog = None
    hypercorn_config.errorlog = logging.getLogger("hypercorn.error")
    hypercorn_config.graceful_timeout = view.config.shutdown_grace
    await serve(
        create_app(view),
        hypercorn_config,
        shutdown_trigger=stop.wait,
        task_status=task_status,  # type: ignore[arg-type]  # Hypercorn names trio's private type
    )
