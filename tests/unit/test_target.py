"""Host, port and IP normalisation: every accept/reject example of docs/original.md §4.3, §6.3-6.4
and docs/differences.md, table-driven."""

from __future__ import annotations

import ipaddress

import pytest

from fyntr.errors import TargetError
from fyntr.wire.target import (
    canonical_ip,
    normalize_lenient,
    parse_domain_target,
    parse_port,
    parse_request_host,
    parse_request_target,
)

ip = ipaddress.ip_address


@pytest.mark.parametrize(
    ("text", "raw", "ip_text", "domain", "dns", "port"),
    [
        (
            "api.aws.amazon.com:443",
            "api.aws.amazon.com",
            None,
            "api.aws.amazon.com",
            "api.aws.amazon.com",
            443,
        ),
        ("203.0.113.10:443", "203.0.113.10", "203.0.113.10", None, None, 443),
        ("203.0.113.10.:443", "203.0.113.10.", None, "203.0.113.10", "203.0.113.10.", 443),
        ("[2001:0db8:0:0:0:0:0:1]:443", "2001:0db8:0:0:0:0:0:1", "2001:db8::1", None, None, 443),
        ("[::ffff:127.0.0.1]:443", "::ffff:127.0.0.1", "127.0.0.1", None, None, 443),
        ("[::1]:443", "::1", "::1", None, None, 443),  # docs/differences.md: stays IPv6
        ("BÜCHER.DE.:443", "BÜCHER.DE.", None, "xn--bcher-kva.de", "xn--bcher-kva.de.", 443),
        (
            "XN--BCHER-KVA.DE:443",
            "XN--BCHER-KVA.DE",
            None,
            "xn--bcher-kva.de",
            "xn--bcher-kva.de",
            443,
        ),
        ("ab--cd.com:443", "ab--cd.com", None, "ab--cd.com", "ab--cd.com", 443),
        ("127.1:443", "127.1", None, "127.1", "127.1", 443),  # numeric-looking: a domain
        ("2130706433:443", "2130706433", None, "2130706433", "2130706433", 443),
        ("0x7f000001:443", "0x7f000001", None, "0x7f000001", "0x7f000001", 443),
        ("127.0.0.01:443", "127.0.0.01", None, "127.0.0.01", "127.0.0.01", 443),  # leading 0
        ("１２７.０.０.１:443", "１２７.０.０.１", None, "127.0.0.1", "127.0.0.1", 443),
        ("１２７．０．０．１:443", "１２７．０．０．１", None, "127.0.0.1", "127.0.0.1", 443),
        ("169.254.169.254:80", "169.254.169.254", "169.254.169.254", None, None, 80),
        ("ß.de:443", "ß.de", None, "xn--zca.de", "xn--zca.de", 443),  # non-transitional
        ("example.com:+443", "example.com", None, "example.com", "example.com", 443),
        ("example.com:0", "example.com", None, "example.com", "example.com", 0),
    ],
)
def test_request_targets_accepted(
    text: str, raw: str, ip_text: str | None, domain: str | None, dns: str | None, port: int
) -> None:
    target = parse_request_target(text)
    assert target.host.raw == raw
    assert target.host.ip == (ip(ip_text) if ip_text else None)
    assert target.host.domain == domain
    if dns is not None:
        assert target.host.dns_name == dns
    assert target.port == port


@pytest.mark.parametrize(
    "text",
    [
        "example.invalid",  # no port
        ":443",
        "example.invalid:",
        "example.invalid:not-a-port",
        "example.invalid:65536",
        "example.invalid:4_43",  # Python int() would take it; Rust does not
        "example.invalid:٤٤٣",  # Arabic-Indic digits
        "2001:db8::1:443",  # unbracketed IPv6
        "[2001:db8::1]443",
        "[2001:db8::1]",
        "[example.invalid]:443",
        "[1.2.3.4]:443",
        "[fe80::1%eth0]:443",
        "example.invalid..:443",
        "a..b:443",
        ".example.com:443",
        "_dmarc.example.com:443",
        "-a.com:443",
        "a-.com:443",
        ("a" * 64) + ".com:443",
        ".".join(["a" * 63] * 4) + ":443",  # 255 characters
        "exa mple.com:443",
        "xn--zz.com:443",  # invalid punycode
        "😀.com:443",  # IDNA 2008 disallows emoji (documented difference)
        "a/b.com:443",
    ],
)
def test_request_targets_rejected(text: str) -> None:
    with pytest.raises(TargetError):
        parse_request_target(text)


def test_rejections_do_not_echo_the_input() -> None:
    with pytest.raises(TargetError) as info:
        parse_request_target("secret-host.invalid:port")
    assert "secret" not in str(info.value)


def test_domain_typed_numeric_name_is_not_reclassified() -> None:
    host = parse_domain_target("203.0.113.10")
    assert host.ip is None
    assert host.dns_name == "203.0.113.10"
    assert parse_request_host("203.0.113.10").ip == ip("203.0.113.10")
    with pytest.raises(TargetError, match="whitespace"):
        parse_domain_target(" example.com ")
    with pytest.raises(TargetError, match="multiple trailing dots"):
        parse_domain_target("example.com..")
    with pytest.raises(TargetError):
        parse_domain_target("[example.com]")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("::ffff:1.2.3.4", "1.2.3.4"),  # mapped
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::1.2.3.4", "1.2.3.4"),  # compatible, value above 1
        ("::2", "0.0.0.2"),
        ("::1", "::1"),  # docs/differences.md keeps these IPv6 (the original: 0.0.0.1 / 0.0.0.0)
        ("::", "::"),
        ("2001:db8::1", "2001:db8::1"),
        ("64:ff9b::1.2.3.4", "64:ff9b::102:304"),  # NAT64 is not converted
        ("1.2.3.4", "1.2.3.4"),
    ],
)
def test_canonical_ip(given: str, expected: str) -> None:
    assert canonical_ip(ip(given)) == ip(expected)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (" EVIL.COM. ", "evil.com"),
        (" [EVIL.COM] ", "evil.com"),
        (" EVIL.COM... ", "evil.com"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("fаke.invalid", "xn--fke-6cd.invalid"),
        ("[::ffff:1.2.3.4]", ip("1.2.3.4")),
        ("2001:0db8::1", ip("2001:db8::1")),
        ("１２７．０．０．１", "127.0.0.1"),
    ],
)
def test_lenient_normalisation(given: str, expected: object) -> None:
    assert normalize_lenient(given) == expected


@pytest.mark.parametrize("bad", ["", "   ", "...", "bad host.com", "_x.com", "host:443"])
def test_lenient_normalisation_rejects(bad: str) -> None:
    with pytest.raises(TargetError):
        normalize_lenient(bad)


@pytest.mark.parametrize(
    ("text", "port"), [("443", 443), ("+443", 443), ("0443", 443), ("0", 0), ("65535", 65535)]
)
def test_ports(text: str, port: int) -> None:
    assert parse_port(text) == port


@pytest.mark.parametrize("text", ["", "+", "-1", "65536", " 443", "443 ", "0x1bb", "++443"])
def test_bad_ports(text: str) -> None:
    with pytest.raises(TargetError):
        parse_port(text)


def test_authority_brackets_ipv6() -> None:
    assert parse_request_target("[2001:db8::1]:443").authority == "[2001:db8::1]:443"
    assert parse_request_target("example.com:443").authority == "example.com:443"
