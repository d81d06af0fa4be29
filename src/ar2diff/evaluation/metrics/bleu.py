"""Corpus BLEU and chrF with sacrebleu's defaults (BLEU: 13a tokenizer, exp smoothing)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sacrebleu.metrics import BLEU, CHRF

from ar2diff.errors import Ar2DiffError


class CorpusScore(NamedTuple):
    """A corpus-level score (0-100) and the sacrebleu signature that reproduces it."""

    score: float
    signature: str


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> CorpusScore:
    """Corpus BLEU of one hypothesis per segment against one reference per segment."""
    metric = BLEU()
    score = metric.corpus_score(list(hypotheses), [_checked(hypotheses, references)])
    return CorpusScore(score.score, str(metric.get_signature()))


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> CorpusScore:
    """Corpus chrF (character 6-grams, beta 2) with the same inputs as :func:`corpus_bleu`."""
    metric = CHRF()
    score = metric.corpus_score(list(hypotheses), [_checked(hypotheses, references)])
    return CorpusScore(score.score, str(metric.get_signature()))


def sentence_bleu(hypothesis: str, reference: str) -> float:
    """Smoothed sentence-level BLEU (a per-example indication only; report corpus BLEU)."""
    return BLEU(effective_order=True).sentence_score(hypothesis, [reference]).score


def _checked(hypotheses: Sequence[str], references: Sequence[str]) -> list[str]:
    if len(hypotheses) != len(references):
        raise Ar2DiffError(
            f"{len(hypotheses)} hypotheses but {len(references)} references; give one per segment"
        )
    if not references:
        raise Ar2DiffError("no segments to score; give at least one hypothesis and reference")
    return list(references)
