"""The conformance kit's checks that apply to a bus, run against the NATS transport.

The kit (``yoton_core.testing``) skips its peer-to-peer checks for a transport
whose links join a bus (``NatsConnection.joins_bus``); the rest (pub/sub of
every message type and 1 MiB, a multi-hop chain and a cycle built of three
buses bridged by contexts, flush and counters, req/rep both ways, closing a
context) must pass as for any transport.
"""

from __future__ import annotations

import itertools

import pytest

from yoton_core.testing import CHECKS, TransportConformance, run_transport_conformance

_buses = itertools.count()


@pytest.fixture(scope="module")
def nats_url():
    from yoton_nats.testing import NatsServer

    with NatsServer() as server:
        yield server.url


class TestNatsConformance(TransportConformance):
    scheme = "nats"

    @pytest.fixture(autouse=True)
    def _server(self, nats_url):
        self.url = nats_url

    def make_address(self) -> str:
        return f"{self.url}/kit-{next(_buses)}"


def test_the_peer_to_peer_checks_are_skipped_with_the_reason(nats_url):
    report = run_transport_conformance("nats", make_address=lambda: f"{nats_url}/k{next(_buses)}")
    skipped = {name for name, result in report.items() if result.startswith("skipped")}
    assert skipped == {
        "bind_connect",
        "connect_refused",
        "self_connect",
        "close_from_binder",
        "close_from_connector",
        "peer_death",
        "bad_input",
    }
    assert "peer-to-peer only" in report["bind_connect"]
    passed = {name for name, result in report.items() if result == "passed"}
    assert passed == set(CHECKS) - skipped
