"""The `a3redis` commands that call the nodes' HTTP endpoints: `cluster` (the
member table, `status`, `ring`, `remove`, `decommission`) and the progress
`repair --wait` shows.

Rules: those of the command line (a3redis.tools.cli), whose dispatcher loads
this module only for these commands: httpx and the cluster secret's signing
are theirs alone, and importing them would slow every other command's start
(benchmarks/README.md, "The command line's start"). An HTTP failure is a
ClientError named as a gRPC status, like any other failure of the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import httpx
import trio

from a3redis.client import Client, ClientError
from a3redis.cluster.peer_auth import operator_headers
from a3redis.net.address import Address
from a3redis.runtime.supervision import unwrap_single_group
from a3redis.tools import cluster_status as cluster_view
from a3redis.tools.output import show
from a3redis.tools.progress import Progress


async def cluster_command(client: Client, endpoint: Address, args: argparse.Namespace) -> int:
    """`a3redis cluster` and its subcommands but `up` (which runs nodes, a3redis.tools.launcher)."""
    json_out = args.output == "json"
    if args.cluster_command == "remove":
        path = f"/api/members/{args.node_id}/remove"
        signed = _signed_by_cluster_secret(f"remove:{args.node_id}")
        answer = await _admin_json(client, endpoint, "POST", path, args.timeout, signed)
        if args.no_wait:
            show(answer if json_out else f"removing {args.node_id}", json_out)
            return 0
        await _wait_until_left(client, endpoint, args)
        show(
            {"removed": args.node_id, "status": "left"}
            if json_out
            else f"removed {args.node_id} from the ring",
            json_out,
        )
    elif args.cluster_command == "decommission":
        return await _decommission(client, endpoint, args)
    elif args.cluster_command in ("status", "ring"):
        await _cluster_view(client, endpoint, args)
    else:
        members = await _admin_json(client, endpoint, "GET", "/membership", args.timeout)
        if json_out:
            show(members, True)
        else:
            print(_members_table(members))
    return 0


async def _member_gossip_url(
    client: Client, endpoint: Address, node_id: str, seconds: float
) -> str:
    """The HTTP base URL of member `node_id`, as the endpoint's node knows it."""
    members = await _admin_json(client, endpoint, "GET", "/membership", seconds)
    entry = members.get(node_id) if isinstance(members, dict) else None
    if not isinstance(entry, dict) or not entry.get("gossip_addr"):
        raise ClientError("NOT_FOUND", f"no member {node_id!r}")
    return f"{client.http_scheme}://{entry['gossip_addr']}"


async def _decommission(client: Client, endpoint: Address, args: argparse.Namespace) -> int:
    json_out = args.output == "json"
    base = await _member_gossip_url(client, endpoint, args.node_id, args.timeout)
    answer = await _request_json(
        client,
        "POST",
        f"{base}/api/members/{args.node_id}/decommission",
        args.timeout,
        _signed_by_cluster_secret(f"decommission:{args.node_id}"),
    )
    if args.no_wait:
        show(answer if json_out else f"{args.node_id} is decommissioning", json_out)
        return 0
    last = ""
    deadline = time.monotonic() + args.wait_timeout
    while time.monotonic() < deadline:
        members = await _admin_json(client, endpoint, "GET", "/membership", args.timeout)
        status = members.get(args.node_id, {}).get("status") if isinstance(members, dict) else None
        if status == "left":
            show(
                {"decommissioned": args.node_id, "status": "left"}
                if json_out
                else f"{args.node_id} handed its partitions over and left the ring",
                json_out,
            )
            return 0
        if status == "dead":
            print(
                f"{args.node_id} stopped during its decommission: start it again to resume, or "
                f"remove it (`a3redis cluster remove {args.node_id}`: its partitions are copied "
                "from the other owners first)",
                file=sys.stderr,
            )
            return 1
        try:
            progress = await _request_json(client, "GET", f"{base}/api/transition", args.timeout)
        except ClientError:
            progress = None
        line = _progress_line(progress) if isinstance(progress, dict) else "leaving"
        if line != last and not json_out:
            print(line, flush=True)
            last = line
        await trio.sleep(1.0)
    print(f"still decommissioning after {args.wait_timeout:g}s (it goes on)", file=sys.stderr)
    return 1


def _progress_line(progress: dict[str, Any]) -> str:
    waiting = progress.get("waiting_for")
    return (
        f"{progress.get('node_id')}: {progress.get('role')}, partitions "
        f"{progress.get('partitions_done')}/{progress.get('partitions')}, "
        f"{progress.get('keys_streamed')} keys copied"
        + (f" (waiting for {waiting})" if waiting else "")
    )


async def _wait_until_left(client: Client, endpoint: Address, args: argparse.Namespace) -> None:
    """Wait (showing progress) until the endpoint's node has removed `args.node_id`."""

    async def left() -> bool:
        members = await _admin_json(client, endpoint, "GET", "/membership", args.timeout)
        entry = members.get(args.node_id) if isinstance(members, dict) else None
        return isinstance(entry, dict) and entry.get("status") == "left"

    deadline = time.monotonic() + args.wait_timeout
    last = ""
    while time.monotonic() < deadline:
        if await left():
            return
        progress = await _admin_json(client, endpoint, "GET", "/api/transition", args.timeout)
        removing = progress.get("removing") if isinstance(progress, dict) else None
        if not isinstance(removing, dict):
            if await left():
                return
            raise ClientError("FAILED_PRECONDITION", f"{args.node_id} was not removed")
        line = (
            f"removing {args.node_id}: partitions {removing.get('partitions_done')}/"
            f"{removing.get('partitions')}, {removing.get('keys_copied')} keys copied"
        )
        if line != last and args.output != "json":
            print(line, flush=True)
            last = line
        await trio.sleep(0.5)
    raise ClientError(
        "DEADLINE_EXCEEDED", f"{args.node_id} not removed within {args.wait_timeout:g}s"
    )


async def _admin_json(
    client: Client,
    endpoint: Address,
    method: str,
    path: str,
    seconds: float,
    headers: dict[str, str] | None = None,
) -> Any:
    """Call the node's HTTP endpoint, at its advertised address or, failing that,
    at the host we reached it on (an advertised name may not resolve from here)."""
    gossip = Address.parse((await client.describe()).gossip_address)
    try:
        return await _request_json(
            client, method, f"{client.http_scheme}://{gossip}{path}", seconds, headers
        )
    except ClientError as error:
        if error.code != "UNAVAILABLE" or gossip.host == endpoint.host:
            raise
        fallback = Address(endpoint.host, gossip.port)
        return await _request_json(
            client, method, f"{client.http_scheme}://{fallback}{path}", seconds, headers
        )


def _signed_by_cluster_secret(channel: str) -> dict[str, str]:
    """Headers signing an operator request with the cluster secret in our environment
    (CLUSTER_SECRET_FILE or CLUSTER_SECRET), as nodes with a secret require; none without."""
    try:
        return operator_headers(os.environ, channel)
    except ValueError as error:
        raise ClientError("INVALID_ARGUMENT", str(error)) from None


async def _cluster_view(client: Client, endpoint: Address, args: argparse.Namespace) -> None:
    json_out = args.output == "json"
    info = await client.describe()
    async with _http_client(client, args.timeout) as http_client:
        http = cluster_view.NodeHttp(http_client, endpoint.host, client.http_scheme)
        entry = Address.parse(info.gossip_address)
        if args.cluster_command == "status":
            status = await cluster_view.gather_status(http, entry, info.node_id)
            show(
                cluster_view.status_json(status)
                if json_out
                else cluster_view.status_text(status, time.time()),
                json_out,
            )
            return
        members, ring = await cluster_view.entry_view(http, entry, info.node_id)
    if args.key is None:
        show(cluster_view.ring_json(ring) if json_out else cluster_view.ring_text(ring), json_out)
    else:
        owners = cluster_view.key_owners_json(ring, args.key.encode(), members, args.key)
        show(owners if json_out else cluster_view.key_owners_text(owners), json_out)


async def repair(client: Client, endpoint: Address, args: argparse.Namespace) -> list[Any]:
    """Run the repair call; with --wait on a terminal, show its progress on stderr meanwhile."""
    with Progress() as progress:
        if not (args.wait and progress.enabled):
            return await client.repair(wait=args.wait)
        info = await client.describe()
        reports: list[Any] = []
        with unwrap_single_group():
            async with (
                _http_client(client, 1.0) as http_client,
                trio.open_nursery() as nursery,
            ):
                http = cluster_view.NodeHttp(http_client, endpoint.host, client.http_scheme)
                gossip = Address.parse(info.gossip_address)
                nursery.start_soon(_show_repair_progress, progress, info.node_id, http, gossip)
                reports = await client.repair(wait=True)
                nursery.cancel_scope.cancel()
        return reports


async def _show_repair_progress(
    progress: Progress, node_id: str, http: cluster_view.NodeHttp, gossip: Address
) -> None:
    """Elapsed time, and the keys the round has moved so far (the node counts them per peer)."""
    started = time.monotonic()
    moved_before: int | None = None
    moved = ""
    while True:
        progress.show(f"repair on {node_id}: {time.monotonic() - started:.1f}s{moved}")
        try:
            repair = (await http.get(gossip, "/api/metrics/summary"))["last_repair"]
            total = int(repair["keys_pulled"]) + int(repair["keys_pushed"])
        except (cluster_view.Unreachable, KeyError, TypeError, ValueError):
            pass
        else:
            moved_before = total if moved_before is None else moved_before
            moved = f", {total - moved_before} keys moved"
        await trio.sleep(0.5)


def _authorization(token: str | None) -> dict[str, str]:
    """The HTTP header that presents a client token (none without one)."""
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def _http_client(client: Client, seconds: float) -> httpx.AsyncClient:
    """An HTTP client for the nodes' HTTP endpoints, with the client's token and TLS."""
    return httpx.AsyncClient(
        timeout=seconds,
        trust_env=False,
        headers=_authorization(client.token),
        verify=True if client.http_tls is None else client.http_tls,
    )


# HTTP answers named as gRPC statuses, like every other failure of the CLI.
_CODE_OF_HTTP_STATUS = {
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    409: "FAILED_PRECONDITION",
}


async def _request_json(
    client: Client, method: str, url: str, seconds: float, signed: dict[str, str] | None = None
) -> Any:
    """`signed`: the cluster secret's signature headers of an operator request, if any."""
    try:
        async with _http_client(client, seconds) as http:
            response = await http.request(method, url, headers=signed)
            body = response.json()
    except (httpx.HTTPError, ValueError) as error:
        raise ClientError("UNAVAILABLE", f"{url}: {error}") from None
    if response.status_code >= 400:
        code = _CODE_OF_HTTP_STATUS.get(response.status_code, "NOT_FOUND")
        raise ClientError(code, str(body.get("error", body)))
    return body


def _members_table(members: dict[str, Any]) -> str:
    now = time.time()
    rows = [("NODE", "STATUS", "GRPC", "GOSSIP", "INCARNATION", "LAST HEARD")]
    for node_id, entry in sorted(members.items()):
        heard = entry.get("timestamp")
        rows.append(
            (
                node_id,
                str(entry.get("status")),
                str(entry.get("addr") or "-"),
                str(entry.get("gossip_addr") or "-"),
                str(entry.get("incarnation", "-")),
                "-" if heard is None else f"{max(0.0, now - heard):.0f}s ago",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )
