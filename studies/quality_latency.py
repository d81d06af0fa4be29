"""Quality against latency: AR greedy and masked-diffusion decodings of the same model size.

For a diffusion model fine-tuned on SQuAD (and, optionally, its AR counterpart and a block
diffusion model), each decoding method answers the same dev questions; every point records
SQuAD F1, seconds per answer, and tokens per forward pass over the target (answer tokens /
target passes; AR is 1 by definition). A continuation set (``studies/diffusion_samples.py``'s
prompts, or the openings of held-out book paragraphs with ``--continuation-data``) is decoded by
the same methods — with the adapted model before fine-tuning when ``--adapted`` is given, and
by the scorer itself for the AR point — and scored by the original AR model's NLL per token.
A SUNDAE model (``--sundae``) adds its own points: T steps, early stop, and freezing.
Writes one JSON file (``*quality*.json``, rewritten after every point) and one PNG curve.

    python studies/quality_latency.py --diffusion runs/squad-diff/model --ar runs/squad-ar/model \
        --block runs/squad-block/model --limit 200 --out studies/results/quality_latency.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from ar2diff import generation
from ar2diff.atomic import write_json_atomic
from ar2diff.decoding import DecodeOptions
from ar2diff.evaluation.run import evaluate_model
from ar2diff.generation import TextGenerator

CONTINUATION_PROMPTS = [
    "It was a dark and stormy night, and the old house",
    "She opened the door and",
    "Once upon a time, there was a",
    "The old man looked at the sea and",
    "He picked up the letter and",
]

# (name, mode, decoding fields); steps = 0 stands for "one step per target position"
METHODS = [
    ("masked, 1 token/step", {"block_length": 0}),
    ("masked, blocks of 4", {"block_length": 4}),
    ("masked, blocks of 4, no end-token stop", {"block_length": 4, "eos_stop": False}),
    ("threshold 0.9, blocks of 4", {"block_length": 4, "threshold": 0.9}),
    ("threshold 0.7, blocks of 4", {"block_length": 4, "threshold": 0.7}),
    ("threshold 0.5, blocks of 4", {"block_length": 4, "threshold": 0.5}),
]

# block-diffusion decodings (``--block``): by confidence, and left to right with confident runs
BLOCK_METHODS = [
    ("block diffusion", {}),
    ("block diffusion, threshold 0.9", {"threshold": 0.9}),
    ("block diffusion, left to right", {"order": "left-to-right"}),
    ("block, left to right, threshold 0.9", {"order": "left-to-right", "threshold": 0.9}),
    ("block, left to right, threshold 0.7", {"order": "left-to-right", "threshold": 0.7}),
    ("block, left to right, threshold 0.5", {"order": "left-to-right", "threshold": 0.5}),
]

# SUNDAE decodings (``--sundae``): T = target length, then the ways to end before T
SUNDAE_METHODS = [
    ("SUNDAE, freeze 0.9", {"freeze": 0.9}),
    ("SUNDAE, freeze 0.5", {"freeze": 0.5}),
    ("SUNDAE, T steps", {}),
    ("SUNDAE, early stop", {"early_stop": True}),
    ("SUNDAE, freeze 0.7", {"freeze": 0.7}),
]


_COUNTING: list = [None]  # the counter of the generate_ids call now running


def _count_passes() -> None:
    """Charge each diffusion run's own forward passes (``DiffusionResult.passes``: what it
    needs alone, whether or not it shared passes with other runs) to the running counter."""
    original = generation.diffusion_generate_group

    def counted(*a, **k):
        out = original(*a, **k)
        if _COUNTING[0] is not None:
            _COUNTING[0].passes += sum(r.passes for r in out)
        return out

    generation.diffusion_generate_group = counted


_count_passes()


class Counter:
    """Counts the target forward passes (each run's own) and the answer tokens of a
    generator's diffusion decodes."""

    def __init__(self, gen: TextGenerator):
        self.passes = self.tokens = 0
        generate_ids = gen.generate_ids

        def counted_ids(inputs, opts):
            _COUNTING[0] = self
            try:
                out = generate_ids(inputs, opts)
            finally:
                _COUNTING[0] = None
            self.tokens += sum(len(s) + 1 for row in out for s in row)  # + the end token
            return out

        gen.generate_ids = counted_ids

    def reset(self) -> None:
        self.passes = self.tokens = 0

    def rate(self) -> float:
        """Tokens per target forward pass since the last reset."""
        return self.tokens / max(self.passes, 1)


def counter_for(gen: TextGenerator) -> Counter:
    """The generator's one counter (made on first use)."""
    if not hasattr(gen, "counter"):
        gen.counter = Counter(gen)
    return gen.counter


@torch.no_grad()
def ar_nll(scorer: TextGenerator, prompt: str, text: str) -> float | None:
    """Mean NLL per token of ``text`` after ``prompt`` under the scorer (causal)."""
    tok = scorer.tokenizer
    p_ids, t_ids = tok.encode(prompt, add_special_tokens=False), tok.encode(text, add_special_tokens=False)
    if not t_ids:
        return None
    logits = scorer.backbone.model(input_ids=torch.tensor([p_ids + t_ids])).logits[0].float()
    return float(torch.nn.functional.cross_entropy(logits[len(p_ids) - 1:-1], torch.tensor(t_ids)))


def continuation_prompts(path: str | None, limit: int, words: int = 24) -> list[str]:
    """The first ``words`` words of the first ``limit`` paragraphs of a text file (blank-line
    separated), or the fixed prompts when no file is given."""
    if path is None:
        return CONTINUATION_PROMPTS
    paras = [p.split() for p in Path(path).read_text(encoding="utf-8").split("\n\n") if p.strip()]
    return [" ".join(p[:words]) for p in paras if len(p) > words][:limit]


def point(name: str, gen: TextGenerator, opts: DecodeOptions, args: argparse.Namespace,
          scorer: TextGenerator | None, writer: TextGenerator | None = None,
          ar: bool = False) -> dict:
    """One method: F1 on the questions, seconds per answer, tokens per forward, and the NLL of
    continuations written by ``writer`` (default ``gen``) with the same decoding, with their own
    tokens per forward (AR: 1 by definition)."""
    counter = None if ar else counter_for(gen)
    if counter:
        counter.reset()
    res = evaluate_model(gen, args.task, opts, split="test", limit=args.limit,
                         batch_size=args.batch_size, progress=False)
    n = res["num_examples"]
    row = {"method": name, "f1": res["metrics"].get("f1"), "metrics": res["metrics"],
           "num_examples": n,
           "seconds_per_answer": res["seconds"] / n,
           "tokens_per_forward": 1.0 if counter is None else counter.rate(),
           "decoding": {k: v for k, v in dataclasses.asdict(opts).items() if v is not None}}
    if scorer is not None:
        writer = writer or gen
        wcount = None if ar else counter_for(writer)
        if wcount:
            wcount.reset()
        prompts = args.prompts
        cont = dataclasses.replace(opts, max_new_tokens=args.continuation_tokens, chat=False)
        if opts.mode == "diffusion" and opts.steps is not None:
            cont = dataclasses.replace(cont, steps=args.continuation_tokens)
        start = time.perf_counter()
        texts = [o[0] for o in writer.generate(prompts, cont)]
        nll = [x for x in (ar_nll(scorer, p, t) for p, t in zip(prompts, texts, strict=True))
               if x is not None]
        row.update(continuation_nll=sum(nll) / len(nll) if nll else None,
                   continuation_count=len(nll), continuation_seconds=time.perf_counter() - start,
                   continuation_tokens_per_forward=1.0 if wcount is None else wcount.rate(),
                   continuation_samples=dict(zip(prompts, texts, strict=True)))
    print(json.dumps({k: v for k, v in row.items() if k != "continuation_samples"}), flush=True)
    if getattr(args, "save", None):
        args.save(row)
    return row


def decode_points(gen: TextGenerator, methods: list, args: argparse.Namespace,
                  scorer: TextGenerator | None, writer: TextGenerator | None = None) -> list[dict]:
    """The points of ``methods`` (or those named by ``--methods``) for one diffusion model,
    at T = its target length."""
    rows = []
    for name, fields in methods:
        if args.methods and name not in args.methods:
            continue
        opts = DecodeOptions(mode="diffusion", steps=gen.meta.target_length,
                             candidates=args.candidates, eos_penalty=args.eos_penalty, **fields)
        rows.append(point(name, gen, opts, args, scorer, writer))
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """The task's metric (F1, else the first) against seconds per answer, one labelled point
    per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = "f1" if rows[0].get("f1") is not None else next(iter(rows[0]["metrics"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        y = r["metrics"][metric]
        ax.scatter(r["seconds_per_answer"], y)
        ax.annotate(f"{r['method']} ({r['tokens_per_forward']:.1f} tok/pass)",
                    (r["seconds_per_answer"], y), fontsize=7, xytext=(4, 2),
                    textcoords="offset points")
    ax.set_xlabel("seconds per answer")
    ax.set_ylabel(metric)
    ax.set_title(f"quality against latency ({rows[0]['num_examples']} questions)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def model_forward_only() -> None:
    """Turn the lean target pass off: samplers fall back to the model's own forward."""
    import ar2diff.sampling.block_diffusion as block
    import ar2diff.sampling.diffusion as diffusion

    block.block_cache = diffusion.block_cache = lambda *a, **k: None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--diffusion", help="masked-diffusion model fine-tuned on the task")
    p.add_argument("--sundae", help="SUNDAE-noise model fine-tuned on the task (T steps, early "
                                    "stop and freezing)")
    p.add_argument("--ar", help="AR model of the same size fine-tuned on the task (greedy point)")
    p.add_argument("--block", help="block-diffusion model fine-tuned on the task")
    p.add_argument("--scorer", help="AR model scoring continuations (e.g. smollm2-135m)")
    p.add_argument("--task", default="squad")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--candidates", type=int, default=1, help="diffusion samples per answer (N)")
    p.add_argument("--eos-penalty", type=float,
                   help="end-token penalty of every diffusion point (default: the model's)")
    p.add_argument("--methods", nargs="+", help="only these diffusion methods (names as in "
                                                "METHODS, BLOCK_METHODS, SUNDAE_METHODS); default: all")
    p.add_argument("--adapted", help="the adapted model (before fine-tuning) that writes the "
                                     "diffusion continuations; default: the fine-tuned one")
    p.add_argument("--block-adapted", help="the block-diffusion model before fine-tuning, writer "
                                           "of the block continuations (default: --block)")
    p.add_argument("--continuation-data", help="held-out text whose paragraph openings are the "
                                               "continuation prompts (default: 5 fixed prompts)")
    p.add_argument("--continuation-limit", type=int, default=40)
    p.add_argument("--continuation-tokens", type=int, default=32)
    p.add_argument("--out", default="studies/results/quality_latency.json")
    p.add_argument("--model-forward", action="store_true",
                   help="decode through the model's own forward, without the lean target pass")
    args = p.parse_args()
    if args.model_forward:
        model_forward_only()
    args.prompts = continuation_prompts(args.continuation_data, args.continuation_limit)
    scorer = TextGenerator.load(args.scorer, args.dtype) if args.scorer else None
    out, rows = Path(args.out), []
    header = {"task": args.task, "limit": args.limit, "dtype": args.dtype,
              "eos_penalty": args.eos_penalty,
              "lean_pass": not args.model_forward, "candidates": args.candidates,
              "models": {"diffusion": args.diffusion, "ar": args.ar, "sundae": args.sundae,
                         "block": args.block, "scorer": args.scorer, "adapted": args.adapted,
                         "block_adapted": args.block_adapted},
              "continuation": {"data": args.continuation_data, "prompts": len(args.prompts),
                               "tokens": args.continuation_tokens}}

    def save(row: dict) -> None:  # after every point: a long run keeps what it measured
        rows.append(row)
        write_json_atomic(out, {**header, "points": rows})

    args.save = save
    if args.ar:
        point("AR greedy", TextGenerator.load(args.ar, args.dtype), DecodeOptions(mode="ar"), args,
              scorer, scorer, ar=True)
    if args.diffusion:
        gen = TextGenerator.load(args.diffusion, args.dtype)
        adapted = TextGenerator.load(args.adapted, args.dtype) if args.adapted and scorer else None
        decode_points(gen, METHODS, args, scorer, adapted)
    if args.sundae:
        decode_points(TextGenerator.load(args.sundae, args.dtype), SUNDAE_METHODS, args, scorer)
    if args.block:
        block = TextGenerator.load(args.block, args.dtype)
        block_adapted = (TextGenerator.load(args.block_adapted, args.dtype)
                         if args.block_adapted and scorer else None)
        decode_points(block, BLOCK_METHODS, args, scorer, block_adapted)
    plot(rows, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
