"""Build hook for the optional compiled accelerator (README, "Fast build").

Everything is configured in pyproject.toml. With ``YOTON_ACCELERATE=1`` in the
environment this also compiles ``yoton_core/_speedups.pyx`` (needs Cython and
a C compiler: ``pip install cython`` first and ``--no-build-isolation``, or
``python3 dev.py accel``). Without it, the install is pure Python and yoton
runs the same, a little slower per message.
"""

import os

from setuptools import setup

ext_modules = []
if os.environ.get("YOTON_ACCELERATE", "") not in ("", "0"):
    from Cython.Build import cythonize

    ext_modules = cythonize(["yoton_core/_speedups.pyx"], language_level=3, quiet=True)

setup(ext_modules=ext_modules)
