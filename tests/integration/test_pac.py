"""Proxy auto-configuration: ``GET /proxy.pac`` (or ``/wpad.dat``) on the proxy port, to
fyntr itself, answers a PAC file naming the address the client reached; the file,
evaluated as a browser does (pypac's JavaScript engine), sends local and private
destinations DIRECT and the rest to this fyntr. ``fyntr pac`` prints the same file."""

from __future__ import annotations

import subprocess
import urllib.parse

import pytest
from pypac.parser import PACFile

from fyntr.wire.pac import pac_file
from tests.support.net import exchange, fyntr_argv, http_port, loopback_settings, proxy


@pytest.mark.parametrize("path", ["/proxy.pac", "/wpad.dat?x=1"])
async def test_the_pac_file_is_served_on_the_proxy_port(path: str) -> None:
    async with proxy(loopback_settings()) as server:
        port = http_port(server)
        reply = await exchange(port, f"GET {path} HTTP/1.1\r\nHost: wpad\r\n\r\n".encode())
        assert server.metrics.tunnels_opened == 0
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: application/x-ns-proxy-autoconfig" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert body.decode() == pac_file(f"127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("url", "direct"),
    [
        ("https://example.com/", False),
        ("http://8.8.8.8/", False),
        ("http://printer/", True),  # a plain host name: the LAN
        ("http://nas.local/", True),
        ("http://localhost:8080/", True),
        ("http://10.1.2.3/", True),
        ("http://172.20.0.1/", True),
        ("http://172.32.0.1/", False),
        ("http://192.168.1.1/", True),
        ("http://100.100.1.1/", True),
        ("http://[fd00::1]/", True),
        ("http://[fe80::1]/", True),
        ("http://[2001:db8::1]/", False),
    ],
)
def test_what_the_pac_file_decides(url: str, direct: bool) -> None:
    pac = PACFile(pac_file("192.168.1.10:9999"))
    host = urllib.parse.urlsplit(url).hostname
    assert host is not None
    assert pac.find_proxy_for_url(url, host) == ("DIRECT" if direct else "PROXY 192.168.1.10:9999")


def test_fyntr_pac_prints_the_file() -> None:
    out = subprocess.run(
        fyntr_argv("pac", "192.168.1.10:9999"), capture_output=True, text=True, check=False
    )
    assert (out.returncode, out.stdout) == (0, pac_file("192.168.1.10:9999"))
    bad = subprocess.run(fyntr_argv("pac", "nonsense"), capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "is not HOST:PORT" in bad.stderr
