"""Atheris fuzz target: the frame decoder (FrameDecoder: package headers, lengths, control bytes).

Run (needs the optional extra: ``pip install -e .[fuzz]``)::

    python fuzz/fuzz_decoder.py -max_total_time=30

The target function is ``yoton_core._fuzz_targets.TARGETS["decoder"]``, the same
one the hypothesis tests in ``tests/test_protocol_fuzz.py`` run; reproduce a
crash with ``python fuzz/fuzz_decoder.py crash-<hash>``.
"""

from _common import run

if __name__ == "__main__":
    run("decoder")
