"""Playbooks of the plain HTTP machine (wire/plain_http.py): events in, the exact commands
out, for each framing and close rule (RFC 9112 §6, §9.3; RFC 9110 §9.2.2), the refusals,
a parent proxy and --auth-file. Heads and bodies come from the real message readers."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from fyntr.errors import bad_gateway, bad_request, forbidden
from fyntr.policy.auth import Credentials, Verdict
from fyntr.wire.commands import Arm, Authenticate, Log, Refused, Requester
from fyntr.wire.ends import BOTH_CLOSED
from fyntr.wire.http_forward import END, Event, Head, MessageReader
from fyntr.wire.http_rewrite import LAST_CHUNK, chunk
from fyntr.wire.parent import parse_parent
from fyntr.wire.plain_commands import (
    Abort,
    Body,
    ClientEof,
    ClientError,
    Finish,
    HeadTimeout,
    OriginEof,
    OriginFailed,
    Own,
    Reach,
    Reached,
    Release,
    Request,
    RequestEnd,
    Response,
    Served,
    Shutdown,
    ToClient,
    ToOrigin,
    Unreached,
)
from fyntr.wire.plain_http import PlainHttp
from fyntr.wire.target import Target
from tests.support.playbook import Like, Playbook

URL = b"http://example.com/a?k=secret"
GET = b"GET " + URL + b" HTTP/1.1\r\nHost: example.com\r\n\r\n"
UPSTREAM_GET = b"GET /a?k=secret HTTP/1.1\r\nhost: example.com\r\nvia: 1.1 fyntr\r\n\r\n"
OK5 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
CLIENT_OK5 = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nvia: 1.1 fyntr\r\n\r\n"


@dataclass
class Client:
    flow_id: int = 3
    peer: str = "127.0.0.1:40000"
    TARGET_KEY: ClassVar[str] = "http_target"


class Feeds:
    """The threat feeds: ``blocked`` hosts refused."""

    def __init__(self, *blocked: str) -> None:
        self.blocked = blocked

    def check_host(self, who: Requester, target: Target) -> None:
        if target.host.raw in self.blocked:
            raise forbidden("threat_blocked", "blocked by threat feed")


class Users:
    generation: object = 1


class ServedAs:
    """A ``Served`` command with this status, whatever its exchange."""

    def __init__(self, status: int) -> None:
        self.status = status

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Served) and other.status == self.status

    def __hash__(self) -> int:
        return self.status

    def __repr__(self) -> str:
        return f"Served(..., status={self.status})"


def machine(*blocked: str, users: Any = None) -> PlainHttp:
    return PlainHttp(Client(), Feeds(*blocked), debug=False, users=users)


def heads(raw: bytes) -> list[Event]:
    reader = MessageReader()
    reader.feed(raw)
    return list(reader.events)


def request(raw: bytes = GET) -> Request:
    head = heads(raw)[0]
    assert isinstance(head, Head)
    return Request(head, 0.0, 0, 0)


def response(raw: bytes, *, queued: bool = False, head_request: bool = False) -> Response:
    reader = MessageReader(response=True)
    reader.expect_no_body = head_request
    reader.feed(raw)
    return Response(reader.events, queued)


def started(m: PlainHttp, raw: bytes = GET) -> Playbook:
    """A request sent on a new origin connection, its body complete."""
    return (
        Playbook(m)
        >> request(raw)
        << Like(Reach)
        >> RequestEnd()
        >> Reached(False, None)
        << Like(ToOrigin)
    )


# --- one exchange -----------------------------------------------------------------------
def test_a_get_reaches_its_origin_sends_the_rewritten_head_and_keeps_both_ends() -> None:
    m = machine()
    out = m.handle(request())
    assert len(out) == 1 and isinstance(out[0], Reach)
    assert out[0].dest.authority == "example.com:80" and not out[0].no_body
    assert m.handle(RequestEnd()) == []
    assert m.handle(Reached(False, None)) == [ToOrigin(UPSTREAM_GET)]
    assert m.handle(response(OK5)) == [
        ToClient(CLIENT_OK5 + b"hello"),
        ServedAs(200),
        Release(keep=True),
    ]
    assert m.exchange is None and m.target == "example.com:80"


def test_a_response_in_pieces_goes_on_as_it_comes() -> None:
    m = machine()
    assert started(m)
    assert m.handle(response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel")) == [
        ToClient(CLIENT_OK5 + b"hel")
    ]
    rest: deque[Event] = deque([b"lo", END])
    assert m.handle(Response(rest, False)) == [
        ToClient(b"lo"),
        ServedAs(200),
        Release(keep=True),
    ]


@pytest.mark.parametrize(
    ("client", "origin", "origin_kept", "client_kept"),
    [
        (b"HTTP/1.1", b"", True, True),
        (b"HTTP/1.0", b"", True, False),  # RFC 9112 §9.3: 1.0 closes unless keep-alive
        (b"HTTP/1.1", b"Connection: close\r\n", False, True),
    ],
)
def test_what_becomes_of_both_connections(
    client: bytes, origin: bytes, origin_kept: bool, client_kept: bool
) -> None:
    m = machine()
    raw = b"GET " + URL + b" " + client + b"\r\nHost: example.com\r\n\r\n"
    assert started(m, raw)
    out = m.handle(response(b"HTTP/1.1 200 OK\r\n" + origin + b"Content-Length: 0\r\n\r\n"))
    assert out[1:3] == [ServedAs(200), Release(keep=origin_kept)]
    assert (Finish(BOTH_CLOSED) in out) is not client_kept


def test_a_request_whose_body_is_not_all_sent_does_not_keep_its_origin() -> None:
    m = machine()
    assert started(m)
    out = m.handle(response(OK5, queued=True))
    assert out[2] == Release(keep=False)  # a body left unsent would be a next request


def test_a_body_the_origin_ends_by_closing_goes_chunked_to_a_1_1_client() -> None:
    """RFC 9112 §6.3 item 8: read until the close; the client gets it chunked, so its
    own connection stays open."""
    m = machine()
    assert started(m)
    out = m.handle(response(b"HTTP/1.1 200 OK\r\n\r\nsome"))
    assert out == [
        ToClient(
            b"HTTP/1.1 200 OK\r\nvia: 1.1 fyntr\r\ntransfer-encoding: chunked\r\n\r\n4\r\nsome\r\n"
        )
    ]
    assert m.handle(OriginEof(False)) == [ToClient(LAST_CHUNK), ServedAs(200), Release(keep=False)]


def test_an_origin_eof_within_a_framed_body_is_not_its_end() -> None:
    m = machine()
    assert started(m)
    m.handle(response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhel"))
    assert m.handle(OriginEof(False)) == []  # the loss that follows fails it


def test_a_head_request_expects_no_body() -> None:
    m = machine()
    out = m.handle(request(b"HEAD " + URL + b" HTTP/1.1\r\nHost: example.com\r\n\r\n"))
    assert isinstance(out[0], Reach) and out[0].no_body


def test_a_chunked_upload_is_chunked_again_and_ended() -> None:
    m = machine()
    raw = b"POST " + URL + b" HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
    m.handle(request(raw))
    m.handle(Reached(False, None))
    assert m.handle(Body(b"abc")) == [ToOrigin(chunk(b"abc"))]
    assert m.handle(RequestEnd()) == [ToOrigin(LAST_CHUNK)]  # trailers are not forwarded


@pytest.mark.parametrize(("version", "forwarded"), [(b"HTTP/1.1", True), (b"HTTP/1.0", False)])
def test_a_1xx_goes_to_a_1_1_client_only(version: bytes, forwarded: bool) -> None:
    m = machine()
    assert started(m, b"GET " + URL + b" " + version + b"\r\nHost: example.com\r\n\r\n")
    out = m.handle(response(b"HTTP/1.1 100 Continue\r\n\r\n"))
    assert (out != []) is forwarded
    assert m.exchange is not None  # the final response is still to come


def test_a_switch_of_protocols_fails_the_exchange() -> None:
    m = machine()
    assert started(m)
    out = m.handle(response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"))
    assert out[0] == Refused("upstream_error")
    assert ServedAs(502) in out and Release(keep=False) in out and Finish("upstream_error") in out


# --- failures and resending (RFC 9110 §9.2.2) -----------------------------------------
def test_a_kept_connection_that_fails_before_any_response_is_replaced_once() -> None:
    m = machine()
    m.handle(request())
    m.handle(RequestEnd())
    m.handle(Reached(True, None))  # from the pool
    out = m.handle(OriginFailed("the origin closed the connection (EOF)"))
    assert out[:2] == [Like(Log), Release(keep=False)]
    assert isinstance(out[2], Reach) and out[2].fresh
    assert m.handle(Reached(False, None)) == [ToOrigin(UPSTREAM_GET)]
    out = m.handle(OriginFailed("the origin closed the connection (EOF)"))
    assert out[0] == Refused("upstream_error")  # not twice
    assert ServedAs(502) in out


@pytest.mark.parametrize(
    ("raw", "reused", "why"),
    [
        (b"POST " + URL + b" HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n", True,
         "not idempotent"),
        (GET, False, "a new connection: the origin refused this request"),
    ],
)  # fmt: skip
def test_no_resend_for_what_may_not_be_sent_again(raw: bytes, reused: bool, why: str) -> None:
    m = machine()
    m.handle(request(raw))
    m.handle(RequestEnd())
    m.handle(Reached(reused, None))
    out = m.handle(OriginFailed("reset"))
    assert out[0] == Refused("upstream_error"), why


def test_a_failure_mid_response_aborts_both() -> None:
    m = machine()
    assert started(m)
    m.handle(response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhel"))
    out = m.handle(OriginFailed("reset"))
    assert out == [Release(keep=False), Like(Log), Abort("upstream_error")]


def test_an_unreachable_origin_is_refused_with_its_status() -> None:
    m = machine()
    m.handle(request())
    out = m.handle(Unreached(bad_gateway("dial_failed", "connection refused")))
    assert out[0] == Refused("dial_failed")
    assert isinstance(out[2], ToClient) and out[2].data.startswith(b"HTTP/1.1 502 Bad Gateway")
    assert out[3:] == [ServedAs(502), Release(keep=False), Finish("dial_failed")]


# --- the client's side ------------------------------------------------------------------
def test_client_eof() -> None:
    m = machine()
    assert m.handle(ClientEof(pending=True)) == []  # a pipelined request is answered first
    assert machine().handle(ClientEof(pending=False)) == [Finish("client_closed")]
    m = machine()
    m.handle(request(b"POST " + URL + b" HTTP/1.1\r\nHost: e\r\nContent-Length: 9\r\n\r\n"))
    assert m.handle(ClientEof(pending=False)) == [Abort("client_closed")]  # mid-request
    m = machine()
    assert started(m)
    assert m.handle(ClientEof(pending=False)) == []  # the response still goes out ...
    out = m.handle(response(OK5))
    assert out[-1] == Finish(BOTH_CLOSED)  # ... then the connection closes


def test_a_client_error_is_answered_unless_a_response_has_begun() -> None:
    err = bad_request("malformed request")
    out = machine().handle(ClientError(err))
    assert out[0] == Refused("bad_request") and out[-1] == Finish("bad_request")
    m = machine()
    assert started(m)
    m.handle(response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhel"))
    assert m.handle(ClientError(err)) == [Abort("client_protocol_error")]


def test_a_slow_head_gets_a_408_unless_it_waits_behind_a_response() -> None:
    out = machine().handle(HeadTimeout(30.0))
    assert out[0] == Refused("timeout")
    assert isinstance(out[2], ToClient) and out[2].data.startswith(b"HTTP/1.1 408 ")
    m = machine()
    assert started(m)
    assert m.handle(HeadTimeout(30.0)) == [Arm(30.0)]


def test_shutdown_closes_between_requests_or_after_the_response() -> None:
    assert machine().handle(Shutdown()) == [Finish("shutdown")]
    m = machine()
    assert started(m)
    assert m.handle(Shutdown()) == []
    assert m.handle(response(OK5))[-1] == Finish(BOTH_CLOSED)


@pytest.mark.parametrize(
    ("raw", "reason", "status"),
    [
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n", "bad_method", 405),
        (b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n", "bad_request", 400),
        (b"GET " + URL + b" HTTP/1.1\r\n\r\n", "bad_request", 400),  # no Host (§3.2)
    ],
)
def test_what_is_not_a_forwardable_request_is_refused_before_any_dial(
    raw: bytes, reason: str, status: int
) -> None:
    out = machine().handle(request(raw))
    assert out[0] == Refused(reason)
    assert isinstance(out[2], ToClient) and out[2].data.startswith(b"HTTP/1.1 %d " % status)
    assert not any(isinstance(c, Reach) for c in out)


def test_a_blocked_host_and_an_upgrade_are_refused_after_the_request_is_named() -> None:
    out = machine("example.com").handle(request())
    assert out[:1] == [Refused("threat_blocked")] and ServedAs(403) in out
    raw = b"GET " + URL + b" HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\r\n"
    out = machine().handle(request(raw))
    assert out[:1] == [Refused("not_implemented")] and ServedAs(501) in out


def test_debug_logs_the_request_as_it_begins_without_its_query() -> None:
    m = PlainHttp(Client(), Feeds(), debug=True)
    out = m.handle(request())
    assert out[0] == Log(logging.DEBUG, "flow3: GET http://example.com:80/a")


# --- a parent proxy ---------------------------------------------------------------------
def test_an_http_parent_gets_the_absolute_form_and_its_own_credentials() -> None:
    parent = parse_parent("http://user:pw@proxy.example:3128")
    m = machine()
    m.handle(request())
    (sent,) = m.handle(Reached(False, parent))
    assert isinstance(sent, ToOrigin)
    assert sent.data.startswith(b"GET http://example.com/a?k=secret HTTP/1.1\r\n")
    assert b"proxy-authorization: Basic dXNlcjpwdw==\r\n" in sent.data
    out = m.handle(response(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"))
    assert out[0] == Refused("parent_refused")  # the parent's challenge is not the client's


# --- --auth-file ------------------------------------------------------------------------
BASIC = b"Proxy-Authorization: Basic YWxpY2U6cHc=\r\n"  # alice:pw


def with_credentials(value: bytes = BASIC) -> Request:
    return request(b"GET " + URL + b" HTTP/1.1\r\nHost: example.com\r\n" + value + b"\r\n")


def test_credentials_are_checked_once_per_value_and_the_user_owns_the_connection() -> None:
    users = Users()
    m = machine(users=users)
    assert (
        Playbook(m)
        >> with_credentials()
        << Authenticate(Credentials("alice", b"pw"))
        >> Verdict("alice")
        << Own("alice")
        << Like(Reach)
    )
    m.exchange = None
    assert [type(c) for c in m.handle(with_credentials())] == [Reach]  # not looked up again
    m.exchange = None
    users.generation = 2  # the file was read again
    assert m.handle(with_credentials()) == [Authenticate(Credentials("alice", b"pw"))]


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (request(), "auth_missing"),
        (with_credentials(b"Proxy-Authorization: Bearer x\r\n"), "auth_malformed"),
        (with_credentials(BASIC + BASIC), "bad_request"),
    ],
)
def test_requests_without_usable_credentials_are_refused(event: Request, reason: str) -> None:
    out = machine(users=Users()).handle(event)
    assert out[0] == Refused(reason)
    assert not any(isinstance(c, Reach) for c in out)


def test_a_wrong_password_is_a_407_with_its_challenge() -> None:
    m = machine(users=Users())
    m.handle(with_credentials())
    out = m.handle(Verdict(None, "auth_failed", "wrong user name or password"))
    assert out[0] == Refused("auth_failed")
    assert isinstance(out[2], ToClient)
    assert b'Proxy-Authenticate: Basic realm="fyntr"' in out[2].data
    assert out[-1] == Finish("auth_failed")
