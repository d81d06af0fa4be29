"""Decoding vocabulary and defaults, in one place.

Words used throughout ar2diff:

* ``mode``: ``ar`` (one token per forward pass, left to right) or ``diffusion`` (all target
  positions denoised together over ``steps`` passes).
* ``candidates`` (diffusion's N): samples denoised in parallel for one completion; the one the
  model scores best is returned.
* ``completions``: independent completions returned per prompt (e.g. n for pass@k).
* ``layout`` (see :mod:`ar2diff.models.attention`): the full attention mask a model runs under;
  ``input_attention`` only how the input attends to itself (``causal`` or ``prefix``).

:class:`DecodingDefaults` is what a model folder stores (the ``sample:`` section of a run
config); :class:`DecodeOptions` is what a caller asks for, ``None`` meaning "the model's".
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("ar", "diffusion")

# The paper's diffusion defaults: T = 10 steps, temperature 0.2, N = 8 candidates.
DEFAULT_STEPS = 10
DEFAULT_TEMPERATURE = 0.2
DEFAULT_CANDIDATES = 8
DEFAULT_TARGET_LENGTH = 32  # diffusion target length of a run (data.target_length)
DEFAULT_AR_MAX_NEW_TOKENS = 64  # a plain pretrained LM, which stores no defaults
DEFAULT_AR_TEMPERATURE = 1.0  # AR sampling


@dataclass
class DecodingDefaults:
    """Decoding defaults saved with a model (the run config's ``sample:`` section)."""

    steps: int = DEFAULT_STEPS
    temperature: float = DEFAULT_TEMPERATURE
    candidates: int = DEFAULT_CANDIDATES
    max_new_tokens: int = DEFAULT_TARGET_LENGTH
    repetition_penalty: float = 1.0  # diffusion: > 1 discourages tokens repeated in a sample
    block_length: int = 0  # masked diffusion: reveal blocks of this many tokens, left to right


@dataclass
class DecodeOptions:
    """What a caller asks for (CLI, evaluation, benchmarks); ``None`` means the model's default."""

    mode: str | None = None  # ar | diffusion; default: what the model was trained for
    steps: int | None = None  # diffusion steps T
    completions: int = 1  # completions returned per prompt (e.g. n for pass@k)
    candidates: int | None = None  # diffusion: N samples denoised in parallel, best one returned
    temperature: float | None = None
    max_new_tokens: int | None = None
    seed: int = 0
    strategy: str = "greedy"  # AR: greedy | sample | beam
    top_p: float = 1.0
    num_beams: int = 4
    chat: bool | None = None  # chat template (True) or raw (False); None: the model's prompt format
    early_stop: bool = False  # diffusion: stop an input once a step changes none of its samples
    repetition_penalty: float | None = None  # diffusion; default: the model's (1 = off)
    block_length: int | None = None  # masked diffusion; default: the model's (0 = one block)


# Names an earlier release used for DecodeOptions fields (experiment specs may still use them).
OPTION_ALIASES = {"parallel": "candidates", "num_return": "completions"}


def decode_options(fields: dict) -> DecodeOptions:
    """DecodeOptions from a mapping, accepting the older field names."""
    return DecodeOptions(**{OPTION_ALIASES.get(k, k): v for k, v in fields.items()})
