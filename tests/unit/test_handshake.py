"""Playbooks of the pure handshake (wire/handshake.py): events in, the exact commands out.

The checks are the real policy and threat guard (net/out/establish.py ``PolicyChecks``); only
the loop is absent. Every refusal path, the check order after the request, and which
deadline is armed when are asserted here, without a socket.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from fyntr.config import Settings, Timeouts
from fyntr.errors import STATUS_LINES, HandshakeError, Rep, Status, bad_gateway
from fyntr.limits import LINGER_S
from fyntr.metrics import Stats
from fyntr.net.out.threats import ThreatGuard
from fyntr.policy.auth import Credentials, Verdict
from fyntr.policy.checks import PolicyChecks
from fyntr.policy.rules import Policy
from fyntr.policy.threat import ThreatAction
from fyntr.wire.commands import (
    Arm,
    Authenticate,
    Close,
    Command,
    Connect,
    Connected,
    Data,
    Dial,
    Eof,
    Event,
    Expired,
    Failed,
    HandOn,
    Linger,
    Log,
    Pace,
    PauseReading,
    Refused,
    Resolve,
    ResumeReading,
    Send,
    StartTunnel,
    Upstream,
)
from fyntr.wire.handshake import Handshake
from fyntr.wire.handshake_http import HttpHandshake
from fyntr.wire.handshake_socks5 import Socks5Handshake
from fyntr.wire.socks5 import NO_AUTH_REPLY, NO_METHOD_REPLY, failure_reply, success_reply
from fyntr.wire.target import Target, parse_request_target
from tests.support.playbook import Like, Playbook

TIMEOUTS = Timeouts(request_line_s=5, headers_s=7, socks5_read_s=3)
CONNECT = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
GREETING = b"\x05\x01\x00"
SOCKS_REQUEST = b"\x05\x01\x00\x03\x0bexample.com\x01\xbb"
PEER = "127.0.0.1:50000"


@dataclass
class Client:
    """The requester as log lines name it."""

    flow_id: int = 7
    peer: str = PEER
    TARGET_KEY = "connect_target"


def checks(tmp_path: Path | None = None, feed: str = "", **policy: object) -> PolicyChecks:
    settings = Settings()
    if tmp_path is not None:
        path = tmp_path / "feed.txt"
        path.write_text(feed)
        settings = replace(
            settings, threat_feed_files=(str(path),), threat_action=ThreatAction.BLOCK
        )
    threats = ThreatGuard(settings, Stats())
    threats.load()
    return PolicyChecks(Policy.build(**policy), threats)  # type: ignore[arg-type]


def http(**kw: object) -> HttpHandshake:
    return HttpHandshake(Client(), checks(**kw), TIMEOUTS, verbose=False)  # type: ignore[arg-type]


def socks(**kw: object) -> Socks5Handshake:
    return Socks5Handshake(Client(), checks(**kw), TIMEOUTS, verbose=False)  # type: ignore[arg-type]


def linger_after(*commands: Command) -> list[Command]:
    return [*commands, Linger(), Arm(LINGER_S)]


def refused(reason: str, level: int, text: str, reply: bytes = b"") -> list[Command]:
    out: list[Command] = [Refused(reason), Log(level, f"flow7: {text}")]
    return out + ([Send(reply)] if reply else [])


def connect_of(commands: list[Command]) -> Upstream:
    assert commands[:2] == [Arm(math.inf), PauseReading()]
    assert isinstance(commands[2], Connect)
    return commands[2].upstream


# --- HTTP CONNECT -----------------------------------------------------------------------
def test_http_start_arms_the_request_line_deadline_then_the_headers() -> None:
    h = http()
    assert (
        Playbook(h, start=True)
        << Arm(5)
        >> Data(b"CONNECT example.com:443 HTTP/1.1\r\n")
        << Arm(7)
        >> Data(b"Host: x\r\n\r\nearly")
        << Arm(math.inf)
        << PauseReading()
        << Like(Connect)
    )
    assert h.target == parse_request_target("example.com:443")
    assert h.leftover == b"early"


def test_http_success_replies_then_starts_the_tunnel() -> None:
    h = http()
    connect_of(h.handle(Data(CONNECT + b"hello")))
    assert h.handle(Eof()) == []  # while dialing: passed on once the tunnel is up
    assert h.handle(Connected(None)) == [
        Send(STATUS_LINES[Status.OK]),
        StartTunnel(parse_request_target("example.com:443"), b"hello", True),
    ]


def test_bytes_read_while_connecting_go_on_with_the_tunnel() -> None:
    """Reading pauses at Connect; what the loop had already read is not lost."""
    h = http()
    connect_of(h.handle(Data(CONNECT + b"a")))
    assert h.handle(Data(b"b")) == []
    assert h.handle(Expired()) == []  # no deadline while connecting
    assert h.handle(Connected(None))[1] == StartTunnel(
        parse_request_target("example.com:443"), b"ab", False
    )


def test_http_verbose_logs_the_target_first() -> None:
    h = HttpHandshake(Client(), checks(), TIMEOUTS, verbose=True)  # type: ignore[arg-type]
    out = h.handle(Data(CONNECT))
    assert out[0] == Log(logging.INFO, "flow7: CONNECT example.com:443")
    connect_of(out[1:])


def test_http_bad_request_line_gets_its_status_then_lingers() -> None:
    h = http()
    assert h.handle(Data(b"GET / HTTP/1.1\r\n")) == linger_after(
        *refused(
            "bad_method",
            logging.WARNING,
            f"CONNECT from {PEER}: method is not CONNECT (405 Method Not Allowed)",
            STATUS_LINES[Status.METHOD_NOT_ALLOWED],
        )
    )
    assert h.handle(Data(b"more")) == []  # drained
    assert h.handle(Eof()) == [Close()]


def test_http_refusal_after_eof_closes_at_once() -> None:
    h = http()
    assert h.handle(Data(b"CONNECT example.com:443 HTTP/1.1\r\n")) == [Arm(7)]
    assert h.handle(Eof()) == [
        *refused(
            "bad_request",
            logging.WARNING,
            f"CONNECT example.com:443 from {PEER}: EOF before the end of the CONNECT headers "
            "(400 Bad Request)",
            STATUS_LINES[Status.BAD_REQUEST],
        ),
        Close(),
    ]


@pytest.mark.parametrize(
    ("sent", "phase", "limit"),
    [(b"", "request line", 5), (b"CONNECT example.com:443 HTTP/1.1\r\n", "CONNECT headers", 7)],
)
def test_http_deadline_gets_408_naming_the_phase(sent: bytes, phase: str, limit: int) -> None:
    h = http()
    h.handle(Data(sent))
    where = "example.com:443 " if sent else ""
    assert h.handle(Expired()) == linger_after(
        *refused(
            "timeout",
            logging.WARNING,
            f"CONNECT {where}from {PEER}: timed out reading the {phase} after {limit}s "
            "(408 Request Timeout)",
            STATUS_LINES[Status.REQUEST_TIMEOUT],
        )
    )
    assert h.handle(Expired()) == [Close()]  # the linger is over


def test_http_threat_feed_refuses_before_the_headers(tmp_path: Path) -> None:
    h = HttpHandshake(
        Client(),  # type: ignore[arg-type]
        checks(tmp_path, "||example.com^\n"),
        TIMEOUTS,
        verbose=False,
    )
    out = h.handle(Data(b"CONNECT example.com:443 HTTP/1.1\r\n"))
    assert out == linger_after(
        *refused(
            "threat_blocked",
            logging.WARNING,
            f"CONNECT example.com:443 from {PEER}: blocked by threat feed (403 Forbidden)",
            STATUS_LINES[Status.FORBIDDEN],
        )
    )


def test_http_plain_request_is_handed_on_whole() -> None:
    h = http()
    data = b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"
    assert h.handle(Data(data)) == [HandOn(data, False)]


def test_http_dial_failure_is_502_logged_as_an_error() -> None:
    h = http()
    connect_of(h.handle(Data(CONNECT)))
    assert h.handle(Failed(bad_gateway("dial_failed", "all attempts failed"))) == linger_after(
        *refused(
            "dial_failed",
            logging.ERROR,
            f"CONNECT example.com:443 from {PEER}: all attempts failed (502 Bad Gateway)",
            STATUS_LINES[Status.BAD_GATEWAY],
        )
    )


def test_http_at_capacity_503_then_linger() -> None:
    assert http().at_capacity(3) == linger_after(
        *refused(
            "max_connections",
            logging.WARNING,
            f"HTTP CONNECT connection from {PEER} rejected before parsing: "
            "max connections (3) reached",
            STATUS_LINES[Status.SERVICE_UNAVAILABLE],
        )
    )


# --- SOCKS5 -----------------------------------------------------------------------------
def test_socks5_each_field_rearms_its_deadline() -> None:
    s = socks()
    assert s.start() == [Arm(3)]
    assert s.handle(Data(b"\x05")) == []  # the same field: the same deadline
    assert s.handle(Data(b"\x01")) == [Arm(3)]
    assert s.handle(Data(b"\x00")) == [Send(NO_AUTH_REPLY), Arm(3)]
    upstream = connect_of(s.handle(Data(SOCKS_REQUEST + b"tls")))
    assert upstream.target == Target(upstream.target.host, 443)
    assert s.leftover == b"tls"
    bound = (ipaddress.ip_address("198.18.0.2"), 40000)
    assert s.handle(Connected(bound)) == [
        Send(success_reply(*bound)),
        StartTunnel(upstream.target, b"tls", False),
    ]


@pytest.mark.parametrize(
    ("data", "first", "reason", "text", "reply"),
    [
        (b"\x04\x01\x00", [], "bad_version", "not a SOCKS5 greeting", b""),
        (b"\x05\x00", [], "no_method", "greeting offers no method", NO_METHOD_REPLY),
        (
            GREETING + b"\x05\x02\x00\x01",
            [Send(NO_AUTH_REPLY)],  # the method selection the same read completed goes first
            "bad_command",
            "command 0x02 not supported (REP 0x07)",
            failure_reply(Rep.COMMAND_NOT_SUPPORTED),
        ),
        (
            GREETING + b"\x05\x01\x00\x03\x09127.0.0.1\x01\xbb",
            [Send(NO_AUTH_REPLY)],
            "bad_address",
            "numeric-looking domain names are refused (REP 0x08)",
            failure_reply(Rep.ADDRESS_TYPE_NOT_SUPPORTED),
        ),
    ],
)
def test_socks5_parse_refusals(
    data: bytes, first: list[Command], reason: str, text: str, reply: bytes
) -> None:
    assert socks().handle(Data(data)) == linger_after(
        *first, *refused(reason, logging.WARNING, f"SOCKS5 CONNECT from {PEER}: {text}", reply)
    )


def test_socks5_policy_refusal_is_rep_0x02() -> None:
    s = socks()
    s.handle(Data(GREETING))
    upstream = connect_of(s.handle(Data(b"\x05\x01\x00\x01\x7f\x00\x00\x01\x01\xbb")))
    upstream.start()
    with pytest.raises(HandshakeError) as err:
        upstream.resolved([ipaddress.ip_address("127.0.0.1")])
    assert s.handle(Failed(err.value)) == linger_after(
        *refused(
            "cidr_denied",
            logging.WARNING,
            f"SOCKS5 CONNECT 127.0.0.1:443 from {PEER}: address 127.0.0.1 is denied by "
            "127.0.0.0/8 (REP 0x02)",
            failure_reply(Rep.NOT_ALLOWED),
        )
    )


def test_socks5_eof_is_info_and_closes() -> None:
    s = socks()
    s.handle(Data(GREETING))
    assert s.handle(Eof()) == [
        *refused(
            "eof",
            logging.INFO,
            f"SOCKS5 CONNECT from {PEER}: EOF while waiting for SOCKS5 request header",
        ),
        Close(),
    ]


def test_socks5_timeout_is_an_error_with_no_reply_then_linger() -> None:
    s = socks()
    assert s.handle(Expired()) == linger_after(
        *refused(
            "timeout",
            logging.ERROR,
            f"SOCKS5 CONNECT from {PEER}: timed out waiting for SOCKS5 greeting header after 3s",
        )
    )


def test_socks5_at_capacity_closes_without_a_byte() -> None:
    assert socks().at_capacity(1) == [
        *refused(
            "max_connections",
            logging.WARNING,
            f"SOCKS5 connection from {PEER} rejected before parsing: max connections (1) reached",
        ),
        Close(),
    ]


# --- after the request: the check order (docs/original.md §6.5) ---------------------------------
def upstream_for(authority: str, *, plain: bool = False, **policy: object) -> Upstream:
    return Upstream(checks(**policy), Client(), parse_request_target(authority), plain=plain)  # type: ignore[arg-type]


def test_upstream_order_port_dns_policy_feeds_pace_dial() -> None:
    up = upstream_for("example.com:443")
    assert up.start() == Resolve(up.target.host, 443)
    addrs = [ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("198.18.0.2")]
    assert up.resolved(addrs) == Pace()
    assert up.granted() == Dial(addrs, 443)


def test_upstream_port_is_checked_before_any_lookup() -> None:
    with pytest.raises(HandshakeError) as err:
        upstream_for("example.com:22").start()
    assert (err.value.status, err.value.rep, err.value.reason) == (
        Status.FORBIDDEN,
        Rep.NOT_ALLOWED,
        "port_denied",
    )
    assert upstream_for("example.com:80", plain=True).start() == Resolve(
        parse_request_target("example.com:80").host, 80
    )


def test_upstream_one_denied_address_denies_the_request() -> None:
    up = upstream_for("example.com:443")
    up.start()
    with pytest.raises(HandshakeError) as err:
        up.resolved([ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("10.0.0.1")])
    assert err.value.reason == "cidr_denied"
    # On the allow-domain list, the denied address is dropped instead.
    up = upstream_for("example.com:443", allow_domains=("example.com",))
    up.start()
    assert (
        up.resolved([ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("10.0.0.1")])
        == Pace()
    )
    assert up.granted() == Dial([ipaddress.ip_address("198.18.0.1")], 443)


def test_upstream_feeds_judge_the_resolved_addresses(tmp_path: Path) -> None:
    up = Upstream(
        checks(tmp_path, "198.18.0.9\n"),
        Client(),  # type: ignore[arg-type]
        parse_request_target("example.com:443"),
        plain=False,
    )
    up.start()
    with pytest.raises(HandshakeError) as err:
        up.resolved([ipaddress.ip_address("198.18.0.9")])
    assert err.value.reason == "threat_blocked"


@pytest.mark.parametrize("machine", [http, socks])
def test_every_event_in_every_stage_is_taken(machine: Callable[[], Handshake]) -> None:
    """No event raises in any stage; after the end, nothing more is done."""
    events: list[Event] = [
        Data(b"x"),
        Eof(),
        Expired(),
        Connected(None),
        Failed(bad_gateway("x", "y")),
    ]
    for event in events:
        h = machine()
        h.handle(Expired())  # lingering
        h.handle(event)
        h.handle(Eof())  # done
        for late in events:
            assert h.handle(late) == []


# --- Clients outside --client-allow (policy/clients.py) --------------------------------
DENIED = "127.0.0.1:50000 may not use this proxy: only clients in 10.0.0.0/8 may (--client-allow)"


def test_a_refused_http_client_gets_a_403_naming_why_before_its_request_is_read() -> None:
    h = http()
    out = h.client_refused("10.0.0.0/8")
    assert out[:2] == [
        Refused("client_denied"),
        Log(logging.INFO, f"flow7: HTTP CONNECT connection refused: {DENIED}"),
    ]
    assert isinstance(out[2], Send) and out[2].data.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert out[2].data.endswith(f"{DENIED}\n".encode())
    assert out[3:] == [Linger(), Arm(LINGER_S)]
    assert Playbook(h) >> Data(CONNECT) >> Eof() << Close()  # drained, never dialled


def test_a_refused_socks5_client_has_its_greeting_answered_and_its_request_refused() -> None:
    s = socks()
    assert s.client_refused("10.0.0.0/8") == [Arm(3)]
    assert (
        Playbook(s)
        >> Data(GREETING)
        << Send(NO_AUTH_REPLY)
        << Arm(3)
        >> Data(SOCKS_REQUEST)
        << Refused("client_denied")
        << Log(logging.INFO, f"flow7: SOCKS5 CONNECT from {PEER}: {DENIED} (REP 0x02)")
        << Send(failure_reply(Rep.NOT_ALLOWED))
        << Linger()
        << Arm(LINGER_S)
    )


def test_the_playbook_shows_where_a_machine_went_another_way() -> None:
    with pytest.raises(AssertionError) as failed:
        assert Playbook(http(), start=True) << Arm(5) >> Data(CONNECT) << Close()
    assert "-   << Close()" in str(failed.value)
    assert "+   << Arm(seconds=inf)" in str(failed.value)


# --- --auth-file (docs/house.md, "Authentication") ---------------------------------------
ALICE = Credentials("alice", b"pw")
ALICE_BASIC = b"Proxy-Authorization: Basic YWxpY2U6cHc=\r\n"  # alice:pw


def test_http_with_auth_checks_the_credentials_before_the_host_then_connects() -> None:
    h = HttpHandshake(Client(), checks(), TIMEOUTS, verbose=False, auth=True)  # type: ignore[arg-type]
    assert (
        Playbook(h)
        >> Data(b"CONNECT example.com:443 HTTP/1.1\r\n" + ALICE_BASIC + b"\r\nearly")
        << PauseReading()
        << Authenticate(ALICE)
        >> Data(b"late")  # read before the pause took hold: goes on
        >> Verdict("alice")
        << Arm(math.inf)
        << PauseReading()
        << Like(Connect)
    )
    assert h.leftover == b"earlylate"


def test_http_with_auth_judges_the_host_only_once_authenticated(tmp_path: Path) -> None:
    h = HttpHandshake(
        Client(),  # type: ignore[arg-type]
        checks(tmp_path, "||example.com^\n"),
        TIMEOUTS,
        verbose=False,
        auth=True,
    )
    out = h.handle(Data(CONNECT.replace(b"\r\n\r\n", b"\r\n" + ALICE_BASIC + b"\r\n")))
    assert out == [PauseReading(), Authenticate(ALICE)]  # nothing said of the host yet
    assert h.handle(Verdict("alice"))[0] == Refused("threat_blocked")


@pytest.mark.parametrize(
    ("header", "reason", "level"),
    [
        (b"", "auth_missing", logging.INFO),
        (b"Proxy-Authorization: Bearer abc\r\n", "auth_malformed", logging.WARNING),
        (b"Proxy-Authorization: Basic !!\r\n", "auth_malformed", logging.WARNING),
    ],
)
def test_http_without_usable_credentials_gets_the_407_at_once(
    header: bytes, reason: str, level: int
) -> None:
    h = HttpHandshake(Client(), checks(), TIMEOUTS, verbose=False, auth=True)  # type: ignore[arg-type]
    out = h.handle(Data(b"CONNECT example.com:443 HTTP/1.1\r\n" + header + b"\r\n"))
    assert out[:2] == [Refused(reason), Like(Log)]
    assert isinstance(out[1], Log) and out[1].level == level
    assert isinstance(out[2], Send)
    assert out[2].data.startswith(b"HTTP/1.1 407 Proxy Authentication Required\r\n")
    assert b'Proxy-Authenticate: Basic realm="fyntr"' in out[2].data
    assert out[3:] == [Linger(), Arm(LINGER_S)]


def test_http_wrong_credentials_get_the_407_and_the_check_may_time_out() -> None:
    h = HttpHandshake(Client(), checks(), TIMEOUTS, verbose=False, auth=True)  # type: ignore[arg-type]
    h.handle(Data(CONNECT.replace(b"\r\n\r\n", b"\r\n" + ALICE_BASIC + b"\r\n")))
    out = h.handle(Verdict(None, "auth_failed", "wrong user name or password"))
    assert out[:2] == [Refused("auth_failed"), Like(Log)]
    assert isinstance(out[2], Send) and out[2].data.startswith(b"HTTP/1.1 407 ")
    h = HttpHandshake(Client(), checks(), TIMEOUTS, verbose=False, auth=True)  # type: ignore[arg-type]
    h.handle(Data(CONNECT.replace(b"\r\n\r\n", b"\r\n" + ALICE_BASIC + b"\r\n")))
    assert h.handle(Expired())[0] == Refused("timeout")
    assert h.handle(Verdict("alice")) == []  # too late: refused already


def test_socks5_with_auth_asks_rfc_1929_then_reads_the_request() -> None:
    s = Socks5Handshake(Client(), checks(), TIMEOUTS, verbose=False, auth=True)  # type: ignore[arg-type]
    assert (
        Playbook(s, start=True)
        << Arm(3)
        >> Data(b"\x05\x02\x00\x02")
        << Send(b"\x05\x02")
        << Arm(3)
        >> Data(b"\x01\x05alice\x02pw" + SOCKS_REQUEST[:4])  # the request begun already
        << PauseReading()
        << Authenticate(Credentials("alice", b"pw"))
        >> Data(SOCKS_REQUEST[4:])
        >> Verdict("alice")
        << Send(b"\x01\x00")
        << ResumeReading()
        << Arm(3)
        << Arm(math.inf)
        << PauseReading()
        << Like(Connect)
    )


def test_socks5_with_auth_fails_with_status_1_then_closes() -> None:
    s = Socks5Handshake(Client(), checks(), TIMEOUTS, verbose=False, auth=True)  # type: ignore[arg-type]
    s.handle(Data(b"\x05\x01\x02\x01\x05alice\x01x"))
    out = s.handle(Verdict(None, "auth_failed", "wrong user name or password"))
    assert out == [
        Send(b"\x01\x01"),
        Refused("auth_failed"),
        Like(Log),
        Linger(),
        Arm(LINGER_S),
    ]


def test_socks5_with_auth_refuses_a_greeting_without_user_password() -> None:
    s = Socks5Handshake(Client(), checks(), TIMEOUTS, verbose=False, auth=True)  # type: ignore[arg-type]
    out = s.handle(Data(GREETING))
    assert out[:1] == [Refused("auth_missing")]
    assert Send(NO_METHOD_REPLY) in out
