"""A parent proxy's URL, the NO_PROXY rules, and the parent's replies, without sockets
(wire/parent.py; the wire itself: tests/integration/test_parents.py)."""

from __future__ import annotations

import pytest

from fyntr.errors import Rep
from fyntr.wire.parent import (
    NoProxy,
    Parent,
    connect_reply,
    connect_request,
    parse_parent,
    socks5_connect,
    socks5_greeting,
    socks5_method,
    socks5_reply,
)
from fyntr.wire.target import parse_request_target


def test_parent_urls() -> None:
    p = parse_parent("http://al%40ice:p%3Aw@Proxy.Corp:8080")
    assert (p.scheme, p.host, p.port, p.user, p.password) == (
        "http",
        "proxy.corp",
        8080,
        "al@ice",
        "p:w",
    )
    assert p.name == "http://proxy.corp:8080"
    assert "p:w" not in repr(p) and "al@ice" not in repr(p)
    assert parse_parent("proxy.corp").port == 3128  # no scheme: http, squid's port
    assert parse_parent("socks5h://[::1]").name == "socks5://[::1]:1080"
    assert parse_parent("socks5://127.0.0.1:1080").loopback


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://proxy:443", "TLS to the parent is not supported"),
        ("ftp://proxy", "not 'ftp://'"),
        ("http://proxy:99999", "port"),
        ("http://proxy:0", "port"),
        ("http://proxy:8080/path", "no path"),
        ("http://:8080", "no host"),
        ("http://bad_host!:8080", "not valid"),
    ],
)
def test_bad_parent_urls_say_why(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_parent(url)


@pytest.mark.parametrize(
    ("entries", "target", "direct"),
    [
        ((), "localhost:443", True),  # loopback always goes direct
        ((), "127.0.0.5:443", True),
        ((), "example.com:443", False),
        (("example.com",), "example.com:443", True),
        (("example.com",), "api.example.com:443", True),  # a subdomain, at a label boundary
        (("example.com",), "badexample.com:443", False),
        ((".example.com",), "example.com:443", True),  # a leading dot is ignored
        (("*.example.com",), "a.example.com:443", True),  # as Go reads it
        (("example.com:8443",), "example.com:443", False),  # the port must match
        (("example.com:8443",), "example.com:8443", True),
        (("10.0.0.0/8",), "10.1.2.3:443", True),
        (("10.0.0.0/8",), "11.1.2.3:443", False),
        (("10.0.0.0/8",), "ten.example:443", False),  # a CIDR never matches a name
        (("*",), "anything.example:443", True),
    ],
)
def test_no_proxy_rules(entries: tuple[str, ...], target: str, direct: bool) -> None:
    assert NoProxy(entries).matches(parse_request_target(target)) is direct


def test_no_proxy_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="not a port"):
        NoProxy(("example.com:http",))
    with pytest.raises(ValueError, match="not a valid name"):
        NoProxy(("exa mple.com",))


def test_connect_request_and_reply() -> None:
    parent = Parent("http", "proxy", 3128, "u", "p")
    target = parse_request_target("Example.COM.:443")
    assert connect_request(parent, target) == (
        b"CONNECT example.com.:443 HTTP/1.1\r\nhost: example.com.:443\r\n"
        b"proxy-authorization: Basic dTpw\r\n\r\n"
    )
    assert connect_reply(b"HTTP/1.1 200 Conn") is None
    reply = connect_reply(b"HTTP/1.0 407 Auth\x01 Required\r\nX: y\r\n\r\nearly")
    assert reply is not None and (reply.status, reply.reason, reply.size) == (
        407,
        "Auth? Required",
        37,
    )
    with pytest.raises(ValueError, match="did not answer in HTTP"):
        connect_reply(b"SSH-2.0-OpenSSH\r\n")
    with pytest.raises(ValueError, match="longer than"):
        connect_reply(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 4000)


def test_socks5_messages() -> None:
    anonymous = Parent("socks5", "p", 1080)
    user = Parent("socks5", "p", 1080, "u", "pw")
    assert socks5_greeting(anonymous) == b"\x05\x01\x00"
    assert socks5_greeting(user) == b"\x05\x01\x02"
    assert socks5_method(b"\x05", user) is None
    assert socks5_method(b"\x05\x00", anonymous) == b""
    assert socks5_method(b"\x05\x02", user) == b"\x01\x01u\x02pw"
    with pytest.raises(ValueError, match="none of the offered methods"):
        socks5_method(b"\x05\xff", anonymous)
    assert socks5_connect(parse_request_target("a.io:443")) == b"\x05\x01\x00\x03\x04a.io\x01\xbb"
    assert (
        socks5_connect(parse_request_target("10.0.0.1:80"))
        == b"\x05\x01\x00\x01\n\x00\x00\x01\x00P"
    )
    assert socks5_reply(b"\x05\x00\x00\x01\x00\x00\x00") is None
    assert socks5_reply(b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00rest") == (Rep.SUCCEEDED, 10)
    assert socks5_reply(b"\x05\x04\x00\x03\x01a\x00\x00") == (Rep.HOST_UNREACHABLE, 8)
