"""``ar2diff evaluate --task perplexity``: AR perplexity and the diffusion bound on the same text."""

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from ar2diff.cli import main
from ar2diff.errors import Ar2DiffError
from ar2diff.evaluation.perplexity import evaluate_perplexity, read_documents
from ar2diff.models.checkpoint import save_model
from ar2diff.models.meta import ModelMeta
from ar2diff.noise.mask import add_mask_token
from tests.conftest import tiny_model

DOCS = ["3 1 4 1 5 9 2 6 5 3 5", "2 7 1 8 2 8 1 8 2 8 4 5 9", "copy 1 2 3 : 1 2 3"]


@pytest.fixture
def folders(tmp_path, toy_tokenizer):
    model = tiny_model("llama", vocab=len(toy_tokenizer) + 1)
    model.save_pretrained(tmp_path / "ar")
    toy_tokenizer.save_pretrained(tmp_path / "ar")
    meta = ModelMeta(mode="diffusion", layout="diffusion", shift=True, noise="mask",
                     mask_id=add_mask_token(model, toy_tokenizer), target_length=4)
    save_model(tmp_path / "diff", model, toy_tokenizer, meta)
    (tmp_path / "docs.txt").write_text("\n\n".join(DOCS) + "\n")
    return tmp_path


def test_ar_perplexity_is_the_models_exact_likelihood(folders, toy_tokenizer):
    res = evaluate_perplexity(str(folders / "ar"), folders / "docs.txt", window=5, context=64,
                              device="cpu", progress=False)
    model = AutoModelForCausalLM.from_pretrained(folders / "ar").eval()
    total = 0.0
    for doc in DOCS:
        ids = [1, *toy_tokenizer.encode(doc, add_special_tokens=False)]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1], -1)
        total += float(logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())
    ar = res["metrics"]["ar"]
    assert ar["log_likelihood"] == pytest.approx(total, abs=1e-3)
    assert res["metrics"]["tokens"] == sum(len(d.split()) for d in DOCS)
    assert ar["perplexity"] == pytest.approx(math.exp(-total / res["metrics"]["tokens"]), rel=1e-4)
    assert res["setup"]["modes"] == ["ar"]


def test_cli_scores_a_diffusion_model_both_ways(folders, capsys):
    out = folders / "ppl.json"
    args = ["evaluate", "--task", "perplexity", "--model", str(folders / "diff"), "--data",
            str(folders / "docs.txt"), "--mc-samples", "4", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "ar: nll/token=" in printed and "diffusion: nll/token <=" in printed
    res = json.loads(out.read_text())
    diff = res["metrics"]["diffusion"]
    assert res["setup"]["modes"] == ["ar", "diffusion"] and res["setup"]["window"] == 4
    assert diff["nll_bound_per_token"] > 0 and diff["nll_bound_per_token_stderr"] > 0
    assert diff["perplexity_bound"] == pytest.approx(math.exp(diff["nll_bound_per_token"]))
    assert main([*args, "--out", str(folders / "again.json")]) == 0
    again = json.loads((folders / "again.json").read_text())["metrics"]["diffusion"]
    assert again["log_likelihood_bound"] == pytest.approx(diff["log_likelihood_bound"], abs=1e-6)


def test_bad_inputs_give_one_line(folders, capsys):
    base = ["evaluate", "--task", "perplexity", "--model", str(folders / "diff"), "--out",
            str(folders / "x.json"), "--device", "cpu"]
    assert main(base) == 2
    assert "needs --model and --data" in capsys.readouterr().err
    assert main([*base, "--data", str(folders / "docs.txt"), "--mc-samples", "1"]) == 2
    assert "--mc-samples 1" in capsys.readouterr().err
    assert main([*base, "--data", str(folders / "docs.txt"), "--mode", "diffusion", "--model",
                 str(folders / "ar")]) == 2
    assert "uniform noise has no tractable bound" in capsys.readouterr().err
    (folders / "bad.jsonl").write_text('{"text": "1 2"}\n{"txt": "3"}\n')
    with pytest.raises(Ar2DiffError, match="bad.jsonl line 2"):
        read_documents(folders / "bad.jsonl")
    (folders / "blank.txt").write_text("\n\n")
    with pytest.raises(Ar2DiffError, match="no documents"):
        read_documents(folders / "blank.txt")
    assert read_documents(folders / "docs.txt", limit=2) == DOCS[:2]
