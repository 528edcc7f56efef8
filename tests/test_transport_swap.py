"""Choosing the transport by configuration (DESIGN.md section 3): the scheme in
the address, ``Context(transport=...)``, then ``YOTON_TRANSPORT``, then tcp.
The same program, written with plain ``localhost:name`` addresses, runs
unchanged on every transport."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import yoton
import yoton_inproc
import yoton_tcp
import yoton_unix

PROGRAM = """
import sys
import yoton

name, transport = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
server, client = yoton.Context(transport=transport), yoton.Context(transport=transport)
conn = server.bind(f"localhost:{name}", max_tries=16)
offset = conn.port1 - yoton.port_hash(name)
link = client.connect(f"localhost:{name}+{offset}", timeout=10.0)
news = yoton.SubChannel(client, "news", yoton.OBJECT)
replies = yoton.SubChannel(server, "replies")
yoton.PubChannel(server, "news", yoton.OBJECT).send({"n": 1, "text": "hello"})
print(news.recv(10.0)["text"])
yoton.PubChannel(client, "replies").send("hi back")
print(replies.recv(10.0))
print(type(link).__name__, link.scheme, link.port2 == conn.port1)
server.close()
client.close()
"""


def run_program(tmp_path, env_transport: str | None, arg_transport: str | None = None):
    script = tmp_path / "app.py"
    script.write_text(PROGRAM)
    env = dict(os.environ)
    env.pop("YOTON_TRANSPORT", None)
    if env_transport is not None:
        env["YOTON_TRANSPORT"] = env_transport
    args = [sys.executable, str(script), f"swap-{os.getpid()}-{env_transport}-{arg_transport}"]
    if arg_transport:
        args.append(arg_transport)
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize(
    "env, cls",
    [
        (None, "TcpConnection tcp"),
        ("tcp", "TcpConnection tcp"),
        ("unix", "UnixConnection unix"),
        ("inproc", "InprocConnection inproc"),
    ],
)
def test_same_program_runs_on_every_transport_by_environment(tmp_path, env, cls):
    assert run_program(tmp_path, env) == ["hello", "hi back", f"{cls} True"]


@pytest.mark.parametrize("transport", ["unix", "inproc"])
def test_context_argument_beats_the_environment(tmp_path, transport):
    lines = run_program(tmp_path, env_transport="tcp", arg_transport=transport)
    assert lines[-1].split()[1] == transport


@pytest.fixture
def ctx():
    context = yoton.Context()
    yield context
    context.close()


def test_default_is_tcp(monkeypatch, ctx):
    monkeypatch.delenv("YOTON_TRANSPORT", raising=False)
    assert ctx.transport == "tcp"
    assert isinstance(ctx.bind("localhost:0"), yoton_tcp.TcpConnection)


def test_environment_picks_the_transport(monkeypatch, ctx):
    monkeypatch.setenv("YOTON_TRANSPORT", "unix")
    assert ctx.transport == "unix"
    assert isinstance(ctx.bind("localhost:0"), yoton_unix.UnixConnection)


def test_scheme_in_address_beats_everything(monkeypatch):
    monkeypatch.setenv("YOTON_TRANSPORT", "unix")
    context = yoton.Context(transport="inproc")
    try:
        assert isinstance(context.bind("tcp://localhost:0"), yoton_tcp.TcpConnection)
        assert isinstance(context.bind("unix://localhost:0"), yoton_unix.UnixConnection)
        assert isinstance(context.bind("localhost:0"), yoton_inproc.InprocConnection)
    finally:
        context.close()


def test_scheme_and_transport_names_are_case_insensitive(ctx):
    assert isinstance(ctx.bind("INPROC://MixedCase"), yoton_inproc.InprocConnection)
    upper = yoton.Context(transport="Unix")
    try:
        assert isinstance(upper.bind("localhost:0"), yoton_unix.UnixConnection)
    finally:
        upper.close()


def test_transport_argument_must_be_a_scheme_name():
    with pytest.raises(TypeError, match="transport must be a scheme name"):
        yoton.Context(transport=yoton_tcp.TcpConnection)  # type: ignore[arg-type]  # under test
