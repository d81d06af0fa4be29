"""Scale-out and reliability: 2 processes = 1 process, resume after SIGKILL, bad inputs."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ar2diff.cli import main

TOY = ["data.source=toy", "data.toy_task=copy", "tokenizer.kind=toy", "model.size=nano",
       "data.target_length=12", "train.progress=false", "train.eval_every=0",
       "optim.warmup_steps=2", "optim.lr=3e-3"]


def _train_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ar2diff.cli", "train", *TOY, f"train.out_dir={out}", *extra]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(cmd: list[str]) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                "--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
    subprocess.run([*torchrun, *cmd[1:]], check=True, timeout=300, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})


def _assert_close(one: Path, two: Path) -> None:
    w1, w2 = _weights(one), _weights(two)
    assert sorted(w1) == sorted(w2)
    for name in w1:
        rel = float((w1[name] - w2[name]).norm() / w1[name].norm())
        assert rel <= 1e-4, name


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, parallel):
    extra = ["train.steps=4", "train.batch_size=8", "train.micro_batch_size=2"]
    subprocess.run(_train_cmd(tmp_path / "one", *extra), check=True, timeout=300,
                   capture_output=True)
    _torchrun(_train_cmd(tmp_path / "two", *extra, f"train.parallel={parallel}",
                         "train.save_every=2"))
    _assert_close(tmp_path / "one", tmp_path / "two")
    h1 = json.loads((tmp_path / "one" / "history.json").read_text())
    h2 = json.loads((tmp_path / "two" / "history.json").read_text())
    for a, b in zip(h1, h2, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-4 * abs(a["loss"])
    if parallel == "fsdp":  # sharded weights and optimizer state survive a resume
        ckpts = tmp_path / "two" / "checkpoints"
        assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000002", "step-00000004"]
        shutil.rmtree(ckpts / "step-00000004")
        shutil.rmtree(tmp_path / "two" / "model")
        _torchrun([*_train_cmd(tmp_path / "two", *extra, "train.parallel=fsdp"), "--resume"])
        _assert_close(tmp_path / "one", tmp_path / "two")


@pytest.mark.parametrize(
    "trial", [0, *(pytest.param(t, marks=pytest.mark.slow) for t in range(1, 10))])
def test_resume_after_sigkill_reaches_the_same_weights(tmp_path, trial):
    extra = ["train.steps=10", "train.batch_size=4", "train.save_every=1", "train.keep_last=2",
             "train.seed=3"]
    subprocess.run(_train_cmd(tmp_path / "clean", *extra), check=True, timeout=300,
                   capture_output=True)
    rng = random.Random(trial)
    out = tmp_path / "killed"
    kills = 0
    while True:
        proc = subprocess.Popen([*_train_cmd(out, *extra), "--resume"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kills < 3:
            time.sleep(rng.uniform(2.0, 6.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
        assert proc.wait(timeout=300) == 0
        if (out / "model").is_dir():
            break
    clean, resumed = _weights(tmp_path / "clean"), _weights(out)
    assert all(torch.equal(clean[k], resumed[k]) for k in clean)
    assert not [p for p in out.rglob(".*tmp-*")]  # no half-written leftovers


def _one_line_error(capsys, argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ar2diff: error:"), err
    assert needle in err[0], err[0]


def _write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


@pytest.fixture
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    assert main(["train", *TOY, "train.steps=2", "train.batch_size=2", f"train.out_dir={out}"]) == 0
    return out / "model"


def test_bad_input_battery(tmp_path, capsys, trained):
    """At least 20 bad inputs: each gives one clear line and leaves no output behind."""
    out = tmp_path / "out"
    cases: list[tuple[list[str], str]] = [
        (["train", "--config", str(tmp_path / "missing.yaml")], "missing.yaml"),
        (["train", "--config", str(_write(tmp_path / "bad.yaml", "a: [1"))], "bad.yaml"),
        (["train", "--config", str(_write(tmp_path / "bin.yaml", b"\xff\xfe\x00bad"))], "bin.yaml"),
        (["train", "--config", str(_write(tmp_path / "list.yaml", "- 1\n- 2\n"))], "mapping"),
        (["train", "--config", str(_write(tmp_path / "sec.yaml", "train: 3\n"))], "train"),
        (["train", "train.stepz=1"], "train.stepz"),
        (["train", "train.steps=ten"], "train.steps"),
        (["train", "train.steps=-1"], "train.steps"),
        (["train", "train.batch_size=6", "train.micro_batch_size=4"], "micro_batch_size"),
        (["train", "model.arch=rnn"], "model.arch"),
        (["train", "model.size=colossal", *TOY[:3], f"train.out_dir={out}"], "model.size"),
        (["train", "train.bf16=maybe"], "train.bf16"),
        (["train", "train.steps"], "key=value"),
        (["train", "data.source=corpus", f"data.corpus=[{tmp_path / 'nocorpus'}]",
          "model.size=nano", "tokenizer.kind=toy", f"train.out_dir={out}"], "nocorpus"),
        (["train", "data.source=corpus", f"data.corpus=[{_write(tmp_path / 'e.txt', '')}]",
          "model.size=nano", "tokenizer.kind=toy", f"train.out_dir={out}"], "segment"),
        (["train", "tokenizer.kind=/no/such/tokenizer", f"train.out_dir={out}"], "tokenizer.kind"),
        (["generate", "--model", str(tmp_path / "nomodel"), "--prompt", "x"], "nomodel"),
        (["generate", "--model", str(trained), "--prompt", ""], "empty"),
        (["generate", "--model", str(trained), "--prompt", "copy : 1 " * 5000], "too long"),
        (["evaluate", "--task", "squad", "--data", str(_write(tmp_path / "s.json", '{"data": [')),
          "--predictions", str(tmp_path / "p.jsonl"), "--out", str(out / "r.json")], "s.json"),
        (["evaluate", "--task", "squad", "--limit", "2", "--data", str(_write(
            tmp_path / "ok.json", '{"data": [{"paragraphs": [{"context": "C.", "qas": [{"id": '
            '"q1", "question": "Q?", "answers": [{"text": "C"}]}]}]}]}')), "--predictions",
          str(_write(tmp_path / "p.jsonl", '{"id": 1\n')), "--out", str(out / "r.json")],
         "p.jsonl"),
        (["evaluate", "--task", "wmt14-en-fr", "--data",
          ",".join([str(_write(tmp_path / "a.en", "one\ntwo\n")),
                    str(_write(tmp_path / "a.fr", "un\n"))]),
          "--predictions", str(tmp_path / "p.jsonl"), "--out", str(out / "r.json")], "a."),
    ]
    assert len(cases) >= 20
    for argv, needle in cases:
        _one_line_error(capsys, argv, needle)
    assert not (out / "model").exists() and not (out / "r.json").exists()


def test_damaged_checkpoints_are_refused(tmp_path, capsys, trained):
    import shutil

    for damage in ("truncate", "no_checksums", "no_weights"):
        copy = tmp_path / damage
        shutil.copytree(trained, copy)
        weights = copy / "model.safetensors"
        if damage == "truncate":
            weights.write_bytes(weights.read_bytes()[:100])
        elif damage == "no_checksums":
            (copy / "checksums.json").unlink()
        else:
            weights.unlink()
        _one_line_error(capsys, ["generate", "--model", str(copy), "--prompt", "copy : 1"],
                        str(copy))
