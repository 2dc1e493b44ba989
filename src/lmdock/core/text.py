"""Text helpers shared by the engine's stop strings and the chat layer's output markers."""

from __future__ import annotations


def partial_suffix(buf: str, markers: tuple[str, ...] | list[str]) -> int:
    """Length of the longest tail of `buf` that is a proper prefix of one of `markers` (text to hold
    back: it may still become a marker)."""
    hold = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(buf)), hold, -1):
            if buf.endswith(marker[:n]):
                hold = n
                break
    return hold
