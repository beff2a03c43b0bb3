"""The proxy auto-configuration file (docs/house.md): what a browser, a phone or an
operating system set to "automatic proxy configuration" fetches from
``http://PROXY:PORT/proxy.pac`` (or ``/wpad.dat``) and runs for every URL. Local and
private destinations go DIRECT; everything else to this fyntr. Pure."""

from __future__ import annotations

from typing import Final

from fyntr.wire.http_forward import VIA

CONTENT_TYPE: Final = b"application/x-ns-proxy-autoconfig"
CACHE_S: Final = 300  # clients fetch it again this often at the most (a changed port shows)

# (network, mask) in the dotted form PAC's isInNet() takes: the IPv4 ranges a home or
# office network uses, which a proxy beyond them cannot reach for the client anyway.
_DIRECT_V4: Final = (
    ("127.0.0.0", "255.0.0.0"),
    ("10.0.0.0", "255.0.0.0"),
    ("172.16.0.0", "255.240.0.0"),
    ("192.168.0.0", "255.255.0.0"),
    ("100.64.0.0", "255.192.0.0"),
    ("169.254.0.0", "255.255.0.0"),
)


def pac_file(proxy: str) -> str:
    """The file for a fyntr reached at ``proxy`` (``host:port``, ``[v6]:port``). Names
    are never resolved in it (``dnsResolve`` would stall every page load on a slow
    resolver): a plain host name and ``.local``/``.localhost`` names go DIRECT, and IP
    literals by range; IPv6 literals DIRECT when loopback, link-local or ULA."""
    ranges = " ||\n        ".join(f'isInNet(host, "{net}", "{mask}")' for net, mask in _DIRECT_V4)
    return f"""function FindProxyForURL(url, host) {{
    if (host.indexOf(":") >= 0)  // an IPv6 literal: it has no dots either
        return /^(::1$|fe[89ab]|f[cd])/i.test(host) ? "DIRECT" : "PROXY {proxy}";
    if (isPlainHostName(host) || host == "localhost" ||
        dnsDomainIs(host, ".local") || dnsDomainIs(host, ".localhost"))
        return "DIRECT";
    if (/^[0-9.]+$/.test(host) && (
        {ranges}))
        return "DIRECT";
    return "PROXY {proxy}";
}}
"""


def pac_response(proxy: str) -> bytes:
    """The whole HTTP answer; the connection closes after it."""
    body = pac_file(proxy).encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
        b"Cache-Control: max-age=%d\r\nConnection: close\r\nVia: %s\r\n\r\n%s"
        % (CONTENT_TYPE, len(body), CACHE_S, VIA, body)
    )
