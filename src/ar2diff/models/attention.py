"""Attention layouts as 4-D additive masks that every Hugging Face decoder accepts.

A sequence is described by the *role* of each position: ``PAD`` (not attended), ``INPUT``
(the conditioning prefix) or ``TARGET`` (the tokens the model predicts). The layouts are:

* ``causal``: every position sees the positions at or before it (an ordinary LM).
* ``prefix``: input positions see each other bidirectionally; target positions see every input
  position and the targets at or before them (prefix LM, AR decoding of the target).
* ``diffusion``: input positions see each other bidirectionally; target positions see every
  input position and every target position (SUNDAE denoising).
* ``diffusion-causal-input``: as ``diffusion``, but input positions see only the inputs at or
  before them, as in the AR model an AR2Diff run starts from (its input representations stay
  the ones it was trained to produce).

Block diffusion (BD3-LM) is the ``diffusion`` layout cut into blocks of the target:
:func:`block_diffusion_keys` lets a noisy block see the input, itself (both ways) and the clean
blocks before it, and a clean block the input and the clean blocks up to itself, so the keys and
values of finished blocks can be cached exactly.

In no layout does an input position see a target position, so input outputs never depend on
targets. The masks are layout-agnostic: inputs may be left- or right-padded and the target may
start at a different column in every row.
"""

from __future__ import annotations

from typing import Literal

import torch

PAD, INPUT, TARGET = 0, 1, 2
Layout = Literal["causal", "prefix", "diffusion", "diffusion-causal-input"]
LAYOUTS: tuple[str, ...] = ("causal", "prefix", "diffusion", "diffusion-causal-input")


def allowed_keys(
    query_roles: torch.Tensor,
    key_roles: torch.Tensor,
    layout: str,
    query_pos: torch.Tensor | None = None,
    key_pos: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Boolean ``[B, Q, K]``: may query ``q`` attend to key ``k`` under ``layout``.

    ``query_pos`` / ``key_pos`` are the column indices of queries and keys in the full
    sequence (default ``arange``); they order positions for the causal parts. ``window``
    (a sliding-window model's) keeps only keys fewer than ``window`` columns away, on either side.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown attention layout {layout!r}; choose one of {LAYOUTS}")
    batch, q_n = query_roles.shape
    k_n = key_roles.shape[1]
    if query_pos is None:
        query_pos = torch.arange(k_n - q_n, k_n, device=query_roles.device)
    if key_pos is None:
        key_pos = torch.arange(k_n, device=key_roles.device)
    q_at = query_pos.expand(batch, q_n)[:, :, None]
    k_at = key_pos.expand(batch, k_n)[:, None, :]
    q_role = query_roles[:, :, None]
    k_role = key_roles[:, None, :]
    key_valid = k_role != PAD
    if layout == "causal":
        ok = k_at <= q_at
    elif layout == "prefix":
        ok = torch.where(q_role == INPUT, k_role == INPUT, (k_role == INPUT) | (k_at <= q_at))
    elif layout == "diffusion":
        ok = torch.where(q_role == INPUT, k_role == INPUT, key_valid)
    else:
        ok = torch.where(q_role == INPUT, (k_role == INPUT) & (k_at <= q_at), key_valid)
    ok = ok & key_valid
    if window is not None:
        ok = ok & ((q_at - k_at).abs() < window)
    # A padding query attends to itself only, so that no row is empty.
    self_key = k_at == q_at
    return torch.where(q_role == PAD, self_key, ok)


def block_diffusion_keys(roles: torch.Tensor, blocks: torch.Tensor, clean: torch.Tensor,
                         input_attention: str = "prefix") -> torch.Tensor:
    """Boolean ``[B, S, S]`` for a sequence holding the input, a noisy copy of the target and
    a clean copy (BD3-LM's training layout).

    ``blocks`` ``[B, S]`` is the block index of each target position (either copy), ``clean``
    ``[B, S]`` whether it belongs to the clean copy. Noisy block b sees the input, noisy block b
    and clean blocks < b; clean block b sees the input and clean blocks <= b; the input sees the
    input (causally when ``input_attention`` is ``causal``).
    """
    n = roles.shape[1]
    at = torch.arange(n, device=roles.device)
    q_role, k_role = roles[:, :, None], roles[:, None, :]
    qb, kb = blocks[:, :, None], blocks[:, None, :]
    k_clean = clean[:, None, :]
    k_in, k_tgt = k_role == INPUT, k_role == TARGET
    in_ok = k_in & (at[None, None, :] <= at[None, :, None]) if input_attention == "causal" else k_in
    noisy_ok = k_in | (k_tgt & ~k_clean & (kb == qb)) | (k_tgt & k_clean & (kb < qb))
    clean_ok = k_in | (k_tgt & k_clean & (kb <= qb))
    ok = torch.where(q_role == INPUT, in_ok, torch.where(clean[:, :, None], clean_ok, noisy_ok))
    ok = ok & (k_role != PAD)
    return torch.where(q_role == PAD, at[None, None, :] == at[None, :, None], ok)


def annealed_keys(roles: torch.Tensor, fraction: float, gen: torch.Generator,
                  layout: str = "diffusion", window: int | None = None) -> torch.Tensor:
    """Between AR and ``layout``: each future target→target link is open with ``fraction``.

    Attention-mask annealing (as in DiffuLLaMA) moves an AR model to bidirectional attention
    gradually: at 0 this is the ``prefix`` mask (``causal`` for ``diffusion-causal-input``),
    at 1 the ``layout`` mask.
    """
    prefix = allowed_keys(roles, roles, "prefix" if layout == "diffusion" else "causal",
                          window=window)
    full = allowed_keys(roles, roles, layout, window=window)
    opened = (torch.rand(full.shape, generator=gen) < fraction).to(full.device)
    return prefix | (full & opened)


def diffusion_layout(input_attention: str) -> str:
    """The diffusion layout for an input attention of ``prefix`` (bidirectional) or ``causal``."""
    return "diffusion" if input_attention == "prefix" else "diffusion-causal-input"


def position_ids(roles: torch.Tensor) -> torch.Tensor:
    """Positions counted over non-padding tokens (so left padding does not shift them)."""
    return (torch.cumsum(roles != PAD, dim=1) - 1).clamp(min=0)
