"""Authenticating messages between cluster members with the cluster secret (HMAC-SHA256).

Rules:
- A message is signed over, in this order: the scheme, a channel label (what
  the message is for: "gossip", "gossip-reply", a Replica method name, an
  operator action with its path), the sender's node id, a timestamp (wall
  milliseconds), a nonce (NONCE_BYTES random bytes, as lower-case hex) and
  the body bytes exactly as sent. Every field but the body is ASCII without
  a newline and ends with one, and the body comes last, so no two messages
  share the signed bytes: a signature made for one channel, sender or body
  is worthless for any other.
- Time and randomness are arguments: the shell passes the wall clock and
  the nonce's bytes.
- A message is accepted when, in this order: its credentials are present
  and well formed; its timestamp is within the window of our clock, either
  way (a captured message is worth nothing once the window has passed);
  the signature matches the current secret or the previous one (rotation);
  and its nonce was not seen before within the window. Each refusal has
  one `Refusal` reason, for counting and logging; nothing is remembered of
  a refused message.
- The replay cache (`ReplayGuard`) holds the nonces of accepted messages,
  grouped by the second of their timestamp: a replay carries the same
  timestamp, so it is looked for in one group only, and a group is dropped
  whole once every timestamp in it is older than the window (such a message
  is refused by its timestamp anyway). It holds at most
  MAX_REMEMBERED_NONCES nonces; when full it refuses new messages
  (`Refusal.BUSY`) rather than forget a nonce early, which would let a
  replay through. Only a sender that holds the secret can add to it: a
  forged message is refused before the cache is looked at.
- The window is WINDOW_MS, or the node's MAX_CLOCK_SKEW when that is
  larger (`replay_window_ms`): the data path accepts members whose clocks
  differ by up to MAX_CLOCK_SKEW, so authentication must not cut them off
  first. The cache's bound grows with the window (`nonce_capacity`), so the
  rate of messages it admits stays the same, up to MAX_NONCE_CAPACITY.
- Secrets: at least MIN_SECRET_BYTES bytes (a random 32-byte secret is as
  strong as HMAC-SHA256 gets), at most MAX_SECRET_BYTES. Text (an
  environment variable) is taken as UTF-8 bytes; a file's bytes are taken
  whole but for one trailing newline (`\\n` or `\\r\\n`), which editors and
  `echo` add. A `Secret` never shows its bytes in a repr.
- Comparisons of signatures are constant-time (`hmac.compare_digest`).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from dataclasses import dataclass, field

from a3redis.core.names import is_node_id

SCHEME = b"a3redis-peer-auth-1\n"
# Shortest and longest secret accepted, in bytes.
MIN_SECRET_BYTES = 32
MAX_SECRET_BYTES = 4096
# How far a message's timestamp may be from our clock, either way, at least. It
# bounds how long a captured message could be replayed and how long nonces are kept.
WINDOW_MS = 30_000
NONCE_BYTES = 16
# Nonces the replay cache holds at most with a WINDOW_MS window. A nonce is kept
# about a window, so this admits a sustained 8,000 authenticated messages a second to
# one node (more than one node's gRPC server serves), in a few tens of MB when full.
MAX_REMEMBERED_NONCES = 250_000
# The bound for any window (a window of an hour admits fewer messages a second).
MAX_NONCE_CAPACITY = 2_000_000
# Nonces are grouped by the second of their message's timestamp.
BUCKET_MS = 1000

_NONCE_HEX = re.compile(f"[0-9a-f]{{{2 * NONCE_BYTES}}}")
_SIGNATURE_HEX = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_LABEL = re.compile(r"[!-~]{1,200}")  # printable ASCII, no space


class Refusal(enum.Enum):
    """Why a message was refused (the value is the metric label)."""

    MISSING = "missing"  # no credentials at all
    MALFORMED = "malformed"  # credentials that are not of the form we send
    OUT_OF_WINDOW = "out_of_window"  # timestamp further from our clock than the window
    BAD_SIGNATURE = "bad_signature"  # signed with another secret, or altered
    REPLAYED = "replayed"  # a nonce seen before within the window
    BUSY = "busy"  # the replay cache is full: refused, not forgotten

    @property
    def forged_or_missing(self) -> bool:
        """Whether the sender did not prove it holds the secret (HTTP 401, else 403)."""
        return self in (Refusal.MISSING, Refusal.MALFORMED, Refusal.BAD_SIGNATURE)


@dataclass(frozen=True, slots=True)
class Secret:
    """A cluster secret's bytes; never shown in a repr or a log line."""

    value: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Secret(<{len(self.value)} bytes>)"


def secret_from_text(text: str) -> Secret:
    """The secret in an environment variable, or ValueError saying what is wrong."""
    try:
        value = text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid UTF-8") from None
    return _checked(value)


def secret_from_file(data: bytes) -> Secret:
    """The secret in a file's bytes (one trailing newline dropped), or ValueError."""
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    return _checked(data)


def _checked(value: bytes) -> Secret:
    if len(value) < MIN_SECRET_BYTES:
        raise ValueError(f"{len(value)} bytes, fewer than {MIN_SECRET_BYTES}")
    if len(value) > MAX_SECRET_BYTES:
        raise ValueError(f"more than {MAX_SECRET_BYTES} bytes")
    return Secret(value)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What travels beside a message's body (as HTTP headers or gRPC metadata)."""

    sender: str
    timestamp_ms: str  # decimal, as sent
    nonce: str  # lower-case hex
    signature: str  # lower-case hex

    @classmethod
    def parse(
        cls,
        sender: str | None,
        timestamp_ms: str | None,
        nonce: str | None,
        signature: str | None,
    ) -> Credentials | Refusal:
        """The credentials received, or why they are not credentials we could have sent."""
        if sender is None and timestamp_ms is None and nonce is None and signature is None:
            return Refusal.MISSING
        if (
            not is_node_id(sender)
            or timestamp_ms is None
            or _TIMESTAMP.fullmatch(timestamp_ms) is None
            or nonce is None
            or _NONCE_HEX.fullmatch(nonce) is None
            or signature is None
            or _SIGNATURE_HEX.fullmatch(signature) is None
        ):
            return Refusal.MALFORMED
        return cls(sender, timestamp_ms, nonce, signature)


class Keyring:
    """The current secret, and the previous one while a rotation goes on."""

    def __init__(self, current: Secret, previous: Secret | None = None) -> None:
        # HMAC objects keyed once; each message copies one (cheaper than keying anew).
        self._current = hmac.new(current.value, digestmod=hashlib.sha256)
        self._previous = (
            None if previous is None else hmac.new(previous.value, digestmod=hashlib.sha256)
        )

    def sign(self, channel: str, sender: str, timestamp_ms: str, nonce: str, body: bytes) -> str:
        """The signature (lower-case hex) with the current secret."""
        return _digest(self._current, channel, sender, timestamp_ms, nonce, body)

    def matches(self, credentials: Credentials, channel: str, body: bytes) -> bool:
        """Whether the signature was made with the current or the previous secret."""
        fields = (channel, credentials.sender, credentials.timestamp_ms, credentials.nonce, body)
        if hmac.compare_digest(_digest(self._current, *fields), credentials.signature):
            return True
        return self._previous is not None and hmac.compare_digest(
            _digest(self._previous, *fields), credentials.signature
        )


def _digest(
    keyed: hmac.HMAC, channel: str, sender: str, timestamp_ms: str, nonce: str, body: bytes
) -> str:
    mac = keyed.copy()
    mac.update(SCHEME + f"{channel}\n{sender}\n{timestamp_ms}\n{nonce}\n".encode("ascii"))
    mac.update(body)
    return mac.hexdigest()


def replay_window_ms(max_clock_skew_ms: int) -> int:
    """The window for a node that accepts versions up to `max_clock_skew_ms` ahead."""
    return max(WINDOW_MS, max_clock_skew_ms)


def nonce_capacity(window_ms: int) -> int:
    """The replay cache's bound for `window_ms`: MAX_REMEMBERED_NONCES per WINDOW_MS."""
    windows = -(-max(window_ms, 1) // WINDOW_MS)
    return min(MAX_REMEMBERED_NONCES * windows, MAX_NONCE_CAPACITY)


class ReplayGuard:
    """The nonces of messages accepted within the window; bounded in entries and in time."""

    def __init__(
        self,
        window_ms: int = WINDOW_MS,
        capacity: int = MAX_REMEMBERED_NONCES,
        bucket_ms: int = BUCKET_MS,
    ) -> None:
        if window_ms < 0 or capacity < 1 or bucket_ms < 1:
            raise ValueError("window_ms must be at least 0, capacity and bucket_ms at least 1")
        self.window_ms = window_ms
        self.capacity = capacity
        self.bucket_ms = bucket_ms
        self._buckets: dict[int, set[str]] = {}
        self._size = 0
        self._kept_from = -(2**62)  # buckets below this one have been dropped

    def __len__(self) -> int:
        return self._size

    def admit(self, nonce: str, timestamp_ms: int, now_ms: int) -> Refusal | None:
        """Remember `nonce` (of a message stamped `timestamp_ms`, already within the
        window); REPLAYED if it was seen, BUSY if the cache is full."""
        self._drop_expired(now_ms)
        bucket = timestamp_ms // self.bucket_ms
        seen = self._buckets.get(bucket)
        if seen is not None and nonce in seen:
            return Refusal.REPLAYED
        if self._size >= self.capacity:
            return Refusal.BUSY
        if seen is None:
            seen = self._buckets[bucket] = set()
        seen.add(nonce)
        self._size += 1
        return None

    def _drop_expired(self, now_ms: int) -> None:
        # Every timestamp of a bucket below `first_kept` is older than now - window.
        first_kept = (now_ms - self.window_ms) // self.bucket_ms
        if first_kept <= self._kept_from:
            return  # the common case: at most once per bucket_ms does this go further
        self._kept_from = first_kept
        for bucket in [b for b in self._buckets if b < first_kept]:
            self._size -= len(self._buckets.pop(bucket))


class PeerAuth:
    """Signs this node's messages and checks its peers' (one per node)."""

    def __init__(self, keyring: Keyring, node_id: str, guard: ReplayGuard | None = None) -> None:
        if not is_node_id(node_id):
            raise ValueError("node_id is not a node id")
        self.keyring = keyring
        self.node_id = node_id
        self.guard = guard if guard is not None else ReplayGuard()

    def sign(self, channel: str, body: bytes, now_ms: int, nonce: bytes) -> Credentials:
        """Credentials for a message of ours on `channel` (a label of printable ASCII)."""
        if _LABEL.fullmatch(channel) is None:
            raise ValueError("a channel label is 1-200 printable ASCII characters, no space")
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"a nonce is {NONCE_BYTES} bytes")
        timestamp, nonce_hex = str(now_ms), nonce.hex()
        signature = self.keyring.sign(channel, self.node_id, timestamp, nonce_hex, body)
        return Credentials(self.node_id, timestamp, nonce_hex, signature)

    def verify(
        self, channel: str, credentials: Credentials | Refusal, body: bytes, now_ms: int
    ) -> Refusal | None:
        """None if the message is authentic, fresh and new (its nonce is then
        remembered); otherwise why it is refused."""
        if isinstance(credentials, Refusal):
            return credentials
        if _LABEL.fullmatch(channel) is None:
            return Refusal.MALFORMED  # a label made from input (a path) that we never sign
        timestamp = int(credentials.timestamp_ms)
        if abs(timestamp - now_ms) > self.guard.window_ms:
            return Refusal.OUT_OF_WINDOW
        if not self.keyring.matches(credentials, channel, body):
            return Refusal.BAD_SIGNATURE
        return self.guard.admit(credentials.nonce, timestamp, now_ms)
