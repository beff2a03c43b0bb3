"""Who may connect (policy/clients.py), from the address accept() gives."""

from __future__ import annotations

import pytest

from fyntr.cli import parse_args
from fyntr.config import Settings
from fyntr.policy.clients import DEFAULT_CLIENT_RANGES, ClientPolicy


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("10.1.2.3", True),
        ("172.31.255.255", True),
        ("172.32.0.1", False),  # just past RFC 1918's 172.16.0.0/12
        ("192.168.1.20", True),
        ("100.100.1.1", True),  # RFC 6598
        ("169.254.9.9", True),
        ("fe80::1%eth0", True),  # a scope is dropped
        ("fd12:3456::1", True),  # ULA
        ("::ffff:192.168.1.20", True),  # an IPv4 client on an IPv6 listener
        ("::ffff:8.8.8.8", False),
        ("8.8.8.8", False),
        ("2001:4860::8888", False),
        ("198.18.0.1", False),
        ("not an address", False),
    ],
)
def test_default_ranges(address: str, allowed: bool) -> None:
    assert ClientPolicy(DEFAULT_CLIENT_RANGES).allows(address) is allowed


def test_client_allow_flag(capsys: pytest.CaptureFixture[str]) -> None:
    settings = parse_args(["--client-allow", "192.168.1.0/24,fd00::/8"])
    assert isinstance(settings, Settings)
    assert settings.client_allow == ("192.168.1.0/24", "fd00::/8")
    assert parse_args(["--client-allow", "192.168.1.0"]) == 2
    assert "invalid value for --client-allow" in capsys.readouterr().err
