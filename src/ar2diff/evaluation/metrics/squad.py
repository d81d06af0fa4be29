"""SQuAD v1.1 exact match and F1, as defined by the official evaluation script.

Answers are normalised (lowercase, punctuation removed, articles a/an/the removed, whitespace
collapsed); a prediction scores the maximum over the gold answers; corpus scores are means x 100.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

from ar2diff.errors import Ar2DiffError

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation, drop articles, collapse whitespace (official order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals some normalised gold answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in _nonempty(golds)))


def f1(prediction: str, golds: Sequence[str]) -> float:
    """Best token-overlap F1 (0-1) of the prediction against the gold answers."""
    return max(_token_f1(prediction, g) for g in _nonempty(golds))


def _token_f1(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus ``exact_match`` and ``f1`` (0-100) over aligned predictions and gold lists."""
    if len(predictions) != len(golds):
        raise Ar2DiffError(
            f"{len(predictions)} predictions but {len(golds)} questions; give one per question"
        )
    if not golds:
        raise Ar2DiffError("no questions to score; give at least one prediction")
    n = len(golds)
    return {
        "exact_match": 100.0 * sum(map(exact_match, predictions, golds)) / n,
        "f1": 100.0 * sum(map(f1, predictions, golds)) / n,
    }


def _nonempty(golds: Sequence[str]) -> Sequence[str]:
    if not golds:
        raise Ar2DiffError("a question has no gold answers; every question needs at least one")
    return golds
