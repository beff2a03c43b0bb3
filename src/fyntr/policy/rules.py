"""Destination policy: ports, CIDRs, allow-domains -> decision (docs/original.md §4,
docs/destination-policy.md). Pure."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from fyntr.errors import ConfigError, TargetError, bad_gateway, forbidden
from fyntr.limits import DEFAULT_ALLOWED_PORT, HTTP_DEFAULT_PORT, MAX_RESOLVED_ADDRS
from fyntr.wire.target import Host, IPAddress, canonical_ip, embedded_ipv4, normalize_lenient

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Always denied (docs/original.md §4.2, plus ::1/128 and ::/128 which fyntr keeps as IPv6, and
# fec0::/10). IPv6 addresses that embed an IPv4 address (NAT64, 6to4, IPv4-translated:
# wire/target.embedded_ipv4) are also judged as that IPv4.
BUILTIN_DENY_CIDRS: Final = (
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",  # link-local, including cloud metadata 169.254.169.254
    "100.64.0.0/10",  # carrier-grade NAT
    "0.0.0.0/8",
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, including 255.255.255.255
    "::1/128",
    "::/128",
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "fec0::/10",  # site-local, deprecated by RFC 3879 but still routed inside some sites
    "ff00::/8",  # multicast
)


def parse_cidr(text: str) -> Network:
    """``ip/prefix`` with host bits masked off; errors as docs/original.md §1.4."""
    value = text.strip()
    ip_text, sep, prefix_text = value.partition("/")
    if not sep:
        raise ConfigError(f"invalid CIDR '{text}': expected <ip>/<prefix>")
    if not (prefix_text.isascii() and prefix_text.isdigit()) or int(prefix_text) > 255:
        raise ConfigError(f"invalid CIDR '{text}': invalid prefix '{prefix_text}'")
    try:
        ip = ipaddress.ip_address(ip_text)
    except ValueError:
        raise ConfigError(f"invalid CIDR '{text}': invalid IP '{ip_text}'") from None
    prefix = int(prefix_text)
    if prefix > ip.max_prefixlen:
        raise ConfigError(
            f"invalid CIDR '{text}': prefix must be at most {ip.max_prefixlen} for IPv{ip.version}"
        )
    return ipaddress.ip_network((ip, prefix), strict=False)


def collect_addresses(ips: Iterable[IPAddress], limit: int = MAX_RESOLVED_ADDRS) -> list[IPAddress]:
    """Canonicalise, de-duplicate, cap and sort resolver answers: IPv4 first
    (docs/original.md §4.5)."""
    unique = {canonical_ip(ip) for ip in ips}
    if len(unique) > limit:
        raise bad_gateway("resolve_failed", f"host had more than {limit} unique addresses")
    return sorted(unique, key=lambda ip: (ip.version, int(ip)))


def happy_eyeballs_order(addrs: Sequence[IPAddress]) -> list[IPAddress]:
    """RFC 8305 §4: families interleaved, IPv6 first (RFC 6724's default policy prefers
    it), each family in the order given. Unlike the original's IPv4-first order, which
    ``collect_addresses`` keeps for one-at-a-time dialing."""
    v6 = [ip for ip in addrs if ip.version == 6]
    v4 = [ip for ip in addrs if ip.version == 4]
    first, second = (v6, v4) if v6 else (v4, v6)
    out: list[IPAddress] = []
    for i in range(max(len(first), len(second))):
        out.extend(family[i] for family in (first, second) if i < len(family))
    return out


# (network as an int, netmask as an int, the network): a membership test is one AND.
Ranges = tuple[tuple[int, int, Network], ...]


def _ranges(nets: Iterable[Network], version: int) -> Ranges:
    return tuple((int(n.network_address), int(n.netmask), n) for n in nets if n.version == version)


@dataclass(frozen=True, slots=True)
class Policy:
    allowed_ports: frozenset[int]  # CONNECT and SOCKS5
    plain_ports: frozenset[int]  # plain HTTP: the same, with 80 where CONNECT has 443
    deny: tuple[Network, ...]
    allow: tuple[Network, ...]
    allow_domains: tuple[str, ...]
    # IP version -> (allow, deny) ranges: ``ip in network`` costs 1 us, this 0.1 us.
    ranges: dict[int, tuple[Ranges, Ranges]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ranges = {v: (_ranges(self.allow, v), _ranges(self.deny, v)) for v in (4, 6)}
        object.__setattr__(self, "ranges", ranges)

    @classmethod
    def build(
        cls,
        *,
        allow_ports: Sequence[int] = (),
        default_port: bool = True,
        deny_cidrs: Sequence[str] = (),
        allow_cidrs: Sequence[str] = (),
        allow_domains: Sequence[str] = (),
    ) -> Policy:
        ports = {p for p in allow_ports if p != 0}
        plain = set(ports)
        if default_port:
            ports.add(DEFAULT_ALLOWED_PORT)
            plain.add(HTTP_DEFAULT_PORT)
        deny = tuple(parse_cidr(c) for c in (*BUILTIN_DENY_CIDRS, *deny_cidrs))
        allow = tuple(parse_cidr(c) for c in allow_cidrs)
        domains: list[str] = []
        for entry in allow_domains:
            try:
                value = normalize_lenient(entry.strip().lstrip("."))
            except TargetError:
                continue  # upstream drops entries that do not normalise, silently
            if isinstance(value, str):
                domains.append(value)
        return cls(frozenset(ports), frozenset(plain), deny, allow, tuple(domains))

    def check_port(self, port: int, *, plain: bool = False) -> None:
        """Runs before any DNS lookup (docs/original.md §4.1). ``plain``: a plain HTTP request,
        whose implicit port is 80, not 443."""
        ports = self.plain_ports if plain else self.allowed_ports
        if port in ports:
            return
        if not ports:
            kind, implicit = ("plain HTTP", HTTP_DEFAULT_PORT) if plain else ("CONNECT", 443)
            raise forbidden(
                "port_denied",
                f"no {kind} ports are enabled; configure --allow-port (or FYNTR_ALLOW_PORT) "
                f"or drop --no-default-allow-port to restore implicit {implicit}",
            )
        allowed = ", ".join(str(p) for p in sorted(ports))
        raise forbidden(
            "port_denied", f"port {port} is not in allow list; allowed ports are: {allowed}"
        )

    def domain_allowed(self, host: Host) -> bool:
        name = host.domain
        if name is None:
            return False
        return any(name == d or name.endswith("." + d) for d in self.allow_domains)

    def denied_by(self, ip: IPAddress) -> Network | None:
        """The first deny CIDR that holds ``ip``, unless an allow CIDR holds it; an IPv6
        address that embeds an IPv4 address and is not denied itself is judged as that
        IPv4 (allow CIDRs included)."""
        value = int(ip)
        allow, deny = self.ranges[ip.version]
        for net, mask, _network in allow:
            if value & mask == net:
                return None
        for net, mask, network in deny:
            if value & mask == net:
                return network
        if isinstance(ip, ipaddress.IPv6Address) and (inner := embedded_ipv4(ip)) is not None:
            return self.denied_by(inner)
        return None

    def authorize(self, host: Host, addrs: Sequence[IPAddress]) -> list[IPAddress]:
        """Addresses that may be dialled, in dial order (docs/original.md §4.4).

        One denied address denies the whole request (DNS rebinding, mixed answers) unless
        the host is on the allow-domain list, in which case it is only dropped.
        """
        domain_ok = self.domain_allowed(host)
        out: list[IPAddress] = []
        for ip in addrs:
            net = self.denied_by(ip)
            if net is None:
                out.append(ip)
            elif not domain_ok:
                raise forbidden("cidr_denied", f"address {ip} is denied by {net}")
        if not out:
            raise forbidden("cidr_denied", "every address of the host hit a deny CIDR")
        return out
