"""Connection admission and connection pacing (docs/original.md §2.2; docs/architecture.md). Pure.

* ``Admission``: pending handshakes and live tunnels share the cap. A slot is reserved at
  accept, converted when the tunnel starts, released when the handshake fails or the
  tunnel closes. ``limit == 0`` means unlimited. With a wait, connections over the cap
  queue in FIFO order, each until its deadline.
* ``FifoBucket``: a token bucket whose waiters are served in FIFO order; a request never
  waits while a token is there and nobody is queued.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

from fyntr.sched.drr import TokenBucket

T = TypeVar("T")


class Admission(Generic[T]):
    __slots__ = ("active", "limit", "max_waiting", "pending", "waiting")

    def __init__(self, limit: int, max_waiting: int = 0) -> None:
        self.limit = limit
        self.pending = 0
        self.active = 0
        self.max_waiting = max_waiting
        self.waiting: deque[tuple[float, T]] = deque()  # (deadline, item), FIFO

    @property
    def full(self) -> bool:
        return self.limit > 0 and self.pending + self.active >= self.limit

    def try_reserve(self) -> bool:
        if self.full or self.waiting:  # no overtaking the queue
            return False
        self.pending += 1
        return True

    def release_pending(self) -> None:
        # A release without its reservation is a bug to hear of, not to hide at zero.
        assert self.pending > 0, "a pending slot released twice"
        self.pending -= 1

    def activate(self) -> None:
        """A reserved handshake became a tunnel: the slot changes kind, not count."""
        self.release_pending()
        self.active += 1

    def release_active(self) -> None:
        assert self.active > 0, "an active slot released twice"
        self.active -= 1

    def wait(self, item: T, deadline: float) -> bool:
        """Queue ``item`` for a slot until ``deadline``; False when the queue is full."""
        if len(self.waiting) >= self.max_waiting:
            return False
        self.waiting.append((deadline, item))
        return True

    def admit_waiting(self) -> list[T]:
        """Reserve slots for queued items, in order, while there is room."""
        admitted: list[T] = []
        while self.waiting and not self.full:
            admitted.append(self.waiting.popleft()[1])
            self.pending += 1
        return admitted

    def expire(self, now: float) -> list[T]:
        """Items whose wait is over (deadlines are in FIFO order: all the same wait)."""
        expired: list[T] = []
        while self.waiting and self.waiting[0][0] <= now:
            expired.append(self.waiting.popleft()[1])
        return expired


class FifoBucket(Generic[T]):
    """Connection pacing: ``--connect-rate`` tokens per second, FIFO waiters."""

    __slots__ = ("bucket", "waiters")

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket
        self.waiters: deque[T] = deque()

    def offer(self, waiter: T, now: float) -> bool:
        """True: granted at once. False: ``waiter`` is queued for ``release``."""
        self.bucket.refill(now)
        if not self.waiters and self.bucket.take_one():
            return True
        self.waiters.append(waiter)
        return False

    def cancel(self, waiter: T) -> None:
        """A waiter that gave up frees its place at once."""
        if waiter in self.waiters:
            self.waiters.remove(waiter)

    def release(self, now: float) -> list[T]:
        """Waiters granted a token now, in FIFO order."""
        self.bucket.refill(now)
        granted: list[T] = []
        while self.waiters and self.bucket.take_one():
            granted.append(self.waiters.popleft())
        return granted

    def next_wake(self) -> float | None:
        """Seconds until the head waiter's token, when anyone waits."""
        if not self.waiters:
            return None
        return self.bucket.delay_for(1)
