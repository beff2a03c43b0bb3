"""The SOCKS5 state machine (docs/original.md §7): every input is a legal transition or a clean
reject with the right reply; whole and byte-by-byte feeding agree."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fyntr.errors import HandshakeError, Rep
from fyntr.wire.socks5 import (
    NO_AUTH_REPLY,
    NO_METHOD_REPLY,
    Request,
    Socks5Parser,
    Socks5Phase,
    failure_reply,
    is_numeric_looking,
    refusal_reply,
    success_reply,
)

GREETING = b"\x05\x01\x00"  # VER=5, NMETHODS=1, METHODS=[no auth]


def connect_domain(name: bytes, port: int = 443) -> bytes:
    # VER CMD=CONNECT RSV ATYP=DOMAIN LEN NAME PORT
    return b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big")


def connect_ipv4(ip: str, port: int = 443) -> bytes:
    return b"\x05\x01\x00\x01" + ipaddress.IPv4Address(ip).packed + port.to_bytes(2, "big")


def connect_ipv6(ip: str, port: int = 443) -> bytes:
    return b"\x05\x01\x00\x04" + ipaddress.IPv6Address(ip).packed + port.to_bytes(2, "big")


def run(data: bytes, step: int) -> tuple[list[bytes], Request | None, HandshakeError | None]:
    parser = Socks5Parser()
    replies: list[bytes] = []
    for i in range(0, len(data), step):
        out, request, err, _ = parser.feed(data[i : i + step])
        replies += out
        if err is not None:
            return replies, None, err
        if request is not None:
            return (
                replies,
                Request(request.host, request.port, request.leftover + data[i + step :]),
                None,
            )
    return replies, None, None


VALID = [
    GREETING + connect_domain(b"example.com"),
    b"\x05\x02\x02\x00" + connect_domain(b"BUCHER.DE.", 8443),  # offers user/pass too
    GREETING + connect_ipv4("203.0.113.10", 443),
    GREETING + connect_ipv6("2001:db8::1", 443),
    GREETING + connect_ipv6("::ffff:127.0.0.1", 0),  # port 0 parses; policy denies it
    GREETING + connect_domain(b"localhost") + b"\x16\x03\x01early",
]


@pytest.mark.parametrize("data", VALID)
def test_whole_and_byte_by_byte_agree(data: bytes) -> None:
    results = [run(data, step) for step in (len(data), 1, 3)]
    for replies, request, err in results:
        assert err is None
        assert replies == [NO_AUTH_REPLY]
        assert request is not None
    assert len({(r[1].host, r[1].port, r[1].leftover) for r in results}) == 1  # type: ignore[union-attr]


def test_request_fields() -> None:
    _, request, _ = run(GREETING + connect_ipv6("::ffff:127.0.0.1", 80) + b"x", 1)
    assert request is not None
    assert request.host.ip == ipaddress.IPv4Address("127.0.0.1")  # judged as IPv4
    assert request.host.raw == "::ffff:127.0.0.1"
    assert request.port == 80 and request.leftover == b"x"
    _, request, _ = run(GREETING + connect_domain(b"BUCHER.DE."), 2)
    assert request is not None and request.host.dns_name == "bucher.de."


@pytest.mark.parametrize(
    ("data", "reply"),
    [
        (b"\x04\x01\x00", b""),  # not SOCKS5 (e.g. SOCKS4 or HTTP): closed, no reply
        (b"GET / HTTP/1.1\r\n", b""),
        (b"\x05\x00", NO_METHOD_REPLY),  # NMETHODS = 0
        (b"\x05\x01\x02", NO_METHOD_REPLY),  # only user/password offered
        (GREETING + b"\x04\x01\x00\x01", failure_reply(Rep.GENERAL_FAILURE)),  # VER
        (GREETING + b"\x05\x02\x00\x01", failure_reply(Rep.COMMAND_NOT_SUPPORTED)),  # BIND
        (GREETING + b"\x05\x03\x00\x01", failure_reply(Rep.COMMAND_NOT_SUPPORTED)),  # UDP
        (GREETING + b"\x05\x01\x01\x01", failure_reply(Rep.GENERAL_FAILURE)),  # RSV
        (GREETING + b"\x05\x01\x00\x05", failure_reply(Rep.ADDRESS_TYPE_NOT_SUPPORTED)),
        (GREETING + b"\x05\x01\x00\x03\x00", failure_reply(Rep.ADDRESS_TYPE_NOT_SUPPORTED)),
        (GREETING + connect_domain(b"\xff"), failure_reply(Rep.ADDRESS_TYPE_NOT_SUPPORTED)),
    ],
)
def test_rejects(data: bytes, reply: bytes) -> None:
    replies, request, err = run(data, 1)
    assert request is None and err is not None
    assert refusal_reply(err) == reply
    if data.startswith(GREETING):
        assert replies == [NO_AUTH_REPLY]


NUMERIC = [
    "127.0.0.1",
    "127.1",
    "8.8.8.8",
    "127.0.0.1.",
    "2130706433",
    "0x7f000001",
    "017700000001",
    "0x7f.1",
    "１２７.０.０.１",
    "１２７．０．０．１",
    "1.2.3.4.5",
]
SYNTAX = [
    "",
    " example.invalid",
    "example.invalid ",
    "[example.invalid]",
    "example..invalid",
    "example.invalid..",
    "..",
    "...",
]


@pytest.mark.parametrize("name", NUMERIC + SYNTAX)
def test_domain_names_rejected_with_0x08(name: str) -> None:
    raw = name.encode()
    data = GREETING + (connect_domain(raw) if raw else b"\x05\x01\x00\x03\x00")
    _, request, err = run(data, 1)
    assert request is None and err is not None
    assert refusal_reply(err) == failure_reply(Rep.ADDRESS_TYPE_NOT_SUPPORTED)


def test_numeric_looking() -> None:
    for name in NUMERIC[:8]:
        assert is_numeric_looking(name), name
    # The raw check alone does not see fullwidth digits; the check after IDNA does.
    for name in [
        "１２７.０.０.１",
        "..",
        "...",
        "example.invalid",
        "api.127.example",
        "0x",
        "0xg1",
    ]:
        assert not is_numeric_looking(name), name


def test_replies_are_exact() -> None:
    assert success_reply(ipaddress.IPv4Address("127.0.0.1"), 54321) == bytes.fromhex(
        "05 00 00 01 7F 00 00 01 D4 31"
    )
    v6 = success_reply(ipaddress.IPv6Address("2001:db8::1"), 443)
    assert v6[:4] == b"\x05\x00\x00\x04" and len(v6) == 22 and v6[-2:] == b"\x01\xbb"
    assert failure_reply(Rep.NOT_ALLOWED) == bytes.fromhex("05 02 00 01 00 00 00 00 00 00")


@given(st.binary(max_size=64), st.integers(1, 8))
def test_any_input_is_a_transition_or_a_clean_reject(data: bytes, step: int) -> None:
    parser = Socks5Parser()
    for i in range(0, len(data), step):
        before = parser.phase
        replies, request, err, _ = parser.feed(data[i : i + step])
        if err is not None:
            # A reject: nothing, 05 FF, or a 10-byte failure reply with a known REP.
            reply = refusal_reply(err)
            assert reply in (b"", NO_METHOD_REPLY) or (
                len(reply) == 10
                and reply[0] == 5
                and reply[1] in set(Rep)
                and reply[2:] == b"\x00\x01" + bytes(6)
            )
            return
        assert all(r == NO_AUTH_REPLY for r in replies)
        if request is not None:
            assert parser.phase is Socks5Phase.DONE
            return
        assert parser.phase is before or parser.phase is not Socks5Phase.DONE


@given(st.sampled_from(list(Socks5Phase)[:-1]), st.binary(min_size=1, max_size=20))
def test_every_state_takes_every_input(phase: Socks5Phase, data: bytes) -> None:
    """Drive the parser to ``phase`` with a valid prefix, then feed arbitrary bytes."""
    prefixes = {
        Socks5Phase.GREETING_HEADER: b"",
        Socks5Phase.GREETING_METHODS: b"\x05\x02",
        Socks5Phase.REQUEST_HEADER: GREETING,
        Socks5Phase.IPV4_ADDRESS: GREETING + b"\x05\x01\x00\x01",
        Socks5Phase.DOMAIN_LENGTH: GREETING + b"\x05\x01\x00\x03",
        Socks5Phase.DOMAIN: GREETING + b"\x05\x01\x00\x03\x05",
        Socks5Phase.IPV6_ADDRESS: GREETING + b"\x05\x01\x00\x04",
        Socks5Phase.PORT: GREETING + connect_ipv4("1.2.3.4")[:-2],
        # With --auth-file (RFC 1929):
        Socks5Phase.AUTH_HEADER: b"\x05\x01\x02",
        Socks5Phase.USER_NAME: b"\x05\x01\x02\x01\x05",
        Socks5Phase.PASSWORD_LENGTH: b"\x05\x01\x02\x01\x01a",
        Socks5Phase.PASSWORD: b"\x05\x01\x02\x01\x01a\x05",
        Socks5Phase.AUTHENTICATING: b"\x05\x01\x02\x01\x01a\x01b",
    }
    parser = Socks5Parser(auth=prefixes[phase].startswith(b"\x05\x01\x02"))
    parser.feed(prefixes[phase])
    assert parser.phase is phase
    fed = parser.feed(data)
    assert fed.error is None or fed.request is None
