"""The lm-evaluation-harness model ``ar2diff``, offline, on local YAML tasks over JSON files:
the same AR log-likelihoods as lm-eval's ``hf`` model, a seeded diffusion bound, generation with
stop sequences, one-line errors for bad model arguments, and the command line's results."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

lm_eval = pytest.importorskip("lm_eval")

from lm_eval.tasks import TaskManager  # noqa: E402

from ar2diff.errors import Ar2DiffError  # noqa: E402
from ar2diff.evaluation import lm_eval_model  # noqa: E402  (registers the model)
from ar2diff.evaluation.lm_eval_model import Ar2DiffLM  # noqa: E402
from ar2diff.models.checkpoint import save_model  # noqa: E402
from ar2diff.models.meta import ModelMeta  # noqa: E402
from ar2diff.noise.mask import add_mask_token  # noqa: E402
from ar2diff.stops import cut_at_stops  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog. a cat sat on the mat and the dog ran away."
MC = [{"question": q, "choices": [" fox", " dog", " cat on the mat"], "answer": i % 3}
      for i, q in enumerate(["the quick brown", "the lazy", "a cat sat on the mat and the"])]
GEN = [{"question": "the cat sat on", "answer": " the mat"}, {"question": "a dog", "answer": " ran"}]
ROLL = [{"text": TEXT}, {"text": "the dog ran away."}]
TASKS = {
    "toy_mc": ("mc", "output_type: multiple_choice\ndoc_to_text: \"{{question}}\"\n"
                     "doc_to_choice: \"{{choices}}\"\ndoc_to_target: answer\n"
                     "metric_list:\n  - metric: acc\n"),
    "toy_gen": ("gen", "output_type: generate_until\ndoc_to_text: \"{{question}}\"\n"
                       "doc_to_target: \"{{answer}}\"\ngeneration_kwargs:\n  until: [\".\"]\n"
                       "  max_gen_toks: 6\n  do_sample: false\n"
                       "metric_list:\n  - metric: exact_match\n"),
    "toy_roll": ("roll", "output_type: loglikelihood_rolling\ndoc_to_text: \"\"\n"
                         "doc_to_target: \"{{text}}\"\nmetric_list:\n  - metric: word_perplexity\n"),
}


def _tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator([TEXT] * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")


def _model(tokenizer) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=len(tokenizer) + 1, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, bos_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """A tiny HF model folder, the same weights as an ar2diff mask-diffusion folder, and tasks."""
    root = tmp_path_factory.mktemp("lmeval")
    tok = _tokenizer()
    model = _model(tok)
    model.save_pretrained(root / "hf")
    tok.save_pretrained(root / "hf")
    meta = ModelMeta(mode="diffusion", layout="diffusion", shift=True, noise="mask",
                     mask_id=add_mask_token(model, tok), target_length=8)
    save_model(root / "diff", model, tok, meta)
    (root / "tasks").mkdir()
    for name, (stem, body) in TASKS.items():
        rows = {"mc": MC, "gen": GEN, "roll": ROLL}[stem]
        (root / f"{stem}.json").write_text(json.dumps(rows))
        (root / "tasks" / f"{stem}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    test: {root / f'{stem}.json'}\ntest_split: test\n{body}")
    return {"root": root, "hf": str(root / "hf"), "diff": str(root / "diff"),
            "tasks": TaskManager(include_path=str(root / "tasks"), include_defaults=False)}


def _run(setup, model: str, args: dict, tasks: list[str], batch_size: int = 2) -> dict:
    return lm_eval.simple_evaluate(model=model, model_args=args, tasks=tasks, device="cpu",
                                   batch_size=batch_size, log_samples=True, task_manager=setup["tasks"])


def _scores(results: dict, task: str) -> list:
    return [r for s in sorted(results["samples"][task], key=lambda s: s["doc_id"])
            for r in s["filtered_resps"]]


def test_ar_log_likelihoods_match_lm_evals_hf_model(setup):
    tasks = ["toy_mc", "toy_roll"]
    ours = _run(setup, "ar2diff", {"pretrained": setup["hf"], "mode": "ar"}, tasks)
    theirs = _run(setup, "hf", {"pretrained": setup["hf"], "dtype": "float32"}, tasks)
    for task in tasks:
        a, b = _scores(ours, task), _scores(theirs, task)
        assert len(a) == len(b) > 0
        for x, y in zip(a, b, strict=True):
            x, y = (x, y) if task == "toy_roll" else (x[0], y[0])
            assert float(x) == pytest.approx(float(y), abs=1e-4)
    mc_ours, mc_theirs = _scores(ours, "toy_mc"), _scores(theirs, "toy_mc")
    assert [g for _, g in mc_ours] == [g for _, g in mc_theirs]
    assert ours["results"]["toy_mc"]["acc,none"] == theirs["results"]["toy_mc"]["acc,none"]


def test_diffusion_bound_is_seeded_below_the_ar_score_scale_and_reported(setup):
    args = {"pretrained": setup["diff"], "mode": "diffusion", "samples": 4, "seed": 3}
    first = _run(setup, "ar2diff", args, ["toy_mc"])
    again = _run(setup, "ar2diff", args, ["toy_mc"], batch_size=5)
    other = _run(setup, "ar2diff", {**args, "seed": 4}, ["toy_mc"])
    scores = [float(ll) for ll, _ in _scores(first, "toy_mc")]
    assert scores == pytest.approx([float(ll) for ll, _ in _scores(again, "toy_mc")], abs=1e-5)
    assert scores != pytest.approx([float(ll) for ll, _ in _scores(other, "toy_mc")], abs=1e-5)
    assert all(s < 0 for s in scores)
    info = first["config"]["ar2diff"]["likelihood"]
    assert info["samples"] == 4 and info["requests"] == 9 and info["mean_stderr"] > 0


def test_generate_until_decodes_by_ar_and_diffusion_and_cuts_at_stops(setup):
    ar = _run(setup, "ar2diff", {"pretrained": setup["hf"], "mode": "ar"}, ["toy_gen"])
    hf = _run(setup, "hf", {"pretrained": setup["hf"], "dtype": "float32"}, ["toy_gen"])
    assert _scores(ar, "toy_gen") == _scores(hf, "toy_gen")
    diff = _run(setup, "ar2diff", {"pretrained": setup["diff"], "mode": "diffusion", "steps": 3},
                ["toy_gen"])
    outs = _scores(diff, "toy_gen")
    assert len(outs) == 2 and all("." not in o for o in outs)
    assert "exact_match,none" in diff["results"]["toy_gen"]
    assert cut_at_stops("ab. cd\n", [".", "\n"]) == "ab" and cut_at_stops("ab", ["x"]) == "ab"


@pytest.mark.parametrize("args,needle", [
    ("pretrained={hf},bogus=1", "bogus=1: unknown argument"),
    ("pretrained={hf},mode=sideways", "mode=sideways: choose ar or diffusion"),
    ("pretrained={hf},samples=1", "samples=1: use a whole number of at least 2"),
    ("mode=ar", "pretrained=…: name the model"),
    ("pretrained={hf},temperature=warm", "temperature=warm: use a number"),
    ("pretrained=/no/such/model,max_length=0", "max_length=0: use a whole number of at least 2"),
])
def test_bad_model_arguments_give_one_line(setup, args, needle):
    with pytest.raises(Ar2DiffError, match=needle.replace("…", ".")):
        Ar2DiffLM.create_from_arg_string(args.format(hf=setup["hf"]), {"device": "cpu"})


def test_uniform_noise_model_refuses_a_likelihood(setup):
    lm = Ar2DiffLM(pretrained=setup["hf"], mode="diffusion", samples=2, device="cpu")
    with pytest.raises(Ar2DiffError, match="uniform noise has no tractable bound"):
        lm.loglikelihood_rolling([type("R", (), {"args": ("the dog",)})()])


@pytest.mark.slow
def test_command_line_reports_a_bad_argument_in_one_line(setup, capsys):
    with pytest.raises(SystemExit) as exit_:
        lm_eval_model.main(["--model", "ar2diff", "--model_args", f"pretrained={setup['hf']},samples=0",
                            "--tasks", "toy_mc", "--include_path", str(setup["root"] / "tasks")])
    assert str(exit_.value) == "error: --model_args samples=0: use a whole number of at least 2"


@pytest.mark.slow
def test_command_line_runs_offline_and_writes_results(setup, tmp_path):
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(Path(lm_eval_model.__file__).parents[2])}
    cmd = [sys.executable, "-m", "ar2diff.evaluation.lm_eval_model", "--model", "ar2diff",
           "--model_args", f"pretrained={setup['diff']},mode=diffusion,samples=2,steps=2",
           "--tasks", "toy_mc", "toy_gen", "--include_path", str(setup["root"] / "tasks"),
           "--device", "cpu", "--output_path", str(tmp_path / "out")]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
    (results,) = (tmp_path / "out").rglob("results_*.json")
    data = json.loads(results.read_text())
    assert {"toy_mc", "toy_gen"} <= set(data["results"])
    assert data["config"]["ar2diff"]["mode"] == "diffusion"
