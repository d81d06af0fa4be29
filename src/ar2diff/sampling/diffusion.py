"""SUNDAE diffusion sampling.

Start from uniformly random target tokens; T times, denoise all target positions at once with
x ~ softmax(logits / tau). N samples per input run in parallel; the one the model scores best
(mean log-probability of its tokens under the last step's logits) is returned, cut at the first
pad / EOS. The input's keys and values are computed once per request (it never attends to the
target), and every input draws from its own generator, so a batch gives the same results as
each input alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ar2diff.data.batching import Example, collate
from ar2diff.models.backbone import Backbone
from ar2diff.noise import example_generator, uniform_tokens
from ar2diff.sampling.autoregressive import prompt_key


@dataclass
class DiffusionSampling:
    """The paper's defaults: T = 10 steps, tau = 0.2, N = 8 samples."""

    steps: int = 10
    temperature: float = 0.2
    samples: int = 8
    target_length: int = 32
    shift: bool = False
    seed: int = 0


@dataclass
class DiffusionResult:
    """The chosen sample (cut at pad / EOS), its score, and all N raw samples."""

    tokens: list[int]
    score: float
    all_samples: list[list[int]]
    all_scores: list[float]


def _draw(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> torch.Tensor:
    """Sample ``[N, L]`` tokens from ``[N, L, V]`` logits at ``temperature`` (0 = argmax)."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = (logits.float() / temperature).softmax(-1)
    flat = torch.multinomial(probs.view(-1, probs.shape[-1]), 1, generator=gen)
    return flat.view(probs.shape[:-1])


def cut(tokens: list[int], stop_ids: set[int]) -> list[int]:
    """Tokens before the first stop token (pad or EOS)."""
    for i, tok in enumerate(tokens):
        if tok in stop_ids:
            return tokens[:i]
    return tokens


@torch.no_grad()
def diffusion_generate(
    backbone: Backbone,
    inputs: Sequence[Sequence[int]],
    cfg: DiffusionSampling,
    noise_vocab: int,
    pad_id: int,
    eos_id: int,
) -> list[DiffusionResult]:
    """Denoise ``cfg.samples`` targets per input for ``cfg.steps`` steps; best sample per input."""
    n, length = cfg.samples, cfg.target_length
    batch = collate([Example(tuple(x), ()) for x in inputs], pad_id)
    state = backbone.encode_prefix(batch.input_ids, batch.input_mask, "diffusion")
    state = state.repeat_interleave(n)
    gens = [example_generator(cfg.seed, prompt_key(x)) for x in inputs]
    x = torch.cat([uniform_tokens((n, length), noise_vocab, g) for g in gens])
    logits = None
    for _ in range(cfg.steps):
        logits = backbone.logits_from_prefix(state, x, "diffusion", cfg.shift)
        x = torch.cat([
            _draw(logits[i * n:(i + 1) * n], cfg.temperature, g) for i, g in enumerate(gens)
        ])
    scores = (
        torch.zeros(len(x)) if logits is None
        else logits.float().log_softmax(-1).gather(-1, x[..., None])[..., 0].mean(-1)
    )
    stop = {pad_id, eos_id}
    results = []
    for i in range(len(inputs)):
        rows, row_scores = x[i * n:(i + 1) * n], scores[i * n:(i + 1) * n]
        best = int(row_scores.argmax())
        results.append(DiffusionResult(
            tokens=cut(rows[best].tolist(), stop), score=float(row_scores[best]),
            all_samples=[cut(r.tolist(), stop) for r in rows], all_scores=row_scores.tolist(),
        ))
    return results
