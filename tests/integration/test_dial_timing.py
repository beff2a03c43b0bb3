"""The dialer's attempt timeouts, rounds and back-off (docs/original.md §6.7), in virtual time:
the loop is looptime's (a standard asyncio loop whose clock jumps to the next timer
when nothing else is ready), so the real defaults, 3 s per attempt, 200 and 400 ms of
back-off, are asserted to the microsecond in milliseconds of real time. The dialer
reads no clock but its loop's; sockets still connect for real."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from typing import TypeVar

import looptime
import pytest

from fyntr.config import Timeouts
from fyntr.errors import HandshakeError, Status
from fyntr.net.out.dialer import Dialer, tcp_connect
from tests.support.net import echo, origin

T = TypeVar("T")
HANG = ipaddress.ip_address("127.0.0.2")
HERE = ipaddress.ip_address("127.0.0.1")
ATTEMPT_S = Timeouts().dial_attempt_s
BACKOFF_S = Timeouts().dial_backoff_s
ALL_ROUNDS_S = 3 * ATTEMPT_S + BACKOFF_S + 2 * BACKOFF_S  # 3 rounds, 200 + 400 ms apart


def in_virtual_time(main: Callable[[], Awaitable[T]]) -> T:
    loop = looptime.new_event_loop(start=0.0)
    with asyncio.Runner(loop_factory=lambda: loop) as runner:
        return runner.run(main())  # type: ignore[arg-type]


class HangingConnector:
    """Attempts to HANG never connect (a lost SYN); others connect for real. Counts
    attempts and notes the loop time each was cancelled at."""

    def __init__(self) -> None:
        self.attempts = 0
        self.cancelled_at: list[float] = []

    async def __call__(
        self, loop: asyncio.AbstractEventLoop, ip: ipaddress.IPv4Address, port: int
    ) -> object:
        self.attempts += 1
        if ip != HANG:
            return await tcp_connect(loop, ip, port)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled_at.append(loop.time())
            raise
        raise AssertionError("unreachable")


def dialer(connector: HangingConnector) -> Dialer:
    return Dialer(Timeouts(), connector=connector)  # type: ignore[arg-type]


def test_a_hanging_attempt_is_cut_at_the_attempt_timeout_and_the_next_address_tried() -> None:
    async def main() -> tuple[str, float, list[float]]:
        connector = HangingConnector()
        loop = asyncio.get_running_loop()
        async with origin(echo) as o:
            start = loop.time()
            dialed = await dialer(connector).dial(loop, 1, [HANG, HERE], o.port)
            dialed.transport.close()
            return str(dialed.address), loop.time() - start, connector.cancelled_at

    address, elapsed, cancelled_at = in_virtual_time(main)
    assert address == "127.0.0.1"
    assert cancelled_at == [pytest.approx(ATTEMPT_S, abs=1e-6)]
    assert elapsed == pytest.approx(ATTEMPT_S, abs=1e-3)


def test_attempts_that_all_hang_take_three_rounds_with_back_off_then_a_502() -> None:
    async def main() -> tuple[HandshakeError, float, HangingConnector]:
        connector = HangingConnector()
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(HandshakeError) as info:
            await dialer(connector).dial(loop, 1, [HANG], 9)
        return info.value, loop.time() - start, connector

    error, elapsed, connector = in_virtual_time(main)
    assert error.status is Status.BAD_GATEWAY
    assert f"timed out after {ATTEMPT_S:g}s" in error.detail
    assert connector.attempts == 3  # one address, three rounds
    # Each attempt cut at its own deadline, the rounds 200 and 400 ms apart.
    rounds = [ATTEMPT_S, 2 * ATTEMPT_S + BACKOFF_S, ALL_ROUNDS_S]
    assert connector.cancelled_at == [pytest.approx(t, abs=1e-6) for t in rounds]
    assert elapsed == pytest.approx(ALL_ROUNDS_S, abs=1e-6)


def test_an_attempt_that_hangs_after_others_completed_gets_its_own_deadline() -> None:
    """One timer serves every attempt: armed for an attempt that has since connected, it
    must still cut a later attempt at that attempt's own deadline, not the first's."""

    async def main() -> list[float]:
        connector = HangingConnector()
        loop = asyncio.get_running_loop()
        shared = dialer(connector)
        async with origin(echo) as o:
            good = await shared.dial(loop, 1, [HERE], o.port)
            good.transport.close()
            await asyncio.sleep(ATTEMPT_S / 2)  # the timer is armed for the first deadline
            start = loop.time()
            with pytest.raises(HandshakeError):
                await shared.dial(loop, 2, [HANG], o.port)
        return [t - start for t in connector.cancelled_at]

    cancelled_at = in_virtual_time(main)
    assert cancelled_at[0] == pytest.approx(ATTEMPT_S, abs=1e-3)
    assert cancelled_at[-1] == pytest.approx(ALL_ROUNDS_S, abs=1e-3)


def test_a_cancelled_dial_stays_cancelled_not_timed_out() -> None:
    """The client leaving cancels the dial: that must not turn into a timeout and a
    retry, however long after."""

    async def main() -> HangingConnector:
        connector = HangingConnector()
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(dialer(connector).dial(loop, 1, [HANG], 9))
        await asyncio.sleep(ATTEMPT_S / 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(10 * ALL_ROUNDS_S)
        return connector

    connector = in_virtual_time(main)
    assert connector.attempts == 1
    assert connector.cancelled_at == [pytest.approx(ATTEMPT_S / 3, abs=1e-6)]
