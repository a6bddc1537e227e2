"""TLS on the Redis-protocol port (a3redis.api.resp_server over ssl.MemoryBIO), with the
real clients: redis-cli --tls and redis-py's ssl connections. Certificates are made at
run time (tests/support/certificates.py) for 127.0.0.1."""

from __future__ import annotations

import socket
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis
import trio

from a3redis.api import resp_server
from tests.node.conftest import RunningNode, Start
from tests.support.certificates import Authority, stall_mid_handshake
from tests.support.node_http import parse_samples
from tests.support.system_tools import system_command


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority.create(tmp_path / "ca")


async def start_tls_node(start_node: Start, ca: Authority, **more: str) -> RunningNode:
    pair = ca.issue(ca.file.parent / "nodes", "node-1")
    return await start_node(
        NODE_ID="node-1",
        TLS_CERT_FILE=str(pair.cert),
        TLS_KEY_FILE=str(pair.key),
        TLS_CA_FILE=str(ca.file),
        **more,
    )


def tls_client(node: RunningNode, ca_file: Path) -> Any:
    return redis.Redis(port=node.ports.resp, ssl=True, ssl_ca_certs=str(ca_file), socket_timeout=10)


def cli(node: RunningNode, ca_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [system_command("redis-cli"), "--tls", "--cacert", str(ca_file)]
    command += ["-p", str(node.ports.resp), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def closed_for_tls(node: RunningNode, ca_file: Path) -> float:
    with tls_client(node, ca_file) as client:
        info = client.execute_command("INFO", "stats")
    assert info is not None
    context = ssl.create_default_context(cafile=str(ca_file))
    url = f"https://127.0.0.1:{node.ports.http}/metrics"
    with urllib.request.urlopen(url, timeout=10, context=context) as response:
        text = response.read().decode()
    key = ("a3redis_resp_connections_closed_total", (("reason", "tls"),))
    return parse_samples(text).get(key, 0.0)


async def test_redis_cli_and_redis_py_speak_tls_with_the_ca(
    start_node: Start, ca: Authority, tmp_path: Path
) -> None:
    node = await start_tls_node(start_node, ca)

    def talk() -> tuple[str, str, list[Any]]:
        stored = cli(node, ca.file, "SET", "tls-key", "tls-value").stdout
        read = cli(node, ca.file, "GET", "tls-key").stdout
        with tls_client(node, ca.file) as client:
            # A pipeline larger than one TLS record and one read, both ways.
            pipe = client.pipeline(transaction=False)
            for i in range(2000):
                pipe.set(f"p{i}", b"v" * 1000)
            pipe.get("p1999")
            answered = pipe.execute()
        return stored, read, answered

    stored, read, answered = await trio.to_thread.run_sync(talk)
    assert stored.strip() == "OK" and read.strip() == "tls-value"
    assert answered[:-1] == [True] * 2000 and answered[-1] == b"v" * 1000
    other = Authority.create(tmp_path / "other-ca")
    refused = await trio.to_thread.run_sync(lambda: cli(node, other.file, "PING"))
    assert "PONG" not in refused.stdout


def plain_text_ping(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        plain.sendall(b"PING\r\n")
        answer = b""
        while chunk := plain.recv(4096):
            answer += chunk
        return answer


async def test_plain_text_and_stalled_handshakes_are_closed_and_the_node_lives(
    start_node: Start, ca: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resp_server, "TLS_HANDSHAKE_TIMEOUT", 0.3)
    node = await start_tls_node(start_node, ca)
    answer = await trio.to_thread.run_sync(plain_text_ping, node.ports.resp)
    assert b"PONG" not in answer  # TLS alert bytes at most, never a Redis reply
    waited = await trio.to_thread.run_sync(stall_mid_handshake, node.ports.resp)
    assert 0.2 < waited < 3
    assert await trio.to_thread.run_sync(closed_for_tls, node, ca.file) >= 2


async def test_a_client_certificate_is_required_when_the_node_says_so(
    start_node: Start, ca: Authority, tmp_path: Path
) -> None:
    node = await start_tls_node(start_node, ca, TLS_REQUIRE_CLIENT_CERT="1")
    user = ca.issue(tmp_path / "user", "user")
    without = await trio.to_thread.run_sync(lambda: cli(node, ca.file, "PING"))
    with_certificate = await trio.to_thread.run_sync(
        lambda: cli(node, ca.file, "--cert", str(user.cert), "--key", str(user.key), "PING")
    )
    assert "PONG" not in without.stdout
    assert with_certificate.stdout.strip() == "PONG"
