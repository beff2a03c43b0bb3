"""parse_ip's fast IPv4 path must be exactly as strict as the ipaddress module."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from fyntr.wire.target import parse_ip

octet = st.one_of(
    st.integers(0, 300).map(str),
    st.sampled_from(["00", "01", "010", "0x1", "1e1", "", " 1", "1 ", "+1", "-1", "٣"]),
)
dotted = st.lists(octet, min_size=1, max_size=6).map(".".join)


def reference(text: str) -> object:
    """A strict literal in the rule's own words: what ipaddress accepts, without an IPv6
    zone (a zone names an interface of this host, not a destination)."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return None if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None else ip


@given(st.one_of(dotted, st.text(alphabet="0123456789.:abcdefx%\x00 ٣é", max_size=20)))
def test_parse_ip_agrees_with_ipaddress(text: str) -> None:
    assert parse_ip(text) == reference(text)
