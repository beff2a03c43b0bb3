"""The destination policy and threat feeds through real sockets."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from fyntr.config import Timeouts
from fyntr.errors import STATUS_LINES, Status
from fyntr.net.out.dialer import Dialer
from fyntr.policy.threat import ThreatAction
from tests.support.net import (
    OK,
    connect_via,
    echo,
    exchange,
    fyntr_process,
    http_port,
    loopback_settings,
    origin,
    proxy,
)

FORBIDDEN = STATUS_LINES[Status.FORBIDDEN]


def fixed_resolver(answers: dict[str, list[str]]) -> Dialer:
    async def resolve(name: str, port: int) -> list[object]:
        return [ipaddress.ip_address(a) for a in answers[name.rstrip(".")]]

    return Dialer(Timeouts(dial_backoff_s=0.01), resolver=resolve)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "target",
    [
        "127.0.0.1:{port}",  # loopback, denied by default
        "[::ffff:127.0.0.1]:{port}",  # mapped: judged as 127.0.0.1
        "[::1]:{port}",
        "[64:ff9b::7f00:1]:{port}",  # NAT64: judged as 127.0.0.1
        "[2002:7f00:1::]:{port}",  # 6to4: judged as 127.0.0.1
        "[::ffff:0:7f00:1]:{port}",  # IPv4-translated: judged as 127.0.0.1
        "[fec0::1]:{port}",  # site-local
        "169.254.169.254:{port}",  # cloud metadata
        "10.0.0.1:{port}",
        "127.0.0.1:22",  # port not allowed, before any DNS
    ],
)
async def test_403_without_any_connection_attempt(target: str) -> None:
    async with origin(echo) as o, proxy(loopback_settings(o.port, allow_cidrs=())) as server:
        request = f"CONNECT {target.format(port=o.port)} HTTP/1.1\r\n\r\n".encode()
        assert await exchange(http_port(server), request) == FORBIDDEN
        assert o.connections == 0
        assert server.metrics.dial_failures == 0


async def test_one_denied_answer_denies_unless_allow_domain() -> None:
    """DNS says 127.0.0.1 (allowed by --allow-cidr) and 10.0.0.1 (denied)."""
    async with origin(echo) as o:
        answers = {"mixed.test": ["10.0.0.1", "127.0.0.1"]}
        async with proxy(loopback_settings(o.port), dialer=fixed_resolver(answers)) as server:
            reply = await exchange(
                http_port(server), f"CONNECT mixed.test:{o.port} HTTP/1.1\r\n\r\n".encode()
            )
            assert reply == FORBIDDEN
            assert o.connections == 0
        async with proxy(
            loopback_settings(o.port, allow_domains=(".test",)), dialer=fixed_resolver(answers)
        ) as server:
            _reader, writer, head = await connect_via(http_port(server), f"mixed.test:{o.port}")
            assert head == OK  # the denied address was dropped, the allowed one dialled
            writer.close()
            assert o.connections == 1


async def test_threat_block_before_the_headers_are_read(tmp_path: Path) -> None:
    feed = tmp_path / "feed.txt"
    feed.write_text("! a feed\n||blocked.test^\n203.0.113.10\n")
    async with proxy(
        loopback_settings(threat_feed_files=(str(feed),), threat_action=ThreatAction.BLOCK)
    ) as server:
        # No blank line: the headers are incomplete, the 403 comes anyway.
        reply = await exchange(http_port(server), b"CONNECT api.BLOCKED.test.:443 HTTP/1.1\r\n")
        assert reply == FORBIDDEN
        reply = await exchange(http_port(server), b"CONNECT 203.0.113.10:443 HTTP/1.1\r\n")
        assert reply == FORBIDDEN
        assert server.metrics.threat_matches == 2


async def test_resolved_address_threat_block(tmp_path: Path) -> None:
    feed = tmp_path / "feed.txt"
    feed.write_text("127.0.0.1\n")
    async with (
        origin(echo) as o,
        proxy(
            loopback_settings(
                o.port, threat_feed_files=(str(feed),), threat_action=ThreatAction.BLOCK
            ),
            dialer=fixed_resolver({"innocent.test": ["127.0.0.1"]}),
        ) as server,
    ):
        reply = await exchange(
            http_port(server), f"CONNECT innocent.test:{o.port} HTTP/1.1\r\n\r\n".encode()
        )
        assert reply == FORBIDDEN
        assert o.connections == 0


async def test_warn_mode_logs_and_connects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    feed = tmp_path / "feed.txt"
    feed.write_text("localhost\n")
    async with (
        origin(echo) as o,
        proxy(loopback_settings(o.port, threat_feed_files=(str(feed),))) as server,
    ):
        _reader, writer, head = await connect_via(http_port(server), f"localhost:{o.port}")
        assert head == OK
        writer.close()
    assert "threat_match=true action=warn match_type=domain raw_host=localhost" in caplog.text
    assert f"connect_target=localhost:{o.port}" in caplog.text


async def test_sighup_reload_changes_decisions_for_new_tunnels_only(tmp_path: Path) -> None:
    feed = tmp_path / "feed.txt"
    feed.write_text("unrelated.test\n")
    async with origin(echo) as o:
        args = [
            "--port",
            "0",
            "--allow-cidr",
            "127.0.0.0/8",
            "--allow-port",
            str(o.port),
            "--threat-feed-file",
            str(feed),
            "--threat-action",
            "block",
        ]
        with fyntr_process(*args) as proc:
            port = proc.ports[0]
            reader, writer, head = await connect_via(port, f"localhost:{o.port}")
            assert head == OK
            feed.write_text("||localhost^\n")
            proc.stop(signal.SIGHUP)
            await proc.line_with("built threat feed index files=1 domains=1")
            reply = await exchange(port, f"CONNECT localhost:{o.port} HTTP/1.1\r\n\r\n".encode())
            assert reply == FORBIDDEN
            writer.write(b"still up")  # the existing tunnel is not disturbed
            assert await asyncio.wait_for(reader.readexactly(8), 5) == b"still up"
            # A failed reload keeps the previous index and says why.
            feed.write_text("# nothing usable\n")
            proc.stop(signal.SIGHUP)
            await proc.line_with("threat feed reload failed, keeping the previous index")
            reply = await exchange(port, f"CONNECT localhost:{o.port} HTTP/1.1\r\n\r\n".encode())
            assert reply == FORBIDDEN
            writer.close()
            proc.stop()
            assert await asyncio.to_thread(proc.finish) == 0
            assert "threat feed reload failed, keeping the previous index" in proc.output
            assert "no supported entries" in proc.output


async def test_mixed_script_host_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    async with (
        origin(echo) as o,
        proxy(
            loopback_settings(o.port), dialer=fixed_resolver({"xn--fke-6cd.test": ["127.0.0.1"]})
        ) as server,
    ):
        _reader, writer, head = await connect_via(http_port(server), f"fаke.test:{o.port}")
        assert head == OK  # a warning, never a block
        writer.close()
    line = next(r.getMessage() for r in caplog.records if "mixed_script=true" in r.getMessage())
    for field in (
        "reason=mixed_script_host",
        "raw_host=fаke.test",
        "ascii_host=xn--fke-6cd.test",
        f"connect_target=fаke.test:{o.port}",
        "client_addr=127.0.0.1:",
    ):
        assert field in line


async def test_a_large_feed_is_reloaded_while_tunnels_are_served(tmp_path: Path) -> None:
    """A 100,000-line feed takes a second or more to parse: SIGHUP parses it off the loop, so a
    CONNECT made meanwhile is answered before the new index is in place, under the old
    one; once in place, the new entries apply. The name is looked up once before (its
    answer is kept 10 s): a lookup's thread waits for the GIL the parsing holds, and on a
    loaded machine the whole reload could end first."""
    feed = tmp_path / "feed.txt"
    feed.write_text("unrelated.test\n")
    settings = loopback_settings(
        threat_feed_files=(str(feed),),
        threat_action=ThreatAction.BLOCK,
        allow_domains=("localhost",),
    )
    async with origin(echo) as o, proxy(replace(settings, allow_ports=(o.port,))) as server:
        port = http_port(server)
        _reader, writer, head = await connect_via(port, f"localhost:{o.port}")
        assert head == OK
        writer.close()
        feed.write_text("".join(f"||host{i}.example^\n" for i in range(100_000)) + "localhost\n")
        reloaded = server.threats.reload()
        _reader, writer, head = await connect_via(port, f"localhost:{o.port}")
        assert head == OK
        assert not reloaded.done()  # answered during the reload, by the old index
        writer.close()
        await asyncio.wait_for(reloaded, 60)
        assert len(server.threats.index.domains) == 100_001
        reply = await exchange(port, f"CONNECT localhost:{o.port} HTTP/1.1\r\n\r\n".encode())
        assert reply == FORBIDDEN
