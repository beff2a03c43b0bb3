"""Deficit Round-Robin over byte-stream flows, with an optional token bucket. Pure.

No event loop and no clock of its own: ``now`` is passed in and bytes go out through the
``write`` callback given to ``Scheduler.service``. ``net/relay/pump.py`` binds it to the loop.

The discipline (docs/architecture.md):

* each flow has a FIFO of ``bytes`` chunks; a flow with data waiting is *listed*;
* flows that become active after being idle join the *new* list with a full quantum of
  credit and are served before the *old* list of continuously backlogged flows (the
  sparse-flow priority of fq_codel, RFC 8290 §4.2);
* a listed flow sends up to its deficit per turn, splitting chunks as needed; when its
  deficit is spent it gets another quantum and goes to the back of the old list;
* a flow whose queue empties leaves the lists with its deficit reset (no credit banking,
  unlike docs/original.md §8.4);
* a parked flow (its destination cannot take more) leaves the lists and keeps no credit
  until it is unparked, when it rejoins the back of the old list;
* with a rate, a token bucket bounds what every pass may send, and quanta shrink so that
  a round of every listed flow lasts at most ``DRR_ROUND_S`` at the rate (never below
  ``QUANTUM_MIN_BYTES`` a flow): every flow moves in every 10 ms, and a new flow waits
  for at most one such turn of the new flow before it;
* flows belong to an ``Owner`` (a client: docs/house.md), and the rounds are over owners
  first: each owner with data waiting sends up to its own quantum per turn, taken from
  its flows as above (CAKE's host fairness, ``dual-srchost``). A device with 40 flows
  gets one share of the rate, as a phone with one does. With one owner, the order is the
  flows' order alone.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable

from fyntr.limits import (
    DRR_ALONE_BUDGET_BYTES,
    DRR_ROUND_S,
    QUANTUM_DEFAULT_BYTES,
    QUANTUM_MAX_BYTES,
    QUANTUM_MIN_BYTES,
    RATE_TIMER_MIN_S,
)
from fyntr.sched.quantum import ema_update, recommended_quantum

Chunk = bytes | memoryview
_ROUNDING = 1e-9  # refill arithmetic may land a hair below a whole token
UNBOUNDED = 1 << 62  # a flow's write_max when its destination bounds nothing


class Owner:
    """A client's flows in one direction: the new and old lists of the flows with data
    waiting, and the owner's own deficit in the round over owners."""

    __slots__ = ("__weakref__", "deficit", "listed", "new", "old")

    def __init__(self) -> None:
        self.new: deque[Flow] = deque()
        self.old: deque[Flow] = deque()
        self.deficit = 0
        self.listed = False  # in the scheduler's round


class Flow:
    """One direction of one tunnel, as the scheduler sees it."""

    __slots__ = (
        "adaptive",
        "avg",
        "chunks",
        "deficit",
        "listed",
        "owner",
        "parked",
        "quantum",
        "queued",
        "write_max",
    )

    def __init__(self, quantum: int | None = None, owner: Owner | None = None) -> None:
        self.owner = owner  # None: the scheduler's one default owner
        self.chunks: deque[Chunk] = deque()
        self.queued = 0  # bytes in ``chunks``
        self.deficit = 0
        self.avg: float | None = None  # EMA of enqueued chunk sizes
        self.adaptive = quantum is None
        self.quantum = QUANTUM_DEFAULT_BYTES if quantum is None else quantum
        self.listed = False  # in the new or the old list
        self.parked = False
        # Under a rate, no single write larger: a destination that parks the flow once
        # it holds too much (net/relay/pump.Pump.watch_unsent) overshoots by one write.
        self.write_max = UNBOUNDED


class TokenBucket:
    """``rate`` bytes per second, at most ``burst`` bytes banked."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def reset(self, rate: float, burst: float, now: float) -> None:
        """A new rate from now on; what is banked stays, up to the new burst."""
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.refill(now)
        self.rate = rate
        self.burst = burst
        self.tokens = min(self.tokens, burst)

    def refill(self, now: float) -> None:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now

    def take_one(self) -> bool:
        """Take one whole token; ``delay_for(1)`` is exact up to float rounding."""
        if self.tokens >= 1 - _ROUNDING:
            self.tokens = max(0.0, self.tokens - 1)
            return True
        return False

    def delay_for(self, amount: float) -> float:
        """Seconds until ``amount`` tokens (capped at the burst) will be there."""
        missing = min(amount, self.burst) - self.tokens
        return max(0.0, missing / self.rate)


class Scheduler:
    __slots__ = ("_owners", "anyone", "bucket", "listed", "round")

    def __init__(self, bucket: TokenBucket | None = None) -> None:
        self.bucket = bucket
        self.anyone = Owner()  # of the flows made without an owner
        self.round: deque[Owner] = deque()  # owners with flows listed
        self.listed = 0  # flows listed, over every owner
        self._owners: weakref.WeakValueDictionary[object, Owner] = weakref.WeakValueDictionary()

    def owner(self, key: object) -> Owner:
        """The owner named ``key`` (a client's address), made on first use; it lives as
        long as a flow holds it, so hostile clients cannot grow this without bound."""
        owner = self._owners.get(key)
        if owner is None:
            owner = self._owners[key] = Owner()
        return owner

    @property
    def backlogged(self) -> bool:
        return bool(self.round)

    @property
    def new(self) -> list[Flow]:
        """Flows listed new, owner by owner (for tests and /status)."""
        return [f for owner in self.round for f in owner.new]

    @property
    def old(self) -> list[Flow]:
        return [f for owner in self.round for f in owner.old]

    def enqueue(self, flow: Flow, chunk: Chunk) -> None:
        size = len(chunk)
        flow.chunks.append(chunk)
        flow.queued += size
        if flow.adaptive:
            flow.avg = ema_update(flow.avg, size)
            flow.quantum = recommended_quantum(flow.avg)
        if not flow.listed and not flow.parked:
            flow.listed = True
            self.listed += 1
            flow.deficit = self._quantum(flow)
            self._list_owner(flow.owner or self.anyone).new.append(flow)

    def _list_owner(self, owner: Owner) -> Owner:
        if not owner.listed:
            owner.listed = True
            owner.deficit = self._owner_quantum()
            self.round.append(owner)
        return owner

    def _quantum(self, flow: Flow) -> int:
        """Under a rate, a round of every listed flow lasts at most DRR_ROUND_S."""
        bucket = self.bucket
        if bucket is None:
            return flow.quantum
        return min(flow.quantum, _round_share(bucket, self.listed))

    def _owner_quantum(self) -> int:
        """An owner's turn: its share of a round (at least a full packet), or, unshaped,
        a whole quantum of its flows'."""
        bucket = self.bucket
        if bucket is None:
            return QUANTUM_MAX_BYTES
        return _round_share(bucket, len(self.round))

    def park(self, flow: Flow) -> None:
        """The destination stopped taking data: leave the lists at the next pass."""
        flow.parked = True

    def unpark(self, flow: Flow) -> None:
        flow.parked = False
        if flow.queued and not flow.listed:
            flow.listed = True
            self.listed += 1
            flow.deficit = 0
            self._list_owner(flow.owner or self.anyone).old.append(flow)

    def drop(self, flow: Flow) -> None:
        """Forget a flow's data (its tunnel is gone); it leaves the lists lazily."""
        flow.chunks.clear()
        flow.queued = 0

    def service(self, now: float, write: Callable[[Flow, Chunk], None]) -> int:
        """Run DRR rounds while data waits and the bucket allows; return bytes sent.

        ``write`` may park the flow it is given (its destination paused); nothing else.
        """
        bucket = self.bucket
        if bucket is not None:
            bucket.refill(now)
        owners = self.round
        total = 0
        while owners:
            owner = owners[0]
            new, old = owner.new, owner.old
            if not (new or old):  # its last flow left: out of the round, no credit kept
                owners.popleft()
                owner.listed = False
                owner.deficit = 0
                continue
            if owner.deficit <= 0:  # its turn is over: to the back, with another quantum
                owner.deficit += self._owner_quantum()
                owners.rotate(-1)
                continue
            current = new if new else old
            flow = current[0]
            if flow.parked or not flow.queued:
                # Unlike fq_codel (RFC 8290 §4.2), a new flow that empties leaves at once
                # instead of going to the old list: with quanta of up to 16 KiB a round of
                # 30 bulk flows at 20 Mbit/s lasts 200 ms, and a request-response flow
                # that speaks again within it would wait that long (measured by
                # benchmarks/router.py: probe p99 410 ms with the move).
                current.popleft()
                flow.deficit = 0
                flow.listed = False
                self.listed -= 1
                continue
            if flow.deficit <= 0:
                flow.deficit += self._quantum(flow)
                current.popleft()
                old.append(flow)
                continue
            alone = self.listed == 1
            # A flow with nobody to interleave with may send up to 4 quanta per turn:
            # quanta exist to share, and splitting a lone 256 KiB read into 16 KiB
            # writes halves a shaped tunnel's throughput (fyntr-drr benchmark: 1.5 ->
            # 2.1-2.3 GB/s). More than 4 let a lone flow's turn grow unfair the moment
            # others arrive (shaped burst Jain 0.96 with whole queues).
            budget = min(flow.queued, DRR_ALONE_BUDGET_BYTES) if alone else flow.deficit
            if bucket is not None:
                tokens = int(bucket.tokens)
                if tokens <= 0:
                    break
                budget = min(budget, tokens)
            most = flow.write_max if bucket is not None else budget
            sent = _send(flow, budget, most, write)
            flow.deficit = max(0, flow.deficit - sent) if alone else flow.deficit - sent
            if not alone:
                owner.deficit -= sent
            total += sent
            if bucket is not None:
                bucket.tokens -= sent
        return total

    def next_wake(self) -> float | None:
        """Delay until a pass can send again, when only the bucket holds data back: the
        tokens for a round's worth (DRR_ROUND_S of the rate, a packet at least, a
        largest quantum at most), or for the first chunk of a new flow (a request, a
        probe) when one waits, which goes first. Waiting for a whole quantum held a
        64-byte probe 0.5 s at the 256 kbit/s floor (router benchmark (a): 1.3 s round
        trips while the uplink's queue drained, against direct's 0.3 s); waiting for
        16 KiB at 1 Mbit/s released a burst every 131 ms, and a 100 ms tick of the
        auto rate could see nothing released at all (docs/zero-configuration.md)."""
        bucket = self.bucket
        if bucket is None or not self.round or bucket.tokens >= 1:
            return None
        need = min(QUANTUM_MAX_BYTES, _round_share(bucket, 1))
        for owner in self.round:
            for flow in owner.new:
                if flow.queued and not flow.parked:
                    need = min(need, len(flow.chunks[0]))
                    break
        return max(RATE_TIMER_MIN_S, bucket.delay_for(need))


def _round_share(bucket: TokenBucket, shares: int) -> int:
    """One of ``shares`` equal parts of a round's bytes at the rate (DRR_ROUND_S of it),
    a full packet at least."""
    return max(QUANTUM_MIN_BYTES, int(bucket.rate * DRR_ROUND_S / max(1, shares)))


def _send(flow: Flow, budget: int, most: int, write: Callable[[Flow, Chunk], None]) -> int:
    """Up to ``budget`` bytes of ``flow``'s, in writes of at most ``most``, until it parks."""
    chunks = flow.chunks
    sent = 0
    while chunks and sent < budget and not flow.parked:
        chunk = chunks[0]
        room = min(budget - sent, most)
        if len(chunk) <= room:
            chunks.popleft()
        else:
            view = chunk if isinstance(chunk, memoryview) else memoryview(chunk)
            chunks[0] = view[room:]
            chunk = view[:room]
        size = len(chunk)
        flow.queued -= size
        sent += size
        write(flow, chunk)
    return sent
