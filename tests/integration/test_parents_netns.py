"""No DNS query leaves fyntr for a name it sends to a parent proxy, counted by a real DNS
server: in a network namespace this test makes and removes, whose resolv.conf (put in
place by ``ip netns exec``) names a counting server on the namespace's own loopback.
The parent is the tests' own (tests/support/parent.py), which reaches ``origin.test``
without asking DNS; fyntr, the origin and curl run in the namespace too. A name that
``--no-upstream`` sends direct is the control: fyntr asks the server for that one."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.net import fyntr_argv
from tests.support.netns import needs_netns

REPO = Path(__file__).resolve().parents[2]
NS = f"fyntr-dns-{os.getpid()}"
PROXY_PORT = 9999

pytestmark = needs_netns("curl")

# Answers every query NXDOMAIN (the question echoed, QR and RA set, RCODE 3) and keeps
# the count of queries in a file.
DNS_SERVER = r"""
import socket, sys
count_file = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
open(count_file, "w").write("0")
print("ready", flush=True)
n = 0
while True:
    data, peer = s.recvfrom(4096)
    n += 1
    open(count_file, "w").write(str(n))
    end = 12
    while end < len(data) and data[end]:
        end += data[end] + 1
    question = data[12 : end + 5]
    flags = bytes([0x80 | (data[2] & 0x01), 0x83])
    s.sendto(data[:2] + flags + b"\0\1\0\0\0\0\0\0" + question, peer)
"""

# The origin (one HTTP answer per connection) and the parent, on the namespace's loopback.
SERVERS = r"""
import asyncio, sys
from tests.support.parent import parent_proxy

async def web(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n")
    await writer.drain()
    writer.close()

async def main():
    origin = await asyncio.start_server(web, "127.0.0.1", 0)
    async with parent_proxy() as p:
        print(origin.sockets[0].getsockname()[1], p.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


def in_ns(*args: str) -> list[str]:
    return ["ip", "netns", "exec", NS, *args]


@contextlib.contextmanager
def namespace() -> Iterator[None]:
    conf = Path("/etc/netns") / NS
    try:
        subprocess.run(["ip", "netns", "add", NS], check=True)
        subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "resolv.conf").write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:1\n")
        (conf / "hosts").write_text("127.0.0.1 localhost\n")
        yield
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True, check=False)
        shutil.rmtree(conf, ignore_errors=True)


@contextlib.contextmanager
def process(command: list[str], **kwargs: object) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(command, text=True, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def curl(port: int, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        in_ns("curl", "-sS", "--max-time", "10", "-p", "-x", f"http://127.0.0.1:{port}", url),
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_name_sent_to_the_parent_is_never_looked_up(tmp_path: Path) -> None:
    count = tmp_path / "queries"
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}
    env = {k: v for k, v in env.items() if "proxy" not in k.lower() and not k.startswith("FYNTR_")}
    with (
        namespace(),
        process(in_ns(sys.executable, "-c", DNS_SERVER, str(count)), stdout=subprocess.PIPE) as dns,
        process(
            in_ns(sys.executable, "-c", SERVERS),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        ) as servers,
    ):
        assert dns.stdout is not None and servers.stdout is not None
        assert dns.stdout.readline() == "ready\n"
        origin_port, parent_port = map(int, servers.stdout.readline().split())
        fyntr = fyntr_argv(
            "--port",
            str(PROXY_PORT),
            "--allow-port",
            str(origin_port),
            "--upstream",
            f"http://127.0.0.1:{parent_port}",
            "--no-upstream",
            "direct.test",
        )
        with process(in_ns(*fyntr), env=env, stderr=subprocess.DEVNULL):
            deadline = time.monotonic() + 15
            while (through := curl(PROXY_PORT, f"http://origin.test:{origin_port}/")).returncode:
                assert time.monotonic() < deadline, through.stderr
                time.sleep(0.2)  # fyntr still starting
            assert through.stdout == "hello\n"
            assert count.read_text() == "0"  # origin.test went to the parent by name
            direct = curl(PROXY_PORT, f"http://direct.test:{origin_port}/")
            assert direct.returncode != 0  # NXDOMAIN: fyntr's 502
            assert int(count.read_text()) >= 1  # the control: fyntr asked for direct.test
