"""Held-out diffusion loss on books text of an adapted model and of the model it started from.

Both are scored with the adapted model's own objective (noise, shift, input attention) on the same
held-out books segments (code fraction 0). Prints both and writes JSON.

    python studies/books_loss.py runs/adapt/model --out studies/results/books_loss.json
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

import yaml

from ar2diff.atomic import write_json_atomic
from ar2diff.config import RunConfig, load_config
from ar2diff.models.checkpoint import load_meta
from ar2diff.training.assemble import build_source, model_for_run
from ar2diff.training.loop import Trainer


def books_loss(spec: str, config: RunConfig, n: int) -> float:
    """Held-out diffusion loss of model ``spec`` on books text only, under ``config``'s objective.

    The loss is the objective's: SUNDAE's cross-entropy over all target tokens, or the masked
    ELBO; the two are not on one scale (compare samples with ``diffusion_samples.py``).
    """
    cfg = copy.deepcopy(config)
    cfg.model.pretrained = spec
    cfg.data.code_fraction = 0.0
    cfg.train.eval_examples = n
    model, tokenizer, meta = model_for_run(cfg)  # adds the mask token for masked noise
    trainer = Trainer(cfg, model, tokenizer, meta, build_source(cfg, tokenizer))
    return trainer.eval_loss()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="the adapted model folder")
    p.add_argument("--before", help="the starting model (default: the adapted run's)")
    p.add_argument("--eval", type=int, default=32, help="held-out segments")
    p.add_argument("--out", default="studies/results/books_loss.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:  # the run's config, as saved with the model
        path = Path(tmp) / "config.yaml"
        saved = load_meta(Path(args.model)).config
        if saved is None:
            raise SystemExit(f"{args.model}: its ar2diff.json holds no run config (not adapted by ar2diff?)")
        path.write_text(yaml.safe_dump(saved), encoding="utf-8")
        config = load_config(path, [f"train.out_dir={tmp}"])
    before_spec = args.before or config.model.pretrained
    before = books_loss(before_spec, config, args.eval)
    after = books_loss(args.model, config, args.eval)
    o = config.objective
    row = {"model": args.model, "before_model": before_spec, "noise": o.noise, "shift": o.shift,
           "input_attention": o.input_attention, "eval_segments": args.eval,
           "books_loss_before": before, "books_loss_after": after}
    write_json_atomic(Path(args.out), row)
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
