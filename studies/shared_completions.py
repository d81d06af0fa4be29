"""Several completions of one prompt in shared diffusion passes, against one run at a time.

For pass@k an evaluation asks each prompt for k completions (seeds ``seed`` … ``seed + k -
1``). ``TextGenerator.generate_ids`` now decodes them together, in the same forward passes
(:func:`ar2diff.sampling.diffusion_group.diffusion_generate_group`), instead of one run after
another. For each task prompt this script times both ways on the same model and checks that
every completion's tokens are the same. Writes one JSON file.

    python studies/shared_completions.py runs/ft-block4-code/model --task mbpp --limit 5 \
        --completions 10 --out studies/results/shared_completions.json
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace

import torch

from ar2diff.atomic import write_json_atomic
from ar2diff.data.tasks import load_task
from ar2diff.decoding import DecodeOptions
from ar2diff.generation import TextGenerator
from ar2diff.sampling.block_diffusion import sampler_for


def one_prompt(gen: TextGenerator, ids: list[int], opts: DecodeOptions) -> dict:
    """Both ways for one prompt: seconds, and whether every completion matched."""
    start = time.perf_counter()
    shared = gen.generate_ids([ids], opts)[0]
    shared_s = time.perf_counter() - start
    cfg, sample = gen.diffusion_config(opts), sampler_for(gen.backbone)
    start = time.perf_counter()
    alone = [sample(gen.backbone, [ids], replace(cfg, seed=opts.seed + k), gen.noise,
                    gen.ids["pad"], gen.ids["eos"])[0].tokens for k in range(opts.completions)]
    alone_s = time.perf_counter() - start
    return {"prompt_tokens": len(ids), "seconds_shared": shared_s, "seconds_alone": alone_s,
            "same_tokens": [a == b for a, b in zip(shared, alone, strict=True)],
            "completion_tokens": [len(a) for a in alone]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a diffusion model folder (block or masked)")
    p.add_argument("--task", default="mbpp")
    p.add_argument("--limit", type=int, default=5)
    p.add_argument("--completions", type=int, default=10)
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", default="studies/results/shared_completions.json")
    args = p.parse_args()
    gen = TextGenerator.load(args.model, args.dtype)
    opts = DecodeOptions(mode="diffusion", steps=args.steps, completions=args.completions,
                         candidates=1, temperature=args.temperature,
                         max_new_tokens=args.max_new_tokens)
    rows = []
    for ex in load_task(args.task, "test", None, args.limit):
        row = {"id": ex.id, **one_prompt(gen, gen.encode_prompt(ex.input, None), opts)}
        rows.append(row)
        print(f"{ex.id}: shared {row['seconds_shared']:.1f} s, alone {row['seconds_alone']:.1f} s, "
              f"same tokens {sum(row['same_tokens'])}/{len(row['same_tokens'])}", flush=True)
    shared, alone = (sum(r[k] for r in rows) for k in ("seconds_shared", "seconds_alone"))
    summary = {"problems": len(rows), "completions": args.completions,
               "seconds_shared": shared, "seconds_alone": alone, "speedup": alone / shared,
               "same_tokens": sum(sum(r["same_tokens"]) for r in rows),
               "of": sum(len(r["same_tokens"]) for r in rows)}
    print(summary)
    write_json_atomic(args.out, {
        "model": args.model, "task": args.task, "dtype": args.dtype, "steps": args.steps,
        "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
        "block_size": gen.backbone.block_size, "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(), "summary": summary,
        "problems": rows})


if __name__ == "__main__":
    main()
