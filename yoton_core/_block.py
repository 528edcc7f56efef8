"""What ``block`` and ``timeout`` arguments mean, in one place for every call that waits.

``SubChannel.recv``, ``StateChannel.recv``, ``SimpleSocket.recv``,
``FileWrapper.read`` and ``process_events`` take the same 2.x-style ``block``:
True (wait), False/None (don't), or a number of seconds. Every ``timeout``-like
argument (``Context.connect``, ``Future.result``, ``Connection.timeout``,
``call_later``, ``do_request``, ...) is checked by :func:`check_timeout`, so
they all accept the same numbers and fail with the same kind of error.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Literal, overload

from ._errors import InvalidArgumentError

__all__ = ["check_block", "check_timeout", "normalize_block"]


def normalize_block(block: Any) -> float | None:
    """Turn a ``block`` argument into a wait time: 0 (don't), None (forever) or seconds.

    ``True`` waits forever; ``False``, ``None`` and ``0`` don't wait; a positive
    real number (int, float, numpy's, ...) waits that many seconds,
    ``float("inf")`` forever (a deadline at infinity would overflow the waits).
    """
    if block is True:
        return None
    if block is False or block is None:
        return 0.0
    # (exact int and float first: the ABC check costs more than a wait's set-up)
    if block.__class__ is float or block.__class__ is int or isinstance(block, numbers.Real):
        if block != block or block < 0:  # NaN or negative
            raise InvalidArgumentError(
                f"block must be True, False or a number of seconds >= 0, got {block!r}"
            )
        return None if block == math.inf else float(block)
    raise InvalidArgumentError(f"block must be True, False or a number of seconds, got {block!r}")


def check_block(block: Any, where: str) -> float | None:
    """Validate a ``block`` argument whose default (None) means "don't wait".

    :func:`normalize_block` does the work; this only says, in its errors,
    which call was wrong and that None is allowed too. It is for calls that
    default to None (``SimpleSocket.recv``, ``FileWrapper.read``, as in 2.x),
    unlike ``SubChannel.recv``, whose default True waits.

    Args:
        block: None or False (don't wait), True (wait until something
            arrives) or a number of seconds >= 0.
        where: The call to name in the error, e.g. ``"SimpleSocket.recv()"``.

    Returns:
        The wait in seconds: 0.0 (don't), None (forever, also for
        ``float("inf")``) or a positive number.

    Raises:
        TypeError: ``block`` is not None, a bool or a number.
        ValueError: ``block`` is a negative number or NaN.
    """
    try:
        wait = normalize_block(block)
    except TypeError:
        raise InvalidArgumentError(
            f"{where}: block must be None/False (don't wait), True (wait) or a number "
            f"of seconds >= 0, got {type(block).__name__} {block!r}"
        ) from None
    except ValueError:
        raise InvalidArgumentError(
            f"{where}: block must be None/False (don't wait), True (wait) or a number "
            f"of seconds >= 0, got {block!r}"
        ) from None
    return wait


@overload
def check_timeout(
    value: Any,
    what: str,
    *,
    none: Literal[False] = ...,
    minimum: float = ...,
    above: bool = ...,
    finite: bool = ...,
) -> float: ...


@overload
def check_timeout(
    value: Any,
    what: str,
    *,
    none: bool,
    minimum: float = ...,
    above: bool = ...,
    finite: bool = ...,
) -> float | None: ...


def check_timeout(
    value: Any,
    what: str,
    *,
    none: bool = False,
    minimum: float = 0.0,
    above: bool = False,
    finite: bool = False,
) -> float | None:
    """Validate a number of seconds given by the user; return it as a float.

    Any real number is accepted (int, float, numpy's, ...), never a bool. The
    error names the argument and what it accepts, in one wording for every call.

    Args:
        value: The argument.
        what: How the user knows it, e.g. ``"Context.connect() timeout"``.
        none: Whether None is allowed (it is returned as None).
        minimum: The smallest number allowed (``-math.inf`` for no bound).
        above: Require ``value > minimum`` instead of ``>=``.
        finite: Refuse ``float("inf")``.

    Raises:
        InvalidArgumentError: (a TypeError and a ValueError) ``value`` is not
            allowed.
    """
    if value is None and none:
        return None
    cls = type(value)
    if cls is float or cls is int or (cls is not bool and isinstance(value, numbers.Real)):
        seconds = float(value)
        if (seconds > minimum if above else seconds >= minimum) and not (
            finite and not math.isfinite(seconds)
        ):
            return seconds
    expected = "a number of seconds"
    if minimum != -math.inf:
        expected += f" {'>' if above else '>='} {minimum:g}"
    if finite:
        expected = "a finite " + expected[2:]
    if none:
        expected = "None or " + expected
    raise InvalidArgumentError(f"{what} must be {expected}, got {value!r}.")
