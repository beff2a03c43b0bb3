"""SOCKS5 (RFC 1928) CONNECT handshake as a pure state machine (docs/original.md §7): no
authentication, or with --auth-file user name and password (RFC 1929) only.

``feed`` takes bytes and returns the replies to send and, at the end, the request.
Every field is acted on as soon as it is complete, so a bad field is answered before the
rest of the request is read, as the original does. A refusal is a ``HandshakeError`` like any
other; ``refusal_reply`` renders it, as every SOCKS5 refusal is rendered.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from fyntr.errors import HandshakeError, Rep, Status, TargetError
from fyntr.wire.target import Host, canonical_ip, parse_domain_target

VERSION = 0x05
METHOD_NO_AUTH = 0x00
METHOD_USER_PASSWORD = 0x02  # RFC 1929
USER_PASSWORD_VERSION = 0x01
METHOD_NONE_ACCEPTABLE = 0xFF
CMD_CONNECT = 0x01
ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04

NO_AUTH_REPLY = bytes([VERSION, METHOD_NO_AUTH])
NO_METHOD_REPLY = bytes([VERSION, METHOD_NONE_ACCEPTABLE])
USER_PASSWORD_REPLY = bytes([VERSION, METHOD_USER_PASSWORD])
AUTH_PASSED_REPLY = bytes([USER_PASSWORD_VERSION, 0x00])  # RFC 1929 §2: STATUS 0 is success
AUTH_FAILED_REPLY = bytes([USER_PASSWORD_VERSION, 0x01])  # anything else fails; then close


def failure_reply(rep: Rep) -> bytes:
    """Always 10 bytes: VER REP RSV ATYP=IPv4 0.0.0.0:0."""
    return bytes([VERSION, rep, 0x00, ATYP_IPV4, 0, 0, 0, 0, 0, 0])


def success_reply(bound: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bytes:
    """VER 00 RSV ATYP BND.ADDR BND.PORT: the local address of the upstream socket."""
    atyp = ATYP_IPV4 if bound.version == 4 else ATYP_IPV6
    return bytes([VERSION, Rep.SUCCEEDED, 0x00, atyp]) + bound.packed + port.to_bytes(2, "big")


def refusal_reply(err: HandshakeError) -> bytes:
    """What a SOCKS5 client is sent for any refusal: nothing when it is not one (a bad
    greeting, a timeout, EOF), ``05 FF`` when no offered method is acceptable, else the
    10-byte failure with the error's REP."""
    if err.rep is None:
        return b""
    if err.rep is Rep.NO_ACCEPTABLE_METHODS:
        return NO_METHOD_REPLY
    return failure_reply(err.rep)


def _fail(rep: Rep | None, reason: str, detail: str) -> HandshakeError:
    # The HTTP status is never sent on a SOCKS5 port; 400 names the kind in /status.
    return HandshakeError(Status.BAD_REQUEST, rep, reason, detail)


def _is_number(part: str) -> bool:
    if part[:2] in ("0x", "0X"):
        digits = part[2:]
        return bool(digits) and all(c in "0123456789abcdefABCDEF" for c in digits)
    return bool(part) and part.isascii() and part.isdigit()


def is_numeric_looking(name: str) -> bool:
    """Legacy IPv4 spellings that resolvers read as addresses (docs/original.md §7.3)."""
    text = name.removesuffix(".")
    if not text:
        return False
    if _is_number(text):
        return True
    return "." in text and all(_is_number(part) for part in text.split("."))


class Socks5Phase(Enum):
    GREETING_HEADER = "greeting header"
    GREETING_METHODS = "greeting methods"
    AUTH_HEADER = "user/password version and user name length"
    USER_NAME = "user name"
    PASSWORD_LENGTH = "password length"  # noqa: S105  (a phase's name)
    PASSWORD = "password"  # noqa: S105  (a phase's name)
    AUTHENTICATING = "credentials check"  # the bytes that come meanwhile are held
    REQUEST_HEADER = "request header"
    IPV4_ADDRESS = "IPv4 address"
    DOMAIN_LENGTH = "domain length"
    DOMAIN = "domain"
    IPV6_ADDRESS = "IPv6 address"
    PORT = "port"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Request:
    host: Host
    port: int
    leftover: bytes  # what the client sent after the request: forwarded (docs/differences.md)


class Fed(NamedTuple):
    """What one read completed: replies to send first, then the request or a refusal."""

    replies: list[bytes]
    request: Request | None = None
    error: HandshakeError | None = None
    credentials: tuple[bytes, bytes] | None = None  # RFC 1929's user name and password


class Socks5Parser:
    """Greeting, method selection, with ``auth`` the user name and password (RFC 1929),
    then one CONNECT request."""

    __slots__ = ("_buf", "_host", "_need", "_password", "_user", "auth", "phase")

    def __init__(self, *, auth: bool = False) -> None:
        self._buf = bytearray()
        self.phase = Socks5Phase.GREETING_HEADER
        self._need = 2
        self._host: Host | None = None
        self.auth = auth
        self._user = b""
        self._password: bytes | None = None  # read, not yet handed out

    def feed(self, data: bytes) -> Fed:
        """Replies to send now, and the request once complete or the refusal. The method
        selection that the same read completed goes out before a refusal."""
        if self.phase is Socks5Phase.DONE:
            raise RuntimeError("feed() after the request was complete")
        self._buf += data
        replies: list[bytes] = []
        while len(self._buf) >= self._need and self.phase is not Socks5Phase.AUTHENTICATING:
            field = bytes(self._buf[: self._need])
            del self._buf[: self._need]
            try:
                reply, request = self._field(field)
            except HandshakeError as err:
                return Fed(replies, error=err)
            if reply:
                replies.append(reply)
            if request is not None:
                return Fed(replies, request)
            if self._password is not None:
                credentials = (self._user, self._password)
                self._user, self._password = b"", None
                return Fed(replies, credentials=credentials)
        return Fed(replies)

    def hold(self, data: bytes) -> None:
        """While the credentials are checked: kept for after."""
        self._buf += data

    def authenticated(self) -> None:
        """The credentials passed: the request comes next (``feed(b"")`` reads what is
        held)."""
        self._expect(Socks5Phase.REQUEST_HEADER, 4)

    def _expect(self, phase: Socks5Phase, need: int) -> None:
        self.phase = phase
        self._need = need

    def _field(self, field: bytes) -> tuple[bytes, Request | None]:
        phase = self.phase
        if phase is Socks5Phase.GREETING_HEADER:
            if field[0] != VERSION:
                raise _fail(None, "bad_version", "not a SOCKS5 greeting")
            if field[1] == 0:
                raise _fail(Rep.NO_ACCEPTABLE_METHODS, "no_method", "greeting offers no method")
            self._expect(Socks5Phase.GREETING_METHODS, field[1])
        elif phase is Socks5Phase.GREETING_METHODS:
            if self.auth:
                if METHOD_USER_PASSWORD not in field:
                    raise _fail(
                        Rep.NO_ACCEPTABLE_METHODS,
                        "auth_missing",
                        "greeting does not offer user name and password (RFC 1929), which "
                        "this proxy requires",
                    )
                self._expect(Socks5Phase.AUTH_HEADER, 2)
                return USER_PASSWORD_REPLY, None
            if METHOD_NO_AUTH not in field:
                raise _fail(
                    Rep.NO_ACCEPTABLE_METHODS,
                    "no_method",
                    "greeting does not offer no-authentication",
                )
            self._expect(Socks5Phase.REQUEST_HEADER, 4)
            return NO_AUTH_REPLY, None
        elif phase is Socks5Phase.AUTH_HEADER:
            if field[0] != USER_PASSWORD_VERSION:
                raise _fail(None, "bad_version", "not an RFC 1929 user name and password")
            self._expect(Socks5Phase.USER_NAME, field[1])
        elif phase is Socks5Phase.USER_NAME:
            self._user = field
            self._expect(Socks5Phase.PASSWORD_LENGTH, 1)
        elif phase is Socks5Phase.PASSWORD_LENGTH:
            self._expect(Socks5Phase.PASSWORD, field[0])
        elif phase is Socks5Phase.PASSWORD:
            self._password = field
            self._expect(Socks5Phase.AUTHENTICATING, 0)
        elif phase is Socks5Phase.REQUEST_HEADER:
            self._request_header(field)
        elif phase is Socks5Phase.IPV4_ADDRESS:
            ip4 = ipaddress.IPv4Address(field)
            self._host = Host(raw=str(ip4), ip=ip4, domain=None)
            self._expect(Socks5Phase.PORT, 2)
        elif phase is Socks5Phase.IPV6_ADDRESS:
            ip6 = ipaddress.IPv6Address(field)
            mapped = ip6.ipv4_mapped  # shown as ::ffff:a.b.c.d, as RFC 4291 §2.2 writes it
            raw = f"::ffff:{mapped}" if mapped is not None else str(ip6)
            self._host = Host(raw=raw, ip=canonical_ip(ip6), domain=None)
            self._expect(Socks5Phase.PORT, 2)
        elif phase is Socks5Phase.DOMAIN_LENGTH:
            if field[0] == 0:
                raise _fail(Rep.ADDRESS_TYPE_NOT_SUPPORTED, "bad_address", "empty domain name")
            self._expect(Socks5Phase.DOMAIN, field[0])
        elif phase is Socks5Phase.DOMAIN:
            self._host = parse_socks_domain(field)
            self._expect(Socks5Phase.PORT, 2)
        elif phase is Socks5Phase.PORT:
            assert self._host is not None
            self.phase = Socks5Phase.DONE
            leftover = bytes(self._buf)
            self._buf.clear()
            return b"", Request(self._host, int.from_bytes(field, "big"), leftover)
        return b"", None

    def _request_header(self, field: bytes) -> None:
        ver, cmd, rsv, atyp = field
        if ver != VERSION:
            raise _fail(Rep.GENERAL_FAILURE, "bad_version", "request version is not 5")
        if cmd != CMD_CONNECT:
            raise _fail(
                Rep.COMMAND_NOT_SUPPORTED, "bad_command", f"command {cmd:#04x} not supported"
            )
        if rsv != 0:
            raise _fail(Rep.GENERAL_FAILURE, "bad_request", "reserved byte is not zero")
        if atyp == ATYP_IPV4:
            self._expect(Socks5Phase.IPV4_ADDRESS, 4)
        elif atyp == ATYP_IPV6:
            self._expect(Socks5Phase.IPV6_ADDRESS, 16)
        elif atyp == ATYP_DOMAIN:
            self._expect(Socks5Phase.DOMAIN_LENGTH, 1)
        else:
            raise _fail(Rep.ADDRESS_TYPE_NOT_SUPPORTED, "bad_address", f"address type {atyp:#04x}")


def parse_socks_domain(raw: bytes) -> Host:
    """DOMAINNAME: UTF-8, not numeric-looking (before or after IDNA), strict syntax."""
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(
            Rep.ADDRESS_TYPE_NOT_SUPPORTED, "bad_address", "domain name is not UTF-8"
        ) from None
    numeric = _fail(
        Rep.ADDRESS_TYPE_NOT_SUPPORTED, "bad_address", "numeric-looking domain names are refused"
    )
    if is_numeric_looking(name):
        raise numeric
    try:
        host = parse_domain_target(name)
    except TargetError as exc:
        raise _fail(
            Rep.ADDRESS_TYPE_NOT_SUPPORTED, "bad_address", f"invalid domain name: {exc}"
        ) from None
    if is_numeric_looking(host.dns_name):
        raise numeric
    return host
