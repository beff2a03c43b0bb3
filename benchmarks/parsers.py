"""What reading one proxied exchange costs with each HTTP/1.1 parser fyntr could use.

    python benchmarks/parsers.py [N]

One cycle: parse a curl-like request, write the request for the origin, parse a 1 KiB
response, write the response for the client; what a plain HTTP proxy does per request.
h11 (pure Python, sans-I/O, frames messages itself) against httptools (llhttp in C;
framing of responses to HEAD is the caller's). fyntr uses httptools (wire/http_forward.py).
"""

from __future__ import annotations

import sys
import time

import h11
import httptools

REQUEST = (
    b"GET http://127.0.0.1:8080/ HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"User-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nContent-Type: text/plain\r\n"
    b"Date: Fri, 04 Dec 2026 12:00:00 GMT\r\n\r\n" + b"h" * 1024
)


def with_h11(n: int) -> None:
    server, client = h11.Connection(h11.SERVER), h11.Connection(h11.CLIENT)
    for _ in range(n):
        server.receive_data(REQUEST)
        request = server.next_event()
        assert isinstance(request, h11.Request)
        server.next_event()
        client.send(h11.Request(method=request.method, target=b"/", headers=request.headers))
        client.send(h11.EndOfMessage())
        client.receive_data(RESPONSE)
        response = client.next_event()
        assert isinstance(response, h11.Response)
        body = client.next_event()
        client.next_event()
        server.send(h11.Response(status_code=200, headers=response.headers, reason=b"OK"))
        server.send(body)  # type: ignore[arg-type]
        server.send(h11.EndOfMessage())
        server.start_next_cycle()
        client.start_next_cycle()


class Collect:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)


def with_httptools(n: int) -> None:
    req, resp = Collect(), Collect()
    request_parser = httptools.HttpRequestParser(req)
    response_parser = httptools.HttpResponseParser(resp)
    for _ in range(n):
        req.headers, resp.headers, resp.body = [], [], []
        request_parser.feed_data(REQUEST)
        fields = b"".join(b"%s: %s\r\n" % f for f in req.headers)
        _ = b"GET / HTTP/1.1\r\n" + fields + b"\r\n"
        response_parser.feed_data(RESPONSE)
        fields = b"".join(b"%s: %s\r\n" % f for f in resp.headers)
        _ = b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n" + b"".join(resp.body)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    for name, fn in (("h11", with_h11), ("httptools", with_httptools)):
        start = time.perf_counter()
        fn(n)
        print(f"{name:10s} {(time.perf_counter() - start) / n * 1e6:7.1f} us per exchange")


if __name__ == "__main__":
    main()
