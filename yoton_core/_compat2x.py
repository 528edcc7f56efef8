"""Private names of yoton 2.x that real 2.x programs use: compatibility shims.

Not yoton's API. Each name here exists only because a program written for
yoton 2.x reaches into 2.x's private attributes and must run unchanged on this
package (issue 14). They are thin aliases of what the classes do anyway; new
code has public ways to do the same. docs/interop.md lists them.

* ``RepChannel._run_mode``: 2.x's mode number (0 off, 1 event, 2 thread).
  Pyzo's kernel (``pyzokernel/interpreter.py``) reads it on every pass of its
  loop to see whether it must serve introspection requests itself. Public way:
  ``RepChannel.mode``.
* ``RepChannel._process_events_local()``: in 2.x, handle the requests that
  arrived, in the calling thread. Pyzo's kernel calls it from its main thread
  after ``set_mode(0)`` (``PYZO_INTROSPECT_IN_MAIN_THREAD=1``), so that
  introspection runs where the user's objects live. Here it runs the queued
  requests in the calling thread and acknowledges the next waiting one.

``Future._status`` (2.x's state number, 0..4) is not a shim: it is the
Future's own state attribute, which keeps 2.x's name and numbering.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RepChannel2x"]


class RepChannel2x:
    """Mixin of :class:`RepChannel` with the 2.x private names (not yoton's API)."""

    __slots__ = ()

    _mode: int

    @property
    def _run_mode(self) -> int:
        """2.x: 0 off, 1 event, 2 thread (read-only; use ``set_mode``)."""
        return self._mode

    def _process_events_local(self, dummy: Any = None) -> None:
        """2.x: handle the requests that arrived, in this thread (any mode).

        Args:
            dummy: Ignored (2.x bound it to signals, which pass an argument).
        """
        self._serve_queued()  # type: ignore[attr-defined]
