"""Conformance kit: run yoton's transport contract against any scheme.

A plugin author proves a transport behaves like the built-ins with either a
function call or a pytest class::

    from yoton_core.testing import TransportConformance, run_transport_conformance

    # 1. pytest: every check becomes a test of its own
    class TestMyTransport(TransportConformance):
        scheme = "mine"

    # 2. anywhere: raises AssertionError listing the failed checks
    report = run_transport_conformance("mine")   # {"pubsub": "passed", ...}

The checks (see :data:`CHECKS`): bind/connect and the connection properties,
connect refused, no self-connect, pub/sub both ways (all message types,
order, 1 MiB messages, messages sent before a peer existed), multi-hop
routing without duplicates in a cycle, flush and the counters, request/reply
both ways (results, echo, remote errors), close from either side with the
reasons reported ("Closed on command." here, "Closed from other end." there)
and the ``closed`` signal, ``Context.close()``, and for transports that carry
bytes (subclasses of :class:`~yoton_core.StreamConnection`): peer death (a
child process killed with SIGKILL, on either role) and bad input (garbage
instead of a handshake, bad control bytes, an oversized length) closing only
the connection it came on. Checks that cannot apply are skipped with the reason;
for a transport whose links join a bus (``Connection.joins_bus``, e.g. NATS:
bind and connect both join, there is no single peer), that means the checks
about one peer at the other end: binding and waiting for a peer, connecting
where nobody is bound or to oneself, telling the other end about a close, a
peer's death, and messages sent before the first join.

By default addresses are ``scheme://localhost:0`` and the connect goes to
``scheme://localhost:<port1>``; give ``make_address`` when your transport
cannot bind port 0. The peer-death check runs the transport in a child
process: it imports the module that defines the transport class (or
``plugin_module``) and registers it when entry points do not provide it.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

if "pytest" in sys.modules:
    # Under pytest the checks' failures get its detailed assertion messages:
    # the rewriting must be asked for before the module is first imported, and
    # this is its only importer. (Without pytest nothing is imported for it.)
    import pytest

    pytest.register_assert_rewrite("yoton_core._conformance")

from ._conformance import CHECKS, ConformanceSkip, TransportUnderTest, recv_n, wait_for

__all__ = [
    "CHECKS",
    "ConformanceSkip",
    "TransportConformance",
    "TransportUnderTest",
    "recv_n",
    "run_transport_conformance",
    "wait_for",
]


def run_transport_conformance(
    scheme: str,
    *,
    make_address: Callable[[], str] | None = None,
    plugin_module: str | None = None,
    checks: Iterable[str] | None = None,
    timeout: float = 10.0,
) -> dict[str, str]:
    """Run the transport contract against ``scheme``.

    Args:
        scheme: An installed or registered transport scheme.
        make_address: Returns a fresh address for each bind (see module docs).
        plugin_module: Module a child process imports to get the transport.
        checks: Names from :data:`CHECKS` to run (default: all).
        timeout: Seconds any single wait may take.

    Returns:
        ``{check name: "passed" | "skipped: <reason>"}``.

    Raises:
        AssertionError: one or more checks failed; the message lists each
            failed check with its error.
        ValueError: an unknown check name.
    """
    names = list(CHECKS) if checks is None else list(checks)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown conformance checks {unknown}; known: {', '.join(CHECKS)}")
    results: dict[str, str] = {}
    failures: list[str] = []
    for name in names:
        t = TransportUnderTest(scheme, make_address, plugin_module, timeout)
        try:
            with t.session():
                CHECKS[name](t)
        except ConformanceSkip as skip:
            results[name] = f"skipped: {skip}"
        except Exception as exc:
            results[name] = "failed"
            where = traceback.extract_tb(exc.__traceback__)[-1]
            failures.append(
                f"- {name}: {type(exc).__name__}: {exc} "
                f"(in {where.name}, line {where.lineno}: {where.line})"
            )
        else:
            results[name] = "passed"
    if failures:
        raise AssertionError(
            f"transport {scheme!r} failed {len(failures)} of {len(names)} conformance checks:\n"
            + "\n".join(failures)
        )
    return results


class TransportConformance:
    """Subclass in a test module (named ``Test...``) to get one test per check.

    Class attributes:
        scheme: The scheme under test (required).
        plugin_module: Module a child process imports to get the transport.
        timeout: Seconds any single wait may take.

    Define a method ``make_address(self) -> str`` to choose addresses.
    """

    scheme: ClassVar[str] = ""
    plugin_module: ClassVar[str | None] = None
    timeout: ClassVar[float] = 10.0
    make_address: Any = None

    def _run_check(self, name: str) -> None:
        import pytest

        if not self.scheme:
            raise TypeError(f"{type(self).__name__}.scheme must name the transport under test")
        t = TransportUnderTest(self.scheme, self.make_address, self.plugin_module, self.timeout)
        with t.session():
            try:
                CHECKS[name](t)
            except ConformanceSkip as skip:
                pytest.skip(str(skip))

    def test_bind_connect(self) -> None:
        self._run_check("bind_connect")

    def test_connect_refused(self) -> None:
        self._run_check("connect_refused")

    def test_self_connect(self) -> None:
        self._run_check("self_connect")

    def test_pubsub(self) -> None:
        self._run_check("pubsub")

    def test_multi_hop(self) -> None:
        self._run_check("multi_hop")

    def test_flush_and_stats(self) -> None:
        self._run_check("flush_and_stats")

    def test_reqrep(self) -> None:
        self._run_check("reqrep")

    def test_close_from_binder(self) -> None:
        self._run_check("close_from_binder")

    def test_close_from_connector(self) -> None:
        self._run_check("close_from_connector")

    def test_context_close(self) -> None:
        self._run_check("context_close")

    def test_peer_death(self) -> None:
        self._run_check("peer_death")

    def test_bad_input(self) -> None:
        self._run_check("bad_input")
