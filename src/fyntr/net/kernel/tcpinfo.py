"""What the kernel knows about a TCP connection: RTT, its floor, bytes acknowledged and
received, and the receiver's own RTT estimate.

Linux: ``getsockopt(IPPROTO_TCP, TCP_INFO)`` fills ``struct tcp_info``
(include/uapi/linux/tcp.h); the offsets below are that struct's, checked against the
running kernel by tests/integration/test_tcpinfo.py. macOS: ``TCP_CONNECTION_INFO``
(0x106) fills ``struct tcp_connection_info`` (netinet/tcp.h), whose smoothed RTT is in
milliseconds and which has no minimum RTT (the auto-rate baseline tracks its own).
Elsewhere, or where the option is refused, there are no samples: ``auto`` means
unlimited there (docs/zero-configuration.md).
"""

from __future__ import annotations

import socket
import struct
import sys
from typing import Final, NamedTuple, Protocol


class TcpSample(NamedTuple):
    rtt_s: float  # smoothed RTT
    min_rtt_s: float | None  # the kernel's windowed minimum (Linux); None on macOS
    bytes_acked: int | None  # data bytes the peer acknowledged (Linux 4.1+)
    total_retrans: int  # segments retransmitted, SYNs included
    mss: int  # bytes per segment sent
    segs_in: int | None  # segments received: on an upload, its ACKs (Linux 4.2+)
    # The receiver's RTT estimate (Linux): from the timestamps the peer's data echoes,
    # so it crosses the downlink's queue with the data; None where there is none.
    rcv_rtt_s: float | None
    bytes_received: int | None  # data bytes received (Linux 4.1+)


class SockLike(Protocol):
    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...


# struct tcp_info (Linux): u32 tcpi_snd_mss at 16, u32 tcpi_rtt at 68 (usec), u32
# tcpi_rcv_rtt at 92 (usec), u32 tcpi_total_retrans at 100, u64 tcpi_bytes_acked at 120,
# u64 tcpi_bytes_received at 128, u32 tcpi_segs_in at 140, u32 tcpi_min_rtt at 148
# (usec, Linux 4.6+).
_U32: Final = struct.Struct("=I")
_U64: Final = struct.Struct("=Q")
_LINUX_MSS_AT: Final = 16
_LINUX_RTT_AT: Final = 68
_LINUX_RCV_RTT_AT: Final = 92
_LINUX_RETRANS_AT: Final = 100
_LINUX_ACKED_AT: Final = 120
_LINUX_RECEIVED_AT: Final = 128
_LINUX_SEGS_IN_AT: Final = 140
_LINUX_MIN_RTT_AT: Final = 148
_LINUX_LEN: Final = 152

# struct tcp_connection_info (macOS): four u8, then u32 options, flags, rto, maxseg,
# snd_ssthresh, snd_cwnd, snd_wnd, snd_sbbytes, rcv_wnd, rttcur, srtt (ms, at 44), rttvar,
# a u32 of bit fields, then seven u64 aligned to 8 from 56; txretransmitpackets at 104.
_MACOS_MAXSEG_AT: Final = 16
_MACOS_TCP_CONNECTION_INFO: Final = 0x106
_MACOS_SRTT_AT: Final = 44
_MACOS_RETRANS_AT: Final = 104
_MACOS_LEN: Final = 112


def _platform() -> str:
    if sys.platform.startswith("linux") and hasattr(socket, "TCP_INFO"):
        return "linux"
    return "macos" if sys.platform == "darwin" else ""


PLATFORM: Final = _platform()
AVAILABLE: Final = bool(PLATFORM)
RECEIVER_RTT: Final = PLATFORM == "linux"  # macOS keeps none: no download auto there


def read(sock: SockLike) -> TcpSample | None:
    """The connection's sample, or None where the kernel has none for it."""
    try:
        if PLATFORM == "linux":
            raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _LINUX_LEN)
            if len(raw) < _LINUX_LEN:
                return None
            rtt = _U32.unpack_from(raw, _LINUX_RTT_AT)[0]
            min_rtt = _U32.unpack_from(raw, _LINUX_MIN_RTT_AT)[0]
            rcv_rtt = _U32.unpack_from(raw, _LINUX_RCV_RTT_AT)[0]
            return TcpSample(
                rtt / 1e6,
                min_rtt / 1e6 if min_rtt else None,
                _U64.unpack_from(raw, _LINUX_ACKED_AT)[0],
                _U32.unpack_from(raw, _LINUX_RETRANS_AT)[0],
                _U32.unpack_from(raw, _LINUX_MSS_AT)[0],
                _U32.unpack_from(raw, _LINUX_SEGS_IN_AT)[0],
                rcv_rtt / 1e6 if rcv_rtt else None,  # 0: no estimate yet
                _U64.unpack_from(raw, _LINUX_RECEIVED_AT)[0],
            )
        if PLATFORM == "macos":
            raw = sock.getsockopt(socket.IPPROTO_TCP, _MACOS_TCP_CONNECTION_INFO, _MACOS_LEN)
            if len(raw) < _MACOS_LEN:
                return None
            srtt_ms = _U32.unpack_from(raw, _MACOS_SRTT_AT)[0]
            retrans = _U64.unpack_from(raw, _MACOS_RETRANS_AT)[0]
            mss = _U32.unpack_from(raw, _MACOS_MAXSEG_AT)[0]
            return TcpSample(srtt_ms / 1e3, None, None, retrans, mss, None, None, None)
    # Closed (uvloop's stand-in for a closed transport's socket raises ValueError for
    # its descriptor of -1), or refused by this kernel.
    except (OSError, RuntimeError, ValueError):
        return None
    return None
