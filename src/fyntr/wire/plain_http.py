"""Plain HTTP forwarding, sans-I/O (docs/plain-http.md): one client connection's requests,
one exchange at a time, as a machine. Events in: what the client's and the origin's
message readers complete, and the answers to the machine's own commands; commands out:
what to send where, which origin to reach, what becomes of it once the response is over,
and when the connection ends. The rules it applies (RFC 9112 §6 framing, §9 persistence;
RFC 9110 §7.6 hop-by-hop fields, §9.2.2 what may be sent again) are in wire/exchange.py.
The events and commands are in wire/plain_commands.py; net/forward/session.py performs
the commands and decides nothing; tests/unit/test_plain_http.py asserts the exact
sequences.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from fyntr.errors import (
    REASON_PHRASES,
    HandshakeError,
    auth_required,
    bad_gateway,
    log_level,
    timed_out,
)
from fyntr.policy.auth import Verdict, basic_credentials
from fyntr.wire.commands import Arm, Authenticate, Log, Refused, Requester
from fyntr.wire.ends import BOTH_CLOSED, Side, end_reason
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
from fyntr.wire.http_forward import END
from fyntr.wire.http_rewrite import LAST_CHUNK, chunk, error_response
from fyntr.wire.parent import Parent
from fyntr.wire.plain_commands import (
    Abort,
    Body,
    ClientEof,
    ClientError,
    Command,
    Finish,
    HeadTimeout,
    HostCheck,
    OriginEof,
    OriginFailed,
    Own,
    Reach,
    Reached,
    Release,
    Request,
    RequestEnd,
    Response,
    Served,
    Shutdown,
    ToClient,
    ToOrigin,
    Unreached,
    Users,
)


class PlainHttp:
    """The requests of one client connection. ``exchange`` is the one under way; a
    request head is handed in only when there is none (pipelined ones wait)."""

    def __init__(
        self, who: Requester, threats: HostCheck, *, debug: bool, users: Users | None = None
    ) -> None:
        """``debug``: a request's line is logged when it begins (at DEBUG; its INFO line,
        with status, bytes and duration, is logged when it ends: ``Served``)."""
        self.who = who
        self.threats = threats
        self.debug = debug
        self.users = users
        self.exchange: Exchange | None = None
        self.target = "-"  # the last request's host:port
        self.user: str | None = None  # whom the first request's credentials named
        self.via: Parent | None = None  # the parent of the exchange's origin
        self.client_eof = False
        self._judging: Request | None = None  # its credentials are being checked
        # The Proxy-Authorization value a request passed with, and under which users:
        # the same value again is not looked up again.
        self._passed: tuple[bytes, object] | None = None

    def handle(self, event: Any) -> list[Command]:
        commands: list[Command] = _HANDLERS[type(event)](self, event)
        return commands

    # --- the client's side --------------------------------------------------------------
    def _request(self, event: Request) -> list[Command]:
        """With --auth-file, each request's credentials first (RFC 7617)."""
        if self.users is None:
            return self._begin(event)
        try:
            value = authorization_of(event.head)
            if value is not None and self._passed == (value, self.users.generation):
                return self._begin(event)
            credentials = basic_credentials(value)
        except HandshakeError as err:
            return self._refuse(err, None)
        self._judging = event
        return [Authenticate(credentials)]

    def _verdict(self, verdict: Verdict) -> list[Command]:
        event, self._judging = self._judging, None
        if event is None or self.users is None:
            return []
        if verdict.user is None:
            return self._refuse(auth_required(verdict.reason, verdict.detail), None)
        self._passed = (authorization_of(event.head) or b"", self.users.generation)
        out: list[Command] = []
        if self.user is None:
            self.user = verdict.user
            out.append(Own(verdict.user))
        return out + self._begin(event)

    def _begin(self, event: Request) -> list[Command]:
        head = event.head
        try:
            ex = begin(head, event.now, event.up_mark, event.down_mark)
        except HandshakeError as err:
            return self._refuse(err, None)
        self.exchange, self.target = ex, ex.dest.authority
        out: list[Command] = []
        if self.debug:
            text = f"flow{self.who.flow_id}: {head.method.decode()} {ex.url}"
            out.append(Log(logging.DEBUG, text))
        try:
            refuse_upgrade(head)
            self.threats.check_host(self.who, ex.dest.target)
        except HandshakeError as err:
            return out + self._refuse(err, ex)
        return [*out, Reach(ex.dest, head.method == b"HEAD")]

    def _body(self, event: Body) -> list[Command]:
        ex = self.exchange
        assert ex is not None
        return [ToOrigin(chunk(event.data) if ex.upload.chunked else event.data)]

    def _request_end(self, _event: RequestEnd) -> list[Command]:
        ex = self.exchange
        assert ex is not None
        ex.request_done = True
        return [ToOrigin(LAST_CHUNK)] if ex.upload.chunked else []  # no trailers (§6.5.1)

    def _client_eof(self, event: ClientEof) -> list[Command]:
        self.client_eof = True
        ex = self.exchange
        if ex is None and not event.pending:
            return [Finish(end_reason(Side.CLIENT, None))]
        if ex is not None and not ex.request_done:
            return [Abort(end_reason(Side.CLIENT, None))]  # went away mid-request
        return []  # a response on its way still goes out; then the connection closes

    def _client_error(self, event: ClientError) -> list[Command]:
        ex = self.exchange
        if ex is not None and ex.status is not None:
            return [Abort("client_protocol_error")]  # mid-response: nothing can be said
        return self._refuse(event.error, ex)

    def _head_timeout(self, event: HeadTimeout) -> list[Command]:
        """A request head took longer than a handshake's: 408, as CONNECT; one pipelined
        behind a response under way waits for it."""
        if self.exchange is not None:
            return [Arm(event.limit)]
        detail = f"timed out reading the request headers after {event.limit:g}s"
        return self._refuse(timed_out(detail), None)

    def _shutdown(self, _event: Shutdown) -> list[Command]:
        self.client_eof = True
        return [Finish("shutdown")] if self.exchange is None else []

    # --- the origin's side --------------------------------------------------------------
    def _reached(self, event: Reached) -> list[Command]:
        """The request head goes first: absolute-form with the parent's credentials to
        an HTTP parent (RFC 9112 §3.2.2), else as rewritten for the origin."""
        ex = self.exchange
        assert ex is not None
        ex.reused, self.via = event.reused, event.via
        via = event.via
        head = ex.request if via is None or via.scheme != "http" else parent_head(ex, via)
        return [ToOrigin(head)]

    def _unreached(self, event: Unreached) -> list[Command]:
        return self._refuse(event.error, self.exchange)

    def _response(self, event: Response) -> list[Command]:
        ex = self.exchange
        if ex is None:
            return []
        if self.via is not None and ex.response is None and asks_credentials(event.events):
            # The parent's challenge is for fyntr: the client could not answer it.
            detail = f"parent proxy {self.via.name} asks for credentials (407): check --upstream"
            return self._refuse(bad_gateway("parent_refused", detail), ex)
        sent: list[bytes] = []
        read = read_response(ex, event.events, sent)
        out: list[Command] = [ToClient(b"".join(sent))] if sent else []
        if read is Read.DONE:
            return out + self._exchange_done(event.upload_queued)
        if read is Read.SWITCHED:
            return out + self._origin_failed(OriginFailed("the origin switched protocols"))
        return out

    def _origin_eof(self, event: OriginEof) -> list[Command]:
        """An origin's close ends a response framed by nothing else (RFC 9112 §6.3)."""
        ex = self.exchange
        if ex is None or not ends_with_close(ex):
            return []
        return self._response(Response(deque((END,)), event.upload_queued))

    def _origin_failed(self, event: OriginFailed) -> list[Command]:
        ex = self.exchange
        if ex is None:
            return [Release(keep=False)]
        if may_resend(ex):  # a kept connection the origin was closing: once more, anew
            ex.retried = True
            text = f"flow{self.who.flow_id}: the kept connection was closed; sending again"
            reach = Reach(ex.dest, ex.head.method == b"HEAD", fresh=True)
            return [Log(logging.INFO, text), Release(keep=False), reach]
        if ex.status is None:
            return self._refuse(bad_gateway("upstream_error", event.detail), ex)
        self.exchange = None
        text = f"flow{self.who.flow_id}: {ex.head.method.decode()} {ex.url}: {event.detail}"
        return [Release(keep=False), Log(logging.WARNING, text), Abort("upstream_error")]

    def _exchange_done(self, upload_queued: bool) -> list[Command]:
        """The origin's connection is kept only at rest with the request sent whole; the
        client's only if it says so and its request was read to the end."""
        ex = self.exchange
        assert ex is not None and ex.response is not None
        self.exchange = None
        out: list[Command] = [
            Served(ex, ex.response.status),
            Release(keep=origin_kept(ex, upload_queued)),
        ]
        if not client_kept(ex, self.client_eof):
            out.append(Finish(BOTH_CLOSED))  # HTTP/1.0, Connection: close, a body unread
        return out

    # --- ends ---------------------------------------------------------------------------
    def _refuse(self, err: HandshakeError, ex: Exchange | None) -> list[Command]:
        """An answer of fyntr's own, then the close once it is written."""
        phrase = REASON_PHRASES[err.status]
        where = ex.url if ex is not None else "request"
        text = (
            f"flow{self.who.flow_id}: {where} from {self.who.peer}: {err.detail} "
            f"({err.status} {phrase})"
        )
        out: list[Command] = [
            Refused(err.reason),
            Log(log_level(err), text),
            ToClient(error_response(err.status, phrase, err.detail)),
        ]
        if ex is not None:
            self.exchange = None
            out += [Served(ex, err.status), Release(keep=False)]
        return [*out, Finish(err.reason)]


_HANDLERS: dict[type, Any] = {
    Request: PlainHttp._request,
    Verdict: PlainHttp._verdict,
    Body: PlainHttp._body,
    RequestEnd: PlainHttp._request_end,
    ClientEof: PlainHttp._client_eof,
    ClientError: PlainHttp._client_error,
    HeadTimeout: PlainHttp._head_timeout,
    Shutdown: PlainHttp._shutdown,
    Reached: PlainHttp._reached,
    Unreached: PlainHttp._unreached,
    Response: PlainHttp._response,
    OriginEof: PlainHttp._origin_eof,
    OriginFailed: PlainHttp._origin_failed,
}
