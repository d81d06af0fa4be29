"""Linear layers for one-row inputs: the model's own weights, or a oneDNN-prepacked copy.

On a CPU, bf16 weights reordered once into oneDNN's blocked layout run through the same kernel
as ``F.linear`` with bitwise equal results, and are read about 1.7x faster for one-row inputs
(the AR decoding step). Projections of one input (Q/K/V, gate/up) can share one fused matmul.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class PackedLinear:
    """``x W^T + b`` with the model's weight, or with a oneDNN-prepacked copy of it."""

    __slots__ = ("weight", "bias", "packed")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, pack: bool):
        self.bias = bias
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 1) if pack else None
        self.weight = None if pack else weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


class Projections:
    """Several projections of one input (Q/K/V, gate/up): the model's own linears, or, when the
    weights are prepacked (copied anyway), one fused matmul split afterwards."""

    __slots__ = ("parts", "sizes")

    def __init__(self, linears: Sequence[nn.Linear], pack: bool):
        if not pack:
            self.parts, self.sizes = [PackedLinear(m.weight, m.bias, False) for m in linears], None
            return
        weight = torch.cat([m.weight for m in linears])
        bias = None
        if any(m.bias is not None for m in linears):
            bias = torch.cat([torch.zeros(m.out_features, dtype=weight.dtype, device=weight.device)
                              if m.bias is None else m.bias for m in linears])
        self.parts, self.sizes = [PackedLinear(weight, bias, True)], [m.out_features for m in linears]

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.sizes is None:
            return [lin(x) for lin in self.parts]
        return list(self.parts[0](x).split(self.sizes, dim=-1))


@functools.cache
def packing_works(dtype: torch.dtype) -> bool:
    """oneDNN prepacking is offered and gives the same numbers as ``F.linear``."""
    if dtype != torch.bfloat16 or not torch.backends.mkldnn.is_available():
        return False
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(48, 32, generator=gen).to(dtype)
        x = torch.randn(3, 32, generator=gen).to(dtype)
        return torch.equal(PackedLinear(w, None, True)(x), F.linear(x, w))
    except (AttributeError, RuntimeError):
        return False



def linear(module: nn.Linear, pack: bool) -> PackedLinear:
    """The model's linear ``module``, prepacked when ``pack``."""
    return PackedLinear(module.weight, module.bias, pack)
