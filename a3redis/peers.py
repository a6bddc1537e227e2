"""Links to peer nodes: replica writes and reads, batched per peer.

Rules: one long-lived channel per peer (from the node's ChannelPool). Callers
queue records or keys and either wait (`apply`, `read`) or hand over a
callback (`submit_apply`, `submit_read`: the coordinator's hot path, which
then needs no task per replica); a sender task per peer takes everything that
is queued at that moment and sends it as one call, so the fixed cost of a
purerpc call is shared by every request that was waiting. Every submission is
settled exactly once: with its slice of the answer, or with a
PeerUnavailableError. While a call of a kind (Apply, Read) is out, the next
one waits for it (and so gathers more), unless a full batch is queued or the
call has been out for HOLD_BACK; at most `max_in_flight` calls are
outstanding. A call that starts after a shared one first gathers like group
commit (GATHER_DELAY, a3redis.gathering). A call that fails or times out
fails all of its waiters with PeerUnavailableError and drops the channel, so
the next call reconnects.
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
from a3redis.core.record import ApplyOutcome, Record
from a3redis.v1 import replica_pb2 as rpb
from a3redis.v1.replica_grpc import ReplicaStub
from a3redis.wire import record_from_pb, record_to_pb

log = logging.getLogger(__name__)

MAX_BATCH = 512
# A call out this long no longer holds back the next one of its kind: a call
# on a connection that just died waits for the peer timeout, and the records
# behind it must not (they reconnect, or fail fast and become hints).
HOLD_BACK = 0.05
# A call about to start, when the last call of its kind carried at least
# GATHER_MIN_WAITERS submissions, first lets every task that can still run
# (requests being decoded) queue theirs, for GATHER_DELAY at most, as group
# commit does in the store, so fewer, fuller Read calls carry the same Gets
# (figures: benchmarks/README.md).
GATHER_DELAY = 0.001
GATHER_MIN_WAITERS = 2
KEEPALIVE_INTERVAL = 2.0
KEEPALIVE_TIMEOUT = 1.0
# A link nobody used for this long (a peer that left, say) stops pinging.
KEEPALIVE_IDLE = 60.0


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


@dataclass
class _Queue:
    items: list[Any] = field(default_factory=list)
    # (settle, where its items start in `items`, how many)
    waiters: list[tuple[Settle, int, int]] = field(default_factory=list)
    in_flight: int = 0  # calls of this queue's kind outstanding
    last_call: float = 0.0  # when the latest of them started (trio time)
    last_waiters: int = 0  # submissions the latest of them carried

    def held_back(self) -> bool:
        return bool(self.waiters) and self.in_flight > 0


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
        self._slots = trio.Semaphore(max_in_flight)
        self._applies = _Queue()
        self._reads = _Queue()
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
        result: list[ApplyOutcome] = await self._wait(self._applies, list(records))
        return result

    async def read(self, keys: Sequence[bytes]) -> list[Record | None]:
        result: list[Record | None] = await self._wait(self._reads, list(keys))
        return result

    def submit_apply(self, records: list[Record], settle: Settle) -> None:
        """Queue records; `settle(outcomes, None)` or `settle(None, error)` follows."""
        self._submit(self._applies, records, settle)

    def submit_read(self, keys: list[bytes], settle: Settle) -> None:
        """Queue keys; `settle(records, None)` or `settle(None, error)` follows."""
        self._submit(self._reads, keys, settle)

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

    async def _wait(self, queue: _Queue, items: list[Any]) -> Any:
        waiter = _Waiter()
        self._submit(queue, items, waiter.settle)
        await waiter.done.wait()
        if waiter.error is not None:
            raise PeerUnavailableError(str(waiter.error)) from waiter.error
        return waiter.result

    def _submit(self, queue: _Queue, items: list[Any], settle: Settle) -> None:
        if self._closed:
            settle(None, PeerUnavailableError(f"the link to {self.node_id} was closed"))
            return
        self._last_used = trio.current_time()
        queue.waiters.append((settle, len(queue.items), len(items)))
        queue.items.extend(items)
        self._wake.set()

    # ----- the sender ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._run(task_status)
        finally:
            for queue in (self._applies, self._reads):
                _fail(queue, PeerUnavailableError(f"the link to {self.node_id} closed"))
                queue.waiters.clear()
                queue.items.clear()

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keepalive)
                task_status.started()
                while True:
                    if self._applies.held_back() or self._reads.held_back():
                        with trio.move_on_after(HOLD_BACK):
                            await self._wake.wait()
                    else:
                        await self._wake.wait()
                    self._wake = trio.Event()
                    if self._should_gather():
                        await gathering.while_busy(GATHER_DELAY)
                    for queue, send in (
                        (self._applies, self._send_apply),
                        (self._reads, self._send_read),
                    ):
                        # While a call of this kind is out, what comes in waits for it
                        # and leaves as one batch, unless a full batch is waiting or
                        # the call has been out for HOLD_BACK: a call started whenever
                        # a slot was free carried only a few records, and holding back
                        # makes far fewer, fuller calls (figures: benchmarks/README.md).
                        # The calls of this kind that are out wake the sender when they end.
                        while queue.waiters and (
                            queue.in_flight == 0
                            or len(queue.items) >= MAX_BATCH
                            or trio.current_time() - queue.last_call >= HOLD_BACK
                        ):
                            await self._slots.acquire()
                            batch = _take(queue)
                            queue.last_waiters = len(batch.waiters)
                            queue.in_flight += 1
                            queue.last_call = trio.current_time()
                            nursery.start_soon(self._call, send, queue, batch)

    def _should_gather(self) -> bool:
        """A call is about to start for a queue whose last call was shared."""
        return any(
            queue.waiters and queue.in_flight == 0 and queue.last_waiters >= GATHER_MIN_WAITERS
            for queue in (self._applies, self._reads)
        )

    async def _call(self, send: Any, queue: _Queue, batch: _Queue) -> None:
        failure: PeerUnavailableError | None = None
        try:
            with trio.fail_after(self._timeout):
                results = await send(batch.items)
            self._last_answer = trio.current_time()
        except Exception as error:  # every failure means "this peer did not answer"
            self.failures += 1
            self._channels.discard(self.address)
            reason = "timed out" if isinstance(error, trio.TooSlowError) else repr(error)
            failure = PeerUnavailableError(f"{self.node_id} at {self.address}: {reason}")
        except BaseException:
            _fail(batch, PeerUnavailableError(f"the link to {self.node_id} closed"))
            raise
        finally:
            self.calls += 1
            self._slots.release()
            queue.in_flight -= 1
            if queue.waiters:
                self._wake.set()
        # Settled outside the try: an error in a caller's callback is a bug to
        # surface, not a peer failure.
        if failure is not None:
            _fail(batch, failure)
        else:
            for settle, start, count in batch.waiters:
                settle(results[start : start + count], None)

    async def _keepalive(self) -> None:
        while True:
            await trio.sleep(KEEPALIVE_INTERVAL)
            now = trio.current_time()
            if (
                now - self._last_answer < KEEPALIVE_INTERVAL
                or now - self._last_used > KEEPALIVE_IDLE
            ):
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


def _fail(batch: _Queue, failure: PeerUnavailableError) -> None:
    waiters, batch.waiters = batch.waiters, []  # each is settled once
    for settle, _, _ in waiters:
        settle(None, failure)


def _take(queue: _Queue) -> _Queue:
    """Detach up to MAX_BATCH items' worth of whole waiters from the queue."""
    if len(queue.items) <= MAX_BATCH:
        # Everything fits (the usual case): hand the lists over instead of copying.
        taken = _Queue(queue.items, queue.waiters)
        queue.items, queue.waiters = [], []
        return taken
    taken = _Queue()
    count = 0
    while queue.waiters and (count == 0 or count + queue.waiters[0][2] <= MAX_BATCH):
        waiter, start, size = queue.waiters.pop(0)
        taken.waiters.append((waiter, count, size))
        taken.items.extend(queue.items[start : start + size])
        count += size
    # The waiters that stay start at `count`: shift them to the front.
    queue.items = queue.items[count:]
    queue.waiters = [(waiter, start - count, size) for waiter, start, size in queue.waiters]
    return taken
