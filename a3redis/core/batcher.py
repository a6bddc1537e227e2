"""Batching a peer link's calls: what leaves in which call, when, and who gets which answer.

Rules:
- A link has two queues, one per kind of call (Apply: records, Read: keys).
  A submission (some items and a waiter) joins the end of its queue; every
  submission is settled exactly once: with the answers to its items, in the
  order of its items, or with a failure.
- A call carries whole submissions from the front of its queue, in order, as
  many as fit its bounds: at most MAX_BATCH records and MAX_CALL_BYTES bytes
  of keys and values per Apply (the request's size: purerpc refuses messages
  over 32 MiB), at most MAX_READ_KEYS keys per Read. A submission that fits
  a call of its own is never split (it leads the next call instead); one too
  large for any call is: its first part fills the current call, the rest
  leads the following ones (a single item over the byte bound goes alone).
  It is settled when its last part is answered, or failed with the first of
  its parts that fails.
- A Read's answer must stay within MAX_PEER_RESPONSE_BYTES, but the link
  cannot know the values before it asks; MAX_READ_KEYS bounds it instead.
  Residual: a Read whose keys' values average more than
  MAX_PEER_RESPONSE_BYTES / MAX_READ_KEYS (240 KiB) is refused by the
  replica, and its submissions fail as if the peer were unavailable.
- When a call leaves: at once when no call of its kind is out. While one
  is out, what comes in waits for it and leaves as one batch (the call's
  end wakes the sender), unless a full call is waiting or the latest call
  of its kind has been out for HOLD_BACK: a call on a connection that just
  died waits for the peer timeout, and the items behind it must not.
- At most `max_in_flight` calls, of both kinds together, are out at once.
- A link whose oldest call out has been out for HOLD_BACK or longer is
  `lagging`: its peer, or the way to it, is slow, and coordinators read
  from it last (core.coordinator's `read_order`).
- A call about to start while none of its kind is out first gathers (the
  shell lets every task that can still run add to it, for GATHER_DELAY at
  most: a3redis.runtime.gathering) when the latest call of its kind carried at
  least GATHER_MIN_WAITERS submissions: calls are evidently shared.
- A call that fails fails every submission it carried; closing the link
  fails every submission still queued. Calls already out fail with their
  own end.
- Keepalive: a link used within KEEPALIVE_IDLE that has had no answer for
  KEEPALIVE_INTERVAL pings its peer (the shell sends an empty Read).
Time is an argument (seconds, any monotonic origin).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from a3redis.core.record import ApplyOutcome, Record
from a3redis.core.validation import MAX_PEER_RESPONSE_BYTES, record_bytes

# Records per Apply call.
MAX_BATCH = 512
# Keys and values per Apply call: as much as a peer's answer may carry, which
# leaves room below purerpc's 32 MiB message limit for every record's framing.
MAX_CALL_BYTES = MAX_PEER_RESPONSE_BYTES
# Keys per Read call: bounds the answer by count (see the residual above).
MAX_READ_KEYS = 128
HOLD_BACK = 0.05
GATHER_DELAY = 0.001
GATHER_MIN_WAITERS = 2
KEEPALIVE_INTERVAL = 2.0
KEEPALIVE_TIMEOUT = 1.0
KEEPALIVE_IDLE = 60.0

Item = TypeVar("Item")
Result = TypeVar("Result")
W = TypeVar("W")


# ----- a submission too large for one call ----------------------------------------------


@dataclass(slots=True, eq=False)
class _Split(Generic[W]):
    """A submission sent in parts: collects their answers until the last one."""

    waiter: W
    results: list[Any]  # one slot per item, filled as parts are answered
    missing: int  # items not answered yet
    settled: bool = False


@dataclass(slots=True, eq=False)
class _Part(Generic[W]):
    """The items of a split submission from `offset` on (as far as its entry says)."""

    split: _Split[W]
    offset: int


# An entry of a queue or a call: (waiter or part, where its items start, how
# many, their bytes). The entries' items lie end to end from the first item.
_Entry = tuple[Any, int, int, int]


@dataclass(slots=True, eq=False)
class Call(Generic[Item, W]):
    """One call's items, and whose they are (see `CallQueue.answered`)."""

    queue: CallQueue[Item, Any, W]
    items: list[Item]
    entries: list[_Entry]
    started: float = 0.0  # when it left (Batcher.next_call)


# ----- one kind of call ------------------------------------------------------------------


class CallQueue(Generic[Item, Result, W]):
    """The queue of one kind of call and the calls of that kind that are out."""

    def __init__(
        self,
        max_items: int,
        item_bytes: Callable[[Item], int] | None = None,
        max_bytes: int = MAX_CALL_BYTES,
    ) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._item_bytes = item_bytes  # None: only the item count is bounded
        self._items: list[Item] = []
        self._entries: list[_Entry] = []
        self._bytes = 0
        self.in_flight = 0  # calls of this kind out
        self.last_call = 0.0  # when the latest of them started
        self.last_waiters = 0  # submissions (or parts) the latest of them carried

    def submit(self, items: list[Item], waiter: W) -> None:
        size = sum(map(self._item_bytes, items)) if self._item_bytes is not None else 0
        self._entries.append((waiter, len(self._items), len(items), size))
        self._items.extend(items)
        self._bytes += size

    def waiting(self) -> bool:
        return bool(self._entries)

    def _full(self) -> bool:
        return len(self._items) >= self.max_items or self._bytes >= self.max_bytes

    def due(self, now: float) -> bool:
        """Whether a call of this kind should leave now (a slot being free)."""
        return bool(self._entries) and (
            # The very sum held_back_until names: `now - last_call >= HOLD_BACK`
            # can be false at that moment by float rounding, and a sender on a
            # fake clock would then wake at the same instant forever.
            self.in_flight == 0 or self._full() or now >= self.last_call + HOLD_BACK
        )

    def held_back_until(self) -> float | None:
        """When waiting submissions stop waiting for the call out, if they wait for one."""
        if self._entries and self.in_flight > 0:
            return self.last_call + HOLD_BACK
        return None

    def should_gather(self) -> bool:
        return (
            bool(self._entries) and self.in_flight == 0 and self.last_waiters >= GATHER_MIN_WAITERS
        )

    def take(self, now: float) -> Call[Item, W]:
        if len(self._items) <= self.max_items and self._bytes <= self.max_bytes:
            # Everything fits (the usual case): hand the lists over instead of copying.
            call = Call(self, self._items, self._entries)
            self._items, self._entries, self._bytes = [], [], 0
        else:
            call = self._take_front()
        self.in_flight += 1
        self.last_call = now
        self.last_waiters = len(call.entries)
        return call

    def _take_front(self) -> Call[Item, W]:
        """Detach the front of the queue, as much as fits one call."""
        items, entries = self._items, self._entries
        taken: list[_Entry] = []
        count = size = 0
        index = 0
        while index < len(entries):
            waiter, start, number, weight = entries[index]
            if count + number <= self.max_items and size + weight <= self.max_bytes:
                taken.append((waiter, count, number, weight))
                count += number
                size += weight
                index += 1
                continue
            if number <= self.max_items and weight <= self.max_bytes:
                break  # fits a call of its own: it leads the next one
            fit, fit_bytes = self._fitting(start, number, count, size)
            if fit == 0:
                break  # the next call starts with it
            if fit == number:  # the rest of it: one item over the byte bound, alone
                taken.append((waiter, count, number, weight))
                count += number
                size += weight
                index += 1
                break
            part = (
                waiter
                if isinstance(waiter, _Part)
                else _Part(_Split(waiter, [None] * number, number), 0)
            )
            taken.append((part, count, fit, fit_bytes))
            count += fit
            size += fit_bytes
            entries[index] = (
                _Part(part.split, part.offset + fit),
                start + fit,
                number - fit,
                weight - fit_bytes,
            )
            break
        taken_items = items[:count]
        self._items = items[count:]
        self._entries = [(w, start - count, n, b) for w, start, n, b in entries[index:]]
        self._bytes -= size
        return Call(self, taken_items, taken)

    def _fitting(self, start: int, number: int, count: int, size: int) -> tuple[int, int]:
        """How many items of an entry, from `start`, fit beside `count` items of `size`
        bytes (at least one in an empty call), and their bytes."""
        room = min(number, self.max_items - count)
        if self._item_bytes is None:
            return room, 0
        fit = fit_bytes = 0
        for item in self._items[start : start + room]:
            weight = self._item_bytes(item)
            if size + fit_bytes + weight > self.max_bytes and (fit or count):
                break
            fit += 1
            fit_bytes += weight
        return fit, fit_bytes

    # ----- a call's end -----------------------------------------------------------------

    def answered(
        self, call: Call[Item, W], results: list[Result]
    ) -> Iterator[tuple[W, list[Result]]]:
        """Who gets which answers: each submission whose last item `call` carried."""
        for waiter, start, count, _ in call.entries:
            if not isinstance(waiter, _Part):
                yield waiter, results[start : start + count]
                continue
            split = waiter.split
            if split.settled:
                continue  # another of its parts failed
            split.results[waiter.offset : waiter.offset + count] = results[start : start + count]
            split.missing -= count
            if split.missing == 0:
                split.settled = True
                yield split.waiter, split.results

    def failed(self, call: Call[Item, W]) -> Iterator[W]:
        """Who fails with `call`: each submission it carried, unless settled already.

        The parts of a failed submission still queued are not sent.
        """
        for waiter, _, _, _ in call.entries:
            if not isinstance(waiter, _Part):
                yield waiter
            elif not waiter.split.settled:
                waiter.split.settled = True
                self._drop_rest(waiter.split)
                yield waiter.split.waiter

    def _drop_rest(self, split: _Split[W]) -> None:
        # A split's rest is always at the front: it leads the call after its part.
        if not self._entries:
            return
        waiter, _, number, weight = self._entries[0]
        if isinstance(waiter, _Part) and waiter.split is split:
            del self._items[:number]
            self._entries = [(w, start - number, n, b) for w, start, n, b in self._entries[1:]]
            self._bytes -= weight

    def drop(self) -> Iterator[W]:
        """Empty the queue; who fails: each submission still queued."""
        entries = self._entries
        self._items, self._entries, self._bytes = [], [], 0
        for waiter, _, _, _ in entries:
            if not isinstance(waiter, _Part):
                yield waiter
            elif not waiter.split.settled:
                waiter.split.settled = True
                yield waiter.split.waiter


# ----- a link: both kinds, the in-flight limit, keepalive -------------------------------


class Batcher(Generic[W]):
    """The batching decisions of one peer link; the shell sends what it is handed."""

    def __init__(self, max_in_flight: int = 4) -> None:
        self.max_in_flight = max_in_flight
        self.applies: CallQueue[Record, ApplyOutcome, W] = CallQueue(MAX_BATCH, record_bytes)
        self.reads: CallQueue[bytes, Record | None, W] = CallQueue(MAX_READ_KEYS)
        self._out: list[Call[Any, W]] = []  # the calls out, of both kinds, oldest first

    @property
    def in_flight(self) -> int:
        """Calls of both kinds out."""
        return len(self._out)

    def waiting(self) -> bool:
        return self.applies.waiting() or self.reads.waiting()

    def should_gather(self) -> bool:
        """A call is about to start for a kind whose latest call was shared."""
        return self.applies.should_gather() or self.reads.should_gather()

    def ready(self, now: float) -> bool:
        """Whether a call should leave now (`next_call` hands it over)."""
        return self.in_flight < self.max_in_flight and (
            self.applies.due(now) or self.reads.due(now)
        )

    def next_call(self, now: float) -> Call[Any, W] | None:
        """The call to send now, if one should leave; it counts as out until `ended`."""
        if self.in_flight >= self.max_in_flight:
            return None
        queue: CallQueue[Any, Any, W]
        if self.applies.due(now):
            queue = self.applies
        elif self.reads.due(now):
            queue = self.reads
        else:
            return None
        call = queue.take(now)
        call.started = now
        self._out.append(call)
        return call

    def lagging(self, now: float) -> bool:
        """Whether the oldest call out has been out for HOLD_BACK or longer."""
        return bool(self._out) and now >= self._out[0].started + HOLD_BACK

    def wake_at(self) -> float | None:
        """When to look again if nothing is submitted and no call ends (None: not before)."""
        if self.in_flight >= self.max_in_flight:
            return None  # only a call's end frees a slot
        applies, reads = self.applies.held_back_until(), self.reads.held_back_until()
        if applies is None or reads is None:
            return reads if applies is None else applies
        return min(applies, reads)

    def ended(self, call: Call[Any, W]) -> bool:
        """A call ended (answered or failed); whether submissions wait for the sender."""
        call.queue.in_flight -= 1
        self._out.remove(call)
        return self.waiting()

    def drop(self) -> Iterator[W]:
        """Closing: who fails, each submission still queued."""
        yield from self.applies.drop()
        yield from self.reads.drop()


def keepalive_due(now: float, last_answer: float, last_used: float) -> bool:
    """Whether a link pings its peer: no answer for KEEPALIVE_INTERVAL, yet in use lately."""
    return now - last_answer >= KEEPALIVE_INTERVAL and now - last_used <= KEEPALIVE_IDLE
