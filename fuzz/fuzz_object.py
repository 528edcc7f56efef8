"""Atheris fuzz target: the OBJECT message decoder (decode_object).

Run (needs the optional extra: ``pip install -e .[fuzz]``)::

    python fuzz/fuzz_object.py -max_total_time=30

The target function is ``yoton_core._fuzz_targets.TARGETS["object"]``, the same
one the hypothesis tests in ``tests/test_protocol_fuzz.py`` run; reproduce a
crash with ``python fuzz/fuzz_object.py crash-<hash>``.
"""

from _common import run

if __name__ == "__main__":
    run("object")
