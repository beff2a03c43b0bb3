"""The pure part of plain HTTP forwarding: head checks, targets, fields."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fyntr.errors import HandshakeError, Status
from fyntr.wire.http_forward import END, Head, MessageReader
from fyntr.wire.http_rewrite import parse_absolute_form, request_head, response_head


def status_of(head: bytes) -> Status | None:
    try:
        MessageReader().feed(head)
    except HandshakeError as err:
        return err.status
    return None


def read(data: bytes, *, response: bool = False, head_request: bool = False) -> list[object]:
    reader = MessageReader(response=response)
    reader.expect_no_body = head_request
    reader.feed(data)
    return list(reader.events)


def test_valid_heads_pass() -> None:
    assert status_of(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n") is None
    assert status_of(b"POST http://a/ HTTP/1.1\r\nContent-Length: 3\r\n\r\n") is None
    assert status_of(b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n") is None


# Field-name case, optional whitespace and order vary; what makes each a smuggling vector
# does not.
names = st.sampled_from(["Content-Length", "content-length", "CONTENT-LENGTH", "Content-length"])
te_names = st.sampled_from(["Transfer-Encoding", "transfer-encoding", "TRANSFER-ENCODING"])
ows = st.sampled_from(["", " ", "\t"])


def head(*fields: str) -> bytes:
    return ("POST http://a/ HTTP/1.1\r\nHost: a\r\n" + "".join(fields) + "\r\n").encode()


@given(names, te_names, ows, st.booleans())
def test_cl_te_both_refused(cl: str, te: str, a: str, te_first: bool) -> None:
    fields = [f"{cl}:{a}5\r\n", f"{te}:{a}chunked\r\n"]
    assert status_of(head(*(fields[::-1] if te_first else fields))) == Status.BAD_REQUEST


@given(names, names, st.integers(0, 10**6), ows)
def test_double_content_length_refused(one: str, two: str, n: int, a: str) -> None:
    assert status_of(head(f"{one}:{a}{n}\r\n", f"{two}: {n}\r\n")) == Status.BAD_REQUEST


@given(te_names, st.sampled_from(["xchunked", "chunked, identity", "identity", "chunked, chunked"]))
def test_te_te_variants_refused(te: str, value: str) -> None:
    assert status_of(head(f"{te}: {value}\r\n")) == Status.BAD_REQUEST


@given(st.sampled_from([" ", "\t", "  "]), st.text("abc", min_size=1, max_size=5))
def test_obs_fold_refused(lead: str, text: str) -> None:
    assert status_of(head(f"X-A: 1\r\n{lead}{text}\r\n")) == Status.BAD_REQUEST


@given(st.integers(0, 2))
def test_bare_lf_refused(where: int) -> None:
    lines = ["POST http://a/ HTTP/1.1", "Host: a", "X-A: 1", ""]
    text = "".join(line + ("\n" if i == where else "\r\n") for i, line in enumerate(lines))
    assert status_of(text.encode()) == Status.BAD_REQUEST


def test_malformed_fields_refused() -> None:
    assert status_of(head("Content-Length: 3, 3\r\n")) == Status.BAD_REQUEST
    assert status_of(head("Content-Length: -1\r\n")) == Status.BAD_REQUEST
    assert status_of(head("Transfer-Encoding : chunked\r\n")) == Status.BAD_REQUEST
    assert status_of(head("no colon here\r\n")) == Status.BAD_REQUEST


@given(
    st.sampled_from(["Content-Length", "content-length", "Transfer-Encoding", "Host", "HOST"]),
    st.sampled_from(["{}", "close, {}", "{} , keep-alive", " {}"]),
)
def test_connection_naming_a_framing_field_refused(name: str, spelling: str) -> None:
    """RFC 9110 §7.6.1: a field meant for every recipient is never a connection option;
    dropped as one, the body would reach the origin unframed (docs/plain-http.md)."""
    connection = f"Connection: {spelling.format(name)}\r\n"
    assert status_of(head(connection, "Content-Length: 5\r\n")) == Status.BAD_REQUEST
    response = f"HTTP/1.1 200 OK\r\n{connection}Content-Length: 5\r\n\r\nhello".encode()
    with pytest.raises(HandshakeError) as caught:
        read(response, response=True)
    assert caught.value.status == Status.BAD_REQUEST


def test_connection_naming_other_fields_is_fine() -> None:
    assert status_of(head("Connection: TE, keep-alive, X-Private\r\n", "TE: trailers\r\n")) is None


def test_at_rest_only_between_messages_with_nothing_beyond() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    reader = MessageReader(response=True)
    reader.feed(ok[:10])
    assert not reader.at_rest  # a head begun
    reader.feed(ok[10:])
    reader.events.clear()
    assert reader.at_rest
    reader.feed(b"HTTP/1.1 200 OK\r\nX-P: ")  # the start of a response nobody asked for
    assert not reader.events and not reader.at_rest


@pytest.mark.parametrize("rest", [b"", b"x", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"])
def test_bytes_after_a_head_response_are_surplus(rest: bytes) -> None:
    reader = MessageReader(response=True)
    reader.expect_no_body = True
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n" + rest)
    assert [type(e) for e in reader.events] == [Head, type(END)]
    reader.events.clear()
    assert reader.at_rest is (rest == b"")


def test_a_read_that_ends_in_the_next_head_counts_only_that_head() -> None:
    """700 pipelined GETs and 20 bytes of the next, or a 100 KB body and 30 bytes of
    the next head, in one read: no 431 (the read is larger than a head's limit)."""
    get = b"GET http://a/ HTTP/1.1\r\nHost: a\r\nUser-Agent: " + b"u" * 60 + b"\r\n\r\n"
    reader = MessageReader()
    reader.feed(get * 700 + get[:20])
    reader.feed(get[20:])
    assert sum(isinstance(e, Head) for e in reader.events) == 701
    body = b"b" * 100_000
    reader = MessageReader()
    reader.feed(b"POST http://a/ HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + body + get[:30])
    assert b"".join(e for e in reader.events if isinstance(e, bytes)) == body


def test_head_limits() -> None:
    assert status_of(b"GET http://a/" + b"x" * 9000 + b" HTTP/1.1\r\n\r\n") == Status.URI_TOO_LONG
    many = "".join(f"X-{i}: 1\r\n" for i in range(101))
    assert status_of(head(many)) == Status.HEADERS_TOO_LARGE
    endless = b"GET http://a/ HTTP/1.1\r\nX: " + b"a" * 50_000
    assert status_of(endless) == Status.HEADERS_TOO_LARGE
    # The same after a complete request in the same read, and spread over reads.
    assert status_of(b"GET http://a/ HTTP/1.1\r\n\r\n" + endless) == Status.HEADERS_TOO_LARGE
    reader = MessageReader()
    with pytest.raises(HandshakeError) as caught:
        for i in range(0, len(endless), 1000):
            reader.feed(endless[i : i + 1000])
    assert caught.value.status == Status.HEADERS_TOO_LARGE


PIPELINE = (
    b"POST http://a/1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    b"POST http://a/2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    b"GET http://a/3 HTTP/1.0\r\n\r\n"
)


def summary(events: list[object]) -> list[object]:
    """Heads as (method, target, version, keep-alive); bodies joined per message."""
    out: list[object] = []
    body = b""
    for e in events:
        if isinstance(e, Head):
            out.append((e.method, e.target, e.version, e.keep_alive))
        elif isinstance(e, bytes):
            body += e
        else:
            out.append(body)
            body = b""
    return out


@given(st.lists(st.integers(0, len(PIPELINE)), max_size=10))
def test_every_split_reads_the_same(cuts: list[int]) -> None:
    reader = MessageReader()
    last = 0
    for cut in [*sorted(cuts), len(PIPELINE)]:
        reader.feed(PIPELINE[last:cut])
        last = max(last, cut)
    assert summary(list(reader.events)) == [
        (b"POST", b"http://a/1", "1.1", True),
        b"hello",
        (b"POST", b"http://a/2", "1.1", True),
        b"abcde",
        (b"GET", b"http://a/3", "1.0", False),
        b"",
    ]


def test_response_to_head_ends_at_its_head() -> None:
    events = read(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", response=True, head_request=True
    )
    assert isinstance(events[0], Head) and events[0].length == 100
    assert events[1:] == [END]


def test_informational_then_final_response() -> None:
    events = read(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", response=True)
    assert [e.status if isinstance(e, Head) else e for e in events] == [100, END, 204, END]


def request(data: bytes) -> Head:
    first = read(data)[0]
    assert isinstance(first, Head)
    return first


def response(data: bytes) -> Head:
    first = read(data, response=True)[0]
    assert isinstance(first, Head)
    return first


def test_response_framing_for_the_client() -> None:
    get11 = request(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")
    get10 = request(b"GET http://a/ HTTP/1.0\r\n\r\n")
    head11 = request(b"HEAD http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")
    by_close = response(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    chunked = response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    sized = response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nKeep-Alive: 5\r\n\r\n")
    # Ended by the origin's close, to an HTTP/1.1 client: chunked, the connection stays.
    out, framing = response_head(by_close, get11)
    assert framing == (True, False) and b"transfer-encoding: chunked\r\n" in out
    assert b"connection" not in out
    # To an HTTP/1.0 client: as it comes, then close.
    out, framing = response_head(chunked, get10)
    assert framing == (False, True) and b"transfer-encoding" not in out
    assert b"connection: close\r\n" in out
    # Sized: as it is, hop-by-hop fields gone, Via added.
    out, framing = response_head(sized, get11)
    assert out == b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nvia: 1.1 fyntr\r\n\r\n"
    assert framing == (False, False)
    # No body for HEAD, whatever the head announces.
    assert response_head(chunked, head11)[1] == (False, False)


def test_request_for_the_origin_is_origin_form_http11() -> None:
    client = request(b"GET http://b.example:8080/p?q HTTP/1.0\r\nProxy-Connection: x\r\n\r\n")
    out, framing = request_head(client, *parse_absolute_form(client.target))
    assert out == b"GET /p?q HTTP/1.1\r\nhost: b.example:8080\r\nvia: 1.1 fyntr\r\n\r\n"
    assert framing == (False, False)


@pytest.mark.parametrize(
    ("url", "authority", "path"),
    [
        (b"http://example.com/a?b=1#frag", "example.com:80", b"/a?b=1"),
        (b"HTTP://Example.com:8080", "Example.com:8080", b"/"),
        (b"http://example.com:/x", "example.com:80", b"/x"),
        (b"http://[2001:db8::1]/", "[2001:db8::1]:80", b"/"),
        (b"http://[2001:db8::1]:81?q", "[2001:db8::1]:81", b"/?q"),
        (b"http://198.18.0.1:80/p", "198.18.0.1:80", b"/p"),
    ],
)
def test_absolute_form(url: bytes, authority: str, path: bytes) -> None:
    dest, origin_form = parse_absolute_form(url)
    assert (dest.authority, origin_form) == (authority, path)
    assert dest.authority == dest.target.authority


@pytest.mark.parametrize(
    "url",
    [
        b"https://example.com/",
        b"ftp://x/",
        b"http://user:pw@example.com/",
        b"http:///x",
        b"http://exa mple.com/",
        b"http://example.com:99999/",
        "http://\u00e9/".encode(),
    ],
)
def test_absolute_form_refused(url: bytes) -> None:
    with pytest.raises(HandshakeError) as err:
        parse_absolute_form(url)
    assert err.value.status is Status.BAD_REQUEST


def test_host_field_omits_port_80() -> None:
    assert parse_absolute_form(b"http://a.example/")[0].host == b"a.example"
    assert parse_absolute_form(b"http://a.example:81/")[0].host == b"a.example:81"
    assert parse_absolute_form(b"http://[2001:db8::1]/")[0].host == b"[2001:db8::1]"


def test_fields_named_by_connection_are_dropped() -> None:
    client = request(
        b"GET http://a.example/ HTTP/1.1\r\n"
        b"Host: a.example\r\n"
        b"Connection: keep-alive, X-Hop\r\n"
        b"X-Hop: 1\r\n"
        b"X-End: 2\r\n"
        b"Upgrade: h2c\r\n"
        b"TE: trailers\r\n"
        b"Trailer: x\r\n"
        b"Keep-Alive: 5\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"Proxy-Authorization: Basic eA==\r\n\r\n"
    )
    out, _ = request_head(client, *parse_absolute_form(client.target))
    assert out == b"GET / HTTP/1.1\r\nhost: a.example\r\nx-end: 2\r\nvia: 1.1 fyntr\r\n\r\n"
    origin = response(b"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nX-End: 2\r\n\r\n")
    out, _ = response_head(origin, client)
    assert out.startswith(b"HTTP/1.1 200 OK\r\nx-end: 2\r\nvia: 1.1 fyntr\r\n")


def test_request_host_from_target_and_chunked_kept() -> None:
    client = request(
        b"POST http://b.example:8080/ HTTP/1.1\r\nHost: evil.example\r\n"
        b"Transfer-Encoding: chunked\r\nX: 1\r\n\r\n"
    )
    out, framing = request_head(client, *parse_absolute_form(client.target))
    assert out == (
        b"POST / HTTP/1.1\r\nhost: b.example:8080\r\nx: 1\r\nvia: 1.1 fyntr\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    assert framing == (True, False)


def test_bytes_after_a_head_response_are_not_a_body() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"  # an origin out of step
    events = read(data, response=True, head_request=True)
    assert [type(e) for e in events] == [Head, type(END)]
