"""Keepalive and encodings on the gRPC port, as stock gRPC clients expect (issue 19, item 5).

A grpcio client pinging every 10 s (its keepalive on, even without calls)
stays connected; one pinging every second is sent away (and reconnects),
and the bytes of what it is sent, GOAWAY ENHANCE_YOUR_CALM "too_many_pings"
as grpc core's servers send, are checked with a bare h2 client. Responses
advertise the encodings a request may use, and a request compressed with
each of them is served.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.request

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import trio

from a3redis.net.grpc_server import MAX_PING_STRIKES, PING_MIN_INTERVAL
from a3redis.net.grpc_socket import KeepalivePolicy, PingScore
from a3redis.v1 import kv_pb2 as pb
from tests.node.conftest import RunningNode

# How long the well-behaved client idles: two of its pings, and the server's answer to each.
IDLE = 23.0


async def metric(node: RunningNode, name: str) -> float:
    """A metric of the in-process node, read over HTTP from a thread (the node runs here)."""
    text = await trio.to_thread.run_sync(read_metrics, node.ports.http)
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, name
    return float(found.group(1))


def read_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def keepalive_channel(endpoint: str, every_ms: int) -> grpc.Channel:
    """A grpcio channel pinging every `every_ms`, calls or not, as long as it lives."""
    return grpc.insecure_channel(
        endpoint,
        options=[
            ("grpc.enable_http_proxy", 0),
            ("grpc.keepalive_time_ms", every_ms),
            ("grpc.keepalive_timeout_ms", 5000),
            ("grpc.keepalive_permit_without_calls", 1),
            # grpcio stops pinging after two pings without data unless told otherwise.
            ("grpc.http2.max_pings_without_data", 0),
        ],
    )


def get(channel: grpc.Channel, key: bytes) -> pb.GetResponse:
    method = channel.unary_unary(
        "/a3redis.v1.KeyValue/Get",
        request_serializer=pb.GetRequest.SerializeToString,
        response_deserializer=pb.GetResponse.FromString,
    )
    response: pb.GetResponse = method(pb.GetRequest(key=key), timeout=10)
    return response


def watch_states(channel: grpc.Channel) -> list[grpc.ChannelConnectivity]:
    states: list[grpc.ChannelConnectivity] = []
    channel.subscribe(states.append)
    return states


def idle_with_keepalive(endpoint: str, every_ms: int, idle: float) -> list[str]:
    """Call, idle for `idle` seconds while the channel pings, call again; the channel's
    connectivity states from its first READY on."""
    with keepalive_channel(endpoint, every_ms) as channel:
        states = watch_states(channel)
        get(channel, b"before")
        time.sleep(idle)
        get(channel, b"after")
        channel.unsubscribe(states.append)
    names = [state.name for state in states]
    return names[names.index("READY") :]


def pings_until_sent_away(every: float, sending: bool = False, pings: int = 100) -> int | None:
    """Under the node's policy: the ping (1-based) that gets a connection sent away when
    a client pings every `every` seconds (with the server sending between pings if
    `sending`), or None."""
    policy, score = KeepalivePolicy(PING_MIN_INTERVAL, MAX_PING_STRIKES), PingScore()
    for number in range(1, pings + 1):
        if policy.ping(score, 1000.0 + number * every, sent_since_last=sending):
            return number
    return None


def test_the_policy_welcomes_pings_every_ten_seconds_and_strikes_out_faster_ones() -> None:
    assert pings_until_sent_away(10.0) is None  # grpc-go's and grpc-java's smallest keepalive
    assert pings_until_sent_away(9.5) is None  # a client's timer a little early
    # The first ping is no strike; the (MAX_PING_STRIKES + 1)th strike sends it away.
    assert pings_until_sent_away(1.0) == MAX_PING_STRIKES + 2
    assert pings_until_sent_away(8.0) == MAX_PING_STRIKES + 2
    # While the server answers calls between pings, pings are never too many.
    assert pings_until_sent_away(0.1, sending=True) is None


async def test_a_client_pinging_every_ten_seconds_stays_connected(
    running_node: RunningNode,
) -> None:
    pings = await metric(running_node, "a3redis_grpc_pings_total")
    states = await trio.to_thread.run_sync(idle_with_keepalive, running_node.endpoint, 10_000, IDLE)
    assert states == ["READY"], states  # never dropped, never reconnected
    assert await metric(running_node, "a3redis_grpc_pings_total") - pings >= 2
    assert await metric(running_node, "a3redis_grpc_too_many_pings_total") == 0


async def test_a_client_pinging_every_second_is_told_too_many_pings(
    running_node: RunningNode,
) -> None:
    # Three strikes after the first ping, one a second: GOAWAY within about four seconds.
    states = await trio.to_thread.run_sync(
        idle_with_keepalive, running_node.endpoint, 1000, MAX_PING_STRIKES + 4
    )
    assert states[0] == "READY" and len(states) > 1, states  # sent away, then reconnected
    assert await metric(running_node, "a3redis_grpc_too_many_pings_total") == 1


def ping_until_sent_away(
    port: int, pings: int, wait: float = 2.0
) -> tuple[h2.events.ConnectionTerminated | None, bool]:
    """Ping `pings` times in a row on a bare HTTP/2 connection, then listen for `wait`
    seconds; the GOAWAY received (if any) and whether the node closed the connection."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    for number in range(pings):
        client.ping(b"%08d" % number)
    goaway = None
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(client.data_to_send())
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                return goaway, True
            if not data:
                return goaway, True
            for event in client.receive_data(data):
                if isinstance(event, h2.events.ConnectionTerminated):
                    goaway = event
    return goaway, False


async def test_the_goaway_is_enhance_your_calm_with_too_many_pings(
    running_node: RunningNode,
) -> None:
    # As many quick pings as strikes allowed (the first is no strike): welcome.
    goaway, closed = await trio.to_thread.run_sync(
        ping_until_sent_away, running_node.ports.grpc, MAX_PING_STRIKES + 1
    )
    assert goaway is None and not closed
    # One more: the third strike.
    goaway, closed = await trio.to_thread.run_sync(
        ping_until_sent_away, running_node.ports.grpc, MAX_PING_STRIKES + 2
    )
    assert isinstance(goaway, h2.events.ConnectionTerminated)
    assert goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert goaway.additional_data == b"too_many_pings"
    assert closed


def response_headers(port: int) -> dict[bytes, bytes]:
    """The response headers of one Get sent on a bare HTTP/2 connection."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/a3redis.v1.KeyValue/Get"),
        (":authority", f"127.0.0.1:{port}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    body = pb.GetRequest(key=b"k").SerializeToString()
    client.send_headers(1, headers)
    client.send_data(1, b"\x00" + len(body).to_bytes(4, "big") + body, end_stream=True)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(client.data_to_send())
        while True:
            data = sock.recv(65536)
            assert data, "the node closed the connection before answering"
            for event in client.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    return dict(event.headers)


def get_compressed(endpoint: str, compression: grpc.Compression) -> pb.GetResponse:
    with grpc.insecure_channel(endpoint, compression=compression) as channel:
        return get(channel, b"compressed")


async def test_responses_advertise_the_encodings_a_request_may_use(
    running_node: RunningNode,
) -> None:
    headers = await trio.to_thread.run_sync(response_headers, running_node.ports.grpc)
    encodings = headers[b"grpc-accept-encoding"].split(b",")
    assert encodings == [b"identity", b"deflate", b"gzip"]
    for compression in (grpc.Compression.Deflate, grpc.Compression.Gzip):
        response = await trio.to_thread.run_sync(get_compressed, running_node.endpoint, compression)
        assert not response.found
