"""A parent proxy's side of the wire (docs/parent-proxies.md): its URL, which targets
go around it (curl's ``NO_PROXY`` rules), the HTTP CONNECT request and its reply
(RFC 9110 §9.3.6), and the SOCKS5 client's messages (RFC 1928, RFC 1929). Pure: the
dialing and the failover are net/out/parents.py's."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from fyntr.errors import Rep, TargetError
from fyntr.limits import PARENT_REPLY_MAX_BYTES
from fyntr.wire.target import (
    Target,
    format_host_port,
    normalize_lenient,
    parse_ip,
    to_ascii_domain,
)

SCHEMES: Final = ("http", "socks5", "socks5h")
_DEFAULT_PORTS: Final = {"http": 3128, "socks5": 1080, "socks5h": 1080}


@dataclass(frozen=True, slots=True)
class Parent:
    """One ``--upstream``. ``name`` is what logs say: never the credentials."""

    scheme: str  # "http" or "socks5" (socks5h is the same: names always go to the parent)
    host: str  # a domain in ASCII, or an IP literal without brackets
    port: int
    user: str = field(default="", repr=False)
    password: str = field(default="", repr=False)

    @property
    def name(self) -> str:
        return f"{self.scheme}://{format_host_port(self.host, self.port)}"

    @property
    def authorization(self) -> bytes:
        """The Proxy-Authorization line for an HTTP parent (RFC 7617), or nothing."""
        if not self.user:
            return b""
        import base64  # noqa: PLC0415  (only with a parent that takes credentials)

        token = base64.b64encode(f"{self.user}:{self.password}".encode())
        return b"proxy-authorization: Basic " + token + b"\r\n"

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        ip = parse_ip(self.host)
        return ip is not None and ip.is_loopback


def parse_parent(url: str) -> Parent:
    """``http://[user:pass@]host[:port]`` or ``socks5://...``; ValueError with the reason
    (never echoing the credentials)."""
    import urllib.parse  # noqa: PLC0415  (0.3 MB of RSS that a fyntr without parents saves)

    text = url.strip()
    parts = urllib.parse.urlsplit(text if "://" in text else f"http://{text}")
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"a parent proxy is http://, socks5:// or socks5h://, not '{scheme}://'"
            + (" (TLS to the parent is not supported)" if scheme == "https" else "")
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("a parent proxy URL is scheme://[user:pass@]host[:port], no path")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the parent proxy's port is not a number from 1 to 65535") from None
    raw = parts.hostname
    if not raw:
        raise ValueError("the parent proxy URL has no host")
    try:
        host = str(normalize_lenient(raw))
    except TargetError as exc:
        raise ValueError(f"the parent proxy's host is not valid: {exc}") from None
    if port == 0:
        raise ValueError("the parent proxy's port is not a number from 1 to 65535")
    user = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    if scheme != "http" and (len(user.encode()) > 255 or len(password.encode()) > 255):
        raise ValueError("a SOCKS5 user name or password is at most 255 bytes (RFC 1929)")
    return Parent(
        "socks5" if scheme == "socks5h" else scheme,
        host,
        port or _DEFAULT_PORTS[scheme],
        user,
        password,
    )


class NoProxy:
    """Targets that go around the parents, with curl's ``NO_PROXY`` rules: ``*`` alone is
    every target; a name matches itself and its subdomains at a label boundary (a
    leading dot, or ``*.``, ignored); an IP or CIDR matches IP-literal targets; ``:port`` limits an
    entry to that port. Loopback always goes around."""

    __slots__ = ("everything", "names", "networks")

    def __init__(self, entries: tuple[str, ...] = ()) -> None:
        self.everything = False
        self.names: list[tuple[str, int | None]] = []
        self.networks: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int | None]] = []
        for entry in entries:
            self._add(entry.strip())

    def _add(self, entry: str) -> None:
        if not entry:
            return
        if entry == "*":
            self.everything = True
            return
        host, port = _split_port(entry)
        try:
            self.networks.append((ipaddress.ip_network(host, strict=False), port))
            return
        except ValueError:
            pass
        name = host.removeprefix("*").lstrip(".").rstrip(".").lower()  # *.x as Go reads it
        if not name:
            raise ValueError(f"'{entry}' is neither a name, an IP nor a CIDR")
        try:
            self.names.append((to_ascii_domain(name), port))
        except TargetError as exc:
            raise ValueError(f"'{entry}' is not a valid name: {exc}") from None

    def matches(self, target: Target) -> bool:
        if self.everything:
            return True
        host = target.host
        if host.ip is not None:
            if host.ip.is_loopback:
                return True
            return any(
                host.ip in net and port in (None, target.port) for net, port in self.networks
            )
        name = host.domain
        assert name is not None
        if name == "localhost" or name.endswith(".localhost"):
            return True
        return any(
            (name == n or name.endswith("." + n)) and port in (None, target.port)
            for n, port in self.names
        )


def _split_port(entry: str) -> tuple[str, int | None]:
    """``host:port``, ``[v6]:port`` or ``v6`` alone (colons but no brackets: no port)."""
    if entry.startswith("["):
        inner, _, rest = entry[1:].partition("]")
        return inner, _port(rest[1:]) if rest.startswith(":") else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, _port(port)
    return entry, None


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 65536):
        raise ValueError(f"'{text}' is not a port")
    return int(text)


# --- HTTP CONNECT to the parent ----------------------------------------------------------
def connect_request(parent: Parent, target: Target) -> bytes:
    """The CONNECT for ``target`` by name: the parent resolves it (no lookup here)."""
    authority = format_host_port(
        target.host.dns_name if target.host.domain else target.host.raw, target.port
    ).encode("ascii")
    return (
        b"CONNECT "
        + authority
        + b" HTTP/1.1\r\nhost: "
        + authority
        + b"\r\n"
        + parent.authorization
        + b"\r\n"
    )


class Reply(NamedTuple):
    status: int
    reason: str
    size: int  # bytes of the head: what follows is the tunnel's


def connect_reply(buf: bytes) -> Reply | None:
    """The parent's reply head once complete (None: more to read). ValueError when it is
    not HTTP or is longer than ``PARENT_REPLY_MAX_BYTES``."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > PARENT_REPLY_MAX_BYTES:
            raise ValueError(f"its reply head is longer than {PARENT_REPLY_MAX_BYTES} bytes")
        if not b"HTTP/1.".startswith(buf[:7]):
            raise ValueError("it did not answer in HTTP")
        return None
    line = buf[: buf.find(b"\r\n")]
    version, _, rest = line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or not (code.isdigit() and len(code) == 3):
        raise ValueError("it did not answer in HTTP")
    text = reason.decode("ascii", "replace")[:80].strip()
    return Reply(int(code), "".join(c if c.isprintable() else "?" for c in text), end + 4)


# --- SOCKS5 to the parent ----------------------------------------------------------------
_USER_PASSWORD: Final = 0x02  # RFC 1929
_NO_AUTH: Final = 0x00


def socks5_greeting(parent: Parent) -> bytes:
    """Offer user/password only with credentials, so a parent cannot ask for them
    when fyntr has none (a hang in tinyproxy's SOCKS5 upstream with auth)."""
    return b"\x05\x01\x02" if parent.user else b"\x05\x01\x00"


def socks5_method(buf: bytes, parent: Parent) -> bytes | None:
    """The parent's method choice (2 bytes): what to send next (the RFC 1929 request, or
    b"" for none). None: more to read. ValueError: refused or not SOCKS5."""
    if len(buf) < 2:
        return None
    if buf[0] != 0x05:
        raise ValueError("it did not answer in SOCKS5")
    method = buf[1]
    if method == _NO_AUTH:
        return b""
    if method == _USER_PASSWORD and parent.user:
        user, password = parent.user.encode(), parent.password.encode()
        return bytes((0x01, len(user))) + user + bytes((len(password),)) + password
    raise ValueError("it accepted none of the offered methods (credentials needed?)")


def socks5_auth_reply(buf: bytes) -> bool | None:
    """RFC 1929's reply: True when the credentials were accepted; None: more to read."""
    if len(buf) < 2:
        return None
    return buf[1] == 0x00


def socks5_connect(target: Target) -> bytes:
    """CONNECT by name (ATYP 3) for a domain, by address for an IP literal."""
    host, port = target.host, target.port.to_bytes(2, "big")
    if host.ip is None:
        name = host.dns_name.encode("ascii")
        return b"\x05\x01\x00\x03" + bytes((len(name),)) + name + port
    atyp = b"\x01" if host.ip.version == 4 else b"\x04"
    return b"\x05\x01\x00" + atyp + host.ip.packed + port


def socks5_reply(buf: bytes) -> tuple[Rep | int, int] | None:
    """The CONNECT reply: (REP, its size); None: more to read. ValueError if malformed."""
    if len(buf) < 5:
        return None
    if buf[0] != 0x05:
        raise ValueError("it did not answer in SOCKS5")
    atyp = buf[3]
    if atyp == 0x01:
        size = 10
    elif atyp == 0x04:
        size = 22
    elif atyp == 0x03:
        size = 7 + buf[4]
    else:
        raise ValueError("its SOCKS5 reply has an unknown address type")
    if len(buf) < size:
        return None
    rep = buf[1]
    return (Rep(rep) if rep in Rep._value2member_map_ else rep), size
