"""The experiment runner: a two-cell grid runs, is reused on a second run, and reports."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from conftest import needs_data

from ar2diff.experiments.runner import run_experiment

FT = ["data.source=toy", "data.toy_task=copy", "tokenizer.kind=toy", "model.size=nano",
      "data.target_length=12", "train.batch_size=8", "train.progress=false",
      "train.eval_every=0", "optim.lr=3e-3", "optim.warmup_steps=2"]


@needs_data
def test_grid_runs_resumes_and_reports(tmp_path):
    spec = {
        "name": "unit",
        "models": {"ar": {"overrides": [*FT, "objective.kind=ar", "train.steps=3"]},
                   "ar2diff": {"from": "ar", "overrides": [*FT, "objective.kind=diffusion",
                                                           "train.steps=2"]}},
        "evaluations": {
            "ar": {"model": "ar", "task": "squad", "limit": 3, "metric": "f1",
                   "table": "Table 2", "row": "AR", "col": "F1", "paper": 68.11,
                   "decode": {"mode": "ar", "max_new_tokens": 4}},
            "diff": {"model": "ar2diff", "task": "squad", "limit": 3, "metric": "f1",
                     "table": "Table 2", "row": "AR2Diff", "col": "F1",
                     "decode": {"mode": "diffusion", "max_new_tokens": 4, "steps": 2}},
        },
        "findings": {"Table 2": [{"claim": "AR beats AR2Diff", "better": "AR / F1",
                                  "worse": "AR2Diff / F1"}]},
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    run_experiment(path, out, report_only=True)  # builds nothing, reports nothing run
    assert not (out / "models").exists() and not (out / "results").exists()
    assert "| AR | not run / 68.11 |" in (out / "REPORT.md").read_text()
    assert "Not run yet: ar, diff." in (out / "REPORT.md").read_text()
    first = run_experiment(path, out)
    report = (out / "REPORT.md").read_text()
    assert "| AR |" in report and "68.11" in report and "AR beats AR2Diff" in report
    assert (out / "table_2.png").is_file()
    saved = json.loads((out / "results.json").read_text())
    cells = {c["row"]: c for c in saved["tables"]["Table 2"]}
    for row, name in (("AR", "ar"), ("AR2Diff", "diff")):
        stored = json.loads((out / "results" / f"{name}.json").read_text())
        assert cells[row]["value"] == stored["metrics"]["f1"]
    start = time.perf_counter()
    second = run_experiment(path, out)
    assert time.perf_counter() - start < 10  # nothing is retrained or re-evaluated
    assert second["tables"] == first["tables"]

    # a changed cell is redone, with what depends on it; the other cells are reused
    def mtime(rel: str) -> int:
        return (out / rel).stat().st_mtime_ns

    before = {rel: mtime(rel) for rel in ("models/ar/model/model.safetensors",
                                          "results/ar.json", "results/diff.json")}
    spec["models"]["ar2diff"]["overrides"][-1] = "train.steps=3"
    path.write_text(yaml.safe_dump(spec))
    partial = run_experiment(path, out, report_only=True)  # the changed cell is not stored
    assert [c["value"] is None for c in partial["tables"]["Table 2"]] == [False, True]
    assert "Not run yet: diff." in (out / "REPORT.md").read_text()
    run_experiment(path, out)
    assert mtime("models/ar/model/model.safetensors") == before["models/ar/model/model.safetensors"]
    assert mtime("results/ar.json") == before["results/ar.json"]
    assert mtime("results/diff.json") != before["results/diff.json"]
    assert len(json.loads((out / "models" / "ar2diff" / "history.json").read_text())) == 3


@pytest.mark.parametrize("scale", ["tiny", "base"])
def test_shipped_grids_are_valid(scale):
    from ar2diff.config import load_config
    from ar2diff.data.tasks import task_names
    from ar2diff.experiments.runner import load_experiment
    from ar2diff.recipes import preset

    spec = load_experiment(Path(__file__).parents[1] / "configs" / "experiments" / f"{scale}.yaml")
    for name, model in spec["models"].items():
        extra = ["model.pretrained=placeholder"] if "from" in model else []
        common = spec["common"] if model.get("common", True) else []
        preset_path = preset(model["preset"]) if "preset" in model else None
        load_config(preset_path, [*common, *model["overrides"], *extra])  # raises if invalid
        assert model.get("from", name) in spec["models"] or model["from"] == "smollm2-135m"
    tables = {e["table"] for e in spec["evaluations"].values()}
    assert tables == {"Table 1", "Table 2", "Table 3"}
    for entry in spec["evaluations"].values():
        assert entry["model"] in spec["models"] and entry["task"] in task_names()
    for table, findings in spec["findings"].items():
        cells = {(e["row"], e["col"]) for e in spec["evaluations"].values() if e["table"] == table}
        for f in findings:
            for ref in (f["better"], f["worse"]):
                assert tuple(s.strip() for s in ref.split("/")) in cells, ref


@needs_data
def test_the_same_evaluation_in_two_tables_runs_once(tmp_path, monkeypatch):
    import ar2diff.evaluation.run as evaluate

    calls = []
    real = evaluate.evaluate_task
    monkeypatch.setattr(evaluate, "evaluate_task", lambda *a, **k: calls.append(1) or real(*a, **k))
    cell = {"model": "ar", "task": "squad", "limit": 2, "metric": "f1",
            "decode": {"mode": "ar", "max_new_tokens": 3}}
    spec = {"name": "dedup",
            "models": {"ar": {"overrides": [*FT, "objective.kind=ar", "train.steps=2"]}},
            "evaluations": {"a": {**cell, "table": "Table 2", "row": "AR", "col": "F1"},
                            "b": {**cell, "table": "Table 3", "row": "T=10", "col": "F1",
                                  "paper": 1.0}}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    summary = run_experiment(path, tmp_path / "out")
    assert len(calls) == 1
    values = [c["value"] for t in summary["tables"].values() for c in t]
    assert len(values) == 2 and values[0] == values[1]


def test_a_cell_that_would_switch_the_noise_silently_is_refused(tmp_path, monkeypatch):
    from conftest import save_tiny_model_folder

    import ar2diff.experiments.runner as runner
    from ar2diff.errors import Ar2DiffError

    folder = save_tiny_model_folder(tmp_path / "masked")  # trained with mask noise
    spec = {"name": "unit",
            "models": {"ft": {"from": str(folder),
                              "overrides": [*FT, "objective.kind=diffusion", "train.steps=1"]}},
            "evaluations": {"e": {"model": "ft", "task": "squad", "limit": 1, "metric": "f1"}}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(Ar2DiffError, match="mask noise.*objective.noise=uniform from its preset"):
        run_experiment(path, tmp_path / "out")

    def trained(config, resume):
        raise RuntimeError(f"trained with {config.objective.noise}")

    monkeypatch.setattr(runner, "run_training", trained)
    spec["models"]["ft"]["overrides"].append("objective.noise=uniform")  # said explicitly: allowed
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(RuntimeError, match="trained with uniform"):
        run_experiment(path, tmp_path / "out2")


def test_the_smollm2_grid_is_valid():
    from ar2diff.config import load_config
    from ar2diff.experiments.runner import load_experiment
    from ar2diff.recipes import preset

    spec = load_experiment(Path(__file__).parents[1] / "configs" / "experiments" / "smollm2.yaml")
    for model in spec["models"].values():
        extra = ["model.pretrained=placeholder"] if "from" in model else []
        config = load_config(preset(model["preset"]), [*model["overrides"], *extra])
        if config.objective.kind == "diffusion" and model["from"] != "smollm2-135m":
            assert any(o.startswith("objective.noise=") for o in model["overrides"])
    cells = {(e["row"], e["col"]) for e in spec["evaluations"].values()}
    for findings in spec["findings"].values():
        for f in findings:
            for ref in (f["better"], f["worse"]):
                assert tuple(s.strip() for s in ref.split("/")) in cells, ref


def test_a_model_starts_from_a_kept_checkpoint_of_another(tmp_path, monkeypatch):
    import ar2diff.experiments.runner as runner
    from ar2diff.errors import Ar2DiffError

    spec = {"name": "curve",
            "models": {"base": {"overrides": [*FT, "objective.kind=ar", "train.steps=2",
                                              "train.save_every=1", "train.keep_last=5"]},
                       "ft1": {"from": "base", "from_step": 1,
                               "overrides": [*FT, "objective.kind=ar", "train.steps=1"]},
                       "ft9": {"from": "base", "from_step": 9,
                               "overrides": [*FT, "objective.kind=ar", "train.steps=1"]}},
            "evaluations": {}}
    exp = runner.Experiment(spec, tmp_path / "out", tmp_path / "grid.yaml")
    started = []
    real = runner.run_training

    def train(config, resume):
        if "ft" in str(config.train.out_dir):
            started.append(config.model.pretrained)
            raise RuntimeError("stop")
        return real(config, resume=resume)

    monkeypatch.setattr(runner, "run_training", train)
    with pytest.raises(RuntimeError, match="stop"):
        exp.model_dir("ft1")
    base = tmp_path / "out" / "models" / "base"
    assert started == [str(base / "checkpoints" / "step-00000001")]
    assert (base / "model" / "ar2diff.json").is_file()
    with pytest.raises(Ar2DiffError, match="base kept no checkpoint at step 9"):
        exp.model_dir("ft9")
    assert exp.fingerprint("ft1") != exp.fingerprint("ft9")


def test_an_evaluation_may_score_a_kept_checkpoint(tmp_path, monkeypatch):
    import ar2diff.experiments.runner as runner
    from ar2diff.errors import Ar2DiffError

    cell = {"model": "base", "task": "squad", "limit": 2, "decode": {"mode": "ar"}}
    spec = {"name": "ft-curve",
            "models": {"base": {"overrides": [*FT, "objective.kind=ar", "train.steps=2",
                                              "train.save_every=1", "train.keep_last=5"]}},
            "evaluations": {"at1": {**cell, "step": 1}, "final": cell,
                            "at9": {**cell, "step": 9}}}
    exp = runner.Experiment(spec, tmp_path / "out", tmp_path / "grid.yaml")
    scored = []

    def fake_evaluate(model, task, opts, **kw):
        scored.append(str(model))
        return {"metrics": {"f1": 1.0}, "setup": {}}

    monkeypatch.setattr(runner, "evaluate_model", fake_evaluate)
    exp.evaluate("at1", spec["evaluations"]["at1"])
    exp.evaluate("final", spec["evaluations"]["final"])
    base = tmp_path / "out" / "models" / "base"
    assert scored == [str(base / "checkpoints" / "step-00000001"), str(base / "model")]
    assert exp.stored_result("at1", spec["evaluations"]["at1"])[2] != \
        exp.stored_result("final", spec["evaluations"]["final"])[2]
    with pytest.raises(Ar2DiffError, match="evaluation at9: base kept no checkpoint at step 9"):
        exp.evaluate("at9", spec["evaluations"]["at9"])
