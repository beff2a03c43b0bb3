"""TCP_INFO of a live connection, read through net/kernel/tcpinfo.py: the struct offsets agree
with the running kernel (a sane RTT, its floor, bytes acknowledged, the MSS, ACKs in;
bytes received and the receiver's RTT estimate)."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from fyntr.net.kernel import tcpinfo
from tests.support.net import echo, origin

pytestmark = pytest.mark.skipif(tcpinfo.PLATFORM != "linux", reason="TCP_INFO layout of Linux")


def test_a_live_connection_reports_a_sane_rtt_and_every_byte_acknowledged() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        with client, peer:
            sent = 1_000_000
            client.sendall(bytes(sent))
            got = 0
            while got < sent:
                got += len(peer.recv(1 << 16))
            time.sleep(0.05)  # the last ACK
            sample = tcpinfo.read(client)
            assert sample is not None
            assert 0 < sample.rtt_s < 0.05  # loopback: microseconds, not seconds
            assert sample.min_rtt_s is not None and 0 < sample.min_rtt_s <= sample.rtt_s
            assert sample.bytes_acked == sent + 1  # the data, and the SYN
            assert sample.total_retrans == 0
            assert 536 <= sample.mss <= 65535
            assert sample.segs_in is not None and sample.segs_in >= 2  # SYN-ACK and ACKs
            receiver = tcpinfo.read(peer)
            assert receiver is not None and receiver.bytes_acked == 0  # sent nothing


def test_a_closed_socket_gives_no_sample() -> None:
    sock = socket.socket()
    sock.close()
    assert tcpinfo.read(sock) is None


async def test_a_closed_transports_socket_gives_no_sample() -> None:
    """On uvloop the stand-in for a closed transport's socket raises ValueError, which
    once stopped the auto rate's timer for good."""
    async with origin(echo) as o:
        _reader, writer = await asyncio.open_connection("127.0.0.1", o.port)
        sock = writer.get_extra_info("socket")
        try:
            assert tcpinfo.read(sock) is not None
        finally:
            writer.transport.abort()
            await asyncio.sleep(0)
        assert tcpinfo.read(sock) is None


def _ss_field(port: int, name: str) -> str:
    """A field of ``ss -ti`` for the established socket on local ``port``: iproute2
    reads the same struct, so it tells an offset that is off."""
    ss = shutil.which("ss")
    if ss is None:
        pytest.skip("iproute2's ss is not installed")
    out = subprocess.run(
        [ss, "-tinH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(rf"\b{name}:(\S+)", out)
    assert match is not None, out
    return match.group(1)


def test_the_receiver_reports_bytes_received_and_its_own_rtt_estimate() -> None:
    """An origin that pauses 10 ms between 64 KiB writes: each pause ends with data that
    echoes an old ACK's timestamp, so the receiver's estimate is ~10 ms, as ss says."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        sender = socket.create_connection(("127.0.0.1", port))
        peer, _ = server.accept()
        with sender, peer:
            chunk, count = 1 << 16, 20

            def send() -> None:
                for _ in range(count):
                    sender.sendall(bytes(chunk))
                    time.sleep(0.01)

            writer = threading.Thread(target=send)
            writer.start()
            got = 0
            while got < chunk * count:
                got += len(peer.recv(1 << 16))
            writer.join()
            sample = tcpinfo.read(peer)
            assert sample is not None
            assert sample.bytes_received == chunk * count
            assert sample.rcv_rtt_s is not None and 0.002 < sample.rcv_rtt_s < 0.2
            assert float(_ss_field(port, "rcv_rtt")) == pytest.approx(
                sample.rcv_rtt_s * 1000, abs=0.001
            )
            assert int(_ss_field(port, "bytes_received")) == sample.bytes_received
