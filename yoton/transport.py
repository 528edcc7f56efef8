"""The API for writing yoton transport plugins (see :mod:`yoton_core.transport`).

A facade with no logic of its own: ``from yoton.transport import
StreamConnection, hookimpl, ...``.
"""

from yoton_core.transport import *  # noqa: F403
from yoton_core.transport import __all__ as __all__  # noqa: PLE0605
