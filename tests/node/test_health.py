"""The gRPC Health service of an in-process node, called with grpcio (in worker threads).

Check answers the node's status for "" and the KeyValue service and NOT_FOUND for
any other name, with no client token even when the node requires one; Watch sends
the status now and NOT_SERVING when the node stops; watchers are capped. The stock
grpcio-health-checking client is exercised against a node process in
tests/node/test_stock_clients.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trio

from a3redis.api import health as health_shell
from a3redis.api.grpc_services import _undecoded
from a3redis.core.health import NodeCondition, WatchSlots
from a3redis.net import grpc_server
from a3redis.net.grpc_server import RequestGate
from a3redis.v1 import health_pb2 as hpb
from tests.node.conftest import RunningNode, Start

SERVING = hpb.HealthCheckResponse.SERVING
NOT_SERVING = hpb.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = hpb.HealthCheckResponse.SERVICE_UNKNOWN


def _check(endpoint: str, service: str) -> tuple[Any, Any]:
    """(status, None) or (None, the grpc status code) of one Check."""
    with grpc.insecure_channel(endpoint) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=hpb.HealthCheckResponse.FromString,
        )
        try:
            return check(hpb.HealthCheckRequest(service=service), timeout=5).status, None
        except grpc.RpcError as error:
            return None, error.code()


def _watch(endpoint: str, service: str, seen: list[int], first: threading.Event) -> Any:
    """Watch until the server ends the stream; the statuses go to `seen`; its end code."""
    with grpc.insecure_channel(endpoint) as channel:
        watch = channel.unary_stream(
            "/grpc.health.v1.Health/Watch",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=hpb.HealthCheckResponse.FromString,
        )
        try:
            for answer in watch(hpb.HealthCheckRequest(service=service), timeout=20):
                seen.append(answer.status)
                first.set()
        except grpc.RpcError as error:
            first.set()
            return error.code()
        return grpc.StatusCode.OK


async def test_check_answers_serving_for_the_node_and_the_key_value_service(
    running_node: RunningNode,
) -> None:
    for service in ("", "a3redis.v1.KeyValue"):
        assert await trio.to_thread.run_sync(_check, running_node.endpoint, service) == (
            SERVING,
            None,
        )


async def test_check_on_an_unknown_service_is_not_found(running_node: RunningNode) -> None:
    for service in ("a3redis.v1.Replica", "no.such.Service"):
        _, code = await trio.to_thread.run_sync(_check, running_node.endpoint, service)
        assert code == grpc.StatusCode.NOT_FOUND


async def test_check_needs_no_client_token(start_node: Start, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("reader-token-0123456789 readonly\n")
    node = await start_node(CLIENT_TOKENS_FILE=str(tokens))
    assert await trio.to_thread.run_sync(_check, node.endpoint, "") == (SERVING, None)


async def test_watch_sends_serving_then_not_serving_when_the_node_stops(
    running_node: RunningNode,
) -> None:
    seen: list[int] = []
    first = threading.Event()
    async with trio.open_nursery() as nursery:
        result: list[Any] = []

        async def watch(service: str) -> None:
            result.append(
                await trio.to_thread.run_sync(_watch, running_node.endpoint, service, seen, first)
            )

        nursery.start_soon(watch, "")
        with trio.fail_after(10):
            while not first.is_set():
                await trio.sleep(0.01)
        assert seen == [SERVING]
        running_node.stop.set()
    assert seen == [SERVING, NOT_SERVING]
    assert result == [grpc.StatusCode.OK]


async def test_watch_on_an_unknown_service_says_so_and_stays_open(
    running_node: RunningNode,
) -> None:
    seen: list[int] = []
    first = threading.Event()
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            await trio.to_thread.run_sync(
                _watch, running_node.endpoint, "no.such.Service", seen, first
            )

        nursery.start_soon(watch)
        with trio.fail_after(10):
            while not first.is_set():
                await trio.sleep(0.01)
        await trio.sleep(0.3)
        assert seen == [SERVICE_UNKNOWN]
        running_node.stop.set()


# ----- the shell's watchers, on a fake node condition -------------------------------------------


@pytest.fixture
def condition() -> Iterator[list[NodeCondition]]:
    yield [NodeCondition(joining=True, draining=False, store_failed=False)]


async def _collect(service: health_shell.HealthService, into: list[int]) -> None:
    async for answer in service.Watch(_request("")):
        into.append(answer.status)


def _request(name: str) -> Any:
    undecoded = _undecoded(hpb.HealthCheckRequest)()
    undecoded.ParseFromString(hpb.HealthCheckRequest(service=name).SerializeToString())
    return undecoded


async def test_a_watcher_sees_each_change_and_the_slot_is_given_back(
    condition: list[NodeCondition], autojump_clock: trio.testing.MockClock
) -> None:
    stop = trio.Event()
    slots = WatchSlots(limit=1)
    service = health_shell.HealthService(lambda: condition[0], RequestGate(), stop, slots)
    seen: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(service.watch_changes)
        nursery.start_soon(_collect, service, seen)
        await trio.sleep(1)
        assert seen == [NOT_SERVING]
        condition[0] = NodeCondition(joining=False, draining=False, store_failed=False)
        await trio.sleep(1)
        assert seen == [NOT_SERVING, SERVING]
        condition[0] = NodeCondition(joining=False, draining=False, store_failed=True)
        await trio.sleep(1)
        assert seen == [NOT_SERVING, SERVING, NOT_SERVING]
        condition[0] = NodeCondition(joining=False, draining=False, store_failed=False)
        await trio.sleep(1)
        # A second watcher is refused while the first holds the only slot.
        with pytest.raises(Exception, match="at most 1 health watchers"):
            await _collect(service, [])
        stop.set()
    assert seen == [NOT_SERVING, SERVING, NOT_SERVING, SERVING, NOT_SERVING]
    assert slots.taken == 0


class _GoneCall:
    """A call's stream as the watcher sees it: reset once its client goes away."""

    reset_by_peer = False


async def test_a_watcher_whose_client_went_away_gives_its_slot_back(
    condition: list[NodeCondition], autojump_clock: trio.testing.MockClock
) -> None:
    slots = WatchSlots(limit=1)
    service = health_shell.HealthService(lambda: condition[0], RequestGate(), trio.Event(), slots)
    call = _GoneCall()
    seen: list[int] = []

    async def watch() -> None:
        grpc_server._CURRENT_CALL.set(call)  # type: ignore[arg-type]
        await _collect(service, seen)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await trio.sleep(5)
        assert (seen, slots.taken) == ([NOT_SERVING], 1)
        call.reset_by_peer = True
        await trio.sleep(health_shell.GONE_POLL_INTERVAL + 0.1)
        assert slots.taken == 0
