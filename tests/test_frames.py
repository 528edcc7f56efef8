"""The compiled accelerator against pure Python: the publisher's frames (_frames.py)
and the subscriber's uniform runs (``_decoder._uniform_payloads``).

The accelerator is optional: CI installs no build of it, so this module
compiles ``yoton_core/_speedups.pyx`` itself (Cython is in the test extra) into
a temporary directory, then checks that it packs exactly what the pure-Python
path and the wire's own encoder pack, and that a real publisher using it
delivers every message in order over TCP. Without a C compiler those tests
skip and say why; the pure-Python tests always run.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from yoton_core import _frames
from yoton_core._wire import CONTROL, HEADER

ROOT = Path(__file__).resolve().parent.parent
U64 = st.integers(min_value=0, max_value=2**64 - 1)


def _expected(slot: int, source: int, seq: int, dest_seq: int, data: bytes) -> bytes:
    return HEADER.pack(CONTROL, slot, source, seq, 0, dest_seq, len(data)) + data


@given(U64, U64, U64, U64, st.binary(max_size=300))
def test_the_pure_python_frame_is_the_wire_frame(slot, source, seq, dest_seq, data) -> None:
    prefix = _frames.prefix(slot, source)
    assert _frames._frame(prefix, seq, dest_seq, data) == _expected(
        slot, source, seq, dest_seq, data
    )


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """``yoton_core._speedups`` compiled into a temporary directory."""
    pytest.importorskip("Cython", reason="Cython is not installed")
    cc = sysconfig.get_config_var("CC") or "cc"
    if shutil.which(cc.split()[0]) is None:
        pytest.skip(f"no C compiler ({cc!r}) to build the optional accelerator")
    out = tmp_path_factory.mktemp("accel")
    pyx = out / "_speedups.pyx"
    c_file = out / "_speedups.c"
    shutil.copy(ROOT / "yoton_core" / "_speedups.pyx", pyx)
    target = out / f"_speedups{sysconfig.get_config_var('EXT_SUFFIX')}"
    # Cython's own command line, not Cython.Build.cythonize: that one needs
    # distutils, which Python 3.12+ has only beside setuptools.
    for cmd in (
        [sys.executable, "-m", "cython", "-3", str(pyx), "-o", str(c_file)],
        [
            *cc.split(),
            "-shared",
            "-fPIC",
            "-O2",
            f"-I{sysconfig.get_paths()['include']}",
            str(c_file),
            "-o",
            str(target),
        ],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, f"{cmd[:3]}: {done.stderr}"
    spec = importlib.util.spec_from_file_location("yoton_core._speedups", target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@given(U64, U64, U64, U64, st.binary(max_size=300))
def test_the_compiled_frame_is_the_wire_frame(compiled, slot, source, seq, dest_seq, data) -> None:
    prefix = _frames.prefix(slot, source)
    assert compiled.frame(prefix, seq, dest_seq, data) == _expected(
        slot, source, seq, dest_seq, data
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((b"short", 1, 0, b"x"), ValueError),  # a prefix is 24 bytes
        ((bytes(24), -1, 0, b"x"), OverflowError),  # fields are unsigned 64-bit
        ((bytes(24), 2**64, 0, b"x"), OverflowError),
        ((bytes(24), 1, 0, "text"), TypeError),  # payloads are bytes
        ((None, 1, 0, b"x"), TypeError),
    ],
)
def test_the_compiled_frame_refuses_what_it_cannot_pack(compiled, args, error) -> None:
    with pytest.raises(error):
        compiled.frame(*args)


def _with_compiled(compiled: ModuleType) -> str:
    """The start of a program in which ``yoton_core._speedups`` is ``compiled``."""
    return textwrap.dedent(
        f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("yoton_core._speedups", {compiled.__file__!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["yoton_core._speedups"] = module
        """
    )


def _run_ok(program: str) -> None:
    """Run ``program`` in a fresh interpreter, which must print OK.

    Not switched off by the suite's own environment (``YOTON_PURE_PYTHON``):
    the program runs with the accelerator it loads.
    """
    env = {k: v for k, v in os.environ.items() if k != "YOTON_PURE_PYTHON"}
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "OK", done.stderr[-3000:]


def test_a_publisher_with_the_accelerator_delivers_everything_in_order(compiled) -> None:
    # In a fresh interpreter where yoton_core._speedups is the module built
    # above: the context's fan-out path then packs every frame with it.
    program = _with_compiled(compiled) + textwrap.dedent(
        """
        import yoton
        from yoton_core import _frames
        from yoton_core.testing import recv_n, wait_for
        assert _frames.ACCELERATED and _frames.frame is module.frame
        a, b, c = yoton.Context(), yoton.Context(), yoton.Context()
        pub = yoton.PubChannel(a, "accel", yoton.BINARY)
        subs = []
        for ctx in (b, c):
            bound = ctx.bind("localhost:0")
            a.connect(f"localhost:{bound.port1}", timeout=5)
            subs.append(yoton.SubChannel(ctx, "accel", yoton.BINARY))
        wait_for(lambda: a._fan_out is not None and len(a._fan_out) == 2, what="two links")
        msgs = [b"%06d" % i + b"." * (i % 300) for i in range(5000)]
        for m in msgs:
            pub.send(m)
        for sub in subs:
            assert recv_n(sub, len(msgs)) == msgs
        for ctx in (a, b, c):
            ctx.close()
        print("OK")
        """
    )
    _run_ok(program)


def test_yoton_pure_python_turns_the_accelerator_off(compiled) -> None:
    program = _with_compiled(compiled) + textwrap.dedent(
        """
        from yoton_core import _frames
        print(_frames.ACCELERATED, _frames.frame is _frames._frame)
        """
    )
    env: dict[str, Any] = {"YOTON_PURE_PYTHON": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.stdout.split() == ["False", "True"], done.stderr[-3000:]


# -- the subscriber's side: a uniform run's payloads (_decoder._uniform_payloads) ---------


def _run(first: int, k: int, size: int, source: int = 0xABC, slot: int = 12345) -> bytes:
    return b"".join(
        HEADER.pack(CONTROL, slot, source, first + i, 7, 9, size)
        + bytes([(first + i) & 0xFF]) * size
        for i in range(k)
    )


@given(
    st.integers(min_value=1, max_value=2**64 - 2_000),
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=0, max_value=200),
)
def test_the_compiled_run_gives_the_payloads_the_pure_path_gives(
    compiled, first, k, size, at
) -> None:
    from yoton_core import _decoder

    data = b"z" * at + _run(first, k, size) + b"tail"
    expected = [bytes([(first + i) & 0xFF]) * size for i in range(k)]
    assert compiled.run_payloads(data, at, size, k) == expected
    if (first & 0xFFFF) + k <= 0x10000:  # (else the pure path leaves it to the general one)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_decoder, "_run_payloads", None)
            first_header = HEADER.unpack_from(data, at)
            assert _decoder._uniform_payloads(data, at, size, k, first_header) == expected


@pytest.mark.parametrize("byte", range(56))
@pytest.mark.parametrize("package", [1, 17, 39])
def test_the_compiled_run_refuses_any_other_header_byte(compiled, byte, package) -> None:
    data = bytearray(_run(0x12_3456_FF00, 40, 100))
    data[package * 156 + byte] ^= 0x01
    assert compiled.run_payloads(bytes(data), 0, 100, 40) is None


def test_the_compiled_run_refuses_what_is_not_there(compiled) -> None:
    data = _run(1, 10, 100)
    for args in ((data, 0, 100, 11), (data, 1, 100, 10), (data, -1, 100, 1), (data, 0, 0, 1)):
        with pytest.raises(ValueError):
            compiled.run_payloads(*args)
    with pytest.raises(TypeError):
        compiled.run_payloads(bytearray(data), 0, 100, 10)


def test_a_subscriber_with_the_accelerator_decodes_runs_with_it(compiled) -> None:
    # A fresh interpreter where yoton_core._speedups is the module built
    # above: the decoder's runs go through it, and a stream over TCP (chunks
    # of any length, runs cut anywhere) arrives whole and in order.
    program = _with_compiled(compiled) + textwrap.dedent(
        """
        import yoton
        from yoton_core import _decoder
        from yoton_core.testing import recv_n, wait_for
        assert _decoder._run_payloads is module.run_payloads
        calls = []
        def counted(*args, run=module.run_payloads):
            calls.append(args[3])
            return run(*args)
        _decoder._run_payloads = counted
        a, b = yoton.Context(), yoton.Context(queue_params=(40000, "old"))
        pub = yoton.PubChannel(a, "accel", yoton.BINARY)
        sub = yoton.SubChannel(b, "accel", yoton.BINARY)
        bound = b.bind("localhost:0")
        a.connect(f"localhost:{bound.port1}", timeout=5)
        wait_for(lambda: a.connection_count and b.connection_count, what="the link")
        msgs = [b"%06d" % i + b"." * 94 for i in range(20000)]
        for m in msgs:
            pub.send(m)
        assert recv_n(sub, len(msgs)) == msgs and sub.dropped == 0
        assert sum(calls) > len(msgs) // 2, calls[:10]  # most came as runs
        for ctx in (a, b):
            ctx.close()
        print("OK")
        """
    )
    _run_ok(program)
