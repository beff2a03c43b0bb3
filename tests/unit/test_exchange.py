"""One plain HTTP exchange's decisions, without sockets: which request may go, the
response as the client gets it for every framing (RFC 9112 §6.3), what becomes of both
connections after it, and which request may be sent again (RFC 9110 §9.2.2). Each test
feeds the origin's bytes through the real reader and asserts the bytes for the client
and the decisions, in order."""

from __future__ import annotations

from collections import deque

import pytest

from fyntr.errors import HandshakeError, Status
from fyntr.wire.exchange import (
    Exchange,
    Read,
    begin,
    client_kept,
    ends_with_close,
    may_resend,
    origin_kept,
    read_response,
    refuse_upgrade,
)
from fyntr.wire.http_forward import END, Event, Head, MessageReader


def request(data: bytes) -> Head:
    reader = MessageReader()
    reader.feed(data)
    head = reader.events[0]
    assert isinstance(head, Head)
    return head


def exchange(data: bytes = b"GET http://o/x?k=1 HTTP/1.1\r\nHost: o\r\n\r\n") -> Exchange:
    return begin(request(data), 0.0, 0, 0)


def origin_says(ex: Exchange, *parts: bytes) -> list[tuple[Read, bytes]]:
    """Each part as one read from the origin: what reached the client, and where the
    response stood, after each."""
    reader = MessageReader(response=True)
    reader.expect_no_body = ex.head.method == b"HEAD"
    steps = []
    for part in parts:
        events: deque[Event] = reader.events
        if part:
            reader.feed(part)
        elif ends_with_close(ex):  # b"": the origin closes, which ends such a response
            events.append(END)
        out: list[bytes] = []
        read = read_response(ex, events, out)
        steps.append((read, b"".join(out)))
    return steps


def refusal(data: bytes) -> Status:
    with pytest.raises(HandshakeError) as caught:
        ex = begin(request(data), 0.0, 0, 0)
        refuse_upgrade(ex.head)
    return caught.value.status


# --- which request may go ----------------------------------------------------------------
def test_the_request_goes_in_origin_form_with_host_from_the_target() -> None:
    ex = exchange(b"GET http://o:8080/x?k=1 HTTP/1.1\r\nHost: elsewhere\r\nAccept: */*\r\n\r\n")
    assert ex.request.startswith(b"GET /x?k=1 HTTP/1.1\r\nhost: o:8080\r\n")
    assert b"elsewhere" not in ex.request and b"accept: */*\r\n" in ex.request
    assert ex.url == "http://o:8080/x"  # never the query: it may hold keys


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"CONNECT o:443 HTTP/1.1\r\nHost: o\r\n\r\n", Status.METHOD_NOT_ALLOWED),
        (b"GET /x HTTP/1.1\r\nHost: o\r\n\r\n", Status.BAD_REQUEST),  # not absolute-form
        (b"GET http://o/ HTTP/1.1\r\n\r\n", Status.BAD_REQUEST),  # 1.1 without Host
        (b"GET http://o/ HTTP/1.1\r\nHost: o\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\n", 501),
    ],
)
def test_requests_that_cannot_go(data: bytes, status: Status) -> None:
    assert refusal(data) == status


def test_http_1_0_without_host_may_go() -> None:
    assert exchange(b"GET http://o/ HTTP/1.0\r\n\r\n").request.startswith(b"GET / HTTP/1.1\r\n")


# --- the response as the client gets it --------------------------------------------------
def test_a_length_framed_response_goes_as_it_came_and_the_connections_stay() -> None:
    ex = exchange()
    ex.request_done = True
    steps = origin_says(ex, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", b"lo")
    assert steps == [
        (Read.MORE, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nvia: 1.1 fyntr\r\n\r\nhel"),
        (Read.DONE, b"lo"),
    ]
    assert origin_kept(ex, upload_queued=False) and client_kept(ex, client_eof=False)


def test_a_chunked_response_is_chunked_again_from_its_decoded_bytes() -> None:
    ex = exchange()
    ex.request_done = True
    steps = origin_says(
        ex, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    assert steps == [
        (
            Read.DONE,
            b"HTTP/1.1 200 OK\r\nvia: 1.1 fyntr\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
        )
    ]


def test_a_close_framed_response_is_chunked_for_http_1_1_and_ends_at_the_close() -> None:
    ex = exchange()
    ex.request_done = True
    steps = origin_says(ex, b"HTTP/1.1 200 OK\r\n\r\nbody", b"")
    assert steps[0] == (
        Read.MORE,
        b"HTTP/1.1 200 OK\r\nvia: 1.1 fyntr\r\ntransfer-encoding: chunked\r\n\r\n4\r\nbody\r\n",
    )
    assert steps[1] == (Read.DONE, b"0\r\n\r\n")
    assert client_kept(ex, client_eof=False)  # re-framed: the client's connection stays
    assert not origin_kept(ex, upload_queued=False)  # the origin closed its own


def test_a_close_framed_response_goes_as_it_came_to_http_1_0_which_then_closes() -> None:
    ex = exchange(b"GET http://o/ HTTP/1.0\r\n\r\n")
    ex.request_done = True
    steps = origin_says(ex, b"HTTP/1.1 200 OK\r\n\r\nbody", b"")
    assert steps == [
        (Read.MORE, b"HTTP/1.1 200 OK\r\nvia: 1.1 fyntr\r\nconnection: close\r\n\r\nbody"),
        (Read.DONE, b""),
    ]
    assert not client_kept(ex, client_eof=False)


def test_a_1xx_goes_to_http_1_1_only_and_its_end_is_not_the_responses() -> None:
    for version, sees_100 in ((b"1.1", True), (b"1.0", False)):
        ex = exchange(b"GET http://o/ HTTP/" + version + b"\r\nHost: o\r\n\r\n")
        ex.request_done = True
        [(read, out)] = origin_says(
            ex, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
        )
        assert read is Read.DONE and ex.status == 204
        assert out.startswith(b"HTTP/1.1 100 Continue\r\n") is sees_100


def test_a_head_response_has_no_body_whatever_its_length_says() -> None:
    ex = exchange(b"HEAD http://o/ HTTP/1.1\r\nHost: o\r\n\r\n")
    ex.request_done = True
    [(read, out)] = origin_says(ex, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
    assert read is Read.DONE
    assert out == b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\nvia: 1.1 fyntr\r\n\r\n"


def test_a_101_is_the_end_of_http_on_that_connection() -> None:
    ex = exchange()
    [(read, out)] = origin_says(ex, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")
    assert (read, out) == (Read.SWITCHED, b"")


# --- after the response ------------------------------------------------------------------
def test_the_origin_connection_is_kept_only_after_a_whole_request_it_keeps_alive() -> None:
    ex = exchange()
    origin_says(ex, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert not origin_kept(ex, upload_queued=False)  # the request's body was not all read
    ex.request_done = True
    assert origin_kept(ex, upload_queued=False)
    assert not origin_kept(ex, upload_queued=True)  # bytes of it still waiting in fyntr
    closing = exchange()
    closing.request_done = True
    origin_says(closing, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    assert not origin_kept(closing, upload_queued=False)


def test_the_client_connection_ends_after_close_eof_or_an_unread_body() -> None:
    ex = exchange(b"GET http://o/ HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n")
    ex.request_done = True
    origin_says(ex, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert not client_kept(ex, client_eof=False)
    kept = exchange()
    kept.request_done = True
    origin_says(kept, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert client_kept(kept, client_eof=False)
    assert not client_kept(kept, client_eof=True)
    kept.request_done = False
    assert not client_kept(kept, client_eof=False)


# --- sending again -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "resend"),
    [
        (b"GET http://o/ HTTP/1.1\r\nHost: o\r\n\r\n", True),
        (b"DELETE http://o/ HTTP/1.1\r\nHost: o\r\n\r\n", True),
        (b"POST http://o/ HTTP/1.1\r\nHost: o\r\n\r\n", False),  # not idempotent
        (b"PUT http://o/ HTTP/1.1\r\nHost: o\r\nContent-Length: 1\r\n\r\n", False),  # a body
    ],
)
def test_only_a_whole_bodyless_idempotent_request_on_a_kept_connection_goes_again(
    data: bytes, resend: bool
) -> None:
    ex = exchange(data)
    ex.request_done = ex.reused = True
    assert may_resend(ex) is resend
    ex.retried = True
    assert not may_resend(ex)  # once


def test_no_resend_on_a_new_connection_or_after_the_response_began() -> None:
    ex = exchange()
    ex.request_done = True
    assert not may_resend(ex)  # a new connection that fails is the origin's answer
    ex.reused = True
    origin_says(ex, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart")
    assert not may_resend(ex)  # the client has bytes of the response already
