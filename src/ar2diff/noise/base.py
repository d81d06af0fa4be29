"""The noise-process interface: one object per process, chosen once from the model's metadata.

A process says how training corrupts targets and scores the model on them, and how sampling
starts and moves its canvas of target tokens: the initial canvas, a schedule of blocks (spans of
target positions, each with a step budget), the update that turns one step's drawn tokens into
the next canvas under a :class:`StepRule`, and when an input or a block is finished.
A new process is one new module defining a subclass; :func:`ar2diff.noise.noise_class` finds it
by its ``name``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ar2diff.data.batching import Batch
from ar2diff.errors import Ar2DiffError
from ar2diff.models.backbone import Backbone
from ar2diff.models.meta import ModelMeta

REGISTRY: dict[str, type[NoiseProcess]] = {}

Block = tuple[int, int, int]
"""A span ``[lo, hi)`` of target positions and its step budget."""


@dataclass(frozen=True)
class StepRule:
    """How many positions a step may settle, besides the schedule (masked noise).

    ``threshold`` > 0: settle every position whose confidence reaches it (at least one per step),
    so a block takes as many steps as it needs, not its budget; ``factor`` > 0: Fast-dLLM's
    factor rule, the largest n with (n + 1)(1 - c_n) < factor for the n-th highest confidence
    c_n. Confidences arrive as logarithms (of the drawn token's probability, of the top-two
    margin, or of exp(-entropy)). ``end_ids``: tokens that end a sample; once one is settled,
    the positions after it are filled with ``fill_id`` and need no more steps. ``in_order``:
    settle the leftmost masked positions (with a threshold or factor: the leftmost, then each
    next one while the rule holds) instead of the most confident.
    """

    threshold: float = 0.0
    factor: float = 0.0
    end_ids: tuple[int, ...] = ()
    fill_id: int = 0
    in_order: bool = False

    @property
    def dynamic(self) -> bool:
        """Whether the number of steps depends on the model's confidence."""
        return self.threshold > 0 or self.factor > 0


class NoiseProcess(ABC):
    """A discrete corruption process with its training loss and its sampling moves."""

    name: ClassVar[str]
    banned_ids: tuple[int, ...] = ()  # tokens the sampler never draws
    follows_rules: ClassVar[bool] = False  # whether update() applies a StepRule

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        REGISTRY[cls.name] = cls

    # ---- set-up --------------------------------------------------------------------------

    @classmethod
    def prepare(cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                meta: ModelMeta) -> ModelMeta:
        """Ready a model for training with this process (e.g. add a token); updated metadata."""
        return meta

    @classmethod
    @abstractmethod
    def from_meta(cls, meta: ModelMeta, vocab_size: int, unroll: int = 1,
                  unroll_input: str = "argmax",
                  mask_rates: tuple[float, float] = (1e-3, 1.0)) -> NoiseProcess:
        """The process for a model with this metadata (``vocab_size``: its tokenizer's size;
        ``unroll`` / ``unroll_input`` / ``mask_rates``: the training objective's, where the
        process uses them)."""

    # ---- training ------------------------------------------------------------------------

    @abstractmethod
    def loss(self, backbone: Backbone, batch: Batch, generators: list[torch.Generator],
             shift: bool, layout: str,
             anneal: tuple[float, torch.Generator] | None = None) -> tuple[torch.Tensor, int]:
        """Corrupt ``batch``'s targets (one generator per row) and return the summed loss and
        the number of target tokens."""

    # ---- sampling ------------------------------------------------------------------------

    @abstractmethod
    def initial_canvas(self, uniforms: torch.Tensor) -> torch.Tensor:
        """The target tokens sampling starts from, one per position of ``uniforms`` (keyed
        draws in [0, 1) of that shape, on the model's device)."""

    def schedule(self, steps: int, length: int, block_length: int) -> list[Block]:
        """The blocks denoised one after the other, each with its step budget (default: the
        whole target, ``steps`` steps)."""
        return [(0, length, steps)]

    @abstractmethod
    def update(self, canvas: torch.Tensor, drawn: torch.Tensor, drawn_logp: torch.Tensor,
               confidence: torch.Tensor, logp: torch.Tensor, block: Block,
               rule: StepRule) -> tuple[torch.Tensor, torch.Tensor]:
        """The next canvas and the log-probabilities of its tokens, from the tokens ``drawn`` at
        every position this step (``[rows, L]``, log-probabilities ``drawn_logp``, log-confidences
        ``confidence``), in ``block`` = ``(lo, hi, steps left)``; rows are independent."""

    def settled(self, canvas: torch.Tensor, lo: int, hi: int) -> torch.Tensor | None:
        """Whether positions ``[lo, hi)`` of every row need no further step (a bool tensor), or
        None when only the schedule says so."""
        return None

    def finished(self, before: torch.Tensor, after: torch.Tensor,
                 early_stop: bool) -> torch.Tensor | None:
        """For one input's canvases ``[N, L]`` before and after a step: whether it needs no
        further step (a bool tensor on the device), or None when it cannot finish before the
        schedule ends."""
        return None

    # ---- likelihood ----------------------------------------------------------------------

    def elbo_terms(self, backbone: Backbone, batch: Batch, generators: list[torch.Generator],
                   shift: bool, layout: str) -> torch.Tensor:
        """One Monte-Carlo draw per row ``[B]`` of a lower bound on log p(target | input) in nats
        (one generator per row); its expectation is the bound."""
        raise Ar2DiffError(f"{self.name} noise has no tractable bound on the log-likelihood; "
                           "score a model trained with mask noise, or use mode=ar")


def end_seen(x: torch.Tensor, end_ids: tuple[int, ...]) -> torch.Tensor:
    """``[n, L]``: whether an end token stands at or before each position."""
    ends = torch.isin(x, torch.tensor(end_ids, device=x.device))
    return ends.cummax(1).values
