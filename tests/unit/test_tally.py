"""Per-client figures (fyntr/tally.py): the busiest clients one by one, the rest summed,
and a bounded memory of clients whose relays ended."""

from __future__ import annotations

from fyntr.tally import OTHER, ClientInfo, ClientTally


def test_the_busiest_first_live_relays_included_the_rest_summed() -> None:
    tally = ClientTally()
    tally.ended("192.168.1.10", 100, 1000)
    tally.ended("192.168.1.10", 50, 50)
    tally.ended("192.168.1.20", 10, 10)
    tally.ended("192.168.1.30", 1, 1)
    live = [("192.168.1.20", 5000, 0), ("192.168.1.40", 7, 7)]
    assert tally.top(live, 2) == [
        ClientInfo("192.168.1.20", 5010, 10, 2, 1),
        ClientInfo("192.168.1.10", 150, 1050, 2, 0),
        ClientInfo(OTHER, 8, 8, 2, 1),
    ]
    assert tally.top([], 10)[-1].client == "192.168.1.30"  # no "other" when all are shown


def test_clients_beyond_the_limit_are_folded_into_other() -> None:
    tally = ClientTally(limit=3)
    for i in range(10):
        tally.ended(f"10.0.0.{i}", 1, 2)
    shown = tally.top([], 5)
    assert [c.client for c in shown] == ["10.0.0.7", "10.0.0.8", "10.0.0.9", OTHER]
    assert shown[-1] == ClientInfo(OTHER, 7, 14, 7, 0)
    assert len(tally._ended) == 3  # bounded, whatever the number of addresses
