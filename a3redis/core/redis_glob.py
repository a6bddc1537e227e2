"""Redis's glob patterns (KEYS, SCAN MATCH, CONFIG GET) on bytes, at bounded cost.

Rules:
- The language is Redis's `stringmatchlen` (src/util.c), byte for byte:
  `*` matches any run of bytes, `?` any one byte, `\\x` the byte x (a `\\`
  that ends the pattern is itself), and `[...]` one byte from a class:
  `[^...]` negates, `a-z` is a range (ends in either order), `\\x` inside
  is x. Redis's quirks are kept: a class that is never closed runs to the
  end of the pattern; `]` right after `[` or `[^` closes an empty class; a
  range may take `]` as its end (`[a-]` is the range `]`..`a`, and the
  class goes on); an empty subject matches only the empty pattern (even
  `*` does not match it: KEYS and SCAN answer every key, the empty one
  too, for exactly `*` without matching, see `Glob.matches_every_key`).
- `nocase` (CONFIG GET's matching) folds ASCII letters only, as Redis's
  `tolower` in the C locale: a literal matches either case, a range is
  compared after folding its ends and the byte, and an escaped byte inside a
  class still matches only itself, exactly as Redis does.
- One deliberate difference: bytes are compared unsigned (0-255). Redis
  compares range ends as C `char`, which is signed on x86, so there a range
  with one end below 0x80 and one above (`[a-\\xff]`) covers other bytes than
  it says. On platforms where `char` is unsigned (ARM), Redis agrees with us.
- Cost: Redis's matcher recurses at every `*` and can take exponential
  time on hostile patterns (it caps the depth at 1000 and gives up there).
  Here the pattern is compiled once into fixed-length pieces between the
  stars; the first piece is anchored at the start, the last at the end,
  and each piece in between is found at its leftmost place, which is
  always the best choice because a star can take up whatever is left
  before the next piece. So a match costs at most
  O(len(pattern) * len(subject)), with no recursion and no backtracking.
  Redis's depth cap is kept as a rule: a pattern with more than
  MAX_STAR_DEPTH stars (runs of `*`) before its last element never
  matches, as in Redis.
- Patterns are at most MAX_PATTERN_BYTES long (PatternTooLongError past
  it): compiling costs time linear in the pattern, and Redis has no bound.
- `literal_prefix` is what every key a pattern matches (case-sensitively)
  starts with, so a scan can start there and stop when keys leave it.
"""

from __future__ import annotations

import re

# Redis's stringmatchlen gives up (no match) below this recursion depth.
MAX_STAR_DEPTH = 1000
# Compiling costs time linear in the pattern's length; Redis sets no bound, we
# do, far above any pattern a person writes.
MAX_PATTERN_BYTES = 8 * 1024


class PatternTooLongError(ValueError):
    """A pattern longer than MAX_PATTERN_BYTES; the text is a Redis-style error without `ERR `."""

    def __init__(self) -> None:
        super().__init__(f"pattern longer than {MAX_PATTERN_BYTES} bytes")


_WILDCARDS = frozenset(b"*?[")
_BACKSLASH = ord("\\")

# A one-byte class is a 256-bit mask: bit b set means byte b is accepted.
# Masks are plain ints, so even a long pattern of classes costs little memory.
_ANY = (1 << 256) - 1
_UPPER = ((1 << 26) - 1) << ord("A")
_LOWER = ((1 << 26) - 1) << ord("a")
_STAR = -1  # a run of `*` in the token list: the boundary between two pieces


def _range(low: int, high: int) -> int:
    """The bytes from `low` to `high`; none when `low > high`."""
    if low > high:
        return 0
    return ((1 << (high + 1)) - 1) ^ ((1 << low) - 1)


def _fold(byte: int) -> int:
    """ASCII lower case, as C's tolower in the C locale."""
    return byte + 32 if 65 <= byte <= 90 else byte


def _literal(byte: int, nocase: bool) -> int:
    """A literal byte: itself, or both cases of an ASCII letter under `nocase`."""
    mask = 1 << byte
    if nocase and mask & (_UPPER | _LOWER):
        return 1 << (byte | 0x20) | 1 << (byte & ~0x20)
    return mask


def _folded_range(low: int, high: int) -> int:
    """The bytes whose folded value lies in `low..high` (ends already folded)."""
    inside = _range(low, high)
    return inside & ~_UPPER | (inside >> 32) & _UPPER


def _parse_class(pattern: bytes, at: int, nocase: bool) -> tuple[int, int]:
    """The mask of the class opening at `pattern[at] == '['`, and where the pattern goes on.

    Follows stringmatchlen's class loop step by step, so its quirks come out
    the same (see the module rules).
    """
    end = len(pattern)
    position = at + 1
    negate = position < end and pattern[position] == ord("^")
    if negate:
        position += 1
    accepted = 0
    while True:
        remaining = end - position
        if remaining >= 2 and pattern[position] == _BACKSLASH:
            accepted |= 1 << pattern[position + 1]
            position += 2
        elif remaining == 0:
            break
        elif pattern[position] == ord("]"):
            position += 1
            break
        elif remaining >= 3 and pattern[position + 1] == ord("-"):
            low, high = sorted((pattern[position], pattern[position + 2]))
            if nocase:
                accepted |= _folded_range(_fold(low), _fold(high))
            else:
                accepted |= _range(low, high)
            position += 3
        else:
            accepted |= _literal(pattern[position], nocase)
            position += 1
    return (_ANY ^ accepted if negate else accepted), position


def _tokens(pattern: bytes, nocase: bool) -> list[int]:
    """The pattern as a list of one-byte class masks, with `_STAR` for each run of `*`."""
    tokens: list[int] = []
    position = 0
    end = len(pattern)
    while position < end:
        byte = pattern[position]
        if byte == ord("*"):
            if not tokens or tokens[-1] != _STAR:
                tokens.append(_STAR)
            position += 1
        elif byte == ord("?"):
            tokens.append(_ANY)
            position += 1
        elif byte == ord("["):
            accepted, position = _parse_class(pattern, position, nocase)
            tokens.append(accepted)
        elif byte == _BACKSLASH and position + 1 < end:
            tokens.append(_literal(pattern[position + 1], nocase))
            position += 2
        else:
            tokens.append(_literal(byte, nocase))
            position += 1
    return tokens


def _class_regex(accepted: int) -> bytes:
    """One byte from the mask as a `re` class, written as runs (`[a-z0-9]`), so it stays short."""
    if accepted == _ANY:
        return b"."
    if not accepted:
        return b"[^\\x00-\\xff]"
    if accepted & (accepted - 1) == 0:
        return re.escape(bytes([accepted.bit_length() - 1]))
    runs: list[bytes] = []
    byte = 0
    while accepted >> byte:
        if not accepted >> byte & 1:
            byte += 1
            continue
        low = byte
        while accepted >> (byte + 1) & 1:
            byte += 1
        run = re.escape(bytes([low]))
        runs.append(run if byte == low else run + b"-" + re.escape(bytes([byte])))
        byte += 1
    return b"[" + b"".join(runs) + b"]"


def _piece(classes: list[int]) -> tuple[re.Pattern[bytes], int]:
    """A fixed-length regex (no alternation, no open quantifier: linear search per start)."""
    parts: list[bytes] = []
    written: dict[int, bytes] = {}
    index = 0
    while index < len(classes):
        accepted = classes[index]
        repeat = 1
        while index + repeat < len(classes) and classes[index + repeat] == accepted:
            repeat += 1
        if accepted not in written:
            written[accepted] = _class_regex(accepted)
        parts.append(written[accepted] if repeat == 1 else b"%s{%d}" % (written[accepted], repeat))
        index += repeat
    regex = re.compile(b"".join(parts), re.DOTALL)
    return regex, len(classes)


class Glob:
    """A compiled pattern: compile once, match many subjects as Redis's stringmatchlen would."""

    __slots__ = ("_ends_with_star", "_never", "_pieces", "_starts_with_star", "nocase", "pattern")

    def __init__(self, pattern: bytes, nocase: bool = False) -> None:
        """Compile `pattern`; PatternTooLongError past MAX_PATTERN_BYTES."""
        if len(pattern) > MAX_PATTERN_BYTES:
            raise PatternTooLongError
        self.pattern = pattern
        self.nocase = nocase
        tokens = _tokens(pattern, nocase)
        # Redis recurses once per star that has more pattern after it.
        self._never = tokens[:-1].count(_STAR) > MAX_STAR_DEPTH
        self._starts_with_star = bool(tokens) and tokens[0] == _STAR
        self._ends_with_star = bool(tokens) and tokens[-1] == _STAR
        pieces: list[tuple[re.Pattern[bytes], int]] = []
        classes: list[int] = []
        for token in [*tokens, _STAR]:
            if token != _STAR:
                classes.append(token)
            elif classes:
                pieces.append(_piece(classes))
                classes = []
        self._pieces = pieces

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r}, nocase={self.nocase})"

    @property
    def matches_every_key(self) -> bool:
        """Exactly `*`: KEYS and SCAN list every key without matching (the empty key too)."""
        return self.pattern == b"*"

    def match_key(self, key: bytes) -> bool:
        """Whether KEYS or SCAN MATCH lists `key`: `match`, except that `*` lists every key."""
        return self.pattern == b"*" or self.match(key)

    def match(self, subject: bytes) -> bool:
        """Whether `subject` matches; O(len(pattern) * len(subject)) at worst."""
        if not subject or not self.pattern:
            return subject == self.pattern
        if self._never:
            return False
        pieces = self._pieces
        first, last = 0, len(pieces)
        start, end = 0, len(subject)
        if not self._starts_with_star:
            regex, length = pieces[0]
            if regex.match(subject) is None:
                return False
            if last == 1 and not self._ends_with_star:
                return length == end  # no star at all: the one piece is the whole subject
            start, first = length, 1
        if not self._ends_with_star:
            regex, length = pieces[-1]
            end -= length
            if end < start or regex.match(subject, end) is None:
                return False
            last -= 1
        for regex, _length in pieces[first:last]:
            found = regex.search(subject, start, end)
            if found is None:
                return False
            start = found.end()
        return True


def match(pattern: bytes, subject: bytes, nocase: bool = False) -> bool:
    """Whether `subject` matches `pattern`; build a Glob once to match many subjects."""
    return Glob(pattern, nocase).match(subject)


def literal_prefix(pattern: bytes) -> bytes:
    """The bytes every key that `pattern` matches case-sensitively starts with.

    The literal bytes before the first `*`, `?` or `[`, escapes resolved
    (`foo\\*bar*` gives `foo*bar`).
    """
    prefix = bytearray()
    position, end = 0, len(pattern)
    while position < end:
        byte = pattern[position]
        if byte in _WILDCARDS:
            break
        if byte == _BACKSLASH and position + 1 < end:
            position += 1
            byte = pattern[position]
        prefix.append(byte)
        position += 1
    return bytes(prefix)
