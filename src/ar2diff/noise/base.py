"""The noise-process interface: one object per process, chosen once from the model's metadata.

A process says how training corrupts targets and scores the model on them, and how sampling
starts and moves its canvas of target tokens: the initial canvas, a schedule of steps, the update
that turns one step's drawn tokens into the next canvas, and when an input is finished.
A new process is one new module defining a subclass; :func:`ar2diff.noise.noise_class` finds it
by its ``name``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ar2diff.data.batching import Batch
from ar2diff.errors import Ar2DiffError
from ar2diff.models.backbone import Backbone
from ar2diff.models.meta import ModelMeta

REGISTRY: dict[str, type[NoiseProcess]] = {}


class NoiseProcess(ABC):
    """A discrete corruption process with its training loss and its sampling moves."""

    name: ClassVar[str]
    banned_ids: tuple[int, ...] = ()  # tokens the sampler never draws

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
    def from_meta(cls, meta: ModelMeta, vocab_size: int, unroll: int = 1) -> NoiseProcess:
        """The process for a model with this metadata (``vocab_size``: its tokenizer's size)."""

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

    def schedule(self, steps: int, length: int, block_length: int) -> list[Any]:
        """One entry per denoising step, passed back to :meth:`update`."""
        return [None] * steps

    @abstractmethod
    def update(self, canvas: torch.Tensor, drawn: torch.Tensor, drawn_logp: torch.Tensor,
               logp: torch.Tensor, step: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The next canvas and the log-probabilities of its tokens, from the tokens ``drawn`` at
        every position this step (``[rows, L]``, log-probabilities ``drawn_logp``); rows are
        independent of each other."""

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
