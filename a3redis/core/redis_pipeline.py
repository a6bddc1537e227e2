"""Pipelines: the requests of one read planned as batched steps, and their replies.

Rules:
- `plan(session, requests, wall_ms)` parses every request in order and
  runs the session commands at once (their replies are ready); what needs
  the data or the node becomes a step, and the shell runs the steps in order:
  - consecutive key reads (GET, MGET, EXISTS, TYPE, STRLEN, GETRANGE, TOUCH)
    share one `ReadStep` of their distinct keys;
  - consecutive key writes (SET, MSET, DEL, UNLINK) share one `WriteStep`
    holding each key's last write (a value, or None for a tombstone): an
    earlier write of the same key is dropped from the batch but still
    answered, as if it had been stored and overwritten at once;
  - DEL and UNLINK answer how many keys existed. The keys whose existence
    the batch itself does not settle (no earlier SET or DEL of them in it)
    are read in a `ReadStep` at the write's level just before the
    `WriteStep`. The read and the write are two steps, NOT one atomic
    operation: a write by another client between them can make the count
    wrong (never the data);
  - everything else the node answers (SCAN, KEYS, INFO, CLUSTER, FLUSHALL,
    ...) is a `ServerStep` of its own, after the batches before it.
  Session commands between key commands do not end a batch; a change of
  the session's consistency level does, and so does a batch reaching
  MAX_BATCH keys (`Limits.max_batch_keys`). Each step carries the levels in
  force when its commands were read (None: the server's default).
- A key or value over the limits is answered with its error at once and
  never joins a batch, so one bad command cannot fail its neighbours.
- `Plan.replies(results)` takes one result per step (the records read, in
  `keys` order; the versions written; the `Reply` of a server step; or the
  `RequestError` a step failed with) and returns the replies, in request
  order. A failed step answers every command that needed it with the error.
- With client tokens, a command the connection may not run (not
  authenticated, or its token's role does not allow it) is answered with
  the error of `redis_session.access_refusal` and never planned.
- Replies Redis would not send are left out: after QUIT nothing more is
  run or answered; CLIENT REPLY OFF and SKIP silence replies as in Redis.
  Otherwise there is exactly one reply per request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from a3redis.core.consistency import Consistency
from a3redis.core.errors import RequestError
from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.core.redis_commands import (
    READ_COMMANDS,
    SERVER_COMMANDS,
    WRITE_COMMANDS,
    ClientReply,
    Command,
    Del,
    Exists,
    Flush,
    Get,
    GetRange,
    MGet,
    MSet,
    ReadCommand,
    ServerCommand,
    Set,
    Strlen,
    Touch,
    Type,
    WriteCommand,
    err,
    error_reply,
    parse_named,
)
from a3redis.core.redis_session import NoReply, Session, access_refusal, answer
from a3redis.core.resp_values import OK, ErrorReply, Reply, Status
from a3redis.core.validation import InvalidRequestError

# ----- steps ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadStep:
    """Read these distinct keys at this level; result: one `Record | None` per key, in order."""

    keys: tuple[bytes, ...]
    consistency: Consistency | None


@dataclass(frozen=True, slots=True)
class WriteStep:
    """Write each key once (value None: a tombstone); result: the versions written."""

    writes: tuple[tuple[bytes, bytes | None], ...]
    consistency: Consistency | None


@dataclass(frozen=True, slots=True)
class ServerStep:
    """A command the shell answers from the node; result: its `Reply`."""

    command: ServerCommand
    read_consistency: Consistency | None
    write_consistency: Consistency | None


Step = ReadStep | WriteStep | ServerStep
StepResult = Sequence[Record | None] | Sequence[Version] | Reply | RequestError


# ----- what each request waits for -----------------------------------------------------------


class _Pending:
    """A reply that needs a step's result; `step` is set when its batch closes."""

    __slots__ = ("step",)

    def __init__(self) -> None:
        self.step = -1


class _Read(_Pending):
    __slots__ = ("command",)

    def __init__(self, command: ReadCommand) -> None:
        super().__init__()
        self.command = command


class _Written(_Pending):
    """SET and MSET: OK once the write step succeeded."""

    __slots__ = ()


class _Deleted(_Pending):
    """DEL: the keys known present in the batch, plus those the pre-read finds."""

    __slots__ = ("known_present", "read_step", "unsettled")

    def __init__(self, known_present: int, unsettled: tuple[bytes, ...]) -> None:
        super().__init__()
        self.known_present = known_present
        self.unsettled = unsettled
        self.read_step = -1


class _Served(_Pending):
    __slots__ = ()


class _ReadBatch:
    def __init__(self, consistency: Consistency | None) -> None:
        self.consistency = consistency
        self.keys: dict[bytes, None] = {}
        self.waiting: list[_Read] = []


class _WriteBatch:
    def __init__(self, consistency: Consistency | None) -> None:
        self.consistency = consistency
        self.writes: dict[bytes, bytes | None] = {}
        self.present: dict[bytes, bool] = {}  # existence settled by the batch's own writes
        self.pre_read: dict[bytes, None] = {}
        self.waiting: list[_Written | _Deleted] = []

    def size(self) -> int:
        return len(self.writes) + len(self.pre_read)


# ----- the plan ------------------------------------------------------------------------------


class Plan:
    """The steps of one pipeline and how to answer its requests from their results."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        # The full name of each request that was run (`get`, `client|setname`,
        # `unknown`), in order: for per-command metrics.
        self.names: list[str] = []
        self._answers: list[Reply | _Pending] = []  # None where nothing is sent
        self._sent: list[bool] = []

    def replies(self, results: Sequence[StepResult]) -> list[Reply]:
        """The replies to send, in request order, from one result per step."""
        if len(results) != len(self.steps):
            raise ValueError(f"{len(results)} results for {len(self.steps)} steps")
        done = _Results(self.steps, results)
        replies: list[Reply] = []
        for waiting, sent in zip(self._answers, self._sent, strict=True):
            if sent:
                replies.append(done.reply(waiting) if isinstance(waiting, _Pending) else waiting)
        return replies


class _Results:
    """The steps' results, read as each waiting request needs them."""

    def __init__(self, steps: Sequence[Step], results: Sequence[StepResult]) -> None:
        self.steps = steps
        self.results = results
        self.found: dict[int, Mapping[bytes, Record | None]] = {}

    def records(self, index: int) -> Mapping[bytes, Record | None] | RequestError:
        result = self.results[index]
        if isinstance(result, RequestError):
            return result
        found = self.found.get(index)
        if found is None:
            keys = self.steps[index].keys  # type: ignore[union-attr]  # a ReadStep
            rows: Sequence[Record | None] = result  # type: ignore[assignment]
            if len(rows) != len(keys):
                raise ValueError(f"step {index}: {len(rows)} records for {len(keys)} keys")
            found = self.found[index] = dict(zip(keys, rows, strict=True))
        return found

    def reply(self, waiting: _Pending) -> Reply:
        if isinstance(waiting, _Read):
            rows = self.records(waiting.step)
            if isinstance(rows, RequestError):
                return error_reply(rows)
            return read_reply(waiting.command, rows)
        result = self.results[waiting.step]
        if isinstance(result, RequestError):
            return error_reply(result)
        if isinstance(waiting, _Served):
            return result  # type: ignore[return-value]  # a ServerStep's result is its Reply
        if not isinstance(waiting, _Deleted):
            return OK
        if not waiting.unsettled:
            return waiting.known_present
        rows = self.records(waiting.read_step)
        if isinstance(rows, RequestError):
            # The delete may have been applied; only the count is unknown.
            return error_reply(rows)
        return waiting.known_present + sum(
            1 for key in waiting.unsettled if _value(rows[key]) is not None
        )


def _value(record: Record | None) -> bytes | None:
    """A record's value; a missing key and a tombstone are both 'not found'."""
    return None if record is None else record.value


def read_reply(command: ReadCommand, found: Mapping[bytes, Record | None]) -> Reply:
    """The reply to a key read, from the records of its keys (None: never written)."""
    match command:
        case Get(key=key):
            return _value(found[key])
        case MGet(keys=keys):
            return [_value(found[key]) for key in keys]
        case Exists(keys=keys) | Touch(keys=keys):
            return sum(1 for key in keys if _value(found[key]) is not None)
        case Type(key=key):
            return Status("none" if _value(found[key]) is None else "string")
        case Strlen(key=key):
            value = _value(found[key])
            return 0 if value is None else len(value)
        case GetRange(key=key, start=start, end=end):
            return substring(_value(found[key]) or b"", start, end)
    raise AssertionError(f"not a read: {command!r}")


def substring(value: bytes, start: int, end: int) -> bytes:
    """GETRANGE as Redis computes it: negative indexes count from the end, both inclusive."""
    if start < 0 and end < 0 and start > end:
        return b""
    length = len(value)
    if start < 0:
        start = max(0, length + start)
    if end < 0:
        end = max(0, length + end)
    end = min(end, length - 1)
    if start > end or length == 0:
        return b""
    return value[start : end + 1]


# ----- planning ------------------------------------------------------------------------------


# Commands after which the connection may speak another protocol (HELLO 2|3, RESET).
_PROTOCOL_SWITCHES = (b"HELLO", b"RESET")


def protocol_runs(requests: list[list[bytes]]) -> list[list[list[bytes]]]:
    """`requests` cut so that each HELLO or RESET is a run of its own: every reply is
    written in the protocol in force when it was made, as Redis does (the listener
    encodes a run's replies together)."""
    switches = [
        index
        for index, request in enumerate(requests)
        if request and len(request[0]) == 5 and request[0].upper() in _PROTOCOL_SWITCHES
    ]
    if not switches:
        return [requests]
    runs = []
    start = 0
    for index in switches:
        if start < index:
            runs.append(requests[start:index])
        runs.append(requests[index : index + 1])
        start = index + 1
    if start < len(requests):
        runs.append(requests[start:])
    return runs


NOT_IN_A_TRANSACTION = (
    "not run: the MULTI before it was refused (a3redis has no transactions); "
    "EXEC or DISCARD ends what was meant as one"
)


def _in_refused_multi(name: str) -> Reply:
    """The answer to a command sent after a refused MULTI (Redis's EXECABORT rule)."""
    if name == "exec":
        return ErrorReply(
            "EXECABORT Transaction discarded because of previous errors: MULTI is not "
            "supported (a3redis has no transactions), so none of its commands ran; send "
            "them without MULTI/EXEC (redis-py: pipeline(transaction=False))"
        )
    if name == "discard":
        return OK
    return err(f"{name.upper()} {NOT_IN_A_TRANSACTION}")


def plan(session: Session, requests: Sequence[Sequence[bytes]], wall_ms: int) -> Plan:
    """Plan one pipeline: session commands answered now, the rest as steps, in order."""
    return _Planner(session, wall_ms).run(requests)


class _Planner:
    def __init__(self, session: Session, wall_ms: int) -> None:
        self.session = session
        self.wall_ms = wall_ms
        self.limits = session.settings.limits
        self.plan = Plan()
        self.reads: _ReadBatch | None = None
        self.writes: _WriteBatch | None = None

    def run(self, requests: Sequence[Sequence[bytes]]) -> Plan:
        session = self.session
        tokens_required = session.settings.tokens is not None
        for request in requests:
            if session.closing:
                break  # after QUIT Redis runs nothing more of what it read
            name, command = parse_named(request)
            self.plan.names.append(name)
            session.last_command = name
            session.last_command_ms = self.wall_ms
            skipped = session.skip_next_reply
            session.skip_next_reply = False
            refused = access_refusal(session, name) if tokens_required else None
            if refused is not None:
                reply: Reply | _Pending | NoReply = refused
            elif session.refused_multi and name not in ("quit", "reset"):
                reply = _in_refused_multi(name)
            else:
                reply = self._add(command)
            if name == "multi":
                session.refused_multi = True
            elif name in ("exec", "discard", "reset"):
                session.refused_multi = False
            if isinstance(reply, NoReply):
                self.plan._answers.append(None)
                self.plan._sent.append(False)
                continue
            self.plan._answers.append(reply)
            # CLIENT REPLY ON is answered even when replies were off or skipped.
            always = isinstance(command, ClientReply)
            self.plan._sent.append(always or not (skipped or session.replies_off))
        self._close_reads()
        self._close_writes()
        return self.plan

    def _add(self, command: Command | ErrorReply) -> Reply | _Pending | NoReply:
        if isinstance(command, ErrorReply):
            return command
        if isinstance(command, READ_COMMANDS):
            return self._read(command)
        if isinstance(command, WRITE_COMMANDS):
            return self._write(command)
        if isinstance(command, SERVER_COMMANDS):
            return self._server(command)
        return answer(self.session, command, self.wall_ms)

    # ----- key reads -------------------------------------------------------------------------

    def _read(self, command: ReadCommand) -> Reply | _Pending:
        keys = _keys_of(command)
        refused = self._check_keys(keys)
        if refused is not None:
            return refused
        self._close_writes()
        level = self.session.requested_read
        batch = self.reads
        if batch is not None and (
            batch.consistency is not level
            or len(batch.keys) + len(keys) > self.limits.max_batch_keys
        ):
            self._close_reads()
            batch = None
        if batch is None:
            batch = self.reads = _ReadBatch(level)
        for key in keys:
            batch.keys[key] = None
        waiting = _Read(command)
        batch.waiting.append(waiting)
        return waiting

    def _close_reads(self) -> None:
        batch, self.reads = self.reads, None
        if batch is None:
            return
        index = self._add_step(ReadStep(tuple(batch.keys), batch.consistency))
        for waiting in batch.waiting:
            waiting.step = index

    # ----- key writes ------------------------------------------------------------------------

    def _write(self, command: WriteCommand) -> Reply | _Pending:
        pairs = _writes_of(command)
        refused = self._check_keys([key for key, _ in pairs])
        if refused is None:
            refused = self._check_values([value for _, value in pairs if value is not None])
        if refused is not None:
            return refused
        self._close_reads()
        level = self.session.requested_write
        batch = self.writes
        if batch is not None and (
            batch.consistency is not level
            or batch.size() + 2 * len(pairs) > self.limits.max_batch_keys
        ):
            self._close_writes()
            batch = None
        if batch is None:
            batch = self.writes = _WriteBatch(level)
        waiting: _Written | _Deleted
        if isinstance(command, Del):
            known_present = 0
            unsettled: list[bytes] = []
            for key in dict.fromkeys(command.keys):  # `DEL a a` deletes one key
                settled = batch.present.get(key)
                if settled is None:
                    unsettled.append(key)
                    batch.pre_read[key] = None
                elif settled:
                    known_present += 1
            waiting = _Deleted(known_present, tuple(unsettled))
        else:
            waiting = _Written()
        for key, value in pairs:
            batch.writes[key] = value
            batch.present[key] = value is not None
        batch.waiting.append(waiting)
        return waiting

    def _close_writes(self) -> None:
        batch, self.writes = self.writes, None
        if batch is None:
            return
        read_index = -1
        if batch.pre_read:
            read_index = self._add_step(ReadStep(tuple(batch.pre_read), batch.consistency))
        index = self._add_step(WriteStep(tuple(batch.writes.items()), batch.consistency))
        for waiting in batch.waiting:
            waiting.step = index
            if isinstance(waiting, _Deleted):
                waiting.read_step = read_index

    # ----- the rest --------------------------------------------------------------------------

    def _server(self, command: ServerCommand) -> Reply | _Pending:
        if isinstance(command, Flush) and not self.session.settings.allow_flush:
            return err(
                f"{command.command.upper()} is disabled: it deletes every key in the cluster; "
                "start the nodes with ALLOW_FLUSH=1 to allow it"
            )
        self._close_reads()
        self._close_writes()
        waiting = _Served()
        waiting.step = self._add_step(
            ServerStep(command, self.session.requested_read, self.session.requested_write)
        )
        return waiting

    def _add_step(self, step: Step) -> int:
        self.plan.steps.append(step)
        return len(self.plan.steps) - 1

    def _check_keys(self, keys: Sequence[bytes]) -> ErrorReply | None:
        try:
            self.limits.check_batch(len(keys))
            for key in keys:
                self.limits.check_key(key)
        except InvalidRequestError as failure:
            return error_reply(failure)
        return None

    def _check_values(self, values: Sequence[bytes]) -> ErrorReply | None:
        limit = self.limits.max_value_bytes
        for value in values:
            if len(value) > limit:
                return err(
                    f"string exceeds maximum allowed size: the value is {len(value)} bytes; "
                    f"the limit is MAX_VALUE_BYTES={limit}"
                )
        return None


_MANY_KEYS = (MGet, Exists, Touch)


def _keys_of(command: ReadCommand) -> Sequence[bytes]:
    if isinstance(command, _MANY_KEYS):
        return command.keys
    return (command.key,)


def _writes_of(command: WriteCommand) -> Sequence[tuple[bytes, bytes | None]]:
    if isinstance(command, Set):
        return ((command.key, command.value),)
    if isinstance(command, MSet):
        return command.pairs
    return [(key, None) for key in command.keys]
