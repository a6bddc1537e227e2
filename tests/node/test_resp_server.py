"""The Redis-protocol port of an in-process node, with the real tools: redis-cli,
redis-benchmark, redis-py (sync and asyncio), raw sockets; its limits and its drain.

Blocking clients run in a thread (`trio.to_thread`): the node serves in this one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import redis.asyncio
import trio

from a3redis.api.resp_handler import RedisCommands
from a3redis.api.resp_server import (
    MAX_READ_AHEAD,
    Answer,
    ListenerControl,
    Remainder,
    RespSettings,
    serve_resp,
)
from a3redis.client import Client
from a3redis.cluster.keyspace import Keyspace
from a3redis.config import Config
from a3redis.core import redis_pipeline
from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.core.resp_values import OK, PONG, ErrorReply, Reply
from a3redis.core.validation import Limits
from a3redis.node import bind_listener
from a3redis.storage.store import Store
from tests.node.conftest import RunningNode, Start
from tests.support.node_http import parse_samples
from tests.support.system_tools import system_command


@pytest.fixture
def start(start_node: Start) -> Start:
    """Nodes with small limits (MAX_KEY_BYTES=64, MAX_VALUE_BYTES=1000) unless told."""

    async def limited(**settings: str) -> RunningNode:
        return await start_node(**{"MAX_KEY_BYTES": "64", "MAX_VALUE_BYTES": "1000", **settings})

    return limited


@pytest.fixture
async def node(start: Start) -> RunningNode:
    return await start()


async def cli(node: RunningNode, *args: str, stdin: bytes | None = None) -> str:
    command = [system_command("redis-cli"), "-p", str(node.ports.resp), *args]
    done = await trio.run_process(command, stdin=stdin, capture_stdout=True, capture_stderr=True)
    return done.stdout.decode()


def connect(node: RunningNode) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", node.ports.resp), timeout=10)
    return raw


def read_until_closed(raw: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = bytearray()
    while chunk := raw.recv(65536):
        received += chunk
    return bytes(received)


async def metrics(node: RunningNode) -> str:
    def fetch() -> str:
        url = f"http://127.0.0.1:{node.ports.http}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text: str = response.read().decode()
            return text

    return await trio.to_thread.run_sync(fetch)


# ----- the tools ----------------------------------------------------------------------------


async def test_redis_cli_one_shot_commands(node: RunningNode) -> None:
    assert await cli(node, "SET", "greeting", "hello world") == "OK\n"
    assert await cli(node, "GET", "greeting") == "hello world\n"
    assert await cli(node, "GET", "never-set") == "\n"
    assert await cli(node, "MSET", "a", "1", "b", "2") == "OK\n"
    assert await cli(node, "MGET", "a", "nope", "b") == "1\n\n2\n"
    assert await cli(node, "DEL", "a", "nope") == "1\n"
    assert (await cli(node, "EXISTS-NOT-A-COMMAND", "x")).strip() == (
        "ERR unknown command 'EXISTS-NOT-A-COMMAND', with args beginning with: 'x'"
    )
    assert await cli(node, "-3", "GET", "greeting") == "hello world\n"  # HELLO 3 first


async def test_redis_cli_reads_commands_from_stdin(node: RunningNode) -> None:
    out = await cli(node, stdin=b"SET k1 v1\nPING\nGET k1\nECHO hi\nQUIT\n")
    assert out.split("\n")[:4] == ["OK", "PONG", "v1", "hi"]


async def test_redis_benchmark_smoke(node: RunningNode) -> None:
    command = [system_command("redis-benchmark"), "-p", str(node.ports.resp)]
    done = await trio.run_process(
        [*command, "-t", "set,get,ping", "-n", "2000", "-q"], capture_stdout=True
    )
    lines = done.stdout.decode().replace("\r", "\n")
    for test in ("PING_INLINE", "PING_MBULK", "SET", "GET"):
        assert f"{test}: " in lines and "requests per second" in lines, lines
    assert "Error from server" not in lines


# ----- redis-py ----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
async def test_redis_py_sync(node: RunningNode, protocol: int) -> None:
    def talk() -> list[Any]:
        with redis.Redis(port=node.ports.resp, protocol=protocol) as r:
            r.set("key", b"\x00binary\r\nvalue")
            r.mset({"k1": "1", "k2": "2"})
            return [r.ping(), r.get("key"), r.mget("k1", "missing", "k2"), r.delete("k1", "k2")]

    assert await trio.to_thread.run_sync(talk) == [
        True,
        b"\x00binary\r\nvalue",
        [b"1", None, b"2"],
        2,
    ]


async def test_redis_py_asyncio(node: RunningNode) -> None:
    async def talk() -> list[Any]:
        r = redis.asyncio.Redis(port=node.ports.resp)  # RESP3 by default in redis-py 8
        try:
            await r.set("async", "yes")
            return [await r.get("async"), await r.echo("hi")]
        finally:
            await r.aclose()

    result = await trio.to_thread.run_sync(lambda: asyncio.run(talk()))
    assert result == [b"yes", b"hi"]


async def test_a_pipeline_of_10000_commands(start: Start) -> None:
    """redis-py writes the whole pipeline before it reads: more replies than the socket
    buffers hold wait meanwhile, and the node must go on reading or both sides would wait
    for ever."""
    node = await start(MAX_VALUE_BYTES="10000")
    value = b"v" * 8000

    def talk() -> list[Any]:
        with redis.Redis(port=node.ports.resp, socket_timeout=30) as r:
            pipe = r.pipeline(transaction=False)
            for i in range(5000):
                pipe.set(f"p:{i}", value + str(i).encode())
                pipe.get(f"p:{i}")
            replies: list[Any] = pipe.execute()
            return replies

    replies = await trio.to_thread.run_sync(talk)
    assert replies[0::2] == [True] * 5000
    assert replies[1::2] == [value + str(i).encode() for i in range(5000)]


async def test_a_key_set_over_resp_is_read_over_grpc_and_back(node: RunningNode) -> None:
    assert await cli(node, "SET", "from-resp", "r") == "OK\n"
    async with Client.connect(node.endpoint) as client:
        assert (await client.get(b"from-resp")).value == b"r"
        await client.put(b"from-grpc", b"g")
        await client.delete(b"from-resp")
    assert await cli(node, "MGET", "from-grpc", "from-resp") == "g\n\n"


# ----- raw bytes ---------------------------------------------------------------------------


async def test_inline_commands_over_a_raw_socket(node: RunningNode) -> None:
    def talk() -> bytes:
        with connect(node) as raw:
            raw.sendall(b"PING\r\nSET inline yes\r\nGET inline\r\nQUIT\r\n")
            return read_until_closed(raw)

    assert await trio.to_thread.run_sync(talk) == b"+PONG\r\n+OK\r\n$3\r\nyes\r\n+OK\r\n"


async def test_a_protocol_error_answers_the_requests_before_it_then_closes(
    node: RunningNode,
) -> None:
    def talk() -> bytes:
        with connect(node) as raw:
            raw.sendall(b"*1\r\n$4\r\nPING\r\nECHO one\r\n*1\r\n$x\r\nPING\r\n*1\r\n$4\r\nPING\r\n")
            return read_until_closed(raw)

    received = await trio.to_thread.run_sync(talk)
    assert received.startswith(b"+PONG\r\n$3\r\none\r\n-ERR Protocol error: "), received
    assert received.endswith(b"\r\n") and received.count(b"\r\n") == 4  # nothing after it
    closed = 'a3redis_resp_connections_closed_total{reason="protocol_error"} 1.0'
    assert closed in await metrics(node)


async def test_a_protocol_error_after_writes_comes_once_they_are_durable(
    node: RunningNode,
) -> None:
    # The SETs wait for their commit; their replies and then the error must still
    # come, though the client sends nothing more.
    def talk() -> bytes:
        with connect(node) as raw:
            raw.sendall(b"SET pe-a 1\r\nSET pe-b 2\r\n*1\r\n$x\r\n")
            return read_until_closed(raw)

    received = await trio.to_thread.run_sync(talk)
    assert received.startswith(b"+OK\r\n+OK\r\n-ERR Protocol error: "), received
    assert received.count(b"\r\n") == 3  # nothing after it


async def test_a_bulk_longer_than_any_key_or_value_is_a_protocol_error(node: RunningNode) -> None:
    def talk() -> bytes:
        with connect(node) as raw:
            raw.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1001\r\n")
            return read_until_closed(raw)

    assert (await trio.to_thread.run_sync(talk)).startswith(b"-ERR Protocol error: ")


# ----- limits ------------------------------------------------------------------------------


async def test_connections_over_the_limit_are_told_and_closed(start: Start) -> None:
    node = await start(RESP_MAX_CONNECTIONS="2")

    def talk() -> tuple[bytes, bytes]:
        with connect(node) as first, connect(node) as second:
            for held in (first, second):
                held.sendall(b"PING\r\n")
                assert held.recv(100) == b"+PONG\r\n"
            with connect(node) as third:
                refused = read_until_closed(third)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # once the node has seen the two close: room again
            with connect(node) as again:
                again.sendall(b"PING\r\n")
                answer = again.recv(100)
            if answer == b"+PONG\r\n":
                break
            time.sleep(0.05)
        return refused, answer

    refused, answer = await trio.to_thread.run_sync(talk)
    assert refused == b"-ERR max number of clients reached\r\n"
    assert answer == b"+PONG\r\n"
    assert 'a3redis_resp_connections_refused_total{reason="over_limit"}' in await metrics(node)


async def test_an_idle_connection_is_closed_after_the_idle_timeout(start: Start) -> None:
    node = await start(RESP_IDLE_TIMEOUT="0.5")

    def talk() -> tuple[bytes, float, bytes]:
        with connect(node) as idle, connect(node) as busy:
            began = time.monotonic()
            idle.sendall(b"PING\r\n")
            for _ in range(8):  # the busy one talks every 0.2 s: never idle for 0.5 s
                busy.sendall(b"PING\r\n")
                assert busy.recv(100) == b"+PONG\r\n"
                time.sleep(0.2)
            closed = read_until_closed(idle)
            waited = time.monotonic() - began
            busy.sendall(b"PING\r\n")
            return closed, waited, busy.recv(100)

    closed, waited, still = await trio.to_thread.run_sync(talk)
    assert closed == b"+PONG\r\n"  # then closed by the server (read_until_closed returned)
    assert waited >= 0.5
    assert still == b"+PONG\r\n"
    assert 'a3redis_resp_connections_closed_total{reason="idle"} 1.0' in await metrics(node)


async def test_a_client_that_never_reads_is_closed_and_the_node_lives(start: Start) -> None:
    node = await start(RESP_MAX_REPLY_BUFFER=str(1024 * 1024))
    assert await cli(node, "SET", "big", "x" * 1000) == "OK\n"

    def flood() -> int:
        """Pipeline GETs of a 1000-byte value and never read; how many bytes went out."""
        request = b"GET big\r\n" * 1000
        sent = 0
        with connect(node) as raw:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.settimeout(5)
            try:
                for _ in range(100_000):  # 100 M of replies at most: far past the buffer
                    raw.sendall(request)
                    sent += len(request)
            except OSError:  # reset or timed out: the server closed or stopped reading
                pass
        return sent

    sent = await trio.to_thread.run_sync(flood)
    assert sent < 100_000 * 9000
    text = await metrics(node)
    assert 'a3redis_resp_connections_closed_total{reason="reply_buffer"} 1.0' in text
    assert "a3redis_resp_reply_buffered_bytes 0.0" in text
    assert await cli(node, "GET", "big") == "x" * 1000 + "\n"


async def test_commands_are_counted_in_metrics(node: RunningNode) -> None:
    await cli(node, "SET", "m", "1")
    await cli(node, "GET", "m")
    await cli(node, "GET")  # wrong number of arguments: an error
    await cli(node, "NOPE")
    text = await metrics(node)
    assert 'a3redis_resp_commands_total{command="SET",result="ok"} 1.0' in text
    assert 'a3redis_resp_commands_total{command="GET",result="ok"} 1.0' in text
    assert 'a3redis_resp_commands_total{command="GET",result="error"} 1.0' in text
    assert 'a3redis_resp_commands_total{command="unknown",result="error"} 1.0' in text
    assert 'a3redis_resp_command_seconds_count{command="GET"} 2.0' in text
    assert "a3redis_resp_connections_accepted_total 4.0" in text

    def summary() -> dict[str, Any]:
        url = f"http://127.0.0.1:{node.ports.http}/api/metrics/summary"
        with urllib.request.urlopen(url, timeout=10) as response:
            body: dict[str, Any] = json.load(response)
            return body

    operations = (await trio.to_thread.run_sync(summary))["operations"]  # the status page's
    assert operations["RESP GET"]["count"] == 2 and operations["RESP SET"]["count"] == 1


async def test_an_idle_connection_is_closed_when_the_node_stops(start: Start) -> None:
    node = await start()
    raw = connect(node)
    raw.sendall(b"PING\r\n")
    assert await trio.to_thread.run_sync(raw.recv, 100) == b"+PONG\r\n"
    began = trio.current_time()
    node.stop.set()
    with raw:
        assert await trio.to_thread.run_sync(read_until_closed, raw) == b""
    assert trio.current_time() - began < node.config.shutdown_grace


# ----- the listener with a recording handler, and the interim handler's batches --------------


@dataclass
class RecordedSession:
    client_id: int
    peer: str
    protocol: int = 2
    closing: bool = False


class Recorder:
    """A handler that answers each request with its last argument and records each run."""

    def __init__(self) -> None:
        self.runs: list[list[list[bytes]]] = []
        self.sessions_to_fail = 0  # so many new sessions fail (a bug in the command layer)

    def bind(self, listener: ListenerControl) -> None:
        self.listener = listener

    def new_session(self, client_id: int, peer: str) -> RecordedSession:
        if self.sessions_to_fail:
            self.sessions_to_fail -= 1
            raise RuntimeError("a bug in setting up a session")
        return RecordedSession(client_id, peer)

    def start(
        self, session: RecordedSession, requests: list[list[bytes]], answer: Answer
    ) -> list[Reply] | Remainder | None:
        """Answers at once, through `answer` (LATER), or after a wait in a task (SLOW)."""
        self.runs.append(requests)
        replies: list[Reply] = [request[-1] for request in requests]
        if requests[0][0] == b"CRASH":
            raise RuntimeError("a bug in the command layer")
        if requests[0][0] == b"LATER":
            answer(replies)  # before `start` returns: the listener must cope
            return None
        if requests[0][0] == b"SLOW":

            async def slowly() -> list[Reply]:
                await trio.sleep(0.5)
                return replies

            return slowly
        return replies


@pytest.fixture
async def recorded(nursery: trio.Nursery) -> AsyncIterator[tuple[Recorder, int, trio.Event]]:
    listener = bind_listener("127.0.0.1", 0, "RESP_PORT")
    recorder = Recorder()
    settings = RespSettings(10, 0.0, 1024 * 1024, 1.0)
    stop = trio.Event()
    await nursery.start(serve_resp, listener, recorder, settings, stop)
    yield recorder, listener.getsockname()[1], stop
    stop.set()


async def test_requests_that_arrive_together_are_one_run_answered_in_order(
    recorded: tuple[Recorder, int, trio.Event],
) -> None:
    recorder, port, _ = recorded

    def talk() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"ECHO a\r\n*2\r\n$4\r\nECHO\r\n$1\r\nb\r\nECHO c\r\n")
            received = b""
            while len(received) < 21:
                received += raw.recv(100)
            return received

    assert await trio.to_thread.run_sync(talk) == b"$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
    assert recorder.runs == [[[b"ECHO", b"a"], [b"ECHO", b"b"], [b"ECHO", b"c"]]]


async def test_the_replies_of_one_pass_leave_in_one_send_per_connection(
    recorded: tuple[Recorder, int, trio.Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three runs read in one pass (RESET is a run of its own) are answered together:
    one send carries the three replies, in order."""
    recorder, port, _ = recorded
    sent: list[bytes] = []
    send = socket.socket.send

    def recorded_send(sock: socket.socket, data: Any, *flags: int) -> int:
        sent.append(bytes(data))
        return send(sock, data, *flags)

    monkeypatch.setattr(socket.socket, "send", recorded_send)
    expected = b"$1\r\na\r\n$5\r\nRESET\r\n$1\r\nb\r\n"

    def talk() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"ECHO a\r\nRESET\r\nECHO b\r\n")
            received = b""
            while len(received) < len(expected):
                received += raw.recv(100)
            return received

    assert await trio.to_thread.run_sync(talk) == expected
    assert recorder.runs == [[[b"ECHO", b"a"]], [[b"RESET"]], [[b"ECHO", b"b"]]]
    assert [data for data in sent if b"RESET" in data or b"$1" in data] == [expected]


async def test_replies_are_sent_without_waiting_for_acknowledgements(
    recorded: tuple[Recorder, int, trio.Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nagle's algorithm is off on a client's connection (as Redis has it): a reply
    never waits for the client to acknowledge the one before."""
    _, port, _ = recorded
    nodelay: list[int] = []
    send = socket.socket.send

    def checked_send(sock: socket.socket, data: Any, *flags: int) -> int:
        if sock.family == socket.AF_INET:  # not trio's own wake-up socket pair
            nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return send(sock, data, *flags)

    monkeypatch.setattr(socket.socket, "send", checked_send)

    def talk() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"ECHO a\r\n")
            return raw.recv(100)

    assert await trio.to_thread.run_sync(talk) == b"$1\r\na\r\n"
    assert nodelay and all(nodelay)


async def test_runs_answered_at_once_later_and_in_a_task_keep_a_connections_order(
    recorded: tuple[Recorder, int, trio.Event],
) -> None:
    """Each way a handler can answer a run (its replies, the callback, even before `start`
    returns, and an awaited remainder), then the next run of the same connection."""
    recorder, port, _ = recorded

    def talk() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            received = b""
            for request, reply in (
                (b"LATER a\r\n", b"$1\r\na\r\n"),
                (b"SLOW b\r\n", b"$1\r\nb\r\n"),
                (b"ECHO c\r\n", b"$1\r\nc\r\n"),
                (b"LATER d\r\nSLOW e\r\n", b"$1\r\nd\r\n$1\r\ne\r\n"),
            ):
                raw.sendall(request)
                expected = len(received) + len(reply)
                while len(received) < expected:
                    received += raw.recv(100)
            return received

    received = await trio.to_thread.run_sync(talk)
    assert received == b"$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n$1\r\ne\r\n"
    assert len(recorder.runs) == 4


async def test_input_sent_while_a_run_is_in_flight_is_read_ahead_and_run_in_order(
    recorded: tuple[Recorder, int, trio.Event],
) -> None:
    """A client that keeps writing while its run waits: the listener reads ahead (past
    MAX_READ_AHEAD it stops reading until the run is answered), then runs it all in order."""
    recorder, port, _ = recorded
    count = 3 * MAX_READ_AHEAD // len(b"ECHO 1234567\r\n")
    expected = b"$1\r\na\r\n" + count * b"$7\r\n1234567\r\n"

    def talk() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"SLOW a\r\n")
            for _ in range(1000):  # until the SLOW run is in flight (at most 10 s)
                if recorder.runs:
                    break
                time.sleep(0.01)
            sender = threading.Thread(target=raw.sendall, args=(count * b"ECHO 1234567\r\n",))
            sender.start()
            received = bytearray()
            while len(received) < len(expected):
                chunk = raw.recv(1 << 16)
                if not chunk:
                    break
                received += chunk
            sender.join(10)
            return bytes(received)

    assert await trio.to_thread.run_sync(talk) == expected
    assert recorder.runs[0] == [[b"SLOW", b"a"]]
    assert sum(len(run) for run in recorder.runs) == 1 + count


async def test_a_failing_handler_answers_an_error_and_closes(
    recorded: tuple[Recorder, int, trio.Event],
) -> None:
    _, port, _ = recorded

    def talk() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"CRASH\r\n")
            return read_until_closed(raw)

    assert await trio.to_thread.run_sync(talk) == b"-ERR internal error; closing the connection\r\n"


async def test_a_connection_whose_session_cannot_be_set_up_is_closed_and_others_are_served(
    recorded: tuple[Recorder, int, trio.Event],
) -> None:
    recorder, port, _ = recorded
    recorder.sessions_to_fail = 1

    def talk() -> tuple[bytes, bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            refused = read_until_closed(raw)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"ECHO a\r\n")
            return refused, raw.recv(100)

    assert await trio.to_thread.run_sync(talk) == (b"", b"$1\r\na\r\n")
    assert recorder.sessions_to_fail == 0


async def test_a_run_in_flight_when_the_node_stops_is_answered_then_closed(
    recorded: tuple[Recorder, int, trio.Event],
) -> None:
    recorder, port, stop = recorded
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with raw:
        raw.sendall(b"SLOW done\r\n")
        while not recorder.runs:
            await trio.sleep(0.01)
        stop.set()
        received = await trio.to_thread.run_sync(read_until_closed, raw)
    assert received == b"$4\r\ndone\r\n"


class CountingKeyspace:
    """The part of Keyspace the command handler uses for GET and SET, counting batches."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.data: dict[bytes, bytes] = {}
        self.calls: list[tuple[str, list[Any]]] = []

    def wall_ms(self) -> int:
        return 1_700_000_000_000

    def batch_get_then(
        self, keys: list[bytes], consistency: None, done: Callable[[Any], None]
    ) -> None:
        self.calls.append(("get", list(keys)))
        version = Version(1, 0, "node-1")
        done(
            [None if key not in self.data else Record(key, self.data[key], version) for key in keys]
        )

    def batch_write_then(
        self,
        writes: list[tuple[bytes, bytes | None]],
        consistency: None,
        done: Callable[[Any], None],
        expiries: Any = None,
    ) -> None:
        assert expiries is None  # these tests write without expiries
        self.calls.append(("put", list(writes)))
        for key, value in writes:
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        done([Version(2, 0, "node-1")] * len(writes))


def answered_at_once(handler: RedisCommands, requests: list[list[bytes]]) -> list[Reply]:
    """The replies of a run of key commands on a keyspace that answers at once."""
    replies = handler.start(handler.new_session(1, "test"), requests, lambda _: None)
    assert isinstance(replies, list), replies
    return replies


def commands_on(keyspace: CountingKeyspace, tmp_path: Path) -> RedisCommands:
    config = Config.from_env({"DATA_DIR": str(tmp_path)})
    config = dataclasses.replace(config, limits=keyspace.limits)
    return RedisCommands(
        cast(Keyspace, keyspace), cast(Store, None), config, config.resp_address, dict
    )


async def test_consecutive_reads_and_writes_become_one_batch_each(tmp_path: Path) -> None:
    keyspace = CountingKeyspace(Limits(max_key_bytes=8))
    handler = commands_on(keyspace, tmp_path)
    replies = answered_at_once(
        handler,
        [
            [b"SET", b"a", b"1"],
            [b"mset", b"b", b"2", b"c", b"3"],
            [b"GET", b"a"],
            [b"GET", b"much-too-long"],  # its own error, left out of the batch
            [b"MGET", b"b", b"x", b"c"],
            [b"PING"],
            [b"GET", b"c"],
        ],
    )
    assert replies[:3] == [OK, OK, b"1"]
    assert isinstance(replies[3], ErrorReply) and "MAX_KEY_BYTES=8" in replies[3].text
    assert replies[4:] == [[b"2", None, b"3"], PONG, b"3"]
    assert keyspace.calls == [
        ("put", [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]),
        ("get", [b"a", b"b", b"x", b"c"]),
    ]


async def test_the_writes_clients_start_in_one_turn_share_one_plan_and_each_gets_its_answer(
    node: RunningNode,
) -> None:
    async def plans() -> float:
        return parse_samples(await metrics(node))[("a3redis_write_plans_total", ())]

    clients = [connect(node) for _ in range(20)]
    try:
        await trio.sleep(0.3)  # the node accepts them
        before = await plans()
        # Sent without yielding to the node's loop (it runs in this thread): every
        # request is waiting when its reactor next looks, so they start in one turn.
        for number, raw in enumerate(clients):
            raw.sendall(b"SET shared-%d value-%d\r\n" % (number, number))

        def replies() -> list[bytes]:
            return [raw.recv(100) for raw in clients]

        assert await trio.to_thread.run_sync(replies) == [b"+OK\r\n"] * 20
        assert await plans() == before + 1
        clients[0].sendall(b"MGET " + b" ".join(b"shared-%d" % n for n in range(20)) + b"\r\n")
        expected = b"*20\r\n" + b"".join(
            b"$%d\r\nvalue-%d\r\n" % (len(b"value-%d" % n), n) for n in range(20)
        )

        def read_all() -> bytes:
            received = b""
            while len(received) < len(expected):
                received += clients[0].recv(65536)
            return received

        assert await trio.to_thread.run_sync(read_all) == expected
    finally:
        for raw in clients:
            raw.close()


async def test_batches_are_cut_at_the_batch_limit(tmp_path: Path) -> None:
    keyspace = CountingKeyspace(Limits(max_batch_keys=3))
    handler = commands_on(keyspace, tmp_path)
    requests = [[b"GET", b"k%d" % i] for i in range(5)]
    assert answered_at_once(handler, requests) == [None] * 5
    assert keyspace.calls == [("get", [b"k0", b"k1", b"k2"]), ("get", [b"k3", b"k4"])]


async def test_redis_commands_count_as_traffic_for_the_pace_of_copying(node: RunningNode) -> None:
    url = f"http://127.0.0.1:{node.ports.http}/api/transition"

    def pace() -> dict[str, Any]:
        with urllib.request.urlopen(url, timeout=10) as response:
            body: dict[str, Any] = json.load(response)
            return body["pace"]  # type: ignore[no-any-return]

    def talk_for(seconds: float) -> None:
        with connect(node) as raw:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                raw.sendall(b"GET k\r\n")
                assert raw.recv(100) == b"$-1\r\n"

    await trio.to_thread.run_sync(talk_for, 1.5)
    busy = await trio.to_thread.run_sync(pace)
    assert busy["busy"] is True and busy["requests_per_second"] > 20


async def test_client_reply_off_sends_nothing_until_on_and_quit_answers_ok(
    node: RunningNode,
) -> None:
    port = node.ports.resp

    def talk() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(
                b"CLIENT REPLY OFF\r\nSET a 1\r\nGET a\r\nCLIENT REPLY ON\r\nGET a\r\n"
                b"QUIT\r\nGET a\r\n"
            )
            return read_until_closed(raw)

    assert await trio.to_thread.run_sync(talk) == b"+OK\r\n$1\r\n1\r\n+OK\r\n"


async def test_each_reply_is_written_in_the_protocol_in_force_when_it_was_made(
    node: RunningNode,
) -> None:
    port = node.ports.resp

    def talk() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"GET nil\r\nHELLO 3\r\nGET nil\r\nHELLO 2\r\nGET nil\r\nQUIT\r\n")
            return read_until_closed(raw)

    received = await trio.to_thread.run_sync(talk)
    assert received.startswith(b"$-1\r\n%")  # RESP2 null, then HELLO 3's RESP3 map
    after_hello3 = received.index(b"_\r\n")  # the RESP3 null of the second GET
    assert received[after_hello3 + 3 :].startswith(b"*")  # HELLO 2 answers a RESP2 array
    assert received.endswith(b"$-1\r\n+OK\r\n")


async def test_a_run_whose_replies_cannot_be_made_is_answered_with_an_error_and_closed(
    node: RunningNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in making a run's replies (here: on the path that answers without waiting)
    must not leave the client waiting: it is told, and the connection closes."""

    def broken(self: redis_pipeline.Plan, *results: object) -> list[Reply]:
        raise RuntimeError("a bug in the replies")

    # Every kind of plan: a lone GET has its own (the planner's lane), a pipeline the other.
    for kind in (redis_pipeline.Plan, *redis_pipeline.Plan.__subclasses__()):
        monkeypatch.setattr(kind, "replies", broken)

    def talk(requests: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", node.ports.resp), timeout=10) as raw:
            raw.sendall(requests)
            return read_until_closed(raw)

    for requests in (b"GET some-key\r\n", b"GET some-key\r\nGET other-key\r\n"):
        answer = await trio.to_thread.run_sync(talk, requests)
        assert answer == b"-ERR internal error; closing the connection\r\n"
