"""The masked-diffusion bound on held-out text against adaptation steps, beside the AR model's
exact negative log-likelihood on the same pieces.

Step 0 is the starting model prepared for the run (mask token added, the run's layout and shift)
but not trained; then every checkpoint the adaptation run kept, and its final model.

    ar2diff adapt --steps 60 --out runs/adapt train.save_every=15 train.keep_last=5
    python studies/lm_eval_tasks.py --out runs/lm_eval_tasks
    python studies/elbo_adapt.py runs/adapt --data runs/lm_eval_tasks/books_heldout.txt
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from ar2diff.atomic import write_json_atomic
from ar2diff.config import load_config
from ar2diff.evaluation.perplexity import evaluate_perplexity
from ar2diff.generation import TextGenerator
from ar2diff.training.assemble import model_for_run


def step_zero(run: Path) -> TextGenerator:
    """The run's starting model as the run prepares it, untrained."""
    config = load_config(run / "config.yaml", [])
    model, tokenizer, meta = model_for_run(config)
    return TextGenerator(model, tokenizer, meta.for_run(config))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="the adaptation run's folder (config.yaml, checkpoints/, model/)")
    p.add_argument("--data", required=True, help="held-out text (.txt paragraphs or .jsonl)")
    p.add_argument("--limit", type=int, help="first N documents")
    p.add_argument("--mc-samples", type=int, default=4)
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--out", default="studies/results/elbo_adapt.json")
    args = p.parse_args()
    run = Path(args.run)
    common = {"limit": args.limit, "window": args.window, "context": args.context,
              "device": "cpu", "progress": False}
    config = load_config(run / "config.yaml", [])
    ar = evaluate_perplexity(config.model.pretrained, args.data, mode="ar", **common)
    rows = []
    folders = sorted((run / "checkpoints").glob("step-*"))
    final = run / "model"
    for step, model in [(0, step_zero(run)),
                        *[(int(re.sub(r"\D", "", f.name)), str(f)) for f in folders],
                        *([(config.train.steps, str(final))] if final.is_dir() else [])]:
        if rows and rows[-1]["step"] == step:
            continue  # the last checkpoint is the final model
        res = evaluate_perplexity(model, args.data, mode="diffusion", mc_samples=args.mc_samples,
                                  **common)
        rows.append({"step": step, **res["metrics"]["diffusion"], "seconds": res["seconds"]})
        print(json.dumps(rows[-1]))
    out = {"ar": {"model": config.model.pretrained, **ar["metrics"]["ar"]},
           "tokens": ar["metrics"]["tokens"], "documents": ar["metrics"]["documents"],
           "diffusion_by_step": rows,
           "setup": {**{k: v for k, v in ar["setup"].items() if k not in ("modes", "model")},
                     "mc_samples": args.mc_samples, "run": str(run),
                     "objective": config.to_dict()["objective"]}}
    write_json_atomic(Path(args.out), out)
    print(f"AR nll/token {out['ar']['nll_per_token']:.4f}; written to {args.out}")


if __name__ == "__main__":
    main()
