"""One Redis connection's state, and the commands answered from it and the table alone.

Rules:
- A `Session` is plain per-connection state: protocol (2 or 3), client id
  and name, library name and version, read and write consistency (None:
  the server's default, resolved below the front ends), reply mode and the
  closing flag. Only the commands of this module change it (HELLO, RESET,
  CLIENT ..., READONLY/READWRITE, A3.CONSISTENCY, QUIT), in request order.
- `answer` runs a session command (PING, HELLO, CLIENT SETNAME, COMMAND
  INFO, ...) and returns its reply, or `NO_REPLY` for the commands Redis
  answers with nothing (CLIENT REPLY OFF and SKIP). No I/O: the wall clock
  (`wall_ms`) is an argument.
- COMMAND's replies are built from the table in Redis 7.2's shapes, maps and
  sets as `dict` and `frozenset` (RESP3-ready). Two deviations, forced by
  Python's sets holding only hashable values: key specs and a command's
  history are arrays where Redis sends sets of maps and of arrays. In RESP2,
  the only protocol clients read them in, the two are the same bytes.
- a3redis presents itself as a Redis cluster (HELLO `mode`, CLUSTER INFO):
  one keyspace, every node serving every key. So SELECT answers Redis's
  cluster-mode error for any database but 0, rather than "DB index is out of
  range": it names the reason, and clients know it.
- Without client tokens (CLIENT_TOKENS_FILE unset) AUTH and HELLO AUTH
  answer as Redis does without `requirepass` (the default user accepts any
  password; the one-argument AUTH is an error; other users do not exist).
- With client tokens, a connection behaves as Redis's with `requirepass`:
  it starts unauthenticated and may run only the commands Redis flags
  `no_auth` (AUTH, HELLO with AUTH, QUIT, RESET); anything else is answered
  `-NOAUTH Authentication required.` (an unknown command is still unknown,
  as in Redis). `AUTH <token>`, `AUTH default <token>` and `HELLO <v> AUTH
  default <token>` authenticate the connection with the token's role; the
  only user is `default`, as in Redis, so another name is a wrong pair
  (`-WRONGPASS`). A failed AUTH leaves the connection as it was; RESET makes
  it unauthenticated again. An authenticated connection runs what its role
  allows (`access_refusal`: writes need readwrite, FLUSHALL/FLUSHDB admin),
  others get Redis's ACL error `-NOPERM`.
- Consistency levels: a connection's reads and writes ask for the level the
  connection chose (A3.CONSISTENCY, READONLY), else the level its token
  gives (`read=` / `write=` in the tokens file), else the node's default.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field

from a3redis.core.client_tokens import Action, Role, TokenHolder, allows
from a3redis.core.consistency import Consistency
from a3redis.core.redis_command_table import COMMAND_SPECS, Arg, CommandSpec, KeySpec
from a3redis.core.redis_commands import (
    SUBCOMMANDS,
    TOP_LEVEL,
    Auth,
    ClientGetName,
    ClientId,
    ClientInfo,
    ClientKill,
    ClientList,
    ClientNoEvict,
    ClientNoTouch,
    ClientReply,
    ClientSetInfo,
    ClientSetName,
    CommandCount,
    CommandDocs,
    CommandInfo,
    CommandList,
    CommandTable,
    Echo,
    Hello,
    Help,
    ModuleList,
    NothingToFlush,
    Ping,
    Quit,
    ReadOnly,
    ReadWrite,
    ReplicationRole,
    Reset,
    Select,
    SessionCommand,
    SetConsistency,
    Time,
    err,
    spec_named,
)
from a3redis.core.resp_values import (
    OK,
    PONG,
    ErrorReply,
    Reply,
    Status,
    Verbatim,
)
from a3redis.core.validation import Limits

# The Redis release whose commands, replies and error texts a3redis follows
# (the source of a3redis.core.redis_command_table); HELLO and INFO report it.
REDIS_VERSION = "7.2.6"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What a node tells every session: its defaults, limits and switches."""

    a3redis_version: str
    read_default: Consistency = Consistency.QUORUM
    write_default: Consistency = Consistency.QUORUM
    limits: Limits = field(default_factory=Limits)
    allow_flush: bool = False  # ALLOW_FLUSH=1: FLUSHALL/FLUSHDB delete every key
    tokens: TokenHolder | None = None  # CLIENT_TOKENS_FILE's tokens; None: not set
    redis_version: str = REDIS_VERSION


class NoReply:
    """The answer of a command Redis answers with nothing at all."""

    def __repr__(self) -> str:
        return "NO_REPLY"


NO_REPLY = NoReply()


class Session:
    """One connection's state; the shell reads `protocol` and `closing` after each run."""

    def __init__(
        self,
        settings: ServerSettings,
        client_id: int,
        peer: str,
        connected_ms: int,
        local_address: str = "",
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self.peer = peer
        self.local_address = local_address
        self.connected_ms = connected_ms
        self.last_command_ms = connected_ms
        self.last_command = "NULL"  # Redis's CLIENT LIST shows `cmd=NULL` before the first
        self.closing = False
        self.reset()

    def reset(self) -> None:
        """Back to a new connection's state (RESET), keeping id, addresses and times."""
        self.protocol = 2
        # The role of the token this connection authenticated with (None: none yet).
        self.role: Role | None = None
        self.name: bytes | None = None
        self.lib_name: bytes | None = None
        self.lib_ver: bytes | None = None
        self.read_level: Consistency | None = None
        self.write_level: Consistency | None = None
        # The levels of the token this connection authenticated with (None: the node's).
        self.token_read: Consistency | None = None
        self.token_write: Consistency | None = None
        self.readonly = False
        self._read_level_before_readonly: Consistency | None = None
        self.no_evict = False
        self.no_touch = False
        self.replies_off = False  # CLIENT REPLY OFF
        self.skip_next_reply = False  # CLIENT REPLY SKIP: the next command's reply is dropped
        # A MULTI was refused: the commands meant for the transaction are not run either,
        # until EXEC (answered EXECABORT) or DISCARD, so a client never sees its
        # transaction fail while some of its writes were applied.
        self.refused_multi = False
        self.monitoring = False  # MONITOR: the node sends this connection its commands

    # ----- consistency -----------------------------------------------------------------------

    def set_levels(self, read: Consistency | None, write: Consistency | None) -> None:
        """A3.CONSISTENCY: an explicit read level also ends READONLY."""
        if read is not None:
            self.read_level = read
            self.readonly = False
        if write is not None:
            self.write_level = write

    def read_only(self) -> None:
        """READONLY: reads at ONE (any replica may answer, as from a Redis replica)."""
        if not self.readonly:
            self._read_level_before_readonly = self.read_level
            self.readonly = True
            self.read_level = Consistency.ONE

    def read_write(self) -> None:
        """READWRITE: reads at the level they had before READONLY."""
        if self.readonly:
            self.readonly = False
            self.read_level = self._read_level_before_readonly

    @property
    def requested_read(self) -> Consistency | None:
        """The level this connection's reads ask for (None: the node's default)."""
        return self.read_level or self.token_read

    @property
    def requested_write(self) -> Consistency | None:
        """The level this connection's writes ask for (None: the node's default)."""
        return self.write_level or self.token_write

    @property
    def effective_read(self) -> Consistency:
        return self.requested_read or self.settings.read_default

    @property
    def effective_write(self) -> Consistency:
        return self.requested_write or self.settings.write_default

    def client_flags(self) -> str:
        flags = "".join(
            letter
            for letter, on in (
                ("O", self.monitoring),
                ("c", self.closing),
                ("r", self.readonly),
                ("e", self.no_evict),
                ("T", self.no_touch),
            )
            if on
        )
        return flags or "N"

    def info_line(self, wall_ms: int) -> str:
        """This connection's line in CLIENT INFO / CLIENT LIST, in Redis's field order.

        Redis's memory and buffer fields are 0 here: the shell does not count them.
        """
        age = max(0, wall_ms - self.connected_ms) // 1000
        idle = max(0, wall_ms - self.last_command_ms) // 1000
        return (
            f"id={self.client_id} addr={self.peer} laddr={self.local_address} fd=-1 "
            f"name={_text(self.name)} age={age} idle={idle} flags={self.client_flags()} "
            "db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 "
            "rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r "
            f"cmd={self.last_command} user=default redir=-1 resp={self.protocol} "
            f"lib-name={_text(self.lib_name)} lib-ver={_text(self.lib_ver)}"
        )


def _text(value: bytes | None) -> str:
    # Names and library fields are checked to be printable ASCII before they are kept.
    return value.decode("ascii") if value else ""


def client_list_reply(command: ClientList, sessions: Iterable[Session], wall_ms: int) -> Reply:
    """CLIENT LIST for the sessions the shell holds (every one is a normal client)."""
    if command.ids is not None:
        by_id = {session.client_id: session for session in sessions}
        chosen = [by_id[client_id] for client_id in command.ids if client_id in by_id]
    elif command.type in (None, b"normal"):
        chosen = sorted(sessions, key=lambda session: session.client_id)
    else:
        chosen = []  # no master, replica or pub/sub connections exist here
    return Verbatim("".join(session.info_line(wall_ms) + "\n" for session in chosen).encode())


def clients_to_kill(command: ClientKill, sessions: Iterable[Session], me: Session) -> list[Session]:
    """The sessions CLIENT KILL `command` matches among `sessions` (`me` asked). Every
    client here is a normal one of user `default`."""
    chosen = []
    for session in sessions:
        if command.addr is not None and session.peer.encode() != command.addr:
            continue
        if command.laddr is not None and session.local_address.encode() != command.laddr:
            continue
        if command.type not in (None, b"normal"):
            continue
        if command.client_id is not None and session.client_id != command.client_id:
            continue
        if command.skip_me and session is me:
            continue
        chosen.append(session)
    return sorted(chosen, key=lambda session: session.client_id)


def client_kill_reply(command: ClientKill, killed: int) -> Reply:
    if not command.old_form:
        return killed
    return OK if killed else err("No such client")


# ----- answering session commands ------------------------------------------------------------

AUTH_WITHOUT_PASSWORD = err(
    "AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?"
)
WRONG_PASSWORD = ErrorReply("WRONGPASS invalid username-password pair or user is disabled.")
NO_AUTH = ErrorReply("NOAUTH Authentication required.")
HELLO_NO_AUTH = ErrorReply(
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
    "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
    "select the RESP protocol version at the same time"
)


def _every_spec_of_table() -> Iterable[CommandSpec]:
    for spec in COMMAND_SPECS:
        yield spec
        yield from spec.subcommands


# Commands a connection may run before it authenticates (Redis's `no_auth` flag).
RUN_BEFORE_AUTH = frozenset(
    spec.name for spec in _every_spec_of_table() if "no_auth" in spec.flags
) | {"unknown"}
# What a token's role must allow for each command: Redis's `write` flag marks writes;
# FLUSHALL and FLUSHDB delete every key of the cluster, SAVE and BGSAVE make the node
# sync, the slow log and MONITOR show other clients' commands, CLIENT KILL ends
# their connections and CONFIG SET changes the node: operator actions.
ACTION_OF_COMMAND: dict[str, Action] = {
    spec.name: Action.WRITE if "write" in spec.flags else Action.READ
    for spec in _every_spec_of_table()
} | {
    name: Action.ADMIN
    for name in (
        "flushall",
        "flushdb",
        "save",
        "bgsave",
        "slowlog|get",
        "slowlog|len",
        "slowlog|reset",
        "client|kill",
        "monitor",
        "config|set",
    )
}


def access_refusal(session: Session, name: str) -> ErrorReply | None:
    """With client tokens: the error for running command `name` (its full name, as
    `parse_named` gives it) on this connection now, or None if it may run."""
    role = session.role
    if role is None:
        return None if name in RUN_BEFORE_AUTH else NO_AUTH
    if allows(role, ACTION_OF_COMMAND.get(name, Action.READ)):
        return None
    return ErrorReply(f"NOPERM User default has no permissions to run the '{name}' command")


def _authenticate(session: Session, username: bytes | None, password: bytes) -> bool:
    """AUTH with client tokens: True, and the connection takes the token's role, if the
    user is `default` (or not given) and the password a configured token."""
    tokens = session.settings.tokens
    assert tokens is not None
    grant = tokens.tokens.grant_of(password)
    if grant is None or username not in (None, b"default"):
        return False
    session.role = grant.role
    session.token_read = grant.read
    session.token_write = grant.write
    return True


def answer(session: Session, command: SessionCommand, wall_ms: int) -> Reply | NoReply:
    """Run a session command: its reply, or NO_REPLY (CLIENT REPLY OFF and SKIP)."""
    match command:
        case Ping(message=None):
            return PONG
        case Ping(message=bytes(message)) | Echo(message=message):
            return message
        case Quit():
            session.closing = True
            return OK
        case Reset():
            session.reset()
            return Status("RESET")
        case Hello():
            return _hello(session, command)
        case Auth(username=username, password=password) if session.settings.tokens is not None:
            return OK if _authenticate(session, username, password) else WRONG_PASSWORD
        case Auth(username=None):
            return AUTH_WITHOUT_PASSWORD
        case Auth(username=username):
            return OK if username == b"default" else WRONG_PASSWORD
        case Select(index=0):
            return OK
        case Select():
            return err("SELECT is not allowed in cluster mode")
        case ClientSetName(name=name):
            session.name = name or None
            return OK
        case ClientGetName():
            return session.name
        case ClientId():
            return session.client_id
        case ClientSetInfo(attribute="lib-name", value=value):
            session.lib_name = value or None
            return OK
        case ClientSetInfo(value=value):
            session.lib_ver = value or None
            return OK
        case ClientInfo():
            return Verbatim((session.info_line(wall_ms) + "\n").encode())
        case ClientNoEvict(on=on):
            session.no_evict = on
            return OK
        case ClientNoTouch(on=on):
            session.no_touch = on
            return OK
        case ClientReply(mode=mode):
            return _client_reply(session, mode)
        case Help(container=container):
            return help_reply(container)
        case CommandTable():
            return command_table_reply()
        case CommandCount():
            return len(TOP_LEVEL)
        case CommandInfo(names=()):
            return command_table_reply()
        case CommandInfo(names=names):
            return [_info_or_none(name) for name in names]
        case CommandDocs(names=()):
            return all_docs_reply()
        case CommandDocs(names=names):
            found = (spec_named(name) for name in names)
            return {spec.name.encode(): command_docs(spec) for spec in found if spec is not None}
        case CommandList():
            return command_list_reply(command)
        case Time():
            return [str(wall_ms // 1000).encode(), str(wall_ms % 1000 * 1000).encode()]
        case ModuleList():
            return []
        case ReplicationRole():
            # Every node takes writes and none is a Redis replica (INFO says the same).
            return [b"master", 0, []]
        case NothingToFlush():
            return OK
        case ReadOnly():
            session.read_only()
            return OK
        case ReadWrite():
            session.read_write()
            return OK
        case SetConsistency(read=read, write=write):
            session.set_levels(read, write)
            return {
                b"read": session.effective_read.name.lower().encode(),
                b"write": session.effective_write.name.lower().encode(),
            }
    raise AssertionError(f"not a session command: {command!r}")


def _hello(session: Session, command: Hello) -> Reply:
    if session.settings.tokens is not None:
        if (
            command.username is not None
            and command.password is not None
            and not _authenticate(session, command.username, command.password)
        ):
            return WRONG_PASSWORD
        if session.role is None:
            return HELLO_NO_AUTH
    elif command.username is not None and command.username != b"default":
        return WRONG_PASSWORD
    if command.name is not None:
        session.name = command.name or None
    if command.protocol is not None:
        session.protocol = command.protocol
    settings = session.settings
    return {
        b"server": b"redis",
        b"version": settings.redis_version.encode(),
        b"proto": session.protocol,
        b"id": session.client_id,
        b"mode": b"cluster",
        b"role": b"master",
        b"modules": [],
        b"a3redis_version": settings.a3redis_version.encode(),
    }


def _client_reply(session: Session, mode: str) -> Reply | NoReply:
    # As Redis: ON answers OK; OFF and SKIP answer nothing; SKIP while OFF changes nothing.
    if mode == "on":
        session.replies_off = False
        session.skip_next_reply = False
        return OK
    if mode == "off":
        session.replies_off = True
    elif not session.replies_off:
        session.skip_next_reply = True
    return NO_REPLY


def help_reply(container: str) -> Reply:
    """A container's HELP in Redis's shape, listing the subcommands a3redis has."""
    lines = [
        Status(f"{container.upper()} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:")
    ]
    for sub in SUBCOMMANDS[container.encode()].values():
        if sub.name.endswith("|help"):
            continue
        lines.append(Status(sub.name.split("|", 1)[1].upper()))
        lines.append(Status(f"    {sub.summary}"))
    lines += [Status("HELP"), Status("    Print this help.")]
    return list(lines)


# ----- COMMAND -------------------------------------------------------------------------------


def _statuses(names: Iterable[str]) -> frozenset[Reply]:
    return frozenset(Status(name) for name in names)


def _pairs(spec: tuple[tuple[str, int | str], ...]) -> dict[Reply, Reply]:
    return {
        name.encode(): value if isinstance(value, int) else value.encode() for name, value in spec
    }


def _key_spec(key_spec: KeySpec) -> dict[Reply, Reply]:
    reply: dict[Reply, Reply] = {}
    if key_spec.notes is not None:
        reply[b"notes"] = key_spec.notes.encode()
    reply[b"flags"] = _statuses(key_spec.flags)
    for name, (kind, spec) in (
        (b"begin_search", key_spec.begin_search),
        (b"find_keys", key_spec.find_keys),
    ):
        reply[name] = {b"type": kind.encode(), b"spec": _pairs(spec)}
    return reply


@functools.cache
def command_info(spec: CommandSpec) -> Reply:
    """One command's COMMAND INFO entry: the ten fields of Redis 7."""
    subcommands: Reply = (
        [command_info(sub) for sub in spec.subcommands] if spec.subcommands else frozenset()
    )
    return [
        spec.name.encode(),
        spec.arity,
        _statuses(spec.flags),
        spec.first_key,
        spec.last_key,
        spec.step,
        _statuses(spec.acl_categories),
        frozenset(tip.encode() for tip in spec.tips),
        [_key_spec(key_spec) for key_spec in spec.key_specs],
        subcommands,
    ]


@functools.cache
def command_table_reply() -> Reply:
    return [command_info(spec) for spec in COMMAND_SPECS]


def _info_or_none(name: bytes) -> Reply:
    spec = spec_named(name)
    return None if spec is None else command_info(spec)


def _argument(arg: Arg) -> dict[Reply, Reply]:
    reply: dict[Reply, Reply] = {b"name": arg.name.encode(), b"type": arg.type.encode()}
    nested = arg.type in ("oneof", "block")
    if not nested:
        reply[b"display_text"] = (arg.display_text or arg.name).encode()
    if arg.key_spec_index is not None:
        reply[b"key_spec_index"] = arg.key_spec_index
    for name, text in (
        (b"token", arg.token),
        (b"summary", arg.summary),
        (b"since", arg.since),
        (b"deprecated_since", arg.deprecated_since),
    ):
        if text is not None:
            reply[name] = text.encode()
    if arg.flags:
        reply[b"flags"] = _statuses(arg.flags)
    if nested:
        reply[b"arguments"] = [_argument(sub) for sub in arg.arguments]
    return reply


@functools.cache
def command_docs(spec: CommandSpec) -> Reply:
    """One command's COMMAND DOCS map, in Redis 7's field order."""
    reply: dict[Reply, Reply] = {}
    if spec.summary is not None:
        reply[b"summary"] = spec.summary.encode()
    if spec.since is not None:
        reply[b"since"] = spec.since.encode()
    reply[b"group"] = spec.group.encode()
    if spec.complexity is not None:
        reply[b"complexity"] = spec.complexity.encode()
    if spec.doc_flags:
        reply[b"doc_flags"] = _statuses(spec.doc_flags)
    if spec.deprecated_since is not None:
        reply[b"deprecated_since"] = spec.deprecated_since.encode()
    if spec.replaced_by is not None:
        reply[b"replaced_by"] = spec.replaced_by.encode()
    if spec.history:
        reply[b"history"] = [[since.encode(), change.encode()] for since, change in spec.history]
    if spec.arguments:
        reply[b"arguments"] = [_argument(arg) for arg in spec.arguments]
    if spec.subcommands:
        reply[b"subcommands"] = {sub.name.encode(): command_docs(sub) for sub in spec.subcommands}
    return reply


@functools.cache
def all_docs_reply() -> Reply:
    return {spec.name.encode(): command_docs(spec) for spec in COMMAND_SPECS}


def _every_spec() -> Iterable[CommandSpec]:
    for spec in COMMAND_SPECS:
        yield spec
        yield from spec.subcommands


def _glob_matches(pattern: bytes, name: str) -> bool:
    # Command names are plain lower-case words: fnmatch with Redis's `[^...]`
    # spelled `[!...]` matches them as Redis's case-insensitive glob would.
    # (Keys are matched by a3redis.core.redis_glob, which is exact.)
    text = pattern.decode("utf-8", "replace").lower().replace("[^", "[!")
    return fnmatch.fnmatchcase(name, text)


def command_list_reply(command: CommandList) -> Reply:
    names = [spec.name for spec in _every_spec()]
    if command.filter_by == "module":
        names = []  # a3redis loads no modules
    elif command.filter_by == "aclcat":
        category = "@" + command.filter_value.decode("utf-8", "replace").lower()
        names = [spec.name for spec in _every_spec() if category in spec.acl_categories]
    elif command.filter_by == "pattern":
        names = [name for name in names if _glob_matches(command.filter_value, name)]
    return [name.encode() for name in names]
