"""The handshake, sans-I/O (docs/original.md §6, §7): events in, commands out.

A ``Handshake`` reads one request through its front-end (wire/handshake_http.py: HTTP
CONNECT, and a plain HTTP request handed on whole; wire/handshake_socks5.py), judges its
host (with --auth-file, once the credentials passed), asks for
the upstream connection, and answers. Its events and commands, and ``Upstream``, the check
order once a request is read (docs/original.md §6.5, shared with plain HTTP), are in
wire/commands.py. Which deadline applies while what is read, which reply each refusal
gets, and what is logged and counted, are decided here and nowhere else:
net/front/inbound.py performs the commands and net/out/establish.py the resolve, pace
and dial steps. tests/unit/test_handshake.py asserts the exact command sequences.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from enum import Enum
from typing import ClassVar

from fyntr.config import Timeouts
from fyntr.errors import (
    HandshakeError,
    auth_required,
    forbidden,
    log_level,
    timed_out,
)
from fyntr.limits import LINGER_S
from fyntr.policy.auth import Credentials, Verdict
from fyntr.wire.commands import (
    Arm,
    Authenticate,
    Checks,
    Close,
    Command,
    Connect,
    Data,
    Eof,
    Event,
    Expired,
    Failed,
    Linger,
    Log,
    PauseReading,
    Refused,
    Requester,
    Send,
    StartTunnel,
    Upstream,
)
from fyntr.wire.target import IPAddress, Target


class Stage(Enum):
    READING = "reading"
    AUTHENTICATING = "authenticating"  # --auth-file: the credentials are being checked
    CONNECTING = "connecting"
    LINGERING = "lingering"
    DONE = "done"


class Handshake:
    """What the front-ends share: the stages after reading, refusals and lingering."""

    NAME: ClassVar[str]  # the protocol, for the log
    VERB: ClassVar[str]  # before the target in log lines
    TARGET_KEY: ClassVar[str]  # the target's key in threat-feed log lines
    REPLIES_BOUND: ClassVar[bool] = False  # the success reply names the upstream's address

    def __init__(
        self,
        who: Requester,
        checks: Checks,
        timeouts: Timeouts,
        *,
        verbose: bool,
        auth: bool = False,
    ) -> None:
        self.who = who
        self.checks = checks
        self.timeouts = timeouts
        self.verbose = verbose  # INFO lines are wanted
        self.auth = auth  # --auth-file: credentials first, then the host is judged
        self.stage = Stage.READING
        self.target: Target | None = None
        self.leftover = b""
        self.client_eof = False
        self._open_parser()

    # --- for the front-ends ----------------------------------------------------------
    def start(self) -> list[Command]:
        """Admitted: the first deadline."""
        raise NotImplementedError

    def _capacity(self) -> list[Command]:
        """Refused at the cap, before a byte is read."""
        raise NotImplementedError

    def _read(self, data: bytes) -> list[Command]:
        raise NotImplementedError

    def _eof(self) -> list[Command]:
        """EOF while reading the request."""
        raise NotImplementedError

    def _expired(self) -> list[Command]:
        """The deadline passed while reading the request."""
        raise NotImplementedError

    def _reply(self, err: HandshakeError) -> bytes:
        raise NotImplementedError

    def _describe(self, err: HandshakeError) -> str:
        """How the log line names the reply."""
        raise NotImplementedError

    def _success(self, bound: tuple[IPAddress, int] | None) -> bytes:
        raise NotImplementedError

    def _open_parser(self) -> None:
        """The front-end's parser, for a new request (with or without credentials)."""
        raise NotImplementedError

    def _hold(self, data: bytes) -> None:
        """Read while the credentials are checked, before the pause took hold."""
        self.leftover += data

    def _auth_passed(self) -> list[Command]:
        raise NotImplementedError

    def _auth_failed(self, err: HandshakeError) -> list[Command]:
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------
    def at_capacity(self, cap: int, *, per_client: bool = False) -> list[Command]:
        """At ``--max-connections``, or with ``per_client`` at the client's own cap
        (``--max-connections-per-client``): refused before a byte is read."""
        self.stage = Stage.DONE
        reason = "max_connections_per_client" if per_client else "max_connections"
        text = (
            f"flow{self.who.flow_id}: {self.NAME} connection from {self.who.peer} rejected "
            f"before parsing: {reason.replace('_', ' ')} ({cap}) reached"
        )
        return [Refused(reason), Log(logging.WARNING, text), *self._capacity()]

    def client_refused(self, ranges: str) -> list[Command]:
        """A client outside the allowed ranges (``--client-allow``), judged at accept:
        refused with a reply the client can read, and never dialled for."""
        err = forbidden(
            "client_denied",
            f"{self.who.peer} may not use this proxy: only clients in {ranges} may "
            "(--client-allow)",
        )
        return self._client_refused(err)

    def _client_refused(self, err: HandshakeError) -> list[Command]:
        raise NotImplementedError

    def handle(self, event: Event) -> list[Command]:
        stage = self.stage
        if isinstance(event, Data):
            if stage is Stage.READING:
                return self._read(event.data)
            if stage is Stage.CONNECTING:  # read before the pause took hold: forwarded
                self.leftover += event.data
            elif stage is Stage.AUTHENTICATING:
                self._hold(event.data)
            return []  # lingering: drained
        if isinstance(event, Eof):
            self.client_eof = True
            if stage is Stage.READING:
                return self._eof()
            if stage is Stage.LINGERING:
                self.stage = Stage.DONE
                return [Close()]
            return []  # connecting: the tunnel passes it on once it is up
        if isinstance(event, Expired):
            if stage is Stage.READING:
                return self._expired()
            if stage is Stage.AUTHENTICATING:  # the reading deadline holds for the check
                return self._auth_failed(timed_out("timed out checking the credentials"))
            if stage is Stage.LINGERING:
                self.stage = Stage.DONE
                return [Close()]
            return []
        if isinstance(event, Verdict):
            if stage is not Stage.AUTHENTICATING:
                return []
            if event.user is None:
                return self._auth_failed(auth_required(event.reason, event.detail))
            return self._auth_passed()
        if stage is not Stage.CONNECTING:
            return []
        if isinstance(event, Failed):
            return self.refuse(event.error)
        assert self.target is not None
        self.stage = Stage.DONE
        return [
            Send(self._success(event.bound)),
            StartTunnel(self.target, self.leftover, self.client_eof),
        ]

    def _target(self, target: Target) -> list[Command]:
        """The request names its target: log it, and check the host before DNS (with
        --auth-file, once the credentials have passed)."""
        self.target = target
        out: list[Command] = []
        if self.verbose:
            out.append(Log(logging.INFO, f"flow{self.who.flow_id}: {self.VERB}{target.authority}"))
        if not self.auth:
            out += self._check_host()
        return out

    def _check_host(self) -> list[Command]:
        assert self.target is not None
        try:
            self.checks.check_host(self.who, self.target)
        except HandshakeError as err:
            return self.refuse(err)
        return []

    def _authenticate(self, read: Callable[[], Credentials]) -> list[Command]:
        """Basic credentials (RFC 7617) or RFC 1929's, as ``read`` gives them: checked
        off the loop, reading paused meanwhile; none given, or unreadable, fail at once."""
        try:
            credentials = read()
        except HandshakeError as err:
            return self._auth_failed(err)
        self.stage = Stage.AUTHENTICATING
        return [PauseReading(), Authenticate(credentials)]

    def _connect(self) -> list[Command]:
        assert self.target is not None
        self.stage = Stage.CONNECTING
        return [
            Arm(math.inf),
            PauseReading(),
            Connect(Upstream(self.checks, self.who, self.target, plain=False)),
        ]

    def refuse(self, err: HandshakeError, level: int | None = None) -> list[Command]:
        """Count, log, reply, then linger (or close: the client has sent its EOF)."""
        if level is None:
            level = log_level(err)
        where = f"{self.target.authority} " if self.target is not None else ""
        text = (
            f"flow{self.who.flow_id}: {self.VERB}{where}from {self.who.peer}: "
            f"{err.detail}{self._describe(err)}"
        )
        out: list[Command] = [Refused(err.reason), Log(level, text)]
        reply = self._reply(err)
        if reply:
            out.append(Send(reply))
        return out + self._linger()

    def _linger(self) -> list[Command]:
        if self.client_eof:
            # Nothing left to drain: close at once (after the reply is flushed) and free
            # the slot; lingering would let a client that loops connect, bad request,
            # FIN hold a slot for LINGER_S each time.
            self.stage = Stage.DONE
            return [Close()]
        self.stage = Stage.LINGERING
        return [Linger(), Arm(LINGER_S)]
