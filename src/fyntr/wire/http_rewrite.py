"""What plain HTTP forwarding sends on (RFC 9110 §7.6, RFC 9112): the absolute-form
target split into where to connect and the origin-form path, the request head for the
origin and the response head for the client (end-to-end fields, Via, the framing each
side speaks), chunk framing, and fyntr's own error responses."""

from __future__ import annotations

import functools
import re
from typing import Final, NamedTuple

from fyntr.errors import Status, TargetError, bad_request
from fyntr.limits import AUTHORITY_CACHE_ENTRIES, HTTP_DEFAULT_PORT
from fyntr.wire.http_forward import HOP_BY_HOP, VIA, VIA_FIELD, Head
from fyntr.wire.target import Target, parse_request_target

_AFTER_SCHEME: Final = re.compile(rb"([^/?#]*)([^#]*)")  # authority, then path and query


class Destination(NamedTuple):
    """Where an absolute-form request goes."""

    target: Target
    authority: str  # host:port, as logs name it; the key of the origin pool
    host: bytes  # the Host field for the origin


def parse_absolute_form(target: bytes) -> tuple[Destination, bytes]:
    """``http://host[:port]/path?query`` -> the destination and the origin-form to send
    (RFC 9112 §3.2.2, §3.3). Raises HandshakeError 400."""
    if not target.isascii():
        raise bad_request("non-ASCII request target")
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() != b"http":
        raise bad_request("only http:// URLs are forwarded; https goes through CONNECT")
    split = _AFTER_SCHEME.match(rest)
    assert split is not None  # both parts may be empty
    authority, path = split.groups()
    return _destination(authority), path if path.startswith(b"/") else b"/" + path


# Keep-alive clients name the same few hosts request after request: parsing one (IDNA,
# the LDH check) cost 10 us of a 120 us request. Destinations are immutable, so shared.
@functools.lru_cache(maxsize=AUTHORITY_CACHE_ENTRIES)
def _destination(raw: bytes) -> Destination:
    authority = raw.decode("ascii")
    if "@" in authority:
        raise bad_request("user information in the request target")
    _host, colon, port = authority.rpartition(":")
    if not colon or not port or authority.endswith("]"):  # no port: 80 (RFC 9110 §4.2.1)
        authority = authority.removesuffix(":") + f":{HTTP_DEFAULT_PORT}"
    try:
        target = parse_request_target(authority)
    except TargetError as exc:
        raise bad_request(f"invalid request target: {exc}") from None
    return Destination(target, target.authority, host_field(target))


def host_field(target: Target) -> bytes:
    """The Host field for the origin (RFC 9110 §7.2): the port only when not 80."""
    host = target.host.raw
    host = f"[{host}]" if ":" in host else host
    if target.port != HTTP_DEFAULT_PORT:
        host = f"{host}:{target.port}"
    return host.encode("ascii")


def _end_to_end(out: list[bytes], head: Head, drop: frozenset[bytes]) -> None:
    """Appends the fields to forward (RFC 9110 §7.6.1), then Via (§7.6.3)."""
    for name, value in head.headers:
        if name not in drop:
            out += (name, b": ", value, b"\r\n")
    out.append(VIA_FIELD)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK: Final = b"0\r\n\r\n"


class Framing(NamedTuple):
    """How a body goes on: as received (``chunked`` False), or chunked again from the
    decoded bytes; and whether the connection it goes on closes after it."""

    chunked: bool
    close: bool


def request_head(
    head: Head, dest: Destination, path: bytes, authorization: bytes = b""
) -> tuple[bytes, Framing]:
    """The request for the origin, always HTTP/1.1, origin-form (RFC 9112 §3.2.1), Host
    from the target; a chunked request stays chunked. For a parent proxy, ``path`` is
    the absolute form and ``authorization`` its Proxy-Authorization line."""
    out = [head.method, b" ", path, b" HTTP/1.1\r\nhost: ", dest.host, b"\r\n"]
    _end_to_end(out, head, _HOP_AND_HOST if head.drop is HOP_BY_HOP else head.drop | _HOST)
    if head.chunked:
        out.append(b"transfer-encoding: chunked\r\n")
    out += (authorization, b"\r\n")
    return b"".join(out), Framing(head.chunked, close=False)


_HOST: Final = frozenset((b"host",))
_HOP_AND_HOST: Final = HOP_BY_HOP | _HOST


def has_no_body(request: Head, status: int) -> bool:
    """RFC 9110 §6.4.1: responses to HEAD, and 1xx, 204 and 304, never have a body."""
    return request.method == b"HEAD" or status < 200 or status in (204, 304)


def response_head(response: Head, request: Head) -> tuple[bytes, Framing]:
    """The response for the client: end-to-end fields, framed for what the client
    speaks (RFC 9112 §6.3). A body the origin ended by closing, or chunked, goes to an
    HTTP/1.1 client chunked, so its connection stays open; to an HTTP/1.0 client as it
    comes, ended by closing. Both framings at once never reach here: llhttp refuses them
    (the client gets a 502)."""
    out = [b"HTTP/1.1 %d %s\r\n" % (response.status, response.target)]
    _end_to_end(out, response, response.drop)
    no_body = has_no_body(request, response.status)
    informational = response.status < 200
    close = not informational and (not request.keep_alive or request.version != "1.1")
    rechunk = False
    if not no_body and response.length is None:
        if request.version == "1.1":
            rechunk = True
            out.append(b"transfer-encoding: chunked\r\n")
        else:
            close = True
    if close:
        out.append(b"connection: close\r\n")
    out.append(b"\r\n")
    return b"".join(out), Framing(rechunk, close)


# RFC 9110 §11.7.1: a 407 carries the challenge the client is to answer (RFC 7617).
CHALLENGE: Final = b'Proxy-Authenticate: Basic realm="fyntr", charset="UTF-8"\r\n'


def error_response(status: Status, reason: str, detail: str) -> bytes:
    """A complete response fyntr answers itself; the connection closes after it."""
    body = f"{detail}\n".encode()
    challenge = CHALLENGE if status is Status.PROXY_AUTH_REQUIRED else b""
    return (
        b"HTTP/1.1 %d %s\r\n%sContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
        b"Connection: close\r\nVia: %s\r\n\r\n%s"
        % (status, reason.encode(), challenge, len(body), VIA, body)
    )
