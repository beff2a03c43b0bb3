"""Incremental, sans-I/O parser of an HTTP CONNECT request head (docs/original.md §6.1-6.3).

A request line whose method is not CONNECT and whose target is absolute-form
(``http://...``) is a plain HTTP request: the parser stops there and hands every byte
back (``PlainRequest``) for net/forward/session.py, which reads HTTP with llhttp (httptools).

Bytes go in through ``feed``; what comes out is a list of events. The parser never
rescans what it has already looked at, and every limit is checked as data arrives, so a
client cannot make it hold more than a line's limit of bytes.
"""

from __future__ import annotations

import functools
from enum import Enum
from typing import NamedTuple, NoReturn

from fyntr.errors import HandshakeError, Rep, Status, TargetError, bad_request
from fyntr.limits import (
    AUTHORITY_CACHE_ENTRIES,
    HEADER_LINE_MAX_BYTES,
    HEADERS_MAX_BYTES,
    HEADERS_MAX_LINES,
    REQUEST_LINE_MAX_BYTES,
)
from fyntr.wire.target import Target, parse_request_target


class ConnectPhase(Enum):
    REQUEST_LINE = "request line"
    HEADERS = "CONNECT headers"
    DONE = "done"


class TargetParsed(NamedTuple):
    """The request line was valid; the headers have not been read yet."""

    target: Target


class HeadComplete(NamedTuple):
    """The blank line was read. ``leftover`` is what the client sent after it;
    ``authorization`` its Proxy-Authorization value, if it sent one."""

    leftover: bytes
    authorization: bytes | None = None


class PlainRequest(NamedTuple):
    """An absolute-form request: everything the client sent, from its request line on."""

    data: bytes


class PacRequest(NamedTuple):
    """``GET /proxy.pac`` or ``/wpad.dat``, to fyntr itself (wire/pac.py)."""


Event = TargetParsed | HeadComplete | PlainRequest | PacRequest

_AUTHORIZATION = b"proxy-authorization:"  # the credentials for --auth-file (RFC 9110 §11.7.2)
# Where browsers and operating systems look for a proxy auto-configuration file.
PAC_PATHS = frozenset(("/proxy.pac", "/wpad.dat"))


# What other protocols' clients send first, pointed at the HTTP port by mistake: refused at
# once, where the request line would wait its 30 s for a line end that never comes.
_NOT_HTTP = {
    0x04: "a SOCKS4 request on the HTTP port (SOCKS5 has its own: --socks5-port)",
    0x05: "a SOCKS5 greeting on the HTTP port (SOCKS5 has its own: --socks5-port)",
    0x16: "a TLS handshake on the HTTP port (the proxy's address is http://, not https://)",
}


def _reject(status: Status, reason: str, detail: str) -> HandshakeError:
    return HandshakeError(status, Rep.GENERAL_FAILURE, reason, detail)


class ConnectParser:
    """One CONNECT head. Raises ``HandshakeError`` with the status to send."""

    __slots__ = ("_buf", "_header_bytes", "_header_lines", "_scan", "authorization", "phase")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scan = 0  # where to look for the next b"\n"
        self._header_bytes = 0
        self._header_lines = 0
        self.authorization: bytes | None = None
        self.phase = ConnectPhase.REQUEST_LINE

    @property
    def done(self) -> bool:
        return self.phase is ConnectPhase.DONE

    def feed(self, data: bytes) -> list[Event]:
        """Take more bytes; return what they complete. Raises ``HandshakeError``."""
        if self.done:
            raise RuntimeError("feed() after the head was complete")
        buf = self._buf
        if not buf and data and data[0] in _NOT_HTTP and self.phase is ConnectPhase.REQUEST_LINE:
            raise bad_request(_NOT_HTTP[data[0]])  # a ClientHello may hold a b"\n" anywhere
        buf += data
        events: list[Event] = []
        start = 0  # lines before this are consumed; the buffer is compacted once, at the end
        newline = buf.find(b"\n", self._scan)
        while newline >= 0:
            event = self._line(bytes(buf[start : newline + 1]))
            if isinstance(event, PlainRequest):
                self.phase = ConnectPhase.DONE
                return [PlainRequest(bytes(buf))]
            if isinstance(event, PacRequest):
                self.phase = ConnectPhase.DONE
                return [event]
            start = newline + 1
            if event is not None:
                events.append(event)
            if self.phase is ConnectPhase.DONE:
                events.append(HeadComplete(bytes(buf[start:]), self.authorization))
                buf.clear()
                return events
            newline = buf.find(b"\n", start)
        del buf[:start]
        self._scan = len(buf)
        self._check_partial(len(buf))
        return events

    def feed_eof(self) -> NoReturn:
        """The client closed its side before the head was complete: always a 400. A
        partial request line counts as complete, so that its own error, if it has one,
        is the one reported (docs/original.md §6.1)."""
        if self.phase is ConnectPhase.REQUEST_LINE and self._buf:
            line = bytes(self._buf)
            self._buf.clear()
            self._line(line)  # raises for a bad line; a good one leaves the headers open
        elif self.phase is ConnectPhase.REQUEST_LINE:
            raise bad_request("empty request line")
        raise bad_request("EOF before the end of the CONNECT headers")

    def _check_partial(self, pending: int) -> None:
        if self.phase is ConnectPhase.REQUEST_LINE:
            if pending > REQUEST_LINE_MAX_BYTES:
                raise _reject(
                    Status.URI_TOO_LONG,
                    "request_line_too_long",
                    f"request line too long (max {REQUEST_LINE_MAX_BYTES} bytes)",
                )
        else:
            self._check_header_size(pending)

    def _check_header_size(self, length: int) -> None:
        if length > HEADER_LINE_MAX_BYTES:
            raise _reject(
                Status.HEADERS_TOO_LARGE,
                "header_line_too_long",
                f"header line too long (max {HEADER_LINE_MAX_BYTES} bytes)",
            )
        if self._header_bytes + length > HEADERS_MAX_BYTES:
            raise _reject(
                Status.HEADERS_TOO_LARGE,
                "headers_too_large",
                f"headers too large (max {HEADERS_MAX_BYTES} bytes)",
            )

    def _line(self, line: bytes) -> Event | None:
        if self.phase is ConnectPhase.REQUEST_LINE:
            self._check_partial(len(line))
            target = parse_request_line(line)
            if target is None:
                return PlainRequest(line)
            if isinstance(target, PacRequest):
                return target
            self.phase = ConnectPhase.HEADERS
            return TargetParsed(target)
        self._check_header_size(len(line))
        self._header_bytes += len(line)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request("invalid encoding in CONNECT headers") from None
        if not text.strip():
            self.phase = ConnectPhase.DONE
            return None
        self._header_lines += 1
        if self._header_lines > HEADERS_MAX_LINES:
            raise _reject(
                Status.HEADERS_TOO_LARGE,
                "too_many_headers",
                f"too many headers (max {HEADERS_MAX_LINES})",
            )
        if line[: len(_AUTHORIZATION)].lower() == _AUTHORIZATION:
            if self.authorization is not None:
                raise bad_request("more than one Proxy-Authorization")
            self.authorization = line[len(_AUTHORIZATION) :].strip()
        return None


# A burst names the same few targets again and again: parsing one (IDNA, the LDH check)
# is a tenth of a set-up's Python time. Targets are immutable, so shared.
_connect_target = functools.lru_cache(maxsize=AUTHORITY_CACHE_ENTRIES)(parse_request_target)


def parse_request_line(line: bytes) -> Target | PacRequest | None:
    """Validate a request line in the original's order: tokens, version, method, target.
    None: not CONNECT, but an absolute-form ``http://`` target, to be forwarded;
    PacRequest: a GET of the proxy auto-configuration file."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("invalid encoding in request line") from None
    parts = text.split()
    if len(parts) != 3:
        raise bad_request("invalid request line")
    method, target_text, version = parts
    if not version.startswith("HTTP/1."):
        raise _reject(Status.VERSION_NOT_SUPPORTED, "bad_version", "unsupported HTTP version")
    if not (method.isascii() and method.upper() == "CONNECT"):
        if target_text[:7].lower() == "http://":
            return None
        if method == "GET" and target_text.partition("?")[0] in PAC_PATHS:
            return PacRequest()
        raise _reject(Status.METHOD_NOT_ALLOWED, "bad_method", "method is not CONNECT")
    try:
        return _connect_target(target_text)
    except TargetError as exc:
        raise bad_request(f"invalid CONNECT target: {exc}") from None
