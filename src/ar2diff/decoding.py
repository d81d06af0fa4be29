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

import math
from dataclasses import dataclass

from ar2diff.errors import Ar2DiffError

MODES = ("ar", "diffusion")
CONFIDENCES = ("probability", "margin", "entropy")
ORDERS = ("confidence", "left-to-right")
STRATEGIES = ("greedy", "sample", "beam")

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
    threshold: float = 0.0  # masked diffusion: reveal every position this confident (0 = off)
    factor: float = 0.0  # masked diffusion: Fast-dLLM's factor rule (0 = off)
    confidence: str = "probability"  # probability | margin | entropy (threshold and order)
    eos_stop: bool = True  # masked diffusion: a sample ends at its first revealed end token
    eos_penalty: float = 1.0  # diffusion: > 1 divides the probability of end tokens
    order: str = "confidence"  # masked diffusion: which masked positions a step reveals first


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
    threshold: float | None = None  # masked diffusion; default: the model's (0 = the schedule)
    factor: float | None = None  # masked diffusion; default: the model's (0 = off)
    confidence: str | None = None  # default: the model's (probability)
    eos_stop: bool | None = None  # masked diffusion; default: the model's (on)
    eos_penalty: float | None = None  # diffusion; default: the model's (1 = off)
    order: str | None = None  # masked diffusion; default: the model's (confidence)
    freeze: float = 0.0  # SUNDAE diffusion: freeze stable positions this confident (0 = off)

    def __post_init__(self) -> None:
        check_options(self)


def _number(value, flag: str, integer: bool) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise Ar2DiffError(f"{flag} {value!r}: expected {'an integer' if integer else 'a number'}")


def check_options(opts: DecodeOptions) -> None:
    """Reject decoding options no decoder can honour, naming the command-line flag."""
    at_least = {  # flag: (value, smallest allowed, integer?)
        "--steps": (opts.steps, 1, True),
        "--completions": (opts.completions, 1, True),
        "--candidates": (opts.candidates, 1, True),
        "--max-new-tokens": (opts.max_new_tokens, 1, True),
        "--num-beams": (opts.num_beams, 1, True),
        "--block-length": (opts.block_length, 0, True),
        "--seed": (opts.seed, 0, True),
        "--temperature": (opts.temperature, 0, False),
    }
    for flag, (value, low, integer) in at_least.items():
        if value is None:
            continue
        _number(value, flag, integer)
        if value < low:
            raise Ar2DiffError(f"{flag} {value}: must be at least {low}")
    if opts.seed >= 1 << 63:
        raise Ar2DiffError(f"--seed {opts.seed}: must be below 2**63")
    _number(opts.top_p, "--top-p", False)
    if not 0 < opts.top_p <= 1:
        raise Ar2DiffError(f"--top-p {opts.top_p}: must be in (0, 1] (1 = no nucleus cut)")
    if opts.repetition_penalty is not None:
        _number(opts.repetition_penalty, "--repetition-penalty", False)
        if opts.repetition_penalty <= 0:
            raise Ar2DiffError(f"--repetition-penalty {opts.repetition_penalty}: must be positive "
                               "(1 = off, > 1 discourages repeats)")
    if opts.mode is not None and opts.mode not in MODES:
        raise Ar2DiffError(f"--mode {opts.mode!r}: choose ar or diffusion")
    if opts.strategy not in STRATEGIES:
        raise Ar2DiffError(f"--strategy {opts.strategy!r}: choose one of {', '.join(STRATEGIES)}")
    for flag, value in (("--threshold", opts.threshold), ("--factor", opts.factor),
                        ("--eos-penalty", opts.eos_penalty), ("--freeze", opts.freeze)):
        if value is not None:
            _number(value, flag, False)
    if not 0 <= opts.freeze < 1:
        raise Ar2DiffError(f"--freeze {opts.freeze}: use a probability in [0, 1), 0 = off")
    check_rules(opts.threshold or 0.0, opts.factor or 0.0, opts.confidence or CONFIDENCES[0],
                1.0 if opts.eos_penalty is None else opts.eos_penalty, order=opts.order or ORDERS[0])


# Names an earlier release used for DecodeOptions fields (experiment specs may still use them).
OPTION_ALIASES = {"parallel": "candidates", "num_return": "completions"}


def decode_options(fields: dict) -> DecodeOptions:
    """DecodeOptions from a mapping, accepting the older field names."""
    known = set(DecodeOptions.__dataclass_fields__)
    renamed = {OPTION_ALIASES.get(k, k): v for k, v in fields.items()}
    unknown = sorted(set(renamed) - known)
    if unknown:
        raise Ar2DiffError(f"unknown decoding option {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return DecodeOptions(**renamed)



def check_rules(threshold: float, factor: float, confidence: str, eos_penalty: float,
                where: str = "--", order: str = ORDERS[0]) -> None:
    """Refuse confidence-rule settings that mean nothing (``where``: the option prefix)."""
    if not 0 <= threshold < 1:
        raise Ar2DiffError(f"{where}threshold {threshold}: use a probability in [0, 1), 0 = off")
    if factor < 0:
        raise Ar2DiffError(f"{where}factor {factor}: use a positive number (e.g. 1), 0 = off")
    if threshold and factor:
        raise Ar2DiffError(f"{where}threshold and {where}factor: choose one rule")
    if confidence not in CONFIDENCES:
        raise Ar2DiffError(f"{where}confidence {confidence!r}: choose one of {', '.join(CONFIDENCES)}")
    if not eos_penalty > 0:
        raise Ar2DiffError(f"{where}eos-penalty {eos_penalty}: use a positive number, 1 = off")
    if order not in ORDERS:
        raise Ar2DiffError(f"{where}order {order!r}: choose one of {', '.join(ORDERS)}")
