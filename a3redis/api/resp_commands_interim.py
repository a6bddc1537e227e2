"""An interim Redis command handler: enough for redis-cli, redis-py and redis-benchmark.

INTERIM: the command layer built on a3redis.core.redis_commands replaces this module.

Rules: PING, ECHO, HELLO [2|3], QUIT, SELECT 0, CLIENT SETINFO, CONFIG GET, and GET,
SET, MGET, MSET and DEL through the node's Keyspace at the server's default
consistency (a tombstone is "not found"). Consecutive GETs and MGETs of one
run become one `batch_get`, consecutive SETs and MSETs one `batch_put`, each
cut into batches of at most `Limits.max_batch_keys` keys, in order. A request
whose key or value breaks a limit is answered its own error and left out of
its batch. A `RequestError` becomes `-ERR <its message>` for the requests of
the batch that failed. Anything else: Redis's unknown-command error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from a3redis import __version__
from a3redis.cluster.keyspace import Keyspace
from a3redis.core.errors import RequestError
from a3redis.core.resp_values import OK, PONG, ErrorReply, Reply
from a3redis.core.validation import InvalidRequestError, ResponseTooLargeError

# What HELLO tells clients that look at the server's version.
REDIS_COMPATIBLE_VERSION = b"7.0.0"

READS = frozenset({b"GET", b"MGET"})
WRITES = frozenset({b"SET", b"MSET"})


@dataclass
class InterimSession:
    client_id: int
    peer: str
    protocol: int = 2
    closing: bool = False
    name: bytes | None = None


@dataclass
class _Pending:
    """A GET/MGET or SET/MSET waiting for its batch: where its reply goes, and what it asks."""

    index: int
    multi: bool
    keys: list[bytes]
    values: list[bytes]


class InterimHandler:
    def __init__(self, keyspace: Keyspace) -> None:
        self.keyspace = keyspace

    def new_session(self, client_id: int, peer: str) -> InterimSession:
        return InterimSession(client_id, peer)

    async def run(self, session: InterimSession, requests: list[list[bytes]]) -> list[Reply]:
        replies: list[Reply] = [None] * len(requests)
        group: list[_Pending] = []
        group_kind: frozenset[bytes] | None = None
        for index, request in enumerate(requests):
            name = request[0].upper() if request else b""
            kind = READS if name in READS else WRITES if name in WRITES else None
            if group and kind is not group_kind:
                await self._flush(group_kind, group, replies)
                group = []
            if session.closing:
                replies[index] = _error("the connection is closing (QUIT)")
            elif kind is None:
                replies[index] = await self._other(session, name, request)
            else:
                pending = self._parse(name, request, index, replies)
                if pending is not None:
                    group.append(pending)
                    group_kind = kind
        if group:
            await self._flush(group_kind, group, replies)
        return replies

    # ----- reads and writes, batched --------------------------------------------------------

    def _parse(
        self, name: bytes, request: list[bytes], index: int, replies: list[Reply]
    ) -> _Pending | None:
        """The request as a batch entry, or None with its error reply in place."""
        args = request[1:]
        limits = self.keyspace.limits
        if (name == b"GET" and len(args) != 1) or (name == b"MGET" and not args):
            replies[index] = _arity(name)
            return None
        if name == b"SET" and len(args) > 2:
            replies[index] = _error("SET options (NX, XX, GET, EX, PX, ...) are not supported yet")
            return None
        if name in WRITES and (len(args) < 2 or len(args) % 2):
            replies[index] = _arity(name)
            return None
        keys = args if name in READS else args[0::2]
        values = [] if name in READS else args[1::2]
        try:
            limits.check_keys(keys)
            for value in values:
                limits.check_value(value)
        except InvalidRequestError as failure:
            replies[index] = _error(str(failure))
            return None
        return _Pending(index, name.startswith(b"M"), keys, values)

    async def _flush(
        self, kind: frozenset[bytes] | None, group: list[_Pending], replies: list[Reply]
    ) -> None:
        run = self._read if kind is READS else self._write
        limit = self.keyspace.limits.max_batch_keys
        batch: list[_Pending] = []
        size = 0
        for pending in group:
            if batch and size + len(pending.keys) > limit:
                await run(batch, replies)
                batch, size = [], 0
            batch.append(pending)
            size += len(pending.keys)
        if batch:
            await run(batch, replies)

    async def _read(self, batch: list[_Pending], replies: list[Reply]) -> None:
        keys = [key for pending in batch for key in pending.keys]
        try:
            records = await self.keyspace.batch_get(keys, None)
        except ResponseTooLargeError as failure:
            if len(batch) == 1:
                _fail(batch, replies, failure)
                return
            half = len(batch) // 2  # each half may fit in one answer
            await self._read(batch[:half], replies)
            await self._read(batch[half:], replies)
            return
        except RequestError as failure:
            _fail(batch, replies, failure)
            return
        values = [None if record is None else record.value for record in records]
        position = 0
        for pending in batch:
            found = values[position : position + len(pending.keys)]
            position += len(pending.keys)
            replies[pending.index] = list(found) if pending.multi else found[0]

    async def _write(self, batch: list[_Pending], replies: list[Reply]) -> None:
        pairs = [
            pair for pending in batch for pair in zip(pending.keys, pending.values, strict=True)
        ]
        try:
            await self.keyspace.batch_put(pairs, None)
        except RequestError as failure:
            _fail(batch, replies, failure)
            return
        for pending in batch:
            replies[pending.index] = OK

    # ----- everything else ------------------------------------------------------------------

    async def _other(self, session: InterimSession, name: bytes, request: list[bytes]) -> Reply:
        args = request[1:]
        simple = _SIMPLE.get(name)
        if simple is not None:
            return simple(self, session, args)
        if name == b"DEL":
            return await self._delete(args)
        return _unknown(request)

    async def _delete(self, keys: list[bytes]) -> Reply:
        """Tombstones for `keys`; the count is of those a read found (not atomic)."""
        if not keys:
            return _arity(b"DEL")
        try:
            self.keyspace.limits.check_keys(keys)
            found = await self.keyspace.batch_get(keys, None)
            for key in dict.fromkeys(keys):
                await self.keyspace.delete(key, None)
        except RequestError as failure:
            return _error(str(failure))
        return len({r.key for r in found if r is not None and r.value is not None})

    def _ping(self, session: InterimSession, args: list[bytes]) -> Reply:
        if len(args) > 1:
            return _arity(b"PING")
        return args[0] if args else PONG

    def _echo(self, session: InterimSession, args: list[bytes]) -> Reply:
        return args[0] if len(args) == 1 else _arity(b"ECHO")

    def _quit(self, session: InterimSession, args: list[bytes]) -> Reply:
        session.closing = True
        return OK

    def _select(self, session: InterimSession, args: list[bytes]) -> Reply:
        if len(args) != 1:
            return _arity(b"SELECT")
        return OK if args[0] == b"0" else _error("DB index is out of range")

    def _hello(self, session: InterimSession, args: list[bytes]) -> Reply:
        if args:
            if args[0] not in (b"2", b"3"):
                return ErrorReply("NOPROTO unsupported protocol version")
            session.protocol = int(args[0])
        rest = args[1:]
        while rest:
            option = rest[0].upper()
            if option == b"SETNAME" and len(rest) >= 2:
                session.name, rest = rest[1], rest[2:]
            elif option == b"AUTH" and len(rest) >= 3:
                rest = rest[3:]  # no credentials are configured: accepted, as Redis does
            else:
                return _error(f"Syntax error in HELLO option '{_text(rest[0])}'")
        return {
            b"server": b"redis",
            b"version": REDIS_COMPATIBLE_VERSION,
            b"proto": session.protocol,
            b"id": session.client_id,
            b"mode": b"standalone",
            b"role": b"master",
            b"modules": [],
            b"a3redis_version": __version__.encode(),
        }

    def _client(self, session: InterimSession, args: list[bytes]) -> Reply:
        sub = args[0].upper() if args else b""
        if sub == b"SETINFO" and len(args) == 3:
            return OK
        if sub == b"SETNAME" and len(args) == 2:
            session.name = args[1]
            return OK
        if sub == b"GETNAME" and len(args) == 1:
            return session.name
        if sub == b"ID" and len(args) == 1:
            return session.client_id
        return _error(f"unknown subcommand '{_text(sub)}'. Try CLIENT HELP.")

    def _config(self, session: InterimSession, args: list[bytes]) -> Reply:
        if args and args[0].upper() == b"GET" and len(args) >= 2:
            return {}
        return _error("only CONFIG GET is served here (and knows no parameter yet)")


_SIMPLE: dict[bytes, Callable[[InterimHandler, InterimSession, list[bytes]], Reply]] = {
    b"PING": InterimHandler._ping,
    b"ECHO": InterimHandler._echo,
    b"QUIT": InterimHandler._quit,
    b"SELECT": InterimHandler._select,
    b"HELLO": InterimHandler._hello,
    b"CLIENT": InterimHandler._client,
    b"CONFIG": InterimHandler._config,
}


def _fail(batch: list[_Pending], replies: list[Reply], failure: RequestError) -> None:
    for pending in batch:
        replies[pending.index] = _error(str(failure))


def _error(text: str) -> ErrorReply:
    """`-ERR text` (resp_values.error would take a leading upper-case word for a code)."""
    return ErrorReply(f"ERR {text}")


def _arity(name: bytes) -> ErrorReply:
    return _error(f"wrong number of arguments for '{_text(name.lower())}' command")


def _unknown(request: list[bytes]) -> ErrorReply:
    if not request:
        return _error("empty command")
    args = " ".join(f"'{_text(arg)}'" for arg in request[1:4])
    return _error(
        f"unknown command '{_text(request[0])}', with args beginning with: {args}".rstrip()
    )


def _text(raw: bytes, limit: int = 128) -> str:
    """Client bytes fit for an error line: no CR or LF, at most `limit` characters."""
    text = raw[:limit].decode("utf-8", "replace")
    return text.replace("\r", " ").replace("\n", " ")
