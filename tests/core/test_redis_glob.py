"""Redis's glob: the same answers as Redis's stringmatchlen, at bounded cost."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a3redis.core.redis_glob import (
    MAX_PATTERN_BYTES,
    MAX_STAR_DEPTH,
    Glob,
    PatternTooLongError,
    literal_prefix,
    match,
)

# (pattern, subject, matches): each row was checked against redis-server 7.0.15
# (KEYS pattern over the subjects as keys).
CASES: list[tuple[bytes, bytes, bool]] = [
    (b"hello", b"hello", True),
    (b"hello", b"hell", False),
    (b"hello", b"helloo", False),
    (b"h?llo", b"hello", True),
    (b"h?llo", b"hllo", False),
    (b"h*llo", b"hllo", True),
    (b"h*llo", b"heeeello", True),
    (b"h*llo", b"heeeelloX", False),
    (b"h[ae]llo", b"hello", True),
    (b"h[ae]llo", b"hallo", True),
    (b"h[ae]llo", b"hillo", False),
    (b"h[^e]llo", b"hallo", True),
    (b"h[^e]llo", b"hello", False),
    (b"h[a-b]llo", b"hbllo", True),
    (b"h[a-b]llo", b"hcllo", False),
    (b"h[b-a]llo", b"hallo", True),  # the ends of a range in either order
    (b"*", b"x", True),
    (b"**", b"x", True),
    (b"a*", b"a", True),  # a trailing star matches nothing
    (b"a**", b"a", True),
    (b"*a", b"a", True),
    (b"*a*", b"bab", True),
    (b"*a*b*c", b"xaybzc", True),
    (b"*a*b*c", b"xaybzcq", False),
    (b"a*b*c", b"acb", False),
    (b"a*a", b"a", False),  # the first and the last piece may not overlap
    (b"ab*ba", b"aba", False),
    (b"ab*ba", b"abba", True),
    (b"*a*a*", b"a", False),  # nor may two pieces in the middle
    (b"*ab*ab*", b"xabx", False),
    (b"*ab*ab*", b"abab", True),
    (b"?", b"", False),
    (b"*", b"\x00", True),
    (b"\\*", b"*", True),  # an escape makes a wildcard literal
    (b"\\*", b"x", False),
    (b"\\?", b"?", True),
    (b"\\[a]", b"[a]", True),
    (b"\\a", b"a", True),
    (b"a\\", b"a\\", True),  # a backslash that ends the pattern is itself
    (b"[\\]]", b"]", True),  # an escape inside a class
    (b"[\\-]", b"-", True),
    (b"[\\^a]", b"^", True),
    (b"[\\^a]", b"a", True),
    (b"[a\\", b"\\", True),  # a backslash that ends the pattern is a class member
    (b"[a\\]", b"]", True),  # `\]` escapes the `]`: the class stays open
    (b"[abc", b"b", True),  # an unclosed class runs to the end of the pattern
    (b"[abc", b"d", False),
    (b"[", b"a", False),
    (b"[^", b"a", True),
    (b"[]a", b"a", False),  # `]` right after `[` closes an empty class: nothing matches it
    (b"[]a", b"]a", False),
    (b"[^]a", b"xa", True),  # ... and its negation matches any byte
    (b"[a-]x", b"-x", False),  # `[a-]` is the range `]`..`a`, and the class goes on
    (b"[a-]x", b"^x", False),
    (b"[a-]x]", b"^", True),
    (b"[a-]x]", b"x", True),
    (b"[a-]x]", b"-", False),
    (b"[-a]", b"-", True),
    (b"[a-]", b"_", True),
    (b"[a-c-e]", b"-", True),  # after a range, `-` is a member again
    (b"[a-c-e]", b"d", False),
    (b"[a-c-e]", b"e", True),
    (b"[^a-c]x", b"bx", False),
    (b"[^a-c]x", b"dx", True),
    (b"[*]", b"*", True),
    (b"[?]", b"a", False),
    (b"a[", b"a", False),
    (b"*[", b"a", False),
    (b"H*", b"hello", False),  # case-sensitive by default
    (b"[A-Z]*", b"hello", False),
    (b"\xe9*", b"\xe9t\xe9", True),  # bytes, not text
    (b"[\x80-\xff]", b"\xe9", True),  # both ends above 0x7f: Redis agrees on every platform
    (b"[\x80-\xff]", b"a", False),
]

# (pattern, subject, matches) with nocase: checked against redis-server 7.0.15
# through COMMAND LIST FILTERBY PATTERN (command names are matched with nocase).
NOCASE_CASES: list[tuple[bytes, bytes, bool]] = [
    (b"GET", b"get", True),
    (b"g?T", b"get", True),
    (b"CONFIG|*", b"config|get", True),
    (b"[G]et", b"get", True),
    (b"[^G]et", b"get", False),
    (b"[F-H]et", b"get", True),
    (b"[\\G]et", b"get", False),  # an escaped class member keeps its case, as in Redis
    (b"\\Get", b"get", True),  # an escaped literal outside a class folds
    (b"[A-z]et", b"get", True),
    (b"[[-z]et", b"get", True),
    (b"[Z-a]et", b"get", False),  # folded, the range `z`..`a` holds only `a`
]


@pytest.mark.parametrize(("pattern", "subject", "expected"), CASES)
def test_a_pattern_matches_as_in_redis(pattern: bytes, subject: bytes, expected: bool) -> None:
    assert match(pattern, subject) is expected
    assert Glob(pattern).match(subject) is expected


@pytest.mark.parametrize(("pattern", "subject", "expected"), NOCASE_CASES)
def test_nocase_folds_as_redis_does(pattern: bytes, subject: bytes, expected: bool) -> None:
    assert match(pattern, subject, nocase=True) is expected


def test_without_nocase_case_matters() -> None:
    assert not match(b"GET", b"get")
    assert not match(b"[F-H]et", b"get")


def test_nocase_folds_ascii_letters_only() -> None:
    assert not match(b"\xc9", b"\xe9", nocase=True)
    assert not match(b"@", b"`", nocase=True)
    assert match(b"[a-z]", b"Q", nocase=True)


def test_an_empty_subject_matches_only_the_empty_pattern() -> None:
    assert match(b"", b"")
    assert not match(b"", b"a")
    assert not match(b"*", b"")
    assert not match(b"**", b"")


def test_keys_and_scan_list_every_key_for_exactly_a_star() -> None:
    assert Glob(b"*").matches_every_key
    assert Glob(b"*").match_key(b"")
    assert not Glob(b"**").matches_every_key
    assert not Glob(b"**").match_key(b"")
    assert Glob(b"a*").match_key(b"ab")
    assert not Glob(b"a*").match_key(b"b")


def test_more_stars_than_redis_recurses_into_never_match() -> None:
    subject = b"a" * (MAX_STAR_DEPTH + 10)
    at_the_cap = b"*a" * MAX_STAR_DEPTH
    past_the_cap = b"*a" * (MAX_STAR_DEPTH + 1)
    assert match(at_the_cap, subject)
    assert match(at_the_cap + b"*", subject)  # a trailing star is not recursed into
    assert not match(past_the_cap, subject)
    assert not match(past_the_cap + b"*", subject)


@pytest.mark.parametrize(
    "pattern",
    [
        b"a*" * 40 + b"b",
        b"*a" * 40 + b"*b*",
        b"*" + b"a" * 200 + b"b*",
        b"*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*" + b"[^a]" * 20 + b"*",
        b"?*" * 500 + b"b",
    ],
)
def test_a_hostile_pattern_on_a_long_key_finishes_fast(pattern: bytes) -> None:
    glob = Glob(pattern)
    key = b"a" * 20_000
    started = time.perf_counter()
    for _ in range(3):
        assert not glob.match(key)
    # A backtracking matcher takes longer than the age of the universe here.
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    "unit", [b"?", b"[^a]", b"ab", b"[^%c]", b"[a-z]", b"*a", b"[" + b"ab-" * 3000]
)
def test_the_longest_pattern_compiles_fast(unit: bytes) -> None:
    if b"%c" in unit:  # many different classes, so nothing is shared
        unit = b"".join(unit % byte for byte in range(32, 127))
    pattern = (unit * MAX_PATTERN_BYTES)[:MAX_PATTERN_BYTES]
    started = time.perf_counter()
    for nocase in (False, True):
        Glob(pattern, nocase).match(b"b" * 1024)
    assert time.perf_counter() - started < 2.0


def test_a_longer_pattern_is_refused() -> None:
    with pytest.raises(PatternTooLongError, match="pattern longer than 8192 bytes"):
        Glob(b"a" * (MAX_PATTERN_BYTES + 1))


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [
        (b"", b""),
        (b"*", b""),
        (b"user:*", b"user:"),
        (b"user:?", b"user:"),
        (b"user:[ab]", b"user:"),
        (b"user:1", b"user:1"),
        (b"a\\*b*", b"a*b"),
        (b"a\\", b"a\\"),
        (b"a\\[x]", b"a[x]"),
        (b"]x*", b"]x"),
    ],
)
def test_the_literal_prefix_stops_at_the_first_wildcard(pattern: bytes, prefix: bytes) -> None:
    assert literal_prefix(pattern) == prefix


# The reference: an independent translation to Python's `re`, for small inputs
# only (`re` backtracks). A class is decided one candidate byte at a time, by
# walking it the way Redis's loop does, rather than parsed into a set.
def _fold(byte: int) -> int:
    return byte + 32 if 65 <= byte <= 90 else byte


def _class_accepts(pattern: bytes, start: int, candidate: int, nocase: bool) -> tuple[bool, int]:
    """Whether the class at `pattern[start] == '['` accepts `candidate`, and where it ends."""
    i = start + 1
    negate = i < len(pattern) and pattern[i] == ord("^")
    i += negate
    hit = False
    while True:
        left = len(pattern) - i
        if left >= 2 and pattern[i] == ord("\\"):
            hit |= pattern[i + 1] == candidate
            i += 2
        elif left == 0:
            return hit != negate, i
        elif pattern[i] == ord("]"):
            return hit != negate, i + 1
        elif left >= 3 and pattern[i + 1] == ord("-"):
            low, high = min(pattern[i], pattern[i + 2]), max(pattern[i], pattern[i + 2])
            value = candidate
            if nocase:
                low, high, value = _fold(low), _fold(high), _fold(candidate)
            hit |= low <= value <= high
            i += 3
        else:
            hit |= _fold(pattern[i]) == _fold(candidate) if nocase else pattern[i] == candidate
            i += 1


def _one_of(accepted: list[int]) -> str:
    if not accepted:
        return "(?!)"
    return "[" + "".join(f"\\x{byte:02x}" for byte in accepted) + "]"


def reference_match(pattern: bytes, subject: bytes, nocase: bool) -> bool:
    if not subject:
        return not pattern
    regex: list[str] = []
    recursions = 0
    i = 0
    while i < len(pattern):
        byte = pattern[i]
        if byte == ord("*"):
            while i < len(pattern) and pattern[i] == ord("*"):
                i += 1
            regex.append(".*")
            recursions += i < len(pattern)
        elif byte == ord("?"):
            regex.append(".")
            i += 1
        elif byte == ord("["):
            regex.append(
                _one_of([c for c in range(256) if _class_accepts(pattern, i, c, nocase)[0]])
            )
            i = _class_accepts(pattern, i, 0, nocase)[1]
        else:
            if byte == ord("\\") and i + 1 < len(pattern):
                i += 1
                byte = pattern[i]
            fold = _fold if nocase else int
            regex.append(_one_of([c for c in range(256) if fold(c) == fold(byte)]))
            i += 1
    if recursions > MAX_STAR_DEPTH:
        return False
    return re.fullmatch("".join(regex).encode(), subject, re.DOTALL) is not None


PATTERN_BYTES = b"ab*?[]^-\\Az\x00\xe9"
patterns = st.lists(st.sampled_from(list(PATTERN_BYTES)), max_size=10).map(bytes)
subjects = st.lists(st.sampled_from(list(b"ab]^-\\*?[Az\x00\xe9")), max_size=8).map(bytes)


def _near_miss(pattern: bytes, filler: bytes) -> bytes:
    """A subject shaped like `pattern`, so that matches are frequent rather than rare."""
    return pattern.replace(b"*", filler).replace(b"?", filler[:1]).translate(None, b"[]\\")


@settings(max_examples=2500, deadline=None)
@given(pattern=patterns, data=st.data(), nocase=st.booleans())
def test_the_matcher_agrees_with_the_reference(
    pattern: bytes, data: st.DataObject, nocase: bool
) -> None:
    filler = data.draw(subjects)
    subject = data.draw(st.sampled_from([filler, _near_miss(pattern, filler)]))
    assert Glob(pattern, nocase).match(subject) == reference_match(pattern, subject, nocase)


literals = st.lists(st.sampled_from(list(b"ab]^-\\Az\x00\xe9")), max_size=8).map(bytes)


@settings(max_examples=500, deadline=None)
@given(pattern=literals, subject=subjects)
def test_a_pattern_without_wildcards_matches_only_what_it_spells(
    pattern: bytes, subject: bytes
) -> None:
    spelled = literal_prefix(pattern)
    assert Glob(pattern).match(spelled)
    assert Glob(pattern).match(subject) == (subject == spelled)


@settings(max_examples=1000, deadline=None)
@given(pattern=patterns, subject=subjects)
def test_every_match_starts_with_the_literal_prefix(pattern: bytes, subject: bytes) -> None:
    if Glob(pattern).match(subject):
        assert subject.startswith(literal_prefix(pattern))
