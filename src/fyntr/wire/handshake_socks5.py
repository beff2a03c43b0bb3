"""The SOCKS5 front-end of the handshake (docs/original.md §7): fields read by
wire/socks5.py, each within its deadline, a refusal as the reply RFC 1928 gives it, and
with --auth-file user name and password (RFC 1929) before the request."""

from __future__ import annotations

import functools
import logging

from fyntr.errors import (
    HandshakeError,
    Rep,
    Status,
    timed_out,
)
from fyntr.policy.auth import socks_credentials
from fyntr.wire.commands import (
    Arm,
    Close,
    Command,
    ResumeReading,
    Send,
)
from fyntr.wire.handshake import Handshake, Stage
from fyntr.wire.socks5 import (
    AUTH_FAILED_REPLY,
    AUTH_PASSED_REPLY,
    Socks5Parser,
    refusal_reply,
    success_reply,
)
from fyntr.wire.target import IPAddress, Target


class Socks5Handshake(Handshake):
    """SOCKS5 (docs/original.md §7): each field within ``socks5_read_s``; a refusal is the
    reply ``refusal_reply`` renders, and a client that is not one is sent nothing."""

    NAME = "SOCKS5"
    VERB = "SOCKS5 CONNECT "
    TARGET_KEY = "socks5_target"
    REPLIES_BOUND = True

    parser: Socks5Parser
    denied: HandshakeError | None = None  # a refused client's reason

    def _open_parser(self) -> None:
        self.parser = Socks5Parser(auth=self.auth)

    def start(self) -> list[Command]:
        return [Arm(self.timeouts.socks5_read_s)]

    def _capacity(self) -> list[Command]:
        return [Close()]  # upstream closes without a byte

    def _client_refused(self, err: HandshakeError) -> list[Command]:
        """SOCKS5 refuses a request, not a greeting (RFC 1928 §6): the greeting is
        answered and the request refused with REP 0x02, never dialled, nor credentials
        checked."""
        self.denied = err
        self.auth = False
        self._open_parser()
        return self.start()

    def _read(self, data: bytes) -> list[Command]:
        phase = self.parser.phase
        fed = self.parser.feed(data)
        out: list[Command] = [Send(reply) for reply in fed.replies]
        if fed.error is not None:
            return out + self.refuse(fed.error)
        if fed.credentials is not None:
            return out + self._authenticate(functools.partial(socks_credentials, *fed.credentials))
        if fed.request is None:
            if self.parser.phase is not phase:
                out.append(Arm(self.timeouts.socks5_read_s))
            return out
        if self.denied is not None:
            return out + self.refuse(self.denied, logging.INFO)
        self.leftover = fed.request.leftover
        out += self._target(Target(fed.request.host, fed.request.port))
        if self.stage is Stage.READING:
            out += self._connect()
        return out

    def _eof(self) -> list[Command]:
        # A client that goes away is its own business (port scans, health checks): INFO.
        detail = f"EOF while waiting for SOCKS5 {self.parser.phase.value}"
        return self.refuse(
            HandshakeError(Status.BAD_REQUEST, None, "eof", detail), level=logging.INFO
        )

    def _expired(self) -> list[Command]:
        limit = self.timeouts.socks5_read_s
        detail = f"timed out waiting for SOCKS5 {self.parser.phase.value} after {limit:g}s"
        return self.refuse(timed_out(detail, None), level=logging.ERROR)

    def _reply(self, err: HandshakeError) -> bytes:
        return refusal_reply(err)

    def _hold(self, data: bytes) -> None:
        self.parser.hold(data)

    def _auth_passed(self) -> list[Command]:
        """RFC 1929's success, then the request: what came already is read now."""
        self.stage = Stage.READING
        self.parser.authenticated()
        out: list[Command] = [Send(AUTH_PASSED_REPLY), ResumeReading()]
        out += [Arm(self.timeouts.socks5_read_s), *self._read(b"")]
        if self.client_eof and self.stage is Stage.READING:
            out += self._eof()
        return out

    def _auth_failed(self, err: HandshakeError) -> list[Command]:
        """RFC 1929 §2: a failure status, and the connection is closed."""
        err = HandshakeError(err.status, None, err.reason, err.detail)  # nothing after it
        return [Send(AUTH_FAILED_REPLY), *self.refuse(err)]

    def _describe(self, err: HandshakeError) -> str:
        if err.rep is None or err.rep is Rep.NO_ACCEPTABLE_METHODS:
            return ""
        return f" (REP {err.rep.value:#04x})"

    def _success(self, bound: tuple[IPAddress, int] | None) -> bytes:
        assert bound is not None
        return success_reply(*bound)
