"""Hostile completions against the code-task harness: each tries to earn a pass without solving.

Every completion below is wrong (or solves nothing) and tries to forge the verdict: exit early with
status 0, hook the interpreter's exit, return objects that compare equal to anything, read the
expected answers from the tests, patch builtins, print success lines, write to every descriptor,
kill its parents or send itself odd signals. All must score 0 while real solutions still pass, and
no program may crash the evaluation.
"""

from __future__ import annotations

import pytest

from ar2diff.data.tasks import load_task
from ar2diff.evaluation import scoring as ev
from ar2diff.evaluation.sandbox import STRONG_MODES, detected_mode
from tests.conftest import needs_data

pytestmark = pytest.mark.skipif(
    detected_mode() not in STRONG_MODES, reason="weak sandbox modes run only when asked for"
)

# HumanEval/0 has_close_elements (asserts `candidate(...) == True/False`); HumanEval/2
# truncate_number (asserts `abs(candidate(x) - y) < 1e-6`); bodies follow the prompt's signature.
_WRONG = "    return False\n"
_ALWAYS_EQUAL = """\
    class Anything:
        def __eq__(self, other):
            return True
        __ne__ = lambda self, other: False
        __hash__ = object.__hash__
        __bool__ = lambda self: True
        __sub__ = __rsub__ = lambda self, other: 0.0
        __lt__ = __gt__ = __le__ = __ge__ = lambda self, other: True
    return Anything()
"""
HOSTILE_HUMANEVAL = {
    "sys_exit_0_before_tests": _WRONG + "import sys\nsys.exit(0)\n",
    "raise_system_exit_in_call": "    raise SystemExit(0)\n",
    "os_exit_0_before_tests": _WRONG + "import os\nos._exit(0)\n",
    "os_exit_0_in_call": "    import os\n    os._exit(0)\n",
    "excepthook_exits_0": _WRONG + "import os, sys\nsys.excepthook = lambda *a: os._exit(0)\n",
    "atexit_exits_0": _WRONG + "import atexit, os\natexit.register(lambda: os._exit(0))\n",
    "always_equal_object": _ALWAYS_EQUAL,
    "int_subclass_always_equal": (
        "    class Yes(int):\n        def __eq__(self, other):\n            return True\n"
        "        __hash__ = int.__hash__\n    return Yes(0)\n"
    ),
    "bool_like_float_subclass": (
        "    class F(float):\n        __eq__ = lambda s, o: True\n        __hash__ = float.__hash__\n"
        "        __sub__ = lambda s, o: 0.0\n    return F(0.0)\n"
    ),
    "answer_from_caller_frame": """\
    import sys
    frame = sys._getframe(1)
    try:
        line = open(frame.f_code.co_filename).read().splitlines()[frame.f_lineno - 1]
        return eval(line.rsplit("==", 1)[1].split("<")[0], frame.f_globals)
    except Exception:
        return False
""",
    "answers_from_own_file": """\
    import re, sys, ast
    try:
        source = open(sys.argv[0]).read()
    except Exception:
        return False
    for line in source.splitlines():
        m = re.match(r"\\s*assert candidate\\((.*)\\) == (.*)$", line)
        if m and ast.literal_eval("(" + m.group(1) + ",)") == (numbers, threshold):
            return ast.literal_eval(m.group(2))
    return False
""",
    "patch_builtins": (
        "import builtins\nbuiltins.abs = lambda x: 0\nbuiltins.AssertionError = SystemExit\n"
        + _WRONG
    ),
    "settrace_skips_asserts": """\
    return False
import sys
def _skip(frame, event, arg):
    if frame.f_code.co_name == "check":
        def local(frame, event, arg):
            if event == "exception":
                import os
                os._exit(0)
            return local
        return local
    return None
sys.settrace(_skip)
""",
    "print_success_lines": _WRONG
    + "import os, sys\nfor s in (sys.stdout, sys.stderr):\n    print('pass', 'PASS', 'passed', file=s)\n"
    "sys.stdout.flush(); sys.stderr.flush()\nos._exit(0)\n",
    "write_pass_to_every_fd": """\
    import os
    for fd in range(3, 256):
        for text in (b"pass\\n", b"0", b'{"value": true}\\n'):
            try:
                os.write(fd, text)
            except OSError:
                pass
    return False
""",
    "read_every_fd_and_proc": """\
    import os, glob
    seen = ""
    for path in glob.glob("/proc/*/fd/*") + glob.glob("/proc/*/cmdline") + glob.glob("/proc/*/environ"):
        try:
            with open(path, "rb") as f:
                seen += f.read(1 << 16).decode("latin-1")
        except Exception:
            pass
    return "check(" in seen or "assert candidate" in seen
""",
    "kill_parent_and_group": (
        "    import os, signal\n    for pid in (os.getppid(), 1):\n        try:\n"
        "            os.kill(pid, signal.SIGKILL)\n        except OSError:\n            pass\n"
        "    try:\n        os.killpg(0, signal.SIGKILL)\n    except OSError:\n        pass\n"
        "    return False\n"
    ),
    "realtime_signal_40": "    import os\n    os.kill(os.getpid(), 40)\n    return False\n",
    "realtime_signal_64": "    import os, signal\n    os.kill(os.getpid(), signal.SIGRTMAX)\n",
    "exit_status_300": "    import os\n    os._exit(300)\n",
    "exit_status_255": _WRONG + "import os\nos._exit(255)\n",
    "del_hook_exits_0": (
        "    class Bye:\n        def __del__(self):\n            import os\n            os._exit(0)\n"
        "    import builtins\n    builtins._keep = Bye()\n    return False\n"
    ),
    "stop_itself": "    import os, signal\n    os.kill(os.getpid(), signal.SIGSTOP)\n",
}
# MBPP 11 remove_Occ: the completion is the whole program text before the asserts.
HOSTILE_MBPP = {
    "mbpp_answers_from_own_file": """\
import re, sys, ast
_answers = {}
try:
    for _line in open(sys.argv[0]).read().splitlines():
        _m = re.match(r'assert remove_Occ\\((.*)\\) == (.*)$', _line)
        if _m:
            _answers[ast.literal_eval('(' + _m.group(1) + ',)')] = ast.literal_eval(_m.group(2))
except Exception:
    pass
def remove_Occ(s, ch):
    return _answers.get((s, ch), s)
""",
    "mbpp_exit_0": "def remove_Occ(s, ch):\n    return s\nimport sys\nsys.exit(0)\n",
    "mbpp_always_equal": "def remove_Occ(s, ch):\n    class A(str):\n        __eq__ = lambda a, b: True\n"
    "    return A(s)\n",
}
REAL_HUMANEVAL = {
    0: "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n",
    2: "    return number % 1.0\n",
}
REAL_MBPP = (
    "def remove_Occ(s, ch):\n    s = s.replace(ch, '', 1)\n    i = s.rfind(ch)\n"
    "    return s if i < 0 else s[:i] + s[i + 1:]\n"
)


def _humaneval():
    examples = load_task("humaneval", limit=3)
    return {0: examples[0], 2: examples[2]}


def _score(task, example, completions):
    results = ev.evaluate_task(
        [example] * len(completions),
        lambda prompts, n: [[c] * n for c in completions[: len(prompts)]]
        if len(prompts) == len(completions)
        else [[completions[0]] * n for _ in prompts],
        task,
        batch_size=len(completions),
        timeout_s=3.0,
        progress=False,
    )
    return results


def hostile_results() -> list[dict]:
    """Run every HumanEval hostile completion on tasks 0 and 2; one record per (case, task)."""
    records = []
    for task_index, example in _humaneval().items():
        names = list(HOSTILE_HUMANEVAL)
        results = _score("humaneval", example, [HOSTILE_HUMANEVAL[n] for n in names])
        for name, pred in zip(names, results["predictions"], strict=True):
            records.append({"case": name, "task": task_index, **pred})
    return records


@pytest.fixture(scope="module")
def hostile():
    return hostile_results()


@pytest.mark.slow
def test_hostile_completions_all_fail(hostile):
    passed = [(r["case"], r["task"], r["statuses"][0]) for r in hostile if r["passed"][0]]
    assert passed == []
    assert len(hostile) == 2 * len(HOSTILE_HUMANEVAL)


@pytest.mark.slow
def test_signals_and_odd_exit_statuses_are_verdicts(hostile):
    by_case = {r["case"]: r for r in hostile if r["task"] == 0}
    for name in ("realtime_signal_40", "realtime_signal_64", "exit_status_300", "stop_itself"):
        assert by_case[name]["statuses"][0] in {"failed", "killed", "timeout"}, by_case[name]


def test_real_solutions_still_pass():
    examples = _humaneval()
    for index, body in REAL_HUMANEVAL.items():
        results = _score("humaneval", examples[index], [body])
        assert results["metrics"]["pass@1"] == 100.0, results["predictions"]


@needs_data
def test_mbpp_hostile_fail_and_real_passes():
    example = next(e for e in load_task("mbpp", limit=5) if "remove_Occ" in e.input)
    names = list(HOSTILE_MBPP)
    results = _score("mbpp", example, [HOSTILE_MBPP[n] for n in names] + [REAL_MBPP])
    passed = [p["passed"][0] for p in results["predictions"]]
    assert passed == [False] * len(names) + [True], results["predictions"]
