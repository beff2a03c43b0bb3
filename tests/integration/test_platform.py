"""fyntr where a platform lacks a piece (Windows, macOS, other kernels), on Linux: each
piece is made unavailable in a fyntr subprocess before fyntr is imported (not mocked
inside the proxy under test). fyntr starts, names every stand-in in one log line,
relays, and shuts down on SIGTERM through the stand-in for loop signal handlers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys

import pytest

from tests.support.net import echo, origin

# Run as ``python -c HIDE ARGS``: hide the pieces named in FYNTR_TEST_HIDE, then run fyntr.
HIDE = """
import asyncio.unix_events, os, socket, sys
hide = set(os.environ["FYNTR_TEST_HIDE"].split(","))
if "uvloop" in hide:
    sys.modules["uvloop"] = None  # import uvloop fails
if "resource" in hide:
    sys.modules["resource"] = None
if "splice" in hide:
    del os.splice
if "tcp_info" in hide:
    del socket.TCP_INFO
if "signals" in hide:
    def refuse(self, *args, **kwargs):
        raise NotImplementedError
    asyncio.unix_events._UnixSelectorEventLoop.add_signal_handler = refuse
from fyntr.cli import main
sys.exit(main(sys.argv[1:]))
"""

STAND_INS = {
    "uvloop": "no uvloop: the asyncio event loop",
    "splice": "no splice(): bulk tunnels stay on the transports",
    "signals": "no loop signal handlers: signal.signal, waking the loop",
    "resource": "no resource module: the FD limit is left as it is",
    "tcp_info": "no TCP_INFO: upload, download and connect auto mean unlimited",
}


def start(hidden: list[str], *args: str) -> tuple[subprocess.Popen[bytes], list[str], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FYNTR_")}
    env["FYNTR_TEST_HIDE"] = ",".join(hidden)
    proc = subprocess.Popen(
        [sys.executable, "-c", HIDE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        bufsize=0,
        env=env,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    while True:
        line = proc.stdout.readline().decode()
        assert line, "".join(lines)
        lines.append(line)
        if m := re.search(r"Starting Fyntr on \S+:(\d+)", line):
            return proc, lines, int(m.group(1))


@pytest.mark.parametrize(
    "hidden",
    [
        ["uvloop"],
        ["splice"],
        ["uvloop", "signals"],  # asyncio's loop is the one whose handlers can be refused
        ["resource"],
        ["tcp_info"],
        list(STAND_INS),
    ],
    ids=["uvloop", "splice", "signals", "resource", "tcp_info", "all"],
)
async def test_a_missing_piece_is_named_and_fyntr_still_relays_and_stops(
    hidden: list[str],
) -> None:
    async with origin(echo) as o:
        proc, lines, port = await asyncio.to_thread(
            start,
            hidden,
            "--port",
            "0",
            "--allow-cidr",
            "127.0.0.0/8",
            "--allow-port",
            str(o.port),
        )
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"CONNECT 127.0.0.1:{o.port} HTTP/1.1\r\n\r\nping".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200")
            assert await asyncio.wait_for(reader.readexactly(4), 10) == b"ping"
            writer.close()
            proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.to_thread(proc.communicate, timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    text = "".join(lines) + out.decode()
    assert proc.returncode == 0, text
    assert "SIGTERM: stopped accepting" in text
    [platform_line] = [line for line in text.splitlines() if "platform:" in line]
    for name in hidden:
        assert STAND_INS[name] in platform_line
    for name in set(STAND_INS) - set(hidden):
        assert STAND_INS[name] not in platform_line


async def test_nothing_missing_means_no_platform_line() -> None:
    async with origin(echo) as o:
        proc, lines, _port = await asyncio.to_thread(
            start, [], "--port", "0", "--allow-port", str(o.port)
        )
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=20)
    assert "platform:" not in "".join(lines) + out.decode()
