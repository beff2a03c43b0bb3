"""The metrics endpoint: ``GET /metrics`` (Prometheus text) and ``GET /status`` (JSON).

It runs on the proxy's loop, so it is built not to hurt it: one request per connection,
a bounded head, a deadline, a bounded number of clients, rendering only on request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from fyntr.config import validate_bind_address
from fyntr.errors import REASON_PHRASES, ConfigError
from fyntr.limits import (
    METRICS_MAX_CLIENTS,
    METRICS_REQUEST_MAX_BYTES,
    METRICS_REQUEST_TIMEOUT_S,
)
from fyntr.log import log
from fyntr.metrics import Snapshot, render_prometheus, render_status
from fyntr.net.front.listen import format_sockname, is_loopback
from fyntr.net.state import ServerState

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ROUTES: dict[str, tuple[str, Callable[[Snapshot], bytes]]] = {
    "/metrics": (PROMETHEUS_TYPE, render_prometheus),
    "/status": ("application/json", render_status),
}


def response(
    status: int, body: bytes, content_type: str = "text/plain; charset=utf-8", extra: str = ""
) -> bytes:
    head = (
        f"HTTP/1.1 {status} {REASON_PHRASES[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode() + body


def handle_request(head: bytes, snapshot: Callable[[], Snapshot]) -> bytes:
    """The response to one request head (request line plus headers)."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return response(400, b"bad request\n")
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    route = ROUTES.get(target.decode("latin-1"))
    if route is None:
        return response(404, b"not found: try /metrics or /status\n")
    if method != b"GET":
        return response(405, b"only GET\n", extra="Allow: GET\r\n")
    content_type, render = route
    return response(200, render(snapshot()), content_type)


class MetricsProtocol(asyncio.Protocol):
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.buf = b""
        self.transport: asyncio.Transport
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        state = self.state
        if state.metrics_clients >= METRICS_MAX_CLIENTS:
            self.transport.write(response(503, b"busy\n"))
            self.transport.close()
            return
        state.metrics_clients += 1
        self.timer = state.loop.call_later(METRICS_REQUEST_TIMEOUT_S, self._timeout)

    def _timeout(self) -> None:
        self._reply(response(408, b"timeout\n"))

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > METRICS_REQUEST_MAX_BYTES:
                self._reply(response(431, b"request too large\n"))
            return
        try:
            reply = handle_request(self.buf[:end], self.state.snapshot)
        except UnicodeDecodeError:
            reply = response(400, b"bad request\n")
        self._reply(reply)

    def eof_received(self) -> bool:
        if not self.transport.is_closing():
            self._reply(response(400, b"incomplete request\n"))
        return False

    def _reply(self, data: bytes) -> None:
        self.transport.write(data)
        self.transport.close()
        self.buf = b""

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.state.metrics_clients -= 1


async def start_metrics(state: ServerState) -> asyncio.Server:
    """Serve --metrics-port on --metrics-bind. Raises ConfigError (exit 1)."""
    settings = state.settings
    host = validate_bind_address(settings.metrics_bind)
    assert settings.metrics_port is not None
    try:
        listener = await state.loop.create_server(
            lambda: MetricsProtocol(state), host, settings.metrics_port, backlog=64
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {host}:{settings.metrics_port}: {exc}"
        ) from None
    for sock in listener.sockets:
        address = sock.getsockname()
        log.info("metrics on http://%s:%d/metrics and /status", address[0], address[1])
        if not is_loopback(sock):
            log.warning(
                "metrics on non-loopback address %s: anyone who can reach it sees the "
                "targets of your tunnels",
                format_sockname(sock),
            )
    return listener
