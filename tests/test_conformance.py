"""The conformance kit (yoton_core.testing) against the three built-in
transports, and the kit itself: it must fail a transport that breaks the
contract, and name what broke."""

from __future__ import annotations

import pytest

import yoton
from yoton_core import testing
from yoton_core.testing import TransportConformance, run_transport_conformance
from yoton_inproc import InprocConnection


class TestTcpConformance(TransportConformance):
    scheme = "tcp"


class TestUnixConformance(TransportConformance):
    scheme = "unix"


class TestInprocConformance(TransportConformance):
    scheme = "inproc"


def test_every_check_has_a_test_method():
    methods = {name[5:] for name in dir(TransportConformance) if name.startswith("test_")}
    assert methods == set(testing.CHECKS)


def test_function_form_reports_passed_and_skipped():
    report = run_transport_conformance("inproc", checks=["pubsub", "peer_death", "bad_input"])
    assert report["pubsub"] == "passed"
    assert report["peer_death"].startswith("skipped: 'inproc' connects contexts of one process")
    assert report["bad_input"].startswith("skipped: 'inproc' moves packages, not bytes")


def test_unknown_check_names_are_refused():
    with pytest.raises(ValueError, match="unknown conformance checks \\['nope'\\]"):
        run_transport_conformance("tcp", checks=["nope"])


class ForgetfulConnection(InprocConnection):
    """Breaks the contract: the peer is never told about a close."""

    scheme = "forgetful"

    def _close_in_engine(self, notify_peer):
        peer, self._peer = self._peer, None
        super()._close_in_engine(notify_peer)
        self._peer = peer


class _ForgetfulPlugin:
    @yoton.hookimpl
    def yoton_connection_types(self):
        return [ForgetfulConnection]


@pytest.fixture
def forgetful():
    plugin = _ForgetfulPlugin()
    yoton.plugin_manager().register(plugin)
    yield "forgetful"
    yoton.plugin_manager().unregister(plugin)


def test_a_broken_transport_fails_with_the_check_named(forgetful):
    with pytest.raises(AssertionError) as info:
        run_transport_conformance(
            forgetful, checks=["pubsub", "close_from_binder", "context_close"], timeout=0.5
        )
    text = str(info.value)
    assert "transport 'forgetful' failed 2 of 3 conformance checks" in text
    assert "- close_from_binder: AssertionError: the other end was not told about the close" in text
    assert "- context_close:" in text
    assert "- pubsub" not in text
