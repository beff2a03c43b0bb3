"""Which clients may use fyntr (docs/destination-policy.md, "Who may connect"): judged
at accept, from the address alone, before a byte is read. Pure."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final

from fyntr.policy.rules import Network, parse_cidr
from fyntr.wire.target import canonical_ip

# Served by default when a listener is bound beyond loopback: the addresses a home or
# office network hands out, never the Internet's.
DEFAULT_CLIENT_RANGES: Final = (
    "127.0.0.0/8",  # loopback
    "::1/128",
    "10.0.0.0/8",  # RFC 1918
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",  # RFC 6598, shared address space (carrier-grade NAT, Tailscale)
    "169.254.0.0/16",  # link-local
    "fe80::/10",
    "fc00::/7",  # RFC 4193, unique local addresses
)


class ClientPolicy:
    """The client ranges: ``allows`` a peer address as accept() gives it."""

    __slots__ = ("names", "networks")

    def __init__(self, ranges: Sequence[str]) -> None:
        self.names = tuple(ranges)  # as given: for the refusal's text
        self.networks: tuple[Network, ...] = tuple(parse_cidr(r) for r in ranges)

    def allows(self, address: str) -> bool:
        """An IPv4 client on an IPv6 listener (``::ffff:a.b.c.d``) is judged as IPv4;
        a scope (``fe80::1%eth0``) is dropped."""
        try:
            ip = canonical_ip(ipaddress.ip_address(address.partition("%")[0]))
        except ValueError:
            return False  # not an IP peer: nothing here serves it
        return any(ip in net for net in self.networks)
