"""A request's diffusion runs in shared passes, against one run at a time.

For pass@k an evaluation asks each prompt for k completions (seeds ``seed`` … ``seed + k -
1``), a batch of prompts at a time. ``TextGenerator.generate_ids`` decodes all runs of a request
together, in the same forward passes where that leaves each run's tokens as they are alone
(:func:`ar2diff.sampling.diffusion_group.diffusion_generate_group`; a block-diffusion model's
prompts may differ in length). This script times both ways on the same model, one request per
prompt or all prompts in one (``--together``), and checks that every completion's tokens are
the same. Writes one JSON file.

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


def both_ways(gen: TextGenerator, prompts: list[list[int]], opts: DecodeOptions) -> dict:
    """All runs of ``prompts`` in shared passes, then each run alone: seconds, and whether
    every completion matched."""
    start = time.perf_counter()
    shared = gen.generate_ids(prompts, opts)
    shared_s = time.perf_counter() - start
    cfg, sample = gen.diffusion_config(opts), sampler_for(gen.backbone)
    start = time.perf_counter()
    alone = [[sample(gen.backbone, [ids], replace(cfg, seed=opts.seed + k), gen.noise,
                     gen.ids["pad"], gen.ids["eos"])[0].tokens for k in range(opts.completions)]
             for ids in prompts]
    alone_s = time.perf_counter() - start
    return {"prompt_tokens": [len(x) for x in prompts], "seconds_shared": shared_s,
            "seconds_alone": alone_s,
            "same_tokens": [a == b for s, o in zip(shared, alone, strict=True)
                            for a, b in zip(s, o, strict=True)],
            "completion_tokens": [len(a) for o in alone for a in o]}


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
    p.add_argument("--together", action="store_true",
                   help="all prompts in one request (else one request per prompt)")
    p.add_argument("--out", default="studies/results/shared_completions.json")
    args = p.parse_args()
    gen = TextGenerator.load(args.model, args.dtype)
    opts = DecodeOptions(mode="diffusion", steps=args.steps, completions=args.completions,
                         candidates=1, temperature=args.temperature,
                         max_new_tokens=args.max_new_tokens)
    examples = load_task(args.task, "test", None, args.limit)
    prompts = [gen.encode_prompt(ex.input, None) for ex in examples]
    groups = [prompts] if args.together else [[x] for x in prompts]
    rows = []
    for group in groups:
        rows.append(both_ways(gen, group, opts))
        r = rows[-1]
        print(f"{len(group)} prompt(s): shared {r['seconds_shared']:.1f} s, alone "
              f"{r['seconds_alone']:.1f} s, same tokens {sum(r['same_tokens'])}/"
              f"{len(r['same_tokens'])}", flush=True)
    shared, alone = (sum(r[k] for r in rows) for k in ("seconds_shared", "seconds_alone"))
    summary = {"problems": len(prompts), "completions": args.completions,
               "prompts_together": args.together, "seconds_shared": shared,
               "seconds_alone": alone, "speedup": alone / shared,
               "same_tokens": sum(sum(r["same_tokens"]) for r in rows),
               "of": sum(len(r["same_tokens"]) for r in rows)}
    print(summary)
    write_json_atomic(args.out, {
        "model": args.model, "task": args.task, "dtype": args.dtype, "steps": args.steps,
        "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
        "block_size": gen.backbone.block_size, "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(), "summary": summary,
        "requests": rows})


if __name__ == "__main__":
    main()
