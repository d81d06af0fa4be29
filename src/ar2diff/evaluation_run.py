"""``ar2diff evaluate``: decode a task with a model (or read predictions) and write results."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
from pathlib import Path

from ar2diff.data.tasks import load_task
from ar2diff.errors import Ar2DiffError
from ar2diff.evaluate import evaluate_task, score_predictions, write_results


def git_commit() -> str | None:
    """The commit of the source tree, when it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_evaluation(args: argparse.Namespace) -> dict:
    """Evaluate per the CLI arguments; the results file records the full decoding setup."""
    from ar2diff.cli import decode_options

    examples = load_task(args.task, args.split, args.data, args.limit)
    opts = decode_options(args)
    if args.predictions:
        results = score_predictions(args.task, examples, args.predictions, args.k)
        setup = {"predictions": str(args.predictions)}
    else:
        if not args.model:
            raise Ar2DiffError("evaluate needs --model (or --predictions FILE)")
        from ar2diff.generation import TextGenerator

        gen = TextGenerator.load(args.model)
        mode = opts.mode or gen.meta.get("kind", "ar")
        opts = dataclasses.replace(opts, chat=False if opts.chat is None else opts.chat,
                                   num_return=max(opts.num_return, max(args.k)))
        if opts.num_return > 1 and opts.strategy == "greedy" and mode == "ar":
            opts = dataclasses.replace(opts, strategy="sample",
                                       temperature=opts.temperature or 0.8)
        results = evaluate_task(
            examples, lambda prompts, n: gen.generate(prompts, opts), args.task,
            num_samples=opts.num_return, ks=args.k, batch_size=args.batch_size,
        )
        setup = {"model": str(args.model), "mode": mode, "decoding": dataclasses.asdict(opts)}
        if mode == "diffusion":
            setup["diffusion"] = dataclasses.asdict(gen.diffusion_config(opts))
    results["setup"] = {**setup, "task": args.task, "split": args.split, "limit": args.limit,
                        "data": args.data, "batch_size": args.batch_size, "commit": git_commit()}
    write_results(args.out, results)
    return results
