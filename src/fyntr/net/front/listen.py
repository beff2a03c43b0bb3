"""Listening sockets and the file descriptors they need: binding (dual-stack like the
original), the FD limit raised to what the cap needs (docs/original.md §3.6), and what the limit
leaves for splice pipes, connections waiting at the cap and idle origin connections."""

from __future__ import annotations

import ipaddress
import socket
from typing import NamedTuple

from fyntr.config import validate_bind_address
from fyntr.errors import ConfigError
from fyntr.limits import (
    FD_HEADROOM,
    FDS_PER_CONNECTION,
    FDS_PER_SPLICED_TUNNEL,
    LISTEN_BACKLOG,
    MAX_CAP_WAITERS,
    POOL_MAX,
    SPLICE_MAX_TUNNELS,
)
from fyntr.log import log
from fyntr.net.kernel.platform import resource
from fyntr.wire.target import format_host_port


def bind_candidates(text: str, port: int) -> list[tuple[int, str]]:
    """(family, address) to try in order: an IP as is, a name resolved IPv4-first
    (docs/original.md §1.2)."""
    value = validate_bind_address(text)
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return [(socket.AF_INET if ip.version == 4 else socket.AF_INET6, str(ip))]
    try:
        infos = socket.getaddrinfo(value, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"cannot resolve bind address '{value}': {exc}") from None
    seen: list[tuple[int, str]] = []
    for family, *_rest, sockaddr in infos:
        item = (int(family), str(sockaddr[0]))
        if item not in seen and family in (socket.AF_INET, socket.AF_INET6):
            seen.append(item)
    if not seen:
        raise ConfigError(f"bind address '{value}' resolved to no address")
    return sorted(seen, key=lambda item: item[0] != socket.AF_INET)


def open_listener(text: str, port: int) -> socket.socket:
    """A non-blocking listening socket on the first candidate that binds."""
    last: OSError | None = None
    for family, address in bind_candidates(text, port):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # Dual-stack like the original (asyncio would force V6ONLY).
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((address, port))
            sock.listen(LISTEN_BACKLOG)
        except OSError as exc:
            sock.close()
            last = OSError(exc.errno, f"{address}:{port}: {exc.strerror}")
            continue
        sock.setblocking(False)
        return sock
    raise ConfigError(f"cannot listen on {text}:{port}: {last}")


def format_sockname(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return format_host_port(host, port)


def fd_limit_warnings(max_connections: int, soft: int | None, hard: int | None) -> list[str]:
    """docs/original.md §3.6 step 5, as text."""
    if soft is None or hard is None:
        return ["failed to get nofile limits; cannot check the FD budget"]
    if max_connections == 0:
        return [
            f"max_connections is unlimited; the soft FD limit is {soft}: set a specific "
            "--max-connections or raise the ulimit to avoid EMFILE"
        ]
    required = max_connections * FDS_PER_CONNECTION + FD_HEADROOM
    if required > soft:
        return [
            f"required FDs ({required}) for --max-connections {max_connections} "
            f"exceed soft FD limit (soft={soft}, hard={hard}); raise the ulimit or lower "
            "--max-connections"
        ]
    return []


def raise_fd_limit(max_connections: int, extra: int = 0) -> int | None:
    """Raise the soft RLIMIT_NOFILE to what the cap needs, plus ``extra`` where the hard
    limit allows; warn when the cap's share cannot be had. Returns the soft limit."""
    soft: int | None
    hard: int | None
    if resource is None:  # no such limit to raise here (net/kernel/platform.py)
        return None
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        soft = hard = None
    if soft is not None and hard is not None and max_connections > 0:
        required = max_connections * FDS_PER_CONNECTION + FD_HEADROOM
        wanted = required + extra
        if soft < wanted:
            target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (OSError, ValueError) as exc:
                log.warning("cannot raise soft FD limit to %d (hard %d): %s", target, hard, exc)
            else:
                log.info("Raised soft FD limit to %d", target)
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        log.info("FD limits: soft=%d, hard=%d", soft, hard)
    for warning in fd_limit_warnings(max_connections, soft, hard):
        log.warning("%s", warning)
    return soft


def _spare(max_connections: int, soft: int) -> int:
    """Descriptors the FD limit leaves beyond the cap's sockets and the headroom."""
    return soft - (max_connections * FDS_PER_CONNECTION + FD_HEADROOM)


def waiting_capacity(max_connections: int, soft: int | None, spliced: int) -> int:
    """How many connections --max-connections-wait may hold at the cap: one descriptor
    each, from what the FD limit leaves beyond the cap's sockets and the splice pipes,
    at most MAX_CAP_WAITERS (not the cap itself: a burst of 200 at a cap of 3 must wait,
    not get 197 503s)."""
    if max_connections == 0:
        return 0  # no cap: nobody waits
    if soft is None:  # no FD limit to go by (no resource module): the fixed bound
        return MAX_CAP_WAITERS
    spare = _spare(max_connections, soft) - spliced * FDS_PER_SPLICED_TUNNEL
    return max(0, min(MAX_CAP_WAITERS, spare))


def splice_capacity(max_connections: int, soft: int | None) -> int:
    """How many tunnels may be spliced at once: what the FD limit leaves beyond the cap's
    own sockets, four descriptors each, at most SPLICE_MAX_TUNNELS."""
    if soft is None:
        return 0
    spare = _spare(max_connections, soft)
    if max_connections == 0:  # unlimited: pipes may take a quarter of the limit at most
        spare = (soft - FD_HEADROOM) // 4
    return max(0, min(SPLICE_MAX_TUNNELS, spare // FDS_PER_SPLICED_TUNNEL))


def pool_capacity(max_connections: int, soft: int | None, spliced: int, waiters: int) -> int:
    """How many idle plain-HTTP origin connections may be kept: one descriptor each, from
    what is left beyond the cap's sockets, the splice pipes and the connections waiting
    at the cap, at most POOL_MAX. An idle connection never takes a descriptor that a
    connection below the cap needs."""
    if soft is None or max_connections == 0:
        return POOL_MAX
    spare = _spare(max_connections, soft) - spliced * FDS_PER_SPLICED_TUNNEL - waiters
    return max(0, min(POOL_MAX, spare))


def is_loopback(sock: socket.socket) -> bool:
    return ipaddress.ip_address(sock.getsockname()[0]).is_loopback


class Descriptors(NamedTuple):
    """What the FD limit allows beyond the cap's own sockets."""

    spliced: int  # tunnels spliced at once
    waiting: int  # connections held at the cap (0 where not wanted)
    pooled: int  # idle plain-HTTP origin connections


def plan_descriptors(max_connections: int, *, splicing: bool, waiting: bool) -> Descriptors:
    """Raise the FD limit for all that may be open at once, then share out what it
    leaves beyond the cap's sockets."""
    soft = raise_fd_limit(
        max_connections,
        (SPLICE_MAX_TUNNELS * FDS_PER_SPLICED_TUNNEL if splicing else 0)
        + (MAX_CAP_WAITERS if waiting else 0)
        + POOL_MAX,
    )
    spliced = splice_capacity(max_connections, soft) if splicing else 0
    waiters = waiting_capacity(max_connections, soft, spliced) if waiting else 0
    if waiters:
        log.info("--max-connections-wait: up to %d connections wait at the cap", waiters)
    pooled = pool_capacity(max_connections, soft, spliced, waiters)
    if pooled < POOL_MAX:
        log.info("plain HTTP: at most %d idle origin connections kept (FD limit)", pooled)
    return Descriptors(spliced, waiters, pooled)
