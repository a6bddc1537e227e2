"""TLS on the gRPC and HTTP ports and on the links between nodes (a3redis.net.tls).

Every certificate is made at run time (tests/support/certificates.py) for 127.0.0.1.
grpcio's blocking client, plain sockets and the CLI run in worker threads so the
in-process nodes keep serving on the trio loop.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import trio
import trio.testing

from a3redis import node as node_module
from a3redis.client import Client, ClientError
from a3redis.config import Config
from a3redis.core.consistency import Consistency
from a3redis.core.replica_frames import (
    ANSWER,
    FAILURE,
    MAX_FRAME_BYTES,
    PREFACE,
    READ,
    Frame,
    FrameReader,
    parse_failure,
    request,
)
from a3redis.net import grpc_server
from a3redis.net.tls import NodeTls, make_client_context
from a3redis.tools import cli
from a3redis.v1 import kv_pb2 as pb
from a3redis.v1 import replica_pb2 as rpb
from tests.node.conftest import RunningNode, Start
from tests.support.certificates import Authority, Pair, stall_mid_handshake


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority.create(tmp_path / "ca")


def tls_env(ca: Authority, pair: Pair, **more: str) -> dict[str, str]:
    return {
        "TLS_CERT_FILE": str(pair.cert),
        "TLS_KEY_FILE": str(pair.key),
        "TLS_CA_FILE": str(ca.file),
        **more,
    }


async def start_tls_node(start_node: Start, ca: Authority, name: str, **more: str) -> RunningNode:
    pair = ca.issue(ca.file.parent / "nodes", name)
    return await start_node(NODE_ID=name, **tls_env(ca, pair, **more))


def _unary(channel: grpc.Channel, method: str, response: Any) -> Any:
    return channel.unary_unary(
        method,
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=response.FromString,
    )


def _grpcio_put_get(endpoint: str, root_certificates: bytes) -> tuple[Any, Any]:
    credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
    with grpc.secure_channel(endpoint, credentials) as channel:
        put = _unary(channel, "/a3redis.v1.KeyValue/Put", pb.PutResponse)
        get = _unary(channel, "/a3redis.v1.KeyValue/Get", pb.GetResponse)
        stored = put(pb.PutRequest(key=b"tls", value=b"works"), timeout=5)
        return stored, get(pb.GetRequest(key=b"tls"), timeout=5)


def _grpcio_code(endpoint: str, method: str, credentials: grpc.ChannelCredentials) -> Any:
    """The status code of calling `method` with an empty request (OK if it succeeded)."""
    with grpc.secure_channel(endpoint, credentials) as channel:
        call = channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
        try:
            call(b"", timeout=5)
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK


async def test_a_stock_grpcio_client_with_the_ca_puts_and_gets_and_a_wrong_ca_fails(
    start_node: Start, ca: Authority, tmp_path: Path
) -> None:
    node = await start_tls_node(start_node, ca, "node-1")
    stored, got = await trio.to_thread.run_sync(
        _grpcio_put_get, node.endpoint, ca.file.read_bytes()
    )
    assert stored.version.node_id == "node-1"
    assert got.found and got.value == b"works"

    wrong = Authority.create(tmp_path / "wrong", "wrong CA").file.read_bytes()
    with pytest.raises(grpc.RpcError) as refused:
        await trio.to_thread.run_sync(_grpcio_put_get, node.endpoint, wrong)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def _plain_text_exchange(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        plain.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00" * 64)
        answer = b""
        while chunk := plain.recv(4096):
            answer += chunk
        return answer


async def test_plain_text_to_the_tls_ports_fails_cleanly_and_the_node_lives(
    start_node: Start, ca: Authority
) -> None:
    node = await start_tls_node(start_node, ca, "node-1")
    # The server closes the connection: no HTTP/2, no gRPC status, no hang.
    assert await trio.to_thread.run_sync(_plain_text_exchange, node.ports.grpc) == b""
    with pytest.raises(grpc.RpcError) as plain_grpc:
        await trio.to_thread.run_sync(_grpcio_put_get_insecure, node.endpoint)
    assert plain_grpc.value.code() == grpc.StatusCode.UNAVAILABLE
    async with httpx.AsyncClient(trust_env=False, timeout=5) as plain_http:
        with pytest.raises(httpx.HTTPError):
            await plain_http.get(f"http://127.0.0.1:{node.ports.http}/health")
    async with Client.connect(node.endpoint, tls_ca=ca.file) as client:
        await client.put(b"still", b"alive")
        assert (await client.get(b"still")).value == b"alive"
    https = make_client_context(ca.file)
    async with httpx.AsyncClient(trust_env=False, timeout=5, verify=https) as http:
        health = await http.get(f"https://127.0.0.1:{node.ports.http}/health")
        metrics = (await http.get(f"https://127.0.0.1:{node.ports.http}/metrics")).text
    assert health.status_code == 200 and health.json()["node_id"] == "node-1"
    # The raw exchange and grpcio's plain-text call: two failed handshakes (or more: grpcio
    # may retry), counted.
    refused = 'a3redis_grpc_connections_refused_total{reason="tls_handshake"} '
    count = next(line for line in metrics.splitlines() if line.startswith(refused))
    assert float(count.removeprefix(refused)) >= 2


async def test_a_client_that_stalls_mid_handshake_is_dropped_in_bounded_time(
    start_node: Start, ca: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grpc_server, "TLS_HANDSHAKE_TIMEOUT", 0.3)
    node = await start_tls_node(start_node, ca, "node-1")
    waited = await trio.to_thread.run_sync(stall_mid_handshake, node.ports.grpc)
    assert 0.2 < waited < 3


def _frame_answer(port: int, ca: Authority, member: Pair | None) -> Frame:
    """The answer to one Read sent as a replica frame over TLS (with `member`'s certificate)."""
    context = ssl.create_default_context(cafile=str(ca.file))
    if member is not None:
        context.load_cert_chain(str(member.cert), str(member.key))
    body = rpb.ReadRequest(keys=[b"k"]).SerializeToString()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        sock.sendall(PREFACE + request(READ, 1, body))
        received = b""
        while len(received) < len(PREFACE):
            received += sock.recv(len(PREFACE) - len(received))
        assert received == PREFACE
        reader = FrameReader(MAX_FRAME_BYTES, requests=False)
        frames: list[Frame] = []
        while not frames:
            frames += reader.feed(sock.recv(65536))
        return frames[0]


def _grpcio_put_get_insecure(endpoint: str) -> Any:
    with grpc.insecure_channel(endpoint) as channel:
        put = _unary(channel, "/a3redis.v1.KeyValue/Put", pb.PutResponse)
        return put(pb.PutRequest(key=b"k", value=b"v"), timeout=5)


async def test_replica_calls_need_a_certificate_the_ca_signed(
    start_node: Start, ca: Authority, tmp_path: Path
) -> None:
    node = await start_tls_node(start_node, ca, "node-1")
    roots = ca.file.read_bytes()
    no_certificate = grpc.ssl_channel_credentials(root_certificates=roots)
    member = ca.issue(tmp_path / "member", "member")
    with_certificate = grpc.ssl_channel_credentials(
        root_certificates=roots,
        private_key=member.key.read_bytes(),
        certificate_chain=member.cert.read_bytes(),
    )
    read = "/a3redis.v1.Replica/Read"
    codes = [
        await trio.to_thread.run_sync(_grpcio_code, node.endpoint, read, credentials)
        for credentials in (no_certificate, with_certificate)
    ]
    assert codes[0] == grpc.StatusCode.UNAUTHENTICATED
    assert codes[1] != grpc.StatusCode.UNAUTHENTICATED
    # The same call as a replica frame: refused without the certificate, served with it.
    port = node.ports.grpc
    refused = await trio.to_thread.run_sync(_frame_answer, port, ca, None)
    assert refused.kind == FAILURE
    assert parse_failure(refused.body) == (
        "UNAUTHENTICATED",
        "a3redis.v1.Replica needs a client certificate signed by the cluster's CA (TLS_CA_FILE)",
    )
    served = await trio.to_thread.run_sync(_frame_answer, port, ca, member)
    assert served.kind == ANSWER
    assert len(rpb.ReadResponse.FromString(served.body).results) == 1
    # Client calls need no certificate.
    describe = "/a3redis.v1.KeyValue/Describe"
    assert (
        await trio.to_thread.run_sync(_grpcio_code, node.endpoint, describe, no_certificate)
        == grpc.StatusCode.OK
    )


async def _members(ca: Authority, node: RunningNode) -> dict[str, Any]:
    async with httpx.AsyncClient(
        trust_env=False, timeout=5, verify=make_client_context(ca.file)
    ) as http:
        answer = await http.get(f"https://127.0.0.1:{node.ports.http}/membership")
    members: dict[str, Any] = answer.json()
    return members


async def test_three_nodes_with_mutual_tls_form_a_cluster_and_serve_quorum(
    start_node: Start, ca: Authority
) -> None:
    fast = {"GOSSIP_INTERVAL": "0.05", "REPLICATION_FACTOR": "3", "JOIN_TIMEOUT": "5"}
    fast |= {"REQUEST_TIMEOUT": "1", "PEER_TIMEOUT": "0.5"}  # joins drain for their sum
    first = await start_tls_node(start_node, ca, "n1", **fast)
    others = [
        await start_tls_node(start_node, ca, name, PEERS=first.endpoint, **fast)
        for name in ("n2", "n3")
    ]
    with trio.fail_after(15):
        while True:
            views = [await _members(ca, node) for node in (first, *others)]
            if all(
                {name: view.get(name, {}).get("status") for name in ("n1", "n2", "n3")}
                == dict.fromkeys(("n1", "n2", "n3"), "alive")
                for view in views
            ):
                break
            await trio.sleep(0.05)
    async with Client.connect([node.endpoint for node in others], tls_ca=ca.file) as client:
        with trio.fail_after(15):
            while True:  # until every node has taken its place in the ring
                try:
                    await client.put(b"quorum", b"over tls", Consistency.QUORUM)
                    break
                except ClientError:
                    await trio.sleep(0.1)
        got = await client.get(b"quorum", Consistency.QUORUM)
    assert got.value == b"over tls"
    # The nodes' quorum calls went as replica frames, over TLS. A QUORUM write is
    # acknowledged by two replicas, so its Apply to n1 (only ever called, never a
    # coordinator here) may still be opening its frames connection: wait for it, bounded.
    async with httpx.AsyncClient(
        trust_env=False, timeout=5, verify=make_client_context(ca.file)
    ) as http:
        with trio.move_on_after(10):
            while True:
                metrics = (await http.get(f"https://127.0.0.1:{first.ports.http}/metrics")).text
                frames = [
                    line
                    for line in metrics.splitlines()
                    if line.startswith("a3redis_grpc_frame_con")
                ]
                if "a3redis_grpc_frame_connections_total 0.0" not in frames:
                    break
                await trio.sleep(0.1)
    assert "a3redis_grpc_frame_connections_total 0.0" not in frames, frames


async def test_a_peer_whose_certificate_the_ca_did_not_sign_never_joins(
    start_node: Start, ca: Authority, tmp_path: Path
) -> None:
    fast = {"GOSSIP_INTERVAL": "0.05", "JOIN_TIMEOUT": "0"}
    member = await start_tls_node(start_node, ca, "member", **fast)
    # The outsider trusts the cluster's CA, but its own certificate is from another.
    outsider_pair = Authority.create(tmp_path / "other", "other CA").issue(tmp_path, "outsider")
    outsider = await start_node(
        NODE_ID="outsider", PEERS=member.endpoint, **tls_env(ca, outsider_pair, **fast)
    )
    await trio.sleep(1.0)  # 20 gossip rounds
    assert "outsider" not in await _members(ca, member)
    assert outsider.config.node_id == "outsider"


async def _served_certificate(port: int, ca: Path) -> str:
    context = make_client_context(ca)
    stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=context)
    await stream.do_handshake()
    certificate: Any = stream.getpeercert()
    await stream.aclose()
    return str(dict(pair[0] for pair in certificate["subject"])["commonName"])


async def test_sighup_reloads_the_certificate_for_new_connections(
    ca: Authority, nursery: trio.Nursery, tmp_path: Path
) -> None:
    pair = ca.issue(tmp_path / "node", "node-1")
    env = {"DATA_DIR": str(tmp_path / "data"), "REPLICATION_FACTOR": "1", "FSYNC": "no"}
    env |= {"GRPC_PORT": "0", "GOSSIP_PORT": "0", "RESP_PORT": "0"}
    config = Config.from_env(tls_env(ca, pair, **env))
    assert config.tls is not None
    tls = NodeTls(config.tls)
    stop = trio.Event()
    ports = await nursery.start(partial(node_module.run_node, config, stop, tls=tls))
    nursery.start_soon(node_module._reload_on_hangup, config, None, tls)
    await trio.testing.wait_all_tasks_blocked()  # the SIGHUP receiver is listening
    async with Client.connect(f"127.0.0.1:{ports.grpc}", tls_ca=ca.file) as client:
        await client.put(b"before", b"1")
        assert await _served_certificate(ports.grpc, ca.file) == "node-1"
        assert await _served_certificate(ports.http, ca.file) == "node-1"

        # A key that does not parse: the node keeps its certificate.
        key = pair.key.read_bytes()
        pair.key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
        os.kill(os.getpid(), signal.SIGHUP)
        await trio.sleep(0.2)
        assert await _served_certificate(ports.grpc, ca.file) == "node-1"
        pair.key.write_bytes(key)

        renewed = ca.issue(tmp_path / "renewed", "node-1-renewed")
        pair.cert.write_bytes(renewed.cert.read_bytes())
        pair.key.write_bytes(renewed.key.read_bytes())
        os.kill(os.getpid(), signal.SIGHUP)
        with trio.fail_after(5):
            while await _served_certificate(ports.grpc, ca.file) != "node-1-renewed":
                await trio.sleep(0.05)
        assert await _served_certificate(ports.http, ca.file) == "node-1-renewed"
        # The connection opened before the reload still serves.
        await client.put(b"after", b"2")
        assert (await client.get(b"before")).value == b"1"
    stop.set()


async def test_client_certificates_required_when_the_node_says_so(
    start_node: Start, ca: Authority, tmp_path: Path
) -> None:
    node = await start_tls_node(start_node, ca, "node-1", TLS_REQUIRE_CLIENT_CERT="1")
    with pytest.raises(ClientError):
        async with Client.connect(node.endpoint, tls_ca=ca.file, request_timeout=0.5) as client:
            await client.put(b"k", b"v")
    user = ca.issue(tmp_path / "user", "user")
    async with Client.connect(
        node.endpoint, tls_ca=ca.file, tls_cert=user.cert, tls_key=user.key
    ) as client:
        await client.put(b"k", b"v")
        assert (await client.get(b"k")).value == b"v"


async def test_the_cli_talks_tls_with_tls_ca(
    start_node: Start, ca: Authority, capsys: pytest.CaptureFixture[str]
) -> None:
    node = await start_tls_node(start_node, ca, "node-1")
    common = ["--endpoint", node.endpoint, "--tls-ca", str(ca.file)]
    assert await trio.to_thread.run_sync(cli.main, ["put", "greeting", "hello", *common]) == 0
    assert await trio.to_thread.run_sync(cli.main, ["get", "greeting", *common]) == 0
    # A cluster command reads the HTTP endpoints: https with the same CA.
    status = ["cluster", "status", *common, "-o", "json"]
    assert await trio.to_thread.run_sync(cli.main, status) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[1] == "hello"
    assert "node-1" in json.dumps(json.loads(printed[2]))
    without = await trio.to_thread.run_sync(
        cli.main, ["get", "greeting", "--endpoint", node.endpoint, "--timeout", "1"]
    )
    assert without != 0
    half = await trio.to_thread.run_sync(cli.main, ["get", "k", "--tls-cert", str(ca.file)])
    assert half == cli.EXIT_USAGE
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err
