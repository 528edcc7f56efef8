"""Atheris fuzz target: the handshake state machine (the YOTON! line, both roles).

Run (needs the optional extra: ``pip install -e .[fuzz]``)::

    python fuzz/fuzz_handshake.py -max_total_time=30

The target function is ``yoton_core._fuzz_targets.TARGETS["handshake"]``, the same
one the hypothesis tests in ``tests/test_protocol_fuzz.py`` run; reproduce a
crash with ``python fuzz/fuzz_handshake.py crash-<hash>``.
"""

from _common import run

if __name__ == "__main__":
    run("handshake")
