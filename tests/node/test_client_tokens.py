"""Client and operator tokens (CLIENT_TOKENS_FILE) on every front end of a node.

One in-process node with a tokens file is driven by a stock grpcio stub, a3redis's
Python client, its CLI, plain HTTP, redis-cli and redis-py: without a token nothing
is served, a readonly token cannot write, operator actions need an admin token. Two
node processes check what only a process shows: a bad file stops the node (exit 2,
naming the line) and SIGHUP reads the file again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import redis
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from a3redis.client import Client, ClientError
from a3redis.v1 import kv_pb2 as pb
from tests.conftest import NodeFactory
from tests.node.conftest import RunningNode, Start
from tests.support.processes import run_node_once
from tests.support.system_tools import system_command

READER = "reader-token-0123456789"
WRITER = "writer-token-0123456789"
ADMIN = "admin-token-0123456789"


def tokens_file(directory: Path, text: str | None = None) -> Path:
    path = directory / "tokens"
    path.write_text(text or f"# tests\n{READER} readonly\n{WRITER} readwrite\n{ADMIN} admin\n")
    return path


@pytest.fixture
async def node(start_node: Start, tmp_path: Path) -> RunningNode:
    return await start_node(CLIENT_TOKENS_FILE=str(tokens_file(tmp_path)))


# ----- gRPC, with a stock grpcio stub ------------------------------------------------------------


def _grpcio_call(endpoint: str, method: str, request: Any, token: str | None) -> str:
    """The status name of one KeyValue call made with grpcio (OK when it succeeded)."""
    metadata = None if token is None else (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(
            f"/a3redis.v1.KeyValue/{method}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=lambda data: data,
        )
        try:
            call(request, timeout=10, metadata=metadata)
        except grpc.RpcError as error:
            return str(error.code().name)
    return "OK"


async def test_grpc_calls_need_a_token_whose_role_allows_them(node: RunningNode) -> None:
    put = pb.PutRequest(key=b"k", value=b"v")
    get = pb.GetRequest(key=b"k")
    repair = pb.RepairRequest(wait=False)
    cases = [
        ("Get", get, None, "UNAUTHENTICATED"),
        ("Put", put, None, "UNAUTHENTICATED"),
        ("Topology", pb.TopologyRequest(), None, "UNAUTHENTICATED"),
        ("Describe", pb.DescribeRequest(), None, "OK"),  # how nodes find each other
        ("Get", get, "not-a-token-at-all-0000", "UNAUTHENTICATED"),
        ("Put", put, READER, "PERMISSION_DENIED"),
        ("Delete", pb.DeleteRequest(key=b"k"), READER, "PERMISSION_DENIED"),
        (
            "BatchPut",
            pb.BatchPutRequest(pairs=[pb.KeyValuePair(key=b"k")]),
            READER,
            "PERMISSION_DENIED",
        ),
        ("Get", get, READER, "OK"),
        ("Put", put, WRITER, "OK"),
        ("Repair", repair, WRITER, "PERMISSION_DENIED"),
        ("Repair", repair, ADMIN, "OK"),
        ("Put", put, ADMIN, "OK"),
    ]
    for method, request, token, expected in cases:
        code = await trio.to_thread.run_sync(_grpcio_call, node.endpoint, method, request, token)
        assert code == expected, (method, token)


async def test_the_python_client_sends_its_token_with_every_call(node: RunningNode) -> None:
    async with Client.connect(node.endpoint) as anonymous:
        with pytest.raises(ClientError) as refused:
            await anonymous.get(b"k")
        assert refused.value.code == "UNAUTHENTICATED"
        assert "authorization: Bearer <token>" in refused.value.message
    async with Client.connect(node.endpoint, token=READER) as reader:
        with pytest.raises(ClientError) as denied:
            await reader.put(b"k", b"v")
        assert denied.value.code == "PERMISSION_DENIED"
        assert (await reader.get(b"k")).found is False
    async with Client.connect(node.endpoint, token=WRITER) as writer:
        await writer.put(b"k", b"v")
        await writer.batch_put([(b"k2", b"v2")])
        assert [entry.key for entry in await writer.scan()] == [b"k", b"k2"]
        with pytest.raises(ClientError) as not_admin:
            await writer.repair(wait=False)
        assert not_admin.value.code == "PERMISSION_DENIED"


async def test_a_node_without_tokens_serves_clients_with_or_without_one(
    start_node: Start,
) -> None:
    plain = await start_node()
    async with Client.connect(plain.endpoint, token=READER) as client:
        await client.put(b"k", b"v")  # a token a node does not check is no role at all
        assert (await client.get(b"k")).value == b"v"


async def test_nodes_with_tokens_find_each_other_without_one(
    start_node: Start, tmp_path: Path
) -> None:
    # Gossip resolves a PEERS entry (a gRPC address) with KeyValue.Describe.
    path = str(tokens_file(tmp_path))
    first = await start_node(NODE_ID="n1", CLIENT_TOKENS_FILE=path, GOSSIP_INTERVAL="0.05")
    second = await start_node(
        NODE_ID="n2", CLIENT_TOKENS_FILE=path, GOSSIP_INTERVAL="0.05", PEERS=first.endpoint
    )
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        with trio.fail_after(10):
            while True:
                members = await http.get(f"http://127.0.0.1:{first.ports.http}/membership")
                if members.json().get("n2", {}).get("status") == "alive":
                    break
                await trio.sleep(0.05)
    assert second.config.node_id == "n2"


# ----- HTTP ------------------------------------------------------------------------------------


async def test_operator_endpoints_need_an_admin_token(node: RunningNode) -> None:
    base = f"http://127.0.0.1:{node.ports.http}"
    remove = f"{base}/api/members/node-9/remove"
    decommission = f"{base}/api/members/node-1/decommission"
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        assert (await http.get(f"{base}/health")).status_code == 200
        assert (await http.get(f"{base}/metrics")).status_code == 200  # open by default
        anonymous = await http.post(remove)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert "requires a client token" in anonymous.json()["error"]
        for url in (remove, decommission):
            writer = await http.post(url, headers={"Authorization": f"Bearer {WRITER}"})
            assert writer.status_code == 403, url
            assert "needs a admin token" in writer.json()["error"]
        admin = await http.post(remove, headers={"Authorization": f"Bearer {ADMIN}"})
        assert admin.status_code == 404  # past the check: there is no node-9


async def test_metrics_and_status_page_need_a_token_when_asked(
    start_node: Start, tmp_path: Path
) -> None:
    node = await start_node(
        CLIENT_TOKENS_FILE=str(tokens_file(tmp_path)),
        METRICS_REQUIRE_TOKEN="1",
        STATUS_REQUIRE_TOKEN="1",
    )
    base = f"http://127.0.0.1:{node.ports.http}"
    reader = {"Authorization": f"Bearer {READER}"}
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        assert (await http.get(f"{base}/health")).status_code == 200
        assert (await http.get(f"{base}/ready")).status_code in (200, 503)
        for path in ("/metrics", "/api/metrics/summary", "/", "/membership", "/api/ring"):
            assert (await http.get(f"{base}{path}")).status_code == 401, path
            assert (await http.get(f"{base}{path}", headers=reader)).status_code == 200, path


# ----- Redis front end: redis-cli and redis-py -------------------------------------------------


async def redis_cli(node: RunningNode, *args: str) -> str:
    """What redis-cli writes: standard output, then standard error."""
    command = [system_command("redis-cli"), "-p", str(node.ports.resp), *args]
    done = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
    return (done.stdout + done.stderr).decode()


async def test_redis_cli_authenticates_with_a_token(node: RunningNode) -> None:
    assert await redis_cli(node, "GET", "k") == "NOAUTH Authentication required.\n\n"
    assert await redis_cli(node, "-a", WRITER, "--no-auth-warning", "SET", "k", "v") == "OK\n"
    assert await redis_cli(node, "-a", READER, "--no-auth-warning", "GET", "k") == "v\n"
    assert await redis_cli(node, "-a", READER, "--no-auth-warning", "SET", "k", "w") == (
        "NOPERM User default has no permissions to run the 'set' command\n\n"
    )
    wrong = await redis_cli(node, "-a", "wrong-token-000000000", "--no-auth-warning", "PING")
    assert wrong == (
        "NOAUTH Authentication required.\n\n"
        "AUTH failed: WRONGPASS invalid username-password pair or user is disabled.\n"
    )


@pytest.mark.parametrize("protocol", [2, 3])
async def test_redis_py_authenticates_with_password(node: RunningNode, protocol: int) -> None:
    def connect(password: str | None) -> Any:
        # No retries: redis-py retries a refused authentication with backoff, for seconds.
        return redis.Redis(
            port=node.ports.resp, protocol=protocol, password=password, retry=Retry(NoBackoff(), 0)
        )

    def talk(password: str | None) -> Any:
        with connect(password) as client:
            return client.get("k")

    def refused(password: str | None) -> str:
        with pytest.raises(redis.exceptions.AuthenticationError) as caught:
            talk(password)
        return str(caught.value)

    assert await trio.to_thread.run_sync(talk, WRITER) is None
    # RESP2: the first command is refused; RESP3: redis-py's HELLO 3 is.
    refusal = "Authentication required" if protocol == 2 else "HELLO must be called with"
    assert refusal in await trio.to_thread.run_sync(refused, None)
    wrong = await trio.to_thread.run_sync(refused, "wrong-token-000000000")
    assert "invalid username-password pair" in wrong

    def write(password: str) -> None:
        with connect(password) as client:
            client.set("k", "v")

    with pytest.raises(redis.exceptions.NoPermissionError):
        await trio.to_thread.run_sync(write, READER)
    await trio.to_thread.run_sync(write, WRITER)


# ----- the CLI ---------------------------------------------------------------------------------


async def run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("A3REDIS_")}
    environment.update(env or {})
    return await trio.run_process(
        [sys.executable, "-m", "a3redis.tools.cli", *args],
        env=environment,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_the_cli_takes_a_token_from_its_option_or_the_environment(
    node: RunningNode,
) -> None:
    endpoint = ("--endpoint", node.endpoint)
    anonymous = await run_cli("get", "k", *endpoint)
    assert anonymous.returncode == 3 and b"UNAUTHENTICATED" in anonymous.stderr
    reader = await run_cli("put", "k", "v", *endpoint, "--token", READER)
    assert reader.returncode == 3 and b"PERMISSION_DENIED" in reader.stderr
    written = await run_cli("put", "k", "v", *endpoint, env={"A3REDIS_TOKEN": WRITER})
    assert written.returncode == 0, written.stderr
    got = await run_cli("get", "k", *endpoint, "--token", READER)
    assert (got.returncode, got.stdout) == (0, b"v\n")
    # Operator commands send it to the HTTP endpoints too.
    remove = await run_cli("cluster", "remove", "node-9", *endpoint, "--token", WRITER)
    assert remove.returncode == 3 and b"PERMISSION_DENIED" in remove.stderr
    as_admin = await run_cli("cluster", "remove", "node-9", *endpoint, "--token", ADMIN)
    assert as_admin.returncode == 3 and b"no member" in as_admin.stderr
    bad = await run_cli("get", "k", *endpoint, "--token", "has space")
    assert bad.returncode == 2 and b"printable ASCII" in bad.stderr


# ----- node processes --------------------------------------------------------------------------


def test_a_bad_tokens_file_stops_the_node_naming_the_line(tmp_path: Path) -> None:
    path = tokens_file(tmp_path, f"{READER} readonly\n\n{WRITER} owner\n")
    done = run_node_once({"CLIENT_TOKENS_FILE": str(path), "DATA_DIR": str(tmp_path / "d")})
    assert done.returncode == 2
    assert "CLIENT_TOKENS_FILE" in done.stderr and "line 3: unknown role 'owner'" in done.stderr
    assert WRITER not in done.stderr


def _status_of(endpoint: str, token: str) -> str:
    return _grpcio_call(endpoint, "Get", pb.GetRequest(key=b"k"), token)


def _eventually(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.05)


def test_sighup_reads_the_tokens_file_again(node_factory: NodeFactory, tmp_path: Path) -> None:
    path = tokens_file(tmp_path)
    node = node_factory(CLIENT_TOKENS_FILE=str(path)).start()
    assert _status_of(node.endpoint, READER) == "OK"
    newcomer = "newcomer-token-0123456789"
    path.write_text(f"{newcomer} readonly\n")
    node.signal(signal.SIGHUP)
    _eventually(lambda: _status_of(node.endpoint, newcomer) == "OK")
    assert _status_of(node.endpoint, READER) == "UNAUTHENTICATED"
    # A file that became wrong keeps the tokens the node has.
    path.write_text("short admin\n")
    node.signal(signal.SIGHUP)
    _eventually(lambda: "kept unchanged" in node.output())
    assert "line 1: the token has 5 characters" in node.output()
    assert _status_of(node.endpoint, newcomer) == "OK"
    assert node.running
