"""yoton_core: the transport-agnostic core of yoton.

Users import :mod:`yoton`, which re-exports the public names below. Transport
plugins import what they need from :mod:`yoton.transport` (the same as
:mod:`yoton_core.transport`): the connection bases and their subclass
contract, the hook marker, address and package helpers, the IO engine.
"""

from __future__ import annotations

from ._async import event_loop_async, run_event_loop_async, trio_event_loop
from ._channels import BaseChannel
from ._clientserver import RequestServer, do_request
from ._connection import Connection, ConnectionStatistics
from ._context import ConnectionCollection, Context
from ._errors import (
    BrokenConnectionError,
    CancelledError,
    ConnectError,
    ConnectionClosedError,
    FrameError,
    HandshakeError,
    InvalidArgumentError,
    MessageDecodeError,
    NoServerError,
    PluginLoadError,
    ProtocolError,
    RemoteError,
    TimeoutError,
    TransportNotFoundError,
    YotonError,
)
from ._events import (
    Signal,
    Timer,
    app,
    call_later,
    embed_event_loop,
    process_events,
    start_event_loop,
    stop_event_loop,
)
from ._filewrapper import FileWrapper
from ._future import Future
from ._hashing import port_hash, slot_hash
from ._hookspecs import hookimpl, hookspec
from ._iostats import IOStatistics, io_statistics
from ._message_types import BINARY, OBJECT, TEXT, MessageType
from ._plugins import plugin_manager, transports
from ._pubsub import PubChannel, SubChannel, select_sub_channel
from ._repchannel import RepChannel
from ._reqrep import ReqChannel
from ._simplesocket import SimpleSocket
from ._state import StateChannel
from ._stream import StreamConnection
from ._wire import Package

__version__ = "3.0.0.dev0"

__all__ = [
    "BINARY",
    "OBJECT",
    "TEXT",
    "BaseChannel",
    "BrokenConnectionError",
    "CancelledError",
    "ConnectError",
    "Connection",
    "ConnectionClosedError",
    "ConnectionCollection",
    "ConnectionStatistics",
    "Context",
    "FileWrapper",
    "FrameError",
    "Future",
    "HandshakeError",
    "IOStatistics",
    "InvalidArgumentError",
    "MessageDecodeError",
    "MessageType",
    "NoServerError",
    "Package",
    "PluginLoadError",
    "ProtocolError",
    "PubChannel",
    "RemoteError",
    "RepChannel",
    "ReqChannel",
    "RequestServer",
    "Signal",
    "SimpleSocket",
    "StateChannel",
    "StreamConnection",
    "SubChannel",
    "TimeoutError",
    "Timer",
    "TransportNotFoundError",
    "YotonError",
    "__version__",
    "app",
    "call_later",
    "do_request",
    "embed_event_loop",
    "event_loop_async",
    "hookimpl",
    "hookspec",
    "io_statistics",
    "plugin_manager",
    "port_hash",
    "process_events",
    "run_event_loop_async",
    "select_sub_channel",
    "slot_hash",
    "start_event_loop",
    "stop_event_loop",
    "transports",
    "trio_event_loop",
]
