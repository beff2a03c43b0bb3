"""A burst to one name asks the resolver once: 200 CONNECTs at once, an injected resolver
that counts its calls (and answers slowly enough for all of them to be waiting); its
answer then serves the next tunnels for DNS_ANSWER_TTL_S, a failure DNS_FAILURE_TTL_S."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import AsyncIterator

from fyntr.errors import STATUS_LINES, Status
from fyntr.limits import DNS_ANSWER_TTL_S, DNS_FAILURE_TTL_S
from fyntr.net.out.dialer import Dialer
from fyntr.net.server import Server
from tests.support.net import (
    FakeClock,
    echo,
    exchange,
    http_port,
    loopback_settings,
    origin,
    proxy,
)

BURST = 200


class CountingResolver:
    def __init__(self, answer: list[str] | None, delay: float = 0.3) -> None:
        self.answer = answer
        self.delay = delay
        self.calls = 0

    async def __call__(self, name: str, port: int) -> list[object]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ipaddress.ip_address(a) for a in self.answer]


async def burst(port: int, target: str) -> list[bytes]:
    request = f"CONNECT {target} HTTP/1.1\r\n\r\n".encode()
    return await asyncio.gather(*(exchange(port, request, eof=True) for _ in range(BURST)))


@contextlib.asynccontextmanager
async def resolving(
    resolver: CountingResolver, clock: FakeClock | None = None
) -> AsyncIterator[tuple[Server, int]]:
    """A proxy whose dialer asks ``resolver`` (answers aged on ``clock``), and an echo
    origin: (server, its port)."""
    async with origin(echo) as o:
        settings = loopback_settings(o.port, max_connections=0)
        dialer = Dialer(
            settings.timeouts,
            resolver=resolver,  # type: ignore[arg-type]
            clock=clock or FakeClock(),
        )
        async with proxy(settings, dialer=dialer) as server:
            yield server, o.port


async def test_one_lookup_serves_a_burst_and_every_tunnel_is_judged() -> None:
    resolver = CountingResolver(["127.0.0.1"])
    async with resolving(resolver) as (server, port):
        replies = await burst(http_port(server), f"burst.test:{port}")
        assert replies == [STATUS_LINES[Status.OK]] * BURST
        assert resolver.calls == 1
        snap = server.snapshot()
        assert (snap.dns_lookups, snap.dns_lookups_coalesced) == (1, BURST - 1)


async def test_an_answer_serves_later_tunnels_until_it_expires() -> None:
    """Tunnels that arrive after the lookup finished (a burst's later waves, the next
    burst) use its answer for DNS_ANSWER_TTL_S, then the name is asked again."""
    resolver = CountingResolver(["127.0.0.1"], delay=0.05)
    clock = FakeClock()
    async with resolving(resolver, clock) as (server, port):
        for wave in range(4):  # each after the previous one's lookup is over
            replies = await burst(http_port(server), f"burst.test:{port}")
            assert replies == [STATUS_LINES[Status.OK]] * BURST, wave
        assert resolver.calls == 1
        assert server.snapshot().dns_lookups_cached == 3 * BURST
        clock.advance(DNS_ANSWER_TTL_S + 0.1)
        await burst(http_port(server), f"burst.test:{port}")
        assert resolver.calls == 2


async def test_a_cached_answer_is_judged_by_the_policy_every_time() -> None:
    resolver = CountingResolver(["10.0.0.1"], delay=0.01)  # denied by the built-in list
    async with resolving(resolver) as (server, port):
        for _ in range(2):
            replies = await burst(http_port(server), f"private.test:{port}")
            assert replies == [STATUS_LINES[Status.FORBIDDEN]] * BURST
        assert resolver.calls == 1
        assert server.metrics.rejections["cidr_denied"] == 2 * BURST


async def test_the_policy_judges_every_tunnel_of_a_coalesced_lookup() -> None:
    resolver = CountingResolver(["10.0.0.1"])  # denied by the built-in list
    async with resolving(resolver) as (server, port):
        replies = await burst(http_port(server), f"private.test:{port}")
        assert replies == [STATUS_LINES[Status.FORBIDDEN]] * BURST
        assert resolver.calls == 1
        assert server.metrics.rejections["cidr_denied"] == BURST


async def test_a_failed_lookup_fails_every_waiter_at_once() -> None:
    resolver = CountingResolver(None)
    clock = FakeClock()
    settings = loopback_settings(443, max_connections=0)
    dialer = Dialer(settings.timeouts, resolver=resolver, clock=clock)  # type: ignore[arg-type]
    async with proxy(settings, dialer=dialer) as server:
        started = time.monotonic()
        replies = await burst(http_port(server), "nxdomain.test:443")
        elapsed = time.monotonic() - started
        assert replies == [STATUS_LINES[Status.BAD_GATEWAY]] * BURST
        assert resolver.calls == 1
        assert elapsed < 2.0  # one lookup's 0.3 s, not one per tunnel
        assert server.snapshot().dns_lookup_failures == 1
        # The failure is the answer for DNS_FAILURE_TTL_S, then the name is asked again.
        assert await burst(http_port(server), "nxdomain.test:443") == replies
        assert resolver.calls == 1
        clock.advance(DNS_FAILURE_TTL_S + 0.1)
        await burst(http_port(server), "nxdomain.test:443")
        assert resolver.calls == 2
