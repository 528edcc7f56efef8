"""The pytest plugin shipped in yoton_inproc (entry point ``pytest11``),
exercised the way a user's project would: with pytester, in a fresh pytest."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

pytest_plugins = ["pytester"]

PAGE = Path(__file__).resolve().parent.parent / "docs" / "testing.md"


def _readme_example() -> str:
    """The fixtures' example of the testing page (docs/testing.md)."""
    text = PAGE.read_text()
    (code,) = re.findall(r"```python\n(# test_example\.py\n.*?)```", text, flags=re.S)
    return code


def test_loading_the_plugin_does_not_import_yoton():
    """pytest loads it in every test run of an environment with yoton installed."""
    code = (
        "import sys, yoton_inproc.pytest_plugin\n"
        "heavy = sorted(m for m in ('trio', 'yoton_core', 'yoton') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_plugin_is_registered_through_its_entry_point(pytester):
    pytester.makepyfile(
        test_registered="""
        def test_registered(request):
            plugin = request.config.pluginmanager.get_plugin("yoton_inproc")
            assert plugin is not None
            assert plugin.__name__ == "yoton_inproc.pytest_plugin"
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_readme_example_passes(pytester):
    pytester.makepyfile(test_example=_readme_example())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=2)


def test_fixtures_switch_transport_and_clean_up(pytester, monkeypatch):
    monkeypatch.setenv("YOTON_TRANSPORT", "unix")  # what the user's shell had
    pytester.makepyfile(
        test_fixtures="""
        import os
        import pytest
        import yoton

        made = []

        def test_switches_to_inproc(yoton_inproc_transport):
            assert yoton_inproc_transport == "inproc"
            assert os.environ["YOTON_TRANSPORT"] == "inproc"
            assert yoton.Context().transport == "inproc"

        def test_environment_restored_afterwards():
            assert os.environ["YOTON_TRANSPORT"] == "unix"

        def test_chain_of_contexts(yoton_contexts):
            a, b, c = yoton_contexts(3)
            made.extend([a, b, c])
            assert [x.connection_count for x in (a, b, c)] == [1, 2, 1]
            assert all(conn.scheme == "inproc" for conn in b.connections)
            sub = yoton.SubChannel(a, "back")
            yoton.PubChannel(c, "back").send("c to a")
            assert sub.recv(5.0) == "c to a"

        def test_contexts_were_closed_at_teardown():
            assert made and all(x.connections_all == [] for x in made)

        def test_pair_over_tcp_too(yoton_contexts):
            a, b = yoton_contexts(2, transport="tcp")
            assert a.connections[0].scheme == "tcp"

        def test_pair_fixture(yoton_context_pair):
            a, b = yoton_context_pair
            assert a.connections[0].id2 == b.id

        def test_bad_count(yoton_contexts):
            with pytest.raises(ValueError, match="n must be an int >= 1"):
                yoton_contexts(0)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=7)


def test_the_conformance_kits_asserts_are_rewritten_by_pytest(pytester):
    """A plugin author's failing check shows pytest's detailed message: the kit's
    module is registered for assertion rewriting when yoton_core.testing loads."""
    pytester.makepyfile(
        test_kit="""
        import yoton_core.testing
        import yoton_core._conformance as kit

        def test_rewritten():
            assert "@py_builtins" in vars(kit)  # what pytest's rewriting adds
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
