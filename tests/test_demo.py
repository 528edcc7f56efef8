"""The README's first command runs examples/demo.py: it must work, by itself, every time.

The demo starts two child processes (a worker and a trio listener) and talks
to them over TCP, then (nats-server is installed by the test extra) joins a
NATS bus with a third; only the hub prints, in a fixed order, so the whole
output is compared line by line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"

EXPECTED = """\
== yoton demo: a hub and two child processes over TCP ==
hub: worker and listener connected

-- publish/subscribe --
hub published 'hello'
  worker got 'hello'
  listener got 'hello'
hub published 'how are you?'
  worker got 'how are you?'
  listener got 'how are you?'

-- request/reply --
hub: calc.add(3, 4) -> 7
  worker got 'your turn'
  listener got 'your turn'
  listener awaited calc.add(20, 22) -> 42

-- state --
hub: the worker's status is 'served 2 request(s)'

-- client/server --
hub: do_request(..., 'ping') -> 'Requested: ping'

-- shutdown --
hub: worker exited with code 0
hub: listener exited with code 0

-- across machines: NATS --
hub: started a local nats-server; joining the bus 'demo' on it
hub published 'hello over NATS'
  worker on the bus got 'hello over NATS'
hub: calc.add(40, 2) -> 42
hub: the worker's status is 'served 1 request(s)'
hub: the worker on the bus exited with code 0
== demo finished ==
"""


def test_demo_runs_and_prints_the_expected_conversation() -> None:
    proc = subprocess.run(
        [sys.executable, str(DEMO)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=90,
        cwd=DEMO.parent.parent,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.stdout.splitlines() == EXPECTED.splitlines(), proc.stderr
    # Nothing went wrong quietly in any of the three processes.
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "ERROR" not in proc.stderr, proc.stderr
