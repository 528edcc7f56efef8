"""TLS (``tls://``): stdlib ssl contexts, certificates made here with trustme."""

from __future__ import annotations

import logging
import socket
import ssl

import pytest

import yoton
from yoton_core.testing import wait_for
from yoton_tcp._tls import TlsConnection

trustme = pytest.importorskip("trustme")

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def server_ctx(ca) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    return ctx


@pytest.fixture
def client_ctx(ca) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def link(a, b, server_ctx, client_ctx, **connect_options):
    conn = a.bind("tls://localhost:0", ssl_context=server_ctx)
    other = b.connect(
        f"tls://localhost:{conn.port1}",
        timeout=TIMEOUT,
        ssl_context=client_ctx,
        **connect_options,
    )
    wait_for(lambda: conn.is_connected, TIMEOUT, "the bound end")
    return conn, other


def test_pubsub_over_tls(contexts, server_ctx, client_ctx) -> None:
    a, b = contexts(), contexts()
    conn, other = link(a, b, server_ctx, client_ctx)
    assert type(conn) is TlsConnection and type(other) is TlsConnection
    assert yoton.transports()["tls"] is TlsConnection
    sub = yoton.SubChannel(a, "t", yoton.BINARY)
    pub = yoton.PubChannel(b, "t", yoton.BINARY)
    big = bytes(range(256)) * 4096  # 1 MiB: many TLS records
    for i in range(20):
        pub.send(b"%d" % i)
    pub.send(big)
    assert [sub.recv(TIMEOUT) for _ in range(20)] == [b"%d" % i for i in range(20)]
    assert sub.recv(TIMEOUT) == big
    # And back, bind side to connect side.
    back = yoton.SubChannel(b, "back")
    yoton.PubChannel(a, "back").send("reply")
    assert back.recv(TIMEOUT) == "reply"
    other.close()
    wait_for(lambda: not conn.is_alive, TIMEOUT, "the close to reach the bind side")
    assert conn.close_reason == "Closed from other end."


def test_reqrep_over_tls(contexts, server_ctx, client_ctx) -> None:
    a, b = contexts(), contexts()

    class Calc(yoton.RepChannel):
        def mul(self, x: int, y: int) -> int:
            return x * y

    rep = Calc(a, "calc")
    rep.set_mode("thread")
    link(a, b, server_ctx, client_ctx)
    assert yoton.ReqChannel(b, "calc").mul(6, 7).result(TIMEOUT) == 42


def test_client_without_the_ca_is_refused(contexts, server_ctx, caplog) -> None:
    a, b = contexts(), contexts()
    conn = a.bind("tls://localhost:0", ssl_context=server_ctx)
    with caplog.at_level(logging.WARNING, logger="yoton"):
        with pytest.raises(ConnectionRefusedError, match="TLS handshake failed.*certificate"):
            b.connect(f"tls://localhost:{conn.port1}", timeout=TIMEOUT)  # system CAs only
        wait_for(lambda: any("TLS" in r.getMessage() for r in caplog.records), TIMEOUT, "log")
    assert conn.is_waiting and b.connection_count == 0


def test_wrong_host_name_is_refused(contexts, server_ctx, client_ctx) -> None:
    a, b = contexts(), contexts()
    conn = a.bind("tls://localhost:0", ssl_context=server_ctx)
    with pytest.raises(ConnectionRefusedError, match="TLS handshake failed"):
        b.connect(
            f"tls://localhost:{conn.port1}",
            timeout=TIMEOUT,
            ssl_context=client_ctx,
            server_hostname="elsewhere.example",
        )


def test_client_certificate_required(contexts, ca, server_ctx, client_ctx, caplog) -> None:
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server_ctx)
    a, b = contexts(), contexts()
    conn = a.bind("tls://localhost:0", ssl_context=server_ctx)
    with caplog.at_level(logging.WARNING, logger="yoton"):
        with pytest.raises(ConnectionRefusedError, match="client certificate"):
            b.connect(f"tls://localhost:{conn.port1}", timeout=TIMEOUT, ssl_context=client_ctx)
        wait_for(
            lambda: any("certificate" in r.getMessage() for r in caplog.records),
            TIMEOUT,
            "the bind side's reason",
        )
    assert conn.is_waiting and b.connection_count == 0
    # With a certificate from the CA the same client gets in.
    ca.issue_cert("client@example").configure_cert(client_ctx)
    sub = yoton.SubChannel(a, "t")
    b.connect(f"tls://localhost:{conn.port1}", timeout=TIMEOUT, ssl_context=client_ctx)
    yoton.PubChannel(b, "t").send("with a client certificate")
    assert sub.recv(TIMEOUT) == "with a client certificate"


def test_tls_with_auth_key(contexts, server_ctx, client_ctx) -> None:
    a, b = contexts(auth_key="k"), contexts(auth_key="k")
    link(a, b, server_ctx, client_ctx)
    sub = yoton.SubChannel(a, "t")
    yoton.PubChannel(b, "t").send("both")
    assert sub.recv(TIMEOUT) == "both"
    c = contexts(auth_key="other")
    conn = a.bind("tls://localhost:0", ssl_context=server_ctx)
    with pytest.raises(ConnectionRefusedError, match="wrong key"):
        c.connect(f"tls://localhost:{conn.port1}", timeout=TIMEOUT, ssl_context=client_ctx)


def test_plain_peers_are_refused_by_a_tls_bind(contexts, server_ctx, client_ctx, caplog) -> None:
    a, b = contexts(), contexts()
    conn = a.bind("tls://localhost:0", ssl_context=server_ctx)
    with caplog.at_level(logging.WARNING, logger="yoton"):
        with pytest.raises(OSError, match="Cannot connect to .tcp:.*Handshake failed"):
            b.connect(f"tcp://localhost:{conn.port1}", timeout=TIMEOUT)
        with socket.create_connection(("127.0.0.1", conn.port1), timeout=TIMEOUT) as s:
            s.sendall(b"YOTON!%016x.%d\r\n" % (0xABC, 1))
            received = b""
            while chunk := s.recv(4096):
                received += chunk
        assert not received.startswith(b"YOTON!")  # no yoton line in clear text
        wait_for(lambda: len(caplog.records) >= 2, TIMEOUT, "both refusals logged")
    assert conn.is_waiting
    b.connect(f"tls://localhost:{conn.port1}", timeout=TIMEOUT, ssl_context=client_ctx)


def test_options_are_checked(contexts, server_ctx) -> None:
    a = contexts()
    with pytest.raises(ValueError, match="ssl_context="):
        a.bind("tls://localhost:0")
    with pytest.raises(TypeError, match="ssl.SSLContext"):
        a.bind("tls://localhost:0", ssl_context="cert.pem")
    with pytest.raises(TypeError, match="'tcp' transport takes no options.*tls://"):
        a.bind("tcp://localhost:0", ssl_context=server_ctx)
    with pytest.raises(TypeError, match="unexpected keyword|bogus"):
        a.bind("tls://localhost:0", ssl_context=server_ctx, bogus=1)
    with pytest.raises(TypeError, match="connect option"):
        a.bind("tls://localhost:0", ssl_context=server_ctx, server_hostname="x")
    assert a.connections_all == []


# -- the conformance kit over TLS -----------------------------------------------------------


class _KitTls(TlsConnection):
    """tls with the kit's certificates as defaults: the kit passes no options."""

    scheme = "tlskit"
    server: ssl.SSLContext | None = None
    client: ssl.SSLContext | None = None

    def open_listener(self, target, max_tries):
        self._ssl_context = self._ssl_context or self.server
        return super().open_listener(target, max_tries)

    async def connect_once(self, target):
        self._ssl_context = self._ssl_context or self.client
        return await super().connect_once(target)


class _KitPlugin:
    @yoton.hookimpl
    def yoton_connection_types(self):
        return [_KitTls]


def test_conformance_kit_over_tls(server_ctx, client_ctx, monkeypatch) -> None:
    from yoton_core.testing import CHECKS, run_transport_conformance

    monkeypatch.setattr(_KitTls, "server", server_ctx)
    monkeypatch.setattr(_KitTls, "client", client_ctx)
    plugin = _KitPlugin()
    pm = yoton.plugin_manager()
    pm.register(plugin)
    try:
        # peer_death runs the peer in a child process, which has no certificates.
        checks = [name for name in CHECKS if name != "peer_death"]
        report = run_transport_conformance("tlskit", checks=checks)
    finally:
        pm.unregister(plugin)
    assert set(report.values()) == {"passed"}, report
