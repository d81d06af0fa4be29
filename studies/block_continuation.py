"""Long continuations by block diffusion: forward passes against tokens, and fluency.

A block-diffusion model (``objective.block_size``) continues each prompt for ``--tokens``
positions, a block at a time, under each decoding setting (one token per step, and confidence
thresholds); every forward pass over the target is counted (the finished block's cache pass
shares the next block's first step). The original AR model (``--scorer``) scores each
continuation's NLL per token and writes its own greedy continuation as the reference; the
share of distinct word 4-grams shows loops, which a low NLL can hide. End
tokens do not stop decoding here (``eos_stop`` off), so every setting decodes all positions;
the text is cut at the first end token for scoring. Writes one JSON file.

    python studies/block_continuation.py runs/adapt-block4/model --tokens 256 \
        --out studies/results/block_continuation.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ar2diff.atomic import write_json_atomic
from ar2diff.decoding import DecodeOptions
from ar2diff.generation import TextGenerator
from ar2diff.sampling.fast_blocks import BlockCache

PROMPTS = [
    "It was a dark and stormy night, and the old house",
    "She opened the door and",
    "Once upon a time, there was a",
    "The old man looked at the sea and",
    "He picked up the letter and",
    "The history of the city begins in",
    "To make bread at home, you need",
    "The first thing I noticed about the village was",
]

SETTINGS = [("one token per step", {}), ("threshold 0.9", {"threshold": 0.9}),
            ("threshold 0.7", {"threshold": 0.7}), ("threshold 0.5", {"threshold": 0.5})]


def count_passes(gen: TextGenerator) -> list[int]:
    """Wrap the backbone's target passes; the returned one-element list counts them."""
    count = [0]
    methods = [(gen.backbone, name) for name in ("hidden_from_prefix", "logits_from_prefix",
                                                 "extend_prefix", "extend_and_hidden")]
    methods += [(BlockCache, "hidden"), (BlockCache, "extend_and_hidden")]  # the lean passes
    for owner, name in methods:
        original = getattr(owner, name)

        def counted(*a, _original=original, **k):
            count[0] += 1
            return _original(*a, **k)

        setattr(owner, name, counted)
    return count


@torch.no_grad()
def nll(scorer: TextGenerator, prompt: str, text: str) -> float | None:
    """The scorer's mean NLL per token of ``text`` after ``prompt`` (None for empty text)."""
    tok = scorer.tokenizer
    p_ids, t_ids = tok.encode(prompt, add_special_tokens=False), tok.encode(text, add_special_tokens=False)
    if not t_ids:
        return None
    logits = scorer.backbone.model(input_ids=torch.tensor([p_ids + t_ids])).logits[0].float()
    return float(torch.nn.functional.cross_entropy(logits[len(p_ids) - 1:-1], torch.tensor(t_ids)))


def model_forward_only() -> None:
    """Turn the lean target pass off: samplers fall back to the model's own forward."""
    import ar2diff.sampling.block_diffusion as block
    import ar2diff.sampling.diffusion as diffusion

    block.block_cache = diffusion.block_cache = lambda *a, **k: None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="block-diffusion model folder")
    p.add_argument("--scorer", default="smollm2-135m")
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", default="studies/results/block_continuation.json")
    p.add_argument("--model-forward", action="store_true",
                   help="decode through the model's own forward, without the lean target pass")
    args = p.parse_args()
    if args.model_forward:
        model_forward_only()
    gen, scorer = TextGenerator.load(args.model, args.dtype), TextGenerator.load(args.scorer, args.dtype)
    if not gen.backbone.block_size:
        raise SystemExit(f"{args.model}: not a block-diffusion model (no objective.block_size)")
    passes = count_passes(gen)
    rows = []
    start = time.perf_counter()
    ar = [o[0] for o in scorer.generate(PROMPTS, DecodeOptions(mode="ar", max_new_tokens=args.tokens,
                                                               chat=False))]
    rows.append(summary("AR greedy (scorer)", ar, len(PROMPTS) * args.tokens,
                        time.perf_counter() - start, scorer, None))
    for name, fields in SETTINGS:
        opts = DecodeOptions(mode="diffusion", steps=args.tokens, max_new_tokens=args.tokens,
                             candidates=1, eos_stop=False, chat=False, **fields)
        passes[0] = 0
        start = time.perf_counter()
        texts = [o[0] for o in gen.generate(PROMPTS, opts)]
        rows.append(summary(name, texts, len(PROMPTS) * args.tokens, time.perf_counter() - start,
                            scorer, passes[0]))
    write_json_atomic(Path(args.out), {"model": args.model, "scorer": args.scorer,
                                       "tokens": args.tokens, "dtype": args.dtype,
                                       "lean_pass": not args.model_forward,
                                       "prompts": PROMPTS, "settings": rows})


def distinct_4grams(text: str) -> float:
    """Distinct word 4-grams over all 4-grams of ``text`` (1 = no repeats; loops score low)."""
    words = text.split()
    grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
    return len(set(grams)) / len(grams) if grams else 1.0


def summary(name: str, texts: list[str], positions: int, seconds: float, scorer: TextGenerator,
            passes: int | None) -> dict:
    """One setting's numbers (``passes`` None: AR, one pass per position)."""
    scores = [x for x in (nll(scorer, p, t) for p, t in zip(PROMPTS, texts, strict=True))
              if x is not None]
    row = {"setting": name, "positions": positions,
           "forward_passes": positions if passes is None else passes,
           "positions_per_pass": 1.0 if passes is None else positions / passes,
           "seconds": seconds, "nll": sum(scores) / len(scores) if scores else None,
           "scored": len(scores),
           "distinct_4grams": sum(map(distinct_4grams, texts)) / len(texts),
           "samples": dict(zip(PROMPTS, texts, strict=True))}
    print(json.dumps({k: v for k, v in row.items() if k != "samples"}), flush=True)
    return row


if __name__ == "__main__":
    main()
