"""The request/reply wire protocol: control words, ids and reply encoding.

Shared by :mod:`yoton_core._reqrep` (ReqChannel) and
:mod:`yoton_core._repchannel` (RepChannel). The 2.x protocol
(docs/protocol.md#reqrep-2x) balances load with *pre-requests*: the requester broadcasts
``req?``; every free replier answers ``req!``; the requester sends the actual
request to the first one and broadcasts ``req-`` to release the others; the
replier sends the reply. That is four one-way trips per call. We speak it with
2.x peers, unchanged on the wire.

Between two new-style ends there is a shorter *direct path*, agreed per
replier and per requester inside the 2.x exchange itself rather than in the
connection handshake: the two ends of a request are often not neighbours
(relays, 2.x relays included, sit between them), a connection-level flag would
say nothing about whether the far context runs a RepChannel on this slot, and
it works the same over every transport:

* Our request ids carry :data:`NEW_STYLE` (bit 62). A 2.x replier echoes ids
  without looking at them, so this is invisible to it.
* Our replier, seeing that bit, answers ``req!3`` instead of ``req!``: "I am
  new-style and take direct requests". A 2.x requester never sets the bit, so
  it never sees ``req!3``.
* Once a requester knows such a replier, it sends later requests straight to
  it as a *direct offer* (``req*`` + request, one package). A free replier runs
  it at once and replies (two trips); a busy one (or one in mode off) declines
  with ``req~`` and the requester falls back to broadcasting ``req?``. Only the
  one addressed replier ever sees the request, so only one executes it. If the
  handler takes longer than :data:`DIRECT_ACK_DELAY` the replier sends
  ``req!3`` as an "I am on it" notice; a direct offer neither answered nor
  acknowledged within ``_reqrep.DIRECT_ACK_TIMEOUT`` (2 s) means the replier is
  gone: the requester forgets it and falls back to the broadcast. (Were the
  notice delayed longer than that on a live link, a second replier could run
  the request too; a closing RepChannel says ``req.`` to the requesters it
  knows, so the timeout only covers a replier that vanished silently.)
* For running requests on new-style repliers the requester checks liveness
  (``req#`` → ``req=`` alive / ``req^`` unknown), so a replier that vanished
  behind a relay fails the Future instead of leaving it running forever.
* A new-style replier reports errors as ``E`` + an OBJECT dict (type name,
  module, message, traceback); ``E`` is not an OBJECT tag, so a legitimate
  result can never be mistaken for an error. To 2.x requesters it sends 2.x's
  ``("yoton_ERROR_HANDLING_REQUEST", "Type: message\\nline N of file.")``.
  From a 2.x replier that tuple is read as an error (2.x cannot tell it from a
  legitimate result of that exact shape; neither can we).
"""

from __future__ import annotations

import traceback
from typing import Any

from ._errors import RemoteError, make_remote_error
from ._message_types import _decode, decode_object, encode_object

__all__ = [
    "DIRECT_ACK_DELAY",
    "ERROR_MARKER",
    "NEW_STYLE",
    "REF",
    "REP_GONE",
    "REQ_ACK",
    "REQ_ACK_NEW",
    "REQ_ALIVE",
    "REQ_DECLINE",
    "REQ_DIRECT",
    "REQ_OFFER",
    "REQ_PING",
    "REQ_RELEASE",
    "REQ_UNKNOWN",
    "decode_reply",
    "encode_error",
]

#: dest_seq offset of req/rep control packages (2.x).
REF = 2**63
#: Bit set in our request ids: "this requester is new-style".
NEW_STYLE = 2**62

REQ_OFFER = b"req?"  # broadcast: who can take request <rid>?
REQ_ACK = b"req!"  # replier -> requester: I can (2.x)
REQ_ACK_NEW = b"req!3"  # same, from a new-style replier (also "running" notice)
REQ_RELEASE = b"req-"  # requester: request <rid> is taken or cancelled
REQ_DIRECT = b"req*"  # requester -> known replier: run this request now (+ payload)
REQ_DECLINE = b"req~"  # replier: busy, broadcast it instead
REQ_PING = b"req#"  # requester -> replier: still working on <rid>?
REQ_ALIVE = b"req="  # replier: yes
REQ_UNKNOWN = b"req^"  # replier: never heard of it (lost)
REP_GONE = b"req."  # replier -> known requesters: my RepChannel closed

ERROR_MARKER = "yoton_ERROR_HANDLING_REQUEST"
ERROR_PREFIX = b"E"

#: A replier running a direct request longer than this sends ``req!3``.
DIRECT_ACK_DELAY = 0.1


# -- replies and errors ----------------------------------------------------------


def _where(exc: BaseException) -> str:
    tb = exc.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"line {tb.tb_lineno} of {tb.tb_frame.f_code.co_filename}."


def _exc_text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not lose the error
        return f"<unprintable {type(exc).__name__}>"


def encode_error(exc: BaseException, new_style: bool) -> bytes:
    """The reply payload that reports ``exc`` to a requester."""
    cls = type(exc)
    if isinstance(exc, RemoteError) and exc.type_name:  # re-raised remote error: pass it on
        name, module, message = exc.type_name, exc.remote_module, exc.message
    else:
        name, module, message = cls.__name__, cls.__module__, _exc_text(exc)
    if new_style:
        tb = "".join(traceback.format_exception(cls, exc, exc.__traceback__))
        info = {"type": name, "module": module, "message": message, "traceback": tb}
        return ERROR_PREFIX + encode_object(info)
    return encode_object((ERROR_MARKER, f"{name}: {message}\n{_where(exc)}"))


def decode_reply(data: bytes, replier_new: bool, replier_id: int) -> tuple[bool, Any]:
    """Decode a reply payload into ``(True, result)`` or ``(False, exception)``."""
    try:
        if data and data[0] == 0x45:  # ERROR_PREFIX, never an OBJECT tag
            info = decode_object(data[1:])
            if not isinstance(info, dict):
                raise ValueError("error reply is not a dict")
            return False, make_remote_error(
                str(info.get("type", "")),
                str(info.get("message", "")),
                str(info.get("traceback", "")),
                replier_id,
                str(info.get("module", "")),
            )
        value = _decode(data, 0, 0)[0] if data else None  # decode_object, minus a call
    except Exception as exc:
        return False, RemoteError(
            type(exc).__name__, f"could not decode the reply: {exc}", replier_id=replier_id
        )
    if replier_new or type(value) is not tuple:
        return True, value
    if len(value) == 2 and value[0] == ERROR_MARKER and isinstance(value[1], str):
        message, _, where = value[1].rpartition("\n")
        if not message:
            message, where = value[1], ""
        return False, RemoteError("", message, where, replier_id)
    return True, value
