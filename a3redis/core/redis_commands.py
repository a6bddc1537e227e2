"""Redis commands: the table, the typed commands, and parsing a request into one.

Rules:
- A request is the list of words a client sent (`list[bytes]`, binary-safe).
  `parse` turns it into one typed command (a frozen dataclass below) or the
  `ErrorReply` Redis would answer; it reads nothing but the request and
  changes nothing. Names and options are case-insensitive, as in Redis.
- The checks run in Redis's order: unknown command, then unknown subcommand
  of a container (CLIENT, COMMAND, CONFIG, CLUSTER, FUNCTION, SCRIPT), then
  arity (from the table, Redis's convention), then the command's own
  arguments. The error texts are Redis 7.2's, word for word, where Redis has
  the case; a3redis's own refusals say why and what to use instead.
- Read-modify-write commands (INCR, APPEND, SETNX, SET NX|XX|GET,
  GETSET, GETDEL, MSETNX, WATCH/MULTI/EXEC, ...) are refused: last-write-wins
  replication cannot make them atomic until the store has compare-and-set.
  So are RENAME, RENAMENX and COPY (a key cannot move atomically either),
  WAIT and WAITAOF (a write's level says how many replicas hold it before
  it is acknowledged) and SHUTDOWN (a node stops on SIGTERM); MOVE and
  SWAPDB get Redis's own cluster-mode errors. They stay in the table
  (COMMAND lists them) so a cluster client sends them and shows our reason
  instead of refusing them on its own side. Commands of other types (lists,
  hashes, ...) are unknown, as Redis answers for commands it lacks.
- Expiry (core.expiry): SET EX|PX|EXAT|PXAT, SETEX and PSETEX are plain
  writes carrying an `Expiry`; TTL, PTTL, EXPIRETIME and PEXPIRETIME are
  reads; SET KEEPTTL, GETEX with an option, the EXPIRE family and PERSIST
  read the key, then write it (not atomic: a concurrent write of the key
  may win, by last-write-wins, as with every write). A time is checked as
  Redis does while parsing (an integer, positive where Redis wants it, no
  overflow in milliseconds); the store's own bound (`Limits.check_expiry`,
  which needs the clock) is checked by the planner, with Redis's text
  `invalid expire time in '<command>' command`. GETEX checks its time only
  once the key is found, as Redis does (`GetEx.invalid`).
- Every RequestError becomes a RESP error through ONE table,
  `RESP_ERROR_CODE_OF_KIND`.

The layer's other modules: `redis_command_table` (what COMMAND reports, read
from Redis), `redis_session` (a connection's state and the commands answered
from it), `redis_pipeline` (planning a pipeline into steps and building the
replies).

How a shell drives this (one connection; names from `redis_session` and
`redis_pipeline`):

    settings = ServerSettings(a3redis_version, read_default, write_default,
                              limits, allow_flush)                  # once per node
    session = Session(settings, client_id, peer, wall_ms, local_address)
    for each read from the socket:
        pipeline = plan(session, requests, wall_ms)   # parses, runs session commands
        results = []
        for step in pipeline.steps:                   # in order, one at a time
            try:
                ReadStep   -> records of step.keys at step.consistency (None: default)
                WriteStep  -> write step.writes (value None: a tombstone) with
                              step.expiries (None: no expiry) -> versions
                RewriteStep -> pipeline.rewrites(index, results, wall_ms): a
                              WriteStep to run as above (or the read's error)
                ServerStep -> the Reply for step.command (SCAN, KEYS, INFO, CLUSTER,
                              CONFIG GET, DBSIZE, RANDOMKEY, FLUSH*, LASTSAVE,
                              SAVE/BGSAVE, SLOWLOG, CLIENT LIST via
                              client_list_reply)
            except RequestError as failure:
                result = failure
            results.append(result)
        send(encode_all(pipeline.replies(results, wall_ms), session.protocol))
        if session.closing: close the connection              # QUIT
    metrics: pipeline.names is the full name of each request run, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from a3redis.core.consistency import Consistency
from a3redis.core.errors import ErrorKind, RequestError
from a3redis.core.expiry import NEVER, Condition, Expiry
from a3redis.core.redis_command_table import COMMAND_SPECS, CommandSpec
from a3redis.core.resp_values import ErrorReply
from a3redis.core.validation import InvalidRequestError

# ----- the table -----------------------------------------------------------------------------

TOP_LEVEL: dict[bytes, CommandSpec] = {spec.name.encode(): spec for spec in COMMAND_SPECS}
SUBCOMMANDS: dict[bytes, dict[bytes, CommandSpec]] = {
    spec.name.encode(): {sub.name.split("|", 1)[1].encode(): sub for sub in spec.subcommands}
    for spec in COMMAND_SPECS
    if spec.subcommands
}


def spec_named(name: bytes) -> CommandSpec | None:
    """The spec for a name as COMMAND INFO takes it: `get`, `CLIENT|SETNAME` (any case)."""
    container, bar, sub = name.lower().partition(b"|")
    if not bar:
        return TOP_LEVEL.get(container)
    return SUBCOMMANDS.get(container, {}).get(sub)


# ----- error texts ---------------------------------------------------------------------------

SYNTAX_ERROR = ErrorReply("ERR syntax error")
NOT_AN_INTEGER = ErrorReply("ERR value is not an integer or out of range")

# What each kind of RequestError is called on the wire. The code decides what
# a client does next, so each is chosen for the client's reaction:
# - UNAVAILABLE (too few replicas now) and TIMEOUT (no answer in time; the
#   outcome is unknown): TRYAGAIN. redis-py's RedisCluster retries it after a
#   pause without refreshing its slot map, which would not help: every node
#   coordinates every key with the same replicas. CLUSTERDOWN would make
#   cluster clients rebuild their topology on every failed quorum. A retried
#   SET or DEL is safe under last-write-wins (a DEL's count may differ).
# - NODE_UNAVAILABLE (this node is draining or its store failed: another node
#   can serve): LOADING. redis-py raises BusyLoadingError, a ConnectionError,
#   so the plain client's retry reconnects and RedisCluster moves to another
#   node, which is what the caller should do.
# - INVALID, TOO_LARGE, CONFLICT, UNSATISFIABLE: ERR; retrying the same
#   request cannot help.
# - UNAUTHENTICATED, PERMISSION_DENIED: Redis's own codes (NOAUTH, NOPERM),
#   which redis-py raises as AuthenticationError and NoPermissionError.
RESP_ERROR_CODE_OF_KIND: dict[ErrorKind, str] = {
    ErrorKind.INVALID: "ERR",
    ErrorKind.TOO_LARGE: "ERR",
    ErrorKind.CONFLICT: "ERR",
    ErrorKind.UNSATISFIABLE: "ERR",
    ErrorKind.UNAVAILABLE: "TRYAGAIN",
    ErrorKind.TIMEOUT: "TRYAGAIN",
    ErrorKind.NODE_UNAVAILABLE: "LOADING",
    ErrorKind.UNAUTHENTICATED: "NOAUTH",
    ErrorKind.PERMISSION_DENIED: "NOPERM",
}


def err(text: str) -> ErrorReply:
    """An `ERR` error; the text may start with an upper-case word (`SELECT is not ...`)."""
    return ErrorReply(one_line(f"ERR {text}"))


def one_line(text: str) -> str:
    """Error and status texts are single lines: CR and LF become spaces, as Redis does."""
    return text.replace("\r", " ").replace("\n", " ")


def error_reply(failure: RequestError) -> ErrorReply:
    """The RESP error for a request that failed below the front end."""
    return ErrorReply(one_line(f"{RESP_ERROR_CODE_OF_KIND[failure.kind]} {failure}"))


def shown(word: bytes) -> str:
    """A client's bytes inside an error text (Redis copies them raw; ours must be text)."""
    return word.decode("utf-8", "backslashreplace")


def unknown_command(request: Sequence[bytes]) -> ErrorReply:
    """Redis's text: the name (128 bytes at most) and the first arguments, quoted."""
    args = b""
    for word in request[1:]:
        if len(args) >= 128:
            break
        args += b"'" + word[: 128 - len(args)] + b"' "
    text = f"ERR unknown command '{shown(request[0][:128])}', with args beginning with: "
    return ErrorReply(one_line(text + shown(args)))


def unknown_subcommand(request: Sequence[bytes]) -> ErrorReply:
    container = shown(request[0]).upper()
    return ErrorReply(
        one_line(f"ERR unknown subcommand '{shown(request[1][:128])}'. Try {container} HELP.")
    )


def wrong_arity(spec: CommandSpec) -> ErrorReply:
    return ErrorReply(f"ERR wrong number of arguments for '{spec.name}' command")


def arity_fits(arity: int, words: int) -> bool:
    return words == arity if arity > 0 else words >= -arity


def resolve(request: Sequence[bytes]) -> tuple[CommandSpec | None, ErrorReply | None]:
    """The command a request names (None if unknown), and Redis's error if any.

    A known command with the wrong number of words comes with its spec and
    the arity error, so it can still be counted under its name.
    """
    name = request[0].lower()
    spec = TOP_LEVEL.get(name)
    if spec is None:
        return None, unknown_command(request)
    if spec.subcommands and len(request) >= 2:
        sub = SUBCOMMANDS[name].get(request[1].lower())
        if sub is None:
            return None, unknown_subcommand(request)
        spec = sub
    if not arity_fits(spec.arity, len(request)):
        return spec, wrong_arity(spec)
    return spec, None


# ----- numbers as Redis reads them -----------------------------------------------------------

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1


def parse_int64(word: bytes) -> int | None:
    """Redis's string2ll: an optional '-', digits without leading zeros, in int64; else None."""
    if not word or len(word) > 20:
        return None
    digits = word[1:] if word[:1] == b"-" else word
    if not digits.isdigit() or (digits[:1] == b"0" and word != b"0"):
        return None
    value = int(word)
    return value if INT64_MIN <= value <= INT64_MAX else None


def parse_scan_cursor(word: bytes) -> int | None:
    """Redis's parseScanCursorOrReply (strtoul): sign allowed, a negative wraps; else None.

    Like strtoul, an empty cursor reads as 0 and `-1` as 2^64-1; leading
    white space, trailing bytes and values past 2^64-1 are refused.
    """
    if word[:1].isspace():
        return None
    sign, digits = (word[:1], word[1:]) if word[:1] in (b"+", b"-") else (b"", word)
    if not digits:
        return 0 if not word else None
    if not digits.isdigit() or len(digits) > 40:
        return None
    value = int(digits)
    if value > UINT64_MAX:
        return None
    return (-value) % 2**64 if sign == b"-" else value


# ----- the typed commands --------------------------------------------------------------------
# Key reads: batched into one read of the distinct keys.


@dataclass(frozen=True, slots=True)
class Get:
    key: bytes


@dataclass(frozen=True, slots=True)
class MGet:
    keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Exists:
    keys: tuple[bytes, ...]  # a key named twice counts twice, as in Redis


@dataclass(frozen=True, slots=True)
class Type:
    key: bytes


@dataclass(frozen=True, slots=True)
class Strlen:
    key: bytes


@dataclass(frozen=True, slots=True)
class GetRange:
    key: bytes
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Touch:
    keys: tuple[bytes, ...]  # answers how many exist; nothing is touched (no LRU here)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """OBJECT ENCODING|REFCOUNT|FREQ|IDLETIME key (`what`, lower case)."""

    key: bytes
    what: str


@dataclass(frozen=True, slots=True)
class MemoryUsage:
    """MEMORY USAGE key: the bytes a node holds for the key (nil when it has no value)."""

    key: bytes


@dataclass(frozen=True, slots=True)
class Ttl:
    """TTL, PTTL, EXPIRETIME, PEXPIRETIME: -2 missing, -1 no expiry, else the time."""

    key: bytes
    milliseconds: bool  # PTTL, PEXPIRETIME; else seconds, rounded as Redis does
    absolute: bool  # EXPIRETIME, PEXPIRETIME: the expiry itself; else the time left


# Key writes: batched into one write; the last write of a key wins.


@dataclass(frozen=True, slots=True)
class Set:
    """SET (with EX, PX, EXAT or PXAT: an expiry), SETEX, PSETEX."""

    key: bytes
    value: bytes
    expiry: Expiry = NEVER


@dataclass(frozen=True, slots=True)
class MSet:
    pairs: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Del:
    keys: tuple[bytes, ...]  # DEL and UNLINK alike: tombstones


# Read-modify-write: the key is read, the decision made on its record, and the
# result written (a read step, then a rewrite step, shared by consecutive ones).


@dataclass(frozen=True, slots=True)
class SetKeepTtl:
    """SET key value KEEPTTL: the new value, with the expiry the key has now."""

    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class GetEx:
    """GETEX key with EX, PX, EXAT, PXAT (`expiry`) or PERSIST; without one it is a Get."""

    key: bytes
    expiry: Expiry | None  # None: PERSIST
    invalid: ErrorReply | None = None  # a bad time, answered only if the key exists


@dataclass(frozen=True, slots=True)
class Expire:
    """EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT (a time already past: `Expiry(at_ms=1)`)."""

    key: bytes
    expiry: Expiry
    conditions: tuple[Condition, ...]  # all must hold; (ALWAYS,) for none


@dataclass(frozen=True, slots=True)
class Persist:
    key: bytes


# Answered by the shell, which has the node: a step of its own.


@dataclass(frozen=True, slots=True)
class Keys:
    pattern: bytes


@dataclass(frozen=True, slots=True)
class Scan:
    cursor: int  # 0 to 2^64-1; whether the node knows it is the cursor table's business
    match: bytes | None
    count: int  # Redis's default is 10
    type: bytes | None  # as given; only `string` (any case, as Redis compares) matches here


@dataclass(frozen=True, slots=True)
class RandomKey:
    pass


@dataclass(frozen=True, slots=True)
class DbSize:
    pass


@dataclass(frozen=True, slots=True)
class Flush:
    """FLUSHALL or FLUSHDB (one keyspace: the same); planned only when ALLOW_FLUSH is set."""

    command: str  # "flushall" or "flushdb"
    asynchronous: bool | None  # ASYNC, SYNC, or neither


@dataclass(frozen=True, slots=True)
class Info:
    sections: tuple[bytes, ...]  # as given; empty for the default sections


@dataclass(frozen=True, slots=True)
class ConfigGet:
    parameters: tuple[bytes, ...]  # glob patterns


@dataclass(frozen=True, slots=True)
class ConfigSet:
    pairs: tuple[tuple[bytes, bytes], ...]  # (parameter, value), as given


@dataclass(frozen=True, slots=True)
class LastSave:
    pass


@dataclass(frozen=True, slots=True)
class Save:
    """SAVE and BGSAVE: every write this node has taken is made durable now."""

    background: bool


@dataclass(frozen=True, slots=True)
class Monitor:
    """MONITOR: this connection receives a line for each command the node runs."""


@dataclass(frozen=True, slots=True)
class SlowLogGet:
    count: int | None  # None: the default (10); -1: every entry


@dataclass(frozen=True, slots=True)
class SlowLogLen:
    pass


@dataclass(frozen=True, slots=True)
class SlowLogReset:
    pass


@dataclass(frozen=True, slots=True)
class Cluster:
    subcommand: str  # lower case, one of the table's: info, slots, shards, nodes, myid, ...
    args: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ClientList:
    type: bytes | None  # CLIENT LIST TYPE t: normal, master, replica, pubsub (lower case)
    ids: tuple[int, ...] | None  # CLIENT LIST ID id...


@dataclass(frozen=True, slots=True)
class ClientKill:
    """CLIENT KILL ip:port (`old_form`: OK or an error), or with filters (a count).
    Every filter given must match; `skip_me`: never this connection."""

    addr: bytes | None = None
    laddr: bytes | None = None
    client_id: int | None = None
    type: bytes | None = None  # normal, master, replica, pubsub (lower case)
    user: bytes | None = None
    skip_me: bool = True
    old_form: bool = False


# Answered from the session and the table alone, while planning.


@dataclass(frozen=True, slots=True)
class Ping:
    message: bytes | None


@dataclass(frozen=True, slots=True)
class Echo:
    message: bytes


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Reset:
    pass


@dataclass(frozen=True, slots=True)
class Hello:
    protocol: int | None
    username: bytes | None
    password: bytes | None
    name: bytes | None


@dataclass(frozen=True, slots=True)
class Auth:
    username: bytes | None  # None: the one-argument form
    password: bytes


@dataclass(frozen=True, slots=True)
class Select:
    index: int


@dataclass(frozen=True, slots=True)
class ClientSetName:
    name: bytes


@dataclass(frozen=True, slots=True)
class ClientGetName:
    pass


@dataclass(frozen=True, slots=True)
class ClientId:
    pass


@dataclass(frozen=True, slots=True)
class ClientSetInfo:
    attribute: str  # "lib-name" or "lib-ver"
    value: bytes


@dataclass(frozen=True, slots=True)
class ClientInfo:
    pass


@dataclass(frozen=True, slots=True)
class ClientNoEvict:
    on: bool


@dataclass(frozen=True, slots=True)
class ClientNoTouch:
    on: bool


@dataclass(frozen=True, slots=True)
class ClientReply:
    mode: str  # "on", "off" or "skip"


@dataclass(frozen=True, slots=True)
class Help:
    container: str  # lower case: client, command, config, cluster, function, script


@dataclass(frozen=True, slots=True)
class CommandTable:
    """COMMAND with no subcommand: every command's info."""


@dataclass(frozen=True, slots=True)
class CommandCount:
    pass


@dataclass(frozen=True, slots=True)
class CommandInfo:
    names: tuple[bytes, ...]  # empty: every command


@dataclass(frozen=True, slots=True)
class CommandDocs:
    names: tuple[bytes, ...]  # empty: every command


@dataclass(frozen=True, slots=True)
class CommandList:
    filter_by: str | None  # "module", "aclcat" or "pattern"
    filter_value: bytes


@dataclass(frozen=True, slots=True)
class Time:
    pass


@dataclass(frozen=True, slots=True)
class ReplicationRole:
    pass


@dataclass(frozen=True, slots=True)
class ModuleList:
    """MODULE LIST: a3redis loads no modules."""


@dataclass(frozen=True, slots=True)
class NothingToFlush:
    """FUNCTION FLUSH and SCRIPT FLUSH: a3redis has no functions or scripts; `OK`."""

    command: str


@dataclass(frozen=True, slots=True)
class ReadOnly:
    pass


@dataclass(frozen=True, slots=True)
class ReadWrite:
    pass


@dataclass(frozen=True, slots=True)
class SetConsistency:
    """A3.CONSISTENCY [READ level] [WRITE level]; neither: report the levels."""

    read: Consistency | None
    write: Consistency | None


ReadCommand = (
    Get | MGet | Exists | Type | Strlen | GetRange | Touch | Ttl | MemoryUsage | ObjectInfo
)
WriteCommand = Set | MSet | Del
ModifyCommand = SetKeepTtl | GetEx | Expire | Persist
ServerCommand = (
    Keys
    | Scan
    | RandomKey
    | DbSize
    | Flush
    | Info
    | ConfigGet
    | ConfigSet
    | LastSave
    | Save
    | Monitor
    | SlowLogGet
    | SlowLogLen
    | SlowLogReset
    | Cluster
    | ClientList
    | ClientKill
)
SessionCommand = (
    Ping
    | Echo
    | Quit
    | Reset
    | Hello
    | Auth
    | Select
    | ClientSetName
    | ClientGetName
    | ClientId
    | ClientSetInfo
    | ClientInfo
    | ClientNoEvict
    | ClientNoTouch
    | ClientReply
    | Help
    | CommandTable
    | CommandCount
    | CommandInfo
    | CommandDocs
    | CommandList
    | Time
    | ReplicationRole
    | ModuleList
    | NothingToFlush
    | ReadOnly
    | ReadWrite
    | SetConsistency
)
Command = ReadCommand | WriteCommand | ModifyCommand | ServerCommand | SessionCommand

READ_COMMANDS = (Get, MGet, Exists, Type, Strlen, GetRange, Touch, Ttl, MemoryUsage, ObjectInfo)
WRITE_COMMANDS = (Set, MSet, Del)
MODIFY_COMMANDS = (SetKeepTtl, GetEx, Expire, Persist)
SERVER_COMMANDS = (
    Keys,
    Scan,
    RandomKey,
    DbSize,
    Flush,
    Info,
    ConfigGet,
    ConfigSet,
    LastSave,
    Save,
    Monitor,
    SlowLogGet,
    SlowLogLen,
    SlowLogReset,
    Cluster,
    ClientList,
    ClientKill,
)


# ----- refusals ------------------------------------------------------------------------------

_LWW = (
    "a3redis replicates with last-write-wins and cannot make a read-modify-write atomic "
    "across replicas (no compare-and-set yet)"
)
_INSTEAD = {
    "incr": "GET the value and SET the new one",
    "incrby": "GET the value and SET the new one",
    "incrbyfloat": "GET the value and SET the new one",
    "decr": "GET the value and SET the new one",
    "decrby": "GET the value and SET the new one",
    "append": "GET the value and SET the longer one",
    "setrange": "GET the value and SET the changed one",
    "setnx": "SET without the condition",
    "msetnx": "MSET without the condition",
    "getset": "GET, then SET",
    "getdel": "GET, then DEL",
}
_TRANSACTIONS = ("watch", "unwatch", "multi", "exec", "discard")
_MOVES = {
    "rename": "GET the value, SET it under the new name, then DEL the old one",
    "renamenx": "GET the value, SET it under the new name, then DEL the old one",
    "copy": "GET the value and SET it under the new name",
}
# Redis's own texts: a Redis cluster has only database 0, and so has a3redis.
_CLUSTER_MODE = {
    "move": "MOVE is not allowed in cluster mode",
    "swapdb": "SWAPDB is not allowed in cluster mode",
}
_OTHER_REFUSALS = {
    "wait": (
        "WAIT is not supported: a3redis acknowledges a write only once the replicas its "
        "write level asks for hold it; choose the level with A3.CONSISTENCY WRITE all"
    ),
    "waitaof": (
        "WAITAOF is not supported: a3redis acknowledges a write only once the replicas its "
        "write level asks for hold it (durably with FSYNC=always); choose the level with "
        "A3.CONSISTENCY WRITE all"
    ),
    "shutdown": (
        "SHUTDOWN is not supported over the Redis protocol: stop the node with SIGTERM "
        "(it drains its clients), or take it out of the cluster with "
        "`a3redis cluster decommission`"
    ),
}


def refusal(name: str) -> ErrorReply | None:
    """The honest error for a command a3redis lists but does not run, or None."""
    upper = name.upper()
    if name in _INSTEAD:
        return err(
            f"{upper} is not supported: {_LWW}; {_INSTEAD[name]} "
            "(a concurrent writer may win between the two)"
        )
    if name in _MOVES:
        return err(
            f"{upper} is not supported: {_LWW}; {_MOVES[name]} "
            "(a concurrent writer may win in between)"
        )
    if name in _CLUSTER_MODE:
        return err(_CLUSTER_MODE[name])
    if name in _OTHER_REFUSALS:
        return err(_OTHER_REFUSALS[name])
    if name in _TRANSACTIONS:
        return err(
            f"{upper} is not supported: {_LWW}, so there are no transactions; send the "
            "commands without MULTI/EXEC (redis-py: pipeline(transaction=False)), "
            "which still pipelines them"
        )
    return None


def set_option_refusal(option: str) -> ErrorReply:
    return err(f"SET {option.upper()} is not supported: {_LWW}; use a plain SET")


# ----- parsing -------------------------------------------------------------------------------


UNKNOWN = "unknown"  # the name `parse_named` gives a command that is not in the table


def parse(request: Sequence[bytes]) -> Command | ErrorReply:
    """The typed command a request asks for, or the error Redis would answer."""
    return parse_named(request)[1]


def parse_named(request: Sequence[bytes]) -> tuple[str, Command | ErrorReply]:
    """`parse`, with the command's full name (`get`, `client|setname`) or UNKNOWN.

    The name is the table's, for metrics and CLIENT LIST's `cmd=`; a known
    command with bad arguments still has its name.
    """
    if not request:
        return UNKNOWN, unknown_command([b""])
    spec, failure = resolve(request)
    if spec is None or failure is not None:
        return (UNKNOWN if spec is None else spec.name), failure or unknown_command(request)
    parser = _PARSERS.get(spec.name)
    if parser is not None:
        return spec.name, parser(request)
    refused = refusal(spec.name)
    if refused is not None:
        return spec.name, refused
    if spec.name == "debug":
        return spec.name, err(
            "DEBUG is not supported: a3redis has no single process holding the data to "
            "inspect or crash; see INFO, /metrics and /membership on the node's HTTP port"
        )
    raise AssertionError(f"no parser for {spec.name}")  # every table entry has one


def _keys(request: Sequence[bytes]) -> tuple[bytes, ...]:
    return tuple(request[1:])


# ----- expiry options and times ----------------------------------------------------------------
# SET's and GETEX's options as Redis's parseExtendedStringArgumentsOrReply reads
# them: an option may repeat (the last time counts) but not follow one it
# excludes; the time options take the next word.

_TIME_OPTIONS = ("ex", "px", "exat", "pxat")
_EXCLUDES: dict[str, tuple[str, ...]] = {
    "nx": ("xx",),
    "xx": ("nx",),
    "get": (),
    "keepttl": ("persist", *_TIME_OPTIONS),
    "persist": ("keepttl", *_TIME_OPTIONS),
    **{option: ("keepttl", "persist", *_TIME_OPTIONS) for option in _TIME_OPTIONS},
}
_SET_OPTIONS = ("nx", "xx", "get", "keepttl", *_TIME_OPTIONS)
_GETEX_OPTIONS = ("persist", *_TIME_OPTIONS)


class _StringOptions:
    __slots__ = ("given", "time_option", "time_word")

    def __init__(self) -> None:
        self.given: dict[str, None] = {}  # in the order given
        self.time_option: str | None = None
        self.time_word = b""


def _string_options(
    request: Sequence[bytes], first: int, allowed: tuple[str, ...]
) -> _StringOptions | ErrorReply:
    options = _StringOptions()
    index = first
    while index < len(request):
        option = request[index].lower().decode("latin-1")
        if option not in allowed or any(
            other in options.given and other != option for other in _EXCLUDES[option]
        ):
            return SYNTAX_ERROR
        if option in _TIME_OPTIONS:
            if index + 1 >= len(request):
                return SYNTAX_ERROR
            index += 1
            options.time_option, options.time_word = option, request[index]
        options.given[option] = None
        index += 1
    return options


def invalid_expire_time(command: str) -> ErrorReply:
    """Redis's addReplyErrorExpireTime; `command` is the table's name (`set`, `getex`)."""
    return ErrorReply(f"ERR invalid expire time in '{command}' command")


def _string_expiry(option: str, word: bytes, command: str) -> Expiry | ErrorReply:
    """The time of EX, PX, EXAT or PXAT (getExpireMillisecondsOrReply): a positive
    integer whose milliseconds fit in 64 bits."""
    number = parse_int64(word)
    if number is None:
        return NOT_AN_INTEGER
    seconds = option in ("ex", "exat")
    if number <= 0 or (seconds and number > INT64_MAX // 1000):
        return invalid_expire_time(command)
    milliseconds = number * 1000 if seconds else number
    return Expiry(ttl_ms=milliseconds) if option in ("ex", "px") else Expiry(at_ms=milliseconds)


def _set(request: Sequence[bytes]) -> Command | ErrorReply:
    if len(request) == 3:  # the common case: no option
        return Set(request[1], request[2])
    options = _string_options(request, 3, _SET_OPTIONS)
    if isinstance(options, ErrorReply):
        return options
    expiry = NEVER
    if options.time_option is not None:
        timed = _string_expiry(options.time_option, options.time_word, "set")
        if isinstance(timed, ErrorReply):
            return timed
        expiry = timed
    for option in options.given:
        if option in ("nx", "xx", "get"):
            return set_option_refusal(option)
    if "keepttl" in options.given:
        return SetKeepTtl(request[1], request[2])
    return Set(request[1], request[2], expiry)


def _setex(request: Sequence[bytes]) -> Command | ErrorReply:
    name = request[0].lower().decode("latin-1")
    expiry = _string_expiry("px" if name == "psetex" else "ex", request[2], name)
    if isinstance(expiry, ErrorReply):
        return expiry
    return Set(request[1], request[3], expiry)


def _getex(request: Sequence[bytes]) -> Command | ErrorReply:
    options = _string_options(request, 2, _GETEX_OPTIONS)
    if isinstance(options, ErrorReply):
        return options
    if options.time_option is None:
        return GetEx(request[1], None) if "persist" in options.given else Get(request[1])
    expiry = _string_expiry(options.time_option, options.time_word, "getex")
    if isinstance(expiry, ErrorReply):
        return GetEx(request[1], NEVER, expiry)
    return GetEx(request[1], expiry)


_CONDITIONS = {b"nx": Condition.NX, b"xx": Condition.XX, b"gt": Condition.GT, b"lt": Condition.LT}
# C's LLONG_MIN / 1000 (division truncates toward zero).
_INT64_MIN_SECONDS = -(-INT64_MIN // 1000)


def _expire(request: Sequence[bytes]) -> Command | ErrorReply:
    """EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT as expireGenericCommand checks them: the
    options, then the integer, then the milliseconds' overflow (the store's bound,
    which needs the clock, is the planner's)."""
    name = request[0].lower()
    given: dict[Condition, None] = {}
    for word in request[3:]:
        condition = _CONDITIONS.get(word.lower())
        if condition is None:
            return err(f"Unsupported option {shown(word)}")
        given[condition] = None
    if Condition.NX in given and len(given) > 1:
        return err("NX and XX, GT or LT options at the same time are not compatible")
    if Condition.GT in given and Condition.LT in given:
        return err("GT and LT options at the same time are not compatible")
    number = parse_int64(request[2])
    if number is None:
        return NOT_AN_INTEGER
    if name in (b"expire", b"expireat"):
        if not _INT64_MIN_SECONDS <= number <= INT64_MAX // 1000:
            return invalid_expire_time(name.decode())
        number *= 1000
    relative = name in (b"expire", b"pexpire")
    if number <= 0:
        # Already past (a relative time from now, or an instant before 1970): the
        # key is deleted, as in Redis.
        expiry = Expiry(at_ms=1)
    else:
        expiry = Expiry(ttl_ms=number) if relative else Expiry(at_ms=number)
    # XX may come with GT or LT: both must hold.
    return Expire(request[1], expiry, tuple(given) or (Condition.ALWAYS,))


def _mset(request: Sequence[bytes]) -> Command | ErrorReply:
    if len(request) % 2 == 0:
        return wrong_arity(TOP_LEVEL[b"mset"])
    return MSet(tuple(zip(request[1::2], request[2::2], strict=True)))


def _getrange(request: Sequence[bytes]) -> Command | ErrorReply:
    start, end = parse_int64(request[2]), parse_int64(request[3])
    if start is None or end is None:
        return NOT_AN_INTEGER
    return GetRange(request[1], start, end)


def _scan(request: Sequence[bytes]) -> Command | ErrorReply:
    cursor = parse_scan_cursor(request[1])
    if cursor is None:
        return err("invalid cursor")
    match: bytes | None = None
    count = 10
    kind: bytes | None = None
    index = 2
    while index < len(request):
        option = request[index].lower()
        if index + 1 >= len(request) or option not in (b"count", b"match", b"type"):
            return SYNTAX_ERROR
        value = request[index + 1]
        if option == b"count":
            number = parse_int64(value)
            if number is None:
                return NOT_AN_INTEGER
            if number < 1:
                return SYNTAX_ERROR
            count = number
        elif option == b"match":
            match = value
        else:
            kind = value
        index += 2
    return Scan(cursor, match, count, kind)


def _flush(request: Sequence[bytes]) -> Command | ErrorReply:
    name = request[0].lower().decode("latin-1")
    if len(request) == 1:
        return Flush(name, None)
    option = request[1].lower()
    if len(request) == 2 and option in (b"sync", b"async"):
        return Flush(name, option == b"async")
    return SYNTAX_ERROR


def _ping(request: Sequence[bytes]) -> Command | ErrorReply:
    if len(request) > 2:
        return wrong_arity(TOP_LEVEL[b"ping"])
    return Ping(request[1] if len(request) == 2 else None)


def _hello(request: Sequence[bytes]) -> Command | ErrorReply:
    protocol: int | None = None
    if len(request) >= 2:
        number = parse_int64(request[1])
        if number is None:
            return err("Protocol version is not an integer or out of range")
        if number not in (2, 3):
            return ErrorReply("NOPROTO unsupported protocol version")
        protocol = number
    username = password = name = None
    index = 2
    while index < len(request):
        option = request[index].lower()
        more = len(request) - 1 - index
        if option == b"auth" and more >= 2:
            username, password = request[index + 1], request[index + 2]
            index += 3
        elif option == b"setname" and more >= 1:
            name = request[index + 1]
            if not valid_client_name(name):
                return CLIENT_NAME_ERROR
            index += 2
        else:
            return err(f"Syntax error in HELLO option '{shown(request[index])}'")
    return Hello(protocol, username, password, name)


def _auth(request: Sequence[bytes]) -> Command | ErrorReply:
    if len(request) > 3:
        return SYNTAX_ERROR
    if len(request) == 2:
        return Auth(None, request[1])
    return Auth(request[1], request[2])


def _select(request: Sequence[bytes]) -> Command | ErrorReply:
    index = parse_int64(request[1])
    if index is None:
        return NOT_AN_INTEGER
    if not -(2**31) <= index < 2**31:
        return err("value is out of range")
    return Select(index)


CLIENT_NAME_ERROR = err("Client names cannot contain spaces, newlines or special characters.")


def valid_client_attribute(value: bytes) -> bool:
    """Redis's validateClientAttr: printable ASCII without spaces, so CLIENT LIST splits."""
    return all(33 <= byte <= 126 for byte in value)


def valid_client_name(name: bytes) -> bool:
    return valid_client_attribute(name)


def _on_off(
    request: Sequence[bytes], make: type[ClientNoEvict | ClientNoTouch]
) -> Command | ErrorReply:
    option = request[2].lower()
    if option not in (b"on", b"off"):
        return SYNTAX_ERROR
    return make(option == b"on")


def _client(request: Sequence[bytes]) -> Command | ErrorReply:
    sub = request[1].lower()
    if sub == b"setname":
        return ClientSetName(request[2]) if valid_client_name(request[2]) else CLIENT_NAME_ERROR
    if sub == b"getname":
        return ClientGetName()
    if sub == b"id":
        return ClientId()
    if sub == b"info":
        return ClientInfo()
    if sub == b"setinfo":
        attribute = request[2].lower()
        if attribute not in (b"lib-name", b"lib-ver"):
            return err(f"Unrecognized option '{shown(request[2])}'")
        if not valid_client_attribute(request[3]):
            return err(
                f"{shown(request[2])} cannot contain spaces, newlines or special characters."
            )
        return ClientSetInfo(attribute.decode(), request[3])
    if sub == b"no-evict":
        return _on_off(request, ClientNoEvict)
    if sub == b"no-touch":
        return _on_off(request, ClientNoTouch)
    if sub == b"reply":
        mode = request[2].lower()
        if mode not in (b"on", b"off", b"skip"):
            return SYNTAX_ERROR
        return ClientReply(mode.decode())
    if sub == b"list":
        return _client_list(request)
    if sub == b"kill":
        return _client_kill(request)
    return Help("client")


_CLIENT_TYPES = (b"normal", b"master", b"replica", b"slave", b"pubsub")


def _client_kill(request: Sequence[bytes]) -> Command | ErrorReply:
    """As Redis 7.2's clientCommand: three words are the old form (which may kill this
    connection); more are option-value pairs, checked in order."""
    if len(request) == 3:
        return ClientKill(addr=request[2], skip_me=False, old_form=True)
    filters: dict[str, Any] = {}
    for index in range(2, len(request), 2):
        option = request[index].lower()
        if index + 1 >= len(request):
            return SYNTAX_ERROR
        value = request[index + 1]
        if option == b"id":
            number = parse_int64(value)
            if number is None or number < 1:
                return err("client-id should be greater than 0")
            filters["client_id"] = number
        elif option == b"type":
            kind = value.lower()
            if kind not in _CLIENT_TYPES:
                return err(f"Unknown client type '{shown(value)}'")
            filters["type"] = b"replica" if kind == b"slave" else kind
        elif option == b"addr":
            filters["addr"] = value
        elif option == b"laddr":
            filters["laddr"] = value
        elif option == b"user":
            if value != b"default":  # the one user a3redis has (tokens are its passwords)
                return err(f"No such user '{shown(value)}'")
            filters["user"] = value
        elif option == b"skipme":
            if value.lower() not in (b"yes", b"no"):
                return SYNTAX_ERROR
            filters["skip_me"] = value.lower() == b"yes"
        else:
            return SYNTAX_ERROR
    return ClientKill(**filters)


def _client_list(request: Sequence[bytes]) -> Command | ErrorReply:
    if len(request) == 2:
        return ClientList(None, None)
    option = request[2].lower()
    if len(request) == 4 and option == b"type":
        kind = request[3].lower()
        if kind not in (b"normal", b"master", b"replica", b"slave", b"pubsub"):
            return err(f"Unknown client type '{shown(request[3])}'")
        return ClientList(b"replica" if kind == b"slave" else kind, None)
    if len(request) > 3 and option == b"id":
        ids: list[int] = []
        for word in request[3:]:
            number = parse_int64(word)
            if number is None:
                return err("Invalid client ID")
            ids.append(number)
        return ClientList(None, tuple(ids))
    return SYNTAX_ERROR


def _command(request: Sequence[bytes]) -> Command | ErrorReply:
    if len(request) == 1:
        return CommandTable()
    sub = request[1].lower()
    if sub == b"count":
        return CommandCount()
    if sub == b"info":
        return CommandInfo(tuple(request[2:]))
    if sub == b"docs":
        return CommandDocs(tuple(request[2:]))
    if sub == b"list":
        if len(request) == 2:
            return CommandList(None, b"")
        kind = request[3].lower() if len(request) == 5 else b""
        if request[2].lower() != b"filterby" or kind not in (b"module", b"aclcat", b"pattern"):
            return SYNTAX_ERROR
        return CommandList(kind.decode(), request[4])
    return Help("command")


def _config(request: Sequence[bytes]) -> Command | ErrorReply:
    sub = request[1].lower()
    if sub == b"get":
        return ConfigGet(tuple(request[2:]))
    if sub == b"set":
        if len(request) % 2:
            return SYNTAX_ERROR  # parameters and values come in pairs
        return ConfigSet(tuple(zip(request[2::2], request[3::2], strict=True)))
    return Help("config")


def _cluster(request: Sequence[bytes]) -> Command | ErrorReply:
    sub = request[1].lower().decode("latin-1")
    if sub == "help":
        return Help("cluster")
    return Cluster(sub, tuple(request[2:]))


def _nothing_to_flush(request: Sequence[bytes]) -> Command | ErrorReply:
    container = request[0].lower().decode("latin-1")
    if request[1].lower() == b"help":
        return Help(container)
    if len(request) == 2 or (len(request) == 3 and request[2].lower() in (b"sync", b"async")):
        return NothingToFlush(container)
    if container == "function" and len(request) > 3:
        return err(
            f"unknown subcommand or wrong number of arguments for '{shown(request[1][:128])}'. "
            "Try FUNCTION HELP."
        )
    verb = "supports" if container == "function" else "support"  # Redis's two texts differ so
    return err(f"{container.upper()} FLUSH only {verb} SYNC|ASYNC option")


def _bgsave(request: Sequence[bytes]) -> Command | ErrorReply:
    if len(request) == 1 or (len(request) == 2 and request[1].lower() == b"schedule"):
        return Save(background=True)
    return SYNTAX_ERROR


def _memory(request: Sequence[bytes]) -> Command | ErrorReply:
    if request[1].lower() == b"help":
        return Help("memory")
    index = 3
    while index < len(request):  # [SAMPLES count]: a string has nothing to sample
        if request[index].lower() != b"samples" or index + 1 >= len(request):
            return SYNTAX_ERROR
        samples = parse_int64(request[index + 1])
        if samples is None:
            return NOT_AN_INTEGER
        if samples < 0:
            return SYNTAX_ERROR
        index += 2
    return MemoryUsage(request[2])


def _object(request: Sequence[bytes]) -> Command | ErrorReply:
    sub = request[1].lower()
    if sub == b"help":
        return Help("object")
    return ObjectInfo(request[2], sub.decode())


def _module(request: Sequence[bytes]) -> Command | ErrorReply:
    if request[1].lower() == b"list":
        return ModuleList()
    return Help("module")


def _slowlog(request: Sequence[bytes]) -> Command | ErrorReply:
    sub = request[1].lower()
    if sub == b"help":
        return Help("slowlog")
    if sub == b"len":
        return SlowLogLen()
    if sub == b"reset":
        return SlowLogReset()
    if len(request) == 2:
        return SlowLogGet(None)
    if len(request) > 3:
        return err(
            f"unknown subcommand or wrong number of arguments for '{shown(request[1][:128])}'. "
            "Try SLOWLOG HELP."
        )
    count = parse_int64(request[2])
    if count is None or count < -1:
        return err("count should be greater than or equal to -1")
    return SlowLogGet(count)


def _consistency(request: Sequence[bytes]) -> Command | ErrorReply:
    levels: dict[bytes, Consistency] = {}
    index = 1
    while index < len(request):
        option = request[index].lower()
        if option not in (b"read", b"write") or index + 1 >= len(request):
            return err(
                "syntax error; expected A3.CONSISTENCY [READ level] [WRITE level] "
                "with levels one, quorum, all or local"
            )
        try:
            levels[option] = Consistency.parse(request[index + 1].decode("utf-8", "replace"))
        except InvalidRequestError as failure:
            return err(one_line(str(failure)))
        index += 2
    return SetConsistency(levels.get(b"read"), levels.get(b"write"))


_PARSERS: dict[str, Callable[[Sequence[bytes]], Command | ErrorReply]] = {
    "get": lambda request: Get(request[1]),
    "set": _set,
    "mget": lambda request: MGet(_keys(request)),
    "mset": _mset,
    "del": lambda request: Del(_keys(request)),
    "unlink": lambda request: Del(_keys(request)),
    "exists": lambda request: Exists(_keys(request)),
    "type": lambda request: Type(request[1]),
    "strlen": lambda request: Strlen(request[1]),
    "getrange": _getrange,
    "substr": _getrange,  # GETRANGE's name before Redis 2.0, still answered
    "keys": lambda request: Keys(request[1]),
    "scan": _scan,
    "randomkey": lambda request: RandomKey(),
    "touch": lambda request: Touch(_keys(request)),
    "setex": _setex,
    "psetex": _setex,
    "getex": _getex,
    "expire": _expire,
    "pexpire": _expire,
    "expireat": _expire,
    "pexpireat": _expire,
    "persist": lambda request: Persist(request[1]),
    "ttl": lambda request: Ttl(request[1], milliseconds=False, absolute=False),
    "pttl": lambda request: Ttl(request[1], milliseconds=True, absolute=False),
    "expiretime": lambda request: Ttl(request[1], milliseconds=False, absolute=True),
    "pexpiretime": lambda request: Ttl(request[1], milliseconds=True, absolute=True),
    "flushall": _flush,
    "flushdb": _flush,
    "dbsize": lambda request: DbSize(),
    "ping": _ping,
    "echo": lambda request: Echo(request[1]),
    "quit": lambda request: Quit(),
    "reset": lambda request: Reset(),
    "hello": _hello,
    "auth": _auth,
    "select": _select,
    "readonly": lambda request: ReadOnly(),
    "readwrite": lambda request: ReadWrite(),
    "info": lambda request: Info(tuple(request[1:])),
    "time": lambda request: Time(),
    "lastsave": lambda request: LastSave(),
    "save": lambda request: Save(background=False),
    "bgsave": _bgsave,
    "role": lambda request: ReplicationRole(),
    "monitor": lambda request: Monitor(),
    "a3.consistency": _consistency,
}
for _container, _parse_container in (
    ("client", _client),
    ("command", _command),
    ("config", _config),
    ("cluster", _cluster),
    ("function", _nothing_to_flush),
    ("script", _nothing_to_flush),
    ("memory", _memory),
    ("slowlog", _slowlog),
    ("object", _object),
    ("module", _module),
):
    _PARSERS[_container] = _parse_container
    for _sub in TOP_LEVEL[_container.encode()].subcommands:
        _PARSERS[_sub.name] = _parse_container
