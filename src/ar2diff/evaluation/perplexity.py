"""Likelihood evaluation (``ar2diff evaluate --task perplexity --data FILE``): AR perplexity and
the diffusion bound on the same text.

Each document is cut into pieces of ``window`` tokens, each scored given the at most ``context``
tokens before it (the first given the tokenizer's BOS, else EOS): exactly under AR decoding, and under
diffusion by :func:`ar2diff.likelihood.diffusion_bounds`, so both read in nats per token over the
same tokens and the same conditioning. The diffusion numbers bound the negative log-likelihood
(and the perplexity) from above, up to their Monte-Carlo error.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from tqdm import tqdm

from ar2diff.decoding import MODES, DecodeOptions
from ar2diff.errors import Ar2DiffError
from ar2diff.evaluation.run import _finish
from ar2diff.generation import TextGenerator
from ar2diff.likelihood import ar_log_likelihoods, diffusion_bounds, document_pairs

TASK = "perplexity"
DEFAULT_CONTEXT = 256  # tokens of preceding text each piece is conditioned on
DEFAULT_MC_SAMPLES = 8  # Monte-Carlo draws of the diffusion bound per piece


def read_documents(path: str | os.PathLike, limit: int | None = None) -> list[str]:
    """Documents of a text file (paragraphs, split at blank lines) or of a JSONL file (its
    ``text`` fields), the first ``limit`` of them."""
    path = Path(path)
    if not path.is_file():
        raise Ar2DiffError(f"--data {path}: no such file; give a .txt or .jsonl file of documents")
    raw = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".jsonl":
        docs = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                docs.append(json.loads(line)["text"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise Ar2DiffError(f"{path} line {n}: expected a JSON object with a \"text\" "
                                   "field") from None
    else:
        docs = [" ".join(p.split()) for p in raw.split("\n\n")]
    docs = [d for d in docs if d.strip()][:limit]
    if not docs:
        raise Ar2DiffError(f"--data {path}: no documents in it")
    return docs


def evaluate_perplexity(
    model: str | TextGenerator,
    data: str | os.PathLike,
    *,
    mode: str | None = None,
    mc_samples: int = DEFAULT_MC_SAMPLES,
    seed: int = 0,
    window: int | None = None,
    context: int = DEFAULT_CONTEXT,
    limit: int | None = None,
    batch_size: int = 8,
    dtype: str | None = None,
    device: str | None = "auto",
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Score the documents of ``data``: AR (``mode`` ``ar``), the diffusion bound (``diffusion``)
    or, by default, AR and, for a diffusion model, the bound too; returns (and writes to ``out``)
    the results with their setup."""
    if mode is not None and mode not in MODES:
        raise Ar2DiffError(f"--mode {mode!r}: choose ar or diffusion")
    if context < 1:
        raise Ar2DiffError(f"--context {context}: condition on at least 1 token")
    if window is not None and window < 1:
        raise Ar2DiffError(f"--window {window}: score pieces of at least 1 token")
    docs = read_documents(data, limit)
    gen = model if isinstance(model, TextGenerator) else TextGenerator.load(str(model), dtype,
                                                                           device)
    modes = [mode] if mode else ["ar", *(["diffusion"] if gen.meta.mode == "diffusion" else [])]
    if "diffusion" in modes and mc_samples < 2:
        raise Ar2DiffError(f"--mc-samples {mc_samples}: draw at least 2 (the variance needs two)")
    window = window or gen.meta.target_length
    tok = gen.tokenizer
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    pairs = [p for d in docs
             for p in document_pairs(tok.encode(d, add_special_tokens=False), prefix, window,
                                     context)]
    start = time.perf_counter()
    metrics: dict = {"documents": len(docs), "tokens": sum(len(c) for _, c in pairs),
                     "pieces": len(pairs)}
    for m in modes:
        metrics[m] = _score(gen, m, pairs, mc_samples, seed, batch_size, progress)
    results = {"metrics": metrics, "seconds": time.perf_counter() - start}
    setup = {"model": None if isinstance(model, TextGenerator) else str(model), "modes": modes,
             "dtype": dtype, "device": str(gen.backbone.device), "window": window,
             "context": context, "mc_samples": mc_samples, "seed": seed}
    if "diffusion" in modes:
        setup["noise"] = gen.noise.name
        setup["estimator"] = "masked-diffusion ELBO, l of L tokens masked, l ~ U{1..L}"
    return _finish(results, setup, TASK, "all", limit, str(data), batch_size, out)


def _score(gen: TextGenerator, mode: str, pairs: list, mc_samples: int, seed: int,
           batch_size: int, progress: bool) -> dict:
    """Summed log-likelihood (or bound), nats per token and perplexity over ``pairs``."""
    tokens = sum(len(c) for _, c in pairs)
    total, variance = 0.0, 0.0
    chunks = [pairs[i:i + 64] for i in range(0, len(pairs), 64)]
    for chunk in tqdm(chunks, desc=f"perplexity ({mode})", disable=not progress):
        if mode == "ar":
            layout = gen.ar_config(DecodeOptions(mode="ar")).layout
            total += sum(s for s, _ in ar_log_likelihoods(gen.backbone, chunk, layout, batch_size))
        else:
            meta = gen.meta
            bounds = diffusion_bounds(gen.backbone, gen.noise, chunk, mc_samples, seed, meta.shift,
                                      meta.diffusion_layout, batch_size)
            total += sum(b.mean for b in bounds)
            variance += sum(b.variance / b.samples for b in bounds)
    nll = -total / tokens
    scores = {"log_likelihood": total, "nll_per_token": nll, "perplexity": math.exp(nll)}
    if mode == "diffusion":
        scores = {"log_likelihood_bound": total, "nll_bound_per_token": nll,
                  "perplexity_bound": math.exp(nll),
                  "nll_bound_per_token_stderr": math.sqrt(variance) / tokens}
    return scores
