"""Destination policy (docs/original.md §4, docs/destination-policy.md) and threat feeds
(docs/original.md §5), table-driven."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from fyntr.errors import ConfigError, HandshakeError, Status
from fyntr.limits import THREAT_FEED_SLICE_LINES
from fyntr.policy.rules import Policy, collect_addresses, parse_cidr
from fyntr.policy.threat import (
    build_index,
    classify_line,
    index_steps,
    is_mixed_script,
    load_feed_files,
)
from fyntr.wire.target import parse_domain_target, parse_request_host

ip = ipaddress.ip_address


def denied(policy: Policy, host: str, *addrs: str) -> bool:
    try:
        policy.authorize(parse_request_host(host), [ip(a) for a in addrs])
    except HandshakeError as err:
        assert err.status is Status.FORBIDDEN
        return True
    return False


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fc00::1",
        "fd12::1",
        "fe80::1",
        "fec0::1",  # site-local (deprecated, RFC 3879)
        "ff02::1",
        # IPv6 that embeds a denied IPv4: judged as that IPv4
        "64:ff9b::7f00:1",  # NAT64 well-known prefix -> 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 -> 169.254.169.254
        "2002:7f00:1::",  # 6to4 -> 127.0.0.1
        "2002:c0a8:101::1",  # 6to4 -> 192.168.1.1
        "::ffff:0:7f00:1",  # IPv4-translated -> 127.0.0.1
        "::ffff:0:a00:1",  # IPv4-translated -> 10.0.0.1
    ],
)
def test_builtin_deny_list(address: str) -> None:
    assert denied(Policy.build(), "example.com", address)


@pytest.mark.parametrize(
    "address",
    [
        "192.0.2.1",
        "198.18.0.1",
        "198.51.100.1",
        "203.0.113.10",
        "64:ff9b::808:808",  # NAT64 -> 8.8.8.8
        "64:ff9b:1::7f00:1",  # outside the well-known /96: not a NAT64 address of RFC 6052
        "2001:db8::1",
        "2002:808:808::1",  # 6to4 -> 8.8.8.8
        "8.8.8.8",
    ],
)
def test_reachable_by_default(address: str) -> None:
    assert not denied(Policy.build(), "example.com", address)


def test_allow_cidr_opens_a_denied_range_and_wins_over_deny() -> None:
    policy = Policy.build(allow_cidrs=["127.0.0.0/8"], deny_cidrs=["127.0.0.0/16"])
    assert not denied(policy, "127.0.0.1", "127.0.0.1")
    assert not denied(policy, "example.com", "64:ff9b::7f00:1")  # the embedded IPv4 is allowed
    assert denied(Policy.build(deny_cidrs=["203.0.113.0/24"]), "x.com", "2002:cb00:7105::")
    assert denied(Policy.build(deny_cidrs=["203.0.113.0/24"]), "x.com", "203.0.113.5")


def test_one_denied_address_denies_the_whole_answer_unless_allow_domain() -> None:
    policy = Policy.build()
    assert denied(policy, "mixed.example", "203.0.113.10", "10.0.0.1")
    allowed = Policy.build(allow_domains=[".example"])
    out = allowed.authorize(
        parse_request_host("mixed.example"), [ip("203.0.113.10"), ip("10.0.0.1")]
    )
    assert out == [ip("203.0.113.10")]
    # allow-domain never opens a denied range by itself (upstream test).
    assert denied(Policy.build(allow_domains=["localhost"]), "localhost", "127.0.0.1", "::1")


def test_allow_domain_matching() -> None:
    policy = Policy.build(allow_domains=[" .BÜCHER.DE. ", "..example.com", "bad host", "1.2.3.4"])
    assert policy.allow_domains == ("xn--bcher-kva.de", "example.com")
    for name in ("api.bücher.de", "XN--BCHER-KVA.DE.", "example.com", "api.example.com"):
        assert policy.domain_allowed(parse_domain_target(name)), name
    for name in ("notbücher.de", "notexample.com"):
        assert not policy.domain_allowed(parse_domain_target(name)), name
    assert not policy.domain_allowed(parse_request_host("1.2.3.4"))


def test_ports() -> None:
    Policy.build().check_port(443)
    with pytest.raises(HandshakeError) as info:
        Policy.build().check_port(22)
    assert "port 22 is not in allow list; allowed ports are: 443" in info.value.detail
    assert "no CONNECT ports" not in info.value.detail
    explicit = Policy.build(allow_ports=[0, 8443])
    assert explicit.allowed_ports == {443, 8443}
    with pytest.raises(HandshakeError):
        explicit.check_port(0)
    none = Policy.build(default_port=False)
    with pytest.raises(HandshakeError) as info:
        none.check_port(443)
    for words in (
        "no CONNECT ports are enabled",
        "--allow-port",
        "--no-default-allow-port",
        "restore implicit 443",
    ):
        assert words in info.value.detail
    only = Policy.build(allow_ports=[0, 443], default_port=False)
    only.check_port(443)
    with pytest.raises(HandshakeError):
        only.check_port(0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.0", "expected <ip>/<prefix>"),
        ("10.0.0.0/abc", "invalid prefix"),
        ("10.0.0.0/256", "invalid prefix"),
        ("10.0.0/8", "invalid IP"),
        ("10.0.0.0/33", "at most 32"),
        ("::/129", "at most 128"),
    ],
)
def test_bad_cidrs(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_cidr(text)
    assert f"invalid CIDR '{text}'" in str(info.value)


def test_cidr_host_bits_are_masked() -> None:
    assert parse_cidr(" 10.1.2.3/8 ") == ipaddress.ip_network("10.0.0.0/8")
    assert ip("192.168.1.5") in parse_cidr("192.168.1.0/24")
    assert ip("192.168.2.5") not in parse_cidr("192.168.1.0/24")


def test_collect_addresses() -> None:
    got = collect_addresses(
        [
            ip("203.0.113.11"),
            ip("::ffff:203.0.113.10"),
            ip("203.0.113.10"),
            ip("2001:db8::1"),
            ip("10.0.0.1"),
        ]
    )
    assert got == [ip("10.0.0.1"), ip("203.0.113.10"), ip("203.0.113.11"), ip("2001:db8::1")]
    with pytest.raises(HandshakeError, match="more than 3 unique addresses") as info:
        collect_addresses([ip(f"203.0.113.{i}") for i in range(4)], limit=3)
    assert info.value.status is Status.BAD_GATEWAY
    assert len(collect_addresses([ip(f"203.0.113.{i}") for i in range(32)])) == 32


# --- threat feeds ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "entry"),
    [
        ("", ""),
        ("   ", ""),
        ("! title", ""),
        ("# comment", ""),
        ("@@||allowed.example^", None),
        ("||evil.com^$important", None),
        ("||evil.com", None),
        ("||evil.com^|", None),
        ("||evil.com^foo", None),
        ("/regex/", None),
        ("*.evil.com", None),
        ("10.0.0.0/8", None),
        ("||evil.com^", "evil.com"),
        ("  evil.com  ", "evil.com"),
        ("||1.2.3.4^", "1.2.3.4"),
        ("0.0.0.0 evil.com", "0.0.0.0 evil.com"),  # then fails to normalise -> skipped
    ],
)
def test_feed_line_grammar(line: str, entry: str | None) -> None:
    assert classify_line(line) == entry


def test_feed_parsing_counts_and_matching() -> None:
    text = (
        "! Title\n||evil.com^\n||Evil.COM.^\n||phish.example^\n||1.2.3.4^\n# c\r\n"
        "0.0.0.0 hosts.example\n.leading.example\n||bad host.com^\nhost:443\n[::ffff:5.6.7.8]\n"
    )
    index = build_index([("f", text.split("\n"))])
    assert index.domains == {"evil.com", "phish.example"}
    assert index.ips == {ip("1.2.3.4"), ip("5.6.7.8")}
    (stats,) = index.files
    assert (stats.domains, stats.ips, stats.skipped) == (2, 2, 4)
    assert index.match_host(parse_request_host("login.evil.com")) == "evil.com"
    assert index.match_host(parse_domain_target("API.EVIL.COM.")) == "evil.com"
    assert index.match_host(parse_request_host("notevil.com")) is None
    assert index.match_host(parse_request_host("1.2.3.4")) == "1.2.3.4"
    # A domain-typed numeric name is only looked up as a domain.
    assert index.match_host(parse_domain_target("1.2.3.4")) is None
    assert index.match_ips([ip("9.9.9.9"), ip("1.2.3.4"), ip("5.6.7.8")]) == [
        ip("1.2.3.4"),
        ip("5.6.7.8"),
    ]


def test_a_feed_is_parsed_in_slices_and_counted_per_file() -> None:
    """index_steps yields between slices of THREAT_FEED_SLICE_LINES lines (a reload lets
    the loop turn there); each file counts what it added."""
    one = [f"a{i}.example\n" for i in range(2 * THREAT_FEED_SLICE_LINES)]
    two = ["a0.example\r\n", "b.example\r\n", "9.9.9.9\n", "/regex/\n"]
    steps = index_steps([("one", one), ("two", two)])
    slices = 0
    with pytest.raises(StopIteration) as built:
        while True:
            next(steps)
            slices += 1
    assert slices == 2
    index = built.value.value
    assert [(f.path, f.domains, f.ips, f.skipped) for f in index.files] == [
        ("one", 2 * THREAT_FEED_SLICE_LINES, 0, 0),
        ("two", 1, 1, 1),  # a0.example was already there
    ]


def test_idna_feed_entries() -> None:
    index = build_index([("f", ["||bücher.de^"])])
    assert index.domains == {"xn--bcher-kva.de"}
    assert index.match_host(parse_domain_target("BÜCHER.DE.")) == "xn--bcher-kva.de"
    assert index.match_host(parse_request_host("api.login.bücher.de")) == "xn--bcher-kva.de"


def test_index_needs_an_entry(tmp_path: Path) -> None:
    comments = tmp_path / "c.txt"
    comments.write_text("# nothing\n! here\n")
    unsupported = tmp_path / "u.txt"
    unsupported.write_text("/regex/\n@@||x^\n")
    good = tmp_path / "g.txt"
    good.write_text("evil.com\n")
    with pytest.raises(ConfigError, match="no supported entries"):
        load_feed_files([str(comments), str(unsupported)])
    assert load_feed_files([str(comments), str(good)]).domains == {"evil.com"}
    with pytest.raises(ConfigError, match=r"missing\.txt"):
        load_feed_files([str(tmp_path / "missing.txt")])
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"b\.txt"):
        load_feed_files([str(binary)])


@pytest.mark.parametrize(
    ("host", "mixed"),
    [
        ("fаke.invalid", True),  # Cyrillic а
        ("fаkе.invalid", True),
        ("fαke.invalid", True),  # Greek α
        ("example.com", False),
        ("bücher.de", False),
        ("日本語.invalid", False),
        ("日本abc.invalid", False),
        ("東京-example.jp", False),
        ("жд.invalid", False),
        ("жд.example", False),
    ],
)
def test_mixed_script(host: str, mixed: bool) -> None:
    assert is_mixed_script(host) is mixed
