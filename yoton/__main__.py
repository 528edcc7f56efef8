"""``python -m yoton``: the ``yoton`` command (implemented in :mod:`yoton_core._cli`)."""

from yoton_core._cli import main

raise SystemExit(main())
