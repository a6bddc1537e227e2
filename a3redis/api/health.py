"""The gRPC Health service (grpc.health.v1.Health): the node's status, checked or watched.

Rules: no decisions here. The node's condition is read by the `condition`
callable the node hands over, and a3redis.core.health decides what status it
means; this module only answers Check and carries changes to Watch streams.
Health needs no client token (like HTTP /health): probes hold none.

Watch streams learn of a change from `watch_changes`, the node's one task
that re-reads the condition every CHANGE_POLL_INTERVAL and at once when the
node stops; each watcher then sends the latest status if it differs from
what it sent last (a slow watcher skips the statuses it missed). Watchers are
counted as calls in flight, so a node that stops waits (within its grace) for
each to send NOT_SERVING before it closes the connections. A watcher whose
client went away (a reset, or the connection ended) notices within
GONE_POLL_INTERVAL and gives its slot back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import purerpc
import trio
from purerpc.grpclib.status import StatusCode

from a3redis.api import status_details
from a3redis.api.grpc_services import _decoded_by_methods, _status, _Undecoded
from a3redis.core import health
from a3redis.core.error_details import details
from a3redis.core.errors import RequestError
from a3redis.core.health import NodeCondition, ServingStatus, WatchSlots
from a3redis.net.grpc_server import RequestGate, current_call
from a3redis.v1 import health_pb2 as hpb
from a3redis.v1.health_grpc import HealthServicer

# How often the node re-reads its condition for watchers (joining and store failure
# have no event of their own; a stop wakes them at once).
CHANGE_POLL_INTERVAL = 0.5
# How often a watcher waiting for a change looks whether its client is still there.
GONE_POLL_INTERVAL = 1.0

# The core enum shares the wire's numbering.
_RESPONSES = {
    status: hpb.HealthCheckResponse(status=cast(Any, int(status))) for status in ServingStatus
}


def decoded(undecoded: _Undecoded) -> Any:
    """The request message, or INVALID_ARGUMENT (malformed request) if the bytes are not one."""
    try:
        return undecoded.decode()
    except RequestError as error:
        raise _status(error) from None


class HealthService(HealthServicer):  # type: ignore[misc]
    SERVICE = "Health"

    def __init__(
        self,
        node_condition: Callable[[], NodeCondition],
        gate: RequestGate,
        stop: trio.Event,
        slots: WatchSlots | None = None,
    ) -> None:
        self.node_condition = node_condition
        self.gate = gate
        self.stop = stop
        self.slots = WatchSlots() if slots is None else slots
        self._changed = trio.Event()

    @property
    def service(self) -> purerpc.Service:
        return _decoded_by_methods(super().service)

    def condition(self) -> NodeCondition:
        """The node's condition; draining from the moment `stop` is set."""
        condition = self.node_condition()
        if self.stop.is_set() and not condition.draining:
            return dataclasses.replace(condition, draining=True)
        return condition

    async def Check(self, undecoded: _Undecoded) -> hpb.HealthCheckResponse:
        request: hpb.HealthCheckRequest = decoded(undecoded)
        status = health.status_of(request.service, self.condition())
        if status is None:
            raise status_details.explain(
                StatusCode.NOT_FOUND, f"unknown service {request.service!r}", "SERVICE_UNKNOWN"
            )
        return _RESPONSES[status]

    async def Watch(self, undecoded: _Undecoded) -> AsyncIterator[hpb.HealthCheckResponse]:
        request: hpb.HealthCheckRequest = decoded(undecoded)
        if not self.slots.take():
            raise status_details.failure(
                StatusCode.RESOURCE_EXHAUSTED,
                f"this node serves at most {self.slots.limit} health watchers at once",
                details("TOO_MANY_WATCHERS", {"limit": str(self.slots.limit)}),
            )
        try:
            if self.gate.closed:
                yield _RESPONSES[ServingStatus.NOT_SERVING]
                return
            with self.gate:
                async for status in self._statuses(request.service):
                    yield _RESPONSES[status]
        finally:
            self.slots.give_back()

    async def _statuses(self, service: str) -> AsyncIterator[ServingStatus]:
        """The status now, then each change, until the node stops or the client is gone."""
        call = current_call()
        sent: ServingStatus | None = None
        while True:
            changed = self._changed  # before reading: a change from here on wakes us
            condition = self.condition()
            status = health.status_of(service, condition) or ServingStatus.SERVICE_UNKNOWN
            if status is not sent:
                yield status
                sent = status
            if condition.draining:
                return
            while not changed.is_set():
                if call is not None and call.reset_by_peer:
                    return
                with trio.move_on_after(GONE_POLL_INTERVAL):
                    await changed.wait()

    async def watch_changes(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Wake the watchers whenever the node's condition changes, and once more at stop."""
        task_status.started()
        stop = self.stop
        last = self.condition()
        while not stop.is_set():
            with trio.move_on_after(CHANGE_POLL_INTERVAL):
                await stop.wait()
            now = self.condition()
            if now != last or stop.is_set():
                last = now
                changed, self._changed = self._changed, trio.Event()
                changed.set()
