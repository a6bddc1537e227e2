"""Hostile gossip against the member table: what is refused, what is bounded, what heals.

Every body here is something a peer (or anyone who reaches the HTTP port) can send.
The rules under test are the core's (a3redis.core.membership); nothing is re-decided here.
"""

from __future__ import annotations

import contextlib
import json
import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a3redis.core.membership import (
    MAX_INCARNATION,
    MAX_INCOMPATIBLE,
    MAX_MEMBERS,
    GossipMessage,
    IncompatiblePeerError,
    Membership,
    MembershipSettings,
    MemberState,
    MessageError,
    Probe,
    RefusedInput,
    Status,
    TableFullError,
    decode_message,
)
from tests.support.hostile_gossip import HOSTILE, MEMBER, encoded

REAP = 100.0
REASONS = {"not_json", "too_large", "protocol", "invalid"}


def core(node_id: str = "node-1", incarnation: int = 7) -> Membership:
    me = MemberState(node_id, f"{node_id}:1", f"{node_id}:2", Status.ALIVE, incarnation)
    settings = MembershipSettings(failure_timeout=5.0, dead_member_reap=REAP)
    return Membership(me, "c", 3, settings)


def state(
    node_id: str, status: Status = Status.ALIVE, inc: int = 1, addr: str | None = None
) -> MemberState:
    host = addr or node_id
    return MemberState(node_id, f"{host}:1", f"{host}:2", status, inc)


def gossip(sender: MemberState, *others: MemberState, cluster: str = "c") -> GossipMessage:
    return GossipMessage(cluster, 3, sender.node_id, (sender, *others))


@pytest.mark.parametrize(("body", "field"), HOSTILE, ids=lambda v: ascii(v)[:40])
def test_hostile_bodies_are_refused_naming_the_field_never_echoing_the_input(
    body: bytes, field: str
) -> None:
    with pytest.raises(MessageError) as caught:
        decode_message(body)
    text = str(caught.value)
    assert text.startswith(field), text
    assert caught.value.reason in REASONS
    assert text.isascii() and text.isprintable() and len(text) < 400, text
    # Never a Python repr of what was sent.
    for echo in ("../../x", "x" * 50, "\\ud800", "b'", "zombie", "nohostport", "evil/x"):
        assert echo not in text, text


def test_a_good_body_decodes() -> None:
    message = decode_message(encoded())
    assert message.sender == "node-9" and message.members == (state("node-9", addr="h"),)
    top = decode_message(encoded([{**MEMBER, "inc": MAX_INCARNATION, "extra": "\ud800"}]))
    assert top.members[0].incarnation == MAX_INCARNATION  # the cap itself is valid


# Atoms a hostile peer likes: odd ids, surrogates, huge and negative numbers, wrong types.
hostile_atoms = (
    st.sampled_from(
        [
            "../../x",
            "a/b",
            "x" * 256,
            "\ud800",
            "node-1",
            "node-2",
            "alive",
            "dead",
            "left",
            "h:1",
            "node-1:1",
            "",
            2**63,
            2**63 - 1,
            -1,
            0,
            1,
            1e308,
            -0.0,
            True,
            None,
        ]
    )
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
hostile_json = st.recursive(
    hostile_atoms,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["id", "grpc", "gossip", "status", "inc", "age", "x"]), children
        )
    ),
    max_leaves=20,
)


@st.composite
def hostile_messages(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-shaped messages with hostile values, so validation gets deep."""
    member = st.fixed_dictionaries(
        {
            "id": st.sampled_from(["node-1", "node-2", "node-3", "evil"]) | hostile_atoms,
            "grpc": st.sampled_from(["h:1", "node-2:1"]) | hostile_atoms,
            "gossip": st.sampled_from(["h:2", "node-2:2"]) | hostile_atoms,
            "status": st.sampled_from(["alive", "suspect", "dead", "left"]) | hostile_atoms,
            "inc": st.sampled_from([0, 1, 7, 8, MAX_INCARNATION]) | hostile_atoms,
        },
        optional={"age": st.floats(0, 100) | hostile_atoms},
    )
    members = draw(st.lists(member, min_size=1, max_size=5) | hostile_json)
    top = {
        "protocol": draw(st.just(1) | hostile_atoms),
        "cluster": draw(st.just("c") | hostile_atoms),
        "replication_factor": draw(st.just(3) | hostile_atoms),
        "sender": draw(st.sampled_from(["node-2", "evil", "node-1"]) | hostile_atoms),
        "members": members,
    }
    return top


@settings(max_examples=400, deadline=None)
@given(raw=hostile_messages() | hostile_json)
def test_any_json_is_refused_with_a_message_error_or_merged_within_the_caps(raw: Any) -> None:
    membership = core()
    try:
        message = decode_message(json.dumps(raw).encode())
    except MessageError as error:
        assert str(error).isascii()
        return
    with contextlib.suppress(RefusedInput):
        membership.on_exchange(message, 1.0)
    assert len(membership.members()) <= MAX_MEMBERS
    assert membership.me.status is Status.ALIVE
    assert 0 <= membership.me.incarnation <= MAX_INCARNATION
    # What we send next encodes (no lone surrogates) and decodes as valid gossip.
    outgoing = json.dumps(membership.message(2.0).to_json(), ensure_ascii=False).encode()
    assert decode_message(outgoing).sender == "node-1"


@given(st.binary(max_size=300))
def test_any_bytes_are_refused_with_a_message_error_or_decoded(body: bytes) -> None:
    with contextlib.suppress(MessageError):
        decode_message(body)


# ----- bounded tables ------------------------------------------------------------------------


def test_the_table_never_grows_past_max_members_and_a_new_sender_changes_nothing() -> None:
    membership = core()
    sender = state("s-0")
    crowd = tuple(state(f"p-{i}") for i in range(MAX_MEMBERS + 50))
    membership.on_exchange(gossip(sender, *crowd[: MAX_MEMBERS - 1]), 1.0)
    assert len(membership.members()) == MAX_MEMBERS
    assert membership.members_refused == 1  # the one entry that did not fit
    # A known sender's news about more newcomers is skipped, the rest still merges.
    membership.on_exchange(gossip(replace(sender, incarnation=2), *crowd[MAX_MEMBERS:]), 2.0)
    assert len(membership.members()) == MAX_MEMBERS
    assert membership.get("s-0") == replace(sender, incarnation=2)
    before, version = membership.members(), membership.version
    with pytest.raises(TableFullError, match="MAX_MEMBERS=1024"):
        membership.on_exchange(gossip(state("newcomer"), state("p-1", Status.DEAD, 9)), 3.0)
    assert membership.members() == before and membership.version == version


def test_refused_peers_are_remembered_up_to_max_incompatible_newest_first() -> None:
    membership = core()
    for index in range(1000):
        with pytest.raises(IncompatiblePeerError):
            membership.on_exchange(gossip(state(f"x-{index}"), cluster="other"), 1.0)
    assert len(membership.incompatible) == MAX_INCOMPATIBLE
    assert list(membership.incompatible)[-1] == "x-999"
    assert membership.members() == [membership.me]


# ----- incarnations at the cap ---------------------------------------------------------------


def test_a_node_told_it_is_dead_at_the_cap_takes_the_cap_and_stays_alive() -> None:
    node = core("node-1", incarnation=7)
    evil = state("evil")
    for _ in range(3):
        reply = node.on_exchange(gossip(evil, state("node-1", Status.DEAD, MAX_INCARNATION)), 1.0)
        mine = next(m for m in reply.members if m.node_id == "node-1")
        assert (mine.status, mine.incarnation) == (Status.ALIVE, MAX_INCARNATION)
        # Encodable: the number that crashed save_incarnation had 4,301 digits.
        assert len(str(mine.incarnation)) == 19
    assert node.claims_at_cap == 3


@pytest.mark.parametrize("forged", [Status.SUSPECT, Status.DEAD, Status.LEFT])
def test_at_the_cap_alive_outranks_every_status_so_the_refutation_wins_everywhere(
    forged: Status,
) -> None:
    at_cap = MAX_INCARNATION
    for order in ((forged, Status.ALIVE), (Status.ALIVE, forged)):
        observer = core("node-3")
        for index, status in enumerate(order):
            relay = state(f"relay-{index}")
            observer.on_exchange(gossip(relay, state("node-2", status, at_cap)), 1.0)
        member = observer.get("node-2")
        assert member is not None and member.status is Status.ALIVE, order
    # Below the cap the usual order holds: a higher status wins.
    assert state("n", forged, 5).rank() > state("n", Status.ALIVE, 5).rank()


def test_at_the_cap_the_failure_detector_still_declares_a_silent_member_dead() -> None:
    observer = core("node-3")
    observer.on_exchange(gossip(state("node-2", Status.ALIVE, MAX_INCARNATION)), 0.0)
    observer.tick(6.0, random.Random(1))
    member = observer.get("node-2")
    assert member is not None and member.status is Status.DEAD


@given(
    mine=st.integers(0, MAX_INCARNATION),
    claims=st.lists(
        st.tuples(st.sampled_from(list(Status)), st.integers(MAX_INCARNATION - 3, MAX_INCARNATION)),
        max_size=6,
    ),
)
def test_refuting_never_goes_past_the_cap(mine: int, claims: list[tuple[Status, int]]) -> None:
    node = core("node-1", incarnation=mine)
    for status, incarnation in claims:
        node.on_exchange(gossip(state("evil"), state("node-1", status, incarnation)), 1.0)
        assert node.me.status is Status.ALIVE
        assert mine <= node.me.incarnation <= MAX_INCARNATION
        assert node.me.rank() >= state("node-1", status, incarnation).rank()


# ----- address claims ------------------------------------------------------------------------


def test_an_address_claim_at_the_same_incarnation_does_not_displace_a_member() -> None:
    observer = core("node-3")
    real = state("node-2", inc=5)
    observer.on_exchange(gossip(real), 1.0)
    # "zzz" sorts after "node-2": the old tie-break let the lexically larger claim win.
    observer.on_exchange(gossip(state("evil"), state("node-2", inc=5, addr="zzz")), 2.0)
    assert observer.get("node-2") == real
    # The member's own word at that incarnation is still believed.
    moved = state("node-2", inc=5, addr="moved")
    observer.on_exchange(gossip(moved), 3.0)
    assert observer.get("node-2") == moved


def test_a_member_refutes_a_claim_about_its_address_and_its_word_then_wins() -> None:
    victim, observer = core("node-2", incarnation=5), core("node-3")
    observer.on_exchange(gossip(state("evil"), state("node-2", inc=6, addr="zzz")), 1.0)
    forged = observer.get("node-2")
    assert forged is not None and forged.grpc_addr == "zzz:1"  # a higher incarnation wins...
    # ...until the member hears it (any claim at or above its incarnation with another
    # address) and refutes with a higher incarnation, at its own address.
    victim.on_exchange(gossip(state("node-3"), forged), 2.0)
    assert victim.me.incarnation == 7 and victim.me.grpc_addr == "node-2:1"
    observer.on_exchange(victim.message(3.0), 3.0)
    assert observer.get("node-2") == victim.me
    same_incarnation = core("node-2", incarnation=7)
    same_incarnation.on_exchange(gossip(state("evil"), state("node-2", inc=7, addr="zzz")), 1.0)
    assert same_incarnation.me.incarnation == 8


# ----- forgetting dead members ---------------------------------------------------------------


def forget_node_2(observer: Membership) -> None:
    observer.on_exchange(gossip(state("node-2", inc=3)), 0.0)
    rng = random.Random(1)
    observer.tick(6.0, rng)  # silent for FAILURE_TIMEOUT: dead
    member = observer.get("node-2")
    assert member is not None and member.status is Status.DEAD
    assert observer.forget_in("node-2", 6.0) == REAP
    observer.tick(6.0 + REAP - 1, rng)
    assert observer.get("node-2") is not None
    version = observer.version
    observer.tick(6.0 + REAP, rng)
    assert observer.get("node-2") is None and observer.version > version
    assert observer.is_forgotten("node-2")
    assert [m.node_id for m in observer.take_forgotten()] == ["node-2"]
    assert observer.take_forgotten() == []


def test_a_member_dead_for_dead_member_reap_is_forgotten_and_stale_news_does_not_return_it() -> (
    None
):
    observer = core("node-1")
    forget_node_2(observer)
    now = 7.0 + REAP
    # A node that has not forgotten it yet relays it, dead or even alive, at that incarnation.
    for relayed in (Status.DEAD, Status.ALIVE, Status.LEFT):
        observer.on_exchange(gossip(state("node-3"), state("node-2", relayed, 3)), now)
        assert observer.get("node-2") is None
    # It restarted: a higher incarnation is a new life.
    observer.on_exchange(gossip(state("node-3"), state("node-2", Status.ALIVE, 4)), now)
    assert observer.get("node-2") == state("node-2", Status.ALIVE, 4)
    assert not observer.is_forgotten("node-2")


def test_a_forgotten_member_that_still_runs_is_told_refutes_and_is_welcome_back() -> None:
    observer, survivor = core("node-1"), core("node-2", incarnation=3)
    forget_node_2(observer)
    now = 7.0 + REAP
    reply = observer.on_exchange(survivor.message(now), now)
    assert observer.get("node-2") is None
    told = next(m for m in reply.members if m.node_id == "node-2")
    assert told.status is Status.DEAD and told.incarnation == 3
    survivor.on_reply(Probe("node-1:2", None, survivor.message(now)), reply, now)
    assert survivor.me.incarnation == 4
    observer.on_exchange(survivor.message(now + 1), now + 1)
    member = observer.get("node-2")
    assert member is not None and member.status is Status.ALIVE


def test_the_memory_of_a_forgotten_member_lasts_dead_member_reap() -> None:
    observer = core("node-1")
    forget_node_2(observer)
    rng = random.Random(1)
    observer.tick(6.0 + 2 * REAP - 1, rng)
    assert observer.is_forgotten("node-2")
    observer.tick(6.0 + 2 * REAP, rng)
    assert not observer.is_forgotten("node-2") and observer.forgotten() == []


def test_alive_and_suspect_members_and_this_node_are_never_forgotten() -> None:
    observer = core("node-1")
    observer.on_exchange(gossip(state("node-2")), 0.0)
    rng = random.Random(1)
    for step in range(1, 50):
        now = step * REAP / 10
        observer.on_exchange(gossip(state("node-2")), now)  # heard from: alive
        observer.tick(now, rng)
    assert [m.node_id for m in observer.members()] == ["node-1", "node-2"]


@pytest.mark.parametrize(("age", "forgotten"), [(REAP, True), (REAP - 10, False)])
def test_a_restored_dead_member_keeps_counting_towards_being_forgotten(
    age: float, forgotten: bool
) -> None:
    observer = core("node-1")
    saved = [state("node-2", Status.DEAD, 3), state("node-3", Status.LEFT, 2), state("node-4")]
    observer.restore(saved, 1000.0, {"node-2": age, "node-3": age})
    observer.tick(1000.0, random.Random(1))
    assert observer.is_forgotten("node-2") == forgotten
    assert observer.is_forgotten("node-3") == forgotten
    assert observer.get("node-4") is not None


# ----- phantoms and the failure detector -----------------------------------------------------


def test_phantoms_that_never_answer_cannot_starve_the_failure_detector() -> None:
    """500 made-up members among 3 real ones, kept alive by an attacker who says every
    round that it just heard from them: the real ones still hear from each other."""
    cores = {node_id: core(node_id) for node_id in ("node-1", "node-2", "node-3")}
    by_addr = {c.me.gossip_addr: c for c in cores.values()}
    for membership in cores.values():
        membership.add_seeds(by_addr)
    rng, now = random.Random(7), 0.0

    def round_of_gossip() -> None:
        for membership in cores.values():
            for probe in membership.tick(now, rng):
                target = by_addr.get(probe.gossip_addr)
                if target is None:
                    membership.on_probe_failed(probe, now)
                else:
                    membership.on_reply(probe, target.on_exchange(probe.message, now), now)

    for _ in range(5):
        now += 1.0
        round_of_gossip()
    phantoms = tuple(state(f"phantom-{i}") for i in range(500))
    lies = GossipMessage(
        "c", 3, "evil", (state("evil"), *phantoms), {p.node_id: 0.0 for p in phantoms}
    )
    for _ in range(40):  # eight failure timeouts
        now += 1.0
        cores["node-1"].on_exchange(lies, now)
        round_of_gossip()
        for membership in cores.values():
            for node_id in cores:
                member = membership.get(node_id)
                assert member is not None and member.status is Status.ALIVE, (now, node_id)
    assert len(cores["node-2"].members()) == 504  # the phantoms are members all along


def test_a_refused_peer_that_went_quiet_is_forgotten_after_dead_member_reap() -> None:
    membership = core()
    for index, now in ((0, 0.0), (1, 50.0)):
        with pytest.raises(IncompatiblePeerError):
            membership.on_exchange(gossip(state(f"x-{index}"), cluster="other"), now)
    membership.tick(REAP - 1, random.Random(1))
    assert list(membership.incompatible) == ["x-0", "x-1"]
    membership.tick(REAP, random.Random(1))
    assert list(membership.incompatible) == ["x-1"]
    membership.tick(50.0 + REAP, random.Random(1))
    assert not membership.incompatible


def test_a_peer_announcing_other_limits_is_refused_and_one_announcing_none_is_not() -> None:
    ours = (1024, 1_048_576)
    me = MemberState("node-1", "node-1:1", "node-1:2", Status.ALIVE, 1)
    table = Membership(me, "c", 3, MembershipSettings(), limits=ours)
    peer = MemberState("node-2", "node-2:1", "node-2:2", Status.ALIVE, 1)
    other = GossipMessage("c", 3, "node-2", (peer,), limits=(1024, 1000))
    with pytest.raises(IncompatiblePeerError, match="1024/1000 != ours 1024/1048576"):
        table.check_compatible(other, "node-2:2", 0.0)
    # The same limits, or none announced (an older release), are compatible.
    table.check_compatible(GossipMessage("c", 3, "node-2", (peer,), limits=ours), "x:2", 0.0)
    table.check_compatible(GossipMessage("c", 3, "node-2", (peer,)), "x:2", 0.0)
    # What a node sends carries its limits, and they survive the wire.
    sent = decode_message(json.dumps(table.message(0.0).to_json()).encode())
    assert sent.limits == ours


@pytest.mark.parametrize(
    "fields",
    [
        {"max_key_bytes": 10},
        {"max_key_bytes": -1, "max_value_bytes": 1},
        {"max_key_bytes": "1", "max_value_bytes": 1},
        {"max_key_bytes": 1, "max_value_bytes": 2**40},
    ],
)
def test_announced_limits_are_validated(fields: dict[str, Any]) -> None:
    me = MemberState("node-2", "node-2:1", "node-2:2", Status.ALIVE, 1)
    body = GossipMessage("c", 3, "node-2", (me,)).to_json() | fields
    with pytest.raises(MessageError, match=r"max_(key|value)_bytes: must be an integer"):
        decode_message(json.dumps(body).encode())
