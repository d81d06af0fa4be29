"""Reveal order and end-token penalty of masked / block diffusion, chosen on held-out questions.

Diffusion answers to SQuAD often end too early ("201" for "2015"): the end token is the most
confident guess at a short answer's last positions, so a confidence-ordered sampler reveals it
before the tokens it should follow. Two decoding knobs act on this: ``eos_penalty`` (divide the
end token's probability) and ``order`` (``left-to-right``: reveal the leftmost masked position
first, so an end token is chosen after the text it ends).

For each model, every (order, penalty) pair answers a tuning set: the first ``--per-article``
questions of SQuAD dev articles 2 to 41 (the test questions, the first ``--limit`` of the dev
file, all come from article 1). The pair with the best tuning F1 then answers the test
questions, beside the model's default decoding. Writes one JSON file.

    python studies/decode_order.py --model block=runs/.../ft-block4-qa/model \
        --out studies/results/smollm2_decode_order.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ar2diff.atomic import write_json_atomic
from ar2diff.decoding import DecodeOptions
from ar2diff.evaluation.run import evaluate_model
from ar2diff.generation import TextGenerator
from ar2diff.paths import shared_data_dir


def tuning_set(per_article: int, first: int = 1, articles: int = 40) -> dict:
    """SQuAD v1.1 JSON of the first ``per_article`` questions of dev articles ``first`` to
    ``first + articles - 1`` (0-based)."""
    root = shared_data_dir()
    if root is None:
        raise SystemExit("no shared data folder: the tuning set is read from squad/dev-v1.1.json")
    dev = json.loads((root / "squad" / "dev-v1.1.json").read_text(encoding="utf-8"))
    out = []
    for article in dev["data"][first:first + articles]:
        taken, paras = 0, []
        for para in article["paragraphs"]:
            qas = para["qas"][:per_article - taken]
            taken += len(qas)
            paras.append({"context": para["context"], "qas": qas})
            if taken >= per_article:
                break
        out.append({"title": article["title"], "paragraphs": paras})
    return {"version": "1.1", "data": out}


def score(gen: TextGenerator, opts: DecodeOptions, data: str | None, limit: int | None) -> dict:
    """F1, EM and seconds per answer of one decoding."""
    res = evaluate_model(gen, "squad", opts, data=data, limit=limit, progress=False)
    n = res["num_examples"]
    return {"f1": res["metrics"]["f1"], "exact_match": res["metrics"]["exact_match"],
            "num_examples": n, "seconds_per_answer": res["seconds"] / n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True,
                   help="NAME=DIR of a masked or block diffusion model fine-tuned on SQuAD")
    p.add_argument("--orders", nargs="+", default=["confidence", "left-to-right"])
    p.add_argument("--penalties", nargs="+", type=float, default=[1.0, 4.0, 16.0, 64.0])
    p.add_argument("--block-length", type=int, help="masked models: reveal blocks of this many "
                   "positions (default: the model's)")
    p.add_argument("--per-article", type=int, default=5)
    p.add_argument("--limit", type=int, default=200, help="test questions (first of dev)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", default="studies/results/decode_order.json")
    args = p.parse_args()
    out = Path(args.out)
    report = {"task": "squad", "test_limit": args.limit, "dtype": args.dtype,
              "tuning": {"articles": "2-41 of dev", "per_article": args.per_article},
              "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tune = Path(tmp) / "squad_tune.json"
        tune.write_text(json.dumps(tuning_set(args.per_article)), encoding="utf-8")
        for spec in args.model:
            name, _, path = spec.partition("=")
            gen = TextGenerator.load(path, args.dtype)
            steps = gen.meta.target_length  # one step per answer position
            entry = report["models"][name] = {"path": path, "steps": steps,
                                              "block_length": args.block_length, "tuning": []}
            for order in args.orders:
                for penalty in args.penalties:
                    opts = DecodeOptions(mode="diffusion", steps=steps, candidates=1,
                                         order=order, eos_penalty=penalty,
                                         block_length=args.block_length)
                    row = {"order": order, "eos_penalty": penalty,
                           **score(gen, opts, str(tune), None)}
                    entry["tuning"].append(row)
                    print(name, "tune", json.dumps(row), flush=True)
                    write_json_atomic(out, report)
            best = max(entry["tuning"], key=lambda r: r["f1"])
            for label, order, penalty in (("default", "confidence", 1.0),
                                          ("chosen", best["order"], best["eos_penalty"])):
                opts = DecodeOptions(mode="diffusion", steps=steps, candidates=1, order=order,
                                     eos_penalty=penalty, block_length=args.block_length)
                entry[label] = {"order": order, "eos_penalty": penalty,
                                **score(gen, opts, None, args.limit)}
                print(name, label, json.dumps(entry[label]), flush=True)
                write_json_atomic(out, report)


if __name__ == "__main__":
    main()
