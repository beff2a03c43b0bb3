"""Properties of the destination policy and the threat index."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from fyntr.errors import HandshakeError
from fyntr.policy.rules import Policy, happy_eyeballs_order
from fyntr.policy.threat import ThreatIndex
from fyntr.wire.target import IPAddress, canonical_ip, parse_domain_target

ipv4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
ipv6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)
addresses = st.lists(st.one_of(ipv4, ipv6), min_size=1, max_size=8)
label = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
names = st.lists(label, min_size=1, max_size=4).map(".".join)

POLICIES = [
    Policy.build(),
    Policy.build(allow_cidrs=["127.0.0.0/8", "10.1.0.0/16"]),
    Policy.build(deny_cidrs=["203.0.113.0/24", "2001:db8::/32"], allow_domains=["example"]),
]


@given(st.sampled_from(POLICIES), addresses, st.booleans())
def test_no_denied_address_is_ever_dialled(
    policy: Policy, addrs: list[object], listed: bool
) -> None:
    host = parse_domain_target("api.example" if listed else "api.other")
    canon = [canonical_ip(a) for a in addrs]  # type: ignore[arg-type]
    try:
        out = policy.authorize(host, canon)
    except HandshakeError:
        # A refusal has its reason: a denied address, and with the allow-domain list,
        # every address denied.
        denied = [ip for ip in canon if policy.denied_by(ip) is not None]
        assert denied
        if policy.domain_allowed(host):
            assert len(denied) == len(canon)
        return
    assert out
    assert all(policy.denied_by(ip) is None for ip in out)
    if not policy.domain_allowed(host):
        # Without the allow-domain list nothing is dropped: all or nothing.
        assert out == canon


@given(st.sampled_from(POLICIES), ipv4)
def test_a_mapped_address_is_judged_like_its_ipv4(policy: Policy, ip: object) -> None:
    v4 = ipaddress.IPv4Address(ip)
    mapped = ipaddress.IPv6Address(f"::ffff:{v4}")
    assert canonical_ip(mapped) == v4
    assert policy.denied_by(canonical_ip(mapped)) == policy.denied_by(v4)


@given(names, names)
def test_suffix_matching_respects_label_boundaries(entry: str, name: str) -> None:
    index = ThreatIndex(domains=frozenset({entry}))
    matched = index.match_domain(name)
    assert (matched is not None) == (name == entry or name.endswith("." + entry))
    assert index.match_domain("x" + entry) is None or ("x" + entry).endswith("." + entry)


EMBEDDING = [
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64: the last 32 bits
    ipaddress.ip_network("2002::/16"),  # 6to4: bits 16-47
    ipaddress.ip_network("::ffff:0:0:0/96"),  # IPv4-translated: the last 32 bits
]


def reference_denied_by(
    policy: Policy, ip: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> object:
    """The rule in words: the first deny network holding ip, unless an allow network
    does; an IPv6 address that embeds an IPv4 and is not denied itself is judged as it."""
    if any(ip.version == n.version and ip in n for n in policy.allow):
        return None
    denied = next((n for n in policy.deny if ip.version == n.version and ip in n), None)
    if denied is not None or ip.version == 4:
        return denied
    for net in EMBEDDING:
        if ip in net:
            shift = 80 if net.prefixlen == 16 else 0
            return reference_denied_by(
                policy, ipaddress.IPv4Address((int(ip) >> shift) & 0xFFFFFFFF)
            )
    return None


@given(st.sampled_from(POLICIES), st.data())
def test_denied_by_agrees_with_network_membership(policy: Policy, data: st.DataObject) -> None:
    near = data.draw(st.sampled_from([*policy.deny, *policy.allow, *EMBEDDING]))
    offset = data.draw(st.integers(-2, near.num_addresses + 1))
    value = max(0, min(int(near.network_address) + offset, 2**near.max_prefixlen - 1))
    ip = ipaddress.ip_address(value) if near.version == 4 else ipaddress.IPv6Address(value)
    assert policy.denied_by(ip) == reference_denied_by(policy, ip)
    other = data.draw(st.one_of(ipv4, ipv6))
    assert policy.denied_by(other) == reference_denied_by(policy, other)


@given(st.lists(st.one_of(ipv4, ipv6), max_size=32, unique=True))
def test_happy_eyeballs_order_interleaves_families_ipv6_first(addrs: list[IPAddress]) -> None:
    """RFC 8305 §4: a permutation (each address once, none added), IPv6 first, families
    alternating while both last, each family in the order given."""
    order = happy_eyeballs_order(addrs)
    assert sorted(order, key=str) == sorted(addrs, key=str)
    versions = [ip.version for ip in order]
    if 6 in versions:
        assert versions[0] == 6
    both = 2 * min(versions.count(4), versions.count(6))
    assert all(versions[i] != versions[i + 1] for i in range(both - 1))
    for version in (4, 6):
        assert [ip for ip in order if ip.version == version] == [
            ip for ip in addrs if ip.version == version
        ]
