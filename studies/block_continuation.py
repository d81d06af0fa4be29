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

from quality_latency import ar_nll, counter_for, model_forward_only

from ar2diff.atomic import write_json_atomic
from ar2diff.decoding import DecodeOptions
from ar2diff.generation import TextGenerator

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
    counter = counter_for(gen)  # counts the target passes, the lean ones included
    rows = []
    start = time.perf_counter()
    ar = [o[0] for o in scorer.generate(PROMPTS, DecodeOptions(mode="ar", max_new_tokens=args.tokens,
                                                               chat=False))]
    rows.append(summary("AR greedy (scorer)", ar, len(PROMPTS) * args.tokens,
                        time.perf_counter() - start, scorer, None))
    for name, fields in SETTINGS:
        opts = DecodeOptions(mode="diffusion", steps=args.tokens, max_new_tokens=args.tokens,
                             candidates=1, eos_stop=False, chat=False, **fields)
        counter.reset()
        start = time.perf_counter()
        texts = [o[0] for o in gen.generate(PROMPTS, opts)]
        rows.append(summary(name, texts, len(PROMPTS) * args.tokens, time.perf_counter() - start,
                            scorer, counter.passes))
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
    scores = [x for x in (ar_nll(scorer, p, t) for p, t in zip(PROMPTS, texts, strict=True))
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
