"""Noise processes for discrete diffusion, behind one interface (:class:`NoiseProcess`).

``uniform``: SUNDAE's (the paper's); ``mask``: absorbing-mask diffusion. A process is chosen
once, by name from a run config (:func:`noise_class`) or from a model's metadata
(:func:`noise_for`).
"""

from __future__ import annotations

from ar2diff.errors import Ar2DiffError
from ar2diff.models.meta import ModelMeta
from ar2diff.noise import mask, uniform  # noqa: F401  (each module registers its process)
from ar2diff.noise.base import REGISTRY, NoiseProcess


def noise_class(name: str) -> type[NoiseProcess]:
    """The process registered as ``name`` (the ``objective.noise`` config field)."""
    if name not in REGISTRY:
        raise Ar2DiffError(f"objective.noise={name!r}: choose one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def noise_for(meta: ModelMeta, vocab_size: int, unroll: int = 1,
              unroll_input: str = "argmax",
              mask_rates: tuple[float, float] = (1e-3, 1.0)) -> NoiseProcess:
    """The process a diffusion model was trained with (uniform for models that name none)."""
    return noise_class(meta.noise or "uniform").from_meta(meta, vocab_size, unroll, unroll_input,
                                                                mask_rates)
