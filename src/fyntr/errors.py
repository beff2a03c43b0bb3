"""One exception tree. Each handshake error carries the reply it puts on the wire."""

from __future__ import annotations

import logging
from enum import IntEnum


class Status(IntEnum):
    """HTTP status codes fyntr sends (docs/original.md §6.6). Nothing else is ever sent."""

    OK = 200
    BAD_REQUEST = 400
    FORBIDDEN = 403
    METHOD_NOT_ALLOWED = 405
    PROXY_AUTH_REQUIRED = 407  # --auth-file (docs/house.md)
    REQUEST_TIMEOUT = 408
    URI_TOO_LONG = 414
    HEADERS_TOO_LARGE = 431
    NOT_IMPLEMENTED = 501  # plain HTTP only: Upgrade
    BAD_GATEWAY = 502
    SERVICE_UNAVAILABLE = 503
    VERSION_NOT_SUPPORTED = 505


# Every reason phrase fyntr sends, on the proxy port and the metrics port (RFC 9110 §15;
# 414 as RFC 9110 names it, which http.HTTPStatus of Python 3.11 does not).
REASON_PHRASES: dict[int, str] = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

# The bare status lines of the CONNECT port (docs/original.md §6.6): a 200 there is
# "Connection Established".
STATUS_LINES: dict[Status, bytes] = {
    status: b"HTTP/1.1 %d %s\r\n\r\n"
    % (
        status,
        b"Connection Established" if status is Status.OK else REASON_PHRASES[status].encode(),
    )
    for status in Status
}


class Rep(IntEnum):
    """SOCKS5 reply codes (RFC 1928 §6) that fyntr uses (docs/original.md §7.2)."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08
    # Not a REP: the method-selection reply's X'FF' (RFC 1928 §3), the answer to a
    # greeting that offers no acceptable method.
    NO_ACCEPTABLE_METHODS = 0xFF


class FyntrError(Exception):
    """Base of every error fyntr raises on purpose."""


class ConfigError(FyntrError):
    """A setting that cannot be used; fatal at start-up (exit 1)."""


class TargetError(FyntrError):
    """A host or target that does not parse. Never echoes the raw input."""


class HandshakeError(FyntrError):
    """A refused handshake, and the reply each protocol sends for it: an HTTP status and
    a SOCKS5 REP (None: the SOCKS5 client is sent nothing).

    ``reason`` is a short machine-friendly word for logs and metrics labels; ``detail``
    is the human text for the log line (never raw client input).
    """

    def __init__(self, status: Status, rep: Rep | None, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.rep = rep
        self.reason = reason
        self.detail = detail


def log_level(err: HandshakeError) -> int:
    """A refusal's log level: ERROR when the upstream failed; INFO for a request without
    credentials (a browser asks without first, and answers the 407) and for one refused
    unchecked while its address waits out its back-off (a guesser's flood: the failures
    that earned the wait were logged); else WARNING."""
    if err.status is Status.BAD_GATEWAY:
        return logging.ERROR
    return logging.INFO if err.reason in ("auth_missing", "auth_backoff") else logging.WARNING


def bad_request(detail: str) -> HandshakeError:
    return HandshakeError(Status.BAD_REQUEST, Rep.ADDRESS_TYPE_NOT_SUPPORTED, "bad_request", detail)


def forbidden(reason: str, detail: str) -> HandshakeError:
    return HandshakeError(Status.FORBIDDEN, Rep.NOT_ALLOWED, reason, detail)


def auth_required(reason: str, detail: str) -> HandshakeError:
    """407 (RFC 9110 §15.5.8) with its challenge; SOCKS5 answers RFC 1929's failure."""
    return HandshakeError(Status.PROXY_AUTH_REQUIRED, None, reason, detail)


def bad_gateway(reason: str, detail: str, rep: Rep = Rep.HOST_UNREACHABLE) -> HandshakeError:
    return HandshakeError(Status.BAD_GATEWAY, rep, reason, detail)


def timed_out(detail: str, rep: Rep | None = Rep.GENERAL_FAILURE) -> HandshakeError:
    """408: what was being read did not come in time (SOCKS5 sends no reply then)."""
    return HandshakeError(Status.REQUEST_TIMEOUT, rep, "timeout", detail)


def unavailable(reason: str, detail: str) -> HandshakeError:
    return HandshakeError(Status.SERVICE_UNAVAILABLE, Rep.GENERAL_FAILURE, reason, detail)
