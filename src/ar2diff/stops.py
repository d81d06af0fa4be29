"""Stop sequences: where a completion's text ends, and how much of a growing text may be shown.

Used by the server (OpenAI's ``stop``) and the lm-evaluation-harness model (``until``).
"""

from __future__ import annotations

from collections.abc import Sequence


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest stop sequence in ``text``, or None."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the first of the stop sequences ``stops``."""
    at = find_stop(text, stops)
    return text if at is None else text[:at]


def streamable(text: str, stops: Sequence[str]) -> str:
    """The part of a still-growing ``text`` that is final: up to its first stop sequence, or,
    when none has appeared, all but the longest tail that could be the start of one."""
    at = find_stop(text, stops)
    if at is not None:
        return text[:at]
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:k]):
                hold = k
                break
    return text[:len(text) - hold]


def tail_window(stops: Sequence[str]) -> int:
    """How many last tokens to decode to see a stop sequence complete (each token is at least
    one character, plus a margin for tokens that end inside a character)."""
    return max((len(s) for s in stops), default=0) + 8
