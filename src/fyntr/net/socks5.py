"""The SOCKS5 handshake on the loop: ``wire/socks5.py`` driven by a protocol."""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

from fyntr.errors import HandshakeError
from fyntr.net.inbound import Inbound
from fyntr.wire.socks5 import Socks5Error, Socks5Parser, failure_reply, success_reply
from fyntr.wire.target import Target

if TYPE_CHECKING:
    from fyntr.net.dialer import Dialed


class Socks5Inbound(Inbound):
    PROTOCOL_NAME = "SOCKS5"
    TARGET_KEY = "socks5_target"
    LOG_VERB = "SOCKS5 CONNECT "

    def started(self) -> None:
        self.parser = Socks5Parser()
        self._arm()

    def _arm(self) -> None:
        """Each field read has its own timeout (upstream §7.1)."""
        self.deadline = self.state.clock() + self.state.settings.timeouts.socks5_read_s

    def reject_at_capacity(self) -> None:
        self.transport.close()  # upstream closes without a byte

    def data_received(self, data: bytes) -> None:
        if self.lingering:  # reading is paused while dialing (establish): no byte then
            return
        phase = self.parser.phase
        try:
            replies, request = self.parser.feed(data)
        except Socks5Error as err:
            self.refuse(err.reply, err.reason, err.detail)
            return
        for reply in replies:
            self.transport.write(reply)
        if request is None:
            if self.parser.phase is not phase:
                self._arm()
            return
        self.leftover = request.leftover
        target = Target(request.host, request.port)
        if self.check_host(target):
            self.establish(target)

    def eof_received(self) -> bool:
        self.client_eof = True
        if self.lingering:
            self.transport.close()
            return False
        if self.target is not None:
            return True
        # A client that goes away is its own business (port scans, health checks): INFO.
        self.refuse(
            b"",
            "eof",
            f"EOF while waiting for SOCKS5 {self.parser.phase.value}",
            level=logging.INFO,
        )
        return True

    def expire(self) -> None:
        limit = self.state.settings.timeouts.socks5_read_s
        self.refuse(
            b"",
            "timeout",
            f"timed out waiting for SOCKS5 {self.parser.phase.value} after {limit:g}s",
            level=logging.ERROR,
        )

    def error_reply(self, err: HandshakeError) -> bytes:
        return failure_reply(err.rep)

    def describe(self, err: HandshakeError) -> str:
        return f"REP {err.rep.value:#04x}"

    def reply_success(self, dialed: Dialed) -> None:
        host, port = dialed.transport.get_extra_info("sockname")[:2]
        self.transport.write(success_reply(ipaddress.ip_address(host), port))
