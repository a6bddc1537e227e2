"""The `a3redis` command line: talk to a cluster, or run a node.

Rules: every failure prints one line to stderr and exits non-zero, never a
traceback. Exit codes: 0 success, 1 key not found, 2 usage or configuration
error, 3 the request failed (the message carries the gRPC status name).
`-o json` prints one JSON document per command for scripts; progress of long
operations goes to stderr, and only when it is a terminal (`progress`).
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import trio

from a3redis import __version__
from a3redis.client import Client, ClientError, Entry, GetResult, authorization_metadata
from a3redis.core.consistency import Consistency
from a3redis.core.expiry import Condition, format_duration, parse_duration
from a3redis.core.hlc import Version
from a3redis.core.validation import InvalidRequestError
from a3redis.net.address import Address
from a3redis.tools.output import show

EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
REQUEST_TIMEOUT = 5.0
# A round over millions of keys, paced by REPAIR_MAX_KEYS_PER_SECOND, takes minutes.
REPAIR_WAIT_TIMEOUT = 3600.0


def _endpoints(text: str) -> list[Address]:
    try:
        return [Address.parse(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _duration_ms(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _consistency(text: str) -> Consistency:
    try:
        return Consistency.parse(text)
    except InvalidRequestError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--endpoint",
        "-e",
        type=_endpoints,
        default=None,
        help="HOST:PORT of a node, or several separated by commas (default 127.0.0.1:50051)",
    )
    common.add_argument(
        "--timeout",
        type=float,
        default=None,
        help=f"seconds per request (default {REQUEST_TIMEOUT:g}; {REPAIR_WAIT_TIMEOUT:g} for "
        "repair --wait, which lasts as long as the round)",
    )
    common.add_argument(
        "--consistency",
        "-c",
        type=_consistency,
        default=None,
        help="one, quorum, all or local (default: the server's)",
    )
    common.add_argument("-o", "--output", choices=("text", "json"), default="text")
    common.add_argument(
        "--token",
        default=None,
        help="client token for a cluster with CLIENT_TOKENS_FILE (default: $A3REDIS_TOKEN); "
        "sent with every call, and to the HTTP endpoints for cluster commands",
    )
    common.add_argument(
        "--tls-ca",
        default=None,
        help="PEM file of the CA that signed the nodes' certificates (default: "
        "$A3REDIS_TLS_CA): talk TLS to nodes with TLS_CERT_FILE, https to their HTTP port",
    )
    common.add_argument(
        "--tls-cert",
        default=None,
        help="PEM client certificate, for nodes with TLS_REQUIRE_CLIENT_CERT=1 (default: "
        "$A3REDIS_TLS_CERT)",
    )
    common.add_argument(
        "--tls-key",
        default=None,
        help="PEM private key of --tls-cert (default: $A3REDIS_TLS_KEY)",
    )

    parser = argparse.ArgumentParser(
        prog="a3redis", description="a3redis: a leaderless replicated key-value store"
    )
    parser.add_argument("--version", action="version", version=f"a3redis {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    put = commands.add_parser("put", parents=[common], help="store VALUE under KEY")
    put.add_argument("key")
    put.add_argument("value")
    put.add_argument(
        "--ttl", type=_duration_ms, help="expire after this long (500ms, 30s, 5m, 2h, 1d)"
    )
    ttl = commands.add_parser("ttl", parents=[common], help="print how long KEY has left")
    ttl.add_argument("key")
    expire = commands.add_parser("expire", parents=[common], help="make KEY expire after TTL")
    expire.add_argument("key")
    expire.add_argument("ttl", type=_duration_ms, help="500ms, 30s, 5m, 2h, 1d")
    expire.add_argument(
        "--only",
        choices=[c.value for c in Condition if c is not Condition.ALWAYS],
        help="nx: only without an expiry; xx: only with one; gt/lt: only if later/earlier",
    )
    persist = commands.add_parser("persist", parents=[common], help="remove KEY's expiry")
    persist.add_argument("key")
    get = commands.add_parser("get", parents=[common], help="print the value of KEY")
    get.add_argument("key")
    delete = commands.add_parser("delete", parents=[common], help="delete KEY")
    delete.add_argument("key")
    scan = commands.add_parser("scan", parents=[common], help="list keys in order")
    scan.add_argument("--prefix", default="")
    scan.add_argument("--start", default="", help="first key (inclusive)")
    scan.add_argument("--end", default="", help="last key (exclusive)")
    scan.add_argument("--limit", type=int, default=0, help="at most this many (0: all)")
    repair = commands.add_parser(
        "repair", parents=[common], help="run an anti-entropy round on the endpoint's node now"
    )
    repair.add_argument("--wait", action="store_true", help="wait and print what it fixed")
    node = commands.add_parser("node", help="run a node configured by environment variables")
    node.add_argument(
        "--interactive",
        "-i",
        action="store_true",
        help="ask for node number, total nodes and replication factor first",
    )
    cluster = commands.add_parser("cluster", help="inspect the cluster")
    cluster_commands = cluster.add_subparsers(
        dest="cluster_command", required=True, metavar="COMMAND"
    )
    cluster_commands.add_parser(
        "members", parents=[common], help="the member table as one node sees it"
    )
    remove = cluster_commands.add_parser(
        "remove",
        parents=[common],
        help="remove a dead node from the ring for good (its partitions are copied from the "
        "other owners first)",
    )
    remove.add_argument("node_id")
    decommission = cluster_commands.add_parser(
        "decommission",
        parents=[common],
        help="take a live node out of the ring with its data: it hands its partitions over, "
        "leaves and exits",
    )
    decommission.add_argument("node_id")
    for waiter in (remove, decommission):
        waiter.add_argument(
            "--no-wait", action="store_true", help="return at once instead of showing progress"
        )
        waiter.add_argument(
            "--wait-timeout",
            type=float,
            default=3600.0,
            help="give up waiting after this many seconds (default 3600; the work goes on)",
        )
    cluster_commands.add_parser(
        "status",
        parents=[common],
        help="every member: addresses, status, keys, share of the ring, last repair",
    )
    ring = cluster_commands.add_parser(
        "ring", parents=[common], help="each node's partitions, or the owners of --key"
    )
    ring.add_argument("--key", "-k", default=None, help="print the replicas of this key")
    up = cluster_commands.add_parser("up", help="start a local cluster; Ctrl-C stops it")
    up.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    up.add_argument(
        "--replication-factor",
        type=int,
        default=None,
        help="copies per key (default min(3, nodes))",
    )
    up.add_argument("--base-dir", type=Path, default=Path("./data"), help="data and logs")
    return parser


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="backslashreplace")


def _value_json(value: bytes) -> dict[str, str]:
    try:
        return {"value": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"value_base64": base64.b64encode(value).decode()}


def _version_json(version: Version | None) -> dict[str, Any] | None:
    if version is None:
        return None
    return {"wall_ms": version.wall_ms, "logical": version.logical, "node_id": version.node_id}


def _get_json(result: GetResult) -> dict[str, Any]:
    body: dict[str, Any] = {"key": _text(result.key), "found": result.found}
    if result.found and result.value is not None:
        body.update(_value_json(result.value))
        body["version"] = _version_json(result.version)
        if result.expires_at_ms:
            body["expires_at_ms"] = result.expires_at_ms
    return body


def _entry_json(entry: Entry) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": _text(entry.key),
        **_value_json(entry.value),
        "version": _version_json(entry.version),
    }
    if entry.expires_at_ms:
        body["expires_at_ms"] = entry.expires_at_ms
    return body


async def _run(args: argparse.Namespace) -> int:
    endpoints = args.endpoint or [Address("127.0.0.1", 50051)]
    json_out = args.output == "json"
    async with Client.connect(
        endpoints,
        request_timeout=args.timeout,
        token=args.token,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    ) as client:
        if args.command == "put":
            ttl = None if args.ttl is None else timedelta(milliseconds=args.ttl)
            version = await client.put(
                args.key.encode(), args.value.encode(), args.consistency, ttl=ttl
            )
            show(
                {"key": args.key, "version": _version_json(version)}
                if json_out
                else f"OK {version}",
                json_out,
            )
        elif args.command == "get":
            result = await client.get(args.key.encode(), args.consistency)
            if json_out:
                show(_get_json(result), True)
            elif result.found and result.value is not None:
                print(_text(result.value))
            else:
                print(f"(not found) {args.key}", file=sys.stderr)
            return 0 if result.found else EXIT_NOT_FOUND
        elif args.command in ("ttl", "expire", "persist"):
            return await _expiry_command(client, args, json_out)
        elif args.command == "delete":
            version = await client.delete(args.key.encode(), args.consistency)
            show(
                {"key": args.key, "deleted": True, "version": _version_json(version)}
                if json_out
                else f"OK {version}",
                json_out,
            )
        elif args.command == "scan":
            entries = await client.scan(
                start=args.start.encode(),
                end=args.end.encode(),
                prefix=args.prefix.encode(),
                limit=args.limit,
                consistency=args.consistency,
            )
            if json_out:
                show([_entry_json(entry) for entry in entries], True)
            else:
                for entry in entries:
                    print(f"{_text(entry.key)}\t{_text(entry.value)}")
        elif args.command == "repair":
            # Loaded only by the commands that call the nodes' HTTP endpoints (it says why).
            from a3redis.tools import operator_commands

            reports = await operator_commands.repair(client, endpoints[0], args)
            if json_out:
                show(reports, True)
            elif not args.wait:
                print("repair round started")
            else:
                for r in reports:
                    print(f"{r['peer']}: {_repair_line(r)}")
        elif args.command == "cluster":
            from a3redis.tools import operator_commands

            return await operator_commands.cluster_command(client, endpoints[0], args)
    return 0


async def _expiry_command(client: Client, args: argparse.Namespace, json_out: bool) -> int:
    """`ttl`, `expire` and `persist`: exit 0, or EXIT_NOT_FOUND for a missing key
    (or, for expire and persist, when nothing changed)."""
    key = args.key.encode()
    if args.command == "ttl":
        result = await client.get(key, args.consistency)
        if not result.found:
            show({"key": args.key, "found": False} if json_out else "(not found)", json_out)
            return EXIT_NOT_FOUND
        left = result.expires_at_ms - int(time.time() * 1000) if result.expires_at_ms else None
        if json_out:
            body = {"key": args.key, "found": True, "expires_at_ms": result.expires_at_ms}
            show({**body, "ttl_ms": left}, True)
        else:
            show("(no expiry)" if left is None else format_duration(max(left, 1)), False)
        return 0
    if args.command == "expire":
        condition = Condition(args.only) if args.only else Condition.ALWAYS
        ttl = timedelta(milliseconds=args.ttl)
        changed = await client.expire(key, ttl, condition, args.consistency)
        why = "missing, or the condition was not met"
    else:
        changed = await client.persist(key, args.consistency)
        why = "missing, or it had no expiry"
    show(
        {"key": args.key, "changed": changed}
        if json_out
        else ("OK" if changed else f"(unchanged: {why})"),
        json_out,
    )
    return 0 if changed else EXIT_NOT_FOUND


def _repair_line(r: dict[str, Any]) -> str:
    if r["skipped"]:
        return f"skipped ({r['skipped']})"
    moved = r["bytes_sent"] + r["bytes_received"]
    return (
        f"compared {r['partitions']} partitions, {r['tree_nodes']} tree nodes, "
        f"{r['leaves']} leaves differed, pulled {r['keys_pulled']}, pushed {r['keys_pushed']}, "
        f"{moved} bytes in {r['seconds']:.3f}s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "token"):
        if args.token is None:
            args.token = os.environ.get("A3REDIS_TOKEN") or None
        try:
            authorization_metadata(args.token)
        except ValueError as error:
            print(f"a3redis: error: --token / A3REDIS_TOKEN: {error}", file=sys.stderr)
            return EXIT_USAGE
    if hasattr(args, "tls_ca"):
        for option in ("tls_ca", "tls_cert", "tls_key"):
            if getattr(args, option) is None:
                setattr(args, option, os.environ.get(f"A3REDIS_{option.upper()}") or None)
        if (args.tls_cert is None) != (args.tls_key is None):
            print("a3redis: error: --tls-cert and --tls-key go together", file=sys.stderr)
            return EXIT_USAGE
    if getattr(args, "timeout", 0) is None:
        waits = args.command == "repair" and args.wait
        args.timeout = REPAIR_WAIT_TIMEOUT if waits else REQUEST_TIMEOUT
    if args.command == "node" and args.interactive:
        from a3redis.tools import interactive

        try:
            return interactive.run(sys.stdin, sys.stdout, os.environ)
        except KeyboardInterrupt:
            return 130
    if args.command == "node":
        from a3redis import node

        return node.main()
    if args.command == "cluster" and args.cluster_command == "up":
        from a3redis.tools.launcher import cluster_up

        factor = args.replication_factor or min(3, args.nodes)
        if not 1 <= args.nodes <= 50 or not 1 <= factor <= args.nodes:
            print(
                "a3redis: error: need 1 <= --replication-factor <= --nodes <= 50", file=sys.stderr
            )
            return EXIT_USAGE
        return cluster_up(args.nodes, factor, args.base_dir, sys.stdout)
    if args.limit < 0 if args.command == "scan" else False:
        print("a3redis: error: --limit must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    try:
        return trio.run(_run, args)
    except ClientError as error:
        # The node's reason, for scripts that read stderr (kv.proto lists them).
        because = f" [{error.reason}]" if error.reason else ""
        print(f"a3redis: error: {error}{because}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
