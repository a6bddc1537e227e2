"""Ownership transfer: records held where their partition is not owned go to the owners.

Rules, in the order a pass follows them:
- Why: a node can hold records of partitions it does not own (the ring
  changed under it, or a coordinator whose view was behind sent them).
  Anti-entropy compares only the partitions two owners share, so nothing
  else would move them, and a stale copy left behind would come back to life
  if the ring ever gave the partition back.
- When: a pass acts only on a settled ring, the same members as at the
  previous pass (a view that is still changing is not acted on), not while
  this node has not found its ring, and not while a member joins or leaves
  (a3redis.core.transition: former owners keep every copy until the new
  configuration is the only one). A ring that changes during a pass ends it.
- What: every partition that holds at least one key and does not list this
  node among its owners, in partition order.
- To whom: every owner of the partition. A partition waits for a later pass
  unless all of its owners are alive, checked before the partition starts
  and again before each batch goes to each owner: nothing goes to a member
  that is not alive, nothing leaves on a guess.
- How: the partition's keys in sorted order, BATCH at a time, each batch
  applied on every owner in turn. An owner that does not answer, or refuses
  any record (REJECTED: its limits or its clock disagree with ours), stops
  the partition until a later pass.
- Dropped: a batch goes from here only once every owner answered for it
  without REJECTED: STORED, DUPLICATE or SUPERSEDED all mean the owner
  durably holds this version or a later one. (The store's purge drops a
  record only if it is still the version that was handed off.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from a3redis.core.record import ApplyOutcome

BATCH = 256


class Settling:
    """Whether the ring has stayed the same since the previous pass."""

    def __init__(self) -> None:
        self._seen: tuple[str, ...] | None = None

    def settled(self, members: tuple[str, ...], joining: bool) -> bool:
        """Record this pass's ring; whether the pass may act."""
        settled = members == self._seen
        self._seen = members
        return settled and not joining


def foreign_partitions(
    occupied: Iterable[int], me: str, owners_of: Callable[[int], Sequence[str]]
) -> list[int]:
    """The partitions holding keys here whose owners do not include this node."""
    return sorted(p for p in occupied if me not in owners_of(p))


def may_send(owners: Sequence[str], alive: Callable[[str], bool]) -> bool:
    """Whether a partition (or its next batch) may go: it has owners and all are alive."""
    return bool(owners) and all(alive(owner) for owner in owners)


def batches(keys: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
    for start in range(0, len(keys), BATCH):
        yield keys[start : start + BATCH]


def durably_held(outcomes: Sequence[ApplyOutcome]) -> bool:
    """Whether an owner's answer to a batch means it durably holds every record of it."""
    return ApplyOutcome.REJECTED not in outcomes
