"""DNS and upstream connect attempts (upstream §4.5, §6.7; SPEC §4.8).

Resolver, connector and sleep are injectable so that retries and timeouts are tested
without waiting for real.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, NamedTuple

from fyntr.config import Timeouts
from fyntr.errors import HandshakeError, Rep, bad_gateway, unavailable
from fyntr.limits import DIAL_BACKOFF_MAX_S, DIAL_ROUNDS
from fyntr.log import log
from fyntr.net.relay import UpstreamPending
from fyntr.policy.rules import collect_addresses
from fyntr.wire.target import Host, IPAddress, format_host_port

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
Connector = Callable[
    [asyncio.AbstractEventLoop, IPAddress, int],
    Awaitable[tuple[asyncio.Transport, UpstreamPending]],
]
Sleep = Callable[[float], Awaitable[None]]


async def system_resolve(name: str, port: int) -> list[IPAddress]:
    """``getaddrinfo`` with any family and stream sockets, as upstream §4.5."""
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
    """SOCKS5 REP from the last dial error (upstream §7.2)."""
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


class Dialed(NamedTuple):
    transport: asyncio.Transport
    protocol: UpstreamPending
    address: IPAddress
    connect_s: float  # the successful attempt, SYN to established
    timeouts: int  # attempts that timed out before it: their SYNs were lost


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
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._timeouts = timeouts
        self._resolver = resolver
        self._connector = connector
        self._sleep = sleep
        self._attempts: collections.deque[_Attempt] = collections.deque()  # by deadline
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    async def resolve(self, host: Host, port: int) -> list[IPAddress]:
        """Canonical, de-duplicated, sorted addresses; 502 / SOCKS5 0x04 on failure."""
        if host.ip is not None:
            return [host.ip]
        try:
            async with asyncio.timeout(self._timeouts.dns_s):
                answers = await self._resolver(host.dns_name, port)
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

    async def dial(
        self, loop: asyncio.AbstractEventLoop, flow_id: int, addrs: Sequence[IPAddress], port: int
    ) -> Dialed:
        """Try every address in order, 3 rounds, 3 s each, 200/400 ms apart (upstream §6.7).

        The caller passes its loop: on Python 3.11 every ``get_running_loop()`` is a
        getpid() system call, and two of them cost 2% of a tunnel set-up."""
        delay = self._timeouts.dial_backoff_s
        last: BaseException = ConnectionError("no address to dial")
        timeouts = 0
        for round_no in range(1, DIAL_ROUNDS + 1):
            for ip in addrs:
                started = loop.time()
                try:
                    transport, protocol = await self._attempt(loop, ip, port)
                except TimeoutError:
                    timeouts += 1
                    last = TimeoutError(
                        f"connect to {format_host_port(ip, port)} timed out after "
                        f"{self._timeouts.dial_attempt_s:g}s"
                    )
                except OSError as exc:
                    if exc.errno in _LOCAL_FD_ERRNOS:
                        raise out_of_descriptors(exc) from None
                    last = exc
                else:
                    return Dialed(transport, protocol, ip, loop.time() - started, timeouts)
            if round_no < DIAL_ROUNDS:
                log.warning(
                    "flow%d: connect round %d/%d failed for all %d addresses; backing off %dms",
                    flow_id,
                    round_no,
                    DIAL_ROUNDS,
                    len(addrs),
                    round(delay * 1000),
                )
                await self._sleep(delay)
                delay = min(delay * 2, DIAL_BACKOFF_MAX_S)
        raise bad_gateway(
            "dial_failed",
            f"connect failed after {DIAL_ROUNDS} rounds (retries exhausted): {last}",
            rep_for_dial_error(last),
        )
