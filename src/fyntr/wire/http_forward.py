"""Plain HTTP forwarding, the pure part (RFC 9110 §7.6, RFC 9112): what a request head
may hold, the absolute-form target, and the fields a proxy removes, rewrites and adds.

h11 frames the messages; it is lenient where a proxy must not be (it unfolds obsolete
line folding, takes bare LF line ends and merges equal duplicate ``Content-Length``
fields), and a proxy that reads a head differently from the origin behind it lets a
request be smuggled past it. So every request head is checked here, on its raw bytes,
before h11 parses it.
"""

from __future__ import annotations

from typing import Final

from fyntr.errors import HandshakeError, Rep, Status, TargetError, bad_request
from fyntr.limits import HTTP_DEFAULT_PORT
from fyntr.wire.target import Target, parse_request_target

# RFC 9110 §7.6.1 and §11.7.1: meaningful for one connection only, never forwarded.
# Transfer-Encoding too: h11 frames what it sends itself.
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
Headers = list[tuple[bytes, bytes]]


def head_end(buf: bytes | bytearray) -> int:
    """Where the head in ``buf`` ends (after its blank line), or -1 if it has not yet.
    A blank line of a bare LF counts, so that check_head sees and refuses it."""
    ends = [i for i in (buf.find(b"\n\r\n"), buf.find(b"\n\n")) if i >= 0]
    if not ends:
        return -1
    first = min(ends)
    return first + (3 if buf[first + 1 : first + 2] == b"\r" else 2)


def _not_implemented(detail: str) -> HandshakeError:
    return HandshakeError(Status.NOT_IMPLEMENTED, Rep.GENERAL_FAILURE, "not_implemented", detail)


def check_head(head: bytes) -> None:
    """Refuse a request head that two parsers could read differently (RFC 9112 §2.2,
    §5.2, §6.1, §6.3; the CL.TE, TE.CL and TE.TE families of request smuggling)."""
    lines = head.split(b"\n")
    if lines[-1] != b"" or any(not line.endswith(b"\r") for line in lines[:-1]):
        raise bad_request("bare LF in the request head (CRLF is required)")
    if any(b"\r" in line[:-1] for line in lines[:-1]):
        raise bad_request("bare CR in the request head")
    lengths: list[bytes] = []
    codings: list[bytes] = []
    for line in lines[1:-2]:
        if line[:1] in (b" ", b"\t"):
            raise bad_request("obsolete line folding in the request head")
        name, colon, value = line[:-1].partition(b":")
        if not colon or not name or name != name.strip():
            raise bad_request("malformed header field")
        name = name.lower()
        if name == b"content-length":
            lengths.append(value.strip(b" \t"))
        elif name == b"transfer-encoding":
            codings += [c.strip(b" \t").lower() for c in value.split(b",")]
    if len(lengths) > 1:
        raise bad_request("more than one Content-Length field")
    if lengths and not (lengths[0].isdigit() and len(lengths[0]) <= 18):
        raise bad_request("malformed Content-Length")
    if codings:
        if lengths:
            raise bad_request("both Transfer-Encoding and Content-Length")
        if codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
            raise bad_request("Transfer-Encoding does not end with one chunked")
        if len(codings) > 1:
            raise _not_implemented("transfer codings other than chunked are not supported")


def parse_absolute_form(target: bytes) -> tuple[Target, bytes]:
    """``http://host[:port]/path?query`` -> the target and the origin-form to send
    (RFC 9112 §3.2.2, §3.3). Raises HandshakeError 400."""
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        raise bad_request("non-ASCII request target") from None
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() != "http":
        raise bad_request("only http:// URLs are forwarded; https goes through CONNECT")
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:].partition("#")[0]
    if "@" in authority:
        raise bad_request("user information in the request target")
    _host, colon, port = authority.rpartition(":")
    if not colon or not port or authority.endswith("]"):  # no port: 80 (RFC 9110 §4.2.1)
        authority = authority.removesuffix(":") + f":{HTTP_DEFAULT_PORT}"
    try:
        parsed = parse_request_target(authority)
    except TargetError as exc:
        raise bad_request(f"invalid request target: {exc}") from None
    if not path.startswith("/"):
        path = "/" + path
    return parsed, path.encode("ascii")


def host_field(target: Target) -> bytes:
    """The Host field for the origin (RFC 9110 §7.2): the port only when not 80."""
    host = target.host.raw
    host = f"[{host}]" if ":" in host else host
    if target.port != HTTP_DEFAULT_PORT:
        host = f"{host}:{target.port}"
    return host.encode("ascii")


def forwardable(headers: Headers) -> Headers:
    """The end-to-end fields (RFC 9110 §7.6.1): hop-by-hop ones, and every field that
    Connection names, dropped; a Via added (§7.6.3)."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name == b"connection"
        for token in value.split(b",")
    }
    out = [(n, v) for n, v in headers if n not in HOP_BY_HOP and n not in named]
    out.append((b"via", VIA))
    return out


def request_fields(headers: Headers, target: Target) -> Headers:
    """What goes upstream: end-to-end fields, Host from the target, the body's framing
    (h11 lowercases field names; a chunked request stays chunked)."""
    out = [(n, v) for n, v in forwardable(headers) if n != b"host"]
    out.insert(0, (b"host", host_field(target)))
    if any(n == b"transfer-encoding" for n, _ in headers):
        out.append((b"transfer-encoding", b"chunked"))
    return out


def response_fields(headers: Headers) -> Headers:
    """What goes to the client: end-to-end fields; h11 reframes the body (chunked for
    an HTTP/1.1 client when the origin closed to end it, RFC 9112 §6.3) and adds
    ``Connection: close`` itself when it must. Both framings at once: chunked wins and
    Content-Length goes (RFC 9112 §6.3)."""
    chunked = any(n == b"transfer-encoding" for n, _ in headers)
    out = [(n, v) for n, v in forwardable(headers) if not (chunked and n == b"content-length")]
    if chunked:
        out.append((b"transfer-encoding", b"chunked"))
    return out


def error_response(status: Status, reason: str, detail: str) -> bytes:
    """A complete response fyntr answers itself; the connection closes after it."""
    body = f"{detail}\n".encode()
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
        b"Connection: close\r\nVia: %s\r\n\r\n%s" % (status, reason.encode(), len(body), VIA, body)
    )
