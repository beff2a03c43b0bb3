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
    DNS_ANSWER_TTL_S,
    DNS_ANSWERS_KEPT,
    DNS_FAILURE_TTL_S,
)
from fyntr.log import log
from fyntr.net.sockopt import tune_transport
from fyntr.policy.rules import collect_addresses, happy_eyeballs_order
from fyntr.wire.target import Host, IPAddress, canonical_ip, format_host_port


class UpstreamPending(asyncio.Protocol):
    """The upstream socket between the dial and the 200: holds what the server says first."""

    __slots__ = ("early", "lost", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []
        self.lost = False

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

    def eof_received(self) -> bool:
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
Connector = Callable[
    [asyncio.AbstractEventLoop, IPAddress, int],
    Awaitable[tuple[asyncio.Transport, UpstreamPending]],
]


async def system_resolve(name: str, port: int) -> list[IPAddress]:
    """``getaddrinfo`` with any family and stream sockets, as docs/original.md §4.5."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    out: list[IPAddress] = []
    for family, *_rest, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            out.append(ipaddress.ip_address(str(sockaddr[0]).partition("%")[0]))
    return out


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


class _Attempt:
    """A connect attempt under way; ``task`` is None once it is over."""

    __slots__ = ("deadline", "expired", "task")

    def __init__(self, deadline: float, task: asyncio.Task[object]) -> None:
        self.deadline = deadline
        self.task: asyncio.Task[object] | None = task
        self.expired = False


class DialStats:
    """What the dialer counts, for /metrics and /status."""

    __slots__ = (
        "attempts",
        "lookups",
        "lookups_cached",
        "lookups_coalesced",
        "lookups_failed",
        "wins",
    )

    def __init__(self) -> None:
        self.lookups = 0  # resolver calls
        self.lookups_coalesced = 0  # tunnels that waited for a lookup under way instead
        self.lookups_cached = 0  # tunnels answered from a recent lookup's answer
        self.lookups_failed = 0
        self.attempts = {4: 0, 6: 0}  # connect attempts started, by IP version
        self.wins = {4: 0, 6: 0}  # connects that won, by IP version


class _Answer(NamedTuple):
    """A lookup's outcome, kept until ``expires``: its addresses, or its failure."""

    expires: float
    addresses: list[IPAddress]
    failure: HandshakeError | None


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
        self._clock = clock  # answers' lifetimes (virtual in tests)
        # name -> the lookup under way: a burst to one name asks once ...
        self._lookups: dict[str, asyncio.Future[list[IPAddress]]] = {}
        # ... and its answer serves for a while after (most recent last, bounded).
        self._answers: collections.OrderedDict[str, _Answer] = collections.OrderedDict()

    async def resolve(self, host: Host, port: int) -> list[IPAddress]:
        """Canonical, de-duplicated, sorted addresses; 502 / SOCKS5 0x04 on failure.

        While a lookup of a name is under way, later tunnels wait for its answer instead
        of asking again; its answer is then kept DNS_ANSWER_TTL_S (getaddrinfo gives no
        TTL; aiohttp keeps answers 10 s too), a failure DNS_FAILURE_TTL_S, for at most
        DNS_ANSWERS_KEPT names. Every tunnel is still judged by the policy on the
        addresses it gets, cached or not (net/establish.py)."""
        if host.ip is not None:
            return [host.ip]
        name = host.dns_name
        answer = self._answers.get(name)
        if answer is not None:
            if answer.expires > self._clock():
                self._answers.move_to_end(name)
                self.stats.lookups_cached += 1
                if answer.failure is not None:
                    raise bad_gateway(answer.failure.reason, answer.failure.detail)
                return answer.addresses
            del self._answers[name]
        lookup = self._lookups.get(name)
        if lookup is None:
            self.stats.lookups += 1
            lookup = asyncio.ensure_future(self._lookup(name, port))
            self._lookups[name] = lookup
            lookup.add_done_callback(lambda _done: self._lookups.pop(name, None))
        else:
            self.stats.lookups_coalesced += 1
        # shield: a client that leaves stops waiting, the lookup goes on for the others
        return await asyncio.shield(lookup)

    async def _lookup(self, name: str, port: int) -> list[IPAddress]:
        try:
            addresses = await self._ask(name, port)
        except HandshakeError as err:
            self.stats.lookups_failed += 1
            self._remember(name, _Answer(self._clock() + DNS_FAILURE_TTL_S, [], err))
            raise
        self._remember(name, _Answer(self._clock() + DNS_ANSWER_TTL_S, addresses, None))
        return addresses

    def _remember(self, name: str, answer: _Answer) -> None:
        answers = self._answers
        answers[name] = answer
        answers.move_to_end(name)
        while len(answers) > DNS_ANSWERS_KEPT:
            answers.popitem(last=False)

    async def _ask(self, name: str, port: int) -> list[IPAddress]:
        try:
            async with asyncio.timeout(self._timeouts.dns_s):
                answers = await self._resolver(name, port)
        except TimeoutError:
            raise bad_gateway(
                "resolve_failed", f"DNS lookup timed out after {self._timeouts.dns_s:g}s"
            ) from None
        except OSError as exc:
            raise bad_gateway("resolve_failed", f"DNS lookup failed: {exc}") from None
        if not answers:
            raise bad_gateway("resolve_failed", "DNS answer was empty")
        return collect_addresses(answers)

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
                started = loop.time()
                try:
                    if racing:
                        transport, protocol, ip = await self._race(loop, flow_id, candidates, port)
                    else:
                        ip = candidates[0]
                        self.stats.attempts[ip.version] += 1
                        transport, protocol = await self._attempt(loop, ip, port)
                except TimeoutError:
                    timeouts += 1
                    last = TimeoutError(
                        f"connect to {describe(candidates, port)} timed out after "
                        f"{self._race_timeout(len(candidates)):g}s"
                    )
                except OSError as exc:
                    if exc.errno in _LOCAL_FD_ERRNOS:
                        raise out_of_descriptors(exc) from None
                    last = exc
                else:
                    self.stats.wins[ip.version] += 1
                    return Dialed(
                        transport, protocol, ip, loop.time() - started, timeouts, not ip.is_loopback
                    )
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
