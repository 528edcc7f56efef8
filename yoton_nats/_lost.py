"""The exception that ends one server session (its message says why)."""

from __future__ import annotations

__all__ = ["Lost"]


class Lost(Exception):
    """The server session ended; the link reconnects (or gives up)."""
