"""Plain HTTP forwarding (docs/plain-http.md): absolute-form requests on the CONNECT port.

A ``Forward`` is one client connection carrying requests, one exchange at a time
(pipelined requests wait in the reader and are answered in order). Each request is
checked as a CONNECT is (port, threat feeds, DNS, CIDR policy, connect pacing), then sent
to an ``Origin``: an idle upstream connection to the same host and port from the
``OriginPool`` (net/forward/pool.py; whichever session used it last), else a new dial. The
bytes both ways go through the same DRR lanes and rate as a tunnel's.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import Callable
from typing import ClassVar

from fyntr.errors import (
    REASON_PHRASES,
    HandshakeError,
    auth_required,
    bad_gateway,
    log_level,
    timed_out,
)
from fyntr.limits import HTTP_KEEPALIVE_IDLE_S
from fyntr.log import line, log
from fyntr.net.forward.pool import Origin, OriginPool
from fyntr.net.relay.ends import BOTH_CLOSED, Side, end_reason
from fyntr.net.relay.pump import Lane, Pump
from fyntr.net.state import ServerState
from fyntr.policy.auth import Credentials, Verdict, basic_credentials
from fyntr.wire.exchange import (
    Exchange,
    Read,
    asks_credentials,
    authorization_of,
    begin,
    client_kept,
    ends_with_close,
    may_resend,
    origin_kept,
    parent_head,
    read_response,
    refuse_upgrade,
)
from fyntr.wire.http_forward import END, Head, MessageReader
from fyntr.wire.http_rewrite import (
    LAST_CHUNK,
    chunk,
    error_response,
)


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
        client_key: object = None,
        address: str = "",
    ) -> None:
        """``client_key``: whom it is scheduled as until a user is authenticated (with
        --auth-file); ``address``: the client's, for the back-off of failed credentials."""
        self.state = state
        self.flow_id = flow_id
        self.peer = peer
        self.client = client
        self.pool = pool
        self.on_closed = on_closed
        now = state.clock()
        self.started = self.idle_since = now
        self.accepted_at = state.loop.time()  # of the dial in progress (connect pacing)
        self.idle_mark = 0
        self.target = "-"  # the last request's host:port, for /status and the close line
        self.reason: str | None = None
        self.routed = False  # the current upstream socket crosses a router
        self.upstream_since = 0  # up.nbytes when it started
        self.reader = MessageReader()
        upload, download = pumps
        # The upload lane's destination and the download lane's source are the origin in
        # use: set per exchange. One download lane for the whole connection, so that a
        # response still queued in the scheduler is written before the next one.
        self.client_key = client_key
        self.address = address
        self.user: str | None = None  # --auth-file: whom the first request's credentials name
        # The Proxy-Authorization value a request of this connection passed with, and the
        # users it passed under: the same value again is not looked up again.
        self._passed: tuple[bytes, object] | None = None
        self.up = Lane(upload, client, client, _no_eof, client_key)
        self.down = Lane(download, client, client, self._down_finished, client_key)
        self.origin: Origin | None = None  # serving the exchange in progress
        self.exchange: Exchange | None = None
        self._task: asyncio.Task[None] | None = None
        self.client_eof = False
        self.closed = False
        self.deadline = math.inf  # a request head under way must be complete by then
        self.verbose = log.isEnabledFor(logging.INFO)  # the level is set once, at start

    # --- the relay interface (net/relay/tunnel.py) -------------------------------------------
    @property
    def activity(self) -> int:
        return self.up.nbytes + self.down.nbytes

    @property
    def spliced(self) -> bool:
        return False  # every message is read: nothing to hand to the kernel

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

    def on_deadline(self) -> None:
        """A request head took longer than the handshake allows one: 408, as CONNECT."""
        limit = self.state.settings.timeouts.headers_s
        if self.exchange is not None:  # pipelined behind a response still under way
            self.deadline = self.state.clock() + limit
            return
        self.deadline = math.inf
        self._refuse(timed_out(f"timed out reading the request headers after {limit:g}s"), None)

    def wind_down(self) -> None:
        """Shutdown: close now between requests, else after the response under way."""
        self.client_eof = True  # no further request is read
        if self.exchange is None:
            self._finish("shutdown")

    def abort(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        if self._task is not None:
            self._task.cancel()
        self._drop_origin()
        self.up.discard()
        self.down.discard()
        self.client.abort()

    # --- the client side --------------------------------------------------------------
    def start(self, data: bytes, client_eof: bool) -> None:
        self.client.set_protocol(self)
        self.client.resume_reading()
        self.data_received(data)
        if client_eof:
            self.eof_received()

    def data_received(self, data: bytes) -> None:
        try:
            self.reader.feed(data)
        except HandshakeError as err:
            ex = self.exchange
            if ex is not None and ex.status is not None:
                self.abort("client_protocol_error")  # mid-response: nothing can be said
            else:
                self._refuse(err, ex)
            return
        # The handshake's header budget holds for every request head, the first one's
        # (after its request line) and each next one on a kept connection: a head's bytes
        # are no relay activity, so a trickled head would outlast the idle limits.
        if self.reader.in_head:
            if self.deadline == math.inf:
                self.deadline = self.state.clock() + self.state.settings.timeouts.headers_s
        elif self.deadline != math.inf:
            self.deadline = math.inf
        self._client_events()

    def eof_received(self) -> bool:
        self.client_eof = True
        ex = self.exchange
        if ex is None and not self.reader.events:
            self._finish(end_reason(Side.CLIENT, None))
        elif ex is not None and not ex.request_done:
            self.abort(end_reason(Side.CLIENT, None))  # went away mid-request
        return True  # a response on its way still goes out; then the connection closes

    def pause_writing(self) -> None:
        self.down.dst_paused_writing()

    def resume_writing(self) -> None:
        self.down.dst_resumed_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        if self.reason is None:
            self.reason = end_reason(Side.CLIENT, exc)
        if self._task is not None:
            self._task.cancel()
        self._drop_origin()  # mid-exchange: between exchanges, the pool holds it
        self.up.discard()
        self.down.discard()
        self.down.on_eof_sent = self.up.on_eof_sent = _no_eof  # break the cycle
        self.on_closed(self)

    def _client_events(self) -> None:
        events = self.reader.events
        while events and self.reason is None and self._task is None:
            event = events[0]
            if isinstance(event, Head):
                if self.exchange is not None:
                    break  # pipelined: answered after the one in progress
                events.popleft()
                self._request(event)
            elif isinstance(event, bytes):
                events.popleft()
                self._to_origin(event)
            else:
                events.popleft()
                self._request_end()
        # Bytes wait in the reader while a request is pipelined or its origin is being
        # dialled; reading resumes when they have gone (and the upload lane allows).
        reading = self.client.is_reading()
        if events or self._task is not None:
            if reading:
                self.client.pause_reading()
        elif not reading and self.reason is None and not self.up.src_paused:
            self.client.resume_reading()

    def _request(self, head: Head) -> None:
        """With --auth-file, each request's credentials first (a cached verdict answers at
        once), then the exchange."""
        auth = self.state.auth
        if auth is None:
            self._exchange(head)
            return
        try:
            value = authorization_of(head)
            if value is not None and self._passed == (value, auth.book):
                self._exchange(head)
                return
            credentials = basic_credentials(value)
        except HandshakeError as err:
            self._refuse(err, None)
            return
        verdict = auth.verdict(self.address, credentials)
        if verdict is None:
            self._task = self.state.loop.create_task(
                self._check(head, credentials), name=f"fyntr-flow{self.flow_id}-auth"
            )
        else:
            self._judged(head, verdict)

    async def _check(self, head: Head, credentials: Credentials) -> None:
        assert self.state.auth is not None
        verdict = await self.state.auth.check(self.address, credentials)
        self._task = None
        self._judged(head, verdict)
        self._client_events()  # the body read meanwhile, or a pipelined request

    def _judged(self, head: Head, verdict: Verdict) -> None:
        if verdict.user is None:
            self._refuse(auth_required(verdict.reason, verdict.detail), None)
            return
        assert self.state.auth is not None
        self._passed = (authorization_of(head) or b"", self.state.auth.book)
        if self.user is None:  # scheduled as the user from the first request on
            self.user = self.client_key = verdict.user
            self.up.own(verdict.user)
            self.down.own(verdict.user)
        self._exchange(head)

    def _exchange(self, head: Head) -> None:
        try:
            ex = begin(head, self.state.clock(), self.up.nbytes, self.down.nbytes)
        except HandshakeError as err:
            self._refuse(err, None)
            return
        self.exchange = ex
        dest = ex.dest
        self.target = dest.authority
        target = dest.target
        if self.verbose:
            line(logging.INFO, "flow%d: %s %s", self.flow_id, head.method.decode(), ex.url)
        try:
            refuse_upgrade(head)
            self.state.threats.check_host(self, target)
        except HandshakeError as err:
            self._refuse(err, ex)
            return
        origin = self.pool.take(dest.authority)
        if origin is None:
            self._dial(ex)
            return
        # The policy is fixed for the process and the feeds change only by a reload that
        # replaces the index: a connection cleared under this index stays cleared.
        index = self.state.threats.index
        if origin.cleared is not index:
            try:
                self.state.recheck_origin(self, target, origin.address, direct=origin.via is None)
            except HandshakeError as err:
                self.pool.put(origin, self.state.clock())
                self._refuse(err, ex)
                return
            origin.cleared = index
        self._attach(origin)

    def _dial(self, ex: Exchange) -> None:
        self.accepted_at = self.state.loop.time()  # connect pacing's budget runs from here
        self._task = self.state.loop.create_task(
            self._open(ex), name=f"fyntr-flow{self.flow_id}-origin"
        )

    async def _open(self, ex: Exchange) -> None:
        try:
            dialed = await self.state.open_origin(self, ex.dest.target)
        except HandshakeError as err:
            self._task = None
            self._refuse(err, ex)
            return
        self._task = None
        if self.closed:
            dialed.transport.close()
            return
        self._attach(Origin(ex.dest.authority, dialed))
        self._client_events()  # the body read while dialling
        self.origin_events()  # what the origin sent before the request, or its close

    def _attach(self, origin: Origin) -> None:
        ex = self.exchange
        assert ex is not None
        self.origin = origin
        origin.session = self
        origin.reader.expect_no_body = ex.head.method == b"HEAD"
        self.up.dst = self.down.src = origin.transport
        self.down.src_paused = False
        self.routed = origin.routed
        self.upstream_since = self.up.nbytes
        ex.reused = origin.served > 0
        origin.served += 1
        via = origin.via
        self.up.push(ex.request if via is None or via.scheme != "http" else parent_head(ex, via))
        ex.head_end = self.up.nbytes
        origin.checking = ex.reused and not self.head_sent()
        origin.transport.resume_reading()

    def _to_origin(self, data: bytes) -> None:
        ex = self.exchange
        assert ex is not None
        self.up.push(chunk(data) if ex.upload.chunked else data)

    def _request_end(self) -> None:
        ex = self.exchange
        assert ex is not None
        ex.request_done = True
        if ex.upload.chunked:
            self.up.push(LAST_CHUNK)  # trailers are not forwarded (RFC 9110 §6.5.1)

    def head_sent(self) -> bool:
        """The exchange's request head has been handed to the kernel (not queued by the
        scheduler, not in the transport's buffer)."""
        ex = self.exchange
        return ex is not None and self.up.nbytes - self.up.held() >= ex.head_end

    # --- the origin side --------------------------------------------------------------
    def origin_events(self) -> None:
        """Everything the origin's bytes complete goes to the client in one write."""
        origin, ex = self.origin, self.exchange
        if origin is None or ex is None:
            return
        if origin.via is not None and ex.response is None and asks_credentials(origin.reader):
            # The parent's challenge is for fyntr: the client could not answer it.
            err = bad_gateway(
                "parent_refused",
                f"parent proxy {origin.via.name} asks for credentials (407): check --upstream",
            )
            self._refuse(err, ex)
            return
        out: list[bytes] = []
        read = read_response(ex, origin.reader.events, out)
        self._flush(out)
        if read is Read.DONE:
            self._exchange_done()
        elif read is Read.SWITCHED:
            self.origin_failed("the origin switched protocols")

    def origin_eof(self) -> None:
        """An origin's close ends a response framed by nothing else (RFC 9112 §6.3)."""
        ex = self.exchange
        origin = self.origin
        if ex is None or origin is None or origin.reader.events:
            return
        if ends_with_close(ex):
            origin.reader.events.append(END)
            self.origin_events()

    def origin_lost(self, origin: Origin, exc: Exception | None) -> None:
        origin.session = None
        if self.origin is origin and self.exchange is not None:
            self.origin_failed(f"the origin closed the connection ({exc or 'EOF'})")
        elif self.origin is origin:
            self.origin = None

    def origin_failed(self, detail: str) -> None:
        ex = self.exchange
        self._drop_origin()
        if ex is None:
            return
        if may_resend(ex):
            # A kept connection the origin was closing: send it once more, on a new one.
            ex.retried = True
            log.info("flow%d: the kept connection was closed; sending again", self.flow_id)
            self.up.discard()
            self._dial(ex)
            return
        if ex.status is None:
            self._refuse(bad_gateway("upstream_error", detail), ex)
        else:
            log.warning("flow%d: %s %s: %s", self.flow_id, ex.head.method.decode(), ex.url, detail)
            self.abort("upstream_error")

    def _drop_origin(self) -> None:
        origin, self.origin = self.origin, None
        if origin is not None:
            origin.session = None
            origin.transport.abort()

    def _flush(self, out: list[bytes]) -> None:
        data = b"".join(out)
        if data and not self.client.is_closing():
            self.down.push(data)

    def _exchange_done(self) -> None:
        ex = self.exchange
        origin = self.origin
        assert ex is not None and origin is not None and ex.response is not None
        self._log_exchange(ex, ex.response.status)
        self.exchange = None
        if origin_kept(ex, self.up.queued > 0):
            self.origin = None
            self.pool.put(origin, self.state.clock())  # which closes it if it cannot serve
        else:
            self.up.discard()
            self._drop_origin()
        if not client_kept(ex, self.client_eof):
            self._finish(BOTH_CLOSED)  # HTTP/1.0, Connection: close, or a body left unread
        elif self.reader.events or not self.client.is_reading():
            self._client_events()  # a pipelined request, or reading to resume

    def _log_exchange(self, ex: Exchange, status: int) -> None:
        self.state.metrics.http_response(status)
        if self.verbose:
            line(
                logging.INFO,
                "flow%d: %s %s -> %d up_bytes=%d down_bytes=%d duration=%.3fs",
                self.flow_id,
                ex.head.method.decode(),
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
        log.log(
            log_level(err),
            "flow%d: %s from %s: %s (%d %s)",
            self.flow_id,
            ex.url if ex is not None else "request",
            self.peer,
            err.detail,
            err.status,
            REASON_PHRASES[err.status],
        )
        self.down.push(error_response(err.status, REASON_PHRASES[err.status], err.detail))
        if ex is not None:
            self.exchange = None
            self._log_exchange(ex, err.status)
            if self.origin is not None and self.origin.session is self:  # mid-exchange
                self._drop_origin()
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


def _no_eof() -> bool:
    return True
