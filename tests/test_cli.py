"""The ``yoton`` command, run for real in subprocesses.

Publishers, subscribers, a replier and state holders are separate processes
on real sockets. Nothing sleeps to synchronise: a connecting command retries
for ``--connect-timeout`` seconds until its peer has bound, a replier process
prints its ports once it listens, and every command is waited for.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from yoton_core._cli import EXIT_CODES

TIMEOUT = 30  # seconds for any one command (they take well under a second)
PATIENT = ["--connect-timeout", "15"]  # a connecting command waits for its peer to bind

YOTON = [sys.executable, "-m", "yoton"]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*YOTON, *args], input=stdin, capture_output=True, text=True, timeout=TIMEOUT
    )


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*YOTON, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, stdin: str | None = None) -> tuple[int, str, str]:
    out, err = proc.communicate(stdin, timeout=TIMEOUT)
    return proc.returncode, out, err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_line_error(err: str, *words: str) -> None:
    """A user's mistake: exactly one line on stderr, naming what was wrong."""
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, err


REPLIER = textwrap.dedent(
    """
    import sys, yoton

    class Calc(yoton.RepChannel):
        def add(self, a, b):
            return a + b

        def div(self, a, b):
            return a / b

        def echo(self, *args):
            return list(args)

    ctx = yoton.Context()
    ports = [ctx.bind("localhost:0").port1 for _ in range(int(sys.argv[1]))]
    Calc(ctx, "calc").set_mode("thread")
    state = yoton.StateChannel(ctx, "config", yoton.OBJECT)
    state.send({"level": 1})
    print(*ports, flush=True)
    sys.stdin.read()  # until the test is done
    """
)


@pytest.fixture
def replier() -> Iterator[list[int]]:
    """A replier process (RepChannel 'calc', OBJECT state 'config') bound at 8 ports."""
    proc = subprocess.Popen(
        [sys.executable, "-c", REPLIER, "8"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ports = [int(p) for p in proc.stdout.readline().split()]
    assert len(ports) == 8
    yield ports
    proc.kill()
    proc.wait(TIMEOUT)


# -- pub / sub ----------------------------------------------------------------------------


def test_pub_to_sub_across_processes() -> None:
    port = free_port()
    sub = start("sub", "--bind", f"localhost:{port}", "news", "--count", "3")
    done = run("pub", *PATIENT, f"localhost:{port}", "news", "one", "two", "three four")
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")
    code, out, err = finish(sub)
    assert (code, err) == (0, "")
    assert out.splitlines() == ["one", "two", "three four"]


def test_pub_bind_waits_for_a_late_subscriber_and_sends_stdin_lines(rundir) -> None:
    # The publisher binds first and must not send (and exit) before someone is
    # there: its messages would go nowhere. The subscriber comes later.
    pub = start("pub", "--bind", "unix://cli-late", "chan", "--timeout", "20")
    assert pub.stdin is not None
    pub.stdin.write("first line\nsecond line\n")
    pub.stdin.close()
    assert pub.poll() is None  # waiting for a peer
    sub = run("sub", *PATIENT, "unix://cli-late", "chan", "--count", "2")
    assert sub.returncode == 0, sub.stderr
    assert sub.stdout.splitlines() == ["first line", "second line"]
    assert pub.wait(TIMEOUT) == 0


def test_pub_bind_gives_up_when_nobody_comes(rundir) -> None:
    done = run("pub", "--bind", "unix://cli-nobody", "chan", "hello", "--timeout", "0.2")
    assert done.returncode == 4
    one_line_error(done.stderr, "no peer connected to unix://cli-nobody within 0.2 s")


def test_sub_ends_when_the_publisher_leaves(rundir) -> None:
    pub = start("pub", "--bind", "unix://cli-leave", "chan", "only", "--timeout", "20")
    sub = run("sub", *PATIENT, "unix://cli-leave", "chan")  # no --count, no --timeout
    assert sub.returncode == 0, sub.stderr
    assert sub.stdout == "only\n"
    assert finish(pub)[0] == 0


def test_sub_timeout_without_count_is_a_normal_end(rundir) -> None:
    pub = start("pub", "--bind", "unix://cli-quiet", "other-slot", "x", "--timeout", "20")
    sub = run("sub", *PATIENT, "unix://cli-quiet", "chan", "--timeout", "0.3")
    assert (sub.returncode, sub.stdout, sub.stderr) == (0, "", "")
    finish(pub)


def test_sub_timeout_before_count_is_exit_4(replier) -> None:
    # The replier stays connected and publishes nothing on this slot.
    done = run("sub", f"localhost:{replier[7]}", "chan", "--count", "1", "--timeout", "0.3")
    assert (done.returncode, done.stdout) == (4, "")
    one_line_error(done.stderr, "got 0 of 1 messages; none for 0.3 s")


def test_object_and_binary_messages(rundir) -> None:
    sub = start("sub", "--bind", "unix://cli-obj", "o", "--type", "object", "--count", "2")
    values = ['{"a": [1, 2.5, "é"]}', "null"]
    done = run("pub", *PATIENT, "--type", "object", "unix://cli-obj", "o", *values)
    assert done.returncode == 0, done.stderr
    code, out, _err = finish(sub)
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [{"a": [1, 2.5, "é"]}, None]

    sub = start("sub", "--bind", "unix://cli-bin", "b", "--type", "binary", "--count", "1")
    assert run("pub", *PATIENT, "--type", "binary", "unix://cli-bin", "b", "AB").returncode == 0
    assert finish(sub)[1] == "4142\n"  # hex

    sub = start("sub", "--bind", "unix://cli-raw", "b", "--type", "binary", "--count", "1", "--raw")
    assert run("pub", *PATIENT, "--type", "binary", "unix://cli-raw", "b", "AB").returncode == 0
    assert finish(sub)[1] == "AB"  # unchanged, no newline added


# -- call ---------------------------------------------------------------------------------


def test_call_prints_the_result_as_json(replier) -> None:
    done = run("call", f"localhost:{replier[0]}", "calc", "add", "2", "3")
    assert (done.returncode, done.stdout, done.stderr) == (0, "5\n", "")
    done = run("call", f"localhost:{replier[1]}", "calc", "echo", "1", "x", '"1"', "[1, 2]", "null")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [1, "x", "1", [1, 2], None]


def test_call_remote_error_is_type_and_message_on_stderr(replier) -> None:
    done = run("call", f"localhost:{replier[2]}", "calc", "div", "1", "0")
    assert done.returncode == 5
    assert done.stdout == ""
    one_line_error(done.stderr, "ZeroDivisionError: division by zero")


def test_call_without_a_replier_on_the_slot_times_out(replier) -> None:
    done = run("call", f"localhost:{replier[3]}", "nobody", "add", "1", "--timeout", "0.5")
    assert done.returncode == 4
    one_line_error(done.stderr, "add()", "'nobody'")


# -- state ----------------------------------------------------------------------------------


def test_state_get_and_set(replier) -> None:
    get = run("state", "--type", "object", f"localhost:{replier[4]}", "config")
    assert (get.returncode, get.stderr) == (0, "")
    assert json.loads(get.stdout) == {"level": 1}
    put = run("state", "--type", "object", f"localhost:{replier[5]}", "config", '{"level": 2}')
    assert (put.returncode, put.stdout, put.stderr) == (0, "", "")
    get = run("state", "--type", "object", f"localhost:{replier[6]}", "config")
    assert json.loads(get.stdout) == {"level": 2}  # the replier process holds the new state


def test_state_get_with_no_state_is_exit_4(replier) -> None:
    done = run("state", f"localhost:{replier[3]}", "unset", "--timeout", "0.3")
    assert done.returncode == 4
    one_line_error(done.stderr, "no state on 'unset'")


def test_state_set_with_bind_waits_for_a_peer(rundir) -> None:
    setter = start("state", "--bind", "unix://cli-state", "mode", "on", "--timeout", "20")
    get = run("state", *PATIENT, "unix://cli-state", "mode")
    assert (get.returncode, get.stdout) == (0, "on\n"), get.stderr
    assert finish(setter)[0] == 0


# -- transports, bench ----------------------------------------------------------------------


def test_transports_lists_schemes_and_plugins() -> None:
    done = run("transports")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert {"tcp", "unix", "inproc"} <= set(rows)
    assert "yoton_tcp.TcpConnection" in rows["tcp"] and "entry point 'tcp'" in rows["tcp"]
    assert "yoton_inproc" in rows["inproc"]


@pytest.mark.parametrize("transport", ["tcp", "inproc"])
def test_bench_quick(transport: str, rundir) -> None:
    done = run("bench", "--quick", "--transport", transport)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"transport     {transport}")
    assert "msg/s" in lines[1] and "2,000 messages" in lines[1]
    assert "median" in lines[2] and "50 round trips" in lines[2]


# -- a user's mistakes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["pub", "localhost:{free}", "s", "x"], 3, ["Cannot connect", "localhost:{free}"]),
        (["call", "localhost:{free}", "calc", "add"], 3, ["localhost:{free}"]),
        (["sub", "localhost", "s"], 2, ["'localhost'", "host:port"]),
        (["pub", "tpc://localhost:5000", "s", "x"], 2, ["'tpc'", "Did you mean 'tcp'"]),
        (["bench", "--transport", "tpc"], 2, ["'tpc'"]),
        (["pub", "--type", "object", "localhost:5000", "s", "{bad"], 2, ["'{bad'", "JSON"]),
        (["state", "--type", "object", "localhost:5000", "s", "{bad"], 2, ["'{bad'"]),
        (["sub", "localhost:5000", "s", "--count", "x"], 2, ["--count", "'x'"]),
        (["sub", "localhost:5000", "s", "--type", "yaml"], 2, ["--type", "'yaml'"]),
        (["nosuch"], 2, ["'nosuch'"]),
        (["pub", "localhost:99999", "s", "x"], 2, ["99999"]),
    ],
)
def test_mistakes_are_one_line_and_a_distinct_exit_code(args, code, words) -> None:
    port = str(free_port())
    done = run(*(a.replace("{free}", port) for a in args))
    assert done.returncode == code, done.stderr
    assert done.stdout == ""
    one_line_error(done.stderr, *(w.replace("{free}", port) for w in words))


def test_help_documents_the_exit_codes_and_the_slow_joiner_rule() -> None:
    done = run("pub", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "waits until a peer has connected" in text
    for code, meaning in EXIT_CODES.items():
        assert f"{code} {meaning}" in text


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / ("yoton.exe" if os.name == "nt" else "yoton")
    done = subprocess.run(
        [str(script), "--version"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "YOTON_PURE_PYTHON": "1"},
    )
    # The build is named: the optional accelerator is off here (README, "Fast build").
    assert done.returncode == 0 and done.stdout.startswith("yoton 3.")
    assert done.stdout.rstrip().endswith("(pure Python)")
