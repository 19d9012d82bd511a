"""Byte counts as people read them (``1.5 GiB``): for status lines and messages alike."""

from __future__ import annotations


def format_size(nbytes: float) -> str:
    """``512 B``, ``1.5 KiB`` … ``3.2 TiB`` (binary units, one decimal above bytes)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"
