"""``yoton.clientserver``: one request, one reply, under its 2.x module name.

The yoton documentation (and 2.x programs: Pyzo does ``from yoton.clientserver
import RequestServer, do_request``) name this module; it re-exports the same
objects as :mod:`yoton` itself and holds no logic of its own.
"""

from yoton_core import NoServerError, RequestServer, do_request

__all__ = ["NoServerError", "RequestServer", "do_request"]
