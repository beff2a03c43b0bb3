"""Connection pacing, waiting at the cap, /metrics and /status."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Sequence

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fyntr.config import Timeouts
from fyntr.errors import STATUS_LINES, Status
from fyntr.limits import AUTORATE_UNSENT_BYTES, CONNECT_AUTO_INITIAL_RATE, MAX_CAP_WAITERS
from fyntr.net.front.listen import waiting_capacity
from tests.support.net import (
    OK,
    FakeClock,
    connect_via,
    echo,
    exchange,
    http_port,
    loopback_settings,
    origin,
    proxy,
    until,
)


async def test_connect_auto_neither_paces_nor_learns_from_loopback_dials() -> None:
    """A connection to this machine crosses no router: a fresh fyntr (connect auto, the
    default) sends a burst of 48 to 127.0.0.1 unpaced, and its rate learns nothing."""
    async with origin(echo) as o, proxy(loopback_settings(o.port, max_connections=0)) as server:
        assert server.pacing.auto is not None and server.pacing.pacing  # the cold start
        conns = await asyncio.gather(
            *(connect_via(http_port(server), f"127.0.0.1:{o.port}") for _ in range(48))
        )
        assert all(head == OK for _, _, head in conns)
        assert server.pacing.auto.rate == CONNECT_AUTO_INITIAL_RATE  # 48 dials not seen
        for _, writer, _ in conns:
            writer.close()


async def test_auto_leaves_loopback_tunnels_alone() -> None:
    """A tunnel to this machine crosses no router: upload and download auto (the
    defaults) neither sample it (its bytes would pass for the link's capacity) nor touch
    its buffers."""
    async with origin(echo) as o, proxy(loopback_settings(o.port)) as server:
        upload, download = server.autorates.upload, server.autorates.download
        assert upload is not None and download is not None
        reader, writer, head = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
        assert head == OK
        writer.write(bytes(256 << 10))  # below the splice threshold: on the transports
        assert len(await reader.readexactly(256 << 10)) == 256 << 10  # echoed: a download
        (tunnel,) = server.tunnels
        sock = tunnel.upstream_socket()
        assert sock is not None
        rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert upload.sample() == (0, [], [])
        assert download.sample() == (0, [], [])
        download.sampler.steer(1000.0, 0.001)  # a rate in force clamps routed sockets only
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == rcvbuf
        limits = tunnel.upstream.get_write_buffer_limits()  # type: ignore[attr-defined]
        assert limits[1] != AUTORATE_UNSENT_BYTES
        writer.close()


async def test_connect_rate_paces_upstream_dials() -> None:
    """100 CONNECTs at once with --connect-rate 50 --connect-burst 5: the origin never
    sees more than burst + rate x window connections in any window."""
    accepted: list[float] = []

    async def stamp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(time.monotonic())
        await reader.read()

    async with (
        origin(stamp) as o,
        proxy(
            loopback_settings(o.port, connect_rate=50.0, connect_burst=5, max_connections=0)
        ) as server,
    ):
        results = await asyncio.gather(
            *(connect_via(http_port(server), f"127.0.0.1:{o.port}") for _ in range(100))
        )
        try:
            paced(results, accepted)
        finally:  # a failure must not leave 100 tunnels for the next test's collector
            for _, writer, _ in results:
                writer.close()


def paced(results: Sequence[tuple[object, object, bytes]], accepted: list[float]) -> None:
    """What test_connect_rate_paces_upstream_dials asserts of its 100 dials."""
    assert all(head == OK for _, _, head in results)
    assert len(accepted) == 100
    accepted.sort()
    # The origin's handlers run on the proxy's loop: a stall of the loop (a GC pass,
    # a busy shared machine: 7 stamps within 1.5 ms once in CI) bunches their
    # stamps, not the dials. Unpaced, a burst of 10 or a rate of 100 still break it.
    slack = 0.08  # 8 stamps within 2 ms once at the start of an asyncio pass in CI
    for i in range(len(accepted)):
        for j in range(i, len(accepted)):
            window = accepted[j] - accepted[i]
            assert j - i + 1 <= 5 + 50 * (window + slack), (i, j, window)
    assert accepted[-1] - accepted[0] >= (100 - 5) / 50 * 0.9


async def test_a_paced_client_that_leaves_frees_its_place() -> None:
    async with (
        origin(echo) as o,
        proxy(loopback_settings(o.port, connect_rate=1.0, connect_burst=1)) as server,
    ):
        port = http_port(server)
        first = await connect_via(port, f"127.0.0.1:{o.port}")  # takes the only token
        assert first[2] == OK
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"CONNECT 127.0.0.1:{o.port} HTTP/1.1\r\n\r\n".encode())
        await until(lambda: server.pacing.waiters == 1)
        writer.close()
        await until(lambda: not server.pacing.waiters)
        first[1].close()


async def test_connect_rate_wait_past_the_budget_is_503() -> None:
    timeouts = Timeouts(handshake_budget_s=0.3)
    async with (
        origin(echo) as o,
        proxy(
            loopback_settings(o.port, connect_rate=0.001, connect_burst=1, timeouts=timeouts)
        ) as server,
    ):
        port = http_port(server)
        first = await connect_via(port, f"127.0.0.1:{o.port}")
        assert first[2] == OK
        reply = await exchange(port, f"CONNECT 127.0.0.1:{o.port} HTTP/1.1\r\n\r\n".encode())
        assert reply == STATUS_LINES[Status.SERVICE_UNAVAILABLE]
        assert server.metrics.rejections["connect_rate"] == 1
        first[1].close()


async def test_waiter_at_the_cap_gets_the_slot_when_a_tunnel_closes() -> None:
    async with (
        origin(echo) as o,
        proxy(loopback_settings(o.port, max_connections=1, max_connections_wait_s=30)) as server,
    ):
        port = http_port(server)
        _r1, w1, head = await connect_via(port, f"127.0.0.1:{o.port}")
        assert head == OK
        waiter = asyncio.ensure_future(connect_via(port, f"127.0.0.1:{o.port}"))
        await until(lambda: len(server.admission.waiting) == 1)
        assert not waiter.done()
        w1.close()  # the tunnel closes: the waiter gets its slot
        r2, w2, head2 = await asyncio.wait_for(waiter, 5)
        assert head2 == OK
        w2.write(b"hi")
        assert await r2.readexactly(2) == b"hi"
        w2.close()


async def test_a_burst_larger_than_the_cap_waits_instead_of_being_refused() -> None:
    """terraform apply -parallelism=20 through --max-connections 3
    --max-connections-wait 60: everything beyond the cap waits for a slot (bounded by the
    FD budget, not by the cap), and every tunnel gets its 200 in turn."""
    cap, burst = 3, 40
    async with origin(echo) as o:
        settings = loopback_settings(o.port, max_connections=cap, max_connections_wait_s=60)
        async with proxy(settings) as server:
            port = http_port(server)
            assert server.admission.max_waiting >= burst

            async def one(n: int) -> bytes:
                reader, writer, head = await connect_via(port, f"127.0.0.1:{o.port}")
                writer.write(b"%03d" % n)
                echoed = await reader.readexactly(3)
                writer.close()  # frees the slot for the next waiter
                return head + echoed

            replies = await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(burst))), 30)
            assert replies == [OK + b"%03d" % n for n in range(burst)]
            assert "max_connections" not in server.metrics.rejections


async def test_waiter_at_the_cap_gets_503_after_the_wait() -> None:
    clock = FakeClock()
    async with (
        origin(echo) as o,
        proxy(
            loopback_settings(o.port, max_connections=1, max_connections_wait_s=2.5), clock=clock
        ) as server,
    ):
        port = http_port(server)
        _r1, w1, head = await connect_via(port, f"127.0.0.1:{o.port}")
        assert head == OK
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"CONNECT 127.0.0.1:{o.port} HTTP/1.1\r\n\r\n".encode())
        await until(lambda: len(server.admission.waiting) == 1)
        clock.advance(2.4)
        server.sweep()
        assert len(server.admission.waiting) == 1
        clock.advance(0.2)
        server.sweep()
        assert await asyncio.wait_for(reader.read(), 5) == STATUS_LINES[Status.SERVICE_UNAVAILABLE]
        writer.close()
        w1.close()


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    raw = await exchange(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_metrics_match_the_traffic() -> None:
    async with origin(echo) as o, proxy(loopback_settings(o.port, metrics_port=0)) as server:
        assert server.metrics_address is not None
        mport = server.metrics_address[1]
        reader, writer, head = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
        assert head == OK
        writer.write(b"x" * 1000)
        assert await reader.readexactly(1000) == b"x" * 1000
        assert (
            await exchange(http_port(server), b"CONNECT 10.0.0.1:443 HTTP/1.1\r\n\r\n")
            == (STATUS_LINES[Status.FORBIDDEN])
        )
        status, body = await http_get(mport, "/metrics")
        assert status == 200
        found = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        assert found[("fyntr_connections_accepted_total", ())] == 2
        assert found[("fyntr_tunnels_opened_total", ())] == 1
        assert found[("fyntr_connections_rejected_total", (("reason", "cidr_denied"),))] == 1
        assert found[("fyntr_relayed_bytes_total", (("direction", "up"),))] == 1000
        assert found[("fyntr_relayed_bytes_total", (("direction", "down"),))] == 1000
        assert found[("fyntr_active_flows", ())] == 1
        assert found[("fyntr_handshake_seconds_count", ())] == 1
        assert found[("fyntr_queued_bytes", (("direction", "up"),))] == 0
        writer.close()


async def test_status_field_by_field() -> None:
    async with (
        origin(echo) as o,
        proxy(loopback_settings(o.port, metrics_port=0, connect_rate=100.0)) as server,
    ):
        assert server.metrics_address is not None
        reader, writer, _head = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
        writer.write(b"y" * 300)
        assert await reader.readexactly(300) == b"y" * 300
        status, body = await http_get(server.metrics_address[1], "/status")
        assert status == 200
        data = json.loads(body)
        assert data["version"] == "0.5.0"
        assert data["uptime_s"] >= 0
        assert data["config"]["allow_ports"] == [o.port]
        assert data["config"]["connect_rate"] == 100.0
        assert data["config"]["threat_action"] == "warn"
        assert data["active_flows"] == 1
        assert data["pending_handshakes"] == 0
        assert data["connect_waiters"] == 0
        assert data["cap_waiters"] == 0
        assert data["queued_bytes"] == {"up": 0, "down": 0}
        assert data["bytes"] == {"up": 300, "down": 300}
        assert data["counters"]["accepted"] == 1
        assert data["counters"]["tunnels_opened"] == 1
        assert data["counters"]["rejected"] == {}
        assert data["handshake_seconds"]["count"] == 1
        [flow] = data["top_flows"]
        assert flow["target"] == f"127.0.0.1:{o.port}"
        assert (flow["up_bytes"], flow["down_bytes"]) == (300, 300)
        assert flow["age_s"] >= 0 and flow["flow"] == 1
        [client] = data["clients"]
        assert client == {
            "client": "127.0.0.1",
            "up_bytes": 300,
            "down_bytes": 300,
            "connections": 1,
            "active": 1,
        }
        writer.close()


async def test_figures_per_client_in_status_and_metrics() -> None:
    """Each device of a house by its address (docs/house.md): bytes, relays, open ones."""
    async with (
        origin(echo) as o,
        proxy(loopback_settings(o.port, metrics_port=0)) as server,
    ):
        assert server.metrics_address is not None
        for address, size in (("127.0.0.2", 1000), ("127.0.0.3", 10), ("127.0.0.3", 20)):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", http_port(server), local_addr=(address, 0)
            )
            writer.write(f"CONNECT 127.0.0.1:{o.port} HTTP/1.1\r\n\r\n".encode())
            assert await reader.readuntil(b"\r\n\r\n") == OK
            writer.write(b"z" * size)
            assert await reader.readexactly(size) == b"z" * size
            writer.close()
        await until(lambda: not server.tunnels)
        data = json.loads((await http_get(server.metrics_address[1], "/status"))[1])
        assert [
            (c["client"], c["up_bytes"], c["connections"], c["active"]) for c in data["clients"]
        ] == [
            ("127.0.0.2", 1000, 1, 0),
            ("127.0.0.3", 30, 2, 0),
        ]
        _status, metrics = await http_get(server.metrics_address[1], "/metrics")
        assert (
            b'fyntr_client_relayed_bytes_total{client="127.0.0.2",direction="up"} 1000.0' in metrics
        )


async def test_bad_requests_to_the_metrics_port() -> None:
    async with proxy(loopback_settings(metrics_port=0)) as server:
        assert server.metrics_address is not None
        port = server.metrics_address[1]
        assert (await http_get(port, "/nope"))[0] == 404
        assert (await http_get(port, "/metrics", "POST"))[0] == 405
        assert (await exchange(port, b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        assert (await exchange(port, b"\xff\xfe\r\n\r\n")).startswith(b"HTTP/1.1 40")
        big = b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"a" * 20000
        assert (await exchange(port, big)).startswith(b"HTTP/1.1 431 ")
        assert (await exchange(port, b"GET /metrics", eof=True)).startswith(b"HTTP/1.1 400 ")
        # The proxy is unharmed.
        assert (
            await exchange(http_port(server), b"GET / HTTP/1.1\r\n\r\n")
            == STATUS_LINES[Status.METHOD_NOT_ALLOWED]
        )


async def test_slow_metrics_clients_are_bounded_and_timed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Slow-loris on the metrics port: the stalled clients hold at most
    METRICS_MAX_CLIENTS slots, one more is told 503 at once, each stalled one gets 408 at
    its deadline, and the proxy relays all along."""
    from fyntr.limits import METRICS_MAX_CLIENTS
    from fyntr.net.watch import metrics_http

    monkeypatch.setattr(metrics_http, "METRICS_REQUEST_TIMEOUT_S", 0.5)
    async with origin(echo) as o, proxy(loopback_settings(o.port, metrics_port=0)) as server:
        assert server.metrics_address is not None
        mport = server.metrics_address[1]
        slow = []
        try:
            for _ in range(METRICS_MAX_CLIENTS):
                r, w = await asyncio.open_connection("127.0.0.1", mport)
                w.write(b"GET /met")  # and nothing more
                slow.append((r, w))
            await until(lambda: server.state.metrics_clients == METRICS_MAX_CLIENTS)
            assert (await http_get(mport, "/metrics"))[0] == 503
            reader, writer, head = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
            assert head == OK
            writer.write(b"unharmed")
            assert await asyncio.wait_for(reader.readexactly(8), 5) == b"unharmed"
            writer.close()
            for r, _w in slow:
                assert (await asyncio.wait_for(r.read(), 5)).startswith(b"HTTP/1.1 408 ")
            await until(lambda: server.state.metrics_clients == 0)
            assert (await http_get(mport, "/metrics"))[0] == 200
        finally:
            for _r, w in slow:
                w.close()


async def test_stats_line_every_minute_while_there_is_traffic(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fyntr")
    clock = FakeClock()
    async with origin(echo) as o, proxy(loopback_settings(o.port), clock=clock) as server:
        reader, writer, head = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
        assert head == OK
        writer.write(b"abc")
        assert await reader.readexactly(3) == b"abc"
        clock.advance(59)
        server.sweep()
        assert "stats:" not in caplog.text
        clock.advance(2)
        server.sweep()
        stats = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stats:")]
        assert len(stats) == 1
        assert "active_flows=1" in stats[0] and "up_bytes=3 B" in stats[0]
        clock.advance(61)  # a quiet minute: no line
        server.sweep()
        assert len([r for r in caplog.records if r.getMessage().startswith("stats:")]) == 1
        writer.close()


def test_waiters_are_bounded_by_the_fd_budget_not_by_the_cap() -> None:
    share = 3 * 2 + 64  # --max-connections 3: two sockets each, plus headroom
    assert waiting_capacity(3, share + 500, spliced=0) == 500  # one descriptor each
    assert waiting_capacity(3, share + 500 + 4 * 10, spliced=10) == 500  # pipes come first
    assert waiting_capacity(3, 10**6, spliced=0) == MAX_CAP_WAITERS
    assert waiting_capacity(3, share - 1, spliced=0) == 0
    assert waiting_capacity(0, 10**6, spliced=0) == 0  # no cap, nobody waits
    assert waiting_capacity(3, None, spliced=0) == MAX_CAP_WAITERS  # no FD limit known


async def test_status_ages_and_uptime_follow_the_one_clock() -> None:
    """Uptime and tunnel ages come from the clock that stamps the tunnels (virtual here),
    not from the loop's: one clock, or ages come out negative."""
    clock = FakeClock()
    async with origin(echo) as o, proxy(loopback_settings(o.port), clock=clock) as server:
        _reader, writer, head = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
        assert head == OK
        clock.advance(100)
        snap = server.snapshot()
        assert snap.uptime_s == pytest.approx(100, abs=0.5)
        [flow] = snap.top_flows
        assert flow.age_s == pytest.approx(100, abs=0.5)
        writer.close()
