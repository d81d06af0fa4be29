"""Write the experiment grids (``tiny.yaml``, ``base.yaml``) from one description of the paper.

    python configs/experiments/make_grid.py        # rewrites both YAML files

The grid is the same at every scale; a scale sets model sizes, step counts, tasks and limits.
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).parent

SCALES = {
    "tiny": {
        "sizes": ("nano", "tiny"), "table1_size": "tiny", "pretrain_steps": 300,
        "adapt_steps": (50, 150), "finetune_steps": 250, "segment": 64, "batch": 16,
        "lr": "2e-3", "ft_lr": "1e-3",
        "tasks": {"mt": ("multi30k", "chrf", "Multi30k chrF", 200, "test")},
        "extra_evals": {"mt": [("wmt14-en-fr", "chrf", "newstest2014 chrF", 200, "test", "nt14")]},
        "train_task": {"mt": "wmt14-en-fr"},
        "table3_tasks": ("mt",), "timing": {"model": "tiny", "lengths": [64, 128, 256, 512]},
        "common": ["tokenizer.kind=bpe", "tokenizer.vocab_size=4096", "train.seed=0"],
        # QA and code: models this small score 0 there, so those cells start from the real
        # pretrained SmolLM2-135M (AR, AR2Diff_0, AR2Diff_N) on subsets of the test sets.
        "pretrained": {
            "model": "smollm2-135m", "label": "SmolLM2-135M", "adapt_steps": 30,
            "finetune_steps": 20, "dtype": "bfloat16",
            "tasks": {"qa": ("squad", "f1", "SQuAD F1", 40, "test", 192, 16),
                      "code": ("mbpp", "pass@1", "MBPP pass@1", 20, "test", 160, 96)},
        },
    },
    "base": {
        "sizes": ("base", "large"), "table1_size": "base", "pretrain_steps": 100_000,
        "adapt_steps": (10_000, 100_000), "finetune_steps": 20_000, "segment": 1024,
        "batch": 128, "lr": "1e-3", "ft_lr": "1e-4",
        "tasks": {"mt": ("wmt14-en-fr", "bleu", "WMT14 En-Fr BLEU", None, "test"),
                  "qa": ("squad", "f1", "SQuAD F1", None, "test"),
                  "code": ("mbpp", "pass@80", "MBPP pass@80", None, "test")},
        "table3_tasks": ("qa", "code"),
        "timing": {"model": "smollm2-135m", "lengths": [256, 512, 1024, 2048, 4096]},
        "common": ["tokenizer.kind=bpe", "tokenizer.vocab_size=32000", "train.seed=0",
                   "train.bf16=true", "train.micro_batch_size=16"],
    },
}

PAPER = {  # the paper's numbers (Base / Large), per task key
    "t1": {("llama", "prefix"): {"mt": 29.8, "qa": 77.4, "code": 12.2},
           ("t5", "prefix"): {"mt": 27.6, "qa": 75.8, "code": 0.0}},
    "ar": {"mt": (33.27, 34.92), "qa": (68.11, 78.43), "code": (5.5, 15.5)},
    "diff": {"mt": (29.83, 29.36), "qa": (77.41, 80.56), "code": (12.2, 12.2)},
    "n2": {"mt": (29.92, 32.20), "qa": (71.87, 80.71), "code": (7.7, 10.0)},
    "t3": {"T=5": {"code": 5.5}, "T=10": {"code": 12.2}, "T=20": {"code": 16.7},
           "N=4": {"code": 11.1}, "N=8": {"code": 12.2}, "N=16": {"code": 13.3}},
}


T3_DEFAULTS = {"steps": 10, "parallel": 8}


def sweep(**setting: int) -> dict:
    """A Table 3 row's decoding; the defaults are left out, so that the default row is the same
    evaluation as its Table 2 cell and runs once."""
    return {k: v for k, v in setting.items() if v != T3_DEFAULTS[k]}


def grid(scale: str) -> dict:
    s = SCALES[scale]
    pre_common = ["data.source=corpus", f"data.segment_length={s['segment']}",
                  f"train.batch_size={s['batch']}", f"optim.lr={s['lr']}",
                  "optim.warmup_steps=20", "train.eval_every=0", "train.save_every=100",
                  "train.progress=false"]
    models: dict = {}
    evals: dict = {}

    def pre(name, arch, size, kind, fmt, steps):
        models[name] = {"overrides": [*pre_common, f"model.arch={arch}", f"model.size={size}",
                                      f"objective.kind={kind}", f"objective.format={fmt}",
                                      f"train.steps={steps}"]}

    def ft(name, frm, kind, task):
        models[name] = {"from": frm, "overrides": [
            "data.source=task", f"data.task={task}", "objective.format=task",
            "data.input_length=48" if scale == "tiny" else "data.input_length=512",
            "data.target_length=32" if scale == "tiny" else "data.target_length=256",
            f"train.batch_size={s['batch']}", f"optim.lr={s['ft_lr']}", "optim.warmup_steps=10",
            "train.eval_every=0", "train.save_every=0", "train.progress=false",
            f"train.steps={s['finetune_steps']}",
            "sample.max_new_tokens=32" if scale == "tiny" else "sample.max_new_tokens=256",
            f"objective.kind={kind}", "objective.attention=prefix"]}

    def ev(name, model, key, table, row, mode, paper=None, decode=None):
        extra = s.get("extra_evals", {}).get(key, [])
        for task, metric, col, limit, split, sx in extra:  # the paper's own test set
            ev1(f"{name}-{sx}", model, (task, metric, col, limit, split), table, row, mode,
                paper, decode)
        ev1(name, model, s["tasks"][key], table, row, mode, None if extra else paper, decode)

    def ev1(name, model, task_spec, table, row, mode, paper=None, decode=None, dtype=None):
        task, metric, col, limit, split = task_spec[:5]
        entry = {"model": model, "task": task, "split": split, "limit": limit, "metric": metric,
                 "table": table, "row": row, "col": col, "decode": {"mode": mode, **(decode or {})}}
        if dtype:
            entry["dtype"] = dtype
        if limit is None:
            del entry["limit"]
        if metric == "pass@1":
            entry["k"] = [1]
        elif metric.startswith("pass@"):
            entry["k"] = [1, 10, 80]
            entry["decode"] = {**entry["decode"], "num_return": 80,
                               **({"strategy": "sample", "temperature": 0.8} if mode == "ar" else {})}
        if paper is not None:
            entry["paper"] = paper
        evals[name] = entry

    def suffix(key):
        return "" if key == "mt" and scale == "tiny" else f"-{key}"

    for key in s["tasks"]:
        task = s.get("train_task", {}).get(key, s["tasks"][key][0])
        sx = suffix(key)
        for arch, archname in (("llama", "decoder-only"), ("t5", "encoder-decoder")):
            for fmt, fmtname in (("prefix", "prefix LM"), ("span", "span corruption")):
                p = f"pre-{arch}-{fmt}"
                pre(p, arch, s["table1_size"], "diffusion", fmt, s["pretrain_steps"])
                ft(f"ft-{arch}-{fmt}{sx}", p, "diffusion", task)
                ev(f"t1-{arch}-{fmt}{sx}", f"ft-{arch}-{fmt}{sx}", key, "Table 1",
                   f"{archname}, {fmtname}", "diffusion",
                   PAPER["t1"].get((arch, fmt), {}).get(key))
        for i, size in enumerate(s["sizes"]):
            pre(f"ar-{size}", "llama", size, "ar", "causal", s["pretrain_steps"])
            diff_pre = "pre-llama-prefix" if size == s["table1_size"] else f"pre-diff-{size}"
            diff_ft = f"ft-llama-prefix{sx}" if size == s["table1_size"] else f"ft-diff-{size}{sx}"
            if size != s["table1_size"]:
                pre(diff_pre, "llama", size, "diffusion", "prefix", s["pretrain_steps"])
                ft(diff_ft, diff_pre, "diffusion", task)
            ft(f"ft-ar-{size}{sx}", f"ar-{size}", "ar", task)
            ft(f"ft-ar2diff0-{size}{sx}", f"ar-{size}", "diffusion", task)
            for n in s["adapt_steps"]:
                models[f"adapt{n}-{size}"] = {"from": f"ar-{size}", "overrides": [
                    *pre_common, "objective.kind=diffusion", "objective.format=prefix",
                    f"train.steps={n}", f"optim.lr={s['ft_lr']}"]}
                ft(f"ft-ar2diff{n}-{size}{sx}", f"adapt{n}-{size}", "diffusion", task)
            ev(f"t2-ar-{size}{sx}", f"ft-ar-{size}{sx}", key, "Table 2", f"AR, {size}", "ar",
               PAPER["ar"][key][i], {"max_new_tokens": 32 if scale == "tiny" else 256})
            ev(f"t2-diff-{size}{sx}", diff_ft, key, "Table 2", f"diffusion from scratch, {size}",
               "diffusion", PAPER["diff"][key][i])
            ev(f"t2-ar2diff0-{size}{sx}", f"ft-ar2diff0-{size}{sx}", key, "Table 2",
               f"AR2Diff_0, {size}", "diffusion")
            for j, n in enumerate(s["adapt_steps"]):
                ev(f"t2-ar2diff{n}-{size}{sx}", f"ft-ar2diff{n}-{size}{sx}", key, "Table 2",
                   f"AR2Diff_{n}, {size}", "diffusion", PAPER["n2"][key][i] if j == 1 else None)
    for key in s["table3_tasks"]:
        sx = suffix(key)
        for t in (5, 10, 20):
            ev(f"t3-T{t}{sx}", f"ft-llama-prefix{sx}", key, "Table 3", f"T={t}", "diffusion",
               PAPER["t3"][f"T={t}"].get(key), sweep(steps=t))
        for n in (4, 8, 16):
            ev(f"t3-N{n}{sx}", f"ft-llama-prefix{sx}", key, "Table 3", f"N={n}", "diffusion",
               PAPER["t3"][f"N={n}"].get(key), sweep(parallel=n))
    if "pretrained" in s:
        pretrained_cells(s["pretrained"], models, ev1)
    return {"name": scale, "common": s["common"], "models": models, "evaluations": evals,
            "timing": {**s["timing"], "prompt_tokens": 64, "dtype": "float32"}}


SUNDAE = ["objective.noise=uniform", "objective.unroll=2"]  # the paper's noise, not adapt's default
MASKED = ["objective.noise=mask", "objective.unroll=1"]  # absorbing-mask noise (not in the paper)


def pretrained_cells(p: dict, models: dict, ev_any) -> None:
    """Table 2 and 3 cells for QA and code that start from a real pretrained AR model."""
    label, n = p["label"], p["adapt_steps"]

    def ev1(*args):
        ev_any(*args, dtype=p["dtype"])

    flags = ["train.eval_every=0", "train.save_every=0", "train.progress=false", "train.seed=0"]
    models[f"adapt{n}-pt"] = {"from": p["model"], "preset": "adapt", "common": False,
                              "overrides": [*flags, f"train.steps={n}", *SUNDAE]}
    models[f"adapt{n}-pt-mask"] = {"from": p["model"], "preset": "adapt", "common": False,
                                   "overrides": [*flags, f"train.steps={n}", *MASKED]}
    for key, (task, metric, col, limit, split, in_len, tg_len) in p["tasks"].items():
        spec = (task, metric, col, limit, split)
        for name, frm, kind, noise in (
                ("ar", p["model"], "ar", []), ("ar2diff0", p["model"], "diffusion", []),
                (f"ar2diff{n}", f"adapt{n}-pt", "diffusion", []),
                ("ar2diff0m", p["model"], "diffusion", MASKED),
                (f"ar2diff{n}m", f"adapt{n}-pt-mask", "diffusion", MASKED)):
            models[f"ft-{name}-pt-{key}"] = {"from": frm, "preset": "finetune", "common": False,
                                             "overrides": [
                *flags, f"data.task={task}", f"data.input_length={in_len}",
                f"data.target_length={tg_len}", f"objective.kind={kind}",
                f"train.steps={p['finetune_steps']}", "optim.warmup_steps=5",
                f"sample.max_new_tokens={tg_len}", *noise]}
        ev1(f"t2-ar-pt-{key}", f"ft-ar-pt-{key}", spec, "Table 2", f"AR, {label}", "ar",
            PAPER["ar"][key][0], {"max_new_tokens": tg_len})
        ev1(f"t2-ar2diff0-pt-{key}", f"ft-ar2diff0-pt-{key}", spec, "Table 2",
            f"AR2Diff_0, {label}", "diffusion")
        ev1(f"t2-ar2diff{n}-pt-{key}", f"ft-ar2diff{n}-pt-{key}", spec, "Table 2",
            f"AR2Diff_{n}, {label}", "diffusion", PAPER["n2"][key][0])
        masked_decode = {"steps": tg_len, "block_length": 4}  # one step per token, as measured
        for m in ("0", str(n)):
            ev1(f"t2-ar2diff{m}m-pt-{key}", f"ft-ar2diff{m}m-pt-{key}", spec, "Table 2",
                f"AR2Diff_{m}, masked noise, {label}", "diffusion", None, masked_decode)
        for t in (5, 10, 20):
            ev1(f"t3-T{t}-pt-{key}", f"ft-ar2diff{n}-pt-{key}", spec, "Table 3", f"T={t}",
                "diffusion", PAPER["t3"][f"T={t}"].get(key), sweep(steps=t))
        for k in (4, 8, 16):
            ev1(f"t3-N{k}-pt-{key}", f"ft-ar2diff{n}-pt-{key}", spec, "Table 3", f"N={k}",
                "diffusion", PAPER["t3"][f"N={k}"].get(key), sweep(parallel=k))


def main() -> None:
    for scale in SCALES:
        path = HERE / f"{scale}.yaml"
        old = yaml.safe_load(path.read_text()) if path.is_file() else {}
        spec = grid(scale)
        for key in ("description", "findings", "notes"):  # prose is edited in the YAML itself
            if key in old:
                spec[key] = old[key]
        header = f"# The paper's experiment grid at {scale} scale; written by make_grid.py.\n"
        path.write_text(header + yaml.safe_dump(spec, sort_keys=False, width=100))


if __name__ == "__main__":
    main()
