"""Stop sequences: where a completion's text ends, and how much of a growing text may be shown.

Used by the server (OpenAI's ``stop``) and the lm-evaluation-harness model (``until``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


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
    """How many last tokens to decode to see a stop sequence complete: its length in UTF-8
    bytes (a byte-level token holds at least one byte), plus a margin."""
    return max((len(s.encode("utf-8")) for s in stops), default=0) + 8


class StopWatch:
    """Watches AR rows token by token and says which have just produced one of their stop
    sequences (an ``on_token`` hook for :func:`ar2diff.sampling.autoregressive.ar_generate`);
    a row ends for good at one of ``end_ids``."""

    def __init__(self, tokenizer: Any, stops: Sequence[Sequence[str]], end_ids: Sequence[int]):
        self.tokenizer, self.stops, self.end_ids = tokenizer, stops, set(end_ids)
        self.tokens: list[list[int]] = [[] for _ in stops]
        self.done = [not s for s in stops]
        self.windows = [tail_window(s) for s in stops]  # per row: the group does not matter

    def ended(self, tokens: Sequence[int]) -> set[int]:
        """Rows (one token each in ``tokens``) whose text now holds a stop sequence, each once."""
        new = set()
        for r, tok in enumerate(tokens):
            if self.done[r]:
                continue
            if tok in self.end_ids:
                self.done[r] = True
                continue
            self.tokens[r].append(tok)
            tail = self.tokenizer.decode(self.tokens[r][-self.windows[r]:], skip_special_tokens=True)
            if find_stop(tail, self.stops[r]) is not None:
                self.done[r] = True
                new.add(r)
        return new


def token_pieces(decode: Callable[[list[int]], str], tokens: Sequence[int]) -> list[str]:
    """The text each token adds to ``decode(tokens)``. A token that ends inside a character adds
    nothing; the token that completes it adds it all. Decodes short windows (linear time), and
    whole prefixes where windows do not add up to the text (tokenizers that join words with
    spaces and skip special tokens)."""
    pieces = _pieces(decode, tokens, windowed=True)
    if "".join(pieces) != decode(list(tokens)):
        pieces = _pieces(decode, tokens, windowed=False)
    return pieces


def _pieces(decode: Callable[[list[int]], str], tokens: Sequence[int], windowed: bool) -> list[str]:
    pieces, prefix, read = [], 0, 0
    for i in range(len(tokens)):
        before = decode(list(tokens[prefix:read]))
        now = decode(list(tokens[prefix:i + 1]))
        if now.endswith("\ufffd"):
            pieces.append("")
            continue
        pieces.append(now[len(before):])
        prefix, read = (read if windowed else 0), i + 1
    return pieces
