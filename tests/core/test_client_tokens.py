"""Tokens files, token lookup and role permissions (a3redis.core.client_tokens)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a3redis.core import client_tokens as ct
from a3redis.core.client_tokens import Action, Role, TokensFileError, allows, bearer_token
from a3redis.core.consistency import Consistency
from a3redis.core.errors import ErrorKind, PermissionDeniedError, UnauthenticatedError

KEY = bytes(range(32))
READER = "r" * 16
WRITER = "w-token-0123456789"
ADMIN = "Admin.Token/xyz+0123456789=="

FILE = f"""
# who may do what
{READER} readonly
  {WRITER}\treadwrite

{ADMIN}   ADMIN
""".encode()


def test_a_file_maps_each_token_to_its_role() -> None:
    tokens = ct.parse(FILE, KEY)
    assert len(tokens) == 3
    assert tokens.role_of(READER) is Role.READONLY
    assert tokens.role_of(WRITER.encode()) is Role.READWRITE
    assert tokens.role_of(ADMIN) is Role.ADMIN
    assert [tokens.count(role) for role in Role] == [1, 1, 1]


@pytest.mark.parametrize(
    "presented",
    [None, "", READER[:-1], READER + "r", READER.upper(), "é" * 16, "x" * 100_000, b"\xff" * 16],
)
def test_anything_else_has_no_role(presented: str | bytes | None) -> None:
    assert ct.parse(FILE, KEY).role_of(presented) is None


def test_a_token_may_carry_the_levels_its_connections_default_to() -> None:
    text = f"{READER} readonly read=one\n{WRITER} readwrite WRITE=x write=ALL\n"
    with pytest.raises(TokensFileError, match="line 2: after the role"):
        ct.parse(text.encode(), KEY)
    tokens = ct.parse(f"{READER} readonly read=one\n{WRITER} readwrite write=ALL\n".encode(), KEY)
    assert tokens.grant_of(READER) == ct.Grant(Role.READONLY, Consistency.ONE, None)
    assert tokens.grant_of(WRITER) == ct.Grant(Role.READWRITE, None, Consistency.ALL)
    assert tokens.grant_of(ADMIN) is None


def test_tokens_are_kept_only_as_digests() -> None:
    tokens = ct.parse(FILE, KEY)
    assert READER.encode() not in repr(tokens).encode()
    assert all(READER.encode() not in digest for digest in tokens._grants)


def test_another_key_gives_the_same_roles() -> None:
    other = ct.parse(FILE, bytes(32))
    assert other.role_of(ADMIN) is Role.ADMIN
    assert other._grants.keys().isdisjoint(ct.parse(FILE, KEY)._grants.keys())


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (f"{READER}\n", 1, "expected `<token> <role> [read=<level>] [write=<level>]` (1 words"),
        (f"# c\n\n{READER} readonly extra\n", 3, "only `read=<level>` and `write=<level>`"),
        (f"{READER} readonly read=one write=all x=1\n", 1, "(5 words"),
        (f"{READER} readonly read=some\n", 1, "unknown consistency level 'some'"),
        (f"{READER} readonly read=one read=all\n", 1, "`read=` is given twice"),
        (f"{READER} readonly\n{'s' * 15} admin\n", 2, "15 characters; a token has 16 to 256"),
        (f"{'l' * 257} admin\n", 1, "257 characters"),
        (f"{READER} superuser\n", 1, "unknown role 'superuser': a role is one of readonly"),
        (f"{READER} readonly\n{WRITER} admin\n{READER} admin\n", 3, "same token as line 1"),
        ("tokentokentoken\x01 admin\n", 1, "printable ASCII"),
    ],
)
def test_a_bad_line_is_named_with_its_number(text: str, line: int, words: str) -> None:
    with pytest.raises(TokensFileError) as refused:
        ct.parse(text.encode(), KEY)
    assert refused.value.line == line
    assert str(refused.value).startswith(f"line {line}: ")
    assert words in str(refused.value)


def test_errors_never_repeat_a_token() -> None:
    # The token written after its role, and a duplicate: neither text shows a token.
    for text in (f"admin {ADMIN}\n", f"{ADMIN} admin\n{ADMIN} readonly\n"):
        with pytest.raises(TokensFileError) as refused:
            ct.parse(text.encode(), KEY)
        assert ADMIN not in str(refused.value)


def test_non_ascii_tokens_are_refused() -> None:
    with pytest.raises(TokensFileError, match="line 1: a token may hold printable ASCII"):
        ct.parse("tökentokentokentoken admin\n".encode(), KEY)


@pytest.mark.parametrize("text", [b"", b"\n\n# only comments\n   \n"])
def test_a_file_without_tokens_is_refused(text: bytes) -> None:
    with pytest.raises(TokensFileError, match="holds no token") as refused:
        ct.parse(text, KEY)
    assert refused.value.line == 0


def test_the_file_size_is_bounded() -> None:
    line = f"{READER} readonly\n".encode()
    big = line + b"#" * ct.MAX_FILE_BYTES
    with pytest.raises(TokensFileError, match=f"may be {ct.MAX_FILE_BYTES} at most"):
        ct.parse(big, KEY)


def test_the_key_has_a_fixed_size() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        ct.parse(FILE, b"short")


def test_roles_are_ordered_admin_over_readwrite_over_readonly() -> None:
    assert [allows(Role.READONLY, action) for action in Action] == [True, False, False]
    assert [allows(Role.READWRITE, action) for action in Action] == [True, True, False]
    assert [allows(Role.ADMIN, action) for action in Action] == [True, True, True]


@given(st.sampled_from(list(Role)), st.sampled_from(list(Role)), st.sampled_from(list(Action)))
def test_a_role_allows_everything_a_lesser_role_allows(
    lesser: Role, greater: Role, action: Action
) -> None:
    order = list(Role)
    if order.index(lesser) <= order.index(greater) and allows(lesser, action):
        assert allows(greater, action)


def test_check_names_the_error_kind_for_each_front_end() -> None:
    tokens = ct.parse(FILE, KEY)
    assert tokens.check(WRITER, Action.WRITE) is Role.READWRITE
    with pytest.raises(UnauthenticatedError, match="requires a client token") as missing:
        tokens.check(None, Action.READ)
    assert missing.value.kind is ErrorKind.UNAUTHENTICATED
    with pytest.raises(UnauthenticatedError, match="not valid"):
        tokens.check("nope" * 5, Action.READ)
    with pytest.raises(PermissionDeniedError, match="readonly token may not write") as denied:
        tokens.check(READER, Action.WRITE)
    assert denied.value.kind is ErrorKind.PERMISSION_DENIED
    with pytest.raises(PermissionDeniedError, match="needs a admin token"):
        tokens.check(WRITER, Action.ADMIN)


_TOKEN = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E),
    min_size=ct.MIN_TOKEN_LENGTH,
    max_size=40,
).filter(lambda token: not token.startswith("#"))  # such a line is a comment


@given(
    st.dictionaries(_TOKEN, st.sampled_from(list(Role)), min_size=1, max_size=8),
    st.lists(st.sampled_from(["", "# note", "   "]), max_size=3),
    st.binary(min_size=32, max_size=32),
)
def test_every_written_token_is_found_with_its_role_and_nothing_else(
    written: dict[str, Role], noise: list[str], key: bytes
) -> None:
    lines = [f"{token} {role.value}" for token, role in written.items()] + noise
    tokens = ct.parse("\n".join(lines).encode(), key)
    assert len(tokens) == len(written)
    for token, role in written.items():
        assert tokens.role_of(token) is role
        assert tokens.role_of(token + "x") is written.get(token + "x")


@given(st.binary(max_size=300))
def test_any_file_is_parsed_or_refused_with_a_line_number(text: bytes) -> None:
    try:
        tokens = ct.parse(text, KEY)
    except TokensFileError as error:
        assert 0 <= error.line <= len(text.splitlines())
    else:
        assert len(tokens) >= 1


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (f"Bearer {READER}", READER),
        (f"bearer   {READER} ", READER),
        (f"BEARER {READER}", READER),
        ("Bearer", None),
        ("Bearer ", None),
        (f"Basic {READER}", None),
        (READER, None),
        (None, None),
    ],
)
def test_bearer_token_reads_the_authorization_header(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token
