"""One plain HTTP exchange, the pure part (docs/plain-http.md): which request may be
forwarded, how the origin's response goes to the client, what becomes of both
connections after it, and when a request may be sent again. net/forward/session.py
performs these decisions on the sockets; tests/unit/test_exchange.py asserts them
without any.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Final

from fyntr.errors import HandshakeError, Rep, Status, bad_request
from fyntr.wire.http_forward import Event, Head
from fyntr.wire.http_rewrite import (
    LAST_CHUNK,
    Destination,
    Framing,
    chunk,
    parse_absolute_form,
    request_head,
    response_head,
)
from fyntr.wire.parent import Parent

NO_FRAMING: Final = Framing(chunked=False, close=False)  # until the response head is read
# RFC 9110 §9.2.2: a request sent on a kept connection the origin was closing is sent
# again on a new one only if it is one of these and has no body.
IDEMPOTENT: Final = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))


@dataclass(eq=False, slots=True)
class Exchange:
    """One request and its response."""

    head: Head  # the client's request
    dest: Destination
    path: bytes  # origin-form, as sent upstream
    request: bytes  # the head as sent upstream, kept to send it again (IDEMPOTENT)
    upload: Framing
    started: float
    up_mark: int
    down_mark: int
    request_done: bool = False  # the client's request has been read to its end
    response: Head | None = None  # the origin's final response head
    download: Framing = NO_FRAMING
    informational: bool = False  # inside a 1xx response
    reused: bool = False  # sent on a connection that had served before
    head_end: int = 0  # up.nbytes once the head was pushed: it has left fyntr at that count
    retried: bool = False

    @property
    def status(self) -> int | None:
        return None if self.response is None else self.response.status

    @property
    def url(self) -> str:
        """For the log: scheme, authority and path, never the query (it may hold keys)."""
        return f"http://{self.dest.authority}{self.path.partition(b'?')[0].decode()}"

    @property
    def bodyless(self) -> bool:
        return not self.head.chunked and not self.head.length


def begin(head: Head, started: float, up_mark: int, down_mark: int) -> Exchange:
    """The exchange a request head opens, or HandshakeError: a CONNECT after plain HTTP
    (405), a target that is not absolute-form http (400), HTTP/1.1 without Host (400,
    RFC 9112 §3.2), Upgrade (501: WebSocket goes through CONNECT)."""
    if head.method == b"CONNECT":
        raise HandshakeError(
            Status.METHOD_NOT_ALLOWED,
            Rep.GENERAL_FAILURE,
            "bad_method",
            "CONNECT after a plain HTTP request on one connection",
        )
    dest, path = parse_absolute_form(head.target)
    if head.version == "1.1" and not head.has_host:
        raise bad_request("HTTP/1.1 request without Host (RFC 9112 §3.2)")
    request, upload = request_head(head, dest, path)
    return Exchange(head, dest, path, request, upload, started, up_mark, down_mark)


def parent_head(ex: Exchange, parent: Parent) -> bytes:
    """The request for an HTTP parent proxy: absolute form (RFC 9112 §3.2.2), with the
    parent's credentials; the client's own Proxy-Authorization never goes on."""
    path = b"http://" + ex.dest.host + ex.path
    return request_head(ex.head, ex.dest, path, parent.authorization)[0]


def asks_credentials(events: deque[Event]) -> bool:
    """A parent proxy's answer begins with 407: its challenge is fyntr's, not the
    client's (docs/parent-proxies.md)."""
    return bool(events) and isinstance(events[0], Head) and events[0].status == 407


def authorization_of(head: Head) -> bytes | None:
    """--auth-file: the request's Proxy-Authorization value, or a 400 for two of them.
    The field never goes on (HOP_BY_HOP)."""
    values = [value for name, value in head.headers if name == b"proxy-authorization"]
    if len(values) > 1:
        raise bad_request("more than one Proxy-Authorization")
    return values[0] if values else None


def refuse_upgrade(head: Head) -> None:
    """Upgrade (WebSocket) has no way through plain HTTP here: 501, said after the
    request is logged with its URL."""
    if head.upgrade:
        raise HandshakeError(
            Status.NOT_IMPLEMENTED,
            Rep.GENERAL_FAILURE,
            "not_implemented",
            "Upgrade (WebSocket) over plain HTTP is not supported; use wss:// (CONNECT)",
        )


class Read(Enum):
    """Where a response stands after the origin's events were read."""

    MORE = "more"  # the response goes on
    DONE = "done"  # complete: the exchange is over
    SWITCHED = "switched"  # a 101: the origin left HTTP, which a forward proxy cannot follow


def read_response(ex: Exchange, events: deque[Event], out: list[bytes]) -> Read:
    """Takes the origin's events in order, appending what goes to the client to ``out``
    (RFC 9112 §6.3 framing, via response_head): a 1xx goes to an HTTP/1.1 client only,
    and its END is not the response's; a body is chunked again when the client gets it
    chunked. Stops at the response's end, leaving what follows in ``events``."""
    while events:
        event = events.popleft()
        if isinstance(event, bytes):
            out.append(chunk(event) if ex.download.chunked else event)
        elif isinstance(event, Head):
            if event.status == 101:
                return Read.SWITCHED
            head, framing = response_head(event, ex.head)
            if event.status < 200:
                ex.informational = True  # its END follows; an HTTP/1.0 client gets none
                if ex.head.version == "1.1":
                    out.append(head)
                continue
            ex.response, ex.download = event, framing
            out.append(head)
        elif ex.informational:
            ex.informational = False
        else:
            if ex.download.chunked:
                out.append(LAST_CHUNK)
            return Read.DONE
    return Read.MORE


def ends_with_close(ex: Exchange) -> bool:
    """The origin's close is the end of a response framed by nothing else (RFC 9112
    §6.3 item 8): a response head read, with neither a length nor chunked."""
    response = ex.response
    return response is not None and response.length is None and not response.chunked


def origin_kept(ex: Exchange, upload_queued: bool) -> bool:
    """After a complete response, whether its origin connection may serve again (the
    pool still checks that it is at rest): the origin keeps it alive, and the request
    went out whole (a body left unsent would be read as the next request)."""
    assert ex.response is not None
    return ex.response.keep_alive and ex.request_done and not upload_queued


def client_kept(ex: Exchange, client_eof: bool) -> bool:
    """After a complete response, whether the client's connection carries another
    request: not HTTP/1.0 or Connection: close, the client still sending, and its
    request read to the end (an unread body is not skipped)."""
    return not (ex.download.close or client_eof or not ex.request_done)


def may_resend(ex: Exchange) -> bool:
    """A kept connection failed before any of the response came: the request may go
    once more on a new connection if it was complete, bodyless and idempotent (RFC
    9110 §9.2.2), and had not been sent again already."""
    return (
        ex.status is None
        and ex.reused
        and not ex.retried
        and ex.bodyless
        and ex.request_done
        and ex.head.method in IDEMPOTENT
    )
