"""Host, port and IP normalisation (docs/original.md §4.3, §6.3, §6.4). Pure.

Two flavours of host parsing:

* strict, for what a client asks for (``parse_request_target``, ``parse_domain_target``):
  nothing is trimmed, at most one trailing dot, IDNA errors are errors;
* lenient, for configuration and feeds (``normalize_lenient``): whitespace, one pair of
  brackets and every trailing dot are stripped first.

Where Python's ``idna`` package (IDNA 2008) disagrees with the original's WHATWG/UTS-46
processing, the differences are these, and deliberate:

* pure-ASCII labels never go through ``idna``: they are lower-cased and checked against
  the LDH rule directly, so ``ab--cd.com`` is accepted as the original does (CheckHyphens off);
* labels with code points that UTS-46 allows but IDNA 2008 disallows (emoji, symbols) are
  rejected; upstream punycodes them. A proxy that guards a network may be stricter here.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Final, NamedTuple

from fyntr.errors import TargetError
from fyntr.limits import DOMAIN_MAX_LEN, LABEL_MAX_LEN, PORT_MAX

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# WHATWG URL "forbidden domain code points" (plus C0 controls, space and DEL).
_FORBIDDEN: Final = frozenset([chr(c) for c in range(0x21)] + ["\x7f"] + list("%#/:<>?@[\\]^|"))
_LDH: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_IPV4_MAPPED_PREFIX: Final = 0xFFFF << 32


def canonical_ip(ip: IPAddress) -> IPAddress:
    """Judge IPv4-mapped and IPv4-compatible IPv6 as the IPv4 they carry
    (docs/destination-policy.md).

    ``::ffff:a.b.c.d`` is mapped; ``::a.b.c.d`` is compatible when its value is above 1,
    so ``::`` and ``::1`` stay IPv6 (upstream turns them into 0.0.0.0 and 0.0.0.1).
    """
    if ip.version == 6:
        value = int(ip)
        if value >> 32 == 0xFFFF or (value >> 32 == 0 and value > 1):
            return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return ip


# IPv6 prefixes whose addresses carry an IPv4 address that a translator or relay turns
# them into: (prefix value, prefix length, bit offset of the IPv4 from the right).
_EMBEDDING_PREFIXES: Final = (
    (0x0064FF9B << 96, 96, 0),  # NAT64 well-known prefix 64:ff9b::/96 (RFC 6052 §2.1)
    (0x2002 << 112, 16, 80),  # 6to4 2002:V4ADDR::/48 (RFC 3056 §2)
    (0xFFFF0000 << 32, 96, 0),  # IPv4-translated ::ffff:0:a.b.c.d (RFC 2765 §2.1)
)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address that NAT64, 6to4 or an IPv4-translated address reaches: the
    policy judges such an address as that IPv4, so ``[64:ff9b::7f00:1]`` is loopback."""
    value = int(ip)
    for prefix, length, shift in _EMBEDDING_PREFIXES:
        if value >> (128 - length) == prefix >> (128 - length):
            return ipaddress.IPv4Address((value >> shift) & 0xFFFFFFFF)
    return None


def parse_ip(text: str) -> IPAddress | None:
    """A strict IP literal: dotted-quad IPv4 without leading zeros, or IPv6 without zone."""
    if not text.isascii() or "%" in text:
        return None
    try:  # the common case, 4x faster than ipaddress's parser and as strict (glibc)
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError):
        pass
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_port(text: str) -> int:
    """An optional ``+`` then ASCII digits, 0-65535 (docs/original.md §6.3, as Rust parses a
    ``u16``)."""
    digits = text[1:] if text.startswith("+") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        raise TargetError("invalid port")
    value = int(digits)
    if value > PORT_MAX:
        raise TargetError("invalid port")
    return value


def _check_ldh(name: str) -> str:
    if len(name) > DOMAIN_MAX_LEN:
        raise TargetError("invalid domain: longer than 253 characters")
    for label in name.split("."):
        if not 1 <= len(label) <= LABEL_MAX_LEN:
            raise TargetError("invalid domain: empty or over-long label")
        if not _LDH.issuperset(label) or label[0] == "-" or label[-1] == "-":
            raise TargetError("invalid domain: label is not letters, digits and inner hyphens")
    return name


def to_ascii_domain(name: str) -> str:
    """UTS-46 "domain to ASCII" of a name without trailing dot, then the LDH check."""
    import idna  # noqa: PLC0415  (the IDNA tables cost memory: load them on first use)

    if name.isascii():
        mapped = name.lower()
    else:
        if _FORBIDDEN.intersection(name):
            raise TargetError("IDNA error: forbidden code point")
        try:
            mapped = idna.uts46_remap(name, std3_rules=False, transitional=False)
        except idna.IDNAError as exc:
            raise TargetError(f"IDNA error: {exc}") from None
    if _FORBIDDEN.intersection(mapped):
        raise TargetError("IDNA error: forbidden code point")
    labels = mapped.split(".")
    for i, label in enumerate(labels):
        try:
            if not label.isascii():
                labels[i] = idna.alabel(label).decode("ascii")
            elif label.startswith("xn--"):
                idna.ulabel(label)  # existing A-labels must decode (docs/original.md §6.4)
        except (idna.IDNAError, UnicodeError) as exc:
            raise TargetError(f"IDNA error: {exc}") from None
    return _check_ldh(".".join(labels))


class Host(NamedTuple):
    """A parsed host: an IP literal, or a domain in ASCII (punycode) form.

    The values made for every request are named tuples, not frozen dataclasses: those
    build each field with object.__setattr__, 0.5 us more per object."""

    raw: str  # as received; the text inside brackets for an IPv6 literal
    ip: IPAddress | None  # canonical IP of a literal, None for a domain
    domain: str | None  # lower-case ASCII without trailing dot, None for a literal
    absolute: bool = False  # the client sent a trailing dot; kept in the DNS query

    @property
    def dns_name(self) -> str:
        assert self.domain is not None
        return self.domain + "." if self.absolute else self.domain


class Target(NamedTuple):
    host: Host
    port: int

    @property
    def authority(self) -> str:
        """Raw host and port as in logs: ``[...]`` around a host that contains ``:``."""
        return format_host_port(self.host.raw, self.port)


def _domain_host(raw: str) -> Host:
    if not raw:
        raise TargetError("empty host")
    if any(c.isspace() for c in raw):
        raise TargetError("whitespace in host")
    absolute = raw.endswith(".")
    name = raw[:-1] if absolute else raw
    if not name:
        raise TargetError("empty host")
    if name.endswith("."):
        raise TargetError("multiple trailing dots")
    return Host(raw=raw, ip=None, domain=to_ascii_domain(name), absolute=absolute)


def parse_request_host(raw: str) -> Host:
    """Strict request host (docs/original.md §6.3): a dotted-quad literal, else a domain."""
    if not raw:
        raise TargetError("empty host")
    if not raw.endswith(".") and (ip := parse_ip(raw)) is not None and ip.version == 4:
        return Host(raw=raw, ip=ip, domain=None)
    return _domain_host(raw)


def parse_domain_target(raw: str) -> Host:
    """A host the client typed as a name (SOCKS5 ATYP 3): never reclassified as an IP."""
    return _domain_host(raw)


def parse_request_target(text: str) -> Target:
    """Authority-form CONNECT target: ``host:port`` or ``[v6]:port`` (docs/original.md §6.3)."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            raise TargetError("invalid CONNECT target")
        inner = text[1:close]
        ip = parse_ip(inner)
        if ip is None or ip.version != 6:
            raise TargetError("invalid CONNECT target")
        port = parse_port(text[close + 2 :])
        return Target(Host(raw=inner, ip=canonical_ip(ip), domain=None), port)
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or ":" in host:
        raise TargetError("invalid CONNECT target")
    port = parse_port(port_text)
    return Target(parse_request_host(host), port)


def normalize_lenient(text: str) -> IPAddress | str:
    """Configuration and feed entries (docs/original.md §6.4): an IP or an ASCII domain."""
    value = text.strip()
    if len(value) >= 2 and value[0] == "[" and value[-1] == "]":
        value = value[1:-1]
    value = value.rstrip(".")
    if not value:
        raise TargetError("empty name")
    ip = parse_ip(value)
    if ip is not None:
        return canonical_ip(ip)
    return to_ascii_domain(value)


def format_host_port(host: object, port: int) -> str:
    """``host:port``, with ``[...]`` around a host that contains ``:`` (IPv6)."""
    text = str(host)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"
