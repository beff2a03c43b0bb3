"""The pure part of plain HTTP forwarding: head checks, targets, fields (issue 16)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fyntr.errors import HandshakeError, Status
from fyntr.wire.http_forward import (
    check_head,
    forwardable,
    head_end,
    host_field,
    parse_absolute_form,
    request_fields,
    response_fields,
)


def status_of(head: bytes) -> Status | None:
    try:
        check_head(head)
    except HandshakeError as err:
        return err.status
    return None


def test_valid_heads_pass() -> None:
    assert status_of(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n") is None
    assert status_of(b"POST http://a/ HTTP/1.1\r\nContent-Length: 3\r\n\r\n") is None
    assert status_of(b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n") is None
    assert status_of(b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n") == (
        Status.NOT_IMPLEMENTED
    )


def test_head_end_counts_bare_lf_blank_lines() -> None:
    assert head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody") == len(b"GET / HTTP/1.1\r\nA: b\r\n\r\n")
    assert head_end(b"GET / HTTP/1.1\nA: b\n\nbody") == len(b"GET / HTTP/1.1\nA: b\n\n")
    assert head_end(b"GET / HTTP/1.1\r\nA: b\r\n") == -1


# Field-name case, optional whitespace and order vary; what makes each a smuggling vector
# does not.
names = st.sampled_from(["Content-Length", "content-length", "CONTENT-LENGTH", "Content-length"])
te_names = st.sampled_from(["Transfer-Encoding", "transfer-encoding", "TRANSFER-ENCODING"])
ows = st.sampled_from(["", " ", "  ", "\t"])


def head(*fields: str) -> bytes:
    return ("POST http://a/ HTTP/1.1\r\nHost: a\r\n" + "".join(fields) + "\r\n").encode()


@given(names, te_names, ows, ows, st.booleans())
def test_cl_te_both_refused(cl: str, te: str, a: str, b: str, te_first: bool) -> None:
    fields = [f"{cl}:{a}5{b}\r\n", f"{te}:{a}chunked{b}\r\n"]
    assert status_of(head(*(fields[::-1] if te_first else fields))) == Status.BAD_REQUEST


@given(names, names, st.integers(0, 10**6), ows)
def test_double_content_length_refused(one: str, two: str, n: int, a: str) -> None:
    assert status_of(head(f"{one}:{a}{n}\r\n", f"{two}: {n}\r\n")) == Status.BAD_REQUEST


@given(
    te_names, st.sampled_from(["xchunked", "chunked, identity", "chunked, chunked", "identity", ""])
)
def test_te_te_variants_refused(te: str, value: str) -> None:
    assert status_of(head(f"{te}: {value}\r\n")) == Status.BAD_REQUEST


@given(st.sampled_from([" ", "\t", "  "]), st.text("abc", min_size=1, max_size=5))
def test_obs_fold_refused(lead: str, text: str) -> None:
    assert status_of(head(f"X-A: 1\r\n{lead}{text}\r\n")) == Status.BAD_REQUEST


@given(st.integers(0, 3))
def test_bare_lf_refused(where: int) -> None:
    lines = ["POST http://a/ HTTP/1.1", "Host: a", "X-A: 1", ""]
    text = "".join(line + ("\n" if i == where else "\r\n") for i, line in enumerate(lines))
    assert status_of(text.encode()) == Status.BAD_REQUEST


def test_malformed_fields_refused() -> None:
    assert status_of(head("Content-Length: 3, 3\r\n")) == Status.BAD_REQUEST
    assert status_of(head("Content-Length: -1\r\n")) == Status.BAD_REQUEST
    assert status_of(head("Transfer-Encoding : chunked\r\n")) == Status.BAD_REQUEST
    assert status_of(head("no colon here\r\n")) == Status.BAD_REQUEST


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
    target, origin_form = parse_absolute_form(url)
    assert (target.authority, origin_form) == (authority, path)


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
    assert host_field(parse_absolute_form(b"http://a.example/")[0]) == b"a.example"
    assert host_field(parse_absolute_form(b"http://a.example:81/")[0]) == b"a.example:81"
    assert host_field(parse_absolute_form(b"http://[2001:db8::1]/")[0]) == b"[2001:db8::1]"


def test_fields_named_by_connection_are_dropped() -> None:
    fields = [
        (b"connection", b"keep-alive, x-hop"),
        (b"x-hop", b"1"),
        (b"x-end", b"2"),
        (b"upgrade", b"h2c"),
        (b"te", b"trailers"),
        (b"trailer", b"x"),
        (b"keep-alive", b"5"),
        (b"proxy-connection", b"keep-alive"),
        (b"proxy-authorization", b"Basic eA=="),
    ]
    assert forwardable(fields) == [(b"x-end", b"2"), (b"via", b"1.1 fyntr")]


def test_request_fields_host_from_target_and_chunked_kept() -> None:
    target, _ = parse_absolute_form(b"http://b.example:8080/")
    fields = [(b"host", b"evil.example"), (b"transfer-encoding", b"chunked"), (b"x", b"1")]
    assert request_fields(fields, target) == [
        (b"host", b"b.example:8080"),
        (b"x", b"1"),
        (b"via", b"1.1 fyntr"),
        (b"transfer-encoding", b"chunked"),
    ]


def test_response_with_both_framings_keeps_chunked_only() -> None:
    fields = [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")]
    assert response_fields(fields) == [(b"via", b"1.1 fyntr"), (b"transfer-encoding", b"chunked")]
