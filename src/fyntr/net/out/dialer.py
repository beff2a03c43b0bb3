"""DNS and upstream connect attempts (docs/original.md §4.5, §6.7; docs/differences.md).

Resolver and connector are injectable, for tests. Attempt deadlines and back-off are
read on the loop's clock and nothing else, so tests run them in virtual time
(tests/integration/test_dial_timing.py, on looptime's loop).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, NamedTuple, cast

import aiohappyeyeballs
from aiohappyeyeballs import AddrInfoType

from fyntr.config import Timeouts
from fyntr.errors import HandshakeError, Rep, bad_gateway, unavailable
from fyntr.limits import (
    DIAL_BACKOFF_MAX_S,
    DIAL_ROUNDS,
)
from fyntr.log import log
from fyntr.net.kernel.sockopt import tune_transport
from fyntr.net.out.names import DialStats, Names, Resolver, system_resolve
from fyntr.policy.rules import happy_eyeballs_order
from fyntr.wire.parent import Parent
from fyntr.wire.target import IPAddress, canonical_ip, format_host_port


class UpstreamPending(asyncio.Protocol):
    """The upstream socket between the dial and the 200: holds what the server says first,
    and what a parent proxy answers (``receive``)."""

    __slots__ = ("early", "ended", "lost", "transport", "waiter")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []
        self.lost = False
        self.ended = False  # the peer half-closed
        self.waiter: asyncio.Future[None] | None = None  # ``receive`` waits on it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        tune_transport(transport)
        self.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        # uvloop starts reading after connection_made whatever it asked: pausing here
        # holds, so at most one read (256 KiB) waits, on both loops.
        self.early.append(data)
        assert self.transport is not None
        self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def receive(self) -> bytes:
        """The next bytes the peer sends; b"" once it has closed or half-closed."""
        if not (self.early or self.ended or self.lost):
            assert self.transport is not None
            self.waiter = asyncio.get_running_loop().create_future()
            self.transport.resume_reading()
            await self.waiter
            self.waiter = None
        data = b"".join(self.early)
        self.early.clear()
        return data


Connector = Callable[
    [asyncio.AbstractEventLoop, IPAddress, int],
    Awaitable[tuple[asyncio.Transport, UpstreamPending]],
]


async def tcp_connect(
    loop: asyncio.AbstractEventLoop, ip: IPAddress, port: int
) -> tuple[asyncio.Transport, UpstreamPending]:
    transport, protocol = await loop.create_connection(UpstreamPending, str(ip), port)
    return transport, protocol


def rep_for_dial_error(exc: BaseException) -> Rep:
    """SOCKS5 REP from the last dial error (docs/original.md §7.2)."""
    if isinstance(exc, ConnectionRefusedError):
        return Rep.CONNECTION_REFUSED
    if isinstance(exc, OSError) and exc.errno == errno.ENETUNREACH:
        return Rep.NETWORK_UNREACHABLE
    return Rep.HOST_UNREACHABLE


# Out of descriptors here, not a network failure: another round cannot help.
_LOCAL_FD_ERRNOS: Final = frozenset((errno.EMFILE, errno.ENFILE))


def out_of_descriptors(exc: OSError) -> HandshakeError:
    """503 / SOCKS5 0x01 at once, naming the limit to raise."""
    try:
        import resource  # noqa: PLC0415  (POSIX only; this is the rare path)

        soft = str(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    except (ImportError, OSError, ValueError):
        soft = "unknown"
    return unavailable(
        "fd_limit",
        f"cannot open an upstream socket: {exc.strerror} (soft FD limit {soft}); raise "
        "the limit (ulimit -n) or lower --max-connections",
    )


def describe(addrs: Sequence[IPAddress], port: int) -> str:
    first = format_host_port(addrs[0], port)
    return first if len(addrs) == 1 else f"{first} and {len(addrs) - 1} more addresses"


class Dialed(NamedTuple):
    transport: asyncio.Transport
    protocol: UpstreamPending
    address: IPAddress
    connect_s: float  # the successful attempt, SYN to established
    timeouts: int  # attempts that timed out before it: their SYNs were lost
    routed: bool  # not to this machine (loopback): it crosses a router, auto rates apply
    via: Parent | None = None  # the parent proxy it goes through (net/out/parents.py)


class _Attempt:
    """A connect attempt under way; ``task`` is None once it is over."""

    __slots__ = ("deadline", "expired", "task")

    def __init__(self, deadline: float, task: asyncio.Task[object]) -> None:
        self.deadline = deadline
        self.task: asyncio.Task[object] | None = task
        self.expired = False


class Dialer:
    def __init__(
        self,
        timeouts: Timeouts,
        resolver: Resolver = system_resolve,
        connector: Connector = tcp_connect,
        *,
        happy_eyeballs_delay: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``happy_eyeballs_delay``: 0 dials a host's addresses one after another, as
        upstream; more races them (RFC 8305) through aiohappyeyeballs, which dials real
        sockets: ``connector`` serves one-at-a-time dialing (and tests)."""
        self._timeouts = timeouts
        self._resolver = resolver
        self._connector = connector
        self.happy_eyeballs_delay = happy_eyeballs_delay
        self.stats = DialStats()
        self._attempts: collections.deque[_Attempt] = collections.deque()  # by deadline
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self.resolve = Names(timeouts.dns_s, resolver, self.stats, clock).resolve

    async def _attempt(
        self, loop: asyncio.AbstractEventLoop, ip: IPAddress, port: int
    ) -> tuple[asyncio.Transport, UpstreamPending]:
        """One connect, TimeoutError after ``dial_attempt_s``: asyncio.timeout's job, but
        that looks the running loop up three times (see ``dial``) and arms a timer of its
        own. Every attempt has the same timeout, so deadlines come in the order attempts
        start, and one timer serves them all (a uvloop timer armed and cancelled per
        attempt cost 3 us of a set-up)."""
        task = asyncio.current_task(loop)
        assert task is not None
        attempt = _Attempt(loop.time() + self._timeouts.dial_attempt_s, task)
        self._attempts.append(attempt)
        if self._timer is None or self._timer_loop is not loop:  # a Dialer may outlive a loop
            self._timer_loop = loop
            self._timer = loop.call_at(attempt.deadline, self._expire, loop)
        try:
            return await self._connector(loop, ip, port)
        except asyncio.CancelledError:
            if attempt.expired and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            attempt.task = None
            attempts = self._attempts
            while attempts and attempts[0].task is None:
                attempts.popleft()

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """The timer: cancel the attempts past their deadline, re-arm for the next one."""
        now = loop.time()
        attempts = self._attempts
        while attempts and (attempts[0].task is None or attempts[0].deadline <= now):
            attempt = attempts.popleft()
            if attempt.task is not None:
                attempt.expired = True
                attempt.task.cancel()
        self._timer = loop.call_at(attempts[0].deadline, self._expire, loop) if attempts else None

    def _race_timeout(self, addresses: int) -> float:
        """Every attempt of a race gets the attempt timeout from its own start."""
        return self._timeouts.dial_attempt_s + self.happy_eyeballs_delay * (addresses - 1)

    async def _race(
        self,
        loop: asyncio.AbstractEventLoop,
        flow_id: int,
        addrs: Sequence[IPAddress],
        port: int,
    ) -> tuple[asyncio.Transport, UpstreamPending, IPAddress]:
        """RFC 8305: the next address's attempt starts after the delay, or as soon as
        the previous one fails; the first to connect wins, the others are closed."""
        stats = self.stats

        def new_socket(info: AddrInfoType) -> socket.socket:
            family, kind, proto = info[0], info[1], info[2]
            stats.attempts[6 if family == socket.AF_INET6 else 4] += 1
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            return sock

        infos: list[AddrInfoType] = [
            (
                socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                (str(ip), port),
            )
            for ip in addrs
        ]
        async with asyncio.timeout(self._race_timeout(len(infos))):
            sock = await aiohappyeyeballs.start_connection(
                infos,
                happy_eyeballs_delay=self.happy_eyeballs_delay,
                interleave=0,  # already in RFC 8305 order
                loop=loop,
                socket_factory=new_socket,
            )
        try:
            winner = canonical_ip(ipaddress.ip_address(sock.getpeername()[0]))
            transport, protocol = await loop.create_connection(UpstreamPending, sock=sock)
        except BaseException:
            sock.close()
            raise
        if len(addrs) > 1:
            log.info(
                "flow%d: happy eyeballs: %s won of %d addresses",
                flow_id,
                format_host_port(winner, port),
                len(addrs),
            )
        return transport, protocol, winner

    async def _try(
        self,
        loop: asyncio.AbstractEventLoop,
        flow_id: int,
        candidates: Sequence[IPAddress],
        port: int,
        *,
        racing: bool,
    ) -> Dialed | BaseException:
        """One attempt (or one race of ``candidates``): the connection, or why not."""
        started = loop.time()
        try:
            if racing:
                transport, protocol, ip = await self._race(loop, flow_id, candidates, port)
            else:
                ip = candidates[0]
                self.stats.attempts[ip.version] += 1
                transport, protocol = await self._attempt(loop, ip, port)
        except TimeoutError:
            return TimeoutError(
                f"connect to {describe(candidates, port)} timed out after "
                f"{self._race_timeout(len(candidates)):g}s"
            )
        except OSError as exc:
            if exc.errno in _LOCAL_FD_ERRNOS:
                raise out_of_descriptors(exc) from None
            return exc
        self.stats.wins[ip.version] += 1
        return Dialed(transport, protocol, ip, loop.time() - started, 0, not ip.is_loopback)

    async def dial(
        self, loop: asyncio.AbstractEventLoop, flow_id: int, addrs: Sequence[IPAddress], port: int
    ) -> Dialed:
        """Try every address, 3 rounds 200/400 ms apart (docs/original.md §6.7): one after
        another, 3 s each, or raced (RFC 8305, ``happy_eyeballs_delay``).

        The caller passes its loop: on Python 3.11 every ``get_running_loop()`` is a
        getpid() system call, and two of them cost 2% of a tunnel set-up."""
        delay = self._timeouts.dial_backoff_s
        last: BaseException = ConnectionError("no address to dial")
        timeouts = 0
        racing = self.happy_eyeballs_delay > 0 and len(addrs) > 1
        # One race of every address per round, or each address in turn.
        tries: list[Sequence[IPAddress]] = (
            [happy_eyeballs_order(addrs)] if racing else [[ip] for ip in addrs]
        )
        for round_no in range(1, DIAL_ROUNDS + 1):
            for candidates in tries:
                outcome = await self._try(loop, flow_id, candidates, port, racing=racing)
                if isinstance(outcome, Dialed):
                    return outcome._replace(timeouts=timeouts) if timeouts else outcome
                timeouts += isinstance(outcome, TimeoutError)
                last = outcome
            if round_no < DIAL_ROUNDS:
                log.warning(
                    "flow%d: connect round %d/%d failed for all %d addresses; backing off %dms",
                    flow_id,
                    round_no,
                    DIAL_ROUNDS,
                    len(addrs),
                    round(delay * 1000),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, DIAL_BACKOFF_MAX_S)
        raise bad_gateway(
            "dial_failed",
            f"connect failed after {DIAL_ROUNDS} rounds (retries exhausted): {last}",
            rep_for_dial_error(last),
        )

    async def dial_once(
        self, loop: asyncio.AbstractEventLoop, flow_id: int, addrs: Sequence[IPAddress], port: int
    ) -> Dialed:
        """Each address once, one after another: a parent proxy that does not answer is
        left for the next one, not retried. Raises HandshakeError."""
        last: BaseException = ConnectionError("no address to dial")
        for ip in addrs:
            outcome = await self._try(loop, flow_id, [ip], port, racing=False)
            if isinstance(outcome, Dialed):
                return outcome
            last = outcome
        raise bad_gateway("dial_failed", f"connect failed: {last}", rep_for_dial_error(last))
