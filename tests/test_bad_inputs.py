"""The bad-input battery: every command, every class of mistake, one clear line each.

Each case runs the command line in-process and must end with a non-zero status, exactly one
line on stderr that names the offending value, and no Python traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ar2diff.cli import main

TOY = ["data.source=toy", "data.toy_task=copy", "tokenizer.kind=toy", "model.size=nano",
       "data.target_length=12", "train.progress=false", "train.eval_every=0"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("bad-inputs-model")
    assert main(["train", *TOY, "train.steps=1", "train.batch_size=2", f"train.out_dir={out}"]) == 0
    return str(out / "model")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad-inputs-files")
    (d / "bad.yaml").write_text("name: x\ncells: [1\n")
    (d / "runs").mkdir()
    (d / "p.jsonl").write_text('{"task_id": "HumanEval/0", "completion": "    return 1\\n"}\n')
    return d


M, F = "{model}", "{files}"  # placeholders filled per case
GEN = ["generate", "--model", M, "--prompt", "copy : 1 2"]
EVAL_SQUAD = ["evaluate", "--task", "squad", "--model", M, "--out", f"{F}/r.json"]
EVAL_HE = ["evaluate", "--task", "humaneval", "--model", M, "--out", f"{F}/r.json"]
TRAIN = ["train", *TOY, f"train.out_dir={F}/t"]

CASES: dict[str, tuple[list[str], str]] = {
    # generate: decoding options
    "gen_steps_0": ([*GEN, "--steps", "0"], "--steps 0"),
    "gen_steps_negative": ([*GEN, "--steps", "-3"], "--steps -3"),
    "gen_candidates_0": ([*GEN, "--candidates", "0"], "--candidates 0"),
    "gen_completions_0": ([*GEN, "--completions", "0"], "--completions 0"),
    "gen_samples_0": ([*GEN, "--samples", "0"], "--completions 0"),
    "gen_samples_0_diffusion": ([*GEN, "--mode", "diffusion", "--samples", "0"], "--candidates 0"),
    "gen_num_beams_0": ([*GEN, "--strategy", "beam", "--num-beams", "0"], "--num-beams 0"),
    "gen_num_beams_negative": ([*GEN, "--num-beams", "-2"], "--num-beams -2"),
    "gen_max_new_tokens_0": ([*GEN, "--max-new-tokens", "0"], "--max-new-tokens 0"),
    "gen_max_new_tokens_negative": ([*GEN, "--max-new-tokens", "-5"], "--max-new-tokens -5"),
    "gen_temperature_negative": ([*GEN, "--temperature", "-1"], "--temperature -1"),
    "gen_temperature_inf": ([*GEN, "--temperature", "inf"], "--temperature inf"),
    "gen_top_p_5": ([*GEN, "--top-p", "5"], "--top-p 5"),
    "gen_top_p_0": ([*GEN, "--top-p", "0"], "--top-p 0"),
    "gen_top_p_nan": ([*GEN, "--top-p", "nan"], "--top-p nan"),
    "gen_repetition_penalty_0": ([*GEN, "--repetition-penalty", "0"], "--repetition-penalty 0"),
    "gen_block_length_negative": ([*GEN, "--block-length", "-1"], "--block-length -1"),
    "gen_seed_negative": ([*GEN, "--seed", "-1"], "--seed -1"),
    "gen_steps_not_a_number": ([*GEN, "--steps", "ten"], "'ten'"),
    "gen_mode_unknown": ([*GEN, "--mode", "bidirectional"], "'bidirectional'"),
    "gen_order_unknown": ([*GEN, "--order", "right-to-left"], "'right-to-left'"),
    "gen_strategy_unknown": ([*GEN, "--strategy", "topk"], "'topk'"),
    "gen_dtype_unknown": ([*GEN, "--dtype", "float16"], "'float16'"),
    # generate: lengths against the model and the memory
    "gen_diffusion_100000_tokens": ([*GEN, "--mode", "diffusion", "--max-new-tokens", "100000"],
                                    "--max-new-tokens 100000"),
    "gen_ar_100000_tokens": ([*GEN, "--mode", "ar", "--max-new-tokens", "100000"],
                             "--max-new-tokens 100000"),
    "gen_diffusion_beyond_memory": ([*GEN, "--mode", "diffusion", "--candidates", "1000000",
                                     "--max-new-tokens", "2000"], "GiB"),
    "gen_ar_beams_beyond_memory": ([*GEN, "--mode", "ar", "--strategy", "beam", "--num-beams",
                                    "10000000", "--max-new-tokens", "2000"], "GiB"),
    "gen_prompt_too_long": (["generate", "--model", M, "--prompt", "copy : 1 " * 5000], "too long"),
    # generate: prompts, models, devices
    "gen_prompt_empty": (["generate", "--model", M, "--prompt", " "], "empty"),
    "gen_prompt_not_utf8": (["generate", "--model", M, "--prompt", "copy \udcff 1"], "UTF-8"),
    "gen_chat_without_template": ([*GEN, "--chat"], "chat template"),
    "gen_model_missing_folder": (["generate", "--model", f"{F}/nomodel", "--prompt", "x"],
                                 "nomodel"),
    "gen_model_relative_typo": (["generate", "--model", "./no-such-model", "--prompt", "x"],
                                "no-such-model"),
    "gen_model_local_path_not_hub": (["generate", "--model", "runs/mdoel", "--prompt", "x"],
                                     "mdoel"),
    "gen_model_not_gguf": (["generate", "--model", f"{F}/p.jsonl", "--prompt", "x"], "p.jsonl"),
    "gen_device_unknown": ([*GEN, "--device", "gpu0"], "gpu0"),
    "gen_device_absent_cuda": ([*GEN, "--device", "cuda:97"], "cuda:97"),
    # train: config values that would only fail at run time, or silently do nonsense
    "train_target_length_0": ([*TRAIN, "data.target_length=0"], "data.target_length"),
    "train_input_length_negative": ([*TRAIN, "data.input_length=-1"], "data.input_length"),
    "train_device_bogus": ([*TRAIN, "train.device=gpu"], "'gpu'"),
    "train_grad_clip_negative": ([*TRAIN, "optim.grad_clip=-1"], "optim.grad_clip"),
    "train_save_every_negative": ([*TRAIN, "train.save_every=-1"], "train.save_every"),
    "train_warmup_negative": ([*TRAIN, "optim.warmup_steps=-5"], "optim.warmup_steps"),
    "train_max_positions_below_sequence": ([*TRAIN, "model.max_positions=16"],
                                           "model.max_positions"),
    "train_steps_0": ([*TRAIN, "train.steps=0"], "train.steps"),
    "train_lr_0": ([*TRAIN, "optim.lr=0"], "optim.lr"),
    "train_beta2_above_1": ([*TRAIN, "optim.beta2=1.5"], "optim.beta2"),
    "train_keep_last_0": ([*TRAIN, "train.keep_last=0"], "train.keep_last"),
    "train_code_fraction_2": ([*TRAIN, "data.code_fraction=2"], "data.code_fraction"),
    "train_sample_steps_0": ([*TRAIN, "sample.steps=0"], "sample.steps"),
    "train_sample_temperature_negative": ([*TRAIN, "sample.temperature=-1"], "sample.temperature"),
    "train_vocab_size_0": ([*TRAIN, "tokenizer.vocab_size=0"], "tokenizer.vocab_size"),
    "train_eval_examples_0": ([*TRAIN, "train.eval_examples=0"], "train.eval_examples"),
    "train_override_yaml_error": ([*TRAIN, "train.steps=[1"], "train.steps=[1"),
    "train_override_empty_key_part": ([*TRAIN, "train..steps=1"], "train..steps=1"),
    "train_override_not_a_section": ([*TRAIN, "train.steps.x=1"], "train.steps"),
    "train_override_unknown_key": ([*TRAIN, "train.stepz=1"], "train.stepz"),
    "train_config_missing": (["train", "--config", f"{F}/missing.yaml"], "missing.yaml"),
    # adapt / finetune
    "adapt_steps_0": (["adapt", "--model", M, "--steps", "0", "--out", f"{F}/a"], "--steps 0"),
    "adapt_model_typo": (["adapt", "--model", "./no/such/model", "--steps", "1", "--out",
                          f"{F}/a"], "./no/such/model"),
    "adapt_grad_clip_negative": (["adapt", "--model", M, "--steps", "1", "--out", f"{F}/a",
                                  "optim.grad_clip=-1"], "optim.grad_clip"),
    "finetune_steps_negative": (["finetune", "--task", "squad", "--model", M, "--steps", "-1",
                                 "--out", f"{F}/f"], "--steps -1"),
    "finetune_model_missing": (["finetune", "--task", "squad", "--model", "/no/such/model",
                                "--out", f"{F}/f"], "/no/such/model"),
    "finetune_task_unknown": (["finetune", "--task", "imagenet", "--out", f"{F}/f"], "'imagenet'"),
    # evaluate: options are checked before the model is loaded or anything decoded
    "eval_steps_0": ([*EVAL_SQUAD, "--steps", "0"], "--steps 0"),
    "eval_completions_0": ([*EVAL_HE, "--completions", "0"], "--completions 0"),
    "eval_top_p_2": ([*EVAL_SQUAD, "--top-p", "2"], "--top-p 2"),
    "eval_limit_0": ([*EVAL_SQUAD, "--limit", "0"], "--limit 0"),
    "eval_k_0": (["evaluate", "--task", "humaneval", "--predictions", f"{F}/p.jsonl", "--k", "0",
                  "--out", f"{F}/r.json"], "--k 0"),
    "eval_batch_size_0": ([*EVAL_SQUAD, "--batch-size", "0"], "--batch-size 0"),
    "eval_predictions_missing": (["evaluate", "--task", "humaneval", "--predictions",
                                  f"{F}/nopred.jsonl", "--out", f"{F}/r.json"], "nopred.jsonl"),
    "eval_no_model": (["evaluate", "--task", "squad", "--out", f"{F}/r.json"], "--model"),
    # experiment, bench, demo
    "experiment_missing": (["experiment", f"{F}/none.yaml"], "none.yaml"),
    "experiment_bad_yaml": (["experiment", f"{F}/bad.yaml"], "bad.yaml"),
    "bench_lengths_0": (["bench", "decode", "--lengths", "0", "--out", f"{F}/b.json"],
                        "--lengths 0"),
    "bench_batch_0": (["bench", "train", "--batch", "0", "--out", f"{F}/b.json"], "--batch 0"),
    "bench_what_unknown": (["bench", "memory"], "'memory'"),
    "demo_steps_0": (["demo", "--toy", "--steps", "0", "--out", f"{F}/d"], "--steps 0"),
    "demo_steps_negative": (["demo", "--steps", "-4", "--out", f"{F}/d"], "--steps -4"),
    "no_command": ([], "command"),
}


def test_battery_size_and_reach():
    assert len(CASES) >= 60
    commands = {argv[0] for argv, _ in CASES.values() if argv}
    assert commands == {"train", "adapt", "finetune", "generate", "evaluate", "experiment",
                        "bench", "demo"}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_clear_line(name, model, files, capsys, monkeypatch):
    monkeypatch.chdir(files)  # where runs/ exists, so runs/mdoel reads as a local path
    argv, needle = CASES[name]
    fill = {"model": model, "files": str(files)}
    argv = [a.format(**fill) if "{" in a else a for a in argv]
    needle = needle.format(**fill) if "{" in needle else needle
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse
        status = exc.code
    err = capsys.readouterr().err.strip()
    assert status not in (0, None), err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, lines
    assert needle in lines[0], lines[0]
