"""How well a model reads its input under causal vs bidirectional input attention.

For held-out books segments cut in half (the first half the input, the second the target),
the loss of the first target token and of all target tokens given the clean target (AR
teacher forcing through the prefix-LM layout, shift on), with the input attended causally
(``causal`` layout) or bidirectionally (``prefix`` layout). An AR model reads its input well only
causally; the gap shows what a bidirectional-input adaptation must re-learn. Writes JSON.

    python studies/input_attention.py smollm2-135m runs/adapt/model --out studies/results/input_attention.json
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from ar2diff.atomic import write_json_atomic
from ar2diff.data.batching import Example, collate
from ar2diff.generation import TextGenerator
from ar2diff.paths import shared_data_dir


def segments(tokenizer, n: int, length: int, seed: int = 0) -> list[Example]:
    """``n`` segments from the middle of the last book (held out from adaptation batches)."""
    books = sorted((shared_data_dir() / "corpus" / "books").glob("*.txt"))
    text = books[-1].read_text(encoding="utf-8", errors="ignore")
    ids = tokenizer.encode(text[len(text) // 2:len(text) // 2 + 40_000], add_special_tokens=False)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = rng.randrange(0, len(ids) - length)
        seg = ids[s:s + length]
        out.append(Example(tuple(seg[:length // 2]), tuple(seg[length // 2:])))
    return out


@torch.no_grad()
def losses(gen: TextGenerator, examples: list[Example]) -> dict[str, dict[str, float]]:
    batch = collate(examples, gen.ids["pad"])
    out = {}
    for name, layout in (("causal input", "causal"), ("bidirectional input", "prefix")):
        logits = gen.backbone.target_logits(batch, batch.target_ids, layout, True).float()
        nll = -logits.log_softmax(-1).gather(-1, batch.target_ids[..., None])[..., 0]
        out[name] = {"first_token": float(nll[:, 0].mean()), "all_tokens": float(nll.mean())}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--segments", type=int, default=16)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--out", default="studies/results/input_attention.json")
    args = p.parse_args()
    rows = []
    for spec in args.models:
        gen = TextGenerator.load(spec)
        row = {"model": spec, **losses(gen, segments(gen.tokenizer, args.segments, args.length))}
        rows.append(row)
        print(json.dumps(row))
    write_json_atomic(Path(args.out), {"segments": args.segments, "length": args.length,
                                       "rows": rows})


if __name__ == "__main__":
    main()
