"""``fyntr status`` and ``fyntr top`` as a person uses them: against a live fyntr (a
process, with --metrics-port) that is moving real bytes; ``top`` on a real terminal
(tmux), read with capture-pane, quit with ``q``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator

import pytest

from tests.support.net import free_port, fyntr_process, origin, run_fyntr, until

TMUX = shutil.which("tmux")


async def moving_bytes(proxy_port: int, origin_port: int, seconds: float) -> int:
    """A tunnel through fyntr downloading for ``seconds``; bytes received."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    writer.write(f"CONNECT 127.0.0.1:{origin_port} HTTP/1.1\r\n\r\n".encode())
    await reader.readuntil(b"\r\n\r\n")
    got = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got += len(await reader.read(1 << 16))
        await asyncio.sleep(0.01)  # a slow reader: the tunnel lives a while
    writer.close()
    return got


async def slow_source(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        writer.write(bytes(64 * 1024))
        await writer.drain()
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def live_fyntr(seconds: float) -> AsyncIterator[tuple[int, str, asyncio.Future[int]]]:
    """A fyntr process with its metrics port, one tunnel downloading through it for
    ``seconds``: (metrics port, the tunnel's target, the download)."""
    metrics = free_port()
    async with origin(slow_source) as o:
        args = ["--metrics-port", str(metrics), "--allow-cidr", "127.0.0.0/8"]
        with fyntr_process("--port", "0", "--allow-port", str(o.port), *args) as proc:
            mover = asyncio.ensure_future(moving_bytes(proc.ports[0], o.port, seconds))
            await until(lambda: active_flows(metrics) == 1)  # the tunnel is up
            yield metrics, f"127.0.0.1:{o.port}", mover


def active_flows(metrics: int) -> int:
    """What /status says, or -1 while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/status", timeout=5) as reply:
            return int(json.load(reply)["active_flows"])
    except OSError:
        return -1


def tmux(*args: str) -> str:
    assert TMUX is not None
    out = subprocess.run(
        [TMUX, "-L", f"fyntr-test-{os.getpid()}", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout


async def test_status_is_one_screen_in_plain_text_when_not_a_terminal() -> None:
    async with live_fyntr(seconds=2.0) as (metrics, target, mover):
        out = await asyncio.to_thread(run_fyntr, "status", "--metrics-port", str(metrics))
        await mover
    assert out.returncode == 0, out.stderr
    assert "\x1b[" not in out.stdout  # no colour codes in a pipe
    assert "tunnels  1 active" in out.stdout
    assert target in out.stdout  # the flow's
    assert "upload   auto" in out.stdout and "connect  auto" in out.stdout
    assert "clients  127.0.0.1 " in out.stdout and "(1 open)" in out.stdout


def test_status_without_a_port_or_a_fyntr_says_which_flag() -> None:
    out = run_fyntr("status")
    assert out.returncode == 2
    assert "--metrics-port" in out.stderr
    port = free_port()
    out = run_fyntr("status", "--metrics-port", str(port))
    assert out.returncode == 1
    assert f"--metrics-port {port}" in out.stderr and "nothing answers" in out.stderr


# ``fyntr top`` as the default install runs it, without the top extra: rich cannot be
# imported (None in sys.modules makes ``import rich`` raise ImportError).
WITHOUT_RICH = (
    "import sys; sys.modules['rich'] = None; from fyntr.cli import main; sys.exit(main())"
)


@pytest.mark.skipif(TMUX is None, reason="tmux is installed by the test command")
@pytest.mark.parametrize("with_rich", [True, False], ids=["top extra", "default install"])
async def test_top_renders_on_a_terminal_refreshes_and_quits_with_q(with_rich: bool) -> None:
    async with live_fyntr(seconds=6.0) as (metrics, target, mover):
        python = (
            f"{sys.executable} -m fyntr" if with_rich else f'{sys.executable} -c "{WITHOUT_RICH}"'
        )
        command = f"{python} top --metrics-port {metrics}"
        env = {"PYTHONPATH": os.environ.get("PYTHONPATH", ""), "TERM": "xterm-256color"}
        tmux(
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "140",
            "-y",
            "40",
            *[f"-e{k}={v}" for k, v in env.items()],
            command,
        )
        try:
            started = time.monotonic()
            screen = ""
            while "q quits" not in screen and time.monotonic() - started < 5:
                await asyncio.sleep(0.1)
                screen = tmux("capture-pane", "-p", "-t", "top")
            rendered_after = time.monotonic() - started
            later = screen
            while later == screen and time.monotonic() - started < 5:  # a refresh (1 s)
                await asyncio.sleep(0.1)
                later = tmux("capture-pane", "-p", "-t", "top")
            tmux("send-keys", "-t", "top", "q")
            for _ in range(50):
                await asyncio.sleep(0.1)
                if "top" not in tmux("list-sessions", "-F", "#{session_name}"):
                    break
            still_there = "top" in tmux("list-sessions", "-F", "#{session_name}")
        finally:
            tmux("kill-server")
        await mover
    assert rendered_after < 1.5, (rendered_after, screen)  # within 1 s of start, and tmux
    assert target in screen and "tunnels  1 active" in screen
    assert "upload   auto" in screen
    assert later != screen  # refreshed: uptime and bytes moved
    assert later.count("tunnels  1 active") == 1  # redrawn in place, not appended
    assert not still_there, "q quits"
