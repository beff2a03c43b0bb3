"""The CONNECT head parser: every request whole, byte by byte, with trailing bytes;
every status line and every limit at and past its boundary (docs/original.md §6.1-6.3, §6.6)."""

from __future__ import annotations

import pytest

from fyntr.errors import STATUS_LINES, HandshakeError, Status
from fyntr.wire.http_connect import ConnectParser, ConnectPhase, HeadComplete, TargetParsed

VALID = [
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    b"CONNECT example.com:443 HTTP/1.0\r\n\r\n",
    b"connect example.com:443 HTTP/1.1\r\n\r\n",  # method is ASCII case-insensitive
    b"CONNECT example.com:+443 HTTP/1.1\r\n\r\n",  # Rust u16 parsing takes a leading +
    b"CONNECT example.com:0443 HTTP/1.9\r\n\r\n",  # leading zeros; any HTTP/1.x
    b"CONNECT [2001:db8::1]:443 HTTP/1.1\n\n",  # bare LF ends lines too
    b"CONNECT 203.0.113.10:443 HTTP/1.1\r\nA: b\r\n   \r\n",  # whitespace-only line ends
    b"CONNECT api.aws.amazon.com:443 HTTP/1.1\r\nUser-Agent: x\r\nProxy-Connection: k\r\n\r\n",
]


def feed_in_pieces(data: bytes, size: int) -> tuple[list[TargetParsed], bytes]:
    parser = ConnectParser()
    targets: list[TargetParsed] = []
    leftover: bytes | None = None
    for i in range(0, len(data), size):
        for event in parser.feed(data[i : i + size]):
            if isinstance(event, TargetParsed):
                targets.append(event)
            else:
                assert isinstance(event, HeadComplete)
                leftover = event.leftover
                rest = data[i + size :]
                return targets, leftover + rest
    raise AssertionError("head never completed")


@pytest.mark.parametrize("request_bytes", VALID)
@pytest.mark.parametrize("trailing", [b"", b"\x16\x03\x01 TLS ClientHello", b"\r\n\r\nGET"])
def test_whole_and_byte_by_byte_parse_the_same(request_bytes: bytes, trailing: bytes) -> None:
    data = request_bytes + trailing
    results = [feed_in_pieces(data, size) for size in (len(data), 1, 2, 7)]
    first_targets, first_left = results[0]
    assert len(first_targets) == 1
    assert first_left == trailing
    for targets, leftover in results[1:]:
        assert targets == first_targets
        assert leftover == trailing


def test_target_fields() -> None:
    targets, _ = feed_in_pieces("CONNECT BÜCHER.DE.:443 HTTP/1.1\r\n\r\n".encode(), 1)
    host = targets[0].target.host
    assert host.raw == "BÜCHER.DE."
    assert host.domain == "xn--bcher-kva.de"
    assert host.dns_name == "xn--bcher-kva.de."
    assert targets[0].target.port == 443


def reject(data: bytes, *, eof: bool = False) -> Status:
    parser = ConnectParser()
    with pytest.raises(HandshakeError) as info:
        parser.feed(data)
        if eof:
            parser.feed_eof()
    return info.value.status


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"CONNECT example.com:443\r\n\r\n", Status.BAD_REQUEST),  # 2 tokens
        (b"CONNECT example.com:443 HTTP/1.1 x\r\n\r\n", Status.BAD_REQUEST),  # 4 tokens
        (b"\r\nCONNECT example.com:443 HTTP/1.1\r\n\r\n", Status.BAD_REQUEST),  # leading blank
        (b"GET / HTTP/2\r\n\r\n", Status.VERSION_NOT_SUPPORTED),  # version before method
        (b"CONNECT example.com:443 HTTP/2.0\r\n\r\n", Status.VERSION_NOT_SUPPORTED),
        (b"CONNECT example.com:443 http/1.1\r\n\r\n", Status.VERSION_NOT_SUPPORTED),
        (b"GET / HTTP/1.1\r\n\r\n", Status.METHOD_NOT_ALLOWED),
        (b"CONNECT example.invalid HTTP/1.1\r\n\r\n", Status.BAD_REQUEST),  # no port
        (b"CONNECT :443 HTTP/1.1\r\n\r\n", Status.BAD_REQUEST),
        (b"CONNECT example.invalid:not-a-port HTTP/1.1\r\n\r\n", Status.BAD_REQUEST),
        (b"CONNECT example.invalid:65536 HTTP/1.1\r\n\r\n", Status.BAD_REQUEST),
        (b"CONNECT 2001:db8::1:443 HTTP/1.1\r\n\r\n", Status.BAD_REQUEST),
        (b"CONNECT [2001:db8::1]443 HTTP/1.1\r\n\r\n", Status.BAD_REQUEST),
        (b"CONNECT [example.invalid]:443 HTTP/1.1\r\n\r\n", Status.BAD_REQUEST),
        (b"CONNECT [fe80::1%eth0]:443 HTTP/1.1\r\n\r\n", Status.BAD_REQUEST),  # zone id
        (b"CONNECT example.invalid..:443 HTTP/1.1\r\n\r\n", Status.BAD_REQUEST),
        (b"CONNECT _dmarc.example.com:443 HTTP/1.1\r\n\r\n", Status.BAD_REQUEST),
        (b"CONNECT a..b:443 HTTP/1.1\r\n\r\n", Status.BAD_REQUEST),
        (b"CONNECT \xff:443 HTTP/1.1\r\n\r\n", Status.BAD_REQUEST),  # not UTF-8
        (b"CONNECT a:443 HTTP/1.1\r\nX: \xff\r\n\r\n", Status.BAD_REQUEST),
    ],
)
def test_status_for_bad_requests(data: bytes, status: Status) -> None:
    assert reject(data) is status


def test_eof_outcomes() -> None:
    assert reject(b"", eof=True) is Status.BAD_REQUEST  # empty request line
    assert reject(b"CONNECT a:443 HTTP/1.1\r\nX: y\r\n", eof=True) is Status.BAD_REQUEST
    # EOF mid-line: the partial line counts as the whole line (docs/original.md §6.1).
    assert reject(b"GET / HTTP/1.1", eof=True) is Status.METHOD_NOT_ALLOWED


def request_line_of(total: int) -> bytes:
    head = b"CONNECT "
    tail = b".com:443 HTTP/1.1\r\n"
    return head + b"a" * (total - len(head) - len(tail)) + tail


def test_request_line_limit_8192_inclusive() -> None:
    line = request_line_of(8192)
    assert len(line) == 8192
    parser = ConnectParser()
    # The host is too long for DNS (400), but the line itself is within the limit.
    with pytest.raises(HandshakeError) as info:
        parser.feed(line + b"\r\n")
    assert info.value.status is Status.BAD_REQUEST
    assert reject(request_line_of(8193)) is Status.URI_TOO_LONG
    # No newline yet: 8193 bytes are already too many.
    assert reject(b"C" * 8193) is Status.URI_TOO_LONG


def test_header_limits_at_and_past_the_boundary() -> None:
    start = b"CONNECT a.com:443 HTTP/1.1\r\n"
    ok_line = b"X: " + b"v" * (8192 - 5) + b"\r\n"
    assert len(ok_line) == 8192
    assert feed_in_pieces(start + ok_line + b"\r\n", 4096)[1] == b""
    assert reject(start + b"X: " + b"v" * (8192 - 4) + b"\r\n") is Status.HEADERS_TOO_LARGE
    assert reject(start + b"X" * 8193) is Status.HEADERS_TOO_LARGE  # no newline needed

    hundred = b"".join(b"H%d: v\r\n" % i for i in range(100))
    assert feed_in_pieces(start + hundred + b"\r\n", 100)[1] == b""
    assert reject(start + hundred + b"H: v\r\n\r\n") is Status.HEADERS_TOO_LARGE

    # 32768 bytes of headers counting the blank line: accepted; one more byte: 431.
    line = b"X: " + b"v" * (4096 - 5) + b"\r\n"
    body = line * 7 + b"Y: " + b"v" * (32768 - 7 * 4096 - 2 - 5) + b"\r\n"
    assert len(body) + 2 == 32768
    assert feed_in_pieces(start + body + b"\r\n", 999)[1] == b""
    bigger = line * 7 + b"Y: " + b"v" * (32768 - 7 * 4096 - 2 - 4) + b"\r\n"
    assert reject(start + bigger + b"\r\n") is Status.HEADERS_TOO_LARGE


def test_nine_headers_of_4012_bytes_are_too_large() -> None:
    # upstream test_skip_headers_rejects_headers_too_large_total_bytes
    header = b"X: " + b"v" * 4007 + b"\r\n"
    assert reject(b"CONNECT a.com:443 HTTP/1.1\r\n" + header * 9 + b"\r\n") is (
        Status.HEADERS_TOO_LARGE
    )


def test_phases_follow_the_head() -> None:
    parser = ConnectParser()
    assert parser.phase is ConnectPhase.REQUEST_LINE
    parser.feed(b"CONNECT a.com:443 HTTP/1.1\r\n")
    # mypy keeps the narrowing of the assert above across feed(): a false overlap
    assert parser.phase is ConnectPhase.HEADERS  # type: ignore[comparison-overlap]
    parser.feed(b"\r\n")
    assert parser.phase is ConnectPhase.DONE


def test_status_lines_are_exact() -> None:
    assert STATUS_LINES[Status.OK] == b"HTTP/1.1 200 Connection Established\r\n\r\n"
    assert STATUS_LINES[Status.HEADERS_TOO_LARGE] == (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n"
    )
    assert all(
        line.endswith(b"\r\n\r\n") and b"\r\n" not in line[:-4] for line in STATUS_LINES.values()
    )


@pytest.mark.parametrize(
    ("first", "named"),
    [
        (b"\x05\x01\x00", "--socks5-port"),  # curl -x socks5h://... at the HTTP port
        (b"\x04\x01\x01\xbb\x7f\x00\x00\x01", "--socks5-port"),
        (b"\x16\x03\x01\x02\x00\x01", "not https://"),  # a client speaking TLS to it
        (b"\x16\x03\x01\x02\x00\x01\n\x03", "not https://"),  # with a line end in it
    ],
)
def test_another_protocols_first_bytes_are_refused_at_once(first: bytes, named: str) -> None:
    """No line end ever comes: without this the client waited the request line's 30 s
    for a 408 it could not read either."""
    with pytest.raises(HandshakeError) as info:
        ConnectParser().feed(first)
    assert info.value.status is Status.BAD_REQUEST
    assert named in info.value.detail
