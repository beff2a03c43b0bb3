"""Plain HTTP forwarding, the pure part (RFC 9110 §7.6, RFC 9112): a sans-I/O message
reader and the fields a proxy removes. What is sent on (the absolute-form target, the
heads as rewritten, fyntr's own error responses) is in wire/http_rewrite.py.

Messages are read by llhttp (httptools), which is strict where a proxy must be: it
refuses both framings at once, duplicate or malformed ``Content-Length``, any
``Transfer-Encoding`` but a final chunked, obsolete line folding, bare CR or LF and
invalid chunk sizes, so a request cannot be read one way here and another way by the
origin (request smuggling). It reads a request and its response in about 5 us where
h11 takes about 200 us (benchmarks/parsers.py), which is what a proxy answering thousands
of small requests a second spends its time on.
"""

from __future__ import annotations

from collections import deque
from typing import Final, NamedTuple

import httptools

from fyntr.errors import HandshakeError, Rep, Status, bad_request
from fyntr.limits import (
    HEADERS_MAX_BYTES,
    HEADERS_MAX_LINES,
    REQUEST_LINE_MAX_BYTES,
)

# RFC 9110 §7.6.1 and §11.7.1: meaningful for one connection only, never forwarded.
# Transfer-Encoding and Content-Length are the framing: set again by what forwards.
HOP_BY_HOP: Final = frozenset(
    (
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    )
)
VIA: Final = b"1.1 fyntr"  # RFC 9110 §7.6.3: protocol version and a pseudonym
VIA_FIELD: Final = b"via: " + VIA + b"\r\n"
Headers = list[tuple[bytes, bytes]]
# The fields whose presence the reader notes while it walks a head once.
_NOTED: Final = frozenset(
    (b"transfer-encoding", b"content-length", b"host", b"upgrade", b"connection")
)
# Meant for every recipient: a sender must not list them in Connection (RFC 9110 §7.6.1).
# Were one dropped as hop-by-hop, its body would reach the next hop unframed, and a body
# shaped as a request would be read there as one (docs/plain-http.md, request smuggling).
END_TO_END_FRAMING: Final = frozenset((b"content-length", b"transfer-encoding", b"host"))


# The Connection values nearly every request that has one carries, with what they drop:
# made once instead of per request.
_USUAL_DROPS: Final = {
    value: HOP_BY_HOP | {value.lower()}
    for value in (b"close", b"Close", b"keep-alive", b"Keep-Alive")
}


class Head(NamedTuple):
    """A message head: a request's (``method``, ``target``) or a response's (``status``,
    its reason phrase in ``target``)."""

    method: bytes  # b"" for a response
    target: bytes  # the request target, or the response's reason phrase
    status: int  # 0 for a request
    headers: Headers  # names in lower case, values as received
    version: str  # "1.1" or "1.0"
    keep_alive: bool  # what the message says of its connection
    chunked: bool
    length: int | None  # Content-Length, when the body is framed by it
    has_host: bool
    upgrade: bool  # an Upgrade field
    drop: frozenset[bytes]  # not forwarded: hop-by-hop, and what Connection names


class End(NamedTuple):
    """The message is complete."""


Event = Head | bytes | End
END: Final = End()


def _too_large(reason: str, detail: str) -> HandshakeError:
    return HandshakeError(Status.HEADERS_TOO_LARGE, Rep.GENERAL_FAILURE, reason, detail)


# The fewest bytes a head holds beyond its target or reason phrase and its fields: the
# method or status code, the version, the spaces and line ends ("GET " + " HTTP/1.1\r\n"
# + the blank line).
_LINE_AND_END_BYTES: Final = 16


class MessageReader:
    """Bytes in, events out: ``Head``, body ``bytes``, ``END`` per message, in order.

    Raises HandshakeError (400, 414, 431) on what may not be forwarded. A response's
    reader must be told when the request was HEAD (``expect_no_body``): llhttp cannot be,
    and would wait for the body the head announces; the reader ends the message at its
    head instead. llhttp has no limit of its own on a head's size: the limits of the
    CONNECT head apply (limits.py).
    """

    __slots__ = (
        "_begun_in_feed",
        "_discarding",
        "_fed_known",
        "_head_bytes",
        "_head_content",
        "_headers",
        "_in_message",
        "_parser",
        "_reason",
        "_url",
        "events",
        "expect_no_body",
        "in_head",
        "response",
        "surplus",
    )

    def __init__(self, *, response: bool = False) -> None:
        self.response = response
        self.events: deque[Event] = deque()
        self.expect_no_body = False
        self._parser = self._new_parser()
        self._url = b""
        self._reason = b""
        self._headers: Headers = []
        self.in_head = False  # a message has begun and its head is not complete yet
        self._in_message = False
        # A head's size (limits.py): its parts as they complete, and the bytes it spans.
        self._head_content = 0  # request or status line and fields, as parsed
        self._head_bytes = 0  # received, once it spans a read
        self._begun_in_feed = False  # the head in progress began in the current feed
        self._fed_known = 0  # bytes of this feed that earlier messages are known to hold
        self._discarding = False  # the rest of this feed follows a bodyless response
        self.surplus = False  # bytes came after a bodyless response: out of step

    @property
    def at_rest(self) -> bool:
        """Between messages with nothing held: no event unread, no message begun, nothing
        received beyond the last message. Only such a connection may serve again."""
        return not (self.events or self._in_message or self.surplus)

    def _new_parser(self) -> httptools.HttpRequestParser | httptools.HttpResponseParser:
        if self.response:
            return httptools.HttpResponseParser(self)
        return httptools.HttpRequestParser(self)

    def feed(self, data: bytes) -> None:
        self._begun_in_feed = False
        self._fed_known = 0
        try:
            self._parser.feed_data(data)
        except HandshakeError:
            raise
        except httptools.HttpParserUpgrade:
            return  # the head is in ``events``; what follows it is not HTTP
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, HandshakeError):
                raise cause from None
            raise
        except httptools.HttpParserError as exc:
            if self._discarding:  # past a bodyless response: the rest is surplus anyway
                self.surplus = True
                return
            if self._switched():  # llhttp stops at any 101, Connection: upgrade or not
                return
            kind = "response" if self.response else "request"
            raise bad_request(f"malformed {kind}: {exc}") from None
        finally:
            self._discarding = False
        # A head still incomplete spans what this read holds beyond the messages before
        # it (the parser buffers its field in progress): never the whole read when that
        # began with other messages (pipelined requests, a body).
        if self.in_head:
            if self._begun_in_feed:
                self._head_bytes = len(data) - self._fed_known
            else:
                self._head_bytes += len(data)
            if self._head_bytes > REQUEST_LINE_MAX_BYTES + HEADERS_MAX_BYTES:
                raise _too_large("headers_too_large", "message head too large")

    def _switched(self) -> bool:
        """The last response read is a 101: what follows it is not HTTP."""
        heads = (event for event in reversed(self.events) if isinstance(event, Head))
        last = next(heads, None)
        return self.response and last is not None and last.status == 101

    def restart(self) -> None:
        """A response reader after a bodyless (HEAD) response: forget its announced body.
        Whatever else the current feed holds is surplus."""
        self._parser = self._new_parser()
        self.in_head = self._in_message = False
        self._discarding = True

    # --- llhttp's callbacks -----------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._discarding:
            self.surplus = True
            return
        self._url = self._reason = b""
        self._headers = []
        self.in_head = self._in_message = self._begun_in_feed = True
        self._head_bytes = 0
        self._head_content = _LINE_AND_END_BYTES

    def on_url(self, url: bytes) -> None:
        self._head_content += len(url)
        self._url += url
        if len(self._url) > REQUEST_LINE_MAX_BYTES:
            raise HandshakeError(
                Status.URI_TOO_LONG,
                Rep.GENERAL_FAILURE,
                "request_line_too_long",
                f"request target too long (max {REQUEST_LINE_MAX_BYTES} bytes)",
            )

    def on_status(self, reason: bytes) -> None:
        if self._discarding:
            return
        self._head_content += len(reason)
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._discarding:
            return
        self._head_content += len(name) + len(value) + 4  # ": " and CRLF
        self._headers.append((name.lower(), value))
        if len(self._headers) > HEADERS_MAX_LINES:
            raise _too_large("too_many_headers", f"too many headers (max {HEADERS_MAX_LINES})")

    def on_headers_complete(self) -> None:
        if self._discarding:
            return
        self.in_head = False
        if self._head_content > REQUEST_LINE_MAX_BYTES + HEADERS_MAX_BYTES:
            raise _too_large("headers_too_large", "message head too large")
        self._fed_known += self._head_content
        parser = self._parser
        chunked = has_host = upgrade = False
        length = None
        drop = HOP_BY_HOP
        for name, value in self._headers:
            if name in _NOTED:
                if name == b"transfer-encoding":
                    chunked = True
                elif name == b"content-length":
                    length = int(value)
                elif name == b"host":
                    has_host = True
                elif name == b"upgrade":
                    upgrade = True
                elif drop is HOP_BY_HOP and value in _USUAL_DROPS:  # Connection: close
                    drop = _USUAL_DROPS[value]
                else:  # Connection (RFC 9110 §7.6.1): the fields it names are hop-by-hop
                    named = {token.strip().lower() for token in value.split(b",")}
                    if not named.isdisjoint(END_TO_END_FRAMING):
                        raise bad_request(
                            "Connection names Content-Length, Transfer-Encoding or Host"
                            " (RFC 9110 §7.6.1)"
                        )
                    if not named <= drop:
                        drop = drop.union(named)
        if isinstance(parser, httptools.HttpResponseParser):
            method, target, status = b"", self._reason, parser.get_status_code()
        else:
            method, target, status = parser.get_method(), self._url, 0
        self.events.append(
            Head(
                method,
                target,
                status,
                self._headers,
                parser.get_http_version(),
                parser.should_keep_alive(),
                chunked,
                length,
                has_host,
                upgrade,
                drop,
            )
        )
        if self.expect_no_body and status >= 200:
            self.events.append(END)
            self.restart()

    def on_body(self, body: bytes) -> None:
        if self._discarding:  # a body on a HEAD response: never forwarded
            self.surplus = True
        else:
            self._fed_known += len(body)
            self.events.append(body)

    def on_message_complete(self) -> None:
        if not self._discarding:  # a HEAD response's END went with its head
            self._in_message = False
            self.events.append(END)
