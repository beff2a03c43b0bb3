"""Parent proxies (``--upstream``, docs/parent-proxies.md): which targets go through one,
and a connection through the first parent that answers.

A parent is dialed by its own name and address, never judged by the destination
policy; the target goes to it by name (CONNECT host:port, SOCKS5 ATYP 3), so fyntr
looks nothing up for it. A parent that fails (refused, no answer within one connect
attempt, a 5xx or 407 to CONNECT, a SOCKS5 general failure) is skipped for
``PARENT_FAIL_TIMEOUT_S``, unless every parent is: then each is tried again in order.
A parent that answers for the destination (403, a SOCKS5 "host unreachable") is not
failing: the client gets a 502 naming it, and no other parent is asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fyntr.errors import HandshakeError, Rep, bad_gateway
from fyntr.limits import PARENT_FAIL_TIMEOUT_S, PARENT_REPLY_TIMEOUT_S
from fyntr.log import log
from fyntr.net.out.dialer import Dialed, Dialer
from fyntr.wire import parent as wire
from fyntr.wire.parent import NoProxy, Parent
from fyntr.wire.target import Host, Target, canonical_ip, parse_ip


def _host(name: str) -> Host:
    """A parent's host as the resolver takes it (parse_parent checked it)."""
    ip = parse_ip(name)
    return Host(name, None, name) if ip is None else Host(name, canonical_ip(ip), None)


class Failed(Exception):
    """The parent, not the destination, failed: try the next one."""


class Parents:
    __slots__ = (
        "_failed_until",
        "_hosts",
        "dialer",
        "fallback_direct",
        "no_proxy",
        "parents",
        "routed",
    )

    def __init__(
        self,
        parents: Sequence[Parent],
        no_proxy: NoProxy,
        dialer: Dialer,
        *,
        fallback_direct: bool = False,
    ) -> None:
        self.parents = tuple(parents)
        self.no_proxy = no_proxy
        self.dialer = dialer
        self.fallback_direct = fallback_direct
        self._failed_until = [0.0] * len(self.parents)
        self._hosts = [_host(p.host) for p in self.parents]
        # A parent across a router: connect pacing learns from the sockets to it.
        self.routed = any(not p.loopback for p in self.parents)

    def routes(self, target: Target) -> bool:
        """Whether ``target`` goes through a parent: there is one, and it is no
        exception (``--no-upstream``; loopback never goes through one)."""
        return bool(self.parents) and not self.no_proxy.matches(target)

    async def open(
        self, loop: asyncio.AbstractEventLoop, flow_id: int, target: Target, *, tunnel: bool
    ) -> Dialed | None:
        """A connection through the first parent that answers: a tunnel to ``target``
        (``tunnel``, or any SOCKS5 parent), else a connection to an HTTP parent for
        plain HTTP requests in absolute form. None: none answered and the fallback is
        to go direct. Raises HandshakeError."""
        now = loop.time()
        order = [i for i, until in enumerate(self._failed_until) if until <= now]
        errors: list[str] = []
        for i in order or range(len(self.parents)):
            parent = self.parents[i]
            try:
                dialed = await self._through(loop, flow_id, i, target, tunnel=tunnel)
            except Failed as exc:
                self._failed_until[i] = loop.time() + PARENT_FAIL_TIMEOUT_S
                log.warning(
                    "flow%d: parent proxy %s failed: %s; skipping it for %gs",
                    flow_id,
                    parent.name,
                    exc,
                    PARENT_FAIL_TIMEOUT_S,
                )
                errors.append(f"{parent.name}: {exc}")
                continue
            self._failed_until[i] = 0.0
            return dialed
        if self.fallback_direct:
            log.warning("flow%d: no parent proxy answered; going direct", flow_id)
            return None
        raise bad_gateway("parent_failed", "no parent proxy answered (" + "; ".join(errors) + ")")

    async def _through(
        self, loop: asyncio.AbstractEventLoop, flow_id: int, i: int, target: Target, *, tunnel: bool
    ) -> Dialed:
        parent = self.parents[i]
        try:
            addrs = await self.dialer.resolve(self._hosts[i], parent.port)
            dialed = await self.dialer.dial_once(loop, flow_id, addrs, parent.port)
        except HandshakeError as err:
            raise Failed(err.detail) from None
        dialed = dialed._replace(via=parent)
        if parent.scheme == "http" and not tunnel:
            return dialed
        try:
            async with asyncio.timeout(PARENT_REPLY_TIMEOUT_S):
                if parent.scheme == "http":
                    await _http_connect(dialed, parent, target)
                else:
                    await _socks5_connect(dialed, parent, target)
        except BaseException as exc:
            dialed.transport.abort()
            if isinstance(exc, TimeoutError):
                raise Failed(f"no answer within {PARENT_REPLY_TIMEOUT_S:g}s") from None
            if isinstance(exc, ValueError):
                raise Failed(str(exc)) from None
            raise
        return dialed


# SOCKS5 replies that speak of the destination, not of the parent (RFC 1928 §6).
_ABOUT_THE_DESTINATION = frozenset(
    (Rep.NOT_ALLOWED, Rep.NETWORK_UNREACHABLE, Rep.HOST_UNREACHABLE, Rep.CONNECTION_REFUSED)
)


async def _read_until(dialed: Dialed, buf: bytes) -> bytes:
    data = await dialed.protocol.receive()
    if not data:
        raise ValueError("it closed the connection before answering")
    return buf + data


async def _http_connect(dialed: Dialed, parent: Parent, target: Target) -> None:
    dialed.transport.write(wire.connect_request(parent, target))
    buf = b""
    while (reply := wire.connect_reply(buf)) is None:
        buf = await _read_until(dialed, buf)
    said = f"{reply.status} {reply.reason}".strip()
    if 200 <= reply.status < 300:
        if len(buf) > reply.size:  # the origin spoke first: the tunnel's
            dialed.protocol.early.insert(0, buf[reply.size :])
        return
    if reply.status == 407:
        raise ValueError(
            f"it asks for credentials ({said}); give them in --upstream"
            if not parent.user
            else f"it refused the credentials of --upstream ({said})"
        )
    if reply.status >= 500:
        raise ValueError(f"it answered {said}")
    rep = Rep.NOT_ALLOWED if reply.status == 403 else Rep.HOST_UNREACHABLE
    raise bad_gateway("parent_refused", f"parent proxy {parent.name} answered {said}", rep)


async def _socks5_connect(dialed: Dialed, parent: Parent, target: Target) -> None:
    write = dialed.transport.write
    write(wire.socks5_greeting(parent))
    buf = b""
    while (auth := wire.socks5_method(buf, parent)) is None:
        buf = await _read_until(dialed, buf)
    if auth:
        write(auth)
        buf = b""
        while (accepted := wire.socks5_auth_reply(buf)) is None:
            buf = await _read_until(dialed, buf)
        if not accepted:
            raise ValueError("it refused the credentials of --upstream (RFC 1929)")
    write(wire.socks5_connect(target))
    buf = b""
    while (reply := wire.socks5_reply(buf)) is None:
        buf = await _read_until(dialed, buf)
    rep, size = reply
    if rep == Rep.SUCCEEDED:
        if len(buf) > size:
            dialed.protocol.early.insert(0, buf[size:])
        return
    if rep in _ABOUT_THE_DESTINATION:
        assert isinstance(rep, Rep)
        raise bad_gateway(
            "parent_refused", f"parent proxy {parent.name} answered {rep.name.lower()}", rep
        )
    raise ValueError(f"it answered SOCKS5 reply {int(rep):#04x}")
