"""Pipelines: the requests of one read planned as batched steps, and their replies.

Rules:
- `plan(session, requests, wall_ms)` parses every request in order and
  runs the session commands at once (their replies are ready); what needs
  the data or the node becomes a step, and the shell runs the steps in order:
  - consecutive key reads (GET, MGET, EXISTS, TYPE, STRLEN, GETRANGE, TOUCH,
    TTL, PTTL, EXPIRETIME, PEXPIRETIME) share one `ReadStep` of their
    distinct keys; TTL and its kind answer from the record and the node's
    wall clock when the replies are made (`replies(results, now_ms)`);
  - consecutive key writes (SET, MSET, DEL, UNLINK; SET with EX, PX, EXAT or
    PXAT, SETEX, PSETEX) share one `WriteStep` holding each key's last write
    (a value, or None for a tombstone) and, if any write of the batch has
    one, one `Expiry` per write (`NEVER` for none and for deletes): an
    earlier write of the same key is dropped from the batch but still
    answered, as if it had been stored and overwritten at once;
  - consecutive read-modify-write commands (SET KEEPTTL, GETEX with an
    option, EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, PERSIST) share one
    `ReadStep` of their keys at the read level, then one `RewriteStep` at
    the write level: the shell asks `Plan.rewrites` for the writes once the
    read is answered; the decisions are core.expiry's (`decide_expire`,
    `decide_persist`), taken in request order, each seeing what the ones
    before it in the batch decided for the key. A pipeline of 100 EXPIREs
    is two steps, not 100 round trips. The read and the write are NOT one
    atomic operation: a write of the key by another client in between is
    ordered by last-write-wins (it may be undone by the rewrite, which
    writes the value read, or undo the new expiry);
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
- A run of one plain `GET key` or `SET key value` (what an unpipelined
  client sends most) is planned directly, into the same step, replies and
  session changes as the batching planner's (`plan_in_batches`); one that
  needs more (an error to answer, a refusal, a silenced reply) is not.
- A key or value over the limits, or an expiry beyond the store's bound
  (`Limits.check_expiry`: Redis's `invalid expire time in '<command>'
  command`), is answered with its error at once and never joins a batch, so
  one bad command cannot fail its neighbours.
- `Plan.replies(results, now_ms)` takes one result per step (the records
  read, in `keys` order; the versions written; the `Reply` of a server step;
  or the `RequestError` a step failed with) and returns the replies, in
  request order. A failed step answers every command that needed it with the error.
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
from typing import NamedTuple

from a3redis.core.consistency import Consistency
from a3redis.core.errors import RequestError
from a3redis.core.expiry import (
    NEVER,
    UNCHANGED,
    Decision,
    Expiry,
    Rewrite,
    decide_expire,
    decide_persist,
    is_live,
    remaining_ms,
)
from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.core.redis_commands import (
    MODIFY_COMMANDS,
    READ_COMMANDS,
    SERVER_COMMANDS,
    WRITE_COMMANDS,
    ClientReply,
    Command,
    Del,
    Exists,
    Expire,
    Flush,
    Get,
    GetEx,
    GetRange,
    MemoryUsage,
    MGet,
    ModifyCommand,
    MSet,
    ObjectInfo,
    Persist,
    ReadCommand,
    ServerCommand,
    Set,
    SetKeepTtl,
    Strlen,
    Touch,
    Ttl,
    Type,
    WriteCommand,
    err,
    error_reply,
    invalid_expire_time,
    parse_int64,
    parse_named,
)
from a3redis.core.redis_session import NoReply, Session, access_refusal, answer
from a3redis.core.resp_values import OK, ErrorReply, Reply, Status
from a3redis.core.table import memory_usage
from a3redis.core.validation import InvalidRequestError, Limits

# ----- steps ---------------------------------------------------------------------------------


# Made for nearly every request: a named tuple is as immutable as a frozen dataclass
# and cheaper to make (benchmarks/README.md, "A leaner SET path").
class ReadStep(NamedTuple):
    """Read these distinct keys at this level; result: one `Record | None` per key, in order."""

    keys: tuple[bytes, ...]
    consistency: Consistency | None


class WriteStep(NamedTuple):
    """Write each key once (value None: a tombstone); result: the versions written.
    `expiries`: None, or one per write (`NEVER` for none and for deletes)."""

    writes: tuple[tuple[bytes, bytes | None], ...]
    consistency: Consistency | None
    expiries: tuple[Expiry, ...] | None = None


@dataclass(frozen=True, slots=True)
class RewriteStep:
    """Write what read-modify-write commands decided on the records `read_step` read:
    the shell gets the writes from `Plan.rewrites` (a `WriteStep`, perhaps of no
    writes) and runs them; result: the versions written."""

    read_step: int
    consistency: Consistency | None


@dataclass(frozen=True, slots=True)
class ServerStep:
    """A command the shell answers from the node; result: its `Reply`."""

    command: ServerCommand
    read_consistency: Consistency | None
    write_consistency: Consistency | None


Step = ReadStep | WriteStep | RewriteStep | ServerStep
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


class _Modified(_Pending):
    """A read-modify-write command: its reply is decided with the rewrites."""

    __slots__ = ("command", "decided", "reply")

    def __init__(self, command: ModifyCommand) -> None:
        super().__init__()
        self.command = command
        self.decided = False  # by Plan.rewrites, which sets the reply
        self.reply: Reply = None


class _ReadBatch:
    def __init__(self, consistency: Consistency | None) -> None:
        self.consistency = consistency
        self.keys: dict[bytes, None] = {}
        self.waiting: list[_Read] = []


class _WriteBatch:
    def __init__(self, consistency: Consistency | None) -> None:
        self.consistency = consistency
        self.writes: dict[bytes, bytes | None] = {}
        self.expiries: dict[bytes, Expiry] = {}  # the keys whose last write has one
        self.present: dict[bytes, bool] = {}  # existence settled by the batch's own writes
        self.pre_read: dict[bytes, None] = {}
        self.waiting: list[_Written | _Deleted] = []

    def size(self) -> int:
        return len(self.writes) + len(self.pre_read)


class _ModifyBatch:
    def __init__(self, read: Consistency | None, write: Consistency | None) -> None:
        self.read_consistency = read
        self.write_consistency = write
        self.keys: dict[bytes, None] = {}
        self.waiting: list[_Modified] = []


# ----- the plan ------------------------------------------------------------------------------


class Plan:
    """The steps of one pipeline and how to answer its requests from their results."""

    # Whether `replies` reads its `now_ms` (TTL's answer does; a lone GET's or SET's
    # does not, and its caller need not read the clock for it).
    replies_read_the_clock = True

    def __init__(self, wall_ms: int) -> None:
        self.wall_ms = wall_ms
        self.steps: list[Step] = []
        # The full name of each request that was run (`get`, `client|setname`,
        # `unknown`), in order: for per-command metrics.
        self.names: list[str] = []
        self._answers: list[Reply | _Pending] = []  # None where nothing is sent
        self._sent: list[bool] = []
        self._modified: dict[int, list[_Modified]] = {}  # by the index of their RewriteStep
        self.serves = False  # whether a step is a ServerStep (the node answers it)

    def rewrites(
        self, index: int, results: Sequence[StepResult], now_ms: int
    ) -> WriteStep | RequestError:
        """What the `RewriteStep` at `index` writes, from the results of the steps
        before it (its read step's among them) and the node's wall clock; or the
        error its read failed with. Decides the replies of its commands too."""
        step = self.steps[index]
        if not isinstance(step, RewriteStep):
            raise ValueError(f"step {index} is not a rewrite step")
        read = results[step.read_step]
        if isinstance(read, RequestError):
            return read
        keys = self.steps[step.read_step].keys  # type: ignore[union-attr]  # a ReadStep
        rows: Sequence[Record | None] = read  # type: ignore[assignment]
        if len(rows) != len(keys):
            raise ValueError(f"step {step.read_step}: {len(rows)} records for {len(keys)} keys")
        current = dict(zip(keys, rows, strict=True))
        writes: dict[bytes, tuple[bytes | None, Expiry]] = {}
        for waiting in self._modified[index]:
            key = waiting.command.key
            record = current[key]
            waiting.reply, decision = _modify(waiting.command, record, now_ms)
            waiting.decided = True
            rewrite = decision.write
            if rewrite is not None:
                writes[key] = (rewrite.value, rewrite.expiry)
                # What the next command of the batch finds (its version is not known
                # yet and no decision reads it; the expiry is counted from now).
                version = record.version if record is not None else Version(now_ms, 0, "")
                current[key] = Record(key, rewrite.value, version, rewrite.expiry.resolve(now_ms))
        return WriteStep(
            tuple((key, value) for key, (value, _) in writes.items()),
            step.consistency,
            tuple(expiry for _, expiry in writes.values()),
        )

    def replies(self, results: Sequence[StepResult], now_ms: int | None = None) -> list[Reply]:
        """The replies to send, in request order, from one result per step; `now_ms`
        is the node's wall clock for TTL and its kind (None: the planning time)."""
        if len(results) != len(self.steps):
            raise ValueError(f"{len(results)} results for {len(self.steps)} steps")
        done = _Results(self.steps, results, self.wall_ms if now_ms is None else now_ms)
        replies: list[Reply] = []
        for waiting, sent in zip(self._answers, self._sent, strict=True):
            if sent:
                replies.append(done.reply(waiting) if isinstance(waiting, _Pending) else waiting)
        return replies


class _Results:
    """The steps' results, read as each waiting request needs them."""

    def __init__(self, steps: Sequence[Step], results: Sequence[StepResult], now_ms: int) -> None:
        self.steps = steps
        self.results = results
        self.now_ms = now_ms
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
            return read_reply(waiting.command, rows, self.now_ms)
        result = self.results[waiting.step]
        if isinstance(result, RequestError):
            return error_reply(result)
        if isinstance(waiting, _Written):
            return OK
        if isinstance(waiting, _Served):
            return result  # type: ignore[return-value]  # a ServerStep's result is its Reply
        if isinstance(waiting, _Modified):
            if not waiting.decided:  # the shell did not ask for the rewrites
                raise ValueError(f"step {waiting.step}: a rewrite step run without its rewrites")
            return waiting.reply
        assert isinstance(waiting, _Deleted)
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


def read_reply(command: ReadCommand, found: Mapping[bytes, Record | None], now_ms: int) -> Reply:
    """The reply to a key read, from the records of its keys (None: never written)
    and the node's wall clock `now_ms`."""
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
        case MemoryUsage(key=key):
            record = found[key]
            return None if record is None or record.value is None else memory_usage(record)
        case ObjectInfo(key=key, what=what):
            value = _value(found[key])
            return None if value is None else object_info(value, what)
        case GetRange(key=key, start=start, end=end):
            return substring(_value(found[key]) or b"", start, end)
        case Ttl(key=key, milliseconds=milliseconds, absolute=absolute):
            return time_to_live(found[key], now_ms, milliseconds, absolute)
    raise AssertionError(f"not a read: {command!r}")


# A string this long or shorter is stored by Redis in one allocation with its header.
EMBSTR_SIZE_LIMIT = 44
# Redis shares one object for each of these integers (refcount INT_MAX).
SHARED_INTEGERS = 10_000
SHARED_REFCOUNT = 2**31 - 1
LFU_NOT_SELECTED = ErrorReply(
    "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note "
    "that when switching between policies at runtime LRU and LFU data will take some time to "
    "adjust."
)
IDLETIME_NOT_TRACKED = ErrorReply(
    "ERR OBJECT IDLETIME is not supported: a3redis does not track when a key was last read"
)


def object_info(value: bytes, what: str) -> Reply:
    """OBJECT ENCODING, REFCOUNT, FREQ or IDLETIME of a key holding `value`, as Redis 7.2
    would answer for a string SET with it (`tryObjectEncoding`); a3redis keeps no access
    times or frequencies, and with `noeviction` Redis keeps no frequencies either."""
    number = parse_int64(value) if len(value) <= 20 else None
    if what == "encoding":
        if number is not None:
            return b"int"
        return b"embstr" if len(value) <= EMBSTR_SIZE_LIMIT else b"raw"
    if what == "refcount":
        return SHARED_REFCOUNT if number is not None and 0 <= number < SHARED_INTEGERS else 1
    if what == "freq":
        return LFU_NOT_SELECTED
    return IDLETIME_NOT_TRACKED


def time_to_live(record: Record | None, now_ms: int, milliseconds: bool, absolute: bool) -> int:
    """TTL, PTTL, EXPIRETIME, PEXPIRETIME (ttlGenericCommand): -2 for a missing key,
    -1 for one without an expiry; seconds are rounded to the nearest, as Redis does."""
    left = remaining_ms(record, now_ms)
    if left < 0:
        return left
    assert record is not None
    time = record.expires_at_ms if absolute else left
    return time if milliseconds else (time + 500) // 1000


def kept_expiry(current: Record | None, now_ms: int) -> Expiry:
    """SET KEEPTTL: the expiry of the key now (NEVER for a missing key or none)."""
    if current is None or not is_live(current, now_ms) or not current.expires_at_ms:
        return NEVER
    return Expiry(at_ms=current.expires_at_ms)


def _modify(command: ModifyCommand, current: Record | None, now_ms: int) -> tuple[Reply, Decision]:
    """A read-modify-write command's reply and what it writes, on the key's newest record."""
    match command:
        case Expire(expiry=expiry, conditions=conditions):
            decision = UNCHANGED
            for condition in conditions:  # XX with GT or LT: both must hold
                decision = decide_expire(current, now_ms, expiry, condition)
                if not decision.changed:
                    break
            return int(decision.changed), decision
        case Persist():
            decision = decide_persist(current, now_ms)
            return int(decision.changed), decision
        case SetKeepTtl(key=key, value=value):
            return OK, Decision(True, Rewrite(key, value, kept_expiry(current, now_ms)))
        case GetEx(expiry=expiry, invalid=invalid):
            if current is None or not is_live(current, now_ms):
                return None, UNCHANGED
            if invalid is not None:
                return invalid, UNCHANGED
            if expiry is None:
                return current.value, decide_persist(current, now_ms)
            return current.value, decide_expire(current, now_ms, expiry)
    raise AssertionError(f"not a read-modify-write: {command!r}")


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
    encodes a run's replies together). So is each CLIENT KILL: one that ends its own
    connection does so once its reply is sent, and what follows it is not run."""
    if len(requests) == 1:
        return [requests]  # a lone request is a run of its own, whatever it is
    switches = [
        index
        for index, request in enumerate(requests)
        if request
        and (
            (len(request[0]) == 5 and request[0].upper() in _PROTOCOL_SWITCHES)
            or (len(request[0]) == 6 and _is_client_kill(request))
        )
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


def _is_client_kill(request: list[bytes]) -> bool:
    return len(request) > 1 and request[0].upper() == b"CLIENT" and request[1].upper() == b"KILL"


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
    if len(requests) == 1:
        single = _single_key_plan(session, requests[0], wall_ms)
        if single is not None:
            return single
    return plan_in_batches(session, requests, wall_ms)


def plan_in_batches(session: Session, requests: Sequence[Sequence[bytes]], wall_ms: int) -> Plan:
    """`plan` without its lane for a lone GET or SET: every request through the batching
    planner (what `plan` does for everything else)."""
    return _Planner(session, wall_ms).run(requests)


class _SingleKeyPlan(Plan):
    """A run of one plain GET or SET: the plan `plan_in_batches` makes for it, made directly.

    An unpipelined client sends one command per run, most often one of these,
    so they skip the batching machinery (a property test checks that both
    planners agree on the steps, the replies and the session).
    """

    replies_read_the_clock = False

    def __init__(self, wall_ms: int, name: str, step: ReadStep | WriteStep) -> None:
        # Not Plan's __init__: the lists that match requests to their answers are
        # the batching planner's, and `replies` below needs none of them.
        self.wall_ms = wall_ms
        self.steps = [step]
        self.names = [name]
        self.serves = False

    def replies(self, results: Sequence[StepResult], now_ms: int | None = None) -> list[Reply]:
        if len(results) != 1:
            raise ValueError(f"{len(results)} results for 1 step")
        result = results[0]
        if isinstance(result, RequestError):
            return [error_reply(result)]
        if isinstance(self.steps[0], WriteStep):
            return [OK]
        rows: Sequence[Record | None] = result  # type: ignore[assignment]  # a ReadStep's
        if len(rows) != 1:
            raise ValueError(f"step 0: {len(rows)} records for 1 key")
        return [_value(rows[0])]


def _single_key_plan(session: Session, request: Sequence[bytes], wall_ms: int) -> Plan | None:
    """The plan of a lone `GET key` or `SET key value` when nothing about the session
    or the request needs the batching planner (an error, a refusal, a silenced reply);
    else None."""
    words = len(request)
    if words not in (2, 3) or len(request[0]) != 3:
        return None
    if session.closing or session.skip_next_reply or session.replies_off or session.refused_multi:
        return None
    verb = request[0].upper()
    if verb == b"GET" and words == 2:
        name = "get"
    elif verb == b"SET" and words == 3:
        name = "set"
    else:
        return None
    if session.settings.tokens is not None and access_refusal(session, name) is not None:
        return None
    key = request[1]
    value = request[2] if name == "set" else None
    if not session.settings.limits.fits(key, value):
        return None  # the batching planner answers it, in Redis's words
    step: ReadStep | WriteStep
    if value is None:
        step = ReadStep((key,), session.requested_read)
    else:
        step = WriteStep(((key, value),), session.requested_write)
    session.last_command = name
    session.last_command_ms = wall_ms
    return _SingleKeyPlan(wall_ms, name, step)


class _Planner:
    def __init__(self, session: Session, wall_ms: int) -> None:
        self.session = session
        self.wall_ms = wall_ms
        self.limits = session.settings.limits
        self.plan = Plan(wall_ms)
        self.reads: _ReadBatch | None = None
        self.writes: _WriteBatch | None = None
        self.modifies: _ModifyBatch | None = None

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
                reply = self._add(command, name)
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
        self._close_modifies()
        return self.plan

    def _add(self, command: Command | ErrorReply, name: str) -> Reply | _Pending | NoReply:
        if isinstance(command, ErrorReply):
            return command
        if isinstance(command, READ_COMMANDS):
            return self._read(command)
        if isinstance(command, WRITE_COMMANDS):
            return self._write(command, name)
        if isinstance(command, MODIFY_COMMANDS):
            return self._modify(command, name)
        if isinstance(command, SERVER_COMMANDS):
            return self._server(command)
        return answer(self.session, command, self.wall_ms)

    # ----- key reads -------------------------------------------------------------------------

    def _read(self, command: ReadCommand) -> Reply | _Pending:
        keys = _keys_of(command)
        refused = _keys_refusal(self.limits, keys)
        if refused is not None:
            return refused
        self._close_writes()
        if self.modifies is not None:
            self._close_modifies()
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

    def _write(self, command: WriteCommand, name: str) -> Reply | _Pending:
        pairs = _writes_of(command)
        refused = _keys_refusal(self.limits, [key for key, _ in pairs])
        if refused is None:
            refused = _values_refusal(
                self.limits, [value for _, value in pairs if value is not None]
            )
        expiry = command.expiry if isinstance(command, Set) else NEVER
        if refused is None and expiry is not NEVER:
            refused = self._check_expiry(expiry, name)
        if refused is not None:
            return refused
        self._close_reads()
        if self.modifies is not None:
            self._close_modifies()
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
        if expiry is not NEVER:
            batch.expiries[pairs[0][0]] = expiry  # a SET: one key
        elif batch.expiries:
            for key, _ in pairs:
                batch.expiries.pop(key, None)
        batch.waiting.append(waiting)
        return waiting

    def _close_writes(self) -> None:
        batch, self.writes = self.writes, None
        if batch is None:
            return
        read_index = -1
        if batch.pre_read:
            read_index = self._add_step(ReadStep(tuple(batch.pre_read), batch.consistency))
        expiries = None
        if batch.expiries:
            expiries = tuple(batch.expiries.get(key, NEVER) for key in batch.writes)
        index = self._add_step(WriteStep(tuple(batch.writes.items()), batch.consistency, expiries))
        for waiting in batch.waiting:
            waiting.step = index
            if isinstance(waiting, _Deleted):
                waiting.read_step = read_index

    # ----- read-modify-write -----------------------------------------------------------------

    def _modify(self, command: ModifyCommand, name: str) -> Reply | _Pending:
        refused = _keys_refusal(self.limits, (command.key,))
        if refused is None and isinstance(command, SetKeepTtl):
            refused = _values_refusal(self.limits, (command.value,))
        if refused is None and isinstance(command, Expire):
            refused = self._check_expiry(command.expiry, name)
        if (
            isinstance(command, GetEx)
            and command.expiry is not None
            and command.invalid is None
            and self._check_expiry(command.expiry, name) is not None
        ):
            # Answered only if the key exists, as Redis checks GETEX's time.
            command = GetEx(command.key, NEVER, invalid_expire_time(name))
        if refused is not None:
            return refused
        self._close_reads()
        self._close_writes()
        read, write = self.session.requested_read, self.session.requested_write
        batch = self.modifies
        if batch is not None and (
            batch.read_consistency is not read
            or batch.write_consistency is not write
            or len(batch.keys) + 1 > self.limits.max_batch_keys
        ):
            self._close_modifies()
            batch = None
        if batch is None:
            batch = self.modifies = _ModifyBatch(read, write)
        batch.keys[command.key] = None
        waiting = _Modified(command)
        batch.waiting.append(waiting)
        return waiting

    def _close_modifies(self) -> None:
        batch, self.modifies = self.modifies, None
        if batch is None:
            return
        read_index = self._add_step(ReadStep(tuple(batch.keys), batch.read_consistency))
        index = self._add_step(RewriteStep(read_index, batch.write_consistency))
        self.plan._modified[index] = batch.waiting
        for waiting in batch.waiting:
            waiting.step = index

    # ----- the rest --------------------------------------------------------------------------

    def _server(self, command: ServerCommand) -> Reply | _Pending:
        if isinstance(command, Flush) and not self.session.settings.allow_flush:
            return err(
                f"{command.command.upper()} is disabled: it deletes every key in the cluster; "
                "start the nodes with ALLOW_FLUSH=1 to allow it"
            )
        self._close_reads()
        self._close_writes()
        self._close_modifies()
        waiting = _Served()
        waiting.step = self._add_step(
            ServerStep(command, self.session.requested_read, self.session.requested_write)
        )
        return waiting

    def _add_step(self, step: Step) -> int:
        if isinstance(step, ServerStep):
            self.plan.serves = True
        self.plan.steps.append(step)
        return len(self.plan.steps) - 1

    def _check_expiry(self, expiry: Expiry, name: str) -> ErrorReply | None:
        """The store's bound on an expiry, with Redis's text for a time out of range."""
        try:
            self.limits.check_expiry(expiry, self.wall_ms, name)
        except InvalidRequestError:
            return invalid_expire_time(name)
        return None


def _keys_refusal(limits: Limits, keys: Sequence[bytes]) -> ErrorReply | None:
    """The error for keys over the limits (or too many of them), or None."""
    try:
        limits.check_batch(len(keys))
        for key in keys:
            limits.check_key(key)
    except InvalidRequestError as failure:
        return error_reply(failure)
    return None


def _values_refusal(limits: Limits, values: Sequence[bytes]) -> ErrorReply | None:
    """Redis's error for a value over MAX_VALUE_BYTES, or None."""
    limit = limits.max_value_bytes
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
