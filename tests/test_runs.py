"""Runs that cannot be mixed up: the run folder, its lock, resume checks, logs and printed setup;
data sources that follow from what is given; honest held-out evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ar2diff.config import load_config
from ar2diff.errors import Ar2DiffError
from ar2diff.training.assemble import build_source, run_training
from ar2diff.training.loop import checkpoints

TOY = ["tokenizer.kind=toy", "model.size=nano", "data.target_length=12", "train.progress=false",
       "train.eval_every=0", "optim.warmup_steps=2", "train.batch_size=4"]


def _cfg(out: Path, *extra: str):
    return load_config(None, [*TOY, f"train.out_dir={out}", *extra])


def test_a_folder_holding_a_run_is_refused_and_overwrite_clears_its_checkpoints(tmp_path):
    out = tmp_path / "run"
    run_training(_cfg(out, "train.steps=4", "train.save_every=1", "train.keep_last=4"))
    assert [p.name for p in checkpoints(out)][-1] == "step-00000004"
    with pytest.raises(Ar2DiffError, match="not empty.*--resume.*--overwrite"):
        run_training(_cfg(out, "train.steps=2"))
    result = run_training(_cfg(out, "train.steps=2", "train.save_every=1"), overwrite=True)
    assert [p.name for p in checkpoints(out)] == ["step-00000001", "step-00000002"]
    assert len(result.history) == 2
    with pytest.raises(Ar2DiffError, match="contradict"):
        run_training(_cfg(out, "train.steps=2"), resume=True, overwrite=True)


def test_resume_refuses_a_changed_config_without_touching_the_folder(tmp_path, capsys):
    out = tmp_path / "run"
    run_training(_cfg(out, "train.steps=2", "train.save_every=1"))
    saved = (out / "config.yaml").read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(Ar2DiffError, match=r"optim.lr: 0.001 -> 0.002.*--force"):
        run_training(_cfg(out, "train.steps=2", "optim.lr=2e-3"), resume=True)
    assert (out / "config.yaml").read_bytes() == saved
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps
    # settings that do not change the computation may differ; --force continues anyway
    run_training(_cfg(out, "train.steps=2", "train.progress=true"), resume=True)
    run_training(_cfg(out, "train.steps=3", "optim.lr=2e-3"), resume=True, force=True)
    assert load_config(out / "config.yaml").optim.lr == 2e-3


def test_a_second_run_on_a_locked_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(str(other.pid))
        with pytest.raises(Ar2DiffError, match=f"in use by another run \\(process {other.pid}"):
            run_training(_cfg(out, "train.steps=1"))
    finally:
        other.kill()
        other.wait()
    # the owner is gone: its lock is taken over, and released at the end
    run_training(_cfg(out, "train.steps=1"))
    assert not (out / ".lock").exists()
    assert (out / "model" / "model.safetensors").is_file()


def test_the_run_prints_its_setup_and_logs_metrics_and_a_loss_curve(tmp_path, capsys):
    out = tmp_path / "run"
    run_training(_cfg(out, "train.steps=4", "train.save_every=2", "train.progress=true",
                      "train.eval_every=2", "train.eval_examples=4"))
    printed = capsys.readouterr().out
    assert "1 process(es), device cpu" in printed and "resolved config:" in printed
    assert "data: toy task reverse" in printed and "optim:" in printed
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 for r in rows) and "eval_loss" in rows[1]
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    # resumed after step 2: the log holds each step once
    import shutil

    shutil.rmtree(out / "model")
    shutil.rmtree(out / "checkpoints" / "step-00000004")
    run_training(_cfg(out, "train.steps=4", "train.save_every=2", "train.eval_every=2",
                      "train.eval_examples=4"), resume=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_tensorboard_scalars_match_the_metrics_log(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    run_training(_cfg(out, "train.steps=3", "train.tensorboard=true", "train.eval_every=3",
                      "train.eval_examples=4"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    loss = [(e.step, e.value) for e in events.Scalars("loss")]
    assert loss == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in rows]
    assert [e.step for e in events.Scalars("eval_loss")] == [3]


def test_tensorboard_without_the_package_is_one_clear_line(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(Ar2DiffError, match=r"pip install 'ar2diff\[tensorboard\]'"):
        run_training(_cfg(tmp_path / "run", "train.steps=1", "train.tensorboard=true"))


def test_data_source_follows_from_what_is_given(tmp_path):
    assert load_config(None, []).data.source == "toy"
    assert load_config(None, ["data.corpus=[a.txt]"]).data.source == "corpus"
    cfg = load_config(None, ["data.task_path=mine.jsonl"])
    assert (cfg.data.source, cfg.data.task) == ("task", "jsonl")
    assert load_config(None, ["data.task=squad"]).data.source == "task"
    with pytest.raises(Ar2DiffError, match="data.source=toy but data.task"):
        load_config(None, ["data.source=toy", "data.task_path=mine.jsonl"])
    with pytest.raises(Ar2DiffError, match="data.source=toy but data.corpus"):
        load_config(None, ["data.source=toy", "data.corpus=[a.txt]"])
    with pytest.raises(Ar2DiffError, match="both set"):
        load_config(None, ["data.corpus=[a.txt]", "data.task=squad"])


def _corpus(tmp_path: Path, n: int) -> Path:
    gen = torch.Generator().manual_seed(0)
    path = tmp_path / "digits.txt"
    path.write_text(" ".join(str(int(d)) for d in torch.randint(0, 10, (n,), generator=gen)))
    return path


def test_corpus_size_limits_are_options_and_the_summary_says_what_was_used(tmp_path, capsys,
                                                                          toy_tokenizer):
    text = _corpus(tmp_path, 3000)  # 5999 characters, ~3000 tokens
    cfg = load_config(None, [f"data.corpus=[{text}]", "data.segment_length=16",
                             "data.max_chars=2000"])
    source = build_source(cfg, toy_tokenizer, tmp_path / "cache")
    printed = capsys.readouterr().out
    assert "1 of 1 files, 2,000 characters; cut at data.max_chars=2,000" in printed
    total = sum(len(s.train) + len(s.held_out) for s in source.streams)
    assert 900 < total < 1100  # a digit and a space per token
    whole = build_source(load_config(None, [f"data.corpus=[{text}]", "data.max_chars=0",
                                            "data.segment_length=16"]),
                         toy_tokenizer, tmp_path / "cache")
    assert sum(len(s.train) + len(s.held_out) for s in whole.streams) > 2900
    assert "cut at" not in capsys.readouterr().out
    # too short for the held-out part: the message says so and what to change
    with pytest.raises(Ar2DiffError, match=r"held-out tokens \(data.held_out=0.02.*"
                                           r"lower data.segment_length to under \d+"):
        build_source(load_config(None, [f"data.corpus=[{text}]", "data.segment_length=128"]),
                     toy_tokenizer, tmp_path / "cache")
    source = build_source(load_config(None, [f"data.corpus=[{text}]", "data.segment_length=128",
                                             "data.held_out=0.1"]), toy_tokenizer,
                          tmp_path / "cache")
    assert len(source.streams[0].held_out) > 250


def _task_file(path: Path, n: int) -> Path:
    rows = [{"input": f"copy : {i % 10} {(i // 10) % 10}", "target": f"{i % 10} {(i // 10) % 10}",
             "id": f"ex{i}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_task_evaluation_loss_reads_held_out_examples_only(tmp_path, toy_tokenizer, capsys):
    data = _task_file(tmp_path / "task.jsonl", 50)
    cfg = _cfg(tmp_path / "run", f"data.task_path={data}", "train.eval_every=2",
               "data.held_out=0.1")
    source = build_source(cfg, toy_tokenizer)
    assert "45 training examples; held out for the evaluation loss" in capsys.readouterr().out
    from ar2diff.data.sources import HELD_OUT

    train = {source.example(i) for i in range(200)}
    held = {source.example(HELD_OUT + i) for i in range(5)}
    assert len(train) == 45 and len(held) == 5 and not train & held
    # without evaluation every example trains
    all_train = build_source(_cfg(tmp_path / "r2", f"data.task_path={data}"), toy_tokenizer)
    assert len({all_train.example(i) for i in range(200)}) == 50


def test_the_best_step_is_kept(tmp_path):
    data = _task_file(tmp_path / "task.jsonl", 40)
    out = tmp_path / "run"
    result = run_training(_cfg(out, f"data.task_path={data}", "train.steps=6",
                               "train.eval_every=2", "train.eval_examples=4", "optim.lr=3e-3"))
    evals = {r["step"]: r["eval_loss"] for r in result.history if "eval_loss" in r}
    assert result.best_step == min(evals, key=evals.get)
    best = json.loads((out / "best.json").read_text())
    assert best == {"step": result.best_step, "eval_loss": evals[result.best_step]}
    assert (out / "best" / "model.safetensors").is_file()
    assert os.path.getsize(out / "best" / "model.safetensors") > 0
