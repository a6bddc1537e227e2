"""Links to peer nodes: replica writes and reads, batched per peer.

Rules: one long-lived channel per peer (from the node's ChannelPool). Callers
queue records or keys and either wait (`apply`, `read`) or hand over a
callback (`submit_apply`, `submit_read`: the coordinator's hot path, which
then needs no task per replica); a sender task per peer sends what the
batcher (a3redis.core.batcher: what goes in which call, when, and who gets
which answer) hands it, so the cost of a purerpc call is shared by every
request that was waiting. This shell only waits, calls the stub and hands
the answers back. Every submission is settled exactly once: with its slice
of the answer, or with a PeerUnavailableError. A call that fails or times
out drops the channel, so the next call reconnects.
purerpc sends no HTTP/2 PING, so a link keeps its connection alive itself:
while it is in use but has had no answer for KEEPALIVE_INTERVAL it makes an
empty Read; a ping that fails drops the channel, so a connection a partition
silently broke is found within seconds and, once the partition heals, the
next ping has already reconnected before a request needs it. Links are
started and stopped by the node's supervisor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from a3redis import gathering, wire
from a3redis.address import Address
from a3redis.channels import ChannelPool
from a3redis.core.anti_entropy import (
    ChunksAnswer,
    ChunksRequest,
    EntriesAnswer,
    EntriesRequest,
    TreeAnswer,
    TreeRequest,
)
from a3redis.core.batcher import (
    GATHER_DELAY,
    KEEPALIVE_INTERVAL,
    KEEPALIVE_TIMEOUT,
    Batcher,
    Call,
    CallQueue,
    keepalive_due,
)
from a3redis.core.record import ApplyOutcome, Record
from a3redis.v1 import replica_pb2 as rpb
from a3redis.v1.replica_grpc import ReplicaStub
from a3redis.wire import record_from_pb, record_to_pb

log = logging.getLogger(__name__)


class PeerUnavailableError(Exception):
    """The peer did not answer (connection refused, broken, or timed out)."""


class Meter(Protocol):
    """What adds up a caller's unbatched calls and their bytes (a repair report)."""

    calls: int
    bytes_sent: int
    bytes_received: int


# Called once per submission: (its results, None) or (None, the failure).
Settle = Callable[[Any, "PeerUnavailableError | None"], None]


@dataclass
class _Waiter:
    """Turns a settlement into something a task can wait for."""

    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: PeerUnavailableError | None = None

    def settle(self, result: Any, error: PeerUnavailableError | None) -> None:
        self.result, self.error = result, error
        self.done.set()


class PeerLink:
    def __init__(
        self,
        node_id: str,
        coordinator: str,
        address: Address,
        channels: ChannelPool,
        timeout: float,
        max_in_flight: int = 4,
    ) -> None:
        self.node_id = node_id
        self.address = address
        self._coordinator = coordinator
        self._channels = channels
        self._timeout = timeout
        self._batcher: Batcher[Settle] = Batcher(max_in_flight)
        self._wake = trio.Event()
        self.calls = 0
        self.failures = 0
        self.keepalive_failures = 0
        self._last_answer = 0.0
        self._last_used = 0.0
        self._scope: trio.CancelScope | None = None
        self._closed = False

    def close(self) -> None:
        """Stop the sender (a replaced link); waiting callers see the peer unavailable."""
        self._closed = True
        if self._scope is not None:
            self._scope.cancel()

    # ----- the callers' side --------------------------------------------------------------

    async def apply(self, records: Sequence[Record]) -> list[ApplyOutcome]:
        result: list[ApplyOutcome] = await self._wait(self._batcher.applies, list(records))
        return result

    async def read(self, keys: Sequence[bytes]) -> list[Record | None]:
        result: list[Record | None] = await self._wait(self._batcher.reads, list(keys))
        return result

    def submit_apply(self, records: list[Record], settle: Settle) -> None:
        """Queue records; `settle(outcomes, None)` or `settle(None, error)` follows."""
        self._submit(self._batcher.applies, records, settle)

    def submit_read(self, keys: list[bytes], settle: Settle) -> None:
        """Queue keys; `settle(records, None)` or `settle(None, error)` follows."""
        self._submit(self._batcher.reads, keys, settle)

    async def local_scan(
        self, start: bytes, end: bytes, prefix: bytes, limit: int
    ) -> tuple[list[Record], bool]:
        """One page of the peer's own records (tombstones included); not batched."""
        request = rpb.LocalScanRequest(start=start, end=end, prefix=prefix, limit=limit)
        response = await self.unary("LocalScan", request)
        return [record_from_pb(r) for r in response.records], response.more

    async def unary(self, method: str, request: Any) -> Any:
        """One unbatched call of the Replica service, with the peer timeout."""
        self._last_used = trio.current_time()
        try:
            with trio.fail_after(self._timeout):
                stub = await self._stub()
                response = await getattr(stub, method)(request)
            self._last_answer = trio.current_time()
            return response
        except Exception as error:
            self._channels.discard(self.address)
            raise PeerUnavailableError(f"{self.node_id} at {self.address}: {error!r}") from None

    # Anti-entropy's calls: unbatched, in core types, counted in the caller's meter.

    async def tree(self, request: TreeRequest, meter: Meter) -> TreeAnswer:
        response = await self._metered("Tree", wire.tree_request_to_pb(request), meter)
        return wire.tree_answer_from_pb(response)

    async def chunks(self, request: ChunksRequest, meter: Meter) -> ChunksAnswer:
        response = await self._metered("Chunks", wire.chunks_request_to_pb(request), meter)
        return wire.chunks_answer_from_pb(response)

    async def entries(self, request: EntriesRequest, meter: Meter) -> EntriesAnswer:
        response = await self._metered("Entries", wire.entries_request_to_pb(request), meter)
        return wire.entries_answer_from_pb(response)

    async def fetch(self, keys: Sequence[bytes], meter: Meter) -> list[Record]:
        """The peer's records of `keys` that it holds (a repair pull)."""
        response = await self._metered("Read", rpb.ReadRequest(keys=keys), meter)
        return [record_from_pb(r.record) for r in response.results if r.present]

    async def push(self, records: Sequence[Record], meter: Meter) -> None:
        """Apply `records` on the peer (a repair push); the outcomes do not matter."""
        records_pb = [record_to_pb(r) for r in records]
        request = rpb.ApplyRequest(coordinator=self._coordinator, records=records_pb)
        await self._metered("Apply", request, meter)

    async def _metered(self, method: str, request: Any, meter: Meter) -> Any:
        meter.bytes_sent += request.ByteSize()
        meter.calls += 1
        response = await self.unary(method, request)
        meter.bytes_received += response.ByteSize()
        return response

    async def _wait(self, queue: CallQueue[Any, Any, Settle], items: list[Any]) -> Any:
        waiter = _Waiter()
        self._submit(queue, items, waiter.settle)
        await waiter.done.wait()
        if waiter.error is not None:
            raise PeerUnavailableError(str(waiter.error)) from waiter.error
        return waiter.result

    def _submit(self, queue: CallQueue[Any, Any, Settle], items: list[Any], settle: Settle) -> None:
        if self._closed:
            settle(None, PeerUnavailableError(f"the link to {self.node_id} was closed"))
            return
        self._last_used = trio.current_time()
        queue.submit(items, settle)
        self._wake.set()

    # ----- the sender ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._run(task_status)
        finally:
            closed = PeerUnavailableError(f"the link to {self.node_id} closed")
            for settle in self._batcher.drop():
                settle(None, closed)

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        batcher = self._batcher
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keepalive)
                task_status.started()
                while True:
                    wake_at = batcher.wake_at()
                    if wake_at is None:
                        await self._wake.wait()
                    else:
                        with trio.move_on_at(wake_at):
                            await self._wake.wait()
                    self._wake = trio.Event()
                    if batcher.should_gather():
                        await gathering.while_busy(GATHER_DELAY)
                    while batcher.ready(trio.current_time()):
                        # One schedule point per call (acquiring a slot was one):
                        # tasks that can run now still join this call.
                        await trio.lowlevel.checkpoint()
                        # Still ready: meanwhile queues only grew and calls only ended.
                        call = batcher.next_call(trio.current_time())
                        if call is not None:
                            nursery.start_soon(self._call, call)

    async def _call(self, call: Call[Any, Settle]) -> None:
        queue = call.queue
        failure: PeerUnavailableError | None = None
        results: list[Any] = []
        try:
            with trio.fail_after(self._timeout):
                if queue is self._batcher.applies:
                    results = await self._send_apply(call.items)
                else:
                    results = await self._send_read(call.items)
            self._last_answer = trio.current_time()
        except Exception as error:  # every failure means "this peer did not answer"
            self.failures += 1
            self._channels.discard(self.address)
            reason = "timed out" if isinstance(error, trio.TooSlowError) else repr(error)
            failure = PeerUnavailableError(f"{self.node_id} at {self.address}: {reason}")
        except BaseException:
            closed = PeerUnavailableError(f"the link to {self.node_id} closed")
            for settle in queue.failed(call):
                settle(None, closed)
            raise
        finally:
            self.calls += 1
            if self._batcher.ended(call):
                self._wake.set()
        # Settled outside the try: an error in a caller's callback is a bug to
        # surface, not a peer failure.
        if failure is not None:
            for settle in queue.failed(call):
                settle(None, failure)
        else:
            for settle, answers in queue.answered(call, results):
                settle(answers, None)

    async def _keepalive(self) -> None:
        while True:
            await trio.sleep(KEEPALIVE_INTERVAL)
            if not keepalive_due(trio.current_time(), self._last_answer, self._last_used):
                continue  # answers prove the connection, or nobody needs it
            try:
                with trio.fail_after(min(KEEPALIVE_TIMEOUT, self._timeout)):
                    stub = await self._stub()
                    await stub.Read(rpb.ReadRequest())
                self._last_answer = trio.current_time()
            except Exception as error:  # any failure: this connection is not to be trusted
                self.keepalive_failures += 1
                self._channels.discard(self.address)
                log.debug("keepalive to %s at %s failed: %r", self.node_id, self.address, error)

    async def _stub(self) -> Any:
        return await self._channels.stub(self.address, ReplicaStub)

    async def _send_apply(self, records: list[Record]) -> list[ApplyOutcome]:
        stub = await self._stub()
        request = rpb.ApplyRequest(
            coordinator=self._coordinator, records=[record_to_pb(r) for r in records]
        )
        response = await stub.Apply(request)
        if len(response.outcomes) != len(records):
            raise PeerUnavailableError("a malformed Apply answer")
        return [ApplyOutcome(value) for value in response.outcomes]

    async def _send_read(self, keys: list[bytes]) -> list[Record | None]:
        stub = await self._stub()
        response = await stub.Read(rpb.ReadRequest(keys=keys))
        if len(response.results) != len(keys):
            raise PeerUnavailableError("a malformed Read answer")
        return [record_from_pb(r.record) if r.present else None for r in response.results]
