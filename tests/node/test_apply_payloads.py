"""A coordinator's Apply calls carry log payloads only to a replica that said it takes them.

A scripted replica-frames server on loopback answers each Apply as a replica
of one release or another would, and keeps the requests it got. The calls
start with Record messages on every new connection, switch to payloads once
an answer on that connection says the replica takes them, and never do for a
replica that does not say so (a release before them, which would read a
request of payloads as one of no records).
"""

from __future__ import annotations

import functools

import trio

from a3redis.api import wire
from a3redis.api.replica_calls import MalformedAnswerError, ReplicaCalls
from a3redis.core.hlc import Version
from a3redis.core.record import ApplyOutcome, Record
from a3redis.core.replica_frames import APPLY, MAX_FRAME_BYTES, PREFACE, FrameReader, answer
from a3redis.core.validation import Limits
from a3redis.net.address import Address
from a3redis.net.channels import ChannelPool
from a3redis.v1 import replica_pb2 as rpb

RECORDS = [
    Record(b"k1", b"v1", Version(1_700_000_000_000, 0, "node-9")),
    Record(b"k2", None, Version(1_700_000_000_001, 3, "node-9")),  # a tombstone
    Record(b"k3", b"v3", Version(1_700_000_000_002, 0, "node-9"), 1_800_000_000_000),
]


class ScriptedReplica:
    """Answers every Apply with one outcome per record; `takes_payloads` as a replica of a
    release that takes them would. Closes each connection after `answers_per_connection`."""

    def __init__(
        self, takes_payloads: bool, answers_per_connection: int = 100, outcome: int = 0
    ) -> None:
        self.takes_payloads = takes_payloads
        self.answers_per_connection = answers_per_connection
        self.outcome = outcome
        self.requests: list[tuple[int, rpb.ApplyRequest]] = []  # (connection number, request)
        self.connections = 0

    async def serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        number = self.connections
        received = b""
        while len(received) < len(PREFACE):
            received += await stream.receive_some(len(PREFACE) - len(received))
        await stream.send_all(PREFACE)
        reader = FrameReader(MAX_FRAME_BYTES, requests=True)
        answered = 0
        while answered < self.answers_per_connection:
            data = await stream.receive_some(65536)
            if not data:
                return
            for frame in reader.feed(data):
                assert frame.kind == APPLY
                request = rpb.ApplyRequest.FromString(frame.body)
                self.requests.append((number, request))
                response = rpb.ApplyResponse(
                    outcomes=[self.outcome] * len(_decoded(request)),  # type: ignore[list-item]
                    takes_payloads=self.takes_payloads,
                )
                await stream.send_all(answer(frame.call_id, response.SerializeToString()))
                answered += 1
        await stream.aclose()


def _decoded(request: rpb.ApplyRequest) -> list[Record]:
    records, _ = wire.apply_records_from_pb(request, Limits())
    return records


async def _calls(
    nursery: trio.Nursery, replica: ScriptedReplica
) -> tuple[ReplicaCalls, ChannelPool]:
    serve = functools.partial(trio.serve_tcp, replica.serve, 0, host="127.0.0.1")
    listeners = await nursery.start(serve)
    address = Address("127.0.0.1", listeners[0].socket.getsockname()[1])
    channels = await nursery.start(_pool)
    return ReplicaCalls(channels, address, "node-9"), channels


async def _pool(task_status: trio.TaskStatus[ChannelPool]) -> None:
    async with ChannelPool.open() as channels:
        task_status.started(channels)
        await trio.sleep_forever()


def _forms(replica: ScriptedReplica) -> list[tuple[int, str]]:
    """Each request's connection and form, after checking it carried exactly RECORDS."""
    forms = []
    for connection, request in replica.requests:
        assert _decoded(request) == RECORDS
        assert request.coordinator == "node-9"
        forms.append((connection, "payloads" if request.record_payloads else "records"))
    return forms


async def test_records_go_as_payloads_once_the_replica_says_it_takes_them(
    nursery: trio.Nursery,
) -> None:
    replica = ScriptedReplica(takes_payloads=True)
    calls, _ = await _calls(nursery, replica)
    with trio.fail_after(10):
        for _ in range(3):
            assert await calls.apply(RECORDS) == [ApplyOutcome.STORED] * len(RECORDS)
        calls.discard()  # as a link does after a failed call: the next one reconnects
        for _ in range(2):
            await calls.apply(RECORDS)
    assert _forms(replica) == [
        (1, "records"),
        (1, "payloads"),
        (1, "payloads"),
        (2, "records"),
        (2, "payloads"),
    ]


async def test_a_replica_that_restarts_is_sent_records_until_it_says_so_again(
    nursery: trio.Nursery,
) -> None:
    replica = ScriptedReplica(takes_payloads=True, answers_per_connection=2)
    calls, channels = await _calls(nursery, replica)
    with trio.fail_after(10):
        await calls.apply(RECORDS)
        # Taken while it is open: once the client sees it closed, asking would reconnect.
        connection = await channels.frames(calls.address)
        assert connection is not None
        await calls.apply(RECORDS)
        while connection.lost is None:  # the replica closed it: wait until the client sees it
            await trio.sleep(0.01)
        await calls.apply(RECORDS)
    assert _forms(replica) == [(1, "records"), (1, "payloads"), (2, "records")]


async def test_a_replica_that_does_not_say_it_takes_payloads_always_gets_records(
    nursery: trio.Nursery,
) -> None:
    replica = ScriptedReplica(takes_payloads=False)
    calls, _ = await _calls(nursery, replica)
    with trio.fail_after(10):
        for _ in range(4):
            await calls.apply(RECORDS)
    assert _forms(replica) == [(1, "records")] * 4


async def test_an_answer_of_an_unknown_outcome_is_malformed(nursery: trio.Nursery) -> None:
    for number in (-1, 4):
        calls, _ = await _calls(nursery, ScriptedReplica(takes_payloads=True, outcome=number))
        with trio.fail_after(10):
            try:
                await calls.apply(RECORDS)
            except MalformedAnswerError as error:
                assert f"unknown outcome {number}" in str(error)
            else:
                raise AssertionError(f"outcome {number} was taken")
