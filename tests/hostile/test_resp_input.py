"""Hostile bytes on the Redis-protocol port never crash a node (issue #16).

Against a real node process: each payload is answered (an error, a protocol
error and a close, or nothing until the client goes), and afterwards the node
still answers on every port.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest

from tests.support.processes import NodeProcess

TIMEOUT = 5.0

PAYLOADS = [
    pytest.param(b"*99999999999\r\n", id="multibulk-count-over-the-limit"),
    pytest.param(b"*1\r\n$99999999999\r\n", id="bulk-length-over-the-limit"),
    pytest.param(b"*1\r\n$-5\r\nPING\r\n", id="negative-bulk-length"),
    pytest.param(b"*2\r\n*1\r\n$4\r\nPING\r\n", id="nested-array"),
    pytest.param(b"*1\r\n$4\r\nPINGxx", id="bulk-without-its-crlf"),
    pytest.param(b"*" + b"9" * 5000 + b"\r\n", id="a-number-of-5000-digits"),
    pytest.param(b"x" * (128 * 1024), id="an-inline-line-without-end"),
    pytest.param(b'SET "unbalanced quote\r\n', id="inline-unbalanced-quotes"),
    pytest.param(b"HELLO 4\r\nHELLO 99999999999999999999\r\n", id="hello-bad-versions"),
    pytest.param(b"GET\r\nMGET\r\nSET k\r\nDEL\r\n", id="wrong-arities"),
    pytest.param(b"\x00\xff\xfe\r\n\r\n\r\n", id="binary-inline"),
    pytest.param(b"GET " + b"k" * 100_000 + b"\r\n", id="a-key-over-the-key-limit"),
]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    # One node for the module: the point is that it survives all of them in turn.
    directory = tmp_path_factory.mktemp("resp-hostile")
    env = {"REPLICATION_FACTOR": "1", "FSYNC": "no"}
    node = NodeProcess(directory / "data", directory / "node.log", env)
    try:
        yield node.start()
    finally:
        node.kill()


def exchange(node: NodeProcess, payload: bytes, quiet: float = 0.5) -> bytes:
    """Send `payload` and read what comes back until the node closes or is `quiet` seconds."""
    with socket.create_connection((node.host, node.resp_port), timeout=TIMEOUT) as raw:
        try:
            raw.sendall(payload)
        except OSError:
            return b""  # the node closed first: it had read enough to refuse
        raw.settimeout(quiet)
        received = bytearray()
        try:
            while chunk := raw.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return bytes(received)


def assert_alive(node: NodeProcess) -> None:
    assert node.running
    assert exchange(node, b"PING\r\nSET alive yes\r\nGET alive\r\n").startswith(
        b"+PONG\r\n+OK\r\n$3\r\nyes\r\n"
    )
    assert node.health() is not None


@pytest.mark.parametrize("payload", PAYLOADS)
def test_hostile_requests_are_refused_and_the_node_lives(node: NodeProcess, payload: bytes) -> None:
    answer = exchange(node, payload)
    assert answer == b"" or answer.startswith((b"-", b"+", b"$", b"*", b"%", b":"))
    assert b"Traceback" not in answer
    assert_alive(node)


def test_random_bytes_never_crash_the_node(node: NodeProcess) -> None:
    rng = random.Random(16)
    alphabet = b"*$\r\n0123456789-+:PINGSETGET \x00\xff"
    for _ in range(200):
        size = rng.randint(1, 200)
        blob = bytes(rng.choice(alphabet) for _ in range(size))
        exchange(node, blob, quiet=0.01)
    assert_alive(node)
