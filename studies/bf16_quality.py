"""Does bf16 cost quality? SmolLM2-135M in fp32 vs bf16 weights on this CPU.

Measures held-out books loss (AR causal LM, and diffusion for an adapted model if given) and
greedy-decoding agreement on a few prompts. Prints and writes JSON.

    python studies/bf16_quality.py --out studies/results/bf16_quality.json [--adapted runs/adapt/model]
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from ar2diff.atomic import write_json_atomic
from ar2diff.config import load_config
from ar2diff.decoding import DecodeOptions
from ar2diff.generation import TextGenerator
from ar2diff.models.meta import ModelMeta
from ar2diff.training.assemble import build_source
from ar2diff.training.loop import Trainer

PROMPTS = ["What is the capital of France?", "Name three colors.", "Why is the sky blue?",
           "Write a Python function that reverses a string.", "Who wrote Hamlet?"]


def heldout_loss(gen: TextGenerator, overrides: list[str], n: int) -> float:
    cfg = load_config(None, ["data.source=corpus", "data.code_fraction=0", "data.segment_length=128",
                             f"train.eval_examples={n}", "train.micro_batch_size=4", *overrides])
    model = copy.deepcopy(gen.backbone.model)
    trainer = Trainer(cfg, model, gen.tokenizer, gen.meta, build_source(cfg, gen.tokenizer))
    return trainer.eval_loss()


def own_objective(meta: ModelMeta) -> list[str]:
    """Config overrides that score a diffusion model with the objective it was adapted with."""
    causal_input = meta.layout == "diffusion-causal-input"
    return ["objective.kind=diffusion", f"objective.shift={str(meta.shift).lower()}",
            f"objective.noise={meta.noise or 'uniform'}",
            f"objective.input_attention={'causal' if causal_input else 'prefix'}"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--adapted", help="an adapted (diffusion) model folder to check as well")
    p.add_argument("--eval", type=int, default=32)
    p.add_argument("--out", default="studies/results/bf16_quality.json")
    args = p.parse_args()
    hf_logging.disable_progress_bar()
    result = {"model": args.model}
    outs = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        gen = TextGenerator.load(args.model, dtype)
        ids = [gen.encode_prompt(q, chat=True) for q in PROMPTS]
        outs[name] = gen.generate_ids(ids, DecodeOptions(mode="ar", max_new_tokens=32))
        result[f"ar_loss_{name}"] = heldout_loss(gen, ["objective.kind=ar",
                                                       "objective.format=causal"], args.eval)
        if args.adapted:
            diff = TextGenerator.load(args.adapted, dtype)
            result[f"diffusion_loss_{name}"] = heldout_loss(diff, own_objective(diff.meta), args.eval)
        print(name, {k: v for k, v in result.items() if name in k}, flush=True)
    same = [a[0] == b[0] for a, b in zip(outs["fp32"], outs["bf16"], strict=True)]
    tokens_same = [sum(x == y for x, y in zip(a[0], b[0], strict=False)) / max(len(a[0]), 1)
                   for a, b in zip(outs["fp32"], outs["bf16"], strict=True)]
    result.update(identical_greedy_outputs=sum(same), prompts=len(PROMPTS),
                  mean_token_agreement=sum(tokens_same) / len(tokens_same))
    write_json_atomic(Path(args.out), result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
