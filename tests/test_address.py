"""Address parsing (docs/protocol.md#addresses, with the fixes of DESIGN.md 3)."""

from __future__ import annotations

import socket

import pytest

from yoton_core._address import (
    bind_port_offsets,
    parse_host_port,
    split_address,
    split_scheme,
)
from yoton_core._hashing import port_hash


@pytest.fixture
def fake_public_hosts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    addresses = ["10.0.0.5", "192.168.1.2"]
    monkeypatch.setattr(socket, "gethostname", lambda: "myhost")

    def gethostbyname_ex(name: str) -> tuple[str, list[str], list[str]]:
        assert name == "myhost"
        return name, [], list(addresses)

    monkeypatch.setattr(socket, "gethostbyname_ex", gethostbyname_ex)
    return addresses


# ------------------------------------------------------------------ split_scheme


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("tcp://localhost:test", ("tcp", "localhost:test")),
        ("TCP://localhost:test", ("tcp", "localhost:test")),
        ("localhost:test", (None, "localhost:test")),
        ("unix:///abs/path.sock", ("unix", "/abs/path.sock")),
        ("inproc://name", ("inproc", "name")),
        ("my+ssl.v2-x://h:1", ("my+ssl.v2-x", "h:1")),
        ("zmq://1.2.3.4:test", ("zmq", "1.2.3.4:test")),
    ],
)
def test_split_scheme(address: str, expected: tuple[str | None, str]) -> None:
    assert split_scheme(address) == expected


@pytest.mark.parametrize("address", ["://localhost:1", "1tcp://h:1", "t cp://h:1", "tc_p://h:1"])
def test_split_scheme_invalid(address: str) -> None:
    scheme = address.partition("://")[0]
    with pytest.raises(ValueError) as info:
        split_scheme(address)
    assert repr(scheme) in str(info.value)
    assert repr(address) in str(info.value)


@pytest.mark.parametrize("bad", [None, 5, b"localhost:test"])
def test_split_scheme_type_error(bad: object) -> None:
    with pytest.raises(TypeError) as info:
        split_scheme(bad)  # type: ignore[arg-type]
    assert str(info.value) == (
        f"address must be a str like 'localhost:name', got {type(bad).__name__}"
    )


# ------------------------------------------------------------------ parse_host_port


@pytest.mark.parametrize(
    ("rest", "expected"),
    [
        ("localhost:test", ("127.0.0.1", 56337)),
        ("localhost:test+10", ("127.0.0.1", 56347)),
        ("LOCALHOST:test", ("127.0.0.1", 56337)),
        ("LocalHost:test", ("127.0.0.1", 56337)),
        ("1.2.3.4:test", ("1.2.3.4", 56337)),
        ("example.org:5000", ("example.org", 5000)),
        ("localhost:0", ("127.0.0.1", 0)),
        ("localhost:1024", ("127.0.0.1", 1024)),
        ("localhost:65535", ("127.0.0.1", 65535)),
        ("localhost:chat", ("127.0.0.1", 49264)),
        ("localhost:test1", ("127.0.0.1", 49382)),
        ("localhost:test+0", ("127.0.0.1", 56337)),
        ("localhost:test+-37", ("127.0.0.1", 56300)),
        ("publichostX:test", ("publichostX", 56337)),  # non-digit suffix passes through
    ],
)
def test_parse_host_port(rest: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(rest) == expected


def test_port_name_is_case_sensitive_and_not_stripped() -> None:
    assert parse_host_port("localhost:Test")[1] != 56337
    assert parse_host_port("localhost:test ")[1] != 56337


def test_split_at_first_colon() -> None:
    # The rest of the text after the first ':' is the port name.
    assert parse_host_port("host:a:b") == ("host", port_hash("a:b"))
    assert port_hash("a:b") != port_hash("b")


def test_publichost(fake_public_hosts: list[str]) -> None:
    assert parse_host_port("publichost:test") == ("10.0.0.5", 56337)
    assert parse_host_port("publichost0:test") == ("10.0.0.5", 56337)
    assert parse_host_port("PublicHost1:test") == ("192.168.1.2", 56337)


def test_publichost_out_of_range(fake_public_hosts: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        parse_host_port("publichost2:test")
    assert str(info.value).startswith("Invalid index (2) in public host addresses.")
    assert "'publichost2:test'" in str(info.value)


def test_missing_colon() -> None:
    with pytest.raises(ValueError) as info:
        parse_host_port("localhost")
    msg = str(info.value)
    assert msg.startswith("Address should be in format 'host:port'")
    assert "'localhost'" in msg


def test_empty_host() -> None:
    with pytest.raises(ValueError, match="empty host part") as info:
        parse_host_port(":test")
    assert "':test'" in str(info.value)


def test_empty_port() -> None:
    with pytest.raises(ValueError, match="empty port part") as info:
        parse_host_port("localhost:")
    assert "'localhost:'" in str(info.value)


@pytest.mark.parametrize("port", ["-1", "1", "80", "1023", "65536", "100000", "+5"])
def test_numeric_port_out_of_range(port: str) -> None:
    address = f"localhost:{port}"
    with pytest.raises(ValueError) as info:
        parse_host_port(address)
    msg = str(info.value)
    assert f"Invalid port {int(port)}" in msg
    assert "1024..65535" in msg
    assert repr(address) in msg


@pytest.mark.parametrize("offset", ["x", "", "1.5", "1+2"])
def test_invalid_offset(offset: str) -> None:
    address = f"localhost:test+{offset}"
    with pytest.raises(ValueError) as info:
        parse_host_port(address)
    assert str(info.value).startswith(f"Invalid offset in address {address!r}")


def test_offset_beyond_max_port() -> None:
    # port_hash("test") == 56337; 56337 + 9199 == 65536
    assert parse_host_port("localhost:test+9198")[1] == 65535
    with pytest.raises(ValueError, match="65536") as info:
        parse_host_port("localhost:test+9199")
    assert "1024..65535" in str(info.value)


def test_parse_host_port_uses_full_address_in_errors() -> None:
    with pytest.raises(ValueError) as info:
        parse_host_port("localhost", address="tcp://localhost")
    assert "'tcp://localhost'" in str(info.value)


def test_parse_host_port_type_error() -> None:
    with pytest.raises(TypeError, match="address must be a str"):
        parse_host_port(42)  # type: ignore[arg-type]


# ------------------------------------------------------------------ split_address


def test_split_address() -> None:
    assert split_address("localhost:test") == (None, "127.0.0.1", 56337)
    assert split_address("zmq://1.2.3.4:test") == ("zmq", "1.2.3.4", 56337)
    assert split_address("TCP://LOCALHOST:test+1") == ("tcp", "127.0.0.1", 56338)
    with pytest.raises(ValueError) as info:
        split_address("tcp://localhost")
    assert "'tcp://localhost'" in str(info.value)


# ------------------------------------------------------------------ bind_port_offsets


def test_bind_port_offsets_sequence() -> None:
    assert bind_port_offsets(13) == [0, 1, 2, 3, 5, 7, 9, 11, 13, 16, 19, 22, 25]
    assert bind_port_offsets(1) == [0]
    assert bind_port_offsets(2) == [0, 1]


def test_bind_port_offsets_steps_are_isqrt() -> None:
    offsets = bind_port_offsets(200)
    assert len(offsets) == 200
    steps = [b - a for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    assert steps[0] == 1 and steps[3] == 2 and steps[8] == 3 and steps[15] == 4
    assert steps[198] == 14  # floor(sqrt(199))


@pytest.mark.parametrize("bad", [0, -3])
def test_bind_port_offsets_value_error(bad: int) -> None:
    with pytest.raises(ValueError, match="max_tries"):
        bind_port_offsets(bad)


@pytest.mark.parametrize("bad", [1.0, "3", None, True])
def test_bind_port_offsets_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="max_tries"):
        bind_port_offsets(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "address, shown",
    [
        ("nats://alice:s3cret@host:4222/bus", "nats://alice:***@host:4222/bus"),
        ("nats://t0ken@host:4222/bus", "nats://***@host:4222/bus"),
        ("nats://a:b@h1:1,h2:2/x@y", "nats://a:***@h1:1,h2:2/x@y"),
        ("tcp://localhost:chat", "tcp://localhost:chat"),
        ("localhost:chat", "localhost:chat"),
    ],
)
def test_credentials_in_an_address_are_never_shown(address, shown):
    from yoton_core._address import redact_credentials

    assert redact_credentials(address) == shown
