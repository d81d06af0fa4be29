"""lm-eval's own ``hf`` model and the ``ar2diff`` model (AR mode) on the same weights and task:
per-request log-likelihoods and their largest difference.

    python studies/lm_eval_tasks.py --out runs/lm_eval_tasks
    python studies/lm_eval_agreement.py ~/.cache/ar2diff/smollm2-135m/hf \\
        --include-path runs/lm_eval_tasks --task books_next --limit 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lm_eval
from lm_eval.tasks import TaskManager

import ar2diff.evaluation.lm_eval_model  # noqa: F401  (registers "ar2diff")
from ar2diff.atomic import write_json_atomic


def scores(model: str, args: dict, task: str, limit: int, tasks: TaskManager) -> list[float]:
    res = lm_eval.simple_evaluate(model=model, model_args=args, tasks=[task], limit=limit,
                                  device="cpu", batch_size=8, log_samples=True,
                                  task_manager=tasks)
    return [float(r[0]) for s in sorted(res["samples"][task], key=lambda s: s["doc_id"])
            for r in s["filtered_resps"]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="a Hugging Face model folder (both models load it)")
    p.add_argument("--include-path", required=True)
    p.add_argument("--task", default="books_next")
    p.add_argument("--limit", type=int, default=4)
    p.add_argument("--out", default="docs/results/lm_eval/agreement_smollm2.json")
    args = p.parse_args()
    tasks = TaskManager(include_path=args.include_path, include_defaults=False)
    ours = scores("ar2diff", {"pretrained": args.folder, "mode": "ar"}, args.task, args.limit, tasks)
    theirs = scores("hf", {"pretrained": args.folder, "dtype": "float32"}, args.task, args.limit,
                    tasks)
    diff = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))
    write_json_atomic(Path(args.out), {"task": args.task, "limit": args.limit,
                                       "model": args.folder, "ar2diff": ours,
                                       "hf": theirs, "max_abs_difference": diff})
    print(f"{len(ours)} log-likelihoods, largest difference {diff:.2e}")


if __name__ == "__main__":
    main()
