"""Name lookup for the dialer (docs/original.md §4.5): one question per name at a time,
its answer kept a while, every answer still judged by the policy where it is used."""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from fyntr.errors import HandshakeError, bad_gateway
from fyntr.limits import DNS_ANSWER_TTL_S, DNS_ANSWERS_KEPT, DNS_FAILURE_TTL_S
from fyntr.policy.rules import collect_addresses
from fyntr.wire.target import Host, IPAddress

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


async def system_resolve(name: str, port: int) -> list[IPAddress]:
    """``getaddrinfo`` with any family and stream sockets, as docs/original.md §4.5."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    out: list[IPAddress] = []
    for family, *_rest, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            out.append(ipaddress.ip_address(str(sockaddr[0]).partition("%")[0]))
    return out


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


class Names:
    """Lookups of names, counted in ``stats``."""

    def __init__(
        self,
        timeout_s: float,
        resolver: Resolver,
        stats: DialStats,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timeout_s = timeout_s
        self._resolver = resolver
        self.stats = stats
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
        addresses it gets, cached or not (net/out/establish.py)."""
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
            async with asyncio.timeout(self._timeout_s):
                answers = await self._resolver(name, port)
        except TimeoutError:
            raise bad_gateway(
                "resolve_failed", f"DNS lookup timed out after {self._timeout_s:g}s"
            ) from None
        except OSError as exc:
            raise bad_gateway("resolve_failed", f"DNS lookup failed: {exc}") from None
        if not answers:
            raise bad_gateway("resolve_failed", "DNS answer was empty")
        return collect_addresses(answers)
