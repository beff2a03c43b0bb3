"""Connection pacing on the loop (docs/architecture.md): ``--connect-rate`` as a FIFO token bucket,
fixed or, with ``auto``, steered by every dial's outcome (sched/connectrate.py)."""

from __future__ import annotations

import asyncio

from fyntr.config import AUTO, Settings
from fyntr.errors import unavailable
from fyntr.limits import CONNECT_AUTO_BURST
from fyntr.log import log
from fyntr.metrics import RateInfo
from fyntr.net.kernel import tcpinfo
from fyntr.net.out.dialer import Dialed
from fyntr.sched.admission import FifoBucket
from fyntr.sched.connectrate import ConnectRate
from fyntr.sched.drr import TokenBucket


class ConnectGate:
    """Dials wait here for a token in FIFO order; None of it exists without a rate."""

    __slots__ = ("_budget_s", "_loop", "_timer", "auto", "bucket")

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: Settings) -> None:
        self._loop = loop
        self._budget_s = settings.timeouts.handshake_budget_s
        self._timer: asyncio.TimerHandle | None = None
        self.auto: ConnectRate | None = None
        self.bucket: FifoBucket[asyncio.Future[None]] | None = None
        rate = settings.connect_rate
        if rate == AUTO:
            self.auto = ConnectRate()
            assert self.auto.rate is not None
            burst = float(settings.connect_burst or CONNECT_AUTO_BURST)
            self.bucket = FifoBucket(TokenBucket(self.auto.rate, burst, loop.time()))
        elif rate > 0:
            burst = float(settings.connect_burst or rate)
            self.bucket = FifoBucket(TokenBucket(rate, max(1.0, burst), loop.time()))

    @property
    def waiters(self) -> int:
        return len(self.bucket.waiters) if self.bucket is not None else 0

    @property
    def pacing(self) -> bool:
        return self.bucket is not None and (self.auto is None or self.auto.rate is not None)

    def info(self) -> RateInfo:
        if self.auto is not None:
            rate = self.auto.rate
            return RateInfo(rate, True, "unpaced" if rate is None else "paced")
        return RateInfo(None if self.bucket is None else self.bucket.bucket.rate, auto=False)

    def learns_from(self, routed: bool) -> bool:
        """Auto paces and learns only from connections that cross a router (``routed``):
        one to this machine itself (loopback) protects nothing and says nothing of the
        network. A fixed --connect-rate paces every dial, as the user asked."""
        return self.auto is None or routed

    async def wait(self, accepted_at: float) -> bool:
        """Wait for a token, within the handshake budget from ``accepted_at`` (503 /
        SOCKS5 0x01 past it). True when it had to wait."""
        if not self.pacing:
            return False
        bucket = self.bucket
        assert bucket is not None
        ticket: asyncio.Future[None] = self._loop.create_future()
        if bucket.offer(ticket, self._loop.time()):
            return False
        self._arm()
        try:
            async with asyncio.timeout_at(accepted_at + self._budget_s):
                await ticket
        except TimeoutError:
            bucket.cancel(ticket)
            raise unavailable(
                "connect_rate", f"no --connect-rate token within {self._budget_s:g}s of accept"
            ) from None
        finally:
            # A client gone while waiting (the task is cancelled) frees its place at once.
            if not ticket.done():
                ticket.cancel()
                bucket.cancel(ticket)
        return True

    def observe(self, dialed: Dialed, *, paced: bool) -> None:
        """``auto``: learn from a dial that connected; put the new rate in force."""
        if self.auto is None:
            return
        bucket = self.bucket
        assert bucket is not None
        sample = tcpinfo.read(dialed.transport.get_extra_info("socket"))
        syn_lost = dialed.timeouts > 0 or (sample is not None and sample.total_retrans > 0)
        # The kernel's handshake RTT (srtt right after connect is the SYN's round trip),
        # not the time the dial took on the loop: 50 handshakes at once on one loop made
        # loopback connects look 30 ms slow and halved the rate again and again.
        connect_s = dialed.connect_s if sample is None else sample.rtt_s
        before = self.auto.rate
        rate = self.auto.observe(
            self._loop.time(), dialed.address, connect_s, syn_lost=syn_lost, paced=paced
        )
        if rate == before:
            return
        if rate is None:
            log.info("auto connect rate: connects are healthy; unpaced")
            for ticket in bucket.waiters:
                ticket.set_result(None)
            bucket.waiters.clear()
            return
        bucket.bucket.reset(rate, bucket.bucket.burst, self._loop.time())
        if before is None or rate < before:
            log.info(
                "auto connect rate: %s; pacing new connections at %.0f/s",
                "a SYN was lost" if syn_lost else "connects queued",
                rate,
            )

    def _arm(self) -> None:
        assert self.bucket is not None
        if self._timer is None and (delay := self.bucket.next_wake()) is not None:
            self._timer = self._loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        assert self.bucket is not None
        self._timer = None
        for ticket in self.bucket.release(self._loop.time()):
            ticket.set_result(None)
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
