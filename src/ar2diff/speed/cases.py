"""One benchmark case, run in its own process by :mod:`ar2diff.speed.bench` (prints one JSON line)."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time

import torch

from ar2diff.data.batching import Example, collate
from ar2diff.decoding import DEFAULT_CANDIDATES, DEFAULT_STEPS
from ar2diff.devices import resolve_device, synchronize
from ar2diff.losses.ar import ar_loss
from ar2diff.models.backbone import Backbone
from ar2diff.models.presets import build_model
from ar2diff.noise.uniform import UniformNoise
from ar2diff.rng import example_generator
from ar2diff.sampling.autoregressive import ARSampling, ar_generate
from ar2diff.sampling.diffusion import DiffusionSampling, diffusion_generate

SMOL_VOCAB = 49152


def load(model: str, dtype: torch.dtype, device: torch.device):
    """``smollm2-135m`` (or any spec) or ``tiny`` (a random Llama of the ``small`` size)."""
    if model == "tiny":
        torch.manual_seed(0)
        m = build_model("llama", "small", SMOL_VOCAB, {"pad": 0, "bos": 1, "eos": 2})
        return m.to(device=device, dtype=dtype).eval()
    from ar2diff.models.hub import load_pretrained

    return load_pretrained(model, dtype, device=device)[0].eval()


def prompt_ids(n: int) -> list[int]:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(100, SMOL_VOCAB, (n,), generator=gen).tolist()


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def digest(tokens: list[int]) -> str:
    return hashlib.sha256(json.dumps(tokens).encode()).hexdigest()[:16]


def decode_case(case: dict) -> dict:
    """Time one decoding method at one output length (after a short warm-up)."""
    device = resolve_device(case.get("device", "cpu"))
    model = load(case["model"], getattr(torch, case["dtype"]), device)
    bb, ids, length = Backbone(model), prompt_ids(case["prompt_tokens"]), case["length"]
    run = _decoder(case["method"], model, bb, ids, device)
    with torch.inference_mode():
        run(8)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        tokens = run(length)
        synchronize(device)
        seconds = time.perf_counter() - start
    return {**case, "device": str(device), "device_name": device_name(device),
            "seconds": seconds, "tokens_per_s": length / seconds, "params": params(model),
            "tokens_digest": digest(tokens), "generated": len(tokens), **_gpu_memory(device)}


def _decoder(method: str, model, bb: Backbone, ids: list[int], device: torch.device):
    """``run(n_tokens) -> tokens`` for one method."""
    if method == "hf_generate":
        def run(n_tokens: int) -> list[int]:
            out = model.generate(torch.tensor([ids], device=device), max_new_tokens=n_tokens,
                                 min_new_tokens=n_tokens, do_sample=False, pad_token_id=0)
            return out[0, len(ids):].tolist()
    elif method == "ar_greedy":
        def run(n_tokens: int) -> list[int]:
            return ar_generate(bb, [ids], ARSampling(max_new_tokens=n_tokens), -1, 0)[0][0]
    elif method == "forward_floor":  # what diffusion T = 10 must at least do: 10 forwards
        def run(n_tokens: int) -> list[int]:
            seq = torch.tensor([ids + [100] * n_tokens], device=device)
            for _ in range(DEFAULT_STEPS):
                out = model(input_ids=seq).logits[0, len(ids):].argmax(-1)
            return out.tolist()
    else:
        n = 1 if method == "diffusion_n1" else DEFAULT_CANDIDATES

        def run(n_tokens: int) -> list[int]:
            cfg = DiffusionSampling(steps=DEFAULT_STEPS, candidates=n, target_length=n_tokens)
            return diffusion_generate(bb, [ids], cfg, UniformNoise(SMOL_VOCAB), -1, -2)[0].tokens
    return run


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()


def _gpu_memory(device: torch.device) -> dict:
    if device.type != "cuda":
        return {}
    return {"peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20}


def _batches(case: dict) -> list:
    gen = torch.Generator().manual_seed(1)
    seq, b = case["seq_len"], case["batch"]
    ids = torch.randint(100, SMOL_VOCAB, (b, seq), generator=gen).tolist()
    if case["method"] == "ar2diff_diffusion_l12":
        return [Example(tuple(r[: seq // 2]), tuple(r[seq // 2:])) for r in ids]
    return [Example((1,), tuple(r[1:])) for r in ids]


def train_case(case: dict) -> dict:
    """Time a few optimizer steps of one training method (the first one warms up)."""
    device = resolve_device(case.get("device", "cpu"))
    model = load(case["model"], torch.float32, device).train()
    bb = Backbone(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    examples = _batches(case)
    full = torch.tensor([list(e.input_ids + e.target_ids) for e in examples], device=device)
    passes = 2 if case["method"] == "ar2diff_diffusion_l12" else 1
    micro = case.get("micro") or len(examples)  # ar2diff: gradient accumulation over micro batches
    n_tokens = sum(len(e.target_ids) for e in examples)
    times, losses = [], []
    for step in range(case["steps"] + 1):
        start = time.perf_counter()
        loss = torch.zeros((), device=device)
        for lo in range(0, len(examples), micro):
            part = examples[lo:lo + micro]
            with torch.autocast(device.type, dtype=torch.bfloat16):
                if case["method"] == "hf_eager_ar":
                    part_loss = model(input_ids=full, labels=full).loss
                elif case["method"] == "ar2diff_ar":
                    part_loss = ar_loss(bb, collate(part, 0), "causal")[0] / n_tokens
                else:
                    gens = [example_generator(0, step, lo + i) for i in range(len(part))]
                    part_loss = UniformNoise(SMOL_VOCAB, unroll=2).loss(
                        bb, collate(part, 0), gens, shift=False, layout="diffusion")[0]
                    part_loss = part_loss / n_tokens
            part_loss.backward()
            loss = loss + part_loss.detach()
        opt.step()
        opt.zero_grad(set_to_none=True)
        synchronize(device)
        if step:  # the first step warms up
            times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
    tokens = case["batch"] * case["seq_len"]
    per_step = sum(times) / len(times)
    return {**case, "device": str(device), "device_name": device_name(device),
            "seconds_per_step": per_step, "tokens_per_s": tokens / per_step, **_gpu_memory(device),
            "flops_per_step": 6 * params(model) * tokens * passes, "params": params(model),
            "losses": losses}


def main() -> None:
    case = json.loads(sys.argv[1])
    torch.set_grad_enabled(case["kind"] == "train")
    result = decode_case(case) if case["kind"] == "decode" else train_case(case)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
