"""a3redis.core.peer_auth: signatures bind every field, windows and nonces stop replays,
rotation accepts the previous secret, secrets are validated and never shown."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a3redis.core.peer_auth import (
    MAX_NONCE_CAPACITY,
    MAX_REMEMBERED_NONCES,
    MAX_SECRET_BYTES,
    MIN_SECRET_BYTES,
    NONCE_BYTES,
    WINDOW_MS,
    Credentials,
    Keyring,
    PeerAuth,
    Refusal,
    ReplayGuard,
    Secret,
    nonce_capacity,
    replay_window_ms,
    secret_from_file,
    secret_from_text,
)

OLD = Secret(b"o" * 32)
NEW = Secret(b"n" * 32)
NOW = 1_800_000_000_000


def nonce(number: int) -> bytes:
    return number.to_bytes(NONCE_BYTES, "big")


def node(current: Secret = NEW, previous: Secret | None = None, name: str = "node-1") -> PeerAuth:
    return PeerAuth(Keyring(current, previous), name)


def test_a_signed_message_is_accepted_once() -> None:
    sender, receiver = node(name="node-1"), node(name="node-2")
    credentials = sender.sign("gossip", b"{}", NOW, nonce(1))
    assert credentials.sender == "node-1"
    assert receiver.verify("gossip", credentials, b"{}", NOW + 5) is None
    assert receiver.verify("gossip", credentials, b"{}", NOW + 6) is Refusal.REPLAYED


fields = st.sampled_from(["channel", "sender", "timestamp", "nonce", "body"])


@given(fields, st.binary(max_size=64))
def test_changing_any_signed_field_breaks_the_signature(which: str, body: bytes) -> None:
    receiver = node(name="node-9")
    signed = node().sign("Apply", body, NOW, nonce(7))
    channel = "Apply"
    if which == "channel":
        channel = "Read"
    elif which == "sender":
        signed = dataclasses.replace(signed, sender="node-2")
    elif which == "timestamp":
        signed = dataclasses.replace(signed, timestamp_ms=str(NOW + 1))
    elif which == "nonce":
        signed = dataclasses.replace(signed, nonce=nonce(8).hex())
    else:
        body = body + b"x"
    assert receiver.verify(channel, signed, body, NOW) is Refusal.BAD_SIGNATURE


def test_fields_cannot_be_shifted_from_one_into_another() -> None:
    # The label ends where the sender begins only at a newline, which neither may hold.
    with pytest.raises(ValueError):
        node().sign("gossip\nnode-1", b"", NOW, nonce(1))
    with pytest.raises(ValueError):
        node().sign("gossip reply", b"", NOW, nonce(1))
    with pytest.raises(ValueError):
        PeerAuth(Keyring(NEW), "node\n1")


@pytest.mark.parametrize("channel", ["remove:a b", "remove:\u00e9", "", "x" * 201])
def test_a_label_we_never_sign_is_malformed(channel: str) -> None:
    signed = node().sign("gossip", b"", NOW, nonce(1))
    assert node(name="node-2").verify(channel, signed, b"", NOW) is Refusal.MALFORMED


def test_another_secret_is_a_bad_signature() -> None:
    signed = node(OLD).sign("gossip", b"b", NOW, nonce(1))
    assert node(NEW).verify("gossip", signed, b"b", NOW) is Refusal.BAD_SIGNATURE


def test_rotation_accepts_the_previous_secret_and_signs_with_the_current() -> None:
    rotated = node(NEW, previous=OLD, name="node-2")
    assert (
        rotated.verify("gossip", node(OLD).sign("gossip", b"b", NOW, nonce(1)), b"b", NOW) is None
    )
    assert (
        rotated.verify("gossip", node(NEW).sign("gossip", b"b", NOW, nonce(2)), b"b", NOW) is None
    )
    # What the rotated node sends, a node that only knows the new secret accepts.
    assert (
        node(NEW).verify("gossip", rotated.sign("gossip", b"b", NOW, nonce(3)), b"b", NOW) is None
    )
    # A third secret is not accepted.
    third = node(Secret(b"t" * 32)).sign("gossip", b"b", NOW, nonce(4))
    assert rotated.verify("gossip", third, b"b", NOW) is Refusal.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("skew", "refusal"),
    [
        (0, None),
        (WINDOW_MS, None),
        (-WINDOW_MS, None),
        (WINDOW_MS + 1, Refusal.OUT_OF_WINDOW),
        (-WINDOW_MS - 1, Refusal.OUT_OF_WINDOW),
        (10**12, Refusal.OUT_OF_WINDOW),
    ],
)
def test_timestamps_more_than_the_window_away_are_refused(
    skew: int, refusal: Refusal | None
) -> None:
    signed = node().sign("gossip", b"", NOW + skew, nonce(1))
    assert node(name="node-2").verify("gossip", signed, b"", NOW) is refusal


@pytest.mark.parametrize(
    ("max_clock_skew_ms", "window_ms"),
    [(1_000, WINDOW_MS), (WINDOW_MS, WINDOW_MS), (60_000, 60_000), (3_600_000, 3_600_000)],
)
def test_the_window_covers_the_clock_skew_the_data_path_accepts(
    max_clock_skew_ms: int, window_ms: int
) -> None:
    assert replay_window_ms(max_clock_skew_ms) == window_ms


def test_members_as_far_apart_as_max_clock_skew_accept_each_other() -> None:
    window = replay_window_ms(60_000)
    receiver = PeerAuth(Keyring(NEW), "node-2", ReplayGuard(window, nonce_capacity(window)))
    behind = node().sign("gossip", b"", NOW - 45_000, nonce(1))
    ahead = node().sign("gossip", b"", NOW + 45_000, nonce(2))
    assert receiver.verify("gossip", behind, b"", NOW) is None
    assert receiver.verify("gossip", ahead, b"", NOW) is None
    assert receiver.verify("gossip", ahead, b"", NOW) is Refusal.REPLAYED
    too_far = node().sign("gossip", b"", NOW - window - 1, nonce(3))
    assert receiver.verify("gossip", too_far, b"", NOW) is Refusal.OUT_OF_WINDOW


@pytest.mark.parametrize(
    ("window_ms", "capacity"),
    [
        (WINDOW_MS, MAX_REMEMBERED_NONCES),
        (WINDOW_MS + 1, 2 * MAX_REMEMBERED_NONCES),
        (60_000, 2 * MAX_REMEMBERED_NONCES),
        (3_600_000, MAX_NONCE_CAPACITY),
    ],
)
def test_the_nonce_bound_grows_with_the_window_up_to_a_ceiling(
    window_ms: int, capacity: int
) -> None:
    assert nonce_capacity(window_ms) == capacity


def test_a_captured_message_replayed_after_the_window_is_refused() -> None:
    receiver = node(name="node-2")
    signed = node().sign("gossip", b"m", NOW, nonce(1))
    assert receiver.verify("gossip", signed, b"m", NOW) is None
    # The nonce has been forgotten by then: the timestamp alone refuses it.
    later = NOW + WINDOW_MS + 2 * 1000
    receiver.guard.admit("f" * 32, later, later)  # any later message drops old nonces
    assert len(receiver.guard) == 1
    assert receiver.verify("gossip", signed, b"m", later) is Refusal.OUT_OF_WINDOW


@pytest.mark.parametrize(
    ("parts", "refusal"),
    [
        ((None, None, None, None), Refusal.MISSING),
        (("node-1", None, None, None), Refusal.MALFORMED),
        (("bad id", "1", "a" * 32, "b" * 64), Refusal.MALFORMED),
        (("node-1", "-1", "a" * 32, "b" * 64), Refusal.MALFORMED),
        (("node-1", "1" * 16, "a" * 32, "b" * 64), Refusal.MALFORMED),
        (("node-1", "1", "A" * 32, "b" * 64), Refusal.MALFORMED),
        (("node-1", "1", "a" * 31, "b" * 64), Refusal.MALFORMED),
        (("node-1", "1", "a" * 32, "b" * 63), Refusal.MALFORMED),
        (("node-1", "1", "a" * 32, "g" * 64), Refusal.MALFORMED),
        (("node-1", "\u0661", "a" * 32, "b" * 64), Refusal.MALFORMED),
    ],
)
def test_credentials_not_of_our_form_are_refused_as_such(
    parts: tuple[str | None, str | None, str | None, str | None], refusal: Refusal
) -> None:
    parsed = Credentials.parse(*parts)
    assert parsed is refusal
    assert node().verify("gossip", parsed, b"", NOW) is refusal


def test_parsed_credentials_verify_like_the_signed_ones() -> None:
    signed = node().sign("gossip", b"x", NOW, nonce(5))
    parsed = Credentials.parse(signed.sender, signed.timestamp_ms, signed.nonce, signed.signature)
    assert parsed == signed
    assert node(name="node-2").verify("gossip", parsed, b"x", NOW) is None


def test_refusals_forged_or_missing_are_401_the_others_403() -> None:
    assert {r for r in Refusal if r.forged_or_missing} == {
        Refusal.MISSING,
        Refusal.MALFORMED,
        Refusal.BAD_SIGNATURE,
    }


def test_a_forged_message_is_refused_before_the_replay_cache_sees_it() -> None:
    receiver = node(name="node-2")
    for number in range(100):
        forged = node(OLD).sign("gossip", b"", NOW, nonce(number))
        assert receiver.verify("gossip", forged, b"", NOW) is Refusal.BAD_SIGNATURE
    assert len(receiver.guard) == 0


def test_a_full_replay_cache_refuses_rather_than_forgets() -> None:
    guard = ReplayGuard(window_ms=1000, capacity=3, bucket_ms=100)
    for number in range(3):
        assert guard.admit(f"{number:032x}", NOW, NOW) is None
    assert guard.admit(f"{9:032x}", NOW, NOW) is Refusal.BUSY
    # Still remembered: a replay is still a replay, not a new message.
    assert guard.admit(f"{0:032x}", NOW, NOW) is Refusal.REPLAYED
    # Once their window has passed, the nonces go and new messages are taken again.
    later = NOW + 1000 + 100
    assert guard.admit(f"{9:032x}", later, later) is None
    assert len(guard) == 1


def test_nonces_are_kept_until_their_timestamp_leaves_the_window() -> None:
    guard = ReplayGuard(window_ms=1000, capacity=100, bucket_ms=100)
    assert guard.admit("a" * 32, NOW, NOW) is None
    # Within the window the nonce is still known (and the message still within it).
    assert guard.admit("a" * 32, NOW, NOW + 1000) is Refusal.REPLAYED
    # A message stamped ahead of our clock is kept until its own timestamp is old.
    assert guard.admit("b" * 32, NOW + 1000, NOW) is None
    assert guard.admit("b" * 32, NOW + 1000, NOW + 2000) is Refusal.REPLAYED


@given(
    st.lists(
        st.tuples(st.integers(0, 40), st.integers(-1500, 1500), st.integers(0, 60)),
        max_size=300,
    )
)
def test_the_cache_never_grows_past_its_bound_and_never_forgets_a_nonce_in_the_window(
    steps: list[tuple[int, int, int]],
) -> None:
    """Against a model that remembers everything: a nonce admitted at a timestamp is
    refused again for as long as that timestamp is within the window."""
    window, capacity = 1000, 20
    guard = ReplayGuard(window_ms=window, capacity=capacity, bucket_ms=100)
    admitted: dict[str, int] = {}
    now = NOW
    for nonce_number, offset, advance in steps:
        now += advance * 10
        stamp = now + offset
        if abs(stamp - now) > window:
            continue  # the verifier refuses these before the cache
        text = f"{nonce_number:032x}"
        result = guard.admit(text, stamp, now)
        if text in admitted and admitted[text] // 100 == stamp // 100:
            # The same message again (same nonce, same second of timestamp).
            assert result is Refusal.REPLAYED
        if result is None:
            admitted[text] = stamp
        assert len(guard) <= capacity


def test_secret_from_text_counts_bytes_and_names_the_minimum() -> None:
    assert secret_from_text("s" * MIN_SECRET_BYTES).value == b"s" * MIN_SECRET_BYTES
    # 16 two-byte characters are 32 bytes.
    assert len(secret_from_text("\u00e9" * 16).value) == 32
    with pytest.raises(ValueError, match=f"31 bytes, fewer than {MIN_SECRET_BYTES}"):
        secret_from_text("s" * 31)
    with pytest.raises(ValueError, match="UTF-8"):
        secret_from_text("\ud800" * 40)
    with pytest.raises(ValueError, match=f"more than {MAX_SECRET_BYTES}"):
        secret_from_text("s" * (MAX_SECRET_BYTES + 1))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"k" * 32 + b"\n", b"k" * 32),
        (b"k" * 32 + b"\r\n", b"k" * 32),
        (b"k" * 32 + b"\n\n", b"k" * 32 + b"\n"),
        (b"k" * 32, b"k" * 32),
        (b" " + b"k" * 32, b" " + b"k" * 32),
        (bytes(range(32)), bytes(range(32))),
    ],
)
def test_secret_from_file_drops_one_trailing_newline(data: bytes, expected: bytes) -> None:
    assert secret_from_file(data).value == expected


def test_a_short_file_is_refused_after_its_newline_is_dropped() -> None:
    with pytest.raises(ValueError, match="31 bytes"):
        secret_from_file(b"k" * 31 + b"\n")


def test_a_secret_never_shows_its_bytes() -> None:
    secret = Secret(b"hunter2-hunter2-hunter2-hunter2!")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert "hunter2" not in repr(Keyring(secret).__dict__)


def test_signing_refuses_a_nonce_of_another_size() -> None:
    with pytest.raises(ValueError):
        node().sign("gossip", b"", NOW, b"short")
