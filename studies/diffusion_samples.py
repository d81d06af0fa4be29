"""Diffusion samples of an adapted model for simple prompts, scored for fluency.

Each setting decodes the same prompts; every sample is scored by the original AR model
(SmolLM2-135M by default): the mean negative log-likelihood per token of the sample given the
prompt (lower is more fluent; the AR model's own greedy continuation is scored the same way as
a reference), plus the fraction of distinct tokens in the sample (1 = no repeats). Prints the
samples and writes them, with the scores, as JSON.

    python studies/diffusion_samples.py runs/adapt/model --out studies/results/diffusion_samples.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from ar2diff.atomic import write_json_atomic
from ar2diff.decoding import DecodeOptions
from ar2diff.generation import TextGenerator

PROMPTS = [
    "It was a dark and stormy night, and the old house",
    "The capital of France is",
    "She opened the door and",
    "Once upon a time, there was a",
    "The sun rises in the",
    "After dinner, the children went",
    "The old man looked at the sea and",
    "In the morning, we",
    "He picked up the letter and",
    "The city was quiet because",
]


@torch.no_grad()
def ar_nll(scorer: TextGenerator, prompt: str, text: str) -> float | None:
    """Mean NLL per token of ``text`` after ``prompt`` under the scorer in causal mode."""
    tok = scorer.tokenizer
    p_ids = tok.encode(prompt, add_special_tokens=False)
    t_ids = tok.encode(text, add_special_tokens=False)
    if not t_ids:
        return None
    ids = torch.tensor([p_ids + t_ids])
    logits = scorer.backbone.model(input_ids=ids).logits[0, len(p_ids) - 1:-1].float()
    return float(torch.nn.functional.cross_entropy(logits, torch.tensor(t_ids)))


def distinct(tok, text: str) -> float:
    ids = tok.encode(text, add_special_tokens=False)
    return len(set(ids)) / len(ids) if ids else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="the adapted (diffusion) model folder")
    p.add_argument("--scorer", default="smollm2-135m", help="AR model that scores fluency")
    p.add_argument("--lengths", type=int, nargs="+", default=[8, 12])
    p.add_argument("--penalties", type=float, nargs="+", default=[1.0, 3.0])
    p.add_argument("--steps", type=int, default=10, help="diffusion steps T")
    p.add_argument("--blocks", type=int, nargs="+", default=[0],
                   help="block lengths for masked models (0 = one block)")
    p.add_argument("--out", default="studies/results/diffusion_samples.json")
    args = p.parse_args()
    gen = TextGenerator.load(args.model, torch.bfloat16)
    scorer = TextGenerator.load(args.scorer)
    rows = []
    for length in args.lengths:
        ref = [o[0] for o in scorer.generate(PROMPTS, DecodeOptions(mode="ar", chat=False,
                                                                    max_new_tokens=length))]
        settings = [("ar greedy (original model)", ref, 0.0)]
        for pen, block in itertools.product(args.penalties, args.blocks):
            opts = DecodeOptions(mode="diffusion", chat=False, max_new_tokens=length,
                                 steps=args.steps, repetition_penalty=pen, block_length=block)
            start = time.perf_counter()
            texts = [o[0] for o in gen.generate(PROMPTS, opts)]
            name = f"diffusion T={args.steps} N=8 tau=0.2 penalty={pen:g}"
            settings.append((name + (f" block={block}" if block else ""), texts,
                             time.perf_counter() - start))
        for (name, texts, seconds) in settings:
            nll = [ar_nll(scorer, pr, t) for pr, t in itertools.zip_longest(PROMPTS, texts)]
            scored = [x for x in nll if x is not None]
            row = {"setting": name, "length": length, "seconds": round(seconds, 2),
                   "ar_nll_mean": sum(scored) / len(scored) if scored else None,  # all empty
                   "distinct_mean": sum(distinct(gen.tokenizer, t) for t in texts) / len(texts),
                   "samples": dict(zip(PROMPTS, texts, strict=True))}
            rows.append(row)
            nll_text = "n/a" if row["ar_nll_mean"] is None else f"{row['ar_nll_mean']:.2f}"
            print(f"--- {name}, {length} tokens: AR NLL {nll_text}, distinct {row['distinct_mean']:.2f}")
            for prompt, text in zip(PROMPTS, texts, strict=True):
                print(f"    {prompt!r} → {text!r}")
    write_json_atomic(Path(args.out), {"model": args.model, "scorer": args.scorer,
                                       "noise": gen.meta.noise or "uniform", "rows": rows})
    print(json.dumps([{k: v for k, v in r.items() if k != "samples"} for r in rows], indent=1))


if __name__ == "__main__":
    main()
