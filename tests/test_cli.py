"""The command line: help for every command, one-line errors, and an end-to-end toy run."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import torch

from ar2diff.cli import COMMANDS, build_parser, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage: ar2diff" in capsys.readouterr().out


def test_every_option_is_explained():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command_parser in sub.choices.items():
        for action in command_parser._actions:
            assert action.help, f"ar2diff {name} {action.option_strings or action.dest}"


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert main(["train", "train.stepz=3"]) == 2
    assert main(["train", "train.steps=abc"]) == 2
    empty = tmp_path / "empty_model"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    assert main(["generate", "--model", str(empty), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("ar2diff: error:") for line in err)
    assert "nope.yaml" in err[0] and "train.stepz" in err[1] and "train.steps" in err[2]
    assert str(empty) in err[3]


def test_train_then_generate(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "data.source=toy", "data.toy_task=copy", "tokenizer.kind=toy",
                 "model.size=nano", "train.steps=5", "train.batch_size=4", "train.progress=false",
                 "data.target_length=12", f"train.out_dir={out}"]) == 0
    assert (out / "model" / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["generate", "--model", str(out / "model"), "--prompt", "copy : 1 2 3",
                 "--steps", "3", "--samples", "2", "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out.endswith("\n")  # the completion (untrained: any text)
    model = ["generate", "--model", str(out / "model"), "--prompt", "copy : 1 2 3", "--steps", "2",
             "--max-new-tokens", "4", "--mode", "diffusion"]
    assert main([*model, "--candidates", "2", "--completions", "3", "--device", "cpu",
                 "--dtype", "bfloat16"]) == 0
    assert capsys.readouterr().out.count("\n") == 3  # three completions (untrained: maybe empty)
    if not torch.cuda.is_available():
        assert main([*model, "--device", "cuda"]) == 2
        assert "no CUDA device is available" in capsys.readouterr().err
    assert main([*model, "--device", "tpu9"]) == 2
    assert "--device 'tpu9': not a device" in capsys.readouterr().err


def test_models_load_on_the_device_in_the_dtype_asked(tmp_path):
    from ar2diff.generation import TextGenerator

    out = tmp_path / "run"
    assert main(["train", "data.source=toy", "tokenizer.kind=toy", "model.size=nano",
                 "train.steps=1", "train.batch_size=2", "train.progress=false",
                 f"train.out_dir={out}"]) == 0
    gen = TextGenerator.load(str(out / "model"), "bfloat16", "cpu")
    weights = {p.dtype for p in gen.backbone.model.parameters()}
    assert weights == {torch.bfloat16} and gen.backbone.device == torch.device("cpu")
    assert {p.dtype for p in TextGenerator.load(str(out / "model")).backbone.model.parameters()} \
        == {torch.float32}


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "ar2diff.cli", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "adapt" in out.stdout and "evaluate" in out.stdout


def test_toy_demo_trains_samples_and_reports_exact_match(tmp_path, capsys):
    from ar2diff.demo import toy_demo

    em = toy_demo(str(tmp_path), steps=20, n_eval=4)
    out = capsys.readouterr().out
    assert 0.0 <= em <= 1.0 and "exact match on 4 held-out examples" in out
    assert (tmp_path / "toy" / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("mode", ["diffusion", "ar"])
def test_generate_shows_every_step(tmp_path, capsys, mode):
    from conftest import save_tiny_model_folder

    folder = str(save_tiny_model_folder(tmp_path / "m", length=6))
    args = ["generate", "--model", folder, "--prompt", "copy : 1 2", "--mode", mode, "--steps", "3",
            "--device", "cpu"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    assert main([*args, "--show-steps"]) == 0
    lines = capsys.readouterr().out.splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    assert lines[-1] + "\n" == plain  # the same completion, after its steps
    if mode == "diffusion":
        assert [s.split(":")[0] for s in steps] == ["step   1", "step   2", "step   3"]
        assert steps[0].count("░") == 4 and "░" not in steps[-1]  # 6 positions, 2 revealed a step
        assert steps[0].count("[") == 2  # the changed tokens are marked
    else:
        assert 1 <= len(steps) <= 6 and all(s.count("[") == 1 for s in steps)


def test_serve_rejects_bad_limits_in_one_line(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path), "--max-batch", "0"]) == 2
    assert capsys.readouterr().err.strip() == "ar2diff: error: --max-batch 0: use 1 or more"
