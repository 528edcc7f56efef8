"""``yoton.events``: signals, timers and the event loop, under their 2.x module name.

The yoton documentation (and 2.x programs) name this module; it re-exports the
same objects as :mod:`yoton` itself and holds no logic of its own.
"""

from yoton_core import (
    Signal,
    Timer,
    app,
    call_later,
    embed_event_loop,
    process_events,
    start_event_loop,
    stop_event_loop,
)

__all__ = [
    "Signal",
    "Timer",
    "app",
    "call_later",
    "embed_event_loop",
    "process_events",
    "start_event_loop",
    "stop_event_loop",
]
