"""Plain HTTP forwarding (SPEC §3): absolute-form requests on the CONNECT port.

A ``Forward`` is one client connection carrying requests, one exchange at a time
(pipelined requests wait in h11's buffer and are answered in order). Each request is
checked as a CONNECT is (port, threat feeds, DNS, CIDR policy, connect pacing), then sent
to an ``Origin``: the upstream connection this session used last when the request is for
the same host and port, else an idle one from the ``OriginPool``, else a new dial. The
bytes both ways go through the same DRR lanes and rate as a tunnel's.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import h11

from fyntr.errors import REASON_PHRASES, HandshakeError, Rep, Status, bad_gateway, bad_request
from fyntr.limits import (
    HEADERS_MAX_BYTES,
    HTTP_KEEPALIVE_IDLE_S,
    POOL_IDLE_S,
    POOL_MAX,
    POOL_PER_ORIGIN,
    REQUEST_LINE_MAX_BYTES,
)
from fyntr.log import log
from fyntr.net.dialer import Dialed
from fyntr.net.pump import Lane, Pump
from fyntr.net.state import ServerState
from fyntr.wire.http_forward import (
    check_head,
    error_response,
    forwardable,
    head_end,
    parse_absolute_form,
    request_fields,
    response_fields,
)
from fyntr.wire.target import IPAddress, Target

MAX_HEAD: int = REQUEST_LINE_MAX_BYTES + HEADERS_MAX_BYTES
# RFC 9110 §9.2.2; a request sent on a pooled connection the origin was closing is
# sent again on a new one only if it is one of these and has no body.
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))


class Origin(asyncio.Protocol):
    """One upstream connection: h11's client side. Serves one session's exchange, or
    waits in the pool (reading, so that the origin's close is seen at once)."""

    __slots__ = (
        "address",
        "conn",
        "idle_since",
        "key",
        "lost",
        "on_idle_lost",
        "served",
        "session",
        "transport",
    )

    def __init__(self, key: str, dialed: Dialed) -> None:
        self.key = key  # host:port as the requests name it
        self.address: IPAddress = dialed.address
        self.served = 0  # exchanges begun on it
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.session: Forward | None = None
        self.lost = False
        self.idle_since = 0.0
        self.on_idle_lost: Callable[[Origin], None] = _ignore
        self.transport = dialed.transport
        for chunk in dialed.protocol.early:
            self.conn.receive_data(chunk)
        self.lost = dialed.protocol.lost
        self.transport.set_protocol(self)

    @property
    def usable(self) -> bool:
        return not (self.lost or self.transport.is_closing()) and (
            self.conn.our_state is h11.IDLE and self.conn.their_state is h11.IDLE
        )

    def data_received(self, data: bytes) -> None:
        if self.session is None:  # an idle origin that talks is out of step: drop it
            self.transport.abort()
            return
        self.conn.receive_data(data)
        self.session.origin_readable()

    def eof_received(self) -> bool:
        if self.session is None:
            return False  # idle: close
        self.conn.receive_data(b"")
        self.session.origin_readable()
        return True

    def pause_writing(self) -> None:
        if self.session is not None:
            self.session.up.dst_paused_writing()

    def resume_writing(self) -> None:
        if self.session is not None:
            self.session.up.dst_resumed_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.session is not None:
            self.session.origin_lost(self, exc)
        else:
            self.on_idle_lost(self)


def _ignore(_origin: Origin) -> None:
    pass


class OriginPool:
    """Idle upstream connections by host and port: bounded per origin and in all,
    closed after POOL_IDLE_S. The most recently used is taken first (warmest)."""

    def __init__(self) -> None:
        self._idle: OrderedDict[Origin, None] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._idle)

    def put(self, origin: Origin, now: float) -> None:
        if not origin.usable:
            origin.transport.close()
            return
        origin.session = None
        origin.idle_since = now
        origin.on_idle_lost = self._lost
        same = [o for o in self._idle if o.key == origin.key]
        if len(same) >= POOL_PER_ORIGIN:
            self._drop(same[0])
        if len(self._idle) >= POOL_MAX:
            self._drop(next(iter(self._idle)))
        self._idle[origin] = None
        origin.transport.resume_reading()

    def take(self, key: str) -> Origin | None:
        for origin in reversed(self._idle):
            if origin.key == key:
                del self._idle[origin]
                origin.on_idle_lost = _ignore
                if origin.usable:
                    return origin
                origin.transport.close()
        return None

    def expire(self, now: float) -> None:
        for origin in [o for o in self._idle if now - o.idle_since >= POOL_IDLE_S]:
            self._drop(origin)

    def close(self) -> None:
        for origin in list(self._idle):
            self._drop(origin)

    def _drop(self, origin: Origin) -> None:
        self._idle.pop(origin, None)
        origin.on_idle_lost = _ignore
        origin.transport.close()

    def _lost(self, origin: Origin) -> None:
        self._idle.pop(origin, None)


@dataclass(eq=False, slots=True)
class Exchange:
    """One request and its response."""

    method: bytes
    target: Target
    url: str  # for the log: scheme, authority and path, never the query
    request: h11.Request  # as sent upstream, kept to send it again (IDEMPOTENT)
    started: float
    up_mark: int
    down_mark: int
    bodyless: bool
    status: int | None = None  # the response's, once its head has gone to the client
    reused: bool = False  # sent on a connection that had served before
    retried: bool = False


class Forward(asyncio.Protocol):
    """A client connection that sends plain HTTP requests."""

    TARGET_KEY: ClassVar[str] = "http_target"

    def __init__(
        self,
        state: ServerState,
        flow_id: int,
        client: asyncio.Transport,
        peer: str,
        *,
        pumps: tuple[Pump, Pump],
        pool: OriginPool,
        on_closed: Callable[[Forward], None],
    ) -> None:
        self.state = state
        self.flow_id = flow_id
        self.peer = peer
        self.client = client
        self.pool = pool
        self.on_closed = on_closed
        now = state.clock()
        self.started = self.idle_since = now
        self.accepted_at = state.loop.time()  # of the request in progress (connect pacing)
        self.idle_mark = 0
        self.target = "-"  # the last request's host:port, for /status and the close line
        self.reason: str | None = None
        self.requests = 0
        # What the auto rate last read of the current upstream socket (net/autorate.py).
        self.sent_base = 0  # up.nbytes when this upstream socket started
        self.acked_mark = 1
        self.rtt_floor = float("inf")
        self.srtt_mark = 0.0
        self.segs_mark = 0.0
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        upload, download = pumps
        # The upload lane's destination and the download lane's source are the origin in
        # use: set per exchange. One download lane for the whole connection, so that a
        # response still queued in the scheduler is written before the next one.
        self.up = Lane(upload, client, client, _no_eof)
        self.down = Lane(download, client, client, self._down_finished)
        self.origin: Origin | None = None  # the one in use, or kept for the next request
        self.exchange: Exchange | None = None
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    # --- the relay interface (net/relay.py) -------------------------------------------
    @property
    def activity(self) -> int:
        return self.up.nbytes + self.down.nbytes

    def idle_limit(self, configured: float) -> float:
        """Between requests, a keep-alive connection waits HTTP_KEEPALIVE_IDLE_S."""
        if self.exchange is not None:
            return configured
        return min(configured, HTTP_KEEPALIVE_IDLE_S) if configured > 0 else HTTP_KEEPALIVE_IDLE_S

    def upstream_socket(self) -> socket.socket | None:
        if self.origin is None or self.origin.lost:
            return None
        sock: socket.socket | None = self.origin.transport.get_extra_info("socket")
        return sock

    def abort(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        if self._task is not None:
            self._task.cancel()
        if self.origin is not None:
            self.origin.session = None
            self.origin.transport.abort()
            self.origin = None
        self.up.discard()
        self.down.discard()
        self.client.abort()

    # --- the client side --------------------------------------------------------------
    def start(self, data: bytes, client_eof: bool) -> None:
        self.client.set_protocol(self)
        self.conn.receive_data(data)
        if client_eof:
            self.conn.receive_data(b"")
        self.client.resume_reading()
        self._client_events()

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self._client_events()

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        self._client_events()
        return True  # the response still goes out; _exchange_done closes

    def pause_writing(self) -> None:
        self.down.dst_paused_writing()

    def resume_writing(self) -> None:
        self.down.dst_resumed_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        if self.reason is None:
            self.reason = (
                "client_reset"
                if isinstance(exc, ConnectionResetError)
                else f"client_error: {exc}"
                if exc is not None
                else "client_closed"
            )
        if self._task is not None:
            self._task.cancel()
        origin, self.origin = self.origin, None
        if origin is not None:
            if self.exchange is None:
                self.pool.put(origin, self.state.clock())
            else:
                origin.session = None
                origin.transport.abort()
        self.up.discard()
        self.down.discard()
        self.down.on_eof_sent = self.up.on_eof_sent = _no_eof  # break the cycle
        self.on_closed(self)

    def _client_events(self) -> None:
        conn = self.conn
        while not self.closed and self.reason is None:
            if self._task is not None:
                return  # dialing: the body waits in h11's buffer
            if conn.their_state is h11.IDLE and not self._head_ok():
                return
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._client_failed(exc)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._request(event)
            elif isinstance(event, h11.Data | h11.EndOfMessage):
                self._to_origin(event)
            elif isinstance(event, h11.ConnectionClosed):
                if self.exchange is None:
                    self._finish("client_closed")
                return

    def _head_ok(self) -> bool:
        """Check the next request head on its raw bytes before h11 reads it."""
        buf = self.conn.trailing_data[0].lstrip(b"\r\n")
        end = head_end(buf)
        if end < 0:
            return True  # incomplete: h11 waits, and refuses one over MAX_HEAD
        try:
            check_head(buf[:end])
        except HandshakeError as err:
            self._refuse(err, None)
            return False
        return True

    def _client_failed(self, exc: h11.RemoteProtocolError) -> None:
        ex = self.exchange
        if ex is not None and ex.status is not None:
            self.abort("client_protocol_error")  # mid-response: nothing can be said
        elif self.conn.their_state is h11.CLOSED or "peer closed" in str(exc):
            self.abort("client_closed")  # went away mid-request
        elif exc.error_status_hint == Status.HEADERS_TOO_LARGE:
            self._refuse(
                HandshakeError(
                    Status.HEADERS_TOO_LARGE,
                    Rep.GENERAL_FAILURE,
                    "headers_too_large",
                    f"request head too large (max {MAX_HEAD} bytes)",
                ),
                ex,
            )
        else:
            self._refuse(bad_request(f"malformed request: {exc}"), ex)

    def _request(self, request: h11.Request) -> None:
        self.accepted_at = self.state.loop.time()
        self.requests += 1
        try:
            if request.method == b"CONNECT":
                raise HandshakeError(
                    Status.METHOD_NOT_ALLOWED,
                    Rep.GENERAL_FAILURE,
                    "bad_method",
                    "CONNECT after a plain HTTP request on one connection",
                )
            target, path = parse_absolute_form(request.target)
        except HandshakeError as err:
            self._refuse(err, None)
            return
        url = f"http://{target.authority}{path.partition(b'?')[0].decode()}"
        self.target = target.authority
        ex = self.exchange = Exchange(
            method=request.method,
            target=target,
            url=url,
            request=h11.Request(
                method=request.method,
                target=path,
                headers=request_fields(list(request.headers), target),
            ),
            started=self.state.clock(),
            up_mark=self.up.nbytes,
            down_mark=self.down.nbytes,
            bodyless=bodyless(request),
        )
        if log.isEnabledFor(logging.INFO):
            log.info("flow%d: %s %s", self.flow_id, request.method.decode(), url)
        try:
            if any(name.lower() == b"upgrade" for name, _ in request.headers):
                raise HandshakeError(
                    Status.NOT_IMPLEMENTED,
                    Rep.GENERAL_FAILURE,
                    "not_implemented",
                    "Upgrade (WebSocket) over plain HTTP is not supported; use wss:// (CONNECT)",
                )
            self.state.threats.check_host(self, target)
        except HandshakeError as err:
            self._refuse(err, ex)
            return
        origin = self.origin
        if origin is not None and not (origin.key == target.authority and origin.usable):
            self.origin = None
            self.pool.put(origin, self.state.clock())
            origin = None
        if origin is None:
            origin = self.pool.take(target.authority)
        if origin is None:
            self._dial(ex)
            return
        try:
            self.state.recheck_origin(self, target, origin.address)
        except HandshakeError as err:
            self.pool.put(origin, self.state.clock())
            self._refuse(err, ex)
            return
        self._attach(origin)

    def _dial(self, ex: Exchange) -> None:
        self.client.pause_reading()  # the body waits until the origin is ready
        self._task = self.state.loop.create_task(
            self._open(ex), name=f"fyntr-flow{self.flow_id}-origin"
        )

    async def _open(self, ex: Exchange) -> None:
        try:
            dialed = await self.state.open_origin(self, ex.target)
        except HandshakeError as err:
            self._task = None
            self._refuse(err, ex)
            return
        self._task = None
        if self.closed:
            dialed.transport.close()
            return
        self._attach(Origin(ex.target.authority, dialed))

    def _attach(self, origin: Origin) -> None:
        ex = self.exchange
        assert ex is not None
        self.origin = origin
        origin.session = self
        self.up.dst = self.down.src = origin.transport
        self.down.src_paused = False
        self.sent_base, self.acked_mark = self.up.nbytes, 1
        self.rtt_floor, self.srtt_mark, self.segs_mark = float("inf"), 0.0, 0.0
        ex.reused = origin.served > 0
        origin.served += 1
        self._to_origin(ex.request)
        if ex.retried:
            self._to_origin(h11.EndOfMessage())  # bodyless: the client's is long read
        if not self.up.src_paused:
            self.client.resume_reading()
        origin.transport.resume_reading()
        self._client_events()
        self.origin_readable()  # what it sent before the request, or its close

    def _to_origin(self, event: h11.Request | h11.Data | h11.EndOfMessage) -> None:
        origin = self.origin
        assert origin is not None
        try:
            data = origin.conn.send(event)
        except h11.LocalProtocolError as exc:
            self._origin_failed(f"cannot forward the request: {exc}")
            return
        if data:
            self.up.push(data)

    # --- the origin side --------------------------------------------------------------
    def origin_readable(self) -> None:
        """Everything the origin's bytes complete goes to the client in one write."""
        origin, ex = self.origin, self.exchange
        out: list[bytes] = []
        while origin is not None and ex is not None and self.origin is origin:
            try:
                event = origin.conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._to_client(out)
                self._origin_failed(f"invalid response from the origin: {exc}")
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Data):
                out.append(self.conn.send(event) or b"")
            elif isinstance(event, h11.Response):
                ex.status = event.status_code
                out.append(
                    self._serialize(
                        h11.Response(
                            status_code=event.status_code,
                            headers=response_fields(list(event.headers)),
                            reason=event.reason,
                        )
                    )
                )
            elif isinstance(event, h11.EndOfMessage):
                out.append(self._serialize(h11.EndOfMessage()))
                self._to_client(out)
                self._exchange_done()
                return
            elif isinstance(event, h11.InformationalResponse) and event.status_code != 101:
                out.append(
                    self._serialize(
                        h11.InformationalResponse(
                            status_code=event.status_code,
                            headers=forwardable(list(event.headers)),
                            reason=event.reason,
                        )
                    )
                )
            else:  # 101, or the origin closed before the end of the response
                self._to_client(out)
                self._origin_failed("the origin closed the connection or switched protocols")
                return
        self._to_client(out)

    def origin_lost(self, origin: Origin, exc: Exception | None) -> None:
        origin.session = None
        if self.origin is origin and self.exchange is not None:
            self._origin_failed(f"the origin closed the connection ({exc or 'EOF'})")
        elif self.origin is origin:
            self.origin = None

    def _origin_failed(self, detail: str) -> None:
        ex = self.exchange
        origin, self.origin = self.origin, None
        if origin is not None:
            origin.session = None
            origin.transport.abort()
        if ex is None:
            return
        if (
            ex.status is None
            and ex.reused
            and not ex.retried
            and ex.bodyless
            and ex.method in IDEMPOTENT
            and self.conn.their_state is h11.DONE
        ):
            # A kept connection the origin was closing: send it once more, on a new one.
            ex.retried = True
            log.info("flow%d: the kept connection was closed; sending again", self.flow_id)
            self.up.discard()
            self._dial(ex)
            return
        if ex.status is None:
            self._refuse(bad_gateway("upstream_error", detail), ex)
        else:
            log.warning("flow%d: %s %s: %s", self.flow_id, ex.method.decode(), ex.url, detail)
            self.abort("upstream_error")

    def _serialize(self, event: h11.Event) -> bytes:
        """h11 refuses what HTTP/1.1 cannot carry to this client (RFC 9112): a bug of the
        origin's that reaches the client as a cut connection."""
        try:
            return self.conn.send(event) or b""
        except h11.LocalProtocolError:
            log.warning("flow%d: the origin's response cannot be forwarded", self.flow_id)
            self.abort("upstream_error")
            return b""

    def _to_client(self, out: list[bytes]) -> None:
        data = b"".join(out)
        if data and not self.client.is_closing():
            self.down.push(data)

    def _exchange_done(self) -> None:
        ex = self.exchange
        origin = self.origin
        assert ex is not None and origin is not None
        self._log_exchange(ex, ex.status or 0)
        self.exchange = None
        if origin.conn.states == {h11.CLIENT: h11.DONE, h11.SERVER: h11.DONE} and not (
            self.up.queued
        ):
            origin.conn.start_next_cycle()  # kept for this connection's next request
        else:
            self.origin = None
            origin.session = None
            self.up.discard()
            origin.transport.close()
        if self.conn.states == {h11.CLIENT: h11.DONE, h11.SERVER: h11.DONE}:
            self.conn.start_next_cycle()
            self._client_events()
        else:
            self._finish("closed")  # HTTP/1.0, Connection: close, or a body left unread

    def _log_exchange(self, ex: Exchange, status: int) -> None:
        self.state.metrics.http_response(status)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "flow%d: %s %s -> %d up_bytes=%d down_bytes=%d duration=%.3fs",
                self.flow_id,
                ex.method.decode(),
                ex.url,
                status,
                self.up.nbytes - ex.up_mark,
                self.down.nbytes - ex.down_mark,
                self.state.clock() - ex.started,
            )

    # --- ends -------------------------------------------------------------------------
    def _refuse(self, err: HandshakeError, ex: Exchange | None) -> None:
        """Answer with an error of fyntr's own, then close once it is written."""
        self.state.metrics.rejected(err.reason)
        where = ex.url if ex is not None else "request"
        log.log(
            logging.ERROR if err.status is Status.BAD_GATEWAY else logging.WARNING,
            "flow%d: %s from %s: %s (%d %s)",
            self.flow_id,
            where,
            self.peer,
            err.detail,
            err.status,
            REASON_PHRASES[err.status],
        )
        self.down.push(error_response(err.status, REASON_PHRASES[err.status], err.detail))
        if ex is not None:
            self.exchange = None
            self._log_exchange(ex, err.status)
            if self.origin is not None and not self.origin.usable:  # mid-exchange
                self.origin.session = None
                self.origin.transport.abort()
                self.origin = None
        self._finish(err.reason)

    def _finish(self, reason: str) -> None:
        """Close the client once the download lane has written everything."""
        if self.reason is None:
            self.reason = reason
        self.client.pause_reading()
        self.down.finish()

    def _down_finished(self) -> bool:
        self.client.close()
        return True


def bodyless(request: h11.Request) -> bool:
    """No body follows the head (RFC 9112 §6.3: neither framing field, or a length 0)."""
    for name, value in request.headers:
        lowered = name.lower()
        if lowered == b"transfer-encoding" or (lowered == b"content-length" and value != b"0"):
            return False
    return True


def _no_eof() -> bool:
    return True
