"""Client and operator tokens: the tokens file, who a presented token is, what each role may do.

Rules:
- A tokens file (CLIENT_TOKENS_FILE) holds one token per line, then
  whitespace, then its role: `readonly`, `readwrite` or `admin`, then
  optionally the consistency levels the token's Redis connections default
  to, `read=<level>` and `write=<level>` (one, quorum, all, local; without
  them, the node's READ_/WRITE_CONSISTENCY). Blank lines
  and lines whose first non-blank character is `#` are ignored; nothing else
  is. A token is MIN_TOKEN_LENGTH to MAX_TOKEN_LENGTH printable ASCII
  characters without spaces (what fits an `Authorization: Bearer` header and
  a Redis AUTH argument unchanged), not starting with `#` (that line would
  be a comment). The file is at most MAX_FILE_BYTES.
- `parse` accepts a whole file or raises TokensFileError naming the line and
  what is wrong with it: a line that is not `<token> <role> [read=<level>]
  [write=<level>]`, an unknown or repeated level, a token too
  short, too long or with other characters, an unknown role, the same
  token twice, a file with no token at all (every client would be refused).
  Errors never repeat a token: they end up in logs.
- Roles are ordered: `admin` may do what `readwrite` may, which may do what
  `readonly` may (`allows`). Actions are `read` (every read, and what
  describes the cluster), `write` (anything that stores or deletes a key)
  and `admin` (anything that changes the cluster: repair, remove or
  decommission a member, FLUSHALL).
- Nothing here is consulted when no tokens file is configured: the front
  ends then serve every client as before. A configured node always holds at
  least one token (`TokenHolder`, replaced whole when the file is read again).
- `role_of` takes any bytes or text a client sent, of any length. It never
  compares the presented token with a configured one byte by byte: each
  token is kept only as its keyed BLAKE2b digest (the key is random per
  process and passed in, as all randomness in the core), and the presented
  token's digest is looked up in a dict. The lookup's time can depend on
  the digest, but an attacker who does not know the key cannot choose, or
  learn anything from, the digest of a guess: how close a guess is to a
  real token does not show in the time it takes. It also costs one hash
  per call however many tokens there are, where comparing with every token
  in turn (hmac.compare_digest) costs one comparison per token.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from a3redis.core.consistency import Consistency
from a3redis.core.errors import PermissionDeniedError, UnauthenticatedError
from a3redis.core.validation import InvalidRequestError

MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 256
MAX_FILE_BYTES = 1024 * 1024
KEY_BYTES = 32  # BLAKE2b's longest key
_DIGEST_BYTES = 32
_TOKEN_CHARACTERS = frozenset(range(0x21, 0x7F))  # printable ASCII, no space


class Role(enum.Enum):
    READONLY = "readonly"
    READWRITE = "readwrite"
    ADMIN = "admin"


class Action(enum.Enum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


# What each role may do: each role's actions include those of the role before it.
ALLOWED: Mapping[Role, frozenset[Action]] = {
    Role.READONLY: frozenset({Action.READ}),
    Role.READWRITE: frozenset({Action.READ, Action.WRITE}),
    Role.ADMIN: frozenset({Action.READ, Action.WRITE, Action.ADMIN}),
}
ROLE_NAMES = ", ".join(role.value for role in Role)


def allows(role: Role, action: Action) -> bool:
    """Whether a token of `role` may do `action`."""
    return action in ALLOWED[role]


@dataclass(frozen=True, slots=True)
class Grant:
    """What a token gives: its role, and the levels its Redis connections default to
    (None: the node's)."""

    role: Role
    read: Consistency | None = None
    write: Consistency | None = None


class TokensFileError(ValueError):
    """A tokens file the node cannot use; `line` is 1-based (0: the file as a whole)."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}" if line else problem)
        self.line = line
        self.problem = problem


@dataclass(frozen=True, slots=True, eq=False)
class ClientTokens:
    """The configured tokens, each kept as its keyed digest, with its role. Equal only to
    itself (two reads of one file have different keys), so a Config holding it hashes."""

    _key: bytes
    _grants: Mapping[bytes, Grant]

    def __len__(self) -> int:
        return len(self._grants)

    def count(self, role: Role) -> int:
        """How many tokens have `role` (for the node's start-up log line)."""
        return sum(1 for each in self._grants.values() if each.role is role)

    def role_of(self, presented: bytes | str | None) -> Role | None:
        """The role of the token a client presented; None for no token or an unknown one."""
        grant = self.grant_of(presented)
        return None if grant is None else grant.role

    def grant_of(self, presented: bytes | str | None) -> Grant | None:
        """What the token a client presented gives; None for no token or an unknown one."""
        if presented is None:
            return None
        if isinstance(presented, str):
            try:
                presented = presented.encode("ascii")
            except UnicodeEncodeError:
                return None  # no configured token has other characters
        if len(presented) > MAX_TOKEN_LENGTH:
            return None
        return self._grants.get(_digest(self._key, presented))

    def check(self, presented: bytes | str | None, action: Action) -> Role:
        """The presented token's role if it may do `action`; otherwise the front-end-neutral
        error: UnauthenticatedError (no token, or not a configured one) or
        PermissionDeniedError (a token whose role does not allow the action)."""
        role = self.role_of(presented)
        if role is None:
            if presented is None:
                raise UnauthenticatedError(
                    "this node requires a client token (CLIENT_TOKENS_FILE is set): send "
                    "`authorization: Bearer <token>`"
                )
            raise UnauthenticatedError("the client token is not valid")
        if not allows(role, action):
            raise PermissionDeniedError(
                f"a {role.value} token may not {_WHAT[action]}; it needs a "
                f"{_LEAST_ROLE[action].value} token"
            )
        return role


class TokenHolder:
    """The tokens a node accepts now, shared by its front ends: the node replaces `tokens`
    when it reads the file again (SIGHUP), and every check reads it afresh."""

    __slots__ = ("tokens",)

    def __init__(self, tokens: ClientTokens) -> None:
        self.tokens = tokens


_WHAT = {
    Action.READ: "read",
    Action.WRITE: "write",
    Action.ADMIN: "perform operator actions",
}
_LEAST_ROLE = {action: next(role for role in Role if action in ALLOWED[role]) for action in Action}


def _digest(key: bytes, token: bytes) -> bytes:
    return hashlib.blake2b(token, key=key, digest_size=_DIGEST_BYTES).digest()


def parse(text: bytes, key: bytes) -> ClientTokens:
    """The tokens of a whole tokens file, keyed with `key` (KEY_BYTES random bytes);
    TokensFileError for the first line that is wrong."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"the key must be {KEY_BYTES} bytes")
    if len(text) > MAX_FILE_BYTES:
        raise TokensFileError(
            0, f"the file is {len(text)} bytes; a tokens file may be {MAX_FILE_BYTES} at most"
        )
    grants: dict[bytes, Grant] = {}
    first_line: dict[bytes, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        token, grant = _parse_line(number, line)
        digest = _digest(key, token)
        if digest in grants:
            raise TokensFileError(number, f"the same token as line {first_line[digest]}")
        grants[digest] = grant
        first_line[digest] = number
    if not grants:
        raise TokensFileError(0, "the file holds no token, so every client would be refused")
    return ClientTokens(key, grants)


def _parse_line(number: int, line: bytes) -> tuple[bytes, Grant]:
    fields = line.split()
    if not 2 <= len(fields) <= 4:
        raise TokensFileError(
            number,
            f"expected `<token> <role> [read=<level>] [write=<level>]` ({len(fields)} words; "
            f"a role is one of {ROLE_NAMES}, and a token has no spaces)",
        )
    token, role_word = fields[:2]
    if not all(byte in _TOKEN_CHARACTERS for byte in token):
        raise TokensFileError(number, "a token may hold printable ASCII characters only")
    if not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH:
        raise TokensFileError(
            number,
            f"the token has {len(token)} characters; a token has {MIN_TOKEN_LENGTH} to "
            f"{MAX_TOKEN_LENGTH}",
        )
    try:
        role = Role(role_word.decode("ascii").lower())
    except (UnicodeDecodeError, ValueError):
        # A long second word may be a token written after its role: never repeated.
        shown = (
            f" {role_word.decode('ascii', 'replace')!r}"
            if len(role_word) < MIN_TOKEN_LENGTH and role_word.isascii()
            else ""
        )
        raise TokensFileError(
            number, f"unknown role{shown}: a role is one of {ROLE_NAMES}"
        ) from None
    levels: dict[str, Consistency] = {}
    for field in fields[2:]:
        name, equals, value = field.decode("ascii", "replace").partition("=")
        if not equals or name not in ("read", "write"):
            raise TokensFileError(
                number, "after the role, only `read=<level>` and `write=<level>` may follow"
            )
        if name in levels:
            raise TokensFileError(number, f"`{name}=` is given twice")
        try:
            levels[name] = Consistency.parse(value)
        except InvalidRequestError as error:
            raise TokensFileError(number, str(error)) from None
    return token, Grant(role, levels.get("read"), levels.get("write"))


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value (the scheme in any
    case, as RFC 7235 says); None when the header is absent or another scheme."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
