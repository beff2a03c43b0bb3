"""The HTTP CONNECT front-end of the handshake (docs/original.md §6): the request line and
headers read by wire/http_connect.py, refusals as bare status lines, a plain HTTP request
handed on whole, ``GET /proxy.pac`` answered, and with --auth-file the 407 and its
challenge (RFC 9110 §11.7.1)."""

from __future__ import annotations

import functools
import logging

from fyntr.errors import (
    REASON_PHRASES,
    STATUS_LINES,
    HandshakeError,
    Status,
    timed_out,
)
from fyntr.policy.auth import basic_credentials
from fyntr.wire.commands import (
    Arm,
    Command,
    HandOn,
    Log,
    Refused,
    Send,
    ServePac,
)
from fyntr.wire.handshake import Handshake, Stage
from fyntr.wire.http_connect import (
    ConnectParser,
    ConnectPhase,
    HeadComplete,
    PacRequest,
    TargetParsed,
)
from fyntr.wire.http_rewrite import error_response
from fyntr.wire.target import IPAddress


class HttpHandshake(Handshake):
    """HTTP CONNECT (docs/original.md §6): the request line within ``request_line_s``, the
    headers within ``headers_s``; refusals are bare status lines."""

    NAME = "HTTP CONNECT"
    VERB = "CONNECT "
    TARGET_KEY = "connect_target"

    parser: ConnectParser

    def _open_parser(self) -> None:
        self.parser = ConnectParser()

    def start(self) -> list[Command]:
        return [Arm(self.timeouts.request_line_s)]

    def _capacity(self) -> list[Command]:
        return [Send(STATUS_LINES[Status.SERVICE_UNAVAILABLE]), *self._linger()]

    def _client_refused(self, err: HandshakeError) -> list[Command]:
        """At once, with the reason in the body: the client's request is not read."""
        self.stage = Stage.READING  # _linger decides how it ends
        reply = error_response(err.status, REASON_PHRASES[err.status], err.detail)
        text = f"flow{self.who.flow_id}: {self.NAME} connection refused: {err.detail}"
        return [Refused(err.reason), Log(logging.INFO, text), Send(reply), *self._linger()]

    def _read(self, data: bytes) -> list[Command]:
        try:
            events = self.parser.feed(data)
        except HandshakeError as err:
            return self.refuse(err)
        out: list[Command] = []
        for event in events:
            if isinstance(event, TargetParsed):
                out += self._target(event.target)
                if self.stage is not Stage.READING:
                    return out
            elif isinstance(event, HeadComplete):
                self.leftover = event.leftover
                if self.auth:
                    read = functools.partial(basic_credentials, event.authorization)
                    return out + self._authenticate(read)
                return out + self._connect()
            elif isinstance(event, PacRequest):
                if self.verbose:
                    text = f"flow{self.who.flow_id}: proxy auto-configuration for {self.who.peer}"
                    out.append(Log(logging.INFO, text))
                return [*out, ServePac(), *self._linger()]
            else:
                self.stage = Stage.DONE
                return [HandOn(event.data, self.client_eof)]
        if events:  # the request line, without the end of the head
            out.append(Arm(self.timeouts.headers_s))
        return out

    def _eof(self) -> list[Command]:
        try:
            self.parser.feed_eof()
        except HandshakeError as err:
            return self.refuse(err)

    def _expired(self) -> list[Command]:
        phase = self.parser.phase
        limit = (
            self.timeouts.request_line_s
            if phase is ConnectPhase.REQUEST_LINE
            else self.timeouts.headers_s
        )
        detail = f"timed out reading the {phase.value} after {limit:g}s"
        return self.refuse(timed_out(detail))

    def _reply(self, err: HandshakeError) -> bytes:
        if err.status is Status.PROXY_AUTH_REQUIRED:  # with its challenge
            return error_response(err.status, REASON_PHRASES[err.status], err.detail)
        return STATUS_LINES[err.status]

    def _auth_passed(self) -> list[Command]:
        out = self._check_host()
        return out if self.stage is not Stage.AUTHENTICATING else out + self._connect()

    def _auth_failed(self, err: HandshakeError) -> list[Command]:
        return self.refuse(err)

    def _describe(self, err: HandshakeError) -> str:
        return f" ({err.status.value} {REASON_PHRASES[err.status]})"

    def _success(self, bound: tuple[IPAddress, int] | None) -> bytes:
        return STATUS_LINES[Status.OK]
