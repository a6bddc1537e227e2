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
A batched Apply or Read whose connection was lost (closed, reset or sent
GOAWAY: the call fails at once, a3redis.net.grpc_socket) is sent once more
on a fresh connection within the same deadline, so a link to a peer that
restarted does not fail the first request after it: an Apply carries
records whose versions are fixed, and applying a record twice leaves the
replica as once (last-write-wins; the second answer for a version it
already holds is an acknowledgement, coordinator rule 3), and a Read
changes nothing. A timeout is not retried: the peer may be slow, and a
second try would only double the wait.
purerpc sends no HTTP/2 PING, so a link keeps its connection alive itself:
while it is in use but has had no answer for KEEPALIVE_INTERVAL it makes an
empty Read; a ping that fails drops the channel, so a connection a partition
silently broke is found within seconds and, once the partition heals, the
next ping has already reconnected before a request needs it. Links are
started and stopped by the node's supervisor.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import trio

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
from a3redis.core.streaming import StreamPage, StreamRequest, check_page
from a3redis.core.validation import InvalidRequestError, Limits
from a3redis.net.address import Address
from a3redis.net.grpc_socket import ConnectionLostError
from a3redis.runtime import gathering

log = logging.getLogger(__name__)

T = TypeVar("T")


class PeerUnavailableError(Exception):
    """The peer did not answer (connection refused, broken, or timed out)."""


class RefusedPageError(PeerUnavailableError):
    """A peer's Stream page failed the checks (core.streaming.check_page): none of it is used."""

    def __init__(self, message: str, error: InvalidRequestError) -> None:
        super().__init__(message)
        self.error = error  # what was wrong, with its `reason` for the rejection metric


class Meter(Protocol):
    """What adds up a caller's unbatched calls and their bytes (a repair report)."""

    calls: int
    bytes_sent: int
    bytes_received: int


class ReplicaTransport(Protocol):
    """A peer's Replica service in core types (a3redis.api.replica_calls.ReplicaCalls)."""

    @property
    def address(self) -> Address: ...

    def discard(self) -> None: ...

    async def apply(self, records: Sequence[Record]) -> list[ApplyOutcome]: ...

    async def read(self, keys: Sequence[bytes]) -> list[Record | None]: ...

    async def ping(self) -> None: ...

    async def local_scan(
        self, start: bytes, end: bytes, prefix: bytes, limit: int
    ) -> tuple[list[Record], bool]: ...

    async def stream(self, request: StreamRequest) -> StreamPage: ...

    async def tree(self, request: TreeRequest, meter: Meter) -> TreeAnswer: ...

    async def chunks(self, request: ChunksRequest, meter: Meter) -> ChunksAnswer: ...

    async def entries(self, request: EntriesRequest, meter: Meter) -> EntriesAnswer: ...

    async def fetch(self, keys: Sequence[bytes], meter: Meter) -> list[Record]: ...

    async def push(self, records: Sequence[Record], meter: Meter) -> None: ...


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
        calls: ReplicaTransport,
        timeout: float,
        max_in_flight: int = 4,
    ) -> None:
        self.node_id = node_id
        self.address = calls.address
        self._calls = calls
        self._timeout = timeout
        self._batcher: Batcher[Settle] = Batcher(max_in_flight)
        self._wake = trio.Event()
        self.calls = 0
        self.failures = 0
        self.keepalive_failures = 0
        self.reconnects = 0  # calls sent again after their connection was lost
        self._last_answer = 0.0
        self._last_used = 0.0
        self._scope: trio.CancelScope | None = None
        self._closed = False

    def lagging(self, now: float) -> bool:
        """Whether a call has been out too long (core.batcher's `lagging`)."""
        return self._batcher.lagging(now)

    def close(self, drop_connection: bool = False) -> None:
        """Stop the sender (a replaced link); waiting callers see the peer unavailable.
        Its connection is closed too if `drop_connection` (a peer that left)."""
        self._closed = True
        if drop_connection:
            self._calls.discard()
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
        return await self._unbatched(self._calls.local_scan(start, end, prefix, limit))

    async def stream(
        self, request: StreamRequest, limits: Limits, wall_ms: Callable[[], int]
    ) -> tuple[StreamPage, int]:
        """One page of whole partitions from the peer (core.streaming); not batched;
        and the wall time it was checked at.

        The page is checked against `limits` and this node's clock `wall_ms`
        when it arrives; one that fails raises RefusedPageError (a
        PeerUnavailableError: the caller treats the peer as failed for these
        partitions) and the connection is kept.
        """
        page = await self._unbatched(self._calls.stream(request))
        checked_at = wall_ms()
        try:
            check_page(request, page, limits, checked_at)
        except InvalidRequestError as error:
            raise RefusedPageError(f"{self.node_id} at {self.address}: {error}", error) from None
        return page, checked_at

    # Anti-entropy's calls: unbatched, in core types, counted in the caller's meter.

    async def tree(self, request: TreeRequest, meter: Meter) -> TreeAnswer:
        return await self._unbatched(self._calls.tree(request, meter))

    async def chunks(self, request: ChunksRequest, meter: Meter) -> ChunksAnswer:
        return await self._unbatched(self._calls.chunks(request, meter))

    async def entries(self, request: EntriesRequest, meter: Meter) -> EntriesAnswer:
        return await self._unbatched(self._calls.entries(request, meter))

    async def fetch(self, keys: Sequence[bytes], meter: Meter) -> list[Record]:
        """The peer's records of `keys` that it holds (a repair pull)."""
        return await self._unbatched(self._calls.fetch(keys, meter))

    async def push(self, records: Sequence[Record], meter: Meter) -> None:
        """Apply `records` on the peer (a repair push); the outcomes do not matter."""
        await self._unbatched(self._calls.push(records, meter))

    async def _unbatched(self, call: Awaitable[T]) -> T:
        """One call of its own, with the peer timeout; any failure drops the channel."""
        self._last_used = trio.current_time()
        try:
            with trio.fail_after(self._timeout):
                answer = await call
            self._last_answer = trio.current_time()
            return answer
        except Exception as error:
            self._calls.discard()
            raise PeerUnavailableError(f"{self.node_id} at {self.address}: {error!r}") from None

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
                try:
                    results = await self._ask(queue, call.items)
                except ConnectionLostError:
                    self.reconnects += 1
                    results = await self._ask(queue, call.items)
            self._last_answer = trio.current_time()
        except Exception as error:  # every failure means "this peer did not answer"
            self.failures += 1
            self._calls.discard()
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

    async def _ask(self, queue: CallQueue[Any, Any, Settle], items: list[Any]) -> list[Any]:
        if queue is self._batcher.applies:
            return await self._calls.apply(items)
        return await self._calls.read(items)

    async def _keepalive(self) -> None:
        while True:
            await trio.sleep(KEEPALIVE_INTERVAL)
            if not keepalive_due(trio.current_time(), self._last_answer, self._last_used):
                continue  # answers prove the connection, or nobody needs it
            try:
                with trio.fail_after(min(KEEPALIVE_TIMEOUT, self._timeout)):
                    await self._calls.ping()
                self._last_answer = trio.current_time()
            except Exception as error:  # any failure: this connection is not to be trusted
                self.keepalive_failures += 1
                self._calls.discard()
                log.debug("keepalive to %s at %s failed: %r", self.node_id, self.address, error)
